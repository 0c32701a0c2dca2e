//! `kennel capture`: print what a persistent session's agent shows.

use clap::Args;

use kennel_lib::error::CliError;

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
    let mut found = kennel_lib::sessions::find(&args.session)?;
    let screen = found
        .backend()?
        .capture(&mut found, args.history, args.escapes)
        .await?;
    crate::ui::write_stdout_bytes(&screen);
    Ok(0)
}
