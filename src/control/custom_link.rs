//! Set-up of links over custom transports. As for network links, the
//! acceptor registers the link under a token; the initiator opens one
//! connection per shard pair with the transport and introduces it with a
//! first frame (token, its instance, the shard pair), which the acceptor's
//! control thread answers with an acknowledgement before either side hands
//! the connection to its shard.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::net_link::{attached, claim, net_session, Claim};
use super::wire::{Hello, Message, Offer};
use super::{kind_code, link_reply, peer_layout, protocol, remaining};
use crate::engine::EngineShared;
use crate::shard::{Command, CustomConn};
use crate::{Connection, Error, Transport, TransportKind};

const INTRO: &[u8; 8] = b"COMMCUS1";
const ACK: &[u8; 8] = b"COMMCUSA";
const INTRO_LEN: usize = 8 + 8 + 8 + 2 + 2;
/// How long a connection that was accepted may take to introduce itself.
const INTRO_WITHIN: Duration = Duration::from_secs(10);

fn intro(instance: u64, token: u64, from: u16, to: u16) -> [u8; INTRO_LEN] {
    let mut b = [0u8; INTRO_LEN];
    b[..8].copy_from_slice(INTRO);
    b[8..16].copy_from_slice(&instance.to_le_bytes());
    b[16..24].copy_from_slice(&token.to_le_bytes());
    b[24..26].copy_from_slice(&from.to_le_bytes());
    b[26..28].copy_from_slice(&to.to_le_bytes());
    b
}

fn parse_intro(b: &[u8]) -> Option<(u64, u64, u16, u16)> {
    if b.len() != INTRO_LEN || &b[..8] != INTRO {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    Some((u64_at(8), u64_at(16), u16_at(24), u16_at(26)))
}

/// The registered transport of that name, if any.
pub(super) fn find<'a>(shared: &'a EngineShared, name: &str) -> Option<&'a Arc<dyn Transport>> {
    shared
        .customs
        .iter()
        .find(|(t, _)| t.name() == name)
        .map(|(t, _)| t)
}

/// Hands a connection to a shard and waits until it took it.
fn hand_over(
    shared: &EngineShared,
    shard: usize,
    conn: CustomConn,
    deadline: Instant,
) -> Result<(), Error> {
    let (ack_tx, ack_rx) = mpsc::channel();
    shared.command(shard, Command::AddCustom(conn, ack_tx))?;
    ack_rx
        .recv_timeout(remaining(deadline)?)
        .map_err(|_| Error::Timeout)
}

/// Waits for one whole frame on `conn` (set-up only, on the control plane).
fn first_frame(conn: &mut dyn Connection, deadline: Instant) -> Result<Vec<u8>, Error> {
    loop {
        let mut got = None;
        conn.recv(&mut |f| {
            if got.is_none() {
                got = Some(f.to_vec());
            }
        })?;
        if let Some(f) = got {
            return Ok(f);
        }
        remaining(deadline)?;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The initiator side: offers the transport, then opens, introduces and
/// hands over one connection per shard pair.
pub(super) fn build(
    shared: &EngineShared,
    stream: &mut std::net::TcpStream,
    theirs: &Hello,
    kind: TransportKind,
    deadline: Instant,
) -> Result<u16, Error> {
    let name = kind.name();
    let transport = Arc::clone(find(shared, name).ok_or(Error::Config("unregistered transport"))?);
    let their_addr = theirs
        .offers
        .iter()
        .find(|o| o.param("name") == Some(name))
        .and_then(|o| o.param("addr"))
        .ok_or_else(|| protocol(15))?
        .to_owned();
    let layout = peer_layout(shared, theirs, true)?;
    Message::LinkSetup(Offer {
        kind: kind_code(kind),
        params: vec![("name".into(), name.into())],
    })
    .send(stream)?;
    let reply = link_reply(stream)?;
    let token = reply
        .param("token")
        .and_then(|t| u64::from_str_radix(t, 16).ok())
        .ok_or_else(|| protocol(16))?;
    let (session, counters) = net_session(shared, theirs, kind, layout)?;
    let attached = (0..layout.a).try_for_each(|i| {
        (0..layout.b).try_for_each(|j| {
            let mut conn = transport.connect(&their_addr)?;
            conn.send(&intro(shared.instance, token, i as u16, j as u16))?;
            if first_frame(conn.as_mut(), deadline)? != ACK {
                return Err(protocol(17));
            }
            let c = CustomConn {
                session,
                peer_shard: j as u16,
                conn,
                counters: Arc::clone(&counters[i]),
            };
            hand_over(shared, i, c, deadline)
        })
    });
    if let Err(e) = attached {
        shared.lose_session(session, "its set-up failed", false);
        return Err(e);
    }
    shared.sessions.mark_ready(session);
    Ok(session)
}

/// Connections accepted by custom transports, waiting for their intro.
#[derive(Default)]
pub(crate) struct Arrivals(Vec<(Box<dyn Connection>, Instant)>);

/// One step of the acceptor side, run by the control thread's loop: takes
/// new connections from every custom transport, and attaches those whose
/// intro names a pending link.
pub(crate) fn accept_step(shared: &EngineShared, arrivals: &mut Arrivals) {
    for (t, _) in shared.customs.iter() {
        loop {
            match t.accept() {
                Ok(Some(conn)) => arrivals.0.push((conn, Instant::now() + INTRO_WITHIN)),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(transport = t.name(), "accept failed: {e}");
                    break;
                }
            }
        }
    }
    let now = Instant::now();
    let mut i = 0;
    while i < arrivals.0.len() {
        let (conn, deadline) = &mut arrivals.0[i];
        let mut frame = None;
        let read = conn.recv(&mut |f| {
            if frame.is_none() {
                frame = Some(f.to_vec());
            }
        });
        let deadline = *deadline;
        match (read, frame) {
            (Ok(_), None) if deadline >= now => i += 1,
            (Ok(_), Some(f)) => {
                let (conn, _) = arrivals.0.swap_remove(i);
                if let Err(e) = attach(shared, conn, &f) {
                    tracing::warn!("refused a custom connection: {e}");
                }
            }
            (Err(e), _) => {
                tracing::debug!("a custom connection failed before its intro: {e}");
                arrivals.0.swap_remove(i);
            }
            (Ok(_), None) => {
                tracing::debug!("a custom connection never introduced itself");
                arrivals.0.swap_remove(i);
            }
        }
    }
}

/// Attaches an introduced connection to its pending link.
fn attach(shared: &EngineShared, mut conn: Box<dyn Connection>, intro: &[u8]) -> Result<(), Error> {
    let (instance, token, from, to) = parse_intro(intro).ok_or_else(|| protocol(18))?;
    let Claim {
        session,
        peer,
        counters,
        ..
    } = claim(shared, token, instance, (from, to), 0).ok_or_else(|| protocol(19))?;
    conn.send(ACK)?;
    let c = CustomConn {
        session,
        peer_shard: from,
        conn,
        counters,
    };
    hand_over(
        shared,
        usize::from(to),
        c,
        Instant::now() + super::PEER_IDLE,
    )?;
    attached(shared, token, session, peer);
    Ok(())
}
