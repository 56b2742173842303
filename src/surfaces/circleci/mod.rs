//! The CircleCI Insights surface: `/api/v2/insights/*` (docs/circleci.md), wire-compatible with
//! CircleCI's API v2 so that its clients work with their base URL pointed at pipestat.
//!
//! This module parses and validates the path and the query, runs the constant statements of
//! `sql`, and shapes the answers with CircleCI's field names. Every definition and every choice
//! the docs leave open is written down in docs/circleci.md.

#[doc(hidden)]
pub mod rollup;
pub mod sql;

use std::collections::HashSet;

use base64::Engine;
use rusqlite::Connection;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::App;
use crate::error::{Error, Result};
use crate::http::{parse_bool, Method, Req, Resp};
use crate::ingest;
use crate::model::times;
use sql::{Agg, Branches, Dur, Project, ProjectAgg, Scope};

const DAY_MS: i64 = 86_400_000;
/// Items per page of every paged answer.
const PAGE: i64 = 100;
/// Longest accepted name-like parameter (branch, workflow, job).
const MAX_NAME: usize = 1024;
/// The window of flaky tests: the last 14 days.
const FLAKY_DAYS: i64 = 14;

/// Answers `/api/v2/insights/*`; `rest` is the path after that prefix.
pub fn route(app: &App, conn: &Connection, req: &Req, rest: &[&str]) -> Result<Resp> {
    if req.method != Method::Get {
        return Err(Error::MethodNotAllowed("GET"));
    }
    let now = app.now_ms();
    let body = match rest {
        ["pages", path @ ..] => {
            let (slug, tail) = split_slug(path)?;
            match tail {
                ["summary"] => pages_summary(conn, req, &project(conn, &slug)?, now)?,
                _ => return Err(not_found(rest)),
            }
        }
        ["time-series", path @ ..] => {
            let (slug, tail) = split_slug(path)?;
            match tail {
                ["workflows", wf, "jobs"] => {
                    job_series(conn, req, &project(conn, &slug)?, wf, now)?
                }
                _ => return Err(not_found(rest)),
            }
        }
        _ => {
            if let Some(org) = org_slug(rest) {
                org_summary(conn, req, &org?, now)?
            } else {
                let (slug, tail) = split_slug(rest)?;
                let p = project(conn, &slug)?;
                match tail {
                    ["workflows"] => workflows(conn, req, &p, now)?,
                    ["workflows", wf] => workflow_runs(conn, req, &p, wf, now)?,
                    ["workflows", wf, "jobs"] => jobs(conn, req, &p, wf, now)?,
                    ["workflows", wf, "jobs", job] => job_runs(conn, req, &p, wf, job, now)?,
                    ["workflows", wf, "summary"] => workflow_summary(conn, req, &p, wf, now)?,
                    ["workflows", wf, "test-metrics"] => test_metrics(conn, req, &p, wf, now)?,
                    ["flaky-tests"] => flaky_tests(conn, &p, now)?,
                    ["branches"] => branches(conn, req, &p, now)?,
                    _ => return Err(not_found(rest)),
                }
            }
        }
    };
    Ok(Resp::json(200, &body))
}

fn not_found(rest: &[&str]) -> Error {
    Error::NotFound(format!("no route for /api/v2/insights/{}", rest.join("/")))
}

/// Splits the project slug off the front of the path: literal slashes (`gh/acme/api` as three
/// segments), one %2F-escaped segment, or a mix. Segments are taken until the slug has three
/// parts; a single escaped segment of more parts (GitLab subgroups) is taken whole.
fn split_slug<'a, 'b>(path: &'a [&'b str]) -> Result<(String, &'a [&'b str])> {
    let mut parts = 0;
    let mut taken = 0;
    while taken < path.len() && parts < 3 {
        parts += path[taken].split('/').count();
        taken += 1;
    }
    if parts < 3 {
        return Err(Error::NotFound(
            "path parameter \"project-slug\": expected vcs/org/repo".into(),
        ));
    }
    let raw = path[..taken].join("/");
    let slug = ingest::canonical_slug(&raw)
        .map_err(|m| Error::bad(format!("path parameter \"project-slug\": {m}")))?;
    Ok((slug, &path[taken..]))
}

/// An org summary path, `{vcs}/{org}/summary` or `{vcs%2Forg}/summary`, as the canonical
/// "vcs/org" prefix.
fn org_slug(rest: &[&str]) -> Option<Result<String>> {
    let raw = match rest {
        [vcs, org, "summary"] if !vcs.contains('/') && !org.contains('/') => format!("{vcs}/{org}"),
        [both, "summary"] if both.split('/').count() == 2 => (*both).to_owned(),
        _ => return None,
    };
    // The canonical form of a slug in the org with a placeholder repository, less that.
    let org = ingest::canonical_slug(&format!("{raw}/-")).map(|s| s[..s.len() - 2].to_owned());
    Some(org.map_err(|_| {
        Error::bad(format!(
            "path parameter \"org-slug\": expected vcs/org with vcs gh, github, bb, bitbucket, gl, gitlab or circleci, got {raw:?}"
        ))
    }))
}

fn project(conn: &Connection, slug: &str) -> Result<Project> {
    sql::project(conn, slug)?.ok_or_else(|| Error::NotFound("Project not found".into()))
}

/// A workflow's id, or -1 (which matches no run) for a name the project does not know: an
/// unknown workflow answers empty figures, as CircleCI does.
fn workflow(conn: &Connection, p: &Project, name: &str) -> Result<i64> {
    check_name("workflow-name", name)?;
    Ok(sql::workflow_id(conn, p.id, name)?.unwrap_or(-1))
}

/// A deterministic UUID-shaped id for a project or org (pipestat has no UUIDs of its own):
/// the first 128 bits of SHA-256 of "project:<slug>" or "org:<vcs/org>".
fn uuid_of(kind: &str, name: &str) -> String {
    let d = Sha256::digest(format!("{kind}:{name}").as_bytes());
    let h: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn org_of(slug: &str) -> &str {
    match slug.match_indices('/').nth(1) {
        Some((i, _)) => &slug[..i],
        None => slug,
    }
}

// ---------------------------------------------------------------- parameters

fn check_name(param: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.len() > MAX_NAME || v.chars().any(char::is_control) {
        return Err(Error::bad(format!(
            "parameter \"{param}\": expected a name of 1 to {MAX_NAME} characters"
        )));
    }
    Ok(())
}

/// Every value of a repeatable parameter (`?b=x&b=y`; each value may also be a comma list).
fn multi(req: &Req, param: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (k, v) in &req.query {
        if k == param {
            for item in v.split(',') {
                check_name(param, item)?;
                out.push(item.to_owned());
            }
        }
    }
    Ok(out)
}

fn one_name<'r>(req: &'r Req, param: &str) -> Result<Option<&'r str>> {
    match req.param(param) {
        None => Ok(None),
        Some(v) => {
            check_name(param, v)?;
            Ok(Some(v))
        }
    }
}

fn all_branches(req: &Req) -> Result<bool> {
    match req.param("all-branches") {
        None => Ok(false),
        Some(v) => parse_bool(v).ok_or_else(|| {
            Error::bad(format!(
                "parameter \"all-branches\": expected true or false, got {v:?}"
            ))
        }),
    }
}

/// The branches in scope: `all-branches=true` wins, then `branches` (when the route takes it;
/// repeated or comma-separated), then `branch`, then the project's default branch.
enum BranchScope {
    One(String),
    /// A JSON array of names.
    Set(String),
    All,
}

impl BranchScope {
    fn as_branches(&self) -> Branches<'_> {
        match self {
            BranchScope::One(b) => Branches::One(b),
            BranchScope::Set(j) => Branches::Set(j),
            BranchScope::All => Branches::All,
        }
    }
}

fn branch_scope(req: &Req, p: &Project, takes_branches: bool) -> Result<BranchScope> {
    let all = all_branches(req)?;
    let set = if takes_branches {
        multi(req, "branches")?
    } else {
        Vec::new()
    };
    let branch = one_name(req, "branch")?;
    if all {
        return Ok(BranchScope::All);
    }
    Ok(match set.len() {
        0 => BranchScope::One(branch.unwrap_or(&p.default_branch).to_owned()),
        1 => BranchScope::One(set[0].clone()),
        _ => BranchScope::Set(serde_json::to_string(&set).expect("strings serialize")),
    })
}

/// A time window [start, end) and its length in days.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    end: i64,
    days: f64,
}

impl Window {
    /// The window of equal length just before this one.
    fn previous(&self) -> Window {
        Window {
            start: self.start - (self.end - self.start),
            end: self.start,
            days: self.days,
        }
    }
}

fn parse_date(param: &str, v: &str, end_of_day: bool) -> Result<i64> {
    if let Some(ms) = times::parse_rfc3339(v) {
        return Ok(ms);
    }
    let date = time::Date::parse(v, time::macros::format_description!("[year]-[month]-[day]"))
        .map_err(|_| {
            Error::bad(format!(
                "parameter \"{param}\": expected an RFC 3339 time or a date YYYY-MM-DD, got {v:?}"
            ))
        })?;
    let ms = date.midnight().assume_utc().unix_timestamp() * 1000;
    let ms = if end_of_day { ms + DAY_MS } else { ms };
    if ms < 0 {
        return Err(Error::bad(format!(
            "parameter \"{param}\": dates before 1970 are not accepted"
        )));
    }
    Ok(ms)
}

/// `start-date`/`end-date` when given (end defaults to now; a date as end-date includes that
/// day; at most 90 days), else `reporting-window` (default last-90-days), ending now.
fn window(req: &Req, now: i64) -> Result<Window> {
    let start = req.param("start-date");
    let end = req.param("end-date");
    if start.is_some() || end.is_some() {
        let Some(start) = start else {
            return Err(Error::bad(
                "parameter \"start-date\": required when end-date is given",
            ));
        };
        let start = parse_date("start-date", start, false)?;
        // Without end-date the window ends now, and a refusal names the parameter given.
        let (end, too_early, too_long) = match end {
            Some(e) => (
                parse_date("end-date", e, true)?,
                "parameter \"end-date\": must be after start-date",
                "parameter \"end-date\": at most 90 days after start-date",
            ),
            None => (
                now + 1,
                "parameter \"start-date\": must be before now (end-date defaults to now)",
                "parameter \"start-date\": at most 90 days before now (end-date defaults to now)",
            ),
        };
        if end <= start {
            return Err(Error::bad(too_early));
        }
        if end - start > 90 * DAY_MS {
            return Err(Error::bad(too_long));
        }
        if req.param("reporting-window").is_some() {
            reporting_days(req)?;
        }
        return Ok(Window {
            start,
            end,
            days: (end - start) as f64 / DAY_MS as f64,
        });
    }
    let days = reporting_days(req)?;
    Ok(Window {
        start: now - days * DAY_MS,
        end: now + 1,
        days: days as f64,
    })
}

fn reporting_days(req: &Req) -> Result<i64> {
    match req.param("reporting-window") {
        None | Some("last-90-days") => Ok(90),
        Some("last-24-hours") => Ok(1),
        Some("last-7-days") => Ok(7),
        Some("last-30-days") => Ok(30),
        Some("last-60-days") => Ok(60),
        Some(v) => Err(Error::bad(format!(
            "parameter \"reporting-window\": expected one of last-24-hours, last-7-days, last-30-days, last-60-days, last-90-days; got {v:?}"
        ))),
    }
}

// ---------------------------------------------------------------- page tokens

fn encode_token(kind: char, body: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{kind}:{body}"))
}

fn bad_token() -> Error {
    Error::bad("parameter \"page-token\": not a page token this route issued")
}

fn decode_token(req: &Req, kind: char) -> Result<Option<String>> {
    let Some(t) = req.param("page-token").filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .map_err(|_| bad_token())?;
    let text = String::from_utf8(bytes).map_err(|_| bad_token())?;
    let (k, body) = text.split_once(':').ok_or_else(bad_token)?;
    if k.len() != 1 || !k.starts_with(kind) {
        return Err(bad_token());
    }
    Ok(Some(body.to_owned()))
}

/// A (number, rest) position, e.g. (created_at, rowid) or (bucket, job name).
fn decode_pair(req: &Req, kind: char) -> Result<Option<(i64, String)>> {
    match decode_token(req, kind)? {
        None => Ok(None),
        Some(body) => {
            let (a, b) = body.split_once(':').ok_or_else(bad_token)?;
            Ok(Some((a.parse().map_err(|_| bad_token())?, b.to_owned())))
        }
    }
}

// ---------------------------------------------------------------- figures

/// Whole seconds, rounded half away from zero (f64::round), from milliseconds.
fn secs(ms: f64) -> i64 {
    (ms / 1000.0).round() as i64
}

fn success_rate(a: &Agg) -> f64 {
    let d = a.total - a.canceled - a.unfinished;
    if d <= 0 {
        0.0
    } else {
        a.successful as f64 / d as f64
    }
}

fn throughput(a: &Agg, w: &Window) -> f64 {
    a.total as f64 / w.days
}

impl Dur {
    /// Percentile in whole seconds from 1/100 ms: one exact division, then rounding.
    fn pct_secs(v: Option<i64>) -> Option<i64> {
        v.map(|v| (v as f64 / 100_000.0).round() as i64)
    }

    fn stddev_secs(&self) -> Option<f64> {
        (self.n > 0).then(|| {
            let n = self.n as f64;
            let mean = self.sum as f64 / n;
            (self.sumsq / n - mean * mean).max(0.0).sqrt() / 1000.0
        })
    }

    /// CircleCI's `duration_metrics` with min, mean, median, p95, max, standard_deviation.
    fn metrics(&self) -> Value {
        json!({
            "min": self.min.map(|v| secs(v as f64)),
            "mean": (self.n > 0).then(|| (self.sum as f64 / (self.n as f64 * 1000.0)).round() as i64),
            "median": Dur::pct_secs(self.p50_x100),
            "p95": Dur::pct_secs(self.p95_x100),
            "max": self.max.map(|v| secs(v as f64)),
            "standard_deviation": self.stddev_secs(),
        })
    }
}

/// current ÷ previous; 1.0 when both are 0, -1.0 when only the previous is 0.
fn trend(cur: f64, prev: f64) -> f64 {
    if prev == 0.0 {
        if cur == 0.0 {
            1.0
        } else {
            -1.0
        }
    } else {
        cur / prev
    }
}

fn t(ms: Option<i64>) -> Value {
    ms.map(times::format_rfc3339).into()
}

/// The workflow-run status words CircleCI knows: timeout is reported as failed, skipped as
/// canceled, and a run that has not finished has no status yet (null).
fn circle_status(s: &str) -> Value {
    match s {
        "success" => json!("success"),
        "failed" | "timeout" => json!("failed"),
        "error" => json!("error"),
        "canceled" | "skipped" => json!("canceled"),
        _ => Value::Null,
    }
}

fn paged(items: Vec<Value>, next: Option<String>) -> Value {
    json!({"items": items, "next_page_token": next})
}

// ---------------------------------------------------------------- routes

/// `GET /insights/{project-slug}/workflows`
fn workflows(conn: &Connection, req: &Req, p: &Project, now: i64) -> Result<Value> {
    let w = window(req, now)?;
    let br = branch_scope(req, p, false)?;
    let after = decode_token(req, 'w')?;
    let s = scope_of(p, &w, br.as_branches(), None);
    let mut rows = workflow_figures(conn, &s, after.as_deref(), PAGE + 1)?;
    let next = next_page(&mut rows, 'w', |f| f.name.clone());
    let items = rows
        .iter()
        .map(|f| {
            let a = &f.agg;
            json!({
                "name": f.name,
                "project_id": uuid_of("project", &p.slug),
                "window_start": t(a.first_at),
                "window_end": t(a.last_at),
                "metrics": run_metrics(a, &w, f.recoveries, f.mttr_ms),
            })
        })
        .collect();
    Ok(paged(items, next))
}

/// The `metrics` object of a workflow: counts, rates, MTTR (from the number of recoveries and
/// their mean length in ms) and duration_metrics.
fn run_metrics(a: &Agg, w: &Window, count: i64, mean: Option<f64>) -> Value {
    json!({
        "total_runs": a.total,
        "successful_runs": a.successful,
        "failed_runs": a.failed,
        "success_rate": success_rate(a),
        "throughput": throughput(a, w),
        "mttr": mean.map(secs),
        "total_recoveries": count,
        "total_credits_used": a.credits,
        "duration_metrics": a.dur.metrics(),
    })
}

fn scope_of<'a>(p: &Project, w: &Window, branches: Branches<'a>, wf: Option<i64>) -> Scope<'a> {
    Scope {
        project: p.id,
        start: w.start,
        end: w.end,
        branches,
        workflow: wf,
    }
}

/// `GET /insights/{project-slug}/workflows/{workflow-name}`: recent runs, newest first.
fn workflow_runs(conn: &Connection, req: &Req, p: &Project, wf: &str, now: i64) -> Result<Value> {
    let w = window(req, now)?;
    let br = branch_scope(req, p, false)?;
    let wf = workflow(conn, p, wf)?;
    let after = run_position(req, 'r')?;
    let s = scope_of(p, &w, br.as_branches(), Some(wf));
    let mut rows = sql::recent_runs(conn, &s, after, PAGE + 1)?;
    let next = page_after_runs(&mut rows, 'r');
    let items = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "branch": r.branch,
                "duration": r.duration.map(|d| secs(d as f64)),
                "created_at": times::format_rfc3339(r.created_at),
                "stopped_at": t(r.stopped_at),
                "credits_used": r.credits,
                "status": circle_status(&r.status),
                "is_approval": r.is_approval,
            })
        })
        .collect();
    Ok(paged(items, next))
}

fn run_position(req: &Req, kind: char) -> Result<Option<(i64, i64)>> {
    match decode_pair(req, kind)? {
        None => Ok(None),
        Some((at, id)) => Ok(Some((at, id.parse().map_err(|_| bad_token())?))),
    }
}

/// Cuts `rows` (a page and one more, when there is a next page) to a page, and returns the
/// token of the next page: `kind` and the position of the page's last row.
fn next_page<T>(rows: &mut Vec<T>, kind: char, position: impl Fn(&T) -> String) -> Option<String> {
    (rows.len() as i64 > PAGE).then(|| {
        rows.truncate(PAGE as usize);
        encode_token(kind, &position(rows.last().expect("a full page")))
    })
}

fn page_after_runs(rows: &mut Vec<sql::RunRow>, kind: char) -> Option<String> {
    next_page(rows, kind, |last| {
        format!("{}:{}", last.created_at, last.rowid)
    })
}

/// `GET /insights/{project-slug}/workflows/{workflow-name}/jobs`: per-job metrics.
fn jobs(conn: &Connection, req: &Req, p: &Project, wf: &str, now: i64) -> Result<Value> {
    let w = window(req, now)?;
    let br = branch_scope(req, p, false)?;
    let wf = workflow(conn, p, wf)?;
    let filter = one_name(req, "job-name")?;
    let after = decode_token(req, 'j')?;
    let s = scope_of(p, &w, br.as_branches(), Some(wf));
    let mut rows = job_figures(conn, &s, filter, after.as_deref(), PAGE + 1)?;
    let next = next_page(&mut rows, 'j', |(name, _)| name.clone());
    let items = rows
        .iter()
        .map(|(name, a)| {
            json!({
                "name": name,
                "window_start": t(a.first_at),
                "window_end": t(a.last_at),
                "metrics": {
                    "total_runs": a.total,
                    "successful_runs": a.successful,
                    "failed_runs": a.failed,
                    "success_rate": success_rate(a),
                    "throughput": throughput(a, &w),
                    "total_credits_used": a.credits,
                    "duration_metrics": a.dur.metrics(),
                },
            })
        })
        .collect();
    Ok(paged(items, next))
}

/// `GET /insights/{project-slug}/workflows/{workflow-name}/jobs/{job-name}`: recent job runs.
fn job_runs(
    conn: &Connection,
    req: &Req,
    p: &Project,
    wf: &str,
    job: &str,
    now: i64,
) -> Result<Value> {
    check_name("job-name", job)?;
    let w = window(req, now)?;
    let br = branch_scope(req, p, false)?;
    let wf = workflow(conn, p, wf)?;
    let after = run_position(req, 'k')?;
    let s = scope_of(p, &w, br.as_branches(), Some(wf));
    let mut rows = sql::job_runs(conn, &s, job, after, PAGE + 1)?;
    let next = page_after_runs(&mut rows, 'k');
    let items = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "started_at": t(r.started_at),
                "stopped_at": t(r.stopped_at),
                "status": circle_status(&r.status),
                "credits_used": r.credits,
                "duration": r.duration.map(|d| secs(d as f64)),
            })
        })
        .collect();
    Ok(paged(items, next))
}

/// Per-workflow metrics and recoveries of the runs in scope, by workflow name, after `after`,
/// at most `limit`: from the day rollup when the scope is one branch or all (rollup.rs), else
/// by window functions over the runs (`workflow_figures_exact`). Both give the same numbers.
pub fn workflow_figures(
    conn: &Connection,
    s: &Scope,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<rollup::Figures>> {
    match rollup::Covered::of(s) {
        Some(b) => rollup::workflows(conn, &b, s.workflow, after, limit),
        None => workflow_figures_exact(conn, s, after, limit),
    }
}

/// `workflow_figures` by window functions over every run in scope (sql.rs).
pub fn workflow_figures_exact(
    conn: &Connection,
    s: &Scope,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<rollup::Figures>> {
    let rows = sql::workflow_metrics(conn, s, after, limit)?;
    let mttr = sql::mttr(conn, s)?;
    Ok(rows
        .into_iter()
        .map(|w| {
            let m = mttr.iter().find(|m| m.workflow == w.id);
            rollup::Figures {
                id: w.id,
                name: w.name,
                agg: w.agg,
                recoveries: m.map_or(0, |m| m.count),
                mttr_ms: m.and_then(|m| m.mean_ms),
            }
        })
        .collect())
}

/// Per-job-name metrics of the jobs of the scope's workflow (see `sql::job_metrics`): from the
/// job rollups when the scope is one branch or all (rollup.rs), else by window functions.
pub fn job_figures(
    conn: &Connection,
    s: &Scope,
    filter: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<(String, Agg)>> {
    match (rollup::Covered::of(s), s.workflow) {
        (Some(b), Some(wf)) => rollup::jobs(conn, &b, wf, filter, after, limit),
        _ => sql::job_metrics(conn, s, filter, after, limit),
    }
}

/// A workflow's figures over a window: the aggregate, its recoveries and their mean length.
#[derive(Default)]
struct Summary {
    agg: Agg,
    recoveries: i64,
    mttr_ms: Option<f64>,
}

/// Workflow metrics of the one workflow of the scope over its window, with MTTR.
fn summary_figures(conn: &Connection, s: &Scope) -> Result<Summary> {
    Ok(workflow_figures(conn, s, None, 1)?
        .into_iter()
        .next()
        .map(|f| Summary {
            agg: f.agg,
            recoveries: f.recoveries,
            mttr_ms: f.mttr_ms,
        })
        .unwrap_or_default())
}

/// `GET /insights/{project-slug}/workflows/{workflow-name}/summary`: metrics and trends.
fn workflow_summary(
    conn: &Connection,
    req: &Req,
    p: &Project,
    wf: &str,
    now: i64,
) -> Result<Value> {
    let w = window(req, now)?;
    let br = branch_scope(req, p, true)?;
    let wf = workflow(conn, p, wf)?;
    let prev = w.previous();
    let cur = summary_figures(conn, &scope_of(p, &w, br.as_branches(), Some(wf)))?;
    let old = summary_figures(conn, &scope_of(p, &prev, br.as_branches(), Some(wf)))?;
    let (a, b) = (&cur.agg, &old.agg);
    let f = |v: Option<i64>| v.unwrap_or(0) as f64;
    let mut metrics = run_metrics(a, &w, cur.recoveries, cur.mttr_ms);
    metrics["window_start"] = t(a.first_at);
    metrics["window_end"] = t(a.last_at);
    if let Some(m) = metrics.as_object_mut() {
        m.remove("total_recoveries");
    }
    Ok(json!({
        "metrics": metrics,
        "trends": {
            "total_runs": trend(a.total as f64, b.total as f64),
            "failed_runs": trend(a.failed as f64, b.failed as f64),
            "success_rate": trend(success_rate(a), success_rate(b)),
            "p95_duration_secs": trend(f(a.dur.p95_x100), f(b.dur.p95_x100)),
            "median_duration_secs": trend(f(a.dur.p50_x100), f(b.dur.p50_x100)),
            "total_credits_used": trend(a.credits as f64, b.credits as f64),
            "mttr": trend(cur.mttr_ms.unwrap_or(0.0), old.mttr_ms.unwrap_or(0.0)),
            "throughput": trend(throughput(a, &w), throughput(b, &prev)),
        },
        "workflow_names": sql::workflow_names(conn, p.id)?,
    }))
}

/// `GET /insights/{project-slug}/workflows/{workflow-name}/test-metrics`: over the 10 most
/// recent runs of the workflow in branch scope.
fn test_metrics(conn: &Connection, req: &Req, p: &Project, wf: &str, now: i64) -> Result<Value> {
    let br = branch_scope(req, p, false)?;
    let wf = workflow(conn, p, wf)?;
    let s = Scope {
        project: p.id,
        start: 0,
        end: 0,
        branches: br.as_branches(),
        workflow: Some(wf),
    };
    let runs = sql::test_runs(conn, &s)?;
    let stats = sql::test_stats(conn, &s)?;
    let flaky: HashSet<(String, Option<String>, String)> =
        sql::flaky(conn, p.id, now - FLAKY_DAYS * DAY_MS, now + 1)?
            .into_iter()
            .map(|f| (f.job, f.classname, f.name))
            .collect();
    let total: i64 = runs.iter().map(|r| r.total).sum();
    let average = if runs.is_empty() {
        0
    } else {
        (total as f64 / runs.len() as f64).round() as i64
    };
    let test_json = |t: &sql::TestStat| {
        json!({
            "p95_duration": t.p95_x100.map(|v| v as f64 / 100_000.0),
            "total_runs": t.runs,
            "classname": t.classname,
            "failed_runs": t.fails,
            "flaky": flaky.contains(&(t.job.clone(), t.classname.clone(), t.name.clone())),
            "source": t.suite,
            "file": t.file,
            "job_name": t.job,
            "test_name": t.name,
        })
    };
    let mut failed: Vec<&sql::TestStat> = stats
        .iter()
        .filter(|t| t.fails > 0 && t.by_fails <= 10)
        .collect();
    failed.sort_by_key(|t| t.by_fails);
    let mut slow: Vec<&sql::TestStat> = stats.iter().filter(|t| t.by_p95 <= 10).collect();
    slow.sort_by_key(|t| t.by_p95);
    // Tests tied with the last one listed but left out: those of its group beyond the list.
    let failed_extra = failed.last().map_or(0, |l| {
        l.same_fails - failed.iter().filter(|t| t.fails == l.fails).count() as i64
    });
    let slow_extra = slow.last().map_or(0, |l| {
        l.same_p95 - slow.iter().filter(|t| t.p95_x100 == l.p95_x100).count() as i64
    });
    Ok(json!({
        "average_test_count": average,
        "most_failed_tests": failed.iter().map(|t| test_json(t)).collect::<Vec<_>>(),
        "most_failed_tests_extra": failed_extra,
        "slowest_tests": slow.iter().map(|t| test_json(t)).collect::<Vec<_>>(),
        "slowest_tests_extra": slow_extra,
        "total_test_runs": total,
        "test_runs": runs.iter().map(|r| {
            let ran = r.success + r.failure + r.error;
            json!({
                "pipeline_number": r.pipeline_number,
                "workflow_id": r.run_id,
                "success_rate": if ran == 0 { 0.0 } else { r.success as f64 / ran as f64 },
                "test_counts": {
                    "error": r.error,
                    "failure": r.failure,
                    "skipped": r.skipped,
                    "success": r.success,
                    "total": r.total,
                },
            })
        }).collect::<Vec<_>>(),
    }))
}

/// `GET /insights/{project-slug}/flaky-tests`: tests that passed and failed on the same commit
/// in the last 14 days.
fn flaky_tests(conn: &Connection, p: &Project, now: i64) -> Result<Value> {
    let rows = sql::flaky(conn, p.id, now - FLAKY_DAYS * DAY_MS, now + 1)?;
    let items: Vec<Value> = rows
        .iter()
        .map(|f| {
            json!({
                "time_wasted": secs(f.time_wasted as f64),
                "workflow_created_at": times::format_rfc3339(f.workflow_created_at),
                "workflow_id": f.workflow_id,
                "classname": f.classname,
                "pipeline_number": f.pipeline_number,
                "workflow_name": f.workflow_name,
                "test_name": f.name,
                "job_name": f.job,
                "job_number": f.pipeline_number,
                "times_flaked": f.times_flaked,
                "source": f.suite,
                "file": f.file,
            })
        })
        .collect();
    Ok(json!({"flaky_tests": items, "total_flaky_tests": rows.len()}))
}

/// `GET /insights/{project-slug}/branches`
fn branches(conn: &Connection, req: &Req, p: &Project, now: i64) -> Result<Value> {
    let w = window(req, now)?;
    let wf = match one_name(req, "workflow-name")? {
        Some(name) => Some(workflow(conn, p, name)?),
        None => None,
    };
    Ok(json!({
        "org_id": uuid_of("org", org_of(&p.slug)),
        "project_id": uuid_of("project", &p.slug),
        "branches": sql::branches(conn, p.id, w.start, w.end, wf)?,
    }))
}

/// The four figures of a workflow or branch on the project page, and their trends.
fn page_figures(a: &Agg, b: &Agg) -> (Value, Value) {
    let p95 = |a: &Agg| a.dur.p95_x100.map(|v| v as f64 / 100_000.0);
    (
        json!({
            "total_credits_used": a.credits,
            "p95_duration_secs": p95(a).unwrap_or(0.0),
            "total_runs": a.total,
            "success_rate": success_rate(a),
        }),
        json!({
            "total_credits_used": trend(a.credits as f64, b.credits as f64),
            "p95_duration_secs": trend(p95(a).unwrap_or(0.0), p95(b).unwrap_or(0.0)),
            "total_runs": trend(a.total as f64, b.total as f64),
            "success_rate": trend(success_rate(a), success_rate(b)),
        }),
    )
}

fn total_secs(a: &Agg) -> i64 {
    secs(a.dur.sum as f64)
}

/// The `metrics` and `trends` of a project or org total over the window `w` (figures `a`) and
/// the one before, `prev` (figures `b`); the throughput only when `with_throughput`.
fn total_figures(a: &Agg, b: &Agg, w: &Window, prev: &Window, with_throughput: bool) -> Value {
    let mut metrics = json!({
        "total_runs": a.total,
        "total_duration_secs": total_secs(a),
        "total_credits_used": a.credits,
        "success_rate": success_rate(a),
    });
    let mut trends = json!({
        "total_runs": trend(a.total as f64, b.total as f64),
        "total_duration_secs": trend(a.dur.sum as f64, b.dur.sum as f64),
        "total_credits_used": trend(a.credits as f64, b.credits as f64),
        "success_rate": trend(success_rate(a), success_rate(b)),
    });
    if with_throughput {
        metrics["throughput"] = json!(throughput(a, w));
        trends["throughput"] = json!(trend(throughput(a, w), throughput(b, prev)));
    }
    json!({"metrics": metrics, "trends": trends})
}

/// `GET /insights/pages/{project-slug}/summary`: the project, its workflows (filtered by
/// `workflow-names`) and its workflow × branch pairs (filtered by `branches`), all branches.
fn pages_summary(conn: &Connection, req: &Req, p: &Project, now: i64) -> Result<Value> {
    let w = window(req, now)?;
    let prev = w.previous();
    let wanted_branches = multi(req, "branches")?;
    let wanted_workflows = multi(req, "workflow-names")?;
    let ids = format!("[{}]", p.id);
    let totals = |w: &Window| -> Result<Agg> {
        Ok(sql::project_totals(conn, &ids, w.start, w.end)?
            .into_iter()
            .next()
            .map(|t| t.agg)
            .unwrap_or_default())
    };
    let (a, b) = (totals(&w)?, totals(&prev)?);
    let per_wf = |w: &Window| {
        sql::workflow_metrics(conn, &scope_of(p, w, Branches::All, None), None, i64::MAX)
    };
    let (cur_wf, prev_wf) = (per_wf(&w)?, per_wf(&prev)?);
    let per_br = |w: &Window| sql::branch_metrics(conn, &scope_of(p, w, Branches::All, None));
    let (cur_br, prev_br) = (per_br(&w)?, per_br(&prev)?);

    let workflow_data: Vec<Value> = cur_wf
        .iter()
        .filter(|c| wanted_workflows.is_empty() || wanted_workflows.contains(&c.name))
        .map(|c| {
            let empty = Agg::default();
            let b = prev_wf
                .iter()
                .find(|r| r.id == c.id)
                .map_or(&empty, |r| &r.agg);
            let (metrics, trends) = page_figures(&c.agg, b);
            json!({"workflow_name": c.name, "metrics": metrics, "trends": trends})
        })
        .collect();
    let branch_data: Vec<Value> = cur_br
        .iter()
        .filter(|c| {
            (wanted_workflows.is_empty() || wanted_workflows.contains(&c.workflow))
                && (wanted_branches.is_empty()
                    || c.branch
                        .as_ref()
                        .is_some_and(|b| wanted_branches.contains(b)))
        })
        .map(|c| {
            let empty = Agg::default();
            let b = prev_br
                .iter()
                .find(|r| r.workflow == c.workflow && r.branch == c.branch)
                .map_or(&empty, |r| &r.agg);
            let (metrics, trends) = page_figures(&c.agg, b);
            json!({
                "workflow_name": c.workflow,
                "branch": c.branch,
                "metrics": metrics,
                "trends": trends,
            })
        })
        .collect();
    Ok(json!({
        "org_id": uuid_of("org", org_of(&p.slug)),
        "project_id": uuid_of("project", &p.slug),
        "project_data": total_figures(&a, &b, &w, &prev, true),
        "project_workflow_data": workflow_data,
        "project_workflow_branch_data": branch_data,
        "all_branches": sql::branches(conn, p.id, w.start, w.end, None)?,
        "all_workflows": sql::workflow_names(conn, p.id)?,
    }))
}

/// `GET /insights/{org-slug}/summary`: the org's projects (filtered by `project-names`, the
/// repository part of their slugs), all branches.
fn org_summary(conn: &Connection, req: &Req, org: &str, now: i64) -> Result<Value> {
    let w = window(req, now)?;
    let prev = w.previous();
    let wanted = multi(req, "project-names")?;
    let projects = sql::projects_of_org(conn, &format!("{org}/"))?;
    if projects.is_empty() {
        return Err(Error::NotFound("Organization not found".into()));
    }
    let name_of = |p: &Project| p.slug[org.len() + 1..].to_owned();
    let chosen: Vec<&Project> = projects
        .iter()
        .filter(|p| wanted.is_empty() || wanted.contains(&name_of(p)))
        .collect();
    let ids = serde_json::to_string(&chosen.iter().map(|p| p.id).collect::<Vec<_>>())
        .expect("ids serialize");
    let cur = sql::project_totals(conn, &ids, w.start, w.end)?;
    let old = sql::project_totals(conn, &ids, prev.start, prev.end)?;
    let sum = |rows: &[ProjectAgg]| {
        let mut t = Agg::default();
        for ProjectAgg { agg: a, .. } in rows {
            t.total += a.total;
            t.successful += a.successful;
            t.failed += a.failed;
            t.canceled += a.canceled;
            t.unfinished += a.unfinished;
            // Saturating, as the per-project sums are (see sql::Agg::from_row).
            t.credits = t.credits.saturating_add(a.credits);
            t.dur.sum = t.dur.sum.saturating_add(a.dur.sum);
        }
        t
    };
    let (a, b) = (sum(&cur), sum(&old));
    let empty = Agg::default();
    fn find(rows: &[ProjectAgg], id: i64) -> Option<&Agg> {
        rows.iter().find(|r| r.project == id).map(|r| &r.agg)
    }
    let project_data: Vec<Value> = chosen
        .iter()
        .map(|p| {
            let (a, b) = (find(&cur, p.id), find(&old, p.id));
            let (a, b) = (a.unwrap_or(&empty), b.unwrap_or(&empty));
            let mut v = total_figures(a, b, &w, &prev, false);
            v["project_name"] = json!(name_of(p));
            v
        })
        .collect();
    Ok(json!({
        "org_data": total_figures(&a, &b, &w, &prev, true),
        "org_project_data": project_data,
        "all_projects": projects.iter().map(name_of).collect::<Vec<_>>(),
    }))
}

/// `GET /insights/time-series/{project-slug}/workflows/{workflow-name}/jobs`
fn job_series(conn: &Connection, req: &Req, p: &Project, wf: &str, now: i64) -> Result<Value> {
    let bucket = match req.param("granularity") {
        None | Some("daily") => DAY_MS,
        Some("hourly") => DAY_MS / 24,
        Some(v) => {
            return Err(Error::bad(format!(
                "parameter \"granularity\": expected daily or hourly, got {v:?}"
            )))
        }
    };
    let w = window(req, now)?;
    let br = branch_scope(req, p, false)?;
    let wf = workflow(conn, p, wf)?;
    let after = decode_pair(req, 's')?;
    let s = scope_of(p, &w, br.as_branches(), Some(wf));
    let mut rows = sql::job_series(
        conn,
        &s,
        bucket,
        after.as_ref().map(|(at, name)| (name.as_str(), *at)),
        PAGE + 1,
    )?;
    let next = next_page(&mut rows, 's', |last| format!("{}:{}", last.at, last.name));
    let per_day = DAY_MS as f64 / bucket as f64;
    let items = rows
        .iter()
        .map(|b| {
            let a = &b.agg;
            json!({
                "name": b.name,
                "min_started_at": t(b.min_started),
                "max_ended_at": t(b.max_ended),
                "timestamp": times::format_rfc3339(b.at),
                "metrics": {
                    "total_runs": a.total,
                    "failed_runs": a.failed,
                    "successful_runs": a.successful,
                    "throughput": a.total as f64 * per_day,
                    "median_credits_used": b.credits_p50_x100.map_or(0, |v| (v / 100.0).round() as i64),
                    "total_credits_used": a.credits,
                    "duration_metrics": {
                        "min": a.dur.min.map(|v| secs(v as f64)),
                        "median": Dur::pct_secs(a.dur.p50_x100),
                        "max": a.dur.max.map(|v| secs(v as f64)),
                        "p95": Dur::pct_secs(a.dur.p95_x100),
                        "total": (a.dur.n > 0).then(|| secs(a.dur.sum as f64)),
                    },
                },
            })
        })
        .collect();
    Ok(paged(items, next))
}
