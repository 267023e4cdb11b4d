//! What every binary does once it has found its disks: conformance on the scratch disk,
//! the workload on the filesystem disk, the verdict line, and the exit.
//!
//! Verdict lines: `PASS` (exit 0) or `FAIL reason=...` (exit 1: workload, 4: conformance).

use bonsaifs::device::{BlockDevice, Geometry, IoError};
use bonsaifs::volume::memory_needed;

use crate::console::{exit, now_us};
use crate::memory::StaticBuffer;
use crate::workload::{self, BLOCK_SIZE, SLOTS};
use crate::{conformance_step, fault_step, println};

/// Bytes of cache memory for either sector size (the log's record buffers take more with
/// small sectors).
const FS_MEMORY_BYTES: usize = {
    let small = memory_needed(512, BLOCK_SIZE, SLOTS);
    let large = memory_needed(4096, BLOCK_SIZE, SLOTS);
    if small > large {
        small
    } else {
        large
    }
};
/// Cache memory of the filesystem.
static FS_MEMORY: StaticBuffer<FS_MEMORY_BYTES> = StaticBuffer::new();
/// One sector for the superblock probe.
static PROBE: StaticBuffer<4096> = StaticBuffer::new();
/// fsck's bitmaps (one bit per block and two per inode: 64 KiB covers a 2 GiB volume).
static FSCK_SCRATCH: StaticBuffer<{ 64 * 1024 }> = StaticBuffer::new();

/// Print a `DISK` line describing a device.
pub fn print_disk(role: &str, what: &str, geo: &Geometry) {
    let sep = if what.is_empty() { "" } else { " " };
    println!(
        "DISK role={role}{sep}{what} sector_size={} sectors={} queue_depth={} volatile_cache={} \
         fua={} read_only={}",
        geo.sector_size,
        geo.sector_count,
        geo.queue_depth,
        u8::from(geo.volatile_cache),
        u8::from(geo.fua),
        u8::from(geo.read_only)
    );
}

/// The device-level checks beyond the scratch disk: the conformance suite on a read-only disk
/// (its geometry must say read-only; writes must be refused), and the [`fault_step`] on a disk
/// that fails on purpose (`discard`: what a discard there must complete with). Either may be
/// absent. Exits with code 4 (conformance) or 6 (faults) on failure.
pub fn device_checks<R, F>(
    read_only: Option<&mut R>,
    faulty: Option<&mut F>,
    discard: Result<(), IoError>,
) where
    R: BlockDevice<'static>,
    F: BlockDevice<'static>,
{
    if let Some(ro) = read_only {
        print_disk("read-only", "", &ro.geometry());
        let seed = (now_us() as u32) | 1;
        if !ro.geometry().read_only || !conformance_step::run(ro, "read-only", seed) {
            println!("FAIL reason=read-only-disk");
            exit(4);
        }
    }
    if let Some(f) = faulty {
        print_disk("faulty", "", &f.geometry());
        if !fault_step::run(f, "faulty", discard) {
            println!("FAIL reason=faults");
            exit(6);
        }
    }
}

/// Run the conformance suite on `scratch` (if there is one), then the workload on `disk`;
/// `describe` prints the driver's own counters after the unmount. Never returns: exits with
/// the verdict.
pub fn run<D, S>(
    disk: D,
    scratch: Option<&mut S>,
    cfg: &workload::Config,
    describe: impl FnOnce(&D),
) -> !
where
    D: BlockDevice<'static>,
    S: BlockDevice<'static>,
{
    match scratch {
        Some(s) => {
            // A different seed every boot: data left by an earlier run cannot pass.
            let seed = (now_us() as u32) | 1;
            if !conformance_step::run(s, "scratch", seed) {
                println!("FAIL reason=conformance");
                exit(4);
            }
        }
        None => println!("CONFORMANCE skipped reason=no-scratch-disk"),
    }

    let (Some(mem), Some(probe), Some(fsck)) =
        (FS_MEMORY.take(), PROBE.take(), FSCK_SCRATCH.take())
    else {
        println!("FAIL reason=memory-taken-twice");
        exit(1);
    };
    let result = workload::mount(disk, mem, probe).and_then(|(mut fs, formatted)| {
        let summary = workload::run(&mut fs, formatted, cfg, fsck)?;
        let dev = fs.unmount().map_err(|e| workload::Failure {
            step: "unmount",
            error: Some(e),
            detail: 0,
        })?;
        Ok((summary, dev))
    });
    match result {
        Ok((summary, dev)) => {
            summary.print();
            describe(dev.inner());
            println!("PASS");
            exit(0)
        }
        Err(f) => {
            println!("FAIL reason=workload {f}");
            exit(1)
        }
    }
}
