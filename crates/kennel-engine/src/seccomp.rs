//! kennel's own seccomp profile for Docker and Podman sandboxes.
//!
//! The engines' default profiles differ and each leaves something open that
//! kennel's native backend refuses: Docker 20.10's allows `ptrace` (an agent
//! can stop or rewrite the sandbox's init and proxy relay) and io_uring
//! (whose operations bypass seccomp); Podman's allows `unshare` and `clone`
//! into a new user namespace (the kernel's namespace code as attack
//! surface) and the kernel keyring. `kennel verify` found each of these.
//! This profile is one allowlist for both engines: everything an agent
//! needs, nothing that makes namespaces, traces processes, reaches the
//! keyring, BPF, perf or io_uring, and no terminal input injection.
//!
//! Docker takes the profile's JSON in `SecurityOpt`; Podman takes a path
//! to it (its compat API opens the value as a file).

use std::path::Path;

use kennel_core::seccomp::{CLONE_NAMESPACE_FLAGS, REFUSED_IOCTLS};
use serde_json::{Value, json};

use crate::connect::{Engine, EngineKind};
use crate::error::EngineError;

impl Engine {
    /// The `SecurityOpt` that applies kennel's profile on this engine:
    /// Docker is handed the JSON, Podman a file (written at `path` when it
    /// is missing or differs, replaced atomically).
    pub(crate) fn seccomp_option(&self, path: &Path) -> Result<String, EngineError> {
        // Built once per process (a session's kennel may create several
        // containers).
        static JSON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let json = JSON.get_or_init(|| profile().to_string());
        match self.kind {
            EngineKind::Docker => Ok(format!("seccomp={json}")),
            EngineKind::Podman => {
                write_profile(path, json)
                    .map_err(|err| EngineError::io("writing kennel's seccomp profile", err))?;
                let path = path.to_str().ok_or_else(|| {
                    EngineError::InvalidPlan(format!(
                        "the seccomp profile's path {} is not UTF-8",
                        path.display()
                    ))
                })?;
                Ok(format!("seccomp={path}"))
            }
        }
    }
}

fn write_profile(path: &Path, json: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|current| current == json) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let staged = dir.join(format!(".kennel.json.{}", std::process::id()));
    std::fs::write(&staged, json)?;
    std::fs::rename(&staged, path)
}

/// Syscalls every architecture may make (names the running architecture
/// does not have are skipped by the engines' loaders).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    // Architecture-specific (skipped where they do not exist).
    "arch_prctl",
    "modify_ldt",
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];

/// `personality` values that change nothing dangerous (Linux, UNAME26,
/// ADDR_NO_RANDOMIZE and both, and the query).
const PERSONALITIES: &[u64] = &[0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

const AF_VSOCK: u64 = 40;

/// The profile as the engines read it (Docker's and OCI's JSON form).
pub fn profile() -> Value {
    let mut syscalls = vec![json!({ "names": ALLOWED, "action": "SCMP_ACT_ALLOW" })];
    syscalls.push(json!({
        "names": ["socket"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{ "index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_NE" }],
    }));
    for personality in PERSONALITIES {
        syscalls.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": personality, "op": "SCMP_CMP_EQ" }],
        }));
    }
    syscalls.push(json!({
        "names": ["clone"],
        "action": "SCMP_ACT_ALLOW",
        "args": [{
            "index": 0,
            "value": CLONE_NAMESPACE_FLAGS.iter().fold(0, |mask, flag| mask | flag),
            "valueTwo": 0,
            "op": "SCMP_CMP_MASKED_EQ",
        }],
    }));
    // glibc falls back to clone when clone3 says it does not exist; clone3's
    // flags are in memory, where a filter cannot read them.
    syscalls
        .push(json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS }));
    // A rule that allows ioctl and another that refuses some requests do
    // not combine in the engines' loaders (the unconditional allow wins), so
    // ioctl is allowed by rules that together match every request but the
    // denied ones.
    for (mask, value) in masks_excluding(REFUSED_IOCTLS) {
        syscalls.push(json!({
            "names": ["ioctl"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 1, "value": mask, "valueTwo": value, "op": "SCMP_CMP_MASKED_EQ" }],
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "archMap": [
            { "architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"] },
            { "architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"] },
            { "architecture": "SCMP_ARCH_S390X", "subArchitectures": ["SCMP_ARCH_S390"] },
            { "architecture": "SCMP_ARCH_RISCV64", "subArchitectures": null },
            { "architecture": "SCMP_ARCH_PPC64LE", "subArchitectures": null },
        ],
        "syscalls": syscalls,
    })
}

/// (mask, value) pairs whose matches (`x & mask == value`) together are
/// every 32-bit value except `denied`: walking the bits from the lowest, a
/// branch that no denied value follows is one pair.
fn masks_excluding(denied: &[u64]) -> Vec<(u64, u64)> {
    fn walk(bit: u32, mask: u64, value: u64, denied: Vec<u64>, out: &mut Vec<(u64, u64)>) {
        if denied.is_empty() {
            out.push((mask, value));
            return;
        }
        if bit == 32 {
            return; // exactly a denied value
        }
        let this = 1u64 << bit;
        for set in [0, this] {
            let following = denied.iter().copied().filter(|d| d & this == set).collect();
            walk(bit + 1, mask | this, value | set, following, out);
        }
    }
    let mut out = Vec::new();
    walk(
        0,
        0,
        0,
        denied.iter().map(|d| d & 0xffff_ffff).collect(),
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kennel_core::seccomp::REFUSED_SYSCALLS;

    #[test]
    fn refuses_what_kennel_promises_and_allows_what_agents_need() {
        let profile = profile();
        assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
        let allowed: Vec<&str> = profile["syscalls"]
            .as_array()
            .expect("syscalls")
            .iter()
            .filter(|rule| rule["action"] == "SCMP_ACT_ALLOW" && rule.get("args").is_none())
            .flat_map(|rule| rule["names"].as_array().expect("names").iter())
            .filter_map(Value::as_str)
            .collect();
        for refused in
            REFUSED_SYSCALLS
                .iter()
                .copied()
                .chain(["clone", "clone3", "personality", "socket"])
        {
            assert!(
                !allowed.contains(&refused),
                "{refused} allowed unconditionally"
            );
        }
        for needed in [
            "read",
            "execve",
            "openat",
            "wait4",
            "landlock_restrict_self",
            "seccomp",
        ] {
            assert!(allowed.contains(&needed), "{needed} not allowed");
        }
        let allows = |request: u64| {
            masks_excluding(REFUSED_IOCTLS)
                .iter()
                .any(|(mask, value)| request & mask == *value)
        };
        for denied in REFUSED_IOCTLS {
            assert!(!allows(*denied) && !allows(denied | 0xabcd_0000_0000));
        }
        for other in [
            0u64,
            0x5413,
            0x5411,
            0x541d,
            0x8004_5430,
            0xffff_ffff,
            0x5401,
        ] {
            assert!(allows(other), "{other:#x}");
        }
        if let Ok(path) = std::env::var("KENNEL_WRITE_SECCOMP_PROFILE") {
            std::fs::write(path, profile.to_string()).expect("write");
        }
    }
}
