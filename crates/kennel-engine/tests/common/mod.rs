//! Shared helpers for the engine end-to-end tests.
//!
//! Tests skip (pass with a note on stderr) when the engine is unreachable,
//! unless `KENNEL_E2E=require`, in which case they fail.
//! The image is `kennel-test/bookworm:latest` unless `KENNEL_TEST_IMAGE` says otherwise.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use kennel_core::plan::{
    ImagePlan, Limits, Mount, MountPurpose, NetworkMode, NetworkPlan, PLAN_VERSION, Plan,
    SecurityPlan, UserPlan,
};
use kennel_engine::{Engine, EngineKind, connect};
use tokio::io::AsyncWriteExt;

pub fn image() -> String {
    std::env::var("KENNEL_TEST_IMAGE").unwrap_or_else(|_| "kennel-test/bookworm:latest".to_string())
}

pub fn required() -> bool {
    std::env::var("KENNEL_E2E").is_ok_and(|value| value == "require")
}

/// The engine, or `None` (test skipped) when it is not reachable and not required.
pub async fn engine(kind: EngineKind) -> Option<Engine> {
    match connect(kind).await {
        Ok(engine) => {
            if engine.kind() != kind {
                let message = format!(
                    "asked for {kind}, the socket is served by {}",
                    engine.kind()
                );
                assert!(!required(), "{message}");
                eprintln!("SKIP: {message}");
                return None;
            }
            match engine.image_exists(&image()).await {
                Ok(true) => Some(engine),
                other => {
                    let message = format!("{kind}: test image {} is missing ({other:?})", image());
                    assert!(!required(), "{message}");
                    eprintln!("SKIP: {message}");
                    None
                }
            }
        }
        Err(err) => {
            let message = format!("{kind} unreachable: {err} (hint: {:?})", err.hint());
            assert!(!required(), "KENNEL_E2E=require but {message}");
            eprintln!("SKIP: {message}");
            None
        }
    }
}

/// A raw bollard client on the same socket, to inspect what `run` left behind.
pub fn client(engine: &Engine) -> Docker {
    let path = engine.socket().to_str().expect("socket path is UTF-8");
    Docker::connect_with_unix(path, 60, bollard::API_DEFAULT_VERSION).expect("bollard client")
}

/// Does a container with this name (or id) exist?
pub async fn container_exists(engine: &Engine, name: &str) -> bool {
    let mut last = None;
    for _ in 0..10 {
        match client(engine).inspect_container(name, None).await {
            Ok(_) => return true,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return false,
            Err(err) => {
                eprintln!("inspecting {name}: {err} (retrying)");
                last = Some(err);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    panic!("inspecting {name}: {last:?}");
}

/// Force-removes a container when dropped, so a failing test leaves nothing behind.
pub struct RemoveOnDrop {
    pub socket: PathBuf,
    pub name: String,
}

impl RemoveOnDrop {
    pub fn new(engine: &Engine, name: &str) -> Self {
        RemoveOnDrop {
            socket: engine.socket().to_path_buf(),
            name: name.to_string(),
        }
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let socket = self.socket.clone();
        let name = self.name.clone();
        // Drop cannot await: use a private runtime on a plain thread.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let Some(path) = socket.to_str() else { return };
                let Ok(docker) = Docker::connect_with_unix(path, 60, bollard::API_DEFAULT_VERSION)
                else {
                    return;
                };
                let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .build();
                let _ = docker.remove_container(&name, Some(options)).await;
            });
        })
        .join();
    }
}

/// Is the container running?
pub async fn container_running(engine: &Engine, name: &str) -> bool {
    match client(engine).inspect_container(name, None).await {
        Ok(inspect) => inspect
            .state
            .and_then(|state| state.running)
            .unwrap_or(false),
        Err(_) => false,
    }
}

pub fn unique_name(kind: EngineKind, test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("kennel-test-{kind}-{test}-{}-{nanos}", std::process::id())
}

/// The uid/gid the sandbox user gets in tests: the invoking user, or 1000 for root.
pub fn test_ids() -> (u32, u32) {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    if uid == 0 { (1000, 1000) } else { (uid, gid) }
}

/// A Plan like the one `kennel run shell -- COMMAND` would make, without mounts.
pub fn plan(kind: EngineKind, test: &str, command: &[&str]) -> Plan {
    let (uid, gid) = test_ids();
    Plan {
        version: PLAN_VERSION,
        agent: "shell".to_string(),
        name: unique_name(kind, test),
        backend: kind.to_string(),
        selected: None,
        image: ImagePlan {
            reference: image(),
            managed: false,
            source: String::new(),
        },
        user: UserPlan {
            uid,
            gid,
            name: "kennel".to_string(),
            home: PathBuf::from("/tmp"),
            shell: "/bin/sh".to_string(),
        },
        workspace: PathBuf::from("/"),
        workdir: PathBuf::from("/"),
        mounts: Vec::new(),
        env: Vec::new(),
        command: command.iter().map(|arg| arg.to_string()).collect(),
        tty: false,
        stdin: false,
        network: NetworkPlan {
            mode: NetworkMode::None,
            allow: Vec::new(),
            deny: Vec::new(),
            enforced: true,
            proxy: None,
        },
        limits: Limits {
            pids: 256,
            memory: Some(512 * 1024 * 1024),
            cpus: Some(1.0),
        },
        security: SecurityPlan {
            cap_drop: vec!["ALL".to_string()],
            no_new_privileges: true,
            init: true,
            image_init: None,
            read_only_rootfs: false,
            seccomp_profile: None,
        },
        ephemeral: true,
        slot: 0,
        labels: BTreeMap::from([
            ("dev.kennel.managed".to_string(), "true".to_string()),
            ("dev.kennel.test".to_string(), test.to_string()),
        ]),
        warnings: Vec::new(),
        allow_weaker_sandbox: false,
        git: None,
        git_identity: None,
        devcontainer: None,
    }
}

pub fn bind(source: &Path, target: &str, read_only: bool) -> Mount {
    Mount {
        source: source.to_path_buf(),
        target: PathBuf::from(target),
        read_only,
        purpose: if read_only {
            MountPurpose::Protect
        } else {
            MountPurpose::Workspace
        },
    }
}

/// Path of the `run_plan` example (built by `cargo test`; built here if missing).
pub fn run_plan_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/examples/run_plan
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory");
    let binary = profile_dir.join("examples").join("run_plan");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "kennel-engine", "--example", "run_plan"])
            .status()
            .expect("running cargo build --example run_plan");
        assert!(status.success(), "building the run_plan example failed");
    }
    binary
}

/// Write the plan to a file the child can read.
pub fn plan_file(plan: &Plan) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    serde_json::to_writer_pretty(&mut file, plan).expect("write plan");
    file
}

/// Spawn `run_plan PLAN KIND` with piped stdio.
pub fn spawn_run_plan(plan_path: &Path, kind: EngineKind) -> tokio::process::Child {
    tokio::process::Command::new(run_plan_binary())
        .arg(plan_path)
        .arg(kind.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn run_plan")
}

/// Run the plan through the example binary, feeding `stdin` then closing it.
pub async fn run_plan(plan: &Plan, kind: EngineKind, stdin: &[u8]) -> Output {
    let file = plan_file(plan);
    let mut child = spawn_run_plan(file.path(), kind);
    let mut pipe = child.stdin.take().expect("stdin pipe");
    let input = stdin.to_vec();
    let feeder = tokio::spawn(async move {
        // The container may exit without reading everything: ignore EPIPE.
        let _ = pipe.write_all(&input).await;
        drop(pipe);
    });
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("run_plan did not finish within 120 s")
        .expect("run_plan output");
    let _ = feeder.await;
    output
}

pub fn show(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
