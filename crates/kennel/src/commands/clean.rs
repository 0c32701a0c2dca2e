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

use crate::error::CliError;
use crate::sessions::{Engines, Observed, observe};

#[derive(Debug, Args)]
pub struct CleanArgs {
    /// Remove the leftovers without asking
    #[arg(short, long)]
    pub force: bool,
}

/// One thing to remove.
enum Leftover {
    /// A container whose session is gone or over.
    Container {
        backend: String,
        id: String,
        name: String,
    },
    /// A `kennel run` whose kennel is gone; its sandbox still runs.
    Orphan(Session),
    /// A persistent session whose container is gone.
    Forgotten(Session),
    /// What a native session that ended without its kennel cleaning up
    /// (killed) left: its tmux server and directory, with its Plan.
    NativeFiles(Session),
}

impl Leftover {
    fn describe(&self) -> String {
        match self {
            Leftover::Container { backend, name, .. } => {
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
            Leftover::NativeFiles(session) => format!(
                "session {} (native): its sandbox is gone; its files will be removed",
                session.name
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
    let mut engines = Engines::default();
    let leftovers = find(&host, registry.as_mut(), &sessions, &mut engines).await?;
    if leftovers.is_empty() {
        eprintln!("kennel: nothing to clean");
        return Ok(0);
    }
    eprintln!("kennel: {} leftover(s):", leftovers.len());
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
        eprintln!("kennel: nothing removed");
        return Ok(0);
    }
    let mut failed = 0;
    for leftover in &leftovers {
        if let Err(error) = remove(leftover, registry.as_mut(), &mut engines).await {
            eprintln!("kennel: {error}");
            failed += 1;
        }
    }
    // Direct-mode sessions that have ended by now: their git audit.
    if let Some(registry) = &registry {
        crate::git_audit::settle(&host, registry);
    }
    if failed > 0 {
        return Err(CliError::kennel(format!(
            "{failed} of {} leftovers could not be removed",
            leftovers.len()
        )));
    }
    eprintln!("kennel: removed {} leftover(s)", leftovers.len());
    Ok(0)
}

async fn find(
    host: &HostContext,
    mut registry: Option<&mut Registry>,
    sessions: &[Session],
    engines: &mut Engines,
) -> Result<Vec<Leftover>, CliError> {
    let mut leftovers = Vec::new();
    for session in sessions {
        if session.backend == "native" {
            let dir_left = session
                .handle
                .as_deref()
                .is_some_and(|dir| std::path::Path::new(dir).exists());
            if session.mode == Mode::Persistent && session.state.is_ended() && dir_left {
                leftovers.push(Leftover::NativeFiles(session.clone()));
            }
            continue;
        }
        if session.handle.is_none() {
            continue;
        }
        if session.state.is_ended() {
            // An ended persistent session keeps its container (for `logs`)
            // until `kennel rm`; one whose container is gone is a leftover.
            if session.mode == Mode::Persistent
                && let Some(engine) = engines.get(&session.backend).await
                && let Some(handle) = &session.handle
                && matches!(
                    engine.state(handle).await,
                    Ok(kennel_engine::ContainerState::Missing)
                )
            {
                leftovers.push(Leftover::Forgotten(session.clone()));
            }
            continue;
        }
        match observe(engines, session).await {
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

    // Containers of this registry that no live session accounts for.
    let label = format!(
        "{}={}",
        settings::LABEL_REGISTRY,
        settings::registry_label(host)
    );
    for backend in ["docker", "podman"] {
        let Some(engine) = engines.get(backend).await else {
            continue;
        };
        let containers = engine.list_containers(&label).await?;
        for container in containers {
            let session = container
                .labels
                .get(settings::LABEL_SESSION)
                .and_then(|id| sessions.iter().find(|session| &session.id == id));
            let leftover = match session {
                None => true,
                Some(session) => {
                    session.state.is_ended()
                        && (session.mode == Mode::Ephemeral || session.state == State::Failed)
                }
            };
            if leftover {
                leftovers.push(Leftover::Container {
                    backend: backend.into(),
                    id: container.id,
                    name: container.name,
                });
            }
        }
    }
    Ok(leftovers)
}

async fn remove(
    leftover: &Leftover,
    registry: Option<&mut Registry>,
    engines: &mut Engines,
) -> Result<(), CliError> {
    let unreachable = |backend: &str| {
        CliError::kennel(format!("{backend} does not answer")).with_hint("`kennel doctor` says why")
    };
    match leftover {
        Leftover::Container { backend, id, .. } => {
            let engine = engines
                .get(backend)
                .await
                .ok_or_else(|| unreachable(backend))?;
            engine.remove(id, true).await?;
        }
        Leftover::Orphan(session) => {
            let engine = engines
                .get(&session.backend)
                .await
                .ok_or_else(|| unreachable(&session.backend))?;
            if let Some(handle) = &session.handle {
                engine.remove(handle, true).await?;
            }
            if let Some(registry) = registry {
                registry.mark_ended(&session.id, State::Stopped, None)?;
            }
        }
        Leftover::Forgotten(session) => {
            if let Some(registry) = registry {
                registry.remove(&session.id)?;
            }
        }
        Leftover::NativeFiles(session) => {
            let host = HostContext::detect()?;
            crate::native_session::NativeSession::of_session(&host, session)?.close();
        }
    }
    Ok(())
}
