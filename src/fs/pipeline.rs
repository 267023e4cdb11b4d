//! Non-blocking writes: `NOWAIT`, `DSYNC`, tickets, and the completion state machine.
//!
//! This is where the project's seed lives. Linux lost the sync of a queued `NOWAIT | DSYNC`
//! direct write because the sync was tied to the submit path, which a queued write left before
//! it ran. Here the obligation travels with the operation: a [`Ticket`] is reported by
//! [`Fs::poll`] exactly once, and for `DSYNC` only at the end of this sequence, driven by
//! completions and never skipped:
//!
//! ```text
//! data submitted → data complete → (flush, unless the data went with FUA or the record
//! carries the data's sums) → log record submitted → log record complete → (flush, unless
//! the record went with FUA) → reported
//! ```
//!
//! On a device with FUA a `DSYNC` write costs its data and a record, both FUA, and no flush.
//! Without FUA the record carries a sum of each data run it maps (see [`crate::wire::log`]),
//! so one flush after the record covers both; replay refuses a group whose data did not
//! arrive. A flush is only ever submitted after every write it must cover has completed. `DSYNC`
//! tickets whose data completes while a group is forming share its log record and flushes
//! (group commit). Without `DSYNC` a ticket is reported once its data is on the device.
//!
//! `write_at_flags(.., NOWAIT ..)` first *probes*: it looks up, with the cache refusing to
//! wait, everything the write will read (inode, extents, partially written blocks). A miss
//! starts the read and answers `WouldBlock` with nothing changed, as does a full ticket table,
//! device queue or cache. The in-memory update then runs; the written data stays in cache slots
//! (the data lives in the cache while queued, the caller's buffer is free at return), and
//! those slots go to the device by value. Blocking calls drive the same machine to its end
//! first, and nothing holds a lock while waiting ([`crate::shared::SharedFs`] runs it in
//! steps for several tasks; `NOWAIT` reads are in `nowait_read.rs`).

use bitflags::bitflags;

use super::Fs;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::inject::Bugs;
use crate::volume::Finished;
use crate::wire::items::kind;
use crate::wire::{BlockNr, Key};

use super::inode::inode_key;

bitflags! {
    /// How [`Fs::write_at_flags`] behaves.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct WriteFlags: u8 {
        /// Never wait: queue the I/O and return a ticket, or `WouldBlock`.
        const NOWAIT = 1;
        /// Report completion only once the data and what is needed to find it are durable.
        const DSYNC = 2;
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for WriteFlags {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "WriteFlags({=u8:#x})", self.bits())
    }
}

/// What [`Fs::write_at_flags`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WriteStatus {
    /// Finished: `n` bytes written (and durable, with `DSYNC`).
    Done(usize),
    /// Queued: [`Fs::poll`] reports the ticket exactly once.
    Queued(Ticket),
}

/// A queued write, reported once by [`Fs::poll`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Ticket(pub u32);

/// Tickets in flight at once.
pub const MAX_TICKETS: usize = 32;
/// Data blocks one queued write may cover (64 KiB at 4 KiB blocks).
pub const MAX_TICKET_BLOCKS: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Data blocks being submitted / written.
    Data,
    /// Data on the device; a `DSYNC` ticket waits for a commit group.
    Logged,
    /// Finished with this result; waiting to be reported.
    Finished,
}

#[derive(Debug, Clone)]
struct Queued {
    ticket: Ticket,
    dsync: bool,
    blocks: heapless::Vec<BlockNr, MAX_TICKET_BLOCKS>,
    submitted: usize,
    /// Leading blocks whose writes are known to have finished (each poll looks only past
    /// them, and stops at the first still in flight: a cache lookup per block is not free).
    written: usize,
    stage: Stage,
    result: Result<usize>,
    /// Checkpoint generation when queued: a later checkpoint made it durable.
    epoch: u64,
    /// Pending-log bytes up to and including this write's operation.
    log_end: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Writing the data blocks of earlier blocking writes that the group's records map.
    Data,
    /// Flush covering the data (devices without FUA).
    PreFlush,
    /// Log record `i` of the group in flight.
    Record { at: usize },
    /// Flush covering the records (devices without FUA).
    PostFlush,
}

#[derive(Debug, Clone, Copy)]
struct Group {
    /// Pending-log bytes the group commits.
    end: usize,
    phase: Phase,
    /// A request of the current phase is in flight.
    waiting: bool,
    /// Checkpoint generation the group's operations follow: a checkpoint since then made
    /// them durable (and emptied the pending log the group's offsets point into).
    epoch: u64,
}

/// The queued writes and the commit group in progress.
#[derive(Debug, Default)]
pub(crate) struct Pipeline {
    queued: heapless::Vec<Queued, MAX_TICKETS>,
    next: u32,
    group: Option<Group>,
}

impl Pipeline {
    fn busy(&self) -> bool {
        self.group.is_some() || self.queued.iter().any(|q| q.stage != Stage::Finished)
    }
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> Fs<'b, D, N, H> {
    /// Write `data` at `offset` of `fd` with [`WriteFlags`]. Without `NOWAIT` this blocks until
    /// done (and with `DSYNC`, durable) and returns `Done`. With `NOWAIT` it returns `Queued`
    /// (or `Done` for an empty write), or `Err(WouldBlock)` having changed nothing.
    pub fn write_at_flags(
        &mut self,
        fd: super::Fd,
        offset: u64,
        data: &[u8],
        flags: WriteFlags,
    ) -> Result<WriteStatus> {
        if !flags.contains(WriteFlags::NOWAIT) {
            let n = self.write_at(fd, offset, data)?;
            if flags.contains(WriteFlags::DSYNC) {
                self.fsync(fd)?;
            }
            return Ok(WriteStatus::Done(n));
        }
        let o = self.handles.get(fd)?;
        if !o
            .flags
            .intersects(super::OpenFlags::WRITE | super::OpenFlags::APPEND)
        {
            return Err(Error::BadHandle);
        }
        self.writable()?;
        if data.is_empty() {
            self.read_inode(o.ino)?;
            return Ok(WriteStatus::Done(0));
        }
        let end = super::data::write_end(offset, data)?;
        let bs = u64::from(self.vol.space_info().block_size);
        let first = offset / bs;
        let last = (end - 1) / bs;
        let nblocks = (last - first + 1) as usize;
        // Room for the ticket and its new blocks, or WouldBlock with nothing done. (The data
        // waits in its cache slots for room in the device queue; `poll` submits it.)
        let slots_needed = nblocks + 4 * (usize::from(self.vol.fs_root().level) + 2);
        if self.pipe.queued.is_full()
            || nblocks > MAX_TICKET_BLOCKS
            || self.vol.reusable_slots() < slots_needed
        {
            return Err(Error::WouldBlock);
        }
        // An append tail goes into the tree (and the pending log) first, so this write's log
        // operation follows it; what that reads must be cached too.
        self.probe_settle()?;
        self.settle()?;
        // Probe: everything the write reads must be cached already.
        self.probe_write(o.ino, offset, data.len() as u64, bs)?;
        // The in-memory update (and its log operation), as a blocking write would (never
        // the append fast path: the data must be in the cache and the operation logged now).
        let n = self.write_at_inner(fd, offset, data, false)?;
        let epoch = self.vol.committed_generation();
        self.journal_epoch();
        let log_end = self.journal_len();
        let mut blocks = heapless::Vec::new();
        for fblk in first..=last {
            if let Some(e) = self.extent_at(o.ino, fblk)? {
                let _ = blocks.push(e.phys(fblk));
            }
        }
        self.pipe.next = self.pipe.next.wrapping_add(1);
        let ticket = Ticket(self.pipe.next);
        let q = Queued {
            ticket,
            dsync: flags.contains(WriteFlags::DSYNC),
            blocks,
            submitted: 0,
            written: 0,
            stage: Stage::Data,
            result: Ok(n),
            epoch,
            log_end,
        };
        self.pipe.queued.push(q).map_err(|_| Error::WouldBlock)?;
        // Start its I/O. A failure here is the ticket's (and every waiting one's): `poll`
        // reports it, so the caller must get the ticket.
        let _ = self.step();
        Ok(WriteStatus::Queued(ticket))
    }

    /// In probing mode, look up the tree items a [`settle`](Self::settle) changes: `Ok` when
    /// it will not wait for a read (or there is nothing to settle), else `WouldBlock` with the
    /// reads started.
    fn probe_settle(&mut self) -> Result<()> {
        let Some(t) = self.tail.filter(|t| t.ext.len != t.tree_len) else {
            return Ok(());
        };
        let ext = Key::new(t.ino, kind::EXTENT, t.ext.fblk * self.bs());
        self.nowait(|fs| {
            fs.vol.get(&inode_key(t.ino), |_| ())?;
            fs.vol.get(&ext, |_| ())?;
            Ok(())
        })
    }

    /// The reads a write of `len` bytes at `offset` of `ino` needs, in probing mode.
    fn probe_write(&mut self, ino: u64, offset: u64, len: u64, bs: u64) -> Result<()> {
        let mut r = Ok(());
        self.vol.set_probing(true);
        let inode = self.read_inode(ino);
        if let Err(e) = inode {
            r = Err(e);
        } else {
            let first = offset / bs;
            let last = (offset + len - 1) / bs;
            for fblk in first..=last {
                match self.extent_at(ino, fblk) {
                    Ok(Some(e)) => {
                        let phys = e.phys(fblk);
                        if self.vol.block_in_flight(phys) {
                            r = Err(Error::WouldBlock);
                            break;
                        }
                        let whole = fblk * bs >= offset && (fblk + 1) * bs <= offset + len;
                        if !whole && !self.vol.block_resident(phys) {
                            // A partial block is read before it is changed: start that read.
                            if let Err(e) = self.vol.prefetch_data(phys) {
                                r = Err(e);
                                break;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        r = Err(e);
                        break;
                    }
                }
            }
        }
        self.vol.set_probing(false);
        r
    }

    /// Report one finished queued write, advancing every one in flight first. Never blocks.
    pub fn poll(&mut self) -> Option<(Ticket, Result<usize>)> {
        // An error has been handed to every ticket it concerns.
        let _ = self.step();
        let i = self
            .pipe
            .queued
            .iter()
            .position(|q| q.stage == Stage::Finished)?;
        let q = self.pipe.queued.swap_remove(i);
        Some((q.ticket, q.result))
    }

    /// One step of every queued write (reaping at most one completion), without reporting
    /// any. A device error fails every write still waiting (the volume is read-only then) and
    /// is returned too.
    pub(crate) fn step(&mut self) -> Result<()> {
        let r = self.vol.refuse_if_shut_down().and_then(|()| self.advance());
        if let Err(e) = r {
            // A write, record or flush failed: which of the pending operations reached the
            // device is unknown, so none may be logged again (replay would apply them twice).
            self.vol.fail();
            self.fail_tickets(e);
        }
        r
    }

    /// Finish every ticket not yet finished with `e`, and drop the commit group.
    pub(crate) fn fail_tickets(&mut self, e: Error) {
        for q in self
            .pipe
            .queued
            .iter_mut()
            .filter(|q| q.stage != Stage::Finished)
        {
            q.stage = Stage::Finished;
            q.result = Err(e);
        }
        self.pipe.group = None;
    }

    /// A one-line summary of the pipeline (for logs and test failures).
    #[cfg(feature = "std")]
    pub fn pipeline_state(&self) -> std::string::String {
        use std::format;
        let stages: std::vec::Vec<_> = self
            .pipe
            .queued
            .iter()
            .map(|q| format!("{:?}@{}", q.stage, q.log_end))
            .collect();
        format!(
            "group {:?} pending {} stages {:?}",
            self.pipe.group,
            self.journal_len(),
            stages
        )
    }

    /// Queued writes not yet reported.
    pub fn queued(&self) -> usize {
        self.pipe.queued.len()
    }

    /// Drive every queued write to its end (used before any blocking call; finished tickets
    /// stay to be reported by [`poll`](Self::poll)).
    pub(crate) fn quiesce(&mut self) -> Result<()> {
        let mut spins: u64 = 0;
        while self.pipe.busy() {
            self.step()?;
            spins += 1;
            if spins > 100_000_000 {
                return Err(Error::Io(crate::IoError::Timeout));
            }
        }
        Ok(())
    }

    /// One step of every state machine.
    fn advance(&mut self) -> Result<()> {
        // The pending log could not hold every operation: only a checkpoint can make them
        // durable now. It waits for all data in flight and writes the rest.
        if self.journal_overflowed() && self.pipe.queued.iter().any(|q| q.stage != Stage::Finished)
        {
            self.checkpoint()?;
        }
        // A checkpoint since a write was queued made it durable: the checkpoint waited for
        // every write in flight and wrote every dirty block before its superblock.
        let epoch = self.vol.committed_generation();
        for q in self.pipe.queued.iter_mut() {
            if q.stage != Stage::Finished && q.epoch != epoch {
                q.stage = Stage::Finished;
            }
        }
        if self
            .pipe
            .group
            .is_some_and(|g| g.epoch != epoch || self.journal_epoch_of() != epoch)
        {
            self.pipe.group = None;
        }
        // Reap one completion.
        if let Some(f) = self.vol.poll_io() {
            self.group_event(f)?;
        }
        // Data: submit what fits, notice what finished.
        for i in 0..self.pipe.queued.len() {
            let Some(q) = self.pipe.queued.get(i).cloned() else {
                continue;
            };
            if q.stage != Stage::Data {
                continue;
            }
            let mut submitted = q.submitted;
            while let Some(&b) = q.blocks.get(submitted) {
                // FUA whenever the device has it: a commit group may map these blocks.
                if !self.vol.start_block_write(b, true)? {
                    break;
                }
                submitted += 1;
            }
            let mut stage = Stage::Data;
            let mut written = q.written;
            while written < submitted {
                let Some(&b) = q.blocks.get(written) else {
                    break;
                };
                match self.vol.block_write_state(b) {
                    None => break,
                    // The write's operation is in the pending log, and so may be those of
                    // later writes to the block: no record may map it now. `step` fails every
                    // ticket still waiting and turns the volume read-only.
                    Some(Err(e)) => return Err(e),
                    Some(Ok(())) => {}
                }
                written += 1;
            }
            if written == q.blocks.len() {
                stage = if q.dsync {
                    Stage::Logged
                } else {
                    Stage::Finished
                };
            }
            if let Some(q) = self.pipe.queued.get_mut(i) {
                q.submitted = submitted;
                q.written = written;
                q.stage = stage;
            }
        }
        // Keep a quarter of the cache reusable, so NOWAIT writes do not stall on dirty tree
        // nodes (which may be written at any time: they are not part of the last checkpoint).
        if self.vol.reusable_slots() < N / 4 {
            self.vol.start_writebacks(N / 8 + 1)?;
        }
        self.group_step()
    }

    /// Start a commit group when there is none and some `DSYNC` writes wait for one.
    fn group_step(&mut self) -> Result<()> {
        if self.pipe.group.is_none() {
            // The longest prefix of the pending log whose queued writes all have their data.
            let early = self.vol.bugs().has(Bugs::EARLY_FLUSH);
            let mut end = self.journal_len();
            for q in self.pipe.queued.iter() {
                if q.stage == Stage::Data && q.log_end <= end && !early {
                    end = q.log_end.saturating_sub(1).min(end);
                }
            }
            // Cut at an op boundary: the end of the last ticket op inside the prefix (or all).
            let ready = |q: &Queued| {
                q.log_end <= end && (q.stage == Stage::Logged || (early && q.stage == Stage::Data))
            };
            let waiting = self.pipe.queued.iter().any(|q| q.dsync && ready(q));
            if !waiting {
                return Ok(());
            }
            let end = self
                .pipe
                .queued
                .iter()
                .filter(|q| q.dsync && ready(q))
                .map(|q| q.log_end)
                .max()
                .unwrap_or(0);
            if end == 0 {
                return Ok(());
            }
            self.start_mapped_data()?;
            self.pipe.group = Some(Group {
                end,
                phase: Phase::Data,
                waiting: false,
                epoch: self.journal_epoch_of(),
            });
        }
        let Some(mut g) = self.pipe.group else {
            return Ok(());
        };
        if g.waiting {
            return Ok(());
        }
        match g.phase {
            Phase::Data => {
                if self.vol.bugs().has(Bugs::EARLY_FLUSH) {
                    // The bug: flush (and log) without waiting for the data.
                    g.phase = Phase::PreFlush;
                } else if self.mapped_data_done()? {
                    // Without FUA the data needs a flush before the record, unless every MAP
                    // carries a data sum: then the record's own flush covers both.
                    let summed = self.vol.needs_flush() && self.journal_seal_sums(g.end)?;
                    g.phase = if self.vol.needs_flush() && !summed {
                        Phase::PreFlush
                    } else {
                        Phase::Record { at: 0 }
                    };
                }
            }
            Phase::PreFlush | Phase::PostFlush => g.waiting = self.vol.flush_start()?,
            Phase::Record { at } if at >= g.end => {
                if self.vol.needs_flush() {
                    g.phase = Phase::PostFlush;
                } else {
                    return self.group_done(g);
                }
            }
            Phase::Record { at } => {
                let (chunk_end, nops, last) = self.journal_chunk(at, g.end)?;
                let (bytes, vol) = self.journal_bytes_and_vol(at, chunk_end);
                match vol.log_start(bytes, nops, last) {
                    Ok(true) => {
                        g.phase = Phase::Record { at: chunk_end };
                        g.waiting = true;
                    }
                    Ok(false) => {}
                    // The log is full: a checkpoint makes every queued write durable instead
                    // (and starts an empty log); the epoch change reports them.
                    Err(Error::NoSpace) => {
                        self.pipe.group = None;
                        return self.checkpoint();
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.pipe.group = Some(g);
        Ok(())
    }

    /// A log write or flush finished.
    fn group_event(&mut self, f: Finished) -> Result<()> {
        let Some(mut g) = self.pipe.group else {
            return Ok(());
        };
        match f {
            Finished::Flush(r) | Finished::Log(r) => r?,
        }
        g.waiting = false;
        match (g.phase, f) {
            (Phase::PreFlush, Finished::Flush(_)) => g.phase = Phase::Record { at: 0 },
            (Phase::PostFlush, Finished::Flush(_)) => return self.group_done(g),
            _ => {}
        }
        self.pipe.group = Some(g);
        Ok(())
    }

    /// The group's records are durable: report its writes and drop its operations.
    fn group_done(&mut self, g: Group) -> Result<()> {
        let early = self.vol.bugs().has(Bugs::EARLY_FLUSH);
        for q in self.pipe.queued.iter_mut() {
            let early = early && q.dsync && q.stage == Stage::Data;
            if (q.stage == Stage::Logged || early) && q.log_end <= g.end {
                q.stage = Stage::Finished;
            } else if q.log_end > g.end {
                q.log_end -= g.end;
            } else {
                q.log_end = 0;
            }
        }
        self.journal_drop_prefix(g.end);
        self.pipe.group = None;
        if self.vol.log_free_sectors() < self.vol.log_sectors() / 4 {
            // Past three quarters full: empty the log now, between groups, rather than stall a
            // group on a full log later. (A blocking step: it waits for the data in flight.)
            self.checkpoint()?;
        }
        Ok(())
    }
}
