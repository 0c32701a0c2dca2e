//! Persistent sessions: `kennel start`, then `ls`, `send`, `capture`,
//! `exec`, `attach` (detached again with C-b d), `logs`, `stop` and `rm`,
//! checked against the registry and the engine. Native: not supported yet.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Backend, Ctx, Tmux, sh_quote};

/// The session named `name` in `kennel ls --all --json`.
fn listed(t: &Ctx, name: &str) -> Option<Value> {
    let out = t.kennel(&["ls", "--all", "--json"]).run();
    out.assert_ok();
    out.json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .find(|session| session["name"] == name)
}

fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = f() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

pub fn lifecycle(b: Backend) {
    if b == Backend::Native {
        eprintln!(
            "NOTE native::sessions_lifecycle: kennel start is not supported on the native backend yet"
        );
        let Some(t) = Ctx::new(b, "sessions_lifecycle") else {
            return;
        };
        let out = t.kennel(&["start", "shell"]).run();
        out.assert_code(125);
        assert!(
            out.stderr
                .contains("not yet supported on the native backend"),
            "{out}"
        );
        return;
    }
    let Some(t) = Ctx::with_shell_image(b, "sessions_lifecycle") else {
        return;
    };
    let name = format!("e2e-{}", crate::harness::unique());
    let fail = |e: String| -> ! {
        t.remove_containers();
        panic!("{}: {e}", b.name())
    };

    // start: detached, registered as running, the container runs.
    let out = t
        .kennel(&["start", "shell", "--network", "none", "--name", &name])
        .run();
    out.assert_ok();
    let mut words = out.stdout.split_whitespace();
    assert_eq!(words.next(), Some(name.as_str()), "{out}");
    let id = words
        .next()
        .unwrap_or_else(|| fail(format!("no id printed\n{out}")))
        .to_string();
    let session = listed(&t, &name).unwrap_or_else(|| fail("not in ls".into()));
    assert_eq!(session["state"], "running", "{session}");
    assert_eq!(session["mode"], "persistent", "{session}");
    let container = session["handle"].as_str().unwrap_or_default().to_string();
    assert_eq!(t.inspect(&container)["State"]["Running"], true);

    // send + capture: typed into the agent's shell, read from its screen.
    let out = t.kennel(&["send", &id[..6], "echo hello-$((6*7))"]).run();
    out.assert_ok();
    let screen = poll(Duration::from_secs(10), || {
        let out = t.kennel(&["capture", &name]).run();
        out.success()
            .then_some(())
            .and(out.stdout.contains("hello-42").then_some(out.stdout))
    });
    if screen.is_none() {
        let out = t.kennel(&["capture", &name]).run();
        fail(format!("capture never showed hello-42\n{out}"));
    }

    // exec: a command beside the agent.
    let out = t
        .kennel(&["exec", &name, "--", "cat", "/etc/hostname"])
        .run();
    out.assert_ok();
    assert!(!out.stdout.trim().is_empty(), "{out}");
    let out = t.kennel(&["exec", &name, "--", "sh", "-c", "exit 4"]).run();
    out.assert_code(4);

    // logs: the agent's terminal output so far.
    let out = t.kennel(&["logs", &name]).run();
    out.assert_ok();
    assert!(out.stdout.contains("hello-42"), "{out}");

    // attach from a terminal; C-b d detaches and the session keeps running.
    let command = format!(
        "cd {ws} && {kennel} attach {name}; echo KENNEL-EXIT=$?; sleep 60",
        ws = sh_quote(&t.ws.display().to_string()),
        kennel = sh_quote(&t.kennel_bin.display().to_string()),
    );
    let tmux = Tmux::start(&t, 100, 30, &command);
    tmux.wait_for("hello-42", Duration::from_secs(30), None)
        .unwrap_or_else(|e| fail(format!("attach did not show the agent's screen: {e}")));
    tmux.type_line("echo ATTACHED-$((5+5))");
    tmux.wait_for("ATTACHED-10", Duration::from_secs(20), None)
        .unwrap_or_else(|e| fail(format!("typing through attach: {e}")));
    tmux.run(&["send-keys", "-t", "e2e", "C-b", "d"])
        .assert_ok();
    let pane = tmux
        .wait_for("KENNEL-EXIT=", Duration::from_secs(20), None)
        .unwrap_or_else(|e| fail(format!("C-b d did not detach: {e}")));
    assert!(
        pane.contains("KENNEL-EXIT=0"),
        "detaching must exit 0:\n{pane}"
    );
    drop(tmux);
    let session = listed(&t, &name).unwrap();
    assert_eq!(
        session["state"], "running",
        "detach must leave it running: {session}"
    );
    let out = t.kennel(&["capture", &name]).run();
    assert!(out.stdout.contains("ATTACHED-10"), "{out}");

    // rm refuses a running session.
    let out = t.kennel(&["rm", &name]).run();
    out.assert_code(2);

    // stop: the container stops, ls says so.
    let out = t.kennel(&["stop", &name, "--timeout", "2"]).run();
    out.assert_ok();
    let session = listed(&t, &name).unwrap();
    assert!(
        matches!(session["state"].as_str(), Some("stopped" | "exited")),
        "{session}"
    );
    assert_eq!(t.inspect(&container)["State"]["Running"], false);

    // rm: gone from ls and from the engine.
    let out = t.kennel(&["rm", &name]).run();
    out.assert_ok();
    assert!(listed(&t, &name).is_none(), "still listed after rm");
    let out = t.engine(&["container", "inspect", &container]);
    assert!(
        !out.success(),
        "the container is still there after rm\n{out}"
    );
}

/// A session whose container disappears behind kennel's back is reported
/// stopped by `ls`; `kill` ends a running one.
pub fn real_state_and_kill(b: Backend) {
    if b == Backend::Native {
        eprintln!(
            "NOTE native::sessions_real_state_and_kill: kennel start is not supported on the native backend yet"
        );
        return;
    }
    let Some(t) = Ctx::with_shell_image(b, "sessions_real_state") else {
        return;
    };
    let start = |name: &str| {
        let out = t
            .kennel(&[
                "start",
                "shell",
                "--network",
                "none",
                "--name",
                name,
                "--",
                "sleep",
                "600",
            ])
            .run();
        out.assert_ok();
        listed(&t, name).unwrap()["handle"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let gone = format!("gone-{}", crate::harness::unique());
    let container = start(&gone);
    t.engine(&["rm", "-f", &container]).assert_ok();
    // The engine may still be finishing the removal (Podman shows the killed
    // container as exited for a moment): wait until it is really gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while t.engine(&["inspect", &container]).code() == Some(0) {
        assert!(std::time::Instant::now() < deadline, "{container} was not removed");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let session = listed(&t, &gone).unwrap();
    assert_eq!(session["state"], "stopped", "{session}");
    t.kennel(&["rm", &gone]).run().assert_ok();

    let killed = format!("killed-{}", crate::harness::unique());
    let container = start(&killed);
    t.kennel(&["kill", &killed]).run().assert_ok();
    let session = listed(&t, &killed).unwrap();
    assert!(
        matches!(session["state"].as_str(), Some("stopped" | "exited")),
        "{session}"
    );
    assert_eq!(t.inspect(&container)["State"]["Running"], false);
    t.kennel(&["rm", &killed]).run().assert_ok();

    // An agent that ends by itself: the session exits with its code.
    let ended = format!("ended-{}", crate::harness::unique());
    let out = t
        .kennel(&[
            "start",
            "shell",
            "--network",
            "none",
            "--name",
            &ended,
            "--",
            "sh",
            "-c",
            "exit 5",
        ])
        .run();
    out.assert_ok();
    let session = poll(Duration::from_secs(20), || {
        listed(&t, &ended).filter(|session| session["state"] == "exited")
    })
    .unwrap_or_else(|| panic!("never exited: {:?}", listed(&t, &ended)));
    assert_eq!(session["exit_code"], 5, "{session}");
    t.kennel(&["rm", &ended]).run().assert_ok();
}
