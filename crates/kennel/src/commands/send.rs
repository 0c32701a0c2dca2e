//! `kennel send`: type text into a persistent session's agent.

use clap::Args;

use kennel_lib::error::CliError;

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
    let mut found = kennel_lib::sessions::find(&args.session)?;
    found
        .backend()?
        .send(&mut found, &args.text, !args.no_enter)
        .await?;
    Ok(0)
}
