//! Checkpoints: what an identity exports, and where each partition resumes, as records in the
//! compacted state topic. This module is the format and the bookkeeping, without I/O; the
//! service writes and reads the records (`service::state`).
//!
//! A checkpoint is a **commit record**, written last, that names everything else: the
//! identity's exported aggregates as a full snapshot (`base`) plus the incremental snapshots
//! written since (`deltas`), each a compressed blob split into **chunk records** of at most
//! `chunk_bytes`; and, per partition, the next offset and the partition's own state. Chunks
//! have keys of their own that nothing overwrites, so they survive compaction until their
//! writer tombstones them after a newer commit no longer names them. An **intent record**,
//! written before the chunks, names them too, so chunks whose commit never came are found and
//! removed after a crash. See ARCHITECTURE.md, "Delivery".

pub mod blob;
pub mod directory;
pub mod keys;
pub mod manifest;

pub use directory::{Directory, Observed};
pub use manifest::{BlobRef, ChunkRef, Commit, Intent, PartitionEntry};

/// A partition of an input topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub topic: String,
    pub partition: i32,
}

impl std::fmt::Display for PartitionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}
