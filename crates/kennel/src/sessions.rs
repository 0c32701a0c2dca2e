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
