//! Directories: entries indexed twice in the filesystem tree.
//!
//! * By name hash — `(dir, DIR_HASH, fnv1a64(name))` — so a lookup is one tree descent
//!   (O(log n) in the directory size, and at most the tree height in block reads). Names whose
//!   hashes collide share the item: its value is the entries back to back.
//! * By insertion sequence — `(dir, DIR_INDEX, seq)` — so `readdir` walks entries in a stable
//!   order with a resumable cursor (the next sequence number): entries added during a walk
//!   come after the cursor and are seen once; removed ones are simply gone.

use zerocopy::{FromBytes, FromZeros};

use super::inode::inode_key;
use super::Fs;
use crate::btree::InsertMode;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::wire::items::{
    kind, name_hash, DirEntryHead, FileKind, InodeItem, DIR_ENTRY_HEAD_LEN, NAME_MAX,
};
use crate::wire::Key;

/// Room for the entries of one hash item that we rewrite (several colliding names).
const HASH_ITEM_BUF: usize = 4 * (DIR_ENTRY_HEAD_LEN + NAME_MAX);

/// A directory entry found by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    pub ino: u64,
    pub kind: FileKind,
}

/// One entry returned by [`Fs::read_dir_next`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DirEntry {
    /// The entry's inode.
    pub ino: u64,
    /// File or directory.
    pub kind: FileKind,
    name: heapless::Vec<u8, NAME_MAX>,
}

impl DirEntry {
    /// The entry's name.
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name).unwrap_or("")
    }
}

/// A resumable position in a directory listing: the directory and the next sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ReadDir {
    dir: u64,
    next: u64,
}

/// Walk the entries packed in a DIR_HASH value: `(head, name)`.
pub(crate) fn entries(v: &[u8]) -> impl Iterator<Item = Result<(&DirEntryHead, &[u8])>> {
    let mut rest = v;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let r = DirEntryHead::ref_from_prefix(rest)
            .ok()
            .and_then(|(h, tail)| {
                let n = usize::from(h.name_len);
                let name = tail.get(..n)?;
                rest = tail.get(n..)?;
                if n == 0 {
                    return None;
                }
                Some((h, name))
            })
            .ok_or(Error::Corrupt);
        if r.is_err() {
            rest = &[];
        }
        Some(r)
    })
}

/// The first entry named `name` in the hash item value `v` (the entries before it checked;
/// all of them when there is none). Its offset in `v` is [`offset_in`] of it.
fn find_entry<'v>(v: &'v [u8], name: &[u8]) -> Result<Option<&'v DirEntryHead>> {
    for e in entries(v) {
        let (h, n) = e?;
        if n == name {
            return Ok(Some(h));
        }
    }
    Ok(None)
}

/// The offset in `v` of `h`, which lies in it (returned by [`find_entry`]): a head and its
/// offset together made a result that went through memory.
fn offset_in(v: &[u8], h: &DirEntryHead) -> usize {
    (h as *const DirEntryHead as usize).wrapping_sub(v.as_ptr() as usize)
}

/// The key of the hash item holding `name` in `dir`.
#[inline(never)]
fn hash_key(dir: u64, name: &[u8]) -> Key {
    Key::new(dir, kind::DIR_HASH, name_hash(name))
}

fn head(ino: u64, seq: u64, kind: FileKind, name: &[u8]) -> DirEntryHead {
    DirEntryHead {
        ino: ino.into(),
        seq: seq.into(),
        kind: kind as u8,
        name_len: name.len() as u8,
    }
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> Fs<'b, D, N, H> {
    /// Find `name` in directory `dir`.
    pub(crate) fn lookup(&mut self, dir: u64, name: &[u8]) -> Result<Option<Found>> {
        let key = hash_key(dir, name);
        // (The entry left in `found`: the closure's own result stays in registers.)
        let mut found = None;
        self.vol
            .get(&key, |v| -> Result<()> {
                if let Some(h) = find_entry(v, name)? {
                    let kind = FileKind::from_u8(h.kind).ok_or(Error::Corrupt)?;
                    found = Some(Found {
                        ino: h.ino.get(),
                        kind,
                    });
                }
                Ok(())
            })?
            .unwrap_or(Ok(()))?;
        Ok(found)
    }

    /// Add `name` → `ino` to directory `dir` (which must not have it).
    pub(crate) fn add_entry(
        &mut self,
        dir: u64,
        name: &[u8],
        ino: u64,
        kind: FileKind,
    ) -> Result<()> {
        self.edit_entry(dir, name, Some((ino, kind)))
    }

    /// Remove `name` from directory `dir`.
    pub(crate) fn remove_entry(&mut self, dir: u64, name: &[u8]) -> Result<()> {
        self.edit_entry(dir, name, None)
    }

    /// Add `name` → `new` (inode and kind) to directory `dir`, or with `None` remove it: the
    /// hash item is rewritten with or without the entry, the index item added or removed, and
    /// the directory's size, next sequence number and mtime follow. One body for both, as
    /// they share every step but the middle.
    fn edit_entry(&mut self, dir: u64, name: &[u8], new: Option<(u64, FileKind)>) -> Result<()> {
        let mut d = InodeItem::new_zeroed();
        self.load_inode(dir, &mut d)?;
        let key = hash_key(dir, name);
        // The hash item without the entry: the bytes before it and after it (the entries
        // before it checked; all of them when it is not there); room after them for one more
        // (collisions are rare; several fit).
        let mut buf = [0u8; HASH_ITEM_BUF];
        // (Results left in `used` and `old`: the closure's own result stays in registers.)
        let (mut used, mut old) = (0, None);
        let kept = self.vol.get(&key, |v| -> Result<()> {
            let (seq, cut) = match find_entry(v, name)? {
                Some(h) => {
                    let at = offset_in(v, h);
                    (
                        Some(h.seq.get()),
                        (at, at + DIR_ENTRY_HEAD_LEN + name.len()),
                    )
                }
                None => (None, (0, 0)),
            };
            let head = v.get(..cut.0).ok_or(Error::Corrupt)?;
            let tail = v.get(cut.1..).ok_or(Error::Corrupt)?;
            let out = head.len() + tail.len();
            let dst = buf.get_mut(..out).ok_or(Error::TooLarge)?;
            let (d1, d2) = dst.split_at_mut(head.len());
            d1.copy_from_slice(head);
            d2.copy_from_slice(tail);
            (used, old) = (out, seq);
            Ok(())
        })?;
        // (No item: no entry.)
        kept.unwrap_or(Ok(()))?;
        match (new, old) {
            (Some((ino, kind)), None) => {
                let seq = d.next_seq.get();
                let h = head(ino, seq, kind, name);
                let total = used + DIR_ENTRY_HEAD_LEN + name.len();
                let all = buf.get_mut(..total).ok_or(Error::TooLarge)?;
                let slot = all.get_mut(used..).ok_or(Error::TooLarge)?;
                let (hb, nb) = slot.split_at_mut(DIR_ENTRY_HEAD_LEN);
                // (Stored in place: no copy of a head built on the stack.)
                *DirEntryHead::mut_from_bytes(hb).map_err(|_| Error::TooLarge)? = h;
                nb.copy_from_slice(name);
                let all = &*all;
                let mode = if used == 0 {
                    InsertMode::Create
                } else {
                    InsertMode::Replace
                };
                self.vol.insert(key, all, mode)?;
                // The ordered index: the same entry alone.
                let idx = all.get(used..).ok_or(Error::TooLarge)?;
                self.vol
                    .insert(Key::new(dir, kind::DIR_INDEX, seq), idx, InsertMode::Create)?;
                // Both counters come from disk: a hostile inode at the top of the range is
                // Corrupt, not an overflow (a real directory cannot see 2^64 insertions).
                d.next_seq = seq.checked_add(1).ok_or(Error::Corrupt)?.into();
                super::data::add_sat(&mut d.size, 1);
            }
            (None, Some(seq)) => {
                if used == 0 {
                    self.vol.remove(&key)?;
                } else {
                    let v = buf.get(..used).ok_or(Error::TooLarge)?;
                    self.vol.insert(key, v, InsertMode::Replace)?;
                }
                if !self.vol.remove(&Key::new(dir, kind::DIR_INDEX, seq))? {
                    return Err(Error::Corrupt);
                }
                d.size = d.size.get().saturating_sub(1).into();
            }
            (Some(_), Some(_)) => return Err(Error::AlreadyExists),
            (None, None) => return Err(Error::NotFound),
        }
        let now = self.now();
        d.mtime = now.into();
        self.write_inode(dir, &d)
    }

    /// Start listing directory `path`.
    pub fn read_dir(&mut self, path: &str) -> Result<ReadDir> {
        let (dir, kind) = self.resolve(path.as_bytes())?;
        if kind != FileKind::Dir {
            return Err(Error::NotADirectory);
        }
        Ok(ReadDir { dir, next: 0 })
    }

    /// The next entry of a listing, in insertion order, or `None` at the end. The cursor can be
    /// kept across any other calls (entries added later are returned once, at the end).
    pub fn read_dir_next(&mut self, cursor: &mut ReadDir) -> Result<Option<DirEntry>> {
        let dir = cursor.dir;
        if self.vol.get(&inode_key(dir), |_| ())?.is_none() {
            return Err(Error::NotFound);
        }
        let from = Key::new(dir, kind::DIR_INDEX, cursor.next);
        let r = self
            .vol
            .next(&from, true, |k, v| -> Result<Option<(u64, DirEntry)>> {
                if k.id != dir || k.kind != kind::DIR_INDEX {
                    return Ok(None);
                }
                let mut it = entries(v);
                let (h, n) = it.next().ok_or(Error::Corrupt)??;
                let kind = FileKind::from_u8(h.kind).ok_or(Error::Corrupt)?;
                core::str::from_utf8(n).map_err(|_| Error::Corrupt)?;
                let name = heapless::Vec::from_slice(n).map_err(|_| Error::Corrupt)?;
                Ok(Some((
                    k.offset,
                    DirEntry {
                        ino: h.ino.get(),
                        kind,
                        name,
                    },
                )))
            })?;
        match r.transpose()?.flatten() {
            Some((seq, e)) => {
                // An index entry at the last sequence number only a hostile image holds.
                cursor.next = seq.checked_add(1).ok_or(Error::Corrupt)?;
                Ok(Some(e))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;
    use zerocopy::IntoBytes;

    /// A hash item value holding `names` (sequence numbers 10, 11, ...).
    fn item(names: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let h = head(100 + i as u64, 10 + i as u64, FileKind::File, n);
            v.extend_from_slice(h.as_bytes());
            v.extend_from_slice(n);
        }
        v
    }

    #[test]
    fn find_entry_in_a_shared_hash_item() {
        let v = item(&[b"a", b"bb", b"ccc"]);
        let h = find_entry(&v, b"bb").unwrap().unwrap();
        assert_eq!((h.ino.get(), h.seq.get()), (101, 11));
        assert_eq!(offset_in(&v, h), DIR_ENTRY_HEAD_LEN + 1);
        let h = find_entry(&v, b"ccc").unwrap().unwrap();
        assert_eq!(offset_in(&v, h), 2 * DIR_ENTRY_HEAD_LEN + 3);
        assert!(find_entry(&v, b"d").unwrap().is_none());
        // A malformed tail is Corrupt when the walk reaches it, not before.
        let mut bad = v.clone();
        bad.push(7);
        assert!(find_entry(&bad, b"a").unwrap().is_some());
        assert!(matches!(find_entry(&bad, b"d"), Err(Error::Corrupt)));
    }
}
