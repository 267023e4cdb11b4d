//! One filesystem shared by several RTOS tasks or host threads, without holding the lock while
//! waiting for I/O.
//!
//! [`Fs`] takes `&mut self`: one owner at a time. [`SharedFs`] puts it behind a lock and runs
//! every call as a series of short, non-blocking *steps*, each under the lock: a write is
//! queued with `NOWAIT` and its ticket awaited by polling; a read or lookup runs with the cache
//! refusing to wait (a miss starts the read and answers `WouldBlock`). Between steps the lock
//! is released and the caller's `relax` function runs (yield to the scheduler, wait for an
//! interrupt, `std::thread::yield_now`). Any task's step reaps any completion, so no task waits
//! for another to be scheduled, and a task never sleeps while holding the lock.
//!
//! Two locks are provided: [`CsLock`] on `critical-section` (works on any target that has a
//! critical-section implementation; the step runs with that implementation's guarantee, e.g.
//! interrupts masked on a single-core MCU) and, with the `std` feature, `StdLock` on
//! `std::sync::Mutex`. Another lock can be plugged in through [`StepLock`].
//!
//! Limits, stated plainly: a step may still do a rare synchronous device request under the
//! lock — evicting a dirty cache slot when every slot is dirty, a checkpoint when the log
//! fills, or a metadata read the `NOWAIT` probe of a write could not foresee. Such a step
//! waits only for the device, never for another task, so it cannot deadlock; it only adds
//! latency. [`SharedFs::with`] runs a whole call under the lock (for calls without a step-wise
//! form here: create, rename, fsync, ...).

use core::cell::RefCell;

use crate::device::BlockDevice;
use crate::error::{Error, Result};
use crate::fs::{
    DirEntry, Fd, Fs, Metadata, OpenFlags, ReadDir, ReadFlags, Ticket, WriteFlags, WriteStatus,
    MAX_TICKETS, MAX_TICKET_BLOCKS,
};

/// A mutex that runs a closure on the value it guards. The closure never waits for I/O when
/// called from [`SharedFs`] (see the module docs for the rare exceptions).
pub trait StepLock<T> {
    /// Guard `value`.
    fn new(value: T) -> Self;
    /// Run `f` with the value, excluding every other caller.
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R;
    /// Give the value back.
    fn into_inner(self) -> T;
}

/// A [`StepLock`] on the `critical-section` crate: for RTOS tasks and interrupt handlers.
pub struct CsLock<T>(critical_section::Mutex<RefCell<T>>);

impl<T> StepLock<T> for CsLock<T> {
    fn new(value: T) -> Self {
        CsLock(critical_section::Mutex::new(RefCell::new(value)))
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // `SharedFs` never re-enters its lock, so the borrow cannot be taken twice.
        critical_section::with(|cs| f(&mut self.0.borrow_ref_mut(cs)))
    }

    fn into_inner(self) -> T {
        self.0.into_inner().into_inner()
    }
}

/// A [`StepLock`] on `std::sync::Mutex`: for host threads. A panic in another thread while it
/// held the lock does not poison the filesystem for the others (its state is consistent
/// between steps).
#[cfg(feature = "std")]
pub struct StdLock<T>(std::sync::Mutex<T>);

#[cfg(feature = "std")]
impl<T> StepLock<T> for StdLock<T> {
    fn new(value: T) -> Self {
        StdLock(std::sync::Mutex::new(value))
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    fn into_inner(self) -> T {
        self.0
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What the lock guards: the filesystem and the tickets reported but not yet collected by the
/// task that queued them.
pub struct SharedState<'b, D: BlockDevice<'b>, const N: usize, const H: usize> {
    fs: Fs<'b, D, N, H>,
    done: heapless::Vec<(Ticket, Result<usize>), MAX_TICKETS>,
}

impl<'b, D: BlockDevice<'b>, const N: usize, const H: usize> SharedState<'b, D, N, H> {
    /// Advance every queued write and keep the tickets that finished.
    fn pump(&mut self) {
        while !self.done.is_full() {
            match self.fs.poll() {
                Some(r) => {
                    let _ = self.done.push(r);
                }
                None => break,
            }
        }
    }

    /// Take ticket `t`'s result, if it has been reported.
    fn take(&mut self, t: Ticket) -> Option<Result<usize>> {
        let i = self.done.iter().position(|(x, _)| *x == t)?;
        Some(self.done.swap_remove(i).1)
    }
}

/// A filesystem shared between tasks or threads; see the module docs.
pub struct SharedFs<'b, D, L, const N: usize, const H: usize>
where
    D: BlockDevice<'b>,
    L: StepLock<SharedState<'b, D, N, H>>,
{
    lock: L,
    relax: fn(),
    _fs: core::marker::PhantomData<SharedState<'b, D, N, H>>,
}

impl<'b, D, L, const N: usize, const H: usize> SharedFs<'b, D, L, N, H>
where
    D: BlockDevice<'b>,
    L: StepLock<SharedState<'b, D, N, H>>,
{
    /// Share `fs`. `relax` runs between steps while the lock is free: yield, or wait for an
    /// interrupt. Tickets must then be collected only through this handle (a direct
    /// [`Fs::poll`] inside [`with`](Self::with) would take other tasks' tickets).
    pub fn new(fs: Fs<'b, D, N, H>, relax: fn()) -> Self {
        SharedFs {
            lock: L::new(SharedState {
                fs,
                done: heapless::Vec::new(),
            }),
            relax,
            _fs: core::marker::PhantomData,
        }
    }

    /// Give the filesystem back (with every queued write driven to its end).
    pub fn into_inner(self) -> Result<Fs<'b, D, N, H>> {
        let mut s = self.lock.into_inner();
        s.fs.quiesce()?;
        Ok(s.fs)
    }

    /// Run `f` on the filesystem under the lock. It may wait for I/O while holding it: use it
    /// for calls without a step-wise form here.
    pub fn with<R>(&self, f: impl FnOnce(&mut Fs<'b, D, N, H>) -> R) -> R {
        self.lock.with(|s| f(&mut s.fs))
    }

    /// Retry `f` (a call that changes nothing) in steps until it answers something other than
    /// `WouldBlock`.
    fn lookup<R>(&self, mut f: impl FnMut(&mut Fs<'b, D, N, H>) -> Result<R>) -> Result<R> {
        loop {
            let r = self.lock.with(|s| {
                s.pump();
                s.fs.nowait(&mut f)
            });
            match r {
                Err(Error::WouldBlock) => (self.relax)(),
                r => return r,
            }
        }
    }

    /// Open an existing file or directory. With `CREATE` or `TRUNC` the call changes the
    /// namespace and runs whole under the lock.
    pub fn open(&self, path: &str, flags: OpenFlags) -> Result<Fd> {
        if flags.intersects(OpenFlags::CREATE | OpenFlags::TRUNC) {
            return self.with(|fs| fs.open(path, flags));
        }
        self.lookup(|fs| fs.open(path, flags))
    }

    /// Close a handle.
    pub fn close(&self, fd: Fd) -> Result<()> {
        self.with(|fs| fs.close(fd))
    }

    /// Metadata of `path`.
    pub fn stat(&self, path: &str) -> Result<Metadata> {
        self.lookup(|fs| fs.stat(path))
    }

    /// Metadata of an open file.
    pub fn fstat(&self, fd: Fd) -> Result<Metadata> {
        self.lookup(|fs| fs.fstat(fd))
    }

    /// Start listing directory `path`.
    pub fn read_dir(&self, path: &str) -> Result<ReadDir> {
        self.lookup(|fs| fs.read_dir(path))
    }

    /// The next entry of a listing (see [`Fs::read_dir_next`]).
    pub fn read_dir_next(&self, cursor: &mut ReadDir) -> Result<Option<DirEntry>> {
        // The cursor moves only when an attempt succeeds.
        self.lookup(|fs| {
            let mut c = *cursor;
            let r = fs.read_dir_next(&mut c);
            if r.is_ok() {
                *cursor = c;
            }
            r
        })
    }

    /// Read up to `buf.len()` bytes at `offset`, in non-blocking steps.
    pub fn read_at(&self, fd: Fd, offset: u64, buf: &mut [u8]) -> Result<usize> {
        loop {
            let r = self.lock.with(|s| {
                s.pump();
                s.fs.read_at_flags(fd, offset, buf, ReadFlags::NOWAIT)
            });
            match r {
                Err(Error::WouldBlock) => (self.relax)(),
                r => return r,
            }
        }
    }

    /// Write `data` at `offset` and wait until it is on the device (with `DSYNC`: durable,
    /// with what is needed to find it). Each piece of up to [`MAX_TICKET_BLOCKS`] blocks is
    /// queued as a `NOWAIT` write and its ticket awaited in steps. Returns the bytes written;
    /// `NOWAIT` in `flags` is implied.
    pub fn write_at(&self, fd: Fd, offset: u64, data: &[u8], flags: WriteFlags) -> Result<usize> {
        let bs = self.with(|fs| u64::from(fs.statfs().block_size)).max(1);
        let max = bs * MAX_TICKET_BLOCKS as u64;
        let mut done = 0usize;
        while done < data.len() {
            let at = offset + done as u64;
            // Pieces end on a multiple of `max`, so each covers at most MAX_TICKET_BLOCKS.
            let room = (max - at % max) as usize;
            let piece = data
                .get(done..done + room.min(data.len() - done))
                .unwrap_or(&[]);
            let n = self.write_piece(fd, at, piece, flags | WriteFlags::NOWAIT)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    fn write_piece(&self, fd: Fd, offset: u64, data: &[u8], flags: WriteFlags) -> Result<usize> {
        let ticket = loop {
            let r = self.lock.with(|s| {
                s.pump();
                s.fs.write_at_flags(fd, offset, data, flags)
            });
            match r {
                Ok(WriteStatus::Queued(t)) => break t,
                Ok(WriteStatus::Done(n)) => return Ok(n),
                Err(Error::WouldBlock) => (self.relax)(),
                Err(e) => return Err(e),
            }
        };
        loop {
            let r = self.lock.with(|s| {
                s.pump();
                s.take(ticket)
            });
            match r {
                Some(r) => return r,
                None => (self.relax)(),
            }
        }
    }
}
