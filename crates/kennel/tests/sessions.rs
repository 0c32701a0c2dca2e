//! The session registry seen from the command line: `kennel run` records
//! every run, `kennel ls` lists them. Uses the native backend, so no engine
//! is needed; where native sandboxes cannot run, the tests skip unless
//! `KENNEL_E2E=require`.

use std::path::PathBuf;
use std::process::Command;

use assert_cmd::prelude::*;

/// An isolated user: its own HOME, XDG dirs and a git workspace, with the
/// native backend as default. (A copy of the helper in `cli.rs`.)
struct Sandbox {
    _root: tempfile::TempDir,
    home: PathBuf,
    workspace: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let root = tempfile::tempdir().expect("tempdir");
        let home = root.path().join("home");
        let workspace = root.path().join("repo");
        std::fs::create_dir_all(home.join(".config/kennel")).expect("home");
        std::fs::create_dir_all(&workspace).expect("workspace");
        let status = Command::new("git")
            .args(["init", "-q"])
            .arg(&workspace)
            .status()
            .expect("git");
        assert!(status.success());
        std::fs::write(
            home.join(".config/kennel/config.toml"),
            "[defaults]\nbackend = \"native\"\n",
        )
        .expect("config");
        Sandbox {
            _root: root,
            home,
            workspace,
        }
    }

    fn kennel(&self, args: &[&str]) -> Command {
        let mut command = Command::cargo_bin("kennel").expect("binary");
        command
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "KENNEL_SYSTEM_CONFIG",
                self.home.join("no-system-config.toml"),
            )
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .env("CONTAINER_HOST", "unix:///nonexistent/podman.sock")
            .current_dir(&self.workspace)
            .args(args);
        command
    }

    /// `kennel run -b native shell -- sh -c 'exit CODE'`; `false` when the
    /// native backend cannot run here (and that is allowed).
    fn run_exit(&self, code: i32) -> bool {
        let script = format!("exit {code}");
        let (status, _, stderr) =
            output(&mut self.kennel(&["run", "-b", "native", "shell", "--", "sh", "-c", &script]));
        if status == code {
            return true;
        }
        let required = std::env::var("KENNEL_E2E").is_ok_and(|value| value == "require");
        assert!(
            !required && status == 125,
            "kennel run exited {status}, expected {code}: {stderr}"
        );
        eprintln!("skipped: the native backend does not run here: {stderr}");
        false
    }

    fn ls(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut all = vec!["ls", "--json"];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = output(&mut self.kennel(&all));
        assert_eq!(code, 0, "{stderr}");
        serde_json::from_str::<Vec<serde_json::Value>>(&stdout).expect("ls --json is an array")
    }
}

fn output(command: &mut Command) -> (i32, String, String) {
    let output = command.output().expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn ls_without_a_registry_is_empty() {
    let sandbox = Sandbox::new();
    assert!(sandbox.ls(&["--all"]).is_empty());
    let (code, stdout, stderr) = output(&mut sandbox.kennel(&["ls"]));
    assert_eq!(code, 0);
    assert_eq!(stdout, "");
    assert!(stderr.contains("no sessions"), "{stderr}");
    assert!(
        !sandbox
            .home
            .join(".local/share/kennel/sessions.db")
            .exists(),
        "listing creates no registry"
    );
}

#[test]
fn run_records_a_session() {
    let sandbox = Sandbox::new();
    if !sandbox.run_exit(3) {
        return;
    }
    let sessions = sandbox.ls(&["--all"]);
    assert_eq!(sessions.len(), 1, "{sessions:#?}");
    let session = &sessions[0];
    assert_eq!(session["agent"], "shell");
    assert_eq!(session["state"], "exited");
    assert_eq!(session["exit_code"], 3);
    assert_eq!(session["backend"], "native");
    assert_eq!(session["mode"], "ephemeral");
    assert_eq!(session["name"], "shell-1");
    assert_eq!(session["id"].as_str().expect("id").len(), 12);
    let workspace = std::fs::canonicalize(&sandbox.workspace).expect("canon");
    assert_eq!(session["workspace"], workspace.display().to_string());
    assert!(session["handle"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(session["ended_at"].as_i64() >= session["started_at"].as_i64());
    assert!(session["limits"]["pids"].as_i64().is_some());
}

#[test]
fn two_runs_two_sessions_and_ls_shows_recent_ones() {
    let sandbox = Sandbox::new();
    if !sandbox.run_exit(0) || !sandbox.run_exit(5) {
        return;
    }
    let all = sandbox.ls(&["--all"]);
    assert_eq!(all.len(), 2, "{all:#?}");
    // Newest first.
    assert_eq!(all[0]["exit_code"], 5);
    assert_eq!(all[1]["exit_code"], 0);
    assert_ne!(all[0]["id"], all[1]["id"]);
    // Without --all, sessions ended in the last 24 hours are shown too.
    assert_eq!(sandbox.ls(&[]).len(), 2);

    let (code, stdout, stderr) = output(&mut sandbox.kennel(&["ls"]));
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("ID ") && lines[0].ends_with("WORKSPACE"),
        "{stdout}"
    );
    let id = all[0]["id"].as_str().expect("id");
    assert!(lines[1].starts_with(&id[..8]), "{stdout}");
    assert!(lines[1].contains("exited"), "{stdout}");
}

#[test]
fn a_broken_registry_does_not_stop_the_agent() {
    let sandbox = Sandbox::new();
    // The registry's path is a directory: it cannot be opened.
    std::fs::create_dir_all(sandbox.home.join(".local/share/kennel/sessions.db/x")).expect("dir");
    if !sandbox.run_exit(4) {
        return;
    }
    let (code, _, stderr) = output(&mut sandbox.kennel(&["ls"]));
    assert_ne!(code, 0);
    assert!(stderr.contains("session registry"), "{stderr}");
}
