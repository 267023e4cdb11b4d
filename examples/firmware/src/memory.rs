//! `'static` memory without an allocator: buffers and values handed out exactly once.
//!
//! DMA drivers take `'static` buffers (a leaked driver cannot free memory the device still
//! writes), and the filesystem's cache memory goes to the device, so it is `'static` too.
//! These two types hand such memory out once each and refuse a second take, which is what
//! makes the `&'static mut` they return unique.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `N` zeroed, page-aligned bytes in `.bss`, taken once as `&'static mut [u8]`.
#[repr(C, align(4096))]
pub struct StaticBuffer<const N: usize> {
    mem: UnsafeCell<[u8; N]>,
    taken: AtomicBool,
}

// SAFETY: the memory is reachable only through the one `&'static mut` that `take` hands out
// (guarded by the atomic flag).
unsafe impl<const N: usize> Sync for StaticBuffer<N> {}

impl<const N: usize> StaticBuffer<N> {
    /// A zeroed buffer (placed in `.bss`).
    pub const fn new() -> Self {
        StaticBuffer {
            mem: UnsafeCell::new([0; N]),
            taken: AtomicBool::new(false),
        }
    }

    /// The buffer, the first time; `None` afterwards.
    // The point of the type: a `&mut` out of a shared `static`, made unique by the flag.
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self) -> Option<&'static mut [u8]> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: first and only take (the flag was false), so this is the only reference.
        Some(unsafe { &mut *self.mem.get() })
    }
}

impl<const N: usize> Default for StaticBuffer<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// A `static` slot that is initialised once at run time and then lives forever.
pub struct StaticCell<T> {
    value: UnsafeCell<MaybeUninit<T>>,
    taken: AtomicBool,
}

// SAFETY: the value is reachable only through the one reference `init` hands out; moving `T`
// into it from another thread needs `T: Send`.
unsafe impl<T: Send> Sync for StaticCell<T> {}

impl<T> StaticCell<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        StaticCell {
            value: UnsafeCell::new(MaybeUninit::uninit()),
            taken: AtomicBool::new(false),
        }
    }

    /// Store `value` and return it for the rest of the program; `None` (dropping nothing,
    /// `value` is given back) if the cell was already initialised.
    // The point of the type: a `&mut` out of a shared `static`, made unique by the flag.
    #[allow(clippy::mut_from_ref)]
    pub fn init(&'static self, value: T) -> Result<&'static mut T, T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return Err(value);
        }
        // SAFETY: first and only init (the flag was false): nobody else can reach the slot.
        Ok(unsafe { (*self.value.get()).write(value) })
    }
}

impl<T> Default for StaticCell<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// `N` zeroed, page-aligned bytes in `.bss`, handed out in pieces: each [`StaticArena::take`]
/// returns a fresh, disjoint `&'static mut [u8]` (a lock-free bump allocator that never
/// frees). For memory that several steps each use up, like the conformance suite's scratch.
#[repr(C, align(4096))]
pub struct StaticArena<const N: usize> {
    mem: UnsafeCell<[u8; N]>,
    next: AtomicUsize,
}

// SAFETY: `take` hands out disjoint ranges (claimed with a compare-and-swap), each reachable
// through exactly one `&'static mut`.
unsafe impl<const N: usize> Sync for StaticArena<N> {}

impl<const N: usize> StaticArena<N> {
    /// An arena with nothing handed out.
    pub const fn new() -> Self {
        StaticArena {
            mem: UnsafeCell::new([0; N]),
            next: AtomicUsize::new(0),
        }
    }

    /// `len` bytes aligned to `align` (a power of two ≤ 4096), or `None` when the arena is
    /// used up.
    // The point of the type: a `&mut` out of a shared `static`, made unique by the flag.
    #[allow(clippy::mut_from_ref)]
    pub fn take(&'static self, len: usize, align: usize) -> Option<&'static mut [u8]> {
        if !align.is_power_of_two() || align > 4096 {
            return None;
        }
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            let start = cur.checked_add(align - 1)? & !(align - 1);
            let end = start.checked_add(len).filter(|&e| e <= N)?;
            match self
                .next
                .compare_exchange(cur, end, Ordering::AcqRel, Ordering::Relaxed)
            {
                // SAFETY: `start..end` lies inside the arena and the CAS gave it to us alone;
                // the arena is 'static.
                Ok(_) => {
                    return Some(unsafe {
                        core::slice::from_raw_parts_mut(self.mem.get().cast::<u8>().add(start), len)
                    })
                }
                Err(now) => cur = now,
            }
        }
    }
}

impl<const N: usize> Default for StaticArena<N> {
    fn default() -> Self {
        Self::new()
    }
}
