//! Workflow figures of one branch from the day rollup, for the workflows and summary routes.
//!
//! The same numbers as `sql::workflow_metrics` and `sql::mttr` (tests compare the two), without
//! passing every run of the window through window functions:
//!
//! - additive figures (counts, credits, duration count, sum and sum of squares, recoveries) are
//!   the `insights_days` rows of the window's whole UTC days, plus the runs of its two partial
//!   days read from the covering index runs_insights;
//! - min, max, median and p95 are picked by rank from runs_insights_dur, which holds a branch's
//!   runs in (workflow, duration) order: with n durations in the window (known from the sums),
//!   the value of rank k is the row at offset k of the window's durations in that order (or
//!   n − 1 − k from the other end, whichever is nearer), so a rank costs a seek and a walk over
//!   the rows before it, never a sort;
//! - MTTR adds up the recoveries kept on the runs (`rec_from`, `rec_ms`, see
//!   src/store/rollups/circleci.rs). They are the recoveries of each branch's whole sequence; in the
//!   window's sequence they are the same but for the first recovery of the window when its
//!   streak began before the window: that one counts only when one of its failures is inside,
//!   from the first of those (at most one per workflow, found with two seeks).
//!
//! Statements are constants with every value bound (written `+?N`: with a bare `?N` in a range,
//! SQLite re-plans a statement whenever the bound values change), and each is an index seek: one for the day
//! rows, two for the partial days, and per workflow with runs in the window at most eight
//! (first and last run, four ranks, the crossing recovery), bounded by the page size.

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};

use super::sql::{Agg, Branches, Dur, Scope};
use crate::error::Result;
use crate::store::rollups::durations::Ranks;

const DAY_MS: i64 = 86_400_000;

/// What the rollups answer for: the runs of one branch of a project created in [start, end).
#[derive(Debug, Clone, Copy)]
pub struct OneBranch<'a> {
    pub project: i64,
    pub branch: &'a str,
    pub start: i64,
    pub end: i64,
}

impl<'a> OneBranch<'a> {
    /// The runs of `s` when it reads one branch.
    pub fn of(s: &Scope<'a>) -> Option<OneBranch<'a>> {
        match s.branches {
            Branches::One(branch) => Some(OneBranch {
                project: s.project,
                branch,
                start: s.start,
                end: s.end,
            }),
            Branches::Set(_) | Branches::All => None,
        }
    }

    /// The window's whole UTC days, as day numbers [first, end); empty when there is none.
    fn whole_days(&self) -> (i64, i64) {
        let first = self.start.div_euclid(DAY_MS) + i64::from(self.start.rem_euclid(DAY_MS) != 0);
        (first, self.end.div_euclid(DAY_MS))
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

fn sums_row(r: &rusqlite::Row) -> rusqlite::Result<(i64, Sums)> {
    Ok((
        r.get(0)?,
        Sums {
            rec_n: r.get(10)?,
            rec_timed: r.get(11)?,
            rec_sum: r.get(12)?,
            ..job_sums(r)?
        },
    ))
}

/// The whole days [?3, ?4) of branch ?2 of project ?1 (workflow ?5, or all), per workflow.
const DAYS: &str = "SELECT workflow_id, sum(total), sum(ok), sum(bad), sum(canceled), sum(open),
    total(credits), sum(dur_n), total(dur_sum), total(dur_sumsq), sum(rec_n), sum(rec_timed),
    total(rec_sum)
    FROM insights_days WHERE project_id = +?1 AND branch = +?2 AND (+?5 IS NULL OR workflow_id = +?5)
      AND day >= +?3 AND day < +?4
    GROUP BY workflow_id";

/// The runs created in [?3, ?4) of branch ?2 of project ?1 (workflow ?5, or all), per workflow:
/// a seek per workflow into runs_insights. `d` is the duration, written as in
/// runs_insights_dur.
const RUNS: &str = "SELECT workflow_id, count(*), sum(status = 'success'),
    sum(status = 'failed' OR status = 'error' OR status = 'timeout'), sum(status = 'canceled'),
    sum(status = 'queued' OR status = 'running' OR status = 'waiting'), total(credits_used),
    count(d), total(d), total(CAST(d AS REAL) * d), count(rec_from), count(rec_ms), total(rec_ms)
    FROM (SELECT workflow_id, status, credits_used, rec_from, rec_ms,
        (CASE WHEN stopped_at IS NOT NULL THEN max(stopped_at - coalesce(started_at, created_at), 0) END) AS d
      FROM runs
      WHERE project_id = +?1 AND branch = +?2
        AND workflow_id IN (SELECT id FROM workflows WHERE project_id = +?1 AND (+?5 IS NULL OR id = +?5))
        AND created_at >= +?3 AND created_at < +?4)
    GROUP BY workflow_id";

/// The workflows of project ?1 (only ?2 when given) named after ?3, by name.
const WORKFLOWS: &str = "SELECT id, name FROM workflows
    WHERE project_id = +?1 AND (+?2 IS NULL OR id = +?2) AND (+?3 IS NULL OR name > +?3) ORDER BY name";

/// First and last created_at in the window of one workflow (?3) of branch ?2, [?4, ?5).
const FIRST_LAST: &str = "SELECT
    (SELECT min(created_at) FROM runs WHERE project_id = +?1 AND branch = +?2 AND workflow_id = +?3
        AND created_at >= +?4 AND created_at < +?5),
    (SELECT max(created_at) FROM runs WHERE project_id = +?1 AND branch = +?2 AND workflow_id = +?3
        AND created_at >= +?4 AND created_at < +?5)";

/// The durations of ranks ?6 and after (at most ?7) among one workflow's runs in the window, in
/// ascending and descending order, from runs_insights_dur. The duration is written exactly as
/// in that index's expression, so the planner matches it; `+created_at` keeps the planner on
/// that index rather than one on created_at.
const RANK_ASC: &str = "SELECT
    (CASE WHEN stopped_at IS NOT NULL THEN max(stopped_at - coalesce(started_at, created_at), 0) END)
    FROM runs WHERE project_id = +?1 AND branch = +?2 AND workflow_id = +?3
      AND (CASE WHEN stopped_at IS NOT NULL THEN max(stopped_at - coalesce(started_at, created_at), 0) END) IS NOT NULL
      AND +created_at >= +?4 AND +created_at < +?5
    ORDER BY (CASE WHEN stopped_at IS NOT NULL THEN max(stopped_at - coalesce(started_at, created_at), 0) END)
    LIMIT +?7 OFFSET +?6";
const RANK_DESC: &str = "SELECT
    (CASE WHEN stopped_at IS NOT NULL THEN max(stopped_at - coalesce(started_at, created_at), 0) END)
    FROM runs WHERE project_id = +?1 AND branch = +?2 AND workflow_id = +?3
      AND (CASE WHEN stopped_at IS NOT NULL THEN max(stopped_at - coalesce(started_at, created_at), 0) END) IS NOT NULL
      AND +created_at >= +?4 AND +created_at < +?5
    ORDER BY (CASE WHEN stopped_at IS NOT NULL THEN max(stopped_at - coalesce(started_at, created_at), 0) END) DESC
    LIMIT +?7 OFFSET +?6";

/// The first recovery of one workflow's sequence in the window.
const FIRST_RECOVERY: &str = "SELECT created_at, ext_id, rec_from, rec_ms, stopped_at FROM runs
    WHERE project_id = +?1 AND branch = +?2 AND workflow_id = +?3 AND created_at >= +?4
      AND created_at < +?5 AND rec_from IS NOT NULL
    ORDER BY created_at, ext_id LIMIT 1";
/// The first finished run of one workflow's sequence in the window.
const FIRST_FINISHED: &str = "SELECT created_at, ext_id, stopped_at FROM runs
    WHERE project_id = +?1 AND branch = +?2 AND workflow_id = +?3 AND created_at >= +?4
      AND created_at < +?5
      AND (status = 'success' OR status = 'failed' OR status = 'error' OR status = 'timeout')
    ORDER BY created_at, ext_id LIMIT 1";

/// The statements of this path, for `EXPLAIN QUERY PLAN` in benches/circleci.rs.
pub const BENCHED: &[(&str, &str)] = &[
    ("workflows, summary (rollup): DAYS", DAYS),
    ("workflows, summary (rollup): RUNS", RUNS),
    ("workflows, summary (rollup): FIRST_LAST", FIRST_LAST),
    ("workflows, summary (rollup): RANK_ASC", RANK_ASC),
    ("workflows, summary (rollup): RANK_DESC", RANK_DESC),
    (
        "workflows, summary (rollup): FIRST_RECOVERY",
        FIRST_RECOVERY,
    ),
    (
        "workflows, summary (rollup): FIRST_FINISHED",
        FIRST_FINISHED,
    ),
];

/// Figures of each workflow with runs in `b` (only `workflow` when given), named after
/// `after`, by name, at most `limit`.
pub fn workflows(
    conn: &Connection,
    b: &OneBranch,
    workflow: Option<i64>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Figures>> {
    let mut sums: std::collections::HashMap<i64, Sums> = std::collections::HashMap::new();
    let mut add_rows = |sql: &str, from: i64, to: i64| -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let mut stmt = conn.prepare_cached(sql)?;
        for row in stmt.query_map(params![b.project, b.branch, from, to, workflow], sums_row)? {
            let (wf, s) = row?;
            sums.entry(wf).or_default().add(&s);
        }
        Ok(())
    };
    // Whole days [first_day, end_day); the runs of the partial days around them.
    let (first_day, end_day) = b.whole_days();
    if first_day < end_day {
        add_rows(DAYS, first_day, end_day)?;
        add_rows(RUNS, b.start, first_day * DAY_MS)?;
        add_rows(RUNS, end_day * DAY_MS, b.end)?;
    } else {
        add_rows(RUNS, b.start, b.end)?;
    }

    let mut out = Vec::new();
    let mut names = conn.prepare_cached(WORKFLOWS)?;
    let mut rows = names.query(params![b.project, workflow, after])?;
    while let Some(row) = rows.next()? {
        if out.len() as i64 >= limit {
            break;
        }
        let id: i64 = row.get(0)?;
        let Some(s) = sums.get(&id).filter(|s| s.total > 0) else {
            continue;
        };
        let at = params![b.project, b.branch, id, b.start, b.end];
        let (first_at, last_at) = conn
            .prepare_cached(FIRST_LAST)?
            .query_row(at, |r| Ok((r.get(0)?, r.get(1)?)))?;
        let dur = durations(s.dur_n, s.dur_sum, s.dur_sumsq, |k| {
            pair(conn, b, id, s.dur_n, k)
        })?;
        let (recoveries, rec_timed, rec_sum) = crossing(conn, b, id, s)?;
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

/// The durations of ranks k and k + 1 (0-based, ascending; the second None past the end) among
/// the n durations of workflow `wf`'s runs in `b`, walked to from the nearer end with RANK_ASC
/// or RANK_DESC.
fn pair(conn: &Connection, b: &OneBranch, wf: i64, n: i64, k: i64) -> Result<(i64, Option<i64>)> {
    let want: i64 = if k + 1 < n { 2 } else { 1 };
    let descending = k > n - 1 - k;
    let (sql, offset) = if descending {
        (RANK_DESC, n - k - want)
    } else {
        (RANK_ASC, k)
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut vals: Vec<i64> = stmt
        .query_map(
            params![b.project, b.branch, wf, b.start, b.end, offset, want],
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    if descending {
        vals.reverse();
    }
    match vals.as_slice() {
        [lo] => Ok((*lo, None)),
        [lo, hi] => Ok((*lo, Some(*hi))),
        _ => Err(crate::error::Error::Internal(format!(
            "the rollup counts {n} durations, the index fewer (rank {k})"
        ))),
    }
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

/// The window's recoveries of workflow `wf` in `b` from the summed ones: (count, how many have
/// a length, sum of lengths), after mending the first recovery when its streak began earlier.
fn crossing(conn: &Connection, b: &OneBranch, wf: i64, s: &Sums) -> Result<(i64, i64, f64)> {
    let (mut n, mut timed, mut sum) = (s.rec_n, s.rec_timed, s.rec_sum);
    if n == 0 {
        return Ok((n, timed, sum));
    }
    let at = params![b.project, b.branch, wf, b.start, b.end];
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

/// The whole days [?4, ?5) of the jobs of workflow ?3 on branch ?2 of project ?1, per job name
/// (a substring ?6 of it, names after ?7), with the first and last day that has any.
const JOB_DAYS: &str = "SELECT name, sum(total), sum(ok), sum(bad), sum(canceled), sum(open),
    total(credits), sum(dur_n), total(dur_sum), total(dur_sumsq),
    min(CASE WHEN total > 0 THEN day END), max(CASE WHEN total > 0 THEN day END)
    FROM insights_job_days WHERE project_id = +?1 AND branch = +?2 AND workflow_id = +?3
      AND day >= +?4 AND day < +?5 AND (+?6 IS NULL OR instr(name, +?6) > 0)
      AND (+?7 IS NULL OR name > +?7)
    GROUP BY name";

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

/// The duration blobs of job ?6's day rows of the whole days [?4, ?5).
const JOB_DAY_DURS: &str = "SELECT durs FROM insights_job_days
    WHERE project_id = +?1 AND branch = +?2 AND workflow_id = +?3 AND day >= +?4 AND day < +?5
      AND name = +?6";

/// The statements of the jobs path, for `EXPLAIN QUERY PLAN` in benches/circleci.rs.
pub const BENCHED_JOBS: &[(&str, &str)] = &[
    ("jobs (rollup): JOB_DAYS", JOB_DAYS),
    ("jobs (rollup): JOB_RUNS", JOB_RUNS),
    ("jobs (rollup): JOB_FIRST_AT", JOB_FIRST_AT),
    ("jobs (rollup): JOB_DAY_DURS", JOB_DAY_DURS),
];

/// The first and last of something: days, or created_at times.
#[derive(Clone, Copy)]
struct Span {
    first: i64,
    last: i64,
}

/// What the day rows and the partial days give one job name.
#[derive(Default)]
struct JobSums {
    s: Sums,
    /// First and last day with jobs, of the whole days.
    days: Option<Span>,
    /// First and last created_at in each partial day (before and after the whole days).
    head: Option<Span>,
    tail: Option<Span>,
    /// The durations of the partial days, then those of the whole days.
    ranks: Ranks,
}

/// Per-job-name figures of the jobs of `workflow`'s runs in `b`, as `sql::job_metrics` gives
/// them: names containing `filter`, after `after`, at most `limit`.
pub fn jobs(
    conn: &Connection,
    b: &OneBranch,
    workflow: i64,
    filter: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<(String, Agg)>> {
    let mut by_name: std::collections::BTreeMap<String, JobSums> = Default::default();
    let (first_day, end_day) = b.whole_days();
    let whole = first_day < end_day;
    let mut partial = |from: i64, to: i64, head: bool| -> Result<()> {
        if from >= to {
            return Ok(());
        }
        let mut stmt = conn.prepare_cached(JOB_RUNS)?;
        let mut rows = stmt.query(params![
            b.project, b.branch, workflow, from, to, filter, after
        ])?;
        while let Some(r) = rows.next()? {
            let e = by_name.entry(r.get(0)?).or_default();
            e.s.add(&job_sums(r)?);
            if let ValueRef::Blob(b) = r.get_ref(12)? {
                e.ranks.push(b);
            }
            let span = Some(Span {
                first: r.get(10)?,
                last: r.get(11)?,
            });
            if head {
                e.head = span;
            } else {
                e.tail = span;
            }
        }
        Ok(())
    };
    if whole {
        partial(b.start, first_day * DAY_MS, true)?;
        partial(end_day * DAY_MS, b.end, false)?;
        let mut stmt = conn.prepare_cached(JOB_DAYS)?;
        let mut rows = stmt.query(params![
            b.project, b.branch, workflow, first_day, end_day, filter, after
        ])?;
        while let Some(r) = rows.next()? {
            let e = by_name.entry(r.get(0)?).or_default();
            e.s.add(&job_sums(r)?);
            let (first, last): (Option<i64>, Option<i64>) = (r.get(10)?, r.get(11)?);
            e.days = first.zip(last).map(|(first, last)| Span { first, last });
        }
    } else {
        partial(b.start, b.end, true)?;
    }

    let mut out = Vec::new();
    for (name, mut j) in by_name.into_iter().filter(|(_, j)| j.s.total > 0) {
        if out.len() as i64 >= limit {
            break;
        }
        let s = &j.s;
        // The first run with this job: in the leading partial day, else on the first whole day
        // that has one, else in the trailing partial day; the last the other way round.
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
        let first_at = match (j.head, j.days, j.tail) {
            (Some(head), _, _) => Some(head.first),
            (None, Some(days), _) => in_day(JOB_FIRST_AT, days.first)?,
            (None, None, tail) => tail.map(|t| t.first),
        };
        let last_at = match (j.tail, j.days, j.head) {
            (Some(tail), _, _) => Some(tail.last),
            (None, Some(days), _) => in_day(JOB_LAST_AT, days.last)?,
            (None, None, head) => head.map(|h| h.last),
        };
        // Every duration of the window: the partial days' (from JOB_RUNS) and the day rows'.
        let ranks = &mut j.ranks;
        if j.days.is_some() {
            let mut stmt = conn.prepare_cached(JOB_DAY_DURS)?;
            let mut rows = stmt.query(params![
                b.project, b.branch, workflow, first_day, end_day, name
            ])?;
            while let Some(r) = rows.next()? {
                if let ValueRef::Blob(b) = r.get_ref(0)? {
                    ranks.push(b);
                }
            }
        }
        if ranks.len() as i64 != s.dur_n {
            return Err(crate::error::Error::Internal(format!(
                "the job rollup counts {} durations of job {name:?}, its blobs {}",
                s.dur_n,
                ranks.len()
            )));
        }
        let dur = durations(s.dur_n, s.dur_sum, s.dur_sumsq, |k| {
            let k = k as usize;
            let v = ranks.at_rank(k).ok_or_else(|| {
                crate::error::Error::Internal(format!("no duration of rank {k} of job {name:?}"))
            })?;
            Ok((v, ranks.next_rank(k, v)))
        })?;
        let agg = s.agg(dur, first_at, last_at);
        out.push((name, agg));
    }
    Ok(out)
}

/// Columns 1..=9 of every sums query: counts, credits and durations.
fn job_sums(r: &rusqlite::Row) -> rusqlite::Result<Sums> {
    Ok(Sums {
        total: r.get(1)?,
        ok: r.get(2)?,
        bad: r.get(3)?,
        canceled: r.get(4)?,
        open: r.get(5)?,
        credits: r.get(6)?,
        dur_n: r.get(7)?,
        dur_sum: r.get(8)?,
        dur_sumsq: r.get(9)?,
        ..Sums::default()
    })
}
