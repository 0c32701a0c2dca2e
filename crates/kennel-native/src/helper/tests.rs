//! The helper's decisions against a recording kernel ([`Recorder`]): the
//! exact system calls that build the root, make the namespaces and start
//! the agent, and the errors that name what failed. No root needed.

use std::io;

use kennel_core::plan::{EnvVar, NetworkMode};

use super::*;
use crate::layout::Layout;
use crate::sys::recorder::Recorder;
use crate::tests::{plan, typical_mounts, usrmerge_host};

fn typical_layout() -> Layout {
    plan_layout(&plan(typical_mounts()), &usrmerge_host()).expect("layout")
}

fn error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn kennel_failure(message: String) -> Failure {
    Failure(EXIT_KENNEL, message)
}

/// The root of a Plan with the agent's home, a workspace, protected git
/// paths in it, an identity file (not mounted: the native backend uses the
/// host's own) and a host config file, on a usrmerge host.
#[test]
fn build_root_makes_the_layout_in_order() {
    let kernel = Recorder::new();
    build_root(&kernel, &typical_layout()).expect("built");
    let expected = [
        // A private tree, and a stage with the host's root under /oldroot.
        "mount - / - MS_REC|MS_PRIVATE -",
        "mount tmpfs /tmp tmpfs MS_NOSUID|MS_NODEV mode=0755",
        "mkdir /tmp/newroot",
        "mkdir /tmp/oldroot",
        "pivot_root /tmp /tmp/oldroot",
        "chdir /",
        "mount tmpfs /newroot tmpfs MS_NOSUID|MS_NODEV mode=0755",
        // The host's system directories, read-only; usrmerge's links kept.
        "mkdir_all /newroot/usr",
        "mount /oldroot/usr /newroot/usr - MS_BIND|MS_REC -",
        "make_read_only /newroot/usr",
        "mkdir_all /newroot",
        "symlink /newroot/bin -> usr/bin",
        "mkdir_all /newroot",
        "symlink /newroot/sbin -> usr/sbin",
        "mkdir_all /newroot",
        "symlink /newroot/lib -> usr/lib",
        "mkdir_all /newroot",
        "symlink /newroot/lib64 -> usr/lib64",
        "mkdir_all /newroot/etc",
        "mount /oldroot/etc /newroot/etc - MS_BIND|MS_REC -",
        "make_read_only /newroot/etc",
        "mkdir_all /newroot/opt",
        "mount /oldroot/opt /newroot/opt - MS_BIND|MS_REC -",
        "make_read_only /newroot/opt",
        // A fresh /proc, a /dev of a few devices, a private /tmp.
        "mkdir_all /newroot/proc",
        "mount proc /newroot/proc proc MS_NOSUID|MS_NODEV|MS_NOEXEC -",
        "mkdir_all /newroot/dev",
        "mount tmpfs /newroot/dev tmpfs MS_NOSUID|MS_NODEV mode=755",
        "mkdir_all /newroot/dev",
        "create_file /newroot/dev/null",
        "mount /oldroot/dev/null /newroot/dev/null - MS_BIND|MS_REC -",
        "mkdir_all /newroot/dev",
        "create_file /newroot/dev/zero",
        "mount /oldroot/dev/zero /newroot/dev/zero - MS_BIND|MS_REC -",
        "mkdir_all /newroot/dev",
        "create_file /newroot/dev/full",
        "mount /oldroot/dev/full /newroot/dev/full - MS_BIND|MS_REC -",
        "mkdir_all /newroot/dev",
        "create_file /newroot/dev/random",
        "mount /oldroot/dev/random /newroot/dev/random - MS_BIND|MS_REC -",
        "mkdir_all /newroot/dev",
        "create_file /newroot/dev/urandom",
        "mount /oldroot/dev/urandom /newroot/dev/urandom - MS_BIND|MS_REC -",
        "mkdir_all /newroot/dev",
        "create_file /newroot/dev/tty",
        "mount /oldroot/dev/tty /newroot/dev/tty - MS_BIND|MS_REC -",
        "mkdir_all /newroot/dev/pts",
        "mount devpts /newroot/dev/pts devpts MS_NOSUID|MS_NOEXEC \
         newinstance,ptmxmode=0666,mode=0620",
        "mkdir_all /newroot/dev",
        "symlink /newroot/dev/ptmx -> pts/ptmx",
        "mkdir_all /newroot/dev/shm",
        "mount tmpfs /newroot/dev/shm tmpfs MS_NOSUID|MS_NODEV mode=1777",
        "mkdir_all /newroot/dev",
        "symlink /newroot/dev/fd -> /proc/self/fd",
        "mkdir_all /newroot/dev",
        "symlink /newroot/dev/stdin -> /proc/self/fd/0",
        "mkdir_all /newroot/dev",
        "symlink /newroot/dev/stdout -> /proc/self/fd/1",
        "mkdir_all /newroot/dev",
        "symlink /newroot/dev/stderr -> /proc/self/fd/2",
        "mkdir_all /newroot/tmp",
        "mount tmpfs /newroot/tmp tmpfs MS_NOSUID|MS_NODEV mode=1777",
        "mkdir_all /newroot/var",
        "mkdir_all /newroot/var",
        "symlink /newroot/var/tmp -> /tmp",
        "mkdir_all /newroot/run",
        // The Plan's mounts, parents first: the agent's home, the workspace
        // read-write at its own path, the host config file, then the
        // protected paths read-only over the workspace.
        "mkdir_all /newroot/home/u",
        "mount /oldroot/data/homes/shell /newroot/home/u - MS_BIND|MS_REC -",
        "mkdir_all /newroot/home/u/repo",
        "mount /oldroot/home/u/repo /newroot/home/u/repo - MS_BIND|MS_REC -",
        "mkdir_all /newroot/home/u",
        "create_file /newroot/home/u/.claude.json",
        "mount /oldroot/home/u/.claude.json /newroot/home/u/.claude.json - MS_BIND|MS_REC -",
        "mkdir_all /newroot/home/u/repo/.git/hooks",
        "mount /oldroot/home/u/repo/.git/hooks /newroot/home/u/repo/.git/hooks - MS_BIND|MS_REC -",
        "make_read_only /newroot/home/u/repo/.git/hooks",
        "mkdir_all /newroot/home/u/repo/.git",
        "create_file /newroot/home/u/repo/.git/config",
        "mount /oldroot/home/u/repo/.git/config /newroot/home/u/repo/.git/config - MS_BIND|MS_REC -",
        "make_read_only /newroot/home/u/repo/.git/config",
        // The new root read-only, pivoted to, the host's root detached.
        "mount - /newroot - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_REMOUNT -",
        "chdir /newroot",
        "pivot_root . .",
        "umount_detach .",
        "chdir /",
    ];
    assert_eq!(kernel.calls(), expected);
}

#[test]
fn a_failing_bind_names_both_paths_and_stops_the_build() {
    let kernel = Recorder::new().failing(
        "mount /oldroot/home/u/repo /newroot/home/u/repo ",
        libc::EACCES,
    );
    let failure = build_root(&kernel, &typical_layout()).expect_err("refused");
    assert_eq!(
        failure,
        kennel_failure(format!(
            "cannot mount /home/u/repo at /home/u/repo: {}",
            error(libc::EACCES)
        ))
    );
    let calls = kernel.calls();
    assert!(
        calls
            .last()
            .unwrap()
            .starts_with("mount /oldroot/home/u/repo /newroot/home/u/repo "),
        "{calls:?}"
    );
    assert!(
        !calls
            .iter()
            .any(|call| call.starts_with("make_read_only /newroot/home/u/repo"))
    );
    assert!(!calls.contains(&"pivot_root . .".to_string()));
}

#[test]
fn a_protected_path_left_writable_is_an_error() {
    let kernel = Recorder::new().failing(
        "make_read_only /newroot/home/u/repo/.git/hooks",
        libc::EPERM,
    );
    let failure = build_root(&kernel, &typical_layout()).expect_err("refused");
    assert_eq!(
        failure,
        kennel_failure(format!(
            "cannot make /home/u/repo/.git/hooks read-only: {}",
            error(libc::EPERM)
        ))
    );
    assert!(
        !kernel
            .calls()
            .iter()
            .any(|call| call.contains(".git/config"))
    );
}

#[test]
fn mount_point_failures_name_the_path() {
    // A directory: named where the helper made it.
    let kernel = Recorder::new().failing("mkdir_all /newroot/home/u", libc::ENOSPC);
    let failure = build_root(&kernel, &typical_layout()).expect_err("refused");
    assert_eq!(
        failure,
        kennel_failure(format!(
            "cannot make mount point /newroot/home/u: {}",
            error(libc::ENOSPC)
        ))
    );
    // A file: named as the sandbox sees it.
    let kernel = Recorder::new().failing("create_file /newroot/home/u/.claude.json", libc::EROFS);
    let failure = build_root(&kernel, &typical_layout()).expect_err("refused");
    assert_eq!(
        failure,
        kennel_failure(format!(
            "cannot make mount point /home/u/.claude.json: {}",
            error(libc::EROFS)
        ))
    );
}

#[test]
fn every_step_of_the_build_names_itself_when_it_fails() {
    for (call, what) in [
        ("mount - / ", "make / private"),
        ("mount tmpfs /tmp ", "tmpfs"),
        ("mkdir /tmp/newroot", "mkdir newroot"),
        ("mkdir /tmp/oldroot", "mkdir oldroot"),
        ("pivot_root /tmp /tmp/oldroot", "pivot_root"),
        ("mount tmpfs /newroot ", "tmpfs root"),
        ("mount proc /newroot/proc ", "mount /proc"),
        ("mount tmpfs /newroot/dev ", "tmpfs on /dev"),
        ("mount tmpfs /newroot/tmp ", "tmpfs on /tmp"),
        ("symlink /newroot/dev/ptmx ", "symlink /dev/ptmx"),
        ("mount - /newroot ", "read-only root"),
        ("chdir /newroot", "chdir"),
        ("pivot_root . .", "pivot_root"),
        ("umount_detach .", "detach the host's root"),
    ] {
        let kernel = Recorder::new().failing(call, libc::EINVAL);
        let failure = build_root(&kernel, &typical_layout()).expect_err(call);
        assert_eq!(
            failure,
            kennel_failure(format!("{what}: {}", error(libc::EINVAL))),
            "{call}"
        );
        assert!(
            kernel.calls().last().unwrap().starts_with(call),
            "{call}: stops at the failing call"
        );
    }
}

#[test]
fn existing_links_and_a_refused_devpts_do_not_stop_the_build() {
    let kernel = Recorder::new()
        .failing("symlink /newroot/bin ", libc::EEXIST)
        .failing("mount devpts ", libc::EPERM);
    build_root(&kernel, &typical_layout()).expect("built");
    let calls = kernel.calls();
    assert!(calls.contains(&"symlink /newroot/sbin -> usr/sbin".to_string()));
    assert!(calls.contains(&"symlink /newroot/dev/ptmx -> pts/ptmx".to_string()));
    assert_eq!(calls.last().map(String::as_str), Some("chdir /"));
}

#[test]
fn apply_op_leaves_an_existing_mount_point_file_alone() {
    let op = Op::Bind {
        source: "/run/systemd/resolve/stub-resolv.conf".into(),
        target: "/run/systemd/resolve/stub-resolv.conf".into(),
        read_only: true,
        dir: false,
    };
    let kernel = Recorder::new();
    apply_op(&kernel, &op).expect("applied");
    assert_eq!(
        kernel.calls(),
        [
            "mkdir_all /newroot/run/systemd/resolve",
            "create_file /newroot/run/systemd/resolve/stub-resolv.conf",
            "mount /oldroot/run/systemd/resolve/stub-resolv.conf \
             /newroot/run/systemd/resolve/stub-resolv.conf - MS_BIND|MS_REC -",
            "make_read_only /newroot/run/systemd/resolve/stub-resolv.conf",
        ]
    );

    let kernel = Recorder::new().existing("/newroot/run/systemd/resolve/stub-resolv.conf");
    apply_op(&kernel, &op).expect("applied");
    assert!(
        !kernel
            .calls()
            .iter()
            .any(|call| call.starts_with("create_file"))
    );
    assert_eq!(kernel.calls().len(), 3);
}

#[test]
fn apply_op_mounts_a_private_var_tmp_under_a_workspace_there() {
    let kernel = Recorder::new();
    for op in [
        Op::Tmpfs {
            path: "/var/tmp".into(),
            mode: 0o1777,
        },
        Op::Bind {
            source: "/var/tmp/ws".into(),
            target: "/var/tmp/ws".into(),
            read_only: false,
            dir: true,
        },
    ] {
        apply_op(&kernel, &op).expect("applied");
    }
    assert_eq!(
        kernel.calls(),
        [
            "mkdir_all /newroot/var/tmp",
            "mount tmpfs /newroot/var/tmp tmpfs MS_NOSUID|MS_NODEV mode=1777",
            "mkdir_all /newroot/var/tmp/ws",
            "mount /oldroot/var/tmp/ws /newroot/var/tmp/ws - MS_BIND|MS_REC -",
        ]
    );
}

// ---------------------------------------------------------------- the agent

fn full() -> Decision {
    Decision {
        namespaces: true,
        landlock: true,
        seccomp: true,
        warnings: vec![],
    }
}

fn agent_plan() -> Plan {
    let mut plan = plan(typical_mounts());
    plan.command = vec!["sh".into(), "-c".into(), "echo $GREETING".into()];
    plan.env.push(EnvVar {
        name: "GREETING".into(),
        value: "hello world".into(),
        origin: "user".into(),
        secret: false,
    });
    plan
}

#[test]
fn exec_agent_confines_then_execs_the_command_found_on_path() {
    // PATH is /usr/bin:/bin; only /bin has sh.
    let kernel = Recorder::new().executable("/bin/sh");
    let failure = exec_agent(&kernel, &agent_plan(), &full(), &typical_layout());
    assert_eq!(
        kernel.calls(),
        [
            "chdir /home/u/repo",
            "set_rlimit RLIMIT_NPROC 1024",
            "set_rlimit RLIMIT_CORE 0",
            "set_no_new_privs",
            "landlock writable: /tmp /dev/shm /home/u /home/u/repo /home/u/.claude.json; \
             devices: /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty /dev/pts",
            "drop_capabilities",
            "seccomp 2 filters",
            "close_on_exec_from 3",
            "execve /bin/sh argv: sh -c echo $GREETING; \
             env: PATH=/usr/bin:/bin GREETING=hello world",
        ]
    );
    // The recorder's exec returns: what a refused exec reports.
    assert_eq!(
        failure,
        Failure(126, "cannot run `sh`: the recorder runs nothing".into())
    );
}

#[test]
fn exec_agent_skips_the_layers_a_weaker_sandbox_lacks() {
    let kernel = Recorder::new().executable("/usr/bin/sh");
    let weaker = Decision {
        namespaces: false,
        landlock: false,
        seccomp: false,
        warnings: vec![],
    };
    exec_agent(&kernel, &agent_plan(), &weaker, &typical_layout());
    assert_eq!(
        kernel.calls(),
        [
            "chdir /home/u/repo",
            // No pids limit: without a user namespace of its own it would
            // count every process of the user.
            "set_rlimit RLIMIT_CORE 0",
            "set_no_new_privs",
            "drop_capabilities",
            "close_on_exec_from 3",
            "execve /usr/bin/sh argv: sh -c echo $GREETING; \
             env: PATH=/usr/bin:/bin GREETING=hello world",
        ]
    );
}

#[test]
fn exec_agent_runs_a_command_with_a_slash_as_given() {
    let mut plan = agent_plan();
    plan.command = vec!["./run.sh".into(), "--fast".into()];
    let kernel = Recorder::new();
    exec_agent(&kernel, &plan, &full(), &typical_layout());
    let calls = kernel.calls();
    assert!(
        calls
            .last()
            .unwrap()
            .starts_with("execve ./run.sh argv: ./run.sh --fast; "),
        "{calls:?}"
    );
    assert_eq!(
        calls.first().map(String::as_str),
        Some("chdir /home/u/repo")
    );
}

#[test]
fn exec_agent_reports_a_missing_command_as_127_before_confining() {
    let kernel = Recorder::new();
    let failure = exec_agent(&kernel, &agent_plan(), &full(), &typical_layout());
    assert_eq!(
        failure,
        Failure(
            127,
            "command not found in the sandbox: `sh` (PATH=/usr/bin:/bin)".into()
        )
    );
    assert_eq!(kernel.calls(), ["chdir /home/u/repo"]);
}

#[test]
fn exec_agent_exec_errors_are_127_when_missing_and_126_otherwise() {
    for (errno, code) in [
        (libc::ENOENT, 127),
        (libc::EACCES, 126),
        (libc::ENOEXEC, 126),
    ] {
        let kernel = Recorder::new()
            .executable("/usr/bin/sh")
            .failing("execve", errno);
        let failure = exec_agent(&kernel, &agent_plan(), &full(), &typical_layout());
        assert_eq!(
            failure,
            Failure(code, format!("cannot run `sh`: {}", error(errno)))
        );
    }
}

#[test]
fn exec_agent_stops_at_the_first_layer_that_fails() {
    for (call, what) in [
        ("chdir", "cannot enter the working directory /home/u/repo"),
        ("set_rlimit RLIMIT_NPROC", "pids limit"),
        ("set_rlimit RLIMIT_CORE", "core dumps"),
        ("set_no_new_privs", "no-new-privileges"),
        ("landlock", "landlock"),
        ("drop_capabilities", "dropping capabilities"),
        ("seccomp", "seccomp"),
    ] {
        let kernel = Recorder::new()
            .executable("/usr/bin/sh")
            .failing(call, libc::EPERM);
        let failure = exec_agent(&kernel, &agent_plan(), &full(), &typical_layout());
        assert_eq!(
            failure,
            kennel_failure(format!("{what}: {}", error(libc::EPERM))),
            "{call}"
        );
        let calls = kernel.calls();
        assert!(calls.last().unwrap().starts_with(call), "{call}: {calls:?}");
        assert!(!calls.iter().any(|c| c.starts_with("execve")), "{call}");
    }
}

#[test]
fn limit_sandbox_caps_core_dumps_and_pids_only_in_namespaces() {
    let kernel = Recorder::new();
    limit_sandbox(&kernel, &agent_plan(), &full()).expect("limited");
    assert_eq!(
        kernel.calls(),
        ["set_rlimit RLIMIT_CORE 0", "set_rlimit RLIMIT_NPROC 1024"]
    );
    let kernel = Recorder::new();
    let no_namespaces = Decision {
        namespaces: false,
        ..full()
    };
    limit_sandbox(&kernel, &agent_plan(), &no_namespaces).expect("limited");
    assert_eq!(kernel.calls(), ["set_rlimit RLIMIT_CORE 0"]);
}

// ----------------------------------------------------------- the namespaces

#[test]
fn new_namespaces_map_the_user_to_itself_and_name_the_host() {
    let kernel = Recorder::new();
    new_namespaces(&kernel, &plan(vec![]), 1000, 1001).expect("made");
    assert_eq!(
        kernel.calls(),
        [
            "unshare CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWUSER|CLONE_NEWPID|CLONE_NEWNET",
            "write /proc/self/setgroups deny",
            "write /proc/self/uid_map 1000 1000 1",
            "write /proc/self/gid_map 1001 1001 1",
            "sethostname kennel-shell-test",
            "loopback_up",
        ]
    );
}

#[test]
fn an_open_network_stays_the_hosts_and_long_names_are_cut_to_63() {
    let mut plan = plan(vec![]);
    plan.network.mode = NetworkMode::Open;
    plan.name = "n".repeat(80);
    let kernel = Recorder::new();
    new_namespaces(&kernel, &plan, 1000, 1000).expect("made");
    let calls = kernel.calls();
    assert_eq!(
        calls[0],
        "unshare CLONE_NEWNS|CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWUSER|CLONE_NEWPID"
    );
    assert_eq!(
        calls.last().unwrap(),
        &format!("sethostname {}", "n".repeat(63))
    );
    assert!(!calls.contains(&"loopback_up".to_string()));
}

#[test]
fn a_refused_user_namespace_says_why_and_how_to_fix_it() {
    let kernel = Recorder::new().failing("unshare", libc::EPERM);
    let Failure(code, message) =
        new_namespaces(&kernel, &plan(vec![]), 1000, 1000).expect_err("refused");
    assert_eq!(code, EXIT_KENNEL);
    assert!(
        message.contains(&format!("(unshare: {})", error(libc::EPERM))),
        "{message}"
    );
    assert!(message.contains("\n  hint: "), "{message}");
    assert_eq!(kernel.calls().len(), 1);

    let kernel = Recorder::new().failing("write /proc/self/uid_map", libc::EPERM);
    let failure = new_namespaces(&kernel, &plan(vec![]), 1000, 1000).expect_err("refused");
    assert_eq!(
        failure,
        kennel_failure(format!("uid_map: {}", error(libc::EPERM)))
    );
}
