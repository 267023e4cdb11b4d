//! `bonsaifs-harness`: long crash, power-cut, fault and hostile-image campaigns with a progress
//! bar and a one-line summary, and `ci`, the set the test script runs.
//!
//! ```text
//! bonsaifs-harness crash --seq 2                 # the whole seq-2 space, both devices
//! bonsaifs-harness crash --seq 3 --minutes 60    # seq-3 in a seeded random order, for an hour
//! bonsaifs-harness crash --workload 4.1,22.3     # one workload (spec: op.persist,...)
//! bonsaifs-harness powercut --seq 1              # every power-cut point of every seq-1 workload
//! bonsaifs-harness faults --mixed                # every fault point of the mixed workload
//! bonsaifs-harness hostile                       # every byte of every metadata block
//! bonsaifs-harness ci                            # the CI set, with its summary lines
//! ```

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bonsaifs::inject::Bugs;
use bonsaifs_harness::campaign::{default_threads, run_parallel, Progress, Summary};
use bonsaifs_harness::checker::{check_workload, CrashOptions, Scratch, Tally};
use bonsaifs_harness::ci;
use bonsaifs_harness::crash_disk::StateBudget;
use bonsaifs_harness::execute::{DeviceModel, RunOptions};
use bonsaifs_harness::fault::{check_faults, FaultOptions};
use bonsaifs_harness::hostile::{all_mutations, check_mutations, judge, mutate, populated, Mode};
use bonsaifs_harness::image::{base, rle_encode, seed_image};
use bonsaifs_harness::powercut::{check_powercuts, CutOptions};
use bonsaifs_harness::rng::Rng;
use bonsaifs_harness::workload::Workload;
use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Parser)]
#[command(
    name = "bonsaifs-harness",
    about = "Crash-consistency, power-cut, fault and hostile-image campaigns for bonsaifs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every crash state of every crash point of each workload.
    Crash(Campaign),
    /// A power cut before every request of each workload.
    Powercut(Campaign),
    /// An I/O error at every request of each workload.
    Faults(Campaign),
    /// Every byte of every metadata block of a populated image, flipped in turn.
    Hostile(HostileArgs),
    /// The CI set (what harness/tests runs), printing one summary line per part.
    Ci {
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Write the fuzz seed corpora (real images, real workloads) under DIR/<target>/.
    FuzzSeeds {
        /// The corpus directory (fuzz/corpus).
        dir: std::path::PathBuf,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DeviceChoice {
    /// Both the FUA and the no-FUA device.
    Both,
    /// The device honours FUA.
    Fua,
    /// No FUA: the filesystem writes and flushes.
    NoFua,
}

#[derive(Args)]
struct Campaign {
    /// Workload length: every workload of this length (or a sample, with --sample).
    #[arg(long, default_value_t = 2)]
    seq: u32,
    /// Take this many seeded workloads of the space instead of all.
    #[arg(long)]
    sample: Option<usize>,
    /// One workload, by spec (`op.persist,...`, as violations print it).
    #[arg(long)]
    workload: Option<String>,
    /// The fixed mixed workload of CI.
    #[arg(long)]
    mixed: bool,
    /// Start no new workload after this many minutes (the space is then run in a seeded
    /// random order, so the part done is a uniform sample).
    #[arg(long)]
    minutes: Option<f64>,
    /// Seed of samples and orders.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Device model(s).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Both)]
    device: DeviceChoice,
    /// Seed of the device's completion order (default: 1 for FUA, 2 for no-FUA).
    #[arg(long)]
    device_seed: Option<u64>,
    /// Deliberate bugs to switch on (bits of `bonsaifs::inject::Bugs`).
    #[arg(long, default_value_t = 0)]
    bugs: u8,
    /// Enumerate every subset of up to this many unflushed writes per crash point.
    #[arg(long, default_value_t = 12)]
    exhaustive: usize,
    /// Otherwise sample this many subsets.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Extra crash states per crash point with one torn sector.
    #[arg(long, default_value_t = 4)]
    torn: usize,
    /// Mount each crash state once instead of twice.
    #[arg(long)]
    no_remount: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Violations printed in full.
    #[arg(long, default_value_t = 20)]
    show: usize,
}

#[derive(Args)]
struct HostileArgs {
    /// Mutate every n-th byte of each region.
    #[arg(long, default_value_t = 1)]
    stride: usize,
    /// Flip one bit and re-seal the checksum (reaches the semantic checks).
    #[arg(long)]
    resealed: bool,
    /// Check one mutation: region index (as violations print it) ...
    #[arg(long, requires = "offset")]
    region: Option<usize>,
    /// ... and byte offset in it.
    #[arg(long)]
    offset: Option<usize>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Violations printed in full.
    #[arg(long, default_value_t = 20)]
    show: usize,
}

/// A workload to run: by index in a space, or given.
#[derive(Clone)]
enum Item {
    Nth(u32, u64),
    Given(Workload),
}

impl Item {
    fn workload(&self) -> Workload {
        match self {
            Item::Nth(len, i) => Workload::nth(*len, *i),
            Item::Given(w) => w.clone(),
        }
    }
}

fn devices(c: &Campaign) -> Vec<DeviceModel> {
    ci::devices()
        .into_iter()
        .filter(|d| match c.device {
            DeviceChoice::Both => true,
            DeviceChoice::Fua => d.fua,
            DeviceChoice::NoFua => !d.fua,
        })
        .map(|mut d| {
            if let Some(s) = c.device_seed {
                d.seed = s;
            }
            d
        })
        .collect()
}

fn items(c: &Campaign) -> Result<(String, Vec<Item>), String> {
    if let Some(spec) = &c.workload {
        let w = Workload::parse(spec)?;
        return Ok((format!("workload {spec}"), vec![Item::Given(w)]));
    }
    if c.mixed {
        return Ok((
            "mixed workload".into(),
            vec![Item::Given(Workload::mixed())],
        ));
    }
    let space = Workload::space(c.seq);
    if let Some(n) = c.sample {
        let ws = Workload::sample(c.seq, n, c.seed);
        return Ok((
            format!(
                "seq-{} (sample of {} of {space}, seed {})",
                c.seq,
                ws.len(),
                c.seed
            ),
            ws.into_iter().map(Item::Given).collect(),
        ));
    }
    let mut idx: Vec<u64> = (0..space).collect();
    if c.minutes.is_some() {
        let mut rng = Rng::new(c.seed);
        for i in (1..idx.len()).rev() {
            idx.swap(i, rng.below(i as u64 + 1) as usize);
        }
    }
    Ok((
        format!("seq-{} (all {space})", c.seq),
        idx.into_iter().map(|i| Item::Nth(c.seq, i)).collect(),
    ))
}

/// Run `f` over `items` with a progress bar.
fn with_progress<T: Sync>(
    items: &[T],
    threads: usize,
    deadline: Option<Instant>,
    unit: &str,
    f: impl Fn(&T, &mut Scratch) -> Tally + Sync,
) -> (Tally, bool) {
    let progress = Progress::default();
    let pb = ProgressBar::new(items.len() as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} [{elapsed_precise} / ~{duration_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let done = AtomicBool::new(false);
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                pb.set_position(progress.done.load(Ordering::Relaxed));
                pb.set_message(format!(
                    "{} {unit}, {} violations",
                    progress.checked.load(Ordering::Relaxed),
                    progress.violations.load(Ordering::Relaxed)
                ));
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let r = run_parallel(items, threads, deadline, &progress, f);
        done.store(true, Ordering::Relaxed);
        r
    });
    pb.finish_and_clear();
    r
}

fn finish(summary: &Summary, show: usize) -> ExitCode {
    for v in summary.tally.violations.iter().take(show) {
        println!("{v}");
    }
    if summary.tally.violations.len() > show {
        println!("... and {} more", summary.tally.violations.len() - show);
    }
    let mut kinds = std::collections::BTreeMap::new();
    for v in &summary.tally.violations {
        *kinds.entry(v.kind.as_str()).or_insert(0u64) += 1;
    }
    if !kinds.is_empty() {
        let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("violations by kind: {}", list.join(", "));
    }
    println!("{summary}");
    if summary.tally.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn campaign(mode: &str, c: &Campaign) -> ExitCode {
    let (what, items) = match items(c) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let devs = devices(c);
    let runs: Vec<(Item, RunOptions)> = items
        .iter()
        .flat_map(|i| {
            devs.iter().map(move |d| {
                (
                    i.clone(),
                    RunOptions {
                        device: *d,
                        bugs: Bugs::from_bits_truncate(c.bugs),
                        ..RunOptions::default()
                    },
                )
            })
        })
        .collect();
    let budget = StateBudget {
        exhaustive_max: c.exhaustive,
        samples: c.samples,
        torn: c.torn,
        seed: c.seed,
    };
    let threads = c.threads.unwrap_or_else(default_threads);
    let deadline = c
        .minutes
        .map(|m| Instant::now() + Duration::from_secs_f64(m * 60.0));
    let b = base();
    let t0 = Instant::now();
    let unit = match mode {
        "crash" => "crash states",
        "powercut" => "cut points",
        _ => "fault points",
    };
    let (tally, complete) = with_progress(&runs, threads, deadline, unit, |(item, run), s| {
        let w = item.workload();
        match mode {
            "crash" => check_workload(
                b,
                &w,
                &CrashOptions {
                    run: *run,
                    budget,
                    remount: !c.no_remount,
                    max_violations: 3,
                },
                s,
            ),
            "powercut" => check_powercuts(
                b,
                &w,
                &CutOptions {
                    run: *run,
                    remount: !c.no_remount,
                    ..CutOptions::default()
                },
                s,
            ),
            _ => check_faults(
                b,
                &w,
                &FaultOptions {
                    run: *run,
                    // Every fault point, so that the breakdown by kind is complete.
                    max_violations: usize::MAX,
                    ..FaultOptions::default()
                },
                s,
            ),
        }
    });
    let summary = Summary {
        what: format!(
            "{mode} {what} on {} device(s), {threads} threads",
            devs.len()
        ),
        tally,
        elapsed: t0.elapsed(),
        complete,
    };
    finish(&summary, c.show)
}

fn hostile(h: &HostileArgs) -> ExitCode {
    let t0 = Instant::now();
    let pop = match populated() {
        Ok(p) => Arc::new(p),
        Err(e) => {
            eprintln!("error: building the populated image: {e}");
            return ExitCode::from(2);
        }
    };
    let mode = if h.resealed {
        Mode::Resealed
    } else {
        Mode::Flip
    };
    if let (Some(ri), Some(off)) = (h.region, h.offset) {
        let Some(&region) = pop.regions.get(ri) else {
            eprintln!("error: {} regions", pop.regions.len());
            return ExitCode::from(2);
        };
        let mut img = pop.image.clone();
        mutate(
            &mut img,
            region,
            off.min(region.len.saturating_sub(1)),
            mode,
        );
        let out = judge(&mut img, &pop, region, mode);
        println!("{:?} byte {off} ({mode:?}): {out:?}", region.kind);
        return ExitCode::SUCCESS;
    }
    let jobs: Vec<Vec<(usize, usize)>> = all_mutations(&pop, h.stride, mode)
        .chunks(256)
        .map(<[_]>::to_vec)
        .collect();
    let threads = h.threads.unwrap_or_else(default_threads);
    let (tally, complete) = with_progress(&jobs, threads, None, "images", |c, _| {
        check_mutations(&pop, c, mode, Duration::from_secs(20)).0
    });
    let summary = Summary {
        what: format!(
            "hostile ({} metadata regions, every {} byte(s), {mode:?})",
            pop.regions.len(),
            h.stride
        ),
        tally,
        elapsed: t0.elapsed(),
        complete,
    };
    finish(&summary, h.show)
}

fn run_ci(threads: Option<usize>) -> ExitCode {
    let threads = threads.unwrap_or_else(default_threads);
    let t0 = Instant::now();
    let mut failed = 0usize;
    let parts: [fn(usize) -> Summary; 5] = [
        ci::crash_seq1,
        ci::crash_seq2,
        ci::powercut_mixed,
        ci::faults_mixed,
        ci::hostile_image,
    ];
    let mut total = Tally::default();
    for part in parts {
        let mut s = part(threads);
        for (bug, n) in ci::take_known(&mut s.tally) {
            if n > 0 {
                println!(
                    "  {n} violations of the known core bug `{}` (harness/tests/core_bugs.rs), tolerated until it is fixed",
                    bug.test
                );
            }
        }
        for v in s.tally.violations.iter().take(10) {
            println!("  {v}");
        }
        failed += s.tally.violations.len();
        println!("{s}");
        total.add(s.tally);
    }
    for (bug, s) in ci::injected(threads) {
        let caught = !s.tally.violations.is_empty();
        println!(
            "injected {bug:?}: {} violations in {} workloads — {}",
            s.tally.violations.len(),
            s.tally.workloads,
            if caught { "caught" } else { "NOT CAUGHT" }
        );
        if !caught {
            failed += 1;
        }
    }
    println!(
        "harness CI: {} workloads, {} crash states ({} distinct images), {} power-cut points, {} fault points, {} images mutated, {} violations, {:.1} s",
        total.workloads,
        total.states,
        total.checked,
        total.cut_points,
        total.fault_points,
        total.images_mutated,
        failed,
        t0.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Seeds: real images in run-length form for `mount_image`, real workloads for `ops` and
/// `crash` (see the input formats in fuzz/fuzz_targets/).
fn fuzz_seeds(dir: &std::path::Path) -> ExitCode {
    let steps = |w: &Workload| -> Vec<u8> {
        w.steps
            .iter()
            .flat_map(|s| [s.op as u8, s.persist.index() as u8])
            .collect()
    };
    let with =
        |head: &[u8], body: Vec<u8>| -> Vec<u8> { head.iter().copied().chain(body).collect() };
    let mixed = Workload::mixed();
    let pair = Workload::parse("3.0,1.1").unwrap_or_default();
    let burst = Workload::parse("17.0,24.3").unwrap_or_default();
    let crash_tail = |w: &Workload, pick: u16, kept: u8, tear: u8| {
        let mut v = vec![1u8, w.steps.len() as u8];
        v.extend(steps(w));
        v.extend(pick.to_le_bytes());
        v.extend([kept, 0xFF, tear]);
        v
    };
    let images = [seed_image(3, false), seed_image(20, true)];
    let [Ok(small), Ok(big)] = images else {
        eprintln!("error: building the seed images");
        return ExitCode::from(2);
    };
    let files: Vec<(&str, &str, Vec<u8>)> = vec![
        ("mount_image", "small", with(&[0], rle_encode(&small))),
        (
            "mount_image",
            "two-level-with-journal",
            with(&[0], rle_encode(&big)),
        ),
        (
            "mount_image",
            "two-level-resealed",
            with(&[1], rle_encode(&big)),
        ),
        ("ops", "mixed", with(&[1], steps(&mixed))),
        ("ops", "mixed-no-fua", with(&[4], steps(&mixed))),
        ("ops", "mkdir-then-create", with(&[1], steps(&pair))),
        ("crash", "mixed", crash_tail(&mixed, 7, 0b1010_1010, 0)),
        (
            "crash",
            "burst-torn",
            crash_tail(&burst, 2, 0b0000_0101, 0x0D),
        ),
        ("crash", "pair", crash_tail(&pair, 1, 0, 0)),
    ];
    for (target, name, bytes) in files {
        let d = dir.join(target);
        if let Err(e) =
            std::fs::create_dir_all(&d).and_then(|()| std::fs::write(d.join(name), &bytes))
        {
            eprintln!("error: writing {}/{name}: {e}", d.display());
            return ExitCode::from(2);
        }
        println!("{target}/{name}: {} bytes", bytes.len());
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Crash(c) => campaign("crash", c),
        Cmd::Powercut(c) => campaign("powercut", c),
        Cmd::Faults(c) => campaign("faults", c),
        Cmd::Hostile(h) => hostile(h),
        Cmd::Ci { threads } => run_ci(*threads),
        Cmd::FuzzSeeds { dir } => fuzz_seeds(dir),
    }
}
