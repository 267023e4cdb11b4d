//! Adapters both ways between our [`BlockDevice`] and embedded-sdmmc's
//! [`embedded_sdmmc::BlockDevice`] (feature `sdmmc`).
//!
//! - [`SdmmcDevice`] makes any of our drivers (SD over SPI, virtio-blk, NVMe, a RAM disk) an
//!   embedded-sdmmc block device, so its FAT code can run on them.
//! - [`FromSdmmc`] makes any embedded-sdmmc block device (their `SdCard`, or a board's own)
//!   one of ours, so bonsaifs can run on it.
//!
//! The two traits differ in ways the adapters must bridge:
//!
//! | | ours | embedded-sdmmc |
//! |---|---|---|
//! | unit | sectors of 512 or 4096 bytes | `Block`s of 512 bytes |
//! | buffers | `&'b mut [u8]` owned by the request until its completion | `&[Block]` borrowed for the call |
//! | calls | `submit` / `poll`, never blocking | `read` / `write` on `&self`, blocking |
//! | durability | `Flush`, FUA, a volatile-cache flag | none: a returned write is all there is |
//! | errors | [`IoError`] | the device's own type |

use core::cell::RefCell;

use bonsaifs::device::{run, BlockDevice, Busy, Command, Completion, Geometry, Request};
use bonsaifs::IoError;
use embedded_sdmmc::{Block, BlockCount, BlockIdx};

use crate::sd::ring::CompletionRing;

/// Bytes of an embedded-sdmmc block.
const BLOCK: usize = Block::LEN;

/// One of our block devices as an embedded-sdmmc [`BlockDevice`](embedded_sdmmc::BlockDevice).
///
/// embedded-sdmmc borrows its blocks only for the length of a call, while our requests own
/// their buffer until the completion comes back; so data goes through a one-sector *bounce
/// buffer* that the adapter owns for `'b` and hands to the device with every request. For a
/// DMA driver (`BlockDevice<'static>`) that is where its DMA-capable `'static` memory goes.
/// Each request moves one sector; on a device with 4096-byte sectors a write of less than a
/// sector reads the sector first, so the rest of it survives.
///
/// Because embedded-sdmmc has no flush, each `write` call ends with a [`Command::Flush`] (on
/// devices with a volatile cache): when it returns, its blocks are durable. Calls block until
/// the device completes (submit, then poll).
pub struct SdmmcDevice<'b, D> {
    inner: RefCell<Inner<'b, D>>,
}

struct Inner<'b, D> {
    dev: D,
    bounce: Option<&'b mut [u8]>,
}

impl<'b, D: BlockDevice<'b>> SdmmcDevice<'b, D> {
    /// Adapt `dev`, moving data through the first sector of `bounce`. If `bounce` is shorter
    /// than a sector, every call fails with [`IoError::BadBuffer`].
    pub fn new(dev: D, bounce: &'b mut [u8]) -> Self {
        let ss = dev.geometry().sector_size as usize;
        let bounce = if bounce.len() >= ss && ss > 0 {
            Some(bounce.split_at_mut(ss).0)
        } else {
            None
        };
        SdmmcDevice {
            inner: RefCell::new(Inner { dev, bounce }),
        }
    }

    /// Give back the device and the bounce buffer (`None` if it was too short, or a failing
    /// device did not hand it back).
    pub fn into_inner(self) -> (D, Option<&'b mut [u8]>) {
        let inner = self.inner.into_inner();
        (inner.dev, inner.bounce)
    }

    /// Run `f` with the device.
    pub fn with_device<T>(&self, f: impl FnOnce(&mut D) -> T) -> T {
        f(&mut self.inner.borrow_mut().dev)
    }
}

impl<'b, D: BlockDevice<'b>> Inner<'b, D> {
    /// Read or write sector `lba` through the bounce buffer.
    fn transfer(&mut self, lba: u64, write: bool) -> Result<(), IoError> {
        let buf = self.bounce.take().ok_or(IoError::BadBuffer)?;
        let command = if write {
            Command::Write {
                lba,
                buf,
                fua: false,
            }
        } else {
            Command::Read { lba, buf }
        };
        let done = run(&mut self.dev, command);
        self.bounce = done.buf;
        done.result
    }

    fn bounce_mut(&mut self) -> Result<&mut [u8], IoError> {
        self.bounce.as_deref_mut().ok_or(IoError::BadBuffer)
    }

    /// Walk `len` bytes from byte `start` sector by sector, calling
    /// `f(sector, offset in the sector, bytes in the sector, position in the range)`.
    fn sectors(
        &mut self,
        start: u64,
        len: u64,
        mut f: impl FnMut(&mut Self, u64, usize, usize, usize) -> Result<(), IoError>,
    ) -> Result<(), IoError> {
        let ss = u64::from(self.dev.geometry().sector_size);
        if ss == 0 {
            return Err(IoError::BadBuffer);
        }
        let end = start.checked_add(len).ok_or(IoError::OutOfRange)?;
        let mut pos = start;
        while pos < end {
            let offset = pos % ss;
            let part = (ss - offset).min(end - pos);
            f(
                self,
                pos / ss,
                offset as usize,
                part as usize,
                (pos - start) as usize,
            )?;
            pos += part;
        }
        Ok(())
    }
}

fn block_bytes(blocks: usize) -> Result<u64, IoError> {
    (blocks as u64)
        .checked_mul(BLOCK as u64)
        .ok_or(IoError::OutOfRange)
}

impl<'b, D: BlockDevice<'b>> embedded_sdmmc::BlockDevice for SdmmcDevice<'b, D> {
    type Error = IoError;

    fn read(&self, blocks: &mut [Block], start_block_idx: BlockIdx) -> Result<(), IoError> {
        let mut inner = self.inner.borrow_mut();
        let len = block_bytes(blocks.len())?;
        inner.sectors(
            start_block_idx.into_bytes(),
            len,
            |inner, sector, off, part, pos| {
                inner.transfer(sector, false)?;
                let src = inner.bounce_mut()?;
                copy_out(&src[off..off + part], blocks, pos);
                Ok(())
            },
        )
    }

    fn write(&self, blocks: &[Block], start_block_idx: BlockIdx) -> Result<(), IoError> {
        let mut inner = self.inner.borrow_mut();
        let len = block_bytes(blocks.len())?;
        let ss = inner.dev.geometry().sector_size as usize;
        inner.sectors(
            start_block_idx.into_bytes(),
            len,
            |inner, sector, off, part, pos| {
                if part != ss {
                    // Part of a sector: read it first so the rest of it survives.
                    inner.transfer(sector, false)?;
                }
                let dst = inner.bounce_mut()?;
                copy_in(blocks, pos, &mut dst[off..off + part]);
                inner.transfer(sector, true)
            },
        )?;
        if inner.dev.geometry().volatile_cache {
            run(&mut inner.dev, Command::Flush).result?;
        }
        Ok(())
    }

    fn num_blocks(&self) -> Result<BlockCount, IoError> {
        let geo = self.inner.borrow().dev.geometry();
        let blocks = geo.capacity() / BLOCK as u64;
        u32::try_from(blocks)
            .map(BlockCount)
            .map_err(|_| IoError::OutOfRange)
    }
}

/// Copy `src` into the blocks, starting `pos` bytes into them.
fn copy_out(src: &[u8], blocks: &mut [Block], pos: usize) {
    for (i, &b) in src.iter().enumerate() {
        let at = pos + i;
        if let Some(block) = blocks.get_mut(at / BLOCK) {
            block.contents[at % BLOCK] = b;
        }
    }
}

/// Copy from the blocks, starting `pos` bytes into them, into `dst`.
fn copy_in(blocks: &[Block], pos: usize, dst: &mut [u8]) {
    for (i, d) in dst.iter_mut().enumerate() {
        let at = pos + i;
        if let Some(block) = blocks.get(at / BLOCK) {
            *d = block.contents[at % BLOCK];
        }
    }
}

/// The error mapping of a [`FromSdmmc`]: from the embedded-sdmmc device's error to ours.
pub type ErrorMap<E> = fn(&E) -> IoError;

/// Maps every error of a device we know nothing about to `IoError::Device(0)`; its detail
/// stays readable through [`FromSdmmc::last_error`].
pub fn opaque_error<E>(_: &E) -> IoError {
    IoError::Device(0)
}

/// Maps embedded-sdmmc's `SdCard` errors: timeouts, CRC mismatches and card errors.
pub fn sdcard_error(e: &embedded_sdmmc::SdCardError) -> IoError {
    use embedded_sdmmc::SdCardError as E;
    match e {
        E::TimeoutReadBuffer
        | E::TimeoutWaitNotBusy
        | E::TimeoutCommand(_)
        | E::TimeoutACommand(_) => IoError::Timeout,
        E::CrcError(..) => IoError::Crc,
        E::ReadError | E::WriteError => IoError::Media,
        _ => IoError::Device(0),
    }
}

/// An embedded-sdmmc block device as one of ours, with a completion ring of `Q` entries.
///
/// Their devices are blocking and synchronous, so every request runs inside `submit` and its
/// completion waits for `poll`, as with our own SD driver; buffers are only used during
/// `submit` (the device implements [`BlockDevice<'b>`] for every `'b`). Sectors are 512 bytes.
/// Data moves through a stack buffer of `CHUNK` blocks (default 8 = 4 KiB), since their API
/// takes `Block`s, not bytes.
///
/// Their trait has no flush, so the geometry reports a volatile cache and [`Command::Flush`]
/// reads one block: the strongest barrier the trait offers. For embedded-sdmmc's own
/// `SdCard` it is a true one, because that driver waits until the card has finished
/// programming before it sends any command. Discard is not supported.
pub struct FromSdmmc<'b, D: embedded_sdmmc::BlockDevice, const Q: usize = 8, const CHUNK: usize = 8>
{
    dev: D,
    geo: Geometry,
    map: ErrorMap<D::Error>,
    done: CompletionRing<'b, Q>,
    last_error: Option<D::Error>,
}

impl<'b, D: embedded_sdmmc::BlockDevice, const Q: usize, const CHUNK: usize>
    FromSdmmc<'b, D, Q, CHUNK>
{
    /// Rejects, at compile time, a depth that [`Geometry::queue_depth`] cannot express.
    const SIZES_FIT: () = assert!(
        Q >= 1 && Q <= u16::MAX as usize && CHUNK >= 1,
        "FromSdmmc needs 1 <= Q <= 65535 and CHUNK >= 1"
    );

    /// Adapt `dev`, asking it for its size; errors map through [`opaque_error`].
    pub fn new(dev: D) -> Result<Self, D::Error> {
        Self::with_error_map(dev, opaque_error::<D::Error>)
    }

    /// Adapt `dev` with an error mapping (e.g. [`sdcard_error`] for their `SdCard`).
    pub fn with_error_map(dev: D, map: ErrorMap<D::Error>) -> Result<Self, D::Error> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SIZES_FIT;
        let blocks = dev.num_blocks()?;
        Ok(FromSdmmc {
            dev,
            geo: Geometry {
                sector_size: BLOCK as u32,
                sector_count: u64::from(blocks.0),
                queue_depth: Q as u16,
                volatile_cache: true,
                fua: false,
                atomic_write_sectors: 0,
                read_only: false,
            },
            map,
            done: CompletionRing::new(),
            last_error: None,
        })
    }

    /// The device's error from the most recent failed request.
    pub fn last_error(&self) -> Option<&D::Error> {
        self.last_error.as_ref()
    }

    /// The adapted device.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// Give back the adapted device.
    pub fn into_inner(self) -> D {
        self.dev
    }

    fn fail(&mut self, e: D::Error) -> IoError {
        let io = (self.map)(&e);
        self.last_error = Some(e);
        io
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let mut blocks: [Block; CHUNK] = core::array::from_fn(|_| Block::new());
        let mut lba = lba;
        for chunk in buf.chunks_mut(BLOCK * CHUNK) {
            let n = chunk.len() / BLOCK;
            let idx = u32::try_from(lba).map_err(|_| IoError::OutOfRange)?;
            let r = self.dev.read(&mut blocks[..n], BlockIdx(idx));
            r.map_err(|e| self.fail(e))?;
            for (dst, src) in chunk.chunks_exact_mut(BLOCK).zip(blocks.iter()) {
                dst.copy_from_slice(&src.contents);
            }
            lba += n as u64;
        }
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError> {
        let mut blocks: [Block; CHUNK] = core::array::from_fn(|_| Block::new());
        let mut lba = lba;
        for chunk in buf.chunks(BLOCK * CHUNK) {
            let n = chunk.len() / BLOCK;
            for (dst, src) in blocks.iter_mut().zip(chunk.chunks_exact(BLOCK)) {
                dst.contents.copy_from_slice(src);
            }
            let idx = u32::try_from(lba).map_err(|_| IoError::OutOfRange)?;
            let r = self.dev.write(&blocks[..n], BlockIdx(idx));
            r.map_err(|e| self.fail(e))?;
            lba += n as u64;
        }
        Ok(())
    }

    fn barrier(&mut self) -> Result<(), IoError> {
        let mut block = [Block::new()];
        let r = self.dev.read(&mut block, BlockIdx(0));
        r.map_err(|e| self.fail(e))
    }

    /// A read after the range check: what a queued read and `read_now` both do.
    fn read_checked(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        bonsaifs::device::check_range(&self.geo, lba, buf.len())?;
        self.read(lba, buf)
    }

    /// A write after the range check: what a queued write and `write_now` both do.
    fn write_checked(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError> {
        bonsaifs::device::check_range(&self.geo, lba, buf.len())?;
        self.write(lba, buf)
    }

    fn execute(&mut self, command: &mut Command<'b>) -> Result<(), IoError> {
        match command {
            Command::Read { lba, buf } => self.read_checked(*lba, buf),
            Command::Write { lba, buf, fua } => {
                self.write_checked(*lba, buf)?;
                if *fua {
                    self.barrier()?;
                }
                Ok(())
            }
            Command::Flush => self.barrier(),
            Command::Discard { .. } => Err(IoError::Unsupported),
        }
    }
}

impl<'b, D: embedded_sdmmc::BlockDevice, const Q: usize, const CHUNK: usize> BlockDevice<'b>
    for FromSdmmc<'b, D, Q, CHUNK>
{
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

    /// Their driver is synchronous anyway: the read goes straight into the caller's buffer,
    /// through the same range check and chunked transfer `submit` uses.
    fn read_now(&mut self, lba: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        Some(self.read_checked(lba, buf))
    }

    /// As [`read_now`](Self::read_now), for a write (never FUA: durable after the next flush,
    /// as a completed queued write).
    fn write_now(&mut self, lba: u64, buf: &[u8]) -> Option<Result<(), IoError>> {
        Some(self.write_checked(lba, buf))
    }
}
