//! Issue 11, classes 5 and 6: what an agent writes in one repository must
//! not reach another one. Each probe does what an attacker in the sandbox
//! would (plant a line in `~/.bashrc`, a file in the agent's home, a
//! `.kennel.toml` that links to a file the user trusted elsewhere) and then
//! the host-side step that would trigger it (a session on another
//! repository, `kennel run`, `kennel config trust`).

use std::path::{Path, PathBuf};

use crate::harness::{Backend, Ctx, unique};

/// The agent home the Plan of `kennel run AGENT -w WORKSPACE --dry-run`
/// mounts as `$HOME`.
#[track_caller]
pub fn agent_home(t: &Ctx, agent: &str, workspace: &Path) -> PathBuf {
    let ws = workspace.display().to_string();
    let out = t.kennel(&["run", agent, "-w", &ws, "--dry-run"]).run();
    out.assert_ok();
    let plan = out.json();
    plan["mounts"]
        .as_array()
        .and_then(|mounts| {
            mounts
                .iter()
                .find(|mount| mount["purpose"] == "agent-home")
                .and_then(|mount| mount["source"].as_str())
        })
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no agent home in the Plan\n{out}"))
}

/// `shell` with a login file, as a real agent's catalog entry has.
const SHELL_WITH_LOGIN: &str = "[agents.shell]\nlogin = [\"~/.fake-agent/creds.json\"]\n";

/// A second repository of the test user, outside the test's workspace.
pub(crate) fn other_repository(t: &Ctx, name: &str) -> PathBuf {
    let dir = t.scratch().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    t.user.chown(&dir);
    let text = dir.display().to_string();
    t.as_user(&["git", "init", "-q", &text]).run().assert_ok();
    dir
}

/// Class 5: a session on repository A plants a line in `~/.bashrc` (one
/// that would copy B's files where A's next session reads them, and leave a
/// marker) and a file in its home; a session of the same agent on
/// repository B sees neither, and its bash does not run the line. A login
/// made in A's session (the agent's `login` files) is there in B's.
pub fn cross_repository(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_homes_cross_repository") else {
        return;
    };
    t.write_config("", SHELL_WITH_LOGIN);
    let repo_b = other_repository(&t, "repository-b");
    let home_a = agent_home(&t, "shell", &t.ws);
    let home_b = agent_home(&t, "shell", &repo_b);
    assert_ne!(
        home_a, home_b,
        "two repositories' sessions mount the same agent home"
    );
    for home in [&home_a, &home_b] {
        assert!(
            home.starts_with(t.data_home.join("kennel/repo-homes")),
            "--dry-run must show the repository's own home: {}",
            home.display()
        );
    }

    let token = format!("login-{}", unique());
    let planted = format!("planted-{}", unique());
    let attack = format!(
        "echo 'cp -r \"$PWD\" ~/stolen-from-next-repo 2>/dev/null; echo ran > \"$PWD/bashrc-ran\"' >> ~/.bashrc; \
         echo {planted} > ~/planted; \
         mkdir -p ~/.fake-agent && echo {token} > ~/.fake-agent/creds.json; echo planted-ok"
    );
    let out = t.kennel(&["run", "shell", "--", "sh", "-c", &attack]).run();
    out.assert_ok();
    assert!(out.stdout.contains("planted-ok"), "{out}");

    let ws_b = repo_b.display().to_string();
    let out = t
        .kennel(&[
            "run",
            "shell",
            "-w",
            &ws_b,
            "--",
            "bash",
            "-i",
            "-c",
            "echo home:; ls -A ~; cat ~/planted 2>/dev/null; echo login:$(cat ~/.fake-agent/creds.json 2>/dev/null)",
        ])
        .run();
    out.assert_ok();
    assert!(
        !repo_b.join("bashrc-ran").exists(),
        "repository A's ~/.bashrc ran in a session on repository B\n{out}"
    );
    assert!(
        !out.stdout.contains(&planted),
        "repository B's session sees the file A's session left in the agent's home\n{out}"
    );
    assert!(
        !out.stdout.contains(".bashrc"),
        "repository B's session sees A's ~/.bashrc\n{out}"
    );
    assert!(
        out.stdout.contains(&format!("login:{token}")),
        "the login made in repository A's session must carry over to B's\n{out}"
    );
    assert!(!home_b.join(".bashrc").exists());
    assert!(!home_b.join("planted").exists());

    // A's next session: nothing of B's was carried into A's home.
    let out = t
        .kennel(&["run", "shell", "--", "sh", "-c", "ls -A ~; cat ~/planted"])
        .run();
    out.assert_ok();
    assert!(out.stdout.contains(&planted), "A keeps its own home\n{out}");
    assert!(
        !home_a.join("stolen-from-next-repo").exists(),
        "B's files reached A's home"
    );

    // The login store kept only the login, as a regular file of its own.
    let stored = t
        .data_home
        .join("kennel/logins/shell/files/.fake-agent/creds.json");
    let meta =
        std::fs::symlink_metadata(&stored).unwrap_or_else(|e| panic!("{}: {e}", stored.display()));
    assert!(meta.file_type().is_file());
    assert_eq!(std::fs::read_to_string(&stored).unwrap().trim(), token);
}

/// Class 5, the login's own path: an agent replaces its login file with a
/// link to a host secret; the next session on another repository gets
/// neither the secret nor the link, and the host's file is untouched.
pub fn login_link_not_followed(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_homes_login_link") else {
        return;
    };
    t.write_config("", SHELL_WITH_LOGIN);
    let secret_dir = t.scratch().join("host-secrets");
    std::fs::create_dir_all(&secret_dir).unwrap();
    let secret = secret_dir.join("id_key");
    let secret_text = format!("host-private-{}", unique());
    std::fs::write(&secret, &secret_text).unwrap();
    t.user.chown(&secret_dir);
    let repo_b = other_repository(&t, "repository-b");

    let out = t
        .kennel(&[
            "run",
            "shell",
            "--",
            "sh",
            "-c",
            &format!(
                "mkdir -p ~/.fake-agent && ln -sf {} ~/.fake-agent/creds.json && echo linked",
                secret.display()
            ),
        ])
        .run();
    out.assert_ok();
    let ws_b = repo_b.display().to_string();
    let out = t
        .kennel(&[
            "run",
            "shell",
            "-w",
            &ws_b,
            "--",
            "sh",
            "-c",
            "cat ~/.fake-agent/creds.json 2>&1; ls -la ~/.fake-agent 2>&1; true",
        ])
        .run();
    out.assert_ok();
    assert!(
        !out.stdout.contains(&secret_text),
        "a host secret reached another repository's session through a login link\n{out}"
    );
    assert!(
        !out.stdout.contains("->"),
        "the link itself was carried over\n{out}"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), secret_text);
    let stored = t.data_home.join("kennel/logins/shell/files");
    let found = std::process::Command::new("grep")
        .args(["-rl", &secret_text])
        .arg(&stored)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).to_string())
        .unwrap_or_default();
    assert!(
        found.is_empty(),
        "the secret is in the login store: {found}"
    );

    // The other way: with a login in the store (made in B), the agent in A
    // turns the login's directory into a link to a host directory; the
    // next session in A must not have kennel write the login through it
    // (a host-side write of agent-chosen bytes into any directory).
    let token = format!("login-{}", unique());
    t.kennel(&[
        "run",
        "shell",
        "-w",
        &ws_b,
        "--",
        "sh",
        "-c",
        &format!("mkdir -p ~/.fake-agent && echo {token} > ~/.fake-agent/creds.json"),
    ])
    .run()
    .assert_ok();
    let host_dir = t.scratch().join("host-autostart");
    std::fs::create_dir_all(&host_dir).unwrap();
    t.user.chown(&host_dir);
    t.kennel(&[
        "run",
        "shell",
        "--",
        "sh",
        "-c",
        &format!(
            "rm -rf ~/.fake-agent && ln -s {} ~/.fake-agent",
            host_dir.display()
        ),
    ])
    .run()
    .assert_ok();
    let out = t
        .kennel(&["run", "shell", "--", "sh", "-c", "ls -la ~/.fake-agent"])
        .run();
    out.assert_ok();
    assert!(
        !host_dir.join("creds.json").exists(),
        "kennel wrote the login through a link in the agent's home into a host directory\n{out}"
    );
    assert_eq!(
        std::fs::read_dir(&host_dir).unwrap().count(),
        0,
        "kennel wrote into the host directory the agent's home links to"
    );
    assert!(out.stderr.contains("symbolic link"), "{out}");
}

/// Class 6: the agent links the workspace's `.kennel.toml` to a file the
/// user trusted in another repository (which forwards a host variable and
/// mounts a host directory). kennel refuses it, whatever its target:
/// `--dry-run` and `run` fail with a clear message and nothing widens;
/// `kennel config trust` refuses to trust the link.
pub fn linked_project_config(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_homes_linked_project_config") else {
        return;
    };
    let other = other_repository(&t, "trusted-repo");
    let borrowed = t.scratch().join("borrowed-dir");
    std::fs::create_dir_all(&borrowed).unwrap();
    std::fs::write(borrowed.join("secret"), "borrowed-secret\n").unwrap();
    t.user.chown(&borrowed);
    let trusted = other.join(".kennel.toml");
    std::fs::write(
        &trusted,
        format!(
            "[defaults]\nenv = [\"KENNEL_E2E_BORROWED\"]\nmounts = [\"{}:/borrowed:ro\"]\n",
            borrowed.display()
        ),
    )
    .unwrap();
    t.user.chown(&trusted);
    let trusted_text = trusted.display().to_string();
    t.kennel(&["config", "trust", &trusted_text])
        .run()
        .assert_ok();
    let secret_env = [("KENNEL_E2E_BORROWED", "borrowed-variable")];
    // In its own repository the trusted file does widen the sandbox.
    let other_text = other.display().to_string();
    let out = t
        .kennel_env(
            &["run", "shell", "-w", &other_text, "--dry-run"],
            &secret_env,
        )
        .run();
    out.assert_ok();
    assert!(out.stdout.contains("/borrowed"), "{out}");

    // The agent plants the link (the target need not exist in the sandbox).
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--",
            "sh",
            "-c",
            &format!("ln -s {trusted_text} .kennel.toml && echo linked"),
        ])
        .run();
    out.assert_ok();
    let link = t.ws.join(".kennel.toml");
    assert!(
        std::fs::symlink_metadata(&link)
            .map(|meta| meta.file_type().is_symlink())
            .unwrap_or(false),
        "the probe could not plant the link\n{out}"
    );

    let out = t
        .kennel_env(&["run", "shell", "--dry-run"], &secret_env)
        .run();
    assert!(
        !out.stdout.contains("borrowed-variable") && !out.stdout.contains("/borrowed"),
        "a linked .kennel.toml borrowed another repository's trust\n{out}"
    );
    out.assert_code(125);
    assert!(out.stderr.contains("symbolic link"), "{out}");

    let out = t
        .kennel_env(
            &[
                "run",
                "shell",
                "--",
                "sh",
                "-c",
                "echo var:${KENNEL_E2E_BORROWED:-unset}; cat /borrowed/secret 2>&1; echo RAN",
            ],
            &secret_env,
        )
        .run();
    assert!(
        !out.stdout.contains("borrowed-variable") && !out.stdout.contains("borrowed-secret"),
        "a linked .kennel.toml widened the sandbox\n{out}"
    );
    out.assert_code(125);
    assert!(!out.stdout.contains("RAN"), "{out}");

    let out = t.kennel(&["config", "trust"]).run();
    out.assert_code(2);
    assert!(out.stderr.contains("symbolic link"), "{out}");
    let out = t
        .kennel(&["config", "trust", &link.display().to_string()])
        .run();
    out.assert_code(2);

    // Once the link is gone, the workspace works as before.
    std::fs::remove_file(&link).unwrap();
    t.sh("true").run().assert_ok();
}

/// The upgrade from one shared agent home: its login seeds the login store
/// (the user stays logged in), nothing else of it reaches a repository's
/// new home (a line it holds in `~/.bashrc` does not run), and kennel says
/// once where the old home is and how to share a home again.
pub fn migration(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "escape_homes_migration") else {
        return;
    };
    t.write_config("", SHELL_WITH_LOGIN);
    let legacy = t.data_home.join("kennel/homes/shell");
    std::fs::create_dir_all(legacy.join(".fake-agent")).unwrap();
    let token = format!("old-login-{}", unique());
    std::fs::write(legacy.join(".fake-agent/creds.json"), &token).unwrap();
    std::fs::write(
        legacy.join(".bashrc"),
        "echo ran > \"$PWD/legacy-bashrc-ran\"\n",
    )
    .unwrap();
    t.user.chown(&t.data_home);
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--",
            "bash",
            "-i",
            "-c",
            "echo login:$(cat ~/.fake-agent/creds.json)",
        ])
        .run();
    out.assert_ok();
    assert!(out.stdout.contains(&format!("login:{token}")), "{out}");
    assert!(
        !t.ws.join("legacy-bashrc-ran").exists(),
        "the shared home's ~/.bashrc ran in a repository's session\n{out}"
    );
    assert!(out.stderr.contains("share_agent_home"), "{out}");
    assert!(legacy.join(".bashrc").exists(), "the old home must stay");
    // Said once, not for every new repository.
    let repo_b = other_repository(&t, "repository-b");
    let ws_b = repo_b.display().to_string();
    let out = t.kennel(&["run", "shell", "-w", &ws_b, "--", "true"]).run();
    out.assert_ok();
    assert!(!out.stderr.contains("share_agent_home"), "{out}");

    // `share_agent_home = true` uses the old home again, all of it.
    t.write_config("share_agent_home = true", SHELL_WITH_LOGIN);
    assert_eq!(agent_home(&t, "shell", &t.ws), legacy);
    let out = t
        .kennel(&["run", "shell", "--", "bash", "-i", "-c", "true"])
        .run();
    out.assert_ok();
    assert!(t.ws.join("legacy-bashrc-ran").exists(), "{out}");
}
