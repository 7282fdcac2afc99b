//! Model checks of comm's lock-free structures live in `tests/`; they compile
//! only with `RUSTFLAGS="--cfg loom"`:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p loom-tests --release
//! ```
