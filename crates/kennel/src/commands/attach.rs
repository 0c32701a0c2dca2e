//! `kennel attach`: this terminal on a persistent session's agent (tmux
//! inside the sandbox, or on the host for native); `C-b d` detaches and
//! leaves the agent running.

use std::io::IsTerminal;

use clap::Args;

use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,
}

pub async fn run(args: AttachArgs) -> Result<i32, CliError> {
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return Err(CliError::usage("kennel attach needs a terminal").with_hint(
            "`kennel send` and `kennel capture` type into and read a session without one",
        ));
    }
    let mut found = kennel_lib::sessions::find(&args.session)?;
    found.backend()?.attach(&mut found).await
}
