//! The suite's engine: the buffer pool cut from the scratch region, the table of requests in
//! flight, and bounded submit / wait / drain that match every completion to its request.

use bonsaifs::device::{
    BlockDevice, Busy, Command, CommandKind, Completion, Geometry, IoError, Request, Tag,
};

use super::message::Message;
use super::pattern;
use super::{multi_sectors, Check, Config, Failure, Report, MAX_FLOOD, MAX_SMALL};

/// Why a check failed.
pub(super) struct Fail(pub(super) Message);

/// Returns `Err(Fail)` with a formatted message from the enclosing function.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::conformance::suite::Fail(
            $crate::conformance::message::Message::format(format_args!($($arg)*)),
        ))
    };
}
pub(super) use fail;

/// A check's verdict when it did not fail.
pub(super) enum Outcome {
    Passed,
    Skipped,
}

/// What a check returns.
pub(super) type Verdict = Result<Outcome, Fail>;

/// Where a request's buffer lives between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Home {
    /// The request carries no buffer (flush).
    None,
    /// A fresh empty slice, dropped on return.
    Empty,
    /// Multi-sector buffer 0 (written from) or 1 (read into).
    Big(usize),
    /// One-sector buffer `i`.
    Small(usize),
    /// The half-sector buffer.
    Odd,
}

/// What the suite checks in a returned buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verify {
    /// Nothing.
    Nothing,
    /// The pattern for sectors from `lba` under `key` (a read's data, or a write's buffer that
    /// the device must leave intact).
    Pattern { lba: u64, key: u64 },
    /// The same bytes a lone read of these sectors returned (read-only devices).
    Hash(u64),
}

/// A request the suite has submitted (or is about to), as it expects it back.
#[derive(Debug, Clone, Copy)]
pub(super) struct Expect {
    pub tag: Tag,
    pub kind: CommandKind,
    pub lba: u64,
    /// Sectors of a discard (unused otherwise).
    pub count: u64,
    pub home: Home,
    pub result: Result<(), IoError>,
    /// Accept any result (recorded in [`Suite::last_result`]); used to probe optional
    /// commands.
    pub any_result: bool,
    pub verify: Verify,
}

/// An [`Expect`] in flight, with the identity of its buffer.
#[derive(Debug, Clone, Copy)]
struct Entry {
    exp: Expect,
    /// Submission order, for the out-of-order statistic.
    seq: u64,
    addr: usize,
    len: usize,
}

/// Requests tracked at once (buffered requests; flood flushes are in the bitmap).
const TRACK: usize = MAX_SMALL + 8;
const FLOOD_WORDS: usize = MAX_FLOOD / 64;
/// Tags `FLOOD_TAG .. FLOOD_TAG + MAX_FLOOD` are the flushes that fill the queue.
pub(super) const FLOOD_TAG: Tag = 0xF100_0000;

/// The buffers cut from the scratch region.
struct Pool<'b> {
    big: [Option<&'b mut [u8]>; 2],
    small: [Option<&'b mut [u8]>; MAX_SMALL],
    odd: Option<&'b mut [u8]>,
}

impl<'b> Pool<'b> {
    const fn empty() -> Self {
        Self {
            big: [None, None],
            small: [const { None }; MAX_SMALL],
            odd: None,
        }
    }

    /// Cuts `scratch` into two `multi`-sector buffers, up to [`MAX_SMALL`] one-sector buffers
    /// and a half-sector one; returns the number of one-sector buffers.
    fn carve(&mut self, scratch: &'b mut [u8], ss: usize, multi: usize) -> usize {
        let big = multi * ss;
        let Some((b0, rest)) = scratch.split_at_mut_checked(big) else {
            return 0;
        };
        let Some((b1, mut rest)) = rest.split_at_mut_checked(big) else {
            return 0;
        };
        self.big = [Some(b0), Some(b1)];
        let mut n = 0;
        while n < MAX_SMALL && rest.len() >= ss + ss / 2 {
            let (s, r) = rest.split_at_mut(ss);
            if let Some(slot) = self.small.get_mut(n) {
                *slot = Some(s);
            }
            rest = r;
            n += 1;
        }
        if let Some((odd, _)) = rest.split_at_mut_checked(ss / 2) {
            self.odd = Some(odd);
        }
        n
    }

    fn slot(&mut self, home: Home) -> Option<&mut Option<&'b mut [u8]>> {
        match home {
            Home::None | Home::Empty => None,
            Home::Big(i) => self.big.get_mut(i),
            Home::Small(i) => self.small.get_mut(i),
            Home::Odd => Some(&mut self.odd),
        }
    }
}

/// The running suite.
pub(super) struct Suite<'d, 'b, D: BlockDevice<'b> + ?Sized> {
    dev: &'d mut D,
    pub geo: Geometry,
    pub cfg: Config,
    pool: Pool<'b>,
    entries: [Option<Entry>; TRACK],
    flood: [u64; FLOOD_WORDS],
    /// Requests submitted and not yet completed (entries plus flood flushes).
    live: usize,
    seq: u64,
    next_tag: u32,
    next_gen: u32,
    /// Sectors per multi-sector transfer.
    pub multi: u64,
    /// One-sector buffers available.
    pub n_small: usize,
    /// Scratch was large enough and the device big enough for every check.
    fits: Result<(), Message>,
    /// The result of the last tracked completion.
    last_result: Result<(), IoError>,
    pub report: Report,
}

impl<'d, 'b, D: BlockDevice<'b> + ?Sized> Suite<'d, 'b, D> {
    pub fn new(dev: &'d mut D, scratch: &'b mut [u8], cfg: Config) -> Self {
        let geo = dev.geometry();
        let ss = geo.sector_size as usize;
        let multi = multi_sectors(ss, cfg.multi_bytes);
        let mut pool = Pool::empty();
        let mut fits = Ok(());
        let mut n_small = 0;
        if ss != 512 && ss != 4096 {
            fits = Err(Message::format(format_args!(
                "sector size {ss} is neither 512 nor 4096"
            )));
        } else {
            n_small = pool.carve(scratch, ss, multi);
            let need = (2 * multi + 2) * ss + ss / 2;
            if n_small < 2 || pool.odd.is_none() {
                fits = Err(Message::format(format_args!(
                    "scratch region too small: need at least {need} bytes for {ss}-byte sectors"
                )));
            }
        }
        Self {
            dev,
            geo,
            cfg,
            pool,
            entries: [None; TRACK],
            flood: [0; FLOOD_WORDS],
            live: 0,
            seq: 0,
            next_tag: 0,
            next_gen: 0,
            multi: multi as u64,
            n_small,
            fits,
            last_result: Ok(()),
            report: Report::default(),
        }
    }

    /// Runs every check in order and returns the report.
    pub fn run_all(mut self) -> Report {
        self.step(Check::Geometry, Self::check_geometry);
        self.step(Check::IdlePoll, Self::check_idle_poll);
        self.step(Check::SingleFirst, Self::check_single_first);
        self.step(Check::SingleLast, Self::check_single_last);
        self.step(Check::MultiFirst, Self::check_multi_first);
        self.step(Check::MultiLast, Self::check_multi_last);
        self.step(Check::WriteFua, Self::check_write_fua);
        self.step(Check::Flush, Self::check_flush);
        self.step(Check::OutOfRange, Self::check_out_of_range);
        self.step(Check::BadBuffer, Self::check_bad_buffer);
        self.step(Check::Discard, Self::check_discard);
        self.step(Check::QueueFull, Self::check_queue_full);
        self.step(Check::OutOfOrder, Self::check_out_of_order);
        self.step(Check::ReadOnly, Self::check_read_only);
        self.step(Check::FastPath, Self::check_fast_path);
        self.report
    }

    /// Runs one check, records its verdict, and brings the device back to idle. If that is
    /// impossible (requests lost), or the geometry check failed, the rest is aborted.
    fn step(&mut self, check: Check, f: fn(&mut Self) -> Verdict) {
        if self.report.aborted {
            return;
        }
        let verdict = f(self);
        // The geometry check submits nothing; an idle device is the next check's subject.
        let settled = if check == Check::Geometry {
            Ok(())
        } else {
            self.settle()
        };
        if settled.is_err() || (check == Check::Geometry && verdict.is_err()) {
            self.report.aborted = true;
        }
        // A check that passed but left the device busy has failed after all.
        let verdict = match (verdict, settled) {
            (Ok(_), Err(fail)) => Err(fail),
            (v, _) => v,
        };
        match verdict {
            Ok(Outcome::Passed) => {
                self.report.run += 1;
                self.report.passed += 1;
            }
            Ok(Outcome::Skipped) => self.report.skipped += 1,
            Err(Fail(message)) => {
                self.report.run += 1;
                self.report.failed += 1;
                if self.report.first_failure.is_none() {
                    self.report.first_failure = Some(Failure { check, message });
                }
            }
        }
    }

    /// After a check: reap whatever is still in flight (verdicts no longer matter) until the
    /// device is idle. Bounded: at most [`Config::poll_limit`] empty polls in a row, and a
    /// limited number of completions that match nothing.
    fn settle(&mut self) -> Result<(), Fail> {
        let mut idle = 0u64;
        let mut unmatched = 0usize;
        while self.live > 0 || self.dev.in_flight() > 0 {
            match self.dev.poll() {
                Some(c) => {
                    idle = 0;
                    let before = self.live;
                    let _ = self.complete(c);
                    if self.live == before {
                        unmatched += 1;
                        if unmatched > TRACK + MAX_FLOOD {
                            fail!("the device keeps returning completions nobody submitted");
                        }
                    }
                }
                None if self.dev.in_flight() == 0 => fail!(
                    "{} request(s) never completed and the device reports nothing in flight",
                    self.live
                ),
                None => {
                    idle += 1;
                    if idle >= self.cfg.poll_limit {
                        fail!(
                            "the device did not become idle: {} request(s) outstanding, it \
                             reports {} in flight",
                            self.live,
                            self.dev.in_flight()
                        );
                    }
                }
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ helpers for checks

    /// Whether the device's size and the scratch region allow the checks.
    pub fn fits(&self) -> Result<(), Fail> {
        self.fits.map_err(Fail)
    }

    /// A fresh tag: unique among everything in flight, deliberately not sequential.
    pub fn tag(&mut self) -> Tag {
        let t = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        0x7A00_0000 | (t.wrapping_mul(0x9E37) & 0xFFFF)
    }

    /// A fresh pattern key: every write gets new data.
    pub fn key(&mut self) -> u64 {
        self.next_gen = self.next_gen.wrapping_add(1);
        (u64::from(self.cfg.seed) << 32) | u64::from(self.next_gen)
    }

    /// What the device answered to the last request it completed.
    pub fn last_result(&self) -> Result<(), IoError> {
        self.last_result
    }

    /// Requests in flight, as the suite counts them.
    pub fn live(&self) -> usize {
        self.live
    }

    /// The device's own count of requests in flight.
    pub fn dev_in_flight(&self) -> usize {
        self.dev.in_flight()
    }

    /// Takes the buffer at `home`, lets `f` use it with the device (for the calls that bypass
    /// the request queue, `read_now` / `write_now`), and puts it back.
    pub fn with_buf<R>(
        &mut self,
        home: Home,
        f: impl FnOnce(&mut D, &mut [u8]) -> R,
    ) -> Result<R, Fail> {
        let buf = self.take(home)?;
        let r = f(self.dev, buf);
        self.put(home, buf);
        Ok(r)
    }

    /// Takes the buffer living at `home` out of the pool.
    pub fn take(&mut self, home: Home) -> Result<&'b mut [u8], Fail> {
        if home == Home::Empty {
            return Ok(Default::default());
        }
        match self.pool.slot(home).and_then(Option::take) {
            Some(b) => Ok(b),
            None => {
                fail!("buffer {home:?} is missing (lost by an earlier failure or still in flight)")
            }
        }
    }

    /// Puts a buffer back at `home`.
    pub fn put(&mut self, home: Home, buf: &'b mut [u8]) {
        if let Some(slot) = self.pool.slot(home) {
            *slot = Some(buf);
        }
    }

    /// The bytes of the buffer at `home` (after its request completed).
    pub fn peek(&mut self, home: Home) -> Result<&[u8], Fail> {
        match self.pool.slot(home).and_then(|s| s.as_deref()) {
            Some(b) => Ok(b),
            None => fail!("buffer {home:?} is missing"),
        }
    }

    /// Builds a request for `exp`, taking its buffer (filled with the write pattern or the
    /// read poison) from the pool.
    pub fn request(&mut self, exp: &Expect) -> Result<Request<'b>, Fail> {
        let ss = self.geo.sector_size;
        let command = match exp.kind {
            CommandKind::Flush => Command::Flush,
            CommandKind::Read => {
                let buf = self.take(exp.home)?;
                buf.fill(pattern::POISON);
                Command::Read { lba: exp.lba, buf }
            }
            CommandKind::Write | CommandKind::WriteFua => {
                let buf = self.take(exp.home)?;
                if let Verify::Pattern { lba, key } = exp.verify {
                    pattern::fill(buf, lba, ss, key);
                }
                Command::Write {
                    lba: exp.lba,
                    buf,
                    fua: exp.kind == CommandKind::WriteFua,
                }
            }
            CommandKind::Discard => Command::Discard {
                lba: exp.lba,
                count: exp.count,
            },
        };
        Ok(Request {
            tag: exp.tag,
            command,
        })
    }

    /// Submits `req` once. Returns the request if the device answered `Busy`, after checking
    /// that it came back intact.
    pub fn submit_once(
        &mut self,
        req: Request<'b>,
        exp: &Expect,
    ) -> Result<Option<Request<'b>>, Fail> {
        let (addr, len) = buf_identity(&req.command);
        let slot = if is_flood(exp.tag) {
            None
        } else {
            match self.entries.iter().position(Option::is_none) {
                Some(i) => Some(i),
                None => fail!("internal: more than {TRACK} requests tracked"),
            }
        };
        match self.dev.submit(req) {
            Ok(()) => {
                self.seq += 1;
                let entry = Entry {
                    exp: *exp,
                    seq: self.seq,
                    addr,
                    len,
                };
                match slot {
                    Some(i) => {
                        if let Some(e) = self.entries.get_mut(i) {
                            *e = Some(entry);
                        }
                    }
                    None => self.flood_set(exp.tag),
                }
                self.live += 1;
                self.report.max_in_flight = self.report.max_in_flight.max(self.live);
                let dev = self.dev.in_flight();
                if dev != self.live {
                    fail!(
                        "after submitting tag {:#x} the device reports {dev} in flight, expected {}",
                        exp.tag,
                        self.live
                    );
                }
                Ok(None)
            }
            Err(Busy(r)) => {
                self.check_intact(&r, exp, addr, len)?;
                Ok(Some(r))
            }
        }
    }

    /// Checks a request handed back with `Busy`: same tag, kind, sector, buffer and contents.
    fn check_intact(
        &mut self,
        r: &Request<'b>,
        exp: &Expect,
        addr: usize,
        len: usize,
    ) -> Result<(), Fail> {
        if r.tag != exp.tag || r.command.kind() != exp.kind {
            fail!(
                "Busy handed back tag {:#x} {:?}, but tag {:#x} {:?} was submitted",
                r.tag,
                r.command.kind(),
                exp.tag,
                exp.kind
            );
        }
        let (a, l) = buf_identity(&r.command);
        if a != addr || l != len {
            fail!("Busy handed back tag {:#x} with a different buffer", r.tag);
        }
        match &r.command {
            Command::Read { lba, .. } | Command::Write { lba, .. } if *lba != exp.lba => {
                fail!(
                    "Busy handed back tag {:#x} for lba {lba}, submitted for lba {}",
                    r.tag,
                    exp.lba
                )
            }
            Command::Write { buf, .. } => {
                if let Verify::Pattern { lba, key } = exp.verify {
                    if let Some((i, got, want)) =
                        pattern::first_mismatch(buf, lba, self.geo.sector_size, key)
                    {
                        fail!(
                            "Busy handed back tag {:#x} with its data changed at byte {i} \
                             ({got:#04x}, was {want:#04x})",
                            r.tag
                        );
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Submits the request described by `exp`; while the queue is full, reaps completions and
    /// retries.
    pub fn submit(&mut self, exp: Expect) -> Result<(), Fail> {
        let req = self.request(&exp)?;
        self.resubmit(req, &exp)
    }

    /// Submits a built request (e.g. one that `Busy` handed back earlier); while the queue is
    /// full, reaps completions and retries.
    pub fn resubmit(&mut self, mut req: Request<'b>, exp: &Expect) -> Result<(), Fail> {
        loop {
            match self.submit_once(req, exp)? {
                None => return Ok(()),
                Some(r) => {
                    req = r;
                    if self.live == 0 {
                        give_back(self, req, exp.home);
                        fail!(
                            "submit answered Busy with nothing in flight (tag {:#x})",
                            exp.tag
                        );
                    }
                    if let Err(e) = self.wait_one() {
                        give_back(self, req, exp.home);
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Polls (bounded) until one completion arrives and checks it.
    pub fn wait_one(&mut self) -> Result<(), Fail> {
        for _ in 0..self.cfg.poll_limit {
            if let Some(c) = self.dev.poll() {
                return self.complete(c);
            }
            if self.dev.in_flight() == 0 {
                fail!(
                    "the device reports nothing in flight, but {} request(s) never completed \
                     (e.g. tag {:#x})",
                    self.live,
                    self.some_live_tag()
                );
            }
        }
        fail!(
            "no completion within {} polls ({} in flight, e.g. tag {:#x})",
            self.cfg.poll_limit,
            self.live,
            self.some_live_tag()
        )
    }

    /// Waits for every request in flight, then checks that the device is idle.
    pub fn drain(&mut self) -> Result<(), Fail> {
        while self.live > 0 {
            self.wait_one()?;
        }
        self.expect_idle()
    }

    /// The device must complete nothing more and report nothing in flight.
    pub fn expect_idle(&mut self) -> Result<(), Fail> {
        for _ in 0..4 {
            if let Some(c) = self.dev.poll() {
                let tag = c.tag;
                self.report.completions += 1;
                fail!(
                    "an idle device returned a completion for tag {tag:#x} (duplicate or unknown)"
                );
            }
        }
        let n = self.dev.in_flight();
        if n != 0 {
            fail!("every request completed, but the device reports {n} in flight");
        }
        Ok(())
    }

    fn some_live_tag(&self) -> Tag {
        if let Some(e) = self.entries.iter().flatten().next() {
            return e.exp.tag;
        }
        for (w, bits) in self.flood.iter().enumerate() {
            if *bits != 0 {
                return FLOOD_TAG + (w * 64) as Tag + bits.trailing_zeros();
            }
        }
        0
    }

    fn flood_set(&mut self, tag: Tag) {
        let i = (tag - FLOOD_TAG) as usize;
        if let Some(w) = self.flood.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
    }

    /// Clears a flood flush's bit; false if it was not in flight.
    fn flood_clear(&mut self, tag: Tag) -> bool {
        let i = (tag - FLOOD_TAG) as usize;
        match self.flood.get_mut(i / 64) {
            Some(w) if *w & (1 << (i % 64)) != 0 => {
                *w &= !(1 << (i % 64));
                true
            }
            _ => false,
        }
    }

    /// Matches one completion to its request and checks result, buffer and data. The request
    /// is retired (and its buffer returned to the pool) even when a check fails.
    fn complete(&mut self, c: Completion<'b>) -> Result<(), Fail> {
        self.report.completions += 1;
        let Completion { tag, result, buf } = c;
        if is_flood(tag) {
            if !self.flood_clear(tag) {
                fail!("completion for flush tag {tag:#x}, which is not in flight (duplicate?)");
            }
            self.live -= 1;
            if buf.is_some() {
                fail!("a flush completion (tag {tag:#x}) carried a buffer");
            }
            if let Err(e) = result {
                fail!("flush tag {tag:#x} failed: {e:?}");
            }
            return Ok(());
        }
        let found = self
            .entries
            .iter_mut()
            .find(|e| e.is_some_and(|e| e.exp.tag == tag))
            .and_then(Option::take);
        let Some(e) = found else {
            fail!("completion for tag {tag:#x}, which is not in flight (unknown or duplicate tag)");
        };
        self.live -= 1;
        if self.entries.iter().flatten().any(|o| o.seq < e.seq) {
            self.report.reordered += 1;
        }
        let exp = e.exp;
        let buf = match (exp.home, buf) {
            (Home::None, None) => None,
            (Home::None, Some(_)) => fail!(
                "a {:?} completion (tag {tag:#x}) carried a buffer",
                exp.kind
            ),
            (_, None) => fail!(
                "{:?} at lba {} (tag {tag:#x}) completed without handing its buffer back",
                exp.kind,
                exp.lba
            ),
            (home, Some(b)) => {
                let same = b.as_ptr() as usize == e.addr && b.len() == e.len;
                if !same {
                    // Not ours: keep the pool slot empty rather than adopt a foreign buffer.
                    fail!(
                        "tag {tag:#x} completed with a different buffer than it was submitted with"
                    );
                }
                self.put(home, b);
                Some(home)
            }
        };
        self.last_result = result;
        if result != exp.result && !exp.any_result {
            fail!(
                "{:?} at lba {} (tag {tag:#x}): expected {:?}, device answered {:?}",
                exp.kind,
                exp.lba,
                exp.result,
                result
            );
        }
        let Some(home) = buf else { return Ok(()) };
        // A failed read's buffer holds nothing in particular; a write's must be unchanged.
        if result.is_err() && exp.kind == CommandKind::Read {
            return Ok(());
        }
        let ss = self.geo.sector_size;
        let data = self.peek(home)?;
        match exp.verify {
            Verify::Nothing => Ok(()),
            Verify::Pattern { lba, key } => match pattern::first_mismatch(data, lba, ss, key) {
                None => Ok(()),
                Some((i, got, want)) => {
                    let what = if exp.kind == CommandKind::Read {
                        "read"
                    } else {
                        "written buffer"
                    };
                    fail!(
                        "{what} at lba {} (tag {tag:#x}) wrong at byte {i} (sector +{}): \
                         {got:#04x}, expected {want:#04x}",
                        exp.lba,
                        i / ss as usize
                    )
                }
            },
            Verify::Hash(h) => {
                if pattern::hash(data) == h {
                    Ok(())
                } else {
                    fail!(
                        "read at lba {} (tag {tag:#x}) returned other data than a lone read of \
                         the same sectors",
                        exp.lba
                    )
                }
            }
        }
    }
}

/// Whether `tag` is one of the flushes that fill the queue.
fn is_flood(tag: Tag) -> bool {
    (FLOOD_TAG..FLOOD_TAG + MAX_FLOOD as Tag).contains(&tag)
}

/// Address and length of a command's buffer (0, 0 without one), to recognise it when it comes
/// back.
fn buf_identity(command: &Command<'_>) -> (usize, usize) {
    match command {
        Command::Read { buf, .. } | Command::Write { buf, .. } => {
            (buf.as_ptr() as usize, buf.len())
        }
        _ => (0, 0),
    }
}

/// Returns a request's buffer to the pool (a request that will not be submitted after all).
fn give_back<'b, D: BlockDevice<'b> + ?Sized>(
    s: &mut Suite<'_, 'b, D>,
    req: Request<'b>,
    home: Home,
) {
    if let Command::Read { buf, .. } | Command::Write { buf, .. } = req.command {
        s.put(home, buf);
    }
}
