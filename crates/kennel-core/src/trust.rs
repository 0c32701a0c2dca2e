//! Which project config files the user has trusted, by exact content.
//!
//! Trust is keyed by the file's canonical path and the SHA-256 of its bytes,
//! so editing a trusted file (by hand or by an agent) revokes the trust.

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

fn key_for(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
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
