//! Deliberate bugs, switched on per volume, that prove the crash and trace checkers can fail.
//!
//! A checker that has never caught anything proves nothing. The crash harness and the
//! pipeline's trace checker run once with each of these switched on and must report a
//! violation. The switches exist in every build (one byte in the allocator state), but only
//! the `inject-bugs` feature exposes a way to turn them on (`Fs::inject_bugs`),
//! and nothing in the library turns them on by itself.

use bitflags::bitflags;

bitflags! {
    /// Which deliberate bugs are switched on.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Bugs: u8 {
        /// Skip every flush a sync point owes (before and after its log record): `fsync`,
        /// `fdatasync` and `DSYNC` tickets are reported while their data or record may still
        /// sit in the device's volatile cache. Checkpoints still flush.
        const SKIP_DEFERRED_FLUSH = 1;
        /// A checkpoint writes its superblock before the tree nodes it points to (and before
        /// the flush that should separate them).
        const SUPERBLOCK_BEFORE_NODES = 2;
        /// The allocator hands out blocks freed in the running transaction, before the
        /// checkpoint that stops the durable tree pointing at them.
        const EARLY_REUSE = 4;
        /// A commit group starts (and submits its flush) before its tickets' data writes
        /// complete, and reports those tickets with the group.
        const EARLY_FLUSH = 8;
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Bugs {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Bugs({=u8:#x})", self.bits())
    }
}

impl Bugs {
    /// Is `bug` switched on? Always false without the `inject-bugs` feature, so the checks
    /// compile away.
    #[inline(always)]
    pub fn has(self, bug: Bugs) -> bool {
        cfg!(feature = "inject-bugs") && self.contains(bug)
    }
}
