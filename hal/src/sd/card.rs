//! [`SdCard`]: the SD protocol engine ([`SdSpi`]) as a [`BlockDevice`].

use bonsaifs::device::{check_range, BlockDevice, Busy, Command, Completion, Geometry, Request};
use bonsaifs::IoError;
use embedded_hal::delay::DelayNs;
use embedded_hal::spi::SpiDevice;

use super::bus::SdSpi;
use super::config::SdConfig;
use super::csd::Csd;
use super::error::SdError;
use super::protocol::BLOCK_LEN;
use super::ring::CompletionRing;

/// An SD card over SPI as a block device of 512-byte sectors.
///
/// The card has no command queue, so every request runs to its end inside
/// [`submit`](BlockDevice::submit) and its completion waits in a ring of `Q` entries (the
/// advertised queue depth, default 8) until [`poll`](BlockDevice::poll) hands it out; with
/// `Q` completions waiting, `submit` answers [`Busy`]. Buffers are only used during `submit`,
/// so the device implements [`BlockDevice<'b>`](BlockDevice) for every `'b`.
///
/// Durability: a write completes when the card has accepted its blocks, while it may still be
/// programming them, so the geometry reports a volatile cache. [`Command::Flush`] waits until
/// the card is no longer busy and checks its status (errors found while programming come back
/// there); a FUA write does the same before it completes.
///
/// Every failure completes its request with an [`IoError`] (see [`SdError::io_error`]);
/// [`SdCard::last_error`] keeps the detailed [`SdError`] of the most recent one.
#[derive(Debug)]
pub struct SdCard<'b, S, D, const Q: usize = 8> {
    bus: SdSpi<S, D>,
    geo: Geometry,
    done: CompletionRing<'b, Q>,
    last_error: Option<SdError>,
}

impl<'b, S: SpiDevice, D: DelayNs, const Q: usize> SdCard<'b, S, D, Q> {
    /// Rejects, at compile time, a depth that [`Geometry::queue_depth`] cannot express.
    const DEPTH_FITS: () = assert!(
        Q >= 1 && Q <= u16::MAX as usize,
        "SdCard queue depth must be in 1..=65535"
    );

    /// Initialise the card behind `spi` and size the device from its CSD register (which also
    /// says whether the card is write-protected).
    ///
    /// This drops `spi` and `delay` on failure; to retry, or to supply the size of a card
    /// that cannot report its CSD, build an [`SdSpi`], call [`SdSpi::init`] and then
    /// [`SdCard::from_csd`] or [`SdCard::with_sector_count`].
    pub fn open(spi: S, delay: D, config: SdConfig) -> Result<Self, SdError> {
        let mut bus = SdSpi::new(spi, delay, config);
        bus.init()?;
        let csd = bus.read_csd()?;
        Ok(Self::from_csd(bus, &csd))
    }

    /// A device over an initialised card whose CSD has been read.
    pub fn from_csd(bus: SdSpi<S, D>, csd: &Csd) -> Self {
        let mut card = Self::with_sector_count(bus, csd.sector_count());
        card.geo.read_only = csd.write_protected();
        card
    }

    /// A device over an initialised card of `sector_count` 512-byte sectors, for cards that
    /// cannot report their size. Requests complete with [`SdError::NotInitialised`] (as
    /// [`IoError::Device`]) if `bus` was not initialised.
    pub fn with_sector_count(bus: SdSpi<S, D>, sector_count: u64) -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::DEPTH_FITS;
        SdCard {
            bus,
            geo: Geometry {
                sector_size: BLOCK_LEN as u32,
                sector_count,
                queue_depth: Q as u16,
                volatile_cache: true,
                fua: true,
                atomic_write_sectors: 0,
                read_only: false,
            },
            done: CompletionRing::new(),
            last_error: None,
        }
    }

    /// The detailed error of the most recent failed request, if any.
    pub fn last_error(&self) -> Option<SdError> {
        self.last_error
    }

    /// The protocol engine (for its counters and card information).
    pub fn bus(&self) -> &SdSpi<S, D> {
        &self.bus
    }

    /// The protocol engine, mutably (e.g. to re-initialise a card that was swapped).
    /// Completions already waiting to be polled are not affected.
    pub fn bus_mut(&mut self) -> &mut SdSpi<S, D> {
        &mut self.bus
    }

    /// Give back the protocol engine. Completions not yet polled are dropped (their I/O has
    /// been done).
    pub fn into_bus(self) -> SdSpi<S, D> {
        self.bus
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_range(&self.geo, lba, buf.len())?;
        let r = self.bus.read_blocks(lba, buf);
        self.io_result(r)
    }

    fn write(&mut self, lba: u64, buf: &[u8], fua: bool) -> Result<(), IoError> {
        check_range(&self.geo, lba, buf.len())?;
        if self.geo.read_only {
            return Err(IoError::ReadOnly);
        }
        let r =
            self.bus.write_blocks(lba, buf).and_then(
                |()| {
                    if fua {
                        self.bus.sync()
                    } else {
                        Ok(())
                    }
                },
            );
        self.io_result(r)
    }

    /// Keep the detailed error of a failure and answer its [`IoError`].
    fn io_result(&mut self, r: Result<(), SdError>) -> Result<(), IoError> {
        r.map_err(|e| {
            self.last_error = Some(e);
            e.io_error()
        })
    }

    fn execute(&mut self, command: &mut Command<'b>) -> Result<(), IoError> {
        let r = match command {
            Command::Read { lba, buf } => return self.read(*lba, buf),
            Command::Write { lba, buf, fua } => return self.write(*lba, buf, *fua),
            Command::Flush => self.bus.sync(),
            Command::Discard { lba, count } => {
                let bytes = usize::try_from(*count)
                    .ok()
                    .and_then(|c| c.checked_mul(BLOCK_LEN))
                    .ok_or(IoError::OutOfRange)?;
                check_range(&self.geo, *lba, bytes)?;
                if self.geo.read_only {
                    return Err(IoError::ReadOnly);
                }
                self.bus.erase(*lba, *count)
            }
        };
        self.io_result(r)
    }
}

impl<'b, S: SpiDevice, D: DelayNs, const Q: usize> BlockDevice<'b> for SdCard<'b, S, D, Q> {
    fn geometry(&self) -> Geometry {
        self.geo
    }

    fn submit(&mut self, req: Request<'b>) -> Result<(), Busy<'b>> {
        if self.done.is_full() {
            return Err(Busy(req));
        }
        let Request { tag, mut command } = req;
        let result = self.execute(&mut command);
        let buf = match command {
            Command::Read { buf, .. } | Command::Write { buf, .. } => Some(buf),
            Command::Flush | Command::Discard { .. } => None,
        };
        // Cannot fail: fullness was checked above and nothing was pushed since.
        let _ = self.done.push(Completion { tag, result, buf });
        Ok(())
    }

    fn poll(&mut self) -> Option<Completion<'b>> {
        self.done.pop()
    }

    fn in_flight(&self) -> usize {
        self.done.len()
    }

    /// The card is read at once, into the caller's buffer (the same transfer `submit` does).
    fn read_now(&mut self, lba: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        Some(self.read(lba, buf))
    }

    /// The card is written at once from the caller's buffer (not FUA: the card may still be
    /// programming it, as after a completed `submit`; a flush waits for that).
    fn write_now(&mut self, lba: u64, buf: &[u8]) -> Option<Result<(), IoError>> {
        Some(self.write(lba, buf, false))
    }
}
