//! Network policy on every backend (issue 4): the sandbox's only way out is
//! kennel's egress proxy.
//!
//! The test hosts are our own: a network namespace `kennel-e2e-net` joined to
//! the host by a veth pair (host 198.18.0.1/24 and 2001:2::1/64, namespace
//! 198.18.0.2/24 and 2001:2::2/64: benchmarking ranges, routed nowhere
//! else), running HTTP servers on 198.18.0.2:8080 and [2001:2::2]:8081 and a
//! UDP listener on 198.18.0.2:53 that records every datagram. Names reach
//! them through `[network.hosts]`; nothing is ever sent anywhere else. The
//! proxy counts the benchmarking ranges as non-public, so the tests trust
//! exactly these two /24 and /64 (`network.trusted`): the metadata and
//! private names stay refused.
//!
//! The namespace also runs the stand-in model server (`stand_in_model.py`:
//! OpenAI chat completions and Responses, Anthropic messages, answering
//! from scripts) on 198.18.0.2:8090 over HTTP and on 198.18.0.2:8443 and
//! :443 over HTTPS with a certificate for `model.kennel.test` from a test CA kept in
//! the e2e cache while it is valid (`TestNet::model_ca`), for the tests of real agents at work.
//! Its own errors go to `model-server.log` in the work directory.
//!
//! Set up once per test run, as root; re-running replaces a previous run's
//! namespace and servers (idempotent).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Backend, Ctx, all_processes, not_ready, unique};

const NS: &str = "kennel-e2e-net";
const VETH_HOST: &str = "kennel-e2e-h";
const VETH_NS: &str = "kennel-e2e-n";
pub const HTTP_PORT: u16 = 8080;
const HTTP6_PORT: u16 = 8081;
/// The stand-in model server's port on 198.18.0.2.
pub const MODEL_PORT: u16 = 8090;
/// The same server over HTTPS (also on 443, the port the credential
/// broker works on).
pub const MODEL_TLS_PORT: u16 = 8443;
const WORK: &str = "/var/tmp/kennel-e2e-net";
/// What the test hosts' HTTP servers serve.
pub const BODY: &str = "kennel-e2e-test-host";

/// `[network]` for every network test.
pub fn network_tables() -> &'static str {
    "[network]\n\
         trusted = [\"198.18.0.0/24\", \"2001:2::/64\"]\n\n\
         [network.hosts]\n\
         \"allowed.kennel.test\" = [\"198.18.0.2\"]\n\
         \"allowed6.kennel.test\" = [\"2001:2::2\"]\n\
         \"other.kennel.test\" = [\"198.18.0.2\"]\n\
         \"meta.kennel.test\" = [\"169.254.169.254\"]\n\
         \"private.kennel.test\" = [\"10.1.2.3\"]\n\
         \"model.kennel.test\" = [\"198.18.0.2\"]\n"
}

pub struct TestNet {
    udp_log: PathBuf,
    /// The stand-in model server's scripts (`<model>.json`).
    pub model_scripts: PathBuf,
    /// Every request the stand-in model server received, as JSON lines.
    pub model_log: PathBuf,
    /// The test CA (PEM) that signed the HTTPS model server's certificate.
    pub model_ca: PathBuf,
}

static TEST_NET: OnceLock<Result<TestNet, String>> = OnceLock::new();

fn run(argv: &[&str]) -> Result<String, String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn spawn_in_ns(argv: &[&str]) -> Result<(), String> {
    spawn_in_ns_logged(argv, Stdio::null())
}

/// Starts `argv` in the namespace with its standard error going to `stderr`.
fn spawn_in_ns_logged(argv: &[&str], stderr: impl Into<Stdio>) -> Result<(), String> {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", NS]).args(argv);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    cmd.spawn()
        .map(drop)
        .map_err(|e| format!("cannot start {}: {e}", argv.join(" ")))
}

/// Where the test CA is kept between runs: it is built into the agent
/// images of the HTTPS test (`ca_certificates`), so a new CA per run would
/// mean a new image per run. `scripts/e2e-setup.sh --fresh` removes it.
fn test_ca_dir() -> PathBuf {
    let cache =
        std::env::var("KENNEL_E2E_CACHE").unwrap_or_else(|_| "/var/cache/kennel-e2e".into());
    Path::new(&cache).join("test-ca")
}

/// A test CA (kept in [`test_ca_dir`] while it is valid for 30 more days)
/// and a certificate it signs for `model.kennel.test`, made with `openssl`
/// in `dir`: (CA, server chain, server key).
fn make_test_ca(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), String> {
    let ca_dir = test_ca_dir();
    std::fs::create_dir_all(&ca_dir).map_err(|e| format!("{}: {e}", ca_dir.display()))?;
    let (ca_key, ca) = (ca_dir.join("ca.key"), ca_dir.join("ca.pem"));
    let (key, csr, cert) = (
        dir.join("server.key"),
        dir.join("server.csr"),
        dir.join("server.pem"),
    );
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName = DNS:model.kennel.test, DNS:platform.claude.com, DNS:api.anthropic.com\n\
         basicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature, keyEncipherment\n\
         extendedKeyUsage = serverAuth\n",
    )
    .map_err(|e| format!("{}: {e}", ext.display()))?;
    let path = |p: &PathBuf| p.display().to_string();
    let month = (30 * 24 * 3600).to_string();
    let reusable = ca_key.is_file()
        && run(&[
            "openssl",
            "x509",
            "-checkend",
            &month,
            "-noout",
            "-in",
            &path(&ca),
        ])
        .is_ok();
    if !reusable {
        run(&[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=kennel e2e test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &path(&ca_key),
            "-out",
            &path(&ca),
        ])?;
    }
    run(&[
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=model.kennel.test",
        "-keyout",
        &path(&key),
        "-out",
        &path(&csr),
    ])?;
    run(&[
        "openssl",
        "x509",
        "-req",
        "-days",
        "3",
        "-in",
        &path(&csr),
        "-CA",
        &path(&ca),
        "-CAkey",
        &path(&ca_key),
        "-CAcreateserial",
        "-extfile",
        &path(&ext),
        "-out",
        &path(&cert),
    ])?;
    Ok((ca, cert, key))
}

fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

fn setup() -> Result<TestNet, String> {
    if unsafe_uid() != 0 {
        return Err("the network tests create a network namespace: run them as root".into());
    }
    // A previous run's namespace: stop its servers, remove it.
    if run(&["ip", "netns", "pids", NS]).is_ok() {
        if let Ok(pids) = run(&["ip", "netns", "pids", NS]) {
            for pid in pids.split_whitespace() {
                let _ = run(&["kill", "-KILL", pid]);
            }
        }
        let _ = run(&["ip", "netns", "del", NS]);
    }
    let _ = run(&["ip", "link", "del", VETH_HOST]);
    run(&["ip", "netns", "add", NS])?;
    run(&[
        "ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS, "netns", NS,
    ])?;
    run(&["ip", "addr", "add", "198.18.0.1/24", "dev", VETH_HOST])?;
    run(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:2::1/64",
        "dev",
        VETH_HOST,
        "nodad",
    ])?;
    run(&["ip", "link", "set", VETH_HOST, "up"])?;
    let in_ns = |args: &[&str]| {
        let mut argv = vec!["ip", "netns", "exec", NS];
        argv.extend_from_slice(args);
        run(&argv)
    };
    in_ns(&["ip", "link", "set", "lo", "up"])?;
    in_ns(&["ip", "addr", "add", "198.18.0.2/24", "dev", VETH_NS])?;
    in_ns(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:2::2/64",
        "dev",
        VETH_NS,
        "nodad",
    ])?;
    in_ns(&["ip", "link", "set", VETH_NS, "up"])?;
    // Replies to the engines' NATed or slirp'd connections go back to the host.
    in_ns(&["ip", "route", "add", "default", "via", "198.18.0.1"])?;
    in_ns(&["ip", "-6", "route", "add", "default", "via", "2001:2::1"])?;

    let work = Path::new(WORK);
    let _ = std::fs::remove_dir_all(work);
    let www = work.join("www");
    std::fs::create_dir_all(&www).map_err(|e| format!("{}: {e}", www.display()))?;
    std::fs::write(www.join("index.html"), format!("{BODY}\n")).map_err(|e| e.to_string())?;
    let udp_log = work.join("udp53.log");
    std::fs::write(&udp_log, "").map_err(|e| e.to_string())?;
    let www = www.display().to_string();
    let port = HTTP_PORT.to_string();
    let port6 = HTTP6_PORT.to_string();
    spawn_in_ns(&[
        python(),
        "-m",
        "http.server",
        &port,
        "--bind",
        "198.18.0.2",
        "--directory",
        &www,
    ])?;
    spawn_in_ns(&[
        python(),
        "-m",
        "http.server",
        &port6,
        "--bind",
        "2001:2::2",
        "--directory",
        &www,
    ])?;
    let udp = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('198.18.0.2', 53))\n\
         while True:\n\
         \x20   data, peer = s.recvfrom(65536)\n\
         \x20   with open({:?}, 'ab') as log:\n\
         \x20       log.write(repr((peer, data)).encode() + b'\\n')\n",
        udp_log.display().to_string()
    );
    spawn_in_ns(&[python(), "-c", &udp])?;
    let model_scripts = work.join("model");
    std::fs::create_dir_all(&model_scripts).map_err(|e| e.to_string())?;
    let model_log = work.join("model-requests.jsonl");
    std::fs::write(&model_log, "").map_err(|e| e.to_string())?;
    let (model_ca, model_cert, model_key) = make_test_ca(work)?;
    let model_server = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/stand_in_model.py");
    let (log, scripts) = (
        model_log.display().to_string(),
        model_scripts.display().to_string(),
    );
    let (cert, key) = (
        model_cert.display().to_string(),
        model_key.display().to_string(),
    );
    let (port, tls_port) = (MODEL_PORT.to_string(), MODEL_TLS_PORT.to_string());
    let common = [
        python(),
        model_server,
        "--bind",
        "198.18.0.2",
        "--log",
        &log,
        "--scripts",
        &scripts,
    ];
    for extra in [
        vec!["--port", port.as_str()],
        vec![
            "--port",
            tls_port.as_str(),
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        // HTTPS's own port, where kennel's credential broker works.
        vec!["--port", "443", "--tls-cert", &cert, "--tls-key", &key],
    ] {
        let errors = work.join("model-server.log");
        let errors = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&errors)
            .map_err(|e| format!("{}: {e}", errors.display()))?;
        let argv: Vec<&str> = common.iter().copied().chain(extra).collect();
        spawn_in_ns_logged(&argv, errors)?;
    }
    // Ready when the host reaches every server directly.
    let deadline = Instant::now() + Duration::from_secs(20);
    for url in [
        format!("http://198.18.0.2:{HTTP_PORT}/"),
        format!("http://[2001:2::2]:{HTTP6_PORT}/"),
        format!("http://198.18.0.2:{MODEL_PORT}/v1/models"),
        format!("https://model.kennel.test:{MODEL_TLS_PORT}/v1/models"),
    ] {
        let resolve = format!("model.kennel.test:{MODEL_TLS_PORT}:198.18.0.2");
        let ca = model_ca.display().to_string();
        loop {
            let ok = run(&[
                "curl",
                "-fsS",
                "--noproxy",
                "*",
                "-m",
                "2",
                "--resolve",
                &resolve,
                "--cacert",
                &ca,
                &url,
            ])
            .is_ok_and(|body| body.contains(BODY) || body.contains("\"object\": \"list\""));
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("the test host {url} did not come up"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(TestNet {
        udp_log,
        model_scripts,
        model_log,
        model_ca,
    })
}

fn unsafe_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// The test hosts, set up once per test run.
pub fn test_net() -> Result<&'static TestNet, &'static str> {
    TEST_NET.get_or_init(setup).as_ref().map_err(String::as_str)
}

/// The fixture for one network test: the test hosts and a config naming them.
pub fn net_ctx(b: Backend, name: &str) -> Option<(Ctx, &'static TestNet)> {
    let t = Ctx::with_shell_image(b, name)?;
    let net = match test_net() {
        Ok(net) => net,
        Err(reason) => return not_ready(&format!("{}::{name}", b.name()), reason),
    };
    t.write_config("", network_tables());
    Some((t, net))
}

/// The probe run inside the sandbox: one `NAME=http_code`, `NAME_RC=`,
/// `NAME_REASON=` (X-Kennel-Reason) and `NAME_BODY=` group per request.
pub fn probe_script(requests: &[(&str, &str)]) -> String {
    let mut script = String::from(
        "r() { n=$1; shift; \
         code=$(curl -sS -m 15 -o /tmp/kennel-probe-body -D /tmp/kennel-probe-head -w '%{http_code}' \"$@\" 2>/tmp/kennel-probe-err); rc=$?; \
         echo \"$n=$code\"; echo \"${n}_RC=$rc\"; \
         echo \"${n}_REASON=$(grep -i '^x-kennel-reason:' /tmp/kennel-probe-head 2>/dev/null | cut -d: -f2 | tr -d ' \\r')\"; \
         echo \"${n}_BODY=$(head -c 200 /tmp/kennel-probe-body 2>/dev/null | tr -d '\\n')\"; \
         echo \"${n}_ERR=$(head -c 200 /tmp/kennel-probe-err | tr -d '\\n')\"; \
         rm -f /tmp/kennel-probe-body /tmp/kennel-probe-head /tmp/kennel-probe-err; }\n",
    );
    for (name, args) in requests {
        script.push_str(&format!("r {name} {args}\n"));
    }
    script
}

#[track_caller]
pub fn expect(out: &crate::harness::Out, key: &str, want: &str) {
    let got = out.expect_kv(key);
    assert_eq!(got, want, "{key}\n{out}");
}

/// A direct (proxy-ignoring) connection must fail: no HTTP status, curl error.
#[track_caller]
fn expect_unreachable(out: &crate::harness::Out, key: &str) {
    assert_eq!(out.expect_kv(key), "000", "{key} must not connect\n{out}");
    assert_ne!(out.expect_kv(&format!("{key}_RC")), "0", "{key}\n{out}");
}

/// The session whose log has a decision matching `pred` (tests of one
/// backend share kennel's data directory, so "the most recent log" could be
/// another test's): found with `kennel net log --session NAME --json`.
pub fn find_session(t: &Ctx, pred: impl Fn(&Value) -> bool) -> Option<(String, Vec<Value>)> {
    let logs = t.data_home.join("kennel/logs");
    let entries = std::fs::read_dir(&logs).ok()?;
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(session) = file.strip_suffix(".net.jsonl") else {
            continue;
        };
        let out = t
            .kennel(&["net", "log", "--session", session, "--json"])
            .run();
        out.assert_ok();
        let decisions = out.json()["decisions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if decisions.iter().any(&pred) {
            return Some((session.to_string(), decisions));
        }
    }
    None
}

fn udp_marker_absent(net: &TestNet, marker: &str) {
    // Give a datagram that did get out time to arrive.
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read_to_string(&net.udp_log).unwrap_or_default();
    assert!(
        !log.contains(marker),
        "a UDP datagram to 198.18.0.2:53 left the sandbox:\n{log}"
    );
}

// ------------------------------------------------------------------- cases

/// The default mode: allowlisted names through the proxy, everything else
/// refused with a reason, logged; no way around the proxy (TCP, UDP/DNS).
pub fn allowlist(b: Backend) {
    let Some((t, net)) = net_ctx(b, "network_allowlist") else {
        return;
    };
    let denied_port = 20000 + (std::process::id() % 20000) as u16;
    let marker = format!("kennel-dns-{}", unique());
    let mut script = probe_script(&[
        (
            "ALLOWED",
            &format!("http://allowed.kennel.test:{HTTP_PORT}/"),
        ),
        (
            "ALLOWED6",
            &format!("http://allowed6.kennel.test:{HTTP6_PORT}/"),
        ),
        ("OTHER", &format!("http://other.kennel.test:{denied_port}/")),
        ("META", "http://meta.kennel.test/latest/meta-data/"),
        ("PRIVATE", "http://private.kennel.test/"),
        (
            "RAW",
            &format!("--noproxy '*' http://198.18.0.2:{HTTP_PORT}/"),
        ),
        (
            "RAW6",
            &format!("--noproxy '*' 'http://[2001:2::2]:{HTTP6_PORT}/'"),
        ),
    ]);
    script.push_str(&format!(
        "(printf '{marker}' > /dev/udp/198.18.0.2/53) 2>/dev/null; echo UDP_RC=$?\n\
         echo PROXY_ENV=$HTTP_PROXY\n\
         echo FORWARDER_PPID=$(ps -o ppid= -C socat | head -n 1 | tr -d ' ')\n"
    ));
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--allow",
            "allowed.kennel.test",
            "--allow",
            "allowed6.kennel.test",
            "--allow",
            "meta.kennel.test",
            "--allow",
            "private.kennel.test",
            "--",
            "bash",
            "-c",
            &script,
        ])
        .timeout(Duration::from_secs(180))
        .run();
    out.assert_ok();
    expect(&out, "PROXY_ENV", "http://127.0.0.1:3128");
    if b.has_engine() {
        // The forwarder belongs to the container's init, not to the agent
        // (which could otherwise wait for it, or signal it by accident).
        expect(&out, "FORWARDER_PPID", "1");
    }
    // (1) an allowed name, through the proxy
    expect(&out, "ALLOWED", "200");
    expect(&out, "ALLOWED_BODY", BODY);
    // (6) IPv6
    expect(&out, "ALLOWED6", "200");
    expect(&out, "ALLOWED6_BODY", BODY);
    // (2) a name not on the list
    expect(&out, "OTHER", "403");
    expect(&out, "OTHER_REASON", "not-allowlisted");
    // (5) allowlisted names that resolve to metadata / private addresses
    expect(&out, "META", "403");
    expect(&out, "META_REASON", "private-address");
    expect(&out, "PRIVATE", "403");
    expect(&out, "PRIVATE_REASON", "private-address");
    // (3) raw TCP ignoring the proxy
    expect_unreachable(&out, "RAW");
    expect_unreachable(&out, "RAW6");
    // (4) UDP to a resolver's port
    assert_ne!(
        out.expect_kv("UDP_RC"),
        "0",
        "UDP must not be sendable\n{out}"
    );
    udp_marker_absent(net, &marker);

    // The denial is in the session's log, with its reason.
    let (session, decisions) = find_session(&t, |d| {
        d["host"] == "other.kennel.test" && d["port"] == u64::from(denied_port)
    })
    .unwrap_or_else(|| panic!("no session log has the denial of other.kennel.test:{denied_port}"));
    let denial = decisions
        .iter()
        .find(|d| d["host"] == "other.kennel.test")
        .unwrap();
    assert_eq!(denial["verdict"], "deny", "{denial}");
    assert_eq!(denial["reason"], "not-allowlisted", "{denial}");
    assert_eq!(denial["session"], session.as_str(), "{denial}");
    let allowed = decisions
        .iter()
        .find(|d| d["host"] == "allowed.kennel.test")
        .unwrap_or_else(|| panic!("the allowed request is not logged: {decisions:?}"));
    assert_eq!(allowed["verdict"], "allow", "{allowed}");
    assert_eq!(allowed["addr"], "198.18.0.2", "{allowed}");
    assert!(allowed["bytes_down"].as_u64().unwrap_or(0) > 0, "{allowed}");
    for host in ["meta.kennel.test", "private.kennel.test"] {
        let d = decisions
            .iter()
            .find(|d| d["host"] == host)
            .unwrap_or_else(|| panic!("{host} is not logged: {decisions:?}"));
        assert_eq!(d["reason"], "private-address", "{d}");
    }
    // --denied and the human form
    let out = t
        .kennel(&["net", "log", "--session", &session, "--denied", "--json"])
        .run();
    out.assert_ok();
    let denied = out.json()["decisions"].clone();
    let denied = denied.as_array().unwrap();
    assert!(denied.iter().all(|d| d["verdict"] == "deny"), "{out}");
    assert_eq!(denied.len(), 3, "other, meta, private\n{out}");
    let out = t.kennel(&["net", "log", "--session", &session]).run();
    out.assert_ok();
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(&format!("other.kennel.test:{denied_port}")))
        .unwrap_or_else(|| panic!("no human line for the denial\n{out}"));
    assert!(
        line.contains("deny") && line.contains("not-allowlisted"),
        "{line}"
    );

    // The socket directory is gone once the run ended.
    let proxy_dirs = t.user.runtime_dir().join("kennel/proxy");
    let left: Vec<_> = std::fs::read_dir(&proxy_dirs)
        .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left.iter().any(|name| name.to_string_lossy() == session),
        "the proxy directory of {session} is left in {}",
        proxy_dirs.display()
    );
}

/// `restricted`: any name, but never a private or metadata address; still no
/// way around the proxy.
pub fn restricted(b: Backend) {
    let Some((t, _net)) = net_ctx(b, "network_restricted") else {
        return;
    };
    let script = probe_script(&[
        (
            "ALLOWED",
            &format!("http://allowed.kennel.test:{HTTP_PORT}/"),
        ),
        ("OTHER", &format!("http://other.kennel.test:{HTTP_PORT}/")),
        ("META", "http://meta.kennel.test/latest/meta-data/"),
        ("PRIVATE", "http://private.kennel.test/"),
        (
            "RAW",
            &format!("--noproxy '*' http://198.18.0.2:{HTTP_PORT}/"),
        ),
    ]);
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--network",
            "restricted",
            "--",
            "bash",
            "-c",
            &script,
        ])
        .timeout(Duration::from_secs(180))
        .run();
    out.assert_ok();
    expect(&out, "ALLOWED", "200");
    expect(&out, "OTHER", "200");
    expect(&out, "OTHER_BODY", BODY);
    expect(&out, "META", "403");
    expect(&out, "META_REASON", "private-address");
    expect(&out, "PRIVATE", "403");
    expect(&out, "PRIVATE_REASON", "private-address");
    expect_unreachable(&out, "RAW");
}

/// `none`: nothing, not even the proxy's port.
pub fn none(b: Backend) {
    let Some((t, net)) = net_ctx(b, "network_none") else {
        return;
    };
    let marker = format!("kennel-dns-{}", unique());
    let mut script = probe_script(&[
        (
            "VIA_PROXY",
            &format!("-x http://127.0.0.1:3128 http://allowed.kennel.test:{HTTP_PORT}/"),
        ),
        (
            "RAW",
            &format!("--noproxy '*' http://198.18.0.2:{HTTP_PORT}/"),
        ),
    ]);
    script.push_str(&format!(
        "(printf '{marker}' > /dev/udp/198.18.0.2/53) 2>/dev/null; echo UDP_RC=$?\n\
         echo PROXY_ENV=${{HTTP_PROXY:-unset}}\n\
         test -e /run/kennel/proxy && echo SOCKET_DIR=present || echo SOCKET_DIR=absent\n"
    ));
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--network",
            "none",
            "--allow",
            "allowed.kennel.test",
            "--",
            "bash",
            "-c",
            &script,
        ])
        .timeout(Duration::from_secs(180))
        .run();
    out.assert_ok();
    expect_unreachable(&out, "VIA_PROXY");
    expect_unreachable(&out, "RAW");
    expect(&out, "PROXY_ENV", "unset");
    expect(&out, "SOCKET_DIR", "absent");
    assert_ne!(
        out.expect_kv("UDP_RC"),
        "0",
        "UDP must not be sendable\n{out}"
    );
    udp_marker_absent(net, &marker);
}

/// `open`: the test host is reachable directly (the engine's default
/// network routes to it through the host).
pub fn open(b: Backend) {
    let Some((t, _net)) = net_ctx(b, "network_open") else {
        return;
    };
    let script = probe_script(&[("DIRECT", &format!("http://198.18.0.2:{HTTP_PORT}/"))]);
    let out = t
        .kennel(&[
            "run",
            "shell",
            "--network",
            "open",
            "--",
            "bash",
            "-c",
            &script,
        ])
        .timeout(Duration::from_secs(180))
        .run();
    out.assert_ok();
    assert!(
        out.stderr.contains("network is open"),
        "open must be announced on every run\n{out}"
    );
    expect(&out, "DIRECT", "200");
    expect(&out, "DIRECT_BODY", BODY);
}

/// The argv of every `kennel __proxy-daemon SESSION` process for `session`
/// (PID, argv, session id from `/proc/PID/stat`).
fn proxy_daemons(session: &str) -> Vec<(u32, Vec<String>, Option<u32>)> {
    all_processes()
        .into_iter()
        .filter(|process| {
            process.argv.get(1).map(String::as_str) == Some("__proxy-daemon")
                && process.argv.iter().any(|arg| arg == session)
        })
        .map(|process| {
            // Field 6 of stat (after the parenthesised command) is the session id.
            let sid = std::fs::read_to_string(format!("/proc/{}/stat", process.pid))
                .ok()
                .and_then(|stat| {
                    let rest = stat.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(3)?.parse().ok()
                });
            (process.pid, process.argv, sid)
        })
        .collect()
}

/// The container name (= the Plan's `name`, which names the proxy's socket
/// directory, its log and its daemon) of persistent session `session`.
fn plan_name_of(t: &Ctx, session: &str) -> String {
    let listed = t
        .session(session)
        .unwrap_or_else(|| panic!("{session} is not in ls: {:?}", t.sessions()));
    let handle = listed["handle"].as_str().unwrap_or_default().to_string();
    assert!(!handle.is_empty(), "{listed}");
    if !t.backend.has_engine() {
        // Native: the handle is the session's directory, named after the Plan.
        return std::path::Path::new(&handle)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    t.inspect(&handle)["Name"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string()
}

/// `kennel start` in `allowlist` mode: the session's proxy runs in a daemon
/// of its own (`kennel __proxy-daemon NAME`, in its own session) as long as
/// the container; `kennel exec` goes through it, decisions are logged, and
/// once the container is stopped the daemon is gone and so is its socket
/// directory. `--network none` starts no daemon.
///
/// Native: the proxy runs in the session's own kennel (the tmux pane's
/// program), not in a daemon; the rest holds the same.
pub fn detached(b: Backend) {
    let native = !b.has_engine();
    let Some((t, _net)) = net_ctx(b, "network_detached") else {
        return;
    };
    let name = format!("net-{}", unique());
    let proxy_dirs = t.user.runtime_dir().join("kennel/proxy");
    let logs = t.data_home.join("kennel/logs");
    let daemon_log = |plan: &str| {
        std::fs::read_to_string(logs.join(format!("{plan}.proxy.log"))).unwrap_or_default()
    };
    let fail = |e: String| -> ! {
        t.remove_containers();
        panic!("{}: {e}", b.name())
    };

    let out = t
        .kennel(&[
            "start",
            "shell",
            "--name",
            &name,
            "--allow",
            "allowed.kennel.test",
        ])
        .timeout(Duration::from_secs(180))
        .run();
    if !out.success() {
        fail(format!("kennel start failed\n{out}"));
    }
    assert!(
        out.elapsed < Duration::from_secs(60),
        "kennel start must not wait for its daemon\n{out}"
    );
    assert!(
        !out.stderr.contains("no network"),
        "allowlist must not be downgraded any more\n{out}"
    );
    let plan = plan_name_of(&t, &name);
    let daemons = proxy_daemons(&plan);
    if native {
        assert!(
            daemons.is_empty(),
            "native sessions need no daemon: {daemons:?}"
        );
    } else {
        if daemons.len() != 1 {
            fail(format!(
                "expected one proxy daemon for {plan}, found {daemons:?}\n{}",
                daemon_log(&plan)
            ));
        }
        let (pid, _, sid) = &daemons[0];
        assert_eq!(
            *sid,
            Some(*pid),
            "the daemon must lead a session of its own (setsid)"
        );
    }
    assert!(
        proxy_dirs.join(&plan).join("proxy.sock").exists(),
        "no proxy socket in {}",
        proxy_dirs.join(&plan).display()
    );

    // Through the daemon's proxy, from a command beside the agent. The
    // forwarder may still be starting: wait for 127.0.0.1:3128 first.
    let mut script = String::from(
        "i=0; while [ $i -lt 100 ] && ! grep -qs ':0C38 ' /proc/net/tcp; do i=$((i+1)); sleep 0.1; done\n",
    );
    script.push_str(&probe_script(&[
        (
            "ALLOWED",
            &format!("http://allowed.kennel.test:{HTTP_PORT}/"),
        ),
        ("OTHER", &format!("http://other.kennel.test:{HTTP_PORT}/")),
    ]));
    let out = t
        .kennel(&["exec", &name, "--", "bash", "-c", &script])
        .run();
    if !out.success() || out.kv("ALLOWED").as_deref() != Some("200") {
        fail(format!(
            "exec through the proxy\n{out}\n--- daemon log ---\n{}",
            daemon_log(&plan)
        ));
    }
    expect(&out, "ALLOWED_BODY", BODY);
    expect(&out, "OTHER", "403");
    expect(&out, "OTHER_REASON", "not-allowlisted");

    // Both decisions are in the session's log.
    let out = t
        .kennel(&["net", "log", "--session", &plan, "--json"])
        .run();
    out.assert_ok();
    let decisions = out.json()["decisions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let allowed = decisions
        .iter()
        .find(|d| d["host"] == "allowed.kennel.test")
        .unwrap_or_else(|| panic!("the allowed request is not logged\n{out}"));
    assert_eq!(allowed["verdict"], "allow", "{allowed}");
    assert_eq!(allowed["session"], plan.as_str(), "{allowed}");
    let denied = decisions
        .iter()
        .find(|d| d["host"] == "other.kennel.test")
        .unwrap_or_else(|| panic!("the denial is not logged\n{out}"));
    assert_eq!(denied["verdict"], "deny", "{denied}");
    assert_eq!(denied["reason"], "not-allowlisted", "{denied}");

    // stop: the daemon notices within a poll or two, stops the proxy,
    // removes the socket directory and exits.
    t.kennel(&["stop", &name, "--timeout", "2"])
        .run()
        .assert_ok();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !proxy_daemons(&plan).is_empty() || proxy_dirs.join(&plan).exists() {
        if Instant::now() > deadline {
            fail(format!(
                "15 s after `kennel stop`: daemons {:?}, socket directory {} {}\n--- daemon log ---\n{}",
                proxy_daemons(&plan),
                proxy_dirs.join(&plan).display(),
                if proxy_dirs.join(&plan).exists() {
                    "still there"
                } else {
                    "gone"
                },
                daemon_log(&plan)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !native {
        let log = daemon_log(&plan);
        assert!(
            log.contains("the sandbox has ended") || log.contains("the sandbox is gone"),
            "{log}"
        );
        assert!(log.contains("proxy stopped"), "{log}");
    }
    t.kennel(&["rm", &name]).run().assert_ok();
    assert!(!proxy_dirs.join(&plan).exists());

    // --network none: no proxy, no daemon, no socket directory.
    let quiet = format!("quiet-{}", unique());
    let out = t.start_offline(&quiet, &[], &["sleep", "600"]).run();
    out.assert_ok();
    let plan = plan_name_of(&t, &quiet);
    std::thread::sleep(Duration::from_millis(500));
    let daemons = proxy_daemons(&plan);
    let dir_exists = proxy_dirs.join(&plan).exists();
    let log_exists = logs.join(format!("{plan}.proxy.log")).exists();
    t.kennel(&["kill", &quiet]).run().assert_ok();
    t.kennel(&["rm", &quiet]).run().assert_ok();
    assert!(
        daemons.is_empty(),
        "--network none started a daemon: {daemons:?}"
    );
    assert!(!dir_exists, "--network none made a proxy directory");
    assert!(!log_exists, "--network none made a proxy daemon log");
}
