//! `kennel clean`: remove what sessions left behind.
//!
//! Leftovers are: containers of this registry whose session is gone (or was
//! a `kennel run` that ended, or never got started), persistent sessions
//! whose container is gone, and `kennel run` sessions whose kennel was killed
//! while their sandbox runs on (orphans: their sandbox is removed). Only
//! containers labelled with this registry are considered, so another user's
//! (or another data directory's) sessions on a shared engine are never
//! touched.

use clap::Args;
use kennel_core::host::HostContext;
use kennel_core::settings;
use kennel_sessions::{Mode, Registry, Session, State};

use kennel_lib::backend::{Backend, Backends, NAMES, Observed, Remains};
use kennel_lib::error::CliError;

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Remove the leftovers without asking
    #[arg(short, long)]
    pub force: bool,
}

/// One thing to remove.
enum Leftover {
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
    fn describe(&self) -> String {
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

pub async fn run(args: CleanArgs) -> Result<i32, CliError> {
    let host = HostContext::detect()?;
    let path = settings::registry_path(&host);
    let mut registry = if path.exists() {
        Some(Registry::open(&path)?)
    } else {
        None
    };
    let sessions = match &mut registry {
        Some(registry) => {
            registry.reap()?;
            registry.list(true)?
        }
        None => Vec::new(),
    };
    let mut backends = Backends::default();
    let leftovers = find(&host, registry.as_mut(), &sessions, &mut backends).await?;
    if leftovers.is_empty() {
        kennel_lib::report::note("nothing to clean");
        return Ok(0);
    }
    kennel_lib::report::note(&format!("{} leftover(s):", leftovers.len()));
    for leftover in &leftovers {
        eprintln!("  {}", leftover.describe());
    }
    if !args.force
        && !crate::confirm::ask(
            "Remove them?",
            CliError::usage(
                "kennel clean asks before removing anything, and stdin is not a terminal",
            )
            .with_hint("`kennel clean --force` removes the leftovers listed without asking"),
        )?
    {
        kennel_lib::report::note("nothing removed");
        return Ok(0);
    }
    let mut failed = 0;
    for leftover in &leftovers {
        if let Err(error) = remove(leftover, registry.as_mut(), &mut backends).await {
            kennel_lib::report::note(&format!("{error}"));
            failed += 1;
        }
    }
    // Direct-mode sessions that have ended by now: their git audit.
    if let Some(registry) = &registry {
        kennel_lib::git_audit::settle(&host, registry);
    }
    if failed > 0 {
        return Err(CliError::kennel(format!(
            "{failed} of {} leftovers could not be removed",
            leftovers.len()
        )));
    }
    kennel_lib::report::note(&format!("removed {} leftover(s)", leftovers.len()));
    Ok(0)
}

async fn find(
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
    for name in NAMES {
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

async fn remove(
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
