//! Command-line behaviour that needs no engine: usage errors, config errors,
//! the Plan printed by `--dry-run`, and what users read (snapshots).

mod common;

use common::{Sandbox, output};

fn dry_run(sandbox: &Sandbox, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["run", "shell", "--dry-run"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = output(&mut sandbox.kennel(&args));
    assert_eq!(code, 0, "stderr: {stderr}");
    serde_json::from_str(&stdout).expect("dry-run prints JSON")
}

#[test]
fn help_snapshot() {
    let sandbox = Sandbox::new();
    let (code, stdout, _) = output(&mut sandbox.kennel(&["--help"]));
    assert_eq!(code, 0);
    insta::assert_snapshot!(stdout);
}

#[test]
fn run_help_snapshot() {
    let sandbox = Sandbox::new();
    let (code, stdout, _) = output(&mut sandbox.kennel(&["run", "--help"]));
    assert_eq!(code, 0);
    insta::assert_snapshot!(stdout);
}

#[test]
fn unknown_agent_is_usage_error_with_suggestion() {
    let sandbox = Sandbox::new();
    let (code, _, stderr) = output(&mut sandbox.kennel(&["run", "claud"]));
    assert_eq!(code, 2);
    insta::assert_snapshot!(stderr, @r"
    kennel: error: unknown agent `claud`
      hint: did you mean `claude`? `kennel agents` lists every agent
    ");
}

#[test]
fn unknown_flag_is_usage_error() {
    let sandbox = Sandbox::new();
    let (code, _, _) = output(&mut sandbox.kennel(&["run", "shell", "--frobnicate"]));
    assert_eq!(code, 2);
}

#[test]
fn bad_env_name_is_usage_error() {
    let sandbox = Sandbox::new();
    let (code, _, stderr) =
        output(&mut sandbox.kennel(&["run", "shell", "--dry-run", "-e", "1BAD"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("1BAD"), "{stderr}");
}

#[test]
fn dry_run_prints_the_plan() {
    let sandbox = Sandbox::new();
    let plan = dry_run(&sandbox, &["-b", "docker", "--", "sh", "-c", "exit 7"]);
    assert_eq!(plan["version"], 1);
    assert_eq!(plan["selected"]["backend"], "docker");
    assert_eq!(plan["agent"], "shell");
    assert_eq!(plan["command"], serde_json::json!(["sh", "-c", "exit 7"]));
    let workspace = std::fs::canonicalize(&sandbox.workspace).expect("canon");
    assert_eq!(plan["workspace"], workspace.display().to_string());
    assert_eq!(plan["security"]["cap_drop"], serde_json::json!(["ALL"]));
    assert_eq!(plan["security"]["no_new_privileges"], true);
    let reference = plan["image"]["reference"].as_str().expect("reference");
    assert!(reference.starts_with("kennel/shell:"), "{reference}");
}

#[test]
fn dry_run_auto_without_engines_chooses_native_and_says_why() {
    let sandbox = Sandbox::new();
    let plan = dry_run(&sandbox, &[]);
    assert_eq!(plan["backend"], "auto");
    assert_eq!(plan["selected"]["backend"], "native");
    let reason = plan["selected"]["reason"].as_str().expect("reason");
    assert!(reason.contains("no container engine"), "{reason}");
    assert_eq!(plan["image"]["reference"], "host");
    assert_eq!(plan["image"]["managed"], false);
    let env = plan["env"].as_array().expect("env");
    assert!(env.iter().any(|v| v["name"] == "PATH"), "{env:?}");
}

#[test]
fn native_backend_refuses_an_image() {
    let sandbox = Sandbox::new();
    let (code, _, stderr) =
        output(&mut sandbox.kennel(&["run", "shell", "-b", "native", "--image", "x", "--dry-run"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--image"), "{stderr}");
}

#[test]
fn dry_run_redacts_credentials_and_drops_unnamed_variables() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .kennel(&["run", "claude", "--dry-run"])
        .env("ANTHROPIC_API_KEY", "sk-very-secret")
        .env("KENNEL_TEST_SECRET", "s3cret")
        .output()
        .expect("runs");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains("sk-very-secret"));
    assert!(!stdout.contains("s3cret"));
    let plan: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let names: Vec<&str> = plan["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(names.contains(&"ANTHROPIC_API_KEY"));
    assert!(!names.contains(&"KENNEL_TEST_SECRET"));
}

#[test]
fn malformed_config_names_file_line_column_and_key() {
    let sandbox = Sandbox::new();
    sandbox.user_config("[defaults]\nbackend = \"docker\"\npids_limit = \"lots\"\n");
    let (code, _, stderr) = output(&mut sandbox.kennel(&["run", "shell", "--dry-run"]));
    assert_eq!(code, 125);
    let file = sandbox.home.join(".config/kennel/config.toml");
    assert!(
        stderr.contains(&format!("{}:3:1", file.display())),
        "{stderr}"
    );
    assert!(stderr.contains("defaults.pids_limit"), "{stderr}");
}

#[test]
fn config_syntax_error_has_position() {
    let sandbox = Sandbox::new();
    sandbox.user_config("[defaults]\nbackend = \n");
    let (code, _, stderr) = output(&mut sandbox.kennel(&["config", "show"]));
    assert_eq!(code, 125);
    assert!(stderr.contains("config.toml:2:"), "{stderr}");
}

#[test]
fn project_config_cannot_widen_until_trusted() {
    let sandbox = Sandbox::new();
    sandbox.project_config("[defaults]\nmounts = [\"/etc:/host-etc:ro\"]\n");
    let (code, _, stderr) = output(&mut sandbox.kennel(&["run", "shell", "--dry-run"]));
    assert_eq!(code, 125);
    assert!(stderr.contains("defaults.mounts"), "{stderr}");
    assert!(stderr.contains("kennel config trust"), "{stderr}");

    let (code, _, stderr) = output(&mut sandbox.kennel(&["config", "trust"]));
    assert_eq!(code, 0, "{stderr}");
    let plan = dry_run(&sandbox, &[]);
    let targets: Vec<&str> = plan["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .filter_map(|m| m["target"].as_str())
        .collect();
    assert!(targets.contains(&"/host-etc"), "{targets:?}");

    // Any edit revokes the trust.
    sandbox.project_config("[defaults]\nmounts = [\"/:/host\"]\n");
    let (code, _, _) = output(&mut sandbox.kennel(&["run", "shell", "--dry-run"]));
    assert_eq!(code, 125);
}

#[test]
fn project_config_may_tighten() {
    let sandbox = Sandbox::new();
    sandbox.project_config("[defaults]\nnetwork = \"none\"\n");
    let plan = dry_run(&sandbox, &[]);
    assert_eq!(plan["network"]["mode"], "none");
}

#[test]
fn user_config_may_widen() {
    let sandbox = Sandbox::new();
    sandbox.user_config(
        "[defaults]\nmounts = [\"/etc:/host-etc:ro\"]\nenv = [\"FOO=bar\"]\nnetwork = \"open\"\n",
    );
    let plan = dry_run(&sandbox, &[]);
    assert_eq!(plan["network"]["mode"], "open");
    let env = plan["env"].as_array().expect("env");
    assert!(
        env.iter()
            .any(|v| v["name"] == "FOO" && v["value"] == "bar")
    );
}

#[test]
fn config_show_origin_names_each_layer() {
    let sandbox = Sandbox::new();
    sandbox.user_config("[defaults]\nbase_image = \"local/base:1\"\n");
    let (code, stdout, stderr) = output(
        sandbox
            .kennel(&["config", "show", "--origin"])
            .env("KENNEL_BACKEND", "podman"),
    );
    assert_eq!(code, 0, "{stderr}");
    let line = |key: &str| {
        stdout
            .lines()
            .find(|line| line.starts_with(key))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        line("defaults.backend ").contains("environment variable KENNEL_BACKEND"),
        "{stdout}"
    );
    assert!(
        line("defaults.base_image ").contains("user config"),
        "{stdout}"
    );
    assert!(
        line("defaults.pids_limit ").contains("# default"),
        "{stdout}"
    );
}

#[test]
fn agents_json_lists_the_catalog() {
    let sandbox = Sandbox::new();
    let (code, stdout, _) = output(&mut sandbox.kennel(&["agents", "--json"]));
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(listed["version"], 1, "{stdout}");
    let agents: Vec<serde_json::Value> =
        serde_json::from_value(listed["agents"].clone()).expect("a list of agents");
    assert!(agents.len() >= 16, "{} agents", agents.len());
    for name in [
        "claude",
        "codex",
        "gemini",
        "aider",
        "crush",
        "opencode",
        "copilot",
        "qwen",
        "amp",
        "goose",
        "cursor-agent",
        "kilo",
        "auggie",
        "droid",
        "codebuddy",
        "qoder",
        "shell",
    ] {
        let agent = agents
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        for field in [
            "command",
            "yolo",
            "install",
            "state",
            "env",
            "domains",
            "runtime",
            "unverified",
            "version",
            "caveat",
        ] {
            assert!(!agent[field].is_null(), "{name}.{field} missing");
        }
    }
}

/// An agent that may not install everywhere says why, in the table too.
#[test]
fn agents_show_their_caveats() {
    let sandbox = Sandbox::new();
    let (code, stdout, _) = output(&mut sandbox.kennel(&["agents"]));
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines
        .iter()
        .position(|line| line.starts_with("cursor-agent "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        lines.get(at + 1).is_some_and(
            |next| next.trim_start().starts_with("! ") && next.contains("vendor's site")
        ),
        "{stdout}"
    );
}

#[test]
fn config_defined_agent_appears_in_catalog() {
    let sandbox = Sandbox::new();
    sandbox.user_config("[agents.hello]\ncommand = [\"echo\", \"hello\"]\n");
    let (code, stdout, _) = output(&mut sandbox.kennel(&["agents"]));
    assert_eq!(code, 0);
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("hello ") && line.contains("[config]")),
        "{stdout}"
    );
}

#[test]
fn no_engine_is_exit_125_with_a_fix() {
    let sandbox = Sandbox::new();
    let (code, _, stderr) =
        output(&mut sandbox.kennel(&["run", "shell", "-b", "docker", "--", "true"]));
    assert_eq!(code, 125, "{stderr}");
    assert!(stderr.contains("/nonexistent/docker.sock"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
}

#[test]
fn workspace_may_not_be_home() {
    let sandbox = Sandbox::new();
    let home = sandbox.home.display().to_string();
    let (code, _, stderr) =
        output(&mut sandbox.kennel(&["run", "shell", "--dry-run", "-w", &home]));
    assert_eq!(code, 125);
    assert!(stderr.contains("home directory"), "{stderr}");
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let sandbox = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let (code, stdout, _) = output(&mut sandbox.kennel(&["completions", shell]));
        assert_eq!(code, 0);
        assert!(
            stdout.contains("doctor"),
            "{shell} completion lacks subcommands"
        );
    }
    let (code, stdout, _) = output(&mut sandbox.kennel(&["man"]));
    assert_eq!(code, 0);
    assert!(
        stdout.contains(".TH kennel"),
        "{}",
        &stdout[..200.min(stdout.len())]
    );
}

/// `kennel net log | head -1`: the reader goes away after one line; kennel
/// ends quietly with success instead of panicking on the broken pipe.
#[test]
fn a_reader_that_goes_away_ends_kennel_quietly() {
    use std::io::BufRead;
    let sandbox = Sandbox::new();
    let logs = sandbox.home.join(".local/share/kennel/logs");
    std::fs::create_dir_all(&logs).expect("logs");
    // Far more than a pipe holds, so that kennel is still writing.
    let line = r#"{"time":"2026-12-05T02:59:33.831Z","session":"kennel-shell-repo-0","method":"CONNECT","host":"example.com","port":443,"addr":null,"verdict":"deny","reason":"not-allowlisted","detail":"example.com is not on the allow list","bytes_up":0,"bytes_down":0,"duration_ms":0}"#;
    std::fs::write(
        logs.join("kennel-shell-repo-0.net.jsonl"),
        format!("{line}\n").repeat(5000),
    )
    .expect("log");
    let mut child = sandbox
        .kennel(&["net", "log"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kennel runs");
    let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    reader.read_line(&mut first).expect("a line");
    assert!(first.contains("example.com:443"), "{first}");
    drop(reader);
    let output = child.wait_with_output().expect("kennel ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

/// `--quiet` silences kennel's notes; the data on stdout stays.
#[test]
fn quiet_silences_notes_not_data() {
    let sandbox = Sandbox::new();
    sandbox.commit();
    let (code, stdout, stderr) =
        output(&mut sandbox.kennel(&["run", "shell", "--dry-run", "--mode", "worktree"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("kennel: --dry-run: the session would create branch kennel/shell-0"),
        "{stderr}"
    );
    let (code, quiet_stdout, quiet_stderr) = output(&mut sandbox.kennel(&[
        "run",
        "shell",
        "--dry-run",
        "--mode",
        "worktree",
        "--quiet",
    ]));
    assert_eq!(code, 0, "{quiet_stderr}");
    assert_eq!(quiet_stderr, "");
    // The same Plan but for its random name (and the paths named after it).
    let plan = |text: &str| {
        let value: serde_json::Value = serde_json::from_str(text).expect("a Plan");
        let name = value["name"].as_str().expect("a name").to_string();
        text.replace(&name, "<name>")
    };
    assert_eq!(plan(&quiet_stdout), plan(&stdout));
}

/// What users read, as they read it: the catalog's table, the empty
/// listing, a session that does not exist, and the network log in both
/// forms.
#[test]
fn what_users_see_snapshots() {
    let sandbox = Sandbox::new();
    let (code, stdout, _) = output(&mut sandbox.kennel(&["agents"]));
    assert_eq!(code, 0);
    insta::assert_snapshot!("agents_table", stdout);

    let (code, stdout, stderr) = output(&mut sandbox.kennel(&["ls"]));
    assert_eq!(code, 0);
    assert_eq!(stdout, "");
    insta::assert_snapshot!(stderr, @"kennel: no sessions running or ended in the last 24 hours (`kennel ls --all` shows every one)");

    let (code, _, stderr) = output(&mut sandbox.kennel(&["inspect", "no-such-session"]));
    assert_eq!(code, 2, "{stderr}");
    insta::assert_snapshot!("inspect_unknown_session", stderr);

    let logs = sandbox.home.join(".local/share/kennel/logs");
    std::fs::create_dir_all(&logs).expect("logs");
    std::fs::write(
        logs.join("kennel-shell-repo-0.net.jsonl"),
        concat!(
            r#"{"time":"2026-12-05T02:59:33.831Z","session":"kennel-shell-repo-0","method":"CONNECT","host":"api.example.com","port":443,"addr":"203.0.113.7","verdict":"allow","reason":"allowlisted","detail":"","bytes_up":512,"bytes_down":2048,"duration_ms":40}"#,
            "\n",
            r#"{"time":"2026-12-05T02:59:34.001Z","session":"kennel-shell-repo-0","method":"GET","host":"evil.example","port":80,"addr":null,"verdict":"deny","reason":"not-allowlisted","detail":"evil.example is not on the allow list","bytes_up":0,"bytes_down":0,"duration_ms":0}"#,
            "\n"
        ),
    )
    .expect("log");
    let (code, stdout, stderr) = output(&mut sandbox.kennel(&["net", "log"]));
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(stdout, @r"
    2026-12-05T02:59:33.831Z allow CONNECT api.example.com:443 → 203.0.113.7 allowlisted ↑512 ↓2048
    2026-12-05T02:59:34.001Z deny  GET evil.example:80 → - not-allowlisted ↑0 ↓0 (evil.example is not on the allow list)
    ");
    let (code, stdout, _) = output(&mut sandbox.kennel(&["net", "log", "--denied", "--json"]));
    assert_eq!(code, 0);
    insta::assert_snapshot!("net_log_denied_json", stdout);

    // Paths under the sandbox's home, shown as ~.
    let home = sandbox.home.display().to_string();
    let (code, stdout, _) = output(&mut sandbox.kennel(&["config", "paths", "--json"]));
    assert_eq!(code, 0);
    insta::assert_snapshot!(stdout.replace(&home, "~"), @r#"
    {
      "version": 1,
      "system_config": "~/no-system-config.toml",
      "user_config": "~/.config/kennel/config.toml",
      "data_dir": "~/.local/share/kennel",
      "trust_store": "~/.local/share/kennel/trusted.json"
    }
    "#);
}

/// The errors users meet first, as they read them: what is wrong, where
/// (file, line, key, argument), and how to fix it; usage errors exit 2.
#[test]
fn errors_users_see_snapshots() {
    let sandbox = Sandbox::new();
    let home = sandbox.home.display().to_string();
    let (code, _, stderr) = output(&mut sandbox.kennel(&["run", "claud", "--dry-run"]));
    assert_eq!(code, 2, "{stderr}");
    insta::assert_snapshot!(stderr, @r"
    kennel: error: unknown agent `claud`
      hint: did you mean `claude`? `kennel agents` lists every agent
    ");

    let (code, _, stderr) = output(&mut sandbox.kennel(&["run", "shell", "--network", "closed"]));
    assert_eq!(code, 2, "{stderr}");
    insta::assert_snapshot!(stderr, @r"
    error: invalid value 'closed' for '--network <NETWORK>'
      [possible values: none, allowlist, restricted, open]

    For more information, try '--help'.
    ");

    sandbox.user_config("[defaults]\nnetwork = \"allowlist\"\nmemmory = \"4g\"\n");
    let (code, _, stderr) = output(&mut sandbox.kennel(&["run", "shell", "--dry-run"]));
    assert_ne!(code, 0, "{stderr}");
    insta::assert_snapshot!(stderr.replace(&home, "~"), @r"
    kennel: error: ~/.config/kennel/config.toml:3:1: unknown key `defaults.memmory` (did you mean `memory`?)
      hint: fix or remove `defaults.memmory`; `kennel config show --origin` lists the valid keys and their current values
    ");
}

/// A session recorded with a backend this kennel does not know (a newer
/// kennel's): commands say so, and `rm --force` forgets it.
#[test]
fn a_session_of_an_unknown_backend_is_refused_and_can_be_forgotten() {
    use kennel_sessions::{Limits, Mode, NewSession, Registry, SlotRequest};
    let sandbox = Sandbox::new();
    let path = sandbox.home.join(".local/share/kennel/sessions.db");
    let mut registry = Registry::open(&path).expect("registry");
    let session = registry
        .insert(&NewSession {
            name: Some("elsewhere".into()),
            agent: "shell".into(),
            workspace: sandbox.workspace.clone(),
            slot: SlotRequest::Free,
            slots_per_workspace: true,
            owner: None,
            backend: "teleport".into(),
            ends_with_owner: false,
            mode: Mode::Persistent,
            limits: Limits::default(),
            plan: None,
        })
        .expect("insert");
    registry
        .mark_running(&session.id, "far-away")
        .expect("running");
    drop(registry);

    let (code, _, stderr) = output(&mut sandbox.kennel(&["send", "elsewhere", "hi"]));
    assert_eq!(code, 125, "{stderr}");
    insta::assert_snapshot!(stderr, @r"
    kennel: error: unknown backend `teleport`
      hint: this session was recorded by another version of kennel; `kennel rm --force` forgets it
    ");
    let (code, _, _) = output(&mut sandbox.kennel(&["rm", "elsewhere"]));
    assert_eq!(code, 125);
    let (code, _, stderr) = output(&mut sandbox.kennel(&["rm", "--force", "elsewhere"]));
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, _) = output(&mut sandbox.kennel(&["ls", "--all", "--json"]));
    assert_eq!(code, 0);
    insta::assert_snapshot!(stdout, @r#"
    {
      "version": 1,
      "sessions": []
    }
    "#);
}

/// A backend name kennel does not know, from the environment or config, is
/// a usage error that lists the ones it knows.
#[test]
fn an_unknown_backend_is_a_usage_error() {
    let sandbox = Sandbox::new();
    let (code, _, stderr) = output(
        sandbox
            .kennel(&["run", "shell", "--dry-run"])
            .env("KENNEL_BACKEND", "teleport"),
    );
    assert_eq!(code, 2, "{stderr}");
    insta::assert_snapshot!(stderr, @r"
    kennel: error: unknown backend `teleport`
      hint: choose one of: auto, docker, podman, incus, kubernetes, native
    ");
}
