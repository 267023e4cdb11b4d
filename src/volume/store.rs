//! The page store under the trees: block cache + device + allocator, for one transaction.

use crate::btree::NodeStore;
use crate::cache::{BlockCache, SlotId};
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::space::{Run, Space, SpaceStore};
use crate::wire::{BlockHeader, BlockKind, BlockNr, NodeRef};

/// Everything a tree operation touches below the tree: the device, the cache, the
/// allocator, and the generation of the transaction being built.
pub struct Store<'b, D, const N: usize> {
    /// The device.
    pub dev: D,
    /// The block cache (owns every I/O buffer).
    pub cache: BlockCache<'b, N>,
    /// Allocator state.
    pub space: Space,
    /// Generation of the transaction being built (last committed + 1).
    pub generation: u64,
    /// First and one-past-last block the allocator manages (for sanity checks).
    pub data: (BlockNr, BlockNr),
    /// The last tree node that failed its checks on load (see [`Volume::last_corrupt`]).
    ///
    /// [`Volume::last_corrupt`]: crate::volume::Volume::last_corrupt
    pub last_corrupt: Option<BlockNr>,
}

impl<'b, D: BlockDevice<'b>, const N: usize> Store<'b, D, N> {
    /// [`NodeStore::load`] without the bookkeeping of which node failed.
    fn load_checked(
        &mut self,
        block: BlockNr,
        owner: u64,
        level: u8,
        generation: u64,
    ) -> Result<SlotId> {
        if !(self.data.0..self.data.1).contains(&block) {
            return Err(Error::Corrupt);
        }
        let id = self.cache.read(&mut self.dev, block, true)?;
        let fresh = !self.cache.is_checked(id);
        let buf = self.cache.data(id)?;
        // Verified before, the pointer we followed must still agree with the node; read
        // since, it gets the full check (`NodeRef::verify`'s checks as booleans: calling
        // `verify` itself here costs 68 B more of Thumb code).
        let ok = NodeRef::matches(buf, owner, level, generation)
            && (!fresh
                || (BlockHeader::verify(buf, block).is_ok()
                    && NodeRef::new(buf, block).check_layout().is_ok()));
        if !ok {
            if fresh {
                self.cache.forget(block);
            }
            return Err(Error::Corrupt);
        }
        self.cache.set_checked(id);
        Ok(id)
    }
}

impl<'b, D: BlockDevice<'b>, const N: usize> NodeStore for Store<'b, D, N> {
    fn generation(&self) -> u64 {
        self.generation
    }

    fn load(&mut self, block: BlockNr, owner: u64, level: u8, generation: u64) -> Result<SlotId> {
        let r = self.load_checked(block, owner, level, generation);
        if r == Err(Error::Corrupt) {
            self.last_corrupt = Some(block);
        }
        r
    }

    fn node(&self, id: SlotId) -> Result<&[u8]> {
        self.cache.data(id)
    }

    fn node_mut(&mut self, id: SlotId) -> Result<&mut [u8]> {
        self.cache.data_mut(id)
    }

    fn pair(&mut self, a: SlotId, b: SlotId) -> Result<(&[u8], &mut [u8])> {
        self.cache.pair_mut(a, b)
    }

    fn new_node(&mut self, owner: u64, level: u8) -> Result<(BlockNr, SlotId)> {
        let block = self.space.alloc()?;
        let id = match self.cache.create(&mut self.dev, block, true) {
            Ok(id) => id,
            Err(e) => {
                // Give the block back: nothing points at it.
                self.space.unalloc(block);
                return Err(e);
            }
        };
        let kind = if level == 0 {
            BlockKind::Leaf
        } else {
            BlockKind::Internal
        };
        BlockHeader::init(
            self.cache.data_mut(id)?,
            kind,
            owner,
            block,
            self.generation,
            level,
        )?;
        Ok((block, id))
    }

    fn free_node(&mut self, block: BlockNr) -> Result<()> {
        self.cache.forget(block);
        self.space.defer_free(Run {
            start: block,
            len: 1,
        })
    }

    fn pin(&mut self, id: SlotId) {
        self.cache.pin(id);
    }

    fn unpin(&mut self, id: SlotId) {
        self.cache.unpin(id);
    }
}

impl<'b, D: BlockDevice<'b>, const N: usize> SpaceStore for Store<'b, D, N> {
    fn space(&mut self) -> &mut Space {
        &mut self.space
    }
}
