//! The journal's place when the `journal` feature is off: nothing is logged, and every sync
//! point (`fsync`, `fdatasync`) is a checkpoint. Still power-safe (a checkpoint is
//! copy-on-write and atomic), with the costs of one: the changed tree path, the data and the
//! superblock instead of one log record. See `journal.rs` for the real one.
//!
//! A volume whose log holds records of its last checkpoint's epoch (written by a build with
//! the journal, not yet replayed) mounts read-only here, or fails a writable mount with
//! `Unsupported`: its records can only be replayed by a build with the journal, and writing
//! without them would lose what they made durable.

use super::Fs;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::wire::log::LogOp;
use crate::wire::BlockNr;

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> Fs<'b, D, N, H> {
    /// Generation stamped on newly written data blocks: it changes at every checkpoint (the
    /// only sync point here), and blocks of an older one are never rewritten in place.
    pub(crate) fn write_gen(&self) -> u64 {
        self.vol.generation() << 24
    }

    /// No replay, so no block is mapped by one.
    pub(crate) fn is_mapped_this_group(&self, _gen: u64) -> bool {
        false
    }

    /// Nothing is logged.
    pub(crate) fn log(&mut self, _op: &LogOp<'_>) {}

    /// Nothing is logged.
    pub(crate) fn log_write(&mut self, _ino: u64, _offset: u64, _data: &[u8]) -> Result<()> {
        Ok(())
    }

    /// Nothing is logged.
    pub(crate) fn log_map(
        &mut self,
        _ino: u64,
        _fblk: u64,
        _block: BlockNr,
        _count: BlockNr,
        _size: u64,
    ) {
    }

    /// Never replaying.
    pub(crate) fn replaying(&self) -> bool {
        false
    }

    /// A sync point is a checkpoint.
    pub(crate) fn sync_log(&mut self) -> Result<()> {
        self.checkpoint()
    }

    /// Refuse (`Unsupported`) a volume whose log holds a valid record of the current epoch:
    /// only a build with the journal can replay it.
    pub(crate) fn replay(&mut self) -> Result<()> {
        let mut cur = self.vol.log_cursor();
        if self.vol.log_read(&mut cur, |_, _| ())?.is_some() {
            return Err(Error::Unsupported);
        }
        Ok(())
    }
}
