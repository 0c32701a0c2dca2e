//! The login store: how an agent's login reaches every repository's home
//! without anything else of one home reaching another (issue 11, class 5).
//!
//! Agent homes are per repository ([`crate::settings::agent_home`]), so a
//! line an agent adds to `~/.bashrc`, its settings, hooks or instruction
//! files in one repository never runs in another. The login is the one
//! thing that must carry over: the files an agent's catalog entry names in
//! `login` (`~/.claude/.credentials.json`, `~/.codex/auth.json`, …) are
//! kept in `<data dir>/logins/<agent>/files/`, a directory no sandbox
//! mounts. When a session starts, kennel takes into the store any login
//! file that changed in one of the agent's homes since kennel last put it
//! there (a login made, or a token refreshed, in another session), then
//! copies the store into the session's home; when `kennel run` ends, it
//! takes the session's own changes back.
//!
//! Every home is the agent's to write, so every access to one goes through
//! `openat` with `O_NOFOLLOW`, one component at a time: a link anywhere on
//! the way (`~/.claude` → `~/.ssh`) is refused, never followed, and a file
//! is read through the descriptor that was checked to be a regular file of
//! at most [`MAX_LOGIN_BYTES`]. Only the named files move, and only in the
//! store's direction when they changed in a home.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};
use serde::{Deserialize, Serialize};

use crate::trust::content_digest;

/// The largest login file kennel copies.
pub const MAX_LOGIN_BYTES: u64 = 1 << 20;

/// `~/.claude/.credentials.json` → `.claude/.credentials.json`. `None` for
/// anything but a path under `~/` made of plain names (no `..`, no `.`).
pub fn login_relative(path: &str) -> Option<PathBuf> {
    let rest = path.strip_prefix("~/")?;
    let relative = Path::new(rest);
    let plain = relative
        .components()
        .all(|part| matches!(part, Component::Normal(_)));
    (plain && relative.components().next().is_some()).then(|| relative.to_path_buf())
}

/// Why a login file in a home was not copied.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("a symbolic link is on its path (kennel never follows a link in an agent's home)")]
    Link,
    #[error("it is not a regular file")]
    NotFile,
    #[error("it is larger than {MAX_LOGIN_BYTES} bytes")]
    TooLarge,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<Errno> for LoginError {
    fn from(errno: Errno) -> LoginError {
        match errno {
            Errno::ELOOP | Errno::ENOTDIR => LoginError::Link,
            other => LoginError::Io(other.into()),
        }
    }
}

fn open_root(root: &Path) -> Result<OwnedFd, LoginError> {
    Ok(nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

/// The directory `parts` under `dir`, one component at a time, never
/// through a link; made (0700) when `create`. `Ok(None)`: it is not there.
fn walk(dir: OwnedFd, parts: &[&OsStr], create: bool) -> Result<Option<OwnedFd>, LoginError> {
    let mut current = dir;
    for part in parts {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        current = match openat(&current, *part, flags, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::ENOENT) if create => {
                match mkdirat(&current, *part, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(errno) => return Err(errno.into()),
                }
                openat(&current, *part, flags, Mode::empty())?
            }
            Err(Errno::ENOENT) => return Ok(None),
            Err(errno) => return Err(errno.into()),
        };
    }
    Ok(Some(current))
}

fn split(relative: &Path) -> Option<(Vec<&OsStr>, &OsStr)> {
    let parts: Vec<&OsStr> = relative.iter().collect();
    let (name, dirs) = parts.split_last()?;
    Some((dirs.to_vec(), name))
}

/// A file read from a home: its bytes and modification time.
pub struct Found {
    pub bytes: Vec<u8>,
    pub mtime: i64,
}

/// Reads `root/relative` without following a link anywhere below `root`:
/// a regular file of at most [`MAX_LOGIN_BYTES`], read through the
/// descriptor that was checked. `Ok(None)`: it is not there.
pub fn read_under(root: &Path, relative: &Path) -> Result<Option<Found>, LoginError> {
    let Some((dirs, name)) = split(relative) else {
        return Ok(None);
    };
    let root = match open_root(root) {
        Ok(root) => root,
        Err(LoginError::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    let Some(dir) = walk(root, &dirs, false)? else {
        return Ok(None);
    };
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = match openat(&dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(errno) => return Err(errno.into()),
    };
    let stat = fstat(&fd)?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(LoginError::NotFile);
    }
    if stat.st_size as u64 > MAX_LOGIN_BYTES {
        return Err(LoginError::TooLarge);
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_LOGIN_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_LOGIN_BYTES {
        return Err(LoginError::TooLarge);
    }
    Ok(Some(Found {
        bytes,
        mtime: stat.st_mtime,
    }))
}

/// Writes `root/relative` (mode 0600; missing directories 0700) without
/// following a link anywhere below `root`: a temporary file made with
/// `O_EXCL | O_NOFOLLOW` in the final directory, renamed over the name (a
/// link there is replaced, not written through).
pub fn write_under(root: &Path, relative: &Path, bytes: &[u8]) -> Result<(), LoginError> {
    let Some((dirs, name)) = split(relative) else {
        return Err(LoginError::NotFile);
    };
    let root = open_root(root)?;
    let Some(dir) = walk(root, &dirs, true)? else {
        return Err(LoginError::NotFile);
    };
    let temporary = format!(
        ".kennel-login-{}-{:x}",
        std::process::id(),
        crate::settings::random_u64()
    );
    let fd = openat(
        &dir,
        temporary.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    let written = std::fs::File::from(fd)
        .write_all(bytes)
        .map_err(LoginError::from)
        .and_then(|()| Ok(renameat(&dir, temporary.as_str(), &dir, name)?));
    if written.is_err() {
        let _ = nix::unistd::unlinkat(
            &dir,
            temporary.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }
    written
}

/// What kennel last put in (or took from) one home.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    home: PathBuf,
    /// Login file (relative to the home) → SHA-256 of its content.
    files: BTreeMap<PathBuf, String>,
}

/// One agent's login store, locked while it is open.
pub struct LoginStore {
    dir: PathBuf,
    files: Vec<PathBuf>,
    _lock: std::fs::File,
    /// What went wrong on the way, for the user (library crates never print).
    pub warnings: Vec<String>,
}

/// `<data dir>/logins/<agent>`.
pub fn store_dir(data_dir: &Path, agent: &str) -> PathBuf {
    data_dir.join("logins").join(agent)
}

impl LoginStore {
    /// The store of `agent`, whose catalog entry names `login`; `None` when
    /// it names none. Waits for other kennels using the same store.
    pub fn open(
        data_dir: &Path,
        agent: &str,
        login: &[String],
    ) -> std::io::Result<Option<LoginStore>> {
        let files: Vec<PathBuf> = login
            .iter()
            .filter_map(|path| login_relative(path))
            .collect();
        if files.is_empty() {
            return Ok(None);
        }
        let dir = store_dir(data_dir, agent);
        std::fs::create_dir_all(dir.join("homes"))?;
        set_private(&dir);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))?;
        lock.lock()?;
        Ok(Some(LoginStore {
            dir,
            files,
            _lock: lock,
            warnings: Vec::new(),
        }))
    }

    fn files_dir(&self) -> PathBuf {
        self.dir.join("files")
    }

    fn record_path(&self, home: &Path) -> PathBuf {
        let key = content_digest(home.as_os_str().as_encoded_bytes());
        self.dir.join("homes").join(format!("{}.json", &key[..16]))
    }

    fn load_record(&self, home: &Path) -> Record {
        std::fs::read(self.record_path(home))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
            .filter(|record| record.home == home)
            .unwrap_or_else(|| Record {
                home: home.to_path_buf(),
                files: BTreeMap::new(),
            })
    }

    fn save_record(&mut self, record: &Record) {
        let path = self.record_path(&record.home);
        let saved = serde_json::to_vec_pretty(record)
            .map_err(std::io::Error::other)
            .and_then(|json| {
                let temporary = path.with_extension("json.tmp");
                std::fs::write(&temporary, json)?;
                std::fs::rename(&temporary, &path)
            });
        if let Err(error) = saved {
            self.warnings.push(format!(
                "cannot record the login copied to {}: {error}",
                record.home.display()
            ));
        }
    }

    fn stored(&self, relative: &Path) -> Option<Vec<u8>> {
        read_under(&self.files_dir(), relative)
            .ok()
            .flatten()
            .map(|found| found.bytes)
    }

    fn store(&mut self, relative: &Path, bytes: &[u8]) {
        let files = self.files_dir();
        if let Err(error) = std::fs::create_dir_all(&files)
            .map_err(LoginError::from)
            .and_then(|()| write_under(&files, relative, bytes))
        {
            self.warnings.push(format!(
                "cannot keep the login file ~/{} in {}: {error}",
                relative.display(),
                files.display()
            ));
        }
    }

    /// Reads login file `relative` of `home`, or says why not.
    fn read_home(&mut self, home: &Path, relative: &Path) -> Option<Found> {
        match read_under(home, relative) {
            Ok(found) => found,
            Err(error) => {
                self.warnings.push(format!(
                    "the login file ~/{} in {} is not copied: {error}",
                    relative.display(),
                    home.display()
                ));
                None
            }
        }
    }

    /// The first use of the store after the upgrade to per-repository
    /// homes: the login files of the agent's earlier, shared home `legacy`
    /// become the store's, so that the user stays logged in. Nothing else
    /// of that home is copied anywhere. Returns whether anything was taken.
    pub fn migrate(&mut self, legacy: &Path) -> bool {
        if self.files_dir().exists() {
            return false;
        }
        let mut taken = false;
        if legacy.is_dir() {
            let mut record = self.load_record(legacy);
            for relative in self.files.clone() {
                if let Some(found) = self.read_home(legacy, &relative) {
                    self.store(&relative, &found.bytes);
                    record
                        .files
                        .insert(relative.clone(), content_digest(&found.bytes));
                    taken = true;
                }
            }
            self.save_record(&record);
        }
        if let Err(error) = std::fs::create_dir_all(self.files_dir()) {
            self.warnings.push(format!(
                "cannot create {}: {error}",
                self.files_dir().display()
            ));
        }
        taken
    }

    /// Takes into the store every login file that changed in one of the
    /// agent's homes since kennel last put it there (a login made or a
    /// token refreshed in another repository's session). Where several
    /// homes changed one file, the newest wins.
    pub fn collect(&mut self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("homes")) else {
            return;
        };
        let mut homes = Vec::new();
        for entry in entries.flatten() {
            let Some(record) = std::fs::read(entry.path())
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Record>(&bytes).ok())
            else {
                continue;
            };
            if !record.home.is_dir() {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            homes.push(record.home);
        }
        homes.sort();
        self.take_from_all(&homes);
    }

    /// Takes the login files that changed in `home` since kennel last put
    /// them there into the store (the end of a session).
    pub fn take_from(&mut self, home: &Path) {
        self.take_from_all(&[home.to_path_buf()]);
    }

    fn take_from_all(&mut self, homes: &[PathBuf]) {
        let mut records: Vec<Record> = homes.iter().map(|home| self.load_record(home)).collect();
        for relative in self.files.clone() {
            let mut newest: Option<Found> = None;
            for record in &mut records {
                let Some(found) = self.read_home(&record.home, &relative) else {
                    continue;
                };
                let digest = content_digest(&found.bytes);
                if record.files.get(&relative) == Some(&digest) {
                    continue;
                }
                record.files.insert(relative.clone(), digest);
                if newest.as_ref().is_none_or(|best| found.mtime >= best.mtime) {
                    newest = Some(found);
                }
            }
            if let Some(found) = newest
                && self.stored(&relative).as_deref() != Some(found.bytes.as_slice())
            {
                self.store(&relative, &found.bytes);
            }
        }
        for record in &records {
            self.save_record(record);
        }
    }

    /// Copies the store's login files into `home` (a session is about to
    /// start there) and records what it put there.
    pub fn give_to(&mut self, home: &Path) {
        let mut record = self.load_record(home);
        for relative in self.files.clone() {
            let Some(bytes) = self.stored(&relative) else {
                continue;
            };
            let current = match read_under(home, &relative) {
                Ok(found) => found.map(|found| found.bytes),
                Err(LoginError::Link) => {
                    self.warnings.push(format!(
                        "your login is not copied to ~/{} in {}: a symbolic link is on its path (kennel never follows a link in an agent's home)",
                        relative.display(),
                        home.display()
                    ));
                    continue;
                }
                Err(_) => None,
            };
            if current.as_deref() != Some(bytes.as_slice())
                && let Err(error) = write_under(home, &relative, &bytes)
            {
                self.warnings.push(format!(
                    "your login is not copied to ~/{} in {}: {error}",
                    relative.display(),
                    home.display()
                ));
                continue;
            }
            record.files.insert(relative, content_digest(&bytes));
        }
        self.save_record(&record);
    }
}

fn set_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for path in [dir.parent().unwrap_or(dir), dir] {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    }
}

#[cfg(test)]
#[path = "logins_tests.rs"]
mod tests;
