//! The block cache: a fixed number of block-sized slots over memory the caller provides.
//!
//! Every byte of filesystem I/O goes through a slot — except whole blocks of file data that
//! are not cached, which may go straight between the caller's buffer and a device offering the
//! synchronous fast path (`crate::volume` `direct.rs`) — and every slot buffer is handed to the
//! device *by value* (as `&'b mut [u8]`) for the length of a request and returned with its
//! completion. A slot with I/O in flight therefore has no buffer: it cannot be read, written
//! or evicted, and the borrow checker enforces it (see [`crate::device`]).
//!
//! Policy: write-back, least-recently-used eviction among unpinned slots, preferring clean
//! ones. A dirty slot can always be written back early, because the copy-on-write rule means a
//! dirty block is never part of the last committed tree (its address is a new allocation), so
//! writing it does not disturb anything a crash could fall back to. Metadata slots are sealed
//! (checksummed) right before they are written.
//!
//! RAM: `N` slot descriptors plus `N × block_size` bytes of the caller's buffer.

use crate::device::{BlockDevice, Command, Completion, Request, Tag};
use crate::error::{Error, IoError, Result};
use crate::wire::{BlockHeader, BlockNr};

/// Index of a cache slot. Valid until the slot is evicted; pin it to keep it.
pub type SlotId = usize;

/// Tags at or above this value belong to callers other than the cache (flush, superblock).
pub const FOREIGN_TAG_BASE: Tag = 0x8000_0000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Holds nothing.
    Empty,
    /// Holds `block`, same as on the device.
    Clean,
    /// Holds `block`, newer than the device.
    Dirty,
    /// A read of `block` is in flight.
    Reading,
    /// A write of `block` is in flight; the slot becomes Clean (or Dirty, if redirtied) after.
    Writing,
    /// The read of `block` failed (`error` says how); the contents are garbage. The block
    /// number is kept so that the next reader of `block` — typically a `NOWAIT` caller
    /// coming back after `WouldBlock` — is told, instead of starting the same read again for
    /// ever. Reusable like an empty slot.
    Failed,
}

struct Slot<'b> {
    buf: Option<&'b mut [u8]>,
    block: BlockNr,
    state: State,
    pins: u16,
    lru: u32,
    /// Metadata block: seal the checksum before writing.
    meta: bool,
    /// Contents were verified after the last read from the device (or created here).
    checked: bool,
    /// The last I/O on this slot failed with this error. A failed read leaves the slot
    /// `Failed`; a failed write leaves it `Dirty` (the bytes are still the newest) and the
    /// error is for whoever waits for that write, never for readers of the block.
    error: Option<IoError>,
}

/// Counters for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CacheStats {
    /// Lookups served from a slot.
    pub hits: u64,
    /// Lookups that read the device.
    pub misses: u64,
    /// Dirty slots written back to make room.
    pub evict_writes: u64,
}

/// A write-back block cache of `N` slots.
pub struct BlockCache<'b, const N: usize> {
    slots: [Slot<'b>; N],
    /// Completions of other callers' requests (log records, flushes) reaped while the cache
    /// waited for its own; handed out by [`take_foreign`](Self::take_foreign), never dropped.
    foreign: heapless::Deque<Completion<'b>, 8>,
    /// Probing for `NOWAIT`: a miss starts the read and fails with `WouldBlock` instead of
    /// waiting, and nothing is written back to make room.
    no_io: bool,
    block_size: usize,
    sectors_per_block: u32,
    tick: u32,
    stats: CacheStats,
    /// Changes to cached contents (a slot written, created or dropped while dirty): an
    /// operation that failed with this count unchanged left nothing half done in memory.
    mutations: u32,
    /// Refuse every read and new slot (the volume shut down; see [`Error::ShutDown`]).
    shut_down: bool,
}

impl<'b, const N: usize> BlockCache<'b, N> {
    /// Build a cache over `mem`, cutting it into `N` slots of `block_size` bytes.
    ///
    /// `mem` must hold at least `N * block_size` bytes; `block_size` must be a multiple of
    /// `sector_size`. Fails with `InvalidArgument` otherwise.
    pub fn new(mem: &'b mut [u8], block_size: usize, sector_size: usize) -> Result<Self> {
        if block_size == 0
            || sector_size == 0
            || block_size % sector_size != 0
            || !Self::fits(mem.len(), block_size)
        {
            return Err(Error::InvalidArgument);
        }
        Ok(Self::build(
            mem,
            block_size,
            (block_size / sector_size) as u32,
        ))
    }

    /// Do `mem_len` bytes hold the `N` (at least one) slots of `block_size` bytes? The part of
    /// [`new`](Self::new)'s checks a volume still makes once it has checked the block size
    /// against the sector size, before it builds the cache in place with [`build`](Self::build).
    pub(crate) fn fits(mem_len: usize, block_size: usize) -> bool {
        N > 0 && mem_len >= N * block_size
    }

    /// [`new`](Self::new) after its checks passed (were it not, a slot left
    /// without a buffer would only ever answer `WouldBlock`; nothing panics).
    pub(crate) fn build(mem: &'b mut [u8], block_size: usize, sectors_per_block: u32) -> Self {
        let mut cache = BlockCache {
            slots: [const {
                Slot {
                    buf: None,
                    block: BlockNr::MAX,
                    state: State::Empty,
                    pins: 0,
                    lru: 0,
                    meta: false,
                    checked: false,
                    error: None,
                }
            }; N],
            foreign: heapless::Deque::new(),
            no_io: false,
            block_size,
            sectors_per_block,
            tick: 0,
            stats: CacheStats::default(),
            mutations: 0,
            shut_down: false,
        };
        for (s, b) in cache
            .slots
            .iter_mut()
            .zip(mem.chunks_exact_mut(block_size.max(1)))
        {
            s.buf = Some(b);
        }
        cache
    }

    /// The block size the cache was built for.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Hit / miss counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// How many times cached contents changed (wrapping): see the `mutations` field.
    pub fn mutations(&self) -> u32 {
        self.mutations
    }

    /// From now on refuse every read and every new slot with [`Error::ShutDown`]. In-flight
    /// requests still complete into their slots (their buffers must come back).
    pub fn shut_down(&mut self) {
        self.shut_down = true;
    }

    /// Has [`shut_down`](Self::shut_down) been called?
    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    fn refuse_if_shut_down(&self) -> Result<()> {
        if self.shut_down {
            Err(Error::ShutDown)
        } else {
            Ok(())
        }
    }

    fn slot(&self, id: SlotId) -> Result<&Slot<'b>> {
        self.slots.get(id).ok_or(Error::InvalidArgument)
    }

    fn slot_mut(&mut self, id: SlotId) -> Result<&mut Slot<'b>> {
        self.slots.get_mut(id).ok_or(Error::InvalidArgument)
    }

    #[inline(never)]
    fn touch(&mut self, id: SlotId) {
        self.tick = self.tick.wrapping_add(1);
        let t = self.tick;
        if let Some(s) = self.slots.get_mut(id) {
            s.lru = t;
        }
    }

    /// The slot holding `block`, if any (in any state).
    pub fn find(&self, block: BlockNr) -> Option<SlotId> {
        self.slots
            .iter()
            .position(|s| s.state != State::Empty && s.block == block)
    }

    /// Keep slot `id` from being evicted until [`unpin`](Self::unpin).
    #[inline(never)]
    pub fn pin(&mut self, id: SlotId) {
        if let Some(s) = self.slots.get_mut(id) {
            s.pins = s.pins.saturating_add(1);
        }
    }

    /// Undo one [`pin`](Self::pin).
    #[inline(never)]
    pub fn unpin(&mut self, id: SlotId) {
        if let Some(s) = self.slots.get_mut(id) {
            s.pins = s.pins.saturating_sub(1);
        }
    }

    /// Has the slot's content been verified since it was read?
    pub fn is_checked(&self, id: SlotId) -> bool {
        self.slot(id).is_ok_and(|s| s.checked)
    }

    /// Record that the slot's content was verified.
    pub fn set_checked(&mut self, id: SlotId) {
        if let Ok(s) = self.slot_mut(id) {
            s.checked = true;
        }
    }

    /// Is the slot dirty (newer than the device)?
    pub fn is_dirty(&self, id: SlotId) -> bool {
        self.slot(id).is_ok_and(|s| s.state == State::Dirty)
    }

    /// Number of dirty slots.
    pub fn dirty_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.state == State::Dirty)
            .count()
    }

    /// Read access to a resident slot.
    #[inline(never)]
    pub fn data(&self, id: SlotId) -> Result<&[u8]> {
        match self.slot(id)?.buf.as_deref() {
            Some(b) => Ok(b),
            None => Err(Error::WouldBlock),
        }
    }

    /// Write access to a resident slot; marks it dirty.
    pub fn data_mut(&mut self, id: SlotId) -> Result<&mut [u8]> {
        let s = self.slots.get_mut(id).ok_or(Error::InvalidArgument)?;
        match (s.state, s.buf.as_deref_mut()) {
            (State::Clean | State::Dirty, Some(b)) => {
                s.state = State::Dirty;
                self.mutations = self.mutations.wrapping_add(1);
                Ok(b)
            }
            _ => Err(Error::WouldBlock),
        }
    }

    /// Two different resident slots at once: `a` read-only, `b` writable (and marked dirty).
    /// Used to copy or move items from one node into another.
    pub fn pair_mut(&mut self, a: SlotId, b: SlotId) -> Result<(&[u8], &mut [u8])> {
        // `split_at_mut_checked` fails for `hi` past the end; `lo < hi` then holds both.
        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
        let (left, right) = match self.slots.split_at_mut_checked(hi) {
            Some((l, r)) if lo < hi => (l, r),
            _ => return Err(Error::InvalidArgument),
        };
        let (sl, sh) = match (left.get_mut(lo), right.first_mut()) {
            (Some(l), Some(h)) => (l, h),
            _ => return Err(Error::InvalidArgument),
        };
        let (sa, sb) = if a < b { (sl, sh) } else { (sh, sl) };
        let resident = |s: &Slot<'_>| matches!(s.state, State::Clean | State::Dirty);
        if !resident(sa) || !resident(sb) {
            return Err(Error::WouldBlock);
        }
        match (sa.buf.as_deref(), sb.buf.as_deref_mut()) {
            (Some(ba), Some(bb)) => {
                sb.state = State::Dirty;
                self.mutations = self.mutations.wrapping_add(1);
                Ok((ba, bb))
            }
            _ => Err(Error::WouldBlock),
        }
    }

    /// Drop `block` from the cache without writing it (it was freed). A slot in flight is left
    /// alone: its completion still has to come back.
    pub fn forget(&mut self, block: BlockNr) {
        if let Some(id) = self.find(block) {
            if let Some(s) = self.slots.get_mut(id) {
                if matches!(s.state, State::Clean | State::Dirty) && s.pins == 0 {
                    if s.state == State::Dirty {
                        self.mutations = self.mutations.wrapping_add(1);
                    }
                    s.state = State::Empty;
                    s.block = BlockNr::MAX;
                    s.checked = false;
                }
            }
        }
    }

    /// Drop every clean and dirty slot (used after a failed transaction is abandoned).
    pub fn invalidate_all(&mut self) {
        for s in self.slots.iter_mut() {
            if matches!(s.state, State::Clean | State::Dirty | State::Failed) {
                s.state = State::Empty;
                s.block = BlockNr::MAX;
                s.checked = false;
                s.pins = 0;
            }
        }
    }

    /// Hand a completion for one of the cache's own tags back to the cache. Returns `false`
    /// if the tag is not the cache's.
    pub fn complete(&mut self, c: Completion<'b>) -> bool {
        let Some(s) = self.slots.get_mut(c.tag as usize) else {
            return false;
        };
        if !matches!(s.state, State::Reading | State::Writing) || c.buf.is_none() {
            return false;
        }
        s.buf = c.buf;
        let reading = s.state == State::Reading;
        s.error = c.result.err();
        s.state = match (reading, s.error) {
            (_, None) => State::Clean,
            (true, Some(_)) => State::Failed,
            // The block is still newer than the device.
            (false, Some(_)) => State::Dirty,
        };
        if reading {
            s.checked = false;
        }
        true
    }

    /// Route one completion: the cache's own are applied, foreign ones are kept for
    /// [`take_foreign`](Self::take_foreign).
    fn route(&mut self, c: Completion<'b>) {
        // Only the NOWAIT pipeline has requests of its own in flight while the cache waits
        // (blocking requests go through `device::run`, which needs an idle queue).
        if cfg!(feature = "nowait") && c.tag >= FOREIGN_TAG_BASE {
            // At most one log record and one flush of the journal are in flight at once
            // (the journal's pipeline keeps it so), so the stash never fills.
            let _ = self.foreign.push_back(c);
        } else {
            self.complete(c);
        }
    }

    /// Reap one completion from the device (applying the cache's own); returns whether one
    /// arrived.
    pub fn poll_device<D: BlockDevice<'b>>(&mut self, dev: &mut D) -> bool {
        match dev.poll() {
            Some(c) => {
                self.route(c);
                true
            }
            None => false,
        }
    }

    /// Enter or leave probing mode (see the `no_io` field).
    pub fn set_no_io(&mut self, on: bool) {
        self.no_io = on;
    }

    /// Is probing mode on (see the `no_io` field)? Never without the `nowait` feature (nothing
    /// else turns it on), which lets the compiler drop the probing branches.
    #[inline(always)]
    pub fn is_no_io(&self) -> bool {
        cfg!(feature = "nowait") && self.no_io
    }

    /// Device sectors per cache block.
    pub fn sectors_per_block(&self) -> u32 {
        self.sectors_per_block
    }

    /// Poll until nothing is in flight on the device (foreign completions are kept).
    pub fn drain_device<D: BlockDevice<'b>>(&mut self, dev: &mut D) {
        while dev.in_flight() > 0 {
            self.poll_device(dev);
        }
    }

    /// Is a foreign completion waiting?
    pub fn take_foreign_peek(&self) -> bool {
        !self.foreign.is_empty()
    }

    /// A foreign completion reaped earlier, if any.
    pub fn take_foreign(&mut self) -> Option<Completion<'b>> {
        self.foreign.pop_front()
    }

    /// Poll the device until slot `id` has no I/O in flight; other completions are routed on
    /// the way. Says nothing about how that I/O went (see [`Self::read_result`] and
    /// [`Self::write_result`]).
    fn wait_idle<D: BlockDevice<'b>>(&mut self, dev: &mut D, id: SlotId) -> Result<()> {
        while matches!(self.slot(id)?.state, State::Reading | State::Writing) {
            self.poll_device(dev);
        }
        Ok(())
    }

    /// After a wait: the error of a failed read of slot `id`, reported once (the slot is
    /// emptied, so the next reader tries the device again).
    fn read_result(&mut self, id: SlotId) -> Result<()> {
        let s = self.slot_mut(id)?;
        if s.state != State::Failed {
            return Ok(());
        }
        let e = s.error.take().unwrap_or(IoError::Media);
        s.state = State::Empty;
        s.block = BlockNr::MAX;
        s.checked = false;
        Err(Error::Io(e))
    }

    /// After a wait: the error of a failed write of slot `id` (the slot stays dirty).
    fn write_result(&mut self, id: SlotId) -> Result<()> {
        let s = self.slot_mut(id)?;
        match (s.state, s.error.take()) {
            (State::Dirty, Some(e)) => Err(Error::Io(e)),
            _ => Ok(()),
        }
    }

    fn submit<D: BlockDevice<'b>>(
        &mut self,
        dev: &mut D,
        id: SlotId,
        write: bool,
        fua: bool,
    ) -> Result<()> {
        let spb = self.sectors_per_block;
        let s = self.slot_mut(id)?;
        // Two 32-bit factors: the product fits.
        let lba = u64::from(s.block) * u64::from(spb);
        let buf = s.buf.take().ok_or(Error::WouldBlock)?;
        if write && s.meta {
            BlockHeader::seal(buf);
        }
        s.state = if write {
            State::Writing
        } else {
            State::Reading
        };
        let command = if write {
            Command::Write { lba, buf, fua }
        } else {
            Command::Read { lba, buf }
        };
        let mut req = Request {
            tag: id as Tag,
            command,
        };
        loop {
            match dev.submit(req) {
                Ok(()) => return Ok(()),
                Err(crate::device::Busy(r)) => {
                    req = r;
                    // Make room by reaping a completion.
                    self.poll_device(dev);
                }
            }
        }
    }

    /// Choose a slot to (re)use: an empty one, else the least recently used unpinned clean
    /// one, else write back the least recently used unpinned dirty one.
    fn victim<D: BlockDevice<'b>>(&mut self, dev: &mut D) -> Result<SlotId> {
        // One pass over the slots: it runs on every miss. The best so far has the smallest key,
        // `dirty << 32 | lru`: clean before dirty, then least recently used.
        let mut best: Option<(u64, SlotId)> = None;
        for (i, s) in self.slots.iter().enumerate() {
            match s.state {
                State::Empty | State::Failed => return Ok(i),
                _ if s.pins > 0 => continue,
                State::Clean | State::Dirty => {}
                State::Reading | State::Writing => continue,
            }
            let key = u64::from(s.state == State::Dirty) << 32 | u64::from(s.lru);
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, i));
            }
        }
        let Some((key, i)) = best else {
            return Err(Error::CacheFull);
        };
        if key >> 32 == 0 {
            return Ok(i);
        }
        if self.is_no_io() {
            return Err(Error::WouldBlock);
        }
        self.stats.evict_writes += 1;
        self.submit(dev, i, true, false)?;
        self.wait_idle(dev, i)?;
        self.write_result(i)?;
        Ok(i)
    }

    /// Get `block` into a slot, reading it if needed (blocking). Returns the slot; check
    /// [`is_checked`](Self::is_checked) and verify the contents if it is not. `Corrupt` when
    /// the block is cached as the other kind (`meta`: a tree node asked for as file data, or
    /// the reverse), which only a damaged or hostile image makes happen.
    pub fn read<D: BlockDevice<'b>>(
        &mut self,
        dev: &mut D,
        block: BlockNr,
        meta: bool,
    ) -> Result<SlotId> {
        self.refuse_if_shut_down()?;
        if let Some(id) = self.find(block) {
            if self.is_no_io() && matches!(self.slot(id)?.state, State::Reading | State::Writing) {
                return Err(Error::WouldBlock);
            }
            self.wait_idle(dev, id)?;
            // A failed read is reported to this reader (once); a failed write is not: the
            // slot still holds the newest bytes.
            self.read_result(id)?;
            let s = self.slot(id)?;
            if matches!(s.state, State::Clean | State::Dirty) {
                // A block asked for as data while it is cached as a tree node, or the other
                // way round: a hostile image (an extent naming a node). Handing out the slot
                // would let file bytes into a node the tree trusts as verified.
                if s.meta != meta {
                    return Err(Error::Corrupt);
                }
                self.stats.hits += 1;
                self.touch(id);
                return Ok(id);
            }
        }
        self.stats.misses += 1;
        let id = self.victim(dev)?;
        {
            let s = self.slot_mut(id)?;
            s.block = block;
            s.meta = meta;
            s.checked = false;
        }
        if self.is_no_io() {
            // Start the read so a later call finds the block, but do not wait for it.
            return match dev.in_flight() < usize::from(dev.geometry().queue_depth) {
                true => self
                    .submit(dev, id, false, false)
                    .and(Err(Error::WouldBlock)),
                false => {
                    if let Ok(s) = self.slot_mut(id) {
                        s.state = State::Empty;
                    }
                    Err(Error::WouldBlock)
                }
            };
        }
        self.submit(dev, id, false, false)?;
        self.wait_idle(dev, id)?;
        self.read_result(id)?;
        self.touch(id);
        Ok(id)
    }

    /// A slot for `block` whose old contents do not matter (a newly allocated block): no read.
    /// The slot is zeroed, dirty and marked checked.
    pub fn create<D: BlockDevice<'b>>(
        &mut self,
        dev: &mut D,
        block: BlockNr,
        meta: bool,
    ) -> Result<SlotId> {
        self.claim(dev, block, meta, true)
    }

    /// Like [`create`](Self::create) for a data block the caller overwrites whole before
    /// anyone reads it: the slot keeps whatever bytes it held (zeroing 4 KiB per appended
    /// block was a fifth of the cost of a sequential write).
    pub fn create_overwritten<D: BlockDevice<'b>>(
        &mut self,
        dev: &mut D,
        block: BlockNr,
    ) -> Result<SlotId> {
        self.claim(dev, block, false, false)
    }

    /// A slot for `block` whose old contents do not matter (see [`create`](Self::create)):
    /// dirty, marked checked, and zeroed when `zero` is set.
    pub(crate) fn claim<D: BlockDevice<'b>>(
        &mut self,
        dev: &mut D,
        block: BlockNr,
        meta: bool,
        zero: bool,
    ) -> Result<SlotId> {
        self.refuse_if_shut_down()?;
        let id = match self.find(block) {
            Some(id) => {
                self.wait_idle(dev, id)?;
                id
            }
            None => self.victim(dev)?,
        };
        self.mutations = self.mutations.wrapping_add(1);
        let s = self.slot_mut(id)?;
        s.block = block;
        s.meta = meta;
        s.checked = true;
        s.state = State::Dirty;
        s.error = None;
        if let (true, Some(b)) = (zero, s.buf.as_deref_mut()) {
            b.fill(0);
        }
        self.touch(id);
        Ok(id)
    }

    /// If `block` is cached and dirty, write it now and wait; returns whether it wrote.
    pub fn write_back_block<D: BlockDevice<'b>>(
        &mut self,
        dev: &mut D,
        block: BlockNr,
    ) -> Result<bool> {
        let Some(id) = self.find(block) else {
            return Ok(false);
        };
        self.wait_idle(dev, id)?;
        if !self.is_dirty(id) {
            return Ok(false);
        }
        self.submit(dev, id, true, false)?;
        self.wait_idle(dev, id)?;
        self.write_result(id)?;
        Ok(true)
    }

    /// Write every cached, dirty block of `start..start + len` now and wait for them (and for
    /// any of them already in flight). One pass over the slots, however long the run: a
    /// sync point after a long sequential write names thousands of blocks, few of them cached.
    pub fn write_back_run<D: BlockDevice<'b>>(
        &mut self,
        dev: &mut D,
        start: BlockNr,
        len: BlockNr,
    ) -> Result<()> {
        let end = start.saturating_add(len);
        for id in 0..self.slots.len() {
            let in_run = self.slots.get(id).is_some_and(|s| {
                !matches!(s.state, State::Empty | State::Failed) && (start..end).contains(&s.block)
            });
            if !in_run {
                continue;
            }
            self.wait_idle(dev, id)?;
            if self.is_dirty(id) {
                // (A write of it that failed before is simply tried again here.)
                self.submit(dev, id, true, false)?;
                self.wait_idle(dev, id)?;
                self.write_result(id)?;
            }
        }
        Ok(())
    }

    /// Start writing `block` if it is cached and dirty, without waiting (FUA if asked).
    /// Returns `Ok(false)` when the device queue is full (nothing changed: try again later).
    pub fn start_write<D: BlockDevice<'b>>(
        &mut self,
        dev: &mut D,
        block: BlockNr,
        fua: bool,
    ) -> Result<bool> {
        let Some(id) = self.find(block) else {
            return Ok(true);
        };
        if self.slot(id)?.state != State::Dirty {
            return Ok(true);
        }
        // The last write of this block failed: report it rather than retry in a loop (a
        // caller polling for the write's end would otherwise resubmit it for ever).
        if let Some(e) = self.slot_mut(id)?.error.take() {
            return Err(Error::Io(e));
        }
        let spb = self.sectors_per_block;
        let s = self.slot_mut(id)?;
        // Two 32-bit factors: the product fits.
        let lba = u64::from(s.block) * u64::from(spb);
        let buf = s.buf.take().ok_or(Error::WouldBlock)?;
        if s.meta {
            BlockHeader::seal(buf);
        }
        s.state = State::Writing;
        match dev.submit(Request {
            tag: id as Tag,
            command: Command::Write { lba, buf, fua },
        }) {
            Ok(()) => Ok(true),
            Err(crate::device::Busy(r)) => {
                let s = self.slot_mut(id)?;
                s.state = State::Dirty;
                if let Command::Write { buf, .. } = r.command {
                    s.buf = Some(buf);
                }
                Ok(false)
            }
        }
    }

    /// Start writing back up to `max` dirty, unpinned slots (least recently used first)
    /// without waiting, while the device queue has room: makes slots reusable for callers
    /// that may not wait.
    pub fn start_writebacks<D: BlockDevice<'b>>(
        &mut self,
        dev: &mut D,
        max: usize,
    ) -> Result<usize> {
        let depth = usize::from(dev.geometry().queue_depth.max(1));
        let mut started = 0;
        while started < max && dev.in_flight() < depth {
            let pick = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.state == State::Dirty && s.pins == 0)
                .min_by_key(|(_, s)| s.lru)
                .map(|(i, s)| (i, s.block));
            let Some((_, block)) = pick else { break };
            if !self.start_write(dev, block, false)? {
                break;
            }
            started += 1;
        }
        Ok(started)
    }

    /// Where a block's last write stands: `None` while it is in flight, `Some(Ok(()))` when it
    /// is on the device (or not cached any more), `Some(Err(_))` when it failed.
    pub fn write_state(&mut self, block: BlockNr) -> Option<Result<()>> {
        let Some(id) = self.find(block) else {
            return Some(Ok(()));
        };
        let s = self.slots.get_mut(id)?;
        match (s.state, s.error) {
            (State::Writing, _) => None,
            // A failed *read* of the block since says nothing about the write.
            (State::Failed, _) => Some(Ok(())),
            (_, Some(e)) => Some(Err(Error::Io(e))),
            _ => Some(Ok(())),
        }
    }

    /// Is `block` cached with I/O in flight?
    pub fn in_flight(&self, block: BlockNr) -> bool {
        self.find(block)
            .and_then(|id| self.slots.get(id))
            .is_some_and(|s| matches!(s.state, State::Reading | State::Writing))
    }

    /// Number of slots free or clean and unpinned (usable without a write-back).
    pub fn reusable_slots(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| {
                s.pins == 0 && matches!(s.state, State::Empty | State::Clean | State::Failed)
            })
            .count()
    }

    /// Is `block` cached and readable now?
    pub fn is_resident(&self, block: BlockNr) -> bool {
        self.find(block)
            .and_then(|id| self.slots.get(id))
            .is_some_and(|s| matches!(s.state, State::Clean | State::Dirty))
    }

    /// Write every dirty slot and wait for all of them, keeping up to the device's queue depth
    /// in flight (a full queue makes the slot submission reap a completion first).
    /// Reports the first failed write; every failed slot stays dirty.
    pub fn write_back_all<D: BlockDevice<'b>>(&mut self, dev: &mut D) -> Result<()> {
        for id in 0..N {
            if self.slots.get(id).is_some_and(|s| s.state == State::Dirty) {
                self.submit(dev, id, true, false)?;
            }
        }
        self.drain_device(dev);
        // A write that failed left its slot dirty with the error (a successful one, clean).
        let mut first_err = None;
        for s in self.slots.iter_mut() {
            if s.state == State::Dirty {
                if let Some(e) = s.error.take() {
                    first_err.get_or_insert(Error::Io(e));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{QueuedConfig, QueuedRamDisk, RamDisk};

    #[test]
    fn read_write_back_and_evict() {
        let mut store = [0u8; 512 * 64];
        for (i, c) in store.chunks_mut(512).enumerate() {
            c[0] = i as u8;
        }
        let mut dev = RamDisk::new(&mut store, 512).unwrap();
        let mut mem = [0u8; 512 * 2];
        let mut cache: BlockCache<'_, 2> = BlockCache::new(&mut mem, 512, 512).unwrap();
        for b in 0..10 {
            let id = cache.read(&mut dev, b, false).unwrap();
            assert_eq!(cache.data(id).unwrap()[0], b as u8);
        }
        let id = cache.create(&mut dev, 20, false).unwrap();
        cache.data_mut(id).unwrap()[5] = 99;
        let id2 = cache.read(&mut dev, 3, false).unwrap();
        cache.pin(id2);
        // The only unpinned slot holds dirty block 20: reading another block writes it back.
        cache.read(&mut dev, 30, false).unwrap();
        assert!(cache.find(20).is_none());
        assert!(cache.find(3).is_some(), "pinned slot kept");
        let id = cache.read(&mut dev, 20, false).unwrap();
        assert_eq!(cache.data(id).unwrap()[5], 99);
        assert_eq!(cache.stats().evict_writes, 1);
    }

    #[test]
    fn write_back_all_over_a_queued_device() {
        let cfg = QueuedConfig {
            sector_count: 256,
            ..QueuedConfig::default()
        };
        let mut dev = QueuedRamDisk::new(cfg);
        let mut mem = std::vec![0u8; 1024 * 8];
        let mut cache: BlockCache<'_, 8> = BlockCache::new(&mut mem, 1024, 512).unwrap();
        for b in 0..8 {
            let id = cache.create(&mut dev, b, false).unwrap();
            cache.data_mut(id).unwrap().fill(b as u8 + 1);
        }
        cache.write_back_all(&mut dev).unwrap();
        assert_eq!(cache.dirty_count(), 0);
        for b in 0..8usize {
            assert!(dev.volatile_image()[b * 1024..(b + 1) * 1024]
                .iter()
                .all(|&x| x == b as u8 + 1));
        }
    }

    #[test]
    #[cfg(feature = "nowait")]
    fn a_failed_read_is_reported_to_the_next_reader_once() {
        use crate::device::{FaultInjector, FaultPlan};
        let mut store = [0u8; 512 * 8];
        store[512 * 3] = 33;
        let dev = RamDisk::new(&mut store, 512).unwrap();
        let mut dev = FaultInjector::new(dev, FaultPlan::At(0), IoError::Media);
        let mut mem = [0u8; 512 * 2];
        let mut cache: BlockCache<'_, 2> = BlockCache::new(&mut mem, 512, 512).unwrap();
        // A probe starts the read and does not wait; the read fails.
        cache.set_no_io(true);
        assert_eq!(cache.read(&mut dev, 3, false), Err(Error::WouldBlock));
        cache.drain_device(&mut dev);
        // The probe's next attempt is told, instead of starting the read again for ever.
        assert_eq!(
            cache.read(&mut dev, 3, false),
            Err(Error::Io(IoError::Media))
        );
        // Told once: the attempt after that reads the device again.
        assert_eq!(cache.read(&mut dev, 3, false), Err(Error::WouldBlock));
        cache.drain_device(&mut dev);
        let id = cache.read(&mut dev, 3, false).unwrap();
        assert_eq!(cache.data(id).unwrap()[0], 33);
    }

    #[test]
    fn a_failed_write_back_keeps_the_bytes_for_readers() {
        use crate::device::{FaultInjector, FaultPlan};
        let mut store = [0u8; 512 * 8];
        let dev = RamDisk::new(&mut store, 512).unwrap();
        let mut dev = FaultInjector::new(dev, FaultPlan::At(0), IoError::Media);
        let mut mem = [0u8; 512 * 2];
        let mut cache: BlockCache<'_, 2> = BlockCache::new(&mut mem, 512, 512).unwrap();
        let id = cache.create(&mut dev, 5, false).unwrap();
        cache.data_mut(id).unwrap()[0] = 55;
        // The writer is told...
        assert_eq!(
            cache.write_back_block(&mut dev, 5),
            Err(Error::Io(IoError::Media))
        );
        // ...readers are not: the slot still holds the newest bytes.
        let id = cache.read(&mut dev, 5, false).unwrap();
        assert_eq!(cache.data(id).unwrap()[0], 55);
        assert!(cache.is_dirty(id));
        assert_eq!(cache.write_back_block(&mut dev, 5), Ok(true));
    }

    #[test]
    fn shut_down_refuses_reads_and_new_slots() {
        let mut store = [0u8; 512 * 8];
        let mut dev = RamDisk::new(&mut store, 512).unwrap();
        let mut mem = [0u8; 512 * 2];
        let mut cache: BlockCache<'_, 2> = BlockCache::new(&mut mem, 512, 512).unwrap();
        let before = cache.mutations();
        cache.read(&mut dev, 1, false).unwrap();
        assert_eq!(cache.mutations(), before, "a read changes nothing");
        cache.create(&mut dev, 2, false).unwrap();
        assert_ne!(cache.mutations(), before);
        cache.shut_down();
        assert_eq!(cache.read(&mut dev, 1, false), Err(Error::ShutDown));
        assert_eq!(cache.create(&mut dev, 3, false), Err(Error::ShutDown));
    }

    #[test]
    fn all_pinned_is_cache_full() {
        let mut store = [0u8; 512 * 8];
        let mut dev = RamDisk::new(&mut store, 512).unwrap();
        let mut mem = [0u8; 512 * 2];
        let mut cache: BlockCache<'_, 2> = BlockCache::new(&mut mem, 512, 512).unwrap();
        let a = cache.read(&mut dev, 0, false).unwrap();
        let b = cache.read(&mut dev, 1, false).unwrap();
        cache.pin(a);
        cache.pin(b);
        assert_eq!(cache.read(&mut dev, 2, false), Err(Error::CacheFull));
    }
}
