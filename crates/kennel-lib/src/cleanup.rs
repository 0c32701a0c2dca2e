//! What sessions left behind (`kennel clean`): containers of this registry
//! whose session is gone (or was a `kennel run` that ended, or never got
//! started), persistent sessions whose sandbox is gone, `kennel run`
//! sessions whose kennel was killed while their sandbox runs on (orphans),
//! and files a killed native session left. Only sandboxes labelled with
//! this registry are considered, so another user's (or another data
//! directory's) sessions on a shared engine are never touched.

use kennel_core::host::HostContext;
use kennel_core::settings;
use kennel_sessions::{Mode, Registry, Session, State};

use crate::backend::{Backend, Backends, Observed, Remains};
use crate::error::CliError;

/// One thing to remove.
pub enum Leftover {
    /// A sandbox (container) whose session is gone or over.
    Sandbox {
        backend: String,
        id: String,
        name: String,
    },
    /// A `kennel run` whose kennel is gone; its sandbox still runs.
    Orphan(Session),
    /// A persistent session whose sandbox is gone.
    Forgotten(Session),
    /// What a session that ended without its kennel cleaning up (killed)
    /// left: for native, its tmux server and directory, with its Plan.
    Files(Session),
}

impl Leftover {
    /// One line for the user.
    pub fn describe(&self) -> String {
        match self {
            Leftover::Sandbox { backend, name, .. } => {
                format!("container {name} ({backend}): its session is gone or over")
            }
            Leftover::Orphan(session) => format!(
                "session {} ({}): its kennel was killed; its sandbox still runs and will be removed",
                session.name, session.backend
            ),
            Leftover::Forgotten(session) => format!(
                "session {} ({}): its container is gone; the session will be forgotten",
                session.name, session.backend
            ),
            Leftover::Files(session) => format!(
                "session {} ({}): its sandbox is gone; its files will be removed",
                session.name, session.backend
            ),
        }
    }
}

/// Every leftover; ended sessions the backends report are recorded on the
/// way.
pub async fn find(
    host: &HostContext,
    mut registry: Option<&mut Registry>,
    sessions: &[Session],
    backends: &mut Backends,
) -> Result<Vec<Leftover>, CliError> {
    let mut leftovers = Vec::new();
    for session in sessions {
        let Some(backend) = backends.get(&session.backend) else {
            continue;
        };
        if session.state.is_ended() {
            // An ended persistent session keeps its sandbox (for `logs`)
            // until `kennel rm`; one whose sandbox is gone is a leftover.
            if session.mode == Mode::Persistent {
                match backend.remains(session).await {
                    Remains::Gone => leftovers.push(Leftover::Forgotten(session.clone())),
                    Remains::Files => leftovers.push(Leftover::Files(session.clone())),
                    Remains::Kept => {}
                }
            }
            continue;
        }
        match backend.observe(session).await {
            Observed::Orphaned => leftovers.push(Leftover::Orphan(session.clone())),
            Observed::Ended(_, None) if session.mode == Mode::Persistent => {
                leftovers.push(Leftover::Forgotten(session.clone()))
            }
            Observed::Ended(state, code) => {
                if let Some(registry) = registry.as_deref_mut() {
                    registry.mark_ended(&session.id, state, code)?;
                }
            }
            Observed::Running | Observed::Unknown => {}
        }
    }

    // Sandboxes of this registry that no live session accounts for.
    let label = settings::registry_label(host);
    for name in crate::backend::names() {
        let Some(backend) = backends.get(name) else {
            continue;
        };
        let Some(sandboxes) = backend.sandboxes(&label).await else {
            continue;
        };
        for sandbox in sandboxes {
            let session = sandbox
                .session
                .as_ref()
                .and_then(|id| sessions.iter().find(|session| &session.id == id));
            let leftover = match session {
                None => true,
                Some(session) => {
                    session.state.is_ended()
                        && (session.mode == Mode::Ephemeral || session.state == State::Failed)
                }
            };
            if leftover {
                leftovers.push(Leftover::Sandbox {
                    backend: name.into(),
                    id: sandbox.id,
                    name: sandbox.name,
                });
            }
        }
    }
    Ok(leftovers)
}

/// Removes one leftover (and forgets or records its session).
pub async fn remove(
    leftover: &Leftover,
    registry: Option<&mut Registry>,
    backends: &mut Backends,
) -> Result<(), CliError> {
    fn backend<'a>(backends: &'a mut Backends, name: &str) -> Result<&'a dyn Backend, CliError> {
        backends
            .get(name)
            .ok_or_else(|| CliError::kennel(format!("unknown backend `{name}`")))
    }
    match leftover {
        Leftover::Sandbox {
            backend: name, id, ..
        } => {
            backend(backends, name)?.remove_sandbox(id).await?;
        }
        Leftover::Orphan(session) => {
            backend(backends, &session.backend)?
                .discard(session)
                .await?;
            if let Some(registry) = registry {
                registry.mark_ended(&session.id, State::Stopped, None)?;
            }
        }
        Leftover::Forgotten(session) => {
            if let Some(registry) = registry {
                registry.remove(&session.id)?;
            }
        }
        Leftover::Files(session) => {
            backend(backends, &session.backend)?
                .discard(session)
                .await?;
        }
    }
    Ok(())
}
