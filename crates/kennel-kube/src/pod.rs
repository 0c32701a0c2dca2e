//! The Pod (and the Secret beside it) that a Plan makes.
//!
//! What the Plan asks of a sandbox, said in the Pod's own terms: the user's
//! uid and gid, every capability dropped, no privilege escalation, the
//! node's `RuntimeDefault` seccomp profile, a read-only root where the Plan
//! says, resource limits, no service-account token, no service links, no
//! host namespaces. What a Pod cannot take from the host — a bind mount of
//! the user's checkout, kennel's own seccomp profile, a pids limit of its
//! own — is said in [`SessionPod::warnings`] instead of being dropped in
//! silence. Variables marked secret go into a Secret that the Pod reads
//! (never into the Pod's spec, which anyone who may list Pods can read).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecurityContext, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kennel_core::plan::{MountPurpose, NetworkMode, Plan};

/// The container that runs the agent.
pub const AGENT_CONTAINER: &str = "agent";

/// Label of every object kennel makes on a cluster.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "kennel");

/// Label with the Pod's own name: what the session's NetworkPolicy selects.
pub const POD_LABEL: &str = "dev.kennel.pod";

/// Label of an agent home's claim: the agent whose home it is.
pub const HOME_LABEL: &str = "dev.kennel.home";

/// The size a home's claim asks for unless the user says otherwise.
pub const DEFAULT_HOME_SIZE: &str = "10Gi";

/// Where a session's Pod runs and what it runs: the cluster's side of the
/// settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSettings {
    /// The image as the cluster's nodes find it (a registry the user
    /// named, or one already on the nodes).
    pub image: String,
    /// A RuntimeClass (gVisor, Kata) for a stronger wall than the node's
    /// own kernel; None: the cluster's default.
    pub runtime_class: Option<String>,
    pub home: HomeVolume,
}

/// Where the agent's home lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HomeVolume {
    /// A directory of the Pod's own: it goes with the Pod.
    #[default]
    InPod,
    /// A PersistentVolumeClaim, one per agent and repository (named after
    /// the home the Plan mounts), made on first use and kept when the Pod
    /// goes, so that the agent's login and state carry over to the next
    /// session on the same repository and to no other.
    Claim {
        /// None: the cluster's default StorageClass.
        storage_class: Option<String>,
        /// What the claim asks for (a Kubernetes quantity: `10Gi`).
        size: String,
    },
}

/// A session's Pod, the Secret it reads its secret variables from (if any
/// variable is secret), the NetworkPolicy that walls it in (unless its
/// network is `open`), and what the Pod cannot do that the Plan asked.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionPod {
    pub pod: Pod,
    pub secret: Option<Secret>,
    pub policy: Option<NetworkPolicy>,
    /// The claim of the agent's home ([`HomeVolume::Claim`]): made if it
    /// is not there yet, never deleted with the Pod.
    pub home_claim: Option<PersistentVolumeClaim>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PodError {
    #[error("the Plan has no command to run")]
    NoCommand,
    #[error("the session's name `{0}` makes no Kubernetes name (letters or digits needed)")]
    Name(String),
    #[error("{what} is not UTF-8: {path}")]
    NotUtf8 { what: &'static str, path: String },
}

/// The Pod that runs `plan` as `settings` say.
pub fn pod_for(plan: &Plan, settings: &PodSettings) -> Result<SessionPod, PodError> {
    if plan.command.is_empty() {
        return Err(PodError::NoCommand);
    }
    let name = object_name(&plan.name).ok_or_else(|| PodError::Name(plan.name.clone()))?;
    let mut warnings = Vec::new();
    let (mut labels, annotations) = labels_of(plan, &mut warnings);
    labels.insert(POD_LABEL.to_string(), name.clone());
    let secret_name = format!("{name}-env");

    let mut env = Vec::with_capacity(plan.env.len());
    let mut secret_data = BTreeMap::new();
    for var in &plan.env {
        if var.secret {
            secret_data.insert(var.name.clone(), var.value.clone());
            env.push(EnvVar {
                name: var.name.clone(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret_name.clone(),
                        key: var.name.clone(),
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            });
        } else {
            env.push(EnvVar {
                name: var.name.clone(),
                value: Some(var.value.clone()),
                ..Default::default()
            });
        }
    }

    // The generated git config cannot be mounted: the identity the
    // agent's commits carry goes in as git's own variables instead.
    if let Some(identity) = &plan.git_identity {
        for (name, value) in [
            ("GIT_AUTHOR_NAME", &identity.name),
            ("GIT_AUTHOR_EMAIL", &identity.email),
            ("GIT_COMMITTER_NAME", &identity.name),
            ("GIT_COMMITTER_EMAIL", &identity.email),
        ] {
            if !plan.env.iter().any(|var| var.name == name) {
                env.push(EnvVar {
                    name: name.to_string(),
                    value: Some(value.clone()),
                    ..Default::default()
                });
            }
        }
    }

    // The workspace's directory is the mount point of a volume, owned by
    // root: git refuses a repository whose top is not the user's unless
    // protected config (git's variables count as the command line) says
    // it is safe. The Pod is the agent's own; so is its repository.
    if let Some(workspace) = plan.mount(MountPurpose::Workspace)
        && !plan.env.iter().any(|var| var.name == "GIT_CONFIG_COUNT")
    {
        for (name, value) in [
            ("GIT_CONFIG_COUNT", "1".to_string()),
            ("GIT_CONFIG_KEY_0", "safe.directory".to_string()),
            (
                "GIT_CONFIG_VALUE_0",
                utf8(&workspace.target, "the workspace")?,
            ),
        ] {
            env.push(EnvVar {
                name: name.to_string(),
                value: Some(value),
                ..Default::default()
            });
        }
    }

    let home_claim = home_claim_for(plan, &settings.home);
    let (volumes, volume_mounts) = volumes_of(plan, home_claim.as_ref(), &mut warnings)?;
    if plan.security.seccomp_profile.is_some() {
        warnings.push(
            "Kubernetes: the node's RuntimeDefault seccomp profile filters the agent's system \
             calls, not kennel's own profile (a Localhost profile would have to be on every node)"
                .to_string(),
        );
    }
    if plan.limits.pids > 0 {
        warnings.push(format!(
            "Kubernetes: the limit of {} processes is not the Pod's own; the node's podPidsLimit \
             applies",
            plan.limits.pids
        ));
    }

    let mut command = Vec::new();
    if let (Some(init), true) = (&plan.security.image_init, plan.security.init) {
        command.push(utf8(init, "the image's init")?);
        command.push("--".to_string());
    }
    command.extend(kennel_core::settings::container_command(plan));

    let non_root = plan.user.uid != 0;
    let container = Container {
        name: AGENT_CONTAINER.to_string(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        command: Some(command),
        working_dir: Some(utf8(&plan.workdir, "the working directory")?),
        env: Some(env),
        tty: Some(plan.tty),
        stdin: Some(plan.stdin),
        stdin_once: Some(plan.stdin),
        volume_mounts: Some(volume_mounts),
        resources: Some(resources_of(plan)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(!plan.security.no_new_privileges),
            capabilities: Some(Capabilities {
                drop: Some(plan.security.cap_drop.clone()),
                add: None,
            }),
            privileged: Some(false),
            read_only_root_filesystem: Some(plan.security.read_only_rootfs),
            run_as_non_root: Some(non_root),
            run_as_user: Some(i64::from(plan.user.uid)),
            run_as_group: Some(i64::from(plan.user.gid)),
            proc_mount: None,
            ..Default::default()
        }),
        ..Default::default()
    };

    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".to_string()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            host_network: Some(false),
            host_pid: Some(false),
            host_ipc: Some(false),
            share_process_namespace: Some(false),
            runtime_class_name: settings.runtime_class.clone(),
            termination_grace_period_seconds: Some(10),
            security_context: Some(PodSecurityContext {
                run_as_user: Some(i64::from(plan.user.uid)),
                run_as_group: Some(i64::from(plan.user.gid)),
                run_as_non_root: Some(non_root),
                // The home's claim is the agent's group's to write (where
                // its volume type lets the kubelet set ownership); checked
                // at its top only, so a large home does not slow a start.
                fs_group: Some(i64::from(plan.user.gid)),
                fs_group_change_policy: home_claim.as_ref().map(|_| "OnRootMismatch".to_string()),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_string(),
                    localhost_profile: None,
                }),
                ..Default::default()
            }),
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    };
    let policy = policy_for(plan, &name, &labels);
    let secret = (!secret_data.is_empty()).then(|| Secret {
        metadata: ObjectMeta {
            name: Some(secret_name),
            labels: Some(labels),
            ..Default::default()
        },
        string_data: Some(secret_data),
        type_: Some("Opaque".to_string()),
        ..Default::default()
    });
    Ok(SessionPod {
        pod,
        secret,
        policy,
        home_claim,
        warnings,
    })
}

/// The Pod of a session whose agent kennel starts later, by exec, once the
/// workspace is in and the walls hold ([`crate::Cluster::wait_walled`]): its
/// container only waits (a shell that ignores SIGTERM, under the image's
/// init when the Plan uses one, which reaps what the agent leaves), without
/// a terminal of its own.
pub fn waiting_pod_for(plan: &Plan, settings: &PodSettings) -> Result<SessionPod, PodError> {
    let mut session = pod_for(plan, settings)?;
    let mut command = Vec::new();
    if let (Some(init), true) = (&plan.security.image_init, plan.security.init) {
        command.push(utf8(init, "the image's init")?);
        command.push("--".to_string());
    }
    // It outlives a SIGTERM to every process of the user's (how kennel
    // ends the agent before its work is brought back): the loop starts
    // its sleep again.
    command.extend(
        [
            "/bin/sh",
            "-c",
            "trap '' TERM HUP INT; while :; do sleep 3600; done",
        ]
        .map(String::from),
    );
    if let Some(container) = session
        .pod
        .spec
        .as_mut()
        .and_then(|spec| spec.containers.first_mut())
    {
        container.command = Some(command);
        container.tty = Some(false);
        container.stdin = Some(false);
        container.stdin_once = Some(false);
    }
    Ok(session)
}

/// The NetworkPolicy of the Pod `name`: nothing in and nothing out, unless
/// the Plan's network is `open`. `allowlist` and `restricted` are closed
/// too: kennel's egress proxy is not on the cluster, and the agent reaches
/// it through the cluster's API (kennel-kube-backend's tunnel), never the
/// Pod's network.
fn policy_for(plan: &Plan, name: &str, labels: &BTreeMap<String, String>) -> Option<NetworkPolicy> {
    if plan.network.mode == NetworkMode::Open {
        return None;
    }
    Some(NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(format!("{name}-walls")),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(POD_LABEL.to_string(), name.to_string())])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".to_string(), "Egress".to_string()]),
            ingress: Some(Vec::new()),
            egress: Some(Vec::new()),
        }),
    })
}

/// A name Kubernetes takes for a Pod (an RFC 1123 label: lower-case letters,
/// digits and `-`, at most 63, a letter first and no `-` last), or None when
/// nothing of `name` is left.
pub fn object_name(name: &str) -> Option<String> {
    let mut object: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    if !object.chars().any(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    if !object.starts_with(|c: char| c.is_ascii_lowercase()) {
        object.insert_str(0, "k-");
    }
    // Leaves room for the Secret's `-env` and the policy's `-walls`.
    object.truncate(57);
    Some(object.trim_end_matches('-').to_string())
}

/// The Plan's labels that Kubernetes takes as they are, and kennel's own;
/// and as annotations, the Plan's labels whose values no label may hold
/// (a key that is not a Kubernetes key is left out, saying so).
fn labels_of(
    plan: &Plan,
    warnings: &mut Vec<String>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut labels = managed();
    let mut annotations = BTreeMap::new();
    for (key, value) in &plan.labels {
        if !label_key_fits(key) {
            warnings.push(format!(
                "Kubernetes: the label {key}={value} is not a Kubernetes label; left out"
            ));
        } else if label_value_fits(value) {
            labels.insert(key.clone(), value.clone());
        } else {
            // A value no label may hold (the workspace's path) is kept as
            // an annotation, which may hold any text.
            annotations.insert(key.clone(), value.clone());
        }
    }
    (labels, annotations)
}

/// The label every object kennel makes carries.
fn managed() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string())])
}

fn label_name_fits(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn label_key_fits(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= 253
                && prefix.split('.').all(|part| {
                    !part.is_empty()
                        && part
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                })
                && label_name_fits(name)
        }
        None => label_name_fits(key),
    }
}

fn label_value_fits(value: &str) -> bool {
    value.is_empty() || label_name_fits(value)
}

/// The claim of the agent's home, when the home is one: named after the
/// home the Plan mounts (`<data dir>/repo-homes/<repository>/<agent>`), so
/// one per agent and repository, as on every backend.
fn home_claim_for(plan: &Plan, home: &HomeVolume) -> Option<PersistentVolumeClaim> {
    let HomeVolume::Claim {
        storage_class,
        size,
    } = home
    else {
        return None;
    };
    let mount = plan.mount(MountPurpose::AgentHome)?;
    let digest = kennel_core::trust::content_digest(mount.source.as_os_str().as_encoded_bytes());
    let agent = object_name(&plan.agent).unwrap_or_else(|| "agent".to_string());
    let agent: String = agent.chars().take(30).collect();
    let name = format!(
        "kennel-home-{}-{}",
        agent.trim_end_matches('-'),
        &digest[..16]
    );
    let mut labels = managed();
    if label_value_fits(&plan.agent) {
        labels.insert(HOME_LABEL.to_string(), plan.agent.clone());
    }
    Some(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_string()]),
            storage_class_name: storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(size.clone()),
                )])),
                limits: None,
            }),
            ..Default::default()
        }),
        status: None,
    })
}

/// Is `text` a Kubernetes quantity (`10Gi`, `500M`, `1.5Ti`)? Only the
/// forms a size is written in: digits, an optional fraction, an optional
/// binary or decimal suffix.
pub fn is_size(text: &str) -> bool {
    let number = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &text[number.len()..];
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    !whole.is_empty()
        && whole.chars().all(|c| c.is_ascii_digit())
        && !fraction.is_empty()
        && fraction.chars().all(|c| c.is_ascii_digit())
        && matches!(
            suffix,
            "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "k" | "M" | "G" | "T" | "P" | "E"
        )
}

/// The Pod's volumes for the Plan's mounts: the workspace as a directory
/// of the Pod's own (kennel fills it; a Pod cannot bind-mount the user's
/// checkout), the agent's home as its claim or as the Pod's own, `/tmp`
/// when the root is read-only; host files the Pod cannot have are named
/// in `warnings`.
fn volumes_of(
    plan: &Plan,
    home_claim: Option<&PersistentVolumeClaim>,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Volume>, Vec<VolumeMount>), PodError> {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    // A volume of the Pod's own (an emptyDir), or the claim named `claim`.
    let mut add = |volume: &str, target: String, claim: Option<String>| {
        volumes.push(Volume {
            name: volume.to_string(),
            empty_dir: claim.is_none().then(EmptyDirVolumeSource::default),
            persistent_volume_claim: claim.map(|claim_name| PersistentVolumeClaimVolumeSource {
                claim_name,
                read_only: Some(false),
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: volume.to_string(),
            mount_path: target,
            ..Default::default()
        });
    };
    for mount in &plan.mounts {
        match mount.purpose {
            MountPurpose::Workspace => {
                add("workspace", utf8(&mount.target, "the workspace")?, None)
            }
            MountPurpose::AgentHome => add(
                "home",
                utf8(&mount.target, "the agent's home")?,
                home_claim.and_then(|claim| claim.metadata.name.clone()),
            ),
            // The workspace's protected paths and git's own: the Pod's
            // workspace is a copy, and nothing in it is the user's.
            MountPurpose::Protect | MountPurpose::Git => {}
            // Carried by git's variables instead (see the environment).
            MountPurpose::GitIdentity => {}
            // Reached through the cluster's API instead (the tunnel).
            MountPurpose::Proxy => {}
            MountPurpose::Identity
            | MountPurpose::CaCertificates
            | MountPurpose::HostConfig
            | MountPurpose::User => warnings.push(format!(
                "Kubernetes: {} is not in the Pod (a Pod cannot mount files of this machine)",
                mount.target.display()
            )),
        }
    }
    if plan.security.read_only_rootfs {
        add("tmp", "/tmp".to_string(), None);
    }
    // Parents before what lies in them (the home before a workspace in it),
    // whatever order the runtime mounts them in.
    mounts.sort_by_key(|mount| std::path::Path::new(&mount.mount_path).components().count());
    Ok((volumes, mounts))
}

fn resources_of(plan: &Plan) -> ResourceRequirements {
    let mut limits = BTreeMap::new();
    if let Some(memory) = plan.limits.memory.filter(|bytes| *bytes > 0) {
        limits.insert("memory".to_string(), Quantity(memory.to_string()));
    }
    if let Some(cpus) = plan.limits.cpus.filter(|cpus| *cpus > 0.0) {
        let millis = (cpus * 1000.0).round().max(1.0) as i64;
        limits.insert("cpu".to_string(), Quantity(format!("{millis}m")));
    }
    ResourceRequirements {
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    }
}

fn utf8(path: &std::path::Path, what: &'static str) -> Result<String, PodError> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| PodError::NotUtf8 {
            what,
            path: path.display().to_string(),
        })
}

#[cfg(test)]
mod tests;
