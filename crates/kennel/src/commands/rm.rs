//! `kennel rm`: remove a session's container and forget the session.

use clap::Args;
use kennel_engine::ContainerState;
use kennel_sessions::Mode;

use crate::error::CliError;

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,

    /// Remove a running session too (its agent is killed)
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(args: RmArgs) -> Result<i32, CliError> {
    let mut found = crate::sessions::find(&args.session)?;
    let name = found.session.name.clone();
    let running_hint = || {
        CliError::usage(format!("session {name} is running")).with_hint(format!(
            "`kennel stop {name}` first, or `kennel rm --force {name}`"
        ))
    };
    if found.is_native() && found.session.mode == Mode::Persistent {
        let (session, owner) = found.native()?;
        if let Some(owner) = owner {
            if !args.force {
                return Err(running_hint());
            }
            crate::native_session::kill(owner);
        }
        session.remove();
        let id = found.session.id.clone();
        found.registry.remove(&id)?;
        eprintln!("kennel: session {name} removed");
        audit(&id);
        crate::checkout::warn_left_behind(&found.session);
        return Ok(0);
    }
    let has_container = found.session.mode == Mode::Persistent
        && found.session.backend != "native"
        && found.session.handle.is_some();
    if has_container {
        let (engine, container) = found.container().await?;
        let state = engine.state(&container).await?;
        if state == ContainerState::Running && !args.force {
            return Err(running_hint());
        }
        engine.remove(&container, true).await?;
    } else if !found.session.state.is_ended() && !args.force {
        return Err(running_hint());
    }
    let id = found.session.id.clone();
    found.registry.remove(&id)?;
    eprintln!("kennel: session {name} removed");
    audit(&id);
    crate::checkout::warn_left_behind(&found.session);
    Ok(0)
}

/// A direct-mode session's end-of-session check of the user's git control
/// files, if it has not run yet.
fn audit(id: &str) {
    if let Ok(host) = kennel_core::host::HostContext::detect() {
        crate::git_audit::finish(&host, id);
    }
}
