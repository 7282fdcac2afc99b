/// Why a push did not happen.
///
/// ```
/// use comm_shm::PushError;
/// let e = PushError::TooLarge { len: 100, max: 48 };
/// assert_eq!(e.to_string(), "payload of 100 bytes exceeds the slot's 48 bytes");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The ring is full (every slot in use): retry after the consumer has
    /// caught up. Nothing was written.
    #[error("would block: the ring is full")]
    WouldBlock,
    /// The payload does not fit in a slot; send it another way (out of line).
    #[error("payload of {len} bytes exceeds the slot's {max} bytes")]
    TooLarge {
        /// Payload length offered.
        len: usize,
        /// Largest payload a slot carries.
        max: usize,
    },
}

/// Why a pop returned nothing.
///
/// ```
/// use comm_shm::PopError;
/// assert_eq!(PopError::Empty.to_string(), "ring is empty");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PopError {
    /// No message is ready; poll again or park.
    #[error("ring is empty")]
    Empty,
    /// The peer wrote a slot whose length does not fit: the ring is unusable
    /// from now on and should be torn down.
    #[error("corrupt slot: length {len} exceeds the slot's {max} payload bytes")]
    Corrupt {
        /// Length found in the slot.
        len: u32,
        /// Largest payload a slot carries.
        max: usize,
    },
}
