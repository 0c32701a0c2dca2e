//! What every backend's seccomp policy refuses (the native filter, the
//! engines' profile and Incus's `raw.seccomp` are each built for their
//! loader; these lists are what they must agree on, and `kennel verify`
//! tries them).

/// System calls refused with EPERM: debugging other processes, (un)mounting
/// and the new mount API, new or other namespaces, the kernel keyring, BPF,
/// perf, io_uring (whose operations bypass seccomp), kexec, kernel modules,
/// changing the root, opening files by handle, userfaultfd, and the
/// machine-wide calls (reboot, swap, syslog, acct).
pub const REFUSED_SYSCALLS: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "unshare",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "pivot_root",
    "chroot",
    "open_by_handle_at",
    "userfaultfd",
    "reboot",
    "swapon",
    "swapoff",
    "syslog",
    "acct",
];

/// `clone` flags that make a namespace: a clone with any of them is refused
/// (NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET).
pub const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000,
    0x0200_0000,
    0x0400_0000,
    0x0800_0000,
    0x1000_0000,
    0x2000_0000,
    0x4000_0000,
];

/// ioctl requests refused: pushing input into a terminal (TIOCSTI) and the
/// Linux console's equivalent (TIOCLINUX). The kernel reads the request as
/// 32 bits, so filters compare it under that mask.
pub const REFUSED_IOCTLS: &[u64] = &[0x5412, 0x541C];
