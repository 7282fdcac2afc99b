//! The raw Linux calls and kernel structs that the io-uring crate does not
//! wrap. Everything `libc` is called from here, behind safe functions.

use std::io;
use std::mem::{self, MaybeUninit};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::ptr::NonNull;

/// `FUTEX2_SIZE_U32` without `FUTEX2_PRIVATE`: the doorbell word may live in
/// memory shared between processes, so waits must match shared wakes.
pub(crate) const FUTEX2_SHARED_U32: u32 = 0x02;

/// `FUTEX_BITSET_MATCH_ANY`: be woken by any `FUTEX_WAKE`, whatever its mask.
pub(crate) const FUTEX_MATCH_ANY: u64 = 0xffff_ffff;

/// Largest UDP payload over IPv6 (65535 minus the 8-byte UDP header); IPv4's
/// is 20 bytes smaller.
pub(crate) const MAX_DATAGRAM: usize = 65_527;

/// `struct io_uring_buf`: one slot of a provided-buffer ring. The first
/// slot's `resv` is the ring's tail, which the kernel reads.
#[repr(C)]
pub(crate) struct RawBuf {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) bid: u16,
    pub(crate) resv: u16,
}

/// An anonymous, private, page-aligned memory mapping, unmapped on drop.
///
/// Provided buffers and buffer rings live in mappings rather than in `Vec`s
/// because the kernel requires the ring to be page aligned and because a
/// mapping can be leaked as a whole when the kernel might still write to it.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mmap {
    /// Maps `len` zeroed bytes (rounded up to whole pages by the kernel).
    pub(crate) fn anon(len: usize) -> io::Result<Mmap> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: an anonymous private mapping at an address of the kernel's
        // choosing touches no existing memory; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(Mmap { ptr, len })
    }

    /// The first byte of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Abandons the mapping without unmapping it, for when the kernel may
    /// still write into it and the address must never be reused.
    pub(crate) fn leak(self) {
        mem::forget(self);
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, and the owner
        // guarantees (by leaking instead) that no one uses the range after.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Makes the next `close` of `fd` reset the connection and drop unsent data,
/// which also frees at once any zero-copy buffers the socket still holds.
pub(crate) fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `linger` is a valid, live `struct linger` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Shuts both directions of a socket down: the peer sees the end of the
/// stream at once, and our pending receive ends, without waiting for the
/// descriptor to be closed.
pub(crate) fn shutdown(fd: RawFd) {
    // SAFETY: shutdown takes no pointers; on a closed or non-socket fd it
    // merely fails, and the failure is of no interest (best effort).
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// [`recv_nowait`] into raw memory, which may be uninitialised.
///
/// # Safety
/// `[ptr, ptr + len)` must be writable for the call.
pub(crate) unsafe fn recv_raw_nowait(fd: RawFd, ptr: *mut u8, len: usize) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `len` bytes at `ptr`, writable per
    // the caller's contract.
    unsafe {
        socket_call(
            libc::SYS_recvfrom,
            [
                fd as usize,
                ptr as usize,
                len,
                libc::MSG_DONTWAIT as usize,
                0,
                0,
            ],
        )
    }
}

/// Receives what a socket holds into `buf` without blocking: `Ok(0)` is the
/// end of the stream, `WouldBlock` means nothing is there.
pub(crate) fn recv_nowait(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which
    // is valid and exclusively borrowed for the call.
    unsafe { recv_raw_nowait(fd, buf.as_mut_ptr(), buf.len()) }
}

/// Receives one datagram into `buf` without blocking: its length, its
/// sender (`None` for an unknown address family) and whether it was cut
/// short because `buf` was too small.
pub(crate) fn recv_from_nowait(
    fd: RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, Option<SocketAddr>, bool)> {
    let mut name = zeroed_sockaddr();
    let mut name_len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf` and at
    // most `name_len` bytes into `name`, both valid and exclusively
    // borrowed for the call.
    let n = unsafe {
        socket_call(
            libc::SYS_recvfrom,
            [
                fd as usize,
                buf.as_mut_ptr() as usize,
                buf.len(),
                (libc::MSG_DONTWAIT | libc::MSG_TRUNC) as usize,
                &mut name as *mut libc::sockaddr_storage as usize,
                &mut name_len as *mut libc::socklen_t as usize,
            ],
        )
    }?;
    // SAFETY: sockaddr_storage is plain bytes; `name_len` is clamped to
    // its size.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&name as *const libc::sockaddr_storage).cast::<u8>(),
            (name_len as usize).min(mem::size_of::<libc::sockaddr_storage>()),
        )
    };
    Ok((n.min(buf.len()), read_sockaddr(bytes), n > buf.len()))
}

/// Sends one datagram of `len` bytes at `ptr` to `to` without blocking.
///
/// # Safety
/// `[ptr, ptr + len)` must be readable for the call.
pub(crate) unsafe fn send_to_nowait(
    fd: RawFd,
    ptr: *const u8,
    len: usize,
    to: &SocketAddr,
) -> io::Result<usize> {
    let mut name = zeroed_sockaddr();
    let name_len = write_sockaddr(to, &mut name);
    // SAFETY: `ptr` is readable per the caller's contract, and `name` holds
    // `name_len` bytes of address.
    unsafe { send_to_raw(fd, ptr, len, &name, name_len) }
}

/// Sends up to `len` bytes at `ptr` on a stream without blocking or raising
/// SIGPIPE; returns how many the socket took.
///
/// # Safety
/// `[ptr, ptr + len)` must be readable for the call.
pub(crate) unsafe fn send_nowait(fd: RawFd, ptr: *const u8, len: usize) -> io::Result<usize> {
    // SAFETY: `ptr` is readable per the caller's contract; a null address
    // of length 0 is what a connected socket takes.
    unsafe { send_to_raw(fd, ptr, len, std::ptr::null(), 0) }
}

/// `sendto(2)` without blocking or raising SIGPIPE: `len` bytes at `ptr`
/// to the address `name` (null, with `name_len` 0, on a connected socket).
///
/// # Safety
/// `[ptr, ptr + len)` must be readable, and `name` null or readable for
/// `name_len` bytes, for the call.
unsafe fn send_to_raw(
    fd: RawFd,
    ptr: *const u8,
    len: usize,
    name: *const libc::sockaddr_storage,
    name_len: u32,
) -> io::Result<usize> {
    // SAFETY: the kernel reads at most `len` bytes at `ptr` and `name_len`
    // bytes at `name`, readable per the caller's contract.
    unsafe {
        socket_call(
            libc::SYS_sendto,
            [
                fd as usize,
                ptr as usize,
                len,
                (libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) as usize,
                name as usize,
                name_len as usize,
            ],
        )
    }
}

/// Makes a socket system call through `syscall(2)` rather than its glibc
/// wrapper. The wrappers are cancellation points: in a process with more
/// than one thread each call switches the thread's cancellation state on
/// and off (two atomic operations), which a busy-polling loop would pay on
/// every empty read. Nothing in this crate uses thread cancellation.
///
/// # Safety
/// `args` must be valid arguments of system call `nr`: every pointer among
/// them live and, for what the kernel writes, exclusively borrowed for the
/// call.
pub(crate) unsafe fn socket_call(nr: libc::c_long, args: [usize; 6]) -> io::Result<usize> {
    // SAFETY: the caller vouches for the arguments; the call blocks on
    // nothing (the sockets here are used with MSG_DONTWAIT).
    let n = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Writes `addr` as a kernel socket address into `out`, returning its length.
pub(crate) fn write_sockaddr(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> u32 {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned
            // for every sockaddr type; the write stays inside `out`.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>() as u32
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, sockaddr_storage holds a sockaddr_in6.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>() as u32
        }
    }
}

/// Reads a socket address that the kernel wrote into a receive buffer (at
/// any alignment); `None` for families other than IPv4 and IPv6 or when
/// `name` is too short.
pub(crate) fn read_sockaddr(name: &[u8]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([*name.first()?, *name.get(1)?]);
    match i32::from(family) {
        libc::AF_INET if name.len() >= mem::size_of::<libc::sockaddr_in>() => {
            let mut sin = MaybeUninit::<libc::sockaddr_in>::uninit();
            // SAFETY: `name` holds at least size_of::<sockaddr_in>() bytes,
            // copied bytewise so alignment does not matter; every bit
            // pattern is a valid sockaddr_in.
            let sin = unsafe {
                std::ptr::copy_nonoverlapping(
                    name.as_ptr(),
                    sin.as_mut_ptr().cast::<u8>(),
                    mem::size_of::<libc::sockaddr_in>(),
                );
                sin.assume_init()
            };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if name.len() >= mem::size_of::<libc::sockaddr_in6>() => {
            let mut sin6 = MaybeUninit::<libc::sockaddr_in6>::uninit();
            // SAFETY: as above, with size_of::<sockaddr_in6>() bytes.
            let sin6 = unsafe {
                std::ptr::copy_nonoverlapping(
                    name.as_ptr(),
                    sin6.as_mut_ptr().cast::<u8>(),
                    mem::size_of::<libc::sockaddr_in6>(),
                );
                sin6.assume_init()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// A zeroed `msghdr`, the starting point the kernel expects.
pub(crate) fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain data for which all-zero is valid (null
    // pointers, zero lengths).
    unsafe { mem::zeroed() }
}

/// A zeroed `sockaddr_storage`.
pub(crate) fn zeroed_sockaddr() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain data; all-zero is AF_UNSPEC.
    unsafe { mem::zeroed() }
}
