//! Direct mode's after-the-fact check of the user's `.git`.
//!
//! In direct mode the agent works in the user's checkout, and git inside
//! needs `.git` itself writable (lock files, the index, HEAD), so read-only
//! mounts cannot stop it from creating files there. Two of those files
//! redirect where the user's own git reads its configuration: `commondir`
//! (the repository's config, hooks and objects are taken from the directory
//! it names) and `config.worktree` (extra config, read when
//! `extensions.worktreeConfig` is set). Either lets an agent name a program
//! (`core.fsmonitor`, `core.hooksPath`, …) that the user's next `git` on
//! the host would run. When the session ends kennel moves any such file that
//! was not there before aside, and says so; a `.git` replaced by another
//! directory is reported. During the session the window stays open: worktree
//! mode is the mode that closes it (the agent never writes the user's `.git`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Files in a git dir that make git read configuration from elsewhere.
const REDIRECTS: &[&str] = &["commondir", "config.worktree"];

/// What `.git` looked like when the session started.
#[derive(Debug)]
pub struct Snapshot {
    git_dir: PathBuf,
    identity: (u64, u64),
    present: Vec<&'static str>,
}

/// The workspace's `.git` directory as it is now; `None` when there is none
/// (not a repository, or a linked worktree whose `.git` is a file).
pub fn snapshot(workspace: &Path) -> Option<Snapshot> {
    let git_dir = workspace.join(".git");
    let meta = std::fs::symlink_metadata(&git_dir).ok()?;
    if !meta.is_dir() {
        return None;
    }
    Some(Snapshot {
        identity: (meta.dev(), meta.ino()),
        present: REDIRECTS
            .iter()
            .copied()
            .filter(|name| std::fs::symlink_metadata(git_dir.join(name)).is_ok())
            .collect(),
        git_dir,
    })
}

/// For a session that started at `started_ms` (Unix milliseconds) and whose
/// own snapshot is gone (a persistent session): the redirect files made
/// since count as new; `.git` itself is taken as it is now.
pub fn snapshot_since(workspace: &Path, started_ms: i64) -> Option<Snapshot> {
    let mut snapshot = snapshot(workspace)?;
    snapshot.present.retain(|name| {
        std::fs::symlink_metadata(snapshot.git_dir.join(name))
            .ok()
            .and_then(|meta| meta.modified().ok())
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .is_some_and(|time| (time.as_millis() as i64) < started_ms)
    });
    Some(snapshot)
}

/// Compares `.git` with `before`, moves new redirect files aside (to
/// `<name>.kennel-quarantine-<session>`), and returns what the user must be
/// told.
pub fn check(before: &Snapshot, session: &str) -> Vec<String> {
    let mut warnings = Vec::new();
    let now = std::fs::symlink_metadata(&before.git_dir)
        .ok()
        .filter(|meta| meta.is_dir())
        .map(|meta| (meta.dev(), meta.ino()));
    if now != Some(before.identity) {
        warnings.push(format!(
            "the agent replaced {} during the session: do not run git in this repository before \
             checking it (its config and hooks may be the agent's)",
            before.git_dir.display()
        ));
        return warnings;
    }
    for name in REDIRECTS {
        let path = before.git_dir.join(name);
        if before.present.contains(name) || std::fs::symlink_metadata(&path).is_err() {
            continue;
        }
        let aside = before
            .git_dir
            .join(format!("{name}.kennel-quarantine-{session}"));
        match std::fs::rename(&path, &aside) {
            Ok(()) => warnings.push(format!(
                "the agent created {} (it would make your git read configuration the agent \
                 chose); kennel moved it to {}",
                path.display(),
                aside.display()
            )),
            Err(error) => warnings.push(format!(
                "the agent created {} (it would make your git read configuration the agent \
                 chose) and kennel cannot move it aside ({error}): remove it before running git \
                 here",
                path.display()
            )),
        }
    }
    warnings
}

/// [`check`], with what it finds told to the user on stderr.
pub fn report(before: &Snapshot, session: &str) {
    for warning in check(before, session) {
        eprintln!("kennel: WARNING: {warning}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_redirects_are_moved_aside_and_old_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let git = dir.path().join(".git");
        std::fs::create_dir(&git).expect("mkdir");
        std::fs::write(git.join("config.worktree"), "mine").expect("write");
        let before = snapshot(dir.path()).expect("snapshot");
        std::fs::write(git.join("commondir"), "/tmp/evil").expect("write");
        let warnings = check(&before, "s1");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("commondir"), "{warnings:?}");
        assert!(!git.join("commondir").exists());
        assert!(git.join("commondir.kennel-quarantine-s1").exists());
        assert!(
            git.join("config.worktree").exists(),
            "the user's own file stays"
        );
        assert!(check(&before, "s1").is_empty());
    }

    #[test]
    fn a_replaced_git_dir_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let git = dir.path().join(".git");
        std::fs::create_dir(&git).expect("mkdir");
        let before = snapshot(dir.path()).expect("snapshot");
        std::fs::rename(&git, dir.path().join("old")).expect("rename");
        std::fs::create_dir(&git).expect("mkdir");
        let warnings = check(&before, "s1");
        assert!(warnings[0].contains("replaced"), "{warnings:?}");
    }

    #[test]
    fn no_git_dir_no_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(snapshot(dir.path()).is_none());
        std::fs::write(dir.path().join(".git"), "gitdir: /elsewhere").expect("write");
        assert!(snapshot(dir.path()).is_none());
    }
}
