//! The stream reassembler against arbitrary chunkings and hostile headers,
//! without sockets.

use comm_uring::{Framing, FramingError, LenPrefix, Reassembler};
use proptest::prelude::*;

/// Feeds `stream` cut at `cuts` (chunk lengths, cycled) and collects records.
fn reassemble<F: Framing>(
    framing: &F,
    max: usize,
    stream: &[u8],
    cuts: &[usize],
) -> (Vec<Vec<u8>>, Result<(), FramingError>) {
    let mut r = Reassembler::new();
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = cuts[i % cuts.len()].clamp(1, rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if let Err(e) = r.feed(framing, max, chunk, |rec| out.push(rec.to_vec())) {
            assert_eq!(r.pending(), 0, "an error leaves the reassembler empty");
            return (out, Err(e));
        }
    }
    (out, Ok(()))
}

/// A 3-byte header: magic 0x7e, then a u16 body length.
struct Tagged;

impl Framing for Tagged {
    fn header_len(&self) -> usize {
        3
    }

    fn record_len(&self, h: &[u8]) -> Result<usize, FramingError> {
        if h[0] != 0x7e {
            return Err(FramingError::BadHeader("magic"));
        }
        Ok(3 + usize::from(u16::from_le_bytes([h[1], h[2]])))
    }
}

/// Claims absurd lengths: shorter than its header, or huge.
struct Liar(usize);

impl Framing for Liar {
    fn header_len(&self) -> usize {
        2
    }

    fn record_len(&self, _: &[u8]) -> Result<usize, FramingError> {
        Ok(self.0)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_chunking_gives_back_the_same_records(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..40),
        cuts in prop::collection::vec(1usize..400, 1..20),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for b in &bodies {
            let mut rec = LenPrefix::header(b.len()).to_vec();
            rec.extend_from_slice(b);
            stream.extend_from_slice(&rec);
            expected.push(rec);
        }
        let (got, res) = reassemble(&LenPrefix, 1 << 20, &stream, &cuts);
        prop_assert!(res.is_ok());
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn a_custom_framing_round_trips_too(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..100), 0..30),
        cuts in prop::collection::vec(1usize..50, 1..10),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for b in &bodies {
            let mut rec = vec![0x7e];
            rec.extend_from_slice(&(b.len() as u16).to_le_bytes());
            rec.extend_from_slice(b);
            stream.extend_from_slice(&rec);
            expected.push(rec);
        }
        let (got, res) = reassemble(&Tagged, 1 << 20, &stream, &cuts);
        prop_assert!(res.is_ok());
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn garbage_never_panics_and_only_yields_well_formed_records(
        stream in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(1usize..64, 1..10),
        max in 0usize..600,
    ) {
        let (got, res) = reassemble(&LenPrefix, max, &stream, &cuts);
        for rec in &got {
            let len = LenPrefix.record_len(rec).unwrap();
            prop_assert_eq!(len, rec.len());
            prop_assert!(len >= 4 && len <= max);
        }
        if let Err(e) = res {
            let bad = matches!(e, FramingError::TooLong { .. } | FramingError::TooShort { .. });
            prop_assert!(bad);
        }
        let (_, res) = reassemble(&Tagged, max, &stream, &cuts);
        if let Err(e) = res {
            let bad = matches!(e, FramingError::BadHeader(_) | FramingError::TooLong { .. });
            prop_assert!(bad);
        }
    }

    #[test]
    fn lying_lengths_are_errors(claim in prop::sample::select(vec![0usize, 1, usize::MAX, 1 << 40]),
                                stream in prop::collection::vec(any::<u8>(), 2..50)) {
        let (got, res) = reassemble(&Liar(claim), 1 << 20, &stream, &[7]);
        prop_assert!(got.is_empty());
        prop_assert!(res.is_err());
    }
}

#[test]
fn records_inside_one_chunk_are_lent_in_place() {
    let mut chunk = LenPrefix::header(3).to_vec();
    chunk.extend_from_slice(b"abc");
    let mut r = Reassembler::new();
    let mut seen = None;
    r.feed(&LenPrefix, 64, &chunk, |rec| seen = Some(rec.as_ptr()))
        .unwrap();
    assert_eq!(seen, Some(chunk.as_ptr()));
}

#[test]
fn an_empty_header_is_refused() {
    struct Empty;
    impl Framing for Empty {
        fn header_len(&self) -> usize {
            0
        }
        fn record_len(&self, _: &[u8]) -> Result<usize, FramingError> {
            Ok(0)
        }
    }
    let mut r = Reassembler::new();
    assert!(r.feed(&Empty, 64, b"x", |_| {}).is_err());
}
