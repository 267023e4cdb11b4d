//! The bytes of the SD card SPI protocol: command numbers, the R1 status byte, data tokens,
//! the command frame, and the two checksums (CRC7 on commands and registers, CRC16 on data
//! blocks).
//!
//! Nothing here talks to hardware; the driver ([`super::bus`]) and the behavioural card model
//! (`super::model`, host only) both build on these definitions, so they cannot disagree on a
//! constant.

use crc::{Crc, CRC_16_XMODEM, CRC_7_MMC};

/// Size of a data block: SDHC/SDXC cards fix it at 512 bytes, and SDSC cards are set to it
/// with CMD16 during initialisation.
pub const BLOCK_LEN: usize = 512;

/// Command numbers (the `n` of `CMDn`) used by the driver.
pub mod cmd {
    /// GO_IDLE_STATE: software reset; with CS low it also selects SPI mode.
    pub const GO_IDLE_STATE: u8 = 0;
    /// SEND_IF_COND: voltage check and the "this host knows SD 2.0" handshake (R7).
    pub const SEND_IF_COND: u8 = 8;
    /// SEND_CSD: read the card-specific data register (16 bytes, as a data block).
    pub const SEND_CSD: u8 = 9;
    /// STOP_TRANSMISSION: end a multiple-block read (R1b).
    pub const STOP_TRANSMISSION: u8 = 12;
    /// SEND_STATUS: the two-byte card status (R2).
    pub const SEND_STATUS: u8 = 13;
    /// SET_BLOCKLEN: block length of SDSC cards.
    pub const SET_BLOCKLEN: u8 = 16;
    /// READ_SINGLE_BLOCK.
    pub const READ_SINGLE_BLOCK: u8 = 17;
    /// READ_MULTIPLE_BLOCK: blocks follow until STOP_TRANSMISSION.
    pub const READ_MULTIPLE_BLOCK: u8 = 18;
    /// WRITE_BLOCK.
    pub const WRITE_BLOCK: u8 = 24;
    /// WRITE_MULTIPLE_BLOCK: blocks follow until the Stop Tran token.
    pub const WRITE_MULTIPLE_BLOCK: u8 = 25;
    /// ERASE_WR_BLK_START_ADDR: first block of an erase.
    pub const ERASE_WR_BLK_START: u8 = 32;
    /// ERASE_WR_BLK_END_ADDR: last block of an erase.
    pub const ERASE_WR_BLK_END: u8 = 33;
    /// ERASE: erase the selected range (R1b).
    pub const ERASE: u8 = 38;
    /// APP_CMD: the next command is an application command (ACMDn).
    pub const APP_CMD: u8 = 55;
    /// READ_OCR: the operating conditions register (R3).
    pub const READ_OCR: u8 = 58;
    /// CRC_ON_OFF: turn CRC checking on (argument bit 0 set) or off.
    pub const CRC_ON_OFF: u8 = 59;
    /// ACMD41 SD_SEND_OP_COND: start initialisation; repeat until the card leaves idle.
    pub const SD_SEND_OP_COND: u8 = 41;
}

/// ACMD41 argument bit: the host supports high-capacity (block-addressed) cards.
pub const ACMD41_HCS: u32 = 1 << 30;
/// CMD8 argument: 2.7–3.6 V supply (`0x1`) and the check pattern `0xAA`.
pub const CMD8_ARG: u32 = 0x1AA;
/// OCR bit 31: the card has finished its power-up routine.
pub const OCR_POWER_UP_DONE: u32 = 1 << 31;
/// OCR bit 30 (card capacity status): set on SDHC/SDXC cards, which address blocks, not bytes.
pub const OCR_CCS: u32 = 1 << 30;

/// Start Block token before every data block of a read, a single-block write, and the CSD.
pub const TOKEN_START_BLOCK: u8 = 0xFE;
/// Start Block token before every data block of a multiple-block write.
pub const TOKEN_START_MULTI_WRITE: u8 = 0xFC;
/// Stop Tran token: ends a multiple-block write.
pub const TOKEN_STOP_TRAN: u8 = 0xFD;

/// Data response token (after every written block): `xxx0sss1`, `sss` = 010 accepted.
pub const DATA_RESPONSE_MASK: u8 = 0x1F;
/// Data response: the block was accepted and is being programmed.
pub const DATA_ACCEPTED: u8 = 0x05;
/// Data response: the block was rejected, its CRC16 did not match.
pub const DATA_CRC_ERROR: u8 = 0x0B;
/// Data response: the block was rejected by a write error.
pub const DATA_WRITE_ERROR: u8 = 0x0D;

/// Data error token bit: generic error.
pub const DATA_ERROR_ERROR: u8 = 0x01;
/// Data error token bit: card controller error.
pub const DATA_ERROR_CC: u8 = 0x02;
/// Data error token bit: the card's internal ECC could not correct the data.
pub const DATA_ERROR_ECC: u8 = 0x04;
/// Data error token bit: the address is beyond the end of the card.
pub const DATA_ERROR_OUT_OF_RANGE: u8 = 0x08;

/// The R1 status byte that answers every command. Bit 7 is always zero, which is how the
/// host tells a response from the 0xFF the card sends while it has nothing to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct R1(pub u8);

impl R1 {
    /// The card is in the idle state, running its initialisation.
    pub const IDLE: u8 = 0x01;
    /// An erase sequence was cleared before executing.
    pub const ERASE_RESET: u8 = 0x02;
    /// The command is not legal in the card's state (or not supported).
    pub const ILLEGAL_COMMAND: u8 = 0x04;
    /// The CRC7 of the command frame was wrong.
    pub const COM_CRC_ERROR: u8 = 0x08;
    /// An error in the sequence of erase commands.
    pub const ERASE_SEQUENCE_ERROR: u8 = 0x10;
    /// A misaligned address for the block length.
    pub const ADDRESS_ERROR: u8 = 0x20;
    /// The argument (address, block length) is outside the allowed range.
    pub const PARAMETER_ERROR: u8 = 0x40;
    /// Every error bit (all but idle).
    pub const ERRORS: u8 = 0x7E;

    /// Whether the card is still in the idle state.
    pub fn idle(self) -> bool {
        self.0 & Self::IDLE != 0
    }
    /// Whether any error bit is set.
    pub fn has_error(self) -> bool {
        self.0 & Self::ERRORS != 0
    }
    /// Whether the card refused the command as illegal.
    pub fn illegal(self) -> bool {
        self.0 & Self::ILLEGAL_COMMAND != 0
    }
}

/// Second byte of the R2 response to SEND_STATUS (the first byte is an [`R1`]).
pub mod r2 {
    /// The card is locked by the host.
    pub const CARD_LOCKED: u8 = 0x01;
    /// A write-protected block was skipped by an erase, or a lock/unlock failed.
    pub const WP_ERASE_SKIP: u8 = 0x02;
    /// A general or unknown error.
    pub const ERROR: u8 = 0x04;
    /// The card's controller failed.
    pub const CC_ERROR: u8 = 0x08;
    /// The card's internal ECC could not correct the data.
    pub const CARD_ECC_FAILED: u8 = 0x10;
    /// A write to a write-protected block was attempted.
    pub const WP_VIOLATION: u8 = 0x20;
    /// An invalid selection of erase blocks.
    pub const ERASE_PARAM: u8 = 0x40;
    /// An argument was out of range, or the CSD was overwritten.
    pub const OUT_OF_RANGE: u8 = 0x80;
}

const CRC7: Crc<u8> = Crc::<u8>::new(&CRC_7_MMC);
const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_XMODEM);

/// The SD CRC7 (polynomial x⁷ + x³ + 1) of `bytes`, as a 7-bit value.
pub fn crc7(bytes: &[u8]) -> u8 {
    CRC7.checksum(bytes)
}

/// The SD data CRC16 (CCITT polynomial, initial value 0) of `bytes`.
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC16.checksum(bytes)
}

/// The six-byte frame of command `index` with argument `arg`: start bits `01`, the index,
/// the argument big-endian, then the CRC7 and the end bit.
pub fn command_frame(index: u8, arg: u32) -> [u8; 6] {
    let a = arg.to_be_bytes();
    let mut frame = [0x40 | (index & 0x3F), a[0], a[1], a[2], a[3], 0];
    frame[5] = (crc7(&frame[..5]) << 1) | 1;
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmd0_and_cmd8_frames_have_the_well_known_crc_bytes() {
        // Every SD document quotes these two: CMD0 ends in 0x95, CMD8(0x1AA) in 0x87.
        assert_eq!(command_frame(0, 0), [0x40, 0, 0, 0, 0, 0x95]);
        assert_eq!(command_frame(8, CMD8_ARG), [0x48, 0, 0, 0x01, 0xAA, 0x87]);
        // CMD55 (0x65) and CMD17 at 0 (0x55).
        assert_eq!(command_frame(55, 0)[5], 0x65);
        assert_eq!(command_frame(17, 0)[5], 0x55);
    }

    #[test]
    fn crc16_of_a_block_of_0xff_matches_the_spec_example() {
        // The simplified physical layer spec gives 0x7FA1 for 512 bytes of 0xFF.
        assert_eq!(crc16(&[0xFF; BLOCK_LEN]), 0x7FA1);
    }

    #[test]
    fn r1_bits() {
        assert!(R1(0x01).idle());
        assert!(!R1(0x01).has_error());
        assert!(R1(0x05).illegal() && R1(0x05).has_error());
        assert!(!R1(0x00).idle());
    }
}
