//! The append tail: a file being written in order, block after block, whose last extent and
//! inode are kept up to date in memory and reach the tree (and the journal) once per run of
//! appends instead of once per write.
//!
//! Only with the `fast-paths` feature (default): without it no tail is ever started, every
//! write takes the general path, and the functions here compile to nothing.
//!
//! # Why
//!
//! An aligned 4 KiB append through the general path searches the tree for the extent and the
//! inode, replaces both items (copying a path on the first change of a transaction), and logs
//! a `MAP` — about ten thousand instructions per 4 KiB, several times the copy itself. While
//! a file grows by whole blocks that continue its last extent on disk, all of that says the
//! same thing with a larger number: the extent is longer, the size and block count bigger.
//!
//! # The rules that keep it safe
//!
//! * **Settled before anything else changes the volume.** Every call that changes the tree,
//!   logs an operation or checkpoints first [`settles`](Fs::settle) the tail: one extent
//!   replace, one inode replace and one `MAP` covering every block appended since the last
//!   settle, then the tail is dropped. So the tree, the pending log and every checkpoint and
//!   log record see exactly what a write-by-write history would have produced, in the same
//!   order relative to other operations. `fsync`, `sync_all`, `unmount`, `close` and the
//!   namespace calls settle; so does any write that is not a continuation, and any
//!   checkpoint the filesystem layer starts.
//! * **Reads see it.** [`Fs::read_inode`] and [`Fs::extent_at`] answer for the tail's file
//!   from the tail, so reads, `stat` and `seek` neither settle nor see stale items.
//! * **No tree, no checkpoint on the fast path.** An append takes its blocks from the
//!   allocator's current run only when they continue the extent on disk and leave the
//!   reserve the space the settle and later deletes need ([`Volume::alloc_data_at`]); it
//!   never touches a tree, so nothing can checkpoint a tree that lacks the tail.
//! * **Copy-on-write holds.** The blocks are new in this transaction, so no checkpoint or log
//!   record points at them; the extent keeps its (older) generation, so once a record maps
//!   them they are never rewritten in place — the rule `map_run` follows for aligned
//!   appends.
//! * **A crash loses only what was never promised.** Until a settle is followed by a sync
//!   point, the appended blocks are free space in every durable state.
//!
//! [`Volume::alloc_data_at`]: crate::volume::Volume::alloc_data_at

use super::data::{Ext, Fill, Src};
use super::Fs;
use crate::btree::InsertMode;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::wire::items::{inode_flags, InodeItem};
use crate::wire::BlockNr;

use super::data::MAX_FILE_SIZE;

/// A file's last extent and inode while whole blocks are appended to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tail {
    /// The file.
    pub ino: u64,
    /// Its last extent, as it is now (ends at the end of the file).
    pub ext: Ext,
    /// Length of that extent's item in the tree.
    pub tree_len: BlockNr,
    /// The inode, as it is now.
    pub inode: InodeItem,
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> Fs<'b, D, N, H> {
    /// The tail, unless the volume shut down (then every read must go to the refusing tree).
    fn live_tail(&self) -> Option<&Tail> {
        if !cfg!(feature = "fast-paths") {
            return None;
        }
        self.tail.as_ref().filter(|_| !self.vol.is_shut_down())
    }

    /// The tail's inode, if `ino` is the tail's file.
    pub(crate) fn tail_inode(&self, ino: u64) -> Option<InodeItem> {
        self.live_tail().filter(|t| t.ino == ino).map(|t| t.inode)
    }

    /// The tail's extent, if it is `ino`'s and covers file block `fblk`.
    pub(crate) fn tail_extent(&self, ino: u64, fblk: u64) -> Option<Ext> {
        self.live_tail()
            .filter(|t| {
                t.ino == ino && t.ext.fblk <= fblk && fblk - t.ext.fblk < u64::from(t.ext.len)
            })
            .map(|t| t.ext)
    }

    /// Write what the tail holds to the tree and the pending log, and drop it. A failure
    /// turns the volume read-only (the appended blocks are allocated but not mapped).
    ///
    /// On a read-only volume the tail stays: nothing may reach the device any more, but the
    /// appends succeeded, and reads keep showing them (from the tail) until unmount.
    pub(crate) fn settle(&mut self) -> Result<()> {
        if !cfg!(feature = "fast-paths") {
            return Ok(());
        }
        let Some(t) = self.tail else {
            return Ok(());
        };
        if t.ext.len == t.tree_len {
            self.tail = None;
            return Ok(());
        }
        if self.vol.is_read_only() {
            return Ok(());
        }
        self.tail = None;
        // Never half a settle because a lookup would have waited: settles come from calls
        // that change the volume, which do not run in probing mode anyway.
        let probing = self.vol.is_probing();
        self.vol.set_probing(false);
        let r = self.op(2, false, |fs| {
            fs.put_ext(t.ino, t.ext, InsertMode::Replace)?;
            fs.write_inode(t.ino, &t.inode)
        });
        self.vol.set_probing(probing);
        if let Err(e) = r {
            self.vol.fail();
            // Still what reads must show (a shut-down volume ignores it: it refuses reads).
            self.tail = Some(t);
            return Err(e);
        }
        let first = t.ext.fblk + u64::from(t.tree_len);
        let count = t.ext.len - t.tree_len;
        let block = t.ext.block + t.tree_len;
        self.log_map(t.ino, first, block, count, t.inode.size.get());
        Ok(())
    }

    /// Settle the tail if it belongs to `ino`.
    pub(crate) fn settle_ino(&mut self, ino: u64) -> Result<()> {
        if cfg!(feature = "fast-paths") && self.tail.as_ref().is_some_and(|t| t.ino == ino) {
            self.settle()
        } else {
            Ok(())
        }
    }

    /// After a write to `ino` through the general path that ended at byte `end`: if that is
    /// the end of the file, on a block boundary, with an extent that ends there too, start a
    /// tail so the next whole-block appends take the fast path.
    pub(crate) fn start_tail(&mut self, ino: u64, end: u64) {
        if !cfg!(feature = "fast-paths")
            || self.tail.is_some()
            || self.in_blk(end) != 0
            || self.replaying()
            || self.vol.is_read_only()
        {
            return;
        }
        let Ok(inode) = self.read_inode(ino) else {
            return;
        };
        let size = inode.size.get();
        if size != end || size == 0 || inode.flags.get() & inode_flags::INLINE != 0 {
            return;
        }
        let end = self.blk_of(size);
        // An extent whose numbers do not add up (a damaged volume) simply gets no tail.
        let sane = |e: &Ext| {
            e.fblk.checked_add(u64::from(e.len)) == Some(end)
                && e.block.checked_add(e.len).is_some()
        };
        match self.extent_at(ino, end - 1) {
            Ok(Some(e)) if sane(&e) => {
                self.tail = Some(Tail {
                    ino,
                    ext: e,
                    tree_len: e.len,
                    inode,
                });
            }
            _ => {}
        }
    }

    /// The fast path of a write: `data` at `offset` of `ino` when that is the end of the
    /// tail's file. Writes the whole blocks at the front of `data` (straight to the device
    /// when it has the synchronous path and no data sums are needed, else through the cache)
    /// into blocks that continue the tail's extent, and returns how many bytes it wrote;
    /// `None` when this write is not such an append (nothing done: take the general path).
    pub(crate) fn append_fast(
        &mut self,
        ino: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<Option<usize>> {
        if !cfg!(feature = "fast-paths") {
            return Ok(None);
        }
        // (Read and updated in place: the tail is too large to copy around cheaply.)
        let Some(t) = self.tail.as_ref().filter(|t| t.ino == ino) else {
            return Ok(None);
        };
        // (`start_tail` checked that this does not overflow; appends keep it below the
        // allocator's run.)
        let (size, start) = (t.inode.size.get(), t.ext.block.saturating_add(t.ext.len));
        let bs = self.bs();
        let blocks = BlockNr::try_from(self.blk_of(data.len() as u64)).unwrap_or(BlockNr::MAX);
        if offset != size || blocks == 0 {
            return Ok(None);
        }
        let Some(run) = self.vol.alloc_data_at(start, blocks) else {
            return Ok(None);
        };
        let n = u64::from(run.len) * bs;
        if offset.checked_add(n).is_none_or(|end| end > MAX_FILE_SIZE) {
            // Cannot happen below 2^50 bytes of file; refuse rather than map past it.
            self.vol.fail();
            return Err(Error::TooLarge);
        }
        if let Err(e) = self.append_blocks(run.start, run.len, data) {
            // The blocks are allocated but not mapped: nothing of this may reach a
            // checkpoint. The durable state is whole.
            self.vol.fail();
            return Err(e);
        }
        let now = self.now();
        if let Some(t) = &mut self.tail {
            t.ext.len += run.len;
            t.inode.size = (offset + n).into();
            super::data::add_sat(&mut t.inode.blocks, u64::from(run.len));
            t.inode.mtime = now.into();
        }
        Ok(Some(n as usize))
    }

    /// Put the first `count` blocks of `data` into new blocks `first..`.
    fn append_blocks(&mut self, first: BlockNr, count: BlockNr, data: &[u8]) -> Result<()> {
        let bs = self.bs() as usize;
        let src = data
            .get(..count as usize * bs)
            .ok_or(Error::InvalidArgument)?;
        // Without FUA the journal sums data blocks from the cache (so one flush covers the
        // data and its record): keep them there. Otherwise skip the cache when the device can.
        if !self.vol.needs_flush() && self.vol.write_data_now(first, src)? {
            return Ok(());
        }
        // Whole new blocks, as the general path writes them.
        let bs = bs as u64;
        for i in 0..count {
            self.fill_block(
                first + i,
                Fill::Fresh,
                0,
                Src::Bytes(src),
                u64::from(i) * bs,
                bs,
            )?;
        }
        Ok(())
    }
}
