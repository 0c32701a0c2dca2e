//! Test harness for kennel's end-to-end tests: backends, the non-root test
//! user, per-test workspaces and config, running kennel and the engine CLI.
//!
//! Environment:
//! - `KENNEL_E2E=require`: an unready environment fails the test instead of
//!   skipping it (CI sets this). `KENNEL_E2E=skip` skips every e2e test.
//! - `KENNEL_E2E_USER`: the non-root user kennel runs as when the tests run as
//!   root (default `kennel-e2e`, created by `scripts/e2e-setup.sh`).
//! - `KENNEL_E2E_BASE_IMAGE`: the local base image (default
//!   `kennel-test/bookworm:latest`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

pub const PODMAN_SOCK: &str = "/run/podman/podman.sock";
const SUITE_BASE: &str = "/var/tmp/kennel-e2e";
/// The base image scripts/incus-setup.sh imports into the test user's project.
pub const INCUS_BASE_IMAGE: &str = "kennel-test/bookworm";

/// Default time limit for one kennel invocation (image builds have their own).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(180);
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

// ------------------------------------------------------------------ backends

/// One engine configuration the suite runs against. Adding a backend: add a
/// variant here (name, kennel's `backend` value, environment, engine CLI) and
/// one `backend_suite!` line in `e2e.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Docker,
    /// Rootful Podman, used by the non-root user through its API socket.
    Podman,
    /// The user's own rootless Podman.
    PodmanRootless,
    /// kennel's native backend: the host's own programs in namespaces,
    /// Landlock and seccomp. No engine, no image: what the suite observes
    /// through the engine elsewhere it reads from `/proc` here.
    Native,
    /// Incus system containers, through the test user's own restricted
    /// project (incus-user's socket); images converted from Docker's.
    Incus,
}

impl Backend {
    pub const ALL: [Backend; 5] = [
        Backend::Docker,
        Backend::Podman,
        Backend::PodmanRootless,
        Backend::Native,
        Backend::Incus,
    ];
    pub const COUNT: usize = Self::ALL.len();

    fn index(self) -> usize {
        Self::ALL.iter().position(|b| *b == self).unwrap()
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Docker => "docker",
            Backend::Podman => "podman",
            Backend::PodmanRootless => "podman-rootless",
            Backend::Native => "native",
            Backend::Incus => "incus",
        }
    }

    /// True for the container backends (an engine, images, containers).
    pub fn has_engine(self) -> bool {
        self != Backend::Native
    }

    /// The value of kennel's `backend` setting.
    pub fn kennel_backend(self) -> &'static str {
        match self {
            Backend::Docker => "docker",
            Backend::Podman | Backend::PodmanRootless => "podman",
            Backend::Native => "native",
            Backend::Incus => "incus",
        }
    }

    /// Variables kennel (and the engine CLI) get for this backend.
    fn env(self) -> Vec<(String, String)> {
        match self {
            Backend::Podman => vec![("CONTAINER_HOST".into(), format!("unix://{PODMAN_SOCK}"))],
            Backend::Docker | Backend::PodmanRootless | Backend::Native | Backend::Incus => {
                vec![]
            }
        }
    }

    /// The engine's own CLI, as the test user sees this backend. Podman is
    /// asked through the same API socket kennel uses: a local rootless
    /// `podman` may sit in another mount namespace than the service and
    /// fail on containers the service runs.
    fn engine_argv(self, user: &TestUser) -> Vec<String> {
        let remote = |sock: String| {
            vec![
                "podman".into(),
                "--remote".into(),
                "--url".into(),
                format!("unix://{sock}"),
            ]
        };
        match self {
            Backend::Docker => vec!["docker".into()],
            Backend::Podman => remote(PODMAN_SOCK.into()),
            Backend::PodmanRootless => remote(
                user.runtime_dir()
                    .join("podman/podman.sock")
                    .display()
                    .to_string(),
            ),
            Backend::Native => {
                panic!("the native backend has no engine CLI (use the /proc-based helpers)")
            }
            Backend::Incus => vec!["incus".into()],
        }
    }
}

// ---------------------------------------------------------------- skip policy

fn e2e_mode() -> String {
    std::env::var("KENNEL_E2E").unwrap_or_default()
}

pub fn required() -> bool {
    e2e_mode() == "require"
}

/// Skip (print and return `None`) or, under `KENNEL_E2E=require`, panic.
pub fn not_ready<T>(what: &str, reason: &str) -> Option<T> {
    if required() {
        panic!("KENNEL_E2E=require but {what} is not ready: {reason}");
    }
    eprintln!("SKIP {what}: {reason} (set KENNEL_E2E=require to make this a failure)");
    None
}

pub fn base_image() -> String {
    std::env::var("KENNEL_E2E_BASE_IMAGE").unwrap_or_else(|_| "kennel-test/bookworm:latest".into())
}

// --------------------------------------------------------------- test user

#[derive(Debug, Clone)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The user's home on the host (`$HOME` for kennel).
    pub home: PathBuf,
    /// True when the tests run as root and switch to this user.
    pub switch: bool,
}

fn cmd_stdout(argv: &[&str]) -> Result<String, String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

fn find_user() -> Result<TestUser, String> {
    if current_uid() == 0 {
        let name = std::env::var("KENNEL_E2E_USER").unwrap_or_else(|_| "kennel-e2e".into());
        let entry = cmd_stdout(&["getent", "passwd", &name]).map_err(|_| {
            format!("test user `{name}` does not exist (run scripts/e2e-setup.sh as root)")
        })?;
        let fields: Vec<&str> = entry.split(':').collect();
        if fields.len() < 7 {
            return Err(format!("bad passwd entry for {name}: {entry}"));
        }
        Ok(TestUser {
            name,
            uid: fields[2].parse().map_err(|_| "bad uid".to_string())?,
            gid: fields[3].parse().map_err(|_| "bad gid".to_string())?,
            home: PathBuf::from(fields[5]),
            switch: true,
        })
    } else {
        let name = cmd_stdout(&["id", "-un"])?;
        let uid = cmd_stdout(&["id", "-u"])?
            .parse()
            .map_err(|_| "bad uid".to_string())?;
        let gid = cmd_stdout(&["id", "-g"])?
            .parse()
            .map_err(|_| "bad gid".to_string())?;
        let home = std::env::var("HOME").map_err(|_| "HOME is not set".to_string())?;
        Ok(TestUser {
            name,
            uid,
            gid,
            home: home.into(),
            switch: false,
        })
    }
}

impl TestUser {
    pub fn runtime_dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/user/{}", self.uid))
    }

    /// A command that runs `argv` as this user with exactly `env` (nothing of
    /// the test process's environment leaks in).
    pub fn command(&self, argv: &[String], env: &[(String, String)]) -> Command {
        let mut cmd;
        if self.switch {
            cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={}", self.uid))
                .arg(format!("--regid={}", self.gid))
                .arg("--init-groups")
                .arg("env")
                .arg("-i");
            for (k, v) in env {
                cmd.arg(format!("{k}={v}"));
            }
            cmd.args(argv);
        } else {
            cmd = Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)));
        }
        cmd
    }

    fn base_env(&self) -> Vec<(String, String)> {
        vec![
            ("HOME".into(), self.home.display().to_string()),
            ("USER".into(), self.name.clone()),
            ("LOGNAME".into(), self.name.clone()),
            (
                "PATH".into(),
                "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into(),
            ),
            (
                "XDG_RUNTIME_DIR".into(),
                self.runtime_dir().display().to_string(),
            ),
            // The user's own rootless Podman store, whatever the test's
            // XDG dirs (see scripts/e2e-setup.sh).
            (
                "CONTAINERS_STORAGE_CONF".into(),
                self.home
                    .join(".config/containers/storage.conf")
                    .display()
                    .to_string(),
            ),
        ]
    }

    /// Run a short helper command as the user; error text on failure.
    pub fn run(&self, argv: &[&str], extra_env: &[(String, String)]) -> Result<String, String> {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let mut env = self.base_env();
        env.extend(extra_env.iter().cloned());
        let out = Exec::new(self.command(&argv, &env), argv.join(" "))
            .timeout(Duration::from_secs(120))
            .run();
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(out.to_string())
        }
    }

    /// Give `path` (and everything below it) to the user.
    pub fn chown(&self, path: &Path) {
        self.chown_opt(path, true)
    }

    /// Give `path` alone to the user.
    pub fn chown_one(&self, path: &Path) {
        self.chown_opt(path, false)
    }

    fn chown_opt(&self, path: &Path, recursive: bool) {
        if self.switch {
            let mut cmd = Command::new("chown");
            if recursive {
                cmd.arg("-R");
            }
            let status = cmd
                .arg(format!("{}:{}", self.uid, self.gid))
                .arg(path)
                .status()
                .expect("chown");
            assert!(status.success(), "chown {}", path.display());
        }
    }
}

// ---------------------------------------------------------------- processes

/// Result of one command.
pub struct Out {
    pub what: String,
    pub status: Option<ExitStatus>,
    pub stdout_raw: Vec<u8>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub timed_out: bool,
}

impl Out {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), Some(code), "expected exit code {code}\n{self}");
        self
    }
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        self.assert_code(0)
    }
    /// Parse stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e})\n{self}"))
    }
    /// `KEY=value` lines of a probe's output.
    pub fn kv(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.to_string()))
    }
    #[track_caller]
    pub fn expect_kv(&self, key: &str) -> String {
        self.kv(key)
            .unwrap_or_else(|| panic!("probe printed no {key}=…\n{self}"))
    }
}

fn clip(text: &str) -> String {
    const MAX: usize = 6000;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut cut = text.len() - MAX;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    format!("[… {} bytes cut …]{}", cut, &text[cut..])
}

impl fmt::Display for Out {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.what)?;
        writeln!(
            f,
            "status: {:?}{} after {:.1}s",
            self.status,
            if self.timed_out {
                " (TIMED OUT, killed)"
            } else {
                ""
            },
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "--- stdout ---\n{}", clip(&self.stdout))?;
        write!(f, "--- stderr ---\n{}", clip(&self.stderr))
    }
}

/// A command with a time limit, optional stdin, captured output.
pub struct Exec {
    cmd: Command,
    what: String,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Exec {
    pub fn new(cmd: Command, what: String) -> Self {
        Exec {
            cmd,
            what,
            stdin: None,
            timeout: RUN_TIMEOUT,
        }
    }
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cmd.current_dir(dir);
        self
    }

    pub fn run(mut self) -> Out {
        let start = Instant::now();
        self.cmd
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.what));
        let stdin_thread = self.stdin.take().map(|data| {
            let mut pipe = child.stdin.take().unwrap();
            thread::spawn(move || {
                let _ = pipe.write_all(&data);
            })
        });
        let mut out_pipe = child.stdout.take().unwrap();
        let mut err_pipe = child.stderr.take().unwrap();
        let out_thread = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out_pipe.read_to_end(&mut buf);
            buf
        });
        let err_thread = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err_pipe.read_to_end(&mut buf);
            buf
        });
        let (status, timed_out) = wait_deadline(&mut child, self.timeout);
        if timed_out {
            let _ = child.kill();
        }
        let status = status.or_else(|| child.wait().ok());
        if let Some(t) = stdin_thread {
            let _ = t.join();
        }
        // Readers end when every holder of the pipes has exited; a leaked
        // grandchild could hold them, so do not wait forever.
        let stdout_raw = join_timeout(out_thread, Duration::from_secs(10));
        let stderr_raw = join_timeout(err_thread, Duration::from_secs(10));
        Out {
            what: self.what,
            status,
            stdout: String::from_utf8_lossy(&stdout_raw).into_owned(),
            stdout_raw,
            stderr: String::from_utf8_lossy(&stderr_raw).into_owned(),
            elapsed: start.elapsed(),
            timed_out,
        }
    }
}

fn join_timeout(handle: thread::JoinHandle<Vec<u8>>, limit: Duration) -> Vec<u8> {
    let start = Instant::now();
    while !handle.is_finished() {
        if start.elapsed() > limit {
            return b"[output reader still blocked]".to_vec();
        }
        thread::sleep(Duration::from_millis(20));
    }
    handle.join().unwrap_or_default()
}

/// Wait for `child` until `limit`; (status, timed_out).
pub fn wait_deadline(child: &mut Child, limit: Duration) -> (Option<ExitStatus>, bool) {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return (Some(status), false),
            Ok(None) if Instant::now() >= deadline => return (None, true),
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(_) => return (None, false),
        }
    }
}

/// Quote for `sh`.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

// -------------------------------------------------------------------- suite

/// State shared by every test of one test-binary run.
pub struct Suite {
    pub user: TestUser,
    /// kennel's binary, executable by the test user.
    pub kennel: PathBuf,
    /// This run's directory (owned by the test user).
    pub root: PathBuf,
}

static SUITE: OnceLock<Result<Suite, String>> = OnceLock::new();

fn suite() -> Result<&'static Suite, String> {
    SUITE
        .get_or_init(make_suite)
        .as_ref()
        .map_err(|e| e.clone())
}

fn make_suite() -> Result<Suite, String> {
    let user = find_user()?;
    let base = if user.switch {
        PathBuf::from(SUITE_BASE)
    } else {
        std::env::temp_dir().join(format!("kennel-e2e-{}", user.name))
    };
    std::fs::create_dir_all(&base).map_err(|e| format!("create {}: {e}", base.display()))?;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", base.display()))?;
    remove_stale_runs(&base);
    let root = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&base)
        .map_err(|e| format!("create run dir in {}: {e}", base.display()))?
        .keep();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    user.chown(&root);

    // The binary must be executable by the test user (the checkout may live
    // under a directory only root can enter, e.g. /root).
    let built = PathBuf::from(env!("CARGO_BIN_EXE_kennel"));
    let bin = built.display().to_string();
    let kennel = if user.run(&["test", "-x", &bin], &[]).is_ok()
        && user.run(&["test", "-r", &bin], &[]).is_ok()
    {
        built
    } else {
        let copy = root.join("bin/kennel");
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(&built, &copy).map_err(|e| format!("copy kennel binary: {e}"))?;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            copy.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        copy
    };
    Ok(Suite { user, kennel, root })
}

/// Runs older than a day are leftovers of interrupted test runs.
fn remove_stale_runs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age > Duration::from_secs(24 * 3600));
        if old && entry.file_name().to_string_lossy().starts_with("run-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Per-backend state: readiness and the shared data directory.
pub struct BackendState {
    /// Shared by every test of this backend: its `cache` directory is the
    /// tests' `XDG_CACHE_HOME` (each test has a data directory of its own,
    /// so that sessions, slots and agent homes of parallel tests never mix).
    pub data_home: PathBuf,
}

static BACKENDS: [OnceLock<Result<BackendState, String>>; Backend::COUNT] =
    [const { OnceLock::new() }; Backend::COUNT];
static SHELL_IMAGE: [OnceLock<Result<(), String>>; Backend::COUNT] =
    [const { OnceLock::new() }; Backend::COUNT];

fn backend_state(backend: Backend) -> Result<&'static BackendState, String> {
    BACKENDS[backend.index()]
        .get_or_init(|| check_backend(backend))
        .as_ref()
        .map_err(|e| e.clone())
}

fn check_backend(backend: Backend) -> Result<BackendState, String> {
    let suite = suite()?;
    let user = &suite.user;
    if backend == Backend::Native {
        check_native(suite)?;
        return backend_data_home(suite, backend);
    }
    let mut env = backend.env();
    let engine = backend.engine_argv(user);
    let engine_run = |args: &[&str], env: &[(String, String)]| {
        let mut argv: Vec<&str> = engine.iter().map(|s| s.as_str()).collect();
        argv.extend_from_slice(args);
        user.run(&argv, env)
    };
    match backend {
        Backend::Docker => {
            engine_run(&["info", "--format", "{{.ServerVersion}}"], &env)
                .map_err(|e| format!("docker is not usable by {}: {e}", user.name))?;
            engine_run(&["image", "inspect", &base_image()], &env).map_err(|_| {
                format!(
                    "base image {} missing in docker (run scripts/e2e-setup.sh)",
                    base_image()
                )
            })?;
        }
        Backend::Podman => {
            if !Path::new(PODMAN_SOCK).exists() {
                return Err(format!(
                    "rootful podman API socket {PODMAN_SOCK} missing (run scripts/e2e-setup.sh)"
                ));
            }
            engine_run(&["image", "exists", &base_image()], &env).map_err(|e| {
                format!(
                    "rootful podman at {PODMAN_SOCK} unusable by {} or base image {} missing: {e}",
                    user.name,
                    base_image()
                )
            })?;
        }
        Backend::PodmanRootless => {
            if !user.runtime_dir().is_dir() {
                return Err(format!("{} missing", user.runtime_dir().display()));
            }
            // The user's API service must already run with the user's plain
            // environment (see scripts/e2e-setup.sh): one that kennel starts
            // would inherit the tests' XDG_DATA_HOME, i.e. an empty image store.
            let sock = user.runtime_dir().join("podman/podman.sock");
            let sock = sock.display().to_string();
            user.run(
                &[
                    "curl",
                    "-fsS",
                    "--max-time",
                    "5",
                    "--unix-socket",
                    &sock,
                    "http://d/_ping",
                ],
                &[],
            )
            .map_err(|e| {
                format!(
                    "rootless podman API service of {} does not answer on {sock} \
                         (run scripts/e2e-setup.sh): {e}",
                    user.name
                )
            })?;
            engine_run(&["image", "exists", &base_image()], &env).map_err(|e| {
                format!(
                    "rootless podman of {} unusable or base image {} missing: {e}",
                    user.name,
                    base_image()
                )
            })?;
        }
        Backend::Incus => {
            engine_run(&["image", "show", INCUS_BASE_IMAGE], &env).map_err(|e| {
                format!(
                    "Incus is not usable by {} through incus-user, or image {INCUS_BASE_IMAGE} is missing in its project (run scripts/e2e-setup.sh): {e}",
                    user.name
                )
            })?;
        }
        Backend::Native => unreachable!("checked above"),
    }
    env.clear();
    backend_data_home(suite, backend)
}

fn backend_data_home(suite: &Suite, backend: Backend) -> Result<BackendState, String> {
    let user = &suite.user;
    let data_home = suite.root.join("data").join(backend.name());
    std::fs::create_dir_all(&data_home).unwrap();
    user.chown_one(&suite.root.join("data"));
    user.chown(&data_home);
    Ok(BackendState { data_home })
}

/// The native backend is ready when `kennel doctor --json`, run as the test
/// user, reports it ok (user namespaces, Landlock and seccomp all usable).
fn check_native(suite: &Suite) -> Result<(), String> {
    let user = &suite.user;
    let argv = vec![
        suite.kennel.display().to_string(),
        "doctor".to_string(),
        "--json".to_string(),
    ];
    let mut cmd = user.command(&argv, &user.base_env());
    cmd.current_dir("/");
    let out = Exec::new(cmd, format!("[as {}] kennel doctor --json", user.name))
        .timeout(Duration::from_secs(120))
        .run();
    let report: Value = serde_json::from_str(&out.stdout)
        .map_err(|e| format!("`kennel doctor --json` printed no JSON ({e}):\n{out}"))?;
    let native = report
        .get("backends")
        .and_then(Value::as_array)
        .and_then(|all| {
            all.iter()
                .find(|b| b.get("name").and_then(Value::as_str) == Some("native"))
        })
        .ok_or_else(|| format!("`kennel doctor --json` reports no `native` backend:\n{out}"))?;
    if native.get("ok") != Some(&Value::Bool(true)) {
        return Err(format!(
            "`kennel doctor` says the native sandbox is unavailable to {}: {} (fix: {})",
            user.name,
            native.get("detail").and_then(Value::as_str).unwrap_or("?"),
            native.get("fix").and_then(Value::as_str).unwrap_or("?"),
        ));
    }
    Ok(())
}

// ----------------------------------------------------------------- per test

/// One test's fixture: a workspace (git repository), a config dir, and ways
/// to run kennel and the engine as the test user.
pub struct Ctx {
    pub backend: Backend,
    pub name: String,
    pub user: TestUser,
    pub kennel_bin: PathBuf,
    /// The workspace: a git repository with one commit, owned by the user.
    pub ws: PathBuf,
    /// `XDG_CONFIG_HOME` of this test.
    pub config_home: PathBuf,
    /// `XDG_DATA_HOME` of this test (its own: session registry, agent homes).
    pub data_home: PathBuf,
    /// `XDG_CACHE_HOME`, shared by the backend's tests (engine facts).
    cache_home: PathBuf,
    dir: PathBuf,
}

impl Ctx {
    /// The fixture, or `None` (after printing why) when the environment for
    /// `backend` is not ready and `KENNEL_E2E` is not `require`.
    pub fn new(backend: Backend, name: &str) -> Option<Ctx> {
        let what = format!("{}::{}", backend.name(), name);
        if e2e_mode() == "skip" {
            eprintln!("SKIP {what}: KENNEL_E2E=skip");
            return None;
        }
        let state = match backend_state(backend) {
            Ok(state) => state,
            Err(reason) => {
                return not_ready(&format!("{what} ({} backend)", backend.name()), &reason);
            }
        };
        let suite = suite().unwrap();
        let dir = suite
            .root
            .join("tests")
            .join(format!("{}-{}", backend.name(), name));
        let ws = dir.join("workspace");
        let config_home = dir.join("config");
        let data_home = dir.join("data");
        std::fs::create_dir_all(&data_home).unwrap();
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::create_dir_all(config_home.join("kennel")).unwrap();
        std::fs::write(ws.join("README.md"), format!("e2e workspace for {what}\n")).unwrap();
        suite.user.chown_one(&suite.root.join("tests"));
        suite.user.chown(&dir);
        let ctx = Ctx {
            backend,
            name: name.to_string(),
            user: suite.user.clone(),
            kennel_bin: suite.kennel.clone(),
            ws,
            config_home,
            data_home,
            cache_home: state.data_home.join("cache"),
            dir,
        };
        ctx.git(&["init", "-q", "-b", "main"]);
        ctx.git(&["add", "README.md"]);
        ctx.git(&["commit", "-q", "-m", "initial commit"]);
        ctx.write_config("", "");
        Some(ctx)
    }

    /// Like `new`, and makes sure the backend's `shell` image is built (once
    /// per backend, before the tests that need it race for it). The native
    /// backend runs the host's own programs and has no image to build.
    pub fn with_shell_image(backend: Backend, name: &str) -> Option<Ctx> {
        let ctx = Self::new(backend, name)?;
        if !backend.has_engine() {
            return Some(ctx);
        }
        let built = SHELL_IMAGE[backend.index()].get_or_init(|| {
            let out = ctx
                .kennel(&["image", "build", "shell"])
                .timeout(BUILD_TIMEOUT)
                .run();
            if out.success() {
                Ok(())
            } else {
                Err(out.to_string())
            }
        });
        if let Err(e) = built {
            panic!(
                "`kennel image build shell` failed on {}:\n{e}",
                backend.name()
            );
        }
        Some(ctx)
    }

    /// A scratch directory of this test outside the workspace.
    pub fn scratch(&self) -> PathBuf {
        let dir = self.dir.join("scratch");
        std::fs::create_dir_all(&dir).unwrap();
        self.user.chown(&dir);
        dir
    }

    /// Write `$XDG_CONFIG_HOME/kennel/config.toml`: the test defaults, extra
    /// `[defaults]` lines, then extra tables.
    pub fn write_config(&self, defaults_extra: &str, tables: &str) {
        let text = format!(
            "[defaults]\nbase_image = \"{}\"\nbackend = \"{}\"\n{}\n{}\n",
            base_image(),
            self.backend.kennel_backend(),
            defaults_extra,
            tables
        );
        let path = self.config_home.join("kennel/config.toml");
        std::fs::write(&path, text).unwrap();
        self.user.chown(&self.config_home);
    }

    /// The environment kennel runs with.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.user.base_env();
        env.push((
            "XDG_CONFIG_HOME".into(),
            self.config_home.display().to_string(),
        ));
        env.push(("XDG_DATA_HOME".into(), self.data_home.display().to_string()));
        env.push((
            "XDG_CACHE_HOME".into(),
            self.cache_home.display().to_string(),
        ));
        env.extend(self.backend.env());
        env
    }

    /// Every session in `kennel ls --all --json`.
    #[track_caller]
    pub fn sessions(&self) -> Vec<Value> {
        let out = self.kennel(&["ls", "--all", "--json"]).run();
        out.assert_ok();
        out.json()["sessions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The session named `name` in `kennel ls --all --json`.
    #[track_caller]
    pub fn session(&self, name: &str) -> Option<Value> {
        self.sessions()
            .into_iter()
            .find(|session| session["name"] == name)
    }

    /// `kennel ARGS` as the test user, in the workspace.
    pub fn kennel(&self, args: &[&str]) -> Exec {
        self.kennel_env(args, &[])
    }

    /// `kennel start shell --network none --name NAME OPTIONS [-- COMMAND]`:
    /// a persistent shell session with no network, as the session tests
    /// start them (no command: the shell itself).
    pub fn start_offline(&self, name: &str, options: &[&str], command: &[&str]) -> Exec {
        let mut args = vec!["start", "shell", "--network", "none", "--name", name];
        args.extend_from_slice(options);
        if !command.is_empty() {
            args.push("--");
            args.extend_from_slice(command);
        }
        self.kennel(&args)
    }

    /// `kennel ARGS` with extra environment variables.
    pub fn kennel_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Exec {
        let (cmd, what) = self.kennel_command(args, extra);
        Exec::new(cmd, what).cwd(&self.ws)
    }

    pub fn kennel_command(&self, args: &[&str], extra: &[(&str, &str)]) -> (Command, String) {
        let mut argv = vec![self.kennel_bin.display().to_string()];
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut env = self.env();
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        let what = format!(
            "[{} as {}] kennel {}",
            self.backend.name(),
            self.user.name,
            args.iter()
                .map(|a| sh_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut cmd = self.user.command(&argv, &env);
        cmd.current_dir(&self.ws);
        (cmd, what)
    }

    /// `kennel run shell -- sh -c SCRIPT`.
    pub fn sh(&self, script: &str) -> Exec {
        self.kennel(&["run", "shell", "--", "sh", "-c", script])
    }

    /// A command as the test user with kennel's environment (cwd: workspace).
    pub fn as_user(&self, argv: &[&str]) -> Exec {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let mut cmd = self.user.command(&argv, &self.env());
        cmd.current_dir(&self.ws);
        Exec::new(cmd, format!("[as {}] {}", self.user.name, argv.join(" "))).timeout(RUN_TIMEOUT)
    }

    /// `git -C WORKSPACE ARGS` as the test user; stdout.
    #[track_caller]
    pub fn git(&self, args: &[&str]) -> String {
        let mut argv = vec![
            "git",
            "-c",
            "user.name=Kennel E2E",
            "-c",
            "user.email=e2e@kennel.invalid",
            "-c",
            "init.defaultBranch=main",
        ];
        argv.extend_from_slice(args);
        let out = self.as_user(&argv).run();
        out.assert_ok();
        out.stdout
    }

    /// The engine CLI (docker / podman --remote / rootless podman) as the
    /// user, with the user's plain environment: rootless podman keeps its
    /// image store under XDG_DATA_HOME, which the tests point elsewhere for
    /// kennel.
    pub fn engine(&self, args: &[&str]) -> Out {
        let mut argv: Vec<String> = self.backend.engine_argv(&self.user);
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut env = self.user.base_env();
        env.extend(self.backend.env());
        let what = format!("[as {}] {}", self.user.name, argv.join(" "));
        let mut cmd = self.user.command(&argv, &env);
        cmd.current_dir(&self.ws);
        Exec::new(cmd, what).timeout(Duration::from_secs(120)).run()
    }

    pub fn workspace_label(&self) -> String {
        format!("label=dev.kennel.workspace={}", self.ws.display())
    }

    /// IDs of every sandbox of this workspace, running or not: the
    /// containers labelled with it, or (native) the host PIDs of its
    /// processes (see [`native_sandbox`]).
    pub fn workspace_containers(&self) -> Vec<String> {
        if !self.backend.has_engine() {
            return native_sandbox(&self.ws)
                .all
                .iter()
                .map(|p| p.pid.to_string())
                .collect();
        }
        if self.backend == Backend::Incus {
            return self
                .incus_instances()
                .into_iter()
                .map(|(name, _)| name)
                .collect();
        }
        let out = self.engine(&[
            "ps",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            &self.workspace_label(),
        ]);
        out.assert_ok();
        out.stdout
            .split_whitespace()
            .map(|s| s.to_string())
            .collect()
    }

    /// Incus: this workspace's instances (its label as a `user.*` key),
    /// with their status.
    pub fn incus_instances(&self) -> Vec<(String, String)> {
        let label = self.workspace_label();
        let (key, value) = label
            .strip_prefix("label=")
            .unwrap_or(&label)
            .split_once('=')
            .unwrap_or_default();
        let out = self.engine(&["list", "--format", "json"]);
        out.assert_ok();
        out.json()
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|instance| instance["config"][format!("user.{key}")] == value)
            .map(|instance| {
                (
                    instance["name"].as_str().unwrap_or_default().to_string(),
                    instance["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Whether the backend still has the sandbox `id`.
    pub fn sandbox_exists(&self, id: &str) -> bool {
        match self.backend {
            Backend::Incus => self.engine(&["info", id]).success(),
            _ => self.engine(&["container", "inspect", id]).success(),
        }
    }

    /// Removes the sandbox `id` behind kennel's back, with the backend's
    /// own CLI, and waits until it is gone.
    pub fn remove_sandbox_now(&self, id: &str) {
        let out = match self.backend {
            Backend::Incus => self.engine(&["delete", "--force", id]),
            _ => self.engine(&["rm", "-f", id]),
        };
        out.assert_ok();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.sandbox_exists(id) {
            assert!(Instant::now() < deadline, "{id} was not removed");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// `container inspect ID` as JSON (the first element). Incus: the
    /// fields the tests read, in the engines' shape (`Name`,
    /// `State.Running`, `HostConfig.{PidsLimit,Memory,NanoCpus}`).
    pub fn inspect(&self, id: &str) -> Value {
        if self.backend == Backend::Incus {
            let out = self.engine(&["list", id, "--format", "json"]);
            out.assert_ok();
            let found = out
                .json()
                .as_array()
                .and_then(|all| all.iter().find(|i| i["name"] == id).cloned())
                .unwrap_or(Value::Null);
            let config = &found["config"];
            let number = |key: &str| {
                config[key]
                    .as_str()
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0)
            };
            let nano_cpus = config["limits.cpu.allowance"]
                .as_str()
                .and_then(|v| v.strip_suffix("ms/100ms"))
                .and_then(|ms| ms.parse::<i64>().ok())
                .map(|ms| ms * 10_000_000)
                .unwrap_or(0);
            return serde_json::json!({
                "Name": format!("/{id}"),
                "State": { "Running": found["status"] == "Running" },
                "HostConfig": {
                    "PidsLimit": number("limits.processes"),
                    "Memory": number("limits.memory"),
                    "NanoCpus": nano_cpus,
                },
            });
        }
        let out = self.engine(&["container", "inspect", id]);
        out.assert_ok();
        match out.json() {
            Value::Array(mut items) if !items.is_empty() => items.remove(0),
            other => other,
        }
    }

    /// The host paths bound into the running sandbox `id`. Containers: the
    /// engine's `bind` mounts. Native: every mount in the agent's
    /// `/proc/PID/mountinfo` whose filesystem is one of the host's (found by
    /// device number in the host's mountinfo), traced back to its host path;
    /// the sandbox's own tmpfs, proc and devpts are not host binds.
    pub fn sandbox_binds(&self, id: &str) -> Vec<BindMount> {
        if !self.backend.has_engine() {
            let pid: u32 = id.parse().expect("a native sandbox ID is a PID");
            return native_binds(pid).unwrap_or_else(|e| panic!("{e}"));
        }
        if self.backend == Backend::Incus {
            let out = self.engine(&["config", "show", id, "--expanded"]);
            out.assert_ok();
            return incus_disks(&out.stdout);
        }
        let info = self.inspect(id);
        info.get("Mounts")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|m| m.get("Type").and_then(Value::as_str) == Some("bind"))
            .map(|m| BindMount {
                source: PathBuf::from(m.get("Source").and_then(Value::as_str).unwrap_or("")),
                target: PathBuf::from(m.get("Destination").and_then(Value::as_str).unwrap_or("")),
                read_only: m.get("RW") == Some(&Value::Bool(false)),
                detail: m.to_string(),
            })
            .collect()
    }

    /// Start `kennel ARGS` in the background (stdin: /dev/null).
    pub fn spawn_kennel(&self, args: &[&str]) -> Background {
        self.spawn_kennel_env(args, &[])
    }

    /// [`Ctx::spawn_kennel`] with `extra` variables.
    pub fn spawn_kennel_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Background {
        let (mut cmd, what) = self.kennel_command(args, extra);
        let log = self.dir.join(format!("background-{}.log", unique()));
        let file = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Background {
            child: Some(child),
            what,
            log,
        }
    }

    /// Start a long-running sandbox and return it with its ID.
    #[track_caller]
    pub fn start_sandbox(&self) -> (Background, String) {
        let mut bg = self.spawn_kennel(&["run", "shell", "--", "sleep", "600"]);
        let id = self.wait_for_container(&mut bg, Duration::from_secs(120));
        (bg, id)
    }

    /// Wait until a running container with this workspace's label exists
    /// (native: until the agent has been exec'd in the sandbox; its host
    /// PID is the ID).
    #[track_caller]
    pub fn wait_for_container(&self, bg: &mut Background, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if !self.backend.has_engine() {
                if let Some(agent) = native_sandbox(&self.ws).agents.first() {
                    return agent.pid.to_string();
                }
            } else if self.backend == Backend::Incus {
                if let Some((name, _)) = self
                    .incus_instances()
                    .into_iter()
                    .find(|(_, status)| status == "Running")
                {
                    return name;
                }
            } else {
                let out = self.engine(&[
                    "ps",
                    "-q",
                    "--no-trunc",
                    "--filter",
                    &self.workspace_label(),
                    "--filter",
                    "status=running",
                ]);
                if let Some(id) = out.stdout.split_whitespace().next() {
                    return id.to_string();
                }
                if !out.success() {
                    bg.stop();
                    panic!("cannot list containers:\n{out}\n{}", bg.output());
                }
            }
            if let Some(status) = bg.try_wait() {
                panic!(
                    "{} exited ({status:?}) before its sandbox ran\n{}",
                    bg.what,
                    bg.output()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "no running sandbox of {} after {limit:?}\n{}",
                    self.ws.display(),
                    bg.output()
                );
            }
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// Wait until no sandbox of this workspace remains.
    pub fn wait_no_containers(&self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let left = self.workspace_containers();
            if left.is_empty() || Instant::now() > deadline {
                return left;
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Force-remove this workspace's sandboxes (cleanup after a failure).
    pub fn remove_containers(&self) {
        if !self.backend.has_engine() {
            for p in native_sandbox(&self.ws).all {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", &p.pid.to_string()])
                    .status();
            }
            return;
        }
        for id in self.workspace_containers() {
            let _ = match self.backend {
                Backend::Incus => self.engine(&["delete", "--force", &id]),
                _ => self.engine(&["rm", "-f", &id]),
            };
        }
    }
}

/// The disk devices of `incus config show --expanded` (YAML, read line by
/// line: devices are maps of plain `key: value` lines) as bind mounts.
fn incus_disks(yaml: &str) -> Vec<BindMount> {
    let mut mounts = Vec::new();
    let mut in_devices = false;
    let mut device: BTreeMap<String, String> = BTreeMap::new();
    let mut flush = |device: &mut BTreeMap<String, String>| {
        if device.get("type").map(String::as_str) == Some("disk")
            && let (Some(source), Some(path)) = (device.get("source"), device.get("path"))
        {
            mounts.push(BindMount {
                source: PathBuf::from(source),
                target: PathBuf::from(path),
                read_only: device.get("readonly").map(String::as_str) == Some("true"),
                detail: format!("{device:?}"),
            });
        }
        device.clear();
    };
    for line in yaml.lines() {
        if !line.starts_with(' ') {
            in_devices = line.starts_with("devices:");
            flush(&mut device);
            continue;
        }
        if !in_devices {
            continue;
        }
        if line.starts_with("  ") && !line.starts_with("    ") {
            flush(&mut device);
            continue;
        }
        if let Some((key, value)) = line.trim().split_once(": ") {
            device.insert(key.to_string(), value.trim_matches('"').to_string());
        }
    }
    flush(&mut device);
    mounts
}

/// One host path bound into a sandbox.
#[derive(Debug, Clone)]
pub struct BindMount {
    /// The path on the host.
    pub source: PathBuf,
    /// Where the sandbox sees it.
    pub target: PathBuf,
    pub read_only: bool,
    /// The raw record (engine JSON or mountinfo line), for messages.
    pub detail: String,
}

// ------------------------------------------------- native sandbox processes

/// What the harness reads of one host process.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    pub pid: u32,
    pub argv: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub mnt_ns: Option<PathBuf>,
    pub pid_ns: Option<PathBuf>,
    pub pid_ns_for_children: Option<PathBuf>,
}

impl ProcInfo {
    fn read(pid: u32) -> Option<ProcInfo> {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        let argv = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        Some(ProcInfo {
            pid,
            argv,
            cwd: std::fs::read_link(dir.join("cwd")).ok(),
            mnt_ns: std::fs::read_link(dir.join("ns/mnt")).ok(),
            pid_ns: std::fs::read_link(dir.join("ns/pid")).ok(),
            pid_ns_for_children: std::fs::read_link(dir.join("ns/pid_for_children")).ok(),
        })
    }

    /// kennel's re-executed native helper (or a fork of it not yet exec'd).
    fn is_native_helper(&self) -> bool {
        self.argv.get(1).map(String::as_str) == Some("__native-init")
    }
}

/// Every process on the host.
pub fn all_processes() -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(ProcInfo::read)
        .collect()
}

/// The native sandboxes of one workspace, as seen from the host.
#[derive(Debug, Default)]
pub struct NativeSandbox {
    /// Every process: kennel's helpers (in the host's PID namespace, started
    /// in the workspace) and every process in their sandboxes' PID
    /// namespaces (the init, the agent and its children).
    pub all: Vec<ProcInfo>,
    /// The sandboxed processes that run a program of their own (exec'd, not a
    /// fork of kennel's helper), lowest PID first: the agent comes first.
    pub agents: Vec<ProcInfo>,
}

/// Finds the native sandboxes of `ws` in `/proc`. A helper is
/// `kennel __native-init FD` with the workspace as its working directory;
/// its sandbox is its PID namespace for children. Processes in another mount
/// namespace working in the workspace mark their PID namespace as a sandbox
/// too, so one whose helper is gone is still found.
pub fn native_sandbox(ws: &Path) -> NativeSandbox {
    let own = ProcInfo::read(std::process::id()).expect("/proc/self");
    let procs = all_processes();
    let helpers: Vec<&ProcInfo> = procs
        .iter()
        .filter(|p| p.is_native_helper() && p.pid_ns == own.pid_ns && p.cwd.as_deref() == Some(ws))
        .collect();
    let mut sandbox_ns: Vec<PathBuf> = helpers
        .iter()
        .filter_map(|p| p.pid_ns_for_children.clone())
        .collect();
    for p in &procs {
        if p.mnt_ns != own.mnt_ns
            && p.pid_ns != own.pid_ns
            && p.cwd.as_deref().is_some_and(|cwd| cwd.starts_with(ws))
        {
            sandbox_ns.extend(p.pid_ns.clone());
        }
    }
    sandbox_ns.retain(|ns| Some(ns) != own.pid_ns.as_ref());
    let mut all: Vec<ProcInfo> = procs
        .iter()
        .filter(|p| {
            helpers.iter().any(|h| h.pid == p.pid)
                || p.pid_ns.as_ref().is_some_and(|ns| sandbox_ns.contains(ns))
        })
        .cloned()
        .collect();
    all.sort_by_key(|p| p.pid);
    let agents = all
        .iter()
        .filter(|p| !p.is_native_helper() && p.pid_ns != own.pid_ns)
        .cloned()
        .collect();
    NativeSandbox { all, agents }
}

/// One line of `/proc/PID/mountinfo`.
#[derive(Debug, Clone)]
struct MountLine {
    dev: String,
    root: PathBuf,
    mount_point: PathBuf,
    options: String,
    fstype: String,
    line: String,
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|octal| u8::from_str_radix(octal, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_mountinfo(path: &str) -> Result<Vec<MountLine>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
    let mut lines = vec![];
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields
            .iter()
            .position(|f| *f == "-")
            .ok_or_else(|| format!("bad mountinfo line in {path}: {line}"))?;
        if sep < 6 || fields.len() < sep + 3 {
            return Err(format!("bad mountinfo line in {path}: {line}"));
        }
        lines.push(MountLine {
            dev: fields[2].to_string(),
            root: PathBuf::from(unescape_mountinfo(fields[3])),
            mount_point: PathBuf::from(unescape_mountinfo(fields[4])),
            options: fields[5].to_string(),
            fstype: fields[sep + 1].to_string(),
            line: line.to_string(),
        });
    }
    Ok(lines)
}

/// The host binds of the sandboxed process `pid` (see [`Ctx::sandbox_binds`]).
fn native_binds(pid: u32) -> Result<Vec<BindMount>, String> {
    let host = read_mountinfo("/proc/self/mountinfo")?;
    let sandbox = read_mountinfo(&format!("/proc/{pid}/mountinfo"))?;
    let mut binds = vec![];
    for m in sandbox {
        let candidates: Vec<&MountLine> = host.iter().filter(|h| h.dev == m.dev).collect();
        if candidates.is_empty() {
            // A filesystem the sandbox made for itself (tmpfs, proc, devpts).
            continue;
        }
        // The host mount of the same filesystem whose root is the longest
        // prefix of this mount's root: the host path is its mount point
        // joined with the rest.
        let source = candidates
            .iter()
            .filter(|h| m.root.starts_with(&h.root))
            .max_by_key(|h| h.root.components().count())
            .map(|h| h.mount_point.join(m.root.strip_prefix(&h.root).unwrap()))
            .ok_or_else(|| {
                format!(
                    "sandbox mount `{}` is of host device {} ({}) but no host mount shows its root",
                    m.line, m.dev, m.fstype
                )
            })?;
        binds.push(BindMount {
            source: clean_path(&source),
            target: m.mount_point.clone(),
            read_only: m.options.split(',').any(|o| o == "ro"),
            detail: m.line.clone(),
        });
    }
    Ok(binds)
}

fn clean_path(path: &Path) -> PathBuf {
    path.components().collect()
}

/// `RLIMIT_NPROC` (soft, hard) of host process `pid`; `None` for unlimited.
pub fn rlimit_nproc(pid: &str) -> Result<(Option<i64>, Option<i64>), String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .map_err(|e| format!("read /proc/{pid}/limits: {e}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("Max processes"))
        .ok_or_else(|| format!("no `Max processes` in /proc/{pid}/limits:\n{text}"))?;
    let mut values = line["Max processes".len()..].split_whitespace();
    let mut next = || values.next().and_then(|v| v.parse::<i64>().ok());
    Ok((next(), next()))
}

/// A kennel process started in the background; killed on drop.
pub struct Background {
    child: Option<Child>,
    pub what: String,
    log: PathBuf,
}

impl Background {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
    /// Send a signal to kennel (the spawned process: `setpriv` and `env` exec
    /// into kennel, so the PID is kennel's).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -s {sig} {}", self.pid());
    }
    pub fn wait_for(&mut self, limit: Duration) -> (Option<ExitStatus>, bool) {
        wait_deadline(self.child.as_mut().unwrap(), limit)
    }
    pub fn output(&self) -> String {
        format!(
            "--- output of {} ---\n{}",
            self.what,
            clip(&std::fs::read_to_string(&self.log).unwrap_or_default())
        )
    }
    /// Stop kennel with SIGTERM and wait a little.
    pub fn stop(&mut self) {
        if self.try_wait().is_none() {
            self.signal("TERM");
            let (_, timed_out) = self.wait_for(Duration::from_secs(15));
            if timed_out {
                let _ = self.child.as_mut().unwrap().kill();
                let _ = self.child.as_mut().unwrap().wait();
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Ok(None) = child.try_wait()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// Run `f` on the test user's real home once per test run (files shared by
/// tests of every backend).
pub fn once_per_run(cell: &'static OnceLock<()>, f: impl FnOnce()) {
    cell.get_or_init(f);
}

/// Walk a JSON value by `a.b.0.c`.
pub fn jget<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(value, |v, key| match key.parse::<usize>() {
            Ok(i) => v.get(i),
            Err(_) => v.get(key),
        })
}

/// A tmux server of the test user on its own socket, killed on drop.
pub struct Tmux {
    ctx_user: TestUser,
    env: Vec<(String, String)>,
    socket: String,
}

impl Tmux {
    /// Start a detached session `e2e` of `cols`×`rows` running `command` (a
    /// shell command line).
    pub fn start(ctx: &Ctx, cols: u16, rows: u16, command: &str) -> Tmux {
        let tmux = Tmux {
            ctx_user: ctx.user.clone(),
            env: ctx.env(),
            socket: format!("kennel-e2e-{}", unique()),
        };
        let out = tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "e2e",
            "-x",
            &cols.to_string(),
            "-y",
            &rows.to_string(),
            command,
        ]);
        out.assert_ok();
        tmux
    }

    pub fn run(&self, args: &[&str]) -> Out {
        let mut argv: Vec<String> = vec![
            "tmux".into(),
            "-L".into(),
            self.socket.clone(),
            "-f".into(),
            "/dev/null".into(),
        ];
        argv.extend(args.iter().map(|s| s.to_string()));
        let cmd = self.ctx_user.command(&argv, &self.env);
        Exec::new(cmd, argv.join(" "))
            .timeout(Duration::from_secs(30))
            .run()
    }

    /// Type a line (followed by Enter).
    pub fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "e2e", "-l", line])
            .assert_ok();
        self.run(&["send-keys", "-t", "e2e", "Enter"]).assert_ok();
    }

    /// The pane's text, history included.
    pub fn capture(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-J", "-t", "e2e", "-S", "-500"]);
        out.stdout
    }

    /// Poll the pane until `needle` appears; `retype` is typed again every
    /// `every` (None: type nothing). Returns the pane text.
    pub fn wait_for(
        &self,
        needle: &str,
        limit: Duration,
        retype: Option<(&str, Duration)>,
    ) -> Result<String, String> {
        let deadline = Instant::now() + limit;
        let mut next_type = Instant::now();
        loop {
            if let Some((line, every)) = retype
                && Instant::now() >= next_type
            {
                self.type_line(line);
                next_type = Instant::now() + every;
            }
            thread::sleep(Duration::from_millis(300));
            let pane = self.capture();
            if pane.contains(needle) {
                return Ok(pane);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "`{needle}` did not appear within {limit:?}; pane:\n{pane}"
                ));
            }
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}
