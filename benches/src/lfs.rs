//! littlefs (the C library as built by the `littlefs2` crate, used through its `ll` bindings)
//! over a counting [`RamImage`].
//!
//! Why the raw `ll` API and not `littlefs2::fs::Filesystem`: the wrapper's `lfs_config.sync`
//! callback is a private no-op and its `Storage` trait has no `sync`, so a flush could not be
//! counted. Here the bench owns the `lfs_config`, so `read` / `prog` / `erase` / `sync` are
//! all counted (an erase is a request that moves no bytes on a RAM disk; a sync is a flush).
//!
//! Geometry: 4 KiB blocks over the 512-byte-sector disk; read and prog size 512 (the sector:
//! the finest unit a block device transfers), a 4 KiB read cache, prog cache and per-file cache,
//! and a 1 KiB lookahead bitmap (8192 blocks: the whole disk). `block_cycles = -1` (no wear
//! levelling: it is a block device, not raw flash).

use std::ffi::{c_int, c_void, CString};

use littlefs2::ll;

use crate::ram::{RamImage, BLOCK, DISK_BYTES, SECTOR};
use crate::stats::{Acc, Counters, Meter, Row};
use crate::{Params, Res};

pub const NAME: &str = "littlefs";
const CACHE: usize = BLOCK;
const LOOKAHEAD: usize = DISK_BYTES / BLOCK / 8;

/// RAM the mounted filesystem uses: read + prog cache, lookahead, `lfs_t`, `lfs_config`, plus
/// one file (its cache and `lfs_file_t`).
pub fn ram_bytes() -> usize {
    2 * CACHE
        + LOOKAHEAD
        + std::mem::size_of::<ll::lfs_t>()
        + std::mem::size_of::<ll::lfs_config>()
        + CACHE
        + std::mem::size_of::<ll::lfs_file_t>()
}

unsafe fn image<'a>(c: *const ll::lfs_config) -> &'a mut RamImage {
    // SAFETY: `context` is the `Box<RamImage>` owned by the `Lfs` whose `lfs_t` is running
    // this callback; nothing else touches the image while littlefs runs.
    unsafe { &mut *((*c).context as *mut RamImage) }
}

unsafe extern "C" fn cb_read(
    c: *const ll::lfs_config,
    block: ll::lfs_block_t,
    off: ll::lfs_off_t,
    buf: *mut c_void,
    size: ll::lfs_size_t,
) -> c_int {
    // SAFETY: littlefs hands a buffer of `size` bytes.
    let (img, buf) = unsafe {
        (
            image(c),
            std::slice::from_raw_parts_mut(buf as *mut u8, size as usize),
        )
    };
    if img.read(block as usize * BLOCK + off as usize, buf) {
        0
    } else {
        ll::lfs_error_LFS_ERR_IO
    }
}

unsafe extern "C" fn cb_prog(
    c: *const ll::lfs_config,
    block: ll::lfs_block_t,
    off: ll::lfs_off_t,
    buf: *const c_void,
    size: ll::lfs_size_t,
) -> c_int {
    // SAFETY: littlefs hands a buffer of `size` bytes.
    let (img, buf) = unsafe {
        (
            image(c),
            std::slice::from_raw_parts(buf as *const u8, size as usize),
        )
    };
    if img.write(block as usize * BLOCK + off as usize, buf) {
        0
    } else {
        ll::lfs_error_LFS_ERR_IO
    }
}

unsafe extern "C" fn cb_erase(c: *const ll::lfs_config, _block: ll::lfs_block_t) -> c_int {
    // SAFETY: see `image`.
    unsafe { image(c) }.c.erases += 1;
    0
}

unsafe extern "C" fn cb_sync(c: *const ll::lfs_config) -> c_int {
    // SAFETY: see `image`.
    unsafe { image(c) }.c.flushes += 1;
    0
}

fn check(rc: i32, what: &str) -> Res<i32> {
    if rc < 0 {
        Err(format!("littlefs: {what} failed with {rc}").into())
    } else {
        Ok(rc)
    }
}

fn cpath(path: &str) -> Res<CString> {
    Ok(CString::new(path)?)
}

/// A formatted littlefs volume with its state, caches and disk, all at stable addresses
/// (littlefs keeps pointers to them).
pub struct Lfs {
    lfs: Box<ll::lfs_t>,
    cfg: Box<ll::lfs_config>,
    img: Box<RamImage>,
    _read: Box<[u8]>,
    _prog: Box<[u8]>,
    _lookahead: Box<[u64]>,
}

/// An open file: its state, config and cache. Must be closed through [`Lfs::close`] before it is
/// dropped (littlefs keeps it in a list of open files).
pub struct LfsFile {
    f: Box<ll::lfs_file_t>,
    _cfg: Box<ll::lfs_file_config>,
    _buf: Box<[u8]>,
}

pub const RDONLY: i32 = ll::lfs_open_flags_LFS_O_RDONLY as i32;
pub const RDWR: i32 = ll::lfs_open_flags_LFS_O_RDWR as i32;
pub const WRONLY: i32 = ll::lfs_open_flags_LFS_O_WRONLY as i32;
pub const CREAT: i32 = ll::lfs_open_flags_LFS_O_CREAT as i32;
pub const EXCL: i32 = ll::lfs_open_flags_LFS_O_EXCL as i32;
pub const APPEND: i32 = ll::lfs_open_flags_LFS_O_APPEND as i32;

impl Lfs {
    /// Format a fresh disk and mount it.
    pub fn format() -> Res<Lfs> {
        let mut img = Box::new(RamImage::new());
        let mut read = vec![0u8; CACHE].into_boxed_slice();
        let mut prog = vec![0u8; CACHE].into_boxed_slice();
        let mut lookahead = vec![0u64; LOOKAHEAD / 8].into_boxed_slice();
        let cfg = Box::new(ll::lfs_config {
            context: &mut *img as *mut RamImage as *mut c_void,
            read: Some(cb_read),
            prog: Some(cb_prog),
            erase: Some(cb_erase),
            sync: Some(cb_sync),
            read_size: SECTOR as u32,
            prog_size: SECTOR as u32,
            block_size: BLOCK as u32,
            block_count: (DISK_BYTES / BLOCK) as u32,
            block_cycles: -1,
            cache_size: CACHE as u32,
            lookahead_size: LOOKAHEAD as u32,
            read_buffer: read.as_mut_ptr() as *mut c_void,
            prog_buffer: prog.as_mut_ptr() as *mut c_void,
            lookahead_buffer: lookahead.as_mut_ptr() as *mut c_void,
            ..Default::default()
        });
        // SAFETY: `lfs_t` is plain C data; littlefs initialises it in format / mount.
        let lfs: Box<ll::lfs_t> = Box::new(unsafe { std::mem::zeroed() });
        let mut me = Lfs {
            lfs,
            cfg,
            img,
            _read: read,
            _prog: prog,
            _lookahead: lookahead,
        };
        // SAFETY: every pointer in `cfg` points into boxes owned by `me`.
        check(unsafe { ll::lfs_format(&mut *me.lfs, &*me.cfg) }, "format")?;
        me.mount()?;
        me.img.c = Counters::default();
        Ok(me)
    }

    pub fn counters(&self) -> Counters {
        self.img.c
    }

    pub fn mount(&mut self) -> Res<()> {
        // SAFETY: as in `format`.
        check(
            unsafe { ll::lfs_mount(&mut *self.lfs, &*self.cfg) },
            "mount",
        )?;
        Ok(())
    }

    pub fn unmount(&mut self) -> Res<()> {
        // SAFETY: the volume is mounted; no file is open.
        check(unsafe { ll::lfs_unmount(&mut *self.lfs) }, "unmount")?;
        Ok(())
    }

    pub fn open(&mut self, path: &str, flags: i32) -> Res<LfsFile> {
        let p = cpath(path)?;
        let mut buf = vec![0u8; CACHE].into_boxed_slice();
        let cfg = Box::new(ll::lfs_file_config {
            buffer: buf.as_mut_ptr() as *mut c_void,
            attrs: std::ptr::null_mut(),
            attr_count: 0,
        });
        // SAFETY: plain C data, initialised by lfs_file_opencfg.
        let mut f: Box<ll::lfs_file_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `f`, `cfg` and `buf` are boxed and live in the returned `LfsFile` until
        // `close`.
        let rc = unsafe { ll::lfs_file_opencfg(&mut *self.lfs, &mut *f, p.as_ptr(), flags, &*cfg) };
        check(rc, "open")?;
        Ok(LfsFile {
            f,
            _cfg: cfg,
            _buf: buf,
        })
    }

    pub fn write(&mut self, f: &mut LfsFile, data: &[u8]) -> Res<()> {
        // SAFETY: `f` is open on this volume; `data` is valid for its length.
        let rc = unsafe {
            ll::lfs_file_write(
                &mut *self.lfs,
                &mut *f.f,
                data.as_ptr() as *const c_void,
                data.len() as u32,
            )
        };
        if check(rc, "write")? as usize != data.len() {
            return Err("littlefs: short write".into());
        }
        Ok(())
    }

    pub fn read_exact(&mut self, f: &mut LfsFile, buf: &mut [u8]) -> Res<()> {
        // SAFETY: `f` is open on this volume; `buf` is valid for its length.
        let rc = unsafe {
            ll::lfs_file_read(
                &mut *self.lfs,
                &mut *f.f,
                buf.as_mut_ptr() as *mut c_void,
                buf.len() as u32,
            )
        };
        if check(rc, "read")? as usize != buf.len() {
            return Err("littlefs: short read".into());
        }
        Ok(())
    }

    pub fn seek(&mut self, f: &mut LfsFile, off: u64) -> Res<()> {
        let set = ll::lfs_whence_flags_LFS_SEEK_SET as i32;
        // SAFETY: `f` is open on this volume.
        let rc = unsafe { ll::lfs_file_seek(&mut *self.lfs, &mut *f.f, off as i32, set) };
        check(rc, "seek")?;
        Ok(())
    }

    pub fn sync(&mut self, f: &mut LfsFile) -> Res<()> {
        // SAFETY: `f` is open on this volume.
        check(
            unsafe { ll::lfs_file_sync(&mut *self.lfs, &mut *f.f) },
            "sync",
        )?;
        Ok(())
    }

    pub fn close(&mut self, mut f: LfsFile) -> Res<()> {
        // SAFETY: `f` is open on this volume; after this littlefs no longer refers to it.
        check(
            unsafe { ll::lfs_file_close(&mut *self.lfs, &mut *f.f) },
            "close",
        )?;
        Ok(())
    }

    pub fn mkdir(&mut self, path: &str) -> Res<()> {
        let p = cpath(path)?;
        // SAFETY: mounted volume, NUL-terminated path.
        check(
            unsafe { ll::lfs_mkdir(&mut *self.lfs, p.as_ptr()) },
            "mkdir",
        )?;
        Ok(())
    }

    /// Size of the file at `path`.
    pub fn stat(&mut self, path: &str) -> Res<u64> {
        let p = cpath(path)?;
        // SAFETY: plain C data, filled by lfs_stat.
        let mut info: ll::lfs_info = unsafe { std::mem::zeroed() };
        // SAFETY: mounted volume, NUL-terminated path, `info` valid.
        check(
            unsafe { ll::lfs_stat(&mut *self.lfs, p.as_ptr(), &mut info) },
            "stat",
        )?;
        Ok(u64::from(info.size))
    }

    /// Blocks in use (littlefs's statfs: a traversal of the whole volume).
    pub fn fs_size(&mut self) -> Res<u64> {
        // SAFETY: mounted volume.
        let rc = unsafe { ll::lfs_fs_size(&mut *self.lfs) };
        Ok(check(rc, "fs_size")? as u64)
    }
}

fn fill_file(fs: &mut Lfs, path: &str, len: usize, chunk: &[u8]) -> Res<()> {
    let mut f = fs.open(path, WRONLY | CREAT)?;
    for _ in 0..len / chunk.len() {
        fs.write(&mut f, chunk)?;
    }
    fs.close(f)
}

/// Workload 1: sequential write (4 KiB writes, then close, which syncs), then sequential read.
pub fn seq(p: &Params) -> Res<Vec<Row>> {
    let mut fs = Lfs::format()?;
    let chunk = crate::pattern(p.io, 1);
    let n = p.file_bytes / p.io;
    let m = Meter::start(fs.counters());
    let mut f = fs.open("/seq", WRONLY | CREAT)?;
    for _ in 0..n {
        fs.write(&mut f, &chunk)?;
    }
    fs.close(f)?;
    let w = m.stop(fs.counters(), n as u64);

    let mut back = crate::ram::prefaulted(p.file_bytes);
    let m = Meter::start(fs.counters());
    let mut f = fs.open("/seq", RDONLY)?;
    for b in back.chunks_mut(p.io) {
        fs.read_exact(&mut f, b)?;
    }
    fs.close(f)?;
    let r = m.stop(fs.counters(), n as u64);
    crate::check_repeated(NAME, &back, &chunk)?;
    fs.unmount()?;
    Ok(vec![
        Row::new(p.seq_write(), NAME, w),
        Row::new(p.seq_read(), NAME, r),
    ])
}

/// Workload 2: random aligned 4 KiB overwrites, each followed by `lfs_file_sync`.
pub fn rand_overwrite(p: &Params, offsets: &[u64]) -> Res<Row> {
    let mut fs = Lfs::format()?;
    fill_file(&mut fs, "/rand", p.file_bytes, &crate::pattern(p.io, 2))?;
    let chunk = crate::pattern(p.io, 3);
    let m = Meter::start(fs.counters());
    let mut f = fs.open("/rand", RDWR)?;
    for &off in offsets {
        fs.seek(&mut f, off)?;
        fs.write(&mut f, &chunk)?;
        fs.sync(&mut f)?;
    }
    fs.close(f)?;
    let o = m.stop(fs.counters(), offsets.len() as u64);
    fs.unmount()?;
    Ok(Row::new(p.rand_overwrite(), NAME, o))
}

/// Workload 3: append + `lfs_file_sync`, repeated.
pub fn append(p: &Params) -> Res<Row> {
    let mut fs = Lfs::format()?;
    let rec = crate::pattern(p.append_len, 4);
    let m = Meter::start(fs.counters());
    let mut f = fs.open("/log", WRONLY | CREAT | APPEND)?;
    for _ in 0..p.appends {
        fs.write(&mut f, &rec)?;
        fs.sync(&mut f)?;
    }
    fs.close(f)?;
    let o = m.stop(fs.counters(), p.appends as u64);
    if fs.stat("/log")? != (p.appends * p.append_len) as u64 {
        return Err("littlefs: wrong log size".into());
    }
    fs.unmount()?;
    Ok(Row::new(p.append(), NAME, o))
}

/// Workloads 4 and 5: create `n` small files in one directory (each close commits), then stat
/// every one. Either phase gives up after `p.budget`.
pub fn files(p: &Params, n: usize) -> Res<Vec<Row>> {
    let mut fs = Lfs::format()?;
    fs.mkdir("/d")?;
    let data = crate::pattern(p.small_len, 5);
    let m = Meter::start(fs.counters());
    let deadline = std::time::Instant::now() + p.budget;
    for i in 0..n {
        let mut f = fs.open(&crate::small_name(i), WRONLY | CREAT | EXCL)?;
        fs.write(&mut f, &data)?;
        fs.close(f)?;
        if std::time::Instant::now() > deadline {
            return Ok(crate::too_slow(p, n, NAME, i + 1));
        }
    }
    let c = m.stop(fs.counters(), n as u64);

    let m = Meter::start(fs.counters());
    let deadline = std::time::Instant::now() + p.budget;
    for i in 0..n {
        let size = fs.stat(&crate::small_name(i))?;
        if size != p.small_len as u64 {
            return Err(format!("littlefs: {} has size {size}", crate::small_name(i)).into());
        }
        if std::time::Instant::now() > deadline {
            return Ok(vec![
                Row::new(p.create(n), NAME, c),
                Row::new(p.stat(n), NAME, crate::skipped(p, i + 1)),
            ]);
        }
    }
    let s = m.stop(fs.counters(), n as u64);
    fs.unmount()?;
    Ok(vec![
        Row::new(p.create(n), NAME, c),
        Row::new(p.stat(n), NAME, s),
    ])
}

/// Workload 6: unmount + mount of a populated volume, the first write (a new 4 KiB file,
/// closed = synced), then statfs (`lfs_fs_size`); `p.remounts` cycles.
pub fn remount(p: &Params) -> Res<Vec<Row>> {
    let mut fs = Lfs::format()?;
    fill_file(&mut fs, "/big", p.file_bytes, &crate::pattern(p.io, 6))?;
    fs.mkdir("/d")?;
    let data = crate::pattern(p.small_len, 7);
    for i in 0..p.small_files {
        let mut f = fs.open(&crate::small_name(i), WRONLY | CREAT)?;
        fs.write(&mut f, &data)?;
        fs.close(f)?;
    }
    let chunk = crate::pattern(p.io, 8);
    let (mut mount, mut first, mut statfs) = (Acc::default(), Acc::default(), Acc::default());
    let mut used = 0;
    for i in 0..p.remounts {
        let m = Meter::start(fs.counters());
        fs.unmount()?;
        fs.mount()?;
        mount.add(m.stop(fs.counters(), 1));

        let m = Meter::start(fs.counters());
        let mut f = fs.open(&format!("/boot{i}.log"), WRONLY | CREAT)?;
        fs.write(&mut f, &chunk)?;
        fs.close(f)?;
        first.add(m.stop(fs.counters(), 1));

        let m = Meter::start(fs.counters());
        used = std::hint::black_box(fs.fs_size()?);
        statfs.add(m.stop(fs.counters(), 1));
    }
    fs.unmount()?;
    if used < (p.file_bytes / BLOCK) as u64 {
        return Err(format!("littlefs: fs_size {used} blocks is too small").into());
    }
    Ok(vec![
        Row::new(p.remount(), NAME, mount.into()),
        Row::new(p.first_write(), NAME, first.into()),
        Row::new(p.statfs(), NAME, statfs.into()),
    ])
}
