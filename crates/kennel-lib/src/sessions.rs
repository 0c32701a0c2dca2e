//! The session registry as `kennel run` uses it: best effort. A registry
//! that cannot be opened or written costs a warning, never the agent's run.

use std::path::PathBuf;

use kennel_core::host::HostContext;
use kennel_core::plan::Plan;
use kennel_core::settings;
use kennel_sessions::{
    Limits, Mode, NewSession, Owner, Registry, RegistryError, Session, SlotRequest, State,
};

use crate::error::CliError;

/// `<kennel data dir>/sessions.db`.
pub fn registry_path(host: &HostContext) -> PathBuf {
    settings::registry_path(host)
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

/// The registry row a new session gets: `plan` takes the slot the registry
/// hands out (its own agent home) and is labelled with the session's id,
/// and the row records the finished Plan.
pub fn register(
    registry: &mut Registry,
    host: &HostContext,
    plan: &mut Plan,
    name: Option<String>,
    mode: Mode,
    slot: SlotRequest,
) -> Result<Session, RegistryError> {
    let backend = plan
        .selected
        .as_ref()
        .map(|choice| choice.backend.clone())
        .unwrap_or_else(|| plan.backend.clone());
    let ends_with_owner = crate::backend::by_name(&backend)
        .map(|backend| backend.ends_with_owner())
        .unwrap_or(false);
    let new = NewSession {
        name,
        agent: plan.agent.clone(),
        workspace: plan.workspace.clone(),
        slot,
        // Slots are agent homes: per repository, unless homes are shared.
        slots_per_workspace: !settings::home_is_shared(plan, host),
        owner: Owner::current(),
        backend,
        ends_with_owner,
        mode,
        limits: Limits {
            pids: Some(plan.limits.pids),
            memory: plan.limits.memory,
            cpus: plan.limits.cpus,
        },
        plan: None,
    };
    // The row records the Plan as it will run (the session's slot and
    // label in it); `plan` itself changes only once the row is there.
    let session = registry.insert_with_plan(&new, |session| {
        let mut recorded = plan.redacted();
        label_session(&mut recorded, session);
        serde_json::to_string(&recorded).ok()
    })?;
    label_session(plan, &session);
    tracing::debug!(id = %session.id, name = %session.name, slot = session.slot, "session registered");
    Ok(session)
}

/// `plan` as it runs for `session`: in its slot, labelled with its id.
fn label_session(plan: &mut Plan, session: &Session) {
    settings::use_slot(plan, session.slot);
    plan.labels
        .insert(settings::LABEL_SESSION.into(), session.id.clone());
}

/// What registering a session of `plan` would give it now (`--dry-run`):
/// its agent-home slot (the resumed session's, or the lowest one no live
/// session holds) and its name (`name`, or the next `<agent>-<n>`), and
/// the registry, opened, when there is one. Without a registry (or when it
/// cannot be read): the slot asked for, or 0, and `<agent>-1`.
pub fn preview(
    host: &HostContext,
    plan: &Plan,
    request: SlotRequest,
    name: Option<&str>,
) -> (i64, String, Option<Registry>) {
    let asked = match request {
        SlotRequest::Exact(slot) => slot,
        SlotRequest::Free => 0,
    };
    let first_name = || format!("{}-1", plan.agent);
    let path = registry_path(host);
    let registry = if path.exists() {
        Registry::open(&path).ok()
    } else {
        None
    };
    let Some(mut registry) = registry else {
        return (
            asked,
            name.map(str::to_string).unwrap_or_else(first_name),
            None,
        );
    };
    let per_workspace = !settings::home_is_shared(plan, host);
    let slot = registry
        .peek_slot(
            &plan.agent,
            per_workspace.then_some(plan.workspace.as_path()),
            request,
        )
        .unwrap_or(asked);
    let name = match name {
        Some(name) => name.to_string(),
        None => registry
            .peek_name(&plan.agent)
            .unwrap_or_else(|_| first_name()),
    };
    (slot, name, Some(registry))
}

/// The session `--resume [SESSION]` continues: the named one, or the
/// newest session of the Plan's agent in its workspace, and only ever one
/// of this agent in this workspace. Its slot (agent home) and, in worktree
/// and clone modes, its checkout go to the new session.
pub fn resumed_session(
    host: &HostContext,
    plan: &Plan,
    query: Option<&str>,
) -> Result<Session, CliError> {
    let path = registry_path(host);
    let none_before = || {
        CliError::usage(format!(
            "no earlier session of {} in {} to resume",
            plan.agent,
            plan.workspace.display()
        ))
        .with_hint("`kennel ls --all` lists sessions; without --resume the agent starts afresh")
    };
    if !path.exists() {
        return Err(match query {
            Some(query) => RegistryError::NotFound(query.into()).into(),
            None => none_before(),
        });
    }
    let registry = Registry::open(&path)?;
    let session = match query {
        Some(query) => registry.get(query)?,
        None => registry
            .latest(&plan.agent, &plan.workspace)?
            .ok_or_else(none_before)?,
    };
    if session.agent != plan.agent || session.workspace != plan.workspace {
        return Err(CliError::usage(format!(
            "session {} ran {} in {}: --resume continues a session of {} in {} only",
            session.name,
            session.agent,
            session.workspace.display(),
            plan.agent,
            plan.workspace.display()
        ))
        .with_hint("run kennel in that session's workspace, or name a session of this one"));
    }
    tracing::info!(session = %session.name, slot = session.slot, "resuming");
    Ok(session)
}

/// One `kennel run`'s row in the registry, if the registry works.
pub struct Tracker {
    registry: Option<(Registry, Session)>,
}

impl Tracker {
    /// Registers an ephemeral session for `plan` in state `created`, in the
    /// slot `slot` asks for. Best effort for a fresh slot (a broken registry
    /// costs a warning and the run uses the agent's home); a slot to resume
    /// must be had, and so must the registry when `required` (a session
    /// with a checkout of its own: its branch is found through it).
    pub fn begin(
        host: &HostContext,
        plan: &mut Plan,
        slot: SlotRequest,
        required: bool,
    ) -> Result<Tracker, CliError> {
        let registered = Registry::open(&registry_path(host)).and_then(|mut registry| {
            let session = register(&mut registry, host, plan, None, Mode::Ephemeral, slot)?;
            Ok((registry, session))
        });
        match registered {
            Ok(registered) => Ok(Tracker {
                registry: Some(registered),
            }),
            Err(error) if slot == SlotRequest::Free && !required => {
                warn(
                    "cannot register the session (the agent runs anyway)",
                    &error,
                );
                Ok(Tracker { registry: None })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The session's id (empty when it is not registered).
    pub fn id(&self) -> &str {
        self.registry
            .as_ref()
            .map(|(_, session)| session.id.as_str())
            .unwrap_or("")
    }

    /// The session's name (empty when it is not registered).
    pub fn name(&self) -> &str {
        self.registry
            .as_ref()
            .map(|(_, session)| session.name.as_str())
            .unwrap_or("")
    }

    /// Creates the session's own checkout and runs `plan` in it (see
    /// [`crate::checkout::create`]).
    pub fn create_checkout(
        &mut self,
        host: &HostContext,
        plan: &mut Plan,
        choice: &crate::checkout::Choice,
        branch: Option<&str>,
    ) -> Result<kennel_git::Checkout, CliError> {
        let Some((registry, session)) = &mut self.registry else {
            return Err(CliError::kennel(
                "a session with a checkout of its own needs the session registry",
            ));
        };
        crate::checkout::create(registry, host, plan, choice, branch, session)
    }

    /// The sandbox is starting under `handle`.
    pub fn running(&mut self, handle: &str) {
        if let Some((registry, session)) = &mut self.registry
            && let Err(error) = registry.mark_running(&session.id, handle)
        {
            warn("cannot record the session as running", &error);
        }
    }

    /// Records how the run ended: `exited` with the agent's code, or
    /// `failed` when kennel itself failed.
    pub fn end(&mut self, result: &Result<i32, CliError>) {
        let Some((registry, session)) = &mut self.registry else {
            return;
        };
        let (state, code) = match result {
            Ok(code) => (State::Exited, Some(*code)),
            Err(error) => (State::Failed, Some(error.kind.code())),
        };
        if let Err(error) = registry.mark_ended(&session.id, state, code) {
            warn("cannot record the end of the session", &error);
        }
    }
}

pub fn warn(what: &str, error: &RegistryError) {
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
    /// The backend the session runs on.
    pub fn backend(&self) -> Result<Box<dyn crate::backend::Backend>, CliError> {
        crate::backend::by_name(&self.session.backend)
    }

    /// Refuses sessions of `kennel run`: their terminal is the one that started them.
    pub fn require_persistent(&self) -> Result<(), CliError> {
        let session = &self.session;
        if session.mode == Mode::Persistent {
            return Ok(());
        }
        Err(CliError::usage(format!(
            "session {} ({}) was started by `kennel run`: it is attached to the terminal that started it",
            session.name, session.id
        ))
        .with_hint("`kennel start` starts a session that these commands can manage"))
    }

    /// The sandbox of a persistent session (its handle), for the session
    /// commands; refused for `kennel run`'s sessions and for one that never
    /// got a sandbox.
    pub fn sandbox_handle(&self) -> Result<String, CliError> {
        self.require_persistent()?;
        let session = &self.session;
        session.handle.clone().ok_or_else(|| {
            CliError::kennel(format!(
                "session {} has no container (it never started)",
                session.name
            ))
            .with_hint(format!("`kennel rm {}` forgets it", session.name))
        })
    }

    /// The error for a session that has ended.
    pub fn not_running(&self) -> CliError {
        let session = &self.session;
        CliError::kennel(format!(
            "session {} is not running (it is {}{})",
            session.name,
            session.state,
            session
                .exit_code
                .map(|code| format!(", exit code {code}"))
                .unwrap_or_default()
        ))
        .with_hint(format!(
            "`kennel logs {}` shows what it did; `kennel rm {}` removes it",
            session.name, session.name
        ))
    }

    /// The error for removing a session that runs.
    pub fn running_error(&self) -> CliError {
        let name = &self.session.name;
        CliError::usage(format!("session {name} is running")).with_hint(format!(
            "`kennel stop {name}` first, or `kennel rm --force {name}`"
        ))
    }

    /// Records that the session ended in `state`.
    pub fn mark(&mut self, state: State, code: Option<i32>) {
        if let Err(error) = self.registry.mark_ended(&self.session.id, state, code) {
            warn("cannot record the session's state", &error);
        }
        self.session.state = state;
        self.session.exit_code = code;
    }
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
