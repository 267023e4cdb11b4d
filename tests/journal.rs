//! The journal: what `fsync` costs on the device, and what survives a power cut after it.
//! (Without the `journal` feature the survival tests still run: `fsync` checkpoints then.)

mod common;

use bonsaifs::device::{QueuedRamDisk, Trace};
use bonsaifs::fs::{Fs, OpenFlags};
use bonsaifs::volume::FormatOptions;
use common::*;

type F<'b> = Fs<'b, Trace<QueuedRamDisk<'b>>, SLOTS, 8>;

fn fresh<'b>(m: &'b mut [u8], bytes: u64) -> F<'b> {
    F::format(
        Trace::new(QueuedRamDisk::new(cfg(bytes, 11))),
        m,
        FormatOptions::default(),
    )
    .unwrap()
}

fn remount<'b>(fs: F<'_>, m: &'b mut [u8]) -> F<'b> {
    let mut dev = fs.into_device().into_inner();
    dev.power_cut();
    let image = dev.durable_image().to_vec();
    F::mount(
        Trace::new(QueuedRamDisk::from_image(
            cfg(image.len() as u64, 12),
            image,
        )),
        m,
    )
    .unwrap()
}

fn read_all(fs: &mut F<'_>, path: &str) -> Vec<u8> {
    let fd = fs.open(path, OpenFlags::READ).unwrap();
    let size = fs.fstat(fd).unwrap().size as usize;
    let mut v = vec![0u8; size];
    assert_eq!(fs.read_at(fd, 0, &mut v).unwrap(), size);
    fs.close(fd).unwrap();
    v
}

fn assert_fsck(fs: &mut F<'_>) {
    let mut scratch = vec![0u8; fs.fsck_scratch_len()];
    let rep = fs.fsck(&mut scratch).unwrap();
    assert!(rep.is_clean(), "{rep:?}");
}

#[test]
fn fsynced_create_then_large_write_survives_power_cut() {
    let mut m = mem(4096);
    let mut fs = fresh(&mut m, 16 << 20);
    let fd = fs
        .open("/f", OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE)
        .unwrap();
    fs.fsync(fd).unwrap();
    let data: Vec<u8> = (0..986u32).map(|i| i as u8).collect();
    fs.write(fd, &data).unwrap();
    fs.fsync(fd).unwrap();
    let mut m2 = mem(4096);
    let mut fs = remount(fs, &mut m2);
    assert_eq!(read_all(&mut fs, "/f"), data);
    assert_fsck(&mut fs);
}

#[test]
fn replay_of_inline_writes_and_creates() {
    let mut m = mem(4096);
    let mut fs = fresh(&mut m, 16 << 20);
    let rw = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    let fd = fs.open("/f0", rw).unwrap();
    fs.write(fd, &[1u8; 800]).unwrap();
    fs.close(fd).unwrap();
    let fd = fs.open("/a", rw).unwrap();
    fs.write(fd, &[2u8; 600]).unwrap();
    fs.close(fd).unwrap();
    fs.sync_all().unwrap();
    let h0 = fs.open("/f0", rw).unwrap();
    let _h1 = fs
        .open(
            "/f0",
            OpenFlags::READ | OpenFlags::APPEND | OpenFlags::CREATE,
        )
        .unwrap();
    let h2 = fs.open("/s", rw).unwrap();
    let h3 = fs.open("/a", rw).unwrap();
    fs.write(h0, &[3u8; 257]).unwrap();
    fs.write(h2, &[4u8; 1]).unwrap();
    fs.write_at(h2, 0, &[5u8; 257]).unwrap();
    fs.write(h3, &[6u8; 300]).unwrap();
    fs.fsync(h0).unwrap();
    let want_f0 = read_all(&mut fs, "/f0");
    let want_s = read_all(&mut fs, "/s");
    let want_a = read_all(&mut fs, "/a");
    let mut m2 = mem(4096);
    let mut fs = remount(fs, &mut m2);
    assert_eq!(read_all(&mut fs, "/f0"), want_f0);
    assert_eq!(read_all(&mut fs, "/s"), want_s);
    assert_eq!(read_all(&mut fs, "/a"), want_a);
    assert_fsck(&mut fs);
}

#[test]
fn replay_of_inline_file_growing_into_blocks() {
    let mut m = mem(4096);
    let mut fs = fresh(&mut m, 16 << 20);
    let rw = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    let fd = fs.open("/a", rw).unwrap();
    fs.write(fd, &[2u8; 600]).unwrap();
    fs.close(fd).unwrap();
    fs.sync_all().unwrap();
    let a = fs.open("/a", rw).unwrap();
    let s = fs
        .open(
            "/s",
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNC,
        )
        .unwrap();
    fs.write_at(s, 429, &[7u8; 557]).unwrap();
    fs.close(s).unwrap();
    let big: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
    fs.write(a, &big).unwrap();
    fs.fsync(a).unwrap();
    let want_a = read_all(&mut fs, "/a");
    let want_s = read_all(&mut fs, "/s");
    let mut m2 = mem(4096);
    let mut fs = remount(fs, &mut m2);
    assert_fsck(&mut fs);
    assert_eq!(read_all(&mut fs, "/a"), want_a);
    assert_eq!(read_all(&mut fs, "/s"), want_s);
}

/// The model test's starting image: a few directories, inline and block files, one sparse.
fn model_base() -> Vec<u8> {
    let mut m = mem(4096);
    let mut fs = F::format(
        Trace::new(QueuedRamDisk::new(cfg(4 << 20, 7))),
        &mut m,
        FormatOptions::default(),
    )
    .unwrap();
    for d in ["/d0", "/d1", "/d0/s"] {
        fs.mkdir(d).unwrap();
    }
    let files: [(&str, &[(u64, usize)]); 6] = [
        ("/a", &[(0, 600)]),
        ("/d0/a", &[(0, 900)]),
        ("/d0/b", &[(0, 20_000)]),
        ("/d1/a", &[(0, 700)]),
        ("/d1/b", &[(0, 100), (300_000, 3000)]),
        ("/d0/s/b", &[(0, 5000)]),
    ];
    for (p, writes) in files {
        let fd = fs.open(p, OpenFlags::WRITE | OpenFlags::CREATE).unwrap();
        for &(off, len) in writes {
            fs.write_at(fd, off, &vec![off as u8 ^ len as u8; len])
                .unwrap();
        }
        fs.close(fd).unwrap();
    }
    fs.mkdir("/z").unwrap();
    for i in 0..24 {
        let fd = fs
            .open(&format!("/z/f{i}"), OpenFlags::WRITE | OpenFlags::CREATE)
            .unwrap();
        fs.write(fd, &[i as u8; 800]).unwrap();
        fs.close(fd).unwrap();
    }
    fs.unmount().unwrap().into_inner().durable_image().to_vec()
}

#[test]
fn replay_on_the_model_base_image() {
    let base = model_base();
    let mut m = mem(4096);
    let mut fs = F::mount(
        Trace::new(QueuedRamDisk::from_image(cfg(base.len() as u64, 3), base)),
        &mut m,
    )
    .unwrap();
    let rw = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    let a = fs.open("/a", rw).unwrap();
    let s = fs
        .open(
            "/s",
            OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNC,
        )
        .unwrap();
    fs.close(s).unwrap();
    let big: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
    fs.write(a, &big).unwrap();
    fs.fsync(a).unwrap();
    let want_a = read_all(&mut fs, "/a");
    let mut m2 = mem(4096);
    let mut fs = remount(fs, &mut m2);
    assert_fsck(&mut fs);
    assert_eq!(read_all(&mut fs, "/a"), want_a);
}

#[test]
fn replay_of_overlapping_maps() {
    let mut m = mem(4096);
    let mut fs = fresh(&mut m, 16 << 20);
    fs.sync_all().unwrap();
    let s = fs
        .open("/s", OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE)
        .unwrap();
    fs.write_at(s, 429, &[7u8; 557]).unwrap();
    fs.write_at(s, 0, &[8u8; 8192]).unwrap();
    fs.fsync(s).unwrap();
    let want = read_all(&mut fs, "/s");
    let mut m2 = mem(4096);
    let mut fs = remount(fs, &mut m2);
    assert_fsck(&mut fs);
    assert_eq!(read_all(&mut fs, "/s"), want);
}

/// Device requests of `f`, counted on the trace.
#[cfg(feature = "journal")]
fn cost(fs: &mut F<'_>, f: impl FnOnce(&mut F<'_>)) -> bonsaifs::device::TraceCounters {
    fs.volume_mut().device_mut().reset_counters();
    f(fs);
    fs.volume().device().counters()
}

#[test]
#[cfg(feature = "journal")]
fn fsync_costs_one_log_record_not_a_checkpoint() {
    let mut m = mem(4096);
    let mut fs = fresh(&mut m, 32 << 20);
    let rw = OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE;
    let fd = fs.open("/data", rw).unwrap();
    let file: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    fs.write(fd, &file).unwrap();
    fs.sync_all().unwrap();
    let mut want = file.clone();

    // A 4 KiB overwrite plus fsync: the new data block, one log record, one flush.
    for i in 0..20u64 {
        let off = (i * 7919 % 256) * 4096;
        let block = [i as u8; 4096];
        let c = cost(&mut fs, |fs| {
            fs.write_at(fd, off, &block).unwrap();
            fs.fsync(fd).unwrap();
        });
        want[off as usize..off as usize + 4096].copy_from_slice(&block);
        assert!(c.writes <= 2, "overwrite {i}: {c:?}");
        assert!(c.flushes <= 1, "overwrite {i}: {c:?}");
        assert!(c.bytes_written <= 4096 + 512, "overwrite {i}: {c:?}");
    }

    // A 100-byte append plus fsync: the bytes travel in the record.
    fs.seek(fd, bonsaifs::fs::SeekFrom::End(0)).unwrap();
    for i in 0..50u8 {
        let line = [b'a' + (i % 26); 100];
        let c = cost(&mut fs, |fs| {
            fs.write(fd, &line).unwrap();
            fs.fsync(fd).unwrap();
        });
        want.extend_from_slice(&line);
        assert!(c.writes <= 1, "append {i}: {c:?}");
        assert!(c.bytes_written <= 1024, "append {i}: {c:?}");
        assert!(c.flushes <= 1, "append {i}: {c:?}");
    }
    fs.close(fd).unwrap();

    // All of it survives a power cut.
    let mut m2 = mem(4096);
    let mut fs = remount(fs, &mut m2);
    assert_eq!(read_all(&mut fs, "/data"), want);
    assert_fsck(&mut fs);
}

#[test]
fn replay_of_truncate_between_maps_of_one_block() {
    let mut m = mem(4096);
    let mut fs = fresh(&mut m, 4 << 20);
    let fd = fs
        .open("/s", OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE)
        .unwrap();
    fs.sync_all().unwrap();
    fs.write_at(fd, 0, &[1u8; 1000]).unwrap();
    fs.truncate(fd, 1).unwrap();
    fs.write_at(fd, 0, &[2u8; 1000]).unwrap();
    fs.fsync(fd).unwrap();
    let want = read_all(&mut fs, "/s");
    let mut m2 = mem(4096);
    let mut fs = remount(fs, &mut m2);
    assert_fsck(&mut fs);
    assert_eq!(read_all(&mut fs, "/s"), want);
}

/// Without FUA, an `fsync`'s data and its log record share one flush, the record carrying the
/// data's sums. Cut the power before that flush, keeping any subset of the unflushed writes
/// (the record without the data, among others): the file is wholly old or wholly new, never
/// the record pointing at blocks that did not arrive.
#[test]
#[cfg(feature = "journal")]
fn a_record_whose_data_did_not_arrive_is_not_replayed() {
    use bonsaifs::device::{FaultInjector, FaultPlan, IoError, QueuedConfig};
    type G<'b> = Fs<'b, FaultInjector<'b, QueuedRamDisk<'b>>, SLOTS, 8>;
    let dcfg = |bytes: u64, seed| QueuedConfig {
        fua: false,
        ..cfg(bytes, seed)
    };
    let old: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
    let new: Vec<u8> = (0..8192u32).map(|i| (i % 13 + 100) as u8).collect();
    let image = {
        let mut m = mem(4096);
        let dev = FaultInjector::new(
            QueuedRamDisk::new(dcfg(8 << 20, 1)),
            FaultPlan::None,
            IoError::Media,
        );
        let mut fs = G::format(dev, &mut m, FormatOptions::default()).unwrap();
        let fd = fs.open("/f", OpenFlags::WRITE | OpenFlags::CREATE).unwrap();
        fs.write(fd, &old).unwrap();
        fs.close(fd).unwrap();
        fs.unmount().unwrap().into_inner().durable_image().to_vec()
    };
    let mut want_new = old.clone();
    want_new[4096..4096 + new.len()].copy_from_slice(&new);
    // The fsync, with every request from `cut` on failing (the power is going).
    let scenario = |cut: u64, m: &mut [u8]| -> (QueuedRamDisk<'static>, bool) {
        let m: &'static mut [u8] = m.to_vec().leak();
        let dev = FaultInjector::new(
            QueuedRamDisk::from_image(dcfg(image.len() as u64, 2), image.clone()),
            FaultPlan::None,
            IoError::Media,
        );
        let mut fs = G::mount(dev, m).unwrap();
        let fd = fs.open("/f", OpenFlags::WRITE).unwrap();
        fs.write_at(fd, 4096, &new).unwrap();
        let start = fs.volume().device().submitted();
        fs.volume_mut()
            .device_mut()
            .set_plan(FaultPlan::From(start + cut));
        let synced = fs.fsync(fd).is_ok();
        (fs.into_device().into_inner(), synced)
    };
    let (mut states, mut olds, mut news) = (0, 0, 0);
    for cut in 0..6u64 {
        let n = scenario(cut, &mut mem(4096)).0.unflushed_writes();
        for subset in 0..1u32 << n {
            let (mut dev, synced) = scenario(cut, &mut mem(4096));
            dev.power_cut_keeping(|i| subset & (1 << i) != 0);
            let d = QueuedRamDisk::from_image(
                dcfg(image.len() as u64, 3),
                dev.durable_image().to_vec(),
            );
            let mut m2 = mem(4096);
            let mut fs = G::mount(
                FaultInjector::new(d, FaultPlan::None, IoError::Media),
                &mut m2,
            )
            .unwrap();
            let fd = fs.open("/f", OpenFlags::READ).unwrap();
            let mut got = vec![0u8; old.len()];
            assert_eq!(fs.read_at(fd, 0, &mut got).unwrap(), old.len());
            if got == want_new {
                news += 1;
            } else {
                assert!(
                    got == old,
                    "cut {cut} subset {subset:b}: neither old nor new"
                );
                assert!(!synced, "cut {cut}: fsync acknowledged, data lost");
                olds += 1;
            }
            let mut scratch = vec![0u8; fs.fsck_scratch_len()];
            assert!(fs.fsck(&mut scratch).unwrap().is_clean());
            states += 1;
        }
    }
    println!("{states} crash states: {olds} old, {news} new");
    assert!(olds > 0 && news > 0);
}

/// Without FUA, a 4 KiB overwrite plus `fsync` still costs two writes and one flush: the record
/// carries the data block's sum, so data and record share the flush.
#[test]
#[cfg(feature = "journal")]
fn fsync_without_fua_costs_one_flush() {
    let mut m = mem(4096);
    let dev = QueuedRamDisk::new(bonsaifs::device::QueuedConfig {
        fua: false,
        ..cfg(32 << 20, 13)
    });
    let mut fs = F::format(Trace::new(dev), &mut m, FormatOptions::default()).unwrap();
    let fd = fs
        .open(
            "/data",
            OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE,
        )
        .unwrap();
    fs.write(fd, &vec![7u8; 1 << 20]).unwrap();
    fs.sync_all().unwrap();
    let mut want = vec![7u8; 1 << 20];
    for i in 0..20u64 {
        let off = (i * 7919 % 256) * 4096;
        let block = [i as u8 + 1; 4096];
        let c = cost(&mut fs, |fs| {
            fs.write_at(fd, off, &block).unwrap();
            fs.fsync(fd).unwrap();
        });
        want[off as usize..off as usize + 4096].copy_from_slice(&block);
        assert!(c.writes <= 2, "overwrite {i}: {c:?}");
        assert_eq!(c.flushes, 1, "overwrite {i}: {c:?}");
        assert!(c.bytes_written <= 4096 + 512, "overwrite {i}: {c:?}");
    }
    fs.close(fd).unwrap();
    let mut m2 = mem(4096);
    let mut fs = remount(fs, &mut m2);
    assert_eq!(read_all(&mut fs, "/data"), want);
    assert_fsck(&mut fs);
}

#[test]
fn a_volume_formatted_without_a_journal_syncs_by_checkpoint() {
    let mut m = mem(4096);
    let opts = FormatOptions {
        log_blocks: Some(0),
        ..FormatOptions::default()
    };
    let mut fs = F::format(
        Trace::new(QueuedRamDisk::new(cfg(8 << 20, 13))),
        &mut m,
        opts,
    )
    .unwrap();
    let fd = fs
        .open("/f", OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE)
        .unwrap();
    let mut want = Vec::new();
    for i in 0..20u8 {
        let chunk = vec![i; 700];
        fs.write(fd, &chunk).unwrap();
        want.extend_from_slice(&chunk);
        fs.fsync(fd).unwrap();
    }
    let mut m2 = mem(4096);
    let mut fs = remount(fs, &mut m2);
    assert_eq!(read_all(&mut fs, "/f"), want);
    assert_fsck(&mut fs);
}
