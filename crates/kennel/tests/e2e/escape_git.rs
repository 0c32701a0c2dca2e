//! Escape probes for kennel's host-side git (issue 11), on every backend:
//! each one does inside a worktree session what a hostile agent would,
//! then the host-side step that would act on it (the end of the run,
//! `kennel ls --json`, `kennel diff`, the next session, `kennel merge`),
//! and asserts that nothing ran on the host (no marker in the host's
//! `/tmp`, which no sandbox sees), no host secret was read, and no
//! replaced object went unnoticed.

use std::path::PathBuf;

use serde_json::Value;

use crate::harness::{Backend, Ctx, unique};

/// The sessions of `kennel ls --all --json` that have a branch.
fn sessions_with_branch(t: &Ctx) -> Vec<Value> {
    t.sessions()
        .into_iter()
        .filter(|session| session["branch"].is_string())
        .collect()
}

fn name_of(session: &Value) -> String {
    session["name"].as_str().unwrap_or_default().to_string()
}

/// Markers in the host's `/tmp` that a program run by the host would leave.
struct Markers {
    prefix: PathBuf,
}

impl Markers {
    fn new(b: Backend, what: &str) -> Markers {
        Markers {
            prefix: PathBuf::from(format!("/tmp/kennel-e2e-{what}-{}-{}", b.name(), unique())),
        }
    }

    /// The markers present now.
    fn found(&self) -> Vec<PathBuf> {
        let dir = self.prefix.parent().expect("/tmp");
        let stem = self
            .prefix
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|entry| entry.file_name().to_string_lossy().starts_with(&stem))
                    .map(|entry| entry.path())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    #[track_caller]
    fn assert_none(&self, after: &str) {
        let found = self.found();
        for path in &found {
            let _ = std::fs::remove_file(path);
        }
        assert!(
            found.is_empty(),
            "after {after}, the host ran the agent's program: {found:?}"
        );
    }
}

/// Class 1: a nested repository committed as a gitlink (and a second one
/// left untracked), whose own config defines a clean/smudge filter and an
/// fsmonitor that its attributes select. kennel's snapshot at the end of
/// the run, `kennel ls --json`, `kennel diff` and `kennel merge` must never
/// start git inside it.
pub fn nested_repository_filters(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_git_filters") else {
        return;
    };
    let markers = Markers::new(b, "escape-git-filters");
    let script = format!(
        r#"set -e
g() {{ git -c user.name=agent -c user.email=agent@sandbox.invalid "$@"; }}
for name in nested embedded; do
  mkdir "$name"; cd "$name"; g init -q
  echo inner > file.txt; echo '* filter=evil' > .gitattributes
  g add -A; g commit -q -m inner
  git config filter.evil.clean "touch {prefix}-$name-clean; cat"
  git config filter.evil.smudge "touch {prefix}-$name-smudge; cat"
  git config core.fsmonitor "touch {prefix}-$name-fsmonitor; false"
  cd ..
done
g add nested; g commit -q -m 'a nested repository'
sleep 1
echo changed > nested/file.txt; echo changed > embedded/file.txt
echo work > agent.txt
echo PLANTED=yes
"#,
        prefix = markers.prefix.display()
    );
    let out = t
        .kennel(&[
            "run", "shell", "--mode", "worktree", "--", "sh", "-c", &script,
        ])
        .run();
    out.assert_ok();
    assert_eq!(out.expect_kv("PLANTED"), "yes", "{out}");
    markers.assert_none("the end of the run (commit of the uncommitted work)");

    let sessions = sessions_with_branch(&t);
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let name = name_of(&sessions[0]);
    t.kennel(&["ls", "--json"]).run().assert_ok();
    markers.assert_none("kennel ls --json");
    let diff = t.kennel(&["diff", &name]).run();
    diff.assert_ok();
    assert!(diff.stdout.contains("agent.txt"), "{diff}");
    markers.assert_none("kennel diff");
    t.kennel(&["merge", &name]).run().assert_ok();
    markers.assert_none("kennel merge");
    // Merged: now `kennel ls` snapshots the checkout to find uncommitted
    // work (the nested repositories' files are still changed).
    t.kennel(&["ls", "--json"]).run().assert_ok();
    markers.assert_none("kennel ls --json of a merged session");
    assert_eq!(
        std::fs::read_to_string(t.ws.join("agent.txt")).unwrap_or_default(),
        "work\n"
    );
    // The user's own git afterwards: the gitlinks are empty directories.
    t.git(&["status", "--porcelain"]);
    markers.assert_none("the user's git status");
    t.kennel(&["discard", "--force", &name]).run();
}

/// A host directory the sandbox must never see: a `.ssh` with a key.
fn host_secret(t: &Ctx) -> (PathBuf, String) {
    let dir = t.scratch().join("home/.ssh");
    std::fs::create_dir_all(&dir).unwrap();
    let secret = format!("SECRET-{}", unique());
    std::fs::write(dir.join("id_e2e"), format!("{secret}\n")).unwrap();
    t.user.chown(&t.scratch());
    (dir, secret)
}

fn common_dir(t: &Ctx) -> PathBuf {
    t.ws.join(".git")
}

/// Class 2: the agent appends a host directory to
/// `objects/info/alternates`, so that the next worktree session of the
/// repository mounts it. `objects/info` is read-only inside; and what the
/// next session mounts comes from what kennel recorded before any agent
/// ran, and only object stores: a line written there from outside (an
/// older kennel, a direct-mode session) does not mount `~/.ssh` either.
pub fn alternates_mount(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_git_alternates") else {
        return;
    };
    let (ssh, secret) = host_secret(&t);
    let script = format!(
        r#"common=$(git rev-parse --git-common-dir)
if (echo '{ssh}' >> "$common/objects/info/alternates") 2>/dev/null; then echo WROTE=yes; else echo WROTE=no; fi
if (echo x > "$common/objects/info/commit-graph") 2>/dev/null; then echo GRAPH=yes; else echo GRAPH=no; fi
if (mv "$common/objects/info" "$common/objects/info-moved") 2>/dev/null; then echo MOVED=yes; else echo MOVED=no; fi
echo DONE=yes
"#,
        ssh = ssh.display()
    );
    let out = t
        .kennel(&[
            "run", "shell", "--mode", "worktree", "--", "sh", "-c", &script,
        ])
        .run();
    out.assert_ok();
    assert_eq!(out.expect_kv("DONE"), "yes", "{out}");
    assert_eq!(
        out.expect_kv("WROTE"),
        "no",
        "objects/info/alternates is writable\n{out}"
    );
    assert_eq!(
        out.expect_kv("GRAPH"),
        "no",
        "objects/info is writable\n{out}"
    );
    assert_eq!(
        out.expect_kv("MOVED"),
        "no",
        "objects/info can be moved\n{out}"
    );

    // Written from outside a worktree sandbox (as a direct-mode session
    // could): the next worktree session still does not get it mounted.
    let alternates = common_dir(&t).join("objects/info/alternates");
    let mut text = std::fs::read_to_string(&alternates).unwrap_or_default();
    text.push_str(&format!("{}\n", ssh.display()));
    std::fs::write(&alternates, text).unwrap();
    t.user.chown(&alternates);
    let probe = format!(
        r#"if cat '{key}' 2>/dev/null; then echo READ=yes; else echo READ=no; fi
if ls '{ssh}' >/dev/null 2>&1; then echo SEEN=yes; else echo SEEN=no; fi
"#,
        key = ssh.join("id_e2e").display(),
        ssh = ssh.display()
    );
    let out = t
        .kennel(&[
            "run", "shell", "--mode", "worktree", "--", "sh", "-c", &probe,
        ])
        .run();
    out.assert_ok();
    assert!(
        !out.stdout.contains(&secret),
        "the host's key was read:\n{out}"
    );
    assert_eq!(out.expect_kv("READ"), "no", "{out}");
    assert_eq!(out.expect_kv("SEEN"), "no", "{out}");
    let plan = t
        .kennel(&["run", "shell", "--mode", "worktree", "--dry-run"])
        .run();
    assert!(
        !plan.stdout.contains(&ssh.display().to_string()),
        "the Plan mounts {}:\n{plan}",
        ssh.display()
    );
    std::fs::remove_file(&alternates).unwrap();
}

/// Class 7: the agent replaces the loose object of the user's README with
/// content of its own (and backdates it): `git show main:README.md` then
/// shows the agent's text under the user's commit id. The end of the run
/// warns, and `kennel merge` refuses (exit 2) and merges nothing.
pub fn replaced_object(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_git_objects") else {
        return;
    };
    let readme_before = t.git(&["show", "main:README.md"]);
    let head_before = t.git(&["rev-parse", "HEAD"]);
    let script = r#"set -e
g() { git -c user.name=agent -c user.email=agent@sandbox.invalid "$@"; }
echo work > agent.txt; g add agent.txt; g commit -q -m work
common=$(git rev-parse --git-common-dir)
oid=$(git rev-parse HEAD:README.md)
target="$common/objects/$(echo $oid | cut -c1-2)/$(echo $oid | cut -c3-)"
fake=$(echo 'rm -rf ~ # says the README' | git hash-object -w --stdin)
source="$common/objects/$(echo $fake | cut -c1-2)/$(echo $fake | cut -c3-)"
cp "$source" "$target.tmp"; mv -f "$target.tmp" "$target"
touch -d '2001-01-01 00:00:00' "$target"
echo REPLACED=yes
"#;
    let out = t
        .kennel(&[
            "run", "shell", "--mode", "worktree", "--", "sh", "-c", script,
        ])
        .run();
    out.assert_ok();
    assert_eq!(out.expect_kv("REPLACED"), "yes", "{out}");
    // The attack itself works (git never re-hashes what it reads) ...
    let shown = t.git(&["show", "main:README.md"]);
    assert_ne!(shown, readme_before, "the object was not replaced");
    // ... and kennel says so when the session ends ...
    assert!(
        out.stderr.contains("tampered"),
        "no warning at the end of the run:\n{out}"
    );
    // ... and refuses to merge it.
    let name = name_of(&sessions_with_branch(&t)[0]);
    let merge = t.kennel(&["merge", &name]).run();
    merge.assert_code(2);
    assert!(merge.stderr.contains("tampered"), "{merge}");
    assert_eq!(t.git(&["rev-parse", "HEAD"]), head_before);
    assert!(!t.ws.join("agent.txt").exists());
    let apply = t.kennel(&["apply", &name]).run();
    apply.assert_code(2);
    t.kennel(&["discard", "--force", &name]).run();
}
