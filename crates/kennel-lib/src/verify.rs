//! `kennel verify`: escape probes run on the user's own machine, engine
//! and configuration. For each backend, kennel runs one sandbox (`kennel
//! run shell`, as a child process with a data directory of its own, in a
//! throwaway workspace) whose command is a script of probes; each probe
//! tries to break one promise and prints one line: held, ESCAPED (with
//! what leaked) or skipped (with why).
//!
//! It harms nothing: its markers are files it creates (in your home,
//! kennel's config and data directories, a sibling repository) and
//! removes, whatever happens (also on Ctrl-C); the only network it
//! touches is a listener of its own on this machine and kennel's proxy.

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
pub const CLASSES: &[&str] = &["files", "privilege", "network"];

/// What `kennel verify` was asked.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// Backends to try (`docker`, `podman`, `native`).
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
    token: String,
    files: Vec<(PathBuf, &'static str)>,
}

impl Markers {
    fn plant(
        host: &kennel_core::host::HostContext,
        other_repository: &Path,
        token: String,
    ) -> Markers {
        let mut files = Vec::new();
        let mut plant = |dir: &Path, what: &'static str| {
            if !dir.is_dir() {
                return;
            }
            let path = dir.join(format!(".{token}"));
            if std::fs::write(&path, &token).is_ok() {
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
        Markers { token, files }
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

/// A listener on this machine that answers any connection with the token:
/// reaching it from a sandbox without kennel's proxy is an escape.
struct Listener {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Listener {
    fn start(token: &str) -> Option<Listener> {
        use std::io::Write;
        let listener = std::net::TcpListener::bind(("0.0.0.0", 0)).ok()?;
        let port = listener.local_addr().ok()?.port();
        listener.set_nonblocking(true).ok()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let answer = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{token}",
            token.len()
        );
        std::thread::spawn(move || {
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(answer.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Some(Listener { port, stop })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The throwaway workspace as a git repository with one commit (worktree
/// and clone modes need one). kennel's own files: git runs with no hooks
/// and no user configuration.
fn init_repository(dir: &Path) -> Result<(), CliError> {
    let git = |args: &[&str]| {
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
    };
    std::fs::write(dir.join("README"), "kennel verify's throwaway repository\n")
        .map_err(|error| CliError::kennel(format!("cannot write {}: {error}", dir.display())))?;
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "README"],
        &["commit", "-q", "-m", "kennel verify"],
    ] {
        match git(args) {
            Ok(output) if output.status.success() => {}
            Ok(output) => {
                return Err(CliError::kennel(format!(
                    "git {} in kennel verify's workspace failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
            Err(error) => {
                return Err(CliError::kennel(format!(
                    "cannot run git for --mode: {error}"
                )));
            }
        }
    }
    Ok(())
}

/// This machine's address on its way out (a UDP socket "connected" to a
/// documentation address: nothing is sent).
fn own_address() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    socket.connect(("192.0.2.1", 9)).ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

/// Runs the probes on each backend asked; the report.
pub async fn verify(request: &VerifyRequest) -> Result<Report, CliError> {
    let host = kennel_core::host::HostContext::detect()?;
    let token = format!("kennel-verify-{:016x}", kennel_core::settings::random_u64());
    // The token in the scratch directory's name: a sandbox left behind is
    // found by its workspace's path.
    let scratch = tempfile::Builder::new()
        .prefix(&format!("{token}-"))
        .tempdir()
        .map_err(|error| CliError::kennel(format!("cannot make a scratch directory: {error}")))?;
    let workspace = scratch.path().join("workspace");
    let other = scratch.path().join("other-repository");
    for dir in [&workspace, &other] {
        std::fs::create_dir_all(dir)
            .map_err(|error| CliError::kennel(format!("cannot make {}: {error}", dir.display())))?;
    }
    if request.mode.is_some() {
        init_repository(&workspace)?;
    }
    let markers = Markers::plant(&host, &other, token);
    // A host process whose environment no sandbox may read.
    let witness = Witness::start(&markers.token);
    let listener = Listener::start(&markers.token);
    let script = probe_script(
        &markers,
        listener.as_ref().map(|l| (l.port, own_address())),
        &request.only,
    );
    let mut signals = Signals::install()?;
    let mut results = Vec::new();
    let mut interrupted = false;
    for backend in &request.backends {
        let ran = run_backend(
            request,
            backend,
            &workspace,
            scratch.path(),
            &script,
            &mut signals,
        )
        .await;
        match ran {
            Some(found) => results.extend(found),
            None => {
                interrupted = true;
                break;
            }
        }
    }
    drop(listener);
    drop(witness);
    let marker = format!(".{}", markers.token);
    // The markers and the scratch directory go here, interrupted or not.
    drop(markers);
    drop(scratch);
    let mut report = Report::new(marker, results);
    report.interrupted = interrupted;
    Ok(report)
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

/// One backend: the probe script in a sandbox, its lines read back;
/// `None` when a signal stopped it (the sandbox's
/// kennel is told and waited for, so that it removes its sandbox).
async fn run_backend(
    request: &VerifyRequest,
    backend: &str,
    workspace: &Path,
    scratch: &Path,
    script: &str,
    signals: &mut Signals,
) -> Option<Vec<ProbeResult>> {
    let skipped = |detail: String| {
        Some(vec![ProbeResult {
            backend: backend.to_string(),
            class: "-".into(),
            probe: "-".into(),
            outcome: Outcome::Skipped,
            detail,
        }])
    };
    if let Err(error) = crate::backend::select(backend, true).await {
        return skipped(format!("the backend does not work here: {}", error.message));
    }
    let data = scratch.join(format!("data-{backend}"));
    let state = scratch.join(format!("state-{backend}"));
    let mut command = tokio::process::Command::new(&request.kennel);
    command.args(["run", "shell", "--backend", backend, "--no-devcontainer"]);
    if let Some(mode) = &request.mode {
        command.args(["--mode", mode]);
    }
    command
        .args(["--", "sh", "-c", script])
        .current_dir(workspace)
        .env("XDG_DATA_HOME", &data)
        .env("XDG_STATE_HOME", &state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return skipped(format!("cannot run kennel: {error}")),
    };
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
    let results = parse(backend, &stdout);
    if results.is_empty() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .unwrap_or("");
        return skipped(format!(
            "the sandbox did not run the probes (exit {}): {}",
            output.status.code().unwrap_or(-1),
            crate::text::escape_controls(last)
        ));
    }
    Some(results)
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

/// The probe script: POSIX sh (the sandbox's `sh`), curl where the image
/// has it.
fn probe_script(
    markers: &Markers,
    listener: Option<(u16, Option<std::net::IpAddr>)>,
    only: &[String],
) -> String {
    let port = listener.map(|(port, _)| port);
    let own = listener
        .and_then(|(_, own)| own)
        .map(|ip| ip.to_string())
        .unwrap_or_default();
    let wants = |class: &str| only.is_empty() || only.iter().any(|c| c == class);
    let mut script = format!(
        "r() {{ printf 'KENNEL-PROBE|%s|%s|%s|%s\\n' \"$1\" \"$2\" \"$3\" \"$4\"; }}\nKENNEL_VERIFY_UID={}\n",
        nix::unistd::getuid().as_raw()
    );
    let token = &markers.token;
    if wants("files") {
        for (path, what) in &markers.files {
            let quote = kennel_core::settings::sh_quote;
            let path = quote(&path.display().to_string());
            let (escaped, held) = (
                quote(&format!("read a marker in {what}")),
                quote(&format!("no marker in {what}")),
            );
            script.push_str(&format!(
                "if cat {path} 2>/dev/null | grep -q {token}; then r files marker escaped {escaped}; else r files marker held {held}; fi\n"
            ));
        }
        script.push_str(&format!(
            "found=; for f in /proc/[0-9]*/environ; do if grep -q KENNEL_VERIFY_WITNESS={token} \"$f\" 2>/dev/null; then found=$f; fi; done; \
             if [ -n \"$found\" ]; then r files host-processes escaped \"read a host process's environment in $found\"; \
             else r files host-processes held 'no host process visible in /proc'; fi\n"
        ));
    }
    if wants("privilege") {
        script.push_str(
            "caps=$(grep '^CapEff:' /proc/self/status | tr -d ' \\t' | cut -d: -f2); \
             if [ \"$caps\" = 0000000000000000 ]; then r privilege capabilities held 'CapEff 0'; else r privilege capabilities escaped \"CapEff $caps\"; fi\n\
             nnp=$(grep '^NoNewPrivs:' /proc/self/status | tr -d ' \\t' | cut -d: -f2); \
             if [ \"$nnp\" = 1 ]; then r privilege no-new-privileges held 'set'; else r privilege no-new-privileges escaped \"NoNewPrivs $nnp\"; fi\n\
             seccomp=$(grep '^Seccomp:' /proc/self/status | tr -d ' \\t' | cut -d: -f2); \
             if [ \"$seccomp\" = 2 ]; then r privilege seccomp held 'a filter is on'; else r privilege seccomp escaped \"Seccomp $seccomp\"; fi\n\
             if [ \"$(id -u)\" != \"$KENNEL_VERIFY_UID\" ]; then r privilege uid escaped \"runs as uid $(id -u), you are $KENNEL_VERIFY_UID\"; else r privilege uid held \"uid $(id -u), yours\"; fi\n\
             core=$(ulimit -c); if [ \"$core\" = 0 ]; then r privilege core-dumps held 'RLIMIT_CORE 0'; else r privilege core-dumps escaped \"RLIMIT_CORE $core\"; fi\n",
        );
    }
    if wants("network") {
        match port {
            Some(port) => script.push_str(&format!(
                "gw=$(awk 'NR > 1 && $2 == \"00000000\" {{ print $3; exit }}' /proc/net/route 2>/dev/null); \
                 if [ -z \"$gw\" ]; then r network direct-tcp held 'no route out of the sandbox'; \
                 elif ! command -v curl >/dev/null 2>&1; then r network direct-tcp skipped 'no curl in the sandbox'; \
                 else gwip=$(printf '%d.%d.%d.%d' 0x$(echo $gw | cut -c7-8) 0x$(echo $gw | cut -c5-6) 0x$(echo $gw | cut -c3-4) 0x$(echo $gw | cut -c1-2)); reached=; \
                 for ip in $gwip {own}; do if curl -s -m 5 --noproxy '*' http://$ip:{port}/ 2>/dev/null | grep -q {token}; then reached=$ip; fi; done; \
                 if [ -n \"$reached\" ]; then r network direct-tcp escaped \"reached this machine at $reached:{port} without the proxy\"; \
                 else r network direct-tcp held \"$gwip {own} port {port} not reached\"; fi; fi\n"
            )),
            None => script.push_str("r network direct-tcp skipped 'no listener on this machine'\n"),
        }
        let port = port.unwrap_or(9);
        for (name, url) in [
            (
                "metadata",
                "http://169.254.169.254/latest/meta-data/".to_string(),
            ),
            ("metadata-decimal", "http://2852039166/".to_string()),
            ("metadata-hex", "http://0xa9fea9fe/".to_string()),
            (
                "metadata-ipv4-mapped",
                "http://[::ffff:169.254.169.254]/".to_string(),
            ),
            ("metadata-ipv6", "http://[fd00:ec2::254]/".to_string()),
            ("loopback-via-proxy", format!("http://127.0.0.1:{port}/")),
            (
                "localhost-trailing-dot",
                format!("http://localhost.:{port}/"),
            ),
            ("private-via-proxy", "http://10.0.0.1/".to_string()),
        ] {
            script.push_str(&format!(
                "if [ -z \"$HTTP_PROXY\" ]; then r network {name} skipped 'no proxy in this session (network mode none or open)'; \
                 elif ! command -v curl >/dev/null 2>&1; then r network {name} skipped 'no curl in the sandbox'; \
                 else code=$(curl -s -m 8 --proxy \"$HTTP_PROXY\" --noproxy '' -o /tmp/kennel-verify-body -w '%{{http_code}}' '{url}' 2>/dev/null); \
                 if grep -q {token} /tmp/kennel-verify-body 2>/dev/null || {{ [ \"$code\" != 403 ] && [ \"$code\" != 000 ] && [ \"$code\" != 400 ]; }}; then r network {name} escaped \"{url} answered $code\"; \
                 else r network {name} held \"{url}: $code from the proxy\"; fi; rm -f /tmp/kennel-verify-body; fi\n"
            ));
        }
    }
    script
}

/// The backends `--all` tries, in order.
pub fn all_backends() -> Vec<String> {
    ["docker", "podman", "native"]
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
    fn the_script_runs_in_sh_and_reports_each_class() {
        let markers = Markers {
            token: "kennel-verify-test".into(),
            files: vec![(
                PathBuf::from("/nonexistent/.kennel-verify-test"),
                "your home directory",
            )],
        };
        let script = probe_script(&markers, None, &[]);
        let output = std::process::Command::new("sh")
            .args(["-c", &script])
            .env_remove("HTTP_PROXY")
            .output()
            .expect("sh");
        let results = parse("here", &String::from_utf8_lossy(&output.stdout));
        for class in CLASSES {
            assert!(
                results.iter().any(|r| r.class == *class),
                "{class}: {results:?}"
            );
        }
        let marker = results
            .iter()
            .find(|r| r.probe == "marker")
            .expect("marker");
        assert_eq!(marker.outcome, Outcome::Held);
        // Only one class.
        let only = probe_script(&markers, None, &["privilege".into()]);
        assert!(!only.contains("marker") && only.contains("CapEff"));
    }
}
