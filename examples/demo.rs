//! The README's first command: `cargo run --example demo`.
//!
//! Formats a 16 MiB RAM disk (the caller provides the disk bytes and the cache memory: no
//! allocator is involved in the filesystem itself), builds a small tree of directories and
//! files, writes and reads them back through `embedded_io`, lists them, cuts the power in the
//! middle of unsynced changes, remounts, checks the volume, and prints what the device saw.

use bonsaifs::device::{RamDisk, Trace};
use bonsaifs::fs::{FileKind, Fs, OpenFlags};
use bonsaifs::volume::{memory_needed, FormatOptions};
use bonsaifs::Error;
use embedded_io::{Read, Seek, SeekFrom, Write};

const SLOTS: usize = 32;
const BLOCK: usize = 4096;

type DemoFs<'b> = Fs<'b, Trace<RamDisk<'b, 'b>>, SLOTS>;

fn list(fs: &mut DemoFs<'_>, dir: &str, depth: usize) -> Result<(), Error> {
    let mut cursor = fs.read_dir(dir)?;
    while let Some(entry) = fs.read_dir_next(&mut cursor)? {
        let path = format!("{}/{}", dir.trim_end_matches('/'), entry.name());
        let meta = fs.stat(&path)?;
        match entry.kind {
            FileKind::Dir => {
                println!("{:indent$}{}/", "", entry.name(), indent = depth * 2);
                list(fs, &path, depth + 1)?;
            }
            FileKind::File => {
                println!(
                    "{:indent$}{} ({} bytes)",
                    "",
                    entry.name(),
                    meta.size,
                    indent = depth * 2
                )
            }
        }
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let mut disk = vec![0u8; 16 << 20];
    let mut mem = vec![0u8; memory_needed(512, BLOCK, SLOTS)];
    let dev = Trace::new(RamDisk::new(&mut disk, 512)?);
    let mut fs: DemoFs<'_> = Fs::format(dev, &mut mem, FormatOptions::default())?;
    let s = fs.statfs();
    println!(
        "formatted: {} blocks of {} bytes, {} free",
        s.total_blocks, s.block_size, s.free_blocks
    );

    fs.mkdir("/etc")?;
    fs.mkdir("/logs")?;
    fs.mkdir("/logs/2026")?;
    let create = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    let fd = fs.open("/etc/config.toml", create)?;
    fs.file(fd).write_all(b"[net]\nip = \"10.0.0.2\"\n")?;
    fs.close(fd)?;
    let fd = fs.open("/logs/2026/boot.log", create | OpenFlags::APPEND)?;
    for i in 0..2000 {
        let line = format!("boot {i}: all good\n");
        fs.file(fd).write_all(line.as_bytes())?;
    }
    fs.close(fd)?;
    let fd = fs.open("/firmware.bin", create)?;
    let image: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    fs.file(fd).write_all(&image)?;
    fs.close(fd)?;
    fs.sync_all()?;

    println!("\nthe tree:");
    list(&mut fs, "/", 1)?;

    let fd = fs.open("/firmware.bin", OpenFlags::READ)?;
    let mut back = vec![0u8; image.len()];
    fs.file(fd)
        .read_exact(&mut back)
        .map_err(|_| Error::Corrupt)?;
    fs.file(fd).seek(SeekFrom::Start(0))?;
    fs.close(fd)?;
    println!(
        "\nfirmware.bin reads back {}",
        if back == image { "exactly" } else { "WRONG" }
    );

    // Unsynced changes, then the power goes.
    fs.unlink("/etc/config.toml")?;
    fs.rename("/logs", "/old-logs")?;
    let dev = fs.into_device();
    let c = dev.counters();
    println!(
        "\npower cut. device so far: {} reads, {} writes ({} KiB), {} flushes",
        c.reads,
        c.writes,
        c.bytes_written / 1024,
        c.flushes
    );
    drop(dev);

    let mut mem2 = vec![0u8; memory_needed(512, BLOCK, SLOTS)];
    let dev = Trace::new(RamDisk::new(&mut disk, 512)?);
    let mut fs: DemoFs<'_> = Fs::mount(dev, &mut mem2)?;
    println!("remounted: the unsynced unlink and rename are gone, as promised:");
    list(&mut fs, "/", 1)?;

    let mut scratch = vec![0u8; fs.fsck_scratch_len()];
    let r = fs.fsck(&mut scratch)?;
    println!(
        "\nfsck: {} ({} inodes, {} directories, {} tree nodes, {} data blocks, {} leaked)",
        if r.is_clean() { "clean" } else { "ERRORS" },
        r.inodes,
        r.dirs,
        r.blocks.fs_nodes + r.blocks.free_nodes,
        r.blocks.data_blocks,
        r.blocks.leaked
    );
    let s = fs.statfs();
    println!(
        "statfs: {} of {} blocks free, {} inodes",
        s.free_blocks, s.total_blocks, s.inodes
    );
    let c = fs.volume().device().counters();
    println!(
        "device since mount: {} reads ({} KiB)",
        c.reads,
        c.bytes_read / 1024
    );
    fs.unmount()?;
    Ok(())
}
