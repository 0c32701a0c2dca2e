//! The seccomp policy of kennel's Incus sandboxes (`raw.seccomp`, which
//! replaces Incus's generated policy as a whole, so it carries Incus's
//! default refusals too). The same refusals as the native backend's filter
//! and the engines' profile: `kennel verify` found Incus's default letting
//! `clone` make a user namespace and TIOCSTI push terminal input.

/// Refused with EPERM (the native backend's list).
const DENIED: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount",
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
    "quotactl",
    "lookup_dcookie",
];

/// `clone` flags that make a namespace.
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // NEWNS
    0x0200_0000, // NEWCGROUP
    0x0400_0000, // NEWUTS
    0x0800_0000, // NEWIPC
    0x1000_0000, // NEWUSER
    0x2000_0000, // NEWPID
    0x4000_0000, // NEWNET
];

/// TIOCSTI and TIOCLINUX, compared on the request's 32 bits.
const DENIED_IOCTLS: &[u64] = &[0x5412, 0x541C];

/// The policy, in liblxc's seccomp format (version 2, a deny list).
pub fn policy() -> String {
    let mut policy = String::from("2\ndenylist\nreject_force_umount\n[all]\n");
    for name in DENIED {
        policy.push_str(&format!("{name} errno 1\n"));
    }
    // glibc falls back to clone when clone3 does not exist; clone3's flags
    // are in memory, where a filter cannot read them.
    policy.push_str("clone3 errno 38\n");
    for flag in CLONE_NAMESPACE_FLAGS {
        policy.push_str(&format!(
            "clone errno 1 [0,{flag},SCMP_CMP_MASKED_EQ,{flag}]\n"
        ));
    }
    for request in DENIED_IOCTLS {
        policy.push_str(&format!(
            "ioctl errno 1 [1,4294967295,SCMP_CMP_MASKED_EQ,{request}]\n"
        ));
    }
    policy
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_policy_refuses_namespaces_and_terminal_injection() {
        let policy = super::policy();
        assert!(policy.starts_with("2\ndenylist\n"));
        for line in [
            "ptrace errno 1",
            "unshare errno 1",
            "io_uring_setup errno 1",
            "clone errno 1 [0,268435456,SCMP_CMP_MASKED_EQ,268435456]",
            "ioctl errno 1 [1,4294967295,SCMP_CMP_MASKED_EQ,21522]",
            "clone3 errno 38",
        ] {
            assert!(policy.lines().any(|l| l == line), "{line}\n{policy}");
        }
    }
}
