//! The reading side of a ring.

use std::sync::Arc;
use std::time::Duration;

use super::mem::RingMem;
use super::{slot, PopError};
use crate::sync::Ordering;
use crate::Park;

/// The single reader of a [`Ring`](super::Ring). Obtain it with
/// [`Ring::consumer`](super::Ring::consumer); dropping it frees the role.
///
/// Messages are read in place from shared memory inside a closure, so nothing
/// is copied unless the closure copies it.
///
/// ```
/// # use std::sync::Arc;
/// # use comm_shm::{Ring, RingConfig, Segment, PopError};
/// # let cfg = RingConfig::new(64, 64)?;
/// # let seg = Arc::new(Segment::create("comm-doc-consumer", cfg.region_len())?);
/// let mut rx = Ring::create(&seg, 0, cfg)?.consumer()?;
/// match rx.pop_with(|bytes| bytes.len()) {
///     Ok(n) => println!("got {n} bytes"),
///     Err(PopError::Empty) => { /* poll again, or park */ }
///     Err(e) => return Err(e.into()),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Consumer {
    mem: Arc<RingMem>,
    head: u64,
    mask: u64,
    corrupt: Option<PopError>,
}

impl Consumer {
    pub(super) fn new(mem: Arc<RingMem>) -> Self {
        let control = mem.control();
        let head = control.consumer.head.load(Ordering::Acquire);
        let mask = u64::from(mem.geometry().capacity) - 1;
        Consumer {
            mem,
            head,
            mask,
            corrupt: None,
        }
    }

    /// Runs `read` on the next message, in place, and releases its slot.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-pop", cfg.region_len())?);
    /// # let ring = Ring::create(&seg, 0, cfg)?;
    /// # let mut tx = ring.producer()?;
    /// let mut rx = ring.consumer()?;
    /// tx.push(b"abc")?;
    /// assert_eq!(rx.pop_with(|b| b.to_vec())?, b"abc");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pop_with<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Result<R, PopError> {
        if let Some(e) = self.corrupt {
            return Err(e);
        }
        if !self.is_ready() {
            return Err(PopError::Empty);
        }
        let out = self.read_next(read)?;
        self.release();
        Ok(out)
    }

    /// Runs `read` on the next message, in place, without releasing its slot:
    /// the next `peek_with` or `pop_with` sees the same message until
    /// [`Consumer::advance`] releases it. For consumers that may have to leave a
    /// message in the ring (backpressure further on).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-peek", cfg.region_len())?);
    /// # let ring = Ring::create(&seg, 0, cfg)?;
    /// # let mut tx = ring.producer()?;
    /// let mut rx = ring.consumer()?;
    /// tx.push(b"x")?;
    /// assert_eq!(rx.peek_with(|b| b.len())?, 1);
    /// assert_eq!(rx.peek_with(|b| b.len())?, 1); // still there
    /// rx.advance();
    /// assert!(rx.peek_with(|_| ()).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn peek_with<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Result<R, PopError> {
        if let Some(e) = self.corrupt {
            return Err(e);
        }
        if !self.is_ready() {
            return Err(PopError::Empty);
        }
        self.read_next(read)
    }

    /// Releases the message last seen by [`Consumer::peek_with`]. Does nothing
    /// if no message is ready.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-advance", cfg.region_len())?);
    /// # let ring = Ring::create(&seg, 0, cfg)?;
    /// let mut rx = ring.consumer()?;
    /// rx.advance(); // empty: nothing happens
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn advance(&mut self) {
        if self.corrupt.is_none() && self.is_ready() {
            self.release();
        }
    }

    /// Runs `read` on up to `max` ready messages in order and releases their
    /// slots with one store. Returns how many were read (0 when empty).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-pop-batch", cfg.region_len())?);
    /// # let ring = Ring::create(&seg, 0, cfg)?;
    /// # let mut tx = ring.producer()?;
    /// let mut rx = ring.consumer()?;
    /// tx.push_batch(&[b"a", b"b"])?;
    /// let mut total = 0;
    /// let n = rx.pop_batch(32, |bytes| total += bytes.len())?;
    /// assert_eq!((n, total), (2, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn pop_batch(
        &mut self,
        max: usize,
        mut read: impl FnMut(&[u8]),
    ) -> Result<usize, PopError> {
        if let Some(e) = self.corrupt {
            return Err(e);
        }
        let mut n = 0;
        while n < max && self.is_ready() {
            if self.read_next(&mut read).is_err() {
                break;
            }
            self.head += 1;
            n += 1;
        }
        if n > 0 {
            self.store_head();
        }
        match (n, self.corrupt) {
            (0, Some(e)) => Err(e),
            _ => Ok(n),
        }
    }

    /// Whether a message is ready to pop.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-ready-msg", cfg.region_len())?);
    /// let rx = Ring::create(&seg, 0, cfg)?.consumer()?;
    /// assert!(!rx.is_ready());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_ready(&self) -> bool {
        slot_ready(&self.mem, self.head, self.mask)
    }

    /// Sleeps until a message is ready, the timeout elapses (`None`: no
    /// timeout), or someone calls [`Ring::wake_consumer`](super::Ring::wake_consumer).
    /// A producer that publishes while the consumer sleeps wakes it; no wake-up
    /// is lost.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use std::time::Duration;
    /// # use comm_shm::{Park, Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-park", cfg.region_len())?);
    /// let mut rx = Ring::create(&seg, 0, cfg)?.consumer()?;
    /// assert_eq!(rx.park(Some(Duration::from_millis(1))), Park::TimedOut);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn park(&mut self, timeout: Option<Duration>) -> Park {
        let mem = &self.mem;
        let (head, mask) = (self.head, self.mask);
        mem.control()
            .doorbell
            .park(timeout, || slot_ready(mem, head, mask))
    }

    fn read_next<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Result<R, PopError> {
        let idx = (self.head & self.mask) as usize;
        // SAFETY: `is_ready` saw this slot published for our position, and the
        // producer does not reuse it until we move `head` past it.
        let out = unsafe {
            self.mem
                .body(idx, |body| slot::decode_slot_body(body).map(read))
        };
        if let Err(e) = out {
            self.corrupt = Some(e);
        }
        out
    }

    fn release(&mut self) {
        self.head += 1;
        self.store_head();
    }

    fn store_head(&self) {
        // Release: our reads of the slots are done before the producer reuses them.
        self.mem
            .control()
            .consumer
            .head
            .store(self.head, Ordering::Release);
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.mem
            .control()
            .consumer
            .claimed
            .store(0, Ordering::Release);
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("head", &self.head)
            .field("corrupt", &self.corrupt)
            .finish()
    }
}

/// Whether the slot for position `head` holds the message of that position.
fn slot_ready(mem: &RingMem, head: u64, mask: u64) -> bool {
    // Acquire pairs with the producer's Release of the sequence word.
    mem.seq((head & mask) as usize).load(Ordering::Acquire) == head.wrapping_add(1)
}
