//! Real agent images (npm and pip through the TLS-intercepting proxy, with
//! the host's CA bundle configured). Docker only: building them on three
//! engines would take too long. Run alone with
//! `cargo test -p kennel --test e2e agent_images`.

use crate::harness::{BUILD_TIMEOUT, Backend, Ctx};

const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

#[test]
fn docker_codex_and_aider_build_and_run() {
    let Some(t) = Ctx::new(Backend::Docker, "agent_images") else {
        return;
    };
    t.write_config(&format!("ca_certificates = [\"{HOST_CA_BUNDLE}\"]"), "");
    for agent in ["codex", "aider"] {
        let out = t
            .kennel(&["image", "build", agent])
            .timeout(BUILD_TIMEOUT)
            .run();
        out.assert_ok();
    }
    let out = t.kennel(&["run", "codex", "--", "--version"]).run();
    out.assert_ok();
    assert!(
        has_version(&out.stdout),
        "`kennel run codex -- --version` must print a version\n{out}"
    );
}

/// True when `text` contains `\d+\.\d+`.
fn has_version(text: &str) -> bool {
    let b = text.as_bytes();
    (1..b.len().saturating_sub(1))
        .any(|i| b[i] == b'.' && b[i - 1].is_ascii_digit() && b[i + 1].is_ascii_digit())
}

#[test]
fn version_regex() {
    assert!(has_version("codex-cli 0.46.0"));
    assert!(!has_version("no version here."));
}
