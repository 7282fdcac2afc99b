//! Sizes and limits of one ring.

/// Sizes and limits of one [`Uring`](crate::Uring).
///
/// Every buffer named here is allocated when the ring (or its first UDP
/// socket) is created and then reused; none grows per message.
///
/// ```
/// use comm_uring::UringConfig;
/// let cfg = UringConfig { recv_bufs: 64, ..UringConfig::default() };
/// assert_eq!(cfg.recv_buf_len, 64 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringConfig {
    /// Submission queue entries; the completion queue gets eight times as
    /// many, since multishot receives post many completions per request.
    pub entries: u32,
    /// Size of each TCP receive buffer. A record that fits inside the data
    /// of one receive is handed out in place; larger or straddling records
    /// are copied once.
    pub recv_buf_len: u32,
    /// How many TCP receive buffers the ring shares among all its streams;
    /// a power of two, at most 32768.
    pub recv_bufs: u16,
    /// How many UDP receive buffers (each big enough for the largest
    /// datagram, about 64 KiB) are mapped when the first UDP socket is
    /// added; a power of two, at most 32768.
    pub dgram_bufs: u16,
    /// Longest record (header included) a stream may carry; a peer that
    /// announces a longer one is disconnected.
    pub max_record: usize,
    /// Per connection: once this many bytes are queued and unsent, further
    /// sends return [`SendError::Full`](crate::SendError::Full). A single
    /// record larger than the limit is still accepted into an empty queue.
    pub send_queue_limit: usize,
    /// Whether [`send_zc`](crate::Uring::send_zc) uses `SendZc` toward a
    /// stream peer on this host too (a loopback address or one of ours).
    /// Such traffic crosses the loopback device, which copies zero-copy
    /// pages anyway after pinning them, so `false` sends them with a plain
    /// copying send instead: faster there, and `SendDone` still comes only
    /// once the kernel is done with the memory.
    pub zero_copy_to_local_peers: bool,
}

impl Default for UringConfig {
    /// 256 SQ entries, 128 receive buffers of 64 KiB (8 MiB), 32 datagram
    /// buffers, records up to 64 MiB, 4 MiB of send queue per connection,
    /// zero-copy sends to every peer.
    fn default() -> Self {
        UringConfig {
            entries: 256,
            recv_buf_len: 64 * 1024,
            recv_bufs: 128,
            dgram_bufs: 32,
            max_record: 64 << 20,
            send_queue_limit: 4 << 20,
            zero_copy_to_local_peers: true,
        }
    }
}
