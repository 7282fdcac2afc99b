//! Frame headers: arbitrary bytes never panic the decoder or make it read past
//! the input, and every valid header round-trips.

use comm::{FrameFlags, FrameHeader, FrameKind, ProtocolError, HEADER_LEN};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = FrameKind> {
    (1u8..=8).prop_map(|v| FrameKind::from_u8(v).unwrap())
}

proptest! {
    #[test]
    fn arbitrary_bytes_decode_or_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..128), max in any::<u32>()) {
        if let Ok((h, payload)) = FrameHeader::decode_frame(&bytes, max) {
            prop_assert!(h.len() <= max);
            prop_assert_eq!(payload.len(), h.inline_len());
            prop_assert!(HEADER_LEN + payload.len() <= bytes.len());
        }
        let _ = FrameHeader::decode(&bytes, max);
    }

    #[test]
    fn valid_headers_round_trip(k in kind(), src in any::<u32>(), dst in any::<u32>(), seq in any::<u64>(),
                                len in 0u32..4096, aux in any::<u64>(), more in any::<bool>()) {
        let len = if matches!(k, FrameKind::Ack | FrameKind::Credit | FrameKind::Close | FrameKind::Heartbeat | FrameKind::Lane) { 0 } else { len };
        let flags = if more { FrameFlags::MORE } else { FrameFlags::EMPTY };
        let h = FrameHeader::new(k, src, dst, seq, len).with_aux(aux).with_flags(flags);
        let mut wire = h.as_bytes().to_vec();
        wire.resize(HEADER_LEN + h.inline_len(), 0xab);
        let (got, payload) = FrameHeader::decode_frame(&wire, 4096).unwrap();
        prop_assert_eq!(got, h);
        prop_assert_eq!(payload.len(), h.inline_len());
    }

    #[test]
    fn a_truncated_frame_is_short(len in 1u32..4096, cut in 0usize..4096) {
        let h = FrameHeader::new(FrameKind::Data, 1, 2, 3, len);
        let mut wire = h.as_bytes().to_vec();
        wire.resize(HEADER_LEN + len as usize, 0);
        wire.truncate(cut.min(wire.len() - 1));
        let is_short = matches!(FrameHeader::decode_frame(&wire, 4096), Err(ProtocolError::Short { .. }));
        prop_assert!(is_short);
    }
}

#[test]
fn unknown_kind_flags_and_version_are_refused() {
    let mut wire = *FrameHeader::new(FrameKind::Data, 0, 0, 0, 0).as_bytes();
    wire[5] = 99;
    assert_eq!(
        FrameHeader::decode(&wire, 64),
        Err(ProtocolError::UnknownKind(99))
    );
    wire[5] = 1;
    wire[6] = 0x80;
    assert_eq!(
        FrameHeader::decode(&wire, 64),
        Err(ProtocolError::UnknownFlags(0x80))
    );
    wire[6] = 0;
    wire[4] = 9;
    assert!(matches!(
        FrameHeader::decode(&wire, 64),
        Err(ProtocolError::Version { found: 9, .. })
    ));
    let ack = FrameHeader::new(FrameKind::Ack, 0, 0, 0, 5);
    assert!(matches!(
        FrameHeader::decode(ack.as_bytes(), 64),
        Err(ProtocolError::UnexpectedPayload { .. })
    ));
}
