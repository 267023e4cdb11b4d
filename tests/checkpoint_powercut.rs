//! A power cut at every device request of a checkpoint: mount always finds the old tree or the
//! new one, each equal to its model, and fsck is clean.
//!
//! The cut is modelled by a fault injector that drops every request from the n-th on (they
//! never reach the device), then the queued RAM disk's power cut keeps either only what was
//! durable, or everything that had completed (a device that happened to write its cache back).

mod common;

use std::collections::BTreeMap;

use bonsaifs::btree::InsertMode;
use bonsaifs::device::{FaultInjector, FaultPlan, IoError, QueuedRamDisk};
use bonsaifs::volume::Volume;
use bonsaifs::wire::Key;
use common::*;

type Dev<'b> = FaultInjector<'b, QueuedRamDisk<'b>>;
type V<'b> = Volume<'b, Dev<'b>, SLOTS>;

type Model = BTreeMap<u64, Vec<u8>>;

fn val(i: u64, round: u64) -> Vec<u8> {
    vec![(i * 7 + round) as u8; ((i * 13 + round * 5) % 600) as usize]
}

fn mount<'b>(image: &[u8], m: &'b mut [u8]) -> V<'b> {
    let dev = QueuedRamDisk::from_image(cfg(image.len() as u64, 99), image.to_vec());
    V::mount(FaultInjector::new(dev, FaultPlan::None, IoError::Media), m).expect("mount")
}

/// The changes made between the two checkpoints (deterministic).
fn change(vol: &mut V<'_>, model: &mut Model) {
    for i in 0..1500u64 {
        match i % 5 {
            0 | 1 => {
                vol.remove(&Key::new(i, 1, 0)).unwrap();
                model.remove(&i);
            }
            _ => {
                let v = val(i, 1);
                vol.insert(Key::new(i, 1, 0), &v, InsertMode::Upsert)
                    .unwrap();
                model.insert(i, v);
            }
        }
    }
    for i in 3000..3400u64 {
        let v = val(i, 1);
        vol.insert(Key::new(i, 1, 0), &v, InsertMode::Create)
            .unwrap();
        model.insert(i, v);
    }
}

fn contents(vol: &mut V<'_>) -> Model {
    let mut out = Model::new();
    let mut from = Key::MIN;
    let mut incl = true;
    while let Some((k, v)) = vol.next(&from, incl, |k, v| (k, v.to_vec())).unwrap() {
        out.insert(k.id, v);
        from = k;
        incl = false;
    }
    out
}

#[test]
fn power_cut_at_every_request_of_a_checkpoint() {
    // The old state: 2000 items, checkpointed.
    let mut old = Model::new();
    let image = {
        let base = format_image(16 << 20, 4096);
        let mut m = mem(4096);
        let mut vol = mount(&base, &mut m);
        for i in 0..2000u64 {
            let v = val(i, 0);
            vol.insert(Key::new(i, 1, 0), &v, InsertMode::Create)
                .unwrap();
            old.insert(i, v);
        }
        vol.checkpoint().unwrap();
        vol.into_device().into_inner().durable_image().to_vec()
    };
    let mut new = old.clone();

    // Count the checkpoint's requests.
    let total = {
        let mut m = mem(4096);
        let mut vol = mount(&image, &mut m);
        change(&mut vol, &mut new);
        let before = vol.device().submitted();
        vol.checkpoint().unwrap();
        vol.device().submitted() - before
    };
    assert!(
        total >= 4,
        "a checkpoint writes nodes, flushes, writes the superblock: {total}"
    );

    let (mut saw_old, mut saw_new) = (0, 0);
    for n in 0..=total {
        for keep_completed in [false, true] {
            let mut m = mem(4096);
            let mut vol = mount(&image, &mut m);
            let mut scratch = Model::new();
            change(&mut vol, &mut scratch);
            let before = vol.device().submitted();
            vol.device_mut().set_plan(FaultPlan::From(before + n));
            let r = vol.checkpoint();
            if n == total {
                r.unwrap();
            } else {
                assert!(
                    r.is_err(),
                    "checkpoint with request {n} of {total} lost must fail"
                );
                assert!(
                    vol.is_read_only(),
                    "a failed checkpoint turns the volume read-only"
                );
            }
            let mut dev = vol.into_device().into_inner();
            if keep_completed {
                dev.power_cut_keeping(|_| true);
            } else {
                dev.power_cut();
            }
            let after = dev.durable_image().to_vec();
            let mut m2 = mem(4096);
            let mut vol = mount(&after, &mut m2);
            let mut bits = vec![0u8; (vol.space_info().total_blocks as usize).div_ceil(8)];
            let rep = vol.fsck(&mut bits).unwrap();
            assert!(rep.is_clean(), "cut at {n}/{total}: {rep:?}");
            let got = contents(&mut vol);
            if got == old {
                saw_old += 1;
            } else if got == new {
                saw_new += 1;
            } else {
                panic!(
                    "cut at {n}/{total} (keep {keep_completed}): neither the old nor the new tree"
                );
            }
            if n == total {
                assert_eq!(got, new, "a completed checkpoint is durable");
            }
        }
    }
    assert!(saw_old > 0 && saw_new > 0, "old {saw_old} new {saw_new}");
    println!(
        "checkpoint of {total} requests: {} crash states checked, old {saw_old}, new {saw_new}",
        2 * (total + 1)
    );
}
