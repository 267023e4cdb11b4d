//! Power cut before the n-th request, for every n of a workload (littlefs's `-P linear`).
//!
//! The workload first runs uncut to count its device requests. Then, for every `n` from 0 to
//! that count, it runs again on a device that carries out requests `0 .. n` and fails every
//! later one (the power is gone; the filesystem's reaction to the errors does not matter). The
//! crash states at that instant — the durable image plus subsets of the writes not yet durable
//! (at least none and all) — are mounted, fsck'd, walked and judged by the oracle with the
//! acknowledgements the caller had received before the cut.

use crate::bounded::catch;
use crate::checker::{check_image, live_violations, repro_command, Scratch, Tally, Violation};
use crate::crash_disk::{for_each_crash_point, StateBudget};
use crate::execute::{execute, Injection, RunOptions};
use crate::image::BaseImage;
use crate::oracle::Oracle;
use crate::workload::Workload;

/// How to run the power cuts of a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutOptions {
    /// The live runs (the injection is set per cut point).
    pub run: RunOptions,
    /// Crash states per cut point (of the writes not yet durable at the cut).
    pub budget: StateBudget,
    /// Mount each state twice.
    pub remount: bool,
    /// Stop after this many violations.
    pub max_violations: usize,
}

impl Default for CutOptions {
    fn default() -> Self {
        CutOptions {
            run: RunOptions::default(),
            budget: StateBudget {
                exhaustive_max: 4,
                samples: 8,
                torn: 2,
                seed: 7,
            },
            remount: true,
            max_violations: 3,
        }
    }
}

/// Cut the power before every request of `w`, in turn.
pub fn check_powercuts(
    base: &BaseImage,
    w: &Workload,
    opts: &CutOptions,
    scratch: &mut Scratch,
) -> Tally {
    let mut t = Tally {
        workloads: 1,
        ..Tally::default()
    };
    let repro = |extra: &str| repro_command("powercut", w, &opts.run, extra);
    let mut uncut = opts.run;
    uncut.injection = Injection::None;
    let full = match catch(|| execute(base, w, &uncut)) {
        Ok(r) => r,
        Err(msg) => {
            t.violations.push(Violation {
                kind: "panic".into(),
                detail: format!("uncut run: {msg}"),
                workload: w.spec(),
                context: "live run".into(),
                repro: repro(""),
            });
            return t;
        }
    };
    t.requests = full.requests;
    t.violations = live_violations(&full, w, &uncut, "powercut");
    for n in 0..=full.requests {
        if t.violations.len() >= opts.max_violations {
            break;
        }
        let mut o = opts.run;
        o.injection = Injection::CutFrom(n);
        o.stop_on_fault = true;
        t.cut_points += 1;
        let run = match catch(|| execute(base, w, &o)) {
            Ok(r) => r,
            Err(msg) => {
                t.violations.push(Violation {
                    kind: "panic".into(),
                    detail: format!("run cut before request {n}: {msg}"),
                    workload: w.spec(),
                    context: format!("cut before request {n}"),
                    repro: repro(""),
                });
                continue;
            }
        };
        let oracle = Oracle::new(&base.model, &base.writes, run.record.clone());
        let end = run.events.len();
        for_each_crash_point(&base.image, base.fingerprint, run.rules, &run.events, |p| {
            if p.at != end {
                return;
            }
            for st in p.states(&opts.budget) {
                t.states += 1;
                t.checked += 1;
                p.build(&st, &mut scratch.image);
                match check_image(scratch, &oracle, p.acks, opts.remount) {
                    Ok(v) => t.out_of_order += u64::from(v.ok_out_of_order),
                    Err((kind, detail)) => {
                        t.violations.push(Violation {
                            kind: kind.into(),
                            detail,
                            workload: w.spec(),
                            context: format!(
                                "cut before request {n} of {} ({} writes not durable, {} acks), {}",
                                full.requests,
                                p.pending.len(),
                                p.acks,
                                st.describe()
                            ),
                            repro: repro(""),
                        });
                        break;
                    }
                }
            }
        });
    }
    t
}
