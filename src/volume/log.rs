//! The log area: where `fsync` makes changes durable without a checkpoint.
//!
//! Records (see [`crate::wire::log`]) are appended at sector granularity from the start of the
//! log area; a checkpoint empties the log by starting a new epoch (its generation), so no
//! sector holding a record of the current epoch is ever written twice. Each record is written
//! from the smallest of a few power-of-two buffers (one sector up to 4 KiB) that holds it, in
//! one request, with FUA where the device has it (else write + flush).
//!
//! Before a record that maps data blocks is written, those blocks are written and flushed:
//! a record must never become durable while the data it points at is not.

use crate::device::{BlockDevice, Command};
use crate::error::{Error, Result};
use crate::inject::Bugs;
use crate::space::Run;
use crate::wire::log::{
    check_header, verify_record, LogHeader, RecordWriter, LOG_COMMIT, LOG_HEADER_LEN,
};
use crate::wire::BlockNr;

use super::Volume;

/// Largest record, in bytes.
pub const MAX_RECORD: usize = 4096;

/// Bytes of the record buffers for a device of `sector_size`: sizes `sector_size << i` up to
/// `max(MAX_RECORD, sector_size)`.
pub const fn log_buffers_len(sector_size: usize) -> usize {
    let top = if MAX_RECORD > sector_size {
        MAX_RECORD
    } else {
        sector_size
    };
    2 * top - sector_size
}

/// Position and chain state of the log.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LogState {
    /// First sector of the log area.
    pub start: u64,
    /// Sectors in the log area.
    pub sectors: u64,
    /// Next free sector (relative to `start`).
    pub pos: u64,
    /// Sequence number of the next record.
    pub seq: u64,
    /// crc of the last record written (0 at the start of an epoch).
    pub prev_crc: u32,
}

/// A sealed record and the buffer holding it.
struct Sealed<'b> {
    idx: usize,
    buf: &'b mut [u8],
    sectors: u64,
    crc: u32,
}

/// Where replay is in the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogCursor {
    pos: u64,
    seq: u64,
    prev_crc: u32,
}

impl<'b, D: BlockDevice<'b>, const N: usize> Volume<'b, D, N> {
    /// Sectors of log space still free in this epoch.
    pub fn log_free_sectors(&self) -> u64 {
        self.log.sectors.saturating_sub(self.log.pos)
    }

    /// Sectors of log space in all.
    pub fn log_sectors(&self) -> u64 {
        self.log.sectors
    }

    /// Records written since the last checkpoint.
    pub fn log_records(&self) -> u64 {
        self.log.seq
    }

    /// The record buffer that fits `bytes` (index into `self.bufs`).
    fn buf_for(&self, bytes: usize) -> Option<usize> {
        self.bufs
            .iter()
            .position(|b| b.as_ref().is_some_and(|b| b.len() >= bytes))
    }

    /// Sectors a record of `payload` bytes takes (a power of two).
    pub fn log_record_sectors(&self, payload: usize) -> Option<u64> {
        let ss = self.store.dev.geometry().sector_size as usize;
        let i = self.buf_for(LOG_HEADER_LEN + payload)?;
        Some((ss << i) as u64 / ss as u64)
    }

    /// Largest payload one record can carry.
    pub fn log_max_payload(&self) -> usize {
        self.bufs
            .iter()
            .flatten()
            .map(|b| b.len())
            .max()
            .unwrap_or(0)
            .saturating_sub(LOG_HEADER_LEN)
    }

    /// Write back the cached data blocks of `runs` that are dirty, then (if `flush`) flush the
    /// device, so that a record mapping them without data sums may follow.
    pub fn log_sync_data(&mut self, runs: &[Run], flush: bool) -> Result<()> {
        // The flush below is a blocking `device::run`.
        self.wait_in_flight();
        let st = &mut self.store;
        for r in runs {
            st.cache.write_back_run(&mut st.dev, r.start, r.len)?;
        }
        // Flush even when nothing was written just now: blocks written back earlier (to make
        // room in the cache) may still sit in the device's volatile cache.
        let geo = st.dev.geometry();
        if flush
            && !runs.is_empty()
            && geo.volatile_cache
            && !st.space.bugs.has(Bugs::SKIP_DEFERRED_FLUSH)
        {
            crate::device::flush(&mut st.dev)?;
        }
        Ok(())
    }

    /// Seal the next record of the chain carrying `ops` into the smallest record buffer that
    /// holds it, taking the buffer out of `self.bufs` (the caller hands it to the device and
    /// puts it back from the completion). `NoSpace` when the log is full, or when the running
    /// generation is the last (a record could only be replayed by a checkpoint that fails).
    fn seal_next(&mut self, ops: &[u8], nops: u32, commit: bool) -> Result<Sealed<'b>> {
        self.writable()?;
        self.generation_left()?;
        let ss = self.store.dev.geometry().sector_size as usize;
        let idx = self
            .buf_for(LOG_HEADER_LEN + ops.len())
            .ok_or(Error::TooLarge)?;
        let buf = self
            .bufs
            .get_mut(idx)
            .and_then(Option::take)
            .ok_or(Error::WouldBlock)?;
        let sectors = (buf.len() / ss) as u64;
        let epoch = self.store.space.committed;
        let flags = if commit { LOG_COMMIT } else { 0 };
        let sealed = if self.log.pos + sectors > self.log.sectors {
            Err(Error::NoSpace)
        } else {
            RecordWriter::new(&mut *buf).and_then(|mut w| {
                w.push_encoded(ops, nops)?;
                w.seal(ss, epoch, self.log.seq, self.log.prev_crc, flags)
            })
        };
        match sealed {
            Ok((_, crc)) => Ok(Sealed {
                idx,
                buf,
                sectors,
                crc,
            }),
            Err(e) => {
                self.put_buf(idx, Some(buf));
                Err(e)
            }
        }
    }

    /// Wait until nothing is in flight on the device, as the blocking helpers of
    /// [`crate::device`] (`run`, `flush`) require: with another request queued they refuse
    /// (`IoError::Unsupported`) rather than risk reaping its completion.
    ///
    /// A sync point cannot assume an idle queue: `quiesce` only drives the queued writes and
    /// the commit group to their end, while a `NOWAIT` read (or a `NOWAIT` write's probe)
    /// that missed the cache leaves its read in flight (its caller got `WouldBlock` and comes
    /// back later), and the pipeline starts write-backs of dirty slots it does not wait for.
    /// The checkpoint waits here for the same reason. Completions reaped here are
    /// applied to the cache as if the pipeline had reaped them (a failed read is kept for the
    /// block's next reader; a failed write-back leaves the block dirty), and a log or flush
    /// completion stays stashed for [`poll_io`](Self::poll_io): nothing is dropped.
    pub(super) fn wait_in_flight(&mut self) {
        let st = &mut self.store;
        st.cache.drain_device(&mut st.dev);
    }

    fn put_buf(&mut self, idx: usize, buf: Option<&'b mut [u8]>) {
        if let Some(slot) = self.bufs.get_mut(idx) {
            *slot = buf;
        }
    }

    /// A record of `sectors` with checksum `crc` was appended.
    fn log_advance(&mut self, sectors: u64, crc: u32) {
        self.log.pos += sectors;
        self.log.seq += 1;
        self.log.prev_crc = crc;
    }

    /// Append one record carrying `ops` (`nops` encoded operations), durably. `commit` marks
    /// the last record of a sync point. Fails with `NoSpace` when the log is full (the caller
    /// checkpoints instead) and `TooLarge` when `ops` does not fit one record.
    pub fn log_append(&mut self, ops: &[u8], nops: u32, commit: bool) -> Result<()> {
        // The record write (and its flush) are blocking `device::run`s.
        self.wait_in_flight();
        let Sealed {
            idx,
            buf,
            sectors,
            crc,
        } = self.seal_next(ops, nops, commit)?;
        let geo = self.store.dev.geometry();
        let lba = self.log.start + self.log.pos;
        let fua = self.has_fua();
        let st = &mut self.store;
        let c = crate::device::run(&mut st.dev, Command::Write { lba, buf, fua });
        self.put_buf(idx, c.buf);
        let r = c.result.map_err(Error::from).and_then(|()| {
            if geo.volatile_cache && !fua && !self.store.space.bugs.has(Bugs::SKIP_DEFERRED_FLUSH) {
                crate::device::flush(&mut self.store.dev).map_err(Error::from)
            } else {
                Ok(())
            }
        });
        if let Err(e) = r {
            // The record may or may not be on the device; nothing after it can be trusted
            // to chain correctly, so stop writing.
            self.read_only = true;
            return Err(e);
        }
        self.log_advance(sectors, crc);
        Ok(())
    }

    /// Start of the log for replay.
    pub fn log_cursor(&self) -> LogCursor {
        LogCursor::default()
    }

    /// Read the record at `cursor` and hand it to `f` (header, whole record bytes); advances the
    /// cursor. Returns `Ok(false)` at the end of the log: unwritten space, a record of another
    /// epoch, a torn or corrupt record, or a break in the chain.
    pub fn log_read<R>(
        &mut self,
        cursor: &mut LogCursor,
        f: impl FnOnce(&LogHeader, &[u8]) -> R,
    ) -> Result<Option<R>> {
        let ss = self.store.dev.geometry().sector_size as usize;
        let left = self.log.sectors.saturating_sub(cursor.pos);
        if left == 0 {
            return Ok(None);
        }
        let epoch = self.store.space.committed;
        let lba = self.log.start + cursor.pos;
        // The first sector says how long the record is.
        let first = self
            .bufs
            .first_mut()
            .and_then(Option::take)
            .ok_or(Error::WouldBlock)?;
        let c = crate::device::read_blocks(&mut self.store.dev, lba, first);
        let hdr = c
            .buf
            .as_deref()
            .and_then(|b| check_header(b, epoch, cursor.seq, cursor.prev_crc, left));
        if let Some(slot) = self.bufs.first_mut() {
            *slot = c.buf;
        }
        c.result?;
        let Some(h) = hdr else { return Ok(None) };
        let sectors = h.sectors.get() as usize;
        let Some(i) = self.bufs.iter().position(|b| {
            b.as_ref()
                .is_some_and(|b| Some(b.len()) == sectors.checked_mul(ss))
        }) else {
            return Ok(None);
        };
        let buf = self
            .bufs
            .get_mut(i)
            .and_then(Option::take)
            .ok_or(Error::WouldBlock)?;
        let c = crate::device::read_blocks(&mut self.store.dev, lba, buf);
        let out = match (&c.result, c.buf.as_deref()) {
            (Ok(()), Some(rec)) => verify_record(rec, &h).map(|crc| (crc, f(&h, rec))),
            _ => None,
        };
        if let Some(slot) = self.bufs.get_mut(i) {
            *slot = c.buf;
        }
        c.result?;
        let Some((crc, r)) = out else { return Ok(None) };
        cursor.pos += sectors as u64;
        cursor.seq += 1;
        cursor.prev_crc = crc;
        Ok(Some(r))
    }
}

/// Tag of an asynchronous log-record write.
pub const TAG_LOG: u32 = crate::cache::FOREIGN_TAG_BASE + 1;
/// Tag of an asynchronous flush.
pub const TAG_FLUSH: u32 = crate::cache::FOREIGN_TAG_BASE + 2;

/// A foreign request that finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// The log record started by [`Volume::log_start`] is written (and durable, if FUA).
    Log(Result<()>),
    /// The flush started by [`Volume::flush_start`] is done.
    Flush(Result<()>),
}

impl<'b, D: BlockDevice<'b>, const N: usize> Volume<'b, D, N> {
    /// Does a write need a flush after it to be durable (volatile cache and no FUA)?
    pub fn needs_flush(&self) -> bool {
        self.store.dev.geometry().volatile_cache
            && !self.has_fua()
            && !self.store.space.bugs.has(Bugs::SKIP_DEFERRED_FLUSH)
    }

    /// Can FUA be used on this device?
    pub fn has_fua(&self) -> bool {
        let g = self.store.dev.geometry();
        g.fua && g.volatile_cache
    }

    /// Start writing a data block that is dirty in the cache, without waiting. `Ok(false)`:
    /// the device queue is full, try again after polling.
    pub fn start_block_write(&mut self, block: BlockNr, fua: bool) -> Result<bool> {
        let fua = fua && self.has_fua();
        let st = &mut self.store;
        st.cache.start_write(&mut st.dev, block, fua)
    }

    /// Where the last write of `block` stands (`None`: in flight).
    pub fn block_write_state(&mut self, block: BlockNr) -> Option<Result<()>> {
        self.store.cache.write_state(block)
    }

    /// Enter or leave probing mode: cache misses start their read and fail with `WouldBlock`.
    pub fn set_probing(&mut self, on: bool) {
        self.store.cache.set_no_io(on);
    }

    /// Is probing mode on?
    pub fn is_probing(&self) -> bool {
        self.store.cache.is_no_io()
    }

    /// Bring data block `block` into the cache (in probing mode: start the read and answer
    /// `WouldBlock`).
    pub fn prefetch_data(&mut self, block: BlockNr) -> Result<()> {
        let st = &mut self.store;
        st.cache.read(&mut st.dev, block, false).map(|_| ())
    }

    /// The [`data_sum`](crate::wire::log::data_sum) of blocks `start..start + count` as they
    /// are on the device, if every one is cached, clean (written) and not in flight; `None`
    /// otherwise. Never does I/O.
    pub fn cached_data_sum(&self, start: BlockNr, count: BlockNr) -> Option<u32> {
        let cache = &self.store.cache;
        let end = start.checked_add(count)?;
        let clean = |b: BlockNr| {
            cache
                .find(b)
                .filter(|&id| !cache.is_dirty(id) && cache.is_resident(b))
                .and_then(|id| cache.data(id).ok())
        };
        if (start..end).any(|b| clean(b).is_none()) {
            return None;
        }
        Some(crate::wire::log::data_sum((start..end).filter_map(clean)))
    }

    /// Is `block` cached and dirty?
    pub fn block_dirty(&self, block: BlockNr) -> bool {
        self.store
            .cache
            .find(block)
            .is_some_and(|id| self.store.cache.is_dirty(id))
    }

    /// Is `block` in the cache and not in flight?
    pub fn block_resident(&self, block: BlockNr) -> bool {
        self.store.cache.is_resident(block)
    }

    /// Is `block` in flight?
    pub fn block_in_flight(&self, block: BlockNr) -> bool {
        self.store.cache.in_flight(block)
    }

    /// Start writing back dirty cache slots (at most `max`) without waiting.
    pub fn start_writebacks(&mut self, max: usize) -> Result<usize> {
        let st = &mut self.store;
        st.cache.start_writebacks(&mut st.dev, max)
    }

    /// Cache slots usable without writing anything back.
    pub fn reusable_slots(&self) -> usize {
        self.store.cache.reusable_slots()
    }

    /// Start appending a record (see [`log_append`](Self::log_append)) without waiting; its
    /// completion comes back from [`poll_io`](Self::poll_io) as [`Finished::Log`]. Written with
    /// FUA when the device has it. `Ok(false)`: the queue is full, nothing changed.
    pub fn log_start(&mut self, ops: &[u8], nops: u32, commit: bool) -> Result<bool> {
        let Sealed {
            idx,
            buf,
            sectors,
            crc,
        } = self.seal_next(ops, nops, commit)?;
        let lba = self.log.start + self.log.pos;
        let fua = self.has_fua();
        let req = crate::device::Request {
            tag: TAG_LOG,
            command: Command::Write { lba, buf, fua },
        };
        match self.store.dev.submit(req) {
            Ok(()) => {
                self.log_advance(sectors, crc);
                self.log_buf_in_flight = Some(idx);
                Ok(true)
            }
            Err(crate::device::Busy(r)) => {
                if let Command::Write { buf, .. } = r.command {
                    self.put_buf(idx, Some(buf));
                }
                Ok(false)
            }
        }
    }

    /// Start a flush without waiting; it comes back as [`Finished::Flush`]. `Ok(false)`: the
    /// queue is full.
    pub fn flush_start(&mut self) -> Result<bool> {
        match self.store.dev.submit(crate::device::Request {
            tag: TAG_FLUSH,
            command: Command::Flush,
        }) {
            Ok(()) => Ok(true),
            Err(_) => Ok(false),
        }
    }

    /// Reap at most one completion: the cache's own are applied inside; a log or flush
    /// completion is returned. `None` when nothing (foreign) finished this time.
    pub fn poll_io(&mut self) -> Option<Finished> {
        let st = &mut self.store;
        if !st.cache.take_foreign_peek() && !st.cache.poll_device(&mut st.dev) {
            return None;
        }
        let c = self.store.cache.take_foreign()?;
        let r = c.result.map_err(Error::from);
        match c.tag {
            TAG_LOG => {
                if let (Some(i), Some(buf)) = (self.log_buf_in_flight.take(), c.buf) {
                    if let Some(slot) = self.bufs.get_mut(i) {
                        *slot = Some(buf);
                    }
                }
                if r.is_err() {
                    self.read_only = true;
                }
                Some(Finished::Log(r))
            }
            TAG_FLUSH => Some(Finished::Flush(r)),
            _ => None,
        }
    }
}
