//! An I/O error at the k-th request, for every k of a workload.
//!
//! The workload first runs without faults to count its device requests. Then, for every `k`,
//! it runs again on a device where request `k` alone fails with a media error (read, write or
//! flush, whatever it is; the device works again afterwards) and the workload carries on.
//! What must hold (DESIGN.md, "Errors and logging"):
//!
//! 1. no call ever reports `Corrupt` (the device corrupted nothing). A failure that no call
//!    reports (every call succeeded although a request failed) is counted as *absorbed* when
//!    every check below still holds — the filesystem retried it, e.g. the read a `NOWAIT`
//!    probe starts again on the next attempt; the rest of the time a call returns `Io`;
//! 2. the volume stays usable, turns read-only, or — when the failed operation had already
//!    changed the in-memory state — shuts down: the run's later calls answer as the model says
//!    or fail cleanly (`ReadOnly`, `Io`, `ShutDown`); what a usable or read-only volume shows
//!    in memory at the end is the operations that succeeded, plus any of those that failed
//!    with `Io`, each whole; a shut-down volume shows nothing (every call is refused);
//! 3. after a power cut at the end (writes not yet durable lost, or all of them kept), mount,
//!    fsck and the oracle's contract hold, with the acknowledgements the caller received;
//! 4. the recovered volume is writable again: a file created and checkpointed on it survives a
//!    remount, and fsck stays clean.

use bonsaifs::fs::OpenFlags;
use bonsaifs::Error;

use crate::bounded::catch;
use crate::checker::{check_image, live_violations, repro_command, Scratch, Tally, Violation};
use crate::crash_disk::{for_each_crash_point, Event, StateBudget};
use crate::execute::{execute, Injection, LiveRun, RunOptions};
use crate::image::{mount_ram, walk, BaseImage, Budget};
use crate::oracle::Oracle;
use crate::workload::Workload;

/// How to run the faults of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultOptions {
    /// The live runs (the injection is set per fault point).
    pub run: RunOptions,
    /// Crash states at the end of each faulted run.
    pub budget: StateBudget,
    /// Stop after this many violations.
    pub max_violations: usize,
}

impl Default for FaultOptions {
    fn default() -> Self {
        FaultOptions {
            run: RunOptions::default(),
            budget: StateBudget {
                exhaustive_max: 3,
                samples: 4,
                torn: 0,
                seed: 11,
            },
            max_violations: 3,
        }
    }
}

/// The kind of request number `k` (after the mount) in an unfaulted run's log.
fn request_kind(run: &LiveRun, first_id: u64, k: u64) -> &'static str {
    let id = first_id + k;
    run.events
        .iter()
        .find_map(|e| match e {
            Event::Write { id: i, fua, .. } if *i == id => {
                Some(if *fua { "FUA write" } else { "write" })
            }
            Event::Flush { id: i } if *i == id => Some("flush"),
            Event::Discard { id: i, .. } if *i == id => Some("discard"),
            _ => None,
        })
        .unwrap_or("read")
}

/// Fail each request of `w` in turn.
pub fn check_faults(
    base: &BaseImage,
    w: &Workload,
    opts: &FaultOptions,
    scratch: &mut Scratch,
) -> Tally {
    let mut t = Tally {
        workloads: 1,
        ..Tally::default()
    };
    let mut clean = opts.run;
    clean.injection = Injection::None;
    let repro = |extra: &str| repro_command("faults", w, &clean, extra);
    let full = match catch(|| execute(base, w, &clean)) {
        Ok(r) => r,
        Err(msg) => {
            t.violations.push(Violation {
                kind: "panic".into(),
                detail: format!("unfaulted run: {msg}"),
                workload: w.spec(),
                context: "live run".into(),
                repro: repro(""),
            });
            return t;
        }
    };
    t.requests = full.requests;
    t.violations = live_violations(&full, w, &clean, "faults");
    for k in 0..full.requests {
        if t.violations.len() >= opts.max_violations {
            break;
        }
        let mut o = opts.run;
        o.injection = Injection::FailAt(k);
        t.fault_points += 1;
        let ctx = |what: &str| format!("fault at request {k} ({what})");
        let run = match catch(|| execute(base, w, &o)) {
            Ok(r) => r,
            Err(msg) => {
                t.violations.push(Violation {
                    kind: "panic".into(),
                    detail: format!("faulted run: {msg}"),
                    workload: w.spec(),
                    context: ctx("live run"),
                    repro: repro(""),
                });
                continue;
            }
        };
        // The injector and the recorder number requests alike (from the mount's first).
        let kind = request_kind(&full, full.first_request, k);
        let push = |t: &mut Tally, k2: &str, detail: String, context: String| {
            t.violations.push(Violation {
                kind: k2.into(),
                detail,
                workload: w.spec(),
                context,
                repro: repro(""),
            })
        };
        // 1. The error reaches the caller, as Io, and nothing reports Corrupt. A fault no
        // call reported is counted as absorbed if everything below holds.
        let before = t.violations.len();
        if let Some((what, e)) = run.errors.iter().find(|(_, e)| matches!(e, Error::Corrupt)) {
            push(
                &mut t,
                "fault-corrupt",
                format!("{what} answered {e:?} after a media error"),
                ctx(kind),
            );
        }
        for v in live_violations(&run, w, &o, "faults") {
            push(&mut t, "fault-live", v.detail, ctx(kind));
        }
        // 2. The in-memory volume: whole (usable or read-only), or shut down and refusing.
        let oracle = Oracle::new(&base.model, &base.writes, run.record.clone());
        match &run.live_tree {
            Ok(_) if run.shut_down_at_end => push(
                &mut t,
                "fault-in-memory",
                "the volume shut down but walking it succeeded".into(),
                ctx(kind),
            ),
            // The walk's first call is refused (`...: ShutDown`), nothing else.
            Err(e) if run.shut_down_at_end && e.ends_with(": ShutDown") => {}
            Ok(tree) => {
                if let Some(Err(e)) = oracle.check_in_memory(tree) {
                    push(&mut t, "fault-in-memory", e, ctx(kind));
                }
            }
            Err(e) => push(
                &mut t,
                "fault-in-memory",
                format!("walking the volume after the error: {e}"),
                ctx(kind),
            ),
        }
        // 3. Crash states at the end, and 4. the recovered volume is writable.
        let end = run.events.len();
        let mut writable_checked = false;
        for_each_crash_point(&base.image, base.fingerprint, run.rules, &run.events, |p| {
            if p.at != end {
                return;
            }
            for st in p.states(&opts.budget) {
                t.states += 1;
                t.checked += 1;
                p.build(&st, &mut scratch.image);
                let r = check_image(scratch, &oracle, p.acks, false);
                if let Ok(v) = &r {
                    t.out_of_order += u64::from(v.ok_out_of_order);
                }
                if let Err((k2, detail)) = r {
                    push(
                        &mut t,
                        k2,
                        detail,
                        format!("{}, crash after the run, {}", ctx(kind), st.describe()),
                    );
                    return;
                }
                if !writable_checked && st.kept.iter().all(|&k| k) {
                    writable_checked = true;
                    if let Err(e) = writable_after_recovery(&mut scratch.image, &mut scratch.mem) {
                        push(&mut t, "fault-recovery", e, ctx(kind));
                    }
                }
            }
        });
        if !run.faulted && t.violations.len() == before {
            t.faults_absorbed += 1;
        }
    }
    t
}

/// Mount the recovered image, create and checkpoint a file, remount: it must be there and the
/// volume clean.
pub fn writable_after_recovery(image: &mut [u8], mem: &mut [u8]) -> Result<(), String> {
    let data = b"written after recovery";
    {
        let mut fs = mount_ram(image, mem).map_err(|e| format!("mount: {e:?}"))?;
        let fd = fs
            .open(
                "/after-recovery",
                OpenFlags::READ | OpenFlags::WRITE | OpenFlags::CREATE,
            )
            .map_err(|e| format!("create: {e:?}"))?;
        fs.write_at(fd, 0, data)
            .map_err(|e| format!("write: {e:?}"))?;
        fs.close(fd).map_err(|e| format!("close: {e:?}"))?;
        fs.sync_all().map_err(|e| format!("sync_all: {e:?}"))?;
    }
    let mut fs = mount_ram(image, mem).map_err(|e| format!("remount: {e:?}"))?;
    let mut scratch = vec![0u8; fs.fsck_scratch_len()];
    let rep = fs.fsck(&mut scratch).map_err(|e| format!("fsck: {e:?}"))?;
    if !rep.is_clean() {
        return Err(format!("fsck after writing: {rep:?}"));
    }
    let tree = walk(&mut fs, &Budget::default()).map_err(|e| format!("walk: {e}"))?;
    match tree.get("/after-recovery") {
        Some(Some(d)) if d.as_slice() == data => Ok(()),
        other => Err(format!("the file written after recovery reads {other:?}")),
    }
}
