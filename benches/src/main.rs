//! `compare`: bonsaifs, littlefs and FAT on the same 32 MiB RAM disk, in one run.
//!
//! ```sh
//! cargo run --release -p bonsaifs-bench --bin compare                 # the table
//! cargo run --release -p bonsaifs-bench --bin compare -- --csv         # CSV
//! cargo run --release -p bonsaifs-bench --bin compare -- --quick       # CI smoke run
//! cargo run --release -p bonsaifs-bench --bin compare -- --markdown benches/RESULTS.md
//! ```
//!
//! Every (workload, filesystem) pair runs on a freshly formatted disk. Wall time comes from
//! `std::time::Instant`; the byte, request and flush counts from one counting layer under each
//! filesystem (see `stats::Counters`). A `memcpy` row copies the same payload bytes into RAM:
//! the physical limit of the disk.

mod bonsai;
mod fat;
mod lfs;
mod ram;
mod stats;

use std::time::Duration;

use stats::{Counters, Meter, Outcome, Row};

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The sizes of one run.
pub struct Params {
    /// Size of the sequential / random-write / populate file.
    pub file_bytes: usize,
    /// Size of one read or write in workloads 1, 2 and 6.
    pub io: usize,
    /// Random overwrites (workload 2).
    pub rand_ops: usize,
    /// Appends (workload 3) and their length.
    pub appends: usize,
    pub append_len: usize,
    /// Files in the small (4) and the big (5) directory, and their size.
    pub small_files: usize,
    pub many_files: usize,
    pub small_len: usize,
    /// Remount cycles (workload 6).
    pub remounts: usize,
    /// A phase still running after this is abandoned ("skipped (too slow)").
    pub budget: Duration,
    /// bonsaifs's RAM disk advertises a volatile write cache with FUA.
    pub volatile_cache: bool,
}

impl Params {
    fn full() -> Params {
        Params {
            file_bytes: 8 << 20,
            io: 4096,
            rand_ops: 200,
            appends: 1000,
            append_len: 100,
            small_files: 1000,
            many_files: 10_000,
            small_len: 64,
            remounts: 20,
            budget: Duration::from_secs(120),
            volatile_cache: true,
        }
    }

    fn quick() -> Params {
        Params {
            file_bytes: 1 << 20,
            rand_ops: 100,
            appends: 100,
            small_files: 100,
            many_files: 1000,
            remounts: 5,
            budget: Duration::from_secs(60),
            ..Params::full()
        }
    }

    fn size(&self) -> String {
        format!("{}MiB", self.file_bytes >> 20)
    }
    pub fn seq_write(&self) -> String {
        format!("seq_write_{}", self.size())
    }
    pub fn seq_read(&self) -> String {
        format!("seq_read_{}", self.size())
    }
    pub fn rand_overwrite(&self) -> String {
        format!("rand_overwrite_4KiB_sync_{}", self.size())
    }
    pub fn append(&self) -> String {
        format!("append_{}B_sync", self.append_len)
    }
    pub fn create(&self, n: usize) -> String {
        format!("create_{n}_files")
    }
    pub fn stat(&self, n: usize) -> String {
        format!("stat_{n}_files")
    }
    pub fn remount(&self) -> String {
        "remount".into()
    }
    pub fn first_write(&self) -> String {
        "first_write_4KiB_sync".into()
    }
    pub fn statfs(&self) -> String {
        "statfs".into()
    }
}

/// `len` bytes that differ with `seed` (the content does not matter to any of the three).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
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

/// The `i`-th small file of workloads 4, 5 and 6.
pub fn small_name(i: usize) -> String {
    format!("/d/f{i:05}")
}

/// Both rows of a directory workload whose create phase ran out of time after `done` files.
pub fn too_slow(p: &Params, n: usize, fs: &'static str, done: usize) -> Vec<Row> {
    vec![
        Row::new(p.create(n), fs, skipped(p, done)),
        Row::new(
            p.stat(n),
            fs,
            Outcome::Skipped("skipped (create too slow)".into()),
        ),
    ]
}

pub fn skipped(p: &Params, done: usize) -> Outcome {
    Outcome::Skipped(format!(
        "skipped (too slow: {done} ops in {} s)",
        p.budget.as_secs()
    ))
}

/// The sequential read must return what was written.
pub fn check_repeated(fs: &str, back: &[u8], chunk: &[u8]) -> Res<()> {
    if back.chunks(chunk.len()).all(|c| c == chunk) {
        Ok(())
    } else {
        Err(format!("{fs}: sequential read returned wrong data").into())
    }
}

/// Block-aligned offsets inside the file, the same for every filesystem.
fn rand_offsets(p: &Params) -> Vec<u64> {
    let blocks = (p.file_bytes / p.io) as u64;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..p.rand_ops)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % blocks) * p.io as u64
        })
        .collect()
}

const MEMCPY: &str = "memcpy";

/// Copies `len` bytes of payload `ops` times into (or, for `read`, out of) a pre-faulted RAM
/// disk at the offsets `at(i)`: what the workload's payload costs with no filesystem at all.
fn memcpy_row(
    disk: &mut [u8],
    workload: String,
    ops: usize,
    len: usize,
    read: bool,
    at: impl Fn(usize) -> usize,
) -> Row {
    use std::hint::black_box;
    let mut buf = pattern(len, 9);
    let m = Meter::start(Counters::default());
    for i in 0..ops {
        let off = at(i);
        let d = &mut disk[off..off + len];
        if read {
            black_box(&mut buf[..]).copy_from_slice(black_box(&d[..]));
        } else {
            black_box(d).copy_from_slice(black_box(&buf[..]));
        }
    }
    let moved = (ops * len) as u64;
    let c = Counters {
        reads: if read { ops as u64 } else { 0 },
        writes: if read { 0 } else { ops as u64 },
        bytes_read: if read { moved } else { 0 },
        bytes_written: if read { 0 } else { moved },
        ..Counters::default()
    };
    let o = match m.stop(Counters::default(), ops as u64) {
        Outcome::Done { ops, elapsed, .. } => Outcome::Done { ops, elapsed, c },
        o => o,
    };
    black_box(&*disk);
    Row::new(workload, MEMCPY, o)
}

/// Keeps, row by row, the fastest of repeated runs of the same workload. The counts are
/// deterministic; a repetition whose counts differ is reported.
fn keep_fastest(best: &mut [Row], again: Vec<Row>) {
    for r in again {
        let Some(b) = best.iter_mut().find(|b| b.workload == r.workload) else {
            continue;
        };
        if let (
            Outcome::Done {
                elapsed: e0, c: c0, ..
            },
            Outcome::Done {
                elapsed: e1, c: c1, ..
            },
        ) = (&b.outcome, &r.outcome)
        {
            if c0 != c1 {
                eprintln!(
                    "note: {} on {}: counts differ between repetitions",
                    r.workload, r.fs
                );
            }
            if e1 < e0 {
                *b = r;
            }
        }
    }
}

/// What to run and where the rows go.
struct Runner<'a> {
    p: &'a Params,
    repeat: usize,
    only_fs: Option<Vec<String>>,
    only_workloads: Option<Vec<u32>>,
    rows: Vec<Row>,
    fails: Vec<String>,
}

/// A filesystem whose first run of a workload took longer than this is not run again.
const REPEAT_BELOW: Duration = Duration::from_secs(5);

type Job<'j> = &'j dyn Fn() -> Res<Vec<Row>>;

impl Runner<'_> {
    /// Workload `number` on the three filesystems (each may fail on its own; each runs up to
    /// `repeat` times, on a fresh disk every time, and keeps its fastest time per row), then
    /// its memcpy rows.
    fn workload(
        &mut self,
        number: u32,
        names: &[String],
        label: &str,
        runs: [(&'static str, Job<'_>); 3],
        memcpy: impl Fn() -> Vec<Row>,
    ) {
        if self
            .only_workloads
            .as_ref()
            .is_some_and(|w| !w.contains(&number))
        {
            return;
        }
        let mut by_fs = Vec::new();
        for (fs, f) in runs {
            if self
                .only_fs
                .as_ref()
                .is_some_and(|o| !o.iter().any(|o| o.eq_ignore_ascii_case(fs)))
            {
                continue;
            }
            eprintln!("running {number} {label} on {fs} ...");
            let t0 = std::time::Instant::now();
            match f() {
                Ok(mut best) => {
                    if t0.elapsed() < REPEAT_BELOW {
                        for _ in 1..self.repeat {
                            match f() {
                                Ok(again) => keep_fastest(&mut best, again),
                                Err(e) => self.fails.push(format!("{label} on {fs} (repeat): {e}")),
                            }
                        }
                    }
                    by_fs.push(best)
                }
                Err(e) => {
                    self.fails.push(format!("{label} on {fs}: {e}"));
                    by_fs.push(
                        names
                            .iter()
                            .map(|w| {
                                Row::new(w.clone(), fs, Outcome::Skipped(format!("failed: {e}")))
                            })
                            .collect(),
                    );
                }
            }
        }
        let mut mem = memcpy();
        for _ in 1..self.repeat {
            keep_fastest(&mut mem, memcpy());
        }
        for w in names {
            for r in &by_fs {
                if let Some(row) = r.iter().find(|r| &r.workload == w) {
                    self.rows.push(row.clone());
                }
            }
            if let Some(m) = mem.iter().find(|m| &m.workload == w) {
                self.rows.push(m.clone());
            }
        }
    }

    fn run(&mut self) {
        let p = self.p;
        let io = p.io;

        self.workload(
            1,
            &[p.seq_write(), p.seq_read()],
            "sequential write + read",
            [
                (bonsai::NAME, &|| bonsai::seq(p)),
                (lfs::NAME, &|| lfs::seq(p)),
                (fat::NAME, &|| fat::seq(p)),
            ],
            || memcpy_seq(p),
        );

        let offsets = rand_offsets(p);
        let one = |r: Res<Row>| r.map(|r| vec![r]);
        self.workload(
            2,
            &[p.rand_overwrite()],
            "random overwrite + sync",
            [
                (bonsai::NAME, &|| one(bonsai::rand_overwrite(p, &offsets))),
                (lfs::NAME, &|| one(lfs::rand_overwrite(p, &offsets))),
                (fat::NAME, &|| one(fat::rand_overwrite(p, &offsets))),
            ],
            || {
                let mut disk = ram::prefaulted(ram::DISK_BYTES);
                let at = |i: usize| offsets[i] as usize;
                vec![memcpy_row(
                    &mut disk,
                    p.rand_overwrite(),
                    offsets.len(),
                    io,
                    false,
                    at,
                )]
            },
        );

        let al = p.append_len;
        self.workload(
            3,
            &[p.append()],
            "append + sync",
            [
                (bonsai::NAME, &|| one(bonsai::append(p))),
                (lfs::NAME, &|| one(lfs::append(p))),
                (fat::NAME, &|| one(fat::append(p))),
            ],
            || {
                let mut disk = ram::prefaulted(ram::DISK_BYTES);
                vec![memcpy_row(
                    &mut disk,
                    p.append(),
                    p.appends,
                    al,
                    false,
                    |i| i * al,
                )]
            },
        );

        let sl = p.small_len;
        for (number, label, count) in [
            (4, "small directory", p.small_files),
            (5, "big directory", p.many_files),
        ] {
            self.workload(
                number,
                &[p.create(count), p.stat(count)],
                label,
                [
                    (bonsai::NAME, &|| bonsai::files(p, count)),
                    (lfs::NAME, &|| lfs::files(p, count)),
                    (fat::NAME, &|| fat::files(p, count)),
                ],
                || {
                    let mut disk = ram::prefaulted(ram::DISK_BYTES);
                    vec![memcpy_row(
                        &mut disk,
                        p.create(count),
                        count,
                        sl,
                        false,
                        |i| i * sl,
                    )]
                },
            );
        }

        self.workload(
            6,
            &[p.remount(), p.first_write(), p.statfs()],
            "remount + first write + statfs",
            [
                (bonsai::NAME, &|| bonsai::remount(p)),
                (lfs::NAME, &|| lfs::remount(p)),
                (fat::NAME, &|| fat::remount(p)),
            ],
            || {
                let mut disk = ram::prefaulted(ram::DISK_BYTES);
                let at = |i: usize| i * io;
                vec![memcpy_row(
                    &mut disk,
                    p.first_write(),
                    p.remounts,
                    io,
                    false,
                    at,
                )]
            },
        );
    }
}

/// The sequential write and then the read of what it wrote, on one buffer.
fn memcpy_seq(p: &Params) -> Vec<Row> {
    let mut disk = ram::prefaulted(ram::DISK_BYTES);
    let (n, io) = (p.file_bytes / p.io, p.io);
    vec![
        memcpy_row(&mut disk, p.seq_write(), n, io, false, |i| i * io),
        memcpy_row(&mut disk, p.seq_read(), n, io, true, |i| i * io),
    ]
}

struct Args {
    csv: bool,
    quick: bool,
    markdown: Option<String>,
    budget: Option<u64>,
    repeat: Option<usize>,
    only_fs: Option<Vec<String>>,
    only_workloads: Option<Vec<u32>>,
    no_write_cache: bool,
}

const USAGE: &str =
    "usage: compare [--quick] [--csv] [--markdown PATH] [--repeat N] [--budget SECS]
               [--fs bonsaifs,littlefs,FAT] [--workloads 1,2,...] [--no-write-cache]

  --quick           scaled-down sizes (1 MiB files, 100 ops) for a CI smoke run
  --csv             print CSV instead of the table
  --markdown PATH   also write the results, the set-up and the machine as Markdown to PATH
  --repeat N        run each (workload, fs) up to N times, keep the fastest (default 5,
                    quick 1; a run longer than 5 s is not repeated)
  --budget SECS     abandon a directory phase that runs longer (default 120, quick 60)
  --fs LIST         only these filesystems (comma-separated)
  --workloads LIST  only these workloads (1 seq, 2 random overwrite, 3 append,
                    4 small dir, 5 big dir, 6 remount)
  --no-write-cache  run bonsaifs on RamDisk's own geometry (no volatile cache: no flushes)";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        csv: false,
        quick: false,
        markdown: None,
        budget: None,
        repeat: None,
        only_fs: None,
        only_workloads: None,
        no_write_cache: false,
    };
    let mut it = std::env::args().skip(1);
    let value = |it: &mut std::iter::Skip<std::env::Args>, flag: &str| {
        it.next().ok_or(format!("{flag} needs a value"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--csv" => a.csv = true,
            "--quick" => a.quick = true,
            "--no-write-cache" => a.no_write_cache = true,
            "--markdown" => a.markdown = Some(value(&mut it, "--markdown")?),
            "--budget" => {
                let v = value(&mut it, "--budget")?;
                a.budget = Some(v.parse().map_err(|_| format!("bad --budget {v}"))?);
            }
            "--repeat" => {
                let v = value(&mut it, "--repeat")?;
                a.repeat = Some(v.parse().map_err(|_| format!("bad --repeat {v}"))?);
            }
            "--fs" => {
                let v = value(&mut it, "--fs")?;
                a.only_fs = Some(v.split(',').map(str::to_string).collect());
            }
            "--workloads" => {
                let v = value(&mut it, "--workloads")?;
                let w: Result<Vec<u32>, _> = v.split(',').map(str::parse).collect();
                a.only_workloads = Some(w.map_err(|_| format!("bad --workloads {v}"))?);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// `nproc` and the CPU model, for the report.
fn machine() -> (usize, String) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    (nproc, cpu)
}

fn markdown(
    p: &Params,
    rows: &[Row],
    fails: &[String],
    quick: bool,
    repeat: usize,
    fat_type: &str,
) -> String {
    let (nproc, cpu) = machine();
    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC");
    let cmd = if quick { " -- --quick" } else { "" };
    let mib = p.file_bytes >> 20;
    let mut s = format!(
        "# bonsaifs vs littlefs vs FAT\n\n\
Generated by `cargo run --release -p bonsaifs-bench --bin compare{cmd}` (with `--markdown`) \
on {date}.\n\n\
Machine: {cpu}, `nproc` = {nproc}. Single-threaded. Each (workload, filesystem) pair ran \
up to {repeat} times, each time on a fresh disk, and the fastest time is shown (a pair whose \
first run took over 5 s ran once); the counts are the same in every repetition. Times on a \
shared 2-core machine still move by 10–30 % between runs; the counts do not move.\n\n"
    );
    s.push_str("## Results\n\n");
    s.push_str(&stats::markdown_table(rows));
    if !fails.is_empty() {
        s.push_str("\nFailures:\n\n");
        for f in fails {
            s.push_str(&format!("* {f}\n"));
        }
    }
    s.push_str(&format!(
        "
Per op: `µs/op` is wall time (`std::time::Instant`) over the measured phase divided by `ops`;
`write B/op`, `read B/op`, `flushes/op`, `requests/op` (reads + writes + flushes +
erases/discards) and `FUA/op` come from the counting layer under each filesystem.

## Set-up

* **Disk**: 32 MiB of RAM, 512-byte sectors; every (workload, filesystem) pair starts on a
  freshly formatted one. The buffer is pre-faulted, so no run pays first-touch page faults,
  and the same buffer (zeroed) serves every run, so no filesystem's copies depend on which
  physical pages it happened to get.
* **bonsaifs**: `Fs<Trace<WriteCache<RamDisk>>, {slots}>`: 4 KiB blocks, default
  `FormatOptions` (journal = 1/64 of the volume), a {slots}-slot block cache
  ({bram} KiB of RAM with the `Fs`). `WriteCache` only changes the advertised geometry to a
  volatile write cache with FUA{wc}, so that bonsaifs issues the flushes and FUA writes it
  would issue on an SD card or NVMe drive; over `RamDisk`'s own geometry (`--no-write-cache`)
  it issues none. Counts are `Trace::counters()`.
* **littlefs**: the C littlefs {lv} built by the `littlefs2` 0.8 crate, driven through
  `littlefs2::ll` with the bench's own `lfs_config` (the crate's safe wrapper hard-wires a
  no-op `sync` callback, so flushes could not be counted through it). 4 KiB blocks,
  read/prog size 512 (the sector), 4 KiB read, prog and file caches, a 1 KiB lookahead
  (the whole disk), `block_cycles = -1` ({lram} KiB of RAM with one open file). Counted:
  the `read`, `prog`, `erase` (a request, no bytes) and `sync` (a flush) callbacks.
* **FAT**: `fatfs` 0.3 ({ft}, 4 KiB clusters, 2 FATs, formatted with `format_volume`) over a
  `std::io` stream on the RAM disk ({fram} B of RAM for the `FileSystem` with its stream).
  fatfs has no cache and seeks before every 2-, 4- or 32-byte access (so `fscommon::BufStream`,
  which drops its buffer on every seek, does not help); the stream keeps one 512-byte
  write-back sector window, as ChaN's FatFs does with `FF_FS_TINY`: accesses inside the window
  are free, another sector costs a write-back (if dirty) and a 512-byte read, runs of whole
  sectors go straight to the disk as one request. `flush` writes the window back and counts a
  flush. No clock.
* **memcpy**: the same payload bytes copied into (or out of) a pre-faulted 32 MiB buffer at
  the same offsets, with no filesystem: the physical limit.

## What each row measures

1. `seq_write_{mib}MiB`: create a file, {n} writes of 4 KiB, then make it durable (bonsaifs
   `fsync` + `close`; littlefs `lfs_file_close`, which syncs; FAT dropping the file, which
   flushes). `seq_read_{mib}MiB`: open it again and read it back in 4 KiB reads (data checked).
2. `rand_overwrite_4KiB_sync_{mib}MiB`: {ro} block-aligned 4 KiB overwrites at the same
   pseudo-random offsets of an existing {mib} MiB file, each followed by a sync (bonsaifs
   `fsync`, littlefs `lfs_file_sync`, FAT `File::flush`).
3. `append_{al}B_sync`: {ap} × (append {al} bytes + the same sync).
4. / 5. `create_N_files`: create N files of {sl} bytes in one directory `/d` (open, write,
   close; littlefs and FAT commit / flush at every close, bonsaifs's close is not durable and
   one `sync_all` at the end is included). `stat_N_files`: stat every one (FAT has no stat:
   the same directory scan through `open_file`, without the flush a dropped file does; the
   flushes FAT still shows come from fatfs dropping the `File` behind a directory handle). A
   phase still running after {budget} s is abandoned and shown as skipped; a filesystem that
   cannot hold N files is shown as skipped with the reason.
6. On a volume holding one {mib} MiB file and {sf} small files in `/d`, {rm} cycles of: `remount`
   (unmount + mount), `first_write_4KiB_sync` (create a new file in `/`, write 4 KiB, make it
   durable), `statfs` (bonsaifs `statfs`, littlefs `lfs_fs_size`, FAT `stats`).
",
        slots = bonsai::SLOTS,
        bram = bonsai::ram_bytes() / 1024,
        wc = if p.volatile_cache {
            ""
        } else {
            " (off in this run: `--no-write-cache`)"
        },
        lv = "2.9",
        lram = lfs::ram_bytes() / 1024,
        ft = fat_type,
        fram = fat::ram_bytes(),
        n = p.file_bytes / p.io,
        ro = p.rand_ops,
        al = p.append_len,
        ap = p.appends,
        sl = p.small_len,
        budget = p.budget.as_secs(),
        sf = p.small_files,
        rm = p.remounts,
    ));
    s
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
    let mut p = if args.quick {
        Params::quick()
    } else {
        Params::full()
    };
    if let Some(b) = args.budget {
        p.budget = Duration::from_secs(b);
    }
    p.volatile_cache = !args.no_write_cache;

    let mut runner = Runner {
        p: &p,
        repeat: args.repeat.unwrap_or(if args.quick { 1 } else { 5 }).max(1),
        only_fs: args.only_fs.clone(),
        only_workloads: args.only_workloads.clone(),
        rows: Vec::new(),
        fails: Vec::new(),
    };
    runner.run();
    let (rows, fails, repeat) = (runner.rows, runner.fails, runner.repeat);
    if args.csv {
        print!("{}", stats::csv(&rows));
    } else {
        println!();
        print!("{}", stats::table(&rows));
    }
    if let Some(path) = &args.markdown {
        let ft = fat::fat_type().unwrap_or_else(|e| format!("unknown FAT type: {e}"));
        let md = markdown(&p, &rows, &fails, args.quick, repeat, &ft);
        if let Err(e) = std::fs::write(path, md) {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(1);
        }
        eprintln!("wrote {path}");
    }
    if !fails.is_empty() {
        for f in &fails {
            eprintln!("FAILED: {f}");
        }
        std::process::exit(1);
    }
}
