//! A host image file or raw block device (`/dev/sdX`, `/dev/loopN`) as a [`BlockDevice`].
//!
//! The driver is synchronous: [`submit`](BlockDevice::submit) does the I/O at once with
//! positioned reads and writes (`pread`/`pwrite`) and queues the completion, which
//! [`poll`](BlockDevice::poll) hands back. Up to [`QUEUE_DEPTH`] completions may wait to be
//! polled; beyond that `submit` answers [`Busy`].
//!
//! Durability follows the host: a plain write lands in the page cache (so the geometry reports
//! a volatile cache), [`Command::Flush`] is `fdatasync`, and a FUA write is a write followed by
//! `fdatasync`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bonsaifs::device::{check_range, BlockDevice, Busy, Command, Completion, Geometry, Request};
use bonsaifs::IoError;

/// How many completions may wait to be polled before [`submit`](BlockDevice::submit) answers
/// [`Busy`]; reported as [`Geometry::queue_depth`].
pub const QUEUE_DEPTH: u16 = 32;

/// A host file or raw block device used as a block device.
///
/// Implements [`BlockDevice<'b>`](BlockDevice) for every `'b`: buffers are only borrowed for
/// the duration of the copy inside `submit`, then returned with the completion.
#[derive(Debug)]
pub struct ImageFile<'b> {
    file: File,
    geo: Geometry,
    done: VecDeque<Completion<'b>>,
}

fn check_sector_size(sector_size: u32) -> io::Result<()> {
    if sector_size == 512 || sector_size == 4096 {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "sector size must be 512 or 4096",
        ))
    }
}

impl<'b> ImageFile<'b> {
    /// Create (or truncate) the file at `path`, `bytes` long (a whole number of sectors), and
    /// open it read-write. The new file reads as zeros.
    pub fn create(path: impl AsRef<Path>, bytes: u64, sector_size: u32) -> io::Result<Self> {
        check_sector_size(sector_size)?;
        if bytes == 0 || bytes % u64::from(sector_size) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "image size must be a non-zero whole number of sectors",
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(bytes)?;
        Self::from_file(file, sector_size, false)
    }

    /// Open an existing image file or raw block device read-write. The sector count is its
    /// size divided by `sector_size` (a partial last sector is ignored).
    pub fn open(path: impl AsRef<Path>, sector_size: u32) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Self::from_file(file, sector_size, false)
    }

    /// Open an existing image file or raw block device read-only: writes complete with
    /// [`IoError::ReadOnly`] and the geometry reports `read_only`.
    pub fn open_read_only(path: impl AsRef<Path>, sector_size: u32) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).open(path)?;
        Self::from_file(file, sector_size, true)
    }

    /// Use an already opened file. `read_only` must be true if `file` was not opened for
    /// writing. The size is found by seeking to the end, which also works for block devices
    /// (whose metadata report a length of zero).
    pub fn from_file(mut file: File, sector_size: u32, read_only: bool) -> io::Result<Self> {
        check_sector_size(sector_size)?;
        let bytes = file.seek(SeekFrom::End(0))?;
        let geo = Geometry {
            sector_size,
            sector_count: bytes / u64::from(sector_size),
            queue_depth: QUEUE_DEPTH,
            volatile_cache: true,
            fua: true,
            atomic_write_sectors: 0,
            read_only,
        };
        Ok(ImageFile {
            file,
            geo,
            done: VecDeque::with_capacity(usize::from(QUEUE_DEPTH)),
        })
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Give back the underlying file. Completions not yet polled are dropped (their I/O has
    /// already been done).
    pub fn into_file(self) -> File {
        self.file
    }

    fn offset(&self, lba: u64) -> Result<u64, IoError> {
        lba.checked_mul(u64::from(self.geo.sector_size))
            .ok_or(IoError::OutOfRange)
    }

    fn sync(&self) -> Result<(), IoError> {
        self.file.sync_data().map_err(|_| IoError::Media)
    }

    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(&self.geo, lba, buf.len())?;
        let off = self.offset(lba)?;
        self.file
            .read_exact_at(buf, off)
            .map_err(|_| IoError::Media)
    }

    fn write(&self, lba: u64, buf: &[u8], fua: bool) -> Result<(), IoError> {
        if self.geo.read_only {
            return Err(IoError::ReadOnly);
        }
        check_range(&self.geo, lba, buf.len())?;
        let off = self.offset(lba)?;
        self.file
            .write_all_at(buf, off)
            .map_err(|_| IoError::Media)?;
        if fua {
            self.sync()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), IoError> {
        if self.geo.read_only {
            // Nothing was written through this handle, so nothing needs to reach the media.
            return Ok(());
        }
        self.sync()
    }

    fn discard(&self, lba: u64, count: u64) -> Result<(), IoError> {
        if self.geo.read_only {
            return Err(IoError::ReadOnly);
        }
        match lba.checked_add(count) {
            // A hint only: the data is left in place, which "reads may return anything" allows.
            Some(end) if count != 0 && end <= self.geo.sector_count => Ok(()),
            _ => Err(IoError::OutOfRange),
        }
    }
}

impl<'b> BlockDevice<'b> for ImageFile<'b> {
    fn geometry(&self) -> Geometry {
        self.geo
    }

    fn submit(&mut self, req: Request<'b>) -> Result<(), Busy<'b>> {
        if self.done.len() >= usize::from(QUEUE_DEPTH) {
            return Err(Busy(req));
        }
        let Request { tag, command } = req;
        let (result, buf) = match command {
            Command::Read { lba, buf } => (self.read(lba, buf), Some(buf)),
            Command::Write { lba, buf, fua } => (self.write(lba, buf, fua), Some(buf)),
            Command::Flush => (self.flush(), None),
            Command::Discard { lba, count } => (self.discard(lba, count), None),
        };
        self.done.push_back(Completion { tag, result, buf });
        Ok(())
    }

    fn poll(&mut self) -> Option<Completion<'b>> {
        self.done.pop_front()
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }

    /// The file is read at once (`pread`), into the caller's buffer.
    fn read_now(&mut self, lba: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        Some(self.read(lba, buf))
    }

    /// The file is written at once (`pwrite`, not FUA), from the caller's buffer.
    fn write_now(&mut self, lba: u64, buf: &[u8]) -> Option<Result<(), IoError>> {
        Some(self.write(lba, buf, false))
    }
}

#[cfg(test)]
mod tests {
    //! A device holds its requests' buffers for its whole lifetime `'b`, so each test declares
    //! its buffers before the device, uses each buffer for one request, and checks read data
    //! through the buffer the completion hands back.

    use super::*;
    use bonsaifs::device::{flush, read_blocks, write_blocks};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::vec;
    use std::vec::Vec;

    /// A unique temporary path, removed on drop.
    struct TempPath(PathBuf);

    impl TempPath {
        fn new(name: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let file = std::format!("bonsaifs-hal-{}-{n}-{name}.img", std::process::id());
            TempPath(std::env::temp_dir().join(file))
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// `n` zeroed buffers of `len` bytes each.
    fn bufs(n: usize, len: usize) -> Vec<Vec<u8>> {
        vec![vec![0u8; len]; n]
    }

    #[test]
    fn the_synchronous_fast_path_matches_submit() {
        let p = TempPath::new("now");
        let mut b = bufs(1, 2 * 512);
        let mut dev = ImageFile::create(&p.0, 64 * 512, 512).unwrap();
        let data = pattern(1024, 9);
        assert_eq!(dev.write_now(3, &data), Some(Ok(())));
        let c = read_blocks(&mut dev, 3, &mut b[0]);
        assert_eq!(c.buf.as_deref(), Some(&data[..]));
        let mut back = vec![0u8; 1024];
        assert_eq!(dev.read_now(3, &mut back), Some(Ok(())));
        assert_eq!(back, data);
        assert_eq!(dev.read_now(63, &mut back), Some(Err(IoError::OutOfRange)));
        assert_eq!(dev.write_now(0, &data[..7]), Some(Err(IoError::BadBuffer)));
        assert_eq!(dev.in_flight(), 0);
    }

    #[test]
    fn geometry_from_size() {
        for ss in [512u32, 4096] {
            let p = TempPath::new("geo");
            let dev = ImageFile::create(&p.0, 64 * 4096, ss).unwrap();
            let g = dev.geometry();
            assert_eq!(g.sector_size, ss);
            assert_eq!(g.sector_count, 64 * 4096 / u64::from(ss));
            assert_eq!(g.queue_depth, QUEUE_DEPTH);
            assert!(g.volatile_cache && g.fua && !g.read_only);
        }
    }

    #[test]
    fn bad_sector_size_or_length() {
        let p = TempPath::new("bad");
        assert!(ImageFile::create(&p.0, 4096, 1024).is_err());
        assert!(ImageFile::create(&p.0, 1000, 512).is_err());
        assert!(ImageFile::create(&p.0, 0, 512).is_err());
        assert!(ImageFile::open(&p.0, 512).is_err(), "nothing was created");
    }

    #[test]
    fn write_read_back_flush() {
        let p = TempPath::new("rw");
        let mut w1 = pattern(3 * 512, 7);
        let mut w2 = pattern(512, 99);
        let mut r1 = vec![0u8; 3 * 512];
        let mut r2 = vec![0u8; 512];
        let mut r3 = vec![0xffu8; 512];
        let mut dev = ImageFile::create(&p.0, 128 * 512, 512).unwrap();

        let c = write_blocks(&mut dev, 5, &mut w1, false);
        assert_eq!(c.result, Ok(()));
        assert_eq!(
            c.buf.map(|b| b.len()),
            Some(3 * 512),
            "the buffer comes back"
        );
        assert_eq!(write_blocks(&mut dev, 100, &mut w2, true).result, Ok(()));
        assert_eq!(flush(&mut dev), Ok(()));

        let c = read_blocks(&mut dev, 5, &mut r1);
        assert_eq!(c.result, Ok(()));
        assert_eq!(c.buf.as_deref(), Some(&pattern(3 * 512, 7)[..]));
        let c = read_blocks(&mut dev, 100, &mut r2);
        assert_eq!(c.buf.as_deref(), Some(&pattern(512, 99)[..]));
        // Untouched sectors read as zeros.
        let c = read_blocks(&mut dev, 0, &mut r3);
        assert_eq!(c.result, Ok(()));
        assert!(c.buf.unwrap().iter().all(|&b| b == 0));
        assert_eq!(dev.in_flight(), 0);
    }

    #[test]
    fn out_of_range_and_bad_buffer() {
        let p = TempPath::new("range");
        let mut b = bufs(4, 4096);
        let mut two = vec![0u8; 2 * 4096];
        let mut odd = vec![0u8; 512];
        let mut empty: [u8; 0] = [];
        let mut dev = ImageFile::create(&p.0, 8 * 4096, 4096).unwrap();
        let mut b = b.iter_mut();
        let mut next = || b.next().unwrap().as_mut_slice();

        assert_eq!(
            read_blocks(&mut dev, 8, next()).result,
            Err(IoError::OutOfRange)
        );
        assert_eq!(
            read_blocks(&mut dev, u64::MAX, next()).result,
            Err(IoError::OutOfRange)
        );
        assert_eq!(
            write_blocks(&mut dev, 8, next(), false).result,
            Err(IoError::OutOfRange)
        );
        assert_eq!(
            read_blocks(&mut dev, 7, &mut two).result,
            Err(IoError::OutOfRange)
        );
        assert_eq!(
            read_blocks(&mut dev, 0, &mut odd).result,
            Err(IoError::BadBuffer)
        );
        let c = write_blocks(&mut dev, 0, &mut empty, false);
        assert_eq!(c.result, Err(IoError::BadBuffer));
        // The last sector is in range.
        assert_eq!(write_blocks(&mut dev, 7, next(), false).result, Ok(()));
    }

    #[test]
    fn persists_across_reopen() {
        let p = TempPath::new("persist");
        let mut w = pattern(2 * 512, 3);
        let mut r = vec![0u8; 2 * 512];
        let mut r_ro = vec![0u8; 2 * 512];
        let mut w_ro = vec![1u8; 512];
        {
            let mut dev = ImageFile::create(&p.0, 16 * 512, 512).unwrap();
            assert_eq!(write_blocks(&mut dev, 14, &mut w, false).result, Ok(()));
            assert_eq!(flush(&mut dev), Ok(()));
        }
        {
            let mut dev = ImageFile::open(&p.0, 512).unwrap();
            assert_eq!(dev.geometry().sector_count, 16);
            let c = read_blocks(&mut dev, 14, &mut r);
            assert_eq!(c.buf.as_deref(), Some(&pattern(2 * 512, 3)[..]));
        }
        let mut ro = ImageFile::open_read_only(&p.0, 512).unwrap();
        assert!(ro.geometry().read_only);
        let c = read_blocks(&mut ro, 14, &mut r_ro);
        assert_eq!(c.result, Ok(()));
        assert_eq!(c.buf.as_deref(), Some(&pattern(2 * 512, 3)[..]));
        assert_eq!(
            write_blocks(&mut ro, 0, &mut w_ro, false).result,
            Err(IoError::ReadOnly)
        );
        assert_eq!(flush(&mut ro), Ok(()));
    }

    #[test]
    fn queue_fills_then_busy() {
        let p = TempPath::new("queue");
        let depth = usize::from(QUEUE_DEPTH);
        let mut bufs: Vec<Vec<u8>> = (0..depth).map(|i| vec![i as u8; 512]).collect();
        let mut dev = ImageFile::create(&p.0, 64 * 512, 512).unwrap();
        for (tag, buf) in (0u32..).zip(bufs.iter_mut()) {
            let lba = u64::from(tag);
            let req = Request {
                tag,
                command: Command::Write {
                    lba,
                    buf,
                    fua: false,
                },
            };
            assert!(dev.submit(req).is_ok());
        }
        assert_eq!(dev.in_flight(), depth);
        let extra = Request {
            tag: 999,
            command: Command::Flush,
        };
        let Err(Busy(back)) = dev.submit(extra) else {
            panic!("queue should be full")
        };
        assert_eq!(back.tag, 999);
        let mut tags = Vec::new();
        while let Some(c) = dev.poll() {
            assert_eq!(c.result, Ok(()));
            let buf = c.buf.unwrap();
            assert!(buf.iter().all(|&b| usize::from(b) == tags.len()));
            tags.push(c.tag);
        }
        assert_eq!(tags, (0..u32::from(QUEUE_DEPTH)).collect::<Vec<_>>());
        assert!(dev.submit(back).is_ok());
        assert_eq!(dev.poll().map(|c| (c.tag, c.result)), Some((999, Ok(()))));
        assert!(dev.poll().is_none());
    }

    #[test]
    fn discard_is_a_checked_hint() {
        fn discard(dev: &mut ImageFile<'_>, lba: u64, count: u64) -> Result<(), IoError> {
            let req = Request {
                tag: 1,
                command: Command::Discard { lba, count },
            };
            assert!(dev.submit(req).is_ok());
            dev.poll().unwrap().result
        }
        let p = TempPath::new("discard");
        let mut dev = ImageFile::create(&p.0, 8 * 512, 512).unwrap();
        assert_eq!(discard(&mut dev, 0, 8), Ok(()));
        assert_eq!(discard(&mut dev, 4, 5), Err(IoError::OutOfRange));
    }
}
