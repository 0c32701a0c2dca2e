//! kennel's native backend: the Plan's command runs on the host itself,
//! confined by kernel features alone — no daemon and no image.
//!
//! * an unprivileged user namespace mapping the user's own uid and gid to
//!   themselves, with mount, PID, IPC and UTS namespaces (and a network
//!   namespace, with only `lo`, unless the network is `open`);
//! * in `allowlist` and `restricted` modes, a forwarder inside the sandbox
//!   relays 127.0.0.1:3128 to kennel's egress proxy over its Unix socket:
//!   the sandbox's only way out;
//! * a new root on a tmpfs: the host's system directories read-only, the
//!   Plan's mounts, a fresh `/proc`, a minimal `/dev`, a private `/tmp`;
//! * Landlock (writes only where the Plan allows them), a seccomp filter, no
//!   new privileges and no capabilities.
//!
//! A user namespace cannot be created by a multi-threaded process, and kennel
//! runs tokio, so the work happens in a re-executed helper:
//! `kennel __native-init FD` (see [`helper_main`]), which the binary must
//! dispatch before it starts any thread. [`enter`] runs another command in
//! a running sandbox the same way (`kennel __native-enter FD`, see
//! [`enter_main`]). Library code never prints; the
//! helper writes one `kennel: …` line on stderr when it fails before the
//! agent starts (exit 125), as the binary does.

// The syscall crate: namespaces, mounts, Landlock and seccomp go through libc.
#![allow(unsafe_code)]
// `helper_main` and `enter_main` are the re-executed helper's `main`; they exit.
#![allow(clippy::exit)]

mod enter;
mod filter;
mod forwarder;
mod helper;
mod layout;
mod pids_cgroup;
mod policy;
mod probe;
mod stages;
mod sys;

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use kennel_core::Plan;
use serde::{Deserialize, Serialize};

pub use enter::{ENTER_ARG, enter, enter_main, sandbox_init_of};
pub use filter::{DENIED_IOCTLS, DENIED_SYSCALLS, NOSYS_SYSCALLS, build_filters};
pub use layout::{HostFs, Layout, Node, Op, RealFs, SYSTEM_DIRS, plan_layout};
pub use policy::{Decision, decide};
pub use probe::{Missing, NativeProbe, probe};
pub use stages::{monotonic_ns, take as take_stages};

/// The hidden first argument that turns `kennel` into the native helper.
pub const HELPER_ARG: &str = "__native-init";

/// Exit code for "kennel failed before the agent started" (as `docker run`).
pub const EXIT_KENNEL: i32 = 125;

#[derive(Debug, Clone, Default)]
pub struct NativeOptions {
    /// The kennel binary to re-execute as the helper (default `/proc/self/exe`).
    pub helper: Option<PathBuf>,
    /// Mark the sandbox's start-up stages (see [`take_stages`]).
    pub stages: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The kernel lacks something the sandbox needs (fail closed).
    #[error("the native sandbox is not available here: {cause}")]
    Unavailable { cause: String, fix: String },
    /// The agent's command does not exist where the sandbox can see it.
    #[error("agent command not found on the host: `{command}`")]
    CommandNotFound { command: String },
    #[error("{0}")]
    Other(String),
}

impl NativeError {
    pub fn hint(&self) -> Option<String> {
        match self {
            NativeError::Unavailable { fix, .. } => Some(fix.clone()),
            NativeError::CommandNotFound { .. } => Some(
                "install it on the host in a system directory (/usr/local/bin, /usr/bin, …): \
                 the native backend runs the host's own programs, and your home directory \
                 is not visible inside the sandbox"
                    .into(),
            ),
            NativeError::Other(_) => None,
        }
    }

    /// The exit code kennel should use for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            NativeError::CommandNotFound { .. } => 127,
            _ => EXIT_KENNEL,
        }
    }
}

/// What travels from kennel to its helper.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HelperPayload {
    plan: Plan,
    decision: Decision,
    /// The descriptor to mark start-up stages on, when kennel asks.
    stages_fd: Option<i32>,
}

/// A native run that passed the checks: what to tell the user, then [`Prepared::run`].
#[derive(Debug)]
pub struct Prepared {
    plan: Plan,
    decision: Decision,
    helper: PathBuf,
    stages: bool,
    standby: Option<Standby>,
}

impl Prepared {
    /// Warnings to print before the run (the weaker-sandbox opt-in, every time).
    pub fn warnings(&self) -> &[String] {
        &self.decision.warnings
    }

    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// Runs the sandbox with `standby`'s helper (started earlier, see
    /// [`standby_in_thread`]) instead of starting one.
    pub fn with_standby(mut self, standby: Standby) -> Prepared {
        self.standby = Some(standby);
        self
    }

    /// Runs the agent and returns its exit code (128+N when killed by signal N).
    pub fn run(mut self) -> Result<i32, NativeError> {
        let limit = u64::try_from(self.plan.limits.pids).unwrap_or(0);
        let mut standby = match self.standby.take() {
            Some(standby) => standby,
            None => Standby::start(&self.helper, self.stages)?,
        };
        // Root's processes are exempt from RLIMIT_NPROC: the cgroup the
        // helper is in holds the limit for them (without one, the limit
        // is not enforced).
        if let Some(cgroup) = &standby.cgroup
            && limit > 0
        {
            cgroup
                .limit(limit)
                .map_err(|error| NativeError::Other(format!("the pids limit: {error}")))?;
        }
        let helper = standby
            .helper
            .take()
            .ok_or_else(|| NativeError::Other("the native helper was used already".into()))?;
        let code = helper.run(&HelperPayload {
            plan: self.plan,
            decision: self.decision,
            stages_fd: standby.stages.as_ref().map(|pipe| pipe.write.as_raw_fd()),
        });
        if let Some(stages) = standby.stages.take() {
            stages.finish();
        }
        code
    }
}

/// A helper started before its Plan is ready, waiting for it on a pipe:
/// its exec and loading (the 35 MB kennel binary, about a millisecond and
/// a half) overlap kennel's own preparation of the run. For root, it
/// starts in its pids cgroup (moving a process between cgroups takes
/// milliseconds on cgroup v1; the limit is set when the Plan is known).
/// Dropped unused, it ends without a word.
pub struct Standby {
    helper: Option<Started>,
    cgroup: Option<pids_cgroup::PidsCgroup>,
    stages: Option<stages::Pipe>,
    /// Started from another thread ([`standby_in_thread`]): that thread
    /// waits until this is dropped (the helper's parent-death signal is
    /// sent when the *thread* that started it ends).
    _thread: Option<std::sync::mpsc::Sender<()>>,
}

impl std::fmt::Debug for Standby {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standby")
            .field("pid", &self.helper.as_ref().map(|helper| helper.child.id()))
            .finish()
    }
}

impl Standby {
    fn start(helper: &Path, stages: bool) -> Result<Standby, NativeError> {
        let cgroup = match nix::unistd::getuid().is_root() {
            true => pids_cgroup::PidsCgroup::create(&format!(
                "kennel-{}-{:08x}",
                std::process::id(),
                kennel_core::settings::random_u64() as u32
            ))
            .ok(),
            false => None,
        };
        let stages = match stages {
            true => Some(
                stages::Pipe::new()
                    .map_err(|error| NativeError::Other(format!("pipe: {error}")))?,
            ),
            false => None,
        };
        let started = Started::spawn(
            helper,
            HELPER_ARG,
            cgroup.as_ref().map(pids_cgroup::PidsCgroup::procs),
            stages.as_ref().map(|pipe| pipe.write.as_raw_fd()),
        )?;
        Ok(Standby {
            helper: Some(started),
            cgroup,
            stages,
            _thread: None,
        })
    }
}

/// A [`Standby`] being started by a thread of its own.
pub struct StandbyStarting(std::sync::mpsc::Receiver<Result<Standby, NativeError>>);

/// Starts a helper that waits for the Plan [`Prepared::run`] sends it,
/// from a thread of its own, so that the caller goes on
/// meanwhile: the spawn returns only once the helper has been exec'd, and
/// root's helper is moved into its pids cgroup first (milliseconds on
/// cgroup v1). The thread stays until the standby is used up or dropped.
pub fn standby_in_thread(opts: &NativeOptions) -> StandbyStarting {
    let (result_tx, result_rx) = std::sync::mpsc::sync_channel(1);
    let helper = helper_binary(opts);
    let stages = opts.stages;
    let spawned = std::thread::Builder::new()
        .name("kennel-standby".into())
        .spawn({
            let result_tx = result_tx.clone();
            move || {
                let (keep_tx, keep_rx) = std::sync::mpsc::channel::<()>();
                let standby = Standby::start(&helper, stages).map(|mut standby| {
                    standby._thread = Some(keep_tx);
                    standby
                });
                if result_tx.send(standby).is_ok() {
                    // Returns once the Standby (and its sender) is dropped.
                    let _ = keep_rx.recv();
                }
            }
        });
    if let Err(error) = spawned {
        let _ = result_tx.send(Err(NativeError::Other(format!(
            "cannot start a thread: {error}"
        ))));
    }
    StandbyStarting(result_rx)
}

impl StandbyStarting {
    /// The standby helper, once it has started.
    pub fn wait(self) -> Result<Standby, NativeError> {
        self.0.recv().unwrap_or_else(|_| {
            Err(NativeError::Other(
                "the standby helper's thread ended".into(),
            ))
        })
    }
}

/// Checks the kernel and the Plan's command; refuses (fail closed) when
/// something the sandbox needs is missing and the Plan does not accept a
/// weaker sandbox.
pub fn prepare(plan: &Plan, opts: &NativeOptions) -> Result<Prepared, NativeError> {
    let probe = probe::probe_for_run();
    let decision = decide(&probe, plan.allow_weaker_sandbox)?;
    check_command(plan, &RealFs)?;
    Ok(Prepared {
        plan: plan.clone(),
        decision,
        helper: helper_binary(opts),
        stages: opts.stages,
        standby: None,
    })
}

fn helper_binary(opts: &NativeOptions) -> PathBuf {
    opts.helper
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

/// [`prepare`] then [`Prepared::run`], for callers with nothing to print.
pub fn run(plan: &Plan, opts: &NativeOptions) -> Result<i32, NativeError> {
    prepare(plan, opts)?.run()
}

/// The sandbox's `PATH`: the Plan's, or the default system directories.
fn plan_path(plan: &Plan) -> String {
    plan.env_value("PATH")
        .unwrap_or(kennel_core::settings::NATIVE_PATH)
        .to_string()
}

/// Finds `argv[0]` as the sandbox will: through `PATH` (host system
/// directories), or relative to the working directory.
fn check_command(plan: &Plan, fs: &dyn HostFs) -> Result<(), NativeError> {
    check_command_with(plan, |path| fs.is_executable(path))
}

fn check_command_with(
    plan: &Plan,
    is_executable: impl Fn(&Path) -> bool,
) -> Result<(), NativeError> {
    let Some(command) = plan.command.first() else {
        return Err(NativeError::Other("the Plan has no command".into()));
    };
    let found = if command.contains('/') {
        is_executable(&plan.workdir.join(command))
    } else {
        resolve_in_path(command, &plan_path(plan), is_executable).is_some()
    };
    if found {
        Ok(())
    } else {
        Err(NativeError::CommandNotFound {
            command: command.clone(),
        })
    }
}

fn resolve_in_path(
    command: &str,
    path: &str,
    is_executable: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(command))
        .find(|candidate| is_executable(candidate))
}

static HELPER_PID: AtomicI32 = AtomicI32::new(0);

/// A helper process (`kennel ARG FD`) waiting for its payload on the pipe
/// whose read end is its descriptor FD.
struct Started {
    child: std::process::Child,
    /// The pipe's write end (None once the payload is sent).
    payload: Option<std::fs::File>,
    /// The stages are marked (the helper has their pipe).
    marks: bool,
}

impl Started {
    /// Starts `helper` as `kennel ARG FD`. `cgroup_procs`: the cgroup it
    /// enters before its exec; `inherited`: one more descriptor it keeps
    /// (the stages' pipe).
    fn spawn(
        helper: &Path,
        arg: &str,
        cgroup_procs: Option<&std::ffi::CStr>,
        inherited: Option<i32>,
    ) -> Result<Started, NativeError> {
        let other =
            |what: &str, error: std::io::Error| NativeError::Other(format!("{what}: {error}"));
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|errno| other("pipe", errno.into()))?;
        let raw = read.as_raw_fd();
        let procs = cgroup_procs.map(std::ffi::CStr::to_owned);
        let mut command = std::process::Command::new(helper);
        command
            .arg0("kennel")
            .arg(arg)
            .arg(raw.to_string())
            .env_clear();
        // SAFETY: only async-signal-safe calls between fork and exec (nix's
        // wrappers allocate nothing, nor does io::Error from an errno).
        unsafe {
            command.pre_exec(move || {
                // Let the descriptors survive exec, and die with kennel.
                for raw in std::iter::once(raw).chain(inherited) {
                    // SAFETY: the parent holds these open.
                    let fd = std::os::fd::BorrowedFd::borrow_raw(raw);
                    nix::fcntl::fcntl(
                        fd,
                        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                    )?;
                }
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                if let Some(procs) = &procs {
                    pids_cgroup::enter(procs)?;
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|error| other("cannot start the native helper", error))?;
        drop(read);
        Ok(Started {
            child,
            payload: Some(std::fs::File::from(write)),
            marks: inherited.is_some(),
        })
    }

    /// Sends `payload` (JSON), relays signals to the helper until it ends,
    /// and returns its exit code.
    fn run(mut self, payload: &impl Serialize) -> Result<i32, NativeError> {
        let other =
            |what: &str, error: std::io::Error| NativeError::Other(format!("{what}: {error}"));
        let json = serde_json::to_vec(payload)
            .map_err(|error| NativeError::Other(format!("cannot serialise the plan: {error}")))?;
        if self.marks {
            stages::collect("native: prepare");
        }
        let previous = sys::install_forwarders(&HELPER_PID);
        HELPER_PID.store(self.child.id() as i32, Ordering::SeqCst);
        sys::deliver_pending(&HELPER_PID);
        // The helper reads until the pipe is closed (a large Plan does
        // not fit the pipe's buffer: the helper is reading meanwhile).
        let sent = match self.payload.take() {
            Some(mut pipe) => pipe.write_all(&json),
            None => Ok(()),
        };
        let status = self.child.wait();
        if self.marks {
            stages::collect("helper exit");
        }
        HELPER_PID.store(0, Ordering::SeqCst);
        sys::restore_handlers(previous);
        let status = status.map_err(|error| other("waiting for the native helper", error))?;
        // A helper that ended before it had the Plan said why on stderr.
        if let Err(error) = sent
            && status.success()
        {
            return Err(other("cannot send the plan to the native helper", error));
        }
        Ok(match (status.code(), status.signal()) {
            (Some(code), _) => code,
            (None, Some(signal)) => 128 + signal,
            (None, None) => EXIT_KENNEL,
        })
    }
}

impl Drop for Started {
    /// Unused: the helper finds its pipe closed and ends quietly.
    fn drop(&mut self) {
        if self.payload.take().is_some() {
            let _ = self.child.wait();
        }
    }
}

/// Starts `helper` as `kennel ARG FD`, sends it `payload` (JSON) and
/// returns its exit code (see [`Started`]).
fn spawn_helper(
    helper: &Path,
    arg: &str,
    payload: &impl Serialize,
    cgroup_procs: Option<&std::ffi::CStr>,
) -> Result<i32, NativeError> {
    Started::spawn(helper, arg, cgroup_procs, None)?.run(payload)
}

/// The helper's entry point: `kennel __native-init FD`. Call it first thing
/// in `main`, before any thread starts; it never returns.
pub fn helper_main(fd_arg: Option<&str>) -> ! {
    let code = match read_payload::<HelperPayload>(HELPER_ARG, fd_arg) {
        Ok(Some(payload)) => {
            if let Some(fd) = payload.stages_fd {
                stages::enable(fd);
                stages::mark("helper: plan");
            }
            helper::run(payload.plan, payload.decision)
        }
        // A standby helper kennel did not need (see `Standby`).
        Ok(None) => EXIT_KENNEL,
        Err(message) => {
            sys::report(&message);
            EXIT_KENNEL
        }
    };
    std::process::exit(code)
}

/// The payload kennel writes to the pipe FD; None when kennel closed it
/// without one.
fn read_payload<T: serde::de::DeserializeOwned>(
    arg: &str,
    fd_arg: Option<&str>,
) -> Result<Option<T>, String> {
    let fd: i32 = fd_arg
        .and_then(|text| text.parse().ok())
        .filter(|fd| *fd > 2)
        .ok_or_else(|| format!("{arg} is internal to kennel: expected a descriptor"))?;
    // Owning a descriptor that is not open would abort when it is dropped
    // (raw: nix's fcntl wants a BorrowedFd, which may only be made of a
    // descriptor known to be open, which is the question).
    // SAFETY: F_GETFD only inspects the descriptor.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(format!(
            "{arg} is internal to kennel: descriptor {fd}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: kennel passed us this descriptor and nothing else owns it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut json = Vec::new();
    // A pipe (kennel's) cannot seek; a file handed over is read whole.
    let _ = std::io::Seek::rewind(&mut file);
    std::io::Read::read_to_end(&mut file, &mut json)
        .map_err(|error| format!("cannot read the plan: {error}"))?;
    if json.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(&json)
        .map(Some)
        .map_err(|error| format!("bad plan from kennel: {error}"))
}

#[cfg(test)]
mod tests;
