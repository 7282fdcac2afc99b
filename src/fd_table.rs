//! A progress thread's own descriptor table (opt-in:
//! [`EngineBuilder::private_fd_table`](crate::EngineBuilder::private_fd_table)).
//!
//! While every thread of the process shares one table, each socket call
//! takes a reference on its file and drops it again (two atomic operations
//! on the file, about 50-80 ns a hop of a TCP ping-pong on these hosts);
//! a thread alone in its table skips both. The price: descriptors of the
//! process's table are not valid on such a thread, and a number from there
//! may name a different file here. So the sockets a shard is handed are
//! copied into its table (`pidfd_getfd`), the originals are closed only by
//! threads of the process's table ([`release`], [`close_orphans`]), and the
//! thread's own descriptors sit at high numbers, where a stray number from
//! the process's table most likely finds nothing.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// Descriptors of the process's table let go of on a thread with a table
/// of its own: closing them there would close whatever that number names
/// in the private table, so they wait for a thread of the process's table.
static ORPHANS: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

thread_local! {
    static PRIVATE: Cell<bool> = const { Cell::new(false) };
}

/// The thread's descriptors start at this number or above (when the
/// descriptor limit allows), at most: a table that large costs 32 KiB.
const HIGH_FLOOR: u64 = 4096;

/// Whether the calling thread has a descriptor table of its own.
pub(crate) fn is_private() -> bool {
    PRIVATE.with(Cell::get)
}

/// Lets go of a descriptor of the process's table: closed now on a thread
/// that shares that table, else left for [`close_orphans`].
pub(crate) fn release(fd: OwnedFd) {
    if is_private() {
        lock_orphans().push(fd);
    } else {
        drop(fd);
    }
}

/// Closes what threads with tables of their own let go of; a no-op on such
/// a thread.
pub(crate) fn close_orphans() {
    if is_private() {
        return;
    }
    let orphans = std::mem::take(&mut *lock_orphans());
    drop(orphans);
}

fn lock_orphans() -> std::sync::MutexGuard<'static, Vec<OwnedFd>> {
    ORPHANS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which open file a descriptor refers to, whatever its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(crate) fn of(fd: &impl AsFd) -> io::Result<FileId> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `fd` is a live descriptor for the call's duration and
        // `st` is writable memory of the size fstat fills.
        if unsafe { libc::fstat(fd.as_fd().as_raw_fd(), st.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstat succeeded, so it filled `st`.
        let st = unsafe { st.assume_init() };
        Ok(FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

/// The calling thread's private table: how it copies in descriptors of the
/// process's table.
#[derive(Debug)]
pub(crate) struct PrivateFds {
    /// A pidfd of the process (its main thread, whose table is the
    /// process's), in this thread's table.
    process: OwnedFd,
}

impl PrivateFds {
    /// Gives the calling thread a table of its own holding only standard
    /// input, output and error. Fails, changing nothing, when the kernel
    /// lacks `close_range`'s unshare (5.9) or `pidfd_getfd` (5.6), when a
    /// seccomp filter forbids them, or when the process's main thread does
    /// not share the caller's table.
    pub(crate) fn enter() -> io::Result<PrivateFds> {
        // Before leaving, make sure descriptors can be copied in later.
        let probe = pidfd_open()?;
        let copy = get_fd(&probe, probe.as_raw_fd())?;
        if FileId::of(&copy)? != FileId::of(&probe)? {
            return Err(io::Error::other(
                "the process's main thread has a descriptor table of its own",
            ));
        }
        drop((copy, probe));
        // SAFETY: close_range takes no pointers. With CLOSE_RANGE_UNSHARE
        // it gives this thread a copy of the table without descriptors 3
        // and up; the process's table, and what other threads own in it,
        // is untouched. No value on this thread owns a descriptor from 3
        // up: the shard is made after this.
        let r = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_UNSHARE,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        PRIVATE.with(|p| p.set(true));
        Ok(PrivateFds {
            process: raise(pidfd_open()?),
        })
    }

    /// Copies descriptor `raw` of the process's table into this thread's,
    /// checking that it is the file `id` (so a number that names something
    /// else by now is refused, not used).
    pub(crate) fn import(&self, raw: RawFd, id: FileId) -> io::Result<OwnedFd> {
        let fd = raise(get_fd(&self.process, raw)?);
        if FileId::of(&fd)? != id {
            return Err(io::Error::other(
                "the descriptor handed over names another file in the process's table",
            ));
        }
        Ok(fd)
    }
}

/// A second descriptor for `fd`'s file, in the calling thread's table (at a
/// high number when that table is private).
pub(crate) fn duplicate(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let copy = fd.try_clone_to_owned()?;
    Ok(if is_private() { raise(copy) } else { copy })
}

fn pidfd_open() -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    owned(fd)
}

/// Copies descriptor `target` of the process `pidfd` names (its main
/// thread's table) into the caller's table.
fn get_fd(pidfd: &OwnedFd, target: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_getfd takes two descriptors and flags, no pointers;
    // the new descriptor is close-on-exec.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
    owned(fd)
}

fn owned(fd: libc::c_long) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
    // SAFETY: the kernel just returned this new descriptor; nothing else
    // owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Moves a descriptor to a high number (see the module notes); keeps it
/// where it is when the descriptor limit is too low for that.
fn raise(fd: OwnedFd) -> OwnedFd {
    let floor = high_floor();
    if floor <= 3 || fd.as_raw_fd() >= floor {
        return fd;
    }
    // SAFETY: F_DUPFD_CLOEXEC takes a descriptor and a number, no pointers.
    let high = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, floor) };
    owned(libc::c_long::from(high)).unwrap_or(fd)
}

/// Half the soft descriptor limit, at most `HIGH_FLOOR`.
fn high_floor() -> RawFd {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit for getrlimit to fill.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    RawFd::try_from((lim.rlim_cur / 2).min(HIGH_FLOOR)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: F_GETFD on any number only reads the table.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    }

    #[test]
    fn a_private_table_holds_only_stdio_and_copies_in_what_it_is_handed() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let raw = server.as_raw_fd();
        let id = FileId::of(&server).unwrap();
        let wrong = FileId::of(&client).unwrap();
        let t = std::thread::spawn(move || {
            let fds = PrivateFds::enter().expect("a private table");
            assert!(is_private());
            // The process's descriptor is not here...
            assert!(!is_open(raw));
            // ...until copied in, at a high number when the limit allows.
            assert!(fds.import(raw, wrong).is_err());
            let mine = fds.import(raw, id).unwrap();
            if high_floor() > 3 {
                assert!(mine.as_raw_fd() >= high_floor());
            }
            let mut stream = TcpStream::from(mine);
            std::io::Write::write_all(&mut stream, b"hi").unwrap();
            // A descriptor of the process's table let go of here waits
            // for a thread of that table.
            release(OwnedFd::from(server));
            close_orphans();
        });
        t.join().unwrap();
        assert!(!is_private());
        close_orphans();
        let mut got = [0u8; 2];
        std::io::Read::read_exact(&mut &client, &mut got).unwrap();
        assert_eq!(&got, b"hi");
        // Every copy gone: the peer sees the end of the stream.
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut &client, &mut rest).unwrap();
        assert!(rest.is_empty());
    }
}
