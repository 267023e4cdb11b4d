//! The split virtqueue (virtio 1.x §2.7): descriptor table, available ring, used ring.
//!
//! # Memory
//!
//! One coherent DMA region from [`Platform::dma_alloc`], laid out as
//!
//! | part | offset | size | written by |
//! |---|---|---|---|
//! | descriptor table | 0 | 16 × size | driver |
//! | available ring (flags, idx, ring\[size\], used_event) | 16 × size | 6 + 2 × size | driver |
//! | used ring (flags, idx, ring\[size\] of (id, len), avail_event) | next multiple of 64 | 6 + 8 × size | device |
//!
//! The used ring starts on its own cache line so that the device's writes never share a line
//! with the driver's (it matters on systems where "coherent" means uncached-but-buffered).
//! [`SplitQueue::dma_bytes`] gives the total.
//!
//! # Ownership of descriptors
//!
//! The device only reads descriptors reachable from the available ring and only writes the
//! used ring, so everything the driver needs to *trust* lives outside DMA memory: the free
//! list and the chain links are shadow arrays in this struct. A used-ring entry naming a
//! descriptor that is not the head of a chain in flight is rejected ([`SplitQueue::pop_used`]
//! returns [`UsedError`]), never followed.
//!
//! All ring accesses are volatile and little-endian, with the three barriers the specification
//! asks for (§2.7.13: descriptors before the index that publishes them; the index before the
//! check for notification suppression; the used index before the entries it covers).

use core::ptr::NonNull;

use crate::platform::{DmaRegion, Fence, Platform, PAGE_SIZE};

/// Descriptor flag: the chain continues in `next`.
const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer (otherwise it reads it).
const DESC_F_WRITE: u16 = 2;
/// Available-ring flag: the driver does not want interrupts (it polls).
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Used-ring flag: the device does not need to be notified of new buffers.
const USED_F_NO_NOTIFY: u16 = 1;

/// Bytes per descriptor: addr u64, len u32, flags u16, next u16.
const DESC_SIZE: usize = 16;
/// Bytes per used-ring element: id u32, len u32.
const USED_ELEM_SIZE: usize = 8;

/// One buffer of a descriptor chain: a bus address, a length, and who writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Bus address (from [`Platform::dma_address`]).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes this buffer (a read request's data, every status byte).
    pub device_writes: bool,
}

/// A used-ring entry that does not name a chain in flight: the device broke the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedError {
    /// The descriptor id the device returned.
    pub id: u32,
}

/// A split virtqueue of up to `N` descriptors over caller-provided DMA memory.
///
/// The actual size is chosen at start-up (a power of two, at most `N` and at most what the
/// device offers); `N` only bounds the shadow arrays kept in this struct.
pub struct SplitQueue<const N: usize> {
    /// Number of descriptors in use by the rings (power of two, ≤ N).
    size: u16,
    desc: NonNull<u8>,
    avail: NonNull<u8>,
    used: NonNull<u8>,
    /// Bus addresses of the three parts, for the transport.
    desc_bus: u64,
    avail_bus: u64,
    used_bus: u64,
    /// Free descriptor ids (a stack); `free[..free_len]` are free.
    free: [u16; N],
    free_len: u16,
    /// Shadow chain links: `link[d]` is the descriptor after `d` in its chain.
    link: [u16; N],
    /// For a chain head in flight: its length; 0 for any other descriptor.
    chain_len: [u16; N],
    /// The driver's next available index (the device sees it once published).
    avail_idx: u16,
    /// The next used-ring index the driver will read.
    last_used: u16,
}

// SAFETY: the queue owns its ring memory (a DmaRegion, never freed); the pointers move with it.
unsafe impl<const N: usize> Send for SplitQueue<N> {}

/// Offset of the used ring for a queue of `size` entries.
const fn used_offset(size: usize) -> usize {
    let avail_end = DESC_SIZE * size + 6 + 2 * size;
    (avail_end + 63) & !63
}

impl<const N: usize> SplitQueue<N> {
    /// Bytes of DMA memory a queue of `size` entries needs.
    pub const fn dma_bytes(size: usize) -> usize {
        used_offset(size) + 6 + USED_ELEM_SIZE * size
    }

    /// The largest power of two that is at most `N`, at most `device_max`, and at most 32768
    /// (the split-ring limit); `None` if that is 0.
    pub fn choose_size(device_max: u16) -> Option<u16> {
        let limit = N.min(usize::from(device_max)).min(32768);
        if limit == 0 {
            return None;
        }
        // Largest power of two ≤ limit.
        let size = 1usize << (usize::BITS - 1 - limit.leading_zeros());
        u16::try_from(size).ok()
    }

    /// A queue of `size` entries (a power of two ≤ `N`) in memory from `platform`. The
    /// available ring asks the device not to interrupt: the driver polls.
    pub fn new<P: Platform>(platform: &P, size: u16) -> Option<Self> {
        let n = usize::from(size);
        if !size.is_power_of_two() || n > N {
            return None;
        }
        let region: DmaRegion = platform.dma_alloc(Self::dma_bytes(n), PAGE_SIZE)?;
        if region.len() < Self::dma_bytes(n) {
            return None;
        }
        let base = region.as_ptr();
        // SAFETY: all three offsets lie inside the region (dma_bytes covers them).
        let (desc, avail, used) = unsafe {
            (
                NonNull::new(base)?,
                NonNull::new(base.add(DESC_SIZE * n))?,
                NonNull::new(base.add(used_offset(n)))?,
            )
        };
        // The region is contiguous at the device (dma_alloc promises it), so one translation
        // of its start gives all three.
        let bus = platform.dma_address(base)?;
        let mut free = [0u16; N];
        for (i, f) in free.iter_mut().enumerate().take(n) {
            // Pop order 0, 1, 2, ... (the stack top is the end).
            *f = (n - 1 - i) as u16;
        }
        let q = SplitQueue {
            size,
            desc,
            avail,
            used,
            desc_bus: bus,
            avail_bus: bus + (DESC_SIZE * n) as u64,
            used_bus: bus + used_offset(n) as u64,
            free,
            free_len: size,
            link: [0; N],
            chain_len: [0; N],
            avail_idx: 0,
            last_used: 0,
        };
        // The region is zeroed; set the one non-zero field. The region itself is not kept:
        // the queue lives as long as the driver and the memory is never freed.
        q.write_avail_u16(0, AVAIL_F_NO_INTERRUPT);
        Some(q)
    }

    /// Number of descriptors in the rings.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Bus addresses of the descriptor table, available ring and used ring.
    pub fn bus_addresses(&self) -> (u64, u64, u64) {
        (self.desc_bus, self.avail_bus, self.used_bus)
    }

    /// Free descriptors.
    pub fn free_descriptors(&self) -> u16 {
        self.free_len
    }

    fn write_avail_u16(&self, offset: usize, value: u16) {
        // SAFETY: callers pass offsets inside the available ring (flags 0, idx 2, ring 4..).
        unsafe {
            self.avail
                .as_ptr()
                .add(offset)
                .cast::<u16>()
                .write_volatile(value.to_le())
        };
    }

    fn read_used_u16(&self, offset: usize) -> u16 {
        // SAFETY: callers pass offsets inside the used ring header (flags 0, idx 2).
        u16::from_le(unsafe { self.used.as_ptr().add(offset).cast::<u16>().read_volatile() })
    }

    fn write_desc(&self, id: u16, seg: &Segment, next: Option<u16>) {
        let flags = if seg.device_writes { DESC_F_WRITE } else { 0 }
            | if next.is_some() { DESC_F_NEXT } else { 0 };
        // SAFETY: `id < size`, so the 16-byte descriptor lies inside the table; the device does
        // not read a descriptor before it is published through the available ring.
        unsafe {
            let d = self.desc.as_ptr().add(DESC_SIZE * usize::from(id));
            d.cast::<u64>().write_volatile(seg.addr.to_le());
            d.add(8).cast::<u32>().write_volatile(seg.len.to_le());
            d.add(12).cast::<u16>().write_volatile(flags.to_le());
            d.add(14)
                .cast::<u16>()
                .write_volatile(next.unwrap_or(0).to_le());
        }
    }

    /// Put a chain of `count` descriptors into the table and publish it in the available
    /// ring. `build` is called with the chain's head id (so the caller can fill per-head data
    /// first) and returns the segments, device-readable ones first as the specification
    /// requires. Returns the head, or `None` with nothing published if fewer than `count`
    /// descriptors are free or `build` yields fewer than `count` segments (extra ones are
    /// ignored). Call [`SplitQueue::needs_notify`] afterwards.
    pub fn push<P: Platform, I: Iterator<Item = Segment>>(
        &mut self,
        platform: &P,
        count: usize,
        build: impl FnOnce(u16) -> I,
    ) -> Option<u16> {
        let count = u16::try_from(count).ok()?;
        if count == 0 || count > self.free_len {
            return None;
        }
        // The free stack's top `count` entries become the chain, in pop order. Nothing is
        // visible to the device until the ring index moves, so a short iterator leaves only
        // unpublished scribbles in free descriptors.
        let top = usize::from(self.free_len);
        let n = usize::from(count);
        let head = self.free[top - 1];
        let mut written = 0;
        for (k, seg) in build(head).take(n).enumerate() {
            let id = self.free[top - 1 - k];
            let next = (k + 1 < n).then(|| self.free[top - 2 - k]);
            self.write_desc(id, &seg, next);
            if let Some(next) = next {
                self.link[usize::from(id)] = next;
            }
            written += 1;
        }
        if written != n {
            return None;
        }
        self.free_len -= count;
        self.chain_len[usize::from(head)] = count;

        let slot = usize::from(self.avail_idx & (self.size - 1));
        self.write_avail_u16(4 + 2 * slot, head);
        // The descriptors and the ring entry must be visible before the index publishes them.
        platform.fence(Fence::DmaWrites);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.write_avail_u16(2, self.avail_idx);
        Some(head)
    }

    /// Whether the device wants a notification for what was just published. Includes the
    /// barrier between publishing the index and reading the device's suppression flag, and
    /// orders the publication before the doorbell write that follows.
    pub fn needs_notify<P: Platform>(&self, platform: &P) -> bool {
        platform.fence(Fence::Full);
        self.read_used_u16(0) & USED_F_NO_NOTIFY == 0
    }

    /// The next used-ring entry, if the device returned one: the head id of the finished
    /// chain and the byte count the device says it wrote. The chain's descriptors are back on
    /// the free list when this returns.
    pub fn pop_used<P: Platform>(&mut self, platform: &P) -> Option<Result<(u16, u32), UsedError>> {
        let used_idx = self.read_used_u16(2);
        if used_idx == self.last_used {
            return None;
        }
        // The entry (and the buffers it covers) must not be read before the index.
        platform.fence(Fence::DmaReads);
        let slot = usize::from(self.last_used & (self.size - 1));
        // SAFETY: `slot < size`, so the 8-byte element lies inside the used ring.
        let (id, len) = unsafe {
            let e = self.used.as_ptr().add(4 + USED_ELEM_SIZE * slot);
            (
                u32::from_le(e.cast::<u32>().read_volatile()),
                u32::from_le(e.add(4).cast::<u32>().read_volatile()),
            )
        };
        self.last_used = self.last_used.wrapping_add(1);
        let head = match u16::try_from(id) {
            Ok(h) if h < self.size && self.chain_len[usize::from(h)] != 0 => h,
            _ => return Some(Err(UsedError { id })),
        };
        self.free_chain(head);
        Some(Ok((head, len)))
    }

    /// Return the chain starting at `head` to the free list, following the shadow links.
    fn free_chain(&mut self, head: u16) {
        let count = core::mem::replace(&mut self.chain_len[usize::from(head)], 0);
        let mut id = head;
        for k in 0..count {
            self.free[usize::from(self.free_len)] = id;
            self.free_len += 1;
            if k + 1 < count {
                id = self.link[usize::from(id)];
            }
        }
    }
}

impl<const N: usize> core::fmt::Debug for SplitQueue<N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SplitQueue")
            .field("size", &self.size)
            .field("free", &self.free_len)
            .field("avail_idx", &self.avail_idx)
            .field("last_used", &self.last_used)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::platform::{DmaPool, DmaSync};
    use std::boxed::Box;

    /// Identity-mapped host memory standing in for a board.
    struct Host(DmaPool);

    // SAFETY: leaked host memory, identity "bus" addresses, nothing but this test touches it.
    unsafe impl Platform for Host {
        fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
            self.0.alloc(len, align)
        }
        fn dma_address(&self, addr: *const u8) -> Option<u64> {
            Some(addr as u64)
        }
        fn map_mmio(&self, _phys: u64, _len: usize) -> Option<NonNull<u8>> {
            None
        }
        fn dma_sync(&self, _addr: *const u8, _len: usize, _sync: DmaSync) {}
        fn now_us(&self) -> u64 {
            0
        }
    }

    fn host() -> Host {
        let mem = Box::leak(std::vec![0u8; 8 * PAGE_SIZE].into_boxed_slice());
        Host(DmaPool::new(mem))
    }

    /// Play the device: take the next available head, and return it in the used ring.
    fn device_complete(q: &SplitQueue<16>, avail_seen: &mut u16, used_idx: &mut u16) -> u16 {
        // SAFETY: offsets inside the rings of a queue of size 8.
        unsafe {
            let slot = usize::from(*avail_seen & (q.size - 1));
            let head = q.avail.as_ptr().add(4 + 2 * slot).cast::<u16>().read();
            *avail_seen += 1;
            let u = usize::from(*used_idx & (q.size - 1));
            let e = q.used.as_ptr().add(4 + 8 * u);
            e.cast::<u32>().write(u32::from(head));
            e.add(4).cast::<u32>().write(1);
            *used_idx += 1;
            q.used.as_ptr().add(2).cast::<u16>().write(*used_idx);
            head
        }
    }

    fn seg(addr: u64, w: bool) -> Segment {
        Segment {
            addr,
            len: 512,
            device_writes: w,
        }
    }

    #[test]
    fn sizes_and_layout() {
        assert_eq!(SplitQueue::<16>::choose_size(1024), Some(16));
        assert_eq!(SplitQueue::<16>::choose_size(12), Some(8));
        assert_eq!(SplitQueue::<16>::choose_size(0), None);
        assert_eq!(SplitQueue::<256>::dma_bytes(256), 4096 + 576 + 6 + 2048);
        let p = host();
        assert!(SplitQueue::<16>::new(&p, 32).is_none());
        assert!(SplitQueue::<16>::new(&p, 12).is_none());
        let q = SplitQueue::<16>::new(&p, 8).unwrap();
        let (d, a, u) = q.bus_addresses();
        assert_eq!(d % PAGE_SIZE as u64, 0);
        assert_eq!(a - d, 128);
        assert_eq!(u % 64, 0);
        assert!(u >= a + 6 + 16);
    }

    #[test]
    fn chains_publish_free_and_reject_bogus_ids() {
        let p = host();
        let mut q = SplitQueue::<16>::new(&p, 8).unwrap();
        let (mut seen, mut used) = (0u16, 0u16);
        let segs = [seg(0x1000, false), seg(0x2000, true), seg(0x3000, true)];
        let h1 = q.push(&p, 3, |_| segs.iter().copied()).unwrap();
        let h2 = q.push(&p, 3, |_| segs.iter().copied()).unwrap();
        assert_eq!(q.free_descriptors(), 2);
        assert!(
            q.push(&p, 3, |_| segs.iter().copied()).is_none(),
            "3 > 2 free"
        );
        assert!(
            q.push(&p, 2, |_| segs.iter().copied().take(1)).is_none(),
            "a short chain is not published"
        );
        assert_eq!(q.free_descriptors(), 2, "a refused push changes nothing");
        assert!(q.needs_notify(&p));
        // The published chain: flags and links as pushed.
        // SAFETY: descriptor h1 lies in the table.
        unsafe {
            let d = q.desc.as_ptr().add(16 * usize::from(h1));
            assert_eq!(d.cast::<u64>().read(), 0x1000);
            assert_eq!(d.add(12).cast::<u16>().read(), DESC_F_NEXT);
        }
        assert!(q.pop_used(&p).is_none());
        assert_eq!(device_complete(&q, &mut seen, &mut used), h1);
        assert_eq!(device_complete(&q, &mut seen, &mut used), h2);
        assert_eq!(q.pop_used(&p), Some(Ok((h1, 1))));
        assert_eq!(q.pop_used(&p), Some(Ok((h2, 1))));
        assert_eq!(q.free_descriptors(), 8);
        assert!(q.pop_used(&p).is_none());
        // A device returning a head twice (or a non-head) is caught, not followed.
        let h3 = q.push(&p, 3, |_| segs.iter().copied()).unwrap();
        assert_eq!(device_complete(&q, &mut seen, &mut used), h3);
        // SAFETY: used ring element 3 of 8, index at offset 2.
        unsafe {
            let e = q.used.as_ptr().add(4 + 8 * 3);
            e.cast::<u32>().write(u32::from(h3));
            q.used.as_ptr().add(2).cast::<u16>().write(4);
        }
        assert_eq!(q.pop_used(&p), Some(Ok((h3, 1))));
        assert_eq!(q.pop_used(&p), Some(Err(UsedError { id: u32::from(h3) })));
        assert_eq!(q.free_descriptors(), 8);
    }
}
