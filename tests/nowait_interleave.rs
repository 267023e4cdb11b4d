//! Exactly-once reporting under fuzzed interleavings of queued writes, polls, `WouldBlock`,
//! `NOWAIT` reads and blocking calls: every queued ticket is reported once, no report arrives
//! without a ticket, reads always see the latest bytes, and the file survives a remount.
#![cfg(feature = "nowait")]

use std::collections::HashSet;

use bonsaifs::device::{QueuedConfig, QueuedRamDisk};
use bonsaifs::fs::{Fs, OpenFlags, ReadFlags, Ticket, WriteFlags, WriteStatus};
use bonsaifs::volume::{memory_needed, FormatOptions};
use bonsaifs::Error;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

const SLOTS: usize = 48;
type F<'b> = Fs<'b, QueuedRamDisk<'b>, SLOTS, 4>;
const FILE: usize = 256 << 10;

#[derive(Debug, Clone)]
enum Action {
    /// A `NOWAIT` write (with or without `DSYNC`) of `len` bytes at `off`.
    Queue { off: usize, len: usize, dsync: bool },
    /// `n` polls.
    Poll(u8),
    /// A blocking write.
    Write { off: usize, len: usize },
    /// A blocking `fsync`.
    Fsync,
    /// A `NOWAIT` read, retried by the test only through later actions.
    ReadNowait { off: usize, len: usize },
    /// A blocking read.
    Read { off: usize, len: usize },
    /// A checkpoint.
    SyncAll,
    /// Shrink or grow the file (a blocking metadata change with writes in flight).
    Truncate(usize),
}

fn action() -> impl Strategy<Value = Action> {
    let off = 0..FILE - 1;
    let len = prop_oneof![1usize..200, 4096usize..4097, 1usize..40_000];
    prop_oneof![
        6 => (off.clone(), len.clone(), any::<bool>())
            .prop_map(|(off, len, dsync)| Action::Queue { off, len, dsync }),
        6 => (1u8..20).prop_map(Action::Poll),
        1 => (off.clone(), len.clone()).prop_map(|(off, len)| Action::Write { off, len }),
        1 => Just(Action::Fsync),
        2 => (off.clone(), 1usize..20_000).prop_map(|(off, len)| Action::ReadNowait { off, len }),
        1 => (off.clone(), 1usize..20_000).prop_map(|(off, len)| Action::Read { off, len }),
        1 => Just(Action::SyncAll),
        1 => (0..FILE).prop_map(Action::Truncate),
    ]
}

fn fill(tag: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + tag * 101 + 1) as u8).collect()
}

/// Write `data` at `off` into the model.
fn model_write(model: &mut Vec<u8>, off: usize, data: &[u8]) {
    if model.len() < off + data.len() {
        model.resize(off + data.len(), 0);
    }
    model[off..off + data.len()].copy_from_slice(data);
}

fn check_read(model: &[u8], off: usize, got: &[u8]) {
    let want = model.get(off..).unwrap_or(&[]);
    let want = &want[..want.len().min(got.len())];
    assert!(got == want, "read at {off}: {} bytes differ", got.len());
}

fn run(seed: u64, fua: bool, depth: u16, actions: &[Action]) -> (usize, usize) {
    let mut m = vec![0u8; memory_needed(512, 4096, SLOTS)];
    let dev = QueuedRamDisk::new(QueuedConfig {
        sector_count: (8 << 20) / 512,
        seed,
        fua,
        queue_depth: depth,
        max_polls: 6,
        ..QueuedConfig::default()
    });
    let mut fs = F::format(dev, &mut m, FormatOptions::default()).unwrap();
    let fd = fs
        .open("/f", OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE)
        .unwrap();
    let mut model = Vec::new();
    let mut open: HashSet<Ticket> = HashSet::new();
    let mut seen: HashSet<Ticket> = HashSet::new();
    let mut would_block = 0;
    let mut report = |t: Ticket, r: bonsaifs::Result<usize>, open: &mut HashSet<Ticket>| {
        assert!(r.is_ok(), "ticket {t:?}: {r:?}");
        assert!(
            open.remove(&t),
            "ticket {t:?} reported without being queued"
        );
        assert!(seen.insert(t), "ticket {t:?} reported twice");
    };
    let mut buf = vec![0u8; 40_000];
    for (i, a) in actions.iter().enumerate() {
        match *a {
            Action::Queue { off, len, dsync } => {
                let data = fill(i, len);
                let flags = if dsync {
                    WriteFlags::NOWAIT | WriteFlags::DSYNC
                } else {
                    WriteFlags::NOWAIT
                };
                match fs.write_at_flags(fd, off as u64, &data, flags) {
                    Ok(WriteStatus::Queued(t)) => {
                        assert!(open.insert(t), "ticket {t:?} handed out twice");
                        model_write(&mut model, off, &data);
                    }
                    Ok(WriteStatus::Done(n)) => panic!("NOWAIT write done at once ({n})"),
                    // Nothing happened: the model stays as it is.
                    Err(Error::WouldBlock) => would_block += 1,
                    Err(e) => panic!("queue: {e:?}"),
                }
            }
            Action::Poll(n) => {
                for _ in 0..n {
                    if let Some((t, r)) = fs.poll() {
                        report(t, r, &mut open);
                    }
                }
            }
            Action::Write { off, len } => {
                let data = fill(i, len);
                assert_eq!(fs.write_at(fd, off as u64, &data), Ok(len));
                model_write(&mut model, off, &data);
            }
            Action::Fsync => fs.fsync(fd).unwrap(),
            Action::ReadNowait { off, len } => {
                match fs.read_at_flags(fd, off as u64, &mut buf[..len], ReadFlags::NOWAIT) {
                    Ok(n) => check_read(&model, off, &buf[..n]),
                    Err(Error::WouldBlock) => would_block += 1,
                    Err(e) => panic!("nowait read: {e:?}"),
                }
            }
            Action::Read { off, len } => {
                let n = fs.read_at(fd, off as u64, &mut buf[..len]).unwrap();
                assert_eq!(n, model.len().saturating_sub(off).min(len));
                check_read(&model, off, &buf[..n]);
            }
            Action::SyncAll => fs.sync_all().unwrap(),
            Action::Truncate(size) => {
                fs.truncate(fd, size as u64).unwrap();
                model.resize(size, 0);
            }
        }
    }
    // Every ticket still open is reported, once, within a bounded number of polls.
    for _ in 0..1_000_000 {
        if open.is_empty() {
            break;
        }
        if let Some((t, r)) = fs.poll() {
            report(t, r, &mut open);
        }
    }
    assert!(
        open.is_empty(),
        "never reported: {open:?}; {}",
        fs.pipeline_state()
    );
    for _ in 0..1000 {
        assert_eq!(fs.poll(), None, "a report after every ticket was reported");
    }
    // The file as the model says, also after a remount.
    fs.close(fd).unwrap();
    let dev = fs.unmount().unwrap();
    let mut m2 = vec![0u8; memory_needed(512, 4096, SLOTS)];
    let mut fs = F::mount(dev, &mut m2).unwrap();
    let fd = fs.open("/f", OpenFlags::READ).unwrap();
    let mut all = vec![0u8; model.len() + 1];
    assert_eq!(fs.read_at(fd, 0, &mut all).unwrap(), model.len());
    assert!(all[..model.len()] == model[..], "contents after remount");
    (seen.len(), would_block)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if cfg!(miri) { 2 } else { 300 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_ticket_is_reported_exactly_once(
        seed in any::<u64>(),
        fua in any::<bool>(),
        depth in prop_oneof![Just(1u16), Just(4), Just(32)],
        actions in prop::collection::vec(action(), 1..80),
    ) {
        run(seed, fua, depth, &actions);
    }
}

/// The same over a fixed set of long sequences, so the totals show in the log.
#[test]
fn long_interleavings_summary() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strat = prop::collection::vec(action(), 300..400);
    let (mut tickets, mut blocked) = (0, 0);
    for case in 0..20u64 {
        let actions = strat.new_tree(&mut runner).unwrap().current();
        let (t, b) = run(case, case % 2 == 0, [1, 4, 32][case as usize % 3], &actions);
        tickets += t;
        blocked += b;
    }
    println!("20 long interleavings: {tickets} tickets reported once each, {blocked} WouldBlock");
    assert!(tickets > 500, "too few tickets to mean anything: {tickets}");
    assert!(blocked > 0, "no WouldBlock exercised");
}

/// The shrunk proptest case: a `NOWAIT` read that misses the cache (action 21) leaves its
/// read in flight and answers `WouldBlock`; the `fsync` after it drives the queued writes to
/// their end, but used to write its log record with the blocking device helper while that read
/// was still queued, which refuses (`Io(Unsupported)`), failing the `fsync` and turning the
/// volume read-only. A sync point must wait for every request in flight, not only the
/// pipeline's.
#[test]
fn fsync_waits_for_a_nowait_read_still_in_flight() {
    use Action::*;
    let q = |off, len, dsync| Queue { off, len, dsync };
    let actions = [
        q(155648, 12289, false),
        q(0, 1, false),
        q(249568, 37153, false),
        q(94209, 4096, false),
        q(102286, 115, false),
        ReadNowait {
            off: 153961,
            len: 9880,
        },
        q(4096, 1, true),
        q(0, 16385, false),
        q(20342, 139, true),
        q(23847, 4096, false),
        Write {
            off: 106130,
            len: 33135,
        },
        SyncAll,
        SyncAll,
        q(53338, 20391, false),
        q(1, 4096, true),
        q(139265, 4096, true),
        SyncAll,
        q(65536, 1, false),
        q(22459, 26694, false),
        q(45760, 7489, false),
        Poll(7),
        ReadNowait {
            off: 230970,
            len: 14791,
        },
        Fsync,
    ];
    let (_, would_block) = run(0, false, 4, &actions);
    assert!(
        would_block >= 1,
        "the NOWAIT reads were all served from the cache"
    );
}

/// The other blocking request of a sync point: with no FUA, a record whose `MAP` cannot carry
/// data sums (some of its blocks were evicted) is preceded by a flush. Queued writes leave
/// their blocks clean in the cache (so the sync point has nothing to write back and waits for
/// nothing), reads evict some of them, and a `NOWAIT` read of a block that is not cached is
/// still in flight when the `fsync` flushes.
#[test]
fn fsync_flush_waits_for_a_nowait_read_still_in_flight() {
    use Action::*;
    let mut actions = Vec::new();
    for k in 0..FILE / 32768 {
        actions.push(Write {
            off: k * 32768,
            len: 32768,
        });
    }
    actions.push(SyncAll);
    for k in 0..3 {
        actions.push(Queue {
            off: k * 49152,
            len: 49152,
            dsync: false,
        });
        actions.push(Poll(200));
    }
    for k in 0..3 {
        actions.push(Read {
            off: 150_000 + k * 20_000,
            len: 20_000,
        });
    }
    actions.push(ReadNowait {
        off: FILE - 100,
        len: 100,
    });
    actions.push(Fsync);
    // The NOWAIT read (and nothing else) answered WouldBlock: it was left in flight.
    assert_eq!(run(0, false, 4, &actions), (3, 1));
}
