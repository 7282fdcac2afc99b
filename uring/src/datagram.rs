//! The per-socket message headers that UDP receives and sends need, and the
//! parsing of what a multishot `recvmsg` writes into a provided buffer.

use std::mem;
use std::net::SocketAddr;

use io_uring::types::RecvMsgOut;

use crate::sys;

/// Bytes the kernel prepends to each datagram in a multishot recvmsg buffer:
/// `struct io_uring_recvmsg_out`, then the source address field.
pub(crate) const RECV_OVERHEAD: usize = 16 + mem::size_of::<libc::sockaddr_in6>();

/// Room reserved for the source address: enough for IPv4 and IPv6.
const NAME_LEN: libc::socklen_t = mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;

/// Size of each provided buffer of the datagram group: room for the largest
/// datagram and the overhead, rounded up to a cache line.
pub(crate) const DGRAM_BUF_LEN: u32 = ((sys::MAX_DATAGRAM + RECV_OVERHEAD + 63) & !63) as u32;

/// What a datagram socket's in-flight operations point at. Boxed, so the
/// addresses stay put while the connection table grows.
pub(crate) struct Msgs {
    /// Template for the multishot recvmsg: only the name and control
    /// lengths matter to the kernel.
    recv: libc::msghdr,
    send: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
}

impl std::fmt::Debug for Msgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Msgs").finish_non_exhaustive()
    }
}

/// One parsed receive buffer.
pub(crate) enum Received<'a> {
    /// A whole datagram from `from`.
    Datagram { from: SocketAddr, bytes: &'a [u8] },
    /// Something to drop: a truncated datagram, an unknown address family,
    /// or a malformed buffer.
    Junk,
}

impl Msgs {
    /// Headers for a new datagram socket.
    pub(crate) fn new() -> Box<Msgs> {
        let mut recv = sys::zeroed_msghdr();
        recv.msg_namelen = NAME_LEN;
        Box::new(Msgs {
            recv,
            send: sys::zeroed_msghdr(),
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            addr: sys::zeroed_sockaddr(),
        })
    }

    /// The recvmsg template to submit.
    pub(crate) fn recv_hdr(&self) -> *const libc::msghdr {
        &self.recv
    }

    /// Fills the send header for `len` bytes at `ptr` to `to` (`None`: the
    /// connected peer) and returns it. It must stay untouched until the
    /// send completes, which the one-send-in-flight rule guarantees.
    pub(crate) fn prepare_send(
        &mut self,
        ptr: *const u8,
        len: usize,
        to: Option<SocketAddr>,
    ) -> *const libc::msghdr {
        self.iov = libc::iovec {
            iov_base: ptr as *mut libc::c_void,
            iov_len: len,
        };
        self.send = sys::zeroed_msghdr();
        self.send.msg_iov = &mut self.iov;
        self.send.msg_iovlen = 1;
        if let Some(to) = to {
            self.send.msg_namelen = sys::write_sockaddr(&to, &mut self.addr);
            self.send.msg_name = (&mut self.addr as *mut libc::sockaddr_storage).cast();
        }
        &self.send
    }
}

/// Interprets one receive buffer of `RecvMsgMulti`.
pub(crate) fn parse(buf: &[u8]) -> Received<'_> {
    // Every socket's template has the same lengths, so a fresh one serves.
    let mut template = sys::zeroed_msghdr();
    template.msg_namelen = NAME_LEN;
    let Ok(out) = RecvMsgOut::parse(buf, &template) else {
        return Received::Junk;
    };
    if out.is_payload_truncated() || out.is_name_data_truncated() {
        return Received::Junk;
    }
    // `RecvMsgOut` lends the payload with its own lifetime; re-slice
    // `buf` so that the datagram borrows the buffer instead.
    let payload = out.payload_data();
    let start = payload.as_ptr() as usize - buf.as_ptr() as usize;
    let Some(bytes) = buf.get(start..start + payload.len()) else {
        return Received::Junk;
    };
    match sys::read_sockaddr(out.name_data()) {
        Some(from) => Received::Datagram { from, bytes },
        None => Received::Junk,
    }
}
