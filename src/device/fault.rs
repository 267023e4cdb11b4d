//! A fault injector: wraps a device and fails chosen requests, like smoltcp's `FaultInjector`.
//!
//! Requests are numbered from 0 in submit order. A request the plan fails never reaches the
//! inner device: it completes at once with the planned error (its buffer handed back). This
//! models both a device error at request `k` and, with [`FaultPlan::from`], a power cut
//! after request `k - 1` (nothing from `k` on happens).

use super::{BlockDevice, Busy, Completion, Geometry, IoError, Request};

/// Which requests fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FaultPlan {
    /// Nothing fails.
    None,
    /// Only request number `k` fails.
    At(u64),
    /// Request `k` and every later one fail.
    From(u64),
}

/// A device wrapper that fails requests according to a [`FaultPlan`].
pub struct FaultInjector<'b, D> {
    inner: D,
    plan: FaultPlan,
    error: IoError,
    count: u64,
    /// Failed completions waiting for `poll` (a plain array: no destructor, so buffers may be
    /// declared in any order relative to the wrapper).
    failed: [Option<Completion<'b>>; 64],
}

impl<'b, D: BlockDevice<'b>> FaultInjector<'b, D> {
    /// Wrap `inner`; planned failures complete with `error`.
    pub fn new(inner: D, plan: FaultPlan, error: IoError) -> Self {
        FaultInjector {
            inner,
            plan,
            error,
            count: 0,
            failed: [const { None }; 64],
        }
    }

    /// Requests submitted so far.
    pub fn submitted(&self) -> u64 {
        self.count
    }

    /// Change the plan (request numbering continues).
    pub fn set_plan(&mut self, plan: FaultPlan) {
        self.plan = plan;
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// Unwrap.
    pub fn into_inner(self) -> D {
        self.inner
    }

    fn fails(&self, n: u64) -> bool {
        match self.plan {
            FaultPlan::None => false,
            FaultPlan::At(k) => n == k,
            FaultPlan::From(k) => n >= k,
        }
    }
}

impl<'b, D: BlockDevice<'b>> BlockDevice<'b> for FaultInjector<'b, D> {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    fn submit(&mut self, req: Request<'b>) -> Result<(), Busy<'b>> {
        if self.fails(self.count) {
            let Some(slot) = self.failed.iter_mut().find(|c| c.is_none()) else {
                return Err(Busy(req));
            };
            let buf = match req.command {
                super::Command::Read { buf, .. } | super::Command::Write { buf, .. } => Some(buf),
                _ => None,
            };
            *slot = Some(Completion {
                tag: req.tag,
                result: Err(self.error),
                buf,
            });
            self.count += 1;
            return Ok(());
        }
        self.inner.submit(req)?;
        self.count += 1;
        Ok(())
    }

    fn poll(&mut self) -> Option<Completion<'b>> {
        self.failed
            .iter_mut()
            .find_map(Option::take)
            .or_else(|| self.inner.poll())
    }

    fn in_flight(&self) -> usize {
        self.failed.iter().filter(|c| c.is_some()).count() + self.inner.in_flight()
    }

    /// Passed through when the inner device has the fast path; counted as a request like any
    /// other, and failed when the plan says so (so the fast path meets the same faults).
    fn read_now(&mut self, lba: u64, buf: &mut [u8]) -> Option<Result<(), IoError>> {
        if self.fails(self.count) {
            self.count += 1;
            return Some(Err(self.error));
        }
        let r = self.inner.read_now(lba, buf)?;
        self.count += 1;
        Some(r)
    }

    /// As [`read_now`](Self::read_now), for writes.
    fn write_now(&mut self, lba: u64, buf: &[u8]) -> Option<Result<(), IoError>> {
        if self.fails(self.count) {
            self.count += 1;
            return Some(Err(self.error));
        }
        let r = self.inner.write_now(lba, buf)?;
        self.count += 1;
        Some(r)
    }
}
