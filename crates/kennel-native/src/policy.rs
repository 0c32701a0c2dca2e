//! Fail closed: which layers a run uses, or a refusal naming cause and fix.

use serde::{Deserialize, Serialize};

use crate::NativeError;
use crate::probe::NativeProbe;

/// The layers a native run applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// User, mount, PID, IPC, UTS (and network) namespaces with a new root.
    pub namespaces: bool,
    pub landlock: bool,
    pub seccomp: bool,
    /// What the user must be told on this run (the sandbox is weaker).
    pub warnings: Vec<String>,
}

/// Everything present: the full sandbox. Something missing: refuse, unless
/// the user accepted a weaker sandbox, which is then spelled out.
pub fn decide(probe: &NativeProbe, allow_weaker: bool) -> Result<Decision, NativeError> {
    if probe.missing.is_empty() {
        return Ok(Decision {
            namespaces: true,
            landlock: true,
            seccomp: true,
            warnings: Vec::new(),
        });
    }
    if !allow_weaker {
        let cause = probe
            .missing
            .iter()
            .map(|miss| format!("{} unavailable: {}", miss.feature, miss.cause))
            .collect::<Vec<_>>()
            .join("; ");
        let mut fix = probe
            .missing
            .iter()
            .map(|miss| miss.fix.clone())
            .collect::<Vec<_>>()
            .join("; ");
        fix.push_str(
            "; or use --backend docker/podman, or accept a weaker sandbox with --allow-weaker-sandbox",
        );
        return Err(NativeError::Unavailable { cause, fix });
    }
    let mut warnings = Vec::new();
    if !probe.userns {
        warnings.push(
            "WEAKER SANDBOX (--allow-weaker-sandbox): no user namespaces, so no private \
             filesystem view: the agent can READ everything your user can read on this machine \
             (including ~/.ssh), shares your processes and network (no network policy: \
             the agent can connect anywhere your user can)"
                .to_string(),
        );
    }
    if probe.landlock_abi.is_none() {
        warnings.push(
            "WEAKER SANDBOX (--allow-weaker-sandbox): no Landlock, so writes are limited by \
             read-only mounts alone"
                .to_string(),
        );
    }
    if !probe.seccomp {
        warnings.push(
            "WEAKER SANDBOX (--allow-weaker-sandbox): no seccomp filter: dangerous system calls \
             (ptrace, mount, unshare, bpf, …) are not blocked"
                .to_string(),
        );
    }
    if !probe.userns && probe.landlock_abi.is_none() {
        warnings.push(
            "WEAKER SANDBOX: neither namespaces nor Landlock: the agent can also WRITE \
             everywhere your user can"
                .to_string(),
        );
    }
    Ok(Decision {
        namespaces: probe.userns,
        landlock: probe.landlock_abi.is_some(),
        seccomp: probe.seccomp,
        warnings,
    })
}
