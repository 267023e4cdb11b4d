//! One submission queue and one completion queue in driver-owned DMA memory: the ring
//! indices, the phase tag, and the volatile accesses to the entries.
//!
//! The controller consumes submission entries from `head` (reported back in every completion
//! entry) to the `tail` the driver rang; one slot always stays empty, so a queue of `size`
//! entries holds at most `size - 1` commands. The controller posts completion entries with the
//! current phase tag, which starts at 1 and flips each time the queue wraps: an entry whose tag
//! equals the expected phase is new.

use crate::platform::{DmaRegion, Fence, Platform};

use super::command::{Cqe, Sqe};

/// Bytes per submission queue entry.
pub const SQE_BYTES: usize = 64;
/// Bytes per completion queue entry.
pub const CQE_BYTES: usize = 16;

/// A submission queue.
pub struct SubmissionQueue {
    mem: DmaRegion,
    bus: u64,
    size: u16,
    tail: u16,
    head: u16,
}

impl SubmissionQueue {
    /// A queue of `size` (≥ 2) entries in `mem` (at least `size * 64` bytes, page-aligned),
    /// which the controller reaches at `bus`.
    pub fn new(mem: DmaRegion, bus: u64, size: u16) -> Option<Self> {
        if size < 2 || mem.len() < usize::from(size) * SQE_BYTES {
            return None;
        }
        Some(Self {
            mem,
            bus,
            size,
            tail: 0,
            head: 0,
        })
    }

    /// Bus address of the first entry.
    pub fn bus(&self) -> u64 {
        self.bus
    }

    /// No room for another command.
    pub fn is_full(&self) -> bool {
        (self.tail + 1) % self.size == self.head
    }

    /// Records the head the controller reported in a completion entry (ignored if out of
    /// range: a controller bug must not corrupt the ring state).
    pub fn set_head(&mut self, head: u16) {
        if head < self.size {
            self.head = head;
        }
    }

    /// Writes `sqe` at the tail and advances it; returns the new tail for the doorbell, or
    /// `None` if the queue is full. The caller orders the entry before the doorbell write.
    pub fn push(&mut self, sqe: &Sqe) -> Option<u16> {
        if self.is_full() {
            return None;
        }
        let base = usize::from(self.tail) * SQE_BYTES;
        for (i, dw) in sqe.0.iter().enumerate() {
            // SAFETY: `base + 4 * i + 4 <= size * 64 <= mem.len()` (checked in `new`); the
            // region is ours and 4-byte aligned (page-aligned base, 64-byte entries).
            unsafe {
                self.mem
                    .as_ptr()
                    .add(base + 4 * i)
                    .cast::<u32>()
                    .write_volatile(dw.to_le());
            }
        }
        self.tail = (self.tail + 1) % self.size;
        Some(self.tail)
    }
}

/// A completion queue.
pub struct CompletionQueue {
    mem: DmaRegion,
    bus: u64,
    size: u16,
    head: u16,
    phase: bool,
}

impl CompletionQueue {
    /// A queue of `size` (≥ 2) entries in `mem` (at least `size * 16` bytes, page-aligned and
    /// zeroed, so that no stale entry carries phase 1), reached by the controller at `bus`.
    pub fn new(mem: DmaRegion, bus: u64, size: u16) -> Option<Self> {
        if size < 2 || mem.len() < usize::from(size) * CQE_BYTES {
            return None;
        }
        Some(Self {
            mem,
            bus,
            size,
            head: 0,
            phase: true,
        })
    }

    /// Bus address of the first entry.
    pub fn bus(&self) -> u64 {
        self.bus
    }

    /// Number of entries.
    pub fn size(&self) -> u16 {
        self.size
    }

    fn dword(&self, entry: u16, dw: usize) -> u32 {
        let off = usize::from(entry) * CQE_BYTES + 4 * dw;
        // SAFETY: `entry < size` and `dw < 4`, so `off + 4 <= size * 16 <= mem.len()`; the
        // region is ours and aligned.
        u32::from_le(unsafe { self.mem.as_ptr().add(off).cast::<u32>().read_volatile() })
    }

    /// The entry at the head if the controller has posted it (its phase tag matches), without
    /// consuming it.
    pub fn peek<P: Platform + ?Sized>(&self, platform: &P) -> Option<Cqe> {
        let dw3 = self.dword(self.head, 3);
        if ((dw3 >> 16) & 1 == 1) != self.phase {
            return None;
        }
        // The phase tag before the rest of the entry it covers.
        platform.fence(Fence::DmaReads);
        Some(Cqe::parse(
            self.dword(self.head, 0),
            self.dword(self.head, 2),
            self.dword(self.head, 3),
        ))
    }

    /// Consumes the head entry; returns the new head for the doorbell.
    pub fn advance(&mut self) -> u16 {
        self.head += 1;
        if self.head == self.size {
            self.head = 0;
            self.phase = !self.phase;
        }
        self.head
    }
}
