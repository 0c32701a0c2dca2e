//! `Engine::run`: a Plan becomes an attached container; its exit code comes back.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, ResourcesUlimits};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    ResizeContainerTTYOptionsBuilder,
};
use kennel_core::plan::{NetworkMode, Plan};
use tokio::io::AsyncWriteExt;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::{EngineError, status_of};
use crate::term::{AtEof, RawMode, pump_output, window_size};
use crate::{Engine, EngineKind, raw};

/// How long a signalled container gets before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long we wait for the engine after SIGKILL before giving up on it.
const KILL_GRACE: Duration = Duration::from_secs(10);
/// How long output may still arrive after the container exited.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// The signals kennel forwards to the container.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> Result<Self, EngineError> {
        let install = |kind: SignalKind| {
            signal(kind).map_err(|err| EngineError::io("installing signal handlers", err))
        };
        Ok(Signals {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
            hangup: install(SignalKind::hangup())?,
        })
    }

    /// The next signal number received.
    async fn recv(&mut self) -> i32 {
        tokio::select! {
            _ = self.interrupt.recv() => libc::SIGINT,
            _ = self.terminate.recv() => libc::SIGTERM,
            _ = self.hangup.recv() => libc::SIGHUP,
        }
    }
}

fn signal_name(signo: i32) -> &'static str {
    match signo {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGKILL => "SIGKILL",
        _ => "SIGTERM",
    }
}

fn path_str<'a>(path: &'a std::path::Path, what: &str) -> Result<&'a str, EngineError> {
    path.to_str()
        .ok_or_else(|| EngineError::InvalidPlan(format!("{what} {} is not UTF-8", path.display())))
}

/// Container ulimits for open files and processes: kennel's own limits, never
/// above the engine process's hard limits (runc cannot raise a limit past the
/// hard limit it runs with; rootful Podman would otherwise ask for 1048576).
fn ulimits(engine: &crate::connect::EngineLimits) -> Vec<ResourcesUlimits> {
    use nix::sys::resource::{Resource, getrlimit};
    let mut out = Vec::new();
    for (name, resource, engine_limit) in [
        ("nofile", Resource::RLIMIT_NOFILE, engine.nofile),
        ("nproc", Resource::RLIMIT_NPROC, engine.nproc),
    ] {
        let Ok((own_soft, own_hard)) = getrlimit(resource) else {
            continue;
        };
        let (_, engine_hard) = engine_limit.unwrap_or((u64::MAX, u64::MAX));
        let hard = own_hard.min(engine_hard);
        let soft = own_soft.min(hard);
        // Unlimited (or absurd) values: leave the engine's default alone.
        let (Ok(soft), Ok(hard)) = (i64::try_from(soft), i64::try_from(hard)) else {
            continue;
        };
        out.push(ResourcesUlimits {
            name: Some(name.to_string()),
            soft: Some(soft),
            hard: Some(hard),
        });
    }
    // No core dumps: a crashing agent must not leave its memory (its
    // credentials, the user's code) in a file.
    out.push(ResourcesUlimits {
        name: Some("core".to_string()),
        soft: Some(0),
        hard: Some(0),
    });
    out
}

/// What an engine's message about a failed start means.
pub(crate) fn start_error(
    engine: EngineKind,
    plan: &Plan,
    err: bollard::errors::Error,
) -> EngineError {
    let (status, message) = match &err {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => (Some(*status_code), message.clone()),
        other => (None, other.to_string()),
    };
    classify_start_failure(
        engine,
        plan,
        format!("starting container {}", plan.name),
        status,
        message,
    )
}

/// Recognise "the command does not exist" and "no init binary" in an engine's
/// message (Podman reports them from attach, which initialises the container).
fn classify_start_failure(
    engine: EngineKind,
    plan: &Plan,
    action: String,
    status: Option<u16>,
    message: String,
) -> EngineError {
    let lower = message.to_ascii_lowercase();
    let message = message.trim().to_string();
    let command = plan.command.first().cloned().unwrap_or_default();
    if lower.contains("container-init binary not found")
        || (lower.contains("docker-init") && lower.contains("not found"))
        || lower.contains("catatonit")
    {
        return EngineError::InitMissing {
            kind: engine,
            message,
        };
    }
    if lower.contains("executable file not found")
        || lower.contains("command was not found")
        || (lower.contains("exec") && lower.contains("no such file or directory"))
    {
        return EngineError::CommandNotRunnable {
            command,
            message,
            exit_code: 127,
        };
    }
    if lower.contains("exec") && lower.contains("permission denied") {
        return EngineError::CommandNotRunnable {
            command,
            message,
            exit_code: 126,
        };
    }
    EngineError::Api {
        action,
        status,
        message,
    }
}

impl Engine {
    /// A warning when the engine will silently drop the Plan's memory or CPU
    /// limit: rootless Podman without cgroup v2 (it cannot delegate cgroup
    /// v1 controllers to a user, and says nothing). The pids limit is kept
    /// there by `prlimit` instead (see below).
    pub fn unenforced_limits(&self, plan: &Plan) -> Option<String> {
        let asked = plan.limits.memory.is_some() || plan.limits.cpus.is_some();
        let unified = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        (asked && self.kind == EngineKind::Podman && self.rootless && !unified).then(|| {
            "rootless Podman cannot apply memory or CPU limits on this host (cgroup v1): \
             the memory and cpus limits are not enforced (the pids limit is)"
                .to_string()
        })
    }

    /// The engine's container configuration for `plan`.
    /// Rootless Podman cannot apply a cgroup pids limit on hosts without
    /// cgroup delegation (cgroup v1 or hybrid), and its compat API drops
    /// ulimits; there the process limit and the core limit (0) are set by
    /// `prlimit` (util-linux, in every image kennel builds) before the agent
    /// starts. RLIMIT_NPROC is
    /// counted per user namespace, so it bounds the sandbox's own processes.
    ///
    /// With kennel's proxy (`allowlist`, `restricted`), the command is wrapped
    /// so that a forwarder inside the container relays 127.0.0.1:3128 to the
    /// proxy's socket (see [`kennel_core::settings::container_command`]).
    fn command_with_limits(&self, plan: &Plan) -> Vec<String> {
        let command = kennel_core::settings::container_command(plan);
        if self.kind == EngineKind::Podman && self.rootless && plan.image.managed {
            // Its compat API drops the core limit with the others.
            let mut limited = vec!["prlimit".to_string(), "--core=0".to_string()];
            if plan.limits.pids > 0 {
                limited.push(format!("--nproc={}", plan.limits.pids));
            }
            limited.push("--".to_string());
            limited.extend(command);
            return limited;
        }
        command
    }

    pub(crate) fn container_config(&self, plan: &Plan) -> Result<ContainerCreateBody, EngineError> {
        if plan.command.is_empty() {
            return Err(EngineError::InvalidPlan("the command is empty".to_string()));
        }
        let mut mounts = Vec::with_capacity(plan.mounts.len());
        for mount in &plan.mounts {
            mounts.push(Mount {
                source: Some(path_str(&mount.source, "mount source")?.to_string()),
                target: Some(path_str(&mount.target, "mount target")?.to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(mount.read_only),
                ..Default::default()
            });
        }

        let mut security_opt = Vec::new();
        if plan.security.no_new_privileges {
            security_opt.push("no-new-privileges".to_string());
        }
        if let Some(path) = &plan.security.seccomp_profile {
            security_opt.push(self.seccomp_option(path)?);
        }
        let tmpfs = plan.security.read_only_rootfs.then(|| {
            HashMap::from([("/tmp".to_string(), "rw,nosuid,nodev,mode=1777".to_string())])
        });
        let host_config = HostConfig {
            mounts: Some(mounts),
            cap_drop: Some(plan.security.cap_drop.clone()),
            security_opt: Some(security_opt),
            // The image's own init, when the Plan names one, is the
            // entrypoint instead (below): the engine need not have one.
            init: Some(plan.security.init && plan.security.image_init.is_none()),
            pids_limit: (plan.limits.pids > 0).then_some(plan.limits.pids),
            memory: plan.limits.memory,
            nano_cpus: plan
                .limits
                .cpus
                .filter(|cpus| *cpus > 0.0)
                .map(|cpus| (cpus * 1e9).round() as i64),
            // Only `open` gets the engine's network; `allowlist` and
            // `restricted` reach out through kennel's proxy socket alone.
            network_mode: (plan.network.mode != NetworkMode::Open).then(|| "none".to_string()),
            readonly_rootfs: Some(plan.security.read_only_rootfs),
            tmpfs,
            // Podman's auto-removal can win the race with its own `wait`,
            // which then reports -1 instead of the agent's exit code (seen
            // under load); kennel removes ephemeral containers itself after
            // the wait (`ensure_removed`), and `kennel clean` removes the
            // container of a killed kennel once it has ended.
            auto_remove: Some(plan.ephemeral && self.kind != EngineKind::Podman),
            ulimits: Some(ulimits(&self.engine_limits)),
            // Rootless podman: the user's uid is the same inside, so workspace files stay theirs.
            userns_mode: (self.kind == EngineKind::Podman && self.rootless)
                .then(|| "keep-id".to_string()),
            // The initial tty size (API 1.42+; older engines ignore it and get
            // the resize right after start).
            console_size: if plan.tty {
                window_size().map(|(rows, cols)| vec![usize::from(rows), usize::from(cols)])
            } else {
                None
            },
            ..Default::default()
        };

        Ok(ContainerCreateBody {
            image: Some(plan.image.reference.clone()),
            entrypoint: match (&plan.security.image_init, plan.security.init) {
                (Some(init), true) => Some(vec![
                    path_str(init, "the image's init")?.to_string(),
                    "--".to_string(),
                ]),
                _ => None,
            },
            cmd: Some(self.command_with_limits(plan)),
            user: Some(format!("{}:{}", plan.user.uid, plan.user.gid)),
            working_dir: Some(path_str(&plan.workdir, "working directory")?.to_string()),
            env: Some(
                plan.env
                    .iter()
                    .map(|var| format!("{}={}", var.name, var.value))
                    .collect(),
            ),
            tty: Some(plan.tty),
            open_stdin: Some(plan.stdin),
            stdin_once: Some(plan.stdin),
            attach_stdin: Some(plan.stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            labels: Some(
                plan.labels
                    .iter()
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            ),
            host_config: Some(host_config),
            ..Default::default()
        })
    }

    /// Run `plan` attached to kennel's terminal / stdio; returns the exit code
    /// (or 128 + signal when the container ended because kennel got that signal).
    pub async fn run(&self, plan: &Plan) -> Result<i32, EngineError> {
        let config = self.container_config(plan)?;
        if !self.image_exists(&plan.image.reference).await? {
            return Err(EngineError::ImageNotFound {
                reference: plan.image.reference.clone(),
            });
        }
        let mut signals = Signals::install()?;

        let options = CreateContainerOptionsBuilder::default()
            .name(&plan.name)
            .build();
        let created = self.create(plan, options, config).await?;
        let id = created.id;
        debug!(%id, name = %plan.name, "container created");

        let mut started = false;
        let mut outcome = self
            .attach_start_wait(&id, plan, &mut signals, &mut started)
            .await;
        if let Ok(code) = outcome
            && code < 0
        {
            // The engine's wait could not tell: ask the container itself.
            if let Ok(crate::ContainerState::Exited(Some(exit))) = self.state(&id).await {
                debug!(
                    code,
                    exit, "wait gave no exit code; the container's state did"
                );
                outcome = Ok(exit);
            }
        }

        if plan.ephemeral || !started {
            self.ensure_removed(&id).await;
        }
        outcome
    }

    async fn attach_start_wait(
        &self,
        id: &str,
        plan: &Plan,
        signals: &mut Signals,
        started: &mut bool,
    ) -> Result<i32, EngineError> {
        // Attach and register the wait before starting, so that no output and
        // no exit is missed (and an auto-removed container can still be waited for).
        let attached = raw::attach(&self.socket, &self.api_version, id, plan.stdin)
            .await
            .map_err(|err| match err {
                EngineError::Api {
                    action,
                    status,
                    message,
                } => classify_start_failure(self.kind, plan, action, status, message),
                other => other,
            })?;
        let wait = raw::wait(&self.socket, &self.api_version, id, "next-exit").await?;
        let mut wait_task = tokio::spawn(wait);

        let (reader, writer) = attached.stream.into_split();
        let mut output_task = tokio::spawn(pump_output(reader, attached.leftover, plan.tty));

        let raw_mode = if plan.tty {
            RawMode::enter()
                .map_err(|err| EngineError::io("setting the terminal to raw mode", err))?
        } else {
            None
        };

        if plan.tty {
            // Podman initialises the container on attach, so its tty can take
            // the size before the command runs; Docker refuses until started.
            self.resize(id, false).await;
        }
        if let Err(err) = self.docker.start_container(id, None).await {
            output_task.abort();
            wait_task.abort();
            drop(raw_mode);
            return Err(start_error(self.kind, plan, err));
        }
        *started = true;
        debug!(%id, "container started");

        let mut winch = if plan.tty {
            self.resize(id, true).await;
            match signal(SignalKind::window_change()) {
                Ok(winch) => Some(winch),
                Err(err) => {
                    warn!(%err, "cannot follow window size changes");
                    None
                }
            }
        } else {
            None
        };

        // stdin → container; at EOF, half-close so the container sees EOF too.
        let mut stdin_reader = None;
        let stdin_task = if plan.stdin {
            let (reader, task) = kennel_term::forward_stdin(writer, AtEof::HalfClose)
                .map_err(|err| EngineError::io("reading stdin", err))?;
            stdin_reader = Some(reader);
            Some(task)
        } else {
            // Keep the write half open: dropping it would half-close the stream.
            Some(tokio::spawn(async move {
                let _writer = writer;
                std::future::pending::<()>().await;
            }))
        };

        let mut forwarded: Option<i32> = None;
        let mut killed = false;
        let mut deadline: Option<Instant> = None;
        let result: Result<i64, EngineError> = loop {
            let sleep_until =
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                joined = &mut wait_task => {
                    break match joined {
                        Ok(outcome) => outcome,
                        Err(err) => Err(EngineError::Api {
                            action: format!("waiting for container {}", plan.name),
                            status: None,
                            message: err.to_string(),
                        }),
                    };
                }
                signo = signals.recv() => {
                    info!(signal = signal_name(signo), "forwarding signal to the container");
                    if forwarded.is_none() {
                        forwarded = Some(signo);
                        deadline = Some(Instant::now() + STOP_GRACE);
                    }
                    self.kill(id, signal_name(signo)).await;
                }
                Some(()) = async { match winch.as_mut() { Some(w) => w.recv().await, None => std::future::pending().await } } => {
                    self.resize(id, false).await;
                }
                () = tokio::time::sleep_until(sleep_until), if deadline.is_some() => {
                    if killed {
                        warn!("the container did not stop after SIGKILL; giving up on it");
                        break Ok(137);
                    }
                    warn!("the container is still running {} s after the signal; killing it", STOP_GRACE.as_secs());
                    self.kill(id, "SIGKILL").await;
                    killed = true;
                    deadline = Some(Instant::now() + KILL_GRACE);
                }
            }
        };

        // The container has exited: let the engine finish sending its output.
        match tokio::time::timeout(DRAIN_GRACE, &mut output_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(err))) => debug!(%err, "reading the container's output ended with an error"),
            Ok(Err(err)) => debug!(%err, "output task failed"),
            Err(_) => {
                warn!("the engine kept the output stream open after the container exited");
                output_task.abort();
            }
        }
        if let Some(mut reader) = stdin_reader.take() {
            reader.cancel();
        }
        if let Some(task) = stdin_task {
            task.abort();
        }
        let _ = tokio::io::stdout().flush().await;
        let _ = tokio::io::stderr().flush().await;
        drop(raw_mode);

        let status = result?;
        let code = i32::try_from(status).unwrap_or(255);
        debug!(code, ?forwarded, killed, "container exited");
        if let Some(signo) = forwarded
            && (code == 128 + signo || (killed && code == 128 + libc::SIGKILL))
        {
            return Ok(128 + signo);
        }
        Ok(code)
    }

    /// Creates `plan`'s container. Rootless Podman 4.3 sometimes fails to
    /// read the user's subordinate ids while it creates several `keep-id`
    /// containers at once ("keep-id requires additional UIDs"), although
    /// they are there: that error is retried a few times.
    pub(crate) async fn create(
        &self,
        plan: &Plan,
        options: bollard::query_parameters::CreateContainerOptions,
        config: ContainerCreateBody,
    ) -> Result<bollard::models::ContainerCreateResponse, EngineError> {
        let mut attempt = 0;
        let created = loop {
            match self
                .docker
                .create_container(Some(options.clone()), config.clone())
                .await
            {
                Ok(created) => break created,
                Err(err)
                    if attempt < 4
                        && self.kind == EngineKind::Podman
                        && err.to_string().contains("keep-id requires additional") =>
                {
                    attempt += 1;
                    debug!(%err, attempt, "transient keep-id failure; creating again");
                    tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                }
                Err(err) => return Err(self.create_error(plan, err)),
            }
        };
        for warning in &created.warnings {
            warn!(%warning, "engine warning on create");
        }
        Ok(created)
    }

    /// What a failed create means.
    pub(crate) fn create_error(&self, plan: &Plan, err: bollard::errors::Error) -> EngineError {
        let status = status_of(&err);
        let text = err.to_string().to_ascii_lowercase();
        if status == Some(409) || text.contains("already in use") {
            EngineError::NameConflict {
                name: plan.name.clone(),
            }
        } else if status == Some(404) && text.contains("image") {
            EngineError::ImageNotFound {
                reference: plan.image.reference.clone(),
            }
        } else if text.contains("container-init binary not found") {
            EngineError::InitMissing {
                kind: self.kind,
                message: err.to_string(),
            }
        } else {
            EngineError::api(format!("creating container {}", plan.name), err)
        }
    }

    /// Send `signal` to the container (it may already be gone: that is fine).
    async fn kill(&self, id: &str, signal: &str) {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        if let Err(err) = self.docker.kill_container(id, Some(options)).await {
            debug!(%err, signal, "kill failed (the container may have exited)");
        }
    }

    /// Make the container's tty the size of the host terminal.
    async fn resize(&self, id: &str, retry: bool) {
        let Some((rows, cols)) = window_size() else {
            return;
        };
        let options = ResizeContainerTTYOptionsBuilder::default()
            .h(i32::from(rows))
            .w(i32::from(cols))
            .build();
        resize_with_retries(retry, "tty", || {
            self.docker.resize_container_tty(id, options.clone())
        })
        .await;
    }

    /// Remove the container, waiting for an auto-removal already under way.
    async fn ensure_removed(&self, id: &str) {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            match self
                .docker
                .remove_container(id, Some(options.clone()))
                .await
            {
                Ok(()) => {
                    debug!(%id, "container removed");
                    return;
                }
                Err(err) if status_of(&err) == Some(404) => {
                    debug!(%id, "container is gone");
                    return;
                }
                Err(err) => {
                    // 409: the engine's own auto-removal is in progress.
                    debug!(%err, "removing the container did not succeed yet");
                }
            }
            if Instant::now() >= give_up {
                warn!(%id, "the container could not be removed");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Runs a tty resize, retried (with growing pauses) when `retry` is set: an
/// engine refuses a resize until the container or exec has really started.
pub(crate) async fn resize_with_retries<F, Fut>(retry: bool, what: &str, mut resize: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), bollard::errors::Error>>,
{
    let attempts = if retry { 10 } else { 1 };
    for attempt in 0..attempts {
        match resize().await {
            Ok(()) => {
                debug!(what, "resized");
                return;
            }
            Err(err) => {
                debug!(%err, attempt, what, "resizing failed");
                if attempt + 1 < attempts {
                    tokio::time::sleep(Duration::from_millis(50 * (attempt + 1))).await;
                }
            }
        }
    }
}
