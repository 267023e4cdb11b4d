//! QEMU's riscv64 `sifive_u` machine (HiFive Unleashed): SiFive UART0 at `0x1001_0000`, the
//! CLINT's `mtime` (1 MHz), and no exit device.
//!
//! Ending the run: the board wires GPIO 10 to its reset line, and QEMU resets on a falling
//! edge there; started with `-no-reboot`, QEMU then exits (always with status 0, so the
//! verdict is the `PASS` / `FAIL` line in the log, not the exit status).

use super::mmio::{read32, read64, write32};
use super::Machine;

/// SiFive UART0.
const UART: usize = 0x1001_0000;
const UART_TXDATA: usize = UART;
const UART_TXCTRL: usize = UART + 0x08;
/// GPIO controller.
const GPIO: usize = 0x1006_0000;
const GPIO_OUTPUT_EN: usize = GPIO + 0x08;
const GPIO_OUTPUT_VAL: usize = GPIO + 0x0C;
/// The GPIO wired to the board reset.
const RESET_PIN: u32 = 1 << 10;
/// CLINT `mtime` register.
const MTIME: usize = 0x0200_BFF8;

fn init() {
    // SAFETY: UART0's registers on this machine.
    unsafe { write32(UART_TXCTRL, 1) }; // txen, one stop bit
}

fn putc(b: u8) {
    // SAFETY: UART0's registers on this machine.
    unsafe {
        // txdata bit 31: the transmit FIFO is full.
        while read32(UART_TXDATA) & (1 << 31) != 0 {}
        write32(UART_TXDATA, u32::from(b));
    }
}

fn exit(_code: u32) -> ! {
    // SAFETY: the GPIO controller; driving pin 10 high, then low, resets the board.
    unsafe {
        write32(GPIO_OUTPUT_VAL, read32(GPIO_OUTPUT_VAL) | RESET_PIN);
        write32(GPIO_OUTPUT_EN, read32(GPIO_OUTPUT_EN) | RESET_PIN);
        write32(GPIO_OUTPUT_VAL, read32(GPIO_OUTPUT_VAL) & !RESET_PIN);
    }
    loop {
        core::hint::spin_loop();
    }
}

fn now_us() -> u64 {
    // SAFETY: the CLINT's free-running timer (1 MHz on this machine).
    unsafe { read64(MTIME) }
}

/// The `sifive_u` machine.
pub static SIFIVE_U: Machine = Machine {
    name: "qemu-riscv64-sifive_u",
    init,
    putc,
    exit,
    now_us,
};
