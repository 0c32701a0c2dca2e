//! Direct mode, tried as an attacker would (issue 11, classes 3 and 4, and
//! the persistent-session audit): the agent works in the user's own
//! checkout and plants git control files that the user's next plain `git`
//! on the host would read or run, or links that the next session's
//! read-only mounts would follow on the host. Each probe does the attack
//! inside the sandbox, then the host-side step that would trigger it (the
//! user's `git status` or `git commit`, the next session, the end of a
//! persistent session), and asserts that no marker appeared in the host's
//! `/tmp` and that no host secret was read.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{Backend, Ctx, unique};

/// A path in the host's `/tmp` that only a program run on the host by the
/// user's git would create (the agent's scripts never name it as a target
/// they write themselves).
fn marker(t: &Ctx) -> PathBuf {
    let path = PathBuf::from(format!("/tmp/kennel-e2e-{}-{}", t.name, unique()));
    let _ = std::fs::remove_file(&path);
    path
}

/// Config text that makes git run `touch MARKER` on the next `git status`.
fn fsmonitor_config(marker: &Path) -> String {
    format!(
        "[core]\\n\\tfsmonitor = \"touch {}; false\"\\n",
        marker.display()
    )
}

/// Shell: append `text` (printf format) to `path`; prints `KEY=ok` or
/// `KEY=denied`.
fn append(key: &str, path: &str, text: &str) -> String {
    format!(
        "if printf '{text}' >> {path} 2>/dev/null; then echo {key}=ok; else echo {key}=denied; fi\n"
    )
}

/// A repository with one commit at `dir`, made by the test user.
fn make_repo(t: &Ctx, dir: &Path) {
    let dir = dir.display().to_string();
    t.git(&["init", "-q", "-b", "main", &dir]);
    t.git(&["-C", &dir, "commit", "-q", "--allow-empty", "-m", "init"]);
}

#[track_caller]
fn assert_no_marker(marker: &Path, context: &dyn std::fmt::Display) {
    let exists = marker.exists();
    let _ = std::fs::remove_file(marker);
    assert!(
        !exists,
        "the agent's program ran on the host ({} exists)\n{context}",
        marker.display()
    );
}

/// The user's `git status` (as the test user, in `dir`); its output.
fn user_git_status(t: &Ctx, dir: &Path) -> String {
    let dir = dir.display().to_string();
    let out = t.as_user(&["git", "-C", &dir, "status"]).run();
    out.to_string()
}

/// Class 3: a submodule's `.git/modules/<name>/config` and `hooks/`, nested
/// submodules included, its checkout's `.git` file, and an existing
/// `.git/config.worktree` (sparse checkout users have one) are read-only in
/// direct mode; the user's next
/// `git status` runs nothing the agent wrote.
pub fn submodule_and_worktree_config(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_direct_submodule") else {
        return;
    };
    let scratch = t.scratch();
    let (lib, inner) = (scratch.join("lib"), scratch.join("inner"));
    make_repo(&t, &inner);
    make_repo(&t, &lib);
    let file = "protocol.file.allow=always";
    let lib_s = lib.display().to_string();
    let inner_s = inner.display().to_string();
    t.git(&[
        "-c",
        file,
        "-C",
        &lib_s,
        "submodule",
        "-q",
        "add",
        &inner_s,
        "inner",
    ]);
    t.git(&["-C", &lib_s, "commit", "-q", "-m", "inner"]);
    t.git(&["-c", file, "submodule", "-q", "add", &lib_s, "lib"]);
    t.git(&[
        "-c",
        file,
        "submodule",
        "-q",
        "update",
        "--init",
        "--recursive",
    ]);
    t.git(&["commit", "-q", "-m", "lib"]);
    t.git(&["config", "extensions.worktreeConfig", "true"]);
    t.git(&["config", "--worktree", "core.sparseCheckout", "false"]);
    assert!(t.ws.join(".git/modules/lib/modules/inner/config").is_file());
    assert!(t.ws.join(".git/config.worktree").is_file());

    let mark = marker(&t);
    let config = fsmonitor_config(&mark);
    let hook = format!("#!/bin/sh\\ntouch {}\\n", mark.display());
    let mut probe = String::new();
    probe += &append("SUB_CONFIG", ".git/modules/lib/config", &config);
    probe += &append(
        "NESTED_CONFIG",
        ".git/modules/lib/modules/inner/config",
        &config,
    );
    probe += &append("WORKTREE_CONFIG", ".git/config.worktree", &config);
    probe += &format!(
        "if printf '{hook}' > .git/modules/lib/hooks/post-checkout 2>/dev/null && chmod +x .git/modules/lib/hooks/post-checkout; then echo SUB_HOOK=ok; else echo SUB_HOOK=denied; fi\n"
    );
    probe += &format!(
        "git init -q evil && printf '{config}' >> evil/.git/config\n\
         if printf 'gitdir: ../evil/.git\\n' > lib/.git 2>/dev/null; then echo SUB_GIT_FILE=ok; else echo SUB_GIT_FILE=denied; fi\n"
    );
    probe += "if mv .git/modules .git/modules.old 2>/dev/null; then echo MODULES_MOVE=ok; else echo MODULES_MOVE=denied; fi\n";
    probe += "if mv .git/modules/lib .git/modules/lib.old 2>/dev/null; then echo LIB_MOVE=ok; else echo LIB_MOVE=denied; fi\n";
    let out = t.sh(&probe).run();
    out.assert_ok();
    let status = user_git_status(&t, &t.ws);
    let lib_checkout = t
        .as_user(&["git", "-C", "lib", "checkout", "-q", "HEAD"])
        .run();
    assert_no_marker(&mark, &format!("{out}\n{status}\n{lib_checkout}"));
    for key in [
        "SUB_CONFIG",
        "NESTED_CONFIG",
        "WORKTREE_CONFIG",
        "SUB_HOOK",
        "SUB_GIT_FILE",
        "MODULES_MOVE",
        "LIB_MOVE",
    ] {
        assert_eq!(out.expect_kv(key), "denied", "{key}\n{out}");
    }
}

/// Class 3: the admin files of the user's other worktrees
/// (`.git/worktrees/<wt>/commondir`, `gitdir`) are read-only: the agent
/// cannot point the other worktree's git at a config of its own.
pub fn worktree_admin_files(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_direct_wt_admin") else {
        return;
    };
    let other = t.scratch().join("other");
    t.git(&["worktree", "add", "-q", &other.display().to_string()]);
    let admin = t.ws.join(".git/worktrees/other");
    assert!(admin.join("commondir").is_file());
    let mark = marker(&t);
    let evil = t.ws.join("evil");
    let probe = format!(
        "mkdir -p evil && cp -r .git/refs .git/objects .git/HEAD evil/ 2>/dev/null; \
         printf '{config}' > evil/config\n\
         if printf '{evil}\\n' > .git/worktrees/other/commondir 2>/dev/null; then echo COMMONDIR=ok; else echo COMMONDIR=denied; fi\n\
         if printf '{evil}/.git\\n' > .git/worktrees/other/gitdir 2>/dev/null; then echo GITDIR=ok; else echo GITDIR=denied; fi\n\
         {wtconfig}",
        config = fsmonitor_config(&mark),
        evil = evil.display(),
        wtconfig = append(
            "WT_CONFIG",
            ".git/worktrees/other/config.worktree",
            &fsmonitor_config(&mark)
        ),
    );
    let out = t.sh(&probe).run();
    out.assert_ok();
    let status = user_git_status(&t, &other);
    assert_no_marker(&mark, &format!("{out}\n{status}"));
    assert_eq!(out.expect_kv("COMMONDIR"), "denied", "{out}");
    assert_eq!(out.expect_kv("GITDIR"), "denied", "{out}");
}

/// Class 3: when the workspace's `.git` is a file (a linked worktree), the
/// file itself is read-only, so the agent cannot point its `gitdir:` at a
/// repository of its own; the real git dir, outside the workspace, is not
/// writable from the sandbox either.
pub fn git_file_redirect(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_direct_git_file") else {
        return;
    };
    let linked = t.scratch().join("linked");
    t.git(&["worktree", "add", "-q", &linked.display().to_string()]);
    assert!(linked.join(".git").is_file());
    let real = t.ws.join(".git");
    let mark = marker(&t);
    let probe = format!(
        "git init -q evil && printf '{config}' >> evil/.git/config\n\
         if printf 'gitdir: ./evil/.git\\n' > .git 2>/dev/null; then echo GIT_FILE=ok; else echo GIT_FILE=denied; fi\n\
         if mv .git .git.old 2>/dev/null; then mv .git.old .git; echo GIT_FILE_MOVE=ok; else echo GIT_FILE_MOVE=denied; fi\n\
         {real_config}\
         {common_config}",
        config = fsmonitor_config(&mark),
        real_config = append(
            "REAL_CONFIG",
            &real
                .join("worktrees/linked/config.worktree")
                .display()
                .to_string(),
            &fsmonitor_config(&mark)
        ),
        common_config = append(
            "COMMON_CONFIG",
            &real.join("config").display().to_string(),
            &fsmonitor_config(&mark)
        ),
    );
    let linked_s = linked.display().to_string();
    let out = t
        .kennel(&["run", "shell", "-w", &linked_s, "--", "sh", "-c", &probe])
        .cwd(&linked)
        .run();
    out.assert_ok();
    let status = user_git_status(&t, &linked);
    assert_no_marker(&mark, &format!("{out}\n{status}"));
    for key in ["GIT_FILE", "GIT_FILE_MOVE", "REAL_CONFIG", "COMMON_CONFIG"] {
        assert_eq!(out.expect_kv(key), "denied", "{key}\n{out}");
    }
}

/// Class 3: programs the user's config names inside the workspace: a
/// git-ignored `core.hooksPath` (husky's `.husky/_`, not even there yet)
/// and a `core.fsmonitor` script, are read-only; the user's next `git
/// commit` / `git status` runs the user's versions.
pub fn config_named_programs(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_direct_hooks_path") else {
        return;
    };
    std::fs::write(t.ws.join(".gitignore"), ".husky/_\n").unwrap();
    std::fs::create_dir_all(t.ws.join("tools")).unwrap();
    std::fs::write(t.ws.join("tools/fsmonitor"), "#!/bin/sh\nexit 1\n").unwrap();
    t.user.chown(&t.ws);
    t.as_user(&["chmod", "+x", "tools/fsmonitor"])
        .run()
        .assert_ok();
    t.git(&["add", ".gitignore", "tools/fsmonitor"]);
    t.git(&["commit", "-q", "-m", "tools"]);
    t.git(&["config", "core.hooksPath", ".husky/_"]);
    t.git(&["config", "core.fsmonitor", "tools/fsmonitor"]);
    let mark = marker(&t);
    let script = format!("#!/bin/sh\\ntouch {}\\nexit 1\\n", mark.display());
    let probe = format!(
        "mkdir -p .husky/_ 2>/dev/null\n\
         if printf '{script}' > .husky/_/pre-commit 2>/dev/null && chmod +x .husky/_/pre-commit; then echo HOOK=ok; else echo HOOK=denied; fi\n\
         if printf '{script}' > tools/fsmonitor 2>/dev/null; then echo FSMONITOR=ok; else echo FSMONITOR=denied; fi\n\
         if mv .husky .husky.old 2>/dev/null && mkdir -p .husky/_ && printf '{script}' > .husky/_/pre-commit && chmod +x .husky/_/pre-commit; then echo HOOK_DIR_MOVE=ok; else echo HOOK_DIR_MOVE=denied; fi\n"
    );
    let out = t.sh(&probe).run();
    out.assert_ok();
    let status = user_git_status(&t, &t.ws);
    let commit = t
        .as_user(&[
            "git",
            "-c",
            "user.name=u",
            "-c",
            "user.email=u@u",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "user",
        ])
        .run();
    assert_no_marker(&mark, &format!("{out}\n{status}\n{commit}"));
    assert_eq!(out.expect_kv("HOOK"), "denied", "{out}");
    assert_eq!(out.expect_kv("FSMONITOR"), "denied", "{out}");
    assert_eq!(out.expect_kv("HOOK_DIR_MOVE"), "denied", "{out}");
}

/// Class 4: the agent cannot replace `.git` (it is pinned); a `.git` whose
/// `hooks` is a symlink to a fake `~/.ssh` (as an older kennel, or anything
/// else, could have left it) makes the next session refuse to start (125)
/// instead of mounting the secret into the sandbox; a `.git` that is not the
/// one kennel saw last is refused until `--accept-git-dir`.
pub fn replaced_git_dir_refused(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_direct_replaced_git") else {
        return;
    };
    // The user's secret: a fake ~/.ssh in the test user's real home.
    let secret_dir = t.user.home.join(format!(".kennel-e2e-ssh-{}", unique()));
    std::fs::create_dir_all(&secret_dir).unwrap();
    let secret = format!("SECRET-{}", unique());
    std::fs::write(secret_dir.join("id_ed25519"), &secret).unwrap();
    t.user.chown(&secret_dir);
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(secret_dir.clone());

    // A first session records the .git kennel sees.
    t.sh("true").run().assert_ok();

    // What the agent would have left (made on the host, as the user).
    let git = t.ws.join(".git");
    let real = t.ws.join(".git.real");
    std::fs::rename(&git, &real).unwrap();
    std::fs::create_dir(&git).unwrap();
    t.user.chown(&git);
    for entry in ["HEAD", "objects", "refs", "config"] {
        let out = t
            .as_user(&[
                "cp",
                "-r",
                &real.join(entry).display().to_string(),
                &git.display().to_string(),
            ])
            .run();
        out.assert_ok();
    }
    std::os::unix::fs::symlink(&secret_dir, git.join("hooks")).unwrap();
    t.user.chown(&git);
    let read = "cat .git/hooks/id_ed25519 2>/dev/null; echo READ_DONE";
    let out = t.sh(read).run();
    assert!(
        !out.stdout.contains(&secret),
        "the next session read the host's secret through .git/hooks\n{out}"
    );
    out.assert_code(125);
    assert!(out.stderr.contains("symbolic link"), "{out}");
    assert!(out.stderr.contains(".git/hooks"), "{out}");

    // Without the link: still not the .git kennel saw last.
    std::fs::remove_file(git.join("hooks")).unwrap();
    std::fs::create_dir(git.join("hooks")).unwrap();
    t.user.chown(&git);
    let out = t.sh("echo RAN=yes").run();
    out.assert_code(125);
    assert!(out.stderr.contains("--accept-git-dir"), "{out}");
    assert!(out.kv("RAN").is_none(), "{out}");
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--accept-git-dir",
            "--",
            "sh",
            "-c",
            "echo RAN=yes",
        ])
        .run();
    out.assert_ok();
    assert_eq!(out.expect_kv("RAN"), "yes");
    t.sh("echo RAN=yes").run().assert_ok();

    // And the agent cannot make that state from inside: .git is pinned.
    std::fs::remove_dir_all(&git).unwrap();
    std::fs::rename(&real, &git).unwrap();
    t.kennel(&["run", "shell", "--accept-git-dir", "--", "true"])
        .run()
        .assert_ok();
    let probe = format!(
        "if mv .git .git.real 2>/dev/null; then mkdir .git && cp -r .git.real/HEAD .git.real/objects .git.real/refs .git/ && cp .git.real/config .git/config; ln -s {secret} .git/hooks; echo REPLACE=ok; else echo REPLACE=denied; fi\n",
        secret = secret_dir.display()
    );
    let out = t.sh(&probe).run();
    out.assert_ok();
    assert_eq!(out.expect_kv("REPLACE"), "denied", "{out}");
}

/// The persistent-session audit: what the agent created in `.git` (a
/// `commondir` that sends the user's git to the agent's config) is moved
/// aside when the session exits by itself (found by `kennel ls`), and when
/// it is stopped although the agent backdated the file's mtime; the user's
/// `git status` runs nothing.
pub fn persistent_audit(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_direct_persistent") else {
        return;
    };
    let git_dir = t.ws.join(".git");
    let mark = marker(&t);
    let evil = t.ws.join("evil");
    // A common dir of the agent's: the user's objects and refs, its config.
    let plant = format!(
        "mkdir -p {evil} && cp -r .git/objects .git/refs .git/HEAD {evil}/ && printf '{config}' > {evil}/config && printf '{evil}\\n' > .git/commondir && touch -d '2001-01-01' .git/commondir",
        evil = evil.display(),
        config = fsmonitor_config(&mark),
    );

    // 1. The agent plants and exits by itself.
    let name = format!("selfexit-{}", unique());
    t.start_offline(&name, &[], &["sh", "-c", &plant])
        .run()
        .assert_ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut listing = String::new();
    let mut ended_at = None;
    loop {
        let out = t.kennel(&["ls", "--all", "--json"]).run();
        out.assert_ok();
        listing += &out.stderr;
        let ended = out.json()["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|session| session["name"] == name.as_str())
            .is_some_and(|session| session["state"] != "running" && session["state"] != "created");
        if ended {
            let since = *ended_at.get_or_insert_with(Instant::now);
            if !git_dir.join("commondir").exists() || since.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the session never ended\n{listing}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The user's next git, after a kennel command has seen the session end.
    let status = user_git_status(&t, &t.ws);
    assert_no_marker(&mark, &format!("{listing}\n{status}"));
    assert!(
        !git_dir.join("commondir").exists(),
        "the planted commondir was never moved aside\n{listing}"
    );
    assert!(
        listing.contains("commondir"),
        "the user was told\n{listing}"
    );
    t.kennel(&["rm", &name]).run().assert_ok();
    let _ = std::fs::remove_dir_all(&evil);

    // 2. Backdated, then stopped.
    let name = format!("backdated-{}", unique());
    t.start_offline(&name, &[], &["sh", "-c", &format!("{plant}; sleep 600")])
        .run()
        .assert_ok();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !git_dir.join("commondir").exists() {
        assert!(Instant::now() < deadline, "the agent never wrote commondir");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let out = t.kennel(&["stop", &name, "--timeout", "2"]).run();
    out.assert_ok();
    let status = user_git_status(&t, &t.ws);
    assert_no_marker(&mark, &format!("{out}\n{status}"));
    assert!(!git_dir.join("commondir").exists(), "{out}");
    assert!(out.stderr.contains("commondir"), "{out}");
    t.kennel(&["rm", &name]).run().assert_ok();
}

/// Class 3: a repository the agent makes in the working tree and adds to
/// the index as a gitlink: the user's `git status` would recurse into it
/// and run its config's `core.fsmonitor`. Nothing in the working tree can
/// be read-only in direct mode, so the end-of-session audit (gitlinks'
/// `.git` are control files) moves its `.git` aside and says so.
pub fn embedded_repository(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_direct_embedded") else {
        return;
    };
    let mark = marker(&t);
    let probe = format!(
        "set -e; git init -q sub; git -C sub -c user.name=a -c user.email=a@a commit -q --allow-empty -m s; \
         printf '{config}' >> sub/.git/config; \
         git -c core.fsmonitor=false add sub 2>/dev/null; echo ADDED=yes",
        config = fsmonitor_config(&mark)
    );
    let out = t.sh(&probe).run();
    out.assert_ok();
    assert_eq!(out.expect_kv("ADDED"), "yes", "{out}");
    let status = user_git_status(&t, &t.ws);
    assert_no_marker(&mark, &format!("{out}\n{status}"));
    assert!(!t.ws.join("sub/.git").exists(), "{out}");
    assert!(out.stderr.contains("sub/.git"), "the user was told\n{out}");
}
