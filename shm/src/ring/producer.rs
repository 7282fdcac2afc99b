//! The writing side of a ring.

use std::sync::Arc;

use super::mem::RingMem;
use super::{slot, PushError};
use crate::sync::Ordering;

/// The single writer of a [`Ring`](super::Ring). Obtain it with
/// [`Ring::producer`](super::Ring::producer); dropping it frees the role.
///
/// Every `push*` publishes its messages and wakes a parked consumer. Batching
/// with [`Producer::push_batch`] pays the wake check once per batch.
///
/// ```
/// # use std::sync::Arc;
/// # use comm_shm::{Ring, RingConfig, Segment, PushError};
/// # let cfg = RingConfig::new(64, 64)?;
/// # let seg = Arc::new(Segment::create("comm-doc-producer", cfg.region_len())?);
/// let mut tx = Ring::create(&seg, 0, cfg)?.producer()?;
/// match tx.push(b"ping") {
///     Ok(()) => {}
///     Err(PushError::WouldBlock) => { /* consumer is behind: retry later */ }
///     Err(e) => return Err(e.into()),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Producer {
    mem: Arc<RingMem>,
    notify: bool,
    tail: u64,
    head_cache: u64,
    capacity: u64,
    max_payload: usize,
}

impl Producer {
    pub(super) fn new(mem: Arc<RingMem>) -> Self {
        let control = mem.control();
        let g = mem.geometry();
        let tail = control.producer.tail.load(Ordering::Acquire);
        let head_cache = control.consumer.head.load(Ordering::Acquire);
        Producer {
            mem,
            notify: true,
            tail,
            head_cache,
            capacity: u64::from(g.capacity),
            max_payload: g.max_payload(),
        }
    }

    /// Largest payload one message may carry.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-max", cfg.region_len())?);
    /// let tx = Ring::create(&seg, 0, cfg)?.producer()?;
    /// assert_eq!(tx.max_payload(), 48);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Copies `payload` into the next slot and publishes it.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-push", cfg.region_len())?);
    /// let mut tx = Ring::create(&seg, 0, cfg)?.producer()?;
    /// tx.push(&42u64.to_le_bytes())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push(&mut self, payload: &[u8]) -> Result<(), PushError> {
        self.check_len(payload.len())?;
        self.write(payload)?;
        self.finish();
        Ok(())
    }

    /// Lets `fill` write the message in place: it receives the slot's whole
    /// payload area ([`Producer::max_payload`] bytes) and returns how many bytes
    /// it used. Nothing is published if that exceeds the area.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-push-with", cfg.region_len())?);
    /// let mut tx = Ring::create(&seg, 0, cfg)?.producer()?;
    /// tx.push_with(|area| {
    ///     area[..3].copy_from_slice(b"abc");
    ///     3
    /// })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push_with(&mut self, fill: impl FnOnce(&mut [u8]) -> usize) -> Result<usize, PushError> {
        let idx = self.claim()?;
        let max = self.max_payload;
        // SAFETY: `claim` established that the consumer released this slot (its
        // head is past it), so this producer is its only accessor until `publish`.
        let used = unsafe {
            self.mem.body_mut(idx, |body| {
                let used = fill(slot::payload_area(body));
                if used <= max {
                    slot::set_len(body, used);
                }
                used
            })
        };
        self.check_len(used)?;
        self.publish(idx);
        self.finish();
        Ok(used)
    }

    /// Pushes as many of `msgs` as fit, in order, and wakes the consumer once.
    /// Returns how many were pushed (0 when the ring is full). If any message is
    /// too large, nothing is pushed.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-batch", cfg.region_len())?);
    /// let mut tx = Ring::create(&seg, 0, cfg)?.producer()?;
    /// let msgs: [&[u8]; 3] = [b"a", b"bb", b"ccc"];
    /// let mut sent = 0;
    /// while sent < msgs.len() {
    ///     sent += tx.push_batch(&msgs[sent..])?;
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn push_batch<M: AsRef<[u8]>>(&mut self, msgs: &[M]) -> Result<usize, PushError> {
        for m in msgs {
            self.check_len(m.as_ref().len())?;
        }
        let mut pushed = 0;
        for m in msgs {
            if self.write(m.as_ref()).is_err() {
                break;
            }
            pushed += 1;
        }
        if pushed > 0 {
            self.finish();
        }
        Ok(pushed)
    }

    /// Whether pushes ring this ring's doorbell (the default). A caller whose
    /// consumer parks on a doorbell of its own (one for many rings) turns this
    /// off and rings that doorbell once per batch instead.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-quiet", cfg.region_len())?);
    /// let mut tx = Ring::create(&seg, 0, cfg)?.producer()?;
    /// tx.set_notify(false);
    /// tx.push(b"quiet")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_notify(&mut self, notify: bool) {
        self.notify = notify;
    }

    /// Slots free for pushing right now (a lower bound: the consumer may free more).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-free", cfg.region_len())?);
    /// let mut tx = Ring::create(&seg, 0, cfg)?.producer()?;
    /// assert_eq!(tx.free_slots(), 64);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn free_slots(&mut self) -> usize {
        self.head_cache = self.mem.control().consumer.head.load(Ordering::Acquire);
        self.capacity
            .saturating_sub(self.tail.wrapping_sub(self.head_cache)) as usize
    }

    /// Wakes the consumer if it is parked. The `push*` methods call this; it is
    /// public for callers that want to wake a consumer for another reason.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use comm_shm::{Ring, RingConfig, Segment};
    /// # let cfg = RingConfig::new(64, 64)?;
    /// # let seg = Arc::new(Segment::create("comm-doc-notify", cfg.region_len())?);
    /// let tx = Ring::create(&seg, 0, cfg)?.producer()?;
    /// tx.notify();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn notify(&self) {
        self.mem.control().doorbell.ring();
    }

    fn check_len(&self, len: usize) -> Result<(), PushError> {
        if len > self.max_payload {
            return Err(PushError::TooLarge {
                len,
                max: self.max_payload,
            });
        }
        Ok(())
    }

    /// Index of the slot at `tail` if the consumer has released it.
    fn claim(&mut self) -> Result<usize, PushError> {
        // The head from shared memory is untrusted: wrapping arithmetic keeps a
        // corrupt value from doing more than making the ring look full.
        if self.tail.wrapping_sub(self.head_cache) >= self.capacity {
            // Acquire pairs with the consumer's Release of `head`: its reads of
            // the slot are finished before we overwrite it.
            self.head_cache = self.mem.control().consumer.head.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head_cache) >= self.capacity {
                return Err(PushError::WouldBlock);
            }
        }
        Ok((self.tail & (self.capacity - 1)) as usize)
    }

    fn write(&mut self, payload: &[u8]) -> Result<(), PushError> {
        let idx = self.claim()?;
        // SAFETY: as in `push_with`, the slot is released and ours until `publish`.
        unsafe {
            self.mem.body_mut(idx, |body| {
                slot::payload_area(body)[..payload.len()].copy_from_slice(payload);
                slot::set_len(body, payload.len());
            })
        };
        self.publish(idx);
        Ok(())
    }

    fn publish(&mut self, idx: usize) {
        self.tail += 1;
        // Release: the body written above is visible to a consumer that sees this.
        self.mem.seq(idx).store(self.tail, Ordering::Release);
    }

    fn finish(&mut self) {
        self.mem
            .control()
            .producer
            .tail
            .store(self.tail, Ordering::Release);
        if self.notify {
            self.notify();
        }
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.mem
            .control()
            .producer
            .claimed
            .store(0, Ordering::Release);
    }
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("tail", &self.tail)
            .field("capacity", &self.capacity)
            .finish()
    }
}
