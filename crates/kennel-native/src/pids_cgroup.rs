//! The pids limit for a user who is root on the host. A sandbox's
//! processes are capped with RLIMIT_NPROC inside their own user namespace,
//! but the kernel does not apply that limit to processes of the host's
//! root user (their user is the initial one), so for root the limit is a
//! pids cgroup of kennel's own instead (root may make one): created before
//! the helper starts, the helper moved into it between fork and exec, and
//! removed when the sandbox has ended (or, when its processes are still
//! exiting then, by a later start). `kennel verify` found the gap.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

/// A pids cgroup that holds one sandbox.
pub struct PidsCgroup {
    dir: PathBuf,
    procs: CString,
}

impl PidsCgroup {
    /// Makes a cgroup, where the pids controller is mounted (cgroup v1's
    /// pids hierarchy, or the v2 root); its limit is set by [`Self::limit`]
    /// before its sandbox starts.
    pub fn create(name: &str) -> std::io::Result<PidsCgroup> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let parent = pids_parent(&mountinfo, &own).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no pids cgroup controller")
        })?;
        sweep(&parent);
        let dir = parent.join(name);
        std::fs::create_dir(&dir)?;
        Ok(PidsCgroup {
            procs: procs_file(&dir)
                .ok_or_else(|| std::io::Error::other("a NUL in the cgroup's path"))?,
            dir,
        })
    }

    /// Limits the cgroup to `limit` processes.
    pub fn limit(&self, limit: u64) -> std::io::Result<()> {
        std::fs::write(self.dir.join("pids.max"), limit.to_string())
    }

    /// The cgroup's `cgroup.procs`, for [`enter`].
    pub fn procs(&self) -> &CStr {
        &self.procs
    }
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is
/// given. Async-signal-safe (for `pre_exec`): open, write, close.
pub fn enter(procs: &CStr) -> std::io::Result<()> {
    // SAFETY: a valid C string; the descriptor is closed below.
    let fd = unsafe { libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: writes one byte from a static buffer to an open descriptor.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let error = std::io::Error::last_os_error();
    // SAFETY: closes the descriptor opened above.
    unsafe { libc::close(fd) };
    if written == 1 { Ok(()) } else { Err(error) }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        // The sandbox's last processes may still be exiting (the kernel
        // kills a pid namespace's processes when its init ends, in the
        // background): one try now, and the next sandbox's [`sweep`]
        // removes it if it was not empty yet — waiting here would put
        // the teardown on the exit code's path (about 10 ms).
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Removes the cgroups that kennel processes which have ended left
/// (`kennel-<pid>-…`). Another kennel's, while it lives, is never touched:
/// it may have made its cgroup and not yet moved its sandbox in (an empty
/// cgroup that is not a leftover). A cgroup that still has processes is
/// busy and stays anyway.
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|name| name.strip_prefix("kennel-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if entry.file_type().is_ok_and(|kind| kind.is_dir())
            && !Path::new(&format!("/proc/{owner}")).exists()
        {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// `dir/cgroup.procs` as a C string (for the async-signal-safe [`enter`]).
fn procs_file(dir: &Path) -> Option<CString> {
    CString::new(
        dir.join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .ok()
}

/// The `cgroup.procs` of the kennel pids cgroup that process `pid` (a
/// sandbox's init) is in: processes that enter that sandbox join it.
pub fn procs_of(pid: u32) -> Option<CString> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let dir = pids_dir(&mountinfo, &theirs)?;
    if !dir.file_name()?.to_str()?.starts_with("kennel-") {
        return None;
    }
    procs_file(&dir)
}

/// The mount points of a v1 pids hierarchy and of the v2 hierarchy.
fn mounts(mountinfo: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let (mut v1, mut v2) = (None, None);
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let (fstype, options) = (right.next(), right.nth(1));
        match fstype {
            Some("cgroup") if options.is_some_and(|o| o.split(',').any(|o| o == "pids")) => {
                v1.get_or_insert_with(|| PathBuf::from(mount_point));
            }
            Some("cgroup2") => {
                v2.get_or_insert_with(|| PathBuf::from(mount_point));
            }
            _ => {}
        }
    }
    (v1, v2)
}

/// A process's cgroup path in the hierarchy whose controllers `wanted` picks,
/// from its `/proc/PID/cgroup`.
fn path_in(own: &str, wanted: impl Fn(&str) -> bool) -> Option<String> {
    own.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        wanted(controllers).then(|| path.trim_start_matches('/').to_string())
    })
}

/// The pids cgroup directory of a process whose `/proc/PID/cgroup` is `own`.
fn pids_dir(mountinfo: &str, own: &str) -> Option<PathBuf> {
    match mounts(mountinfo) {
        (Some(v1), _) => Some(v1.join(path_in(own, |c| c.split(',').any(|c| c == "pids"))?)),
        (None, Some(v2)) => Some(v2.join(path_in(own, str::is_empty)?)),
        (None, None) => None,
    }
}

/// Where a new pids cgroup goes: under this process's own cgroup in a v1
/// pids hierarchy, else at the root of a v2 hierarchy that offers pids
/// (the root is the one cgroup that may hold processes and children).
fn pids_parent(mountinfo: &str, own: &str) -> Option<PathBuf> {
    match mounts(mountinfo) {
        (Some(_), _) => pids_dir(mountinfo, own),
        (None, Some(v2)) => Some(v2).filter(|root| {
            std::fs::read_to_string(root.join("cgroup.subtree_control"))
                .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "pids"))
        }),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_leaves_a_living_kennels_cgroup_alone() {
        let parent = tempfile::tempdir().expect("tempdir");
        let mut ended = std::process::Command::new("true").spawn().expect("true");
        let dead = ended.id();
        ended.wait().expect("wait");
        let living = parent
            .path()
            .join(format!("kennel-{}-0000", std::process::id()));
        let left = parent.path().join(format!("kennel-{dead}-0000"));
        let other = parent.path().join("other");
        for dir in [&living, &left, &other] {
            std::fs::create_dir(dir).expect("mkdir");
        }
        sweep(parent.path());
        assert!(living.exists() && other.exists());
        assert!(!left.exists());
    }

    #[test]
    fn finds_the_v1_pids_hierarchy_and_this_process_in_it() {
        let mountinfo = "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                         31 25 0:27 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n";
        let own = "4:memory:/x\n8:pids:/user.slice\n0::/\n";
        assert_eq!(
            pids_parent(mountinfo, own),
            Some(PathBuf::from("/sys/fs/cgroup/pids/user.slice"))
        );
        assert_eq!(pids_parent("31 25 0:27 / /x rw - tmpfs t rw\n", own), None);
    }
}
