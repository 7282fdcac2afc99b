//! A buffer owned by the caller until it is sent or dropped.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::Arc;

use crate::pool::PoolInner;
use crate::Error;

/// A buffer from a [`BufPool`](crate::BufPool): pre-registered memory that
/// derefs to `[u8]` of its current length. Sending moves it into the engine;
/// dropping it returns it to its pool (from any thread).
///
/// ```
/// let pool = comm::BufPool::new(comm::PoolConfig::default())?;
/// let mut buf = pool.alloc(5)?;
/// buf.copy_from_slice(b"hello");
/// buf.set_len(3)?;
/// assert_eq!(&buf[..], b"hel");
/// # Ok::<(), comm::Error>(())
/// ```
pub struct Buf {
    pool: Arc<PoolInner>,
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
    class: u8,
    index: u32,
}

// SAFETY: a `Buf` is the only handle to its bytes (see `PoolInner`), so moving
// it to or sharing `&Buf` with another thread is like doing so with a Box<[u8]>.
unsafe impl Send for Buf {}
// SAFETY: `&Buf` only gives `&[u8]`.
unsafe impl Sync for Buf {}

impl Buf {
    pub(crate) fn new(
        pool: Arc<PoolInner>,
        ptr: NonNull<u8>,
        len: usize,
        capacity: usize,
        class: u8,
        index: u32,
    ) -> Self {
        debug_assert!(len <= capacity);
        Buf {
            pool,
            ptr,
            len,
            capacity,
            class,
            index,
        }
    }

    /// Bytes the buffer can hold.
    ///
    /// ```
    /// let pool = comm::BufPool::new(comm::PoolConfig::default())?;
    /// assert_eq!(pool.alloc(300)?.capacity(), 4096);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets the length (up to the capacity); new bytes hold whatever the
    /// buffer held before.
    ///
    /// ```
    /// let pool = comm::BufPool::new(comm::PoolConfig::default())?;
    /// let mut buf = pool.alloc(1)?;
    /// buf.set_len(200)?;
    /// assert_eq!(buf.len(), 200);
    /// assert!(buf.set_len(1000).is_err());
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn set_len(&mut self, len: usize) -> Result<(), Error> {
        if len > self.capacity {
            return Err(Error::TooLarge {
                len,
                max: self.capacity,
            });
        }
        self.len = len;
        Ok(())
    }

    /// Offset of the buffer from the start of its pool's region (how
    /// descriptors name it to a peer that maps the same region).
    ///
    /// ```
    /// let pool = comm::BufPool::new(comm::PoolConfig::default())?;
    /// let buf = pool.alloc(8)?;
    /// assert!(buf.region_offset() < pool.region().1);
    /// # Ok::<(), comm::Error>(())
    /// ```
    pub fn region_offset(&self) -> usize {
        self.ptr.as_ptr() as usize - self.pool.base().as_ptr() as usize
    }

    pub(crate) fn position(&self) -> (u8, u32) {
        (self.class, self.index)
    }

    pub(crate) fn belongs_to(&self, pool: &Arc<PoolInner>) -> bool {
        Arc::ptr_eq(&self.pool, pool)
    }
}

impl Deref for Buf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `capacity >= len` bytes of the pool's
        // mapping, which `self.pool` keeps alive, and no one else accesses them.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        self.pool.release(self.class, self.index);
    }
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Buf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("offset", &self.region_offset())
            .finish()
    }
}
