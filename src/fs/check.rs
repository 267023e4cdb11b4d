//! The namespace half of `fsck`: every inode named exactly once, every directory entry
//! pointing at a live inode of the kind it says, directory sizes and parent pointers right,
//! file extents inside the file and not overlapping, block counts matching.
//!
//! The block half (every block owned exactly once, every node verified) is
//! [`crate::fsck`]. Memory: a caller-provided scratch buffer, split into the block bitmap and
//! two bitmaps over inode numbers (exists / named); work: one pass over the tree's items plus
//! one inode lookup per directory entry.

use zerocopy::FromBytes;

use super::dir::entries;
use super::inode::decode_inode;
use super::Fs;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::fsck::Report;
use crate::wire::items::{inode_flags, kind, ExtentItem, FileKind, ROOT_INO};
use crate::wire::Key;

/// What [`Fs::fsck`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FsckReport {
    /// The block-level report (trees, free space, leaks, double references).
    pub blocks: Report,
    /// Inodes found.
    pub inodes: u64,
    /// Directories among them.
    pub dirs: u64,
    /// Directory entries.
    pub entries: u64,
    /// Namespace inconsistencies found.
    pub errors: u64,
    /// The first inconsistency: the inode and what was wrong.
    pub first_error: Option<(u64, &'static str)>,
}

impl FsckReport {
    /// No inconsistency of any kind.
    pub fn is_clean(&self) -> bool {
        self.blocks.is_clean() && self.errors == 0
    }

    fn err(&mut self, ino: u64, what: &'static str) {
        self.errors += 1;
        self.first_error.get_or_insert((ino, what));
    }
}

/// Bit `i` of `bits`: set it, returning whether it was set before (or out of range).
fn set_bit(bits: &mut [u8], i: u64) -> Option<bool> {
    let byte = bits.get_mut(usize::try_from(i / 8).ok()?)?;
    let m = 1 << (i % 8);
    let was = *byte & m != 0;
    *byte |= m;
    Some(was)
}

fn get_bit(bits: &[u8], i: u64) -> bool {
    usize::try_from(i / 8)
        .ok()
        .and_then(|b| bits.get(b))
        .is_some_and(|b| b & (1 << (i % 8)) != 0)
}

/// Per-inode tallies while its items go by.
#[derive(Default)]
struct Current {
    ino: u64,
    kind: Option<FileKind>,
    size: u64,
    blocks: u64,
    flags: u64,
    entries: u64,
    index_entries: u64,
    extent_blocks: u64,
    next_fblk: u64,
    inline_len: Option<u64>,
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> Fs<'b, D, N, H> {
    /// Bytes of scratch [`fsck`](Self::fsck) needs.
    pub fn fsck_scratch_len(&self) -> usize {
        let blocks = self.vol.space_info().total_blocks;
        let inos = self.vol.superblock().next_id.get();
        // `next_id` comes from disk: a hostile count saturates, and `fsck` then refuses the
        // scratch as too small instead of overflowing.
        let ino_bytes = inos.div_ceil(8).saturating_mul(2);
        usize::try_from(blocks.div_ceil(8).saturating_add(ino_bytes)).unwrap_or(usize::MAX)
    }

    /// Check the whole volume: blocks (see [`crate::fsck`]) and namespace. `scratch` must
    /// hold [`fsck_scratch_len`](Self::fsck_scratch_len) bytes.
    pub fn fsck(&mut self, scratch: &mut [u8]) -> Result<FsckReport> {
        self.settle()?;
        let inos = self.vol.superblock().next_id.get();
        let ino_bytes = usize::try_from(inos.div_ceil(8)).map_err(|_| Error::InvalidArgument)?;
        let need = self.fsck_scratch_len();
        let scratch = scratch.get_mut(..need).ok_or(Error::InvalidArgument)?;
        let both = ino_bytes.checked_mul(2).ok_or(Error::InvalidArgument)?;
        let (blockbits, rest) =
            scratch.split_at_mut(need.checked_sub(both).ok_or(Error::InvalidArgument)?);
        let (exists, named) = rest.split_at_mut(ino_bytes);
        exists.fill(0);
        named.fill(0);
        let mut rep = FsckReport {
            blocks: self.vol.fsck(blockbits)?,
            ..FsckReport::default()
        };
        if !rep.blocks.is_clean() && rep.blocks.bad_nodes > 0 {
            // A tree that does not verify cannot be walked item by item.
            return Ok(rep);
        }
        let bs = u64::from(self.vol.space_info().block_size);
        let mut cur = Current::default();
        let mut from = Key::MIN;
        let mut inclusive = true;
        loop {
            let item = self.vol.next(&from, inclusive, |k, v| {
                (k, heapless::Vec::<u8, 1024>::from_slice(v))
            })?;
            let Some((k, v)) = item else { break };
            from = k;
            inclusive = false;
            if k.id != cur.ino {
                self.finish_inode(&cur, &mut rep, bs);
                cur = Current {
                    ino: k.id,
                    ..Current::default()
                };
            }
            let Ok(v) = v else {
                rep.err(k.id, "item larger than any valid item");
                continue;
            };
            match k.kind {
                kind::INODE => match decode_inode(&v) {
                    Ok(i) => {
                        rep.inodes += 1;
                        if set_bit(exists, k.id) != Some(false) {
                            rep.err(k.id, "inode number out of range");
                        }
                        cur.kind = FileKind::from_u8(i.kind);
                        cur.size = i.size.get();
                        cur.blocks = i.blocks.get();
                        cur.flags = i.flags.get();
                        if cur.kind == Some(FileKind::Dir) {
                            rep.dirs += 1;
                        }
                    }
                    Err(_) => rep.err(k.id, "malformed inode"),
                },
                _ if cur.kind.is_none() => rep.err(k.id, "items of a missing inode"),
                kind::DIR_HASH | kind::DIR_INDEX => {
                    if cur.kind != Some(FileKind::Dir) {
                        rep.err(k.id, "directory entry in a file");
                        continue;
                    }
                    for e in entries(&v) {
                        let Ok((h, _name)) = e else {
                            rep.err(k.id, "malformed directory entry");
                            break;
                        };
                        if k.kind == kind::DIR_INDEX {
                            cur.index_entries += 1;
                            if h.seq.get() != k.offset {
                                rep.err(k.id, "index entry under the wrong sequence");
                            }
                            continue;
                        }
                        cur.entries += 1;
                        rep.entries += 1;
                        let target = h.ino.get();
                        if target == ROOT_INO || set_bit(named, target) != Some(false) {
                            rep.err(target, "inode named twice (or the root named)");
                        }
                        match self.read_inode(target) {
                            Ok(t) if t.kind == h.kind => {
                                if t.kind == FileKind::Dir as u8 && t.parent.get() != k.id {
                                    rep.err(target, "directory's parent pointer is wrong");
                                }
                            }
                            Ok(_) => rep.err(target, "entry kind differs from the inode"),
                            Err(Error::NotFound) => rep.err(target, "entry names a missing inode"),
                            Err(e) => return Err(e),
                        }
                    }
                }
                kind::EXTENT => match ExtentItem::read_from_bytes(&v) {
                    Ok(e) if cur.kind == Some(FileKind::File) && k.offset % bs == 0 => {
                        let fblk = k.offset / bs;
                        if fblk < cur.next_fblk {
                            rep.err(k.id, "overlapping extents");
                        }
                        cur.next_fblk = fblk.saturating_add(e.len.get());
                        cur.extent_blocks = cur.extent_blocks.saturating_add(e.len.get());
                        if cur.next_fblk > cur.size.div_ceil(bs) {
                            rep.err(k.id, "extent past the end of the file");
                        }
                    }
                    _ => rep.err(k.id, "malformed extent"),
                },
                kind::INLINE => cur.inline_len = Some(v.len() as u64),
                _ => rep.err(k.id, "unknown item kind"),
            }
        }
        self.finish_inode(&cur, &mut rep, bs);
        for ino in 0..inos {
            if get_bit(exists, ino) && ino != ROOT_INO && !get_bit(named, ino) {
                rep.err(ino, "inode named by no directory (orphan)");
            }
        }
        if rep.inodes != self.vol.inode_count() {
            rep.err(0, "inode counter differs from the inodes found");
        }
        if !get_bit(exists, ROOT_INO) {
            rep.err(ROOT_INO, "no root directory");
        }
        Ok(rep)
    }

    fn finish_inode(&self, c: &Current, rep: &mut FsckReport, _bs: u64) {
        match c.kind {
            None => {}
            Some(FileKind::Dir) if c.entries != c.size || c.index_entries != c.size => {
                rep.err(c.ino, "directory size differs from its entries");
            }
            Some(FileKind::Dir) => {}
            Some(FileKind::File) => {
                let inline = c.flags & inode_flags::INLINE != 0;
                match (inline, c.inline_len) {
                    (true, Some(n)) if n == c.size && c.extent_blocks == 0 => {}
                    (false, None) => {}
                    _ => rep.err(c.ino, "inline data disagrees with the inode"),
                }
                if c.extent_blocks != c.blocks {
                    rep.err(c.ino, "block count differs from the extents");
                }
            }
        }
    }
}
