//! Docker and Podman: sandboxes are containers; a persistent session's agent
//! runs in tmux inside its container (on the socket
//! [`kennel_core::settings::SESSION_TMUX_SOCKET`]).

use std::io::IsTerminal;
use std::time::Duration;

use async_trait::async_trait;
use kennel_core::host::HostContext;
use kennel_core::plan::Plan;
use kennel_core::settings::{self, session_tmux};
use kennel_engine::{ContainerState, Engine, EngineKind};
use kennel_sessions::{Session, State};
use tokio::sync::OnceCell;

use super::{Backend, Launch, Observed, OutputSink, Remains, Sandbox, Stopped};
use crate::error::CliError;
use crate::proxy::{ProxySpec, SessionProxy};
use crate::sessions::Found;

pub struct ContainerBackend {
    kind: EngineKind,
    /// Connected on first use.
    engine: OnceCell<Engine>,
}

impl ContainerBackend {
    pub fn new(kind: EngineKind) -> ContainerBackend {
        ContainerBackend {
            kind,
            engine: OnceCell::new(),
        }
    }

    /// A backend on an engine already connected (`auto` found it).
    pub fn connected(engine: Engine) -> ContainerBackend {
        ContainerBackend {
            kind: engine.kind(),
            engine: OnceCell::new_with(Some(engine)),
        }
    }

    /// The engine, connected on first use.
    pub async fn engine(&self) -> Result<&Engine, CliError> {
        self.engine
            .get_or_try_init(|| async {
                let engine = kennel_engine::connect(self.kind).await?;
                tracing::debug!(engine = engine.label(), version = engine.version(), socket = %engine.socket().display(), "connected");
                Ok::<Engine, CliError>(engine)
            })
            .await
    }

    /// The container of a persistent session, and the engine.
    async fn container<'a>(&'a self, found: &Found) -> Result<(&'a Engine, String), CliError> {
        let handle = found.sandbox_handle()?;
        Ok((self.engine().await?, handle))
    }

    /// The container of a persistent session that must be running.
    async fn running<'a>(&'a self, found: &mut Found) -> Result<(&'a Engine, String), CliError> {
        let (engine, container) = self.container(found).await?;
        let state = engine.state(&container).await?;
        if state == ContainerState::Running {
            return Ok((engine, container));
        }
        record(found, engine, state, false).await;
        Err(found.not_running())
    }
}

#[async_trait(?Send)]
impl Backend for ContainerBackend {
    fn name(&self) -> &'static str {
        match self.kind {
            EngineKind::Docker => "docker",
            EngineKind::Podman => "podman",
        }
    }

    fn ends_with_owner(&self) -> bool {
        false
    }

    fn runs_images(&self) -> bool {
        true
    }

    fn persistent(&self, plan: &mut Plan) {
        // The container's own command keeps the agent in tmux.
        super::persistent_in_sandbox(plan);
    }

    async fn connect(&self) -> Result<String, CliError> {
        let engine = self.engine().await?;
        Ok(format!(
            "{} {} at {}",
            engine.label(),
            engine.version(),
            engine.socket().display()
        ))
    }

    async fn images(&self) -> Result<&dyn super::Images, CliError> {
        Ok(self.engine().await? as &dyn super::Images)
    }

    async fn sandbox_state(&self, handle: &str) -> Result<super::SandboxState, CliError> {
        Ok(match self.engine().await?.state(handle).await? {
            ContainerState::Running => super::SandboxState::Running,
            ContainerState::Exited(code) => super::SandboxState::Ended(code),
            ContainerState::Missing => super::SandboxState::Missing,
        })
    }

    async fn prepare<'a>(&'a self, plan: &Plan) -> Result<Box<dyn Launch + 'a>, CliError> {
        let engine = self.engine().await?;
        Ok(Box::new(ContainerLaunch {
            engine,
            warnings: engine.unenforced_limits(plan).into_iter().collect(),
        }))
    }

    async fn attach(&self, found: &mut Found) -> Result<i32, CliError> {
        let (engine, container) = self.running(found).await?;
        crate::tmux::attach(&InContainer { engine, container }).await
    }

    async fn exec(&self, found: &mut Found, command: Vec<String>) -> Result<i32, CliError> {
        let (engine, container) = self.running(found).await?;
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let env = if tty {
            vec![format!("TERM={}", crate::sessions::sandbox_term())]
        } else {
            Vec::new()
        };
        let argv = super::exec_argv(command);
        Ok(engine.exec(&container, &argv, &env, tty, true).await?)
    }

    async fn send(&self, found: &mut Found, text: &str, enter: bool) -> Result<(), CliError> {
        let (engine, container) = self.running(found).await?;
        crate::tmux::send(&InContainer { engine, container }, text, enter).await
    }

    async fn capture(
        &self,
        found: &mut Found,
        history: bool,
        escapes: bool,
    ) -> Result<Vec<u8>, CliError> {
        let (engine, container) = self.running(found).await?;
        crate::tmux::capture(&InContainer { engine, container }, history, escapes).await
    }

    async fn logs(
        &self,
        found: &mut Found,
        follow: bool,
        sink: &mut OutputSink<'_>,
    ) -> Result<(), CliError> {
        let (engine, container) = self.container(found).await?;
        let state = engine.state(&container).await?;
        match state {
            ContainerState::Running => {
                // The terminal output recorded inside (tmux `pipe-pane`).
                let mut tail = vec!["tail".to_string(), "-n".into(), "+1".into()];
                if follow {
                    tail.push("-f".into());
                }
                tail.push(settings::SESSION_LOG.into());
                engine.exec_stream(&container, &tail, sink).await?;
                Ok(())
            }
            ContainerState::Exited(_) => {
                record(found, engine, state, false).await;
                engine.logs(&container, false, sink).await?;
                Ok(())
            }
            ContainerState::Missing => {
                record(found, engine, state, false).await;
                Err(CliError::kennel(format!(
                    "the container of session {} is gone: there are no logs",
                    found.session.name
                )))
            }
        }
    }

    /// SIGTERM goes to the agent (the process group of its tmux pane); when
    /// it is still running after `grace`, the tmux server is closed (SIGHUP
    /// to the agent, as a closed terminal would), then the engine stops the
    /// container.
    async fn stop(&self, found: &mut Found, grace: Duration) -> Result<Stopped, CliError> {
        let (engine, container) = self.container(found).await?;
        let state = engine.state(&container).await?;
        if state != ContainerState::Running {
            record(found, engine, state, true).await;
            return Ok(Stopped::Already);
        }
        let script = crate::tmux::terminate_agent_script();
        let signalled = engine
            .exec_output(&container, &["sh".into(), "-c".into(), script])
            .await;
        tracing::debug!(?signalled, "SIGTERM to the agent");
        let mut state = wait_exit(engine, &container, grace).await?;
        if state == ContainerState::Running {
            let server = InContainer {
                engine,
                container: container.clone(),
            };
            crate::tmux::hang_up(&server).await;
            state = wait_exit(engine, &container, Duration::from_secs(2)).await?;
        }
        if state == ContainerState::Running {
            engine.stop(&container, Duration::from_secs(2)).await?;
            state = engine.state(&container).await?;
        }
        record(found, engine, state, true).await;
        Ok(Stopped::Now)
    }

    async fn kill(&self, found: &mut Found) -> Result<(), CliError> {
        let (engine, container) = self.container(found).await?;
        engine.kill_now(&container).await?;
        let state = wait_exit(engine, &container, Duration::from_secs(10)).await?;
        record(found, engine, state, true).await;
        Ok(())
    }

    async fn remove(&self, found: &mut Found, force: bool) -> Result<(), CliError> {
        if let Some(done) = super::remove_without_sandbox(found, force) {
            return done;
        }
        let (engine, container) = self.container(found).await?;
        let state = engine.state(&container).await?;
        if state == ContainerState::Running && !force {
            return Err(found.running_error());
        }
        engine.remove(&container, true).await?;
        Ok(())
    }

    async fn observe(&self, session: &Session) -> Observed {
        let (handle, ephemeral) = match super::observe_locally(session) {
            Ok(asked) => asked,
            Err(known) => return known,
        };
        let Some(engine) = self.answering().await else {
            return Observed::Unknown;
        };
        match engine.state(handle).await {
            Ok(ContainerState::Running) if ephemeral => Observed::Orphaned,
            Ok(ContainerState::Running) => Observed::Running,
            Ok(ContainerState::Exited(code)) if !ephemeral => {
                Observed::Ended(how_it_ended(engine, handle, &session.name).await, code)
            }
            Ok(ContainerState::Exited(code)) => Observed::Ended(State::Stopped, code),
            Ok(ContainerState::Missing) => Observed::Ended(State::Stopped, None),
            Err(error) => {
                tracing::debug!(%error, "cannot ask the engine about {}", session.name);
                Observed::Unknown
            }
        }
    }

    async fn remains(&self, session: &Session) -> Remains {
        let (Some(handle), Some(engine)) = (&session.handle, self.answering().await) else {
            return Remains::Kept;
        };
        match engine.state(handle).await {
            Ok(ContainerState::Missing) => Remains::Gone,
            _ => Remains::Kept,
        }
    }

    async fn discard(&self, session: &Session) -> Result<(), CliError> {
        if let Some(handle) = &session.handle {
            self.engine().await?.remove(handle, true).await?;
        }
        Ok(())
    }

    async fn sandboxes(&self, registry_label: &str) -> Option<Vec<Sandbox>> {
        let engine = self.answering().await?;
        let label = format!("{}={registry_label}", settings::LABEL_REGISTRY);
        match engine.list_containers(&label).await {
            Ok(containers) => Some(
                containers
                    .into_iter()
                    .map(|container| Sandbox {
                        session: container.labels.get(settings::LABEL_SESSION).cloned(),
                        id: container.id,
                        name: container.name,
                    })
                    .collect(),
            ),
            Err(error) => {
                tracing::warn!("cannot list the containers of {}: {error}", self.name());
                None
            }
        }
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), CliError> {
        Ok(self.engine().await?.remove(id, true).await?)
    }
}

/// A Plan about to run as a container.
struct ContainerLaunch<'a> {
    engine: &'a Engine,
    warnings: Vec<String>,
}

#[async_trait(?Send)]
impl Launch for ContainerLaunch<'_> {
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    async fn provision(
        &mut self,
        recipes: &[kennel_image::Recipe],
        options: &crate::image_build::BuildOptions,
    ) -> Result<(), CliError> {
        crate::image_build::ensure(self.engine, recipes, options)
            .await
            .map(drop)
    }

    async fn run(
        self: Box<Self>,
        plan: &Plan,
        proxy: Option<SessionProxy>,
    ) -> Result<i32, CliError> {
        tracing::info!(name = %plan.name, image = %plan.image.reference, "starting sandbox");
        let result = self.engine.run(plan).await;
        if let Some(proxy) = proxy {
            proxy.stop().await;
        }
        Ok(result?)
    }

    /// A detached container and, for `allowlist` and `restricted`, the
    /// proxy daemon that lives as long as it (see `proxy_daemon`).
    async fn start(
        self: Box<Self>,
        plan: &Plan,
        proxy: Option<ProxySpec>,
        host: &HostContext,
        registry: &mut kennel_sessions::Registry,
        session_id: &str,
    ) -> Result<(), CliError> {
        let engine = self.engine;
        let container = crate::proxy_daemon::start_beside(
            proxy,
            &engine.kind().to_string(),
            &settings::net_log_dir(host),
            async {
                tracing::info!(name = %plan.name, image = %plan.image.reference, "starting detached sandbox");
                Ok(engine.start_detached(plan).await?)
            },
            |container| async move {
                if let Err(error) = engine.remove(&container, true).await {
                    tracing::warn!("cannot remove {container}: {error}");
                }
            },
        )
        .await?;
        Ok(registry.mark_running(session_id, &container)?)
    }
}

impl ContainerBackend {
    /// The engine, or `None` (logged) when it does not answer.
    async fn answering(&self) -> Option<&Engine> {
        match self.engine().await {
            Ok(engine) => Some(engine),
            Err(error) => {
                tracing::debug!(%error, "{} does not answer", self.name());
                None
            }
        }
    }
}

/// The engine's images: kennel's are those labelled managed.
#[async_trait(?Send)]
impl super::Images for Engine {
    async fn ensure(
        &self,
        recipes: &[kennel_image::Recipe],
        options: &crate::image_build::BuildOptions,
    ) -> Result<Vec<crate::image_build::Outcome>, CliError> {
        crate::image_build::ensure(self, recipes, options).await
    }

    async fn list(&self) -> Result<Vec<super::StoredImage>, CliError> {
        let filter = format!("{}=true", kennel_image::LABEL_MANAGED);
        Ok(self
            .list_images(&filter)
            .await?
            .into_iter()
            .map(|image| super::StoredImage {
                // Podman qualifies the tag kennel gave (`kennel/shell:…`)
                // with a registry; users read and type kennel's.
                reference: image
                    .reference
                    .strip_prefix("docker.io/")
                    .or_else(|| image.reference.strip_prefix("localhost/"))
                    .map(str::to_string)
                    .unwrap_or(image.reference.clone()),
                id: image.id,
                size: image.size,
                created: image.created,
                labels: image.labels,
            })
            .collect())
    }

    async fn remove(&self, reference: &str, force: bool) -> Result<(), CliError> {
        Ok(self.remove_image(reference, force).await?)
    }
}

/// A session's tmux server inside its container, reached by `exec`.
struct InContainer<'a> {
    engine: &'a Engine,
    container: String,
}

#[async_trait(?Send)]
impl crate::tmux::TmuxServer for InContainer<'_> {
    async fn tmux(&self, args: &[&str]) -> Result<Vec<u8>, CliError> {
        output(self.engine, &self.container, &session_tmux(args)).await
    }

    async fn tmux_attached(&self, args: &[&str]) -> Result<i32, CliError> {
        let env = [format!("TERM={}", crate::sessions::sandbox_term())];
        Ok(self
            .engine
            .exec(&self.container, &session_tmux(args), &env, true, true)
            .await?)
    }
}

/// Records the engine's view of a persistent session's container:
/// `stopped` when kennel itself stopped it. An ended container whose agent
/// left no exit code was ended by something else (the engine restarted, the
/// OOM killer): stopped too.
async fn record(found: &mut Found, engine: &Engine, state: ContainerState, stopped: bool) {
    let (new_state, code) = match state {
        ContainerState::Running => return,
        ContainerState::Exited(code) if stopped => (State::Stopped, code),
        ContainerState::Exited(code) => {
            let handle = found.session.handle.clone().unwrap_or_default();
            (
                how_it_ended(engine, &handle, &found.session.name).await,
                code,
            )
        }
        ContainerState::Missing => (State::Stopped, None),
    };
    if found.session.state == new_state && found.session.exit_code == code {
        return;
    }
    found.mark(new_state, code);
}

/// How a persistent session's ended container ended: `exited` when the
/// agent ended on its own (the session wrapper recorded its code), `stopped`
/// when something else ended the container (the engine restarted, `docker
/// stop`, the OOM killer). An exit file that cannot be read counts as the
/// agent's own end.
async fn how_it_ended(engine: &Engine, container: &str, name: &str) -> State {
    match engine
        .read_file(container, settings::SESSION_EXIT_FILE)
        .await
    {
        Ok(None) => State::Stopped,
        Ok(Some(_)) => State::Exited,
        Err(error) => {
            tracing::debug!(%error, "cannot read the exit file of {name}");
            State::Exited
        }
    }
}

/// Runs `argv` in the session's sandbox without a terminal; fails with its
/// stderr when it fails. Returns its stdout.
async fn output(engine: &Engine, container: &str, argv: &[String]) -> Result<Vec<u8>, CliError> {
    let (code, stdout, stderr) = engine.exec_output(container, argv).await?;
    if code != 0 {
        return Err(CliError::kennel(format!(
            "`{}` failed in the sandbox (exit code {code}): {}",
            argv.join(" "),
            String::from_utf8_lossy(&stderr).trim()
        )));
    }
    Ok(stdout)
}

/// Polls the container until it is no longer running, or `limit` passes.
async fn wait_exit(
    engine: &Engine,
    container: &str,
    limit: Duration,
) -> Result<ContainerState, CliError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let state = engine.state(container).await?;
        if state != ContainerState::Running || tokio::time::Instant::now() >= deadline {
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
