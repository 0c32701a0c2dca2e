//! Text that kennel did not write (a build's output, an agent's diff and
//! terminal log), made safe for the user's terminal.

/// `text` with control characters (escape sequences, carriage returns,
/// bells, …) shown as `\x1b`-style escapes, so that output written by a
/// build or an agent cannot move the cursor, hide lines or retitle the
/// terminal. Tabs stay.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // `is_control` is Unicode's Cc: U+0000..U+001F and U+007F..U+009F.
        if c.is_control() && c != '\t' {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// A byte stream made safe for the user's terminal, as it streams: what an
/// agent wrote (its diff, its terminal log) is shown with control
/// characters as `\x1b`-style escapes, so that it cannot move the cursor,
/// erase or overwrite lines, retitle the window or talk to the terminal.
/// Newlines, tabs and `\r\n` line ends stay; with `keep_colours`, SGR
/// colour sequences (`ESC [ digits;… m`) stay too. C1 controls encoded in
/// UTF-8 (U+0080..U+009F, which some terminals obey) are escaped as well.
#[derive(Debug, Default)]
pub struct TerminalSafe {
    keep_colours: bool,
    /// Bytes held back until the next chunk says what they are: an `ESC`
    /// sequence in progress, a `\r` that may precede `\n`, a 0xC2 lead byte.
    pending: Vec<u8>,
}

/// The longest escape sequence held back as a possible colour.
const MAX_SGR: usize = 64;

impl TerminalSafe {
    pub fn new(keep_colours: bool) -> TerminalSafe {
        TerminalSafe {
            keep_colours,
            pending: Vec::new(),
        }
    }

    /// The safe form of `chunk` (and of what was held back before it).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut input = std::mem::take(&mut self.pending);
        input.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
            match byte {
                b'\n' | b'\t' => out.push(byte),
                b'\r' => match input.get(i + 1) {
                    Some(b'\n') => out.push(b'\r'),
                    Some(_) => escape_byte(&mut out, byte),
                    None => {
                        self.pending.push(byte);
                        break;
                    }
                },
                0x1b if self.keep_colours => match sgr_length(&input[i..]) {
                    Some(Some(len)) => {
                        out.extend_from_slice(&input[i..i + len]);
                        i += len;
                        continue;
                    }
                    // Could still become a colour: wait for more.
                    None if input.len() - i < MAX_SGR => {
                        self.pending.extend_from_slice(&input[i..]);
                        break;
                    }
                    _ => escape_byte(&mut out, byte),
                },
                0xc2 => match input.get(i + 1) {
                    Some(next @ 0x80..=0x9f) => {
                        out.extend_from_slice(format!("\\u{{{next:x}}}").as_bytes());
                        i += 2;
                        continue;
                    }
                    Some(_) => out.push(byte),
                    None => {
                        self.pending.push(byte);
                        break;
                    }
                },
                0x00..=0x1f | 0x7f => escape_byte(&mut out, byte),
                _ => out.push(byte),
            }
            i += 1;
        }
        out
    }

    /// What is still held back, made safe: call at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let pending = std::mem::take(&mut self.pending);
        let mut out = Vec::new();
        for byte in pending {
            match byte {
                0x00..=0x1f | 0x7f => escape_byte(&mut out, byte),
                _ => out.push(byte),
            }
        }
        out
    }
}

fn escape_byte(out: &mut Vec<u8>, byte: u8) {
    out.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
}

/// At `ESC`: `Some(Some(len))` for a whole SGR sequence `ESC [ [0-9;:]* m`,
/// `Some(None)` for anything else, `None` when it could still become one.
fn sgr_length(bytes: &[u8]) -> Option<Option<usize>> {
    match bytes.get(1) {
        None => return None,
        Some(b'[') => {}
        Some(_) => return Some(None),
    }
    for (offset, byte) in bytes.iter().enumerate().skip(2) {
        match byte {
            b'0'..=b'9' | b';' | b':' => continue,
            b'm' => return Some(Some(offset + 1)),
            _ => return Some(None),
        }
    }
    None
}

/// `bytes` made safe in one go (see [`TerminalSafe`]).
pub fn terminal_safe(bytes: &[u8], keep_colours: bool) -> Vec<u8> {
    let mut filter = TerminalSafe::new(keep_colours);
    let mut out = filter.push(bytes);
    out.extend(filter.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_made_safe_across_chunks() {
        let text = b"ok\r\nhidden\rshown \x1b[31mred\x1b[0m \x1b]0;title\x07 \x1b[2K \xc2\x9b6n caf\xc3\xa9\n";
        let whole = terminal_safe(text, true);
        assert_eq!(
            String::from_utf8_lossy(&whole),
            "ok\r\nhidden\\x0dshown \x1b[31mred\x1b[0m \\x1b]0;title\\x07 \\x1b[2K \\u{9b}6n caf\u{e9}\n"
        );
        // Byte by byte gives the same.
        let mut filter = TerminalSafe::new(true);
        let mut pieces = Vec::new();
        for byte in text {
            pieces.extend(filter.push(&[*byte]));
        }
        pieces.extend(filter.finish());
        assert_eq!(pieces, whole);
        // Without colours, no escape byte is left at all.
        assert!(!terminal_safe(text, false).contains(&0x1b));
        assert!(!terminal_safe(b"\x1b[", true).contains(&0x1b));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain\ttext"), "plain\ttext");
        assert_eq!(escape_controls("a\x1b[2Kb\rc\x07"), "a\\x1b[2Kb\\x0dc\\x07");
        assert_eq!(escape_controls("\u{9b}31m"), "\\x9b31m");
    }
}
