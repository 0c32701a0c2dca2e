//! The behaviours every backend must show. Each function is one test, run by
//! `backend_suite!` (in `e2e.rs`) once per backend.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Backend, Ctx, Tmux, jget, sh_quote, unique};

// ------------------------------------------------------------ 1. process

/// Exit code, stdout and stderr pass through separately and byte-for-byte.
pub fn exit_code_and_streams(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "exit_code_and_streams") else {
        return;
    };
    let out = t
        .sh(r#"printf 'out\tline\r\nno-newline'; printf 'err-line\n' >&2; exit 7"#)
        .run();
    out.assert_code(7);
    assert_eq!(
        out.stdout_raw,
        b"out\tline\r\nno-newline".to_vec(),
        "stdout must pass through unchanged (no tty translation, nothing added)\n{out}"
    );
    assert!(
        out.stderr.contains("err-line\n"),
        "stderr must carry the agent's stderr\n{out}"
    );

    let out = t
        .kennel(&["run", "shell", "--", "sh", "-c", "exit 0"])
        .run();
    out.assert_ok();
    let out = t.kennel(&["run", "shell", "--", "false"]).run();
    out.assert_code(1);
    // A command that does not exist: 127 on every backend.
    let out = t
        .kennel(&["run", "shell", "--", "kennel-e2e-no-such-command"])
        .run();
    out.assert_code(127);
}

/// `KENNEL_TIMING=1`: one note line at the end with kennel's stages in
/// the order they ran, each in microseconds, and a total no smaller than
/// their sum; the agent's exit code and output unchanged. On the native
/// backend the sandbox's own stages (marked by its helper, init and the
/// agent's process before exec) are in it, in their order.
pub fn timing_breakdown(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "timing_breakdown") else {
        return;
    };
    let out = t
        .kennel_env(
            &["run", "shell", "--", "sh", "-c", "echo agent-out; exit 3"],
            &[("KENNEL_TIMING", "1")],
        )
        .run();
    out.assert_code(3);
    assert_eq!(out.stdout.trim(), "agent-out", "{out}");
    let line = out
        .stderr
        .lines()
        .find_map(|line| line.strip_prefix("kennel: timing: "))
        .unwrap_or_else(|| panic!("no timing line\n{out}"));
    // Names may hold ", " (`landlock, seccomp`): split on the unit.
    let stages: Vec<(String, u64)> = line
        .split(" µs")
        .map(|part| part.trim_start_matches(", "))
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (name, micros) = part.rsplit_once(' ').expect("NAME N");
            (name.to_string(), micros.parse().expect("microseconds"))
        })
        .collect();
    let names: Vec<&str> = stages.iter().map(|(name, _)| name.as_str()).collect();
    let expected: &[&str] = match b {
        Backend::Native => &[
            "parse",
            "workspace",
            "registry",
            "native: prepare",
            "helper: plan",
            "namespaces",
            "mounts",
            "landlock, seccomp",
            "agent",
            "init exit",
            "helper exit",
            "sandbox",
            "git audit: check",
            "total",
        ],
        _ => &[
            "parse",
            "workspace",
            "registry",
            "sandbox",
            "git audit: check",
            "total",
        ],
    };
    let mut at = 0;
    for stage in expected {
        let found = names[at..]
            .iter()
            .position(|name| name == stage)
            .unwrap_or_else(|| panic!("{stage} missing or out of order in {names:?}\n{out}"));
        at += found + 1;
    }
    let (total, parts) = stages.split_last().expect("stages");
    let sum: u64 = parts.iter().map(|(_, micros)| micros).sum();
    assert!(
        total.1 >= sum && sum > 0,
        "total {} µs, stages {sum} µs\n{out}",
        total.1
    );
    // Not asked: no line.
    let out = t.kennel(&["run", "shell", "--", "true"]).run();
    out.assert_ok();
    assert!(!out.stderr.contains("timing:"), "{out}");
}

/// stdin is forwarded, including EOF, without a terminal.
pub fn stdin_passthrough(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "stdin_passthrough") else {
        return;
    };
    let out = t.kennel(&["run", "shell", "--", "cat"]).stdin("hi\n").run();
    out.assert_ok();
    assert_eq!(
        out.stdout, "hi\n",
        "`echo hi | kennel run shell -- cat` must print hi\n{out}"
    );

    // A larger stream, to catch truncation or a lost EOF.
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| b"abcdefghij\n"[(i % 11) as usize])
        .collect();
    let out = t
        .kennel(&["run", "shell", "--", "wc", "-c"])
        .stdin(data)
        .run();
    out.assert_ok();
    assert_eq!(
        out.stdout.trim(),
        "300000",
        "all of stdin must arrive\n{out}"
    );
}

/// Under a terminal: the sandbox gets a pty of the right size, follows a
/// resize, and kennel exits with the shell's code.
pub fn pty_and_resize(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "pty_and_resize") else {
        return;
    };
    let command = format!(
        "cd {ws} && {kennel} run shell; echo KENNEL-EXIT=$?; sleep 60",
        ws = sh_quote(&t.ws.display().to_string()),
        kennel = sh_quote(&t.kennel_bin.display().to_string()),
    );
    let tmux = Tmux::start(&t, 100, 30, &command);
    let fail = |e: String| -> ! {
        t.remove_containers();
        panic!("{}: {e}", b.name())
    };
    // Typed repeatedly until the sandbox's shell answers: `$((40+2))` only
    // becomes 42 when a shell runs it, the echo of the typed line shows the
    // expression.
    tmux.wait_for(
        "READY-42",
        Duration::from_secs(120),
        Some(("echo READY-$((40+2))", Duration::from_secs(3))),
    )
    .unwrap_or_else(|e| fail(e));
    let pane = tmux.capture();
    assert!(
        !pane.contains("KENNEL-EXIT="),
        "kennel exited early:\n{pane}"
    );

    tmux.wait_for(
        "SIZE1:30 100",
        Duration::from_secs(20),
        Some(("stty size | sed s/^/SIZE1:/", Duration::from_secs(4))),
    )
    .unwrap_or_else(|e| fail(format!("initial terminal size: {e}")));

    tmux.run(&["resize-window", "-t", "e2e", "-x", "120", "-y", "40"])
        .assert_ok();
    tmux.wait_for(
        "SIZE2:40 120",
        Duration::from_secs(20),
        Some(("stty size | sed s/^/SIZE2:/", Duration::from_secs(2))),
    )
    .unwrap_or_else(|e| fail(format!("size after resize-window: {e}")));

    tmux.type_line("exit 3");
    tmux.wait_for("KENNEL-EXIT=", Duration::from_secs(30), None)
        .unwrap_or_else(|e| fail(format!("kennel did not exit after `exit 3`: {e}")));
    let pane = tmux.capture();
    assert!(
        pane.contains("KENNEL-EXIT=3"),
        "kennel must exit with the shell's code 3:\n{pane}"
    );
    let left = t.wait_no_containers(Duration::from_secs(5));
    assert!(
        left.is_empty(),
        "container left after the shell exited: {left:?}"
    );
}

fn signal_stops_sandbox(b: Backend, name: &str, sig: &str) {
    let Some(t) = Ctx::with_shell_image(b, name) else {
        return;
    };
    let mut bg = t.spawn_kennel(&[
        "run",
        "shell",
        "--",
        "sh",
        "-c",
        "echo AGENT-READY; exec sleep 300",
    ]);
    let id = t.wait_for_container(&mut bg, Duration::from_secs(120));
    // The agent runs (so the container's init has its signal handlers): a
    // signal in the first instants of a container can be lost in its init
    // and then waits for kennel's kill after 10 s (seen once in CI under
    // load), which is not what this test is about.
    let ready = Instant::now();
    while !bg.output().lines().any(|line| line.trim() == "AGENT-READY") {
        if ready.elapsed() > Duration::from_secs(60) || bg.try_wait().is_some() {
            bg.stop();
            t.remove_containers();
            panic!(
                "the agent never started
{}",
                bg.output()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Instant::now();
    bg.signal(sig);
    let (status, timed_out) = bg.wait_for(Duration::from_secs(10));
    if timed_out {
        bg.stop();
        t.remove_containers();
        panic!(
            "kennel did not exit within 10 s of SIG{sig}\n{}",
            bg.output()
        );
    }
    let took = sent.elapsed();
    assert!(
        status.is_some_and(|s| !s.success()),
        "kennel must report the interruption with a non-zero status, got {status:?}\n{}",
        bg.output()
    );
    let left = t.wait_no_containers(Duration::from_secs(3));
    if !left.is_empty() {
        t.remove_containers();
        panic!(
            "SIG{sig}: kennel exited after {took:?} ({status:?}) but left containers {left:?} (first was {id})\n{}",
            bg.output()
        );
    }
}

pub fn sigterm_stops_sandbox(b: Backend) {
    signal_stops_sandbox(b, "sigterm_stops_sandbox", "TERM");
}

pub fn sigint_stops_sandbox(b: Backend) {
    signal_stops_sandbox(b, "sigint_stops_sandbox", "INT");
}

// ------------------------------------------------------------ 2. identity

const IDENTITY_PROBE: &str = r#"
echo "USER=$(id -un)"
echo "UID=$(id -u)"
echo "GID=$(id -g)"
echo "HOME=$HOME"
if [ -d "$HOME" ] && echo ok > "$HOME/.kennel-e2e-write" && [ "$(cat "$HOME/.kennel-e2e-write")" = ok ]; then
    echo HOME_WRITABLE=yes; else echo HOME_WRITABLE=no; fi
echo "PWD=$(pwd)"
echo created > created-inside.txt && mkdir -p dir-inside && echo CREATED=yes
echo "CAPEFF=$(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status)"
echo "NONEWPRIVS=$(sed -n 's/^NoNewPrivs:[[:space:]]*//p' /proc/self/status)"
for f in /sys/fs/cgroup/pids.max /sys/fs/cgroup/pids/pids.max; do
    [ -r "$f" ] && echo "PIDSMAX=$(cat "$f")" && break
done
for w in $(sed -n 's/^Max processes[[:space:]]*\([^[:space:]]*\).*/\1/p' /proc/self/limits); do
    echo "NPROC=$w"
done
echo "PROBE_PID=$$"
echo "PID1=$(cat /proc/1/comm)"
# An orphan: its parent exits at once, so the orphan is re-parented to PID 1,
# which must reap it when it exits.
sh -c 'sleep 1 & echo $! > "$HOME/.orphan-pid"'
op=$(cat "$HOME/.orphan-pid")
echo "ORPHAN_PPID=$(sed -n 's/^PPid:[[:space:]]*//p' /proc/$op/status)"
st=
i=0
while [ $i -lt 40 ]; do
    st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' /proc/$op/status 2>/dev/null)
    [ -z "$st" ] && break
    sleep 0.25
    i=$((i+1))
done
echo "ORPHAN_FINAL=${st:-gone}"
"#;

pub fn identity_and_hardening(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "identity_and_hardening") else {
        return;
    };
    let out = t.sh(IDENTITY_PROBE).run();
    out.assert_ok();
    let u = &t.user;
    assert_eq!(out.expect_kv("USER"), u.name, "id -un\n{out}");
    assert_eq!(out.expect_kv("UID"), u.uid.to_string(), "id -u\n{out}");
    assert_eq!(out.expect_kv("GID"), u.gid.to_string(), "id -g\n{out}");
    assert_eq!(
        out.expect_kv("HOME"),
        u.home.display().to_string(),
        "$HOME\n{out}"
    );
    assert_eq!(
        out.expect_kv("HOME_WRITABLE"),
        "yes",
        "$HOME must be writable\n{out}"
    );
    assert_eq!(
        out.expect_kv("PWD"),
        t.ws.display().to_string(),
        "working directory\n{out}"
    );
    assert_eq!(
        out.expect_kv("CREATED"),
        "yes",
        "workspace must be writable\n{out}"
    );
    for name in ["created-inside.txt", "dir-inside"] {
        let meta = std::fs::metadata(t.ws.join(name)).expect("file created inside is on the host");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (u.uid, u.gid),
            "{name} created inside must be owned by {}:{} on the host\n{out}",
            u.uid,
            u.gid
        );
    }
    assert_eq!(
        out.expect_kv("CAPEFF"),
        "0000000000000000",
        "capabilities must be dropped\n{out}"
    );
    assert_eq!(out.expect_kv("NONEWPRIVS"), "1", "no-new-privileges\n{out}");

    // Pids limit: in the sandbox's pids cgroup, or in the engine's config,
    // or (where the engine cannot use cgroups, as rootless podman on cgroup
    // v1, and on the native backend, which has no engine) as the
    // RLIMIT_NPROC that kennel sets to the Plan's `limits.pids`.
    let inside = out.kv("PIDSMAX").filter(|v| v.parse::<u64>().is_ok());
    if inside.is_none() {
        let (mut bg, id) = t.start_sandbox();
        let info = if b.has_engine() {
            t.inspect(&id)
        } else {
            Value::Null
        };
        // Native: the agent's hard RLIMIT_NPROC, read from the host (the
        // probe saw the soft one; the hard one is what the agent cannot raise).
        let hard_nproc = (!b.has_engine()).then(|| crate::harness::rlimit_nproc(&id));
        bg.stop();
        let limit = jget(&info, "HostConfig.PidsLimit")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let dry = t.kennel(&["run", "shell", "--dry-run"]).run();
        dry.assert_ok();
        let plan_pids = jget(&dry.json(), "limits.pids").and_then(Value::as_i64);
        let nproc = out.kv("NPROC").and_then(|v| v.parse::<i64>().ok());
        assert!(
            limit > 0 || (plan_pids.is_some() && nproc == plan_pids),
            "no pids limit: pids.max inside is {:?}, HostConfig.PidsLimit is {:?}, \
             RLIMIT_NPROC is {:?} while the Plan's limits.pids is {:?}\n{out}",
            out.kv("PIDSMAX"),
            jget(&info, "HostConfig.PidsLimit"),
            out.kv("NPROC"),
            plan_pids
        );
        if let Some(hard) = hard_nproc {
            let (_, hard) = hard.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                hard, plan_pids,
                "the sandboxed agent's hard RLIMIT_NPROC (seen from the host) must be \
                 the Plan's limits.pids\n{out}"
            );
        }
    }

    // An init runs as PID 1 and reaps orphans.
    assert_ne!(
        out.expect_kv("PROBE_PID"),
        "1",
        "the agent must not be PID 1 (no init)\n{out}"
    );
    let pid1 = out.expect_kv("PID1");
    assert!(
        !["sh", "dash", "bash", "sleep"].contains(&pid1.as_str()),
        "PID 1 must be an init, not `{pid1}`\n{out}"
    );
    assert_eq!(
        out.expect_kv("ORPHAN_FINAL"),
        "gone",
        "the exited orphan must be reaped, not left a zombie (PID 1 is {pid1})\n{out}"
    );
}

// ------------------------------------------------------- 3. host isolation

static HOST_SECRETS: OnceLock<()> = OnceLock::new();

/// Plant credentials in the test user's real home (shared by all backends).
fn plant_host_secrets(t: &Ctx) {
    if !t.user.switch {
        // Never write fake keys into a real developer's home: without the
        // dedicated test user, the probe only checks that whatever is there
        // stays invisible.
        eprintln!(
            "not running as root: host secrets not planted in {}",
            t.user.home.display()
        );
        return;
    }
    HOST_SECRETS.get_or_init(|| {
        let home = &t.user.home;
        // The marker is split in the probe, so it never appears literally in
        // a command line or a file kennel writes.
        let marker = "KENNEL-E2E-HOST-SECRET-7f3a";
        let files: [(&str, String); 4] = [
            (
                ".ssh/id_ed25519",
                format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{marker}\n"),
            ),
            (
                ".aws/credentials",
                format!("[default]\naws_secret_access_key = {marker}\n"),
            ),
            (
                ".gitconfig",
                format!("[credential]\n\thelper = store\n[user]\n\tname = {marker}\n"),
            ),
            (
                ".git-credentials",
                format!("https://user:{marker}@example.invalid\n"),
            ),
        ];
        for (rel, text) in files {
            let path = home.join(rel);
            let parent = path.parent().unwrap();
            std::fs::create_dir_all(parent).unwrap();
            std::fs::write(&path, text).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            if parent != home.as_path() {
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)).unwrap();
                t.user.chown(parent);
            } else {
                t.user.chown_one(&path);
            }
        }
    });
}

pub fn host_isolation(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "host_isolation") else {
        return;
    };
    plant_host_secrets(&t);
    let home = t.user.home.display().to_string();
    let uid = t.user.uid;
    let probe = format!(
        r#"
for f in "$HOME/.ssh/id_ed25519" "$HOME/.aws/credentials" "$HOME/.gitconfig" "$HOME/.git-credentials" \
         {home}/.ssh/id_ed25519 {home}/.aws/credentials {home}/.gitconfig {home}/.git-credentials; do
    [ -e "$f" ] && echo "FOUND $f"
    cat "$f" >/dev/null 2>&1 && echo "READ $f"
done
ls -a "$HOME/.ssh" "$HOME/.aws" 2>/dev/null | sed 's/^/LISTED /'
for s in /var/run/docker.sock /run/docker.sock /run/podman/podman.sock /var/run/podman/podman.sock \
         /run/user/{uid}/podman/podman.sock /run/user/{uid}/docker.sock /run/containerd/containerd.sock; do
    [ -e "$s" ] && echo "SOCKET $s"
done
find / -xdev \( -name docker.sock -o -name podman.sock -o -name containerd.sock \) 2>/dev/null | sed 's/^/SOCKET /'
a=KENNEL-E2E-HOST; b=SECRET-7f3a
grep -rIl -D skip --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev "$a-$b" / 2>/dev/null | sed 's/^/MARKER /'
h=$(git config --global --get credential.helper 2>/dev/null) && echo "CREDENTIAL_HELPER=$h"
echo PROBE_DONE
"#
    );
    let out = t.sh(&probe).timeout(Duration::from_secs(300)).run();
    assert!(
        out.stdout.contains("PROBE_DONE"),
        "probe did not finish\n{out}"
    );
    let leaks: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| {
            [
                "FOUND ",
                "READ ",
                "LISTED ",
                "SOCKET ",
                "MARKER ",
                "CREDENTIAL_HELPER=",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .filter(|l| !matches!(*l, "LISTED ." | "LISTED .."))
        .collect();
    assert!(
        leaks.is_empty(),
        "the sandbox sees host secrets or engine sockets: {leaks:#?}\n{out}"
    );

    // Seen from outside (the engine's inspect; native: the sandboxed
    // process's mountinfo, read from the host): bind mounts come only from
    // the workspace and kennel's data dir. The native backend's "image" is
    // the host's system directories, which it may bind read-only at their
    // own paths, and it binds a few device nodes into its /dev. The one
    // other source is the session's egress-proxy socket directory, kennel's
    // own (`$XDG_RUNTIME_DIR/kennel/proxy/<session>`), read-only at
    // /run/kennel/proxy and holding nothing but the proxy's socket.
    let (mut bg, id) = t.start_sandbox();
    let binds = t.sandbox_binds(&id);
    bg.stop();
    let allowed = [t.ws.clone(), t.data_home.join("kennel")];
    let native_image = |m: &crate::harness::BindMount| {
        b == Backend::Native
            && m.source == m.target
            && ((m.read_only && NATIVE_SYSTEM_DIRS.iter().any(|d| m.source == Path::new(d)))
                || NATIVE_DEVICES
                    .iter()
                    .any(|d| m.source == Path::new("/dev").join(d)))
    };
    let proxy_dirs = t.user.runtime_dir().join("kennel/proxy");
    let proxy_socket_dir = |m: &crate::harness::BindMount| {
        m.read_only
            && m.target == Path::new("/run/kennel/proxy")
            && m.source.parent() == Some(proxy_dirs.as_path())
    };
    let mut bad = vec![];
    let mut saw_workspace = false;
    for m in &binds {
        if m.source == t.ws && m.target == t.ws && !m.read_only {
            saw_workspace = true;
        }
        if !allowed.iter().any(|a| m.source.starts_with(a))
            && !native_image(m)
            && !proxy_socket_dir(m)
        {
            bad.push(m.clone());
        }
    }
    assert!(
        saw_workspace,
        "no read-write bind mount of the workspace {} at its own path: {binds:#?}",
        t.ws.display()
    );
    assert!(
        bad.is_empty(),
        "bind mounts from outside the workspace and {}: {bad:#?}",
        t.data_home.join("kennel").display()
    );
}

/// Host directories the native backend shows read-only in place of an image
/// (issue 3: `/usr`, `/bin`, `/lib*`, `/etc`, `/opt`; `/sbin` too).
const NATIVE_SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];
/// The host device nodes of the native sandbox's minimal /dev.
const NATIVE_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

// -------------------------------------------------------------- 4. env

pub fn environment(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "environment") else {
        return;
    };
    let host_env = [
        ("KENNEL_TEST_SECRET", "s3cret"),
        ("TERM", "xterm-256color"),
        ("LANG", "C.UTF-8"),
        ("TZ", "Europe/Paris"),
        ("AWS_SECRET_ACCESS_KEY", "host-aws-secret"),
    ];
    let out = t
        .kennel_env(&["run", "shell", "--", "env"], &host_env)
        .run();
    out.assert_ok();
    let env: Vec<&str> = out.stdout.lines().collect();
    assert!(
        !env.iter().any(|l| l.starts_with("KENNEL_TEST_SECRET=")) && !out.stdout.contains("s3cret"),
        "KENNEL_TEST_SECRET must not pass unless named\n{out}"
    );
    assert!(
        !out.stdout.contains("host-aws-secret"),
        "AWS_SECRET_ACCESS_KEY must not pass\n{out}"
    );
    assert!(
        !env.iter().any(|l| l.starts_with("XDG_CONFIG_HOME=")
            && l.contains(&t.config_home.display().to_string())),
        "kennel's own XDG_CONFIG_HOME must not pass\n{out}"
    );
    for (name, value) in [
        ("TERM", "xterm-256color"),
        ("LANG", "C.UTF-8"),
        ("TZ", "Europe/Paris"),
    ] {
        let line = format!("{name}={value}");
        assert!(env.contains(&line.as_str()), "{line} must pass\n{out}");
    }

    let out = t
        .kennel_env(
            &["run", "shell", "-e", "KENNEL_TEST_SECRET", "--", "env"],
            &host_env,
        )
        .run();
    out.assert_ok();
    assert!(
        out.stdout.lines().any(|l| l == "KENNEL_TEST_SECRET=s3cret"),
        "-e KENNEL_TEST_SECRET must pass the host value\n{out}"
    );
    let out = t
        .kennel_env(
            &["run", "shell", "-e", "KENNEL_OTHER=given", "--", "env"],
            &host_env,
        )
        .run();
    out.assert_ok();
    assert!(
        out.stdout.lines().any(|l| l == "KENNEL_OTHER=given"),
        "-e NAME=value\n{out}"
    );
}

/// The agent's declared credential variables pass (checked on the Plan).
pub fn agent_credentials_in_plan(b: Backend) {
    let Some(t) = Ctx::new(b, "agent_credentials_in_plan") else {
        return;
    };
    let key = "sk-ant-e2e-not-a-real-key";
    let out = t
        .kennel_env(
            &["run", "claude", "--dry-run"],
            &[("ANTHROPIC_API_KEY", key), ("KENNEL_TEST_SECRET", "s3cret")],
        )
        .run();
    out.assert_ok();
    let plan = out.json();
    let env = plan
        .get("env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let var = env
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some("ANTHROPIC_API_KEY"))
        .unwrap_or_else(|| panic!("ANTHROPIC_API_KEY missing from claude's Plan env\n{out}"));
    assert_eq!(
        var.get("secret"),
        Some(&Value::Bool(true)),
        "credential must be marked secret: {var}"
    );
    assert_eq!(
        var.get("value").and_then(Value::as_str),
        Some("<redacted>"),
        "value must be redacted: {var}"
    );
    assert!(
        !out.stdout.contains(key) && !out.stderr.contains(key),
        "the key must never be printed\n{out}"
    );
    assert!(
        !env.iter()
            .any(|v| v.get("name").and_then(Value::as_str) == Some("KENNEL_TEST_SECRET")),
        "an unnamed host variable must not be in the Plan\n{out}"
    );
    let left = t.workspace_containers();
    assert!(left.is_empty(), "--dry-run created containers {left:?}");
}

// --------------------------------------------------------- 5. git safety

pub fn git_safety(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "git_safety") else {
        return;
    };
    let config_before = std::fs::read(t.ws.join(".git/config")).unwrap();
    let probe = r#"
if (echo '#!/bin/sh' > .git/hooks/pre-commit) 2>/dev/null; then echo HOOK_WRITE=ok; else echo HOOK_WRITE=denied; fi
if (chmod +x .git/hooks/pre-commit.sample) 2>/dev/null; then echo HOOK_CHMOD=ok; else echo HOOK_CHMOD=denied; fi
if (echo '[core]' >> .git/config) 2>/dev/null; then echo CONFIG_APPEND=ok; else echo CONFIG_APPEND=denied; fi
if git config core.hooksPath /tmp 2>/dev/null; then echo GIT_CONFIG_SET=ok; else echo GIT_CONFIG_SET=denied; fi
echo from-inside > inside.txt
git add inside.txt && git -c user.name='Kennel Inside' -c user.email=inside@kennel.invalid commit -q -m commit-from-inside && echo COMMIT=ok
"#;
    let out = t.sh(probe).run();
    out.assert_ok();
    assert_eq!(
        out.expect_kv("HOOK_WRITE"),
        "denied",
        ".git/hooks must be read-only\n{out}"
    );
    assert_eq!(
        out.expect_kv("CONFIG_APPEND"),
        "denied",
        ".git/config must be read-only\n{out}"
    );
    assert_eq!(
        out.expect_kv("GIT_CONFIG_SET"),
        "denied",
        "`git config` must not change .git/config\n{out}"
    );
    assert_eq!(
        out.expect_kv("COMMIT"),
        "ok",
        "git add + commit must work inside\n{out}"
    );
    assert!(
        !t.ws.join(".git/hooks/pre-commit").exists(),
        "a hook appeared on the host"
    );
    assert_eq!(
        std::fs::read(t.ws.join(".git/config")).unwrap(),
        config_before,
        ".git/config changed on the host"
    );
    let log = t.git(&["log", "--format=%s|%an"]);
    assert!(
        log.lines().next() == Some("commit-from-inside|Kennel Inside"),
        "the commit made inside must be the host repository's HEAD:\n{log}"
    );
    let status = t.git(&["status", "--porcelain"]);
    assert!(
        status.trim().is_empty(),
        "host repository must be clean after the commit: {status}"
    );
}

// --------------------------------------------------------------- 6. state

pub fn agent_state_persists(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "agent_state_persists") else {
        return;
    };
    let token = format!("state-{}", unique());
    let out = t
        .sh(&format!("echo {token} > ~/.state-probe-{}", b.name()))
        .run();
    out.assert_ok();
    let out = t.sh(&format!("cat ~/.state-probe-{}", b.name())).run();
    out.assert_ok();
    assert_eq!(
        out.stdout.trim(),
        token,
        "state written in $HOME must be there on the next run\n{out}"
    );
    // The workspace's own agent home (per repository).
    let on_host = crate::escape_homes::agent_home(&t, "shell", &t.ws)
        .join(format!(".state-probe-{}", b.name()));
    let text = std::fs::read_to_string(&on_host)
        .unwrap_or_else(|e| panic!("{} must hold the agent's home: {e}", on_host.display()));
    assert_eq!(text.trim(), token);
    let meta = std::fs::metadata(&on_host).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (t.user.uid, t.user.gid),
        "state file owner on the host"
    );
    assert!(
        !t.user
            .home
            .join(format!(".state-probe-{}", b.name()))
            .exists(),
        "the agent's $HOME must not be the user's real home"
    );
}

// ------------------------------------------------------------- 7. dry-run

/// `--dry-run` prints the Plan that runs: the Plan the registry recorded
/// for a real run (`kennel inspect`) is the one `--dry-run` printed, but for
/// the random sandbox name (and the paths named after it) and the session's
/// id, which the registry assigns when the session begins. (Direct mode;
/// worktree and clone modes still mount the session's checkout, which
/// `--dry-run` does not create.)
pub fn dry_run_is_the_plan_that_runs(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "dry_run_is_the_plan_that_runs") else {
        return;
    };
    let normal = comparable_plan;

    // A persistent session (its agent kept alive without a terminal).
    let session = format!("dry-{}", crate::harness::unique());
    let printed = t
        .start_offline(&session, &["--dry-run"], &["sleep", "300"])
        .run();
    printed.assert_ok();
    t.start_offline(&session, &[], &["sleep", "300"])
        .run()
        .assert_ok();
    let recorded = t.kennel(&["inspect", &session]).run();
    recorded.assert_ok();
    assert_eq!(
        normal(&printed),
        normal(&recorded),
        "--dry-run:\n{printed}\nrecorded:\n{recorded}"
    );
    assert_eq!(recorded.json()["ephemeral"], false, "{recorded}");

    // While it holds slot 0, a run takes slot 1, and --dry-run says so.
    let command = ["run", "shell", "--", "sh", "-c", "exit 0"];
    let mut dry_run = command.to_vec();
    dry_run.insert(2, "--dry-run");
    let printed = t.kennel(&dry_run).run();
    printed.assert_ok();
    t.kennel(&command).run().assert_ok();
    t.kennel(&["rm", "--force", &session]).run().assert_ok();
    let sessions = t.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let name = sessions[0]["name"].as_str().expect("a session name");
    let recorded = t.kennel(&["inspect", name]).run();
    recorded.assert_ok();
    assert_eq!(recorded.json()["slot"], 1, "{recorded}");
    assert_eq!(
        normal(&printed),
        normal(&recorded),
        "--dry-run:\n{printed}\nrecorded:\n{recorded}"
    );
    assert!(
        recorded.json()["labels"]["dev.kennel.session"]
            .as_str()
            .is_some_and(|id| sessions[0]["id"] == id),
        "{recorded}"
    );
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A Plan as `--dry-run` and `kennel inspect` print it, but for what is
/// random in each run: the sandbox's name (also in the name of the
/// checkout directory) and the session id label.
fn comparable_plan(out: &crate::harness::Out) -> Value {
    let mut plan = out.json();
    let sandbox = plan["name"].as_str().expect("a sandbox name").to_string();
    if let Some(labels) = plan["labels"].as_object_mut() {
        labels.remove("dev.kennel.session");
    }
    serde_json::from_str(&plan.to_string().replace(&sandbox, "<name>")).expect("json")
}

/// Worktree and clone modes: `--dry-run` prints the checkout the session
/// gets (directory, branch, git's mounts, the workdir inside it, the
/// project's config kept read-only) before any of it exists, and makes
/// none of it: a new worktree from a subdirectory, a clone run, a branch
/// name taken by an earlier session, and a resumed session's checkout.
pub fn dry_run_is_the_plan_that_runs_with_a_checkout(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "dry_run_checkout") else {
        return;
    };
    std::fs::create_dir_all(t.ws.join("sub")).unwrap();
    std::fs::write(t.ws.join("sub/file.txt"), "x\n").unwrap();
    std::fs::write(t.ws.join(".kennel.toml"), "").unwrap();
    t.user.chown(&t.ws);
    t.git(&["add", "-A"]);
    t.git(&["commit", "-q", "-m", "sub and project config"]);
    let checkouts = t.data_home.join("kennel/checkouts");
    let made = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&checkouts)
            .map(|dir| {
                dir.flatten()
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let branches = || t.git(&["branch", "--list"]);
    // `--dry-run` then the real thing; the recorded Plan must equal the
    // printed one, and the dry run must have made nothing.
    let compare = |args: &[&str], session: Option<&str>, cwd: &Path| -> Value {
        let (before, before_branches) = (made(), branches());
        let mut dry = args.to_vec();
        dry.insert(2, "--dry-run");
        let printed = t.kennel(&dry).cwd(cwd).run();
        printed.assert_ok();
        assert_eq!(made(), before, "--dry-run made a checkout\n{printed}");
        assert_eq!(branches(), before_branches, "--dry-run made a branch");
        t.kennel(args).cwd(cwd).run().assert_ok();
        let name = match session {
            Some(name) => name.to_string(),
            None => t
                .sessions()
                .iter()
                .filter_map(|session| session["name"].as_str().map(str::to_string))
                .find(|name| name.starts_with("shell-"))
                .expect("the run's session"),
        };
        let recorded = t.kennel(&["inspect", &name]).run();
        recorded.assert_ok();
        assert_eq!(
            comparable_plan(&printed),
            comparable_plan(&recorded),
            "--dry-run:\n{printed}\nrecorded:\n{recorded}"
        );
        recorded.json()
    };
    let unique = crate::harness::unique();
    let (first, third, fourth) = (
        format!("dry-wt-{unique}"),
        format!("dry-again-{unique}"),
        format!("dry-resumed-{unique}"),
    );
    let start = |name: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["start", "shell", "--network", "none", "--name", name]
            .map(String::from)
            .to_vec();
        args.extend(extra.iter().map(|arg| arg.to_string()));
        args.extend(["--", "sleep", "300"].map(String::from));
        args
    };

    // A worktree session started in a subdirectory: its workdir is that
    // subdirectory of the checkout, and the project's config is read-only.
    let args = start(&first, &["--mode", "worktree"]);
    let plan = compare(&refs(&args), Some(&first), &t.ws.join("sub"));
    let dir = plan["git"]["dir"].as_str().expect("a checkout").to_string();
    assert_eq!(plan["git"]["branch"], "kennel/shell-0", "{plan}");
    assert_eq!(plan["workdir"], format!("{dir}/sub"), "{plan}");
    assert!(
        plan["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|mount| {
                mount["source"] == format!("{dir}/.kennel.toml") && mount["read_only"] == true
            }),
        "{plan}"
    );

    // A clone run while the first session holds slot 0.
    let plan = compare(
        &[
            "run",
            "shell",
            "--mode",
            "clone",
            "--network",
            "none",
            "--",
            "true",
        ],
        None,
        &t.ws,
    );
    assert_eq!(plan["git"]["branch"], "kennel/shell-1", "{plan}");
    assert_eq!(plan["git"]["mode"], "clone", "{plan}");

    // Slot 0 is free again but its branch is the first session's: the
    // next session's branch is named after the session.
    t.kennel(&["stop", &first]).run().assert_ok();
    let args = start(&third, &["--mode", "worktree"]);
    let plan = compare(&refs(&args), Some(&third), &t.ws);
    assert_eq!(plan["git"]["branch"], format!("kennel/{third}"), "{plan}");
    t.kennel(&["stop", &third]).run().assert_ok();

    // Resuming the first session: its checkout and branch.
    let args = start(&fourth, &["--resume", &first]);
    let plan = compare(&refs(&args), Some(&fourth), &t.ws);
    assert_eq!(plan["git"]["dir"], dir.as_str(), "{plan}");
    assert_eq!(plan["git"]["branch"], "kennel/shell-0", "{plan}");
    for name in [&first, &third, &fourth] {
        t.kennel(&["rm", "--force", name]).run().assert_ok();
    }
}

pub fn dry_run(b: Backend) {
    let Some(t) = Ctx::new(b, "dry_run") else {
        return;
    };
    let out = t
        .kennel(&["run", "shell", "--dry-run", "--", "sh", "-c", "exit 9"])
        .run();
    out.assert_ok();
    let plan = out.json();
    let reference = jget(&plan, "image.reference")
        .and_then(Value::as_str)
        .unwrap_or("");
    assert!(!reference.is_empty(), "Plan has no image.reference\n{out}");
    let command: Vec<&str> = plan
        .get("command")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        command,
        ["sh", "-c", "exit 9"],
        "AGENT_ARGS replace shell's command\n{out}"
    );
    let mounts = plan
        .get("mounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ws = t.ws.display().to_string();
    assert!(
        mounts.iter().any(
            |m| m.get("source").and_then(Value::as_str) == Some(ws.as_str())
                && m.get("target").and_then(Value::as_str) == Some(ws.as_str())
                && m.get("read_only") == Some(&Value::Bool(false))
        ),
        "the workspace must be mounted read-write at its own path\n{out}"
    );
    for field in [
        "env", "mounts", "command", "image", "user", "network", "limits", "security",
    ] {
        assert!(plan.get(field).is_some(), "Plan lacks `{field}`\n{out}");
    }
    let left = t.workspace_containers();
    assert!(
        left.is_empty(),
        "--dry-run must start nothing, found {left:?}"
    );
}

// ------------------------------------------------------ 8. project config

pub fn project_config_refused_user_config_allowed(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "project_config_refused") else {
        return;
    };
    std::fs::write(
        t.ws.join(".kennel.toml"),
        "[defaults]\nmounts = [\"/etc:/host-etc\"]\n",
    )
    .unwrap();
    t.user.chown_one(&t.ws.join(".kennel.toml"));
    let out = t.sh("ls /host-etc; echo RAN").run();
    out.assert_code(125);
    assert!(
        !out.stdout.contains("RAN"),
        "the agent must not start\n{out}"
    );
    assert!(
        out.stderr.contains("kennel config trust"),
        "the refusal must say how to trust the file\n{out}"
    );
    let left = t.workspace_containers();
    assert!(left.is_empty(), "refused run left containers {left:?}");

    // The same key in the user's own config is honoured. (Incus: a host
    // directory the user's restricted project may mount; its /etc is not.)
    std::fs::remove_file(t.ws.join(".kennel.toml")).unwrap();
    let host_etc = if b == Backend::Incus {
        let dir = t.scratch().join("etc");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy("/etc/os-release", dir.join("os-release")).unwrap();
        t.user.chown(&dir);
        dir
    } else {
        std::path::PathBuf::from("/etc")
    };
    t.write_config(
        &format!("mounts = [\"{}:/host-etc\"]", host_etc.display()),
        "",
    );
    let out = t.sh("cat /host-etc/os-release").run();
    out.assert_ok();
    let host = std::fs::read_to_string("/etc/os-release").unwrap();
    assert_eq!(
        out.stdout, host,
        "the user-configured mount must show the host's /etc\n{out}"
    );
}

// --------------------------------------------------- 9. config-defined agent

pub fn config_defined_agent(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "config_defined_agent") else {
        return;
    };
    t.write_config(
        "",
        "[agents.hello]\ncommand = [\"sh\", \"-c\", \"echo hello-from-agent\"]\nruntime = \"none\"\ninstall = \"echo built > /etc/hello-built\"\n",
    );
    let out = t
        .kennel(&["run", "hello"])
        .timeout(crate::harness::BUILD_TIMEOUT)
        .run();
    out.assert_ok();
    assert_eq!(
        out.stdout.trim(),
        "hello-from-agent",
        "the config-defined agent must run\n{out}"
    );
    if !b.has_engine() {
        // The native backend runs the host's own `sh` and builds no image,
        // so there is no image in which the install step could have run.
        eprintln!("native::config_defined_agent: install recipe not checked (no image)");
        return;
    }

    let dry = t.kennel(&["run", "hello", "--dry-run"]).run();
    dry.assert_ok();
    let plan = dry.json();
    let reference = jget(&plan, "image.reference")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    assert!(!reference.is_empty(), "no image.reference\n{dry}");
    // The file the install step wrote is in the image the agent ran.
    let out = match b {
        Backend::Incus => t
            .kennel(&[
                "run",
                "shell",
                "--image",
                &reference,
                "--",
                "cat",
                "/etc/hello-built",
            ])
            .run(),
        _ => t.engine(&[
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            &reference,
            "/etc/hello-built",
        ]),
    };
    out.assert_ok();
    assert_eq!(
        out.stdout.trim(),
        "built",
        "the install step must have run in {reference}\n{out}"
    );
}

// -------------------------------------------------------------- 10. images

pub fn image_build_is_cached(b: Backend) {
    if !b.has_engine() {
        // Not applicable: the native backend runs the host's own programs
        // and builds no image.
        eprintln!(
            "{}::image_build_is_cached: not applicable (no images)",
            b.name()
        );
        return;
    }
    let Some(t) = Ctx::with_shell_image(b, "image_build_is_cached") else {
        return;
    };
    let out = t
        .kennel(&["image", "build", "shell"])
        .timeout(crate::harness::BUILD_TIMEOUT)
        .run();
    out.assert_ok();
    let text = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(
        text.contains("up to date"),
        "a second build must say the image is up to date\n{out}"
    );
    assert!(
        out.elapsed < Duration::from_secs(45),
        "an up-to-date build must be fast (no rebuild), took {:?}\n{out}",
        out.elapsed
    );

    let dry = t.kennel(&["run", "shell", "--dry-run"]).run();
    dry.assert_ok();
    let reference = jget(&dry.json(), "image.reference")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let ls = t.kennel(&["image", "ls", "--json"]).run();
    ls.assert_ok();
    let listed = ls.json();
    assert!(listed["images"].is_array(), "image ls --json: {listed}");
    let name = reference
        .rsplit('/')
        .next()
        .unwrap_or(&reference)
        .to_string();
    assert!(
        ls.stdout.contains(&reference) || ls.stdout.contains(&name),
        "image ls --json must list the shell image {reference}\n{ls}"
    );
    let engine = match b {
        Backend::Incus => t.engine(&["image", "show", &reference]),
        _ => t.engine(&["image", "inspect", &reference]),
    };
    engine.assert_ok();
}

/// `kennel image rm AGENT` removes that agent's image from the backend's
/// store (and only it): gone from `kennel image ls` and from the backend's
/// own CLI. (`prune` is not tried here: it removes every image the test's
/// config does not build, which parallel tests are using.)
pub fn image_rm(b: Backend) {
    if !b.has_engine() {
        eprintln!("{}::image_rm: not applicable (no images)", b.name());
        return;
    }
    let Some(t) = Ctx::with_shell_image(b, "image_rm") else {
        return;
    };
    let agent = format!("gone{}", unique().replace('-', ""));
    t.write_config(
        "",
        &format!(
            "[agents.{agent}]\ncommand = [\"true\"]\nruntime = \"none\"\ninstall = \"echo {agent} > /etc/marker\"\n"
        ),
    );
    let built = t
        .kennel(&["image", "build", &agent])
        .timeout(crate::harness::BUILD_TIMEOUT)
        .run();
    built.assert_ok();
    let reference = built.stdout.trim().to_string();
    assert!(
        reference.starts_with(&format!("kennel/{agent}:")),
        "{built}"
    );
    let listed = || -> Vec<String> {
        let out = t.kennel(&["image", "ls", "--json"]).run();
        out.assert_ok();
        out.json()["images"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|image| image["reference"].as_str().map(str::to_string))
            .collect()
    };
    assert!(listed().contains(&reference), "{:?}", listed());
    let in_store = |reference: &str| match b {
        Backend::Incus => t.engine(&["image", "show", reference]).success(),
        _ => t.engine(&["image", "inspect", reference]).success(),
    };
    assert!(in_store(&reference), "{reference} is not in the store");
    let removed = t.kennel(&["image", "rm", &agent]).run();
    removed.assert_ok();
    assert_eq!(removed.stdout.trim(), reference, "{removed}");
    assert!(!listed().contains(&reference), "{:?}", listed());
    assert!(!in_store(&reference), "{reference} is still in the store");
    // The shell image, which other tests use, is untouched.
    assert!(
        listed()
            .iter()
            .any(|image| image.starts_with("kennel/shell:")),
        "{:?}",
        listed()
    );
}

// ----------------------------------------------------- backend-independent

pub fn unknown_agent_is_usage_error(b: Backend) {
    let Some(t) = Ctx::new(b, "unknown_agent") else {
        return;
    };
    let out = t.kennel(&["run", "shel"]).run();
    out.assert_code(2);
    assert!(
        out.stderr.contains("shell"),
        "the error must suggest `shell`\n{out}"
    );
}

/// `--host-config` mounts the host's own state paths of the agent instead of
/// kennel's per-agent copy; without it they stay invisible.
pub fn host_config(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "host_config") else {
        return;
    };
    if !t.user.switch {
        eprintln!(
            "not running as root: no state planted in the real home; host_config not checked"
        );
        return;
    }
    let dir_name = format!(".kennel-e2e-hostcfg-{}", b.name());
    let host_dir = t.user.home.join(&dir_name);
    let _ = std::fs::remove_dir_all(&host_dir);
    std::fs::create_dir_all(&host_dir).unwrap();
    let token = format!("host-config-{}", unique());
    std::fs::write(host_dir.join("marker"), &token).unwrap();
    for path in [host_dir.clone(), host_dir.join("marker")] {
        std::os::unix::fs::chown(&path, Some(t.user.uid), Some(t.user.gid)).unwrap();
    }
    t.write_config(
        "",
        &format!(
            "[agents.hostcfg]\ncommand = [\"sh\", \"-c\", \"cat ~/{dir_name}/marker 2>/dev/null || echo absent; \
             mkdir -p ~/{dir_name} && echo from-sandbox > ~/{dir_name}/written\"]\nruntime = \"none\"\n\
             state = [\"~/{dir_name}\"]\n"
        ),
    );

    let out = t
        .kennel(&["run", "hostcfg"])
        .timeout(crate::harness::BUILD_TIMEOUT)
        .run();
    out.assert_ok();
    assert_eq!(
        out.stdout.trim(),
        "absent",
        "without --host-config the host's state must be invisible\n{out}"
    );
    assert!(
        !host_dir.join("written").exists(),
        "without --host-config the agent must write to kennel's copy, not the host's"
    );

    let out = t.kennel(&["run", "hostcfg", "--host-config"]).run();
    out.assert_ok();
    assert_eq!(
        out.stdout.trim(),
        token,
        "--host-config must show the host's state\n{out}"
    );
    let written = host_dir.join("written");
    let text = std::fs::read_to_string(&written).unwrap_or_else(|e| {
        panic!(
            "--host-config: the agent's write must land in {}: {e}",
            written.display()
        )
    });
    assert_eq!(text.trim(), "from-sandbox");
    let meta = std::fs::metadata(&written).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (t.user.uid, t.user.gid),
        "owner of the file written through --host-config"
    );
    let _ = std::fs::remove_dir_all(&host_dir);
}
