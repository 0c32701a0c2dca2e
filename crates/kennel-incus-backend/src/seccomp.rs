//! The seccomp policy of kennel's Incus sandboxes (`raw.seccomp`, which
//! replaces Incus's generated policy as a whole, so it carries Incus's
//! default refusals too). The same refusals as the native backend's filter
//! and the engines' profile: `kennel verify` found Incus's default letting
//! `clone` make a user namespace and TIOCSTI push terminal input.

use kennel_core::seccomp::{CLONE_NAMESPACE_FLAGS, REFUSED_IOCTLS, REFUSED_SYSCALLS};

/// Refused besides kennel's list: the old umount and two Incus refuses by
/// default (its generated policy is replaced as a whole).
const ALSO_REFUSED: &[&str] = &["umount", "quotactl", "lookup_dcookie"];

/// The policy, in liblxc's seccomp format (version 2, a deny list).
pub fn policy() -> String {
    let mut policy = String::from("2\ndenylist\nreject_force_umount\n[all]\n");
    for name in REFUSED_SYSCALLS.iter().chain(ALSO_REFUSED) {
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
    for request in REFUSED_IOCTLS {
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
