//! `kennel capture`: print what a persistent session's agent shows.

use std::io::Write;

use clap::Args;
use kennel_core::settings::{SESSION_TMUX_TARGET, session_tmux};

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,

    /// The whole scrollback, not only the visible screen
    #[arg(long)]
    pub history: bool,

    /// Keep colours and attributes (terminal escape sequences)
    #[arg(short, long)]
    pub escapes: bool,
}

pub async fn run(args: CaptureArgs) -> Result<i32, CliError> {
    let mut found = crate::sessions::find(&args.session)?;
    let screen = if found.is_native() {
        found
            .native_running()?
            .0
            .capture(args.history, args.escapes)?
    } else {
        container_screen(&mut found, &args).await?
    };
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(&screen);
    let _ = stdout.flush();
    Ok(0)
}

async fn container_screen(
    found: &mut crate::sessions::Found,
    args: &CaptureArgs,
) -> Result<Vec<u8>, CliError> {
    let (engine, container) = found.container().await?;
    super::exec::require_running(found, &engine, &container).await?;
    let mut tmux = vec!["capture-pane", "-p", "-J", "-t", SESSION_TMUX_TARGET];
    if args.history {
        tmux.extend(["-S", "-"]);
    }
    if args.escapes {
        tmux.push("-e");
    }
    super::exec::output(&engine, &container, &session_tmux(&tmux)).await
}
