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

/// A block number, or a count of blocks, in memory.
///
/// On disk every block number is a `u64` (SPEC.md); in memory it is a `u32`, so that on
/// 32-bit targets a block number is one register and `Result<BlockNr>`, runs and tree
/// pointers travel in registers instead of through memory. Volumes are therefore limited to
/// `BlockNr::MAX` blocks (16 TiB at 4 KiB blocks): format refuses a larger device with
/// `InvalidArgument` and mount answers `Unsupported` for a superblock that records more. A
/// block number read from disk goes through [`block_nr`], never a truncating cast.
pub type BlockNr = u32;

/// A block number (or block count) read from disk, as a [`BlockNr`]: `Corrupt` if it does
/// not fit (it lies outside any volume this code mounts).
pub fn block_nr(v: u64) -> crate::Result<BlockNr> {
    BlockNr::try_from(v).map_err(|_| crate::Error::Corrupt)
}

/// A block number (or count) of a superblock that [`Superblock::parse`] accepted: those are
/// all at most its `block_count`, which fits a [`BlockNr`]. Saturates rather than truncates,
/// so even a caller that skipped verification never wraps to a small block number. Out of
/// line: assembling a volume converts every block number of its superblock with it.
#[inline(never)]
pub(crate) fn verified_nr(v: zerocopy::little_endian::U64) -> BlockNr {
    BlockNr::try_from(v.get()).unwrap_or(BlockNr::MAX)
}

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
