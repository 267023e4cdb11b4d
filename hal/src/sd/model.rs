//! A behavioural SD card on an SPI bus, for host tests (feature `std`).
//!
//! [`SdCardModel`] implements `embedded-hal`'s [`SpiDevice`] and answers byte by byte the way
//! a card in SPI mode does (SD Physical Layer Simplified Specification, chapter 7):
//!
//! - **Initialisation states**: after power-up the card ignores everything but a CMD0 with a
//!   valid CRC; in the idle state it accepts CMD8, CMD55/ACMD41, CMD58 and CMD59 only, and
//!   ACMD41 answers "idle" a configurable number of times before the card is ready (forever,
//!   for a high-capacity card asked without the HCS bit). Version 1 cards refuse CMD8.
//! - **Commands**: the CRC7 is checked on CMD0 and CMD8 always and on everything once CMD59
//!   turned CRC on; responses come after a configurable N_CR gap; addresses are checked
//!   (alignment on byte-addressed cards, range); status errors are kept for CMD13.
//! - **Data**: single and multiple-block reads (the card keeps streaming blocks until CMD12,
//!   which it answers after a stuff byte) and writes (data tokens, CRC16 checked when CRC is
//!   on, data response tokens, Stop Tran); the CSD as a data block.
//! - **Busy periods**: after every written block, after Stop Tran, CMD12 and erase the card
//!   holds the data line low for a configurable number of bytes.
//!
//! Faults can be injected ([`Fault`]): a card that never answers, a command answered with an
//! error status or not at all, a corrupted CRC16 on a block read, a bit flipped on the wire
//! during a write, a data error token, a write error, a programming error reported only by
//! CMD13, a busy period that never ends, an SPI bus error. Two switches reproduce QEMU
//! 10.0.2's SPI SD model ([`ModelConfig::quirk_cmd58_idle`], [`ModelConfig::quirk_refuse_cmd9`]).
//!
//! The model also checks the host: a command sent while the card is busy or still talking, a
//! stray byte, or a data token at the wrong time is recorded in
//! [`SdCardModel::violations`] (and ignored, as a card would), so tests can require a clean
//! protocol.
//!
//! Timing is counted in bytes clocked, not in time: a busy period of 4 means the next four
//! bytes read 0x00. Delays requested through `DelayNs` do not advance the card.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::format;
use std::rc::Rc;
use std::string::String;
use std::vec;
use std::vec::Vec;

use embedded_hal::delay::DelayNs;
use embedded_hal::spi::{ErrorKind, ErrorType, Operation, SpiDevice};

use super::csd::Csd;
use super::protocol::{
    cmd, crc16, crc7, r2, BLOCK_LEN, DATA_ACCEPTED, DATA_CRC_ERROR, DATA_ERROR_OUT_OF_RANGE,
    DATA_WRITE_ERROR, OCR_CCS, OCR_POWER_UP_DONE, R1, TOKEN_START_BLOCK, TOKEN_START_MULTI_WRITE,
    TOKEN_STOP_TRAN,
};

/// The kind of card the model plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Standard capacity, physical layer 1.x: refuses CMD8, byte addressed.
    SdscV1,
    /// Standard capacity, physical layer 2.0 or later: byte addressed.
    SdscV2,
    /// High capacity: block addressed, needs HCS in ACMD41.
    Sdhc,
}

/// How the model card behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    /// The kind of card.
    pub kind: ModelKind,
    /// Capacity in 512-byte sectors. The CSD reports it rounded down to what its layout can
    /// express (1024-sector units for high capacity, 512 for standard), so pick a multiple.
    pub sectors: u64,
    /// How many times ACMD41 answers "still idle" before the card is ready.
    pub init_polls: u32,
    /// 0xFF bytes between a command and its response (N_CR, 0..=8).
    pub ncr: usize,
    /// 0xFF bytes before each data block the card sends (N_AC).
    pub nac: usize,
    /// Busy bytes after each written block.
    pub write_busy: u32,
    /// Busy bytes after Stop Tran and CMD12.
    pub stop_busy: u32,
    /// Busy bytes after CMD38 (erase).
    pub erase_busy: u32,
    /// The CSD's temporary write-protect bit is set; writes are accepted on the wire, not
    /// programmed, and CMD13 then reports a write-protect violation.
    pub write_protected: bool,
    /// QEMU 10.0.2: CMD58 answers R1 with the idle bit set even after initialisation.
    pub quirk_cmd58_idle: bool,
    /// QEMU 10.0.2: CMD9 (SEND_CSD) is refused as an illegal command.
    pub quirk_refuse_cmd9: bool,
}

impl ModelConfig {
    /// An SDHC card of `sectors` sectors with short, non-zero gaps and busy periods.
    pub fn sdhc(sectors: u64) -> Self {
        ModelConfig {
            kind: ModelKind::Sdhc,
            sectors,
            init_polls: 3,
            ncr: 1,
            nac: 2,
            write_busy: 4,
            stop_busy: 2,
            erase_busy: 8,
            write_protected: false,
            quirk_cmd58_idle: false,
            quirk_refuse_cmd9: false,
        }
    }

    /// The same card as another kind.
    pub fn kind(mut self, kind: ModelKind) -> Self {
        self.kind = kind;
        self
    }
}

/// A fault to inject into the model card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The card never drives the data line again (every byte reads 0xFF) until cleared.
    Silent,
    /// The next time command `cmd` arrives, answer `r1` instead of executing it.
    CommandStatus {
        /// Command number (ACMDs by their own number).
        cmd: u8,
        /// The status to answer.
        r1: u8,
    },
    /// The next time command `cmd` arrives, do not answer it at all.
    IgnoreCommand {
        /// Command number (ACMDs by their own number).
        cmd: u8,
    },
    /// The next data block the card sends carries a wrong CRC16 (the link corrupted it).
    ReadCrc,
    /// The next read answers this data error token instead of a block.
    ReadErrorToken(u8),
    /// The next read is acknowledged (R1) but its data block never comes.
    NoData,
    /// A bit of a written block is flipped on the way to the card, `after` blocks from now
    /// (0 = the next one). With CRC on the card rejects the block; with CRC off the corrupted
    /// data is programmed.
    WriteFlip {
        /// Blocks to let through unharmed first.
        after: u32,
    },
    /// The next written block is rejected with a write error (data response 110).
    WriteError,
    /// The next written block is accepted but fails while programming: it is not stored and
    /// CMD13 reports an ECC failure.
    ProgramError,
    /// After the next written block the card stays busy forever (until power cycle).
    StuckBusy,
    /// The next SPI transaction fails at the bus level.
    SpiError,
}

/// Counters kept by the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// SPI transactions (chip-select assertions).
    pub transactions: u64,
    /// Bytes clocked.
    pub bytes: u64,
    /// Commands received with a valid frame (including those answered with an error).
    pub commands: u64,
    /// Data blocks sent to the host (CSD included).
    pub blocks_read: u64,
    /// Data blocks programmed.
    pub blocks_written: u64,
    /// Busy bytes sent (0x00 while programming or stopping).
    pub busy_bytes: u64,
    /// Commands or blocks the card rejected for a CRC mismatch.
    pub crc_rejects: u64,
}

/// One command as the model received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoggedCommand {
    /// Command number.
    pub cmd: u8,
    /// Argument.
    pub arg: u32,
    /// Whether it followed CMD55 (an ACMD).
    pub app: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Just powered: SD bus mode, waiting for CMD0 with chip select asserted.
    PowerUp,
    /// SPI mode, initialising.
    Idle,
    /// Initialised (transfer state).
    Ready,
}

#[derive(Debug)]
enum Rx {
    /// Waiting for, or collecting, a command frame.
    Command { frame: [u8; 6], len: usize },
    /// After CMD24/25 (and between blocks of CMD25): waiting for a data token.
    WriteToken { multi: bool, lba: u64 },
    /// Receiving a block (512 bytes and the CRC16).
    WriteData {
        multi: bool,
        lba: u64,
        data: Vec<u8>,
    },
}

#[derive(Debug)]
struct State {
    cfg: ModelConfig,
    storage: Vec<u8>,
    mode: Mode,
    crc_on: bool,
    app_next: bool,
    acmd41_count: u32,
    out: VecDeque<u8>,
    /// Busy bytes still to send once `out` is empty; `u32::MAX` = forever.
    busy: u32,
    rx: Rx,
    /// Next block of a multiple-block read in progress.
    stream: Option<u64>,
    /// The multiple-block read hit an error token: no more blocks, but the card still waits
    /// for CMD12.
    stream_dead: bool,
    erase_start: Option<u64>,
    erase_end: Option<u64>,
    /// Status bits reported (and cleared) by the next CMD13.
    pending_r2: u8,
    faults: Vec<Fault>,
    stats: ModelStats,
    log: Vec<LoggedCommand>,
    violations: Vec<String>,
}

/// A shared handle on one model card: clone it, give one handle to the driver as its
/// `SpiDevice`, keep the other to inject faults and inspect the card.
#[derive(Debug, Clone)]
pub struct SdCardModel {
    state: Rc<RefCell<State>>,
}

/// The bus error of an injected [`Fault::SpiError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSpiError;

impl embedded_hal::spi::Error for ModelSpiError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Overrun
    }
}

impl SdCardModel {
    /// A powered-up card whose sectors read as zeros.
    pub fn new(cfg: ModelConfig) -> Self {
        let bytes = usize::try_from(cfg.sectors).expect("model size fits memory") * BLOCK_LEN;
        SdCardModel {
            state: Rc::new(RefCell::new(State {
                storage: vec![0; bytes],
                cfg,
                mode: Mode::PowerUp,
                crc_on: false,
                app_next: false,
                acmd41_count: 0,
                out: VecDeque::new(),
                busy: 0,
                rx: Rx::Command {
                    frame: [0; 6],
                    len: 0,
                },
                stream: None,
                stream_dead: false,
                erase_start: None,
                erase_end: None,
                pending_r2: 0,
                faults: Vec::new(),
                stats: ModelStats::default(),
                log: Vec::new(),
                violations: Vec::new(),
            })),
        }
    }

    /// Inject a fault; faults fire in the order injected, each once (except
    /// [`Fault::Silent`], which lasts until [`SdCardModel::clear_faults`]).
    pub fn inject(&self, fault: Fault) {
        self.state.borrow_mut().faults.push(fault);
    }

    /// Remove every fault not yet fired.
    pub fn clear_faults(&self) {
        self.state.borrow_mut().faults.clear();
    }

    /// Faults injected and not yet fired.
    pub fn pending_faults(&self) -> usize {
        self.state.borrow().faults.len()
    }

    /// Cut and restore power: the card returns to SD bus mode (needs a new initialisation),
    /// forgets CRC mode, any transfer and busy period; the stored sectors stay.
    pub fn power_cycle(&self) {
        let mut s = self.state.borrow_mut();
        s.mode = Mode::PowerUp;
        s.crc_on = false;
        s.app_next = false;
        s.acmd41_count = 0;
        s.out.clear();
        s.busy = 0;
        s.rx = Rx::Command {
            frame: [0; 6],
            len: 0,
        };
        s.stream = None;
        s.stream_dead = false;
        s.erase_start = None;
        s.erase_end = None;
        s.pending_r2 = 0;
    }

    /// Counters since creation.
    pub fn stats(&self) -> ModelStats {
        self.state.borrow().stats
    }

    /// Every command received, in order.
    pub fn commands(&self) -> Vec<LoggedCommand> {
        self.state.borrow().log.clone()
    }

    /// Protocol violations by the host, in order (empty for a correct driver).
    pub fn violations(&self) -> Vec<String> {
        self.state.borrow().violations.clone()
    }

    /// Whether the card has CRC checking on (CMD59).
    pub fn crc_on(&self) -> bool {
        self.state.borrow().crc_on
    }

    /// Whether the card is initialised (out of the idle state).
    pub fn ready(&self) -> bool {
        self.state.borrow().mode == Mode::Ready
    }

    /// A copy of sector `lba`.
    pub fn sector(&self, lba: u64) -> Vec<u8> {
        let s = self.state.borrow();
        let start = lba as usize * BLOCK_LEN;
        s.storage[start..start + BLOCK_LEN].to_vec()
    }

    /// Overwrite sector `lba` behind the host's back.
    pub fn set_sector(&self, lba: u64, data: &[u8]) {
        let mut s = self.state.borrow_mut();
        let start = lba as usize * BLOCK_LEN;
        s.storage[start..start + BLOCK_LEN].copy_from_slice(data);
    }

    /// A copy of the whole card.
    pub fn image(&self) -> Vec<u8> {
        self.state.borrow().storage.clone()
    }
}

impl State {
    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    fn take_fault(&mut self, pred: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let i = self.faults.iter().position(pred)?;
        Some(self.faults.remove(i))
    }

    fn silent(&self) -> bool {
        self.faults.contains(&Fault::Silent)
    }

    /// Whether the card is driving the data line (a response, a block, or busy).
    fn talking(&self) -> bool {
        !self.out.is_empty() || self.busy > 0
    }

    /// One byte each way: `mosi` from the host, the return value from the card.
    fn exchange(&mut self, mosi: u8) -> u8 {
        self.stats.bytes += 1;
        if self.silent() {
            return 0xFF;
        }
        if self.out.is_empty() && self.busy == 0 && !self.stream_dead {
            if let Some(lba) = self.stream {
                self.queue_stream_block(lba);
            }
        }
        let miso = if let Some(b) = self.out.pop_front() {
            b
        } else if self.busy > 0 {
            if self.busy != u32::MAX {
                self.busy -= 1;
            }
            self.stats.busy_bytes += 1;
            0x00
        } else {
            0xFF
        };
        self.receive(mosi);
        miso
    }

    fn receive(&mut self, mosi: u8) {
        let idle_rx = Rx::Command {
            frame: [0; 6],
            len: 0,
        };
        match std::mem::replace(&mut self.rx, idle_rx) {
            Rx::Command { mut frame, len } => {
                if len == 0 {
                    if mosi == 0xFF {
                        return;
                    }
                    if mosi & 0xC0 != 0x40 {
                        self.violation(format!("stray byte {mosi:#04x} while idle"));
                        return;
                    }
                    let stop_during_read =
                        self.stream.is_some() && mosi == 0x40 | cmd::STOP_TRANSMISSION;
                    if self.talking() && !stop_during_read {
                        self.violation(format!(
                            "CMD{} sent while the card is busy or talking",
                            mosi & 0x3F
                        ));
                        return;
                    }
                }
                frame[len] = mosi;
                if len + 1 == 6 {
                    self.execute(frame);
                } else {
                    self.rx = Rx::Command {
                        frame,
                        len: len + 1,
                    };
                }
            }
            Rx::WriteToken { multi, lba } => match mosi {
                0xFF => self.rx = Rx::WriteToken { multi, lba },
                TOKEN_START_BLOCK | TOKEN_START_MULTI_WRITE => {
                    let want = if multi {
                        TOKEN_START_MULTI_WRITE
                    } else {
                        TOKEN_START_BLOCK
                    };
                    if mosi != want {
                        self.violation(format!("wrong data token {mosi:#04x}"));
                    }
                    if self.talking() {
                        self.violation("data token while the card is busy".into());
                        self.rx = Rx::WriteToken { multi, lba };
                        return;
                    }
                    self.rx = Rx::WriteData {
                        multi,
                        lba,
                        data: Vec::with_capacity(BLOCK_LEN + 2),
                    };
                }
                TOKEN_STOP_TRAN if multi => {
                    if self.talking() {
                        self.violation("Stop Tran while the card is busy".into());
                        self.rx = Rx::WriteToken { multi, lba };
                        return;
                    }
                    // Busy starts as late as the specification allows: one byte after the
                    // token, then N_BR = 1.
                    self.out.extend([0xFF, 0xFF]);
                    self.busy = self.cfg.stop_busy;
                }
                b if b & 0xC0 == 0x40 => {
                    // A command instead of data: the host abandons the write (CMD12 after a
                    // rejected block is the specified way out of a multiple-block write).
                    if !multi {
                        self.violation(format!(
                            "CMD{} instead of the data token of CMD24",
                            b & 0x3F
                        ));
                    }
                    self.receive(b);
                }
                b => {
                    self.violation(format!("stray byte {b:#04x} awaiting a data token"));
                    self.rx = Rx::WriteToken { multi, lba };
                }
            },
            Rx::WriteData {
                multi,
                lba,
                mut data,
            } => {
                data.push(mosi);
                if data.len() == BLOCK_LEN + 2 {
                    self.block_received(multi, lba, data);
                } else {
                    self.rx = Rx::WriteData { multi, lba, data };
                }
            }
        }
    }

    fn block_received(&mut self, multi: bool, lba: u64, mut data: Vec<u8>) {
        let next = if multi {
            Rx::WriteToken {
                multi,
                lba: lba + 1,
            }
        } else {
            Rx::Command {
                frame: [0; 6],
                len: 0,
            }
        };
        self.rx = next;
        if self.flip_due() {
            data[17] ^= 0x10;
        }
        let crc = u16::from_be_bytes([data[BLOCK_LEN], data[BLOCK_LEN + 1]]);
        if self.crc_on && crc != crc16(&data[..BLOCK_LEN]) {
            self.stats.crc_rejects += 1;
            self.out.push_back(DATA_CRC_ERROR);
            return;
        }
        if self.take_fault(|f| *f == Fault::WriteError).is_some() {
            self.pending_r2 |= r2::ERROR;
            self.out.push_back(DATA_WRITE_ERROR);
            return;
        }
        if lba >= self.cfg.sectors {
            self.pending_r2 |= r2::OUT_OF_RANGE;
            self.out.push_back(DATA_WRITE_ERROR);
            return;
        }
        self.out.push_back(DATA_ACCEPTED);
        self.busy = if self.take_fault(|f| *f == Fault::StuckBusy).is_some() {
            u32::MAX
        } else {
            self.cfg.write_busy
        };
        if self.cfg.write_protected {
            self.pending_r2 |= r2::WP_VIOLATION;
            return;
        }
        if self.take_fault(|f| *f == Fault::ProgramError).is_some() {
            self.pending_r2 |= r2::CARD_ECC_FAILED;
            return;
        }
        let start = lba as usize * BLOCK_LEN;
        self.storage[start..start + BLOCK_LEN].copy_from_slice(&data[..BLOCK_LEN]);
        self.stats.blocks_written += 1;
    }

    /// Whether an injected [`Fault::WriteFlip`] hits the block being received now.
    fn flip_due(&mut self) -> bool {
        let Some(i) = self
            .faults
            .iter()
            .position(|f| matches!(f, Fault::WriteFlip { .. }))
        else {
            return false;
        };
        if let Some(Fault::WriteFlip { after }) = self.faults.get_mut(i) {
            if *after > 0 {
                *after -= 1;
                return false;
            }
        }
        self.faults.remove(i);
        true
    }

    /// Queue N_AC, then a block (or the fault that replaces it).
    fn queue_block(&mut self, lba: u64) {
        for _ in 0..self.cfg.nac {
            self.out.push_back(0xFF);
        }
        if let Some(Fault::ReadErrorToken(t)) =
            self.take_fault(|f| matches!(f, Fault::ReadErrorToken(_)))
        {
            self.out.push_back(t);
            self.stream_dead = self.stream.is_some();
            return;
        }
        if lba >= self.cfg.sectors {
            self.out.push_back(DATA_ERROR_OUT_OF_RANGE);
            self.stream_dead = self.stream.is_some();
            return;
        }
        let start = lba as usize * BLOCK_LEN;
        let block = self.storage[start..start + BLOCK_LEN].to_vec();
        self.queue_data(&block);
    }

    fn queue_stream_block(&mut self, lba: u64) {
        self.stream = Some(lba + 1);
        self.queue_block(lba);
    }

    fn queue_data(&mut self, data: &[u8]) {
        let mut crc = crc16(data);
        if self.take_fault(|f| *f == Fault::ReadCrc).is_some() {
            crc ^= 0x0101;
        }
        self.out.push_back(TOKEN_START_BLOCK);
        self.out.extend(data.iter().copied());
        self.out.extend(crc.to_be_bytes());
        self.stats.blocks_read += 1;
    }

    fn respond(&mut self, bytes: &[u8]) {
        for _ in 0..self.cfg.ncr {
            self.out.push_back(0xFF);
        }
        self.out.extend(bytes.iter().copied());
    }

    fn idle_bit(&self) -> u8 {
        if self.mode == Mode::Idle {
            R1::IDLE
        } else {
            0
        }
    }

    /// The block address of a read/write argument, or the R1 error bits it earns.
    fn block_of(&self, arg: u32) -> Result<u64, u8> {
        let lba = if self.cfg.kind == ModelKind::Sdhc {
            u64::from(arg)
        } else {
            if arg as usize % BLOCK_LEN != 0 {
                return Err(R1::ADDRESS_ERROR);
            }
            u64::from(arg) / BLOCK_LEN as u64
        };
        if lba >= self.cfg.sectors {
            return Err(R1::PARAMETER_ERROR);
        }
        Ok(lba)
    }

    fn execute(&mut self, frame: [u8; 6]) {
        let index = frame[0] & 0x3F;
        let arg = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
        let app = std::mem::take(&mut self.app_next);
        self.stats.commands += 1;

        // CMD12 ends a multiple-block read: the byte after the frame is a stuff byte, and the
        // rest of the block in flight is dropped.
        let stopping = index == cmd::STOP_TRANSMISSION && self.stream.is_some();
        if stopping {
            self.stream = None;
            self.stream_dead = false;
            self.out.clear();
            self.out.push_back(0x3F);
        }

        let crc_ok = frame[5] == (crc7(&frame[..5]) << 1) | 1;
        let crc_checked = self.crc_on || index == cmd::GO_IDLE_STATE || index == cmd::SEND_IF_COND;
        if self.mode == Mode::PowerUp {
            // In SD bus mode only a correct CMD0 (with chip select low) is understood.
            if index == cmd::GO_IDLE_STATE && crc_ok {
                self.log.push(LoggedCommand {
                    cmd: index,
                    arg,
                    app,
                });
                self.mode = Mode::Idle;
                self.respond(&[R1::IDLE]);
            }
            return;
        }
        self.log.push(LoggedCommand {
            cmd: index,
            arg,
            app,
        });
        if crc_checked && !crc_ok {
            self.stats.crc_rejects += 1;
            let r1 = R1::COM_CRC_ERROR | self.idle_bit();
            self.respond(&[r1]);
            return;
        }
        if let Some(f) = self.take_fault(|f| {
            matches!(f, Fault::CommandStatus { cmd, .. } | Fault::IgnoreCommand { cmd } if *cmd == index)
        }) {
            if let Fault::CommandStatus { r1, .. } = f {
                self.respond(&[r1]);
            }
            return;
        }
        if app {
            self.execute_app(index, arg);
        } else {
            self.execute_plain(index, arg);
        }
    }

    fn execute_app(&mut self, index: u8, arg: u32) {
        if index != cmd::SD_SEND_OP_COND {
            let r1 = R1::ILLEGAL_COMMAND | self.idle_bit();
            self.respond(&[r1]);
            return;
        }
        if self.mode == Mode::Idle {
            let hcs = arg & (1 << 30) != 0;
            let can_start = hcs || self.cfg.kind != ModelKind::Sdhc;
            if can_start {
                self.acmd41_count += 1;
                if self.acmd41_count > self.cfg.init_polls {
                    self.mode = Mode::Ready;
                }
            }
        }
        let r1 = self.idle_bit();
        self.respond(&[r1]);
    }

    fn ocr(&self) -> u32 {
        let mut ocr = 0x00FF_8000; // 2.7–3.6 V
        if self.mode == Mode::Ready {
            ocr |= OCR_POWER_UP_DONE;
            if self.cfg.kind == ModelKind::Sdhc {
                ocr |= OCR_CCS;
            }
        }
        ocr
    }

    fn execute_plain(&mut self, index: u8, arg: u32) {
        let idle = self.idle_bit();
        let illegal = [R1::ILLEGAL_COMMAND | idle];
        match index {
            cmd::GO_IDLE_STATE => {
                self.mode = Mode::Idle;
                self.crc_on = false;
                self.acmd41_count = 0;
                self.stream = None;
                self.stream_dead = false;
                self.respond(&[R1::IDLE]);
            }
            cmd::SEND_IF_COND => {
                if self.cfg.kind == ModelKind::SdscV1 || self.mode != Mode::Idle {
                    self.respond(&illegal);
                } else {
                    let echo = arg & 0xFFF;
                    let e = echo.to_be_bytes();
                    self.respond(&[idle, e[0], e[1], e[2], e[3]]);
                }
            }
            cmd::APP_CMD => {
                self.app_next = true;
                self.respond(&[idle]);
            }
            cmd::READ_OCR => {
                let r1 = if self.cfg.quirk_cmd58_idle {
                    R1::IDLE
                } else {
                    idle
                };
                let o = self.ocr().to_be_bytes();
                self.respond(&[r1, o[0], o[1], o[2], o[3]]);
            }
            cmd::CRC_ON_OFF => {
                self.crc_on = arg & 1 != 0;
                self.respond(&[idle]);
            }
            _ if self.mode == Mode::Idle => self.respond(&illegal),
            cmd::SEND_CSD => {
                if self.cfg.quirk_refuse_cmd9 {
                    self.respond(&[R1::ILLEGAL_COMMAND]);
                    return;
                }
                self.respond(&[0]);
                let csd = Csd::synthesize(
                    self.cfg.sectors,
                    self.cfg.kind == ModelKind::Sdhc,
                    self.cfg.write_protected,
                );
                for _ in 0..self.cfg.nac {
                    self.out.push_back(0xFF);
                }
                self.queue_data(&csd);
            }
            cmd::STOP_TRANSMISSION => {
                self.respond(&[0]);
                self.busy = self.cfg.stop_busy;
            }
            cmd::SEND_STATUS => {
                let s = std::mem::take(&mut self.pending_r2);
                let r1 = if s & r2::OUT_OF_RANGE != 0 {
                    R1::PARAMETER_ERROR
                } else {
                    0
                };
                self.respond(&[r1, s]);
            }
            cmd::SET_BLOCKLEN => {
                let ok = self.cfg.kind == ModelKind::Sdhc || arg as usize == BLOCK_LEN;
                self.respond(&[if ok { 0 } else { R1::PARAMETER_ERROR }]);
            }
            cmd::READ_SINGLE_BLOCK | cmd::READ_MULTIPLE_BLOCK => match self.block_of(arg) {
                Err(r1) => self.respond(&[r1]),
                Ok(lba) => {
                    self.respond(&[0]);
                    if self.take_fault(|f| *f == Fault::NoData).is_some() {
                        return;
                    }
                    if index == cmd::READ_SINGLE_BLOCK {
                        self.queue_block(lba);
                    } else {
                        self.stream_dead = false;
                        self.queue_stream_block(lba);
                    }
                }
            },
            cmd::WRITE_BLOCK | cmd::WRITE_MULTIPLE_BLOCK => match self.block_of(arg) {
                Err(r1) => self.respond(&[r1]),
                Ok(lba) => {
                    self.respond(&[0]);
                    self.rx = Rx::WriteToken {
                        multi: index == cmd::WRITE_MULTIPLE_BLOCK,
                        lba,
                    };
                }
            },
            cmd::ERASE_WR_BLK_START | cmd::ERASE_WR_BLK_END => match self.block_of(arg) {
                Err(r1) => self.respond(&[r1]),
                Ok(lba) => {
                    if index == cmd::ERASE_WR_BLK_START {
                        self.erase_start = Some(lba);
                    } else {
                        self.erase_end = Some(lba);
                    }
                    self.respond(&[0]);
                }
            },
            cmd::ERASE => match (self.erase_start.take(), self.erase_end.take()) {
                (Some(a), Some(b)) if a <= b => {
                    if self.cfg.write_protected {
                        self.pending_r2 |= r2::WP_VIOLATION;
                    } else {
                        let (s, e) = (a as usize * BLOCK_LEN, (b as usize + 1) * BLOCK_LEN);
                        self.storage[s..e].fill(0);
                    }
                    self.respond(&[0]);
                    self.busy = self.cfg.erase_busy;
                }
                _ => self.respond(&[R1::ERASE_SEQUENCE_ERROR]),
            },
            _ => self.respond(&illegal),
        }
    }
}

impl ErrorType for SdCardModel {
    type Error = ModelSpiError;
}

impl SpiDevice for SdCardModel {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), ModelSpiError> {
        let mut s = self.state.borrow_mut();
        if s.take_fault(|f| *f == Fault::SpiError).is_some() {
            return Err(ModelSpiError);
        }
        s.stats.transactions += 1;
        for op in operations {
            match op {
                Operation::Write(w) => {
                    for &b in w.iter() {
                        s.exchange(b);
                    }
                }
                Operation::Read(r) => {
                    for b in r.iter_mut() {
                        *b = s.exchange(0xFF);
                    }
                }
                Operation::Transfer(r, w) => {
                    for i in 0..r.len().max(w.len()) {
                        let got = s.exchange(w.get(i).copied().unwrap_or(0xFF));
                        if let Some(b) = r.get_mut(i) {
                            *b = got;
                        }
                    }
                }
                Operation::TransferInPlace(buf) => {
                    for b in buf.iter_mut() {
                        *b = s.exchange(*b);
                    }
                }
                Operation::DelayNs(_) => {}
            }
        }
        Ok(())
    }
}

/// A `DelayNs` that does not sleep but adds up what it was asked to wait, so tests can check
/// that timeouts are bounded (and fast).
#[derive(Debug, Clone, Default)]
pub struct CountingDelay {
    total: Rc<RefCell<u64>>,
}

impl CountingDelay {
    /// A new counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Nanoseconds requested so far (by this handle and its clones).
    pub fn total_ns(&self) -> u64 {
        *self.total.borrow()
    }
}

impl DelayNs for CountingDelay {
    fn delay_ns(&mut self, ns: u32) {
        *self.total.borrow_mut() += u64::from(ns);
    }
}
