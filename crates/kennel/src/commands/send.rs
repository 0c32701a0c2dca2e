//! `kennel send`: type text into a persistent session's agent.

use clap::Args;
use kennel_core::settings::{SESSION_TMUX_TARGET, session_tmux};

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,

    /// The text, typed literally
    pub text: String,

    /// Do not press Enter after the text
    #[arg(long)]
    pub no_enter: bool,
}

pub async fn run(args: SendArgs) -> Result<i32, CliError> {
    let mut found = crate::sessions::find(&args.session)?;
    if found.is_native() {
        found.native_running()?.0.send(&args.text, !args.no_enter)?;
        return Ok(0);
    }
    let (engine, container) = found.container().await?;
    super::exec::require_running(&mut found, &engine, &container).await?;
    let target = SESSION_TMUX_TARGET;
    super::exec::output(
        &engine,
        &container,
        &session_tmux(&["send-keys", "-t", target, "-l", "--", &args.text]),
    )
    .await?;
    if !args.no_enter {
        super::exec::output(
            &engine,
            &container,
            &session_tmux(&["send-keys", "-t", target, "Enter"]),
        )
        .await?;
    }
    Ok(0)
}
