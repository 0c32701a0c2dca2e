//! The JSON-lines decision log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ProxyError;

/// One connection (CONNECT tunnel) or one forwarded plain-HTTP request, as
/// logged when it ends (denials: immediately).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// When the request arrived, RFC 3339 UTC with milliseconds.
    pub time: String,
    pub session: String,
    /// `CONNECT`, `GET`, `POST`, …
    pub method: String,
    /// The requested host, lower-cased (IP literals in canonical form).
    pub host: String,
    pub port: u16,
    /// The address connected to (or, for a denial, the address that was refused).
    pub addr: Option<IpAddr>,
    /// `allow` or `deny`.
    pub verdict: String,
    /// For a denial, a reason code (`not-allowlisted`, `private-address`, …,
    /// see [`crate::Reason`]); for an allowed connection, why it was allowed
    /// (`allowlisted`, `public-address`, `open`, `trusted-address`).
    pub reason: String,
    /// Human-readable detail (which address was refused, what SNI was seen, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The upstream proxy this connection went through, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The brokered credential injected into this request (several:
    /// comma-separated), or the one it was refused for. Never its value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Bytes from the sandbox to the destination (tunnel payload, or request body).
    pub bytes_up: u64,
    /// Bytes from the destination to the sandbox (tunnel payload, or response body).
    pub bytes_down: u64,
    #[serde(default)]
    pub duration_ms: u64,
}

impl Decision {
    pub fn is_denied(&self) -> bool {
        self.verdict == "deny"
    }
}

/// Read a decision log written by the proxy. A final line without a newline
/// (a record cut off by a crash) is ignored; any other malformed line is an
/// error.
pub fn read_log(path: &Path) -> Result<Vec<Decision>, ProxyError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProxyError::LogFile {
        path: path.to_path_buf(),
        source,
    })?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::with_capacity(lines.len());
    for (index, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(decision) => out.push(decision),
            Err(_) if !complete && index + 1 == lines.len() => break,
            Err(source) => {
                return Err(ProxyError::LogParse {
                    path: path.to_path_buf(),
                    line: index + 1,
                    source,
                });
            }
        }
    }
    Ok(out)
}

pub(crate) struct LogSink {
    file: Option<(PathBuf, Mutex<File>)>,
}

impl LogSink {
    pub(crate) fn open(path: Option<&Path>) -> Result<Self, ProxyError> {
        let Some(path) = path else {
            return Ok(Self { file: None });
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| ProxyError::LogFile {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            file: Some((path.to_path_buf(), Mutex::new(file))),
        })
    }

    pub(crate) fn write(&self, decision: &Decision) {
        tracing::debug!(
            host = %decision.host,
            port = decision.port,
            verdict = %decision.verdict,
            reason = %decision.reason,
            "proxy decision"
        );
        let Some((path, file)) = &self.file else {
            return;
        };
        let mut line = match serde_json::to_vec(decision) {
            Ok(line) => line,
            Err(error) => {
                tracing::warn!(%error, "cannot serialize a proxy decision");
                return;
            }
        };
        line.push(b'\n');
        // One write of a whole line on an O_APPEND file: records never interleave.
        let mut file = match file.lock() {
            Ok(file) => file,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(error) = file.write_all(&line) {
            tracing::warn!(%error, path = %path.display(), "cannot write the proxy decision log");
        }
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-04-01T12:00:00.123Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let millis = since.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_007);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.007Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn read_log_skips_a_torn_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.jsonl");
        let sink = LogSink::open(Some(&path)).expect("open");
        let decision = Decision {
            time: rfc3339(SystemTime::now()),
            session: "s".into(),
            method: "GET".into(),
            host: "example.com".into(),
            port: 80,
            addr: Some("93.184.216.34".parse().expect("ip")),
            verdict: "allow".into(),
            reason: "allowlisted".into(),
            detail: String::new(),
            via: None,
            credential: None,
            bytes_up: 1,
            bytes_down: 2,
            duration_ms: 3,
        };
        sink.write(&decision);
        sink.write(&decision);
        let mode = std::fs::metadata(&path).expect("meta");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        let mut file = OpenOptions::new().append(true).open(&path).expect("reopen");
        file.write_all(b"{\"time\":").expect("torn");
        assert_eq!(
            read_log(&path).expect("read"),
            vec![decision.clone(), decision]
        );
        file.write_all(b"\n").expect("newline");
        assert!(matches!(
            read_log(&path),
            Err(ProxyError::LogParse { line: 3, .. })
        ));
    }
}
