use std::fmt;
use std::str::FromStr;

/// The concrete ways comm can reach a peer.
///
/// ```
/// use comm::TransportKind;
/// let t: TransportKind = "tcp".parse()?;
/// assert_eq!(t, TransportKind::Tcp);
/// assert_eq!(TransportKind::Shm.to_string(), "shm");
/// # Ok::<(), comm::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransportKind {
    /// Shared memory between processes on the same node.
    Shm,
    /// InfiniBand verbs (RC queue pairs).
    Verbs,
    /// TCP through io_uring.
    Tcp,
    /// UDP through io_uring, reliable or datagram mode.
    Udp,
}

impl TransportKind {
    /// Every kind, in auto-selection preference order.
    ///
    /// ```
    /// assert_eq!(comm::TransportKind::ALL[0], comm::TransportKind::Shm);
    /// ```
    pub const ALL: [TransportKind; 4] = [
        TransportKind::Shm,
        TransportKind::Verbs,
        TransportKind::Tcp,
        TransportKind::Udp,
    ];

    /// The lowercase name used in addresses, `COMM_TRANSPORTS` and `--transport`.
    ///
    /// ```
    /// assert_eq!(comm::TransportKind::Verbs.name(), "verbs");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            TransportKind::Shm => "shm",
            TransportKind::Verbs => "verbs",
            TransportKind::Tcp => "tcp",
            TransportKind::Udp => "udp",
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TransportKind {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TransportKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| crate::Error::BadAddress {
                addr: s.to_owned(),
                reason: "unknown transport; expected shm, verbs, tcp or udp",
            })
    }
}
