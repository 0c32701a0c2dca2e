//! Where the sandbox's start-up time goes, when kennel asks for it
//! (`KENNEL_TIMING=1`, `-vv`): the helper, the init and the agent's process
//! just before its exec each mark the stage they end, as one `NAME NANOS`
//! line (CLOCK_MONOTONIC) on a pipe; kennel reads the pipe once the helper
//! has exited. Unasked, no pipe exists and marking does nothing.
//!
//! The pipe's write end is close-on-exec in the helper and closed before
//! the agent's exec like every other descriptor, so the agent never has it.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};

/// The write end in the helper and its forks (-1: not asked).
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
/// Stages kennel's side has collected (its own marks and the helper's).
static COLLECTED: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());

/// CLOCK_MONOTONIC in nanoseconds (the clock `std::time::Instant` reads).
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|time| time.tv_sec() as u64 * 1_000_000_000 + time.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The stages marked since the last call, in the order they ended:
/// `(name, CLOCK_MONOTONIC nanoseconds at its end)`.
pub fn take() -> Vec<(String, u64)> {
    let mut stages = COLLECTED
        .lock()
        .map(|mut stages| std::mem::take(&mut *stages))
        .unwrap_or_default();
    stages.sort_by_key(|(_, at)| *at);
    stages
}

/// kennel's side: a stage of its own ends now.
pub(crate) fn collect(stage: &str) {
    if let Ok(mut stages) = COLLECTED.lock() {
        stages.push((stage.to_string(), monotonic_ns()));
    }
}

/// kennel's side: the pipe the helper marks on (its write end inherited).
pub(crate) struct Pipe {
    read: OwnedFd,
    pub(crate) write: OwnedFd,
}

impl Pipe {
    pub(crate) fn new() -> std::io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok(Pipe { read, write })
    }

    /// Reads what the helper and its processes marked (after the helper
    /// has exited; a forwarder it forked may still hold the write end, so
    /// only what is there is read).
    pub(crate) fn finish(self) {
        let Pipe { read, write } = self;
        drop(write);
        let _ = nix::fcntl::fcntl(
            &read,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        let mut text = String::new();
        let _ = std::fs::File::from(read).read_to_string(&mut text);
        if let Ok(mut stages) = COLLECTED.lock() {
            stages.extend(parse(&text));
        }
    }
}

/// `NAME NANOS` lines (a name may hold spaces); malformed lines are skipped.
fn parse(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let (name, nanos) = line.rsplit_once(' ')?;
            Some((name.to_string(), nanos.parse().ok()?))
        })
        .collect()
}

/// The helper's side: marks go to `fd` from now on (close-on-exec).
pub(crate) fn enable(fd: RawFd) {
    // SAFETY: kennel passed this descriptor for marks; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .is_ok()
    {
        WRITE_FD.store(std::os::fd::IntoRawFd::into_raw_fd(fd), Ordering::SeqCst);
    }
}

/// The helper's side: the stage `stage` ends now.
pub(crate) fn mark(stage: &str) {
    let fd = WRITE_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return;
    }
    let line = format!("{stage} {}\n", monotonic_ns());
    // SAFETY: `fd` is the pipe's write end, open in this process; one
    // short write (under PIPE_BUF, so never interleaved with another's).
    let _ = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
}

/// Stops marking (tests: the descriptor is closed).
#[cfg(test)]
fn disable() {
    let fd = WRITE_FD.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: `enable` gave up ownership of `fd` to WRITE_FD.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_parsed_with_spaces_in_names() {
        assert_eq!(
            super::parse("helper: exec 12\nlandlock, seccomp 40\nbroken\nx y\n"),
            vec![
                ("helper: exec".to_string(), 12),
                ("landlock, seccomp".to_string(), 40)
            ]
        );
    }

    #[test]
    fn marks_travel_through_the_pipe_in_order() {
        let pipe = super::Pipe::new().expect("pipe");
        let fd = nix::unistd::dup(&pipe.write).expect("dup");
        super::enable(std::os::fd::IntoRawFd::into_raw_fd(fd));
        super::mark("namespaces");
        super::mark("mounts");
        super::disable();
        pipe.finish();
        let stages = super::take();
        let names: Vec<&str> = stages.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["namespaces", "mounts"]);
        assert!(stages[0].1 <= stages[1].1 && stages[0].1 > 0);
    }
}
