//! riscv64 `virt`, NVMe on PCIe (ECAM at `0x3000_0000`), with our own NVMe driver.
//!
//! Nothing assigns BARs under `-bios none`, so this binary enumerates bus 0, finds NVMe
//! controllers by class (01:08:02; QEMU's is 1b36:0010), gives each BAR an address in the host
//! bridge's 32-bit window, enables memory decoding and bus mastering, and brings the
//! controller up. The first controller holds the filesystem; a second one, if present, is the
//! conformance suite's scratch disk:
//!
//! ```text
//! -drive file=fs.img,if=none,format=raw,id=d0 -device nvme,serial=bonsai0,drive=d0
//! -drive file=scratch.img,if=none,format=raw,id=d1 -device nvme,serial=bonsai1,drive=d1
//! ```
//!
//! A controller with the serial number `timeout-probe` is not used as a disk: it checks the
//! driver's timeout path instead. Give it a drive throttled to one request per second
//! (`-drive file=t.img,if=none,format=raw,id=d2,throttling.iops-total=1`), so that commands
//! outlive a 200 ms timeout; the binary then expects `Timeout` completions with the buffers
//! handed back, and a dead driver (see [`timeout_probe`]).
#![no_std]
#![no_main]

use core::ptr::NonNull;

use bonsaifs::device::{BlockDevice, Command, IoError, Request};
use bonsaifs_firmware::app;
use bonsaifs_firmware::board::Board;
use bonsaifs_firmware::machine::{self, virt};
use bonsaifs_firmware::memory::StaticBuffer;
use bonsaifs_firmware::workload::Config;
use bonsaifs_firmware::{entry, println};
use bonsaifs_hal::nvme::{Nvme, NvmeConfig};
use bonsaifs_hal::pci::{BarAllocator, Ecam};

/// Commands in flight per controller (the I/O queue has one entry more).
const SLOTS: usize = 32;

type Disk = Nvme<&'static Board, SLOTS>;

/// Serial number of the controller that checks the timeout path.
const TIMEOUT_PROBE_SERIAL: &str = "timeout-probe";
/// Requests the timeout probe sends.
const PROBE_REQUESTS: usize = 4;
/// The timeout probe's read buffers (one 4 KiB sector each).
static PROBE_BUFFERS: StaticBuffer<{ PROBE_REQUESTS * 4096 }> = StaticBuffer::new();

/// Checks the timeout path on a controller whose drive is throttled: reads that outlive the
/// I/O timeout must complete with `Timeout` (buffers handed back, since QEMU's controller
/// confirms the reset), the driver must then count as dead and refuse new requests with
/// `Timeout`. Prints `NVME-TIMEOUT ok=<0/1> ...`; exits with code 5 on failure.
fn timeout_probe(board: &'static Board, bar0: u64) {
    let cfg = NvmeConfig {
        io_timeout_us: 200_000,
        ..NvmeConfig::default()
    };
    let mut dev: Nvme<&'static Board, PROBE_REQUESTS> = match Nvme::new(board, bar0, cfg) {
        Ok(d) => d,
        Err(e) => {
            println!("NVME-TIMEOUT ok=0 reason=init error=\"{e}\"");
            bonsaifs_firmware::console::exit(5);
        }
    };
    let Some(mem) = PROBE_BUFFERS.take() else {
        println!("NVME-TIMEOUT ok=0 reason=buffers-taken");
        bonsaifs_firmware::console::exit(5);
    };
    let ss = dev.geometry().sector_size as usize;
    let t0 = bonsaifs_firmware::console::now_us();
    let mut sent = 0;
    for (i, buf) in mem.chunks_mut(4096).enumerate() {
        let (buf, _) = buf.split_at_mut(ss);
        let req = Request {
            tag: i as u32,
            command: Command::Read {
                lba: 8 * i as u64,
                buf,
            },
        };
        if dev.submit(req).is_ok() {
            sent += 1;
        }
    }
    let (mut ok, mut timeouts, mut other, mut buffers_back) = (0, 0, 0, 0);
    let mut done = 0;
    // Bounded: every command is answered within the 200 ms timeout plus the reset.
    while done < sent && bonsaifs_firmware::console::now_us().wrapping_sub(t0) < 20_000_000 {
        let Some(c) = dev.poll() else { continue };
        done += 1;
        buffers_back += usize::from(c.buf.is_some());
        match c.result {
            Ok(()) => ok += 1,
            Err(IoError::Timeout) => timeouts += 1,
            Err(_) => other += 1,
        }
    }
    let elapsed_ms = bonsaifs_firmware::console::now_us().wrapping_sub(t0) / 1000;
    // A request after the controller was given up on fails at once.
    let refused = dev
        .submit(Request {
            tag: 99,
            command: Command::Flush,
        })
        .is_ok()
        && dev
            .poll()
            .is_some_and(|c| c.tag == 99 && c.result == Err(IoError::Timeout));
    let pass = sent == PROBE_REQUESTS
        && done == sent
        && timeouts >= 1
        && other == 0
        && buffers_back == sent
        && dev.is_dead()
        && refused
        && dev.in_flight() == 0;
    println!(
        "NVME-TIMEOUT ok={} sent={sent} completed={done} ok_before={ok} timeouts={timeouts} \
         other_errors={other} buffers_back={buffers_back} dead={} refused_after={} \
         elapsed_ms={elapsed_ms}",
        u8::from(pass),
        u8::from(dev.is_dead()),
        u8::from(refused),
    );
    if !pass {
        bonsaifs_firmware::console::exit(5);
    }
}

entry!(main);

fn fail(reason: &str) -> ! {
    println!("FAIL reason={reason}");
    bonsaifs_firmware::console::exit(1);
}

fn main() -> ! {
    machine::install(&virt::VIRT);
    println!("BOOT firmware=virt-nvme machine={}", virt::VIRT.name);
    let board = Board::init();

    let Some(base) = NonNull::new(virt::PCIE_ECAM as usize as *mut u8) else {
        fail("ecam-address");
    };
    // SAFETY: the virt machine's ECAM window, identity-mapped in machine mode; this firmware
    // is its only user. Bus 0 is all QEMU populates for `-device` on the root bus.
    let ecam = unsafe { Ecam::new(base, 0, 0) };
    let mut window = BarAllocator::new(virt::PCIE_MMIO, virt::PCIE_MMIO_SIZE);

    let mut disks: heapless::Vec<Disk, 2> = heapless::Vec::new();
    for f in ecam.functions() {
        if (f.class, f.subclass, f.prog_if) != (0x01, 0x08, 0x02) {
            continue;
        }
        let bars = match ecam.assign_bars(f.address, &mut window) {
            Ok(b) => b,
            Err(e) => {
                println!("FAIL reason=pci-bars function={} error=\"{e}\"", f.address);
                bonsaifs_firmware::console::exit(1);
            }
        };
        let Some(bar0) = bars[0] else {
            fail("nvme-no-bar0");
        };
        if let Err(e) = ecam.enable(f.address) {
            println!("FAIL reason=pci-enable error=\"{e}\"");
            bonsaifs_firmware::console::exit(1);
        }
        let t0 = bonsaifs_firmware::console::now_us();
        let disk = match Disk::new(board, bar0.address, NvmeConfig::default()) {
            Ok(d) => d,
            Err(e) => {
                println!(
                    "FAIL reason=nvme-init function={} id={:04x}:{:04x} error=\"{e}\"",
                    f.address, f.vendor, f.device
                );
                bonsaifs_firmware::console::exit(1);
            }
        };
        if disk.info().controller.serial.as_str() == TIMEOUT_PROBE_SERIAL {
            // Not a disk: brought up again, with a short timeout, by the probe.
            timeout_probe(board, bar0.address);
            continue;
        }
        let i = disk.info();
        println!(
            "NVME function={} id={:04x}:{:04x} bar0={:#x} size={:#x} version={}.{} \
             serial=\"{}\" model=\"{}\" firmware=\"{}\" nsid={} max_queue_entries={} \
             io_queue_entries={} doorbell_stride={} ready_timeout_ms={} max_transfer={} \
             vwc={} dsm={} init_us={}",
            f.address,
            f.vendor,
            f.device,
            bar0.address,
            bar0.size,
            i.version >> 16,
            (i.version >> 8) & 0xFF,
            i.controller.serial,
            i.controller.model,
            i.controller.firmware,
            i.namespace,
            i.max_queue_entries,
            i.io_queue_entries,
            i.doorbell_stride,
            i.ready_timeout_ms,
            i.max_transfer,
            u8::from(i.controller.volatile_cache()),
            u8::from(i.controller.supports_dsm()),
            bonsaifs_firmware::console::now_us().saturating_sub(t0),
        );
        if disks.push(disk).is_err() {
            break;
        }
    }
    let mut disks = disks.into_iter();
    let Some(disk) = disks.next() else {
        fail("no-nvme-controller");
    };
    let mut scratch = disks.next();
    app::print_disk("fs", "transport=nvme", &disk.geometry());
    if let Some(s) = &scratch {
        app::print_disk("scratch", "transport=nvme", &s.geometry());
    }
    app::run(disk, scratch.as_mut(), &Config::default(), |d: &Disk| {
        let s = d.stats();
        println!(
            "DRIVER submitted={} completed={} out_of_order={} stray={} refused={} dma_left={}",
            s.submitted,
            s.completed,
            s.out_of_order,
            s.stray,
            s.refused,
            board.dma_remaining()
        );
    })
}
