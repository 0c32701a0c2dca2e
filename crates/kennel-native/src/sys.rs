//! The system calls the native backend makes: `nix`'s safe wrappers where
//! it has one, raw `libc` (each `unsafe` with its reason) where it has none.
//!
//! Those that build the sandbox and start the agent in it go through
//! [`Syscalls`], the seam between what to do (the root's mounts and their
//! order, the namespaces, the agent's confinement and exec: decided in
//! [`crate::helper`] and [`crate::enter`]) and the kernel that does it
//! ([`Linux`]): the unit tests hand the same code a recorder instead
//! (`recorder::Recorder`), without root. Process control (fork, wait,
//! signals, exit) stays outside the seam.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Pid};
use seccompiler::BpfProgram;

use crate::layout::{HostFs, Layout, RealFs};

#[cfg(test)]
pub(crate) mod recorder;

pub fn cstr(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// One line on stderr, as the binary prints its own errors (the helper has
/// no other way to report).
pub fn report(message: &str) {
    use std::io::Write;
    let _ = writeln!(io::stderr(), "kennel: native sandbox: {message}");
}

/// waitpid(2), raw: nix's `waitpid` decodes the status into a `WaitStatus`,
/// which cannot name a realtime signal (it reaps the child, then fails with
/// EINVAL), and a command killed by one must still report 128+N.
pub fn waitpid(pid: libc::pid_t, status: &mut libc::c_int) -> io::Result<libc::pid_t> {
    // SAFETY: a pointer to a live c_int.
    check(unsafe { libc::waitpid(pid, status, 0) })
}

/// Leaves a forked child at once, without the parent's destructors or
/// atexit handlers (nix has no wrapper).
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit(2) only ends the process.
    unsafe { libc::_exit(code) }
}

// ----------------------------------------------------------------- the seam

/// The system calls that build the sandbox and start the agent in it, no
/// more. Errors are `io::Error`s (as the kernel's errno), so that messages
/// read as they always have.
pub(crate) trait Syscalls {
    // The namespaces.
    fn unshare(&self, flags: CloneFlags) -> io::Result<()>;
    /// Writes a whole file (`/proc/self/uid_map` and the like).
    fn write_file(&self, path: &Path, content: &str) -> io::Result<()>;
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Brings `lo` up in a new network namespace.
    fn loopback_up(&self) -> io::Result<()>;
    /// Joins the namespace `fd` refers to (`kind`: one `CLONE_NEW*` flag).
    fn setns(&self, fd: BorrowedFd<'_>, kind: CloneFlags) -> io::Result<()>;
    /// The host name of this process's UTS namespace.
    fn hostname(&self) -> io::Result<String>;
    /// Makes the directory `dir` refers to this process's root (and working
    /// directory), as `nsenter --root` does.
    fn chroot_to(&self, dir: BorrowedFd<'_>) -> io::Result<()>;

    // The root.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// Makes the mount at `path` and every mount below it read-only and nosuid.
    fn make_read_only(&self, path: &Path) -> io::Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    /// Detaches the mount at `path` (MNT_DETACH).
    fn umount_detach(&self, path: &Path) -> io::Result<()>;
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// A directory and its missing parents.
    fn mkdir_all(&self, path: &Path) -> io::Result<()>;
    /// An empty file, or the file there already, untouched.
    fn create_file(&self, path: &Path) -> io::Result<()>;
    fn symlink(&self, points_to: &Path, path: &Path) -> io::Result<()>;
    /// Something (a dangling link included) is at `path`.
    fn exists(&self, path: &Path) -> bool;
    fn chdir(&self, path: &Path) -> io::Result<()>;

    // The agent.
    /// `path` is a file this user may execute.
    fn is_executable(&self, path: &Path) -> bool;
    /// Sets both the soft and the hard limit of `resource` to `value`.
    fn set_rlimit(&self, resource: Resource, value: u64) -> io::Result<()>;
    fn set_no_new_privs(&self) -> io::Result<()>;
    /// Landlock: writes only where `layout` allows them.
    fn landlock(&self, layout: &Layout) -> Result<(), String>;
    /// Bounding, ambient, effective, permitted and inheritable sets emptied.
    fn drop_capabilities(&self) -> io::Result<()>;
    /// Installs the seccomp filters (no-new-privileges must be set).
    fn seccomp(&self, filters: &[BpfProgram]) -> Result<(), String>;
    /// Marks every descriptor from `first` up close-on-exec.
    fn close_on_exec_from(&self, first: u32);
    /// Replaces this process with `program`; returns only on failure.
    fn execve(&self, program: &CStr, argv: &[CString], envp: &[CString]) -> io::Error;
}

/// The kernel itself.
pub(crate) struct Linux;

impl Syscalls for Linux {
    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        Ok(nix::sched::unshare(flags)?)
    }

    fn write_file(&self, path: &Path, content: &str) -> io::Result<()> {
        std::fs::write(path, content)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        Ok(nix::unistd::sethostname(name)?)
    }

    fn loopback_up(&self) -> io::Result<()> {
        loopback_up()
    }

    fn setns(&self, fd: BorrowedFd<'_>, kind: CloneFlags) -> io::Result<()> {
        Ok(nix::sched::setns(fd, kind)?)
    }

    fn hostname(&self) -> io::Result<String> {
        Ok(nix::unistd::gethostname()?.to_string_lossy().into_owned())
    }

    fn chroot_to(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        nix::unistd::fchdir(dir)?;
        nix::unistd::chroot(".")?;
        Ok(nix::unistd::chdir("/")?)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        mount(source, target, fstype, flags, data)
    }

    fn make_read_only(&self, path: &Path) -> io::Result<()> {
        make_read_only(path)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        Ok(nix::unistd::pivot_root(new_root, put_old)?)
    }

    fn umount_detach(&self, path: &Path) -> io::Result<()> {
        Ok(nix::mount::umount2(path, MntFlags::MNT_DETACH)?)
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn create_file(&self, path: &Path) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(drop)
    }

    fn symlink(&self, points_to: &Path, path: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(points_to, path)
    }

    fn exists(&self, path: &Path) -> bool {
        std::fs::symlink_metadata(path).is_ok()
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        std::env::set_current_dir(path)
    }

    fn is_executable(&self, path: &Path) -> bool {
        RealFs.is_executable(path)
    }

    fn set_rlimit(&self, resource: Resource, value: u64) -> io::Result<()> {
        Ok(nix::sys::resource::setrlimit(resource, value, value)?)
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        set_no_new_privs()
    }

    fn landlock(&self, layout: &Layout) -> Result<(), String> {
        crate::helper::landlock(layout)
    }

    fn drop_capabilities(&self) -> io::Result<()> {
        drop_capabilities()
    }

    fn seccomp(&self, filters: &[BpfProgram]) -> Result<(), String> {
        crate::filter::apply(filters)
    }

    fn close_on_exec_from(&self, first: u32) {
        // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC only sets
        // descriptor flags (nix has no close_range).
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        };
    }

    fn execve(&self, program: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
        match nix::unistd::execve(program, argv, envp) {
            Err(errno) => errno.into(),
            Ok(never) => match never {},
        }
    }
}

// ------------------------------------------------------------------ signals

/// Signals relayed to the sandbox. SIGWINCH is not: the agent shares the
/// terminal and gets it from the kernel.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

static mut TARGET: *const AtomicI32 = std::ptr::null();
static PENDING: AtomicI32 = AtomicI32::new(0);

/// Sends `signal` (a number) to `pid`; async-signal-safe (no allocation).
fn send(pid: libc::pid_t, signal: libc::c_int) {
    if let Ok(signal) = Signal::try_from(signal) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
    }
}

extern "C" fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A signal the kernel sent (the terminal's ^C, hang-up) went to the whole
    // foreground process group, the agent included: relaying it would deliver
    // it twice. Signals sent by a process (kill) are relayed.
    // SAFETY: the kernel passes a valid siginfo to SA_SIGINFO handlers.
    let code = unsafe { (*info).si_code };
    if code > 0 {
        return;
    }
    // SAFETY: TARGET is set before the handler is installed and points to a static.
    let target = unsafe { TARGET };
    if target.is_null() {
        return;
    }
    // SAFETY: as above.
    let pid = unsafe { (*target).load(Ordering::SeqCst) };
    if pid > 0 {
        send(pid, signal);
    } else {
        PENDING.store(signal, Ordering::SeqCst);
    }
}

pub type Saved = Vec<(Signal, SigAction)>;

/// Relays [`FORWARDED`] signals to the pid in `target` (held until it is set).
pub fn install_forwarders(target: &'static AtomicI32) -> Saved {
    // SAFETY: written once, before any handler that reads it is installed.
    unsafe { TARGET = target };
    // nix adds SA_SIGINFO for a three-argument handler.
    let action = SigAction::new(
        SigHandler::SigAction(forward),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    let mut saved = Vec::new();
    for &signal in FORWARDED {
        // SAFETY: `forward` reads atomics and the siginfo and calls kill(2),
        // all async-signal-safe.
        if let Ok(old) = unsafe { nix::sys::signal::sigaction(signal, &action) } {
            saved.push((signal, old));
        }
    }
    saved
}

pub fn restore_handlers(saved: Saved) {
    for (signal, old) in saved {
        // SAFETY: restoring what sigaction returned.
        let _ = unsafe { nix::sys::signal::sigaction(signal, &old) };
    }
}

/// Delivers a signal that arrived before the target existed.
pub fn deliver_pending(target: &AtomicI32) {
    let signal = PENDING.swap(0, Ordering::SeqCst);
    let pid = target.load(Ordering::SeqCst);
    if signal > 0 && pid > 0 {
        send(pid, signal);
    }
}

/// Every signal back to its default disposition and unblocked (for the agent).
pub fn reset_signals() {
    // The standard signals, 1 to 31 (glibc keeps 32 and 33 for itself).
    for signal in Signal::iterator() {
        if signal == Signal::SIGKILL || signal == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: the default disposition installs no handler.
        let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) };
    }
    // An empty set unblocks everything.
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Ignores `signal` (SIGPIPE, for the forwarder).
pub fn ignore_signal(signal: Signal) {
    // SAFETY: ignoring a signal installs no handler.
    let _ = unsafe { nix::sys::signal::signal(signal, SigHandler::SigIgn) };
}

// --------------------------------------------------------------- namespaces

/// Whether this process may create a user namespace and use it to mount:
/// tried in a forked child (safe from a multi-threaded process: the child
/// makes only system calls, through nix wrappers that do not allocate here:
/// the paths are C strings already). `Err((step, errno))`.
pub fn try_userns() -> Result<(), (&'static str, i32)> {
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    let uid_map = format!("{uid} {uid} 1");
    let gid_map = format!("{gid} {gid} 1");
    let files: [(&CStr, &[u8]); 3] = [
        (c"/proc/self/setgroups", b"deny"),
        (c"/proc/self/uid_map", uid_map.as_bytes()),
        (c"/proc/self/gid_map", gid_map.as_bytes()),
    ];
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|errno| ("pipe", errno as i32))?;
    // SAFETY: the child only makes async-signal-safe system calls, then _exit.
    let child = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            let fail = |step: u8, errno: nix::errno::Errno| -> ! {
                let _ = nix::unistd::write(&write_end, &[step, errno as i32 as u8]);
                exit_child(1)
            };
            if let Err(errno) =
                nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
            {
                fail(0, errno);
            }
            for (path, content) in files {
                let written =
                    nix::fcntl::open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
                        .and_then(|fd| nix::unistd::write(&fd, content));
                if let Err(errno) = written {
                    fail(1, errno);
                }
            }
            if let Err(errno) = nix::mount::mount(
                None::<&CStr>,
                c"/",
                None::<&CStr>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&CStr>,
            ) {
                fail(2, errno);
            }
            exit_child(0)
        }
        Ok(ForkResult::Parent { child }) => child.as_raw(),
        Err(errno) => return Err(("fork", errno as i32)),
    };
    drop(write_end);
    let mut status = 0;
    while waitpid(child, &mut status).is_err_and(|error| error.kind() == io::ErrorKind::Interrupted)
    {
    }
    let mut report = [0u8; 2];
    let read = nix::unistd::read(&read_end, &mut report).unwrap_or(0);
    drop(read_end);
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        return Ok(());
    }
    let step = match (read, report[0]) {
        (2, 0) => "unshare",
        (2, 1) => "uid/gid map",
        (2, 2) => "mount",
        _ => "probe",
    };
    Err((step, if read == 2 { report[1] as i32 } else { 0 }))
}

/// The Landlock ABI version, or the errno that says why there is none.
pub fn landlock_abi() -> Result<i32, i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: the version query takes no pointer (nix has no Landlock call,
    // and the landlock crate does not say why the kernel refused).
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if abi < 0 {
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOSYS))
    } else {
        Ok(abi as i32)
    }
}

/// Brings the loopback interface of a new network namespace up.
fn loopback_up() -> io::Result<()> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, socket};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ioctls on a socket we own, with a zeroed ifreq (nix has no
    // wrapper for the interface flags).
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, byte) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *byte as libc::c_char;
        }
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req))?;
    }
    Ok(())
}

// ------------------------------------------------------------------- mounts

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    Ok(nix::mount::mount(source, target, fstype, flags, data)?)
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;

/// Makes the mount at `path` and every mount below it read-only (and
/// nosuid). Falls back to a remount of the top mount on kernels before 5.12.
fn make_read_only(path: &Path) -> io::Result<()> {
    let c_path = cstr(path)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: pointer and size of a live, correctly laid out struct (nix
    // has no mount_setattr).
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::ENOSYS) {
        return Err(error);
    }
    // Keep the flags the kernel locked on the source mount. The ST_ bits are
    // passed as they are, as before nix: ST_NODEV, ST_NOEXEC and ST_NOATIME
    // equal their MS_ flags; ST_RELATIME's value is MS_BIND's, already set
    // (and relatime is a remount's default).
    use nix::sys::statvfs::FsFlags;
    let stat = nix::sys::statvfs::statvfs(path)?;
    let keep = stat.flags()
        & (FsFlags::ST_NODEV | FsFlags::ST_NOEXEC | FsFlags::ST_NOATIME | FsFlags::ST_RELATIME);
    mount(
        None,
        path,
        None,
        MsFlags::MS_REMOUNT
            | MsFlags::MS_BIND
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::from_bits_retain(keep.bits()),
        None,
    )
}

// ------------------------------------------------------------- privileges

pub fn set_no_new_privs() -> io::Result<()> {
    Ok(nix::sys::prctl::set_no_new_privs()?)
}

pub fn set_parent_death_signal(signal: Signal) -> io::Result<()> {
    Ok(nix::sys::prctl::set_pdeathsig(signal)?)
}

/// Drops every capability: bounding set, ambient set, then effective,
/// permitted and inheritable.
pub fn drop_capabilities() -> io::Result<()> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse::<libc::c_int>().ok())
        .unwrap_or(63);
    // nix has no wrapper for the bounding set, the ambient set or capset.
    for cap in 0..=last {
        // SAFETY: plain prctl. EINVAL: a capability this kernel does not know.
        let result = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if result == -1 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EINVAL) {
                return Err(error);
            }
        }
    }
    // SAFETY: plain prctl.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    })?;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and two data structs, as capset(2) expects for v3.
    let result = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    if result == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
