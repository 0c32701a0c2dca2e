//! CONNECT tunnels to hosts with a bound credential: the client's TLS is
//! terminated with a certificate from the session CA, the proxy opens its
//! own verified TLS connection to the real server, and HTTP/1.1 requests go
//! across one by one, with placeholders swapped (see `broker.rs`).

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::http::uri::Authority;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::broker::REFRESH_TIMEOUT;
use crate::policy::{Reason, normalize_host};
use crate::server::{
    ClientEnd, Counted, CountingBody, HEADER_TIMEOUT, HELLO_TIMEOUT, HttpLog, Pending, ProxyBody,
    RequestBody, Shared, authority, read_hello, refusal, strip_hop_by_hop,
};

/// Serve a brokered tunnel until either side closes (or the proxy shuts
/// down). `server` is the TCP connection to the real server (or to the
/// upstream proxy's tunnel, with `leftover` bytes it already sent).
pub(crate) async fn serve(
    shared: Arc<Shared>,
    p: Pending,
    why: &'static str,
    upgraded: Upgraded,
    server: TcpStream,
    leftover: Vec<u8>,
) {
    let Some(broker) = shared.broker.as_ref() else {
        return; // connect() only comes here when there is a broker
    };
    let deny = |detail: String| shared.record(&p, Err(Reason::ConnectFailed), detail, 0, 0);
    let (mut client, early) = ClientEnd::from_upgraded(upgraded);
    let hello = match read_hello(&mut client, early, &p.host).await {
        Ok(hello) => hello,
        Err((reason, detail)) => {
            shared.record(&p, Err(reason), detail, 0, 0);
            return;
        }
    };
    let server_tls = match broker.server_tls(&p.host) {
        Ok(config) => config,
        Err(error) => return deny(format!("cannot make a certificate for {}: {error}", p.host)),
    };
    let Ok(server_name) = ServerName::try_from(p.host.clone()) else {
        return deny(format!(
            "{:?} cannot be verified as a TLS server name",
            p.host
        ));
    };

    // The real server first: a client that gets a handshake from us should
    // find a verified server behind it.
    let connector = TlsConnector::from(broker.upstream_tls());
    let opened = tokio::time::timeout(
        HELLO_TIMEOUT,
        connector.connect(server_name, Prefixed::new(leftover, server)),
    )
    .await;
    let upstream = match opened {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return deny(upstream_tls_failure(&p.host, &error)),
        Err(_) => {
            return deny(format!(
                "TLS with the server {} did not complete within 10 s",
                p.host
            ));
        }
    };
    let (sender, upstream_conn) = match hyper::client::conn::http1::handshake::<_, CountingBody>(
        TokioIo::new(upstream),
    )
    .await
    {
        Ok(pair) => pair,
        Err(error) => return deny(format!("HTTP with the server {}: {error}", p.host)),
    };
    let mut upstream_task = tokio::spawn(async move {
        // With upgrades: a WebSocket's 101 hands the connection over.
        if let Err(error) = upstream_conn.with_upgrades().await {
            tracing::debug!(%error, "brokered server connection ended with an error");
        }
    });

    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let counted = Counted {
        inner: Prefixed::new(hello, client),
        up: up.clone(),
        down: down.clone(),
    };
    let accepted =
        tokio::time::timeout(HELLO_TIMEOUT, TlsAcceptor::from(server_tls).accept(counted)).await;
    let client_tls = match accepted {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            upstream_task.abort();
            return deny(format!(
                "TLS with the client failed (a client that does not trust the session CA fails here): {error}"
            ));
        }
        Err(_) => {
            upstream_task.abort();
            return deny("TLS with the client did not complete within 10 s".to_string());
        }
    };

    let context = Arc::new(Terminated {
        shared: shared.clone(),
        tunnel: p.clone(),
        why,
        sender: tokio::sync::Mutex::new(sender),
        requests: AtomicU64::new(0),
        upgraded: AtomicBool::new(false),
    });
    let service_context = context.clone();
    let service = service_fn(move |req| {
        let context = service_context.clone();
        async move { Ok::<_, Infallible>(context.forward(req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(client_tls), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut shutdown = shared.shutdown.clone();
    let mut upstream_closed = false;
    let ended = loop {
        tokio::select! {
            result = conn.as_mut() => break result.err().map(|error| format!("; ended: {error}")),
            // The server closed its side: finish the response in flight, then
            // close ours too, so that the client opens a new tunnel (as it
            // would have had to with the server itself).
            _ = &mut upstream_task, if !upstream_closed => {
                upstream_closed = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = shutdown.changed() => break Some("; proxy shut down".to_string()),
        }
    };
    if context.upgraded.load(Ordering::Relaxed) && !upstream_closed {
        // The server connection hands itself to the WebSocket when its
        // task sees the 101 through: let it.
        let _ = tokio::time::timeout(HELLO_TIMEOUT, &mut upstream_task).await;
    }
    upstream_task.abort();
    let requests = context.requests.load(Ordering::Relaxed);
    shared.record(
        &p,
        Ok(why),
        format!(
            "TLS terminated by the credential broker, {requests} request(s){}",
            ended.unwrap_or_default()
        ),
        up.load(Ordering::Relaxed),
        down.load(Ordering::Relaxed),
    );
}

fn upstream_tls_failure(host: &str, error: &io::Error) -> String {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(why)) => {
            format!("the server's certificate for {host} failed verification: {why:?}")
        }
        _ => format!("TLS with the server {host} failed: {error}"),
    }
}

/// One terminated tunnel, as its requests see it.
pub(crate) struct Terminated {
    shared: Arc<Shared>,
    /// The CONNECT's host, port, address and upstream proxy.
    tunnel: Pending,
    why: &'static str,
    /// HTTP/1.1 serves one request at a time; the lock only hands the
    /// connection from one request to the next.
    sender: tokio::sync::Mutex<SendRequest<CountingBody>>,
    requests: AtomicU64,
    /// A request upgraded the tunnel to a WebSocket.
    upgraded: AtomicBool,
}

impl Terminated {
    async fn forward(&self, mut req: Request<Incoming>) -> Response<ProxyBody> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        // A WebSocket: its upgrade headers go to the server (they are
        // hop-by-hop, and stripped otherwise); its frames are not read.
        let websocket = websocket_upgrade(req.headers());
        let client_upgrade = websocket.is_some().then(|| hyper::upgrade::on(&mut req));
        let shared = &self.shared;
        let mut p = Pending::new(req.method());
        p.host = self.tunnel.host.clone();
        p.port = self.tunnel.port;
        p.addr = self.tunnel.addr;
        p.via = self.tunnel.via.clone();

        let (mut parts, body) = req.into_parts();
        if let Err(detail) = names_the_tunnel_host(&parts, &p.host, p.port) {
            return shared.refuse(&p, Reason::BadRequest, detail);
        }
        strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = &websocket {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, protocol.clone());
        }
        let Some(broker) = shared.broker.as_ref() else {
            return shared.refuse(&p, Reason::BadRequest, "no credential broker".into());
        };
        let injected = match broker.swap(&p.host, &mut parts) {
            Ok(injected) => injected,
            Err(not_bound) => {
                p.credential = Some(not_bound.credential.clone());
                return shared.refuse(&p, Reason::CredentialNotBound, not_bound.to_string());
            }
        };
        p.credential = injected.names();

        let target = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
            .parse::<Uri>();
        let Ok(target) = target else {
            return shared.refuse(&p, Reason::BadRequest, "bad request target".into());
        };
        let host_header = if p.port == 443 {
            authority(&p.host, p.port)
                .trim_end_matches(":443")
                .to_string()
        } else {
            authority(&p.host, p.port)
        };
        match HeaderValue::from_str(&host_header) {
            Ok(value) => {
                parts.headers.insert(header::HOST, value);
            }
            Err(_) => return shared.refuse(&p, Reason::BadRequest, "bad host".into()),
        }
        if parts.method == Method::POST
            && let Some(login) = broker.token_endpoint(&p.host, parts.uri.path())
        {
            parts.uri = target;
            return crate::oauth::token_request(self, login, p, parts, body, injected).await;
        }
        parts.uri = target;
        let up = Arc::new(AtomicU64::new(0));
        let resp = match self.send(parts, body.into(), &up).await {
            Ok(resp) => resp,
            Err(error) => return self.no_answer(&p, &up, &error),
        };
        if let Some(client_upgrade) = client_upgrade
            && resp.status() == StatusCode::SWITCHING_PROTOCOLS
        {
            return self.websocket(p, resp, client_upgrade);
        }
        let mut detail = String::new();
        if resp.status() == StatusCode::UNAUTHORIZED {
            let (notes, due) = broker.unauthorized(&injected);
            detail = notes;
            for refresh in due {
                let shared = shared.clone();
                // Not awaited: the 401 goes to the client now, and a
                // later request gets the new value.
                tokio::spawn(async move {
                    let Some(broker) = shared.broker.as_ref() else {
                        return;
                    };
                    let name = refresh.name.clone();
                    match broker.refresh(refresh, REFRESH_TIMEOUT).await {
                        Ok(()) => tracing::info!(
                            credential = %name,
                            refreshed = true,
                            "credential {name} refreshed after 401"
                        ),
                        Err(why) => tracing::info!(
                            credential = %name,
                            refreshed = false,
                            "refresh of {name} failed: {why}"
                        ),
                    }
                });
            }
        }
        self.relay(p, resp, &injected, up, detail)
    }
}

/// The server's response head as the client gets it: hop-by-hop headers
/// gone, and `Connection: close` kept when the server closes (so that the
/// client opens a new tunnel, as it would have had to with the server).
pub(crate) fn client_head(head: &mut hyper::http::response::Parts) {
    let server_closes = asks_to_close(&head.headers);
    strip_hop_by_hop(&mut head.headers);
    if server_closes {
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

impl Terminated {
    /// The server agreed to a WebSocket: its 101 goes to the client, and
    /// once both sides have upgraded, the bytes are copied both ways until
    /// either closes (or the proxy shuts down); then `p` is logged with
    /// them. The frames are not read: a placeholder inside one goes as it
    /// is (the handshake's headers were swapped like any request's).
    fn websocket(
        &self,
        p: Pending,
        mut resp: Response<Incoming>,
        client_upgrade: hyper::upgrade::OnUpgrade,
    ) -> Response<ProxyBody> {
        let server_upgrade = hyper::upgrade::on(&mut resp);
        self.upgraded.store(true, Ordering::Relaxed);
        let (mut head, _) = resp.into_parts();
        let protocol = head.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut head.headers);
        head.headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            head.headers.insert(header::UPGRADE, protocol);
        }
        let shared = self.shared.clone();
        let why = self.why;
        tokio::spawn(async move {
            let mut shutdown = shared.shutdown.clone();
            let (client, server) = tokio::join!(client_upgrade, server_upgrade);
            let (client, server) = match (client, server) {
                (Ok(client), Ok(server)) => (client, server),
                (Err(error), _) | (_, Err(error)) => {
                    let detail = format!("the WebSocket upgrade did not complete: {error}");
                    shared.record(&p, Err(Reason::ConnectFailed), detail, 0, 0);
                    return;
                }
            };
            let (up, down) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let mut client = Counted {
                inner: TokioIo::new(client),
                up: up.clone(),
                down: down.clone(),
            };
            let mut server = TokioIo::new(server);
            let copied = tokio::select! {
                copied = tokio::io::copy_bidirectional(&mut client, &mut server) => copied.map(drop),
                _ = shutdown.changed() => Err(io::Error::other("proxy shut down")),
            };
            let detail = match copied {
                Ok(()) => "WebSocket".to_string(),
                Err(error) => format!("WebSocket; ended: {error}"),
            };
            let (up, down) = (up.load(Ordering::Relaxed), down.load(Ordering::Relaxed));
            shared.record(&p, Ok(why), detail, up, down);
        });
        Response::from_parts(head, ProxyBody::Full(None))
    }

    /// Relays the server's response to `p`, scrubbed of what `injected`
    /// put into the request, and logs `p` when its body is done.
    pub(crate) fn relay(
        &self,
        p: Pending,
        resp: Response<Incoming>,
        injected: &crate::broker::Injected,
        up: Arc<AtomicU64>,
        detail: String,
    ) -> Response<ProxyBody> {
        let (mut head, body) = resp.into_parts();
        // How the body ends is the server's head's to say, before the
        // hop-by-hop headers go.
        let server_headers = head.headers.clone();
        client_head(&mut head);
        let scrub = injected.scrubber();
        if let Some(scrub) = &scrub {
            scrub.headers(&mut head.headers);
            if !scrub.keeps_length() {
                head.headers.remove(header::CONTENT_LENGTH);
            }
        }
        let log = HttpLog {
            shared: self.shared.clone(),
            pending: p,
            why: self.why,
            up,
            down: 0,
            detail,
        };
        Response::from_parts(head, ProxyBody::relay(body, &server_headers, log, scrub))
    }

    /// Sends one request on the tunnel's server connection, its body
    /// counted in `up`.
    pub(crate) async fn send(
        &self,
        parts: Parts,
        body: RequestBody,
        up: &Arc<AtomicU64>,
    ) -> Result<Response<Incoming>, hyper::Error> {
        let mut out = Request::new(CountingBody {
            inner: body,
            counter: up.clone(),
        });
        *out.method_mut() = parts.method;
        *out.uri_mut() = parts.uri;
        *out.version_mut() = Version::HTTP_11;
        *out.headers_mut() = parts.headers;
        let sent = {
            let mut sender = self.sender.lock().await;
            match sender.ready().await {
                Ok(()) => Ok(sender.send_request(out)),
                Err(error) => Err(error),
            }
        };
        match sent {
            Ok(response) => response.await,
            Err(error) => Err(error),
        }
    }

    /// The server did not answer `p`: logged, and a 502 that closes the
    /// client's connection (this tunnel's server connection is gone).
    pub(crate) fn no_answer(
        &self,
        p: &Pending,
        up: &AtomicU64,
        error: &hyper::Error,
    ) -> Response<ProxyBody> {
        let detail = format!("the server did not answer: {error}");
        self.shared.record(
            p,
            Err(Reason::ConnectFailed),
            detail.clone(),
            up.load(Ordering::Relaxed),
            0,
        );
        let mut resp = refusal(self.shared.mode(), Reason::ConnectFailed, &p.host, &detail);
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn why(&self) -> &'static str {
        self.why
    }
}

/// The `Upgrade` value of a WebSocket handshake (`Connection: upgrade`,
/// `Upgrade: websocket`); `None` for any other request.
fn websocket_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(header::UPGRADE)?;
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    (asked && upgrade.as_bytes().eq_ignore_ascii_case(b"websocket")).then(|| upgrade.clone())
}

/// A request inside a tunnel must be for the tunnel's host (no fronting
/// another name past the policy check): its `Host` header and the authority
/// of an absolute target, whichever it has, and the port when one is given.
fn names_the_tunnel_host(parts: &Parts, host: &str, port: u16) -> Result<(), String> {
    let mut named: Vec<&str> = Vec::new();
    if let Some(target) = parts.uri.authority() {
        named.push(target.as_str());
    }
    for value in parts.headers.get_all(header::HOST) {
        named.push(
            value
                .to_str()
                .map_err(|_| "the Host header is not text".to_string())?,
        );
    }
    if named.is_empty() {
        return Err("the request has no Host header".to_string());
    }
    for text in named {
        let matches = text.parse::<Authority>().is_ok_and(|named| {
            normalize_host(named.host()).as_deref() == Some(host)
                && named.port_u16().is_none_or(|named_port| named_port == port)
        });
        if !matches {
            return Err(format!(
                "the request is for {text:?}, but this tunnel is to {}",
                authority(host, port)
            ));
        }
    }
    Ok(())
}

fn asks_to_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

/// A stream that first yields bytes already read from it.
pub(crate) struct Prefixed<T> {
    prefix: Vec<u8>,
    at: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(crate) fn new(prefix: Vec<u8>, inner: T) -> Self {
        Self {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.at);
            buf.put_slice(&this.prefix[this.at..this.at + n]);
            this.at += n;
            if this.at == this.prefix.len() {
                this.prefix = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
