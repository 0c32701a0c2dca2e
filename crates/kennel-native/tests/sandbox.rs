//! The native sandbox for real: `kennel run --backend native` as the
//! non-root test user `kennel-e2e` (or as the current user when the tests do
//! not run as root). Skipped when that user is missing, unless
//! `KENNEL_E2E=require`.

// Test code may print: why a test skipped, what it saw.
#![allow(clippy::print_stderr)]
// kennel-native's own tests call libc as the crate does (getuid, kill).
#![allow(unsafe_code)]

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TEST_USER: &str = "kennel-e2e";

fn required() -> bool {
    std::env::var("KENNEL_E2E").is_ok_and(|mode| mode == "require")
}

fn skip(why: &str) -> Option<Env> {
    if required() {
        panic!("KENNEL_E2E=require but the native sandbox tests cannot run: {why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// The kennel binary next to this test's `deps/` directory, built if missing.
fn kennel_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let binary = dir.join("kennel");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "kennel", "--bin", "kennel"])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building kennel failed");
    }
    binary
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || fields[0] != name {
            return None;
        }
        Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
    })
}

/// One test's world: a host home with secrets, a git workspace, both owned
/// by the user kennel runs as.
struct Env {
    root: PathBuf,
    home: PathBuf,
    workspace: PathBuf,
    uid: u32,
    /// `Some` when running as root: drop to this user with setpriv.
    as_user: Option<(u32, u32)>,
    kennel: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Env {
    fn new(test: &str) -> Option<Env> {
        if !Path::new("/proc/self/ns/user").exists() {
            return skip("no user namespaces in this kernel");
        }
        // SAFETY: getuid cannot fail.
        let me = unsafe { libc::getuid() };
        let as_user = if me == 0 {
            match user_ids(TEST_USER) {
                Some(ids) => Some(ids),
                None => return skip(&format!("the test user `{TEST_USER}` does not exist")),
            }
        } else {
            None
        };
        let uid = as_user.map_or(me, |(uid, _)| uid);
        let root =
            std::env::temp_dir().join(format!("kennel-native-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let home = root.join("home");
        let workspace = root.join("repo");
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(home.join(".ssh/id_ed25519"), "PRIVATE KEY").unwrap();
        std::fs::create_dir_all(home.join(".config/kennel")).unwrap();
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
        Some(Env {
            root,
            home,
            workspace: std::fs::canonicalize(&workspace).unwrap(),
            uid,
            as_user,
            kennel: kennel_binary(),
        })
    }

    /// `kennel run --backend native shell [extra] -- argv…`, as the test user.
    fn command(&self, extra: &[&str], argv: &[&str]) -> Command {
        let mut command = match self.as_user {
            Some((uid, gid)) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--init-groups")
                    .arg(&self.kennel);
                command
            }
            None => Command::new(&self.kennel),
        };
        command
            .args(["run", "--backend", "native", "shell"])
            .args(extra)
            .arg("--")
            .args(argv)
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env(
                "KENNEL_SYSTEM_CONFIG",
                self.root.join("no-system-config.toml"),
            )
            .env("KENNEL_TEST_SECRET", "s3cret")
            .current_dir(&self.workspace)
            .stdin(Stdio::null());
        command
    }

    fn run(&self, argv: &[&str]) -> Output {
        self.command(&[], argv).output().expect("kennel runs")
    }

    fn sh(&self, script: &str) -> (i32, String, String) {
        let output = self.run(&["sh", "-c", script]);
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    }
}

#[test]
fn exit_code_passes_through() {
    let Some(env) = Env::new("exit") else { return };
    let (code, _, stderr) = env.sh("exit 7");
    assert_eq!(code, 7, "{stderr}");
}

#[test]
fn stdin_is_piped_to_the_agent() {
    let Some(env) = Env::new("stdin") else { return };
    let mut child = env
        .command(&[], &["cat"])
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
}

#[test]
fn runs_as_the_invoking_user_without_capabilities() {
    let Some(env) = Env::new("ids") else { return };
    let (code, stdout, stderr) = env.sh(
        "id -u; grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.lines().next(),
        Some(env.uid.to_string().as_str()),
        "{stdout}"
    );
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
}

#[test]
fn pid_1_is_kennels_init_and_reaps_zombies() {
    let Some(env) = Env::new("init") else { return };
    let (code, stdout, stderr) = env.sh(
        "tr '\\0' ' ' < /proc/1/cmdline; echo; echo \"me=$$ parent=$PPID\"; \
         sh -c 'sleep 0.1 &'; sleep 0.6; \
         for f in /proc/[0-9]*/stat; do read -r line < $f 2>/dev/null || continue; \
           state=${line##*) }; state=${state%% *}; [ \"$state\" = Z ] && echo \"zombie: $line\"; done; echo done",
    );
    assert_eq!(code, 0, "{stderr}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with("kennel __native-init"), "{stdout}");
    // The agent is a direct child of kennel's init (PID 2, or 3 when the
    // network forwarder was started first).
    assert!(
        stdout.contains(" parent=1"),
        "the agent's parent must be kennel's init: {stdout}"
    );
    assert!(!stdout.contains("zombie"), "{stdout}");
    assert!(stdout.contains("done"));
}

#[test]
fn host_home_and_its_keys_are_not_visible() {
    let Some(env) = Env::new("home") else { return };
    let key = env.home.join(".ssh/id_ed25519");
    let (code, stdout, stderr) = env.sh(&format!(
        "ls -A \"$HOME\"; cat {} && echo LEAKED; ls /home /root 2>&1; echo end",
        key.display()
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stdout.contains("LEAKED") && !stdout.contains("PRIVATE KEY"),
        "{stdout}"
    );
    assert!(!stdout.contains(".ssh"), "{stdout}");
    assert!(stdout.contains("end"));
}

#[test]
fn unnamed_host_variables_are_absent() {
    let Some(env) = Env::new("env") else { return };
    let (code, stdout, stderr) = env.sh("env");
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("KENNEL_TEST_SECRET"), "{stdout}");
    assert!(!stdout.contains("s3cret"), "{stdout}");
    assert!(stdout.contains("KENNEL=1"), "{stdout}");
    assert!(
        stdout.contains(&format!("HOME={}", env.home.display())),
        "{stdout}"
    );
}

#[test]
fn git_hooks_are_read_only_and_workspace_files_belong_to_the_user() {
    let Some(env) = Env::new("git") else { return };
    let (code, stdout, stderr) = env.sh(
        "echo x > .git/hooks/x && echo HOOK-WRITTEN; echo '[core]' >> .git/config && echo CONFIG-WRITTEN; \
         echo y > made-inside.txt && echo WORKSPACE-OK",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("HOOK-WRITTEN"), "{stdout}");
    assert!(!stdout.contains("CONFIG-WRITTEN"), "{stdout}");
    assert!(stdout.contains("WORKSPACE-OK"), "{stdout} {stderr}");
    assert!(!env.workspace.join(".git/hooks/x").exists());
    let meta = std::fs::metadata(env.workspace.join("made-inside.txt")).expect("file on host");
    assert_eq!(meta.uid(), env.uid);
}

#[test]
fn system_directories_are_read_only() {
    let Some(env) = Env::new("sysro") else { return };
    let (_, stdout, stderr) = env.sh(
        "touch /usr/kennel-probe && echo USR; touch /etc/kennel-probe && echo ETC; \
         touch /kennel-probe && echo ROOT; touch /tmp/ok && echo TMP; echo x > /dev/null && echo NULL",
    );
    assert!(
        !stdout.contains("USR") && !stdout.contains("ETC") && !stdout.contains("ROOT"),
        "{stdout}"
    );
    assert!(
        stdout.contains("TMP") && stdout.contains("NULL"),
        "{stdout} {stderr}"
    );
    assert!(!Path::new("/usr/kennel-probe").exists() && !Path::new("/etc/kennel-probe").exists());
}

#[test]
fn escapes_fail_with_eperm() {
    let Some(env) = Env::new("escape") else {
        return;
    };
    let (_, stdout, stderr) = env.sh("unshare -U true 2>&1; unshare -r true 2>&1; echo end");
    assert_eq!(
        stdout.matches("Operation not permitted").count(),
        2,
        "{stdout} {stderr}"
    );
    if !Path::new("/usr/bin/python3").exists() {
        eprintln!("no python3: raw system call probes skipped");
        return;
    }
    let probe = r#"
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
def errno(result):
    return ctypes.get_errno() if result == -1 else 0
print("mount", errno(libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)))
print("unshare", errno(libc.unshare(0x10000000)))
child = os.fork()
if child == 0:
    time.sleep(2)
    os._exit(0)
print("ptrace", errno(libc.ptrace(16, child, 0, 0)))
os.kill(child, 9)
print("keyctl", errno(libc.syscall(250, 0, 0, 0, 0, 0)))
"#;
    let output = env.run(&["python3", "-c", probe]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    for call in ["mount", "unshare", "ptrace", "keyctl"] {
        assert!(
            stdout.contains(&format!("{call} 1\n")),
            "{call} not EPERM: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn network_none_leaves_only_loopback() {
    let Some(env) = Env::new("net") else { return };
    let output = env
        .command(&["--network", "none"], &["cat", "/proc/net/dev"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let interfaces: Vec<&str> = stdout
        .lines()
        .skip(2)
        .filter_map(|line| line.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(
        interfaces,
        ["lo"],
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn sigterm_to_kennel_stops_the_agent() {
    let Some(env) = Env::new("sigterm") else {
        return;
    };
    let mut child = env
        .command(&[], &["sleep", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(700));
    // setpriv execs kennel: the child's pid is kennel's.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("kennel did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(143), "{status:?}");
}

#[test]
fn missing_command_is_a_clear_127() {
    let Some(env) = Env::new("missing") else {
        return;
    };
    let output = env.run(&["kennel-no-such-agent-command"]);
    assert_eq!(output.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not found on the host"), "{stderr}");
}
