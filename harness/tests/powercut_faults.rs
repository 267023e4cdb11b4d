//! CI: every power-cut point and every fault point of the fixed mixed workload, on both
//! devices.

use bonsaifs_harness::campaign::default_threads;
use bonsaifs_harness::ci;
use bonsaifs_harness::execute::{execute, RunOptions};
use bonsaifs_harness::image::base;
use bonsaifs_harness::workload::Workload;

#[test]
fn the_mixed_workload_runs_clean_and_exercises_every_kind_of_step() {
    let run = execute(base(), &Workload::mixed(), &RunOptions::default());
    assert!(run.problems.is_empty(), "{:?}", run.problems);
    // Every step did something: 14 steps, 16 recorded operations (the burst has three).
    assert_eq!(run.record.ops.len(), 16, "{:?}", run.record.ops);
    assert!(run.record.ops.iter().all(|o| o.certain));
    // fsync ×5, fdatasync ×2, sync_all, DSYNC write, 3 tickets.
    assert_eq!(run.record.acks.len(), 12, "{:?}", run.record.acks);
    assert!(run.requests > 20);
}

#[test]
fn every_power_cut_point_of_the_mixed_workload_keeps_the_contract() {
    let s = ci::powercut_mixed(default_threads());
    println!("{s}");
    eprintln!("{s}");
    for v in s.tally.violations.iter().take(10) {
        eprintln!("{v}");
    }
    assert!(s.complete);
    assert_eq!(s.tally.workloads, 2);
    // One cut point per request plus the one after the last.
    assert_eq!(s.tally.cut_points, s.tally.requests + 2);
    assert!(s.tally.checked >= 2 * s.tally.cut_points, "{s}");
    assert!(s.tally.violations.is_empty(), "{s}");
}

#[test]
fn every_fault_point_of_the_mixed_workload_keeps_the_contract() {
    let mut s = ci::faults_mixed(default_threads());
    let known = ci::take_known(&mut s.tally);
    println!("{s}");
    eprintln!("{s}");
    for (bug, n) in &known {
        eprintln!("{n} violations of the known core bug `{}`", bug.test);
    }
    for v in s.tally.violations.iter().take(10) {
        eprintln!("{v}");
    }
    assert!(s.complete);
    assert_eq!(s.tally.fault_points, s.tally.requests);
    assert!(s.tally.fault_points > 40);
    assert!(s.tally.violations.is_empty(), "{s}");
}
