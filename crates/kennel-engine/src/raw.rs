//! The two requests `run` needs more control over than bollard gives:
//!
//! * attach: we want the raw, hijacked socket (byte-exact TTY output even when
//!   it starts with bytes 0–2, and a real half-close of stdin), and
//! * wait: we must know the engine has *registered* the wait (its response
//!   headers arrived) before starting the container.
//!
//! Both engines flush the response headers of `/wait` right away and answer an
//! attach that asks for `Upgrade: tcp` with `101` (Podman: `101 UPGRADED`).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tracing::debug;

use crate::error::EngineError;

/// The hijacked attach connection and the bytes already read past the headers.
pub(crate) struct Attached {
    pub stream: UnixStream,
    pub leftover: Vec<u8>,
}

/// A URL query string (`a=1&b=x%2By`), form-encoded.
pub(crate) fn query<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    match serde_json::from_slice::<Message>(body) {
        Ok(msg) => msg.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

/// `POST /containers/{id}/attach` with an upgrade to a raw stream.
pub(crate) async fn attach(
    socket: &Path,
    api_version: &str,
    container: &str,
    stdin: bool,
) -> Result<Attached, EngineError> {
    let query = query([
        ("stream", "1"),
        ("stdin", if stdin { "1" } else { "0" }),
        ("stdout", "1"),
        ("stderr", "1"),
    ]);
    hijack(
        socket,
        &format!("/v{api_version}/containers/{container}/attach?{query}"),
        "text/plain",
        "",
        format!("attaching to container {container}"),
    )
    .await
}

/// `POST /exec/{id}/start` with an upgrade to a raw stream.
pub(crate) async fn exec_start(
    socket: &Path,
    api_version: &str,
    exec: &str,
    tty: bool,
) -> Result<Attached, EngineError> {
    hijack(
        socket,
        &format!("/v{api_version}/exec/{exec}/start"),
        "application/json",
        &format!("{{\"Detach\":false,\"Tty\":{tty}}}"),
        format!("starting exec {exec}"),
    )
    .await
}

/// A POST answered by a hijacked, raw connection (`101` or `200`).
async fn hijack(
    socket: &Path,
    path: &str,
    content_type: &str,
    body: &str,
    action: String,
) -> Result<Attached, EngineError> {
    let container = &action;
    let io_err = |err| EngineError::io(action.clone(), err);
    let mut stream = UnixStream::connect(socket).await.map_err(io_err)?;
    let request = format!(
        "POST {path} HTTP/1.1\r\n\
         Host: localhost\r\n\
         Content-Type: {content_type}\r\n\
         Content-Length: {}\r\n\
         Connection: Upgrade\r\n\
         Upgrade: tcp\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.map_err(io_err)?;

    let mut buf = Vec::with_capacity(1024);
    let header_end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(EngineError::Api {
                action: container.to_string(),
                status: None,
                message: "the engine's answer has no end of headers".to_string(),
            });
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut chunk))
            .await
            .map_err(|_| {
                io_err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no answer from the engine within 60 s",
                ))
            })?
            .map_err(io_err)?;
        if n == 0 {
            return Err(io_err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the engine closed the connection",
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };

    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let leftover = buf[header_end..].to_vec();
    debug!(status, "attach answered");
    if status == 101 || status == 200 {
        return Ok(Attached { stream, leftover });
    }

    // An error: read its (small) body for the message.
    let length: Option<usize> = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    });
    let mut body = leftover;
    let want = length.unwrap_or(16 * 1024);
    while body.len() < want {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => body.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    Err(EngineError::Api {
        action: container.to_string(),
        status: Some(status),
        message: error_message(&body),
    })
}

#[derive(Debug, Deserialize)]
struct WaitBody {
    #[serde(rename = "StatusCode")]
    status_code: i64,
    #[serde(rename = "Error", default)]
    error: Option<WaitError>,
}

#[derive(Debug, Deserialize)]
struct WaitError {
    #[serde(rename = "Message", default)]
    message: Option<String>,
}

/// The outcome of a registered wait: the container's exit status.
pub(crate) type WaitOutcome = Result<i64, EngineError>;

/// `POST /containers/{id}/wait?condition=…`; returns once the engine has
/// answered with headers (the wait is registered), with a future for the status.
pub(crate) async fn wait(
    socket: &Path,
    api_version: &str,
    container: &str,
    condition: &str,
) -> Result<impl Future<Output = WaitOutcome> + Send + 'static, EngineError> {
    let action = format!("waiting for container {container}");
    let api = |message: String, status: Option<u16>| EngineError::Api {
        action: action.clone(),
        status,
        message,
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|err| EngineError::io(action.clone(), err))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| api(err.to_string(), None))?;
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            debug!(%err, "wait connection ended");
        }
    });
    let request = hyper::Request::builder()
        .method(hyper::Method::POST)
        .uri(format!(
            "/v{api_version}/containers/{container}/wait?{}",
            query([("condition", condition)])
        ))
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|err| api(err.to_string(), None))?;
    let response = tokio::time::timeout(Duration::from_secs(60), sender.send_request(request))
        .await
        .map_err(|_| api("no answer from the engine within 60 s".to_string(), None))?
        .map_err(|err| api(err.to_string(), None))?;
    let status = response.status().as_u16();
    if status != 200 {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|body| body.to_bytes())
            .unwrap_or_default();
        return Err(api(error_message(&body), Some(status)));
    }
    debug!("wait registered");
    let action = format!("waiting for container {container}");
    Ok(async move {
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| EngineError::Api {
                action: action.clone(),
                status: None,
                message: format!("the connection to the engine broke: {err}"),
            })?
            .to_bytes();
        let parsed: WaitBody = serde_json::from_slice(&body).map_err(|err| EngineError::Api {
            action: action.clone(),
            status: None,
            message: format!(
                "unexpected answer {:?}: {err}",
                String::from_utf8_lossy(&body)
            ),
        })?;
        if let Some(message) = parsed
            .error
            .and_then(|error| error.message)
            .filter(|message| !message.is_empty())
        {
            debug!(%message, "wait reported an error");
        }
        Ok(parsed.status_code)
    })
}

/// `GET path` and parse the JSON answer (for the few libpod endpoints we read).
pub(crate) async fn get_json(socket: &Path, path: &str) -> Result<serde_json::Value, String> {
    get_json_if_found(socket, path)
        .await?
        .ok_or_else(|| format!("404 Not Found: {path}"))
}

/// Like [`get_json`], with `None` for a 404 (an object that does not exist).
pub(crate) async fn get_json_if_found(
    socket: &Path,
    path: &str,
) -> Result<Option<serde_json::Value>, String> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|err| err.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| err.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = hyper::Request::builder()
        .method(hyper::Method::GET)
        .uri(path)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|err| err.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .map_err(|_| "no answer within 30 s".to_string())?
        .map_err(|err| err.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| err.to_string())?
        .to_bytes();
    if status == hyper::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(format!("{status}: {}", error_message(&body)));
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_form_encoded() {
        assert_eq!(
            query([("condition", "next-exit"), ("x", "a b&c=d/é")]),
            "condition=next-exit&x=a+b%26c%3Dd%2F%C3%A9"
        );
    }
}
