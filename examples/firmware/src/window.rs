//! Block devices that are windows (sector ranges) of one shared device, for boards with a
//! single disk that must hold both the filesystem and the conformance suite's scratch area
//! (`sifive-u-sd`: the SD card is the only disk).
//!
//! The device lives in a `&'static RefCell`; each [`Window`] borrows it for the length of one
//! call. Requests are shifted by the window's start; one that leaves the window is sent on with
//! an address past any device's end, so the device itself completes it with
//! [`IoError::OutOfRange`](bonsaifs::IoError::OutOfRange) and nothing outside the window is
//! touched.
//!
//! Windows must be used one at a time (everything one window submitted is polled before
//! another is used): completions come from the shared device in its own order, and a window
//! only polls while it has requests in flight. `app::run` uses its scratch disk, then its
//! filesystem disk, in that order.

use core::cell::{Ref, RefCell};

use bonsaifs::device::{check_range, BlockDevice, Busy, Command, Completion, Geometry, Request};
use bonsaifs::IoError;

/// Sectors `start .. start + sectors` of the shared device `D`.
#[derive(Debug)]
pub struct Window<D: 'static> {
    dev: &'static RefCell<D>,
    start: u64,
    sectors: u64,
    in_flight: usize,
}

impl<D: BlockDevice<'static>> Window<D> {
    /// The window `start .. start + sectors` of `dev`, if it lies on the device.
    pub fn new(dev: &'static RefCell<D>, start: u64, sectors: u64) -> Option<Self> {
        let end = start.checked_add(sectors)?;
        if sectors == 0 || end > dev.borrow().geometry().sector_count {
            return None;
        }
        Some(Window {
            dev,
            start,
            sectors,
            in_flight: 0,
        })
    }

    /// The shared device (e.g. for its driver's counters).
    pub fn device(&self) -> Ref<'_, D> {
        self.dev.borrow()
    }

    /// The device address of a request at `lba` covering `len` bytes (or `count` sectors):
    /// shifted into the window, or past any device's end if it leaves the window.
    fn shift(&self, lba: u64, count: Option<u64>, len: usize) -> u64 {
        let inside = match count {
            Some(n) => lba.checked_add(n).is_some_and(|end| end <= self.sectors),
            None => check_range(&self.geometry(), lba, len).is_ok(),
        };
        if inside {
            self.start + lba
        } else {
            u64::MAX
        }
    }
}

impl<D: BlockDevice<'static>> BlockDevice<'static> for Window<D> {
    fn geometry(&self) -> Geometry {
        Geometry {
            sector_count: self.sectors,
            ..self.dev.borrow().geometry()
        }
    }

    fn submit(&mut self, req: Request<'static>) -> Result<(), Busy<'static>> {
        let Request { tag, command } = req;
        let (original, command) = match command {
            Command::Read { lba, buf } => {
                let at = self.shift(lba, None, buf.len());
                (Some(lba), Command::Read { lba: at, buf })
            }
            Command::Write { lba, buf, fua } => {
                let at = self.shift(lba, None, buf.len());
                (Some(lba), Command::Write { lba: at, buf, fua })
            }
            Command::Discard { lba, count } => {
                let at = self.shift(lba, Some(count), 0);
                (Some(lba), Command::Discard { lba: at, count })
            }
            Command::Flush => (None, Command::Flush),
        };
        match self.dev.borrow_mut().submit(Request { tag, command }) {
            Ok(()) => {
                self.in_flight += 1;
                Ok(())
            }
            Err(Busy(Request { tag, mut command })) => {
                // Hand the request back as the caller wrote it.
                if let (
                    Some(lba),
                    Command::Read { lba: at, .. }
                    | Command::Write { lba: at, .. }
                    | Command::Discard { lba: at, .. },
                ) = (original, &mut command)
                {
                    *at = lba;
                }
                Err(Busy(Request { tag, command }))
            }
        }
    }

    fn poll(&mut self) -> Option<Completion<'static>> {
        if self.in_flight == 0 {
            return None;
        }
        let c = self.dev.borrow_mut().poll()?;
        self.in_flight -= 1;
        Some(c)
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The device's fast path, shifted like a queued read: a range that leaves the window
    /// goes on past any device's end, so the device refuses it exactly as it completes the
    /// queued request (`OutOfRange`, or `BadBuffer` for a malformed buffer). `None` when the
    /// device has no fast path.
    fn read_now(&mut self, lba: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        let at = self.shift(lba, None, buf.len());
        self.dev.borrow_mut().read_now(at, buf)
    }

    /// As [`read_now`](Self::read_now), for a write.
    fn write_now(&mut self, lba: u64, buf: &[u8]) -> Option<Result<(), IoError>> {
        let at = self.shift(lba, None, buf.len());
        self.dev.borrow_mut().write_now(at, buf)
    }
}
