//! The shared object store of worktree mode (issue 11, class 7): an agent
//! may add objects, but replacing an existing one (a loose object file, a
//! pack, an index git trusts) must not go unnoticed.
//!
//! git never re-hashes what it reads: a loose object file or a pack that an
//! agent rewrote makes `git show main:Makefile` show the agent's content
//! under the user's own commit id, with `git status` clean. A full `git
//! fsck` would notice, at a cost proportional to the repository. kennel
//! checks only what changed, and knows what changed from the one file time
//! an unprivileged process cannot set: the inode's change time (`ctime`:
//! every write, rename, link or chmod sets it to now; `touch -d` sets only
//! `mtime`).
//!
//! - `<common>/kennel-objects-verified` holds a time W: everything in the
//!   object store whose ctime is older was there before kennel's first
//!   checkout of the repository, or was checked since. It is written when
//!   the first checkout is created (before any agent ran) and moves forward
//!   after each clean check. The common dir is read-only in every sandbox.
//! - [`verify`] walks `objects/` (no symlink followed) and checks every
//!   file with ctime >= W: a loose object must hash to its name, a pack
//!   must pass `git verify-pack` (every object's name recomputed from its
//!   content), a commit-graph must pass `git commit-graph verify`, and a
//!   symlink is a problem wherever it is. Derived indexes git trusts
//!   without checking (`.rev`, `.bitmap`, `multi-pack-index`) are removed:
//!   git works without them and rebuilds them on its next gc.
//! - [`Repo::merge`] and [`Repo::apply`] refuse while there is a problem
//!   ([`GitError::ObjectsTampered`]); W does not move until it is gone.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::{GitError, Result};
use crate::git::Cmd;
use crate::{Checkout, Repo};

/// The file under the common git dir that holds W.
pub const STAMP: &str = "kennel-objects-verified";

/// How far before a check's start W is set: the kernel's file times come
/// from a coarse clock that can lag the real time by a tick.
const SLACK: Duration = Duration::from_secs(2);

/// One thing wrong with the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectProblem {
    pub path: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for ObjectProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

/// A time as (seconds, nanoseconds) since the epoch.
type Stamp = (i64, i64);

fn now() -> Stamp {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (since.as_secs() as i64, since.subsec_nanos() as i64)
}

fn minus_slack((secs, nanos): Stamp) -> Stamp {
    (secs - SLACK.as_secs() as i64, nanos)
}

fn read_stamp(common_dir: &Path) -> Option<Stamp> {
    let text = crate::read_no_follow(&common_dir.join(STAMP)).ok()?;
    let (secs, nanos) = text.trim().split_once('.')?;
    let stamp = (secs.parse().ok()?, nanos.parse().ok()?);
    // A time in the future would hide everything: not kennel's.
    (stamp <= now()).then_some(stamp)
}

fn write_stamp(common_dir: &Path, (secs, nanos): Stamp) -> Result<()> {
    let io = |source| GitError::Io {
        path: common_dir.join(STAMP),
        source,
    };
    let mut file = tempfile::NamedTempFile::new_in(common_dir).map_err(io)?;
    std::io::Write::write_all(&mut file, format!("{secs}.{nanos:09}\n").as_bytes()).map_err(io)?;
    // A rename replaces whatever is there (a symlink too), never follows it.
    file.persist(common_dir.join(STAMP))
        .map_err(|error| io(error.error))?;
    Ok(())
}

/// Before a repository's first checkout: W is now (what the store holds is
/// the user's). Later checkouts keep the W there is.
pub(crate) fn ensure_stamp(common_dir: &Path) -> Result<()> {
    if read_stamp(common_dir).is_some() {
        return Ok(());
    }
    write_stamp(common_dir, minus_slack(now()))
}

fn ctime(meta: &std::fs::Metadata) -> Stamp {
    (meta.ctime(), meta.ctime_nsec())
}

/// What the walk found that needs a check.
#[derive(Default)]
struct Changed {
    loose: Vec<(String, PathBuf)>,
    packs: Vec<PathBuf>,
    commit_graph: bool,
    caches: Vec<PathBuf>,
    problems: Vec<ObjectProblem>,
}

fn walk(dir: &Path, rel: &str, since: Stamp, changed: &mut Changed) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(GitError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let rel_name = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let recent = ctime(&meta) >= since;
        if meta.file_type().is_symlink() {
            if recent {
                changed.problems.push(ObjectProblem {
                    path,
                    reason: "a symlink in the object store (git would read objects through it)"
                        .into(),
                });
            }
            continue;
        }
        if meta.is_dir() {
            walk(&path, &rel_name, since, changed)?;
            continue;
        }
        if !meta.is_file() || !recent {
            continue;
        }
        let hex = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit());
        match rel_name.split('/').collect::<Vec<_>>()[..] {
            [fan, rest]
                if fan.len() == 2
                    && hex(fan)
                    && (rest.len() == 38 || rest.len() == 62)
                    && hex(rest) =>
            {
                changed.loose.push((format!("{fan}{rest}"), path));
            }
            ["pack", file]
                if file.starts_with("pack-")
                    && (file.ends_with(".pack") || file.ends_with(".idx")) =>
            {
                let base = path.with_extension("");
                if !changed.packs.contains(&base) {
                    changed.packs.push(base);
                }
            }
            ["pack", file]
                if file.ends_with(".rev")
                    || file.ends_with(".bitmap")
                    || file.starts_with("multi-pack-index") =>
            {
                changed.caches.push(path);
            }
            ["info", "commit-graph"] | ["info", "commit-graphs", _] => changed.commit_graph = true,
            _ => {}
        }
    }
    Ok(())
}

/// Checks the object store under `common_dir` (see the module docs) and
/// moves W forward when nothing is wrong.
pub(crate) fn verify(common_dir: &Path) -> Result<Vec<ObjectProblem>> {
    let started = now();
    let since = read_stamp(common_dir).unwrap_or((0, 0));
    let mut changed = Changed::default();
    walk(&common_dir.join("objects"), "", since, &mut changed)?;
    let mut problems = std::mem::take(&mut changed.problems);
    for cache in &changed.caches {
        tracing::info!(path = %cache.display(), "removing a pack index written since the last check");
        if let Err(source) = crate::remove_path(cache) {
            return Err(GitError::Io {
                path: cache.clone(),
                source,
            });
        }
    }
    let format = Cmd::repo(common_dir, None)
        .args(["rev-parse", "--show-object-format"])
        .text()?;
    if !changed.loose.is_empty() || !changed.packs.is_empty() {
        let scratch = tempfile::Builder::new()
            .prefix("kennel-objects-")
            .tempdir()
            .map_err(|source| GitError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let store = scratch.path().join("store");
        Cmd::new()
            .args(["init", "-q", "--bare", "--template="])
            .arg(format!("--object-format={format}"))
            .arg(&store)
            .ok()?;
        problems.extend(check_loose(&store, scratch.path(), &changed.loose)?);
        for base in &changed.packs {
            let (pack, idx) = (base.with_extension("pack"), base.with_extension("idx"));
            // git uses a pack only with its index, and the other way round.
            if !pack.is_file() || !idx.is_file() {
                continue;
            }
            let output = Cmd::repo(&store, None).arg("verify-pack").arg(&idx).run()?;
            if output.status != Some(0) {
                problems.push(ObjectProblem {
                    path: pack,
                    reason: format!(
                        "the pack does not match its index: {}",
                        output.stderr.trim()
                    ),
                });
            }
        }
    }
    if changed.commit_graph {
        let output = Cmd::repo(common_dir, None)
            .args(["commit-graph", "verify", "--no-progress"])
            .run()?;
        if output.status != Some(0) {
            problems.push(ObjectProblem {
                path: common_dir.join("objects/info/commit-graph"),
                reason: format!(
                    "the commit-graph does not match the commits: {}",
                    output.stderr.trim()
                ),
            });
        }
    }
    if problems.is_empty() {
        write_stamp(common_dir, minus_slack(started))?;
    } else {
        tracing::warn!(?problems, "object store tampered with");
    }
    Ok(problems)
}

/// Each loose object must hash to its name: copied (never through a
/// symlink) into an empty store, read back with `git cat-file`, hashed
/// again with `git hash-object`.
fn check_loose(
    store: &Path,
    scratch: &Path,
    loose: &[(String, PathBuf)],
) -> Result<Vec<ObjectProblem>> {
    let mut problems = Vec::new();
    let mut copied = Vec::new();
    for (oid, path) in loose {
        let opened = crate::open_no_follow(path);
        let target = store.join("objects").join(&oid[..2]).join(&oid[2..]);
        let result = opened.and_then(|mut file| {
            std::fs::create_dir_all(target.parent().expect("fan-out dir"))?;
            let mut out = std::fs::File::create(&target)?;
            std::io::copy(&mut file, &mut out).map(|_| ())
        });
        match result {
            Ok(()) => copied.push((oid.clone(), path.clone())),
            Err(error) => problems.push(ObjectProblem {
                path: path.clone(),
                reason: format!("cannot be read as a plain file: {error}"),
            }),
        }
    }
    if copied.is_empty() || all_hash_to_their_names(store, scratch, &copied)? {
        return Ok(problems);
    }
    // Something is wrong: find which, one object at a time.
    for (index, (oid, path)) in copied.iter().enumerate() {
        let bad = |reason: String| ObjectProblem {
            path: path.clone(),
            reason,
        };
        let kind = Cmd::repo(store, None).args(["cat-file", "-t", oid]).run()?;
        if kind.status != Some(0) {
            problems.push(bad(format!("not a valid object: {}", kind.stderr.trim())));
            continue;
        }
        let kind = String::from_utf8_lossy(&kind.stdout).trim().to_string();
        let content = Cmd::repo(store, None)
            .args(["cat-file", &kind, oid])
            .run()?;
        if content.status != Some(0) {
            problems.push(bad(format!(
                "not a valid object: {}",
                content.stderr.trim()
            )));
            continue;
        }
        let file = scratch.join(format!("content-{index}"));
        std::fs::write(&file, &content.stdout).map_err(|source| GitError::Io {
            path: file.clone(),
            source,
        })?;
        let hashed = Cmd::repo(store, None)
            .args([
                "hash-object",
                "--literally",
                "--no-filters",
                "-t",
                &kind,
                "--",
            ])
            .arg(&file)
            .text()?;
        if hashed != *oid {
            problems.push(bad(format!(
                "its content is the object {hashed}, not {oid}: the file was replaced"
            )));
        }
    }
    Ok(problems)
}

/// The quick check for many objects at once (the usual case: all of them
/// are fine): `git pack-objects` packs them without re-hashing, then `git
/// verify-pack` recomputes every name from the content. `false` when
/// either fails.
fn all_hash_to_their_names(
    store: &Path,
    scratch: &Path,
    copied: &[(String, PathBuf)],
) -> Result<bool> {
    let mut list = String::new();
    for (oid, _) in copied {
        list.push_str(oid);
        list.push('\n');
    }
    let base = scratch.join("check");
    let packed = Cmd::repo(store, None)
        .args(["pack-objects", "-q", "--window=0", "--depth=0"])
        .arg(&base)
        .input(list.into_bytes())
        .run()?;
    if packed.status != Some(0) {
        return Ok(false);
    }
    let hash = String::from_utf8_lossy(&packed.stdout).trim().to_string();
    let idx = scratch.join(format!("check-{hash}.idx"));
    let verified = Cmd::repo(store, None).arg("verify-pack").arg(&idx).run()?;
    Ok(verified.status == Some(0))
}

impl Repo {
    /// Checks that no object in the repository's object store was replaced
    /// since kennel last checked (see the module docs): what the binary runs
    /// when a session ends, and what [`Repo::merge`] and [`Repo::apply`] run
    /// first. Empty: nothing wrong (and the check moves on).
    pub fn verify_objects(&self) -> Result<Vec<ObjectProblem>> {
        verify(self.common_dir())
    }

    /// [`Repo::verify_objects`], as a refusal.
    pub(crate) fn check_objects(&self) -> Result<()> {
        let problems = self.verify_objects()?;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(GitError::ObjectsTampered { problems })
        }
    }
}

impl Checkout {
    /// [`Repo::verify_objects`] of the checkout's repository.
    pub fn verify_objects(&self) -> Result<Vec<ObjectProblem>> {
        verify(&self.common_dir)
    }
}
