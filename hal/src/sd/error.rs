//! What can go wrong between the driver and an SD card, in detail, and how each failure is
//! reported through the filesystem's coarser [`IoError`].

use core::fmt;

use bonsaifs::IoError;
use embedded_hal::spi::ErrorKind;

use super::csd::CsdError;
use super::protocol::{r2, DATA_ERROR_OUT_OF_RANGE, R1};

/// An SPI bus error, as the bus implementation classified it
/// ([`embedded_hal::spi::Error::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SpiFault {
    /// Received data was lost (the receive buffer overran).
    Overrun,
    /// A multi-controller mode fault.
    ModeFault,
    /// A framing error.
    FrameFormat,
    /// The chip-select line could not be driven.
    ChipSelectFault,
    /// Anything else.
    Other,
}

impl From<ErrorKind> for SpiFault {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::Overrun => SpiFault::Overrun,
            ErrorKind::ModeFault => SpiFault::ModeFault,
            ErrorKind::FrameFormat => SpiFault::FrameFormat,
            ErrorKind::ChipSelectFault => SpiFault::ChipSelectFault,
            _ => SpiFault::Other,
        }
    }
}

/// A failure of the SD card or of the link to it, with what the card actually said.
///
/// The block device reports these as [`IoError`]s (see [`SdError::io_error`]); the full value
/// of the last one stays readable through `SdCard::last_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SdError {
    /// The SPI bus reported an error.
    Spi(SpiFault),
    /// The card did not answer command `cmd` (only 0xFF came back): no card, no power, a
    /// broken link, or a card still busy with something else.
    NoResponse {
        /// The command number.
        cmd: u8,
    },
    /// The card answered command `cmd` with error bits in its R1 status (or, for CMD0, without
    /// entering the idle state).
    Command {
        /// The command number (ACMDs are reported by their own number, e.g. 41).
        cmd: u8,
        /// The status byte the card sent.
        r1: R1,
    },
    /// CMD8's echo does not match what was sent: the card does not accept our supply voltage,
    /// or the link corrupts data.
    IfCondMismatch {
        /// The 32-bit R7 payload the card returned.
        echo: u32,
    },
    /// The card was still initialising (idle) when the ACMD41 timeout ran out.
    InitTimeout,
    /// The card did not send the start of a data block in time (read access timeout).
    DataTimeout {
        /// The command whose data was awaited.
        cmd: u8,
    },
    /// The card sent a data error token instead of a data block.
    DataErrorToken {
        /// The token (its low four bits: error, CC error, ECC failed, out of range).
        token: u8,
    },
    /// A data block from the card failed its CRC16: the link corrupted it.
    ReadCrc {
        /// The CRC16 the card sent.
        received: u16,
        /// The CRC16 of the bytes as received.
        computed: u16,
    },
    /// The card rejected a written block because its CRC16 did not match (data response 101).
    WriteCrc,
    /// The card rejected a written block with a write error (data response 110); `r2` is the
    /// second status byte that CMD13 then reported as the cause (see [`r2`]).
    WriteRejected {
        /// Second status byte (0 if the card gave no cause).
        r2: u8,
    },
    /// The data response token after a written block was missing or malformed.
    BadDataResponse {
        /// The byte received where the token should have been.
        byte: u8,
    },
    /// The card stayed busy (holding the data line low) beyond the timeout.
    BusyTimeout,
    /// SEND_STATUS (CMD13) reported an error, typically after programming a write.
    Status {
        /// First status byte.
        r1: R1,
        /// Second status byte (see [`r2`]).
        r2: u8,
    },
    /// The CSD register could not be decoded.
    Csd(CsdError),
    /// The driver was used before the card was initialised.
    NotInitialised,
    /// The sector address does not fit the card's 32-bit command argument.
    AddressOverflow,
}

impl SdError {
    /// The coarse error the filesystem sees.
    ///
    /// Timeouts become [`IoError::Timeout`]; CRC failures in either direction (and a command
    /// the card received with a bad CRC7) become [`IoError::Crc`]; the card's own address
    /// checks become [`IoError::OutOfRange`]; a write-protect violation becomes
    /// [`IoError::ReadOnly`]; data the card cannot read or program becomes
    /// [`IoError::Media`]; everything else is [`IoError::Device`] with [`SdError::code`].
    pub fn io_error(&self) -> IoError {
        match *self {
            SdError::NoResponse { .. }
            | SdError::InitTimeout
            | SdError::DataTimeout { .. }
            | SdError::BusyTimeout => IoError::Timeout,
            SdError::ReadCrc { .. } | SdError::WriteCrc => IoError::Crc,
            SdError::Command { r1, .. } if r1.0 & R1::COM_CRC_ERROR != 0 => IoError::Crc,
            SdError::Command { r1, .. }
                if r1.0 & (R1::ADDRESS_ERROR | R1::PARAMETER_ERROR) != 0 =>
            {
                IoError::OutOfRange
            }
            SdError::AddressOverflow => IoError::OutOfRange,
            SdError::DataErrorToken { token } if token & DATA_ERROR_OUT_OF_RANGE != 0 => {
                IoError::OutOfRange
            }
            SdError::Status { r2: s, .. } | SdError::WriteRejected { r2: s }
                if s & r2::WP_VIOLATION != 0 =>
            {
                IoError::ReadOnly
            }
            SdError::Status { r2: s, .. } | SdError::WriteRejected { r2: s }
                if s & r2::OUT_OF_RANGE != 0 =>
            {
                IoError::OutOfRange
            }
            SdError::DataErrorToken { .. } | SdError::WriteRejected { .. } => IoError::Media,
            SdError::Status { r2: s, .. }
                if s & (r2::CARD_ECC_FAILED | r2::CC_ERROR | r2::ERROR) != 0 =>
            {
                IoError::Media
            }
            _ => IoError::Device(self.code()),
        }
    }

    /// A 16-bit code for [`IoError::Device`]: the high byte names the variant (1 = Spi,
    /// 2 = NoResponse, 3 = Command, 4 = IfCondMismatch, 5 = InitTimeout, 6 = DataTimeout,
    /// 7 = DataErrorToken, 8 = ReadCrc, 9 = WriteCrc, 10 = WriteRejected, 11 = BadDataResponse,
    /// 12 = BusyTimeout, 13 = Status, 14 = Csd, 15 = NotInitialised, 16 = AddressOverflow);
    /// the low byte carries the command number, or the card's status byte or token.
    pub fn code(&self) -> u16 {
        let (variant, detail): (u16, u8) = match *self {
            SdError::Spi(f) => (1, f as u8),
            SdError::NoResponse { cmd } => (2, cmd),
            SdError::Command { r1, .. } => (3, r1.0),
            SdError::IfCondMismatch { echo } => (4, echo as u8),
            SdError::InitTimeout => (5, 0),
            SdError::DataTimeout { cmd } => (6, cmd),
            SdError::DataErrorToken { token } => (7, token),
            SdError::ReadCrc { .. } => (8, 0),
            SdError::WriteCrc => (9, 0),
            SdError::WriteRejected { r2 } => (10, r2),
            SdError::BadDataResponse { byte } => (11, byte),
            SdError::BusyTimeout => (12, 0),
            SdError::Status { r2, .. } => (13, r2),
            SdError::Csd(_) => (14, 0),
            SdError::NotInitialised => (15, 0),
            SdError::AddressOverflow => (16, 0),
        };
        (variant << 8) | u16::from(detail)
    }
}

impl From<SdError> for IoError {
    fn from(e: SdError) -> Self {
        e.io_error()
    }
}

impl fmt::Display for SdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SdError::Spi(k) => write!(f, "SPI bus error: {k:?}"),
            SdError::NoResponse { cmd } => write!(f, "no response to CMD{cmd}"),
            SdError::Command { cmd, r1 } => {
                write!(f, "CMD{cmd} failed: R1 status {:#04x}", r1.0)
            }
            SdError::IfCondMismatch { echo } => {
                write!(f, "CMD8 echo {echo:#010x} does not match (voltage or link)")
            }
            SdError::InitTimeout => f.write_str("card still initialising after the timeout"),
            SdError::DataTimeout { cmd } => write!(f, "no data block after CMD{cmd}"),
            SdError::DataErrorToken { token } => write!(f, "data error token {token:#04x}"),
            SdError::ReadCrc { received, computed } => write!(
                f,
                "read CRC16 mismatch: card sent {received:#06x}, data gives {computed:#06x}"
            ),
            SdError::WriteCrc => f.write_str("card rejected a written block: CRC error"),
            SdError::WriteRejected { r2 } => {
                write!(
                    f,
                    "card rejected a written block: write error (status {r2:#04x})"
                )
            }
            SdError::BadDataResponse { byte } => write!(f, "bad data response {byte:#04x}"),
            SdError::BusyTimeout => f.write_str("card busy beyond the timeout"),
            SdError::Status { r1, r2 } => {
                write!(f, "card status error: {:#04x} {r2:#04x}", r1.0)
            }
            SdError::Csd(e) => write!(f, "bad CSD register: {e:?}"),
            SdError::NotInitialised => f.write_str("card not initialised"),
            SdError::AddressOverflow => f.write_str("sector address beyond 32 bits"),
        }
    }
}

impl core::error::Error for SdError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_to_io_error() {
        assert_eq!(SdError::BusyTimeout.io_error(), IoError::Timeout);
        assert_eq!(SdError::NoResponse { cmd: 17 }.io_error(), IoError::Timeout);
        assert_eq!(SdError::WriteCrc.io_error(), IoError::Crc);
        let crc_cmd = SdError::Command {
            cmd: 24,
            r1: R1(R1::COM_CRC_ERROR),
        };
        assert_eq!(crc_cmd.io_error(), IoError::Crc);
        let addr = SdError::Command {
            cmd: 17,
            r1: R1(R1::PARAMETER_ERROR),
        };
        assert_eq!(addr.io_error(), IoError::OutOfRange);
        let wp = SdError::Status {
            r1: R1(0),
            r2: r2::WP_VIOLATION,
        };
        assert_eq!(wp.io_error(), IoError::ReadOnly);
        assert_eq!(
            SdError::DataErrorToken { token: 0x04 }.io_error(),
            IoError::Media
        );
        let illegal = SdError::Command {
            cmd: 9,
            r1: R1(R1::ILLEGAL_COMMAND),
        };
        assert_eq!(illegal.io_error(), IoError::Device(0x0304));
    }
}
