use super::*;
use kennel_core::plan::{EnvVar as PlanVar, Mount, NetworkMode};

fn plan() -> Plan {
    let mut plan: Plan = serde_json::from_str(include_str!(
        "../../../kennel-core/tests/fixtures/plan.json"
    ))
    .expect("a Plan");
    plan.user.uid = 1000;
    plan.user.gid = 1000;
    plan.user.name = "alice".into();
    plan.command = vec!["bash".into()];
    plan.network.proxy = None;
    plan.network.mode = NetworkMode::Open;
    plan.security.image_init = None;
    plan.security.seccomp_profile = None;
    plan.limits.pids = 0;
    plan.limits.memory = Some(512 * 1024 * 1024);
    plan.limits.cpus = Some(1.5);
    plan.env = vec![
        PlanVar {
            name: "HOME".into(),
            value: "/home/alice".into(),
            origin: "kennel".into(),
            secret: false,
        },
        PlanVar {
            name: "ANTHROPIC_API_KEY".into(),
            value: "sk-secret".into(),
            origin: "host".into(),
            secret: true,
        },
    ];
    plan.labels = BTreeMap::from([
        ("dev.kennel.agent".to_string(), "shell".to_string()),
        ("dev.kennel.session".to_string(), "0a1b2c3d4e5f".to_string()),
    ]);
    plan.workdir = "/home/alice/repo".into();
    plan.mounts = vec![
        Mount {
            source: "/home/alice/repo".into(),
            target: "/home/alice/repo".into(),
            read_only: false,
            purpose: MountPurpose::Workspace,
        },
        Mount {
            source: "/home/alice/repo/.git/hooks".into(),
            target: "/home/alice/repo/.git/hooks".into(),
            read_only: true,
            purpose: MountPurpose::Protect,
        },
        Mount {
            source: "/home/alice/.local/share/kennel/homes/shell".into(),
            target: "/home/alice".into(),
            read_only: false,
            purpose: MountPurpose::AgentHome,
        },
    ];
    plan
}

fn settings() -> PodSettings {
    PodSettings {
        image: "registry.example/kennel/shell:abc".into(),
        runtime_class: None,
        home: HomeVolume::InPod,
    }
}

/// The agent's home as a claim: one per home the Plan mounts (so per agent
/// and repository), kept apart from the session's labels (it outlives the
/// session), and mounted where the home is, writable by the agent's group.
#[test]
fn the_home_as_a_claim() {
    let claimed = PodSettings {
        home: HomeVolume::Claim {
            storage_class: Some("fast".into()),
            size: "5Gi".into(),
        },
        ..settings()
    };
    let made = pod_for(&plan(), &claimed).expect("a Pod");
    let claim = made.home_claim.as_ref().expect("a claim");
    insta::assert_json_snapshot!("the_home_as_a_claim", claim);
    let claim_name = claim.metadata.name.clone().expect("named");
    let spec = made.pod.spec.as_ref().expect("a spec");
    let home = spec
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == "home")
        .expect("the home's volume");
    assert_eq!(
        home.persistent_volume_claim
            .as_ref()
            .map(|source| source.claim_name.as_str()),
        Some(claim_name.as_str())
    );
    assert!(home.empty_dir.is_none());
    let context = spec.security_context.as_ref().expect("a security context");
    assert_eq!(context.fs_group, Some(1000));
    assert_eq!(
        context.fs_group_change_policy.as_deref(),
        Some("OnRootMismatch")
    );

    // Another repository's home (another mount source) is another claim;
    // the same home is the same claim, Pod after Pod.
    let mut elsewhere = plan();
    for mount in &mut elsewhere.mounts {
        if mount.purpose == MountPurpose::AgentHome {
            mount.source = "/home/alice/.local/share/kennel/repo-homes/other-0123/shell".into();
        }
    }
    let other = pod_for(&elsewhere, &claimed).expect("a Pod");
    let other_name = other.home_claim.and_then(|claim| claim.metadata.name);
    assert_ne!(other_name.as_deref(), Some(claim_name.as_str()));
    let again = pod_for(&plan(), &claimed).expect("a Pod");
    assert_eq!(
        again.home_claim.and_then(|claim| claim.metadata.name),
        Some(claim_name)
    );

    // In the Pod, the home is an emptyDir and there is no claim.
    let in_pod = pod_for(&plan(), &settings()).expect("a Pod");
    assert!(in_pod.home_claim.is_none());
}

#[test]
fn sizes_are_kubernetes_quantities() {
    for size in ["10Gi", "500M", "1.5Ti", "1073741824", "2k"] {
        assert!(is_size(size), "{size}");
    }
    for size in [
        "", "Gi", "10 Gi", "10GB", "-1Gi", "1.Gi", ".5Gi", "1e3", "10gi",
    ] {
        assert!(!is_size(size), "{size}");
    }
}

#[test]
fn the_plan_as_a_pod() {
    let made = pod_for(&plan(), &settings()).expect("a Pod");
    assert!(made.warnings.is_empty(), "{:?}", made.warnings);
    insta::assert_json_snapshot!("the_plan_as_a_pod", made.pod);
}

#[test]
fn secret_variables_are_read_from_a_secret_never_written_in_the_pod() {
    let made = pod_for(&plan(), &settings()).expect("a Pod");
    let spec = serde_json::to_string(&made.pod).expect("json");
    assert!(
        !spec.contains("sk-secret"),
        "the secret is in the Pod: {spec}"
    );
    let secret = made.secret.expect("a Secret");
    assert_eq!(
        secret.metadata.name.as_deref(),
        Some("kennel-shell-dr-881d87de-env")
    );
    assert_eq!(
        secret.string_data.expect("data")["ANTHROPIC_API_KEY"],
        "sk-secret"
    );
    // No secret variable, no Secret.
    let mut plan = plan();
    plan.env.retain(|var| !var.secret);
    assert_eq!(pod_for(&plan, &settings()).expect("a Pod").secret, None);
}

#[test]
fn what_a_pod_cannot_do_is_said() {
    let mut plan = plan();
    plan.limits.pids = 4096;
    plan.security.seccomp_profile = Some("/var/lib/kennel/seccomp/kennel.json".into());
    plan.mounts.push(Mount {
        source: "/home/alice/.local/share/kennel/identity/1000/passwd".into(),
        target: "/etc/passwd".into(),
        read_only: true,
        purpose: MountPurpose::Identity,
    });
    plan.labels
        .insert("dev.kennel.workspace".into(), "/home/alice/repo".into());
    plan.labels.insert("Dev.Kennel/x".into(), "y".into());
    let made = pod_for(&plan, &settings()).expect("a Pod");
    let said = made.warnings.join("\n");
    for expected in [
        "RuntimeDefault",
        "4096 processes",
        "/etc/passwd is not in the Pod",
        "the label Dev.Kennel/x=y is not a Kubernetes label",
    ] {
        assert!(said.contains(expected), "{expected:?} not in {said}");
    }
    // The workspace's path is no label value: it is an annotation.
    assert!(!said.contains("dev.kennel.workspace"), "{said}");
    let labels = made.pod.metadata.labels.expect("labels");
    assert!(!labels.contains_key("dev.kennel.workspace"));
    assert!(!labels.contains_key("Dev.Kennel/x"));
    assert_eq!(labels["dev.kennel.session"], "0a1b2c3d4e5f");
    let annotations = made.pod.metadata.annotations.expect("annotations");
    assert_eq!(annotations["dev.kennel.workspace"], "/home/alice/repo");
    assert!(!annotations.contains_key("Dev.Kennel/x"));
}

#[test]
fn root_in_the_plan_is_not_promised_non_root_and_init_comes_first() {
    let mut plan = plan();
    plan.user.uid = 0;
    plan.user.gid = 0;
    plan.security.init = true;
    plan.security.image_init = Some("/usr/bin/tini".into());
    let made = pod_for(&plan, &settings()).expect("a Pod");
    let spec = made.pod.spec.expect("spec");
    let container = &spec.containers[0];
    assert_eq!(
        container.command.as_deref(),
        Some(&["/usr/bin/tini".to_string(), "--".into(), "bash".into()][..])
    );
    let context = container.security_context.as_ref().expect("context");
    assert_eq!(context.run_as_non_root, Some(false));
    assert_eq!(
        context.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(context.allow_privilege_escalation, Some(false));
}

#[test]
fn names_become_kubernetes_names() {
    assert_eq!(
        object_name("kennel-shell-repo-0a1b2c3d").as_deref(),
        Some("kennel-shell-repo-0a1b2c3d")
    );
    assert_eq!(
        object_name("Kennel_Shell.My Repo-1").as_deref(),
        Some("kennel-shell-my-repo-1")
    );
    assert_eq!(object_name("0abc").as_deref(), Some("k-0abc"));
    assert_eq!(object_name("---").as_deref(), None);
    assert_eq!(object_name("").as_deref(), None);
    assert_eq!(object_name("ünïcödé").as_deref(), Some("k--n-c-d"));
    let long = object_name(&"x".repeat(300)).expect("a name");
    assert!(long.len() + "-env".len() <= 63, "{long}");
    assert_eq!(
        pod_for(
            &Plan {
                name: "//".into(),
                ..plan()
            },
            &settings()
        ),
        Err(PodError::Name("//".into()))
    );
}

#[test]
fn label_rules() {
    for good in [
        "dev.kennel.agent",
        "app.kubernetes.io/managed-by",
        "a",
        "a_b.c-d",
    ] {
        assert!(label_key_fits(good), "{good}");
    }
    for bad in [
        "",
        "-a",
        "a-",
        "a/b/c",
        "Dev.Kennel/x",
        "a/",
        &"k".repeat(64),
    ] {
        assert!(!label_key_fits(bad), "{bad}");
    }
    assert!(label_value_fits(""));
    assert!(!label_value_fits("/home/alice"));
}

#[test]
fn a_pod_is_walled_in_unless_its_network_is_open() {
    let mut plan = plan();
    let open = pod_for(&plan, &settings()).expect("a Pod");
    assert_eq!(open.policy, None);

    plan.network.mode = NetworkMode::None;
    let closed = pod_for(&plan, &settings()).expect("a Pod");
    assert!(closed.warnings.is_empty(), "{:?}", closed.warnings);
    let policy = closed.policy.expect("a NetworkPolicy");
    let spec = policy.spec.expect("spec");
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_string(), "Egress".to_string()][..])
    );
    assert_eq!(spec.ingress, Some(Vec::new()));
    assert_eq!(spec.egress, Some(Vec::new()));
    // It selects this Pod, by a label the Pod has.
    let selected = spec
        .pod_selector
        .and_then(|selector| selector.match_labels)
        .expect("labels");
    let labels = closed.pod.metadata.labels.expect("labels");
    for (key, value) in &selected {
        assert_eq!(labels.get(key), Some(value), "{key}");
    }
    assert_eq!(selected[POD_LABEL], "kennel-shell-dr-881d87de");

    // The proxy is not on the cluster: its Pods are closed too (the agent
    // reaches the proxy through the cluster's API).
    for mode in [NetworkMode::Allowlist, NetworkMode::Restricted] {
        plan.network.mode = mode;
        let made = pod_for(&plan, &settings()).expect("a Pod");
        let spec = made
            .policy
            .and_then(|policy| policy.spec)
            .expect("a policy");
        assert_eq!(spec.egress, Some(Vec::new()));
        assert_eq!(spec.ingress, Some(Vec::new()));
    }
}
