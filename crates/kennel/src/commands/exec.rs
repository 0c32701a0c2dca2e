//! `kennel exec`: run a command in a persistent session's sandbox.

use clap::Args;

use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,

    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

pub async fn run(args: ExecArgs) -> Result<i32, CliError> {
    let mut found = kennel_lib::sessions::find(&args.session)?;
    found.backend()?.exec(&mut found, args.command).await
}
