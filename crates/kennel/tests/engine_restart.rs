//! Restarting the engine under a running session (promise 8: the session is
//! then reported stopped, not running forever).
//!
//! A test binary of its own: it restarts the machine's `dockerd`, which the
//! tests in `e2e` must never see happen under them (cargo runs test binaries
//! one after another). Docker only: Podman's containers are children of
//! `conmon`, not of its API service, so restarting that service ends no
//! session (and `kennel ls` rightly keeps showing them running).

// Test code may print: why a test skipped, what it saw.
#![allow(clippy::print_stderr)]

#[path = "e2e/harness.rs"]
mod harness;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::{Backend, Ctx};
use serde_json::Value;

#[test]
fn engine_restart_marks_sessions_stopped() {
    let Some(t) = Ctx::with_shell_image(Backend::Docker, "engine_restart") else {
        return;
    };
    let start = |name: &str, command: &[&str]| {
        t.start_offline(name, &[], command).run().assert_ok();
    };
    let name = format!("restart-{}", harness::unique());
    start(&name, &["sleep", "600"]);
    let ended = format!("ended-{}", harness::unique());
    start(&ended, &["sh", "-c", "exit 3"]);
    let state = |name: &str| -> Value {
        t.session(name)
            .unwrap_or_else(|| panic!("{name} not listed: {:?}", t.sessions()))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while state(&ended)["state"] != "exited" {
        assert!(Instant::now() < deadline, "{}", state(&ended));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(state(&name)["state"], "running");

    restart_dockerd();

    let session = state(&name);
    assert_eq!(
        session["state"], "stopped",
        "a session the engine's restart ended must be stopped: {session}"
    );
    // The agent that ended by itself before the restart keeps its own end.
    let session = state(&ended);
    assert_eq!(session["state"], "exited", "{session}");
    assert_eq!(session["exit_code"], 3, "{session}");
    t.kennel(&["rm", &name]).run().assert_ok();
    t.kennel(&["rm", &ended]).run().assert_ok();
}

/// Stops `dockerd` (SIGTERM: it stops its containers) and starts it again
/// with the same command line, then waits until it answers.
fn restart_dockerd() {
    let (pid, argv) = find_dockerd().expect("dockerd is not running");
    assert!(
        Command::new("kill")
            .args(["-s", "TERM", &pid.to_string()])
            .status()
            .expect("kill")
            .success(),
        "cannot signal dockerd (run the tests as root)"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "dockerd did not stop");
        std::thread::sleep(Duration::from_millis(200));
    }
    let log_dir = std::path::Path::new("/tmp/kennel-e2e-logs");
    std::fs::create_dir_all(log_dir).expect("log dir");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_dir.join("dockerd.log"))
        .expect("dockerd log");
    // dockerd outlives this test, as it ran before it: never waited for.
    #[allow(clippy::zombie_processes)]
    Command::new("setsid")
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start dockerd again");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if ready {
            return;
        }
        assert!(Instant::now() < deadline, "dockerd did not come back");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The pid and command line of the running `dockerd`.
fn find_dockerd() -> Option<(u32, Vec<String>)> {
    harness::all_processes().into_iter().find_map(|process| {
        let program = std::path::Path::new(process.argv.first()?).file_name()?;
        (program == "dockerd").then_some((process.pid, process.argv))
    })
}
