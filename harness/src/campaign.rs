//! Running many workloads on every core, with live counters for a progress bar, an optional
//! deadline, and the one-line summary every mode ends with.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::checker::{Scratch, Tally};

/// Counters other threads (the progress bar) may read while a campaign runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Items finished.
    pub done: AtomicU64,
    /// Crash states (or fault / cut points, or images) checked so far.
    pub checked: AtomicU64,
    /// Violations so far.
    pub violations: AtomicU64,
}

/// Threads to use: the available parallelism.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Run `f` on every item on `threads` threads (each with its own [`Scratch`]), stopping early
/// at `deadline`. Returns the summed tally and whether every item ran.
pub fn run_parallel<T: Sync>(
    items: &[T],
    threads: usize,
    deadline: Option<Instant>,
    progress: &Progress,
    f: impl Fn(&T, &mut Scratch) -> Tally + Sync,
) -> (Tally, bool) {
    let next = AtomicUsize::new(0);
    let total = Mutex::new(Tally::default());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut scratch = Scratch::default();
                let mut mine = Tally::default();
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let t = f(item, &mut scratch);
                    progress.done.fetch_add(1, Ordering::Relaxed);
                    progress.checked.fetch_add(
                        t.checked + t.fault_points + t.cut_points + t.images_mutated,
                        Ordering::Relaxed,
                    );
                    progress
                        .violations
                        .fetch_add(t.violations.len() as u64, Ordering::Relaxed);
                    mine.add(t);
                }
                if let Ok(mut tot) = total.lock() {
                    tot.add(mine);
                }
            });
        }
    });
    let complete = next.load(Ordering::Relaxed) >= items.len();
    let mut t = total.into_inner().unwrap_or_default();
    // Threads finish in any order: report violations in a stable order.
    t.violations.sort_by(|a, b| {
        (&a.workload, &a.context, &a.kind).cmp(&(&b.workload, &b.context, &b.kind))
    });
    (t, complete)
}

/// The one-line summary of a campaign.
#[derive(Debug, Clone)]
pub struct Summary {
    /// What ran (`crash seq-2`, `powercut mixed`, ...).
    pub what: String,
    /// The counts.
    pub tally: Tally,
    /// Wall-clock time.
    pub elapsed: Duration,
    /// False if a deadline cut it short.
    pub complete: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.tally;
        write!(f, "{}: {} workloads", self.what, t.workloads)?;
        if t.crash_points > 0 {
            write!(f, ", {} crash points", t.crash_points)?;
        }
        if t.states > 0 {
            write!(
                f,
                ", {} crash states ({} distinct images checked, {} allowed out of order)",
                t.states, t.checked, t.out_of_order
            )?;
        }
        if t.cut_points > 0 {
            write!(f, ", {} power-cut points", t.cut_points)?;
        }
        if t.fault_points > 0 {
            write!(
                f,
                ", {} fault points ({} absorbed without an error)",
                t.fault_points, t.faults_absorbed
            )?;
        }
        if t.images_mutated > 0 {
            write!(f, ", {} images mutated", t.images_mutated)?;
        }
        write!(
            f,
            ", {} violations, {:.1} s{}",
            t.violations.len(),
            self.elapsed.as_secs_f64(),
            if self.complete {
                ""
            } else {
                " (stopped at the deadline)"
            }
        )
    }
}
