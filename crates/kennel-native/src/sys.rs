//! Thin wrappers over the system calls the native backend makes.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

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

pub fn memfd(name: &str) -> io::Result<OwnedFd> {
    let name = CString::new(name).expect("no NUL");
    // SAFETY: plain system call; the descriptor is owned by the result.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    check(fd)?;
    // SAFETY: fd is a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ------------------------------------------------------------------ signals

/// Signals relayed to the sandbox. SIGWINCH is not: the agent shares the
/// terminal and gets it from the kernel.
pub const FORWARDED: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

static mut TARGET: *const AtomicI32 = std::ptr::null();
static PENDING: AtomicI32 = AtomicI32::new(0);

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
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    } else {
        PENDING.store(signal, Ordering::SeqCst);
    }
}

pub type Saved = Vec<(libc::c_int, libc::sigaction)>;

/// Relays [`FORWARDED`] signals to the pid in `target` (held until it is set).
/// Sets both the soft and the hard limit of `resource` to `value`.
pub fn set_rlimit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: value as libc::rlim_t,
        rlim_max: value as libc::rlim_t,
    };
    // SAFETY: a valid rlimit struct.
    if unsafe { libc::setrlimit(resource, &limit) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn install_forwarders(target: &'static AtomicI32) -> Saved {
    // SAFETY: written once, before any handler that reads it is installed.
    unsafe { TARGET = target };
    let mut saved = Vec::new();
    for &signal in FORWARDED {
        // SAFETY: a zeroed sigaction is valid; we fill in handler and flags.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                forward;
            action.sa_sigaction = handler as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, &action, &mut old) == 0 {
                saved.push((signal, old));
            }
        }
    }
    saved
}

pub fn restore_handlers(saved: Saved) {
    for (signal, old) in saved {
        // SAFETY: restoring what sigaction returned.
        unsafe { libc::sigaction(signal, &old, std::ptr::null_mut()) };
    }
}

/// Delivers a signal that arrived before the target existed.
pub fn deliver_pending(target: &AtomicI32) {
    let signal = PENDING.swap(0, Ordering::SeqCst);
    let pid = target.load(Ordering::SeqCst);
    if signal > 0 && pid > 0 {
        // SAFETY: plain kill.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Every signal back to its default disposition and unblocked (for the agent).
pub fn reset_signals() {
    for signal in 1..libc::SIGRTMIN() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: resetting a disposition is always valid.
        unsafe { libc::signal(signal, libc::SIG_DFL) };
    }
    // SAFETY: an empty set unblocks everything.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

// --------------------------------------------------------------- namespaces

pub fn write_file(path: &str, content: &str) -> io::Result<()> {
    std::fs::write(path, content)
}

/// Whether this process may create a user namespace and use it to mount:
/// tried in a forked child (safe from a multi-threaded process: the child
/// makes only raw system calls). `Err((step, errno))`.
pub fn try_userns() -> Result<(), (&'static str, i32)> {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let uid_map = format!("{uid} {uid} 1");
    let gid_map = format!("{gid} {gid} 1");
    let paths = [
        c"/proc/self/setgroups".as_ptr(),
        c"/proc/self/uid_map".as_ptr(),
        c"/proc/self/gid_map".as_ptr(),
    ];
    let contents: [&[u8]; 3] = [b"deny", uid_map.as_bytes(), gid_map.as_bytes()];
    let mut pipe = [0; 2];
    // SAFETY: plain system call.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err((
            "pipe",
            io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    // SAFETY: the child only makes async-signal-safe system calls, then _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe {
            let fail = |step: u8| -> ! {
                let errno = *libc::__errno_location();
                let report = [step, errno as u8];
                libc::write(pipe[1], report.as_ptr().cast(), 2);
                libc::_exit(1)
            };
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) == -1 {
                fail(0);
            }
            for i in 0..3 {
                let fd = libc::open(paths[i], libc::O_WRONLY | libc::O_CLOEXEC);
                if fd == -1 || libc::write(fd, contents[i].as_ptr().cast(), contents[i].len()) == -1
                {
                    fail(1);
                }
                libc::close(fd);
            }
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == -1
            {
                fail(2);
            }
            libc::_exit(0);
        }
    }
    // SAFETY: closing our copy of the write end.
    unsafe { libc::close(pipe[1]) };
    if pid == -1 {
        unsafe { libc::close(pipe[0]) };
        return Err((
            "fork",
            io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } == -1
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    let mut report = [0u8; 2];
    // SAFETY: reading into a local buffer.
    let read = unsafe { libc::read(pipe[0], report.as_mut_ptr().cast(), 2) };
    unsafe { libc::close(pipe[0]) };
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
    // SAFETY: the version query takes no pointer.
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

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: plain system call.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// Joins the namespace `fd` refers to (`kind`: one `CLONE_NEW*` flag).
pub fn setns(fd: &OwnedFd, kind: libc::c_int) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain system call on a descriptor we own.
    check(unsafe { libc::setns(fd.as_raw_fd(), kind) }).map(drop)
}

/// Makes the directory `fd` refers to this process's root (and working
/// directory), as `nsenter --root` does.
pub fn chroot_to(fd: &OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain system calls; the path is a NUL-terminated literal.
    check(unsafe { libc::fchdir(fd.as_raw_fd()) })?;
    check(unsafe { libc::chroot(c".".as_ptr()) })?;
    check(unsafe { libc::chdir(c"/".as_ptr()) }).map(drop)
}

/// The host name of this process's UTS namespace.
pub fn hostname() -> io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: pointer and length of a live buffer.
    check(unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) })?;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length of a live buffer.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// Brings the loopback interface of a new network namespace up.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: an ioctl on a socket we own, with a zeroed ifreq.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        check(sock)?;
        let sock = OwnedFd::from_raw_fd(sock);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, byte) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *byte as libc::c_char;
        }
        use std::os::fd::AsRawFd;
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req))?;
    }
    Ok(())
}

// ------------------------------------------------------------------- mounts

pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(|f| CString::new(f).expect("no NUL"));
    let data = data.map(|d| CString::new(d).expect("no NUL"));
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: all pointers are NUL-terminated strings or null.
    check(unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    })
    .map(drop)
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
pub fn make_read_only(path: &Path) -> io::Result<()> {
    let c_path = cstr(path)?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: pointer and size of a live, correctly laid out struct.
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
    // Keep the flags the kernel locked on the source mount.
    // SAFETY: statvfs into a zeroed struct.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    check(unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) })?;
    let keep =
        stat.f_flag & (libc::ST_NODEV | libc::ST_NOEXEC | libc::ST_NOATIME | libc::ST_RELATIME);
    mount(
        None,
        path,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | keep,
        None,
    )
}

pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let new_root = cstr(new_root)?;
    let put_old = cstr(put_old)?;
    // SAFETY: two NUL-terminated paths.
    let result =
        unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    if result == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn umount_detach(path: &Path) -> io::Result<()> {
    let path = cstr(path)?;
    // SAFETY: one NUL-terminated path.
    check(unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

// ------------------------------------------------------------- privileges

pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: plain prctl.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

pub fn set_parent_death_signal(signal: libc::c_int) -> io::Result<()> {
    // SAFETY: plain prctl.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) }).map(drop)
}

/// Drops every capability: bounding set, ambient set, then effective,
/// permitted and inheritable.
pub fn drop_capabilities() -> io::Result<()> {
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse::<libc::c_int>().ok())
        .unwrap_or(63);
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
