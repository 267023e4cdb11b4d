//! The `DSYNC` ordering invariant, checked on the device trace for every ticket; proof that the
//! check fails on deliberately broken pipelines; and the cost of queued sync writes.
//!
//! The invariant (DESIGN, "the NOWAIT+DSYNC pipeline"): when a `DSYNC` ticket is reported, each
//! of its data writes has completed and is durable, and so is a metadata write (a log record,
//! or a checkpoint's superblock) submitted after that data completed. A write is durable at a
//! point when it went with FUA to a device that honours FUA, or when a flush *submitted after
//! the write completed* has itself completed before that point.
#![cfg(feature = "nowait")]

use std::collections::HashMap;
use std::ops::Range;

use bonsaifs::device::{CommandKind, QueuedConfig, QueuedRamDisk, Trace, TraceEntry, TraceEvent};
use bonsaifs::fs::{Fd, Fs, OpenFlags, Ticket, WriteFlags, WriteStatus};
use bonsaifs::inject::Bugs;
use bonsaifs::volume::{memory_needed, FormatOptions};
use bonsaifs::Error;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const SLOTS: usize = 1024;
type Dev<'b> = Trace<QueuedRamDisk<'b>>;
type F<'b> = Fs<'b, Dev<'b>, SLOTS, 4>;
const BS: u64 = 4096;
const SPB: u64 = BS / 512;
const FILE: u64 = 8 << 20;

fn mem() -> Vec<u8> {
    vec![0u8; memory_needed(512, BS as usize, SLOTS)]
}

fn cfg(seed: u64, fua: bool) -> QueuedConfig {
    QueuedConfig {
        sector_count: (FILE + (24 << 20)) / 512,
        seed,
        fua,
        queue_depth: 64,
        max_polls: 8,
        ..QueuedConfig::default()
    }
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut r = SmallRng::seed_from_u64(seed);
    (0..len).map(|_| r.gen()).collect()
}

/// An 8 MiB file written and checkpointed, with the trace logging from here on.
fn setup(m: &mut [u8], seed: u64, fua: bool) -> (F<'_>, Fd) {
    let dev = Trace::new(QueuedRamDisk::new(cfg(seed, fua)));
    let mut fs = F::format(dev, m, FormatOptions::default()).unwrap();
    let fd = fs
        .open(
            "/data",
            OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE,
        )
        .unwrap();
    for i in 0..FILE / (1 << 20) {
        fs.write_at(fd, i << 20, &bytes(i, 1 << 20)).unwrap();
    }
    fs.sync_all().unwrap();
    fs.volume_mut().device_mut().set_logging(true);
    (fs, fd)
}

/// One queued `DSYNC` write as the test saw it.
#[derive(Debug, Clone)]
struct TicketRecord {
    /// Device blocks holding its data (read back right after queueing).
    blocks: Vec<u64>,
    /// Trace position when it was queued and when `poll` reported it.
    queued_at: u64,
    reported_at: u64,
}

/// The trace, indexed for the checker.
struct Indexed<'a> {
    log: &'a [TraceEntry],
    /// Submit position → completion position and success.
    completion: HashMap<u64, (u64, bool)>,
    /// Flushes as (submitted, completed) positions.
    flushes: Vec<(u64, u64)>,
    fua_device: bool,
}

impl<'a> Indexed<'a> {
    fn new(log: &'a [TraceEntry], fua_device: bool) -> Self {
        let mut open: HashMap<u32, u64> = HashMap::new();
        let mut completion = HashMap::new();
        let mut flushes = Vec::new();
        for e in log {
            match e.event {
                TraceEvent::Submit { tag, .. } => {
                    open.insert(tag, e.seq);
                }
                TraceEvent::Complete { tag, kind, ok, .. } => {
                    if let Some(s) = open.remove(&tag) {
                        completion.insert(s, (e.seq, ok));
                        if kind == CommandKind::Flush && ok {
                            flushes.push((s, e.seq));
                        }
                    }
                }
            }
        }
        Indexed {
            log,
            completion,
            flushes,
            fua_device,
        }
    }

    /// Is the write submitted at `s` (of `kind`) durable at trace position `at`?
    fn durable(&self, s: u64, kind: CommandKind, at: u64) -> bool {
        let Some(&(c, true)) = self.completion.get(&s) else {
            return false;
        };
        if c >= at {
            return false;
        }
        (kind == CommandKind::WriteFua && self.fua_device)
            || self.flushes.iter().any(|&(fs, fc)| fs > c && fc < at)
    }

    /// Writes submitted in `within` whose sectors overlap `lbas`, as (submit position, kind).
    fn writes(&self, within: Range<u64>, lbas: Range<u64>) -> Vec<(u64, CommandKind)> {
        self.log
            .iter()
            .filter(|e| within.contains(&e.seq))
            .filter_map(|e| match e.event {
                TraceEvent::Submit {
                    kind: kind @ (CommandKind::Write | CommandKind::WriteFua),
                    lba,
                    sectors,
                    ..
                } if lba < lbas.end && lba + sectors > lbas.start => Some((e.seq, kind)),
                _ => None,
            })
            .collect()
    }
}

/// Check one ticket; `Err` names the broken rule.
fn check_ticket(ix: &Indexed<'_>, t: &TicketRecord, meta: &[Range<u64>]) -> Result<(), String> {
    let window = t.queued_at..t.reported_at;
    let mut data_done = t.queued_at;
    for &b in &t.blocks {
        let Some(&(s, kind)) = ix.writes(window.clone(), b * SPB..(b + 1) * SPB).last() else {
            return Err(format!("block {b}: no data write before the report"));
        };
        match ix.completion.get(&s) {
            Some(&(c, true)) if c < t.reported_at => data_done = data_done.max(c),
            _ => return Err(format!("block {b}: data write @{s} not complete at report")),
        }
        if !ix.durable(s, kind, t.reported_at) {
            return Err(format!(
                "block {b}: data write @{s} not durable at report (no flush after it)"
            ));
        }
    }
    let committed = meta.iter().any(|area| {
        ix.writes(data_done + 1..t.reported_at, area.clone())
            .iter()
            .any(|&(s, kind)| ix.durable(s, kind, t.reported_at))
    });
    if !committed {
        return Err(format!(
            "no durable log record or superblock written after the data completed (@{data_done})"
        ));
    }
    Ok(())
}

/// Where metadata that commits a write lives: the log area and the two superblock copies.
fn meta_areas(fs: &F<'_>) -> Vec<Range<u64>> {
    let sb = fs.volume().superblock();
    let log = sb.log_start.get() * SPB..(sb.log_start.get() + sb.log_blocks.get()) * SPB;
    vec![log, 0..1, SPB..SPB + 1]
}

/// Random `DSYNC` writes (4 KiB or 64 KiB, some unaligned) at queue depth `qd`; returns each
/// ticket's record and the trace.
fn workload(
    fs: &mut F<'_>,
    fd: Fd,
    seed: u64,
    writes: usize,
    qd: usize,
) -> (Vec<TicketRecord>, Vec<TraceEntry>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut open: HashMap<Ticket, TicketRecord> = HashMap::new();
    let mut done = Vec::new();
    let mut issued = 0;
    let mut spins = 0u64;
    let pos = |fs: &F<'_>| fs.volume().device().log().len() as u64;
    while issued < writes || !open.is_empty() {
        spins += 1;
        assert!(spins < 10_000_000, "stuck: {}", fs.pipeline_state());
        while issued < writes && open.len() < qd {
            let len = if rng.gen_bool(0.5) { 4096 } else { 65536 };
            let mut off = rng.gen_range(0..FILE / BS - 16) * BS;
            if rng.gen_bool(0.2) {
                off += rng.gen_range(1..BS);
            }
            let len = len.min((FILE - off) as usize);
            let at = pos(fs);
            match fs.write_at_flags(
                fd,
                off,
                &bytes(seed * 1000 + issued as u64, len),
                WriteFlags::NOWAIT | WriteFlags::DSYNC,
            ) {
                Ok(WriteStatus::Queued(t)) => {
                    let first = off / BS;
                    let last = (off + len as u64 - 1) / BS;
                    let blocks = (first..=last)
                        .map(|f| fs.block_map(fd, f * BS).unwrap().unwrap())
                        .collect();
                    open.insert(
                        t,
                        TicketRecord {
                            blocks,
                            queued_at: at,
                            reported_at: 0,
                        },
                    );
                    issued += 1;
                }
                Err(Error::WouldBlock) => break,
                other => panic!("{other:?}"),
            }
        }
        if let Some((t, r)) = fs.poll() {
            assert!(r.is_ok(), "{r:?}");
            let mut rec = open
                .remove(&t)
                .expect("a report without a ticket, or twice");
            rec.reported_at = pos(fs);
            done.push(rec);
        }
    }
    (done, fs.volume().device().log().to_vec())
}

/// Run the workload and the checker; returns (tickets, violations, flushes).
fn run(seed: u64, fua: bool, bugs: Bugs, writes: usize) -> (usize, Vec<String>, u64) {
    let mut m = mem();
    let (mut fs, fd) = setup(&mut m, seed, fua);
    fs.inject_bugs(bugs);
    fs.volume_mut().device_mut().reset_counters();
    let (tickets, log) = workload(&mut fs, fd, seed, writes, 32);
    let flushes = fs.volume().device().counters().flushes;
    let ix = Indexed::new(&log, fua);
    let meta = meta_areas(&fs);
    let violations = tickets
        .iter()
        .filter_map(|t| check_ticket(&ix, t, &meta).err())
        .collect();
    (tickets.len(), violations, flushes)
}

#[test]
fn every_dsync_ticket_is_durable_when_reported() {
    for fua in [true, false] {
        let mut total = 0;
        for seed in 1..=4 {
            let (n, v, flushes) = run(seed, fua, Bugs::empty(), 150);
            assert!(
                v.is_empty(),
                "fua {fua} seed {seed}: {:?}",
                &v[..v.len().min(5)]
            );
            total += n;
            println!("fua {fua} seed {seed}: {n} tickets, {flushes} flushes");
        }
        assert_eq!(total, 600);
    }
}

#[test]
fn the_ordering_check_fails_on_a_broken_pipeline() {
    // A flush submitted before the data completes, tickets reported with it.
    for fua in [false, true] {
        let (n, v, _) = run(7, fua, Bugs::EARLY_FLUSH, 100);
        assert!(
            !v.is_empty(),
            "fua {fua}: EARLY_FLUSH went unnoticed over {n} tickets"
        );
        println!("EARLY_FLUSH fua {fua}: {} of {n} tickets violate", v.len());
    }
    // No flush at all on a device without FUA.
    let (n, v, flushes) = run(8, false, Bugs::SKIP_DEFERRED_FLUSH, 100);
    assert!(
        !v.is_empty(),
        "SKIP_DEFERRED_FLUSH went unnoticed over {n} tickets ({flushes} flushes)"
    );
    println!("SKIP_DEFERRED_FLUSH: {} of {n} tickets violate", v.len());
}

/// Device requests from queueing one write to its report.
fn queued_cost(fs: &mut F<'_>, fd: Fd, off: u64, data: &[u8]) -> bonsaifs::device::TraceCounters {
    fs.volume_mut().device_mut().reset_counters();
    let WriteStatus::Queued(t) = fs
        .write_at_flags(fd, off, data, WriteFlags::NOWAIT | WriteFlags::DSYNC)
        .unwrap()
    else {
        panic!("not queued")
    };
    for _ in 0..1_000_000 {
        if let Some((got, r)) = fs.poll() {
            assert_eq!((got, r), (t, Ok(data.len())));
            return fs.volume().device().counters();
        }
    }
    panic!("never reported: {}", fs.pipeline_state());
}

#[test]
fn a_queued_4k_dsync_overwrite_costs_two_writes() {
    for fua in [true, false] {
        let mut m = mem();
        let (mut fs, fd) = setup(&mut m, 3, fua);
        for i in 0..20u64 {
            let c = queued_cost(&mut fs, fd, (i * 37 % 2048) * BS, &bytes(i, 4096));
            assert!(c.writes <= 2, "fua {fua}, write {i}: {c:?}");
            assert!(c.bytes_written <= 4096 + 512, "fua {fua}, write {i}: {c:?}");
            if fua {
                // Data and record both with FUA: nothing to flush.
                assert_eq!(c.flushes, 0, "write {i}: {c:?}");
                assert_eq!(c.fua_writes, c.writes, "write {i}: {c:?}");
            } else {
                // The record carries the data's sum, so one flush covers data and record.
                assert_eq!(c.flushes, 1, "write {i}: {c:?}");
            }
        }
    }
}

#[test]
fn thirty_two_concurrent_dsync_writes_share_flushes() {
    for fua in [true, false] {
        let mut m = mem();
        let (mut fs, fd) = setup(&mut m, 5, fua);
        fs.volume_mut().device_mut().reset_counters();
        let mut tickets = Vec::new();
        for i in 0..32u64 {
            match fs.write_at_flags(
                fd,
                i * 7 * BS,
                &bytes(100 + i, 4096),
                WriteFlags::NOWAIT | WriteFlags::DSYNC,
            ) {
                Ok(WriteStatus::Queued(t)) => tickets.push(t),
                other => panic!("write {i}: {other:?}"),
            }
        }
        let mut got = Vec::new();
        for _ in 0..1_000_000 {
            if let Some((t, r)) = fs.poll() {
                assert_eq!(r, Ok(4096));
                got.push(t);
            }
            if got.len() == tickets.len() {
                break;
            }
        }
        assert_eq!(got.len(), 32, "{}", fs.pipeline_state());
        let c = fs.volume().device().counters();
        println!("fua {fua}: 32 concurrent DSYNC writes: {c:?}");
        assert!(c.flushes <= 8, "fua {fua}: {c:?}");
        // Group commit: far fewer log records than writes.
        assert!(c.writes <= 32 + 8, "fua {fua}: {c:?}");
    }
}
