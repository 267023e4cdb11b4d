//! Operations plus a crash state against the durability contract: the workload runs on the
//! recording device, one crash point and one subset of its unflushed writes (optionally with a
//! torn sector) are chosen by the input, and the image must mount, fsck clean, and show a
//! volume the oracle allows given the acknowledgements at that instant.
//!
//! Input: a device byte, a step count byte (at most 8), two bytes per step, then two bytes
//! choosing the crash point, then the kept-writes bitmap (one bit per unflushed write) and a
//! tear byte (0: none; else it picks a sector and old / garbage contents).
#![no_main]

use bonsaifs_harness::checker::{check_image, Scratch};
use bonsaifs_harness::crash_disk::{for_each_crash_point, CrashState, Tear};
use bonsaifs_harness::execute::{execute, DeviceModel, RunOptions};
use bonsaifs_harness::image::base;
use bonsaifs_harness::oracle::Oracle;
use bonsaifs_harness::workload::Workload;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (dev, steps) = (data[0], usize::from(data[1] % 9));
    let rest = &data[2..];
    let w = Workload::from_bytes(rest, steps);
    let rest = &rest[(2 * w.steps.len()).min(rest.len())..];
    let pick = rest
        .get(..2)
        .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])));
    let rest = rest.get(2..).unwrap_or(&[]);
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
    assert!(run.problems.is_empty(), "workload {}: {:?}", w.spec(), run.problems);
    let oracle = Oracle::new(&b.model, &b.writes, run.record.clone());
    let mut points = 0usize;
    for_each_crash_point(&b.image, b.fingerprint, run.rules, &run.events, |_| points += 1);
    let chosen = pick % points.max(1);
    let mut i = 0;
    let mut scratch = Scratch::default();
    for_each_crash_point(&b.image, b.fingerprint, run.rules, &run.events, |p| {
        i += 1;
        if i - 1 != chosen {
            return;
        }
        let n = p.pending.len();
        let kept: Vec<bool> = (0..n)
            .map(|j| rest.get(j / 8).is_some_and(|b| b & (1 << (j % 8)) != 0))
            .collect();
        let tear_byte = rest.get(n.div_ceil(8)).copied().unwrap_or(0);
        let tear = (tear_byte != 0 && n > 0).then(|| {
            let wi = usize::from(tear_byte) % n;
            let sectors = p.pending[wi].live.len().max(1);
            let s = usize::from(tear_byte >> 3) % sectors;
            let how = if tear_byte & 4 != 0 {
                Tear::Garbage(u64::from(tear_byte))
            } else {
                Tear::Old
            };
            (wi, s, how)
        });
        let mut kept = kept;
        if let Some((wi, _, _)) = tear {
            kept[wi] = true;
        }
        let st = CrashState { kept, tear };
        p.build(&st, &mut scratch.image);
        if let Err((kind, detail)) = check_image(&mut scratch, &oracle, p.acks, true) {
            panic!(
                "workload {} crash point {chosen} {}: [{kind}] {detail}",
                w.spec(),
                st.describe()
            );
        }
    });
});
