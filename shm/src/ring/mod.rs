//! A single-producer single-consumer ring of fixed-size slots that lives in a
//! shared segment and works between two processes.
//!
//! Design, for latency: the consumer polls the *sequence word inside the next
//! slot*, so a message costs one cache-line transfer (the slot's), not two (an
//! index plus the slot). The producer learns of freed slots from the
//! consumer's `head` only when its cached copy says the ring is full. Head,
//! tail and the doorbell sit on separate cache lines.
//!
//! Parking: each ring has a [`Doorbell`](crate::Doorbell) on its own cache
//! line; the consumer parks on it and every push rings it.
//!
//! ```
//! use std::sync::Arc;
//! use comm_shm::ring::{Ring, RingConfig};
//! use comm_shm::Segment;
//!
//! let cfg = RingConfig::new(64, 64)?;
//! let seg = Arc::new(Segment::create("comm-doc-ring-module", cfg.region_len())?);
//! let ring = Ring::create(&seg, 0, cfg)?;
//! seg.mark_ready();
//! let (mut tx, mut rx) = (ring.producer()?, ring.consumer()?);
//! tx.push(b"hello").expect("room");
//! assert_eq!(rx.pop_with(|m| m.to_vec()).expect("a message"), b"hello");
//! # Ok::<(), comm_shm::ShmError>(())
//! ```

mod consumer;
mod error;
mod layout;
#[cfg(loom)]
#[path = "mem_loom.rs"]
mod mem;
#[cfg(not(loom))]
#[path = "mem_mmap.rs"]
mod mem;
mod producer;
mod slot;

use std::sync::Arc;

pub use consumer::Consumer;
pub use error::{PopError, PushError};
pub use layout::RingGeometry;
pub use producer::Producer;
pub use slot::decode_slot_body;

use crate::sync::Ordering;
use crate::ShmError;
use mem::RingMem;

/// The shape of a ring: how many slots, how large each.
///
/// ```
/// use comm_shm::RingConfig;
/// let cfg = RingConfig::new(1024, 128)?;
/// assert_eq!(cfg.max_payload(), 112);
/// assert!(RingConfig::new(1000, 128).is_err()); // not a power of two
/// # Ok::<(), comm_shm::ShmError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    geometry: RingGeometry,
}

impl RingConfig {
    /// `capacity` slots (power of two, 2 to 2^24) of `slot_size` bytes (power
    /// of two, 64 to 65536); each slot carries up to `slot_size - 16` payload bytes.
    ///
    /// ```
    /// let cfg = comm_shm::RingConfig::new(256, 64)?;
    /// assert_eq!(cfg.capacity(), 256);
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn new(capacity: u32, slot_size: u32) -> Result<Self, ShmError> {
        Ok(RingConfig {
            geometry: RingGeometry::new(capacity, slot_size)?,
        })
    }

    /// Number of slots.
    ///
    /// ```
    /// assert_eq!(comm_shm::RingConfig::new(8, 64)?.capacity(), 8);
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn capacity(&self) -> u32 {
        self.geometry.capacity
    }

    /// Bytes per slot.
    ///
    /// ```
    /// assert_eq!(comm_shm::RingConfig::new(8, 64)?.slot_size(), 64);
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn slot_size(&self) -> u32 {
        self.geometry.slot_size
    }

    /// Largest payload per message.
    ///
    /// ```
    /// assert_eq!(comm_shm::RingConfig::new(8, 256)?.max_payload(), 240);
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn max_payload(&self) -> usize {
        self.geometry.max_payload()
    }

    /// Bytes of segment payload the ring occupies.
    ///
    /// ```
    /// let cfg = comm_shm::RingConfig::new(8, 64)?;
    /// assert!(cfg.region_len() > 8 * 64);
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn region_len(&self) -> usize {
        self.geometry.region_len()
    }

    /// The geometry record written into shared memory.
    ///
    /// ```
    /// let g = comm_shm::RingConfig::new(8, 64)?.geometry();
    /// assert_eq!(g.capacity, 8);
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn geometry(&self) -> RingGeometry {
        self.geometry
    }
}

/// A ring in shared memory; hands out its one [`Producer`] and one [`Consumer`].
///
/// The creating process calls [`Ring::create`] before [`Segment::mark_ready`](crate::Segment::mark_ready);
/// the other process calls [`Ring::open`] at the same offset. Cloning a `Ring`
/// is cheap (it shares the mapping).
///
/// ```
/// use std::sync::Arc;
/// use comm_shm::{Ring, RingConfig, Segment};
///
/// let cfg = RingConfig::new(1024, 64)?;
/// let seg = Arc::new(Segment::create("comm-doc-ring", 2 * cfg.region_len())?);
/// let to_child = Ring::create(&seg, 0, cfg)?;
/// let from_child = Ring::create(&seg, cfg.region_len().next_multiple_of(128), cfg)?;
/// seg.mark_ready();
/// let tx = to_child.producer()?;
/// let rx = from_child.consumer()?;
/// # Ok::<(), comm_shm::ShmError>(())
/// ```
#[derive(Clone)]
pub struct Ring {
    mem: Arc<RingMem>,
}

impl Ring {
    /// Initialises a ring at `offset` (a multiple of 128) in the segment's
    /// payload. Must happen before the segment is marked ready.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// let cfg = RingConfig::new(64, 64)?;
    /// let seg = Arc::new(Segment::create("comm-doc-ring-create", cfg.region_len())?);
    /// let ring = Ring::create(&seg, 0, cfg)?;
    /// seg.mark_ready();
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    #[cfg(not(loom))]
    pub fn create(
        seg: &Arc<crate::Segment>,
        offset: usize,
        cfg: RingConfig,
    ) -> Result<Ring, ShmError> {
        Ok(Ring {
            mem: Arc::new(RingMem::create(seg, offset, cfg)?),
        })
    }

    /// Attaches to a ring another process created at `offset`; its geometry is
    /// read from shared memory and checked before use.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, Segment};
    /// let seg = Arc::new(Segment::open("comm-doc-ring-open")?);
    /// let ring = Ring::open(&seg, 0)?;
    /// let rx = ring.consumer()?;
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    #[cfg(not(loom))]
    pub fn open(seg: &Arc<crate::Segment>, offset: usize) -> Result<Ring, ShmError> {
        Ok(Ring {
            mem: Arc::new(RingMem::open(seg, offset)?),
        })
    }

    /// A ring on the heap for the loom model checker.
    #[cfg(loom)]
    pub fn model(cfg: RingConfig) -> Ring {
        Ring {
            mem: Arc::new(RingMem::new(cfg)),
        }
    }

    /// The ring's geometry.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-ring-geom", cfg.region_len())?);
    /// let ring = Ring::create(&seg, 0, cfg)?;
    /// assert_eq!(ring.geometry(), cfg.geometry());
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn geometry(&self) -> RingGeometry {
        self.mem.geometry()
    }

    /// Takes the producer role; fails with [`ShmError::AlreadyClaimed`] while
    /// another `Producer` (in any process) holds it.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-ring-prod", cfg.region_len())?);
    /// let ring = Ring::create(&seg, 0, cfg)?;
    /// let tx = ring.producer()?;
    /// assert!(ring.producer().is_err());
    /// drop(tx);
    /// assert!(ring.producer().is_ok());
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn producer(&self) -> Result<Producer, ShmError> {
        claim(&self.mem.control().producer.claimed, "producer")?;
        Ok(Producer::new(Arc::clone(&self.mem)))
    }

    /// Takes the consumer role; fails with [`ShmError::AlreadyClaimed`] while
    /// another `Consumer` (in any process) holds it.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-ring-cons", cfg.region_len())?);
    /// let ring = Ring::create(&seg, 0, cfg)?;
    /// let rx = ring.consumer()?;
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn consumer(&self) -> Result<Consumer, ShmError> {
        claim(&self.mem.control().consumer.claimed, "consumer")?;
        Ok(Consumer::new(Arc::clone(&self.mem)))
    }

    /// Wakes the consumer even though no message arrived: a parked consumer's
    /// [`Consumer::park`] returns [`Park::Woken`](crate::Park::Woken), and if it is not parked, its
    /// next `park` does so at once (the request is never lost), e.g. to shut down.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-ring-wake", cfg.region_len())?);
    /// let ring = Ring::create(&seg, 0, cfg)?;
    /// ring.wake_consumer();
    /// # Ok::<(), comm_shm::ShmError>(())
    /// ```
    pub fn wake_consumer(&self) {
        self.mem.control().doorbell.wake();
    }
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("geometry", &self.geometry())
            .finish()
    }
}

fn claim(word: &crate::sync::AtomicU32, role: &'static str) -> Result<(), ShmError> {
    word.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .map(|_| ())
        .map_err(|_| ShmError::AlreadyClaimed { role })
}
