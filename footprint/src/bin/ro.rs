//! Read-only bonsaifs: mount an image that QEMU's loader put into RAM at `fw::DISK_ADDR`,
//! stat, read (checked) and list it. Prints the measured stack peak.
//!
//! The image comes from the footprint script (`bonsaifs mkfs --block-size 2K` + `put`): it
//! holds `/hello.txt` with [`HELLO`] and a directory `/dir` with three files.
#![no_std]
#![no_main]

use bonsaifs::device::RamDisk;
use bonsaifs::fs::{Fs, OpenFlags};
use bonsaifs::volume::memory_needed;
use bonsaifs_footprint as fw;
use core::ptr::addr_of_mut;
use cortex_m_rt::entry;

/// The image's block size.
const BLOCK: usize = 2048;
/// The smallest cache the volume accepts.
const SLOTS: usize = 20;
/// Open files at once.
const HANDLES: usize = 2;
const SECTOR: usize = 512;
const MEM_BYTES: usize = memory_needed(SECTOR, BLOCK, SLOTS);

/// What `/hello.txt` holds.
const HELLO: &[u8] = b"hello from the host\n";

/// The cache and log buffers the filesystem borrows (counted as `.bss`).
static mut CACHE: [u8; MEM_BYTES] = [0; MEM_BYTES];

type Disk = RamDisk<'static, 'static, 1>;
type F = Fs<'static, Disk, SLOTS, HANDLES>;

#[entry]
fn main() -> ! {
    fw::paint_stack();
    // SAFETY: the disk and `CACHE` are borrowed once, here.
    let disk = unsafe { fw::disk() };
    let mem = unsafe { fw::static_bytes(addr_of_mut!(CACHE).cast(), MEM_BYTES) };
    let dev: Disk = fw::check(RamDisk::with_queue_depth(disk, SECTOR as u32), "disk");
    let mut fs: F = fw::check(Fs::mount(dev.read_only(true), mem), "mount");

    let st = fw::check(fs.stat("/hello.txt"), "stat");
    fw::expect(st.size == HELLO.len() as u64, "size");
    let fd = fw::check(fs.open("/hello.txt", OpenFlags::READ), "open");
    let mut buf = [0u8; 64];
    let n = fw::check(fs.read(fd, &mut buf), "read");
    fw::expect(&buf[..n] == HELLO, "data");
    fw::check(fs.close(fd), "close");

    let mut entries = 0;
    let mut dir = fw::check(fs.read_dir("/dir"), "read_dir");
    while let Some(e) = fw::check(fs.read_dir_next(&mut dir), "read_dir_next") {
        // "/dir/" + name, to stat the entry by path.
        let mut path = [0u8; 5 + 255];
        let name = e.name().as_bytes();
        path[..5].copy_from_slice(b"/dir/");
        path[5..5 + name.len()].copy_from_slice(name);
        let path = fw::check(core::str::from_utf8(&path[..5 + name.len()]), "name");
        let st = fw::check(fs.stat(path), "stat entry");
        fw::expect(st.size > 0, "entry size");
        entries += 1;
    }
    fw::expect(entries == 3, "entries");

    fw::report_all(core::mem::size_of::<F>(), true, MEM_BYTES);
    fw::exit(true)
}
