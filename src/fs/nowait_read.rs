//! Reads that never wait (`RWF_NOWAIT` semantics) and the probing wrapper behind them.
//!
//! A `NOWAIT` read answers from the cache or not at all: every block it needs (the inode, the
//! extent items, the data) must be resident. On a miss it *starts* the reads it needs and
//! returns `WouldBlock`; a later call (after [`Fs::poll`] or any other call has reaped the
//! completions) finds the blocks cached. Nothing changes on disk or in the namespace, so a
//! `WouldBlock` leaves nothing half done. This is also how [`crate::shared::SharedFs`] runs
//! lookups without holding its lock while a read is in flight.

use bitflags::bitflags;

use super::{Fd, Fs, OpenFlags};
use crate::device::BlockDevice;
use crate::error::{Error, Result};

bitflags! {
    /// How [`Fs::read_at_flags`] behaves.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ReadFlags: u8 {
        /// Answer from the cache, or start the reads and return `WouldBlock`.
        const NOWAIT = 1;
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for ReadFlags {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "ReadFlags({=u8:#x})", self.bits())
    }
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> Fs<'b, D, N, H> {
    /// Read up to `buf.len()` bytes at `offset` of `fd`. Without `NOWAIT` this is
    /// [`read_at`](Self::read_at). With `NOWAIT` it returns the bytes if everything they need is
    /// cached; otherwise it starts reading what is missing (as much of it as the device queue
    /// and the cache take) and returns `Err(WouldBlock)`.
    pub fn read_at_flags(
        &mut self,
        fd: Fd,
        offset: u64,
        buf: &mut [u8],
        flags: ReadFlags,
    ) -> Result<usize> {
        if !flags.contains(ReadFlags::NOWAIT) {
            return self.read_at(fd, offset, buf);
        }
        let o = self.handles.get(fd)?;
        if !o.flags.contains(OpenFlags::READ) {
            return Err(Error::BadHandle);
        }
        // Reap what has finished, so blocks read on an earlier attempt are found now.
        self.step()?;
        match self.nowait(|fs| fs.read_at(fd, offset, buf)) {
            Err(Error::WouldBlock) => {
                // Start the rest of the reads too, so the next attempt does not trickle in one
                // block at a time.
                self.prefetch_range(o.ino, offset, buf.len() as u64);
                Err(Error::WouldBlock)
            }
            r => r,
        }
    }

    /// Run `f` with the cache refusing to wait: a miss starts its read and `f` sees
    /// `WouldBlock`. Only for calls that change nothing (lookups, stat, reads): a mutating call
    /// could stop half-way.
    pub(crate) fn nowait<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        self.vol.set_probing(true);
        let r = f(self);
        self.vol.set_probing(false);
        r
    }

    /// Start reads (without waiting) of the data blocks of `len` bytes at `offset` of `ino`
    /// that are not cached, stopping at the first lookup that is not cached itself.
    fn prefetch_range(&mut self, ino: u64, offset: u64, len: u64) {
        let bs = u64::from(self.vol.space_info().block_size);
        if len == 0 || bs == 0 {
            return;
        }
        let first = offset / bs;
        let last = offset.saturating_add(len - 1) / bs;
        // Bounded by the cache: more misses than slots cannot be in flight anyway.
        for fblk in (first..=last).take(N) {
            let ext = self.nowait(|fs| fs.extent_at(ino, fblk));
            match ext {
                Ok(Some(e)) => {
                    let phys = e.phys(fblk);
                    if self.vol.block_resident(phys) || self.vol.block_in_flight(phys) {
                        continue;
                    }
                    if self.nowait(|fs| fs.vol.prefetch_data(phys)) != Err(Error::WouldBlock) {
                        // Resident after all, or an error the read itself will report.
                        continue;
                    }
                    if !self.vol.block_in_flight(phys) {
                        // Queue or cache full: later attempts will go on.
                        return;
                    }
                }
                Ok(None) => {}
                Err(_) => return,
            }
        }
    }

    /// The device block holding byte `offset` of `fd`, or `None` in a hole, past the end, or
    /// for a file whose bytes live inside its inode. (Like `FIBMAP`: for tools and for tests
    /// that check the device trace.)
    pub fn block_map(&mut self, fd: Fd, offset: u64) -> Result<Option<u64>> {
        let o = self.handles.get(fd)?;
        let inode = self.read_inode(o.ino)?;
        if offset >= inode.size.get()
            || inode.flags.get() & crate::wire::items::inode_flags::INLINE != 0
        {
            return Ok(None);
        }
        let bs = u64::from(self.vol.space_info().block_size);
        let fblk = offset / bs;
        Ok(self
            .extent_at(o.ino, fblk)?
            .map(|e| u64::from(e.phys(fblk))))
    }
}
