//! Arbitrary bytes in a segment header, a ring geometry or a slot never cause a
//! panic or an out-of-bounds read: they decode or are refused with an error.
// These use real segments, which the loom build does not provide.
#![cfg(not(loom))]

mod common;

use common::unique;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;

use comm_shm::ring::decode_slot_body;
use comm_shm::segment::{MAGIC, PAYLOAD_OFFSET, READY};
use comm_shm::{Ring, RingConfig, RingGeometry, Segment, SegmentHeader};
use proptest::prelude::*;

/// A header that passes the identity checks, so mutations reach the deeper ones.
fn plausible_header() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        0usize..64,
        any::<u8>(),
    )
        .prop_map(|(total, ready, pid, make_ready, flip_at, flip)| {
            let mut h: SegmentHeader = bytemuck::Zeroable::zeroed();
            h.magic = MAGIC;
            h.version = comm_shm::segment::LAYOUT_VERSION;
            h.header_len = 64;
            h.total_len = total % 1_000_000;
            h.ready = if make_ready { READY } else { ready };
            h.owner_pid = pid;
            let mut bytes = bytemuck::bytes_of(&h).to_vec();
            bytes[flip_at] ^= flip;
            bytes
        })
}

proptest! {
    #[test]
    fn segment_header_decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), len in any::<u64>()) {
        let _ = SegmentHeader::decode(&bytes, len);
        let _ = SegmentHeader::decode_identity(&bytes);
    }

    #[test]
    fn plausible_headers_decode_only_when_consistent(bytes in plausible_header(), len in 0u64..1_000_000) {
        if let Ok(h) = SegmentHeader::decode(&bytes, len) {
            prop_assert_eq!(h.total_len, len);
            prop_assert_eq!(h.ready, READY);
        }
    }

    #[test]
    fn ring_geometry_decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64), avail in any::<usize>()) {
        if let Ok(g) = RingGeometry::decode(&bytes, avail) {
            prop_assert!(g.region_len() <= avail);
            prop_assert!(g.capacity.is_power_of_two());
        }
    }

    #[test]
    fn slot_decoding_never_reads_past_the_body(body in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(payload) = decode_slot_body(&body) {
            prop_assert!(payload.len() + 8 <= body.len());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn opening_a_file_of_arbitrary_bytes_is_refused_cleanly(
        header in prop_oneof![prop::collection::vec(any::<u8>(), 0..300), plausible_header()],
        tail in 0usize..5000,
    ) {
        let name = unique("garbage");
        let path = std::path::Path::new("/dev/shm").join(&name);
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
        f.write_all(&header).unwrap();
        f.write_all(&vec![0u8; tail]).unwrap();
        drop(f);
        let opened = Segment::open(&name);
        fs::remove_file(&path).unwrap();
        if let Ok(seg) = opened {
            prop_assert_eq!(seg.header().ready, READY);
            prop_assert!(seg.payload_len() + PAYLOAD_OFFSET == (header.len() + tail));
        }
    }

    #[test]
    fn a_ring_over_arbitrary_bytes_is_refused_or_pops_within_bounds(
        geometry in prop_oneof![
            prop::collection::vec(any::<u8>(), 24),
            (1u32..6, 6u32..9).prop_map(|(c, s)| bytemuck::bytes_of(&RingConfig::new(1 << c, 1 << s).unwrap().geometry()).to_vec()),
        ],
        fill in prop::collection::vec(any::<u8>(), 1..512),
    ) {
        let seg = Arc::new(Segment::create(&unique("ring-garbage"), 64 * 1024).unwrap());
        // SAFETY: the segment is ours and large enough; nobody else maps it.
        unsafe {
            let p = seg.payload_ptr().as_ptr();
            for i in 0..seg.payload_len() {
                p.add(i).write(fill[i % fill.len()]);
            }
            p.copy_from_nonoverlapping(geometry.as_ptr(), geometry.len());
            // Leave the control block's claim words free so the roles can attach.
            p.add(128).write_bytes(0, 384);
        }
        seg.mark_ready();
        if let Ok(ring) = Ring::open(&seg, 0) {
            let mut rx = ring.consumer().unwrap();
            for _ in 0..(2 * ring.geometry().capacity) {
                let max = ring.geometry().max_payload();
                match rx.pop_with(|b| b.len()) {
                    Ok(len) => prop_assert!(len <= max),
                    Err(_) => break,
                }
            }
        }
    }
}
