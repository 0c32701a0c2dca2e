//! What reaches the user's terminal and what a crash leaves behind: text
//! the agent wrote is shown with its control characters escaped (`kennel
//! diff`, `kennel logs`), and no sandbox process may dump core or escape
//! the pids limit (the native forwarder included).

use std::time::{Duration, Instant};

use crate::harness::{Backend, Ctx};

/// Escape sequences that would hide a line, retitle the window or ring the
/// terminal, as an agent can put them in a file or on its screen.
const HOSTILE: &str = r"visible\033[2K\033[1Ahidden\033]0;pwned\007\033[31mred\033[0m\r\n";

/// `kennel diff` of a file whose content erases lines and retitles the
/// terminal shows those bytes escaped; `--raw` gives them as they are.
pub fn diff_escapes_control_characters(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_output_diff") else {
        return;
    };
    let script = format!("printf '{HOSTILE}' > evil.txt");
    t.kennel(&[
        "run",
        "shell",
        "--mode",
        "worktree",
        "--network",
        "none",
        "--",
        "sh",
        "-c",
        &script,
    ])
    .run()
    .assert_ok();
    let sessions = t.sessions();
    let name = sessions
        .iter()
        .find_map(|s| s["branch"].as_str().and(s["name"].as_str()))
        .unwrap_or_else(|| panic!("no worktree session: {sessions:?}"))
        .to_string();
    let out = t.kennel(&["diff", &name]).run();
    out.assert_ok();
    assert!(out.stdout.contains("evil.txt"), "{out}");
    for byte in ['\u{1b}', '\u{7}'] {
        assert!(
            !out.stdout.contains(byte),
            "kennel diff passed a raw {byte:?} to the terminal\n{out}"
        );
    }
    assert!(
        out.stdout.contains(r"\x1b[2K") && out.stdout.contains(r"\x07"),
        "the escapes must be shown as text\n{out}"
    );
    let raw = t.kennel(&["diff", "--raw", &name]).run();
    raw.assert_ok();
    assert!(
        raw.stdout.contains("\u{1b}[2K"),
        "--raw gives the bytes\n{raw}"
    );
    t.kennel(&["discard", "--force", &name]).run().assert_ok();
}

/// `kennel logs` of a persistent session whose agent prints hostile
/// sequences: colours stay, everything else is escaped; `--raw` passes all.
pub fn logs_escape_control_characters(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_output_logs") else {
        return;
    };
    let name = format!("hostile-{}", crate::harness::unique());
    let script = format!("printf 'marker-start {HOSTILE}'; sleep 60");
    t.start_offline(&name, &[], &["sh", "-c", &script])
        .run()
        .assert_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = t.kennel(&["logs", &name]).run();
        if out.stdout.contains("red") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    out.assert_ok();
    assert!(out.stdout.contains("marker-start"), "{out}");
    assert!(
        !out.stdout.contains('\u{7}') && !out.stdout.contains("\u{1b}]0;"),
        "kennel logs passed the title sequence and bell to the terminal\n{out}"
    );
    assert!(
        !out.stdout.contains("\u{1b}[2K") && !out.stdout.contains("\u{1b}[1A"),
        "kennel logs passed line-erasing sequences to the terminal\n{out}"
    );
    assert!(
        out.stdout.contains(r"\x1b]0;pwned\x07"),
        "the escapes must be shown as text\n{out}"
    );
    let raw = t.kennel(&["logs", "--raw", &name]).run();
    raw.assert_ok();
    assert!(raw.stdout.contains('\u{7}'), "--raw gives the bytes\n{raw}");
    t.kennel(&["rm", "--force", &name]).run().assert_ok();
}

/// No process in the sandbox may dump core (its memory holds credentials
/// and the user's code), and every one of them is under the pids limit:
/// checked from inside through /proc for each process, which on the native
/// backend includes kennel's proxy forwarder (allowlist mode).
pub fn limits_cover_every_process(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_output_limits") else {
        return;
    };
    let script = "for d in /proc/[0-9]*; do p=${d#/proc/}; [ \"$p\" = 1 ] && continue; \
                  l=$(cat $d/limits 2>/dev/null) || continue; \
                  c=$(printf '%s\\n' \"$l\" | awk '/^Max core file size/ {print $5\"/\"$6}'); \
                  n=$(printf '%s\\n' \"$l\" | awk '/^Max processes/ {print $3\"/\"$4}'); \
                  echo \"PROC $p $(tr '\\0' ' ' < $d/cmdline | cut -c1-60) core=$c nproc=$n\"; done; echo DONE=1";
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--pids-limit",
            "321",
            "--",
            "sh",
            "-c",
            script,
        ])
        .run();
    out.assert_ok();
    assert_eq!(out.expect_kv("DONE"), "1", "{out}");
    let procs: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("PROC "))
        .collect();
    assert!(!procs.is_empty(), "{out}");
    for line in &procs {
        assert!(
            line.contains("core=0/0"),
            "a process may dump core: {line}\n{out}"
        );
    }
    if b == Backend::Native {
        // The forwarder is there (allowlist is the default: a process of
        // kennel's other than PID 1, which is skipped) and limited.
        assert!(
            procs.iter().any(|line| line.contains("__native-init")),
            "the forwarder is missing from the list\n{out}"
        );
        for line in &procs {
            assert!(
                line.contains("nproc=321/321"),
                "outside the pids limit: {line}\n{out}"
            );
        }
    }
}
