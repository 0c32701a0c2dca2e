//! Chaining to an upstream HTTP proxy.
//!
//! The URL's authority is parsed by the `url` crate, the Basic credentials are
//! encoded by `base64`, and the CONNECT exchange is hyper's HTTP/1 client: the
//! tunnel is its upgrade, handed back as the raw `TcpStream` (plus the bytes
//! hyper read past the response head) so that it can be spliced.

use std::cell::Cell;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::Empty;
use hyper::ext::ReasonPhrase;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use percent_encoding::percent_decode_str;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use url::{Host, SyntaxViolation, Url};

use crate::ProxyError;

/// Largest response head read from the upstream (hyper's read buffer limit:
/// a longer head is an error, not a hang).
const MAX_HEAD: usize = 16 * 1024;
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `Basic …` for `Proxy-Authorization`, from the URL's user info.
    pub(crate) auth: Option<String>,
    /// `host:port`, for the log (never the credentials).
    pub(crate) display: String,
}

impl Upstream {
    /// `http://[user:password@]host[:port][/]`; the scheme may be left out.
    /// The port defaults to 80, IPv6 literals are in brackets, the user info
    /// is percent-decoded. Nothing else (no path, query or fragment).
    pub(crate) fn parse(url: &str) -> Result<Self, ProxyError> {
        let bad = |why: &str| ProxyError::BadUpstream {
            url: redact(url),
            why: why.to_string(),
        };
        let expected = "expected http://host:port";
        let text = url.trim();
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (scheme, rest),
            None => ("http", text),
        };
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(bad("only http:// upstream proxies are supported"));
        }
        // What `url` would quietly take as (or normalize into) a path, query
        // or fragment is refused, as is an empty port (`host:`).
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '\\', '?', '#']) || authority.ends_with(':') {
            return Err(bad(expected));
        }
        let (user_info, host_port) = match authority.rsplit_once('@') {
            Some((user_info, host_port)) => (Some(user_info), host_port),
            None => (None, authority),
        };
        if !host_port.starts_with('[') && host_port.matches(':').count() > 1 {
            return Err(bad(&format!(
                "{expected} (an IPv6 address goes in brackets: http://[::1]:3128)"
            )));
        }
        // Neither are the spellings `url` fixes up silently (tabs and
        // newlines dropped, control characters trimmed).
        let fixed_up = Cell::new(false);
        let on_violation = |violation| {
            if matches!(
                violation,
                SyntaxViolation::Backslash
                    | SyntaxViolation::C0SpaceIgnored
                    | SyntaxViolation::TabOrNewlineIgnored
                    | SyntaxViolation::ExpectedDoubleSlash
            ) {
                fixed_up.set(true);
            }
        };
        let parsed = Url::options()
            .syntax_violation_callback(Some(&on_violation))
            .parse(&format!("http://{authority}"))
            .map_err(|err| match err {
                url::ParseError::EmptyHost => bad("no host"),
                // The error text never repeats the input (the credentials).
                other => bad(&format!("{expected}: {other}")),
            })?;
        if fixed_up.get() {
            return Err(bad(expected));
        }
        let host = match parsed.host() {
            Some(Host::Domain(name)) if !name.is_empty() => name.to_string(),
            Some(Host::Ipv4(addr)) => addr.to_string(),
            Some(Host::Ipv6(addr)) => addr.to_string(),
            _ => return Err(bad("no host")),
        };
        let port = parsed.port_or_known_default().unwrap_or(80);
        let auth = user_info.map(|user_info| {
            // `url` does not tell `user:@` from `user@`: the text does.
            let with_colon = user_info.contains(':');
            format!("Basic {}", BASE64.encode(credentials(&parsed, with_colon)))
        });
        let display = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Self {
            host,
            port,
            auth,
            display,
        })
    }

    /// Ask the upstream for a tunnel to `authority` over an already connected
    /// stream. Returns the stream and the bytes the upstream sent after its
    /// response head.
    pub(crate) async fn open_tunnel(
        &self,
        stream: TcpStream,
        authority: &str,
    ) -> Result<(TcpStream, Vec<u8>), String> {
        self.open_tunnel_within(stream, authority, HEAD_TIMEOUT)
            .await
    }

    async fn open_tunnel_within(
        &self,
        stream: TcpStream,
        authority: &str,
        timeout: Duration,
    ) -> Result<(TcpStream, Vec<u8>), String> {
        let fail = |why: String| format!("upstream proxy {}: {why}", self.display);
        let target: Uri = authority
            .parse()
            .map_err(|err| fail(format!("bad CONNECT target {authority:?}: {err}")))?;
        let mut request = Request::builder()
            .method(Method::CONNECT)
            .uri(target)
            .header(header::HOST, authority);
        if let Some(auth) = &self.auth {
            let value = HeaderValue::from_str(auth).map_err(|err| fail(err.to_string()))?;
            request = request.header(header::PROXY_AUTHORIZATION, value);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|err| fail(err.to_string()))?;

        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .title_case_headers(true)
            .max_buf_size(MAX_HEAD)
            .handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|err| fail(err.to_string()))?;
        // Driven until it hands the stream over (or fails); stopped with us.
        let conn = AbortOnDrop(tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                tracing::debug!(%error, "upstream CONNECT exchange ended with an error");
            }
        }));
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|err| err.to_string())?;
            let status = response.status();
            if !status.is_success() {
                let reason = response
                    .extensions()
                    .get::<ReasonPhrase>()
                    .map(|reason| String::from_utf8_lossy(reason.as_bytes()).into_owned())
                    .or_else(|| status.canonical_reason().map(str::to_string))
                    .unwrap_or_default();
                let status_line = format!("{:?} {} {reason}", response.version(), status.as_u16());
                return Err(Failure::Answered(status_line.trim_end().to_string()));
            }
            let upgraded = hyper::upgrade::on(response)
                .await
                .map_err(|err| err.to_string())?;
            let parts = upgraded
                .downcast::<TokioIo<TcpStream>>()
                .map_err(|_| "hyper did not hand the connection back".to_string())?;
            Ok((parts.io.into_inner(), parts.read_buf.to_vec()))
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(opened)) => Ok(opened),
            Ok(Err(Failure::Answered(status_line))) => Err(format!(
                "upstream proxy {} answered {status_line:?}",
                self.display
            )),
            Ok(Err(Failure::Broken(why))) => Err(fail(why)),
            Err(_) => Err(fail("no answer to CONNECT".to_string())),
        };
        drop(conn);
        result
    }
}

/// Why the CONNECT exchange did not open a tunnel.
enum Failure {
    /// The upstream answered with this status line.
    Answered(String),
    /// No (readable) answer.
    Broken(String),
}

impl From<String> for Failure {
    fn from(why: String) -> Self {
        Failure::Broken(why)
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `user:password` (`user` alone without the colon) from the URL's
/// percent-encoded user info, decoded.
fn credentials(url: &Url, with_colon: bool) -> String {
    let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
    let user = decode(url.username());
    if with_colon {
        format!("{user}:{}", decode(url.password().unwrap_or_default()))
    } else {
        user
    }
}

/// The URL with its user info (if any) replaced by `***`.
fn redact(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((before, after)) => match before.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***@{after}"),
            None => format!("***@{after}"),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn why(url: &str) -> String {
        Upstream::parse(url).expect_err(url).to_string()
    }

    #[test]
    fn parses_urls() {
        let u = Upstream::parse("http://proxy.corp:3128").expect("parse");
        assert_eq!(
            (u.host.as_str(), u.port, u.auth.is_none()),
            ("proxy.corp", 3128, true)
        );
        assert_eq!(u.display, "proxy.corp:3128");
        let u = Upstream::parse("http://user:p%40ss@[::1]:8080/").expect("parse");
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.auth.as_deref(), Some("Basic dXNlcjpwQHNz"));
        assert_eq!(u.display, "[::1]:8080");
        let u = Upstream::parse("127.0.0.1").expect("parse");
        assert_eq!(
            (u.host.as_str(), u.port, u.display.as_str()),
            ("127.0.0.1", 80, "127.0.0.1:80")
        );
        let u = Upstream::parse("  HTTP://Proxy.Corp/ ").expect("parse");
        assert_eq!((u.host.as_str(), u.port), ("proxy.corp", 80));
        let u = Upstream::parse("proxy:3128").expect("parse");
        assert_eq!((u.host.as_str(), u.port), ("proxy", 3128));
        let u = Upstream::parse("[::1]").expect("parse");
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        let u = Upstream::parse("http://proxy:80").expect("parse");
        assert_eq!(u.port, 80);
    }

    #[test]
    fn user_info_is_decoded_into_basic_credentials() {
        let basic = |url: &str| Upstream::parse(url).expect(url).auth;
        // "user:pw"
        assert_eq!(
            basic("http://user:pw@h:1").as_deref(),
            Some("Basic dXNlcjpwdw==")
        );
        // An unencoded '@' in the password: the last '@' ends the user info ("u:p@ss").
        assert_eq!(
            basic("http://u:p@ss@h:1").as_deref(),
            Some("Basic dTpwQHNz")
        );
        // A ':' in the password, and a space: "u:a:b c"
        assert_eq!(
            basic("http://u:a%3Ab%20c@h").as_deref(),
            Some("Basic dTphOmIgYw==")
        );
        // No password: "user"; an empty one: "user:"
        assert_eq!(basic("http://user@h").as_deref(), Some("Basic dXNlcg=="));
        assert_eq!(basic("http://user:@h").as_deref(), Some("Basic dXNlcjo="));
        // Non-ASCII, percent-encoded UTF-8: "ü:pw"
        assert_eq!(
            basic("http://%C3%BC:pw@h").as_deref(),
            Some("Basic w7w6cHc=")
        );
        assert_eq!(basic("http://h:1"), None);
    }

    #[test]
    fn refuses_other_forms() {
        for url in ["https://proxy:443", "socks5://proxy:1080", "HTTPS://proxy"] {
            assert!(why(url).contains("only http://"), "{url}: {}", why(url));
        }
        for url in [
            "http://proxy:99999",
            "http://proxy:port",
            "http://proxy:",
            "http://proxy:1/path",
            "http://proxy:1//",
            "http://proxy:1/.",
            "http://proxy:1?x",
            "http://proxy:1/?",
            "http://proxy:1#frag",
            "http://proxy:1\\",
            "http://pro\nxy:1",
            "http://pro\txy:1",
            "http://::1:80",
            "http://[::1",
            "http://exa mple:1",
            "http:/proxy:1",
        ] {
            assert!(
                why(url).contains("expected http://host:port"),
                "{url}: {}",
                why(url)
            );
        }
        for url in [
            "http://",
            "http://:80",
            "http://user:pw@",
            "",
            "http://user@:1",
        ] {
            assert!(why(url).contains("no host"), "{url}: {}", why(url));
        }
    }

    #[test]
    fn credentials_never_show() {
        for url in [
            "socks5://u:secret@h:1",
            "http://u:secret@h:99999",
            "http://u:secret@h:1/path",
            "http://u:secret@",
            "u:secret@h:x",
        ] {
            let err = why(url);
            assert!(!err.contains("secret"), "{url}: {err}");
            assert!(err.contains("***@"), "{url}: {err}");
        }
        let u = Upstream::parse("http://u:secret@h:1").expect("parse");
        assert!(!u.display.contains("secret") && !u.display.contains('u'));
        assert!(!format!("{:?}", u.display).contains("secret"));
    }

    enum Reply {
        /// Answer these bytes, then echo.
        Send(&'static [u8]),
        Bytes(Vec<u8>),
        /// Read on, never answer.
        Silent,
        /// Close the connection without answering.
        Close,
    }

    /// A one-connection upstream: reads the request head, sends it back
    /// through the channel, then acts out `reply`.
    async fn fake_upstream(
        reply: Reply,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if stream.read(&mut byte).await.expect("read") == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            let _ = head_tx.send(String::from_utf8_lossy(&head).into_owned());
            let reply = match reply {
                Reply::Send(bytes) => bytes.to_vec(),
                Reply::Bytes(bytes) => bytes,
                Reply::Close => return,
                Reply::Silent => Vec::new(),
            };
            // Send the reply (a write error: the client gave up reading), then echo.
            let _ = stream.write_all(&reply).await;
            let mut buf = [0u8; 1024];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        (addr, head_rx)
    }

    async fn tunnel(
        url: &str,
        reply: Reply,
        authority: &str,
        timeout: Duration,
    ) -> (Result<(TcpStream, Vec<u8>), String>, Option<String>) {
        let (addr, head) = fake_upstream(reply).await;
        let upstream = Upstream::parse(&url.replace("ADDR", &addr.to_string())).expect("parse");
        let stream = TcpStream::connect(addr).await.expect("connect");
        let result = tokio::time::timeout(
            Duration::from_secs(10),
            upstream.open_tunnel_within(stream, authority, timeout),
        )
        .await
        .expect("open_tunnel must not hang");
        (result, head.await.ok())
    }

    #[tokio::test]
    async fn connect_tunnel_keeps_early_bytes() {
        let (result, head) = tunnel(
            "http://user:pw@ADDR",
            Reply::Send(b"HTTP/1.1 200 Connection established\r\n\r\nearly"),
            "example.test:443",
            HEAD_TIMEOUT,
        )
        .await;
        let (mut stream, leftover) = result.expect("tunnel");
        assert_eq!(
            head.as_deref(),
            Some(
                "CONNECT example.test:443 HTTP/1.1\r\n\
                 Host: example.test:443\r\n\
                 Proxy-Authorization: Basic dXNlcjpwdw==\r\n\r\n"
            )
        );
        // The bytes after the head come first: those hyper had read
        // (`leftover`), then the rest from the socket.
        let mut early = leftover;
        while early.len() < 5 {
            let mut buf = [0u8; 16];
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed early");
            early.extend_from_slice(&buf[..n]);
        }
        assert_eq!(early, b"early");
        stream.write_all(b"ping").await.expect("write");
        let mut back = [0u8; 4];
        stream.read_exact(&mut back).await.expect("echo");
        assert_eq!(&back, b"ping");
    }

    #[tokio::test]
    async fn connect_to_an_ipv6_destination_without_credentials() {
        let (result, head) = tunnel(
            "ADDR",
            Reply::Send(b"HTTP/1.0 200 OK\r\n\r\n"),
            "[2001:db8::1]:22",
            HEAD_TIMEOUT,
        )
        .await;
        let (_stream, leftover) = result.expect("tunnel");
        assert!(leftover.is_empty());
        assert_eq!(
            head.as_deref(),
            Some("CONNECT [2001:db8::1]:22 HTTP/1.1\r\nHost: [2001:db8::1]:22\r\n\r\n")
        );
    }

    #[tokio::test]
    async fn connect_refused_by_the_upstream() {
        let (result, _) = tunnel(
            "http://user:secret@ADDR",
            Reply::Send(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 4\r\n\r\nnope",
            ),
            "example.test:443",
            HEAD_TIMEOUT,
        )
        .await;
        let err = result.expect_err("407");
        assert!(
            err.contains("answered \"HTTP/1.1 407 Proxy Authentication Required\""),
            "{err}"
        );
        assert!(!err.contains("secret"));
        let (result, _) = tunnel(
            "ADDR",
            Reply::Send(b"HTTP/1.1 403 Go Away\r\n\r\n"),
            "example.test:443",
            HEAD_TIMEOUT,
        )
        .await;
        let err = result.expect_err("403");
        assert!(err.contains("answered \"HTTP/1.1 403 Go Away\""), "{err}");
    }

    #[tokio::test]
    async fn connect_garbage_is_an_error() {
        let (result, _) = tunnel(
            "ADDR",
            Reply::Send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"),
            "example.test:443",
            HEAD_TIMEOUT,
        )
        .await;
        let err = result.expect_err("garbage");
        assert!(err.starts_with("upstream proxy 127.0.0.1:"), "{err}");
    }

    #[tokio::test]
    async fn connect_oversized_head_is_an_error() {
        let mut reply = b"HTTP/1.1 200 OK\r\n".to_vec();
        while reply.len() <= 2 * MAX_HEAD {
            reply.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let (result, _) = tunnel(
            "ADDR",
            Reply::Bytes(reply),
            "example.test:443",
            HEAD_TIMEOUT,
        )
        .await;
        let err = result.expect_err("oversized");
        assert!(err.starts_with("upstream proxy 127.0.0.1:"), "{err}");
    }

    #[tokio::test]
    async fn connect_to_a_closing_upstream_is_an_error() {
        let (result, _) = tunnel("ADDR", Reply::Close, "example.test:443", HEAD_TIMEOUT).await;
        let err = result.expect_err("closed");
        assert!(err.starts_with("upstream proxy 127.0.0.1:"), "{err}");
    }

    #[tokio::test]
    async fn connect_to_a_silent_upstream_times_out() {
        let (result, head) = tunnel(
            "ADDR",
            Reply::Silent,
            "example.test:443",
            Duration::from_millis(300),
        )
        .await;
        assert!(head.is_some(), "the request was sent");
        let err = result.expect_err("silent");
        assert!(err.ends_with(": no answer to CONNECT"), "{err}");
    }
}
