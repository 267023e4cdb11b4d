//! The README's first command: `cargo run --example demo`.
//!
//! Formats a 16 MiB RAM disk (no allocator needed for the volume itself: the caller provides
//! the disk bytes and the cache memory), stores items in the copy-on-write B+tree, checkpoints,
//! simulates a power cut in the middle of later changes, remounts, checks the volume, and prints
//! what the device saw.

use bonsaifs::btree::InsertMode;
use bonsaifs::device::{RamDisk, Trace};
use bonsaifs::volume::{memory_needed, FormatOptions, Volume};
use bonsaifs::wire::Key;

const SLOTS: usize = 32;
const BLOCK: usize = 4096;

fn main() -> Result<(), bonsaifs::Error> {
    let mut disk = vec![0u8; 16 << 20];
    let mut mem = vec![0u8; memory_needed(512, BLOCK, SLOTS)];
    let dev = Trace::new(RamDisk::new(&mut disk, 512).map_err(bonsaifs::Error::Io)?);
    let mut vol: Volume<'_, _, SLOTS> = Volume::format(dev, &mut mem, FormatOptions::default())?;
    let info = vol.space_info();
    println!(
        "formatted: {} blocks of {} bytes, {} free",
        info.total_blocks, info.block_size, info.free_blocks
    );

    for i in 0..5000u64 {
        let value = format!("item {i}: {}", "x".repeat((i % 200) as usize));
        vol.insert(Key::new(i, 1, 0), value.as_bytes(), InsertMode::Create)?;
    }
    vol.device_mut().reset_counters();
    vol.checkpoint()?;
    let c = vol.device().counters();
    println!(
        "checkpoint {}: {} writes ({} KiB), {} flushes, {} FUA; tree height {}",
        vol.committed_generation(),
        c.writes + c.fua_writes,
        c.bytes_written / 1024,
        c.flushes,
        c.fua_writes,
        vol.fs_root().level + 1
    );

    // Changes that are never checkpointed: a power cut loses them, and only them.
    for i in 0..1000u64 {
        vol.remove(&Key::new(i, 1, 0))?;
    }
    let dev = vol.into_device(); // power cut: nothing more is written
    drop(dev);

    let mut mem2 = vec![0u8; memory_needed(512, BLOCK, SLOTS)];
    let dev = Trace::new(RamDisk::new(&mut disk, 512).map_err(bonsaifs::Error::Io)?);
    let mut vol: Volume<'_, _, SLOTS> = Volume::mount(dev, &mut mem2)?;
    let first = vol.get(&Key::new(0, 1, 0), |v| {
        String::from_utf8_lossy(v).into_owned()
    })?;
    println!("after power cut and remount, item 0 reads: {first:?}");

    let mut bitmap = vec![0u8; (vol.space_info().total_blocks as usize).div_ceil(8)];
    let report = vol.fsck(&mut bitmap)?;
    println!(
        "fsck: {} ({} fs-tree nodes, {} items, {} free-tree nodes, {} free blocks, {} leaked)",
        if report.is_clean() { "clean" } else { "ERRORS" },
        report.fs_nodes,
        report.fs_items,
        report.free_nodes,
        report.free_run_blocks + report.reserved_blocks,
        report.leaked
    );
    let c = vol.device().counters();
    println!(
        "device since mount: {} reads ({} KiB), {} writes, {} flushes",
        c.reads,
        c.bytes_read / 1024,
        c.writes,
        c.flushes
    );
    let dev = vol.unmount()?;
    drop(dev);
    Ok(())
}
