//! Where a command's time goes: stages marked as kennel passes them,
//! reported in microseconds with `KENNEL_TIMING=1` or `-vv` (one note line
//! on stderr when the command ends). Marking costs a clock read and a lock.

use std::sync::Mutex;
use std::time::Instant;

static TIMELINE: Mutex<Vec<(&'static str, Instant)>> = Mutex::new(Vec::new());

/// The start of the clock: call first thing in `main`.
pub fn start() {
    if let Ok(mut timeline) = TIMELINE.lock() {
        timeline.clear();
        timeline.push(("start", Instant::now()));
    }
}

/// The stage that ends now (its time runs from the previous mark).
pub fn mark(stage: &'static str) {
    if let Ok(mut timeline) = TIMELINE.lock()
        && !timeline.is_empty()
    {
        timeline.push((stage, Instant::now()));
    }
}

/// Whether the breakdown is asked for.
pub fn enabled() -> bool {
    crate::report::verbosity() >= 2 || std::env::var_os("KENNEL_TIMING").is_some_and(|v| v == "1")
}

/// `stage µs, …, total µs` for the marks so far; None without marks.
pub fn breakdown() -> Option<String> {
    let timeline = TIMELINE.lock().ok()?;
    let (_, first) = timeline.first()?;
    let mut parts = Vec::new();
    let mut previous = *first;
    for (stage, at) in timeline.iter().skip(1) {
        parts.push(format!(
            "{stage} {} µs",
            at.duration_since(previous).as_micros()
        ));
        previous = *at;
    }
    parts.push(format!(
        "total {} µs",
        previous.duration_since(*first).as_micros()
    ));
    Some(parts.join(", "))
}

/// Reports the breakdown when asked for.
pub fn report() {
    if enabled()
        && let Some(breakdown) = breakdown()
    {
        crate::report::note(&format!("timing: {breakdown}"));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stages_are_reported_in_order_with_a_total() {
        super::start();
        super::mark("config");
        super::mark("plan");
        let breakdown = super::breakdown().expect("marks");
        let config = breakdown.find("config ").expect("config");
        let plan = breakdown.find("plan ").expect("plan");
        assert!(config < plan && breakdown.ends_with(" µs"), "{breakdown}");
        assert!(breakdown.contains("total "), "{breakdown}");
    }
}
