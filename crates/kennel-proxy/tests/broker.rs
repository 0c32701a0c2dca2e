//! The credential broker against real sockets, loopback only: a TLS server
//! with its own test CA stands in for the real API, the names `api.test`
//! (a credential is bound to it) and `plain.test` (none is) map to it, and a
//! client talks through the proxy trusting only what it should.

#[path = "support/pki.rs"]
mod pki;
use pki::{TestPki, provider, test_pki};

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kennel_proxy::{
    Credential, Decision, Listen, NetworkMode, Place, Policy, ProxyConfig, ProxyError, ProxyHandle,
    SessionCa, read_log, start,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const TIMEOUT: Duration = Duration::from_secs(10);
const PLACEHOLDER: &str = "kph_PLACEHOLDER_0123456789abcdef";
const VALUE: &str = "kv_realSECRETvalue/9876543210+xyz";
const VALUE_IN_QUERY: &str = "kv_realSECRETvalue%2F9876543210%2Bxyz";
/// The value a refresh gives (`v2`; `VALUE` is `v1`).
const NEW_VALUE: &str = "kv_refreshedSECRET_v2_0123456789";

/// What the API server received: the request line and every header.
#[derive(Debug)]
struct Seen {
    target: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A TLS + HTTP/1.1 server that reports each request on `seen` and answers
/// with the request's headers (so an injected value comes back).
async fn api_server(pki: &TestPki) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let acceptor = pki.acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let addr = listener.local_addr().expect("api addr");
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen_tx = seen_tx.clone();
                    async move {
                        let headers: Vec<(String, String)> = req
                            .headers()
                            .iter()
                            .map(|(n, v)| {
                                (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into())
                            })
                            .collect();
                        let mut text = format!("{} {}\n", req.method(), req.uri());
                        for (name, value) in &headers {
                            text.push_str(&format!("{name}: {value}\n"));
                        }
                        let echo_key = req.headers().get("x-api-key").cloned();
                        let _ = seen_tx.send(Seen {
                            target: req.uri().to_string(),
                            headers,
                        });
                        // `/v1/need-new`: only the refreshed value is accepted.
                        if req.uri().path() == "/v1/need-new" {
                            let status = if echo_key.as_ref().is_some_and(|key| key == NEW_VALUE) {
                                200
                            } else {
                                401
                            };
                            let response = Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(format!("status {status}\n"))).boxed())
                                .expect("response");
                            return Ok::<_, Infallible>(response);
                        }
                        let mut response = Response::builder().header("x-api", "yes");
                        if let Some(key) = echo_key {
                            response = response.header("x-echo-key", key);
                        }
                        // `/v1/drip`: the text three times, a few bytes per frame.
                        let body = if req.uri().path() == "/v1/drip" {
                            Drip::new(Bytes::from(text.repeat(3))).boxed()
                        } else {
                            Full::new(Bytes::from(text)).boxed()
                        };
                        Ok::<_, Infallible>(response.body(body).expect("response"))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen_rx)
}

/// A response body sent 1 to 7 bytes per frame, in turn (chunked), so that
/// the proxy gets an echoed value cut at every place.
struct Drip {
    text: Bytes,
    sizes: std::iter::Cycle<std::ops::RangeInclusive<usize>>,
}

impl Drip {
    fn new(text: Bytes) -> Self {
        Self {
            text,
            sizes: (1..=7).cycle(),
        }
    }
}

impl hyper::body::Body for Drip {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.text.is_empty() {
            return Poll::Ready(None);
        }
        let size = self.sizes.next().unwrap_or(1).min(self.text.len());
        let piece = self.text.split_to(size);
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }
}

fn credential() -> Credential {
    Credential {
        name: "API_KEY".into(),
        placeholder: PLACEHOLDER.into(),
        value: VALUE.into(),
        hosts: vec!["api.test".into()],
        places: vec![
            Place::Header {
                name: "x-api-key".into(),
            },
            Place::Basic,
            Place::Query {
                param: "key".into(),
            },
        ],
        methods: vec!["GET".into(), "POST".into()],
        paths: vec!["/v1/*".into()],
        refresh: None,
    }
}

fn config(log: &Path, api_port: u16, ca: &Arc<SessionCa>, roots: &TestPki) -> ProxyConfig {
    let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
    let mut hosts = BTreeMap::new();
    hosts.insert("api.test".to_string(), vec![loopback]);
    hosts.insert("plain.test".to_string(), vec![loopback]);
    ProxyConfig {
        policy: Policy {
            mode: NetworkMode::Allowlist,
            allow: vec!["api.test".into(), "plain.test".into()],
            deny: Vec::new(),
        },
        hosts,
        log_file: Some(log.to_path_buf()),
        session: "broker-test".into(),
        trusted_addrs: vec![(loopback, 32)],
        sni_ports: vec![api_port],
        credentials: vec![credential()],
        ca: Some(ca.clone()),
        upstream_roots: vec![roots.ca_pem.as_bytes().to_vec()],
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
    (handle, addr)
}

/// CONNECT through the proxy; the stream once it answered 200.
async fn connect(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.expect("connect proxy");
    stream
        .write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("write CONNECT");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(TIMEOUT, stream.read(&mut byte))
            .await
            .expect("CONNECT answer in time")
            .expect("read CONNECT answer");
        assert_ne!(n, 0, "closed: {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

fn trusting(pem: &str) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem"))
        .expect("root");
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn tls(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    trust: &TlsConnector,
) -> std::io::Result<TlsStream<TcpStream>> {
    let stream = connect(proxy, &format!("{host}:{port}")).await;
    let name = ServerName::try_from(host.to_string()).expect("name");
    tokio::time::timeout(TIMEOUT, trust.connect(name, stream))
        .await
        .expect("handshake in time")
}

/// A response as the client saw it: status, head and body text.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

async fn send<S, B>(stream: S, requests: Vec<Request<B>>) -> Vec<Answer>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("client handshake");
    tokio::spawn(conn);
    let mut answers = Vec::new();
    for request in requests {
        let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
            .await
            .expect("answer in time")
            .expect("answer");
        let status = response.status().as_u16();
        let head = format!("{:?}", response.headers());
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        answers.push(Answer {
            status,
            head,
            body: String::from_utf8_lossy(&body).into(),
        });
    }
    answers
}

fn get(uri: &str, host: &str, headers: &[(&str, &str)]) -> Request<Empty<Bytes>> {
    let mut builder = Request::builder().uri(uri).header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Empty::new()).expect("request")
}

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

async fn next_seen(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(TIMEOUT, seen.recv())
        .await
        .expect("the API got a request in time")
        .expect("the API server runs")
}

#[tokio::test]
async fn the_api_gets_the_value_and_the_sandbox_never_sees_it() {
    let (_dir, log) = tmp();
    let pki = test_pki(&["api.test", "plain.test"]);
    let (api, mut seen) = api_server(&pki).await;
    let ca = Arc::new(SessionCa::generate("broker-test").expect("session ca"));
    let (proxy, addr) = start_tcp(config(&log, api.port(), &ca, &pki)).await;
    let host = format!("api.test:{}", api.port());

    // The sandbox trusts only the session CA, and that is enough.
    let stream = tls(addr, "api.test", api.port(), &trusting(ca.cert_pem()))
        .await
        .expect("the client trusts the session CA's certificate");
    let (_, session) = stream.get_ref();
    assert_eq!(session.alpn_protocol(), Some(&b"http/1.1"[..]));
    let answers = send(
        stream,
        vec![
            get(
                &format!("/v1/models?key={PLACEHOLDER}&limit=2"),
                &host,
                &[("x-api-key", PLACEHOLDER), ("x-other", "kept")],
            ),
            // Placeholder in a header it is not bound to: refused, not sent.
            get(
                "/v1/models",
                &host,
                &[("x-api-key", PLACEHOLDER), ("x-debug", PLACEHOLDER)],
            ),
            // No placeholder: passes unchanged.
            get("/elsewhere", &host, &[("x-api-key", "my-own")]),
            // Another host named inside the tunnel.
            get("/v1/models", "plain.test", &[]),
        ],
    )
    .await;

    let swapped = next_seen(&mut seen).await;
    assert_eq!(swapped.header("x-api-key"), Some(VALUE));
    assert_eq!(swapped.header("x-other"), Some("kept"));
    assert_eq!(
        swapped.target,
        format!("/v1/models?key={VALUE_IN_QUERY}&limit=2")
    );
    assert_eq!(swapped.header("host"), Some(host.as_str()));
    assert_eq!(answers[0].status, 200, "{}", answers[0].body);
    // The server echoed the value (body and a header); the client sees the placeholder.
    assert!(
        answers[0]
            .body
            .contains(&format!("x-api-key: {PLACEHOLDER}")),
        "{}",
        answers[0].body
    );
    assert!(answers[0].head.contains(PLACEHOLDER), "{}", answers[0].head);
    for answer in &answers {
        assert!(!answer.body.contains(VALUE), "{}", answer.body);
        assert!(!answer.body.contains(VALUE_IN_QUERY), "{}", answer.body);
        assert!(!answer.head.contains(VALUE), "{}", answer.head);
    }

    assert_eq!(answers[1].status, 403);
    assert!(
        answers[1].head.contains("credential-not-bound"),
        "{}",
        answers[1].head
    );
    assert!(
        answers[1].body.contains("API_KEY") && answers[1].body.contains("header x-debug"),
        "{}",
        answers[1].body
    );

    let unchanged = next_seen(&mut seen).await;
    assert_eq!(unchanged.target, "/elsewhere");
    assert_eq!(unchanged.header("x-api-key"), Some("my-own"));
    assert_eq!(answers[2].status, 200);

    assert_eq!(answers[3].status, 403);
    assert!(
        answers[3].head.contains("bad-request"),
        "{}",
        answers[3].head
    );
    assert!(
        seen.try_recv().is_err(),
        "refused requests never reach the API"
    );

    let injected = wait_log(&log, |d| d.credential.is_some() && d.verdict == "allow").await;
    assert_eq!(injected.credential.as_deref(), Some("API_KEY"));
    assert_eq!(
        (
            injected.method.as_str(),
            injected.host.as_str(),
            injected.port
        ),
        ("GET", "api.test", api.port())
    );
    assert_eq!(injected.reason, "trusted-address");
    assert!(injected.bytes_down > 0);
    let refused = wait_log(&log, |d| d.reason == "credential-not-bound").await;
    assert_eq!(refused.credential.as_deref(), Some("API_KEY"));
    assert_eq!(refused.verdict, "deny");
    wait_log(&log, |d| d.method == "GET" && d.reason == "bad-request").await;
    let plain = wait_log(&log, |d| {
        d.method == "GET" && d.credential.is_none() && d.verdict == "allow"
    })
    .await;
    assert_eq!(plain.host, "api.test");

    // Basic auth (git's x-access-token:<token>), the request written one byte
    // per TLS record: the server reads it in many small pieces.
    let mut stream = tls(addr, "api.test", api.port(), &trusting(ca.cert_pem()))
        .await
        .expect("handshake");
    let basic = base64_encode(&format!("x-access-token:{PLACEHOLDER}"));
    let request = format!(
        "POST /v1/git HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {basic}\r\n\
         Content-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    for byte in request.as_bytes() {
        stream.write_all(&[*byte]).await.expect("write");
        stream.flush().await.expect("flush");
    }
    let mut reply = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut reply))
        .await
        .expect("reply in time")
        .expect("reply");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // The server echoed the Authorization header: the client gets its own back.
    assert!(!reply.contains(VALUE), "{reply}");
    assert!(
        !reply.contains(&base64_encode(&format!("x-access-token:{VALUE}"))),
        "{reply}"
    );
    assert!(
        reply.contains(&format!("authorization: Basic {basic}")),
        "{reply}"
    );
    let got = next_seen(&mut seen).await;
    assert_eq!(
        got.header("authorization"),
        Some(
            format!(
                "Basic {}",
                base64_encode(&format!("x-access-token:{VALUE}"))
            )
            .as_str()
        )
    );
    wait_log(&log, |d| d.method == "POST" && d.bytes_up == 5).await;

    // Plain HTTP with a placeholder: refused before anything is sent.
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(
            format!(
                "GET http://{host}/v1/models HTTP/1.1\r\nHost: {host}\r\nX-Api-Key: {PLACEHOLDER}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .expect("write");
    let mut reply = Vec::new();
    tokio::time::timeout(TIMEOUT, plain.read_to_end(&mut reply))
        .await
        .expect("in time")
        .expect("read");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(
        reply
            .to_lowercase()
            .contains("x-kennel-reason: credential-not-bound"),
        "{reply}"
    );
    assert!(reply.contains("only sent over HTTPS"), "{reply}");

    proxy.shutdown().await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains(VALUE), "{text}");
    assert!(!text.contains(VALUE_IN_QUERY), "{text}");
    // The tunnels themselves are logged too, as terminated.
    let tunnel = wait_log(&log, |d| {
        d.method == "CONNECT" && d.detail.contains("credential broker")
    })
    .await;
    assert_eq!(tunnel.verdict, "allow");
    assert!(tunnel.bytes_up > 0 && tunnel.bytes_down > 0);
}

fn base64_encode(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// An echo streamed in frames of a few bytes: each value is cut at some
/// frame boundary (the scrubber holds the start back until it knows), and
/// the client still sees only the placeholder, the rest of the body intact.
#[tokio::test]
async fn an_echo_in_small_frames_is_scrubbed() {
    let (_dir, log) = tmp();
    let pki = test_pki(&["api.test", "plain.test"]);
    let (api, mut seen) = api_server(&pki).await;
    let ca = Arc::new(SessionCa::generate("broker-test").expect("session ca"));
    let (proxy, addr) = start_tcp(config(&log, api.port(), &ca, &pki)).await;
    let host = format!("api.test:{}", api.port());
    let stream = tls(addr, "api.test", api.port(), &trusting(ca.cert_pem()))
        .await
        .expect("tls");
    let answers = send(
        stream,
        vec![get(
            "/v1/drip",
            &host,
            &[("x-api-key", PLACEHOLDER), ("x-after", "tail")],
        )],
    )
    .await;
    let seen = next_seen(&mut seen).await;
    assert_eq!(seen.header("x-api-key"), Some(VALUE));
    let body = &answers[0].body;
    assert_eq!(answers[0].status, 200, "{body}");
    assert!(!body.contains(VALUE), "{body}");
    assert_eq!(
        body.matches(&format!("x-api-key: {PLACEHOLDER}\n")).count(),
        3,
        "{body}"
    );
    assert_eq!(body.matches("x-after: tail\n").count(), 3, "{body}");
    assert!(body.starts_with("GET /v1/drip\n"), "{body}");
    // Only the value changed: the placeholder is one byte shorter.
    let mut text = format!("GET {}\n", seen.target);
    for (name, value) in &seen.headers {
        text.push_str(&format!("{name}: {value}\n"));
    }
    assert_eq!(
        body.len(),
        3 * (text.len() - (VALUE.len() - PLACEHOLDER.len()))
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn hosts_without_a_credential_are_spliced_not_decrypted() {
    let (_dir, log) = tmp();
    let pki = test_pki(&["api.test", "plain.test"]);
    let (api, _seen) = api_server(&pki).await;
    let ca = Arc::new(SessionCa::generate("broker-test").expect("session ca"));
    let (proxy, addr) = start_tcp(config(&log, api.port(), &ca, &pki)).await;

    // The client sees the server's own certificate, which only the test CA verifies.
    let stream = tls(addr, "plain.test", api.port(), &trusting(&pki.ca_pem))
        .await
        .expect("the server's own certificate");
    let (_, session) = stream.get_ref();
    let chain = session.peer_certificates().expect("certificates");
    assert_eq!(chain.first(), Some(&pki.leaf));
    let answers = send(
        stream,
        vec![get("/v1/x", "plain.test", &[("x-api-key", "mine")])],
    )
    .await;
    assert_eq!(answers[0].status, 200);

    // Trusting only the session CA does not work there: kennel does not intercept it.
    assert!(
        tls(addr, "plain.test", api.port(), &trusting(ca.cert_pem()))
            .await
            .is_err()
    );
    proxy.shutdown().await;
    let tunnel = wait_log(&log, |d| d.host == "plain.test" && d.method == "CONNECT").await;
    assert!(
        !tunnel.detail.contains("credential broker"),
        "{}",
        tunnel.detail
    );
    assert!(
        read_log(&log)
            .expect("log")
            .iter()
            .all(|d| d.method == "CONNECT")
    );
}

#[tokio::test]
async fn tls_failures_on_either_side_are_logged_and_closed() {
    let (_dir, log) = tmp();
    let pki = test_pki(&["api.test", "plain.test"]);
    let (api, _seen) = api_server(&pki).await;
    let ca = Arc::new(SessionCa::generate("broker-test").expect("session ca"));
    let (proxy, addr) = start_tcp(config(&log, api.port(), &ca, &pki)).await;

    // A client that does not trust the session CA.
    let result = tls(addr, "api.test", api.port(), &trusting(&pki.ca_pem)).await;
    assert!(
        result.is_err(),
        "the session CA's certificate must not verify"
    );
    let record = wait_log(&log, |d| d.verdict == "deny").await;
    assert_eq!(record.reason, "connect-failed");
    assert!(
        record.detail.contains("TLS with the client"),
        "{}",
        record.detail
    );
    proxy.shutdown().await;

    // A proxy that does not trust the API's CA (only the system's roots).
    let (_dir, log) = tmp();
    let mut cfg = config(&log, api.port(), &ca, &pki);
    cfg.upstream_roots.clear();
    let (proxy, addr) = start_tcp(cfg).await;
    let result = tls(addr, "api.test", api.port(), &trusting(ca.cert_pem())).await;
    assert!(
        result.is_err(),
        "no handshake with an unverified server behind"
    );
    let record = wait_log(&log, |d| d.verdict == "deny").await;
    assert_eq!(record.reason, "connect-failed");
    assert!(
        record.detail.contains("certificate") && record.detail.contains("failed verification"),
        "{}",
        record.detail
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn brokered_through_an_upstream_proxy() {
    let pki = test_pki(&["api.test", "plain.test"]);
    let (api, mut seen) = api_server(&pki).await;
    let ca = Arc::new(SessionCa::generate("broker-test").expect("session ca"));
    // B: a plain kennel proxy (no credentials) that A chains to.
    let (_dir_b, log_b) = tmp();
    let mut cfg_b = config(&log_b, api.port(), &ca, &pki);
    cfg_b.credentials.clear();
    cfg_b.ca = None;
    let (proxy_b, addr_b) = start_tcp(cfg_b).await;
    let (_dir_a, log_a) = tmp();
    let mut cfg_a = config(&log_a, api.port(), &ca, &pki);
    cfg_a.upstream = Some(format!("http://{addr_b}"));
    let (proxy_a, addr_a) = start_tcp(cfg_a).await;

    let host = format!("api.test:{}", api.port());
    let stream = tls(addr_a, "api.test", api.port(), &trusting(ca.cert_pem()))
        .await
        .expect("handshake");
    let answers = send(
        stream,
        vec![get("/v1/models", &host, &[("x-api-key", PLACEHOLDER)])],
    )
    .await;
    assert_eq!(answers[0].status, 200, "{}", answers[0].body);
    assert_eq!(next_seen(&mut seen).await.header("x-api-key"), Some(VALUE));
    let record = wait_log(&log_a, |d| d.credential.is_some()).await;
    assert_eq!(record.via.as_deref(), Some(addr_b.to_string().as_str()));
    proxy_a.shutdown().await;
    proxy_b.shutdown().await;
    // B only ever saw TLS.
    wait_log(&log_b, |d| d.method == "CONNECT" && d.host == "api.test").await;
    assert!(
        !std::fs::read_to_string(&log_b)
            .expect("log b")
            .contains(VALUE)
    );
}

#[tokio::test]
async fn start_refuses_unusable_credentials() {
    let (_dir, log) = tmp();
    let pki = test_pki(&["api.test", "plain.test"]);
    let ca = Arc::new(SessionCa::generate("broker-test").expect("session ca"));
    let listen = || Listen::Tcp("127.0.0.1:0".parse().expect("addr"));

    let mut no_ca = config(&log, 443, &ca, &pki);
    no_ca.ca = None;
    assert!(matches!(
        start(no_ca, listen()).await,
        Err(ProxyError::NoSessionCa)
    ));

    for value in ["secret\r\nX-Injected: 1", "secret\n", "nul\0byte", ""] {
        let mut cfg = config(&log, 443, &ca, &pki);
        cfg.credentials[0].value = value.to_string();
        match start(cfg, listen()).await {
            Err(error @ ProxyError::BadCredential { .. }) => {
                let text = error.to_string();
                assert!(text.contains("API_KEY"), "{text}");
                assert!(value.is_empty() || !text.contains(value), "{text}");
                assert!(!format!("{error:?}").contains("secret"), "{error:?}");
            }
            Err(other) => panic!("{value:?}: {other}"),
            Ok(_) => panic!("{value:?} was accepted"),
        }
    }
    let mut cfg = config(&log, 443, &ca, &pki);
    cfg.credentials[0].placeholder = "ph\r\n".into();
    assert!(matches!(
        start(cfg, listen()).await,
        Err(ProxyError::BadCredential { .. })
    ));

    let mut cfg = config(&log, 443, &ca, &pki);
    cfg.upstream_roots = vec![b"not a certificate".to_vec()];
    assert!(matches!(
        start(cfg, listen()).await,
        Err(ProxyError::BadUpstreamRoots { index: 0, .. })
    ));

    // The whole configuration's Debug never shows the value.
    let debug = format!("{:?}", config(&log, 443, &ca, &pki));
    assert!(
        !debug.contains(VALUE) && debug.contains("<redacted>"),
        "{debug}"
    );
    assert!(!debug.contains(ca.key_pem()));
}

#[test]
fn each_session_ca_is_new() {
    let one = SessionCa::generate("s").expect("one");
    let two = SessionCa::generate("s").expect("two");
    assert_ne!(one.cert_pem(), two.cert_pem());
    let again = SessionCa::from_pem(one.cert_pem(), one.key_pem()).expect("from pem");
    assert_eq!(again.cert_pem(), one.cert_pem());
}

/// A credential whose refresh command prints `output` (from a file).
fn refreshing(dir: &Path, output: &str) -> Credential {
    let file = dir.join("token");
    std::fs::write(&file, output).expect("write token file");
    Credential {
        refresh: Some(vec![
            "sh".into(),
            "-c".into(),
            format!("cat '{}'", file.display()),
        ]),
        ..credential()
    }
}

/// One request for `/v1/need-new` with the placeholder, on a new tunnel.
async fn need_new(proxy: SocketAddr, port: u16, ca: &SessionCa) -> Answer {
    let stream = tls(proxy, "api.test", port, &trusting(ca.cert_pem()))
        .await
        .expect("tls");
    let host = format!("api.test:{port}");
    send(
        stream,
        vec![get("/v1/need-new", &host, &[("x-api-key", PLACEHOLDER)])],
    )
    .await
    .remove(0)
}

#[tokio::test]
async fn a_401_runs_the_refresh_command_and_later_requests_get_the_new_value() {
    let (dir, log) = tmp();
    let pki = test_pki(&["api.test"]);
    let (api, mut seen) = api_server(&pki).await;
    let ca = Arc::new(SessionCa::generate("broker-test").expect("session ca"));
    let mut config = config(&log, api.port(), &ca, &pki);
    config.credentials = vec![refreshing(dir.path(), &format!("{NEW_VALUE}\n"))];
    let (proxy, addr) = start_tcp(config).await;

    let first = need_new(addr, api.port(), &ca).await;
    assert_eq!(first.status, 401, "{}", first.body);
    assert_eq!(next_seen(&mut seen).await.header("x-api-key"), Some(VALUE));
    let mut answers = vec![first];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let answer = need_new(addr, api.port(), &ca).await;
        let status = answer.status;
        answers.push(answer);
        let sent = next_seen(&mut seen).await;
        if status == 200 {
            assert_eq!(sent.header("x-api-key"), Some(NEW_VALUE));
            break;
        }
        assert!(Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for answer in &answers {
        for value in [VALUE, NEW_VALUE] {
            assert!(!answer.body.contains(value), "{}", answer.body);
            assert!(!answer.head.contains(value), "{}", answer.head);
        }
    }
    let refreshed = wait_log(&log, |d| d.detail.contains("after 401")).await;
    assert_eq!(
        refreshed.detail,
        "refresh of credential API_KEY started after 401"
    );
    assert_eq!(refreshed.credential.as_deref(), Some("API_KEY"));
    proxy.shutdown().await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains(VALUE) && !text.contains(NEW_VALUE), "{text}");
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_old_value_and_refreshes_once_a_minute() {
    let (dir, log) = tmp();
    let pki = test_pki(&["api.test"]);
    let (api, mut seen) = api_server(&pki).await;
    let ca = Arc::new(SessionCa::generate("broker-test").expect("session ca"));
    let mut config = config(&log, api.port(), &ca, &pki);
    // Two lines: not a value.
    config.credentials = vec![refreshing(dir.path(), &format!("{NEW_VALUE}\nmore\n"))];
    let (proxy, addr) = start_tcp(config).await;

    let first = need_new(addr, api.port(), &ca).await;
    assert_eq!(first.status, 401);
    assert_eq!(next_seen(&mut seen).await.header("x-api-key"), Some(VALUE));
    // Give the refresh time to fail; the old value is still sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = need_new(addr, api.port(), &ca).await;
    assert_eq!(second.status, 401);
    assert_eq!(next_seen(&mut seen).await.header("x-api-key"), Some(VALUE));
    proxy.shutdown().await;
    let records = read_log(&log).expect("log");
    let details: Vec<&str> = records
        .iter()
        .filter(|d| d.method == "GET")
        .map(|d| d.detail.as_str())
        .collect();
    assert_eq!(
        details,
        [
            "refresh of credential API_KEY started after 401",
            "credential API_KEY not refreshed after 401: a refresh is running or ran less than 60 s ago",
        ]
    );
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains(VALUE) && !text.contains(NEW_VALUE), "{text}");
}

// ------------------------------------------------------ subscription logins

/// A stand-in OAuth server: `POST /v1/oauth/token` issues tokens for the
/// code `good` and rotates them for the latest refresh token only;
/// `GET /v1/me` reports its `authorization` header and echoes it.
#[derive(Default)]
struct OAuthState {
    issued: u32,
    access: String,
    refresh: String,
    refreshes: u32,
    seen: Vec<String>,
}

type SharedOAuth = Arc<std::sync::Mutex<OAuthState>>;

fn oauth_lock(state: &SharedOAuth) -> std::sync::MutexGuard<'_, OAuthState> {
    state.lock().expect("oauth state")
}

async fn oauth_server(pki: &TestPki) -> (SocketAddr, SharedOAuth) {
    let acceptor = pki.acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let state = SharedOAuth::default();
    let server_state = state.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, state) = (acceptor.clone(), server_state.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let authorization = req
                            .headers()
                            .get("authorization")
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string());
                        let body = req.into_body().collect().await.expect("body").to_bytes();
                        let (status, text) = oauth_answer(&state, &path, authorization, &body);
                        let response = Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(text)))
                            .expect("response");
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, state)
}

fn oauth_answer(
    state: &SharedOAuth,
    path: &str,
    authorization: Option<String>,
    body: &[u8],
) -> (u16, String) {
    let mut state = oauth_lock(state);
    if path == "/v1/me" {
        let authorization = authorization.unwrap_or_default();
        state.seen.push(authorization.clone());
        return (200, serde_json::json!({ "you": authorization }).to_string());
    }
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let good = match request["grant_type"].as_str() {
        Some("authorization_code") => request["code"] == "good",
        Some("refresh_token") => {
            let fresh = request["refresh_token"] == state.refresh.as_str();
            if fresh {
                state.refreshes += 1;
            }
            fresh
        }
        _ => false,
    };
    if !good {
        return (400, r#"{"error":"invalid_grant"}"#.to_string());
    }
    state.issued += 1;
    state.access = format!("sk-ant-oat01-real{:04}access0123456789abcdef", state.issued);
    state.refresh = format!(
        "sk-ant-ort01-real{:04}refresh0123456789abcdef",
        state.issued
    );
    let answer = serde_json::json!({
        "token_type": "Bearer",
        "access_token": state.access,
        "refresh_token": state.refresh,
        "expires_in": 3600,
        "scope": "user:inference",
        "account": { "note": format!("issued for {}", state.refresh) },
    });
    (200, answer.to_string())
}

/// The host's login vault, in memory, its lock a file lock as kennel's is.
#[derive(Debug)]
struct MemoryVault {
    lock: PathBuf,
    tokens: std::sync::Mutex<BTreeMap<String, kennel_proxy::LoginTokens>>,
}

impl kennel_proxy::LoginVault for MemoryVault {
    fn lock(&self, _name: &str) -> Result<Box<dyn Send>, String> {
        let file = std::fs::File::create(&self.lock).map_err(|e| e.to_string())?;
        file.lock().map_err(|e| e.to_string())?;
        Ok(Box::new(file))
    }
    fn load(&self, name: &str) -> Result<Option<kennel_proxy::LoginTokens>, String> {
        Ok(self.tokens.lock().expect("vault").get(name).cloned())
    }
    fn save(&self, name: &str, tokens: &kennel_proxy::LoginTokens) -> Result<(), String> {
        self.tokens
            .lock()
            .expect("vault")
            .insert(name.to_string(), tokens.clone());
        Ok(())
    }
}

fn login_config(
    log: &Path,
    port: u16,
    ca: &Arc<SessionCa>,
    pki: &TestPki,
    vault: &Arc<MemoryVault>,
    capture: bool,
) -> ProxyConfig {
    let mut config = config(log, port, ca, pki);
    config.hosts.insert(
        "auth.test".to_string(),
        vec!["127.0.0.1".parse().expect("ip")],
    );
    config.policy.allow.push("auth.test".into());
    config.credentials = Vec::new();
    config.logins = vec![kennel_proxy::OAuthLogin {
        name: "claude".into(),
        token_host: "auth.test".into(),
        token_path: "/v1/oauth/token".into(),
        hosts: vec!["api.test".into()],
        header: "authorization".into(),
        capture,
    }];
    let vault: Arc<dyn kennel_proxy::LoginVault> = vault.clone();
    config.vault = Some(vault);
    config
}

fn post_json(port: u16, body: serde_json::Value) -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri("/v1/oauth/token")
        .header("host", format!("auth.test:{port}"))
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

fn me(port: u16, bearer: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri("/v1/me")
        .header("host", format!("api.test:{port}"))
        .header("authorization", format!("Bearer {bearer}"))
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// One request on a new brokered connection to `host`.
async fn one(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    ca: &SessionCa,
    request: Request<Full<Bytes>>,
) -> (Answer, serde_json::Value) {
    let stream = tls(proxy, host, port, &trusting(ca.cert_pem()))
        .await
        .expect("the client trusts the session CA");
    let answer = send(stream, vec![request]).await.remove(0);
    let json = serde_json::from_str(&answer.body).unwrap_or_default();
    (answer, json)
}

#[tokio::test]
async fn a_login_stays_on_the_host_and_the_agent_refreshes_through_kennel() {
    let (dir, log) = tmp();
    let pki = test_pki(&["api.test", "auth.test"]);
    let (server, state) = oauth_server(&pki).await;
    let port = server.port();
    let vault = Arc::new(MemoryVault {
        lock: dir.path().join("vault.lock"),
        tokens: Default::default(),
    });
    let ca = Arc::new(SessionCa::generate("login-test").expect("ca"));
    let (_proxy, addr) = start_tcp(login_config(&log, port, &ca, &pki, &vault, true)).await;

    // The login: the agent gets sentinels of the tokens' shape; the vault
    // the real ones.
    let (answer, issued) = one(
        addr,
        "auth.test",
        port,
        &ca,
        post_json(
            port,
            serde_json::json!({"grant_type": "authorization_code", "code": "good"}),
        ),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (real_access, real_refresh) = {
        let state = oauth_lock(&state);
        (state.access.clone(), state.refresh.clone())
    };
    assert!(
        !answer.body.contains(&real_access) && !answer.body.contains(&real_refresh),
        "a real token reached the agent: {}",
        answer.body
    );
    let access = issued["access_token"].as_str().expect("access").to_string();
    let refresh = issued["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();
    assert!(access.starts_with("sk-ant-oat01-") && access.len() == real_access.len());
    assert!(refresh.starts_with("sk-ant-ort01-") && refresh.len() == real_refresh.len());
    assert_eq!(issued["expires_in"], 3600);
    assert_eq!(issued["scope"], "user:inference");
    let kept = vault.tokens.lock().expect("vault")["claude"].clone();
    assert_eq!(
        (kept.access.as_str(), kept.refresh.as_str()),
        (real_access.as_str(), real_refresh.as_str())
    );
    assert_eq!(
        (
            kept.access_sentinel.as_str(),
            kept.refresh_sentinel.as_str()
        ),
        (access.as_str(), refresh.as_str())
    );

    // The access sentinel works where it is bound, and only there.
    let (answer, _) = one(addr, "api.test", port, &ca, me(port, &access)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        !answer.body.contains(&real_access),
        "the echo was not scrubbed: {}",
        answer.body
    );
    assert_eq!(
        oauth_lock(&state).seen.last().cloned(),
        Some(format!("Bearer {real_access}"))
    );
    let stray = Request::builder()
        .method("POST")
        .uri("/v1/oauth/token")
        .header("host", format!("auth.test:{port}"))
        .header("authorization", format!("Bearer {access}"))
        .body(Full::new(Bytes::from("{}")))
        .expect("request");
    let (answer, _) = one(addr, "auth.test", port, &ca, stray).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("claude-login"), "{}", answer.body);

    // The agent refreshes with the sentinel: the server gets the real
    // refresh token and rotates it; the agent gets the same sentinels.
    let (answer, renewed) = one(
        addr,
        "auth.test",
        port,
        &ca,
        post_json(port, serde_json::json!({"grant_type": "refresh_token", "refresh_token": refresh, "client_id": "c"})),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        oauth_lock(&state).refreshes,
        1,
        "the server got the real refresh token"
    );
    assert_eq!(renewed["access_token"], access.as_str());
    assert_eq!(renewed["refresh_token"], refresh.as_str());
    let (real_access_2, real_refresh_2) = {
        let state = oauth_lock(&state);
        (state.access.clone(), state.refresh.clone())
    };
    assert_ne!(real_access_2, real_access);
    assert!(!answer.body.contains(&real_refresh_2) && !answer.body.contains(&real_refresh));
    assert_eq!(
        vault.tokens.lock().expect("vault")["claude"].refresh,
        real_refresh_2
    );
    one(addr, "api.test", port, &ca, me(port, &access)).await;
    assert_eq!(
        oauth_lock(&state).seen.last().cloned(),
        Some(format!("Bearer {real_access_2}"))
    );

    // A second session (no capture) starts with the kept login. The first
    // refreshes again; when the second's agent refreshes, kennel answers
    // from the vault: no second use of a rotated token.
    let (log2_dir, log2) = tmp();
    let (_proxy2, addr2) = start_tcp(login_config(&log2, port, &ca, &pki, &vault, false)).await;
    let refresh_request = || {
        post_json(
            port,
            serde_json::json!({"grant_type": "refresh_token", "refresh_token": refresh}),
        )
    };
    let (answer, _) = one(addr, "auth.test", port, &ca, refresh_request()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(oauth_lock(&state).refreshes, 2);
    let (answer, local) = one(addr2, "auth.test", port, &ca, refresh_request()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(oauth_lock(&state).refreshes, 2, "answered from the vault");
    assert_eq!(local["access_token"], access.as_str());
    let newest = oauth_lock(&state).access.clone();
    one(addr2, "api.test", port, &ca, me(port, &access)).await;
    assert_eq!(
        oauth_lock(&state).seen.last().cloned(),
        Some(format!("Bearer {newest}"))
    );

    // Outside `kennel login`, a new login passes as it is and is not kept.
    let before = vault.tokens.lock().expect("vault")["claude"].clone();
    let (answer, _) = one(
        addr2,
        "auth.test",
        port,
        &ca,
        post_json(
            port,
            serde_json::json!({"grant_type": "authorization_code", "code": "good"}),
        ),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(vault.tokens.lock().expect("vault")["claude"], before);
    // A refresh token that is not the sentinel passes unchanged (and fails).
    let (answer, _) = one(
        addr2,
        "auth.test",
        port,
        &ca,
        post_json(port, serde_json::json!({"grant_type": "refresh_token", "refresh_token": "sk-ant-ort01-other"})),
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);

    // Each use is logged under the login's name; no real token in a log.
    let kept_line = wait_log(&log, |d| d.detail.contains("kept on the host")).await;
    assert_eq!(kept_line.credential.as_deref(), Some("claude-login"));
    wait_log(&log, |d| {
        d.detail.contains("refreshed by kennel on the host")
    })
    .await;
    wait_log(&log2, |d| d.detail.contains("answered from the host")).await;
    for path in [&log, &log2] {
        let text = std::fs::read_to_string(path).expect("log");
        for real in [
            &real_access,
            &real_refresh,
            &real_access_2,
            &real_refresh_2,
            &newest,
        ] {
            assert!(
                !text.contains(real.as_str()),
                "a real token in {}",
                path.display()
            );
        }
    }
    drop(log2_dir);
}

// ------------------------------------------------------------- WebSockets

/// A TLS server whose `/v1/ws` upgrades to an echo of every byte; it
/// reports the handshake's `x-api-key`.
async fn websocket_server(pki: &TestPki) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let acceptor = pki.acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, seen_tx) = (acceptor.clone(), seen_tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    let seen_tx = seen_tx.clone();
                    async move {
                        let key = req
                            .headers()
                            .get("x-api-key")
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string())
                            .unwrap_or_default();
                        let _ = seen_tx.send(key);
                        let upgrade = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let Ok(upgraded) = upgrade.await else {
                                return;
                            };
                            let mut io = TokioIo::new(upgraded);
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        });
                        let response = Response::builder()
                            .status(101)
                            .header("connection", "upgrade")
                            .header("upgrade", "websocket")
                            .body(Empty::<Bytes>::new())
                            .expect("response");
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, seen_rx)
}

/// A WebSocket on a brokered host: the handshake's placeholder is swapped
/// like any request's, the 101 reaches the client, and bytes then go both
/// ways until the client closes; the WebSocket is logged with its bytes.
#[tokio::test]
async fn a_websocket_on_a_brokered_host_is_upgraded_and_piped() {
    let (_dir, log) = tmp();
    let pki = test_pki(&["api.test"]);
    let (server, mut seen) = websocket_server(&pki).await;
    let ca = Arc::new(SessionCa::generate("broker-test").expect("session ca"));
    let (_proxy, addr) = start_tcp(config(&log, server.port(), &ca, &pki)).await;
    let stream = tls(addr, "api.test", server.port(), &trusting(ca.cert_pem()))
        .await
        .expect("the client trusts the session CA");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("client handshake");
    tokio::spawn(conn.with_upgrades());
    let request = Request::builder()
        .uri("/v1/ws")
        .header("host", format!("api.test:{}", server.port()))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("x-api-key", PLACEHOLDER)
        .body(Empty::<Bytes>::new())
        .expect("request");
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(response.status(), 101, "{:?}", response.headers());
    assert_eq!(
        tokio::time::timeout(TIMEOUT, seen.recv())
            .await
            .expect("in time"),
        Some(VALUE.to_string()),
        "the handshake carried the value"
    );
    let upgraded = tokio::time::timeout(TIMEOUT, hyper::upgrade::on(response))
        .await
        .expect("upgrade in time")
        .expect("upgraded");
    let mut io = TokioIo::new(upgraded);
    io.write_all(b"ping through the broker")
        .await
        .expect("write");
    let mut echoed = vec![0u8; 23];
    tokio::time::timeout(TIMEOUT, io.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&echoed, b"ping through the broker");
    drop(io);
    let record = wait_log(&log, |d| d.detail.starts_with("WebSocket")).await;
    assert_eq!(record.credential.as_deref(), Some("API_KEY"));
    assert_eq!((record.bytes_up, record.bytes_down), (23, 23));
}

/// A server that streams its answer without a length and ends it by
/// closing the connection without TLS `close_notify`, as many do (Python's
/// `ssl`, the stand-in model of the end-to-end tests): the client gets the
/// whole body and a clean end, as it would from the server itself — not a
/// response cut short.
#[tokio::test]
async fn a_body_ended_by_a_close_without_close_notify_arrives_whole() {
    let (_dir, log) = tmp();
    let pki = test_pki(&["api.test"]);
    let acceptor = pki.acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let events: String = (0..200)
        .map(|n| format!("event: delta\ndata: {{\"n\":{n}}}\n\n"))
        .collect();
    let sent = events.clone();
    tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut tls) = acceptor.accept(stream).await else {
            return;
        };
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && tls.read(&mut byte).await.unwrap_or(0) == 1 {
            head.push(byte[0]);
        }
        let _ = tls
            .write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
            )
            .await;
        for piece in sent.as_bytes().chunks(97) {
            let _ = tls.write_all(piece).await;
        }
        let _ = tls.flush().await;
        // Closed without `close_notify`: the TCP stream alone goes.
        let (tcp, _) = tls.into_inner();
        drop(tcp);
    });
    let ca = Arc::new(SessionCa::generate("broker-test").expect("session ca"));
    let (proxy, addr) = start_tcp(config(&log, port, &ca, &pki)).await;
    let stream = tls(addr, "api.test", port, &trusting(ca.cert_pem()))
        .await
        .expect("tls");
    let host = format!("api.test:{port}");
    let answers = send(
        stream,
        vec![get("/v1/stream", &host, &[("x-api-key", PLACEHOLDER)])],
    )
    .await;
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].body, events, "the whole body, and a clean end");
    proxy.shutdown().await;
}
