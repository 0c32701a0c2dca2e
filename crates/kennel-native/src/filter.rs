//! The seccomp filter: system calls the agent may not make.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Refused with EPERM: debugging other processes, (un)mounting, new or other
/// namespaces, the kernel keyring, BPF, perf, io_uring (which bypasses
/// seccomp for its own operations), kexec, kernel modules, changing the root,
/// and opening files by handle (which bypasses path checks).
pub const DENIED_SYSCALLS: &[(&str, i64)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("syslog", libc::SYS_syslog),
    ("acct", libc::SYS_acct),
];

/// Answered with ENOSYS so that the C library falls back to a call the
/// filter can inspect: `clone3` passes its flags in memory, where seccomp
/// cannot see a namespace flag; glibc then uses `clone`.
pub const NOSYS_SYSCALLS: &[(&str, i64)] = &[("clone3", libc::SYS_clone3)];

/// ioctl requests refused with EPERM: pushing input into the terminal (which
/// would run commands in the user's shell after kennel exits) and the Linux
/// console's equivalent.
#[allow(clippy::unnecessary_cast)] // c_ulong on some targets, c_int on others
pub const DENIED_IOCTLS: &[(&str, u64)] = &[
    ("TIOCSTI", libc::TIOCSTI as u64),
    ("TIOCLINUX", libc::TIOCLINUX as u64),
];

/// `clone` flags that make a namespace; clone with any of them is refused.
const NAMESPACE_FLAGS: &[i32] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
    0x80, // CLONE_NEWTIME
];

fn arch() -> Result<TargetArch, String> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|error| format!("seccomp: unsupported architecture: {error:?}"))
}

/// The filters to install, in order (each is installed; the kernel applies
/// the strictest answer).
pub fn build_filters() -> Result<Vec<BpfProgram>, String> {
    let error = |what: &str, error: seccompiler::BackendError| format!("seccomp {what}: {error}");
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED_SYSCALLS
        .iter()
        .map(|(_, number)| (*number, Vec::new()))
        .collect();
    let ioctl_rules = DENIED_IOCTLS
        .iter()
        .map(|(_, request)| {
            SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, *request)
                .and_then(|condition| SeccompRule::new(vec![condition]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error("ioctl rule", e))?;
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            let flag = *flag as u64;
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|condition| SeccompRule::new(vec![condition]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error("clone rule", e))?;
    rules.insert(libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )
    .map_err(|e| error("filter", e))?;
    let mut deny: BpfProgram = deny.try_into().map_err(|e| error("filter", e))?;
    guard_x32(&mut deny);

    let nosys = SeccompFilter::new(
        NOSYS_SYSCALLS
            .iter()
            .map(|(_, number)| (*number, Vec::new()))
            .collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(|e| error("filter", e))?;
    let nosys: BpfProgram = nosys.try_into().map_err(|e| error("filter", e))?;
    Ok(vec![deny, nosys])
}

/// On x86_64 the x32 ABI shares the architecture tag but numbers its calls
/// from 0x40000000: refuse them all, or they would bypass the list above.
fn guard_x32(program: &mut BpfProgram) {
    if std::env::consts::ARCH != "x86_64" {
        return;
    }
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JMP_JGE_K: u16 = 0x05 | 0x30;
    const RET_K: u16 = 0x06;
    let guard = [
        seccompiler::sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0, // seccomp_data.nr
        },
        seccompiler::sock_filter {
            code: JMP_JGE_K,
            jt: 0,
            jf: 1,
            k: 0x4000_0000,
        },
        seccompiler::sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
    ];
    // After the three-instruction architecture check seccompiler starts with.
    let at = 3.min(program.len());
    program.splice(at..at, guard);
}

/// Installs the filters on the calling thread (no-new-privileges must be set).
pub fn apply(filters: &[BpfProgram]) -> Result<(), String> {
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(|error| format!("seccomp: {error}"))?;
    }
    Ok(())
}
