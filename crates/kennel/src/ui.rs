//! What the binary writes to stdout: a command's data, ended quietly when
//! the reader goes away.

use std::io::Write;

/// `println!` for what a command prints on stdout (its data). A reader
/// that went away (`kennel net log | head -1`) ends kennel at once, quietly
/// and with success, as it would `cat`; `println!` would panic.
macro_rules! outln {
    () => {
        $crate::ui::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::ui::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes to stdout (see [`outln!`]).
pub fn write_stdout(text: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(text) {
        stdout_failed(&error);
    }
}

/// Bytes to stdout, flushed (see [`outln!`]).
pub fn write_stdout_bytes(bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        stdout_failed(&error);
    }
}

fn stdout_failed(error: &std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("kennel: error: cannot write to stdout: {error}");
    std::process::exit(kennel_lib::error::ExitKind::Kennel.code());
}

/// How kennel's notes and warnings look on stderr: `kennel: …`,
/// `kennel: warning: …`, `kennel: WARNING: …` for what an agent may have
/// tried.
pub struct Stderr;

impl kennel_lib::report::Reporter for Stderr {
    fn note(&self, text: &str) {
        eprintln!("kennel: {text}");
    }

    fn warn(&self, text: &str) {
        eprintln!("kennel: warning: {text}");
    }

    fn alarm(&self, text: &str) {
        eprintln!("kennel: WARNING: {text}");
    }
}
