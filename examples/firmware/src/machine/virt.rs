//! QEMU's riscv64 `virt` machine: 16550 UART at `0x1000_0000`, the sifive_test device at
//! `0x10_0000` to end the run with an exit code, and the CLINT's `mtime` (10 MHz).
//!
//! Also the addresses the binaries probe: virtio-mmio slots and the PCIe host bridge.

use super::mmio::{read64, read8, write32, write8};
use super::Machine;

/// 16550 UART base.
const UART: usize = 0x1000_0000;
/// sifive_test "finisher" device.
const TEST_DEVICE: usize = 0x0010_0000;
/// CLINT `mtime` register.
const MTIME: usize = 0x0200_BFF8;
/// `mtime` ticks per microsecond (10 MHz timebase).
const TICKS_PER_US: u64 = 10;

/// The lowest of the eight virtio-mmio slots (`0x1000_1000 ..= 0x1000_8000`, 0x1000 apart).
/// QEMU fills them from the top: the first `-device virtio-*-device` is at `0x1000_8000`.
pub const VIRTIO_MMIO_BASE: u64 = 0x1000_1000;
/// Distance between virtio-mmio slots.
pub const VIRTIO_MMIO_STRIDE: u64 = 0x1000;
/// Number of virtio-mmio slots.
pub const VIRTIO_MMIO_SLOTS: u64 = 8;
/// PCIe ECAM window (bus 0 at this address; 1 MiB per bus).
pub const PCIE_ECAM: u64 = 0x3000_0000;
/// Buses the ECAM window of `virt` covers (256 MiB).
pub const PCIE_BUSES: u8 = 255;
/// The host bridge's 32-bit MMIO window for BARs.
pub const PCIE_MMIO: u64 = 0x4000_0000;
/// Size of that window.
pub const PCIE_MMIO_SIZE: u64 = 0x4000_0000;

fn init() {
    // SAFETY: the 16550's registers on this machine.
    unsafe {
        write8(UART + 1, 0x00); // IER: no interrupts
        write8(UART + 3, 0x03); // LCR: 8 data bits, no parity, 1 stop bit
        write8(UART + 2, 0x07); // FCR: enable and clear the FIFOs
    }
}

fn putc(b: u8) {
    // SAFETY: the 16550's registers on this machine.
    unsafe {
        // LSR bit 5: the transmit holding register is empty.
        while read8(UART + 5) & 0x20 == 0 {}
        write8(UART, b);
    }
}

fn exit(code: u32) -> ! {
    let value = if code == 0 {
        0x5555
    } else {
        (code << 16) | 0x3333
    };
    // SAFETY: the sifive_test device; QEMU exits on this write.
    unsafe { write32(TEST_DEVICE, value) };
    loop {
        core::hint::spin_loop();
    }
}

fn now_us() -> u64 {
    // SAFETY: the CLINT's free-running timer.
    unsafe { read64(MTIME) / TICKS_PER_US }
}

/// The `virt` machine.
pub static VIRT: Machine = Machine {
    name: "qemu-riscv64-virt",
    init,
    putc,
    exit,
    now_us,
};
