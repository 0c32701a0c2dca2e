//! Shared set-up for kennel-git's tests: real git in temporary directories,
//! isolated from the machine's own git config.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

use kennel_git::{Identity, Repo};

/// Isolates every git process of this test binary (the tests' own and the
/// library's) from the machine's config: `~/.gitconfig` or
/// `/etc/gitconfig` could name hooks, fsmonitor or filters.
pub fn isolate() {
    isolate_with(None);
}

/// Like [`isolate`], but with `home` as `HOME` (and `XDG_CONFIG_HOME` under
/// it), so that `home/.gitconfig` is the global config every git process of
/// this test binary reads: for tests of what the user's own global config
/// could make git run. A binary that uses it must call it first in every
/// test (the first call of either function decides for the whole binary).
pub fn isolate_with_home(home: &Path) {
    isolate_with(Some(home));
}

fn isolate_with(home: Option<&Path>) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: every test calls this before it starts any thread or
        // process, and `Once` makes the others wait until it is done; only
        // std (which locks the environment) reads it afterwards. The library's
        // own git processes must see it too: no safe way but the environment.
        #[allow(unsafe_code)]
        unsafe {
            match home {
                Some(home) => {
                    std::env::set_var("HOME", home);
                    std::env::set_var("XDG_CONFIG_HOME", home.join(".config"));
                    std::env::remove_var("GIT_CONFIG_GLOBAL");
                }
                None => std::env::set_var("GIT_CONFIG_GLOBAL", "/dev/null"),
            }
            std::env::set_var("GIT_CONFIG_NOSYSTEM", "1");
            std::env::remove_var("GIT_DIR");
            std::env::remove_var("GIT_WORK_TREE");
        }
    });
}

/// The identity the tests' "agent" commits with.
pub const AGENT: [&str; 4] = [
    "-c",
    "user.name=Agent",
    "-c",
    "user.email=agent@example.com",
];

pub fn agent_identity() -> Identity {
    Identity {
        name: "kennel".into(),
        email: "kennel@localhost".into(),
    }
}

/// Runs git in `dir`; panics with its stderr unless it succeeds.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = git_output(dir, args);
    assert!(
        output.status.success(),
        "git {args:?} in {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Whether the host's git is at least `major.minor` (some of kennel's paths
/// depend on it, e.g. `merge-tree --merge-base` needs 2.40).
#[allow(dead_code)]
pub fn git_at_least(major: u32, minor: u32) -> bool {
    let out = std::process::Command::new("git")
        .arg("--version")
        .output()
        .expect("git --version");
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2).unwrap_or_default();
    let mut parts = version
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

pub fn git_output(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(AGENT)
        .args(args)
        .output()
        .expect("git runs")
}

/// A repository with a few files, one commit on `main`, and a user
/// identity in its config (for merge commits), plus a directory for
/// sessions' checkouts beside it.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub repo: PathBuf,
    pub sessions: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        isolate();
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(tmp.path()).expect("canonical");
        let repo = root.join("repo");
        let sessions = root.join("sessions");
        std::fs::create_dir_all(&sessions).expect("mkdir");
        let status = Command::new("git")
            .args(["init", "-q", "-b", "main"])
            .arg(&repo)
            .status()
            .expect("git init");
        assert!(status.success());
        git(&repo, &["config", "user.name", "User"]);
        git(&repo, &["config", "user.email", "user@example.com"]);
        write(&repo, "README.md", "# project\n");
        write(&repo, "src/a.txt", "alpha\none\ntwo\nthree\n");
        write(&repo, "src/b.txt", "beta\n");
        write(&repo, ".gitignore", "*.log\n");
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "initial"]);
        Fixture {
            tmp,
            repo,
            sessions,
        }
    }

    pub fn open(&self) -> Repo {
        Repo::open(&self.repo).expect("opens")
    }

    pub fn root(&self) -> PathBuf {
        self.repo.parent().expect("parent").to_path_buf()
    }

    pub fn session_dir(&self, name: &str) -> PathBuf {
        self.sessions.join(name)
    }

    pub fn common_dir(&self) -> PathBuf {
        self.repo.join(".git")
    }
}

pub fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

pub fn read(dir: &Path, rel: &str) -> String {
    std::fs::read_to_string(dir.join(rel)).unwrap_or_else(|_| "<missing>".into())
}

/// Everything about the user's checkout a kennel command must not change
/// when it refuses: status, HEAD, branch, index and every file's content.
#[derive(Debug, PartialEq, Eq)]
pub struct CheckoutState {
    pub status: String,
    pub head: String,
    pub branch: String,
    pub index: Vec<u8>,
    pub files: BTreeMap<PathBuf, Vec<u8>>,
}

pub fn checkout_state(repo: &Path) -> CheckoutState {
    let mut files = BTreeMap::new();
    collect_files(repo, repo, &mut files);
    CheckoutState {
        status: git(
            repo,
            &[
                "status",
                "--porcelain=v1",
                "--untracked-files=all",
                "--ignored",
            ],
        ),
        head: git(repo, &["rev-parse", "HEAD"]),
        branch: git_output(repo, &["symbolic-ref", "-q", "--short", "HEAD"])
            .stdout
            .iter()
            .map(|byte| *byte as char)
            .collect::<String>()
            .trim()
            .to_string(),
        index: std::fs::read(repo.join(".git/index")).expect("index"),
        files,
    }
}

fn collect_files(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|name| name == ".git") {
            continue;
        }
        if path.is_dir() {
            collect_files(root, &path, files);
        } else {
            let content = std::fs::read(&path).expect("read");
            files.insert(
                path.strip_prefix(root).expect("inside").to_path_buf(),
                content,
            );
        }
    }
}

/// Hooks that each leave a marker file named after themselves in
/// `markers` when git runs them.
pub const HOOKS: &[&str] = &[
    "pre-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "post-checkout",
    "post-merge",
    "pre-merge-commit",
    "reference-transaction",
    "post-index-change",
    "pre-auto-gc",
    "post-rewrite",
];

pub fn plant_hooks(hooks_dir: &Path, markers: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(hooks_dir).expect("mkdir hooks");
    std::fs::create_dir_all(markers).expect("mkdir markers");
    for hook in HOOKS {
        let path = hooks_dir.join(hook);
        std::fs::write(
            &path,
            format!("#!/bin/sh\ntouch '{}/{hook}'\n", markers.display()),
        )
        .expect("write hook");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
}

/// The marker files present in `markers`.
pub fn markers(markers: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(markers)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `git worktree list --porcelain`'s worktree paths.
pub fn worktree_paths(repo: &Path) -> Vec<PathBuf> {
    git(repo, &["worktree", "list", "--porcelain"])
        .lines()
        .filter_map(|line| line.strip_prefix("worktree "))
        .map(PathBuf::from)
        .collect()
}

pub fn branch_exists(repo: &Path, branch: &str) -> bool {
    git_output(
        repo,
        &[
            "show-ref",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ],
    )
    .status
    .success()
}
