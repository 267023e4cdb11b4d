//! The header at the start of every metadata block, and the block checksum.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, Result};

/// Magic number at byte 0 of every metadata block: "BnSf".
pub const MAGIC: u32 = u32::from_le_bytes(*b"BnSf");

/// Size of [`BlockHeader`] in bytes.
pub const HEADER_LEN: usize = core::mem::size_of::<BlockHeader>();

/// What a metadata block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum BlockKind {
    /// A superblock copy.
    Superblock = 1,
    /// A B+tree leaf (items with values).
    Leaf = 2,
    /// A B+tree interior node (keys with child pointers).
    Internal = 3,
    /// A journal (log) block.
    Log = 4,
}

impl BlockKind {
    /// Decode, rejecting unknown kinds.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => BlockKind::Superblock,
            2 => BlockKind::Leaf,
            3 => BlockKind::Internal,
            4 => BlockKind::Log,
            _ => return None,
        })
    }
}

/// The first bytes of every metadata block.
///
/// `blocknr` is the block's own address: a block written to the wrong place (a misdirected
/// write) fails verification. `generation` is the checkpoint generation that wrote it; the
/// parent pointer repeats it so a lost write (stale block) is caught too.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct BlockHeader {
    /// [`MAGIC`].
    pub magic: U32,
    /// crc32c (Castagnoli) of the checksummed range with this field taken as zero.
    pub crc: U32,
    /// Generation (transaction number) that wrote this block.
    pub generation: U64,
    /// Tree id (see [`crate::wire::tree_id`]), or 0 for superblocks and log blocks.
    pub owner: U64,
    /// The block's own address, in filesystem blocks (superblocks: the copy index).
    pub blocknr: U64,
    /// A [`BlockKind`] as `u8`.
    pub kind: u8,
    /// Tree level: 0 for leaves.
    pub level: u8,
    /// Number of items (leaf) or child pointers (interior node).
    pub nitems: U16,
    /// Zero in format version 1.
    pub reserved: U32,
}

/// How crc32c is computed: a speed / flash trade-off chosen with cargo features (the checksum
/// is the same whichever is chosen, so images move freely between builds).
///
/// * default: one 256-entry table (1 KiB of flash), about 4 instructions per byte;
/// * `crc-fast`: slice-by-16 (16 KiB of flash), about 7× faster: for hosts and large MCUs;
/// * `crc-small`: bitwise, no table (no flash for it), about 2.5× slower than the default:
///   for the smallest parts. `crc-fast` wins when both are on.
#[cfg(feature = "crc-fast")]
type CrcImpl = crc::Table<16>;
/// See the `crc-fast` variant.
#[cfg(all(feature = "crc-small", not(feature = "crc-fast")))]
type CrcImpl = crc::NoTable;
/// See the `crc-fast` variant.
#[cfg(not(any(feature = "crc-fast", feature = "crc-small")))]
type CrcImpl = crc::Table<1>;

const CRC32C: crc::Crc<u32, CrcImpl> = crc::Crc::<u32, CrcImpl>::new(&crc::CRC_32_ISCSI);

/// crc32c of `bytes` with the header's `crc` field (bytes 4..8) read as zero.
pub fn block_crc(bytes: &[u8]) -> u32 {
    let mut d = CRC32C.digest();
    match (bytes.get(..4), bytes.get(8..)) {
        (Some(head), Some(tail)) => {
            d.update(head);
            d.update(&[0; 4]);
            d.update(tail);
        }
        _ => d.update(bytes),
    }
    d.finalize()
}

/// Plain crc32c of `bytes` (file data carries no header).
pub fn crc32c(bytes: &[u8]) -> u32 {
    CRC32C.checksum(bytes)
}

impl BlockHeader {
    /// View the header at the start of `block`.
    pub fn parse(block: &[u8]) -> Option<&BlockHeader> {
        BlockHeader::ref_from_prefix(block).ok().map(|(h, _)| h)
    }

    /// Mutable view of the header at the start of `block`.
    pub fn parse_mut(block: &mut [u8]) -> Option<&mut BlockHeader> {
        BlockHeader::mut_from_prefix(block).ok().map(|(h, _)| h)
    }

    /// Write a fresh header into `block`.
    pub fn init(
        block: &mut [u8],
        kind: BlockKind,
        owner: u64,
        blocknr: super::BlockNr,
        generation: u64,
        level: u8,
    ) -> Result<()> {
        let h = Self::parse_mut(block).ok_or(Error::InvalidArgument)?;
        *h = BlockHeader {
            magic: MAGIC.into(),
            crc: 0.into(),
            generation: generation.into(),
            owner: owner.into(),
            blocknr: u64::from(blocknr).into(),
            kind: kind as u8,
            level,
            nitems: 0.into(),
            reserved: 0.into(),
        };
        Ok(())
    }

    /// Compute and store the checksum over `block` (the whole slice).
    pub fn seal(block: &mut [u8]) {
        let crc = block_crc(block);
        if let Some(h) = Self::parse_mut(block) {
            h.crc = crc.into();
        }
    }

    /// Check magic, checksum, kind and the block's own address. `blocknr` is where it was read.
    pub fn verify(block: &[u8], blocknr: super::BlockNr) -> Result<&BlockHeader> {
        let bad = Error::Corrupt;
        let h = Self::parse(block).ok_or(bad)?;
        if h.magic.get() != MAGIC || h.crc.get() != block_crc(block) {
            return Err(bad);
        }
        if BlockKind::from_u8(h.kind).is_none() || h.blocknr.get() != u64::from(blocknr) {
            return Err(bad);
        }
        Ok(h)
    }

    /// The decoded block kind (valid after [`verify`](Self::verify)).
    pub fn block_kind(&self) -> Option<BlockKind> {
        BlockKind::from_u8(self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_40_bytes() {
        assert_eq!(HEADER_LEN, 40);
    }

    #[test]
    fn crc32c_check_value_in_every_build() {
        // CRC-32C's catalogue check value: the same whichever `crc-*` feature is on (CI
        // builds the core with each), so images stay readable across builds.
        assert_eq!(CRC32C.checksum(b"123456789"), 0xE306_9283);
        let mut d = CRC32C.digest();
        d.update(b"1234");
        d.update(b"56789");
        assert_eq!(d.finalize(), 0xE306_9283);
    }

    #[test]
    fn seal_then_verify_and_detect_flip() {
        let mut b = [0u8; 512];
        BlockHeader::init(&mut b, BlockKind::Leaf, 1, 7, 3, 0).unwrap();
        b[100] = 42;
        BlockHeader::seal(&mut b);
        assert!(BlockHeader::verify(&b, 7).is_ok());
        assert_eq!(BlockHeader::verify(&b, 8).unwrap_err(), Error::Corrupt);
        for i in 0..b.len() {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(
                BlockHeader::verify(&c, 7).is_err(),
                "flip at {i} not caught"
            );
        }
    }

    #[test]
    fn short_buffers_are_rejected() {
        assert!(BlockHeader::verify(&[0u8; 10], 0).is_err());
        assert!(BlockHeader::init(&mut [0u8; 10], BlockKind::Leaf, 0, 0, 0, 0).is_err());
    }
}
