//! Wrapping datagram sequence numbers.
//!
//! Sequence numbers are 32 bits and wrap, so `<` on the raw value breaks at
//! the wrap point. They are compared by signed distance instead (serial
//! number arithmetic, RFC 1982), which is sound while the two numbers are
//! less than 2^31 apart; the window cap (2^15) keeps every comparison the
//! protocol makes far inside that.

use std::fmt;

/// A datagram sequence number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Seq(u32);

impl Seq {
    pub(crate) const fn new(v: u32) -> Seq {
        Seq(v)
    }

    pub(crate) const fn get(self) -> u32 {
        self.0
    }

    /// The number `n` steps later.
    pub(crate) const fn plus(self, n: u32) -> Seq {
        Seq(self.0.wrapping_add(n))
    }

    /// Signed distance from `earlier` to `self`: negative when `self` comes
    /// first.
    pub(crate) const fn since(self, earlier: Seq) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }

    /// Unsigned distance from `base` to `self`. A number before `base` comes
    /// out huge, so `s.offset_from(base) < window` is the whole window test.
    pub(crate) const fn offset_from(self, base: Seq) -> u32 {
        self.0.wrapping_sub(base.0)
    }

    /// Whether `self` comes strictly before `other`.
    pub(crate) const fn before(self, other: Seq) -> bool {
        self.since(other) < 0
    }
}

impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Seq;

    #[test]
    fn ordering_holds_across_the_wrap_point() {
        let last = Seq::new(u32::MAX);
        let first = last.plus(1);
        assert_eq!(first, Seq::new(0));
        assert!(last.before(first));
        assert!(!first.before(last));
        assert_eq!(first.since(last), 1);
        assert_eq!(last.since(first), -1);
        assert_eq!(Seq::new(5).since(Seq::new(u32::MAX - 4)), 10);
    }

    #[test]
    fn offset_from_is_huge_for_numbers_behind_the_base() {
        let base = Seq::new(3);
        assert_eq!(Seq::new(10).offset_from(base), 7);
        assert!(Seq::new(2).offset_from(base) > 1 << 31);
        let base = Seq::new(u32::MAX - 1);
        assert_eq!(Seq::new(1).offset_from(base), 3);
    }

    #[test]
    fn a_number_is_not_before_itself() {
        for v in [0, 1, 1 << 31, u32::MAX] {
            let s = Seq::new(v);
            assert!(!s.before(s));
            assert_eq!(s.since(s), 0);
            assert_eq!(s.plus(0), s);
        }
    }

    #[test]
    fn distances_up_to_half_the_space_compare_correctly() {
        for base in [0u32, 12345, u32::MAX - 7, 1 << 31] {
            let b = Seq::new(base);
            for d in [1u32, 2, 1000, (1 << 15) + 1, (1 << 31) - 1] {
                assert!(b.before(b.plus(d)), "{base} + {d}");
                assert_eq!(b.plus(d).since(b), d as i32);
            }
        }
    }
}
