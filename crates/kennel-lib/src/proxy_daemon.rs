//! The egress proxy of a detached session (`kennel start`): a daemon of its
//! own, `kennel __proxy-daemon <session>`, that lives as long as the
//! session's container.
//!
//! The handshake, over the daemon's stdin and stdout (one line each):
//!
//! 1. kennel writes a [`Request`] as one JSON line (the [`ProxySpec`] and the
//!    engine's name, `docker` or `podman`).
//! 2. The daemon leaves kennel's session (`setsid`: no signal from the
//!    user's terminal reaches it), starts the proxy exactly as `kennel run`
//!    does ([`SessionProxy::launch`]) and answers `ready`, or
//!    `error {"message":…,"hint":…}` and exits.
//! 3. kennel starts the container and writes its id; an empty line or EOF
//!    (the container did not start, or kennel died) makes the daemon stop
//!    its proxy and remove the socket directory.
//!
//! The daemon then asks the engine about the container every
//! [`POLL_INTERVAL`]; once the container has ended or is gone (or the engine
//! has not answered for [`UNREACHABLE_LIMIT`], or the daemon gets SIGTERM,
//! SIGINT or SIGHUP), it stops the proxy, removes the socket directory and
//! exits. After the handshake it never writes to its stdout again (both
//! stdin and stdout are pointed at `/dev/null`); it logs to its stderr, the
//! file `<data dir>/logs/<session>.proxy.log`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::backend::SandboxState;
use serde::{Deserialize, Serialize};
use tokio::signal::unix::{SignalKind, signal};

use crate::error::CliError;
use crate::proxy::{ProxySpec, SessionProxy};

/// The hidden first argument that runs the daemon (the session's name follows,
/// so that `ps` shows whose proxy it is).
pub const ARG: &str = "__proxy-daemon";

/// How often the daemon asks the engine whether the container still runs.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The daemon gives up when the engine has not answered for this long.
pub const UNREACHABLE_LIMIT: Duration = Duration::from_secs(60);
/// How long kennel waits for the daemon's `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon waits for the container id.
const CONTAINER_TIMEOUT: Duration = Duration::from_secs(600);
/// One engine request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What kennel sends the daemon.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub spec: ProxySpec,
    /// `docker` or `podman`.
    pub backend: String,
}

/// The daemon's failure, as sent back to kennel.
#[derive(Debug, Serialize, Deserialize)]
struct Failure {
    message: String,
    hint: Option<String>,
}

/// The log file of session `name`'s daemon in the logs directory `logs`.
pub fn log_path(logs: &Path, name: &str) -> PathBuf {
    logs.join(format!("{name}.proxy.log"))
}

// ------------------------------------------------------------- kennel's side

/// A started daemon whose proxy listens, waiting for its container.
pub struct ProxyDaemon {
    child: Child,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

/// Starts a persistent session's sandbox (`start` gives its handle) and,
/// for `allowlist` and `restricted` (`proxy`), the proxy daemon that lives
/// as long as it, for the backend `backend`. The daemon comes first (the
/// sandbox needs its socket); when the sandbox does not start, the daemon
/// is stopped; when the daemon cannot watch the sandbox, the sandbox is
/// removed (`remove`): with no proxy it has no way out, and a session that
/// cannot work is not left behind.
pub async fn start_beside<S, R>(
    proxy: Option<ProxySpec>,
    backend: &str,
    logs: &Path,
    start: S,
    remove: impl FnOnce(String) -> R,
) -> Result<String, CliError>
where
    S: std::future::Future<Output = Result<String, CliError>>,
    R: std::future::Future<Output = ()>,
{
    let daemon = match proxy {
        Some(spec) => Some(ProxyDaemon::spawn(spec, backend, logs).await?),
        None => None,
    };
    let handle = match start.await {
        Ok(handle) => handle,
        Err(error) => {
            if let Some(daemon) = daemon {
                daemon.abort().await;
            }
            return Err(error);
        }
    };
    if let Some(daemon) = daemon
        && let Err(error) = daemon.watch(&handle)
    {
        remove(handle).await;
        return Err(error);
    }
    Ok(handle)
}

impl ProxyDaemon {
    /// Starts the daemon for `spec` (its log in the directory `logs`) and
    /// waits until its proxy listens.
    pub async fn spawn(
        spec: ProxySpec,
        backend: &str,
        logs: &Path,
    ) -> Result<ProxyDaemon, CliError> {
        let log = log_path(logs, &spec.session);
        let fail = |what: &str, error: std::io::Error| {
            CliError::kennel(format!(
                "cannot start the egress proxy daemon: {what}: {error}"
            ))
        };
        std::fs::create_dir_all(logs).map_err(|error| fail(&logs.display().to_string(), error))?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log)
            .map_err(|error| fail(&log.display().to_string(), error))?;
        let exe = std::env::current_exe().map_err(|error| fail("kennel's own path", error))?;
        let mut child = Command::new(exe)
            .arg(ARG)
            .arg(&spec.session)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .current_dir("/")
            .spawn()
            .map_err(|error| fail("spawn", error))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let mut daemon = ProxyDaemon { child, stdin, log };
        tracing::info!(pid = daemon.child.id(), log = %daemon.log.display(), "egress proxy daemon spawned");
        let request = Request {
            spec,
            backend: backend.to_string(),
        };
        let line = serde_json::to_string(&request).map_err(|error| {
            CliError::kennel(format!("cannot serialise the proxy request: {error}"))
        })?;
        if let Some(stdin) = daemon.stdin.as_mut() {
            // One short line: fits the pipe's buffer, never blocks for long.
            if let Err(error) = writeln!(stdin, "{line}").and_then(|()| stdin.flush()) {
                return Err(daemon
                    .failed(format!("the daemon did not take its request ({error})"))
                    .await);
            }
        }
        let reply = async {
            let stdout = stdout?;
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout)
                    .read_line(&mut line)
                    .ok()
                    .map(|_| line)
            })
            .await
            .ok()
            .flatten()
        };
        let reply = match tokio::time::timeout(READY_TIMEOUT, reply).await {
            Ok(reply) => reply.unwrap_or_default(),
            Err(_) => {
                return Err(daemon
                    .failed(format!(
                        "the daemon was not ready after {}s",
                        READY_TIMEOUT.as_secs()
                    ))
                    .await);
            }
        };
        let reply = reply.trim_end();
        if reply == "ready" {
            return Ok(daemon);
        }
        if let Some(failure) = reply
            .strip_prefix("error ")
            .and_then(|json| serde_json::from_str::<Failure>(json).ok())
        {
            daemon.finish(Duration::from_secs(5)).await;
            let error = CliError::kennel(failure.message);
            return Err(match failure.hint {
                Some(hint) => error.with_hint(hint),
                None => error.with_hint(format!("see {}", daemon.log.display())),
            });
        }
        Err(daemon
            .failed("the daemon exited before its proxy was ready".into())
            .await)
    }

    /// Hands the started container over: the daemon serves the proxy until
    /// the container ends. An error means the daemon is gone (the container
    /// has no way out).
    pub fn watch(mut self, container: &str) -> Result<(), CliError> {
        let written = match self.stdin.take() {
            Some(mut stdin) => writeln!(stdin, "{container}").and_then(|()| stdin.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        written.map_err(|error| {
            CliError::kennel(format!("the egress proxy daemon is gone ({error})"))
                .with_hint(format!("see {}", self.log.display()))
        })
    }

    /// The container did not start: the daemon stops its proxy and removes
    /// its directory; waits a little for that.
    pub async fn abort(mut self) {
        self.finish(Duration::from_secs(5)).await;
    }

    /// Closes the daemon's stdin (it shuts down) and waits up to `limit`.
    async fn finish(&mut self, limit: Duration) {
        self.stdin.take();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::warn!(
            pid = self.child.id(),
            "the proxy daemon did not exit; killing it"
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills a daemon that misbehaved; the error to report.
    async fn failed(&mut self, what: String) -> CliError {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
        CliError::kennel(format!("cannot start the egress proxy: {what}"))
            .with_hint(format!("see {}", self.log.display()))
    }
}

impl Drop for ProxyDaemon {
    /// Without [`ProxyDaemon::watch`], the daemon sees EOF and shuts down.
    fn drop(&mut self) {
        self.stdin.take();
    }
}

// ------------------------------------------------------------- the daemon

/// `kennel __proxy-daemon <session>`: runs the daemon, then exits.
pub fn main() -> ! {
    // A session of its own: Ctrl-C, a closed terminal or job control in the
    // user's terminal never reach it.
    let _ = nix::unistd::setsid();
    close_inherited_fds();
    init_logging();
    let code = match read_request() {
        Ok(request) => match crate::runtime() {
            // The runtime is not dropped: `exit` does not wait for a blocking
            // read that may still hang on stdin.
            Ok(runtime) => runtime.block_on(serve(request)),
            Err(error) => {
                reply_error(&error);
                1
            }
        },
        Err(error) => {
            reply_error(&error);
            1
        }
    };
    std::process::exit(code);
}

/// Descriptors kennel's own caller left open (not close-on-exec) would stay
/// open as long as the session: a pipe a script waits on, for one. The
/// daemon needs only its stdin, stdout and stderr.
fn close_inherited_fds() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    // The directory's own descriptor is closed by now (EBADF below is fine);
    // nothing else runs yet that could reuse a number.
    for fd in fds {
        // nix has no safe close of a bare descriptor number (IO safety forbids it).
        // SAFETY: no Rust object owns these descriptors in this fresh process.
        #[allow(unsafe_code)]
        unsafe {
            libc::close(fd);
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KENNEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}

fn read_request() -> Result<Request, CliError> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|error| CliError::kennel(format!("cannot read the request: {error}")))?;
    serde_json::from_str(&line)
        .map_err(|error| CliError::kennel(format!("bad request from kennel: {error}")))
}

/// The handshake's answer; nothing is written to stdout after it.
fn reply(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

fn reply_error(error: &CliError) {
    tracing::error!("{}", error.message);
    let failure = Failure {
        message: error.message.clone(),
        hint: error.hint.clone(),
    };
    let json = serde_json::to_string(&failure).unwrap_or_else(|_| "{}".into());
    reply(&format!("error {json}"));
}

/// Points stdin and stdout at /dev/null: kennel is gone or going, and
/// nothing may ever reach the user's terminal from here.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

async fn serve(request: Request) -> i32 {
    let Request { spec, backend } = request;
    let mut signals = Signals::install();
    tracing::info!(session = %spec.session, backend = %backend, mode = spec.mode.as_str(), pid = std::process::id(), "proxy daemon starting");
    let proxy = match SessionProxy::launch(&spec).await {
        Ok(proxy) => proxy,
        Err(error) => {
            reply_error(&error);
            return 1;
        }
    };
    reply("ready");

    let container = tokio::time::timeout(
        CONTAINER_TIMEOUT,
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).ok().map(|_| line)
        }),
    )
    .await;
    detach_stdio();
    let container = match container {
        Ok(Ok(Some(line))) => line.trim().to_string(),
        Ok(_) => String::new(),
        Err(_) => {
            tracing::warn!(
                "no container after {}s; stopping",
                CONTAINER_TIMEOUT.as_secs()
            );
            String::new()
        }
    };
    if container.is_empty() {
        tracing::info!("the container did not start; stopping the proxy");
        proxy.stop().await;
        return 0;
    }
    tracing::info!(%container, "serving the container");
    let backend = match crate::backend::by_name(&backend) {
        Ok(backend) => backend,
        Err(error) => {
            tracing::warn!("{}", error.message);
            proxy.stop().await;
            return 1;
        }
    };
    // A sandbox on another machine reaches the proxy through what the
    // backend keeps open meanwhile.
    let _connection = match backend.keep_connected(&container, &spec.socket).await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::warn!("cannot connect the sandbox to its proxy: {}", error.message);
            None
        }
    };
    watch(backend.as_ref(), &container, &mut signals).await;
    proxy.stop().await;
    tracing::info!("proxy stopped, socket directory removed");
    0
}

/// SIGTERM, SIGINT and SIGHUP: the daemon stops its proxy and cleans up
/// instead of dying with the socket directory left behind.
struct Signals(Vec<tokio::signal::unix::Signal>);

impl Signals {
    fn install() -> Signals {
        let mut streams = Vec::new();
        for kind in [
            SignalKind::terminate(),
            SignalKind::interrupt(),
            SignalKind::hangup(),
        ] {
            match signal(kind) {
                Ok(stream) => streams.push(stream),
                Err(error) => tracing::warn!(%error, "cannot handle a signal"),
            }
        }
        Signals(streams)
    }

    /// Resolves when one of the signals comes.
    async fn recv(&mut self) {
        std::future::poll_fn(|cx| {
            for stream in &mut self.0 {
                if stream.poll_recv(cx).is_ready() {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Returns once the sandbox has ended or is gone, its backend has not
/// answered for [`UNREACHABLE_LIMIT`], or a termination signal came.
async fn watch(backend: &dyn crate::backend::Backend, container: &str, signals: &mut Signals) {
    let mut answered = Instant::now();
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = signals.recv() => {
                tracing::info!("signalled; stopping");
                return;
            }
            _ = tick.tick() => {}
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, backend.sandbox_state(container)).await {
            Ok(Ok(SandboxState::Running)) => answered = Instant::now(),
            Ok(Ok(SandboxState::Ended(code))) => {
                tracing::info!(?code, "the sandbox has ended");
                return;
            }
            Ok(Ok(SandboxState::Missing)) => {
                tracing::info!("the sandbox is gone");
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(
                    "cannot ask {} about the sandbox: {}",
                    backend.name(),
                    error.message
                )
            }
            Err(_) => tracing::warn!("{} did not answer about the sandbox", backend.name()),
        }
        if answered.elapsed() >= UNREACHABLE_LIMIT {
            tracing::warn!(
                "{} has not answered for {}s; stopping",
                backend.name(),
                UNREACHABLE_LIMIT.as_secs()
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kennel_core::plan::NetworkMode;

    #[test]
    fn request_round_trips_as_one_line() {
        let request = Request {
            spec: ProxySpec {
                session: "kennel-shell-ws-1234".into(),
                mode: NetworkMode::Allowlist,
                allow: vec!["api.example.com".into()],
                deny: vec!["evil.example.com".into()],
                hosts: [("a.test".to_string(), vec!["198.18.0.2".parse().unwrap()])].into(),
                upstream: Some("http://user:secret@proxy:3128".into()),
                trusted: vec![("2001:2::".parse().unwrap(), 64)],
                socket: "/run/user/1000/kennel/proxy/x/proxy.sock".into(),
                log: "/home/u/.local/share/kennel/logs/x.net.jsonl".into(),
                broker: Some(crate::broker::BrokerSpec {
                    credentials: Vec::new(),
                    ca_cert: "CERT\nWITH LINES\n".into(),
                    ca_key: "KEY\n".into(),
                    extra_ca: b"PEM\n".to_vec(),
                    logins: Vec::new(),
                    data_dir: None,
                }),
            },
            backend: "podman".into(),
        };
        let line = serde_json::to_string(&request).unwrap();
        assert!(!line.contains('\n'));
        let back: Request = serde_json::from_str(&line).unwrap();
        assert_eq!(back.backend, "podman");
        assert_eq!(back.spec.mode, NetworkMode::Allowlist);
        assert_eq!(back.spec.hosts, request.spec.hosts);
        assert_eq!(back.spec.trusted, request.spec.trusted);
        assert_eq!(back.spec.upstream, request.spec.upstream);
        assert_eq!(back.spec.socket, request.spec.socket);
    }

    #[test]
    fn log_beside_the_decisions() {
        assert_eq!(
            log_path(Path::new("/d/logs"), "kennel-shell-ws-1"),
            Path::new("/d/logs/kennel-shell-ws-1.proxy.log")
        );
    }
}
