//! bonsaifs over `Trace<WriteCache<RamDisk>>`.

use bonsaifs::device::{RamDisk, Trace};
use bonsaifs::fs::{Fd, Fs, OpenFlags};
use bonsaifs::volume::{memory_needed, FormatOptions};

use crate::ram::{prefaulted, WriteCache, BLOCK, DISK_BYTES, SECTOR};
use crate::stats::{Acc, Counters, Meter, Row};
use crate::{Params, Res};

pub const NAME: &str = "bonsaifs";
/// Block-cache slots (4 KiB each).
pub const SLOTS: usize = 32;

type Dev<'b> = Trace<WriteCache<RamDisk<'b, 'b>>>;
type BFs<'b> = Fs<'b, Dev<'b>, SLOTS>;

/// Bytes of caller memory the mounted filesystem uses (cache + sector buffer + the `Fs`).
pub fn ram_bytes() -> usize {
    memory_needed(SECTOR, BLOCK, SLOTS) + core::mem::size_of::<BFs<'static>>()
}

fn counters(fs: &BFs<'_>) -> Counters {
    fs.volume().device().counters().into()
}

/// Format a fresh disk and run `f` on it.
fn with_fs<R>(p: &Params, f: impl FnOnce(&mut BFs<'_>) -> Res<R>) -> Res<R> {
    let mut disk = prefaulted(DISK_BYTES);
    let mut mem = prefaulted(memory_needed(SECTOR, BLOCK, SLOTS));
    let dev = Trace::new(WriteCache::new(
        RamDisk::new(&mut disk, SECTOR as u32)?,
        p.volatile_cache,
    ));
    let mut fs: BFs<'_> = Fs::format(dev, &mut mem, FormatOptions::default())?;
    let r = f(&mut fs)?;
    fs.unmount()?;
    Ok(r)
}

fn write_all(fs: &mut BFs<'_>, fd: Fd, mut data: &[u8]) -> Res<()> {
    while !data.is_empty() {
        let n = fs.write(fd, data)?;
        if n == 0 {
            return Err("bonsaifs: write returned 0".into());
        }
        data = &data[n..];
    }
    Ok(())
}

fn write_all_at(fs: &mut BFs<'_>, fd: Fd, mut off: u64, mut data: &[u8]) -> Res<()> {
    while !data.is_empty() {
        let n = fs.write_at(fd, off, data)?;
        if n == 0 {
            return Err("bonsaifs: write_at returned 0".into());
        }
        data = &data[n..];
        off += n as u64;
    }
    Ok(())
}

fn read_exact(fs: &mut BFs<'_>, fd: Fd, mut buf: &mut [u8]) -> Res<()> {
    while !buf.is_empty() {
        let n = fs.read(fd, buf)?;
        if n == 0 {
            return Err("bonsaifs: unexpected end of file".into());
        }
        buf = &mut buf[n..];
    }
    Ok(())
}

const RW_CREATE: OpenFlags = OpenFlags::READ
    .union(OpenFlags::WRITE)
    .union(OpenFlags::CREATE);

/// Write `len` bytes of `chunk` repeated to a new file at `path` and make it durable.
fn fill_file(fs: &mut BFs<'_>, path: &str, len: usize, chunk: &[u8]) -> Res<()> {
    let fd = fs.open(path, RW_CREATE)?;
    for _ in 0..len / chunk.len() {
        write_all(fs, fd, chunk)?;
    }
    fs.fsync(fd)?;
    fs.close(fd)?;
    Ok(())
}

/// Workload 1: sequential write (4 KiB writes, then fsync + close), then sequential read.
pub fn seq(p: &Params) -> Res<Vec<Row>> {
    with_fs(p, |fs| {
        let chunk = crate::pattern(p.io, 1);
        let n = p.file_bytes / p.io;
        let m = Meter::start(counters(fs));
        let fd = fs.open("/seq", RW_CREATE)?;
        for _ in 0..n {
            write_all(fs, fd, &chunk)?;
        }
        fs.fsync(fd)?;
        fs.close(fd)?;
        let w = m.stop(counters(fs), n as u64);

        let mut back = crate::ram::prefaulted(p.file_bytes);
        let m = Meter::start(counters(fs));
        let fd = fs.open("/seq", OpenFlags::READ)?;
        for b in back.chunks_mut(p.io) {
            read_exact(fs, fd, b)?;
        }
        fs.close(fd)?;
        let r = m.stop(counters(fs), n as u64);
        crate::check_repeated(NAME, &back, &chunk)?;
        Ok(vec![
            Row::new(p.seq_write(), NAME, w),
            Row::new(p.seq_read(), NAME, r),
        ])
    })
}

/// Workload 2: random aligned 4 KiB overwrites of an existing file, each followed by fsync.
pub fn rand_overwrite(p: &Params, offsets: &[u64]) -> Res<Row> {
    with_fs(p, |fs| {
        fill_file(fs, "/rand", p.file_bytes, &crate::pattern(p.io, 2))?;
        fs.sync_all()?;
        let chunk = crate::pattern(p.io, 3);
        let m = Meter::start(counters(fs));
        let fd = fs.open("/rand", OpenFlags::READ | OpenFlags::WRITE)?;
        for &off in offsets {
            write_all_at(fs, fd, off, &chunk)?;
            fs.fsync(fd)?;
        }
        fs.close(fd)?;
        let o = m.stop(counters(fs), offsets.len() as u64);
        Ok(Row::new(p.rand_overwrite(), NAME, o))
    })
}

/// Workload 3: append + fsync, repeated.
pub fn append(p: &Params) -> Res<Row> {
    with_fs(p, |fs| {
        let rec = crate::pattern(p.append_len, 4);
        let m = Meter::start(counters(fs));
        let fd = fs.open("/log", RW_CREATE | OpenFlags::APPEND)?;
        for _ in 0..p.appends {
            write_all(fs, fd, &rec)?;
            fs.fsync(fd)?;
        }
        fs.close(fd)?;
        let o = m.stop(counters(fs), p.appends as u64);
        if fs.stat("/log")?.size != (p.appends * p.append_len) as u64 {
            return Err("bonsaifs: wrong log size".into());
        }
        Ok(Row::new(p.append(), NAME, o))
    })
}

/// Workloads 4 and 5: create `n` small files in one directory (then one `sync_all`), then
/// stat every one. Either phase gives up after `p.budget`.
pub fn files(p: &Params, n: usize) -> Res<Vec<Row>> {
    with_fs(p, |fs| {
        fs.mkdir("/d")?;
        fs.sync_all()?;
        let data = crate::pattern(p.small_len, 5);
        let m = Meter::start(counters(fs));
        let deadline = std::time::Instant::now() + p.budget;
        for i in 0..n {
            let fd = fs.open(&crate::small_name(i), RW_CREATE | OpenFlags::EXCL)?;
            write_all(fs, fd, &data)?;
            fs.close(fd)?;
            if std::time::Instant::now() > deadline {
                return Ok(crate::too_slow(p, n, NAME, i + 1));
            }
        }
        fs.sync_all()?;
        let c = m.stop(counters(fs), n as u64);

        let m = Meter::start(counters(fs));
        let deadline = std::time::Instant::now() + p.budget;
        for i in 0..n {
            let st = fs.stat(&crate::small_name(i))?;
            if st.size != p.small_len as u64 {
                return Err(
                    format!("bonsaifs: {} has size {}", crate::small_name(i), st.size).into(),
                );
            }
            if std::time::Instant::now() > deadline {
                return Ok(vec![
                    Row::new(p.create(n), NAME, c),
                    Row::new(p.stat(n), NAME, crate::skipped(p, i + 1)),
                ]);
            }
        }
        let s = m.stop(counters(fs), n as u64);
        Ok(vec![
            Row::new(p.create(n), NAME, c),
            Row::new(p.stat(n), NAME, s),
        ])
    })
}

/// Workload 6: a populated volume is unmounted and mounted again, then the first write after
/// the mount (a new 4 KiB file + fsync), then statfs; `p.remounts` cycles.
pub fn remount(p: &Params) -> Res<Vec<Row>> {
    let mut disk = prefaulted(DISK_BYTES);
    let one = memory_needed(SECTOR, BLOCK, SLOTS);
    // Each mount borrows its cache memory for as long as the device lives: one region each.
    let mut pool = prefaulted(one * (p.remounts + 1));
    let mut mems = pool.chunks_exact_mut(one);
    let dev = Trace::new(WriteCache::new(
        RamDisk::new(&mut disk, SECTOR as u32)?,
        p.volatile_cache,
    ));
    let mut fs: BFs<'_> = Fs::format(dev, mems.next().ok_or("pool")?, FormatOptions::default())?;
    fill_file(&mut fs, "/big", p.file_bytes, &crate::pattern(p.io, 6))?;
    fs.mkdir("/d")?;
    let data = crate::pattern(p.small_len, 7);
    for i in 0..p.small_files {
        let fd = fs.open(&crate::small_name(i), RW_CREATE)?;
        write_all(&mut fs, fd, &data)?;
        fs.close(fd)?;
    }
    fs.sync_all()?;

    let chunk = crate::pattern(p.io, 8);
    let (mut mount, mut first, mut statfs) = (Acc::default(), Acc::default(), Acc::default());
    let mut free = 0;
    for i in 0..p.remounts {
        let m = Meter::start(counters(&fs));
        let dev = fs.unmount()?;
        fs = Fs::mount(dev, mems.next().ok_or("pool")?)?;
        mount.add(m.stop(counters(&fs), 1));

        let m = Meter::start(counters(&fs));
        let fd = fs.open(&format!("/boot{i}.log"), RW_CREATE)?;
        write_all(&mut fs, fd, &chunk)?;
        fs.fsync(fd)?;
        fs.close(fd)?;
        first.add(m.stop(counters(&fs), 1));

        let m = Meter::start(counters(&fs));
        let s = std::hint::black_box(fs.statfs());
        statfs.add(m.stop(counters(&fs), 1));
        free = s.free_blocks;
    }
    fs.unmount()?;
    if free == 0 {
        return Err("bonsaifs: statfs reports no free blocks".into());
    }
    Ok(vec![
        Row::new(p.remount(), NAME, mount.into()),
        Row::new(p.first_write(), NAME, first.into()),
        Row::new(p.statfs(), NAME, statfs.into()),
    ])
}
