//! Writing to a stream socket at once, from the caller's memory, without
//! the ring: for an owner whose queue toward the socket is empty, so that
//! nothing queued can be overtaken. The kernel copies the bytes during the
//! call; what it does not take the caller queues as usual.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Most parts one call gathers.
const MAX_PARTS: usize = 4;

/// Writes as much of the concatenation of `parts` (at most four) as the
/// socket takes now, without blocking, and returns how many bytes that was:
/// 0 when the socket is full. Errors are the socket's (a reset, a closed
/// peer); `SIGPIPE` is never raised.
///
/// ```
/// use std::io::Read;
/// use std::os::fd::AsFd;
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let tx = std::net::TcpStream::connect(listener.local_addr()?)?;
/// let (mut rx, _) = listener.accept()?;
/// let n = comm_uring::send_now(tx.as_fd(), &[b"hello, ", b"world"])?;
/// assert_eq!(n, 12);
/// let mut got = [0u8; 12];
/// rx.read_exact(&mut got)?;
/// assert_eq!(&got, b"hello, world");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn send_now(fd: BorrowedFd<'_>, parts: &[&[u8]]) -> io::Result<usize> {
    assert!(parts.len() <= MAX_PARTS, "at most {MAX_PARTS} parts");
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MAX_PARTS];
    for (v, part) in iov.iter_mut().zip(parts) {
        v.iov_base = part.as_ptr() as *mut libc::c_void;
        v.iov_len = part.len();
    }
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = parts.len();
    // SAFETY: `msg` points at `parts.len()` iovecs, each describing a live,
    // readable slice borrowed for the call; the kernel only reads them.
    let n = unsafe {
        libc::sendmsg(
            fd.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    let e = io::Error::last_os_error();
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    ) {
        Ok(0)
    } else {
        Err(e)
    }
}
