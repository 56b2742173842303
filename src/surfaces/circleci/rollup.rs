//! Workflow and job figures of one branch, or of all branches, from the day rollups, for the
//! workflows, summary and jobs routes.
//!
//! The same numbers as `sql::workflow_metrics`, `sql::mttr` and `sql::job_metrics` (tests
//! compare them), without passing every run of the window through window functions:
//!
//! - additive figures (counts, credits, duration count, sum and sum of squares, recoveries) are
//!   the `insights_days` (`insights_job_days`) rows of the window's whole UTC days of the one
//!   branch, or the `insights_all_days` (`insights_all_job_days`) rows of every branch, plus the runs of its two partial days read from the runs (one
//!   branch: a seek into runs_insights; all branches: a range of runs_by_project_time); for all
//!   branches also the runs without a branch, which are in no day row, read from runs_insights;
//! - min, max, median and p95 are picked by rank among the duration blobs of those day rows and
//!   the blobs of the runs read (made by `pipestat_durs`, or in Rust where the rows of all
//!   branches' jobs are added up there: `job_rows`) (`durations::Ranks`), so the cost follows
//!   the window's days and branches, never the history before it;
//! - MTTR adds up the recoveries kept on the runs (`rec_from`, `rec_ms`, see
//!   src/store/rollups/circleci.rs), per branch: each branch is a sequence of its own. They are
//!   the recoveries of each branch's whole sequence; in the window's sequence they are the same
//!   but for the first recovery of the window when its streak began before the window: that one
//!   counts only when one of its failures is inside, from the first of those (at most one per
//!   workflow and branch with recoveries in the window, found with two seeks). For all
//!   branches the branches with recoveries in the window's whole days are read from the index
//!   insights_days_by_day.
//!
//! Statements are constants with every value bound (written `+?N`: with a bare `?N` in a range,
//! SQLite re-plans a statement whenever the bound values change); each reads the window's day
//! rows or runs, and per workflow or job name at most a few seeks, or a walk within one day.

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};

use super::sql::{Agg, Branches, Dur, Scope};
use crate::error::Result;
use crate::store::rollups::durations::Ranks;

const DAY_MS: i64 = 86_400_000;

/// What the rollups answer for: the runs of a project created in [start, end), of one branch
/// or (`branch` None) of every branch, runs without a branch included.
#[derive(Debug, Clone, Copy)]
pub struct Covered<'a> {
    pub project: i64,
    pub branch: Option<&'a str>,
    pub start: i64,
    pub end: i64,
}

impl<'a> Covered<'a> {
    /// The runs of `s` when it reads one branch or all of them (a set of branches: None).
    pub fn of(s: &Scope<'a>) -> Option<Covered<'a>> {
        let branch = match s.branches {
            Branches::One(branch) => Some(branch),
            Branches::All => None,
            Branches::Set(_) => return None,
        };
        Some(Covered {
            project: s.project,
            branch,
            start: s.start,
            end: s.end,
        })
    }

    /// The window's whole UTC days, as day numbers [first, end); empty when there is none.
    fn whole_days(&self) -> (i64, i64) {
        let first = self.start.div_euclid(DAY_MS) + i64::from(self.start.rem_euclid(DAY_MS) != 0);
        (first, self.end.div_euclid(DAY_MS))
    }

    /// `one` when this reads one branch, else `all`.
    fn pick(&self, one: &'static str, all: &'static str) -> &'static str {
        if self.branch.is_some() {
            one
        } else {
            all
        }
    }

    /// The ranges of created_at read from the runs rather than the day rows, each with the
    /// statement that reads it: the partial days around the whole days (the whole window when
    /// it has none), and for all branches the whole days of the runs without a branch, which
    /// are in no day row. `runs` and `all` are the one-branch and all-branch statements of the
    /// partial days, `null` that of the runs without a branch.
    fn raw_ranges(
        &self,
        runs: &'static str,
        all: &'static str,
        null: &'static str,
    ) -> Vec<(&'static str, i64, i64)> {
        let (first_day, end_day) = self.whole_days();
        let partial = self.pick(runs, all);
        let mut out = Vec::new();
        if first_day < end_day {
            out.push((partial, self.start, first_day * DAY_MS));
            if self.branch.is_none() {
                out.push((null, first_day * DAY_MS, end_day * DAY_MS));
            }
            out.push((partial, end_day * DAY_MS, self.end));
        } else {
            out.push((partial, self.start, self.end));
        }
        out.retain(|&(_, from, to)| from < to);
        out
    }
}

/// One workflow's figures: its id and name, the aggregate, and its recoveries (count, and mean
/// length in ms when any has one).
pub struct Figures {
    pub id: i64,
    pub name: String,
    pub agg: Agg,
    pub recoveries: i64,
    pub mttr_ms: Option<f64>,
}

/// The additive part, as added up from day rows and runs.
#[derive(Default, Clone, Copy)]
struct Sums {
    total: i64,
    ok: i64,
    bad: i64,
    canceled: i64,
    open: i64,
    credits: f64,
    dur_n: i64,
    dur_sum: f64,
    dur_sumsq: f64,
    rec_n: i64,
    rec_timed: i64,
    rec_sum: f64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.total += o.total;
        self.ok += o.ok;
        self.bad += o.bad;
        self.canceled += o.canceled;
        self.open += o.open;
        self.credits += o.credits;
        self.dur_n += o.dur_n;
        self.dur_sum += o.dur_sum;
        self.dur_sumsq += o.dur_sumsq;
        self.rec_n += o.rec_n;
        self.rec_timed += o.rec_timed;
        self.rec_sum += o.rec_sum;
    }

    /// The aggregate of these sums with the durations' figures and the first and last run.
    fn agg(&self, dur: Dur, first_at: Option<i64>, last_at: Option<i64>) -> Agg {
        Agg {
            total: self.total,
            successful: self.ok,
            failed: self.bad,
            canceled: self.canceled,
            unfinished: self.open,
            credits: self.credits as i64,
            dur,
            first_at,
            last_at,
        }
    }
}

/// A sum of floats as SQLite's `total()` takes it (Kahan-Babuska-Neumaier), so that the day
/// rows add up to the same last bit as when SQL summed them.
#[derive(Default, Clone, Copy)]
struct Kbn {
    sum: f64,
    err: f64,
}

impl Kbn {
    fn add(&mut self, r: f64) {
        let t = self.sum + r;
        if self.sum.abs() > r.abs() {
            self.err += (self.sum - t) + r;
        } else {
            self.err += (r - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(&self) -> f64 {
        if self.err.is_finite() {
            self.sum + self.err
        } else {
            self.sum
        }
    }
}

/// Day rows added up: counts as integers, the float sums as `total()` does.
#[derive(Default, Clone, Copy)]
struct DaySums {
    counts: Sums,
    credits: Kbn,
    dur_sum: Kbn,
    dur_sumsq: Kbn,
    rec_sum: Kbn,
}

impl DaySums {
    fn add(&mut self, o: &Sums) {
        let floats = Sums {
            credits: 0.0,
            dur_sum: 0.0,
            dur_sumsq: 0.0,
            rec_sum: 0.0,
            ..*o
        };
        self.counts.add(&floats);
        self.credits.add(o.credits);
        self.dur_sum.add(o.dur_sum);
        self.dur_sumsq.add(o.dur_sumsq);
        self.rec_sum.add(o.rec_sum);
    }

    fn sums(&self) -> Sums {
        Sums {
            credits: self.credits.value(),
            dur_sum: self.dur_sum.value(),
            dur_sumsq: self.dur_sumsq.value(),
            rec_sum: self.rec_sum.value(),
            ..self.counts
        }
    }
}

/// The sums of a run row from column `at` on: the nine of `job_sums_at`, then the recoveries'
/// count, how many have a length, and the sum of lengths.
fn run_sums_at(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Sums> {
    Ok(Sums {
        rec_n: r.get(at + 9)?,
        rec_timed: r.get(at + 10)?,
        rec_sum: r.get(at + 11)?,
        ..job_sums_at(r, at)?
    })
}

/// The day rows of the whole days [?3, ?4) of branch ?2 of project ?1 (workflow ?5, or all):
/// workflow, branch, day, the sums, the durations' blob. A seek per workflow (`CROSS JOIN`
/// keeps that order, rather than a range of insights_days_by_day over every branch).
const DAYS: &str = "SELECT d.workflow_id, d.branch, d.day, d.total, d.ok, d.bad, d.canceled,
    d.open, d.credits, d.dur_n, d.dur_sum, d.dur_sumsq, d.rec_n, d.rec_timed, d.rec_sum, d.durs
    FROM workflows w CROSS JOIN insights_days d ON d.project_id = +?1 AND d.branch = +?2
      AND d.workflow_id = w.id AND d.day >= +?3 AND d.day < +?4
    WHERE w.project_id = +?1 AND (+?5 IS NULL OR w.id = +?5)";
/// The same over every branch (?2 unused), from the all-branch rows, which have no branch and
/// no recoveries (read by REC_DAYS): NULL and zeros in their places.
const DAYS_ALL: &str = "SELECT d.workflow_id, NULL, d.day, d.total, d.ok, d.bad, d.canceled,
    d.open, d.credits, d.dur_n, d.dur_sum, d.dur_sumsq, 0, 0, 0.0, d.durs
    FROM workflows w CROSS JOIN insights_all_days d ON d.project_id = +?1
      AND d.workflow_id = w.id AND d.day >= +?3 AND d.day < +?4
    WHERE w.project_id = +?1 AND (+?5 IS NULL OR w.id = +?5) AND +?2 IS NULL";
/// The recoveries of every branch's day rows of the whole days [?3, ?4) (?2 unused), from
/// insights_days_by_day alone: workflow, branch, count, how many have a length, their sum.
const REC_DAYS: &str = "SELECT workflow_id, branch, rec_n, rec_timed, rec_sum
    FROM insights_days INDEXED BY insights_days_by_day
    WHERE project_id = +?1 AND day >= +?3 AND day < +?4 AND rec_n <> 0
      AND (+?5 IS NULL OR workflow_id = +?5) AND +?2 IS NULL";

/// The runs created in [?3, ?4) of branch ?2 of project ?1 (workflow ?5, or all), per workflow
/// and branch: the sums, first and last created_at, and the durations' blob (`pipestat_durs`).
/// A seek per workflow into runs_insights.
const RUNS: &str = "SELECT workflow_id, branch, count(*), sum(status = 'success'),
    sum(status = 'failed' OR status = 'error' OR status = 'timeout'), sum(status = 'canceled'),
    sum(status = 'queued' OR status = 'running' OR status = 'waiting'), total(credits_used),
    count(d), total(d), total(CAST(d AS REAL) * d), count(rec_from), count(rec_ms), total(rec_ms),
    min(created_at), max(created_at), pipestat_durs(d)
    FROM (SELECT workflow_id, branch, status, credits_used, rec_from, rec_ms, created_at,
        (CASE WHEN stopped_at IS NOT NULL THEN max(stopped_at - coalesce(started_at, created_at), 0) END) AS d
      FROM runs
      WHERE project_id = +?1 AND branch = +?2
        AND workflow_id IN (SELECT id FROM workflows WHERE project_id = +?1 AND (+?5 IS NULL OR id = +?5))
        AND created_at >= +?3 AND created_at < +?4)
    GROUP BY workflow_id, branch";
/// The same for every branch (?2 unused): a range of runs_by_project_time.
const RUNS_ALL: &str = "SELECT workflow_id, branch, count(*), sum(status = 'success'),
    sum(status = 'failed' OR status = 'error' OR status = 'timeout'), sum(status = 'canceled'),
    sum(status = 'queued' OR status = 'running' OR status = 'waiting'), total(credits_used),
    count(d), total(d), total(CAST(d AS REAL) * d), count(rec_from), count(rec_ms), total(rec_ms),
    min(created_at), max(created_at), pipestat_durs(d)
    FROM (SELECT workflow_id, branch, status, credits_used, rec_from, rec_ms, created_at,
        (CASE WHEN stopped_at IS NOT NULL THEN max(stopped_at - coalesce(started_at, created_at), 0) END) AS d
      FROM runs INDEXED BY runs_by_project_time
      WHERE project_id = +?1 AND (+?5 IS NULL OR workflow_id = +?5)
        AND created_at >= +?3 AND created_at < +?4 AND +?2 IS NULL)
    GROUP BY workflow_id, branch";
/// The same for the runs without a branch (?2 unused): a seek per workflow into runs_insights.
const RUNS_NULL: &str = "SELECT workflow_id, branch, count(*), sum(status = 'success'),
    sum(status = 'failed' OR status = 'error' OR status = 'timeout'), sum(status = 'canceled'),
    sum(status = 'queued' OR status = 'running' OR status = 'waiting'), total(credits_used),
    count(d), total(d), total(CAST(d AS REAL) * d), count(rec_from), count(rec_ms), total(rec_ms),
    min(created_at), max(created_at), pipestat_durs(d)
    FROM (SELECT workflow_id, branch, status, credits_used, rec_from, rec_ms, created_at,
        (CASE WHEN stopped_at IS NOT NULL THEN max(stopped_at - coalesce(started_at, created_at), 0) END) AS d
      FROM runs
      WHERE project_id = +?1 AND branch IS NULL AND +?2 IS NULL
        AND workflow_id IN (SELECT id FROM workflows WHERE project_id = +?1 AND (+?5 IS NULL OR id = +?5))
        AND created_at >= +?3 AND created_at < +?4)
    GROUP BY workflow_id, branch";

/// The workflows of project ?1 (only ?2 when given) named after ?3, by name.
const WORKFLOWS: &str = "SELECT id, name FROM workflows
    WHERE project_id = +?1 AND (+?2 IS NULL OR id = +?2) AND (+?3 IS NULL OR name > +?3) ORDER BY name";

/// First and last created_at in the window of one workflow (?3) of branch ?2, [?4, ?5).
const FIRST_LAST: &str = "SELECT
    (SELECT min(created_at) FROM runs WHERE project_id = +?1 AND branch = +?2 AND workflow_id = +?3
        AND created_at >= +?4 AND created_at < +?5),
    (SELECT max(created_at) FROM runs WHERE project_id = +?1 AND branch = +?2 AND workflow_id = +?3
        AND created_at >= +?4 AND created_at < +?5)";
/// The first and the last created_at in [?4, ?5) (within one day, where a day row says there
/// is one) of a run of workflow ?3 of project ?1 on any branch (?2 unused): a walk of
/// runs_by_project_time from either end of the day to the first run of the workflow.
const FIRST_AT_ALL: &str = "SELECT created_at FROM runs INDEXED BY runs_by_project_time
    WHERE project_id = +?1 AND created_at >= +?4 AND created_at < +?5 AND +workflow_id = +?3
      AND +?2 IS NULL
    ORDER BY created_at LIMIT 1";
const LAST_AT_ALL: &str = "SELECT created_at FROM runs INDEXED BY runs_by_project_time
    WHERE project_id = +?1 AND created_at >= +?4 AND created_at < +?5 AND +workflow_id = +?3
      AND +?2 IS NULL
    ORDER BY created_at DESC LIMIT 1";

/// The first recovery of one workflow's sequence (branch ?2, NULL for the runs without one) in
/// the window.
const FIRST_RECOVERY: &str = "SELECT created_at, ext_id, rec_from, rec_ms, stopped_at FROM runs
    WHERE project_id = +?1 AND branch IS +?2 AND workflow_id = +?3 AND created_at >= +?4
      AND created_at < +?5 AND rec_from IS NOT NULL
    ORDER BY created_at, ext_id LIMIT 1";
/// The first finished run of one workflow's sequence in the window.
const FIRST_FINISHED: &str = "SELECT created_at, ext_id, stopped_at FROM runs
    WHERE project_id = +?1 AND branch IS +?2 AND workflow_id = +?3 AND created_at >= +?4
      AND created_at < +?5
      AND (status = 'success' OR status = 'failed' OR status = 'error' OR status = 'timeout')
    ORDER BY created_at, ext_id LIMIT 1";

/// The statements of this path, for `EXPLAIN QUERY PLAN` in benches/circleci.rs.
pub const BENCHED: &[(&str, &str)] = &[
    ("workflows, summary (rollup): DAYS", DAYS),
    ("workflows, summary (rollup): DAYS_ALL", DAYS_ALL),
    ("workflows, summary (rollup): REC_DAYS", REC_DAYS),
    ("workflows, summary (rollup): RUNS", RUNS),
    ("workflows, summary (rollup): RUNS_ALL", RUNS_ALL),
    ("workflows, summary (rollup): RUNS_NULL", RUNS_NULL),
    ("workflows, summary (rollup): FIRST_LAST", FIRST_LAST),
    ("workflows, summary (rollup): FIRST_AT_ALL", FIRST_AT_ALL),
    ("workflows, summary (rollup): LAST_AT_ALL", LAST_AT_ALL),
    (
        "workflows, summary (rollup): FIRST_RECOVERY",
        FIRST_RECOVERY,
    ),
    (
        "workflows, summary (rollup): FIRST_FINISHED",
        FIRST_FINISHED,
    ),
];

/// What the day rows and the runs read give one workflow.
#[derive(Default)]
struct WorkflowSums {
    s: Sums,
    /// The whole days' rows, added to `s` before the runs read.
    day_rows: DaySums,
    /// Per branch (None: the runs without one), its recoveries, for `crossing`.
    seqs: std::collections::BTreeMap<Option<String>, Sums>,
    /// First and last day with runs, of the whole days.
    days: Option<Span>,
    /// First and last created_at of the runs read from the runs table (partial days, and the
    /// whole days of the runs without a branch).
    raw: Option<Span>,
    ranks: Ranks,
}

impl WorkflowSums {
    fn add(&mut self, branch: Option<String>, s: &Sums) {
        self.s.add(s);
        self.seqs.entry(branch).or_default().add(s);
    }
}

/// Figures of each workflow with runs in `b` (only `workflow` when given), named after
/// `after`, by name, at most `limit`.
pub fn workflows(
    conn: &Connection,
    b: &Covered,
    workflow: Option<i64>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Figures>> {
    let mut by_wf: std::collections::HashMap<i64, WorkflowSums> = Default::default();
    let (first_day, end_day) = b.whole_days();
    if first_day < end_day {
        let mut stmt = conn.prepare_cached(b.pick(DAYS, DAYS_ALL))?;
        let mut rows = stmt.query(params![b.project, b.branch, first_day, end_day, workflow])?;
        while let Some(r) = rows.next()? {
            let s = run_sums_at(r, 3)?;
            let e = by_wf.entry(r.get(0)?).or_default();
            e.day_rows.add(&s);
            if b.branch.is_some() {
                e.seqs.entry(r.get(1)?).or_default().add(&s);
            }
            if s.total == 0 {
                continue;
            }
            let day: i64 = r.get(2)?;
            Span::widen(&mut e.days, day, day);
            if let ValueRef::Blob(blob) = r.get_ref(15)? {
                e.ranks.push(blob);
            }
        }
    }
    if first_day < end_day && b.branch.is_none() {
        let mut stmt = conn.prepare_cached(REC_DAYS)?;
        let mut rows = stmt.query(params![b.project, b.branch, first_day, end_day, workflow])?;
        while let Some(r) = rows.next()? {
            let rec = Sums {
                rec_n: r.get(2)?,
                rec_timed: r.get(3)?,
                rec_sum: r.get(4)?,
                ..Sums::default()
            };
            let e = by_wf.entry(r.get(0)?).or_default();
            e.seqs.entry(r.get(1)?).or_default().add(&rec);
        }
    }
    for e in by_wf.values_mut() {
        e.s = e.day_rows.sums();
    }
    for (sql, from, to) in b.raw_ranges(RUNS, RUNS_ALL, RUNS_NULL) {
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params![b.project, b.branch, from, to, workflow])?;
        while let Some(r) = rows.next()? {
            let e = by_wf.entry(r.get(0)?).or_default();
            e.add(r.get(1)?, &run_sums_at(r, 2)?);
            let (first, last): (i64, i64) = (r.get(14)?, r.get(15)?);
            Span::widen(&mut e.raw, first, last);
            if let ValueRef::Blob(blob) = r.get_ref(16)? {
                e.ranks.push(blob);
            }
        }
    }

    let mut out = Vec::new();
    let mut names = conn.prepare_cached(WORKFLOWS)?;
    let mut rows = names.query(params![b.project, workflow, after])?;
    while let Some(row) = rows.next()? {
        if out.len() as i64 >= limit {
            break;
        }
        let id: i64 = row.get(0)?;
        let Some(w) = by_wf.get(&id).filter(|w| w.s.total > 0) else {
            continue;
        };
        let s = &w.s;
        let (first_at, last_at) = first_last(conn, b, id, w)?;
        let dur = ranked(&w.ranks, s, &format!("workflow {id}"))?;
        let (mut recoveries, mut rec_timed, mut rec_sum) = (0, 0, 0.0);
        for (branch, seq) in &w.seqs {
            let (n, timed, sum) = crossing(conn, b, branch.as_deref(), id, seq)?;
            recoveries += n;
            rec_timed += timed;
            rec_sum += sum;
        }
        out.push(Figures {
            id,
            name: row.get(1)?,
            agg: s.agg(dur, first_at, last_at),
            recoveries,
            mttr_ms: (rec_timed > 0).then(|| rec_sum / rec_timed as f64),
        });
    }
    Ok(out)
}

/// The first and last created_at of workflow `wf`'s runs in `b`: for one branch two seeks;
/// for all branches the earliest and latest of the runs read from the runs table and of the
/// first and last whole day with runs (a walk within that day).
fn first_last(
    conn: &Connection,
    b: &Covered,
    wf: i64,
    w: &WorkflowSums,
) -> Result<(Option<i64>, Option<i64>)> {
    if b.branch.is_some() {
        let at = params![b.project, b.branch, wf, b.start, b.end];
        return Ok(conn
            .prepare_cached(FIRST_LAST)?
            .query_row(at, |r| Ok((r.get(0)?, r.get(1)?)))?);
    }
    let in_day = |sql: &str, day: i64| -> Result<Option<i64>> {
        let (from, to) = (day * DAY_MS, (day + 1) * DAY_MS);
        Ok(conn
            .prepare_cached(sql)?
            .query_row(params![b.project, b.branch, wf, from, to], |r| r.get(0))
            .optional()?)
    };
    let (mut first, mut last) = (w.raw.map(|r| r.first), w.raw.map(|r| r.last));
    if let Some(days) = w.days {
        // A walk only when the runs read hold nothing earlier (later) than that day.
        if first.map_or(true, |f| f >= days.first * DAY_MS) {
            let f = in_day(FIRST_AT_ALL, days.first)?;
            first = first.into_iter().chain(f).min();
        }
        if last.map_or(true, |l| l < (days.last + 1) * DAY_MS) {
            let l = in_day(LAST_AT_ALL, days.last)?;
            last = last.into_iter().chain(l).max();
        }
    }
    Ok((first, last))
}

/// Duration figures of `s` from the blobs of every duration it counts.
fn ranked(ranks: &Ranks, s: &Sums, what: &str) -> Result<Dur> {
    if ranks.len() as i64 != s.dur_n {
        return Err(crate::error::Error::Internal(format!(
            "the rollup counts {} durations of {what}, its blobs {}",
            s.dur_n,
            ranks.len()
        )));
    }
    durations(s.dur_n, s.dur_sum, s.dur_sumsq, |k| {
        let k = k as usize;
        let v = ranks.at_rank(k).ok_or_else(|| {
            crate::error::Error::Internal(format!("no duration of rank {k} of {what}"))
        })?;
        Ok((v, ranks.next_rank(k, v)))
    })
}

/// Duration figures from the sums and ranks: min, max, median and p95 by `rank` (see `pair`).
fn durations(
    n: i64,
    sum: f64,
    sumsq: f64,
    rank: impl Fn(i64) -> Result<(i64, Option<i64>)>,
) -> Result<Dur> {
    if n == 0 {
        return Ok(Dur::default());
    }
    // Linear interpolation between closest ranks in 1/100 ms, as in `sql` (see its module doc).
    let pct = |p: i64| -> Result<Option<i64>> {
        let h = (n - 1) * p;
        let (lo, hi) = rank(h / 100)?;
        Ok(Some(lo * (100 - h % 100) + hi.unwrap_or(0) * (h % 100)))
    };
    Ok(Dur {
        n,
        min: Some(rank(0)?.0),
        max: Some(rank(n - 1)?.0),
        sum: sum as i64,
        sumsq,
        p50_x100: pct(50)?,
        p95_x100: pct(95)?,
    })
}

/// The first recovery of a workflow's sequence in the window (FIRST_RECOVERY).
struct FirstRecovery {
    at: i64,
    ext_id: String,
    /// When its streak's first failure stopped.
    rec_from: i64,
    rec_ms: Option<i64>,
    stopped_at: Option<i64>,
}

/// The first finished run of a workflow's sequence in the window (FIRST_FINISHED).
struct FirstFinished {
    at: i64,
    ext_id: String,
    stopped_at: Option<i64>,
}

/// The window's recoveries of workflow `wf` on `branch` in `b` from the summed ones: (count, how many have
/// a length, sum of lengths), after mending the first recovery when its streak began earlier.
fn crossing(
    conn: &Connection,
    b: &Covered,
    branch: Option<&str>,
    wf: i64,
    s: &Sums,
) -> Result<(i64, i64, f64)> {
    let (mut n, mut timed, mut sum) = (s.rec_n, s.rec_timed, s.rec_sum);
    if n == 0 {
        return Ok((n, timed, sum));
    }
    let at = params![b.project, branch, wf, b.start, b.end];
    let first = conn
        .prepare_cached(FIRST_RECOVERY)?
        .query_row(at, |r| {
            Ok(FirstRecovery {
                at: r.get(0)?,
                ext_id: r.get(1)?,
                rec_from: r.get(2)?,
                rec_ms: r.get(3)?,
                stopped_at: r.get(4)?,
            })
        })
        .optional()?;
    let Some(rec) = first else {
        return Ok((n, timed, sum));
    };
    if rec.rec_from >= b.start {
        return Ok((n, timed, sum));
    }
    // Its streak began before the window: take it out, then count it from its first failure
    // inside the window, if it has one (the window's first finished run, when not itself).
    n -= 1;
    if let Some(ms) = rec.rec_ms {
        timed -= 1;
        sum -= ms as f64;
    }
    let finished = conn
        .prepare_cached(FIRST_FINISHED)?
        .query_row(at, |r| {
            Ok(FirstFinished {
                at: r.get(0)?,
                ext_id: r.get(1)?,
                stopped_at: r.get(2)?,
            })
        })
        .optional()?;
    if let Some(f) = finished {
        if (f.at, &f.ext_id) != (rec.at, &rec.ext_id) {
            n += 1;
            if let (Some(a), Some(b)) = (rec.stopped_at, f.stopped_at) {
                timed += 1;
                sum += a.saturating_sub(b) as f64;
            }
        }
    }
    Ok((n, timed, sum))
}

// ------------------------------------------------------------------ jobs

/// The day rows of the whole days [?4, ?5) of the jobs of workflow ?3 on branch ?2 of project
/// ?1 with a name containing ?6 and after ?7: name, day, the sums, the durations' blob.
const JOB_DAYS: &str = "SELECT name, day, total, ok, bad, canceled, open, credits, dur_n,
    dur_sum, dur_sumsq, durs
    FROM insights_job_days WHERE project_id = +?1 AND branch = +?2 AND workflow_id = +?3
      AND day >= +?4 AND day < +?5 AND (+?6 IS NULL OR instr(name, +?6) > 0)
      AND (+?7 IS NULL OR name > +?7)";
/// The same over every branch (?2 unused), from the all-branch rows.
const JOB_DAYS_ALL: &str = "SELECT name, day, total, ok, bad, canceled, open, credits, dur_n,
    dur_sum, dur_sumsq, durs
    FROM insights_all_job_days WHERE project_id = +?1 AND workflow_id = +?3
      AND day >= +?4 AND day < +?5 AND (+?6 IS NULL OR instr(name, +?6) > 0)
      AND (+?7 IS NULL OR name > +?7) AND +?2 IS NULL";

/// The same over the jobs of the runs created in [?4, ?5), with their first and last created_at
/// and their durations as a sorted blob (`pipestat_durs`, src/store/rollups/durations.rs).
const JOB_RUNS: &str = "SELECT name, count(*), sum(status = 'success'),
    sum(status = 'failed' OR status = 'error' OR status = 'timeout'), sum(status = 'canceled'),
    sum(status = 'queued' OR status = 'running' OR status = 'waiting'), total(credits_used),
    count(d), total(d), total(CAST(d AS REAL) * d), min(at), max(at), pipestat_durs(d)
    FROM (SELECT j.name, j.status, j.credits_used, r.created_at AS at,
        CASE WHEN j.stopped_at IS NOT NULL THEN max(j.stopped_at - coalesce(j.started_at, j.created_at), 0) END AS d
      FROM runs r JOIN jobs j ON j.run_id = r.id
      WHERE r.project_id = +?1 AND r.branch = +?2 AND r.workflow_id = +?3
        AND r.created_at >= +?4 AND r.created_at < +?5 AND (+?6 IS NULL OR instr(j.name, +?6) > 0)
        AND (+?7 IS NULL OR j.name > +?7))
    GROUP BY name";
/// The same for the runs without a branch (?2 unused).
const JOB_RUNS_NULL: &str = "SELECT name, count(*), sum(status = 'success'),
    sum(status = 'failed' OR status = 'error' OR status = 'timeout'), sum(status = 'canceled'),
    sum(status = 'queued' OR status = 'running' OR status = 'waiting'), total(credits_used),
    count(d), total(d), total(CAST(d AS REAL) * d), min(at), max(at), pipestat_durs(d)
    FROM (SELECT j.name, j.status, j.credits_used, r.created_at AS at,
        CASE WHEN j.stopped_at IS NOT NULL THEN max(j.stopped_at - coalesce(j.started_at, j.created_at), 0) END AS d
      FROM runs r JOIN jobs j ON j.run_id = r.id
      WHERE r.project_id = +?1 AND r.branch IS NULL AND r.workflow_id = +?3 AND +?2 IS NULL
        AND r.created_at >= +?4 AND r.created_at < +?5 AND (+?6 IS NULL OR instr(j.name, +?6) > 0)
        AND (+?7 IS NULL OR j.name > +?7))
    GROUP BY name";

/// The first and last created_at in [?4, ?5) of a run of workflow ?3 on branch ?2 with a job
/// named ?6 (within one day, where the rollup says there is one).
const JOB_FIRST_AT: &str = "SELECT r.created_at FROM runs r
    WHERE r.project_id = +?1 AND r.branch = +?2 AND r.workflow_id = +?3 AND r.created_at >= +?4
      AND r.created_at < +?5 AND EXISTS (SELECT 1 FROM jobs j WHERE j.run_id = r.id AND j.name = +?6)
    ORDER BY r.created_at LIMIT 1";
const JOB_LAST_AT: &str = "SELECT r.created_at FROM runs r
    WHERE r.project_id = +?1 AND r.branch = +?2 AND r.workflow_id = +?3 AND r.created_at >= +?4
      AND r.created_at < +?5 AND EXISTS (SELECT 1 FROM jobs j WHERE j.run_id = r.id AND j.name = +?6)
    ORDER BY r.created_at DESC LIMIT 1";
/// The same on any branch (?2 unused).
const JOB_FIRST_AT_ALL: &str = "SELECT r.created_at FROM runs r INDEXED BY runs_by_project_time
    WHERE r.project_id = +?1 AND +r.workflow_id = +?3 AND r.created_at >= +?4
      AND r.created_at < +?5 AND +?2 IS NULL
      AND EXISTS (SELECT 1 FROM jobs j WHERE j.run_id = r.id AND j.name = +?6)
    ORDER BY r.created_at LIMIT 1";
const JOB_LAST_AT_ALL: &str = "SELECT r.created_at FROM runs r INDEXED BY runs_by_project_time
    WHERE r.project_id = +?1 AND +r.workflow_id = +?3 AND r.created_at >= +?4
      AND r.created_at < +?5 AND +?2 IS NULL
      AND EXISTS (SELECT 1 FROM jobs j WHERE j.run_id = r.id AND j.name = +?6)
    ORDER BY r.created_at DESC LIMIT 1";

/// The statements of the jobs path, for `EXPLAIN QUERY PLAN` in benches/circleci.rs.
pub const BENCHED_JOBS: &[(&str, &str)] = &[
    ("jobs (rollup): JOB_DAYS", JOB_DAYS),
    ("jobs (rollup): JOB_DAYS_ALL", JOB_DAYS_ALL),
    ("jobs (rollup): JOB_RUNS", JOB_RUNS),
    ("jobs (rollup): JOB_ROWS_ALL", JOB_ROWS_ALL),
    ("jobs (rollup): JOB_RUNS_NULL", JOB_RUNS_NULL),
    ("jobs (rollup): JOB_FIRST_AT", JOB_FIRST_AT),
    ("jobs (rollup): JOB_FIRST_AT_ALL", JOB_FIRST_AT_ALL),
];

/// The first and last of something: days, or created_at times.
#[derive(Clone, Copy)]
struct Span {
    first: i64,
    last: i64,
}

impl Span {
    /// Widens `span` to hold [first, last]; a span of that range alone when there is none.
    fn widen(span: &mut Option<Span>, first: i64, last: i64) {
        *span = Some(match *span {
            Some(s) => Span {
                first: s.first.min(first),
                last: s.last.max(last),
            },
            None => Span { first, last },
        });
    }
}

/// What the day rows and the runs read give one job name.
#[derive(Default)]
struct JobSums {
    s: Sums,
    /// The whole days' rows, added to `s` after the runs read.
    day_rows: DaySums,
    /// First and last day with jobs, of the whole days.
    days: Option<Span>,
    /// First and last created_at of the jobs' runs read from the runs table.
    raw: Option<Span>,
    /// Every duration: the blobs of the day rows and of the runs read.
    ranks: Ranks,
}

/// Per-job-name figures of the jobs of `workflow`'s runs in `b`, as `sql::job_metrics` gives
/// them: names containing `filter`, after `after`, at most `limit`.
pub fn jobs(
    conn: &Connection,
    b: &Covered,
    workflow: i64,
    filter: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<(String, Agg)>> {
    let mut by_name: std::collections::BTreeMap<String, JobSums> = Default::default();
    let (first_day, end_day) = b.whole_days();
    for (sql, from, to) in b.raw_ranges(JOB_RUNS, JOB_ROWS_ALL, JOB_RUNS_NULL) {
        if sql == JOB_ROWS_ALL {
            let at = params![b.project, b.branch, workflow, from, to, filter, after];
            job_rows(conn, at, &mut by_name)?;
            continue;
        }
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params![
            b.project, b.branch, workflow, from, to, filter, after
        ])?;
        while let Some(r) = rows.next()? {
            let e = by_name.entry(r.get(0)?).or_default();
            e.s.add(&job_sums_at(r, 1)?);
            let (first, last): (i64, i64) = (r.get(10)?, r.get(11)?);
            Span::widen(&mut e.raw, first, last);
            if let ValueRef::Blob(blob) = r.get_ref(12)? {
                e.ranks.push(blob);
            }
        }
    }
    if first_day < end_day {
        let mut stmt = conn.prepare_cached(b.pick(JOB_DAYS, JOB_DAYS_ALL))?;
        let mut rows = stmt.query(params![
            b.project, b.branch, workflow, first_day, end_day, filter, after
        ])?;
        while let Some(r) = rows.next()? {
            let s = job_sums_at(r, 2)?;
            let e = by_name.entry(r.get(0)?).or_default();
            e.day_rows.add(&s);
            if s.total == 0 {
                continue;
            }
            let day: i64 = r.get(1)?;
            Span::widen(&mut e.days, day, day);
            if let ValueRef::Blob(blob) = r.get_ref(11)? {
                e.ranks.push(blob);
            }
        }
    }

    for j in by_name.values_mut() {
        let days = j.day_rows.sums();
        j.s.add(&days);
    }
    let mut out = Vec::new();
    for (name, j) in by_name.into_iter().filter(|(_, j)| j.s.total > 0) {
        if out.len() as i64 >= limit {
            break;
        }
        let s = &j.s;
        // The first run with this job: the earliest of the runs read and of the first whole day
        // that has one (a walk within that day); the last the other way round.
        let in_day = |sql: &str, day: i64| -> Result<Option<i64>> {
            let (from, to) = (day * DAY_MS, (day + 1) * DAY_MS);
            Ok(conn
                .prepare_cached(sql)?
                .query_row(
                    params![b.project, b.branch, workflow, from, to, name],
                    |r| r.get(0),
                )
                .optional()?)
        };
        let (mut first_at, mut last_at) = (j.raw.map(|r| r.first), j.raw.map(|r| r.last));
        if let Some(days) = j.days {
            // Whole days lie after the leading partial day and before the trailing one, so a
            // walk is needed only when the runs read do not already hold an earlier (later) one.
            if first_at.map_or(true, |f| f >= days.first * DAY_MS) {
                let f = in_day(b.pick(JOB_FIRST_AT, JOB_FIRST_AT_ALL), days.first)?;
                first_at = first_at.into_iter().chain(f).min();
            }
            if last_at.map_or(true, |l| l < (days.last + 1) * DAY_MS) {
                let l = in_day(b.pick(JOB_LAST_AT, JOB_LAST_AT_ALL), days.last)?;
                last_at = last_at.into_iter().chain(l).max();
            }
        }
        let dur = ranked(&j.ranks, s, &format!("job {name:?}"))?;
        let agg = s.agg(dur, first_at, last_at);
        out.push((name, agg));
    }
    Ok(out)
}

/// The jobs of the runs of every branch (?2 unused) created in [?4, ?5), as JOB_RUNS reads them
/// but one row each, in the order of runs_by_project_time, added up by `job_rows`: a day of the
/// busiest project's jobs of all branches is about 15,000 rows, which a `GROUP BY` would sort.
const JOB_ROWS_ALL: &str = "SELECT j.name, j.status, j.credits_used, r.created_at,
    CASE WHEN j.stopped_at IS NOT NULL THEN max(j.stopped_at - coalesce(j.started_at, j.created_at), 0) END
    FROM runs r INDEXED BY runs_by_project_time JOIN jobs j ON j.run_id = r.id
    WHERE r.project_id = +?1 AND +r.workflow_id = +?3 AND +?2 IS NULL
      AND r.created_at >= +?4 AND r.created_at < +?5 AND (+?6 IS NULL OR instr(j.name, +?6) > 0)
      AND (+?7 IS NULL OR j.name > +?7)";

/// One job name's jobs as `job_rows` adds them up: integer sums exactly, as `total()` sums
/// integers, the squares as it sums floats.
#[derive(Default)]
struct JobRows {
    counts: Sums,
    credits: i128,
    dur_sum: i128,
    dur_sumsq: Kbn,
    span: Option<Span>,
    durs: Vec<i64>,
}

/// A TEXT column's value (names and statuses are TEXT NOT NULL, stored by pipestat as UTF-8).
fn text(v: ValueRef<'_>) -> &str {
    match v {
        ValueRef::Text(t) => std::str::from_utf8(t).unwrap_or_default(),
        _ => "",
    }
}

/// Adds to `by_name`, per job name, the sums, first and last created_at and durations' blob of
/// JOB_ROWS_ALL's rows for the parameters `at` (what JOB_RUNS gives for one branch).
fn job_rows(
    conn: &Connection,
    at: &[&dyn rusqlite::ToSql],
    by_name: &mut std::collections::BTreeMap<String, JobSums>,
) -> Result<()> {
    let mut acc: std::collections::HashMap<String, JobRows> = Default::default();
    let mut stmt = conn.prepare_cached(JOB_ROWS_ALL)?;
    let mut rows = stmt.query(at)?;
    while let Some(r) = rows.next()? {
        let name = text(r.get_ref(0)?);
        if !acc.contains_key(name) {
            acc.insert(name.to_owned(), JobRows::default());
        }
        let a = acc.get_mut(name).expect("inserted above");
        let status = text(r.get_ref(1)?);
        let c = &mut a.counts;
        c.total += 1;
        match status {
            "success" => c.ok += 1,
            "failed" | "error" | "timeout" => c.bad += 1,
            "canceled" => c.canceled += 1,
            "queued" | "running" | "waiting" => c.open += 1,
            _ => {}
        }
        a.credits += i128::from(r.get::<_, i64>(2)?);
        let created: i64 = r.get(3)?;
        Span::widen(&mut a.span, created, created);
        if let Some(d) = r.get::<_, Option<i64>>(4)? {
            c.dur_n += 1;
            a.dur_sum += i128::from(d);
            a.dur_sumsq.add(d as f64 * d as f64);
            a.durs.push(d);
        }
    }
    for (name, mut a) in acc {
        let e = by_name.entry(name).or_default();
        e.s.add(&Sums {
            credits: a.credits as f64,
            dur_sum: a.dur_sum as f64,
            dur_sumsq: a.dur_sumsq.value(),
            ..a.counts
        });
        if let Some(x) = a.span {
            Span::widen(&mut e.raw, x.first, x.last);
        }
        a.durs.sort_unstable();
        e.ranks
            .push(&crate::store::rollups::durations::encode(&a.durs));
    }
    Ok(())
}

/// Columns `at`..`at` + 9 of a sums row: count, the four status counts, credits, and the
/// durations' count, sum and sum of squares.
fn job_sums_at(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Sums> {
    Ok(Sums {
        total: r.get(at)?,
        ok: r.get(at + 1)?,
        bad: r.get(at + 2)?,
        canceled: r.get(at + 3)?,
        open: r.get(at + 4)?,
        credits: r.get(at + 5)?,
        dur_n: r.get(at + 6)?,
        dur_sum: r.get(at + 7)?,
        dur_sumsq: r.get(at + 8)?,
        ..Sums::default()
    })
}
