//! Writing to a stream socket at once, from the caller's memory, without
//! the ring: for an owner whose queue toward the socket is empty, so that
//! nothing queued can be overtaken. The kernel copies the bytes during the
//! call; what it does not take the caller queues as usual.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use crate::sys;

/// Most parts one call gathers.
const MAX_PARTS: usize = 4;

/// Parts of a frame up to this long in all are copied together and sent as
/// one buffer: cheaper for the kernel than gathering an I/O vector.
const GATHER_BELOW: usize = 256;

/// Writes as much of the concatenation of `parts` (at most four) as the
/// socket takes now, without blocking, and returns how many bytes that was:
/// 0 when the socket is full. Errors are the socket's (a reset, a closed
/// peer); `SIGPIPE` is never raised. On a datagram socket the parts make
/// one datagram.
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
    let fd = fd.as_raw_fd();
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let sent = match parts {
        // SAFETY: `part` is a live slice, only read during the call.
        [part] => unsafe { sys::send_nowait(fd, part.as_ptr(), part.len()) },
        _ if total <= GATHER_BELOW => {
            let mut one = [0u8; GATHER_BELOW];
            let mut at = 0;
            for part in parts {
                one[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            // SAFETY: `one[..total]` is initialised and lives through the call.
            unsafe { sys::send_nowait(fd, one.as_ptr(), total) }
        }
        _ => send_gathered(fd, parts),
    };
    match sent {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(0)
        }
        other => other,
    }
}

/// One `sendmsg` of `parts` (at most [`MAX_PARTS`]) as an I/O vector.
fn send_gathered(fd: RawFd, parts: &[&[u8]]) -> io::Result<usize> {
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
    unsafe {
        sys::socket_call(
            libc::SYS_sendmsg,
            [
                fd as usize,
                &msg as *const libc::msghdr as usize,
                (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as usize,
                0,
                0,
                0,
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsFd;

    fn pair() -> (std::net::TcpStream, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tx = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        (tx, listener.accept().unwrap().0)
    }

    /// One part, parts copied together (up to `GATHER_BELOW` in all) and
    /// parts gathered by the kernel all arrive whole and in order.
    #[test]
    fn every_way_of_sending_keeps_the_bytes() {
        let (tx, mut rx) = pair();
        let bytes: Vec<u8> = (0..4 * GATHER_BELOW).map(|i| (i * 7) as u8).collect();
        let cases: [&[&[u8]]; 5] = [
            &[&bytes[..10]],
            &[&bytes[..1], &bytes[1..GATHER_BELOW]],
            &[&bytes[..100], &[], &bytes[100..GATHER_BELOW + 1]],
            &[
                &bytes[..3],
                &bytes[3..GATHER_BELOW],
                &bytes[GATHER_BELOW..],
                &[],
            ],
            &[&bytes[..]],
        ];
        for parts in cases {
            let want = parts.concat();
            assert_eq!(send_now(tx.as_fd(), parts).unwrap(), want.len());
            let mut got = vec![0; want.len()];
            rx.read_exact(&mut got).unwrap();
            assert_eq!(got, want);
        }
    }

    /// Parts copied together still make one datagram, not one per part.
    #[test]
    fn parts_make_one_datagram() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        for parts in [
            &[&b"head"[..], b"body"][..],
            &[&[1u8; 200][..], &[2u8; 300]],
        ] {
            let want = parts.concat();
            assert_eq!(send_now(tx.as_fd(), parts).unwrap(), want.len());
            let mut got = vec![0; 1024];
            let n = rx.recv(&mut got).unwrap();
            assert_eq!(&got[..n], &want[..]);
        }
    }

    /// A full socket takes nothing and says so with 0, not an error.
    #[test]
    fn a_full_socket_takes_nothing() {
        let (tx, _rx) = pair();
        let chunk = vec![0u8; 1 << 16];
        let mut zero = false;
        for _ in 0..100_000 {
            if send_now(tx.as_fd(), &[&chunk[..8], &chunk[8..]]).unwrap() == 0 {
                zero = true;
                break;
            }
        }
        assert!(zero, "the socket never filled");
        assert_eq!(send_now(tx.as_fd(), &[b"x", b"y"]).unwrap(), 0);
        assert_eq!(send_now(tx.as_fd(), &[b"xy"]).unwrap(), 0);
    }
}
