//! A sandbox that cannot share the clone (a Kubernetes Pod) sends its work
//! back as a bundle: the round trip on real git, and the bundles a hostile
//! agent (with its own `git`) could send instead.
//!
//! The "pod" here is a `cp -a` of the clone, as kennel's tar into a Pod
//! would make; the bundle command runs in it as the Pod would run it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use kennel_git::{Checkout, CheckoutMode, GitError, Received, Repo, WORK_TREE_REF, bundle_command};

fn new_clone(fixture: &Fixture, repo: &Repo, name: &str) -> Checkout {
    repo.create_clone(&fixture.session_dir(name), &format!("kennel/{name}"))
        .expect("clone created")
}

/// The Pod's copy of the clone.
fn pod_of(fixture: &Fixture, checkout: &Checkout) -> PathBuf {
    let pod = fixture.root().join("pod");
    let status = Command::new("cp")
        .arg("-a")
        .arg(&checkout.dir)
        .arg(&pod)
        .status()
        .expect("cp");
    assert!(status.success());
    pod
}

/// Runs [`bundle_command`] in the pod, as the Pod would; the bundle goes to
/// a new file, whose path is returned. The pod's git reads no global
/// config (the Pod's is not the user's).
fn pod_bundle(fixture: &Fixture, pod: &Path, checkout: &Checkout) -> PathBuf {
    let path = next_bundle_path(fixture);
    let argv = bundle_command(
        pod.to_str().expect("utf-8 path"),
        &checkout.branch,
        &checkout.base,
    );
    let output = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir("/")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&path).expect("bundle file"))
        .output()
        .expect("bundle command runs");
    assert!(
        output.status.success(),
        "bundle command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    path
}

/// A bundle the "agent" makes by hand in the pod: `git bundle create
/// <file> <args>`.
fn forged_bundle(fixture: &Fixture, pod: &Path, args: &[&str]) -> PathBuf {
    let path = next_bundle_path(fixture);
    let path_text = path.to_str().expect("utf-8 path");
    git(
        pod,
        &[&["bundle", "create", "-q", path_text][..], args].concat(),
    );
    path
}

fn next_bundle_path(fixture: &Fixture) -> PathBuf {
    for index in 0.. {
        let path = fixture.root().join(format!("bundle-{index}"));
        if !path.exists() {
            return path;
        }
    }
    unreachable!()
}

fn receive(repo: &Repo, checkout: &Checkout, bundle: &Path) -> Received {
    repo.receive_bundle(checkout, bundle)
        .expect("bundle received")
}

/// A file as a checkout has it.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File { content: Vec<u8>, executable: bool },
    Symlink(PathBuf),
}

/// Every file and symlink under `dir`, `.git` at the top left out; never
/// follows a symlink.
fn files(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Entry>) {
        use std::os::unix::fs::PermissionsExt;
        for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("inside").to_path_buf();
            if rel == Path::new(".git") {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            if meta.is_dir() {
                walk(root, &path, out);
            } else if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    Entry::Symlink(std::fs::read_link(&path).expect("readlink")),
                );
            } else {
                out.insert(
                    rel,
                    Entry::File {
                        content: std::fs::read(&path).expect("read"),
                        executable: meta.permissions().mode() & 0o111 != 0,
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Everything about the clone and the user's repository that a refused
/// bundle must leave as it was.
#[derive(Debug, PartialEq, Eq)]
struct State {
    clone_refs: String,
    clone_head: String,
    clone_index: Vec<u8>,
    clone_files: BTreeMap<PathBuf, Entry>,
    clone_objects: Vec<PathBuf>,
    user_refs: String,
}

fn all_refs(dir: &Path) -> String {
    git(dir, &["for-each-ref", "--format=%(objectname) %(refname)"])
}

fn state(fixture: &Fixture, checkout: &Checkout) -> State {
    fn paths(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
            out.push(entry.path());
            if entry.file_type().expect("type").is_dir() {
                paths(&entry.path(), out);
            }
        }
    }
    let mut clone_objects = Vec::new();
    paths(&checkout.dir.join(".git/objects"), &mut clone_objects);
    clone_objects.sort();
    State {
        clone_refs: all_refs(&checkout.dir),
        clone_head: git(&checkout.dir, &["symbolic-ref", "HEAD"]),
        clone_index: std::fs::read(checkout.dir.join(".git/index")).expect("index"),
        clone_files: files(&checkout.dir),
        clone_objects,
        user_refs: all_refs(&fixture.repo),
    }
}

fn expect_bad_bundle(repo: &Repo, checkout: &Checkout, bundle: &Path, says: &str) {
    match repo.receive_bundle(checkout, bundle) {
        Err(error @ GitError::BadBundle { .. }) => {
            assert!(error.is_refusal());
            assert!(error.to_string().contains(says), "{error}");
        }
        other => panic!("expected a refused bundle ({says}), got {other:?}"),
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("utf-8")
}

#[test]
fn the_pods_committed_and_uncommitted_work_comes_back_into_the_clone() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_clone(&fixture, &repo, "pod-0");
    let pod = pod_of(&fixture, &checkout);
    let user_refs = all_refs(&fixture.repo);

    // The agent's work in the pod: a commit, a modified file, a deleted
    // one, an untracked one and an ignored one.
    write(&pod, "src/a.txt", "alpha\none\nTWO\nthree\n");
    git(&pod, &["commit", "-q", "-am", "agent commit"]);
    write(&pod, "src/b.txt", "beta, changed\n");
    std::fs::remove_file(pod.join("README.md")).expect("rm");
    write(&pod, "new.txt", "untracked\n");
    write(&pod, "debug.log", "ignored\n");
    let pod_tip = git(&pod, &["rev-parse", "HEAD"]);

    let bundle = pod_bundle(&fixture, &pod, &checkout);
    let received = receive(&repo, &checkout, &bundle);

    assert_eq!(received.branch_tip, pod_tip);
    assert_eq!(
        git(&checkout.dir, &["rev-parse", "refs/heads/kennel/pod-0"]),
        pod_tip
    );
    assert_eq!(
        git(&checkout.dir, &["rev-parse", WORK_TREE_REF]),
        received.work_tree
    );
    let mut expected = files(&pod);
    expected.remove(Path::new("debug.log"));
    assert_eq!(files(&checkout.dir), expected);
    // The clone's index is at its branch: its files show as uncommitted.
    assert_eq!(
        git(&checkout.dir, &["status", "--porcelain"]),
        // (`git` trims the first line's leading space.)
        "D README.md\n M src/b.txt\n?? new.txt"
    );
    // Nothing reached the user's repository yet.
    assert_eq!(all_refs(&fixture.repo), user_refs);

    // The review commands see it as the pod had it.
    assert_eq!(repo.sync(&checkout).expect("sync"), pod_tip);
    let diff = text(repo.diff(&checkout, false).expect("diff"));
    for expected in [
        "+TWO",
        "-two",
        "+beta, changed",
        "deleted file mode 100644",
        "+untracked",
    ] {
        assert!(diff.contains(expected), "{expected} not in {diff}");
    }
    assert!(!diff.contains("debug.log"), "{diff}");
    let commit = checkout
        .commit_all("kennel: uncommitted work", &agent_identity())
        .expect("commit_all")
        .expect("there was uncommitted work");
    let tree = git(&fixture.repo, &["ls-tree", "-r", "--name-only", &commit]);
    assert_eq!(
        tree.lines().collect::<Vec<_>>(),
        [".gitignore", "new.txt", "src/a.txt", "src/b.txt"]
    );
    assert_eq!(
        git(&fixture.repo, &["show", &format!("{commit}:src/b.txt")]),
        "beta, changed"
    );
    assert_eq!(
        git(&fixture.repo, &["rev-parse", &format!("{commit}^")]),
        pod_tip
    );

    // A second round: more work, and files deleted since the first.
    std::fs::remove_file(pod.join("new.txt")).expect("rm");
    std::fs::remove_dir_all(pod.join("src")).expect("rm -r");
    write(&pod, "another.txt", "another\n");
    write(&pod, "docs/guide.md", "guide\n");
    git(&pod, &["add", "docs"]);
    git(&pod, &["commit", "-q", "-m", "docs"]);
    let pod_tip = git(&pod, &["rev-parse", "HEAD"]);
    let bundle = pod_bundle(&fixture, &pod, &checkout);
    let received = receive(&repo, &checkout, &bundle);
    assert_eq!(received.branch_tip, pod_tip);
    let mut expected = files(&pod);
    expected.remove(Path::new("debug.log"));
    assert_eq!(files(&checkout.dir), expected);
    assert!(!checkout.dir.join("new.txt").exists());
    assert!(!checkout.dir.join("src").exists());
    assert_eq!(repo.sync(&checkout).expect("sync"), pod_tip);
    let diff = text(repo.diff(&checkout, true).expect("diff --stat"));
    for expected in ["another.txt", "docs/guide.md", "src/a.txt", "README.md"] {
        assert!(diff.contains(expected), "{expected} not in {diff}");
    }
    assert!(!diff.contains("new.txt"), "{diff}");
}

#[test]
fn a_pod_without_commits_or_with_rewound_history_comes_back_too() {
    let fixture = Fixture::new();
    // A second commit, so that the agent can rewind to before the base.
    write(&fixture.repo, "src/b.txt", "beta, second\n");
    git(&fixture.repo, &["commit", "-q", "-am", "second"]);
    let first = git(&fixture.repo, &["rev-parse", "HEAD^"]);
    let repo = fixture.open();
    let checkout = new_clone(&fixture, &repo, "pod-0");
    let pod = pod_of(&fixture, &checkout);

    // No commit: the branch is still at the base.
    write(&pod, "draft.txt", "draft\n");
    let bundle = pod_bundle(&fixture, &pod, &checkout);
    let received = receive(&repo, &checkout, &bundle);
    assert_eq!(received.branch_tip, checkout.base);
    assert_eq!(files(&checkout.dir), files(&pod));
    let diff = text(repo.diff(&checkout, false).expect("diff"));
    assert!(diff.contains("+draft"), "{diff}");

    // History rewound past the base.
    git(&pod, &["reset", "-q", "--hard", &first]);
    write(&pod, "draft.txt", "draft, again\n");
    let bundle = pod_bundle(&fixture, &pod, &checkout);
    let received = receive(&repo, &checkout, &bundle);
    assert_eq!(received.branch_tip, first);
    assert_eq!(
        git(&checkout.dir, &["rev-parse", "refs/heads/kennel/pod-0"]),
        first
    );
    assert_eq!(files(&checkout.dir), files(&pod));
    assert_eq!(read(&checkout.dir, "src/b.txt"), "beta\n");
}

#[test]
fn a_worktree_session_cannot_receive_a_bundle() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let worktree = repo
        .create_worktree(&fixture.session_dir("wt-0"), "kennel/wt-0")
        .expect("worktree");
    assert_eq!(worktree.mode, CheckoutMode::Worktree);
    let bundle = fixture.root().join("bundle");
    std::fs::write(&bundle, b"# v2 git bundle\n\n").expect("write");
    let error = repo
        .receive_bundle(&worktree, &bundle)
        .expect_err("not a clone");
    assert!(matches!(error, GitError::NotAClone { .. }), "{error:?}");
}

#[test]
fn what_is_not_a_bundle_is_refused_and_changes_nothing() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_clone(&fixture, &repo, "pod-0");
    let pod = pod_of(&fixture, &checkout);
    let before = state(&fixture, &checkout);

    // Random bytes.
    let noise = fixture.root().join("noise");
    let bytes: Vec<u8> = (0u32..4096)
        .map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&noise, &bytes).expect("write");
    expect_bad_bundle(&repo, &checkout, &noise, "not a git bundle");
    // Empty.
    let empty = fixture.root().join("empty");
    std::fs::write(&empty, b"").expect("write");
    expect_bad_bundle(&repo, &checkout, &empty, "not a git bundle");
    // A real header, then garbage instead of a pack.
    write(&pod, "work.txt", "work\n");
    let real = pod_bundle(&fixture, &pod, &checkout);
    let real_bytes = std::fs::read(&real).expect("read");
    let header_end = real_bytes
        .windows(2)
        .position(|pair| pair == b"\n\n")
        .expect("header")
        + 2;
    let mut broken = real_bytes[..header_end].to_vec();
    broken.extend_from_slice(b"PACK this is not a pack at all");
    let broken_path = fixture.root().join("broken");
    std::fs::write(&broken_path, &broken).expect("write");
    expect_bad_bundle(&repo, &checkout, &broken_path, "failed git's checks");
    // A header that ends early.
    let cut = fixture.root().join("cut");
    std::fs::write(&cut, &real_bytes[..header_end - 5]).expect("write");
    expect_bad_bundle(&repo, &checkout, &cut, "ends before its header");

    assert_eq!(state(&fixture, &checkout), before);
    // And the real one still goes in.
    receive(&repo, &checkout, &real);
    assert_eq!(read(&checkout.dir, "work.txt"), "work\n");
}

#[test]
fn a_bundle_missing_a_ref_or_naming_a_non_commit_is_refused_and_changes_nothing() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_clone(&fixture, &repo, "pod-0");
    let pod = pod_of(&fixture, &checkout);
    let before = state(&fixture, &checkout);
    let branch_ref = "refs/heads/kennel/pod-0";
    let not_base = format!("^{}", checkout.base);

    write(&pod, "committed.txt", "committed\n");
    git(&pod, &["add", "-A"]);
    git(&pod, &["commit", "-q", "-m", "agent commit"]);
    // No work tree ref.
    let bundle = forged_bundle(&fixture, &pod, &[branch_ref, &not_base]);
    expect_bad_bundle(&repo, &checkout, &bundle, "it has no refs/kennel/worktree");
    // No branch.
    git(&pod, &["update-ref", WORK_TREE_REF, "HEAD"]);
    let bundle = forged_bundle(&fixture, &pod, &[WORK_TREE_REF, &not_base]);
    expect_bad_bundle(
        &repo,
        &checkout,
        &bundle,
        "it has no refs/heads/kennel/pod-0",
    );
    // The work tree ref names a tree, not a commit.
    git(&pod, &["update-ref", WORK_TREE_REF, "HEAD^{tree}"]);
    let bundle = forged_bundle(&fixture, &pod, &[branch_ref, WORK_TREE_REF, &not_base]);
    expect_bad_bundle(
        &repo,
        &checkout,
        &bundle,
        "refs/kennel/worktree is not a commit",
    );
    // It builds on a commit the clone does not have.
    write(&pod, "more.txt", "more\n");
    git(&pod, &["add", "-A"]);
    git(&pod, &["commit", "-q", "-m", "more"]);
    git(&pod, &["update-ref", WORK_TREE_REF, "HEAD"]);
    let bundle = forged_bundle(&fixture, &pod, &[branch_ref, WORK_TREE_REF, "^HEAD^"]);
    expect_bad_bundle(&repo, &checkout, &bundle, "which the clone does not have");

    assert_eq!(state(&fixture, &checkout), before);
}

#[test]
fn other_refs_in_a_bundle_are_never_created_or_moved() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_clone(&fixture, &repo, "pod-0");
    let pod = pod_of(&fixture, &checkout);
    let user_refs = all_refs(&fixture.repo);

    write(&pod, "work.txt", "work\n");
    git(&pod, &["add", "-A"]);
    git(&pod, &["commit", "-q", "-m", "agent commit"]);
    // The real bundle command writes the work tree ref in the pod.
    pod_bundle(&fixture, &pod, &checkout);
    let elsewhere = git(
        &pod,
        &[
            "commit-tree",
            "-m",
            "elsewhere",
            "-p",
            "HEAD",
            "HEAD^{tree}",
        ],
    );
    for refname in [
        "refs/heads/main",
        "refs/tags/x",
        "refs/kennel/other",
        "refs/remotes/origin/main",
        "refs/heads/kennel/pod-1",
    ] {
        git(&pod, &["update-ref", refname, &elsewhere]);
    }
    let bundle = forged_bundle(
        &fixture,
        &pod,
        &[
            "refs/heads/kennel/pod-0",
            WORK_TREE_REF,
            "refs/heads/main",
            "refs/tags/x",
            "refs/kennel/other",
            "refs/remotes/origin/main",
            "refs/heads/kennel/pod-1",
            &format!("^{}", checkout.base),
        ],
    );
    let received = receive(&repo, &checkout, &bundle);

    assert_eq!(
        all_refs(&checkout.dir),
        format!(
            "{} refs/heads/kennel/pod-0\n{} {WORK_TREE_REF}",
            received.branch_tip, received.work_tree
        )
    );
    assert_eq!(all_refs(&fixture.repo), user_refs);
    // Not even as objects the clone could reach by name.
    assert!(
        !git_output(&checkout.dir, &["rev-parse", "--verify", "-q", "x"])
            .status
            .success()
    );
}

/// `git mktree` of `entries` (`git ls-tree` lines) in the pod.
fn mktree(pod: &Path, entries: &str) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(pod)
        .arg("mktree")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(entries.as_bytes())?;
            child.wait_with_output()
        })
        .expect("mktree");
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Points the pod's work tree ref at a new commit, on top of HEAD, whose
/// tree is `entries`; returns the tree.
fn forge_work_tree(pod: &Path, entries: &str) -> String {
    let tree = mktree(pod, entries);
    let commit = git(pod, &["commit-tree", "-m", "forged", "-p", "HEAD", &tree]);
    git(pod, &["update-ref", WORK_TREE_REF, &commit]);
    tree
}

/// A bundle of the pod's branch and work tree ref, as the bundle command
/// would make it.
fn forged_work_tree_bundle(fixture: &Fixture, pod: &Path, checkout: &Checkout) -> PathBuf {
    let branch_ref = format!("refs/heads/{}", checkout.branch);
    let not_base = format!("^{}", checkout.base);
    forged_bundle(fixture, pod, &[&branch_ref, WORK_TREE_REF, &not_base])
}

/// A commit on the pod's branch, so that a bundle that leaves out the base
/// still has the branch's ref.
fn agent_commits(pod: &Path) {
    write(pod, "agent.txt", "agent\n");
    git(pod, &["add", "agent.txt"]);
    git(pod, &["commit", "-q", "-m", "agent commit"]);
}

fn hash_blob(pod: &Path, path: &Path) -> String {
    git(
        pod,
        &["hash-object", "-w", "--", path.to_str().expect("utf-8")],
    )
}

#[test]
fn nothing_is_ever_written_through_a_symlink_the_work_tree_holds() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_clone(&fixture, &repo, "pod-0");
    let pod = pod_of(&fixture, &checkout);
    let outside = fixture.root().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");

    agent_commits(&pod);
    // Round one: `link` is a symlink to a directory outside.
    std::os::unix::fs::symlink(&outside, pod.join("link")).expect("symlink");
    let bundle = pod_bundle(&fixture, &pod, &checkout);
    receive(&repo, &checkout, &bundle);
    assert_eq!(
        std::fs::read_link(checkout.dir.join("link")).expect("a symlink"),
        outside
    );

    // Round two, forged: `link` is now a directory holding `file`, and
    // kennel's record of what it wrote is gone (git must not need it).
    let payload = fixture.root().join("payload");
    std::fs::write(&payload, "written through the link\n").expect("write");
    let blob = hash_blob(&pod, &payload);
    let inner = mktree(&pod, &format!("100644 blob {blob}\tfile\n"));
    let head_tree = git(&pod, &["ls-tree", "HEAD"]);
    forge_work_tree(&pod, &format!("{head_tree}\n040000 tree {inner}\tlink\n"));
    let bundle = forged_work_tree_bundle(&fixture, &pod, &checkout);
    std::fs::remove_file(checkout.dir.join(".git/kennel-received-index")).expect("rm");
    receive(&repo, &checkout, &bundle);

    assert_eq!(
        std::fs::read_dir(&outside).expect("outside").count(),
        0,
        "a file was written through the symlink"
    );
    let link = std::fs::symlink_metadata(checkout.dir.join("link")).expect("link");
    assert!(link.is_dir());
    assert_eq!(
        read(&checkout.dir, "link/file"),
        "written through the link\n"
    );

    // One tree with both `link` the symlink and `link/file` is malformed.
    let target = fixture.root().join("target");
    std::fs::write(&target, outside.to_str().expect("utf-8")).expect("write");
    let link_blob = hash_blob(&pod, &target);
    forge_work_tree(
        &pod,
        &format!("{head_tree}\n120000 blob {link_blob}\tlink\n040000 tree {inner}\tlink\n"),
    );
    let bundle = forged_work_tree_bundle(&fixture, &pod, &checkout);
    let before = state(&fixture, &checkout);
    expect_bad_bundle(&repo, &checkout, &bundle, "failed git's checks");
    assert_eq!(state(&fixture, &checkout), before);
    assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
}

#[test]
fn a_tree_with_a_dot_git_path_is_refused_by_fsck_and_changes_nothing() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_clone(&fixture, &repo, "pod-0");
    let pod = pod_of(&fixture, &checkout);
    // The clone's own config asks for lenient checks: not heeded.
    for setting in [
        "fsck.hasDotgit",
        "fetch.fsck.hasDotgit",
        "receive.fsck.hasDotgit",
    ] {
        git(&checkout.dir, &["config", setting, "ignore"]);
    }
    git(&checkout.dir, &["config", "transfer.fsckObjects", "false"]);
    let markers_dir = fixture.root().join("markers");
    std::fs::create_dir(&markers_dir).expect("mkdir");
    let hook = fixture.root().join("hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ntouch '{}/dot-git-hook'\n",
            markers_dir.display()
        ),
    )
    .expect("write");
    agent_commits(&pod);
    let hook_blob = hash_blob(&pod, &hook);
    let hooks = mktree(&pod, &format!("100755 blob {hook_blob}\tpost-checkout\n"));
    let dot_git = mktree(&pod, &format!("040000 tree {hooks}\thooks\n"));
    let head_tree = git(&pod, &["ls-tree", "HEAD"]);
    let before = state(&fixture, &checkout);

    for name in [".git", ".GIT", "sub/.git"] {
        let entries = match name.split_once('/') {
            Some((dir, _)) => {
                let sub = mktree(&pod, &format!("040000 tree {dot_git}\t.git\n"));
                format!("{head_tree}\n040000 tree {sub}\t{dir}\n")
            }
            None => format!("{head_tree}\n040000 tree {dot_git}\t{name}\n"),
        };
        let tree = forge_work_tree(&pod, &entries);
        let bundle = forged_work_tree_bundle(&fixture, &pod, &checkout);
        expect_bad_bundle(&repo, &checkout, &bundle, "hasDotgit");
        assert_eq!(state(&fixture, &checkout), before, "after {name}");
        // Its objects never entered the clone.
        assert!(
            !git_output(&checkout.dir, &["cat-file", "-e", &tree])
                .status
                .success(),
            "{name}: the tree is in the clone"
        );
    }
    assert!(!checkout.dir.join(".git/hooks/post-checkout").exists());
    assert_eq!(markers(&markers_dir), Vec::<String>::new());
}

#[test]
fn no_hook_of_the_clone_runs_while_a_bundle_is_received() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_clone(&fixture, &repo, "pod-0");
    let pod = pod_of(&fixture, &checkout);
    let markers_dir = fixture.root().join("markers");
    plant_hooks(&checkout.dir.join(".git/hooks"), &markers_dir);

    write(&pod, "src/a.txt", "changed\n");
    git(&pod, &["commit", "-q", "-am", "agent commit"]);
    write(&pod, "new.txt", "new\n");
    let bundle = pod_bundle(&fixture, &pod, &checkout);
    receive(&repo, &checkout, &bundle);
    assert_eq!(read(&checkout.dir, "new.txt"), "new\n");
    assert_eq!(markers(&markers_dir), Vec::<String>::new());
}
