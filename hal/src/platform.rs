//! What a DMA driver needs from the board: the [`Platform`] trait.
//!
//! The virtio-blk and NVMe drivers never touch an allocator, a page table or a cache
//! controller themselves. Everything that depends on the board or the operating environment
//! goes through this one small trait, which the firmware implements once:
//!
//! | need | method | on bare metal with identity mapping (QEMU `virt`) |
//! |---|---|---|
//! | memory for rings and queues | [`Platform::dma_alloc`] | bump-allocate from a `static` pool ([`DmaPool`]) |
//! | the address the device uses for a CPU address | [`Platform::dma_address`] | the address itself |
//! | a pointer to device registers | [`Platform::map_mmio`] | the physical address itself |
//! | caches around a DMA transfer | [`Platform::dma_sync`] | nothing (QEMU is cache-coherent) |
//! | ordering of memory and MMIO accesses | [`Platform::fence`] | provided for RISC-V, Arm and x86 |
//! | a clock for timeouts | [`Platform::now_us`] | a free-running timer (RISC-V `mtime`) |
//!
//! # The DMA model (why the methods look like this)
//!
//! There are two kinds of memory a device reads or writes:
//!
//! * **Driver-owned structures** (virtqueue rings, NVMe submission / completion queues,
//!   request headers, PRP lists): long-lived, allocated once at driver start-up with
//!   [`Platform::dma_alloc`]. They must be *coherent*: a CPU store becomes visible to the
//!   device after a [`Fence`] and vice versa, with no cache maintenance. On a non-coherent
//!   system, hand out memory mapped uncached (the same split Linux makes between
//!   `dma_alloc_coherent` and streaming mappings).
//! * **Request buffers** (the filesystem's `&'static mut [u8]` block buffers): owned by the
//!   caller, lent to the driver for one request. The driver asks [`Platform::dma_address`]
//!   for their bus addresses page by page and calls [`Platform::dma_sync`] around the transfer,
//!   so they may live in cached memory.
//!
//! Nothing is ever freed: drivers are set up once and live as long as the firmware. This keeps
//! the trait free of lifetimes, and it is what makes the drivers sound even if a driver object
//! is leaked with a transfer in flight (see the buffer rules in [`bonsaifs::device`]).
//!
//! # Implementing it for a new board
//!
//! ```
//! use core::ptr::NonNull;
//! use bonsaifs_hal::platform::{DmaPool, DmaRegion, DmaSync, Platform, PAGE_SIZE};
//!
//! /// A board with RAM identity-mapped and cache-coherent DMA.
//! struct Board {
//!     pool: DmaPool,
//! }
//!
//! // SAFETY: memory from `pool` is exclusively owned static memory, identity-mapped, so the
//! // CPU address is the bus address; DMA is cache-coherent; MMIO is identity-mapped.
//! unsafe impl Platform for Board {
//!     fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
//!         self.pool.alloc(len, align)
//!     }
//!     fn dma_address(&self, addr: *const u8) -> Option<u64> {
//!         Some(addr as usize as u64)
//!     }
//!     fn map_mmio(&self, phys: u64, _len: usize) -> Option<NonNull<u8>> {
//!         NonNull::new(usize::try_from(phys).ok()? as *mut u8)
//!     }
//!     fn dma_sync(&self, _addr: *const u8, _len: usize, _sync: DmaSync) {
//!         // Cache-coherent DMA: the device snoops the CPU caches, nothing to clean or invalidate.
//!     }
//!     fn now_us(&self) -> u64 {
//!         0 // a real board reads its free-running timer here
//!     }
//! }
//!
//! #[repr(C, align(4096))]
//! struct Pool([u8; 4 * PAGE_SIZE]);
//! static mut POOL: Pool = Pool([0; 4 * PAGE_SIZE]);
//!
//! // SAFETY: POOL is used only here, once.
//! let mem: &'static mut [u8] = unsafe { &mut (*core::ptr::addr_of_mut!(POOL)).0 };
//! let board = Board { pool: DmaPool::new(mem) };
//! let ring = board.dma_alloc(3000, PAGE_SIZE).unwrap();
//! assert_eq!(ring.as_ptr() as usize % PAGE_SIZE, 0);
//! assert!(ring.len() >= 3000);
//! ```

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

/// The page size the drivers assume for DMA: [`Platform::dma_address`] translations hold for
/// at least the rest of a page, and NVMe's memory page size is set to this.
pub const PAGE_SIZE: usize = 4096;

/// The board services a DMA driver needs. Implemented once per board or environment.
///
/// Every method takes `&self`, so one platform value can serve several drivers (a blanket
/// implementation covers `&P`); a platform that hands out memory uses interior mutability,
/// as [`DmaPool`] does.
///
/// # Safety
///
/// The drivers hand the addresses this trait produces to hardware that reads and writes
/// memory behind the compiler's back, so a wrong answer is undefined behaviour, not an error.
/// An implementation promises:
///
/// * [`dma_alloc`](Platform::dma_alloc) returns memory that nothing else uses, ever (it is
///   never freed), physically contiguous, zeroed, aligned as asked, and coherent with the
///   device (no cache maintenance needed; uncached if the system is not coherent);
/// * [`dma_address`](Platform::dma_address) returns the address at which the *device* sees the
///   given byte, and that the bytes from there to the end of its [`PAGE_SIZE`] page are
///   contiguous at the device too;
/// * [`map_mmio`](Platform::map_mmio) returns a pointer through which volatile accesses reach
///   the device registers (uncached, not reordered beyond what [`Fence`] orders);
/// * [`dma_sync`](Platform::dma_sync) makes CPU caches and device accesses agree as its
///   [`DmaSync`] argument describes;
/// * [`fence`](Platform::fence), if overridden, gives at least the ordering its [`Fence`]
///   argument describes.
pub unsafe trait Platform {
    /// Memory for driver-owned DMA structures: `len` bytes (the region may be longer),
    /// aligned to `align` (a power of two; drivers ask for at most [`PAGE_SIZE`]), zeroed,
    /// physically contiguous, coherent with the device, and never freed. `None` when the
    /// platform has no such memory left.
    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion>;

    /// The bus address the device must use to reach the byte at CPU address `addr`, valid up
    /// to the end of that byte's [`PAGE_SIZE`] page. `None` if the device cannot reach it
    /// (the request then fails with an error; nothing is transferred).
    ///
    /// With an identity mapping and no IOMMU this is `Some(addr as u64)`.
    fn dma_address(&self, addr: *const u8) -> Option<u64>;

    /// A pointer to `len` bytes of device registers at physical (bus) address `phys`, for
    /// volatile accesses. Called at driver start-up only. Identity on bare metal without an
    /// MMU; `None` if the range cannot be mapped.
    fn map_mmio(&self, phys: u64, len: usize) -> Option<NonNull<u8>>;

    /// Keep CPU caches and a device transfer on a request buffer consistent. Drivers call it
    /// with [`DmaSync::BeforeDeviceReads`] or [`DmaSync::BeforeDeviceWrites`] before they hand
    /// `len` bytes at `addr` to the device, and with [`DmaSync::AfterDeviceWrote`] after the
    /// device finished writing them, before the CPU reads them.
    ///
    /// On a cache-coherent system (QEMU, most application processors with coherent
    /// interconnects) there is nothing to do. On a core with a data cache that the DMA engine
    /// does not snoop (for example a Cortex-M7), clean / invalidate the lines covering the
    /// range as each variant says.
    fn dma_sync(&self, addr: *const u8, len: usize, sync: DmaSync);

    /// Microseconds from a monotonic clock (any origin). Drivers use it only to bound their
    /// waits for the device (reset, controller enable) and report a timeout error instead of
    /// hanging. A platform with no clock may count calls instead; the timeouts then become
    /// iteration bounds.
    fn now_us(&self) -> u64;

    /// Order memory and device-register accesses; see [`Fence`]. The default issues the
    /// instruction the architecture needs (RISC-V `fence` with the exact predecessor /
    /// successor sets, Arm `dmb` / `dsb`, nothing but a compiler barrier on x86, whose
    /// ordering is already strong enough); override it only for a stronger requirement of the
    /// interconnect.
    fn fence(&self, kind: Fence) {
        arch_fence(kind);
    }
}

// SAFETY: forwards every call to `P`, which keeps the promises.
unsafe impl<P: Platform + ?Sized> Platform for &P {
    fn dma_alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
        (**self).dma_alloc(len, align)
    }
    fn dma_address(&self, addr: *const u8) -> Option<u64> {
        (**self).dma_address(addr)
    }
    fn map_mmio(&self, phys: u64, len: usize) -> Option<NonNull<u8>> {
        (**self).map_mmio(phys, len)
    }
    fn dma_sync(&self, addr: *const u8, len: usize, sync: DmaSync) {
        (**self).dma_sync(addr, len, sync)
    }
    fn now_us(&self) -> u64 {
        (**self).now_us()
    }
    fn fence(&self, kind: Fence) {
        (**self).fence(kind)
    }
}

/// Which cache maintenance a request buffer needs around a transfer (see
/// [`Platform::dma_sync`]). Named from the device's side: a disk *write* is a device *read* of
/// memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DmaSync {
    /// The device is about to read the buffer: write dirty cache lines back to memory (clean).
    BeforeDeviceReads,
    /// The device is about to write the buffer: make sure no dirty line can later be written
    /// back over the device's data (clean and invalidate).
    BeforeDeviceWrites,
    /// The device has written the buffer: drop stale lines so the CPU reads the new data
    /// (invalidate).
    AfterDeviceWrote,
}

/// An ordering point between CPU accesses to coherent DMA memory and to device registers.
///
/// The drivers use exactly these three, at the places the virtio and NVMe specifications
/// require a barrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Fence {
    /// Earlier stores to DMA memory become visible to the device before later stores to DMA
    /// memory (a descriptor before the ring index that publishes it).
    DmaWrites,
    /// Earlier loads from DMA memory complete before later loads from DMA memory (the
    /// device's ring index or phase bit before the entries it covers).
    DmaReads,
    /// Every earlier access to DMA memory or registers is ordered before every later one, in
    /// particular stores to DMA memory before a doorbell register write and before a load that
    /// checks whether the device wants that doorbell.
    Full,
}

/// The architecture's instruction for each [`Fence`] (the default of [`Platform::fence`]).
pub fn arch_fence(kind: Fence) {
    #[cfg(any(target_arch = "riscv32", target_arch = "riscv64"))]
    // SAFETY: a fence instruction has no effect but ordering.
    unsafe {
        // RISC-V: R/W are memory, I/O are device accesses; name exactly the sets needed.
        match kind {
            Fence::DmaWrites => core::arch::asm!("fence w, w", options(nostack, preserves_flags)),
            Fence::DmaReads => core::arch::asm!("fence r, r", options(nostack, preserves_flags)),
            Fence::Full => core::arch::asm!("fence iorw, iorw", options(nostack, preserves_flags)),
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction has no effect but ordering.
    unsafe {
        // Outer-shareable domain: the device is outside the inner-shareable CPU cluster.
        match kind {
            Fence::DmaWrites => core::arch::asm!("dmb oshst", options(nostack, preserves_flags)),
            Fence::DmaReads => core::arch::asm!("dmb oshld", options(nostack, preserves_flags)),
            Fence::Full => core::arch::asm!("dsb sy", options(nostack, preserves_flags)),
        }
    }
    #[cfg(target_arch = "arm")]
    // SAFETY: a barrier instruction has no effect but ordering.
    unsafe {
        // ARMv7-M / v7-A: DMB orders memory accesses, DSB also waits for device writes.
        match kind {
            Fence::DmaWrites | Fence::DmaReads => {
                core::arch::asm!("dmb", options(nostack, preserves_flags))
            }
            Fence::Full => core::arch::asm!("dsb", options(nostack, preserves_flags)),
        }
    }
    #[cfg(not(any(
        target_arch = "riscv32",
        target_arch = "riscv64",
        target_arch = "aarch64",
        target_arch = "arm"
    )))]
    {
        // x86 keeps stores in order and loads in order, and uncached MMIO accesses are not
        // reordered with memory accesses; a sequentially consistent fence covers other
        // architectures conservatively.
        match kind {
            Fence::DmaWrites | Fence::DmaReads => {
                core::sync::atomic::compiler_fence(Ordering::SeqCst)
            }
            Fence::Full => core::sync::atomic::fence(Ordering::SeqCst),
        }
    }
    // The instruction alone does not stop the compiler from moving plain accesses across it.
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
}

/// A region of driver-owned DMA memory, handed out by [`Platform::dma_alloc`].
///
/// It is a raw pointer and a length, not a slice: the device writes this memory concurrently
/// with the CPU, so drivers access it only through volatile reads and writes at the places the
/// device protocol allows. The region is owned by whoever holds this value, and is never freed.
#[derive(Debug)]
pub struct DmaRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a DmaRegion is the unique owner of its memory; moving it to another thread moves that
// ownership.
unsafe impl Send for DmaRegion {}

impl DmaRegion {
    /// Take ownership of `'static` memory as a DMA region.
    ///
    /// The memory must also satisfy the platform's DMA promises (physically contiguous,
    /// coherent) for the driver using it; [`Platform::dma_alloc`] is where that is checked.
    pub fn from_static(mem: &'static mut [u8]) -> Self {
        let len = mem.len();
        // A slice pointer is never null (an empty slice gives a dangling, non-null pointer).
        let ptr = NonNull::from(mem).cast::<u8>();
        DmaRegion { ptr, len }
    }

    /// A region from a raw pointer and a length.
    ///
    /// # Safety
    ///
    /// `ptr .. ptr + len` must be valid for reads and writes, owned by nothing else, and
    /// never freed (it stays valid for the rest of the program).
    pub unsafe fn from_raw(ptr: NonNull<u8>, len: usize) -> Self {
        DmaRegion { ptr, len }
    }

    /// The CPU address of the first byte.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Split into `[0, at)` and `[at, len)`; `None` if `at > len`.
    pub fn split_at(self, at: usize) -> Option<(DmaRegion, DmaRegion)> {
        if at > self.len {
            return None;
        }
        // SAFETY: both halves lie inside this region, which we own and consume.
        let tail = unsafe { NonNull::new_unchecked(self.ptr.as_ptr().add(at)) };
        Some((
            DmaRegion {
                ptr: self.ptr,
                len: at,
            },
            DmaRegion {
                ptr: tail,
                len: self.len - at,
            },
        ))
    }

    /// Zero the region (volatile stores, so the compiler cannot drop them as dead).
    pub fn zero(&mut self) {
        for i in 0..self.len {
            // SAFETY: `i < len`, the region is ours.
            unsafe { self.ptr.as_ptr().add(i).write_volatile(0) };
        }
    }
}

/// A bump allocator over one `'static` memory area: the usual way to implement
/// [`Platform::dma_alloc`] without a heap.
///
/// Allocation is lock-free (one atomic compare-and-swap), so a platform value holding a pool
/// can be a `static`. Regions are zeroed when handed out and never freed; size the area for
/// the drivers' start-up needs (each driver documents them, e.g. a virtio-blk queue of 128
/// entries takes under three pages).
#[derive(Debug)]
pub struct DmaPool {
    base: NonNull<u8>,
    len: usize,
    next: AtomicUsize,
}

// SAFETY: the pool hands out disjoint parts of memory it owns; `next` is atomic.
unsafe impl Send for DmaPool {}
// SAFETY: as above; `alloc` through `&self` from several threads gives disjoint regions.
unsafe impl Sync for DmaPool {}

impl DmaPool {
    /// A pool over `mem`, which it owns from now on.
    pub fn new(mem: &'static mut [u8]) -> Self {
        let len = mem.len();
        DmaPool {
            base: NonNull::from(mem).cast::<u8>(),
            len,
            next: AtomicUsize::new(0),
        }
    }

    /// `len` zeroed bytes aligned to `align` (a power of two), or `None` if the pool is
    /// exhausted or `align` is not a power of two.
    pub fn alloc(&self, len: usize, align: usize) -> Option<DmaRegion> {
        if !align.is_power_of_two() {
            return None;
        }
        let base = self.base.as_ptr() as usize;
        let mut cur = self.next.load(Ordering::Relaxed);
        let start = loop {
            let addr = base.checked_add(cur)?;
            let aligned = addr.checked_add(align - 1)? & !(align - 1);
            let start = aligned - base;
            let end = start.checked_add(len)?;
            if end > self.len {
                return None;
            }
            match self
                .next
                .compare_exchange(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break start,
                Err(now) => cur = now,
            }
        };
        // SAFETY: `start .. start + len` lies inside the pool (checked above) and the CAS gave
        // this range to us alone; the pool's memory is 'static.
        let mut region = unsafe {
            DmaRegion::from_raw(NonNull::new_unchecked(self.base.as_ptr().add(start)), len)
        };
        region.zero();
        Some(region)
    }

    /// Bytes not handed out yet (ignoring alignment padding to come).
    pub fn remaining(&self) -> usize {
        self.len.saturating_sub(self.next.load(Ordering::Relaxed))
    }
}

/// Waits until `done()` holds or `timeout_us` microseconds pass on the platform clock;
/// returns whether it held. Drivers use it for the few places where the device protocol
/// requires waiting (reset, enable). `done` is always checked once more after the deadline,
/// so a slow clock cannot turn a finished wait into a timeout.
pub fn wait_until<P: Platform + ?Sized>(
    platform: &P,
    timeout_us: u64,
    mut done: impl FnMut() -> bool,
) -> bool {
    let start = platform.now_us();
    loop {
        if done() {
            return true;
        }
        if platform.now_us().wrapping_sub(start) > timeout_us {
            return done();
        }
        core::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::boxed::Box;

    fn pool(len: usize) -> DmaPool {
        DmaPool::new(Box::leak(std::vec![0xAAu8; len].into_boxed_slice()))
    }

    #[test]
    fn pool_aligns_zeroes_and_runs_out() {
        let p = pool(3 * PAGE_SIZE);
        let a = p.alloc(10, 8).unwrap();
        assert_eq!(a.as_ptr() as usize % 8, 0);
        let b = p.alloc(100, 64).unwrap();
        assert_eq!(b.as_ptr() as usize % 64, 0);
        assert!(b.as_ptr() as usize >= a.as_ptr() as usize + 10);
        for i in 0..100 {
            // SAFETY: inside region b.
            assert_eq!(unsafe { b.as_ptr().add(i).read() }, 0);
        }
        assert!(p.alloc(4 * PAGE_SIZE, 8).is_none());
        assert!(p.alloc(8, 3).is_none());
        let rest = p.remaining();
        assert!(p.alloc(rest, 1).is_some());
        assert!(p.alloc(1, 1).is_none());
    }

    #[test]
    fn split_region() {
        let p = pool(64);
        let r = p.alloc(64, 1).unwrap();
        let base = r.as_ptr() as usize;
        let (a, b) = r.split_at(16).unwrap();
        assert_eq!((a.len(), b.len()), (16, 48));
        assert_eq!(b.as_ptr() as usize, base + 16);
        assert!(b.split_at(49).is_none());
    }
}
