//! CI: every seq-1 workload (every catalogue operation × every persistence operation) on a FUA
//! and a no-FUA device; every crash state of every crash point (exhaustive up to 12 unflushed
//! writes, else 1000 samples), plus torn sectors; each state mounted twice.

use bonsaifs_harness::campaign::default_threads;
use bonsaifs_harness::ci;
use bonsaifs_harness::workload::{Workload, STEP_CHOICES};

#[test]
fn every_seq1_workload_keeps_the_contract_in_every_crash_state() {
    let s = ci::crash_seq1(default_threads());
    println!("{s}");
    eprintln!("{s}");
    for v in s.tally.violations.iter().take(10) {
        eprintln!("{v}");
    }
    assert!(s.complete);
    assert_eq!(s.tally.workloads, 2 * STEP_CHOICES as u64);
    assert_eq!(Workload::space(1), STEP_CHOICES as u64);
    // Every workload has at least its final crash point; most have several, with states.
    assert!(s.tally.crash_points >= s.tally.workloads);
    assert!(s.tally.checked >= 2 * s.tally.workloads, "{s}");
    assert!(s.tally.violations.is_empty(), "{s}");
}
