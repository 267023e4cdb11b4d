//! The RAM disks: 32 MiB of 512-byte sectors, one `Vec<u8>` per run, pre-faulted so that no
//! filesystem pays the kernel's first-touch page faults inside a measurement.
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
pub fn prefaulted(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    for i in (0..len).step_by(4096) {
        v[i] = std::hint::black_box(0);
    }
    v
}

/// A RAM disk image with request counters, used by the littlefs and FAT adapters.
pub struct RamImage {
    pub data: Vec<u8>,
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
