//! The ring's control block: geometry, then the producer's, the consumer's and
//! the doorbell's cache lines. `#[repr(C)]`, placed at the start of the ring's
//! region; the slots follow it.

use bytemuck::{Pod, Zeroable};
use crossbeam_utils::CachePadded;

use super::slot::SLOT_OVERHEAD;
use crate::sync::{AtomicU32, AtomicU64};
use crate::{Doorbell, ShmError};

const RING_MAGIC: u32 = u32::from_le_bytes(*b"RING");
const RING_VERSION: u32 = 1;
const MIN_SLOT: u32 = 64;
const MAX_SLOT: u32 = 1 << 16;
const MAX_CAPACITY: u32 = 1 << 24;

/// Bytes of the control block that precedes the slots.
#[cfg(not(loom))]
pub(crate) const CONTROL_LEN: usize = std::mem::size_of::<RingControl>();
// Under loom the control block lives on the heap, but region sizes are still
// computed for the configuration API.
#[cfg(loom)]
pub(crate) const CONTROL_LEN: usize = 512;

#[cfg(not(loom))]
const _: () = {
    assert!(CONTROL_LEN % 64 == 0);
    assert!(std::mem::offset_of!(RingControl, geometry) == 0);
};

/// Shape of a ring as recorded in shared memory: `#[repr(C)]`, 24 bytes at
/// offset 0 of the ring's region, written once by the creator.
///
/// ```
/// use comm_shm::{RingConfig, RingGeometry};
/// let g = RingConfig::new(256, 128)?.geometry();
/// let bytes = bytemuck::bytes_of(&g);
/// assert_eq!(RingGeometry::decode(bytes, 1 << 20)?, g);
/// // Garbage is rejected, never trusted.
/// assert!(RingGeometry::decode(&[0xff; 24], 1 << 20).is_err());
/// # Ok::<(), comm_shm::ShmError>(())
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RingGeometry {
    /// `"RING"` in little-endian.
    pub magic: u32,
    /// Layout version of the ring.
    pub version: u32,
    /// Number of slots, a power of two.
    pub capacity: u32,
    /// Bytes per slot, a power of two from 64 to 65536.
    pub slot_size: u32,
    /// Bytes of the control block in the writer's build.
    pub control_len: u32,
    /// Zero.
    pub reserved: u32,
}

impl RingGeometry {
    pub(crate) fn new(capacity: u32, slot_size: u32) -> Result<Self, ShmError> {
        let g = RingGeometry {
            magic: RING_MAGIC,
            version: RING_VERSION,
            capacity,
            slot_size,
            control_len: CONTROL_LEN as u32,
            reserved: 0,
        };
        g.check()?;
        Ok(g)
    }

    /// Decodes a geometry read from shared memory and checks that a ring of that
    /// shape fits in the `available` bytes of its region.
    ///
    /// ```
    /// use comm_shm::{RingConfig, RingGeometry, ShmError};
    /// let g = RingConfig::new(1024, 64)?.geometry();
    /// let err = RingGeometry::decode(bytemuck::bytes_of(&g), 4096).unwrap_err();
    /// assert!(matches!(err, ShmError::OutOfBounds { .. }));
    /// # Ok::<(), ShmError>(())
    /// ```
    pub fn decode(bytes: &[u8], available: usize) -> Result<RingGeometry, ShmError> {
        let raw = bytes
            .get(..std::mem::size_of::<RingGeometry>())
            .ok_or(ShmError::Truncated {
                expected: std::mem::size_of::<RingGeometry>() as u64,
                actual: bytes.len() as u64,
            })?;
        let g: RingGeometry = bytemuck::pod_read_unaligned(raw);
        if g.magic != RING_MAGIC {
            return Err(ShmError::BadMagic);
        }
        if g.version != RING_VERSION {
            return Err(ShmError::VersionMismatch {
                found: g.version,
                expected: RING_VERSION,
            });
        }
        if g.control_len as usize != CONTROL_LEN {
            return Err(ShmError::Layout(
                "ring control block differs from this build",
            ));
        }
        g.check()?;
        // Fits in usize: 64-bit targets only (see lib.rs), and the shape is bounded.
        let need = g.region_len();
        if need > available {
            return Err(ShmError::OutOfBounds {
                offset: 0,
                len: need,
                available,
            });
        }
        Ok(g)
    }

    fn check(&self) -> Result<(), ShmError> {
        if !self.capacity.is_power_of_two() || self.capacity < 2 || self.capacity > MAX_CAPACITY {
            return Err(ShmError::Layout(
                "capacity must be a power of two from 2 to 2^24",
            ));
        }
        if !self.slot_size.is_power_of_two()
            || self.slot_size < MIN_SLOT
            || self.slot_size > MAX_SLOT
        {
            return Err(ShmError::Layout(
                "slot size must be a power of two from 64 to 65536",
            ));
        }
        Ok(())
    }

    /// Bytes the ring occupies: control block plus slots.
    ///
    /// ```
    /// let g = comm_shm::RingConfig::new(8, 64)?.geometry();
    /// assert!(g.region_len() >= 8 * 64);
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn region_len(&self) -> usize {
        // Cannot overflow: capacity <= 2^24 and slot size <= 2^16.
        CONTROL_LEN + self.capacity as usize * self.slot_size as usize
    }

    /// Largest payload one slot carries.
    ///
    /// ```
    /// let g = comm_shm::RingConfig::new(8, 64)?.geometry();
    /// assert_eq!(g.max_payload(), 48);
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn max_payload(&self) -> usize {
        self.slot_size as usize - SLOT_OVERHEAD
    }
}

/// Written by the producer only.
#[repr(C)]
pub(crate) struct ProducerLine {
    /// Position of the next slot to fill; read only on attach and for `len`.
    pub(crate) tail: AtomicU64,
    /// 1 while a `Producer` is attached.
    pub(crate) claimed: AtomicU32,
}

/// Written by the consumer only.
#[repr(C)]
pub(crate) struct ConsumerLine {
    /// Position of the next slot to read; every slot before it may be reused.
    pub(crate) head: AtomicU64,
    /// 1 while a `Consumer` is attached.
    pub(crate) claimed: AtomicU32,
}

#[repr(C)]
pub(crate) struct RingControl {
    pub(crate) geometry: RingGeometry,
    pub(crate) producer: CachePadded<ProducerLine>,
    pub(crate) consumer: CachePadded<ConsumerLine>,
    /// On its own line: rarely written, so it stays shared in both caches and
    /// the producer's check after each publish costs no cache miss.
    pub(crate) doorbell: CachePadded<Doorbell>,
}

#[cfg(loom)]
impl RingControl {
    pub(crate) fn new(geometry: RingGeometry) -> Self {
        RingControl {
            geometry,
            producer: CachePadded::new(ProducerLine {
                tail: AtomicU64::new(0),
                claimed: AtomicU32::new(0),
            }),
            consumer: CachePadded::new(ConsumerLine {
                head: AtomicU64::new(0),
                claimed: AtomicU32::new(0),
            }),
            doorbell: CachePadded::new(Doorbell::new()),
        }
    }
}
