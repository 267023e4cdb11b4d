//! riscv64 `virt`, virtio-blk over PCI (modern capabilities), on the PCIe host bridge's ECAM.
//!
//! Nothing assigns BARs under `-bios none`: the firmware enumerates the bus, assigns each
//! virtio-blk function's BARs from the bridge's 32-bit MMIO window and enables it. The first
//! virtio-blk function (in bus/device/function order; the runner puts it at 00:02.0) holds
//! the filesystem; the optional next ones are the conformance suite's scratch disk (00:03.0),
//! a read-only disk (00:04.0) and a disk that fails on purpose (00:05.0, QEMU `blkdebug`; see
//! `fault_step`).
#![no_std]
#![no_main]

use bonsaifs::device::{BlockDevice, IoError};
use bonsaifs_firmware::app;
use bonsaifs_firmware::board::Board;
use bonsaifs_firmware::console::exit;
use bonsaifs_firmware::machine::{self, virt};
use bonsaifs_firmware::workload::Config;
use bonsaifs_firmware::{entry, println};
use bonsaifs_hal::pci::{BarAllocator, Ecam};
use bonsaifs_hal::platform::Platform;
use bonsaifs_hal::virtio::pci::virtio_device_type;
use bonsaifs_hal::virtio::{device_type, BlkFeatures, PciTransport, VirtioBlk};

/// Descriptors per virtqueue (the device may offer fewer).
const QUEUE: usize = 128;

type Disk = VirtioBlk<PciTransport, &'static Board, QUEUE>;

entry!(main);

fn main() -> ! {
    machine::install(&virt::VIRT);
    println!("BOOT firmware=virt-pci machine={}", virt::VIRT.name);
    let board = Board::init();

    let ecam_len = (usize::from(virt::PCIE_BUSES) + 1) << 20;
    let Some(base) = board.map_mmio(virt::PCIE_ECAM, ecam_len) else {
        println!("FAIL reason=ecam-map");
        exit(1);
    };
    // SAFETY: QEMU virt's ECAM window covers buses 0..=255 at this address, identity-mapped;
    // nothing else configures PCI in this firmware.
    let ecam = unsafe { Ecam::new(base, 0, virt::PCIE_BUSES) };
    let mut window = BarAllocator::new(virt::PCIE_MMIO, virt::PCIE_MMIO_SIZE);

    let mut disks: heapless::Vec<Disk, 4> = heapless::Vec::new();
    for f in ecam.functions() {
        println!(
            "PCI {} vendor={:04x} device={:04x} class={:02x}{:02x}{:02x}",
            f.address, f.vendor, f.device, f.class, f.subclass, f.prog_if
        );
        if virtio_device_type(&ecam, &f) != Some(device_type::BLOCK) || disks.is_full() {
            continue;
        }
        let transport = match PciTransport::new(board, &ecam, &f, &mut window) {
            Ok(t) => t,
            Err(e) => {
                println!("FAIL reason=virtio-pci at={} error=\"{e}\"", f.address);
                exit(1);
            }
        };
        match Disk::new(transport, board) {
            Ok(d) => {
                println!(
                    "VIRTIO-BLK transport=pci at={} queue_size={} features={:#x}",
                    f.address,
                    d.queue_size(),
                    d.features().bits()
                );
                // Cannot fail: checked `is_full` above.
                let _ = disks.push(d);
            }
            Err(e) => {
                println!("FAIL reason=virtio-blk-init at={} error=\"{e}\"", f.address);
                exit(1);
            }
        }
    }
    let mut disks = disks.into_iter();
    let Some(disk) = disks.next() else {
        println!("FAIL reason=no-virtio-blk-device");
        exit(1);
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
    app::print_disk("fs", "transport=pci", &disk.geometry());
    if let Some(s) = &scratch {
        app::print_disk("scratch", "transport=pci", &s.geometry());
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
