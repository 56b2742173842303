//! The SQL of the CircleCI Insights surface.
//!
//! Every statement is one constant text, run through `prepare_cached` with every value bound.
//! Aggregates are computed here, in SQL: counts and sums with `GROUP BY`, percentiles with
//! `ROW_NUMBER` and `COUNT(*) OVER`, failure streaks and flakiness with `LAG`, running sums and
//! `FIRST_VALUE`. The Rust side only turns the aggregated integers into the answer's units (see
//! `Dur`), but for the flaky tests: their flips and sums are read from the rows kept for them at
//! ingest and added up per test in Rust (see `flaky`).
//!
//! Parameters shared by the run queries: ?1 project id, ?2 window start (inclusive, ms),
//! ?3 window end (exclusive, ms), ?4 branch set as a JSON array (NULL for all branches),
//! ?5 workflow id (NULL for every workflow).
//!
//! Branch scopes. A run query is written for all branches, with the clause `ALL_BRANCHES`
//! (the window, and a check that ?4 is NULL). For one branch and for a set of branches,
//! `ByBranches` replaces that clause with `ONE_BRANCH` or `BRANCH_SET`, once per process, so
//! each scope has a text of its own that never changes. In those two, `+r.created_at` (a unary
//! plus, which makes the column an expression no index serves) keeps the planner off the time
//! index runs_by_project_time: it seeks the branch in an index that starts (project_id, branch)
//! instead, the covering runs_insights.
//!
//! Durations. The duration of a run or job in milliseconds is stopped_at − (started_at or
//! created_at), never negative, NULL while it has not stopped:
//! `CASE WHEN r.stopped_at IS NOT NULL THEN max(r.stopped_at - coalesce(r.started_at, r.created_at), 0) END`.
//!
//! Percentiles, by linear interpolation between closest ranks, h = (n − 1)·p (numpy's default),
//! in exact integer arithmetic: with p in percent, the lower rank is k = ((n−1)·p) div 100 and
//! the fraction f = ((n−1)·p) mod 100, so the value is x[k]·(100 − f) + x[k+1]·f, in units of
//! 1/100 of the ranked column. With `rn` the 1-based rank among non-NULL values and `n` their
//! count, the median of `dur` is
//! `sum(CASE WHEN dur IS NULL THEN NULL WHEN rn = ((n - 1) * 50) / 100 + 1 THEN dur * (100 - ((n - 1) * 50) % 100) WHEN rn = ((n - 1) * 50) / 100 + 2 THEN dur * (((n - 1) * 50) % 100) END)`.

use std::collections::HashMap;
use std::sync::OnceLock;

use rusqlite::{params, Connection, OptionalExtension, Params, Row, ToSql};

use crate::error::{Error, Result};

/// Runs a constant statement through the statement cache and collects every row through `f`.
fn all<T>(
    conn: &Connection,
    sql: &str,
    params: impl Params,
    f: impl FnMut(&Row) -> rusqlite::Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt
        .query_map(params, f)?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Aggregated figures of a set of runs or jobs, as integers straight from SQL.
#[derive(Debug, Default, Clone)]
pub struct Agg {
    pub total: i64,
    pub successful: i64,
    pub failed: i64,
    pub canceled: i64,
    pub unfinished: i64,
    pub credits: i64,
    pub dur: Dur,
    pub first_at: Option<i64>,
    pub last_at: Option<i64>,
}

/// Durations of a set, in milliseconds: count, min, max, sum, sum of squares, and the median
/// and p95 in 1/100 ms (see the module doc).
#[derive(Debug, Default, Clone)]
pub struct Dur {
    pub n: i64,
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub sum: i64,
    pub sumsq: f64,
    pub p50_x100: Option<i64>,
    pub p95_x100: Option<i64>,
}

impl Agg {
    /// The aggregate columns of a row, from column `at` on, in the order every aggregate query
    /// selects them: count(*), the four status counts, credits, the durations' count, min, max,
    /// sum, sum of squares, median and p95, then the first and last created_at.
    fn from_row(r: &Row, at: usize) -> rusqlite::Result<Agg> {
        let int = |i: usize| -> rusqlite::Result<i64> {
            Ok(r.get::<_, Option<i64>>(at + i)?.unwrap_or(0))
        };
        // Sums are taken with total(), a float that cannot overflow where sum() would fail on
        // absurd inputs (credits near 2^63), and saturate into i64 here.
        let big = |i: usize| -> rusqlite::Result<i64> {
            Ok(r.get::<_, Option<f64>>(at + i)?.unwrap_or(0.0) as i64)
        };
        Ok(Agg {
            total: int(0)?,
            successful: int(1)?,
            failed: int(2)?,
            canceled: int(3)?,
            unfinished: int(4)?,
            credits: big(5)?,
            dur: Dur {
                n: int(6)?,
                min: r.get(at + 7)?,
                max: r.get(at + 8)?,
                sum: big(9)?,
                sumsq: r.get::<_, Option<f64>>(at + 10)?.unwrap_or(0.0),
                p50_x100: r.get(at + 11)?,
                p95_x100: r.get(at + 12)?,
            },
            first_at: r.get(at + 13)?,
            last_at: r.get(at + 14)?,
        })
    }
}

/// Which branches a query reads; each has its own constant statement (an equality lets the
/// planner seek the covering index; a set is a JSON array read with `json_each`).
#[derive(Debug, Clone, Copy)]
pub enum Branches<'a> {
    One(&'a str),
    /// A JSON array of branch names.
    Set(&'a str),
    All,
}

impl<'a> Branches<'a> {
    fn value(self) -> Option<&'a str> {
        match self {
            Branches::One(b) | Branches::Set(b) => Some(b),
            Branches::All => None,
        }
    }
}

/// The clause of the window and the branches in every run query as written: all branches.
const ALL_BRANCHES: &str = "r.created_at >= ?2 AND r.created_at < ?3 AND ?4 IS NULL";
/// What replaces `ALL_BRANCHES` for one branch, ?4.
const ONE_BRANCH: &str = "+r.created_at >= ?2 AND +r.created_at < ?3 AND r.branch = ?4";
/// What replaces `ALL_BRANCHES` for a set of branches, ?4 a JSON array of names.
const BRANCH_SET: &str =
    "+r.created_at >= ?2 AND +r.created_at < ?3 AND r.branch IN (SELECT value FROM json_each(?4))";

/// A run query in each branch scope: its text as written (all branches), and the texts for one
/// branch and for a set, made from it on first use and kept for the life of the process.
struct ByBranches {
    all: &'static str,
    one_and_set: OnceLock<[String; 2]>,
}

impl ByBranches {
    const fn new(all: &'static str) -> ByBranches {
        ByBranches {
            all,
            one_and_set: OnceLock::new(),
        }
    }

    /// The text for `branches`.
    fn text(&'static self, branches: Branches) -> &'static str {
        let [one, set] = self.one_and_set.get_or_init(|| {
            assert_eq!(
                self.all.matches(ALL_BRANCHES).count(),
                1,
                "a run query has its branch clause once"
            );
            [ONE_BRANCH, BRANCH_SET].map(|clause| self.all.replacen(ALL_BRANCHES, clause, 1))
        });
        match branches {
            Branches::One(_) => one,
            Branches::Set(_) => set,
            Branches::All => self.all,
        }
    }
}

/// The filter on the runs of one query: which branches, which workflow.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub project: i64,
    pub start: i64,
    pub end: i64,
    pub branches: Branches<'a>,
    pub workflow: Option<i64>,
}

impl Scope<'_> {
    /// Runs `sql` in this scope's branch variant, ?1 to ?5 bound from the scope and `more` from
    /// ?6 on, and collects every row through `f`.
    fn rows<T>(
        &self,
        conn: &Connection,
        sql: &'static ByBranches,
        more: &[&dyn ToSql],
        f: impl FnMut(&Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let branches = self.branches.value();
        let mut values: Vec<&dyn ToSql> = vec![
            &self.project,
            &self.start,
            &self.end,
            &branches,
            &self.workflow,
        ];
        values.extend_from_slice(more);
        all(conn, sql.text(self.branches), values.as_slice(), f)
    }
}

/// Per-workflow metrics of the runs in scope, by workflow name, after ?6, at most ?7.
///
/// One window pass per workflow in duration order with NULL durations first: the rank among
/// durations is the row number less the workflow's NULLs, and the additive figures are
/// whole-partition window aggregates. Only the rows the percentiles need (and each workflow's first row) reach
/// the final `GROUP BY`, a handful per workflow instead of every run.
const WORKFLOW_METRICS: &str = "
WITH base AS (
    SELECT r.workflow_id AS wf, r.branch AS br, r.status AS st, r.credits_used AS cr,
        r.created_at AS at,
        CASE WHEN r.stopped_at IS NOT NULL
            THEN max(r.stopped_at - coalesce(r.started_at, r.created_at), 0) END AS dur
    FROM runs r
    WHERE r.project_id = ?1 AND r.created_at >= ?2 AND r.created_at < ?3 AND ?4 IS NULL
        AND (?5 IS NULL OR r.workflow_id = ?5)),
ranked AS (
    SELECT wf, dur, ROW_NUMBER() OVER w AS rownum,
        ROW_NUMBER() OVER w - COUNT(*) OVER a + COUNT(dur) OVER a AS rn, COUNT(dur) OVER a AS n,
        COUNT(*) OVER a AS c_total, SUM(st = 'success') OVER a AS c_ok,
        SUM(st = 'failed' OR st = 'error' OR st = 'timeout') OVER a AS c_bad,
        SUM(st = 'canceled') OVER a AS c_canceled,
        SUM(st = 'queued' OR st = 'running' OR st = 'waiting') OVER a AS c_open,
        TOTAL(cr) OVER a AS c_credits, MIN(dur) OVER a AS d_min, MAX(dur) OVER a AS d_max,
        TOTAL(dur) OVER a AS d_sum, TOTAL(CAST(dur AS REAL) * dur) OVER a AS d_sumsq,
        MIN(at) OVER a AS first_at, MAX(at) OVER a AS last_at
    FROM base WINDOW w AS (PARTITION BY wf ORDER BY dur),
        a AS (w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING))
SELECT ranked.wf, w.name, max(c_total), max(c_ok), max(c_bad), max(c_canceled), max(c_open),
    max(c_credits), max(n), max(d_min), max(d_max), max(d_sum), max(d_sumsq),
    sum(CASE WHEN dur IS NULL THEN NULL
        WHEN rn = ((n - 1) * 50) / 100 + 1 THEN dur * (100 - ((n - 1) * 50) % 100)
        WHEN rn = ((n - 1) * 50) / 100 + 2 THEN dur * (((n - 1) * 50) % 100) END),
    sum(CASE WHEN dur IS NULL THEN NULL
        WHEN rn = ((n - 1) * 95) / 100 + 1 THEN dur * (100 - ((n - 1) * 95) % 100)
        WHEN rn = ((n - 1) * 95) / 100 + 2 THEN dur * (((n - 1) * 95) % 100) END),
    max(first_at), max(last_at)
FROM ranked JOIN workflows w ON w.id = ranked.wf
WHERE (rownum = 1 OR rn = (n - 1) * 50 / 100 + 1 OR rn = (n - 1) * 50 / 100 + 2
        OR rn = (n - 1) * 95 / 100 + 1 OR rn = (n - 1) * 95 / 100 + 2)
    AND (?6 IS NULL OR w.name > ?6)
GROUP BY ranked.wf ORDER BY w.name LIMIT ?7";
static WORKFLOW_METRICS_IN: ByBranches = ByBranches::new(WORKFLOW_METRICS);

/// One workflow's aggregate.
#[derive(Debug, Clone)]
pub struct WorkflowAgg {
    pub id: i64,
    pub name: String,
    pub agg: Agg,
}

impl WorkflowAgg {
    fn from_row(r: &Row) -> rusqlite::Result<WorkflowAgg> {
        Ok(WorkflowAgg {
            id: r.get(0)?,
            name: r.get(1)?,
            agg: Agg::from_row(r, 2)?,
        })
    }
}

pub fn workflow_metrics(
    conn: &Connection,
    s: &Scope,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<WorkflowAgg>> {
    s.rows(
        conn,
        &WORKFLOW_METRICS_IN,
        &[&after, &limit],
        WorkflowAgg::from_row,
    )
}

/// MTTR per workflow: runs in (created_at, id) order with canceled, skipped and unfinished runs
/// left out; `bad` marks failed, error and timeout. One window pass, in the order of the covering
/// index: whether the previous run was bad (`LAG`), the running count of good runs (a running
/// `SUM`), and the position. The bad runs of one failure streak share that count, and the
/// success that ends the streak (a recovery: good after bad) has it plus one; so grouping the
/// bad runs and the recoveries by (count − 1 for a recovery) gives one group per streak. Its
/// first failure is the one at the lowest position (`min()`, whose bare column `stop` SQLite
/// takes from that row); the recovery lasts from that failure's stopped_at to its own.
const MTTR: &str = "
WITH seq AS (
    SELECT r.workflow_id AS wf, r.branch AS br, r.created_at AS at, r.ext_id AS id,
        r.stopped_at AS stop, (r.status <> 'success') AS bad
    FROM runs r
    WHERE r.project_id = ?1 AND r.created_at >= ?2 AND r.created_at < ?3 AND ?4 IS NULL
        AND (?5 IS NULL OR r.workflow_id = ?5)
        AND (r.status = 'success' OR r.status = 'failed' OR r.status = 'error' OR r.status = 'timeout')),
marked AS (
    SELECT wf, br, stop, bad, LAG(bad, 1, 0) OVER w AS prev,
        SUM(NOT bad) OVER (w ROWS UNBOUNDED PRECEDING) AS good, ROW_NUMBER() OVER w AS pos
    FROM seq WINDOW w AS (PARTITION BY wf, br ORDER BY at, id)),
streaks AS (
    SELECT wf, min(CASE WHEN bad THEN pos END) AS first_pos, stop AS first_stop,
        sum(CASE WHEN NOT bad THEN stop END) AS rec_stop, sum(NOT bad) AS recovered
    FROM marked WHERE bad OR prev GROUP BY wf, br, good - (NOT bad))
SELECT wf, sum(recovered), avg(rec_stop - first_stop) FROM streaks WHERE recovered
GROUP BY wf";
static MTTR_IN: ByBranches = ByBranches::new(MTTR);

/// One workflow's recoveries.
#[derive(Debug, Clone)]
pub struct Recoveries {
    pub workflow: i64,
    pub count: i64,
    /// The mean length in ms; None when no recovery has both stop times.
    pub mean_ms: Option<f64>,
}

/// Recoveries per workflow id.
pub fn mttr(conn: &Connection, s: &Scope) -> Result<Vec<Recoveries>> {
    s.rows(conn, &MTTR_IN, &[], |r| {
        Ok(Recoveries {
            workflow: r.get(0)?,
            count: r.get(1)?,
            mean_ms: r.get(2)?,
        })
    })
}

/// Per-job-name metrics of the jobs of workflow ?5's runs in scope: names containing ?6, after
/// ?7, at most ?8.
const JOB_METRICS: &str = "
WITH base AS (
    SELECT j.name AS name, j.status AS st, j.credits_used AS cr, r.created_at AS at,
        CASE WHEN j.stopped_at IS NOT NULL
            THEN max(j.stopped_at - coalesce(j.started_at, j.created_at), 0) END AS dur
    FROM runs r JOIN jobs j ON j.run_id = r.id
    WHERE r.project_id = ?1 AND r.created_at >= ?2 AND r.created_at < ?3 AND ?4 IS NULL
        AND r.workflow_id = ?5 AND (?6 IS NULL OR instr(j.name, ?6) > 0)
        AND (?7 IS NULL OR j.name > ?7)),
ranked AS (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY name ORDER BY dur NULLS LAST) AS rn,
        COUNT(dur) OVER (PARTITION BY name) AS n
    FROM base)
SELECT name,
    count(*), sum(st = 'success'), sum(st = 'failed' OR st = 'error' OR st = 'timeout'),
    sum(st = 'canceled'), sum(st = 'queued' OR st = 'running' OR st = 'waiting'), total(cr),
    count(dur), min(dur), max(dur), total(dur), total(CAST(dur AS REAL) * dur),
    sum(CASE WHEN dur IS NULL THEN NULL
        WHEN rn = ((n - 1) * 50) / 100 + 1 THEN dur * (100 - ((n - 1) * 50) % 100)
        WHEN rn = ((n - 1) * 50) / 100 + 2 THEN dur * (((n - 1) * 50) % 100) END),
    sum(CASE WHEN dur IS NULL THEN NULL
        WHEN rn = ((n - 1) * 95) / 100 + 1 THEN dur * (100 - ((n - 1) * 95) % 100)
        WHEN rn = ((n - 1) * 95) / 100 + 2 THEN dur * (((n - 1) * 95) % 100) END),
    min(at), max(at)
FROM ranked GROUP BY name ORDER BY name LIMIT ?8";
static JOB_METRICS_IN: ByBranches = ByBranches::new(JOB_METRICS);

/// Per-job-name metrics of the jobs of the workflow's runs in scope; `filter` is a substring of
/// the job name; names after `after`, at most `limit`.
pub fn job_metrics(
    conn: &Connection,
    s: &Scope,
    filter: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<(String, Agg)>> {
    s.rows(conn, &JOB_METRICS_IN, &[&filter, &after, &limit], |r| {
        Ok((r.get(0)?, Agg::from_row(r, 1)?))
    })
}

/// Per (workflow, branch) metrics of the runs in scope.
const BRANCH_METRICS: &str = "
WITH base AS (
    SELECT r.workflow_id AS wf, r.branch AS br, r.status AS st, r.credits_used AS cr,
        r.created_at AS at,
        CASE WHEN r.stopped_at IS NOT NULL
            THEN max(r.stopped_at - coalesce(r.started_at, r.created_at), 0) END AS dur
    FROM runs r
    WHERE r.project_id = ?1 AND r.created_at >= ?2 AND r.created_at < ?3 AND ?4 IS NULL
        AND (?5 IS NULL OR r.workflow_id = ?5)),
ranked AS (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY wf, br ORDER BY dur NULLS LAST) AS rn,
        COUNT(dur) OVER (PARTITION BY wf, br) AS n
    FROM base)
SELECT w.name, ranked.br,
    count(*), sum(st = 'success'), sum(st = 'failed' OR st = 'error' OR st = 'timeout'),
    sum(st = 'canceled'), sum(st = 'queued' OR st = 'running' OR st = 'waiting'), total(cr),
    count(dur), min(dur), max(dur), total(dur), total(CAST(dur AS REAL) * dur),
    sum(CASE WHEN dur IS NULL THEN NULL
        WHEN rn = ((n - 1) * 50) / 100 + 1 THEN dur * (100 - ((n - 1) * 50) % 100)
        WHEN rn = ((n - 1) * 50) / 100 + 2 THEN dur * (((n - 1) * 50) % 100) END),
    sum(CASE WHEN dur IS NULL THEN NULL
        WHEN rn = ((n - 1) * 95) / 100 + 1 THEN dur * (100 - ((n - 1) * 95) % 100)
        WHEN rn = ((n - 1) * 95) / 100 + 2 THEN dur * (((n - 1) * 95) % 100) END),
    min(at), max(at)
FROM ranked JOIN workflows w ON w.id = ranked.wf
GROUP BY ranked.wf, ranked.br ORDER BY w.name, ranked.br";
static BRANCH_METRICS_IN: ByBranches = ByBranches::new(BRANCH_METRICS);

/// The aggregate of one workflow's runs on one branch.
#[derive(Debug, Clone)]
pub struct BranchAgg {
    pub workflow: String,
    pub branch: Option<String>,
    pub agg: Agg,
}

/// Per (workflow, branch) metrics of the runs in scope.
pub fn branch_metrics(conn: &Connection, s: &Scope) -> Result<Vec<BranchAgg>> {
    s.rows(conn, &BRANCH_METRICS_IN, &[], |r| {
        Ok(BranchAgg {
            workflow: r.get(0)?,
            branch: r.get(1)?,
            agg: Agg::from_row(r, 2)?,
        })
    })
}

/// Whole-project (or whole-org) totals: one row per project of the given ids (JSON array ?1),
/// all branches. Additive figures only, so no ranking is needed: the percentile columns are
/// those of the other aggregate queries over NULL ranks, always NULL.
const PROJECT_TOTALS: &str = "
WITH base AS (
    SELECT r.project_id AS pid, r.status AS st, r.credits_used AS cr, r.created_at AS at,
        CASE WHEN r.stopped_at IS NOT NULL
            THEN max(r.stopped_at - coalesce(r.started_at, r.created_at), 0) END AS dur,
        NULL AS rn, NULL AS n
    FROM runs r
    WHERE r.project_id IN (SELECT value FROM json_each(?1))
        AND r.created_at >= ?2 AND r.created_at < ?3)
SELECT pid,
    count(*), sum(st = 'success'), sum(st = 'failed' OR st = 'error' OR st = 'timeout'),
    sum(st = 'canceled'), sum(st = 'queued' OR st = 'running' OR st = 'waiting'), total(cr),
    count(dur), min(dur), max(dur), total(dur), total(CAST(dur AS REAL) * dur),
    sum(CASE WHEN dur IS NULL THEN NULL
        WHEN rn = ((n - 1) * 50) / 100 + 1 THEN dur * (100 - ((n - 1) * 50) % 100)
        WHEN rn = ((n - 1) * 50) / 100 + 2 THEN dur * (((n - 1) * 50) % 100) END),
    sum(CASE WHEN dur IS NULL THEN NULL
        WHEN rn = ((n - 1) * 95) / 100 + 1 THEN dur * (100 - ((n - 1) * 95) % 100)
        WHEN rn = ((n - 1) * 95) / 100 + 2 THEN dur * (((n - 1) * 95) % 100) END),
    min(at), max(at)
FROM base GROUP BY pid";

/// One project's additive totals (no durations' ranks).
#[derive(Debug, Clone)]
pub struct ProjectAgg {
    pub project: i64,
    pub agg: Agg,
}

/// Additive totals per project id over the window, for the projects in `ids` (a JSON array).
pub fn project_totals(
    conn: &Connection,
    ids: &str,
    start: i64,
    end: i64,
) -> Result<Vec<ProjectAgg>> {
    all(conn, PROJECT_TOTALS, params![ids, start, end], |r| {
        Ok(ProjectAgg {
            project: r.get(0)?,
            agg: Agg::from_row(r, 1)?,
        })
    })
}

/// One run of a workflow as the recent-runs route lists it.
#[derive(Debug)]
pub struct RunRow {
    pub rowid: i64,
    pub id: String,
    pub branch: Option<String>,
    pub status: String,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub credits: i64,
    pub is_approval: bool,
    pub duration: Option<i64>,
}

impl RunRow {
    /// The columns of RECENT_RUNS and JOB_RUNS, in order.
    fn from_row(r: &Row) -> rusqlite::Result<RunRow> {
        Ok(RunRow {
            rowid: r.get(0)?,
            id: r.get(1)?,
            branch: r.get(2)?,
            status: r.get(3)?,
            created_at: r.get(4)?,
            started_at: r.get(5)?,
            stopped_at: r.get(6)?,
            credits: r.get(7)?,
            is_approval: r.get(8)?,
            duration: r.get(9)?,
        })
    }
}

/// Runs of workflow ?5 in scope, newest first, after the (created_at, rowid) position (?6, ?7),
/// at most ?8.
const RECENT_RUNS: &str = "
SELECT r.id, r.ext_id, r.branch, r.status, r.created_at, r.started_at, r.stopped_at,
    r.credits_used, EXISTS (SELECT 1 FROM jobs j WHERE j.run_id = r.id AND j.kind = 'approval'),
    CASE WHEN r.stopped_at IS NOT NULL
        THEN max(r.stopped_at - coalesce(r.started_at, r.created_at), 0) END
FROM runs r
WHERE r.project_id = ?1 AND r.created_at >= ?2 AND r.created_at < ?3 AND ?4 IS NULL
    AND r.workflow_id = ?5 AND (?6 IS NULL OR (r.created_at, r.id) < (?6, ?7))
ORDER BY r.created_at DESC, r.id DESC LIMIT ?8";
static RECENT_RUNS_IN: ByBranches = ByBranches::new(RECENT_RUNS);

/// Runs of one workflow, newest first, after the (created_at, rowid) position `after`.
pub fn recent_runs(
    conn: &Connection,
    s: &Scope,
    after: Option<(i64, i64)>,
    limit: i64,
) -> Result<Vec<RunRow>> {
    let (at, rowid) = after.unzip();
    s.rows(
        conn,
        &RECENT_RUNS_IN,
        &[&at, &rowid, &limit],
        RunRow::from_row,
    )
}

/// Runs of job ?9 of workflow ?5's runs in scope, newest first (by their run's created_at),
/// after the (run created_at, job rowid) position (?6, ?7), at most ?8.
const JOB_RUNS: &str = "
SELECT j.id, j.ext_id, r.branch, j.status, j.created_at, j.started_at, j.stopped_at,
    j.credits_used, j.kind = 'approval',
    CASE WHEN j.stopped_at IS NOT NULL
        THEN max(j.stopped_at - coalesce(j.started_at, j.created_at), 0) END
FROM runs r JOIN jobs j ON j.run_id = r.id
WHERE r.project_id = ?1 AND r.created_at >= ?2 AND r.created_at < ?3 AND ?4 IS NULL
    AND r.workflow_id = ?5 AND j.name = ?9
    AND (?6 IS NULL OR (r.created_at, j.id) < (?6, ?7))
ORDER BY r.created_at DESC, j.id DESC LIMIT ?8";
static JOB_RUNS_IN: ByBranches = ByBranches::new(JOB_RUNS);

/// Runs of one job of a workflow, newest first (by their workflow run's created_at), after
/// the (run created_at, job rowid) position `after`. `created_at` of each row is the run's.
pub fn job_runs(
    conn: &Connection,
    s: &Scope,
    job: &str,
    after: Option<(i64, i64)>,
    limit: i64,
) -> Result<Vec<RunRow>> {
    let (at, rowid) = after.unzip();
    s.rows(
        conn,
        &JOB_RUNS_IN,
        &[&at, &rowid, &limit, &job],
        RunRow::from_row,
    )
}

/// One bucket of the job time series.
#[derive(Debug)]
pub struct Bucket {
    pub name: String,
    pub at: i64,
    pub agg: Agg,
    pub min_started: Option<i64>,
    pub max_ended: Option<i64>,
    /// Median credits ×100 (see the module doc); a float, as credits near 2^63 overflow into one.
    pub credits_p50_x100: Option<f64>,
}

/// Per (job name, bucket of ?6 ms) metrics of the jobs of workflow ?5's runs in scope, after
/// the (name, bucket) position (?7, ?8), at most ?9; with the median of the credits.
const JOB_SERIES: &str = "
WITH base AS (
    SELECT j.name AS name, (r.created_at / ?6) * ?6 AS bucket, j.status AS st,
        j.credits_used AS cr, r.created_at AS at, j.started_at AS started,
        j.stopped_at AS stopped,
        CASE WHEN j.stopped_at IS NOT NULL
            THEN max(j.stopped_at - coalesce(j.started_at, j.created_at), 0) END AS dur
    FROM runs r JOIN jobs j ON j.run_id = r.id
    WHERE r.project_id = ?1 AND r.created_at >= ?2 AND r.created_at < ?3 AND ?4 IS NULL
        AND r.workflow_id = ?5 AND (?7 IS NULL OR (j.name, (r.created_at / ?6) * ?6) > (?7, ?8))),
ranked AS (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY name, bucket ORDER BY dur NULLS LAST) AS rn,
        COUNT(dur) OVER (PARTITION BY name, bucket) AS n,
        ROW_NUMBER() OVER (PARTITION BY name, bucket ORDER BY cr) AS crn,
        COUNT(*) OVER (PARTITION BY name, bucket) AS cn
    FROM base)
SELECT name, bucket,
    count(*), sum(st = 'success'), sum(st = 'failed' OR st = 'error' OR st = 'timeout'),
    sum(st = 'canceled'), sum(st = 'queued' OR st = 'running' OR st = 'waiting'), total(cr),
    count(dur), min(dur), max(dur), total(dur), total(CAST(dur AS REAL) * dur),
    sum(CASE WHEN dur IS NULL THEN NULL
        WHEN rn = ((n - 1) * 50) / 100 + 1 THEN dur * (100 - ((n - 1) * 50) % 100)
        WHEN rn = ((n - 1) * 50) / 100 + 2 THEN dur * (((n - 1) * 50) % 100) END),
    sum(CASE WHEN dur IS NULL THEN NULL
        WHEN rn = ((n - 1) * 95) / 100 + 1 THEN dur * (100 - ((n - 1) * 95) % 100)
        WHEN rn = ((n - 1) * 95) / 100 + 2 THEN dur * (((n - 1) * 95) % 100) END),
    min(at), max(at),
    min(started), max(stopped),
    sum(CASE WHEN cr IS NULL THEN NULL
        WHEN crn = ((cn - 1) * 50) / 100 + 1 THEN cr * (100 - ((cn - 1) * 50) % 100)
        WHEN crn = ((cn - 1) * 50) / 100 + 2 THEN cr * (((cn - 1) * 50) % 100) END)
FROM ranked GROUP BY name, bucket ORDER BY name, bucket LIMIT ?9";
static JOB_SERIES_IN: ByBranches = ByBranches::new(JOB_SERIES);

/// Per (job name, bucket of `bucket_ms`) metrics, after the (name, bucket) position `after`.
pub fn job_series(
    conn: &Connection,
    s: &Scope,
    bucket_ms: i64,
    after: Option<(&str, i64)>,
    limit: i64,
) -> Result<Vec<Bucket>> {
    let (name, bucket) = after.unzip();
    s.rows(
        conn,
        &JOB_SERIES_IN,
        &[&bucket_ms, &name, &bucket, &limit],
        |r| {
            Ok(Bucket {
                name: r.get(0)?,
                at: r.get(1)?,
                agg: Agg::from_row(r, 2)?,
                min_started: r.get(17)?,
                max_ended: r.get(18)?,
                credits_p50_x100: r.get::<_, Option<f64>>(19)?,
            })
        },
    )
}

/// Distinct branches of a project's runs in the window (optionally of one workflow).
const BRANCHES: &str = "SELECT DISTINCT r.branch FROM runs r WHERE r.project_id = ?1
    AND r.created_at >= ?2 AND r.created_at < ?3 AND (?4 IS NULL OR r.workflow_id = ?4)
    AND r.branch IS NOT NULL ORDER BY r.branch LIMIT 5000";

pub fn branches(
    conn: &Connection,
    project: i64,
    start: i64,
    end: i64,
    workflow: Option<i64>,
) -> Result<Vec<String>> {
    all(
        conn,
        BRANCHES,
        params![project, start, end, workflow],
        |r| r.get(0),
    )
}

const WORKFLOW_NAMES: &str = "SELECT name FROM workflows WHERE project_id = ?1 ORDER BY name";

pub fn workflow_names(conn: &Connection, project: i64) -> Result<Vec<String>> {
    all(conn, WORKFLOW_NAMES, [project], |r| r.get(0))
}

/// A project as this surface needs it.
#[derive(Debug, Clone)]
pub struct Project {
    pub id: i64,
    pub slug: String,
    pub default_branch: String,
}

fn project_row(r: &Row) -> rusqlite::Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        slug: r.get(1)?,
        default_branch: r.get(2)?,
    })
}

const PROJECT_BY_SLUG: &str = "SELECT id, slug, default_branch FROM projects WHERE slug = ?1";

pub fn project(conn: &Connection, slug: &str) -> Result<Option<Project>> {
    Ok(conn
        .prepare_cached(PROJECT_BY_SLUG)?
        .query_row([slug], project_row)
        .optional()?)
}

/// Projects whose slug starts with "vcs/org/" (?1 is that prefix; matched by range, not LIKE,
/// so `%` and `_` in names mean themselves).
const PROJECTS_OF_ORG: &str = "SELECT id, slug, default_branch FROM projects
    WHERE slug > ?1 AND slug < ?1 || x'ff' ORDER BY slug";

pub fn projects_of_org(conn: &Connection, prefix: &str) -> Result<Vec<Project>> {
    all(conn, PROJECTS_OF_ORG, [prefix], project_row)
}

const WORKFLOW_ID: &str = "SELECT id FROM workflows WHERE project_id = ?1 AND name = ?2";

pub fn workflow_id(conn: &Connection, project: i64, name: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached(WORKFLOW_ID)?
        .query_row(params![project, name], |r| r.get(0))
        .optional()?)
}

/// Test counts per run of the 10 most recent runs of workflow ?5 in scope (the window is the
/// whole of time): run id, number, then successes, failures, errors, skipped and all results.
const TEST_RUNS: &str = "
WITH recent AS (
    SELECT r.id, r.ext_id, r.number, r.created_at
    FROM runs r
    WHERE r.project_id = ?1 AND r.created_at >= ?2 AND r.created_at < ?3 AND ?4 IS NULL
        AND r.workflow_id = ?5
    ORDER BY r.created_at DESC, r.id DESC LIMIT 10),
res AS (
    SELECT rc.id AS run, rc.ext_id AS run_ext, rc.number AS number, rc.created_at AS at,
        j.name AS job, t.classname AS cls, t.name AS test, t.file AS file, t.suite AS suite,
        t.result AS result, CAST(round(t.duration * 1000) AS INTEGER) AS dur
    FROM recent rc JOIN jobs j ON j.run_id = rc.id JOIN test_results t ON t.job_id = j.id)
SELECT run_ext, number, sum(result = 'success'), sum(result = 'failure'),
    sum(result = 'error'), sum(result = 'skipped'), count(*)
FROM res GROUP BY run ORDER BY max(at) DESC, run DESC";
static TEST_RUNS_IN: ByBranches = ByBranches::new(TEST_RUNS);

/// The test counts of one run.
#[derive(Debug, Clone)]
pub struct TestRun {
    /// The run's id (its workflow id in CircleCI's words).
    pub run_id: String,
    pub pipeline_number: i64,
    pub success: i64,
    pub failure: i64,
    pub error: i64,
    pub skipped: i64,
    pub total: i64,
}

impl TestRun {
    fn from_row(r: &Row) -> rusqlite::Result<TestRun> {
        Ok(TestRun {
            run_id: r.get(0)?,
            pipeline_number: r.get(1)?,
            success: r.get(2)?,
            failure: r.get(3)?,
            error: r.get(4)?,
            skipped: r.get(5)?,
            total: r.get(6)?,
        })
    }
}

/// The scope of the test queries: the scope's branches and workflow over the whole of time.
fn all_time<'a>(s: &Scope<'a>) -> Scope<'a> {
    Scope {
        start: i64::MIN,
        end: i64::MAX,
        ..*s
    }
}

/// Test counts per run of the 10 most recent runs of the scope's workflow (no time window).
pub fn test_runs(conn: &Connection, s: &Scope) -> Result<Vec<TestRun>> {
    all_time(s).rows(conn, &TEST_RUNS_IN, &[], TestRun::from_row)
}

/// Per-test figures over the results of the 10 most recent runs of workflow ?5 in scope (as in
/// TEST_RUNS), with two rankings: by failures (most first) and by p95 duration (slowest first),
/// each with the count of tests tied with it.
const TEST_STATS: &str = "
WITH recent AS (
    SELECT r.id, r.ext_id, r.number, r.created_at
    FROM runs r
    WHERE r.project_id = ?1 AND r.created_at >= ?2 AND r.created_at < ?3 AND ?4 IS NULL
        AND r.workflow_id = ?5
    ORDER BY r.created_at DESC, r.id DESC LIMIT 10),
res AS (
    SELECT rc.id AS run, rc.ext_id AS run_ext, rc.number AS number, rc.created_at AS at,
        j.name AS job, t.classname AS cls, t.name AS test, t.file AS file, t.suite AS suite,
        t.result AS result, CAST(round(t.duration * 1000) AS INTEGER) AS dur
    FROM recent rc JOIN jobs j ON j.run_id = rc.id JOIN test_results t ON t.job_id = j.id),
ranked AS (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY job, cls, test ORDER BY dur NULLS LAST) AS rn,
        COUNT(dur) OVER (PARTITION BY job, cls, test) AS n
    FROM res),
per AS (
    SELECT job, cls, test, max(file) AS file, max(suite) AS suite, count(*) AS runs,
        sum(result = 'failure' OR result = 'error') AS fails,
        sum(CASE WHEN dur IS NULL THEN NULL
            WHEN rn = ((n - 1) * 95) / 100 + 1 THEN dur * (100 - ((n - 1) * 95) % 100)
            WHEN rn = ((n - 1) * 95) / 100 + 2 THEN dur * (((n - 1) * 95) % 100) END) AS p95
    FROM ranked GROUP BY job, cls, test),
ordered AS (
    SELECT *,
        ROW_NUMBER() OVER (ORDER BY fails DESC, job, cls, test) AS by_fails,
        COUNT(*) OVER (PARTITION BY fails) AS same_fails,
        ROW_NUMBER() OVER (ORDER BY p95 DESC NULLS LAST, job, cls, test) AS by_p95,
        COUNT(*) OVER (PARTITION BY p95) AS same_p95
    FROM per)
SELECT job, cls, test, file, suite, runs, fails, p95, by_fails, same_fails, by_p95, same_p95
FROM ordered WHERE (fails > 0 AND by_fails <= 10) OR by_p95 <= 10";
static TEST_STATS_IN: ByBranches = ByBranches::new(TEST_STATS);

/// One test's figures over the recent runs.
#[derive(Debug, Clone)]
pub struct TestStat {
    pub job: String,
    pub classname: Option<String>,
    pub name: String,
    pub file: Option<String>,
    pub suite: Option<String>,
    pub runs: i64,
    pub fails: i64,
    /// p95 of the durations in 1/100 ms.
    pub p95_x100: Option<i64>,
    pub by_fails: i64,
    pub same_fails: i64,
    pub by_p95: i64,
    pub same_p95: i64,
}

/// Per-test figures over the results of the 10 most recent runs of the scope's workflow (no
/// time window).
pub fn test_stats(conn: &Connection, s: &Scope) -> Result<Vec<TestStat>> {
    all_time(s).rows(conn, &TEST_STATS_IN, &[], |r| {
        Ok(TestStat {
            job: r.get(0)?,
            classname: r.get(1)?,
            name: r.get(2)?,
            file: r.get(3)?,
            suite: r.get(4)?,
            runs: r.get(5)?,
            fails: r.get(6)?,
            p95_x100: r.get(7)?,
            by_fails: r.get(8)?,
            same_fails: r.get(9)?,
            by_p95: r.get(10)?,
            same_p95: r.get(11)?,
        })
    })
}

/// Flaky tests of a project: results in the window on a known commit, per (job, classname,
/// name, commit) in (created_at, id) order; a flake is a result that differs (pass vs fail)
/// from the previous result of the same test on the same commit in the window. Per test: the
/// number of flakes, the time wasted (the durations of the failing jobs on the commits where
/// the test flaked), and the run of its latest flake.
///
/// flaky_results (src/store/rollups/flaky.rs) holds every result of each test on each commit where it
/// failed, with the previous result of the same test on the same commit (LAG, kept at
/// ingest): a result flips within the window when that previous one is in the window too
/// (rows come in (at, id) order, so it is when its time is) and differs from it. A group (a
/// test on a commit) is one integer. The window is one range of the table's key, read twice:
/// its flips (FLAKY_FLIPS), then the rows of the groups that flipped (FLAKY_ROWS), added up
/// per test here, which is faster than one statement grouping and ranking by the three text
/// columns; the tests check these figures against the window-function definition over the
/// raw results.
const FLAKY_FLIPS: &str = "SELECT grp, job, classname, name, at, result_id, run_id
    FROM flaky_results
    WHERE project_id = ?1 AND at >= ?2 AND at < ?3 AND prev_at >= ?2 AND prev_bad <> bad";
/// Every row of the window, for the failing jobs' durations, files and suites of the groups
/// that flipped. ?1 project, ?2 start, ?3 end.
const FLAKY_ROWS: &str = "SELECT grp, bad, job_ms, file, suite FROM flaky_results
    WHERE project_id = ?1 AND at >= ?2 AND at < ?3";
/// The runs of the latest flakes, ?1 a JSON array of run ids.
const FLAKY_RUNS: &str = "SELECT r.id, r.ext_id, r.number, w.name
    FROM runs r JOIN workflows w ON w.id = r.workflow_id
    WHERE r.id IN (SELECT value FROM json_each(?1))";

/// One flaky test.
#[derive(Debug, Clone)]
pub struct Flaky {
    pub job: String,
    pub classname: Option<String>,
    pub name: String,
    pub file: Option<String>,
    pub suite: Option<String>,
    pub times_flaked: i64,
    /// Milliseconds.
    pub time_wasted: i64,
    pub workflow_created_at: i64,
    pub workflow_id: String,
    pub pipeline_number: i64,
    pub workflow_name: String,
}

/// A test: its job, classname and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TestKey {
    job: String,
    classname: Option<String>,
    name: String,
}

/// A flip of a test's result, ordered by time, then result, as its latest is picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Flip {
    at: i64,
    result_id: i64,
    run_id: i64,
}

/// A flaky test being added up: its flips, its latest one, and the sums over the rows of its
/// groups that flipped.
struct FlakySum {
    key: TestKey,
    flips: i64,
    latest: Flip,
    wasted: i64,
    file: Option<String>,
    suite: Option<String>,
}

/// The run of a latest flip, as the answer names it.
#[derive(Clone)]
struct FlakyRun {
    workflow_id: String,
    pipeline_number: i64,
    workflow_name: String,
}

/// The flaky tests of a project in [start, end), ordered by job, classname (none first) and
/// name, as SQL orders text.
pub fn flaky(conn: &Connection, project: i64, start: i64, end: i64) -> Result<Vec<Flaky>> {
    let mut tests: Vec<FlakySum> = Vec::new();
    let mut by_key: HashMap<TestKey, usize> = HashMap::new();
    // The test of each group that flipped.
    let mut groups: HashMap<i64, usize> = HashMap::new();
    let mut stmt = conn.prepare_cached(FLAKY_FLIPS)?;
    let mut rows = stmt.query(params![project, start, end])?;
    while let Some(r) = rows.next()? {
        let latest = Flip {
            at: r.get(4)?,
            result_id: r.get(5)?,
            run_id: r.get(6)?,
        };
        let test = match groups.get(&r.get(0)?) {
            Some(&t) => t,
            None => {
                let key = TestKey {
                    job: r.get(1)?,
                    classname: r.get(2)?,
                    name: r.get(3)?,
                };
                let t = *by_key.entry(key).or_insert_with_key(|key| {
                    tests.push(FlakySum {
                        key: key.clone(),
                        flips: 0,
                        latest,
                        wasted: 0,
                        file: None,
                        suite: None,
                    });
                    tests.len() - 1
                });
                groups.insert(r.get(0)?, t);
                t
            }
        };
        let sum = &mut tests[test];
        sum.flips += 1;
        sum.latest = sum.latest.max(latest);
    }
    drop(rows);
    if tests.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(FLAKY_ROWS)?;
    let mut rows = stmt.query(params![project, start, end])?;
    while let Some(r) = rows.next()? {
        let Some(&test) = groups.get(&r.get(0)?) else {
            continue;
        };
        let sum = &mut tests[test];
        if r.get::<_, bool>(1)? {
            sum.wasted = sum
                .wasted
                .saturating_add(r.get::<_, Option<i64>>(2)?.unwrap_or(0));
        }
        keep_max(&mut sum.file, text(r, 3)?);
        keep_max(&mut sum.suite, text(r, 4)?);
    }
    drop(rows);
    let ids: Vec<i64> = tests.iter().map(|t| t.latest.run_id).collect();
    let ids = serde_json::to_string(&ids).map_err(|e| Error::Internal(e.to_string()))?;
    let mut runs: HashMap<i64, FlakyRun> = HashMap::new();
    let mut stmt = conn.prepare_cached(FLAKY_RUNS)?;
    let mut rows = stmt.query([ids])?;
    while let Some(r) = rows.next()? {
        let run = FlakyRun {
            workflow_id: r.get(1)?,
            pipeline_number: r.get(2)?,
            workflow_name: r.get(3)?,
        };
        runs.insert(r.get(0)?, run);
    }
    // A test whose latest run is not stored (never the case while the rollups are kept with
    // the runs) is left out, as a join would.
    let mut flaky: Vec<Flaky> = tests
        .into_iter()
        .filter_map(|t| {
            let run = runs.get(&t.latest.run_id)?.clone();
            Some(Flaky {
                job: t.key.job,
                classname: t.key.classname,
                name: t.key.name,
                file: t.file,
                suite: t.suite,
                times_flaked: t.flips,
                time_wasted: t.wasted,
                workflow_created_at: t.latest.at,
                workflow_id: run.workflow_id,
                pipeline_number: run.pipeline_number,
                workflow_name: run.workflow_name,
            })
        })
        .collect();
    // Byte order, NULL classnames first: SQL's ORDER BY on these BINARY text columns.
    flaky.sort_by(|a, b| (&a.job, &a.classname, &a.name).cmp(&(&b.job, &b.classname, &b.name)));
    Ok(flaky)
}

/// A TEXT or NULL column, borrowed from the row.
fn text<'r>(r: &'r Row, i: usize) -> Result<Option<&'r str>> {
    r.get_ref(i)?
        .as_str_or_null()
        .map_err(|e| Error::Internal(format!("column {i}: {e}")))
}

/// `max()` over text: keeps the larger of `kept` and `v` in byte order, NULLs ignored.
fn keep_max(kept: &mut Option<String>, v: Option<&str>) {
    if let Some(v) = v {
        if kept.as_deref().map_or(true, |k| v > k) {
            *kept = Some(v.to_owned());
        }
    }
}

/// The statements behind the benchmarked routes that read the runs themselves, by name, for
/// `EXPLAIN QUERY PLAN` in benches/circleci.rs (one-branch workflows, summary and jobs read the
/// rollups: rollup.rs). Their parameters are listed in each query's comment; the bench binds
/// placeholders of the right types.
pub const BENCHED: &[(&str, &str)] = &[
    ("flaky-tests: FLAKY_FLIPS", FLAKY_FLIPS),
    ("flaky-tests: FLAKY_ROWS", FLAKY_ROWS),
    ("flaky-tests: FLAKY_RUNS", FLAKY_RUNS),
    (
        "workflows, summary with all-branches: WORKFLOW_METRICS",
        WORKFLOW_METRICS,
    ),
    ("workflows, summary with all-branches: MTTR", MTTR),
    ("jobs with all-branches: JOB_METRICS", JOB_METRICS),
];
