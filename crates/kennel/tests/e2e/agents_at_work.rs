//! Real agents at work (issue 12): a real agent in kennel's image, given one
//! task, talks to the stand-in model server (`stand_in_model.py`, on the
//! network tests' host as `model.kennel.test`, reached only through kennel's
//! proxy), writes a file, runs a command whose output goes back to the
//! model, and commits as the user.
//!
//! - aider 0.86 (OpenAI chat completions, streamed and not): the model's
//!   SEARCH/REPLACE edit, aider's commit, then the user's `--test-cmd`,
//!   whose failing output aider sends to the model, which answers with a
//!   second edit and commit.
//! - Claude Code 2.1 (Anthropic messages, streamed, tool use): `Write`, then
//!   `Bash` committing and printing the commit's hash, which the model
//!   receives as the tool's result; also over HTTPS with a test CA given in
//!   `ca_certificates`.
//! - Codex 0.171 (OpenAI Responses, streamed, function calls): its shell
//!   tool writes the file, then commits and prints the hash.
//!
//! Direct mode on Docker, rootful and rootless Podman; worktree mode merged
//! with `kennel merge`; Claude Code also on the native backend, which runs
//! the agent installed on the host (`scripts/e2e-setup.sh` installs it
//! there; aider and Codex are not).
//! Run alone with `cargo test -p kennel --test e2e agents_at_work`.
//!
//! What each agent reaches for besides its model, all refused by the
//! allowlist without breaking a run (an immediate 403 from the proxy, or a
//! failed resolution), is recorded in the catalog's `refused_hosts`:
//! - aider: raw.githubusercontent.com (model prices: litellm's is off with
//!   `LITELLM_LOCAL_MODEL_COST_MAP=True`, which the catalog sets; aider's
//!   own lookup has no switch and falls back to litellm's bundled copy),
//!   pypi.org (update check, off with `--no-check-update`), us.i.posthog.com
//!   (analytics, only with `--analytics`). For a model litellm does not
//!   know, aider picks the `whole` edit format; `--edit-format diff` asks for
//!   SEARCH/REPLACE blocks.
//! - Claude Code: api.anthropic.com (besides the model: metrics and
//!   settings), even with another `ANTHROPIC_BASE_URL`.
//! - Codex: github.com and api.github.com (update check), chatgpt.com and
//!   ab.chatgpt.com (feature flags).

use std::time::Duration;

use serde_json::Value;

use crate::harness::{BUILD_TIMEOUT, Backend, Ctx, Out, not_ready, unique};
use crate::network::{MODEL_PORT, MODEL_TLS_PORT, TestNet, find_session, network_tables, test_net};

const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What the stand-in model writes, and the commit message it gives.
const GREETING: &str = "Hello from the stand-in model";
const COMMIT_MESSAGE: &str = "Add hello.txt with a greeting";
const TASK: &str = "Create hello.txt with a greeting and commit it.";
/// The user's own git identity, from a GIT_CONFIG_GLOBAL on the host.
const USER: &str = "Erin Example <erin@example.org>";

/// One agent's run against the stand-in model: the workspace, the model's
/// script (under this test's own model name), the user's git identity.
struct AgentRun {
    t: Ctx,
    agent: &'static str,
    model: String,
    global: String,
    net: &'static TestNet,
}

impl AgentRun {
    /// The fixture, with `script` as the model's. The host's CA bundle is
    /// in `ca_certificates` because the image build reaches npm and PyPI
    /// through this machine's TLS-intercepting proxy.
    fn new(b: Backend, name: &str, agent: &'static str, script: Value) -> Option<AgentRun> {
        let t = Ctx::new(b, name)?;
        let net = match test_net() {
            Ok(net) => net,
            Err(reason) => return not_ready(&format!("{}::{name}", b.name()), reason),
        };
        t.write_config(
            &format!("ca_certificates = [\"{HOST_CA_BUNDLE}\"]"),
            network_tables(),
        );
        if b.has_engine() {
            t.kennel(&["image", "build", agent])
                .timeout(BUILD_TIMEOUT)
                .run()
                .assert_ok();
        } else if !on_host_path(agent) {
            // The native backend runs the agent installed on the host
            // (scripts/e2e-setup.sh installs Claude Code there).
            return not_ready(
                &format!("native::{name}"),
                &format!("{agent} is not installed on the host (scripts/e2e-setup.sh installs it)"),
            );
        }
        let model = format!("kennel-e2e-{agent}-{}", unique());
        std::fs::write(
            net.model_scripts.join(format!("{model}.json")),
            script.to_string(),
        )
        .unwrap();
        let global = t.scratch().join("gitconfig");
        std::fs::write(
            &global,
            "[user]\n\tname = Erin Example\n\temail = erin@example.org\n",
        )
        .unwrap();
        t.user.chown(&global);
        Some(AgentRun {
            global: global.display().to_string(),
            agent,
            model,
            net,
            t,
        })
    }

    /// The config of a run over HTTPS: the host's CA bundle (for the image
    /// build) and the test CA (for the stand-in model) in `ca_certificates`,
    /// then `tables`.
    fn write_https_config(&self, tables: &str) {
        self.t.write_config(
            &format!(
                "ca_certificates = [\"{HOST_CA_BUNDLE}\", \"{}\"]",
                self.net.model_ca.display()
            ),
            tables,
        );
    }

    /// `kennel run AGENT --allow model.kennel.test [KENNEL_OPTIONS] -- ARGS`.
    fn run(&self, kennel_options: &[&str], agent_args: &[&str]) -> Out {
        self.run_with(kennel_options, agent_args, &[])
    }

    /// [`AgentRun::run`] with more host variables.
    fn run_with(&self, kennel_options: &[&str], agent_args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut args = vec!["run", self.agent, "--allow", "model.kennel.test"];
        args.extend_from_slice(kennel_options);
        args.push("--");
        args.extend_from_slice(agent_args);
        let mut host_env = vec![("GIT_CONFIG_GLOBAL", self.global.as_str())];
        host_env.extend_from_slice(env);
        self.t
            .kennel_env(&args, &host_env)
            .timeout(Duration::from_secs(300))
            .run()
    }

    /// The stand-in model's log lines for this test's model.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.net.model_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|r| r["body"]["model"] == self.model.as_str())
            .collect()
    }

    /// The run's output and the model's requests (each one's answer and
    /// its last message or input item, clipped), for failure messages.
    fn context(&self, out: &Out) -> String {
        let requests: Vec<String> = self
            .requests()
            .iter()
            .map(|r| {
                let body = &r["body"];
                let last = body["messages"]
                    .as_array()
                    .or(body["input"].as_array())
                    .and_then(|items| items.last())
                    .map(Value::to_string)
                    .unwrap_or_default();
                let last: String = last.chars().take(1500).collect();
                format!(
                    "{} {} -> {}\n  last: {last}",
                    r["method"], r["path"], r["answer"]
                )
            })
            .collect();
        format!(
            "{out}\n--- the model's requests ---\n{}",
            requests.join("\n")
        )
    }

    /// The first request the model answered with `kind` (e.g. `turn 2`).
    fn request(&self, kind: &str, context: &str) -> Value {
        self.requests()
            .into_iter()
            .find(|r| r["answer"]["kind"] == kind)
            .unwrap_or_else(|| panic!("the model was never asked for {kind}\n{context}"))
    }

    /// The proxy allowed every call to the model (at least `at_least` of
    /// them, on `port`) and logged them; what else the agent reached for
    /// and was refused is printed, and each refusal of a host the catalog
    /// lists in `refused_hosts` is marked "not needed" by `kennel net log`.
    /// Returns the session's decisions.
    fn assert_model_calls_allowed(
        &self,
        host: &str,
        port: u16,
        at_least: usize,
        context: &str,
    ) -> Vec<Value> {
        let (session, decisions) =
            find_session(&self.t, |d| d["host"] == host && d["verdict"] == "allow")
                .unwrap_or_else(|| panic!("no session log allows {host}\n{context}"));
        let calls: Vec<&Value> = decisions.iter().filter(|d| d["host"] == host).collect();
        assert!(
            calls
                .iter()
                .all(|d| d["verdict"] == "allow" && d["port"] == u64::from(port)),
            "{calls:?}\n{context}"
        );
        assert!(
            calls.len() >= at_least,
            "{at_least} model calls through the proxy expected: {calls:?}\n{context}"
        );
        // Reported, not asserted: the set changes with the agent's version,
        // and the run already proves that refusing it does no harm.
        let refused: Vec<String> = decisions
            .iter()
            .filter(|d| d["verdict"] == "deny")
            .map(|d| format!("{}:{} ({})", d["host"], d["port"], d["reason"]))
            .collect();
        eprintln!("{}: refused by the allowlist: {refused:?}", self.agent);
        let catalog = self.t.kennel(&["agents", "--json"]).run();
        catalog.assert_ok();
        let catalog = catalog.json();
        let not_needed = catalog["agents"]
            .as_array()
            .and_then(|agents| agents.iter().find(|a| a["name"] == self.agent))
            .map(|a| a["refused_hosts"].clone())
            .unwrap_or_default();
        let log = self
            .t
            .kennel(&["net", "log", "--session", &session, "--denied"])
            .run();
        log.assert_ok();
        for decision in decisions.iter().filter(|d| d["verdict"] == "deny") {
            let host = decision["host"].as_str().unwrap_or_default();
            if let Some(why) = not_needed[host].as_str() {
                assert!(
                    log.stdout
                        .lines()
                        .any(|line| line.contains(&format!(" {host}:"))
                            && line.ends_with(&format!("— not needed: {why}"))),
                    "the refusal of {host} is marked as not needed\n{log}"
                );
            }
        }
        assert!(
            self.requests()
                .iter()
                .all(|r| r["headers"].get("authorization").is_none()
                    && r["headers"].get("x-api-key").is_none()),
            "the model's log keeps no credentials"
        );
        decisions
    }
}

/// The commits on top of `since`, newest first, as
/// `author|committer|subject|file,file`.
fn new_commits(t: &Ctx, since: &str) -> Vec<String> {
    t.git(&[
        "log",
        "--format=%x01%an <%ae>|%cn <%ce>|%s|",
        "--name-only",
        &format!("{since}..HEAD"),
    ])
    .split('\x01')
    .filter(|c| !c.trim().is_empty())
    .map(|c| {
        let mut lines = c.lines().filter(|l| !l.trim().is_empty());
        let header = lines.next().unwrap_or_default().to_string();
        header + &lines.collect::<Vec<_>>().join(",")
    })
    .collect()
}

/// hello.txt holds the greeting, and the newest commit is the user's, with
/// the model's message, touching only hello.txt.
fn assert_greeting_committed(t: &Ctx, context: &str) {
    let hello = std::fs::read_to_string(t.ws.join("hello.txt"))
        .unwrap_or_else(|e| panic!("hello.txt: {e}\n{context}"));
    assert_eq!(hello.trim_end(), GREETING, "{context}");
    assert_eq!(
        t.git(&["status", "--porcelain", "--", "hello.txt"]).trim(),
        "",
        "hello.txt is committed\n{context}"
    );
    let root = t.git(&["rev-list", "--max-parents=0", "HEAD"]);
    let commits = new_commits(t, root.trim());
    assert_eq!(
        commits.last().map(String::as_str),
        Some(format!("{USER}|{USER}|{COMMIT_MESSAGE}|hello.txt").as_str()),
        "{commits:?}\n{context}"
    );
}

// ------------------------------------------------------------------- aider

#[test]
fn docker_aider_edits_runs_and_commits() {
    aider_at_work(Backend::Docker, false);
}

#[test]
fn docker_aider_edits_runs_and_commits_streamed() {
    aider_at_work(Backend::Docker, true);
}

#[test]
fn podman_aider_edits_runs_and_commits() {
    aider_at_work(Backend::Podman, false);
}

#[test]
fn podman_rootless_aider_edits_runs_and_commits() {
    aider_at_work(Backend::PodmanRootless, false);
}

/// The second edit, asked for by the failing test command's output.
const CHECKED: &str = "checked";
const SECOND_COMMIT_MESSAGE: &str = "Add checked.txt";

/// aider's edit format (`diff`): the file's name, then a SEARCH/REPLACE
/// block; an empty SEARCH creates the file.
fn aider_edit(file: &str, text: &str) -> String {
    format!(
        "I will create the file.\n\n{file}\n```\n<<<<<<< SEARCH\n=======\n{text}\n>>>>>>> REPLACE\n```\n"
    )
}

/// The user's test command: it prints what only running it inside can
/// know (the commit it ran on, the line count), and fails until
/// checked.txt exists, so aider sends its output to the model.
const AIDER_TEST_CMD: &str = "sh -c 'echo \"probe: $(wc -l < hello.txt) line at $(git rev-parse HEAD)\"; test -f checked.txt'";

fn aider_script() -> Value {
    serde_json::json!({
        "replies": [aider_edit("hello.txt", GREETING), aider_edit("checked.txt", CHECKED)],
        "commit_messages": [COMMIT_MESSAGE, SECOND_COMMIT_MESSAGE],
    })
}

fn aider_args(run: &AgentRun, stream: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--model",
        &format!("openai/{}", run.model),
        "--openai-api-base",
        &format!("http://model.kennel.test:{MODEL_PORT}/v1"),
        "--no-analytics",
        "--no-check-update",
        "--no-show-model-warnings",
        "--edit-format",
        "diff",
        "--no-gitignore",
        "--no-pretty",
        "--yes-always",
        "--auto-test",
        "--test-cmd",
        AIDER_TEST_CMD,
    ]
    .map(String::from)
    .to_vec();
    if !stream {
        args.push("--no-stream".into());
    }
    args.extend(["--message".into(), TASK.into()]);
    args
}

const AIDER_KEY: &[&str] = &["-e", "OPENAI_API_KEY=sk-kennel-e2e-not-a-key"];

fn aider_at_work(b: Backend, stream: bool) {
    let name = if stream {
        "agents_at_work_aider_stream"
    } else {
        "agents_at_work_aider"
    };
    let Some(run) = AgentRun::new(b, name, "aider", aider_script()) else {
        return;
    };
    let t = &run.t;
    let args = aider_args(&run, stream);
    let out = run.run(
        AIDER_KEY,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let context = run.context(&out);
    out.assert_ok();

    // Two commits, both the user's: the greeting, then checked.txt, which
    // the model wrote after it saw the test command fail.
    let root = t.git(&["rev-list", "--max-parents=0", "HEAD"]);
    let commits = new_commits(t, root.trim());
    assert_eq!(
        commits,
        [
            format!("{USER}|{USER}|{SECOND_COMMIT_MESSAGE}|checked.txt"),
            format!("{USER}|{USER}|{COMMIT_MESSAGE}|hello.txt"),
        ],
        "{context}"
    );
    let hello = std::fs::read_to_string(t.ws.join("hello.txt")).unwrap();
    assert_eq!(hello.trim_end(), GREETING, "{context}");
    let checked = std::fs::read_to_string(t.ws.join("checked.txt"))
        .unwrap_or_else(|e| panic!("checked.txt: {e}\n{context}"));
    assert_eq!(checked.trim_end(), CHECKED, "{context}");

    // The task reached the model, streamed or not as asked; the test
    // command ran inside on aider's first commit, and its output is what
    // the model was asked about next.
    let first = run.request("reply 0", &context);
    assert!(first["body"].to_string().contains(TASK), "{context}");
    assert_eq!(first["answer"]["stream"], stream, "{context}");
    let greeting_commit = t.git(&["rev-parse", "HEAD~1"]);
    let second = run.request("reply 1", &context);
    let probe = format!("probe: 1 line at {}", greeting_commit.trim());
    assert!(
        second["body"].to_string().contains(&probe),
        "the test command's output ({probe}) reached the model\n{context}"
    );
    let decisions = run.assert_model_calls_allowed("model.kennel.test", MODEL_PORT, 4, &context);
    // litellm's own download of the model prices is off (the catalog's
    // set_env LITELLM_LOCAL_MODEL_COST_MAP=True); only aider's own remains.
    let price_fetches = decisions
        .iter()
        .filter(|d| d["host"] == "raw.githubusercontent.com")
        .count();
    assert!(
        price_fetches <= 1,
        "{price_fetches} refused downloads of model prices\n{context}"
    );
}

/// The same task in worktree mode: aider commits on the session's branch in
/// its own checkout, the user's checkout is untouched until `kennel merge`
/// brings aider's commits, as the user's, into the user's branch.
#[test]
fn docker_aider_in_a_worktree_is_merged() {
    let Some(run) = AgentRun::new(
        Backend::Docker,
        "agents_at_work_aider_worktree",
        "aider",
        aider_script(),
    ) else {
        return;
    };
    let args = aider_args(&run, false);
    let mut options = AIDER_KEY.to_vec();
    options.extend(["--mode", "worktree"]);
    merged_from_worktree(
        &run,
        &options,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
}

/// Runs the agent in worktree mode: the user's checkout is left alone,
/// `kennel diff` shows hello.txt, `kennel merge` brings the agent's commit
/// (the user's identity, the model's message) into the user's branch.
fn merged_from_worktree(run: &AgentRun, kennel_options: &[&str], agent_args: &[&str]) {
    let t = &run.t;
    let before = t.git(&["rev-parse", "HEAD"]);
    let out = run.run(kennel_options, agent_args);
    let context = run.context(&out);
    out.assert_ok();
    assert!(
        !t.ws.join("hello.txt").exists(),
        "worktree mode leaves the user's checkout alone\n{context}"
    );
    assert_eq!(t.git(&["rev-parse", "HEAD"]), before, "{context}");
    let sessions = t.sessions();
    let name = sessions
        .iter()
        .find_map(|s| s["branch"].as_str().and(s["name"].as_str()))
        .unwrap_or_else(|| panic!("no worktree session: {sessions:?}\n{context}"))
        .to_string();
    let diff = t.kennel(&["diff", &name, "--stat"]).run();
    diff.assert_ok();
    assert!(diff.stdout.contains("hello.txt"), "{diff}");
    t.kennel(&["merge", &name]).run().assert_ok();
    assert_greeting_committed(t, &context);
    let commits = new_commits(t, before.trim());
    assert!(
        commits
            .iter()
            .any(|c| c.starts_with(&format!("{USER}|{USER}|{COMMIT_MESSAGE}|"))),
        "{commits:?}\n{context}"
    );
}

// ------------------------------------------------------------- Claude Code

#[test]
fn docker_claude_edits_runs_and_commits() {
    claude_at_work(Backend::Docker);
}

#[test]
fn podman_claude_edits_runs_and_commits() {
    claude_at_work(Backend::Podman);
}

#[test]
fn podman_rootless_claude_edits_runs_and_commits() {
    claude_at_work(Backend::PodmanRootless);
}

/// The host's own Claude Code, in the native sandbox, reaching the model
/// through the forwarder to kennel's proxy.
#[test]
fn native_claude_edits_runs_and_commits() {
    claude_at_work(Backend::Native);
}

/// Is `program` in one of the directories the native sandbox's PATH
/// names?
fn on_host_path(program: &str) -> bool {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .any(|dir| std::path::Path::new(dir).join(program).exists())
}

/// The command whose output the model must see: it commits, then prints
/// the new commit's hash.
const COMMIT_AND_SHOW: &str = "git add hello.txt && git commit -q -m 'Add hello.txt with a greeting' && git log -1 --format=%H";

/// Claude Code's turns: `Write` the file, `Bash` commit and print the
/// hash, then a last word.
fn claude_script() -> Value {
    serde_json::json!({
        "turns": [
            [
                {"text": "I will write the file."},
                {"tool": "Write", "input": {"file_path": "{cwd}/hello.txt", "content": format!("{GREETING}\n")}},
            ],
            [{"tool": "Bash", "input": {"command": COMMIT_AND_SHOW, "description": "Commit hello.txt"}}],
            [{"text": "Done: hello.txt is committed."}],
        ],
        "side_reply": "OK",
    })
}

fn claude_run(b: Backend, name: &str) -> Option<AgentRun> {
    AgentRun::new(b, name, "claude", claude_script())
}

/// `-e` for the API key and base URL, then Claude Code's own arguments.
fn claude_invocation(run: &AgentRun, base_url: &str) -> (Vec<String>, Vec<String>) {
    let options = vec![
        "-e".into(),
        "ANTHROPIC_API_KEY=sk-ant-kennel-e2e-not-a-key".into(),
        "-e".into(),
        format!("ANTHROPIC_BASE_URL={base_url}"),
    ];
    let args = vec![
        "--model".into(),
        run.model.clone(),
        "-p".into(),
        TASK.into(),
    ];
    (options, args)
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn claude_at_work(b: Backend) {
    let Some(run) = claude_run(b, "agents_at_work_claude") else {
        return;
    };
    let (options, args) =
        claude_invocation(&run, &format!("http://model.kennel.test:{MODEL_PORT}"));
    let out = run.run(&strs(&options), &strs(&args));
    claude_worked(&run, &out, "model.kennel.test", MODEL_PORT);
}

/// The file, the commit, the model's three turns streamed, the `Write`
/// accepted, the `Bash` command's output (the commit's hash) in the
/// model's last request, and the model calls through the proxy.
fn claude_worked(run: &AgentRun, out: &Out, host: &str, port: u16) {
    let t = &run.t;
    let context = run.context(out);
    out.assert_ok();
    assert!(
        out.stdout.contains("Done: hello.txt is committed."),
        "the model's last word is the run's output\n{context}"
    );
    assert_greeting_committed(t, &context);
    assert_eq!(
        t.git(&["rev-list", "--count", "HEAD"]).trim(),
        "2",
        "one commit on top of the initial one\n{context}"
    );
    let first = run.request("turn 0", &context);
    assert!(first["body"].to_string().contains(TASK), "{context}");
    assert_eq!(first["answer"]["stream"], true, "{context}");
    let results = |request: &Value| -> Vec<Value> {
        request["body"]["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_array())
            .map(|c| {
                c.iter()
                    .filter(|b| b["type"] == "tool_result")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let written = results(&run.request("turn 1", &context));
    assert!(
        written.len() == 1 && written[0]["is_error"] != true,
        "the Write succeeded: {written:?}\n{context}"
    );
    let commit = t.git(&["rev-parse", "HEAD"]);
    let shown = results(&run.request("turn 2", &context));
    assert!(
        shown.len() == 1
            && shown[0]["is_error"] != true
            && shown[0]["content"].to_string().contains(commit.trim()),
        "the command's output, the commit {}, reached the model: {shown:?}\n{context}",
        commit.trim()
    );
    run.assert_model_calls_allowed(host, port, 3, &context);
}

/// Over HTTPS: the model's certificate comes from a CA the user names in
/// `ca_certificates`, which kennel adds to the sandbox's trust (Node's
/// included), as a company's TLS gateway would need.
#[test]
fn docker_claude_over_https_with_the_users_ca() {
    let Some(run) = claude_run(Backend::Docker, "agents_at_work_claude_https") else {
        return;
    };
    run.write_https_config(network_tables());
    let (options, args) =
        claude_invocation(&run, &format!("https://model.kennel.test:{MODEL_TLS_PORT}"));
    let out = run.run(&strs(&options), &strs(&args));
    claude_worked(&run, &out, "model.kennel.test", MODEL_TLS_PORT);
    let context = run.context(&out);
    assert!(
        run.requests()
            .iter()
            .all(|r| r["headers"]["host"] == format!("model.kennel.test:{MODEL_TLS_PORT}")),
        "every model call came over HTTPS\n{context}"
    );
}

/// With its key brokered: the user binds ANTHROPIC_API_KEY to the model's
/// host, the key is in the host's environment only, Claude Code runs with
/// a placeholder and the session CA (Node trusts it through
/// NODE_EXTRA_CA_CERTS), and every model call reached the server with the
/// real key, which the agent never had.
#[test]
fn docker_claude_with_a_brokered_key() {
    let Some(run) = claude_run(Backend::Docker, "agents_at_work_claude_brokered") else {
        return;
    };
    run.write_https_config(
        &format!(
            "{}\n[secrets.ANTHROPIC_API_KEY]\nhosts = [\"model.kennel.test\"]\nheader = \"x-api-key\"\n",
            network_tables()
        ),
    );
    let key = format!(
        "sk-ant-api03-{}-brokered0123456789",
        unique().replace('-', "")
    );
    let options = vec![
        "-e".to_string(),
        "ANTHROPIC_BASE_URL=https://model.kennel.test".to_string(),
    ];
    let (_, args) = claude_invocation(&run, "https://model.kennel.test");
    let out = run.run_with(
        &strs(&options),
        &strs(&args),
        &[("ANTHROPIC_API_KEY", &key)],
    );
    claude_worked(&run, &out, "model.kennel.test", 443);
    let context = run.context(&out);
    assert!(
        !out.stdout.contains(&key) && !out.stderr.contains(&key),
        "{context}"
    );
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()));
    let requests = run.requests();
    assert!(
        !requests.is_empty()
            && requests
                .iter()
                .all(|r| r["credential_sha256"]["x-api-key"] == digest.as_str()),
        "every model call carried the real key, swapped in by kennel's proxy\n{context}"
    );
}

/// What stands in for Claude Code's own login (`claude auth login` needs
/// claude.ai in a browser): the token endpoint's authorization-code
/// exchange, as Claude Code sends it, then Claude Code's credentials file
/// written from the answer, expired, so that Claude Code refreshes first.
const SEED_CLAUDE_LOGIN: &str = r#"R=$(curl -sS -m 20 https://platform.claude.com/v1/oauth/token -H 'content-type: application/json' -d "{\"grant_type\":\"authorization_code\",\"code\":\"good-$1\",\"client_id\":\"kennel-e2e\"}")
echo "LOGIN=$R"
mkdir -p ~/.claude
node -e 'const r = JSON.parse(process.argv[1]); require("fs").writeFileSync(process.env.HOME + "/.claude/.credentials.json", JSON.stringify({claudeAiOauth: {accessToken: r.access_token, refreshToken: r.refresh_token, expiresAt: Date.now() - 60000, scopes: r.scope.split(" "), subscriptionType: "max", rateLimitTier: null}}), {mode: 0o600})' "$R""#;

/// A Claude subscription login kept on the host: `kennel login claude`
/// (its login command the user's own, see [`SEED_CLAUDE_LOGIN`]; the token
/// endpoint the real one, platform.claude.com, mapped to the stand-in's
/// OAuth endpoint) keeps the tokens and leaves sentinels in Claude Code's
/// credentials file; then real Claude Code, with no key at all, refreshes
/// its expired login through kennel (the stand-in gets the real refresh
/// token and rotates it) and calls api.anthropic.com (mapped to the
/// stand-in model) with the real new access token, which it never had.
#[test]
fn docker_claude_with_a_kept_subscription_login() {
    let Some(run) = claude_run(Backend::Docker, "agents_at_work_claude_login") else {
        return;
    };
    run.write_https_config(&format!(
        "{}\"platform.claude.com\" = [\"198.18.0.2\"]\n\"api.anthropic.com\" = [\"198.18.0.2\"]\n\n\
             [agents.claude.oauth]\ncommand = [\"bash\"]\n\
             token_url = \"https://platform.claude.com/v1/oauth/token\"\n\
             hosts = [\"api.anthropic.com\"]\nheader = \"authorization\"\n",
        network_tables()
    ));
    let family = unique().replace('-', "");
    let login = run
        .t
        .kennel(&[
            "login",
            "claude",
            "--",
            "-c",
            SEED_CLAUDE_LOGIN,
            "seed",
            &family,
        ])
        .timeout(Duration::from_secs(300))
        .run();
    login.assert_ok();
    assert!(
        login.stderr.contains("claude login kept on the host"),
        "{login}"
    );

    let out = run.run(&[], &["--model", &run.model, "-p", TASK]);
    claude_worked(&run, &out, "api.anthropic.com", 443);
    let context = run.context(&out);
    // The stand-in OAuth server: the login, then Claude Code's refresh
    // carrying the real refresh token (a sentinel would be refused).
    let grants: Vec<Value> = std::fs::read_to_string(&run.net.model_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["answer"]["family"] == family.as_str())
        .collect();
    assert_eq!(
        grants.len(),
        2,
        "the login and Claude Code's refresh\n{context}"
    );
    assert_eq!(grants[1]["answer"]["grant"], "refresh_token", "{context}");
    assert_eq!(
        grants[1]["body"]["refresh_token"], grants[0]["answer"]["issued"]["refresh"],
        "the refresh reached the server with the real token\n{context}"
    );
    assert!(
        grants[1]["headers"]["user-agent"]
            .as_str()
            .is_some_and(|agent| !agent.starts_with("curl")),
        "Claude Code itself refreshed\n{context}"
    );
    // Every model call carried the refreshed real access token.
    let fresh = grants[1]["answer"]["issued"]["access"]
        .as_str()
        .unwrap_or_default();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        format!("Bearer {fresh}").as_bytes(),
    ));
    let requests = run.requests();
    assert!(
        !requests.is_empty()
            && requests
                .iter()
                .all(|r| r["credential_sha256"]["authorization"] == digest.as_str()),
        "every model call carried the real access token, swapped in by kennel's proxy\n{context}"
    );
    for grant in &grants {
        for token in ["access", "refresh"] {
            let real = grant["answer"]["issued"][token]
                .as_str()
                .unwrap_or_default();
            assert!(
                !real.is_empty()
                    && !out.stdout.contains(real)
                    && !out.stderr.contains(real)
                    && !login.stdout.contains(real)
                    && !login.stderr.contains(real),
                "a real token in kennel's output\n{context}"
            );
        }
    }
}

#[test]
fn podman_claude_in_a_worktree_is_merged() {
    let Some(run) = claude_run(Backend::Podman, "agents_at_work_claude_worktree") else {
        return;
    };
    let (mut options, args) =
        claude_invocation(&run, &format!("http://model.kennel.test:{MODEL_PORT}"));
    options.extend(["--mode".into(), "worktree".into()]);
    merged_from_worktree(&run, &strs(&options), &strs(&args));
}

// ------------------------------------------------------------------ Codex

#[test]
fn docker_codex_edits_runs_and_commits() {
    codex_at_work(Backend::Docker);
}

#[test]
fn podman_rootless_codex_edits_runs_and_commits() {
    codex_at_work(Backend::PodmanRootless);
}

/// Codex's turns: its shell tool writes the file, then commits and prints
/// the hash; then a last word.
fn codex_script() -> Value {
    serde_json::json!({
        "turns": [
            [{"shell": format!("printf '%s\\n' '{GREETING}' > hello.txt")}],
            [{"shell": COMMIT_AND_SHOW}],
            [{"text": "Done: hello.txt is committed."}],
        ],
        "side_reply": "OK",
    })
}

/// `-e` for the key, then `codex exec` with a model provider pointing at
/// the stand-in (Codex ignores OPENAI_BASE_URL; a provider is how its
/// documentation says to reach another endpoint).
fn codex_invocation(run: &AgentRun) -> (Vec<String>, Vec<String>) {
    let options = vec![
        "-e".into(),
        "STANDIN_API_KEY=sk-kennel-e2e-not-a-key".into(),
    ];
    let args = vec![
        "exec".into(),
        "-c".into(),
        "model_provider=standin".into(),
        "-c".into(),
        format!(
            "model_providers.standin={{name=\"stand-in\", base_url=\"http://model.kennel.test:{MODEL_PORT}/v1\", env_key=\"STANDIN_API_KEY\", wire_api=\"responses\"}}"
        ),
        "--model".into(),
        run.model.clone(),
        TASK.into(),
    ];
    (options, args)
}

fn codex_at_work(b: Backend) {
    let Some(run) = AgentRun::new(b, "agents_at_work_codex", "codex", codex_script()) else {
        return;
    };
    let (options, args) = codex_invocation(&run);
    let out = run.run(&strs(&options), &strs(&args));
    let t = &run.t;
    let context = run.context(&out);
    out.assert_ok();
    assert_greeting_committed(t, &context);
    assert_eq!(
        t.git(&["rev-list", "--count", "HEAD"]).trim(),
        "2",
        "{context}"
    );
    let first = run.request("turn 0", &context);
    assert!(first["body"].to_string().contains(TASK), "{context}");
    // The shell call's output, the commit's hash, is in the model's last
    // request.
    let commit = t.git(&["rev-parse", "HEAD"]);
    let last = run.request("turn 2", &context);
    let outputs: Vec<&Value> = last["body"]["input"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|i| i["type"] == "function_call_output")
                .collect()
        })
        .unwrap_or_default();
    assert!(
        outputs.len() == 2 && outputs[1].to_string().contains(commit.trim()),
        "the command's output, the commit {}, reached the model: {outputs:?}\n{context}",
        commit.trim()
    );
    run.assert_model_calls_allowed("model.kennel.test", MODEL_PORT, 3, &context);
}

#[test]
fn docker_codex_in_a_worktree_is_merged() {
    let Some(run) = AgentRun::new(
        Backend::Docker,
        "agents_at_work_codex_worktree",
        "codex",
        codex_script(),
    ) else {
        return;
    };
    let (mut options, args) = codex_invocation(&run);
    options.extend(["--mode".into(), "worktree".into()]);
    merged_from_worktree(&run, &strs(&options), &strs(&args));
}
