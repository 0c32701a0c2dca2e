//! The Kubernetes backend on the real test cluster (scripts/k8s-up.sh,
//! started by scripts/e2e-setup.sh): the test user's own namespace and
//! kubeconfig, kennel's `shell` image built with Docker and imported into
//! the node's containerd (as a team pushes its images to a registry).
//!
//! A session there runs in clone mode: the clone goes in, the agent's
//! commits and files come back as git objects, the review commands read
//! them. The host steps after the run (its end, `diff`, `merge`, the
//! user's `git status`) are tried against what an agent can plant.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::harness::{Backend, Ctx, not_ready, sh_quote};

/// The test cluster's binaries (scripts/k8s-build.sh's cache).
fn k8s_bin() -> Option<PathBuf> {
    let cache = std::fs::read_dir("/var/cache/kennel-k8s").ok()?;
    cache
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .find(|bin| bin.join("kubectl").is_file())
}

const CONTAINERD: &str = "/run/kennel-k8s/containerd.sock";
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// A test's context: Docker's (which builds the `shell` image), its
/// config pointed at the cluster in clone mode, the image on the node.
fn kube_ctx(name: &str) -> Option<(Ctx, PathBuf)> {
    let Some(bin) = k8s_bin() else {
        return not_ready(
            &format!("kubernetes::{name}"),
            "no test cluster binaries (run scripts/e2e-setup.sh)",
        );
    };
    let t = Ctx::with_shell_image(Backend::Docker, &format!("kube_{name}"))?;
    let kubeconfig = t.user.home.join(".kube/config");
    if !kubeconfig.is_file() {
        return not_ready(
            &format!("kubernetes::{name}"),
            &format!(
                "{} is missing (run scripts/e2e-setup.sh)",
                kubeconfig.display()
            ),
        );
    }
    static IMPORTED: OnceLock<Result<(), String>> = OnceLock::new();
    let imported = IMPORTED.get_or_init(|| import_shell_image(&t, &bin));
    if let Err(error) = imported {
        panic!("the shell image did not reach the cluster's node: {error}");
    }
    write_kube_config(&t, &kubeconfig, "");
    Some((t, bin))
}

/// The user's config: the cluster by its kubeconfig, clone mode, and
/// `tables` after.
fn write_kube_config(t: &Ctx, kubeconfig: &Path, tables: &str) {
    std::fs::write(
        t.config_home.join("kennel/config.toml"),
        format!(
            "[defaults]\nbase_image = \"{}\"\nbackend = \"kubernetes\"\nmode = \"clone\"\n\n\
             [kubernetes]\nkubeconfig = \"{}\"\n\n{tables}\n",
            crate::harness::base_image(),
            kubeconfig.display()
        ),
    )
    .expect("write the config");
    t.user.chown(&t.config_home);
}

/// `docker save` of kennel's shell image into the node's containerd.
fn import_shell_image(t: &Ctx, bin: &Path) -> Result<(), String> {
    let dry = t
        .kennel(&["run", "shell", "--backend", "docker", "--dry-run"])
        .run();
    if !dry.success() {
        return Err(format!("{dry}"));
    }
    let reference = dry.json()["image"]["reference"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let script = format!(
        "docker save {image} | {ctr} --address {CONTAINERD} -n k8s.io images import - >/dev/null",
        image = sh_quote(&reference),
        ctr = sh_quote(&bin.join("ctr").display().to_string()),
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .map_err(|error| error.to_string())?;
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).to_string()),
    }
}

/// The names (`kind/name`) of the objects of `kind` kennel made in the
/// test user's namespace that carry every label of `selector` too.
fn kennel_objects(t: &Ctx, bin: &Path, kind: &str, selector: &str) -> Vec<String> {
    let kubectl = bin.join("kubectl").display().to_string();
    let mut labels = "app.kubernetes.io/managed-by=kennel".to_string();
    if !selector.is_empty() {
        labels = format!("{labels},{selector}");
    }
    let out = t
        .as_user(&[&kubectl, "get", kind, "-l", &labels, "-o", "name"])
        .run();
    out.assert_ok();
    out.stdout.lines().map(str::to_string).collect()
}

/// The Pods kennel left in the test user's namespace.
fn kennel_pods(t: &Ctx, bin: &Path) -> Vec<String> {
    kennel_objects(t, bin, "pods", "")
}

/// The Sandboxes (agent-sandbox's) kennel made in the test user's namespace.
fn kennel_sandboxes(t: &Ctx, bin: &Path) -> Vec<String> {
    kennel_objects(t, bin, "sandboxes.agents.x-k8s.io", "")
}

/// `kennel run shell --network none FLAGS -- COMMAND` on the cluster.
fn run_in_pod(t: &Ctx, flags: &[&str], command: &[&str]) -> crate::harness::Out {
    let mut args = vec!["run", "shell", "--network", "none"];
    args.extend(flags);
    args.push("--");
    args.extend(command);
    t.kennel(&args).timeout(RUN_TIMEOUT).run()
}

/// `kennel run shell --network none -- sh -c SCRIPT` on the cluster.
fn run_sh(t: &Ctx, script: &str) -> crate::harness::Out {
    run_in_pod(t, &[], &["sh", "-c", script])
}

/// The session a `kennel run` made and its Pod's name, from what it said:
/// `session NAME works on branch BRANCH (clone in DIR)` (or `continues
/// branch`), the Pod named after the clone's directory.
fn session_of(out: &crate::harness::Out) -> (String, String) {
    session_in(&out.stderr).unwrap_or_else(|| panic!("no session line\n{out}"))
}

/// [`session_of`] in any text kennel wrote.
fn session_in(text: &str) -> Option<(String, String)> {
    let line = text
        .lines()
        .find(|line| line.contains(" works on branch ") || line.contains(" continues branch "))?;
    let session = line
        .split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string();
    let dir = line
        .rsplit_once("clone in ")
        .map(|(_, dir)| dir.trim_end_matches(')'))
        .unwrap_or_default();
    let pod = Path::new(dir)
        .file_name()
        .map(|name| name.to_string_lossy().to_string())
        .unwrap_or_default();
    Some((session, pod))
}

/// The session `name`'s Pod, and its Sandbox if it had one, are gone
/// from the namespace (deletion takes the API a moment).
fn assert_no_pod_of(t: &Ctx, bin: &Path, name: &str) {
    let mut left = Vec::new();
    for _ in 0..50 {
        left = kennel_pods(t, bin)
            .into_iter()
            .chain(kennel_sandboxes(t, bin))
            .filter(|pod| pod.contains(name))
            .collect();
        if left.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the session's Pod is still there: {left:?}");
}

/// `kennel run` on the cluster: the agent runs as the user, walled in
/// (no capabilities, no new privileges, seccomp, no token, no host files,
/// no network), in the session's clone; its exit code comes back; its
/// commit and its uncommitted files come back as git objects, and `kennel
/// diff` and `kennel merge` review them as on every backend; the Pod is
/// gone afterwards. A plain Pod (`agent_sandbox = false`), where the other
/// tests get a Sandbox's Pod (the test cluster has agent-sandbox).
#[test]
fn kubernetes_run_in_clone_mode() {
    let Some((t, bin)) = kube_ctx("run_clone") else {
        return;
    };
    let host_file = t.user.home.join(".kube/config");
    write_kube_config(&t, &host_file, "agent_sandbox = false");
    let probe = r#"
        echo "UID=$(id -u)"
        echo "CAPEFF=$(awk '/^CapEff/ {print $2}' /proc/self/status)"
        echo "NONEWPRIVS=$(awk '/^NoNewPrivs/ {print $2}' /proc/self/status)"
        echo "SECCOMP=$(awk '/^Seccomp:/ {print $2}' /proc/self/status)"
        [ -e /var/run/secrets/kubernetes.io/serviceaccount/token ] && echo TOKEN=yes || echo TOKEN=no
        [ -e "$1" ] && echo HOSTFILE=yes || echo HOSTFILE=no
        perl -MIO::Socket::INET -e 'exit(IO::Socket::INET->new(PeerAddr => "1.1.1.1", PeerPort => 443, Timeout => 2) ? 0 : 1)' && echo NET=yes || echo NET=no
        echo "BRANCH=$(git branch --show-current)"
        echo "README=$(head -c 11 README.md)"
        echo agent-work > added.txt
        git add added.txt && git commit -q -m 'the agent commits'
        echo uncommitted > loose.txt
        echo changed >> README.md
        exit 3
    "#;
    let host_file = host_file.display().to_string();
    let out = run_in_pod(&t, &[], &["sh", "-c", probe, "probe", &host_file]);
    out.assert_code(3);
    for (key, want) in [
        ("UID", t.user.uid.to_string()),
        ("CAPEFF", "0000000000000000".to_string()),
        ("NONEWPRIVS", "1".to_string()),
        ("SECCOMP", "2".to_string()),
        ("TOKEN", "no".to_string()),
        ("HOSTFILE", "no".to_string()),
        ("NET", "no".to_string()),
        ("README", "e2e workspa".to_string()),
    ] {
        assert_eq!(out.kv(key).as_deref(), Some(want.as_str()), "{key}\n{out}");
    }
    let branch = out.expect_kv("BRANCH");
    assert!(branch.starts_with("kennel/"), "{out}");
    let (name, pod) = session_of(&out);
    assert_no_pod_of(&t, &bin, &pod);

    // The session ended with the agent's code; its work came back.
    let session = t
        .session(&name)
        .unwrap_or_else(|| panic!("{name} not in ls\n{out}"));
    assert_eq!(session["exit_code"], 3, "{session}");
    let diff = t.kennel(&["diff", &name]).run();
    diff.assert_ok();
    for expected in [
        "added.txt",
        "+agent-work",
        "loose.txt",
        "+uncommitted",
        "+changed",
    ] {
        assert!(
            diff.stdout.contains(expected),
            "{expected} not in the diff\n{diff}"
        );
    }
    let merged = t.kennel(&["merge", &name]).run();
    merged.assert_ok();
    assert_eq!(
        std::fs::read_to_string(t.ws.join("added.txt"))
            .ok()
            .as_deref(),
        Some("agent-work\n"),
        "{merged}"
    );
    let log = t.git(&["log", "--format=%s", "-3"]);
    assert!(log.contains("the agent commits"), "{log}");
}

/// Exit codes as on every backend: a command that does not exist is 127;
/// a session that is not in clone mode is refused as a usage error (2),
/// before anything is made on the cluster, saying how to fix it.
#[test]
fn kubernetes_exit_codes_and_refusals() {
    let Some((t, bin)) = kube_ctx("codes") else {
        return;
    };
    let out = run_in_pod(&t, &[], &["kennel-e2e-no-such-command"]);
    out.assert_code(127);
    // The clone kennel would make is named after the workspace, and so
    // is the Pod: none of that name may appear.
    let (_, pod) = session_of(&out);
    let out = t
        .kennel(&["run", "shell", "--mode", "direct", "--", "true"])
        .timeout(RUN_TIMEOUT)
        .run();
    out.assert_code(2);
    assert!(out.stderr.contains("clone mode only"), "{out}");
    assert!(out.stderr.contains("--mode clone"), "{out}");
    assert_no_pod_of(&t, &bin, &pod);
}

/// What an agent plants in its Pod's repository does not run on the host
/// when its work comes back, nor at `kennel diff`, `kennel merge` or the
/// user's own `git status`: hooks, an fsmonitor and a filter in the Pod's
/// `.git/config` stay in the Pod (only objects come back), and a link to a
/// file of the user's arrives as a link, never followed.
#[test]
fn kubernetes_plants_stay_in_the_pod() {
    let Some((t, bin)) = kube_ctx("plants") else {
        return;
    };
    let marker = t.scratch().join("planted-ran");
    let plant = format!(
        r#"
        set -e
        for hook in post-checkout post-merge reference-transaction pre-commit post-commit; do
            printf '#!/bin/sh\ntouch {marker}\n' > .git/hooks/$hook
            chmod +x .git/hooks/$hook
        done
        git config core.fsmonitor 'touch {marker}'
        git config filter.evil.smudge 'touch {marker}; cat'
        git config filter.evil.clean 'touch {marker}; cat'
        echo '* filter=evil' > .gitattributes
        ln -s {secret} leak
        git -c core.hooksPath=/dev/null add -A
        git -c core.hooksPath=/dev/null -c core.fsmonitor=false commit -q -m planted
        "#,
        marker = sh_quote(&marker.display().to_string()),
        secret = sh_quote(&t.user.home.join(".kube/config").display().to_string()),
    );
    let out = run_sh(&t, &plant);
    out.assert_ok();
    let (name, pod) = session_of(&out);
    assert_no_pod_of(&t, &bin, &pod);
    let diff = t.kennel(&["diff", &name]).run();
    diff.assert_ok();
    assert!(diff.stdout.contains("leak"), "{diff}");
    let merged = t.kennel(&["merge", &name]).run();
    merged.assert_ok();
    let status = t.git(&["status", "--porcelain"]);
    let leak = t.ws.join("leak");
    let link = std::fs::symlink_metadata(&leak).map(|m| m.file_type().is_symlink());
    assert_eq!(link.ok(), Some(true), "leak must be a link\n{status}");
    assert!(
        !marker.exists(),
        "something the agent planted ran on the host\n{out}\n{diff}\n{merged}"
    );
}

/// SIGTERM to `kennel run`: the agent is ended, what it wrote so far comes
/// back (nothing is lost), the Pod is deleted, and kennel exits 143.
#[test]
fn kubernetes_sigterm_keeps_the_work_and_deletes_the_pod() {
    let Some((t, bin)) = kube_ctx("sigterm") else {
        return;
    };
    let mut bg = spawn_ready(&t, "echo before-the-signal > written.txt");
    bg.signal("TERM");
    let (status, timed_out) = bg.wait_for(Duration::from_secs(60));
    assert!(!timed_out, "kennel did not end on SIGTERM\n{}", bg.output());
    assert_eq!(status.and_then(|s| s.code()), Some(143), "{}", bg.output());
    let output = bg.output();
    let (name, pod) = session_in(&output).unwrap_or_else(|| panic!("no session line\n{output}"));
    assert_no_pod_of(&t, &bin, &pod);
    let diff = t.kennel(&["diff", &name]).run();
    diff.assert_ok();
    assert!(
        diff.stdout.contains("+before-the-signal"),
        "{diff}\n{output}"
    );
}

/// `kennel run` in the background, its agent running `script` then
/// waiting; returned once the agent has printed `AGENT-READY` on a line of
/// its own (the command line in the log's header has it too).
fn spawn_ready(t: &Ctx, script: &str) -> crate::harness::Background {
    let agent = format!("{script}; echo AGENT-READY; sleep 600");
    let mut bg = t.spawn_kennel(&[
        "run",
        "shell",
        "--network",
        "none",
        "--",
        "sh",
        "-c",
        &agent,
    ]);
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    while !bg.output().lines().any(|line| line.trim() == "AGENT-READY") {
        assert!(
            std::time::Instant::now() < deadline && bg.try_wait().is_none(),
            "the agent never started\n{}",
            bg.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    bg
}

/// A `kennel run` killed outright leaves its Pod running: `kennel ls`
/// calls the session orphaned (asking the cluster), and `kennel clean
/// --force` deletes the Pod by the registry's label.
#[test]
fn kubernetes_killed_kennel_leaves_an_orphan_that_clean_removes() {
    let Some((t, bin)) = kube_ctx("killed") else {
        return;
    };
    let mut bg = spawn_ready(&t, "true");
    bg.signal("KILL");
    let _ = bg.wait_for(Duration::from_secs(10));
    let output = bg.output();
    let (name, pod) = session_in(&output).unwrap_or_else(|| panic!("no session line\n{output}"));
    assert!(
        kennel_pods(&t, &bin)
            .iter()
            .any(|listed| listed.ends_with(&pod)),
        "the Pod went with its kennel?\n{output}"
    );
    let listed = t
        .session(&name)
        .unwrap_or_else(|| panic!("{name} not in ls"));
    assert_eq!(listed["orphaned"], true, "{listed}");
    let out = t.kennel(&["clean", "--force"]).run();
    out.assert_ok();
    assert_no_pod_of(&t, &bin, &pod);
    let listed = t
        .session(&name)
        .unwrap_or_else(|| panic!("{name} not in ls"));
    assert_eq!(listed["state"], "stopped", "{listed}");
}

/// Polls `check` every 200 ms until it gives a value, at most `limit`.
fn poll<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A persistent session on the cluster: `start` makes its Pod with the
/// agent in tmux; `send`, `capture`, `exec` and `logs` reach it by exec;
/// `diff` while it runs brings its work back first; `stop` ends the agent,
/// brings its committed and uncommitted work back, keeps its screen's log
/// and deletes the Pod; `rm` forgets it. An agent that exits on its own is
/// `exited` with its code in `ls`.
#[test]
fn kubernetes_persistent_session() {
    let Some((t, bin)) = kube_ctx("persistent") else {
        return;
    };
    let name = format!("kube-{}", crate::harness::unique());
    let out = t.start_offline(&name, &[], &[]).timeout(RUN_TIMEOUT).run();
    out.assert_ok();
    let (_, pod) = session_of(&out);
    let listed = t
        .session(&name)
        .unwrap_or_else(|| panic!("{name} not in ls\n{out}"));
    assert_eq!(listed["state"], "running", "{listed}");
    assert_eq!(listed["backend"], "kubernetes", "{listed}");
    assert!(
        kennel_pods(&t, &bin)
            .iter()
            .any(|listed| listed.ends_with(&pod)),
        "no Pod {pod}"
    );
    // The test cluster has agent-sandbox: the Pod is its Sandbox's.
    assert!(
        kennel_sandboxes(&t, &bin)
            .iter()
            .any(|listed| listed.ends_with(&format!("/{pod}"))),
        "no Sandbox {pod}: {:?}",
        kennel_sandboxes(&t, &bin)
    );
    let kubectl = bin.join("kubectl").display().to_string();
    let owner = t
        .as_user(&[
            &kubectl,
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.metadata.ownerReferences[0].kind}",
        ])
        .run();
    assert_eq!(owner.stdout.trim(), "Sandbox", "{owner}");

    t.kennel(&["send", &name, "PS1='$ '"]).run().assert_ok();
    t.kennel(&["send", &name, "echo hello-$((6*7))"])
        .run()
        .assert_ok();
    let screen = poll(Duration::from_secs(20), || {
        let out = t.kennel(&["capture", &name]).run();
        (out.success() && out.stdout.contains("hello-42")).then_some(())
    });
    assert!(
        screen.is_some(),
        "capture never showed hello-42\n{}",
        t.kennel(&["capture", &name]).run()
    );
    let out = t.kennel(&["exec", &name, "--", "id", "-u"]).run();
    out.assert_ok();
    assert_eq!(out.stdout.trim(), t.user.uid.to_string(), "{out}");
    t.kennel(&["exec", &name, "--", "kennel-e2e-no-such-command"])
        .run()
        .assert_code(127);
    t.kennel(&["exec", &name, "--", "sh", "-c", "exit 4"])
        .run()
        .assert_code(4);
    let out = t.kennel(&["logs", &name]).run();
    out.assert_ok();
    assert!(out.stdout.contains("hello-42"), "{out}");

    // Work done in the Pod reaches a review while the session runs.
    t.kennel(&[
        "send",
        &name,
        "echo committed > from-session.txt && git add -A && git commit -qm session-commit && echo COMMITTED-$((1+1))",
    ])
    .run()
    .assert_ok();
    let committed = poll(Duration::from_secs(20), || {
        let out = t.kennel(&["capture", &name]).run();
        out.stdout.contains("COMMITTED-2").then_some(())
    });
    assert!(
        committed.is_some(),
        "{}",
        t.kennel(&["capture", &name]).run()
    );
    let diff = t.kennel(&["diff", &name]).run();
    diff.assert_ok();
    assert!(diff.stdout.contains("+committed"), "{diff}");

    // stop: the uncommitted file comes back too, the Pod goes, the log stays.
    t.kennel(&["send", &name, "echo loose > loose.txt"])
        .run()
        .assert_ok();
    let written = poll(Duration::from_secs(20), || {
        let out = t.kennel(&["exec", &name, "--", "cat", "loose.txt"]).run();
        out.stdout.contains("loose").then_some(())
    });
    assert!(written.is_some(), "loose.txt never written");
    let out = t.kennel(&["stop", &name]).timeout(RUN_TIMEOUT).run();
    out.assert_ok();
    assert_no_pod_of(&t, &bin, &pod);
    let listed = t
        .session(&name)
        .unwrap_or_else(|| panic!("{name} not in ls"));
    assert_eq!(listed["state"], "stopped", "{listed}");
    let out = t.kennel(&["logs", &name]).run();
    out.assert_ok();
    assert!(out.stdout.contains("hello-42"), "{out}");
    let diff = t.kennel(&["diff", &name]).run();
    diff.assert_ok();
    assert!(diff.stdout.contains("+loose"), "{diff}");
    assert!(diff.stdout.contains("+committed"), "{diff}");
    t.kennel(&["rm", &name]).run().assert_ok();
    assert!(t.session(&name).is_none(), "rm left {name}");

    // An agent that ends on its own: `exited` with its code.
    let name = format!("kube-{}", crate::harness::unique());
    let out = t
        .start_offline(&name, &[], &["sh", "-c", "echo bye; exit 5"])
        .timeout(RUN_TIMEOUT)
        .run();
    out.assert_ok();
    let (_, pod) = session_of(&out);
    let ended = poll(Duration::from_secs(30), || {
        t.session(&name)
            .filter(|session| session["state"] == "exited")
    });
    let ended = ended.unwrap_or_else(|| panic!("never exited: {:?}", t.session(&name)));
    assert_eq!(ended["exit_code"], 5, "{ended}");
    t.kennel(&["rm", &name]).run().assert_ok();
    assert_no_pod_of(&t, &bin, &pod);
}

/// The files kennel reads from a persistent session's Pod are the agent's:
/// FIFOs where the exit file and the screen log should be do not hang
/// `kennel ls` or `kennel stop` (each read is bounded in time), and the
/// work still comes back.
#[test]
fn kubernetes_session_files_the_agent_replaced_do_not_hang_kennel() {
    let Some((t, bin)) = kube_ctx("fifos") else {
        return;
    };
    let name = format!("kube-{}", crate::harness::unique());
    let plant = "mkfifo /tmp/kennel-exit; rm -f /tmp/kennel-agent.log; mkfifo /tmp/kennel-agent.log; \
                 echo planted > planted.txt; echo PLANTED; exec sleep 600";
    let out = t
        .start_offline(&name, &[], &["sh", "-c", plant])
        .timeout(RUN_TIMEOUT)
        .run();
    out.assert_ok();
    let (_, pod) = session_of(&out);
    let planted = poll(Duration::from_secs(30), || {
        let out = t.kennel(&["capture", &name]).run();
        out.stdout.contains("PLANTED").then_some(())
    });
    assert!(planted.is_some(), "{}", t.kennel(&["capture", &name]).run());
    let started = std::time::Instant::now();
    let listed = t
        .session(&name)
        .unwrap_or_else(|| panic!("{name} not in ls"));
    assert_eq!(listed["state"], "running", "{listed}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "ls took {:?}",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    let out = t.kennel(&["stop", &name]).timeout(RUN_TIMEOUT).run();
    out.assert_ok();
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "stop took {:?}\n{out}",
        started.elapsed()
    );
    assert_no_pod_of(&t, &bin, &pod);
    let diff = t.kennel(&["diff", &name]).run();
    diff.assert_ok();
    assert!(diff.stdout.contains("+planted"), "{diff}");
    t.kennel(&["rm", &name]).run().assert_ok();
}

/// Proxy-only egress on the cluster: the Pod has no network of its own (a
/// connection that ignores the proxy reaches nothing), and the agent's
/// requests go through the cluster's API to kennel's proxy on this machine,
/// which allows the allowlisted name, refuses the others with its reason,
/// and logs both (`kennel net log`); 16 requests at once all arrive.
#[test]
fn kubernetes_egress_goes_through_kennels_proxy_only() {
    let Some((t, _bin)) = kube_ctx("egress") else {
        return;
    };
    if let Err(reason) = crate::network::test_net() {
        crate::harness::not_ready::<()>("kubernetes::egress", reason);
        return;
    }
    let kubeconfig = t.user.home.join(".kube/config");
    write_kube_config(&t, &kubeconfig, crate::network::network_tables());
    let port = crate::network::HTTP_PORT;
    let denied_port = 20000 + (std::process::id() % 20000) as u16;
    let script = crate::network::probe_script(&[
        ("ALLOWED", &format!("http://allowed.kennel.test:{port}/")),
        ("AGAIN", &format!("http://allowed.kennel.test:{port}/")),
        ("OTHER", &format!("http://other.kennel.test:{denied_port}/")),
        ("RAW", &format!("--noproxy '*' http://198.18.0.2:{port}/")),
    ]) + "echo PROXY_ENV=$HTTP_PROXY\n";
    // Many connections at once (a package manager opens them so): every
    // one is carried, none refused for want of a listener.
    let parallel = format!(
        "for i in $(seq 1 16); do (curl -sS -m 30 -o /dev/null -w '%{{http_code}}\\n' \
         http://allowed.kennel.test:{port}/ > /tmp/parallel-$i 2>&1) & done; wait; \
         echo PARALLEL=$(cat /tmp/parallel-* | grep -c '^200$')\n\
         for p in /proc/[0-9]*; do case \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null | head -c 16)\" in \
         'perl -e # kennel') kill ${{p#/proc/}} && echo KILLED=yes;; esac; done; sleep 2\n\
         r RESTARTED http://allowed.kennel.test:{port}/\n"
    );
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--allow",
            "allowed.kennel.test",
            "--",
            "bash",
            "-c",
            &format!("{script}{parallel}"),
        ])
        .timeout(RUN_TIMEOUT)
        .run();
    out.assert_ok();
    crate::network::expect(&out, "PARALLEL", "16");
    // The agent may kill the tunnel's multiplexer (it is its Pod): kennel
    // starts another.
    crate::network::expect(&out, "KILLED", "yes");
    crate::network::expect(&out, "RESTARTED", "200");
    crate::network::expect(&out, "PROXY_ENV", "http://127.0.0.1:3128");
    crate::network::expect(&out, "ALLOWED", "200");
    crate::network::expect(&out, "ALLOWED_BODY", crate::network::BODY);
    crate::network::expect(&out, "AGAIN", "200");
    crate::network::expect(&out, "OTHER", "403");
    crate::network::expect(&out, "OTHER_REASON", "not-allowlisted");
    assert_eq!(
        out.expect_kv("RAW"),
        "000",
        "a direct connection got through\n{out}"
    );
    let (session, decisions) = crate::network::find_session(&t, |d| {
        d["host"] == "other.kennel.test" && d["port"] == u64::from(denied_port)
    })
    .unwrap_or_else(|| panic!("no session log has the denial\n{out}"));
    assert!(
        decisions
            .iter()
            .any(|d| d["host"] == "allowed.kennel.test" && d["verdict"] == "allow"),
        "{session}: {decisions:?}"
    );

    // A started session: its proxy daemon holds the tunnel while the Pod
    // lives; the agent's first request already finds it.
    let name = format!("kube-{}", crate::harness::unique());
    let agent = format!("{script}echo PROBED=yes\nexec sleep 600\n");
    let out = t
        .kennel(&[
            "start",
            "shell",
            "--name",
            &name,
            "--allow",
            "allowed.kennel.test",
            "--",
            "bash",
            "-c",
            &agent,
        ])
        .timeout(RUN_TIMEOUT)
        .run();
    out.assert_ok();
    let logs = poll(Duration::from_secs(90), || {
        let logs = t.kennel(&["logs", &name]).run();
        logs.stdout.contains("PROBED=yes").then_some(logs)
    })
    .unwrap_or_else(|| {
        panic!(
            "the probe never finished\n{}",
            t.kennel(&["logs", &name]).run()
        )
    });
    for (key, want) in [
        ("ALLOWED", "200"),
        ("AGAIN", "200"),
        ("OTHER", "403"),
        ("RAW", "000"),
    ] {
        assert_eq!(logs.kv(key).as_deref(), Some(want), "{key}\n{logs}");
    }
    t.kennel(&["stop", &name])
        .timeout(RUN_TIMEOUT)
        .run()
        .assert_ok();
    t.kennel(&["rm", &name]).run().assert_ok();
}

/// `kennel run --resume` on the cluster continues the session's clone in a
/// new Pod: what the first Pod's agent committed and left uncommitted is
/// there, on the same branch, and the review sees both sessions' work.
#[test]
fn kubernetes_resume_continues_the_clone_in_a_new_pod() {
    let Some((t, _bin)) = kube_ctx("resume") else {
        return;
    };
    let out = run_sh(
        &t,
        "echo one > one.txt && git add one.txt && git commit -qm one && echo loose > loose.txt",
    );
    out.assert_ok();
    let out = run_in_pod(
        &t,
        &["--resume"],
        &[
            "sh",
            "-c",
            "echo ONE=$(cat one.txt); echo LOOSE=$(cat loose.txt); echo two > two.txt; \
             echo BRANCH=$(git rev-parse --abbrev-ref HEAD); echo LOG=$(git log -1 --format=%s)",
        ],
    );
    out.assert_ok();
    assert_eq!(out.expect_kv("ONE"), "one", "{out}");
    assert_eq!(out.expect_kv("LOOSE"), "loose", "{out}");
    assert!(out.expect_kv("BRANCH").starts_with("kennel/"), "{out}");
    let (second, _) = session_of(&out);
    let diff = t.kennel(&["diff", &second, "--stat"]).run();
    diff.assert_ok();
    for file in ["one.txt", "loose.txt", "two.txt"] {
        assert!(diff.stdout.contains(file), "{file}\n{diff}");
    }
}

/// The home claims kennel made in the test user's namespace.
fn home_claims(t: &Ctx, bin: &Path) -> Vec<String> {
    kennel_objects(t, bin, "pvc", "dev.kennel.home")
}

/// The claim of `agent`'s home for a session on `workspace`: named after
/// the home the Plan mounts (`--dry-run` shows it), as kennel-kube names
/// it, so that a test finds its own among the claims other tests make.
fn home_claim_of(t: &Ctx, agent: &str, workspace: &Path) -> String {
    let home = crate::escape_homes::agent_home(t, agent, workspace);
    let digest = kennel_core::trust::content_digest(home.as_os_str().as_encoded_bytes());
    format!(
        "persistentvolumeclaim/kennel-home-{agent}-{}",
        &digest[..16]
    )
}

/// The agent's home is a PersistentVolumeClaim of the cluster's default
/// class, one per agent and repository: what a session leaves there (a
/// login) is there in the next session's new Pod on the same repository,
/// and not in a session on another repository (where a planted
/// `~/.bashrc` line would otherwise run). A class the cluster lacks, or a
/// size that is not one, is refused before anything is made, naming the
/// key and the file.
#[test]
fn kubernetes_agent_home_is_a_claim_per_repository() {
    let Some((t, bin)) = kube_ctx("home_claim") else {
        return;
    };
    let claim_a = home_claim_of(&t, "shell", &t.ws);
    let token = format!("login-{}", std::process::id());
    let plant = format!(
        "mkdir -p ~/.agent && echo {token} > ~/.agent/creds.json && \
         echo 'echo PLANT-RAN' >> ~/.bashrc && echo HOME_IS=$HOME"
    );
    let out = run_sh(&t, &plant);
    out.assert_ok();
    assert!(
        !out.stderr.contains("home is the Pod's own"),
        "the cluster has a default class: the home is a claim\n{out}"
    );
    let claims = home_claims(&t, &bin);
    assert!(claims.contains(&claim_a), "{claim_a} not in {claims:?}");

    // The same repository, a new Pod: the home is the one left.
    let read = "echo CREDS=$(cat ~/.agent/creds.json 2>/dev/null || echo none)";
    let out = run_sh(&t, read);
    out.assert_ok();
    assert_eq!(out.expect_kv("CREDS"), token, "{out}");

    // Another repository: another home, without the login or the plant.
    let repo_b = crate::escape_homes::other_repository(&t, "repository-b")
        .display()
        .to_string();
    t.as_user(&[
        "git",
        "-C",
        &repo_b,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.invalid",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "init",
    ])
    .run()
    .assert_ok();
    let claim_b = home_claim_of(&t, "shell", Path::new(&repo_b));
    assert_ne!(claim_a, claim_b, "two repositories, one home");
    let out = run_in_pod(&t, &["-w", &repo_b], &["bash", "-i", "-c", read]);
    out.assert_ok();
    assert_eq!(out.expect_kv("CREDS"), "none", "{out}");
    assert!(!out.stdout.contains("PLANT-RAN"), "{out}");
    let claims = home_claims(&t, &bin);
    assert!(claims.contains(&claim_b), "{claim_b} not in {claims:?}");

    // Refusals, before any Pod: a class the cluster lacks, a size.
    let kubeconfig = t.user.home.join(".kube/config");
    write_kube_config(&t, &kubeconfig, "storage_class = \"no-such-class\"");
    let out = run_in_pod(&t, &[], &["true"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains("no StorageClass `no-such-class`")
            && out.stderr.contains("kubernetes.storage_class")
            && out.stderr.contains("config.toml"),
        "{out}"
    );
    write_kube_config(&t, &kubeconfig, "home_size = \"lots\"");
    let out = run_in_pod(&t, &[], &["true"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("`lots`, which is not a size"), "{out}");
    // No session of this test has a Pod now (a Pod is named after its
    // session's checkout): not the ended runs', not the refused ones'.
    let checkouts: Vec<String> = std::fs::read_dir(t.data_home.join("kennel/checkouts"))
        .expect("the test's checkouts")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().to_string())
        .collect();
    assert!(checkouts.len() >= 3, "{checkouts:?}");
    for checkout in &checkouts {
        assert_no_pod_of(&t, &bin, checkout);
    }

    // The claims are the test's: remove them (kennel keeps homes).
    let kubectl = bin.join("kubectl").display().to_string();
    for claim in [claim_a, claim_b] {
        t.as_user(&[&kubectl, "delete", &claim, "--wait=false"])
            .run()
            .assert_ok();
    }
}
