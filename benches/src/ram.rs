//! The RAM disks: 32 MiB of 512-byte sectors, one zeroed buffer per run, pre-faulted so that
//! no filesystem pays the kernel's first-touch page faults inside a measurement, and reused
//! from run to run (see [`prefaulted`]).
//!
//! bonsaifs runs on its own [`bonsaifs::device::RamDisk`] over such a buffer (wrapped in
//! [`WriteCache`] and `Trace`); littlefs and FAT run on [`RamImage`] over one, which counts
//! the same things `Trace` counts.

use bonsaifs::device::{BlockDevice, Busy, Completion, Geometry, IoError, Request};

use crate::stats::Counters;

/// Sector size of every disk in the comparison.
pub const SECTOR: usize = 512;
/// Filesystem block / littlefs block / FAT cluster size.
pub const BLOCK: usize = 4096;
/// Disk size.
pub const DISK_BYTES: usize = 32 << 20;

/// A zeroed buffer whose pages are all mapped: `vec![0; n]` (and anything the optimiser turns
/// into `calloc`) maps them lazily, so the timed loops would pay a page fault per 4 KiB.
///
/// Buffers come from a per-process pool and go back to it when dropped, so every run of a
/// given size uses the same memory. With a fresh allocation per run, which physical pages a
/// disk got depended on what ran before it in the process, and on this VM that alone moved
/// plain copies into the disk by 2x (FAT's sequential write: 0.33 or 0.70 µs/op, the memcpy
/// row likewise, from nothing but the number of earlier repetitions).
pub fn prefaulted(len: usize) -> Buf {
    let reused = POOL.with(|p| {
        let mut p = p.borrow_mut();
        let i = p.iter().position(|v| v.len() == len)?;
        Some(p.swap_remove(i))
    });
    match reused {
        Some(mut v) => {
            v.fill(0);
            Buf(v)
        }
        None => {
            let mut v = vec![0u8; len];
            for i in (0..len).step_by(4096) {
                v[i] = std::hint::black_box(0);
            }
            Buf(v)
        }
    }
}

thread_local! {
    static POOL: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A buffer from [`prefaulted`]; dropping it returns it to the pool.
pub struct Buf(Vec<u8>);

impl std::ops::Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        // (Not while the thread is being torn down.)
        let _ = POOL.try_with(|p| p.borrow_mut().push(v));
    }
}

/// A RAM disk image with request counters, used by the littlefs and FAT adapters.
pub struct RamImage {
    pub data: Buf,
    pub c: Counters,
}

impl RamImage {
    pub fn new() -> RamImage {
        RamImage {
            data: prefaulted(DISK_BYTES),
            c: Counters::default(),
        }
    }

    /// One read request of `buf.len()` bytes at byte `off`.
    pub fn read(&mut self, off: usize, buf: &mut [u8]) -> bool {
        let Some(src) = self.data.get(off..off + buf.len()) else {
            return false;
        };
        buf.copy_from_slice(src);
        self.c.reads += 1;
        self.c.bytes_read += buf.len() as u64;
        true
    }

    /// One write request of `buf.len()` bytes at byte `off`.
    pub fn write(&mut self, off: usize, buf: &[u8]) -> bool {
        let Some(dst) = self.data.get_mut(off..off + buf.len()) else {
            return false;
        };
        dst.copy_from_slice(buf);
        self.c.writes += 1;
        self.c.bytes_written += buf.len() as u64;
        true
    }
}

/// Passes every request through to `D` and, when `volatile` is set, advertises a volatile
/// write cache with FUA, as SD cards, eMMC and NVMe drives have.
///
/// bonsaifs issues a flush (or a FUA write) only where a device with a write cache needs one;
/// over `RamDisk`'s own geometry (no volatile cache) it issues none at all, while littlefs
/// calls its `sync` callback and fatfs its stream `flush` whatever the device. Advertising a
/// write cache makes `flushes/op` comparable; the data path is the same `RamDisk`.
pub struct WriteCache<D> {
    inner: D,
    volatile: bool,
}

impl<D> WriteCache<D> {
    pub fn new(inner: D, volatile: bool) -> Self {
        WriteCache { inner, volatile }
    }
}

impl<'b, D: BlockDevice<'b>> BlockDevice<'b> for WriteCache<D> {
    fn geometry(&self) -> Geometry {
        let mut g = self.inner.geometry();
        if self.volatile {
            g.volatile_cache = true;
            g.fua = true;
        }
        g
    }
    fn submit(&mut self, req: Request<'b>) -> Result<(), Busy<'b>> {
        self.inner.submit(req)
    }
    fn poll(&mut self) -> Option<Completion<'b>> {
        self.inner.poll()
    }
    fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }
    fn read_now(&mut self, lba: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        self.inner.read_now(lba, buf)
    }
    fn write_now(&mut self, lba: u64, buf: &[u8]) -> Option<Result<(), IoError>> {
        self.inner.write_now(lba, buf)
    }
}
