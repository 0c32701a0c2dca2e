//! What kennel tells the user while it works: notes, warnings, alarms and
//! a build's progress. The library never prints; the binary installs a
//! [`Reporter`] once ([`set_reporter`]) that owns how these look. Without
//! one (a test, another program using the library), they go to `tracing`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// How the user wants to be told.
pub trait Reporter: Send + Sync {
    /// Something the user should know (a session's branch, an image being
    /// built).
    fn note(&self, text: &str);
    /// Something that did not go as it should, but the command goes on.
    fn warn(&self, text: &str);
    /// A security finding: what an agent may have tried (the end-of-session
    /// check of git control files).
    fn alarm(&self, text: &str);
    /// Long work begins (an image build, `title` says which): its steps and
    /// output are shown as it goes, until the returned value is dropped.
    fn progress(&self, title: &str) -> Box<dyn Progress> {
        self.note(title);
        Box::new(Notes)
    }
}

/// Long work as it goes: a spinner on a terminal, notes elsewhere.
pub trait Progress: Send {
    /// A step of the work begins (e.g. a Dockerfile's `RUN …`).
    fn step(&mut self, line: &str);
    /// A line of the work's own output (shown with `-v`).
    fn output(&mut self, line: &str);
}

/// Progress as notes: each step, and with `-v` each line of output.
pub struct Notes;

impl Progress for Notes {
    fn step(&mut self, line: &str) {
        note(&format!("  {}", crate::text::escape_controls(line.trim())));
    }

    fn output(&mut self, line: &str) {
        if verbosity() > 0 {
            note(&format!("    {}", crate::text::escape_controls(line)));
        }
    }
}

/// Long work begins (see [`Reporter::progress`]).
pub fn progress(title: &str) -> Box<dyn Progress> {
    match REPORTER.get() {
        Some(reporter) => reporter.progress(title),
        None => {
            tracing::info!("{title}");
            Box::new(Notes)
        }
    }
}

static REPORTER: OnceLock<Box<dyn Reporter>> = OnceLock::new();
static VERBOSITY: AtomicU8 = AtomicU8::new(0);

/// Installs the reporter (once; later calls are ignored).
pub fn set_reporter(reporter: Box<dyn Reporter>) {
    let _ = REPORTER.set(reporter);
}

/// How much detail the user asked for (`-v`, counted).
pub fn set_verbosity(level: u8) {
    VERBOSITY.store(level, Ordering::Relaxed);
}

pub fn verbosity() -> u8 {
    VERBOSITY.load(Ordering::Relaxed)
}

pub fn note(text: &str) {
    match REPORTER.get() {
        Some(reporter) => reporter.note(text),
        None => tracing::info!("{text}"),
    }
}

pub fn warn(text: &str) {
    match REPORTER.get() {
        Some(reporter) => reporter.warn(text),
        None => tracing::warn!("{text}"),
    }
}

pub fn alarm(text: &str) {
    match REPORTER.get() {
        Some(reporter) => reporter.alarm(text),
        None => tracing::error!("{text}"),
    }
}
