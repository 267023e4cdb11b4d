//! The on-disk format, as `zerocopy` little-endian structs (SPEC.md is the prose version).
//!
//! Like smoltcp's `wire` module, this layer only knows bytes: it lays structs over block
//! buffers, seals and checks checksums, and validates every count and offset it reads, so a
//! hostile image produces [`Error::Corrupt`](crate::Error::Corrupt) and never a panic or an
//! out-of-bounds access. It does no I/O.

mod header;
pub mod items;
mod key;
pub mod log;
mod node;
mod superblock;

pub use header::{block_crc, BlockHeader, BlockKind, HEADER_LEN, MAGIC};
pub use key::{Key, KeyBytes, KEY_LEN};
pub use node::{InternalPtr, LeafItem, NodeMut, NodeRef, INTERNAL_PTR_LEN, LEAF_ITEM_LEN};
pub use superblock::{
    Compat, Extent, Incompat, Superblock, TreeRoot, FORMAT_VERSION, MAX_GENERATION, SUPERBLOCK_LEN,
    SUPERBLOCK_OFFSETS, SUPERBLOCK_REGION,
};

/// Well-known tree ids, stored as the `owner` of every node of that tree.
pub mod tree_id {
    /// The filesystem tree: inodes, directory entries, extents.
    pub const FS: u64 = 1;
    /// The free-space tree: free block extents.
    pub const FREE: u64 = 2;
}

/// Smallest filesystem block (node) size a volume may use.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest filesystem block (node) size a volume may use (node offsets are 16-bit).
pub const MAX_BLOCK_SIZE: u32 = 32768;
/// Runs of free blocks the allocator may hold outside the free-space tree (in the superblock).
pub const RESERVE_RUNS: usize = 16;

/// Deepest tree the code will walk: a deeper tree is treated as corrupt (and bounds work).
pub const MAX_DEPTH: usize = 8;
