//! The fixed header every transport carries in front of every message.
//!
//! All fields are stored little-endian, so the bytes are the same on every
//! node; on little-endian machines the conversions compile to nothing.

use bytemuck::{Pod, Zeroable};

use crate::ProtocolError;

/// Wire version written into and required of every frame.
///
/// ```
/// use comm::{FrameHeader, FrameKind, FRAME_VERSION};
/// let h = FrameHeader::new(FrameKind::Data, 1, 2, 0, 0);
/// // The version is the byte after the 4-byte length.
/// assert_eq!(h.as_bytes()[4], FRAME_VERSION);
/// let mut other = *h.as_bytes();
/// other[4] = FRAME_VERSION + 1;
/// assert!(FrameHeader::decode(&other, 1024).is_err());
/// ```
pub const FRAME_VERSION: u8 = 1;
/// Bytes of a frame header.
///
/// ```
/// use comm::{FrameHeader, FrameKind, HEADER_LEN};
/// let h = FrameHeader::new(FrameKind::Data, 1, 2, 0, 8);
/// assert_eq!(h.as_bytes().len(), HEADER_LEN);
/// ```
pub const HEADER_LEN: usize = std::mem::size_of::<FrameHeader>();

const _: () = assert!(HEADER_LEN == 32);

/// What a frame is for.
///
/// ```
/// use comm::FrameKind;
/// assert_eq!(FrameKind::from_u8(1), Some(FrameKind::Data));
/// assert_eq!(FrameKind::from_u8(200), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A message whose `len` payload bytes follow the header.
    Data = 1,
    /// A message of `len` bytes that stays in the sender's pool at offset
    /// `aux`; the receiver reads it in place and answers with `Release`.
    Descriptor = 2,
    /// Gives the `len`-byte buffer at offset `aux` back to its owner's pool.
    Release = 3,
    /// Acknowledges every sequence number up to `aux`.
    Ack = 4,
    /// Grants `aux` more messages of send credit.
    Credit = 5,
    /// The sender is closing the link in an orderly way.
    Close = 6,
    /// Liveness probe; carries nothing.
    Heartbeat = 7,
    /// Frames of this shard pair continue on TCP lane `aux` of the link;
    /// nothing more comes on the lane that carried this one until a later
    /// `Lane` frame, on another lane, names it again.
    Lane = 8,
}

impl FrameKind {
    /// The kind with wire value `v`, if any.
    ///
    /// ```
    /// assert_eq!(comm::FrameKind::from_u8(6), Some(comm::FrameKind::Close));
    /// ```
    pub const fn from_u8(v: u8) -> Option<FrameKind> {
        Some(match v {
            1 => FrameKind::Data,
            2 => FrameKind::Descriptor,
            3 => FrameKind::Release,
            4 => FrameKind::Ack,
            5 => FrameKind::Credit,
            6 => FrameKind::Close,
            7 => FrameKind::Heartbeat,
            8 => FrameKind::Lane,
            _ => return None,
        })
    }

    /// Whether `len` counts payload bytes that follow the header on the wire.
    ///
    /// ```
    /// assert!(comm::FrameKind::Data.has_inline_payload());
    /// assert!(!comm::FrameKind::Descriptor.has_inline_payload());
    /// ```
    pub const fn has_inline_payload(self) -> bool {
        matches!(self, FrameKind::Data)
    }

    /// Whether `len` must be zero.
    const fn is_control(self) -> bool {
        matches!(
            self,
            FrameKind::Ack
                | FrameKind::Credit
                | FrameKind::Close
                | FrameKind::Heartbeat
                | FrameKind::Lane
        )
    }
}

/// Per-frame flag bits.
///
/// ```
/// use comm::FrameFlags;
/// let f = FrameFlags::MORE | FrameFlags::ACK_REQUESTED;
/// assert!(f.contains(FrameFlags::MORE));
/// assert!(!FrameFlags::EMPTY.contains(FrameFlags::MORE));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FrameFlags(u16);

impl FrameFlags {
    /// No flags.
    ///
    /// ```
    /// use comm::FrameFlags;
    /// assert_eq!(FrameFlags::EMPTY.bits(), 0);
    /// ```
    pub const EMPTY: FrameFlags = FrameFlags(0);
    /// Another fragment of the same message follows.
    ///
    /// ```
    /// use comm::FrameFlags;
    /// assert!(FrameFlags::MORE.contains(FrameFlags::MORE));
    /// ```
    pub const MORE: FrameFlags = FrameFlags(1 << 0);
    /// The sender wants an `Ack` for this frame soon.
    ///
    /// ```
    /// use comm::FrameFlags;
    /// assert!(!FrameFlags::ACK_REQUESTED.contains(FrameFlags::MORE));
    /// ```
    pub const ACK_REQUESTED: FrameFlags = FrameFlags(1 << 1);
    const KNOWN: u16 = Self::MORE.0 | Self::ACK_REQUESTED.0;

    /// The raw bits.
    ///
    /// ```
    /// assert_eq!(comm::FrameFlags::MORE.bits(), 1);
    /// ```
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether every bit of `other` is set.
    ///
    /// ```
    /// assert!(comm::FrameFlags::MORE.contains(comm::FrameFlags::EMPTY));
    /// ```
    pub const fn contains(self, other: FrameFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for FrameFlags {
    type Output = FrameFlags;
    fn bitor(self, rhs: FrameFlags) -> FrameFlags {
        FrameFlags(self.0 | rhs.0)
    }
}

/// The 32-byte header in front of every message: `#[repr(C)]`, `Pod`, fields
/// little-endian. Build one with [`FrameHeader::new`], send
/// [`FrameHeader::as_bytes`], and check received bytes with
/// [`FrameHeader::decode`] or [`FrameHeader::decode_frame`], which refuse
/// anything malformed with a [`ProtocolError`] and never panic.
///
/// ```
/// use comm::{FrameHeader, FrameKind};
/// let h = FrameHeader::new(FrameKind::Data, 10, 20, 7, 3);
/// let mut wire = h.as_bytes().to_vec();
/// wire.extend_from_slice(b"abc");
/// let (got, payload) = FrameHeader::decode_frame(&wire, 1024)?;
/// assert_eq!((got.src(), got.dst(), got.seq(), payload), (10, 20, 7, &b"abc"[..]));
/// # Ok::<(), comm::ProtocolError>(())
/// ```
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct FrameHeader {
    len: u32,
    version: u8,
    kind: u8,
    flags: u16,
    src: u32,
    dst: u32,
    seq: u64,
    aux: u64,
}

impl FrameHeader {
    /// A header for a `kind` frame from endpoint `src` to endpoint `dst`, with
    /// sequence number `seq` and message length `len`.
    ///
    /// ```
    /// let h = comm::FrameHeader::new(comm::FrameKind::Data, 1, 2, 3, 4);
    /// assert_eq!(h.len(), 4);
    /// ```
    pub fn new(kind: FrameKind, src: u32, dst: u32, seq: u64, len: u32) -> Self {
        FrameHeader {
            len: len.to_le(),
            version: FRAME_VERSION,
            kind: kind as u8,
            flags: 0,
            src: src.to_le(),
            dst: dst.to_le(),
            seq: seq.to_le(),
            aux: 0,
        }
    }

    /// The same header with `flags` set.
    ///
    /// ```
    /// use comm::{FrameFlags, FrameHeader, FrameKind};
    /// let h = FrameHeader::new(FrameKind::Data, 1, 2, 3, 4).with_flags(FrameFlags::MORE);
    /// assert!(h.flags().contains(FrameFlags::MORE));
    /// ```
    pub fn with_flags(mut self, flags: FrameFlags) -> Self {
        self.flags = flags.0.to_le();
        self
    }

    /// The same header with the kind-specific word `aux` set (pool offset for
    /// `Descriptor`/`Release`, sequence for `Ack`, credits for `Credit`).
    ///
    /// ```
    /// use comm::{FrameHeader, FrameKind};
    /// let h = FrameHeader::new(FrameKind::Descriptor, 1, 2, 3, 4096).with_aux(65536);
    /// assert_eq!(h.aux(), 65536);
    /// ```
    pub fn with_aux(mut self, aux: u64) -> Self {
        self.aux = aux.to_le();
        self
    }

    /// Message length in bytes.
    ///
    /// ```
    /// assert_eq!(comm::FrameHeader::new(comm::FrameKind::Data, 0, 0, 0, 9).len(), 9);
    /// ```
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u32 {
        u32::from_le(self.len)
    }

    /// Payload bytes that follow the header on the wire (0 unless `Data`).
    ///
    /// ```
    /// use comm::{FrameHeader, FrameKind};
    /// assert_eq!(FrameHeader::new(FrameKind::Descriptor, 0, 0, 0, 9).inline_len(), 0);
    /// ```
    pub fn inline_len(&self) -> usize {
        match self.kind() {
            Some(k) if k.has_inline_payload() => self.len() as usize,
            _ => 0,
        }
    }

    /// The frame kind (`None` only for headers that did not pass `decode`).
    ///
    /// ```
    /// use comm::{FrameHeader, FrameKind};
    /// assert_eq!(FrameHeader::new(FrameKind::Ack, 0, 0, 0, 0).kind(), Some(FrameKind::Ack));
    /// ```
    pub fn kind(&self) -> Option<FrameKind> {
        FrameKind::from_u8(self.kind)
    }

    /// The flags.
    ///
    /// ```
    /// use comm::{FrameFlags, FrameHeader, FrameKind};
    /// assert_eq!(FrameHeader::new(FrameKind::Data, 0, 0, 0, 0).flags(), FrameFlags::EMPTY);
    /// ```
    pub fn flags(&self) -> FrameFlags {
        FrameFlags(u16::from_le(self.flags))
    }

    /// Source endpoint id.
    ///
    /// ```
    /// assert_eq!(comm::FrameHeader::new(comm::FrameKind::Data, 5, 6, 0, 0).src(), 5);
    /// ```
    pub fn src(&self) -> u32 {
        u32::from_le(self.src)
    }

    /// Destination endpoint id.
    ///
    /// ```
    /// assert_eq!(comm::FrameHeader::new(comm::FrameKind::Data, 5, 6, 0, 0).dst(), 6);
    /// ```
    pub fn dst(&self) -> u32 {
        u32::from_le(self.dst)
    }

    /// Sequence number.
    ///
    /// ```
    /// assert_eq!(comm::FrameHeader::new(comm::FrameKind::Data, 0, 0, 77, 0).seq(), 77);
    /// ```
    pub fn seq(&self) -> u64 {
        u64::from_le(self.seq)
    }

    /// The kind-specific word.
    ///
    /// ```
    /// assert_eq!(comm::FrameHeader::new(comm::FrameKind::Ack, 0, 0, 0, 0).aux(), 0);
    /// ```
    pub fn aux(&self) -> u64 {
        u64::from_le(self.aux)
    }

    /// The header's wire bytes.
    ///
    /// ```
    /// let h = comm::FrameHeader::new(comm::FrameKind::Data, 0, 0, 0, 0);
    /// assert_eq!(h.as_bytes().len(), comm::HEADER_LEN);
    /// ```
    pub fn as_bytes(&self) -> &[u8; HEADER_LEN] {
        bytemuck::cast_ref(self)
    }

    /// Decodes and validates a header from the start of `bytes`, allowing
    /// messages of at most `max_len` bytes.
    ///
    /// ```
    /// use comm::{FrameHeader, FrameKind, ProtocolError};
    /// let h = FrameHeader::new(FrameKind::Data, 0, 0, 0, 5000);
    /// assert_eq!(
    ///     FrameHeader::decode(h.as_bytes(), 4096),
    ///     Err(ProtocolError::TooLong { len: 5000, max: 4096 })
    /// );
    /// ```
    pub fn decode(bytes: &[u8], max_len: u32) -> Result<FrameHeader, ProtocolError> {
        let raw = bytes.get(..HEADER_LEN).ok_or(ProtocolError::Short {
            have: bytes.len(),
            need: HEADER_LEN,
        })?;
        let h: FrameHeader = bytemuck::pod_read_unaligned(raw);
        if h.version != FRAME_VERSION {
            return Err(ProtocolError::Version {
                found: h.version,
                expected: FRAME_VERSION,
            });
        }
        let kind = FrameKind::from_u8(h.kind).ok_or(ProtocolError::UnknownKind(h.kind))?;
        let flags = h.flags().bits();
        if flags & !FrameFlags::KNOWN != 0 {
            return Err(ProtocolError::UnknownFlags(flags));
        }
        let len = h.len();
        if kind.is_control() && len != 0 {
            return Err(ProtocolError::UnexpectedPayload { kind, len });
        }
        if len > max_len {
            return Err(ProtocolError::TooLong { len, max: max_len });
        }
        Ok(h)
    }

    /// Decodes a whole frame: the header and, for `Data`, its inline payload,
    /// which must be present in full. Bytes after the frame are ignored.
    ///
    /// ```
    /// use comm::{FrameHeader, FrameKind, ProtocolError};
    /// let h = FrameHeader::new(FrameKind::Data, 0, 0, 0, 10);
    /// // Header announces 10 bytes, only the header is there.
    /// assert!(matches!(FrameHeader::decode_frame(h.as_bytes(), 64), Err(ProtocolError::Short { .. })));
    /// ```
    pub fn decode_frame(bytes: &[u8], max_len: u32) -> Result<(FrameHeader, &[u8]), ProtocolError> {
        let h = Self::decode(bytes, max_len)?;
        let need = HEADER_LEN + h.inline_len();
        let payload = bytes.get(HEADER_LEN..need).ok_or(ProtocolError::Short {
            have: bytes.len(),
            need,
        })?;
        Ok((h, payload))
    }
}

impl std::fmt::Debug for FrameHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameHeader")
            .field("kind", &self.kind())
            .field("len", &self.len())
            .field("flags", &self.flags())
            .field("src", &self.src())
            .field("dst", &self.dst())
            .field("seq", &self.seq())
            .field("aux", &self.aux())
            .finish()
    }
}
