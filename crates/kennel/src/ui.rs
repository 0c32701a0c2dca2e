//! What the binary shares about output: how verbose the user asked it to
//! be, and how text that kennel did not write is made safe for a terminal.

use std::sync::atomic::{AtomicU8, Ordering};

static VERBOSITY: AtomicU8 = AtomicU8::new(0);

/// Set once by `main` from `-v` (counted).
pub fn set_verbosity(level: u8) {
    VERBOSITY.store(level, Ordering::Relaxed);
}

pub fn verbosity() -> u8 {
    VERBOSITY.load(Ordering::Relaxed)
}

/// `text` with control characters (escape sequences, carriage returns,
/// bells, …) shown as `\x1b`-style escapes, so that output written by a
/// build or an agent cannot move the cursor, hide lines or retitle the
/// terminal. Tabs stay.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            let code = c as u32;
            if code <= 0xff {
                out.push_str(&format!("\\x{code:02x}"));
            } else {
                out.push_str(&format!("\\u{{{code:x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain\ttext"), "plain\ttext");
        assert_eq!(escape_controls("a\x1b[2Kb\rc\x07"), "a\\x1b[2Kb\\x0dc\\x07");
        assert_eq!(escape_controls("\u{9b}31m"), "\\x9b31m");
    }
}
