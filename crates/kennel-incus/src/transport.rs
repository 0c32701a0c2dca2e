//! HTTP/1.1 to Incus over its unix socket, with hyper.
//!
//! Idle connections are kept for reuse: through incus-user every new
//! connection costs a TLS handshake between incus-user and incusd, and Incus
//! keeps connections alive.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;
use tracing::debug;

use crate::error::IncusError;

/// Request bodies: a file upload streams, everything else is in memory.
pub(crate) type StreamBody = BoxBody<Bytes, io::Error>;

/// How many idle connections are kept.
const MAX_IDLE: usize = 4;

pub(crate) enum RequestBody {
    Empty,
    Bytes(Bytes),
    /// Streamed with a known length (an image upload). Never retried.
    Stream {
        body: StreamBody,
        length: u64,
    },
}

impl RequestBody {
    pub(crate) fn json(value: &impl serde::Serialize) -> Result<Self, IncusError> {
        serde_json::to_vec(value)
            .map(|body| RequestBody::Bytes(Bytes::from(body)))
            .map_err(|err| IncusError::protocol("encoding a request", err.to_string()))
    }

    fn into_stream(self) -> StreamBody {
        match self {
            RequestBody::Empty => Empty::new().map_err(|never| match never {}).boxed(),
            RequestBody::Bytes(bytes) => Full::new(bytes).map_err(|never| match never {}).boxed(),
            RequestBody::Stream { body, .. } => body,
        }
    }

    /// The same body again, for a retry on a fresh connection.
    fn replay(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Empty => Some(RequestBody::Empty),
            RequestBody::Bytes(bytes) => Some(RequestBody::Bytes(bytes.clone())),
            RequestBody::Stream { .. } => None,
        }
    }
}

/// One request: method, path (with query) and extra headers.
pub(crate) struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: RequestBody,
    pub timeout: Duration,
}

/// A whole answer, body read.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Incus's JSON envelope (`sync`, `async` or `error`).
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_code: u16,
    #[serde(default)]
    pub metadata: serde_json::Value,
}

impl Answer {
    /// The envelope of a successful answer, or the error it reports.
    pub(crate) fn envelope(&self, action: &str) -> Result<Envelope, IncusError> {
        match serde_json::from_slice::<Envelope>(&self.body) {
            Ok(envelope) if envelope.kind == "error" || !self.status.is_success() => {
                // The envelope's code is Incus's; a `/wait` answers 200 first
                // and puts the real code there.
                let code = if envelope.error_code != 0 {
                    envelope.error_code
                } else {
                    self.status.as_u16()
                };
                Err(IncusError::from_status(action, code, envelope.error))
            }
            Ok(envelope) => Ok(envelope),
            Err(_) if !self.status.is_success() => Err(IncusError::from_status(
                action,
                self.status.as_u16(),
                String::from_utf8_lossy(&self.body).trim().to_string(),
            )),
            Err(err) => Err(IncusError::protocol(
                action,
                format!("not an Incus answer ({err}): {}", preview(&self.body)),
            )),
        }
    }

    /// The `metadata` of a successful answer, as `T`.
    pub(crate) fn metadata<T: DeserializeOwned>(&self, action: &str) -> Result<T, IncusError> {
        let envelope = self.envelope(action)?;
        serde_json::from_value(envelope.metadata).map_err(|err| {
            IncusError::protocol(action, format!("{err} in {}", preview(&self.body)))
        })
    }

    /// An error for a non-2xx answer whose body is not JSON (file transfers).
    pub(crate) fn check_status(&self, action: &str) -> Result<(), IncusError> {
        if self.status.is_success() {
            return Ok(());
        }
        self.envelope(action).map(|_| ())
    }
}

fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

pub(crate) struct Transport {
    socket: PathBuf,
    idle: Mutex<Vec<SendRequest<StreamBody>>>,
}

impl Transport {
    pub(crate) fn new(socket: PathBuf) -> Self {
        Transport {
            socket,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// A new connection to the socket, its failure sorted for the caller.
    pub(crate) async fn connect(&self, action: &str) -> Result<UnixStream, IncusError> {
        UnixStream::connect(&self.socket).await.map_err(|err| {
            let path = self.socket.clone();
            match err.kind() {
                io::ErrorKind::NotFound => IncusError::SocketMissing { path },
                io::ErrorKind::ConnectionRefused => IncusError::NotRunning { path },
                io::ErrorKind::PermissionDenied => IncusError::PermissionDenied {
                    path,
                    reason: "this user may not open the socket (Incus gives the admin socket to \
                             group incus-admin, the user socket to group incus)"
                        .to_string(),
                },
                _ => IncusError::io(action, err),
            }
        })
    }

    async fn new_sender(&self, action: &str) -> Result<SendRequest<StreamBody>, IncusError> {
        let stream = self.connect(action).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| hyper_error(action, err))?;
        // Ends by itself when the sender is dropped or the socket closes.
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(%err, "Incus connection ended");
            }
        });
        Ok(sender)
    }

    fn take_idle(&self) -> Option<SendRequest<StreamBody>> {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while let Some(sender) = idle.pop() {
            if sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    fn give_back(&self, sender: SendRequest<StreamBody>) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    /// Send one request and read its whole answer.
    pub(crate) async fn call(&self, action: &str, call: Call<'_>) -> Result<Answer, IncusError> {
        let timeout = call.timeout;
        tokio::time::timeout(timeout, self.call_inner(action, call))
            .await
            .map_err(|_| IncusError::Timeout {
                action: action.to_string(),
                timeout,
            })?
    }

    async fn call_inner(&self, action: &str, call: Call<'_>) -> Result<Answer, IncusError> {
        let Call {
            method,
            path,
            headers,
            body,
            timeout: _,
        } = call;
        let head = Head {
            method,
            path,
            headers,
            content_length: match &body {
                RequestBody::Stream { length, .. } => Some(*length),
                _ => None,
            },
            json: matches!(body, RequestBody::Bytes(_)),
        };
        if let Some(sender) = self.take_idle() {
            let replay = body.replay();
            match self.send(action, sender, &head, body.into_stream()).await {
                Ok(answer) => return Ok(answer),
                // Incus may have closed the idle connection just as we
                // reused it: once more on a new one, if the body allows.
                Err(Retry::Stale(err)) => {
                    let Some(body) = replay else {
                        return Err(hyper_error(action, err));
                    };
                    debug!(%err, "stale Incus connection, retrying on a new one");
                    let sender = self.new_sender(action).await?;
                    return self
                        .send(action, sender, &head, body.into_stream())
                        .await
                        .map_err(|retry| retry.into_error(action));
                }
                Err(Retry::Fatal(err)) => return Err(err),
            }
        }
        let sender = self.new_sender(action).await?;
        self.send(action, sender, &head, body.into_stream())
            .await
            .map_err(|retry| retry.into_error(action))
    }

    async fn send(
        &self,
        action: &str,
        mut sender: SendRequest<StreamBody>,
        head: &Head<'_>,
        body: StreamBody,
    ) -> Result<Answer, Retry> {
        let mut request = hyper::Request::builder()
            .method(head.method.clone())
            .uri(head.path)
            .header(header::HOST, "incus");
        if let Some(length) = head.content_length {
            request = request.header(header::CONTENT_LENGTH, length);
        }
        if head.json
            && !head
                .headers
                .iter()
                .any(|(name, _)| name == header::CONTENT_TYPE)
        {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in &head.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(body)
            .map_err(|err| Retry::Fatal(IncusError::protocol(action, err.to_string())))?;
        sender.ready().await.map_err(Retry::Stale)?;
        let response = sender.send_request(request).await.map_err(|err| {
            if err.is_canceled() || err.is_closed() || err.is_incomplete_message() {
                Retry::Stale(err)
            } else {
                Retry::Fatal(hyper_error(action, err))
            }
        })?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|err| Retry::Fatal(hyper_error(action, err)))?
            .to_bytes();
        let closing = parts
            .headers
            .get(header::CONNECTION)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
        if !closing {
            self.give_back(sender);
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// A request without its body (which may be sent twice, or only once).
struct Head<'a> {
    method: Method,
    path: &'a str,
    headers: Vec<(HeaderName, HeaderValue)>,
    content_length: Option<u64>,
    json: bool,
}

enum Retry {
    /// The connection was dead before any answer: safe to send again.
    Stale(hyper::Error),
    Fatal(IncusError),
}

impl Retry {
    fn into_error(self, action: &str) -> IncusError {
        match self {
            Retry::Stale(err) => hyper_error(action, err),
            Retry::Fatal(err) => err,
        }
    }
}

/// A hyper error, with the I/O error underneath when there is one.
pub(crate) fn hyper_error(action: &str, err: hyper::Error) -> IncusError {
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return IncusError::io(
            action,
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "Incus closed the connection before answering",
            ),
        );
    }
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        if let Some(io_err) = cause.downcast_ref::<io::Error>() {
            return IncusError::io(action, io::Error::new(io_err.kind(), io_err.to_string()));
        }
        source = cause.source();
    }
    IncusError::protocol(action, err.to_string())
}
