//! `qd`: `NOWAIT | DSYNC` random overwrites at queue depth 1, 8 and 32 over a queued device
//! with a fixed per-request latency in wall time.
//!
//! ```sh
//! cargo run --release -p bonsaifs-bench --bin qd                    # the table
//! cargo run --release -p bonsaifs-bench --bin qd -- --csv           # CSV
//! cargo run --release -p bonsaifs-bench --bin qd -- --quick         # CI smoke run (seconds)
//! cargo run --release -p bonsaifs-bench --bin qd -- --markdown F    # Markdown section to F
//! ```
//!
//! # The device model
//!
//! [`Delayed`] sits in front of the core's [`QueuedRamDisk`] (volatile write cache, FUA on or
//! off) and gives every request — read, write, FUA write or flush alike — the same fixed
//! latency `L` in wall time: a request submitted at `t` completes at `t + L`, and `poll` does
//! not return it before then. Requests in flight do not slow each other down (the device
//! serves up to its queue depth in parallel, as an NVMe drive with enough channels does), so
//! the only thing that can raise throughput is keeping more requests in flight and sharing
//! flushes and log records between them. At the completion instant the request is handed to
//! the `QueuedRamDisk`, which applies it to its volatile and durable images with the
//! durability rules of NVMe and virtio (a flush covers only writes completed before it was
//! submitted). Completions come out in submission order (equal latencies).
//!
//! # The workload
//!
//! A 32 MiB file is written and checkpointed first (with the latency switched off). Then
//! `ops` overwrites of `io` bytes each, at `io`-aligned pseudo-random offsets, go through
//! `Fs::write_at_flags(.., NOWAIT | DSYNC)`, keeping up to `qd` tickets in flight: a new write
//! is issued whenever fewer than `qd` are queued; `Err(WouldBlock)` (cache or device queue
//! full, a block still in flight, metadata not cached) means "poll first". `Fs::poll` reports
//! tickets; the run ends when all `ops` are reported. Each reported ticket is durable.
//! Counts come from a `Trace` between the filesystem and the delayed device.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bonsaifs::device::{
    BlockDevice, Busy, Completion, Geometry, QueuedConfig, QueuedRamDisk, Request, Trace,
    TraceCounters,
};
use bonsaifs::fs::{Fs, OpenFlags, Ticket, WriteFlags, WriteStatus};
use bonsaifs::volume::{memory_needed, FormatOptions};
use bonsaifs::Error;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Cache slots: 32 tickets of 64 KiB hold 512 blocks while queued, plus tree paths.
const SLOTS: usize = 1024;
const SECTOR: usize = 512;
const BLOCK: usize = 4096;
/// The device: 128 MiB (two images of it in RAM: volatile and durable).
const DISK_BYTES: u64 = 128 << 20;
/// The file the overwrites land in.
const FILE_BYTES: u64 = 32 << 20;

type Dev<'b> = Trace<Delayed<'b>>;
type QFs<'b> = Fs<'b, Dev<'b>, SLOTS>;

/// A [`QueuedRamDisk`] whose every request completes a fixed wall-clock latency after its
/// submission (see the module documentation).
pub struct Delayed<'b> {
    inner: QueuedRamDisk<'b>,
    latency: Duration,
    depth: u16,
    /// Requests in flight with their completion instants, earliest first.
    queue: VecDeque<(Instant, Request<'b>)>,
    /// Sum of (instant `poll` returned a completion - its due instant): how late the
    /// filesystem reaped completions.
    pub late: Duration,
    /// Completions returned.
    pub reaped: u64,
}

impl<'b> Delayed<'b> {
    /// A `bytes`-byte device of depth `depth`, with or without FUA, latency `latency`.
    pub fn new(bytes: u64, depth: u16, fua: bool, latency: Duration) -> Self {
        let cfg = QueuedConfig {
            sector_size: SECTOR as u32,
            sector_count: bytes / SECTOR as u64,
            queue_depth: depth,
            volatile_cache: true,
            fua,
            // The inner device completes at the first poll: the delay is ours.
            min_polls: 1,
            max_polls: 1,
            seed: 1,
        };
        // Both images pre-faulted (`from_image` clones this one for the other), so that no
        // measurement pays the kernel's first-touch page faults.
        let mut image = vec![0u8; bytes as usize];
        for i in (0..image.len()).step_by(4096) {
            image[i] = std::hint::black_box(0);
        }
        Delayed {
            inner: QueuedRamDisk::from_image(cfg, image),
            latency,
            depth,
            queue: VecDeque::new(),
            late: Duration::ZERO,
            reaped: 0,
        }
    }

    /// Latency of requests submitted from now on; restarts the reap statistics.
    pub fn set_latency(&mut self, latency: Duration) {
        self.latency = latency;
        self.late = Duration::ZERO;
        self.reaped = 0;
    }
}

impl<'b> BlockDevice<'b> for Delayed<'b> {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    fn submit(&mut self, req: Request<'b>) -> Result<(), Busy<'b>> {
        if self.queue.len() >= usize::from(self.depth) {
            return Err(Busy(req));
        }
        let due = Instant::now() + self.latency;
        self.queue.push_back((due, req));
        Ok(())
    }

    fn poll(&mut self) -> Option<Completion<'b>> {
        let (due, _) = self.queue.front()?;
        let now = Instant::now();
        if !self.latency.is_zero() && now < *due {
            return None;
        }
        let (due, req) = self.queue.pop_front()?;
        self.late += now.saturating_duration_since(due);
        self.reaped += 1;
        // Nothing else is inside the inner device: it takes the request and, with a latency
        // of one poll, returns it at the next poll.
        if let Err(Busy(req)) = self.inner.submit(req) {
            self.queue.push_front((Instant::now(), req));
            return None;
        }
        loop {
            if let Some(c) = self.inner.poll() {
                return Some(c);
            }
        }
    }

    fn in_flight(&self) -> usize {
        self.queue.len()
    }
}

/// One configuration of the run.
#[derive(Debug, Clone, Copy)]
struct Case {
    io: usize,
    fua: bool,
    qd: u16,
}

/// What one configuration measured.
#[derive(Debug, Clone)]
struct Outcome {
    case: Case,
    ops: u64,
    elapsed: Duration,
    /// Sum over reported tickets of (report instant - issue instant).
    ticket_time: Duration,
    would_block: u64,
    /// Mean time from a completion being due to the filesystem reaping it: how far behind
    /// the device the filesystem's CPU work runs.
    reap_delay: Duration,
    c: TraceCounters,
}

impl Outcome {
    fn per_op(&self, v: u64) -> f64 {
        v as f64 / self.ops as f64
    }
    fn writes_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
    fn mib_per_s(&self) -> f64 {
        self.writes_per_s() * self.case.io as f64 / (1 << 20) as f64
    }
    fn mean_latency_us(&self) -> f64 {
        self.ticket_time.as_secs_f64() * 1e6 / self.ops as f64
    }
}

/// `len` bytes that differ with `seed`.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `n` `io`-aligned pseudo-random offsets inside the file (the same for every case).
fn offsets(n: usize, io: usize) -> Vec<u64> {
    let slots = FILE_BYTES / io as u64;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % slots) * io as u64
        })
        .collect()
}

fn counters(fs: &QFs<'_>) -> TraceCounters {
    fs.volume().device().counters()
}

fn since(a: TraceCounters, b: TraceCounters) -> TraceCounters {
    TraceCounters {
        reads: a.reads - b.reads,
        writes: a.writes - b.writes,
        fua_writes: a.fua_writes - b.fua_writes,
        flushes: a.flushes - b.flushes,
        discards: a.discards - b.discards,
        sectors_read: a.sectors_read - b.sectors_read,
        sectors_written: a.sectors_written - b.sectors_written,
        bytes_read: a.bytes_read - b.bytes_read,
        bytes_written: a.bytes_written - b.bytes_written,
        errors: a.errors - b.errors,
    }
}

/// Formats a fresh device, writes the file with no latency, checkpoints, then measures
/// `ops` `NOWAIT | DSYNC` overwrites at the case's queue depth.
fn run(case: Case, ops: usize, latency: Duration) -> Res<Outcome> {
    let mut mem = vec![0u8; memory_needed(SECTOR, BLOCK, SLOTS)];
    let dev = Trace::new(Delayed::new(DISK_BYTES, case.qd, case.fua, Duration::ZERO));
    let mut fs: QFs<'_> = Fs::format(dev, &mut mem, FormatOptions::default())?;
    let fd = fs.open(
        "/data",
        OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE,
    )?;
    let fill = pattern(64 << 10, 1);
    for i in 0..FILE_BYTES / fill.len() as u64 {
        let n = fs.write_at(fd, i * fill.len() as u64, &fill)?;
        if n != fill.len() {
            return Err(format!("short fill write: {n}").into());
        }
    }
    fs.sync_all()?;

    let data = pattern(case.io, 2);
    let at = offsets(ops, case.io);
    fs.volume_mut()
        .device_mut()
        .inner_mut()
        .set_latency(latency);
    let c0 = counters(&fs);
    let t0 = Instant::now();
    let mut issued: HashMap<Ticket, Instant> = HashMap::new();
    let (mut next, mut reported, mut would_block) = (0usize, 0usize, 0u64);
    let mut ticket_time = Duration::ZERO;
    let mut spins: u64 = 0;
    while reported < ops {
        while next < ops && issued.len() < usize::from(case.qd) {
            let t = Instant::now();
            match fs.write_at_flags(fd, at[next], &data, WriteFlags::NOWAIT | WriteFlags::DSYNC) {
                Ok(WriteStatus::Queued(ticket)) => {
                    if issued.insert(ticket, t).is_some() {
                        return Err(format!("ticket {ticket:?} issued twice").into());
                    }
                    next += 1;
                }
                Ok(WriteStatus::Done(n)) => {
                    if n != case.io {
                        return Err(format!("short write: {n}").into());
                    }
                    ticket_time += t.elapsed();
                    next += 1;
                    reported += 1;
                }
                Err(Error::WouldBlock) => {
                    would_block += 1;
                    break;
                }
                Err(e) => return Err(format!("write_at_flags: {e:?}").into()),
            }
        }
        if let Some((ticket, r)) = fs.poll() {
            let t = issued
                .remove(&ticket)
                .ok_or_else(|| format!("unknown or repeated ticket {ticket:?}"))?;
            match r {
                Ok(n) if n == case.io => {}
                other => return Err(format!("ticket {ticket:?}: {other:?}").into()),
            }
            ticket_time += t.elapsed();
            reported += 1;
        }
        spins += 1;
        if spins > 2_000_000_000 {
            return Err(format!("stuck: {reported} of {ops} reported").into());
        }
    }
    let elapsed = t0.elapsed();
    let c = since(counters(&fs), c0);
    let d = fs.volume().device().inner();
    let reap_delay = d.late / u32::try_from(d.reaped.max(1)).unwrap_or(u32::MAX);
    fs.volume_mut()
        .device_mut()
        .inner_mut()
        .set_latency(Duration::ZERO);
    fs.close(fd)?;
    fs.unmount()?;
    Ok(Outcome {
        case,
        ops: ops as u64,
        elapsed,
        ticket_time,
        would_block,
        reap_delay,
        c,
    })
}

fn header() -> [&'static str; 13] {
    [
        "io",
        "FUA",
        "QD",
        "ops",
        "writes/s",
        "MiB/s",
        "mean latency µs",
        "flushes/write",
        "device writes/op",
        "FUA writes/op",
        "write B/op",
        "WouldBlock/op",
        "reap delay µs",
    ]
}

fn cells(o: &Outcome) -> [String; 13] {
    let io = if o.case.io >= 1024 {
        format!("{} KiB", o.case.io / 1024)
    } else {
        format!("{} B", o.case.io)
    };
    [
        io,
        if o.case.fua { "yes" } else { "no" }.into(),
        o.case.qd.to_string(),
        o.ops.to_string(),
        format!("{:.0}", o.writes_per_s()),
        format!("{:.1}", o.mib_per_s()),
        format!("{:.1}", o.mean_latency_us()),
        format!("{:.3}", o.per_op(o.c.flushes)),
        format!("{:.2}", o.per_op(o.c.writes)),
        format!("{:.2}", o.per_op(o.c.fua_writes)),
        format!("{:.0}", o.per_op(o.c.bytes_written)),
        format!("{:.2}", o.per_op(o.would_block)),
        format!("{:.1}", o.reap_delay.as_secs_f64() * 1e6),
    ]
}

fn table(rows: &[Outcome]) -> String {
    let head = header();
    let body: Vec<[String; 13]> = rows.iter().map(cells).collect();
    let width: Vec<usize> = (0..head.len())
        .map(|i| {
            body.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |c: Vec<String>| {
        c.iter()
            .zip(&width)
            .map(|(s, w)| format!("{s:>w$}", w = *w))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut s = line(head.iter().map(|h| h.to_string()).collect()) + "\n";
    for r in body {
        s += &(line(r.to_vec()) + "\n");
    }
    s
}

fn csv(rows: &[Outcome]) -> String {
    let mut s = String::from(
        "io_bytes,fua,qd,ops,writes_per_s,mib_per_s,mean_latency_us,flushes_per_write,\
         device_writes_per_op,fua_writes_per_op,write_bytes_per_op,would_block_per_op,\
         reap_delay_us\n",
    );
    for o in rows {
        s += &format!(
            "{},{},{},{},{:.1},{:.2},{:.2},{:.4},{:.4},{:.4},{:.1},{:.4},{:.2}\n",
            o.case.io,
            o.case.fua,
            o.case.qd,
            o.ops,
            o.writes_per_s(),
            o.mib_per_s(),
            o.mean_latency_us(),
            o.per_op(o.c.flushes),
            o.per_op(o.c.writes),
            o.per_op(o.c.fua_writes),
            o.per_op(o.c.bytes_written),
            o.per_op(o.would_block),
            o.reap_delay.as_secs_f64() * 1e6,
        );
    }
    s
}

fn markdown(rows: &[Outcome], latency: Duration, ops: usize, quick: bool) -> String {
    let head = header();
    let mut s = format!(
        "Generated by `cargo run --release -p bonsaifs-bench --bin qd{}`: {ops} \
         `NOWAIT | DSYNC` overwrites per row at random aligned offsets of a 32 MiB file, over \
         the core's `QueuedRamDisk` (volatile write cache) behind a fixed {} µs per-request \
         latency in wall time (reads, writes, FUA writes and flushes alike; requests in flight \
         do not slow each other), with and without FUA. `flushes/write` and `device writes/op` \
         are counted at the device; the data blocks, the log records and the checkpoints the \
         journal needs are all included. `mean latency` runs from the `write_at_flags` call to \
         the `poll` that reports the ticket; `reap delay` is how long after its due instant \
         the filesystem took a completion from the device (near 0: the device is the limit; \
         large: the filesystem's CPU work per poll is).\n\n",
        if quick { " -- --quick" } else { "" },
        latency.as_micros(),
    );
    s += &format!("| {} |\n", head.join(" | "));
    s += &format!(
        "|{}\n",
        head.iter()
            .enumerate()
            .map(|(i, _)| if i < 2 { "---|" } else { "---:|" })
            .collect::<String>()
    );
    for o in rows {
        s += &format!("| {} |\n", cells(o).join(" | "));
    }
    s
}

struct Args {
    csv: bool,
    quick: bool,
    markdown: Option<String>,
    latency_us: u64,
    ops: Option<usize>,
}

const USAGE: &str = "usage: qd [--quick] [--csv] [--markdown PATH] [--latency-us N] [--ops N]

  --quick           200 ops per row, 4 KiB only (CI smoke run, seconds)
  --csv             print CSV instead of the table
  --markdown PATH   also write the table and the set-up as Markdown to PATH
  --latency-us N    fixed per-request device latency (default 20)
  --ops N           overwrites per row (default 2000)";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        csv: false,
        quick: false,
        markdown: None,
        latency_us: 20,
        ops: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value"));
        match arg.as_str() {
            "--csv" => a.csv = true,
            "--quick" => a.quick = true,
            "--markdown" => a.markdown = Some(value("--markdown")?),
            "--latency-us" => {
                let v = value("--latency-us")?;
                a.latency_us = v.parse().map_err(|_| format!("bad --latency-us {v}"))?;
            }
            "--ops" => {
                let v = value("--ops")?;
                a.ops = Some(v.parse().map_err(|_| format!("bad --ops {v}"))?);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("{e}");
            }
            eprintln!("{USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    let ops = args
        .ops
        .unwrap_or(if args.quick { 200 } else { 2000 })
        .max(1);
    let latency = Duration::from_micros(args.latency_us);
    let sizes: &[usize] = if args.quick {
        &[4096]
    } else {
        &[4096, 64 << 10]
    };
    let mut rows = Vec::new();
    let mut failed = false;
    for &io in sizes {
        for fua in [true, false] {
            for qd in [1u16, 8, 32] {
                let case = Case { io, fua, qd };
                eprintln!("running io {io} fua {fua} qd {qd} ...");
                match run(case, ops, latency) {
                    Ok(o) => rows.push(o),
                    Err(e) => {
                        eprintln!("FAILED: {case:?}: {e}");
                        failed = true;
                    }
                }
            }
        }
    }
    if args.csv {
        print!("{}", csv(&rows));
    } else {
        print!("{}", table(&rows));
    }
    if let Some(path) = &args.markdown {
        if let Err(e) = std::fs::write(path, markdown(&rows, latency, ops, args.quick)) {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(1);
        }
        eprintln!("wrote {path}");
    }
    if failed {
        std::process::exit(1);
    }
}
