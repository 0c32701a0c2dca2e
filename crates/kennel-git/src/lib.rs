//! kennel's git workspace modes and review flow.
//!
//! A session can see the repository in one of three ways (issue 6):
//!
//! - **direct**: the user's checkout itself (handled by `kennel-core`, not here);
//! - **worktree**: a `git worktree` of the user's repository on a new branch
//!   ([`Repo::create_worktree`]), mounted at its own absolute path with the
//!   repository's git dir partly read-only ([`Repo::mounts_for_worktree`]);
//! - **clone**: a private clone that shares nothing writable with the host
//!   repository ([`Repo::create_clone`]); its branch comes back on
//!   [`Repo::sync`]. A sandbox that cannot share the clone's directory (a
//!   Kubernetes Pod works on a copy) sends its work back as a git bundle
//!   ([`bundle_command`] in the sandbox, [`Repo::receive_bundle`] on the
//!   host), which sets the clone to what the sandbox had.
//!
//! and the user reviews the work with [`Repo::diff`], takes it with
//! [`Repo::merge`] or [`Repo::apply`], or drops it with [`Repo::discard`].
//!
//! # Trust
//!
//! Everything an agent could have written is data to kennel, never
//! configuration: git runs programs named in config files (`core.fsmonitor`,
//! `filter.<x>.clean`, `diff.<x>.textconv`, hooks…), so kennel never runs git
//! with an agent-writable config or hooks directory, and never lets git
//! discover a repository by itself inside an agent's checkout:
//!
//! - Every command names its git dir and work tree (`--git-dir`,
//!   `--work-tree`). For an agent's checkout the git dir is always the
//!   *host's* git dir (its config and hooks are read-only in the sandbox),
//!   with a temporary index: kennel reads the agent's files, never the
//!   worktree's `.git` file, its admin dir (`commondir`, `config.worktree`,
//!   `index`) or a clone's `.git`.
//! - Every command runs with hooks and fsmonitor off, no pager, no editor,
//!   and every diff with `--no-ext-diff --no-textconv` ([`git`] module).
//! - No filter driver runs on a session's files, in either direction
//!   (`worktree add`, snapshots, `merge`, `apply`): not even the user's own,
//!   because the agent's `.gitattributes` would choose which files go
//!   through it. Files are recorded and checked out byte for byte (Git LFS:
//!   pointers stay pointers).
//! - Nested repositories (gitlinks, embedded repositories) are never
//!   entered: no git process ever starts inside one, so their config,
//!   filters, hooks and fsmonitor are never read (`review` module).
//! - The one git process that runs *in* an agent's clone is `git
//!   upload-pack`, started by `git fetch <clone>` in the host repository
//!   ([`Repo::sync`]): git designs upload-pack to be safe in an untrusted
//!   repository (it ignores hooks and honours `uploadpack.packObjectsHook`
//!   only from protected config; see git's `gitsecurityboundary(7)`).
//! - A bundle a sandbox sends back is bytes of the agent's choosing: only
//!   its two refs are read, its objects are checked by `git index-pack
//!   --strict` in a quarantine before they enter the clone, and its files
//!   are written by git with no filter or hook ([`Repo::receive_bundle`]).
//!   That is the one time kennel runs git on a clone's own git dir: a clone
//!   that no sandbox has had (the sandbox worked on a copy), whose config is
//!   kennel's.
//!
//! What a worktree sandbox mounts ([`Repo::mounts_for_worktree`]) comes
//! from kennel's own paths and from what was recorded when the checkout
//! was created ([`Checkout::alternates`]), never from files an agent could
//! have written since, and no mount source leads through a symlink. The
//! shared object store is writable to the agent: [`Repo::verify_objects`]
//! notices an object it replaced, and [`Repo::merge`] / [`Repo::apply`]
//! refuse then ([`GitError::ObjectsTampered`]).
//!
//! This crate never prints: every failure is a [`GitError`] with a hint.

mod bundle;
mod error;
mod git;
mod mounts;
mod objects;
mod review;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use bundle::{Received, WORK_TREE_REF, bundle_command};
pub use error::{GitError, Result};
pub use mounts::GitMount;
pub use objects::ObjectProblem;
pub use review::MergeOutcome;

use git::Cmd;

/// The empty directory kennel keeps inside the directory of a session
/// branch's ref (e.g. `refs/heads/kennel/.kennel`) and of its reflog. That
/// directory is bind-mounted writable into the sandbox; `git pack-refs`
/// (run by any `git gc` on the host) deletes ref directories that it
/// empties, which would leave the sandbox writing its branch into a deleted
/// directory. git ignores names starting with a dot there (they are never
/// valid ref names), and `git fsck` / `git refs verify` accept an empty
/// directory.
pub const KEEP_DIR: &str = ".kennel";

/// The oldest git this crate works with (`git worktree add --reason`);
/// [`Repo::merge`] needs 2.38, and [`Repo::apply`] takes a 3-way route from
/// 2.40 on (a patch before). Debian 12 has 2.39.
const MIN_GIT: (u32, u32) = (2, 36);

/// How a session sees the repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckoutMode {
    Worktree,
    Clone,
}

/// What a path is in a commit's tree, as a checkout of it will have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeEntry {
    Directory,
    File,
    Symlink,
}

/// `path` as `canonicalize` will give it once it exists: its deepest
/// existing ancestor canonical, the rest as it is.
fn canonical_to_be(path: &Path) -> std::io::Result<PathBuf> {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(canonical) => {
                return Ok(rest
                    .iter()
                    .rev()
                    .fold(canonical, |out, part| out.join(part)));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Err(error);
                };
                rest.push(name);
                existing = parent;
            }
            Err(error) => return Err(error),
        }
    }
}

/// A session's own checkout: a worktree or a clone, on its own branch.
/// Plain data, so that the session registry can keep it (as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    pub mode: CheckoutMode,
    /// The checkout's directory (absolute, canonical).
    pub dir: PathBuf,
    /// The session's branch, e.g. `kennel/claude-0`, in the host repository
    /// (and, in clone mode, in the clone).
    pub branch: String,
    /// The commit the session started from.
    pub base: String,
    /// The host repository's common git dir: the one git dir kennel trusts.
    pub common_dir: PathBuf,
    /// Worktree mode: git's administrative directory for this worktree,
    /// `<common_dir>/worktrees/<name>`.
    pub admin_dir: Option<PathBuf>,
    /// Worktree mode: the object directories the repository borrows from
    /// (`objects/info/alternates`), as they were when the checkout was
    /// created, before any agent of this session ran, and checked to be
    /// object stores. The only lenders a sandbox of this checkout gets
    /// mounted: `objects/info` is read-only in the sandbox, and kennel never
    /// re-reads it for an existing checkout. Empty in records made before
    /// kennel kept it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alternates: Vec<PathBuf>,
}

/// Who a commit kennel makes on the agent's behalf is by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

/// The user's checkout: on a branch, or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "name")]
pub enum Head {
    /// `refs/heads/<name>`.
    Branch(String),
    Detached,
}

/// How the repository stores refs: what the sandbox needs writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RefFormat {
    Files,
    Reftable,
}

/// The host repository, as found from the workspace.
#[derive(Debug, Clone)]
pub struct Repo {
    toplevel: PathBuf,
    git_dir: PathBuf,
    common_dir: PathBuf,
    head: Head,
    head_commit: String,
    object_format: String,
    ref_format: RefFormat,
    version: (String, Vec<u32>),
}

impl Repo {
    /// The repository enclosing `workspace_root` (the user's own checkout:
    /// trusted, so git may discover it).
    pub fn open(workspace_root: &Path) -> Result<Repo> {
        let not_a_repo = || GitError::NotARepository {
            path: workspace_root.to_path_buf(),
        };
        if !workspace_root.is_dir() {
            return Err(not_a_repo());
        }
        let version = git::version()?;
        let parts = &version.1;
        if (
            parts.first().copied().unwrap_or(0),
            parts.get(1).copied().unwrap_or(0),
        ) < MIN_GIT
        {
            return Err(GitError::GitTooOld {
                found: version.0.clone(),
                need: "2.36",
                feature: "worktree and clone sessions",
            });
        }
        let output = Cmd::new()
            .arg("-C")
            .arg(workspace_root)
            .args([
                "rev-parse",
                "--path-format=absolute",
                "--show-toplevel",
                "--absolute-git-dir",
                "--git-common-dir",
                "--show-object-format",
            ])
            .run()?;
        if output.status != Some(0) {
            // Outside a repository, or in a bare one (no top level).
            return Err(not_a_repo());
        }
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        let [toplevel, git_dir, common_dir, object_format] = lines[..] else {
            return Err(not_a_repo());
        };
        let canonical = |path: &str| {
            std::fs::canonicalize(path).map_err(|source| GitError::Io {
                path: PathBuf::from(path),
                source,
            })
        };
        let toplevel = canonical(toplevel)?;
        let git_dir = canonical(git_dir)?;
        let common_dir = canonical(common_dir)?;
        // `--show-ref-format` is git 2.45; older gits only know files.
        let ref_format = match Cmd::repo(&common_dir, None)
            .args(["rev-parse", "--show-ref-format"])
            .text()
        {
            Ok(format) if format == "reftable" => RefFormat::Reftable,
            _ => RefFormat::Files,
        };
        let mut repo = Repo {
            toplevel,
            git_dir,
            common_dir,
            head: Head::Detached,
            head_commit: String::new(),
            object_format: object_format.to_string(),
            ref_format,
            version,
        };
        let (head, commit) = repo.current_head()?;
        repo.head = head;
        repo.head_commit = commit.ok_or_else(|| GitError::NoCommits {
            path: repo.toplevel.clone(),
        })?;
        Ok(repo)
    }

    /// The user's checkout (the repository's top level).
    pub fn toplevel(&self) -> &Path {
        &self.toplevel
    }

    /// The repository's common git dir (`git rev-parse --git-common-dir`).
    pub fn common_dir(&self) -> &Path {
        &self.common_dir
    }

    /// The user's branch when the repository was opened.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// The user's HEAD commit when the repository was opened.
    pub fn head_commit(&self) -> &str {
        &self.head_commit
    }

    pub fn ref_format(&self) -> RefFormat {
        self.ref_format
    }

    /// git's version, e.g. `2.47.3`.
    pub fn git_version(&self) -> &str {
        &self.version.0
    }

    fn git_at_least(&self, major: u32, minor: u32) -> bool {
        let parts = &self.version.1;
        let found = (
            parts.first().copied().unwrap_or(0),
            parts.get(1).copied().unwrap_or(0),
        );
        found >= (major, minor)
    }

    /// Git on the user's checkout, as it is now.
    fn host(&self) -> Cmd {
        Cmd::repo(&self.git_dir, Some(&self.toplevel))
    }

    /// Git on the user's checkout, writing files that came from a session
    /// (merge, apply) or into a session's checkout (worktree add): with no
    /// filter driver ([`git::NoFilters`]). The attributes that would choose
    /// one are the agent's (its `.gitattributes` is in the tree), and so is
    /// the content; a filter such as git-lfs's smudge would even fetch what
    /// the agent's `.lfsconfig` names. Files land as they are in the commit
    /// (LFS: pointers; `git lfs checkout` fills them in).
    fn host_unfiltered(&self) -> Result<Cmd> {
        Ok(self
            .host()
            .without_filters(&git::NoFilters::for_repo(&self.common_dir)?))
    }

    /// Git on the repository's refs and objects, with no work tree.
    fn common(&self) -> Cmd {
        Cmd::repo(&self.common_dir, None)
    }

    /// The user's branch and HEAD commit now (`None`: no commit yet).
    pub fn current_head(&self) -> Result<(Head, Option<String>)> {
        let symbolic = self.host().args(["symbolic-ref", "-q", "HEAD"]).run()?;
        let head = match symbolic.status {
            Some(0) => {
                let name = String::from_utf8_lossy(&symbolic.stdout).trim().to_string();
                Head::Branch(
                    name.strip_prefix("refs/heads/")
                        .map(str::to_string)
                        .unwrap_or(name),
                )
            }
            _ => Head::Detached,
        };
        let commit = self.resolve("HEAD")?;
        Ok((head, commit))
    }

    /// The commit `rev` names in the host repository, if any.
    fn resolve(&self, rev: &str) -> Result<Option<String>> {
        let output = self
            .host()
            .args(["rev-parse", "-q", "--verify", "--end-of-options"])
            .arg(format!("{rev}^{{commit}}"))
            .run()?;
        Ok((output.status == Some(0))
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string()))
    }

    fn check_branch_name(&self, branch: &str) -> Result<()> {
        let valid = !branch.starts_with('-')
            && Cmd::new()
                .args(["check-ref-format", "--branch", branch])
                .run()?
                .status
                == Some(0)
            // `--branch` also accepts `@{-1}` and friends; a session
            // branch must be a plain name.
            && !branch.contains("@{");
        if valid {
            Ok(())
        } else {
            Err(GitError::InvalidBranchName {
                branch: branch.to_string(),
            })
        }
    }

    fn check_new_branch(&self, branch: &str) -> Result<()> {
        self.check_branch_name(branch)?;
        if self
            .common()
            .args(["show-ref", "--verify", "--quiet"])
            .arg(format!("refs/heads/{branch}"))
            .yes()?
        {
            return Err(GitError::BranchExists {
                branch: branch.to_string(),
            });
        }
        Ok(())
    }

    /// Refuses a destination that exists and is not an empty directory;
    /// returns its absolute path.
    fn check_destination(dir: &Path) -> Result<PathBuf> {
        let io = |source| GitError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let dir = std::path::absolute(dir).map_err(io)?;
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {
                if std::fs::read_dir(&dir).map_err(io)?.next().is_some() {
                    return Err(GitError::DestinationExists { path: dir });
                }
            }
            Ok(_) => return Err(GitError::DestinationExists { path: dir }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io(error)),
        }
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        Ok(dir)
    }

    fn check_ours(&self, checkout: &Checkout) -> Result<()> {
        if checkout.common_dir != self.common_dir {
            return Err(GitError::OtherRepository {
                common_dir: checkout.common_dir.clone(),
            });
        }
        Ok(())
    }

    /// What a new checkout of either kind starts from: a branch name free to
    /// take, a destination that does not exist yet, and the commit of the
    /// user's `HEAD` (its base).
    fn new_checkout(&self, dir: &Path, branch: &str) -> Result<(PathBuf, String)> {
        self.check_new_branch(branch)?;
        let dir = Self::check_destination(dir)?;
        let (_, base) = self.current_head()?;
        let base = base.ok_or_else(|| GitError::NoCommits {
            path: self.toplevel.clone(),
        })?;
        Ok((dir, base))
    }

    /// The checkout [`Repo::create_worktree`] or [`Repo::create_clone`]
    /// would make at `dir` on `branch` now, made of nothing: what
    /// `--dry-run` shows. Refuses what they would refuse (a taken or
    /// invalid branch name, a destination in use, no commit yet); writes
    /// nothing.
    pub fn plan_checkout(&self, mode: CheckoutMode, dir: &Path, branch: &str) -> Result<Checkout> {
        self.check_new_branch(branch)?;
        let io = |source| GitError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let dir = std::path::absolute(dir).map_err(io)?;
        if std::fs::symlink_metadata(&dir).is_ok()
            && !std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_none())
        {
            return Err(GitError::DestinationExists { path: dir });
        }
        let dir = canonical_to_be(&dir).map_err(io)?;
        let (_, base) = self.current_head()?;
        let base = base.ok_or_else(|| GitError::NoCommits {
            path: self.toplevel.clone(),
        })?;
        let worktree = mode == CheckoutMode::Worktree;
        // git names a worktree's registration after its directory.
        let admin_dir = match (worktree, dir.file_name()) {
            (true, Some(name)) => Some(self.common_dir.join("worktrees").join(name)),
            _ => None,
        };
        Ok(Checkout {
            mode,
            branch: branch.to_string(),
            base,
            common_dir: self.common_dir.clone(),
            admin_dir,
            alternates: if worktree {
                self.alternates()
            } else {
                Vec::new()
            },
            dir,
        })
    }

    /// What `path` (relative to the top) is in `commit`'s tree, if anything.
    pub fn entry_in(&self, commit: &str, path: &Path) -> Result<Option<TreeEntry>> {
        if path.as_os_str().is_empty() {
            return Ok(Some(TreeEntry::Directory));
        }
        let output = self
            .common()
            .args([
                "ls-tree",
                "-z",
                "--full-tree",
                "--end-of-options",
                commit,
                "--",
            ])
            .arg(path)
            .ok()?;
        // `<mode> SP <type> SP <object> TAB <path> NUL`
        let line = output.split(|byte| *byte == 0).next().unwrap_or_default();
        let mode = line.split(|byte| *byte == b' ').next().unwrap_or_default();
        Ok(match mode {
            b"" => None,
            b"040000" => Some(TreeEntry::Directory),
            b"100644" | b"100755" => Some(TreeEntry::File),
            b"120000" => Some(TreeEntry::Symlink),
            // A submodule: checked out as an (empty) directory.
            b"160000" => Some(TreeEntry::Directory),
            _ => None,
        })
    }

    /// `git worktree add -b <branch> <dir> <HEAD commit>`: a new worktree on
    /// a new branch at the user's HEAD. The user's checkout, index and
    /// branch are not touched. The worktree is locked (`git worktree lock`)
    /// so that a `git worktree prune` that cannot see its directory (run in
    /// another sandbox, say) never drops its registration.
    pub fn create_worktree(&self, dir: &Path, branch: &str) -> Result<Checkout> {
        let _lock = self.lock_worktrees()?;
        let (dir, base) = self.new_checkout(dir, branch)?;
        // git is about to write the branch's ref and reflog: not through a
        // symlink an earlier session left where its directory goes (with a
        // branch outside a directory, `refs/heads` is writable to it).
        mounts::check_no_symlinks(
            &self.common_dir,
            &mounts::ref_dirs(&self.common_dir, branch),
        )?;
        // No filter: the checkout holds the commit's blobs as they are, as
        // a clone does, and as kennel's snapshot of it records them.
        let output = self
            .host_unfiltered()?
            .args(["worktree", "add", "--lock", "--reason"])
            .arg(format!("kennel session on {branch}"))
            .args(["-b", branch])
            .arg(&dir)
            .arg(&base)
            .run()?;
        if output.status != Some(0) {
            // git creates the branch before the worktree: a failed add can
            // leave it behind. Under the lock no other kennel took the name
            // since it was checked, so it is this add's to remove.
            self.delete_branch(branch)?;
            return Err(git::failed(
                vec!["worktree".into(), "add".into(), branch.into()],
                output,
            ));
        }
        let dir = std::fs::canonicalize(&dir).map_err(|source| GitError::Io {
            path: dir.clone(),
            source,
        })?;
        let admin_dir = self.admin_dir_of(&dir)?;
        objects::ensure_stamp(&self.common_dir)?;
        let checkout = Checkout {
            mode: CheckoutMode::Worktree,
            dir,
            branch: branch.to_string(),
            base,
            common_dir: self.common_dir.clone(),
            admin_dir: Some(admin_dir),
            alternates: self.alternates(),
        };
        if let Err(error) = self.prepare_worktree_mounts(&checkout) {
            let _ = self.discard(&checkout);
            return Err(error);
        }
        tracing::info!(dir = %checkout.dir.display(), branch, base = %checkout.base, "worktree created");
        Ok(checkout)
    }

    /// The admin dir git just made for the worktree at `dir`, read from the
    /// `.git` file git just wrote (nothing else has had a chance to).
    fn admin_dir_of(&self, dir: &Path) -> Result<PathBuf> {
        let gitfile = dir.join(".git");
        if !std::fs::symlink_metadata(&gitfile).is_ok_and(|meta| meta.is_file()) {
            return Err(GitError::Tampered {
                path: gitfile,
                reason: "the worktree's .git is not a file".into(),
            });
        }
        let text = read_no_follow(&gitfile).map_err(|source| GitError::Io {
            path: gitfile.clone(),
            source,
        })?;
        let path = text
            .trim()
            .strip_prefix("gitdir: ")
            .map(PathBuf::from)
            .and_then(|path| std::fs::canonicalize(path).ok())
            .filter(|path| path.parent() == Some(&self.common_dir.join("worktrees")))
            .ok_or_else(|| GitError::Tampered {
                path: gitfile,
                reason: "it does not point into the repository's worktrees directory".into(),
            })?;
        Ok(path)
    }

    /// A private clone of the repository at the user's HEAD commit, on a new
    /// branch `branch`, sharing nothing with the host repository:
    ///
    /// - `git init --template=` then `git fetch <host> <commit>` from inside
    ///   the new repository: objects travel as a pack (never hardlinked, no
    ///   `objects/info/alternates`), only the history of that commit (not
    ///   the user's other branches, nor other sessions' branches);
    /// - no hooks (the host's hooks are never copied by git; `--template=`
    ///   leaves out even the template's sample hooks), and a minimal config
    ///   (`core.*` as `git init` writes it, no remote: the host path would
    ///   mean nothing inside the sandbox);
    /// - the branch is also created in the host repository at the same
    ///   commit, which reserves the name; [`Repo::sync`] moves it.
    ///
    /// The clone works with the host repository not mounted at all.
    pub fn create_clone(&self, dir: &Path, branch: &str) -> Result<Checkout> {
        let (dir, base) = self.new_checkout(dir, branch)?;
        // Reserve the branch name in the host repository: the empty old
        // value makes this fail if someone else created it meanwhile.
        let reserved = self
            .common()
            .args(["update-ref", "-m", "kennel: clone session"])
            .arg(format!("refs/heads/{branch}"))
            .arg(&base)
            .arg("")
            .run()?;
        if reserved.status != Some(0) {
            return Err(GitError::BranchExists {
                branch: branch.to_string(),
            });
        }
        let created = std::fs::symlink_metadata(&dir).is_err();
        let result = objects::ensure_stamp(&self.common_dir)
            .and_then(|()| self.populate_clone(&dir, branch, &base));
        match result {
            Ok(dir) => {
                let checkout = Checkout {
                    mode: CheckoutMode::Clone,
                    dir,
                    branch: branch.to_string(),
                    base,
                    common_dir: self.common_dir.clone(),
                    admin_dir: None,
                    alternates: Vec::new(),
                };
                tracing::info!(dir = %checkout.dir.display(), branch, base = %checkout.base, "clone created");
                Ok(checkout)
            }
            Err(error) => {
                let _ = self.delete_branch(branch);
                if created {
                    let _ = std::fs::remove_dir_all(&dir);
                } else if let Ok(entries) = std::fs::read_dir(&dir) {
                    for entry in entries.flatten() {
                        let _ = remove_path(&entry.path());
                    }
                }
                Err(error)
            }
        }
    }

    fn populate_clone(&self, dir: &Path, branch: &str, base: &str) -> Result<PathBuf> {
        Cmd::new()
            .args(["init", "-q", "--template="])
            .arg(format!("--object-format={}", self.object_format))
            .args(["-b", branch])
            .arg(dir)
            .ok()?;
        let dir = std::fs::canonicalize(dir).map_err(|source| GitError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let git_dir = dir.join(".git");
        // The clone is kennel's own and empty so far: git may run in it.
        // Protocol v2 lets a fetch ask for any reachable commit, so a
        // detached HEAD needs no ref; `protocol.file.allow` is kennel's
        // decision for its own local path whatever GIT_PROTOCOL_FROM_USER
        // says.
        Cmd::repo(&git_dir, None)
            .config("protocol.file.allow=always")
            .config("protocol.version=2")
            .args([
                "fetch",
                "-q",
                "--no-tags",
                "--no-write-fetch-head",
                "--no-recurse-submodules",
            ])
            .arg(&self.common_dir)
            .arg(base)
            .ok()?;
        Cmd::repo(&git_dir, None)
            .args(["update-ref", "-m", "kennel: session start"])
            .arg(format!("refs/heads/{branch}"))
            .arg(base)
            .ok()?;
        // No filter (git-lfs's from the user's global config would try to
        // reach a remote the clone does not have): the files are the
        // commit's blobs, as kennel's snapshots record them.
        Cmd::repo(&git_dir, Some(&dir))
            .without_filters(&git::NoFilters::for_repo(&git_dir)?)
            .env("GIT_LFS_SKIP_SMUDGE", "1")
            .args(["checkout", "-q", "-f", branch])
            .ok()?;
        // An empty hooks directory, so that it can be mounted read-only.
        let hooks = git_dir.join("hooks");
        std::fs::create_dir_all(&hooks).map_err(|source| GitError::Io {
            path: hooks,
            source,
        })?;
        Ok(dir)
    }

    /// Holds every kennel's worktree additions and removals on this
    /// repository apart until dropped (an advisory `flock` on the common
    /// git dir; nothing is written there). Two `git worktree add` at once
    /// can fail: one reads the other's half-written `worktrees/<name>/`
    /// entry ("failed to read .../commondir"), seen with three sessions
    /// started together.
    pub(crate) fn lock_worktrees(&self) -> Result<std::fs::File> {
        let io = |source| GitError::Io {
            path: self.common_dir.clone(),
            source,
        };
        let dir = std::fs::File::open(&self.common_dir).map_err(io)?;
        dir.lock().map_err(io)?;
        Ok(dir)
    }

    /// Deletes `refs/heads/<branch>` in the host repository, if it is there.
    fn delete_branch(&self, branch: &str) -> Result<()> {
        if review::branch_tip(&self.common_dir, branch)?.is_none() {
            return Ok(());
        }
        self.common().args(["branch", "-D", "-q", branch]).ok()?;
        Ok(())
    }
}

/// Reads a text file that an agent could have replaced, never through a
/// symlink (`O_NOFOLLOW`): a link to the user's `~/.ssh/id_rsa` is an error,
/// not its content.
pub(crate) fn read_no_follow(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = open_no_follow(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

/// Opens a file an agent could have replaced for reading, never through a
/// symlink (`O_NOFOLLOW`: a link is an error) and without waiting on a FIFO
/// (`O_NONBLOCK`).
pub(crate) fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// Removes a file, symlink or directory tree without following symlinks.
pub(crate) fn remove_path(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}
