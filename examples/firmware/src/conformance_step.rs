//! Runs the driver conformance suite (`bonsaifs_hal::conformance`) on a scratch disk before
//! the workload, and prints its verdict.
//!
//! The suite overwrites sectors at both ends of the device, so it never runs on the disk that
//! holds the filesystem: the binaries give it a second, scratch disk (see the runner script),
//! and skip it when there is none. The virtio binaries also run it on a read-only disk, where
//! it checks that writes are refused.

use bonsaifs::device::BlockDevice;
use bonsaifs_hal::conformance::{self, Config};

use crate::memory::StaticArena;
use crate::println;

/// Scratch memory for the suite's request buffers, used up by each run (a run on 512-byte
/// sectors takes 65 KiB, on 4 KiB sectors 297 KiB: two 16 KiB transfers and 64 sectors).
const SCRATCH_BYTES: usize = 640 * 1024;
static SCRATCH: StaticArena<SCRATCH_BYTES> = StaticArena::new();

/// Run the suite on `dev`; prints `CONFORMANCE ok=<0/1> ...` and returns whether it passed.
/// The seed is mixed into the data patterns so that one run's data cannot pass for another's.
pub fn run<D: BlockDevice<'static>>(dev: &mut D, name: &str, seed: u32) -> bool {
    let cfg = Config {
        seed,
        ..Config::default()
    };
    let need = conformance::scratch_len(dev.geometry().sector_size as usize, &cfg);
    let Some(mem) = SCRATCH.take(need, 4096) else {
        println!("CONFORMANCE ok=0 device={name} reason=scratch-used-up need={need}");
        return false;
    };
    let report = conformance::run(dev, mem, &cfg);
    println!(
        "CONFORMANCE ok={} device={name} run={} passed={} failed={} skipped={} completions={} \
         reordered={} max_in_flight={} queue_full_after={}",
        u8::from(report.ok()),
        report.run,
        report.passed,
        report.failed,
        report.skipped,
        report.completions,
        report.reordered,
        report.max_in_flight,
        report.queue_accepted
    );
    if let Some(f) = report.first_failure {
        println!("CONFORMANCE-FAILURE device={name} {f}");
    }
    report.ok()
}
