//! With a tiny RLIMIT_MEMLOCK (and without CAP_IPC_LOCK, which root has)
//! registering send buffers fails, `register_region` says so, and
//! zero-copy sends from the region still work.
//!
//! The limit is per process and the capability per thread, so the test
//! runs itself again as a child process that only does this.

mod common;

use std::process::Command;
use std::time::Duration;

use comm_uring::{Event, LenPrefix, Uring, UringConfig};
use common::{check_record, pool, record_head, tcp_pair, HangGuard};

const CHILD: &str = "COMM_URING_MEMLOCK_CHILD";
const NAME: &str = "registration_falls_back_to_unregistered_sends";

#[test]
fn registration_falls_back_to_unregistered_sends() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran nothing:\n{text}");
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;
const CAP_IPC_LOCK: u32 = 14;

/// Drops CAP_IPC_LOCK from this thread, which makes io_uring account
/// registered memory against RLIMIT_MEMLOCK.
fn drop_ipc_lock() {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: a v3 header and the two data words it requires.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    data[0].permitted &= !(1 << CAP_IPC_LOCK);
    // SAFETY: as above.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

fn child() {
    drop_ipc_lock();
    let lim = libc::rlimit {
        rlim_cur: 64 << 10,
        rlim_max: 64 << 10,
    };
    // SAFETY: a valid rlimit struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) }, 0);

    let mut ring = Uring::new(UringConfig::default(), LenPrefix).unwrap();
    let (a, b) = tcp_pair();
    let tx = ring.add_stream(a).unwrap();
    let rx = ring.add_stream(b).unwrap();
    let mut region = pool(4 << 20, 41);
    let reference = region.clone();
    // SAFETY: `region` outlives the ring (dropped after it).
    let registered = unsafe { ring.register_region(region.as_mut_ptr(), region.len()) };
    assert!(!registered, "4 MiB registered under a 64 KiB memlock limit");

    let n = 16u64;
    for seq in 0..n {
        let (off, len) = (seq as usize * 200_000, 150_000);
        // SAFETY: `region` is not modified until the ring is dropped.
        unsafe {
            ring.send_zc(
                tx,
                &record_head(seq, off, len),
                region[off..].as_ptr(),
                len,
                seq,
            )
        }
        .unwrap();
    }
    let (mut got, mut done) = (0, 0);
    let guard = HangGuard::new("unregistered zero-copy");
    while got < n || done < n {
        guard.check();
        ring.flush().unwrap();
        ring.poll(|ev| match ev {
            Event::Record { conn, bytes } => {
                assert_eq!(conn, rx);
                assert_eq!(check_record(bytes, &reference), got);
                got += 1;
            }
            Event::SendDone { .. } => done += 1,
            other => panic!("unexpected {other:?}"),
        });
        ring.park(None, Duration::from_millis(1)).unwrap();
    }
    drop(ring);
    drop(region);
}
