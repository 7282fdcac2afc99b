//! The buffer pool: one pre-allocated memory region per shard, cut into size
//! classes, so that no message ever allocates. The region is a single mapping
//! so that it can be registered once (io_uring fixed buffers, a verbs memory
//! region) and referred to by offset (shared-memory descriptors).

use std::ptr::NonNull;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use memmap2::MmapMut;

use comm_shm::{HotSet, Segment};

use crate::{Buf, Error};

/// `count` buffers of `size` bytes.
///
/// ```
/// let c = comm::SizeClass { size: 4096, count: 16 };
/// assert_eq!(c.size * c.count, 65536);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeClass {
    /// Bytes per buffer: a power of two, at least 64.
    pub size: usize,
    /// Number of buffers, at least 1.
    pub count: usize,
}

/// The size classes of a [`BufPool`].
///
/// ```
/// use comm::{PoolConfig, SizeClass};
/// let cfg = PoolConfig::new([SizeClass { size: 64, count: 8 }, SizeClass { size: 1 << 20, count: 2 }])?;
/// assert_eq!(cfg.largest(), 1 << 20);
/// assert!(PoolConfig::new([SizeClass { size: 100, count: 1 }]).is_err());
/// # Ok::<(), comm::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    classes: Vec<SizeClass>,
    /// Percent of each class one endpoint's inbox may hold.
    inbox_share: u8,
}

/// What [`PoolConfig::inbox_share`] is unless set.
const DEFAULT_INBOX_SHARE: u8 = 50;

impl PoolConfig {
    /// Validates and sorts the classes (sizes must be distinct powers of two
    /// of at least 64 bytes; counts at least 1).
    ///
    /// ```
    /// let cfg = comm::PoolConfig::new([comm::SizeClass { size: 256, count: 4 }])?;
    /// assert_eq!(cfg.classes().len(), 1);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn new(classes: impl IntoIterator<Item = SizeClass>) -> Result<Self, Error> {
        let mut classes: Vec<SizeClass> = classes.into_iter().collect();
        classes.sort_by_key(|c| c.size);
        if classes.is_empty() || classes.len() > usize::from(u8::MAX) {
            return Err(Error::Config("a pool needs 1 to 255 size classes"));
        }
        if classes.windows(2).any(|w| w[0].size == w[1].size) {
            return Err(Error::Config("pool size classes must be distinct"));
        }
        for c in &classes {
            if !c.size.is_power_of_two() || c.size < 64 {
                return Err(Error::Config(
                    "pool buffer sizes must be powers of two >= 64",
                ));
            }
            if c.count == 0 || c.count > u32::MAX as usize {
                return Err(Error::Config("pool class counts must be 1 to 2^32-1"));
            }
        }
        let cfg = PoolConfig {
            classes,
            inbox_share: DEFAULT_INBOX_SHARE,
        };
        cfg.layout().ok_or(Error::Config("pool size overflows"))?;
        Ok(cfg)
    }

    /// The classes, smallest first.
    ///
    /// ```
    /// let cfg = comm::PoolConfig::default();
    /// assert!(cfg.classes().windows(2).all(|w| w[0].size < w[1].size));
    /// ```
    pub fn classes(&self) -> &[SizeClass] {
        &self.classes
    }

    /// Sets the share of the pool, in percent of each size class's buffers
    /// (1 to 100, 50 unless set), that messages waiting in one endpoint's
    /// inbox may hold.
    ///
    /// Messages for an endpoint read by an application thread wait in its
    /// inbox in buffers of the receiving shard's pool. Without a bound, an
    /// endpoint that stops reading would take every buffer of the shard,
    /// and its other endpoints could neither receive nor allocate. Past its
    /// share, an endpoint's messages wait where they are (in the ring or
    /// the socket they came by, which then holds their sender back) until
    /// the application reads; over UDP in datagram mode they are dropped,
    /// as a full inbox drops them there. One buffer of each class is always allowed,
    /// so that any message fits. Buffers the application took out of the
    /// inbox (`recv`) no longer count, even while it keeps them. Messages
    /// read in place from a shared-memory peer's pool use no buffer here.
    ///
    /// ```
    /// let cfg = comm::PoolConfig::default().with_inbox_share(25)?;
    /// assert_eq!(cfg.inbox_share(), 25);
    /// assert!(comm::PoolConfig::default().with_inbox_share(0).is_err());
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn with_inbox_share(mut self, percent: u8) -> Result<Self, Error> {
        if !(1..=100).contains(&percent) {
            return Err(Error::Config("the inbox share is 1 to 100 percent"));
        }
        self.inbox_share = percent;
        Ok(self)
    }

    /// The share of each size class one endpoint's inbox may hold, in
    /// percent; see [`with_inbox_share`](PoolConfig::with_inbox_share).
    ///
    /// ```
    /// assert_eq!(comm::PoolConfig::default().inbox_share(), 50);
    /// ```
    pub fn inbox_share(&self) -> u8 {
        self.inbox_share
    }

    /// Per class, the buffers one endpoint's inbox may hold: the share,
    /// rounded down, but at least one.
    pub(crate) fn inbox_limits(&self) -> Vec<u32> {
        self.classes
            .iter()
            .map(|c| {
                let share = c.count as u64 * u64::from(self.inbox_share) / 100;
                share.clamp(1, u64::from(u32::MAX)) as u32
            })
            .collect()
    }

    /// The largest buffer the pool hands out.
    ///
    /// ```
    /// assert_eq!(comm::PoolConfig::default().largest(), 4 << 20);
    /// ```
    pub fn largest(&self) -> usize {
        self.classes.last().map_or(0, |c| c.size)
    }

    /// Bytes of the whole region.
    ///
    /// ```
    /// let cfg = comm::PoolConfig::new([comm::SizeClass { size: 64, count: 2 }])?;
    /// assert_eq!(cfg.region_len(), 128);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn region_len(&self) -> usize {
        self.layout().map_or(0, |(_, len)| len)
    }

    /// Offset of each class in the region, and the region's length. Each class
    /// starts aligned to its buffer size (up to a page).
    fn layout(&self) -> Option<(Vec<usize>, usize)> {
        let mut offsets = Vec::with_capacity(self.classes.len());
        let mut end = 0usize;
        for c in &self.classes {
            let start = end.checked_next_multiple_of(c.size.min(4096))?;
            offsets.push(start);
            end = start.checked_add(c.size.checked_mul(c.count)?)?;
        }
        Some((offsets, end))
    }
}

impl Default for PoolConfig {
    /// 256 B x 1024, 4 KiB x 256, 64 KiB x 64, 1 MiB x 8, 4 MiB x 4 (about
    /// 29 MiB of address space; pages are committed on first use).
    fn default() -> Self {
        PoolConfig {
            classes: vec![
                SizeClass {
                    size: 256,
                    count: 1024,
                },
                SizeClass {
                    size: 4096,
                    count: 256,
                },
                SizeClass {
                    size: 64 << 10,
                    count: 64,
                },
                SizeClass {
                    size: 1 << 20,
                    count: 8,
                },
                SizeClass {
                    size: 4 << 20,
                    count: 4,
                },
            ],
            inbox_share: DEFAULT_INBOX_SHARE,
        }
    }
}

pub(crate) struct Class {
    size: usize,
    offset: usize,
    /// The buffers freed last, handed out first (still in cache).
    hot: HotSet,
    free: ArrayQueue<u32>,
}

/// The memory behind a pool: private, or a shared segment that peers on the
/// same node map to read descriptors in place.
enum Backing {
    Private(#[allow(dead_code)] MmapMut),
    Shared(Arc<Segment>),
}

pub(crate) struct PoolInner {
    backing: Backing,
    base: NonNull<u8>,
    len: usize,
    classes: Box<[Class]>,
    /// Global slot number of each class's first buffer.
    first_slot: Box<[usize]>,
}

// SAFETY: `base` points into `_map`, owned here and alive as long as the pool.
// Each buffer's bytes are reachable only through the one `Buf` that popped its
// index from the free queue (a lock-free MPMC queue), so no two threads ever
// access the same bytes; the queue hands indices over with the needed ordering.
unsafe impl Send for PoolInner {}
// SAFETY: see the Send impl.
unsafe impl Sync for PoolInner {}

impl PoolInner {
    /// Returns buffer `index` of `class` to its free list.
    pub(crate) fn release(&self, class: u8, index: u32) {
        let c = &self.classes[usize::from(class)];
        if c.hot.put(index) {
            return;
        }
        // Cannot fail: the queue holds `count` entries and each index is
        // in it, in the hot set, or owned by exactly one `Buf`.
        let _ = c.free.push(index);
    }

    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    pub(crate) fn slot(&self, class: u8, index: u32) -> usize {
        self.first_slot[usize::from(class)] + index as usize
    }
}

/// A pool of pre-allocated buffers in one memory region. Cloning is cheap and
/// shares the pool; buffers go back to it when their [`Buf`] drops, from any
/// thread. Allocation and release are lock-free and never touch the heap.
///
/// ```
/// use comm::{BufPool, PoolConfig};
/// let pool = BufPool::new(PoolConfig::default())?;
/// let free = pool.free_buffers();
/// let buf = pool.alloc(100)?;
/// assert_eq!(buf.len(), 100);
/// assert_eq!(buf.capacity(), 256);
/// drop(buf);
/// assert_eq!(pool.free_buffers(), free);
/// # Ok::<(), comm::Error>(())
/// ```
#[derive(Clone)]
pub struct BufPool {
    inner: Arc<PoolInner>,
}

impl BufPool {
    /// Maps the region and fills every class's free list.
    ///
    /// ```
    /// let pool = comm::BufPool::new(comm::PoolConfig::default())?;
    /// assert_eq!(pool.max_len(), 4 << 20);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn new(cfg: PoolConfig) -> Result<Self, Error> {
        let (_, len) = cfg.layout().ok_or(Error::Config("pool size overflows"))?;
        let mut map = MmapMut::map_anon(len.max(1))?;
        let base = NonNull::new(map.as_mut_ptr()).ok_or(Error::Config("null mapping"))?;
        Self::build(cfg, Backing::Private(map), base)
    }

    /// A pool in a new shared-memory segment named `name`, which peers on this
    /// node open to read buffers in place (see [`BufPool::segment`]). The
    /// segment is unlinked when the pool is dropped.
    ///
    /// ```
    /// let name = format!("comm-doc-pool-{}", std::process::id());
    /// let pool = comm::BufPool::shared(comm::PoolConfig::default(), &name)?;
    /// assert_eq!(pool.segment().unwrap().name(), name);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn shared(cfg: PoolConfig, name: &str) -> Result<Self, Error> {
        let (_, len) = cfg.layout().ok_or(Error::Config("pool size overflows"))?;
        let seg = Arc::new(Segment::create(name, len.max(1))?);
        seg.mark_ready();
        let base = seg.payload_ptr();
        Self::build(cfg, Backing::Shared(seg), base)
    }

    fn build(cfg: PoolConfig, backing: Backing, base: NonNull<u8>) -> Result<Self, Error> {
        let (offsets, len) = cfg.layout().ok_or(Error::Config("pool size overflows"))?;
        let mut first_slot = Vec::with_capacity(cfg.classes.len());
        let mut slots = 0;
        for c in &cfg.classes {
            first_slot.push(slots);
            slots += c.count;
        }
        let classes = cfg
            .classes
            .iter()
            .zip(offsets)
            .map(|(c, offset)| {
                let free = ArrayQueue::new(c.count);
                for i in 0..c.count as u32 {
                    let _ = free.push(i);
                }
                Class {
                    size: c.size,
                    offset,
                    hot: HotSet::new(),
                    free,
                }
            })
            .collect();
        Ok(BufPool {
            inner: Arc::new(PoolInner {
                backing,
                base,
                len,
                classes,
                first_slot: first_slot.into_boxed_slice(),
            }),
        })
    }

    /// The shared segment behind the pool, if it is a [`BufPool::shared`] one.
    ///
    /// ```
    /// let pool = comm::BufPool::new(comm::PoolConfig::default())?;
    /// assert!(pool.segment().is_none());
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn segment(&self) -> Option<&Arc<Segment>> {
        match &self.inner.backing {
            Backing::Shared(seg) => Some(seg),
            Backing::Private(_) => None,
        }
    }

    /// Number of buffers over all classes; `slot_of` numbers them densely.
    pub(crate) fn slot_count(&self) -> usize {
        self.inner.classes.iter().map(|c| c.free.capacity()).sum()
    }

    /// Dense number of `buf` in this pool (which must own it).
    pub(crate) fn slot_of(&self, buf: &Buf) -> usize {
        let (class, index) = buf.position();
        self.inner.slot(class, index)
    }

    /// The slot of the buffer that starts at `offset` in the region and can
    /// hold `len` bytes; `None` for anything else (a peer's bad descriptor).
    pub(crate) fn slot_at(&self, offset: u64, len: u64) -> Option<usize> {
        let offset = usize::try_from(offset).ok()?;
        for (class, c) in self.inner.classes.iter().enumerate() {
            let end = c.offset + c.size * c.free.capacity();
            if (c.offset..end).contains(&offset) && (offset - c.offset) % c.size == 0 {
                return (len <= c.size as u64)
                    .then(|| self.inner.first_slot[class] + (offset - c.offset) / c.size);
            }
        }
        None
    }

    /// A buffer of `len` bytes (zeroed on first use, otherwise holding old
    /// data) from the smallest class that has one free, or
    /// [`Error::NoBuffers`] when none is.
    ///
    /// ```
    /// use comm::{BufPool, Error, PoolConfig, SizeClass};
    /// let pool = BufPool::new(PoolConfig::new([SizeClass { size: 64, count: 1 }])?)?;
    /// let a = pool.alloc(10)?;
    /// assert!(matches!(pool.alloc(10), Err(Error::NoBuffers { .. })));
    /// drop(a);
    /// assert!(pool.alloc(10).is_ok());
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn alloc(&self, len: usize) -> Result<Buf, Error> {
        for (class, c) in self.inner.classes.iter().enumerate() {
            if c.size < len {
                continue;
            }
            if let Some(index) = c.hot.take().or_else(|| c.free.pop()) {
                let offset = c.offset + index as usize * c.size;
                // SAFETY: offset + size lies within the region by construction
                // of the layout (index < count).
                let ptr = unsafe { self.inner.base.add(offset) };
                // `class` < 255 is guaranteed by `PoolConfig::new`.
                return Ok(Buf::new(
                    Arc::clone(&self.inner),
                    ptr,
                    len,
                    c.size,
                    class as u8,
                    index,
                ));
            }
        }
        Err(Error::NoBuffers {
            requested: len,
            largest: self.max_len(),
        })
    }

    /// The largest buffer this pool hands out.
    ///
    /// ```
    /// assert!(comm::BufPool::new(comm::PoolConfig::default())?.max_len() >= 1 << 20);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn max_len(&self) -> usize {
        self.inner.classes.last().map_or(0, |c| c.size)
    }

    /// Buffers currently free, over all classes.
    ///
    /// ```
    /// let pool = comm::BufPool::new(comm::PoolConfig::default())?;
    /// assert_eq!(pool.free_buffers(), 1024 + 256 + 64 + 8 + 4);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn free_buffers(&self) -> usize {
        let hot = |c: &Class| c.hot.len();
        self.inner
            .classes
            .iter()
            .map(|c| c.free.len() + hot(c))
            .sum()
    }

    /// Start and length of the region, for registering it with the kernel or
    /// an HCA.
    ///
    /// ```
    /// let pool = comm::BufPool::new(comm::PoolConfig::default())?;
    /// let (ptr, len) = pool.region();
    /// assert!(!ptr.is_null() && len >= 29 << 20);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn region(&self) -> (*const u8, usize) {
        (self.inner.base.as_ptr(), self.inner.len)
    }

    /// Whether `buf` came from this pool.
    ///
    /// ```
    /// let a = comm::BufPool::new(comm::PoolConfig::default())?;
    /// let b = comm::BufPool::new(comm::PoolConfig::default())?;
    /// let buf = a.alloc(8)?;
    /// assert!(a.owns(&buf) && !b.owns(&buf));
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn owns(&self, buf: &Buf) -> bool {
        buf.belongs_to(&self.inner)
    }
}

impl std::fmt::Debug for BufPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufPool")
            .field("region_len", &self.inner.len)
            .field("free_buffers", &self.free_buffers())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window of buffers freed and taken in turn keeps reusing the same
    /// few (still in cache) instead of cycling through the whole class.
    #[test]
    fn a_window_of_buffers_keeps_coming_back() {
        let cfg = PoolConfig::new([SizeClass {
            size: 4096,
            count: 64,
        }])
        .unwrap();
        let pool = BufPool::new(cfg).unwrap();
        let window: Vec<Buf> = (0..8).map(|_| pool.alloc(4096).unwrap()).collect();
        let mut first: Vec<*const u8> = window.iter().map(|b| b.as_ptr()).collect();
        drop(window);
        for _ in 0..10 {
            let window: Vec<Buf> = (0..8).map(|_| pool.alloc(4096).unwrap()).collect();
            let mut now: Vec<*const u8> = window.iter().map(|b| b.as_ptr()).collect();
            now.sort_unstable();
            first.sort_unstable();
            assert_eq!(now, first, "the pool handed out buffers idle for longer");
        }
        assert_eq!(pool.free_buffers(), 64);
    }
}
