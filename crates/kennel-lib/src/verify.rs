//! `kennel verify`: escape probes run on the user's own machine, engine
//! and configuration. For each backend, kennel runs one sandbox (`kennel
//! run shell`, as a child process with a data directory of its own, in a
//! throwaway workspace) whose command is a script of probes; each probe
//! tries to break one promise and prints one line: held, ESCAPED (with
//! what leaked) or skipped (with why).
//!
//! After each sandbox, verify takes the host-side steps that would trigger
//! what the sandbox planted (kennel's review commands, your git, the next
//! session, another repository's session) and looks for what ran.
//!
//! It harms nothing: everything it makes carries a random token and is
//! removed whatever happens (also on Ctrl-C); the only traffic is to
//! listeners of its own on this machine, kennel's proxy and the resolvers
//! the sandbox is given (a `.invalid` name).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::error::CliError;

/// One probe's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Held,
    Escaped,
    Skipped,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub backend: String,
    pub class: String,
    pub probe: String,
    pub outcome: Outcome,
    /// What leaked (escaped), why (skipped), or what was tried (held).
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The name of the marker files this run planted (and removed).
    pub marker: String,
    pub results: Vec<ProbeResult>,
    pub held: usize,
    pub escaped: usize,
    pub skipped: usize,
    /// Ctrl-C (or SIGTERM) stopped it; what it made is removed all the same.
    pub interrupted: bool,
}

impl Report {
    fn new(marker: String, results: Vec<ProbeResult>) -> Report {
        let count = |outcome| results.iter().filter(|r| r.outcome == outcome).count();
        Report {
            marker,
            held: count(Outcome::Held),
            escaped: count(Outcome::Escaped),
            skipped: count(Outcome::Skipped),
            results,
            interrupted: false,
        }
    }
}

/// The classes of probes.
pub const CLASSES: &[&str] = &[
    "files",
    "privilege",
    "host",
    "network",
    "planted",
    "credentials",
];

/// What `kennel verify` was asked.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// Backends to try (`docker`, `podman`, `native`, `incus`).
    pub backends: Vec<String>,
    /// Only these classes (empty: all).
    pub only: Vec<String>,
    /// The kennel executable to run sandboxes with.
    pub kennel: PathBuf,
    /// `--mode` for the sandboxes (direct, worktree, clone; default: the
    /// configuration's).
    pub mode: Option<String>,
}

/// Markers on the host that no sandbox may see: path → what it stands for.
struct Markers {
    files: Vec<(PathBuf, &'static str)>,
}

impl Markers {
    fn plant(
        host: &kennel_core::host::HostContext,
        other_repository: &Path,
        token: &str,
    ) -> Markers {
        let mut files = Vec::new();
        let mut plant = |dir: &Path, what: &'static str| {
            if !dir.is_dir() {
                return;
            }
            let path = dir.join(format!(".{token}"));
            if std::fs::write(&path, token).is_ok() {
                files.push((path, what));
            }
        };
        plant(&host.home, "your home directory");
        plant(&host.home.join(".ssh"), "~/.ssh");
        plant(&host.home.join(".aws"), "~/.aws");
        plant(&host.home.join(".gnupg"), "~/.gnupg");
        if let Some(config) = host.user_config_file().parent() {
            plant(config, "kennel's config directory");
        }
        plant(&host.data_dir, "kennel's data directory");
        plant(other_repository, "another repository");
        Markers { files }
    }
}

impl Drop for Markers {
    fn drop(&mut self) {
        for (path, _) in &self.files {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A process on the host (a `sleep`) with the token in its environment:
/// a sandbox that can read it sees host processes.
struct Witness(Option<std::process::Child>);

impl Witness {
    fn start(token: &str) -> Witness {
        let child = std::process::Command::new("sleep")
            .arg("3600")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KENNEL_VERIFY_WITNESS", token)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok();
        Witness(child)
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Listeners of verify's own on this machine, each answering with (or
/// recording) the token: a TCP port and a UDP port on every address
/// (IPv4 and IPv6), and Unix sockets where a user's agents, buses and
/// other sessions keep theirs. Reaching any of them from a sandbox is an
/// escape.
struct Listeners {
    tcp_port: Option<u16>,
    udp_port: Option<u16>,
    /// (path or `@abstract` name, what it stands for)
    unix: Vec<(String, String)>,
    /// What to remove at the end: the sockets verify bound and the
    /// directories it created for them (never one that was there).
    made: Vec<PathBuf>,
    udp_from: std::sync::Arc<std::sync::Mutex<Vec<std::net::SocketAddr>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Listeners {
    fn start(token: &str, host: &kennel_core::host::HostContext) -> Listeners {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let stop = Arc::new(AtomicBool::new(false));
        let answer = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{token}",
            token.len()
        );
        let mut listeners = Listeners {
            tcp_port: None,
            udp_port: None,
            unix: Vec::new(),
            made: Vec::new(),
            udp_from: Arc::default(),
            stop: stop.clone(),
        };
        // [::] takes IPv4 too where IPv6 is on; 0.0.0.0 where it is not.
        let tcp = std::net::TcpListener::bind(("::", 0))
            .or_else(|_| std::net::TcpListener::bind(("0.0.0.0", 0)));
        if let Ok(tcp) = tcp {
            listeners.tcp_port = tcp.local_addr().ok().map(|a| a.port());
            spawn_acceptor(tcp, answer.clone(), stop.clone());
        }
        let udp = std::net::UdpSocket::bind(("::", 0))
            .or_else(|_| std::net::UdpSocket::bind(("0.0.0.0", 0)));
        if let Ok(udp) = udp {
            listeners.udp_port = udp.local_addr().ok().map(|a| a.port());
            let (from, stopped, token) =
                (listeners.udp_from.clone(), stop.clone(), token.to_string());
            let _ = udp.set_read_timeout(Some(Duration::from_millis(100)));
            std::thread::spawn(move || {
                let mut buffer = [0u8; 2048];
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok((len, peer)) = udp.recv_from(&mut buffer)
                        && String::from_utf8_lossy(&buffer[..len]).contains(&token)
                        && let Ok(mut from) = from.lock()
                    {
                        from.push(peer);
                    }
                }
            });
        }
        // An abstract socket: reachable from any process in this network
        // namespace, whatever its files.
        let name = format!("kennel-verify-{token}");
        if let Ok(address) =
            <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(&name)
            && let Ok(unix) = std::os::unix::net::UnixListener::bind_addr(&address)
        {
            spawn_unix_acceptor(unix, answer.clone(), stop.clone());
            listeners.unix.push((format!("@{name}"), "an abstract Unix socket on this machine".into()));
        }
        // Stand-ins where real agents and sessions keep their sockets: the
        // socket, what verify owns (and removes: a directory named with the
        // token, or the socket alone — never a directory that was there or
        // that other kennel processes share), and what it stands for.
        let tmp_agent = std::env::temp_dir().join(format!("{token}-ssh"));
        let mut places = vec![(
            tmp_agent.join("agent.sock"),
            tmp_agent,
            "an agent socket in this machine's /tmp (where ssh-agent keeps one)",
        )];
        if let Some(runtime) = host
            .env
            .get("XDG_RUNTIME_DIR")
            .filter(|dir| !dir.is_empty())
        {
            let socket = PathBuf::from(runtime).join(format!("{token}.sock"));
            places.push((
                socket.clone(),
                socket,
                "a socket in your runtime directory (where gpg-agent, D-Bus and Podman keep theirs)",
            ));
        }
        let session = kennel_core::settings::proxy_dir(host, token);
        places.push((
            session.join("proxy.sock"),
            session,
            "another session's proxy socket",
        ));
        for (path, owned, what) in places {
            let Some(dir) = path.parent() else { continue };
            if std::fs::create_dir_all(dir).is_err() {
                continue;
            }
            listeners.made.push(owned);
            if let Ok(unix) = std::os::unix::net::UnixListener::bind(&path) {
                spawn_unix_acceptor(unix, answer.clone(), stop.clone());
                listeners
                    .unix
                    .push((path.display().to_string(), what.into()));
            }
        }
        // The real ones, where they exist on this machine: connecting is
        // all a probe does.
        for (path, what) in host_sockets(host) {
            if std::fs::symlink_metadata(&path)
                .is_ok_and(|meta| std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()))
            {
                listeners.unix.push((path.display().to_string(), what));
            }
        }
        listeners
    }

    /// Where the token arrived by UDP from.
    fn udp_senders(&self) -> Vec<std::net::SocketAddr> {
        self.udp_from
            .lock()
            .map(|from| from.clone())
            .unwrap_or_default()
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for made in &self.made {
            match std::fs::symlink_metadata(made) {
                Ok(meta) if meta.is_dir() => {
                    let _ = std::fs::remove_dir_all(made);
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(made);
                }
                Err(_) => {}
            }
        }
    }
}

/// Answers every connection `accept` returns with `answer`, until `stop`.
fn spawn_answering<S: std::io::Write>(
    mut accept: impl FnMut() -> std::io::Result<S> + Send + 'static,
    answer: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    std::thread::spawn(move || {
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match accept() {
                Ok(mut stream) => {
                    let _ = stream.write_all(answer.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
}

fn spawn_acceptor(
    listener: std::net::TcpListener,
    answer: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    if listener.set_nonblocking(true).is_ok() {
        spawn_answering(move || listener.accept().map(|(s, _)| s), answer, stop);
    }
}

fn spawn_unix_acceptor(
    listener: std::os::unix::net::UnixListener,
    answer: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    if listener.set_nonblocking(true).is_ok() {
        spawn_answering(move || listener.accept().map(|(s, _)| s), answer, stop);
    }
}

/// The host's own interfaces that a sandbox must not reach: engine
/// sockets, the buses, the user's agents, tmux and displays.
fn host_sockets(host: &kennel_core::host::HostContext) -> Vec<(PathBuf, String)> {
    let env = |name: &str| host.env.get(name).filter(|v| !v.is_empty()).cloned();
    let mut sockets: Vec<(PathBuf, String)> = [
        ("/var/run/docker.sock", "Docker's socket"),
        ("/run/docker.sock", "Docker's socket"),
        ("/run/podman/podman.sock", "rootful Podman's socket"),
        ("/run/containerd/containerd.sock", "containerd's socket"),
        ("/var/lib/incus/unix.socket", "Incus's socket"),
        ("/var/lib/lxd/unix.socket", "LXD's socket"),
        ("/run/dbus/system_bus_socket", "the D-Bus system bus"),
        ("/tmp/.X11-unix/X0", "the X display"),
    ]
    .iter()
    .map(|(path, what)| (PathBuf::from(path), what.to_string()))
    .collect();
    if let Some(runtime) = env("XDG_RUNTIME_DIR") {
        let runtime = PathBuf::from(runtime);
        for (name, what) in [
            ("podman/podman.sock", "your Podman socket"),
            ("docker.sock", "your rootless Docker socket"),
            ("bus", "your D-Bus session bus"),
            ("gnupg/S.gpg-agent", "your gpg-agent"),
            ("gnupg/S.gpg-agent.ssh", "your gpg-agent's ssh socket"),
            ("keyring/ssh", "your keyring's ssh agent"),
            ("wayland-0", "your Wayland display"),
        ] {
            sockets.push((runtime.join(name), what.to_string()));
        }
    }
    sockets.push((
        host.home.join(".gnupg/S.gpg-agent"),
        "your gpg-agent".into(),
    ));
    if let Some(agent) = env("SSH_AUTH_SOCK") {
        sockets.push((
            PathBuf::from(agent),
            "your ssh-agent (SSH_AUTH_SOCK)".into(),
        ));
    }
    if let Some(bus) = env("DBUS_SESSION_BUS_ADDRESS")
        && let Some(path) = bus.strip_prefix("unix:path=")
    {
        let path = path.split(',').next().unwrap_or(path);
        sockets.push((PathBuf::from(path), "your D-Bus session bus".into()));
    }
    if let Some(docker) =
        env("DOCKER_HOST").and_then(|h| h.strip_prefix("unix://").map(str::to_string))
    {
        sockets.push((PathBuf::from(docker), "the engine of DOCKER_HOST".into()));
    }
    let tmux = env("TMUX_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    sockets.push((
        tmux.join(format!("tmux-{}", host.uid)).join("default"),
        "your tmux server".into(),
    ));
    if let Some(session) = env("TMUX").and_then(|t| t.split(',').next().map(str::to_string)) {
        sockets.push((PathBuf::from(session), "the tmux server you are in".into()));
    }
    sockets
}

/// The throwaway workspace as a git repository with one commit. kennel's
/// own files: git runs with no hooks and no user configuration.
fn init_repository(dir: &Path) -> Result<(), CliError> {
    std::fs::write(dir.join("README"), "kennel verify's throwaway repository\n")
        .map_err(|error| CliError::kennel(format!("cannot write {}: {error}", dir.display())))?;
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "README"],
        &["commit", "-q", "-m", "kennel verify"],
    ] {
        let output = clean_git(dir, args)
            .map_err(|error| CliError::kennel(format!("cannot run git: {error}")))?;
        if !output.status.success() {
            return Err(CliError::kennel(format!(
                "git {} in kennel verify's workspace failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    Ok(())
}

/// git with nothing of anyone's configuration (verify's own set-up).
fn clean_git(dir: &Path, args: &[&str]) -> std::io::Result<std::process::Output> {
    std::process::Command::new("git")
        .args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "user.name=kennel verify",
            "-c",
            "user.email=verify@kennel.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::null())
        .output()
}

/// This machine's addresses on its way out (a UDP socket "connected" to a
/// documentation address: nothing is sent).
fn own_address(v6: bool) -> Option<std::net::IpAddr> {
    let (bind, to): (&str, &str) = if v6 {
        ("::", "2001:db8::1")
    } else {
        ("0.0.0.0", "192.0.2.1")
    };
    let socket = std::net::UdpSocket::bind((bind, 0)).ok()?;
    socket.connect((to, 9)).ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// The names the allowlist probes use: one the sandbox is allowed, one it
/// is not (`.invalid`: never resolved anywhere).
const ALLOWED_NAME: &str = "allowed.kennel-verify.invalid";
const DENIED_NAME: &str = "denied.kennel-verify.invalid";
const BOUND_NAME: &str = "bound.kennel-verify.invalid";
const SECRET_NAME: &str = "KENNEL_VERIFY_SECRET";
/// The pids limit the sandboxes run with, so the probe can reach it.
const PIDS_LIMIT: u32 = 64;

/// The probes' own source (perl: in every Debian image, and can make
/// system calls and sockets without anything installed).
const PROBES: &str = include_str!("verify_probes.pl");

/// Everything verify made for one run; removed when dropped.
struct Fixture {
    token: String,
    scratch: tempfile::TempDir,
    markers: Markers,
    _witness: Witness,
    listeners: Listeners,
    /// The real secret's two halves (never one string in an argument).
    needle: (String, String),
    /// `XDG_CONFIG_HOME` for the sandboxes: your config plus verify's
    /// secret binding.
    config_home: Option<PathBuf>,
    git: bool,
    /// Your home directory (what a widened next session would mount).
    home: PathBuf,
    /// `XDG_RUNTIME_DIR` for the sandboxes when you have none.
    runtime: Option<tempfile::TempDir>,
    /// This machine's IPv4 and IPv6 addresses on its way out.
    own_addresses: [Option<std::net::IpAddr>; 2],
}

impl Fixture {
    fn planted_dir(&self) -> PathBuf {
        self.scratch.path().join("planted")
    }

    fn other_repository(&self) -> PathBuf {
        self.scratch.path().join("other-repository")
    }

    /// The probes' arguments (`key=value`).
    fn probe_args(&self, only: &[String], mode: &str) -> Vec<String> {
        let wants: Vec<&str> = CLASSES
            .iter()
            .copied()
            .filter(|class| only.is_empty() || only.iter().any(|c| c == class))
            .filter(|class| *class != "planted" || self.git)
            .collect();
        let mut args = vec![
            format!("classes={}", wants.join(",")),
            format!("token={}", self.token),
            format!("uid={}", nix::unistd::getuid().as_raw()),
            format!("gid={}", nix::unistd::getgid().as_raw()),
            format!("pids={PIDS_LIMIT}"),
            format!("mode={mode}"),
            format!("allowed={ALLOWED_NAME}"),
            format!("denied={DENIED_NAME}"),
            format!("planted={}", self.planted_dir().display()),
            format!("home={}", self.home.display()),
            format!("needle_a={}", self.needle.0),
            format!("needle_b={}", self.needle.1),
            format!("sys_prlimit64={}", libc::SYS_prlimit64),
            format!(
                "other_objects={}",
                self.other_repository().join(".git/objects").display()
            ),
        ];
        if let Some(port) = self.listeners.tcp_port {
            args.push(format!("tcp_port={port}"));
        }
        if let Some(port) = self.listeners.udp_port {
            args.push(format!("udp_port={port}"));
        }
        for (key, ip) in ["own4", "own6"].iter().zip(&self.own_addresses) {
            if let Some(ip) = ip {
                args.push(format!("{key}={ip}"));
            }
        }
        for (path, what) in &self.markers.files {
            args.push(format!("marker={}\t{what}", path.display()));
        }
        for (path, what) in &self.listeners.unix {
            args.push(format!("socket={path}\t{what}"));
        }
        for (name, number, call_args) in refused_syscalls() {
            let mut line = format!("syscall={name}\t{number}");
            for arg in call_args {
                line.push('\t');
                line.push_str(arg);
            }
            args.push(line);
        }
        args
    }
}

/// System calls a sandbox must refuse, with arguments that would succeed
/// where they are allowed (`BUF`: a zeroed buffer, `STR`: a string).
fn refused_syscalls() -> Vec<(&'static str, i64, &'static [&'static str])> {
    vec![
        ("ptrace", libc::SYS_ptrace, &["0", "0", "0", "0"]), // PTRACE_TRACEME
        ("mount", libc::SYS_mount, &["STR", "STR", "STR", "0", "0"]),
        ("unshare-user", libc::SYS_unshare, &["268435456"]), // CLONE_NEWUSER
        ("unshare-mount", libc::SYS_unshare, &["131072"]),   // CLONE_NEWNS
        (
            "clone-user",
            libc::SYS_clone,
            &["268435473", "0", "0", "0", "0"],
        ), // NEWUSER|SIGCHLD
        ("keyctl", libc::SYS_keyctl, &["0", "-3", "0"]),     // the session keyring's id
        ("bpf", libc::SYS_bpf, &["0", "BUF", "72"]),
        ("io_uring", libc::SYS_io_uring_setup, &["1", "BUF"]),
        ("userfaultfd", libc::SYS_userfaultfd, &["1"]), // UFFD_USER_MODE_ONLY
        (
            "perf_event_open",
            libc::SYS_perf_event_open,
            &["BUF", "0", "-1", "-1", "0"],
        ),
    ]
}

/// Runs the probes on each backend asked; the report.
pub async fn verify(request: &VerifyRequest) -> Result<Report, CliError> {
    let host = kennel_core::host::HostContext::detect()?;
    let token = format!("kennel-verify-{:016x}", kennel_core::settings::random_u64());
    // In your home's cache directory (an Incus project of your own may
    // mount only from your home), named with the token: a sandbox left
    // behind is found by its workspace's path. Short: kennel's proxy
    // sockets may live under it (Unix socket paths are limited to 107
    // bytes).
    let cache = host.home.join(".cache");
    let _ = std::fs::create_dir_all(&cache);
    let scratch = tempfile::Builder::new()
        .prefix(&format!("{}-", &token[..22]))
        .tempdir_in(&cache)
        .or_else(|_| {
            tempfile::Builder::new()
                .prefix(&format!("{}-", &token[..22]))
                .tempdir()
        })
        .map_err(|error| CliError::kennel(format!("cannot make a scratch directory: {error}")))?;
    // Without a runtime directory kennel keeps proxy sockets under its data
    // directory, which is under the scratch directory here: a short one
    // of verify's own keeps their paths within the limit.
    let runtime = if host
        .env
        .get("XDG_RUNTIME_DIR")
        .is_some_and(|d| !d.is_empty())
    {
        None
    } else {
        Some(
            tempfile::Builder::new()
                .prefix("kv-")
                .tempdir()
                .map_err(|error| {
                    CliError::kennel(format!("cannot make a runtime directory: {error}"))
                })?,
        )
    };
    let other = scratch.path().join("other-repository");
    std::fs::create_dir_all(&other)
        .map_err(|error| CliError::kennel(format!("cannot make {}: {error}", other.display())))?;
    let git = init_repository(&other).is_ok();
    let config_home = child_config(&host, scratch.path())?;
    let markers = Markers::plant(&host, &other, &token);
    let fixture = Fixture {
        _witness: Witness::start(&token),
        listeners: Listeners::start(&token, &host),
        needle: (
            format!("kvs-{}", &token[14..]),
            format!("{:016x}", kennel_core::settings::random_u64()),
        ),
        token,
        scratch,
        markers,
        config_home,
        git,
        home: host.home.clone(),
        runtime,
        own_addresses: [own_address(false), own_address(true)],
    };
    let mut signals = Signals::install()?;
    let mut results = Vec::new();
    let mut interrupted = false;
    for backend in &request.backends {
        match run_backend(request, backend, &fixture, &mut signals).await {
            Some(found) => results.extend(found),
            None => {
                interrupted = true;
                break;
            }
        }
    }
    let marker = format!(".{}", fixture.token);
    // The markers, listeners and the scratch directory go here,
    // interrupted or not.
    drop(fixture);
    let mut report = Report::new(marker, results);
    report.interrupted = interrupted;
    Ok(report)
}

/// The sandboxes' configuration directory: yours, plus a secret of
/// verify's bound to a name nothing resolves. None: no config of yours
/// to copy and nothing to add it to (the secret's probes are skipped).
fn child_config(
    host: &kennel_core::host::HostContext,
    scratch: &Path,
) -> Result<Option<PathBuf>, CliError> {
    let yours = host.user_config_file();
    let text = match std::fs::read_to_string(&yours) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(_) => return Ok(None),
    };
    let Ok(mut document) = text.parse::<toml_edit::DocumentMut>() else {
        // kennel itself will say what is wrong with it.
        return Ok(None);
    };
    let secrets = document
        .entry("secrets")
        .or_insert(toml_edit::table())
        .as_table_mut();
    let Some(secrets) = secrets else {
        return Ok(None);
    };
    secrets.set_implicit(true);
    let mut binding = toml_edit::Table::new();
    binding["hosts"] = toml_edit::value(toml_edit::Array::from_iter([BOUND_NAME]));
    binding["header"] = toml_edit::value("authorization");
    secrets.insert(SECRET_NAME, toml_edit::Item::Table(binding));
    let home = scratch.join("config");
    let dir = home.join("kennel");
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("config.toml"), document.to_string()))
        .map_err(|error| CliError::kennel(format!("cannot write {}: {error}", dir.display())))?;
    Ok(Some(home))
}

/// Ctrl-C and SIGTERM, caught so that what verify made is removed.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, CliError> {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind| {
            signal(kind).map_err(|error| {
                CliError::kennel(format!("cannot install signal handlers: {error}"))
            })
        };
        Ok(Signals {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// A child kennel for one backend, with verify's data, state and config.
fn child_kennel(
    request: &VerifyRequest,
    fixture: &Fixture,
    backend: &str,
    workspace: &Path,
) -> tokio::process::Command {
    let scratch = fixture.scratch.path();
    let mut command = tokio::process::Command::new(&request.kennel);
    command
        .current_dir(workspace)
        .env("XDG_DATA_HOME", scratch.join(format!("d-{backend}")))
        .env("XDG_STATE_HOME", scratch.join(format!("s-{backend}")))
        .env(
            SECRET_NAME,
            format!("{}{}", fixture.needle.0, fixture.needle.1),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(config) = &fixture.config_home {
        command.env("XDG_CONFIG_HOME", config);
    }
    if let Some(runtime) = &fixture.runtime {
        command.env("XDG_RUNTIME_DIR", runtime.path());
    }
    command
}

/// `kennel run shell` arguments shared by every sandbox of verify's.
fn run_args(request: &VerifyRequest, backend: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "shell",
        "--backend",
        backend,
        "--no-devcontainer",
        "--allow",
        ALLOWED_NAME,
        "--allow",
        "localhost",
        "--allow",
        BOUND_NAME,
        // Addresses allowed by name, so that the address check itself is
        // what refuses them.
        "--allow",
        "169.254.169.254",
        "--allow",
        "127.0.0.1",
        "--allow",
        "10.0.0.1",
        "--allow",
        "fd00:ec2::254",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(["--pids-limit".into(), PIDS_LIMIT.to_string()]);
    if let Some(mode) = &request.mode {
        args.extend(["--mode".into(), mode.clone()]);
    }
    args
}

/// What a dry run plans, of what a repository could try to widen.
struct Planned {
    network: String,
    /// (source, target)
    mounts: Vec<(String, String)>,
    /// Variable names.
    env: Vec<String>,
}

/// How `after` is wider than `before` in what the planted `.kennel.toml`
/// asks for: a wider network, your home mounted, a host variable passed.
fn widened(before: &Planned, after: &Planned, home: &Path) -> Vec<String> {
    let home = home.display().to_string();
    let width = |mode: &str| {
        ["none", "allowlist", "restricted", "open"]
            .iter()
            .position(|m| *m == mode)
    };
    let mut widened = Vec::new();
    if width(&after.network) > width(&before.network) {
        widened.push(format!("network {} -> {}", before.network, after.network));
    }
    widened.extend(
        after
            .mounts
            .iter()
            .filter(|(source, target)| *source == home || target == "/host-home")
            .map(|(source, target)| format!("{source} mounted at {target}")),
    );
    if after.env.iter().any(|name| name == "KENNEL_VERIFY_WITNESS") {
        widened.push("a host variable passed in".into());
    }
    widened
}

/// What a child kennel's stderr says went wrong: its error line (its hints
/// follow it), else its last line; control characters escaped.
fn error_line(stderr: &str) -> String {
    let line = stderr
        .lines()
        .find(|line| line.starts_with("kennel: error"))
        .or_else(|| stderr.lines().rev().find(|line| !line.trim().is_empty()))
        .unwrap_or("");
    crate::text::escape_controls(line)
}

/// What a dry run in `workspace` plans.
async fn planned(
    request: &VerifyRequest,
    fixture: &Fixture,
    backend: &str,
    workspace: &Path,
) -> Result<Planned, String> {
    let mut args = run_args(request, backend);
    args.push("--dry-run".into());
    let output = child_kennel(request, fixture, backend, workspace)
        .args(&args)
        .output()
        .await
        .map_err(|error| format!("cannot run kennel: {error}"))?;
    if !output.status.success() {
        return Err(error_line(&String::from_utf8_lossy(&output.stderr)));
    }
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|error| format!("the dry run's Plan is not JSON: {error}"))?;
    let strings = |value: &serde_json::Value, key: &str| -> Vec<String> {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|item| item[key].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_string();
    Ok(Planned {
        network: plan["network"]["mode"].as_str().unwrap_or("?").to_string(),
        mounts: plan["mounts"]
            .as_array()
            .map(|mounts| {
                mounts
                    .iter()
                    .map(|mount| (text(&mount["source"]), text(&mount["target"])))
                    .collect()
            })
            .unwrap_or_default(),
        env: strings(&plan["env"], "name"),
    })
}

/// One backend: the probes in a sandbox, their lines read back, then the
/// host-side steps that would trigger what the sandbox planted; `None`
/// when a signal stopped it (the sandbox's kennel is told and waited for,
/// so that it removes its sandbox).
async fn run_backend(
    request: &VerifyRequest,
    backend: &str,
    fixture: &Fixture,
    signals: &mut Signals,
) -> Option<Vec<ProbeResult>> {
    let result = |class: &str, probe: &str, outcome, detail: String| ProbeResult {
        backend: backend.to_string(),
        class: class.to_string(),
        probe: probe.to_string(),
        outcome,
        detail,
    };
    let skipped = |detail: String| Some(vec![result("-", "-", Outcome::Skipped, detail)]);
    if let Err(error) = crate::backend::select(backend, true).await {
        return skipped(format!("the backend does not work here: {}", error.message));
    }
    // A fresh workspace per backend: what one sandbox planted never meets
    // the next.
    let workspace = fixture.scratch.path().join(format!("ws-{backend}"));
    if let Err(error) = std::fs::create_dir_all(&workspace) {
        return skipped(format!("cannot make {}: {error}", workspace.display()));
    }
    if fixture.git && init_repository(&workspace).is_err() {
        return skipped("cannot make the throwaway repository".into());
    }
    let _ = std::fs::create_dir_all(fixture.planted_dir());
    let before = match planned(request, fixture, backend, &workspace).await {
        Ok(plan) => plan,
        Err(error) => return skipped(format!("kennel cannot plan a sandbox here: {error}")),
    };
    let mut args = run_args(request, backend);
    args.extend([
        "--".into(),
        "sh".into(),
        "-c".into(),
        "if command -v perl >/dev/null 2>&1; then exec perl -e \"$0\" -- \"$@\"; \
         else echo 'KENNEL-PROBE|-|perl|skipped|no perl in the image: the probes need perl (perl-base, in every Debian image)'; fi"
            .into(),
        PROBES.into(),
    ]);
    args.extend(fixture.probe_args(&request.only, &before.network));
    let mut child = match child_kennel(request, fixture, backend, &workspace)
        .args(&args)
        .spawn()
    {
        Ok(child) => child,
        Err(error) => return skipped(format!("cannot run kennel: {error}")),
    };
    // The sandbox's kennel's messages are kept for the reason of a skip;
    // an image it builds first (minutes, the first time) is said at once.
    let stderr_lines = child.stderr.take().map(|stderr| {
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            let mut kept = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(building) = line.strip_prefix("kennel: building ") {
                    crate::report::note(&format!(
                        "building {}",
                        crate::text::escape_controls(building)
                    ));
                }
                kept.push_str(&line);
                kept.push('\n');
            }
            kept
        })
    });
    let pid = child.id();
    let wait = child.wait_with_output();
    tokio::pin!(wait);
    let output = tokio::select! {
        output = tokio::time::timeout(Duration::from_secs(600), &mut wait) => match output {
            Ok(Ok(output)) => output,
            Ok(Err(error)) => return skipped(format!("cannot run kennel: {error}")),
            Err(_) => return skipped("the sandbox did not finish within 10 minutes".into()),
        },
        () = signals.recv() => {
            // The sandbox's kennel removes its sandbox when told.
            if let Some(pid) = pid.and_then(|pid| i32::try_from(pid).ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGINT,
                );
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), &mut wait).await;
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut results = parse(backend, &stdout);
    if results.is_empty() {
        let stderr = match stderr_lines {
            Some(task) => task.await.unwrap_or_default(),
            None => String::new(),
        };
        return skipped(format!(
            "the sandbox did not run the probes (exit {}): {}",
            output.status.code().unwrap_or(-1),
            error_line(&stderr)
        ));
    }
    if !stdout.contains("KENNEL-PROBE-DONE") {
        results.push(result(
            "-",
            "probes",
            Outcome::Skipped,
            format!(
                "the probes stopped early (exit {})",
                output.status.code().unwrap_or(-1)
            ),
        ));
    }
    let wants = |class: &str| request.only.is_empty() || request.only.iter().any(|c| c == class);
    if wants("network") && fixture.listeners.udp_port.is_some() {
        let senders = fixture.listeners.udp_senders();
        results.push(match senders.first() {
            Some(from) => result(
                "network",
                "direct-udp",
                Outcome::Escaped,
                format!("a datagram from the sandbox reached this machine (from {from})"),
            ),
            None => result(
                "network",
                "direct-udp",
                Outcome::Held,
                "no datagram reached this machine's listener".into(),
            ),
        });
    }
    if wants("planted") && fixture.git {
        results.extend(
            host_side_steps(request, fixture, backend, &workspace, &before)
                .await
                .into_iter()
                .map(|(probe, outcome, detail)| result("planted", &probe, outcome, detail)),
        );
    }
    Some(results)
}

/// After the sandbox: the steps a user (and kennel) take on the host that
/// would run or honour what the agent planted, then a look for what ran.
async fn host_side_steps(
    request: &VerifyRequest,
    fixture: &Fixture,
    backend: &str,
    workspace: &Path,
    before: &Planned,
) -> Vec<(String, Outcome, String)> {
    let mut out = Vec::new();
    let planted = fixture.planted_dir();
    let ran = |planted: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(planted)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let check = |out: &mut Vec<(String, Outcome, String)>, probe: &str, step: &str| {
        let names = ran(&planted);
        for name in &names {
            let _ = std::fs::remove_file(planted.join(name));
        }
        out.push(if names.is_empty() {
            (
                probe.to_string(),
                Outcome::Held,
                format!("nothing the agent planted ran at {step}"),
            )
        } else {
            (
                probe.to_string(),
                Outcome::Escaped,
                format!("{step} ran the agent's program ({})", names.join(", ")),
            )
        });
    };
    check(&mut out, "end-of-run", "the end of the run");
    // kennel's own host-side steps over sessions that kept a branch.
    let kennel = |args: &[&str]| {
        let mut command = child_kennel(request, fixture, backend, workspace);
        command.args(args);
        command
    };
    let listed = kennel(&["ls", "--json"]).output().await;
    let sessions: Vec<String> = listed
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    for name in &sessions {
        let _ = kennel(&["diff", name]).output().await;
    }
    check(
        &mut out,
        "kennel-review",
        "`kennel ls --json` and `kennel diff`",
    );
    for name in &sessions {
        let _ = kennel(&["discard", "--force", name]).output().await;
    }
    // The user's own git in the workspace, as they would run it (with
    // their configuration: only an identity for the commit is added).
    let user_git = |dir: &Path, args: &[&str]| {
        let _ = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=kennel verify",
                "-c",
                "user.email=verify@kennel.invalid",
            ])
            .args(args)
            .current_dir(dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    };
    for args in [
        &["status"][..],
        &["diff"],
        &["log", "-p", "-1"],
        &["add", "-A"],
        &["commit", "-q", "-m", "after the agent"],
        &["checkout", "-q", "-b", "kennel-verify-branch"],
    ] {
        user_git(workspace, args);
    }
    let nested = workspace.join("kennel-verify-nested");
    if nested.is_dir() {
        user_git(&nested, &["status"]);
    }
    check(
        &mut out,
        "your-git",
        "your git (status, diff, log, add, commit, checkout, and status in a nested repository)",
    );
    // The next session in this repository: the repository's .kennel.toml
    // (planted: network open, your home mounted, a host variable passed)
    // must not widen it.
    out.push(match planned(request, fixture, backend, workspace).await {
        Ok(after) => {
            let widened = widened(before, &after, &fixture.home);
            if widened.is_empty() {
                (
                    "next-session".into(),
                    Outcome::Held,
                    format!(
                        "the repository's .kennel.toml did not widen the next session (network {})",
                        after.network
                    ),
                )
            } else {
                (
                    "next-session".into(),
                    Outcome::Escaped,
                    format!(
                        "the repository's .kennel.toml widened the next session: {}",
                        widened.join("; ")
                    ),
                )
            }
        }
        Err(error) => (
            "next-session".into(),
            Outcome::Held,
            format!("the next session refuses to start: {error}"),
        ),
    });
    // Another repository's session: the agent's home must not carry over.
    let mut args = run_args(request, backend);
    args.extend([
        "--".into(),
        "sh".into(),
        "-c".into(),
        "cat \"$HOME/.kennel-verify-channel\" 2>/dev/null; true".into(),
    ]);
    let other = fixture.other_repository();
    out.push(
        match child_kennel(request, fixture, backend, &other)
            .args(&args)
            .output()
            .await
        {
            Ok(output) if String::from_utf8_lossy(&output.stdout).contains(&fixture.token) => (
                "home-channel".into(),
                Outcome::Escaped,
                "a file the agent left in its home reached a session of another repository".into(),
            ),
            Ok(output) if output.status.success() => (
                "home-channel".into(),
                Outcome::Held,
                "another repository's session does not see the agent's home".into(),
            ),
            Ok(output) => (
                "home-channel".into(),
                Outcome::Skipped,
                format!(
                    "the other repository's session failed (exit {})",
                    output.status.code().unwrap_or(-1)
                ),
            ),
            Err(error) => (
                "home-channel".into(),
                Outcome::Skipped,
                format!("cannot run kennel: {error}"),
            ),
        },
    );
    out
}

/// The probes' lines (`KENNEL-PROBE|class|name|held|detail`).
fn parse(backend: &str, stdout: &str) -> Vec<ProbeResult> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut parts = line.strip_prefix("KENNEL-PROBE|")?.splitn(4, '|');
            let (class, probe, outcome, detail) = (
                parts.next()?,
                parts.next()?,
                parts.next()?,
                parts.next().unwrap_or(""),
            );
            let outcome = match outcome {
                "held" => Outcome::Held,
                "escaped" => Outcome::Escaped,
                _ => Outcome::Skipped,
            };
            Some(ProbeResult {
                backend: backend.to_string(),
                class: class.to_string(),
                probe: probe.to_string(),
                outcome,
                detail: crate::text::escape_controls(detail),
            })
        })
        .collect()
}

/// The backends `--all` tries, in order.
pub fn all_backends() -> Vec<String> {
    ["docker", "podman", "native", "incus"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Results by backend, for the summary line.
pub fn by_backend(report: &Report) -> BTreeMap<&str, (usize, usize, usize)> {
    let mut out: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for result in &report.results {
        let entry = out.entry(result.backend.as_str()).or_default();
        match result.outcome {
            Outcome::Held => entry.0 += 1,
            Outcome::Escaped => entry.1 += 1,
            Outcome::Skipped => entry.2 += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_lines_are_read_and_anything_else_ignored() {
        let results = parse(
            "docker",
            "noise\nKENNEL-PROBE|files|marker|held|no marker in ~/.ssh\nKENNEL-PROBE|network|direct-tcp|escaped|reached 172.17.0.1:4000\nKENNEL-PROBE|x|y|weird|\n",
        );
        assert_eq!(results.len(), 3);
        assert_eq!(results[0].outcome, Outcome::Held);
        assert_eq!(results[1].outcome, Outcome::Escaped);
        assert_eq!(results[2].outcome, Outcome::Skipped);
        let report = Report::new(String::new(), results);
        assert_eq!((report.held, report.escaped, report.skipped), (1, 1, 1));
    }

    #[test]
    fn a_wider_next_session_is_an_escape_and_a_narrower_one_is_not() {
        let plan = |network: &str, mounts: &[(&str, &str)], env: &[&str]| Planned {
            network: network.into(),
            mounts: mounts
                .iter()
                .map(|(s, t)| (s.to_string(), t.to_string()))
                .collect(),
            env: env.iter().map(|s| s.to_string()).collect(),
        };
        let home = Path::new("/home/u");
        let before = plan("allowlist", &[("/w", "/w")], &["TERM"]);
        assert!(widened(&before, &before, home).is_empty());
        assert!(widened(&before, &plan("none", &[], &[]), home).is_empty());
        assert_eq!(widened(&before, &plan("open", &[], &[]), home).len(), 1);
        assert_eq!(
            widened(
                &before,
                &plan("allowlist", &[("/home/u", "/host-home")], &[]),
                home
            )
            .len(),
            1
        );
        assert_eq!(
            widened(
                &before,
                &plan("allowlist", &[], &["KENNEL_VERIFY_WITNESS"]),
                home
            )
            .len(),
            1
        );
    }

    /// On the host itself (no sandbox), the probes run to the end, report
    /// every class, and catch what a sandbox would have let through: the
    /// marker is readable and the planted files are written.
    #[test]
    fn the_probes_run_and_detect_on_an_unsandboxed_host() {
        if std::process::Command::new("perl")
            .arg("-v")
            .output()
            .is_err()
        {
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let token = "kennel-verify-unit";
        let marker = dir.path().join(".kennel-verify-unit");
        std::fs::write(&marker, token).expect("marker");
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join(".git/hooks")).expect("mkdir");
        let args = [
            format!("classes={}", CLASSES.join(",")),
            format!("token={token}"),
            format!("marker={}\tyour home directory", marker.display()),
            format!("planted={}", dir.path().join("planted").display()),
            "mode=allowlist".to_string(),
            format!("sys_prlimit64={}", libc::SYS_prlimit64),
            format!("uid={}", nix::unistd::getuid().as_raw()),
            format!("gid={}", nix::unistd::getgid().as_raw()),
        ];
        let output = std::process::Command::new("perl")
            .arg("-e")
            .arg(PROBES)
            .arg("--")
            .args(&args)
            .current_dir(&work)
            .env_remove("HTTP_PROXY")
            .env("HOME", dir.path())
            .output()
            .expect("perl");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            stdout.contains("KENNEL-PROBE-DONE"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let results = parse("here", &stdout);
        for class in CLASSES {
            assert!(
                results.iter().any(|r| r.class == *class),
                "{class}: {stdout}"
            );
        }
        let marker = results
            .iter()
            .find(|r| r.probe == "marker")
            .expect("marker");
        assert_eq!(marker.outcome, Outcome::Escaped, "{marker:?}");
        let uid = results.iter().find(|r| r.probe == "uid").expect("uid");
        assert_eq!(uid.outcome, Outcome::Held, "{uid:?}");
        assert!(work.join(".git/hooks/post-checkout").exists());
        assert!(work.join(".kennel.toml").exists());
    }
}
