//! Segment creation, opening and reaping in one process: races, hostile files.
#![cfg(not(loom))]

mod common;

use common::unique;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use comm_shm::{Ring, RingConfig, Segment, ShmError};

#[test]
fn concurrent_creates_of_one_name_yield_exactly_one_segment() {
    for _ in 0..50 {
        let name = unique("race");
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| Segment::create(&name, 64)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{results:?}");
        assert!(results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(ShmError::AlreadyExists { .. }))));
    }
}

#[test]
fn a_created_segment_is_mode_0600_and_gone_after_drop() {
    let seg = Segment::create(&unique("mode"), 64).unwrap();
    let mode = fs::metadata(seg.path()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let path = seg.path().to_owned();
    drop(seg);
    assert!(!path.exists());
}

#[test]
fn not_ready_segments_are_refused_until_marked_ready() {
    let seg = Segment::create(&unique("ready"), 64).unwrap();
    assert!(matches!(Segment::open(seg.name()), Err(ShmError::NotReady)));
    seg.mark_ready();
    assert!(Segment::open(seg.name()).unwrap().is_ready());
}

#[test]
fn files_others_could_control_are_refused() {
    let seg = Segment::create(&unique("trust"), 64).unwrap();
    seg.mark_ready();
    fs::set_permissions(seg.path(), fs::Permissions::from_mode(0o666)).unwrap();
    assert!(matches!(
        Segment::open(seg.name()),
        Err(ShmError::Untrusted(_))
    ));
    fs::set_permissions(seg.path(), fs::Permissions::from_mode(0o600)).unwrap();
    let link = unique("symlink");
    let link_path = Path::new("/dev/shm").join(&link);
    std::os::unix::fs::symlink(seg.path(), &link_path).unwrap();
    let opened = Segment::open(&link);
    fs::remove_file(&link_path).unwrap();
    assert!(opened.is_err(), "a symlink was followed");
}

#[test]
fn a_fifo_under_a_segment_name_neither_hangs_open_nor_the_reaper() {
    let name = unique("fifo");
    let path = Path::new("/dev/shm").join(&name);
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let opened = Segment::open(&name);
    let reaped = Segment::reap_stale(&name);
    fs::remove_file(&path).unwrap();
    assert!(opened.is_err());
    assert!(reaped.unwrap().is_empty());
}

#[test]
fn rings_may_not_overlap_but_the_same_ring_may_be_opened_again() {
    let cfg = RingConfig::new(4, 64).unwrap();
    let seg = Arc::new(Segment::create(&unique("overlap"), 4 * cfg.region_len()).unwrap());
    let first = Ring::create(&seg, 0, cfg).unwrap();
    assert!(matches!(
        Ring::create(&seg, 0, cfg),
        Err(ShmError::Layout(_))
    ));
    assert!(matches!(
        Ring::create(&seg, 128, cfg),
        Err(ShmError::Layout(_))
    ));
    let again = Ring::open(&seg, 0).unwrap();
    assert_eq!(again.geometry(), first.geometry());
    Ring::create(&seg, cfg.region_len().next_multiple_of(128), cfg).unwrap();
}
