//! The shared-memory link between two engine instances on one node: one
//! segment holding a ring for every (sender shard, receiver shard) pair in
//! each direction, so all endpoint pairs between two shards share one ring.

use std::sync::Arc;

use comm_shm::{Consumer, Producer, Ring, RingConfig, Segment};

use crate::Error;

/// Slots per ring and bytes per slot.
const RING_SLOTS: u32 = 1024;
const SLOT_SIZE: u32 = 512;

fn config() -> RingConfig {
    RingConfig::new(RING_SLOTS, SLOT_SIZE).expect("constant ring shape is valid")
}

/// Where each ring sits in a pair segment created by an initiator with
/// `a` shards toward an acceptor with `b` shards.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PairLayout {
    pub a: usize,
    pub b: usize,
}

impl PairLayout {
    fn stride() -> usize {
        config().region_len().next_multiple_of(128)
    }

    pub(crate) fn len(&self) -> usize {
        2 * self.a * self.b * Self::stride()
    }

    /// Offset of the ring from initiator shard `a` to acceptor shard `b`.
    fn forward(&self, a: usize, b: usize) -> usize {
        (a * self.b + b) * Self::stride()
    }

    /// Offset of the ring from acceptor shard `b` to initiator shard `a`.
    fn backward(&self, b: usize, a: usize) -> usize {
        (self.a * self.b + b * self.a + a) * Self::stride()
    }

    /// Creates the segment and all its rings (initiator side).
    pub(crate) fn create(&self, name: &str) -> Result<Arc<Segment>, Error> {
        let seg = Arc::new(Segment::create(name, self.len())?);
        for a in 0..self.a {
            for b in 0..self.b {
                Ring::create(&seg, self.forward(a, b), config())?;
                Ring::create(&seg, self.backward(b, a), config())?;
            }
        }
        seg.mark_ready();
        Ok(seg)
    }

    /// The rings one shard uses: producers toward each peer shard, consumers
    /// from each peer shard, both indexed by peer shard.
    pub(crate) fn attach(
        &self,
        seg: &Arc<Segment>,
        initiator: bool,
        shard: usize,
    ) -> Result<(Vec<Producer>, Vec<Consumer>), Error> {
        let peers = if initiator { self.b } else { self.a };
        let mut tx = Vec::with_capacity(peers);
        let mut rx = Vec::with_capacity(peers);
        for p in 0..peers {
            let (out, inn) = if initiator {
                (self.forward(shard, p), self.backward(p, shard))
            } else {
                (self.backward(shard, p), self.forward(p, shard))
            };
            let mut producer = Ring::open(seg, out)?.producer()?;
            // The peer parks on its shard's doorbell, rung once per batch.
            producer.set_notify(false);
            tx.push(producer);
            rx.push(Ring::open(seg, inn)?.consumer()?);
        }
        Ok((tx, rx))
    }
}

/// Largest payload that travels inline in a ring slot behind the frame header.
pub(crate) fn inline_max() -> usize {
    config().max_payload() - crate::HEADER_LEN
}
