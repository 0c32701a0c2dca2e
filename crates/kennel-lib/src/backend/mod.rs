//! Backends: what runs a sandbox.
//!
//! Everything that differs between Docker, Podman and the native backend is
//! behind [`Backend`]. The rest of kennel gets a backend from the name a
//! Plan or a registry row stores ([`by_name`]), or from the user's request
//! ([`select`]), and never asks which one it is. Adding a backend means one
//! implementation of the trait and one line in [`by_name`].
//!
//! Model: jj's `trait Backend` with `name()`, loaded by the name stored on
//! disk (`lib/src/backend.rs`, `StoreFactories::load_backend`).

mod container;
mod native;

use std::time::Duration;

use async_trait::async_trait;
use kennel_core::host::HostContext;
use kennel_core::plan::{BackendChoice, Plan};
/// Which of the agent's streams output came from.
pub use kennel_engine::OutputStream;
use kennel_sessions::{Session, State};

use crate::error::CliError;
use crate::proxy::{ProxySpec, SessionProxy};
use crate::sessions::Found;

pub use container::ContainerBackend;
pub use native::{NativeBackend, native_error, run_prepared};

/// Where a session's output goes: the stream it came from, and its bytes.
pub type OutputSink<'a> = dyn FnMut(OutputStream, &[u8]) + Send + 'a;

/// What the backend says about a session the registry calls live.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Observed {
    Running,
    /// A `kennel run` whose kennel is gone while its sandbox runs on.
    Orphaned,
    Ended(State, Option<i32>),
    /// Nothing to ask, or the backend did not answer: the registry's word stands.
    Unknown,
}

/// How `stop` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was running and has been stopped.
    Now,
    /// It was not running.
    Already,
}

/// A backend: runs sandboxes from Plans, and manages persistent sessions.
///
/// Its futures are not `Send`: a command runs them on its own runtime, and
/// the registry row they update is not `Sync`.
///
/// Session methods get the registry row ([`Found`]) and record what they
/// learn about the session's state in it. They refuse sessions started by
/// `kennel run` (attached to the terminal that started them) where that
/// matters.
#[async_trait(?Send)]
pub trait Backend: Send + Sync {
    /// The name Plans and the registry store.
    fn name(&self) -> &'static str;

    /// Does the sandbox run an image? (If not, it runs the host's own
    /// programs, and `--image` means nothing to it.)
    fn runs_images(&self) -> bool;

    /// Does a sandbox end when the kennel that owns it does? (Then the
    /// registry knows a session whose kennel is gone has ended, without
    /// asking; otherwise [`Backend::observe`] asks.)
    fn ends_with_owner(&self) -> bool;

    /// A persistent session's Plan: how the agent is kept alive without a
    /// terminal (tmux inside the sandbox, or a tmux server on the host).
    fn persistent(&self, plan: &mut Plan);

    /// Makes sure what runs the sandboxes answers (connects to the engine);
    /// says what it found, for the Plan's `selected.reason`.
    async fn connect(&self) -> Result<String, CliError>;

    /// Where the backend keeps the images kennel builds for agents; an
    /// error for a backend that runs none (see [`Backend::runs_images`]).
    async fn images(&self) -> Result<&dyn Images, CliError>;

    /// The state of the sandbox `handle` (a persistent session's, for the
    /// proxy that lives as long as it).
    async fn sandbox_state(&self, handle: &str) -> Result<SandboxState, CliError>;

    /// `kennel run` will prepare a sandbox attached to this terminal: start
    /// what does not need the Plan, so that it overlaps kennel's own
    /// preparation; [`Backend::prepare`] uses it. Best effort.
    fn warm_up(&self) {}

    /// Checks that `plan` can run here (the engine answers; the host has
    /// the agent's command and the kernel features) and returns what runs
    /// it. Fails closed, before anything is made on the host.
    async fn prepare<'a>(&'a self, plan: &Plan) -> Result<Box<dyn Launch + 'a>, CliError>;

    /// This terminal on the session's agent, until it detaches.
    async fn attach(&self, found: &mut Found) -> Result<i32, CliError>;

    /// Runs `command` in the running session's sandbox, with this terminal
    /// if there is one; the command's exit code.
    async fn exec(&self, found: &mut Found, command: Vec<String>) -> Result<i32, CliError>;

    /// Types `text` into the agent, then Enter if `enter`.
    async fn send(&self, found: &mut Found, text: &str, enter: bool) -> Result<(), CliError>;

    /// What the agent's terminal shows (`history`: its scrollback too;
    /// `escapes`: with colours and attributes).
    async fn capture(
        &self,
        found: &mut Found,
        history: bool,
        escapes: bool,
    ) -> Result<Vec<u8>, CliError>;

    /// Everything the agent showed, to `sink`; `follow` keeps going until
    /// the session ends.
    async fn logs(
        &self,
        found: &mut Found,
        follow: bool,
        sink: &mut OutputSink<'_>,
    ) -> Result<(), CliError>;

    /// Ends the agent gracefully: SIGTERM, after `grace` a hang-up, then
    /// the end of the sandbox.
    async fn stop(&self, found: &mut Found, grace: Duration) -> Result<Stopped, CliError>;

    /// Ends the agent and its sandbox now.
    async fn kill(&self, found: &mut Found) -> Result<(), CliError>;

    /// Removes what a persistent session's sandbox left (a running one only
    /// when `force`: its agent is killed). The caller forgets the session.
    async fn remove(&self, found: &mut Found, force: bool) -> Result<(), CliError>;

    /// Asks about a session the registry calls live.
    async fn observe(&self, session: &Session) -> Observed;

    /// Keeps the sandbox `handle` connected to its egress proxy (listening
    /// on the Unix socket `proxy`) for as long as the returned guard lives,
    /// where the sandbox cannot have the socket mounted (a sandbox on
    /// another machine). The proxy daemon of a started session holds it.
    /// `None`: the sandbox has its socket already.
    async fn keep_connected(
        &self,
        _handle: &str,
        _proxy: &std::path::Path,
    ) -> Result<Option<Box<dyn std::any::Any>>, CliError> {
        Ok(None)
    }

    /// A sandbox that works on a copy of the session's checkout (on another
    /// machine) brings the copy's commits and files into the checkout
    /// kennel reviews; the review commands call this first. Nothing to do
    /// for a sandbox that mounts the checkout itself.
    async fn bring_back(&self, _session: &Session) -> Result<(), CliError> {
        Ok(())
    }

    /// What an ended persistent session's sandbox left (`kennel clean`).
    async fn remains(&self, session: &Session) -> Remains;

    /// Removes what `session`'s sandbox left, running or not (an orphan of
    /// a killed kennel, or [`Remains::Files`]).
    async fn discard(&self, session: &Session) -> Result<(), CliError>;

    /// Sandboxes labelled with this registry (`registry_label`) that the
    /// backend knows of, with the session id each is labelled with. `None`
    /// when the backend does not answer.
    async fn sandboxes(&self, registry_label: &str) -> Option<Vec<Sandbox>>;

    /// Removes a sandbox [`Backend::sandboxes`] listed.
    async fn remove_sandbox(&self, id: &str) -> Result<(), CliError>;
}

/// A Plan about to run on a backend ([`Backend::prepare`]).
#[async_trait(?Send)]
pub trait Launch {
    /// What the backend cannot enforce of the Plan here (limits a rootless
    /// engine drops, kernel features the host lacks).
    fn warnings(&self) -> Vec<String>;

    /// Makes what the sandbox runs: the agent's images (`recipes`, their
    /// build logs in `build_logs`). Nothing for a backend without images.
    async fn provision(
        &mut self,
        recipes: &[kennel_image::Recipe],
        options: &crate::image_build::BuildOptions,
    ) -> Result<(), CliError>;

    /// Runs the sandbox attached to this terminal until the agent ends,
    /// with the session's proxy serving meanwhile (stopped afterwards);
    /// the agent's exit code.
    async fn run(
        self: Box<Self>,
        plan: &Plan,
        proxy: Option<SessionProxy>,
    ) -> Result<i32, CliError>;

    /// Starts a persistent session's sandbox detached, with its egress
    /// proxy (`proxy`) living as long as it, and records it in `registry`
    /// as running.
    async fn start(
        self: Box<Self>,
        plan: &Plan,
        proxy: Option<ProxySpec>,
        host: &HostContext,
        registry: &mut kennel_sessions::Registry,
        session_id: &str,
    ) -> Result<(), CliError>;
}

/// A persistent session's Plan for a backend whose sandbox keeps the agent
/// in tmux itself (the container engines, Incus): no terminal of kennel's,
/// and the sandbox's command starts tmux and waits for the agent.
pub fn persistent_in_sandbox(plan: &mut Plan) {
    plan.tty = false;
    plan.stdin = false;
    plan.command = kennel_core::settings::session_command(&plan.command);
}

/// `command` for `kennel exec` in a sandbox: through `sh`, so that a
/// command that does not exist exits 127 and one that cannot be executed
/// 126, as on every backend (engines report a failed exec each in their
/// own way).
pub fn exec_argv(command: Vec<String>) -> Vec<String> {
    let mut argv: Vec<String> = ["/bin/sh", "-c", "exec \"$@\"", "kennel exec"]
        .map(String::from)
        .to_vec();
    argv.extend(command);
    argv
}

/// What [`Backend::observe`] knows without asking a backend whose
/// sandboxes outlive their kennel: `Err` is the answer; `Ok` gives the
/// sandbox to ask about and whether the session is a `kennel run`'s
/// (ephemeral) one whose kennel is gone.
pub fn observe_locally(session: &Session) -> Result<(&str, bool), Observed> {
    let Some(handle) = &session.handle else {
        return Err(Observed::Unknown);
    };
    if session.state.is_ended() {
        return Err(Observed::Unknown);
    }
    let ephemeral = session.mode == kennel_sessions::Mode::Ephemeral;
    if ephemeral && session.owner.is_none_or(|owner| owner.is_alive()) {
        // Its kennel is there to record how it ends.
        return Err(Observed::Running);
    }
    Ok((handle, ephemeral))
}

/// Records what a backend whose sandboxes outlive their kennel says of a
/// persistent session's sandbox: `exited` with the agent's code when the
/// session recorded one, `stopped` otherwise or when kennel stopped it
/// (`stopped`); nothing while it runs, or when the registry says so already.
pub fn record_sandbox_state(found: &mut Found, state: SandboxState, stopped: bool) {
    let (new_state, code) = match state {
        SandboxState::Running => return,
        SandboxState::Ended(code) if stopped => (kennel_sessions::State::Stopped, code),
        SandboxState::Ended(Some(code)) => (kennel_sessions::State::Exited, Some(code)),
        SandboxState::Ended(None) | SandboxState::Missing => {
            (kennel_sessions::State::Stopped, None)
        }
    };
    if found.session.state == new_state && found.session.exit_code == code {
        return;
    }
    found.mark(new_state, code);
}

/// What [`Backend::remove`] does for a session that never got a sandbox:
/// `Some` is the answer (forgotten when it ended or with `force`; a start
/// in progress is running), `None`: there is a sandbox to remove.
pub fn remove_without_sandbox(found: &Found, force: bool) -> Option<Result<(), CliError>> {
    if found.session.handle.is_some() {
        return None;
    }
    Some(match found.session.state.is_ended() || force {
        true => Ok(()),
        false => Err(found.running_error()),
    })
}

/// The images kennel builds for agents, on the backend that runs them.
#[async_trait(?Send)]
pub trait Images {
    /// Builds each of `recipes` (in order) the store does not have yet
    /// (every one with `options.no_cache`).
    async fn ensure(
        &self,
        recipes: &[kennel_image::Recipe],
        options: &crate::image_build::BuildOptions,
    ) -> Result<Vec<crate::image_build::Outcome>, CliError>;

    /// Every image kennel built here (labelled `dev.kennel.managed`).
    async fn list(&self) -> Result<Vec<StoredImage>, CliError>;

    /// Removes the image `reference` (`force`: also while a sandbox uses it).
    async fn remove(&self, reference: &str, force: bool) -> Result<(), CliError>;
}

/// An image an [`Images`] store holds.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// Its reference (`kennel/claude:0123…`), or its id when it has none.
    pub reference: String,
    pub id: String,
    /// Size in bytes.
    pub size: i64,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A sandbox's state, as its backend reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxState {
    Running,
    /// Ended, with the agent's exit code when known.
    Ended(Option<i32>),
    /// The backend does not know it (removed).
    Missing,
}

/// What an ended persistent session's sandbox left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remains {
    /// Its sandbox, kept for `kennel logs` until `kennel rm` (or nothing,
    /// or the backend did not answer).
    Kept,
    /// Nothing: the session can be forgotten.
    Gone,
    /// Files of a sandbox that is gone, to remove.
    Files,
}

/// A sandbox a backend lists (`kennel clean`).
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
    /// The session id it is labelled with.
    pub session: Option<String>,
}

/// The backends kennel has built in, in the order `auto` tries them
/// (native, the fallback, last).
const BUILT_IN: [&str; 3] = ["docker", "podman", "native"];

/// Makes a backend (connecting nothing yet).
pub type Factory = fn() -> Box<dyn Backend>;

/// May `auto` choose a registered backend?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Yes, when no container engine answers (a backend on this machine).
    Auto,
    /// Only when the user names it (`--backend`, or their config): a
    /// backend that sends the user's code to another machine (a cluster)
    /// is never chosen because Docker happened to be missing.
    ByName,
}

/// Backends from other crates, [`register`]ed by the binary at start.
static REGISTERED: std::sync::RwLock<Vec<(&'static str, Factory, Selection)>> =
    std::sync::RwLock::new(Vec::new());

/// Adds a backend from another crate under `name`: [`by_name`] makes it
/// from then on, `--backend` accepts it, `auto` tries it after the
/// container engines and before native when `selection` allows, and
/// `kennel doctor`, `ls` and `clean` ask it. The binary does this once per
/// backend, first thing. (A name already known is ignored.)
pub fn register(name: &'static str, factory: Factory, selection: Selection) {
    let mut registered = REGISTERED
        .write()
        .unwrap_or_else(|poison| poison.into_inner());
    if !BUILT_IN.contains(&name) && !registered.iter().any(|(known, _, _)| *known == name) {
        registered.push((name, factory, selection));
    }
}

fn registered() -> Vec<(&'static str, Factory, Selection)> {
    REGISTERED
        .read()
        .unwrap_or_else(|poison| poison.into_inner())
        .clone()
}

/// Every backend's name ([`by_name`] knows each): the container engines,
/// the registered backends, native.
pub fn names() -> Vec<&'static str> {
    let mut names = vec![BUILT_IN[0], BUILT_IN[1]];
    names.extend(registered().into_iter().map(|(name, _, _)| name));
    names.push(BUILT_IN[2]);
    names
}

/// The backend a Plan or a registry row names.
pub fn by_name(name: &str) -> Result<Box<dyn Backend>, CliError> {
    Ok(match name {
        "docker" => Box::new(ContainerBackend::new(kennel_engine::EngineKind::Docker)),
        "podman" => Box::new(ContainerBackend::new(kennel_engine::EngineKind::Podman)),
        "native" => Box::new(NativeBackend::default()),
        other => match registered()
            .into_iter()
            .find(|(known, _, _)| *known == other)
        {
            Some((_, factory, _)) => factory(),
            None => {
                return Err(CliError::kennel(format!("unknown backend `{other}`")).with_hint(
                    "this session was recorded by another version of kennel; `kennel rm --force` forgets it",
                ));
            }
        },
    })
}

/// The registered backends `auto` may choose, made, in their order.
fn auto_candidates() -> Vec<Box<dyn Backend>> {
    registered()
        .into_iter()
        .filter(|(_, _, selection)| *selection == Selection::Auto)
        .map(|(_, factory, _)| factory())
        .collect()
}

/// The registered backends ([`register`]), made.
pub fn registered_backends() -> Vec<Box<dyn Backend>> {
    registered()
        .into_iter()
        .map(|(_, factory, _)| factory())
        .collect()
}

/// The backend the user asked for (`auto`: Docker if it answers, else
/// Podman, else the first registered backend `auto` may choose that
/// answers, else native),
/// and why it was chosen. `connect` false (as for
/// `--dry-run`) connects only to resolve `auto`.
pub async fn select(
    requested: &str,
    connect: bool,
) -> Result<(Box<dyn Backend>, BackendChoice), CliError> {
    let choice = |backend: &str, reason: String| BackendChoice {
        backend: backend.to_string(),
        reason,
    };
    match requested {
        "auto" => match kennel_engine::connect_auto().await {
            Ok((engine, why)) => {
                let name = engine.kind().to_string();
                tracing::info!(backend = name, "{why}");
                let backend = ContainerBackend::connected(engine);
                Ok((Box::new(backend), choice(&name, format!("auto: {why}"))))
            }
            Err(error) => {
                for backend in auto_candidates() {
                    match backend.connect().await {
                        Ok(found) => {
                            let name = backend.name();
                            let reason = format!(
                                "auto: no container engine is reachable ({error}); {name} answers: {found}"
                            );
                            tracing::info!("{reason}");
                            return Ok((backend, choice(name, reason)));
                        }
                        Err(why) => tracing::debug!(backend = backend.name(), "{}", why.message),
                    }
                }
                let reason = format!(
                    "auto: no container engine is reachable ({error}); using the native backend"
                );
                tracing::info!("{reason}");
                Ok((Box::new(NativeBackend::default()), choice("native", reason)))
            }
        },
        name => {
            let backend = by_name(name).map_err(|_| {
                CliError::usage(format!("unknown backend `{name}`"))
                    .with_hint(format!("choose one of: auto, {}", names().join(", ")))
            })?;
            if connect {
                // Fail here if its engine does not answer; what it found is
                // logged, not put in the Plan, so that `--dry-run` (which
                // does not connect) prints the Plan that runs.
                let found = backend.connect().await?;
                tracing::info!(backend = name, "{found}");
            }
            Ok((backend, choice(name, "requested".to_string())))
        }
    }
}

/// Backends of many sessions (`kennel ls`, `kennel clean`), each made once
/// (so an engine is connected once).
#[derive(Default)]
pub struct Backends {
    loaded: Vec<Box<dyn Backend>>,
}

impl Backends {
    /// The backend `name` names, or `None` for a name kennel does not know.
    pub fn get(&mut self, name: &str) -> Option<&dyn Backend> {
        let position = match self.loaded.iter().position(|b| b.name() == name) {
            Some(position) => position,
            None => {
                self.loaded.push(by_name(name).ok()?);
                self.loaded.len() - 1
            }
        };
        Some(self.loaded[position].as_ref())
    }
}

/// Asks the backends about every live session in `sessions` and records
/// what they say: ended ones in the registry, orphans on the session.
pub async fn refresh(registry: &mut kennel_sessions::Registry, sessions: &mut [Session]) {
    refresh_with(&mut Backends::default(), registry, sessions).await
}

async fn refresh_with(
    backends: &mut Backends,
    registry: &mut kennel_sessions::Registry,
    sessions: &mut [Session],
) {
    for session in sessions.iter_mut() {
        if session.state.is_ended() {
            continue;
        }
        let Some(backend) = backends.get(&session.backend) else {
            continue;
        };
        match backend.observe(session).await {
            Observed::Orphaned => session.orphaned = true,
            Observed::Ended(state, code) => match registry.mark_ended(&session.id, state, code) {
                Ok(()) => {
                    session.state = state;
                    session.exit_code = code;
                    session.ended_at = Some(kennel_sessions::now_ms());
                }
                Err(error) => crate::sessions::warn(
                    &format!("cannot record the state of {}", session.name),
                    &error,
                ),
            },
            Observed::Running | Observed::Unknown => {}
        }
    }
}

/// Records what the registry and the backends know of the sessions the
/// registry calls live (`kennel ls`), synchronously. Best effort: a backend
/// that does not answer leaves the registry's word.
pub fn settle(registry: &mut kennel_sessions::Registry, sessions: &mut Vec<Session>, all: bool) {
    // Sessions whose kennel died while starting them, or native runs whose
    // kennel died (and their sandbox with it).
    match registry.reap() {
        Ok(0) => {}
        Ok(_) => match registry.list(all) {
            Ok(fresh) => *sessions = fresh,
            Err(error) => tracing::warn!("cannot list the sessions again: {error}"),
        },
        Err(error) => tracing::warn!("cannot check for sessions of killed kennels: {error}"),
    }
    // Only a backend whose sandboxes outlive their kennel has to be asked.
    let mut backends = Backends::default();
    let must_ask = sessions.iter().any(|session| {
        !session.state.is_ended()
            && session.handle.is_some()
            && backends
                .get(&session.backend)
                .is_some_and(|b| !b.ends_with_owner())
    });
    if !must_ask {
        return;
    }
    let Ok(runtime) = crate::runtime() else {
        return;
    };
    runtime.block_on(refresh_with(&mut backends, registry, sessions));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend another crate registers is found by its name, listed
    /// before native (the fallback), and cannot shadow a built-in one; one
    /// registered `ByName` is never among `auto`'s candidates.
    #[test]
    fn registered_backends_are_found_by_name() {
        assert!(by_name("elsewhere").is_err());
        register(
            "elsewhere",
            || Box::new(NativeBackend::default()),
            Selection::Auto,
        );
        register(
            "docker",
            || Box::new(NativeBackend::default()),
            Selection::Auto,
        );
        register(
            "remote",
            || Box::new(ContainerBackend::new(kennel_engine::EngineKind::Podman)),
            Selection::ByName,
        );
        assert!(by_name("elsewhere").is_ok());
        assert_eq!(by_name("docker").map(|b| b.name()).ok(), Some("docker"));
        // A backend `auto` may not choose is still chosen by its name.
        assert_eq!(by_name("remote").map(|b| b.name()).ok(), Some("podman"));
        assert_eq!(
            names(),
            ["docker", "podman", "elsewhere", "remote", "native"]
        );
        assert_eq!(registered_backends().len(), 2);
        // `auto` tries only the one it may choose.
        let candidates: Vec<_> = auto_candidates().iter().map(|b| b.name()).collect();
        assert_eq!(candidates, ["native"]);
    }
}
