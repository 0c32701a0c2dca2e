//! `kennel kill`: end a persistent session now (SIGKILL).

use std::time::Duration;

use clap::Args;

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct KillArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,
}

pub async fn run(args: KillArgs) -> Result<i32, CliError> {
    let mut found = crate::sessions::find(&args.session)?;
    if found.is_native() {
        let (session, owner) = found.native()?;
        if let Some(owner) = owner {
            crate::native_session::kill(owner);
            found.mark(kennel_sessions::State::Stopped, None);
        }
        session.close();
        eprintln!("kennel: session {} killed", found.session.name);
        crate::checkout::session_ended(&found.session);
        return Ok(0);
    }
    let (engine, container) = found.container().await?;
    engine.kill_now(&container).await?;
    let state = super::stop::wait_exit(&engine, &container, Duration::from_secs(10)).await?;
    found.record(&engine, state, true).await;
    eprintln!("kennel: session {} killed", found.session.name);
    crate::checkout::session_ended(&found.session);
    Ok(0)
}
