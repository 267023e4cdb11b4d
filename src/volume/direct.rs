//! File data that bypasses the block cache: whole, aligned data blocks copied straight
//! between the caller's buffer and a device that offers the synchronous fast path
//! ([`BlockDevice::read_now`] / [`BlockDevice::write_now`]), and the allocation that lets a
//! sequential append continue its extent without touching a tree.
//!
//! # Why
//!
//! A sequential read or write of whole blocks through the cache copies every byte twice (user
//! buffer ↔ slot ↔ device) and searches, evicts and writes back a slot per block. On a device
//! that completes at submit time anyway, one copy is enough.
//!
//! Only with the `fast-paths` feature (default): without it these answer "not possible here"
//! and every data block goes through the cache.
//!
//! # Why it is safe
//!
//! * Only blocks *not* in the cache go direct, so a cached copy (clean, dirty or in flight)
//!   never goes stale and nothing the cache still has to write can overtake a direct write.
//! * Data blocks carry no checksum, so a direct read skips no verification.
//! * Direct writes only go to blocks allocated by the running transaction (the caller's
//!   rule): nothing the last checkpoint or a durable log record points at. Writing such a
//!   block early is what a cache eviction does anyway.
//! * Nothing goes direct in probing (`NOWAIT`) mode: probing promises not to wait on I/O.

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::space::Run;
use crate::wire::BlockNr;

use super::{Volume, DATA_MAP_OPS, DELETE_KEEP_OPS};

impl<'b, D: BlockDevice<'b>, const N: usize> Volume<'b, D, N> {
    /// Read whole data blocks `block..` into `dst` (a whole number of blocks) straight from
    /// the device. `Ok(false)`: not possible here (a block is cached, probing mode, or the
    /// device has no fast path); the caller reads through the cache.
    pub fn read_data_now(&mut self, block: BlockNr, dst: &mut [u8]) -> Result<bool> {
        if !cfg!(feature = "fast-paths") {
            return Ok(false);
        }
        self.refuse_if_shut_down()?;
        let Some(lba) = self.direct_lba(block, dst.len())? else {
            return Ok(false);
        };
        match self.store.dev.read_now(lba, dst) {
            None => Ok(false),
            Some(r) => r.map(|()| true).map_err(Error::Io),
        }
    }

    /// Write whole data blocks `block..` from `src` (a whole number of blocks) straight to
    /// the device. The blocks must be newly allocated by the running transaction. `Ok(false)`:
    /// not possible here; the caller writes through the cache.
    pub fn write_data_now(&mut self, block: BlockNr, src: &[u8]) -> Result<bool> {
        if !cfg!(feature = "fast-paths") {
            return Ok(false);
        }
        self.writable()?;
        let Some(lba) = self.direct_lba(block, src.len())? else {
            return Ok(false);
        };
        match self.store.dev.write_now(lba, src) {
            None => Ok(false),
            Some(r) => r.map(|()| true).map_err(Error::Io),
        }
    }

    /// The first sector of `len` bytes of data blocks from `block`, when they may bypass the
    /// cache; `None` when they may not.
    fn direct_lba(&self, block: BlockNr, len: usize) -> Result<Option<u64>> {
        let cache = &self.store.cache;
        let bs = cache.block_size();
        if cache.is_no_io() || bs == 0 || len == 0 || len % bs != 0 {
            return Ok(None);
        }
        let Ok(count) = BlockNr::try_from(len / bs) else {
            return Ok(None);
        };
        self.check_data_run(Run {
            start: block,
            len: count,
        })?;
        let end = block + count;
        if (block..end).any(|b| cache.find(b).is_some()) {
            return Ok(None);
        }
        Ok(Some(
            u64::from(block) * u64::from(cache.sectors_per_block()),
        ))
    }

    /// Up to `want` blocks for file data starting exactly at `start`, taken from the
    /// allocator's current run without touching a tree or checkpointing. `None` when the
    /// current run does not continue there, or when taking them would leave less in reserve
    /// than the tree updates that map them later (and deletes) may need.
    pub fn alloc_data_at(&mut self, start: BlockNr, want: BlockNr) -> Option<Run> {
        if !cfg!(feature = "fast-paths") || self.is_read_only() {
            return None;
        }
        let keep = (DATA_MAP_OPS + DELETE_KEEP_OPS) * self.op_blocks();
        self.store.space.alloc_data_at(start, want, keep)
    }
}
