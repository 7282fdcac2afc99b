//! The 24-byte header in front of every datagram.
//!
//! `#[repr(C)]` and `Pod`, so encoding is a copy and decoding a
//! `pod_read_unaligned` (no `unsafe`, no alignment demands on the receive
//! buffer). Fields are little-endian on the wire and ordered so that each
//! sits at its natural alignment: the struct has no padding bytes, which
//! `Pod` requires and the asserts below pin down.

use std::mem::{offset_of, size_of};

use bytemuck::{Pod, Zeroable};

use super::error::DatagramError;
use super::seq::Seq;

/// Wire version written into and required of every datagram. 2: data may
/// carry the tail-loss probe flag.
pub(crate) const VERSION: u8 = 2;

/// Bytes of the header in front of every datagram: one datagram carries at
/// most `mtu - HEADER_LEN` payload bytes.
///
/// ```
/// use comm::reliable::{ReliableConfig, HEADER_LEN};
/// assert_eq!(HEADER_LEN, 24);
/// let payload_per_datagram = ReliableConfig::default().mtu - HEADER_LEN;
/// assert_eq!(payload_per_datagram, 1448);
/// ```
pub const HEADER_LEN: usize = size_of::<Header>();

const _: () = assert!(HEADER_LEN == 24);
const _: () = assert!(offset_of!(Header, len) == 4);
const _: () = assert!(offset_of!(Header, wnd) == 6);
const _: () = assert!(offset_of!(Header, seq) == 8);
const _: () = assert!(offset_of!(Header, ack) == 12);
const _: () = assert!(offset_of!(Header, sack) == 16);

/// A datagram carrying one message fragment (and an acknowledgement).
pub(crate) const KIND_DATA: u8 = 1;
/// A datagram carrying only an acknowledgement.
pub(crate) const KIND_ACK: u8 = 2;

/// Data: this fragment starts a message.
pub(crate) const FIRST: u8 = 1 << 0;
/// Data: this fragment ends a message.
pub(crate) const LAST: u8 = 1 << 1;
/// Ack: the sender's window is closed; data: a tail-loss probe. Either way,
/// answer with an ack at once.
pub(crate) const PROBE: u8 = 1 << 2;

#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Debug, Pod, Zeroable)]
pub(crate) struct Header {
    version: u8,
    kind: u8,
    flags: u8,
    reserved: u8,
    /// Payload bytes after the header.
    len: u16,
    /// Receive window: the peer may send sequence numbers below `ack + wnd`.
    wnd: u16,
    /// Data: this fragment's sequence number. Ack: zero.
    seq: u32,
    /// Cumulative ack: every sequence number before it has arrived.
    ack: u32,
    /// Bit i set: `ack + 1 + i` has arrived too.
    sack: u64,
}

/// The acknowledgement every datagram carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct AckInfo {
    pub(crate) cum: Seq,
    pub(crate) sack: u64,
    pub(crate) wnd: u16,
}

/// What a valid datagram carries besides its acknowledgement.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Body<'a> {
    Data {
        seq: Seq,
        flags: u8,
        payload: &'a [u8],
    },
    Ack {
        probe: bool,
    },
}

/// A decoded, validated datagram.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Datagram<'a> {
    pub(crate) ack: AckInfo,
    pub(crate) body: Body<'a>,
}

impl Header {
    /// A data header for a `len`-byte fragment.
    pub(crate) fn data(seq: Seq, flags: u8, len: u16, ack: AckInfo) -> Header {
        Header::build(KIND_DATA, flags, len, seq.get(), ack)
    }

    /// An ack-only header.
    pub(crate) fn ack_only(probe: bool, ack: AckInfo) -> Header {
        Header::build(KIND_ACK, if probe { PROBE } else { 0 }, 0, 0, ack)
    }

    fn build(kind: u8, flags: u8, len: u16, seq: u32, ack: AckInfo) -> Header {
        Header {
            version: VERSION,
            kind,
            flags,
            reserved: 0,
            len: len.to_le(),
            wnd: ack.wnd.to_le(),
            seq: seq.to_le(),
            ack: ack.cum.get().to_le(),
            sack: ack.sack.to_le(),
        }
    }

    /// Writes the header to the start of `out`, which the caller has checked
    /// holds at least `HEADER_LEN` bytes.
    pub(crate) fn write(&self, out: &mut [u8]) {
        out[..HEADER_LEN].copy_from_slice(bytemuck::bytes_of(self));
    }
}

/// Decodes and validates a whole datagram whose payload may be at most
/// `max_payload` bytes. Everything a peer controls is checked here, so the
/// state machine behind it only sees well-formed datagrams.
pub(crate) fn decode(bytes: &[u8], max_payload: usize) -> Result<Datagram<'_>, DatagramError> {
    let raw = bytes
        .get(..HEADER_LEN)
        .ok_or(DatagramError::Short { have: bytes.len() })?;
    let h: Header = bytemuck::pod_read_unaligned(raw);
    if h.version != VERSION {
        return Err(DatagramError::Version(h.version));
    }
    let allowed = match h.kind {
        KIND_DATA => FIRST | LAST | PROBE,
        KIND_ACK => PROBE,
        other => return Err(DatagramError::UnknownKind(other)),
    };
    if h.flags & !allowed != 0 {
        return Err(DatagramError::UnknownFlags {
            kind: h.kind,
            flags: h.flags,
        });
    }
    if h.reserved != 0 {
        return Err(DatagramError::Reserved(h.reserved));
    }
    let len = usize::from(u16::from_le(h.len));
    let payload = &bytes[HEADER_LEN..];
    if len != payload.len() {
        return Err(DatagramError::LengthMismatch {
            announced: len,
            actual: payload.len(),
        });
    }
    let max = if h.kind == KIND_DATA { max_payload } else { 0 };
    if len > max {
        return Err(DatagramError::PayloadTooLong { len, max });
    }
    let ack = AckInfo {
        cum: Seq::new(u32::from_le(h.ack)),
        sack: u64::from_le(h.sack),
        wnd: u16::from_le(h.wnd),
    };
    let body = if h.kind == KIND_DATA {
        Body::Data {
            seq: Seq::new(u32::from_le(h.seq)),
            flags: h.flags,
            payload,
        }
    } else {
        Body::Ack {
            probe: h.flags & PROBE != 0,
        }
    };
    Ok(Datagram { ack, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack() -> AckInfo {
        AckInfo {
            cum: Seq::new(0xdead_beef),
            sack: 0x8000_0000_0000_0001,
            wnd: 513,
        }
    }

    fn encode(h: Header, payload: &[u8]) -> Vec<u8> {
        let mut wire = vec![0; HEADER_LEN + payload.len()];
        h.write(&mut wire);
        wire[HEADER_LEN..].copy_from_slice(payload);
        wire
    }

    #[test]
    fn data_round_trips() {
        let wire = encode(Header::data(Seq::new(7), FIRST | LAST, 3, ack()), b"abc");
        let d = decode(&wire, 100).unwrap();
        assert_eq!(d.ack, ack());
        assert_eq!(
            d.body,
            Body::Data {
                seq: Seq::new(7),
                flags: FIRST | LAST,
                payload: b"abc"
            }
        );
    }

    #[test]
    fn ack_round_trips() {
        for probe in [false, true] {
            let wire = encode(Header::ack_only(probe, ack()), &[]);
            assert_eq!(wire.len(), HEADER_LEN);
            let d = decode(&wire, 100).unwrap();
            assert_eq!((d.ack, d.body), (ack(), Body::Ack { probe }));
        }
    }

    #[test]
    fn fields_are_little_endian_at_fixed_offsets() {
        let wire = encode(Header::data(Seq::new(0x0102_0304), LAST, 0, ack()), &[]);
        assert_eq!(wire[0], VERSION);
        assert_eq!(wire[1], KIND_DATA);
        assert_eq!(wire[2], LAST);
        assert_eq!(&wire[6..8], &513u16.to_le_bytes());
        assert_eq!(&wire[8..12], &[4, 3, 2, 1]);
        assert_eq!(&wire[12..16], &0xdead_beefu32.to_le_bytes());
        assert_eq!(wire[16], 1);
        assert_eq!(wire[23], 0x80);
    }

    #[test]
    fn malformed_headers_are_refused() {
        let good = encode(Header::data(Seq::new(1), 0, 2, ack()), b"xy");
        let with = |i: usize, v: u8| {
            let mut w = good.clone();
            w[i] = v;
            decode(&w, 100).map(|_| ())
        };
        assert_eq!(with(0, 9), Err(DatagramError::Version(9)));
        assert_eq!(with(1, 3), Err(DatagramError::UnknownKind(3)));
        assert_eq!(
            with(2, 1 << 3),
            Err(DatagramError::UnknownFlags {
                kind: KIND_DATA,
                flags: 1 << 3
            })
        );
        assert_eq!(with(3, 1), Err(DatagramError::Reserved(1)));
        assert_eq!(
            with(4, 3),
            Err(DatagramError::LengthMismatch {
                announced: 3,
                actual: 2
            })
        );
        assert_eq!(
            decode(&good[..10], 100),
            Err(DatagramError::Short { have: 10 })
        );
        assert_eq!(
            decode(&good, 1),
            Err(DatagramError::PayloadTooLong { len: 2, max: 1 })
        );
    }

    #[test]
    fn an_ack_with_payload_is_refused() {
        let mut wire = encode(Header::ack_only(false, ack()), b"z");
        wire[4] = 1;
        assert_eq!(
            decode(&wire, 100),
            Err(DatagramError::PayloadTooLong { len: 1, max: 0 })
        );
        let mut wire = encode(Header::ack_only(false, ack()), &[]);
        wire[2] = FIRST;
        assert!(matches!(
            decode(&wire, 100),
            Err(DatagramError::UnknownFlags { .. })
        ));
    }
}
