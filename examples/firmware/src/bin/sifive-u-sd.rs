//! riscv64 `sifive_u`, an SD card over SPI: our SD driver (`bonsaifs_hal::sd`) on the SiFive
//! SPI controller (`bonsaifs_hal::sifive_spi`), SPI2 at `0x1005_0000`, where QEMU attaches the
//! `-drive if=sd` card:
//!
//! ```text
//! qemu-system-riscv64 -M sifive_u -smp 2 -bios none -no-reboot -nographic \
//!     -kernel sifive-u-sd -drive file=sd.img,if=sd,format=raw
//! ```
//!
//! QEMU 10.0.2's SPI SD model has quirks, handled here and not in the driver (see
//! [`bonsaifs_firmware::qemu_sd_quirks`]): the answers to CMD58 and CMD13 are corrected on
//! the way in; CMD9 is refused, so the card's size is found by probing reads, after one
//! command that consumes the refusal's leftover "illegal command" bit.
//!
//! The card is the only disk, so it is split in two [`Window`]s: the last 4 MiB are the
//! conformance suite's scratch area (overwritten every boot), the rest holds the filesystem
//! (which a host tool then opens on the whole image: the filesystem records its own size).
//!
//! The machine has no exit device: the run ends through the reset GPIO, QEMU always exits
//! with 0, and the verdict is the `PASS` / `FAIL` line.
#![no_std]
#![no_main]

use core::cell::RefCell;

use bonsaifs::device::BlockDevice;
use bonsaifs_firmware::app;
use bonsaifs_firmware::delay::MachineDelay;
use bonsaifs_firmware::machine::{self, sifive_u};
use bonsaifs_firmware::memory::StaticCell;
use bonsaifs_firmware::qemu_sd_quirks::{clear_stale_illegal, probe_sector_count, QemuSdQuirks};
use bonsaifs_firmware::window::Window;
use bonsaifs_firmware::workload::Config;
use bonsaifs_firmware::{console, entry, println};
use bonsaifs_hal::sd::{CardKind, SdCard, SdConfig, SdError, SdSpi};
use bonsaifs_hal::sifive_spi::SifiveSpi;

/// SPI2, the controller QEMU's `sifive_u` wires the SD card to (chip select 0).
const SPI2_BASE: usize = 0x1005_0000;
/// Serial clock divider while the card initialises: about 400 kHz from the FU540's 500 MHz
/// peripheral clock (`500 MHz / (2 × (624 + 1))`).
const SCKDIV_INIT: u32 = 624;
/// Serial clock divider afterwards: about 20 MHz.
const SCKDIV_RUN: u32 = 11;

/// Sectors at the end of the card given to the conformance suite (4 MiB).
const SCRATCH_SECTORS: u64 = 8192;

type Spi = QemuSdQuirks<SifiveSpi>;
type Disk = SdCard<'static, Spi, MachineDelay>;

/// The card, shared by the filesystem window and the scratch window.
static CARD: StaticCell<RefCell<Disk>> = StaticCell::new();

entry!(main);

fn fail(reason: &str, e: SdError) -> ! {
    println!("FAIL reason={reason} error=\"{e}\" detail={e:?}");
    console::exit(1)
}

fn main() -> ! {
    machine::install(&sifive_u::SIFIVE_U);
    println!(
        "BOOT firmware=sifive-u-sd machine={}",
        sifive_u::SIFIVE_U.name
    );

    // SAFETY: SPI2's registers on this machine; nothing else in the firmware touches them.
    let mut spi = unsafe { SifiveSpi::new(SPI2_BASE, 0, SCKDIV_INIT) };
    // At least 74 clocks with chip select released before the first command.
    if spi.idle_clocks(10).is_err() {
        println!("FAIL reason=spi-stalled");
        console::exit(1);
    }
    let mut bus = SdSpi::new(QemuSdQuirks::new(spi), MachineDelay, SdConfig::default());
    let t0 = console::now_us();
    let info = match bus.init() {
        Ok(info) => info,
        Err(e) => fail("sd-init", e),
    };
    bus.spi_mut().inner_mut().set_clock_divider(SCKDIV_RUN);
    let kind = match info.kind {
        CardKind::SdscV1 => "sdsc-v1",
        CardKind::SdscV2 => "sdsc-v2",
        CardKind::Sdhc => "sdhc",
    };
    println!(
        "SD-INIT kind={kind} ocr={:#010x} crc=1 cmd58_fixes={} us={}",
        info.ocr,
        bus.spi_mut().cmd58_fixes(),
        console::now_us().wrapping_sub(t0)
    );

    // The size: from the CSD when the card answers CMD9, else by probing reads.
    let disk: Disk = match bus.read_csd() {
        Ok(csd) => {
            println!("SD-SIZE source=csd sectors={}", csd.sector_count());
            SdCard::from_csd(bus, &csd)
        }
        Err(SdError::Command { cmd: 9, r1 }) if r1.illegal() => {
            if let Err(e) = clear_stale_illegal(&mut bus) {
                fail("sd-status", e);
            }
            let (sectors, reads) = match probe_sector_count(&mut bus) {
                Ok(found) => found,
                Err(e) => fail("sd-size-probe", e),
            };
            println!(
                "SD-SIZE source=probe sectors={sectors} reads={reads} cmd9_r1={:#04x}",
                r1.0
            );
            SdCard::with_sector_count(bus, sectors)
        }
        Err(e) => fail("sd-csd", e),
    };
    let sectors = disk.geometry().sector_count;
    let Ok(card) = CARD.init(RefCell::new(disk)) else {
        println!("FAIL reason=card-taken-twice");
        console::exit(1);
    };
    let card: &'static RefCell<Disk> = card;
    let mut scratch = match sectors.checked_sub(SCRATCH_SECTORS) {
        Some(fs_sectors) if fs_sectors >= 3 * SCRATCH_SECTORS => {
            Window::new(card, fs_sectors, SCRATCH_SECTORS)
        }
        _ => None,
    };
    let fs_sectors = sectors - scratch.as_ref().map_or(0, |_| SCRATCH_SECTORS);
    let Some(fs) = Window::new(card, 0, fs_sectors) else {
        println!("FAIL reason=card-too-small sectors={sectors}");
        console::exit(1);
    };
    app::print_disk("fs", "transport=spi first=0", &fs.geometry());
    if let Some(s) = &scratch {
        let mut what: heapless::String<48> = heapless::String::new();
        let _ = core::fmt::Write::write_fmt(
            &mut what,
            format_args!("transport=spi first={fs_sectors}"),
        );
        app::print_disk("scratch", &what, &s.geometry());
    }

    app::run(
        fs,
        scratch.as_mut(),
        &Config::default(),
        |w: &Window<Disk>| {
            let d = w.device();
            let s = d.bus().stats();
            println!(
                "DRIVER commands={} blocks_read={} blocks_written={} wait_polls={} errors={} \
             last_error={:?} qemu_cmd13_fixes={}",
                s.commands,
                s.blocks_read,
                s.blocks_written,
                s.wait_polls,
                s.errors,
                d.last_error(),
                d.bus().spi().cmd13_fixes()
            );
        },
    )
}
