use std::fmt;

/// Identifies a connected peer endpoint from the point of view of a local
/// endpoint; returned by `connect` and carried by every received message.
///
/// ```
/// use comm::PeerId;
/// let p = PeerId::new(7);
/// assert_eq!(p.get(), 7);
/// assert_eq!(p.to_string(), "peer#7");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId(u64);

impl PeerId {
    /// Wraps a raw id.
    ///
    /// ```
    /// assert_eq!(comm::PeerId::new(3), comm::PeerId::new(3));
    /// ```
    pub const fn new(raw: u64) -> Self {
        PeerId(raw)
    }

    /// The raw id.
    ///
    /// ```
    /// assert_eq!(comm::PeerId::new(3).get(), 3);
    /// ```
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}
