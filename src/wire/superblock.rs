//! The superblock: the root of everything, written last by every checkpoint.
//!
//! Two copies live at fixed byte offsets ([`SUPERBLOCK_OFFSETS`]), independent of the block
//! size, so mount can find them before it knows the geometry. Checkpoint generation `g` writes
//! copy `g % 2`; mount takes the valid copy with the highest generation. A torn or lost
//! superblock write therefore leaves the previous checkpoint in the other copy.

use bitflags::bitflags;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::header::{block_crc, BlockHeader, BlockKind, MAGIC};
use crate::error::{Error, Result};

/// On-disk format version written by this code.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes covered by the superblock checksum (one 512-byte sector).
pub const SUPERBLOCK_LEN: usize = 512;
/// Byte offsets of the two superblock copies.
pub const SUPERBLOCK_OFFSETS: [u64; 2] = [0, 4096];
/// Generations stay below this (SPEC.md, superblock). A data block's write generation is
/// `generation << 24` plus a count, and journal replay stamps generations from 2^62 up, so a
/// larger generation could only come from a hostile image; no volume checkpoints 2^38 times.
pub const MAX_GENERATION: u64 = 1 << 38;

/// Bytes at the start of the device reserved for the superblocks.
pub const SUPERBLOCK_REGION: u64 = 8192;

/// Does the run of `len` from `start` lie inside `lo..=hi` (its end, `start + len`, at most
/// `hi`, without wrapping)? One out-of-line check for the runs a superblock records (journal,
/// data area, tree roots, reserve).
#[inline(never)]
fn within(start: u64, len: u64, lo: u64, hi: u64) -> bool {
    match start.checked_add(len) {
        Some(end) => start >= lo && end <= hi,
        None => false,
    }
}

bitflags! {
    /// Features an older reader may ignore.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Compat: u32 {}
}

bitflags! {
    /// Features a reader must understand to mount at all.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Incompat: u32 {}
}

/// A contiguous run of filesystem blocks.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct Extent {
    /// First block.
    pub start: U64,
    /// Number of blocks.
    pub len: U64,
}

/// Where a tree's root is.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
)]
#[repr(C)]
pub struct TreeRoot {
    /// Root block number.
    pub block: U64,
    /// Generation the root was written in (must match its header).
    pub generation: U64,
    /// Level of the root (0 = the root is a leaf): the tree's height minus one.
    pub level: u8,
    /// Zero.
    pub pad: [u8; 7],
}

/// The superblock as stored in the first [`SUPERBLOCK_LEN`] bytes of each copy.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct Superblock {
    /// Header: kind `Superblock`, owner 0, `blocknr` = copy index (0 or 1).
    pub header: BlockHeader,
    /// Format version ([`FORMAT_VERSION`]).
    pub version: U32,
    /// [`Compat`] bits.
    pub compat: U32,
    /// [`Incompat`] bits.
    pub incompat: U32,
    /// Filesystem block (node) size in bytes.
    pub block_size: U32,
    /// Volume size in filesystem blocks.
    pub block_count: U64,
    /// First block of the journal area.
    pub log_start: U64,
    /// Journal size in blocks.
    pub log_blocks: U64,
    /// First block the allocator manages (after superblocks and the journal).
    pub data_start: U64,
    /// Root of the filesystem tree.
    pub fs_root: TreeRoot,
    /// Root of the free-space tree.
    pub free_root: TreeRoot,
    /// Blocks the allocator had taken out of the free-space tree but not yet used.
    pub reserve: [Extent; super::RESERVE_RUNS],
    /// Free blocks: in the free-space tree plus the reserve.
    pub free_blocks: U64,
    /// Next object id to hand out (filesystem layer).
    pub next_id: U64,
    /// Random volume identifier chosen at format.
    pub uuid: [u8; 16],
    /// Number of inodes (filesystem layer), for `statfs` without a scan.
    pub inodes: U64,
    /// Zero.
    pub pad: [u8; 80],
}

const _: () = assert!(core::mem::size_of::<Superblock>() == SUPERBLOCK_LEN);

impl Superblock {
    /// Seal (checksum) and return the bytes to write.
    pub fn seal(&mut self) -> &[u8] {
        self.header.magic = MAGIC.into();
        self.header.kind = BlockKind::Superblock as u8;
        // `block_crc` reads the `crc` field as zero, whatever it holds.
        let crc = block_crc(self.as_bytes());
        self.header.crc = crc.into();
        self.as_bytes()
    }

    /// Parse and verify copy `index` from `bytes` (at least [`SUPERBLOCK_LEN`] long).
    ///
    /// Checks magic, checksum, kind, copy index, version and every geometry field, so that
    /// later code may rely on them: block size a power of two in range, a layout that fits the
    /// volume, tree roots and reserve extents inside the managed area. A valid copy whose
    /// block count does not fit a [`BlockNr`](super::BlockNr) is `Unsupported`.
    pub fn parse(bytes: &[u8], index: u64) -> Result<Superblock> {
        Self::verify(bytes, index).copied()
    }

    /// [`parse`](Self::parse) in place: the verified copy, borrowed from `bytes` (mount keeps
    /// only the newest, so nothing else moves a whole superblock around).
    #[inline(never)]
    pub(crate) fn verify(bytes: &[u8], index: u64) -> Result<&Superblock> {
        let bad = Error::NotFormatted;
        let (sb, _) = Superblock::ref_from_prefix(bytes).map_err(|_| bad)?;
        let raw = sb.as_bytes();
        let h = &sb.header;
        if h.magic.get() != MAGIC {
            return Err(bad);
        }
        // Corruption is reported at the copy's index (0 or 1): the block number is not known
        // before a valid superblock gives the block size.
        if h.crc.get() != block_crc(raw)
            || h.kind != BlockKind::Superblock as u8
            || h.blocknr.get() != index
        {
            return Err(Error::Corrupt);
        }
        if sb.version.get() != FORMAT_VERSION || Incompat::from_bits(sb.incompat.get()).is_none() {
            return Err(Error::Unsupported);
        }
        if !sb.geometry_ok() {
            return Err(Error::Corrupt);
        }
        // A valid volume, but larger than block numbers in memory reach (every other block
        // number it records is below its block count, so this one check covers them all).
        if sb.block_count.get() > u64::from(super::BlockNr::MAX) {
            return Err(Error::Unsupported);
        }
        Ok(sb)
    }

    fn geometry_ok(&self) -> bool {
        let bs = self.block_size.get();
        let count = self.block_count.get();
        let data = self.data_start.get();
        // The journal lies between the superblocks and the data area, which ends before the
        // last block (a tree root inside it implies `data < count`); tree roots (one block
        // each) and reserve runs (unless empty) lie inside the data area.
        Self::block_size_ok(bs)
            && usize::from(self.fs_root.level.max(self.free_root.level)) < super::MAX_DEPTH
            && (1..MAX_GENERATION).contains(&self.header.generation.get())
            && within(
                self.log_start.get(),
                self.log_blocks.get(),
                // `div_ceil` for a power-of-two `bs` (checked above), in 32 bits.
                u64::from((super::SUPERBLOCK_REGION as u32 / bs).max(1)),
                data,
            )
            && self.free_blocks.get() <= count
            && [&self.fs_root, &self.free_root]
                .iter()
                .all(|r| within(r.block.get(), 1, data, count))
            && self.reserve.iter().all(|e| {
                let len = e.len.get();
                len == 0 || within(e.start.get(), len, data, count)
            })
    }

    /// Is `bs` a block size the format allows: a power of two in
    /// [`MIN_BLOCK_SIZE`](super::MIN_BLOCK_SIZE)`..=`[`MAX_BLOCK_SIZE`](super::MAX_BLOCK_SIZE)?
    /// One check for format's options and mount's superblock.
    pub(crate) fn block_size_ok(bs: u32) -> bool {
        bs.is_power_of_two() && (super::MIN_BLOCK_SIZE..=super::MAX_BLOCK_SIZE).contains(&bs)
    }

    /// The checkpoint generation this copy records.
    pub fn generation(&self) -> u64 {
        self.header.generation.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    fn sample() -> Superblock {
        let mut sb = Superblock::new_zeroed();
        sb.header.generation = 5.into();
        sb.header.blocknr = 1.into();
        sb.version = FORMAT_VERSION.into();
        sb.block_size = 4096.into();
        sb.block_count = 100.into();
        sb.log_start = 2.into();
        sb.log_blocks = 4.into();
        sb.data_start = 6.into();
        sb.fs_root.block = 6.into();
        sb.free_root.block = 7.into();
        sb
    }

    #[test]
    fn round_trip_and_reject() {
        let mut sb = sample();
        let bytes: [u8; SUPERBLOCK_LEN] = sb.seal().try_into().unwrap();
        assert_eq!(Superblock::parse(&bytes, 1).unwrap().generation(), 5);
        assert!(Superblock::parse(&bytes, 0).is_err());
        for i in 0..SUPERBLOCK_LEN {
            let mut c = bytes;
            c[i] ^= 1;
            assert!(Superblock::parse(&c, 1).is_err(), "flip at {i}");
        }
        let mut bad = sample();
        bad.fs_root.block = 1000.into();
        let b = bad.seal().to_vec();
        assert_eq!(Superblock::parse(&b, 1).unwrap_err(), Error::Corrupt);
    }

    #[test]
    fn block_count_past_blocknr_is_unsupported() {
        let mut sb = sample();
        sb.block_count = u64::from(crate::wire::BlockNr::MAX).into();
        let b = sb.seal().to_vec();
        assert!(Superblock::parse(&b, 1).is_ok());
        sb.block_count = (1u64 << 32).into();
        let b = sb.seal().to_vec();
        assert_eq!(Superblock::parse(&b, 1).unwrap_err(), Error::Unsupported);
        // Damage still reads as damage, whatever the size.
        sb.fs_root.block = (1u64 << 33).into();
        let b = sb.seal().to_vec();
        assert_eq!(Superblock::parse(&b, 1).unwrap_err(), Error::Corrupt);
    }
}
