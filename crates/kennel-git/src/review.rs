//! The review flow: what a session changed, and taking it or leaving it.
//!
//! Reading an agent's checkout always goes through a *snapshot*: the host's
//! git dir (trusted config), the checkout's directory as the work tree, and
//! a temporary index that starts from a commit and gets `git add -A` of the
//! work tree. The result is a tree of everything in the checkout, committed
//! or not, untracked files included and ignored ones left out, made without
//! reading anything git-specific the agent could have written and without
//! touching the checkout's own index.
//!
//! Nothing in the checkout is run or followed (issue 11, class 1):
//!
//! - no filter driver runs ([`NoFilters`]): not one the user's config
//!   defines (the agent's `.gitattributes` would choose which of the
//!   user's programs read which of its files), and never one a nested
//!   repository defines (its config is never read: see the next point).
//!   Files are recorded byte for byte as the agent left them;
//! - nested repositories are gitlinks and are never entered: `git add`
//!   would run `git status` *inside* a gitlink whose commit is unchanged
//!   (diff-lib's `is_submodule_modified`), with that repository's own
//!   config, filters and fsmonitor, and no `-c` can stop it
//!   (`diff.ignoreSubmodules` is not read by `add`). So gitlinks are kept
//!   out of `git add -A` by pathspec and updated with `git update-index`,
//!   which only reads the nested repository's `HEAD`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{GitError, Result};
use crate::git::{Cmd, NoFilters, split_z};
use crate::{Checkout, CheckoutMode, Head, Identity, KEEP_DIR, RefFormat, Repo, remove_path};

/// What [`Repo::merge`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum MergeOutcome {
    /// The user's branch already had every commit of the session.
    UpToDate,
    /// The user's branch moved forward to the session's tip.
    FastForward { from: String, to: String },
    /// A merge commit joined the two.
    Merged { commit: String },
}

/// Where a snapshot's new objects go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Objects {
    /// Into the repository: the snapshot is about to be committed.
    Keep,
    /// Into a temporary object directory, gone with the snapshot: reading a
    /// session (diff, unmerged) never writes to the user's repository.
    Scratch,
}

/// A tree of a checkout's current content, and the temporary files that
/// hold it.
struct Snapshot {
    tree: String,
    scratch: tempfile::TempDir,
    objects: Objects,
    common_dir: PathBuf,
    filters: NoFilters,
}

impl Snapshot {
    /// Takes one: `read-tree <start>`, then `add -A` of `work_tree`.
    fn take(
        common_dir: &Path,
        work_tree: &Path,
        start: &str,
        objects: Objects,
    ) -> Result<Snapshot> {
        if !work_tree.is_dir() {
            return Err(GitError::CheckoutMissing {
                path: work_tree.to_path_buf(),
            });
        }
        let scratch = tempfile::Builder::new()
            .prefix("kennel-git-")
            .tempdir()
            .map_err(|source| GitError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let mut snapshot = Snapshot {
            tree: String::new(),
            scratch,
            objects,
            common_dir: common_dir.to_path_buf(),
            filters: NoFilters::for_repo(common_dir)?,
        };
        if objects == Objects::Scratch {
            let dir = snapshot.scratch.path().join("objects");
            std::fs::create_dir(&dir).map_err(|source| GitError::Io { path: dir, source })?;
        }
        snapshot
            .cmd(Some(work_tree))
            .args(["read-tree", "--end-of-options", start])
            .ok()?;
        // The gitlinks of the start: `add` must not see them (it would run
        // `git status` inside), `update-index` takes them without entering.
        let listing = snapshot.cmd(None).args(["ls-files", "-s", "-z"]).ok()?;
        let gitlinks: Vec<String> = split_z(&listing)
            .into_iter()
            .filter(|entry| entry.starts_with("160000 "))
            .filter_map(|entry| entry.split_once('\t').map(|(_, path)| path.to_string()))
            .collect();
        // The user's sparse-checkout patterns are about their checkout,
        // not about the agent's.
        let mut add = snapshot
            .cmd(Some(work_tree))
            .config("core.sparseCheckout=false")
            .args(["add", "-A", "--", "."]);
        for path in &gitlinks {
            add = add.arg(format!(":(exclude,literal){path}"));
        }
        add.ok()?;
        if !gitlinks.is_empty() {
            let mut input = Vec::new();
            for path in &gitlinks {
                input.extend_from_slice(path.as_bytes());
                input.push(0);
            }
            snapshot
                .cmd(Some(work_tree))
                .args(["update-index", "--add", "--remove", "-z", "--stdin"])
                .input(input)
                .ok()?;
        }
        snapshot.tree = snapshot.cmd(None).arg("write-tree").text()?;
        Ok(snapshot)
    }

    /// Git on the host's git dir with the snapshot's index (and object
    /// directory).
    fn cmd(&self, work_tree: Option<&Path>) -> Cmd {
        let mut cmd = Cmd::repo(&self.common_dir, work_tree)
            .without_filters(&self.filters)
            // The index is a temporary one, but keep it plain.
            .config("core.untrackedCache=false")
            .config("core.splitIndex=false")
            .config("advice.addEmbeddedRepo=false")
            .env("GIT_INDEX_FILE", self.scratch.path().join("index"));
        if self.objects == Objects::Scratch {
            cmd = cmd
                .env("GIT_OBJECT_DIRECTORY", self.scratch.path().join("objects"))
                .env(
                    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
                    self.common_dir.join("objects"),
                );
        }
        cmd
    }
}

fn common(common_dir: &Path) -> Cmd {
    Cmd::repo(common_dir, None)
}

fn rev(common_dir: &Path, rev: &str) -> Result<Option<String>> {
    let output = common(common_dir)
        .args(["rev-parse", "-q", "--verify", "--end-of-options", rev])
        .run()?;
    Ok((output.status == Some(0))
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string()))
}

pub(crate) fn branch_tip(common_dir: &Path, branch: &str) -> Result<Option<String>> {
    rev(common_dir, &format!("refs/heads/{branch}^{{commit}}"))
}

fn has_commit(common_dir: &Path, commit: &str) -> Result<bool> {
    Ok(rev(common_dir, &format!("{commit}^{{commit}}"))?.is_some())
}

fn is_ancestor(common_dir: &Path, ancestor: &str, descendant: &str) -> Result<bool> {
    common(common_dir)
        .args(["merge-base", "--is-ancestor", ancestor, descendant])
        .yes()
}

fn tree_of(common_dir: &Path, commit: &str) -> Result<String> {
    rev(common_dir, &format!("{commit}^{{tree}}"))?.ok_or_else(|| GitError::GitFailed {
        args: vec!["rev-parse".into(), format!("{commit}^{{tree}}")],
        status: None,
        stderr: "no such commit".into(),
    })
}

/// The tip of the clone's branch, asked of the clone itself through `git
/// ls-remote` (upload-pack: safe in an untrusted repository).
fn clone_tip(checkout: &Checkout) -> Result<Option<String>> {
    let git_dir = trusted_clone_git_dir(checkout)?;
    let refname = format!("refs/heads/{}", checkout.branch);
    let listing = common(&checkout.common_dir)
        .config("protocol.file.allow=always")
        .args(["ls-remote", "--end-of-options"])
        .arg(&git_dir)
        .arg(&refname)
        .text()?;
    Ok(listing.lines().find_map(|line| {
        let (sha, name) = line.split_once('\t')?;
        (name == refname).then(|| sha.to_string())
    }))
}

/// The clone's git dir, after checks that it is one the agent did not
/// redirect: a real directory (not a symlink to another of the user's
/// repositories), not a linked worktree (`commondir`), and with no
/// `objects/info/alternates` (which would make upload-pack serve objects
/// from any directory the agent names). These are checks, not a boundary:
/// what they catch would at worst bring another local repository's objects
/// into the session branch, never run code.
pub(crate) fn trusted_clone_git_dir(checkout: &Checkout) -> Result<PathBuf> {
    if !checkout.dir.is_dir() {
        return Err(GitError::CheckoutMissing {
            path: checkout.dir.clone(),
        });
    }
    let git_dir = checkout.dir.join(".git");
    let tampered = |path: PathBuf, reason: &str| GitError::Tampered {
        path,
        reason: reason.into(),
    };
    match std::fs::symlink_metadata(&git_dir) {
        Ok(meta) if meta.is_dir() => {}
        _ => return Err(tampered(git_dir, "the clone's .git is not a directory")),
    }
    for (name, reason) in [
        (
            "commondir",
            "it makes the clone a worktree of another repository",
        ),
        (
            "objects/info/alternates",
            "it borrows objects from another directory",
        ),
    ] {
        let path = git_dir.join(name);
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(tampered(path, reason));
        }
    }
    Ok(git_dir)
}

/// Brings the clone's branch into the host repository (see [`Repo::sync`]).
fn sync_clone(checkout: &Checkout) -> Result<String> {
    let common_dir = &checkout.common_dir;
    let Some(remote) = clone_tip(checkout)? else {
        return Err(GitError::BranchMissing {
            branch: checkout.branch.clone(),
        });
    };
    let local = branch_tip(common_dir, &checkout.branch)?;
    if let Some(local) = &local {
        // Nothing new, or the host is ahead: a commit kennel made of the
        // clone's uncommitted work sits on top of the clone's tip.
        if *local == remote
            || (has_commit(common_dir, &remote)? && is_ancestor(common_dir, &remote, local)?)
        {
            return Ok(local.clone());
        }
    }
    let git_dir = trusted_clone_git_dir(checkout)?;
    // Run in the host repository: its config is trusted. The clone only
    // runs upload-pack. Forced (`+`): the branch is the session's, and the
    // agent may have rewritten its history. `fetch.fsckObjects` rejects
    // malformed objects before they reach the user's repository.
    common(common_dir)
        .config("protocol.file.allow=always")
        .config("protocol.version=2")
        .config("fetch.fsckObjects=true")
        .args([
            "fetch",
            "-q",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-recurse-submodules",
            "--end-of-options",
        ])
        .arg(&git_dir)
        .arg(format!(
            "+refs/heads/{branch}:refs/heads/{branch}",
            branch = checkout.branch
        ))
        .ok()?;
    let tip = branch_tip(common_dir, &checkout.branch)?.ok_or_else(|| GitError::BranchMissing {
        branch: checkout.branch.clone(),
    })?;
    tracing::info!(branch = %checkout.branch, tip = %tip, "clone synced");
    Ok(tip)
}

/// The commit a snapshot of the checkout starts from: the session branch in
/// the host repository (for a clone: as of the last sync, or its start).
fn snapshot_start(checkout: &Checkout) -> Result<String> {
    match (
        branch_tip(&checkout.common_dir, &checkout.branch)?,
        checkout.mode,
    ) {
        (Some(tip), _) => Ok(tip),
        (None, CheckoutMode::Clone) => Ok(checkout.base.clone()),
        (None, CheckoutMode::Worktree) => Err(GitError::BranchMissing {
            branch: checkout.branch.clone(),
        }),
    }
}

impl Checkout {
    /// Commits whatever the checkout holds that its branch does not:
    /// modified, deleted and untracked files (ignored ones stay out), on
    /// top of the session branch, so that nothing is lost when the session
    /// ends. Returns the new commit, or `None` when there was nothing.
    ///
    /// The commit is made in the host repository from a snapshot (see the
    /// module docs): no hook runs, no config of the agent's is read, the
    /// commit is never signed (it is the agent's work, not the user's).
    /// - Worktree mode: the session branch moves to the new commit, and the
    ///   worktree's index is reset to it, so that `git status` inside is
    ///   clean when the session resumes.
    /// - Clone mode: the clone's branch is synced first ([`Repo::sync`]);
    ///   the commit lands on the host's branch only. The clone is not
    ///   written to: its files are still uncommitted there, and a later sync
    ///   keeps this commit unless the agent commits again (its new commits
    ///   then replace it, and the next `commit_all` records what is still
    ///   uncommitted).
    pub fn commit_all(&self, message: &str, author: &Identity) -> Result<Option<String>> {
        let start = match self.mode {
            CheckoutMode::Worktree => snapshot_start(self)?,
            CheckoutMode::Clone => sync_clone(self)?,
        };
        let snapshot = Snapshot::take(&self.common_dir, &self.dir, &start, Objects::Keep)?;
        if snapshot.tree == tree_of(&self.common_dir, &start)? {
            return Ok(None);
        }
        let commit = common(&self.common_dir)
            .env("GIT_AUTHOR_NAME", &author.name)
            .env("GIT_AUTHOR_EMAIL", &author.email)
            .env("GIT_COMMITTER_NAME", &author.name)
            .env("GIT_COMMITTER_EMAIL", &author.email)
            .args(["commit-tree", "--no-gpg-sign", "-p", &start, "-m", message])
            .arg(&snapshot.tree)
            .text()?;
        // Compare-and-swap: if the agent moved the branch meanwhile, fail
        // rather than drop its commit.
        common(&self.common_dir)
            .args([
                "update-ref",
                "-m",
                "kennel: commit the session's uncommitted work",
            ])
            .arg(format!("refs/heads/{}", self.branch))
            .arg(&commit)
            .arg(&start)
            .ok()?;
        if self.mode == CheckoutMode::Worktree {
            self.reset_worktree_index(&commit)?;
        }
        tracing::info!(branch = %self.branch, commit = %commit, "committed uncommitted work");
        Ok(Some(commit))
    }

    /// Points the worktree's own index at `commit`, if the worktree is still
    /// on the session branch. git writes it through `index.lock` and a
    /// rename, so a symlink the agent left as `index` is replaced, never
    /// followed.
    fn reset_worktree_index(&self, commit: &str) -> Result<()> {
        let Some(admin) = &self.admin_dir else {
            return Ok(());
        };
        let head = crate::read_no_follow(&admin.join("HEAD")).unwrap_or_default();
        if head.trim() != format!("ref: refs/heads/{}", self.branch) {
            return Ok(());
        }
        Cmd::repo(&self.common_dir, Some(&self.dir))
            .env("GIT_INDEX_FILE", admin.join("index"))
            .args(["read-tree", "--end-of-options", commit])
            .ok()?;
        Ok(())
    }
}

impl Repo {
    /// The session's changes against the commit it started from, committed
    /// and not, untracked files included: `git diff` output (or `--stat`).
    /// Bytes, because a diff shows files as they are, in any encoding.
    /// Nothing is written: neither the checkout's index nor the user's
    /// repository (new objects go to a temporary object directory).
    pub fn diff(&self, checkout: &Checkout, stat: bool) -> Result<Vec<u8>> {
        self.check_ours(checkout)?;
        let start = snapshot_start(checkout)?;
        let snapshot = Snapshot::take(&self.common_dir, &checkout.dir, &start, Objects::Scratch)?;
        let mut cmd = snapshot.cmd(None).args([
            "diff",
            "--no-ext-diff",
            "--no-textconv",
            "--submodule=short",
            "--no-color",
            "--ignore-submodules=none",
        ]);
        if stat {
            cmd = cmd.arg("--stat");
        }
        cmd.args(["--end-of-options", &checkout.base, &snapshot.tree])
            .ok()
    }

    /// Brings a clone's branch into the host repository as
    /// `refs/heads/<branch>` and returns its tip there. Worktree mode has
    /// nothing to bring (its commits are in the repository already) and
    /// returns the branch's tip.
    ///
    /// `git fetch <clone>/.git +refs/heads/B:refs/heads/B` runs in the host
    /// repository, with the host's config, no hooks, `fetch.fsckObjects`;
    /// the only git process in the clone is upload-pack, which git makes
    /// safe for untrusted repositories (it runs no hook, takes
    /// `uploadpack.packObjectsHook` from protected config only, and
    /// refuses lazy fetches: `GIT_NO_LAZY_FETCH`). A host branch that is
    /// ahead of the clone's (a [`Checkout::commit_all`] commit on top) is
    /// kept.
    pub fn sync(&self, checkout: &Checkout) -> Result<String> {
        self.check_ours(checkout)?;
        match checkout.mode {
            CheckoutMode::Clone => sync_clone(checkout),
            CheckoutMode::Worktree => {
                branch_tip(&self.common_dir, &checkout.branch)?.ok_or_else(|| {
                    GitError::BranchMissing {
                        branch: checkout.branch.clone(),
                    }
                })
            }
        }
    }

    /// Tracked files with changes in the user's checkout (staged or not).
    /// Untracked files are the business of [`Repo::check_overwrites`].
    fn dirty_files(&self) -> Result<Vec<String>> {
        let output = self
            .host()
            // A read-only question: git must not refresh the index file.
            .env("GIT_OPTIONAL_LOCKS", "0")
            .args([
                "status",
                "--porcelain=v1",
                "-z",
                "--untracked-files=no",
                "--ignore-submodules=none",
            ])
            .ok()?;
        let mut files = Vec::new();
        let mut entries = split_z(&output).into_iter();
        while let Some(entry) = entries.next() {
            let (code, path) = entry.split_at(entry.len().min(3));
            files.push(path.to_string());
            // A rename or copy is followed by its source path.
            if code.starts_with('R') || code.starts_with('C') {
                entries.next();
            }
        }
        Ok(files)
    }

    fn check_clean(&self) -> Result<()> {
        let files = self.dirty_files()?;
        if files.is_empty() {
            Ok(())
        } else {
            Err(GitError::DirtyCheckout { files })
        }
    }

    /// Refuses when going from `from` to `to` would create a file where the
    /// user has an untracked (or ignored: a `.env`, say) one: git would
    /// refuse the first and silently overwrite the second.
    fn check_overwrites(&self, from: &str, to: &str) -> Result<()> {
        let added = self
            .host()
            .args([
                "diff-tree",
                "-r",
                "-z",
                "--name-only",
                "--no-renames",
                "--diff-filter=A",
                "--end-of-options",
                from,
                to,
            ])
            .ok()?;
        let files: Vec<String> = split_z(&added)
            .into_iter()
            .filter(|path| {
                // Anything but "no such file" is in the way (ENOTDIR: a file
                // where the new path needs a directory).
                !matches!(
                    std::fs::symlink_metadata(self.toplevel.join(path)),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound
                )
            })
            .collect();
        if files.is_empty() {
            Ok(())
        } else {
            Err(GitError::WouldOverwrite { files })
        }
    }

    /// `git merge-tree --write-tree`: the merged tree, or the conflicting
    /// files. Computed without touching the index or any file.
    fn merge_tree(
        &self,
        base: Option<&str>,
        ours: &str,
        theirs: &str,
    ) -> Result<Result<String, Vec<String>>> {
        let mut cmd = self.common().args([
            "merge-tree",
            "--write-tree",
            "-z",
            "--name-only",
            "--no-messages",
        ]);
        if let Some(base) = base {
            cmd = cmd.arg(format!("--merge-base={base}"));
        }
        let cmd = cmd.args(["--end-of-options", ours, theirs]);
        let shown = cmd.shown();
        let output = cmd.run()?;
        // The tree comes first, conflicted or not; then the conflicted files.
        let mut parts = split_z(&output.stdout).into_iter();
        let tree = parts.next().unwrap_or_default().trim().to_string();
        match output.status {
            Some(0) => Ok(Ok(tree)),
            Some(1) => {
                let mut files: Vec<String> = parts.collect();
                files.sort();
                files.dedup();
                Ok(Err(files))
            }
            _ => Err(crate::git::failed(shown, output)),
        }
    }

    /// Merges the session's branch into the user's current branch: a
    /// fast-forward when possible, else a merge commit (`Merge branch
    /// '<branch>'`, by the user's configured identity).
    ///
    /// Checked before anything is touched, in this order: the checkout is
    /// on a branch ([`GitError::DetachedHead`]), has no uncommitted changes
    /// to tracked files ([`GitError::DirtyCheckout`]), the merge has no
    /// conflict ([`GitError::Conflicts`], from `git merge-tree`), and no
    /// untracked or ignored file is in the way
    /// ([`GitError::WouldOverwrite`]). Then the result commit is made and the
    /// checkout moves to it with `git merge --ff-only`. Only the session's
    /// committed work is merged: call [`Checkout::commit_all`] first to
    /// include the rest. A clone is synced first.
    pub fn merge(&self, checkout: &Checkout) -> Result<MergeOutcome> {
        self.check_ours(checkout)?;
        if !self.git_at_least(2, 38) {
            return Err(GitError::GitTooOld {
                found: self.version.0.clone(),
                need: "2.38",
                feature: "kennel merge (git merge-tree --write-tree)",
            });
        }
        let (head, head_commit) = self.current_head()?;
        let Head::Branch(_) = head else {
            return Err(GitError::DetachedHead);
        };
        let head_commit = head_commit.ok_or_else(|| GitError::NoCommits {
            path: self.toplevel.clone(),
        })?;
        let tip = self.sync(checkout)?;
        // Objects an agent replaced would be merged as the user's history.
        self.check_objects()?;
        self.check_clean()?;
        if is_ancestor(&self.common_dir, &tip, &head_commit)? {
            return Ok(MergeOutcome::UpToDate);
        }
        let (target, outcome) = if is_ancestor(&self.common_dir, &head_commit, &tip)? {
            (
                tip.clone(),
                MergeOutcome::FastForward {
                    from: head_commit.clone(),
                    to: tip.clone(),
                },
            )
        } else {
            let tree = self
                .merge_tree(None, &head_commit, &tip)?
                .map_err(|files| GitError::Conflicts { files })?;
            let commit = self
                .host()
                .args(["commit-tree", "-p", &head_commit, "-p", &tip, "-m"])
                .arg(format!("Merge branch '{}'", checkout.branch))
                .arg(&tree)
                .text()?;
            (commit.clone(), MergeOutcome::Merged { commit })
        };
        self.check_overwrites(&head_commit, &target)?;
        self.host_unfiltered()?
            .args(["merge", "--ff-only", "-q", "--no-stat", "--end-of-options"])
            .arg(&target)
            .ok()?;
        tracing::info!(branch = %checkout.branch, outcome = ?outcome, "merged");
        Ok(outcome)
    }

    /// Brings the session's changes (its branch against the commit it
    /// started from) into the user's checkout as uncommitted, staged
    /// changes; HEAD does not move. Refuses, touching nothing, on
    /// uncommitted changes, on conflicts with what the user's HEAD has
    /// changed since, and on untracked files in the way. Works on a
    /// detached HEAD too. A clone is synced first.
    ///
    /// git >= 2.40: a 3-way merge of base → session onto HEAD, computed with
    /// `git merge-tree --merge-base`, then `git read-tree -m -u HEAD
    /// <result>`. Older gits: the binary patch base..tip, checked with `git
    /// apply --index --check`, then applied.
    pub fn apply(&self, checkout: &Checkout) -> Result<()> {
        self.check_ours(checkout)?;
        let (_, head_commit) = self.current_head()?;
        let head_commit = head_commit.ok_or_else(|| GitError::NoCommits {
            path: self.toplevel.clone(),
        })?;
        let tip = self.sync(checkout)?;
        // Objects an agent replaced would be merged as the user's history.
        self.check_objects()?;
        self.check_clean()?;
        if !self.git_at_least(2, 40) {
            return self.apply_patch(checkout, &tip);
        }
        let tree = self
            .merge_tree(Some(&checkout.base), &head_commit, &tip)?
            .map_err(|files| GitError::Conflicts { files })?;
        if tree == tree_of(&self.common_dir, &head_commit)? {
            return Ok(());
        }
        self.check_overwrites(&head_commit, &tree)?;
        self.host_unfiltered()?
            .args([
                "read-tree",
                "-m",
                "-u",
                "--end-of-options",
                &head_commit,
                &tree,
            ])
            .ok()?;
        tracing::info!(branch = %checkout.branch, "applied");
        Ok(())
    }

    /// [`Repo::apply`] the way it works with gits older than 2.40 (no
    /// `merge-tree --merge-base`): the binary patch base..tip, checked with
    /// `git apply --index --check`, then applied. Public for tests only.
    #[doc(hidden)]
    pub fn apply_with_patch(&self, checkout: &Checkout) -> Result<()> {
        self.check_ours(checkout)?;
        let tip = self.sync(checkout)?;
        // Objects an agent replaced would be merged as the user's history.
        self.check_objects()?;
        self.check_clean()?;
        self.apply_patch(checkout, &tip)
    }

    fn apply_patch(&self, checkout: &Checkout, tip: &str) -> Result<()> {
        let patch = self
            .common()
            .args([
                "diff",
                "--binary",
                "--full-index",
                "--no-ext-diff",
                "--no-textconv",
                "--submodule=short",
                "--no-color",
                "--end-of-options",
                &checkout.base,
                tip,
            ])
            .ok()?;
        if patch.is_empty() {
            return Ok(());
        }
        self.check_overwrites(&checkout.base, tip)?;
        let filters = NoFilters::for_repo(&self.common_dir)?;
        let check = self
            .host()
            .without_filters(&filters)
            .args(["apply", "--index", "--check", "-"])
            .input(patch.clone())
            .run()?;
        if check.status != Some(0) {
            return Err(GitError::DoesNotApply {
                detail: check.stderr.trim().to_string(),
            });
        }
        self.host()
            .without_filters(&filters)
            .args(["apply", "--index", "-"])
            .input(patch)
            .ok()?;
        tracing::info!(branch = %checkout.branch, "applied as a patch");
        Ok(())
    }

    /// Whether the session has work the user's current branch (or detached
    /// HEAD) does not: commits not in it, or uncommitted changes in the
    /// checkout. For a clone, commits not synced yet count (the clone is
    /// asked with `ls-remote`; nothing is fetched). Writes nothing.
    pub fn unmerged(&self, checkout: &Checkout) -> Result<bool> {
        self.check_ours(checkout)?;
        let (_, head_commit) = self.current_head()?;
        let Some(head_commit) = head_commit else {
            return Ok(true);
        };
        let common_dir = &self.common_dir;
        let host_tip = branch_tip(common_dir, &checkout.branch)?;
        let merged = |commit: &str| -> Result<bool> {
            Ok(has_commit(common_dir, commit)? && is_ancestor(common_dir, commit, &head_commit)?)
        };
        // The commit the checkout's files are compared against.
        let tip = match checkout.mode {
            CheckoutMode::Worktree => host_tip.clone().ok_or_else(|| GitError::BranchMissing {
                branch: checkout.branch.clone(),
            })?,
            CheckoutMode::Clone => {
                if !checkout.dir.is_dir() {
                    // Only what was synced is left.
                    return Ok(match &host_tip {
                        Some(tip) => !merged(tip)?,
                        None => false,
                    });
                }
                clone_tip(checkout)?.ok_or_else(|| GitError::BranchMissing {
                    branch: checkout.branch.clone(),
                })?
            }
        };
        if !merged(&tip)? {
            return Ok(true);
        }
        if let Some(host_tip) = &host_tip
            && *host_tip != tip
            && !merged(host_tip)?
        {
            return Ok(true);
        }
        if !checkout.dir.is_dir() {
            return Ok(false);
        }
        let snapshot = Snapshot::take(common_dir, &checkout.dir, &tip, Objects::Scratch)?;
        if snapshot.tree == tree_of(common_dir, &tip)? {
            return Ok(false);
        }
        // Uncommitted in the clone, but already recorded by commit_all on
        // the host branch, and that is merged.
        if let Some(host_tip) = &host_tip
            && *host_tip != tip
            && snapshot.tree == tree_of(common_dir, host_tip)?
        {
            return Ok(!merged(host_tip)?);
        }
        Ok(true)
    }

    /// Removes the session's checkout and branch: the worktree (directory
    /// and registration) or the clone's directory, then `refs/heads/<branch>`
    /// in the host repository. Nothing of the session is left: no
    /// registration in `git worktree list`, no branch, no directory. The
    /// user's checkout is not touched. Work that was not merged is gone.
    pub fn discard(&self, checkout: &Checkout) -> Result<()> {
        self.check_ours(checkout)?;
        // A checkout that contains the user's repository is a bug or a
        // tampered registry, never something to delete.
        if self.toplevel.starts_with(&checkout.dir) || self.common_dir.starts_with(&checkout.dir) {
            return Err(GitError::Tampered {
                path: checkout.dir.clone(),
                reason: "it contains your repository".into(),
            });
        }
        // git would refuse to delete the branch only after the checkout is
        // gone: refuse first.
        if self.current_head()?.0 == Head::Branch(checkout.branch.clone()) {
            return Err(GitError::BranchCheckedOut {
                branch: checkout.branch.clone(),
            });
        }
        if checkout.mode == CheckoutMode::Worktree {
            let _lock = self.lock_worktrees()?;
            self.remove_worktree(checkout)?;
        } else {
            remove_path(&checkout.dir).map_err(|source| GitError::Io {
                path: checkout.dir.clone(),
                source,
            })?;
        }
        self.delete_branch(&checkout.branch)?;
        self.remove_keep_dirs(&checkout.branch);
        tracing::info!(branch = %checkout.branch, dir = %checkout.dir.display(), "discarded");
        Ok(())
    }

    fn remove_worktree(&self, checkout: &Checkout) -> Result<()> {
        // Unlock first: `remove` refuses a locked worktree, and a
        // registration left locked could never be pruned.
        let _ = self
            .host()
            .args(["worktree", "unlock", "--end-of-options"])
            .arg(&checkout.dir)
            .run()?;
        // `--force` twice: the agent's uncommitted work goes too (that is
        // what discarding means), and git then never runs `git status`
        // inside the worktree.
        let removed = self
            .host()
            .args([
                "worktree",
                "remove",
                "--force",
                "--force",
                "--end-of-options",
            ])
            .arg(&checkout.dir)
            .run()?;
        if removed.status == Some(0) {
            return Ok(());
        }
        // git refuses a worktree whose .git file no longer matches its
        // registration (or whose directory is gone): remove both by hand,
        // the registration only if it is still this worktree's.
        tracing::debug!(stderr = %removed.stderr.trim(), "git worktree remove failed; removing by hand");
        remove_path(&checkout.dir).map_err(|source| GitError::Io {
            path: checkout.dir.clone(),
            source,
        })?;
        if let Some(admin) = &checkout.admin_dir {
            let gitdir = crate::read_no_follow(&admin.join("gitdir")).unwrap_or_default();
            if Path::new(gitdir.trim()) == checkout.dir.join(".git") {
                remove_path(admin).map_err(|source| GitError::Io {
                    path: admin.clone(),
                    source,
                })?;
            }
        }
        Ok(())
    }

    /// Removes the [`KEEP_DIR`]s once no branch is left beside them, and
    /// with them the then-empty ref directories. Best effort: another
    /// session creating a branch there meanwhile makes the removal fail,
    /// which is right.
    fn remove_keep_dirs(&self, branch: &str) {
        let Some((dir, _)) = branch.rsplit_once('/') else {
            return;
        };
        if self.ref_format != RefFormat::Files {
            return;
        }
        for base in ["refs/heads", "logs/refs/heads"] {
            let parent = self.common_dir.join(base).join(dir);
            let only_keep = std::fs::read_dir(&parent)
                .is_ok_and(|entries| entries.flatten().all(|entry| entry.file_name() == KEEP_DIR));
            if only_keep {
                let _ = std::fs::remove_dir(parent.join(KEEP_DIR));
                let _ = std::fs::remove_dir(&parent);
            }
        }
    }
}
