//! End-to-end tests of the Docker / Podman backend against real engines.
//!
//! Every test exists twice, in the `docker` and `podman` modules. They skip
//! when the engine is unreachable unless `KENNEL_E2E=require`.

// Test code may print: why a test skipped, what it saw.
#![allow(clippy::print_stderr)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use kennel_engine::{BuildEvent, BuildRequest, EngineError, EngineKind};

async fn exit_code_is_the_containers(kind: EngineKind) {
    let Some(_engine) = engine(kind).await else {
        return;
    };
    let plan = plan(kind, "exit7", &["sh", "-c", "exit 7"]);
    let output = run_plan(&plan, kind, b"").await;
    assert_eq!(output.status.code(), Some(7), "{}", show(&output));
}

async fn stdout_and_stderr_are_separate_and_exact(kind: EngineKind) {
    let Some(_engine) = engine(kind).await else {
        return;
    };
    // Bytes 0-2 at the start of a write, no trailing newline, and interleaving.
    let script = r#"printf 'out1\n'; printf 'err1\n' >&2; printf '\000\001\002bin'; printf 'err2' >&2; printf '\nlast'"#;
    let plan = plan(kind, "streams", &["sh", "-c", script]);
    let output = run_plan(&plan, kind, b"").await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(
        output.stdout,
        b"out1\n\x00\x01\x02bin\nlast",
        "{}",
        show(&output)
    );
    // stderr also carries run_plan's own log lines (none at the default level).
    assert_eq!(output.stderr, b"err1\nerr2", "{}", show(&output));
}

async fn stdin_is_forwarded_until_eof(kind: EngineKind) {
    let Some(_engine) = engine(kind).await else {
        return;
    };
    let mut plan = plan(
        kind,
        "stdin",
        &["sh", "-c", "cat; echo after-eof; echo done >&2"],
    );
    plan.stdin = true;
    let output = run_plan(&plan, kind, b"hello\nworld\n").await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(
        output.stdout,
        b"hello\nworld\nafter-eof\n",
        "{}",
        show(&output)
    );
    assert_eq!(output.stderr, b"done\n", "{}", show(&output));
}

async fn large_stdin_is_forwarded_exactly(kind: EngineKind) {
    let Some(_engine) = engine(kind).await else {
        return;
    };
    let mut plan = plan(kind, "bigstdin", &["sh", "-c", "wc -c; echo ok"]);
    plan.stdin = true;
    let input: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let output = run_plan(&plan, kind, &input).await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!("{}\nok\n", input.len())
    );
}

async fn stdin_closed_at_once_gives_eof(kind: EngineKind) {
    let Some(_engine) = engine(kind).await else {
        return;
    };
    let mut plan = plan(kind, "emptystdin", &["sh", "-c", "cat; echo eof"]);
    plan.stdin = true;
    let output = run_plan(&plan, kind, b"").await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(output.stdout, b"eof\n", "{}", show(&output));
}

async fn sandbox_has_no_capabilities_and_no_new_privs(kind: EngineKind) {
    let Some(_engine) = engine(kind).await else {
        return;
    };
    let plan = plan(
        kind,
        "caps",
        &[
            "sh",
            "-c",
            "grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status; id -u; id -g; ulimit -n; ulimit -Hn",
        ],
    );
    let output = run_plan(&plan, kind, b"").await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |name: &str| {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .map(str::to_string)
    };
    assert_eq!(
        field("CapEff:").as_deref(),
        Some("0000000000000000"),
        "{text}"
    );
    assert_eq!(
        field("CapPrm:").as_deref(),
        Some("0000000000000000"),
        "{text}"
    );
    assert_eq!(field("NoNewPrivs:").as_deref(), Some("1"), "{text}");
    let (uid, gid) = test_ids();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[3], uid.to_string(), "{text}");
    assert_eq!(lines[4], gid.to_string(), "{text}");
    let (_, host_hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    let hard: u64 = lines[6].parse().expect("hard nofile");
    assert!(
        hard <= host_hard,
        "container nofile hard {hard} > host {host_hard}"
    );
}

async fn init_is_pid_one(kind: EngineKind) {
    let Some(_engine) = engine(kind).await else {
        return;
    };
    let plan = plan(kind, "init", &["sh", "-c", "readlink /proc/1/exe; echo $$"]);
    let output = run_plan(&plan, kind, b"").await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let pid1 = lines.next().unwrap_or_default();
    assert!(
        pid1.contains("init") || pid1.contains("tini") || pid1.contains("catatonit"),
        "{text}"
    );
    assert_ne!(
        lines.next(),
        Some("1"),
        "the command must not be PID 1: {text}"
    );
}

async fn network_none_has_only_loopback(kind: EngineKind) {
    let Some(_engine) = engine(kind).await else {
        return;
    };
    let plan = plan(
        kind,
        "netnone",
        &["sh", "-c", "ls /sys/class/net | tr '\\n' ' '"],
    );
    let output = run_plan(&plan, kind, b"").await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "lo",
        "{}",
        show(&output)
    );
}

async fn ephemeral_container_is_gone_afterwards(kind: EngineKind) {
    let Some(engine) = engine(kind).await else {
        return;
    };
    let plan = plan(kind, "ephemeral", &["sh", "-c", "echo hi; exit 3"]);
    let output = run_plan(&plan, kind, b"").await;
    assert_eq!(output.status.code(), Some(3), "{}", show(&output));
    assert!(
        !container_exists(&engine, &plan.name).await,
        "{} still exists",
        plan.name
    );
}

async fn persistent_container_is_kept(kind: EngineKind) {
    let Some(engine) = engine(kind).await else {
        return;
    };
    let mut plan = plan(kind, "keep", &["true"]);
    plan.ephemeral = false;
    let _cleanup = RemoveOnDrop::new(&engine, &plan.name);
    let output = run_plan(&plan, kind, b"").await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert!(
        container_exists(&engine, &plan.name).await,
        "{} was removed",
        plan.name
    );
    let _ = client(&engine)
        .remove_container(
            &plan.name,
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .build(),
            ),
        )
        .await;
}

async fn mounts_honour_read_only_and_ownership(kind: EngineKind) {
    let Some(_engine) = engine(kind).await else {
        return;
    };
    let workspace = tempfile::tempdir().expect("tempdir");
    let protected = tempfile::tempdir().expect("tempdir");
    let (uid, gid) = test_ids();
    // The sandbox user must be able to write the workspace (as kennel's user would).
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(workspace.path(), Some(uid), Some(gid)).expect("chown");
    }
    std::fs::write(protected.path().join("config"), "keep").expect("write");
    let mut plan = plan(
        kind,
        "mounts",
        &[
            "sh",
            "-c",
            "echo new > /work/created && if (echo x > /protected/config) 2>/dev/null; then echo ro=writable; else echo ro=refused; fi; cat /protected/config",
        ],
    );
    plan.mounts = vec![
        bind(workspace.path(), "/work", false),
        bind(protected.path(), "/protected", true),
    ];
    plan.workdir = "/work".into();
    let output = run_plan(&plan, kind, b"").await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "ro=refused\nkeep",
        "{}",
        show(&output)
    );
    let created = workspace.path().join("created");
    let meta = std::fs::metadata(&created).expect("file created in the workspace");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid()),
        (uid, gid),
        "owner of the created file"
    );
    assert_eq!(
        std::fs::read_to_string(protected.path().join("config"))
            .ok()
            .as_deref(),
        Some("keep")
    );
}

async fn read_only_rootfs_keeps_tmp_writable(kind: EngineKind) {
    let Some(_engine) = engine(kind).await else {
        return;
    };
    let mut plan = plan(
        kind,
        "rorootfs",
        &[
            "sh",
            "-c",
            "touch /etc/x 2>/dev/null; echo etc=$?; touch /tmp/x; echo tmp=$?",
        ],
    );
    plan.security.read_only_rootfs = true;
    let output = run_plan(&plan, kind, b"").await;
    assert_eq!(output.status.code(), Some(0), "{}", show(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "etc=1\ntmp=0\n",
        "{}",
        show(&output)
    );
}

async fn env_and_workdir_are_applied(kind: EngineKind) {
    let Some(_engine) = engine(kind).await else {
        return;
    };
    let mut plan = plan(kind, "env", &["sh", "-c", "echo \"$GREETING|$(pwd)\""]);
    plan.env.push(kennel_core::plan::EnvVar {
        name: "GREETING".to_string(),
        value: "hello world; $(not expanded)".to_string(),
        origin: "flag".to_string(),
        secret: false,
    });
    plan.workdir = "/usr".into();
    let output = run_plan(&plan, kind, b"").await;
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello world; $(not expanded)|/usr\n",
        "{}",
        show(&output)
    );
}

async fn sigterm_stops_the_container(kind: EngineKind) {
    // With an init, SIGTERM ends `sleep` at once.
    sigterm_case(
        kind,
        "sigterm",
        true,
        Duration::ZERO..Duration::from_secs(10),
    )
    .await;
}

/// Without an init, `sleep` as PID 1 ignores SIGTERM: kennel must kill it after 10 s.
async fn sigterm_escalates_to_sigkill(kind: EngineKind) {
    sigterm_case(
        kind,
        "sigkill",
        false,
        Duration::from_secs(9)..Duration::from_secs(25),
    )
    .await;
}

/// Runs `sleep 300`, sends SIGTERM to kennel once the container runs, and
/// checks how long the stop took, the exit code and that nothing is left.
async fn sigterm_case(kind: EngineKind, name: &str, init: bool, window: std::ops::Range<Duration>) {
    let Some(engine) = engine(kind).await else {
        return;
    };
    let mut plan = plan(kind, name, &["sleep", "300"]);
    plan.security.init = init;
    let _cleanup = RemoveOnDrop::new(&engine, &plan.name);
    let file = plan_file(&plan);
    let mut child = spawn_run_plan(file.path(), kind);
    let started = Instant::now();
    // Generous: a loaded machine can take many seconds to start a container.
    while !container_running(&engine, &plan.name).await {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "container never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = child.id().expect("child pid") as i32;
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("run_plan did not exit after SIGTERM")
        .expect("wait");
    let elapsed = signalled.elapsed();
    assert!(
        window.contains(&elapsed),
        "took {elapsed:?}, expected {window:?}"
    );
    assert_eq!(status.code(), Some(128 + 15));
    assert!(
        !container_exists(&engine, &plan.name).await,
        "{} still exists",
        plan.name
    );
}

async fn tty_output_is_raw(kind: EngineKind) {
    let Some(_engine) = engine(kind).await else {
        return;
    };
    let mut plan = plan(
        kind,
        "tty",
        &["sh", "-c", "printf '\\001\\002tty'; echo; tty; exit 4"],
    );
    plan.tty = true;
    let output = run_plan(&plan, kind, b"").await;
    assert_eq!(output.status.code(), Some(4), "{}", show(&output));
    assert!(
        output.stdout.starts_with(b"\x01\x02tty\r\n"),
        "{}",
        show(&output)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("/dev/pts/"),
        "{}",
        show(&output)
    );
}

async fn missing_image_is_image_not_found(kind: EngineKind) {
    let Some(engine) = engine(kind).await else {
        return;
    };
    let mut plan = plan(kind, "noimage", &["true"]);
    plan.image.reference = "kennel-test/does-not-exist:never".to_string();
    match engine.run(&plan).await {
        Err(EngineError::ImageNotFound { reference }) => {
            assert_eq!(reference, plan.image.reference)
        }
        other => panic!("expected ImageNotFound, got {other:?}"),
    }
    assert!(!container_exists(&engine, &plan.name).await);
}

async fn missing_command_is_reported(kind: EngineKind) {
    let Some(engine) = engine(kind).await else {
        return;
    };
    let mut plan = plan(kind, "nocmd", &["/no/such/command"]);
    plan.security.init = false;
    match engine.run(&plan).await {
        Err(err @ EngineError::CommandNotRunnable { .. }) => {
            assert_eq!(err.exit_code(), 127);
            assert!(err.hint().is_some());
        }
        other => panic!("expected CommandNotRunnable, got {other:?}"),
    }
    assert!(
        !container_exists(&engine, &plan.name).await,
        "a failed start leaves no container"
    );
}

fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write");
    }
    let output = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir.path())
        .args(["-cf", "-", "."])
        .output()
        .expect("tar");
    assert!(output.status.success(), "tar failed");
    output.stdout
}

async fn build_list_and_remove_an_image(kind: EngineKind) {
    let Some(engine) = engine(kind).await else {
        return;
    };
    let tag = format!("kennel-test/engine-build-{kind}:{}", std::process::id());
    let dockerfile = format!(
        "FROM {}\nRUN echo built-$((6*7)) > /built\nCMD [\"cat\", \"/built\"]\n",
        image()
    );
    let labels = BTreeMap::from([
        ("dev.kennel.managed".to_string(), "true".to_string()),
        ("dev.kennel.test-build".to_string(), kind.to_string()),
    ]);
    let mut events = Vec::new();
    let request = BuildRequest {
        tag: tag.clone(),
        context_tar: tar_of(&[("Dockerfile", &dockerfile)]),
        labels: labels.clone(),
        no_cache: true,
    };
    engine
        .build_image(request, &mut |event| events.push(event))
        .await
        .unwrap_or_else(|err| panic!("build failed: {err}\nevents: {events:#?}"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, BuildEvent::Step(line) if line.contains("RUN"))),
        "{events:#?}"
    );
    assert!(engine.image_exists(&tag).await.expect("exists"));

    let filter = format!("dev.kennel.test-build={kind}");
    let images = engine.list_images(&filter).await.expect("list");
    let mine = images
        .iter()
        .find(|image| image.reference.ends_with(&tag))
        .unwrap_or_else(|| panic!("{tag} not in {images:#?}"));
    assert_eq!(
        mine.labels.get("dev.kennel.managed").map(String::as_str),
        Some("true")
    );
    assert!(mine.size > 0 && mine.created > 0, "{mine:?}");

    let mut plan = plan(kind, "built", &["cat", "/built"]);
    plan.image.reference = tag.clone();
    let output = run_plan(&plan, kind, b"").await;
    assert_eq!(output.stdout, b"built-42\n", "{}", show(&output));

    engine.remove_image(&tag, true).await.expect("remove");
    assert!(!engine.image_exists(&tag).await.expect("exists"));
    assert!(matches!(
        engine.remove_image(&tag, false).await,
        Err(EngineError::ImageNotFound { .. })
    ));
}

async fn failing_build_reports_its_output(kind: EngineKind) {
    let Some(engine) = engine(kind).await else {
        return;
    };
    let tag = format!("kennel-test/engine-broken-{kind}:{}", std::process::id());
    let dockerfile = format!("FROM {}\nRUN echo about-to-fail && exit 3\n", image());
    let request = BuildRequest {
        tag: tag.clone(),
        context_tar: tar_of(&[("Dockerfile", &dockerfile)]),
        labels: BTreeMap::new(),
        no_cache: true,
    };
    match engine.build_image(request, &mut |_| {}).await {
        Err(EngineError::BuildFailed {
            output_tail,
            message,
            step,
            ..
        }) => {
            assert!(
                output_tail
                    .iter()
                    .any(|line| line.contains("about-to-fail")),
                "{message}: {output_tail:#?}"
            );
            assert!(
                step.as_deref()
                    .is_some_and(|step| step.contains("RUN echo about-to-fail")),
                "the failing step must be named: {step:?}"
            );
            // Only the failing step's output, not the FROM step's.
            assert!(
                !output_tail.iter().any(|line| line.contains("FROM")),
                "{output_tail:#?}"
            );
        }
        other => panic!("expected BuildFailed, got {other:?}"),
    }
    assert!(!engine.image_exists(&tag).await.expect("exists"));
}

/// A base image that is neither local nor pullable (no registry answers
/// here, and this repository exists nowhere) is named as such, with the
/// `base_image` hint rather than `--no-cache`.
async fn unavailable_base_image_is_named(kind: EngineKind) {
    let Some(engine) = engine(kind).await else {
        return;
    };
    let tag = format!("kennel-test/engine-nobase-{kind}:{}", std::process::id());
    let request = BuildRequest {
        tag: tag.clone(),
        context_tar: tar_of(&[(
            "Dockerfile",
            "FROM kennel-test/no-such-base-image:nope\nRUN true\n",
        )]),
        labels: BTreeMap::new(),
        no_cache: false,
    };
    match engine.build_image(request, &mut |_| {}).await {
        Err(error @ EngineError::BaseImageUnavailable { .. }) => {
            let EngineError::BaseImageUnavailable { image, .. } = &error else {
                unreachable!()
            };
            assert_eq!(image, "kennel-test/no-such-base-image:nope");
            let hint = error.hint().unwrap_or_default();
            assert!(hint.contains("base_image"), "{hint}");
        }
        other => panic!("expected BaseImageUnavailable, got {other:?}"),
    }
    assert!(!engine.image_exists(&tag).await.expect("exists"));
}

macro_rules! engine_tests {
    ($module:ident, $kind:expr, [$($test:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($kind).await;
                }
            )*
        }
    };
}

macro_rules! all_tests {
    ($($module:ident => $kind:expr),*) => {
        $(
            engine_tests!($module, $kind, [
                exit_code_is_the_containers,
                stdout_and_stderr_are_separate_and_exact,
                stdin_is_forwarded_until_eof,
                large_stdin_is_forwarded_exactly,
                stdin_closed_at_once_gives_eof,
                sandbox_has_no_capabilities_and_no_new_privs,
                init_is_pid_one,
                network_none_has_only_loopback,
                ephemeral_container_is_gone_afterwards,
                persistent_container_is_kept,
                mounts_honour_read_only_and_ownership,
                read_only_rootfs_keeps_tmp_writable,
                env_and_workdir_are_applied,
                sigterm_stops_the_container,
                sigterm_escalates_to_sigkill,
                tty_output_is_raw,
                missing_image_is_image_not_found,
                missing_command_is_reported,
                build_list_and_remove_an_image,
                failing_build_reports_its_output,
                unavailable_base_image_is_named,
            ]);
        )*
    };
}

all_tests!(docker => kennel_engine::EngineKind::Docker, podman => kennel_engine::EngineKind::Podman);

#[tokio::test]
async fn probe_all_reports_every_engine() {
    let probes = kennel_engine::probe_all().await;
    let names: Vec<&str> = probes.iter().map(|probe| probe.name.as_str()).collect();
    assert_eq!(names, ["docker", "podman", "podman-rootless"]);
    for probe in &probes {
        eprintln!("{probe:?}");
        assert!(!probe.reason.is_empty());
        if probe.available {
            assert!(
                probe.version.is_some() && probe.socket.is_some(),
                "{probe:?}"
            );
        } else {
            assert!(
                probe.fix.is_some(),
                "an unavailable engine needs a fix: {probe:?}"
            );
        }
    }
    if kennel_engine::connect(EngineKind::Docker).await.is_ok() {
        assert!(probes[0].available, "{:?}", probes[0]);
    }
}
