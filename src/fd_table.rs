//! A progress thread's own descriptor table (opt-in:
//! [`EngineBuilder::private_fd_table`](crate::EngineBuilder::private_fd_table)).
//!
//! While every thread of the process shares one table, each socket call
//! takes a reference on its file and drops it again (two atomic operations
//! on the file, 50-80 ns a hop of a TCP ping-pong in the C model,
//! `tools/tcp_floor.c threaded`); a thread alone in its table skips both.
//! The price: a descriptor number of the process's table means nothing, or
//! another file, on such a thread, and the other way round. So:
//! - the sockets a shard is handed are copied into its table
//!   (`pidfd_getfd`), at high numbers where a stray number from the
//!   process's table most likely finds nothing;
//! - whatever may own descriptors of the process's table and would be
//!   dropped on a thread outside it (the originals of those sockets, the
//!   shard's handlers with what they captured, the shard itself once it
//!   stops) is dropped later by a thread of that table ([`drop_deferred`]:
//!   the control threads, `Engine::shutdown`);
//! - which table a thread is in is asked of the kernel (`kcmp`), so that
//!   threads a handler starts, which inherit the private table, count as
//!   outside too.

use std::cell::Cell;
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Descriptors of the process's table let go of outside it (originals of
/// sockets copied into a private table), waiting to be closed.
static RELEASED: Mutex<Vec<OwnedFd>> = Mutex::new(Vec::new());

/// Values that may own descriptors of the process's table, let go of
/// outside it, waiting to be dropped by a thread in it.
static DEFERRED: Mutex<Vec<Box<dyn Send>>> = Mutex::new(Vec::new());

/// Whether a thread of this process has ever left the process's table:
/// until then every thread is in it, and nobody needs to ask the kernel.
static ANY_PRIVATE: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The answer of `in_process_table` for this thread, once asked: a
    /// thread's table changes only when the thread itself unshares it.
    static IN_PROCESS_TABLE: Cell<Option<bool>> = const { Cell::new(None) };
}

/// `kcmp` type comparing descriptor tables.
const KCMP_FILES: libc::c_int = 2;

/// The thread's descriptors start at this number or above (when the
/// descriptor limit allows): the table then grows to 8192 entries, 64 KiB.
const HIGH_FLOOR: u64 = 4096;

/// Whether the calling thread uses the process's descriptor table (the
/// main thread's). Threads a progress thread with a private table starts
/// share that table, not the process's. Once the main thread has exited
/// (`pthread_exit`) the question has no answer and other threads count as
/// outside.
pub(crate) fn in_process_table() -> bool {
    if !ANY_PRIVATE.load(Ordering::Acquire) {
        return true;
    }
    if let Some(known) = IN_PROCESS_TABLE.with(Cell::get) {
        return known;
    }
    // SAFETY: getpid and gettid take nothing and cannot fail.
    if unsafe { libc::getpid() == libc::gettid() } {
        return true;
    }
    match same_table_as_main() {
        Ok(same) => {
            IN_PROCESS_TABLE.with(|c| c.set(Some(same)));
            same
        }
        Err(_) => false,
    }
}

fn same_table_as_main() -> io::Result<bool> {
    // SAFETY: kcmp takes two thread ids, a type and two unused numbers; it
    // reads no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            libc::getpid(),
            libc::gettid(),
            KCMP_FILES,
            0usize,
            0usize,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r == 0)
}

/// Closes `fd`, a descriptor of the process's table, now on a thread of
/// that table, else as soon as one calls [`close_released`] or
/// [`drop_deferred`].
pub(crate) fn release(fd: OwnedFd) {
    if in_process_table() {
        drop(fd);
    } else {
        lock(&RELEASED).push(fd);
    }
}

/// Drops `value` now on a thread of the process's table, else leaves it
/// for [`drop_deferred`].
pub(crate) fn drop_in_process_table<T: Send + 'static>(value: T) {
    if in_process_table() {
        drop(value);
    } else {
        lock(&DEFERRED).push(Box::new(value));
    }
}

/// Closes the descriptors released outside the process's table; a no-op
/// on a thread outside it. Runs no application code.
pub(crate) fn close_released() {
    if in_process_table() {
        let released = std::mem::take(&mut *lock(&RELEASED));
        drop(released);
    }
}

/// Closes what [`close_released`] closes and drops the values deferred by
/// [`drop_in_process_table`] (application code among them: handlers and
/// what they captured; a panic there is caught and logged). A no-op on a
/// thread outside the process's table. The control threads call it, and
/// `Engine::shutdown`.
pub(crate) fn drop_deferred() {
    if !in_process_table() {
        return;
    }
    close_released();
    // Taken out first: dropping may defer more (it drops here at once).
    let deferred = std::mem::take(&mut *lock(&DEFERRED));
    for value in deferred {
        if catch_unwind(AssertUnwindSafe(|| drop(value))).is_err() {
            tracing::error!("dropping a value a progress thread let go of panicked");
        }
    }
}

fn lock<T>(m: &'static Mutex<T>) -> MutexGuard<'static, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A value that may own descriptors of the process's table and may be let
/// go of on a thread outside it (a handler, the engine's own descriptors):
/// it is then dropped by a thread of that table.
#[derive(Debug)]
pub(crate) struct InProcessTable<T: Send + 'static>(Option<T>);

impl<T: Send + 'static> InProcessTable<T> {
    pub(crate) fn new(value: T) -> Self {
        InProcessTable(Some(value))
    }
}

impl<T: Send + 'static> Deref for InProcessTable<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T: Send + 'static> DerefMut for InProcessTable<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("present until dropped")
    }
}

impl<T: Send + 'static> Drop for InProcessTable<T> {
    fn drop(&mut self) {
        if let Some(value) = self.0.take() {
            drop_in_process_table(value);
        }
    }
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
    /// input, output and error (and its pidfd of the process). Fails,
    /// changing nothing, when the kernel lacks `close_range`'s unshare
    /// (5.9), `pidfd_getfd` (5.6) or `kcmp`, when a seccomp filter forbids
    /// them, or when the caller is not in the process's table.
    pub(crate) fn enter() -> io::Result<PrivateFds> {
        if !same_table_as_main()? {
            return Err(io::Error::other(
                "the thread is not in the process's descriptor table",
            ));
        }
        // Made while still in the process's table, so that nothing can
        // fail once the thread has left it.
        let probe = pidfd_open()?;
        let copy = get_fd(&probe, probe.as_raw_fd())?;
        if FileId::of(&copy)? != FileId::of(&probe)? {
            return Err(io::Error::other(
                "the process's main thread has a descriptor table of its own",
            ));
        }
        drop(copy);
        let keep = probe.as_raw_fd();
        // From here on threads ask the kernel which table they are in.
        ANY_PRIVATE.store(true, Ordering::Release);
        if let Err(e) = unshare_keeping(keep) {
            // Still in the process's table: `probe` closes there.
            IN_PROCESS_TABLE.with(|c| c.set(Some(true)));
            return Err(e);
        }
        IN_PROCESS_TABLE.with(|c| c.set(Some(false)));
        // The process's table still holds `keep` too: a thread of that
        // table closes it.
        // SAFETY: this thread's table now holds its own copy of `keep`,
        // owned by `probe`; the value made here stands for the process
        // table's entry, which nothing else owns, and `release` has it
        // closed only by a thread of that table.
        release(unsafe { OwnedFd::from_raw_fd(keep) });
        Ok(PrivateFds {
            process: raise(probe),
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

/// Gives the calling thread a copy of the table holding descriptors 0-2 and
/// `keep` only. Fails changing nothing: the first call does the unsharing;
/// the second works on the thread's own table by then.
fn unshare_keeping(keep: RawFd) -> io::Result<()> {
    let keep = u32::try_from(keep).map_err(|_| io::Error::other("negative descriptor"))?;
    let close = |first: u32, last: u32, flags: libc::c_uint| {
        // SAFETY: close_range takes numbers and flags, no pointers. With
        // CLOSE_RANGE_UNSHARE it gives this thread a copy of the table
        // without the range, leaving the process's table, and what other
        // threads own in it, untouched; without it, it closes entries of
        // the thread's own copy, which nothing on this thread owns yet
        // (the shard is made after this; the thread's reference to the
        // engine's shared state holds descriptors of the process's table,
        // which is why their owners drop through `InProcessTable`).
        let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let unshare = libc::CLOSE_RANGE_UNSHARE;
    match keep {
        0..=2 => close(3, u32::MAX, unshare),
        3 => close(4, u32::MAX, unshare),
        _ => {
            close(3, keep - 1, unshare)?;
            if keep < u32::MAX {
                // Cannot fail for a valid range on the thread's own table;
                // if it did, the thread would keep some needless copies.
                let _ = close(keep + 1, u32::MAX, 0);
            }
            Ok(())
        }
    }
}

/// A second descriptor for `fd`'s file, in the calling thread's table (at a
/// high number when that table is private).
pub(crate) fn duplicate(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let copy = fd.try_clone_to_owned()?;
    Ok(if in_process_table() {
        copy
    } else {
        raise(copy)
    })
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
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let (server, _) = listener.accept().unwrap();
        let raw = server.as_raw_fd();
        let id = FileId::of(&server).unwrap();
        let wrong = FileId::of(&client).unwrap();
        assert!(in_process_table());
        let t = std::thread::spawn(move || {
            let fds = match PrivateFds::enter() {
                Ok(fds) => fds,
                Err(e) => {
                    println!("skipped: no private descriptor tables here: {e}");
                    return false;
                }
            };
            assert!(!in_process_table());
            // A thread it starts shares its table, not the process's.
            assert!(!std::thread::spawn(in_process_table).join().unwrap());
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
            // The original is left for a thread of the process's table.
            release(OwnedFd::from(server));
            drop_deferred();
            true
        });
        if !t.join().unwrap() {
            return;
        }
        assert!(in_process_table());
        drop_deferred();
        let mut got = [0u8; 2];
        std::io::Read::read_exact(&mut &client, &mut got).unwrap();
        assert_eq!(&got, b"hi");
        // Both copies closed (the thread's with it, the original just
        // now): the peer sees the end of the stream, not a timeout.
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut &client, &mut rest).unwrap();
        assert!(rest.is_empty());
    }
}
