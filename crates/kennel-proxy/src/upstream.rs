//! Chaining to an upstream HTTP proxy.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ProxyError;

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
    pub(crate) fn parse(url: &str) -> Result<Self, ProxyError> {
        let bad = |why: &str| ProxyError::BadUpstream {
            url: redact(url),
            why: why.to_string(),
        };
        let rest = url.trim();
        let rest = match rest.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some(_) => return Err(bad("only http:// upstream proxies are supported")),
            None => rest,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(bad("expected http://host:port"));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((user, hostport)) => (Some(user), hostport),
            None => (None, rest),
        };
        let (host, port) =
            split_host_port(hostport, 80).ok_or_else(|| bad("expected http://host:port"))?;
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let auth =
            userinfo.map(|user| format!("Basic {}", base64(percent_decode(user).as_bytes())));
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
    /// stream. Returns bytes the upstream sent after its response head.
    pub(crate) async fn open_tunnel(
        &self,
        stream: &mut TcpStream,
        authority: &str,
    ) -> Result<Vec<u8>, String> {
        let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(auth) = &self.auth {
            head.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| format!("upstream proxy {}: {e}", self.display))?;
        let read = async {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 4096];
            loop {
                let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed the connection".to_string());
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = find_head_end(&buf) {
                    return Ok((buf, end));
                }
                if buf.len() > MAX_HEAD {
                    return Err("response head too long".to_string());
                }
            }
        };
        let (buf, end) = match tokio::time::timeout(HEAD_TIMEOUT, read).await {
            Ok(Ok(found)) => found,
            Ok(Err(why)) => return Err(format!("upstream proxy {}: {why}", self.display)),
            Err(_) => {
                return Err(format!(
                    "upstream proxy {}: no answer to CONNECT",
                    self.display
                ));
            }
        };
        let status_line = String::from_utf8_lossy(&buf[..end])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok());
        match status {
            Some(code) if (200..300).contains(&code) => Ok(buf[end..].to_vec()),
            _ => Err(format!(
                "upstream proxy {} answered {status_line:?}",
                self.display
            )),
        }
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Split `host:port`, `[v6]:port`, `host` (default port).
pub(crate) fn split_host_port(text: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_string(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host.to_string(), port.parse().ok()?)),
        Some(_) => None, // bare IPv6 without brackets
        None => Some((text.to_string(), default_port)),
    }
}

fn redact(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((before, after)) => match before.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***@{after}"),
            None => format!("***@{after}"),
        },
        None => url.to_string(),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = Upstream::parse("http://proxy.corp:3128").expect("parse");
        assert_eq!(
            (u.host.as_str(), u.port, u.auth.is_none()),
            ("proxy.corp", 3128, true)
        );
        let u = Upstream::parse("http://user:p%40ss@[::1]:8080/").expect("parse");
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.auth.as_deref(), Some("Basic dXNlcjpwQHNz"));
        assert_eq!(u.display, "[::1]:8080");
        let u = Upstream::parse("127.0.0.1").expect("parse");
        assert_eq!(u.port, 80);
        assert!(Upstream::parse("https://proxy:443").is_err());
        assert!(Upstream::parse("http://proxy:99999").is_err());
        assert!(Upstream::parse("http://proxy:1/path").is_err());
        let err = Upstream::parse("socks5://u:secret@h:1").expect_err("scheme");
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn base64_matches_rfc4648() {
        for (input, output) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), output);
        }
    }

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("a.b:1", 80), Some(("a.b".into(), 1)));
        assert_eq!(split_host_port("a.b", 80), Some(("a.b".into(), 80)));
        assert_eq!(split_host_port("[::1]:5", 80), Some(("::1".into(), 5)));
        assert_eq!(split_host_port("[::1]", 80), Some(("::1".into(), 80)));
        assert_eq!(split_host_port("::1", 80), None);
        assert_eq!(split_host_port("a:b", 80), None);
    }
}
