//! The sandbox's filesystem, computed from the Plan as a list of operations
//! (pure: the host is seen through [`HostFs`], so it is unit-tested without
//! root). [`crate::helper`] carries the operations out.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use kennel_core::Plan;
use kennel_core::plan::MountPurpose;

/// Host directories bound read-only (those that exist; symlinks, as with
/// usrmerge's `/bin -> usr/bin`, are recreated as symlinks).
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// Device nodes bound from the host.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// What a host path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File,
    Symlink(PathBuf),
}

/// The narrow view of the host the layout needs.
pub trait HostFs {
    /// What `path` is, without following a final symlink; `None` when absent.
    fn node(&self, path: &Path) -> Option<Node>;
    /// `path` with every symlink resolved.
    fn canonical(&self, path: &Path) -> Option<PathBuf>;
    /// `path` is a file the user may execute.
    fn is_executable(&self, path: &Path) -> bool;
}

/// The real host.
pub struct RealFs;

impl HostFs for RealFs {
    fn node(&self, path: &Path) -> Option<Node> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(if meta.file_type().is_symlink() {
            Node::Symlink(std::fs::read_link(path).ok()?)
        } else if meta.is_dir() {
            Node::Dir
        } else {
            Node::File
        })
    }

    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(path).ok()
    }

    fn is_executable(&self, path: &Path) -> bool {
        std::fs::metadata(path)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    }
}

/// One step of building the new root. Paths named `target`/`path` are inside
/// the sandbox; `source` paths are on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A directory (and its parents) in the new root.
    Dir {
        path: PathBuf,
    },
    Symlink {
        path: PathBuf,
        points_to: PathBuf,
    },
    Tmpfs {
        path: PathBuf,
        mode: u32,
    },
    /// A recursive bind mount; the mount point is made as a directory or an
    /// empty file like the source.
    Bind {
        source: PathBuf,
        target: PathBuf,
        read_only: bool,
        dir: bool,
    },
    /// A fresh procfs for the new PID namespace.
    Proc {
        path: PathBuf,
    },
    /// A new devpts instance (skipped when the kernel refuses).
    Devpts {
        path: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub ops: Vec<Op>,
    /// Where Landlock allows every write (inside the sandbox).
    pub writable: Vec<PathBuf>,
    /// Where Landlock allows reading, writing and ioctls on existing files
    /// (device nodes) but nothing else.
    pub devices: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("mount target {0} must be an absolute path without `..`")]
    BadTarget(PathBuf),
    #[error("the host path {0} does not exist")]
    MissingSource(PathBuf),
    #[error(
        "refusing to mount {0}: it is, or goes through, a symbolic link, and kennel never \
         follows links in protected paths"
    )]
    LinkedSource(PathBuf),
}

fn depth(path: &Path) -> usize {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count()
}

fn clean_target(path: &Path) -> Result<PathBuf, LayoutError> {
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(LayoutError::BadTarget(path.to_path_buf()));
    }
    Ok(path.components().collect())
}

/// Is `path` the sandbox's `/proc` or `/dev` (or under them), which kennel owns?
fn reserved(path: &Path) -> bool {
    path.starts_with("/proc") || path.starts_with("/dev") || path == Path::new("/")
}

/// Computes the operations that build the sandbox's root for `plan`.
pub fn plan_layout(plan: &Plan, fs: &dyn HostFs) -> Result<Layout, LayoutError> {
    let mut ops = Vec::new();
    let mut bound_dirs: Vec<PathBuf> = Vec::new();
    for dir in SYSTEM_DIRS {
        let path = PathBuf::from(dir);
        match fs.node(&path) {
            Some(Node::Dir) => {
                ops.push(Op::Bind {
                    source: path.clone(),
                    target: path.clone(),
                    read_only: true,
                    dir: true,
                });
                bound_dirs.push(path);
            }
            Some(Node::Symlink(points_to)) => ops.push(Op::Symlink { path, points_to }),
            Some(Node::File) | None => {}
        }
    }
    // A resolv.conf that points out of /etc (systemd-resolved's stub in /run).
    let resolv = Path::new("/etc/resolv.conf");
    if let Some(Node::Symlink(_)) = fs.node(resolv)
        && let Some(real) = fs.canonical(resolv)
    {
        let visible = bound_dirs.iter().any(|dir| real.starts_with(dir));
        if !visible && !reserved(&real) && !real.starts_with("/tmp") {
            ops.push(Op::Bind {
                source: real.clone(),
                target: real,
                read_only: true,
                dir: false,
            });
        }
    }

    ops.push(Op::Proc {
        path: "/proc".into(),
    });
    ops.push(Op::Tmpfs {
        path: "/dev".into(),
        mode: 0o755,
    });
    for device in DEVICES {
        let path = Path::new("/dev").join(device);
        ops.push(Op::Bind {
            source: path.clone(),
            target: path,
            read_only: false,
            dir: false,
        });
    }
    ops.push(Op::Devpts {
        path: "/dev/pts".into(),
    });
    ops.push(Op::Symlink {
        path: "/dev/ptmx".into(),
        points_to: "pts/ptmx".into(),
    });
    ops.push(Op::Tmpfs {
        path: "/dev/shm".into(),
        mode: 0o1777,
    });
    for (name, points_to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(Op::Symlink {
            path: Path::new("/dev").join(name),
            points_to: points_to.into(),
        });
    }
    ops.push(Op::Tmpfs {
        path: "/tmp".into(),
        mode: 0o1777,
    });
    ops.push(Op::Dir {
        path: "/var".into(),
    });
    let mut writable: Vec<PathBuf> = vec!["/tmp".into(), "/dev/shm".into()];
    // A Plan mount under /var/tmp (a workspace there, say) must appear at
    // its own path: /var/tmp is then a private tmpfs of its own, not the
    // symlink to /tmp (which would both move the mount and, being absolute,
    // point outside the new root while it is built).
    let var_tmp = Path::new("/var/tmp");
    if plan.mounts.iter().any(|mount| {
        mount.purpose != MountPurpose::Identity
            && clean_target(&mount.target).is_ok_and(|t| t.starts_with(var_tmp))
    }) {
        ops.push(Op::Tmpfs {
            path: var_tmp.into(),
            mode: 0o1777,
        });
        writable.push(var_tmp.into());
    } else {
        ops.push(Op::Symlink {
            path: var_tmp.into(),
            points_to: "/tmp".into(),
        });
    }
    ops.push(Op::Dir {
        path: "/run".into(),
    });

    // The Plan's mounts, parents before children.
    let mut mounts: Vec<_> = plan
        .mounts
        .iter()
        .filter(|mount| mount.purpose != MountPurpose::Identity)
        .collect();
    mounts.sort_by_key(|mount| depth(&mount.target));
    for mount in mounts {
        let target = clean_target(&mount.target)?;
        if reserved(&target) {
            return Err(LayoutError::BadTarget(target));
        }
        // Bound by its real path: the helper reaches the host under a
        // different root, where an absolute symlink would point elsewhere.
        let Some(real) = fs.canonical(&mount.source) else {
            return Err(LayoutError::MissingSource(mount.source.clone()));
        };
        // A protected git control path that became a link since the Plan
        // was made (another session's agent): never followed.
        if mount.purpose == MountPurpose::Protect && real != mount.source {
            return Err(LayoutError::LinkedSource(mount.source.clone()));
        }
        let dir = match fs.node(&real) {
            Some(Node::Dir) => true,
            Some(_) => false,
            None => return Err(LayoutError::MissingSource(mount.source.clone())),
        };
        ops.push(Op::Bind {
            source: real,
            target: target.clone(),
            read_only: mount.read_only,
            dir,
        });
        if !mount.read_only && !writable.contains(&target) {
            writable.push(target);
        }
    }
    let mut devices: Vec<PathBuf> = DEVICES
        .iter()
        .map(|device| Path::new("/dev").join(device))
        .collect();
    devices.push("/dev/pts".into());
    Ok(Layout {
        ops,
        writable,
        devices,
    })
}
