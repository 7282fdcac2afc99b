//! `comm`: a thread-per-core, zero-copy, busy-polling communication engine.
//!
//! This release carries the foundation the engine is built on: the one
//! [`Error`] type, the wire [`FrameHeader`] every transport carries, and the
//! pre-registered buffer pool ([`BufPool`], [`Buf`]). Shared-memory segments
//! and the cross-process ring are in the `comm-shm` crate, re-exported as
//! [`shm`].
//!
//! ```
//! use comm::{BufPool, FrameHeader, FrameKind, PoolConfig};
//!
//! let pool = BufPool::new(PoolConfig::default())?;
//! let mut buf = pool.alloc(5)?;
//! buf.copy_from_slice(b"hello");
//! let header = FrameHeader::new(FrameKind::Data, 1, 2, 0, buf.len() as u32);
//! let decoded = FrameHeader::decode(header.as_bytes(), 1 << 20)?;
//! assert_eq!(decoded.len(), 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod addr;
mod buf;
mod control;
mod custom;
mod discovery;
mod endpoint;
mod engine;
mod env_config;
mod error;
mod fd_table;
mod frame;
mod inbox_quota;
mod lanes;
mod link;
mod net;
mod node;
mod peer;
mod pool;
/// Reliable, ordered messages over datagrams: the sans-IO protocol under the UDP transport.
pub mod reliable;
mod session;
mod shard;
mod stats;
mod transport;

pub use addr::Addr;
pub use buf::Buf;
pub use comm_shm as shm;
pub use custom::{Connection, Transport};
pub use discovery::{Interface, Resources, ShmInfo, VerbsInfo};
pub use endpoint::{Endpoint, Msg, DEFAULT_CONNECT_TIMEOUT};
pub use engine::{Engine, EngineBuilder};
pub use env_config::EnvConfig;
pub use error::{Error, ProtocolError};
pub use frame::{FrameFlags, FrameHeader, FrameKind, FRAME_VERSION, HEADER_LEN};
pub use node::NodeId;
pub use peer::PeerId;
pub use pool::{BufPool, PoolConfig, SizeClass};
pub use shard::Ctx;
pub use stats::{LinkStats, ReliableLinkStats, ShardStats, Stats};
pub use transport::{select_transports, TransportKind, Transports, UdpMode};
