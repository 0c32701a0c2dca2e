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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// The repository top level (or the directory itself outside git).
    pub root: PathBuf,
    /// Where the user invoked kennel, inside `root`.
    pub workdir: PathBuf,
    /// Existing paths inside `root` that must stay read-only in the sandbox.
    pub protected: Vec<PathBuf>,
}

/// Paths inside a repository that would run code on the host later if an
/// agent could write them.
pub const PROTECTED_PATHS: &[&str] = &[".git/hooks", ".git/config", ".kennel.toml"];

impl Workspace {
    /// Resolves the workspace for `dir`: the enclosing git top level when there
    /// is one. Refuses the filesystem root and the home directory (or any
    /// ancestor of it), which would hand the agent the user's secrets.
    pub fn resolve(dir: &Path, home: &Path) -> Result<Workspace, HostError> {
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
        // A repository without hooks dir would let the agent create one.
        let git_dir = root.join(".git");
        if git_dir.is_dir() && !git_dir.join("hooks").exists() {
            let _ = std::fs::create_dir(git_dir.join("hooks"));
        }
        let protected = PROTECTED_PATHS
            .iter()
            .map(|rel| root.join(rel))
            .filter(|path| path.exists())
            .collect();
        Ok(Workspace {
            root,
            workdir,
            protected,
        })
    }
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
}
