use std::path::PathBuf;

/// Everything that can go wrong. [`GitError::is_refusal`] separates the
/// refusals (kennel decided not to act and touched nothing: the user can fix
/// the situation and retry; the CLI's exit code 2) from failures (git or the
/// filesystem failed; exit code 125).
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("git is not installed (no `git` on PATH)")]
    GitMissing,
    #[error("`git {}` failed{}: {}", args.join(" "), status.map(|code| format!(" (exit {code})")).unwrap_or_default(), stderr.trim())]
    GitFailed {
        args: Vec<String>,
        status: Option<i32>,
        stderr: String,
    },
    #[error("git {found} is too old for {feature} (needs git {need} or newer)")]
    GitTooOld {
        found: String,
        need: &'static str,
        feature: &'static str,
    },
    #[error("{path} is not inside a git repository")]
    NotARepository { path: PathBuf },
    #[error("the repository at {path} has no commit yet")]
    NoCommits { path: PathBuf },
    #[error("`{branch}` is not a valid branch name")]
    InvalidBranchName { branch: String },
    #[error("the branch `{branch}` already exists")]
    BranchExists { branch: String },
    #[error("the branch `{branch}` does not exist (any more)")]
    BranchMissing { branch: String },
    #[error("your checkout is on the session's branch `{branch}`")]
    BranchCheckedOut { branch: String },
    #[error("{path} already exists")]
    DestinationExists { path: PathBuf },
    #[error("the checkout {path} is gone")]
    CheckoutMissing { path: PathBuf },
    #[error("your checkout has uncommitted changes: {}", files.join(", "))]
    DirtyCheckout { files: Vec<String> },
    #[error("untracked files in your checkout would be overwritten: {}", files.join(", "))]
    WouldOverwrite { files: Vec<String> },
    #[error("the session's changes conflict with your checkout in: {}", files.join(", "))]
    Conflicts { files: Vec<String> },
    #[error("the session's changes do not apply to your checkout: {detail}")]
    DoesNotApply { detail: String },
    #[error("your checkout is on a detached HEAD; there is no branch to merge into")]
    DetachedHead,
    #[error("this session belongs to another repository ({common_dir})")]
    OtherRepository { common_dir: PathBuf },
    #[error("the repository's object store was tampered with (an object was replaced since kennel last checked it): {}", problems.iter().map(|problem| problem.to_string()).collect::<Vec<_>>().join("; "))]
    ObjectsTampered {
        problems: Vec<crate::objects::ObjectProblem>,
    },
    #[error("refusing to use {path}: {reason}")]
    Tampered { path: PathBuf, reason: String },
    #[error("{path} is a worktree session's checkout; only a clone can take in a sandbox's bundle")]
    NotAClone { path: PathBuf },
    #[error("refusing the bundle the sandbox sent back: {reason}")]
    BadBundle { reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl GitError {
    /// kennel refused and changed nothing: bad usage or a state the user can
    /// fix (exit code 2), as opposed to a failure (exit code 125).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            GitError::NotARepository { .. }
                | GitError::NoCommits { .. }
                | GitError::InvalidBranchName { .. }
                | GitError::BranchExists { .. }
                | GitError::BranchMissing { .. }
                | GitError::BranchCheckedOut { .. }
                | GitError::DestinationExists { .. }
                | GitError::CheckoutMissing { .. }
                | GitError::DirtyCheckout { .. }
                | GitError::WouldOverwrite { .. }
                | GitError::Conflicts { .. }
                | GitError::DoesNotApply { .. }
                | GitError::DetachedHead
                | GitError::OtherRepository { .. }
                | GitError::Tampered { .. }
                | GitError::ObjectsTampered { .. }
                | GitError::NotAClone { .. }
                | GitError::BadBundle { .. }
        )
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            GitError::GitMissing => {
                Some("install git (e.g. `apt install git`) and make sure it is on PATH".into())
            }
            GitError::GitFailed { .. } | GitError::Io { .. } => None,
            GitError::GitTooOld { feature, .. } => Some(format!(
                "upgrade git for {feature}, or use `kennel apply` / the direct mode instead"
            )),
            GitError::NotARepository { .. } => Some(
                "worktree and clone modes need a git repository; use the direct mode, or `git init` first"
                    .into(),
            ),
            GitError::NoCommits { .. } => {
                Some("make a first commit, then start the session again".into())
            }
            GitError::InvalidBranchName { .. } => {
                Some("see `git help check-ref-format` for what a branch name may contain".into())
            }
            GitError::BranchExists { branch } => Some(format!(
                "pass another name with --branch, or delete the old one with `git branch -D {branch}`"
            )),
            GitError::BranchMissing { .. } => Some(
                "the session's branch was deleted or renamed outside kennel; its work is only in the checkout now"
                    .into(),
            ),
            GitError::BranchCheckedOut { .. } => Some(
                "switch your checkout to another branch first (`git switch -`)".into(),
            ),
            GitError::DestinationExists { .. } => {
                Some("remove that directory, or choose another session name".into())
            }
            GitError::CheckoutMissing { .. } => {
                Some("the session's checkout was removed outside kennel; `kennel discard` it".into())
            }
            GitError::DirtyCheckout { .. } => {
                Some("commit or stash your changes (`git stash`), then try again".into())
            }
            GitError::WouldOverwrite { .. } => {
                Some("move those files away (or commit them), then try again".into())
            }
            GitError::Conflicts { .. } => Some(
                "nothing was changed; merge the branch yourself with `git merge` and resolve the conflicts, or use `kennel apply` once they are gone"
                    .into(),
            ),
            GitError::DoesNotApply { .. } => Some(
                "nothing was changed; `git merge` the session's branch yourself to resolve by hand"
                    .into(),
            ),
            GitError::DetachedHead => {
                Some("check out the branch to merge into (`git switch BRANCH`) first".into())
            }
            GitError::OtherRepository { .. } => {
                Some("run the command from inside the session's repository".into())
            }
            GitError::ObjectsTampered { .. } => Some(
                "nothing was merged: a session's agent may have rewritten history under your commit ids (`git show` would show its content). Inspect with `git fsck --full`; remove the files named (or restore them from a clone or backup) and discard the session(s) that ran meanwhile; kennel checks again on the next merge"
                    .into(),
            ),
            GitError::NotAClone { .. } => None,
            GitError::BadBundle { .. } => Some(
                "nothing was changed in the session's clone; the sandbox's work is still only in the sandbox (its `git` or its repository may have been tampered with)"
                    .into(),
            ),
            GitError::Tampered { .. } => Some(
                "the session's checkout was changed in a way kennel does not trust; inspect it by hand, or discard the session"
                    .into(),
            ),
        }
    }
}

pub type Result<T, E = GitError> = std::result::Result<T, E>;
