//! Progress threads with descriptor tables of their own
//! (`EngineBuilder::private_fd_table`): messages flow over TCP and UDP as
//! usual, the links' sockets live only in the progress threads' tables (the
//! process's table keeps none of them, so closing a link really closes its
//! sockets), they sit at high numbers there, what handlers own is closed
//! in the process's table, nothing is left open after shutdown, and a
//! handler that tries to set up a link (which would make sockets in its
//! private table) gets a clear error.

mod common;

use common::shm_leftovers;

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use comm::{Connection, Engine, Error, TransportKind, Transports};

/// Socket inodes in the descriptor table listed at `dir`, with the
/// descriptor numbers.
fn sockets_in(dir: &str) -> Vec<(i32, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((fd, inode))
        })
        .collect()
}

/// The process's table (the main thread's).
fn process_sockets() -> BTreeSet<u64> {
    sockets_in("/proc/self/fd")
        .into_iter()
        .map(|(_, i)| i)
        .collect()
}

/// Threads of this process named like progress threads (`comm-<shard>`).
fn progress_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            let shard = name.trim().strip_prefix("comm-")?;
            shard
                .parse::<u16>()
                .is_ok()
                .then(|| path.to_str().unwrap().to_owned())
        })
        .collect()
}

/// Descriptors from 3 up in the process's table (0-2 may be sockets of a
/// test runner, shared with the threads' tables).
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&fd| fd >= 3)
        .count()
}

/// Whether this kernel (and seccomp filter) lets a thread have a table of
/// its own the way the engine makes one: `close_range` unshare, `kcmp`,
/// `pidfd_getfd`. Asked on a throw-away thread.
fn private_tables_available() -> bool {
    std::thread::spawn(|| {
        // SAFETY: plain system calls on numbers; the pidfd is closed below
        // and the unshared table goes with this thread.
        unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0);
            if pidfd < 0 {
                return false;
            }
            let copy = libc::syscall(libc::SYS_pidfd_getfd, pidfd, pidfd, 0);
            let kcmp = libc::syscall(libc::SYS_kcmp, libc::getpid(), libc::gettid(), 2, 0, 0);
            if copy >= 0 {
                libc::close(copy as i32);
            }
            libc::close(pidfd as i32);
            copy >= 0
                && kcmp == 0
                && libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_UNSHARE,
                ) == 0
        }
    })
    .join()
    .unwrap()
}

/// Where the engine puts its own descriptors on a private table.
fn high_floor() -> i32 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit for getrlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    (lim.rlim_cur / 2).min(4096) as i32
}

fn engine(name: &str, core: usize, kind: TransportKind) -> Engine {
    Engine::builder(name)
        .cores(&[core])
        .transports(Transports::only([kind]))
        .private_fd_table(true)
        .start()
        .unwrap()
}

fn exchange(kind: TransportKind) {
    let name = format!("privfd-{kind}-{}", std::process::id());
    let before = process_sockets();
    let a = engine(&name, 0, kind);
    let b = engine(&name, 1, kind);
    // The handler owns a descriptor of the process's table: it must be
    // closed there, not by number in the progress thread's table.
    let log = std::fs::File::open("/dev/null").unwrap();
    let echo = b
        .serve("echo", move |ctx, msg| {
            let _ = &log;
            ctx.reply(msg, msg.data())
        })
        .unwrap();
    let ep = a.endpoint("client").unwrap();
    let peer = ep.connect(&echo).unwrap();
    assert_eq!(ep.transport(peer).unwrap(), kind);
    for seq in 0u64..200 {
        let size = if seq % 50 == 49 { 200_000 } else { 64 };
        let mut buf = ep.alloc(size).unwrap();
        buf[..8].copy_from_slice(&seq.to_le_bytes());
        ep.send(peer, buf).unwrap();
        let back = ep.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(back.data().len(), size);
        assert_eq!(back.data()[..8], seq.to_le_bytes(), "reply {seq}");
    }

    // The links' sockets are in the progress threads' tables only.
    let threads = progress_threads();
    assert_eq!(threads.len(), 2, "{threads:?}");
    let shared = process_sockets();
    let floor = high_floor();
    let mut private = BTreeSet::new();
    for t in &threads {
        // 0-2 are copies of the process's (they may be sockets of a runner).
        for (fd, inode) in sockets_in(&format!("{t}/fd"))
            .into_iter()
            .filter(|&(fd, _)| fd >= 3)
        {
            assert!(
                !shared.contains(&inode),
                "socket {inode} of {t} is also in the process's table"
            );
            if floor > 3 {
                assert!(fd >= floor, "descriptor {fd} of {t} below {floor}");
            }
            private.insert(inode);
        }
    }
    // TCP: two lanes per shard pair, on either side; UDP: one socket each.
    let want = if kind == TransportKind::Tcp { 4 } else { 2 };
    assert!(private.len() >= want, "{private:?}");

    drop(ep);
    a.shutdown().unwrap();
    b.shutdown().unwrap();
    // Joined threads leave the task list a moment later.
    for _ in 0..200 {
        if progress_threads().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(progress_threads().is_empty());
    let after = process_sockets();
    assert!(after.is_disjoint(&private), "a link's socket left open");
    assert!(after.is_subset(&before), "sockets left open");
    assert_eq!(shm_leftovers(&name), Vec::<String>::new());
}

/// Tests that start engines run one at a time: one counts descriptors.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This test's turn, or `None` (and why, printed) where the kernel gives
/// no private tables.
fn serial_with_private_tables() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !private_tables_available() {
        println!("skipped: this kernel or seccomp filter gives no private descriptor tables");
        return None;
    }
    Some(SERIAL.lock().unwrap_or_else(|e| e.into_inner()))
}

#[test]
fn private_tables_carry_tcp_and_udp_and_leave_nothing_open() {
    let Some(_one) = serial_with_private_tables() else {
        return;
    };
    let before = open_descriptors();
    exchange(TransportKind::Tcp);
    exchange(TransportKind::Udp);
    // A moment for the kernel to finish closing what the threads held.
    let mut left = open_descriptors();
    for _ in 0..100 {
        if left <= before {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        left = open_descriptors();
    }
    assert_eq!(left, before, "descriptors leaked");
}

#[test]
fn a_handler_on_a_private_table_cannot_set_up_links() {
    let Some(_one) = serial_with_private_tables() else {
        return;
    };
    let name = format!("privfd-connect-{}", std::process::id());
    let a = engine(&name, 0, TransportKind::Tcp);
    // A second engine, of the process's table, whose endpoint the handler
    // of `a` tries to connect from.
    let other = Engine::builder(&name)
        .cores(&[1])
        .transports(Transports::only([TransportKind::Tcp]))
        .start()
        .unwrap();
    let target = other.endpoint("target").unwrap();
    let from = other.endpoint("from").unwrap();
    let to = target.addr();
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let addr = a
        .serve("try", move |_, _| {
            let _ = tx.lock().unwrap().send(from.connect(&to).map(|_| ()));
            Ok(())
        })
        .unwrap();
    let client = a.endpoint("client").unwrap();
    let peer = client.connect(&addr).unwrap();
    client.send(peer, client.alloc(1).unwrap()).unwrap();
    let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(matches!(got, Err(Error::Config(_))), "{got:?}");
    drop((client, target));
    a.shutdown().unwrap();
    other.shutdown().unwrap();
    assert_eq!(shm_leftovers(&name), Vec::<String>::new());
}

/// A handler that owns another engine and one of its endpoints lets go of
/// them on its progress thread: the other engine's descriptors (its
/// control eventfd) are closed in the process's table, not by number in
/// the private one, and nothing leaks.
#[test]
fn what_a_handler_owns_is_closed_in_the_process_table() {
    let Some(_one) = serial_with_private_tables() else {
        return;
    };
    let before = open_descriptors();
    let name = format!("privfd-owned-{}", std::process::id());
    let a = engine(&name, 0, TransportKind::Tcp);
    let other = Engine::builder(&format!("{name}-other"))
        .cores(&[1])
        .start()
        .unwrap();
    let other_ep = other.endpoint("held").unwrap();
    let owned = std::sync::Mutex::new(Some((other, other_ep)));
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let addr = a
        .serve("drop", move |_, _| {
            if let Some((engine, ep)) = owned.lock().unwrap().take() {
                drop(ep);
                let _ = tx.lock().unwrap().send(engine.shutdown());
            }
            Ok(())
        })
        .unwrap();
    let client = a.endpoint("client").unwrap();
    let peer = client.connect(&addr).unwrap();
    client.send(peer, client.alloc(1).unwrap()).unwrap();
    let stopped = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(stopped.is_ok(), "{stopped:?}");
    drop(client);
    a.shutdown().unwrap();
    assert_eq!(
        open_descriptors(),
        before,
        "descriptors leaked or closed twice"
    );
    assert_eq!(shm_leftovers(&name), Vec::<String>::new());
}

struct Nowhere;

impl comm::Transport for Nowhere {
    fn name(&self) -> &'static str {
        "nowhere"
    }
    fn listen(&self) -> io::Result<String> {
        Ok(String::new())
    }
    fn connect(&self, _: &str) -> io::Result<Box<dyn Connection>> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn accept(&self) -> io::Result<Option<Box<dyn Connection>>> {
        Ok(None)
    }
}

#[test]
fn custom_transports_are_refused_with_a_private_table() {
    let started = Engine::builder("privfd-custom")
        .cores(&[0])
        .transport(Arc::new(Nowhere))
        .private_fd_table(true)
        .start();
    assert!(matches!(started, Err(Error::Config(_))), "{started:?}");
}
