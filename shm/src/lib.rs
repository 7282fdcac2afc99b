//! Shared-memory mechanisms for `comm`: named segments under `/dev/shm` and a
//! single-producer single-consumer ring that lives inside a segment and works
//! between two processes, with a futex-based park/wake protocol.
//!
//! This crate knows nothing of engines or endpoints; `comm` composes it.
//!
//! ```
//! use std::sync::Arc;
//! use comm_shm::{Ring, RingConfig, Segment};
//!
//! let cfg = RingConfig::new(1024, 64)?;
//! let seg = Arc::new(Segment::create("comm-doc-example", cfg.region_len())?);
//! let ring = Ring::create(&seg, 0, cfg)?;
//! seg.mark_ready();
//!
//! // Another process would `Segment::open` and `Ring::open` the same region.
//! let mut tx = ring.producer()?;
//! let mut rx = ring.consumer()?;
//! tx.push(b"hello")?;
//! let got = rx.pop_with(|bytes| bytes.to_vec())?;
//! assert_eq!(got, b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(not(target_pointer_width = "64"))]
compile_error!("comm-shm supports 64-bit targets only (ring and segment sizes use usize)");

mod doorbell;
mod error;
#[cfg(not(loom))]
mod futex;
mod hot_set;
mod hot_slot;
mod liveness;
mod name;
mod nudge;
pub mod ring;
pub mod segment;
mod sync;

pub use doorbell::{Doorbell, Park};
pub use error::ShmError;
pub use hot_set::{HotSet, HOT_SET_SLOTS};
pub use hot_slot::HotSlot;
pub use liveness::ProcessWatch;
pub use nudge::Nudge;
pub use ring::{Consumer, PopError, Producer, PushError, Ring, RingConfig, RingGeometry};
pub use segment::{Segment, SegmentHeader};
