//! File data: inline bytes for small files, extents of data blocks for the rest.
//!
//! * A file of at most [`Fs::inline_max`] bytes keeps its bytes in one `INLINE` item of the
//!   tree (no data block at all); growing past that moves them into a block.
//! * Larger files map block-aligned file offsets to runs of disk blocks (`EXTENT` items).
//!   Offsets with no extent are holes and read as zeros.
//! * Data is copy-on-write like the tree: a block written by an older (committed) transaction
//!   is never overwritten; the new bytes go to a new block and the extent is split around it.
//!   Blocks allocated by the running transaction are rewritten in place.
//! * Appends allocate from the start of the allocator's current run while tree nodes come from
//!   its end, and a new run that continues the file's last extent (same transaction) extends
//!   that extent instead of adding one, so sequential writes make few, long extents.
//! * Whole-block appends through a handle take the fast path of `tail.rs` (the extent and inode
//!   reach the tree once per run); whole blocks are read straight into the caller's buffer when
//!   the device offers the synchronous fast path and the block is not cached.

use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::Fs;
use crate::btree::InsertMode;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::space::Run;
use crate::wire::items::{inode_flags, kind, ExtentItem, InodeItem};
use crate::wire::{block_nr, BlockNr, Key};
use zerocopy::little_endian::U64;

/// Largest inline file we keep a stack copy of while editing it.
const INLINE_BUF: usize = 1024;

/// Largest file offset accepted (keeps every byte offset computation far from overflow).
pub const MAX_FILE_SIZE: u64 = 1 << 50;

/// End (exclusive byte offset) of a write of `data` at `off`, or `TooLarge` past
/// [`MAX_FILE_SIZE`]: checked before any other arithmetic on the range. Blocking and queued
/// writes share it, so both refuse the same writes.
pub(crate) fn write_end(off: u64, data: &[u8]) -> Result<u64> {
    off.checked_add(data.len() as u64)
        .filter(|&e| e <= MAX_FILE_SIZE)
        .ok_or(Error::TooLarge)
}

/// `f += n` on an inode counter, saturating (the counters come from disk). One call instead
/// of the load, add and store inline at every use.
#[inline(never)]
pub(crate) fn add_sat(f: &mut U64, n: u64) {
    *f = f.get().saturating_add(n).into();
}

/// An extent in memory: file block index, disk block, length in blocks, generation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ext {
    pub fblk: u64,
    pub block: BlockNr,
    pub len: BlockNr,
    pub gen: u64,
}

impl Ext {
    /// The disk block holding file block `fblk`, which the extent covers (so the offset is
    /// below its `BlockNr` length, and the sum stays inside the data area it was checked
    /// against).
    pub(crate) fn phys(&self, fblk: u64) -> BlockNr {
        self.block
            .wrapping_add(fblk.wrapping_sub(self.fblk) as BlockNr)
    }
}

/// What [`Fs::fill_block`] keeps of a block's other bytes.
#[derive(Clone, Copy)]
pub(crate) enum Fill {
    /// A new block: zeros.
    Fresh,
    /// The block's own (read if needed).
    Keep,
    /// A new block taking those of disk block `.0` (copy-on-write).
    CopyOf(BlockNr),
}

/// Where bytes to write come from.
#[derive(Clone, Copy)]
pub(crate) enum Src<'a> {
    Bytes(&'a [u8]),
    Zeros(u64),
}

impl Src<'_> {
    fn len(&self) -> u64 {
        match self {
            Src::Bytes(b) => b.len() as u64,
            Src::Zeros(n) => *n,
        }
    }
    fn copy_to(&self, from: u64, dst: &mut [u8]) {
        match self {
            Src::Bytes(b) => {
                let from = from as usize;
                if let Some(s) = b.get(from..from + dst.len()) {
                    dst.copy_from_slice(s);
                }
            }
            Src::Zeros(_) => dst.fill(0),
        }
    }
}

/// The key of the inline item of `ino`. Out of line, as [`super::inode::inode_key`]: one call
/// is smaller than the key's stores at every use.
#[inline(never)]
fn inline_key(ino: u64) -> Key {
    Key::new(ino, kind::INLINE, 0)
}

fn ext_key(ino: u64, byte_off: u64) -> Key {
    Key::new(ino, kind::EXTENT, byte_off)
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> Fs<'b, D, N, H> {
    /// The block size (a power of two: format and mount check it).
    pub(crate) fn bs(&self) -> u64 {
        u64::from(self.vol.space_info().block_size)
    }

    /// The file block holding byte `pos`. A shift, not a division: a `u64` division links
    /// the compiler's software divide (1.3 KB of Thumb code).
    pub(crate) fn blk_of(&self, pos: u64) -> u64 {
        pos >> self.vol.space_info().block_size.trailing_zeros()
    }

    /// The offset of byte `pos` in its block.
    pub(crate) fn in_blk(&self, pos: u64) -> u64 {
        u64::from(pos as u32 & (self.vol.space_info().block_size - 1))
    }

    /// Files up to this many bytes are stored inline in the tree.
    pub fn inline_max(&self) -> usize {
        self.vol.max_value_len().min(INLINE_BUF)
    }

    /// The extent item at `k` whose fields are `[block, len, generation]`, checked.
    fn decode_ext(&self, k: Key, [block, len, gen]: [u64; 3]) -> Result<Ext> {
        if self.in_blk(k.offset) != 0 || len == 0 {
            return Err(Error::Corrupt);
        }
        // Every later sum (a block inside the extent, its end in the file) relies on these:
        // the blocks lie in the data area, and the file range does not wrap. (It cannot: a
        // file block is a byte offset shifted by at least 11, as `Fs` mounts no block size
        // below 2048, and the length is a `BlockNr`.)
        let (block, len) = (block_nr(block)?, block_nr(len)?);
        self.vol.check_data_run(Run { start: block, len })?;
        let fblk = self.blk_of(k.offset);
        Ok(Ext {
            fblk,
            block,
            len,
            gen,
        })
    }

    /// The extent of `ino` that covers file block `fblk`, if any.
    ///
    /// Without `fast-paths` (no tail, no memo) this is only the search: inlined, every caller
    /// calls `find_ext` itself (one result copy less).
    #[cfg_attr(not(feature = "fast-paths"), inline(always))]
    pub(crate) fn extent_at(&mut self, ino: u64, fblk: u64) -> Result<Option<Ext>> {
        if let Some(e) = self.tail_extent(ino, fblk) {
            return Ok(Some(e));
        }
        let changes = self.vol.changes();
        if let Some(e) = self.memo.extent(changes, ino, fblk) {
            return Ok(Some(e));
        }
        let e = self.find_ext(ino, fblk, true)?;
        if let Some(e) = e {
            self.memo.set_extent(changes, ino, e);
        }
        Ok(e)
    }

    /// The first extent of `ino` at or after file block `fblk`.
    #[inline(always)]
    pub(crate) fn extent_from(&mut self, ino: u64, fblk: u64) -> Result<Option<Ext>> {
        self.find_ext(ino, fblk, false)
    }

    /// From the tree: the extent of `ino` that covers file block `fblk` (`covering`), or the
    /// first at or after it. One body for both searches.
    fn find_ext(&mut self, ino: u64, fblk: u64, covering: bool) -> Result<Option<Ext>> {
        let bs = self.bs();
        // The fields of the item's value, read as an extent (`None`: malformed), left in a
        // local: the closure's own result (the key) stays in registers. (Fields, not the
        // byte-aligned item: copying that moved it byte-wise twice.)
        let mut item = None;
        let copy = |k: Key, v: &[u8]| {
            item = ExtentItem::ref_from_bytes(v)
                .ok()
                .map(|e| [e.block.get(), e.len.get(), e.generation.get()]);
            k
        };
        // (Covering: the last extent before the next block's key.)
        let key = ext_key(ino, (fblk + u64::from(covering)) * bs);
        let r = if covering {
            self.vol.prev(&key, copy)?
        } else {
            self.vol.next(&key, true, copy)?
        };
        let Some(k) = r else { return Ok(None) };
        if k.id != ino || k.kind != kind::EXTENT {
            return Ok(None);
        }
        let e = self.decode_ext(k, item.ok_or(Error::Corrupt)?)?;
        // (The end does not wrap: see `decode_ext`.)
        Ok(Some(e).filter(|e| !covering || fblk < e.fblk.wrapping_add(u64::from(e.len))))
    }

    pub(crate) fn put_ext(&mut self, ino: u64, e: Ext, mode: InsertMode) -> Result<()> {
        let item = ExtentItem {
            block: u64::from(e.block).into(),
            len: u64::from(e.len).into(),
            generation: e.gen.into(),
        };
        let bs = self.bs();
        self.vol
            .insert(ext_key(ino, e.fblk * bs), item.as_bytes(), mode)
    }

    /// Map `run` at file block `fblk` (a hole), extending the previous extent when the run
    /// continues it on disk and both belong to the running transaction.
    ///
    /// A run whose write starts on a block boundary (`aligned`) also extends an extent of an
    /// older generation; the merged extent keeps the *older* generation, so no block a
    /// checkpoint or log record points at becomes rewritable in place (the new blocks just lose
    /// in-place rewrites for the rest of this generation). That keeps a large file written in
    /// order one extent across checkpoints.
    /// `gen` is the running transaction's [`write_gen`](Self::write_gen), which the caller
    /// has at hand.
    fn map_run(&mut self, ino: u64, fblk: u64, run: Run, gen: u64, aligned: bool) -> Result<()> {
        let mut e = Ext {
            fblk,
            block: run.start,
            len: run.len,
            gen,
        };
        let mut mode = InsertMode::Create;
        if let Some(fb) = fblk.checked_sub(1) {
            if let Some(p) = self.extent_at(ino, fb)? {
                let contiguous = p.fblk + u64::from(p.len) == fblk && p.block + p.len == run.start;
                if contiguous && (p.gen == gen || aligned) {
                    e = Ext {
                        len: p.len + run.len,
                        gen: p.gen.min(gen),
                        ..p
                    };
                    mode = InsertMode::Replace;
                }
            }
        }
        self.put_ext(ino, e, mode)
    }

    /// Read up to `buf.len()` bytes of `ino` at `off`; returns the count (0 at end of file).
    pub(crate) fn read_data(
        &mut self,
        ino: u64,
        inode: &InodeItem,
        off: u64,
        buf: &mut [u8],
    ) -> Result<usize> {
        let size = inode.size.get();
        if off >= size || buf.is_empty() {
            return Ok(0);
        }
        let n = (size - off).min(buf.len() as u64) as usize;
        let (buf, _) = buf.split_at_mut(n.min(buf.len()));
        if inode.flags.get() & inode_flags::INLINE != 0 {
            let key = inline_key(ino);
            let got = self.vol.get(&key, |v| {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = v.get(off as usize + i).copied().unwrap_or(0);
                }
            })?;
            got.ok_or(Error::Corrupt)?;
            return Ok(n);
        }
        let bs = self.bs();
        let mut done = 0usize;
        while done < n {
            let pos = off + done as u64;
            let (fblk, in_off) = (self.blk_of(pos), self.in_blk(pos) as usize);
            let len = (bs as usize - in_off).min(n - done);
            let ext = self.extent_at(ino, fblk)?;
            if let Some(e) = ext {
                // Whole blocks of one extent: straight from the device when it can (no slot;
                // only with `fast-paths`, which the device's fast path needs too).
                let whole = self
                    .blk_of((n - done) as u64)
                    .min(e.fblk.saturating_add(u64::from(e.len)) - fblk);
                if cfg!(feature = "fast-paths") && in_off == 0 && whole > 0 {
                    let all = (whole * bs) as usize;
                    let dst = buf
                        .get_mut(done..done + all)
                        .ok_or(Error::InvalidArgument)?;
                    if self.vol.read_data_now(e.phys(fblk), dst)? {
                        done += all;
                        continue;
                    }
                }
            }
            let dst = buf
                .get_mut(done..done + len)
                .ok_or(Error::InvalidArgument)?;
            match ext {
                Some(e) => {
                    let id = self.vol.pin_data(e.phys(fblk))?;
                    let r = self.vol.slot(id).and_then(|s| {
                        let s = s.get(in_off..in_off + len).ok_or(Error::InvalidArgument)?;
                        dst.copy_from_slice(s);
                        Ok(())
                    });
                    self.vol.unpin(id);
                    r?;
                }
                None => dst.fill(0),
            }
            done += len;
        }
        Ok(n)
    }

    /// Write `data` at `off` in `ino`; updates size, block count and mtime.
    pub(crate) fn write_data(&mut self, ino: u64, off: u64, data: &[u8]) -> Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let end = write_end(off, data)?;
        let mut inode = InodeItem::new_zeroed();
        self.load_inode(ino, &mut inode)?;
        let size = inode.size.get();
        let new_size = size.max(end);
        let inline = inode.flags.get() & inode_flags::INLINE != 0;
        let mut done = 0;
        let r = if (inline || size == 0) && new_size <= self.inline_max() as u64 {
            // (It sets the size: `new_size`, as below.)
            self.write_inline(ino, &mut inode, off, Src::Bytes(data), new_size)?;
            done = data.len() as u64;
            Ok(())
        } else {
            let mut r = if inline {
                self.inline_to_block(ino, &mut inode)
            } else {
                Ok(())
            };
            // (Not `and_then`: its closure stayed a function of its own.)
            if r.is_ok() {
                r = self.write_blocks(ino, &mut inode, off, Src::Bytes(data), &mut done);
            }
            r
        };
        // Record what was written even when the volume filled up part-way (a short write);
        // a failure before anything was written leaves the inode as it was.
        match r {
            Ok(()) => {}
            Err(Error::NoSpace) if done > 0 || inline => {}
            Err(e) => return Err(e),
        }
        if done > 0 {
            inode.size = size.max(off + done).into();
        }
        let now = self.now();
        inode.mtime = now.into();
        self.write_inode(ino, &inode)?;
        match r {
            Err(e) if done == 0 => Err(e),
            _ => Ok(done as usize),
        }
    }

    /// Rewrite the inline item so it holds `new_size` bytes with `src` at `off`.
    fn write_inline(
        &mut self,
        ino: u64,
        inode: &mut InodeItem,
        off: u64,
        src: Src<'_>,
        new_size: u64,
    ) -> Result<()> {
        let mut buf = [0u8; INLINE_BUF];
        let key = inline_key(ino);
        let had = inode.flags.get() & inode_flags::INLINE != 0;
        if had {
            self.load_inline(&key, &mut buf)?;
        }
        let new_size = new_size as usize;
        let dst = buf
            .get_mut(off as usize..off as usize + src.len() as usize)
            .ok_or(Error::TooLarge)?;
        src.copy_to(0, dst);
        let v = buf.get(..new_size).ok_or(Error::TooLarge)?;
        let mode = if had {
            InsertMode::Replace
        } else {
            InsertMode::Create
        };
        self.vol.insert(key, v, mode)?;
        inode.flags = (inode.flags.get() | inode_flags::INLINE).into();
        inode.size = (new_size as u64).into();
        Ok(())
    }

    /// Copy the inline item `key` (which must exist) into `buf`; returns its length.
    fn load_inline(&mut self, key: &Key, buf: &mut [u8; INLINE_BUF]) -> Result<usize> {
        self.vol
            .get(key, |v| {
                let n = v.len().min(buf.len());
                buf[..n].copy_from_slice(&v[..n]);
                n
            })?
            .ok_or(Error::Corrupt)
    }

    /// Move an inline file's bytes into a data block (file block 0), through the block write
    /// path (a fresh block, zero past the bytes: the inline limit is below the smallest block
    /// size). The inline item goes only once the block is mapped.
    fn inline_to_block(&mut self, ino: u64, inode: &mut InodeItem) -> Result<()> {
        let mut buf = [0u8; INLINE_BUF];
        let key = inline_key(ino);
        let n = self.load_inline(&key, &mut buf)?;
        let bytes = buf.get(..n).unwrap_or_default();
        self.write_blocks(ino, inode, 0, Src::Bytes(bytes), &mut 0)?;
        self.vol.remove(&key)?;
        inode.flags = (inode.flags.get() & !inode_flags::INLINE).into();
        Ok(())
    }

    /// Write `src` at `off` into extents (copy-on-write), allocating blocks for holes.
    ///
    /// `done` counts the bytes written so far, so a caller can report a short write when the
    /// volume fills up part-way.
    fn write_blocks(
        &mut self,
        ino: u64,
        inode: &mut InodeItem,
        off: u64,
        src: Src<'_>,
        done: &mut u64,
    ) -> Result<()> {
        let bs = self.bs();
        let len = src.len();
        let gen = self.write_gen();
        while *done < len {
            let pos = off + *done;
            let fblk = self.blk_of(pos);
            let ext = self.extent_at(ino, fblk)?;
            // Where the bytes go: the block itself (this transaction's), a copy of it (an
            // older one's), or a new run for as much of the write as lies in the hole.
            let (run, fill) = match ext {
                Some(e) if e.gen == gen => (
                    Run {
                        start: e.phys(fblk),
                        len: 1,
                    },
                    Fill::Keep,
                ),
                _ => {
                    let (want, fill) = match ext {
                        Some(e) => (1, Fill::CopyOf(e.phys(fblk))),
                        None => {
                            let next = self
                                .extent_from(ino, fblk + 1)?
                                .map_or(u64::MAX, |e| e.fblk);
                            let last = self.blk_of(off + len - 1);
                            (
                                BlockNr::try_from((last + 1).min(next) - fblk)
                                    .unwrap_or(BlockNr::MAX),
                                Fill::Fresh,
                            )
                        }
                    };
                    (self.vol.alloc_data(want)?, fill)
                }
            };
            let mut d = *done;
            for i in 0..run.len {
                let in_off = self.in_blk(off + d);
                let n = (bs - in_off).min(len - d);
                self.fill_block(run.start + i, fill, in_off, src, d, n)?;
                d += n;
            }
            if let (Some(e), Fill::CopyOf(_)) = (ext, fill) {
                // Copy-on-write: the extent split around the block (then mapped anew below,
                // the old block freed).
                self.unmap_block(ino, e, fblk)?;
            }
            if !matches!(fill, Fill::Keep) {
                let aligned = matches!(fill, Fill::Fresh) && self.in_blk(pos) == 0;
                self.map_run(ino, fblk, run, gen, aligned)?;
            }
            match fill {
                Fill::Keep => {}
                Fill::CopyOf(old) => self.vol.free_data(Run { start: old, len: 1 })?,
                Fill::Fresh => add_sat(&mut inode.blocks, u64::from(run.len)),
            }
            *done = d;
        }
        Ok(())
    }

    /// Put `n` bytes of `src` (from `src_off`) at `in_off` of disk block `phys`; `fill` says
    /// what the block's other bytes are.
    pub(crate) fn fill_block(
        &mut self,
        phys: BlockNr,
        fill: Fill,
        in_off: u64,
        src: Src<'_>,
        src_off: u64,
        n: u64,
    ) -> Result<()> {
        let whole = in_off == 0 && n == self.bs();
        let id = match fill {
            Fill::Keep if !whole => self.vol.pin_data(phys)?,
            // Every byte is written below: the old block's bytes, then the new ones.
            Fill::CopyOf(_) => self.vol.pin_new_data(phys, true)?,
            // A whole block is overwritten: no need to zero it first.
            _ => self.vol.pin_new_data(phys, whole)?,
        };
        let mut r = Ok(());
        if let (Fill::CopyOf(old), false) = (fill, whole) {
            r = self.vol.pin_data(old).and_then(|old_id| {
                let r = self.vol.copy_slot(old_id, id);
                self.vol.unpin(old_id);
                r
            });
        }
        if r.is_ok() {
            r = self.vol.slot_mut(id).and_then(|s| {
                let dst = s
                    .get_mut(in_off as usize..(in_off + n) as usize)
                    .ok_or(Error::InvalidArgument)?;
                src.copy_to(src_off, dst);
                Ok(())
            });
        }
        self.vol.unpin(id);
        r
    }

    /// Take file block `fblk` out of extent `e` (which covers it): the extent is split into
    /// what lies before and after. Returns the disk block that held it; the caller frees it.
    fn unmap_block(&mut self, ino: u64, e: Ext, fblk: u64) -> Result<BlockNr> {
        let bs = self.bs();
        let old = e.phys(fblk);
        self.vol.remove(&ext_key(ino, e.fblk * bs))?;
        // Below `e.len`: the extent covers `fblk`.
        let head = old.wrapping_sub(e.block);
        if head > 0 {
            self.put_ext(ino, Ext { len: head, ..e }, InsertMode::Create)?;
        }
        let tail = e.len - head - 1;
        if tail > 0 {
            let t = Ext {
                fblk: fblk + 1,
                block: old + 1,
                len: tail,
                gen: e.gen,
            };
            self.put_ext(ino, t, InsertMode::Create)?;
        }
        Ok(old)
    }

    /// Journal replay: make file block `fblk` of `ino` be disk block `phys` (already claimed),
    /// splitting and freeing whatever mapped it before. The new mapping carries generation 0,
    /// so it is never rewritten in place: the block belongs to a durable log record.
    #[cfg(feature = "journal")]
    pub(crate) fn remap_block(&mut self, ino: u64, fblk: u64, phys: BlockNr) -> Result<()> {
        let mut inode = InodeItem::new_zeroed();
        self.load_inode(ino, &mut inode)?;
        if inode.flags.get() & inode_flags::INLINE != 0 {
            self.inline_to_block(ino, &mut inode)?;
        }
        if let Some(e) = self.extent_at(ino, fblk)? {
            let old = self.unmap_block(ino, e, fblk)?;
            self.vol.free_data(Run { start: old, len: 1 })?;
            inode.blocks = inode.blocks.get().saturating_sub(1).into();
        }
        let gen = self.mapped_gen();
        self.put_ext(
            ino,
            Ext {
                fblk,
                block: phys,
                len: 1,
                gen,
            },
            InsertMode::Create,
        )?;
        add_sat(&mut inode.blocks, 1);
        self.write_inode(ino, &inode)
    }

    /// Journal replay: map the hole at file blocks `fblk..fblk + count` of `ino` to disk
    /// blocks `phys..` (already claimed) with one extent of the replay's `MAP` generation
    /// (never rewritten in place: the blocks belong to a durable log record).
    /// The file must not be inline.
    #[cfg(feature = "journal")]
    pub(crate) fn map_hole(
        &mut self,
        ino: u64,
        fblk: u64,
        phys: BlockNr,
        count: BlockNr,
    ) -> Result<()> {
        let mut inode = InodeItem::new_zeroed();
        self.load_inode(ino, &mut inode)?;
        if inode.flags.get() & inode_flags::INLINE != 0 {
            return Err(Error::Corrupt);
        }
        let gen = self.mapped_gen();
        // Continue the extent before it when that one was mapped by the same commit group and
        // ends where this starts, on disk too.
        let prev = match fblk.checked_sub(1) {
            Some(fb) => self.extent_at(ino, fb)?,
            None => None,
        };
        match prev {
            Some(p)
                if p.gen == gen
                    && p.fblk.checked_add(u64::from(p.len)) == Some(fblk)
                    && p.block.checked_add(p.len) == Some(phys) =>
            {
                let len = p.len.checked_add(count).ok_or(Error::Corrupt)?;
                self.put_ext(ino, Ext { len, ..p }, InsertMode::Replace)?;
            }
            _ => {
                let e = Ext {
                    fblk,
                    block: phys,
                    len: count,
                    gen,
                };
                self.put_ext(ino, e, InsertMode::Create)?;
            }
        }
        add_sat(&mut inode.blocks, u64::from(count));
        self.write_inode(ino, &inode)
    }

    /// Free every data block of `ino` from byte `from` on (and its inline bytes when
    /// `from == 0`); the block that holds `from` is kept. Returns blocks freed.
    pub(crate) fn free_data_from(&mut self, ino: u64, from: u64) -> Result<u64> {
        if from == 0 {
            self.vol.remove(&inline_key(ino))?;
        }
        let bs = self.bs();
        let first = self.blk_of(from) + u64::from(self.in_blk(from) != 0);
        let mut freed = 0;
        // An extent straddling the boundary keeps its head.
        if let Some(fb) = first.checked_sub(1) {
            if let Some(e) = self.extent_at(ino, fb)? {
                // Below `e.len` when the extent covers `first - 1`.
                let keep = (first - e.fblk) as BlockNr;
                if keep < e.len {
                    self.put_ext(ino, Ext { len: keep, ..e }, InsertMode::Replace)?;
                    self.vol.free_data(Run {
                        start: e.block + keep,
                        len: e.len - keep,
                    })?;
                    freed += u64::from(e.len - keep);
                }
            }
        }
        while let Some(e) = self.extent_from(ino, first)? {
            self.vol.remove(&ext_key(ino, e.fblk * bs))?;
            self.vol.free_data(Run {
                start: e.block,
                len: e.len,
            })?;
            freed += u64::from(e.len);
        }
        Ok(freed)
    }

    /// Set the size of `ino`: shrinking frees blocks past the end and zeroes the tail of the
    /// last block (so growing later shows zeros); growing leaves a hole.
    pub(crate) fn set_size(&mut self, ino: u64, new_size: u64) -> Result<()> {
        if new_size > MAX_FILE_SIZE {
            return Err(Error::TooLarge);
        }
        let mut inode = InodeItem::new_zeroed();
        self.load_inode(ino, &mut inode)?;
        let size = inode.size.get();
        if new_size == size {
            return Ok(());
        }
        let inline = inode.flags.get() & inode_flags::INLINE != 0;
        if inline && new_size <= self.inline_max() as u64 {
            if new_size == 0 {
                self.vol.remove(&inline_key(ino))?;
                inode.flags = (inode.flags.get() & !inode_flags::INLINE).into();
                inode.size = 0.into();
            } else {
                let grow = new_size.saturating_sub(size);
                self.write_inline(
                    ino,
                    &mut inode,
                    size.min(new_size),
                    Src::Zeros(grow),
                    new_size,
                )?;
            }
        } else {
            if inline {
                self.inline_to_block(ino, &mut inode)?;
            }
            if new_size < size {
                let freed = self.free_data_from(ino, new_size)?;
                inode.blocks = inode.blocks.get().saturating_sub(freed).into();
                let bs = self.bs();
                let tail = self.in_blk(new_size);
                let tail_ext = self.extent_at(ino, self.blk_of(new_size))?;
                // During replay, a block a `MAP` of this commit group names already holds its
                // final bytes (the zeroing, and anything written after it).
                let final_bytes = tail_ext.is_some_and(|e| self.is_mapped_this_group(e.gen));
                if tail != 0 && tail_ext.is_some() && !final_bytes {
                    let mut done = 0;
                    self.write_blocks(ino, &mut inode, new_size, Src::Zeros(bs - tail), &mut done)?;
                }
            }
            inode.size = new_size.into();
        }
        let now = self.now();
        inode.mtime = now.into();
        self.write_inode(ino, &inode)
    }
}
