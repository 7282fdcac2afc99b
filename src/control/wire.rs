//! The control protocol's messages and their encoding: every message is a
//! little-endian `u32` length, then `u16` version, `u8` kind, `u8` zero, and a
//! body of fixed-width integers and length-prefixed strings. Decoding checks
//! every length against what is left and refuses oversized messages before
//! reading them, so a hostile or confused peer gets an error, never a panic.

use std::io::{Read, Write};

use crate::{Error, ProtocolError};

/// Version of the control protocol spoken by this build; it also stands for
/// the data protocols behind it (3: reliable UDP datagrams of version 2).
pub(crate) const VERSION: u16 = 3;
/// Largest control message accepted (body and 4-byte kind header).
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// What one side tells the other when a control connection opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub engine: String,
    pub instance: u64,
    pub node: String,
    pub pid: u32,
    pub shards: u16,
    /// Transports this side can run, each with its parameters.
    pub offers: Vec<Offer>,
}

/// One transport a side offers, with `key=value` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Offer {
    pub kind: u8,
    pub params: Vec<(String, String)>,
}

impl Offer {
    pub(crate) fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a side refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum RejectReason {
    EngineMismatch = 1,
    NoTransport = 2,
    Unsupported = 3,
    ShuttingDown = 4,
    /// Both engines set up a link to each other at once; the one with the
    /// lower instance id wins and the other waits for that link.
    CrossConnect = 5,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    Hello(Hello),
    Reject {
        reason: RejectReason,
        detail: String,
    },
    Resolve {
        endpoint: String,
    },
    Resolved {
        id: u32,
        shard: u16,
    },
    NotFound {
        endpoint: String,
    },
    LinkSetup(Offer),
    LinkReady(Offer),
    /// First message of a data connection of a network link: which link
    /// (the acceptor's token from `LinkReady`), which shard pair it serves
    /// and, for TCP, which of the pair's lanes it is; `port` is the
    /// initiator's UDP port (0 for TCP).
    Attach {
        instance: u64,
        token: u64,
        from_shard: u16,
        to_shard: u16,
        port: u16,
        lane: u8,
    },
    /// The acceptor took the connection; `port` is its UDP port (0 for TCP).
    Attached {
        port: u16,
    },
}

const HELLO: u8 = 1;
const REJECT: u8 = 2;
const RESOLVE: u8 = 3;
const RESOLVED: u8 = 4;
const NOT_FOUND: u8 = 5;
const LINK_SETUP: u8 = 6;
const LINK_READY: u8 = 7;
const ATTACH: u8 = 8;
const ATTACHED: u8 = 9;

impl Message {
    /// The whole message as it goes on the wire, length prefix included.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(128));
        w.u32(0); // length, patched below
        w.u16(VERSION);
        match self {
            Message::Hello(h) => {
                w.u8(HELLO);
                w.u8(0);
                w.str(&h.engine);
                w.u64(h.instance);
                w.str(&h.node);
                w.u32(h.pid);
                w.u16(h.shards);
                w.u16(h.offers.len() as u16);
                for o in &h.offers {
                    w.offer(o);
                }
            }
            Message::Reject { reason, detail } => {
                w.u8(REJECT);
                w.u8(0);
                w.u8(*reason as u8);
                w.str(detail);
            }
            Message::Resolve { endpoint } => {
                w.u8(RESOLVE);
                w.u8(0);
                w.str(endpoint);
            }
            Message::Resolved { id, shard } => {
                w.u8(RESOLVED);
                w.u8(0);
                w.u32(*id);
                w.u16(*shard);
            }
            Message::NotFound { endpoint } => {
                w.u8(NOT_FOUND);
                w.u8(0);
                w.str(endpoint);
            }
            Message::LinkSetup(o) | Message::LinkReady(o) => {
                w.u8(if matches!(self, Message::LinkSetup(_)) {
                    LINK_SETUP
                } else {
                    LINK_READY
                });
                w.u8(0);
                w.offer(o);
            }
            Message::Attach {
                instance,
                token,
                from_shard,
                to_shard,
                port,
                lane,
            } => {
                w.u8(ATTACH);
                w.u8(0);
                w.u64(*instance);
                w.u64(*token);
                w.u16(*from_shard);
                w.u16(*to_shard);
                w.u16(*port);
                w.u8(*lane);
            }
            Message::Attached { port } => {
                w.u8(ATTACHED);
                w.u8(0);
                w.u16(*port);
            }
        }
        let len = (w.0.len() - 4) as u32;
        w.0[..4].copy_from_slice(&len.to_le_bytes());
        w.0
    }

    /// Decodes one message body (everything after the length prefix).
    pub(crate) fn decode(body: &[u8]) -> Result<Message, ProtocolError> {
        let mut r = Reader(body);
        let version = r.u16()?;
        if version != VERSION {
            return Err(ProtocolError::ControlVersion {
                found: version,
                expected: VERSION,
            });
        }
        let kind = r.u8()?;
        r.u8()?;
        let msg = match kind {
            HELLO => {
                let engine = r.str()?;
                let instance = r.u64()?;
                let node = r.str()?;
                let pid = r.u32()?;
                let shards = r.u16()?;
                let n = r.u16()?;
                let offers = (0..n).map(|_| r.offer()).collect::<Result<_, _>>()?;
                Message::Hello(Hello {
                    engine,
                    instance,
                    node,
                    pid,
                    shards,
                    offers,
                })
            }
            REJECT => {
                let reason = match r.u8()? {
                    1 => RejectReason::EngineMismatch,
                    2 => RejectReason::NoTransport,
                    3 => RejectReason::Unsupported,
                    4 => RejectReason::ShuttingDown,
                    5 => RejectReason::CrossConnect,
                    other => return Err(ProtocolError::ControlMessage(other)),
                };
                Message::Reject {
                    reason,
                    detail: r.str()?,
                }
            }
            RESOLVE => Message::Resolve { endpoint: r.str()? },
            RESOLVED => Message::Resolved {
                id: r.u32()?,
                shard: r.u16()?,
            },
            NOT_FOUND => Message::NotFound { endpoint: r.str()? },
            LINK_SETUP => Message::LinkSetup(r.offer()?),
            LINK_READY => Message::LinkReady(r.offer()?),
            ATTACH => Message::Attach {
                instance: r.u64()?,
                token: r.u64()?,
                from_shard: r.u16()?,
                to_shard: r.u16()?,
                port: r.u16()?,
                lane: r.u8()?,
            },
            ATTACHED => Message::Attached { port: r.u16()? },
            other => return Err(ProtocolError::ControlMessage(other)),
        };
        if !r.0.is_empty() {
            return Err(ProtocolError::ControlTrailing(r.0.len()));
        }
        Ok(msg)
    }

    /// Writes the message to `w`.
    pub(crate) fn send(&self, w: &mut impl Write) -> Result<(), Error> {
        w.write_all(&self.encode())?;
        w.flush()?;
        Ok(())
    }

    /// Reads one message from `r`, refusing one longer than [`MAX_MESSAGE`]
    /// before reading its body.
    pub(crate) fn recv(r: &mut impl Read) -> Result<Message, Error> {
        let mut len = [0u8; 4];
        r.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_MESSAGE {
            return Err(ProtocolError::ControlTooLong {
                len,
                max: MAX_MESSAGE,
            }
            .into());
        }
        let mut body = vec![0u8; len];
        r.read_exact(&mut body)?;
        Ok(Message::decode(&body)?)
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// Strings longer than 65535 bytes are cut (no field of ours comes close).
    fn str(&mut self, s: &str) {
        let mut end = s.len().min(u16::MAX as usize);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }
    fn offer(&mut self, o: &Offer) {
        self.u8(o.kind);
        self.u16(o.params.len() as u16);
        for (k, v) in &o.params {
            self.str(k);
            self.str(v);
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ProtocolError> {
        if self.0.len() < n {
            return Err(ProtocolError::Short {
                have: self.0.len(),
                need: n,
            });
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ProtocolError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ProtocolError> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, ProtocolError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self) -> Result<String, ProtocolError> {
        let n = self.u16()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ProtocolError::ControlText)
    }
    fn offer(&mut self) -> Result<Offer, ProtocolError> {
        let kind = self.u8()?;
        let n = self.u16()?;
        let params = (0..n)
            .map(|_| Ok((self.str()?, self.str()?)))
            .collect::<Result<_, ProtocolError>>()?;
        Ok(Offer { kind, params })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello() -> Message {
        Message::Hello(Hello {
            engine: "kv".into(),
            instance: 0xdead_beef,
            node: "node-1".into(),
            pid: 42,
            shards: 2,
            offers: vec![Offer {
                kind: 0,
                params: vec![("bells".into(), "comm-x".into())],
            }],
        })
    }

    #[test]
    fn every_message_round_trips() {
        let offer = Offer {
            kind: 2,
            params: vec![("segment".into(), "s".into())],
        };
        for m in [
            hello(),
            Message::Reject {
                reason: RejectReason::EngineMismatch,
                detail: "kv".into(),
            },
            Message::Resolve {
                endpoint: "store".into(),
            },
            Message::Resolved { id: 7, shard: 1 },
            Message::NotFound {
                endpoint: "x".into(),
            },
            Message::LinkSetup(offer.clone()),
            Message::LinkReady(offer),
            Message::Attach {
                instance: 9,
                token: u64::MAX,
                from_shard: 1,
                to_shard: 0,
                port: 4000,
                lane: 1,
            },
            Message::Attached { port: 0 },
        ] {
            let wire = m.encode();
            assert_eq!(Message::recv(&mut &wire[..]).unwrap(), m);
        }
    }

    #[test]
    fn an_oversized_message_is_refused_before_its_body_is_read() {
        let wire = (u32::MAX).to_le_bytes();
        let err = Message::recv(&mut &wire[..]).unwrap_err();
        assert!(
            matches!(err, Error::Protocol(ProtocolError::ControlTooLong { .. })),
            "{err}"
        );
    }

    #[test]
    fn another_version_is_refused() {
        let mut wire = hello().encode();
        wire[4] = 9;
        let err = Message::recv(&mut &wire[..]).unwrap_err();
        assert!(matches!(
            err,
            Error::Protocol(ProtocolError::ControlVersion { found: 9, .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Message::decode(&body);
        }

        #[test]
        fn truncated_messages_are_refused(cut in 0usize..64) {
            let wire = hello().encode();
            let cut = cut.min(wire.len() - 1);
            prop_assert!(Message::recv(&mut &wire[..cut]).is_err());
        }
    }
}
