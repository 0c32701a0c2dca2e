//! What only the Incus backend does: build kennel's images in Incus itself,
//! step by step, when `base_image` names an Incus image.

use std::net::ToSocketAddrs;

use crate::harness::{BUILD_TIMEOUT, Backend, Ctx, unique};

/// `base_image = "local:kennel-test/bookworm"` (the debootstrap rootfs the
/// set-up imports into the test user's project): `kennel image build
/// --no-cache` builds both layers in Incus (no Docker or Podman involved),
/// its downloads go through kennel's proxy (the build's network log
/// records them: the build container has no network device of its own),
/// no build container is left, the images carry kennel's labels and
/// `kennel image ls` lists them, and the agent runs from them with what
/// the recipe installed.
#[test]
fn incus_builds_on_an_incus_base_image() {
    let Some(t) = Ctx::new(Backend::Incus, "incus_base_image") else {
        return;
    };
    let agent = format!("onincus{}", unique().replace('-', ""));
    // This machine's package mirror may answer on an address the proxy
    // calls private (a test network): trust exactly that address, as a
    // user of such a network does.
    let mirror = ("deb.debian.org", 80)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .map(|addr| addr.ip().to_string())
        .expect("deb.debian.org resolves on this machine");
    std::fs::write(
        t.config_home.join("kennel/config.toml"),
        format!(
            "[defaults]\nbackend = \"incus\"\nbase_image = \"local:kennel-test/bookworm\"\n\n\
             [network]\ntrusted = [\"{mirror}\"]\n\n\
             [agents.{agent}]\ncommand = [\"sh\"]\nruntime = \"none\"\n\
             install = \"echo built-by-{agent} > /etc/marker\"\n"
        ),
    )
    .expect("write the config");
    t.user.chown(&t.config_home);

    let built = t
        .kennel(&["image", "build", "--no-cache", &agent])
        .timeout(BUILD_TIMEOUT)
        .run();
    built.assert_ok();
    let reference = built.stdout.trim().to_string();
    assert!(
        reference.starts_with(&format!("kennel/{agent}:")),
        "{built}"
    );
    for layer in ["kennel/base:", &format!("kennel/{agent}:")] {
        assert!(
            built
                .stderr
                .lines()
                .any(|line| line.contains(&format!("built {layer}")) && line.contains("in Incus")),
            "{layer} must be built in Incus\n{built}"
        );
    }
    assert!(
        built.stderr.contains("FROM local:kennel-test/bookworm"),
        "{built}"
    );

    // Built in Incus, labelled as kennel's.
    let shown = t.engine(&["image", "show", &reference]);
    assert!(shown.success(), "{shown}");
    assert!(shown.stdout.contains("kennel.built: incus"), "{shown}");
    assert!(
        shown.stdout.contains("dev.kennel.managed: \"true\""),
        "{shown}"
    );
    let listed = t.kennel(&["image", "ls", "--json"]).run();
    listed.assert_ok();
    let images = listed.json()["images"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        images
            .iter()
            .any(|image| image["reference"] == reference.as_str() && image["current"] == true),
        "{listed}"
    );

    // Its downloads went through kennel's proxy.
    let logs = t.data_home.join("kennel/logs/builds");
    let network: String = std::fs::read_dir(&logs)
        .expect("the build logs")
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            name.starts_with("kennel-base-") && name.ends_with(".network.log")
        })
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
        .collect();
    assert!(
        network
            .lines()
            .any(|line| line.contains("\"host\":\"deb.debian.org\"")
                && line.contains("\"verdict\":\"allow\"")),
        "the build's downloads must go through kennel's proxy: {network}"
    );

    // No build container stays.
    let left = t.engine(&["list", "--format", "csv", "--columns", "n"]);
    assert!(left.success(), "{left}");
    assert!(
        !left.stdout.contains("kennel-build-"),
        "a build container was left: {left}"
    );

    // The agent runs from it, with what its recipe and the base installed.
    let out = t
        .kennel(&[
            "run",
            &agent,
            "--",
            "-c",
            "cat /etc/marker; command -v socat; command -v tmux",
        ])
        .run();
    out.assert_ok();
    assert!(out.stdout.contains(&format!("built-by-{agent}")), "{out}");
    assert!(out.stdout.contains("/usr/bin/socat"), "{out}");
    assert!(out.stdout.contains("/usr/bin/tmux"), "{out}");

    let removed = t.kennel(&["image", "rm", &agent]).run();
    removed.assert_ok();
}
