//! Direct mode's guard and audit of the user's git control files.
//!
//! In direct mode the agent works in the user's checkout. Every existing git
//! control file (config, hooks, `config.worktree`, `commondir`, `gitdir`, of
//! the repository, its submodules and worktrees, and the `.git` file) is
//! mounted read-only and the directories that hold them are pinned (see
//! `kennel_core::host::Workspace`), but git inside needs `.git` writable, so
//! the agent can still *create* control files that did not exist (a
//! `commondir` or `config.worktree`, a new submodule's git dir). Before a
//! direct session starts, [`guard`] refuses control paths that are symlinks
//! and a `.git` that is not the one kennel saw last time in that workspace.
//! [`begin`] records the contents of every control file in kennel's data
//! dir, keyed by session id; when the session has ended — however it ended,
//! found by whichever command — [`settle`] compares contents (never mtimes),
//! moves what the agent created aside and tells the user what changed.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kennel_core::host::{HostContext, Workspace};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::CliError;
use kennel_sessions::RegistryError;

/// Files of a git dir that decide what git runs or where it reads from.
const CONTROL_FILES: &[&str] = &["config", "config.worktree", "commondir", "gitdir"];

/// Prefix of the audit key of a run the registry does not know (checked by
/// that run only, never by [`settle`]).
pub const UNREGISTERED: &str = "unregistered-";

/// Bound on the files and directories one snapshot looks at.
const MAX_ENTRIES: usize = 20_000;

/// What the control files looked like when the session started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub session: String,
    pub root: PathBuf,
    /// Device, inode and kind (`dir`, `file`) of `root/.git`.
    pub identity: Option<Identity>,
    /// Extra paths (files or directories) to record: what the user's config
    /// names inside the workspace (a hooks path, included config).
    pub extra: Vec<PathBuf>,
    /// Path → `file:<sha256>`, `dir` or `link:<target>`.
    pub entries: BTreeMap<PathBuf, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub dir: bool,
}

/// `root/.git` as it is now (never followed).
pub fn identity(root: &Path) -> Option<Identity> {
    let meta = std::fs::symlink_metadata(root.join(".git")).ok()?;
    if meta.file_type().is_symlink() {
        return None;
    }
    Some(Identity {
        dev: meta.dev(),
        ino: meta.ino(),
        dir: meta.is_dir(),
    })
}

/// Records the control files of `root` now.
pub fn snapshot(root: &Path, session: &str, extra: Vec<PathBuf>) -> Snapshot {
    let mut entries = BTreeMap::new();
    scan(root, &extra, &mut entries);
    Snapshot {
        session: session.to_string(),
        root: root.to_path_buf(),
        identity: identity(root),
        extra,
        entries,
    }
}

fn scan(root: &Path, extra: &[PathBuf], entries: &mut BTreeMap<PathBuf, String>) {
    let dot_git = root.join(".git");
    record(&dot_git, entries);
    // Not a repository: no index and no working tree for git to list (and
    // no git process on the run's critical path). Otherwise one `ls-files`
    // for both lists, started first: git's own start (most of its time)
    // overlaps the reading and hashing of the control files below, on
    // both sides of the agent's run.
    let listing = entries.contains_key(&dot_git).then(|| Listing::start(root));
    let git_dir = match std::fs::symlink_metadata(&dot_git) {
        Ok(meta) if meta.is_dir() => Some(dot_git),
        Ok(meta) if meta.is_file() => {
            kennel_core::host::read_gitdir_file(&dot_git, root).filter(|dir| dir.starts_with(root))
        }
        _ => None,
    };
    if let Some(git_dir) = git_dir {
        scan_git_dir(&git_dir, entries);
    }
    if let Some(listing) = listing {
        let (gitlinks, untracked) = listing.finish(root);
        // Gitlinks in the index (submodules, and repositories the agent
        // may have made and added): the user's `git status` reads the
        // config of each one's repository, so their `.git` counts as a
        // control file. Repositories the agent made and left untracked:
        // git in the outer repository does not enter them, but the user's
        // next `git status` from inside one (or a shell prompt that runs
        // it on `cd`) reads its config and runs its fsmonitor.
        let mut budget = MAX_ENTRIES;
        let mut nested = gitlinks
            .iter()
            .map(|path| path.join(".git"))
            .collect::<Vec<_>>();
        for dir in &untracked {
            find_dot_gits(dir, &mut nested, &mut budget);
        }
        for dot_git in nested {
            if record(&dot_git, entries) {
                scan_git_dir(&dot_git, entries);
            }
        }
    }
    for path in extra {
        walk(path, entries);
    }
}

/// One `git ls-files --stage --others --directory` of a workspace, running
/// (see [`Listing::finish`]).
struct Listing(Option<std::process::Child>);

impl Listing {
    fn start(root: &Path) -> Listing {
        Listing(
            ls_files(
                root,
                &["--stage", "--others", "--directory", "--exclude-standard"],
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .ok(),
        )
    }

    /// The gitlinks in `root`'s index and its untracked (not ignored)
    /// directories: staged entries come as `MODE OBJECT STAGE<TAB>PATH`,
    /// untracked directories as `PATH/`. Paths outside `root` are dropped.
    fn finish(self, root: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
        match self.0.map(std::process::Child::wait_with_output) {
            Some(Ok(output)) => listed(root, &output),
            _ => (Vec::new(), Vec::new()),
        }
    }
}

fn listed(root: &Path, output: &std::process::Output) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut gitlinks, mut untracked) = (Vec::new(), Vec::new());
    // Every entry is read (a gitlink may come after any number of files);
    // each list is bounded on its own.
    for entry in output.stdout.split(|byte| *byte == 0) {
        let Ok(entry) = std::str::from_utf8(entry) else {
            continue;
        };
        let staged = entry.split_once('\t').filter(|(meta, _)| {
            let mut fields = meta.split(' ');
            matches!(
                (fields.next(), fields.next(), fields.next(), fields.next()),
                (Some(mode), Some(_), Some(stage), None) if mode.len() == 6 && stage.len() == 1
            )
        });
        match staged {
            Some((meta, path)) if meta.starts_with("160000 ") => gitlinks.push(root.join(path)),
            Some(_) => {}
            None => {
                if let Some(dir) = entry.strip_suffix('/') {
                    untracked.push(root.join(dir));
                }
            }
        }
    }
    for list in [&mut gitlinks, &mut untracked] {
        list.retain(|path| path.starts_with(root));
        list.truncate(MAX_ENTRIES);
    }
    (gitlinks, untracked)
}

fn find_dot_gits(dir: &Path, found: &mut Vec<PathBuf>, budget: &mut usize) {
    let Ok(list) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in list.flatten() {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if entry.file_name() == ".git" {
            found.push(entry.path());
        } else if kind.is_dir() {
            find_dot_gits(&entry.path(), found, budget);
        }
    }
}

/// `git ls-files ARGS -z` in `root`, which runs nothing: no hooks, no
/// fsmonitor, no untracked cache.
fn ls_files(root: &Path, args: &[&str]) -> std::process::Command {
    let mut command = kennel_core::host::git_at(root);
    command
        .args([
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.untrackedCache=false",
            "ls-files",
        ])
        .args(args)
        .arg("-z");
    command
}

/// One git dir: its control files, hooks, and its submodules' and
/// worktrees' git dirs (every directory under `modules` and `worktrees`
/// is looked at, so a git dir the agent made is seen too).
fn scan_git_dir(git_dir: &Path, entries: &mut BTreeMap<PathBuf, String>) {
    if entries.len() > MAX_ENTRIES {
        return;
    }
    for name in CONTROL_FILES {
        record(&git_dir.join(name), entries);
    }
    walk(&git_dir.join("hooks"), entries);
    for nest in ["modules", "worktrees"] {
        nested(&git_dir.join(nest), entries);
    }
}

fn nested(dir: &Path, entries: &mut BTreeMap<PathBuf, String>) {
    if !record(dir, entries) {
        return;
    }
    let Ok(list) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in list.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            let is_git_dir = ["HEAD", "commondir", "config"]
                .iter()
                .any(|name| std::fs::symlink_metadata(path.join(name)).is_ok());
            if is_git_dir {
                record(&path, entries);
                scan_git_dir(&path, entries);
            } else {
                nested(&path, entries);
            }
        } else {
            record(&path, entries);
        }
    }
}

/// Records `path` and, for a directory, everything under it (bounded).
fn walk(path: &Path, entries: &mut BTreeMap<PathBuf, String>) {
    if !record(path, entries) {
        return;
    }
    if let Ok(list) = std::fs::read_dir(path) {
        for entry in list.flatten() {
            if entries.len() > MAX_ENTRIES {
                return;
            }
            walk(&entry.path(), entries);
        }
    }
}

/// Records one path (never followed); true when it is a directory.
fn record(path: &Path, entries: &mut BTreeMap<PathBuf, String>) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let value = if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).unwrap_or_default();
        format!("link:{}", target.display())
    } else if meta.is_dir() {
        "dir".to_string()
    } else if meta.is_file() {
        match std::fs::read(path) {
            Ok(bytes) => format!("file:{}", hex::encode(Sha256::digest(&bytes))),
            Err(_) => "file:unreadable".to_string(),
        }
    } else {
        "special".to_string()
    };
    let is_dir = value == "dir";
    entries.insert(path.to_path_buf(), value);
    is_dir
}

/// Compares the control files with `before`, moves what the agent created
/// aside (to `<name>.kennel-quarantine-<session>`), and returns what the
/// user must be told.
pub fn check(before: &Snapshot) -> Vec<String> {
    let mut warnings = Vec::new();
    let session = &before.session;
    let dot_git = before.root.join(".git");
    if identity(&before.root) != before.identity {
        warnings.push(format!(
            "{} is not the one that was there when session {session} started (the agent \
             replaced it): do not run git in {} before checking it (`ls -la {}`, its config \
             and hooks may be the agent's); kennel refuses to start there again until you \
             accept it with --accept-git-dir",
            dot_git.display(),
            before.root.display(),
            dot_git.display()
        ));
        return warnings;
    }
    let mut now = BTreeMap::new();
    scan(&before.root, &before.extra, &mut now);
    // New entries: files and links are moved aside (parents first, so a
    // whole new directory goes at once).
    let mut moved: Vec<PathBuf> = Vec::new();
    for (path, value) in &now {
        if before.entries.contains_key(path) || moved.iter().any(|dir| path.starts_with(dir)) {
            continue;
        }
        if value == "dir" && !is_git_dir_like(path) {
            continue; // Its new files are looked at one by one.
        }
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let aside = path.with_file_name(format!("{name}.kennel-quarantine-{session}"));
        match std::fs::rename(path, &aside) {
            Ok(()) => {
                moved.push(path.clone());
                warnings.push(format!(
                    "the agent created {} (git would read or run it on your next command); \
                     kennel moved it to {}",
                    path.display(),
                    aside.display()
                ));
            }
            Err(error) => warnings.push(format!(
                "the agent created {} (git would read or run it on your next command) and \
                 kennel cannot move it aside ({error}): remove it before running git here",
                path.display()
            )),
        }
    }
    for (path, value) in &before.entries {
        match now.get(path) {
            Some(current) if current == value => {}
            Some(_) => warnings.push(format!(
                "{} changed during session {session}: check it before running git here",
                path.display()
            )),
            None => warnings.push(format!(
                "{} was removed during session {session}",
                path.display()
            )),
        }
    }
    warnings
}

/// A new directory that is (or holds) a git dir the agent made: moved
/// aside as a whole.
fn is_git_dir_like(path: &Path) -> bool {
    ["HEAD", "commondir", "config", "hooks"]
        .iter()
        .any(|name| std::fs::symlink_metadata(path.join(name)).is_ok())
}

fn pending_dir(host: &HostContext) -> PathBuf {
    host.data_dir.join("git-audit")
}

fn identity_file(host: &HostContext, root: &Path) -> PathBuf {
    let key = hex::encode(Sha256::digest(root.as_os_str().as_encoded_bytes()));
    host.data_dir
        .join("git-dirs")
        .join(format!("{}.json", &key[..32]))
}

/// Before a direct-mode session: refuses control paths that are symlinks
/// and a `.git` that is not the one kennel recorded for this workspace
/// (unless `accept`), records the current one, and returns notes for the
/// user.
pub fn guard(host: &HostContext, workspace: &Workspace, accept: bool) -> Result<(), CliError> {
    if let Some(link) = workspace.refused.first() {
        let target = std::fs::read_link(link)
            .map(|target| target.display().to_string())
            .unwrap_or_else(|_| "?".into());
        return Err(CliError::kennel(format!(
            "refusing to run in direct mode: {} is a symbolic link (to {target}); kennel never \
             follows links in git control files (a link there could mount a host file into the \
             sandbox, or make your git run the agent's program)",
            link.display()
        ))
        .with_hint(format!(
            "inspect it with `ls -la {}`; if it is yours, replace the link by the real file or \
             directory (for shared hooks: `git config core.hooksPath DIR`), or run with --mode \
             worktree",
            link.display()
        )));
    }
    for note in &workspace.notes {
        crate::report::warn(note);
    }
    let Some(now) = identity(&workspace.root) else {
        return Ok(());
    };
    let file = identity_file(host, &workspace.root);
    let recorded: Option<Identity> = std::fs::read(&file)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    if let Some(recorded) = recorded
        && recorded != now
        && !accept
    {
        let dot_git = workspace.root.join(".git");
        return Err(CliError::kennel(format!(
            "refusing to run in direct mode: {} is not the {} kennel saw when you last ran it \
             here (device {} inode {}, now device {} inode {}): an agent may have replaced it, \
             and its config and hooks would then be the agent's",
            dot_git.display(),
            if recorded.dir { "directory" } else { "file" },
            recorded.dev,
            recorded.ino,
            now.dev,
            now.ino
        ))
        .with_hint(format!(
            "inspect it before running git there: `ls -la {0} {0}/hooks`, `cat {0}/config` \
             (or `cat {0}` when it is a file); if you replaced it yourself (a fresh clone, a \
             restore), run kennel again with --accept-git-dir",
            dot_git.display()
        )));
    }
    if recorded != Some(now) {
        let _ = std::fs::create_dir_all(file.parent().unwrap_or(Path::new("/")));
        if let Ok(json) = serde_json::to_vec(&now) {
            let _ = std::fs::write(&file, json);
        }
    }
    Ok(())
}

/// At the start of a direct-mode session: the control files as they are
/// now, read on a thread of their own (a `git ls-files` among them) while
/// kennel registers the session; [`Taking::record`] keeps them for the
/// end-of-session check. Started after [`guard`] and [`settle`] (what an
/// earlier session planted is moved aside first, never recorded as the
/// user's), and recorded before the sandbox starts.
pub fn begin(workspace: &Workspace) -> Taking {
    let root = workspace.root.clone();
    let extra: Vec<PathBuf> = workspace
        .protected
        .iter()
        .chain(&workspace.pinned)
        .filter(|path| !path.starts_with(workspace.root.join(".git")))
        .cloned()
        .collect();
    let scan = move || snapshot(&root, "", extra);
    // Without a thread, the snapshot is taken here and now.
    match std::thread::Builder::new()
        .name("kennel-git-audit".into())
        .spawn(scan.clone())
    {
        Ok(thread) => Taking::Thread(thread),
        Err(_) => Taking::Taken(Box::new(scan())),
    }
}

/// A snapshot being taken (see [`begin`]).
pub enum Taking {
    Thread(std::thread::JoinHandle<Snapshot>),
    Taken(Box<Snapshot>),
}

impl Taking {
    /// Waits for the snapshot and records it in the data dir under the
    /// session's id (so that the audit runs from it however the session
    /// ends).
    pub fn record(self, host: &HostContext, session_id: &str, session: &str) {
        let snapshot = match self {
            Taking::Thread(thread) => match thread.join() {
                Ok(snapshot) => snapshot,
                Err(_) => {
                    crate::report::warn(
                        "cannot record the git control files for the end-of-session check",
                    );
                    return;
                }
            },
            Taking::Taken(snapshot) => *snapshot,
        };
        let snapshot = Snapshot {
            session: session.to_string(),
            ..snapshot
        };
        let dir = pending_dir(host);
        let _ = std::fs::create_dir_all(&dir);
        match serde_json::to_vec(&snapshot) {
            Ok(json) => {
                if let Err(error) = std::fs::write(dir.join(format!("{session_id}.json")), json) {
                    crate::report::warn(&format!(
                        "cannot record the git control files for the end-of-session \
                         check ({error})"
                    ));
                }
            }
            Err(error) => tracing::warn!("cannot serialise the git snapshot: {error}"),
        }
    }
}

/// Prints the warnings a check kept in `file` for the user, and forgets them.
fn print_kept(file: &Path) {
    if let Ok(text) = std::fs::read_to_string(file) {
        for warning in text.lines().filter(|line| !line.is_empty()) {
            crate::report::alarm(warning);
        }
    }
    let _ = std::fs::remove_file(file);
}

/// Checks the pending snapshot of `session_id`, if there is one, and
/// forgets it; what the check found.
fn take_check(host: &HostContext, session_id: &str) -> Vec<String> {
    let file = pending_dir(host).join(format!("{session_id}.json"));
    let Ok(bytes) = std::fs::read(&file) else {
        return Vec::new();
    };
    let warnings = serde_json::from_slice::<Snapshot>(&bytes)
        .map(|snapshot| check(&snapshot))
        .unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    warnings
}

/// Runs the audit of the session `session_id` (which has ended) if one is
/// pending, tells the user what it found, and forgets it.
pub fn finish(host: &HostContext, session_id: &str) {
    tell(host, session_id, take_check(host, session_id));
}

/// Tells the user what the audit of `session_id` found: what the native
/// backend's supervisor kept when the agent exited, then `found`.
fn tell(host: &HostContext, session_id: &str, found: Vec<String>) {
    print_kept(&pending_dir(host).join(format!("{session_id}.warnings")));
    for warning in found {
        crate::report::alarm(&warning);
    }
}

/// [`finish`], started now on a thread of its own, so that the check runs
/// while kennel records the end of the session; [`Checking::finish`] waits
/// for it and tells the user.
pub fn begin_finish(host: &HostContext, session_id: &str) -> Checking {
    let (host, session_id) = (host.clone(), session_id.to_string());
    let check = {
        let (host, session_id) = (host.clone(), session_id.clone());
        move || take_check(&host, &session_id)
    };
    let thread = std::thread::Builder::new()
        .name("kennel-git-check".into())
        .spawn(check.clone());
    Checking {
        host,
        session_id,
        found: match thread {
            Ok(thread) => Found::Pending(thread),
            // Without a thread, the check is made here and now.
            Err(_) => Found::Made(check()),
        },
    }
}

/// An end-of-session check being made (see [`begin_finish`]).
pub struct Checking {
    host: HostContext,
    session_id: String,
    found: Found,
}

enum Found {
    Pending(std::thread::JoinHandle<Vec<String>>),
    Made(Vec<String>),
}

impl Checking {
    pub fn finish(self) {
        let found = match self.found {
            Found::Pending(thread) => thread.join().unwrap_or_else(|_| {
                vec![
                    "the end-of-session check of the git control files failed; \
                      run `kennel ls` to have it made again"
                        .to_string(),
                ]
            }),
            Found::Made(found) => found,
        };
        tell(&self.host, &self.session_id, found);
    }
}

/// Like [`finish`], for a process the user is not watching (the native
/// backend's session supervisor, when the agent exits by itself): what the
/// check moved aside happens now, what it says is kept for the next kennel
/// command ([`settle`]) to print.
pub fn finish_unattended(host: &HostContext, session_id: &str) {
    let warnings = take_check(host, session_id);
    if !warnings.is_empty() {
        let _ = std::fs::write(
            pending_dir(host).join(format!("{session_id}.warnings")),
            warnings.join("\n") + "\n",
        );
    }
}

/// Audits every session whose audit is pending and that is no longer live
/// in the registry (ended however: stopped, killed, exited by itself, its
/// engine restarted, removed). Any command that looks at sessions calls it.
pub fn settle(host: &HostContext, registry: &kennel_sessions::Registry) {
    let Ok(list) = std::fs::read_dir(pending_dir(host)) else {
        return;
    };
    for entry in list.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".warnings") {
            print_kept(&entry.path());
            continue;
        }
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        if id.starts_with(UNREGISTERED) {
            continue;
        }
        // Looked up one by one (the registry keeps every session that
        // ever ran; listing them all cost every direct-mode start more as
        // it grew). A registry that cannot answer leaves the audit pending.
        let live = match registry.get(id) {
            Ok(session) => session.id == id && !session.state.is_ended(),
            Err(RegistryError::NotFound(_) | RegistryError::Ambiguous { .. }) => false,
            Err(_) => continue,
        };
        if !live {
            finish(host, id);
        }
    }
}

/// Whether [`settle`] has anything to do: an audit pending or warnings
/// kept (most starts find none, and need not open the registry for it).
pub fn anything_pending(host: &HostContext) -> bool {
    std::fs::read_dir(pending_dir(host)).is_ok_and(|mut list| list.next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let git = dir.path().join(".git");
        std::fs::create_dir_all(git.join("hooks")).expect("mkdir");
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").expect("write");
        std::fs::write(git.join("config"), "[core]\n").expect("write");
        (dir, git)
    }

    #[test]
    fn new_redirects_are_moved_aside_and_old_ones_kept() {
        let (dir, git) = repo();
        std::fs::write(git.join("config.worktree"), "mine").expect("write");
        let before = snapshot(dir.path(), "s1", vec![]);
        std::fs::write(git.join("commondir"), "/tmp/evil").expect("write");
        let warnings = check(&before);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("commondir"), "{warnings:?}");
        assert!(!git.join("commondir").exists());
        assert!(git.join("commondir.kennel-quarantine-s1").exists());
        assert!(
            git.join("config.worktree").exists(),
            "the user's own file stays"
        );
    }

    #[test]
    fn a_new_submodule_git_dir_is_moved_aside() {
        let (dir, git) = repo();
        std::fs::create_dir_all(git.join("modules/lib")).expect("mkdir");
        std::fs::write(git.join("modules/lib/HEAD"), "x").expect("write");
        std::fs::write(git.join("modules/lib/config"), "[core]\n").expect("write");
        let before = snapshot(dir.path(), "s1", vec![]);
        std::fs::create_dir_all(git.join("modules/evil")).expect("mkdir");
        std::fs::write(
            git.join("modules/evil/config"),
            "[core]\nfsmonitor = touch /tmp/x\n",
        )
        .expect("write");
        std::fs::write(git.join("modules/lib/config.worktree"), "[core]\n").expect("write");
        let warnings = check(&before);
        assert!(!git.join("modules/evil").exists(), "{warnings:?}");
        assert!(
            !git.join("modules/lib/config.worktree").exists(),
            "{warnings:?}"
        );
        assert!(git.join("modules/lib/config").exists());
    }

    #[test]
    fn changed_contents_are_reported_whatever_the_mtime() {
        let (dir, git) = repo();
        std::fs::write(git.join("config.worktree"), "[core]\n").expect("write");
        let before = snapshot(dir.path(), "s1", vec![]);
        let old = std::fs::metadata(git.join("config.worktree"))
            .expect("meta")
            .modified()
            .expect("mtime");
        std::fs::write(git.join("config.worktree"), "[core]\nfsmonitor = x\n").expect("write");
        std::fs::File::options()
            .write(true)
            .open(git.join("config.worktree"))
            .expect("open")
            .set_modified(old)
            .expect("touch back");
        let warnings = check(&before);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("config.worktree") && w.contains("changed")),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_replaced_git_dir_is_reported() {
        let (dir, git) = repo();
        let before = snapshot(dir.path(), "s1", vec![]);
        std::fs::rename(&git, dir.path().join("old")).expect("rename");
        std::fs::create_dir(&git).expect("mkdir");
        let warnings = check(&before);
        assert!(warnings[0].contains("replaced"), "{warnings:?}");
    }

    #[test]
    fn a_git_file_is_recorded_and_a_new_gitdir_line_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(".git"), "gitdir: /elsewhere\n").expect("write");
        let before = snapshot(dir.path(), "s1", vec![]);
        assert!(before.identity.is_some_and(|id| !id.dir));
        // Rewritten in place (same inode).
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(dir.path().join(".git"))
            .and_then(|mut file| std::io::Write::write_all(&mut file, b"gitdir: ./evil\n"))
            .expect("rewrite");
        let warnings = check(&before);
        assert!(
            warnings.iter().any(|w| w.contains("changed")),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_repository_added_as_a_gitlink_is_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q"]);
        git(dir.path(), &["commit", "-q", "--allow-empty", "-m", "i"]);
        let before = snapshot(dir.path(), "s1", vec![]);
        let sub = dir.path().join("sub");
        git(dir.path(), &["init", "-q", "sub"]);
        git(&sub, &["commit", "-q", "--allow-empty", "-m", "s"]);
        std::fs::write(
            sub.join(".git/config"),
            "[core]\n\tfsmonitor = \"touch /tmp/never; false\"\n",
        )
        .expect("write");
        git(dir.path(), &["-c", "core.fsmonitor=false", "add", "sub"]);
        let warnings = check(&before);
        assert!(!sub.join(".git").exists(), "{warnings:?}");
        assert!(
            warnings.iter().any(|w| w.contains("sub/.git")),
            "{warnings:?}"
        );
    }

    #[test]
    fn an_untracked_repository_the_agent_made_is_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q"]);
        // The user's own untracked repository stays.
        git(dir.path(), &["init", "-q", "mine"]);
        let before = snapshot(dir.path(), "s1", vec![]);
        let deep = dir.path().join("src/deep/repo");
        std::fs::create_dir_all(&deep).expect("mkdir");
        git(&deep, &["init", "-q"]);
        std::fs::write(
            deep.join(".git/config"),
            "[core]\n\tfsmonitor = \"touch /tmp/never; false\"\n",
        )
        .expect("write");
        let warnings = check(&before);
        assert!(!deep.join(".git").exists(), "{warnings:?}");
        assert!(dir.path().join("mine/.git").exists(), "{warnings:?}");
        assert!(
            warnings.iter().any(|w| w.contains("repo/.git")),
            "{warnings:?}"
        );
    }

    #[test]
    fn a_gitlink_after_many_files_is_still_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q"]);
        // More staged files than the audit's entry bound, sorted before
        // the gitlink.
        let many = dir.path().join("a");
        std::fs::create_dir(&many).expect("mkdir");
        for i in 0..=MAX_ENTRIES {
            std::fs::write(many.join(format!("{i:05}")), "").expect("write");
        }
        git(dir.path(), &["add", "a"]);
        git(dir.path(), &["commit", "-q", "-m", "many"]);
        let before = snapshot(dir.path(), "s1", vec![]);
        let sub = dir.path().join("z-sub");
        git(dir.path(), &["init", "-q", "z-sub"]);
        git(&sub, &["commit", "-q", "--allow-empty", "-m", "s"]);
        git(dir.path(), &["-c", "core.fsmonitor=false", "add", "z-sub"]);
        let warnings = check(&before);
        assert!(!sub.join(".git").exists(), "{warnings:?}");
    }

    /// git in `dir`, quietly; the test fails when it does.
    fn git(dir: &Path, args: &[&str]) {
        let status = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    }

    fn host(data: &Path) -> HostContext {
        HostContext {
            uid: 1,
            gid: 1,
            user: "u".into(),
            home: "/nonexistent".into(),
            env: Default::default(),
            cwd: "/".into(),
            data_dir: data.to_path_buf(),
            config_dir: data.to_path_buf(),
        }
    }

    #[test]
    fn guard_refuses_a_replaced_git_dir_until_accepted() {
        let (dir, git) = repo();
        let data = tempfile::tempdir().expect("tempdir");
        let host = host(data.path());
        let workspace = Workspace {
            root: dir.path().to_path_buf(),
            workdir: dir.path().to_path_buf(),
            ..Default::default()
        };
        guard(&host, &workspace, false).expect("first time records");
        guard(&host, &workspace, false).expect("same .git");
        std::fs::rename(&git, dir.path().join("old")).expect("rename");
        std::fs::create_dir(&git).expect("mkdir");
        let error = guard(&host, &workspace, false).expect_err("refused");
        assert!(
            error.to_string().contains("is not the directory"),
            "{error}"
        );
        guard(&host, &workspace, true).expect("accepted");
        guard(&host, &workspace, false).expect("the new one is recorded");
    }

    #[test]
    fn settle_audits_ended_and_unknown_sessions_and_leaves_live_ones() {
        use kennel_sessions::{Limits, Mode, NewSession, Registry, SlotRequest, State};
        let (dir, git) = repo();
        let data = tempfile::tempdir().expect("tempdir");
        let host = host(data.path());
        assert!(!anything_pending(&host), "nothing recorded yet");
        let mut registry = Registry::open(&data.path().join("sessions.db")).expect("registry");
        let mut session = || {
            registry
                .insert(&NewSession {
                    name: None,
                    agent: "shell".into(),
                    workspace: dir.path().to_path_buf(),
                    slot: SlotRequest::Free,
                    slots_per_workspace: true,
                    owner: None,
                    backend: "native".into(),
                    ends_with_owner: false,
                    mode: Mode::Persistent,
                    limits: Limits::default(),
                    plan: None,
                })
                .expect("insert")
                .id
        };
        let (live, ended) = (session(), session());
        registry.mark_running(&live, "h").expect("running");
        registry
            .mark_ended(&ended, State::Exited, Some(0))
            .expect("ended");
        let workspace = Workspace {
            root: dir.path().to_path_buf(),
            workdir: dir.path().to_path_buf(),
            ..Default::default()
        };
        // Three sessions that planted a commondir: one still running, one
        // ended, one the registry does not know (its row was removed).
        for id in [&live, &ended, &"0123456789ab".to_string()] {
            begin(&workspace).record(&host, id, id);
        }
        std::fs::write(git.join("commondir"), "/elsewhere\n").expect("plant");
        assert!(anything_pending(&host));
        settle(&host, &registry);
        let pending = |id: &str| pending_dir(&host).join(format!("{id}.json")).exists();
        assert!(pending(&live), "a live session's audit waits for its end");
        assert!(!pending(&ended) && !pending("0123456789ab"));
        assert!(
            !git.join("commondir").exists(),
            "the ended session's plant was moved aside"
        );
    }

    #[test]
    fn guard_refuses_symlinked_controls() {
        let (dir, _git) = repo();
        let data = tempfile::tempdir().expect("tempdir");
        let workspace = Workspace {
            root: dir.path().to_path_buf(),
            workdir: dir.path().to_path_buf(),
            refused: vec![dir.path().join(".git/hooks")],
            ..Default::default()
        };
        let error = guard(&host(data.path()), &workspace, false).expect_err("refused");
        assert!(error.to_string().contains("symbolic link"), "{error}");
    }
}
