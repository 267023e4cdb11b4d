//! A volume whose last checkpoint has generation `MAX_GENERATION - 1` cannot checkpoint again:
//! a superblock of generation `MAX_GENERATION` is refused at mount. The checkpoint (and a log
//! record, which a mount could only replay with a checkpoint) fails with `NoSpace` before
//! writing anything, and the volume still mounts with its last contents.

mod common;

use bonsaifs::device::RamDisk;
use bonsaifs::fs::{Fs, OpenFlags};
use bonsaifs::volume::FormatOptions;
use bonsaifs::wire::{MAX_GENERATION, SUPERBLOCK_LEN, SUPERBLOCK_OFFSETS};
use bonsaifs::Error;
use common::{mem, newest_superblock, SLOTS};

type F<'m, 'b> = Fs<'b, RamDisk<'m, 'b>, SLOTS, 4>;
/// `FormatOptions::default()`'s block size.
const BS: usize = 4096;
const SECTOR: u32 = 512;
const LAST: u64 = MAX_GENERATION - 1;

/// A formatted image holding `/a` = "before", whose two superblock copies both record the
/// last generation a volume may have.
fn image_at_the_limit() -> Vec<u8> {
    let mut image = vec![0u8; 8 << 20];
    let mut m = mem(BS);
    let dev = RamDisk::new(&mut image, SECTOR).unwrap();
    let mut fs: F<'_, '_> = Fs::format(dev, &mut m, FormatOptions::default()).unwrap();
    let fd = fs.open("/a", OpenFlags::WRITE | OpenFlags::CREATE).unwrap();
    fs.write_at(fd, 0, b"before").unwrap();
    fs.close(fd).unwrap();
    fs.unmount().unwrap();
    // The newest copy, resealed into both places with the last generation.
    let newest = newest_superblock(&image);
    for (i, &off) in SUPERBLOCK_OFFSETS.iter().enumerate() {
        let mut sb = newest;
        sb.header.generation = LAST.into();
        sb.header.blocknr = (i as u64).into();
        let off = off as usize;
        image[off..off + SUPERBLOCK_LEN].copy_from_slice(sb.seal());
    }
    image
}

/// Mount `image` and check it holds the last checkpoint: `/a` = "before", no `/b`.
fn assert_last_state(image: &mut [u8]) {
    let mut m = mem(BS);
    let dev = RamDisk::new(image, SECTOR).unwrap();
    let mut fs: F<'_, '_> = Fs::mount(dev, &mut m).expect("mount after the refused change");
    assert_eq!(fs.volume().committed_generation(), LAST);
    let fd = fs.open("/a", OpenFlags::READ).unwrap();
    let mut buf = [0u8; 16];
    let n = fs.read_at(fd, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"before");
    fs.close(fd).unwrap();
    assert_eq!(fs.stat("/b").err(), Some(Error::NotFound));
}

#[test]
fn a_checkpoint_past_the_last_generation_is_refused_and_the_volume_still_mounts() {
    let mut image = image_at_the_limit();
    let before = image.clone();
    {
        let mut m = mem(BS);
        let dev = RamDisk::new(&mut image, SECTOR).unwrap();
        let mut fs: F<'_, '_> = Fs::mount(dev, &mut m).expect("mount at the limit");
        assert_eq!(fs.volume().committed_generation(), LAST);
        let fd = fs.open("/b", OpenFlags::WRITE | OpenFlags::CREATE).unwrap();
        fs.write_at(fd, 0, b"after").unwrap();
        fs.close(fd).unwrap();
        assert_eq!(fs.sync_all(), Err(Error::NoSpace));
        let _ = fs.into_device();
    }
    assert!(
        image[..8192] == before[..8192],
        "a superblock copy was written"
    );
    assert!(
        image == before,
        "the refused checkpoint wrote to the device"
    );
    assert_last_state(&mut image);
}

#[test]
fn an_fsync_past_the_last_generation_is_refused_and_the_volume_still_mounts() {
    let mut image = image_at_the_limit();
    {
        let mut m = mem(BS);
        let dev = RamDisk::new(&mut image, SECTOR).unwrap();
        let mut fs: F<'_, '_> = Fs::mount(dev, &mut m).expect("mount at the limit");
        let fd = fs.open("/b", OpenFlags::WRITE | OpenFlags::CREATE).unwrap();
        fs.write_at(fd, 0, b"after").unwrap();
        // A log record would make the change durable only until the next mount, whose replay
        // must checkpoint: refused too.
        assert_eq!(fs.fsync(fd), Err(Error::NoSpace));
        let _ = fs.into_device();
    }
    assert_last_state(&mut image);
}
