//! The session registry as `kennel run` uses it: best effort. A registry
//! that cannot be opened or written costs a warning, never the agent's run.

use std::path::PathBuf;

use kennel_core::host::HostContext;
use kennel_core::plan::Plan;
use kennel_sessions::{Limits, Mode, NewSession, Registry, RegistryError, State};

use crate::error::CliError;

/// `<kennel data dir>/sessions.db`.
pub fn registry_path(host: &HostContext) -> PathBuf {
    host.data_dir.join("sessions.db")
}

impl From<RegistryError> for CliError {
    fn from(error: RegistryError) -> CliError {
        let mut out = if error.is_lookup() {
            CliError::usage(error.to_string())
        } else {
            CliError::kennel(error.to_string())
        };
        out.hint = error.hint();
        out
    }
}

/// One `kennel run`'s row in the registry, if the registry works.
pub struct Tracker {
    registry: Option<(Registry, String)>,
}

impl Tracker {
    /// Registers an ephemeral session for `plan` in state `created`.
    pub fn begin(host: &HostContext, plan: &Plan) -> Tracker {
        let backend = plan
            .selected
            .as_ref()
            .map(|choice| choice.backend.clone())
            .unwrap_or_else(|| plan.backend.clone());
        let new = NewSession {
            name: None,
            agent: plan.agent.clone(),
            workspace: plan.workspace.clone(),
            slot: 0,
            backend,
            mode: Mode::Ephemeral,
            limits: Limits {
                pids: Some(plan.limits.pids),
                memory: plan.limits.memory,
                cpus: plan.limits.cpus,
            },
            plan: serde_json::to_string(&plan.redacted()).ok(),
        };
        let registry = Registry::open(&registry_path(host))
            .and_then(|mut registry| {
                let session = registry.insert(&new)?;
                tracing::debug!(id = %session.id, name = %session.name, "session registered");
                Ok((registry, session.id))
            })
            .map_err(|error| {
                warn(
                    "cannot register the session (the agent runs anyway)",
                    &error,
                )
            })
            .ok();
        Tracker { registry }
    }

    /// The sandbox is starting under `handle`.
    pub fn running(&mut self, handle: &str) {
        if let Some((registry, id)) = &mut self.registry
            && let Err(error) = registry.mark_running(id, handle)
        {
            warn("cannot record the session as running", &error);
        }
    }

    /// Records how the run ended: `exited` with the agent's code, or
    /// `failed` when kennel itself failed.
    pub fn end(self, result: &Result<i32, CliError>) {
        let Some((mut registry, id)) = self.registry else {
            return;
        };
        let (state, code) = match result {
            Ok(code) => (State::Exited, Some(*code)),
            Err(error) => (State::Failed, Some(error.kind.code())),
        };
        if let Err(error) = registry.mark_ended(&id, state, code) {
            warn("cannot record the end of the session", &error);
        }
    }
}

fn warn(what: &str, error: &RegistryError) {
    match error.hint() {
        Some(hint) => tracing::warn!("{what}: {error}; hint: {hint}"),
        None => tracing::warn!("{what}: {error}"),
    }
}

/// A persistent session found by id, unique id prefix or name, with the
/// registry it came from.
pub struct Found {
    pub registry: Registry,
    pub session: kennel_sessions::Session,
}

/// Looks `query` up in the registry.
pub fn find(query: &str) -> Result<Found, CliError> {
    let host = HostContext::detect()?;
    let path = registry_path(&host);
    if !path.exists() {
        return Err(RegistryError::NotFound(query.into()).into());
    }
    let registry = Registry::open(&path)?;
    let session = registry.get(query)?;
    Ok(Found { registry, session })
}

impl Found {
    /// The container of a persistent session on Docker or Podman, and its engine.
    pub async fn container(&self) -> Result<(kennel_engine::Engine, String), CliError> {
        let session = &self.session;
        if session.mode != Mode::Persistent {
            return Err(CliError::usage(format!(
                "session {} ({}) was started by `kennel run`: it is attached to the terminal that started it",
                session.name, session.id
            ))
            .with_hint("`kennel start` starts a session that these commands can manage"));
        }
        if session.backend == "native" {
            return Err(native_unsupported());
        }
        let Some(handle) = session.handle.clone() else {
            return Err(CliError::kennel(format!(
                "session {} has no container (it never started)",
                session.name
            ))
            .with_hint(format!("`kennel rm {}` forgets it", session.name)));
        };
        let engine = crate::engines::connect(&session.backend).await?;
        Ok((engine, handle))
    }

    /// Records the engine's view of a persistent session's container.
    pub fn record(&mut self, state: kennel_engine::ContainerState, stopped: bool) {
        use kennel_engine::ContainerState as C;
        let (new_state, code) = match state {
            C::Running => return,
            C::Exited(code) if !stopped => (State::Exited, code),
            C::Exited(code) => (State::Stopped, code),
            C::Missing => (State::Stopped, None),
        };
        if self.session.state == new_state && self.session.exit_code == code {
            return;
        }
        if let Err(error) = self.registry.mark_ended(&self.session.id, new_state, code) {
            warn("cannot record the session's state", &error);
        }
        self.session.state = new_state;
        self.session.exit_code = code;
    }
}

/// The error for session commands on the native backend.
pub fn native_unsupported() -> CliError {
    CliError::kennel("persistent sessions are not yet supported on the native backend").with_hint(
        "use --backend docker or --backend podman, or `kennel run` for an attached session",
    )
}

/// `TERM` for a terminal inside the sandbox: the host's when the image
/// surely knows it, else `xterm-256color`.
pub fn sandbox_term() -> String {
    let term = std::env::var("TERM").unwrap_or_default();
    let known = [
        "xterm", "screen", "tmux", "linux", "vt100", "vt220", "rxvt", "ansi",
    ];
    if known.iter().any(|prefix| term.starts_with(prefix)) {
        term
    } else {
        "xterm-256color".into()
    }
}
