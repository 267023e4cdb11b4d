//! A crafted image in which a file's extent names a block of the filesystem tree (a leaf that
//! passes every check, re-sealed) must make writes to that file fail with `Corrupt`, never
//! let the file's bytes land in the cached node and never panic.
//!
//! The extent carries the generation of the transaction a mount starts, so a partial write
//! to it goes in place (`pin_data` then `slot_mut`). The tree leaf was loaded and verified a
//! moment before (the extent lookup itself reads it): a cache read of the same block as data
//! used to hand out the node's slot, still marked verified, and the next tree edit trusted
//! the file bytes as item offsets (`copy_within` out of range, `val_off - len` underflow).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use bonsaifs::device::RamDisk;
use bonsaifs::fs::{Fs, OpenFlags};
use bonsaifs::volume::FormatOptions;
use bonsaifs::wire::items::{kind, ExtentItem};
use bonsaifs::wire::{BlockHeader, Key, NodeRef};
use bonsaifs::Error;
use common::{mem, newest_superblock, SLOTS};
use zerocopy::{FromBytes, IntoBytes};

type F<'m, 'b> = Fs<'b, RamDisk<'m, 'b>, SLOTS, 4>;
/// `FormatOptions::default()`'s block size.
const BS: usize = 4096;
const SECTOR: u32 = 512;

#[test]
fn an_extent_naming_a_cached_tree_node_is_corrupt_not_a_panic() {
    let mut image = vec![0u8; 8 << 20];
    let mut m = mem(BS);
    let ino = {
        let dev = RamDisk::new(&mut image, SECTOR).unwrap();
        let mut fs: F<'_, '_> = Fs::format(dev, &mut m, FormatOptions::default()).unwrap();
        let fd = fs.open("/f", OpenFlags::WRITE | OpenFlags::CREATE).unwrap();
        fs.write_at(fd, 0, &[0x11; 2 * BS]).unwrap();
        let ino = fs.fstat(fd).unwrap().ino;
        fs.close(fd).unwrap();
        fs.unmount().unwrap();
        ino
    };

    // The filesystem tree is one leaf; point the file's first extent at that leaf, with the
    // generation of the transaction the next mount runs, and re-seal the leaf.
    let sb = newest_superblock(&image);
    assert_eq!(sb.fs_root.level, 0, "the filesystem tree is one leaf");
    let leaf = sb.fs_root.block.get();
    let at = leaf as usize * BS;
    let node = &mut image[at..at + BS];
    let (off, len) = {
        let n = NodeRef::new(node, leaf as u32);
        let i = n
            .search(&Key::new(ino, kind::EXTENT, 0))
            .expect("extent item");
        let v = n.value(i).unwrap();
        (v.as_ptr() as usize - node.as_ptr() as usize, v.len())
    };
    let (mut ext, _) = ExtentItem::read_from_prefix(&node[off..off + len]).unwrap();
    ext.block = leaf.into();
    ext.generation = ((sb.generation() + 1) << 24).into();
    node[off..off + core::mem::size_of::<ExtentItem>()].copy_from_slice(ext.as_bytes());
    BlockHeader::seal(node);

    // A partial write of zeros into file block 0: past the leaf's header, over its item
    // array. Then a change to the tree (a new file) and a checkpoint.
    let r = catch_unwind(AssertUnwindSafe(|| {
        let dev = RamDisk::new(&mut image, SECTOR).unwrap();
        let mut fs: F<'_, '_> = Fs::mount(dev, &mut m).expect("mount");
        let fd = fs.open("/f", OpenFlags::WRITE).unwrap();
        let w = fs.write_at(fd, 40, &[0; 200]);
        // Whatever the write answered, the tree must not have been fed the file's bytes.
        let size = fs.stat("/f").map(|s| s.size);
        let _ = fs.open("/g", OpenFlags::WRITE | OpenFlags::CREATE);
        let _ = fs.sync_all();
        (w, size)
    }));
    let (w, size) = r.expect("a write through a hostile extent panicked");
    assert_eq!(w, Err(Error::Corrupt), "write answered {w:?}");
    assert_eq!(size, Ok(2 * BS as u64), "the tree still reads back");
}
