//! What a hostile agent leaves in its checkout or in the shared object
//! store, and the host-side operations that must not act on it (issue 11):
//!
//! - class 1: nothing of the agent's runs on the host through kennel's own
//!   git: no filter driver, neither one a nested repository defines nor one
//!   of the user's that the agent's attributes select;
//! - class 2: what a worktree session mounts is decided from what was
//!   recorded before any agent ran, never from `objects/info/alternates`
//!   as an agent left it;
//! - class 7: an object the agent replaced in the shared object store is
//!   noticed, and `merge` / `apply` refuse.

mod common;

use std::path::Path;

use common::*;
use kennel_git::{Checkout, CheckoutMode, GitError, Repo};

fn new_checkout(fixture: &Fixture, repo: &Repo, mode: CheckoutMode, name: &str) -> Checkout {
    let dir = fixture.session_dir(name);
    let branch = format!("kennel/{name}");
    match mode {
        CheckoutMode::Worktree => repo.create_worktree(&dir, &branch),
        CheckoutMode::Clone => repo.create_clone(&dir, &branch),
    }
    .expect("checkout created")
}

fn executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A shell command that leaves `<markers>/<name>` and passes its input
/// through (a working filter).
fn marker_command(markers: &Path, name: &str) -> String {
    let script = markers.join(format!("{name}.sh"));
    executable(
        &script,
        &format!("#!/bin/sh\ntouch '{}/{name}'\ncat\n", markers.display()),
    );
    script.display().to_string()
}

/// The user's own repository defines a filter (as `git lfs install` or
/// git-crypt do); the agent's attributes will select it.
fn user_defines_a_filter(fixture: &Fixture, markers: &Path) {
    let command = marker_command(markers, "users-filter");
    git(
        &fixture.repo,
        &["config", "filter.userfilter.clean", &command],
    );
    git(
        &fixture.repo,
        &["config", "filter.userfilter.smudge", &command],
    );
}

/// What the agent does inside its checkout: a nested repository whose own
/// config defines a filter that its attributes select, committed as a
/// gitlink; a second one left untracked (an embedded repository); and
/// attributes in the checkout that select the user's own filter.
fn agent_plants_filters(checkout: &Path, markers: &Path) {
    for (name, commit) in [("nested", true), ("embedded", false)] {
        let sub = checkout.join(name);
        std::fs::create_dir_all(&sub).expect("mkdir");
        git(&sub, &["init", "-q", "-b", "main"]);
        write(&sub, ".gitattributes", "* filter=evil\n");
        write(&sub, "file.txt", "inner\n");
        git(&sub, &["add", "-A"]);
        git(&sub, &["commit", "-q", "-m", "inner"]);
        // Defined only now, so that the agent's own commit above ran no
        // filter: whatever runs it later is the host.
        let command = marker_command(markers, &format!("{name}-filter"));
        git(&sub, &["config", "filter.evil.clean", &command]);
        git(&sub, &["config", "filter.evil.smudge", &command]);
        git(&sub, &["config", "filter.evil.process", &command]);
        git(&sub, &["config", "core.fsmonitor", &command]);
        if commit {
            git(checkout, &["add", name]);
            git(checkout, &["commit", "-q", "-m", "a nested repository"]);
        }
        // A file whose stat no longer matches its index entry: a status
        // inside would re-read it through the filter.
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&sub, "file.txt", "inner, changed\n");
    }
    write(checkout, ".gitattributes", "*.txt filter=userfilter\n");
    write(checkout, "agent.txt", "agent's work\n");
}

fn assert_no_markers(dir: &Path, after: &str) {
    let found: Vec<String> = markers(dir)
        .into_iter()
        .filter(|name| !name.ends_with(".sh"))
        .collect();
    assert!(found.is_empty(), "after {after}, the host ran: {found:?}");
}

fn filters_never_run(mode: CheckoutMode) {
    let fixture = Fixture::new();
    let markers = fixture.root().join("markers");
    std::fs::create_dir_all(&markers).expect("mkdir");
    user_defines_a_filter(&fixture, &markers);
    let repo = fixture.open();
    // Nothing has selected the user's filter yet.
    assert_no_markers(&markers, "set-up");

    let checkout = new_checkout(&fixture, &repo, mode, "claude-0");
    agent_plants_filters(&checkout.dir, &markers);
    assert_no_markers(&markers, "the agent's own work");

    assert!(repo.unmerged(&checkout).expect("unmerged"));
    assert_no_markers(&markers, "unmerged (kennel ls)");
    let diff = String::from_utf8(repo.diff(&checkout, false).expect("diff")).expect("utf-8");
    assert_no_markers(&markers, "diff");
    assert!(diff.contains("+agent's work"), "{diff}");
    assert!(diff.contains("Subproject commit"), "{diff}");
    let commit = checkout
        .commit_all("kennel: uncommitted work", &agent_identity())
        .expect("commit_all")
        .expect("there was uncommitted work");
    assert_no_markers(&markers, "commit_all (end of run)");
    // The work is recorded as it is: files byte for byte, nested
    // repositories as gitlinks (never their contents).
    let tree = git(&fixture.repo, &["ls-tree", "-r", &commit]);
    assert!(
        tree.lines()
            .any(|line| line.starts_with("160000 commit") && line.ends_with("\tnested")),
        "{tree}"
    );
    assert!(
        tree.lines()
            .any(|line| line.starts_with("160000 commit") && line.ends_with("\tembedded")),
        "{tree}"
    );
    assert!(!tree.contains("file.txt"), "{tree}");
    assert_eq!(
        git(&fixture.repo, &["show", &format!("{commit}:agent.txt")]),
        "agent's work"
    );
    let _ = repo.diff(&checkout, true).expect("diff --stat");
    let _ = repo.unmerged(&checkout).expect("unmerged");
    assert_no_markers(&markers, "a second diff and unmerged");

    // apply, then merge (the same changes), into the user's checkout.
    repo.apply(&checkout).expect("apply");
    assert_no_markers(&markers, "apply");
    // (The test's own git, not kennel's: without the user's filter.)
    let no_filter = [
        "-c",
        "filter.userfilter.smudge=",
        "-c",
        "filter.userfilter.clean=",
    ];
    git(
        &fixture.repo,
        &[&no_filter[..], &["reset", "-q", "--hard"]].concat(),
    );
    git(
        &fixture.repo,
        &[&no_filter[..], &["clean", "-q", "-fd"]].concat(),
    );
    assert_no_markers(&markers, "the test's own reset");
    repo.merge(&checkout).expect("merge");
    assert_no_markers(&markers, "merge");
    assert_eq!(read(&fixture.repo, "agent.txt"), "agent's work\n");
    // Merged; then the agent changes more: `kennel ls` snapshots the
    // checkout to see it.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&checkout.dir, "nested/file.txt", "inner, changed again\n");
    write(&checkout.dir, "more.txt", "more\n");
    assert!(repo.unmerged(&checkout).expect("unmerged"));
    assert_no_markers(&markers, "unmerged of a merged session (kennel ls)");
    repo.discard(&checkout).expect("discard");
    assert_no_markers(&markers, "discard");
}

#[test]
fn worktree_no_filter_of_a_nested_repository_or_the_users_runs_on_agent_files() {
    filters_never_run(CheckoutMode::Worktree);
}

#[test]
fn clone_no_filter_of_a_nested_repository_or_the_users_runs_on_agent_files() {
    filters_never_run(CheckoutMode::Clone);
}

/// A home with a secret, and a runtime directory with a socket (as
/// `/run/user/<uid>` has), beside the repository.
fn host_secrets(
    fixture: &Fixture,
) -> (
    std::path::PathBuf,
    std::path::PathBuf,
    std::os::unix::net::UnixListener,
) {
    let ssh = fixture.root().join("home/.ssh");
    write(&ssh, "id_ed25519", "SECRET KEY\n");
    let run = fixture.root().join("run-user");
    // Laid out like an object store, but with a socket in it.
    std::fs::create_dir_all(run.join("pack")).expect("mkdir");
    std::fs::create_dir_all(run.join("info")).expect("mkdir");
    let listener = std::os::unix::net::UnixListener::bind(run.join("info/bus")).expect("socket");
    (ssh, run, listener)
}

#[test]
fn alternates_an_agent_wrote_are_never_mounted() {
    let fixture = Fixture::new();
    let (ssh, run, _listener) = host_secrets(&fixture);
    let repo = fixture.open();
    let checkout = new_checkout(&fixture, &repo, CheckoutMode::Worktree, "claude-0");
    let common = fixture.common_dir();
    let before = repo.mounts_for_worktree(&checkout).expect("mounts");
    // objects/info is mounted read-only, so that the agent cannot write
    // alternates in the first place (sandbox_view.rs tries it for real).
    assert!(
        before
            .iter()
            .any(|mount| mount.host == common.join("objects/info") && mount.read_only),
        "{before:#?}"
    );

    // What an agent would write there if it could (an older kennel left it
    // writable; a direct-mode session still can).
    let alternates = common.join("objects/info/alternates");
    std::fs::write(
        &alternates,
        format!("{}\n{}\n../../../home/.ssh\n", ssh.display(), run.display()),
    )
    .expect("write alternates");

    // The session's next start mounts what was recorded at its creation.
    let again = repo.mounts_for_worktree(&checkout).expect("mounts");
    assert_eq!(again, before);
    // A new session records lenders from the file, but only object stores.
    let other = new_checkout(&fixture, &repo, CheckoutMode::Worktree, "codex-0");
    assert!(other.alternates.is_empty(), "{:?}", other.alternates);
    let mounts = repo.mounts_for_worktree(&other).expect("mounts");
    for mount in &mounts {
        assert!(
            !mount.host.starts_with(&ssh) && !mount.host.starts_with(&run),
            "{} is mounted: {mounts:#?}",
            mount.host.display()
        );
    }
}

#[test]
fn a_symlink_planted_where_a_ref_directory_goes_is_refused_not_followed() {
    let fixture = Fixture::new();
    let (ssh, _run, _listener) = host_secrets(&fixture);
    let repo = fixture.open();
    // A branch outside a directory: refs/heads is writable to its agent.
    let first = repo
        .create_worktree(&fixture.session_dir("foo"), "foo")
        .expect("worktree");
    let common = fixture.common_dir();
    std::os::unix::fs::symlink(&ssh, common.join("refs/heads/kennel")).expect("symlink");
    std::os::unix::fs::symlink(&ssh, common.join("logs/refs/heads/kennel")).expect("symlink");
    let listing = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let secrets_before = listing(&ssh);
    let error = repo
        .create_worktree(&fixture.session_dir("claude-0"), "kennel/claude-0")
        .expect_err("refused");
    assert!(matches!(error, GitError::Tampered { .. }), "{error:?}");
    assert_eq!(
        listing(&ssh),
        secrets_before,
        "kennel's git wrote into the link"
    );
    // The earlier session is left as it was.
    repo.mounts_for_worktree(&first).expect("mounts");
}

#[test]
fn clone_mounts_never_lead_through_a_symlink() {
    let fixture = Fixture::new();
    let (ssh, _run, _listener) = host_secrets(&fixture);
    let repo = fixture.open();
    let checkout = new_checkout(&fixture, &repo, CheckoutMode::Clone, "claude-0");
    repo.mounts_for_clone(&checkout).expect("mounts");
    let config = checkout.dir.join(".git/config");
    std::fs::remove_file(&config).expect("rm");
    std::os::unix::fs::symlink(ssh.join("id_ed25519"), &config).expect("symlink");
    let error = repo.mounts_for_clone(&checkout).expect_err("refused");
    assert!(matches!(error, GitError::Tampered { .. }), "{error:?}");
}

/// The loose object file of `oid` in `common`.
fn loose_path(common: &Path, oid: &str) -> std::path::PathBuf {
    common.join("objects").join(&oid[..2]).join(&oid[2..])
}

/// Gives `path` an old modification time, as `touch -d` would: the one
/// file time an unprivileged process can forge.
fn backdate(path: &Path) {
    let status = std::process::Command::new("touch")
        .args(["-h", "-d", "2001-01-01 00:00:00"])
        .arg(path)
        .status()
        .expect("touch");
    assert!(status.success());
}

#[test]
fn a_replaced_loose_object_is_noticed_and_merge_and_apply_refuse() {
    let fixture = Fixture::new();
    let common = fixture.common_dir();
    // An object already in the store before the session (from an earlier
    // session, say): its file's times are old, and the agent will rename
    // it over the user's README.
    let planted = std::process::Command::new("git")
        .arg("-C")
        .arg(&fixture.repo)
        .args(["hash-object", "-w", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"rm -rf ~ # the agent's README\n")?;
            child.wait_with_output()
        })
        .expect("hash-object");
    let planted = String::from_utf8(planted.stdout)
        .unwrap()
        .trim()
        .to_string();
    // Older than the check's slack.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let repo = fixture.open();
    let checkout = new_checkout(&fixture, &repo, CheckoutMode::Worktree, "claude-0");
    write(&checkout.dir, "agent.txt", "honest work\n");
    git(&checkout.dir, &["add", "-A"]);
    git(&checkout.dir, &["commit", "-q", "-m", "honest"]);
    // New objects are fine.
    assert_eq!(checkout.verify_objects().expect("verify"), vec![]);

    let readme = git(&fixture.repo, &["rev-parse", "main:README.md"]);
    let target = loose_path(&common, &readme);
    std::fs::rename(loose_path(&common, &planted), &target).expect("rename over");
    backdate(&target);
    // The attack works: the user's commit shows the agent's content, and
    // git status is clean.
    assert_eq!(
        git(&fixture.repo, &["show", "main:README.md"]),
        "rm -rf ~ # the agent's README"
    );
    assert_eq!(git(&fixture.repo, &["status", "--porcelain"]), "");

    let problems = repo.verify_objects().expect("verify");
    assert!(
        problems.iter().any(|problem| problem.path == target),
        "{problems:?}"
    );
    let before = checkout_state(&fixture.repo);
    let error = repo.merge(&checkout).expect_err("merge refuses");
    assert!(
        matches!(error, GitError::ObjectsTampered { .. }),
        "{error:?}"
    );
    assert!(error.is_refusal() && error.hint().is_some());
    let error = repo.apply(&checkout).expect_err("apply refuses");
    assert!(
        matches!(error, GitError::ObjectsTampered { .. }),
        "{error:?}"
    );
    assert_eq!(checkout_state(&fixture.repo), before);
    // Still there on the next look: the check does not move on past it.
    assert!(!checkout.verify_objects().expect("verify").is_empty());
}

#[test]
fn a_forged_pack_is_noticed_and_merge_refuses() {
    let fixture = Fixture::new();
    git(&fixture.repo, &["gc", "-q"]);
    let common = fixture.common_dir();
    let repo = fixture.open();
    let checkout = new_checkout(&fixture, &repo, CheckoutMode::Worktree, "claude-0");
    assert_eq!(repo.verify_objects().expect("verify"), vec![]);

    // The agent repacks every object of the user's pack but the README,
    // with a blob of its own instead, and edits the new pack's index to
    // say that this blob is the user's README (git never re-hashes what it
    // reads); then it puts that pack in place of the user's.
    let readme = git(&fixture.repo, &["rev-parse", "main:README.md"]);
    write(&checkout.dir, "fake", "# not your project\n");
    let fake = git(&checkout.dir, &["hash-object", "-w", "fake"]);
    let pack_dir = common.join("objects/pack");
    let original: Vec<std::path::PathBuf> = std::fs::read_dir(&pack_dir)
        .expect("pack dir")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "idx"))
        .collect();
    assert_eq!(original.len(), 1, "{original:?}");
    let original = original[0].with_extension("");
    let oids_output = std::process::Command::new("git")
        .arg("-C")
        .arg(&fixture.repo)
        .arg("show-index")
        .stdin(std::fs::File::open(original.with_extension("idx")).expect("idx"))
        .output()
        .expect("show-index");
    let mut wanted: Vec<String> = String::from_utf8(oids_output.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1).map(str::to_string))
        .filter(|oid| *oid != readme)
        .collect();
    wanted.push(fake.clone());
    let scratch = fixture.root().join("agent-pack");
    std::fs::create_dir_all(&scratch).expect("mkdir");
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(&checkout.dir)
        .args(["pack-objects", "-q", "--no-reuse-delta", "--depth=0"])
        .arg(scratch.join("p"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{}\n", wanted.join("\n")).as_bytes())?;
            child.wait_with_output()
        })
        .expect("pack-objects");
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let idx = std::fs::read(scratch.join(format!("p-{hash}.idx"))).expect("idx");
    let hex_bytes = |hex: &str| -> Vec<u8> {
        (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    };
    // idx v2: 8 bytes of header, 256 fan-out counts, then N names, N CRCs,
    // N offsets (small packs need no large offsets), then the trailer.
    let count = u32::from_be_bytes(idx[8 + 4 * 255..8 + 4 * 256].try_into().unwrap()) as usize;
    let names = 8 + 1024;
    let crcs = names + 20 * count;
    let offsets = crcs + 4 * count;
    let trailer = offsets + 4 * count;
    let mut entries: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = (0..count)
        .map(|i| {
            (
                idx[names + 20 * i..names + 20 * i + 20].to_vec(),
                idx[crcs + 4 * i..crcs + 4 * i + 4].to_vec(),
                idx[offsets + 4 * i..offsets + 4 * i + 4].to_vec(),
            )
        })
        .collect();
    let (fake_bytes, readme_bytes) = (hex_bytes(&fake), hex_bytes(&readme));
    for entry in &mut entries {
        if entry.0 == fake_bytes {
            entry.0 = readme_bytes.clone();
        }
    }
    entries.sort();
    let mut forged = idx[..8].to_vec();
    for byte in 0..256usize {
        let below = entries
            .iter()
            .filter(|entry| entry.0[0] as usize <= byte)
            .count() as u32;
        forged.extend_from_slice(&below.to_be_bytes());
    }
    for part in 0..3 {
        for entry in &entries {
            forged.extend_from_slice(match part {
                0 => &entry.0,
                1 => &entry.1,
                _ => &entry.2,
            });
        }
    }
    forged.extend_from_slice(&idx[trailer..]);
    for ext in ["pack", "idx"] {
        let path = original.with_extension(ext);
        let _ = std::fs::remove_file(&path);
    }
    std::fs::copy(
        scratch.join(format!("p-{hash}.pack")),
        original.with_extension("pack"),
    )
    .expect("copy pack");
    std::fs::write(original.with_extension("idx"), &forged).expect("write idx");
    backdate(&original.with_extension("pack"));
    backdate(&original.with_extension("idx"));
    // The attack works: the user's commit shows the agent's content.
    assert_eq!(
        git(&fixture.repo, &["show", "main:README.md"]),
        "# not your project"
    );
    let name = original.file_name().unwrap().to_string_lossy().into_owned();

    let problems = repo.verify_objects().expect("verify");
    assert!(
        problems
            .iter()
            .any(|problem| problem.path == pack_dir.join(format!("{name}.pack"))),
        "{problems:?}"
    );
    let error = repo.merge(&checkout).expect_err("merge refuses");
    assert!(
        matches!(error, GitError::ObjectsTampered { .. }),
        "{error:?}"
    );
}

#[test]
fn a_clean_object_store_passes_after_the_users_own_gc() {
    let fixture = Fixture::new();
    let repo = fixture.open();
    let checkout = new_checkout(&fixture, &repo, CheckoutMode::Worktree, "claude-0");
    write(&checkout.dir, "agent.txt", "work\n");
    git(&checkout.dir, &["add", "-A"]);
    git(&checkout.dir, &["commit", "-q", "-m", "work"]);
    git(
        &fixture.repo,
        &["-c", "gc.writeCommitGraph=true", "gc", "-q"],
    );
    git(&fixture.repo, &["commit-graph", "write", "--reachable"]);
    assert_eq!(repo.verify_objects().expect("verify"), vec![]);
    assert!(repo.merge(&checkout).is_ok());
}
