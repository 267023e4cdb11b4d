//! Inode items: read, write, create, delete.

use zerocopy::{FromBytes, FromZeros, IntoBytes};

use super::Fs;
use crate::btree::InsertMode;
use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::wire::items::{kind, FileKind, InodeItem};
use crate::wire::Key;

/// The key of inode `ino`.
#[inline(never)]
pub(crate) fn inode_key(ino: u64) -> Key {
    Key::new(ino, kind::INODE, 0)
}

/// Decode an inode value, refusing malformed ones.
pub(crate) fn decode_inode(v: &[u8]) -> Result<InodeItem> {
    let mut i = InodeItem::new_zeroed();
    decode_inode_into(v, &mut i)?;
    Ok(i)
}

/// [`decode_inode`] into `out` (untouched when `v` is malformed).
fn decode_inode_into(v: &[u8], out: &mut InodeItem) -> Result<()> {
    let i = InodeItem::ref_from_bytes(v).map_err(|_| Error::Corrupt)?;
    FileKind::from_u8(i.kind).ok_or(Error::Corrupt)?;
    out.as_mut_bytes().copy_from_slice(i.as_bytes());
    Ok(())
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> Fs<'b, D, N, H> {
    /// The inode `ino`, or `NotFound`.
    ///
    /// Always inlined, so the item lands straight in the caller's local (as a call, the
    /// `Result<InodeItem>` went through memory and was copied again).
    #[inline(always)]
    pub(crate) fn read_inode(&mut self, ino: u64) -> Result<InodeItem> {
        let mut i = InodeItem::new_zeroed();
        self.load_inode(ino, &mut i)?;
        Ok(i)
    }

    /// [`read_inode`](Self::read_inode) into `out` (untouched on an error). An out-parameter:
    /// a returned `Result<InodeItem>` goes through memory and is copied again at every caller.
    pub(crate) fn load_inode(&mut self, ino: u64, out: &mut InodeItem) -> Result<()> {
        if let Some(i) = self.tail_inode(ino) {
            *out = i;
            return Ok(());
        }
        let changes = self.vol.changes();
        if let Some(i) = self.memo.inode(changes, ino) {
            *out = i;
            return Ok(());
        }
        self.vol
            .get(&inode_key(ino), |v| decode_inode_into(v, out))?
            .ok_or(Error::NotFound)??;
        self.memo.set_inode(changes, ino, *out);
        Ok(())
    }

    /// Replace inode `ino`.
    pub(crate) fn write_inode(&mut self, ino: u64, inode: &InodeItem) -> Result<()> {
        self.vol
            .insert(inode_key(ino), inode.as_bytes(), InsertMode::Replace)
    }

    /// Create inode `ino` (new) of `kind`, in directory `parent`, and count it.
    pub(crate) fn create_inode(&mut self, ino: u64, kind: FileKind, parent: u64) -> Result<()> {
        // Zeroed in word-aligned storage (an `InodeItem` local is byte-aligned: zeroing it
        // called the byte-wise memclr).
        let mut raw = [0u32; core::mem::size_of::<InodeItem>() / 4];
        let i = InodeItem::mut_from_bytes(raw.as_mut_bytes()).map_err(|_| Error::Corrupt)?;
        i.kind = kind as u8;
        i.nlink = 1.into();
        let now = self.now();
        i.mtime = now.into();
        i.ctime = now.into();
        if kind == FileKind::Dir {
            i.parent = parent.into();
        }
        self.vol
            .insert(inode_key(ino), i.as_bytes(), InsertMode::Create)?;
        let n = self.vol.inode_count();
        self.vol.set_inode_count(n.saturating_add(1));
        Ok(())
    }

    /// Delete inode `ino` and everything it owns (data, inline bytes).
    pub(crate) fn delete_inode(&mut self, ino: u64) -> Result<()> {
        self.free_data_from(ino, 0)?;
        self.vol.remove(&inode_key(ino))?;
        let n = self.vol.inode_count();
        self.vol.set_inode_count(n.saturating_sub(1));
        Ok(())
    }

    /// The caller's clock, or 0.
    #[inline(never)]
    pub(crate) fn now(&self) -> u64 {
        self.clock.map_or(0, |c| c())
    }
}
