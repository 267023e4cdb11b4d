//! CI: the checker catches deliberate bugs. With each of `bonsaifs::inject::Bugs` switched on,
//! the seq-1 crash check reports violations; the same workloads with the bug off report none.

use bonsaifs::inject::Bugs;
use bonsaifs_harness::campaign::default_threads;
use bonsaifs_harness::ci;
use bonsaifs_harness::workload::Workload;

#[test]
fn each_injected_bug_is_caught_and_the_workloads_that_catch_it_pass_without_it() {
    for (bug, s) in ci::injected(default_threads()) {
        println!("{s}");
        eprintln!("{s}");
        if let Some(v) = s.tally.violations.first() {
            eprintln!("  e.g. {v}");
        }
        let caught = s.tally.violations.len();
        // The three the issue names must be caught; EARLY_FLUSH shows on the no-FUA device.
        assert!(caught >= 1, "{bug:?} not caught: {s}");
        // Rerun exactly the workloads that caught it, bug off, on both devices.
        let mut runs = Vec::new();
        for v in &s.tally.violations {
            let w = Workload::parse(&v.workload).unwrap();
            for d in ci::devices() {
                runs.push((w.clone(), ci::crash_options(d, Bugs::empty())));
            }
        }
        let clean = ci::crash_runs(
            &format!("the same without {bug:?}"),
            &runs,
            default_threads(),
        );
        println!("{clean}");
        assert!(clean.tally.violations.is_empty(), "{clean}");
        assert_eq!(clean.tally.workloads, 2 * caught as u64);
    }
}
