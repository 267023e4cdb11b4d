//! A RAM disk over caller-provided memory: the smallest possible [`BlockDevice`].
//!
//! # Why it exists
//!
//! Firmware often wants a filesystem in SRAM or in a memory-mapped region (a scratch volume, a
//! test fixture, an image prepared in RAM before it is written out), and every layer of this
//! crate needs a device to run its unit tests on. Both want the same thing: no allocator, a
//! sector size chosen at run time, and the *same* submit / poll code path that queued hardware
//! uses, so that code tested here behaves identically on an NVMe or virtio disk.
//!
//! # How it keeps the contract
//!
//! A RAM disk has no queue, so it finishes every request inside [`BlockDevice::submit`]: the
//! data is copied at once and the finished [`Completion`] (which carries the buffer back) is
//! parked in a fixed-capacity ring until [`BlockDevice::poll`] hands it out. The ring's
//! capacity is the advertised queue depth; once that many completions are waiting, `submit`
//! answers [`Busy`] exactly as a full hardware queue would. Completions come out in submission
//! order, which is one of the orders the contract allows.
//!
//! Memory has no volatile cache, so every completed write is durable at once:
//! [`Geometry::volatile_cache`] is `false`, and FUA is accepted (and trivially honoured).
//!
//! Malformed requests (out of range, a buffer that is not a whole number of sectors, a write
//! to a read-only disk) are accepted and complete with the matching [`IoError`], the buffer
//! handed back, so errors travel the same path as data. Nothing the caller submits can make it
//! panic: every slice is taken with checked arithmetic and `get`.

use core::fmt;

use super::{BlockDevice, Busy, Command, Completion, Geometry, IoError, Request};

/// A no-queue block device over a caller's `&'m mut [u8]`.
///
/// `'m` is the lifetime of the storage, `'b` that of the request buffers that pass through it,
/// and `Q` the number of finished completions it can hold before `poll` must drain them (its
/// advertised queue depth, 1 ..= 65535; default 32).
///
/// The ring is a plain array of `Option<Completion>` (no destructor), so buffers may be
/// declared before or after the disk. A buffer handed to the disk comes back through the
/// [`Completion`] that returns it.
///
/// ```
/// use bonsaifs::device::{read_blocks, write_blocks, RamDisk};
///
/// let mut data = [0xA5u8; 512];
/// let mut back = [0u8; 512];
/// let mut storage = [0u8; 8 * 512];
/// let mut disk = RamDisk::new(&mut storage, 512).unwrap();
/// assert!(write_blocks(&mut disk, 3, &mut data, false).result.is_ok());
/// let done = read_blocks(&mut disk, 3, &mut back);
/// assert!(done.result.is_ok());
/// assert_eq!(done.buf.as_deref(), Some(&[0xA5u8; 512][..]));
/// assert_eq!(disk.storage()[3 * 512], 0xA5);
/// ```
pub struct RamDisk<'m, 'b, const Q: usize = 32> {
    storage: &'m mut [u8],
    sector_size: u32,
    sector_count: u64,
    read_only: bool,
    done: [Option<Completion<'b>>; Q],
    head: usize,
    len: usize,
}

impl<'m, 'b> RamDisk<'m, 'b> {
    /// A RAM disk over `storage` with the default queue depth.
    ///
    /// `sector_size` must be 512 or 4096 and `storage.len()` a whole (possibly zero) number of
    /// sectors; otherwise this returns [`IoError::BadBuffer`].
    pub fn new(storage: &'m mut [u8], sector_size: u32) -> Result<Self, IoError> {
        Self::with_queue_depth(storage, sector_size)
    }
}

impl<'m, 'b, const Q: usize> RamDisk<'m, 'b, Q> {
    /// Rejects, at compile time, a depth that [`Geometry::queue_depth`] cannot express.
    const DEPTH_FITS: () = assert!(
        Q >= 1 && Q <= u16::MAX as usize,
        "RamDisk queue depth must be in 1..=65535"
    );

    /// A RAM disk over `storage` whose queue depth is the const parameter `Q`.
    ///
    /// Same checks as [`RamDisk::new`]. Name the depth with a type annotation:
    /// `let d: RamDisk<'_, '_, 4> = RamDisk::with_queue_depth(&mut mem, 512)?;`
    pub fn with_queue_depth(storage: &'m mut [u8], sector_size: u32) -> Result<Self, IoError> {
        #[allow(clippy::let_unit_value)]
        let () = Self::DEPTH_FITS;
        if sector_size != 512 && sector_size != 4096 {
            return Err(IoError::BadBuffer);
        }
        let ss = sector_size as usize;
        if storage.len() % ss != 0 {
            return Err(IoError::BadBuffer);
        }
        let sector_count = (storage.len() / ss) as u64;
        Ok(Self {
            storage,
            sector_size,
            sector_count,
            read_only: false,
            done: [const { None }; Q],
            head: 0,
            len: 0,
        })
    }

    /// Makes the disk refuse (`true`) or accept (`false`) writes and discards.
    ///
    /// Refused requests complete with [`IoError::ReadOnly`]. The geometry's `read_only` flag
    /// follows; change it only while nothing is using the device.
    pub fn set_read_only(&mut self, read_only: bool) {
        self.read_only = read_only;
    }

    /// Builder form of [`RamDisk::set_read_only`].
    #[must_use]
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Whether the disk refuses writes.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The whole storage, to inspect an image after a test.
    pub fn storage(&self) -> &[u8] {
        self.storage
    }

    /// The whole storage, mutably, to prepare or damage an image behind the filesystem's back.
    pub fn storage_mut(&mut self) -> &mut [u8] {
        self.storage
    }

    /// Gives the storage back, dropping any completions not yet polled.
    pub fn into_storage(self) -> &'m mut [u8] {
        self.storage
    }

    /// The storage of the `bytes` bytes at sector `lba`: `OutOfRange` unless they lie on the
    /// disk, then `ReadOnly` if they are to be changed (`write`) and the disk refuses it. One
    /// check in `usize` arithmetic stands for the geometry's: the disk's `sector_count`
    /// sectors are exactly `storage.len()` bytes.
    fn disk(&mut self, lba: u64, bytes: usize, write: bool) -> Result<&mut [u8], IoError> {
        let start = usize::try_from(lba)
            .ok()
            .and_then(|l| l.checked_mul(self.sector_size as usize));
        let range = match start.and_then(|s| Some(s..s.checked_add(bytes)?)) {
            Some(r) if r.end <= self.storage.len() => r,
            _ => return Err(IoError::OutOfRange),
        };
        if write && self.read_only {
            return Err(IoError::ReadOnly);
        }
        // `range` is `bytes` long and inside the storage (checked above).
        self.storage.get_mut(range).ok_or(IoError::OutOfRange)
    }

    /// [`disk`](Self::disk) for a read or write buffer of `len` bytes, which must be a
    /// non-empty whole number of sectors (`BadBuffer` otherwise): the checks of
    /// [`check_range`](super::check_range), in the same order.
    fn sectors(&mut self, lba: u64, len: usize, write: bool) -> Result<&mut [u8], IoError> {
        // The sector size is 512 or 4096 (`with_queue_depth` checks): a mask, not a division.
        if len == 0 || len & (self.sector_size as usize - 1) != 0 {
            return Err(IoError::BadBuffer);
        }
        self.disk(lba, len, write)
    }

    /// Carries out one command against the storage; the buffer (if any) is returned with the
    /// result.
    fn execute(&mut self, command: Command<'b>) -> (Result<(), IoError>, Option<&'b mut [u8]>) {
        let (lba, buf, write) = match command {
            Command::Read { lba, buf } => (lba, buf, false),
            Command::Write { lba, buf, fua: _ } => (lba, buf, true),
            // Memory is stable media: there is nothing to flush.
            Command::Flush => return (Ok(()), None),
            Command::Discard { lba, count } => return (self.discard(lba, count), None),
        };
        (self.copy(lba, buf, write), Some(buf))
    }

    /// Copy `buf` to (`write`) or from the sectors at `lba`: one body for both directions.
    fn copy(&mut self, lba: u64, buf: &mut [u8], write: bool) -> Result<(), IoError> {
        let disk = self.sectors(lba, buf.len(), write)?;
        let (dst, src): (&mut [u8], &[u8]) = if write { (disk, buf) } else { (buf, disk) };
        dst.copy_from_slice(src);
        Ok(())
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        self.copy(lba, buf, false)
    }

    fn discard(&mut self, lba: u64, count: u64) -> Result<(), IoError> {
        let bytes = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(self.sector_size as usize))
            .ok_or(IoError::OutOfRange)?;
        self.disk(lba, bytes, true)?.fill(0);
        Ok(())
    }
}

impl<'b, const Q: usize> BlockDevice<'b> for RamDisk<'_, 'b, Q> {
    fn geometry(&self) -> Geometry {
        Geometry {
            sector_size: self.sector_size,
            sector_count: self.sector_count,
            // `DEPTH_FITS` guarantees the cast is lossless.
            queue_depth: Q as u16,
            volatile_cache: false,
            fua: true,
            atomic_write_sectors: 1,
            read_only: self.read_only,
        }
    }

    fn submit(&mut self, req: Request<'b>) -> Result<(), Busy<'b>> {
        if self.len >= Q {
            return Err(Busy(req));
        }
        let Request { tag, command } = req;
        let (result, buf) = self.execute(command);
        if let Some(slot) = self.done.get_mut((self.head + self.len) % Q) {
            *slot = Some(Completion { tag, result, buf });
            self.len += 1;
        }
        Ok(())
    }

    fn poll(&mut self) -> Option<Completion<'b>> {
        if self.len == 0 {
            return None;
        }
        let c = self.done.get_mut(self.head).and_then(Option::take);
        self.head = (self.head + 1) % Q;
        self.len -= 1;
        c
    }

    fn in_flight(&self) -> usize {
        self.len
    }

    /// Memory is read at once: the copy goes straight into the caller's buffer.
    fn read_now(&mut self, lba: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        Some(self.read(lba, buf))
    }

    /// Memory is written at once (and, having no volatile cache, is durable at once).
    fn write_now(&mut self, lba: u64, buf: &[u8]) -> Option<Result<(), IoError>> {
        Some(
            self.sectors(lba, buf.len(), true)
                .map(|disk| disk.copy_from_slice(buf)),
        )
    }
}

impl<const Q: usize> fmt::Debug for RamDisk<'_, '_, Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RamDisk")
            .field("sector_size", &self.sector_size)
            .field("sector_count", &self.sector_count)
            .field("queue_depth", &Q)
            .field("read_only", &self.read_only)
            .field("in_flight", &self.len)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{flush, read_blocks, run, write_blocks, CommandKind};
    use std::vec;
    use std::vec::Vec;

    // Buffers are declared before the disk in these tests: the disk's completion deque holds
    // `&'b mut [u8]`, so the buffers must strictly outlive it.

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn constructor_checks_sector_size_and_length() {
        let mut m = [0u8; 4096];
        assert!(RamDisk::new(&mut m, 512).is_ok());
        assert!(RamDisk::new(&mut m, 4096).is_ok());
        assert_eq!(RamDisk::new(&mut m, 1024).err(), Some(IoError::BadBuffer));
        assert_eq!(RamDisk::new(&mut m, 0).err(), Some(IoError::BadBuffer));
        let mut odd = [0u8; 1000];
        assert_eq!(RamDisk::new(&mut odd, 512).err(), Some(IoError::BadBuffer));
        let mut small = [0u8; 512];
        assert_eq!(
            RamDisk::new(&mut small, 4096).err(),
            Some(IoError::BadBuffer)
        );
        let mut empty = [0u8; 0];
        let d = RamDisk::new(&mut empty, 512).unwrap();
        assert_eq!(d.geometry().sector_count, 0);
    }

    #[test]
    fn geometry_reports_ram_properties() {
        let mut m = [0u8; 16 * 4096];
        let d: RamDisk<'_, '_, 4> = RamDisk::with_queue_depth(&mut m, 4096).unwrap();
        let g = d.geometry();
        assert_eq!(g.sector_size, 4096);
        assert_eq!(g.sector_count, 16);
        assert_eq!(g.queue_depth, 4);
        assert!(!g.volatile_cache);
        assert!(g.fua);
        assert!(!g.read_only);
        assert_eq!(g.capacity(), 16 * 4096);
        let mut m2 = [0u8; 512];
        assert_eq!(
            RamDisk::new(&mut m2, 512).unwrap().geometry().queue_depth,
            32
        );
    }

    #[test]
    fn write_then_read_back() {
        let mut w = pattern(7, 3 * 512);
        let mut r = vec![0u8; 3 * 512];
        let mut w2 = pattern(9, 512);
        let mut m = vec![0u8; 64 * 512];
        let mut d = RamDisk::new(&mut m, 512).unwrap();
        let c = write_blocks(&mut d, 10, &mut w, false);
        assert_eq!(c.result, Ok(()));
        assert_eq!(c.buf.map(|b| b.len()), Some(3 * 512));
        let c = read_blocks(&mut d, 10, &mut r);
        assert_eq!(c.result, Ok(()));
        assert_eq!(c.buf.as_deref(), Some(&pattern(7, 3 * 512)[..]));
        // Neighbours untouched, storage holds the bytes.
        assert!(d.storage()[..10 * 512].iter().all(|&b| b == 0));
        assert!(d.storage()[13 * 512..63 * 512].iter().all(|&b| b == 0));
        assert_eq!(&d.storage()[10 * 512..13 * 512], &pattern(7, 3 * 512)[..]);
        // FUA write and flush both succeed.
        assert_eq!(write_blocks(&mut d, 63, &mut w2, true).result, Ok(()));
        assert_eq!(flush(&mut d), Ok(()));
        assert_eq!(&d.storage()[63 * 512..], &pattern(9, 512)[..]);
        assert_eq!(d.in_flight(), 0);
    }

    #[test]
    fn storage_mut_is_seen_by_reads() {
        let mut r = [0u8; 512];
        let mut m = [0u8; 4 * 512];
        let mut d = RamDisk::new(&mut m, 512).unwrap();
        d.storage_mut()[512..1024].fill(0x5A);
        let c = read_blocks(&mut d, 1, &mut r);
        assert_eq!(c.result, Ok(()));
        assert_eq!(c.buf.as_deref(), Some(&[0x5A; 512][..]));
        let m = d.into_storage();
        assert_eq!(m[600], 0x5A);
        assert_eq!(m[100], 0);
    }

    #[test]
    fn errors_complete_with_buffer_returned() {
        let mut b1 = [1u8; 1024];
        let mut b2 = [1u8; 512];
        let mut b3 = [1u8; 100];
        let mut b4: [u8; 0] = [];
        let mut m = [0u8; 8 * 512];
        let mut d = RamDisk::new(&mut m, 512).unwrap();
        // Past the end.
        let c = read_blocks(&mut d, 7, &mut b1);
        assert_eq!(c.result, Err(IoError::OutOfRange));
        assert_eq!(
            c.buf.as_deref(),
            Some(&[1u8; 1024][..]),
            "buffer must be untouched"
        );
        // lba overflow.
        let c = write_blocks(&mut d, u64::MAX, &mut b2, false);
        assert_eq!(c.result, Err(IoError::OutOfRange));
        assert!(c.buf.is_some());
        // Not a whole number of sectors / empty.
        let c = write_blocks(&mut d, 0, &mut b3, false);
        assert_eq!(c.result, Err(IoError::BadBuffer));
        assert_eq!(c.buf.map(|b| b.len()), Some(100));
        let c = read_blocks(&mut d, 0, &mut b4);
        assert_eq!(c.result, Err(IoError::BadBuffer));
        assert!(c.buf.is_some());
        // Discards out of range.
        let c = run(&mut d, Command::Discard { lba: 5, count: 4 });
        assert_eq!(
            (c.result, c.buf.is_none()),
            (Err(IoError::OutOfRange), true)
        );
        let c = run(
            &mut d,
            Command::Discard {
                lba: u64::MAX,
                count: 2,
            },
        );
        assert_eq!(c.result, Err(IoError::OutOfRange));
        // Nothing was written by any failing request.
        assert!(d.storage().iter().all(|&b| b == 0));
    }

    #[test]
    fn read_only_refuses_writes_and_discards() {
        let mut b = [9u8; 512];
        let mut b2 = [9u8; 512];
        let mut r = [0u8; 512];
        let mut m = [3u8; 4 * 512];
        let mut d = RamDisk::new(&mut m, 512).unwrap().read_only(true);
        assert!(d.is_read_only());
        assert!(d.geometry().read_only);
        let c = write_blocks(&mut d, 0, &mut b, true);
        assert_eq!(c.result, Err(IoError::ReadOnly));
        assert!(c.buf.is_some());
        let c = run(&mut d, Command::Discard { lba: 0, count: 1 });
        assert_eq!(c.result, Err(IoError::ReadOnly));
        // Range errors are still reported as such.
        assert_eq!(
            run(&mut d, Command::Discard { lba: 4, count: 1 }).result,
            Err(IoError::OutOfRange)
        );
        let c = read_blocks(&mut d, 0, &mut r);
        assert_eq!(c.result, Ok(()));
        assert_eq!(c.buf.as_deref(), Some(&[3u8; 512][..]));
        assert_eq!(flush(&mut d), Ok(()));
        assert!(d.storage().iter().all(|&x| x == 3));
        d.set_read_only(false);
        assert!(!d.geometry().read_only);
        assert_eq!(write_blocks(&mut d, 0, &mut b2, false).result, Ok(()));
        assert_eq!(d.storage()[0], 9);
    }

    #[test]
    fn discard_zero_fills() {
        let mut m = [0xFFu8; 4 * 512];
        let mut d = RamDisk::new(&mut m, 512).unwrap();
        assert_eq!(
            run(&mut d, Command::Discard { lba: 1, count: 2 }).result,
            Ok(())
        );
        assert!(d.storage()[..512].iter().all(|&b| b == 0xFF));
        assert!(d.storage()[512..1536].iter().all(|&b| b == 0));
        assert!(d.storage()[1536..].iter().all(|&b| b == 0xFF));
        // An empty discard at the end is a valid no-op.
        assert_eq!(
            run(&mut d, Command::Discard { lba: 4, count: 0 }).result,
            Ok(())
        );
    }

    #[test]
    fn busy_when_completions_not_polled() {
        let mut bufs = [[1u8; 512], [2u8; 512], [3u8; 512]];
        let mut m = [0u8; 8 * 512];
        let mut d: RamDisk<'_, '_, 2> = RamDisk::with_queue_depth(&mut m, 512).unwrap();
        let [a, b, c] = &mut bufs;
        let w = |tag, lba, buf| Request {
            tag,
            command: Command::Write {
                lba,
                buf,
                fua: false,
            },
        };
        assert!(d.submit(w(1, 0, a)).is_ok());
        assert!(d.submit(w(2, 1, b)).is_ok());
        assert_eq!(d.in_flight(), 2);
        let Busy(back) = d.submit(w(3, 2, c)).unwrap_err();
        // The request comes back untouched and was not executed.
        assert_eq!(back.tag, 3);
        assert_eq!(back.command.kind(), CommandKind::Write);
        assert!(d.storage()[1024..1536].iter().all(|&b| b == 0));
        // Flushes are queued too.
        assert!(d
            .submit(Request {
                tag: 4,
                command: Command::Flush
            })
            .is_err());
        // Completions come back in order with their buffers.
        let c1 = d.poll().unwrap();
        assert_eq!((c1.tag, c1.result), (1, Ok(())));
        assert_eq!(c1.buf.map(|b| b[0]), Some(1));
        assert_eq!(d.in_flight(), 1);
        // Now there is room again.
        assert!(d.submit(back).is_ok());
        assert_eq!(d.poll().map(|c| c.tag), Some(2));
        let c3 = d.poll().unwrap();
        assert_eq!((c3.tag, c3.result), (3, Ok(())));
        assert!(d.poll().is_none());
        assert_eq!(d.in_flight(), 0);
        assert_eq!(d.storage()[1024], 3);
    }

    #[test]
    fn run_refuses_when_something_is_in_flight() {
        let mut b = [0u8; 512];
        let mut m = [0u8; 2 * 512];
        let mut d = RamDisk::new(&mut m, 512).unwrap();
        d.submit(Request {
            tag: 5,
            command: Command::Flush,
        })
        .unwrap();
        let c = read_blocks(&mut d, 0, &mut b);
        assert_eq!(c.result, Err(IoError::Unsupported));
        assert!(c.buf.is_some());
        assert_eq!(d.poll().map(|c| c.tag), Some(5));
    }

    #[test]
    fn works_with_4k_sectors() {
        let mut small = vec![0u8; 512];
        let mut w = pattern(3, 8192);
        let mut r = vec![0u8; 8192];
        let mut r2 = vec![0u8; 8192];
        let mut m = vec![0u8; 4 * 4096];
        let mut d = RamDisk::new(&mut m, 4096).unwrap();
        assert_eq!(
            write_blocks(&mut d, 0, &mut small, false).result,
            Err(IoError::BadBuffer)
        );
        assert_eq!(write_blocks(&mut d, 2, &mut w, false).result, Ok(()));
        let c = read_blocks(&mut d, 2, &mut r);
        assert_eq!(c.result, Ok(()));
        assert_eq!(c.buf.as_deref(), Some(&pattern(3, 8192)[..]));
        assert_eq!(
            read_blocks(&mut d, 3, &mut r2).result,
            Err(IoError::OutOfRange)
        );
    }

    #[test]
    fn debug_does_not_dump_storage() {
        let mut m = [0u8; 2 * 512];
        let d = RamDisk::new(&mut m, 512).unwrap();
        let s = std::format!("{d:?}");
        assert!(s.contains("sector_count: 2"), "{s}");
        assert!(s.len() < 200);
    }
}
