//! What each submitted operation is, packed into the 64-bit user data that
//! the kernel hands back in its completions.

/// The kinds of operation this crate submits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// A multishot receive (stream) or multishot recvmsg (datagram).
    Recv = 1,
    /// A copied send (stream) or sendmsg (datagram).
    Send = 2,
    /// A zero-copy send; `aux` is its notification slot.
    SendZc = 3,
    /// A cancellation request; its own completion means nothing to us.
    Cancel = 4,
    /// The futex wait armed by `park`.
    Futex = 5,
}

/// Layout: bits 0..32 the connection id, 32..56 `aux`, 56..64 the op.
pub(crate) fn encode(op: Op, conn: u32, aux: u32) -> u64 {
    u64::from(conn) | (u64::from(aux & 0x00ff_ffff) << 32) | ((op as u64) << 56)
}

/// The inverse of [`encode`]; `None` for user data we never produced.
pub(crate) fn decode(user_data: u64) -> Option<(Op, u32, u32)> {
    let op = match user_data >> 56 {
        1 => Op::Recv,
        2 => Op::Send,
        3 => Op::SendZc,
        4 => Op::Cancel,
        5 => Op::Futex,
        _ => return None,
    };
    Some((
        op,
        user_data as u32,
        ((user_data >> 32) as u32) & 0x00ff_ffff,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for op in [Op::Recv, Op::Send, Op::SendZc, Op::Cancel, Op::Futex] {
            let ud = encode(op, 0xdead_beef, 0x00ab_cdef);
            assert_eq!(decode(ud), Some((op, 0xdead_beef, 0x00ab_cdef)));
        }
        assert_eq!(decode(0), None);
    }
}
