//! Unpacking a feature's layer, in memory.
//!
//! Anyone can publish a feature, so the archive is read as hostile input:
//! nothing touches the file system here, every path is normalised and
//! checked, only regular files and directories are accepted, and the entry
//! count and byte totals are capped before the bytes are read. The caller
//! gets plain data it can review and write where it likes.

use std::collections::BTreeSet;
use std::io::{self, Read};

use crate::{FeatureFile, OciError};

/// More entries than any real feature has; bounds the work a tiny archive of
/// empty entries can cause.
pub(crate) const MAX_ENTRIES: usize = 2000;
/// The most file content a feature may unpack to.
pub(crate) const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;
/// The most bytes the (decompressed) tar stream may have: the content
/// limit plus room for headers, so a gzip bomb stops here too.
const MAX_STREAM_BYTES: u64 = MAX_TOTAL_BYTES + (MAX_ENTRIES as u64 + 16) * 2048;

/// The file every feature has at its root (containers.dev).
pub(crate) const FEATURE_JSON: &str = "devcontainer-feature.json";

/// How the layer's bytes are encoded, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
}

/// Unpacks a layer into its files, or refuses it naming the entry at fault.
pub(crate) fn unpack(
    reference: &str,
    bytes: &[u8],
    compression: Compression,
) -> Result<Vec<FeatureFile>, OciError> {
    let refuse = |entry: Option<&str>, reason: String| OciError::Layer {
        reference: reference.to_string(),
        entry: entry.map(str::to_string),
        reason,
    };
    let stream: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(bytes),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(bytes)),
    };
    let mut archive = tar::Archive::new(Capped {
        inner: stream,
        left: MAX_STREAM_BYTES,
    });

    let mut files: Vec<FeatureFile> = Vec::new();
    let mut file_paths: BTreeSet<String> = BTreeSet::new();
    let mut dir_paths: BTreeSet<String> = BTreeSet::new();
    let mut total: u64 = 0;
    let mut count = 0usize;

    let entries = archive
        .entries()
        .map_err(|e| refuse(None, format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| refuse(None, format!("broken tar archive: {e}")))?;
        count += 1;
        if count > MAX_ENTRIES {
            return Err(refuse(None, format!("more than {MAX_ENTRIES} entries")));
        }
        // The raw bytes, so that a non-UTF-8 name is refused rather than
        // mangled into a different path.
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();

        // A pax global header (git archive writes one) carries metadata,
        // not a file.
        if kind == tar::EntryType::XGlobalHeader {
            continue;
        }
        let path = normalize(&raw_path).map_err(|reason| refuse(Some(&shown), reason))?;

        match kind {
            tar::EntryType::Directory => {
                if !path.is_empty() {
                    dir_paths.insert(path);
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if path.is_empty() {
                    return Err(refuse(Some(&shown), "a file without a name".into()));
                }
                if !file_paths.insert(path.clone()) {
                    // tar would let the later copy win; refusing keeps what
                    // a reviewer reads and what runs the same.
                    return Err(refuse(Some(&shown), "the path appears twice".into()));
                }
                let size = entry.size();
                if size > MAX_TOTAL_BYTES.saturating_sub(total) {
                    return Err(refuse(
                        Some(&shown),
                        format!(
                            "the files add up to more than {} MiB",
                            MAX_TOTAL_BYTES >> 20
                        ),
                    ));
                }
                total += size;
                let mode = entry
                    .header()
                    .mode()
                    .map_err(|e| refuse(Some(&shown), format!("bad mode: {e}")))?;
                let mut content = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
                entry
                    .read_to_end(&mut content)
                    .map_err(|e| refuse(Some(&shown), format!("cannot read: {e}")))?;
                if content.len() as u64 != size {
                    return Err(refuse(
                        Some(&shown),
                        "the archive ends inside the file".into(),
                    ));
                }
                files.push(FeatureFile {
                    path,
                    // Permission bits only: setuid, setgid and sticky from
                    // a stranger's archive have no business in a sandbox.
                    mode: mode & 0o777,
                    content,
                });
            }
            other => {
                return Err(refuse(
                    Some(&shown),
                    format!(
                        "{} entries are not accepted, only regular files and directories",
                        kind_name(other)
                    ),
                ));
            }
        }
    }

    // A name that is both a file and a directory (`a` and `a/b`) cannot be
    // laid out; refuse rather than pick one.
    for file in &files {
        let mut prefix = file.path.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if file_paths.contains(parent) {
                return Err(refuse(
                    Some(parent),
                    format!("is a file, and also the directory of `{}`", file.path),
                ));
            }
            prefix = parent;
        }
        if dir_paths.contains(&file.path) {
            return Err(refuse(
                Some(&file.path),
                "is both a file and a directory".into(),
            ));
        }
    }

    if !file_paths.contains(FEATURE_JSON) {
        return Err(refuse(
            None,
            format!("there is no {FEATURE_JSON} at its root, so it is not a devcontainer feature"),
        ));
    }
    Ok(files)
}

/// The path relative to the feature's root: `./` and empty or `.`
/// components dropped, absolute paths and `..` refused.
fn normalize(raw: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "the path is not UTF-8".to_string())?;
    if text.starts_with('/') {
        return Err("absolute paths are not accepted".into());
    }
    if text.contains('\0') {
        return Err("the path holds a NUL byte".into());
    }
    let mut parts = Vec::new();
    for component in text.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("`..` components are not accepted".into()),
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

fn kind_name(kind: tar::EntryType) -> String {
    let name = match kind {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::GNUSparse => "sparse file",
        other => return format!("type '{}'", other.as_byte().escape_ascii()),
    };
    name.to_string()
}

/// A reader that fails, instead of ending quietly, once `left` bytes were
/// read: a truncated stream would read as a short archive.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Only an error if there is more to read.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(format!(
                    "the unpacked archive is larger than {} MiB",
                    MAX_STREAM_BYTES >> 20
                ))),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar with raw names, so that hostile entries can be written.
    fn tar(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            header.set_entry_type(*kind);
            header.set_mode(0o4755);
            header.set_size(data.len() as u64);
            if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
                header.set_size(0);
                header.as_old_mut().linkname[..6].copy_from_slice(b"target");
            }
            header.set_cksum();
            let body: &[u8] = if header.entry_size().unwrap_or(0) == 0 {
                &[]
            } else {
                data
            };
            builder.append(&header, body).expect("append");
        }
        builder.into_inner().expect("finish")
    }

    const JSON: (&str, tar::EntryType, &[u8]) = (
        "./devcontainer-feature.json",
        tar::EntryType::Regular,
        b"{}",
    );

    fn refused(bytes: &[u8]) -> (Option<String>, String) {
        match unpack("r", bytes, Compression::None) {
            Err(OciError::Layer { entry, reason, .. }) => (entry, reason),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn normalises_paths_and_drops_special_mode_bits() {
        let bytes = tar(&[
            ("./", tar::EntryType::Directory, b""),
            JSON,
            ("./lib/", tar::EntryType::Directory, b""),
            ("lib//./x.sh", tar::EntryType::Regular, b"echo"),
        ]);
        let files = unpack("r", &bytes, Compression::None).expect("unpacks");
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["devcontainer-feature.json", "lib/x.sh"]);
        assert_eq!(files[1].mode, 0o755);
        assert_eq!(files[1].content, b"echo");
    }

    #[test]
    fn refuses_absolute_dotdot_links_and_devices() {
        let (entry, reason) = refused(&tar(&[
            JSON,
            ("/etc/passwd", tar::EntryType::Regular, b"x"),
        ]));
        assert_eq!(entry.as_deref(), Some("/etc/passwd"));
        assert!(reason.contains("absolute"), "{reason}");

        let (entry, reason) = refused(&tar(&[JSON, ("a/../../x", tar::EntryType::Regular, b"x")]));
        assert_eq!(entry.as_deref(), Some("a/../../x"));
        assert!(reason.contains(".."), "{reason}");

        for (kind, word) in [
            (tar::EntryType::Symlink, "symbolic link"),
            (tar::EntryType::Link, "hard link"),
            (tar::EntryType::Char, "character device"),
            (tar::EntryType::Block, "block device"),
            (tar::EntryType::Fifo, "FIFO"),
        ] {
            let (entry, reason) = refused(&tar(&[JSON, ("install.sh", kind, b"")]));
            assert_eq!(entry.as_deref(), Some("install.sh"));
            assert!(reason.contains(word), "{reason}");
        }
    }

    #[test]
    fn refuses_duplicates_and_file_directory_clashes() {
        let (entry, reason) = refused(&tar(&[
            JSON,
            ("a", tar::EntryType::Regular, b"1"),
            ("./a", tar::EntryType::Regular, b"2"),
        ]));
        assert_eq!(entry.as_deref(), Some("./a"));
        assert!(reason.contains("twice"), "{reason}");

        let (entry, _) = refused(&tar(&[
            JSON,
            ("a", tar::EntryType::Regular, b"1"),
            ("a/b", tar::EntryType::Regular, b"2"),
        ]));
        assert_eq!(entry.as_deref(), Some("a"));

        let (entry, _) = refused(&tar(&[
            JSON,
            ("a/", tar::EntryType::Directory, b""),
            ("a", tar::EntryType::Regular, b"2"),
        ]));
        assert_eq!(entry.as_deref(), Some("a"));
    }

    #[test]
    fn requires_the_feature_json_at_the_root() {
        let (entry, reason) = refused(&tar(&[(
            "sub/devcontainer-feature.json",
            tar::EntryType::Regular,
            b"{}",
        )]));
        assert_eq!(entry, None);
        assert!(reason.contains(FEATURE_JSON), "{reason}");
    }

    #[test]
    fn caps_the_entry_count() {
        let names: Vec<String> = (0..MAX_ENTRIES).map(|i| format!("d{i}/")).collect();
        let mut entries: Vec<(&str, tar::EntryType, &[u8])> = vec![JSON];
        entries.extend(
            names
                .iter()
                .map(|n| (n.as_str(), tar::EntryType::Directory, &b""[..])),
        );
        let (_, reason) = refused(&tar(&entries));
        assert!(reason.contains("entries"), "{reason}");
        // One fewer is fine.
        entries.pop();
        unpack("r", &tar(&entries), Compression::None).expect("2000 entries are accepted");
    }

    #[test]
    fn caps_the_total_size() {
        // Headers that claim more than the cap are refused before any read.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_path("big").expect("path");
        header.set_size(MAX_TOTAL_BYTES + 1);
        header.set_cksum();
        builder
            .append(&header, io::repeat(0).take(MAX_TOTAL_BYTES + 1))
            .expect("append");
        let (entry, reason) = refused(&builder.into_inner().expect("finish"));
        assert_eq!(entry.as_deref(), Some("big"));
        assert!(reason.contains("MiB"), "{reason}");
    }

    #[test]
    fn gzip_layers_unpack_and_bombs_stop() {
        use flate2::{Compression as Level, write::GzEncoder};
        use std::io::Write;
        let gz = |bytes: &[u8]| {
            let mut encoder = GzEncoder::new(Vec::new(), Level::default());
            encoder.write_all(bytes).expect("gzip");
            encoder.finish().expect("gzip")
        };
        let files = unpack("r", &gz(&tar(&[JSON])), Compression::Gzip).expect("gzip unpacks");
        assert_eq!(files.len(), 1);

        // A pax header that claims 100 MiB: tar buffers such headers whole,
        // so only the cap on the decompressed stream stops it.
        let mut header = tar::Header::new_ustar();
        header.set_path("pax").expect("path");
        header.set_entry_type(tar::EntryType::XHeader);
        header.set_size(100 * 1024 * 1024);
        header.set_cksum();
        let mut encoder = GzEncoder::new(Vec::new(), Level::fast());
        encoder.write_all(header.as_bytes()).expect("gzip");
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..100 {
            encoder.write_all(&zeros).expect("gzip");
        }
        let bomb = encoder.finish().expect("gzip");
        assert!(
            bomb.len() < 1024 * 1024,
            "the bomb is small: {}",
            bomb.len()
        );
        let (_, reason) = match unpack("r", &bomb, Compression::Gzip) {
            Err(OciError::Layer { entry, reason, .. }) => (entry, reason),
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(reason.contains("larger than"), "{reason}");
    }

    #[test]
    fn not_a_tar_is_refused() {
        let (_, reason) = refused(b"this is not a tar archive at all, just some text");
        assert!(!reason.is_empty());
    }
}
