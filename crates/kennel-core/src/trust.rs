//! Which project config files the user has trusted, by exact content.
//!
//! Trust is keyed by the file's path as found (its directory canonical, the
//! file itself never resolved) and the SHA-256 of its bytes, so editing a
//! trusted file (by hand or by an agent) revokes the trust, and a link to a
//! trusted file in another repository borrows nothing: a project config that
//! is a symbolic link is refused ([`read_config_file`]), never followed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read the trust store {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the trust store {path} is damaged: {message}")]
    Damaged { path: PathBuf, message: String },
    #[error("cannot write the trust store {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    /// None for an in-memory store (tests).
    file: Option<PathBuf>,
    entries: BTreeMap<String, String>,
}

pub fn content_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The path as found: its directory resolved (the workspace's own path,
/// which the agent does not control), its last component never.
fn key_for(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .unwrap_or_else(|_| parent.to_path_buf())
            .join(name),
        _ => absolute,
    }
    .display()
    .to_string()
}

/// The largest project config kennel reads.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a config file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("it is a symbolic link (kennel never follows a link in a repository)")]
    Link,
    #[error("it is not a regular file")]
    NotFile,
    #[error("it is larger than {MAX_CONFIG_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    Io(std::io::Error),
}

/// Reads a config file that an agent may have written (a repository's
/// `.kennel.toml`) without following a link: one open file descriptor,
/// opened with `O_NOFOLLOW` (a link is [`ReadError::Link`], whatever it
/// points at) and `O_NONBLOCK` (a FIFO does not hang kennel), checked to be
/// a regular file of at most [`MAX_CONFIG_BYTES`] and read through that
/// same descriptor, so the file cannot be swapped between check and read.
/// `Ok(None)`: there is no such file.
pub fn read_config_file(path: &Path) -> Result<Option<Vec<u8>>, ReadError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) if error.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(ReadError::Link);
        }
        Err(error) => return Err(ReadError::Io(error)),
    };
    let meta = file.metadata().map_err(ReadError::Io)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(ReadError::Link);
    }
    if !kind.is_file() || kind.is_fifo() {
        return Err(ReadError::NotFile);
    }
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(ReadError::TooLarge);
    }
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ReadError::TooLarge);
    }
    Ok(Some(bytes))
}

impl TrustStore {
    pub fn in_memory() -> TrustStore {
        TrustStore::default()
    }

    /// Loads the store at `file`; a missing file is an empty store.
    pub fn load(file: &Path) -> Result<TrustStore, TrustError> {
        let entries = match std::fs::read_to_string(file) {
            Ok(text) => serde_json::from_str(&text).map_err(|error| TrustError::Damaged {
                path: file.to_path_buf(),
                message: error.to_string(),
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(TrustError::Read {
                    path: file.to_path_buf(),
                    source,
                });
            }
        };
        Ok(TrustStore {
            file: Some(file.to_path_buf()),
            entries,
        })
    }

    pub fn is_trusted(&self, path: &Path, content: &[u8]) -> bool {
        self.entries
            .get(&key_for(path))
            .is_some_and(|digest| *digest == content_digest(content))
    }

    /// Is the file at `path` trusted with the content whose digest
    /// ([`content_digest`]) is `digest`?
    pub fn is_trusted_digest(&self, path: &Path, digest: &str) -> bool {
        self.entries
            .get(&key_for(path))
            .is_some_and(|trusted| trusted == digest)
    }

    pub fn trust(&mut self, path: &Path, content: &[u8]) {
        self.entries.insert(key_for(path), content_digest(content));
    }

    /// Writes the store atomically (temporary file, then rename), so that an
    /// interrupted write never leaves it half-written.
    pub fn save(&self) -> Result<(), TrustError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let write_error = |source| TrustError::Write {
            path: file.clone(),
            source,
        };
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(write_error)?;
        }
        let text = serde_json::to_string_pretty(&self.entries).unwrap_or_else(|_| "{}".into());
        let temporary = file.with_extension("json.tmp");
        std::fs::write(&temporary, text).map_err(write_error)?;
        std::fs::rename(&temporary, file).map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Class 6 of issue 11: a link to a file trusted in another repository
    /// is not that file.
    #[test]
    fn trust_is_keyed_on_the_path_as_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let trusted = dir.path().join("a/.kennel.toml");
        let link = dir.path().join("b/.kennel.toml");
        std::fs::create_dir_all(trusted.parent().unwrap()).unwrap();
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let text = b"[defaults]\nenv = [\"SECRET\"]\n";
        std::fs::write(&trusted, text).unwrap();
        std::os::unix::fs::symlink(&trusted, &link).unwrap();
        let mut store = TrustStore::in_memory();
        store.trust(&trusted, text);
        assert!(store.is_trusted(&trusted, text));
        assert!(
            !store.is_trusted(&link, text),
            "a link to a trusted file must not be trusted"
        );
        // A link in the directory part is the workspace's own path: resolved.
        let alias = dir.path().join("alias");
        std::os::unix::fs::symlink(trusted.parent().unwrap(), &alias).unwrap();
        assert!(store.is_trusted(&alias.join(".kennel.toml"), text));
    }

    #[test]
    fn config_files_are_read_without_following_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target.toml");
        std::fs::write(&target, "x = 1\n").unwrap();
        let link = dir.path().join(".kennel.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(read_config_file(&link), Err(ReadError::Link)));
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(read_config_file(&dangling), Err(ReadError::Link)));
        assert_eq!(read_config_file(&target).unwrap().unwrap(), b"x = 1\n");
        assert!(
            read_config_file(&dir.path().join("absent"))
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            read_config_file(dir.path()),
            Err(ReadError::NotFile)
        ));
        // A FIFO neither hangs kennel nor is read.
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(read_config_file(&fifo), Err(ReadError::NotFile)));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        assert!(matches!(read_config_file(&big), Err(ReadError::TooLarge)));
    }
}
