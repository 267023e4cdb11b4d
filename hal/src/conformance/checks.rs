//! The checks themselves, in the order they run. Each one leaves the device idle when it
//! passes; [`Suite::step`](super::suite) reaps whatever a failing one left in flight.

use bonsaifs::device::{BlockDevice, CommandKind, IoError};

use super::pattern;
use super::suite::{fail, Expect, Home, Outcome, Suite, Verdict, Verify, FLOOD_TAG};
use super::{MAX_FLOOD, MAX_SMALL};

use Outcome::{Passed, Skipped};

impl<'b, D: BlockDevice<'b> + ?Sized> Suite<'_, 'b, D> {
    // ------------------------------------------------------------------ request builders

    fn read_exp(
        &mut self,
        home: Home,
        lba: u64,
        result: Result<(), IoError>,
        verify: Verify,
    ) -> Expect {
        Expect {
            tag: self.tag(),
            kind: CommandKind::Read,
            lba,
            count: 0,
            home,
            result,
            verify,
            any_result: false,
        }
    }

    /// A write of fresh pattern data; returns it and the pattern's key.
    fn write_exp(
        &mut self,
        home: Home,
        lba: u64,
        fua: bool,
        result: Result<(), IoError>,
    ) -> (Expect, u64) {
        let key = self.key();
        let exp = Expect {
            tag: self.tag(),
            kind: if fua {
                CommandKind::WriteFua
            } else {
                CommandKind::Write
            },
            lba,
            count: 0,
            home,
            result,
            verify: Verify::Pattern { lba, key },
            any_result: false,
        };
        (exp, key)
    }

    fn flush_exp(&mut self) -> Expect {
        Expect {
            tag: self.tag(),
            kind: CommandKind::Flush,
            lba: 0,
            count: 0,
            home: Home::None,
            result: Ok(()),
            verify: Verify::Nothing,
            any_result: false,
        }
    }

    /// Submits a write of fresh pattern data; returns the pattern's key.
    pub(super) fn write(
        &mut self,
        home: Home,
        lba: u64,
        fua: bool,
    ) -> Result<u64, super::suite::Fail> {
        let (exp, key) = self.write_exp(home, lba, fua, Ok(()));
        self.submit(exp)?;
        Ok(key)
    }

    /// Submits a read expecting the pattern written under `key`.
    pub(super) fn read_pattern(
        &mut self,
        home: Home,
        lba: u64,
        key: u64,
    ) -> Result<(), super::suite::Fail> {
        let exp = self.read_exp(home, lba, Ok(()), Verify::Pattern { lba, key });
        self.submit(exp)
    }

    /// Reads alone (nothing else in flight) and returns a hash of what came back.
    pub(super) fn lone_read_hash(
        &mut self,
        home: Home,
        lba: u64,
    ) -> Result<u64, super::suite::Fail> {
        let exp = self.read_exp(home, lba, Ok(()), Verify::Nothing);
        self.submit(exp)?;
        self.drain()?;
        Ok(pattern::hash(self.peek(home)?))
    }

    /// Writes at `lba` from `w` and reads back into `r`; on a read-only device, reads twice
    /// and compares.
    fn write_read(&mut self, w: Home, r: Home, lba: u64, fua: bool) -> Verdict {
        if self.geo.read_only {
            let h = self.lone_read_hash(r, lba)?;
            let exp = self.read_exp(r, lba, Ok(()), Verify::Hash(h));
            self.submit(exp)?;
        } else {
            let key = self.write(w, lba, fua)?;
            self.drain()?;
            self.read_pattern(r, lba, key)?;
        }
        self.drain()?;
        Ok(Passed)
    }

    pub(super) fn last(&self) -> u64 {
        self.geo.sector_count.saturating_sub(1)
    }

    /// How many sectors [`Check::OutOfOrder`](super::Check::OutOfOrder) spreads its
    /// requests over, and the `i`-th of them: between the two multi-sector regions.
    fn spread(&self) -> usize {
        let middle = self.geo.sector_count.saturating_sub(2 * self.multi);
        self.n_small.min(MAX_SMALL).min(middle as usize)
    }

    fn spread_lba(&self, i: usize) -> u64 {
        let middle = self.geo.sector_count.saturating_sub(2 * self.multi);
        let stride = (middle / self.spread().max(1) as u64).max(1);
        self.multi + i as u64 * stride
    }

    // ------------------------------------------------------------------ the checks

    pub(super) fn check_geometry(&mut self) -> Verdict {
        self.fits()?;
        let g = self.geo;
        if g.queue_depth == 0 {
            fail!("queue depth 0");
        }
        let need = 2 * self.multi + 2;
        if g.sector_count < need {
            fail!(
                "device too small for the checks: {} sectors, need at least {need}",
                g.sector_count
            );
        }
        if g.capacity() != g.sector_count * u64::from(g.sector_size) {
            fail!("capacity overflows");
        }
        Ok(Passed)
    }

    pub(super) fn check_idle_poll(&mut self) -> Verdict {
        self.expect_idle()?;
        Ok(Passed)
    }

    pub(super) fn check_single_first(&mut self) -> Verdict {
        self.write_read(Home::Small(0), Home::Small(1), 0, false)
    }

    pub(super) fn check_single_last(&mut self) -> Verdict {
        let lba = self.last();
        self.write_read(Home::Small(0), Home::Small(1), lba, false)
    }

    pub(super) fn check_multi_first(&mut self) -> Verdict {
        self.write_read(Home::Big(0), Home::Big(1), 0, false)
    }

    pub(super) fn check_multi_last(&mut self) -> Verdict {
        let lba = self.geo.sector_count - self.multi;
        self.write_read(Home::Big(0), Home::Big(1), lba, false)
    }

    pub(super) fn check_write_fua(&mut self) -> Verdict {
        if self.geo.read_only || !self.geo.fua {
            return Ok(Skipped);
        }
        let lba = self.multi;
        self.write_read(Home::Big(0), Home::Big(1), lba, true)?;
        let lba = self.last();
        self.write_read(Home::Small(0), Home::Small(1), lba, true)
    }

    pub(super) fn check_flush(&mut self) -> Verdict {
        // Alone.
        let f = self.flush_exp();
        self.submit(f)?;
        self.drain()?;
        if self.geo.read_only {
            // Two at once, if the queue allows.
            for _ in 0..usize::from(self.geo.queue_depth).min(2) {
                let f = self.flush_exp();
                self.submit(f)?;
            }
            self.drain()?;
            return Ok(Passed);
        }
        let n = self.spread().min(4);
        let mut keys = [0u64; 4];
        // After writes completed: the order the durability contract prescribes.
        for (i, key) in keys.iter_mut().enumerate().take(n) {
            let lba = self.spread_lba(i);
            *key = self.write(Home::Small(i), lba, false)?;
        }
        self.drain()?;
        let f = self.flush_exp();
        self.submit(f)?;
        self.drain()?;
        // Queued among writes in flight: must complete too (it covers nothing in particular).
        for (i, key) in keys.iter_mut().enumerate().take(n) {
            let lba = self.spread_lba(i);
            *key = self.write(Home::Small(i), lba, false)?;
            if i == n / 2 {
                let f = self.flush_exp();
                self.submit(f)?;
            }
        }
        self.drain()?;
        for (i, key) in keys.iter().enumerate().take(n) {
            let lba = self.spread_lba(i);
            self.read_pattern(Home::Small(i), lba, *key)?;
        }
        self.drain()?;
        Ok(Passed)
    }

    pub(super) fn check_out_of_range(&mut self) -> Verdict {
        let count = self.geo.sector_count;
        let last = self.last();
        let oor = Err(IoError::OutOfRange);
        // Reads: just past the end, straddling the end, and LBAs whose byte offset overflows.
        let bad_reads = [
            (Home::Small(0), count),
            (Home::Big(1), last),
            (Home::Small(1), u64::MAX),
        ];
        for (home, lba) in bad_reads {
            let exp = self.read_exp(home, lba, oor, Verify::Nothing);
            self.submit(exp)?;
        }
        self.drain()?;
        let exp = self.read_exp(Home::Small(0), u64::MAX / 2, oor, Verify::Nothing);
        self.submit(exp)?;
        self.drain()?;
        if self.geo.read_only {
            return Ok(Passed);
        }
        // A write straddling the end must fail without touching the last sector.
        let key = self.write(Home::Small(0), last, false)?;
        self.drain()?;
        let (exp, _) = self.write_exp(Home::Big(0), last, false, oor);
        self.submit(exp)?;
        let (exp, _) = self.write_exp(Home::Small(1), count, false, oor);
        self.submit(exp)?;
        self.drain()?;
        self.read_pattern(Home::Small(0), last, key)?;
        self.drain()?;
        Ok(Passed)
    }

    pub(super) fn check_bad_buffer(&mut self) -> Verdict {
        let bad = Err(IoError::BadBuffer);
        let exp = self.read_exp(Home::Odd, 0, bad, Verify::Nothing);
        self.submit(exp)?;
        let exp = self.read_exp(Home::Empty, 0, bad, Verify::Nothing);
        self.submit(exp)?;
        self.drain()?;
        if !self.geo.read_only {
            let (exp, _) = self.write_exp(Home::Odd, 0, false, bad);
            self.submit(exp)?;
            self.drain()?;
        }
        Ok(Passed)
    }

    pub(super) fn check_discard(&mut self) -> Verdict {
        let lba = self.spread_lba(0);
        let discard = |s: &mut Self, lba: u64, count: u64, result| Expect {
            tag: s.tag(),
            kind: CommandKind::Discard,
            lba,
            count,
            home: Home::None,
            result,
            verify: Verify::Nothing,
            any_result: false,
        };
        // Probe: a device without discard answers Unsupported (or, read-only, ReadOnly).
        let probe = Expect {
            any_result: true,
            ..discard(self, lba, 2, Ok(()))
        };
        self.submit(probe)?;
        self.drain()?;
        match self.last_result() {
            Ok(()) if !self.geo.read_only => {}
            Err(IoError::ReadOnly) if self.geo.read_only => return Ok(Passed),
            Err(IoError::Unsupported) => return Ok(Skipped),
            other => fail!("discard of 2 sectors at lba {lba} answered {other:?}"),
        }
        // Range checks.
        let count = self.geo.sector_count;
        let oor = Err(IoError::OutOfRange);
        let exp = discard(self, count - 1, 2, oor);
        self.submit(exp)?;
        let exp = discard(self, count, 1, oor);
        self.submit(exp)?;
        let exp = discard(self, u64::MAX, 2, oor);
        self.submit(exp)?;
        self.drain()?;
        // The discarded sectors take new data.
        let key = self.write(Home::Small(0), lba, false)?;
        self.drain()?;
        self.read_pattern(Home::Small(1), lba, key)?;
        self.drain()?;
        Ok(Passed)
    }

    pub(super) fn check_queue_full(&mut self) -> Verdict {
        let qd = usize::from(self.geo.queue_depth);
        if qd > MAX_FLOOD {
            return Ok(Skipped);
        }
        // Probes meet the full queue: writes of fresh data (or, read-only, reads of a sector
        // whose contents a lone read told first).
        let ro_hash = if self.geo.read_only {
            self.lone_read_hash(Home::Small(0), self.spread_lba(0))?
        } else {
            0
        };
        // Fill the advertised depth with flushes; none may be refused.
        let mut flood = 0;
        while flood < qd {
            let exp = self.flood_exp(flood);
            let req = self.request(&exp)?;
            if self.submit_once(req, &exp)?.is_some() {
                fail!("Busy after {flood} requests, but the device advertises queue depth {qd}");
            }
            flood += 1;
        }
        // Offer probes until one meets Busy. A device may take more than it advertises;
        // then fill it up with flushes again and offer the next probe.
        let mut accepted = qd;
        let mut j = 0;
        let (handed_back, probe, key) = loop {
            let (probe, key) = self.probe_exp(j, ro_hash);
            let req = self.request(&probe)?;
            if let Some(r) = self.submit_once(req, &probe)? {
                break (r, probe, key);
            }
            accepted += 1;
            j += 1;
            if j >= self.spread() {
                fail!("the device took {accepted} requests (advertised depth {qd}) without Busy");
            }
            loop {
                if flood >= MAX_FLOOD {
                    fail!(
                        "the device took {accepted} requests (advertised depth {qd}) without Busy"
                    );
                }
                let exp = self.flood_exp(flood);
                let req = self.request(&exp)?;
                if self.submit_once(req, &exp)?.is_some() {
                    break;
                }
                flood += 1;
                accepted += 1;
            }
        };
        self.report.queue_accepted = accepted;
        let dev = self.dev_in_flight();
        if dev != self.live() {
            fail!(
                "queue full: the device reports {dev} in flight, expected {}",
                self.live()
            );
        }
        // Drain everything; each flush exactly once.
        self.drain()?;
        // The handed-back request goes in as it came back and must do its job.
        self.resubmit(handed_back, &probe)?;
        self.drain()?;
        if !self.geo.read_only {
            self.read_pattern(probe.home, probe.lba, key)?;
            self.drain()?;
        }
        Ok(Passed)
    }

    /// Flush number `i` of those that fill the queue.
    fn flood_exp(&mut self, i: usize) -> Expect {
        Expect {
            tag: FLOOD_TAG + i as u32,
            ..self.flush_exp()
        }
    }

    /// Probe number `j` of the queue-full check, and the key of the data it writes.
    fn probe_exp(&mut self, j: usize, ro_hash: u64) -> (Expect, u64) {
        if self.geo.read_only {
            let lba = self.spread_lba(0);
            (
                self.read_exp(Home::Small(j), lba, Ok(()), Verify::Hash(ro_hash)),
                0,
            )
        } else {
            let lba = self.spread_lba(j);
            self.write_exp(Home::Small(j), lba, false, Ok(()))
        }
    }

    pub(super) fn check_out_of_order(&mut self) -> Verdict {
        let k = self.spread();
        let mut keys = [0u64; MAX_SMALL];
        if self.geo.read_only {
            for (i, key) in keys.iter_mut().enumerate().take(k) {
                *key = self.lone_read_hash(Home::Small(i), self.spread_lba(i))?;
            }
            for (i, key) in keys.iter().enumerate().take(k) {
                let exp = self.read_exp(
                    Home::Small(i),
                    self.spread_lba(i),
                    Ok(()),
                    Verify::Hash(*key),
                );
                self.submit(exp)?;
            }
            self.drain()?;
            return Ok(Passed);
        }
        // All writes in flight at once (as far as the queue allows).
        for (i, key) in keys.iter_mut().enumerate().take(k) {
            *key = self.write(Home::Small(i), self.spread_lba(i), false)?;
        }
        self.drain()?;
        // All reads, with a flush among them.
        for (i, key) in keys.iter().enumerate().take(k) {
            self.read_pattern(Home::Small(i), self.spread_lba(i), *key)?;
            if i == k / 2 {
                let f = self.flush_exp();
                self.submit(f)?;
            }
        }
        self.drain()?;
        // Mixed: rewrite the even sectors while reading the odd ones.
        for (i, key) in keys.iter_mut().enumerate().take(k) {
            let lba = self.spread_lba(i);
            if i % 2 == 0 {
                *key = self.write(Home::Small(i), lba, false)?;
            } else {
                self.read_pattern(Home::Small(i), lba, *key)?;
            }
        }
        self.drain()?;
        for (i, key) in keys.iter().enumerate().take(k).step_by(2) {
            self.read_pattern(Home::Small(i), self.spread_lba(i), *key)?;
        }
        self.drain()?;
        Ok(Passed)
    }

    pub(super) fn check_read_only(&mut self) -> Verdict {
        if !self.geo.read_only {
            return Ok(Skipped);
        }
        let ro = Err(IoError::ReadOnly);
        let last = self.last();
        let h0 = self.lone_read_hash(Home::Small(0), 0)?;
        let hl = self.lone_read_hash(Home::Small(1), last)?;
        let (exp, _) = self.write_exp(Home::Small(0), 0, false, ro);
        self.submit(exp)?;
        let multi_lba = self.geo.sector_count - self.multi;
        let (exp, _) = self.write_exp(Home::Big(0), multi_lba, false, ro);
        self.submit(exp)?;
        let (exp, _) = self.write_exp(Home::Small(1), last, true, ro);
        self.submit(exp)?;
        self.drain()?;
        let exp = self.read_exp(Home::Small(0), 0, Ok(()), Verify::Hash(h0));
        self.submit(exp)?;
        let exp = self.read_exp(Home::Small(1), last, Ok(()), Verify::Hash(hl));
        self.submit(exp)?;
        self.drain()?;
        Ok(Passed)
    }
}
