//! Another command inside a running native sandbox, as `docker exec` is for
//! a container. [`enter`] re-executes kennel as `kennel __native-enter FD`
//! ([`enter_main`]), because setns(CLONE_NEWUSER) refuses a multi-threaded
//! process. The helper joins the namespaces and the root of the sandbox's
//! init, then confines the command with the very code that confines the
//! agent ([`crate::helper::exec_agent`]): Landlock, seccomp, no capabilities,
//! no new privileges, the pids limit.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use kennel_core::Plan;
use kennel_core::plan::NetworkMode;
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::ForkResult;
use serde::{Deserialize, Serialize};

use crate::helper::{self, Failure};
use crate::layout::{RealFs, plan_layout};
use crate::policy::{Decision, decide};
use crate::sys::{self, Linux, Syscalls};
use crate::{EXIT_KENNEL, HELPER_ARG, NativeError, NativeOptions};

/// The hidden first argument that turns `kennel` into the enter helper.
pub const ENTER_ARG: &str = "__native-enter";

/// What travels from kennel to its enter helper.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EnterPayload {
    plan: Plan,
    decision: Decision,
    init_pid: u32,
}

/// Runs `plan.command` with `plan.env` in `plan.workdir` inside the running
/// sandbox whose init has the host pid `init_pid` (see [`sandbox_init_of`]),
/// on the caller's stdin, stdout and stderr, and returns its exit code
/// (128+N when killed by signal N; 125 when the helper failed before the
/// command started, after one `kennel: …` line on stderr). SIGINT, SIGTERM
/// and SIGHUP sent to the caller are relayed to the command.
///
/// `plan` must be the Plan the sandbox was started with (only its command,
/// environment and working directory may differ): the Landlock rules come
/// from its mounts, and the helper refuses a sandbox whose host name is not
/// the Plan's name. With a weaker sandbox that has no namespaces (see
/// [`Decision::namespaces`]) there is nothing to enter: the command is
/// confined as that agent was, on the host, and `init_pid` is not used.
pub fn enter(plan: &Plan, init_pid: u32, opts: &NativeOptions) -> Result<i32, NativeError> {
    let probe = crate::probe::probe_for_run();
    let decision = decide(&probe, plan.allow_weaker_sandbox)?;
    if decision.namespaces {
        let init = SandboxInit::open(init_pid)
            .and_then(|init| init.check_owner().map(|()| init))
            .map_err(NativeError::Other)?;
        let root = init.root().map_err(NativeError::Other)?;
        // Looked up in the sandbox's own tree: a program the agent made in
        // its private /tmp or its home is there, and not on the host.
        crate::check_command_with(plan, |path| executable_in(&root, path))?;
    } else {
        crate::check_command(plan, &RealFs)?;
    }
    crate::spawn_helper(
        &crate::helper_binary(opts),
        ENTER_ARG,
        &EnterPayload {
            plan: plan.clone(),
            decision,
            init_pid,
        },
        // Root's processes join the sandbox's pids cgroup (see
        // `pids_cgroup`).
        nix::unistd::getuid()
            .is_root()
            .then(|| crate::pids_cgroup::procs_of(init_pid))
            .flatten()
            .as_deref(),
    )
}

/// The host pid of the init of the sandbox that the kennel process
/// `runner_pid` runs through [`crate::Prepared::run`] (its helper's child),
/// or `None` when there is none (not started yet, ended, or a weaker sandbox
/// without namespaces).
pub fn sandbox_init_of(runner_pid: u32) -> Option<u32> {
    children_of(runner_pid)
        .into_iter()
        .filter(|&pid| {
            read_proc(pid, "cmdline").is_ok_and(|cmdline| is_kennel_init_cmdline(&cmdline))
        })
        .flat_map(children_of)
        .find(|&pid| SandboxInit::open(pid).is_ok())
}

/// The helper's entry point: `kennel __native-enter FD`. Call it first thing
/// in `main`, before any thread starts; it never returns.
pub fn enter_main(fd_arg: Option<&str>) -> ! {
    let code = match crate::read_payload::<EnterPayload>(ENTER_ARG, fd_arg) {
        Ok(Some(payload)) => match enter_sandbox(&payload) {
            Ok(code) => code,
            Err(Failure(code, message)) => {
                sys::report(&message);
                code
            }
        },
        Ok(None) => EXIT_KENNEL,
        Err(message) => {
            sys::report(&message);
            EXIT_KENNEL
        }
    };
    std::process::exit(code)
}

static COMMAND_PID: AtomicI32 = AtomicI32::new(0);

/// The namespaces joined, in this order: the user namespace first, which
/// gives this process (its owner's) every capability over the others.
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

fn enter_sandbox(payload: &EnterPayload) -> Result<i32, Failure> {
    let EnterPayload {
        plan,
        decision,
        init_pid,
    } = payload;
    let fail = |message: String| Failure(EXIT_KENNEL, message);
    sys::set_parent_death_signal(Signal::SIGKILL).map_err(|e| ("prctl", e))?;
    if nix::unistd::getppid().as_raw() == 1 {
        return Err(fail("kennel exited before the command started".into()));
    }
    // The same layout the sandbox was built from, computed on the host as
    // the session's helper did: only its writable paths and devices are
    // used, and those are paths inside the sandbox, which is where this
    // process is when Landlock resolves them.
    let mut layout = plan_layout(plan, &RealFs).map_err(|e| ("the sandbox's filesystem", e))?;
    if !decision.namespaces {
        return Err(helper::exec_agent(
            &Linux,
            plan,
            decision,
            &helper::weak_layout(plan, &layout),
        ));
    }
    // The session's terminal, when it had one (absent paths get no rule).
    layout.devices.push("/dev/console".into());

    let init = SandboxInit::open(*init_pid)
        .and_then(|init| init.check_owner().map(|()| init))
        .map_err(fail)?;
    let mut namespaces = Vec::new();
    for &(name, kind) in NAMESPACES {
        let (fd, own) = init.namespace(name).map_err(fail)?;
        if !own {
            // `open` runs in kennel's own network namespace: nothing to join.
            if kind == CloneFlags::CLONE_NEWNET && plan.network.mode == NetworkMode::Open {
                continue;
            }
            return Err(fail(format!(
                "process {init_pid} shares kennel's {name} namespace: it is not the \
                 sandbox this session's Plan describes"
            )));
        }
        namespaces.push((name, kind, fd));
    }
    let root = init.root().map_err(fail)?;
    drop(init);
    join(&Linux, namespaces, root, plan, *init_pid)?;

    let saved = sys::install_forwarders(&COMMAND_PID);
    // SAFETY: this process is single-threaded.
    let pid = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => child.as_raw(),
        Ok(ForkResult::Child) => {
            // The child is the first process of the sandbox's PID namespace
            // that this process has made.
            sys::restore_handlers(saved);
            sys::reset_signals();
            let Failure(code, message) = match sys::set_parent_death_signal(Signal::SIGKILL) {
                Ok(()) => helper::exec_agent(&Linux, plan, decision, &layout),
                Err(error) => ("prctl", error).into(),
            };
            sys::report(&message);
            // Leaving the child without running the parent's destructors.
            sys::exit_child(code)
        }
        Err(errno) => {
            sys::restore_handlers(saved);
            return Err(("fork", io::Error::from(errno)).into());
        }
    };
    COMMAND_PID.store(pid, Ordering::SeqCst);
    sys::deliver_pending(&COMMAND_PID);
    let code = helper::wait_for(pid);
    COMMAND_PID.store(0, Ordering::SeqCst);
    sys::restore_handlers(saved);
    Ok(code)
}

/// Joins the sandbox: its `namespaces` in order, then, once its host name
/// says it is `plan`'s, its `root`.
fn join(
    kernel: &dyn Syscalls,
    namespaces: Vec<(&str, CloneFlags, OwnedFd)>,
    root: OwnedFd,
    plan: &Plan,
    init_pid: u32,
) -> Result<(), Failure> {
    let fail = |message: String| Failure(EXIT_KENNEL, message);
    for (name, kind, fd) in &namespaces {
        kernel
            .setns(fd.as_fd(), *kind)
            .map_err(|e| fail(format!("cannot join the sandbox's {name} namespace: {e}")))?;
    }
    drop(namespaces);
    // The Landlock rules and the command come from the Plan: it must be
    // this sandbox's.
    let expected: String = plan.name.chars().take(63).collect();
    let hostname = kernel.hostname().map_err(|e| ("gethostname", e))?;
    if hostname != expected {
        return Err(fail(format!(
            "process {init_pid} is the sandbox `{hostname}`, not `{expected}`"
        )));
    }
    // Joining the mount namespace alone does not land in the pivoted root.
    kernel
        .chroot_to(root.as_fd())
        .map_err(|e| ("cannot enter the sandbox's root", e))?;
    drop(root);
    Ok(())
}

/// A sandbox's init, held by its `/proc` directory: every later look, and
/// every namespace descriptor, concerns this very process, even if it exits
/// and its pid is reused meanwhile (reads then fail).
struct SandboxInit {
    pid: u32,
    dir: OwnedFd,
}

impl SandboxInit {
    /// Opens `/proc/PID` and checks that it is a kennel sandbox's init.
    fn open(pid: u32) -> Result<SandboxInit, String> {
        let gone = || format!("there is no process {pid}: the sandbox is not running");
        if pid == 0 {
            return Err(gone());
        }
        let dir = open_at(
            None,
            &format!("/proc/{pid}"),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        )
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) => gone(),
            _ => format!("cannot inspect process {pid}: {error}"),
        })?;
        let init = SandboxInit { pid, dir };
        init.check()?;
        Ok(init)
    }

    fn error(&self, what: &str, error: io::Error) -> String {
        let pid = self.pid;
        match error.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ESRCH) => {
                format!("process {pid} has exited: the sandbox is not running")
            }
            _ => format!("cannot read {what} of process {pid}: {error}"),
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, String> {
        let fd = open_at(Some(&self.dir), name, OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .map_err(|e| self.error(name, e))?;
        let mut content = Vec::new();
        std::fs::File::from(fd)
            .read_to_end(&mut content)
            .map_err(|e| self.error(name, e))?;
        Ok(content)
    }

    fn check(&self) -> Result<(), String> {
        let pid = self.pid;
        let cmdline = self.read("cmdline")?;
        if !is_kennel_init_cmdline(&cmdline) {
            let shown = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            return Err(format!(
                "process {pid} is not a kennel native sandbox (it runs `{}`)",
                shown.trim_end()
            ));
        }
        let status = String::from_utf8_lossy(&self.read("status")?).into_owned();
        if !is_pid_namespace_init(&status) {
            return Err(format!(
                "process {pid} is not the init of a kennel native sandbox (it is not PID 1 \
                 of a PID namespace of its own)"
            ));
        }
        let (_, own) = self.namespace("user")?;
        if !own {
            return Err(format!(
                "process {pid} shares kennel's user namespace: it is not in a sandbox"
            ));
        }
        Ok(())
    }

    /// Only the sandbox's own user may enter it: anyone else (root
    /// included) would run the command under a uid the sandbox does not
    /// map, and own the files it writes.
    fn check_owner(&self) -> Result<(), String> {
        let pid = self.pid;
        let status = String::from_utf8_lossy(&self.read("status")?).into_owned();
        let me = nix::unistd::geteuid().as_raw();
        match effective_uid(&status) {
            Some(uid) if uid == me => Ok(()),
            Some(uid) => Err(format!(
                "process {pid} is the sandbox of uid {uid}: only that user can enter it"
            )),
            None => Err(format!("process {pid}: no Uid line in its status")),
        }
    }

    /// The init's namespace `name` and whether it differs from this process's.
    fn namespace(&self, name: &str) -> Result<(OwnedFd, bool), String> {
        let path = format!("ns/{name}");
        let theirs = open_at(Some(&self.dir), &path, OFlag::O_RDONLY | OFlag::O_CLOEXEC)
            .map_err(|e| self.error(&path, e))?;
        let ours = open_at(
            None,
            &format!("/proc/self/ns/{name}"),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        )
        .map_err(|e| format!("cannot read this process's {name} namespace: {e}"))?;
        let own = file_id(&theirs).map_err(|e| self.error(&path, e))?
            != file_id(&ours).map_err(|e| format!("{name} namespace: {e}"))?;
        Ok((theirs, own))
    }

    /// The init's root directory: the sandbox's tree.
    fn root(&self) -> Result<OwnedFd, String> {
        open_at(
            Some(&self.dir),
            "root",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        )
        .map_err(|e| self.error("the root", e))
    }
}

fn open_at(dir: Option<&OwnedFd>, path: &str, flags: OFlag) -> io::Result<OwnedFd> {
    let dir = dir.map_or(nix::fcntl::AT_FDCWD, |dir| dir.as_fd());
    Ok(nix::fcntl::openat(dir, path, flags, Mode::empty())?)
}

fn file_id(fd: &OwnedFd) -> io::Result<(u64, u64)> {
    let stat = nix::sys::stat::fstat(fd)?;
    Ok((stat.st_dev, stat.st_ino))
}

/// Is `path` (inside the sandbox) a file its user may execute? Resolved
/// under the sandbox's root, its absolute symlinks included.
fn executable_in(root: &OwnedFd, path: &Path) -> bool {
    let relative = path.strip_prefix("/").unwrap_or(path);
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match nix::fcntl::openat2(root, relative, how) {
        Ok(fd) => fd,
        Err(Errno::ENOSYS) => {
            // Before Linux 5.6: through the root's magic link, where an
            // absolute symlink resolves on the host instead.
            let through = Path::new("/proc/self/fd")
                .join(root.as_raw_fd().to_string())
                .join(relative);
            return crate::layout::HostFs::is_executable(&RealFs, &through);
        }
        Err(_) => return false,
    };
    let Ok(stat) = nix::sys::stat::fstat(&fd) else {
        return false;
    };
    stat.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits() && stat.st_mode & 0o111 != 0
}

fn read_proc(pid: u32, name: &str) -> io::Result<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/{name}"))
}

/// `kennel __native-init FD`: the session's helper, or its init (a fork).
fn is_kennel_init_cmdline(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|&b| b == 0);
    args.next() == Some(b"kennel".as_slice()) && args.next() == Some(HELPER_ARG.as_bytes())
}

/// `NSpid:` ends with 1: PID 1 of a PID namespace below ours.
fn is_pid_namespace_init(status: &str) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .is_some_and(|pids| {
            let pids: Vec<&str> = pids.split_whitespace().collect();
            pids.len() >= 2 && pids.last() == Some(&"1")
        })
}

fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
}

/// The parent pid in a `/proc/PID/stat` line (the command may hold spaces
/// and parentheses: the fields after the last `)` are fixed).
fn parent_in_stat(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The children of `pid`, every thread's (`Prepared::run` may be called from
/// any thread, and each thread lists its own children), or, on kernels
/// without `/proc/PID/task/TID/children`, every process whose parent it is.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    let mut listed = false;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                listed = true;
                children.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    if listed {
        return children;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return children;
    };
    for entry in entries.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = read_proc(child, "stat").unwrap_or_default();
        if parent_in_stat(&String::from_utf8_lossy(&stat)) == Some(pid) {
            children.push(child);
        }
    }
    children
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::recorder::Recorder;
    use crate::tests::plan;

    #[test]
    fn only_kennels_init_command_line_is_a_sandbox_init() {
        assert!(is_kennel_init_cmdline(b"kennel\0__native-init\x005\0"));
        assert!(!is_kennel_init_cmdline(b"kennel\0__native-enter\x005\0"));
        assert!(!is_kennel_init_cmdline(b"kennel\0run\0shell\0"));
        assert!(!is_kennel_init_cmdline(b"sleep\0__native-init\0"));
        assert!(!is_kennel_init_cmdline(b""));
    }

    #[test]
    fn pid_namespace_init_is_pid_1_of_a_nested_namespace() {
        assert!(is_pid_namespace_init("Name:\tkennel\nNSpid:\t4242\t1\n"));
        assert!(is_pid_namespace_init("NSpid:\t4242\t7\t1\n"));
        assert!(!is_pid_namespace_init("NSpid:\t4242\t2\n"));
        // The host's own init: PID 1 but of no namespace below ours.
        assert!(!is_pid_namespace_init("NSpid:\t1\n"));
        assert!(!is_pid_namespace_init("Name:\tx\n"));
    }

    #[test]
    fn status_and_stat_fields() {
        assert_eq!(effective_uid("Uid:\t0\t1001\t1001\t1001\n"), Some(1001));
        assert_eq!(effective_uid("Gid:\t1\n"), None);
        assert_eq!(parent_in_stat("77 (a b) c)) S 12 77 77 0"), Some(12));
        assert_eq!(parent_in_stat("garbage"), None);
    }

    fn sandbox_fds() -> (Vec<(&'static str, CloneFlags, OwnedFd)>, OwnedFd) {
        let fd = || OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null"));
        let namespaces = NAMESPACES
            .iter()
            .map(|&(name, kind)| (name, kind, fd()))
            .collect();
        (namespaces, fd())
    }

    #[test]
    fn join_enters_the_namespaces_user_first_then_checks_the_name_then_the_root() {
        let kernel = Recorder::new().with_hostname("kennel-shell-test");
        let (namespaces, root) = sandbox_fds();
        join(&kernel, namespaces, root, &plan(vec![]), 42).expect("joined");
        assert_eq!(
            kernel.calls(),
            [
                "setns CLONE_NEWUSER",
                "setns CLONE_NEWIPC",
                "setns CLONE_NEWUTS",
                "setns CLONE_NEWNET",
                "setns CLONE_NEWPID",
                "setns CLONE_NEWNS",
                "hostname",
                "chroot_to",
            ]
        );
    }

    #[test]
    fn join_refuses_a_sandbox_of_another_plan_before_its_root() {
        let kernel = Recorder::new().with_hostname("kennel-other");
        let (namespaces, root) = sandbox_fds();
        let failure = join(&kernel, namespaces, root, &plan(vec![]), 42).expect_err("refused");
        assert_eq!(
            failure,
            Failure(
                EXIT_KENNEL,
                "process 42 is the sandbox `kennel-other`, not `kennel-shell-test`".into()
            )
        );
        assert!(!kernel.calls().contains(&"chroot_to".to_string()));
    }

    #[test]
    fn join_names_the_namespace_it_cannot_enter() {
        let kernel = Recorder::new()
            .with_hostname("kennel-shell-test")
            .failing("setns CLONE_NEWPID", libc::EPERM);
        let (namespaces, root) = sandbox_fds();
        let failure = join(&kernel, namespaces, root, &plan(vec![]), 42).expect_err("refused");
        assert_eq!(
            failure,
            Failure(
                EXIT_KENNEL,
                format!(
                    "cannot join the sandbox's pid namespace: {}",
                    io::Error::from_raw_os_error(libc::EPERM)
                )
            )
        );
        assert_eq!(kernel.calls().last().unwrap(), "setns CLONE_NEWPID");
    }

    #[test]
    fn this_process_is_not_a_sandbox() {
        let error = SandboxInit::open(std::process::id())
            .err()
            .expect("the test process is no sandbox");
        assert!(error.contains("is not a kennel native sandbox"), "{error}");
        assert_eq!(sandbox_init_of(std::process::id()), None);
        let error = SandboxInit::open(0).err().expect("pid 0");
        assert!(error.contains("there is no process 0"), "{error}");
    }
}
