//! Retransmission timeout estimation (RFC 6298, plus the peer's ack delay as
//! in QUIC's probe timeout, because our acks may be delayed on purpose).

/// Clock granularity term `G` of RFC 6298: the timeout exceeds the smoothed
/// round trip by at least this much even when the variance is zero.
const GRANULARITY_NS: u64 = 1_000;

/// Largest backoff exponent; the ceiling clamps long before it matters.
const MAX_BACKOFF: u32 = 20;

#[derive(Debug, Clone)]
pub(crate) struct RttEstimator {
    srtt: u64,
    rttvar: u64,
    min_rtt: u64,
    sampled: bool,
    initial: u64,
    min: u64,
    max: u64,
    ack_delay: u64,
    backoff: u32,
}

impl RttEstimator {
    pub(crate) fn new(initial: u64, min: u64, max: u64, ack_delay: u64) -> Self {
        RttEstimator {
            srtt: 0,
            rttvar: 0,
            min_rtt: u64::MAX,
            sampled: false,
            initial,
            min,
            max,
            ack_delay,
            backoff: 0,
        }
    }

    /// Folds in one round-trip sample. Callers give only samples of
    /// datagrams sent once (Karn's rule): an ack of a retransmitted one
    /// cannot say which copy it answers.
    pub(crate) fn on_sample(&mut self, rtt: u64) {
        self.min_rtt = self.min_rtt.min(rtt);
        if self.sampled {
            let err = self.srtt.abs_diff(rtt);
            self.rttvar = (self.rttvar.saturating_mul(3).saturating_add(err)) / 4;
            self.srtt = (self.srtt.saturating_mul(7).saturating_add(rtt)) / 8;
        } else {
            self.srtt = rtt;
            self.rttvar = rtt / 2;
            self.sampled = true;
        }
    }

    /// The timeout to arm now, backoff included.
    pub(crate) fn rto(&self) -> u64 {
        let base = if self.sampled {
            self.srtt
                .saturating_add((self.rttvar.saturating_mul(4)).max(GRANULARITY_NS))
                .saturating_add(self.ack_delay)
        } else {
            self.initial
        };
        base.clamp(self.min, self.max)
            .saturating_mul(1 << self.backoff)
            .min(self.max)
    }

    /// Doubles the timeout after it expired (RFC 6298 5.5).
    pub(crate) fn back_off(&mut self) {
        self.backoff = (self.backoff + 1).min(MAX_BACKOFF);
    }

    /// Undoes the backoff once the peer is heard from again.
    pub(crate) fn reset_backoff(&mut self) {
        self.backoff = 0;
    }

    /// The smoothed round trip, once measured.
    pub(crate) fn srtt(&self) -> Option<u64> {
        self.sampled.then_some(self.srtt)
    }

    /// The shortest round trip measured.
    pub(crate) fn min_rtt(&self) -> Option<u64> {
        self.sampled.then_some(self.min_rtt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn est() -> RttEstimator {
        RttEstimator::new(50 * MS, MS, 1000 * MS, 0)
    }

    #[test]
    fn the_initial_timeout_applies_until_a_sample() {
        let e = est();
        assert_eq!(e.rto(), 50 * MS);
        assert_eq!(e.srtt(), None);
    }

    #[test]
    fn the_first_sample_sets_srtt_and_half_variance() {
        let mut e = est();
        e.on_sample(10 * MS);
        assert_eq!(e.srtt(), Some(10 * MS));
        assert_eq!(e.min_rtt(), Some(10 * MS));
        // srtt + 4 * (srtt / 2)
        assert_eq!(e.rto(), 30 * MS);
    }

    #[test]
    fn steady_samples_converge_to_the_floor() {
        let mut e = est();
        for _ in 0..200 {
            e.on_sample(100_000);
        }
        assert_eq!(e.srtt(), Some(100_000));
        assert_eq!(e.rto(), MS);
    }

    #[test]
    fn the_ack_delay_is_added() {
        let mut e = RttEstimator::new(50 * MS, MS, 1000 * MS, 3 * MS);
        e.on_sample(10 * MS);
        assert_eq!(e.rto(), 33 * MS);
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling_and_resets() {
        let mut e = est();
        e.back_off();
        assert_eq!(e.rto(), 100 * MS);
        for _ in 0..40 {
            e.back_off();
        }
        assert_eq!(e.rto(), 1000 * MS);
        e.reset_backoff();
        assert_eq!(e.rto(), 50 * MS);
    }

    #[test]
    fn huge_samples_saturate_instead_of_overflowing() {
        let mut e = est();
        e.on_sample(u64::MAX);
        e.on_sample(u64::MAX);
        e.on_sample(0);
        assert_eq!(e.rto(), 1000 * MS);
    }
}
