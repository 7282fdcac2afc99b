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

impl PeerId {
    /// Packs the link (session), the peer's shard and its endpoint id.
    pub(crate) const fn pack(session: u16, shard: u16, endpoint: u32) -> Self {
        PeerId(((session as u64) << 48) | ((shard as u64) << 32) | endpoint as u64)
    }

    pub(crate) const fn session(self) -> u16 {
        (self.0 >> 48) as u16
    }

    pub(crate) const fn shard(self) -> u16 {
        (self.0 >> 32) as u16
    }

    pub(crate) const fn endpoint(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer#{}", self.0)
    }
}
