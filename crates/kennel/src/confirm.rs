//! Asking before kennel removes something of the user's (`clean`,
//! `discard`): on the terminal only, never guessed.

use std::io::{BufRead, IsTerminal, Write};

use kennel_lib::error::CliError;

/// Asks `question` with `[y/N]` on stderr and reads the answer from the
/// terminal: true for `y` or `yes` (any case). Without a terminal on stdin
/// there is nobody to ask: `no_terminal` is the error, and should say how
/// to go on without asking.
pub fn ask(question: &str, no_terminal: CliError) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(no_terminal);
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|error| CliError::kennel(format!("cannot read the answer: {error}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
