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
use crate::network::{TestNet, expect, find_session, net_ctx, network_tables, probe_script};

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

/// The tokens the stand-in OAuth server issued to `family`, in order:
/// (grant, access, refresh, the refresh token the request carried).
fn issued(net: &TestNet, family: &str) -> Vec<(String, String, String, String)> {
    std::fs::read_to_string(&net.model_log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["answer"]["family"] == family)
        .map(|entry| {
            let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_string();
            (
                text(&entry["answer"]["grant"]),
                text(&entry["answer"]["issued"]["access"]),
                text(&entry["answer"]["issued"]["refresh"]),
                text(&entry["body"]["refresh_token"]),
            )
        })
        .collect()
}

/// A subscription login kept on the host (`kennel login`): the agent's
/// login (here curl, standing in for the agent's own login command, as the
/// user's `[agents.shell.oauth]`) gets sentinels from the token endpoint
/// while the real tokens go to the secret store; a later session's agent
/// uses the access sentinel (the server gets the real token) and refreshes
/// with the refresh sentinel (the server gets the real refresh token and
/// rotates it; the agent gets the same sentinels again); no real token is
/// anywhere the sandbox can read, in kennel's output or in its log.
pub fn brokered_login(b: Backend) {
    let Some((t, net)) = net_ctx(b, "broker_login") else {
        return;
    };
    t.write_config(
        &config(net),
        "[agents.shell.oauth]\ncommand = [\"bash\"]\n\
         token_url = \"https://model.kennel.test/v1/oauth/token\"\n\
         hosts = [\"model.kennel.test\"]\nheader = \"authorization\"\n",
    );
    let family = unique().replace('-', "");
    let login_script = format!(
        "echo \"LOGIN=$(curl -sS -m 20 https://model.kennel.test/v1/oauth/token \
         -H 'content-type: application/json' \
         -d '{{\"grant_type\":\"authorization_code\",\"code\":\"good-{family}\",\"client_id\":\"kennel-e2e\"}}')\""
    );
    let login = t
        .kennel(&["login", "shell", "--", "-c", &login_script])
        .timeout(BUILD_TIMEOUT)
        .run();
    login.assert_ok();
    assert!(login.stderr.contains("login kept on the host"), "{login}");
    let first = issued(net, &family);
    assert_eq!(first.len(), 1, "one login\n{login}");
    let (_, real_access, real_refresh, _) = first[0].clone();
    let answer: serde_json::Value =
        serde_json::from_str(&login.expect_kv("LOGIN")).expect("the token endpoint's JSON");
    let access = answer["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let refresh = answer["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        access.starts_with("sk-ant-oat01-")
            && access.len() == real_access.len()
            && access != real_access,
        "the agent got a sentinel of the access token's shape\n{login}"
    );
    assert!(
        refresh.starts_with("sk-ant-ort01-")
            && refresh.len() == real_refresh.len()
            && refresh != real_refresh,
        "the agent got a sentinel of the refresh token's shape\n{login}"
    );
    assert_eq!(answer["expires_in"], 28800, "{login}");
    let listed = t.kennel(&["secret", "ls", "--json"]).run();
    listed.assert_ok();
    assert!(
        listed.stdout.contains("KENNEL_LOGIN_SHELL") && !listed.stdout.contains(&real_refresh),
        "{listed}"
    );

    // A later session (its proxy a daemon of its own, or the native pane)
    // brokers the kept login for a command beside the agent.
    let name = format!("login-{}", unique());
    let started = t
        .kennel(&[
            "start",
            "shell",
            "--name",
            &name,
            "--allow",
            "model.kennel.test",
            "--allow",
            "allowed.kennel.test",
        ])
        .timeout(BUILD_TIMEOUT)
        .run();
    started.assert_ok();
    let (needle_a, needle_b) = real_refresh.split_at(real_refresh.len() / 2);
    let (needle_c, needle_d) = real_access.split_at(real_access.len() / 2);
    let mut script = format!(
        "i=0; while [ $i -lt 100 ] && ! grep -qs ':0C38 ' /proc/net/tcp; do i=$((i+1)); sleep 0.1; done\n\
         ACCESS={access}; REFRESH={refresh}\n\
         printf '%s%s\\n%s%s\\n' {needle_a} {needle_b} {needle_c} {needle_d} > /tmp/kennel-needles\n"
    );
    script.push_str(&probe_script(&[
        (
            "USE1",
            "https://model.kennel.test/v1/models -H \"authorization: Bearer $ACCESS\"",
        ),
        (
            "STRAY",
            "http://allowed.kennel.test:8080/ -H \"authorization: Bearer $ACCESS\"",
        ),
    ]));
    script.push_str(
        "echo \"REFRESHED=$(curl -sS -m 20 https://model.kennel.test/v1/oauth/token \
         -d grant_type=refresh_token -d refresh_token=$REFRESH -d client_id=kennel-e2e)\"\n",
    );
    script.push_str(&probe_script(&[(
        "USE2",
        "https://model.kennel.test/v1/models -H \"authorization: Bearer $ACCESS\"",
    )]));
    script.push_str(
        "echo \"IN_ENVIRON=$(for p in /proc/[0-9]*; do (tr '\\0' '\\n' < $p/environ) 2>/dev/null; done | grep -cF -f /tmp/kennel-needles)\"\n\
         echo \"IN_FILES=$(grep -rlF -f /tmp/kennel-needles --exclude=kennel-needles \"$HOME\" \"$PWD\" /tmp /run /etc /var /opt 2>/dev/null | wc -l)\"\n",
    );
    let out = t
        .kennel(&["exec", &name, "--", "bash", "-c", &script])
        .run();
    let removed = t.kennel(&["rm", "--force", &name]).run();
    out.assert_ok();
    removed.assert_ok();
    let all = issued(net, &family);
    assert_eq!(all.len(), 2, "the login and one refresh\n{out}");
    let (grant, new_access, new_refresh, carried) = all[1].clone();
    assert_eq!(grant, "refresh_token");
    assert_eq!(
        carried, real_refresh,
        "the server got the real refresh token, swapped in by kennel"
    );

    // The access sentinel became the real token, before and after the refresh.
    expect(&out, "USE1", "200");
    expect(&out, "USE2", "200");
    let digests = received_digests(net);
    assert!(
        digests.contains(&sha256(&format!("Bearer {real_access}"))),
        "{out}"
    );
    assert!(
        digests.contains(&sha256(&format!("Bearer {new_access}"))),
        "{out}"
    );
    assert!(
        !digests.contains(&sha256(&format!("Bearer {access}"))),
        "the server got the sentinel\n{out}"
    );
    // Elsewhere: refused, saying why.
    expect(&out, "STRAY", "403");
    expect(&out, "STRAY_REASON", "credential-not-bound");
    // The refresh's answer: the same sentinels, no real token.
    let refreshed: serde_json::Value =
        serde_json::from_str(&out.expect_kv("REFRESHED")).expect("the refresh's JSON");
    assert_eq!(refreshed["access_token"], access.as_str(), "{out}");
    assert_eq!(refreshed["refresh_token"], refresh.as_str(), "{out}");
    expect(&out, "IN_ENVIRON", "0");
    expect(&out, "IN_FILES", "0");
    let log = t.kennel(&["net", "log", "--json"]).run();
    log.assert_ok();
    for output in [&login, &started, &out, &log, &listed] {
        for real in [&real_access, &real_refresh, &new_access, &new_refresh] {
            assert!(
                !output.stdout.contains(real.as_str()) && !output.stderr.contains(real.as_str()),
                "a real token in kennel's output\n{output}"
            );
        }
    }
    // Each use logged under the login's name: the login's session, and
    // the later one.
    let said = |entry: &serde_json::Value, what: &str| {
        entry["credential"] == "shell-login"
            && entry["detail"].as_str().unwrap_or_default().contains(what)
    };
    let entries = log.json()["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        entries
            .iter()
            .any(|entry| said(entry, "refreshed by kennel on the host")),
        "no refresh in the log\n{log}"
    );
    let (_, login_log) = find_session(&t, |entry| said(entry, "kept on the host"))
        .expect("the login's session logged the login it kept");
    let login_log = serde_json::to_string(&login_log).expect("json");
    assert!(!login_log.contains(&real_access) && !login_log.contains(&real_refresh));

    // Forgotten: the next session has nothing to broker.
    let logout = t.kennel(&["logout", "shell"]).run();
    logout.assert_ok();
    let again = t.kennel(&["logout", "shell"]).run();
    assert_eq!(again.code(), Some(2), "{again}");
}
