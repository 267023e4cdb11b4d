mod common;

use bonsaifs::device::{QueuedRamDisk, RamDisk};
use bonsaifs::fs::{FileKind, Fs, OpenFlags, SeekFrom};
use bonsaifs::volume::{memory_needed, FormatOptions};
use bonsaifs::Error;
use common::*;

type F<'b> = Fs<'b, QueuedRamDisk<'b>, SLOTS, 4>;

#[test]
fn files_dirs_rename_truncate_remount() {
    let mut m = mem(4096);
    let dev = QueuedRamDisk::new(cfg(32 << 20, 3));
    let mut fs = F::format(dev, &mut m, FormatOptions::default()).unwrap();
    let rw = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    fs.mkdir("/a").unwrap();
    fs.mkdir("/a/b").unwrap();
    assert_eq!(fs.mkdir("/a"), Err(Error::AlreadyExists));
    let fd = fs.open("/a/b/small", rw).unwrap();
    fs.write(fd, b"hello").unwrap();
    fs.write(fd, b" world").unwrap();
    fs.seek(fd, SeekFrom::Start(0)).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(fs.read(fd, &mut buf).unwrap(), 11);
    assert_eq!(&buf[..11], b"hello world");
    // Grow past inline into blocks, with a hole.
    fs.write_at(fd, 20_000, b"far").unwrap();
    assert_eq!(fs.fstat(fd).unwrap().size, 20_003);
    let mut big = vec![0u8; 20_003];
    assert_eq!(fs.read_at(fd, 0, &mut big).unwrap(), 20_003);
    assert_eq!(&big[..11], b"hello world");
    assert!(big[11..20_000].iter().all(|&b| b == 0));
    assert_eq!(&big[20_000..], b"far");
    fs.close(fd).unwrap();

    let fd = fs.open("/a/data", rw).unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs.write(fd, &data).unwrap();
    fs.sync_all().unwrap();
    let mut bits = vec![0u8; 8192];
    let rep = fs.volume_mut().fsck(&mut bits).unwrap();
    assert!(rep.is_clean(), "{rep:?}");
    assert_eq!(
        rep.data_blocks,
        74 + 2,
        "300 000 bytes in 74 blocks; the sparse file in 2"
    );
    // Overwrite the middle after the checkpoint (copy-on-write of committed blocks).
    fs.write_at(fd, 5000, &[9u8; 10_000]).unwrap();
    fs.truncate(fd, 100_001).unwrap();
    fs.truncate(fd, 150_000).unwrap();
    let mut back = vec![0u8; 150_000];
    assert_eq!(fs.read_at(fd, 0, &mut back).unwrap(), 150_000);
    let mut want = data[..150_000].to_vec();
    want[5000..15000].fill(9);
    want[100_001..].fill(0);
    assert_eq!(back, want);
    fs.close(fd).unwrap();

    fs.rename("/a/data", "/a/b/moved").unwrap();
    assert_eq!(fs.rename("/a", "/a/b/c"), Err(Error::InvalidPath));
    fs.rename("/a/b", "/b2").unwrap();
    assert_eq!(fs.stat("/b2/moved").unwrap().size, 150_000);
    assert_eq!(fs.stat("/a/b"), Err(Error::NotFound));
    assert_eq!(fs.rmdir("/b2"), Err(Error::DirectoryNotEmpty));
    assert_eq!(fs.stat("/b2/../a").unwrap().kind, FileKind::Dir);

    let mut names = vec![];
    let mut rd = fs.read_dir("/b2").unwrap();
    while let Some(e) = fs.read_dir_next(&mut rd).unwrap() {
        names.push(e.name().to_string());
    }
    assert_eq!(names, ["small", "moved"]);

    let dev = fs.unmount().unwrap();
    let image = dev.durable_image().to_vec();
    let mut m = mem(4096);
    let dev = QueuedRamDisk::from_image(cfg(image.len() as u64, 4), image);
    let mut fs = F::mount(dev, &mut m).unwrap();
    let fd = fs.open("/b2/moved", OpenFlags::READ).unwrap();
    let mut back2 = vec![0u8; 150_000];
    fs.read_at(fd, 0, &mut back2).unwrap();
    assert_eq!(back2, want);
    fs.close(fd).unwrap();
    fs.unlink("/b2/moved").unwrap();
    fs.unlink("/b2/small").unwrap();
    fs.rmdir("/b2").unwrap();
    fs.rmdir("/a").unwrap();
    assert_eq!(fs.statfs().inodes, 1);
    fs.sync_all().unwrap();
    let mut scratch = vec![0u8; fs.fsck_scratch_len()];
    let rep = fs.fsck(&mut scratch).unwrap();
    assert!(rep.is_clean(), "{rep:?}");
    assert_eq!(rep.inodes, 1);
}

#[test]
fn sequential_appends_make_few_extents() {
    let mut disk = vec![0u8; 64 << 20];
    let mut m = vec![0u8; memory_needed(512, 4096, SLOTS)];
    let dev = RamDisk::new(&mut disk, 512).unwrap();
    let mut fs: Fs<'_, _, SLOTS> = Fs::format(dev, &mut m, FormatOptions::default()).unwrap();
    let fd = fs
        .open(
            "/log",
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::APPEND,
        )
        .unwrap();
    let chunk = [0x5au8; 4096];
    for _ in 0..(16 << 20) / 4096 {
        fs.write(fd, &chunk).unwrap();
    }
    assert_eq!(fs.fstat(fd).unwrap().size, 16 << 20);
    let ino = fs.fstat(fd).unwrap().ino;
    let mut extents = 0;
    let mut from = bonsaifs::wire::Key::new(ino, bonsaifs::wire::items::kind::EXTENT, 0);
    let mut incl = true;
    while let Some(k) = fs.volume_mut().next(&from, incl, |k, _| k).unwrap() {
        if k.id != ino || k.kind != bonsaifs::wire::items::kind::EXTENT {
            break;
        }
        extents += 1;
        from = k;
        incl = false;
    }
    assert!(extents <= 4, "{extents} extents");
}

#[test]
fn fsck_finds_namespace_damage() {
    use bonsaifs::btree::InsertMode;
    use bonsaifs::wire::items::kind;
    use bonsaifs::wire::Key;
    let mut m = mem(4096);
    let dev = QueuedRamDisk::new(cfg(8 << 20, 5));
    let mut fs = F::format(dev, &mut m, FormatOptions::default()).unwrap();
    fs.mkdir("/d").unwrap();
    let fd = fs
        .open("/d/f", OpenFlags::WRITE | OpenFlags::CREATE)
        .unwrap();
    fs.write(fd, &[1u8; 10_000]).unwrap();
    fs.close(fd).unwrap();
    let mut scratch = vec![0u8; fs.fsck_scratch_len() + 64];
    assert!(fs.fsck(&mut scratch).unwrap().is_clean());
    let d = fs.stat("/d").unwrap().ino;
    let f = fs.stat("/d/f").unwrap().ino;
    // Drop the ordered index entry: the directory's size no longer matches.
    assert!(fs
        .volume_mut()
        .remove(&Key::new(d, kind::DIR_INDEX, 0))
        .unwrap());
    let rep = fs.fsck(&mut scratch).unwrap();
    assert!(!rep.is_clean());
    assert_eq!(rep.first_error.map(|e| e.0), Some(d));
    // An inode nobody names, and an extent past the end of a file.
    let inode = fs
        .volume_mut()
        .get(&Key::new(f, kind::INODE, 0), |v| v.to_vec())
        .unwrap()
        .unwrap();
    fs.volume_mut()
        .insert(
            Key::new(f + 100, kind::INODE, 0),
            &inode,
            InsertMode::Create,
        )
        .unwrap();
    let rep = fs.fsck(&mut vec![0u8; fs.fsck_scratch_len()]).unwrap();
    assert!(rep.errors >= 2, "{rep:?}");
}
