//! Worktree mode on real git: sessions, review, and what kennel never runs.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kennel_git::{Checkout, CheckoutMode, GitError, Head, MergeOutcome, Repo};

fn new_session(fixture: &Fixture, repo: &Repo, name: &str) -> Checkout {
    repo.create_worktree(&fixture.session_dir(name), &format!("kennel/{name}"))
        .expect("worktree created")
}

/// What an agent does inside: edit, then commit with plain git.
fn agent_commits(checkout: &Checkout, rel: &str, text: &str, message: &str) {
    write(&checkout.dir, rel, text);
    git(&checkout.dir, &["add", "-A"]);
    git(&checkout.dir, &["commit", "-q", "-m", message]);
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("utf-8 diff")
}

#[test]
fn three_parallel_sessions_each_see_only_their_work_and_merge_or_discard() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let before = checkout_state(&fixture.repo);

    // Three sessions created and worked in at once, as three agents would.
    let checkouts: Vec<Checkout> = std::thread::scope(|scope| {
        let handles: Vec<_> = ["claude-0", "codex-0", "aider-0"]
            .into_iter()
            .map(|name| {
                let (fixture, repo) = (&fixture, &repo);
                scope.spawn(move || {
                    let checkout = new_session(fixture, repo, name);
                    agent_commits(
                        &checkout,
                        &format!("{name}.txt"),
                        &format!("work of {name}\n"),
                        &format!("{name} was here"),
                    );
                    checkout
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("thread"))
            .collect()
    });

    // The user's checkout was not touched by any of it.
    assert_eq!(checkout_state(&fixture.repo), before);
    for checkout in &checkouts {
        assert_eq!(checkout.mode, CheckoutMode::Worktree);
        assert_eq!(checkout.base, before.head);
        assert!(worktree_paths(&fixture.repo).contains(&checkout.dir));
    }

    // Each diff shows its own change and none of the others'.
    for (index, checkout) in checkouts.iter().enumerate() {
        let diff = text(repo.diff(checkout, false).expect("diff"));
        let own = checkout
            .dir
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(diff.contains(&format!("+work of {own}")), "{diff}");
        for (other_index, other) in checkouts.iter().enumerate() {
            if other_index != index {
                let name = other
                    .dir
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                assert!(!diff.contains(&name), "{own}'s diff shows {name}: {diff}");
            }
        }
        let stat = text(repo.diff(checkout, true).expect("diff --stat"));
        assert!(
            stat.contains(&format!("{own}.txt")) && stat.contains("1 insertion"),
            "{stat}"
        );
    }

    // Merge the first: a fast-forward; the user stays on main.
    let outcome = repo.merge(&checkouts[0]).expect("merge");
    assert!(
        matches!(outcome, MergeOutcome::FastForward { .. }),
        "{outcome:?}"
    );
    assert_eq!(read(&fixture.repo, "claude-0.txt"), "work of claude-0\n");
    let after = checkout_state(&fixture.repo);
    assert_eq!(after.branch, "main");
    assert_eq!(after.status, before.status);
    assert_eq!(repo.current_head().unwrap().0, Head::Branch("main".into()));
    assert!(!repo.unmerged(&checkouts[0]).expect("unmerged"));

    // The others are still there, untouched, and still merge (now with a
    // merge commit: main moved on) or discard.
    for checkout in &checkouts[1..] {
        assert!(worktree_paths(&fixture.repo).contains(&checkout.dir));
        assert!(repo.unmerged(checkout).expect("unmerged"));
    }
    let outcome = repo.merge(&checkouts[1]).expect("second merge");
    let MergeOutcome::Merged { commit } = outcome else {
        panic!("expected a merge commit, got {outcome:?}");
    };
    assert_eq!(git(&fixture.repo, &["rev-parse", "HEAD"]), commit);
    assert_eq!(
        git(&fixture.repo, &["log", "-1", "--format=%s"]),
        "Merge branch 'kennel/codex-0'"
    );
    assert_eq!(read(&fixture.repo, "codex-0.txt"), "work of codex-0\n");
    assert_eq!(read(&fixture.repo, "claude-0.txt"), "work of claude-0\n");
    assert_eq!(git(&fixture.repo, &["status", "--porcelain"]), "");
    assert_eq!(
        repo.merge(&checkouts[1]).expect("again"),
        MergeOutcome::UpToDate
    );

    // Discard the third: nothing of it is left.
    let third = &checkouts[2];
    let admin = third.admin_dir.clone().expect("admin dir");
    repo.discard(third).expect("discard");
    assert!(!worktree_paths(&fixture.repo).contains(&third.dir));
    assert!(!branch_exists(&fixture.repo, &third.branch));
    assert!(!third.dir.exists());
    assert!(!admin.exists());
    assert!(!fixture.repo.join("aider-0.txt").exists());
    // The merged ones can go too; then no kennel ref directory is left.
    repo.discard(&checkouts[0]).expect("discard");
    repo.discard(&checkouts[1]).expect("discard");
    assert_eq!(worktree_paths(&fixture.repo), vec![fixture.repo.clone()]);
    assert!(!fixture.common_dir().join("refs/heads/kennel").exists());
    assert!(!fixture.common_dir().join("logs/refs/heads/kennel").exists());
    assert_eq!(
        git(&fixture.repo, &["branch", "--format=%(refname:short)"]),
        "main"
    );
}

#[test]
fn existing_branch_or_directory_is_refused_and_nothing_changes() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    git(&fixture.repo, &["branch", "kennel/taken"]);
    let before = checkout_state(&fixture.repo);
    let error = repo
        .create_worktree(&fixture.session_dir("taken"), "kennel/taken")
        .expect_err("branch exists");
    assert!(matches!(&error, GitError::BranchExists { branch } if branch == "kennel/taken"));
    assert!(error.to_string().contains("kennel/taken"), "{error}");
    assert!(error.is_refusal() && error.hint().is_some());
    assert!(!fixture.session_dir("taken").exists());

    write(&fixture.sessions, "busy/file", "x");
    let error = repo
        .create_worktree(&fixture.session_dir("busy"), "kennel/busy")
        .expect_err("directory in use");
    assert!(
        matches!(error, GitError::DestinationExists { .. }),
        "{error:?}"
    );
    assert!(!branch_exists(&fixture.repo, "kennel/busy"));

    let error = repo
        .create_worktree(&fixture.session_dir("bad"), "kennel/bad..name")
        .expect_err("invalid name");
    assert!(
        matches!(error, GitError::InvalidBranchName { .. }),
        "{error:?}"
    );
    assert_eq!(checkout_state(&fixture.repo), before);
    assert_eq!(worktree_paths(&fixture.repo), vec![fixture.repo.clone()]);
}

#[test]
fn commit_all_commits_modified_deleted_and_untracked_files_but_not_ignored_ones() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_session(&fixture, &repo, "claude-0");
    assert_eq!(
        checkout
            .commit_all("nothing", &agent_identity())
            .expect("clean"),
        None
    );

    agent_commits(&checkout, "committed.txt", "committed\n", "agent commit");
    write(&checkout.dir, "src/a.txt", "alpha changed\n");
    std::fs::remove_file(checkout.dir.join("src/b.txt")).expect("rm");
    write(&checkout.dir, "new/untracked.txt", "untracked\n");
    write(&checkout.dir, "debug.log", "ignored\n");
    git(&checkout.dir, &["add", "src/a.txt"]); // one change staged, the rest not

    let commit = checkout
        .commit_all("kennel: session ended", &agent_identity())
        .expect("commit_all")
        .expect("there was work");
    let tip = git(
        &fixture.repo,
        &["rev-parse", &format!("refs/heads/{}", checkout.branch)],
    );
    assert_eq!(tip, commit);
    let files = git(&fixture.repo, &["ls-tree", "-r", "--name-only", &commit]);
    assert!(files.contains("new/untracked.txt"), "{files}");
    assert!(files.contains("committed.txt"), "{files}");
    assert!(!files.contains("src/b.txt"), "{files}");
    assert!(!files.contains("debug.log"), "{files}");
    assert_eq!(
        git(&fixture.repo, &["show", &format!("{commit}:src/a.txt")]),
        "alpha changed"
    );
    assert_eq!(
        git(
            &fixture.repo,
            &["log", "-1", "--format=%an <%ae>|%s|%P", &commit]
        ),
        format!(
            "kennel <kennel@localhost>|kennel: session ended|{}",
            git(&fixture.repo, &["rev-parse", &format!("{commit}~1")])
        )
    );
    // The agent's own commit is the parent: nothing was rewritten.
    assert_eq!(
        git(
            &fixture.repo,
            &["log", "-1", "--format=%s", &format!("{commit}~1")]
        ),
        "agent commit"
    );
    // Inside, the worktree is clean on the new commit: the session resumes
    // where it was.
    assert_eq!(git(&checkout.dir, &["status", "--porcelain"]), "");
    assert_eq!(git(&checkout.dir, &["rev-parse", "HEAD"]), commit);
    assert_eq!(read(&checkout.dir, "debug.log"), "ignored\n");
    assert_eq!(
        checkout
            .commit_all("again", &agent_identity())
            .expect("clean"),
        None
    );
    // The user's checkout has none of it.
    assert!(!fixture.repo.join("new").exists());
    assert_eq!(git(&fixture.repo, &["status", "--porcelain"]), "");
}

#[test]
fn diff_includes_uncommitted_and_untracked_work_and_writes_nothing() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_session(&fixture, &repo, "claude-0");
    agent_commits(
        &checkout,
        "committed.txt",
        "committed line\n",
        "agent commit",
    );
    write(&checkout.dir, "src/a.txt", "alpha\none\nTWO\nthree\n");
    write(&checkout.dir, "fresh.txt", "untracked line\n");
    write(&checkout.dir, "noise.log", "ignored line\n");
    let admin = checkout.admin_dir.clone().expect("admin");
    let index_before = std::fs::read(admin.join("index")).expect("index");
    let objects_before = count_files(&fixture.common_dir().join("objects"));

    let diff = text(repo.diff(&checkout, false).expect("diff"));
    assert!(diff.contains("+committed line"), "{diff}");
    assert!(diff.contains("-two") && diff.contains("+TWO"), "{diff}");
    assert!(diff.contains("+untracked line"), "{diff}");
    assert!(!diff.contains("ignored line"), "{diff}");

    // Neither the worktree's index nor the repository changed: the
    // untracked file is still untracked, and no object was added.
    assert_eq!(
        std::fs::read(admin.join("index")).expect("index"),
        index_before
    );
    assert_eq!(
        count_files(&fixture.common_dir().join("objects")),
        objects_before
    );
    assert!(git(&checkout.dir, &["status", "--porcelain"]).contains("?? fresh.txt"));
}

fn count_files(dir: &Path) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        count += if path.is_dir() { count_files(&path) } else { 1 };
    }
    count
}

/// Everything an agent in a worktree could plant for git to run: hooks in
/// the common dir (read-only in a sandbox, but as if it had got there), a
/// per-worktree config with `core.hooksPath`, `core.fsmonitor`, a filter
/// and a textconv driver, and `.gitattributes` that use them. kennel's
/// commands on the session must run none of it.
#[test]
fn kennel_never_runs_hooks_or_config_the_agent_planted() {
    let fixture = Fixture::new();
    // A user who has per-worktree config on: git then reads the
    // agent-writable `config.worktree` for commands run in the worktree.
    git(
        &fixture.repo,
        &["config", "extensions.worktreeConfig", "true"],
    );
    let repo = fixture.open();
    let merged = new_session(&fixture, &repo, "claude-0");
    let checkout = new_session(&fixture, &repo, "codex-0");
    let other = new_session(&fixture, &repo, "aider-0");
    agent_commits(&merged, "merged.txt", "merged\n", "to merge");
    agent_commits(&checkout, "work.txt", "work\n", "work");
    agent_commits(&other, "other.txt", "other\n", "other");
    let control = new_session(&fixture, &repo, "control-0");

    let markers_dir = fixture.root().join("markers");
    let hooks_dir = fixture.root().join("agent-hooks");
    plant_hooks(&fixture.common_dir().join("hooks"), &markers_dir);
    plant_hooks(&hooks_dir, &markers_dir);
    let marker = |name: &str| format!("touch '{}/{name}'", markers_dir.display());
    let admin = checkout.admin_dir.clone().expect("admin");
    std::fs::write(
        admin.join("config.worktree"),
        format!(
            "[core]\n\thooksPath = {hooks}\n\tfsmonitor = \"{fsmonitor}; false\"\n\
             [filter \"evil\"]\n\tclean = \"{clean}; cat\"\n\tsmudge = \"{smudge}; cat\"\n\
             [diff \"evil\"]\n\ttextconv = \"{textconv}; cat\"\n\
             [diff]\n\texternal = \"{external}\"\n",
            hooks = hooks_dir.display(),
            fsmonitor = marker("fsmonitor"),
            clean = marker("filter-clean"),
            smudge = marker("filter-smudge"),
            textconv = marker("textconv"),
            external = marker("external-diff"),
        ),
    )
    .expect("write config.worktree");
    write(&checkout.dir, ".gitattributes", "* filter=evil diff=evil\n");
    write(&checkout.dir, "uncommitted.txt", "uncommitted\n");

    // kennel's whole review flow on the session.
    let mut diff = repo.diff(&checkout, false).expect("diff");
    diff.extend(repo.diff(&checkout, true).expect("diff --stat"));
    assert!(text(diff).contains("uncommitted.txt"));
    assert!(repo.unmerged(&checkout).expect("unmerged"));
    let commit = checkout
        .commit_all("kennel: exit", &agent_identity())
        .expect("commit_all");
    assert!(commit.is_some());
    assert!(matches!(
        repo.merge(&merged).expect("merge"),
        MergeOutcome::FastForward { .. }
    ));
    assert!(matches!(
        repo.merge(&checkout).expect("merge"),
        MergeOutcome::Merged { .. }
    ));
    repo.apply(&other).expect("apply");
    assert_eq!(read(&fixture.repo, "other.txt"), "other\n");
    repo.discard(&merged).expect("discard");
    repo.discard(&checkout).expect("discard");
    assert_eq!(markers(&markers_dir), Vec::<String>::new());

    // The control: the same files do run code when git is run the ordinary
    // way, so the assertion above would catch a kennel that ran them.
    std::fs::write(
        control.admin_dir.as_ref().unwrap().join("config.worktree"),
        format!("[core]\n\tfsmonitor = \"{}; false\"\n", marker("fsmonitor")),
    )
    .expect("write");
    write(&control.dir, "x.txt", "x\n");
    let _ = git_output(&control.dir, &["status"]);
    git(&control.dir, &["add", "x.txt"]);
    git(&control.dir, &["commit", "-q", "-m", "x"]);
    let ran = markers(&markers_dir);
    assert!(ran.contains(&"fsmonitor".to_string()), "{ran:?}");
    assert!(ran.contains(&"pre-commit".to_string()), "{ran:?}");
}

/// An agent that replaced the worktree's `.git` file with a git dir of its
/// own (hostile config) gets it ignored: kennel names the host's git dir
/// and never discovers one in the worktree; discard still cleans up.
#[test]
fn a_replaced_dot_git_is_ignored_and_discard_still_cleans_up() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_session(&fixture, &repo, "claude-0");
    agent_commits(&checkout, "work.txt", "work\n", "work");
    let markers_dir = fixture.root().join("markers");
    std::fs::create_dir_all(&markers_dir).expect("mkdir");
    let fake = checkout.dir.join(".git");
    std::fs::remove_file(&fake).expect("rm .git");
    let status = std::process::Command::new("git")
        .args(["init", "-q"])
        .arg(&checkout.dir)
        .status()
        .expect("git init");
    assert!(status.success());
    git(
        &checkout.dir,
        &[
            "config",
            "core.fsmonitor",
            &format!("touch '{}/fsmonitor'; false", markers_dir.display()),
        ],
    );
    plant_hooks(&fake.join("hooks"), &markers_dir);
    write(&checkout.dir, "more.txt", "more\n");

    let diff = text(repo.diff(&checkout, false).expect("diff"));
    assert!(diff.contains("+more") && diff.contains("+work"), "{diff}");
    assert!(!diff.contains(".git/"), "{diff}");
    let commit = checkout
        .commit_all("kennel: exit", &agent_identity())
        .expect("commit_all")
        .expect("work");
    let files = git(&fixture.repo, &["ls-tree", "-r", "--name-only", &commit]);
    assert!(files.lines().any(|file| file == "more.txt"), "{files}");
    assert!(
        !files
            .lines()
            .any(|file| file == ".git" || file.starts_with(".git/")),
        "{files}"
    );
    assert_eq!(markers(&markers_dir), Vec::<String>::new());
    assert!(matches!(
        repo.mounts_for_worktree(&checkout),
        Err(GitError::Tampered { .. })
    ));

    repo.discard(&checkout).expect("discard");
    assert!(!checkout.dir.exists());
    assert!(!checkout.admin_dir.as_ref().unwrap().exists());
    assert!(!branch_exists(&fixture.repo, &checkout.branch));
    assert_eq!(worktree_paths(&fixture.repo), vec![fixture.repo.clone()]);
    assert_eq!(markers(&markers_dir), Vec::<String>::new());
}

#[test]
fn merge_refuses_a_dirty_checkout_and_touches_nothing() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_session(&fixture, &repo, "claude-0");
    agent_commits(&checkout, "work.txt", "work\n", "work");
    write(&fixture.repo, "src/b.txt", "user's own edit\n");
    write(&fixture.repo, "README.md", "staged edit\n");
    git(&fixture.repo, &["add", "README.md"]);
    write(&fixture.repo, "scratch.txt", "untracked, not in the way\n");
    let before = checkout_state(&fixture.repo);

    let error = repo.merge(&checkout).expect_err("dirty");
    let GitError::DirtyCheckout { files } = &error else {
        panic!("expected DirtyCheckout, got {error:?}");
    };
    assert_eq!(
        files,
        &vec!["README.md".to_string(), "src/b.txt".to_string()]
    );
    assert!(error.to_string().contains("src/b.txt") && error.is_refusal());
    assert_eq!(checkout_state(&fixture.repo), before);
    let error = repo.apply(&checkout).expect_err("dirty");
    assert!(matches!(error, GitError::DirtyCheckout { .. }), "{error:?}");
    assert_eq!(checkout_state(&fixture.repo), before);
    assert!(repo.unmerged(&checkout).expect("unmerged"));
}

#[test]
fn merge_refuses_conflicts_and_touches_nothing() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_session(&fixture, &repo, "claude-0");
    agent_commits(
        &checkout,
        "src/a.txt",
        "alpha\none\nAGENT\nthree\n",
        "agent edit",
    );
    agent_commits(&checkout, "agent-only.txt", "mine\n", "agent file");
    // The user changed the same line meanwhile, and committed it.
    write(&fixture.repo, "src/a.txt", "alpha\none\nUSER\nthree\n");
    git(&fixture.repo, &["commit", "-q", "-am", "user edit"]);
    let before = checkout_state(&fixture.repo);

    let error = repo.merge(&checkout).expect_err("conflict");
    let GitError::Conflicts { files } = &error else {
        panic!("expected Conflicts, got {error:?}");
    };
    assert_eq!(files, &vec!["src/a.txt".to_string()]);
    assert!(error.to_string().contains("src/a.txt"));
    assert_eq!(checkout_state(&fixture.repo), before);
    assert!(!fixture.common_dir().join("MERGE_HEAD").exists());

    let error = repo.apply(&checkout).expect_err("conflict");
    match &error {
        GitError::Conflicts { files } => assert_eq!(files, &vec!["src/a.txt".to_string()]),
        // Before git 2.40 (no `merge-tree --merge-base`), apply is a patch
        // that git refuses to apply.
        GitError::DoesNotApply { detail } if !git_at_least(2, 40) => {
            assert!(detail.contains("src/a.txt"), "{detail}")
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(checkout_state(&fixture.repo), before);
    let error = repo
        .apply_with_patch(&checkout)
        .expect_err("does not apply");
    assert!(matches!(error, GitError::DoesNotApply { .. }), "{error:?}");
    assert_eq!(checkout_state(&fixture.repo), before);
}

#[test]
fn merge_refuses_a_detached_head_and_files_in_the_way() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_session(&fixture, &repo, "claude-0");
    agent_commits(&checkout, ".env", "AGENT=1\n", "agent adds .env");

    // A user's untracked file where the session adds one.
    write(&fixture.repo, ".env", "SECRET=user\n");
    let before = checkout_state(&fixture.repo);
    let error = repo.merge(&checkout).expect_err("in the way");
    assert!(
        matches!(&error, GitError::WouldOverwrite { files } if files == &vec![".env".to_string()]),
        "{error:?}"
    );
    assert_eq!(checkout_state(&fixture.repo), before);
    let error = repo.apply(&checkout).expect_err("in the way");
    assert!(
        matches!(error, GitError::WouldOverwrite { .. }),
        "{error:?}"
    );
    assert_eq!(read(&fixture.repo, ".env"), "SECRET=user\n");
    std::fs::remove_file(fixture.repo.join(".env")).expect("rm");

    git(&fixture.repo, &["checkout", "-q", "--detach"]);
    let before = checkout_state(&fixture.repo);
    let error = repo.merge(&checkout).expect_err("detached");
    assert!(matches!(error, GitError::DetachedHead), "{error:?}");
    assert!(error.hint().is_some());
    assert_eq!(checkout_state(&fixture.repo), before);
}

#[test]
fn apply_brings_the_changes_uncommitted() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_session(&fixture, &repo, "claude-0");
    agent_commits(
        &checkout,
        "src/a.txt",
        "alpha\none\ntwo\nthree\nfour\n",
        "append",
    );
    agent_commits(&checkout, "added.txt", "added\n", "add");
    // The user moved on (another file) since the session started.
    write(&fixture.repo, "src/b.txt", "beta, by the user\n");
    git(&fixture.repo, &["commit", "-q", "-am", "user edit"]);
    let head = git(&fixture.repo, &["rev-parse", "HEAD"]);

    repo.apply(&checkout).expect("apply");
    assert_eq!(git(&fixture.repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        git(&fixture.repo, &["symbolic-ref", "--short", "HEAD"]),
        "main"
    );
    assert_eq!(
        read(&fixture.repo, "src/a.txt"),
        "alpha\none\ntwo\nthree\nfour\n"
    );
    assert_eq!(read(&fixture.repo, "added.txt"), "added\n");
    assert_eq!(read(&fixture.repo, "src/b.txt"), "beta, by the user\n");
    let status = git(&fixture.repo, &["status", "--porcelain"]);
    assert_eq!(status, "A  added.txt\nM  src/a.txt", "{status}");
    // Still unmerged: nothing was committed.
    assert!(repo.unmerged(&checkout).expect("unmerged"));

    // The patch route (gits older than 2.40) does the same.
    git(&fixture.repo, &["reset", "-q", "--hard"]);
    repo.apply_with_patch(&checkout).expect("apply as a patch");
    assert_eq!(git(&fixture.repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        git(&fixture.repo, &["status", "--porcelain"]),
        "A  added.txt\nM  src/a.txt"
    );
}

#[test]
fn unmerged_sees_commits_and_uncommitted_work() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_session(&fixture, &repo, "claude-0");
    assert!(!repo.unmerged(&checkout).expect("fresh"));
    write(&checkout.dir, "draft.txt", "draft\n");
    assert!(repo.unmerged(&checkout).expect("untracked work"));
    std::fs::remove_file(checkout.dir.join("draft.txt")).expect("rm");
    write(&checkout.dir, "ignored.log", "ignored\n");
    assert!(!repo.unmerged(&checkout).expect("ignored only"));
    agent_commits(&checkout, "done.txt", "done\n", "done");
    assert!(repo.unmerged(&checkout).expect("a commit"));
    repo.merge(&checkout).expect("merge");
    assert!(!repo.unmerged(&checkout).expect("merged"));
}

/// `git gc` and `git worktree prune` run in one session's worktree, as a
/// user (or an agent without a sandbox) would, keep the other sessions'
/// registrations. Then the same with the other worktrees' directories out
/// of sight, which is what a sandbox sees: only kennel's lock keeps
/// prune away, as the unlocked control worktree shows.
#[test]
fn gc_and_prune_in_a_worktree_keep_the_other_registrations() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let a = new_session(&fixture, &repo, "a-0");
    let b = new_session(&fixture, &repo, "b-0");
    let c = new_session(&fixture, &repo, "c-0");
    agent_commits(&b, "b.txt", "b\n", "b");
    agent_commits(&c, "c.txt", "c\n", "c");
    git(
        &fixture.repo,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "plain",
            &fixture.session_dir("plain").display().to_string(),
        ],
    );

    git(&a.dir, &["gc", "-q", "--prune=now"]);
    git(&a.dir, &["worktree", "prune", "-v"]);
    let paths = worktree_paths(&fixture.repo);
    for dir in [&a.dir, &b.dir, &c.dir, &fixture.session_dir("plain")] {
        assert!(paths.contains(dir), "{} lost: {paths:?}", dir.display());
    }
    assert_eq!(read(&b.dir, "b.txt"), "b\n");
    assert_eq!(git(&b.dir, &["log", "-1", "--format=%s"]), "b");

    // The sandbox's view: the other worktrees' directories are not there.
    let hidden = fixture.root().join("hidden");
    std::fs::create_dir(&hidden).expect("mkdir");
    let moved: Vec<(PathBuf, PathBuf)> = [&b.dir, &c.dir, &fixture.session_dir("plain")]
        .into_iter()
        .map(|dir| (dir.clone(), hidden.join(dir.file_name().unwrap())))
        .collect();
    for (from, to) in &moved {
        std::fs::rename(from, to).expect("hide");
    }
    git(&a.dir, &["worktree", "prune", "-v"]);
    git(&a.dir, &["gc", "-q"]);
    for (from, to) in &moved {
        std::fs::rename(to, from).expect("restore");
    }
    let paths = worktree_paths(&fixture.repo);
    assert!(
        paths.contains(&b.dir) && paths.contains(&c.dir),
        "{paths:?}"
    );
    assert!(
        !paths.contains(&fixture.session_dir("plain")),
        "the control (an unlocked worktree) should have been pruned: {paths:?}"
    );
    // And they still work, and still merge.
    assert_eq!(git(&c.dir, &["status", "--porcelain"]), "");
    assert!(matches!(
        repo.merge(&b).expect("merge"),
        MergeOutcome::FastForward { .. }
    ));
    repo.discard(&c).expect("discard");
    assert!(!worktree_paths(&fixture.repo).contains(&c.dir));
}

/// The session branch's ref directory is mounted into the sandbox: a `git
/// gc` on the host (which packs refs and deletes emptied ref directories)
/// must not delete it from under the sandbox.
#[test]
fn packing_refs_on_the_host_keeps_the_session_ref_directory() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_session(&fixture, &repo, "claude-0");
    let refs = fixture.common_dir().join("refs/heads/kennel");
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&refs).expect("refs dir"));
    git(&fixture.repo, &["pack-refs", "--all", "--prune"]);
    git(&fixture.repo, &["gc", "-q"]);
    assert!(!refs.join("claude-0").exists(), "the ref was packed");
    let meta = std::fs::metadata(&refs).expect("the directory survives");
    assert_eq!(std::os::unix::fs::MetadataExt::ino(&meta), inode);
    // git is fine with the keep directory.
    git(&fixture.repo, &["fsck", "--no-progress"]);
    // `git refs verify` exists since git 2.47.
    let verify = git_output(&fixture.repo, &["refs", "verify"]);
    if git_at_least(2, 47) {
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    // The session still commits (a loose ref again, beside the packed one).
    agent_commits(&checkout, "x.txt", "x\n", "after gc");
    assert_eq!(
        git(
            &fixture.repo,
            &["log", "-1", "--format=%s", "kennel/claude-0"]
        ),
        "after gc"
    );
}

/// The mount list: for every path git or an attacker cares about, the
/// innermost mount that covers it decides; this checks that decision.
#[test]
fn worktree_mounts_make_only_the_sessions_parts_writable() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_session(&fixture, &repo, "claude-0");
    let other = new_session(&fixture, &repo, "codex-0");
    let mounts = repo.mounts_for_worktree(&checkout).expect("mounts");
    let common = fixture.common_dir();
    let admin = checkout.admin_dir.clone().expect("admin");

    for mount in &mounts {
        assert_eq!(mount.host, mount.target, "same absolute path inside");
        assert!(
            mount.host.exists(),
            "{} must exist to be mounted",
            mount.host.display()
        );
    }
    // Parents before children.
    for (index, mount) in mounts.iter().enumerate() {
        for later in &mounts[index + 1..] {
            assert!(
                !mount.target.starts_with(&later.target) || mount.target == later.target,
                "{} is mounted before its parent {}",
                mount.target.display(),
                later.target.display()
            );
        }
    }
    // `None`: not visible in the sandbox at all.
    let access = |path: &Path| -> Option<bool> {
        mounts
            .iter()
            .filter(|mount| path.starts_with(&mount.target))
            .max_by_key(|mount| mount.target.components().count())
            .map(|mount| !mount.read_only)
    };
    let writable = [
        checkout.dir.join("src/a.txt"),
        checkout.dir.join("new-file"),
        common.join("objects/pack"),
        common.join("refs/heads/kennel/claude-0"),
        common.join("refs/heads/kennel/claude-0-experiment"),
        common.join("logs/refs/heads/kennel/claude-0"),
        admin.join("HEAD"),
        admin.join("index"),
        admin.join("logs/HEAD"),
    ];
    for path in &writable {
        assert_eq!(
            access(path),
            Some(true),
            "{} must be writable",
            path.display()
        );
    }
    let read_only = [
        checkout.dir.join(".git"),
        common.join("hooks/pre-commit"),
        common.join("config"),
        common.join("config.worktree"),
        common.join("HEAD"),
        common.join("index"),
        common.join("packed-refs"),
        common.join("info/attributes"),
        common.join("refs/heads/main"),
        common.join("refs/tags/v1"),
        common.join("refs/stash"),
        common.join("worktrees"),
        other.admin_dir.clone().unwrap().join("gitdir"),
        admin.join("gitdir"),
        admin.join("commondir"),
        admin.join("locked"),
        admin.join("config.worktree"),
    ];
    for path in &read_only {
        assert_eq!(
            access(path),
            Some(false),
            "{} must be read-only",
            path.display()
        );
    }
    for path in [&fixture.repo.join("src/a.txt"), &other.dir] {
        assert_eq!(access(path), None, "{} must not be visible", path.display());
    }
    // Clone mounts are checked in the clone tests; a clone is not a worktree.
    let clone = repo
        .create_clone(&fixture.session_dir("clone-0"), "kennel/clone-0")
        .expect("clone");
    assert!(repo.mounts_for_worktree(&clone).is_err());
}

/// A repository cloned with `--shared` reads its objects from another
/// one: the sandbox needs that object store too, read-only, or git fails
/// inside.
#[test]
fn a_borrowing_repository_gets_its_lender_mounted_read_only() {
    let fixture = Fixture::new();
    let borrower = fixture.root().join("borrower");
    let status = std::process::Command::new("git")
        .args(["clone", "-q", "--shared"])
        .arg(&fixture.repo)
        .arg(&borrower)
        .status()
        .expect("git clone");
    assert!(status.success());
    let repo = Repo::open(&borrower).expect("opens");
    let checkout = repo
        .create_worktree(&fixture.session_dir("claude-0"), "kennel/claude-0")
        .expect("worktree");
    let mounts = repo.mounts_for_worktree(&checkout).expect("mounts");
    let lender = fixture.common_dir().join("objects");
    let mount = mounts
        .iter()
        .find(|mount| mount.host == lender)
        .unwrap_or_else(|| panic!("no mount of {}: {mounts:#?}", lender.display()));
    assert!(mount.read_only);
}

#[test]
fn discard_refuses_while_the_user_is_on_the_session_branch() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = repo
        .create_clone(&fixture.session_dir("claude-0"), "kennel/claude-0")
        .expect("clone");
    git(&fixture.repo, &["switch", "-q", "kennel/claude-0"]);
    let error = repo.discard(&checkout).expect_err("checked out");
    assert!(
        matches!(&error, GitError::BranchCheckedOut { branch } if branch == "kennel/claude-0"),
        "{error:?}"
    );
    assert!(
        checkout.dir.join(".git").is_dir(),
        "the clone must still be there"
    );
    git(&fixture.repo, &["switch", "-q", "main"]);
    repo.discard(&checkout).expect("discard");
    assert!(!checkout.dir.exists());
    assert!(!branch_exists(&fixture.repo, "kennel/claude-0"));
}

/// Failures name the git command without kennel's fixed `-c` prefix.
#[test]
fn a_git_failure_names_the_command() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = repo
        .create_worktree(&fixture.session_dir("claude-0"), "kennel/claude-0")
        .expect("worktree");
    // The agent deleted its branch from inside: the diff cannot start.
    git(
        &fixture.repo,
        &["update-ref", "-d", "refs/heads/kennel/claude-0"],
    );
    let error = repo.diff(&checkout, false).expect_err("branch gone");
    assert!(matches!(error, GitError::BranchMissing { .. }), "{error:?}");
    let mut broken = checkout.clone();
    broken.base = "0000000000000000000000000000000000000001".into();
    git(&fixture.repo, &["branch", "kennel/claude-0", "main"]);
    let error = repo.diff(&broken, false).expect_err("bad base");
    let GitError::GitFailed { args, .. } = &error else {
        panic!("expected GitFailed, got {error:?}");
    };
    assert!(args.iter().any(|arg| arg == "diff"), "{args:?}");
    assert!(
        !args.iter().any(|arg| arg.contains("hooksPath")),
        "{args:?}"
    );
    assert!(!error.is_refusal());
}

/// `--dry-run` shows the checkout and mounts a session will get before
/// anything exists: planned equals made, in both modes, in a subdirectory
/// the sessions directory does not have yet, and with a `.kennel.toml` and
/// a directory the planned tree reports as they will be checked out.
#[test]
fn planned_checkout_is_the_one_made() {
    let fixture = Fixture::new();
    write(&fixture.repo, ".kennel.toml", "[defaults]\n");
    std::os::unix::fs::symlink("README.md", fixture.repo.join("link")).expect("symlink");
    git(&fixture.repo, &["add", "-A"]);
    git(&fixture.repo, &["commit", "-q", "-m", "config"]);
    let repo = fixture.open();
    for (mode, name) in [
        (CheckoutMode::Worktree, "planned-wt"),
        (CheckoutMode::Clone, "planned-clone"),
    ] {
        let dir = fixture.sessions.join("not-yet").join(name);
        let branch = format!("kennel/{name}");
        let planned = repo.plan_checkout(mode, &dir, &branch).expect("planned");
        let planned_mounts = repo.planned_mounts(&planned).expect("planned mounts");
        assert!(!dir.exists(), "planning made {}", dir.display());
        assert!(
            git(&fixture.repo, &["branch", "--list", &branch]).is_empty(),
            "planning made the branch"
        );
        let made = match mode {
            CheckoutMode::Worktree => repo.create_worktree(&dir, &branch),
            CheckoutMode::Clone => repo.create_clone(&dir, &branch),
        }
        .expect("made");
        assert_eq!(planned, made);
        let mounts = match mode {
            CheckoutMode::Worktree => repo.mounts_for_worktree(&made),
            CheckoutMode::Clone => repo.mounts_for_clone(&made),
        }
        .expect("mounts");
        assert_eq!(planned_mounts, mounts, "{mode:?}");
        // Made: planning it again describes it as it is.
        assert_eq!(repo.planned_mounts(&made).expect("again"), mounts);
        // A taken branch is refused as creating it would be.
        assert!(matches!(
            repo.plan_checkout(mode, &fixture.sessions.join("other"), &branch),
            Err(GitError::BranchExists { .. })
        ));
    }
    let head = repo.head_commit().to_string();
    let entry = |path: &str| repo.entry_in(&head, Path::new(path)).expect("ls-tree");
    assert_eq!(entry(""), Some(kennel_git::TreeEntry::Directory));
    assert_eq!(entry("src"), Some(kennel_git::TreeEntry::Directory));
    assert_eq!(entry(".kennel.toml"), Some(kennel_git::TreeEntry::File));
    assert_eq!(entry("link"), Some(kennel_git::TreeEntry::Symlink));
    assert_eq!(entry("src/none"), None);
    assert_eq!(entry("-x"), None);
}
