//! A futex word that a consumer sleeps on and producers ring: the park/wake
//! protocol shared by every ring (each has one) and by anything that waits on
//! several sources at once (one doorbell that all their producers ring).
//!
//! Protocol (no lost wake-ups, model-checked in `loom-tests/`):
//! - consumer: word `AWAKE -> SLEEPING`, SeqCst fence, re-check its sources,
//!   then `FUTEX_WAIT(word, SLEEPING)`;
//! - producer, after publishing: SeqCst fence, and if the word is `SLEEPING`,
//!   set it `AWAKE` and `FUTEX_WAKE`.
//!
//! Either the producer's check sees `SLEEPING`, or the consumer's re-check sees
//! the publication. Clearing the word before waking makes a consumer that has
//! not yet entered the wait return at once. An explicit [`Doorbell::wake`]
//! leaves `WAKE_PENDING`, which the next `park` consumes, so it is never lost.

use std::time::Duration;

use crate::sync::{fence, AtomicU32, Ordering, Wait};

const AWAKE: u32 = 0;
const SLEEPING: u32 = 1;
const WAKE_PENDING: u32 = 2;

/// How [`Doorbell::park`] (and [`Consumer::park`](crate::Consumer::park)) returned.
///
/// ```
/// use comm_shm::Park;
/// assert_ne!(Park::Ready, Park::TimedOut);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Park {
    /// The awaited condition holds.
    Ready,
    /// The timeout elapsed and the condition still does not hold.
    TimedOut,
    /// Woken while the condition does not hold (an explicit wake or a signal).
    Woken,
}

/// A 4-byte futex word with the park/wake protocol; `#[repr(C)]` so it can
/// live in shared memory and be rung from other processes.
///
/// ```
/// use comm_shm::{Doorbell, Park};
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::time::Duration;
///
/// let bell = Doorbell::new();
/// let flag = AtomicBool::new(false);
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         flag.store(true, Ordering::Release); // publish ...
///         bell.ring();                         // ... then ring
///     });
///     let ready = || flag.load(Ordering::Acquire);
///     while bell.park(Some(Duration::from_secs(5)), ready) != Park::Ready {}
/// });
/// ```
#[repr(C)]
pub struct Doorbell {
    word: AtomicU32,
    #[cfg(loom)]
    model: loom_futex::Futex,
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

impl Doorbell {
    /// A doorbell whose consumer is awake.
    ///
    /// ```
    /// let bell = comm_shm::Doorbell::new();
    /// bell.ring(); // nobody sleeps: nothing happens
    /// ```
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Doorbell {
            word: AtomicU32::new(AWAKE),
        }
    }

    /// A doorbell for the loom model.
    #[cfg(loom)]
    pub fn new() -> Self {
        Doorbell {
            word: AtomicU32::new(AWAKE),
            model: loom_futex::Futex::new(),
        }
    }

    /// The doorbell at `ptr`, e.g. inside a shared segment. All-zero bytes are
    /// a valid doorbell.
    ///
    /// # Safety
    /// `ptr` is 4-byte aligned, valid for 4 bytes for `'a`, and only ever
    /// accessed as a `Doorbell` (atomically) during `'a`.
    ///
    /// ```
    /// let mut word = 0u32;
    /// // SAFETY: `word` is aligned, outlives `bell`, and is not touched otherwise.
    /// let bell = unsafe { comm_shm::Doorbell::from_ptr(std::ptr::addr_of_mut!(word).cast()) };
    /// bell.ring();
    /// ```
    #[cfg(not(loom))]
    pub unsafe fn from_ptr<'a>(ptr: *mut u8) -> &'a Doorbell {
        // SAFETY: per the caller's contract; `Doorbell` is a repr(C) wrapper of
        // one AtomicU32, which has the layout of u32.
        unsafe { &*ptr.cast::<Doorbell>() }
    }

    /// Call after publishing something the consumer waits for: wakes it if it
    /// is parked (or about to park). Costs a fence and a read of a line that is
    /// rarely written when nobody sleeps.
    ///
    /// ```
    /// comm_shm::Doorbell::new().ring();
    /// ```
    pub fn ring(&self) {
        fence(Ordering::SeqCst);
        if self.word.load(Ordering::Relaxed) == SLEEPING
            && self
                .word
                .compare_exchange(SLEEPING, AWAKE, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.futex_wake();
        }
    }

    /// Makes the consumer's current or next [`Doorbell::park`] return
    /// [`Park::Woken`] even though nothing was published (e.g. to shut it down).
    ///
    /// ```
    /// use comm_shm::{Doorbell, Park};
    /// let bell = Doorbell::new();
    /// bell.wake();
    /// assert_eq!(bell.park(None, || false), Park::Woken);
    /// ```
    pub fn wake(&self) {
        if self.word.swap(WAKE_PENDING, Ordering::AcqRel) == SLEEPING {
            self.futex_wake();
        }
    }

    /// Sleeps until `ready()` holds, the timeout elapses (`None`: never) or
    /// [`Doorbell::wake`] is called. Only one thread may park on a doorbell.
    /// `ready` must read what producers publish before they [`Doorbell::ring`].
    ///
    /// ```
    /// use comm_shm::{Doorbell, Park};
    /// use std::time::Duration;
    /// let bell = Doorbell::new();
    /// assert_eq!(bell.park(Some(Duration::from_millis(1)), || false), Park::TimedOut);
    /// assert_eq!(bell.park(None, || true), Park::Ready);
    /// ```
    pub fn park(&self, timeout: Option<Duration>, ready: impl Fn() -> bool) -> Park {
        self.park_inner(ready, || self.futex_wait(timeout))
    }

    /// Like [`Doorbell::park`], but the sleep itself is done by `wait`, which
    /// gets the futex word and the value it holds while the consumer sleeps
    /// and must return (`true`: timed out) once the word is woken or changes,
    /// or earlier. This lets a thread sleep on the doorbell and on other
    /// sources at once (an io_uring `FUTEX_WAIT` beside its sockets).
    ///
    /// ```
    /// # use comm_shm::{Doorbell, Park};
    /// let bell = Doorbell::new();
    /// let park = bell.park_via(|| false, |word, sleeping| {
    ///     assert_eq!(word.load(std::sync::atomic::Ordering::Relaxed), sleeping);
    ///     true // pretend the wait timed out
    /// });
    /// assert_eq!(park, Park::TimedOut);
    /// ```
    #[cfg(not(loom))]
    pub fn park_via(
        &self,
        ready: impl Fn() -> bool,
        wait: impl FnOnce(&std::sync::atomic::AtomicU32, u32) -> bool,
    ) -> Park {
        self.park_inner(ready, || {
            if wait(&self.word, SLEEPING) {
                Wait::TimedOut
            } else {
                Wait::Woken
            }
        })
    }

    fn park_inner(&self, ready: impl Fn() -> bool, wait: impl FnOnce() -> Wait) -> Park {
        // A pending wake is left in place whenever we return `Ready`, so the
        // next `park` reports it: a `wake` is never absorbed by a `Ready`.
        if ready() {
            return Park::Ready;
        }
        // Acquire wherever we read the word: a `wake` we consume synchronises
        // with us, so whatever its caller published before waking (a stop
        // flag) is visible once `park` returns.
        if self
            .word
            .compare_exchange(AWAKE, SLEEPING, Ordering::Relaxed, Ordering::Acquire)
            .is_err()
        {
            return self.consume_wake();
        }
        // Pairs with the fence in `ring`.
        fence(Ordering::SeqCst);
        let waited = if ready() { Wait::Woken } else { wait() };
        // Undo our SLEEPING unless a `ring` (now AWAKE) or a `wake` (now
        // WAKE_PENDING) has replaced it.
        match self
            .word
            .compare_exchange(SLEEPING, AWAKE, Ordering::Acquire, Ordering::Acquire)
        {
            Err(WAKE_PENDING) if !ready() => self.consume_wake(),
            _ if ready() => Park::Ready,
            Ok(_) | Err(_) if waited == Wait::TimedOut => Park::TimedOut,
            _ => Park::Woken,
        }
    }

    fn consume_wake(&self) -> Park {
        self.word.swap(AWAKE, Ordering::Acquire);
        Park::Woken
    }

    #[cfg(not(loom))]
    fn futex_wait(&self, timeout: Option<Duration>) -> Wait {
        crate::futex::wait(&self.word, SLEEPING, timeout)
    }

    #[cfg(not(loom))]
    fn futex_wake(&self) {
        crate::futex::wake_all(&self.word);
    }

    #[cfg(loom)]
    fn futex_wait(&self, _timeout: Option<Duration>) -> Wait {
        self.model.wait(&self.word, SLEEPING)
    }

    #[cfg(loom)]
    fn futex_wake(&self) {
        self.model.wake();
    }
}

impl std::fmt::Debug for Doorbell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doorbell")
            .field("word", &self.word.load(Ordering::Relaxed))
            .finish()
    }
}

/// The futex modelled for loom with the kernel's semantics: the value check
/// and the sleep are atomic with respect to wake (timeouts are not modelled).
#[cfg(loom)]
mod loom_futex {
    use loom::sync::{Condvar, Mutex};

    use crate::sync::{AtomicU32, Ordering, Wait};

    pub(super) struct Futex {
        lock: Mutex<()>,
        cv: Condvar,
    }

    impl Futex {
        pub(super) fn new() -> Self {
            Futex {
                lock: Mutex::new(()),
                cv: Condvar::new(),
            }
        }

        pub(super) fn wait(&self, word: &AtomicU32, expected: u32) -> Wait {
            let guard = self.lock.lock().expect("futex model lock");
            if word.load(Ordering::SeqCst) != expected {
                return Wait::Woken;
            }
            drop(self.cv.wait(guard).expect("futex model wait"));
            Wait::Woken
        }

        pub(super) fn wake(&self) {
            let _guard = self.lock.lock().expect("futex model lock");
            self.cv.notify_all();
        }
    }
}
