//! The user's git identity inside the sandbox: `user.name`, `user.email`
//! and `init.defaultBranch` from the user's own git config reach git inside
//! (so agents that commit sign as the user, and aider finds an identity
//! instead of writing one into the read-only repository config), nothing
//! else of that config does, and `git_identity = "agent"` signs as the agent.

use crate::harness::{Backend, Ctx};

const PROBE: &str = "echo NAME=$(git config user.name); echo EMAIL=$(git config user.email); \
    echo BRANCH=$(git config init.defaultBranch); \
    echo PAGER=$(git config core.pager || echo none); \
    git commit --allow-empty -q -m inside && echo AUTHOR=$(git log -1 --format=%an/%ae); \
    out=$(git config user.name Mallory 2>&1); echo WRITE_RC=$?; echo \"WRITE=$out\"";

pub fn identity_inside(b: Backend) {
    let Some(t) = Ctx::with_shell_image(b, "git_identity") else {
        return;
    };
    // The user's global git config: an identity, and settings that must not
    // follow it into the sandbox.
    let global = t.scratch().join("gitconfig");
    std::fs::write(
        &global,
        "[user]\n\tname = Erin Example\n\temail = erin@example.org\n\
         [init]\n\tdefaultBranch = trunk\n[core]\n\tpager = less -R\n",
    )
    .unwrap();
    t.user.chown(&global);
    let global = global.display().to_string();
    let env = [("GIT_CONFIG_GLOBAL", global.as_str())];
    let probe = || {
        let out = t
            .kennel_env(
                &["run", "shell", "--network", "none", "--", "sh", "-c", PROBE],
                &env,
            )
            .run();
        out.assert_ok();
        out
    };

    let out = probe();
    assert_eq!(out.expect_kv("NAME"), "Erin Example", "{out}");
    assert_eq!(out.expect_kv("EMAIL"), "erin@example.org", "{out}");
    assert_eq!(out.expect_kv("BRANCH"), "trunk", "{out}");
    assert_eq!(
        out.expect_kv("PAGER"),
        "none",
        "only the identity passes\n{out}"
    );
    assert_eq!(
        out.expect_kv("AUTHOR"),
        "Erin Example/erin@example.org",
        "{out}"
    );
    // The repository's config is read-only: git says so.
    assert_ne!(out.expect_kv("WRITE_RC"), "0", "{out}");
    let write = out.expect_kv("WRITE");
    assert!(
        write.contains("could not lock config file")
            || write.contains("could not write config file")
            || write.contains("Read-only"),
        "{out}"
    );
    assert_eq!(
        t.git(&["log", "-1", "--format=%an"]).trim(),
        "Erin Example",
        "the commit made inside is the user's"
    );

    // --dry-run says which identity.
    let dry = t.kennel_env(&["run", "shell", "--dry-run"], &env).run();
    dry.assert_ok();
    assert_eq!(dry.json()["git_identity"]["source"], "user", "{dry}");

    // The agent's own identity, when the user asks for it.
    t.write_config("git_identity = \"agent\"", "");
    let out = probe();
    assert_eq!(
        out.expect_kv("AUTHOR"),
        "shell (kennel)/shell@kennel.invalid",
        "{out}"
    );
}
