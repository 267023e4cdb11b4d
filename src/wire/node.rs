//! B+tree node layout, and the in-place edits a copy-on-write tree makes to a node it owns.
//!
//! ```text
//! leaf:     | header | item 0 | item 1 | … | item n-1 | free | value n-1 | … | value 1 | value 0 |
//! interior: | header | ptr 0 | ptr 1 | … | ptr n-1 | free                                       |
//! ```
//!
//! A leaf's values are packed against the end of the block in reverse item order, so
//! `value_end(i) = value_off(i-1)` (the block end for item 0). Verification checks exactly
//! that chain, which bounds every value inside the block and makes overlap impossible.
//! Keys are strictly increasing. An interior pointer's key is the smallest key of its subtree
//! (the first pointer's key is a lower bound only).

use zerocopy::little_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::header::{BlockHeader, BlockKind, HEADER_LEN};
use super::key::{Key, KeyBytes};
use super::{block_nr, BlockNr};
use crate::error::{Error, Result};

/// One leaf item descriptor.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct LeafItem {
    /// The item's key.
    pub key: KeyBytes,
    /// Byte offset of the value from the start of the block.
    pub val_off: U16,
    /// Value length in bytes.
    pub val_len: U16,
}

/// One interior-node child pointer.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct InternalPtr {
    /// Lower bound of the child's keys.
    pub key: KeyBytes,
    /// Child block number.
    pub block: U64,
    /// Generation the child was written in; must match the child's header.
    pub generation: U64,
}

/// Encoded size of a [`LeafItem`].
pub const LEAF_ITEM_LEN: usize = core::mem::size_of::<LeafItem>();
/// Encoded size of an [`InternalPtr`].
pub const INTERNAL_PTR_LEN: usize = core::mem::size_of::<InternalPtr>();

/// Offset of [`BlockHeader::nitems`] in a block.
const NITEMS_OFF: usize = core::mem::offset_of!(BlockHeader, nitems);
/// Offset of [`BlockHeader::level`] in a block.
const LEVEL_OFF: usize = core::mem::offset_of!(BlockHeader, level);

fn nitems_of(buf: &[u8]) -> usize {
    // `get` yields exactly HEADER_LEN bytes, so the constant indexes are in bounds.
    buf.get(..HEADER_LEN).map_or(0, |h| {
        usize::from(u16::from_le_bytes([h[NITEMS_OFF], h[NITEMS_OFF + 1]]))
    })
}

fn set_nitems(buf: &mut [u8], n: usize) {
    if let Some(h) = BlockHeader::parse_mut(buf) {
        h.nitems = U16::new(n as u16);
    }
}

/// Copy `len` bytes of `buf` from `src` to `dst`; the ranges may overlap. `None` (and no
/// change) if either range leaves the buffer.
///
/// Not `copy_within`: that links the 1.5 KB `memmove` for these few node edits. Instead the
/// range moves in chunks no longer than the distance moved, so no chunk overlaps its
/// destination and each is a plain `memcpy` (linked anyway); moving down the chunks go
/// front first, moving up back first, so no chunk is overwritten before it is read. A byte
/// loop would be as small but several times slower on a 4 KiB node.
fn shift(buf: &mut [u8], src: usize, dst: usize, len: usize) -> Option<()> {
    buf.get(src.max(dst)..)?.get(..len)?;
    let (lo, hi) = (src.min(dst), src.max(dst));
    let step = hi - lo;
    let mut done = 0;
    while done < len && step > 0 {
        let n = step.min(len - done);
        let off = if dst < src { done } else { len - done - n };
        let (below, above) = buf.split_at_mut_checked(hi + off)?;
        let (low, high) = (
            below.get_mut(lo + off..)?.get_mut(..n)?,
            above.get_mut(..n)?,
        );
        if dst < src {
            low.copy_from_slice(high);
        } else {
            high.copy_from_slice(low);
        }
        done += n;
    }
    Some(())
}

/// Move the `width`-byte descriptors `i..n` up by one, opening slot `i`. (These two are
/// inlined: as calls they cost 16 B more.)
#[inline(always)]
fn open_slot(buf: &mut [u8], i: usize, n: usize, width: usize) -> Option<()> {
    let at = HEADER_LEN + i * width;
    shift(buf, at, at + width, (n - i) * width)
}

/// Move the `width`-byte descriptors `i+1..n` down by one, closing slot `i`.
#[inline(always)]
fn close_slot(buf: &mut [u8], i: usize, n: usize, width: usize) -> Option<()> {
    let at = HEADER_LEN + i * width;
    shift(buf, at + width, at, (n - 1 - i) * width)
}

// Descriptors are reached one at a time, as fixed-size casts of the bytes at their offset:
// slices of them (`ref_from_prefix_with_elems`) link zerocopy's general length computation,
// about 200 B more of Thumb code.

/// Descriptor `i` of type `T` (a leaf item or a child pointer, whichever the node holds):
/// `None` unless `i < len()` and it lies in the block.
// Inlined: 8 B less than as a call.
#[inline(always)]
fn desc<T: FromBytes + KnownLayout + Immutable>(buf: &[u8], i: usize) -> Option<&T> {
    if i >= nitems_of(buf) {
        return None;
    }
    // `i < len() <= u16::MAX` and a descriptor is a few dozen bytes: no overflow.
    let b = buf.get(HEADER_LEN + i * core::mem::size_of::<T>()..)?;
    T::ref_from_prefix(b).ok().map(|(d, _)| d)
}

/// Descriptor slot `i` of type `T` for writing: `None` if it does not lie in the block (the
/// caller bounds `i` by the item count, which it may be changing).
fn desc_mut<T: FromBytes + IntoBytes + KnownLayout>(buf: &mut [u8], i: usize) -> Option<&mut T> {
    let at = HEADER_LEN.checked_add(i.checked_mul(core::mem::size_of::<T>())?)?;
    T::mut_from_prefix(buf.get_mut(at..)?).ok().map(|(d, _)| d)
}

/// Leaf descriptor `i` (see [`desc`]).
#[inline(always)]
fn leaf_item(buf: &[u8], i: usize) -> Option<&LeafItem> {
    desc(buf, i)
}

/// Leaf descriptor slot `i` for writing (see [`desc_mut`]).
fn leaf_item_mut(buf: &mut [u8], i: usize) -> Option<&mut LeafItem> {
    desc_mut(buf, i)
}

/// Child pointer `i` (see [`desc`]).
fn ptr(buf: &[u8], i: usize) -> Option<&InternalPtr> {
    desc(buf, i)
}

/// Child pointer slot `i` for writing (see [`desc_mut`]).
fn ptr_mut(buf: &mut [u8], i: usize) -> Option<&mut InternalPtr> {
    desc_mut(buf, i)
}

/// Start of a leaf's values: the last item's value (its index wraps to `usize::MAX`, no item,
/// in an empty leaf), or the block end.
fn data_start(buf: &[u8]) -> usize {
    leaf_item(buf, nitems_of(buf).wrapping_sub(1))
        .map_or(buf.len(), |it| usize::from(it.val_off.get()))
}

/// A read-only view of a node whose header and layout were verified.
///
/// Accessors never panic: an index out of range yields `Corrupt` (for views of verified nodes
/// it cannot happen, but a bug must not become a panic in firmware). The tree, whose indexes
/// come from the checked node itself, uses infallible variants that yield a harmless default
/// instead (no error path at each of its many call sites).
#[derive(Clone, Copy)]
pub struct NodeRef<'a> {
    buf: &'a [u8],
    block: BlockNr,
}

impl<'a> NodeRef<'a> {
    /// View `buf`, read from `block`. Call [`verify`](Self::verify) before trusting it.
    pub fn new(buf: &'a [u8], block: BlockNr) -> Self {
        NodeRef { buf, block }
    }

    fn corrupt(&self) -> Error {
        Error::Corrupt
    }

    /// Full structural check of a node read from disk: header (magic, crc, address), kind,
    /// owner, level, generation, and the item / pointer layout. `expect_level` and
    /// `expect_generation` come from the parent pointer (or the superblock for a root).
    pub fn verify(
        buf: &'a [u8],
        block: BlockNr,
        owner: u64,
        expect_level: u8,
        expect_generation: u64,
    ) -> Result<Self> {
        BlockHeader::verify(buf, block)?;
        if !Self::matches(buf, owner, expect_level, expect_generation) {
            return Err(Error::Corrupt);
        }
        let node = NodeRef { buf, block };
        node.check_layout()?;
        Ok(node)
    }

    /// Does the header of `buf` carry the `owner`, `level` and `generation` the pointer
    /// followed to it expects (and a level below the depth bound)? The part of
    /// [`verify`](Self::verify) a node verified earlier must still pass.
    pub(crate) fn matches(buf: &[u8], owner: u64, level: u8, generation: u64) -> bool {
        BlockHeader::parse(buf).is_some_and(|h| {
            h.owner.get() == owner
                && h.level == level
                && h.generation.get() == generation
                && usize::from(level) < super::MAX_DEPTH
        })
    }

    /// Check the item / pointer layout (used on read and, in debug tests, after edits).
    pub fn check_layout(&self) -> Result<()> {
        let bad = self.corrupt();
        let h = BlockHeader::parse(self.buf).ok_or(bad)?;
        let n = usize::from(h.nitems.get());
        let size = self.buf.len();
        let is_leaf = match (h.block_kind(), h.level) {
            (Some(BlockKind::Leaf), 0) => true,
            (Some(BlockKind::Internal), l) if l > 0 => false,
            _ => return Err(bad),
        };
        let stride = self.stride();
        let end_items = HEADER_LEN + n * stride;
        if end_items > size || (!is_leaf && n == 0) {
            return Err(bad);
        }
        if is_leaf {
            let mut prev_off = size;
            for i in 0..n {
                let it = leaf_item(self.buf, i).ok_or(bad)?;
                let len = usize::from(it.val_len.get());
                let off = usize::from(it.val_off.get());
                if off + len != prev_off || off < end_items {
                    return Err(bad);
                }
                prev_off = off;
            }
        }
        // Every descriptor lies in the block (checked above), so no key comes back as the
        // `Key::MIN` stand-in.
        let mut prev = self.key_or_min(0);
        for i in 1..n {
            let k = self.key_or_min(i);
            if prev >= k {
                return Err(bad);
            }
            prev = k;
        }
        Ok(())
    }

    /// The block this view was read from.
    pub fn block(&self) -> BlockNr {
        self.block
    }
    /// Number of items or pointers.
    pub fn len(&self) -> usize {
        nitems_of(self.buf)
    }
    /// No items.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Tree level (0 = leaf).
    pub fn level(&self) -> u8 {
        self.buf.get(..HEADER_LEN).map_or(0, |h| h[LEVEL_OFF])
    }
    /// Is this a leaf?
    pub fn is_leaf(&self) -> bool {
        self.level() == 0
    }
    /// Generation recorded in the header.
    pub fn generation(&self) -> u64 {
        BlockHeader::parse(self.buf).map_or(0, |h| h.generation.get())
    }

    /// Bytes per item descriptor (leaf) or pointer (interior node).
    fn stride(&self) -> usize {
        if self.is_leaf() {
            LEAF_ITEM_LEN
        } else {
            INTERNAL_PTR_LEN
        }
    }

    /// Key of descriptor / pointer `i`: `None` if `i` is not below `len()` or the
    /// descriptor does not lie in the block (never for a verified node).
    // Inlined: as a call, with its `Option<Key>` passed through memory, 52 B more.
    #[inline(always)]
    fn key_at(&self, stride: usize, i: usize) -> Option<Key> {
        if i >= self.len() {
            return None;
        }
        // Both descriptor kinds start with the key. `i < len() <= u16::MAX` and
        // `stride <= INTERNAL_PTR_LEN`: no overflow (and `get` bounds it).
        let off = HEADER_LEN + i * stride;
        let (k, _) = KeyBytes::ref_from_prefix(self.buf.get(off..)?).ok()?;
        Some(Key::from(k))
    }

    /// Key of item / pointer `i`.
    pub fn key(&self, i: usize) -> Result<Key> {
        self.key_at(self.stride(), i).ok_or(self.corrupt())
    }

    /// Key of item / pointer `i` of a node whose layout was checked, for indexes the tree
    /// derived from it: [`Key::MIN`] (never a panic) if `i` is out of range after all.
    pub(crate) fn key_or_min(&self, i: usize) -> Key {
        self.key_at(self.stride(), i).unwrap_or(Key::MIN)
    }

    /// Value of leaf item `i`.
    pub fn value(&self, i: usize) -> Result<&'a [u8]> {
        self.value_at(i).ok_or(self.corrupt())
    }

    /// Value of leaf item `i`: `None` if there is no such item or its value leaves the block.
    fn value_at(&self, i: usize) -> Option<&'a [u8]> {
        let it = leaf_item(self.buf, i)?;
        let off = usize::from(it.val_off.get());
        self.buf.get(off..off + usize::from(it.val_len.get()))
    }

    /// [`value`](Self::value) for indexes the tree derived from a checked node: empty (never
    /// a panic) if `i` is out of range after all.
    pub(crate) fn value_or_empty(&self, i: usize) -> &'a [u8] {
        self.value_at(i).unwrap_or(&[])
    }

    /// Child pointer `i` of an interior node: `(block, generation)`.
    pub fn child(&self, i: usize) -> Result<(BlockNr, u64)> {
        let p = ptr(self.buf, i).ok_or(self.corrupt())?;
        Ok((block_nr(p.block.get())?, p.generation.get()))
    }

    /// [`child`](Self::child) for indexes the tree derived from a checked node: a pointer
    /// out of range, or to a block number past [`BlockNr::MAX`], comes back as block
    /// `BlockNr::MAX`, which is never a tree node (loading it fails with `Corrupt`).
    pub(crate) fn child_or_invalid(&self, i: usize) -> (BlockNr, u64) {
        ptr(self.buf, i).map_or((BlockNr::MAX, 0), |p| {
            (
                BlockNr::try_from(p.block.get()).unwrap_or(BlockNr::MAX),
                p.generation.get(),
            )
        })
    }

    /// Binary search: `Ok(i)` if item `i` has `key`, else `Err(i)` where it would go.
    pub fn search(&self, key: &Key) -> core::result::Result<usize, usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // `mid < len`: the key is in a verified block (else `Key::MIN`, and the search
            // still ends, on some index).
            match self.key_or_min(mid).cmp(key) {
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
                core::cmp::Ordering::Equal => return Ok(mid),
            }
        }
        Err(lo)
    }

    /// Index of the child whose subtree may hold `key` (interior nodes).
    pub fn child_index(&self, key: &Key) -> usize {
        match self.search(key) {
            Ok(i) => i,
            Err(0) => 0,
            Err(i) => i - 1,
        }
    }

    /// Bytes in use by items / pointers and values, header excluded.
    pub fn used(&self) -> usize {
        let n = self.len();
        if self.is_leaf() {
            // The values are packed against the block end (the layout `check_layout` verifies
            // and every edit keeps): they take the bytes from the first one to the end.
            n * LEAF_ITEM_LEN + self.buf.len().saturating_sub(data_start(self.buf))
        } else {
            n * INTERNAL_PTR_LEN
        }
    }

    /// Bytes a node of this size can hold after its header.
    pub fn capacity(&self) -> usize {
        self.buf.len().saturating_sub(HEADER_LEN)
    }

    /// Bytes item `i` takes (descriptor plus value, or one pointer).
    pub fn item_size(&self, i: usize) -> usize {
        if self.is_leaf() {
            leaf_item(self.buf, i).map_or(0, |it| LEAF_ITEM_LEN + usize::from(it.val_len.get()))
        } else {
            INTERNAL_PTR_LEN
        }
    }
}

/// Mutable edits on a node the tree owns (already copied for this transaction).
///
/// Every edit keeps the layout that [`NodeRef::check_layout`] verifies. Edits that do not fit
/// return [`Error::TooLarge`] and change nothing; the tree splits first so that never happens
/// in practice.
pub struct NodeMut<'a> {
    buf: &'a mut [u8],
    block: BlockNr,
}

impl<'a> NodeMut<'a> {
    /// Edit `buf`, which lives at `block`.
    pub fn new(buf: &'a mut [u8], block: BlockNr) -> Self {
        NodeMut { buf, block }
    }

    /// Read-only view.
    pub fn as_ref(&self) -> NodeRef<'_> {
        NodeRef {
            buf: self.buf,
            block: self.block,
        }
    }

    fn corrupt(&self) -> Error {
        Error::Corrupt
    }

    /// Free bytes between the descriptors and the values (leaf) or after the pointers.
    pub fn free(&self) -> usize {
        let r = self.as_ref();
        r.capacity().saturating_sub(r.used())
    }

    /// Insert `key` → `value` at index `i` of a leaf.
    pub fn leaf_insert(&mut self, i: usize, key: Key, value: &[u8]) -> Result<()> {
        let n = nitems_of(self.buf);
        let len = value.len();
        if i > n || len > usize::from(u16::MAX) {
            return Err(Error::InvalidArgument);
        }
        let data_start = data_start(self.buf);
        // The free space is the gap between the descriptors and the values (the layout is
        // verified on load and every edit keeps it); it must take a descriptor and the value.
        if data_start < HEADER_LEN + (n + 1) * LEAF_ITEM_LEN + len {
            return Err(Error::TooLarge);
        }
        // End of the new value: where item i-1's value starts (or the block end).
        let end = if i == 0 {
            self.buf.len()
        } else {
            usize::from(
                leaf_item(self.buf, i - 1)
                    .ok_or(self.corrupt())?
                    .val_off
                    .get(),
            )
        };
        let bad = self.corrupt();
        // Slide the values of items i.. down by `len` to open a gap below `end`.
        let vals = end.checked_sub(data_start).ok_or(bad)?;
        shift(self.buf, data_start, data_start - len, vals).ok_or(bad)?;
        for j in i..n {
            let it = leaf_item_mut(self.buf, j).ok_or(bad)?;
            it.val_off = U16::new(it.val_off.get().wrapping_sub(len as u16));
        }
        // Then the descriptors i.. up by one (into the free space checked above).
        open_slot(self.buf, i, n, LEAF_ITEM_LEN).ok_or(bad)?;
        *leaf_item_mut(self.buf, i).ok_or(bad)? = LeafItem {
            key: key.into(),
            val_off: U16::new((end - len) as u16),
            val_len: U16::new(len as u16),
        };
        self.buf
            .get_mut(end - len..end)
            .ok_or(bad)?
            .copy_from_slice(value);
        set_nitems(self.buf, n + 1);
        Ok(())
    }

    /// Remove leaf item `i`.
    pub fn leaf_remove(&mut self, i: usize) -> Result<()> {
        let bad = self.corrupt();
        let n = nitems_of(self.buf);
        let data_start = data_start(self.buf);
        let it = leaf_item(self.buf, i).ok_or(bad)?;
        let (off, len) = (usize::from(it.val_off.get()), usize::from(it.val_len.get()));
        let vals = off.checked_sub(data_start).ok_or(bad)?;
        // The values of items i+1.. move up over the removed value.
        for j in i + 1..n {
            let it = leaf_item_mut(self.buf, j).ok_or(bad)?;
            it.val_off = U16::new(it.val_off.get().wrapping_add(len as u16));
        }
        shift(self.buf, data_start, data_start + len, vals).ok_or(bad)?;
        // And the descriptors i+1.. down by one.
        close_slot(self.buf, i, n, LEAF_ITEM_LEN).ok_or(bad)?;
        set_nitems(self.buf, n - 1);
        Ok(())
    }

    /// Replace the value of leaf item `i` (any new length that fits).
    pub fn leaf_update(&mut self, i: usize, value: &[u8]) -> Result<()> {
        let key = self.as_ref().key(i)?;
        self.leaf_replace(i, key, value)
    }

    /// Give item `i`, whose key is `key`, the new `value`: checked before anything moves,
    /// so a value that does not fit leaves the leaf as it was.
    fn leaf_replace(&mut self, i: usize, key: Key, value: &[u8]) -> Result<()> {
        // `i` is an item of this leaf, so its size includes its descriptor.
        let old = self.as_ref().item_size(i).saturating_sub(LEAF_ITEM_LEN);
        if self.free() + old < value.len() {
            return Err(Error::TooLarge);
        }
        self.leaf_remove(i)?;
        self.leaf_insert(i, key, value)
    }

    /// Insert `key` → `value` into a leaf, replacing the value if `key` is there already.
    pub fn leaf_put(&mut self, key: Key, value: &[u8]) -> Result<()> {
        match self.as_ref().search(&key) {
            Ok(i) => self.leaf_replace(i, key, value),
            Err(i) => self.leaf_insert(i, key, value),
        }
    }

    /// Mutable access to the value of leaf item `i`, for same-size edits.
    pub fn value_mut(&mut self, i: usize) -> Result<&mut [u8]> {
        let (off, len) = {
            let it = leaf_item(self.buf, i).ok_or(self.corrupt())?;
            (usize::from(it.val_off.get()), usize::from(it.val_len.get()))
        };
        let bad = self.corrupt();
        self.buf.get_mut(off..off + len).ok_or(bad)
    }

    /// Insert a child pointer at index `i` of an interior node.
    pub fn ptr_insert(
        &mut self,
        i: usize,
        key: Key,
        block: BlockNr,
        generation: u64,
    ) -> Result<()> {
        let n = nitems_of(self.buf);
        if i > n {
            return Err(Error::InvalidArgument);
        }
        if HEADER_LEN + (n + 1) * INTERNAL_PTR_LEN > self.buf.len() {
            return Err(Error::TooLarge);
        }
        let bad = self.corrupt();
        open_slot(self.buf, i, n, INTERNAL_PTR_LEN).ok_or(bad)?;
        *ptr_mut(self.buf, i).ok_or(bad)? = InternalPtr {
            key: key.into(),
            block: u64::from(block).into(),
            generation: generation.into(),
        };
        set_nitems(self.buf, n + 1);
        Ok(())
    }

    /// Remove child pointer `i`.
    pub fn ptr_remove(&mut self, i: usize) -> Result<()> {
        let n = nitems_of(self.buf);
        if i >= n {
            return Err(self.corrupt());
        }
        let bad = self.corrupt();
        close_slot(self.buf, i, n, INTERNAL_PTR_LEN).ok_or(bad)?;
        set_nitems(self.buf, n - 1);
        Ok(())
    }

    /// Point child `i` at a new block / generation.
    pub fn set_child(&mut self, i: usize, block: BlockNr, generation: u64) -> Result<()> {
        let bad = self.corrupt();
        if i >= nitems_of(self.buf) {
            return Err(bad);
        }
        let p = ptr_mut(self.buf, i).ok_or(bad)?;
        p.block = u64::from(block).into();
        p.generation = generation.into();
        Ok(())
    }

    /// Change the key of item / pointer `i` (the caller keeps the order).
    pub fn set_key(&mut self, i: usize, key: Key) -> Result<()> {
        let stride = self.as_ref().stride();
        if i >= nitems_of(self.buf) {
            return Err(self.corrupt());
        }
        // Both descriptor kinds start with the key; `get_mut` keeps it in the block.
        let bad = self.corrupt();
        let off = HEADER_LEN + i * stride;
        let (k, _) = self
            .buf
            .get_mut(off..)
            .and_then(|b| KeyBytes::mut_from_prefix(b).ok())
            .ok_or(bad)?;
        *k = key.into();
        Ok(())
    }

    /// Drop items / pointers `n..`. For a leaf the dropped values are the lowest in the block,
    /// so the layout stays packed.
    pub fn truncate(&mut self, n: usize) {
        if n < nitems_of(self.buf) {
            set_nitems(self.buf, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(buf: &mut [u8]) {
        BlockHeader::init(buf, BlockKind::Leaf, 1, 5, 1, 0).unwrap();
    }

    #[test]
    fn shift_matches_copy_within_for_every_overlap() {
        const N: usize = 24;
        let orig: [u8; N] = core::array::from_fn(|i| i as u8 + 1);
        for src in 0..=N {
            for dst in 0..=N {
                for len in 0..=N {
                    let mut got = orig;
                    let r = shift(&mut got, src, dst, len);
                    if src.max(dst) + len > N {
                        assert_eq!(r, None, "{src} {dst} {len}");
                        assert_eq!(got, orig, "unchanged when out of range");
                        continue;
                    }
                    let mut want = orig;
                    want.copy_within(src..src + len, dst);
                    assert_eq!(r, Some(()));
                    assert_eq!(got, want, "src {src} dst {dst} len {len}");
                }
            }
        }
    }

    #[test]
    fn leaf_insert_remove_update_keep_layout() {
        let mut b = [0u8; 512];
        leaf(&mut b);
        let mut m = NodeMut::new(&mut b, 5);
        m.leaf_insert(0, Key::new(2, 0, 0), b"bb").unwrap();
        m.leaf_insert(0, Key::new(1, 0, 0), b"a").unwrap();
        m.leaf_insert(2, Key::new(3, 0, 0), b"cccc").unwrap();
        m.leaf_insert(1, Key::new(1, 5, 0), b"").unwrap();
        m.as_ref().check_layout().unwrap();
        let r = m.as_ref();
        assert_eq!(r.len(), 4);
        assert_eq!(r.value(0).unwrap(), b"a");
        assert_eq!(r.value(1).unwrap(), b"");
        assert_eq!(r.value(2).unwrap(), b"bb");
        assert_eq!(r.value(3).unwrap(), b"cccc");
        let sizes = |r: &NodeRef<'_>| (0..r.len()).map(|i| r.item_size(i)).sum::<usize>();
        assert_eq!(r.used(), sizes(&r));
        m.leaf_update(2, b"BBBBBB").unwrap();
        m.leaf_remove(0).unwrap();
        m.as_ref().check_layout().unwrap();
        let r = m.as_ref();
        assert_eq!(r.used(), sizes(&r));
        assert_eq!(r.value(1).unwrap(), b"BBBBBB");
        assert_eq!(r.value(2).unwrap(), b"cccc");
        assert_eq!(r.search(&Key::new(3, 0, 0)), Ok(2));
        assert_eq!(r.search(&Key::new(0, 0, 0)), Err(0));
    }

    #[test]
    fn full_leaf_refuses_without_change() {
        let mut b = [0u8; 512];
        leaf(&mut b);
        let mut m = NodeMut::new(&mut b, 5);
        let mut i = 0;
        while m.leaf_insert(i, Key::new(i as u64, 0, 0), &[7; 30]).is_ok() {
            i += 1;
        }
        assert_eq!(i, (512 - HEADER_LEN) / (LEAF_ITEM_LEN + 30));
        m.as_ref().check_layout().unwrap();
    }

    #[test]
    fn interior_ptrs() {
        let mut b = [0u8; 512];
        BlockHeader::init(&mut b, BlockKind::Internal, 1, 5, 1, 1).unwrap();
        let mut m = NodeMut::new(&mut b, 5);
        m.ptr_insert(0, Key::new(10, 0, 0), 100, 1).unwrap();
        m.ptr_insert(0, Key::new(0, 0, 0), 99, 1).unwrap();
        m.ptr_insert(2, Key::new(20, 0, 0), 101, 1).unwrap();
        let r = m.as_ref();
        r.check_layout().unwrap();
        assert_eq!(r.child_index(&Key::new(15, 0, 0)), 1);
        assert_eq!(r.child_index(&Key::new(20, 0, 0)), 2);
        assert_eq!(r.child(2).unwrap(), (101, 1));
        m.ptr_remove(1).unwrap();
        assert_eq!(m.as_ref().child(1).unwrap(), (101, 1));
    }

    #[test]
    fn child_past_blocknr_is_corrupt() {
        let mut b = [0u8; 512];
        BlockHeader::init(&mut b, BlockKind::Internal, 1, 5, 1, 1).unwrap();
        let mut m = NodeMut::new(&mut b, 5);
        m.ptr_insert(0, Key::new(0, 0, 0), BlockNr::MAX, 1).unwrap();
        assert_eq!(m.as_ref().child(0).unwrap(), (BlockNr::MAX, 1));
        // The pointer's block field (after the key) set to 2^32: no truncation to block 0.
        let at = HEADER_LEN + 17;
        b[at..at + 8].copy_from_slice(&(1u64 << 32).to_le_bytes());
        BlockHeader::seal(&mut b);
        let r = NodeRef::verify(&b, 5, 1, 1, 1).unwrap();
        assert_eq!(r.child(0), Err(Error::Corrupt));
    }

    #[test]
    fn verify_rejects_bad_layout() {
        let mut b = [0u8; 512];
        leaf(&mut b);
        let mut m = NodeMut::new(&mut b, 5);
        m.leaf_insert(0, Key::new(1, 0, 0), b"xy").unwrap();
        m.leaf_insert(1, Key::new(2, 0, 0), b"z").unwrap();
        BlockHeader::seal(&mut b);
        assert!(NodeRef::verify(&b, 5, 1, 0, 1).is_ok());
        assert!(NodeRef::verify(&b, 5, 2, 0, 1).is_err(), "owner");
        assert!(NodeRef::verify(&b, 5, 1, 1, 1).is_err(), "level");
        assert!(NodeRef::verify(&b, 5, 1, 0, 2).is_err(), "generation");
        // A value offset pointing out of the block, with a valid checksum, is still caught.
        let mut c = b;
        c[HEADER_LEN + 17] = 0xff;
        c[HEADER_LEN + 18] = 0xff;
        BlockHeader::seal(&mut c);
        assert!(NodeRef::verify(&c, 5, 1, 0, 1).is_err());
        // Keys out of order.
        let mut d = b;
        d[HEADER_LEN] = 9;
        BlockHeader::seal(&mut d);
        assert!(NodeRef::verify(&d, 5, 1, 0, 1).is_err());
    }
}
