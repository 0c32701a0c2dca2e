//! The isolated user shared by the engine-free command-line tests: its own
//! HOME and XDG dirs, a git workspace, and no reachable engine socket.
#![allow(dead_code)] // each test binary uses part of it

use std::path::PathBuf;
use std::process::Command;

use assert_cmd::prelude::*;

/// An isolated user: its own HOME, XDG dirs and a git workspace.
pub struct Sandbox {
    _root: tempfile::TempDir,
    pub home: PathBuf,
    pub workspace: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
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
        Sandbox {
            _root: root,
            home,
            workspace,
        }
    }

    /// A first commit in the workspace (worktree and clone modes need one).
    pub fn commit(&self) -> &Sandbox {
        let status = Command::new("git")
            .args(["-c", "user.name=u", "-c", "user.email=u@example.invalid"])
            .args(["commit", "-q", "--allow-empty", "-m", "first"])
            .current_dir(&self.workspace)
            .env("HOME", &self.home)
            .status()
            .expect("git");
        assert!(status.success());
        self
    }

    pub fn user_config(&self, text: &str) -> &Sandbox {
        std::fs::write(self.home.join(".config/kennel/config.toml"), text).expect("config");
        self
    }

    pub fn project_config(&self, text: &str) -> &Sandbox {
        std::fs::write(self.workspace.join(".kennel.toml"), text).expect("project config");
        self
    }

    pub fn kennel(&self, args: &[&str]) -> Command {
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
            .env("INCUS_SOCKET", "/nonexistent/incus.socket")
            .current_dir(&self.workspace)
            .args(args);
        command
    }
}

pub fn output(command: &mut Command) -> (i32, String, String) {
    let output = command.output().expect("runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}
