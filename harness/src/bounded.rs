//! Running untrusted work with bounds: panics caught and reported (quietly), device requests
//! counted against a budget (a [`FaultInjector`] failing every request past it), and whole checks cut off by a wall-clock limit on a worker thread.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Once;
use std::time::Duration;

use bonsaifs::device::{BlockDevice, FaultInjector, FaultPlan, IoError};

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Install (once) a panic hook that, inside [`catch`], records the message instead of
/// printing it; elsewhere panics print as usual.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic".into());
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{msg}{at}")));
            } else {
                default(info);
            }
        }));
    });
}

/// Run `f`; a panic becomes `Err(message with location)`.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    install_hook();
    let was = QUIET.with(|q| q.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was));
    r.map_err(|_| {
        LAST_PANIC
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| "panic".into())
    })
}

/// How bounded work ended when it did not return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// It panicked (message and location).
    Panic(String),
    /// It ran past the time limit (its thread is abandoned).
    Hang,
}

/// Run `f` on a worker thread with panics caught and a wall-clock `limit`. A hung worker is
/// left running (threads cannot be killed); callers stop after the first hang.
pub fn run_limited<R: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Cut> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("bounded".into())
        .stack_size(8 << 20)
        .spawn(move || {
            let _ = tx.send(catch(f));
        });
    if spawned.is_err() {
        return Err(Cut::Panic("could not spawn a worker thread".into()));
    }
    match rx.recv_timeout(limit) {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(msg)) => Err(Cut::Panic(msg)),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Cut::Hang),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Cut::Panic("worker vanished".into())),
    }
}

/// Requests a check may make before its device fails them all (`IoError::Timeout`): a loop
/// that keeps reading becomes an error instead of a hang. Far above what any check of a
/// harness volume needs (a full walk of a 1 MiB volume reads each block a few times).
pub const REQUEST_BUDGET: u64 = 200_000;

/// Wrap `dev` so that it fails every request from the [`REQUEST_BUDGET`]-th on.
pub fn budgeted<'b, D: BlockDevice<'b>>(dev: D) -> FaultInjector<'b, D> {
    FaultInjector::new(dev, FaultPlan::From(REQUEST_BUDGET), IoError::Timeout)
}

/// Did the budget run out?
pub fn budget_spent<'b, D: BlockDevice<'b>>(dev: &FaultInjector<'b, D>) -> bool {
    dev.submitted() > REQUEST_BUDGET
}
