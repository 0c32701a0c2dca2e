//! A Plan as an Incus instance: its name, config and devices, and the
//! argument vector that runs a command in it as the Plan's user.
//!
//! Pure: everything here is a function of the Plan, unit-tested without
//! Incus.

use std::collections::BTreeMap;

use kennel_core::plan::{NetworkMode, Plan};
use kennel_incus::{ImageSource, NewInstance};

/// Config keys kennel reads back: the Plan's labels, as `user.<label>`.
pub fn label_key(label: &str) -> String {
    format!("user.{label}")
}

/// An Incus instance name for the Plan's sandbox name: Incus wants a host
/// name (letters, digits and `-`, at most 63, not starting with a digit or
/// `-`).
pub fn instance_name(sandbox: &str) -> String {
    let mut name: String = sandbox
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "k-");
    }
    name.truncate(63);
    name.trim_end_matches('-').to_string()
}

/// The image a Plan's `image.reference` names in Incus: kennel's own
/// images by their tag (an alias), others as given (see
/// [`incus_reference`]).
pub fn image_source(reference: &str) -> ImageSource {
    incus_reference(reference).unwrap_or_else(|| ImageSource::Alias(reference.to_string()))
}

/// The public image server Incus's `images:` remote names.
pub const IMAGES_SERVER: &str = "https://images.linuxcontainers.org";

/// A reference written the way `incus` writes Incus images, which no
/// Docker reference is: `local:ALIAS` (an image of the user's project) or
/// `images:NAME` (the public image server, e.g. `images:debian/12`).
pub fn incus_reference(reference: &str) -> Option<ImageSource> {
    if let Some(alias) = reference.strip_prefix("local:") {
        return Some(ImageSource::Alias(alias.to_string()));
    }
    reference
        .strip_prefix("images:")
        .map(|alias| ImageSource::Remote {
            server: IMAGES_SERVER.to_string(),
            protocol: "simplestreams".to_string(),
            alias: alias.to_string(),
        })
}

/// The instance that runs `plan` from `source`.
///
/// Unprivileged, no nesting; the user's uid and gid mapped to themselves
/// (files in the workspace keep their owner); every Plan mount a disk
/// device (read-only where the Plan says); no network device unless the
/// Plan's network is `open` (the proxy's socket directory is one of the
/// mounts); the Plan's limits; its labels as `user.*` keys.
pub fn new_instance(plan: &Plan, name: &str, source: ImageSource) -> NewInstance {
    let uid = plan.user.uid;
    let gid = plan.user.gid;
    let mut instance = NewInstance::from_image(name, source)
        .ephemeral(plan.ephemeral)
        .config("security.privileged", "false")
        .config("security.nesting", "false")
        .config("boot.autostart", "false")
        .config("raw.idmap", format!("uid {uid} {uid}\ngid {gid} {gid}"));
    if plan.limits.pids > 0 {
        instance = instance.config("limits.processes", plan.limits.pids.to_string());
    }
    if let Some(memory) = plan.limits.memory.filter(|bytes| *bytes > 0) {
        instance = instance.config("limits.memory", memory.to_string());
    }
    if let Some(cpus) = plan.limits.cpus.filter(|cpus| *cpus > 0.0) {
        // A share of CPU time, as `--cpus` is for the engines.
        let per_100ms = (cpus * 100.0).round().max(1.0) as u64;
        instance = instance.config("limits.cpu.allowance", format!("{per_100ms}ms/100ms"));
    }
    for (key, value) in &plan.labels {
        instance = instance.config(label_key(key), value.clone());
    }
    // Incus gives these to every command run in the container, so that a
    // later `kennel exec` (which has only the registry's Plan, its secrets
    // redacted) runs with the session's values: credentials and the
    // brokered credentials' placeholders.
    for var in plan.env.iter().filter(|var| var.secret) {
        instance = instance.config(format!("environment.{}", var.name), var.value.clone());
    }
    if plan.network.mode != NetworkMode::Open {
        // Masks the NIC a profile would give (Incus's default profile
        // names it eth0); anything else a profile adds is refused once
        // the instance exists (see `crate::check_no_network`).
        instance = instance.device("eth0", [("type", "none")]);
    }
    for (index, mount) in plan.mounts.iter().enumerate() {
        instance = instance.device(
            format!("kennel-mount-{index}"),
            [
                ("type", "disk".to_string()),
                ("source", mount.source.display().to_string()),
                ("path", mount.target.display().to_string()),
                ("readonly", mount.read_only.to_string()),
            ],
        );
    }
    instance
}

/// The Plan's environment for `exec` (the engines give it to the
/// container; Incus gives it to each command).
pub fn environment(plan: &Plan, image_env: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut env = image_env.clone();
    // Secrets are the container's own (see `new_instance`): a Plan read
    // back from the registry has them redacted.
    for var in plan.env.iter().filter(|var| !var.secret) {
        env.insert(var.name.clone(), var.value.clone());
    }
    env
}

/// `command` run as the Plan's user, the way the engines run the agent:
/// every capability dropped (also from the bounding and inheritable sets),
/// no new privileges, no supplementary groups, no core dumps. Incus runs
/// it as the container's root; `setpriv` (util-linux, in every Debian)
/// drops to the user before the command starts.
pub fn as_agent(plan: &Plan, command: &[String]) -> Vec<String> {
    let mut argv: Vec<String> = vec![
        "prlimit".into(),
        "--core=0".into(),
        "--".into(),
        "setpriv".into(),
        format!("--reuid={}", plan.user.uid),
        format!("--regid={}", plan.user.gid),
        "--clear-groups".into(),
        "--inh-caps=-all".into(),
        "--ambient-caps=-all".into(),
        "--bounding-set=-all".into(),
    ];
    if plan.security.no_new_privileges {
        argv.push("--no-new-privs".into());
    }
    argv.push("--".into());
    argv.extend(command.iter().cloned());
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use kennel_core::plan::{Mount, MountPurpose};

    fn plan() -> Plan {
        let mut plan: Plan =
            serde_json::from_str(include_str!("../../kennel-core/tests/fixtures/plan.json"))
                .expect("a Plan");
        plan.mounts = vec![
            Mount {
                source: "/home/alice/repo".into(),
                target: "/home/alice/repo".into(),
                read_only: false,
                purpose: MountPurpose::Workspace,
            },
            Mount {
                source: "/home/alice/repo/.git/config".into(),
                target: "/home/alice/repo/.git/config".into(),
                read_only: true,
                purpose: MountPurpose::Protect,
            },
        ];
        plan
    }

    #[test]
    fn names_are_host_names() {
        assert_eq!(
            instance_name("kennel-shell-repo-0a1b2c3d"),
            "kennel-shell-repo-0a1b2c3d"
        );
        assert_eq!(
            instance_name("kennel-shell-my_repo.v2-0a1b"),
            "kennel-shell-my-repo-v2-0a1b"
        );
        assert_eq!(instance_name("0abc"), "k-0abc");
        assert!(instance_name(&"x".repeat(100)).len() <= 63);
        assert_eq!(
            image_source("local:kennel/base:1"),
            ImageSource::Alias("kennel/base:1".into())
        );
    }

    #[test]
    fn incus_references_are_told_from_docker_ones() {
        assert_eq!(
            incus_reference("images:debian/12"),
            Some(ImageSource::Remote {
                server: IMAGES_SERVER.into(),
                protocol: "simplestreams".into(),
                alias: "debian/12".into()
            })
        );
        assert_eq!(
            incus_reference("local:my/base"),
            Some(ImageSource::Alias("my/base".into()))
        );
        for docker in [
            "debian:bookworm-slim",
            "docker.io/library/debian:12",
            "kennel/shell:abc",
        ] {
            assert_eq!(incus_reference(docker), None, "{docker}");
        }
        assert_eq!(
            image_source("kennel/shell:abc"),
            ImageSource::Alias("kennel/shell:abc".into())
        );
    }

    #[test]
    fn the_plan_as_an_instance() {
        let mut plan = plan();
        plan.limits.memory = Some(512 * 1024 * 1024);
        plan.limits.cpus = Some(1.5);
        let instance = new_instance(&plan, "k1", image_source("kennel/shell:abc"));
        assert_eq!(instance.config["security.privileged"], "false");
        assert_eq!(instance.config["security.nesting"], "false");
        assert_eq!(
            instance.config["raw.idmap"],
            format!("uid {0} {0}\ngid {1} {1}", plan.user.uid, plan.user.gid)
        );
        assert_eq!(
            instance.config["limits.processes"],
            plan.limits.pids.to_string()
        );
        assert_eq!(instance.config["limits.memory"], "536870912");
        assert_eq!(instance.config["limits.cpu.allowance"], "150ms/100ms");
        assert_eq!(instance.devices["eth0"]["type"], "none");
        let workspace = &instance.devices["kennel-mount-0"];
        assert_eq!(workspace["source"], "/home/alice/repo");
        assert_eq!(workspace["readonly"], "false");
        assert_eq!(instance.devices["kennel-mount-1"]["readonly"], "true");
        for (key, value) in &plan.labels {
            assert_eq!(&instance.config[&label_key(key)], value);
        }
        // Secrets live in the container's config, not in each command's
        // request (a Plan from the registry has them redacted).
        plan.env.push(kennel_core::plan::EnvVar {
            name: "API_TOKEN".into(),
            value: "placeholder-123".into(),
            origin: "broker".into(),
            secret: true,
        });
        let with_secret = new_instance(&plan, "k1", image_source("x"));
        assert_eq!(
            with_secret.config["environment.API_TOKEN"],
            "placeholder-123"
        );
        assert!(!environment(&plan, &BTreeMap::new()).contains_key("API_TOKEN"));
        plan.network.mode = NetworkMode::Open;
        let open = new_instance(&plan, "k1", image_source("x"));
        assert!(!open.devices.contains_key("eth0"));
    }

    #[test]
    fn the_agent_runs_as_the_user_without_privileges() {
        let plan = plan();
        let argv = as_agent(&plan, &["claude".to_string(), "--x".to_string()]);
        let text = argv.join(" ");
        assert!(text.starts_with("prlimit --core=0 -- setpriv"), "{text}");
        assert!(
            text.contains(&format!("--reuid={}", plan.user.uid)),
            "{text}"
        );
        assert!(text.contains("--bounding-set=-all"), "{text}");
        assert!(text.contains("--no-new-privs"), "{text}");
        assert!(text.ends_with("-- claude --x"), "{text}");
    }
}
