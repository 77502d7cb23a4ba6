//! Size limits shared by the client, the wire and the node. Every message is bounded.

/// Largest key accepted, in bytes (64 KiB, as Cassandra's partition key limit).
pub const MAX_KEY_BYTES: usize = 64 * 1024;
/// Largest value accepted, in bytes (1 MiB).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Largest frame on the wire, in bytes: one message with the largest key and value, plus room for
/// the envelope. A peer announcing a larger frame is a protocol error.
pub const MAX_FRAME_BYTES: usize = MAX_KEY_BYTES + MAX_VALUE_BYTES + 64 * 1024;

/// Records batched into one message (hint replay, anti-entropy) stop at about this many bytes,
/// well under [`MAX_FRAME_BYTES`]; a single record larger than this still travels alone.
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
