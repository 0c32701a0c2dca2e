//! `kennel kill`: end a persistent session now (SIGKILL).

use clap::Args;

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,
}

pub async fn run(args: KillArgs) -> Result<i32, CliError> {
    let mut found = crate::sessions::find(&args.session)?;
    found.backend()?.kill(&mut found).await?;
    eprintln!("kennel: session {} killed", found.session.name);
    crate::checkout::session_ended(&found.session);
    Ok(0)
}
