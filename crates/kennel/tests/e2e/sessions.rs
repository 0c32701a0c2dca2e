//! Persistent sessions: `kennel start`, then `ls`, `send`, `capture`,
//! `exec`, `attach` (detached again with C-b d), `logs`, `stop` and `rm`,
//! checked against the registry and the engine. Native: not supported yet.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Backend, Ctx, Tmux, sh_quote};

/// The session named `name` in `kennel ls --all --json`.
fn listed(t: &Ctx, name: &str) -> Option<Value> {
    t.session(name)
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
    let Some(t) = Ctx::with_shell_image(b, "sessions_lifecycle") else {
        return;
    };
    let name = format!("e2e-{}", crate::harness::unique());
    let fail = |e: String| -> ! {
        t.remove_containers();
        panic!("{}: {e}", b.name())
    };

    // start: detached, registered as running, the container runs.
    let out = t.start_offline(&name, &[], &[]).run();
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
    if b.has_engine() {
        assert_eq!(t.inspect(&container)["State"]["Running"], true);
    } else {
        // Native: the handle is the session's directory; its kennel runs
        // the sandbox in a tmux pane of its own.
        assert!(Path::new(&container).is_dir(), "{session}");
        assert!(!native_session_kennels(&container).is_empty(), "{session}");
    }

    // send + capture: typed into the agent's shell, read from its screen.
    // A prompt that fits the line: bash redraws its prompt when `attach`
    // resizes the window, and a prompt it had wrapped makes it redraw over
    // the line above (which erased hello-42 from the attached screen once).
    t.kennel(&["send", &name, "PS1='$ '"]).run().assert_ok();
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
    // A command that does not exist: 127, as `kennel run` and the shell say.
    let out = t
        .kennel(&["exec", &name, "--", "kennel-e2e-no-such-command"])
        .run();
    out.assert_code(127);
    let out = t.kennel(&["exec", &name, "--", "sh", "-c", "exit 4"]).run();
    out.assert_code(4);

    // logs: the agent's terminal output so far.
    let out = t.kennel(&["logs", &name]).run();
    out.assert_ok();
    assert!(out.stdout.contains("hello-42"), "{out}");
    // `logs -f | head -1`: the reader goes away after a line, and kennel
    // ends at once, quietly, instead of following for no one.
    let (mut follow, what) = t.kennel_command(&["logs", "-f", &name], &[]);
    let mut child = follow
        .current_dir(&t.ws)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(format!("{what}: {e}")));
    let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).expect("a line");
    drop(reader);
    // The next write fails: have the agent print something.
    t.kennel(&["send", &name, "echo after-the-reader-left"])
        .run()
        .assert_ok();
    let ended = poll(Duration::from_secs(20), || child.try_wait().ok().flatten());
    let Some(status) = ended else {
        let _ = child.kill();
        fail(format!("{what} kept following after its reader went away"));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert_eq!(status.code(), Some(0), "{what}: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");

    // attach from a terminal; C-b d detaches and the session keeps running.
    let command = format!(
        "cd {ws} && {kennel} attach {name}; echo KENNEL-EXIT=$?; sleep 60",
        ws = sh_quote(&t.ws.display().to_string()),
        kennel = sh_quote(&t.kennel_bin.display().to_string()),
    );
    let tmux = Tmux::start(&t, 100, 30, &command);
    tmux.wait_for("hello-42", Duration::from_secs(30), None)
        .unwrap_or_else(|e| fail(format!("attach did not show the agent's screen: {e}")));
    // The keys reached the agent's shell when the command they spell has
    // run: judged by the file it writes in the workspace, not by either
    // screen (bash redraws its prompt over the line above when the attach
    // resizes its window late, which erased the echoed answer once in CI).
    tmux.type_line("echo ATTACHED-$((5+5)) > attached.txt");
    let attached = t.ws.join("attached.txt");
    let typed = poll(Duration::from_secs(20), || {
        std::fs::read_to_string(&attached)
            .ok()
            .filter(|text| text == "ATTACHED-10\n")
    });
    if typed.is_none() {
        let inner = t.kennel(&["capture", &name]).run();
        fail(format!(
            "typing through attach: attached.txt never said ATTACHED-10\nouter terminal:\n{}\nkennel capture:\n{inner}",
            tmux.capture()
        ));
    }
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
    // And the agent still takes input after the detach.
    let out = t
        .kennel(&["send", &name, "echo STILL-$((2+3)) > still.txt"])
        .run();
    out.assert_ok();
    let still = t.ws.join("still.txt");
    if poll(Duration::from_secs(10), || {
        std::fs::read_to_string(&still)
            .ok()
            .filter(|text| text == "STILL-5\n")
    })
    .is_none()
    {
        let out = t.kennel(&["capture", &name]).run();
        fail(format!("the agent took no input after the detach\n{out}"));
    }

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
    if b.has_engine() {
        assert_eq!(t.inspect(&container)["State"]["Running"], false);
    } else {
        assert!(
            native_session_kennels(&container).is_empty(),
            "its kennel still runs"
        );
        assert!(
            t.workspace_containers().is_empty(),
            "sandbox processes outlived the session"
        );
        assert!(
            !Path::new(&container).exists(),
            "its directory (with the Plan) is left"
        );
    }

    // rm: gone from ls and from the engine.
    let out = t.kennel(&["rm", &name]).run();
    out.assert_ok();
    assert!(listed(&t, &name).is_none(), "still listed after rm");
    if b.has_engine() {
        assert!(
            !t.sandbox_exists(&container),
            "the container is still there after rm"
        );
    }
}

/// `rm -f` of a session's container with the engine's own CLI, waiting
/// until it is really gone (Podman shows a killed container as exited for a
/// moment while it removes it).
fn remove_behind_kennels_back(t: &Ctx, container: &str) {
    t.remove_sandbox_now(container);
}

/// PIDs of the `kennel __native-session DIR …` processes of the native
/// session whose directory is `dir`.
fn native_session_kennels(dir: &str) -> Vec<u32> {
    crate::harness::all_processes()
        .into_iter()
        // argv[1], not anywhere: tmux's server keeps the command line of
        // the `new-session` that started it.
        .filter(|process| {
            process.argv.get(1).map(String::as_str) == Some("__native-session")
                && process.argv.get(2).map(String::as_str) == Some(dir)
        })
        .map(|process| process.pid)
        .collect()
}

/// A session whose container disappears behind kennel's back is reported
/// stopped by `ls`; `kill` ends a running one.
pub fn real_state_and_kill(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "sessions_real_state") else {
        return;
    };
    let start = |name: &str| {
        let out = t.start_offline(name, &[], &["sleep", "600"]).run();
        out.assert_ok();
        listed(&t, name).unwrap()["handle"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let gone = format!("gone-{}", crate::harness::unique());
    let container = start(&gone);
    if b.has_engine() {
        remove_behind_kennels_back(&t, &container);
    } else {
        // Native: the session's kennel is killed behind kennel's back; its
        // sandbox dies with it.
        let kennels = native_session_kennels(&container);
        assert_eq!(kennels.len(), 1, "{kennels:?}");
        std::process::Command::new("kill")
            .args(["-s", "KILL", &kennels[0].to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !t.workspace_containers().is_empty() {
            assert!(Instant::now() < deadline, "the sandbox outlived its kennel");
            std::thread::sleep(Duration::from_millis(100));
        }
        // `clean` removes what it left (its tmux server and directory).
        assert!(Path::new(&container).exists());
        let out = t.kennel(&["clean", "--force"]).run();
        out.assert_ok();
        assert!(out.stderr.contains("its files will be removed"), "{out}");
        assert!(!Path::new(&container).exists(), "{out}");
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
    if b.has_engine() {
        assert_eq!(t.inspect(&container)["State"]["Running"], false);
    } else {
        assert!(native_session_kennels(&container).is_empty());
    }
    t.kennel(&["rm", &killed]).run().assert_ok();

    // An agent that ends by itself: the session exits with its code.
    let ended = format!("ended-{}", crate::harness::unique());
    let out = t.start_offline(&ended, &[], &["sh", "-c", "exit 5"]).run();
    out.assert_ok();
    let session = poll(Duration::from_secs(20), || {
        listed(&t, &ended).filter(|session| session["state"] == "exited")
    })
    .unwrap_or_else(|| panic!("never exited: {:?}", listed(&t, &ended)));
    assert_eq!(session["exit_code"], 5, "{session}");
    t.kennel(&["rm", &ended]).run().assert_ok();
}

/// Every session in `kennel ls --all --json`.
fn all_sessions(t: &Ctx) -> Vec<Value> {
    t.sessions()
}

/// Parallel sessions of one agent in one workspace get distinct slots, each
/// with its own agent home: a copy of the agent's home at first, its own
/// from then on. 10 concurrent `kennel start shell`, all running, with the
/// limits given as flags in `ls --json` (and on the container; native says
/// it cannot apply memory and CPU limits).
pub fn slots(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "sessions_slots") else {
        return;
    };
    // Slot 0's home (the agent's own) gets a file every new slot starts with.
    t.sh("echo seeded > ~/seed").run().assert_ok();

    let names: Vec<String> = (0..10)
        .map(|n| format!("slot{n}-{}", crate::harness::unique()))
        .collect();
    let outs: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = names
            .iter()
            .map(|name| {
                let t = &t;
                scope.spawn(move || {
                    t.start_offline(
                        name,
                        &["--memory", "256m", "--cpus", "0.5", "--pids-limit", "200"],
                        &["sleep", "600"],
                    )
                    .timeout(Duration::from_secs(180))
                    .run()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let fail = |e: String| -> ! {
        t.remove_containers();
        panic!("{}: {e}", b.name())
    };
    for out in &outs {
        if !out.success() {
            fail(format!("a parallel start failed\n{out}"));
        }
    }
    let sessions = all_sessions(&t);
    let ours: Vec<&Value> = sessions
        .iter()
        .filter(|s| names.iter().any(|name| s["name"] == name.as_str()))
        .collect();
    assert_eq!(ours.len(), 10, "{sessions:?}");
    let mut slots: Vec<i64> = ours.iter().filter_map(|s| s["slot"].as_i64()).collect();
    slots.sort();
    assert_eq!(slots, (0..10).collect::<Vec<i64>>(), "{ours:?}");
    let mut homes = Vec::new();
    for session in &ours {
        assert_eq!(session["state"], "running", "{session}");
        assert_eq!(session["limits"]["memory"], 256 << 20, "{session}");
        assert_eq!(session["limits"]["cpus"], 0.5, "{session}");
        assert_eq!(session["limits"]["pids"], 200, "{session}");
        if !b.has_engine() {
            // Native: no container to inspect; the homes are checked below.
            let name = session["name"].as_str().unwrap_or("?");
            let out = outs
                .iter()
                .find(|out| out.stdout.contains(name))
                .unwrap_or_else(|| fail(format!("no start printed {name}")));
            assert!(
                out.stderr.contains("cannot limit memory or CPU"),
                "native must say it cannot limit memory or CPU\n{out}"
            );
            continue;
        }
        let container = session["handle"].as_str().unwrap_or_default();
        let info = t.inspect(container);
        assert_eq!(info["State"]["Running"], true, "{session}");
        if b != Backend::PodmanRootless {
            assert_eq!(info["HostConfig"]["Memory"], 256 << 20, "{session}");
            assert_eq!(info["HostConfig"]["NanoCpus"], 500_000_000, "{session}");
        } else if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            // Rootless Podman drops memory and CPU limits on cgroup v1
            // without a word: kennel must say so.
            for out in &outs {
                assert!(out.stderr.contains("not enforced"), "{out}");
            }
        }
        let home = t
            .sandbox_binds(container)
            .into_iter()
            .find(|bind| bind.target == t.user.home)
            .unwrap_or_else(|| fail(format!("no agent home bound in {session}")));
        homes.push((session["slot"].as_i64().unwrap_or(-1), home.source));
    }
    if !b.has_engine() {
        // The workspace's own agent home (per repository) and its slots.
        let base = crate::escape_homes::agent_home(&t, "shell", &t.ws);
        for slot in 1..10 {
            let home = base.with_file_name(format!("shell@{slot}"));
            homes.push((slot, home.clone()));
            assert!(home.is_dir(), "no home for slot {slot}: {}", home.display());
        }
        homes.push((0, base));
    }
    let mut distinct: Vec<_> = homes.iter().map(|(_, home)| home.clone()).collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        10,
        "agent homes must be distinct: {homes:?}"
    );

    // Every slot starts from the agent's home, and keeps its own.
    let name_of_slot = |slot: i64| {
        ours.iter()
            .find(|s| s["slot"] == slot)
            .and_then(|s| s["name"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let (three, four) = (name_of_slot(3), name_of_slot(4));
    let out = t
        .kennel(&[
            "exec",
            &three,
            "--",
            "cat",
            &format!("{}/seed", t.user.home.display()),
        ])
        .run();
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "seeded", "{out}");
    let mine = format!("{}/mine", t.user.home.display());
    t.kennel(&[
        "exec",
        &three,
        "--",
        "sh",
        "-c",
        &format!("echo three > {mine}"),
    ])
    .run()
    .assert_ok();
    let out = t.kennel(&["exec", &four, "--", "cat", &mine]).run();
    assert!(!out.success(), "slot 4 sees slot 3's file\n{out}");

    for name in &names {
        t.kennel(&["rm", "--force", name]).run().assert_ok();
    }
    assert!(
        t.workspace_containers().is_empty(),
        "containers left after rm"
    );
}

/// `--resume` continues the agent home of the newest session of the agent in
/// this workspace (or of the one named), and never one of another workspace.
pub fn resume(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "sessions_resume") else {
        return;
    };
    // A session holding slot 0, so that the next one gets slot 1.
    let mut holder = t.spawn_kennel(&["run", "shell", "--network", "none", "--", "sleep", "600"]);
    t.wait_for_container(&mut holder, Duration::from_secs(120));
    let out = t.sh("echo resumed-state > ~/note").run();
    out.assert_ok();
    holder.stop();
    let sessions = all_sessions(&t);
    let writer = sessions
        .iter()
        .find(|s| s["slot"] == 1)
        .unwrap_or_else(|| panic!("no session in slot 1: {sessions:?}"));
    let writer_name = writer["name"].as_str().unwrap_or_default().to_string();

    // A fresh run takes the lowest free slot (0): the note is not there.
    let out = t.sh("cat ~/note").run();
    assert!(!out.success(), "slot 0 must not have slot 1's state\n{out}");
    // --resume continues the newest session that ran: not the one above
    // (it ran too, in slot 0)... so name it; then the newest is the resumed one.
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--resume",
            &writer_name,
            "--",
            "cat",
            "/dev/null",
        ])
        .run();
    out.assert_ok();
    let out = t
        .kennel(&["run", "shell", "--resume", "--", "sh", "-c", "cat ~/note"])
        .run();
    out.assert_ok();
    assert_eq!(out.stdout.trim(), "resumed-state", "{out}");

    // Another workspace: nothing to resume there, and this one's sessions
    // are refused by name.
    let other = t.scratch().join("other-repo");
    std::fs::create_dir_all(&other).unwrap();
    t.user.chown(&other);
    let other_text = other.display().to_string();
    t.as_user(&["git", "init", "-q", &other_text])
        .run()
        .assert_ok();
    let out = t
        .kennel(&["run", "shell", "-w", &other_text, "--resume", "--", "true"])
        .run();
    out.assert_code(2);
    assert!(out.stderr.contains("no earlier session of shell"), "{out}");
    let out = t
        .kennel(&[
            "run",
            "shell",
            "-w",
            &other_text,
            "--resume",
            &writer_name,
            "--",
            "true",
        ])
        .run();
    out.assert_code(2);
    assert!(out.stderr.contains("only"), "{out}");
}

/// Promise 8: kill -9 kennel while its agent runs. The workspace is intact;
/// `ls` tells the truth (a container runs on, orphaned; a native sandbox
/// died with kennel); `kennel clean` removes the orphan and records it.
pub fn killed_kennel(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "sessions_killed_kennel") else {
        return;
    };
    t.git(&["status", "--porcelain"]);
    let before = std::fs::read(t.ws.join("README.md")).unwrap();
    let mut run = t.spawn_kennel(&[
        "run",
        "shell",
        "--network",
        "none",
        "--",
        "sh",
        "-c",
        "echo work > work.txt; sleep 600",
    ]);
    t.wait_for_container(&mut run, Duration::from_secs(120));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !t.ws.join("work.txt").exists() {
        assert!(Instant::now() < deadline, "the agent never wrote work.txt");
        std::thread::sleep(Duration::from_millis(100));
    }
    run.signal("KILL");
    run.wait_for(Duration::from_secs(10));

    assert_eq!(std::fs::read(t.ws.join("README.md")).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(t.ws.join("work.txt")).unwrap(),
        "work\n"
    );
    assert_eq!(t.git(&["status", "--porcelain"]).trim(), "?? work.txt");

    let session = || {
        all_sessions(&t)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no session listed"))
    };
    if b == Backend::Native {
        let listed = session();
        assert_eq!(listed["state"], "stopped", "{listed}");
        assert!(
            t.wait_no_containers(Duration::from_secs(10)).is_empty(),
            "the native sandbox outlived kennel"
        );
        let out = t.kennel(&["clean", "--force"]).run();
        out.assert_ok();
        assert!(out.stderr.contains("nothing to clean"), "{out}");
        return;
    }
    let listed = session();
    assert_eq!(listed["state"], "running", "{listed}");
    assert_eq!(listed["orphaned"], true, "{listed}");
    let out = t.kennel(&["ls"]).run();
    assert!(out.stdout.contains("orphaned"), "{out}");

    // Asks first; without a terminal it refuses and removes nothing.
    let out = t.kennel(&["clean"]).run();
    out.assert_code(2);
    assert!(out.stderr.contains("--force"), "{out}");
    assert_eq!(t.workspace_containers().len(), 1);

    let out = t.kennel(&["clean", "--force"]).run();
    out.assert_ok();
    assert!(out.stderr.contains("its kennel was killed"), "{out}");
    let left = t.wait_no_containers(Duration::from_secs(20));
    assert!(left.is_empty(), "clean left {left:?}");
    let listed = session();
    assert_eq!(listed["state"], "stopped", "{listed}");
    assert_eq!(listed["orphaned"], false, "{listed}");
    assert_eq!(std::fs::read(t.ws.join("README.md")).unwrap(), before);
}

/// `kennel clean` on the engines: a session whose container was removed
/// behind kennel's back is forgotten; a container whose session is gone
/// (the registry was deleted) is removed; another data directory's
/// container on the same engine is never touched.
pub fn clean(b: Backend) {
    if b == Backend::Native {
        eprintln!("NOTE native::sessions_clean: native sessions leave no containers");
        return;
    }
    let Some(t) = Ctx::with_shell_image(b, "sessions_clean") else {
        return;
    };
    let start = |name: &str, extra: &[(&str, &str)]| {
        let out = t
            .kennel_env(
                &[
                    "start",
                    "shell",
                    "--network",
                    "none",
                    "--name",
                    name,
                    "--",
                    "sleep",
                    "600",
                ],
                extra,
            )
            .run();
        out.assert_ok();
    };
    let other_data = t.scratch().join("other-data");
    std::fs::create_dir_all(&other_data).unwrap();
    t.user.chown(&other_data);
    let other_data_text = other_data.display().to_string();
    let foreign = format!("foreign-{}", crate::harness::unique());
    start(&foreign, &[("XDG_DATA_HOME", &other_data_text)]);

    let out = t.kennel(&["clean", "--force"]).run();
    out.assert_ok();
    assert!(out.stderr.contains("nothing to clean"), "{out}");

    let gone = format!("gone-{}", crate::harness::unique());
    let lost = format!("lost-{}", crate::harness::unique());
    start(&lost, &[]);
    let lost_container = listed(&t, &lost).unwrap()["handle"]
        .as_str()
        .unwrap()
        .to_string();
    // The registry is deleted: `lost`'s container has no session any more.
    // Then `gone`'s container is removed behind kennel's back.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(t.data_home.join(format!("kennel/sessions.db{suffix}")));
    }
    start(&gone, &[]);
    let container = listed(&t, &gone).unwrap()["handle"]
        .as_str()
        .unwrap()
        .to_string();
    remove_behind_kennels_back(&t, &container);

    let out = t.kennel(&["clean", "--force"]).run();
    out.assert_ok();
    assert!(out.stderr.contains(&format!("session {gone}")), "{out}");
    assert!(out.stderr.contains("its session is gone"), "{out}");
    assert!(listed(&t, &gone).is_none(), "{gone} is still listed");
    assert!(
        !t.sandbox_exists(&lost_container),
        "the container without a session is still there"
    );
    // The other data directory's session was not touched.
    let others = t
        .kennel_env(&["ls", "--json"], &[("XDG_DATA_HOME", &other_data_text)])
        .run();
    others.assert_ok();
    let foreign_session = others.json()["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .find(|s| s["name"] == foreign.as_str())
        .unwrap_or_else(|| panic!("{foreign} vanished\n{others}"));
    assert_eq!(foreign_session["state"], "running", "{foreign_session}");
    t.kennel_env(
        &["rm", "--force", &foreign],
        &[("XDG_DATA_HOME", &other_data_text)],
    )
    .run()
    .assert_ok();
    let out = t.kennel(&["clean", "--force"]).run();
    out.assert_ok();
    assert!(out.stderr.contains("nothing to clean"), "{out}");
}
