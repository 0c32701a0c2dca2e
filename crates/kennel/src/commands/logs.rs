//! `kennel logs`: everything a persistent session's agent showed.
//!
//! While the session runs, this is its terminal output as recorded inside the
//! sandbox (tmux `pipe-pane`, escape sequences included, as `docker logs`
//! shows a terminal); `-f` follows it. Once the container has ended, the
//! engine's log of the container is shown instead.

use clap::Args;
use kennel_engine::ContainerState;

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,

    /// Keep printing new output until the session ends
    #[arg(short, long)]
    pub follow: bool,
}

pub async fn run(args: LogsArgs) -> Result<i32, CliError> {
    let mut found = crate::sessions::find(&args.session)?;
    if found.is_native() {
        let (session, owner) = found.native()?;
        session.logs(owner.filter(|_| args.follow))?;
        return Ok(0);
    }
    let (engine, container) = found.container().await?;
    let state = engine.state(&container).await?;
    match state {
        ContainerState::Running => {
            let mut tail = vec!["tail".to_string(), "-n".into(), "+1".into()];
            if args.follow {
                tail.push("-f".into());
            }
            tail.push(kennel_core::settings::SESSION_LOG.into());
            engine.exec(&container, &tail, &[], false, false).await?;
            Ok(0)
        }
        ContainerState::Exited(_) => {
            found.record(&engine, state, false).await;
            engine.logs(&container, false).await?;
            Ok(0)
        }
        ContainerState::Missing => {
            found.record(&engine, state, false).await;
            Err(CliError::kennel(format!(
                "the container of session {} is gone: there are no logs",
                found.session.name
            )))
        }
    }
}
