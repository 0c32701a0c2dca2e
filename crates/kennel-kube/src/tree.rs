//! A directory of the host as a tar for a Pod (the session's checkout,
//! which a Pod cannot mount).
//!
//! Only towards the Pod: what comes back from a Pod is the agent's and is
//! never unpacked on the host (commits come back as git objects instead).
//! Even so the host side reads as if the directory were hostile: links are
//! stored as links and never followed (a file is opened with `O_NOFOLLOW`
//! and must still be a regular file once open), devices, FIFOs and sockets
//! are left out (and named), and owners are not carried.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {limit} bytes in all; a Pod gets at most that")]
    TooLarge { path: PathBuf, limit: u64 },
}

/// A directory packed for a Pod.
#[derive(Debug)]
pub struct Tree {
    pub tar: Vec<u8>,
    /// What was not packed (neither a directory, a regular file nor a
    /// link), relative to the directory.
    pub left_out: Vec<PathBuf>,
}

/// `dir` as a tar, its entries relative to it, at most `limit` bytes of
/// file content.
pub fn tar_of(dir: &Path, limit: u64) -> Result<Tree, TreeError> {
    let mut packer = Packer {
        builder: tar::Builder::new(Vec::new()),
        left_out: Vec::new(),
        total: 0,
        limit,
        root: dir,
    };
    packer.directory(dir, Path::new(""))?;
    let tar = packer
        .builder
        .into_inner()
        .map_err(|source| read_error(dir, source))?;
    Ok(Tree {
        tar,
        left_out: packer.left_out,
    })
}

struct Packer<'a> {
    builder: tar::Builder<Vec<u8>>,
    left_out: Vec<PathBuf>,
    total: u64,
    limit: u64,
    root: &'a Path,
}

impl Packer<'_> {
    fn directory(&mut self, dir: &Path, relative: &Path) -> Result<(), TreeError> {
        let mut entries = std::fs::read_dir(dir)
            .map_err(|source| read_error(dir, source))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| read_error(dir, source))?;
        // The same tree packs the same way.
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let path = entry.path();
            let name = relative.join(entry.file_name());
            let meta =
                std::fs::symlink_metadata(&path).map_err(|source| read_error(&path, source))?;
            let kind = meta.file_type();
            if kind.is_symlink() {
                let target =
                    std::fs::read_link(&path).map_err(|source| read_error(&path, source))?;
                let mut header = header(tar::EntryType::Symlink, 0o777, 0, meta.mtime());
                self.builder
                    .append_link(&mut header, &name, &target)
                    .map_err(|source| read_error(&path, source))?;
            } else if kind.is_dir() {
                let mut header = header(
                    tar::EntryType::Directory,
                    meta.mode() & 0o7777,
                    0,
                    meta.mtime(),
                );
                self.builder
                    .append_data(&mut header, &name, std::io::empty())
                    .map_err(|source| read_error(&path, source))?;
                self.directory(&path, &name)?;
            } else if kind.is_file() {
                self.file(&path, &name)?;
            } else {
                self.left_out.push(name);
            }
        }
        Ok(())
    }

    fn file(&mut self, path: &Path, name: &Path) -> Result<(), TreeError> {
        // Opened without following a link and without waiting on a FIFO
        // that took the file's place since it was looked at.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)
            .map_err(|source| read_error(path, source))?;
        let meta = file.metadata().map_err(|source| read_error(path, source))?;
        if !meta.is_file() {
            self.left_out.push(name.to_path_buf());
            return Ok(());
        }
        self.total += meta.len();
        if self.total > self.limit {
            return Err(TreeError::TooLarge {
                path: self.root.to_path_buf(),
                limit: self.limit,
            });
        }
        let mut header = header(
            tar::EntryType::Regular,
            meta.mode() & 0o777,
            meta.len(),
            meta.mtime(),
        );
        // What the header says is what goes in, even if the file grows.
        self.builder
            .append_data(&mut header, name, file.take(meta.len()))
            .map_err(|source| read_error(path, source))
    }
}

/// Times are kept (git in the Pod then finds its index fresh); owners
/// are the Pod's user's.
fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: i64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(u64::try_from(mtime).unwrap_or(0));
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn read_error(path: &Path, source: std::io::Error) -> TreeError {
    TreeError::Read {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entries(tar: &[u8]) -> Vec<(String, tar::EntryType, Option<String>, Vec<u8>)> {
        let mut archive = tar::Archive::new(tar);
        let mut seen = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("an entry");
            let path = entry.path().expect("path").display().to_string();
            let kind = entry.header().entry_type();
            let link = entry
                .link_name()
                .expect("link")
                .map(|link| link.display().to_string());
            let mut data = Vec::new();
            entry.read_to_end(&mut data).expect("data");
            seen.push((path, kind, link, data));
        }
        seen
    }

    #[test]
    fn links_stay_links_and_what_is_not_a_file_is_left_out() {
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("secret"), "the host's secret").expect("secret");
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).expect("bin");
        std::fs::write(root.join("a.txt"), "hello").expect("a");
        std::fs::write(root.join("bin/run.sh"), "#!/bin/sh\n").expect("run");
        std::fs::set_permissions(
            root.join("bin/run.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("leak")).expect("link");
        std::os::unix::fs::symlink(outside.path(), root.join("leakdir")).expect("link");
        nix::unistd::mkfifo(
            &root.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .expect("fifo");

        let tree = tar_of(root, 1 << 20).expect("packed");
        assert_eq!(tree.left_out, vec![PathBuf::from("fifo")]);
        let seen = entries(&tree.tar);
        let names: Vec<&str> = seen.iter().map(|(name, ..)| name.as_str()).collect();
        assert_eq!(names, ["a.txt", "bin", "bin/run.sh", "leak", "leakdir"]);
        let leak = &seen[3];
        assert_eq!(leak.1, tar::EntryType::Symlink);
        assert_eq!(
            leak.2.as_deref(),
            Some(outside.path().join("secret").to_str().expect("utf-8"))
        );
        assert!(leak.3.is_empty());
        let all: Vec<u8> = seen.iter().flat_map(|(.., data)| data.clone()).collect();
        assert!(
            !String::from_utf8_lossy(&all).contains("the host's secret"),
            "a link was followed"
        );
        let mut archive = tar::Archive::new(&tree.tar[..]);
        let modes: Vec<u32> = archive
            .entries()
            .expect("entries")
            .map(|entry| entry.expect("entry").header().mode().expect("mode"))
            .collect();
        assert_eq!(modes[2], 0o755);
    }

    #[test]
    fn a_tree_larger_than_the_limit_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("big"), vec![b'x'; 4096]).expect("big");
        let refused = tar_of(dir.path(), 1000).expect_err("over the limit");
        assert!(
            matches!(refused, TreeError::TooLarge { limit: 1000, .. }),
            "{refused}"
        );
    }
}
