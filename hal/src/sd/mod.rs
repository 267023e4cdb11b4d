//! SD cards over SPI, on `embedded-hal` 1.0 ([`SpiDevice`](embedded_hal::spi::SpiDevice) +
//! [`DelayNs`](embedded_hal::delay::DelayNs)).
//!
//! ```text
//! let mut bus = SdSpi::new(spi, delay, SdConfig::default());
//! bus.init()?;                                   // CMD0, CMD8, CMD59, ACMD41…, CMD58, CMD16
//! let csd = bus.read_csd()?;                     // capacity, write protection
//! let dev: SdCard<'_, _, _> = SdCard::from_csd(bus, &csd);
//! let fs = Fs::mount(dev, &mut mem)?;            // or SdCard::open(spi, delay, config)
//! ```
//!
//! | module | holds |
//! |---|---|
//! | [`protocol`] | command numbers, R1/R2 bits, tokens, the command frame, CRC7 and CRC16 |
//! | [`csd`] | decoding (and, for the model, encoding) the CSD register |
//! | [`config`] | CRC on/off and the bound of every wait |
//! | [`error`] | [`SdError`], and its mapping onto [`bonsaifs::IoError`] |
//! | [`bus`] | [`SdSpi`]: the protocol engine (init, read, write, sync, erase) |
//! | [`card`] | [`SdCard`]: the engine as a [`bonsaifs::device::BlockDevice`] |
//! | `model` (feature `std`) | a behavioural SD card implementing `SpiDevice`, for host tests |
//!
//! # Our own protocol code, not embedded-sdmmc's `SdCard`
//!
//! embedded-sdmmc 0.10's `SdCard` owns the SPI device and the delay and completes
//! synchronously, which would suit a queue-less device. It does not fit in these places, each
//! of which this driver needs:
//!
//! - **No flush.** Its writes wait for programming only on single blocks; a multiple-block
//!   write returns right after the Stop Tran token, and nothing public waits for the busy
//!   period or reads the status afterwards. Our durability contract needs a flush that does
//!   exactly that (and a FUA write).
//! - **Capacity only from the CSD.** `num_blocks` always sends CMD9, and there is no way to
//!   give it a size; a card (or emulator) that refuses CMD9 cannot be used at all.
//! - **Errors lose detail.** A write rejected for a CRC error and one rejected by the card are
//!   both `WriteError`; a read command answered with an error status is not checked (the
//!   driver then waits for a data token that never comes and reports a timeout); programming
//!   errors reported by CMD13 after a multiple-block write are never read.
//! - **Busy after Stop Tran.** After a multiple-block write it polls for "ready" right after
//!   the Stop Tran token, while the card may start its busy period up to two bytes later
//!   (one byte, then N_BR ≤ 1); against our card model, which starts it that late, its next
//!   command arrives while the card is busy and is lost.
//! - **Fixed timeouts** (10 µs × a constant), not configurable per board.
//! - **Blocks as `[Block]`** (arrays of 512-byte structs), while our requests carry `&mut [u8]`:
//!   every transfer would be copied through a bounce buffer.
//! - **Rust 1.87 / edition 2024**, above this workspace's minimum Rust version.
//!
//! So the protocol is written here ([`bus`]), following the SD Physical Layer Simplified
//! Specification, chapter 7 (SPI mode). embedded-sdmmc is still first-class: the
//! `sdmmc_adapter` module (feature `sdmmc`) turns any of our block devices into one of theirs
//! (FAT on our drivers) and theirs into ours (bonsaifs on their `SdCard`).
//!
//! # Quirks belong to the board, not here
//!
//! The engine checks every response strictly and reads the capacity from the CSD. Hardware or
//! emulators that deviate are handled by the board code around it: it can wrap its
//! `SpiDevice` to correct a known-bad response, send a plain command of its own
//! ([`SdSpi::command_r1`]), and size the device itself with [`SdCard::with_sector_count`] when
//! CMD9 is refused. The `sifive-u-sd` QEMU firmware does all three for QEMU 10.0.2's SPI SD
//! model (`examples/firmware/src/qemu_sd_quirks.rs` lists its four quirks).

pub mod bus;
pub mod card;
pub mod config;
pub mod csd;
pub mod error;
#[cfg(feature = "std")]
pub mod model;
pub mod protocol;
pub(crate) mod ring;

pub use bus::{CardInfo, CardKind, SdSpi, SdStats};
pub use card::SdCard;
pub use config::SdConfig;
pub use csd::{Csd, CsdError};
pub use error::{SdError, SpiFault};
pub use protocol::R1;
