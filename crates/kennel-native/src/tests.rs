//! Unit tests of the decisions; nothing here needs root or namespaces.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use kennel_core::Plan;
use kennel_core::plan::*;

use crate::layout::{HostFs, Node, Op, plan_layout};
use crate::probe::{Missing, from_parts};
use crate::{NativeError, check_command, decide};

/// A host made of a table of paths.
#[derive(Default)]
pub(crate) struct FakeFs {
    nodes: HashMap<PathBuf, Node>,
    executables: Vec<PathBuf>,
}

impl FakeFs {
    fn with(mut self, path: &str, node: Node) -> Self {
        self.nodes.insert(path.into(), node);
        self
    }
}

impl HostFs for FakeFs {
    fn node(&self, path: &Path) -> Option<Node> {
        self.nodes.get(path).cloned()
    }
    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        match self.nodes.get(path)? {
            Node::Symlink(to) if to.is_absolute() => Some(to.clone()),
            Node::Symlink(to) => Some(path.parent()?.join(to)),
            _ => Some(path.to_path_buf()),
        }
    }
    fn is_executable(&self, path: &Path) -> bool {
        self.executables.iter().any(|p| p == path)
    }
}

pub(crate) fn usrmerge_host() -> FakeFs {
    FakeFs::default()
        .with("/usr", Node::Dir)
        .with("/etc", Node::Dir)
        .with("/opt", Node::Dir)
        .with("/bin", Node::Symlink("usr/bin".into()))
        .with("/sbin", Node::Symlink("usr/sbin".into()))
        .with("/lib", Node::Symlink("usr/lib".into()))
        .with("/lib64", Node::Symlink("usr/lib64".into()))
        .with("/home/u/repo", Node::Dir)
        .with("/home/u/repo/.git/hooks", Node::Dir)
        .with("/home/u/repo/.git/config", Node::File)
        .with("/data/homes/shell", Node::Dir)
        .with("/data/identity/passwd", Node::File)
        .with("/home/u/.claude.json", Node::File)
}

fn mount(source: &str, target: &str, read_only: bool, purpose: MountPurpose) -> Mount {
    Mount {
        source: source.into(),
        target: target.into(),
        read_only,
        purpose,
    }
}

pub(crate) fn plan(mounts: Vec<Mount>) -> Plan {
    Plan {
        version: PLAN_VERSION,
        agent: "shell".into(),
        name: "kennel-shell-test".into(),
        backend: "native".into(),
        selected: None,
        image: ImagePlan {
            reference: "host".into(),
            managed: false,
            source: String::new(),
        },
        user: UserPlan {
            uid: 1000,
            gid: 1000,
            name: "u".into(),
            home: "/home/u".into(),
            shell: "/bin/bash".into(),
        },
        workspace: "/home/u/repo".into(),
        workdir: "/home/u/repo".into(),
        mounts,
        env: vec![EnvVar {
            name: "PATH".into(),
            value: "/usr/bin:/bin".into(),
            origin: "kennel".into(),
            secret: false,
        }],
        command: vec!["sh".into()],
        tty: false,
        stdin: true,
        network: NetworkPlan {
            mode: NetworkMode::None,
            allow: vec![],
            deny: vec![],
            enforced: true,
            proxy: None,
        },
        limits: Limits {
            pids: 1024,
            memory: None,
            cpus: None,
        },
        security: SecurityPlan {
            cap_drop: vec!["ALL".into()],
            no_new_privileges: true,
            init: true,
            image_init: None,
            read_only_rootfs: false,
            seccomp_profile: None,
        },
        ephemeral: true,
        slot: 0,
        labels: BTreeMap::new(),
        warnings: vec![],
        allow_weaker_sandbox: false,
        git: None,
        git_identity: None,
        devcontainer: None,
    }
}

pub(crate) fn typical_mounts() -> Vec<Mount> {
    vec![
        mount(
            "/data/homes/shell",
            "/home/u",
            false,
            MountPurpose::AgentHome,
        ),
        mount(
            "/home/u/repo",
            "/home/u/repo",
            false,
            MountPurpose::Workspace,
        ),
        mount(
            "/home/u/repo/.git/hooks",
            "/home/u/repo/.git/hooks",
            true,
            MountPurpose::Protect,
        ),
        mount(
            "/home/u/repo/.git/config",
            "/home/u/repo/.git/config",
            true,
            MountPurpose::Protect,
        ),
        mount(
            "/data/identity/passwd",
            "/etc/passwd",
            true,
            MountPurpose::Identity,
        ),
        mount(
            "/home/u/.claude.json",
            "/home/u/.claude.json",
            false,
            MountPurpose::HostConfig,
        ),
    ]
}

fn binds(ops: &[Op]) -> Vec<(String, String, bool, bool)> {
    ops.iter()
        .filter_map(|op| match op {
            Op::Bind {
                source,
                target,
                read_only,
                dir,
            } => Some((
                source.display().to_string(),
                target.display().to_string(),
                *read_only,
                *dir,
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn system_dirs_are_read_only_and_usrmerge_symlinks_are_kept() {
    let layout = plan_layout(&plan(vec![]), &usrmerge_host()).expect("layout");
    let binds = binds(&layout.ops);
    for dir in ["/usr", "/etc", "/opt"] {
        assert!(
            binds.contains(&(dir.into(), dir.into(), true, true)),
            "{dir} in {binds:?}"
        );
    }
    assert!(layout.ops.contains(&Op::Symlink {
        path: "/bin".into(),
        points_to: "usr/bin".into()
    }));
    assert!(layout.ops.contains(&Op::Symlink {
        path: "/lib64".into(),
        points_to: "usr/lib64".into()
    }));
    // Absent directories are skipped, symlinks are not bound.
    assert!(!binds.iter().any(|b| b.1 == "/lib32" || b.1 == "/bin"));
    // Nothing else of the host: no /home, /root, /var, /run, /mnt.
    for host_only in ["/home", "/root", "/var", "/run", "/mnt", "/srv"] {
        assert!(!binds.iter().any(|b| b.0 == host_only), "{host_only}");
    }
}

#[test]
fn plan_mounts_are_honoured_parents_first_and_identity_ignored() {
    let layout = plan_layout(&plan(typical_mounts()), &usrmerge_host()).expect("layout");
    let binds = binds(&layout.ops);
    let position = |target: &str| binds.iter().position(|b| b.1 == target).expect(target);
    assert!(position("/home/u") < position("/home/u/repo"));
    assert!(position("/home/u/repo") < position("/home/u/repo/.git/hooks"));
    assert!(binds.contains(&(
        "/home/u/repo/.git/hooks".into(),
        "/home/u/repo/.git/hooks".into(),
        true,
        true
    )));
    assert!(binds.contains(&(
        "/home/u/repo/.git/config".into(),
        "/home/u/repo/.git/config".into(),
        true,
        false
    )));
    assert!(binds.contains(&(
        "/home/u/.claude.json".into(),
        "/home/u/.claude.json".into(),
        false,
        false
    )));
    assert!(
        !binds.iter().any(|b| b.1 == "/etc/passwd"),
        "identity mounts are ignored"
    );
    // Writes: workspace, agent home, host config, /tmp, /dev/shm; not the protected paths.
    for path in [
        "/home/u/repo",
        "/home/u",
        "/home/u/.claude.json",
        "/tmp",
        "/dev/shm",
    ] {
        assert!(layout.writable.contains(&PathBuf::from(path)), "{path}");
    }
    assert!(
        !layout
            .writable
            .iter()
            .any(|p| p.starts_with("/home/u/repo/.git"))
    );
    assert!(
        !layout
            .writable
            .iter()
            .any(|p| p.starts_with("/usr") || p.starts_with("/etc"))
    );
}

#[test]
fn fresh_proc_minimal_dev_and_private_tmp() {
    let layout = plan_layout(&plan(vec![]), &usrmerge_host()).expect("layout");
    assert!(layout.ops.contains(&Op::Proc {
        path: "/proc".into()
    }));
    assert!(layout.ops.contains(&Op::Devpts {
        path: "/dev/pts".into()
    }));
    assert!(layout.ops.contains(&Op::Tmpfs {
        path: "/tmp".into(),
        mode: 0o1777
    }));
    assert!(layout.ops.contains(&Op::Tmpfs {
        path: "/dev/shm".into(),
        mode: 0o1777
    }));
    let devices: Vec<String> = binds(&layout.ops)
        .into_iter()
        .filter(|b| b.1.starts_with("/dev/"))
        .map(|b| b.1)
        .collect();
    assert_eq!(
        devices,
        [
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
            "/dev/tty"
        ]
    );
    // /dev itself is a tmpfs, not the host's.
    assert!(layout.ops.contains(&Op::Tmpfs {
        path: "/dev".into(),
        mode: 0o755
    }));
}

#[test]
fn a_workspace_under_var_tmp_is_mounted_at_its_own_path() {
    let host = usrmerge_host().with("/var/tmp/ws", Node::Dir);
    let mounts = vec![mount(
        "/var/tmp/ws",
        "/var/tmp/ws",
        false,
        MountPurpose::Workspace,
    )];
    let layout = plan_layout(&plan(mounts), &host).expect("layout");
    // /var/tmp is a real (private) directory, not the symlink to /tmp that
    // would put the workspace at /tmp/ws.
    assert!(!layout.ops.iter().any(|op| matches!(
        op,
        Op::Symlink { path, .. } if path == Path::new("/var/tmp")
    )));
    let tmpfs = layout
        .ops
        .iter()
        .position(|op| {
            op == &Op::Tmpfs {
                path: "/var/tmp".into(),
                mode: 0o1777,
            }
        })
        .expect("/var/tmp tmpfs");
    let bind = layout
        .ops
        .iter()
        .position(|op| matches!(op, Op::Bind { target, .. } if target == Path::new("/var/tmp/ws")))
        .expect("workspace bind");
    assert!(
        tmpfs < bind,
        "the tmpfs goes under the workspace, not over it"
    );
    assert!(layout.writable.contains(&PathBuf::from("/var/tmp/ws")));

    // Elsewhere /var/tmp stays the symlink.
    let layout = plan_layout(&plan(typical_mounts()), &usrmerge_host()).expect("layout");
    assert!(layout.ops.contains(&Op::Symlink {
        path: "/var/tmp".into(),
        points_to: "/tmp".into()
    }));
}

#[test]
fn resolv_conf_outside_etc_is_bound() {
    let host = usrmerge_host()
        .with(
            "/etc/resolv.conf",
            Node::Symlink("/run/systemd/resolve/stub-resolv.conf".into()),
        )
        .with("/run/systemd/resolve/stub-resolv.conf", Node::File);
    let binds = binds(&plan_layout(&plan(vec![]), &host).expect("layout").ops);
    assert!(binds.contains(&(
        "/run/systemd/resolve/stub-resolv.conf".into(),
        "/run/systemd/resolve/stub-resolv.conf".into(),
        true,
        false
    )));
}

#[test]
fn mounts_over_proc_dev_or_root_and_missing_sources_are_refused() {
    for target in ["/proc/sys", "/dev/sda", "/"] {
        let result = plan_layout(
            &plan(vec![mount(
                "/home/u/repo",
                target,
                false,
                MountPurpose::User,
            )]),
            &usrmerge_host(),
        );
        assert!(result.is_err(), "{target}");
    }
    let result = plan_layout(
        &plan(vec![mount("/nope", "/nope", false, MountPurpose::User)]),
        &usrmerge_host(),
    );
    assert!(result.is_err());
}

fn full_probe() -> crate::NativeProbe {
    from_parts(true, Some(7), true, vec![])
}

fn missing(feature: &str) -> Missing {
    Missing {
        feature: feature.into(),
        cause: format!("{feature} is off"),
        fix: format!("turn {feature} on"),
    }
}

#[test]
fn everything_present_gives_the_full_sandbox() {
    let decision = decide(&full_probe(), false).expect("ok");
    assert!(decision.namespaces && decision.landlock && decision.seccomp);
    assert!(decision.warnings.is_empty());
}

#[test]
fn missing_userns_or_landlock_refuses_with_cause_and_fix() {
    for probe in [
        from_parts(false, Some(7), true, vec![missing("user namespaces")]),
        from_parts(true, None, true, vec![missing("landlock")]),
        from_parts(true, Some(7), false, vec![missing("seccomp")]),
    ] {
        match decide(&probe, false) {
            Err(NativeError::Unavailable { cause, fix }) => {
                let feature = &probe.missing[0].feature;
                assert!(cause.contains(&format!("{feature} is off")), "{cause}");
                assert!(fix.contains(&format!("turn {feature} on")), "{fix}");
                assert!(fix.contains("--allow-weaker-sandbox"), "{fix}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(
            decide(&probe, false).unwrap_err().exit_code(),
            crate::EXIT_KENNEL
        );
    }
}

#[test]
fn weaker_sandbox_is_opt_in_and_says_what_is_missing() {
    let probe = from_parts(true, None, true, vec![missing("landlock")]);
    let decision = decide(&probe, true).expect("opted in");
    assert!(decision.namespaces && !decision.landlock && decision.seccomp);
    assert!(decision.warnings.iter().any(|w| w.contains("no Landlock")));

    let probe = from_parts(false, Some(7), true, vec![missing("user namespaces")]);
    let decision = decide(&probe, true).expect("opted in");
    assert!(!decision.namespaces && decision.landlock);
    assert!(
        decision
            .warnings
            .iter()
            .any(|w| w.contains("READ everything"))
    );
}

#[test]
fn probe_reports_what_is_missing() {
    let probe = from_parts(
        false,
        None,
        true,
        vec![missing("user namespaces"), missing("landlock")],
    );
    assert!(!probe.available);
    assert!(probe.reason.contains("user namespaces") && probe.reason.contains("landlock"));
    assert!(probe.fix.as_deref().unwrap().contains("turn landlock on"));
    assert!(full_probe().available);
}

#[test]
fn seccomp_denies_the_required_calls() {
    let names: Vec<&str> = crate::DENIED_SYSCALLS
        .iter()
        .map(|(name, _)| *name)
        .collect();
    for required in kennel_core::seccomp::REFUSED_SYSCALLS {
        assert!(names.contains(required), "{required} is not denied");
    }
    for request in kennel_core::seccomp::REFUSED_IOCTLS {
        assert!(
            crate::filter::DENIED_IOCTLS
                .iter()
                .any(|(_, denied)| denied == request),
            "ioctl {request:#x} is not denied"
        );
    }
    let ioctls: Vec<&str> = crate::DENIED_IOCTLS.iter().map(|(name, _)| *name).collect();
    assert!(ioctls.contains(&"TIOCSTI"));
    assert!(
        crate::NOSYS_SYSCALLS
            .iter()
            .any(|(name, _)| *name == "clone3")
    );
    let filters = crate::build_filters().expect("filters compile");
    assert_eq!(filters.len(), 2);
    assert!(filters.iter().all(|f| !f.is_empty()));
}

#[test]
fn the_command_must_exist_on_the_host() {
    let mut fs = usrmerge_host();
    fs.executables.push("/usr/bin/sh".into());
    let mut plan = plan(vec![]);
    assert!(check_command(&plan, &fs).is_ok());
    plan.command = vec!["claude".into()];
    match check_command(&plan, &fs) {
        Err(error @ NativeError::CommandNotFound { .. }) => {
            assert_eq!(error.exit_code(), 127);
            assert!(error.to_string().contains("not found on the host"));
        }
        other => panic!("{other:?}"),
    }
    plan.command = vec!["./run.sh".into()];
    fs.executables.push("/home/u/repo/./run.sh".into());
    assert!(check_command(&plan, &fs).is_ok());
}

#[test]
fn protected_paths_are_bound_as_found_and_links_refused() {
    // A single file, a directory, and a directory pinned onto itself.
    let host = usrmerge_host()
        .with("/home/u/repo/.git", Node::Dir)
        .with("/home/u/repo/.git/modules/lib/config", Node::File);
    let mut mounts = typical_mounts();
    mounts.push(mount(
        "/home/u/repo/.git",
        "/home/u/repo/.git",
        false,
        MountPurpose::Protect,
    ));
    mounts.push(mount(
        "/home/u/repo/.git/modules/lib/config",
        "/home/u/repo/.git/modules/lib/config",
        true,
        MountPurpose::Protect,
    ));
    let layout = plan_layout(&plan(mounts.clone()), &host).expect("layout");
    let binds = binds(&layout.ops);
    for (path, read_only, dir) in [
        ("/home/u/repo/.git", false, true),
        ("/home/u/repo/.git/hooks", true, true),
        ("/home/u/repo/.git/config", true, false),
        ("/home/u/repo/.git/modules/lib/config", true, false),
    ] {
        assert!(
            binds.contains(&(path.into(), path.into(), read_only, dir)),
            "{path}: {binds:?}"
        );
    }
    let position = |path: &str| binds.iter().position(|bind| bind.1 == path).expect(path);
    assert!(position("/home/u/repo/.git") < position("/home/u/repo/.git/config"));

    // The hooks dir became a link to the user's ~/.ssh since the Plan was made.
    let host = host.with(
        "/home/u/repo/.git/hooks",
        Node::Symlink("/home/u/.ssh".into()),
    );
    let error = plan_layout(&plan(mounts), &host).expect_err("refused");
    assert!(error.to_string().contains("symbolic link"), "{error}");
}
