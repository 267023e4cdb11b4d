//! The SD protocol over SPI: initialisation, commands and their responses, data blocks in
//! both directions, busy waits, status and erase.
//!
//! [`SdSpi`] is a blocking, synchronous engine: every method runs its exchange with the card
//! to the end (or to a bounded timeout) before it returns. The block device
//! ([`super::SdCard`]) is built on it; it can also be used on its own.
//!
//! # Where a write becomes durable
//!
//! A written block is *accepted* when the card answers its data response token; the card then
//! programs it while holding the data line low (busy). [`SdSpi::write_blocks`] returns at
//! acceptance, without waiting for the programming; [`SdSpi::sync`] waits until the card is no
//! longer busy and then asks for its status (CMD13), which reports errors found while
//! programming (write protection, ECC, card controller). That pair is the driver's write and
//! flush.
//!
//! # Chip select
//!
//! `embedded-hal` 1.0's `SpiDevice` asserts chip select for one transaction at a time, so
//! chip select rises between the steps of an exchange (command, response polls, data). SD
//! cards keep their state across that, as every `SpiDevice`-based SD driver relies on. The
//! 74 clock cycles with chip select *high* that a card needs after power-up cannot be
//! expressed through `SpiDevice` at all: the board code sends them on the raw bus before
//! [`SdSpi::init`].

use embedded_hal::delay::DelayNs;
use embedded_hal::spi::{Error as _, Operation, SpiDevice};

use super::config::SdConfig;
use super::csd::Csd;
use super::error::SdError;
use super::protocol::{
    cmd, command_frame, crc16, ACMD41_HCS, BLOCK_LEN, CMD8_ARG, DATA_ACCEPTED, DATA_CRC_ERROR,
    DATA_RESPONSE_MASK, DATA_WRITE_ERROR, OCR_CCS, R1, TOKEN_START_BLOCK, TOKEN_START_MULTI_WRITE,
    TOKEN_STOP_TRAN,
};

/// How many bytes the driver clocks while waiting for a command's response. The SD
/// specification allows at most 8 (N_CR); the margin covers slow bridges.
const RESPONSE_POLLS: u32 = 16;
/// How many bytes may pass before a written block's data response token.
const DATA_RESPONSE_POLLS: u32 = 8;
/// How many times CMD0 is sent before giving up on entering SPI mode.
const GO_IDLE_TRIES: u32 = 10;

/// The kind of card found by [`SdSpi::init`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CardKind {
    /// Standard capacity, physical layer version 1 (CMD8 refused); byte addressed.
    SdscV1,
    /// Standard capacity, physical layer version 2 or later; byte addressed.
    SdscV2,
    /// High or extended capacity (SDHC/SDXC/SDUC); block addressed.
    Sdhc,
}

/// What initialisation learnt about the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct CardInfo {
    /// The card's kind, which decides its addressing.
    pub kind: CardKind,
    /// The operating conditions register (zero for version 1 cards, which are not asked).
    pub ocr: u32,
}

impl CardInfo {
    /// Whether commands address 512-byte blocks (true) or bytes (false).
    pub fn block_addressed(&self) -> bool {
        self.kind == CardKind::Sdhc
    }
}

/// Counters of what the driver did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SdStats {
    /// Commands sent (ACMDs count twice: CMD55 and the command).
    pub commands: u64,
    /// Data blocks read (CSD included).
    pub blocks_read: u64,
    /// Data blocks written and accepted.
    pub blocks_written: u64,
    /// Bytes clocked while the card was busy or had not yet sent a data block.
    pub wait_polls: u64,
    /// Errors returned by any operation.
    pub errors: u64,
}

/// The SD protocol engine over an `SpiDevice` and a delay.
#[derive(Debug)]
pub struct SdSpi<S, D> {
    spi: S,
    delay: D,
    config: SdConfig,
    card: Option<CardInfo>,
    stats: SdStats,
}

impl<S: SpiDevice, D: DelayNs> SdSpi<S, D> {
    /// A driver for the card behind `spi`. Nothing is sent until [`SdSpi::init`].
    pub fn new(spi: S, delay: D, config: SdConfig) -> Self {
        SdSpi {
            spi,
            delay,
            config,
            card: None,
            stats: SdStats::default(),
        }
    }

    /// The settings in use.
    pub fn config(&self) -> &SdConfig {
        &self.config
    }

    /// What [`SdSpi::init`] found, if it succeeded.
    pub fn card_info(&self) -> Option<CardInfo> {
        self.card
    }

    /// Counters since creation.
    pub fn stats(&self) -> SdStats {
        self.stats
    }

    /// The SPI device.
    pub fn spi(&self) -> &S {
        &self.spi
    }

    /// The SPI device, e.g. to raise its clock after initialisation.
    pub fn spi_mut(&mut self) -> &mut S {
        &mut self.spi
    }

    /// Give back the bus and the delay.
    pub fn release(self) -> (S, D) {
        (self.spi, self.delay)
    }

    // ------------------------------------------------------------------ initialisation

    /// Bring the card from power-up (or any state) to the transfer state: CMD0 into SPI mode,
    /// CMD8 (interface condition), CMD59 (CRC on, if configured), ACMD41 repeated until the
    /// card leaves the idle state or the init timeout ends, CMD58 (capacity status), and CMD16
    /// (512-byte blocks) on standard-capacity cards.
    ///
    /// Each response is checked strictly: a status with error bits, a CMD8 echo that does not
    /// match, or a CMD58 answered while still idle is an error naming the command.
    pub fn init(&mut self) -> Result<CardInfo, SdError> {
        self.card = None;
        let r = self.init_sequence();
        self.count(r)
    }

    fn init_sequence(&mut self) -> Result<CardInfo, SdError> {
        // A few clocks with chip select asserted let a card that was mid-transfer finish.
        self.write(&[0xFF; 10])?;
        self.go_idle()?;

        let r1 = self.command(cmd::SEND_IF_COND, CMD8_ARG)?;
        let v2 = if r1.illegal() {
            false
        } else {
            let echo = self.read_u32()?;
            if r1.has_error() {
                return Err(SdError::Command {
                    cmd: cmd::SEND_IF_COND,
                    r1,
                });
            }
            if echo & 0xFFF != CMD8_ARG {
                return Err(SdError::IfCondMismatch { echo });
            }
            true
        };

        if self.config.crc {
            let r1 = self.command(cmd::CRC_ON_OFF, 1)?;
            if r1.has_error() {
                return Err(SdError::Command {
                    cmd: cmd::CRC_ON_OFF,
                    r1,
                });
            }
        }

        let arg = if v2 { ACMD41_HCS } else { 0 };
        let mut tries = SdConfig::polls(
            self.config.init_timeout_ms,
            self.config.init_poll_interval_us,
        );
        loop {
            let r1 = self.app_command(cmd::SD_SEND_OP_COND, arg)?;
            if r1.has_error() {
                return Err(SdError::Command {
                    cmd: cmd::SD_SEND_OP_COND,
                    r1,
                });
            }
            if !r1.idle() {
                break;
            }
            if tries == 0 {
                return Err(SdError::InitTimeout);
            }
            tries -= 1;
            self.delay.delay_us(self.config.init_poll_interval_us);
        }

        let (kind, ocr) = if v2 {
            let r1 = self.command(cmd::READ_OCR, 0)?;
            let ocr = self.read_u32()?;
            if r1.0 != 0 {
                return Err(SdError::Command {
                    cmd: cmd::READ_OCR,
                    r1,
                });
            }
            let kind = if ocr & OCR_CCS != 0 {
                CardKind::Sdhc
            } else {
                CardKind::SdscV2
            };
            (kind, ocr)
        } else {
            (CardKind::SdscV1, 0)
        };

        if kind != CardKind::Sdhc {
            let r1 = self.command(cmd::SET_BLOCKLEN, BLOCK_LEN as u32)?;
            if r1.0 != 0 {
                return Err(SdError::Command {
                    cmd: cmd::SET_BLOCKLEN,
                    r1,
                });
            }
        }
        let info = CardInfo { kind, ocr };
        self.card = Some(info);
        Ok(info)
    }

    fn go_idle(&mut self) -> Result<(), SdError> {
        let mut last = SdError::NoResponse {
            cmd: cmd::GO_IDLE_STATE,
        };
        for _ in 0..GO_IDLE_TRIES {
            match self.command(cmd::GO_IDLE_STATE, 0) {
                Ok(r1) if r1.0 == R1::IDLE => return Ok(()),
                Ok(r1) => {
                    last = SdError::Command {
                        cmd: cmd::GO_IDLE_STATE,
                        r1,
                    }
                }
                Err(e @ SdError::NoResponse { .. }) => last = e,
                Err(e) => return Err(e),
            }
            // A card stuck sending a data block answers nothing until it has finished.
            self.write(&[0xFF; 64])?;
            self.delay.delay_us(self.config.init_poll_interval_us);
        }
        Err(last)
    }

    /// Read the CSD register (CMD9): capacity and write protection.
    pub fn read_csd(&mut self) -> Result<Csd, SdError> {
        let r = self.read_csd_inner();
        self.count(r)
    }

    fn read_csd_inner(&mut self) -> Result<Csd, SdError> {
        self.require_init()?;
        self.expect_ok(cmd::SEND_CSD, 0)?;
        let mut raw = [0u8; 16];
        self.read_data(cmd::SEND_CSD, &mut raw)?;
        Csd::parse(raw).map_err(SdError::Csd)
    }

    // ------------------------------------------------------------------ data transfer

    /// Read `buf.len() / 512` blocks starting at block `lba`: CMD17 for one block, CMD18 and
    /// CMD12 for more. Each block's CRC16 is checked when CRC is on.
    pub fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), SdError> {
        let r = self.read_inner(lba, buf);
        self.count(r)
    }

    fn read_inner(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), SdError> {
        let addr = self.address(lba, buf.len())?;
        if buf.len() == BLOCK_LEN {
            self.expect_ok(cmd::READ_SINGLE_BLOCK, addr)?;
            return self.read_data(cmd::READ_SINGLE_BLOCK, buf);
        }
        self.expect_ok(cmd::READ_MULTIPLE_BLOCK, addr)?;
        let mut result = Ok(());
        for block in buf.chunks_exact_mut(BLOCK_LEN) {
            result = self.read_data(cmd::READ_MULTIPLE_BLOCK, block);
            if result.is_err() {
                break;
            }
        }
        // The card streams blocks until told to stop, whether or not the last one failed.
        let stopped = self.stop_transmission();
        result.and(stopped)
    }

    /// Write `buf.len() / 512` blocks starting at block `lba`: CMD24 for one block, CMD25
    /// and the Stop Tran token for more. Returns when the card has accepted every block; it
    /// may still be programming them (see [`SdSpi::sync`]).
    pub fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), SdError> {
        let r = self.write_inner(lba, buf);
        self.count(r)
    }

    fn write_inner(&mut self, lba: u64, buf: &[u8]) -> Result<(), SdError> {
        let addr = self.address(lba, buf.len())?;
        if buf.len() == BLOCK_LEN {
            self.expect_ok(cmd::WRITE_BLOCK, addr)?;
            return self
                .write_data(TOKEN_START_BLOCK, buf)
                .map_err(|e| self.write_error_cause(e));
        }
        self.expect_ok(cmd::WRITE_MULTIPLE_BLOCK, addr)?;
        for (i, block) in buf.chunks_exact(BLOCK_LEN).enumerate() {
            if i > 0 {
                self.wait_ready(self.config.write_timeout_ms)?;
            }
            if let Err(e) = self.write_data(TOKEN_START_MULTI_WRITE, block) {
                // The specification has the host end a failed multiple-block write with
                // CMD12; the card keeps the blocks it accepted before the failure.
                if self.wait_ready(self.config.write_timeout_ms).is_ok() {
                    let _ = self.command(cmd::STOP_TRANSMISSION, 0);
                }
                return Err(self.write_error_cause(e));
            }
        }
        self.wait_ready(self.config.write_timeout_ms)?;
        // The card may turn busy up to two bytes after the Stop Tran token (one byte, then
        // N_BR <= 1): clock them here so that the next busy poll cannot mistake them for
        // "ready".
        self.write(&[TOKEN_STOP_TRAN, 0xFF, 0xFF])
    }

    /// For a block rejected with a write error, ask the card why (CMD13, which also clears the
    /// status so that it does not resurface at the next flush) and put the cause in the error.
    fn write_error_cause(&mut self, e: SdError) -> SdError {
        if !matches!(e, SdError::WriteRejected { .. }) {
            return e;
        }
        if self.wait_ready(self.config.write_timeout_ms).is_err() {
            return e;
        }
        match self.status_check() {
            Err(SdError::Status { r2, .. }) => SdError::WriteRejected { r2 },
            _ => e,
        }
    }

    /// Wait until the card has finished programming (bounded by the write timeout), then read
    /// its status (CMD13): any error bit, including those found while programming earlier
    /// writes, is returned as [`SdError::Status`].
    pub fn sync(&mut self) -> Result<(), SdError> {
        let r = self.sync_inner();
        self.count(r)
    }

    fn sync_inner(&mut self) -> Result<(), SdError> {
        self.require_init()?;
        self.wait_ready(self.config.write_timeout_ms)?;
        self.status_check()
    }

    fn status_check(&mut self) -> Result<(), SdError> {
        let r1 = self.command(cmd::SEND_STATUS, 0)?;
        let mut r2 = [0xFF];
        self.transfer(&mut r2)?;
        if r1.0 != 0 || r2[0] != 0 {
            return Err(SdError::Status { r1, r2: r2[0] });
        }
        Ok(())
    }

    /// Erase `count` blocks from `lba` (CMD32, CMD33, CMD38), wait for the erase to finish
    /// (bounded by the erase timeout) and check the status.
    pub fn erase(&mut self, lba: u64, count: u64) -> Result<(), SdError> {
        let r = self.erase_inner(lba, count);
        self.count(r)
    }

    fn erase_inner(&mut self, lba: u64, count: u64) -> Result<(), SdError> {
        let last = lba
            .checked_add(count.saturating_sub(1))
            .ok_or(SdError::AddressOverflow)?;
        let start = self.address(lba, BLOCK_LEN)?;
        let end = self.address(last, BLOCK_LEN)?;
        self.expect_ok(cmd::ERASE_WR_BLK_START, start)?;
        self.expect_ok(cmd::ERASE_WR_BLK_END, end)?;
        self.expect_ok(cmd::ERASE, 0)?;
        self.wait_ready(self.config.erase_timeout_ms)?;
        self.status_check()
    }

    /// Send command `index` (which must have a plain R1 response and no data phase, such as
    /// CMD16 or CMD59) and return the card's R1 status unchecked. For board code that must
    /// work around a card's or emulator's deviations; the driver itself never needs it.
    pub fn command_r1(&mut self, index: u8, arg: u32) -> Result<R1, SdError> {
        let r = self.command(index, arg);
        self.count(r)
    }

    // ------------------------------------------------------------------ building blocks

    fn count<T>(&mut self, r: Result<T, SdError>) -> Result<T, SdError> {
        if r.is_err() {
            self.stats.errors += 1;
        }
        r
    }

    fn require_init(&self) -> Result<CardInfo, SdError> {
        self.card.ok_or(SdError::NotInitialised)
    }

    /// The command argument for block `lba`, after checking that `len` is a whole, non-zero
    /// number of blocks.
    fn address(&self, lba: u64, len: usize) -> Result<u32, SdError> {
        let info = self.require_init()?;
        if len == 0 || len % BLOCK_LEN != 0 {
            return Err(SdError::AddressOverflow);
        }
        let addr = if info.block_addressed() {
            lba
        } else {
            lba.checked_mul(BLOCK_LEN as u64)
                .ok_or(SdError::AddressOverflow)?
        };
        u32::try_from(addr).map_err(|_| SdError::AddressOverflow)
    }

    fn spi_err(e: S::Error) -> SdError {
        SdError::Spi(e.kind().into())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SdError> {
        self.spi.write(bytes).map_err(Self::spi_err)
    }

    fn transfer(&mut self, buf: &mut [u8]) -> Result<(), SdError> {
        self.spi.transfer_in_place(buf).map_err(Self::spi_err)
    }

    fn read_byte(&mut self) -> Result<u8, SdError> {
        let mut b = [0xFF];
        self.transfer(&mut b)?;
        Ok(b[0])
    }

    fn read_u32(&mut self) -> Result<u32, SdError> {
        let mut b = [0xFF; 4];
        self.transfer(&mut b)?;
        Ok(u32::from_be_bytes(b))
    }

    /// Clock bytes until the card releases the data line (0xFF), bounded by `timeout_ms`.
    fn wait_ready(&mut self, timeout_ms: u32) -> Result<(), SdError> {
        let mut polls = SdConfig::polls(timeout_ms, self.config.poll_interval_us);
        loop {
            if self.read_byte()? == 0xFF {
                return Ok(());
            }
            self.stats.wait_polls += 1;
            if polls == 0 {
                return Err(SdError::BusyTimeout);
            }
            polls -= 1;
            self.delay.delay_us(self.config.poll_interval_us);
        }
    }

    /// Send command `index` and return its R1 status. Every command but CMD0 and CMD12 first
    /// waits for the card to be ready (it may still be programming an earlier write).
    fn command(&mut self, index: u8, arg: u32) -> Result<R1, SdError> {
        if index != cmd::GO_IDLE_STATE && index != cmd::STOP_TRANSMISSION {
            self.wait_ready(self.config.write_timeout_ms)?;
        }
        self.stats.commands += 1;
        let frame = command_frame(index, arg);
        let mut first = [0xFF];
        self.spi
            .transaction(&mut [
                Operation::Write(&frame),
                Operation::TransferInPlace(&mut first),
            ])
            .map_err(Self::spi_err)?;
        // After CMD12 the card may still be sending the block it was in: that first byte is
        // a stuff byte, not the response.
        let mut b = if index == cmd::STOP_TRANSMISSION {
            self.read_byte()?
        } else {
            first[0]
        };
        for _ in 0..RESPONSE_POLLS {
            if b & 0x80 == 0 {
                return Ok(R1(b));
            }
            b = self.read_byte()?;
        }
        Err(SdError::NoResponse { cmd: index })
    }

    /// Send a command and require a clean R1 (no error, not idle).
    fn expect_ok(&mut self, index: u8, arg: u32) -> Result<(), SdError> {
        let r1 = self.command(index, arg)?;
        if r1.0 != 0 {
            return Err(SdError::Command { cmd: index, r1 });
        }
        Ok(())
    }

    /// CMD55 then the application command `index`; returns the latter's R1.
    fn app_command(&mut self, index: u8, arg: u32) -> Result<R1, SdError> {
        let r1 = self.command(cmd::APP_CMD, 0)?;
        if r1.has_error() {
            return Err(SdError::Command {
                cmd: cmd::APP_CMD,
                r1,
            });
        }
        self.command(index, arg)
    }

    /// Receive one data block into `buf`: wait for the start token (bounded by the read
    /// timeout), clock the data and its CRC16 with 0xFF on the data-in line, check the CRC.
    fn read_data(&mut self, index: u8, buf: &mut [u8]) -> Result<(), SdError> {
        let mut polls = SdConfig::polls(self.config.read_timeout_ms, self.config.poll_interval_us);
        loop {
            let b = self.read_byte()?;
            if b == TOKEN_START_BLOCK {
                break;
            }
            if b != 0xFF {
                // A data error token (0000eeee) or garbage: no block follows either way.
                return Err(SdError::DataErrorToken { token: b });
            }
            self.stats.wait_polls += 1;
            if polls == 0 {
                return Err(SdError::DataTimeout { cmd: index });
            }
            polls -= 1;
            self.delay.delay_us(self.config.poll_interval_us);
        }
        // 0xFF out while reading: a card in a multiple-block read watches its input for CMD12.
        buf.fill(0xFF);
        let mut crc = [0xFF; 2];
        self.spi
            .transaction(&mut [
                Operation::TransferInPlace(buf),
                Operation::TransferInPlace(&mut crc),
            ])
            .map_err(Self::spi_err)?;
        if self.config.crc {
            let received = u16::from_be_bytes(crc);
            let computed = crc16(buf);
            if received != computed {
                return Err(SdError::ReadCrc { received, computed });
            }
        }
        self.stats.blocks_read += 1;
        Ok(())
    }

    /// Send one data block behind `token` and check the card's data response.
    fn write_data(&mut self, token: u8, block: &[u8]) -> Result<(), SdError> {
        // One idle byte (N_WR) before the token.
        let head = [0xFF, token];
        let crc = if self.config.crc {
            crc16(block).to_be_bytes()
        } else {
            [0xFF, 0xFF]
        };
        self.spi
            .transaction(&mut [
                Operation::Write(&head),
                Operation::Write(block),
                Operation::Write(&crc),
            ])
            .map_err(Self::spi_err)?;
        let mut b = 0xFF;
        for _ in 0..DATA_RESPONSE_POLLS {
            b = self.read_byte()?;
            if b != 0xFF {
                break;
            }
        }
        match b & DATA_RESPONSE_MASK {
            DATA_ACCEPTED if b != 0xFF => {
                self.stats.blocks_written += 1;
                Ok(())
            }
            DATA_CRC_ERROR => Err(SdError::WriteCrc),
            DATA_WRITE_ERROR => Err(SdError::WriteRejected { r2: 0 }),
            _ => Err(SdError::BadDataResponse { byte: b }),
        }
    }

    /// End a multiple-block read: CMD12, its stuff byte, R1, then the busy period.
    ///
    /// The R1's error bits are not acted on: a card that read ahead past its last block flags
    /// "out of range" here although every requested block arrived intact (each one passed its
    /// own CRC16 check).
    fn stop_transmission(&mut self) -> Result<(), SdError> {
        self.command(cmd::STOP_TRANSMISSION, 0)?;
        self.wait_ready(self.config.write_timeout_ms)
    }
}
