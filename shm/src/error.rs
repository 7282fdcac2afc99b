use std::path::PathBuf;

/// Everything that can go wrong with a segment or with attaching to a ring.
///
/// Each variant says what happened and, where it helps, what to do about it.
///
/// ```
/// use comm_shm::{Segment, ShmError};
/// match Segment::open("comm-doc-no-such-segment") {
///     Err(ShmError::NotFound { .. }) => {}
///     other => panic!("unexpected: {other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShmError {
    /// The name cannot be used under `/dev/shm`: use 1 to 200 characters from
    /// `[A-Za-z0-9._-]`, not starting with a dot.
    #[error("invalid segment name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A segment of that name exists already; pick another name or reap it.
    #[error("segment {name:?} already exists")]
    AlreadyExists {
        /// The segment name.
        name: String,
    },
    /// No segment of that name exists; the creator has not created it yet or has unlinked it.
    #[error("segment {name:?} does not exist")]
    NotFound {
        /// The segment name.
        name: String,
    },
    /// The segment file is shorter than its header claims: it is being created or is corrupt.
    #[error("segment is truncated: expected {expected} bytes, found {actual}")]
    Truncated {
        /// Bytes the header or layout requires.
        expected: u64,
        /// Bytes actually present.
        actual: u64,
    },
    /// The file does not start with comm's segment magic: it is not a comm segment.
    #[error("not a comm segment (bad magic)")]
    BadMagic,
    /// The segment was written by an incompatible layout version of comm.
    #[error("segment layout version {found} is not supported (this build uses {expected})")]
    VersionMismatch {
        /// Version found in the segment.
        found: u32,
        /// Version this build understands.
        expected: u32,
    },
    /// The creator has not finished initialising the segment; retry shortly.
    #[error("segment is not ready yet; its creator is still initialising it")]
    NotReady,
    /// The file could be controlled by someone else; comm refuses to map it.
    #[error("refusing segment file: {0}")]
    Untrusted(&'static str),
    /// A header field is inconsistent (sizes, alignment, geometry).
    #[error("invalid layout: {0}")]
    Layout(&'static str),
    /// A region lies (partly) outside the segment.
    #[error(
        "region at offset {offset} with length {len} lies outside the {available}-byte payload"
    )]
    OutOfBounds {
        /// Start of the region within the payload.
        offset: usize,
        /// Length of the region.
        len: usize,
        /// Payload bytes available.
        available: usize,
    },
    /// The producer or consumer side of this ring is already attached somewhere;
    /// a ring has exactly one of each.
    #[error("the {role} side of this ring is already attached")]
    AlreadyClaimed {
        /// `"producer"` or `"consumer"`.
        role: &'static str,
    },
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl ShmError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ShmError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
