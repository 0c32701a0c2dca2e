//! `kennel verify` (issue 17, first part): the escape probes as a user
//! runs them, on each backend.

use serde_json::Value;

use crate::harness::{BUILD_TIMEOUT, Backend, Ctx};

/// Every probe holds with kennel's defaults, every class reports, the
/// markers it planted are gone afterwards; with a weakened configuration
/// (`network = "open"`) the direct connection to this machine is
/// reported ESCAPED and the exit code is 1.
pub fn verify_holds_and_reports_an_escape(b: Backend) {
    if b == Backend::Incus {
        eprintln!("incus::verify: not yet (kennel verify tries docker, podman and native)");
        return;
    }
    let Some(t) = Ctx::with_shell_image(b, "verify") else {
        return;
    };
    t.write_config("", "");
    let out = t
        .kennel(&["verify", "--backend", b.kennel_backend(), "--json"])
        .timeout(BUILD_TIMEOUT)
        .run();
    out.assert_ok();
    let report: Value = out.json();
    let results = report["results"].as_array().cloned().unwrap_or_default();
    for class in ["files", "privilege", "network"] {
        assert!(
            results
                .iter()
                .any(|r| r["class"] == class && r["outcome"] == "held"),
            "{class} held\n{out}"
        );
    }
    assert_eq!(report["escaped"], 0, "{out}");
    assert!(
        results.iter().filter(|r| r["probe"] == "marker").count() >= 3,
        "markers in the home, kennel's directories and another repository\n{out}"
    );
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
        let scratch_left = std::fs::read_dir(std::env::temp_dir())
            .map(|entries| {
                entries
                    .flatten()
                    .any(|entry| entry.file_name().to_string_lossy().starts_with(&token))
            })
            .unwrap_or(false);
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
