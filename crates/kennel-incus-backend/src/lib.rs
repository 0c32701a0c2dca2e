//! kennel's Incus backend: each sandbox is an unprivileged Incus system
//! container, made from the Plan through Incus's REST API
//! ([`kennel_incus::Client`]).
//!
//! The container runs its own init (it only keeps the container alive and
//! reaps orphans); the agent is a command Incus runs in it (`exec`), as the
//! Plan's user with every capability dropped and no new privileges
//! ([`instance::as_agent`]). `kennel run` makes an ephemeral container,
//! runs the agent attached to the terminal and removes the container when
//! the agent ends. `kennel start` makes a persistent one whose agent lives
//! in tmux, as on the container engines; when the agent ends, the container
//! stops, and keeps the agent's exit code for `kennel ls`.
//!
//! Registered by the binary: `kennel_lib::backend::register(NAME, backend, Selection::Auto)`.

mod attached;
mod build;
mod images;
pub mod instance;
mod open_network;
mod project;
mod seccomp;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kennel_core::host::HostContext;
use kennel_core::plan::{NetworkMode, Plan};
use kennel_core::settings::{self, session_tmux};
use kennel_incus::{Client, ExecRequest, IncusError, StopOptions};
use kennel_lib::backend::{
    Backend, Images, Launch, Observed, OutputSink, OutputStream, Remains, Sandbox, SandboxState,
    Stopped,
};
use kennel_lib::error::CliError;
use kennel_lib::image_build::BuildOptions;
use kennel_lib::proxy::{ProxySpec, SessionProxy};
use kennel_lib::sessions::Found;
use kennel_sessions::{Session, State};
use tokio::sync::OnceCell;

/// The name Plans and the registry store.
pub const NAME: &str = "incus";

/// The backend, for `kennel_lib::backend::register`.
pub fn backend() -> Box<dyn Backend> {
    Box::new(IncusBackend::default())
}

#[derive(Default)]
pub struct IncusBackend {
    /// Connected on first use.
    client: OnceCell<Client>,
    images: OnceCell<images::IncusImages>,
}

/// An Incus failure as the user sees it, with the fix where there is one.
pub(crate) fn incus_error(error: IncusError) -> CliError {
    let hint = match &error {
        IncusError::SocketMissing { .. } | IncusError::NotRunning { .. } => Some(
            "start Incus (incusd, and incus-user for unprivileged users), or install it: on Debian 12 `apt-get install -t bookworm-backports incus`; `kennel doctor` checks it",
        ),
        IncusError::PermissionDenied { .. } => Some(
            "add yourself to the group `incus` (your own restricted project, through incus-user) or `incus-admin`, then log in again",
        ),
        IncusError::Forbidden { .. } => Some(
            "your Incus project forbids this; ask its administrator, or use the admin socket (group incus-admin)",
        ),
        _ => None,
    };
    let mut out = CliError::kennel(error.to_string());
    out.hint = hint.map(str::to_string);
    out
}

impl IncusBackend {
    /// The client, connected on first use.
    pub(crate) async fn client(&self) -> Result<&Client, CliError> {
        self.client
            .get_or_try_init(|| async {
                let client = Client::connect_default().await.map_err(incus_error)?;
                tracing::debug!(socket = %client.socket().display(), project = client.project(), "connected to Incus");
                Ok::<Client, CliError>(client)
            })
            .await
    }

    /// The client, or `None` (logged) when Incus does not answer.
    async fn answering(&self) -> Option<&Client> {
        match self.client().await {
            Ok(client) => Some(client),
            Err(error) => {
                tracing::debug!("Incus does not answer: {}", error.message);
                None
            }
        }
    }

    /// The instance of a persistent session.
    async fn instance<'a>(&'a self, found: &Found) -> Result<(&'a Client, String), CliError> {
        let handle = found.sandbox_handle()?;
        Ok((self.client().await?, handle))
    }

    /// The instance of a persistent session that must be running.
    async fn running<'a>(&'a self, found: &mut Found) -> Result<InInstance<'a>, CliError> {
        let (client, name) = self.instance(found).await?;
        let state = state_of(client, &name).await?;
        if state == SandboxState::Running {
            let plan = found_plan(found)?;
            return Ok(InInstance { client, name, plan });
        }
        kennel_lib::backend::record_sandbox_state(found, state, false);
        Err(found.not_running())
    }
}

/// The Plan a session was recorded with (its user, to run commands as).
fn found_plan(found: &Found) -> Result<Plan, CliError> {
    found
        .session
        .plan
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
        .ok_or_else(|| {
            CliError::kennel(format!(
                "session {} has no readable Plan: kennel cannot tell whom to run commands as",
                found.session.name
            ))
        })
}

/// The instance's state: `Ended` with the agent's code when a persistent
/// session's wrapper recorded one.
async fn state_of(client: &Client, name: &str) -> Result<SandboxState, CliError> {
    // The instance's status, not its `/state`: that one reads the init's
    // pid, and fails while the container is stopping.
    match client.instance(name).await {
        Ok(found) if found.status != "Stopped" => Ok(SandboxState::Running),
        Ok(_) => Ok(SandboxState::Ended(exit_code(client, name).await)),
        Err(error) if error.is_not_found() => Ok(SandboxState::Missing),
        Err(error) => Err(incus_error(error)),
    }
}

/// The agent's exit code, as a persistent session recorded it in its
/// stopped container (`None`: it recorded none).
async fn exit_code(client: &Client, name: &str) -> Option<i32> {
    let file = client
        .pull_file(name, settings::SESSION_EXIT_FILE)
        .await
        .ok()?;
    String::from_utf8_lossy(&file.content).trim().parse().ok()
}

#[async_trait(?Send)]
impl Backend for IncusBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn runs_images(&self) -> bool {
        true
    }

    fn ends_with_owner(&self) -> bool {
        false
    }

    fn persistent(&self, plan: &mut Plan) {
        kennel_lib::backend::persistent_in_sandbox(plan);
    }

    async fn connect(&self) -> Result<String, CliError> {
        let client = self.client().await?;
        if let Ok(project) = client.project_config().await {
            let needed: Vec<std::path::PathBuf> = ["HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"]
                .iter()
                .filter_map(std::env::var_os)
                .map(std::path::PathBuf::from)
                .filter(|path| path.is_absolute())
                .collect();
            if let Some(refused) = project::refused_disk_paths(&project, &needed) {
                return Err(project::refusal(client.project(), &project, &refused));
            }
        }
        let info = client.server_info();
        Ok(format!(
            "Incus {} ({}) at {}, project {}",
            info.server_version,
            info.driver,
            client.socket().display(),
            client.project()
        ))
    }

    async fn images(&self) -> Result<&dyn Images, CliError> {
        let client = self.client().await?;
        Ok(self
            .images
            .get_or_init(|| async { images::IncusImages::new(client) })
            .await)
    }

    async fn sandbox_state(&self, handle: &str) -> Result<SandboxState, CliError> {
        state_of(self.client().await?, handle).await
    }

    async fn prepare<'a>(&'a self, plan: &Plan) -> Result<Box<dyn Launch + 'a>, CliError> {
        let client = self.client().await?;
        let mut warnings = Vec::new();
        if plan.security.read_only_rootfs {
            warnings.push(
                "the Incus backend cannot make the container's root file system read-only; it is writable (and removed with the container)".to_string(),
            );
        }
        Ok(Box::new(IncusLaunch { client, warnings }))
    }

    async fn attach(&self, found: &mut Found) -> Result<i32, CliError> {
        let server = self.running(found).await?;
        kennel_lib::tmux::attach(&server).await
    }

    async fn exec(&self, found: &mut Found, command: Vec<String>) -> Result<i32, CliError> {
        let server = self.running(found).await?;
        let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        let mut request = server.request(&kennel_lib::backend::exec_argv(command));
        if tty {
            request = request.env("TERM", kennel_lib::sessions::sandbox_term());
        }
        attached::exec(server.client, &server.name, request, tty).await
    }

    async fn send(&self, found: &mut Found, text: &str, enter: bool) -> Result<(), CliError> {
        let server = self.running(found).await?;
        kennel_lib::tmux::send(&server, text, enter).await
    }

    async fn capture(
        &self,
        found: &mut Found,
        history: bool,
        escapes: bool,
    ) -> Result<Vec<u8>, CliError> {
        let server = self.running(found).await?;
        kennel_lib::tmux::capture(&server, history, escapes).await
    }

    async fn logs(
        &self,
        found: &mut Found,
        follow: bool,
        sink: &mut OutputSink<'_>,
    ) -> Result<(), CliError> {
        let (client, name) = self.instance(found).await?;
        match state_of(client, &name).await? {
            SandboxState::Running => {
                let plan = found_plan(found)?;
                let mut tail = vec!["tail".to_string(), "-n".into(), "+1".into()];
                if follow {
                    tail.push("-f".into());
                }
                tail.push(settings::SESSION_LOG.into());
                let request = request_for(&plan, &tail);
                client
                    .exec_streamed(&name, &request, None, None, &mut |fd, bytes| {
                        sink(stream_of(fd), bytes)
                    })
                    .await
                    .map_err(incus_error)?;
                Ok(())
            }
            state @ SandboxState::Ended(_) => {
                kennel_lib::backend::record_sandbox_state(found, state, false);
                // What the agent showed stays in the stopped container.
                let log = client
                    .pull_file(&name, settings::SESSION_LOG)
                    .await
                    .map_err(incus_error)?;
                sink(OutputStream::Stdout, &log.content);
                Ok(())
            }
            SandboxState::Missing => {
                kennel_lib::backend::record_sandbox_state(found, SandboxState::Missing, false);
                Err(CliError::kennel(format!(
                    "the container of session {} is gone: there are no logs",
                    found.session.name
                )))
            }
        }
    }

    /// SIGTERM to the agent (its tmux pane's process group); after `grace`
    /// a hang-up; then Incus stops the container.
    async fn stop(&self, found: &mut Found, grace: Duration) -> Result<Stopped, CliError> {
        let (client, name) = self.instance(found).await?;
        let state = state_of(client, &name).await?;
        if state != SandboxState::Running {
            kennel_lib::backend::record_sandbox_state(found, state, true);
            return Ok(Stopped::Already);
        }
        let plan = found_plan(found)?;
        let server = InInstance {
            client,
            name: name.clone(),
            plan,
        };
        let script = kennel_lib::tmux::terminate_agent_script();
        let signalled = client
            .exec(&name, &server.request(&["sh".into(), "-c".into(), script]))
            .await;
        tracing::debug!(?signalled, "SIGTERM to the agent");
        let mut state = wait_stopped(client, &name, grace).await?;
        if state == SandboxState::Running {
            kennel_lib::tmux::hang_up(&server).await;
            state = wait_stopped(client, &name, Duration::from_secs(2)).await?;
        }
        if state == SandboxState::Running {
            stop_now(client, &name).await?;
            state = state_of(client, &name).await?;
        }
        kennel_lib::backend::record_sandbox_state(found, state, true);
        Ok(Stopped::Now)
    }

    async fn kill(&self, found: &mut Found) -> Result<(), CliError> {
        let (client, name) = self.instance(found).await?;
        stop_now(client, &name).await?;
        let state = state_of(client, &name).await?;
        kennel_lib::backend::record_sandbox_state(found, state, true);
        Ok(())
    }

    async fn remove(&self, found: &mut Found, force: bool) -> Result<(), CliError> {
        if let Some(done) = kennel_lib::backend::remove_without_sandbox(found, force) {
            return done;
        }
        let (client, name) = self.instance(found).await?;
        let state = state_of(client, &name).await?;
        if state == SandboxState::Running && !force {
            return Err(found.running_error());
        }
        remove_instance(client, &name).await
    }

    async fn observe(&self, session: &Session) -> Observed {
        let (handle, ephemeral) = match kennel_lib::backend::observe_locally(session) {
            Ok(asked) => asked,
            Err(known) => return known,
        };
        let Some(client) = self.answering().await else {
            return Observed::Unknown;
        };
        match state_of(client, handle).await {
            Ok(SandboxState::Running) if ephemeral => Observed::Orphaned,
            Ok(SandboxState::Running) => Observed::Running,
            Ok(SandboxState::Ended(Some(code))) if !ephemeral => {
                Observed::Ended(State::Exited, Some(code))
            }
            Ok(SandboxState::Ended(_)) | Ok(SandboxState::Missing) => {
                Observed::Ended(State::Stopped, None)
            }
            Err(error) => {
                tracing::debug!("cannot ask Incus about {}: {}", session.name, error.message);
                Observed::Unknown
            }
        }
    }

    async fn remains(&self, session: &Session) -> Remains {
        let (Some(handle), Some(client)) = (&session.handle, self.answering().await) else {
            return Remains::Kept;
        };
        match state_of(client, handle).await {
            Ok(SandboxState::Missing) => Remains::Gone,
            _ => Remains::Kept,
        }
    }

    async fn discard(&self, session: &Session) -> Result<(), CliError> {
        match &session.handle {
            Some(handle) => remove_instance(self.client().await?, handle).await,
            None => Ok(()),
        }
    }

    async fn sandboxes(&self, registry_label: &str) -> Option<Vec<Sandbox>> {
        let client = self.answering().await?;
        let key = instance::label_key(settings::LABEL_REGISTRY);
        match client.instances(&[(key.as_str(), registry_label)]).await {
            Ok(instances) => Some(
                instances
                    .into_iter()
                    .map(|found| Sandbox {
                        session: found
                            .config
                            .get(&instance::label_key(settings::LABEL_SESSION))
                            .cloned(),
                        id: found.name.clone(),
                        name: found.name,
                    })
                    .collect(),
            ),
            Err(error) => {
                tracing::warn!("cannot list Incus's containers: {error}");
                None
            }
        }
    }

    async fn remove_sandbox(&self, id: &str) -> Result<(), CliError> {
        remove_instance(self.client().await?, id).await
    }
}

/// Removes an instance, running or not; one already gone is fine.
async fn remove_instance(client: &Client, name: &str) -> Result<(), CliError> {
    match client.force_delete_instance(name).await {
        Ok(()) => Ok(()),
        Err(error) if error.is_not_found() => Ok(()),
        Err(error) => Err(incus_error(error)),
    }
}

/// Stops an instance at once (its init is killed).
async fn stop_now(client: &Client, name: &str) -> Result<(), CliError> {
    let options = StopOptions {
        force: true,
        timeout: None,
    };
    match client.stop_instance(name, options).await {
        Ok(()) => Ok(()),
        Err(error) if error.is_not_found() => Ok(()),
        Err(error) => match state_of(client, name).await? {
            SandboxState::Running => Err(incus_error(error)),
            _ => Ok(()),
        },
    }
}

/// Waits up to `limit` for the instance to stop on its own.
async fn wait_stopped(
    client: &Client,
    name: &str,
    limit: Duration,
) -> Result<SandboxState, CliError> {
    let deadline = Instant::now() + limit;
    loop {
        let state = state_of(client, name).await?;
        if state != SandboxState::Running || Instant::now() >= deadline {
            return Ok(state);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stream_of(fd: u8) -> OutputStream {
    match fd {
        2 => OutputStream::Stderr,
        _ => OutputStream::Stdout,
    }
}

/// `command` as the Plan's user, with its environment and working directory.
pub(crate) fn request_for(plan: &Plan, command: &[String]) -> ExecRequest {
    request_with_env(plan, command, &Default::default())
}

fn request_with_env(
    plan: &Plan,
    command: &[String],
    image_env: &std::collections::BTreeMap<String, String>,
) -> ExecRequest {
    let mut request =
        ExecRequest::new(instance::as_agent(plan, command)).cwd(plan.workdir.display().to_string());
    request.environment = instance::environment(plan, image_env);
    request
}

/// A persistent session's tmux server, reached by `exec` as its user.
pub(crate) struct InInstance<'a> {
    client: &'a Client,
    name: String,
    plan: Plan,
}

impl InInstance<'_> {
    fn request(&self, command: &[String]) -> ExecRequest {
        request_for(&self.plan, command)
    }
}

#[async_trait(?Send)]
impl kennel_lib::tmux::TmuxServer for InInstance<'_> {
    async fn tmux(&self, args: &[&str]) -> Result<Vec<u8>, CliError> {
        let output = self
            .client
            .exec(&self.name, &self.request(&session_tmux(args)))
            .await
            .map_err(incus_error)?;
        kennel_lib::tmux::tmux_output(
            args,
            &self.name,
            output.exit_code,
            output.stdout,
            &output.stderr,
        )
    }

    async fn tmux_attached(&self, args: &[&str]) -> Result<i32, CliError> {
        let request = self
            .request(&session_tmux(args))
            .env("TERM", kennel_lib::sessions::sandbox_term());
        attached::exec(self.client, &self.name, request, true).await
    }
}

/// A Plan about to run as an Incus container.
struct IncusLaunch<'a> {
    client: &'a Client,
    warnings: Vec<String>,
}

impl IncusLaunch<'_> {
    /// A persistent session's container, with its agent started in tmux
    /// by a wrapper that runs as the container's root, so that it can stop
    /// the container when the agent has ended (the agent cannot); its name.
    async fn start_agent(&self, plan: &Plan) -> Result<String, CliError> {
        let name = self.create(plan).await?;
        let image_env = images::image_env(self.client, &plan.image.reference).await;
        let command = settings::container_command(plan);
        let mut wrapper: Vec<String> =
            ["/bin/sh", "-c", "\"$@\"; kill -s TERM 1", "kennel-session"]
                .map(String::from)
                .to_vec();
        wrapper.extend(instance::as_agent(plan, &command));
        let mut request = ExecRequest::new(wrapper).cwd(plan.workdir.display().to_string());
        request.environment = instance::environment(plan, &image_env);
        if let Err(error) = self.client.exec_detached(&name, &request).await {
            let _ = remove_instance(self.client, &name).await;
            return Err(incus_error(error));
        }
        Ok(name)
    }

    /// Creates and starts the Plan's instance; its name.
    async fn create(&self, plan: &Plan) -> Result<String, CliError> {
        let name = instance::instance_name(&plan.name);
        let source = instance::image_source(&plan.image.reference);
        let mut new = instance::new_instance(plan, &name, source).start(true);
        // kennel's seccomp refusals (`raw.seccomp`), where the project
        // allows low-level keys: a restricted project (incus-user's) does
        // not, and its sandboxes keep Incus's default policy.
        if self.client.server_info().restricted {
            kennel_lib::report::warn(
                "your Incus project is restricted (no raw.seccomp): the sandbox keeps Incus's \
                 default seccomp policy, which lets TIOCSTI push input into the sandbox's own \
                 terminal (`kennel verify -b incus` shows what it lets through)",
            );
        } else {
            new = new.config("raw.seccomp", seccomp::policy());
        }
        let open = match plan.network.mode {
            NetworkMode::Open => Some(self.open_nic().await?),
            _ => None,
        };
        let mut attempt = 0;
        let address = loop {
            let (new, address) = match &open {
                Some(nic) => {
                    let address = nic.candidate(open_network::OpenNic::seed(&name, attempt));
                    (
                        new.clone()
                            .device(nic.device.clone(), nic.device_keys(address)),
                        Some(address),
                    )
                }
                None => (new.clone(), None),
            };
            match self.client.create_instance(&new).await {
                Err(error)
                    if attempt < 16 && open_network::is_address_taken(&error.to_string()) =>
                {
                    attempt += 1;
                }
                Err(error) => return Err(self.create_error(plan, error)),
                Ok(()) => break address,
            }
        };
        if let (Some(nic), Some(address)) = (&open, address) {
            let request = ExecRequest::new(nic.setup_command(address));
            let configured = self.client.exec(&name, &request).await;
            let failure = match configured {
                Ok(output) if output.exit_code == 0 => None,
                Ok(output) => Some(format!(
                    "exit {}: {}",
                    output.exit_code,
                    String::from_utf8_lossy(&output.stderr).trim()
                )),
                Err(error) => Some(error.to_string()),
            };
            if let Some(failure) = failure {
                let _ = remove_instance(self.client, &name).await;
                return Err(CliError::kennel(format!(
                    "cannot bring up the network of container {name} ({}): {failure}",
                    nic.interface
                ))
                .with_hint("the image needs `ip` (iproute2), which kennel's images have"));
            }
        }
        if let Err(error) = check_no_network(self.client, &name, plan).await {
            let _ = remove_instance(self.client, &name).await;
            return Err(error);
        }
        Ok(name)
    }

    /// The profile's NIC and its network, for an `open` session.
    async fn open_nic(&self) -> Result<open_network::OpenNic, CliError> {
        let profile = self.client.profile("default").await.map_err(incus_error)?;
        let (device, keys) = open_network::profile_nic(&profile)?;
        let network = self
            .client
            .network(keys.get("network").map(String::as_str).unwrap_or_default())
            .await
            .map_err(incus_error)?;
        open_network::nic_on(device, keys, &network)
    }

    /// A refused create as the user sees it.
    fn create_error(&self, plan: &Plan, error: IncusError) -> CliError {
        match error {
            IncusError::NotFound { .. } => CliError::kennel(format!(
                "Incus has no image {}: {error}",
                plan.image.reference
            ))
            .with_hint("`kennel image build --backend incus AGENT` builds kennel's images; for --image, name an image alias of your Incus project"),
            IncusError::Forbidden { ref message, .. } if message.contains("Disk source path") => {
                let uid = plan.user.uid;
                CliError::kennel(error.to_string()).with_hint(format!(
                    "your Incus project mounts host paths only under its restricted.devices.disk.paths (incus-user's projects: your home); kennel also mounts its data directory and, for the proxy, your runtime directory. An administrator can allow them: `incus project set user-{uid} restricted.devices.disk.paths=$HOME,/run/user/{uid}` (and the workspace's directory if it is not under your home)"
                ))
            }
            other => incus_error(other),
        }
    }
}

/// Fails closed when a profile gave the instance a network device the
/// Plan does not allow (only `open` may reach the network directly).
async fn check_no_network(client: &Client, name: &str, plan: &Plan) -> Result<(), CliError> {
    if plan.network.mode == NetworkMode::Open {
        return Ok(());
    }
    let found = client.instance(name).await.map_err(incus_error)?;
    let nics: Vec<&String> = found
        .expanded_devices
        .iter()
        .filter(|(_, keys)| keys.get("type").is_some_and(|kind| kind == "nic"))
        .map(|(device, _)| device)
        .collect();
    if nics.is_empty() {
        return Ok(());
    }
    Err(CliError::kennel(format!(
        "the Incus profile gives container {name} network devices ({}): kennel's {} network allows none",
        nics.iter().map(|nic| nic.as_str()).collect::<Vec<_>>().join(", "),
        plan.network.mode.as_str()
    ))
    .with_hint("remove the NIC from your Incus project's default profile, or name it eth0 (kennel masks eth0)"))
}

#[async_trait(?Send)]
impl Launch for IncusLaunch<'_> {
    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }

    async fn provision(
        &mut self,
        recipes: &[kennel_image::Recipe],
        options: &BuildOptions,
    ) -> Result<(), CliError> {
        images::IncusImages::new(self.client)
            .ensure(recipes, options)
            .await
            .map(drop)
    }

    async fn run(
        self: Box<Self>,
        plan: &Plan,
        proxy: Option<SessionProxy>,
    ) -> Result<i32, CliError> {
        tracing::info!(name = %plan.name, image = %plan.image.reference, "starting sandbox");
        let result = async {
            let name = self.create(plan).await?;
            let image_env = images::image_env(self.client, &plan.image.reference).await;
            let command = settings::container_command(plan);
            let request = request_with_env(plan, &command, &image_env);
            let code = attached::run(self.client, &name, request, plan).await;
            // An ephemeral container goes away once stopped, which takes
            // Incus the better part of a second: the agent's exit code does
            // not wait for it (`kennel clean` removes one Incus failed to).
            let stopped = match plan.ephemeral {
                true => self
                    .client
                    .kill_instance_in_background(&name)
                    .await
                    .map_err(incus_error),
                false => stop_now(self.client, &name).await,
            };
            if let Err(error) = stopped {
                tracing::warn!("cannot stop container {name}: {}", error.message);
            }
            code
        }
        .await;
        if let Some(proxy) = proxy {
            proxy.stop().await;
        }
        result
    }

    /// A persistent container whose agent lives in tmux, and for
    /// `allowlist` and `restricted` the proxy daemon that lives as long
    /// as the container. When the agent ends, the session's wrapper stops
    /// the container (its init ends on SIGTERM).
    async fn start(
        self: Box<Self>,
        plan: &Plan,
        proxy: Option<ProxySpec>,
        host: &HostContext,
        registry: &mut kennel_sessions::Registry,
        session_id: &str,
    ) -> Result<(), CliError> {
        let client = self.client;
        let name = kennel_lib::proxy_daemon::start_beside(
            proxy,
            NAME,
            &settings::net_log_dir(host),
            self.start_agent(plan),
            |name| async move {
                let _ = remove_instance(client, &name).await;
            },
        )
        .await?;
        Ok(registry.mark_running(session_id, &name)?)
    }
}
