//! What the tree needs from the page store below it (as redb separates its tree from its
//! page store): verified node loads, copy-on-write allocation, and frees.
//!
//! The tree code never does I/O or allocation itself. The volume implements this trait once
//! over its block cache and allocator, so the tree code is compiled once (small flash) and
//! can be tested against the real store over a RAM disk.

use crate::cache::SlotId;
use crate::error::Result;
use crate::wire::BlockNr;

/// The page store a [`Tree`](super::Tree) works on.
pub trait NodeStore {
    /// The generation of the transaction being built. A node whose header carries this
    /// generation was written (or copied) in this transaction and may be edited in place.
    fn generation(&self) -> u64;

    /// Bring node `block` into the cache and verify it (checksum, address, `owner`, `level`,
    /// `generation`, layout) unless it was verified since it was read. Returns its slot.
    fn load(&mut self, block: BlockNr, owner: u64, level: u8, generation: u64) -> Result<SlotId>;

    /// Bytes of a resident node.
    fn node(&self, id: SlotId) -> Result<&[u8]>;

    /// Writable bytes of a resident node (marks it dirty). Only for nodes of this generation.
    fn node_mut(&mut self, id: SlotId) -> Result<&mut [u8]>;

    /// Node `a` read-only and node `b` writable, at once.
    fn pair(&mut self, a: SlotId, b: SlotId) -> Result<(&[u8], &mut [u8])>;

    /// Allocate a block for a new node of `owner` at `level`, with its header written, in a
    /// dirty cache slot. Returns `(block, slot)`.
    fn new_node(&mut self, owner: u64, level: u8) -> Result<(BlockNr, SlotId)>;

    /// Node `block` is no longer part of the tree being built (it was copied or emptied).
    fn free_node(&mut self, block: BlockNr) -> Result<()>;

    /// Keep a slot resident across calls that may evict.
    fn pin(&mut self, id: SlotId);

    /// Undo [`pin`](Self::pin).
    fn unpin(&mut self, id: SlotId);
}
