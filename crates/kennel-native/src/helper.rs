//! The re-executed helper: namespaces, the new root, the init (PID 1) and the
//! confined agent. Runs single-threaded (see [`crate::helper_main`]).

use std::ffi::CString;
use std::io::{self, IsTerminal};
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use kennel_core::Plan;
use kennel_core::plan::NetworkMode;
use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::ForkResult;

use crate::layout::{Layout, Op, RealFs, plan_layout};
use crate::policy::Decision;
use crate::sys::{self, Linux, Syscalls};
use crate::{EXIT_KENNEL, filter};

static INIT_PID: AtomicI32 = AtomicI32::new(0);
static AGENT_PID: AtomicI32 = AtomicI32::new(0);

const NEW_ROOT: &str = "/newroot";
const OLD_ROOT: &str = "/oldroot";

/// Failure before the agent started: a message and an exit code.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Failure(pub i32, pub String);

impl<E: std::fmt::Display> From<(&str, E)> for Failure {
    fn from((what, error): (&str, E)) -> Failure {
        Failure(EXIT_KENNEL, format!("{what}: {error}"))
    }
}

pub fn run(plan: Plan, decision: Decision) -> i32 {
    match helper(&plan, &decision) {
        Ok(code) => code,
        Err(Failure(code, message)) => {
            sys::report(&message);
            code
        }
    }
}

fn helper(plan: &Plan, decision: &Decision) -> Result<i32, Failure> {
    sys::set_parent_death_signal(Signal::SIGKILL).map_err(|e| ("prctl", e))?;
    if nix::unistd::getppid().as_raw() == 1 {
        return Err(Failure(
            EXIT_KENNEL,
            "kennel exited before the sandbox started".into(),
        ));
    }
    let mut layout = plan_layout(plan, &RealFs).map_err(|e| ("the sandbox's filesystem", e))?;
    crate::stages::mark("helper: layout");
    // The terminal kennel runs on lives in the host's devpts, which the
    // sandbox does not see: show it as /dev/console (as LXC does) so that
    // ttyname() finds it.
    if let Some(terminal) = host_terminal() {
        layout.ops.push(Op::Bind {
            source: terminal,
            target: "/dev/console".into(),
            read_only: false,
            dir: false,
        });
        layout.devices.push("/dev/console".into());
    }
    if !decision.namespaces {
        return Err(exec_agent(
            &Linux,
            plan,
            decision,
            &weak_layout(plan, &layout),
        ));
    }
    new_namespaces(
        &Linux,
        plan,
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    )?;
    crate::stages::mark("namespaces");

    let saved = sys::install_forwarders(&INIT_PID);
    // SAFETY: this process is single-threaded.
    let pid = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => child.as_raw(),
        Ok(ForkResult::Child) => {
            let Failure(code, message) = init(plan, decision, &layout);
            sys::report(&message);
            // Leaving the child without running the parent's destructors.
            sys::exit_child(code)
        }
        Err(errno) => return Err(("fork", io::Error::from(errno)).into()),
    };
    INIT_PID.store(pid, Ordering::SeqCst);
    sys::deliver_pending(&INIT_PID);
    let code = wait_for(pid);
    crate::stages::mark("init exit");
    sys::restore_handlers(saved);
    Ok(code)
}

/// Puts this process in the sandbox's namespaces: user (mapping `uid` and
/// `gid` to themselves), mount, PID (for its children), IPC, UTS and, unless
/// the Plan's network is `open`, network with `lo` up; the Plan's name as
/// host name.
pub(crate) fn new_namespaces(
    kernel: &dyn Syscalls,
    plan: &Plan,
    uid: u32,
    gid: u32,
) -> Result<(), Failure> {
    let mut flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    // Every mode but `open` gets a network namespace with only `lo`; the
    // proxy modes reach kennel's proxy through the forwarder (see `init`).
    let own_network = plan.network.mode != NetworkMode::Open;
    if own_network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    kernel.unshare(flags).map_err(|error| {
        let missing =
            crate::probe::userns_refused("unshare", error.raw_os_error().unwrap_or(libc::EPERM));
        Failure(
            EXIT_KENNEL,
            format!("{}\n  hint: {}", missing.cause, missing.fix),
        )
    })?;
    kernel
        .write_file(Path::new("/proc/self/setgroups"), "deny")
        .map_err(|e| ("setgroups", e))?;
    kernel
        .write_file(Path::new("/proc/self/uid_map"), &format!("{uid} {uid} 1"))
        .map_err(|e| ("uid_map", e))?;
    kernel
        .write_file(Path::new("/proc/self/gid_map"), &format!("{gid} {gid} 1"))
        .map_err(|e| ("gid_map", e))?;
    let hostname: String = plan.name.chars().take(63).collect();
    kernel
        .sethostname(&hostname)
        .map_err(|e| ("sethostname", e))?;
    if own_network {
        kernel.loopback_up().map_err(|e| ("loopback", e))?;
    }
    Ok(())
}

/// The weaker sandbox: no namespaces, so no new root; Landlock alone keeps
/// writes to the Plan's writable mounts, seen at their host paths.
pub(crate) fn weak_layout(plan: &Plan, layout: &Layout) -> Layout {
    let writable: Vec<PathBuf> = plan
        .mounts
        .iter()
        .filter(|m| !m.read_only)
        .map(|m| m.source.clone())
        .chain(["/tmp".into(), "/dev/shm".into()])
        .collect();
    Layout {
        ops: Vec::new(),
        writable,
        devices: layout.devices.clone(),
    }
}

/// Whether descriptor 0, 1 or 2 is a terminal (isatty(3), through std).
fn is_terminal(fd: i32) -> bool {
    match fd {
        0 => io::stdin().is_terminal(),
        1 => io::stdout().is_terminal(),
        2 => io::stderr().is_terminal(),
        _ => false,
    }
}

fn host_terminal() -> Option<PathBuf> {
    (0..3).find_map(|fd| {
        if !is_terminal(fd) {
            return None;
        }
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .ok()
            .filter(|path| path.starts_with("/dev/"))
    })
}

/// Waits for `pid` (reaping any other child on the way) and turns its
/// status into an exit code.
pub(crate) fn wait_for(pid: libc::pid_t) -> i32 {
    loop {
        let mut status = 0;
        let reaped = match sys::waitpid(-1, &mut status) {
            Ok(reaped) => reaped,
            Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
            Err(_) => return EXIT_KENNEL,
        };
        if reaped == pid {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                return 128 + libc::WTERMSIG(status);
            }
        }
    }
}

/// PID 1 of the sandbox: builds the root, starts the agent, relays signals,
/// reaps orphans, and exits with the agent's code (the kernel then kills
/// whatever is left in the namespace).
fn init(plan: &Plan, decision: &Decision, layout: &Layout) -> Failure {
    if let Err(error) = sys::set_parent_death_signal(Signal::SIGKILL) {
        return ("prctl", error).into();
    }
    let saved = sys::install_forwarders(&AGENT_PID);
    if let Err(failure) = build_root(&Linux, layout) {
        return failure;
    }
    crate::stages::mark("mounts");
    // Set here, before anything is forked, so that the forwarder has them
    // from its first instruction (set in the child, an agent connecting at
    // once found it unlimited for a moment).
    if let Err(failure) = limit_sandbox(&Linux, plan, decision) {
        return failure;
    }
    if let Some(proxy) = &plan.network.proxy
        && let Err(failure) = start_forwarder(&proxy.listen_inside, &proxy.socket_inside)
    {
        return failure;
    }
    crate::stages::mark("limits, forwarder");
    // SAFETY: single-threaded.
    let pid = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { child }) => child.as_raw(),
        Ok(ForkResult::Child) => {
            sys::restore_handlers(saved);
            sys::reset_signals();
            if let Err(error) = sys::set_parent_death_signal(Signal::SIGKILL) {
                return ("prctl", error).into();
            }
            return exec_agent(&Linux, plan, decision, layout);
        }
        Err(errno) => return ("fork", io::Error::from(errno)).into(),
    };
    AGENT_PID.store(pid, Ordering::SeqCst);
    sys::deliver_pending(&AGENT_PID);
    let code = wait_for(pid);
    crate::stages::mark("agent");
    // Leaving PID 1; the namespace's other processes are killed.
    sys::exit_child(code)
}

/// The limits every process of the sandbox has: no core dumps, and the pids
/// limit (inside its own user namespace the sandbox's processes are counted
/// on their own, so it caps the sandbox alone; without one it would count
/// the user's every process, so it is left to the agent's exec then).
fn limit_sandbox(kernel: &dyn Syscalls, plan: &Plan, decision: &Decision) -> Result<(), Failure> {
    kernel
        .set_rlimit(Resource::RLIMIT_CORE, 0)
        .map_err(|e| Failure::from(("core dumps", e)))?;
    if decision.namespaces
        && let Ok(pids) = u64::try_from(plan.limits.pids)
        && pids > 0
    {
        kernel
            .set_rlimit(Resource::RLIMIT_NPROC, pids)
            .map_err(|e| Failure::from(("pids limit", e)))?;
    }
    Ok(())
}

/// Forks the proxy forwarder (listening before the agent starts). It runs in
/// a session of its own (a Ctrl-C on the terminal is not for it), with no
/// capabilities, and dies with the init. It starts a thread per connection
/// the agent opens, so it inherits the init's limits ([`limit_sandbox`]):
/// the same user in the same user namespace, its threads and the agent's
/// processes share one pids count.
fn start_forwarder(listen: &str, socket: &Path) -> Result<(), Failure> {
    let listener = crate::forwarder::bind(listen)
        .map_err(|e| Failure(EXIT_KENNEL, format!("proxy forwarder on {listen}: {e}")))?;
    // SAFETY: single-threaded.
    match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Parent { .. }) => {}
        Ok(ForkResult::Child) => {
            sys::reset_signals();
            sys::ignore_signal(Signal::SIGPIPE);
            let _ = nix::unistd::setsid();
            if let Ok(null) = nix::fcntl::open(
                c"/dev/null",
                OFlag::O_RDWR | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                let _ = nix::unistd::dup2_stdin(&null);
                let _ = nix::unistd::dup2_stdout(&null);
                // Left open, as it always was (it may be descriptor 0 itself).
                let _ = null.into_raw_fd();
            }
            let ready = sys::set_parent_death_signal(Signal::SIGKILL)
                .and_then(|()| sys::set_no_new_privs())
                .and_then(|()| sys::drop_capabilities());
            if let Err(error) = ready {
                sys::report(&format!("proxy forwarder: {error}"));
                // Leaving the child without the parent's destructors.
                sys::exit_child(EXIT_KENNEL);
            }
            crate::forwarder::serve(listener, socket.to_path_buf());
        }
        Err(errno) => return Err(("fork", io::Error::from(errno)).into()),
    }
    drop(listener);
    Ok(())
}

fn inside(root: &str, path: &Path) -> PathBuf {
    Path::new(root).join(path.strip_prefix("/").unwrap_or(path))
}

/// Builds the sandbox's root from `layout` and makes it this process's: a
/// private mount tree, a tmpfs stage pivoted to with the host's root under
/// /oldroot, the new root on a tmpfs at /newroot, the layout's operations,
/// the new root read-only, then pivoted to with the host's root detached.
fn build_root(kernel: &dyn Syscalls, layout: &Layout) -> Result<(), Failure> {
    let fail = |what: String, error: io::Error| Failure(EXIT_KENNEL, format!("{what}: {error}"));
    kernel
        .mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None,
        )
        .map_err(|e| fail("make / private".into(), e))?;
    // Stage on a tmpfs that becomes the root for a moment, with the host's
    // root under /oldroot: host paths under /tmp stay reachable.
    let stage = Path::new("/tmp");
    kernel
        .mount(
            Some(Path::new("tmpfs")),
            stage,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .map_err(|e| fail("tmpfs".into(), e))?;
    for dir in ["newroot", "oldroot"] {
        kernel
            .mkdir(&stage.join(dir))
            .map_err(|e| fail(format!("mkdir {dir}"), e))?;
    }
    kernel
        .pivot_root(stage, &stage.join("oldroot"))
        .map_err(|e| fail("pivot_root".into(), e))?;
    kernel
        .chdir(Path::new("/"))
        .map_err(|e| fail("chdir /".into(), e))?;
    let new_root = Path::new(NEW_ROOT);
    kernel
        .mount(
            Some(Path::new("tmpfs")),
            new_root,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .map_err(|e| fail("tmpfs root".into(), e))?;

    for op in &layout.ops {
        apply_op(kernel, op)?;
    }

    kernel
        .mount(
            None,
            new_root,
            None,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None,
        )
        .map_err(|e| fail("read-only root".into(), e))?;
    kernel
        .chdir(new_root)
        .map_err(|e| fail("chdir".into(), e))?;
    kernel
        .pivot_root(Path::new("."), Path::new("."))
        .map_err(|e| fail("pivot_root".into(), e))?;
    kernel
        .umount_detach(Path::new("."))
        .map_err(|e| fail("detach the host's root".into(), e))?;
    kernel
        .chdir(Path::new("/"))
        .map_err(|e| fail("chdir /".into(), e))?;
    Ok(())
}

/// Carries out one operation of the layout in the new root (at /newroot,
/// with the host's root at /oldroot).
fn apply_op(kernel: &dyn Syscalls, op: &Op) -> Result<(), Failure> {
    let fail = |what: String, error: io::Error| Failure(EXIT_KENNEL, format!("{what}: {error}"));
    let mkdirs = |path: &Path| {
        kernel
            .mkdir_all(path)
            .map_err(|e| fail(format!("cannot make mount point {}", path.display()), e))
    };
    match op {
        Op::Dir { path } => mkdirs(&inside(NEW_ROOT, path))?,
        Op::Symlink { path, points_to } => {
            let link = inside(NEW_ROOT, path);
            if let Some(parent) = link.parent() {
                mkdirs(parent)?;
            }
            match kernel.symlink(points_to, &link) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(error) => return Err(fail(format!("symlink {}", path.display()), error)),
            }
        }
        Op::Tmpfs { path, mode } => {
            let target = inside(NEW_ROOT, path);
            mkdirs(&target)?;
            kernel
                .mount(
                    Some(Path::new("tmpfs")),
                    &target,
                    Some("tmpfs"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some(&format!("mode={mode:o}")),
                )
                .map_err(|e| fail(format!("tmpfs on {}", path.display()), e))?;
        }
        Op::Bind {
            source,
            target,
            read_only,
            dir,
        } => {
            let from = inside(OLD_ROOT, source);
            let to = inside(NEW_ROOT, target);
            if *dir {
                mkdirs(&to)?;
            } else {
                if let Some(parent) = to.parent() {
                    mkdirs(parent)?;
                }
                if !kernel.exists(&to) {
                    kernel.create_file(&to).map_err(|e| {
                        fail(format!("cannot make mount point {}", target.display()), e)
                    })?;
                }
            }
            kernel
                .mount(
                    Some(&from),
                    &to,
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None,
                )
                .map_err(|e| {
                    fail(
                        format!("cannot mount {} at {}", source.display(), target.display()),
                        e,
                    )
                })?;
            if *read_only {
                kernel
                    .make_read_only(&to)
                    .map_err(|e| fail(format!("cannot make {} read-only", target.display()), e))?;
            }
        }
        Op::Proc { path } => {
            let target = inside(NEW_ROOT, path);
            mkdirs(&target)?;
            kernel
                .mount(
                    Some(Path::new("proc")),
                    &target,
                    Some("proc"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    None,
                )
                .map_err(|e| fail("mount /proc".into(), e))?;
        }
        Op::Devpts { path } => {
            let target = inside(NEW_ROOT, path);
            mkdirs(&target)?;
            // Without a devpts of its own the sandbox has no new terminals
            // (the agent still has kennel's); the host's is never shown.
            let _ = kernel.mount(
                Some(Path::new("devpts")),
                &target,
                Some("devpts"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("newinstance,ptmxmode=0666,mode=0620"),
            );
        }
    }
    Ok(())
}

/// Confines this process and replaces it with the agent (or, for
/// [`crate::enter`], the entered command). Paths in `layout` are as this
/// process sees them: inside the sandbox once its root is in place. Returns
/// only on failure.
pub(crate) fn exec_agent(
    kernel: &dyn Syscalls,
    plan: &Plan,
    decision: &Decision,
    layout: &Layout,
) -> Failure {
    let fail = |what: &str, error: String| Failure(EXIT_KENNEL, format!("{what}: {error}"));
    if let Err(error) = kernel.chdir(&plan.workdir) {
        return fail(
            &format!(
                "cannot enter the working directory {}",
                plan.workdir.display()
            ),
            error.to_string(),
        );
    }
    let Some(command) = plan.command.first() else {
        return fail("no command", String::new());
    };
    let path = crate::plan_path(plan);
    let program = if command.contains('/') {
        PathBuf::from(command)
    } else {
        match crate::resolve_in_path(command, &path, |p| kernel.is_executable(p)) {
            Some(program) => program,
            None => {
                return Failure(
                    127,
                    format!("command not found in the sandbox: `{command}` (PATH={path})"),
                );
            }
        }
    };
    let to_c =
        |text: &[u8]| CString::new(text).map_err(|_| "NUL byte in the command or environment");
    let argv: Result<Vec<CString>, _> = plan
        .command
        .iter()
        .map(|arg| to_c(arg.as_bytes()))
        .collect();
    let envp: Result<Vec<CString>, _> = plan
        .env
        .iter()
        .map(|var| to_c(format!("{}={}", var.name, var.value).as_bytes()))
        .collect();
    let (argv, envp, program) = match (argv, envp, to_c(program.as_os_str().as_bytes())) {
        (Ok(argv), Ok(envp), Ok(program)) => (argv, envp, program),
        _ => return fail("exec", "NUL byte in the command or environment".into()),
    };
    let filters = if decision.seccomp {
        match filter::build_filters() {
            Ok(filters) => Some(filters),
            Err(error) => return fail("seccomp", error),
        }
    } else {
        None
    };

    // The pids limit: inside its own user namespace the sandbox's processes
    // are counted on their own (Linux 5.14+), so this caps the sandbox alone.
    if plan.limits.pids > 0
        && decision.namespaces
        && let Err(error) = kernel.set_rlimit(Resource::RLIMIT_NPROC, plan.limits.pids as u64)
    {
        return fail("pids limit", error.to_string());
    }
    // No core dumps: a crashing agent must not leave its memory (its
    // credentials, the user's code) in a file.
    if let Err(error) = kernel.set_rlimit(Resource::RLIMIT_CORE, 0) {
        return fail("core dumps", error.to_string());
    }
    if let Err(error) = kernel.set_no_new_privs() {
        return fail("no-new-privileges", error.to_string());
    }
    if decision.landlock
        && let Err(error) = kernel.landlock(layout)
    {
        return fail("landlock", error);
    }
    if let Err(error) = kernel.drop_capabilities() {
        return fail("dropping capabilities", error.to_string());
    }
    if let Some(filters) = &filters
        && let Err(error) = kernel.seccomp(filters)
    {
        return fail("seccomp", error);
    }
    // Nothing kennel's caller left open reaches the agent.
    kernel.close_on_exec_from(3);
    crate::stages::mark("landlock, seccomp");
    let error = kernel.execve(&program, &argv, &envp);
    let code = match error.raw_os_error() {
        Some(libc::ENOENT) => 127,
        _ => 126,
    };
    Failure(code, format!("cannot run `{command}`: {error}"))
}

/// Landlock: read and execute everywhere, write only where the layout says.
pub(crate) fn landlock(layout: &Layout) -> Result<(), String> {
    let abi = ABI::V6;
    let read = AccessFs::from_read(abi);
    let device = read | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(|e| e.to_string())?
        .scope(Scope::from_all(abi))
        .map_err(|e| e.to_string())?
        .create()
        .map_err(|e| e.to_string())?;
    let rule = |path: &Path, access| -> Result<Option<PathBeneath<PathFd>>, String> {
        match PathFd::new(path) {
            Ok(fd) => Ok(Some(PathBeneath::new(fd, access))),
            // A path that is not there (no devpts, say) needs no rule.
            Err(_) if !path.exists() => Ok(None),
            Err(error) => Err(format!("{}: {error}", path.display())),
        }
    };
    let mut rules = vec![rule(Path::new("/"), read)?];
    rules.push(rule(Path::new("/proc"), read | AccessFs::WriteFile)?);
    for path in &layout.devices {
        rules.push(rule(path, device)?);
    }
    for path in &layout.writable {
        rules.push(rule(path, AccessFs::from_all(abi))?);
    }
    for rule in rules.into_iter().flatten() {
        ruleset = ruleset.add_rule(rule).map_err(|e| e.to_string())?;
    }
    // The terminal kennel was started on lives in the host's devpts, outside
    // the sandbox's tree: allow reopening it (`/dev/stdout`, `/dev/tty`).
    for fd in 0..3 {
        if !is_terminal(fd) {
            continue;
        }
        let link = format!("/proc/self/fd/{fd}");
        let Ok(owned) = nix::fcntl::open(
            link.as_str(),
            OFlag::O_PATH | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        ruleset = ruleset
            .add_rule(PathBeneath::new(owned, AccessFs::from_file(abi) & device))
            .map_err(|e| e.to_string())?;
    }
    let status = ruleset.restrict_self().map_err(|e| e.to_string())?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Err("the kernel did not enforce the ruleset".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
