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
    /// A transport the application registered with
    /// [`EngineBuilder::transport`](crate::EngineBuilder::transport), by name.
    Custom(&'static str),
}

impl TransportKind {
    /// Every built-in kind, in auto-selection preference order.
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
            TransportKind::Custom(name) => name,
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

/// Which transports an engine may use: chosen automatically per peer, or an
/// explicit list (in preference order) that the peer must meet.
///
/// ```
/// use comm::{TransportKind, Transports};
/// assert!(Transports::Auto.allows(TransportKind::Shm));
/// assert!(!Transports::Auto.allows(TransportKind::Udp)); // UDP only when asked for
/// let only = Transports::only([TransportKind::Tcp]);
/// assert_eq!(only.candidates(), vec![TransportKind::Tcp]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Transports {
    /// Shared memory on the same node, verbs where both sides have a device,
    /// TCP otherwise. Never UDP.
    #[default]
    Auto,
    /// Exactly these, tried in this order.
    Only(Vec<TransportKind>),
}

impl Transports {
    /// An explicit list, in preference order (duplicates are dropped).
    ///
    /// ```
    /// use comm::{TransportKind::*, Transports};
    /// assert_eq!(Transports::only([Udp, Tcp, Udp]), Transports::Only(vec![Udp, Tcp]));
    /// ```
    pub fn only(kinds: impl IntoIterator<Item = TransportKind>) -> Self {
        let mut list = Vec::new();
        for k in kinds {
            if !list.contains(&k) {
                list.push(k);
            }
        }
        Transports::Only(list)
    }

    /// The allowed kinds in preference order.
    ///
    /// ```
    /// use comm::{TransportKind::*, Transports};
    /// assert_eq!(Transports::Auto.candidates(), vec![Shm, Verbs, Tcp]);
    /// ```
    pub fn candidates(&self) -> Vec<TransportKind> {
        match self {
            Transports::Auto => vec![TransportKind::Shm, TransportKind::Verbs, TransportKind::Tcp],
            Transports::Only(list) => list.clone(),
        }
    }

    /// Whether `kind` may be used.
    ///
    /// ```
    /// use comm::{TransportKind, Transports};
    /// assert!(Transports::only([TransportKind::Udp]).allows(TransportKind::Udp));
    /// ```
    pub fn allows(&self, kind: TransportKind) -> bool {
        self.candidates().contains(&kind)
    }
}

impl FromStr for Transports {
    type Err = crate::Error;

    /// `auto`, or a comma-separated list such as `shm,tcp` (the syntax of `COMM_TRANSPORTS`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(Transports::Auto);
        }
        let kinds = s
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<TransportKind>, _>>()?;
        Ok(Transports::only(kinds))
    }
}

/// Picks the transports for one peer, best first: the caller tries them in
/// order and falls back to the next when one fails to set up a link.
///
/// `ours` is what this engine allows, `our_offer` and `their_offer` what each
/// side can actually run (built in, with the hardware present), and
/// `same_node` whether both run on one node. Fails with
/// [`Error::NoTransport`](crate::Error::NoTransport) when nothing fits.
///
/// ```
/// use comm::{select_transports, TransportKind::*, Transports};
/// let both = [Shm, Tcp, Udp];
/// assert_eq!(select_transports(&Transports::Auto, &both, &both, true)?, vec![Shm, Tcp]);
/// assert_eq!(select_transports(&Transports::Auto, &both, &both, false)?, vec![Tcp]);
/// assert!(select_transports(&Transports::only([Udp]), &both, &[Shm, Tcp], true).is_err());
/// # Ok::<(), comm::Error>(())
/// ```
pub fn select_transports(
    ours: &Transports,
    our_offer: &[TransportKind],
    their_offer: &[TransportKind],
    same_node: bool,
) -> Result<Vec<TransportKind>, crate::Error> {
    let chosen: Vec<TransportKind> = ours
        .candidates()
        .into_iter()
        .filter(|k| our_offer.contains(k) && their_offer.contains(k))
        .filter(|&k| k != TransportKind::Shm || same_node)
        .collect();
    if chosen.is_empty() {
        return Err(crate::Error::NoTransport {
            // What this side could have run, not merely what it allows.
            wanted: ours
                .candidates()
                .into_iter()
                .filter(|k| our_offer.contains(k))
                .collect(),
            available: their_offer.to_vec(),
        });
    }
    Ok(chosen)
}

/// How a UDP link carries messages (the initiator of a link chooses).
///
/// ```
/// use comm::{Engine, UdpMode};
/// let b = Engine::builder("kv").udp_mode(UdpMode::Datagram);
/// assert_eq!(UdpMode::default(), UdpMode::Reliable);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UdpMode {
    /// Ordered, exactly once, any size: sequence numbers, acknowledgements,
    /// retransmission and fragmentation over datagrams.
    #[default]
    Reliable,
    /// Datagram semantics: each message is one datagram (at most
    /// [`UdpMode::MAX_DATAGRAM`] bytes with its header); messages may be
    /// lost, duplicated or reordered by the network.
    Datagram,
}

impl UdpMode {
    /// Largest datagram (comm frame header included) in `Datagram` mode.
    ///
    /// ```
    /// use comm::{UdpMode, HEADER_LEN};
    /// // The largest message one datagram carries in `Datagram` mode:
    /// let payload = UdpMode::MAX_DATAGRAM - HEADER_LEN;
    /// assert!(payload > 60_000);
    /// ```
    pub const MAX_DATAGRAM: usize = 65_507;

    pub(crate) fn name(self) -> &'static str {
        match self {
            UdpMode::Reliable => "reliable",
            UdpMode::Datagram => "datagram",
        }
    }

    pub(crate) fn from_name(s: &str) -> Option<UdpMode> {
        [UdpMode::Reliable, UdpMode::Datagram]
            .into_iter()
            .find(|m| m.name() == s)
    }
}
