//! Where a command's time goes: stages marked as kennel passes them,
//! reported in microseconds with `KENNEL_TIMING=1` or `-vv` (one note line
//! on stderr when the command ends). Marking costs a clock read and a lock.
//! The native sandbox's helper marks stages of its own (namespaces, mounts,
//! …), on the same clock, which [`add`] puts in the timeline.

use std::borrow::Cow;
use std::sync::Mutex;

use kennel_native::monotonic_ns;

/// Stages in the order they ended: (name, CLOCK_MONOTONIC nanoseconds).
static TIMELINE: Mutex<Vec<(Cow<'static, str>, u64)>> = Mutex::new(Vec::new());

/// The start of the clock: call first thing in `main`.
pub fn start() {
    if let Ok(mut timeline) = TIMELINE.lock() {
        timeline.clear();
        timeline.push(("start".into(), monotonic_ns()));
    }
}

/// The stage that ends now (its time runs from the previous mark).
pub fn mark(stage: &'static str) {
    add(stage.into(), monotonic_ns());
}

/// A stage that ended at `at` (CLOCK_MONOTONIC nanoseconds), marked by
/// another process.
pub fn add(stage: Cow<'static, str>, at: u64) {
    if let Ok(mut timeline) = TIMELINE.lock()
        && !timeline.is_empty()
    {
        timeline.push((stage, at));
    }
}

/// Whether the breakdown is asked for.
pub fn enabled() -> bool {
    crate::report::verbosity() >= 2 || std::env::var_os("KENNEL_TIMING").is_some_and(|v| v == "1")
}

/// `stage µs, …, total µs` for the marks so far, in the order of their
/// times; None without marks.
pub fn breakdown() -> Option<String> {
    let mut timeline = TIMELINE.lock().ok()?.clone();
    // Stable: marks of one instant keep the order they were made in.
    timeline.sort_by_key(|(_, at)| *at);
    let (_, first) = timeline.first()?;
    let first = *first;
    let mut parts = Vec::new();
    let mut previous = first;
    for (stage, at) in timeline.iter().skip(1) {
        parts.push(format!("{stage} {} µs", at.saturating_sub(previous) / 1000));
        previous = *at;
    }
    parts.push(format!(
        "total {} µs",
        previous.saturating_sub(first) / 1000
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
    fn stages_are_reported_in_the_order_of_their_times_with_a_total() {
        super::start();
        super::mark("config");
        let between = kennel_native::monotonic_ns();
        super::mark("plan");
        // Marked late by another process, ended between the two.
        super::add("namespaces".into(), between);
        let breakdown = super::breakdown().expect("marks");
        let config = breakdown.find("config ").expect("config");
        let namespaces = breakdown.find("namespaces ").expect("namespaces");
        let plan = breakdown.find("plan ").expect("plan");
        assert!(
            config < namespaces && namespaces < plan && breakdown.ends_with(" µs"),
            "{breakdown}"
        );
        assert!(breakdown.contains("total "), "{breakdown}");
    }
}
