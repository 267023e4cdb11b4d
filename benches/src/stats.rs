//! What every filesystem's device layer counts, one measured row, and the three output
//! formats (table, CSV, Markdown).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Device requests as the counting layer under each filesystem saw them.
///
/// * bonsaifs: [`bonsaifs::device::Trace`] over the RAM disk (its `TraceCounters`).
/// * littlefs: the `read` / `prog` / `erase` / `sync` callbacks of `lfs_config`.
/// * FAT: the `std::io` stream under `fatfs`, at 512-byte sector granularity (see `fat.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Read requests.
    pub reads: u64,
    /// Write requests (with or without FUA).
    pub writes: u64,
    /// Writes with FUA (also in `writes`); only bonsaifs issues them.
    pub fua_writes: u64,
    /// Flushes: bonsaifs `Flush` commands, littlefs `sync` callbacks, FAT stream `flush` calls.
    pub flushes: u64,
    /// Discards (bonsaifs) or erases (littlefs): no bytes move on a RAM disk.
    pub erases: u64,
    /// Bytes read from the device.
    pub bytes_read: u64,
    /// Bytes written to the device.
    pub bytes_written: u64,
}

impl Counters {
    /// Every request, whatever its kind.
    pub fn requests(&self) -> u64 {
        self.reads + self.writes + self.flushes + self.erases
    }

    /// `self - before`, field by field.
    pub fn since(&self, before: &Counters) -> Counters {
        Counters {
            reads: self.reads - before.reads,
            writes: self.writes - before.writes,
            fua_writes: self.fua_writes - before.fua_writes,
            flushes: self.flushes - before.flushes,
            erases: self.erases - before.erases,
            bytes_read: self.bytes_read - before.bytes_read,
            bytes_written: self.bytes_written - before.bytes_written,
        }
    }

    /// Field-by-field sum.
    pub fn add(&mut self, o: &Counters) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.fua_writes += o.fua_writes;
        self.flushes += o.flushes;
        self.erases += o.erases;
        self.bytes_read += o.bytes_read;
        self.bytes_written += o.bytes_written;
    }
}

impl From<bonsaifs::device::TraceCounters> for Counters {
    fn from(t: bonsaifs::device::TraceCounters) -> Self {
        Counters {
            reads: t.reads,
            writes: t.writes,
            fua_writes: t.fua_writes,
            flushes: t.flushes,
            erases: t.discards,
            bytes_read: t.bytes_read,
            bytes_written: t.bytes_written,
        }
    }
}

/// What one (workload, filesystem) pair produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `ops` operations took `elapsed` and cost the device `c`.
    Done {
        ops: u64,
        elapsed: Duration,
        c: Counters,
    },
    /// Not measured, and why.
    Skipped(String),
}

/// One line of the result table.
#[derive(Debug, Clone)]
pub struct Row {
    pub workload: String,
    pub fs: &'static str,
    pub outcome: Outcome,
}

impl Row {
    pub fn new(workload: impl Into<String>, fs: &'static str, outcome: Outcome) -> Row {
        Row {
            workload: workload.into(),
            fs,
            outcome,
        }
    }
}

/// Wall time and counter deltas of one measured phase.
pub struct Meter {
    t0: Instant,
    c0: Counters,
}

impl Meter {
    pub fn start(c: Counters) -> Meter {
        Meter {
            c0: c,
            t0: Instant::now(),
        }
    }

    pub fn stop(self, c: Counters, ops: u64) -> Outcome {
        let elapsed = self.t0.elapsed();
        Outcome::Done {
            ops,
            elapsed,
            c: c.since(&self.c0),
        }
    }
}

/// The per-op figures of a measured row, already divided.
struct PerOp {
    ops: u64,
    us: f64,
    wb: f64,
    rb: f64,
    fl: f64,
    rq: f64,
    fua: f64,
}

fn per_op(ops: u64, elapsed: Duration, c: &Counters) -> PerOp {
    let n = ops.max(1) as f64;
    PerOp {
        ops,
        us: elapsed.as_secs_f64() * 1e6 / n,
        wb: c.bytes_written as f64 / n,
        rb: c.bytes_read as f64 / n,
        fl: c.flushes as f64 / n,
        rq: c.requests() as f64 / n,
        fua: c.fua_writes as f64 / n,
    }
}

/// A number with a few significant digits, no exponent.
fn num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The CSV the brief asks for: `workload,fs,ops,us_per_op,write_bytes_per_op,
/// read_bytes_per_op,flushes_per_op`. Skipped rows have empty numeric fields.
pub fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "workload,fs,ops,us_per_op,write_bytes_per_op,read_bytes_per_op,flushes_per_op\n",
    );
    for r in rows {
        match &r.outcome {
            Outcome::Done { ops, elapsed, c } => {
                let p = per_op(*ops, *elapsed, c);
                let _ = writeln!(
                    s,
                    "{},{},{},{:.3},{:.1},{:.1},{:.3}",
                    r.workload, r.fs, p.ops, p.us, p.wb, p.rb, p.fl
                );
            }
            Outcome::Skipped(_) => {
                let _ = writeln!(s, "{},{},,,,,", r.workload, r.fs);
            }
        }
    }
    s
}

const HEADERS: [&str; 9] = [
    "workload",
    "fs",
    "ops",
    "µs/op",
    "write B/op",
    "read B/op",
    "flushes/op",
    "requests/op",
    "FUA/op",
];

fn cells(r: &Row) -> Vec<String> {
    let mut v = vec![r.workload.clone(), r.fs.to_string()];
    match &r.outcome {
        Outcome::Done { ops, elapsed, c } => {
            let p = per_op(*ops, *elapsed, c);
            v.extend([
                p.ops.to_string(),
                num(p.us),
                num(p.wb),
                num(p.rb),
                num(p.fl),
                num(p.rq),
                num(p.fua),
            ]);
        }
        Outcome::Skipped(why) => {
            v.push(why.clone());
            v.extend(std::iter::repeat_n(String::new(), 6));
        }
    }
    v
}

/// A plain-text table with aligned columns; a blank line between workloads.
pub fn table(rows: &[Row]) -> String {
    let all: Vec<Vec<String>> = rows.iter().map(cells).collect();
    let mut width: Vec<usize> = HEADERS.iter().map(|h| h.chars().count()).collect();
    for (r, c) in rows.iter().zip(&all) {
        // A skip reason is printed after the names and does not size the numeric columns.
        let n = match r.outcome {
            Outcome::Done { .. } => c.len(),
            Outcome::Skipped(_) => 2,
        };
        for (w, cell) in width.iter_mut().zip(&c[..n]) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cols: &[String], skipped: bool| {
        let mut s = String::new();
        for (i, c) in cols.iter().enumerate() {
            let pad = " ".repeat(width[i].saturating_sub(c.chars().count()));
            if i < 2 {
                s.push_str(c);
                s.push_str(&pad);
            } else if skipped {
                s.push_str(c);
                break;
            } else {
                s.push_str(&pad);
                s.push_str(c);
            }
            s.push_str("  ");
        }
        s.trim_end().to_string() + "\n"
    };
    let hdr: Vec<String> = HEADERS.iter().map(|h| h.to_string()).collect();
    let mut s = line(&hdr, false);
    s.push_str(&"-".repeat(width.iter().sum::<usize>() + 2 * (width.len() - 1)));
    s.push('\n');
    let mut last: Option<&str> = None;
    for (r, c) in rows.iter().zip(&all) {
        if last.is_some_and(|w| w != r.workload) {
            s.push('\n');
        }
        last = Some(&r.workload);
        s.push_str(&line(c, matches!(r.outcome, Outcome::Skipped(_))));
    }
    s
}

/// The same table as Markdown.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut s = format!("| {} |\n", HEADERS.join(" | "));
    s.push_str("|---|---|");
    s.push_str(&"---:|".repeat(HEADERS.len() - 2));
    s.push('\n');
    for r in rows {
        let c = cells(r);
        match &r.outcome {
            Outcome::Done { .. } => {
                let _ = writeln!(s, "| {} |", c.join(" | "));
            }
            Outcome::Skipped(why) => {
                let _ = writeln!(s, "| {} | {} | {} | | | | | | |", c[0], c[1], why);
            }
        }
    }
    s
}

/// Sums the outcomes of repeated one-op measurements.
#[derive(Default)]
pub struct Acc {
    ops: u64,
    elapsed: std::time::Duration,
    c: Counters,
}

impl Acc {
    pub fn add(&mut self, o: Outcome) {
        if let Outcome::Done { ops, elapsed, c } = o {
            self.ops += ops;
            self.elapsed += elapsed;
            self.c.add(&c);
        }
    }
}

impl From<Acc> for Outcome {
    fn from(a: Acc) -> Outcome {
        Outcome::Done {
            ops: a.ops,
            elapsed: a.elapsed,
            c: a.c,
        }
    }
}
