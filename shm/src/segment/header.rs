//! The fixed header at the start of every segment.

use bytemuck::{Pod, Zeroable};
use std::mem::{offset_of, size_of};

use crate::ShmError;

/// First bytes of every comm segment.
///
/// ```
/// use comm_shm::{segment::MAGIC, Segment};
/// let seg = Segment::create("comm-doc-magic", 4096)?;
/// assert_eq!(seg.header().magic, MAGIC);
/// # Ok::<(), comm_shm::ShmError>(())
/// ```
pub const MAGIC: [u8; 8] = *b"COMMSHM\0";
/// Version of the segment layout; segments of another version are refused.
///
/// ```
/// use comm_shm::{segment::LAYOUT_VERSION, Segment};
/// let seg = Segment::create("comm-doc-layout-version", 4096)?;
/// assert_eq!(seg.header().version, LAYOUT_VERSION);
/// # Ok::<(), comm_shm::ShmError>(())
/// ```
pub const LAYOUT_VERSION: u32 = 1;
/// Value of [`SegmentHeader::ready`] once the creator has initialised the payload.
///
/// ```
/// use comm_shm::{segment::READY, Segment};
/// let seg = Segment::create("comm-doc-ready-word", 4096)?;
/// assert_ne!(seg.header().ready, READY);
/// seg.mark_ready();
/// assert_eq!(seg.header().ready, READY);
/// # Ok::<(), comm_shm::ShmError>(())
/// ```
pub const READY: u32 = 0x5245_4459;
/// Bytes reserved for the header; the payload starts here, aligned for cache-padded data.
///
/// ```
/// use comm_shm::{segment::PAYLOAD_OFFSET, Segment};
/// // Header and payload share the file: one page holds both.
/// let seg = Segment::create("comm-doc-payload-offset", 4096 - PAYLOAD_OFFSET)?;
/// assert_eq!(seg.payload_len(), 4096 - PAYLOAD_OFFSET);
/// # Ok::<(), comm_shm::ShmError>(())
/// ```
pub const PAYLOAD_OFFSET: usize = 128;

/// The header of a segment, `#[repr(C)]` with an explicit layout (64 bytes).
///
/// The `ready` word is read and written atomically by [`Segment`](crate::Segment);
/// everything else is written once by the creator before it sets `ready`.
///
/// ```
/// use comm_shm::SegmentHeader;
/// // Arbitrary bytes are rejected with an error, never a panic.
/// assert!(SegmentHeader::decode(&[0u8; 10], 10).is_err());
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct SegmentHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub version: u32,
    /// `size_of::<SegmentHeader>()`.
    pub header_len: u32,
    /// Length of the whole file in bytes.
    pub total_len: u64,
    /// [`READY`] once initialised, anything else before.
    pub ready: u32,
    /// Pid of the creating process.
    pub owner_pid: u32,
    /// Start time of the creating process in clock ticks since boot (guards against pid reuse).
    pub owner_start_ticks: u64,
    /// Inode of the creator's pid namespace (0 if unknown): a pid is only
    /// meaningful to processes of the same namespace.
    pub owner_pid_ns: u64,
    /// Zero; room for later versions.
    pub reserved: [u64; 2],
}

const _: () = {
    assert!(size_of::<SegmentHeader>() == 64);
    assert!(offset_of!(SegmentHeader, ready) == 24);
    assert!(offset_of!(SegmentHeader, owner_start_ticks) == 32);
    assert!(PAYLOAD_OFFSET >= size_of::<SegmentHeader>());
};

/// Byte offset of the atomic ready word.
pub(crate) const READY_OFFSET: usize = offset_of!(SegmentHeader, ready);

impl SegmentHeader {
    /// Whether the process that created the segment still runs. A creator in
    /// another pid namespace cannot be checked and counts as alive.
    ///
    /// ```
    /// # use comm_shm::Segment;
    /// let seg = Segment::create("comm-doc-owner-alive", 4096)?;
    /// assert!(seg.header().owner_alive());
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn owner_alive(&self) -> bool {
        self.watch_owner().is_alive()
    }

    /// A watch on the creating process, for checking it often and cheaply.
    ///
    /// ```
    /// # use comm_shm::Segment;
    /// let seg = Segment::create("comm-doc-watch-owner", 4096)?;
    /// assert!(seg.header().watch_owner().is_alive());
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn watch_owner(&self) -> crate::ProcessWatch {
        let ns = crate::liveness::pid_namespace();
        if self.owner_pid_ns != 0 && ns != 0 && self.owner_pid_ns != ns {
            return crate::ProcessWatch::unobservable();
        }
        crate::ProcessWatch::new(self.owner_pid, self.owner_start_ticks)
    }

    pub(crate) fn zeroed_header() -> Self {
        bytemuck::Zeroable::zeroed()
    }

    pub(crate) fn new(
        total_len: u64,
        owner_pid: u32,
        owner_start_ticks: u64,
        owner_pid_ns: u64,
    ) -> Self {
        SegmentHeader {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            header_len: size_of::<SegmentHeader>() as u32,
            total_len,
            ready: 0,
            owner_pid,
            owner_start_ticks,
            owner_pid_ns,
            reserved: [0; 2],
        }
    }

    /// Decodes and checks only what identifies a comm segment (magic, version,
    /// header length). Used by reaping, which must also handle segments whose
    /// creator died before they became ready.
    ///
    /// ```
    /// use comm_shm::{ShmError, SegmentHeader};
    /// assert!(matches!(SegmentHeader::decode_identity(&[0u8; 64]), Err(ShmError::BadMagic)));
    /// ```
    pub fn decode_identity(bytes: &[u8]) -> Result<SegmentHeader, ShmError> {
        let Some(raw) = bytes.get(..size_of::<SegmentHeader>()) else {
            return Err(ShmError::Truncated {
                expected: size_of::<SegmentHeader>() as u64,
                actual: bytes.len() as u64,
            });
        };
        let header: SegmentHeader = bytemuck::pod_read_unaligned(raw);
        if header.magic != MAGIC {
            return Err(ShmError::BadMagic);
        }
        if header.version != LAYOUT_VERSION {
            return Err(ShmError::VersionMismatch {
                found: header.version,
                expected: LAYOUT_VERSION,
            });
        }
        if header.header_len as usize != size_of::<SegmentHeader>() {
            return Err(ShmError::Layout("header length does not match this build"));
        }
        Ok(header)
    }

    /// Decodes a header read from a file of `file_len` bytes and checks that the
    /// segment is complete and ready to use.
    ///
    /// ```
    /// use comm_shm::{ShmError, SegmentHeader};
    /// let err = SegmentHeader::decode(b"COMMSHM\0", 8).unwrap_err();
    /// assert!(matches!(err, ShmError::Truncated { .. }));
    /// ```
    pub fn decode(bytes: &[u8], file_len: u64) -> Result<SegmentHeader, ShmError> {
        let header = Self::decode_identity(bytes)?;
        if header.total_len != file_len {
            return Err(ShmError::Truncated {
                expected: header.total_len,
                actual: file_len,
            });
        }
        if header.total_len < PAYLOAD_OFFSET as u64 {
            return Err(ShmError::Layout("total length is smaller than the header"));
        }
        if header.ready != READY {
            return Err(ShmError::NotReady);
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_header_decodes_once_ready() {
        let mut h = SegmentHeader::new(4096, 7, 9, 0);
        assert!(matches!(
            SegmentHeader::decode(bytemuck::bytes_of(&h), 4096),
            Err(ShmError::NotReady)
        ));
        h.ready = READY;
        assert_eq!(
            SegmentHeader::decode(bytemuck::bytes_of(&h), 4096).unwrap(),
            h
        );
    }

    #[test]
    fn wrong_version_and_length_are_reported() {
        let mut h = SegmentHeader::new(4096, 7, 9, 0);
        h.ready = READY;
        assert!(matches!(
            SegmentHeader::decode(bytemuck::bytes_of(&h), 2048),
            Err(ShmError::Truncated {
                expected: 4096,
                actual: 2048
            })
        ));
        h.version = 99;
        assert!(matches!(
            SegmentHeader::decode(bytemuck::bytes_of(&h), 4096),
            Err(ShmError::VersionMismatch { found: 99, .. })
        ));
    }
}
