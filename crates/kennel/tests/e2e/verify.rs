//! `kennel verify` (issue 17): the escape probes as a user runs them, on
//! each backend — the same probes (`kennel_lib::verify`) users run, so CI
//! and users test the same thing.

use serde_json::Value;

use crate::harness::{BUILD_TIMEOUT, Backend, Ctx};

/// Every probe holds with kennel's defaults, every class reports, the
/// markers it planted are gone afterwards; with a weakened configuration
/// (`network = "open"`) the direct connection to this machine is
/// reported ESCAPED and the exit code is 1.
pub fn verify_holds_and_reports_an_escape(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "verify") else {
        return;
    };
    t.write_config("", "");
    // What is in the user's runtime directory stays (verify binds a socket
    // there and removes only that).
    let runtime = t
        .env()
        .into_iter()
        .find(|(name, _)| name == "XDG_RUNTIME_DIR")
        .map(|(_, dir)| std::path::PathBuf::from(dir));
    let canary = runtime
        .as_ref()
        .map(|dir| dir.join(format!("kennel-e2e-canary-{}", crate::harness::unique())));
    if let Some(canary) = &canary {
        std::fs::write(canary, "stays").unwrap();
    }
    let out = t
        .kennel(&["verify", "--backend", b.kennel_backend(), "--json"])
        .timeout(BUILD_TIMEOUT)
        .run();
    // The e2e user's Incus project is restricted (incus-user's): it may
    // not set raw.seccomp, so Incus's default policy stays and verify
    // says what that lets through — exactly TIOCSTI, exit 1. (As root,
    // in `.ci/run`'s `kennel verify --all`, Incus holds them too.)
    let known: &[&str] = if b == Backend::Incus {
        &["tiocsti"]
    } else {
        &[]
    };
    out.assert_code(if known.is_empty() { 0 } else { 1 });
    let report: Value = out.json();
    let results = report["results"].as_array().cloned().unwrap_or_default();
    let mut escaped: Vec<&str> = results
        .iter()
        .filter(|r| r["outcome"] == "escaped")
        .filter_map(|r| r["probe"].as_str())
        .collect();
    escaped.sort_unstable();
    assert_eq!(escaped, known, "{out}");
    for class in kennel_lib::verify::CLASSES {
        assert!(
            results
                .iter()
                .any(|r| r["class"] == *class && r["outcome"] == "held"),
            "{class} held\n{out}"
        );
    }
    // The probes that broke a backend before kennel closed them (seccomp
    // profile for the engines, raw.seccomp for Incus, a pids cgroup for a
    // root user on native, untracked repositories in the audit), and the
    // host-side steps: each ran and held here.
    for probe in [
        "syscall-ptrace",
        "syscall-io_uring",
        "syscall-unshare-user",
        "syscall-clone-user",
        "syscall-keyctl",
        "tiocsti",
        "pids-limit",
        "abstract-socket",
        "direct-udp",
        "dns",
        "via-proxy-metadata",
        "rebinding-localhost",
        "end-of-run",
        "your-git",
        "next-session",
        "home-channel",
        "real-value",
        "unbound-host",
    ] {
        if known.contains(&probe) {
            continue;
        }
        assert!(
            results
                .iter()
                .any(|r| r["probe"] == probe && r["outcome"] == "held"),
            "{probe} held\n{out}"
        );
    }
    let skipped: Vec<&Value> = results
        .iter()
        .filter(|r| r["outcome"] == "skipped" && r["probe"] != "direct-tcp6")
        .collect();
    assert!(skipped.is_empty(), "nothing skipped here: {skipped:?}");
    assert!(
        results.iter().filter(|r| r["probe"] == "marker").count() >= 3,
        "markers in the home, kennel's directories and another repository\n{out}"
    );
    if let Some(canary) = &canary {
        assert!(canary.exists(), "verify removed {}", canary.display());
        let _ = std::fs::remove_file(canary);
    }
    // Nothing of verify's is left in the user's home.
    let marker = report["marker"].as_str().unwrap_or_default().to_string();
    assert!(marker.starts_with(".kennel-verify-"), "{out}");
    let left = usize::from(t.user.home.join(&marker).exists());
    assert_eq!(left, 0, "verify's markers are removed");

    if b.has_engine() {
        t.write_config("network = \"open\"", "");
        let weak = t
            .kennel(&[
                "verify",
                "--backend",
                b.kennel_backend(),
                "--only",
                "network",
            ])
            .timeout(BUILD_TIMEOUT)
            .run();
        weak.assert_code(1);
        assert!(
            weak.stdout
                .lines()
                .any(|line| line.contains("direct-tcp") && line.contains("ESCAPED")),
            "{weak}"
        );
    }
    if b == Backend::Docker {
        t.write_config("", "");
        for mode in ["worktree", "clone"] {
            let moded = t
                .kennel(&["verify", "--backend", "docker", "--mode", mode, "--json"])
                .timeout(BUILD_TIMEOUT)
                .run();
            moded.assert_ok();
            assert_eq!(moded.json()["escaped"], 0, "{moded}");
            assert!(
                moded.json()["held"].as_u64().unwrap_or(0) >= 10,
                "{mode}: the probes ran\n{moded}"
            );
        }
    }
    let usage = t.kennel(&["verify", "--only", "nonsense"]).run();
    usage.assert_code(2);
}

/// Ctrl-C in the middle (SIGINT to kennel verify while its sandbox runs):
/// exit 130, its markers removed, no sandbox of its left running, its
/// scratch directory gone.
pub fn verify_interrupted_leaves_nothing(b: Backend) {
    if !matches!(b, Backend::Docker | Backend::Podman) {
        eprintln!(
            "{}::verify_interrupted: covered on docker and podman (a native run is over before a signal can land)",
            b.name()
        );
        return;
    }
    let Some(t) = Ctx::with_shell_image(b, "verify_interrupted") else {
        return;
    };
    t.write_config("", "");
    // A home of its own: other tests' runs of kennel verify plant markers
    // in the shared one.
    let home = t.scratch().join("verify-home");
    std::fs::create_dir_all(&home).unwrap();
    t.user.chown(&home);
    let home_text = home.display().to_string();
    let markers = |home: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(home)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with(".kennel-verify-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    // The run is short: try until the signal lands while it runs.
    for attempt in 0..5 {
        let before = markers(&home);
        let mut bg = t.spawn_kennel_env(
            &["verify", "--backend", b.kennel_backend()],
            &[("HOME", home_text.as_str())],
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut ours = None;
        while ours.is_none() && std::time::Instant::now() < deadline && bg.try_wait().is_none() {
            ours = markers(&home)
                .into_iter()
                .find(|name| !before.contains(name));
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let Some(ours) = ours else {
            let _ = bg.wait_for(std::time::Duration::from_secs(60));
            eprintln!(
                "attempt {attempt}: verify ended before the signal\n{}",
                bg.output()
            );
            continue;
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        bg.signal("INT");
        let (status, timed_out) = bg.wait_for(std::time::Duration::from_secs(60));
        assert!(!timed_out, "verify stops when interrupted\n{}", bg.output());
        let code = status.and_then(|status| status.code());
        if code == Some(0) {
            eprintln!(
                "attempt {attempt}: verify ended before the signal\n{}",
                bg.output()
            );
            continue;
        }
        assert_eq!(code, Some(130), "{}", bg.output());
        let token = ours.trim_start_matches('.').to_string();
        assert!(!home.join(&ours).exists(), "the marker is removed");
        // Named with the token's first 22 characters, in the home's cache
        // (or the temporary directory).
        let prefix = &token[..22];
        let scratch_left = [home.join(".cache"), std::env::temp_dir()]
            .iter()
            .any(|dir| {
                std::fs::read_dir(dir)
                    .map(|entries| {
                        entries
                            .flatten()
                            .any(|entry| entry.file_name().to_string_lossy().starts_with(prefix))
                    })
                    .unwrap_or(false)
            });
        assert!(!scratch_left, "the scratch directory is removed");
        if b.has_engine() {
            let left = t.engine(&[
                "ps",
                "-a",
                "--format",
                "{{.Label \"dev.kennel.workspace\"}}",
            ]);
            assert!(
                !left.stdout.contains(&token),
                "no sandbox of verify's is left\n{left}"
            );
        }
        return;
    }
    panic!("five runs of kennel verify ended before the signal could land");
}
