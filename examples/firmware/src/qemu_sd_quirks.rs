//! Workarounds for QEMU 10.0.2's SPI-mode SD card (`-M sifive_u`, `-drive if=sd`: the
//! `ssi-sd` bridge in front of QEMU's SD card model).
//!
//! They live here, in the board code, because they are emulator quirks: the driver
//! (`bonsaifs_hal::sd`) checks every response strictly, as real cards deserve. Each was
//! observed in QEMU 10.0.2 (with `-trace 'sdcard_*'`):
//!
//! 1. **CMD58 answers "idle".** The bridge returns a fixed `0x01` as the R1 status of CMD58
//!    (READ_OCR), even after ACMD41 has brought the card out of the idle state; strict
//!    initialisation rejects that. [`QemuSdQuirks`] clears the idle bit of exactly that byte.
//! 2. **CMD13 cannot be answered.** The card model produces a 2-byte SPI status for
//!    SEND_STATUS, the bridge expects 4 bytes, logs "Unexpected response to cmd 13" and sends
//!    "illegal command" (`0x04`) with no second byte. [`QemuSdQuirks`] turns exactly that answer
//!    into a clean status (`0x00 0x00`). Nothing is lost: QEMU's card never reports
//!    programming errors, which is all the driver asks CMD13 for.
//! 3. **CMD9 is refused** as illegal in SPI mode (fixed after 10.0.2), so the capacity cannot
//!    be read from the CSD. [`probe_sector_count`] finds it by reading single blocks: the card
//!    answers an address error past its end; an exponential then binary search takes about
//!    2 × log2(sectors) reads.
//! 4. **A refused command's "illegal" bit comes back once more.** As on the SD bus (where an
//!    illegal command gets no response), the model keeps the bit in its card status and
//!    reports it again in the *next* response; a read would then fail although the card
//!    executed it (and queued its data). [`clear_stale_illegal`] spends one harmless command
//!    (CMD16, block length 512) on it after the refused CMD9.

use bonsaifs_hal::sd::protocol::{cmd, command_frame, BLOCK_LEN, R1};
use bonsaifs_hal::sd::{SdError, SdSpi};
use embedded_hal::delay::DelayNs;
use embedded_hal::spi::{ErrorType, Operation, SpiDevice};

/// What the next received bytes are expected to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Nothing,
    /// The R1 of a CMD58.
    Cmd58Status,
    /// The R1 of a CMD13.
    Cmd13Status,
    /// The second status byte of a CMD13 whose R1 was corrected.
    Cmd13Second,
}

/// An SPI device that corrects QEMU 10.0.2's answers to CMD58 and CMD13 (quirks 1 and 2).
#[derive(Debug)]
pub struct QemuSdQuirks<S> {
    inner: S,
    expect: Expect,
    cmd58_fixes: u32,
    cmd13_fixes: u32,
}

impl<S> QemuSdQuirks<S> {
    /// Wrap `inner`.
    pub fn new(inner: S) -> Self {
        QemuSdQuirks {
            inner,
            expect: Expect::Nothing,
            cmd58_fixes: 0,
            cmd13_fixes: 0,
        }
    }

    /// The wrapped device.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// CMD58 statuses corrected (1 per initialisation on QEMU 10.0.2, 0 on a real card).
    pub fn cmd58_fixes(&self) -> u32 {
        self.cmd58_fixes
    }

    /// CMD13 answers corrected (one per flush or FUA write on QEMU 10.0.2).
    pub fn cmd13_fixes(&self) -> u32 {
        self.cmd13_fixes
    }

    /// Note a frame going out.
    fn sent(&mut self, bytes: &[u8]) {
        if let Some(index) = command_index(bytes) {
            self.expect = match index {
                cmd::READ_OCR => Expect::Cmd58Status,
                cmd::SEND_STATUS => Expect::Cmd13Status,
                _ => Expect::Nothing,
            };
        }
    }

    /// Correct the received bytes, in order.
    fn received(&mut self, bytes: &mut [u8]) {
        for b in bytes.iter_mut() {
            match self.expect {
                Expect::Nothing => return,
                Expect::Cmd58Status if *b & 0x80 == 0 => {
                    if *b & R1::IDLE != 0 {
                        *b &= !R1::IDLE;
                        self.cmd58_fixes += 1;
                    }
                    self.expect = Expect::Nothing;
                }
                Expect::Cmd13Status if *b & 0x80 == 0 => {
                    if *b == R1::ILLEGAL_COMMAND {
                        *b = 0;
                        self.cmd13_fixes += 1;
                        self.expect = Expect::Cmd13Second;
                    } else {
                        self.expect = Expect::Nothing;
                    }
                }
                Expect::Cmd13Second => {
                    if *b == 0xFF {
                        *b = 0;
                    }
                    self.expect = Expect::Nothing;
                }
                Expect::Cmd58Status | Expect::Cmd13Status => {}
            }
        }
    }
}

/// The index of the command whose well-formed frame (start bits, CRC7, end bit) `bytes` is.
fn command_index(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [first, a, b, c, d, _] if first & 0xC0 == 0x40 => {
            let index = first & 0x3F;
            let arg = u32::from_be_bytes([*a, *b, *c, *d]);
            (command_frame(index, arg) == bytes).then_some(index)
        }
        _ => None,
    }
}

impl<S: SpiDevice> ErrorType for QemuSdQuirks<S> {
    type Error = S::Error;
}

impl<S: SpiDevice> SpiDevice for QemuSdQuirks<S> {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), S::Error> {
        self.inner.transaction(operations)?;
        // The operations ran in order; look at them in the same order.
        for op in operations.iter_mut() {
            match op {
                Operation::Write(w) => self.sent(w),
                Operation::Transfer(r, w) => {
                    self.received(r);
                    self.sent(w);
                }
                Operation::Read(r) => self.received(r),
                Operation::TransferInPlace(buf) => self.received(buf),
                Operation::DelayNs(_) => {}
            }
        }
        Ok(())
    }
}

/// Consume the "illegal command" bit a refused command left in QEMU's card status, with one
/// CMD16 (block length 512, which the card already has): its status may carry that bit and
/// nothing else.
pub fn clear_stale_illegal<S: SpiDevice, D: DelayNs>(bus: &mut SdSpi<S, D>) -> Result<(), SdError> {
    let r1 = bus.command_r1(cmd::SET_BLOCKLEN, BLOCK_LEN as u32)?;
    if r1.0 & !R1::ILLEGAL_COMMAND != 0 {
        return Err(SdError::Command {
            cmd: cmd::SET_BLOCKLEN,
            r1,
        });
    }
    Ok(())
}

/// Whether a single-block read of sector `lba` succeeds (`false`: the card reports the
/// address as out of range).
fn readable<S: SpiDevice, D: DelayNs>(
    bus: &mut SdSpi<S, D>,
    lba: u64,
    buf: &mut [u8; 512],
) -> Result<bool, SdError> {
    match bus.read_blocks(lba, buf) {
        Ok(()) => Ok(true),
        Err(SdError::Command { cmd: 17, r1 })
            if r1.0 & (R1::ADDRESS_ERROR | R1::PARAMETER_ERROR) != 0 =>
        {
            Ok(false)
        }
        Err(SdError::AddressOverflow) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The number of readable sectors of an initialised card, found by reading: the smallest
/// `n` such that sector `n - 1` reads and sector `n` is out of range. Also returns how many
/// reads it took.
pub fn probe_sector_count<S: SpiDevice, D: DelayNs>(
    bus: &mut SdSpi<S, D>,
) -> Result<(u64, u32), SdError> {
    let mut buf = [0u8; 512];
    let mut reads = 1;
    if !readable(bus, 0, &mut buf)? {
        return Ok((0, reads));
    }
    // Invariant: `lo` reads, `hi` does not (or is past any address a command can carry).
    let (mut lo, mut hi) = (0u64, 1u64);
    while hi <= u64::from(u32::MAX) {
        reads += 1;
        if !readable(bus, hi, &mut buf)? {
            break;
        }
        lo = hi;
        hi *= 2;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        reads += 1;
        if readable(bus, mid, &mut buf)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok((lo + 1, reads))
}
