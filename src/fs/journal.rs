//! The journal, filesystem side: which operations are pending since the last sync point, how
//! `fsync` turns them into log records, and how mount replays them.
//!
//! Every successful change appends one logical operation ([`LogOp`]) to a fixed buffer. A sync
//! point (`fsync`, `fdatasync`) then:
//!
//! 1. writes the data blocks that `MAP` operations point at (if still dirty in the cache) and
//!    flushes them — a record must never be durable before its data;
//! 2. appends the pending operations as one group of records, the last flagged `COMMIT`, each
//!    written with FUA (or write + flush);
//! 3. starts a new *write generation*, so no block named by a durable record is ever
//!    rewritten in place afterwards (later writes copy it).
//!
//! Small writes (at most [`SMALL_WRITE`] bytes, or any write to a file kept inline) travel in
//! the record by value; larger ones by reference (`MAP`). A run of whole-block appends held by
//! the append tail (`tail.rs`) is logged as one `MAP` when the tail settles, which happens
//! before any other operation is logged. A full buffer, a full log, or a log
//! past three quarters full turns the sync point into a checkpoint, which empties the log.
//!
//! Mount replays the records of the current epoch up to the last complete group: first it
//! claims every data block that `MAP`s name (so nothing else can be allocated there), then it
//! re-runs the operations through the same code that ran them, then it checkpoints.

use super::Fs;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::space::Run;
use crate::volume::MAX_RECORD;
use crate::wire::items::{inode_flags, FileKind};
use crate::wire::log::{
    data_sum_step, decode_op, ops, set_map_sum, LogOp, LOG_COMMIT, LOG_HEADER_LEN,
};
use crate::wire::BlockNr;

/// Writes up to this many bytes are logged by value.
pub const SMALL_WRITE: usize = 256;

/// Bytes of pending operations kept between sync points.
const PENDING_BYTES: usize = 4096;

/// Data runs that pending `MAP`s point at.
const PENDING_RUNS: usize = 96;

/// Pending operations since the last sync point.
#[derive(Default)]
pub(crate) struct Journal {
    pending: heapless::Vec<u8, PENDING_BYTES>,
    nops: u32,
    /// Runs pending `MAP`s name, each with the pending-byte offset where its operation ends.
    runs: heapless::Vec<(Run, usize), PENDING_RUNS>,
    /// Something did not fit: the next sync point must checkpoint.
    overflow: bool,
    /// The checkpoint generation the pending operations follow.
    epoch: u64,
    /// Replaying: do not log what is being replayed.
    replaying: bool,
    /// While replaying: the number of the commit group being replayed.
    replay_group: u64,
    /// `(checkpoint generation, times data sums were taken in it)`: each moves
    /// [`Fs::write_gen`] on, so summed blocks are never rewritten in place afterwards.
    sum_bumps: (u64, u64),
}

/// Generations handed out while replaying lie above every generation a running volume uses
/// (`generation << 24 | records`), two per commit group: even for blocks the group's `MAP`s
/// name, odd for blocks replay itself allocates.
const REPLAY_GEN_BASE: u64 = 1 << 62;

impl Journal {
    fn clear(&mut self, epoch: u64) {
        self.pending.clear();
        self.runs.clear();
        self.nops = 0;
        self.overflow = false;
        self.epoch = epoch;
    }
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> Fs<'b, D, N, H> {
    /// Generation stamped on newly written data blocks: it changes at every checkpoint and
    /// every log record, and blocks of an older one are never rewritten in place.
    pub(crate) fn write_gen(&self) -> u64 {
        if self.journal.replaying {
            return REPLAY_GEN_BASE + 2 * self.journal.replay_group + 1;
        }
        let n = self.vol.log_records() + self.sum_bumps();
        (self.vol.generation() << 24) | (n & 0xff_ffff)
    }

    /// Data sums taken in the running checkpoint generation.
    fn sum_bumps(&self) -> u64 {
        match self.journal.sum_bumps {
            (gen, n) if gen == self.vol.generation() => n,
            _ => 0,
        }
    }

    /// Generation of blocks a replayed `MAP` points at (0 outside replay).
    pub(crate) fn mapped_gen(&self) -> u64 {
        if self.journal.replaying {
            REPLAY_GEN_BASE + 2 * self.journal.replay_group
        } else {
            0
        }
    }

    /// Does an extent of generation `gen` hold blocks that a `MAP` of the commit group being
    /// replayed names? Their contents are already final for this group: replay must not change
    /// them (a later operation of the group may have rewritten them in place).
    pub(crate) fn is_mapped_this_group(&self, gen: u64) -> bool {
        self.journal.replaying && gen == self.mapped_gen()
    }

    /// Forget pending operations that a checkpoint (perhaps an early one) made durable.
    pub(crate) fn journal_epoch(&mut self) {
        let epoch = self.vol.committed_generation();
        if self.journal.epoch != epoch {
            self.journal.clear(epoch);
        }
    }

    /// Record a completed operation.
    pub(crate) fn log(&mut self, op: &LogOp<'_>) {
        if self.journal.replaying {
            return;
        }
        self.journal_epoch();
        let j = &mut self.journal;
        if j.overflow {
            return;
        }
        let n = op.encoded_len();
        let at = j.pending.len();
        if n > MAX_RECORD - LOG_HEADER_LEN || j.pending.resize(at + n, 0).is_err() {
            j.overflow = true;
            return;
        }
        match j.pending.get_mut(at..).map(|dst| op.encode(dst)) {
            Some(Ok(())) => j.nops += 1,
            _ => {
                j.pending.truncate(at);
                j.overflow = true;
            }
        }
    }

    /// Record a completed write of `data` at `offset` of `ino`: by value when small or inline,
    /// else as `MAP`s of the blocks now holding the range.
    pub(crate) fn log_write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<()> {
        if self.journal.replaying || data.is_empty() {
            return Ok(());
        }
        let inode = self.read_inode(ino)?;
        let bs = u64::from(self.vol.space_info().block_size);
        let inline = inode.flags.get() & inode_flags::INLINE != 0;
        // By value, unless the bytes landed in a block a pending MAP already names: replaying
        // them would then rewrite that block, which must come back exactly as written.
        if inline
            || (data.len() <= SMALL_WRITE
                && !self.touches_mapped(ino, offset, data.len() as u64, bs)?)
        {
            self.log(&LogOp::Write { ino, offset, data });
            return Ok(());
        }
        let size = inode.size.get();
        let end = (offset + data.len() as u64).div_ceil(bs);
        let mut fblk = offset / bs;
        while fblk < end {
            let Some(e) = self.extent_at(ino, fblk)? else {
                // Cannot happen right after the write; refuse to log a hole as data.
                self.journal.overflow = true;
                return Ok(());
            };
            // At most `e.len`: the extent covers `fblk`.
            let count = ((e.fblk + u64::from(e.len)).min(end) - fblk) as BlockNr;
            self.log_map(ino, fblk, e.phys(fblk), count, size);
            fblk += u64::from(count);
        }
        Ok(())
    }

    /// Record that file blocks `fblk..fblk + count` of `ino` now live in disk blocks
    /// `block..` (written before the record that will carry this), and the size after it.
    pub(crate) fn log_map(
        &mut self,
        ino: u64,
        fblk: u64,
        block: BlockNr,
        count: BlockNr,
        size: u64,
    ) {
        self.log(&LogOp::Map {
            ino,
            fblk,
            block,
            count,
            size,
            sum: None,
        });
        let run = Run {
            start: block,
            len: count,
        };
        let end = self.journal.pending.len();
        if self.journal.runs.push((run, end)).is_err() {
            self.journal.overflow = true;
        }
    }

    /// Is the log being replayed (mount)?
    pub(crate) fn replaying(&self) -> bool {
        self.journal.replaying
    }

    /// Does `[offset, offset + len)` of `ino` lie (partly) in a block named by a pending MAP?
    fn touches_mapped(&mut self, ino: u64, offset: u64, len: u64, bs: u64) -> Result<bool> {
        if self.journal.runs.is_empty() {
            return Ok(false);
        }
        for fblk in offset / bs..(offset + len).div_ceil(bs) {
            if let Some(e) = self.extent_at(ino, fblk)? {
                let phys = e.phys(fblk);
                if self
                    .journal
                    .runs
                    .iter()
                    .any(|(r, _)| (r.start..r.start + r.len).contains(&phys))
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// A sync point: make every operation so far durable with log records (or a checkpoint
    /// when the log cannot take them).
    ///
    /// A failure turns the volume read-only: which of the operations reached the device is
    /// unknown, so no later sync point may claim to cover them (the failed one's data or
    /// record may be missing while a later record, logged on top, would be reported durable).
    pub(crate) fn sync_log(&mut self) -> Result<()> {
        self.writable()?;
        let r = self.sync_log_inner();
        if r.is_err() {
            self.vol.fail();
        }
        r
    }

    fn sync_log_inner(&mut self) -> Result<()> {
        self.journal_epoch();
        if self.journal.nops == 0 && !self.journal.overflow {
            return Ok(());
        }
        if self.journal.overflow || !self.log_fits()? {
            return self.checkpoint();
        }
        let mut runs: heapless::Vec<Run, PENDING_RUNS> = heapless::Vec::new();
        for (r, _) in self.journal.runs.iter() {
            let _ = runs.push(*r);
        }
        // Write the data back; then either every MAP carries the sum of its blocks (they
        // become durable with the record, under its flush) or the data is flushed first.
        self.vol.log_sync_data(&runs, false)?;
        let end = self.journal.pending.len();
        if !(self.vol.needs_flush() && self.journal_seal_sums(end)?) {
            self.vol.log_sync_data(&runs, true)?;
        }
        let max = self.vol.log_max_payload();
        let total = self.journal.pending.len();
        let (mut start, mut at, mut nops) = (0usize, 0usize, 0u32);
        while at < total {
            let mut rest = self.journal.pending.get(at..).unwrap_or(&[]);
            let before = rest.len();
            decode_op(&mut rest)?;
            let len = before - rest.len();
            if at + len - start > max {
                let chunk = self.journal.pending.get(start..at).ok_or(Error::Corrupt)?;
                self.vol.log_append(chunk, nops, false)?;
                start = at;
                nops = 0;
            }
            at += len;
            nops += 1;
        }
        let chunk = self.journal.pending.get(start..at).ok_or(Error::Corrupt)?;
        self.vol.log_append(chunk, nops, true)?;
        let epoch = self.journal.epoch;
        self.journal.clear(epoch);
        if self.vol.log_free_sectors() < self.vol.log_sectors() / 4 {
            // Past three quarters full: empty the log now rather than fail a later fsync.
            self.checkpoint()?;
        }
        Ok(())
    }

    /// Will the pending operations fit in the log as records?
    fn log_fits(&mut self) -> Result<bool> {
        let max = self.vol.log_max_payload();
        let mut sectors = 0;
        let mut payload = 0;
        let mut rest: &[u8] = &self.journal.pending;
        while !rest.is_empty() {
            let before = rest.len();
            decode_op(&mut rest)?;
            let len = before - rest.len();
            if payload + len > max {
                sectors += self.vol.log_record_sectors(payload).unwrap_or(u64::MAX / 2);
                payload = 0;
            }
            payload += len;
        }
        sectors += self.vol.log_record_sectors(payload).unwrap_or(u64::MAX / 2);
        Ok(sectors <= self.vol.log_free_sectors())
    }

    /// Replay the log after mount, then checkpoint if anything was replayed.
    pub(crate) fn replay(&mut self) -> Result<()> {
        let complete = self.committed_records()?;
        if complete == 0 {
            return Ok(());
        }
        self.journal.replaying = true;
        let r = self.replay_records(complete);
        self.journal.replaying = false;
        r?;
        debug!("replayed {} log records", complete);
        self.checkpoint()
    }

    /// Pass 1 of replay: how many records, from the start of the log, form complete commit
    /// groups whose data arrived. A group whose `MAP` sums do not match the blocks on the
    /// device did not reach stable media whole: it, and anything after it, is not committed.
    fn committed_records(&mut self) -> Result<u64> {
        let mut rec = [0u8; MAX_RECORD];
        let mut cur = self.vol.log_cursor();
        let (mut seen, mut complete) = (0u64, 0u64);
        while let Some((n, commit)) = self.read_record(&mut cur, &mut rec)? {
            let mut rest = rec.get(..n).unwrap_or(&[]);
            while !rest.is_empty() {
                if let LogOp::Map {
                    block, count, sum, ..
                } = decode_op(&mut rest)?
                {
                    // A run outside the data area is damage, however well the record's
                    // checksum holds: refuse it before reading or claiming that many blocks.
                    self.vol.check_data_run(Run {
                        start: block,
                        len: count,
                    })?;
                    if let Some(sum) = sum {
                        if self.device_data_sum(block, count)? != sum {
                            debug!("log group after record {} lacks its data", complete);
                            return Ok(complete);
                        }
                    }
                }
            }
            seen += 1;
            if commit {
                complete = seen;
            }
        }
        Ok(complete)
    }

    /// The data sum of blocks `block..block + count` as they are on the device.
    fn device_data_sum(&mut self, block: BlockNr, count: BlockNr) -> Result<u32> {
        let mut acc = 0;
        for i in 0..count {
            let id = self.vol.pin_data(block.saturating_add(i))?;
            let r = self
                .vol
                .slot(id)
                .map(|b| data_sum_step(acc, u64::from(i), b));
            self.vol.unpin(id);
            acc = r?;
        }
        Ok(acc)
    }

    fn replay_records(&mut self, records: u64) -> Result<()> {
        let mut rec = [0u8; MAX_RECORD];
        // Pass 2: claim every data block the records map, before anything allocates.
        let mut cur = self.vol.log_cursor();
        for _ in 0..records {
            let (n, _) = self
                .read_record(&mut cur, &mut rec)?
                .ok_or(Error::Corrupt)?;
            let mut rest = rec.get(..n).unwrap_or(&[]);
            while !rest.is_empty() {
                if let LogOp::Map { block, count, .. } = decode_op(&mut rest)? {
                    let run = Run {
                        start: block,
                        len: count,
                    };
                    // (Checked in pass 1 already; a record cannot change in between, but the
                    // loop below must never depend on that.)
                    self.vol.check_data_run(run)?;
                    // Whole runs when they are free, else block by block: a block rewritten in
                    // place is named by several records and is claimed by the first.
                    if !self.vol.claim(run)? {
                        for b in block..block.saturating_add(count) {
                            self.vol.claim(Run { start: b, len: 1 })?;
                        }
                    }
                }
            }
        }
        // Pass 3: run the operations again, in order.
        self.vol.begin_op(0, false)?;
        let mut cur = self.vol.log_cursor();
        let r = (|| {
            self.journal.replay_group = 0;
            for _ in 0..records {
                let (n, commit) = self
                    .read_record(&mut cur, &mut rec)?
                    .ok_or(Error::Corrupt)?;
                let mut rest = rec.get(..n).unwrap_or(&[]);
                while !rest.is_empty() {
                    let op = decode_op(&mut rest)?;
                    self.apply(&op)?;
                }
                if commit {
                    self.journal.replay_group += 1;
                }
            }
            Ok(())
        })();
        self.vol.end_op();
        r
    }

    /// Copy the payload of the record at `cur` into `out`; returns its length and whether the
    /// record ends a commit group, or `None` past the last valid record of the chain.
    fn read_record(
        &mut self,
        cur: &mut crate::volume::LogCursor,
        out: &mut [u8],
    ) -> Result<Option<(usize, bool)>> {
        let got = self.vol.log_read(cur, |h, rec| -> Result<(usize, bool)> {
            let mut n = 0;
            for op in ops(rec, h) {
                let op = op?;
                let len = op.encoded_len();
                let dst = out.get_mut(n..n + len).ok_or(Error::Corrupt)?;
                op.encode(dst)?;
                n += len;
            }
            Ok((n, h.flags.get() & LOG_COMMIT != 0))
        })?;
        got.transpose()
    }

    /// Apply one replayed operation.
    fn apply(&mut self, op: &LogOp<'_>) -> Result<()> {
        match *op {
            LogOp::Create {
                parent,
                ino,
                kind,
                name,
            } => {
                let kind = FileKind::from_u8(kind).ok_or(Error::Corrupt)?;
                self.create_in(parent, name, kind, Some(ino)).map(|_| ())
            }
            LogOp::Remove { parent, name } => self.remove_in(parent, name, None),
            LogOp::Rename {
                from_dir,
                to_dir,
                from,
                to,
            } => self.rename_in(from_dir, from, to_dir, to),
            LogOp::SetSize { ino, size } => self.op(8, true, |fs| fs.set_size(ino, size)),
            LogOp::Write { ino, offset, data } => self
                .op(4, true, |fs| fs.write_data(ino, offset, data))
                .map(|_| ()),
            LogOp::Map {
                ino,
                fblk,
                block,
                count,
                size,
                ..
            } => self.replay_map(ino, fblk, block, count, size),
        }
    }

    /// Point file blocks `fblk..fblk + count` of `ino` at disk blocks `block..`, freeing what
    /// they pointed at before (unless it is the same block), and set the size.
    fn replay_map(
        &mut self,
        ino: u64,
        fblk: u64,
        block: BlockNr,
        count: BlockNr,
        size: u64,
    ) -> Result<()> {
        let mut i = 0;
        while i < count {
            let fb = fblk.checked_add(u64::from(i)).ok_or(Error::Corrupt)?;
            let phys = block.checked_add(i).ok_or(Error::Corrupt)?;
            let inline = self.read_inode(ino)?.flags.get() & inode_flags::INLINE != 0;
            match self.extent_at(ino, fb)? {
                Some(e) if e.phys(fb) == phys => i += 1,
                // (An inline file's bytes move into a block of their own first.)
                Some(_) | None if inline => {
                    self.op(8, false, |fs| fs.remap_block(ino, fb, phys))?;
                    i += 1;
                }
                Some(_) => {
                    self.op(8, false, |fs| fs.remap_block(ino, fb, phys))?;
                    i += 1;
                }
                None => {
                    // A hole (typically the blocks appended since the checkpoint): map as much
                    // of the run as lies in it with one extent, not one per block.
                    let next = match fb.checked_add(1) {
                        Some(n) => self.extent_from(ino, n)?.map_or(u64::MAX, |e| e.fblk),
                        None => u64::MAX,
                    };
                    let k = (count - i).min(BlockNr::try_from(next - fb).unwrap_or(BlockNr::MAX));
                    self.op(8, false, |fs| fs.map_hole(ino, fb, phys, k))?;
                    i += k;
                }
            }
        }
        self.op(8, true, |fs| {
            let mut inode = fs.read_inode(ino)?;
            inode.size = size.into();
            fs.write_inode(ino, &inode)
        })
    }

    /// Give every `MAP` among the first `end` pending bytes the sum of its blocks, taken from
    /// the cache (no I/O). True when all of them have one: the data may then reach stable
    /// media under the record's own flush. False when some block is not cached and clean (the
    /// caller flushes the data before the record instead). Either way, summed blocks are
    /// never rewritten in place from here on (the write generation moves).
    pub(crate) fn journal_seal_sums(&mut self, end: usize) -> Result<bool> {
        let (mut pos, mut all, mut any) = (0usize, true, false);
        while pos < end {
            let mut rest = self.journal.pending.get(pos..end).unwrap_or(&[]);
            let before = rest.len();
            let op = decode_op(&mut rest)?;
            let len = before - rest.len();
            if let LogOp::Map {
                block,
                count,
                sum: None,
                ..
            } = op
            {
                match self.vol.cached_data_sum(block, count) {
                    Some(sum) => {
                        let dst = self
                            .journal
                            .pending
                            .get_mut(pos..pos + len)
                            .ok_or(Error::Corrupt)?;
                        set_map_sum(dst, sum)?;
                        any = true;
                    }
                    None => all = false,
                }
            }
            pos += len;
        }
        if any {
            self.journal.sum_bumps = (self.vol.generation(), self.sum_bumps() + 1);
        }
        Ok(all)
    }
}

/// The journal as the pipeline sees it: byte offsets into the pending operations.
#[cfg(feature = "nowait")]
impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> Fs<'b, D, N, H> {
    /// Bytes of pending operations.
    pub(crate) fn journal_len(&self) -> usize {
        self.journal.pending.len()
    }

    /// Did an operation not fit in the pending log (so the next sync point checkpoints)?
    pub(crate) fn journal_overflowed(&self) -> bool {
        self.journal.overflow
    }

    /// The checkpoint generation the pending operations follow.
    pub(crate) fn journal_epoch_of(&self) -> u64 {
        self.journal.epoch
    }

    /// The next record's worth of operations from byte `at` (up to `end`): its end, the number
    /// of operations, and whether it is the group's last.
    pub(crate) fn journal_chunk(&self, at: usize, end: usize) -> Result<(usize, u32, bool)> {
        let max = self.vol.log_max_payload();
        let mut pos = at;
        let mut nops = 0;
        while pos < end {
            let mut rest = self.journal.pending.get(pos..end).unwrap_or(&[]);
            let before = rest.len();
            decode_op(&mut rest)?;
            let len = before - rest.len();
            if pos + len - at > max && nops > 0 {
                break;
            }
            pos += len;
            nops += 1;
        }
        Ok((pos, nops, pos >= end))
    }

    /// Pending bytes `at..end` and the volume, borrowed together.
    pub(crate) fn journal_bytes_and_vol(
        &mut self,
        at: usize,
        end: usize,
    ) -> (&[u8], &mut crate::volume::Volume<'b, D, N>) {
        (
            self.journal.pending.get(at..end).unwrap_or(&[]),
            &mut self.vol,
        )
    }

    /// The first `end` bytes of pending operations are durable: drop them.
    pub(crate) fn journal_drop_prefix(&mut self, end: usize) {
        let mut rest = self.journal.pending.get(..end).unwrap_or(&[]);
        let mut n = 0;
        while !rest.is_empty() && decode_op(&mut rest).is_ok() {
            n += 1;
        }
        let len = self.journal.pending.len();
        let end = end.min(len);
        self.journal.pending.copy_within(end..len, 0);
        self.journal.pending.truncate(len - end);
        self.journal.nops = self.journal.nops.saturating_sub(n);
        // Runs of the dropped operations are on the device; the rest move down with them.
        self.journal.runs.retain(|(_, e)| *e > end);
        for (_, e) in self.journal.runs.iter_mut() {
            *e -= end;
        }
    }

    /// Start writing the data blocks that pending `MAP`s of blocking writes point at.
    pub(crate) fn start_mapped_data(&mut self) -> Result<()> {
        for i in 0..self.journal.runs.len() {
            let Some((r, _)) = self.journal.runs.get(i).copied() else {
                continue;
            };
            for b in r.start..r.start + r.len {
                if !self.vol.start_block_write(b, true)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Are all of them on the device (starting any not yet started)?
    pub(crate) fn mapped_data_done(&mut self) -> Result<bool> {
        self.start_mapped_data()?;
        for i in 0..self.journal.runs.len() {
            let Some((r, _)) = self.journal.runs.get(i).copied() else {
                continue;
            };
            for b in r.start..r.start + r.len {
                match self.vol.block_write_state(b) {
                    None => return Ok(false),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(())) => {}
                }
                if self.vol.block_dirty(b) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }
}
