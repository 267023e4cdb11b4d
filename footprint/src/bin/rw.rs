//! Read-write bonsaifs over a RAM disk: format, mkdir, create, write, fsync, unmount, mount,
//! read (checked), rename, stat, unlink, unmount. Prints the measured stack peak.
#![no_std]
#![no_main]

use bonsaifs::device::RamDisk;
use bonsaifs::fs::{Fs, OpenFlags};
use bonsaifs::volume::{memory_needed, FormatOptions};
use bonsaifs_footprint as fw;
use core::ptr::addr_of_mut;
use cortex_m_rt::entry;

/// The smallest block size `Fs` accepts (a 255-byte name must fit in a tree item).
const BLOCK: usize = 2048;
/// The smallest cache the volume accepts (two tree paths plus four).
const SLOTS: usize = 20;
/// Open files at once.
const HANDLES: usize = 2;
const SECTOR: usize = 512;
const MEM_BYTES: usize = memory_needed(SECTOR, BLOCK, SLOTS);

/// The cache and log buffers the filesystem borrows (counted as `.bss`).
static mut CACHE: [u8; MEM_BYTES] = [0; MEM_BYTES];

type Disk = RamDisk<'static, 'static, 1>;
type F = Fs<'static, Disk, SLOTS, HANDLES>;

/// The 3000 bytes the firmware writes: not block-aligned, two blocks.
fn byte(i: usize) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(7)
}

#[entry]
fn main() -> ! {
    fw::paint_stack();
    // SAFETY: the disk is borrowed once, here; `CACHE` here and again below only after the
    // filesystem that borrowed it was unmounted (nothing holds a piece of it any more).
    let disk = unsafe { fw::disk() };
    disk.fill(0);
    let mem = unsafe { fw::static_bytes(addr_of_mut!(CACHE).cast(), MEM_BYTES) };
    let dev: Disk = fw::check(RamDisk::with_queue_depth(disk, SECTOR as u32), "disk");
    let opts = FormatOptions {
        block_size: BLOCK as u32,
        ..FormatOptions::default()
    };
    let mut fs: F = fw::check(Fs::format(dev, mem, opts), "format");
    fw::check(fs.mkdir("/d"), "mkdir");
    let rw = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    let fd = fw::check(fs.open("/d/a", rw), "create");
    let mut chunk = [0u8; 100];
    for c in 0..30 {
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = byte(c * 100 + i);
        }
        let n = fw::check(fs.write(fd, &chunk), "write");
        fw::expect(n == chunk.len(), "short write");
    }
    fw::check(fs.fsync(fd), "fsync");
    fw::check(fs.close(fd), "close");
    let dev = fw::check(fs.unmount(), "unmount");

    // SAFETY: see above; the unmounted filesystem no longer exists.
    let mem = unsafe { fw::static_bytes(addr_of_mut!(CACHE).cast(), MEM_BYTES) };
    let mut fs: F = fw::check(Fs::mount(dev, mem), "mount");
    let fd = fw::check(fs.open("/d/a", OpenFlags::READ), "open");
    let mut at = 0;
    loop {
        let n = fw::check(fs.read(fd, &mut chunk), "read");
        if n == 0 {
            break;
        }
        for (i, b) in chunk[..n].iter().enumerate() {
            fw::expect(*b == byte(at + i), "data");
        }
        at += n;
    }
    fw::expect(at == 3000, "length");
    fw::check(fs.close(fd), "close");
    fw::check(fs.rename("/d/a", "/d/b"), "rename");
    let st = fw::check(fs.stat("/d/b"), "stat");
    fw::expect(st.size == 3000, "size");
    fw::check(fs.unlink("/d/b"), "unlink");
    fw::expect(fs.stat("/d/b").is_err(), "unlinked");
    fw::check(fs.unmount(), "unmount");

    fw::report_all(core::mem::size_of::<F>(), true, MEM_BYTES);
    fw::exit(true)
}
