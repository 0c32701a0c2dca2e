//! Bringing a sandbox's work back as a git bundle, for backends that cannot
//! share the clone's directory with the sandbox (a Kubernetes Pod gets a
//! copy of the clone; the agent works on the copy).
//!
//! The sandbox writes one bundle ([`bundle_command`]): the session branch,
//! and a commit of its whole work tree ([`WORK_TREE_REF`]).
//! [`Repo::receive_bundle`] then makes the clone on the host hold the same
//! branch and the same files, so that every review command ([`Repo::diff`],
//! [`Repo::sync`], [`crate::Checkout::commit_all`], [`Repo::merge`]…) works
//! as if the agent had worked in it.
//!
//! Files are never copied out of the sandbox (paths, links and modes would
//! be the agent's choice), and the bundle's bytes are the agent's choice
//! too: the sandbox's `git` may be a fake. So the host reads the bundle
//! itself and trusts none of it:
//!
//! - only two refs are read from its header, by exact name; any other ref
//!   in it is ignored, never created;
//! - its objects are checked by `git index-pack --strict` (git's fsck: no
//!   `.git` path component, no `..`, no malformed tree) into a quarantine
//!   object directory, and enter the clone only once both refs name commits
//!   whose history is complete. `git fetch` from a bundle is not used: git
//!   before 2.46 never checks a bundle's objects, whatever
//!   `fetch.fsckObjects` says, and `index-pack --strict` does not read the
//!   `fsck.*` settings a clone's config could weaken;
//! - files are written by git itself (`read-tree -u`), which never writes
//!   through a symlink (it replaces a symlinked leading directory), never
//!   writes a `.git` path, with no filter driver, no hook and no LFS smudge.
//!
//! Nothing in the user's repository changes: [`Repo::sync`] takes the
//! branch from the clone later, as for any clone.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{GitError, Result};
use crate::git::{Cmd, NoFilters};
use crate::review::trusted_clone_git_dir;
use crate::{Checkout, CheckoutMode, Repo};

/// The ref whose commit holds the sandbox's whole work tree: committed,
/// modified, deleted and untracked files (ignored ones left out), with the
/// sandbox's `HEAD` as its parent. Written in the sandbox by
/// [`bundle_command`], and in the clone by [`Repo::receive_bundle`] (a
/// record of what its files were last set to).
pub const WORK_TREE_REF: &str = "refs/kennel/worktree";

/// The index, in the clone's git dir, that records what
/// [`Repo::receive_bundle`] last wrote into the clone's files: the next
/// receive removes the files that are gone since, and rewrites only those
/// that changed. The clone's own index is left at its branch, so that
/// `git status` in a sandbox that resumes from the clone shows the
/// uncommitted work as uncommitted (a staged untracked file would go into
/// the agent's next `git commit`).
const RECEIVED_INDEX: &str = "kennel-received-index";

/// The script [`bundle_command`] runs in the sandbox, with the work tree,
/// branch and base as `$1`, `$2`, `$3` (never spliced into the script).
///
/// `--not <base>` keeps out the history the host already has. When the
/// branch is at the base or behind it (no commit yet, or history rewound),
/// git would leave the branch's ref out of the bundle, because its commit
/// is excluded; the tip's parents and the base's tree are excluded
/// instead, which the host has as well.
const BUNDLE_SCRIPT: &str = r#"set -eu
work_tree=$1
branch=$2
base=$3
# The bundle is the only thing on standard output; every message, git's
# and its hooks', goes to standard error.
exec 3>&1 1>&2
cd -- "$work_tree"
git() { command git -c core.hooksPath=/dev/null -c core.fsmonitor=false "$@"; }
tip=$(git rev-parse --verify "refs/heads/$branch^{commit}")
base=$(git rev-parse --verify "$base^{commit}")
head=$(git rev-parse --verify "HEAD^{commit}")
scratch=$(mktemp -d /tmp/kennel-bundle.XXXXXX)
trap 'rm -rf -- "$scratch"' EXIT
trap 'exit 1' HUP INT TERM
GIT_INDEX_FILE=$scratch/index
export GIT_INDEX_FILE
git read-tree "$head"
git add -A
tree=$(git write-tree)
unset GIT_INDEX_FILE
commit=$(git -c user.name=kennel -c user.email=kennel@localhost \
	commit-tree --no-gpg-sign -p "$head" -m "kennel: the work tree" "$tree")
git update-ref -m "kennel: the work tree" refs/kennel/worktree "$commit"
if git merge-base --is-ancestor "$tip" "$base"; then
	parents=$(git rev-parse "$tip^@")
	set -- $parents "$base^{tree}"
else
	status=$?
	[ "$status" -eq 1 ] || exit "$status"
	set -- "$base"
fi
git bundle create -q - "refs/heads/$branch" refs/kennel/worktree --not "$@" >&3
"#;

/// The command that writes the sandbox's work as a bundle on its standard
/// output, to run in the sandbox (as the agent's user, with the sandbox's
/// `git` and `sh`): `sh -c <fixed script> kennel-bundle <work_tree>
/// <branch> <base>`. The values are positional parameters, never part of
/// the script.
///
/// The bundle holds exactly `refs/heads/<branch>` (the branch as the agent
/// left it) and [`WORK_TREE_REF`] (a commit of the whole work tree, made
/// with a temporary index under `/tmp`, so the agent's own index is not
/// touched), and none of the history `base` has. It exits non-zero on any
/// failure. The host trusts none of it: see [`Repo::receive_bundle`].
pub fn bundle_command(work_tree: &str, branch: &str, base: &str) -> Vec<String> {
    [
        "sh",
        "-c",
        BUNDLE_SCRIPT,
        "kennel-bundle",
        work_tree,
        branch,
        base,
    ]
    .map(String::from)
    .to_vec()
}

/// What [`Repo::receive_bundle`] set the clone to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The session branch's new tip in the clone.
    pub branch_tip: String,
    /// The commit whose tree the clone's files now are ([`WORK_TREE_REF`]).
    pub work_tree: String,
}

/// What a bundle's header says. Only read, never acted on, until checked.
struct Header {
    /// Commits the bundle builds on, that the receiver must have.
    prerequisites: Vec<String>,
    /// `(refname, object id)`, in the bundle's order.
    refs: Vec<(Vec<u8>, String)>,
    /// Where the pack starts.
    pack_offset: u64,
}

fn bad_bundle(reason: impl Into<String>) -> GitError {
    GitError::BadBundle {
        reason: reason.into(),
    }
}

impl Header {
    /// Reads a v2 or v3 bundle header (`git help gitformat-bundle`):
    /// signature, capabilities (v3), prerequisites, refs, an empty line.
    /// Object ids must be ids of `object_format`, in lowercase hex.
    fn read(file: &File, object_format: &str) -> Result<Header> {
        let oid_len = match object_format {
            "sha256" => 64,
            _ => 40,
        };
        let is_oid = |text: &[u8]| {
            text.len() == oid_len
                && text
                    .iter()
                    .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(byte))
        };
        let oid = |text: &[u8]| String::from_utf8_lossy(text).into_owned();
        let mut reader = BufReader::new(file);
        let mut offset: u64 = 0;
        let mut line = Vec::new();
        let mut next_line = |line: &mut Vec<u8>| -> Result<()> {
            line.clear();
            let read = reader
                .read_until(b'\n', line)
                .map_err(|error| bad_bundle(format!("it cannot be read: {error}")))?;
            if line.pop() != Some(b'\n') {
                return Err(bad_bundle("it ends before its header does"));
            }
            offset += read as u64;
            Ok(())
        };
        next_line(&mut line).map_err(|_| bad_bundle("it is not a git bundle"))?;
        let version3 = match line.as_slice() {
            b"# v2 git bundle" => false,
            b"# v3 git bundle" => true,
            _ => return Err(bad_bundle("it is not a git bundle")),
        };
        let mut header = Header {
            prerequisites: Vec::new(),
            refs: Vec::new(),
            pack_offset: 0,
        };
        loop {
            next_line(&mut line)?;
            match line.as_slice() {
                b"" => break,
                [b'@', capability @ ..] if version3 => {
                    let text = String::from_utf8_lossy(capability);
                    match text.split_once('=') {
                        Some(("object-format", format)) if format == object_format => {}
                        Some(("object-format", format)) => {
                            return Err(bad_bundle(format!(
                                "its objects are {format}, the clone's are {object_format}"
                            )));
                        }
                        Some(("filter", _)) => {
                            return Err(bad_bundle("it is a partial (filtered) bundle"));
                        }
                        _ => {
                            return Err(bad_bundle(format!("unknown capability `{text}`")));
                        }
                    }
                }
                [b'-', rest @ ..] => {
                    let (id, comment) = rest.split_at(rest.len().min(oid_len));
                    if !is_oid(id) || !(comment.is_empty() || comment[0] == b' ') {
                        return Err(bad_bundle("a malformed prerequisite line in its header"));
                    }
                    header.prerequisites.push(oid(id));
                }
                rest => {
                    let (id, name) = rest.split_at(rest.len().min(oid_len));
                    match name {
                        [b' ', name @ ..] if is_oid(id) && !name.is_empty() => {
                            header.refs.push((name.to_vec(), oid(id)));
                        }
                        _ => return Err(bad_bundle("a malformed line in its header")),
                    }
                }
            }
        }
        header.pack_offset = offset;
        Ok(header)
    }

    /// The object id of `refname`, which must be in the bundle once.
    fn only_ref(&self, refname: &str) -> Result<String> {
        let mut found = self
            .refs
            .iter()
            .filter(|(name, _)| name.as_slice() == refname.as_bytes());
        match (found.next(), found.next()) {
            (Some((_, oid)), None) => Ok(oid.clone()),
            (None, _) => Err(bad_bundle(format!("it has no {refname}"))),
            (Some(_), Some(_)) => Err(bad_bundle(format!("it names {refname} more than once"))),
        }
    }
}

/// A temporary object directory inside the clone's object store, where a
/// bundle's objects wait until they are checked (as git's own quarantine
/// for pushes): a refused bundle leaves nothing in the clone. Removed when
/// dropped.
struct Quarantine {
    dir: tempfile::TempDir,
    git_dir: PathBuf,
}

impl Quarantine {
    fn new(git_dir: &Path) -> Result<Quarantine> {
        let objects = git_dir.join("objects");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| GitError::Io { path, source }
        };
        let dir = tempfile::Builder::new()
            .prefix("incoming-kennel-")
            .tempdir_in(&objects)
            .map_err(io(&objects))?;
        let pack = dir.path().join("pack");
        std::fs::create_dir(&pack).map_err(io(&pack))?;
        Ok(Quarantine {
            dir,
            git_dir: git_dir.to_path_buf(),
        })
    }

    /// Git on the clone that writes new objects into the quarantine and
    /// reads the clone's own as well.
    fn cmd(&self) -> Cmd {
        Cmd::repo(&self.git_dir, None)
            .env("GIT_OBJECT_DIRECTORY", self.dir.path())
            .env(
                "GIT_ALTERNATE_OBJECT_DIRECTORIES",
                quote_alternate(&self.git_dir.join("objects")),
            )
    }

    /// Moves the checked pack into the clone's `objects/pack`, in git's
    /// order (the `.idx` last: a pack is only seen once its index is there).
    fn migrate(self, pack_dir: &Path) -> Result<()> {
        let from = self.dir.path().join("pack");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| GitError::Io { path, source }
        };
        let mut names: Vec<(u8, std::ffi::OsString)> = std::fs::read_dir(&from)
            .map_err(io(&from))?
            .flatten()
            .map(|entry| entry.file_name())
            .filter(|name| name.to_string_lossy().starts_with("pack-"))
            .map(|name| {
                let text = name.to_string_lossy();
                let order = [".keep", ".pack", ".rev", ".idx"]
                    .iter()
                    .position(|suffix| text.ends_with(suffix))
                    .unwrap_or(4);
                (order as u8, name)
            })
            .collect();
        names.sort();
        for (_, name) in names {
            let target = pack_dir.join(&name);
            std::fs::rename(from.join(&name), &target).map_err(io(&target))?;
        }
        Ok(())
    }
}

/// `path` as one entry of `GIT_ALTERNATE_OBJECT_DIRECTORIES`: C-quoted, so
/// that a `:` in it does not split it.
fn quote_alternate(path: &Path) -> std::ffi::OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut quoted = vec![b'"'];
    for byte in path.as_os_str().as_bytes() {
        if matches!(byte, b'"' | b'\\') {
            quoted.push(b'\\');
        }
        quoted.push(*byte);
    }
    quoted.push(b'"');
    std::ffi::OsString::from_vec(quoted)
}

/// The clone's `objects/pack`, where a received pack goes: refused if it
/// or `objects` is not a real directory (a symlink would send the pack,
/// and read objects, elsewhere).
fn pack_dir(git_dir: &Path) -> Result<PathBuf> {
    let objects = git_dir.join("objects");
    let pack = objects.join("pack");
    for dir in [&objects, &pack] {
        if !std::fs::symlink_metadata(dir).is_ok_and(|meta| meta.is_dir()) {
            return Err(GitError::Tampered {
                path: dir.clone(),
                reason: "it is not a directory".into(),
            });
        }
    }
    Ok(pack)
}

/// The object id `refname` holds in the clone, if any.
fn ref_value(git_dir: &Path, refname: &str) -> Result<Option<String>> {
    let output = Cmd::repo(git_dir, None)
        .args(["rev-parse", "-q", "--verify", "--end-of-options", refname])
        .run()?;
    Ok((output.status == Some(0))
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string()))
}

impl Repo {
    /// Makes a clone session's checkout hold what a sandbox's bundle (from
    /// [`bundle_command`]) says: its branch at the bundle's
    /// `refs/heads/<branch>` (forced: the agent may have rewritten its
    /// history), and its files exactly the tree of the bundle's
    /// [`WORK_TREE_REF`] commit, so that the review commands see the
    /// committed and the uncommitted work as they were in the sandbox.
    /// The clone's index is set to the branch (its files then show as
    /// uncommitted changes), and its [`WORK_TREE_REF`] to the work tree
    /// commit.
    ///
    /// Meant for a clone that no sandbox has had (the sandbox worked on a
    /// copy of it): git runs on the clone's own git dir here, with its
    /// config, which is kennel's (read-only in any sandbox that mounts a
    /// clone); hooks and filter drivers stay off.
    ///
    /// The bundle is the agent's: see the module docs for what is checked.
    /// A bundle that is not one, lacks one of the two refs, names a
    /// non-commit, builds on a commit the clone lacks, or whose objects
    /// fail git's checks, is [`GitError::BadBundle`], and the clone's
    /// refs, objects and files are left as they were. Other refs in the
    /// bundle are ignored. The user's repository is not touched (a
    /// [`Repo::sync`] brings the branch there). The caller bounds the
    /// bundle's size.
    pub fn receive_bundle(&self, checkout: &Checkout, bundle: &Path) -> Result<Received> {
        self.check_ours(checkout)?;
        if checkout.mode != CheckoutMode::Clone {
            return Err(GitError::NotAClone {
                path: checkout.dir.clone(),
            });
        }
        let git_dir = trusted_clone_git_dir(checkout)?;
        let pack_dir = pack_dir(&git_dir)?;
        let clone = || Cmd::repo(&git_dir, None);
        let object_format = clone().args(["rev-parse", "--show-object-format"]).text()?;

        let mut file = File::open(bundle).map_err(|source| GitError::Io {
            path: bundle.to_path_buf(),
            source,
        })?;
        let header = Header::read(&file, &object_format)?;
        let branch_ref = format!("refs/heads/{}", checkout.branch);
        let branch_tip = header.only_ref(&branch_ref)?;
        let work_tree = header.only_ref(WORK_TREE_REF)?;
        for prerequisite in &header.prerequisites {
            if ref_value(&git_dir, &format!("{prerequisite}^{{commit}}"))?.is_none() {
                return Err(bad_bundle(format!(
                    "it builds on commit {prerequisite}, which the clone does not have"
                )));
            }
        }

        // The objects, checked in quarantine.
        file.seek(SeekFrom::Start(header.pack_offset))
            .map_err(|source| GitError::Io {
                path: bundle.to_path_buf(),
                source,
            })?;
        let quarantine = Quarantine::new(&git_dir)?;
        let indexed = quarantine
            .cmd()
            .args(["index-pack", "--stdin", "--fix-thin", "--strict"])
            .input_file(file)
            .run()?;
        if indexed.status != Some(0) {
            return Err(bad_bundle(format!(
                "its objects failed git's checks: {}",
                indexed.stderr.trim()
            )));
        }
        for (name, oid) in [(&branch_ref[..], &branch_tip), (WORK_TREE_REF, &work_tree)] {
            let kind = quarantine.cmd().args(["cat-file", "-t", oid]).run()?;
            if kind.status != Some(0) || kind.stdout.trim_ascii() != b"commit" {
                return Err(bad_bundle(format!("its {name} is not a commit")));
            }
        }
        let connected = quarantine
            .cmd()
            .args(["rev-list", "--objects", "--quiet", &branch_tip, &work_tree])
            .args(["--not", "--all"])
            .run()?;
        if connected.status != Some(0) {
            return Err(bad_bundle(format!(
                "objects are missing from it: {}",
                connected.stderr.trim()
            )));
        }
        quarantine.migrate(&pack_dir)?;

        // The files, then the refs, then the clone's own index.
        let old_tip = ref_value(&git_dir, &branch_ref)?;
        let old_work_tree = ref_value(&git_dir, WORK_TREE_REF)?;
        let last_written = old_work_tree
            .clone()
            .or_else(|| old_tip.clone())
            .unwrap_or_else(|| checkout.base.clone());
        write_work_tree(&git_dir, &checkout.dir, &last_written, &work_tree)?;
        let absent = "0".repeat(branch_tip.len());
        let mut updates = Vec::new();
        for (name, new, old) in [
            (&branch_ref[..], &branch_tip, &old_tip),
            (WORK_TREE_REF, &work_tree, &old_work_tree),
        ] {
            // Compare-and-swap: the clone's refs are as read above.
            let old = old.as_deref().unwrap_or(&absent);
            updates.extend_from_slice(format!("update {name}\0{new}\0{old}\0").as_bytes());
        }
        clone()
            .args([
                "update-ref",
                "-m",
                "kennel: received from the sandbox",
                "-z",
                "--stdin",
            ])
            .input(updates)
            .ok()?;
        clone()
            .args(["read-tree", "--end-of-options", &branch_tip])
            .ok()?;
        tracing::info!(
            branch = %checkout.branch,
            tip = %branch_tip,
            work_tree = %work_tree,
            "received the sandbox's bundle"
        );
        Ok(Received {
            branch_tip,
            work_tree,
        })
    }
}

/// Sets the clone's files to `commit`'s tree with `git read-tree -u
/// --reset` on [`RECEIVED_INDEX`], which holds what was last written
/// (built from `last_written` when it is missing): files gone since are
/// removed, changed ones rewritten, untracked ones in the way replaced.
/// git never writes through a symlink here (a symlink where a directory
/// goes is replaced by the directory) and never writes a `.git` path; no
/// filter driver runs (the attributes choosing one are the agent's), nor
/// LFS's smudge, nor any hook.
fn write_work_tree(
    git_dir: &Path,
    work_tree: &Path,
    last_written: &str,
    commit: &str,
) -> Result<()> {
    let index = git_dir.join(RECEIVED_INDEX);
    let with_index = |cmd: Cmd| {
        cmd.env("GIT_INDEX_FILE", &index)
            .config("core.splitIndex=false")
            .config("core.untrackedCache=false")
    };
    if !std::fs::symlink_metadata(&index).is_ok_and(|meta| meta.is_file()) {
        crate::remove_path(&index).map_err(|source| GitError::Io {
            path: index.clone(),
            source,
        })?;
        with_index(Cmd::repo(git_dir, None))
            .args(["read-tree", "--end-of-options", last_written])
            .ok()?;
    }
    with_index(Cmd::repo(git_dir, Some(work_tree)))
        .without_filters(&NoFilters::for_repo(git_dir)?)
        .env("GIT_LFS_SKIP_SMUDGE", "1")
        // Every file, whatever sparse-checkout patterns the clone has.
        .config("core.sparseCheckout=false")
        .args(["read-tree", "-u", "--reset", "--end-of-options", commit])
        .ok()?;
    Ok(())
}
