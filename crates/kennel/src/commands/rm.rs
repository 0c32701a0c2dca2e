//! `kennel rm`: remove a session's container and forget the session.

use clap::Args;
use kennel_sessions::Mode;

use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The session: its name, id or a unique id prefix (`kennel ls`)
    pub session: String,

    /// Remove a running session too (its agent is killed)
    #[arg(short, long)]
    pub force: bool,
}

pub async fn run(args: RmArgs) -> Result<i32, CliError> {
    let mut found = kennel_lib::sessions::find(&args.session)?;
    if found.session.mode == Mode::Persistent {
        match found.backend() {
            Ok(backend) => backend.remove(&mut found, args.force).await?,
            // A backend this kennel does not know: only forgetting is left.
            Err(_) if args.force => {}
            Err(error) => return Err(error),
        }
    } else if !found.session.state.is_ended() && !args.force {
        // A `kennel run` in progress: its kennel removes its sandbox.
        return Err(found.running_error());
    }
    let id = found.session.id.clone();
    found.registry.remove(&id)?;
    kennel_lib::report::note(&format!("session {} removed", found.session.name));
    audit(&id);
    kennel_lib::checkout::warn_left_behind(&found.session);
    Ok(0)
}

/// A direct-mode session's end-of-session check of the user's git control
/// files, if it has not run yet.
fn audit(id: &str) {
    if let Ok(host) = kennel_core::host::HostContext::detect() {
        kennel_lib::git_audit::finish(&host, id);
    }
}
