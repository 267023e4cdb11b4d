//! The checker: walks every tree from the superblock and proves the volume consistent.
//!
//! It verifies every node it reaches (checksum, address, owner, level, generation, layout),
//! that every key lies inside the range its parent pointer allows, and then accounts for every
//! block of the managed area: each must be exactly one of a tree node, part of a free run, or
//! part of the allocator reserve. A block claimed twice is a double reference (the worst kind
//! of corruption: two owners would overwrite each other); a block claimed by nobody is a leak.
//!
//! Memory: a caller-provided bitmap of one bit per block (no allocator), and a stack of
//! [`MAX_DEPTH`] entries; work is one visit per node and item.

use crate::btree::{NodeStore, Tree};
use crate::error::{Error, Result};
use crate::space::{FreeExtent, Run, SpaceStore, FREE_EXTENT};
use crate::wire::{block_nr, tree_id, BlockNr, Key, NodeRef, MAX_DEPTH};
use zerocopy::FromBytes;

/// What [`check`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Report {
    /// Nodes of the filesystem tree.
    pub fs_nodes: u64,
    /// Items in the filesystem tree.
    pub fs_items: u64,
    /// Blocks referenced by file extents.
    pub data_blocks: u64,
    /// Nodes of the free-space tree.
    pub free_nodes: u64,
    /// Blocks in free runs of the free-space tree.
    pub free_run_blocks: u64,
    /// Blocks in the allocator reserve.
    pub reserved_blocks: u64,
    /// Managed blocks claimed by nobody.
    pub leaked: u64,
    /// Blocks claimed more than once (or outside the managed area).
    pub double_refs: u64,
    /// Nodes that failed verification or keys outside their parent's range.
    pub bad_nodes: u64,
    /// Malformed free-space items.
    pub bad_items: u64,
    /// The persisted free-block counter disagrees with the free runs plus the reserve.
    pub counter_mismatch: bool,
    /// The first block found bad, for the message.
    pub first_bad: Option<u64>,
}

impl Report {
    /// No inconsistency of any kind.
    pub fn is_clean(&self) -> bool {
        self.leaked == 0
            && self.double_refs == 0
            && self.bad_nodes == 0
            && self.bad_items == 0
            && !self.counter_mismatch
    }

    fn bad(&mut self, block: u64) {
        self.first_bad.get_or_insert(block);
    }
}

struct Marks<'a> {
    bits: &'a mut [u8],
    start: BlockNr,
    end: BlockNr,
}

impl Marks<'_> {
    /// Claim `run`, counting every block claimed twice (or outside the area) against `at`.
    fn claim_reported(&mut self, run: Run, rep: &mut Report, at: u64) {
        let d = self.claim(run);
        if d != 0 {
            rep.double_refs = rep.double_refs.saturating_add(d);
            rep.bad(at);
        }
    }

    /// Claim `run`; returns how many of its blocks were already claimed or out of range.
    fn claim(&mut self, run: Run) -> u64 {
        // The length comes from the disk: only the part inside the area is walked (a hostile
        // length must not make this loop for hours); the rest counts as out of range at once.
        let end = run.start.saturating_add(run.len);
        let inside = run.start.max(self.start)..end.min(self.end);
        let mut dup = u64::from(run.len - (inside.end.saturating_sub(inside.start)));
        for b in inside {
            if b < self.start || b >= self.end {
                dup += 1;
                continue;
            }
            let i = (b - self.start) as usize;
            match self.bits.get_mut(i / 8) {
                Some(byte) if *byte & (1 << (i % 8)) != 0 => dup += 1,
                Some(byte) => *byte |= 1 << (i % 8),
                None => dup += 1,
            }
        }
        dup
    }
}

/// One level of the explicit walk stack.
#[derive(Clone, Copy)]
struct Frame {
    block: BlockNr,
    generation: u64,
    level: u8,
    next: usize,
    lo: Key,
    hi: Option<Key>,
}

/// Called for each leaf item during a walk.
type ItemFn<'f> = dyn FnMut(Key, &[u8], &mut Marks<'_>, &mut Report) + 'f;

/// Walk `tree`, claiming its nodes, calling `item` for each leaf item.
fn walk<S: NodeStore>(
    s: &mut S,
    tree: &Tree,
    marks: &mut Marks<'_>,
    rep: &mut Report,
    nodes: &mut u64,
    item: &mut ItemFn<'_>,
) -> Result<()> {
    walk_with(s, tree, marks, rep, nodes, item, &mut |_| {})
}

/// [`walk`], also calling `node` with each node's block number.
fn walk_with<S: NodeStore>(
    s: &mut S,
    tree: &Tree,
    marks: &mut Marks<'_>,
    rep: &mut Report,
    nodes: &mut u64,
    item: &mut ItemFn<'_>,
    node: &mut dyn FnMut(BlockNr),
) -> Result<()> {
    let mut stack: heapless::Vec<Frame, { MAX_DEPTH + 1 }> = heapless::Vec::new();
    let root = tree.root;
    let push = |stack: &mut heapless::Vec<Frame, { MAX_DEPTH + 1 }>, f: Frame| {
        stack.push(f).map_err(|_| Error::Corrupt)
    };
    push(
        &mut stack,
        Frame {
            block: root.block,
            generation: root.generation,
            level: root.level,
            next: 0,
            lo: Key::MIN,
            hi: None,
        },
    )?;
    let mut first_visit = true;
    while let Some(top) = stack.last().copied() {
        let id = match s.load(top.block, tree.owner, top.level, top.generation) {
            Ok(id) => id,
            Err(Error::Corrupt) => {
                rep.bad_nodes += 1;
                rep.bad(u64::from(top.block));
                stack.pop();
                first_visit = false;
                continue;
            }
            Err(e) => return Err(e),
        };
        let n = NodeRef::new(s.node(id)?, top.block);
        if first_visit {
            *nodes += 1;
            node(top.block);
            if marks.end > marks.start {
                marks.claim_reported(
                    Run {
                        start: top.block,
                        len: 1,
                    },
                    rep,
                    u64::from(top.block),
                );
            }
            // Keys must lie in [lo, hi).
            if let (Ok(first), Some(last)) =
                (n.key(0), n.len().checked_sub(1).and_then(|l| n.key(l).ok()))
            {
                let below = n.is_leaf() && first < top.lo;
                if below || top.hi.is_some_and(|h| last >= h) {
                    rep.bad_nodes += 1;
                    rep.bad(u64::from(top.block));
                }
            }
        }
        if n.is_leaf() {
            for i in 0..n.len() {
                let k = n.key(i)?;
                let v = n.value(i)?;
                item(k, v, marks, rep);
            }
            stack.pop();
            first_visit = false;
            continue;
        }
        if top.next >= n.len() {
            stack.pop();
            first_visit = false;
            continue;
        }
        let i = top.next;
        let (cb, cg) = n.child(i)?;
        let lo = if i == 0 { top.lo } else { n.key(i)? };
        let hi = if i + 1 < n.len() {
            Some(n.key(i + 1)?)
        } else {
            top.hi
        };
        if let Some(t) = stack.last_mut() {
            t.next += 1;
        }
        push(
            &mut stack,
            Frame {
                block: cb,
                generation: cg,
                level: top.level.saturating_sub(1),
                next: 0,
                lo,
                hi,
            },
        )?;
        first_visit = true;
    }
    Ok(())
}

/// Check the volume whose trees are `fs` and `free`, over store `s`.
///
/// `bitmap` must hold one bit per managed block (`(data_end - data_start + 7) / 8` bytes).
pub fn check<S: SpaceStore + DataArea>(
    s: &mut S,
    fs: &Tree,
    free: &Tree,
    bitmap: &mut [u8],
) -> Result<Report> {
    let (start, end) = s.data_area();
    let need = usize::try_from((end - start).div_ceil(8)).map_err(|_| Error::InvalidArgument)?;
    let bits = bitmap.get_mut(..need).ok_or(Error::InvalidArgument)?;
    bits.fill(0);
    let mut marks = Marks { bits, start, end };
    let mut rep = Report::default();
    debug_assert_eq!(free.owner, tree_id::FREE);

    let mut nodes = 0;
    walk(
        s,
        fs,
        &mut marks,
        &mut rep,
        &mut nodes,
        &mut |k, v, marks, rep| {
            rep.fs_items += 1;
            if k.kind != crate::wire::items::kind::EXTENT {
                return;
            }
            match crate::wire::items::ExtentItem::ref_from_bytes(v) {
                Ok(e) if e.len.get() > 0 => {
                    // A number past `BlockNr` lies outside the area: counted out of range.
                    let run = Run {
                        start: block_nr(e.block.get()).unwrap_or(BlockNr::MAX),
                        len: block_nr(e.len.get()).unwrap_or(BlockNr::MAX),
                    };
                    rep.data_blocks = rep.data_blocks.saturating_add(e.len.get());
                    marks.claim_reported(run, rep, e.block.get());
                }
                _ => {
                    rep.bad_items += 1;
                    rep.bad(k.id);
                }
            }
        },
    )?;
    rep.fs_nodes = nodes;

    let mut nodes = 0;
    walk(
        s,
        free,
        &mut marks,
        &mut rep,
        &mut nodes,
        &mut |k, v, marks, rep| match FreeExtent::ref_from_bytes(v) {
            Ok(e) if k.kind == FREE_EXTENT && k.offset == 0 && e.len.get() > 0 => {
                let run = Run {
                    start: block_nr(k.id).unwrap_or(BlockNr::MAX),
                    len: block_nr(e.len.get()).unwrap_or(BlockNr::MAX),
                };
                rep.free_run_blocks = rep.free_run_blocks.saturating_add(e.len.get());
                marks.claim_reported(run, rep, k.id);
            }
            _ => {
                rep.bad_items += 1;
                rep.bad(k.id);
            }
        },
    )?;
    rep.free_nodes = nodes;

    let reserve = s.space().reserve;
    for run in reserve {
        rep.reserved_blocks = rep.reserved_blocks.saturating_add(u64::from(run.len));
        marks.claim_reported(run, &mut rep, u64::from(run.start));
    }
    let claimed: u64 = marks.bits.iter().map(|b| u64::from(b.count_ones())).sum();
    let area = u64::from(end - start);
    rep.leaked = area - claimed.min(area);
    // Lengths from disk: sums saturate (a hostile run length must not overflow the report).
    rep.counter_mismatch =
        u64::from(s.space().free_blocks) != rep.free_run_blocks.saturating_add(rep.reserved_blocks);
    Ok(rep)
}

/// The managed block range of a store.
pub trait DataArea {
    /// `(first, one past last)` managed block.
    fn data_area(&self) -> (BlockNr, BlockNr);
}

impl<'b, D: crate::device::BlockDevice<'b>, const N: usize> DataArea
    for crate::volume::Store<'b, D, N>
{
    fn data_area(&self) -> (BlockNr, BlockNr) {
        self.data
    }
}

/// Call `f` with the block number of every node of `tree` (verifying each on the way).
pub fn visit_nodes<S: NodeStore>(s: &mut S, tree: &Tree, f: &mut dyn FnMut(BlockNr)) -> Result<()> {
    let mut rep = Report::default();
    let mut bits = [0u8; 0];
    // Claims are not tracked here (an empty bitmap counts every block as out of range).
    let mut marks = Marks {
        bits: &mut bits,
        start: 0,
        end: 0,
    };
    let mut nodes = 0;
    walk_with(
        s,
        tree,
        &mut marks,
        &mut rep,
        &mut nodes,
        &mut |_, _, _, _| {},
        f,
    )?;
    if rep.bad_nodes > 0 {
        Err(Error::Corrupt)
    } else {
        Ok(())
    }
}
