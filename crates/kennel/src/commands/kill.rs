//! `kennel kill`: end a persistent session now (SIGKILL).

use clap::Args;

use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,
}

pub async fn run(args: KillArgs) -> Result<i32, CliError> {
    let mut found = kennel_lib::sessions::find(&args.session)?;
    found.backend()?.kill(&mut found).await?;
    kennel_lib::report::note(&format!("session {} killed", found.session.name));
    kennel_lib::checkout::session_ended(&found.session);
    Ok(0)
}
