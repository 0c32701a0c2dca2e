//! What a sandbox must see of the repository in worktree mode, and what
//! stays read-only.
//!
//! A worktree's `.git` is a file, `gitdir: <common>/worktrees/<name>`, and
//! that admin dir's `commondir` leads back to `<common>`: the sandbox needs
//! the worktree *and* parts of the repository's common git dir, at the same
//! absolute paths (so those recorded paths resolve inside too).
//!
//! The list, in mount order (parents first; each later mount covers part of
//! an earlier one, so a backend must apply them in this order):
//!
//! | path | access | why |
//! |---|---|---|
//! | `<worktree>` | rw | the agent's files |
//! | `<worktree>/.git` | ro | the file that names the git dir: the agent cannot point it at a git dir of its own (a mount point cannot be replaced or renamed) |
//! | `<common>` | ro | everything else of the repository: `config`, `config.worktree`, `hooks/`, `info/`, `packed-refs`, the user's own `HEAD` and `index`, `modules/`, other worktrees' registrations under `worktrees/` |
//! | `<common>/objects` | rw | git writes the agent's commits here |
//! | `<common>/objects/info` | ro | `alternates` (which directories git reads objects from, and so which ones kennel would mount for the next session) and `commit-graph` (which git trusts for commits' trees and parents): kennel creates it if missing |
//! | each lender recorded in [`Checkout::alternates`] | ro | objects the repository borrows (`git clone --reference`), as recorded when the checkout was created and checked to be an object store |
//! | `<common>/refs/heads/<dir of the branch>` | rw | the session branch's ref, e.g. `refs/heads/kennel/`, and only that directory of branches |
//! | `<common>/logs/refs/heads/<dir of the branch>` | rw | its reflog |
//! | `<common>/reftable` | rw | instead of the two above, in a reftable repository: every ref lives in it |
//! | `<common>/worktrees/<name>` | rw | the worktree's own `HEAD`, `index`, reflog, `ORIG_HEAD`… |
//! | `<admin>/gitdir`, `<admin>/commondir`, `<admin>/locked`, `<admin>/config.worktree` | ro | where the registration points, where the common dir is, the lock that keeps `git worktree prune` away, and the per-worktree config (read by git when `extensions.worktreeConfig` is on) |
//!
//! # What a hostile agent can and cannot do with this
//!
//! It cannot make the host run code: hooks and every config file git reads
//! for the user's checkout or for this worktree are read-only, and so are
//! the files that tell git where those are (`.git` file, `commondir`).
//! Renaming a directory that holds them fails too: read-only parents, and
//! mount points cannot be renamed over.
//!
//! It cannot touch the user's branches or tags, the user's index or HEAD,
//! other worktrees' registrations, or `packed-refs`. As a consequence
//! `git gc` and `git pack-refs` fail inside (they lock files in the read-only
//! common dir), `git worktree prune` cannot remove anything, and the agent
//! can only create branches next to its own (`kennel/…`); `git stash` and
//! `git tag` fail (`refs/stash` and `refs/tags` are read-only).
//!
//! Known limitations (use clone mode where they matter):
//!
//! - The object store is writable: the agent can delete or corrupt objects
//!   and so damage the repository's history (never run code with it; git
//!   treats objects as data). Replacing an existing object is noticed
//!   ([`Repo::verify_objects`]) and refuses `merge` and `apply`.
//!   `objects/info` is read-only: the agent cannot add alternates (make git
//!   read objects from another directory, or make kennel mount one for the
//!   next session) nor plant a commit-graph.
//!
//! What a session mounts is decided from the record kept since the checkout
//! was created (before any agent ran) and from kennel's own paths, never
//! from what an agent could have written since; and no mount source may
//! lead through a symlink (a bind mount follows it on the host).
//! - It can move the other branches in the same ref directory: other
//!   sessions' `kennel/*` branches. A session branch named without a
//!   directory (`--branch foo`) makes all of `refs/heads` writable, the
//!   user's own branches included; in a reftable repository every ref is.
//!
//! Outside a sandbox (`git worktree prune` run with a view where the other
//! worktrees' directories do not exist) each kennel worktree is locked, and
//! prune never removes a locked worktree's registration.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{GitError, Result};
use crate::{Checkout, CheckoutMode, KEEP_DIR, RefFormat, Repo};

/// One bind mount a sandbox needs: `host` at `target` (the same path, so
/// that git's recorded absolute paths resolve).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GitMount {
    pub host: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
    /// Why it is there, for `--dry-run` and logs.
    pub why: &'static str,
}

impl GitMount {
    fn new(path: PathBuf, read_only: bool, why: &'static str) -> GitMount {
        GitMount {
            target: path.clone(),
            host: path,
            read_only,
            why,
        }
    }
}

/// The files of a worktree's admin dir that stay read-only.
const ADMIN_READ_ONLY: &[(&str, &str)] = &[
    (
        "gitdir",
        "the registration's path back to the worktree (git worktree prune reads it)",
    ),
    (
        "commondir",
        "where the repository's common git dir is: config and hooks come from there",
    ),
    (
        "locked",
        "the lock that keeps git worktree prune from removing this registration",
    ),
    (
        "config.worktree",
        "per-worktree config, read when extensions.worktreeConfig is on",
    ),
];

/// The ref (and reflog) directory that holds `branch`: `kennel` for
/// `kennel/claude-0`, empty for `foo`.
fn branch_dir(branch: &str) -> &str {
    branch.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("")
}

impl Repo {
    /// Creates what the worktree's mounts need and what kennel must own
    /// before an agent gets there: an empty `config.worktree` (so that it
    /// can be mounted read-only: a file that does not exist cannot be), and
    /// the keep directories of [`KEEP_DIR`].
    pub(crate) fn prepare_worktree_mounts(&self, checkout: &Checkout) -> Result<()> {
        let admin = admin_dir(checkout)?;
        // objects/info must exist to be mounted read-only.
        let info = self.common_dir.join("objects/info");
        check_no_symlinks(&self.common_dir, std::slice::from_ref(&info))?;
        match std::fs::create_dir(&info) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(GitError::Io { path: info, source }),
        }
        check_no_symlinks(&self.common_dir, std::slice::from_ref(&info))?;
        let config = admin.join("config.worktree");
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&config)
        {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(&config).map_err(|source| GitError::Io {
                    path: config.clone(),
                    source,
                })?;
                if !meta.is_file() {
                    return Err(GitError::Tampered {
                        path: config,
                        reason: "it is not a regular file".into(),
                    });
                }
            }
            Err(source) => {
                return Err(GitError::Io {
                    path: config,
                    source,
                });
            }
        }
        let dir = branch_dir(&checkout.branch);
        if self.ref_format == RefFormat::Files {
            check_no_symlinks(
                &self.common_dir,
                &ref_dirs(&self.common_dir, &checkout.branch),
            )?;
        }
        if self.ref_format == RefFormat::Files && !dir.is_empty() {
            for base in ["refs/heads", "logs/refs/heads"] {
                let keep = self.common_dir.join(base).join(dir).join(KEEP_DIR);
                std::fs::create_dir_all(&keep).map_err(|source| GitError::Io {
                    path: keep.clone(),
                    source,
                })?;
            }
        } else if self.ref_format == RefFormat::Files {
            let logs = self.common_dir.join("logs/refs/heads");
            std::fs::create_dir_all(&logs).map_err(|source| GitError::Io {
                path: logs.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The bind mounts a sandbox needs for git to work in the worktree
    /// `checkout` (see the module docs for the list and the reasoning).
    /// Parents come before children: apply them in this order.
    pub fn mounts_for_worktree(&self, checkout: &Checkout) -> Result<Vec<GitMount>> {
        self.check_ours(checkout)?;
        if checkout.mode != CheckoutMode::Worktree {
            return Err(GitError::Tampered {
                path: checkout.dir.clone(),
                reason: "it is not a worktree checkout".into(),
            });
        }
        if !checkout.dir.is_dir() {
            return Err(GitError::CheckoutMissing {
                path: checkout.dir.clone(),
            });
        }
        let admin = admin_dir(checkout)?.to_path_buf();
        // The .git file must still point at the registration: it is mounted
        // read-only from now on, so kennel checks what it freezes.
        if self.admin_dir_of(&checkout.dir)? != admin {
            return Err(GitError::Tampered {
                path: checkout.dir.join(".git"),
                reason: "it no longer points at the session's worktree registration".into(),
            });
        }
        self.prepare_worktree_mounts(checkout)?;
        let mounts = self.worktree_mounts(checkout, &admin, |path| {
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.is_file() => Ok(true),
                // The user may have unlocked the worktree; nothing to freeze.
                Err(_) if path.file_name().is_some_and(|name| name == "locked") => Ok(false),
                _ => Err(GitError::Tampered {
                    path: path.to_path_buf(),
                    reason: "it is missing or not a regular file".into(),
                }),
            }
        })?;
        check_mount_sources(&mounts)?;
        Ok(mounts)
    }

    /// The mounts of a worktree or clone checkout as [`Repo::mounts_for_worktree`]
    /// and [`Repo::mounts_for_clone`] will give them, checking and
    /// preparing nothing: what `--dry-run` shows. `checkout` may be one not
    /// made yet ([`Repo::plan_checkout`]): then it is described as it will
    /// be once made.
    pub fn planned_mounts(&self, checkout: &Checkout) -> Result<Vec<GitMount>> {
        match checkout.mode {
            CheckoutMode::Clone => Ok(clone_mounts(checkout)),
            CheckoutMode::Worktree => {
                let admin = admin_dir(checkout)?.to_path_buf();
                let made = admin.is_dir();
                self.worktree_mounts(checkout, &admin, |path| {
                    Ok(!made || std::fs::symlink_metadata(path).is_ok_and(|meta| meta.is_file()))
                })
            }
        }
    }

    /// The list of a worktree's mounts, in order; `admin_file` says whether
    /// a file of [`ADMIN_READ_ONLY`] is there to be mounted.
    fn worktree_mounts(
        &self,
        checkout: &Checkout,
        admin: &Path,
        admin_file: impl Fn(&Path) -> Result<bool>,
    ) -> Result<Vec<GitMount>> {
        let common = &self.common_dir;
        let mut mounts = vec![
            GitMount::new(checkout.dir.clone(), false, "the session's worktree"),
            GitMount::new(
                checkout.dir.join(".git"),
                true,
                "the file that names the worktree's git dir",
            ),
            GitMount::new(
                common.clone(),
                true,
                "the repository's git dir: config, hooks, your HEAD and index, other worktrees",
            ),
            GitMount::new(
                common.join("objects"),
                false,
                "the object store: git writes the session's commits here",
            ),
        ];
        mounts.push(GitMount::new(
            common.join("objects/info"),
            true,
            "alternates and commit-graph: what git reads objects from, and what kennel mounts",
        ));
        // A repository that borrows objects (`git clone --reference`,
        // `--shared`) needs the lender's object store too, read-only: the
        // lenders recorded when the checkout was created, never the
        // alternates file as it is now (the agent of an older kennel, or of
        // a direct-mode session, could have written it).
        for lender in &checkout.alternates {
            if let Err(reason) = object_store(lender, &self.common_dir) {
                tracing::warn!(lender = %lender.display(), reason, "recorded lender not mounted");
                continue;
            }
            mounts.push(GitMount::new(
                lender.clone(),
                true,
                "objects the repository borrows (objects/info/alternates)",
            ));
        }
        match self.ref_format {
            RefFormat::Files => {
                let dir = branch_dir(&checkout.branch);
                let (refs, logs) = if dir.is_empty() {
                    (common.join("refs/heads"), common.join("logs/refs/heads"))
                } else {
                    (
                        common.join("refs/heads").join(dir),
                        common.join("logs/refs/heads").join(dir),
                    )
                };
                mounts.push(GitMount::new(
                    refs,
                    false,
                    "the directory of the session branch's ref",
                ));
                mounts.push(GitMount::new(
                    logs,
                    false,
                    "the directory of the session branch's reflog",
                ));
            }
            RefFormat::Reftable => mounts.push(GitMount::new(
                common.join("reftable"),
                false,
                "the ref store (reftable: every ref lives here)",
            )),
        }
        mounts.push(GitMount::new(
            admin.to_path_buf(),
            false,
            "the worktree's own HEAD, index and reflog",
        ));
        for (name, why) in ADMIN_READ_ONLY {
            let path = admin.join(name);
            if admin_file(&path)? {
                mounts.push(GitMount::new(path, true, why));
            }
        }
        // Parents before children, whatever the layout on disk (a worktree
        // directory could live inside the repository, say).
        mounts.sort_by_key(|mount| mount.target.components().count());
        Ok(mounts)
    }

    /// The bind mounts for a clone: the clone and nothing of the host
    /// repository. Its `config` and `hooks` are read-only too: kennel runs
    /// only `upload-pack` in a clone a sandbox had (see [`Repo::sync`]),
    /// and git with the clone's config only in a clone whose config the
    /// agent could never write (a remote backend's, which the Pod gets a
    /// copy of: [`Repo::receive_bundle`]); they also protect a user who
    /// later runs git there by hand. `.git` is mounted onto itself so that it cannot be renamed
    /// away and replaced by a git dir of the agent's.
    pub fn mounts_for_clone(&self, checkout: &Checkout) -> Result<Vec<GitMount>> {
        self.check_ours(checkout)?;
        if !std::fs::symlink_metadata(&checkout.dir).is_ok_and(|meta| meta.is_dir()) {
            return Err(GitError::CheckoutMissing {
                path: checkout.dir.clone(),
            });
        }
        let mounts = clone_mounts(checkout);
        check_mount_sources(&mounts)?;
        Ok(mounts)
    }
}

impl Repo {
    /// The object directories `objects/info/alternates` names (absolute, or
    /// relative to the object directory), those that are object stores
    /// ([`object_store`]). One level: an alternate's own alternates are not
    /// followed. Read when a worktree checkout is created, and recorded.
    pub(crate) fn alternates(&self) -> Vec<PathBuf> {
        let objects = self.common_dir.join("objects");
        let file = objects.join("info/alternates");
        if check_no_symlinks(&self.common_dir, std::slice::from_ref(&file)).is_err() {
            tracing::warn!(file = %file.display(), "alternates ignored: behind a symlink");
            return Vec::new();
        }
        let Ok(text) = crate::read_no_follow(&file) else {
            return Vec::new();
        };
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| std::fs::canonicalize(objects.join(line)).ok())
            .filter(|path| match object_store(path, &self.common_dir) {
                Ok(()) => true,
                Err(reason) => {
                    tracing::warn!(lender = %path.display(), reason, "alternate not used");
                    false
                }
            })
            .collect()
    }
}

/// Whether `path` (canonical) is an object store that a sandbox may see:
/// a directory, outside the repository, laid out as git lays out one (a
/// `pack` directory, `info`, two-hex-digit directories, git's temporary
/// files) and with nothing in it, or in `pack` and `info`, that is not a
/// file or a directory: no symlink, socket, FIFO or device. A home's
/// `~/.ssh` or a `/run/user/<uid>` is not one.
pub(crate) fn object_store(path: &Path, common_dir: &Path) -> std::result::Result<(), String> {
    if path.starts_with(common_dir) {
        return Err("it is inside the repository".into());
    }
    let meta = std::fs::symlink_metadata(path).map_err(|error| error.to_string())?;
    if !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    let plain = |dir: &Path| -> std::result::Result<Vec<(String, std::fs::FileType)>, String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|error| error.to_string())? {
            let entry = entry.map_err(|error| error.to_string())?;
            let kind = entry.file_type().map_err(|error| error.to_string())?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !kind.is_file() && !kind.is_dir() {
                return Err(format!(
                    "{} is not a file or a directory",
                    entry.path().display()
                ));
            }
            out.push((name, kind));
        }
        Ok(out)
    };
    let mut has_pack = false;
    for (name, kind) in plain(path)? {
        let hex_dir = name.len() == 2 && name.bytes().all(|byte| byte.is_ascii_hexdigit());
        match name.as_str() {
            "pack" | "info" if kind.is_dir() => {
                has_pack |= name == "pack";
                plain(&path.join(&name))?;
            }
            _ if hex_dir && kind.is_dir() => {}
            _ if name.starts_with("tmp_") || name.starts_with("incoming-") => {}
            _ => return Err(format!("{name} does not belong in an object store")),
        }
    }
    if !has_pack {
        return Err("it has no pack directory".into());
    }
    Ok(())
}

/// The directories that hold `branch`'s ref and reflog (files backend).
pub(crate) fn ref_dirs(common_dir: &Path, branch: &str) -> Vec<PathBuf> {
    let dir = branch_dir(branch);
    ["refs/heads", "logs/refs/heads"]
        .into_iter()
        .map(|base| {
            if dir.is_empty() {
                common_dir.join(base)
            } else {
                common_dir.join(base).join(dir)
            }
        })
        .collect()
}

/// Refuses when a component of one of `paths` below `root` (`root` itself
/// is trusted) is a symlink. Components that do not exist end the walk.
pub(crate) fn check_no_symlinks(root: &Path, paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        let Ok(rest) = path.strip_prefix(root) else {
            return Err(GitError::Tampered {
                path: path.clone(),
                reason: format!("it is not inside {}", root.display()),
            });
        };
        let mut current = root.to_path_buf();
        for component in rest.components() {
            current.push(component);
            match std::fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(GitError::Tampered {
                        path: current,
                        reason: "it is a symlink (a session may have planted it)".into(),
                    });
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    Ok(())
}

/// A clone's mounts: the clone, and its git dir with `config` and `hooks`
/// read-only.
fn clone_mounts(checkout: &Checkout) -> Vec<GitMount> {
    let git_dir = checkout.dir.join(".git");
    vec![
        GitMount::new(checkout.dir.clone(), false, "the session's clone"),
        GitMount::new(git_dir.clone(), false, "the clone's git dir"),
        GitMount::new(git_dir.join("config"), true, "the clone's config"),
        GitMount::new(git_dir.join("hooks"), true, "the clone's hooks"),
    ]
}

/// Every mount's source is a path with no symlink in it: a bind mount
/// follows symlinks on the host, so one planted in a writable part of the
/// repository would mount whatever it names.
fn check_mount_sources(mounts: &[GitMount]) -> Result<()> {
    for mount in mounts {
        let canonical = std::fs::canonicalize(&mount.host).map_err(|source| GitError::Io {
            path: mount.host.clone(),
            source,
        })?;
        if canonical != mount.host {
            return Err(GitError::Tampered {
                path: mount.host.clone(),
                reason: format!(
                    "it leads through a symlink (to {}); kennel mounts no path a session could have redirected",
                    canonical.display()
                ),
            });
        }
    }
    Ok(())
}

fn admin_dir(checkout: &Checkout) -> Result<&Path> {
    checkout
        .admin_dir
        .as_deref()
        .ok_or_else(|| GitError::Tampered {
            path: checkout.dir.clone(),
            reason: "the worktree checkout has no registration directory recorded".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_directory() {
        assert_eq!(branch_dir("kennel/claude-0"), "kennel");
        assert_eq!(branch_dir("a/b/c"), "a/b");
        assert_eq!(branch_dir("foo"), "");
    }
}
