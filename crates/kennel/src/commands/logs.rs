//! `kennel logs`: everything a persistent session's agent showed.
//!
//! While the session runs, this is its terminal output as recorded inside the
//! sandbox (tmux `pipe-pane`); `-f` follows it. Once the container has ended,
//! the engine's log of the container is shown instead. The agent wrote every
//! byte of it, so control characters are shown escaped (colours kept) unless
//! `--raw` asks for the bytes as they are.

use std::io::Write;

use clap::Args;

use kennel_lib::backend::OutputStream;
use kennel_lib::error::CliError;
use kennel_lib::text::TerminalSafe;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,

    /// Keep printing new output until the session ends
    #[arg(short, long)]
    pub follow: bool,

    /// The agent's bytes as they are, escape sequences included (they can
    /// move the cursor and hide lines: only for a terminal you trust)
    #[arg(long)]
    pub raw: bool,
}

/// Writes a session's output to kennel's stdout and stderr, made safe
/// unless `raw`.
struct Printer {
    raw: bool,
    stdout: TerminalSafe,
    stderr: TerminalSafe,
}

impl Printer {
    fn new(raw: bool) -> Printer {
        Printer {
            raw,
            stdout: TerminalSafe::new(true),
            stderr: TerminalSafe::new(true),
        }
    }

    fn write(&mut self, stream: OutputStream, bytes: &[u8]) {
        let safe;
        let bytes = if self.raw {
            bytes
        } else {
            let filter = match stream {
                OutputStream::Stdout => &mut self.stdout,
                OutputStream::Stderr => &mut self.stderr,
            };
            safe = filter.push(bytes);
            &safe
        };
        // A reader that went away (`kennel logs -f | head`) ends kennel
        // quietly, as it does every command: following on would be for no one.
        match stream {
            OutputStream::Stdout => crate::ui::write_stdout_bytes(bytes),
            OutputStream::Stderr => {
                let _ = std::io::stderr().lock().write_all(bytes);
            }
        }
    }

    fn finish(&mut self) {
        if !self.raw {
            let (out, err) = (self.stdout.finish(), self.stderr.finish());
            crate::ui::write_stdout_bytes(&out);
            let _ = std::io::stderr().lock().write_all(&err);
        }
    }
}

pub async fn run(args: LogsArgs) -> Result<i32, CliError> {
    let mut printer = Printer::new(args.raw);
    let mut sink = |stream: OutputStream, bytes: &[u8]| printer.write(stream, bytes);
    let mut found = kennel_lib::sessions::find(&args.session)?;
    let result = found
        .backend()?
        .logs(&mut found, args.follow, &mut sink)
        .await;
    printer.finish();
    result.map(|()| 0)
}
