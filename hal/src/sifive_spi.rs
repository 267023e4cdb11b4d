//! The SiFive SPI controller (FU540/FU740 `QSPI0..2`, and QEMU's `sifive_u` machine) as an
//! `embedded-hal` 1.0 [`SpiDevice`] for one chip select.
//!
//! Registers used (SiFive FU540 manual, chapter "SPI"): `sckdiv` (clock divider), `sckmode`
//! (mode 0), `csid` / `csdef` / `csmode` (which chip select, its idle level, and whether the
//! hardware holds it), `fmt` (8-bit frames, MSB first, single lane), `txdata` / `rxdata`
//! (8-entry FIFOs; bit 31 flags full / empty).
//!
//! A transaction holds chip select asserted (`csmode = HOLD`) for all its operations and
//! releases it (`csmode = AUTO`) at the end. Bytes are pipelined through the FIFOs: up to
//! eight are queued before their answers are read. Every wait on a FIFO is bounded; a
//! controller that stops moving bytes is an [`SifiveSpiError::Stalled`] error, never a hang.
//!
//! QEMU's model delivers bytes to the device only while chip select is asserted, and treats
//! `csmode = OFF` as asserted; both match what the code below does on real hardware (where
//! `OFF` leaves the pin at its `csdef` idle level: released).

use embedded_hal::spi::{ErrorKind, ErrorType, Operation, SpiDevice};

const SCKDIV: usize = 0x00;
const SCKMODE: usize = 0x04;
const CSID: usize = 0x10;
const CSDEF: usize = 0x14;
const CSMODE: usize = 0x18;
const FMT: usize = 0x40;
const TXDATA: usize = 0x48;
const RXDATA: usize = 0x4C;

const CSMODE_AUTO: u32 = 0;
const CSMODE_HOLD: u32 = 2;
const CSMODE_OFF: u32 = 3;
/// `fmt`: single lane (proto 0), MSB first (endian 0), receive enabled (dir 0), 8-bit frames.
const FMT_8BIT: u32 = 8 << 16;
const FIFO_FULL: u32 = 1 << 31;
const FIFO_EMPTY: u32 = 1 << 31;
/// Depth of the transmit and receive FIFOs.
const FIFO_DEPTH: usize = 8;
/// Register polls without progress before a transfer is declared stalled.
const STALL_POLLS: u32 = 1_000_000;

/// The controller stopped moving bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SifiveSpiError {
    /// The transmit FIFO stayed full, or the receive FIFO stayed empty, for
    /// `STALL_POLLS` (1 000 000) register reads.
    Stalled,
}

impl embedded_hal::spi::Error for SifiveSpiError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// One chip select of a SiFive SPI controller.
#[derive(Debug)]
pub struct SifiveSpi {
    base: usize,
}

impl SifiveSpi {
    /// Take over the controller at `base` for chip select `cs`, with serial clock
    /// `f_in / (2 × (sckdiv + 1))`, SPI mode 0, 8-bit frames, chip select active low.
    ///
    /// # Safety
    ///
    /// `base` must be the address of a SiFive SPI controller's registers, mapped and
    /// accessible, and nothing else may use that controller while this value exists.
    pub unsafe fn new(base: usize, cs: u32, sckdiv: u32) -> Self {
        let spi = SifiveSpi { base };
        spi.reg_write(SCKDIV, sckdiv & 0xFFF);
        spi.reg_write(SCKMODE, 0);
        spi.reg_write(CSID, cs);
        spi.reg_write(CSDEF, spi.reg_read(CSDEF) | (1 << cs));
        spi.reg_write(CSMODE, CSMODE_AUTO);
        spi.reg_write(FMT, FMT_8BIT);
        // Drop anything a previous user left in the receive FIFO.
        for _ in 0..FIFO_DEPTH * 2 {
            if spi.reg_read(RXDATA) & FIFO_EMPTY != 0 {
                break;
            }
        }
        spi
    }

    /// Change the serial clock divider (e.g. from the 400 kHz an SD card needs while it
    /// initialises to its full speed).
    pub fn set_clock_divider(&mut self, sckdiv: u32) {
        self.reg_write(SCKDIV, sckdiv & 0xFFF);
    }

    /// Clock `bytes` bytes of 0xFF with chip select released: the at least 74 clock cycles an
    /// SD card needs after power-up before its first command.
    pub fn idle_clocks(&mut self, bytes: usize) -> Result<(), SifiveSpiError> {
        self.reg_write(CSMODE, CSMODE_OFF);
        let r = self.exchange(bytes, |_| 0xFF, |_, _| {});
        self.reg_write(CSMODE, CSMODE_AUTO);
        r
    }

    fn reg_read(&self, reg: usize) -> u32 {
        // SAFETY: `new`'s contract: `base` maps this controller's registers.
        unsafe { ((self.base + reg) as *const u32).read_volatile() }
    }

    fn reg_write(&self, reg: usize, value: u32) {
        // SAFETY: `new`'s contract: `base` maps this controller's registers.
        unsafe { ((self.base + reg) as *mut u32).write_volatile(value) }
    }

    /// Exchange `len` bytes: byte `i` out is `tx(i)`, byte `i` in goes to `rx(i, byte)`.
    fn exchange(
        &mut self,
        len: usize,
        tx: impl Fn(usize) -> u8,
        mut rx: impl FnMut(usize, u8),
    ) -> Result<(), SifiveSpiError> {
        let (mut sent, mut received, mut idle) = (0usize, 0usize, 0u32);
        while received < len {
            let mut progress = false;
            while sent < len && sent - received < FIFO_DEPTH {
                if self.reg_read(TXDATA) & FIFO_FULL != 0 {
                    break;
                }
                self.reg_write(TXDATA, u32::from(tx(sent)));
                sent += 1;
                progress = true;
            }
            let v = self.reg_read(RXDATA);
            if v & FIFO_EMPTY == 0 {
                rx(received, v as u8);
                received += 1;
                progress = true;
            }
            if progress {
                idle = 0;
            } else {
                idle += 1;
                if idle >= STALL_POLLS {
                    return Err(SifiveSpiError::Stalled);
                }
            }
        }
        Ok(())
    }

    fn operation(&mut self, op: &mut Operation<'_, u8>) -> Result<(), SifiveSpiError> {
        match op {
            Operation::Write(w) => {
                self.exchange(w.len(), |i| w.get(i).copied().unwrap_or(0xFF), |_, _| {})
            }
            Operation::Read(r) => self.exchange(
                r.len(),
                |_| 0xFF,
                |i, b| {
                    if let Some(d) = r.get_mut(i) {
                        *d = b;
                    }
                },
            ),
            Operation::Transfer(r, w) => {
                let len = r.len().max(w.len());
                self.exchange(
                    len,
                    |i| w.get(i).copied().unwrap_or(0xFF),
                    |i, b| {
                        if let Some(d) = r.get_mut(i) {
                            *d = b;
                        }
                    },
                )
            }
            Operation::TransferInPlace(buf) => {
                // Each byte is read out before its answer lands (the answer to byte i arrives
                // after byte i was queued), so one buffer serves both directions.
                let len = buf.len();
                let cell = core::cell::RefCell::new(&mut **buf);
                self.exchange(
                    len,
                    |i| cell.borrow().get(i).copied().unwrap_or(0xFF),
                    |i, b| {
                        if let Some(d) = cell.borrow_mut().get_mut(i) {
                            *d = b;
                        }
                    },
                )
            }
            Operation::DelayNs(ns) => {
                // No timer here: spin on register reads, each at least a bus cycle.
                for _ in 0..*ns / 16 {
                    let _ = self.reg_read(CSMODE);
                }
                Ok(())
            }
        }
    }
}

impl ErrorType for SifiveSpi {
    type Error = SifiveSpiError;
}

impl SpiDevice for SifiveSpi {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Self::Error> {
        self.reg_write(CSMODE, CSMODE_HOLD);
        let mut result = Ok(());
        for op in operations.iter_mut() {
            result = self.operation(op);
            if result.is_err() {
                break;
            }
        }
        self.reg_write(CSMODE, CSMODE_AUTO);
        result
    }
}
