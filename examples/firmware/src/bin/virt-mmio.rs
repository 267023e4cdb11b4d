//! riscv64 `virt`, virtio-blk over virtio-mmio (version 2).
//!
//! Disks, in the order of the `-device virtio-blk-device` options (QEMU places the first at
//! slot `0x1000_8000`, the next ones below): the filesystem; then, optionally, the
//! conformance suite's scratch disk, a read-only disk (`readonly=on`: the suite checks that
//! writes are refused) and a disk behind QEMU's `blkdebug` that fails on purpose (see
//! `fault_step`). QEMU must run with `-global virtio-mmio.force-legacy=false` (the driver is
//! virtio 1.x only). `qemu-run.sh` sets all of this up.
#![no_std]
#![no_main]

use bonsaifs::device::{BlockDevice, IoError};
use bonsaifs_firmware::app;
use bonsaifs_firmware::board::Board;
use bonsaifs_firmware::machine::{self, virt};
use bonsaifs_firmware::workload::Config;
use bonsaifs_firmware::{entry, println};
use bonsaifs_hal::virtio::{BlkFeatures, MmioTransport, Transport, VirtioBlk, VirtioError};

/// Descriptors per virtqueue (the device may offer fewer).
const QUEUE: usize = 128;

type Disk = VirtioBlk<MmioTransport, &'static Board, QUEUE>;

entry!(main);

fn main() -> ! {
    machine::install(&virt::VIRT);
    println!("BOOT firmware=virt-mmio machine={}", virt::VIRT.name);
    let board = Board::init();

    // Slots from the top down: the order in which QEMU places `-device`s.
    let mut disks: heapless::Vec<Disk, 4> = heapless::Vec::new();
    for slot in (0..virt::VIRTIO_MMIO_SLOTS).rev() {
        if disks.is_full() {
            break;
        }
        let base = virt::VIRTIO_MMIO_BASE + slot * virt::VIRTIO_MMIO_STRIDE;
        let transport = match MmioTransport::new(board, base) {
            Ok(t) if t.device_type() == bonsaifs_hal::virtio::device_type::BLOCK => t,
            Ok(_) | Err(VirtioError::NotFound) => continue,
            Err(e) => {
                println!("FAIL reason=virtio-mmio base={base:#x} error=\"{e}\"");
                bonsaifs_firmware::console::exit(1);
            }
        };
        match Disk::new(transport, board) {
            Ok(d) => {
                println!(
                    "VIRTIO-BLK transport=mmio base={base:#x} queue_size={} features={:#x}",
                    d.queue_size(),
                    d.features().bits()
                );
                // Cannot fail: checked `is_full` above.
                let _ = disks.push(d);
            }
            Err(e) => {
                println!("FAIL reason=virtio-blk-init base={base:#x} error=\"{e}\"");
                bonsaifs_firmware::console::exit(1);
            }
        }
    }
    let mut disks = disks.into_iter();
    let Some(disk) = disks.next() else {
        println!("FAIL reason=no-virtio-blk-device");
        bonsaifs_firmware::console::exit(1);
    };
    let mut scratch = disks.next();
    let mut read_only = disks.next();
    let mut faulty = disks.next();
    // A discard must succeed where the driver negotiated it, and be refused where not.
    let discard = match &faulty {
        Some(f) if f.features().contains(BlkFeatures::DISCARD) => Ok(()),
        _ => Err(IoError::Unsupported),
    };
    app::device_checks(read_only.as_mut(), faulty.as_mut(), discard);
    app::print_disk("fs", "transport=mmio", &disk.geometry());
    if let Some(s) = &scratch {
        app::print_disk("scratch", "transport=mmio", &s.geometry());
    }
    app::run(disk, scratch.as_mut(), &Config::default(), |d: &Disk| {
        let s = d.stats();
        println!(
            "DRIVER submitted={} completed={} answered_by_driver={} notifications={} busy={} \
             protocol_errors={} max_in_flight={} dma_left={}",
            s.submitted,
            s.completed,
            s.answered_by_driver,
            s.notifications,
            s.busy,
            s.protocol_errors,
            s.max_in_flight,
            board.dma_remaining()
        );
    })
}
