//! FAT (the `fatfs` 0.3 crate) over [`FatDisk`], a `std::io` stream on the counting
//! [`RamImage`] with a one-sector write-back window.
//!
//! fatfs has no cache of its own and moves bytes, not sectors: it seeks before every access
//! and reads a FAT entry (2 or 4 bytes) or a directory entry (32 bytes) at a time. Counting
//! each such call as a device request would charge FAT for the crate's missing cache, and
//! `fscommon::BufStream` (the buffer fatfs's README suggests) does not help, since it drops
//! its buffer on every seek. So `FatDisk` does what ChaN's FatFs does with one sector window
//! (`FF_FS_TINY`): accesses inside the cached 512-byte sector are free; touching another
//! sector writes the window back if it is dirty and reads the new sector; a run of whole
//! sectors moves as one request, around the window. `flush` writes the window back and is
//! then counted as a flush.

use std::cell::RefCell;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::rc::Rc;

use fatfs::{Date, DateTime, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider};

use crate::ram::{RamImage, BLOCK, DISK_BYTES, SECTOR};
use crate::stats::{Acc, Counters, Meter, Outcome, Row};
use crate::{Params, Res};

pub const NAME: &str = "FAT";

/// A `std::io` stream over a shared, counting RAM image, through a one-sector window.
pub struct FatDisk {
    img: Rc<RefCell<RamImage>>,
    pos: u64,
    win: [u8; SECTOR],
    win_sector: Option<u64>,
    dirty: bool,
}

fn io_err(what: &str) -> io::Error {
    io::Error::other(format!("FatDisk: {what} out of range"))
}

impl FatDisk {
    pub fn new(img: Rc<RefCell<RamImage>>) -> FatDisk {
        FatDisk {
            img,
            pos: 0,
            win: [0; SECTOR],
            win_sector: None,
            dirty: false,
        }
    }

    fn write_back(&mut self) -> io::Result<()> {
        if let (true, Some(s)) = (self.dirty, self.win_sector) {
            if !self.img.borrow_mut().write(s as usize * SECTOR, &self.win) {
                return Err(io_err("write-back"));
            }
            self.dirty = false;
        }
        Ok(())
    }

    /// Make `sector` the window's sector.
    fn load(&mut self, sector: u64) -> io::Result<()> {
        if self.win_sector == Some(sector) {
            return Ok(());
        }
        self.write_back()?;
        self.win_sector = None;
        if !self
            .img
            .borrow_mut()
            .read(sector as usize * SECTOR, &mut self.win)
        {
            return Err(io_err("read"));
        }
        self.win_sector = Some(sector);
        Ok(())
    }

    /// Whether the window holds one of the `count` sectors from `first`.
    fn window_in(&self, first: u64, count: u64) -> bool {
        self.win_sector
            .is_some_and(|s| s >= first && s < first + count)
    }

    /// Bytes left on the disk from the current position, at most `want`.
    fn clamp(&self, want: usize) -> usize {
        let len = self.img.borrow().data.len() as u64;
        want.min(len.saturating_sub(self.pos) as usize)
    }
}

impl Read for FatDisk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.clamp(buf.len());
        let mut done = 0;
        while done < n {
            let (sector, off) = (
                self.pos / SECTOR as u64,
                (self.pos % SECTOR as u64) as usize,
            );
            let whole = (n - done) / SECTOR;
            if off == 0 && whole > 0 {
                // Whole sectors in one request; a dirty window among them goes out first.
                if self.window_in(sector, whole as u64) {
                    self.write_back()?;
                }
                let len = whole * SECTOR;
                if !self
                    .img
                    .borrow_mut()
                    .read(self.pos as usize, &mut buf[done..done + len])
                {
                    return Err(io_err("read"));
                }
                done += len;
                self.pos += len as u64;
            } else {
                self.load(sector)?;
                let m = (SECTOR - off).min(n - done);
                buf[done..done + m].copy_from_slice(&self.win[off..off + m]);
                done += m;
                self.pos += m as u64;
            }
        }
        Ok(n)
    }
}

impl Write for FatDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.clamp(buf.len());
        let mut done = 0;
        while done < n {
            let (sector, off) = (
                self.pos / SECTOR as u64,
                (self.pos % SECTOR as u64) as usize,
            );
            let whole = (n - done) / SECTOR;
            if off == 0 && whole > 0 {
                // Whole sectors in one request; a window among them is now stale.
                if self.window_in(sector, whole as u64) {
                    self.win_sector = None;
                    self.dirty = false;
                }
                let len = whole * SECTOR;
                if !self
                    .img
                    .borrow_mut()
                    .write(self.pos as usize, &buf[done..done + len])
                {
                    return Err(io_err("write"));
                }
                done += len;
                self.pos += len as u64;
            } else {
                // Part of a sector: read-modify-write through the window.
                self.load(sector)?;
                let m = (SECTOR - off).min(n - done);
                self.win[off..off + m].copy_from_slice(&buf[done..done + m]);
                self.dirty = true;
                done += m;
                self.pos += m as u64;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_back()?;
        self.img.borrow_mut().c.flushes += 1;
        Ok(())
    }
}

impl Seek for FatDisk {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let len = self.img.borrow().data.len() as i64;
        let p = match to {
            SeekFrom::Start(n) => n as i64,
            SeekFrom::End(d) => len + d,
            SeekFrom::Current(d) => self.pos as i64 + d,
        };
        if p < 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "seek before 0"));
        }
        self.pos = p as u64;
        Ok(self.pos)
    }
}

impl Drop for FatDisk {
    /// fatfs's unmount does not flush its stream: the window is written back here, as a
    /// driver's unmount would (counted as a write, not a flush).
    fn drop(&mut self) {
        let _ = self.write_back();
    }
}

/// No clock: bonsaifs and littlefs keep no times in this bench either.
#[derive(Debug)]
struct NoClock;

impl TimeProvider for NoClock {
    fn get_current_date(&self) -> Date {
        Date {
            year: 1980,
            month: 1,
            day: 1,
        }
    }
    fn get_current_date_time(&self) -> DateTime {
        DateTime {
            date: self.get_current_date(),
            time: Time {
                hour: 0,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
}

static NO_CLOCK: NoClock = NoClock;

type Fat = FileSystem<FatDisk>;

/// RAM the mounted filesystem uses (the `FileSystem` struct, with the 512-byte window).
pub fn ram_bytes() -> usize {
    std::mem::size_of::<Fat>()
}

struct Vol {
    img: Rc<RefCell<RamImage>>,
}

impl Vol {
    /// A freshly formatted disk (4 KiB clusters; fatfs picks FAT16 or FAT32).
    fn format() -> Res<Vol> {
        let img = Rc::new(RefCell::new(RamImage::new()));
        {
            let mut s = FatDisk::new(img.clone());
            fatfs::format_volume(
                &mut s,
                FormatVolumeOptions::new()
                    .bytes_per_cluster(BLOCK as u32)
                    .bytes_per_sector(SECTOR as u16)
                    .total_sectors((DISK_BYTES / SECTOR) as u32),
            )?;
            s.flush()?;
        }
        img.borrow_mut().c = Counters::default();
        Ok(Vol { img })
    }

    fn mount(&self) -> Res<Fat> {
        Ok(FileSystem::new(
            FatDisk::new(self.img.clone()),
            FsOptions::new().time_provider(&NO_CLOCK),
        )?)
    }

    fn counters(&self) -> Counters {
        self.img.borrow().c
    }
}

/// The FAT type fatfs chose for the disk, for the report.
pub fn fat_type() -> Res<String> {
    let v = Vol::format()?;
    let fs = v.mount()?;
    let t = format!("{:?}", fs.fat_type());
    fs.unmount()?;
    Ok(t)
}

/// `fatfs` paths are relative to the directory: drop the leading slash.
fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

fn fill_file(fs: &Fat, path: &str, len: usize, chunk: &[u8]) -> Res<()> {
    let mut f = fs.root_dir().create_file(rel(path))?;
    for _ in 0..len / chunk.len() {
        f.write_all(chunk)?;
    }
    f.flush()?;
    Ok(())
}

/// Workload 1: sequential write (4 KiB writes, then close = flush), then sequential read.
pub fn seq(p: &Params) -> Res<Vec<Row>> {
    let v = Vol::format()?;
    let fs = v.mount()?;
    let chunk = crate::pattern(p.io, 1);
    let n = p.file_bytes / p.io;
    let m = Meter::start(v.counters());
    {
        let mut f = fs.root_dir().create_file("seq")?;
        for _ in 0..n {
            f.write_all(&chunk)?;
        }
        // Dropping the file flushes it (fatfs's close).
    }
    let w = m.stop(v.counters(), n as u64);

    let mut back = crate::ram::prefaulted(p.file_bytes);
    let m = Meter::start(v.counters());
    {
        let mut f = fs.root_dir().open_file("seq")?;
        for b in back.chunks_mut(p.io) {
            f.read_exact(b)?;
        }
    }
    let r = m.stop(v.counters(), n as u64);
    crate::check_repeated(NAME, &back, &chunk)?;
    fs.unmount()?;
    Ok(vec![
        Row::new(p.seq_write(), NAME, w),
        Row::new(p.seq_read(), NAME, r),
    ])
}

/// Workload 2: random aligned 4 KiB overwrites, each followed by a flush of the file.
pub fn rand_overwrite(p: &Params, offsets: &[u64]) -> Res<Row> {
    let v = Vol::format()?;
    let fs = v.mount()?;
    fill_file(&fs, "/rand", p.file_bytes, &crate::pattern(p.io, 2))?;
    let chunk = crate::pattern(p.io, 3);
    let m = Meter::start(v.counters());
    {
        let mut f = fs.root_dir().open_file("rand")?;
        for &off in offsets {
            f.seek(SeekFrom::Start(off))?;
            f.write_all(&chunk)?;
            f.flush()?;
        }
    }
    let o = m.stop(v.counters(), offsets.len() as u64);
    fs.unmount()?;
    Ok(Row::new(p.rand_overwrite(), NAME, o))
}

/// Workload 3: append + flush, repeated.
pub fn append(p: &Params) -> Res<Row> {
    let v = Vol::format()?;
    let fs = v.mount()?;
    let rec = crate::pattern(p.append_len, 4);
    let m = Meter::start(v.counters());
    {
        let mut f = fs.root_dir().create_file("log")?;
        f.seek(SeekFrom::End(0))?;
        for _ in 0..p.appends {
            f.write_all(&rec)?;
            f.flush()?;
        }
    }
    let o = m.stop(v.counters(), p.appends as u64);
    if stat(&fs, "/log")? != (p.appends * p.append_len) as u64 {
        return Err("FAT: wrong log size".into());
    }
    fs.unmount()?;
    Ok(Row::new(p.append(), NAME, o))
}

/// Size of the file at `path`: fatfs has no stat, so open it (the same directory scan FatFs's
/// `f_stat` does) and seek to its end, which needs no I/O.
fn stat(fs: &Fat, path: &str) -> Res<u64> {
    let mut f = fs.root_dir().open_file(rel(path))?;
    let size = f.seek(SeekFrom::End(0))?;
    // Dropping a fatfs `File` flushes the device; a stat must not. It owns no memory.
    std::mem::forget(f);
    Ok(size)
}

/// Workloads 4 and 5: create `n` small files in one directory (each close flushes), then stat
/// every one. Either phase gives up after `p.budget`.
pub fn files(p: &Params, n: usize) -> Res<Vec<Row>> {
    let v = Vol::format()?;
    let fs = v.mount()?;
    fs.root_dir().create_dir("d")?;
    // Every non-empty file takes at least one cluster: say so rather than fail half-way.
    let free = fs.stats()?.free_clusters() as usize;
    if n > free {
        let why = format!(
            "skipped (no space: {n} files need {n} clusters of {} KiB, {free} free)",
            BLOCK / 1024
        );
        return Ok(vec![
            Row::new(p.create(n), NAME, Outcome::Skipped(why.clone())),
            Row::new(p.stat(n), NAME, Outcome::Skipped(why)),
        ]);
    }
    let data = crate::pattern(p.small_len, 5);
    let m = Meter::start(v.counters());
    let deadline = std::time::Instant::now() + p.budget;
    for i in 0..n {
        {
            let mut f = fs.root_dir().create_file(rel(&crate::small_name(i)))?;
            f.write_all(&data)?;
        }
        if std::time::Instant::now() > deadline {
            return Ok(crate::too_slow(p, n, NAME, i + 1));
        }
    }
    let c = m.stop(v.counters(), n as u64);

    let m = Meter::start(v.counters());
    let deadline = std::time::Instant::now() + p.budget;
    for i in 0..n {
        let size = stat(&fs, &crate::small_name(i))?;
        if size != p.small_len as u64 {
            return Err(format!("FAT: {} has size {size}", crate::small_name(i)).into());
        }
        if std::time::Instant::now() > deadline {
            return Ok(vec![
                Row::new(p.create(n), NAME, c),
                Row::new(p.stat(n), NAME, crate::skipped(p, i + 1)),
            ]);
        }
    }
    let s = m.stop(v.counters(), n as u64);
    fs.unmount()?;
    Ok(vec![
        Row::new(p.create(n), NAME, c),
        Row::new(p.stat(n), NAME, s),
    ])
}

/// Workload 6: unmount + mount of a populated volume, the first write (a new 4 KiB file,
/// closed = flushed), then statfs (`FileSystem::stats`); `p.remounts` cycles.
pub fn remount(p: &Params) -> Res<Vec<Row>> {
    let v = Vol::format()?;
    let mut fs = v.mount()?;
    fill_file(&fs, "/big", p.file_bytes, &crate::pattern(p.io, 6))?;
    fs.root_dir().create_dir("d")?;
    let data = crate::pattern(p.small_len, 7);
    for i in 0..p.small_files {
        let mut f = fs.root_dir().create_file(rel(&crate::small_name(i)))?;
        f.write_all(&data)?;
    }
    let chunk = crate::pattern(p.io, 8);
    let (mut mount, mut first, mut statfs) = (Acc::default(), Acc::default(), Acc::default());
    let mut free = 0;
    for i in 0..p.remounts {
        let m = Meter::start(v.counters());
        fs.unmount()?;
        fs = v.mount()?;
        mount.add(m.stop(v.counters(), 1));

        let m = Meter::start(v.counters());
        {
            let mut f = fs.root_dir().create_file(&format!("boot{i}.log"))?;
            f.write_all(&chunk)?;
        }
        first.add(m.stop(v.counters(), 1));

        let m = Meter::start(v.counters());
        free = std::hint::black_box(fs.stats()?).free_clusters();
        statfs.add(m.stop(v.counters(), 1));
    }
    fs.unmount()?;
    if free == 0 {
        return Err("FAT: stats reports no free clusters".into());
    }
    Ok(vec![
        Row::new(p.remount(), NAME, mount.into()),
        Row::new(p.first_write(), NAME, first.into()),
        Row::new(p.statfs(), NAME, statfs.into()),
    ])
}
