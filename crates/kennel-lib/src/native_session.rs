//! Persistent sessions on the native backend.
//!
//! There is no engine to keep a sandbox alive, so a tmux server of the
//! user's own, on a socket in the session's private directory
//! ([`settings::native_session_dir`]), holds the terminal: its one pane runs
//! `kennel __native-session DIR ID`, which starts the session's egress proxy
//! (if any), runs the native sandbox on the pane's terminal exactly as
//! `kennel run -b native` would, and records how the agent ended. tmux is
//! outside the sandbox; only the pane's program is inside.
//!
//! The session's kennel process (the pane's) is its owner in the registry:
//! `kill -9` of it ends the sandbox (the helper dies with it), and `kennel ls`
//! then reports the session stopped. `attach`, `send` and `capture` talk to
//! the tmux server; `logs` reads the pane's output, recorded by tmux
//! `pipe-pane`; `exec` enters the running sandbox (`kennel_native::enter`).

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kennel_core::host::HostContext;
use kennel_core::plan::Plan;
use kennel_core::settings;
use kennel_sessions::{Owner, Registry, Session, State};
use serde::{Deserialize, Serialize};

use crate::error::CliError;
use crate::proxy::ProxySpec;

/// The tmux session (in the session's own server) that runs the agent.
const TARGET: &str = settings::SESSION_TMUX_TARGET;
const SESSION_FILE: &str = "session.json";
const SOCKET: &str = "tmux.sock";

/// The brokered credentials of a session about to start (read and removed
/// by its pane).
const BROKER_FILE: &str = "broker.json";

/// `content` in a new file only the user can read.
fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut out| std::io::Write::write_all(&mut out, content))
}

/// What the pane's kennel needs, written by `kennel start` (0600: the Plan
/// holds the credentials passed to the agent).
#[derive(Debug, Serialize, Deserialize)]
struct SessionFile {
    plan: Plan,
    proxy: Option<ProxySpec>,
}

/// A native session's files.
pub struct NativeSession {
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl NativeSession {
    pub fn of(host: &HostContext, plan_name: &str) -> NativeSession {
        NativeSession {
            dir: settings::native_session_dir(host, plan_name),
            log: settings::agent_log(host, plan_name),
        }
    }

    /// The session recorded in the registry (its handle is its directory).
    pub fn of_session(host: &HostContext, session: &Session) -> Result<NativeSession, CliError> {
        let dir = session
            .handle
            .as_deref()
            .map(PathBuf::from)
            .ok_or_else(|| {
                CliError::kennel(format!(
                    "session {} has no sandbox (it never started)",
                    session.name
                ))
                .with_hint(format!("`kennel rm {}` forgets it", session.name))
            })?;
        let name = dir
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(NativeSession {
            log: settings::agent_log(host, &name),
            dir,
        })
    }

    fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET)
    }

    /// `tmux -S SOCKET ARGS…` with the output captured.
    fn tmux(&self, args: &[&str]) -> Result<std::process::Output, CliError> {
        tmux_command(&self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(tmux_missing)
    }

    fn tmux_ok(&self, args: &[&str]) -> Result<Vec<u8>, CliError> {
        let output = self.tmux(args)?;
        if output.status.success() {
            Ok(output.stdout)
        } else {
            Err(CliError::kennel(format!(
                "tmux {}: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    /// Starts the tmux server and, in its pane, the session's kennel; the
    /// agent begins once its output is being recorded. Returns the pane's
    /// process (the session's owner).
    pub fn start(
        &self,
        plan: &Plan,
        proxy: Option<ProxySpec>,
        session_id: &str,
    ) -> Result<Owner, CliError> {
        let io_error = |what: &Path, error: std::io::Error| {
            CliError::kennel(format!("cannot prepare {}: {error}", what.display()))
        };
        if let Some(parent) = self.dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|error| io_error(parent, error))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.dir)
            .map_err(|error| io_error(&self.dir, error))?;
        if let Some(logs) = self.log.parent() {
            std::fs::create_dir_all(logs).map_err(|error| io_error(logs, error))?;
        }
        // The brokered values go in a file of their own, which the pane
        // removes as soon as it has read it; the session file stays for
        // `kennel exec`.
        let mut proxy = proxy;
        let broker = proxy.as_mut().and_then(|spec| spec.broker.take());
        let file = self.dir.join(SESSION_FILE);
        let json = serde_json::to_vec(&SessionFile {
            plan: plan.clone(),
            proxy,
        })
        .map_err(|error| CliError::kennel(format!("cannot serialise the plan: {error}")))?;
        write_private(&file, &json).map_err(|error| io_error(&file, error))?;
        if let Some(broker) = broker {
            let path = self.dir.join(BROKER_FILE);
            let json = serde_json::to_vec(&broker).map_err(|error| {
                CliError::kennel(format!("cannot serialise the credentials: {error}"))
            })?;
            write_private(&path, &json).map_err(|error| io_error(&path, error))?;
        }

        let kennel = std::env::current_exe()
            .map_err(|error| CliError::kennel(format!("cannot find kennel itself: {error}")))?;
        let socket = self.socket();
        let socket_text = socket.display().to_string();
        // The pane waits for the go signal, so that `pipe-pane` records the
        // agent's first line; then it becomes the session's kennel (`exec`:
        // the pane's pid is the owner's).
        let pane = "tmux -S \"$0\" wait-for kennel-go && TERM=\"$1\" && shift && exec \"$@\"";
        let dir_text = self.dir.display().to_string();
        let kennel_text = kennel.display().to_string();
        let term = pane_term();
        let started = self.tmux(&[
            "new-session",
            "-d",
            "-s",
            TARGET,
            "-x",
            "200",
            "-y",
            "50",
            "--",
            "sh",
            "-c",
            pane,
            &socket_text,
            &term,
            &kennel_text,
            NATIVE_SESSION_COMMAND,
            &dir_text,
            session_id,
        ])?;
        if !started.status.success() {
            return Err(CliError::kennel(format!(
                "cannot start tmux for the session: {}",
                String::from_utf8_lossy(&started.stderr).trim()
            )));
        }
        let setup = || -> Result<Owner, CliError> {
            let pid = self.tmux_ok(&["display-message", "-p", "-t", TARGET, "#{pane_pid}"])?;
            let pid: i64 = String::from_utf8_lossy(&pid)
                .trim()
                .parse()
                .map_err(|_| CliError::kennel("tmux did not say which process runs the session"))?;
            let owner = Owner::of(pid)
                .ok_or_else(|| CliError::kennel("the session's process ended at once"))?;
            let log = self.log.display().to_string();
            self.tmux_ok(&[
                "pipe-pane",
                "-o",
                "-t",
                TARGET,
                &format!("cat >> {}", kennel_core::settings::sh_quote(&log)),
            ])?;
            Ok(owner)
        };
        match setup() {
            Ok(owner) => Ok(owner),
            Err(error) => {
                let _ = self.tmux(&["kill-server"]);
                let _ = std::fs::remove_dir_all(&self.dir);
                Err(error)
            }
        }
    }

    /// Lets the pane's kennel go (after the registry says who it is).
    pub fn go(&self) -> Result<(), CliError> {
        self.tmux_ok(&["wait-for", "-S", "kennel-go"]).map(drop)
    }

    /// The agent's output so far; `follow` keeps printing until `owner` ends.
    pub fn logs(
        &self,
        follow: Option<Owner>,
        sink: &mut dyn FnMut(kennel_engine::OutputStream, &[u8]),
    ) -> Result<(), CliError> {
        use std::io::Read;
        let log = self.log.display().to_string();
        let mut tail = Command::new("tail");
        tail.args(["-n", "+1"]);
        if let Some(owner) = follow {
            tail.arg("-f").arg(format!("--pid={}", owner.pid));
        }
        let mut child = tail
            .arg(&log)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|error| CliError::kennel(format!("cannot run tail: {error}")))?;
        if let Some(mut out) = child.stdout.take() {
            let mut buffer = [0u8; 16 * 1024];
            loop {
                match out.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => sink(kennel_engine::OutputStream::Stdout, &buffer[..n]),
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        let status = child
            .wait()
            .map_err(|error| CliError::kennel(format!("cannot run tail: {error}")))?;
        if status.success() {
            Ok(())
        } else {
            Err(CliError::kennel(format!(
                "the session's log {log} cannot be read"
            )))
        }
    }

    /// The Plan the session's sandbox runs.
    pub fn plan(&self) -> Result<Plan, CliError> {
        read_session_file(&self.dir).map(|file| file.plan)
    }

    /// Ends the tmux server ([`crate::tmux::HANG_UP`]): the pane's kennel
    /// gets SIGHUP, as a closed terminal would send, and passes it to the
    /// agent. Synchronous, for the paths that have no runtime.
    pub fn hang_up(&self) {
        let _ = self.tmux(crate::tmux::HANG_UP);
    }

    /// Ends the tmux server and removes what a session's kennel that could
    /// not clean up (killed) left: its directory and its proxy's.
    pub fn close(&self) {
        let proxy_dir = read_session_file(&self.dir)
            .ok()
            .and_then(|file| file.proxy)
            .and_then(|spec| spec.socket.parent().map(Path::to_path_buf));
        self.hang_up();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(dir) = proxy_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Removes everything the session left, its log included.
    pub fn remove(&self) {
        self.close();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The hidden command the pane runs.
pub const NATIVE_SESSION_COMMAND: &str = "__native-session";

fn tmux_command(socket: &Path) -> Command {
    let mut command = Command::new("tmux");
    // The user's own tmux configuration has no say in kennel's server.
    command.arg("-f").arg("/dev/null").arg("-S").arg(socket);
    command
}

fn tmux_missing(error: std::io::Error) -> CliError {
    if error.kind() == std::io::ErrorKind::NotFound {
        CliError::kennel("native persistent sessions need tmux on the host")
            .with_hint("install tmux (`apt install tmux`), or use --backend docker or podman")
    } else {
        CliError::kennel(format!("cannot run tmux: {error}"))
    }
}

/// The terminal type inside the pane: one the host surely describes.
fn pane_term() -> String {
    let known = |name: &str| {
        let first = &name[..1];
        ["/usr/share/terminfo", "/lib/terminfo", "/etc/terminfo"]
            .iter()
            .any(|dir| Path::new(dir).join(first).join(name).exists())
    };
    if known("tmux-256color") {
        "tmux-256color".into()
    } else {
        "screen".into()
    }
}

fn read_session_file(dir: &Path) -> Result<SessionFile, CliError> {
    let path = dir.join(SESSION_FILE);
    let bytes = std::fs::read(&path).map_err(|error| {
        CliError::kennel(format!("cannot read {}: {error}", path.display()))
            .with_hint("the session's sandbox is gone; `kennel ls` shows its state")
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|error| CliError::kennel(format!("bad session file {}: {error}", path.display())))
}

/// The session's tmux server runs on the host, on its own socket, with no
/// say for the user's tmux configuration.
#[async_trait::async_trait(?Send)]
impl crate::tmux::TmuxServer for NativeSession {
    async fn tmux(&self, args: &[&str]) -> Result<Vec<u8>, CliError> {
        self.tmux_ok(args)
    }

    async fn tmux_attached(&self, args: &[&str]) -> Result<i32, CliError> {
        let status = tmux_command(&self.socket())
            .args(args)
            // Inside the user's own tmux: a nested client is what is wanted
            // (its prefix is then pressed twice, `C-b C-b d`).
            .env_remove("TMUX")
            .status()
            .map_err(tmux_missing)?;
        Ok(status.code().unwrap_or(1))
    }
}

/// `kennel __native-session DIR ID`: the pane's program. Runs the session's
/// sandbox on this terminal, records how it ended, removes the session's
/// directory and exits with the agent's code.
pub fn pane_main(dir: &Path, id: &str) -> Result<i32, CliError> {
    let mut file = read_session_file(dir)?;
    let broker_file = dir.join(BROKER_FILE);
    if let Ok(json) = std::fs::read(&broker_file) {
        let _ = std::fs::remove_file(&broker_file);
        let broker: crate::broker::BrokerSpec = serde_json::from_slice(&json).map_err(|error| {
            CliError::kennel(format!("the session's credentials are unreadable: {error}"))
        })?;
        if let Some(spec) = file.proxy.as_mut() {
            spec.broker = Some(broker);
        }
    }
    let mut plan = file.plan;
    // The terminal is the pane's, whatever the terminal of `kennel start` was.
    if let Ok(term) = std::env::var("TERM") {
        match plan.env.iter_mut().find(|var| var.name == "TERM") {
            Some(var) => var.value = term,
            None => plan.env.push(kennel_core::plan::EnvVar {
                name: "TERM".into(),
                value: term,
                origin: "kennel".into(),
                secret: false,
            }),
        }
    }
    let host = HostContext::detect()?;
    let mut registry = Registry::open(&settings::registry_path(&host)).ok();
    let result = crate::runtime()?.block_on(async {
        let proxy = match &file.proxy {
            Some(spec) => Some(crate::proxy::SessionProxy::launch(spec).await?),
            None => None,
        };
        let prepared = kennel_native::prepare(&plan, &kennel_native::NativeOptions::default())
            .map_err(|error| crate::backend::native_error(&error))?;
        crate::backend::run_prepared(prepared, proxy).await
    });
    if let Some(registry) = &mut registry {
        let (state, code) = match &result {
            Ok(code) => (State::Exited, Some(*code)),
            Err(error) => (State::Failed, Some(error.kind.code())),
        };
        if let Err(error) = registry.mark_ended(id, state, code) {
            tracing::warn!("cannot record the end of the session: {error}");
        }
    }
    // Direct mode: the agent has exited (by itself or not); check the
    // user's git control files now, before the user runs git.
    crate::git_audit::finish_unattended(&host, id);
    let _ = std::fs::remove_file(dir.join(SESSION_FILE));
    let _ = std::fs::remove_dir_all(dir);
    result
}

/// Waits until process `owner` has ended, or `limit` passes; true if it ended.
pub fn wait_gone(owner: Owner, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while owner.is_alive() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// SIGKILL to the session's kennel (its sandbox dies with it), and waits up
/// to 5 s for it to be gone.
pub fn kill(owner: Owner) {
    signal(owner, libc::SIGKILL);
    wait_gone(owner, Duration::from_secs(5));
}

/// Sends `signal` to the session's kennel.
pub fn signal(owner: Owner, signal: i32) {
    // A number that is no signal is not sent (kill(2) would refuse it).
    if owner.is_alive()
        && let Ok(signal) = nix::sys::signal::Signal::try_from(signal)
    {
        let pid = nix::unistd::Pid::from_raw(owner.pid as libc::pid_t);
        let _ = nix::sys::signal::kill(pid, signal);
    }
}
