//! The proxy against real sockets, loopback only. Test hosts are names mapped
//! (through `ProxyConfig::hosts`) to listeners this test starts; no traffic
//! leaves the machine and no DNS is used.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kennel_proxy::{
    Decision, Listen, NetworkMode, Policy, ProxyConfig, ProxyError, ProxyHandle,
    build_client_hello, read_log, start,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(10);

fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

/// A plain HTTP origin that describes the request it got.
async fn origin(bind: &str) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.expect("bind origin");
    let addr = listener.local_addr().expect("origin addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let method = req.method().clone();
                    let uri = req.uri().clone();
                    let host = req
                        .headers()
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let proxy_auth = req.headers().contains_key("proxy-authorization");
                    let hop = req.headers().contains_key("x-hop");
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let text = format!(
                        "origin saw {method} {uri} host={host} proxy-auth={proxy_auth} x-hop={hop} body={}",
                        body.len()
                    );
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("x-origin", "yes")
                            .body(Full::new(Bytes::from(text)))
                            .expect("response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A raw TCP echo server.
async fn echo(bind: &str) -> SocketAddr {
    let listener = TcpListener::bind(bind).await.expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

fn hosts() -> BTreeMap<String, Vec<IpAddr>> {
    let mut hosts = BTreeMap::new();
    hosts.insert("allowed.test".to_string(), vec![ip("127.0.0.1")]);
    hosts.insert("other.test".to_string(), vec![ip("127.0.0.1")]);
    hosts.insert("meta.test".to_string(), vec![ip("169.254.169.254")]);
    hosts.insert("ten.test".to_string(), vec![ip("10.1.2.3")]);
    hosts.insert(
        "mixed.test".to_string(),
        vec![ip("127.0.0.1"), ip("10.1.2.3")],
    );
    hosts.insert("mapped.test".to_string(), vec![ip("::ffff:10.1.2.3")]);
    hosts.insert("six.test".to_string(), vec![ip("::1")]);
    hosts
}

fn config(mode: NetworkMode, allow: &[&str], log: &Path) -> ProxyConfig {
    ProxyConfig {
        policy: Policy {
            mode,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: Vec::new(),
        },
        hosts: hosts(),
        upstream: None,
        log_file: Some(log.to_path_buf()),
        session: "test-session".to_string(),
        trusted_addrs: vec![(ip("127.0.0.0"), 8)],
        ..ProxyConfig::default()
    }
}

async fn start_tcp(config: ProxyConfig) -> (ProxyHandle, SocketAddr) {
    let handle = start(config, Listen::Tcp("127.0.0.1:0".parse().expect("addr")))
        .await
        .expect("start proxy");
    let Listen::Tcp(addr) = handle.local_addr().clone() else {
        panic!("not tcp")
    };
    assert_ne!(addr.port(), 0);
    (handle, addr)
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn reason(&self) -> Option<&str> {
        self.header("x-kennel-reason")
    }
}

/// Send a raw request (which should say `Connection: close`) and read the reply.
async fn raw<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &str) -> Reply {
    let read = async {
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.expect("read reply");
        buf
    };
    let buf = tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("reply in time");
    parse_reply(&buf)
}

fn parse_reply(buf: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(buf).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .expect("status line")
        .split_whitespace()
        .nth(1)
        .expect("code")
        .parse()
        .expect("num");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_string(),
    }
}

async fn get(proxy: SocketAddr, url: &str) -> Reply {
    let stream = TcpStream::connect(proxy).await.expect("connect proxy");
    raw(
        stream,
        &format!("GET {url} HTTP/1.1\r\nHost: ignored.example\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Send CONNECT and read the response head only (byte by byte: the tunnel follows).
async fn connect(proxy: SocketAddr, target: &str) -> (TcpStream, Reply) {
    let mut stream = TcpStream::connect(proxy).await.expect("connect proxy");
    let head = connect_on(&mut stream, target).await;
    (stream, head)
}

async fn connect_on<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, target: &str) -> Reply {
    let read = async {
        stream
            .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .expect("w");
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.expect("read head");
            assert_ne!(
                n,
                0,
                "proxy closed during the CONNECT response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.push(byte[0]);
        }
        // A refusal carries a body (Content-Length); read it too.
        let mut reply = parse_reply(&buf);
        if let Some(len) = reply
            .header("content-length")
            .and_then(|l| l.parse::<usize>().ok())
        {
            let mut body = vec![0u8; len];
            stream.read_exact(&mut body).await.expect("read body");
            reply.body = String::from_utf8_lossy(&body).to_string();
        }
        reply
    };
    tokio::time::timeout(TIMEOUT, read)
        .await
        .expect("CONNECT reply in time")
}

/// Wait until the log has a record matching `pred` (tunnels log when they end).
async fn wait_log(path: &Path, pred: impl Fn(&Decision) -> bool) -> Decision {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Ok(records) = read_log(path)
            && let Some(found) = records.into_iter().find(|d| pred(d))
        {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no matching record in {}: {:?}",
            path.display(),
            read_log(path)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn tmp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("net.jsonl");
    (dir, log)
}

#[tokio::test]
async fn allowed_name_reaches_origin() {
    let (_dir, log) = tmp();
    let origin = origin("127.0.0.1:0").await;
    let (proxy, addr) = start_tcp(config(NetworkMode::Allowlist, &["allowed.test"], &log)).await;
    let port = origin.port();

    let reply = get(addr, &format!("http://allowed.test:{port}/path?q=1")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-origin"), Some("yes"));
    // Origin-form target, the URL's host in Host, no proxy credentials, hop-by-hop headers gone.
    assert!(
        reply.body.starts_with(&format!(
            "origin saw GET /path?q=1 host=allowed.test:{port} "
        )),
        "{}",
        reply.body
    );

    let stream = TcpStream::connect(addr).await.expect("connect");
    let reply = raw(
        stream,
        &format!(
            "POST http://ALLOWED.test:{port}/up HTTP/1.1\r\nHost: allowed.test\r\nProxy-Authorization: Basic c2VjcmV0\r\n\
             Connection: close, x-hop\r\nX-Hop: 1\r\nContent-Length: 11\r\n\r\nhello world"
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("POST /up"), "{}", reply.body);
    assert!(reply.body.contains("proxy-auth=false"), "{}", reply.body);
    assert!(reply.body.contains("x-hop=false"), "{}", reply.body);
    assert!(reply.body.ends_with("body=11"), "{}", reply.body);

    let record = wait_log(&log, |d| d.method == "POST").await;
    assert_eq!(record.host, "allowed.test");
    assert_eq!(record.port, port);
    assert_eq!(record.addr, Some(ip("127.0.0.1")));
    assert_eq!(record.verdict, "allow");
    assert_eq!(record.reason, "trusted-address");
    assert_eq!(record.session, "test-session");
    assert_eq!(record.bytes_up, 11);
    assert_eq!(record.bytes_down, reply.body.len() as u64);
    assert!(
        record.time.ends_with('Z') && record.time.len() == 24,
        "{}",
        record.time
    );
    assert_eq!(proxy.stats().allowed, 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn other_name_is_not_allowlisted() {
    let (_dir, log) = tmp();
    let origin = origin("127.0.0.1:0").await;
    let (proxy, addr) = start_tcp(config(NetworkMode::Allowlist, &["allowed.test"], &log)).await;

    let reply = get(addr, &format!("http://other.test:{}/", origin.port())).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.reason(), Some("not-allowlisted"));
    assert!(
        reply.body.contains("kennel run --allow other.test"),
        "{}",
        reply.body
    );

    let (_s, reply) = connect(addr, &format!("other.test:{}", origin.port())).await;
    assert_eq!(
        (reply.status, reply.reason()),
        (403, Some("not-allowlisted"))
    );

    let records = read_log(&log).expect("log");
    assert_eq!(records.len(), 2);
    for record in &records {
        assert_eq!(
            (record.verdict.as_str(), record.reason.as_str()),
            ("deny", "not-allowlisted")
        );
        assert_eq!(record.host, "other.test");
        assert_eq!(record.port, origin.port());
        assert_eq!(record.addr, None);
        assert_eq!((record.bytes_up, record.bytes_down), (0, 0));
    }
    assert_eq!(records[1].method, "CONNECT");
    assert_eq!(proxy.stats().denied, 2);
    proxy.shutdown().await;
}

#[tokio::test]
async fn private_addresses_are_refused_before_connecting() {
    let (_dir, log) = tmp();
    let allow = [
        "meta.test",
        "ten.test",
        "mixed.test",
        "mapped.test",
        "10.1.2.3",
        "six.test",
    ];
    let mut cfg = config(NetworkMode::Allowlist, &allow, &log);
    cfg.trusted_addrs = vec![(ip("127.0.0.0"), 8)]; // not ::1: six.test must be refused
    let (proxy, addr) = start_tcp(cfg).await;
    let cases = [
        ("meta.test", "169.254.169.254"),
        ("ten.test", "10.1.2.3"),
        ("mixed.test", "10.1.2.3"), // every resolved address is checked
        ("mapped.test", "::ffff:10.1.2.3"),
        ("10.1.2.3", "10.1.2.3"),
        ("six.test", "::1"),
    ];
    for (host, refused) in cases {
        let started = Instant::now();
        let reply = get(addr, &format!("http://{host}/latest/meta-data/")).await;
        assert_eq!(
            (reply.status, reply.reason()),
            (403, Some("private-address")),
            "{host}"
        );
        let (_s, reply) = connect(addr, &format!("{host}:443")).await;
        assert_eq!(
            (reply.status, reply.reason()),
            (403, Some("private-address")),
            "{host}"
        );
        // No connect attempt: an attempt to 10.1.2.3 would take seconds to fail
        // and would be reported as connect-failed.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{host} took {:?}",
            started.elapsed()
        );
        let record = wait_log(&log, |d| d.host == host && d.method == "CONNECT").await;
        assert_eq!(record.addr, Some(ip(refused)), "{host}");
        assert_eq!(record.reason, "private-address");
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn restricted_mode_allows_public_names_only() {
    let (_dir, log) = tmp();
    let origin = origin("127.0.0.1:0").await;
    let (proxy, addr) = start_tcp(config(NetworkMode::Restricted, &[], &log)).await;
    let reply = get(addr, "http://ten.test/").await;
    assert_eq!(
        (reply.status, reply.reason()),
        (403, Some("private-address"))
    );
    let reply = get(addr, "http://meta.test/").await;
    assert_eq!(
        (reply.status, reply.reason()),
        (403, Some("private-address"))
    );
    // Any name is fine (127.0.0.0/8 is trusted in these tests).
    let reply = get(addr, &format!("http://other.test:{}/", origin.port())).await;
    assert_eq!(reply.status, 200);
    proxy.shutdown().await;
}

#[tokio::test]
async fn restricted_mode_deny_rules_win() {
    let (_dir, log) = tmp();
    let origin = origin("127.0.0.1:0").await;
    let mut cfg = config(NetworkMode::Restricted, &[], &log);
    cfg.policy.deny = vec!["*.test".to_string()];
    let (proxy, addr) = start_tcp(cfg).await;
    let reply = get(addr, &format!("http://allowed.test:{}/", origin.port())).await;
    assert_eq!((reply.status, reply.reason()), (403, Some("denied")));
    proxy.shutdown().await;
}

#[tokio::test]
async fn none_mode_refuses_everything() {
    let (_dir, log) = tmp();
    let origin = origin("127.0.0.1:0").await;
    let (proxy, addr) = start_tcp(config(NetworkMode::None, &["allowed.test"], &log)).await;
    let reply = get(addr, &format!("http://allowed.test:{}/", origin.port())).await;
    assert_eq!((reply.status, reply.reason()), (403, Some("mode-none")));
    assert!(reply.body.contains("--network none"), "{}", reply.body);
    let (_s, reply) = connect(addr, &format!("allowed.test:{}", origin.port())).await;
    assert_eq!((reply.status, reply.reason()), (403, Some("mode-none")));
    assert_eq!(
        proxy.stats(),
        kennel_proxy::Stats {
            allowed: 0,
            denied: 2
        }
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn open_mode_allows_and_logs() {
    let (_dir, log) = tmp();
    let origin = origin("127.0.0.1:0").await;
    let mut cfg = config(NetworkMode::Open, &[], &log);
    cfg.trusted_addrs.clear(); // open needs no exemption
    let (proxy, addr) = start_tcp(cfg).await;
    let reply = get(addr, &format!("http://other.test:{}/", origin.port())).await;
    assert_eq!(reply.status, 200);
    let reply = get(addr, &format!("http://127.0.0.1:{}/", origin.port())).await;
    assert_eq!(reply.status, 200);
    let record = wait_log(&log, |d| d.host == "127.0.0.1").await;
    assert_eq!(
        (record.verdict.as_str(), record.reason.as_str()),
        ("allow", "open")
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn connect_tunnels_bytes_both_ways() {
    let (_dir, log) = tmp();
    let echo = echo("127.0.0.1:0").await;
    let (proxy, addr) = start_tcp(config(NetworkMode::Allowlist, &["allowed.test"], &log)).await;
    let (mut stream, reply) = connect(addr, &format!("allowed.test:{}", echo.port())).await;
    assert_eq!(reply.status, 200);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = stream.split();
    let write = async {
        w.write_all(&payload).await.expect("write");
        w.shutdown().await.expect("half-close");
    };
    let read = async {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.expect("read");
        back
    };
    let ((), back) = tokio::time::timeout(TIMEOUT, async { tokio::join!(write, read) })
        .await
        .expect("echo in time");
    assert!(
        back == payload,
        "echoed {} bytes of {}",
        back.len(),
        payload.len()
    );
    drop(stream);
    let record = wait_log(&log, |d| d.method == "CONNECT").await;
    assert_eq!(
        (record.verdict.as_str(), record.port),
        ("allow", echo.port())
    );
    assert_eq!(record.addr, Some(ip("127.0.0.1")));
    assert_eq!((record.bytes_up, record.bytes_down), (200_000, 200_000));
    proxy.shutdown().await;
}

#[tokio::test]
async fn data_sent_with_the_connect_request_is_forwarded() {
    let (_dir, log) = tmp();
    let echo = echo("127.0.0.1:0").await;
    let mut cfg = config(NetworkMode::Allowlist, &["allowed.test"], &log);
    cfg.sni_ports = vec![echo.port()];
    let (proxy, addr) = start_tcp(cfg).await;
    // CONNECT head and ClientHello in one write: the hello must still be
    // inspected and replayed, not lost in the proxy's request buffer.
    let hello = build_client_hello(Some("allowed.test"));
    let mut request = format!(
        "CONNECT allowed.test:{0} HTTP/1.1\r\nHost: allowed.test:{0}\r\n\r\n",
        echo.port()
    )
    .into_bytes();
    request.extend_from_slice(&hello);
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(&request).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(&hello)) {
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
            .await
            .expect("in time")
            .expect("read");
        assert_ne!(n, 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));
    drop(stream);
    let record = wait_log(&log, |d| d.method == "CONNECT").await;
    assert_eq!(record.verdict, "allow");
    assert_eq!(record.bytes_up, hello.len() as u64);
    proxy.shutdown().await;
}

#[tokio::test]
async fn sni_is_checked_on_tls_ports() {
    let (_dir, log) = tmp();
    let echo = echo("127.0.0.1:0").await;
    let mut cfg = config(NetworkMode::Allowlist, &["allowed.test"], &log);
    cfg.sni_ports = vec![echo.port()]; // stands in for 443
    let (proxy, addr) = start_tcp(cfg).await;
    let target = format!("allowed.test:{}", echo.port());

    // Matching SNI (case-insensitive): the ClientHello is replayed upstream unchanged.
    let hello = build_client_hello(Some("Allowed.Test"));
    let (mut stream, reply) = connect(addr, &target).await;
    assert_eq!(reply.status, 200);
    stream.write_all(&hello).await.expect("hello");
    let mut back = vec![0u8; hello.len()];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut back))
        .await
        .expect("in time")
        .expect("echo");
    assert_eq!(back, hello);
    drop(stream);

    // Mismatching SNI: closed, logged.
    let (mut stream, reply) = connect(addr, &target).await;
    assert_eq!(reply.status, 200);
    stream
        .write_all(&build_client_hello(Some("evil.example")))
        .await
        .expect("hello");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(
        n.map(|n| n == 0).unwrap_or(true),
        "the tunnel must not carry data"
    );
    let record = wait_log(&log, |d| d.reason == "sni-mismatch").await;
    assert_eq!(record.verdict, "deny");
    assert!(record.detail.contains("evil.example"), "{}", record.detail);

    // Not TLS at all.
    let (mut stream, _) = connect(addr, &target).await;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(n.map(|n| n == 0).unwrap_or(true));
    wait_log(&log, |d| d.reason == "not-tls").await;

    // Ports outside sni_ports are not inspected.
    let other = self::echo("127.0.0.1:0").await;
    let (mut stream, reply) = connect(addr, &format!("allowed.test:{}", other.port())).await;
    assert_eq!(reply.status, 200);
    stream.write_all(b"plain").await.expect("write");
    let mut back = [0u8; 5];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut back))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&back, b"plain");
    proxy.shutdown().await;
}

#[tokio::test]
async fn ipv6_destinations() {
    let (_dir, log) = tmp();
    let echo = echo("[::1]:0").await;
    let origin = origin("[::1]:0").await;
    let mut cfg = config(NetworkMode::Allowlist, &["six.test", "::1"], &log);
    cfg.trusted_addrs = vec![(ip("::1"), 128)];
    // Listen on IPv6 loopback too.
    let proxy = start(cfg, Listen::Tcp("[::1]:0".parse().expect("addr")))
        .await
        .expect("start");
    let Listen::Tcp(addr) = proxy.local_addr().clone() else {
        panic!()
    };

    let (mut stream, reply) = connect(addr, &format!("six.test:{}", echo.port())).await;
    assert_eq!(reply.status, 200);
    stream.write_all(b"v6").await.expect("write");
    let mut back = [0u8; 2];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut back))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&back, b"v6");
    drop(stream);
    let record = wait_log(&log, |d| d.host == "six.test").await;
    assert_eq!(record.addr, Some(ip("::1")));

    let reply = get(addr, &format!("http://[::1]:{}/six", origin.port())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .body
            .contains(&format!("host=[::1]:{}", origin.port())),
        "{}",
        reply.body
    );
    let record = wait_log(&log, |d| d.method == "GET").await;
    assert_eq!(
        (record.host.as_str(), record.addr),
        ("::1", Some(ip("::1")))
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn chains_through_an_upstream_proxy() {
    let (_dir, log_a) = tmp();
    let (_dir_b, log_b) = tmp();
    let origin = origin("127.0.0.1:0").await;
    let echo = echo("127.0.0.1:0").await;
    let (proxy_b, addr_b) =
        start_tcp(config(NetworkMode::Allowlist, &["allowed.test"], &log_b)).await;
    let mut cfg_a = config(
        NetworkMode::Allowlist,
        &["allowed.test", "other.test", "unmapped.test"],
        &log_a,
    );
    cfg_a.upstream = Some(format!("http://user:pw@{addr_b}"));
    // An empty mapping: A cannot resolve the name (without asking DNS).
    cfg_a.hosts.insert("unmapped.test".to_string(), Vec::new());
    let (proxy_a, addr_a) = start_tcp(cfg_a).await;

    let reply = get(
        addr_a,
        &format!("http://allowed.test:{}/chained", origin.port()),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("GET /chained"), "{}", reply.body);
    assert!(
        reply.body.contains("proxy-auth=false"),
        "B must not forward A's credentials: {}",
        reply.body
    );
    let a = wait_log(&log_a, |d| d.method == "GET").await;
    let b = wait_log(&log_b, |d| d.method == "GET").await;
    assert_eq!(a.via.as_deref(), Some(addr_b.to_string().as_str()));
    assert_eq!((a.verdict.as_str(), b.verdict.as_str()), ("allow", "allow"));
    assert_eq!(a.bytes_down, b.bytes_down);

    let (mut stream, reply) = connect(addr_a, &format!("allowed.test:{}", echo.port())).await;
    assert_eq!(reply.status, 200);
    stream
        .write_all(b"through two proxies")
        .await
        .expect("write");
    let mut back = [0u8; 19];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut back))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&back, b"through two proxies");
    drop(stream);
    wait_log(&log_a, |d| d.method == "CONNECT" && d.bytes_up == 19).await;
    wait_log(&log_b, |d| d.method == "CONNECT" && d.bytes_up == 19).await;

    // A allows other.test, B does not: 502 connect-failed from A, 403 logged by B.
    let (_s, reply) = connect(addr_a, &format!("other.test:{}", echo.port())).await;
    assert_eq!(
        (reply.status, reply.reason()),
        (502, Some("connect-failed"))
    );
    wait_log(&log_b, |d| {
        d.host == "other.test" && d.reason == "not-allowlisted"
    })
    .await;
    // A name A cannot resolve goes to the upstream by name; B refuses it.
    let reply = get(addr_a, "http://unmapped.test/").await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let a = wait_log(&log_a, |d| d.host == "unmapped.test").await;
    assert_eq!(a.addr, None);
    wait_log(&log_b, |d| d.host == "unmapped.test" && d.verdict == "deny").await;
    // A's own refusals never reach B.
    let reply = get(addr_a, "http://ten.test/").await;
    assert_eq!(reply.reason(), Some("not-allowlisted"));
    assert!(
        read_log(&log_b)
            .expect("log b")
            .iter()
            .all(|d| d.host != "ten.test")
    );
    proxy_a.shutdown().await;
    proxy_b.shutdown().await;
}

#[tokio::test]
async fn unix_socket_listener() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, log) = tmp();
    let origin = origin("127.0.0.1:0").await;
    let path = dir.path().join("proxy.sock");
    let proxy = start(
        config(NetworkMode::Allowlist, &["allowed.test"], &log),
        Listen::Unix(path.clone()),
    )
    .await
    .expect("start");
    assert_eq!(proxy.local_addr(), &Listen::Unix(path.clone()));
    let mode = std::fs::metadata(&path)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let reply = raw(
        stream,
        &format!(
            "GET http://allowed.test:{}/unix HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            origin.port()
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    // A tunnel from a Unix-socket client.
    let echo = self::echo("127.0.0.1:0").await;
    let mut stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let reply = connect_on(&mut stream, &format!("allowed.test:{}", echo.port())).await;
    assert_eq!(reply.status, 200);
    stream.write_all(b"over unix").await.expect("write");
    let mut back = [0u8; 9];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut back))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&back, b"over unix");
    drop(stream);
    wait_log(&log, |d| d.method == "CONNECT" && d.bytes_down == 9).await;
    let mut stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let reply = connect_on(&mut stream, "other.test:1").await;
    assert_eq!(reply.reason(), Some("not-allowlisted"));
    // A second proxy on the same live socket is refused; the first keeps it.
    let again = start(
        config(NetworkMode::None, &[], &log),
        Listen::Unix(path.clone()),
    )
    .await;
    assert!(
        matches!(again, Err(ProxyError::Bind { .. })),
        "{:?}",
        again.err()
    );
    proxy.shutdown().await;
    assert!(!path.exists(), "socket removed on shutdown");
}

#[tokio::test]
async fn refuses_non_loopback_listen_addresses() {
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:8080", "10.0.0.1:3128"] {
        let result = start(
            ProxyConfig::default(),
            Listen::Tcp(addr.parse().expect("addr")),
        )
        .await;
        assert!(matches!(result, Err(ProxyError::NotLoopback(_))), "{addr}");
    }
}

#[tokio::test]
async fn bad_requests_and_unreachable_servers() {
    let (_dir, log) = tmp();
    let (proxy, addr) = start_tcp(config(NetworkMode::Allowlist, &["allowed.test"], &log)).await;
    // Origin-form: not a proxy request.
    let stream = TcpStream::connect(addr).await.expect("connect");
    let reply = raw(
        stream,
        "GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!((reply.status, reply.reason()), (403, Some("bad-request")));
    // https:// in a plain request.
    let reply = get(addr, "https://allowed.test/").await;
    assert_eq!(reply.reason(), Some("bad-request"));
    // Nobody listens there.
    let free = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let reply = get(addr, &format!("http://allowed.test:{free}/")).await;
    assert_eq!(
        (reply.status, reply.reason()),
        (502, Some("connect-failed"))
    );
    let (_s, reply) = connect(addr, &format!("allowed.test:{free}")).await;
    assert_eq!(
        (reply.status, reply.reason()),
        (502, Some("connect-failed"))
    );
    let record = wait_log(&log, |d| d.method == "CONNECT").await;
    assert_eq!(
        (record.verdict.as_str(), record.addr),
        ("deny", Some(ip("127.0.0.1")))
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_and_logs_open_tunnels() {
    let (_dir, log) = tmp();
    let echo = echo("127.0.0.1:0").await;
    let (proxy, addr) = start_tcp(config(NetworkMode::Allowlist, &["allowed.test"], &log)).await;
    let (mut stream, reply) = connect(addr, &format!("allowed.test:{}", echo.port())).await;
    assert_eq!(reply.status, 200);
    stream.write_all(b"abc").await.expect("write");
    let mut back = [0u8; 3];
    stream.read_exact(&mut back).await.expect("read");
    tokio::time::timeout(TIMEOUT, proxy.shutdown())
        .await
        .expect("shutdown in time");
    let record = wait_log(&log, |d| d.method == "CONNECT").await;
    assert_eq!((record.bytes_up, record.bytes_down), (3, 3));
    let mut rest = Vec::new();
    let n = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut rest))
        .await
        .expect("closed");
    assert!(n.map(|n| n == 0).unwrap_or(true));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}
