//! The one copy-on-write B+tree: the filesystem tree and the free-space tree are both this.
//!
//! * Keys are [`Key`]s; values are byte strings of up to [`max_value_len`] bytes.
//! * Copy-on-write: a node of an older generation is never edited. The first edit in a
//!   transaction copies it to a newly allocated block, points the parent at the copy and
//!   frees the old block (which the allocator will not reuse until the checkpoint that frees
//!   it is durable). Nodes already copied in this transaction are edited in place.
//! * Inserts split full nodes on the way down (so a split never has to climb back up);
//!   removals merge an under-full node with a sibling on the way back up when the two fit in
//!   one node (otherwise the pair is more than half full on average), and a root with one
//!   child is collapsed.
//! * Depth is bounded by [`crate::wire::MAX_DEPTH`]: deeper trees are corrupt,
//!   and every loop is bounded by the depth, so a hostile image cannot make a walk hang.

mod store;

pub use store::NodeStore;

use core::cmp::Ordering;

use crate::cache::SlotId;
use crate::error::{Error, Result};
use crate::wire::{
    BlockHeader, BlockNr, Key, NodeMut, NodeRef, HEADER_LEN, INTERNAL_PTR_LEN, LEAF_ITEM_LEN,
    MAX_DEPTH,
};

/// Largest value a tree of `block_size`-byte nodes accepts.
///
/// A quarter of a node (less one descriptor) guarantees that after a split by bytes, the half
/// that receives the new item always has room for it.
pub const fn max_value_len(block_size: usize) -> usize {
    (block_size - HEADER_LEN) / 4 - LEAF_ITEM_LEN - 8
}

/// Where a tree's root is, in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Root {
    /// Root block.
    pub block: BlockNr,
    /// Generation of the root block (must match its header).
    pub generation: u64,
    /// Level of the root (0: the root is a leaf).
    pub level: u8,
}

/// How [`Tree::insert`] treats an existing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InsertMode {
    /// Fail with `AlreadyExists` if the key exists.
    Create,
    /// Fail with `NotFound` if the key does not exist.
    Replace,
    /// Insert or replace.
    Upsert,
}

/// A tree: its owner id (stamped in every node) and its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Tree {
    /// Tree id, see [`crate::wire::tree_id`].
    pub owner: u64,
    /// Current root.
    pub root: Root,
}

/// One step of a descent: the node and which child was taken.
#[derive(Clone, Copy)]
struct Step {
    block: BlockNr,
    idx: usize,
}

/// An item found by a descent: its leaf (resident in the cache until the next load) and index.
#[derive(Clone, Copy)]
struct Item {
    id: SlotId,
    block: BlockNr,
    idx: usize,
}

/// What [`Tree::seek`] looks for, relative to its key.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seek {
    /// The item with the key.
    Exact,
    /// The first item with a key `>=` it.
    From,
    /// The first item with a key `>` it.
    After,
    /// The last item with a key `<` it.
    Before,
}

fn under_full(n: &NodeRef<'_>) -> bool {
    n.used() < n.capacity() / 4
}

impl Tree {
    /// Make this tree empty: its root becomes a new empty leaf, made in the current
    /// transaction (the old root, if any, is left to the caller). In place, on a tree whose
    /// owner is set: a `Tree` built elsewhere and moved into its holder cost a copy each way.
    pub fn create_root<S: NodeStore>(&mut self, s: &mut S) -> Result<()> {
        let (block, _) = s.new_node(self.owner, 0)?;
        self.root = Root {
            block,
            generation: s.generation(),
            level: 0,
        };
        Ok(())
    }

    fn load(
        &self,
        s: &mut impl NodeStore,
        block: BlockNr,
        level: u8,
        generation: u64,
    ) -> Result<SlotId> {
        s.load(block, self.owner, level, generation)
    }

    /// Call `f` with the value of `key`, if present.
    ///
    /// The descent is the one [`Tree::next`] and [`Tree::prev`] share, compiled once per store
    /// type; only the call of `f` is generic.
    pub fn get<S: NodeStore, R>(
        &self,
        s: &mut S,
        key: &Key,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>> {
        Ok(self.seek_item(s, key, Seek::Exact)?.map(|(_, v)| f(v)))
    }

    /// Call `f` with the first item whose key is `>= from` (or `> from` when `!inclusive`).
    ///
    /// Stateless: a cursor is just the last key seen, so iteration survives any change to the
    /// tree between calls (each call is one or a few descents).
    pub fn next<S: NodeStore, R>(
        &self,
        s: &mut S,
        from: &Key,
        inclusive: bool,
        f: impl FnOnce(Key, &[u8]) -> R,
    ) -> Result<Option<R>> {
        let mode = if inclusive { Seek::From } else { Seek::After };
        Ok(self.seek_item(s, from, mode)?.map(|(k, v)| f(k, v)))
    }

    /// Call `f` with the last item whose key is `< before`.
    pub fn prev<S: NodeStore, R>(
        &self,
        s: &mut S,
        before: &Key,
        f: impl FnOnce(Key, &[u8]) -> R,
    ) -> Result<Option<R>> {
        Ok(self
            .seek_item(s, before, Seek::Before)?
            .map(|(k, v)| f(k, v)))
    }

    /// The key and value [`Tree::seek`] finds.
    fn seek_item<'s, S: NodeStore>(
        &self,
        s: &'s mut S,
        key: &Key,
        mode: Seek,
    ) -> Result<Option<(Key, &'s [u8])>> {
        match self.seek(s, key, mode)? {
            Some(at) => {
                let n = NodeRef::new(s.node(at.id)?, at.block);
                Ok(Some((n.key_or_min(at.idx), n.value_or_empty(at.idx))))
            }
            None => Ok(None),
        }
    }

    /// The leaf slot and index of the item `mode` asks for, relative to `key`.
    ///
    /// One descent serves exact lookups and both directions of iteration. When the leaf
    /// reached has no suitable item, the answer is in a sibling subtree: the descent restarts
    /// from the separator key bounding that subtree (the deepest one on the path, so the
    /// nearest), which moves the search key strictly towards it every time.
    fn seek<S: NodeStore>(&self, s: &mut S, key: &Key, mode: Seek) -> Result<Option<Item>> {
        let exact = matches!(mode, Seek::Exact);
        let back = matches!(mode, Seek::Before);
        let mut key = *key;
        let mut after = matches!(mode, Seek::After);
        // Bounded: each restart moves `key` strictly (checked below) to one of the finitely
        // many separator keys of the tree.
        loop {
            let (mut block, mut gen, mut level) =
                (self.root.block, self.root.generation, self.root.level);
            let mut resume: Option<Key> = None;
            // Bounded: `level` drops by one per step and a level-0 node is a leaf (`load`
            // checks the level of every node against the pointer followed to it).
            loop {
                let id = self.load(s, block, level, gen)?;
                let n = NodeRef::new(s.node(id)?, block);
                let len = n.len();
                let pos = n.search(&key);
                if n.is_leaf() {
                    let idx = match pos {
                        Err(_) if exact => return Ok(None),
                        Ok(i) | Err(i) if back => i.checked_sub(1),
                        Ok(i) if after => Some(i + 1),
                        Ok(i) | Err(i) => Some(i),
                    };
                    match idx {
                        Some(idx) if idx < len => return Ok(Some(Item { id, block, idx })),
                        _ => break,
                    }
                }
                // The child that may hold the answer. Going backwards, an exact match of a
                // separator means the answer is left of it (a separator bounds its subtree
                // from below).
                let i = match pos {
                    Ok(i) if !back => i,
                    Ok(i) | Err(i) => i.saturating_sub(1),
                };
                // The subtree after this one starts at key `i + 1`; the one before ends
                // below key `i`.
                let r = if back { i } else { i + 1 };
                if (back && i > 0) || (!back && r < len) {
                    resume = Some(n.key_or_min(r));
                }
                (block, gen) = n.child_or_invalid(i);
                // `level > 0`: `load` checked the node's header level against it, and the
                // node is not a leaf. (A wrap would ask for level 255, which `load` refuses.)
                level = level.wrapping_sub(1);
            }
            // The resume key is strictly beyond `key` in the direction of travel whenever the
            // node's keys are strictly increasing (checked by `check_layout` on load); check
            // it anyway, it is what makes each restart progress.
            let ahead = if back {
                Ordering::Less
            } else {
                Ordering::Greater
            };
            match resume {
                Some(k) if k.cmp(&key) == ahead => {
                    key = k;
                    after = false;
                }
                Some(_) => return Err(Error::Corrupt),
                None => return Ok(None),
            }
        }
    }

    /// Copy-on-write the node `(block, level, gen)`: returns a writable `(block, slot)`.
    fn cow(
        &self,
        s: &mut impl NodeStore,
        block: BlockNr,
        level: u8,
        gen: u64,
    ) -> Result<(BlockNr, SlotId)> {
        let id = self.load(s, block, level, gen)?;
        let cur = s.generation();
        if gen == cur {
            return Ok((block, id));
        }
        // Pinned while the new node's slot is claimed (which may evict); nothing after that
        // loads.
        s.pin(id);
        let made = s.new_node(self.owner, level);
        s.unpin(id);
        let (nb, nid) = made?;
        let (src, dst) = s.pair(id, nid)?;
        dst.copy_from_slice(src);
        let h = BlockHeader::parse_mut(dst).ok_or(Error::Corrupt)?;
        h.blocknr = u64::from(nb).into();
        h.generation = cur.into();
        s.free_node(block)?;
        Ok((nb, nid))
    }

    /// Make the root writable, updating `self.root`.
    // Inlined into its two callers: 12 B less than the call.
    #[inline(always)]
    fn cow_root(&mut self, s: &mut impl NodeStore) -> Result<(BlockNr, SlotId)> {
        let (b, id) = self.cow(s, self.root.block, self.root.level, self.root.generation)?;
        self.root.block = b;
        self.root.generation = s.generation();
        Ok((b, id))
    }

    /// Make child `idx` of the writable node in slot `pid` writable; returns its `(block, slot)`.
    fn cow_child(
        &self,
        s: &mut impl NodeStore,
        pid: SlotId,
        pblock: BlockNr,
        idx: usize,
        level: u8,
    ) -> Result<(BlockNr, SlotId)> {
        let (cb, cg) = NodeRef::new(s.node(pid)?, pblock).child_or_invalid(idx);
        s.pin(pid);
        let r = self.cow(s, cb, level, cg);
        s.unpin(pid);
        let (nb, nid) = r?;
        if nb != cb {
            let cur = s.generation();
            NodeMut::new(s.node_mut(pid)?, pblock).set_child(idx, nb, cur)?;
        }
        Ok((nb, nid))
    }

    /// Would inserting `key` with a `len`-byte value overflow the node in `id`?
    fn needs_split(
        s: &impl NodeStore,
        id: SlotId,
        block: BlockNr,
        key: &Key,
        len: usize,
    ) -> Result<bool> {
        let n = NodeRef::new(s.node(id)?, block);
        let free = n.capacity().saturating_sub(n.used());
        if !n.is_leaf() {
            return Ok(free < INTERNAL_PTR_LEN);
        }
        // Replacing frees the old item (descriptor and value) first.
        let old = n.search(key).map_or(0, |i| n.item_size(i));
        Ok(free + old < LEAF_ITEM_LEN + len)
    }

    /// Split the writable child `idx` (in slot `cid`, block `cblock`, at `level`) of the
    /// writable node in slot `pid`: its upper half moves to a new right sibling. Returns the
    /// half `key` now belongs to, as `(block, slot)` (both writable and resident).
    fn split_child(
        &self,
        s: &mut impl NodeStore,
        (pblock, pid): (BlockNr, SlotId),
        idx: usize,
        (cblock, cid): (BlockNr, SlotId),
        level: u8,
        key: &Key,
    ) -> Result<(BlockNr, SlotId)> {
        // Both pinned while the new node's slot is claimed (which may evict); nothing after
        // that loads.
        s.pin(pid);
        s.pin(cid);
        let made = s.new_node(self.owner, level);
        s.unpin(cid);
        s.unpin(pid);
        let (sb, sid) = made?;
        let (src, dst) = s.pair(cid, sid)?;
        let from = NodeRef::new(src, cblock);
        let n = from.len();
        let m = if from.is_leaf() {
            let half = from.used() / 2;
            let mut acc = 0;
            let mut m = 0;
            while m < n && acc < half {
                acc += from.item_size(m);
                m += 1;
            }
            m.clamp(1, n.saturating_sub(1).max(1))
        } else {
            n / 2
        };
        let mut to = NodeMut::new(dst, sb);
        append_items(&from, m, &mut to)?;
        let sep = to.as_ref().key_or_min(0);
        NodeMut::new(s.node_mut(cid)?, cblock).truncate(m);
        let cur = s.generation();
        NodeMut::new(s.node_mut(pid)?, pblock).ptr_insert(idx + 1, sep, sb, cur)?;
        Ok(if *key < sep { (cblock, cid) } else { (sb, sid) })
    }

    /// Insert or replace `key` → `value` according to `mode`.
    pub fn insert<S: NodeStore>(
        &mut self,
        s: &mut S,
        key: Key,
        value: &[u8],
        mode: InsertMode,
    ) -> Result<()> {
        let root = self.load(s, self.root.block, self.root.level, self.root.generation)?;
        let bs = s.node(root)?.len();
        if value.len() > max_value_len(bs) {
            return Err(Error::TooLarge);
        }
        if mode != InsertMode::Upsert {
            let exists = self.seek(s, &key, Seek::Exact)?.is_some();
            match (mode, exists) {
                (InsertMode::Create, true) => return Err(Error::AlreadyExists),
                (InsertMode::Replace, false) => return Err(Error::NotFound),
                _ => {}
            }
        }
        let (mut block, mut id) = self.cow_root(s)?;
        if Self::needs_split(s, id, block, &key, value.len())? {
            let level = self.root.level + 1;
            if usize::from(level) >= MAX_DEPTH {
                return Err(Error::NoSpace);
            }
            // The old root's slot is not used again (the descent reloads it as a child): no
            // need to keep it resident.
            let (nb, nid) = s.new_node(self.owner, level)?;
            let cur = s.generation();
            // The old root becomes the new root's only child; the descent below splits it
            // like any other full child.
            NodeMut::new(s.node_mut(nid)?, nb).ptr_insert(0, Key::MIN, block, cur)?;
            self.root = Root {
                block: nb,
                generation: cur,
                level,
            };
            (block, id) = (nb, nid);
        }
        // Bounded: each step goes one level down (`cow_child` loads the child at that level).
        loop {
            let n = NodeRef::new(s.node(id)?, block);
            if n.is_leaf() {
                return NodeMut::new(s.node_mut(id)?, block).leaf_put(key, value);
            }
            let level = n.level() - 1;
            let idx = n.child_index(&key);
            if idx == 0 && key < n.key_or_min(0) {
                NodeMut::new(s.node_mut(id)?, block).set_key(0, key)?;
            }
            let (mut cb, mut cid) = self.cow_child(s, id, block, idx, level)?;
            if Self::needs_split(s, cid, cb, &key, value.len())? {
                (cb, cid) = self.split_child(s, (block, id), idx, (cb, cid), level, &key)?;
            }
            (block, id) = (cb, cid);
        }
    }

    /// Remove `key`. Returns whether it was present.
    pub fn remove<S: NodeStore>(&mut self, s: &mut S, key: &Key) -> Result<bool> {
        if self.seek(s, key, Seek::Exact)?.is_none() {
            return Ok(false);
        }
        let mut path: heapless::Vec<Step, MAX_DEPTH> = heapless::Vec::new();
        let (mut block, mut id) = self.cow_root(s)?;
        loop {
            let n = NodeRef::new(s.node(id)?, block);
            if n.is_leaf() {
                let i = n.search(key).map_err(|_| Error::Corrupt)?;
                NodeMut::new(s.node_mut(id)?, block).leaf_remove(i)?;
                break;
            }
            let level = n.level() - 1;
            let idx = n.child_index(key);
            path.push(Step { block, idx }).map_err(|_| Error::Corrupt)?;
            (block, id) = self.cow_child(s, id, block, idx, level)?;
        }
        // Rebalance bottom-up: `block` is the (writable) node just edited, still resident in
        // slot `id` (nothing was loaded since its edit, nor since the rebalance below that
        // leaves its parent resident).
        let mut child_level = 0u8;
        while let Some(step) = path.pop() {
            if !under_full(&NodeRef::new(s.node(id)?, block)) {
                break;
            }
            let pid = s.load(step.block, self.owner, child_level + 1, s.generation())?;
            let plen = NodeRef::new(s.node(pid)?, step.block).len();
            if plen < 2 {
                break;
            }
            // Pair the node with its left sibling, or its right one if it is the first.
            let li = if step.idx > 0 { step.idx - 1 } else { 0 };
            s.pin(pid);
            let r = self.rebalance(s, pid, step.block, li, child_level);
            s.unpin(pid);
            r?;
            (block, id) = (step.block, pid);
            child_level += 1;
        }
        // Collapse a root left with a single child (each pass lowers the root level).
        while self.root.level > 0 {
            let id = self.load(s, self.root.block, self.root.level, self.root.generation)?;
            let n = NodeRef::new(s.node(id)?, self.root.block);
            if n.len() != 1 {
                break;
            }
            let (cb, cg) = n.child_or_invalid(0);
            let old = self.root.block;
            self.root = Root {
                block: cb,
                generation: cg,
                level: self.root.level - 1,
            };
            s.free_node(old)?;
        }
        Ok(true)
    }

    /// Merge children `li` and `li + 1` of the writable node `pid` if they fit in one node.
    ///
    /// Otherwise the pair is more than half full on average (the under-full node is below a
    /// quarter, so its sibling holds more than three quarters) and stays as it is.
    fn rebalance(
        &self,
        s: &mut impl NodeStore,
        pid: SlotId,
        pblock: BlockNr,
        li: usize,
        level: u8,
    ) -> Result<()> {
        let (lb, lid) = self.cow_child(s, pid, pblock, li, level)?;
        s.pin(lid);
        let r = self.cow_child(s, pid, pblock, li + 1, level);
        s.unpin(lid);
        // Nothing is loaded from here on: both children stay resident.
        let (rb, rid) = r?;
        let (l, r) = (
            NodeRef::new(s.node(lid)?, lb),
            NodeRef::new(s.node(rid)?, rb),
        );
        if l.used() + r.used() > l.capacity() {
            return Ok(());
        }
        let (src, dst) = s.pair(rid, lid)?;
        append_items(&NodeRef::new(src, rb), 0, &mut NodeMut::new(dst, lb))?;
        NodeMut::new(s.node_mut(pid)?, pblock).ptr_remove(li + 1)?;
        s.free_node(rb)
    }
}

/// Copy items `first..` of `from` to the end of `to` (same level).
fn append_items(from: &NodeRef<'_>, first: usize, to: &mut NodeMut<'_>) -> Result<()> {
    for i in first..from.len() {
        let key = from.key_or_min(i);
        let at = to.as_ref().len();
        if from.is_leaf() {
            to.leaf_insert(at, key, from.value_or_empty(i))?;
        } else {
            let (b, g) = from.child_or_invalid(i);
            to.ptr_insert(at, key, b, g)?;
        }
    }
    Ok(())
}
