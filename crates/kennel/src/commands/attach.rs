//! `kennel attach`: this terminal on a persistent session's agent (tmux
//! inside the sandbox); `C-b d` detaches and leaves the agent running.

use std::io::IsTerminal;

use clap::Args;
use kennel_core::settings::{SESSION_TMUX_TARGET, session_tmux};

use crate::error::CliError;

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
    let mut found = crate::sessions::find(&args.session)?;
    if found.is_native() {
        return found.native_running()?.0.attach();
    }
    let (engine, container) = found.container().await?;
    super::exec::require_running(&mut found, &engine, &container).await?;
    let argv = session_tmux(&["attach-session", "-t", SESSION_TMUX_TARGET]);
    let env = [format!("TERM={}", crate::sessions::sandbox_term())];
    let code = engine.exec(&container, &argv, &env, true, true).await?;
    Ok(code)
}
