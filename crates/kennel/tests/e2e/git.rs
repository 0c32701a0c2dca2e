//! Git workspace modes (issue 6), on real git and the real engines:
//! worktree sessions in parallel, the review commands (`diff`, `merge`,
//! `discard`), what an agent can do to the user's repository from inside,
//! and clone mode with `sync`.

use std::path::Path;

use serde_json::Value;

use crate::harness::{Backend, Ctx};

/// Every session in `kennel ls --all --json` that has a branch.
fn sessions_with_branch(t: &Ctx) -> Vec<Value> {
    t.sessions()
        .into_iter()
        .filter(|session| session["branch"].is_string())
        .collect()
}

fn field(session: &Value, key: &str) -> String {
    session[key].as_str().unwrap_or_default().to_string()
}

/// The user's checkout as the tests compare it: its status and its branch.
fn user_view(t: &Ctx) -> (String, String) {
    (
        t.git(&["status", "--porcelain"]),
        t.git(&["rev-parse", "--abbrev-ref", "HEAD"]),
    )
}

/// Three agents in parallel in worktree mode, each committing its own
/// file (one also leaves a file uncommitted, which kennel commits on
/// exit): each `diff` shows only its own change; merging one works and the
/// others stay reviewable; `discard` leaves nothing behind; the user's
/// checkout and branch are untouched but for the merge; `git gc` and `git
/// worktree prune` inside a sandbox break nothing; a hook planted from
/// inside never runs on the host.
pub fn worktree_sessions(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "git_worktree_sessions") else {
        return;
    };
    let before = user_view(&t);
    let files = ["alpha", "beta", "gamma"];
    let outs: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .iter()
            .map(|file| {
                let t = &t;
                scope.spawn(move || {
                    let extra = if *file == "alpha" {
                        "; echo left > uncommitted-alpha.txt"
                    } else {
                        ""
                    };
                    let script = format!(
                        "set -e; echo {file} > {file}.txt; git add {file}.txt; \
                         git -c user.name=agent -c user.email=agent@sandbox.invalid commit -q -m 'agent {file}'{extra}; \
                         echo BRANCH=$(git rev-parse --abbrev-ref HEAD)"
                    );
                    t.kennel(&["run", "shell", "--mode", "worktree", "--", "sh", "-c", &script])
                        .run()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for out in &outs {
        out.assert_ok();
        assert!(
            out.expect_kv("BRANCH").starts_with("kennel/shell-"),
            "{out}"
        );
    }
    assert_eq!(user_view(&t), before, "the user's checkout changed");

    // Each session's diff shows its own change only.
    let sessions = sessions_with_branch(&t);
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    let mut by_file = std::collections::BTreeMap::new();
    for session in &sessions {
        assert_eq!(session["unmerged"], Value::Bool(true), "{session}");
        let name = field(session, "name");
        let out = t.kennel(&["diff", &name, "--stat"]).run();
        out.assert_ok();
        let shown: Vec<&str> = files
            .iter()
            .copied()
            .filter(|file| out.stdout.contains(&format!("{file}.txt")))
            .collect();
        assert_eq!(shown.len(), 1, "diff of {name} shows {shown:?}:\n{out}");
        assert_eq!(
            out.stdout.contains("uncommitted-alpha.txt"),
            shown[0] == "alpha",
            "{out}"
        );
        let patch = t.kennel(&["diff", &name]).run();
        patch.assert_ok();
        assert!(patch.stdout.contains(&format!("+{}", shown[0])), "{patch}");
        by_file.insert(shown[0], (name, field(session, "branch")));
    }
    // The uncommitted file was committed on exit, by kennel.
    let (alpha, alpha_branch) = by_file["alpha"].clone();
    let log = t.git(&["log", "-1", "--format=%an <%ae> %s", &alpha_branch]);
    assert!(
        log.contains("kennel <kennel@localhost> kennel: uncommitted work of session"),
        "{log}"
    );

    // A fourth sandbox tries git gc, worktree prune and planting a hook.
    let marker = t.scratch().join("hook-ran");
    let script = format!(
        "git gc -q >/dev/null 2>&1; echo GC=$?; git worktree prune >/dev/null 2>&1; echo PRUNE=$?; \
         hook=$(git rev-parse --git-common-dir)/hooks/post-merge; \
         if printf '#!/bin/sh\\ntouch {}\\n' > \"$hook\" 2>/dev/null; then chmod +x \"$hook\"; echo PLANTED=yes; else echo PLANTED=no; fi; \
         if echo '[core]' >> \"$(git rev-parse --git-common-dir)/config\" 2>/dev/null; then echo CONFIG=yes; else echo CONFIG=no; fi; \
         if echo 'gitdir: /tmp' > .git 2>/dev/null; then echo GITFILE=yes; else echo GITFILE=no; fi",
        marker.display()
    );
    let out = t
        .kennel(&[
            "run", "shell", "--mode", "worktree", "--", "sh", "-c", &script,
        ])
        .run();
    out.assert_ok();
    assert_eq!(out.expect_kv("PLANTED"), "no", "{out}");
    assert_eq!(out.expect_kv("CONFIG"), "no", "{out}");
    assert_eq!(out.expect_kv("GITFILE"), "no", "{out}");
    let worktrees = t.git(&["worktree", "list", "--porcelain"]);
    for (_, branch) in by_file.values() {
        assert!(
            worktrees.contains(&format!("branch refs/heads/{branch}\n")),
            "{branch} lost its registration:\n{worktrees}"
        );
    }
    t.git(&["fsck", "--no-progress"]);
    // The host's own prune (which cannot see the sandbox's view) keeps them.
    t.git(&["worktree", "prune"]);
    assert_eq!(t.git(&["worktree", "list", "--porcelain"]), worktrees);

    // Merge one: the user's branch gets its file; the others stay.
    t.kennel(&["merge", &alpha]).run().assert_ok();
    assert!(t.ws.join("alpha.txt").is_file());
    assert!(t.ws.join("uncommitted-alpha.txt").is_file());
    assert!(!t.ws.join("beta.txt").exists());
    assert_eq!(
        user_view(&t),
        before,
        "merge left the checkout dirty or moved it"
    );
    assert!(
        !marker.exists(),
        "a hook planted in the sandbox ran on the host"
    );
    for file in ["beta", "gamma"] {
        let (name, _) = &by_file[file];
        let out = t.kennel(&["diff", name, "--stat"]).run();
        out.assert_ok();
        assert!(out.stdout.contains(&format!("{file}.txt")), "{out}");
        assert!(!out.stdout.contains("alpha.txt"), "{out}");
    }
    // `ls`: the merged session has nothing unmerged, the others do (and
    // the fourth, which changed nothing, has nothing either).
    for session in sessions_with_branch(&t) {
        let name = field(&session, "name");
        let unmerged = by_file
            .iter()
            .any(|(file, (other, _))| *other == name && *file != "alpha");
        assert_eq!(session["unmerged"], Value::Bool(unmerged), "{session}");
    }

    // Discard: without a terminal and without --force, a usage error.
    let (beta, beta_branch) = by_file["beta"].clone();
    let out = t.kennel(&["discard", &beta]).run();
    out.assert_code(2);
    assert!(out.stderr.contains("--force"), "{out}");
    let beta_dir = t
        .data_home
        .join("kennel/checkouts")
        .read_dir()
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|dir| dir.join("beta.txt").is_file())
        .expect("beta's checkout");
    t.kennel(&["discard", "--force", &beta]).run().assert_ok();
    assert!(!beta_dir.exists());
    assert_eq!(t.git(&["branch", "--list", &beta_branch]).trim(), "");
    assert!(
        !t.git(&["worktree", "list"])
            .contains(&beta_dir.display().to_string()),
        "the worktree is still registered"
    );
    let out = t.kennel(&["diff", &beta]).run();
    out.assert_code(2);
    assert!(out.stderr.contains("discarded"), "{out}");
    // The last one still diffs fine.
    let (gamma, _) = &by_file["gamma"];
    t.kennel(&["diff", gamma]).run().assert_ok();
    assert_eq!(user_view(&t), before);
    assert_eq!(t.git(&["rev-parse", "--abbrev-ref", "HEAD"]).trim(), "main");
}

/// `kennel merge` refuses a dirty user checkout (exit 2) and changes
/// nothing; a direct-mode session has nothing to review.
pub fn merge_refusal(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "git_merge_refusal") else {
        return;
    };
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--mode",
            "worktree",
            "--branch",
            "kennel/refusal",
            "--",
            "sh",
            "-c",
            "echo agent > README.md",
        ])
        .run();
    out.assert_ok();
    let session = field(&sessions_with_branch(&t)[0], "name");
    std::fs::write(t.ws.join("README.md"), "the user's own edit\n").unwrap();
    let head = t.git(&["rev-parse", "HEAD"]);
    let status = t.git(&["status", "--porcelain"]);
    let out = t.kennel(&["merge", &session]).run();
    out.assert_code(2);
    assert!(out.stderr.contains("hint"), "{out}");
    assert_eq!(t.git(&["rev-parse", "HEAD"]), head);
    assert_eq!(t.git(&["status", "--porcelain"]), status);
    assert_eq!(
        std::fs::read_to_string(t.ws.join("README.md")).unwrap(),
        "the user's own edit\n"
    );
    // With the user's edit gone, `apply` brings the change staged, and
    // HEAD stays.
    t.git(&["checkout", "--", "README.md"]);
    t.kennel(&["apply", &session]).run().assert_ok();
    assert_eq!(t.git(&["rev-parse", "HEAD"]), head);
    assert_eq!(
        std::fs::read_to_string(t.ws.join("README.md")).unwrap(),
        "agent\n"
    );
    assert_eq!(
        t.git(&["diff", "--cached", "--name-only"]).trim(),
        "README.md"
    );
    t.git(&["reset", "-q", "--hard"]);

    // A bad branch name: a usage error, the session failed, nothing left.
    let checkouts = || {
        std::fs::read_dir(t.data_home.join("kennel/checkouts"))
            .map(|entries| entries.count())
            .unwrap_or(0)
    };
    let before = checkouts();
    let out = t
        .kennel(&[
            "run", "shell", "--mode", "worktree", "--branch", "a..b", "--", "true",
        ])
        .run();
    out.assert_code(2);
    assert!(out.stderr.contains("hint"), "{out}");
    assert_eq!(checkouts(), before);
    assert_eq!(t.git(&["branch", "--list", "a*"]).trim(), "");

    // A direct-mode session: a clear usage error.
    t.sh("true").run().assert_ok();
    let direct = t
        .sessions()
        .iter()
        .find(|s| !s["branch"].is_string())
        .map(|s| field(s, "name"))
        .expect("the direct session");
    let out = t.kennel(&["diff", &direct]).run();
    out.assert_code(2);
    assert!(out.stderr.contains("direct mode"), "{out}");
}

/// Clone mode: the host repository's `.git` is not writable from inside
/// (not even there), the agent commits in its clone, and `kennel sync`
/// brings the branch to the host.
pub fn clone_sync(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "git_clone_sync") else {
        return;
    };
    // The branch arrives on `sync` (not already when the run ends).
    t.write_config("commit_on_exit = false", "");
    let host_git = t.ws.join(".git");
    let script = format!(
        "set -u; for p in {git} {git}/objects {git}/hooks {git}/refs/heads; do \
           if touch \"$p/probe\" 2>/dev/null; then echo WROTE=$p; fi; done; echo PROBED=1; \
         test -e {git} && echo HOSTGIT=visible || echo HOSTGIT=absent; \
         echo clone > clone.txt && git add clone.txt && \
         git -c user.name=agent -c user.email=agent@sandbox.invalid commit -q -m 'agent clone' && \
         echo COMMIT=$(git rev-parse HEAD)",
        git = host_git.display()
    );
    let out = t
        .kennel(&["run", "shell", "--mode", "clone", "--", "sh", "-c", &script])
        .run();
    out.assert_ok();
    assert_eq!(out.expect_kv("PROBED"), "1", "{out}");
    assert!(
        out.kv("WROTE").is_none(),
        "wrote into the host's .git: {out}"
    );
    assert_eq!(out.expect_kv("HOSTGIT"), "absent", "{out}");
    let commit = out.expect_kv("COMMIT");
    assert!(!Path::new(&host_git).join("probe").exists());
    let sessions = sessions_with_branch(&t);
    assert_eq!(sessions.len(), 1);
    let (name, branch) = (field(&sessions[0], "name"), field(&sessions[0], "branch"));
    assert_ne!(t.git(&["rev-parse", &branch]).trim(), commit);
    t.kennel(&["sync", &name]).run().assert_ok();
    assert_eq!(t.git(&["rev-parse", &branch]).trim(), commit);
    let out = t.kennel(&["diff", &name, "--stat"]).run();
    out.assert_ok();
    assert!(out.stdout.contains("clone.txt"), "{out}");
    t.kennel(&["discard", "--force", &name]).run().assert_ok();
    assert_eq!(t.git(&["branch", "--list", &branch]).trim(), "");
}

/// `kennel start --mode worktree`: a persistent session in its own
/// worktree; its diff shows its uncommitted work while it runs, `discard`
/// refuses a running session, `stop` commits what it left, and `merge`
/// brings it to the user's branch.
pub fn worktree_start(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "git_worktree_start") else {
        return;
    };
    let name = format!("wt-{}", crate::harness::unique());
    let out = t
        .start_offline(
            &name,
            &["--mode", "worktree"],
            &["sh", "-c", "echo started > started.txt; sleep 300"],
        )
        .run();
    out.assert_ok();
    // The checkout is where the session's Plan says.
    let plan = t.kennel(&["inspect", &name]).run();
    plan.assert_ok();
    let dir = plan.json()["git"]["dir"]
        .as_str()
        .expect("a checkout")
        .to_string();
    assert!(
        dir.starts_with(&t.data_home.join("kennel/checkouts").display().to_string()),
        "{plan}"
    );
    let file = Path::new(&dir).join("started.txt");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !file.is_file() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never wrote {}",
            file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = t.kennel(&["diff", &name, "--stat"]).run();
    out.assert_ok();
    assert!(out.stdout.contains("started.txt"), "{out}");
    let out = t.kennel(&["discard", "--force", &name]).run();
    out.assert_code(2);
    assert!(file.is_file());
    t.kennel(&["stop", "--timeout", "2", &name])
        .run()
        .assert_ok();
    let log = t.git(&["log", "-1", "--format=%an %s", "kennel/shell-0"]);
    assert!(
        log.contains(&format!(
            "kennel kennel: uncommitted work of session {name}"
        )),
        "{log}"
    );
    t.kennel(&["merge", &name]).run().assert_ok();
    assert!(t.ws.join("started.txt").is_file());
    t.kennel(&["rm", &name]).run();
    t.remove_containers();
}

/// With kennel's data dir under `$HOME` (the default,
/// `~/.local/share/kennel`), the checkout's mount point inside the agent's
/// home is made by kennel as the user: nothing in the agent's home on the
/// host ends up owned by someone else (a rootful engine would make it as
/// root, and the agent could no longer write `~/.local`).
pub fn checkout_under_home(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "git_checkout_under_home") else {
        return;
    };
    let data = t
        .user
        .home
        .join(format!(".kennel-e2e-data-{}", crate::harness::unique()));
    let data_text = data.display().to_string();
    let env = [("XDG_DATA_HOME", data_text.as_str())];
    let out = t
        .kennel_env(
            &[
                "run",
                "shell",
                "--mode",
                "worktree",
                "--",
                "sh",
                "-c",
                "echo x > x.txt",
            ],
            &env,
        )
        .run();
    let mut foreign = Vec::new();
    let mut stack = vec![data.join("kennel/homes")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if std::os::unix::fs::MetadataExt::uid(&meta) != t.user.uid {
                foreign.push(entry.path());
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    let listed = t.kennel_env(&["ls", "--all", "--json"], &env).run();
    let name = listed.json()["sessions"][0]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let discarded = t.kennel_env(&["discard", "--force", &name], &env).run();
    let _ = std::fs::remove_dir_all(&data);
    out.assert_ok();
    discarded.assert_ok();
    assert!(foreign.is_empty(), "not the user's: {foreign:?}");
}

/// Direct mode: the agent can create files in the user's `.git` (git needs
/// it writable), among them `commondir`, which would make the user's next
/// `git` read the configuration of a directory the agent chose. When the
/// session ends kennel moves such a file aside and says so: after a run, and
/// after `kennel stop` of a persistent session.
pub fn direct_redirect_quarantined(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "git_direct_redirect") else {
        return;
    };
    let git_dir = t.ws.join(".git");
    let out = t
        .sh("mkdir -p /tmp/evil && printf '/tmp/evil\\n' > .git/commondir && echo planted")
        .run();
    out.assert_ok();
    assert!(out.stdout.contains("planted"), "{out}");
    assert!(out.stderr.contains("WARNING"), "{out}");
    assert!(out.stderr.contains("commondir"), "{out}");
    assert!(!git_dir.join("commondir").exists(), "{out}");
    let aside: Vec<_> = std::fs::read_dir(&git_dir)
        .unwrap()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("commondir.kennel-quarantine-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "{out}");
    // The user's git works as before.
    assert_eq!(t.git(&["rev-parse", "--abbrev-ref", "HEAD"]).trim(), "main");

    let name = format!("planter-{}", crate::harness::unique());
    t.start_offline(
        &name,
        &[],
        &[
            "sh",
            "-c",
            "printf '/tmp/evil\\n' > .git/commondir; sleep 600",
        ],
    )
    .run()
    .assert_ok();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !git_dir.join("commondir").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent never wrote commondir"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = t.kennel(&["stop", &name, "--timeout", "2"]).run();
    out.assert_ok();
    assert!(out.stderr.contains("WARNING"), "{out}");
    assert!(!git_dir.join("commondir").exists(), "{out}");
    assert_eq!(t.git(&["rev-parse", "--abbrev-ref", "HEAD"]).trim(), "main");
    t.kennel(&["rm", &name]).run().assert_ok();
}

/// `kennel run --resume` of a worktree session continues its checkout:
/// the same directory and branch, what the agent committed and what kennel
/// committed on exit, without `--mode` again. The earlier session hands
/// the checkout over (its review commands point to the new one); naming
/// it again gets a fresh checkout, and `--branch` for another branch is
/// refused before anything is made.
pub fn resume_continues_checkout(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "git_resume_checkout") else {
        return;
    };
    let user_before = user_view(&t);
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--mode",
            "worktree",
            "--",
            "sh",
            "-c",
            "echo one > one.txt; echo DIR=$(pwd)",
        ])
        .run();
    out.assert_ok();
    let first_dir = out.expect_kv("DIR");
    let sessions = sessions_with_branch(&t);
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let first = field(&sessions[0], "name");
    assert_eq!(field(&sessions[0], "branch"), "kennel/shell-0");

    // Continued: no --mode, same checkout, the earlier work is there.
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--resume",
            "--",
            "sh",
            "-c",
            "echo DIR=$(pwd); echo ONE=$(cat one.txt); echo two > two.txt; \
             echo BRANCH=$(git rev-parse --abbrev-ref HEAD)",
        ])
        .run();
    out.assert_ok();
    assert_eq!(out.expect_kv("DIR"), first_dir, "{out}");
    assert_eq!(out.expect_kv("ONE"), "one", "{out}");
    assert_eq!(out.expect_kv("BRANCH"), "kennel/shell-0", "{out}");
    assert!(out.stderr.contains(&format!("of session {first}")), "{out}");
    let sessions = sessions_with_branch(&t);
    assert_eq!(
        sessions.len(),
        1,
        "one session has the checkout: {sessions:?}"
    );
    let second = field(&sessions[0], "name");
    assert_ne!(second, first);
    let out = t.kennel(&["diff", &second, "--stat"]).run();
    out.assert_ok();
    assert!(
        out.stdout.contains("one.txt") && out.stdout.contains("two.txt"),
        "{out}"
    );
    let out = t.kennel(&["diff", &first]).run();
    out.assert_code(2);
    assert!(
        out.stderr
            .contains(&format!("review it as session {second}")),
        "{out}"
    );

    // --branch for another branch: refused, nothing made.
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--resume",
            "--branch",
            "elsewhere",
            "--",
            "true",
        ])
        .run();
    out.assert_code(2);
    assert_eq!(t.git(&["branch", "--list", "elsewhere"]).trim(), "");
    assert_eq!(sessions_with_branch(&t).len(), 1);

    // The first session again, by name: its checkout went on, so this one
    // gets a new checkout (in worktree mode still), from the user's HEAD.
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--resume",
            &first,
            "--",
            "sh",
            "-c",
            "echo DIR=$(pwd); test -e one.txt && echo ONE=there || echo ONE=absent",
        ])
        .run();
    out.assert_ok();
    assert_ne!(out.expect_kv("DIR"), first_dir, "{out}");
    assert_eq!(out.expect_kv("ONE"), "absent", "{out}");
    assert_eq!(sessions_with_branch(&t).len(), 2);
    assert_eq!(user_view(&t), user_before, "the user's checkout changed");
    t.remove_containers();
}
