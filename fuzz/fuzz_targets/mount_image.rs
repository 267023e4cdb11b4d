//! Hostile images through mount, fsck, a walk of the whole namespace and a read of every file.
//! Nothing may panic, overflow, read out of bounds or run unbounded (the device refuses work
//! past a request budget, which turns a loop of reads into an error).
//!
//! Input: one flags byte, then an image in the harness's run-length form
//! (`bonsaifs_harness::image::rle_encode`), decoded to a 1 MiB image. Flag bit 0 re-seals the
//! superblock copies and every block that starts with the block magic, so that mutations past
//! the checksums reach the decoders' semantic checks. The seeds in `fuzz/corpus/mount_image`
//! are real images (`bonsaifs-harness fuzz-seeds`).
#![no_main]

use bonsaifs::device::RamDisk;
use bonsaifs::wire::{BlockHeader, MAGIC, SUPERBLOCK_LEN, SUPERBLOCK_OFFSETS};
use bonsaifs_harness::bounded::budgeted;
use bonsaifs_harness::image::{mount_mem_len, rle_decode, walk, Budget, HFs, BLOCK, IMAGE_BYTES};
use libfuzzer_sys::fuzz_target;

fn reseal(image: &mut [u8]) {
    for off in SUPERBLOCK_OFFSETS {
        let off = off as usize;
        BlockHeader::seal(&mut image[off..off + SUPERBLOCK_LEN]);
    }
    for block in image.chunks_mut(BLOCK).skip(2) {
        if block[..4] == MAGIC.to_le_bytes() {
            BlockHeader::seal(block);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut image = rle_decode(rest, IMAGE_BYTES);
    if flags & 1 != 0 {
        reseal(&mut image);
    }
    let mut mem = vec![0u8; mount_mem_len()];
    let Ok(dev) = RamDisk::new(&mut image, 512) else {
        return;
    };
    let Ok(mut fs) = HFs::mount(budgeted(dev), &mut mem) else {
        return;
    };
    let need = fs.fsck_scratch_len();
    if need <= 16 << 20 {
        let mut scratch = vec![0u8; need];
        let _ = fs.fsck(&mut scratch);
    }
    let _ = walk(&mut fs, &Budget::default());
    let _ = fs.statfs();
});
