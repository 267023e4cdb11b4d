//! CI: a seeded sample of seq-2 workloads per device (see `ci::SEQ2_SAMPLE`), every crash
//! state of every crash point, torn sectors, two mounts per state.

use bonsaifs_harness::campaign::default_threads;
use bonsaifs_harness::ci;

#[test]
fn sampled_seq2_workloads_keep_the_contract_in_every_crash_state() {
    let s = ci::crash_seq2(default_threads());
    println!("{s}");
    eprintln!("{s}");
    for v in s.tally.violations.iter().take(10) {
        eprintln!("{v}");
    }
    assert!(s.complete);
    assert_eq!(s.tally.workloads, 2 * ci::SEQ2_SAMPLE as u64);
    const { assert!(ci::SEQ2_SAMPLE >= 2000) };
    assert!(s.tally.checked >= 2 * s.tally.workloads, "{s}");
    assert!(s.tally.violations.is_empty(), "{s}");
}
