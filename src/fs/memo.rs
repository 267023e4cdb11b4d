//! One-entry memos of the last inode and the last extent looked up.
//!
//! A sequential read of 4 KiB pieces asks the tree for the same inode and the same extent
//! once per piece: two searches from the root, most of a read's cost on a fast device. The
//! memos answer those repeats from a copy. They hold only what a verified read returned, and
//! they are valid only while the tree is unchanged: each remembers the volume's change count
//! ([`crate::volume::Volume::changes`]) and is ignored once it has moved.
//!
//! Only with the `fast-paths` feature (default): without it they remember nothing and hold
//! no state (a zero-sized value, so `Fs` is smaller and its start-up stores nothing here).

use super::data::Ext;
use crate::wire::items::InodeItem;

/// The memos of one filesystem.
#[derive(Debug, Default)]
pub(crate) struct Memo {
    #[cfg(feature = "fast-paths")]
    inode: Option<(u64, u64, InodeItem)>,
    #[cfg(feature = "fast-paths")]
    extent: Option<(u64, u64, Ext)>,
}

impl Memo {
    /// Inode `ino`, if remembered at change count `changes`.
    pub fn inode(&self, changes: u64, ino: u64) -> Option<InodeItem> {
        #[cfg(feature = "fast-paths")]
        if let Some((c, i, item)) = self.inode {
            if c == changes && i == ino {
                return Some(item);
            }
        }
        let _ = (changes, ino);
        None
    }

    /// Remember inode `ino` as read at change count `changes`.
    pub fn set_inode(&mut self, changes: u64, ino: u64, item: InodeItem) {
        #[cfg(feature = "fast-paths")]
        {
            self.inode = Some((changes, ino, item));
        }
        let _ = (changes, ino, item);
    }

    /// The extent of `ino` covering file block `fblk`, if remembered at `changes`.
    pub fn extent(&self, changes: u64, ino: u64, fblk: u64) -> Option<Ext> {
        #[cfg(feature = "fast-paths")]
        if let Some((c, i, e)) = self.extent {
            if c == changes && i == ino && e.fblk <= fblk && fblk - e.fblk < u64::from(e.len) {
                return Some(e);
            }
        }
        let _ = (changes, ino, fblk);
        None
    }

    /// Remember extent `e` of `ino` as read at change count `changes`.
    pub fn set_extent(&mut self, changes: u64, ino: u64, e: Ext) {
        #[cfg(feature = "fast-paths")]
        {
            self.extent = Some((changes, ino, e));
        }
        let _ = (changes, ino, e);
    }
}
