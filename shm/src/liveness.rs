//! Whether the process that created a segment still runs. A pid alone can be
//! reused, so the process start time (in clock ticks since boot, field 22 of
//! `/proc/<pid>/stat`) is recorded with it.

use std::fs;

/// Start time of `pid` in clock ticks since boot, `None` if it is gone or a zombie.
pub(crate) fn start_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3 (state); start time is field 22.
    fields.nth(22 - 4)?.parse().ok()
}

/// True while the process `pid` that started at `ticks` (0 = unknown) runs.
/// Our own pid counts as alive only with our own start time: a restarted
/// process that got the same pid must still reap its predecessor's segments.
pub(crate) fn is_alive(pid: u32, ticks: u64) -> bool {
    match start_ticks(pid) {
        Some(now) => ticks == 0 || now == ticks,
        None => false,
    }
}

/// Watches one process for its exit. Checking never allocates: with a pidfd
/// (Linux 5.3+) it is one `poll`, immune to pid reuse; without one it falls
/// back to the `/proc` start-time check.
///
/// ```
/// let me = comm_shm::ProcessWatch::new(std::process::id(), 0);
/// assert!(me.is_alive());
/// ```
#[derive(Debug)]
pub struct ProcessWatch {
    pid: u32,
    ticks: u64,
    pidfd: Option<std::os::fd::OwnedFd>,
    /// Known dead when the watch was made.
    gone: bool,
}

impl ProcessWatch {
    /// Watches `pid`, which must have started at `ticks` (0: unknown).
    ///
    /// ```
    /// let w = comm_shm::ProcessWatch::new(std::process::id(), 0);
    /// assert!(w.is_alive());
    /// ```
    pub fn new(pid: u32, ticks: u64) -> Self {
        let pidfd = pidfd_open(pid);
        // Checked after opening: the fd then refers to the process we mean.
        let gone = !is_alive(pid, ticks);
        ProcessWatch {
            pid,
            ticks,
            pidfd,
            gone,
        }
    }

    /// A watch that never reports an exit (a process we cannot observe, such
    /// as one in another pid namespace).
    ///
    /// ```
    /// assert!(comm_shm::ProcessWatch::unobservable().is_alive());
    /// ```
    pub fn unobservable() -> Self {
        ProcessWatch {
            pid: 0,
            ticks: 0,
            pidfd: None,
            gone: false,
        }
    }

    /// Whether the process still runs.
    ///
    /// ```
    /// let mut child = std::process::Command::new("true").spawn()?;
    /// let w = comm_shm::ProcessWatch::new(child.id(), 0);
    /// child.wait()?;
    /// assert!(!w.is_alive());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn is_alive(&self) -> bool {
        if self.gone {
            return false;
        }
        match &self.pidfd {
            Some(fd) => !pidfd_readable(fd),
            None if self.pid == 0 => true,
            None => is_alive(self.pid, self.ticks),
        }
    }
}

fn pidfd_open(pid: u32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // it touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the kernel just gave us this fd; nothing else owns it.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// A pidfd polls readable once its process has exited.
fn pidfd_readable(fd: &std::os::fd::OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd on our stack, a count of 1, no waiting.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP) != 0
}

/// Inode of this process's pid namespace, 0 if unknown.
pub(crate) fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self/ns/pid").map_or(0, |m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_has_a_start_time() {
        let me = std::process::id();
        let ticks = start_ticks(me).expect("own /proc entry");
        assert!(is_alive(me, ticks));
    }

    #[test]
    fn a_reaped_child_is_dead() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(!is_alive(pid, 0));
    }

    #[test]
    fn a_reused_pid_with_another_start_time_is_dead() {
        // pid 1 exists in every namespace; a start tick it never had means "another process".
        if let Some(t) = start_ticks(1) {
            assert!(!is_alive(1, t + 1));
        }
    }
}
