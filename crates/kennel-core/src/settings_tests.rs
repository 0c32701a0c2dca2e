use super::*;
use crate::catalog::Catalog;
use crate::config::{Config, ConfigSources};
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
    }
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
    plan.name = "<name>".into();
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
fn agent_credentials_pass_and_are_redacted() {
    let plan = plan_for(
        "claude",
        &[
            ("ANTHROPIC_API_KEY", "sk-test"),
            ("OPENAI_API_KEY", "other"),
        ],
        RunRequest::default(),
    );
    assert_eq!(plan.env_value("ANTHROPIC_API_KEY"), Some("sk-test"));
    assert_eq!(
        plan.env_value("OPENAI_API_KEY"),
        None,
        "not declared by claude"
    );
    assert_eq!(
        plan.redacted().env_value("ANTHROPIC_API_KEY"),
        Some("<redacted>")
    );
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
        Path::new("/home/alice/.local/share/kennel/homes/claude")
    );
    assert_eq!(home.target, Path::new("/home/alice"));
}

#[test]
fn bad_env_flag_is_a_usage_error() {
    let config = config("");
    let catalog = Catalog::builtin().expect("catalog");
    let request = RunRequest {
        env: vec!["1BAD".into()],
        ..Default::default()
    };
    let error = build_plan(
        &host(&[]),
        &config,
        catalog.get("shell").expect("shell"),
        &workspace(),
        image(),
        &request,
    )
    .expect_err("refused");
    assert!(error.is_usage());
}

#[test]
fn user_mounts_must_be_absolute_and_exist() {
    let config = config("[defaults]\nmounts = [\"relative:/x\"]\n");
    let catalog = Catalog::builtin().expect("catalog");
    let error = build_plan(
        &host(&[]),
        &config,
        catalog.get("shell").expect("shell"),
        &workspace(),
        image(),
        &RunRequest::default(),
    )
    .expect_err("refused");
    assert!(matches!(error, PlanError::BadMount { .. }));
    let config = config_with_mount();
    let plan = build_plan(
        &host(&[]),
        &config,
        catalog.get("shell").expect("shell"),
        &workspace(),
        image(),
        &RunRequest::default(),
    )
    .expect("plan");
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

#[test]
fn network_none_is_enforced_and_allowlist_warns() {
    let plan = plan_for(
        "shell",
        &[],
        RunRequest {
            network: Some(NetworkMode::None),
            ..Default::default()
        },
    );
    assert!(plan.network.enforced);
    assert!(plan.warnings.is_empty());
    let plan = plan_for(
        "claude",
        &[],
        RunRequest {
            allow: vec!["example.com".into()],
            ..Default::default()
        },
    );
    assert_eq!(plan.network.mode, NetworkMode::Allowlist);
    assert!(plan.network.allow.contains(&"example.com".to_string()));
    assert!(!plan.network.enforced);
    assert!(!plan.warnings.is_empty());
}

#[test]
fn sizes_parse() {
    assert_eq!(parse_bytes("512m").ok(), Some(512 << 20));
    assert_eq!(parse_bytes("4G").ok(), Some(4 << 30));
    assert!(parse_bytes("lots").is_err());
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
