//! [`Check::FastPath`](super::Check::FastPath): the optional synchronous calls
//! `read_now` / `write_now`, which bypass the request queue.
//!
//! The filesystem moves whole data blocks through them when a device offers them, so a device
//! that gets them wrong loses file data while every queued check passes. The contract
//! (`bonsaifs::device::BlockDevice::read_now`) is: `Some(result)` means the transfer is over,
//! as if the request had been submitted and reaped (same range and buffer rules, same
//! errors); `None` means "use `submit`", and may be answered at any time. So the check
//! accepts `None` wherever it appears, and otherwise holds `Some` to exactly what a queued
//! request would have done. A device that answers `None` to both probes has no fast path and
//! the check is skipped.

use bonsaifs::device::{BlockDevice, IoError};

use super::pattern;
use super::suite::{fail, Fail, Home, Outcome, Suite, Verdict};

use Outcome::{Passed, Skipped};

/// What a fast-path call answered.
type Answer = Option<Result<(), IoError>>;

impl<'b, D: BlockDevice<'b> + ?Sized> Suite<'_, 'b, D> {
    pub(super) fn check_fast_path(&mut self) -> Verdict {
        let read = self.fast_read_matches()?;
        let wrote = if self.geo.read_only {
            self.fast_write_refused()?;
            false
        } else {
            self.fast_write_lands()?
        };
        if !read && !wrote {
            return Ok(Skipped);
        }
        self.fast_refusals(read, wrote)?;
        Ok(Passed)
    }

    /// `read_now` into the buffer at `home` (poisoned first), with sector `lba` first.
    fn read_now(&mut self, home: Home, lba: u64) -> Result<Answer, Fail> {
        let answer = self.with_buf(home, |dev, buf| {
            buf.fill(pattern::POISON);
            dev.read_now(lba, buf)
        })?;
        self.expect_idle()?;
        Ok(answer)
    }

    /// `write_now` of the buffer at `home` with fresh pattern data for `lba`; returns the
    /// answer and the pattern's key.
    fn write_now(&mut self, home: Home, lba: u64) -> Result<(Answer, u64), Fail> {
        let key = self.key();
        let ss = self.geo.sector_size;
        let answer = self.with_buf(home, |dev, buf| {
            pattern::fill(buf, lba, ss, key);
            dev.write_now(lba, buf)
        })?;
        self.expect_idle()?;
        Ok((answer, key))
    }

    /// Whether the buffer at `home` holds the pattern written under `key` for `lba`.
    fn holds_pattern(&mut self, home: Home, lba: u64, key: u64, what: &str) -> Result<(), Fail> {
        let ss = self.geo.sector_size;
        if let Some((i, got, want)) = pattern::first_mismatch(self.peek(home)?, lba, ss, key) {
            fail!("{what} at lba {lba}: byte {i} is {got:#04x}, the data written has {want:#04x}");
        }
        Ok(())
    }

    /// Data written by queued requests comes back through `read_now`, one sector and many.
    /// Returns whether the device offers `read_now`.
    fn fast_read_matches(&mut self) -> Result<bool, Fail> {
        let lba = self.multi;
        let multi_lba = self.geo.sector_count - self.multi;
        if self.geo.read_only {
            // Two views of sectors the suite cannot write: the queued read and the fast one.
            for (home, lba, probe) in [
                (Home::Small(1), lba, Home::Small(0)),
                (Home::Big(1), multi_lba, Home::Big(0)),
            ] {
                let h = self.lone_read_hash(home, lba)?;
                match self.read_now(probe, lba)? {
                    None => return Ok(false),
                    Some(Err(e)) => fail!("read_now at lba {lba} failed: {e:?}"),
                    Some(Ok(())) if pattern::hash(self.peek(probe)?) != h => {
                        fail!("read_now at lba {lba} returned other bytes than a queued read")
                    }
                    Some(Ok(())) => {}
                }
            }
            return Ok(true);
        }
        for (w, r, lba) in [
            (Home::Small(0), Home::Small(1), lba),
            (Home::Big(0), Home::Big(1), multi_lba),
        ] {
            let key = self.write(w, lba, false)?;
            self.drain()?;
            match self.read_now(r, lba)? {
                None => return Ok(false),
                Some(Err(e)) => fail!("read_now at lba {lba} failed: {e:?}"),
                Some(Ok(())) => self.holds_pattern(r, lba, key, "read_now")?,
            }
        }
        Ok(true)
    }

    /// Data written through `write_now` comes back through queued reads, one sector and many.
    /// Returns whether the device offers `write_now`.
    fn fast_write_lands(&mut self) -> Result<bool, Fail> {
        for (w, r, lba) in [
            (Home::Small(0), Home::Small(1), self.multi + 1),
            (Home::Big(0), Home::Big(1), 0),
        ] {
            match self.write_now(w, lba)? {
                (None, _) => return Ok(false),
                (Some(Err(e)), _) => fail!("write_now at lba {lba} failed: {e:?}"),
                (Some(Ok(())), key) => {
                    self.read_pattern(r, lba, key)?;
                    self.drain()?;
                }
            }
        }
        Ok(true)
    }

    /// On a read-only device `write_now` declines or answers `ReadOnly`, and changes nothing.
    fn fast_write_refused(&mut self) -> Result<(), Fail> {
        let lba = self.multi + 1;
        let before = self.lone_read_hash(Home::Small(1), lba)?;
        match self.write_now(Home::Small(0), lba)?.0 {
            None | Some(Err(IoError::ReadOnly)) => {}
            Some(other) => fail!("write_now on a read-only device answered {other:?}"),
        }
        if self.lone_read_hash(Home::Small(1), lba)? != before {
            fail!("write_now on a read-only device changed lba {lba}");
        }
        Ok(())
    }

    /// Out-of-range and partial-sector transfers: `None`, or the error a queued request gets;
    /// a refused write leaves the sectors it named as they were.
    fn fast_refusals(&mut self, read: bool, wrote: bool) -> Result<(), Fail> {
        let count = self.geo.sector_count;
        let last = self.last();
        let ranges = [
            (Home::Small(0), count, IoError::OutOfRange),
            (Home::Big(0), last, IoError::OutOfRange),
            (Home::Small(0), u64::MAX, IoError::OutOfRange),
            (Home::Odd, 0, IoError::BadBuffer),
            (Home::Empty, 0, IoError::BadBuffer),
        ];
        if read {
            for (home, lba, want) in ranges {
                match self.read_now(home, lba)? {
                    None => {}
                    Some(Err(e)) if e == want => {}
                    Some(other) => fail!(
                        "read_now at lba {lba} ({home:?} buffer) answered {other:?}, not {want:?}"
                    ),
                }
            }
        }
        if wrote {
            // The sectors a bad write names (the last one, sector 0) must keep what they hold.
            let keep_last = self.write(Home::Small(1), last, false)?;
            self.drain()?;
            let keep_first = self.write(Home::Small(1), 0, false)?;
            self.drain()?;
            for (home, lba, want) in ranges {
                match self.write_now(home, lba)?.0 {
                    None => {}
                    Some(Err(e)) if e == want => {}
                    Some(other) => fail!(
                        "write_now at lba {lba} ({home:?} buffer) answered {other:?}, not {want:?}"
                    ),
                }
            }
            self.read_pattern(Home::Small(1), last, keep_last)?;
            self.drain()?;
            self.read_pattern(Home::Small(1), 0, keep_first)?;
            self.drain()?;
        }
        Ok(())
    }
}
