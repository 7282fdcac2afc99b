//! comm-uring: one io_uring per shard, driving TCP streams and UDP sockets
//! from a busy-polling loop without blocking.
