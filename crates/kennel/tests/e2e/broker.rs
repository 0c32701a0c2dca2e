//! Credentials never enter the sandbox (issue 15): kennel's proxy keeps the
//! value on the host and swaps the sandbox's placeholder for it in the
//! bound place of HTTPS requests to the bound host, and nowhere else.
//!
//! The bound host is the stand-in model server on the test network
//! (`model.kennel.test`, HTTPS on 443 with its own test CA, trusted through
//! `ca_certificates`); it records a SHA-256 of each credential header it
//! receives, so the test compares digests and the value is never written
//! down. The secret is the user's own `[secrets.KENNEL_E2E_TOKEN]`, its
//! value in the host's environment.

use sha2::{Digest, Sha256};

use crate::harness::{BUILD_TIMEOUT, Backend, unique};
use crate::network::{TestNet, expect, net_ctx, network_tables, probe_script};

const NAME: &str = "KENNEL_E2E_TOKEN";

fn config(net: &TestNet) -> String {
    format!(
        "ca_certificates = [\"{}\"]\n\n{}\n[secrets.{NAME}]\nhosts = [\"model.kennel.test\"]\nheader = \"authorization\"\n",
        net.model_ca.display(),
        network_tables(),
    )
}

/// The sandbox's view: what it holds, what each request got, and whether
/// the value is anywhere it can read.
fn probe() -> String {
    let mut script = String::from(
        "echo \"PLACEHOLDER=$KENNEL_E2E_TOKEN\"\n\
         printf '%s%s' \"$NEEDLE_A\" \"$NEEDLE_B\" > /tmp/kennel-needle\n",
    );
    script.push_str(&probe_script(&[
        (
            "BROKERED",
            "https://model.kennel.test/v1/models -H \"authorization: Bearer $KENNEL_E2E_TOKEN\"",
        ),
        (
            "OTHER_HOST",
            "http://allowed.kennel.test:8080/ -H \"authorization: Bearer $KENNEL_E2E_TOKEN\"",
        ),
        (
            "WRONG_PLACE",
            "https://model.kennel.test/v1/models -H \"x-other: $KENNEL_E2E_TOKEN\"",
        ),
        ("SPLICED", "https://model.kennel.test:8443/v1/models"),
    ]));
    script.push_str(
        "issuer() { curl -sS -m 15 -o /dev/null -w '%{certs}' \"$1\" 2>/dev/null | grep -m1 -i '^issuer:' | tr -d '\\r'; }\n\
         echo \"ISSUER_BROKERED=$(issuer https://model.kennel.test/v1/models)\"\n\
         echo \"ISSUER_SPLICED=$(issuer https://model.kennel.test:8443/v1/models)\"\n\
         echo \"IN_ENVIRON=$(for p in /proc/[0-9]*; do (tr '\\0' '\\n' < $p/environ) 2>/dev/null; done | grep -cF -f /tmp/kennel-needle)\"\n\
         echo \"IN_FILES=$(grep -rlF -f /tmp/kennel-needle --exclude=kennel-needle \"$HOME\" \"$PWD\" /tmp /run /etc /var /opt 2>/dev/null | wc -l)\"\n\
         echo \"KEYS=$(grep -rlE 'PRIVATE KEY' /run/kennel /etc/kennel /etc/ssl/certs \"$(dirname \"$NODE_EXTRA_CA_CERTS\")\" \"$HOME\" 2>/dev/null | wc -l)\"\n\
         echo \"CONSTRAINTS=$(openssl crl2pkcs7 -nocrl -certfile \"$NODE_EXTRA_CA_CERTS\" 2>/dev/null | openssl pkcs7 -print_certs -text -noout 2>/dev/null | grep -A6 'Name Constraints' | tr -d '\\n ')\"\n\
         echo \"SESSION_CA=$(grep -c 'BEGIN CERTIFICATE' \"$NODE_EXTRA_CA_CERTS\" 2>/dev/null) $(tail -n 3 \"$NODE_EXTRA_CA_CERTS\" 2>/dev/null | head -n 1)\"\n",
    );
    script
}

/// The hex SHA-256 of `text`.
fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The `credential_sha256` of every request the stand-in received.
fn received_digests(net: &TestNet) -> Vec<String> {
    std::fs::read_to_string(&net.model_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter_map(|entry| {
            entry["credential_sha256"]["authorization"]
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

pub fn brokered_credential(b: Backend) {
    let Some((t, net)) = net_ctx(b, "broker") else {
        return;
    };
    t.write_config(&config(net), "");
    let secret = format!(
        "kbr-{}-{}",
        unique().replace('-', ""),
        "0123456789abcdefghij"
    );
    let (needle_a, needle_b) = secret.split_at(secret.len() / 2);
    let needle_a_arg = format!("NEEDLE_A={needle_a}");
    let needle_b_arg = format!("NEEDLE_B={needle_b}");
    let script = probe();
    let args = [
        "run",
        "shell",
        "--allow",
        "model.kennel.test",
        "--allow",
        "allowed.kennel.test",
        "-e",
        &needle_a_arg,
        "-e",
        &needle_b_arg,
        "--",
        "bash",
        "-c",
        &script,
    ];
    let out = t
        .kennel_env(&args, &[(NAME, &secret)])
        .timeout(BUILD_TIMEOUT)
        .run();
    out.assert_ok();
    assert!(
        !out.stdout.contains(&secret) && !out.stderr.contains(&secret),
        "the value was printed\n{out}"
    );
    let placeholder = out.expect_kv("PLACEHOLDER");
    assert_eq!(placeholder.len(), secret.len(), "{out}");
    assert_ne!(placeholder, secret);

    // The bound request reached the server with the value, swapped in.
    expect(&out, "BROKERED", "200");
    assert!(
        received_digests(net).contains(&sha256(&format!("Bearer {secret}"))),
        "the server never received the real value\n{out}"
    );
    assert!(
        !received_digests(net).contains(&sha256(&format!("Bearer {placeholder}"))),
        "the server received the placeholder\n{out}"
    );
    // The placeholder elsewhere: refused, and said why.
    expect(&out, "OTHER_HOST", "403");
    expect(&out, "OTHER_HOST_REASON", "credential-not-bound");
    expect(&out, "WRONG_PLACE", "403");
    expect(&out, "WRONG_PLACE_REASON", "credential-not-bound");
    // Terminated with the session's CA where a credential is bound; spliced
    // (the server's own certificate) everywhere else.
    expect(&out, "SPLICED", "200");
    assert!(
        out.expect_kv("ISSUER_BROKERED").contains("kennel session"),
        "{out}"
    );
    assert!(
        out.expect_kv("ISSUER_SPLICED")
            .contains("kennel e2e test CA"),
        "{out}"
    );
    // The sandbox trusts the session's CA for the bound host only.
    let constraints = out.expect_kv("CONSTRAINTS");
    assert!(
        constraints.contains("Permitted:DNS:model.kennel.test")
            && constraints.contains("Excluded:IP:0.0.0.0/0.0.0.0"),
        "{constraints}\n{out}"
    );
    // Nowhere the sandbox can read.
    expect(&out, "IN_ENVIRON", "0");
    expect(&out, "IN_FILES", "0");
    expect(&out, "KEYS", "0");

    // Every use logged by name, never the value.
    let log = t.kennel(&["net", "log", "--json"]).run();
    log.assert_ok();
    assert!(!log.stdout.contains(&secret), "{log}");
    let entries = log.json()["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        entries.iter().any(|entry| entry["credential"] == NAME
            && entry["verdict"] == "allow"
            && entry["host"] == "model.kennel.test"),
        "no injection logged\n{log}"
    );
    assert!(
        entries.iter().any(|entry| entry["credential"] == NAME
            && entry["verdict"] == "deny"
            && entry["reason"] == "credential-not-bound"),
        "no refusal logged\n{log}"
    );
    let text = t.kennel(&["net", "log"]).run();
    text.assert_ok();
    assert!(
        text.stdout
            .contains(&format!("[credential {NAME} injected]"))
            && text
                .stdout
                .contains(&format!("[credential {NAME} refused]")),
        "{text}"
    );
    // Nor in what kennel shows about sessions.
    let listed = t.kennel(&["ls", "--all", "--json"]).run();
    assert!(!listed.stdout.contains(&secret), "{listed}");
    let dry = t
        .kennel_env(&["run", "shell", "--dry-run"], &[(NAME, &secret)])
        .run();
    dry.assert_ok();
    assert!(
        !dry.stdout.contains(&secret) && !dry.stderr.contains(&secret),
        "{dry}"
    );

    // Another session: another placeholder and another CA.
    let again = t
        .kennel_env(&args, &[(NAME, &secret)])
        .timeout(BUILD_TIMEOUT)
        .run();
    again.assert_ok();
    assert_ne!(again.expect_kv("PLACEHOLDER"), placeholder, "{again}");
    assert_ne!(
        again.expect_kv("SESSION_CA"),
        out.expect_kv("SESSION_CA"),
        "two sessions share a CA\n{out}\n{again}"
    );
}

/// A started session (`kennel start`): its proxy (a daemon of its own, or
/// the native session's pane) brokers the same way, for the agent and for
/// a command run beside it with `kennel exec`.
pub fn brokered_credential_in_a_session(b: Backend) {
    let Some((t, net)) = net_ctx(b, "broker_session") else {
        return;
    };
    t.write_config(&config(net), "");
    let secret = format!(
        "kbs-{}-{}",
        unique().replace('-', ""),
        "abcdefghij0123456789"
    );
    let name = format!("broker-{}", unique());
    let started = t
        .kennel_env(
            &[
                "start",
                "shell",
                "--name",
                &name,
                "--allow",
                "model.kennel.test",
            ],
            &[(NAME, &secret)],
        )
        .timeout(BUILD_TIMEOUT)
        .run();
    started.assert_ok();
    assert!(!started.stdout.contains(&secret) && !started.stderr.contains(&secret));
    // The forwarder may still be starting: wait for 127.0.0.1:3128 first.
    let mut script = String::from(
        "i=0; while [ $i -lt 100 ] && ! grep -qs ':0C38 ' /proc/net/tcp; do i=$((i+1)); sleep 0.1; done\n\
         echo \"PLACEHOLDER=$KENNEL_E2E_TOKEN\"\n",
    );
    script.push_str(&probe_script(&[(
        "BROKERED",
        "https://model.kennel.test/v1/models -H \"authorization: Bearer $KENNEL_E2E_TOKEN\"",
    )]));
    let out = t
        .kennel(&["exec", &name, "--", "bash", "-c", &script])
        .run();
    let removed = t.kennel(&["rm", "--force", &name]).run();
    out.assert_ok();
    removed.assert_ok();
    let placeholder = out.expect_kv("PLACEHOLDER");
    assert_eq!(placeholder.len(), secret.len(), "{out}");
    assert_ne!(placeholder, secret);
    expect(&out, "BROKERED", "200");
    assert!(
        received_digests(net).contains(&sha256(&format!("Bearer {secret}"))),
        "the server never received the real value\n{out}"
    );
    let listed = t.kennel(&["ls", "--all", "--json"]).run();
    assert!(!listed.stdout.contains(&secret), "{listed}");
}
