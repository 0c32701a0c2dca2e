use super::*;
use crate::catalog::Catalog;
use crate::config::{Config, ConfigSources};
use crate::credentials::CredentialPlace;
use crate::trust::TrustStore;

fn host(env: &[(&str, &str)]) -> HostContext {
    HostContext {
        uid: 1000,
        gid: 1000,
        user: "alice".into(),
        home: "/home/alice".into(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        cwd: "/work/repo/src".into(),
        data_dir: "/home/alice/.local/share/kennel".into(),
        config_dir: "/home/alice/.config/kennel".into(),
    }
}

fn workspace() -> Workspace {
    Workspace {
        root: "/work/repo".into(),
        workdir: "/work/repo/src".into(),
        protected: vec![
            "/work/repo/.git/hooks".into(),
            "/work/repo/.git/config".into(),
        ],
        ..Default::default()
    }
}

fn config(user_toml: &str) -> Config {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, user_toml).expect("write");
    let sources = ConfigSources {
        user: Some(path),
        ..Default::default()
    };
    Config::load(&sources, &TrustStore::in_memory()).expect("config")
}

fn image() -> ImagePlan {
    ImagePlan {
        reference: "kennel/shell:0123456789ab".into(),
        managed: true,
        source: String::new(),
    }
}

/// The Plan for `agent` of `config`'s catalog on the test host and workspace.
fn plan_with(config: &Config, agent: &str, request: &RunRequest) -> Result<Plan, PlanError> {
    let catalog = Catalog::with_overrides(&config.file.agents).expect("catalog");
    build_plan(
        &host(&[]),
        config,
        catalog.get(agent).expect("agent"),
        &workspace(),
        image(),
        request,
    )
}

fn plan_for(agent: &str, env: &[(&str, &str)], request: RunRequest) -> Plan {
    let config = config("");
    let catalog = Catalog::with_overrides(&config.file.agents).expect("catalog");
    build_plan(
        &host(env),
        &config,
        catalog.get(agent).expect("agent"),
        &workspace(),
        image(),
        &request,
    )
    .expect("plan")
}

#[test]
fn shell_plan_snapshot() {
    let mut plan = plan_for(
        "shell",
        &[
            ("TERM", "xterm-256color"),
            ("LANG", "C.UTF-8"),
            ("AWS_SECRET_ACCESS_KEY", "nope"),
        ],
        RunRequest {
            args: vec!["sh".into(), "-c".into(), "exit 7".into()],
            ..Default::default()
        },
    );
    assert!(plan.name.starts_with("kennel-shell-repo-"));
    // The name is random; so are the paths named after it (proxy socket, log).
    let name = std::mem::replace(&mut plan.name, "<name>".into());
    let unname = |path: &mut PathBuf| {
        *path = PathBuf::from(path.display().to_string().replace(&name, "<name>"));
    };
    for mount in &mut plan.mounts {
        unname(&mut mount.source);
    }
    if let Some(proxy) = &mut plan.network.proxy {
        unname(&mut proxy.socket);
        unname(&mut proxy.log);
    }
    insta::assert_json_snapshot!(plan.redacted());
}

#[test]
fn host_variables_do_not_pass_unless_named() {
    let plan = plan_for(
        "shell",
        &[("KENNEL_TEST_SECRET", "s3cret"), ("TZ", "UTC")],
        RunRequest::default(),
    );
    assert_eq!(plan.env_value("KENNEL_TEST_SECRET"), None);
    assert_eq!(plan.env_value("TZ"), Some("UTC"));
    let plan = plan_for(
        "shell",
        &[("KENNEL_TEST_SECRET", "s3cret")],
        RunRequest {
            env: vec!["KENNEL_TEST_SECRET".into(), "EXTRA=1".into()],
            ..Default::default()
        },
    );
    assert_eq!(plan.env_value("KENNEL_TEST_SECRET"), Some("s3cret"));
    assert_eq!(plan.env_value("EXTRA"), Some("1"));
}

#[test]
fn agent_credentials_are_brokered_not_passed() {
    let plan = plan_for(
        "claude",
        &[
            ("ANTHROPIC_API_KEY", "sk-ant-test-0123456789"),
            ("OPENAI_API_KEY", "other"),
        ],
        RunRequest::default(),
    );
    // The variable exists for the agent, empty until the session's
    // placeholder fills it; the value is nowhere in the Plan.
    let var = plan
        .env
        .iter()
        .find(|var| var.name == "ANTHROPIC_API_KEY")
        .expect("the variable");
    assert_eq!(
        (var.value.as_str(), var.origin.as_str(), var.secret),
        ("", "broker", true)
    );
    assert_eq!(
        plan.env_value("OPENAI_API_KEY"),
        None,
        "not declared by claude"
    );
    let json = serde_json::to_string(&plan).expect("json");
    assert!(!json.contains("sk-ant-test-0123456789"), "{json}");
    let proxy = plan.network.proxy.as_ref().expect("allowlist has a proxy");
    assert_eq!(
        proxy.credentials,
        [CredentialPlan {
            name: "ANTHROPIC_API_KEY".into(),
            env: "ANTHROPIC_API_KEY".into(),
            hosts: vec!["api.anthropic.com".into()],
            places: vec![CredentialPlace::Header {
                name: "x-api-key".into()
            }],
            methods: vec![],
            paths: vec![],
            source: CredentialSource::Environment,
        }]
    );
    // The session's CA is trusted inside: over the system store, and for Node.
    let dir = proxy.socket.parent().expect("dir");
    assert!(
        plan.mounts
            .iter()
            .any(|mount| mount.source == dir.join(SESSION_CA_BUNDLE)
                && mount.target == Path::new(SYSTEM_CA_BUNDLE)
                && mount.read_only)
    );
    assert!(
        plan.mounts
            .iter()
            .any(|mount| mount.source == dir.join(SESSION_CA_EXTRA)
                && mount.target == Path::new(CA_BUNDLE_TARGET))
    );
    assert_eq!(
        plan.env_value("NODE_EXTRA_CA_CERTS"),
        Some(CA_BUNDLE_TARGET)
    );
    assert_eq!(
        plan.redacted().env_value("ANTHROPIC_API_KEY"),
        Some("<redacted>")
    );
}

#[test]
fn where_credentials_are_not_brokered() {
    let host_env = [("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")];
    // Given with its value: in the sandbox as the user typed it.
    let plan = plan_for(
        "claude",
        &host_env,
        RunRequest {
            env: vec!["ANTHROPIC_API_KEY=sk-typed".into()],
            ..Default::default()
        },
    );
    assert_eq!(plan.env_value("ANTHROPIC_API_KEY"), Some("sk-typed"));
    assert!(plan.network.proxy.expect("proxy").credentials.is_empty());
    // `-e NAME` alone is the host's value: brokered.
    let plan = plan_for(
        "claude",
        &host_env,
        RunRequest {
            env: vec!["ANTHROPIC_API_KEY".into()],
            ..Default::default()
        },
    );
    assert_eq!(plan.env_value("ANTHROPIC_API_KEY"), Some(""));
    // Open: no proxy, so not passed at all, and said.
    let plan = plan_for(
        "claude",
        &host_env,
        RunRequest {
            network: Some(NetworkMode::Open),
            ..Default::default()
        },
    );
    assert_eq!(plan.env_value("ANTHROPIC_API_KEY"), None);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("ANTHROPIC_API_KEY not passed") && w.contains("open")),
        "{:?}",
        plan.warnings
    );
    // None: nothing to send it to.
    let plan = plan_for(
        "claude",
        &host_env,
        RunRequest {
            network: Some(NetworkMode::None),
            ..Default::default()
        },
    );
    assert_eq!(plan.env_value("ANTHROPIC_API_KEY"), None);
    // No value anywhere: no variable.
    let plan = plan_for("claude", &[], RunRequest::default());
    assert_eq!(plan.env_value("ANTHROPIC_API_KEY"), None);
}

#[test]
fn your_own_secrets_and_the_store() {
    let config = config(
        "[secrets.GITHUB_TOKEN]\nhosts = [\"api.github.com\"]\nheader = \"authorization\"\n\
         methods = [\"GET\"]\npaths = [\"/repos/acme/app/\"]\n\n\
         [secrets.ONLY_AIDER]\nhosts = [\"x.example\"]\nheader = \"x-key\"\nagents = [\"aider\"]\n",
    );
    let request = RunRequest {
        stored_secrets: ["GITHUB_TOKEN".to_string(), "ONLY_AIDER".to_string()].into(),
        ..Default::default()
    };
    let plan = plan_with(&config, "shell", &request).expect("plan");
    let credentials = &plan.network.proxy.as_ref().expect("proxy").credentials;
    assert_eq!(credentials.len(), 1, "{credentials:?}");
    assert_eq!(credentials[0].name, "GITHUB_TOKEN");
    assert_eq!(credentials[0].source, CredentialSource::Store);
    assert_eq!(credentials[0].paths, ["/repos/acme/app/"]);
    assert_eq!(plan.env_value("GITHUB_TOKEN"), Some(""));
    assert_eq!(plan.env_value("ONLY_AIDER"), None, "bound to aider only");
}

#[test]
fn yolo_flags_are_added_unless_refused() {
    let plan = plan_for(
        "claude",
        &[],
        RunRequest {
            args: vec!["--version".into()],
            ..Default::default()
        },
    );
    assert_eq!(
        plan.command,
        vec!["claude", "--dangerously-skip-permissions", "--version"]
    );
    let plan = plan_for(
        "claude",
        &[],
        RunRequest {
            no_yolo: true,
            ..Default::default()
        },
    );
    assert_eq!(plan.command, vec!["claude"]);
}

#[test]
fn shell_args_replace_the_command() {
    assert_eq!(
        plan_for("shell", &[], RunRequest::default()).command,
        vec!["bash"]
    );
    let plan = plan_for(
        "shell",
        &[],
        RunRequest {
            args: vec!["id".into()],
            ..Default::default()
        },
    );
    assert_eq!(plan.command, vec!["id"]);
}

#[test]
fn mounts_are_only_workspace_home_identity() {
    let plan = plan_for("claude", &[], RunRequest::default());
    for mount in &plan.mounts {
        let allowed = mount.source.starts_with("/work/repo")
            || mount.source.starts_with("/home/alice/.local/share/kennel");
        assert!(
            allowed,
            "unexpected mount source {}",
            mount.source.display()
        );
    }
    let protected: Vec<_> = plan
        .mounts
        .iter()
        .filter(|m| m.purpose == MountPurpose::Protect)
        .collect();
    assert_eq!(protected.len(), 2);
    assert!(protected.iter().all(|m| m.read_only));
    let home = plan
        .mounts
        .iter()
        .find(|m| m.purpose == MountPurpose::AgentHome)
        .expect("home");
    assert_eq!(
        home.source,
        Path::new("/home/alice/.local/share/kennel/repo-homes")
            .join(repository_key(Path::new("/work/repo")))
            .join("claude")
    );
    assert_eq!(home.target, Path::new("/home/alice"));
}

#[test]
fn catalog_set_env_reaches_the_agent_and_the_user_overrides_it() {
    let plan = plan_for("aider", &[], RunRequest::default());
    assert_eq!(plan.env_value("LITELLM_LOCAL_MODEL_COST_MAP"), Some("True"));
    let plan = plan_for(
        "aider",
        &[],
        RunRequest {
            env: vec!["LITELLM_LOCAL_MODEL_COST_MAP=False".into()],
            ..Default::default()
        },
    );
    assert_eq!(
        plan.env_value("LITELLM_LOCAL_MODEL_COST_MAP"),
        Some("False")
    );
    let config = config("[agents.shell]\nset_env = { EDITOR = \"true\" }\n");
    let plan = plan_with(&config, "shell", &RunRequest::default()).expect("plan");
    assert_eq!(plan.env_value("EDITOR"), Some("true"));
}

#[test]
fn a_set_env_name_that_is_no_variable_is_refused_naming_the_agent() {
    let config = config("[agents.shell]\nset_env = { \"1BAD\" = \"x\" }\n");
    let error = Catalog::with_overrides(&config.file.agents).expect_err("refused");
    let text = error.to_string();
    assert!(
        text.contains("agent `shell`") && text.contains("`1BAD`"),
        "{text}"
    );
}

#[test]
fn bad_env_flag_is_a_usage_error() {
    let config = config("");
    let request = RunRequest {
        env: vec!["1BAD".into()],
        ..Default::default()
    };
    let error = plan_with(&config, "shell", &request).expect_err("refused");
    assert!(error.is_usage());
}

#[test]
fn user_mounts_must_be_absolute_and_exist() {
    let config = config("[defaults]\nmounts = [\"relative:/x\"]\n");
    let error = plan_with(&config, "shell", &RunRequest::default()).expect_err("refused");
    assert!(matches!(error, PlanError::BadMount { .. }));
    let config = config_with_mount();
    let plan = plan_with(&config, "shell", &RunRequest::default()).expect("plan");
    let user = plan
        .mounts
        .iter()
        .find(|m| m.purpose == MountPurpose::User)
        .expect("user mount");
    assert_eq!(user.target, Path::new("/host-etc"));
    assert!(user.read_only);
}

fn config_with_mount() -> Config {
    config("[defaults]\nmounts = [\"/etc:/host-etc:ro\"]\n")
}

fn network_plan(mode: Option<NetworkMode>, backend: &str, env: &[(&str, &str)]) -> Plan {
    plan_for(
        "shell",
        env,
        RunRequest {
            network: mode,
            allow: vec!["example.com".into()],
            args: vec!["sh".into(), "-c".into(), "exit 7".into()],
            selected: Some(BackendChoice {
                backend: backend.into(),
                reason: "test".into(),
            }),
            on_host: backend == "native",
            ..Default::default()
        },
    )
}

fn proxy_mounts(plan: &Plan) -> Vec<&Mount> {
    plan.mounts
        .iter()
        .filter(|m| m.purpose == MountPurpose::Proxy)
        .collect()
}

#[test]
fn network_none_has_no_proxy() {
    for backend in ["docker", "native"] {
        let plan = network_plan(Some(NetworkMode::None), backend, &[]);
        assert!(plan.network.enforced);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        assert_eq!(plan.network.proxy, None);
        assert!(proxy_mounts(&plan).is_empty());
        assert_eq!(plan.env_value("HTTPS_PROXY"), None);
        assert_eq!(container_command(&plan), plan.command);
    }
}

#[test]
fn network_open_warns_and_has_no_proxy() {
    let plan = network_plan(Some(NetworkMode::Open), "podman", &[]);
    assert!(plan.network.enforced);
    assert_eq!(plan.network.proxy, None);
    assert!(proxy_mounts(&plan).is_empty());
    assert_eq!(plan.env_value("HTTP_PROXY"), None);
    assert!(plan.warnings.iter().any(|w| w.contains("network is open")));
    assert_eq!(container_command(&plan), plan.command);
}

#[test]
fn allowlist_and_restricted_go_through_the_proxy() {
    for mode in [
        None,
        Some(NetworkMode::Allowlist),
        Some(NetworkMode::Restricted),
    ] {
        for backend in ["docker", "podman", "native"] {
            let plan = network_plan(mode, backend, &[("XDG_RUNTIME_DIR", "/run/user/1000")]);
            assert_eq!(plan.network.mode, mode.unwrap_or(NetworkMode::Allowlist));
            assert!(plan.network.enforced);
            assert!(plan.network.allow.contains(&"example.com".to_string()));
            assert!(
                plan.warnings.is_empty(),
                "no warning for an enforced mode: {:?}",
                plan.warnings
            );
            let proxy = plan.network.proxy.clone().expect("proxy");
            assert_eq!(proxy.listen_inside, "127.0.0.1:3128");
            let dir = Path::new("/run/user/1000/kennel/proxy").join(&plan.name);
            assert_eq!(proxy.socket, dir.join("proxy.sock"));
            assert_eq!(
                proxy.socket_inside,
                Path::new("/run/kennel/proxy/proxy.sock")
            );
            assert_eq!(
                proxy.log,
                Path::new("/home/alice/.local/share/kennel/logs")
                    .join(format!("{}.net.jsonl", plan.name))
            );
            let mounts = proxy_mounts(&plan);
            assert_eq!(mounts.len(), 1);
            assert_eq!(mounts[0].source, dir);
            assert_eq!(mounts[0].target, Path::new("/run/kennel/proxy"));
            assert!(mounts[0].read_only);
            for name in [
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "http_proxy",
                "https_proxy",
                "npm_config_proxy",
                "npm_config_https_proxy",
            ] {
                assert_eq!(
                    plan.env_value(name),
                    Some("http://127.0.0.1:3128"),
                    "{name}"
                );
            }
            assert_eq!(plan.env_value("NO_PROXY"), Some("localhost,127.0.0.1,::1"));
            assert_eq!(plan.env_value("no_proxy"), Some("localhost,127.0.0.1,::1"));
            assert_eq!(plan.env_value("NODE_USE_ENV_PROXY"), Some("1"));
            // The Plan's command stays the agent's; containers wrap it in the forwarder.
            assert_eq!(plan.command, ["sh", "-c", "exit 7"]);
            let wrapped = container_command(&plan);
            assert_eq!(&wrapped[..2], ["sh", "-c"]);
            assert!(wrapped[2].contains(
                "socat TCP-LISTEN:3128,bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:/run/kennel/proxy/proxy.sock"
            ));
            assert!(wrapped[2].contains(":0C38 "));
            assert!(wrapped[2].ends_with("exec \"$@\""));
            assert_eq!(&wrapped[3..], ["kennel-net", "sh", "-c", "exit 7"]);
        }
    }
}

#[test]
fn container_wrapper_is_valid_sh_and_execs_the_agent() {
    let plan = network_plan(None, "docker", &[]);
    let wrapped = container_command(&plan);
    let syntax = std::process::Command::new("sh")
        .args(["-n", "-c", &wrapped[2]])
        .output()
        .expect("sh");
    assert!(
        syntax.status.success(),
        "{}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // Without socat (as on most hosts running the unit tests, or an image
    // that lacks it) the agent still runs, with its arguments and exit code.
    let has_socat = std::process::Command::new("sh")
        .args(["-c", "command -v socat"])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .is_ok_and(|out| out.status.success());
    if has_socat {
        return; // it would listen on this machine's 127.0.0.1:3128: not in a unit test
    }
    let mut plan = plan;
    plan.command = vec![
        "sh".into(),
        "-c".into(),
        "echo \"$0|$1\"; exit 7".into(),
        "a b".into(),
        "c".into(),
    ];
    let wrapped = container_command(&plan);
    let out = std::process::Command::new(&wrapped[0])
        .args(&wrapped[1..])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no socat"));
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a b|c\n");
}

#[test]
fn proxy_socket_falls_back_to_the_data_dir() {
    let plan = network_plan(None, "docker", &[]);
    let proxy = plan.network.proxy.expect("proxy");
    assert_eq!(
        proxy.socket,
        Path::new("/home/alice/.local/share/kennel/proxy")
            .join(&plan.name)
            .join("proxy.sock")
    );
}

#[test]
fn proxy_variables_from_the_host_are_replaced_but_flags_win() {
    let config = config("");
    let catalog = Catalog::with_overrides(&config.file.agents).expect("catalog");
    let mut agent = catalog.get("shell").expect("shell").clone();
    agent.env.push("HTTPS_PROXY".into());
    let request = RunRequest {
        env: vec!["http_proxy=http://mine:1".into()],
        ..Default::default()
    };
    let plan = build_plan(
        &host(&[("HTTPS_PROXY", "http://corp:8080")]),
        &config,
        &agent,
        &workspace(),
        image(),
        &request,
    )
    .expect("plan");
    assert_eq!(plan.env_value("HTTPS_PROXY"), Some("http://127.0.0.1:3128"));
    assert_eq!(plan.env_value("http_proxy"), Some("http://mine:1"));
    assert_eq!(
        plan.env.iter().filter(|v| v.name == "HTTPS_PROXY").count(),
        1
    );
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_bytes("512m", "--memory").ok(), Some(512 << 20));
    assert_eq!(parse_bytes("4G", "--memory").ok(), Some(4 << 30));
    assert!(parse_bytes("lots", "--memory").is_err());
}

#[test]
fn identity_files_name_the_user() {
    let user = UserPlan {
        uid: 1000,
        gid: 1001,
        name: "alice".into(),
        home: "/home/alice".into(),
        shell: "/bin/bash".into(),
    };
    let (passwd, group) = identity_files(&user);
    assert!(passwd.contains("alice:x:1000:1001:alice:/home/alice:/bin/bash\n"));
    assert!(group.contains("alice:x:1001:\n"));
}

#[test]
fn session_command_wraps_the_agent_in_tmux() {
    let agent = vec!["claude".to_string(), "--arg with space".to_string()];
    let command = session_command(&agent);
    assert_eq!(&command[..2], &["sh".to_string(), "-c".to_string()]);
    assert_eq!(command[3], "kennel-session");
    // The agent's argv is passed as arguments, never spliced into the script.
    assert_eq!(&command[4..], &agent[..]);
    let script = &command[2];
    assert!(!script.contains("claude"), "{script}");
    assert!(
        script.contains(&format!(
            "tmux -S {SESSION_TMUX_SOCKET} new-session -d -s {SESSION_TMUX_TARGET}"
        )),
        "{script}"
    );
    assert!(
        script.contains(&format!(
            "pipe-pane -o -t {SESSION_TMUX_TARGET} 'cat >> {SESSION_LOG}'"
        )),
        "{script}"
    );
    assert!(script.contains("has-session"), "{script}");
    assert!(script.contains(SESSION_EXIT_FILE), "{script}");
    // The script is valid sh.
    let status = std::process::Command::new("sh")
        .args(["-n", "-c", script])
        .status()
        .expect("sh runs");
    assert!(status.success(), "{script}");
}

#[test]
fn session_tmux_uses_the_session_socket() {
    assert_eq!(
        session_tmux(&["capture-pane", "-p"]),
        ["tmux", "-S", SESSION_TMUX_SOCKET, "capture-pane", "-p"]
    );
}

#[test]
fn limit_flags_override_the_config_and_bad_ones_are_usage_errors() {
    let host = host(&[]);
    let config = config("[defaults]\nmemory = \"1g\"\ncpus = 1.0\npids_limit = 200\n");
    let build = |request: &RunRequest| {
        build_plan(
            &host,
            &config,
            crate::catalog::Catalog::builtin()
                .expect("catalog")
                .get("shell")
                .expect("shell"),
            &workspace(),
            image(),
            request,
        )
    };
    let plan = build(&RunRequest::default()).expect("plan");
    assert_eq!(plan.limits.memory, Some(1 << 30));
    assert_eq!(plan.limits.cpus, Some(1.0));
    assert_eq!(plan.limits.pids, 200);
    let plan = build(&RunRequest {
        memory: Some("512m".into()),
        cpus: Some(0.5),
        pids_limit: Some(64),
        ..Default::default()
    })
    .expect("plan");
    assert_eq!(plan.limits.memory, Some(512 << 20));
    assert_eq!(plan.limits.cpus, Some(0.5));
    assert_eq!(plan.limits.pids, 64);
    for (request, key) in [
        (
            RunRequest {
                memory: Some("lots".into()),
                ..Default::default()
            },
            "--memory",
        ),
        (
            RunRequest {
                cpus: Some(-1.0),
                ..Default::default()
            },
            "--cpus",
        ),
        (
            RunRequest {
                pids_limit: Some(0),
                ..Default::default()
            },
            "--pids-limit",
        ),
    ] {
        match build(&request) {
            Err(error @ PlanError::BadValue { .. }) => {
                assert!(error.is_usage(), "{error}");
                assert!(error.to_string().contains(key), "{error}");
            }
            other => panic!("expected a bad value for {key}, got {other:?}"),
        }
    }
}

fn home_of(plan: &Plan) -> PathBuf {
    plan.mounts
        .iter()
        .find(|mount| mount.purpose == MountPurpose::AgentHome)
        .map(|mount| mount.source.clone())
        .expect("agent home")
}

#[test]
fn each_slot_has_its_own_home() {
    let host = host(&[]);
    let mut plan = plan_for("shell", &[], RunRequest::default());
    let base = agent_home(&host, "shell", Some(Path::new("/work/repo")));
    assert_eq!(plan.slot, 0);
    assert_eq!(home_of(&plan), base);
    use_slot(&mut plan, 3);
    assert_eq!(plan.slot, 3);
    assert_eq!(home_of(&plan), base.with_file_name("shell@3"));
    assert_eq!(base_home(&plan), Some(base.clone()));
    // Idempotent: a slot is always counted from the agent's home.
    use_slot(&mut plan, 2);
    assert_eq!(home_of(&plan), base.with_file_name("shell@2"));
    use_slot(&mut plan, 0);
    assert_eq!(home_of(&plan), base);
    assert_ne!(slot_home(&base, 1), slot_home(&base, 2));
    assert_eq!(slot_home(&base, 0), base);
    assert!(!home_is_shared(&plan, &host));
}

fn plan_in(root: &str, user_toml: &str) -> Plan {
    let config = config(user_toml);
    let catalog = Catalog::with_overrides(&config.file.agents).expect("catalog");
    let workspace = Workspace {
        root: root.into(),
        workdir: root.into(),
        protected: Vec::new(),
        ..Default::default()
    };
    build_plan(
        &host(&[]),
        &config,
        catalog.get("claude").expect("agent"),
        &workspace,
        image(),
        &RunRequest::default(),
    )
    .expect("plan")
}

/// Class 5 of issue 11: nothing of an agent's home carries from one
/// repository to another, unless the user's own config shares it.
#[test]
fn agent_homes_are_per_repository() {
    let host = host(&[]);
    let a = plan_in("/work/repo-a", "");
    let b = plan_in("/work/repo-b", "");
    assert_ne!(home_of(&a), home_of(&b), "two repositories share a home");
    assert_eq!(home_of(&a), home_of(&plan_in("/work/repo-a", "")));
    assert!(home_of(&a).starts_with(host.data_dir.join("repo-homes")));
    assert_ne!(home_of(&a), shared_agent_home(&host, "claude"));
    // Same directory name elsewhere: still another repository.
    assert_ne!(home_of(&a), home_of(&plan_in("/other/repo-a", "")));
    assert!(
        home_of(&a)
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("repo-a-")
    );

    let shared = "[defaults]\nshare_agent_home = true\n";
    let a = plan_in("/work/repo-a", shared);
    let b = plan_in("/work/repo-b", shared);
    assert_eq!(home_of(&a), shared_agent_home(&host, "claude"));
    assert_eq!(home_of(&a), home_of(&b));
    assert!(home_is_shared(&a, &host));
}

#[test]
fn repository_keys_are_plain_names() {
    for path in [
        "/",
        "/work/..",
        "/work/.hidden",
        "/work/a b/c:d",
        "/x/\u{e9}t\u{e9}",
    ] {
        let key = repository_key(Path::new(path));
        assert!(
            !key.is_empty() && !key.starts_with('.') && !key.contains('/'),
            "{path}: {key}"
        );
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')),
            "{path}: {key}"
        );
    }
}

#[test]
fn resume_adds_the_agents_resume_arguments() {
    let plan = plan_for(
        "claude",
        &[],
        RunRequest {
            resume: true,
            args: vec!["fix the tests".into()],
            ..Default::default()
        },
    );
    assert_eq!(
        plan.command,
        [
            "claude",
            "--dangerously-skip-permissions",
            "--continue",
            "fix the tests"
        ]
    );
    let plan = plan_for("claude", &[], RunRequest::default());
    assert!(!plan.command.iter().any(|arg| arg == "--continue"));
}

/// With an upstream proxy the address check is the upstream's too: the
/// Plan (and so `--dry-run` and every run) says exactly what is not
/// covered, without the proxy's credentials.
#[test]
fn upstream_proxy_says_what_the_address_check_does_not_cover() {
    let config = config("[network]\nupstream_proxy = \"http://user:secret@proxy.corp:3128\"\n");
    let plan = plan_with(&config, "shell", &RunRequest::default()).expect("plan");
    let warning = plan
        .warnings
        .iter()
        .find(|w| w.contains("upstream_proxy"))
        .unwrap_or_else(|| panic!("no upstream warning: {:?}", plan.warnings));
    assert!(warning.contains("http://proxy.corp:3128"), "{warning}");
    assert!(warning.contains("DNS rebinding"), "{warning}");
    assert!(!warning.contains("secret"), "{warning}");
    let none = plan_with(
        &config,
        "shell",
        &RunRequest {
            network: Some(NetworkMode::None),
            ..RunRequest::default()
        },
    )
    .expect("plan");
    assert!(none.warnings.iter().all(|w| !w.contains("upstream_proxy")));
}

#[test]
fn git_controls_are_read_only_and_their_directories_pinned_parents_first() {
    let config = config("");
    let catalog = Catalog::with_overrides(&config.file.agents).expect("catalog");
    let workspace = Workspace {
        protected: vec![
            "/work/repo/.git/modules/lib/config".into(),
            "/work/repo/.git/config".into(),
        ],
        pinned: vec![
            "/work/repo/.git/modules/lib".into(),
            "/work/repo/.git".into(),
            "/work/repo/.git/modules".into(),
        ],
        ..workspace()
    };
    let plan = build_plan(
        &host(&[]),
        &config,
        catalog.get("shell").expect("agent"),
        &workspace,
        image(),
        &RunRequest::default(),
    )
    .expect("plan");
    let controls: Vec<(String, bool)> = plan
        .mounts
        .iter()
        .filter(|m| m.purpose == MountPurpose::Protect)
        .map(|m| {
            assert_eq!(m.source, m.target);
            (m.target.display().to_string(), m.read_only)
        })
        .collect();
    let position = |path: &str| {
        controls
            .iter()
            .position(|(target, _)| target == path)
            .unwrap_or_else(|| panic!("{path} not mounted: {controls:?}"))
    };
    for (path, read_only) in [
        ("/work/repo/.git", false),
        ("/work/repo/.git/config", true),
        ("/work/repo/.git/modules", false),
        ("/work/repo/.git/modules/lib", false),
        ("/work/repo/.git/modules/lib/config", true),
    ] {
        assert_eq!(controls[position(path)].1, read_only, "{path}");
    }
    assert!(position("/work/repo/.git") < position("/work/repo/.git/config"));
    assert!(
        position("/work/repo/.git/modules/lib") < position("/work/repo/.git/modules/lib/config")
    );
    // The workspace comes before all of them.
    let workspace_at = plan
        .mounts
        .iter()
        .position(|m| m.purpose == MountPurpose::Workspace)
        .expect("workspace");
    let first_control = plan
        .mounts
        .iter()
        .position(|m| m.purpose == MountPurpose::Protect)
        .expect("controls");
    assert!(workspace_at < first_control);
}

fn you() -> crate::host::HostGit {
    crate::host::HostGit {
        name: Some("Ada \"the\" Lovelace".into()),
        email: Some("ada@example.org".into()),
        default_branch: Some("trunk".into()),
    }
}

/// `git_identity = "user"` (the default): your name, email and default
/// branch reach git inside through a generated system config, and nothing
/// else of your git config does.
#[test]
fn your_git_identity_reaches_the_sandbox() {
    let plan = plan_with(
        &config(""),
        "claude",
        &RunRequest {
            host_git: you(),
            ..RunRequest::default()
        },
    )
    .expect("plan");
    let identity = plan.git_identity.clone().expect("identity");
    assert_eq!(
        (
            identity.source.as_str(),
            identity.name.as_str(),
            identity.email.as_str()
        ),
        ("user", "Ada \"the\" Lovelace", "ada@example.org")
    );
    let mount = plan
        .mounts
        .iter()
        .find(|m| m.target == std::path::Path::new(GIT_CONFIG_INSIDE))
        .expect("git config mount");
    assert!(mount.read_only);
    assert_eq!(plan.env_value("GIT_CONFIG_SYSTEM"), Some(GIT_CONFIG_INSIDE));
    let text = git_config_text(&identity);
    assert!(
        text.contains("name = \"Ada \\\"the\\\" Lovelace\""),
        "{text}"
    );
    assert!(text.contains("defaultBranch = \"trunk\""), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(" = ")).count(),
        3,
        "{text}"
    );
    // Another identity, another file.
    let agent = plan_with(
        &config("[defaults]\ngit_identity = \"agent\"\n"),
        "claude",
        &RunRequest {
            host_git: you(),
            ..RunRequest::default()
        },
    )
    .expect("plan");
    let agent_identity = agent.git_identity.clone().expect("identity");
    assert_eq!(
        (
            agent_identity.source.as_str(),
            agent_identity.name.as_str(),
            agent_identity.email.as_str()
        ),
        ("agent", "Claude", "noreply@anthropic.com")
    );
    let source = |plan: &Plan| {
        plan.mounts
            .iter()
            .find(|m| m.target == std::path::Path::new(GIT_CONFIG_INSIDE))
            .map(|m| m.source.clone())
    };
    assert_ne!(source(&agent), Some(mount.source.clone()));
}

#[test]
fn git_identity_falls_back_to_the_agent_and_can_be_fixed() {
    let plan = plan_with(&config(""), "codex", &RunRequest::default()).expect("plan");
    let identity = plan.git_identity.clone().expect("identity");
    assert_eq!(
        (identity.source.as_str(), identity.name.as_str()),
        ("agent", "codex (kennel)")
    );
    assert!(
        identity
            .note
            .as_deref()
            .is_some_and(|note| note.contains("no user.name")),
        "{identity:?}"
    );
    let fixed = plan_with(
        &config("[defaults]\ngit_identity = { name = \"Bot\", email = \"bot@example.org\" }\n"),
        "codex",
        &RunRequest::default(),
    )
    .expect("plan");
    let identity = fixed.git_identity.expect("identity");
    assert_eq!(
        (
            identity.source.as_str(),
            identity.name.as_str(),
            identity.email.as_str()
        ),
        ("config", "Bot", "bot@example.org")
    );
    let bad = plan_with(
        &config("[defaults]\ngit_identity = \"someone\"\n"),
        "codex",
        &RunRequest::default(),
    );
    assert!(
        matches!(&bad, Err(PlanError::BadValue { key, .. }) if key == "defaults.git_identity"),
        "{bad:?}"
    );
    let newline = plan_with(
        &config("[defaults]\ngit_identity = { name = \"Bot\\n[core]\", email = \"b@x\" }\n"),
        "codex",
        &RunRequest::default(),
    );
    assert!(
        matches!(newline, Err(PlanError::BadValue { .. })),
        "{newline:?}"
    );
}

#[test]
fn the_plan_carries_everything_the_proxy_needs_and_prints_no_credentials() {
    let with_proxy = config(
        "[network]\n\
         upstream_proxy = \"http://user:secret@proxy.corp:3128\"\n\
         trusted = [\"10.1.0.0/16\"]\n\
         [network.hosts]\n\
         \"git.internal\" = [\"10.1.2.3\"]\n",
    );
    let plan = plan_with(&with_proxy, "shell", &RunRequest::default()).expect("plan");
    let proxy = plan.network.proxy.as_ref().expect("a proxy");
    assert_eq!(
        proxy.upstream.as_deref(),
        Some("http://user:secret@proxy.corp:3128")
    );
    assert_eq!(proxy.trusted, ["10.1.0.0/16"]);
    assert_eq!(
        proxy.hosts["git.internal"],
        ["10.1.2.3".parse::<std::net::IpAddr>().expect("address")]
    );
    // What --dry-run prints and the registry keeps: no password.
    let printed = serde_json::to_string(&plan.redacted()).expect("json");
    assert!(!printed.contains("user:secret"), "{printed}");
    assert!(
        printed.contains("http://<redacted>@proxy.corp:3128"),
        "{printed}"
    );

    let bad = config("[network]\ntrusted = [\"10.1.0.0/99\"]\n");
    let error = plan_with(&bad, "shell", &RunRequest::default()).expect_err("refused");
    assert!(error.to_string().contains("network.trusted"), "{error}");
}

#[test]
fn a_kept_subscription_login_is_brokered_and_kennel_login_captures_one() {
    let login_of = |request: RunRequest| {
        plan_for("claude", &[], request)
            .network
            .proxy
            .expect("allowlist has a proxy")
            .logins
    };
    // No login kept, no `kennel login`: nothing to broker, no session CA.
    let plan = plan_for("claude", &[], RunRequest::default());
    assert!(
        plan.network
            .proxy
            .as_ref()
            .expect("proxy")
            .logins
            .is_empty()
    );
    assert_eq!(plan.env_value("NODE_EXTRA_CA_CERTS"), None);

    let kept = RunRequest {
        stored_logins: ["claude".to_string()].into(),
        ..Default::default()
    };
    let expected = LoginPlan {
        name: "claude".into(),
        token_host: "platform.claude.com".into(),
        token_path: "/v1/oauth/token".into(),
        hosts: vec!["api.anthropic.com".into()],
        header: "authorization".into(),
        capture: false,
    };
    assert_eq!(login_of(kept.clone()), std::slice::from_ref(&expected));
    // The proxy terminates TLS for it: the session CA is trusted inside.
    let plan = plan_for("claude", &[], kept);
    assert_eq!(
        plan.env_value("NODE_EXTRA_CA_CERTS"),
        Some(CA_BUNDLE_TARGET)
    );
    assert!(
        plan.mounts
            .iter()
            .any(|mount| mount.target == Path::new(SYSTEM_CA_BUNDLE))
    );
    // `kennel login` takes a new one.
    let login = RunRequest {
        login: true,
        ..Default::default()
    };
    assert_eq!(
        login_of(login),
        [LoginPlan {
            capture: true,
            ..expected
        }]
    );
    // Another agent's kept login is not this one's; an agent without a
    // brokered login has none.
    let other = RunRequest {
        stored_logins: ["codex".to_string()].into(),
        login: false,
        ..Default::default()
    };
    assert!(login_of(other).is_empty());

    // Without kennel's proxy: `kennel login` is refused (usage), a session
    // warns that the kept login is not used.
    let none = RunRequest {
        network: Some(NetworkMode::None),
        login: true,
        ..Default::default()
    };
    let error = plan_with(&config(""), "claude", &none).expect_err("refused");
    assert!(error.is_usage(), "{error}");
    assert!(error.to_string().contains("--network none"), "{error}");
    let open = RunRequest {
        network: Some(NetworkMode::Open),
        stored_logins: ["claude".to_string()].into(),
        ..Default::default()
    };
    let plan = plan_with(&config(""), "claude", &open).expect("plan");
    assert!(
        plan.warnings.iter().any(|w| w.contains("claude login")),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn oauth_token_urls_must_be_plain_https() {
    let binding = |url: &str| crate::credentials::OAuthBinding {
        command: vec!["x".into()],
        token_url: url.into(),
        hosts: vec!["api.example.com".into()],
        header: "authorization".into(),
    };
    assert_eq!(
        binding("https://auth.example.com/oauth/token").token_endpoint(),
        Some(("auth.example.com".into(), "/oauth/token".into()))
    );
    for bad in [
        "http://auth.example.com/oauth/token",
        "https://auth.example.com:8443/oauth/token",
        "https://user@auth.example.com/oauth/token",
        "https://auth.example.com/oauth/token?x=1",
        "https://*.example.com/oauth/token",
        "https://auth.example.com",
    ] {
        assert_eq!(binding(bad).token_endpoint(), None, "{bad}");
        assert!(binding(bad).check("x").is_err(), "{bad}");
    }
}

#[test]
fn a_devcontainer_adds_variables_under_yours_and_runs_its_commands_first() {
    let devcontainer = crate::devcontainer::parse(
        Path::new("/home/u/app/.devcontainer/devcontainer.json"),
        r#"{ "containerEnv": { "DEMO": "1", "EXTRA": "theirs" }, "postStartCommand": "make dev", "mounts": [] }"#,
    )
    .expect("parses");
    let request = RunRequest {
        env: vec!["EXTRA=mine".into()],
        devcontainer: Some(devcontainer.clone()),
        ..Default::default()
    };
    let plan = plan_with(&config(""), "shell", &request).expect("plan");
    assert_eq!(plan.env_value("DEMO"), Some("1"));
    assert_eq!(plan.env_value("EXTRA"), Some("mine"), "yours wins");
    assert_eq!(plan.command[..2], ["sh".to_string(), "-c".to_string()]);
    assert!(plan.command[2].contains("'make dev'"), "{:?}", plan.command);
    assert_eq!(plan.command[3], "kennel-devcontainer");
    assert_eq!(
        plan.devcontainer.as_deref(),
        Some(Path::new("/home/u/app/.devcontainer/devcontainer.json"))
    );
    assert!(
        plan.warnings.iter().any(|w| w.contains("mounts")),
        "{:?}",
        plan.warnings
    );

    // The native backend uses none of it, and says so.
    let native = RunRequest {
        on_host: true,
        devcontainer: Some(devcontainer),
        ..Default::default()
    };
    let plan = plan_with(&config(""), "shell", &native).expect("plan");
    assert_eq!(plan.env_value("DEMO"), None);
    assert_eq!(plan.devcontainer, None);
    assert!(
        plan.warnings.iter().any(|w| w.contains("is not used")),
        "{:?}",
        plan.warnings
    );
}
