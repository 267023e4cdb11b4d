//! Arbitrary operation sequences against the model: every call's answer must be the one the
//! model predicts (the exact error variant), `NOWAIT` tickets must be reported exactly once,
//! the volume in memory must equal the model at the end, and after a crash with every write
//! kept the recovered volume must be one the durability contract allows.
//!
//! Input: a device byte (bit 0: FUA, the rest seeds completion order), then two bytes per
//! step (catalogue operation, persistence operation) over the harness's fixed namespace, at
//! most 12 steps.
#![no_main]

use bonsaifs_harness::checker::{check_image, Scratch};
use bonsaifs_harness::crash_disk::{for_each_crash_point, CrashState};
use bonsaifs_harness::execute::{execute, DeviceModel, RunOptions};
use bonsaifs_harness::image::base;
use bonsaifs_harness::oracle::Oracle;
use bonsaifs_harness::workload::Workload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&dev, rest)) = data.split_first() else {
        return;
    };
    let w = Workload::from_bytes(rest, 12);
    let opts = RunOptions {
        device: DeviceModel {
            fua: dev & 1 != 0,
            queue_depth: 32,
            seed: u64::from(dev >> 1),
        },
        ..RunOptions::default()
    };
    let b = base();
    let run = execute(b, &w, &opts);
    assert!(run.mount_error.is_none(), "{:?}", run.mount_error);
    assert!(run.problems.is_empty(), "workload {}: {:?}", w.spec(), run.problems);
    let oracle = Oracle::new(&b.model, &b.writes, run.record.clone());
    let end = run.events.len();
    let mut scratch = Scratch::default();
    for_each_crash_point(&b.image, b.fingerprint, run.rules, &run.events, |p| {
        if p.at != end {
            return;
        }
        let all = CrashState {
            kept: vec![true; p.pending.len()],
            tear: None,
        };
        p.build(&all, &mut scratch.image);
        if let Err((kind, detail)) = check_image(&mut scratch, &oracle, p.acks, false) {
            panic!("workload {}: [{kind}] {detail}", w.spec());
        }
    });
});
