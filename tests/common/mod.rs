//! Shared helpers for the integration tests: devices over images, mounting, checking.
#![allow(dead_code)]

use bonsaifs::device::{BlockDevice, QueuedConfig, QueuedRamDisk};
use bonsaifs::fs::Fs;
use bonsaifs::volume::{FormatOptions, Volume};
use bonsaifs::wire::{items::kind, Key, Superblock, SUPERBLOCK_OFFSETS};

/// Cache slots used by the tests.
pub const SLOTS: usize = 32;

/// The volume type the tests use.
pub type Vol<'b> = Volume<'b, QueuedRamDisk<'b>, SLOTS>;

/// Memory for a volume of `block_size` blocks over 512-byte sectors.
pub fn mem(block_size: usize) -> Vec<u8> {
    vec![0u8; bonsaifs::volume::memory_needed(512, block_size, SLOTS)]
}

/// A queued device config (out-of-order completion, volatile cache) for `bytes` of disk.
pub fn cfg(bytes: u64, seed: u64) -> QueuedConfig {
    QueuedConfig {
        sector_count: bytes / 512,
        seed,
        ..QueuedConfig::default()
    }
}

/// Format a fresh queued RAM disk of `bytes` and return its durable image.
pub fn format_image(bytes: u64, block_size: u32) -> Vec<u8> {
    let mut m = mem(block_size as usize);
    let dev = QueuedRamDisk::new(cfg(bytes, 7));
    let opts = FormatOptions {
        block_size,
        ..FormatOptions::default()
    };
    let vol = Vol::format(dev, &mut m, opts).expect("format");
    let dev = vol.into_device();
    dev.durable_image().to_vec()
}

/// Run `f` on the volume mounted from `image` (a fresh device with out-of-order completion);
/// returns `f`'s result and the device (for its images).
pub fn with_mounted<R>(
    image: &[u8],
    seed: u64,
    f: impl FnOnce(&mut Vol<'_>) -> R,
) -> (R, Vec<u8>, Vec<u8>) {
    let mut m = mem(4096);
    let dev = QueuedRamDisk::from_image(cfg(image.len() as u64, seed), image.to_vec());
    let mut vol = Vol::mount(dev, &mut m).expect("mount");
    let r = f(&mut vol);
    let dev = vol.into_device();
    (
        r,
        dev.durable_image().to_vec(),
        dev.volatile_image().to_vec(),
    )
}

/// fsck the volume and panic with the report unless it is clean.
pub fn assert_clean(vol: &mut Vol<'_>) -> bonsaifs::fsck::Report {
    let mut bits = vec![0u8; (vol.space_info().total_blocks as usize).div_ceil(8)];
    let rep = vol.fsck(&mut bits).expect("fsck ran");
    assert!(rep.is_clean(), "fsck: {rep:?}");
    rep
}

/// Number of EXTENT items of inode `ino` in the filesystem tree.
pub fn count_extents<'b, D: BlockDevice<'b>, const N: usize, const H: usize>(
    fs: &mut Fs<'b, D, N, H>,
    ino: u64,
) -> u64 {
    let mut n = 0;
    let mut from = Key::new(ino, kind::EXTENT, 0);
    let mut incl = true;
    while let Some(k) = fs.volume_mut().next(&from, incl, |k, _| k).unwrap() {
        if k.id != ino || k.kind != kind::EXTENT {
            break;
        }
        n += 1;
        from = k;
        incl = false;
    }
    n
}

/// The newest valid superblock copy of `image` (panics if neither is valid).
pub fn newest_superblock(image: &[u8]) -> Superblock {
    SUPERBLOCK_OFFSETS
        .iter()
        .enumerate()
        .filter_map(|(i, &off)| Superblock::parse(&image[off as usize..], i as u64).ok())
        .max_by_key(Superblock::generation)
        .expect("a valid superblock")
}
