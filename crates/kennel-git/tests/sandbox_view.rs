//! The worktree mount list, applied for real: a private mount namespace
//! (`unshare`) where the sessions' parent directory is replaced by an empty
//! tmpfs and only [`Repo::mounts_for_worktree`]'s mounts are bound back, as
//! a container or the native backend would. An "agent" then works and
//! attacks inside; the host checks what came out.
//!
//! Needs `unshare` with user and mount namespaces (or root). Without them
//! the test is skipped, unless `KENNEL_E2E=require`.

// Test code may print: why a test skipped, what it saw.
#![allow(clippy::print_stderr)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use kennel_git::{GitMount, MergeOutcome};

fn namespaces_work() -> bool {
    let available = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .status()
        .is_ok_and(|status| status.success());
    if !available {
        let required = std::env::var("KENNEL_E2E").is_ok_and(|value| value == "require");
        assert!(
            !required,
            "KENNEL_E2E=require, but unshare cannot make a mount namespace here"
        );
        eprintln!("skipped: unshare cannot make user and mount namespaces here");
    }
    available
}

/// Single-quotes a path for the namespace's set-up script (test paths are
/// temp directories; a quote in one would be a test bug).
fn quote(path: &Path) -> String {
    let text = path.display().to_string();
    assert!(!text.contains('\''), "{text}");
    format!("'{text}'")
}

/// A script that hides `root` behind a tmpfs, binds the mounts back from a
/// staging copy of `root`, then runs `agent` in `workdir`.
fn sandbox_script(
    root: &Path,
    stage: &Path,
    mounts: &[GitMount],
    workdir: &Path,
    agent: &str,
) -> String {
    let mut script = String::from("set -eu\n");
    script += &format!("mount --bind {} {}\n", quote(root), quote(stage));
    script += &format!("mount -t tmpfs kennel-test {}\n", quote(root));
    for mount in mounts {
        let rel = mount
            .host
            .strip_prefix(root)
            .expect("mount under the test root");
        let source = stage.join(rel);
        let target = &mount.target;
        if mount.host.is_dir() {
            script += &format!("mkdir -p {}\n", quote(target));
        } else {
            script += &format!(
                "mkdir -p {}; [ -e {t} ] || touch {t}\n",
                quote(target.parent().expect("parent")),
                t = quote(target)
            );
        }
        script += &format!("mount --bind {} {}\n", quote(&source), quote(target));
        if mount.read_only {
            script += &format!("mount -o remount,bind,ro {}\n", quote(target));
        }
    }
    script += &format!("umount -l {}\n", quote(stage));
    script += &format!("cd {}\n", quote(workdir));
    script += "set +e\n";
    script += agent;
    script
}

/// The agent's part: work, then try every way out it has. Each attempt
/// that succeeds prints `ESCAPED`.
const AGENT_SCRIPT: &str = r##"
g() { git -c user.name=Agent -c user.email=agent@example.com "$@"; }
echo agent > agent.txt
g add agent.txt && g commit -q -m "agent work" && echo COMMITTED
g branch kennel/claude-0-experiment && echo BRANCHED
for other in "$OTHER_DIR" "$USER_FILE"; do
  [ -e "$other" ] && echo "ESCAPED: $other is visible"
done
try() { if ( eval "$1" ) 2>/dev/null; then echo "ESCAPED: $1"; fi; }
try 'printf "#!/bin/sh\ntouch /tmp/pwned\n" > "$COMMON/hooks/post-checkout"'
try 'echo "[core] fsmonitor = touch /tmp/pwned" >> "$COMMON/config"'
try 'echo "[core] fsmonitor = touch /tmp/pwned" > "$COMMON/config.worktree"'
try 'echo "[core] fsmonitor = touch /tmp/pwned" > "$ADMIN/config.worktree"'
try 'echo /tmp/evil > "$ADMIN/commondir"'
try 'rm -f "$ADMIN/locked"'
try 'echo "gitdir: /tmp/evil" > .git'
try 'mv .git .git-moved'
try 'mv "$COMMON/hooks" "$COMMON/hooks-moved"'
try 'echo 0000000000000000000000000000000000000000 > "$OTHER_ADMIN/HEAD"'
try 'g update-ref refs/heads/main HEAD'
try 'g tag planted'
try 'echo "ref: refs/heads/kennel/claude-0" > "$COMMON/HEAD"'
try 'echo x > "$COMMON/info/attributes"'
try 'echo "$HOME/.ssh" >> "$COMMON/objects/info/alternates"'
try 'echo x > "$COMMON/objects/info/commit-graph"'
try 'mv "$COMMON/objects/info" "$COMMON/objects/info-moved"'
try 'rm -r "$COMMON/objects/info"'
g gc -q >/dev/null 2>&1
g pack-refs --all >/dev/null 2>&1
g worktree prune >/dev/null 2>&1
g worktree prune --expire=now >/dev/null 2>&1
echo DONE
"##;

#[test]
fn a_sandbox_with_the_worktree_mounts_can_commit_and_nothing_more() {
    let fixture = Fixture::new();
    if !namespaces_work() {
        return;
    }
    let repo = fixture.open();
    let checkout = repo
        .create_worktree(&fixture.session_dir("claude-0"), "kennel/claude-0")
        .expect("worktree");
    let other = repo
        .create_worktree(&fixture.session_dir("codex-0"), "kennel/codex-0")
        .expect("worktree");
    git(
        &fixture.repo,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "users-own",
            &fixture.session_dir("users-own").display().to_string(),
        ],
    );
    let mounts = repo.mounts_for_worktree(&checkout).expect("mounts");
    let common = fixture.common_dir();
    let before = checkout_state(&fixture.repo);
    let config_before = std::fs::read(common.join("config")).expect("config");
    let hooks_before: Vec<_> = std::fs::read_dir(common.join("hooks"))
        .expect("hooks")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let main_before = git(&fixture.repo, &["rev-parse", "main"]);
    let other_tip_before = git(&fixture.repo, &["rev-parse", "kennel/codex-0"]);

    let stage = tempfile::tempdir().expect("stage");
    let script = sandbox_script(
        &fixture.root(),
        stage.path(),
        &mounts,
        &checkout.dir,
        AGENT_SCRIPT,
    );
    let output = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .env("COMMON", &common)
        .env("ADMIN", checkout.admin_dir.as_ref().unwrap())
        .env("OTHER_ADMIN", other.admin_dir.as_ref().unwrap())
        .env("OTHER_DIR", &other.dir)
        .env("USER_FILE", fixture.repo.join("README.md"))
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("unshare runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("sandbox stdout:\n{stdout}\nsandbox stderr:\n{stderr}");
    assert!(stdout.contains("DONE"), "the sandbox did not run through");

    // git works for the agent: it committed and made a branch of its own.
    assert!(stdout.contains("COMMITTED"), "{stdout}\n{stderr}");
    assert!(stdout.contains("BRANCHED"), "{stdout}\n{stderr}");
    assert_eq!(
        git(
            &fixture.repo,
            &["log", "-1", "--format=%s", "kennel/claude-0"]
        ),
        "agent work"
    );
    // None of the ways out worked.
    assert!(!stdout.contains("ESCAPED"), "{stdout}");
    assert_eq!(
        std::fs::read(common.join("config")).expect("config"),
        config_before
    );
    let hooks_after: Vec<_> = std::fs::read_dir(common.join("hooks"))
        .expect("hooks")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(hooks_after, hooks_before);
    assert!(!common.join("config.worktree").exists());
    assert!(!common.join("objects/info/alternates").exists());
    assert!(common.join("objects/info").is_dir());
    assert_eq!(git(&fixture.repo, &["rev-parse", "main"]), main_before);
    assert_eq!(
        git(&fixture.repo, &["rev-parse", "kennel/codex-0"]),
        other_tip_before
    );
    assert_eq!(git(&fixture.repo, &["tag"]), "");
    assert_eq!(checkout_state(&fixture.repo), before);
    // gc and prune ran with the other worktrees out of sight, and every
    // registration survived, kennel's and the user's own unlocked one.
    let paths = worktree_paths(&fixture.repo);
    for dir in [&checkout.dir, &other.dir, &fixture.session_dir("users-own")] {
        assert!(
            paths.contains(dir),
            "{} lost its registration: {paths:?}",
            dir.display()
        );
    }
    assert_eq!(git(&other.dir, &["status", "--porcelain"]), "");

    // And the session goes on as usual on the host.
    assert!(matches!(
        repo.merge(&checkout).expect("merge"),
        MergeOutcome::FastForward { .. }
    ));
    assert_eq!(read(&fixture.repo, "agent.txt"), "agent\n");
    repo.discard(&checkout).expect("discard");
    repo.discard(&other).expect("discard");
    assert!(!checkout.dir.exists() && !other.dir.exists());
}

/// The same mounts without the read-only parts (everything writable, as a
/// naive "mount the repository's .git" would do): the escapes above work.
/// This proves the test above can see an escape.
#[test]
fn the_same_sandbox_with_a_writable_git_dir_is_caught() {
    let fixture = Fixture::new();
    if !namespaces_work() {
        return;
    }
    let repo = fixture.open();
    let checkout = repo
        .create_worktree(&fixture.session_dir("claude-0"), "kennel/claude-0")
        .expect("worktree");
    let mounts: Vec<GitMount> = repo
        .mounts_for_worktree(&checkout)
        .expect("mounts")
        .into_iter()
        .map(|mount| GitMount {
            read_only: false,
            ..mount
        })
        .collect();
    let stage = tempfile::tempdir().expect("stage");
    let agent = r##"try() { if ( eval "$1" ) 2>/dev/null; then echo "ESCAPED: $1"; fi; }
try 'printf "#!/bin/sh\n" > "$COMMON/hooks/post-checkout"'
echo DONE
"##;
    let script = sandbox_script(&fixture.root(), stage.path(), &mounts, &checkout.dir, agent);
    let output = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .env("COMMON", fixture.common_dir())
        .output()
        .expect("unshare runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("DONE"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ESCAPED"), "{stdout}");
    assert!(fixture.common_dir().join("hooks/post-checkout").exists());
}
