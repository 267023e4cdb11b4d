//! Without the `journal` feature: `fsync` is a checkpoint (nothing goes to the log, the
//! superblock moves on, and the data survives a power cut), and a volume whose log still
//! holds a record to replay (written by a build with the journal) is not mounted writable,
//! since writing without replaying would lose what the record made durable.
#![cfg(not(feature = "journal"))]

mod common;

use bonsaifs::device::{QueuedRamDisk, RamDisk, Trace};
use bonsaifs::fs::{Fs, OpenFlags};
use bonsaifs::volume::FormatOptions;
use bonsaifs::wire::log::LogOp;
use bonsaifs::Error;
use common::*;

type F<'b> = Fs<'b, Trace<QueuedRamDisk<'b>>, SLOTS, 8>;

/// The durable image after a power cut.
fn cut(fs: F<'_>) -> Vec<u8> {
    let mut dev = fs.into_device().into_inner();
    dev.power_cut();
    dev.durable_image().to_vec()
}

fn mount(image: Vec<u8>, m: &mut [u8]) -> bonsaifs::Result<F<'_>> {
    let c = cfg(image.len() as u64, 5);
    F::mount(Trace::new(QueuedRamDisk::from_image(c, image)), m)
}

#[test]
fn fsync_is_a_checkpoint_and_survives_a_power_cut() {
    let mut m = mem(4096);
    let dev = Trace::new(QueuedRamDisk::new(cfg(8 << 20, 3)));
    let mut fs = F::format(dev, &mut m, FormatOptions::default()).unwrap();
    let rw = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    let fd = fs.open("/f", rw).unwrap();
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    fs.write(fd, &data).unwrap();
    let gen = fs.volume().generation();
    fs.fsync(fd).unwrap();
    assert_eq!(fs.volume().generation(), gen + 1, "fsync must checkpoint");
    assert_eq!(fs.volume().log_records(), 0, "nothing may go to the log");
    // An overwrite and fsync: copy-on-write again, a new checkpoint.
    fs.write_at(fd, 100, &[0xee; 300]).unwrap();
    fs.fsync(fd).unwrap();
    assert_eq!(fs.volume().generation(), gen + 2);

    let mut m2 = mem(4096);
    let mut fs = mount(cut(fs), &mut m2).unwrap();
    let fd = fs.open("/f", OpenFlags::READ).unwrap();
    let mut got = vec![0u8; data.len()];
    assert_eq!(fs.read_at(fd, 0, &mut got).unwrap(), data.len());
    let mut want = data;
    want[100..400].fill(0xee);
    assert_eq!(got, want);
}

#[test]
fn a_record_to_replay_keeps_the_volume_from_a_writable_mount() {
    let mut m = mem(4096);
    let dev = Trace::new(QueuedRamDisk::new(cfg(8 << 20, 4)));
    let mut fs = F::format(dev, &mut m, FormatOptions::default()).unwrap();
    let fd = fs.open("/f", OpenFlags::WRITE | OpenFlags::CREATE).unwrap();
    fs.write(fd, b"checkpointed").unwrap();
    fs.close(fd).unwrap();
    fs.sync_all().unwrap();
    let ino = fs.stat("/f").unwrap().ino;
    // What a build with the journal leaves after an fsync: a committed record of this epoch.
    let op = LogOp::SetSize { ino, size: 5 };
    let mut rec = vec![0u8; op.encoded_len()];
    op.encode(&mut rec).unwrap();
    fs.volume_mut().log_append(&rec, 1, true).unwrap();
    let image = cut(fs);

    let mut m2 = mem(4096);
    assert_eq!(
        mount(image.clone(), &mut m2).err(),
        Some(Error::Unsupported)
    );
    // Read-only, it mounts and shows the last checkpoint.
    let mut image = image;
    let mut m3 = mem(4096);
    let dev = RamDisk::new(&mut image, 512).unwrap().read_only(true);
    let mut fs: Fs<'_, RamDisk<'_, '_>, SLOTS, 8> = Fs::mount(dev, &mut m3).unwrap();
    assert_eq!(fs.stat("/f").unwrap().size, 12);

    // Once checkpointed past (here: a fresh volume), nothing is refused.
    let mut m4 = mem(4096);
    let dev = Trace::new(QueuedRamDisk::new(cfg(8 << 20, 6)));
    let fs = F::format(dev, &mut m4, FormatOptions::default()).unwrap();
    let mut m5 = mem(4096);
    assert!(mount(cut(fs), &mut m5).is_ok());
}
