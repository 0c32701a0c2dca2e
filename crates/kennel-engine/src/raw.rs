//! The two requests `run` needs more control over than bollard gives:
//!
//! * attach: we want the raw, hijacked socket (byte-exact TTY output even when
//!   it starts with bytes 0–2, and a real half-close of stdin), and
//! * wait: we must know the engine has *registered* the wait (its response
//!   headers arrived) before starting the container.
//!
//! Both engines flush the response headers of `/wait` right away and answer an
//! attach that asks for `Upgrade: tcp` with `101` (Podman: `101 UPGRADED`).
//!
//! Every request here is hyper's HTTP/1 client over the engine's unix socket.
//! For attach and exec start, the `101` is hyper's upgrade: the upgraded
//! connection is downcast back to the `UnixStream` (for `shutdown(Write)`), and
//! the bytes hyper read past the response head are kept, untouched, as the
//! start of the output.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::UnixStream;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::error::EngineError;

/// How long the engine may take to answer a hijack request's head.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest response head read (hyper's read buffer limit).
const MAX_HEAD: usize = 64 * 1024;
/// How much of an error answer's body is read for its message.
const MAX_ERROR_BODY: usize = 16 * 1024;

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
        &serde_json::json!({ "Detach": false, "Tty": tty }).to_string(),
        format!("starting exec {exec}"),
    )
    .await
}

/// Aborts the spawned connection task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A POST answered by `101` and a hijacked, raw connection.
async fn hijack(
    socket: &Path,
    path: &str,
    content_type: &str,
    body: &str,
    action: String,
) -> Result<Attached, EngineError> {
    let io_err = |err| EngineError::io(action.clone(), err);
    let api = |status: Option<u16>, message: String| EngineError::Api {
        action: action.clone(),
        status,
        message,
    };
    let stream = UnixStream::connect(socket).await.map_err(io_err)?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .max_buf_size(MAX_HEAD)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|err| answer_error(&action, err))?;
    // Driven until it hands the socket over (or fails); stopped with us.
    let _conn = AbortOnDrop(tokio::spawn(async move {
        if let Err(err) = conn.with_upgrades().await {
            debug!(%err, "hijack connection ended");
        }
    }));
    let request = hyper::Request::builder()
        .method(hyper::Method::POST)
        .uri(path)
        .header(header::HOST, "localhost")
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "tcp")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .map_err(|err| api(None, err.to_string()))?;
    let timed_out = || {
        io_err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer from the engine within 60 s",
        ))
    };
    let response = tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| timed_out())?
        .map_err(|err| answer_error(&action, err))?;
    let status = response.status().as_u16();
    debug!(status, "attach answered");
    if status == 101 {
        let upgraded = tokio::time::timeout(ANSWER_TIMEOUT, hyper::upgrade::on(response))
            .await
            .map_err(|_| timed_out())?
            .map_err(|err| answer_error(&action, err))?;
        let parts = upgraded
            .downcast::<TokioIo<UnixStream>>()
            .map_err(|_| api(None, "hyper did not hand the socket back".to_string()))?;
        return Ok(Attached {
            stream: parts.io.into_inner(),
            leftover: parts.read_buf.to_vec(),
        });
    }
    if status == 200 {
        // An engine that ignored the upgrade streams over a plain response,
        // which cannot carry stdin (nor be half-closed).
        return Err(api(
            Some(status),
            "the engine answered 200 instead of upgrading the connection (101)".to_string(),
        ));
    }

    // An error: read its (small) body for the message, without waiting long.
    let mut body = response.into_body();
    let mut message = Vec::new();
    while message.len() < MAX_ERROR_BODY {
        match tokio::time::timeout(Duration::from_secs(2), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    message.extend_from_slice(data);
                }
            }
            _ => break,
        }
    }
    message.truncate(MAX_ERROR_BODY);
    Err(api(Some(status), error_message(&message)))
}

/// An error from hyper while waiting for the engine's answer.
fn answer_error(action: &str, err: hyper::Error) -> EngineError {
    let api = |message: String| EngineError::Api {
        action: action.to_string(),
        status: None,
        message,
    };
    if err.is_parse_too_large() {
        return api("the engine's answer has no end of headers".to_string());
    }
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return EngineError::io(
            action,
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the engine closed the connection",
            ),
        );
    }
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return EngineError::io(action, std::io::Error::new(io.kind(), io.to_string()));
        }
        source = cause.source();
    }
    api(err.to_string())
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
    //! A fake engine on a unix socket in a temporary directory.

    use std::path::PathBuf;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;
    use tokio::sync::oneshot;

    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    fn engine() -> (tempfile::TempDir, PathBuf, UnixListener) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("engine.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        (dir, path, listener)
    }

    /// Accept one connection and read one request: its head and its body
    /// (by `Content-Length`).
    async fn request(listener: &UnixListener) -> (UnixStream, String, Vec<u8>) {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).await.expect("read"), 1, "closed");
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).expect("utf-8");
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().expect("length"))
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.expect("body");
        (stream, head, body)
    }

    fn has_header(head: &str, name: &str, value: &str) -> bool {
        head.lines().any(|line| {
            line.split_once(':').is_some_and(|(n, v)| {
                n.eq_ignore_ascii_case(name) && v.trim().eq_ignore_ascii_case(value)
            })
        })
    }

    #[tokio::test]
    async fn attach_keeps_the_bytes_after_the_101_and_the_raw_socket() {
        let (_dir, path, listener) = engine();
        // Output that starts with bytes 0–2 (as a multiplexed frame header
        // would), sent in the same write as the head.
        let output: &[u8] = b"\x01\x00\x00\x00\x00\x00\x00\x05hello\x00\x02raw";
        let fake = tokio::spawn(async move {
            let (mut stream, head, body) = request(&listener).await;
            let mut answer = b"HTTP/1.1 101 UPGRADED\r\n\
                Content-Type: application/vnd.docker.multiplexed-stream\r\n\
                Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
                .to_vec();
            answer.extend_from_slice(output);
            stream.write_all(&answer).await.expect("answer");
            // stdin until the client's half-close, then a last word.
            let mut stdin = Vec::new();
            stream.read_to_end(&mut stdin).await.expect("stdin");
            stream.write_all(b"after EOF").await.expect("write");
            (head, body, stdin)
        });
        let attached = tokio::time::timeout(LIMIT, attach(&path, "1.41", "abc", true))
            .await
            .expect("in time")
            .expect("attach");
        // Sent in one write with the head: hyper read it along with the head.
        assert!(
            !attached.leftover.is_empty(),
            "the bytes after the head are kept"
        );
        let (mut reader, mut writer) = attached.stream.into_split();
        writer.write_all(b"input").await.expect("stdin");
        writer.shutdown().await.expect("half-close");
        let mut rest = Vec::new();
        tokio::time::timeout(LIMIT, reader.read_to_end(&mut rest))
            .await
            .expect("in time")
            .expect("read");
        let mut seen = attached.leftover;
        seen.extend_from_slice(&rest);
        let mut expected = output.to_vec();
        expected.extend_from_slice(b"after EOF");
        assert_eq!(seen, expected, "byte-exact output");

        let (head, body, stdin) = fake.await.expect("fake engine");
        assert!(
            head.starts_with(
                "POST /v1.41/containers/abc/attach?stream=1&stdin=1&stdout=1&stderr=1 HTTP/1.1\r\n"
            ),
            "{head}"
        );
        for (name, value) in [
            ("host", "localhost"),
            ("content-type", "text/plain"),
            ("content-length", "0"),
            ("connection", "upgrade"),
            ("upgrade", "tcp"),
        ] {
            assert!(has_header(&head, name, value), "{name}: {head}");
        }
        assert!(body.is_empty());
        assert_eq!(stdin, b"input", "stdin, then a real half-close");
    }

    #[tokio::test]
    async fn exec_start_sends_its_body_and_takes_an_empty_leftover() {
        let (_dir, path, listener) = engine();
        let fake = tokio::spawn(async move {
            let (mut stream, head, body) = request(&listener).await;
            stream
                .write_all(b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n")
                .await
                .expect("answer");
            // Later output arrives on the raw socket.
            tokio::time::sleep(Duration::from_millis(50)).await;
            stream.write_all(b"\x00later").await.expect("write");
            (head, body)
        });
        let attached = tokio::time::timeout(LIMIT, exec_start(&path, "1.41", "e1", true))
            .await
            .expect("in time")
            .expect("exec start");
        let mut stream = attached.stream;
        let mut seen = attached.leftover;
        tokio::time::timeout(LIMIT, stream.read_to_end(&mut seen))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(seen, b"\x00later");
        let (head, body) = fake.await.expect("fake engine");
        assert!(
            head.starts_with("POST /v1.41/exec/e1/start HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(
            has_header(&head, "content-type", "application/json"),
            "{head}"
        );
        assert!(has_header(&head, "content-length", "27"), "{head}");
        assert_eq!(body, br#"{"Detach":false,"Tty":true}"#);
    }

    async fn hijack_answered(answer: &'static [u8]) -> EngineError {
        let (_dir, path, listener) = engine();
        tokio::spawn(async move {
            let (mut stream, _, _) = request(&listener).await;
            stream.write_all(answer).await.expect("answer");
            // Keep the connection open a while (a close-delimited body ends
            // only at the 2 s read timeout).
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        match tokio::time::timeout(LIMIT, attach(&path, "1.41", "abc", false))
            .await
            .expect("in time")
        {
            Ok(_) => panic!("attached after {:?}", String::from_utf8_lossy(answer)),
            Err(err) => err,
        }
    }

    #[tokio::test]
    async fn attach_errors_carry_the_engine_message() {
        let sized = hijack_answered(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
              Content-Length: 60\r\n\r\n\
              {\"message\":\"exec: \\\"nope\\\": executable file not found\"}\n\n\n\n\n",
        )
        .await;
        assert_eq!(sized.status(), Some(500));
        assert_eq!(
            sized.to_string(),
            "attaching to container abc: exec: \"nope\": executable file not found"
        );
        let chunked = hijack_answered(
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n\
              18\r\n{\"message\":\"no such id\"}\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(chunked.status(), Some(404));
        assert!(chunked.to_string().ends_with(": no such id"), "{chunked}");
        let close_delimited = hijack_answered(b"HTTP/1.1 409 Conflict\r\n\r\nnot running\n").await;
        assert_eq!(close_delimited.status(), Some(409));
        assert!(
            close_delimited.to_string().ends_with(": not running"),
            "{close_delimited}"
        );
    }

    #[tokio::test]
    async fn attach_refuses_what_is_not_an_upgrade() {
        let plain = hijack_answered(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n",
        )
        .await;
        assert_eq!(plain.status(), Some(200));
        let garbage = hijack_answered(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        assert_eq!(garbage.status(), None, "{garbage}");
        let mut endless = b"HTTP/1.1 101 UPGRADED\r\n".to_vec();
        while endless.len() <= 2 * MAX_HEAD {
            endless.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let endless: &'static [u8] = endless.leak();
        let too_long = hijack_answered(endless).await;
        assert!(
            too_long
                .to_string()
                .ends_with("the engine's answer has no end of headers"),
            "{too_long}"
        );
    }

    #[tokio::test]
    async fn attach_to_an_engine_that_hangs_up() {
        let (_dir, path, listener) = engine();
        tokio::spawn(async move {
            let _ = request(&listener).await;
        });
        let err = tokio::time::timeout(LIMIT, attach(&path, "1.41", "abc", false))
            .await
            .expect("in time")
            .err()
            .expect("closed");
        match err {
            EngineError::Io { source, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::UnexpectedEof)
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn wait_returns_once_the_headers_arrived_then_the_status() {
        let (_dir, path, listener) = engine();
        let (head_tx, head_rx) = oneshot::channel::<()>();
        let (body_tx, body_rx) = oneshot::channel::<()>();
        let fake = tokio::spawn(async move {
            let (mut stream, head, _) = request(&listener).await;
            head_rx.await.expect("go: head");
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                      Transfer-Encoding: chunked\r\n\r\n",
                )
                .await
                .expect("head");
            body_rx.await.expect("go: body");
            stream
                .write_all(b"1e\r\n{\"StatusCode\":3,\"Error\":null}\n\r\n0\r\n\r\n")
                .await
                .expect("body");
            head
        });
        let registering = wait(&path, "1.41", "abc", "next-exit");
        tokio::pin!(registering);
        // No headers yet: the wait is not known to be registered.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut registering)
                .await
                .is_err(),
            "wait returned before the engine's headers"
        );
        head_tx.send(()).expect("head");
        let outcome = tokio::time::timeout(LIMIT, registering)
            .await
            .expect("in time")
            .expect("registered");
        // The headers are in, the body (the exit) is not.
        let outcome = tokio::spawn(outcome);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!outcome.is_finished(), "the status came before the exit");
        body_tx.send(()).expect("body");
        let status = tokio::time::timeout(LIMIT, outcome)
            .await
            .expect("in time")
            .expect("joined")
            .expect("status");
        assert_eq!(status, 3);
        let head = fake.await.expect("fake engine");
        assert!(
            head.starts_with("POST /v1.41/containers/abc/wait?condition=next-exit HTTP/1.1\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn wait_error_is_an_api_error() {
        let (_dir, path, listener) = engine();
        tokio::spawn(async move {
            let (mut stream, _, _) = request(&listener).await;
            let body = br#"{"message":"No such container: abc"}"#;
            let head = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.expect("head");
            stream.write_all(body).await.expect("body");
        });
        let err = match tokio::time::timeout(LIMIT, wait(&path, "1.41", "abc", "next-exit"))
            .await
            .expect("in time")
        {
            Ok(_) => panic!("registered"),
            Err(err) => err,
        };
        assert_eq!(err.status(), Some(404));
        assert!(
            err.to_string().ends_with(": No such container: abc"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn get_json_reads_found_and_missing() {
        let (_dir, path, listener) = engine();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{\"Version\":\"1\"}\n",
                "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 16\r\n\r\n{\"message\":\"no\"}",
            ] {
                let (mut stream, _, _) = request(&listener).await;
                stream.write_all(answer.as_bytes()).await.expect("answer");
            }
        });
        let found = get_json_if_found(&path, "/version").await.expect("found");
        assert_eq!(found, Some(serde_json::json!({ "Version": "1" })));
        assert_eq!(get_json_if_found(&path, "/x").await.expect("404"), None);
        let err = get_json(&path, "/y").await.expect_err("500");
        assert_eq!(err, "500 Internal Server Error: no");
    }

    #[test]
    fn queries_are_form_encoded() {
        assert_eq!(
            query([("condition", "next-exit"), ("x", "a b&c=d/é")]),
            "condition=next-exit&x=a+b%26c%3Dd%2F%C3%A9"
        );
    }
}
