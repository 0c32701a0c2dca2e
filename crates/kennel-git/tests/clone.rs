//! Clone mode on real git: a clone that shares nothing writable with the
//! host repository, whose branch comes back on sync, and whose (hostile)
//! config kennel never lets run.

mod common;

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use kennel_git::{Checkout, CheckoutMode, GitError, MergeOutcome, Repo};

fn new_clone(fixture: &Fixture, repo: &Repo, name: &str) -> Checkout {
    repo.create_clone(&fixture.session_dir(name), &format!("kennel/{name}"))
        .expect("clone created")
}

fn agent_commits(checkout: &Checkout, rel: &str, text: &str, message: &str) {
    write(&checkout.dir, rel, text);
    git(&checkout.dir, &["add", "-A"]);
    git(&checkout.dir, &["commit", "-q", "-m", message]);
}

/// (device, inode) and link count of every file under `dir`.
fn inodes(dir: &Path, out: &mut Vec<((u64, u64), u64)>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let meta = std::fs::symlink_metadata(entry.path()).expect("stat");
        if meta.is_dir() {
            inodes(&entry.path(), out);
        } else {
            out.push(((meta.dev(), meta.ino()), meta.nlink()));
        }
    }
}

#[test]
fn a_clone_shares_nothing_with_the_host_repository() {
    let fixture = Fixture::new();
    // Loose objects in the host (what a local clone would hardlink), a
    // hook that would mark a checkout, and branches the clone must not get.
    let markers_dir = fixture.root().join("markers");
    plant_hooks(&fixture.common_dir().join("hooks"), &markers_dir);
    let quiet = ["-c", "core.hooksPath=/dev/null"];
    git(
        &fixture.repo,
        &[&quiet[..], &["switch", "-q", "-c", "user-secret-branch"]].concat(),
    );
    write(&fixture.repo, "secret.txt", "not for the agent\n");
    git(
        &fixture.repo,
        &[&quiet[..], &["add", "secret.txt"]].concat(),
    );
    git(
        &fixture.repo,
        &[&quiet[..], &["commit", "-q", "-m", "secret"]].concat(),
    );
    let secret = git(&fixture.repo, &["rev-parse", "HEAD"]);
    git(
        &fixture.repo,
        &[&quiet[..], &["switch", "-q", "main"]].concat(),
    );
    let repo = fixture.open();
    let other = repo
        .create_worktree(&fixture.session_dir("other-0"), "kennel/other-0")
        .expect("another session");
    write(&other.dir, "other.txt", "another session's work\n");
    git(&other.dir, &[&quiet[..], &["add", "other.txt"]].concat());
    git(
        &other.dir,
        &[&quiet[..], &["commit", "-q", "-m", "other"]].concat(),
    );
    let other_tip = git(&other.dir, &["rev-parse", "HEAD"]);
    let checkout = new_clone(&fixture, &repo, "claude-0");
    assert_eq!(checkout.mode, CheckoutMode::Clone);
    assert_eq!(checkout.base, git(&fixture.repo, &["rev-parse", "HEAD"]));
    let clone_git = checkout.dir.join(".git");

    // No hook ran while the clone was made and checked out, and none was
    // copied; no alternates; no object file shared with the host.
    assert_eq!(markers(&markers_dir), Vec::<String>::new());
    let hooks: Vec<_> = std::fs::read_dir(clone_git.join("hooks"))
        .expect("hooks dir")
        .collect();
    assert!(hooks.is_empty(), "{hooks:?}");
    assert!(!clone_git.join("objects/info/alternates").exists());
    let mut host = Vec::new();
    inodes(&fixture.common_dir().join("objects"), &mut host);
    let mut ours = Vec::new();
    inodes(&clone_git.join("objects"), &mut ours);
    let host: HashSet<_> = host.into_iter().map(|(inode, _)| inode).collect();
    assert!(!ours.is_empty());
    for (inode, links) in &ours {
        assert!(
            !host.contains(inode),
            "an object file is shared with the host"
        );
        assert_eq!(*links, 1, "an object file is hardlinked");
    }

    // A minimal config: no remote pointing back at the host, no includes.
    let config = git(&checkout.dir, &["config", "--local", "--list"]);
    for line in config.lines() {
        assert!(line.starts_with("core."), "unexpected config: {line}");
    }
    // Only the session's branch, at the base, checked out.
    assert_eq!(
        git(&checkout.dir, &["branch", "-a", "--format=%(refname)"]),
        "refs/heads/kennel/claude-0"
    );
    assert_eq!(git(&checkout.dir, &["rev-parse", "HEAD"]), checkout.base);
    assert_eq!(git(&checkout.dir, &["status", "--porcelain"]), "");
    assert_eq!(read(&checkout.dir, "src/a.txt"), "alpha\none\ntwo\nthree\n");
    // Neither the user's other branches nor other sessions' work.
    for commit in [&secret, &other_tip] {
        assert!(
            !git_output(&checkout.dir, &["cat-file", "-e", commit])
                .status
                .success()
        );
    }
    // The branch name is reserved in the host repository.
    assert!(branch_exists(&fixture.repo, "kennel/claude-0"));
    let error = repo
        .create_clone(&fixture.session_dir("again"), "kennel/claude-0")
        .expect_err("taken");
    assert!(matches!(error, GitError::BranchExists { .. }), "{error:?}");

    // The clone works with the host repository gone (not mounted at all).
    let away = fixture.root().join("repo-away");
    std::fs::rename(&fixture.repo, &away).expect("move the host repository away");
    let fsck = git_output(
        &checkout.dir,
        &["fsck", "--full", "--strict", "--no-progress"],
    );
    let log = git_output(&checkout.dir, &["log", "--format=%s"]);
    write(&checkout.dir, "offline.txt", "x\n");
    let add = git_output(&checkout.dir, &["add", "offline.txt"]);
    let commit = git_output(&checkout.dir, &["commit", "-q", "-m", "offline"]);
    std::fs::rename(&away, &fixture.repo).expect("move it back");
    for output in [&fsck, &log, &add, &commit] {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    assert_eq!(String::from_utf8_lossy(&log.stdout).trim(), "initial");

    // Its mounts: the clone only, config and hooks read-only.
    let mounts = repo.mounts_for_clone(&checkout).expect("mounts");
    assert!(
        mounts
            .iter()
            .all(|mount| mount.host.starts_with(&checkout.dir))
    );
    assert!(
        mounts
            .iter()
            .any(|mount| mount.host == clone_git.join("config") && mount.read_only)
    );
    assert!(
        mounts
            .iter()
            .any(|mount| mount.host == clone_git.join("hooks") && mount.read_only)
    );
    assert!(
        mounts
            .iter()
            .any(|mount| mount.host == checkout.dir && !mount.read_only)
    );
}

#[test]
fn commits_in_the_clone_arrive_as_the_branch_on_sync() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_clone(&fixture, &repo, "claude-0");
    let before = checkout_state(&fixture.repo);
    agent_commits(&checkout, "one.txt", "one\n", "first");
    agent_commits(&checkout, "two.txt", "two\n", "second");
    let clone_tip = git(&checkout.dir, &["rev-parse", "HEAD"]);
    assert!(repo.unmerged(&checkout).expect("unsynced work counts"));
    assert_ne!(
        git(&fixture.repo, &["rev-parse", "kennel/claude-0"]),
        clone_tip
    );

    let tip = repo.sync(&checkout).expect("sync");
    assert_eq!(tip, clone_tip);
    assert_eq!(
        git(&fixture.repo, &["rev-parse", "kennel/claude-0"]),
        clone_tip
    );
    assert_eq!(
        git(
            &fixture.repo,
            &["log", "--format=%s", "main..kennel/claude-0"]
        ),
        "second\nfirst"
    );
    assert_eq!(checkout_state(&fixture.repo), before);
    // Idempotent.
    assert_eq!(repo.sync(&checkout).expect("again"), clone_tip);

    // The agent rewrote its history: the branch follows.
    git(
        &checkout.dir,
        &["commit", "-q", "--amend", "-m", "second, amended"],
    );
    let amended = repo.sync(&checkout).expect("sync after amend");
    assert_eq!(amended, git(&checkout.dir, &["rev-parse", "HEAD"]));

    let diff = String::from_utf8(repo.diff(&checkout, false).expect("diff")).expect("utf-8");
    assert!(diff.contains("+one") && diff.contains("+two"), "{diff}");
    assert!(matches!(
        repo.merge(&checkout).expect("merge"),
        MergeOutcome::FastForward { .. }
    ));
    assert_eq!(read(&fixture.repo, "two.txt"), "two\n");
    assert!(!repo.unmerged(&checkout).expect("merged"));

    repo.discard(&checkout).expect("discard");
    assert!(!checkout.dir.exists());
    assert!(!branch_exists(&fixture.repo, "kennel/claude-0"));
    assert_eq!(worktree_paths(&fixture.repo), vec![fixture.repo.clone()]);
}

#[test]
fn commit_all_records_the_clones_uncommitted_work_on_the_host_branch() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_clone(&fixture, &repo, "claude-0");
    agent_commits(&checkout, "committed.txt", "committed\n", "agent commit");
    write(&checkout.dir, "draft.txt", "draft\n");
    write(&checkout.dir, "trace.log", "ignored\n");
    let clone_state = git(&checkout.dir, &["status", "--porcelain"]);

    let commit = checkout
        .commit_all("kennel: session ended", &agent_identity())
        .expect("commit_all")
        .expect("work");
    assert_eq!(
        git(&fixture.repo, &["rev-parse", "kennel/claude-0"]),
        commit
    );
    assert_eq!(
        git(
            &fixture.repo,
            &["log", "--format=%s", "main..kennel/claude-0"]
        ),
        "kennel: session ended\nagent commit"
    );
    let files = git(&fixture.repo, &["ls-tree", "-r", "--name-only", &commit]);
    assert!(files.contains("draft.txt") && files.contains("committed.txt"));
    assert!(!files.contains("trace.log"));
    // The clone itself was not written to.
    assert_eq!(git(&checkout.dir, &["status", "--porcelain"]), clone_state);
    // A later sync keeps kennel's commit while the clone has not moved...
    assert_eq!(repo.sync(&checkout).expect("sync"), commit);
    assert_eq!(
        checkout
            .commit_all("again", &agent_identity())
            .expect("clean"),
        None
    );
    assert!(repo.unmerged(&checkout).expect("unmerged"));
    repo.merge(&checkout).expect("merge");
    assert_eq!(read(&fixture.repo, "draft.txt"), "draft\n");
    assert!(
        !repo
            .unmerged(&checkout)
            .expect("merged, uncommitted in the clone")
    );
    // ...and the agent's new commits replace it.
    agent_commits(&checkout, "later.txt", "later\n", "later");
    let tip = repo.sync(&checkout).expect("sync");
    assert_eq!(tip, git(&checkout.dir, &["rev-parse", "HEAD"]));
    assert!(repo.unmerged(&checkout).expect("new work"));
}

/// A clone's `.git/config` and hooks are the agent's. kennel's sync, diff,
/// commit_all, unmerged, merge, apply and discard run none of it; plain git
/// in the clone does (the control).
#[test]
fn a_hostile_clone_config_never_runs_on_the_host() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_clone(&fixture, &repo, "claude-0");
    let applied = new_clone(&fixture, &repo, "codex-0");
    agent_commits(&checkout, "work.txt", "work\n", "work");
    agent_commits(&applied, "applied.txt", "applied\n", "applied");

    let markers_dir = fixture.root().join("markers");
    std::fs::create_dir_all(&markers_dir).expect("mkdir");
    let marker = |name: &str| format!("touch '{}/{name}'", markers_dir.display());
    for clone in [&checkout, &applied] {
        plant_hooks(&clone.dir.join(".git/hooks"), &markers_dir);
        let config = clone.dir.join(".git/config");
        let mut text = std::fs::read_to_string(&config).expect("config");
        text.push_str(&format!(
            "[core]\n\tfsmonitor = \"{fsmonitor}; false\"\n\tsshCommand = \"{ssh}\"\n\
             [uploadpack]\n\tpackObjectsHook = \"{pack}; \"\n\
             [filter \"evil\"]\n\tclean = \"{clean}; cat\"\n\tsmudge = \"{smudge}; cat\"\n\
             [diff \"evil\"]\n\ttextconv = \"{textconv}; cat\"\n\
             [diff]\n\texternal = \"{external}\"\n",
            fsmonitor = marker("fsmonitor"),
            ssh = marker("ssh"),
            pack = marker("pack-objects-hook"),
            clean = marker("filter-clean"),
            smudge = marker("filter-smudge"),
            textconv = marker("textconv"),
            external = marker("external-diff"),
        ));
        std::fs::write(&config, text).expect("write config");
        write(&clone.dir, ".gitattributes", "* filter=evil diff=evil\n");
        write(&clone.dir, "uncommitted.txt", "uncommitted\n");
    }

    assert!(repo.unmerged(&checkout).expect("unmerged"));
    let diff = repo.diff(&checkout, false).expect("diff");
    assert!(String::from_utf8_lossy(&diff).contains("+uncommitted"));
    repo.diff(&checkout, true).expect("diff --stat");
    repo.sync(&checkout).expect("sync");
    checkout
        .commit_all("kennel: exit", &agent_identity())
        .expect("commit_all")
        .expect("work");
    repo.merge(&checkout).expect("merge");
    repo.apply(&applied).expect("apply");
    assert_eq!(read(&fixture.repo, "applied.txt"), "applied\n");
    repo.discard(&checkout).expect("discard");
    repo.discard(&applied).expect("discard");
    assert_eq!(markers(&markers_dir), Vec::<String>::new());

    // The control: the same config runs code as soon as git runs in the
    // clone the ordinary way.
    let control = new_clone(&fixture, &repo, "control-0");
    std::fs::write(
        control.dir.join(".git/config"),
        format!(
            "{}[core]\n\tfsmonitor = \"{}; false\"\n",
            std::fs::read_to_string(control.dir.join(".git/config")).expect("config"),
            marker("fsmonitor")
        ),
    )
    .expect("write");
    let _ = git_output(&control.dir, &["status"]);
    assert_eq!(markers(&markers_dir), vec!["fsmonitor".to_string()]);
}

#[test]
fn sync_refuses_a_clone_redirected_elsewhere() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_clone(&fixture, &repo, "claude-0");
    agent_commits(&checkout, "work.txt", "work\n", "work");
    let before = git(&fixture.repo, &["rev-parse", "kennel/claude-0"]);

    let alternates = checkout.dir.join(".git/objects/info/alternates");
    std::fs::create_dir_all(alternates.parent().unwrap()).expect("mkdir");
    std::fs::write(
        &alternates,
        format!("{}\n", fixture.common_dir().join("objects").display()),
    )
    .expect("write");
    let error = repo.sync(&checkout).expect_err("alternates");
    assert!(
        matches!(&error, GitError::Tampered { path, .. } if *path == alternates),
        "{error:?}"
    );
    assert!(error.is_refusal());
    assert_eq!(
        git(&fixture.repo, &["rev-parse", "kennel/claude-0"]),
        before
    );
    std::fs::remove_file(&alternates).expect("rm");

    // `.git` swapped for a symlink to another repository of the user's.
    let elsewhere = fixture.root().join("elsewhere");
    std::fs::rename(checkout.dir.join(".git"), &elsewhere).expect("move");
    std::os::unix::fs::symlink(&elsewhere, checkout.dir.join(".git")).expect("symlink");
    let error = repo.sync(&checkout).expect_err("symlink");
    assert!(matches!(error, GitError::Tampered { .. }), "{error:?}");
    assert_eq!(
        git(&fixture.repo, &["rev-parse", "kennel/claude-0"]),
        before
    );
    std::fs::remove_file(checkout.dir.join(".git")).expect("rm");
    std::fs::rename(&elsewhere, checkout.dir.join(".git")).expect("move back");
    assert_ne!(repo.sync(&checkout).expect("sync"), before);
}
