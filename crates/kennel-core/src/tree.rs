//! Files of the repository's that kennel reads to build an image (a
//! devcontainer's build context, a local feature), read as an attacker
//! may have laid them out: from a directory descriptor down, one
//! component at a time with `O_NOFOLLOW`, links taken as links (their
//! target text, never what they point at), anything other than files,
//! directories and links refused, and the whole read bounded.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

/// How much one read may take.
#[derive(Debug, Clone, Copy)]
pub struct TreeLimits {
    pub max_entries: usize,
    pub max_bytes: u64,
}

impl Default for TreeLimits {
    /// A build context or a feature: 20 000 entries, 512 MiB.
    fn default() -> TreeLimits {
        TreeLimits {
            max_entries: 20_000,
            max_bytes: 512 << 20,
        }
    }
}

/// What one entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeKind {
    File(Vec<u8>),
    /// The link's own text; never followed.
    Symlink(String),
    Dir,
}

/// One entry: its path (`/`-separated, relative to where the read
/// started), its permission bits and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    pub path: String,
    pub mode: u32,
    pub kind: TreeKind,
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(
        "{path}: a symbolic link is on its path (kennel never follows a link in the repository)"
    )]
    Link { path: String },
    #[error("{path}: it is not a regular file, a directory or a link")]
    Special { path: String },
    #[error("{path}: not UTF-8")]
    Name { path: String },
    #[error("more than {0} entries")]
    TooMany(usize),
    #[error("more than {0} bytes")]
    TooLarge(u64),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A reader of one root, counting what it took.
pub struct Tree {
    root: OwnedFd,
    limits: TreeLimits,
    entries: usize,
    bytes: u64,
}

impl Tree {
    /// The directory `root` (itself not a link).
    pub fn open(root: &Path, limits: TreeLimits) -> Result<Tree, TreeError> {
        let root = nix::fcntl::open(root, dir_flags(), Mode::empty())
            .map_err(|errno| errno_error(&root.display().to_string(), errno))?;
        Ok(Tree {
            root,
            limits,
            entries: 0,
            bytes: 0,
        })
    }

    /// The entry at `relative` (`""` or `.`: the root) and, for a
    /// directory, everything under it, in path order, each path relative
    /// to `relative` (the entry itself has the path `""`). `Ok(None)`:
    /// nothing is there.
    pub fn read(&mut self, relative: &str) -> Result<Option<Vec<TreeEntry>>, TreeError> {
        let parts = components(relative)?;
        let mut out = Vec::new();
        let Some((parent, name)) = self.parent_of(&parts, relative)? else {
            return Ok(None);
        };
        let stat = match &name {
            None => fstat(&parent).map_err(|errno| errno_error(relative, errno))?,
            Some(name) => match fstatat(&parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(Errno::ENOENT) => return Ok(None),
                Err(errno) => return Err(errno_error(relative, errno)),
            },
        };
        match &name {
            None => {
                self.count(0)?;
                out.push(TreeEntry {
                    path: String::new(),
                    mode: stat.st_mode & 0o7777,
                    kind: TreeKind::Dir,
                });
                self.read_dir(parent, "", relative, &mut out)?;
            }
            Some(name) => self.read_entry(&parent, name, &stat, "", relative, &mut out)?,
        }
        Ok(Some(out))
    }

    /// The names of the directory `relative`'s entries (sorted), for
    /// matching patterns. `Ok(None)`: it is not a directory here.
    pub fn list(&mut self, relative: &str) -> Result<Option<Vec<String>>, TreeError> {
        let parts = components(relative)?;
        let mut dir = self.dup_root(relative)?;
        for part in &parts {
            dir = match openat(&dir, part.as_os_str(), dir_flags(), Mode::empty()) {
                Ok(next) => next,
                Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(None),
                Err(errno) => return Err(errno_error(relative, errno)),
            };
        }
        let mut names = Vec::new();
        for entry in directory_names(dir, relative)? {
            self.count(0)?;
            names.push(entry.into_string().map_err(|_| TreeError::Name {
                path: relative.to_string(),
            })?);
        }
        names.sort();
        Ok(Some(names))
    }

    fn dup_root(&self, path: &str) -> Result<OwnedFd, TreeError> {
        self.root.try_clone().map_err(|source| TreeError::Io {
            path: path.to_string(),
            source,
        })
    }

    /// The directory that holds `parts`' last component, and that name
    /// (`None`: the root itself).
    fn parent_of(
        &self,
        parts: &[OsString],
        relative: &str,
    ) -> Result<Option<(OwnedFd, Option<OsString>)>, TreeError> {
        let mut dir = self.dup_root(relative)?;
        let Some((last, dirs)) = parts.split_last() else {
            return Ok(Some((dir, None)));
        };
        for part in dirs {
            dir = match openat(&dir, part.as_os_str(), dir_flags(), Mode::empty()) {
                Ok(next) => next,
                Err(Errno::ENOENT) => return Ok(None),
                Err(errno) => return Err(errno_error(relative, errno)),
            };
        }
        Ok(Some((dir, Some(last.clone()))))
    }

    fn count(&mut self, bytes: u64) -> Result<(), TreeError> {
        self.entries += 1;
        self.bytes += bytes;
        if self.entries > self.limits.max_entries {
            return Err(TreeError::TooMany(self.limits.max_entries));
        }
        if self.bytes > self.limits.max_bytes {
            return Err(TreeError::TooLarge(self.limits.max_bytes));
        }
        Ok(())
    }

    fn read_entry(
        &mut self,
        parent: &OwnedFd,
        name: &OsStr,
        stat: &FileStat,
        path: &str,
        shown: &str,
        out: &mut Vec<TreeEntry>,
    ) -> Result<(), TreeError> {
        let mode = stat.st_mode & 0o7777;
        match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
            SFlag::S_IFLNK => {
                self.count(0)?;
                let target = readlinkat(parent, name).map_err(|errno| errno_error(shown, errno))?;
                let target = target.into_string().map_err(|_| TreeError::Name {
                    path: shown.to_string(),
                })?;
                out.push(TreeEntry {
                    path: path.to_string(),
                    mode,
                    kind: TreeKind::Symlink(target),
                });
            }
            SFlag::S_IFDIR => {
                self.count(0)?;
                let dir = openat(parent, name, dir_flags(), Mode::empty())
                    .map_err(|errno| errno_error(shown, errno))?;
                out.push(TreeEntry {
                    path: path.to_string(),
                    mode,
                    kind: TreeKind::Dir,
                });
                self.read_dir(dir, path, shown, out)?;
            }
            SFlag::S_IFREG => {
                let flags = OFlag::O_RDONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_NONBLOCK
                    | OFlag::O_NOCTTY
                    | OFlag::O_CLOEXEC;
                let fd = openat(parent, name, flags, Mode::empty())
                    .map_err(|errno| errno_error(shown, errno))?;
                // What was opened, not what was looked at before: a swap
                // in between is refused.
                let opened = fstat(&fd).map_err(|errno| errno_error(shown, errno))?;
                if SFlag::from_bits_truncate(opened.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                    return Err(TreeError::Special {
                        path: shown.to_string(),
                    });
                }
                let room = self.limits.max_bytes.saturating_sub(self.bytes) + 1;
                let mut content = Vec::new();
                std::fs::File::from(fd)
                    .take(room)
                    .read_to_end(&mut content)
                    .map_err(|source| TreeError::Io {
                        path: shown.to_string(),
                        source,
                    })?;
                self.count(content.len() as u64)?;
                out.push(TreeEntry {
                    path: path.to_string(),
                    mode: opened.st_mode & 0o7777,
                    kind: TreeKind::File(content),
                });
            }
            _ => {
                return Err(TreeError::Special {
                    path: shown.to_string(),
                });
            }
        }
        Ok(())
    }

    fn read_dir(
        &mut self,
        dir: OwnedFd,
        path: &str,
        shown: &str,
        out: &mut Vec<TreeEntry>,
    ) -> Result<(), TreeError> {
        let held = dir.try_clone().map_err(|source| TreeError::Io {
            path: shown.to_string(),
            source,
        })?;
        let mut names = directory_names(held, shown)?;
        names.sort();
        for name in names {
            let text = name.to_str().ok_or_else(|| TreeError::Name {
                path: format!("{shown}/{}", name.to_string_lossy()),
            })?;
            let child = join(path, text);
            let child_shown = join(shown, text);
            let stat = match fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                // Gone since the listing.
                Err(Errno::ENOENT) => continue,
                Err(errno) => return Err(errno_error(&child_shown, errno)),
            };
            self.read_entry(&dir, &name, &stat, &child, &child_shown, out)?;
        }
        Ok(())
    }
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn join(dir: &str, name: &str) -> String {
    match dir {
        "" => name.to_string(),
        dir => format!("{dir}/{name}"),
    }
}

fn directory_names(dir: OwnedFd, shown: &str) -> Result<Vec<OsString>, TreeError> {
    let mut listing = nix::dir::Dir::from_fd(dir).map_err(|errno| errno_error(shown, errno))?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(|errno| errno_error(shown, errno))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        names.push(OsStr::from_bytes(name).to_os_string());
    }
    Ok(names)
}

/// `relative`'s plain components; `..`, an absolute path or a NUL is an
/// error (a path in the repository's files must stay under the root).
fn components(relative: &str) -> Result<Vec<OsString>, TreeError> {
    let mut parts = Vec::new();
    for component in Path::new(relative).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_os_string()),
            Component::CurDir => {}
            _ => {
                return Err(TreeError::Link {
                    path: relative.to_string(),
                });
            }
        }
    }
    Ok(parts)
}

fn errno_error(path: &str, errno: Errno) -> TreeError {
    match errno {
        Errno::ELOOP | Errno::ENOTDIR => TreeError::Link {
            path: path.to_string(),
        },
        other => TreeError::Io {
            path: path.to_string(),
            source: other.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_tree_is_read_without_following_links() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("repo");
        std::fs::create_dir_all(root.join("scripts/deep")).expect("mkdir");
        std::fs::write(root.join("scripts/a.sh"), "echo a").expect("write");
        std::fs::write(root.join("scripts/deep/b"), "b").expect("write");
        std::fs::write(dir.path().join("secret"), "host secret").expect("write");
        symlink(dir.path().join("secret"), root.join("scripts/link")).expect("link");
        symlink(dir.path(), root.join("out")).expect("link");
        let mut tree = Tree::open(&root, TreeLimits::default()).expect("open");
        let read = tree.read("scripts").expect("read").expect("there");
        let paths: Vec<&str> = read.iter().map(|entry| entry.path.as_str()).collect();
        assert_eq!(paths, ["", "a.sh", "deep", "deep/b", "link"]);
        assert_eq!(read[1].kind, TreeKind::File(b"echo a".to_vec()));
        assert_eq!(
            read[4].kind,
            TreeKind::Symlink(dir.path().join("secret").display().to_string())
        );
        // Through a link: refused, never read.
        let through = Tree::open(&root, TreeLimits::default())
            .expect("open")
            .read("out/secret");
        assert!(
            matches!(through, Err(TreeError::Link { .. })),
            "{through:?}"
        );
        // The link itself is a link entry.
        let link = tree.read("out").expect("read").expect("there");
        assert!(matches!(link[0].kind, TreeKind::Symlink(_)));
        assert!(tree.read("../secret").is_err());
        assert!(tree.read("nothing").expect("read").is_none());
        assert_eq!(
            tree.list("scripts").expect("list").expect("dir"),
            ["a.sh", "deep", "link"]
        );
        assert!(tree.list("out").is_err() || tree.list("out").expect("list").is_none());
        // A root that is a link is refused.
        assert!(Tree::open(&root.join("out"), TreeLimits::default()).is_err());
    }

    #[test]
    fn a_fifo_is_refused_and_limits_hold() {
        let dir = tempfile::tempdir().expect("dir");
        nix::unistd::mkfifo(&dir.path().join("pipe"), Mode::from_bits_truncate(0o600))
            .expect("fifo");
        let mut tree = Tree::open(dir.path(), TreeLimits::default()).expect("open");
        assert!(matches!(tree.read(""), Err(TreeError::Special { .. })));
        std::fs::remove_file(dir.path().join("pipe")).expect("rm");
        std::fs::write(dir.path().join("big"), vec![0u8; 100]).expect("write");
        let mut small = Tree::open(
            dir.path(),
            TreeLimits {
                max_entries: 10,
                max_bytes: 50,
            },
        )
        .expect("open");
        assert!(matches!(small.read(""), Err(TreeError::TooLarge(50))));
    }
}
