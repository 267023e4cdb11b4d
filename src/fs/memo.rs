//! One-entry memos of the last inode and the last extent looked up.
//!
//! A sequential read of 4 KiB pieces asks the tree for the same inode and the same extent
//! once per piece: two searches from the root, most of a read's cost on a fast device. The
//! memos answer those repeats from a copy. They hold only what a verified read returned, and
//! they are valid only while the tree is unchanged: each remembers the volume's change count
//! ([`crate::volume::Volume::changes`]) and is ignored once it has moved.
//!
//! Only with the `fast-paths` feature (default): without it they remember nothing.

use super::data::Ext;
use crate::wire::items::InodeItem;

/// The memos of one filesystem.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    inode: Option<(u64, u64, InodeItem)>,
    extent: Option<(u64, u64, Ext)>,
}

impl Memo {
    /// Inode `ino`, if remembered at change count `changes`.
    pub fn inode(&self, changes: u64, ino: u64) -> Option<InodeItem> {
        if !cfg!(feature = "fast-paths") {
            return None;
        }
        match self.inode {
            Some((c, i, item)) if c == changes && i == ino => Some(item),
            _ => None,
        }
    }

    /// Remember inode `ino` as read at change count `changes`.
    pub fn set_inode(&mut self, changes: u64, ino: u64, item: InodeItem) {
        if !cfg!(feature = "fast-paths") {
            return;
        }
        self.inode = Some((changes, ino, item));
    }

    /// The extent of `ino` covering file block `fblk`, if remembered at `changes`.
    pub fn extent(&self, changes: u64, ino: u64, fblk: u64) -> Option<Ext> {
        if !cfg!(feature = "fast-paths") {
            return None;
        }
        match self.extent {
            Some((c, i, e))
                if c == changes
                    && i == ino
                    && e.fblk <= fblk
                    && fblk - e.fblk < u64::from(e.len) =>
            {
                Some(e)
            }
            _ => None,
        }
    }

    /// Remember extent `e` of `ino` as read at change count `changes`.
    pub fn set_extent(&mut self, changes: u64, ino: u64, e: Ext) {
        if !cfg!(feature = "fast-paths") {
            return;
        }
        self.extent = Some((changes, ino, e));
    }
}
