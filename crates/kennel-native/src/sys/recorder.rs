//! A stand-in for the kernel in unit tests: it records every call
//! [`Syscalls`] is asked to make, one line each, in order, and answers as it
//! was told. By default every call succeeds, nothing exists on disk,
//! nothing is executable and exec returns (as if refused) without running
//! anything. The two questions about files (`exists`, `is_executable`) are
//! answered, not recorded.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use seccompiler::BpfProgram;

use super::Syscalls;
use crate::layout::Layout;

#[derive(Default)]
pub(crate) struct Recorder {
    calls: RefCell<Vec<String>>,
    /// A call whose line starts with the text fails with the errno.
    failures: Vec<(String, i32)>,
    existing: Vec<PathBuf>,
    executables: Vec<PathBuf>,
    hostname: String,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Every call whose line starts with `call` fails with `errno`.
    pub fn failing(mut self, call: &str, errno: i32) -> Recorder {
        self.failures.push((call.into(), errno));
        self
    }

    /// Something is at `path` already.
    pub fn existing(mut self, path: &str) -> Recorder {
        self.existing.push(path.into());
        self
    }

    pub fn executable(mut self, path: &str) -> Recorder {
        self.executables.push(path.into());
        self
    }

    /// The host name `hostname` returns.
    pub fn with_hostname(mut self, name: &str) -> Recorder {
        self.hostname = name.into();
        self
    }

    /// The calls made so far, one line each.
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn record(&self, line: String) -> io::Result<()> {
        let failure = self
            .failures
            .iter()
            .find(|(call, _)| line.starts_with(call.as_str()));
        self.calls.borrow_mut().push(line);
        match failure {
            Some((_, errno)) => Err(io::Error::from_raw_os_error(*errno)),
            None => Ok(()),
        }
    }
}

/// `A|B|C` (in the flag type's own order), or `-`.
fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let joined = names.collect::<Vec<_>>().join("|");
    if joined.is_empty() {
        "-".into()
    } else {
        joined
    }
}

fn or_dash(text: Option<String>) -> String {
    text.unwrap_or_else(|| "-".into())
}

fn c_text(text: &CStr) -> String {
    text.to_string_lossy().into_owned()
}

impl Syscalls for Recorder {
    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        self.record(format!(
            "unshare {}",
            names(flags.iter_names().map(|(name, _)| name))
        ))
    }

    fn write_file(&self, path: &Path, content: &str) -> io::Result<()> {
        self.record(format!("write {} {content}", path.display()))
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        self.record(format!("sethostname {name}"))
    }

    fn loopback_up(&self) -> io::Result<()> {
        self.record("loopback_up".into())
    }

    fn setns(&self, _fd: BorrowedFd<'_>, kind: CloneFlags) -> io::Result<()> {
        self.record(format!(
            "setns {}",
            names(kind.iter_names().map(|(name, _)| name))
        ))
    }

    fn hostname(&self) -> io::Result<String> {
        self.record("hostname".into())
            .map(|()| self.hostname.clone())
    }

    fn chroot_to(&self, _dir: BorrowedFd<'_>) -> io::Result<()> {
        self.record("chroot_to".into())
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        self.record(format!(
            "mount {} {} {} {} {}",
            or_dash(source.map(|s| s.display().to_string())),
            target.display(),
            or_dash(fstype.map(String::from)),
            names(flags.iter_names().map(|(name, _)| name)),
            or_dash(data.map(String::from)),
        ))
    }

    fn make_read_only(&self, path: &Path) -> io::Result<()> {
        self.record(format!("make_read_only {}", path.display()))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        self.record(format!(
            "pivot_root {} {}",
            new_root.display(),
            put_old.display()
        ))
    }

    fn umount_detach(&self, path: &Path) -> io::Result<()> {
        self.record(format!("umount_detach {}", path.display()))
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        self.record(format!("mkdir {}", path.display()))
    }

    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        self.record(format!("mkdir_all {}", path.display()))
    }

    fn create_file(&self, path: &Path) -> io::Result<()> {
        self.record(format!("create_file {}", path.display()))
    }

    fn symlink(&self, points_to: &Path, path: &Path) -> io::Result<()> {
        self.record(format!(
            "symlink {} -> {}",
            path.display(),
            points_to.display()
        ))
    }

    fn exists(&self, path: &Path) -> bool {
        self.existing.iter().any(|p| p == path)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        self.record(format!("chdir {}", path.display()))
    }

    fn is_executable(&self, path: &Path) -> bool {
        self.executables.iter().any(|p| p == path)
    }

    fn set_rlimit(&self, resource: Resource, value: u64) -> io::Result<()> {
        self.record(format!("set_rlimit {resource:?} {value}"))
    }

    fn set_no_new_privs(&self) -> io::Result<()> {
        self.record("set_no_new_privs".into())
    }

    fn landlock(&self, layout: &Layout) -> Result<(), String> {
        let list = |paths: &[PathBuf]| {
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        self.record(format!(
            "landlock writable: {}; devices: {}",
            list(&layout.writable),
            list(&layout.devices)
        ))
        .map_err(|e| e.to_string())
    }

    fn drop_capabilities(&self) -> io::Result<()> {
        self.record("drop_capabilities".into())
    }

    fn seccomp(&self, filters: &[BpfProgram]) -> Result<(), String> {
        self.record(format!("seccomp {} filters", filters.len()))
            .map_err(|e| e.to_string())
    }

    fn close_on_exec_from(&self, first: u32) {
        let _ = self.record(format!("close_on_exec_from {first}"));
    }

    fn execve(&self, program: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
        let list = |items: &[CString]| {
            items
                .iter()
                .map(|item| c_text(item))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let line = format!(
            "execve {} argv: {}; env: {}",
            c_text(program),
            list(argv),
            list(envp)
        );
        match self.record(line) {
            Err(error) => error,
            Ok(()) => io::Error::other("the recorder runs nothing"),
        }
    }
}
