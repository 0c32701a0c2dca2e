//! The Pod a Plan makes, run on a real cluster (scripts/k8s-up.sh; the
//! set-up gives the test user a namespace and a kubeconfig of its own).
//!
//! A test skips (saying why) when there is no cluster, unless
//! `KENNEL_E2E=require`, which makes that a failure.

// Test code may print: why a test skipped.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::time::Duration;

use kennel_core::plan::{EnvVar, Mount, MountPurpose, Plan};
use kennel_kube::{Cluster, ClusterSettings, HomeVolume, PodSettings, Workload, pod_for};

fn required() -> bool {
    std::env::var("KENNEL_E2E").is_ok_and(|value| value == "require")
}

fn skip<T>(reason: &str) -> Option<T> {
    assert!(!required(), "KENNEL_E2E=require but {reason}");
    eprintln!("SKIP: {reason} (set KENNEL_E2E=require to make this a failure)");
    None
}

/// The test user's kubeconfig (its own namespace, `edit` there only):
/// `KENNEL_KUBE_TEST_KUBECONFIG`, else the one the set-up wrote.
fn kubeconfig() -> PathBuf {
    std::env::var_os("KENNEL_KUBE_TEST_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/home/kennel-e2e/.kube/config"))
}

const IMAGE: &str = "docker.io/kennel-test/bookworm:latest";
const UID: u32 = 1001;

async fn cluster() -> Option<Cluster> {
    let path = kubeconfig();
    if !path.exists() {
        return skip(&format!(
            "no kubeconfig at {} (run scripts/e2e-setup.sh as root)",
            path.display()
        ));
    }
    let settings = ClusterSettings {
        kubeconfig: Some(path),
        ..Default::default()
    };
    let cluster = match Cluster::connect(&settings).await {
        Ok(cluster) => cluster,
        Err(error) => return skip(&format!("no cluster: {error}")),
    };
    match cluster.version().await {
        Ok(_) => Some(cluster),
        Err(error) => skip(&format!("the cluster does not answer: {error}")),
    }
}

fn plan(name: &str, script: &str) -> Plan {
    let mut plan: Plan =
        serde_json::from_str(include_str!("../../kennel-core/tests/fixtures/plan.json"))
            .expect("the sample Plan");
    plan.name = format!("kennel-kube-test-{name}-{}", std::process::id());
    plan.user.uid = UID;
    plan.user.gid = UID;
    plan.command = vec!["sh".into(), "-c".into(), script.into()];
    plan.tty = false;
    plan.stdin = false;
    plan.network.proxy = None;
    plan.security.init = false;
    plan.security.image_init = None;
    plan.security.read_only_rootfs = true;
    plan.limits.memory = Some(256 * 1024 * 1024);
    plan.limits.cpus = Some(0.5);
    plan.workdir = "/work/repo".into();
    plan.mounts = vec![
        Mount {
            source: "/home/alice/repo".into(),
            target: "/work/repo".into(),
            read_only: false,
            purpose: MountPurpose::Workspace,
        },
        Mount {
            source: "/home/alice/.local/share/kennel/homes/shell".into(),
            target: "/work/home".into(),
            read_only: false,
            purpose: MountPurpose::AgentHome,
        },
    ];
    plan.env = vec![
        EnvVar {
            name: "HOME".into(),
            value: "/work/home".into(),
            origin: "kennel".into(),
            secret: false,
        },
        EnvVar {
            name: "KENNEL_TEST_SECRET".into(),
            value: "s3cret-value".into(),
            origin: "host".into(),
            secret: true,
        },
    ];
    plan
}

fn settings() -> PodSettings {
    PodSettings {
        image: IMAGE.into(),
        runtime_class: None,
        home: HomeVolume::InPod,
    }
}

/// What a probe inside the Pod reported, `key=value` per line.
fn report(logs: &[u8]) -> std::collections::BTreeMap<String, String> {
    String::from_utf8_lossy(logs)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

#[tokio::test]
async fn the_pod_runs_as_the_user_without_privileges_and_ends_with_its_code() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let probe = r#"
        echo uid=$(id -u); echo gid=$(id -g)
        echo capeff=$(awk '/^CapEff/ {print $2}' /proc/self/status)
        echo capbnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
        echo nonewprivs=$(awk '/^NoNewPrivs/ {print $2}' /proc/self/status)
        echo seccomp=$(awk '/^Seccomp:/ {print $2}' /proc/self/status)
        touch /probe 2>/dev/null && echo root_writable=yes || echo root_writable=no
        touch /work/repo/probe && echo workspace_writable=yes || echo workspace_writable=no
        touch /work/home/probe && echo home_writable=yes || echo home_writable=no
        touch /tmp/probe && echo tmp_writable=yes || echo tmp_writable=no
        test -e /var/run/secrets/kubernetes.io/serviceaccount/token && echo token=yes || echo token=no
        echo secret=$KENNEL_TEST_SECRET
        exit 7
    "#;
    let made = pod_for(&plan("walls", probe), &settings()).expect("a Pod");
    let name = cluster.create(&made, Workload::Pod).await.expect("created");
    let ended = cluster.wait_ended(&name, Duration::from_secs(120)).await;
    let logs = cluster.logs(&name).await.unwrap_or_default();
    cluster.delete(&name).await.expect("deleted");
    let ended = ended.expect("the agent ended");
    let seen = report(&logs);
    let said = String::from_utf8_lossy(&logs);
    assert_eq!(ended.exit_code, 7, "{said}");
    for (key, expected) in [
        ("uid", "1001"),
        ("gid", "1001"),
        ("capeff", "0000000000000000"),
        ("capbnd", "0000000000000000"),
        ("nonewprivs", "1"),
        ("seccomp", "2"),
        ("root_writable", "no"),
        ("workspace_writable", "yes"),
        ("home_writable", "yes"),
        ("tmp_writable", "yes"),
        ("token", "no"),
        ("secret", "s3cret-value"),
    ] {
        assert_eq!(
            seen.get(key).map(String::as_str),
            Some(expected),
            "{key} in:\n{said}"
        );
    }
}

/// Where the cluster has agent-sandbox (the test cluster does), a Sandbox
/// makes the session's Pod under the Sandbox's name, with kennel's walls
/// (the agent runs as the user), and deleting the session takes the
/// Sandbox, its Pod and its Secret away, for good (no new Pod).
#[tokio::test]
async fn a_sandbox_makes_the_pod_and_deleting_it_leaves_nothing() {
    let Some(cluster) = cluster().await else {
        return;
    };
    if !cluster.has_sandboxes().await.expect("discovery") {
        skip::<()>("the cluster has no agent-sandbox (scripts/k8s-up.sh installs it)");
        return;
    }
    let made = pod_for(&plan("sandbox", "sleep 120"), &settings()).expect("a Pod");
    let secret = made
        .secret
        .as_ref()
        .and_then(|secret| secret.metadata.name.clone())
        .expect("a Secret");
    let name = cluster
        .create(&made, Workload::Sandbox)
        .await
        .expect("created");
    assert_eq!(Some(name.as_str()), made.pod.metadata.name.as_deref());
    cluster
        .wait_started(&name, Duration::from_secs(90))
        .await
        .expect("started");
    let id = cluster.exec(&name, &["id", "-u"], b"").await.expect("exec");
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), UID.to_string());
    assert!(cluster.secret_exists(&secret).await.expect("asked"));
    cluster.delete(&name).await.expect("deleted");
    let mut gone_for = 0;
    for _ in 0..150 {
        let pod = cluster.pod_state(&name).await.expect("asked");
        let secret_left = cluster.secret_exists(&secret).await.expect("asked");
        gone_for = if pod.is_none() && !secret_left {
            gone_for + 1
        } else {
            0
        };
        // Gone, and still gone 3 s later: the controller made no new one.
        if gone_for == 15 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the Sandbox's Pod or Secret outlived the session by 30 s");
}

#[tokio::test]
async fn the_secret_goes_with_its_pod() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let made = pod_for(&plan("secret", "sleep 60"), &settings()).expect("a Pod");
    let secret = made
        .secret
        .as_ref()
        .and_then(|secret| secret.metadata.name.clone())
        .expect("a Secret");
    let name = cluster.create(&made, Workload::Pod).await.expect("created");
    assert!(cluster.secret_exists(&secret).await.expect("asked"));
    cluster.delete(&name).await.expect("deleted");
    // The garbage collector removes what the Pod owned.
    let mut gone = false;
    for _ in 0..150 {
        if !cluster.secret_exists(&secret).await.expect("asked") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gone, "Secret {secret} outlived its Pod by 30 s");
}

#[tokio::test]
async fn an_image_the_cluster_cannot_have_is_a_clear_error_not_a_hang() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let settings = PodSettings {
        image: "registry.kennel.invalid/nothing:1".into(),
        runtime_class: None,
        home: HomeVolume::InPod,
    };
    let made = pod_for(&plan("noimage", "true"), &settings).expect("a Pod");
    let name = cluster.create(&made, Workload::Pod).await.expect("created");
    let started = cluster.wait_started(&name, Duration::from_secs(90)).await;
    cluster.delete(&name).await.expect("deleted");
    let error = started.expect_err("an image that cannot be pulled does not start");
    let message = error.to_string();
    assert!(
        message.contains("cannot start") && message.contains("Image"),
        "{message}"
    );
}

/// A Pod no node can take waits, and when kennel gives up it says what
/// the scheduler said (here: more memory than the node has), not only
/// that the time ran out.
#[tokio::test]
async fn a_pod_that_cannot_be_scheduled_says_why_when_the_wait_ends() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let mut plan = plan("unschedulable", "true");
    plan.limits.memory = Some(1 << 50); // 1 PiB
    let made = pod_for(&plan, &settings()).expect("a Pod");
    let name = cluster.create(&made, Workload::Pod).await.expect("created");
    let started = cluster.wait_started(&name, Duration::from_secs(5)).await;
    cluster.delete(&name).await.expect("deleted");
    let message = started.expect_err("no node has 1 PiB").to_string();
    assert!(
        message.contains("did not start within 5 s") && message.contains("Insufficient memory"),
        "{message}"
    );
}

#[tokio::test]
async fn exec_sends_input_and_returns_output_and_exit_codes() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let made = pod_for(&plan("exec", "sleep 120"), &settings()).expect("a Pod");
    let name = cluster.create(&made, Workload::Pod).await.expect("created");
    let result = async {
        cluster.wait_started(&name, Duration::from_secs(90)).await?;
        // A megabyte and a half of input, byte for byte (more than any one
        // websocket frame), written into the workspace as the user.
        let input: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let stored = cluster
            .exec(
                &name,
                &[
                    "sh",
                    "-c",
                    "cat > /work/repo/in && cksum < /work/repo/in && id -u",
                ],
                &input,
            )
            .await?;
        let failed = cluster
            .exec(&name, &["sh", "-c", "echo oops >&2; exit 42"], b"")
            .await?;
        let missing = cluster.exec(&name, &["/no/such/program"], b"").await;
        Ok::<_, kennel_kube::ClusterError>((input, stored, failed, missing))
    }
    .await;
    cluster.delete(&name).await.expect("deleted");
    let (input, stored, failed, missing) = result.expect("the Pod ran the commands");
    let local = std::process::Command::new("cksum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(&input)?;
            child.wait_with_output()
        })
        .expect("cksum here");
    let out = String::from_utf8_lossy(&stored.stdout);
    assert_eq!(
        stored.exit_code,
        0,
        "{out} {:?}",
        String::from_utf8_lossy(&stored.stderr)
    );
    assert_eq!(
        out.lines().next(),
        String::from_utf8_lossy(&local.stdout).lines().next(),
        "the bytes that arrived differ"
    );
    assert_eq!(out.lines().nth(1), Some("1001"));
    assert_eq!(failed.exit_code, 42);
    assert_eq!(failed.stderr, b"oops\n");
    // A program that is not there is the API's failure, not an exit code
    // kennel makes up.
    assert!(missing.is_err(), "{missing:?}");
}

#[tokio::test]
async fn a_pod_deleted_while_waited_for_is_an_error_at_once() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let made = pod_for(&plan("deleted", "sleep 120"), &settings()).expect("a Pod");
    let name = cluster.create(&made, Workload::Pod).await.expect("created");
    cluster
        .wait_started(&name, Duration::from_secs(90))
        .await
        .expect("started");
    let waiting = {
        let (cluster, name) = (cluster.clone(), name.clone());
        tokio::spawn(async move { cluster.wait_ended(&name, Duration::from_secs(100)).await })
    };
    let asked = std::time::Instant::now();
    cluster.delete(&name).await.expect("deleted");
    let ended = waiting.await.expect("the waiting task");
    // A deleted Pod's agent may still be seen ending (killed) first; what
    // matters is that the wait ends, well before its timeout.
    assert!(asked.elapsed() < Duration::from_secs(60), "{ended:?}");
    if let Err(error) = &ended {
        assert!(error.to_string().contains("gone"), "{error}");
    }
}

#[tokio::test]
async fn a_tree_sent_to_the_pod_arrives_as_it_was_packed() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join(".git/refs")).expect(".git");
    std::fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").expect("HEAD");
    std::fs::create_dir_all(root.join("src")).expect("src");
    std::fs::write(root.join("src/main.rs"), "fn main() {}\n").expect("main.rs");
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho ran\n").expect("run.sh");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    std::os::unix::fs::symlink("/etc/shadow", root.join("shadow")).expect("link");
    let tree = kennel_kube::tar_of(root, 1 << 20).expect("packed");

    let made = pod_for(&plan("tree", "sleep 120"), &settings()).expect("a Pod");
    let name = cluster.create(&made, Workload::Pod).await.expect("created");
    let result = async {
        cluster.wait_started(&name, Duration::from_secs(90)).await?;
        cluster.send_tree(&name, &tree, "/work/repo").await?;
        cluster
            .exec(
                &name,
                &[
                    "sh",
                    "-c",
                    "cd /work/repo && cat .git/HEAD src/main.rs && ./run.sh && \
                     readlink shadow && stat -c '%a %u' run.sh src/main.rs",
                ],
                b"",
            )
            .await
    }
    .await;
    cluster.delete(&name).await.expect("deleted");
    let seen = result.expect("sent and looked at");
    let out = String::from_utf8_lossy(&seen.stdout);
    assert_eq!(
        seen.exit_code,
        0,
        "{out} {}",
        String::from_utf8_lossy(&seen.stderr)
    );
    let umask_mode = out.lines().nth(5).unwrap_or_default();
    assert_eq!(
        out.lines().take(5).collect::<Vec<_>>(),
        [
            "ref: refs/heads/main",
            "fn main() {}",
            "ran",
            "/etc/shadow",
            "755 1001"
        ],
        "{out}"
    );
    assert!(umask_mode.ends_with(" 1001"), "{out}");
}

#[tokio::test]
async fn a_pod_without_network_is_walled_in_and_an_open_one_is_not() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let mut closed = plan("walled", "sleep 120");
    closed.network.mode = kennel_core::plan::NetworkMode::None;
    let mut open = plan("open", "sleep 120");
    open.network.mode = kennel_core::plan::NetworkMode::Open;
    let closed = pod_for(&closed, &settings()).expect("a Pod");
    let open = pod_for(&open, &settings()).expect("a Pod");
    assert!(closed.policy.is_some() && open.policy.is_none());
    let closed_name = cluster
        .create(&closed, Workload::Pod)
        .await
        .expect("created");
    let open_name = cluster.create(&open, Workload::Pod).await.expect("created");
    let result = async {
        cluster
            .wait_started(&closed_name, Duration::from_secs(90))
            .await?;
        cluster
            .wait_started(&open_name, Duration::from_secs(90))
            .await?;
        let walled = cluster
            .wait_walled(&closed_name, Duration::from_secs(30))
            .await;
        // The same probe in the open Pod reaches the node: the wait for
        // walls there runs out.
        let unwalled = cluster
            .wait_walled(&open_name, Duration::from_secs(5))
            .await;
        // And from the walled one, the world is out of reach too.
        let world = cluster
            .exec(
                &closed_name,
                &[
                    "perl",
                    "-MIO::Socket::INET",
                    "-e",
                    "exit(IO::Socket::INET->new(PeerAddr => '1.1.1.1', PeerPort => 80, \
                     Timeout => 2) ? 0 : 1)",
                ],
                b"",
            )
            .await?;
        Ok::<_, kennel_kube::ClusterError>((walled, unwalled, world))
    }
    .await;
    cluster.delete(&closed_name).await.expect("deleted");
    cluster.delete(&open_name).await.expect("deleted");
    let (walled, unwalled, world) = result.expect("the Pods ran");
    let took = walled.expect("the walled Pod's walls hold");
    eprintln!(
        "walls held {} ms after the Pod was running",
        took.as_millis()
    );
    let unwalled = unwalled.expect_err("an open Pod reaches its node");
    assert!(
        unwalled
            .to_string()
            .contains("NetworkPolicy is not enforced"),
        "{unwalled}"
    );
    assert_eq!(world.exit_code, 1, "the walled Pod reached 1.1.1.1");
}
