//! A fixed ring of finished completions, for devices that complete inside `submit`.
//!
//! A plain array of `Option<Completion>` rather than `heapless::Deque`: it has no destructor,
//! so request buffers may be declared before or after the device that borrows them (as with
//! the core's RAM disk).

use bonsaifs::device::Completion;

/// Up to `Q` completions waiting to be polled, oldest first.
#[derive(Debug)]
pub(crate) struct CompletionRing<'b, const Q: usize> {
    slots: [Option<Completion<'b>>; Q],
    head: usize,
    len: usize,
}

impl<'b, const Q: usize> CompletionRing<'b, Q> {
    /// An empty ring.
    pub(crate) const fn new() -> Self {
        CompletionRing {
            slots: [const { None }; Q],
            head: 0,
            len: 0,
        }
    }

    /// Completions waiting.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether another completion fits.
    pub(crate) fn is_full(&self) -> bool {
        self.len >= Q
    }

    /// Append `c`; hands it back if the ring is full.
    pub(crate) fn push(&mut self, c: Completion<'b>) -> Result<(), Completion<'b>> {
        if self.is_full() {
            return Err(c);
        }
        let i = (self.head + self.len) % Q;
        match self.slots.get_mut(i) {
            Some(slot) => {
                *slot = Some(c);
                self.len += 1;
                Ok(())
            }
            None => Err(c),
        }
    }

    /// Take the oldest completion.
    pub(crate) fn pop(&mut self) -> Option<Completion<'b>> {
        if self.len == 0 {
            return None;
        }
        let c = self.slots.get_mut(self.head)?.take();
        self.head = (self.head + 1) % Q;
        self.len -= 1;
        c
    }
}
