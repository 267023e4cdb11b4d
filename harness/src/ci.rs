//! The CI set: what `cargo test` (harness/tests) and `bonsaifs-harness ci` run, sized for a
//! few minutes on two cores. Each part returns its one-line [`Summary`].
//!
//! | part | what |
//! |---|---|
//! | [`crash_seq1`] | every workload of length 1 (every operation × every persistence op) on a FUA and a no-FUA device, every crash state (exhaustive ≤ 12 writes, else 1000 samples) plus torn sectors, each state mounted twice |
//! | [`crash_seq2`] | a seeded sample of seq-2 workloads per device, same checks |
//! | [`powercut_mixed`] | every power-cut point of the fixed mixed workload, both devices |
//! | [`faults_mixed`] | every fault point (read / write / flush error) of the mixed workload, both devices; violations of a known core bug ([`KNOWN_CORE_BUGS`]) are counted apart |
//! | [`hostile_image`] | every byte of every metadata block flipped; re-sealed bit flips on every 4th byte |
//! | [`injected`] | each deliberate bug on: the checker must report violations |

use std::sync::Arc;
use std::time::{Duration, Instant};

use bonsaifs::inject::Bugs;

use crate::campaign::{run_parallel, Progress, Summary};
use crate::checker::{check_workload, CrashOptions, Tally};
use crate::crash_disk::StateBudget;
use crate::execute::{DeviceModel, RunOptions};
use crate::fault::{check_faults, FaultOptions};
use crate::hostile::{all_mutations, check_mutations, populated, Mode};
use crate::image::base;
use crate::powercut::{check_powercuts, CutOptions};
use crate::workload::Workload;

/// Seq-2 workloads sampled per device in CI.
pub const SEQ2_SAMPLE: usize = 2000;
/// Seed of the CI samples.
pub const SEED: u64 = 0x5EED_2025;

/// The two device models every CI part runs on: FUA honoured, and no FUA (write + flush).
pub fn devices() -> [DeviceModel; 2] {
    [
        DeviceModel {
            fua: true,
            queue_depth: 32,
            seed: 1,
        },
        DeviceModel {
            fua: false,
            queue_depth: 32,
            seed: 2,
        },
    ]
}

/// The crash-check options of CI: the state budget plus torn sectors, two mounts.
pub fn crash_options(device: DeviceModel, bugs: Bugs) -> CrashOptions {
    CrashOptions {
        run: RunOptions {
            device,
            bugs,
            ..RunOptions::default()
        },
        budget: StateBudget {
            exhaustive_max: 12,
            samples: 1000,
            torn: 4,
            seed: SEED,
        },
        remount: true,
        max_violations: 3,
    }
}

/// Check the crash states of each `(workload, options)` on `threads` threads.
pub fn crash_runs(what: &str, runs: &[(Workload, CrashOptions)], threads: usize) -> Summary {
    let t0 = Instant::now();
    let b = base();
    let (tally, complete) = run_parallel(runs, threads, None, &Progress::default(), |(w, o), s| {
        check_workload(b, w, o, s)
    });
    Summary {
        what: what.into(),
        tally,
        elapsed: t0.elapsed(),
        complete,
    }
}

/// Every seq-1 workload on both devices.
pub fn crash_seq1(threads: usize) -> Summary {
    let mut runs = Vec::new();
    for d in devices() {
        for i in 0..Workload::space(1) {
            runs.push((Workload::nth(1, i), crash_options(d, Bugs::empty())));
        }
    }
    crash_runs("crash seq-1 (all, 2 devices)", &runs, threads)
}

/// [`SEQ2_SAMPLE`] seeded seq-2 workloads per device (a different sample per device).
pub fn crash_seq2(threads: usize) -> Summary {
    let mut runs = Vec::new();
    for (i, d) in devices().into_iter().enumerate() {
        for w in Workload::sample(2, SEQ2_SAMPLE, SEED + i as u64) {
            runs.push((w, crash_options(d, Bugs::empty())));
        }
    }
    crash_runs(
        &format!("crash seq-2 (sample of {SEQ2_SAMPLE} per device, 2 devices)"),
        &runs,
        threads,
    )
}

/// Every power-cut point of the mixed workload, both devices.
pub fn powercut_mixed(threads: usize) -> Summary {
    let t0 = Instant::now();
    let b = base();
    let runs: Vec<CutOptions> = devices()
        .into_iter()
        .map(|d| CutOptions {
            run: RunOptions {
                device: d,
                ..RunOptions::default()
            },
            ..CutOptions::default()
        })
        .collect();
    let w = Workload::mixed();
    let (tally, complete) = run_parallel(&runs, threads, None, &Progress::default(), |o, s| {
        check_powercuts(b, &w, o, s)
    });
    Summary {
        what: "powercut mixed workload (every request, 2 devices)".into(),
        tally,
        elapsed: t0.elapsed(),
        complete,
    }
}

/// A core bug the harness found, reproduced (and `#[ignore]`d until fixed) by a test in
/// `harness/tests/core_bugs.rs`, and how its violations look in a fault run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownBug {
    /// The reproducer's test name.
    pub test: &'static str,
    /// The violation kind.
    pub kind: &'static str,
    /// A substring of the violation's detail.
    pub detail: &'static str,
    /// A substring of its context.
    pub context: &'static str,
}

/// Core bugs whose violations the CI fault part tolerates (and counts) until they are fixed:
/// none today. (The one that needed it, `read_error_inside_a_write_leaks_a_block_into_the_next_
/// checkpoint`, is fixed.) Add an entry only with a reproducer; remove it when that passes.
pub const KNOWN_CORE_BUGS: [KnownBug; 0] = [];

/// Take the violations that match a known core bug out of `t`; returns how many matched each.
pub fn take_known(t: &mut Tally) -> Vec<(KnownBug, usize)> {
    let mut counts: Vec<(KnownBug, usize)> = KNOWN_CORE_BUGS.iter().map(|b| (*b, 0)).collect();
    t.violations.retain(|v| {
        for (b, n) in counts.iter_mut() {
            if v.kind == b.kind && v.detail.contains(b.detail) && v.context.contains(b.context) {
                *n += 1;
                return false;
            }
        }
        true
    });
    counts
}

/// Every fault point of the mixed workload, both devices.
pub fn faults_mixed(threads: usize) -> Summary {
    let t0 = Instant::now();
    let b = base();
    let runs: Vec<FaultOptions> = devices()
        .into_iter()
        .map(|d| FaultOptions {
            run: RunOptions {
                device: d,
                ..RunOptions::default()
            },
            max_violations: 1000,
            ..FaultOptions::default()
        })
        .collect();
    let w = Workload::mixed();
    let (tally, complete) = run_parallel(&runs, threads, None, &Progress::default(), |o, s| {
        check_faults(b, &w, o, s)
    });
    Summary {
        what: "faults mixed workload (every request, 2 devices)".into(),
        tally,
        elapsed: t0.elapsed(),
        complete,
    }
}

/// Every byte of every metadata block flipped, and re-sealed bit flips on every 4th byte.
pub fn hostile_image(threads: usize) -> Summary {
    let t0 = Instant::now();
    let pop = match populated() {
        Ok(p) => Arc::new(p),
        Err(e) => {
            let mut tally = Tally::default();
            tally.violations.push(crate::checker::Violation {
                kind: "harness".into(),
                detail: format!("building the populated image: {e}"),
                workload: "hostile".into(),
                context: String::new(),
                repro: String::new(),
            });
            return Summary {
                what: "hostile".into(),
                tally,
                elapsed: t0.elapsed(),
                complete: false,
            };
        }
    };
    let mut jobs = Vec::new();
    for (mode, stride) in [(Mode::Flip, 1), (Mode::Resealed, 4)] {
        for chunk in all_mutations(&pop, stride, mode).chunks(512) {
            jobs.push((mode, chunk.to_vec()));
        }
    }
    let (tally, complete) =
        run_parallel(&jobs, threads, None, &Progress::default(), |(m, c), _| {
            check_mutations(&pop, c, *m, Duration::from_secs(20)).0
        });
    Summary {
        what: format!(
            "hostile image ({} metadata regions: every byte flipped, every 4th bit-flipped and re-sealed)",
            pop.regions.len()
        ),
        tally,
        elapsed: t0.elapsed(),
        complete,
    }
}

/// Seq-1 with each deliberate bug switched on (both devices): one summary per bug.
pub fn injected(threads: usize) -> Vec<(Bugs, Summary)> {
    [
        Bugs::SKIP_DEFERRED_FLUSH,
        Bugs::SUPERBLOCK_BEFORE_NODES,
        Bugs::EARLY_REUSE,
        Bugs::EARLY_FLUSH,
    ]
    .into_iter()
    .map(|bug| {
        let mut runs = Vec::new();
        for d in devices() {
            for i in 0..Workload::space(1) {
                let mut o = crash_options(d, bug);
                o.max_violations = 1;
                runs.push((Workload::nth(1, i), o));
            }
        }
        (
            bug,
            crash_runs(&format!("crash seq-1 with {bug:?}"), &runs, threads),
        )
    })
    .collect()
}
