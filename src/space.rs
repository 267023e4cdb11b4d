//! Free-space management: the free-space tree, the allocation reserve, and deferred frees.
//!
//! The free-space tree maps `Key { id: start, kind: FREE_EXTENT, offset: 0 }` to a
//! [`FreeExtent`] value `{ len, freed }`, where `freed` is the generation whose checkpoint
//! frees the run. A run is *reusable* only once that checkpoint is durable
//! (`freed <= committed`): until then the last durable tree may still point into it.
//!
//! Allocating from a copy-on-write tree that itself needs allocations to change is the
//! classic recursion problem. It is broken in two places:
//!
//! * Allocation never touches the tree: blocks come from a **reserve** of up to two whole
//!   runs taken out of the tree beforehand (`refill`); the reserve is recorded in the
//!   superblock, so its blocks are never lost. Tree nodes are taken from the *end* of the
//!   current run and file data from its *start*, so data written in sequence lands in
//!   sequence on disk (one extent) even while the tree grows beside it.
//! * Frees never touch the tree while a tree operation is running: they are queued
//!   ([`Space::defer_free`]) and **drained** into the tree between operations ([`drain`]);
//!   frees caused by draining are queued again and drained in the same loop, which ends once
//!   every node it touches has been copied in this transaction.
//!
//! Before each tree operation the volume makes sure the reserve holds enough blocks for the
//! worst case of that operation ([`ensure_reserve`]), so an operation either starts with the space
//! it needs or fails with `NoSpace` before changing anything.

use zerocopy::little_endian::U64;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::btree::{InsertMode, NodeStore, Tree};
use crate::error::{Error, Result};
use crate::wire::{block_nr, verified_nr, BlockNr, Extent, Key, MAX_DEPTH};

/// Item type of a free extent in the free-space tree.
pub const FREE_EXTENT: u8 = 1;

/// Blocks one tree operation (plus the draining it causes) may need, at most.
pub const BLOCKS_PER_OP: BlockNr = 4 * (MAX_DEPTH as BlockNr + 1);

/// Reserve runs a superblock records.
pub const RESERVE_RUNS: usize = crate::wire::RESERVE_RUNS;

/// Runs the reserve holds in memory: enough that fragmented free space still adds up to what
/// one operation needs (copy-on-write overwrites scattered over a half-full volume leave free
/// space in runs of a few blocks). Runs beyond the [`RESERVE_RUNS`] a superblock records go
/// back to the free-space tree before each checkpoint ([`spill_reserve`]).
pub const RESERVE_SLOTS: usize = 4 * RESERVE_RUNS;

/// The value of a free-space tree item.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct FreeExtent {
    /// Number of blocks in the run.
    pub len: U64,
    /// Generation whose checkpoint freed the run.
    pub freed: U64,
}

/// A run of blocks in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Run {
    /// First block.
    pub start: BlockNr,
    /// Number of blocks.
    pub len: BlockNr,
}

impl Run {
    fn end(&self) -> BlockNr {
        self.start.saturating_add(self.len)
    }
}

/// Allocator state kept in memory (and, for the reserve and counter, in the superblock).
#[derive(Debug, Clone)]
pub struct Space {
    /// Runs taken out of the free-space tree, used first to last.
    pub reserve: [Run; RESERVE_SLOTS],
    /// Free blocks on the volume: in the tree, in the reserve, or queued to be freed.
    pub free_blocks: BlockNr,
    /// The last durable checkpoint's generation.
    pub committed: u64,
    /// Frees waiting to be put into the tree.
    deferred: heapless::Vec<Run, 64>,
    /// Blocks freed by the running transaction (reusable after its checkpoint).
    pub pending: BlockNr,
    /// Where the next refill starts looking (next fit).
    cursor: BlockNr,
    /// Deliberate bugs switched on (tests only; see [`crate::inject`]).
    pub bugs: crate::inject::Bugs,
}

impl Space {
    /// Allocator state as loaded from a superblock.
    pub fn new(persisted: [Run; RESERVE_RUNS], free_blocks: BlockNr, committed: u64) -> Self {
        let mut sp = Self::load(&[Extent::default(); RESERVE_RUNS], free_blocks, committed);
        sp.reserve[..RESERVE_RUNS].copy_from_slice(&persisted);
        sp
    }

    /// [`new`](Self::new) straight from the superblock's extents (mount and format build no
    /// intermediate array).
    pub(crate) fn load(
        persisted: &[Extent; RESERVE_RUNS],
        free_blocks: BlockNr,
        committed: u64,
    ) -> Self {
        Space {
            // Built in place: an array filled first and moved in would be copied.
            reserve: core::array::from_fn(|i| match persisted.get(i) {
                Some(e) => Run {
                    start: verified_nr(e.start),
                    len: verified_nr(e.len),
                },
                None => Run::default(),
            }),
            free_blocks,
            committed,
            deferred: heapless::Vec::new(),
            pending: 0,
            cursor: 0,
            bugs: crate::inject::Bugs::empty(),
        }
    }

    /// The reserve as a superblock records it; [`spill_reserve`] must have emptied the slots
    /// beyond [`RESERVE_RUNS`] first.
    pub fn persisted_reserve(&self) -> Result<[Run; RESERVE_RUNS]> {
        if self.reserve.iter().skip(RESERVE_RUNS).any(|r| r.len > 0) {
            return Err(Error::InvalidArgument);
        }
        let mut out = [Run::default(); RESERVE_RUNS];
        for (o, r) in out.iter_mut().zip(&self.reserve) {
            *o = *r;
        }
        Ok(out)
    }

    /// [`persisted_reserve`](Self::persisted_reserve) written straight into the superblock's
    /// extents; `out` is untouched on error.
    pub(crate) fn save_reserve(&self, out: &mut [Extent; RESERVE_RUNS]) -> Result<()> {
        self.persisted_reserve()?;
        for (o, r) in out.iter_mut().zip(&self.reserve) {
            *o = Extent {
                start: u64::from(r.start).into(),
                len: u64::from(r.len).into(),
            };
        }
        Ok(())
    }

    /// Blocks left in the reserve.
    pub fn reserved(&self) -> BlockNr {
        self.reserve.iter().map(|r| r.len).sum()
    }

    /// Frees still queued.
    pub fn deferred(&self) -> usize {
        self.deferred.len()
    }

    fn current(&mut self) -> Result<&mut Run> {
        self.compact();
        match self.reserve[0].len {
            0 => Err(Error::NoSpace),
            _ => Ok(&mut self.reserve[0]),
        }
    }

    /// Move empty reserve slots to the end, keeping the order of the others. In place: a
    /// copy of the array would cost a kilobyte of stack.
    fn compact(&mut self) {
        let mut n = 0;
        for i in 0..self.reserve.len() {
            let (head, tail) = self.reserve.split_at_mut(i);
            let Some(r) = tail.first_mut() else { break };
            if r.len > 0 {
                // Not `slice::swap`: for n == i it calls `memmove`, which would link 1.5 KiB
                // of Thumb code that no other path needs. Slot `n` is before slot `i` or is
                // slot `i` itself (then nothing moves).
                if let Some(h) = head.get_mut(n) {
                    core::mem::swap(h, r);
                }
                n += 1;
            }
        }
    }

    /// Take one block for a tree node, from the end of the current reserve run.
    pub fn alloc(&mut self) -> Result<BlockNr> {
        let r = self.current()?;
        r.len -= 1;
        let b = r.start + r.len;
        self.free_blocks = self.free_blocks.saturating_sub(1);
        Ok(b)
    }

    /// Give back the block [`alloc`](Self::alloc) just returned (nothing refers to it).
    pub fn unalloc(&mut self, block: BlockNr) {
        let r = &mut self.reserve[0];
        if r.start + r.len == block {
            r.len += 1;
            self.free_blocks += 1;
        }
    }

    /// Take up to `want` contiguous blocks for file data, from the start of the current run,
    /// leaving at least `keep` blocks in the reserve for the tree updates that follow.
    pub fn alloc_data(&mut self, want: BlockNr, keep: BlockNr) -> Result<Run> {
        let spare = self.reserved().saturating_sub(keep);
        let r = self.current()?;
        let n = want.min(spare).min(r.len);
        if n == 0 {
            return Err(Error::NoSpace);
        }
        let run = Run {
            start: r.start,
            len: n,
        };
        r.start += n;
        r.len -= n;
        self.free_blocks = self.free_blocks.saturating_sub(n);
        Ok(run)
    }

    /// Take up to `want` blocks for file data only if they start exactly at `start` (the
    /// block after a file's last extent), from the current run, leaving at least `keep`
    /// blocks in the reserve. Never touches a tree: `None` when the current run does not
    /// start there or the reserve is short (the caller takes the general path).
    pub fn alloc_data_at(&mut self, start: BlockNr, want: BlockNr, keep: BlockNr) -> Option<Run> {
        let spare = self.reserved().saturating_sub(keep);
        let r = self.reserve.first_mut()?;
        if r.start != start {
            return None;
        }
        let n = want.min(spare).min(r.len);
        if n == 0 {
            return None;
        }
        r.start += n;
        r.len -= n;
        self.free_blocks = self.free_blocks.saturating_sub(n);
        Some(Run { start, len: n })
    }

    /// Queue `run` to be returned to the tree (reusable after the next durable checkpoint).
    pub fn defer_free(&mut self, run: Run) -> Result<()> {
        if run.len == 0 {
            return Ok(());
        }
        self.free_blocks = self.free_blocks.saturating_add(run.len);
        self.pending = self.pending.saturating_add(run.len);
        if let Some(last) = self.deferred.last_mut() {
            // Right after the last queued run, or right before it: one run.
            if last.end() == run.start || run.end() == last.start {
                last.start = last.start.min(run.start);
                last.len += run.len;
                return Ok(());
            }
        }
        // The queue is sized for many operations' worth of frees; the volume drains it after
        // every operation, so overflowing means a bug, not a user error.
        self.deferred.push(run).map_err(|_| Error::CacheFull)
    }
}

/// Gives tree code access to the allocator state inside the store.
pub trait SpaceStore: NodeStore {
    /// The allocator state.
    fn space(&mut self) -> &mut Space;
}

// Out of line: built at seven call sites.
#[inline(never)]
fn key_of(start: BlockNr) -> Key {
    Key::new(u64::from(start), FREE_EXTENT, 0)
}

fn decode(v: &[u8]) -> Result<(BlockNr, u64)> {
    let e = FreeExtent::read_from_bytes(v).map_err(|_| Error::Corrupt)?;
    Ok((block_nr(e.len.get())?, e.freed.get()))
}

fn encode(len: BlockNr, freed: u64) -> FreeExtent {
    FreeExtent {
        len: u64::from(len).into(),
        freed: freed.into(),
    }
}

/// A free-space tree item: `(start, len, freed)`.
type Item = (BlockNr, BlockNr, u64);

fn item(k: Key, v: &[u8]) -> Result<Item> {
    if k.kind != FREE_EXTENT || k.offset != 0 {
        return Err(Error::Corrupt);
    }
    let start = block_nr(k.id)?;
    let (len, freed) = decode(v)?;
    // A run that wraps past the last block number is not a run: every sum of a start and a
    // length below (merging neighbours, cutting pieces) relies on this.
    if start.checked_add(len).is_none() {
        return Err(Error::Corrupt);
    }
    Ok((start, len, freed))
}

/// Put `run`, freed in generation `freed`, into the tree, merging it with the runs next to it
/// so free space never fragments into runs smaller than what was freed. A merged run takes
/// the newer `freed` generation: a reusable neighbour of a run freed in this transaction waits
/// for the next checkpoint with it (the volume checkpoints early when that leaves it short).
/// Overlap with a neighbour is a double free: `Corrupt`.
fn insert_free<S: SpaceStore>(free: &mut Tree, s: &mut S, run: Run, freed: u64) -> Result<()> {
    let (mut start, mut len, mut freed) = (run.start, run.len, freed);
    let key = key_of(start);
    let prev = free.prev(s, &key, item)?.transpose()?;
    let next = free.next(s, &key, true, item)?.transpose()?;
    if let Some((ps, pl, pf)) = prev {
        // `item` checked that a run's end does not wrap.
        if ps + pl > run.start {
            return Err(Error::Corrupt);
        }
        if ps + pl == run.start {
            start = ps;
            len += pl;
            freed = freed.max(pf);
        }
    }
    if let Some((ns, nl, nf)) = next {
        if run.end() > ns {
            return Err(Error::Corrupt);
        }
        if run.end() == ns {
            free.remove(s, &key_of(ns))?;
            len += nl;
            freed = freed.max(nf);
        }
    }
    // Either the run's own key, which the checks above found absent, or the previous run's:
    // `Upsert` is exact here and spares the existence check of a descent.
    free.insert(
        s,
        key_of(start),
        encode(len, freed).as_bytes(),
        InsertMode::Upsert,
    )
}

/// Move every queued free into the tree.
pub fn drain<S: SpaceStore>(free: &mut Tree, s: &mut S, need: BlockNr) -> Result<()> {
    // Each round copies more of the free tree into this transaction; once a path is copied,
    // editing it frees nothing more, so this ends. Bound it anyway.
    for _ in 0..100_000u32 {
        let Some(run) = s.space().deferred.pop() else {
            return Ok(());
        };
        ensure_reserve(free, s, need)?;
        if s.space().bugs.has(crate::inject::Bugs::EARLY_REUSE) {
            // The bug: the freed run becomes the next one allocated from.
            let sp = s.space();
            let last = sp.reserve[RESERVE_SLOTS - 1];
            sp.reserve.copy_within(0..RESERVE_SLOTS - 1, 1);
            sp.reserve[0] = run;
            let committed = sp.committed;
            if last.len > 0 {
                insert_free(free, s, last, committed)?;
            }
            continue;
        }
        let gen = s.generation();
        insert_free(free, s, run, gen)?;
    }
    Err(Error::Corrupt)
}

/// Give the runs the superblock cannot record (slots from [`RESERVE_RUNS`] on) back to the
/// free-space tree. They were never used, so they are reusable at once.
pub fn spill_reserve<S: SpaceStore>(free: &mut Tree, s: &mut S) -> Result<()> {
    // Allocating tree nodes compacts the reserve, moving runs between slots: look again after
    // every insert.
    for _ in 0..RESERVE_SLOTS {
        let sp = s.space();
        sp.compact();
        let Some(slot) = sp.reserve.iter_mut().skip(RESERVE_RUNS).find(|r| r.len > 0) else {
            return Ok(());
        };
        let run = core::mem::take(slot);
        let committed = sp.committed;
        insert_free(free, s, run, committed)?;
    }
    Err(Error::NoSpace)
}

/// Make sure the reserve holds at least `need` blocks, cutting runs from the tree.
pub fn ensure_reserve<S: SpaceStore>(free: &mut Tree, s: &mut S, need: BlockNr) -> Result<()> {
    for _ in 0..4 * RESERVE_SLOTS {
        if s.space().reserved() >= need {
            return Ok(());
        }
        let sp = s.space();
        sp.compact();
        if sp.reserve[RESERVE_SLOTS - 1].len != 0 {
            // Every slot holds a short run: give the shortest back (no tree ever used it, so it
            // is reusable at once) and refill its slot with the next run.
            // The first of the shortest.
            let mut i = 0;
            for j in 1..RESERVE_SLOTS {
                if sp.reserve[j].len < sp.reserve[i].len {
                    i = j;
                }
            }
            let back = core::mem::take(&mut sp.reserve[i]);
            sp.compact();
            let committed = sp.committed;
            insert_free(free, s, back, committed)?;
        }
        refill(free, s)?;
    }
    Err(Error::NoSpace)
}

/// Take the next reusable run out of the tree, whole, into the last (empty) reserve slot.
fn refill<S: SpaceStore>(free: &mut Tree, s: &mut S) -> Result<()> {
    let committed = s.space().committed;
    let early_reuse = s.space().bugs.has(crate::inject::Bugs::EARLY_REUSE);
    let mut from = key_of(s.space().cursor);
    let mut wrapped = false;
    // Walk the runs from the cursor, wrapping once; skip runs freed in this transaction.
    for _ in 0..1_000_000u32 {
        match free.next(s, &from, true, item)?.transpose()? {
            Some((start, len, freed)) => {
                if (freed <= committed || early_reuse) && len > 0 {
                    free.remove(s, &key_of(start))?;
                    let sp = s.space();
                    // The last slot is empty: `ensure_reserve`, the only caller, compacted the
                    // reserve and emptied a slot if none was.
                    sp.reserve[RESERVE_SLOTS - 1] = Run { start, len };
                    sp.cursor = start + len; // `item` checked it does not wrap
                    return Ok(());
                }
                from = key_of(start.checked_add(1).ok_or(Error::NoSpace)?);
            }
            None if !wrapped => {
                wrapped = true;
                from = key_of(0);
            }
            None => return Err(Error::NoSpace),
        }
    }
    Err(Error::NoSpace)
}

/// Take `run` out of free space (the reserve or a run of the tree), wherever it lies whole.
///
/// Used by journal replay for data blocks that were allocated and written after the last
/// checkpoint and that a durable log record points at. Returns `false` (and changes nothing)
/// when the run is not entirely free — replay then leaves it alone.
pub fn claim<S: SpaceStore>(free: &mut Tree, s: &mut S, run: Run) -> Result<bool> {
    if run.len == 0 {
        return Ok(true);
    }
    // In a reserve run: keep the larger piece there, give the other back to the tree.
    for i in 0..RESERVE_SLOTS {
        let r = s.space().reserve[i];
        if r.start <= run.start && run.end() <= r.end() {
            let head = Run {
                start: r.start,
                len: run.start - r.start,
            };
            let tail = Run {
                start: run.end(),
                len: r.end() - run.end(),
            };
            let (keep, back) = if head.len >= tail.len {
                (head, tail)
            } else {
                (tail, head)
            };
            let sp = s.space();
            sp.reserve[i] = keep;
            sp.free_blocks = sp.free_blocks.saturating_sub(run.len);
            let committed = sp.committed;
            if back.len > 0 {
                insert_free(free, s, back, committed)?;
            }
            return Ok(true);
        }
    }
    // In a run of the tree: split it around `run`.
    let Some((start, len, freed)) = free
        .prev(s, &key_of(run.start.saturating_add(1)), item)?
        .transpose()?
    else {
        return Ok(false);
    };
    if start > run.start || run.end() > start.saturating_add(len) {
        return Ok(false);
    }
    free.remove(s, &key_of(start))?;
    let head = Run {
        start,
        len: run.start - start,
    };
    let tail = Run {
        start: run.end(),
        len: start + len - run.end(),
    };
    for piece in [head, tail] {
        if piece.len > 0 {
            free.insert(
                s,
                key_of(piece.start),
                encode(piece.len, freed).as_bytes(),
                InsertMode::Create,
            )?;
        }
    }
    let sp = s.space();
    sp.free_blocks = sp.free_blocks.saturating_sub(run.len);
    Ok(true)
}
