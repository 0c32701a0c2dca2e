//! Real agents at work (issue 12): a real agent in kennel's image, given one
//! task, talks to the stand-in model server (`stand_in_model.py`, on the
//! network tests' host as `model.kennel.test`, reached only through kennel's
//! proxy), applies the edit the model scripted and commits it as the user.
//!
//! On Docker (streamed and not, direct and worktree mode) and on rootful and
//! rootless Podman (direct mode); not native, which runs the agent installed
//! on the host (aider is not, here).
//! Run alone with `cargo test -p kennel --test e2e agents_at_work`.
//!
//! aider 0.86.2 needs nothing beyond the model's host. What it reaches for
//! and the allowlist refuses, none of which breaks a run (each refusal is an
//! immediate 403 from the proxy):
//! - raw.githubusercontent.com (litellm's model-price JSON), twice: once by
//!   litellm when imported (off with `LITELLM_LOCAL_MODEL_COST_MAP=True`,
//!   which uses the copy bundled with litellm), once by aider's own
//!   `ModelInfoManager` (no switch; it prints the proxy error on stdout and
//!   falls back to litellm's copy);
//! - pypi.org, aider's update check (off with `--no-check-update`);
//! - us.i.posthog.com, only when analytics are on (`--analytics`): refused
//!   uploads print errors and add seconds at exit; off by default and with
//!   `--no-analytics`.
//!
//! For a model litellm does not know, aider picks the `whole` edit format;
//! `--edit-format diff` asks for SEARCH/REPLACE blocks.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{BUILD_TIMEOUT, Backend, Ctx, not_ready, unique};
use crate::network::{MODEL_PORT, find_session, network_tables, test_net};

const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What the stand-in model writes, and the commit message it gives.
const GREETING: &str = "Hello from the stand-in model";
const COMMIT_MESSAGE: &str = "Add hello.txt with a greeting";

/// aider's edit format (`diff`): the file's name, then a SEARCH/REPLACE
/// block; an empty SEARCH creates the file.
fn aider_reply() -> String {
    format!(
        "I will create the file.\n\nhello.txt\n```\n<<<<<<< SEARCH\n=======\n{GREETING}\n>>>>>>> REPLACE\n```\n"
    )
}

#[test]
fn docker_aider_edits_and_commits() {
    aider_edits_and_commits(Backend::Docker, false);
}

#[test]
fn docker_aider_edits_and_commits_streamed() {
    aider_edits_and_commits(Backend::Docker, true);
}

#[test]
fn podman_aider_edits_and_commits() {
    aider_edits_and_commits(Backend::Podman, false);
}

#[test]
fn podman_rootless_aider_edits_and_commits() {
    aider_edits_and_commits(Backend::PodmanRootless, false);
}

/// One aider run's fixture: the workspace, the model's script, the user's
/// git identity, and the arguments of `kennel run aider`.
struct AiderRun {
    t: Ctx,
    model: String,
    global: String,
    model_log: std::path::PathBuf,
}

impl AiderRun {
    fn new(b: Backend, name: &str) -> Option<AiderRun> {
        let t = Ctx::new(b, name)?;
        let net = match test_net() {
            Ok(net) => net,
            Err(reason) => return not_ready(&format!("{}::{name}", b.name()), reason),
        };
        t.write_config(
            &format!("ca_certificates = [\"{HOST_CA_BUNDLE}\"]"),
            network_tables(),
        );
        t.kennel(&["image", "build", "aider"])
            .timeout(BUILD_TIMEOUT)
            .run()
            .assert_ok();

        // The model's script: this test's own model name, one edit, one
        // commit message.
        let model = format!("kennel-e2e-aider-{}", unique());
        let script = serde_json::json!({
            "replies": [aider_reply()],
            "commit_message": COMMIT_MESSAGE,
        });
        std::fs::write(
            net.model_scripts.join(format!("{model}.json")),
            script.to_string(),
        )
        .unwrap();

        // The user's own git identity.
        let global = t.scratch().join("gitconfig");
        std::fs::write(
            &global,
            "[user]\n\tname = Erin Example\n\temail = erin@example.org\n",
        )
        .unwrap();
        t.user.chown(&global);
        Some(AiderRun {
            global: global.display().to_string(),
            model,
            model_log: net.model_log.clone(),
            t,
        })
    }

    /// `kennel run aider [KENNEL_OPTIONS] -- <the task>`.
    fn run(&self, kennel_options: &[&str], stream: bool) -> crate::harness::Out {
        let api_base = format!("http://model.kennel.test:{MODEL_PORT}/v1");
        let model_arg = format!("openai/{}", self.model);
        let mut args = vec![
            "run",
            "aider",
            "--allow",
            "model.kennel.test",
            "-e",
            "OPENAI_API_KEY=sk-kennel-e2e-not-a-key",
        ];
        args.extend_from_slice(kennel_options);
        args.extend([
            "--",
            "--model",
            &model_arg,
            "--openai-api-base",
            &api_base,
            "--no-analytics",
            "--no-check-update",
            "--no-show-model-warnings",
            "--edit-format",
            "diff",
            "--no-gitignore",
            "--no-pretty",
            "--yes-always",
        ]);
        if !stream {
            args.push("--no-stream");
        }
        args.extend(["--message", "Create hello.txt with a greeting."]);
        self.t
            .kennel_env(&args, &[("GIT_CONFIG_GLOBAL", self.global.as_str())])
            .timeout(Duration::from_secs(300))
            .run()
    }
}

fn aider_edits_and_commits(b: Backend, stream: bool) {
    let name = if stream {
        "agents_at_work_aider_stream"
    } else {
        "agents_at_work_aider"
    };
    let Some(run) = AiderRun::new(b, name) else {
        return;
    };
    let (t, model) = (&run.t, &run.model);
    let out = run.run(&[], stream);
    let requests = model_requests(&run.model_log, model);
    let context = format!(
        "{out}\n--- the model's requests ---\n{}",
        requests
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    out.assert_ok();

    // The file, on the host.
    let hello = std::fs::read_to_string(t.ws.join("hello.txt"))
        .unwrap_or_else(|e| panic!("hello.txt: {e}\n{context}"));
    assert_eq!(hello.trim_end(), GREETING, "{context}");

    // aider's one commit, with the user's identity and the model's message
    // (aider credits itself in a trailer, not in the author).
    let log = t.git(&["log", "--format=%an <%ae>|%cn <%ce>|%s|%b", "HEAD~1..HEAD"]);
    let fields: Vec<&str> = log.trim().splitn(4, '|').collect();
    assert_eq!(
        fields[..3],
        [
            "Erin Example <erin@example.org>",
            "Erin Example <erin@example.org>",
            COMMIT_MESSAGE
        ],
        "{context}"
    );
    assert!(
        fields[3].contains("Co-authored-by: aider"),
        "{log}\n{context}"
    );
    assert_eq!(
        t.git(&["rev-list", "--count", "HEAD"]).trim(),
        "2",
        "one commit on top of the initial one\n{context}"
    );
    assert_eq!(
        t.git(&["log", "-1", "--format=", "--name-only"]).trim(),
        "hello.txt",
        "{context}"
    );
    assert_eq!(
        t.git(&["status", "--porcelain", "--", "hello.txt"]).trim(),
        "",
        "hello.txt is committed\n{context}"
    );

    // The model saw the task, and was asked for the edit and the commit
    // message, streamed or not as asked.
    let kinds: Vec<&str> = requests
        .iter()
        .filter_map(|r| r["answer"]["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"reply 0"), "{context}");
    assert!(kinds.contains(&"commit_message"), "{context}");
    let edit = requests
        .iter()
        .find(|r| r["answer"]["kind"] == "reply 0")
        .unwrap();
    assert!(
        edit["body"].to_string().contains("Create hello.txt"),
        "the task reached the model\n{context}"
    );
    assert_eq!(edit["answer"]["stream"], stream, "{context}");
    assert!(
        requests
            .iter()
            .all(|r| r["headers"].get("authorization").is_none()),
        "the log keeps no credentials"
    );

    // The proxy allowed the model calls, and logged them.
    let (_, decisions) = find_session(t, |d| {
        d["host"] == "model.kennel.test" && d["verdict"] == "allow"
    })
    .unwrap_or_else(|| panic!("no session log allows model.kennel.test\n{context}"));
    let calls: Vec<&Value> = decisions
        .iter()
        .filter(|d| d["host"] == "model.kennel.test")
        .collect();
    assert!(
        calls
            .iter()
            .all(|d| d["verdict"] == "allow" && d["port"] == u64::from(MODEL_PORT)),
        "{calls:?}"
    );
    assert!(
        calls.len() >= 2,
        "the edit and the commit message went through the proxy: {calls:?}\n{context}"
    );
    // What aider reached for that the allowlist refused (reported, not
    // asserted: the set changes with aider's version, and the run above
    // already proves that refusing it does no harm).
    let refused: Vec<String> = decisions
        .iter()
        .filter(|d| d["verdict"] == "deny")
        .map(|d| format!("{}:{} ({})", d["host"], d["port"], d["reason"]))
        .collect();
    eprintln!("aider: refused by the allowlist: {refused:?}");
}

/// The same task in worktree mode: aider commits on the session's branch in
/// its own checkout, the user's checkout is untouched until `kennel merge`
/// brings aider's commit, as the user's, into the user's branch.
#[test]
fn docker_aider_in_a_worktree_is_merged() {
    let Some(run) = AiderRun::new(Backend::Docker, "agents_at_work_aider_worktree") else {
        return;
    };
    let t = &run.t;
    let before = t.git(&["rev-parse", "HEAD"]);
    let out = run.run(&["--mode", "worktree"], false);
    out.assert_ok();
    assert!(
        !t.ws.join("hello.txt").exists(),
        "worktree mode leaves the user's checkout alone\n{out}"
    );
    assert_eq!(t.git(&["rev-parse", "HEAD"]), before, "{out}");
    let sessions = t.sessions();
    let name = sessions
        .iter()
        .find_map(|s| s["branch"].as_str().and(s["name"].as_str()))
        .unwrap_or_else(|| panic!("no worktree session: {sessions:?}\n{out}"))
        .to_string();
    let diff = t.kennel(&["diff", &name, "--stat"]).run();
    diff.assert_ok();
    assert!(diff.stdout.contains("hello.txt"), "{diff}");
    t.kennel(&["merge", &name]).run().assert_ok();
    let hello = std::fs::read_to_string(t.ws.join("hello.txt"))
        .unwrap_or_else(|e| panic!("hello.txt after merge: {e}\n{out}"));
    assert_eq!(hello.trim_end(), GREETING);
    // aider's commit is in the user's branch now, with the user's identity.
    let commits = t.git(&[
        "log",
        "--format=%an <%ae>|%s",
        &format!("{}..HEAD", before.trim()),
    ]);
    assert!(
        commits
            .lines()
            .any(|line| line == format!("Erin Example <erin@example.org>|{COMMIT_MESSAGE}")),
        "{commits}\n{out}"
    );
}

/// The stand-in model's log lines for `model`.
fn model_requests(log: &std::path::Path, model: &str) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|r| r["body"]["model"] == model)
        .collect()
}
