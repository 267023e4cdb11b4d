//! Filesystem-tree items: inodes, directory entries, file extents, inline data.
//!
//! | item | key `(id, kind, offset)` | value |
//! |---|---|---|
//! | inode | `(ino, INODE, 0)` | [`InodeItem`] |
//! | directory entry by name | `(dir, DIR_HASH, hash(name))` | one or more [`DirEntryHead`] + name, back to back (hash collisions share an item) |
//! | directory entry by order | `(dir, DIR_INDEX, seq)` | one [`DirEntryHead`] + name |
//! | file extent | `(ino, EXTENT, file offset)` | [`ExtentItem`] |
//! | inline file data | `(ino, INLINE, 0)` | the file's bytes |

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Item kinds of the filesystem tree.
pub mod kind {
    /// An inode.
    pub const INODE: u8 = 1;
    /// Directory entries with one name hash.
    pub const DIR_HASH: u8 = 2;
    /// A directory entry by insertion sequence.
    pub const DIR_INDEX: u8 = 3;
    /// A run of file data blocks.
    pub const EXTENT: u8 = 4;
    /// A small file's data, stored in the tree.
    pub const INLINE: u8 = 5;
}

/// Inode number of the root directory.
pub const ROOT_INO: u64 = 1;

/// What an inode is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum FileKind {
    /// A regular file.
    File = 1,
    /// A directory.
    Dir = 2,
}

impl FileKind {
    /// Decode, rejecting unknown kinds.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(FileKind::File),
            2 => Some(FileKind::Dir),
            _ => None,
        }
    }
}

/// An inode (64 bytes).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct InodeItem {
    /// A [`FileKind`].
    pub kind: u8,
    /// Zero.
    pub pad: [u8; 3],
    /// Directory entries naming it (directories: 1, plus nothing for `.` / `..`).
    pub nlink: U32,
    /// File size in bytes (directories: number of entries).
    pub size: U64,
    /// Data blocks allocated to it.
    pub blocks: U64,
    /// Modification time, in the caller's clock units (0 without a clock).
    pub mtime: U64,
    /// Change time, same units.
    pub ctime: U64,
    /// Directories: the parent directory's inode (the root's is itself).
    pub parent: U64,
    /// Directories: the next insertion sequence number for `DIR_INDEX` items.
    pub next_seq: U64,
    /// [`inode_flags`] bits.
    pub flags: U64,
}

/// Bits of [`InodeItem::flags`].
pub mod inode_flags {
    /// The file's bytes live in its `INLINE` item (it has no extents).
    pub const INLINE: u64 = 1;
}

/// The fixed part of a directory entry, followed by `name_len` name bytes.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct DirEntryHead {
    /// Inode the name refers to.
    pub ino: U64,
    /// The entry's insertion sequence (its `DIR_INDEX` key offset).
    pub seq: U64,
    /// The target's [`FileKind`].
    pub kind: u8,
    /// Name length, 1..=255.
    pub name_len: u8,
}

/// Size of [`DirEntryHead`].
pub const DIR_ENTRY_HEAD_LEN: usize = core::mem::size_of::<DirEntryHead>();

/// A run of data blocks holding file bytes `[offset, offset + len * block_size)`.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct ExtentItem {
    /// First disk block.
    pub block: U64,
    /// Number of blocks.
    pub len: U64,
    /// Generation (transaction) that wrote these blocks; blocks of the running transaction
    /// may be rewritten in place, older ones are copied on write.
    pub generation: U64,
}

/// Longest name, in bytes.
pub const NAME_MAX: usize = 255;

/// Directory-name hash: 64-bit FNV-1a. Collisions are handled (entries share an item), so the
/// hash only needs to spread names, not resist attackers.
pub fn name_hash(name: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

const _: () = assert!(core::mem::size_of::<InodeItem>() == 64);
const _: () = assert!(DIR_ENTRY_HEAD_LEN == 18);
const _: () = assert!(core::mem::size_of::<ExtentItem>() == 24);
