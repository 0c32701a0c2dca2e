//! Images: list, aliases, import of a split image, delete, publish.

use std::io;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt, stream};
use http_body_util::{BodyExt, StreamBody};
use hyper::Method;
use hyper::body::Frame;
use hyper::header::{self, HeaderName, HeaderValue};
use serde_json::json;
use tokio::io::AsyncReadExt;

use crate::client::{Client, segment};
use crate::error::IncusError;
use crate::transport::RequestBody;
use crate::types::{Image, ImageAlias, Operation};

/// Bytes read from a file per chunk of an upload.
const UPLOAD_CHUNK: usize = 256 * 1024;

impl Client {
    /// Every image of the project, with its aliases.
    pub async fn images(&self) -> Result<Vec<Image>, IncusError> {
        self.get("listing images", "/1.0/images?recursion=1").await
    }

    pub async fn image(&self, fingerprint: &str) -> Result<Image, IncusError> {
        self.get(
            &format!("reading image {fingerprint}"),
            &format!("/1.0/images/{}", segment(fingerprint)),
        )
        .await
    }

    /// What an alias names.
    pub async fn image_alias(&self, name: &str) -> Result<ImageAlias, IncusError> {
        self.get(
            &format!("reading image alias {name}"),
            &format!("/1.0/images/aliases/{}", segment(name)),
        )
        .await
    }

    /// Import a split image: a metadata tarball (`metadata.yaml` with
    /// `architecture` and `creation_date`) and a rootfs tarball, streamed
    /// from disk. Its fingerprint is the SHA-256 of the two files in that
    /// order. Returns the new image.
    pub async fn import_image(
        &self,
        metadata_tarball: &Path,
        rootfs_tarball: &Path,
        alias: Option<&str>,
    ) -> Result<Image, IncusError> {
        let action = format!(
            "importing image {} + {}",
            metadata_tarball.display(),
            rootfs_tarball.display()
        );
        let (body, length) = multipart_upload(metadata_tarball, rootfs_tarball).await?;
        let mut headers = vec![(
            header::CONTENT_TYPE,
            header_value(
                &action,
                &format!("multipart/form-data; boundary={BOUNDARY}"),
            )?,
        )];
        if let Some(alias) = alias {
            let aliases = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("alias", alias)
                .finish();
            headers.push((
                HeaderName::from_static("x-incus-aliases"),
                header_value(&action, &aliases)?,
            ));
        }
        let operation = self
            .start_operation(
                &action,
                Method::POST,
                "/1.0/images",
                headers,
                RequestBody::Stream { body, length },
            )
            .await?;
        let done = self
            .wait(&action, &operation, self.operation_timeout())
            .await?;
        let fingerprint = operation_fingerprint(&action, &done)?;
        self.image(&fingerprint).await
    }

    pub async fn delete_image(&self, fingerprint: &str) -> Result<(), IncusError> {
        self.operation(
            &format!("deleting image {fingerprint}"),
            Method::DELETE,
            &format!("/1.0/images/{}", segment(fingerprint)),
            RequestBody::Empty,
        )
        .await
        .map(|_| ())
    }

    pub async fn add_image_alias(
        &self,
        name: &str,
        fingerprint: &str,
        description: &str,
    ) -> Result<(), IncusError> {
        self.sync(
            &format!("adding image alias {name}"),
            Method::POST,
            "/1.0/images/aliases",
            RequestBody::json(&json!({
                "name": name,
                "target": fingerprint,
                "description": description,
            }))?,
        )
        .await
    }

    pub async fn remove_image_alias(&self, name: &str) -> Result<(), IncusError> {
        self.sync(
            &format!("removing image alias {name}"),
            Method::DELETE,
            &format!("/1.0/images/aliases/{}", segment(name)),
            RequestBody::Empty,
        )
        .await
    }

    /// Make an image of a (stopped) instance's root file system, aliased
    /// `alias`. Returns the new image.
    pub async fn publish_instance(
        &self,
        instance: &str,
        alias: Option<&str>,
        properties: &[(&str, &str)],
    ) -> Result<Image, IncusError> {
        let action = format!("publishing instance {instance}");
        let aliases: Vec<_> = alias.iter().map(|name| json!({ "name": name })).collect();
        let properties: serde_json::Map<_, _> = properties
            .iter()
            .map(|(key, value)| (key.to_string(), json!(value)))
            .collect();
        let done = self
            .operation(
                &action,
                Method::POST,
                "/1.0/images",
                RequestBody::json(&json!({
                    "source": { "type": "instance", "name": instance },
                    "aliases": aliases,
                    "properties": properties,
                    // Compressing takes longer than the image saves
                    // (kennel's imports are uncompressed too).
                    "compression_algorithm": "none",
                }))?,
            )
            .await?;
        let fingerprint = operation_fingerprint(&action, &done)?;
        self.image(&fingerprint).await
    }
}

/// The new image's fingerprint, from its operation's metadata.
fn operation_fingerprint(action: &str, operation: &Operation) -> Result<String, IncusError> {
    operation
        .metadata
        .as_ref()
        .and_then(|metadata| metadata.get("fingerprint"))
        .and_then(|value| value.as_str())
        .map(str::to_string)
        .ok_or_else(|| IncusError::protocol(action, "the operation names no image fingerprint"))
}

fn header_value(action: &str, value: &str) -> Result<HeaderValue, IncusError> {
    HeaderValue::from_str(value).map_err(|err| IncusError::protocol(action, err.to_string()))
}

/// Long enough that no tarball holds it by chance.
const BOUNDARY: &str = "kennel-incus-0b7f4e1d9c2a46a8b5e3f6d1c0a9e8b7-split-image";

/// The form incusd reads for a split image: part `metadata`, then part
/// `rootfs`, each a file. Streamed, with the length known up front.
async fn multipart_upload(
    metadata: &Path,
    rootfs: &Path,
) -> Result<(crate::transport::StreamBody, u64), IncusError> {
    let part_head = |field: &str, path: &Path| {
        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().replace('"', "_"))
            .unwrap_or_else(|| field.to_string());
        Bytes::from(format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ))
    };
    let metadata_head = part_head("metadata", metadata);
    let rootfs_head = {
        let mut head = BytesMut::from(&b"\r\n"[..]);
        head.extend_from_slice(&part_head("rootfs", rootfs));
        head.freeze()
    };
    let tail = Bytes::from(format!("\r\n--{BOUNDARY}--\r\n"));

    let open = |path: &Path| {
        let path = path.to_path_buf();
        async move {
            let file = tokio::fs::File::open(&path)
                .await
                .map_err(|err| IncusError::io(&format!("opening {}", path.display()), err))?;
            let length = file
                .metadata()
                .await
                .map_err(|err| IncusError::io(&format!("reading {}", path.display()), err))?
                .len();
            Ok::<_, IncusError>((file, length))
        }
    };
    let (metadata_file, metadata_length) = open(metadata).await?;
    let (rootfs_file, rootfs_length) = open(rootfs).await?;
    let length = [&metadata_head, &rootfs_head, &tail]
        .iter()
        .map(|part| part.len() as u64)
        .sum::<u64>()
        + metadata_length
        + rootfs_length;

    let chunks = stream::iter([Ok::<_, io::Error>(metadata_head)])
        .chain(file_chunks(metadata_file))
        .chain(stream::iter([Ok(rootfs_head)]))
        .chain(file_chunks(rootfs_file))
        .chain(stream::iter([Ok(tail)]));
    let body = BodyExt::boxed(StreamBody::new(chunks.map_ok(Frame::data)));
    Ok((body, length))
}

fn file_chunks(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    stream::try_unfold(file, |mut file| async move {
        let mut chunk = BytesMut::with_capacity(UPLOAD_CHUNK);
        let read = file.read_buf(&mut chunk).await?;
        if read == 0 {
            Ok(None)
        } else {
            Ok(Some((chunk.freeze(), file)))
        }
    })
}
