//! What this kernel offers the native backend, found by trying it.

use serde::{Deserialize, Serialize};

/// One kernel feature the sandbox needs and does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missing {
    /// `user namespaces`, `landlock` or `seccomp`.
    pub feature: String,
    /// Why it is missing, in one sentence.
    pub cause: String,
    /// How to get it.
    pub fix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NativeProbe {
    /// Everything the full sandbox needs is there.
    pub available: bool,
    /// One sentence for `kennel doctor`.
    pub reason: String,
    pub fix: Option<String>,
    /// Unprivileged user namespaces work (and give capabilities inside).
    pub userns: bool,
    /// The Landlock ABI version, when Landlock is enabled.
    pub landlock_abi: Option<i32>,
    /// Seccomp filters can be installed.
    pub seccomp: bool,
    /// What is missing, with causes and fixes.
    pub missing: Vec<Missing>,
}

/// Probes the kernel. Safe to call from a multi-threaded process: the user
/// namespace test runs in a forked child.
pub fn probe() -> NativeProbe {
    probe_with(probe_userns)
}

pub(crate) fn from_parts(
    userns: bool,
    landlock_abi: Option<i32>,
    seccomp: bool,
    missing: Vec<Missing>,
) -> NativeProbe {
    let available = missing.is_empty();
    let reason = if available {
        format!(
            "user namespaces, Landlock ABI {} and seccomp available",
            landlock_abi.unwrap_or_default()
        )
    } else {
        missing
            .iter()
            .map(|miss| format!("{}: {}", miss.feature, miss.cause))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let fix = (!available).then(|| {
        missing
            .iter()
            .map(|miss| miss.fix.clone())
            .collect::<Vec<_>>()
            .join("; ")
    });
    NativeProbe {
        available,
        reason,
        fix,
        userns,
        landlock_abi,
        seccomp,
        missing,
    }
}

fn read_number(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn userns_missing(cause: impl Into<String>, fix: impl Into<String>) -> Missing {
    Missing {
        feature: "user namespaces".into(),
        cause: cause.into(),
        fix: fix.into(),
    }
}

/// The probe `kennel run` uses on every start: the same checks, minus the
/// forked user-namespace trial (the helper's own `unshare` is that trial, and
/// it fails closed with the same cause and fix).
pub fn probe_for_run() -> NativeProbe {
    probe_with(userns_sysctls)
}

fn probe_with(userns_check: fn() -> Result<(), Missing>) -> NativeProbe {
    let mut missing = Vec::new();
    let userns = userns_check().map_err(|miss| missing.push(miss)).is_ok();
    let landlock_abi = probe_landlock().map_err(|miss| missing.push(miss)).ok();
    let seccomp = probe_seccomp().map_err(|miss| missing.push(miss)).is_ok();
    from_parts(userns, landlock_abi, seccomp, missing)
}

fn probe_userns() -> Result<(), Missing> {
    userns_sysctls()?;
    crate::sys::try_userns().map_err(|(step, errno)| userns_refused(step, errno))
}

fn userns_sysctls() -> Result<(), Missing> {
    if read_number("/proc/sys/user/max_user_namespaces") == Some(0) {
        return Err(userns_missing(
            "user.max_user_namespaces is 0",
            "sysctl -w user.max_user_namespaces=15000",
        ));
    }
    if read_number("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return Err(userns_missing(
            "kernel.unprivileged_userns_clone is 0",
            "sysctl -w kernel.unprivileged_userns_clone=1",
        ));
    }
    Ok(())
}

/// What to tell the user when the kernel refuses a user namespace.
pub(crate) fn userns_refused(step: &str, errno: i32) -> Missing {
    let apparmor = read_number("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1);
    let error = std::io::Error::from_raw_os_error(errno);
    if apparmor {
        userns_missing(
            format!("AppArmor restricts unprivileged user namespaces ({step}: {error})"),
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or give kennel an \
             AppArmor profile that allows `userns`",
        )
    } else {
        userns_missing(
            format!("the kernel refused an unprivileged user namespace ({step}: {error})"),
            "run kennel on the host rather than inside a container (or a seccomp profile \
             that forbids unshare), or use --backend docker/podman",
        )
    }
}

fn probe_landlock() -> Result<i32, Missing> {
    match crate::sys::landlock_abi() {
        Ok(abi) => Ok(abi),
        Err(errno) if errno == libc::EOPNOTSUPP => Err(Missing {
            feature: "landlock".into(),
            cause: "Landlock is built into the kernel but not enabled".into(),
            fix: "add landlock to the kernel's lsm= boot parameter (for example \
                  lsm=landlock,lockdown,yama,integrity,apparmor,bpf)"
                .into(),
        }),
        Err(errno) => Err(Missing {
            feature: "landlock".into(),
            cause: format!(
                "this kernel has no Landlock ({})",
                std::io::Error::from_raw_os_error(errno)
            ),
            fix: "use Linux 5.13 or newer built with CONFIG_SECURITY_LANDLOCK (6.7+ recommended)"
                .into(),
        }),
    }
}

fn probe_seccomp() -> Result<(), Missing> {
    // SAFETY: PR_GET_SECCOMP only reads the calling thread's mode (nix has
    // no wrapper for it).
    let mode = unsafe { libc::prctl(libc::PR_GET_SECCOMP) };
    if mode >= 0 {
        Ok(())
    } else {
        Err(Missing {
            feature: "seccomp".into(),
            cause: "this kernel has no seccomp filters".into(),
            fix: "use a kernel built with CONFIG_SECCOMP_FILTER".into(),
        })
    }
}
