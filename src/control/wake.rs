//! What the control thread sleeps on between its chores: its listener and
//! an eventfd that `Engine::shutdown` writes, so that it sleeps until a
//! peer knocks, its next chore is due, or the engine stops, instead of
//! waking every few milliseconds to look (each wake-up preempts a progress
//! thread on a core it shares).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::fd_table::InProcessTable;

/// An eventfd that ends the control thread's sleep.
#[derive(Debug)]
pub(crate) struct Wake(InProcessTable<OwnedFd>);

impl Wake {
    pub(crate) fn new() -> io::Result<Wake> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new
        // descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        Ok(Wake(InProcessTable::new(unsafe {
            OwnedFd::from_raw_fd(fd)
        })))
    }

    /// Ends the current or next sleep.
    pub(crate) fn wake(&self) {
        // Outside the process's table the number means nothing, or another
        // file; the control thread looks at the stop flag every 100 ms.
        if !crate::fd_table::in_process_table() {
            return;
        }
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live local array. A full counter
        // (EAGAIN) already means "awake", so the result needs no check.
        unsafe {
            libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len());
        }
    }

    /// Sleeps until `listener` has a connection to accept, the engine is
    /// woken, or `timeout` passes.
    pub(crate) fn sleep(&self, listener: &impl AsRawFd, timeout: Duration) {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a live array of two pollfds, its length passed.
        unsafe {
            libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms);
        }
    }
}
