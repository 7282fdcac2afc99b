//! Layout of one slot: an 8-byte sequence word, then the body: a little-endian
//! `u32` payload length, 4 reserved bytes, and the payload.
//!
//! The sequence word is `position + 1` once the slot holds the message at
//! `position`; the producer stores it (Release) after writing the body, and the
//! consumer reads the body only after seeing it (Acquire). A slot from an
//! earlier lap carries an older sequence, so a half-written slot is never read.

use super::PopError;

/// Bytes of the sequence word at the start of every slot.
pub(crate) const SEQ_LEN: usize = 8;
/// Bytes of the length field at the start of the body.
const LEN_FIELD: usize = 8;
/// Bytes of every slot that are not payload.
pub(crate) const SLOT_OVERHEAD: usize = SEQ_LEN + LEN_FIELD;

/// Decodes a slot body (the slot's bytes after its sequence word) into its
/// payload, refusing a length that does not fit.
///
/// ```
/// use comm_shm::ring::decode_slot_body;
/// let mut body = [0u8; 56];
/// body[..4].copy_from_slice(&3u32.to_le_bytes());
/// body[8..11].copy_from_slice(b"abc");
/// assert_eq!(decode_slot_body(&body)?, b"abc");
/// body[..4].copy_from_slice(&999u32.to_le_bytes());
/// assert!(decode_slot_body(&body).is_err());
/// # Ok::<(), comm_shm::PopError>(())
/// ```
pub fn decode_slot_body(body: &[u8]) -> Result<&[u8], PopError> {
    let (len_bytes, payload) = match (body.get(..4), body.get(LEN_FIELD..)) {
        (Some(l), Some(p)) => (l, p),
        _ => {
            return Err(PopError::Corrupt {
                len: 0,
                max: body.len().saturating_sub(LEN_FIELD),
            })
        }
    };
    let len = u32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
    payload.get(..len as usize).ok_or(PopError::Corrupt {
        len,
        max: payload.len(),
    })
}

/// The writable payload area of a body.
pub(crate) fn payload_area(body: &mut [u8]) -> &mut [u8] {
    &mut body[LEN_FIELD..]
}

/// Records the payload length in a body.
pub(crate) fn set_len(body: &mut [u8], len: usize) {
    body[..4].copy_from_slice(&(len as u32).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_round_trips_its_payload() {
        let mut body = vec![0u8; 120];
        payload_area(&mut body)[..5].copy_from_slice(b"hello");
        set_len(&mut body, 5);
        assert_eq!(decode_slot_body(&body).unwrap(), b"hello");
    }

    #[test]
    fn a_short_body_is_corrupt_not_a_panic() {
        assert!(decode_slot_body(&[1, 2, 3]).is_err());
        assert!(decode_slot_body(&[]).is_err());
    }
}
