//! Facts about the invoking user and the host that the Plan depends on,
//! gathered once so that Plan building itself stays pure and testable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct HostContext {
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub home: PathBuf,
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// kennel's data directory (`$XDG_DATA_HOME/kennel`).
    pub data_dir: PathBuf,
    /// kennel's config directory (`$XDG_CONFIG_HOME/kennel`).
    pub config_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot determine the current directory: {0}")]
    Cwd(std::io::Error),
    #[error("cannot determine your home directory (set HOME)")]
    NoHome,
    #[error("workspace {path} does not exist or is not a directory")]
    NoWorkspace { path: PathBuf },
    #[error("refusing to use {path} as the workspace: {reason}")]
    UnsafeWorkspace { path: PathBuf, reason: String },
}

impl HostError {
    pub fn hint(&self) -> Option<String> {
        match self {
            HostError::NoWorkspace { .. } => {
                Some("pass an existing directory with -w/--workspace".into())
            }
            HostError::UnsafeWorkspace { .. } => Some(
                "run kennel from inside a project directory, or pass one with -w/--workspace"
                    .into(),
            ),
            HostError::NoHome => Some("export HOME=/home/yourname".into()),
            HostError::Cwd(_) => None,
        }
    }
}

impl HostContext {
    /// Reads the real host: ids, passwd entry, environment and XDG paths.
    pub fn detect() -> Result<HostContext, HostError> {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let passwd = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten();
        let user = passwd
            .as_ref()
            .map(|entry| entry.name.clone())
            .or_else(|| env.get("USER").cloned())
            .unwrap_or_else(|| format!("user{uid}"));
        let home = env
            .get("HOME")
            .filter(|home| !home.is_empty())
            .map(PathBuf::from)
            .or_else(|| passwd.as_ref().map(|entry| entry.dir.clone()))
            .ok_or(HostError::NoHome)?;
        let cwd = std::env::current_dir().map_err(HostError::Cwd)?;
        let xdg = |var: &str, fallback: &str| {
            env.get(var)
                .filter(|value| Path::new(value).is_absolute())
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(fallback))
        };
        let data_dir = xdg("XDG_DATA_HOME", ".local/share").join("kennel");
        let config_dir = xdg("XDG_CONFIG_HOME", ".config").join("kennel");
        Ok(HostContext {
            uid,
            gid,
            user,
            home,
            env,
            cwd,
            data_dir,
            config_dir,
        })
    }

    pub fn user_config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    pub fn system_config_file(&self) -> PathBuf {
        self.env
            .get("KENNEL_SYSTEM_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/kennel/config.toml"))
    }

    pub fn trust_file(&self) -> PathBuf {
        self.data_dir.join("trusted.json")
    }

    /// Expands a leading `~/` against the user's home.
    pub fn expand(&self, path: &str) -> PathBuf {
        match path.strip_prefix("~/") {
            Some(rest) => self.home.join(rest),
            None if path == "~" => self.home.clone(),
            None => PathBuf::from(path),
        }
    }
}

/// The directory tree a sandbox works in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workspace {
    /// The repository top level (or the directory itself outside git).
    pub root: PathBuf,
    /// Where the user invoked kennel, inside `root`.
    pub workdir: PathBuf,
    /// Existing paths inside `root` that must stay read-only in the sandbox:
    /// every git control file kennel found (see [`git_controls`]).
    pub protected: Vec<PathBuf>,
    /// Directories inside `root` that hold protected paths: mounted onto
    /// themselves (writable) so that the agent cannot rename or replace
    /// them (a mount point cannot be renamed), which would otherwise carry
    /// the read-only mounts away and leave a fresh directory of its own.
    pub pinned: Vec<PathBuf>,
    /// Control paths that are symlinks: never followed, never mounted;
    /// direct mode refuses to start while there are any.
    pub refused: Vec<PathBuf>,
    /// What the user must be told about control paths kennel cannot protect.
    pub notes: Vec<String>,
    /// Your git identity for this workspace (`user.name`, `user.email`,
    /// `init.defaultBranch` only), for `git_identity = "user"`.
    pub git_user: HostGit,
}

/// Paths inside a repository that would run code on the host later if an
/// agent could write them (besides the git control files that
/// [`git_controls`] finds).
pub const PROTECTED_PATHS: &[&str] = &[".kennel.toml"];

/// Files and directories of a git dir that decide what the user's git runs
/// or where it reads its configuration from.
const GIT_DIR_CONTROLS: &[&str] = &["config", "config.worktree", "hooks", "commondir", "gitdir"];

/// Upper bound on the directories looked at under `modules` and `worktrees`.
const MAX_GIT_DIRS: usize = 4096;

impl Workspace {
    /// Resolves the workspace for `dir`: the enclosing git top level when there
    /// is one. Refuses the filesystem root and the home directory (or any
    /// ancestor of it), which would hand the agent the user's secrets.
    pub fn resolve(dir: &Path, home: &Path) -> Result<Workspace, HostError> {
        Ok(Workspace::begin(dir, home)?.finish())
    }

    /// [`Workspace::resolve`] in two steps: the user's git config (as git
    /// reads it for the workspace, a git process) is read while the caller
    /// goes on, and [`Resolving::finish`] collects it.
    pub fn begin(dir: &Path, home: &Path) -> Result<Resolving, HostError> {
        let workdir = std::fs::canonicalize(dir)
            .ok()
            .filter(|path| path.is_dir())
            .ok_or_else(|| HostError::NoWorkspace {
                path: dir.to_path_buf(),
            })?;
        let root = git_toplevel(&workdir).unwrap_or_else(|| workdir.clone());
        let home = std::fs::canonicalize(home).unwrap_or_else(|_| home.to_path_buf());
        if root == Path::new("/") {
            return Err(HostError::UnsafeWorkspace {
                path: root,
                reason: "it is the filesystem root".into(),
            });
        }
        if home.starts_with(&root) {
            return Err(HostError::UnsafeWorkspace {
                path: root,
                reason:
                    "it contains your home directory (and with it ~/.ssh and your other secrets)"
                        .into(),
            });
        }
        // A `.git` that is a link is refused, and its config never read.
        let dot_git_linked = std::fs::symlink_metadata(root.join(".git"))
            .is_ok_and(|meta| meta.file_type().is_symlink());
        let git_config = match dot_git_linked {
            true => None,
            false => git_config_list(&root).spawn().ok(),
        };
        // A repository without hooks dir would let the agent create one.
        let git_dir = root.join(".git");
        if std::fs::symlink_metadata(&git_dir).is_ok_and(|meta| meta.is_dir())
            && std::fs::symlink_metadata(git_dir.join("hooks")).is_err()
        {
            let _ = std::fs::create_dir(git_dir.join("hooks"));
        }
        let mut controls = git_dir_files(&root);
        for rel in PROTECTED_PATHS {
            // A project file that is a link is untrusted whatever it names;
            // it is not followed (and not mounted).
            let path = root.join(rel);
            if std::fs::symlink_metadata(&path).is_ok_and(|meta| !meta.file_type().is_symlink()) {
                controls.add(&root, &path);
            }
        }
        Ok(Resolving {
            root,
            workdir,
            home,
            controls,
            git_config,
        })
    }
}

/// A workspace whose git config is being read (see [`Workspace::begin`]).
#[derive(Debug)]
pub struct Resolving {
    root: PathBuf,
    workdir: PathBuf,
    home: PathBuf,
    controls: Controls,
    /// `git config --list`, running (None: git could not be started).
    git_config: Option<std::process::Child>,
}

impl Resolving {
    /// The workspace's top level (its git repository's, or the directory).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Waits for the git config and completes the workspace.
    pub fn finish(self) -> Workspace {
        let Resolving {
            root,
            workdir,
            home,
            mut controls,
            git_config,
        } = self;
        if let Some(output) = git_config.and_then(|child| child.wait_with_output().ok()) {
            config_named_paths(&root, &home, &output.stdout, &mut controls);
        }
        controls.finish();
        Workspace {
            root,
            workdir,
            protected: controls.protected,
            pinned: controls.pinned,
            refused: controls.refused,
            notes: controls.notes,
            git_user: controls.user_git,
        }
    }
}

/// The git control paths of the repository at `root`, sorted out.
#[derive(Debug, Default)]
pub struct Controls {
    pub protected: Vec<PathBuf>,
    pub pinned: Vec<PathBuf>,
    pub refused: Vec<PathBuf>,
    pub notes: Vec<String>,
    /// The user's identity, read from the same `git config --list`.
    pub user_git: HostGit,
}

/// `user.name`, `user.email` and `init.defaultBranch` from the user's git
/// configuration (as git reads it for the workspace, so `includeIf`
/// identities count), and nothing else of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostGit {
    pub name: Option<String>,
    pub email: Option<String>,
    pub default_branch: Option<String>,
}

impl Controls {
    /// `path` (inside `root`) must stay read-only: protected when it is a
    /// file or directory, refused when it (or a directory between `root`
    /// and it) is a symlink, nothing when it does not exist.
    fn add(&mut self, root: &Path, path: &Path) {
        if !path.starts_with(root) {
            return; // Not mounted at all: the agent cannot write it.
        }
        match self.linked(root, path) {
            Some(link) => self.refuse(link),
            None => {
                if std::fs::symlink_metadata(path).is_ok() {
                    self.protected.push(path.to_path_buf());
                    // Its parents, up to the workspace: renaming one would
                    // carry the read-only mount away.
                    for dir in path.ancestors().skip(1) {
                        if dir == root || !dir.starts_with(root) {
                            break;
                        }
                        self.pinned.push(dir.to_path_buf());
                    }
                }
            }
        }
    }

    /// A directory inside `root` that holds protected paths.
    fn pin(&mut self, root: &Path, dir: &Path) {
        if !dir.starts_with(root) || dir == root {
            return;
        }
        match self.linked(root, dir) {
            Some(link) => self.refuse(link),
            None => {
                if std::fs::symlink_metadata(dir).is_ok_and(|meta| meta.is_dir()) {
                    self.pinned.push(dir.to_path_buf());
                }
            }
        }
    }

    fn refuse(&mut self, link: PathBuf) {
        if !self.refused.contains(&link) {
            self.refused.push(link);
        }
    }

    /// The first symlink on the way from `root` (exclusive) to `path`.
    fn linked(&self, root: &Path, path: &Path) -> Option<PathBuf> {
        let rel = path.strip_prefix(root).ok()?;
        let mut at = root.to_path_buf();
        for part in rel.components() {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(meta) if meta.file_type().is_symlink() => return Some(at),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    fn finish(&mut self) {
        for list in [&mut self.protected, &mut self.pinned, &mut self.refused] {
            list.sort();
            list.dedup();
        }
        // Inside a read-only directory nothing more needs a mount.
        let protected = self.protected.clone();
        let covered = |path: &PathBuf| {
            protected
                .iter()
                .any(|dir| path != dir && path.starts_with(dir))
        };
        self.protected.retain(|path| !covered(path));
        self.pinned
            .retain(|dir| !protected.contains(dir) && !covered(dir));
    }
}

/// Every git control path of the repository whose top level is `root`:
/// the `.git` file (linked worktrees, submodule checkouts) or directory,
/// `config`, `config.worktree`, `hooks`, `commondir` and `gitdir` of the
/// repository, of each submodule (nested ones too) and of each worktree's
/// admin directory (what the user's config names inside the workspace is
/// added by [`config_named_paths`]). Only paths inside `root` matter:
/// nothing else is mounted writable.
fn git_dir_files(root: &Path) -> Controls {
    let mut controls = Controls::default();
    let dot_git = root.join(".git");
    let Ok(meta) = std::fs::symlink_metadata(&dot_git) else {
        // Not a repository: only the user's identity is of use.
        return controls;
    };
    let git_dir = if meta.file_type().is_symlink() {
        controls.refuse(dot_git);
        return controls;
    } else if meta.is_file() {
        // The file itself says where git reads everything from.
        controls.add(root, &dot_git);
        match read_gitdir_file(&dot_git, root) {
            Some(dir) => dir,
            None => return controls,
        }
    } else {
        controls.pin(root, &dot_git);
        dot_git
    };
    let mut seen = 0usize;
    git_dir_controls(root, &git_dir, &mut controls, &mut seen);
    for path in gitmodules_paths(root) {
        checkout_controls(root, &path, &mut controls, &mut seen);
    }
    // A linked worktree: the common dir holds config and hooks.
    if let Ok(text) = std::fs::read_to_string(git_dir.join("commondir")) {
        let common = git_dir.join(text.trim());
        if common != git_dir {
            git_dir_controls(root, &common, &mut controls, &mut seen);
        }
    }
    controls
}

/// `git config -z --list --show-origin` for `root` (its output read by
/// [`config_named_paths`]).
fn git_config_list(root: &Path) -> std::process::Command {
    let mut command = git_at(root);
    command
        .args(["config", "-z", "--list", "--show-origin"])
        .stdout(std::process::Stdio::piped());
    command
}

/// `git -C root …` as kennel runs it to read the user's repository: the
/// repository found from `root` alone (variables that would name another
/// git dir, work tree or index are cleared), no input, no error output.
/// Only for commands that run nothing (`config`, `ls-files`).
pub fn git_at(root: &Path) -> std::process::Command {
    let mut command = std::process::Command::new("git");
    command
        .arg("-C")
        .arg(root)
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_COMMON_DIR")
        .env_remove("GIT_INDEX_FILE")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

/// The git dir that a `.git` file names (`gitdir: <path>`, relative to
/// `root`, the file's directory).
pub fn read_gitdir_file(file: &Path, root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().next()?.strip_prefix("gitdir:")?.trim();
    let path = Path::new(line);
    Some(if path.is_absolute() {
        path.to_path_buf()
    } else {
        root.join(path)
    })
}

/// The controls of one git dir, then those of its submodules' and
/// worktrees' git dirs (recursively, never through a symlink).
fn git_dir_controls(root: &Path, git_dir: &Path, controls: &mut Controls, seen: &mut usize) {
    *seen += 1;
    if *seen > MAX_GIT_DIRS {
        return;
    }
    controls.pin(root, git_dir);
    for name in GIT_DIR_CONTROLS {
        controls.add(root, &git_dir.join(name));
    }
    // A submodule's git dir names its checkout (`core.worktree`): the
    // checkout's `.git` file says where its git reads everything from.
    if let Some(worktree) = core_worktree(git_dir) {
        checkout_controls(root, &worktree, controls, seen);
    }
    for nest in ["modules", "worktrees"] {
        let dir = git_dir.join(nest);
        if !std::fs::symlink_metadata(&dir).is_ok_and(|meta| meta.is_dir()) {
            if std::fs::symlink_metadata(&dir).is_ok_and(|meta| meta.file_type().is_symlink()) {
                controls.add(root, &dir);
            }
            continue;
        }
        controls.pin(root, &dir);
        nested_git_dirs(root, &dir, controls, seen);
    }
}

/// The `core.worktree` of the git dir's own config file (a submodule's
/// checkout), resolved against the git dir.
fn core_worktree(git_dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(git_dir.join("config")).ok()?;
    let mut in_core = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_core = line.to_ascii_lowercase().starts_with("[core]");
            continue;
        }
        if !in_core {
            continue;
        }
        if let Some((key, value)) = line.split_once('=')
            && key.trim().eq_ignore_ascii_case("worktree")
        {
            let value = value.trim().trim_matches('"');
            return Some(normalize(&git_dir.join(value)));
        }
    }
    None
}

/// The `.git` of a checkout inside the workspace (a submodule's): a file is
/// protected; a directory (an embedded repository) is a git dir of its own.
fn checkout_controls(root: &Path, checkout: &Path, controls: &mut Controls, seen: &mut usize) {
    if !checkout.starts_with(root) || checkout == root {
        return;
    }
    let dot_git = checkout.join(".git");
    match std::fs::symlink_metadata(&dot_git) {
        Ok(meta) if meta.is_dir() && !meta.file_type().is_symlink() => {
            if !controls.pinned.contains(&dot_git) {
                git_dir_controls(root, &dot_git, controls, seen);
            }
        }
        Ok(_) => controls.add(root, &dot_git),
        Err(_) => {}
    }
}

/// The submodule paths that `.gitmodules` lists (their checkouts may hold
/// a `.git` directory of their own, with no git dir under `modules`).
fn gitmodules_paths(root: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string(root.join(".gitmodules")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case("path")
                .then(|| normalize(&root.join(value.trim().trim_matches('"'))))
        })
        .take(MAX_GIT_DIRS)
        .collect()
}

/// Walks `dir` (under `modules` or `worktrees`): a directory with `HEAD` or
/// `commondir` is a git dir; any other directory may hold more (submodule
/// names can contain slashes).
fn nested_git_dirs(root: &Path, dir: &Path, controls: &mut Controls, seen: &mut usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        *seen += 1;
        if *seen > MAX_GIT_DIRS {
            return;
        }
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_symlink() {
            // A submodule's or worktree's git dir that is a link.
            controls.add(root, &path);
        } else if kind.is_dir() {
            let is_git_dir = ["HEAD", "commondir", "config"]
                .iter()
                .any(|name| std::fs::symlink_metadata(path.join(name)).is_ok());
            if is_git_dir {
                git_dir_controls(root, &path, controls, seen);
            } else {
                controls.pin(root, &path);
                nested_git_dirs(root, &path, controls, seen);
            }
        }
    }
}

/// What the user's git config (as git itself reads it, for `root`) names
/// inside the workspace: the hooks directory (`core.hooksPath`, e.g.
/// husky's git-ignored `.husky/_`), a `core.fsmonitor` program and config
/// files included from the workspace. Existing ones are protected; a
/// missing hooks directory is created (empty, so git shows nothing) and
/// protected; a missing fsmonitor program is a note for the user.
fn config_named_paths(root: &Path, home: &Path, listed: &[u8], controls: &mut Controls) {
    let text = String::from_utf8_lossy(listed);
    let mut fields = text.split('\0');
    let expand = |value: &str| -> PathBuf {
        let path = match value.strip_prefix("~/") {
            Some(rest) => home.join(rest),
            None => PathBuf::from(value),
        };
        if path.is_absolute() {
            normalize(&path)
        } else {
            normalize(&root.join(path))
        }
    };
    while let (Some(origin), Some(entry)) = (fields.next(), fields.next()) {
        let origin_file = origin.strip_prefix("file:").map(expand);
        if let Some(file) = &origin_file
            && file.starts_with(root)
        {
            controls.add(root, file);
        }
        let (key, value) = entry.split_once('\n').unwrap_or((entry, ""));
        let lower = key.to_ascii_lowercase();
        // Included files, conditional ones too (`includeIf.<cond>.path` is
        // listed whether its condition holds now or not: the agent could
        // make it hold, e.g. by switching branch). Relative to the file
        // that includes them.
        if (lower == "include.path"
            || (lower.starts_with("includeif.") && lower.ends_with(".path")))
            && !value.is_empty()
        {
            let path = match (value.strip_prefix("~/"), &origin_file) {
                (Some(rest), _) => home.join(rest),
                (None, _) if Path::new(value).is_absolute() => PathBuf::from(value),
                (None, Some(file)) => file.parent().unwrap_or(root).join(value),
                (None, None) => root.join(value),
            };
            let path = normalize(&path);
            if path.starts_with(root) {
                if std::fs::symlink_metadata(&path).is_ok()
                    || controls.linked(root, &path).is_some()
                {
                    controls.add(root, &path);
                } else {
                    controls.notes.push(format!(
                        "your git config includes {} ({key}), which does not exist: an agent \
                         could create it; check it before running git here",
                        path.display()
                    ));
                }
            }
            continue;
        }
        match lower.as_str() {
            // The last value wins, as in git.
            "user.name" => controls.user_git.name = Some(value.to_string()),
            "user.email" => controls.user_git.email = Some(value.to_string()),
            "init.defaultbranch" => controls.user_git.default_branch = Some(value.to_string()),
            "core.hookspath" if !value.is_empty() => {
                let dir = expand(value);
                if !dir.starts_with(root) {
                    continue;
                }
                if controls.linked(root, &dir).is_none() && std::fs::symlink_metadata(&dir).is_err()
                {
                    let _ = std::fs::create_dir_all(&dir);
                }
                controls.add(root, &dir);
            }
            "core.fsmonitor" => {
                let lower = value.to_ascii_lowercase();
                if ["", "true", "false", "yes", "no", "on", "off", "1", "0"]
                    .contains(&lower.as_str())
                {
                    continue;
                }
                let program = value.split_whitespace().next().unwrap_or(value);
                let path = expand(program);
                if !path.starts_with(root) {
                    continue;
                }
                if std::fs::symlink_metadata(&path).is_ok()
                    || controls.linked(root, &path).is_some()
                {
                    controls.add(root, &path);
                } else {
                    controls.notes.push(format!(
                        "your git config runs {} (core.fsmonitor), which does not exist yet: \
                         an agent could create it; check it before running git here",
                        path.display()
                    ));
                }
            }
            _ => {}
        }
    }
}

/// `path` with `.` and `..` resolved lexically (no symlink is followed).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The enclosing repository's top level: the nearest directory with a `.git`
/// entry (a directory, or a file for worktrees and submodules). Walking up
/// is what `git rev-parse --show-toplevel` does for these layouts, without
/// the cost of starting git on every run.
fn git_toplevel(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|candidate| candidate.join(".git").exists())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_home_and_root() {
        let home = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            Workspace::resolve(home.path(), home.path()),
            Err(HostError::UnsafeWorkspace { .. })
        ));
        assert!(matches!(
            Workspace::resolve(Path::new("/"), home.path()),
            Err(HostError::UnsafeWorkspace { .. })
        ));
    }

    use std::process::Command;

    #[test]
    fn finds_git_toplevel_and_protects_hooks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new("git")
            .arg("init")
            .arg("-q")
            .arg(dir.path())
            .status()
            .expect("git");
        assert!(status.success());
        let sub = dir.path().join("src");
        std::fs::create_dir(&sub).expect("mkdir");
        let workspace = Workspace::resolve(&sub, Path::new("/nonexistent-home")).expect("resolves");
        let root = std::fs::canonicalize(dir.path()).expect("canon");
        assert_eq!(workspace.root, root);
        assert_eq!(workspace.workdir, root.join("src"));
        assert!(workspace.protected.contains(&root.join(".git/hooks")));
        assert!(workspace.protected.contains(&root.join(".git/config")));
    }

    fn git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "protocol.file.allow=always"])
            .args(args)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("git");
        assert!(status.success(), "git {args:?}");
    }

    fn repo_with_everything() -> (tempfile::TempDir, PathBuf) {
        let top = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(top.path()).expect("canon");
        let lib = base.join("lib");
        let nested = base.join("nested");
        for repo in [&lib, &nested] {
            git(&base, &["init", "-q", repo.to_str().expect("utf8")]);
            git(repo, &["commit", "-q", "--allow-empty", "-m", "i"]);
        }
        git(
            &lib,
            &[
                "submodule",
                "-q",
                "add",
                nested.to_str().expect("utf8"),
                "inner",
            ],
        );
        git(&lib, &["commit", "-q", "-m", "inner"]);
        let root = base.join("repo");
        git(&base, &["init", "-q", root.to_str().expect("utf8")]);
        git(&root, &["commit", "-q", "--allow-empty", "-m", "i"]);
        git(
            &root,
            &["submodule", "-q", "add", lib.to_str().expect("utf8"), "lib"],
        );
        git(
            &root,
            &["submodule", "-q", "update", "--init", "--recursive"],
        );
        git(&root, &["config", "extensions.worktreeConfig", "true"]);
        git(
            &root,
            &["config", "--worktree", "core.sparseCheckout", "false"],
        );
        git(&root, &["worktree", "add", "-q", "../other"]);
        git(&root, &["config", "core.hooksPath", ".husky/_"]);
        std::fs::write(root.join("team.gitconfig"), "[core]\n").expect("write");
        git(
            &root,
            &[
                "config",
                "includeIf.onbranch:agent.path",
                "../team.gitconfig",
            ],
        );
        (top, root)
    }

    #[test]
    fn protects_every_git_control_file() {
        let (_top, root) = repo_with_everything();
        let workspace =
            Workspace::resolve(&root, Path::new("/nonexistent-home")).expect("resolves");
        let git = root.join(".git");
        for path in [
            git.join("config"),
            git.join("config.worktree"),
            git.join("hooks"),
            git.join("modules/lib/config"),
            git.join("modules/lib/hooks"),
            git.join("modules/lib/modules/inner/config"),
            git.join("modules/lib/modules/inner/hooks"),
            git.join("worktrees/other/commondir"),
            git.join("worktrees/other/gitdir"),
            root.join(".husky/_"),
            root.join("team.gitconfig"),
            root.join("lib/.git"),
            root.join("lib/inner/.git"),
        ] {
            assert!(
                workspace.protected.contains(&path),
                "{} not protected: {:?}",
                path.display(),
                workspace.protected
            );
        }
        assert!(
            root.join(".husky/_").is_dir(),
            "a missing hooks path is made"
        );
        for dir in [
            git.clone(),
            git.join("modules"),
            git.join("modules/lib"),
            git.join("modules/lib/modules/inner"),
            git.join("worktrees/other"),
        ] {
            assert!(
                workspace.pinned.contains(&dir),
                "{} not pinned",
                dir.display()
            );
        }
        assert!(workspace.refused.is_empty(), "{:?}", workspace.refused);

        // The submodule's checkout: `.git` is a file; it is protected, and
        // its git dir (outside this workspace) is not mounted at all.
        let sub = Workspace::resolve(&root.join("lib"), Path::new("/nonexistent-home"))
            .expect("resolves");
        assert_eq!(sub.root, root.join("lib"));
        assert!(
            sub.protected.contains(&root.join("lib/.git")),
            "{:?}",
            sub.protected
        );
        assert!(
            sub.protected
                .iter()
                .all(|path| path.starts_with(root.join("lib")))
        );
    }

    #[test]
    fn symlinked_controls_are_refused_never_followed() {
        let (_top, root) = repo_with_everything();
        let git = root.join(".git");
        let secret = tempfile::tempdir().expect("tempdir");
        std::fs::rename(git.join("hooks"), git.join("hooks.old")).expect("mv");
        std::os::unix::fs::symlink(secret.path(), git.join("hooks")).expect("ln");
        std::fs::rename(
            git.join("modules/lib/config"),
            git.join("modules/lib/config.old"),
        )
        .expect("mv");
        std::os::unix::fs::symlink("/etc/passwd", git.join("modules/lib/config")).expect("ln");
        let workspace =
            Workspace::resolve(&root, Path::new("/nonexistent-home")).expect("resolves");
        assert!(
            workspace.refused.contains(&git.join("hooks")),
            "{:?}",
            workspace.refused
        );
        assert!(
            workspace.refused.contains(&git.join("modules/lib/config")),
            "{:?}",
            workspace.refused
        );
        assert!(!workspace.protected.contains(&git.join("hooks")));
        assert!(
            !workspace
                .protected
                .contains(&git.join("modules/lib/config"))
        );

        // `.git` itself a link.
        let other = tempfile::tempdir().expect("tempdir");
        let linked = std::fs::canonicalize(other.path()).expect("canon");
        std::os::unix::fs::symlink(&git, linked.join(".git")).expect("ln");
        let workspace =
            Workspace::resolve(&linked, Path::new("/nonexistent-home")).expect("resolves");
        assert_eq!(workspace.refused, vec![linked.join(".git")]);
        assert!(workspace.protected.is_empty(), "{:?}", workspace.protected);
    }
}
