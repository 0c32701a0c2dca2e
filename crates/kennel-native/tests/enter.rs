//! Entering a running native sandbox for real (what `kennel exec` does on
//! the native backend): a sandbox runs `sleep 600` as the non-root test user
//! `kennel-e2e` (or as the current user when the tests do not run as root),
//! and commands entered into it must see that sandbox and be confined as
//! its agent is. Skipped when that user is missing, unless
//! `KENNEL_E2E=require`.
//!
//! The library is driven by `examples/native-driver.rs`, which also serves
//! as the re-executed helper (it dispatches `__native-init` and
//! `__native-enter` as kennel's `main` does).

// Test code may print: why a test skipped, what it saw.
#![allow(clippy::print_stderr)]
// kennel-native's own tests call libc as the crate does (getuid, getgid, kill, pre_exec).
#![allow(unsafe_code)]

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kennel_core::Plan;
use kennel_native::{NativeError, NativeOptions, enter, sandbox_init_of};

const TEST_USER: &str = "kennel-e2e";

fn required() -> bool {
    std::env::var("KENNEL_E2E").is_ok_and(|mode| mode == "require")
}

fn skip(why: &str) -> Option<World> {
    if required() {
        panic!("KENNEL_E2E=require but the native enter tests cannot run: {why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// The driver example, next to this test's `deps/` directory. `cargo test
/// -p kennel-native` builds it with the library; when only this test target
/// was built (`--test enter`), it may be missing or older than the library
/// under test, and is built here, once.
fn driver_binary() -> PathBuf {
    static DRIVER: OnceLock<PathBuf> = OnceLock::new();
    DRIVER
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test exe");
            let dir = exe.parent().and_then(Path::parent).expect("target dir");
            let binary = dir.join("examples").join("native-driver");
            let modified = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
            if modified(&binary) < modified(&exe) {
                let profile = match dir.file_name().and_then(|name| name.to_str()) {
                    Some("debug") | None => "dev",
                    Some(profile) => profile,
                };
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let status = Command::new(cargo)
                    .args(["build", "-p", "kennel-native", "--example", "native-driver"])
                    .args(["--profile", profile])
                    .status()
                    .expect("cargo build");
                assert!(status.success(), "building the driver failed");
            }
            binary
        })
        .clone()
}

fn user_entry(name: &str) -> Option<(u32, u32, PathBuf)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 6 || fields[0] != name {
            return None;
        }
        Some((
            fields[2].parse().ok()?,
            fields[3].parse().ok()?,
            fields[5].into(),
        ))
    })
}

static PLANS: AtomicUsize = AtomicUsize::new(0);

/// One test's world: a host home with a secret (never mounted), kennel's
/// agent home for it, a git workspace, all owned by the user the sandbox
/// runs as, and the Plan of that sandbox.
struct World {
    root: PathBuf,
    home: PathBuf,
    workspace: PathBuf,
    uid: u32,
    /// The user's real home on this host (never mounted either).
    real_home: Option<PathBuf>,
    /// `Some` when running as root: drop to this user with setpriv.
    as_user: Option<(u32, u32)>,
    driver: PathBuf,
    plan: Plan,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl World {
    fn new(test: &str, network: &str) -> Option<World> {
        if !Path::new("/proc/self/ns/user").exists() {
            return skip("no user namespaces in this kernel");
        }
        // SAFETY: getuid cannot fail.
        let me = unsafe { libc::getuid() };
        let (as_user, real_home) = if me == 0 {
            match user_entry(TEST_USER) {
                Some((uid, gid, home)) => (Some((uid, gid)), Some(home)),
                None => return skip(&format!("the test user `{TEST_USER}` does not exist")),
            }
        } else {
            (None, std::env::var_os("HOME").map(PathBuf::from))
        };
        let uid = as_user.map_or(me, |(uid, _)| uid);
        // SAFETY: getgid cannot fail.
        let gid = as_user.map_or(unsafe { libc::getgid() }, |(_, gid)| gid);
        let root = std::env::temp_dir().join(format!("kennel-enter-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let home = root.join("home");
        let agent_home = root.join("agent-home");
        let workspace = root.join("repo");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(home.join(".ssh/id_ed25519"), "PRIVATE KEY").unwrap();
        std::fs::create_dir_all(&agent_home).unwrap();
        std::fs::create_dir_all(&workspace).unwrap();
        let git = Command::new("git")
            .args(["init", "-q"])
            .arg(&workspace)
            .status()
            .expect("git");
        assert!(git.success());
        if let Some((uid, gid)) = as_user {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(&root)
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let workspace = std::fs::canonicalize(&workspace).unwrap();
        let home = std::fs::canonicalize(&home).unwrap();
        let agent_home = std::fs::canonicalize(&agent_home).unwrap();
        let mount = |source: &Path, target: &Path, read_only: bool, purpose: &str| {
            serde_json::json!({
                "source": source, "target": target, "read_only": read_only, "purpose": purpose,
            })
        };
        let plan = serde_json::json!({
            "version": 1,
            "agent": "shell",
            "name": format!("kennel-enter-{test}-{}", std::process::id()),
            "backend": "native",
            "image": { "reference": "host", "managed": false },
            "user": { "uid": uid, "gid": gid, "name": TEST_USER, "home": home, "shell": "/bin/sh" },
            "workspace": workspace,
            "workdir": workspace,
            "mounts": [
                mount(&agent_home, &home, false, "agent-home"),
                mount(&workspace, &workspace, false, "workspace"),
                mount(&workspace.join(".git/hooks"), &workspace.join(".git/hooks"), true, "protect"),
                mount(&workspace.join(".git/config"), &workspace.join(".git/config"), true, "protect"),
            ],
            "env": [
                { "name": "PATH", "value": "/usr/local/bin:/usr/bin:/bin", "origin": "kennel", "secret": false },
                { "name": "HOME", "value": home, "origin": "kennel", "secret": false },
            ],
            "command": ["sleep", "600"],
            "tty": false,
            "stdin": true,
            "network": { "mode": network, "allow": [], "deny": [], "enforced": true, "proxy": null },
            "limits": { "pids": 1024, "memory": null, "cpus": null },
            "security": {
                "cap_drop": ["ALL"], "no_new_privileges": true, "init": true, "read_only_rootfs": false,
            },
            "ephemeral": true,
            "labels": {},
            "warnings": [],
        });
        Some(World {
            root,
            home,
            workspace,
            uid,
            real_home,
            as_user,
            driver: driver_binary(),
            plan: serde_json::from_value(plan).expect("a valid Plan"),
        })
    }

    /// The driver with `args`, as the test user.
    fn driver(&self, args: &[&str]) -> Command {
        let mut command = match self.as_user {
            Some((uid, gid)) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--init-groups")
                    .arg(&self.driver);
                command
            }
            None => Command::new(&self.driver),
        };
        command
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir(&self.root)
            .stdin(Stdio::null());
        command
    }

    /// Writes `plan` where the test user can read it.
    fn write_plan(&self, plan: &Plan) -> PathBuf {
        let n = PLANS.fetch_add(1, Ordering::SeqCst);
        let path = self.root.join(format!("plan-{n}.json"));
        std::fs::write(&path, serde_json::to_vec(plan).unwrap()).unwrap();
        path
    }

    /// Starts the sandbox (`sleep 600`) and waits until its agent runs.
    fn start(&self) -> Sandbox {
        let plan = self.write_plan(&self.plan);
        let log = self.root.join("run.log");
        let child = self
            .driver(&["run", plan.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn the sandbox");
        let mut sandbox = Sandbox { child, init: 0 };
        let start = Instant::now();
        loop {
            if let Some(status) = sandbox.child.try_wait().unwrap() {
                panic!(
                    "the sandbox ended ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            // setpriv execs the driver: the child's pid is the runner's.
            if let Some(init) = sandbox_init_of(sandbox.child.id()) {
                let children =
                    std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"))
                        .unwrap_or_default();
                if !children.trim().is_empty() {
                    sandbox.init = init;
                    return sandbox;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no sandbox init found: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The driver's `enter` of `argv` into `sandbox`, with `plan` (the
    /// sandbox's own, unless a test says otherwise).
    fn enter_command(&self, sandbox: &Sandbox, plan: &Plan, argv: &[&str]) -> Command {
        let mut plan = plan.clone();
        plan.command = argv.iter().map(|arg| arg.to_string()).collect();
        let path = self.write_plan(&plan);
        self.driver(&["enter", path.to_str().unwrap(), &sandbox.init.to_string()])
    }

    fn enter(&self, sandbox: &Sandbox, argv: &[&str]) -> Output {
        self.enter_command(sandbox, &self.plan, argv)
            .output()
            .expect("driver runs")
    }

    fn sh(&self, sandbox: &Sandbox, script: &str) -> (i32, String, String) {
        let output = self.enter(sandbox, &["sh", "-c", script]);
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    }
}

/// A running sandbox: stopped (SIGTERM, then SIGKILL) when dropped.
struct Sandbox {
    child: Child,
    init: u32,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the driver did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A host process whose command line is exactly `argv`.
fn host_process(argv: &[&str]) -> Option<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|arg| [arg.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            (std::fs::read(entry.path().join("cmdline")).ok()? == wanted).then_some(pid)
        })
}

fn interfaces(net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = net_dev
        .lines()
        .skip(2)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn the_entered_command_sees_the_sandbox() {
    let Some(world) = World::new("sees", "none") else {
        return;
    };
    let sandbox = world.start();
    let (code, stdout, stderr) = world.sh(
        &sandbox,
        "cat /proc/sys/kernel/hostname; tr '\\0' ' ' < /proc/1/cmdline; echo; pwd; id -u; \
         echo \"home=$HOME\"; read -r stat < /proc/self/stat && echo \"self=${stat%% *}\"; \
         for f in /proc/[0-9]*/cmdline; do printf 'process: '; tr '\\0' ' ' < $f; echo; done",
    );
    assert_eq!(code, 0, "{stdout} {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(world.plan.name.as_str()),
        "{stdout}"
    );
    assert!(
        lines
            .get(1)
            .is_some_and(|init| init.starts_with("kennel __native-init")),
        "PID 1 must be the sandbox's init: {stdout}"
    );
    assert_eq!(
        lines.get(2).copied(),
        Some(world.workspace.to_str().unwrap()),
        "{stdout}"
    );
    assert_eq!(lines.get(3).copied(), Some(world.uid.to_string().as_str()));
    assert!(
        stdout.contains(&format!("home={}\n", world.home.display())),
        "{stdout}"
    );
    // Its own /proc/self resolves: it is in the sandbox's PID namespace,
    // where pids are small.
    let own_pid: u32 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("self="))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no /proc/self: {stdout}"));
    assert!(own_pid < 100, "{stdout}");
    assert!(
        stdout.contains("process: sleep 600 \n"),
        "the agent must be visible: {stdout}"
    );
    // And nothing of the host's: the sandbox's processes are the init, the
    // agent and the entered shell with its children.
    let processes = stdout
        .lines()
        .filter(|l| l.starts_with("process: "))
        .count();
    assert!(processes <= 6, "{stdout}");
}

#[test]
fn the_entered_command_is_confined_like_the_agent() {
    let Some(world) = World::new("confined", "none") else {
        return;
    };
    let sandbox = world.start();
    let secret = world.home.join(".ssh/id_ed25519");
    let real_home = world
        .real_home
        .clone()
        .unwrap_or_else(|| PathBuf::from("/nonexistent-home"));
    let script = format!(
        "grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; \
         grep 'Max processes' /proc/self/limits; \
         touch /usr/kennel-enter-probe && echo USR-WRITTEN; \
         touch /etc/kennel-enter-probe && echo ETC-WRITTEN; \
         touch /kennel-enter-probe && echo ROOT-WRITTEN; \
         touch /dev/kennel-enter-probe && echo DEV-WRITTEN; \
         echo x > .git/hooks/x && echo HOOK-WRITTEN; \
         echo '[core]' >> .git/config && echo CONFIG-WRITTEN; \
         echo inside > entered.txt && echo WORKSPACE-OK; \
         touch /tmp/ok && echo TMP-OK; \
         echo \"home: $(ls -A \"$HOME\")\"; \
         cat {secret} && echo LEAKED; \
         ls /root && echo ROOT-LISTED; ls /home && echo HOME-LISTED; \
         ls {real_home} && echo REAL-HOME-LISTED; \
         unshare -U true 2>&1; \
         cat /proc/net/dev; echo end",
        secret = secret.display(),
        real_home = real_home.display(),
    );
    let (code, stdout, stderr) = world.sh(&sandbox, &script);
    assert_eq!(code, 0, "{stdout} {stderr}");
    for line in [
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(stdout.contains(line), "{line} missing in {stdout}");
    }
    // The Plan's pids limit.
    assert!(
        stdout
            .lines()
            .any(|line| line
                .split_whitespace()
                .take(4)
                .eq(["Max", "processes", "1024", "1024"])),
        "{stdout}"
    );
    for forbidden in [
        "USR-WRITTEN",
        "ETC-WRITTEN",
        "ROOT-WRITTEN",
        "DEV-WRITTEN",
        "HOOK-WRITTEN",
        "CONFIG-WRITTEN",
        "LEAKED",
        "PRIVATE KEY",
        "ROOT-LISTED",
        "HOME-LISTED",
        "REAL-HOME-LISTED",
        ".ssh",
    ] {
        assert!(!stdout.contains(forbidden), "{forbidden}: {stdout}");
    }
    assert!(
        stdout.contains("WORKSPACE-OK") && stdout.contains("TMP-OK"),
        "{stdout} {stderr}"
    );
    assert!(
        stdout.contains("Operation not permitted"),
        "unshare must be refused: {stdout}"
    );
    assert!(!Path::new("/usr/kennel-enter-probe").exists());
    assert!(!Path::new("/etc/kennel-enter-probe").exists());
    assert!(!world.workspace.join(".git/hooks/x").exists());
    let written = world.workspace.join("entered.txt");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "inside\n");
    assert_eq!(std::fs::metadata(&written).unwrap().uid(), world.uid);
    let net = stdout
        .split_once("Inter-|")
        .map(|(_, rest)| format!("Inter-|{rest}"))
        .unwrap_or_default();
    assert_eq!(interfaces(&net), ["lo"], "{stdout}");
    assert!(stdout.ends_with("end\n"), "{stdout}");
}

#[test]
fn the_open_network_is_the_hosts() {
    let Some(world) = World::new("open", "open") else {
        return;
    };
    let sandbox = world.start();
    // The same network namespace as this process's, not the same list of
    // interfaces at two moments (engines add and remove veths meanwhile:
    // a CI run failed so).
    let output = world.enter(&sandbox, &["readlink", "/proc/self/ns/net"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(
        stdout.trim(),
        host.display().to_string(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A helper started before its Plan (what `kennel run` does while it
/// prepares) runs the Plan it is sent like one started for it, and marks
/// its stages in order; one that is never sent a Plan ends without a word
/// and leaves no process behind.
#[test]
fn a_standby_helper_runs_the_plan_it_is_sent_and_ends_quietly_unused() {
    let Some(world) = World::new("standby", "none") else {
        return;
    };
    let mut plan = world.plan.clone();
    plan.command = ["sh", "-c", "echo in-sandbox:$$; exit 9"]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
    let path = world.write_plan(&plan);
    let output = world
        .driver(&["standby", path.to_str().unwrap()])
        .output()
        .expect("driver runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(9), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "in-sandbox:2\n",
        "the agent is the first process after the sandbox's init\n{stderr}"
    );
    let stages: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("stage: "))
        .collect();
    assert_eq!(
        stages,
        [
            "native: prepare",
            "helper: plan",
            "helper: layout",
            "namespaces",
            "mounts",
            "limits, forwarder",
            "landlock, seccomp",
            "agent",
            "init exit",
            "helper exit"
        ],
        "{stderr}"
    );

    let output = world
        .driver(&["standby-unused"])
        .output()
        .expect("driver runs");
    assert_eq!(
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        ),
        (Some(0), "".into())
    );
}

#[test]
fn exit_codes_pass_through_and_missing_commands_are_127() {
    let Some(world) = World::new("codes", "none") else {
        return;
    };
    let sandbox = world.start();
    let (code, _, stderr) = world.sh(&sandbox, "exit 7");
    assert_eq!(code, 7, "{stderr}");
    let (code, _, stderr) = world.sh(&sandbox, "kill -TERM $$");
    assert_eq!(code, 143, "{stderr}");

    let output = world.enter(&sandbox, &["kennel-no-such-command"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(127), "{stderr}");
    assert!(stderr.contains("driver-error: CommandNotFound"), "{stderr}");

    // The command is looked up in the sandbox's own tree: a program made in
    // its private /tmp runs, though the host has no such file.
    let (code, _, stderr) = world.sh(
        &sandbox,
        "printf '#!/bin/sh\\necho made-inside\\n' > /tmp/kennel-tool && chmod +x /tmp/kennel-tool",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!Path::new("/tmp/kennel-tool").exists());
    let output = world.enter(&sandbox, &["/tmp/kennel-tool"]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "made-inside\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn stdin_and_signals_reach_the_entered_command() {
    let Some(world) = World::new("signals", "none") else {
        return;
    };
    let sandbox = world.start();
    let mut child = world
        .enter_command(&sandbox, &world.plan, &["cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hi\n",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0));

    let argv = ["sleep", "4242"];
    let mut child = world
        .enter_command(&sandbox, &world.plan, &argv)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    while host_process(&argv).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the entered sleep never ran"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child (setpriv execs the driver).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert!(
        host_process(&argv).is_none(),
        "the entered sleep outlived kennel"
    );
}

fn other_error(result: Result<i32, NativeError>) -> String {
    match result {
        Err(NativeError::Other(message)) => message,
        other => panic!("expected a clear error, got {other:?}"),
    }
}

#[test]
fn entering_anything_but_the_sandbox_fails_clearly() {
    let Some(world) = World::new("refused", "none") else {
        return;
    };
    let opts = NativeOptions {
        helper: Some(world.driver.clone()),
        ..Default::default()
    };
    // A command that ends at once, should a check let it through.
    let mut plan = world.plan.clone();
    plan.command = vec!["true".into()];
    // Not a sandbox at all.
    let me = std::process::id();
    let message = other_error(enter(&plan, me, &opts));
    assert!(
        message.contains("is not a kennel native sandbox"),
        "{message}"
    );
    assert_eq!(sandbox_init_of(me), None);
    // A process that is gone.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let message = other_error(enter(&plan, pid, &opts));
    assert!(message.contains("not running"), "{message}");

    let sandbox = world.start();
    // The sandbox's helper is `kennel __native-init` too, but outside the
    // sandbox's PID namespace.
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", sandbox.init)).unwrap();
    let helper: u32 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|pid| pid.parse().ok())
        .unwrap();
    let output = world
        .driver(&[
            "enter",
            world.write_plan(&plan).to_str().unwrap(),
            &helper.to_string(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("is not the init of a kennel native sandbox"),
        "{stderr}"
    );

    // Another user (root here) may not enter it.
    if world.as_user.is_some() {
        let message = other_error(enter(&plan, sandbox.init, &opts));
        assert!(message.contains("only that user can enter it"), "{message}");
    }

    // A Plan that is not this sandbox's: its Landlock rules would not be.
    let mut other = plan.clone();
    other.name = format!("{}-other", world.plan.name);
    let output = world
        .enter_command(&sandbox, &other, &["true"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains(&format!("is the sandbox `{}`", world.plan.name)),
        "{stderr}"
    );

    // The helper checks for itself, whatever its caller did: a payload
    // that names this test process.
    let mut payload = tempfile(&world.root, "payload.json");
    let json = serde_json::json!({
        "plan": plan,
        "decision": { "namespaces": true, "landlock": true, "seccomp": true, "warnings": [] },
        "init_pid": me,
    });
    payload.write_all(json.to_string().as_bytes()).unwrap();
    let fd = payload.as_raw_fd();
    let mut command = world.driver(&[kennel_native::ENTER_ARG, &fd.to_string()]);
    // SAFETY: only fcntl between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(125), "{stderr}");
    assert!(
        stderr.contains("is not a kennel native sandbox"),
        "{stderr}"
    );
}

fn tempfile(dir: &Path, name: &str) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(name))
        .unwrap()
}
