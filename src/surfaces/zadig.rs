//! The Zadig surface: `/openapi/statistics/*` (docs/zadig.md).
//!
//! Every route takes the same window and project filter. The window is a range of calendar days
//! at `--utc-offset` (or `tzo`, minutes east of UTC), both ends included, given in Unix seconds
//! under any of Zadig's spellings; without one it is the 30 days ending today. The project
//! filter names project keys (or slugs) under `projectKey`, `productNames` or `project_name`,
//! repeated or comma-separated. Counting happens in SQL, grouped by day or ISO week; the Rust
//! side only lays the grouped rows onto a complete, zero-filled, ascending series.
//! docs/zadig.md has the definitions and the decisions the docs leave open.

use rusqlite::{params, Connection, Row};
use serde_json::{json, Value};

use super::App;
use crate::error::{Error, Result};
use crate::http::{Method, Req, Resp};
use crate::model::times::{self, from_unix_seconds};

const DAY_MS: i64 = 86_400_000;
/// The widest window any route accepts: 366 days between its two instants.
const MAX_SPAN_MS: i64 = 366 * DAY_MS;
/// The window when neither end is given: this many days, ending today.
const DEFAULT_DAYS: i64 = 30;
/// `tzo` bounds, in minutes: the offsets real time zones use (UTC-14:00 .. UTC+14:00).
const MAX_TZO: i64 = 14 * 60;
const MAX_PAGE_SIZE: i64 = 1000;
/// A bucket of the Zadig rollups (schema.sql): a quarter hour.
const BUCKET_MS: i64 = 900_000;

const START: [&str; 3] = ["startDate", "start_time", "startTime"];
const END: [&str; 3] = ["endDate", "end_time", "endTime"];
const PROJECT: [&str; 3] = ["projectKey", "productNames", "project_name"];

/// Answers `/openapi/statistics/*`; `rest` is the path after that prefix.
pub fn route(app: &App, conn: &Connection, req: &Req, rest: &[&str]) -> Result<Resp> {
    let get = req.method == Method::Get;
    match rest {
        ["overview"] if get => overview(app, conn, req),
        ["build"] if get => jobs_by_day(app, conn, req, "build"),
        ["deploy"] if get => jobs_by_day(app, conn, req, "deploy"),
        ["test"] if get => tests(app, conn, req),
        ["v2", "release"] if get => releases(app, conn, req),
        ["v2", "rollback", "detail"] if get => rollbacks(app, conn, req),
        ["overview" | "build" | "deploy" | "test"]
        | ["v2", "release"]
        | ["v2", "rollback", "detail"] => Err(Error::MethodNotAllowed("GET")),
        _ => Err(Error::NotFound(format!(
            "no route for /openapi/statistics/{}",
            rest.join("/")
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Parameters.

/// A range of whole calendar days at a UTC offset, both ends included.
#[derive(Debug, Clone, Copy)]
struct Window {
    /// Days since 1970-01-01, counted at the offset.
    first_day: i64,
    last_day: i64,
    offset_ms: i64,
}

impl Window {
    /// The instant the first day begins.
    fn start_ms(&self) -> i64 {
        self.first_day * DAY_MS - self.offset_ms
    }

    /// The instant after the last day ends (exclusive).
    fn end_ms(&self) -> i64 {
        (self.last_day + 1) * DAY_MS - self.offset_ms
    }

    /// The window as a range of rollup buckets (quarter hours, schema.sql), start included and
    /// end excluded; None when the offset does not fall on a quarter hour, so the window's
    /// ends are not bucket boundaries.
    fn buckets(&self) -> Option<(i64, i64)> {
        (self.offset_ms % BUCKET_MS == 0)
            .then(|| (self.start_ms() / BUCKET_MS, self.end_ms() / BUCKET_MS))
    }

    fn days(&self) -> i64 {
        self.last_day - self.first_day + 1
    }

    /// The Monday of the ISO week holding the first day.
    fn first_monday(&self) -> i64 {
        // 1970-01-01 was a Thursday: (day + 3) mod 7 is 0 on Mondays.
        self.first_day - (self.first_day + 3).rem_euclid(7)
    }

    /// How many ISO weeks overlap the window.
    fn weeks(&self) -> i64 {
        (self.last_day - self.first_monday()) / 7 + 1
    }
}

/// The value of a parameter given under any of its spellings, with the spelling used.
/// Different values under two spellings are refused rather than guessed between.
fn aliased<'a>(req: &'a Req, names: &[&'static str]) -> Result<Option<(&'static str, &'a str)>> {
    let mut found: Option<(&'static str, &'a str)> = None;
    for (k, v) in &req.query {
        let Some(name) = names.iter().find(|n| **n == k.as_str()) else {
            continue;
        };
        match found {
            Some((first, value)) if value != v.as_str() => {
                return Err(Error::bad(format!(
                    "parameters \"{first}\" and \"{name}\" disagree ({value:?} and {v:?}); give one"
                )))
            }
            Some(_) => {}
            None => found = Some((name, v.as_str())),
        }
    }
    Ok(found)
}

/// Parses a Unix-seconds parameter into UTC milliseconds.
fn unix_seconds(name: &str, v: &str) -> Result<i64> {
    v.trim()
        .parse::<i64>()
        .ok()
        .and_then(from_unix_seconds)
        .ok_or_else(|| {
            Error::bad(format!(
                "parameter \"{name}\": expected Unix seconds (an integer from 0), got {v:?}"
            ))
        })
}

/// The two instants of the window as given (milliseconds), or None when neither is given.
/// One without the other, an end before the start, or a span over 366 days is a 400.
fn instants(req: &Req) -> Result<Option<(i64, i64)>> {
    let start = aliased(req, &START)?;
    let end = aliased(req, &END)?;
    match (start, end) {
        (None, None) => Ok(None),
        (Some((name, _)), None) => Err(Error::bad(format!(
            "parameter \"{}\" is required when \"{name}\" is given",
            END[START.iter().position(|n| *n == name).unwrap_or(0)]
        ))),
        (None, Some((name, _))) => Err(Error::bad(format!(
            "parameter \"{}\" is required when \"{name}\" is given",
            START[END.iter().position(|n| *n == name).unwrap_or(0)]
        ))),
        (Some((sn, sv)), Some((en, ev))) => {
            let (s, e) = (unix_seconds(sn, sv)?, unix_seconds(en, ev)?);
            if e < s {
                return Err(Error::bad(format!(
                    "parameter \"{en}\": {ev} is before \"{sn}\" {sv}"
                )));
            }
            if e - s > MAX_SPAN_MS {
                return Err(Error::bad(format!(
                    "parameters \"{sn}\" and \"{en}\": the range spans more than 366 days"
                )));
            }
            Ok(Some((s, e)))
        }
    }
}

/// The UTC offset of days, in milliseconds: `tzo` (minutes east of UTC) or `--utc-offset`.
fn offset_ms(app: &App, req: &Req) -> Result<i64> {
    let minutes = match req.param("tzo") {
        None => i64::from(app.settings.utc_offset),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|m| (-MAX_TZO..=MAX_TZO).contains(m))
            .ok_or_else(|| {
                Error::bad(format!(
                    "parameter \"tzo\": expected minutes east of UTC, -{MAX_TZO}..{MAX_TZO}, got {v:?}"
                ))
            })?,
    };
    Ok(minutes * 60_000)
}

/// The window of days: the days of the two given instants, or the 30 days ending today.
/// With `required`, leaving both out is a 400 too.
fn window(app: &App, req: &Req, required: bool) -> Result<Window> {
    let offset_ms = offset_ms(app, req)?;
    let day = |ms: i64| (ms + offset_ms).div_euclid(DAY_MS);
    match instants(req)? {
        // A day past 9999-12-31 has no date to answer with.
        Some((_, e)) if times::date_of_unix_day(day(e)).is_none() => {
            let given = END
                .iter()
                .find(|n| req.param(n).is_some())
                .unwrap_or(&END[0]);
            Err(Error::bad(format!(
                "parameter \"{given}\": its day at this UTC offset is past 9999-12-31"
            )))
        }
        Some((s, e)) => Ok(Window {
            first_day: day(s),
            last_day: day(e),
            offset_ms,
        }),
        None if required => Err(Error::bad(
            "parameters \"start_time\" and \"end_time\" (Unix seconds) are required",
        )),
        None => {
            let today = day(app.now_ms());
            Ok(Window {
                first_day: today - (DEFAULT_DAYS - 1),
                last_day: today,
                offset_ms,
            })
        }
    }
}

/// The project filter as a JSON array of keys or slugs for `json_each`, or None for all projects.
fn project_filter(req: &Req) -> Option<String> {
    let names: Vec<&str> = req
        .query
        .iter()
        .filter(|(k, _)| PROJECT.contains(&k.as_str()))
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    (!names.is_empty()).then(|| Value::from(names).to_string())
}

/// A positive integer parameter within `1..=max`; `None` when absent.
fn positive(req: &Req, name: &str, max: i64) -> Result<Option<i64>> {
    req.param(name)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    Error::bad(format!(
                        "parameter \"{name}\": expected an integer 1..{max}, got {v:?}"
                    ))
                })
        })
        .transpose()
}

/// "YYYY-MM-DD" of a day counted from 1970-01-01.
fn date(day: i64) -> String {
    times::date_of_unix_day(day)
        .map(|d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// SQL. Every statement starts from `sel`, the selected projects: ?1 is a JSON array of project
// keys or slugs, or NULL for all. Jobs are then read per project through an index whose first
// column is project_id, so one project never costs a scan of the others.
//
// A job's day is that of `coalesce(started_at, created_at)`, which is the jobs table's `day_at`.
// The statements spell the expression out: SQLite reads an indexed expression from the index,
// but never reads a virtual generated column from one, so `day_at` would cost a table read
// per job.

/// Finished jobs of one kind per day of the window, with the window's totals as window sums.
/// ?2 kind, ?3 window start (ms), ?4 window end (ms, exclusive), ?5 production (NULL = any).
/// Uses jobs_by_project_kind_start (covering).
const JOBS_BY_DAY: &str = "
WITH sel(id) AS (
    SELECT id FROM projects
    WHERE ?1 IS NULL OR key IN (SELECT value FROM json_each(?1))
        OR slug IN (SELECT value FROM json_each(?1)))
SELECT (coalesce(j.started_at, j.created_at) - ?3) / 86400000 AS day,
    count(*) AS total,
    sum(j.status = 'success') AS success,
    sum(j.status = 'failed' OR j.status = 'error' OR j.status = 'timeout') AS failure,
    sum(count(*)) OVER () AS all_total,
    sum(sum(j.status = 'success')) OVER () AS all_success
FROM jobs j
WHERE j.project_id IN sel AND j.kind = ?2 AND coalesce(j.started_at, j.created_at) >= ?3 AND coalesce(j.started_at, j.created_at) < ?4
  AND j.status IN ('success', 'failed', 'error', 'canceled', 'timeout', 'skipped')
  AND (?5 IS NULL OR j.production = ?5)
GROUP BY day ORDER BY day";

/// JOBS_BY_DAY from the series rollup (zadig_job_buckets) when the window is whole buckets:
/// ?6 first bucket, ?7 bucket after the last; ?4 is unused. Every bucket lies in one day.
const JOBS_BY_DAY_FAST: &str = "
WITH sel(id) AS (
    SELECT id FROM projects
    WHERE ?1 IS NULL OR key IN (SELECT value FROM json_each(?1))
        OR slug IN (SELECT value FROM json_each(?1)))
SELECT (b.bucket * 900000 - ?3) / 86400000 AS day,
    sum(b.finished) AS total,
    sum(b.success) AS success,
    sum(b.failed + b.timeout) AS failure,
    sum(sum(b.finished)) OVER () AS all_total,
    sum(sum(b.success)) OVER () AS all_success
FROM zadig_job_buckets b
WHERE b.project_id IN sel AND b.kind = ?2 AND b.bucket >= ?6 AND b.bucket < ?7
  AND (?5 IS NULL OR b.production = ?5) AND ?4 IS NOT NULL
GROUP BY day ORDER BY day";

/// One grouped day (or week): its index in the series and its counts.
struct Bucket<C> {
    index: i64,
    counts: C,
}

/// A day's finished jobs.
#[derive(Debug, Default, Clone, Copy)]
struct DayCounts {
    total: i64,
    success: i64,
    failure: i64,
}

/// Counts of finished jobs: the series and the totals over the window.
struct Daily {
    buckets: Vec<Bucket<DayCounts>>,
    total: i64,
    success: i64,
}

fn count_by_day(
    conn: &Connection,
    projects: Option<&str>,
    kind: &str,
    w: &Window,
    production: Option<bool>,
) -> Result<Daily> {
    let (first, after) = w.buckets().unzip();
    let mut stmt = match w.buckets() {
        Some(_) => conn.prepare_cached(JOBS_BY_DAY_FAST)?,
        None => conn.prepare_cached(JOBS_BY_DAY)?,
    };
    let mut rows = match w.buckets() {
        Some(_) => stmt.query(params![
            projects,
            kind,
            w.start_ms(),
            w.end_ms(),
            production,
            first,
            after
        ])?,
        None => stmt.query(params![
            projects,
            kind,
            w.start_ms(),
            w.end_ms(),
            production
        ])?,
    };
    let mut out = Daily {
        buckets: Vec::new(),
        total: 0,
        success: 0,
    };
    while let Some(r) = rows.next()? {
        out.total = r.get(4)?;
        out.success = r.get(5)?;
        out.buckets.push(Bucket {
            index: r.get(0)?,
            counts: DayCounts {
                total: r.get(1)?,
                success: r.get(2)?,
                failure: r.get(3)?,
            },
        });
    }
    Ok(out)
}

/// Lays grouped buckets onto `n` consecutive slots, zero-filling the missing ones.
fn zero_filled<C: Default + Copy>(buckets: &[Bucket<C>], n: i64) -> Vec<C> {
    let mut series = vec![C::default(); usize::try_from(n).unwrap_or(0)];
    for b in buckets {
        if let Some(slot) = usize::try_from(b.index)
            .ok()
            .and_then(|i| series.get_mut(i))
        {
            *slot = b.counts;
        }
    }
    series
}

// ---------------------------------------------------------------------------------------------
// Routes.

/// `GET /openapi/statistics/build` and `/deploy`: finished jobs of the kind, per day.
fn jobs_by_day(app: &App, conn: &Connection, req: &Req, kind: &str) -> Result<Resp> {
    let w = window(app, req, false)?;
    let projects = project_filter(req);
    let d = count_by_day(conn, projects.as_deref(), kind, &w, None)?;
    let data: Vec<Value> = zero_filled(&d.buckets, w.days())
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "date": date(w.first_day + i as i64),
                "success": c.success,
                "failure": c.failure,
                "total": c.total,
            })
        })
        .collect();
    Ok(Resp::json(
        200,
        &json!({"total": d.total, "success": d.success, "data": data}),
    ))
}

/// `GET /openapi/statistics/v2/release`: finished production deploys, per day.
fn releases(app: &App, conn: &Connection, req: &Req) -> Result<Resp> {
    let w = window(app, req, true)?;
    let projects = project_filter(req);
    let d = count_by_day(conn, projects.as_deref(), "deploy", &w, Some(true))?;
    let daily: Vec<Value> = zero_filled(&d.buckets, w.days())
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "date": date(w.first_day + i as i64),
                "total": c.total,
                "success_count": c.success,
                "fail_count": c.failure,
            })
        })
        .collect();
    Ok(Resp::json(
        200,
        &json!({"total": d.total, "success_count": d.success, "daily_stat": daily}),
    ))
}

/// Finished test jobs per ISO week, with the window's totals and duration as window sums.
/// ?2 window start, ?3 window end (exclusive), ?4 the Monday the first week starts (ms).
/// The duration of a job is stopped_at − (started_at or created_at).
/// Uses jobs_by_project_kind_start (covering).
const TEST_JOBS_BY_WEEK: &str = "
WITH sel(id) AS (
    SELECT id FROM projects
    WHERE ?1 IS NULL OR key IN (SELECT value FROM json_each(?1))
        OR slug IN (SELECT value FROM json_each(?1)))
SELECT (coalesce(j.started_at, j.created_at) - ?4) / 604800000 AS week,
    sum(j.status = 'success') AS success,
    sum(j.status = 'timeout') AS timeout,
    sum(j.status = 'failed' OR j.status = 'error') AS failed,
    sum(count(*)) OVER () AS exec_count,
    sum(sum(j.status = 'success')) OVER () AS success_count,
    sum(sum(j.stopped_at - coalesce(j.started_at, j.created_at))) OVER () AS duration_ms,
    sum(count(j.stopped_at)) OVER () AS timed
FROM jobs j
WHERE j.project_id IN sel AND j.kind = 'test' AND coalesce(j.started_at, j.created_at) >= ?2 AND coalesce(j.started_at, j.created_at) < ?3
  AND j.status IN ('success', 'failed', 'error', 'canceled', 'timeout', 'skipped')
GROUP BY week ORDER BY week";

/// TEST_JOBS_BY_WEEK from the series rollup (zadig_job_buckets) when the window is whole
/// buckets: ?5 first bucket, ?6 bucket after the last; ?3 is unused.
const TEST_JOBS_BY_WEEK_FAST: &str = "
WITH sel(id) AS (
    SELECT id FROM projects
    WHERE ?1 IS NULL OR key IN (SELECT value FROM json_each(?1))
        OR slug IN (SELECT value FROM json_each(?1)))
SELECT (b.bucket * 900000 - ?4) / 604800000 AS week,
    sum(b.success) AS success,
    sum(b.timeout) AS timeout,
    sum(b.failed) AS failed,
    sum(sum(b.finished)) OVER () AS exec_count,
    sum(sum(b.success)) OVER () AS success_count,
    sum(sum(b.duration_ms)) OVER () AS duration_ms,
    sum(sum(b.timed)) OVER () AS timed
FROM zadig_job_buckets b
WHERE b.project_id IN sel AND b.kind = 'test' AND b.bucket >= ?5 AND b.bucket < ?6
  AND ?2 IS NOT NULL AND ?3 IS NOT NULL
GROUP BY week ORDER BY week";

/// A week's finished test jobs.
#[derive(Debug, Default, Clone, Copy)]
struct WeekCounts {
    success: i64,
    timeout: i64,
    failed: i64,
}

/// Distinct test cases (project, suite, classname, name) reported by test jobs of the window.
/// Uses jobs_by_project_kind_start for the jobs, then tests_by_job.
const TEST_CASES: &str = "
WITH sel(id) AS (
    SELECT id FROM projects
    WHERE ?1 IS NULL OR key IN (SELECT value FROM json_each(?1))
        OR slug IN (SELECT value FROM json_each(?1)))
SELECT count(*) FROM (
    SELECT DISTINCT t.project_id, t.suite, t.classname, t.name
    FROM jobs j JOIN test_results t ON t.job_id = j.id
    WHERE j.project_id IN sel AND j.kind = 'test' AND coalesce(j.started_at, j.created_at) >= ?2 AND coalesce(j.started_at, j.created_at) < ?3)";

/// The same count from the rollup, when the window is whole buckets: test cases of the selected
/// projects with a stored result in a test job of a bucket of the window. ?2 first bucket, ?3
/// bucket after the last. Uses zadig_test_cases_by_key, then one seek of zadig_case_buckets per
/// case.
const TEST_CASES_FAST: &str = "
WITH sel(id) AS (
    SELECT id FROM projects
    WHERE ?1 IS NULL OR key IN (SELECT value FROM json_each(?1))
        OR slug IN (SELECT value FROM json_each(?1)))
SELECT count(*) FROM zadig_test_cases c
WHERE c.project_id IN sel AND EXISTS (SELECT 1 FROM zadig_case_buckets b
    WHERE b.case_id = c.id AND b.bucket >= ?2 AND b.bucket < ?3 AND b.n > 0)";

/// `GET /openapi/statistics/test`: test jobs and test cases, per ISO week.
fn tests(app: &App, conn: &Connection, req: &Req) -> Result<Resp> {
    let w = window(app, req, false)?;
    let projects = project_filter(req);
    let monday_ms = w.first_monday() * DAY_MS - w.offset_ms;
    let (start, end) = (w.start_ms(), w.end_ms());
    let mut stmt = match w.buckets() {
        Some(_) => conn.prepare_cached(TEST_JOBS_BY_WEEK_FAST)?,
        None => conn.prepare_cached(TEST_JOBS_BY_WEEK)?,
    };
    let mut rows = match w.buckets() {
        Some((first, after)) => {
            stmt.query(params![projects, start, end, monday_ms, first, after])?
        }
        None => stmt.query(params![projects, start, end, monday_ms])?,
    };
    let mut buckets = Vec::new();
    let (mut exec_count, mut success_count, mut duration_ms, mut timed) = (0i64, 0i64, 0i64, 0i64);
    while let Some(r) = rows.next()? {
        exec_count = r.get(4)?;
        success_count = r.get(5)?;
        duration_ms = r.get::<_, Option<i64>>(6)?.unwrap_or(0);
        timed = r.get(7)?;
        buckets.push(Bucket {
            index: r.get(0)?,
            counts: WeekCounts {
                success: r.get(1)?,
                timeout: r.get(2)?,
                failed: r.get(3)?,
            },
        });
    }
    drop(rows);
    let case_count: i64 = match w.buckets() {
        Some((first, end)) => conn
            .prepare_cached(TEST_CASES_FAST)?
            .query_row(params![projects, first, end], |r| r.get(0))?,
        None => conn
            .prepare_cached(TEST_CASES)?
            .query_row(params![projects, w.start_ms(), w.end_ms()], |r| r.get(0))?,
    };
    // Whole seconds, rounded half away from zero (durations are never negative).
    let average_runtime = if timed > 0 {
        (duration_ms as f64 / timed as f64 / 1000.0).round() as i64
    } else {
        0
    };
    let data: Vec<Value> = zero_filled(&buckets, w.weeks())
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            json!({
                "date": date(w.first_monday() + 7 * i as i64),
                "success_count": c.success,
                "timeout_count": c.timeout,
                "failed_count": c.failed,
            })
        })
        .collect();
    Ok(Resp::json(
        200,
        &json!({
            "case_count": case_count,
            "exec_count": exec_count,
            "success_count": success_count,
            "average_runtime": average_runtime,
            "data": data,
        }),
    ))
}

/// What was active in the window: distinct projects, deploy clusters and services,
/// (project, workflow) and (project, env) pairs, and artifacts, over the jobs of the window.
/// ?2 window start, ?3 window end (exclusive).
const OVERVIEW: &str = "
WITH sel(id) AS (
    SELECT id FROM projects
    WHERE ?1 IS NULL OR key IN (SELECT value FROM json_each(?1))
        OR slug IN (SELECT value FROM json_each(?1))),
w AS MATERIALIZED (
    SELECT j.project_id, j.run_id, j.kind, j.env, j.cluster, j.service, j.artifacts
    FROM jobs j
    WHERE j.project_id IN sel
      AND j.kind IN ('build', 'deploy', 'test', 'approval', 'other')
      AND coalesce(j.started_at, j.created_at) >= ?2
      AND coalesce(j.started_at, j.created_at) < ?3)
SELECT
    (SELECT count(DISTINCT project_id) FROM w),
    (SELECT count(DISTINCT cluster) FROM w WHERE kind = 'deploy'),
    (SELECT count(DISTINCT service) FROM w WHERE kind = 'deploy'),
    (SELECT count(*) FROM (SELECT DISTINCT r.project_id, r.workflow_id
        FROM (SELECT DISTINCT run_id FROM w) x JOIN runs r ON r.id = x.run_id)),
    (SELECT count(*) FROM (SELECT DISTINCT project_id, env FROM w
        WHERE kind = 'deploy' AND env IS NOT NULL)),
    (SELECT count(DISTINCT a.value) FROM w, json_each(w.artifacts) a
        WHERE w.artifacts IS NOT NULL)";

/// OVERVIEW when the window is whole buckets, without reading the window's jobs. ?2 window
/// start, ?3 window end (exclusive), ?4 first bucket, ?5 bucket after the last.
/// - projects and (project, workflow) pairs: the workflows of the selected projects with a job
///   in a bucket of the window (zadig_workflow_buckets, one seek per workflow);
/// - clusters, services, (project, env) pairs: a loose scan of the deploy jobs' partial indexes
///   (jobs_deploy_cluster, _service, _env), one seek per distinct value and one probe of the
///   window for it;
/// - artifacts: 0 here, counted by ARTIFACTS_FAST.
const OVERVIEW_FAST: &str = "
WITH sel(id) AS (
    SELECT id FROM projects
    WHERE ?1 IS NULL OR key IN (SELECT value FROM json_each(?1))
        OR slug IN (SELECT value FROM json_each(?1))),
wf(id, project_id) AS MATERIALIZED (
    SELECT w.id, w.project_id FROM workflows w
    WHERE w.project_id IN sel AND EXISTS (SELECT 1 FROM zadig_workflow_buckets b
        WHERE b.workflow_id = w.id AND b.bucket >= ?4 AND b.bucket < ?5 AND b.n > 0)),
clusters(p, v) AS (
    SELECT s.id, (SELECT min(j.cluster) FROM jobs j
        WHERE j.kind = 'deploy' AND j.project_id = s.id) FROM sel s
    UNION ALL
    SELECT x.p, (SELECT min(j.cluster) FROM jobs j
        WHERE j.kind = 'deploy' AND j.project_id = x.p AND j.cluster > x.v)
    FROM clusters x WHERE x.v IS NOT NULL),
services(p, v) AS (
    SELECT s.id, (SELECT min(j.service) FROM jobs j
        WHERE j.kind = 'deploy' AND j.project_id = s.id) FROM sel s
    UNION ALL
    SELECT x.p, (SELECT min(j.service) FROM jobs j
        WHERE j.kind = 'deploy' AND j.project_id = x.p AND j.service > x.v)
    FROM services x WHERE x.v IS NOT NULL),
envs(p, v) AS (
    SELECT s.id, (SELECT min(j.env) FROM jobs j
        WHERE j.kind = 'deploy' AND j.project_id = s.id) FROM sel s
    UNION ALL
    SELECT x.p, (SELECT min(j.env) FROM jobs j
        WHERE j.kind = 'deploy' AND j.project_id = x.p AND j.env > x.v)
    FROM envs x WHERE x.v IS NOT NULL)
SELECT
    (SELECT count(DISTINCT project_id) FROM wf),
    (SELECT count(DISTINCT x.v) FROM clusters x WHERE x.v IS NOT NULL AND EXISTS (SELECT 1 FROM jobs j
            WHERE j.kind = 'deploy' AND j.project_id = x.p AND j.cluster = x.v
                AND coalesce(j.started_at, j.created_at) >= ?2
                AND coalesce(j.started_at, j.created_at) < ?3)),
    (SELECT count(DISTINCT x.v) FROM services x WHERE x.v IS NOT NULL AND EXISTS (SELECT 1 FROM jobs j
            WHERE j.kind = 'deploy' AND j.project_id = x.p AND j.service = x.v
                AND coalesce(j.started_at, j.created_at) >= ?2
                AND coalesce(j.started_at, j.created_at) < ?3)),
    (SELECT count(*) FROM wf),
    (SELECT count(*) FROM envs x WHERE x.v IS NOT NULL AND EXISTS (SELECT 1 FROM jobs j
            WHERE j.kind = 'deploy' AND j.project_id = x.p AND j.env = x.v
                AND coalesce(j.started_at, j.created_at) >= ?2
                AND coalesce(j.started_at, j.created_at) < ?3)),
    0";

/// The artifacts of the selected projects' rows of the window in zadig_artifact_buckets, one
/// per row and so repeated: counting the distinct ones in Rust (sort and dedup) takes a fraction
/// of the time SQLite's `count(DISTINCT)` spends on its temporary b-tree. ?2 first bucket, ?3
/// bucket after the last.
const ARTIFACTS_FAST: &str = "
WITH sel(id) AS (
    SELECT id FROM projects
    WHERE ?1 IS NULL OR key IN (SELECT value FROM json_each(?1))
        OR slug IN (SELECT value FROM json_each(?1)))
SELECT a.artifact_id FROM zadig_artifact_buckets a
WHERE a.project_id IN sel AND a.bucket >= ?2 AND a.bucket < ?3 AND a.n > 0";

/// What OVERVIEW and OVERVIEW_FAST count, in their order.
struct Overview {
    projects: i64,
    clusters: i64,
    services: i64,
    workflows: i64,
    envs: i64,
    artifacts: i64,
}

impl Overview {
    fn from_row(r: &Row) -> rusqlite::Result<Overview> {
        Ok(Overview {
            projects: r.get(0)?,
            clusters: r.get(1)?,
            services: r.get(2)?,
            workflows: r.get(3)?,
            envs: r.get(4)?,
            artifacts: r.get(5)?,
        })
    }
}

/// `GET /openapi/statistics/overview`.
fn overview(app: &App, conn: &Connection, req: &Req) -> Result<Resp> {
    let w = window(app, req, false)?;
    let projects = project_filter(req);
    let (start, end) = (w.start_ms(), w.end_ms());
    let counts = match w.buckets() {
        Some((first, after)) => {
            let mut counts = conn.prepare_cached(OVERVIEW_FAST)?.query_row(
                params![projects, start, end, first, after],
                Overview::from_row,
            )?;
            let mut ids = conn
                .prepare_cached(ARTIFACTS_FAST)?
                .query_map(params![projects, first, after], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()?;
            ids.sort_unstable();
            ids.dedup();
            counts.artifacts = ids.len() as i64;
            counts
        }
        None => conn
            .prepare_cached(OVERVIEW)?
            .query_row(params![projects, start, end], Overview::from_row)?,
    };
    Ok(Resp::json(
        200,
        &json!({
            "project_count": counts.projects,
            "cluster_count": counts.clusters,
            "service_count": counts.services,
            "workflow_count": counts.workflows,
            "env_count": counts.envs,
            "artifact_count": counts.artifacts,
        }),
    ))
}

/// Rollbacks of the window matching the filters. ?2 first instant, ?3 last instant (both
/// included, ms), ?4 env (NULL = any), ?5 service (NULL = any). Uses rollbacks_by_project_time.
const COUNT_ROLLBACKS: &str = "
WITH sel(id) AS (
    SELECT id FROM projects
    WHERE ?1 IS NULL OR key IN (SELECT value FROM json_each(?1))
        OR slug IN (SELECT value FROM json_each(?1)))
SELECT count(*) FROM rollbacks r
WHERE r.project_id IN sel AND r.created_at >= ?2 AND r.created_at <= ?3
  AND (?4 IS NULL OR r.env = ?4) AND (?5 IS NULL OR r.service = ?5)";

/// One page of them, newest first (ties: the later stored first). ?6 page size, ?7 offset.
const PAGE_ROLLBACKS: &str = "
WITH sel(id) AS (
    SELECT id FROM projects
    WHERE ?1 IS NULL OR key IN (SELECT value FROM json_each(?1))
        OR slug IN (SELECT value FROM json_each(?1)))
SELECT p.key, r.env, r.env_type, r.production, r.operation_type, r.service,
    r.service_type, r.origin_service, r.update_service, r.create_by, r.created_at
FROM rollbacks r JOIN projects p ON p.id = r.project_id
WHERE r.project_id IN sel AND r.created_at >= ?2 AND r.created_at <= ?3
  AND (?4 IS NULL OR r.env = ?4) AND (?5 IS NULL OR r.service = ?5)
ORDER BY r.created_at DESC, r.id DESC
LIMIT ?6 OFFSET ?7";

/// A stored JSON object, verbatim; NULL (or, never expected, unparsable text) is null.
fn stored_object(r: &Row, i: usize) -> rusqlite::Result<Value> {
    let text: Option<String> = r.get(i)?;
    Ok(text
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null))
}

/// `GET /openapi/statistics/v2/rollback/detail`.
fn rollbacks(app: &App, conn: &Connection, req: &Req) -> Result<Resp> {
    let (first, last) = match instants(req)? {
        Some((s, e)) => (s, e + 999),
        None => {
            let w = window(app, req, false)?;
            (w.start_ms(), w.end_ms() - 1)
        }
    };
    // Validated even when the window came from the parameters, so a bad tzo is never ignored.
    offset_ms(app, req)?;
    let required = |name: &str, max: i64| {
        positive(req, name, max)?.ok_or_else(|| {
            Error::bad(format!(
                "parameter \"{name}\" is required: an integer 1..{max}"
            ))
        })
    };
    let page_num = required("pageNum", i64::from(u32::MAX))?;
    let page_size = required("pageSize", MAX_PAGE_SIZE)?;
    let offset = (page_num - 1) * page_size;
    let projects = project_filter(req);
    let env = req.param("envName").filter(|s| !s.is_empty());
    let service = req.param("serviceName").filter(|s| !s.is_empty());
    let total: i64 = conn
        .prepare_cached(COUNT_ROLLBACKS)?
        .query_row(params![projects, first, last, env, service], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(PAGE_ROLLBACKS)?;
    let data = stmt
        .query_map(
            params![projects, first, last, env, service, page_size, offset],
            |r| {
                Ok(json!({
                    "project_key": r.get::<_, String>(0)?,
                    "env_name": r.get::<_, Option<String>>(1)?,
                    "env_type": r.get::<_, Option<String>>(2)?,
                    "production": r.get::<_, bool>(3)?,
                    "operation_type": r.get::<_, Option<String>>(4)?,
                    "service_name": r.get::<_, Option<String>>(5)?,
                    "service_type": r.get::<_, Option<String>>(6)?,
                    "origin_service": stored_object(r, 7)?,
                    "update_service": stored_object(r, 8)?,
                    "create_by": stored_object(r, 9)?,
                    "create_time": r.get::<_, i64>(10)?.div_euclid(1000),
                }))
            },
        )?
        .collect::<rusqlite::Result<Vec<Value>>>()?;
    Ok(Resp::json(200, &json!({"total": total, "data": data})))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prints the query plans of the Zadig statements, for the database named by
    /// `PIPESTAT_BENCH_DB`: `cargo test --release --lib -- --ignored --nocapture plans`.
    #[test]
    #[ignore = "needs PIPESTAT_BENCH_DB"]
    fn plans() {
        let Some(db) = std::env::var_os("PIPESTAT_BENCH_DB") else {
            return;
        };
        let conn = Connection::open(db).expect("database");
        for (name, sql) in [
            ("JOBS_BY_DAY", JOBS_BY_DAY),
            ("JOBS_BY_DAY_FAST", JOBS_BY_DAY_FAST),
            ("TEST_JOBS_BY_WEEK_FAST", TEST_JOBS_BY_WEEK_FAST),
            ("TEST_CASES_FAST", TEST_CASES_FAST),
            ("OVERVIEW_FAST", OVERVIEW_FAST),
            ("ARTIFACTS_FAST", ARTIFACTS_FAST),
        ] {
            println!("{name}");
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("statement");
            let nulls = vec![None::<i64>; stmt.parameter_count()];
            let mut rows = stmt.query(rusqlite::params_from_iter(nulls)).expect("plan");
            while let Some(r) = rows.next().expect("row") {
                println!("  {}", r.get::<_, String>(3).expect("detail"));
            }
        }
    }

    #[test]
    fn dates_from_day_numbers() {
        assert_eq!(date(0), "1970-01-01");
        // 2024-03-04 is 19786 days after 1970-01-01 (54 years with 13 leap days, plus 63 days).
        assert_eq!(date(19_786), "2024-03-04");
        assert_eq!(date(-1), "1969-12-31");
    }

    #[test]
    fn iso_weeks_start_on_monday() {
        // Day 19786 (2024-03-04) is a Monday; 19792 is the Sunday after it; 19793 the next Monday.
        let w = |first_day, last_day| Window {
            first_day,
            last_day,
            offset_ms: 0,
        };
        assert_eq!(w(19_786, 19_786).first_monday(), 19_786);
        assert_eq!(w(19_792, 19_792).first_monday(), 19_786);
        assert_eq!(w(19_792, 19_793).weeks(), 2);
        assert_eq!(w(19_786, 19_792).weeks(), 1);
        // 1970-01-01 was a Thursday: its Monday is 1969-12-29.
        assert_eq!(w(0, 0).first_monday(), -3);
    }
}
