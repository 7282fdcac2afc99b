//! Transports the application brings: the public [`Transport`] and
//! [`Connection`] traits, and how a shard drives such connections. They run
//! off the built-in fast path, through trait objects, but with the same
//! guarantees: frames in order, exactly once, backpressure instead of loss.

use std::collections::VecDeque;
use std::io;

use crate::net::Route;
use crate::Error;

/// A way to carry frames between two engines that comm does not build in:
/// register it on both sides with
/// [`EngineBuilder::transport`](crate::EngineBuilder::transport) and ask for
/// it with `Transports::only([TransportKind::Custom(name)])`.
///
/// The engine calls [`Transport::listen`] once at start and offers the
/// address it returns to peers in the handshake. For each link it opens one
/// connection per (its shard, peer shard) pair with [`Transport::connect`];
/// the peer's control thread picks them up with [`Transport::accept`].
/// Connections carry whole frames (a frame is a byte string of up to the
/// pool's largest buffer plus a 32-byte header); the transport keeps their
/// boundaries and order.
///
/// `examples/uds_transport.rs` implements one over Unix-domain sockets.
///
/// ```
/// use std::io;
/// use comm::{Connection, Transport};
///
/// /// A transport that cannot reach anyone (for the shape of the trait).
/// struct Nowhere;
///
/// impl Transport for Nowhere {
///     fn name(&self) -> &'static str {
///         "nowhere"
///     }
///     fn listen(&self) -> io::Result<String> {
///         Ok("nowhere".into())
///     }
///     fn connect(&self, _addr: &str) -> io::Result<Box<dyn Connection>> {
///         Err(io::ErrorKind::Unsupported.into())
///     }
///     fn accept(&self) -> io::Result<Option<Box<dyn Connection>>> {
///         Ok(None)
///     }
/// }
/// assert_eq!(Nowhere.name(), "nowhere");
/// ```
pub trait Transport: Send + Sync + 'static {
    /// The name both engines register the transport under: 1 to 32
    /// characters of `[a-z0-9-]`, not one of the built-in names.
    fn name(&self) -> &'static str;

    /// Starts accepting connections and returns the address peers use to
    /// reach this engine (at most 1 KiB), handed to them in the handshake.
    fn listen(&self) -> io::Result<String>;

    /// Opens a connection to the peer listening at `addr`. May block for a
    /// short while (the control plane calls it, never a progress thread).
    fn connect(&self, addr: &str) -> io::Result<Box<dyn Connection>>;

    /// A connection a peer opened, if one is waiting. Must not block.
    fn accept(&self) -> io::Result<Option<Box<dyn Connection>>>;
}

/// One bidirectional channel between two shards of two engines, carrying
/// whole frames in order. Called from one progress thread at a time; must
/// never block.
///
/// ```
/// use std::collections::VecDeque;
/// use std::io;
/// use comm::Connection;
///
/// /// A loopback: what is sent is received.
/// #[derive(Default)]
/// struct Echo(VecDeque<Vec<u8>>);
///
/// impl Connection for Echo {
///     fn send(&mut self, frame: &[u8]) -> io::Result<()> {
///         self.0.push_back(frame.to_vec());
///         Ok(())
///     }
///     fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
///         let n = self.0.len();
///         while let Some(frame) = self.0.pop_front() {
///             f(&frame);
///         }
///         Ok(n)
///     }
/// }
/// let mut c = Echo::default();
/// c.send(b"frame")?;
/// let mut got = Vec::new();
/// assert_eq!(c.recv(&mut |f| got.push(f.to_vec()))?, 1);
/// assert_eq!(got, [b"frame".to_vec()]);
/// # Ok::<(), io::Error>(())
/// ```
pub trait Connection: Send {
    /// Queues one whole frame. `Err(WouldBlock)`: it cannot take the frame
    /// now (nothing was queued; the engine retries later). Any other error
    /// ends the link.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;

    /// Hands every whole frame that has arrived to `f`, in order, and
    /// returns how many. Returns `Ok(0)` at once when none has. An error,
    /// or the end of the stream, ends the link.
    fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> io::Result<usize>;
}

/// Whether a custom transport name is acceptable.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !["shm", "verbs", "tcp", "udp", "auto"].contains(&name)
}

/// A shard's connections of custom links.
#[derive(Default)]
pub(crate) struct Customs {
    pub conns: Vec<Option<(Route, Box<dyn Connection>)>>,
    /// Frames kept back because their endpoint could not take them yet, by
    /// connection slot; later frames of that connection wait behind them.
    pub deferred: VecDeque<(usize, Vec<u8>)>,
}

impl Customs {
    pub(crate) fn add(&mut self, route: Route, conn: Box<dyn Connection>) -> usize {
        match self.conns.iter().position(Option::is_none) {
            Some(i) => {
                self.conns[i] = Some((route, conn));
                i
            }
            None => {
                self.conns.push(Some((route, conn)));
                self.conns.len() - 1
            }
        }
    }

    /// Drops every connection of `session`.
    pub(crate) fn close_session(&mut self, session: u16) {
        for c in &mut self.conns {
            if c.as_ref().is_some_and(|(r, _)| r.session == session) {
                *c = None;
            }
        }
    }
}

/// Frames staged toward custom connections, handed over after each pass.
pub(crate) struct CustomOut {
    items: VecDeque<(usize, std::ops::Range<usize>)>,
    bytes: Vec<u8>,
    /// Bytes staged per connection.
    queued: Vec<usize>,
    limit: usize,
}

impl CustomOut {
    pub(crate) fn new(limit: usize) -> Self {
        CustomOut {
            items: VecDeque::new(),
            bytes: Vec::new(),
            queued: Vec::new(),
            limit,
        }
    }

    /// Stages one frame (header and inline bytes) toward connection `conn`.
    pub(crate) fn frame(
        &mut self,
        conn: usize,
        head: &[u8],
        inline: &[u8],
        spill: bool,
    ) -> Result<(), Error> {
        if self.queued.len() <= conn {
            self.queued.resize(conn + 1, 0);
        }
        let len = head.len() + inline.len();
        let limit = if spill { self.limit * 16 } else { self.limit };
        if self.queued[conn] > 0 && self.queued[conn] + len > limit {
            return Err(Error::Full);
        }
        self.queued[conn] += len;
        let start = self.bytes.len();
        self.bytes.extend_from_slice(head);
        self.bytes.extend_from_slice(inline);
        self.items.push_back((conn, start..self.bytes.len()));
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Hands staged frames to their connections in order; a connection that
    /// pushes back keeps the rest of its frames. Returns the sessions whose
    /// connection failed.
    pub(crate) fn flush(&mut self, customs: &mut Customs, mut failed: impl FnMut(u16)) {
        let mut blocked: Option<usize> = None;
        for _ in 0..self.items.len() {
            let Some((conn, range)) = self.items.pop_front() else {
                break;
            };
            if blocked == Some(conn) {
                self.items.push_back((conn, range));
                continue;
            }
            let Some(Some((route, c))) = customs.conns.get_mut(conn) else {
                self.queued[conn] = 0;
                continue; // gone with its link
            };
            match c.send(&self.bytes[range.clone()]) {
                Ok(()) => self.queued[conn] -= range.len(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = Some(conn);
                    self.items.push_back((conn, range));
                }
                Err(e) => {
                    tracing::warn!(session = route.session, "custom connection failed: {e}");
                    self.queued[conn] = 0;
                    failed(route.session);
                }
            }
        }
        crate::net::compact(&mut self.items, &mut self.bytes, |(_, r)| Some(r));
    }
}

/// The transports registered on a builder (shown by name).
#[derive(Clone, Default)]
pub(crate) struct Registered(pub Vec<std::sync::Arc<dyn Transport>>);

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|t| t.name()))
            .finish()
    }
}
