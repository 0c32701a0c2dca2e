//! The session registry seen from the command line: `kennel run` records
//! every run, `kennel ls` lists them. Uses the native backend, so no engine
//! is needed; where native sandboxes cannot run, the tests skip unless
//! `KENNEL_E2E=require`.

// Test code may print: why a test skipped, what it saw.
#![allow(clippy::print_stderr)]

mod common;

use common::{Sandbox, output};

/// The isolated user of `common`, with the native backend as default.
fn native_sandbox() -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.user_config("[defaults]\nbackend = \"native\"\n");
    sandbox
}

trait SessionProbes {
    fn run_exit(&self, code: i32) -> bool;
    fn ls(&self, args: &[&str]) -> Vec<serde_json::Value>;
}

impl SessionProbes for Sandbox {
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
        let listed: serde_json::Value = serde_json::from_str(&stdout).expect("ls --json");
        assert_eq!(listed["version"], 1, "{stdout}");
        serde_json::from_value(listed["sessions"].clone()).expect("ls --json lists sessions")
    }
}

#[test]
fn ls_without_a_registry_is_empty() {
    let sandbox = native_sandbox();
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
    let sandbox = native_sandbox();
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
    let sandbox = native_sandbox();
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
    let sandbox = native_sandbox();
    // The registry's path is a directory: it cannot be opened.
    std::fs::create_dir_all(sandbox.home.join(".local/share/kennel/sessions.db/x")).expect("dir");
    if !sandbox.run_exit(4) {
        return;
    }
    let (code, _, stderr) = output(&mut sandbox.kennel(&["ls"]));
    assert_ne!(code, 0);
    assert!(stderr.contains("session registry"), "{stderr}");
}
