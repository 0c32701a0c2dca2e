//! Finding an engine's socket, starting Podman's API service when needed,
//! connecting, and the probes shown by `kennel doctor`.

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use tracing::{debug, info};

use crate::error::EngineError;

/// Which engine family a socket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineKind {
    Docker,
    Podman,
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
        })
    }
}

/// A connected Docker or Podman engine.
pub struct Engine {
    pub(crate) kind: EngineKind,
    pub(crate) rootless: bool,
    pub(crate) socket: PathBuf,
    pub(crate) version: String,
    pub(crate) docker: Docker,
    /// The negotiated API version, e.g. `1.41` (used for raw requests).
    pub(crate) api_version: String,
    /// Resource limits of the engine's own process (read through the socket's
    /// peer credentials), which containers must not exceed.
    pub(crate) engine_limits: EngineLimits,
}

/// `(soft, hard)` limits of the engine process, when they could be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EngineLimits {
    pub nofile: Option<(u64, u64)>,
    pub nproc: Option<(u64, u64)>,
}

/// Parse `/proc/PID/limits` for open files and processes.
fn parse_limits(text: &str) -> EngineLimits {
    let value = |field: &str| -> Option<u64> {
        if field == "unlimited" {
            Some(u64::MAX)
        } else {
            field.parse().ok()
        }
    };
    let find = |label: &str| -> Option<(u64, u64)> {
        let line = text.lines().find(|line| line.starts_with(label))?;
        let mut fields = line[label.len()..].split_whitespace();
        Some((value(fields.next()?)?, value(fields.next()?)?))
    };
    EngineLimits {
        nofile: find("Max open files"),
        nproc: find("Max processes"),
    }
}

/// The limits of the process serving the engine socket (found through the
/// socket's peer credentials).
fn engine_limits_of(pid: i32) -> EngineLimits {
    match std::fs::read_to_string(format!("/proc/{pid}/limits")) {
        Ok(text) => {
            let limits = parse_limits(&text);
            debug!(pid, ?limits, "engine process limits");
            limits
        }
        Err(err) => {
            debug!(pid, %err, "cannot read the engine's limits");
            EngineLimits::default()
        }
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("kind", &self.kind)
            .field("rootless", &self.rootless)
            .field("socket", &self.socket)
            .field("version", &self.version)
            .field("api_version", &self.api_version)
            .finish()
    }
}

impl Engine {
    pub fn kind(&self) -> EngineKind {
        self.kind
    }

    /// True for rootless Podman; false for Docker and rootful Podman.
    pub fn rootless(&self) -> bool {
        self.rootless
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The engine's own version string (e.g. `20.10.24+dfsg1`, `4.3.1`).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The negotiated Engine API version (e.g. `1.41`).
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// `docker`, `podman` or `podman-rootless`.
    pub fn label(&self) -> &'static str {
        match (self.kind, self.rootless) {
            (EngineKind::Docker, _) => "docker",
            (EngineKind::Podman, false) => "podman",
            (EngineKind::Podman, true) => "podman-rootless",
        }
    }
}

/// What `kennel doctor` shows about one engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `docker`, `podman` or `podman-rootless`.
    pub name: String,
    pub available: bool,
    pub socket: Option<PathBuf>,
    pub version: Option<String>,
    /// Why it is (not) available, in one sentence.
    pub reason: String,
    /// What to do to make it available.
    pub fix: Option<String>,
}

/// Where to find an engine, and how it was decided.
#[derive(Debug, Clone)]
struct Target {
    kind: EngineKind,
    socket: PathBuf,
    /// The socket came from `DOCKER_HOST` / `CONTAINER_HOST`: never start a service for it.
    from_env: bool,
    /// The socket is a rootless Podman socket (we may start the service as this user).
    rootless: bool,
}

const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
const ROOTFUL_PODMAN_SOCKET: &str = "/run/podman/podman.sock";
const SERVICE_WAIT: Duration = Duration::from_secs(10);

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

fn unix_path(variable: &'static str, value: &str) -> Result<PathBuf, EngineError> {
    match value.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
        Some(_) => Err(EngineError::UnsupportedHost {
            variable,
            value: value.to_string(),
            reason: "the socket path must be absolute".to_string(),
        }),
        None => Err(EngineError::UnsupportedHost {
            variable,
            value: value.to_string(),
            reason: "only unix:// addresses are supported".to_string(),
        }),
    }
}

fn docker_target() -> Result<Target, EngineError> {
    let (socket, from_env) = match env_nonempty("DOCKER_HOST") {
        Some(host) => (unix_path("DOCKER_HOST", &host)?, true),
        None => (PathBuf::from(DEFAULT_DOCKER_SOCKET), false),
    };
    Ok(Target {
        kind: EngineKind::Docker,
        socket,
        from_env,
        rootless: false,
    })
}

async fn podman_target() -> Result<Target, EngineError> {
    if let Some(host) = env_nonempty("CONTAINER_HOST") {
        return Ok(Target {
            kind: EngineKind::Podman,
            socket: unix_path("CONTAINER_HOST", &host)?,
            from_env: true,
            rootless: !nix::unistd::geteuid().is_root(),
        });
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(rootful_podman_target());
    }
    Ok(Target {
        kind: EngineKind::Podman,
        socket: rootless_podman_socket().await?,
        from_env: false,
        rootless: true,
    })
}

fn rootful_podman_target() -> Target {
    Target {
        kind: EngineKind::Podman,
        socket: PathBuf::from(ROOTFUL_PODMAN_SOCKET),
        from_env: false,
        rootless: false,
    }
}

/// `$XDG_RUNTIME_DIR/podman/podman.sock`, or what `podman info` says.
async fn rootless_podman_socket() -> Result<PathBuf, EngineError> {
    if let Some(dir) = env_nonempty("XDG_RUNTIME_DIR") {
        return Ok(Path::new(&dir).join("podman/podman.sock"));
    }
    let unreachable = |reason: String| EngineError::Unreachable {
        kind: EngineKind::Podman,
        socket: PathBuf::from("$XDG_RUNTIME_DIR/podman/podman.sock"),
        reason,
        fix: Some(
            "log in through a session that sets XDG_RUNTIME_DIR (e.g. `machinectl shell`), \
             or set CONTAINER_HOST=unix:///path/to/podman.sock"
                .to_string(),
        ),
    };
    let Some(podman) = find_in_path("podman") else {
        return Err(unreachable(
            "XDG_RUNTIME_DIR is not set and podman is not installed".into(),
        ));
    };
    let output = tokio::process::Command::new(podman)
        .args(["info", "--format", "{{.Host.RemoteSocket.Path}}"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|err| unreachable(format!("running `podman info` failed: {err}")))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let path = text.strip_prefix("unix://").unwrap_or(&text).to_string();
    if !output.status.success() || !path.starts_with('/') {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(unreachable(format!(
            "XDG_RUNTIME_DIR is not set and `podman info` did not name a socket ({stderr})"
        )));
    }
    Ok(PathBuf::from(path))
}

/// Look for an executable named `name` on `PATH`.
pub(crate) fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Why a socket does not answer, with the fix for it.
struct Failure {
    reason: String,
    fix: Option<String>,
}

fn socket_failure(target: &Target, err: &std::io::Error) -> Failure {
    let socket = target.socket.display();
    match (target.kind, err.kind()) {
        (_, ErrorKind::PermissionDenied) => Failure {
            reason: format!("permission denied on {socket}"),
            fix: Some(match (target.kind, target.rootless) {
                (EngineKind::Docker, _) => "add your user to the docker group \
                    (`sudo usermod -aG docker $USER`, then log in again), or use rootless podman"
                    .to_string(),
                (EngineKind::Podman, false) => {
                    "rootful podman needs root: run kennel as root, or use rootless podman \
                     (`--backend podman` as your own user)"
                        .to_string()
                }
                (EngineKind::Podman, true) => format!("check the permissions of {socket}"),
            }),
        },
        (EngineKind::Docker, ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            let what = if err.kind() == ErrorKind::NotFound {
                "the socket does not exist"
            } else {
                "the socket refuses connections"
            };
            let fix = if target.from_env {
                format!(
                    "start the engine behind DOCKER_HOST, or unset DOCKER_HOST to use {DEFAULT_DOCKER_SOCKET}"
                )
            } else if find_in_path("dockerd").is_some() {
                "dockerd is installed but not running: start it (`sudo systemctl start docker`, or `sudo dockerd &`)".to_string()
            } else {
                "install docker.io and start dockerd, or install podman".to_string()
            };
            Failure {
                reason: format!("{what} (is dockerd running?)"),
                fix: Some(fix),
            }
        }
        (EngineKind::Podman, ErrorKind::NotFound | ErrorKind::ConnectionRefused) => {
            let what = if err.kind() == ErrorKind::NotFound {
                "the socket does not exist"
            } else {
                "the socket refuses connections"
            };
            let fix = if target.from_env {
                "start the podman service behind CONTAINER_HOST (`podman system service`), or unset CONTAINER_HOST".to_string()
            } else if find_in_path("podman").is_some() {
                format!(
                    "start the API service: `podman system service --time=0 unix://{socket} &` (or `systemctl {}start podman.socket`)",
                    if target.rootless { "--user " } else { "" }
                )
            } else {
                "install podman (`apt install podman`), or docker.io".to_string()
            };
            Failure {
                reason: what.to_string(),
                fix: Some(fix),
            }
        }
        _ => Failure {
            reason: err.to_string(),
            fix: None,
        },
    }
}

/// Does something answer on the socket at all? (Classifies the error when not.)
async fn socket_accepts(target: &Target) -> Result<(), Failure> {
    match tokio::net::UnixStream::connect(&target.socket).await {
        Ok(_) => Ok(()),
        Err(err) => Err(socket_failure(target, &err)),
    }
}

async fn ping(socket: &Path) -> Result<Docker, String> {
    let path = socket.to_str().ok_or("the socket path is not UTF-8")?;
    let docker = Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
        .map_err(|err| err.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err("no answer to ping within 5 s".to_string()),
    }
}

/// Start `podman system service` detached, for the socket of `target`.
fn start_podman_service(podman: &Path, socket: &Path) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let argv: Vec<String> = vec![
        "system".to_string(),
        "service".to_string(),
        "--time=300".to_string(),
        format!("unix://{}", socket.display()),
    ];
    let mut command = std::process::Command::new(podman);
    command
        .args(&argv)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // `pre_exec` has no safe form; `process_group` would not leave the terminal.
    // SAFETY: setsid() is async-signal-safe; nothing else runs between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = command.spawn()?;
    info!(pid = child.id(), socket = %socket.display(), "started podman system service");
    // Reap it when it exits (after its idle timeout) so it never lingers as a zombie.
    std::thread::Builder::new()
        .name("podman-service-reaper".to_string())
        .spawn(move || {
            let _ = child.wait();
        })?;
    Ok(())
}

fn parse_api_version(text: &str) -> Option<(usize, usize)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Builds the client from what the engine said about itself. Rootless
/// Podman is recognised by who serves the socket: a rootful engine runs as root.
fn engine_from_facts(
    target: &Target,
    facts: &crate::cache::Facts,
    peer: Option<crate::cache::Peer>,
) -> Result<Engine, EngineError> {
    let kind = if facts.podman {
        EngineKind::Podman
    } else {
        EngineKind::Docker
    };
    if kind != target.kind {
        info!(socket = %target.socket.display(), "the {} socket is served by {kind}", target.kind);
    }
    let rootless = kind == EngineKind::Podman
        && match peer {
            Some(peer) => peer.uid != 0,
            None => target.rootless,
        };
    let path = target
        .socket
        .to_str()
        .ok_or_else(|| EngineError::Unreachable {
            kind: target.kind,
            socket: target.socket.clone(),
            reason: "the socket path is not UTF-8".into(),
            fix: None,
        })?;
    let client_version = bollard::ClientVersion {
        major_version: facts.api_major,
        minor_version: facts.api_minor,
    };
    let docker = Docker::connect_with_unix(path, 120, &client_version).map_err(|err| {
        EngineError::Unreachable {
            kind: target.kind,
            socket: target.socket.clone(),
            reason: err.to_string(),
            fix: None,
        }
    })?;
    let engine_limits = peer
        .map(|peer| engine_limits_of(peer.pid))
        .unwrap_or_default();
    Ok(Engine {
        kind,
        rootless,
        socket: target.socket.clone(),
        version: facts.version.clone(),
        api_version: format!("{}.{}", facts.api_major, facts.api_minor),
        engine_limits,
        docker,
    })
}

/// Connect to `target`, starting Podman's service if needed and allowed.
async fn connect_target(target: &Target, may_start_service: bool) -> Result<Engine, EngineError> {
    let unreachable = |failure: Failure| EngineError::Unreachable {
        kind: target.kind,
        socket: target.socket.clone(),
        reason: failure.reason,
        fix: failure.fix,
    };

    // Fast path: the same engine process as last time answers this socket.
    let peer = crate::cache::peer(&target.socket).await;
    if let Some(facts) = peer
        .as_ref()
        .and_then(|peer| crate::cache::lookup(&target.socket, peer))
    {
        debug!(socket = %target.socket.display(), pid = facts.peer.pid, "engine facts from cache");
        return engine_from_facts(target, &facts, peer);
    }

    let first = match socket_accepts(target).await {
        Ok(()) => ping(&target.socket)
            .await
            .map_err(|reason| Failure { reason, fix: None }),
        Err(failure) => Err(failure),
    };
    let docker = match first {
        Ok(docker) => docker,
        Err(failure) => {
            let podman = find_in_path("podman");
            let can_start = target.kind == EngineKind::Podman
                && may_start_service
                && !target.from_env
                && podman.is_some()
                && (target.rootless || nix::unistd::geteuid().is_root());
            let Some(podman) = podman.filter(|_| can_start) else {
                return Err(unreachable(failure));
            };
            // Something listens but does not answer yet (a service starting up): wait for it.
            let listening = socket_accepts(target).await.is_ok();
            if !listening {
                debug!(reason = %failure.reason, "podman socket does not answer; starting the service");
                // A stale socket file (nobody listening) would make podman fail to bind.
                if std::fs::symlink_metadata(&target.socket).is_ok() {
                    let _ = std::fs::remove_file(&target.socket);
                }
                start_podman_service(&podman, &target.socket).map_err(|err| {
                    unreachable(Failure {
                        reason: format!("starting `podman system service` failed: {err}"),
                        fix: failure.fix.clone(),
                    })
                })?;
            }
            let deadline = Instant::now() + SERVICE_WAIT;
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if socket_accepts(target).await.is_ok()
                    && let Ok(docker) = ping(&target.socket).await
                {
                    break docker;
                }
                if Instant::now() >= deadline {
                    return Err(unreachable(Failure {
                        reason: format!(
                            "started `podman system service` but it did not answer within {} s",
                            SERVICE_WAIT.as_secs()
                        ),
                        fix: Some(format!(
                            "run `podman system service --time=0 unix://{}` by hand to see its error \
                             (on hosts with hybrid cgroups set runtime = \"runc\" in containers.conf)",
                            target.socket.display()
                        )),
                    }));
                }
            }
        }
    };

    // A service started just now had no peer at the top.
    let peer = match peer {
        Some(peer) => Some(peer),
        None => crate::cache::peer(&target.socket).await,
    };
    // One `/version` answers everything kennel needs: the API version, and
    // whether Podman serves the socket (its components say so).
    let version = crate::raw::get_json(&target.socket, "/version")
        .await
        .map_err(|reason| {
            unreachable(Failure {
                reason: format!("reading the engine version failed: {reason}"),
                fix: None,
            })
        })?;
    drop(docker);
    let (api_major, api_minor) = version
        .get("ApiVersion")
        .and_then(serde_json::Value::as_str)
        .and_then(parse_api_version)
        .unwrap_or((1, 41));
    let default = bollard::API_DEFAULT_VERSION;
    let (api_major, api_minor) = std::cmp::min(
        (api_major, api_minor),
        (default.major_version, default.minor_version),
    );
    let podman = version
        .get("Components")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|component| component.get("Name").and_then(serde_json::Value::as_str))
        .any(|name| name.to_ascii_lowercase().contains("podman"));
    let facts = crate::cache::Facts {
        peer: peer.unwrap_or(crate::cache::Peer {
            pid: 0,
            uid: u32::MAX,
            start_time: 0,
        }),
        podman,
        version: version
            .get("Version")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
        api_major,
        api_minor,
    };
    if peer.is_some() {
        crate::cache::store(&target.socket, &facts);
    }
    let engine = engine_from_facts(target, &facts, peer)?;
    debug!(?engine, "connected");
    Ok(engine)
}

/// Connect to Docker or Podman (see the crate docs for how the socket is found).
pub async fn connect(kind: EngineKind) -> Result<Engine, EngineError> {
    let target = match kind {
        EngineKind::Docker => docker_target()?,
        EngineKind::Podman => podman_target().await?,
    };
    connect_target(&target, true).await
}

/// Docker if it answers, else Podman. The string says why this engine was chosen.
pub async fn connect_auto() -> Result<(Engine, String), EngineError> {
    let docker_err = match connect(EngineKind::Docker).await {
        Ok(engine) => {
            let why = format!(
                "{} {} answered at {}",
                engine.label(),
                engine.version,
                engine.socket.display()
            );
            return Ok((engine, why));
        }
        Err(err) => err,
    };
    match connect(EngineKind::Podman).await {
        Ok(engine) => {
            let why = format!(
                "docker is not usable ({docker_err}); {} {} answered at {}",
                engine.label(),
                engine.version,
                engine.socket.display()
            );
            Ok((engine, why))
        }
        Err(podman_err) => Err(EngineError::NoEngine {
            details: format!("{docker_err}; {podman_err}"),
        }),
    }
}

fn probe_from(name: &str, socket: Option<PathBuf>, result: Result<Engine, EngineError>) -> Probe {
    match result {
        Ok(engine) => Probe {
            name: name.to_string(),
            available: true,
            reason: format!(
                "{} {} answers at {} (API {})",
                engine.label(),
                engine.version,
                engine.socket.display(),
                engine.api_version
            ),
            socket: Some(engine.socket),
            version: Some(engine.version),
            fix: None,
        },
        Err(err) => {
            let socket = match &err {
                EngineError::Unreachable { socket, .. } => Some(socket.clone()),
                _ => socket,
            };
            Probe {
                name: name.to_string(),
                available: false,
                socket,
                version: None,
                reason: err.to_string(),
                fix: err.hint(),
            }
        }
    }
}

/// Docker, rootful Podman and rootless Podman, each with why it does or does
/// not work here and how to fix it (for `kennel doctor`).
pub async fn probe_all() -> Vec<Probe> {
    let mut probes = Vec::with_capacity(3);

    let docker = match docker_target() {
        Ok(target) => {
            let socket = Some(target.socket.clone());
            probe_from("docker", socket, connect_target(&target, false).await)
        }
        Err(err) => probe_from("docker", None, Err(err)),
    };
    probes.push(docker);

    let podman_installed = find_in_path("podman").is_some();
    let is_root = nix::unistd::geteuid().is_root();
    let not_installed = |name: &str| Probe {
        name: name.to_string(),
        available: false,
        socket: None,
        version: None,
        reason: "podman is not installed".to_string(),
        fix: Some("`apt install podman` (with runc on hosts with hybrid cgroups)".to_string()),
    };

    if !podman_installed {
        probes.push(not_installed("podman"));
        probes.push(not_installed("podman-rootless"));
        return probes;
    }

    let rootful = rootful_podman_target();
    let socket = Some(rootful.socket.clone());
    probes.push(probe_from(
        "podman",
        socket,
        connect_target(&rootful, is_root).await,
    ));

    if is_root {
        probes.push(Probe {
            name: "podman-rootless".to_string(),
            available: false,
            socket: None,
            version: None,
            reason: "not applicable: kennel runs as root".to_string(),
            fix: Some("run kennel as your own user to use rootless podman".to_string()),
        });
    } else {
        let probe = match rootless_podman_socket().await {
            Ok(socket) => {
                let target = Target {
                    kind: EngineKind::Podman,
                    socket: socket.clone(),
                    from_env: false,
                    rootless: true,
                };
                probe_from(
                    "podman-rootless",
                    Some(socket),
                    connect_target(&target, true).await,
                )
            }
            Err(err) => probe_from("podman-rootless", None, Err(err)),
        };
        probes.push(probe);
    }
    probes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_addresses_only() {
        assert_eq!(
            unix_path("DOCKER_HOST", "unix:///var/run/docker.sock").ok(),
            Some(PathBuf::from("/var/run/docker.sock"))
        );
        assert!(matches!(
            unix_path("DOCKER_HOST", "tcp://1.2.3.4:2375"),
            Err(EngineError::UnsupportedHost { .. })
        ));
        assert!(unix_path("DOCKER_HOST", "unix://relative.sock").is_err());
    }

    #[test]
    fn reads_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max processes             32768                32768                processes\n\
                    Max open files            1024                 unlimited            files\n";
        let limits = parse_limits(text);
        assert_eq!(limits.nproc, Some((32768, 32768)));
        assert_eq!(limits.nofile, Some((1024, u64::MAX)));
    }

    /// Starts a private `podman system service` on a temporary socket (root
    /// only, where podman is installed), then stops it again.
    #[tokio::test]
    #[allow(clippy::print_stderr)] // a test says on stderr why it skipped
    async fn starts_podman_service_when_nothing_answers() {
        if find_in_path("podman").is_none() || !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: needs root and podman");
            return;
        }
        let dir = std::env::temp_dir().join(format!("kennel-podman-svc-{}", std::process::id()));
        let target = Target {
            kind: EngineKind::Podman,
            socket: dir.join("podman.sock"),
            from_env: false,
            rootless: false,
        };
        let started = Instant::now();
        let result = connect_target(&target, true).await;
        // Stop the service we started (found through the socket's peer credentials).
        if let Ok(stream) = tokio::net::UnixStream::connect(&target.socket).await
            && let Some(pid) = stream.peer_cred().ok().and_then(|cred| cred.pid())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
        let engine = match result {
            Ok(engine) => engine,
            Err(err) => panic!("{err} (hint: {:?})", err.hint()),
        };
        assert_eq!(engine.kind(), EngineKind::Podman);
        assert!(started.elapsed() < SERVICE_WAIT + Duration::from_secs(5));

        // Not allowed to start one: a clear error with the socket and a fix.
        let other = Target {
            socket: std::env::temp_dir().join("kennel-no-such-dir/podman.sock"),
            ..target
        };
        match connect_target(&other, false).await {
            Err(err @ EngineError::Unreachable { .. }) => {
                assert!(err.to_string().contains("kennel-no-such-dir"), "{err}");
                assert!(
                    err.hint()
                        .is_some_and(|hint| hint.contains("podman system service"))
                );
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[test]
    fn labels_and_display() {
        assert_eq!(EngineKind::Docker.to_string(), "docker");
        assert_eq!(EngineKind::Podman.to_string(), "podman");
    }
}
