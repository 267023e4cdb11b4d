//! `NOWAIT | DSYNC` writes through the ticket pipeline: the seed's regression test (shaped like
//! fstests generic/703), exactly-once reporting, and group commit.
#![cfg(feature = "nowait")]

use std::collections::{BTreeMap, HashMap};

use bonsaifs::device::{QueuedConfig, QueuedRamDisk};
use bonsaifs::fs::{Fd, Fs, OpenFlags, Ticket, WriteFlags, WriteStatus};
use bonsaifs::volume::{memory_needed, FormatOptions};
use bonsaifs::Error;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A large cache: 32 writes of 64 KiB in flight hold 512 blocks.
const BIG: usize = 1024;
type F<'b> = Fs<'b, QueuedRamDisk<'b>, BIG, 4>;

const PIECE: usize = 64 << 10;

fn cfg(bytes: u64, seed: u64, fua: bool) -> QueuedConfig {
    QueuedConfig {
        sector_count: bytes / 512,
        seed,
        fua,
        queue_depth: 64,
        ..QueuedConfig::default()
    }
}

fn mem() -> Vec<u8> {
    vec![0u8; memory_needed(512, 4096, BIG)]
}

fn piece(slot: usize, round: u64) -> Vec<u8> {
    let mut r = SmallRng::seed_from_u64(slot as u64 * 7919 + round);
    (0..PIECE).map(|_| r.gen()).collect()
}

/// Write the whole file once (blocking) and checkpoint; returns the image.
fn base(file: usize, fua: bool) -> Vec<u8> {
    let mut m = mem();
    let dev = QueuedRamDisk::new(cfg((file + (16 << 20)) as u64, 1, fua));
    let mut fs = F::format(dev, &mut m, FormatOptions::default()).unwrap();
    let fd = fs
        .open(
            "/data",
            OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE,
        )
        .unwrap();
    for slot in 0..file / PIECE {
        fs.write_at(fd, (slot * PIECE) as u64, &piece(slot, 0))
            .unwrap();
    }
    fs.close(fd).unwrap();
    fs.unmount().unwrap().durable_image().to_vec()
}

/// One run: random distinct 64 KiB slots written with NOWAIT|DSYNC at queue depth `qd`; the
/// power is cut once `cut_after` tickets have been reported. Every reported write must read
/// back exactly after remount; every other slot holds its old or its new bytes.
fn run(
    image: &[u8],
    seed: u64,
    writes: usize,
    qd: usize,
    cut_after: usize,
    fua: bool,
) -> (usize, usize) {
    let mut m = mem();
    let dev = QueuedRamDisk::from_image(cfg(image.len() as u64, seed, fua), image.to_vec());
    let mut fs = F::mount(dev, &mut m).unwrap();
    let fd = fs
        .open("/data", OpenFlags::READ | OpenFlags::WRITE)
        .unwrap();
    let slots = (fs.fstat(fd).unwrap().size as usize) / PIECE;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..slots).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.gen_range(0..=i));
    }
    let order = &order[..writes.min(slots)];
    let mut queued: HashMap<Ticket, usize> = HashMap::new();
    let mut reported: Vec<usize> = Vec::new();
    let mut next = 0;
    let mut would_block = 0usize;
    let mut spins = 0u64;
    while reported.len() < cut_after && (next < order.len() || !queued.is_empty()) {
        spins += 1;
        assert!(
            spins < 5_000_000,
            "stuck: next {next} queued {} reported {} would_block {would_block} fs queued {} {}",
            queued.len(),
            reported.len(),
            fs.queued(),
            fs.pipeline_state()
        );
        while next < order.len() && queued.len() < qd {
            let slot = order[next];
            match fs.write_at_flags(
                fd,
                (slot * PIECE) as u64,
                &piece(slot, 1),
                WriteFlags::NOWAIT | WriteFlags::DSYNC,
            ) {
                Ok(WriteStatus::Queued(t)) => {
                    assert!(
                        queued.insert(t, slot).is_none(),
                        "ticket reused while queued"
                    );
                    next += 1;
                }
                Ok(WriteStatus::Done(n)) => panic!("a queued write finished at once ({n})"),
                Err(Error::WouldBlock) => {
                    would_block += 1;
                    break;
                }
                Err(e) => panic!("seed {seed}: write: {e:?} {}", fs.pipeline_state()),
            }
        }
        if let Some((t, r)) = fs.poll() {
            let slot = queued
                .remove(&t)
                .expect("a completion without a ticket, or twice");
            assert_eq!(r, Ok(PIECE));
            reported.push(slot);
        }
    }
    let _ = would_block;
    // Power cut: only what is durable survives.
    let mut dev = fs.into_device();
    dev.power_cut();
    let after = dev.durable_image().to_vec();
    let mut m2 = mem();
    let dev = QueuedRamDisk::from_image(cfg(after.len() as u64, seed + 1, fua), after);
    let mut fs = F::mount(dev, &mut m2).unwrap();
    let mut scratch = vec![0u8; fs.fsck_scratch_len()];
    let rep = fs.fsck(&mut scratch).unwrap();
    assert!(rep.is_clean(), "seed {seed}: {rep:?}");
    let fd = fs.open("/data", OpenFlags::READ).unwrap();
    let done: BTreeMap<usize, ()> = reported.iter().map(|&s| (s, ())).collect();
    let mut buf = vec![0u8; PIECE];
    for &slot in order {
        fs.read_at(fd, (slot * PIECE) as u64, &mut buf).unwrap();
        if done.contains_key(&slot) {
            assert!(
                buf == piece(slot, 1),
                "seed {seed}: reported write to slot {slot} lost"
            );
        } else {
            assert!(
                buf == piece(slot, 1) || buf == piece(slot, 0),
                "seed {seed}: slot {slot} is neither its old nor its new bytes"
            );
        }
    }
    (reported.len(), queued.len())
}

#[test]
fn seed_regression_nowait_dsync_survives_power_cut() {
    let file = 64 << 20;
    let image = base(file, true);
    let image_no_fua = base(file, false);
    let mut total = 0;
    for seed in 0..seeds() {
        // At least 1000 writes issued before the cut; the cut instant moves with the seed.
        let cut = 1000 + (seed as usize * 7) % 24;
        // Odd seeds on a device without FUA: data and record then share one flush.
        let fua = seed % 2 == 0;
        let image = if fua { &image } else { &image_no_fua };
        let (reported, in_flight) = run(image, seed, 1024, 32, cut, fua);
        assert!(reported >= cut);
        total += reported;
        println!("seed {seed} fua {fua}: cut after {reported} reports, {in_flight} in flight");
    }
    println!("{total} reported NOWAIT|DSYNC writes checked after power cuts");
}

/// A 1 MiB `/data` written and checkpointed, mounted on a FUA device, and opened for writing.
fn mount_data(m: &mut [u8]) -> (F<'_>, Fd) {
    let image = base(1 << 20, true);
    let dev = QueuedRamDisk::from_image(cfg(image.len() as u64, 5, true), image);
    let mut fs = F::mount(dev, m).unwrap();
    let fd = fs
        .open("/data", OpenFlags::READ | OpenFlags::WRITE)
        .unwrap();
    (fs, fd)
}

#[test]
fn one_queued_dsync_write_is_reported_once() {
    let mut m = mem();
    let (mut fs, fd) = mount_data(&mut m);
    let st = fs
        .write_at_flags(fd, 0, &piece(0, 1), WriteFlags::NOWAIT | WriteFlags::DSYNC)
        .unwrap();
    let WriteStatus::Queued(t) = st else {
        panic!("{st:?}")
    };
    let mut got = Vec::new();
    for _ in 0..100_000 {
        if let Some(r) = fs.poll() {
            got.push(r);
        }
    }
    assert_eq!(got, vec![(t, Ok(PIECE))]);
}

/// A queued write past the largest file size is refused as a blocking one is, before any
/// arithmetic on its range (an offset near `u64::MAX` used to overflow it).
#[test]
fn a_queued_write_past_the_largest_file_is_too_large() {
    let mut m = mem();
    let (mut fs, fd) = mount_data(&mut m);
    let flags = WriteFlags::NOWAIT | WriteFlags::DSYNC;
    let max = bonsaifs::fs::MAX_FILE_SIZE;
    for offset in [u64::MAX - 3, u64::MAX - 4096, max - 1, max] {
        let r = fs.write_at_flags(fd, offset, &[1, 2, 3, 4, 5], flags);
        assert_eq!(r, Err(Error::TooLarge), "offset {offset}");
        assert_eq!(
            fs.write_at(fd, offset, &[1, 2, 3, 4, 5]),
            Err(Error::TooLarge)
        );
    }
    // Up to the limit exactly is fine.
    let st = fs
        .write_at_flags(fd, max - 5, &[1, 2, 3, 4, 5], flags)
        .unwrap();
    let mut done = matches!(st, WriteStatus::Done(5));
    for _ in 0..100_000 {
        if done {
            break;
        }
        done = matches!(fs.poll(), Some((_, Ok(5))));
    }
    assert!(done, "{st:?}");
    assert_eq!(fs.fstat(fd).unwrap().size, max);
}

#[test]
fn many_queued_dsync_writes_group_commit() {
    let image = base(8 << 20, true);
    let mut m = mem();
    let dev = QueuedRamDisk::from_image(cfg(image.len() as u64, 5, true), image);
    let mut fs = F::mount(dev, &mut m).unwrap();
    let fd = fs
        .open("/data", OpenFlags::READ | OpenFlags::WRITE)
        .unwrap();
    let mut tickets = Vec::new();
    for slot in 0..32 {
        match fs.write_at_flags(
            fd,
            (slot * PIECE) as u64,
            &piece(slot, 1),
            WriteFlags::NOWAIT | WriteFlags::DSYNC,
        ) {
            Ok(WriteStatus::Queued(t)) => tickets.push(t),
            Err(Error::WouldBlock) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(tickets.len() >= 8, "only {} queued", tickets.len());
    let mut got = Vec::new();
    for _ in 0..1_000_000 {
        if let Some((t, r)) = fs.poll() {
            assert_eq!(r, Ok(PIECE));
            got.push(t);
        }
        if got.len() == tickets.len() {
            break;
        }
    }
    got.sort();
    tickets.sort();
    assert_eq!(got, tickets);
}

fn seeds() -> u64 {
    std::env::var("NOWAIT_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}
