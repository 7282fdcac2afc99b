//! Lanes: the several TCP connections that carry one shard pair of a TCP
//! link (see `control::net_link::TCP_LANES`).
//!
//! The sender puts every frame on its *current* lane. Before a large
//! message it moves on to the next lane, announcing the move with a `Lane`
//! frame on the lane it leaves. The receiver reads only its current lane
//! and follows the announcements, so frames arrive in the order they were
//! sent without sequence numbers or reordering buffers: what the sender
//! writes on a lane the receiver is not reading waits in that socket, and
//! the kernel moves both lanes at once. Small messages stay where they are,
//! so a conversation of small messages never switches.

use crate::{FrameHeader, FrameKind};

/// Messages from this size on move to the next lane.
pub(crate) const LANE_MIN: u32 = 256 << 10;

/// The sending side of one shard pair's lanes; `C` names a connection
/// (a `comm_uring::ConnId` in the engine).
#[derive(Debug)]
pub(crate) struct TxLanes<C> {
    conns: Vec<Option<C>>,
    current: u8,
}

impl<C> Default for TxLanes<C> {
    fn default() -> Self {
        TxLanes {
            conns: Vec::new(),
            current: 0,
        }
    }
}

impl<C: Copy> TxLanes<C> {
    /// Records `conn` as lane `lane` of `lanes`.
    pub(crate) fn attach(&mut self, lane: u8, lanes: u8, conn: C) {
        let lanes = usize::from(lanes.max(lane + 1));
        if self.conns.len() < lanes {
            self.conns.resize(lanes, None);
        }
        self.conns[usize::from(lane)] = Some(conn);
    }

    /// Whether every lane is attached and `f` holds for each.
    pub(crate) fn all(&self, f: impl Fn(C) -> bool) -> bool {
        !self.conns.is_empty() && self.conns.iter().all(|c| c.is_some_and(&f))
    }

    /// The connection frames go on now.
    pub(crate) fn current(&self) -> Option<C> {
        self.conns.get(usize::from(self.current)).copied().flatten()
    }

    /// The lane a frame with `header` should move to first, if any: the
    /// next one, for a large message once every lane is attached, when
    /// `room` says that lane's connection takes the message now (a message
    /// that must wait is better kept where it is than announced elsewhere:
    /// announcements of messages not sent yet would pile up).
    pub(crate) fn next_for(
        &self,
        header: &FrameHeader,
        room: impl FnOnce(C) -> bool,
    ) -> Option<u8> {
        let bulk = matches!(header.kind(), Some(FrameKind::Data | FrameKind::Descriptor))
            && header.len() >= LANE_MIN;
        if !bulk || self.conns.len() < 2 || self.conns.iter().any(Option::is_none) {
            return None;
        }
        let next = (usize::from(self.current) + 1) % self.conns.len();
        let conn = self.conns[next]?;
        room(conn).then_some(next as u8)
    }

    /// Makes `lane` the current lane (after its `Lane` frame went out).
    pub(crate) fn switch(&mut self, lane: u8) {
        self.current = lane;
    }

    /// Forgets `conn`, which closed. `true`: it was the current lane, so
    /// nothing more can be sent; otherwise the sender stays where it is
    /// from now on (a move needs every lane).
    pub(crate) fn detach(&mut self, conn: C) -> bool
    where
        C: PartialEq,
    {
        let Some(i) = self.conns.iter().position(|c| *c == Some(conn)) else {
            return false;
        };
        self.conns[i] = None;
        i == usize::from(self.current)
    }
}

/// The `Lane` frame that announces a move to `lane`.
pub(crate) fn announcement(lane: u8) -> FrameHeader {
    FrameHeader::new(FrameKind::Lane, 0, 0, 0, 0).with_aux(u64::from(lane))
}

/// The lane a received frame announces, if it is a `Lane` frame.
pub(crate) fn announced(frame: &[u8]) -> Option<u64> {
    let header = FrameHeader::decode(frame, u32::MAX).ok()?;
    (header.kind() == Some(FrameKind::Lane)).then(|| header.aux())
}

/// The receiving side of one shard pair's lanes.
#[derive(Debug, Clone)]
struct RxPath<C> {
    conns: Vec<Option<C>>,
    current: u8,
    /// Lanes whose connection closed while another was read (by bit).
    ended: u16,
}

impl<C> Default for RxPath<C> {
    fn default() -> Self {
        RxPath {
            conns: Vec::new(),
            current: 0,
            ended: 0,
        }
    }
}

/// Which lane the receiver reads now, for every shard pair of every link.
#[derive(Debug)]
pub(crate) struct RxLanes<C> {
    /// By session, then peer shard.
    paths: Vec<Vec<RxPath<C>>>,
}

impl<C> Default for RxLanes<C> {
    fn default() -> Self {
        RxLanes { paths: Vec::new() }
    }
}

/// Why a `Lane` frame could not be followed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LaneError {
    /// The link has no such lane: a broken peer.
    NoSuchLane,
    /// The lane's connection has closed: the peer is gone.
    Ended,
}

impl<C: Copy> RxLanes<C> {
    fn path(&self, session: u16, peer_shard: u16) -> Option<&RxPath<C>> {
        self.paths
            .get(usize::from(session))?
            .get(usize::from(peer_shard))
    }

    fn path_mut(&mut self, session: u16, peer_shard: u16) -> &mut RxPath<C> {
        let s = usize::from(session);
        if self.paths.len() <= s {
            self.paths.resize_with(s + 1, Vec::new);
        }
        let shards = &mut self.paths[s];
        let p = usize::from(peer_shard);
        if shards.len() <= p {
            shards.resize_with(p + 1, RxPath::default);
        }
        &mut shards[p]
    }

    /// Records `conn` as lane `lane` of `lanes`; `true` if it is the lane to
    /// read now (the others start paused).
    pub(crate) fn attach(
        &mut self,
        session: u16,
        peer_shard: u16,
        lane: u8,
        lanes: u8,
        conn: C,
    ) -> bool {
        let path = self.path_mut(session, peer_shard);
        let lanes = usize::from(lanes.max(lane + 1));
        if path.conns.len() < lanes {
            path.conns.resize(lanes, None);
        }
        path.conns[usize::from(lane)] = Some(conn);
        path.current == lane
    }

    /// Whether lane `lane` of the shard pair is the one to read now.
    pub(crate) fn is_current(&self, session: u16, peer_shard: u16, lane: u8) -> bool {
        self.path(session, peer_shard)
            .map_or(lane == 0, |p| p.current == lane)
    }

    /// Follows a `Lane` frame: the shard pair is read on `lane` from now on.
    /// Returns the connection left, if the lane changed and it is attached.
    pub(crate) fn follow(
        &mut self,
        session: u16,
        peer_shard: u16,
        lane: u64,
    ) -> Result<Option<C>, LaneError> {
        let path = self.path_mut(session, peer_shard);
        let lane = u8::try_from(lane)
            .ok()
            .filter(|&l| usize::from(l) < path.conns.len())
            .ok_or(LaneError::NoSuchLane)?;
        if path.ended & (1 << lane) != 0 {
            return Err(LaneError::Ended);
        }
        let left = std::mem::replace(&mut path.current, lane);
        if left == lane {
            return Ok(None);
        }
        Ok(path.conns[usize::from(left)])
    }

    /// Notes that lane `lane`'s connection closed. `true`: it is the lane
    /// read now, so the link is over; otherwise what the current lane still
    /// carries is read first, and the link is over only if the peer
    /// announces a move to the closed lane (a peer that stops closes every
    /// lane, in no particular order, after its last frames).
    pub(crate) fn end(&mut self, session: u16, peer_shard: u16, lane: u8) -> bool {
        let path = self.path_mut(session, peer_shard);
        if path.current == lane {
            return true;
        }
        path.ended |= 1 << lane;
        false
    }

    /// Forgets every shard pair of `session`.
    pub(crate) fn forget(&mut self, session: u16) {
        if let Some(shards) = self.paths.get_mut(usize::from(session)) {
            shards.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(i: u32) -> u32 {
        i
    }

    fn data(len: u32) -> FrameHeader {
        FrameHeader::new(FrameKind::Data, 1, 2, 0, len)
    }

    #[test]
    fn small_messages_never_switch() {
        let mut tx = TxLanes::default();
        tx.attach(0, 2, conn(1));
        tx.attach(1, 2, conn(2));
        assert_eq!(tx.next_for(&data(LANE_MIN - 1), |_| true), None);
        assert_eq!(tx.next_for(&announcement(1), |_| true), None);
        assert_eq!(tx.current(), Some(conn(1)));
    }

    #[test]
    fn large_messages_take_turns_once_every_lane_is_attached() {
        let mut tx = TxLanes::default();
        tx.attach(0, 2, conn(1));
        assert_eq!(
            tx.next_for(&data(LANE_MIN), |_| true),
            None,
            "lane 1 missing"
        );
        tx.attach(1, 2, conn(2));
        assert_eq!(tx.next_for(&data(LANE_MIN), |_| false), None, "no room");
        let next = tx.next_for(&data(LANE_MIN), |c| c == 2).expect("switch");
        assert_eq!(next, 1);
        tx.switch(next);
        assert_eq!(tx.current(), Some(conn(2)));
        assert_eq!(tx.next_for(&data(1 << 20), |_| true), Some(0));
    }

    #[test]
    fn one_lane_never_switches() {
        let mut tx = TxLanes::default();
        tx.attach(0, 1, conn(1));
        assert_eq!(tx.next_for(&data(16 << 20), |_| true), None);
    }

    #[test]
    fn the_receiver_follows_announcements_and_reports_the_lane_left() {
        let mut rx = RxLanes::default();
        assert!(rx.attach(3, 1, 0, 2, conn(10)));
        assert!(!rx.attach(3, 1, 1, 2, conn(11)), "lane 1 starts paused");
        assert!(rx.is_current(3, 1, 0));
        let lane = announced(announcement(1).as_bytes()).expect("a Lane frame");
        assert_eq!(rx.follow(3, 1, lane), Ok(Some(conn(10))));
        assert!(rx.is_current(3, 1, 1) && !rx.is_current(3, 1, 0));
        assert_eq!(rx.follow(3, 1, 1), Ok(None), "already there");
        assert_eq!(rx.follow(3, 1, 2), Err(LaneError::NoSuchLane));
        assert_eq!(rx.follow(3, 1, 256), Err(LaneError::NoSuchLane));
    }

    #[test]
    fn a_lane_attached_after_the_move_to_it_is_read_at_once() {
        let mut rx = RxLanes::default();
        assert!(rx.attach(0, 0, 0, 2, conn(1)));
        // The announcement came before lane 1's socket reached this shard:
        // the lane count is known from lane 0.
        assert_eq!(rx.follow(0, 0, 1), Ok(Some(conn(1))));
        assert!(rx.attach(0, 0, 1, 2, conn(2)));
    }

    #[test]
    fn a_closed_lane_ends_the_link_only_once_it_is_the_one_read() {
        let mut rx = RxLanes::default();
        rx.attach(0, 0, 0, 2, conn(1));
        rx.attach(0, 0, 1, 2, conn(2));
        assert!(!rx.end(0, 0, 1), "lane 1 is not read now");
        assert!(rx.is_current(0, 0, 0));
        assert_eq!(rx.follow(0, 0, 1), Err(LaneError::Ended));
        assert!(rx.end(0, 0, 0), "the lane read now");
    }

    #[test]
    fn a_sender_stays_put_once_a_lane_closed() {
        let mut tx = TxLanes::default();
        tx.attach(0, 2, conn(1));
        tx.attach(1, 2, conn(2));
        assert!(!tx.detach(conn(2)));
        assert_eq!(tx.next_for(&data(LANE_MIN), |_| true), None);
        assert_eq!(tx.current(), Some(conn(1)));
        assert!(tx.detach(conn(1)), "the current lane");
        assert!(!tx.detach(conn(9)), "unknown");
    }

    #[test]
    fn only_lane_frames_announce() {
        assert_eq!(announced(data(0).as_bytes()), None);
        assert_eq!(announced(b"short"), None);
        assert_eq!(announced(announcement(7).as_bytes()), Some(7));
    }
}
