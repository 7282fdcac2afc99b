//! A cheap clock for per-round-trip samples. Reading the monotonic clock
//! costs about 20 ns, which would land inside every measured round trip; on
//! x86_64 with an invariant time-stamp counter we read the counter instead
//! (as `ucx_perftest` does) and convert ticks to nanoseconds with a rate
//! calibrated against the monotonic clock at start.

use std::time::{Duration, Instant};

/// Ticks of whichever counter [`Clock`] reads.
pub type Ticks = u64;

/// Converts counter ticks to nanoseconds.
#[derive(Clone, Copy)]
pub struct Clock {
    /// Nanoseconds per tick; `None`: the counter is the monotonic clock in ns.
    ns_per_tick: Option<f64>,
    origin: Instant,
}

impl Clock {
    /// Calibrates the counter for about 20 ms, or falls back to `Instant`.
    pub fn calibrate() -> Clock {
        let origin = Instant::now();
        let ns_per_tick = tsc::usable().then(|| {
            let (t0, c0) = (Instant::now(), tsc::read());
            std::thread::sleep(Duration::from_millis(20));
            let (t1, c1) = (Instant::now(), tsc::read());
            (t1 - t0).as_nanos() as f64 / (c1.wrapping_sub(c0)).max(1) as f64
        });
        Clock {
            ns_per_tick,
            origin,
        }
    }

    /// The counter now.
    #[inline]
    pub fn now(&self) -> Ticks {
        match self.ns_per_tick {
            Some(_) => tsc::read(),
            None => self.origin.elapsed().as_nanos() as u64,
        }
    }

    /// Nanoseconds between two readings.
    #[inline]
    pub fn nanos(&self, from: Ticks, to: Ticks) -> u64 {
        let ticks = to.saturating_sub(from);
        match self.ns_per_tick {
            Some(rate) => (ticks as f64 * rate) as u64,
            None => ticks,
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod tsc {
    /// Whether the counter ticks at a constant rate through sleep states, so
    /// that ticks convert to time (the cpuinfo flags Linux derives from CPUID).
    pub fn usable() -> bool {
        std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
            info.lines()
                .find(|l| l.starts_with("flags"))
                .is_some_and(|l| l.contains(" constant_tsc") && l.contains(" nonstop_tsc"))
        })
    }

    #[inline]
    pub fn read() -> u64 {
        // SAFETY: RDTSC has no preconditions on x86_64; the measuring thread is
        // pinned, so successive readings come from one core's counter.
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_rdtsc()
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod tsc {
    pub fn usable() -> bool {
        false
    }

    pub fn read() -> u64 {
        0
    }
}
