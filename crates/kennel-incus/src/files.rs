//! Files in an instance: `/1.0/instances/<name>/files?path=`.

use bytes::Bytes;
use hyper::Method;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::client::{Client, segment};
use crate::error::IncusError;
use crate::transport::RequestBody;
use crate::types::{FileSpec, PulledFile};

impl Client {
    /// Write a file (replacing one that is there) with this mode and owner.
    /// Its directory must exist. `uid`/`gid` are the instance's own ids.
    pub async fn push_file(
        &self,
        instance: &str,
        path: &str,
        content: impl Into<Bytes>,
        spec: &FileSpec,
    ) -> Result<(), IncusError> {
        let action = format!("writing {path} in instance {instance}");
        let header = |name: &'static str, value: String| {
            HeaderValue::from_str(&value)
                .map(|value| (HeaderName::from_static(name), value))
                .map_err(|err| IncusError::protocol(&action, err.to_string()))
        };
        let headers = vec![
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            ),
            header("x-incus-type", "file".to_string())?,
            header("x-incus-write", "overwrite".to_string())?,
            // Octal with a leading 0: Incus reads it with base detection.
            header("x-incus-mode", format!("{:04o}", spec.mode & 0o7777))?,
            header("x-incus-uid", spec.uid.to_string())?,
            header("x-incus-gid", spec.gid.to_string())?,
        ];
        self.call(
            &action,
            Method::POST,
            &files_path(instance, path),
            headers,
            RequestBody::Bytes(content.into()),
            None,
        )
        .await?
        .envelope(&action)
        .map(|_| ())
    }

    /// Read a regular file, with its mode and owner.
    pub async fn pull_file(&self, instance: &str, path: &str) -> Result<PulledFile, IncusError> {
        let action = format!("reading {path} in instance {instance}");
        let answer = self
            .call(
                &action,
                Method::GET,
                &files_path(instance, path),
                Vec::new(),
                RequestBody::Empty,
                None,
            )
            .await?;
        answer.check_status(&action)?;
        let kind = header_text(&answer.headers, "x-incus-type");
        if kind.as_deref().is_some_and(|kind| kind != "file") {
            return Err(IncusError::protocol(
                &action,
                format!(
                    "{path} is a {}, not a regular file",
                    kind.unwrap_or_default()
                ),
            ));
        }
        Ok(PulledFile {
            content: answer.body.to_vec(),
            mode: header_text(&answer.headers, "x-incus-mode")
                .and_then(|mode| u32::from_str_radix(&mode, 8).ok()),
            uid: header_text(&answer.headers, "x-incus-uid").and_then(|uid| uid.parse().ok()),
            gid: header_text(&answer.headers, "x-incus-gid").and_then(|gid| gid.parse().ok()),
        })
    }
}

fn files_path(instance: &str, path: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("path", path)
        .finish();
    format!("/1.0/instances/{}/files?{query}", segment(instance))
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}
