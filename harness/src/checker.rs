//! The checker: mount each crash state, `fsck` it, walk it, and judge it against the oracle.
//!
//! [`check_image`] is the check of one image: mount (recovery replays the journal), the full
//! `Fs::fsck` (blocks: every block free or referenced once, every checksum; namespace: every
//! inode named once, sizes and extents right), a walk of the whole namespace reading every
//! file, the oracle's verdict on what the walk saw, and — optionally — a second mount of the
//! image as recovery left it, which must show the same volume and be clean again (recovery
//! interrupted right after it finished). Panics are caught and the device refuses work past a
//! request budget, so a bad state is reported, never fatal.
//!
//! [`check_workload`] runs a workload live (see [`crate::execute`]), then checks every crash
//! state of every crash point (see [`crate::crash_disk`]), identical images once.

use std::collections::HashSet;
use std::fmt;

use bonsaifs::device::RamDisk;

use crate::bounded::{budget_spent, budgeted, catch};
use crate::crash_disk::{for_each_crash_point, StateBudget};
use crate::execute::{execute, LiveRun, RunOptions};
use crate::image::{mount_mem_len, walk, BaseImage, Budget, HFs};
use crate::model::Tree;
use crate::oracle::{Oracle, Verdict};
use crate::workload::Workload;

/// A broken promise, with what is needed to reproduce it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Short kind: `mount`, `fsck`, `walk`, `panic`, `lost-durable`, `live`, ...
    pub kind: String,
    /// What was wrong.
    pub detail: String,
    /// The workload's spec string.
    pub workload: String,
    /// Where: crash point and state, fault point, image mutation.
    pub context: String,
    /// The command that reruns the case.
    pub repro: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] {} — workload {} at {} — rerun: {}",
            self.kind, self.detail, self.workload, self.context, self.repro
        )
    }
}

/// Counts of one run of checks (added up over workloads).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Workloads run.
    pub workloads: u64,
    /// Device requests the workloads made.
    pub requests: u64,
    /// Crash points visited.
    pub crash_points: u64,
    /// Crash states generated.
    pub states: u64,
    /// Distinct crash images mounted and checked.
    pub checked: u64,
    /// Allowed volumes that were not a prefix of the operations.
    pub out_of_order: u64,
    /// Fault points (injected errors) run.
    pub fault_points: u64,
    /// Power-cut points run.
    pub cut_points: u64,
    /// Hostile images mounted.
    pub images_mutated: u64,
    /// Fault points where no call reported the error, yet every check passed (the
    /// filesystem absorbed it, e.g. a failed read of a `NOWAIT` probe retried later).
    pub faults_absorbed: u64,
    /// Every violation found (the first few per workload).
    pub violations: Vec<Violation>,
}

impl Tally {
    /// Add `other` into this tally.
    pub fn add(&mut self, other: Tally) {
        self.workloads += other.workloads;
        self.requests += other.requests;
        self.crash_points += other.crash_points;
        self.states += other.states;
        self.checked += other.checked;
        self.out_of_order += other.out_of_order;
        self.fault_points += other.fault_points;
        self.cut_points += other.cut_points;
        self.images_mutated += other.images_mutated;
        self.faults_absorbed += other.faults_absorbed;
        self.violations.extend(other.violations);
    }
}

/// Reusable buffers for checking images.
#[derive(Debug)]
pub struct Scratch {
    /// Mount memory.
    pub mem: Vec<u8>,
    /// The image under check.
    pub image: Vec<u8>,
    /// fsck's bitmaps.
    pub fsck: Vec<u8>,
    /// The tree of the first mount (compared with the second).
    first: Option<Tree>,
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch {
            mem: vec![0u8; mount_mem_len()],
            image: Vec::new(),
            fsck: Vec::new(),
            first: None,
        }
    }
}

/// Why an image failed its check: a short kind and the details.
pub type Failure = (&'static str, String);

/// Mount `image`, fsck, walk. Returns the tree.
fn mount_check_walk(
    image: &mut [u8],
    mem: &mut [u8],
    fsck_buf: &mut Vec<u8>,
) -> Result<Tree, Failure> {
    let dev = RamDisk::new(image, 512).map_err(|e| ("mount", format!("ram disk: {e:?}")))?;
    let mut fs = HFs::mount(budgeted(dev), mem).map_err(|e| ("mount", format!("mount: {e:?}")))?;
    let need = fs.fsck_scratch_len();
    if need > 64 << 20 {
        return Err(("fsck", format!("fsck wants {need} bytes of scratch")));
    }
    fsck_buf.resize(need, 0);
    let rep = fs
        .fsck(fsck_buf)
        .map_err(|e| ("fsck", format!("fsck failed: {e:?}")))?;
    if !rep.is_clean() {
        return Err(("fsck", format!("fsck not clean: {rep:?}")));
    }
    let tree = walk(&mut fs, &Budget::default()).map_err(|e| ("walk", e.to_string()))?;
    if budget_spent(fs.volume().device()) {
        return Err(("unbounded", "the check exceeded its request budget".into()));
    }
    Ok(tree)
}

/// Check one crash image after `acks` acknowledgements. `remount`: mount a second time and
/// expect the same clean volume. The image is changed (recovery writes to it).
pub fn check_image(
    scratch: &mut Scratch,
    oracle: &Oracle,
    acks: usize,
    remount: bool,
) -> Result<Verdict, Failure> {
    let Scratch {
        mem,
        image,
        fsck,
        first,
    } = scratch;
    let r = catch(|| -> Result<Verdict, Failure> {
        let tree = mount_check_walk(image, mem, fsck)?;
        let v = oracle
            .check(&tree, acks)
            .map_err(|b| (b.kind(), b.detail().to_string()))?;
        *first = Some(tree);
        if remount {
            let again = mount_check_walk(image, mem, fsck)
                .map_err(|(k, d)| (k, format!("second mount: {d}")))?;
            if Some(&again) != first.as_ref() {
                return Err((
                    "remount",
                    format!(
                        "a second mount shows another volume: {}",
                        crate::oracle::describe_diff(
                            first.as_ref().unwrap_or(&Tree::new()),
                            &again
                        )
                    ),
                ));
            }
        }
        Ok(v)
    });
    match r {
        Ok(r) => r,
        Err(msg) => Err(("panic", msg)),
    }
}

/// How to check a workload's crash states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashOptions {
    /// The live run.
    pub run: RunOptions,
    /// Crash states per crash point.
    pub budget: StateBudget,
    /// Mount every crash state twice.
    pub remount: bool,
    /// Stop checking a workload after this many violations.
    pub max_violations: usize,
}

impl Default for CrashOptions {
    fn default() -> Self {
        CrashOptions {
            run: RunOptions::default(),
            budget: StateBudget::default(),
            remount: false,
            max_violations: 3,
        }
    }
}

/// The command line that reruns one workload's check (`mode`: crash, powercut, faults).
pub fn repro_command(mode: &str, w: &Workload, run: &RunOptions, extra: &str) -> String {
    let mut s = format!(
        "cargo run --release -p bonsaifs-harness -- {mode} --workload {} --device {} --device-seed {}",
        w.spec(),
        if run.device.fua { "fua" } else { "no-fua" },
        run.device.seed
    );
    if !run.bugs.is_empty() {
        s.push_str(&format!(" --bugs {}", run.bugs.bits()));
    }
    s.push_str(extra);
    s
}

/// Violations for a live run's own problems (model disagreements, lost tickets, mount).
pub fn live_violations(
    run: &LiveRun,
    w: &Workload,
    opts: &RunOptions,
    mode: &str,
) -> Vec<Violation> {
    let mut out = Vec::new();
    if let Some(e) = run.mount_error {
        out.push(Violation {
            kind: "live-mount".into(),
            detail: format!("mounting the base volume failed: {e:?}"),
            workload: w.spec(),
            context: "live run".into(),
            repro: repro_command(mode, w, opts, ""),
        });
    }
    for p in &run.problems {
        out.push(Violation {
            kind: "live".into(),
            detail: p.clone(),
            workload: w.spec(),
            context: "live run".into(),
            repro: repro_command(mode, w, opts, ""),
        });
    }
    out
}

/// Run `w` live and check every crash state of every crash point.
pub fn check_workload(
    base: &BaseImage,
    w: &Workload,
    opts: &CrashOptions,
    scratch: &mut Scratch,
) -> Tally {
    let mut t = Tally {
        workloads: 1,
        ..Tally::default()
    };
    let run = match catch(|| execute(base, w, &opts.run)) {
        Ok(r) => r,
        Err(msg) => {
            t.violations.push(Violation {
                kind: "panic".into(),
                detail: format!("live run: {msg}"),
                workload: w.spec(),
                context: "live run".into(),
                repro: repro_command("crash", w, &opts.run, ""),
            });
            return t;
        }
    };
    t.requests = run.requests;
    t.violations = live_violations(&run, w, &opts.run, "crash");
    let oracle = Oracle::new(&base.model, &base.writes, run.record.clone());
    let mut seen: HashSet<(u64, usize)> = HashSet::new();
    let mut violations = std::mem::take(&mut t.violations);
    for_each_crash_point(&base.image, base.fingerprint, run.rules, &run.events, |p| {
        if violations.len() >= opts.max_violations {
            return;
        }
        t.crash_points += 1;
        for st in p.states(&opts.budget) {
            t.states += 1;
            if !seen.insert((p.state_fingerprint(&st), p.acks)) {
                continue;
            }
            t.checked += 1;
            p.build(&st, &mut scratch.image);
            match check_image(scratch, &oracle, p.acks, opts.remount) {
                Ok(v) => t.out_of_order += u64::from(v.ok_out_of_order),
                Err((kind, detail)) => {
                    violations.push(Violation {
                        kind: kind.into(),
                        detail,
                        workload: w.spec(),
                        context: format!(
                            "crash point at event {} ({} pending writes, {} acks), {}",
                            p.at,
                            p.pending.len(),
                            p.acks,
                            st.describe()
                        ),
                        repro: repro_command("crash", w, &opts.run, ""),
                    });
                    if violations.len() >= opts.max_violations {
                        return;
                    }
                }
            }
        }
    });
    t.violations = violations;
    t
}
