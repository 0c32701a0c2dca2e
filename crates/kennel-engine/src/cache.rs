//! Remembers what an engine said about itself, so that `kennel run` does not
//! ask again on every start.
//!
//! Podman answers `/version` and `/info` slowly (half a second each here),
//! which alone would make kennel several times slower than `podman run`. The
//! answers cannot change while the same engine process serves the socket, so
//! they are cached per socket, keyed by the serving process's pid and start
//! time (read from the socket's peer credentials): a restarted engine is a
//! cache miss.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The process on the other end of an engine socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Peer {
    pub pid: i32,
    pub uid: u32,
    /// Start time in clock ticks since boot (`/proc/PID/stat`, field 22).
    pub start_time: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Facts {
    pub peer: Peer,
    pub podman: bool,
    pub version: String,
    pub api_major: usize,
    pub api_minor: usize,
}

/// Who serves `socket`, from the kernel's peer credentials.
pub(crate) async fn peer(socket: &Path) -> Option<Peer> {
    let stream = tokio::net::UnixStream::connect(socket).await.ok()?;
    let cred = stream.peer_cred().ok()?;
    let pid = cred.pid()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let after_name = stat.rsplit_once(')')?.1;
    let start_time = after_name.split_whitespace().nth(19)?.parse().ok()?;
    Some(Peer {
        pid,
        uid: cred.uid(),
        start_time,
    })
}

/// A private directory for the cache: `$XDG_RUNTIME_DIR/kennel`, else
/// `/tmp/kennel-<uid>`; refused unless it is ours and closed to others.
fn cache_file() -> Option<PathBuf> {
    let uid = nix::unistd::geteuid().as_raw();
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute() && dir.is_dir())
        .map(|dir| dir.join("kennel"))
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kennel-{uid}")));
    if !dir.exists() {
        std::fs::create_dir_all(&dir).ok()?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).ok()?;
    }
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    (meta.is_dir() && meta.uid() == uid && meta.mode() & 0o077 == 0)
        .then(|| dir.join("engines.json"))
}

fn load() -> BTreeMap<String, Facts> {
    cache_file()
        .and_then(|file| std::fs::read(file).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

pub(crate) fn lookup(socket: &Path, peer: &Peer) -> Option<Facts> {
    load()
        .remove(&socket.display().to_string())
        .filter(|facts| facts.peer == *peer)
}

pub(crate) fn store(socket: &Path, facts: &Facts) {
    let Some(file) = cache_file() else { return };
    let mut all = load();
    all.insert(socket.display().to_string(), facts.clone());
    let Ok(bytes) = serde_json::to_vec_pretty(&all) else {
        return;
    };
    let temporary = file.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&temporary, bytes).is_ok() && std::fs::rename(&temporary, &file).is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
}
