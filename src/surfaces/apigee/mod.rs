//! The Apigee surface: flexible metrics over runs, jobs and tests (docs/apigee.md).
//!
//! A request names the facts (`runs`, `jobs` or `tests`), some dimensions, some `fn(metric)`
//! selections, a time range and optionally a time unit and a filter. Its query is assembled
//! from fixed fragments only: the FROM clause, dimension and metric expressions come from the
//! fixed tables below, the filter from [`crate::surfaces::apigee::filter::to_sql`] (whitelisted columns, bound
//! values), percentiles from window functions. A request the Apigee rollups answer exactly is
//! answered from them instead (`rollup`, the fast path). docs/apigee.md has every definition.

use std::collections::HashMap;

use rusqlite::types::Value;
use rusqlite::Connection;
use serde_json::{json, Value as Json};
use time::{Date, Month};

use super::App;
use crate::error::{Error, Result};
use crate::http::{parse_bool, Method, Req, Resp};
use crate::ingest::{self, fields};
use crate::model::times::{self, bucket_next, bucket_start, Unit, DAY, HOUR, MINUTE, SECOND};
use crate::store::functions::{BUCKET_FN, REGEXP_FN};
use filter::{Column, Kind};

pub mod filter;
mod rollup;

/// Default and largest `limit`.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 14_400;
/// Most buckets in one series (10 days of minutes).
const MAX_BUCKETS: usize = 14_400;
/// Most values in one answer (dimensions on the page × buckets × selections).
const MAX_VALUES: usize = 1_000_000;
/// Most selections in `select`.
const MAX_SELECT: usize = 20;
/// Widest time range.
const MAX_RANGE_MS: i64 = 366 * DAY;
/// Widest time range with `timeUnit=second`.
const MAX_SECOND_RANGE_MS: i64 = 3_600_000;
/// Largest `tzo`, in minutes either side of UTC.
const MAX_TZO: i32 = 14 * 60;

const PROJECT_EXISTS: &str = "SELECT count(*) FROM projects WHERE key = ?1 OR slug = ?1";

/// What the statistics are over: the FROM clause, the time column and the fields.
struct Facts {
    name: &'static str,
    /// The table of the facts and its alias.
    base: &'static str,
    /// Joins by alias, in order; a query takes only those its fields (and their joins) name.
    joins: &'static [(char, &'static str)],
    /// The time a row is placed in the range and in a bucket.
    time: &'static str,
    /// Dimensions (text) and metrics (numbers) by name; a filter may name any of them.
    columns: &'static [&'static Column],
}

const fn dim(name: &'static str, sql: &'static str) -> Column {
    Column {
        name,
        sql,
        kind: Kind::Text,
    }
}

const fn metric(name: &'static str, sql: &'static str) -> Column {
    Column {
        name,
        sql,
        kind: Kind::Number,
    }
}

static RUNS: Facts = Facts {
    name: "runs",
    base: "runs r",
    joins: &[
        ('p', "JOIN projects p ON p.id = r.project_id"),
        ('w', "JOIN workflows w ON w.id = r.workflow_id"),
    ],
    time: "r.created_at",
    columns: &[
        &dim("project", "p.slug"),
        &dim("workflow", "w.name"),
        &dim("branch", "r.branch"),
        &dim("status", "r.status"),
        &dim("actor", "r.actor"),
        &dim("trigger", "r.trigger"),
        &metric("run_count", "1"),
        &metric("message_count", "1"),
        &metric(
            "duration",
            "(r.stopped_at - coalesce(r.started_at, r.created_at)) / 1000.0",
        ),
        &metric("queue_time", "(r.started_at - r.created_at) / 1000.0"),
        &metric("credits", "r.credits_used"),
        &metric(
            "is_error",
            "(r.status = 'failed' OR r.status = 'error' OR r.status = 'timeout')",
        ),
        &metric("is_success", "(r.status = 'success')"),
    ],
};

static JOBS: Facts = Facts {
    name: "jobs",
    base: "jobs j",
    joins: &[
        ('r', "JOIN runs r ON r.id = j.run_id"),
        ('p', "JOIN projects p ON p.id = j.project_id"),
        ('w', "JOIN workflows w ON w.id = r.workflow_id"),
    ],
    time: "j.day_at",
    columns: &[
        &dim("project", "p.slug"),
        &dim("workflow", "w.name"),
        &dim("branch", "r.branch"),
        &dim("status", "j.status"),
        &dim("actor", "r.actor"),
        &dim("trigger", "r.trigger"),
        &dim("job", "j.name"),
        &dim("stage", "j.stage"),
        &dim("kind", "j.kind"),
        &dim("env", "j.env"),
        &dim("service", "j.service"),
        &dim("cluster", "j.cluster"),
        &dim(
            "production",
            "CASE j.production WHEN 1 THEN 'true' ELSE 'false' END",
        ),
        &metric("job_count", "1"),
        &metric("message_count", "1"),
        &metric(
            "duration",
            "(j.stopped_at - coalesce(j.started_at, j.created_at)) / 1000.0",
        ),
        &metric("queue_time", "(j.started_at - j.created_at) / 1000.0"),
        &metric("credits", "j.credits_used"),
        &metric(
            "is_error",
            "(j.status = 'failed' OR j.status = 'error' OR j.status = 'timeout')",
        ),
        &metric("is_success", "(j.status = 'success')"),
    ],
};

static TESTS: Facts = Facts {
    name: "tests",
    base: "test_results t",
    joins: &[
        ('j', "JOIN jobs j ON j.id = t.job_id"),
        ('r', "JOIN runs r ON r.id = t.run_id"),
        ('p', "JOIN projects p ON p.id = t.project_id"),
        ('w', "JOIN workflows w ON w.id = r.workflow_id"),
    ],
    time: "j.day_at",
    columns: &[
        &dim("project", "p.slug"),
        &dim("workflow", "w.name"),
        &dim("job", "j.name"),
        &dim("suite", "t.suite"),
        &dim("classname", "t.classname"),
        &dim("test", "t.name"),
        &dim("result", "t.result"),
        &metric("test_count", "1"),
        &metric("message_count", "1"),
        &metric("duration", "t.duration"),
        &metric("is_error", "(t.result = 'failure' OR t.result = 'error')"),
        &metric("is_success", "(t.result = 'success')"),
    ],
};

impl Facts {
    fn named(name: &str) -> Option<&'static Facts> {
        [&RUNS, &JOBS, &TESTS].into_iter().find(|f| f.name == name)
    }

    fn column(&self, name: &str, kind: Kind) -> Option<&'static Column> {
        self.columns
            .iter()
            .copied()
            .find(|c| c.name == name && c.kind == kind)
    }

    /// The FROM clause with the joins that `sql` fragments (and those joins) need.
    fn from(&self, sql: &[&str]) -> String {
        let mut need: Vec<char> = sql.iter().flat_map(|s| aliases(s)).collect();
        for (alias, join) in self.joins.iter().rev() {
            if need.contains(alias) {
                need.extend(aliases(join));
            }
        }
        let mut out = self.base.to_owned();
        for (alias, join) in self.joins {
            if need.contains(alias) {
                out.push(' ');
                out.push_str(join);
            }
        }
        out
    }

    fn names(&self, kind: Kind) -> String {
        self.columns
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The table aliases a fixed SQL fragment uses: a letter followed by a dot, not inside a word.
fn aliases(sql: &str) -> Vec<char> {
    let b = sql.as_bytes();
    (1..b.len())
        .filter(|&i| {
            b[i] == b'.'
                && b[i - 1].is_ascii_lowercase()
                && (i < 2 || !(b[i - 2].is_ascii_alphanumeric() || b[i - 2] == b'_'))
        })
        .map(|i| char::from(b[i - 1]))
        .collect()
}

/// Answers `/v1/organizations/*` and `/v1/o/*`; `rest` is the path after that prefix.
pub fn route(_app: &App, conn: &Connection, req: &Req, rest: &[&str]) -> Result<Resp> {
    let (org, env, dims) = match rest {
        [org, "environments" | "e", env, "stats"] => (*org, *env, ""),
        [org, "environments" | "e", env, "stats", dims] => (*org, *env, *dims),
        _ => {
            return Err(Error::NotFound(format!(
                "no route for /{}",
                req.segments.join("/")
            )))
        }
    };
    if req.method != Method::Get {
        return Err(Error::MethodNotAllowed("GET"));
    }
    let facts = Facts::named(env).ok_or_else(|| {
        Error::NotFound(format!(
            "environment {env:?} not found; the environments are runs, jobs and tests"
        ))
    })?;
    let project = if org == "all" {
        None
    } else {
        if !project_exists(conn, org)? {
            return Err(Error::NotFound(format!(
                "organization {org:?} not found: name a project key, or all"
            )));
        }
        Some(org.to_owned())
    };
    stats(conn, req, facts, project, dims)
}

/// Answers the native form `/api/v1/stats/{dimensions}`; `rest` is the path after `stats`.
pub fn route_native(_app: &App, conn: &Connection, req: &Req, rest: &[&str]) -> Result<Resp> {
    let dims = match rest {
        [] => "",
        [dims] => *dims,
        _ => {
            return Err(Error::NotFound(format!(
                "no route for /{}",
                req.segments.join("/")
            )))
        }
    };
    if req.method != Method::Get {
        return Err(Error::MethodNotAllowed("GET"));
    }
    let facts = match req.param("facts") {
        None => &RUNS,
        Some(f) => Facts::named(f).ok_or_else(|| {
            Error::bad(format!(
                "facts: expected runs, jobs or tests, got {:?}",
                clip(f)
            ))
        })?,
    };
    let project = match req.param("project").filter(|p| !p.is_empty()) {
        None => None,
        Some(p) => {
            let p = if p.contains('/') {
                ingest::canonical_slug(p).map_err(|e| Error::bad(format!("project: {e}")))?
            } else {
                p.to_owned()
            };
            if !project_exists(conn, &p)? {
                return Err(Error::NotFound(format!("project {:?} not found", clip(&p))));
            }
            Some(p)
        }
    };
    stats(conn, req, facts, project, dims)
}

fn project_exists(conn: &Connection, key_or_slug: &str) -> Result<bool> {
    let n: i64 = conn
        .prepare_cached(PROJECT_EXISTS)?
        .query_row([key_or_slug], |r| r.get(0))?;
    Ok(n > 0)
}

/// At most 100 characters of a client's value, for error messages.
fn clip(s: &str) -> String {
    fields::clip(s, 100)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Func {
    Sum,
    Avg,
    Min,
    Max,
    /// A percentile, in hundredths (50, 95, 99).
    Pct(i64),
}

/// One `select` expression: what the answer calls it, and what it computes.
#[derive(Clone, Debug)]
struct Sel {
    text: String,
    func: Func,
    metric: &'static Column,
}

impl Sel {
    fn same(&self, other: &Sel) -> bool {
        self.func == other.func && self.metric.name == other.metric.name
    }
}

fn parse_sel(facts: &Facts, text: &str, param: &str) -> Result<Sel> {
    let t = text.trim();
    let (func, name) = match t.split_once('(') {
        Some((f, rest)) => {
            let inner = rest.strip_suffix(')').ok_or_else(|| {
                Error::bad(format!("{param}: expected fn(metric), got {:?}", clip(t)))
            })?;
            let func = match f.trim().to_ascii_lowercase().as_str() {
                "sum" => Func::Sum,
                "avg" => Func::Avg,
                "min" => Func::Min,
                "max" => Func::Max,
                "p50" => Func::Pct(50),
                "p95" => Func::Pct(95),
                "p99" => Func::Pct(99),
                other => {
                    return Err(Error::bad(format!(
                    "{param}: unknown function {:?}; expected sum, avg, min, max, p50, p95 or p99",
                    clip(other)
                )))
                }
            };
            (func, inner.trim())
        }
        None => (Func::Sum, t),
    };
    let metric = facts.column(name, Kind::Number).ok_or_else(|| {
        Error::bad(format!(
            "{param}: unknown metric {:?} for {}; known: {}",
            clip(name),
            facts.name,
            facts.names(Kind::Number)
        ))
    })?;
    Ok(Sel {
        text: t.to_owned(),
        func,
        metric,
    })
}

/// Parses Apigee's `MM/DD/YYYY HH:MM[:SS]~MM/DD/YYYY HH:MM[:SS]` as local times `tzo` minutes
/// east of UTC, into UTC milliseconds [start, end).
fn parse_time_range(s: &str, tzo: i32) -> Result<(i64, i64)> {
    let bad = || {
        Error::bad(format!(
            "timeRange: expected MM/DD/YYYY HH:MM~MM/DD/YYYY HH:MM, got {:?}",
            clip(s)
        ))
    };
    let (a, b) = s.split_once('~').ok_or_else(bad)?;
    let start = parse_local(a).ok_or_else(bad)? - i64::from(tzo) * MINUTE;
    let end = parse_local(b).ok_or_else(bad)? - i64::from(tzo) * MINUTE;
    if end <= start {
        return Err(Error::bad("timeRange: the end must be after the start"));
    }
    if end - start > MAX_RANGE_MS {
        return Err(Error::bad("timeRange: at most 366 days wide"));
    }
    Ok((start, end))
}

/// `M/D/YYYY H:MM[:SS]` (one or two digits except the year) as milliseconds of a local clock.
fn parse_local(s: &str) -> Option<i64> {
    let mut parts = s.split_whitespace();
    let (date, time) = (parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let num = |t: &str, max_len: usize| -> Option<u32> {
        (!t.is_empty() && t.len() <= max_len && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let d: Vec<&str> = date.split('/').collect();
    let t: Vec<&str> = time.split(':').collect();
    if d.len() != 3 || d[2].len() != 4 || !(2..=3).contains(&t.len()) {
        return None;
    }
    let (month, day, year) = (num(d[0], 2)?, num(d[1], 2)?, num(d[2], 4)?);
    let (h, m) = (num(t[0], 2)?, num(t[1], 2)?);
    let sec = if t.len() == 3 { num(t[2], 2)? } else { 0 };
    if year < 1970 || h > 23 || m > 59 || sec > 59 {
        return None;
    }
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    let days = times::unix_day_of(date);
    Some(days * DAY + i64::from(h) * HOUR + i64::from(m) * MINUTE + i64::from(sec) * SECOND)
}

/// Everything a request asks for, validated.
struct Query {
    facts: &'static Facts,
    project: Option<String>,
    dims: Vec<&'static Column>,
    sels: Vec<Sel>,
    start: i64,
    end: i64,
    unit: Option<Unit>,
    tzo: i32,
    sortby: usize,
    descending: bool,
    topk: Option<usize>,
    limit: usize,
    offset: usize,
    ts_ascending: bool,
    filter: Option<filter::Expr>,
}

fn number<T: std::str::FromStr>(req: &Req, name: &str) -> Result<Option<T>> {
    match req.param(name) {
        None => Ok(None),
        Some(v) => v.trim().parse().map(Some).map_err(|_| {
            Error::bad(format!(
                "{name}: expected a whole number, got {:?}",
                clip(v)
            ))
        }),
    }
}

fn parse_query(
    req: &Req,
    facts: &'static Facts,
    project: Option<String>,
    dims: &str,
) -> Result<Query> {
    let mut dim_cols: Vec<&'static Column> = Vec::new();
    for name in dims.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let col = facts.column(name, Kind::Text).ok_or_else(|| {
            Error::bad(format!(
                "dimensions: unknown dimension {:?} for {}; known: {}",
                clip(name),
                facts.name,
                facts.names(Kind::Text)
            ))
        })?;
        if dim_cols.iter().any(|c| c.name == col.name) {
            return Err(Error::bad(format!("dimensions: {name:?} is listed twice")));
        }
        dim_cols.push(col);
    }

    let select = req
        .param("select")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| Error::bad("select: required, e.g. select=sum(duration),run_count"))?;
    if select.split(',').count() > MAX_SELECT {
        return Err(Error::bad(format!(
            "select: at most {MAX_SELECT} expressions"
        )));
    }
    let sels = select
        .split(',')
        .map(|s| parse_sel(facts, s, "select"))
        .collect::<Result<Vec<_>>>()?;

    let tzo: i32 = number(req, "tzo")?.unwrap_or(0);
    if tzo.abs() > MAX_TZO {
        return Err(Error::bad(format!(
            "tzo: minutes east of UTC, between -{MAX_TZO} and {MAX_TZO}"
        )));
    }
    let range = req
        .param("timeRange")
        .ok_or_else(|| Error::bad("timeRange: required, e.g. 01/01/2026 00:00~02/01/2026 00:00"))?;
    let (start, end) = parse_time_range(range, tzo)?;
    let unit = match req.param("timeUnit") {
        None => None,
        Some(u) => Some(Unit::parse(u).ok_or_else(|| {
            Error::bad(format!(
                "timeUnit: expected second, minute, hour, day, week, month, quarter or year, got {:?}",
                clip(u)
            ))
        })?),
    };
    if unit == Some(Unit::Second) && end - start > MAX_SECOND_RANGE_MS {
        return Err(Error::bad(
            "timeRange: at most one hour wide with timeUnit=second",
        ));
    }

    let sortby = match req.param("sortby") {
        None => 0,
        Some(s) => {
            let wanted = parse_sel(facts, s, "sortby")?;
            sels.iter().position(|x| x.same(&wanted)).ok_or_else(|| {
                Error::bad(format!(
                    "sortby: {:?} is not one of the select expressions",
                    clip(s)
                ))
            })?
        }
    };
    let descending = match req.param("sort") {
        None => true,
        Some(s) if s.eq_ignore_ascii_case("desc") => true,
        Some(s) if s.eq_ignore_ascii_case("asc") => false,
        Some(s) => {
            return Err(Error::bad(format!(
                "sort: expected ASC or DESC, got {:?}",
                clip(s)
            )))
        }
    };
    let topk: Option<usize> = number(req, "topk")?;
    if topk == Some(0) {
        return Err(Error::bad("topk: at least 1"));
    }
    let limit = number(req, "limit")?.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::bad(format!("limit: between 1 and {MAX_LIMIT}")));
    }
    let offset = number(req, "offset")?.unwrap_or(0);
    let ts_ascending = match req.param("tsAscending") {
        None => false,
        Some(s) => parse_bool(s).ok_or_else(|| {
            Error::bad(format!(
                "tsAscending: expected true or false, got {:?}",
                clip(s)
            ))
        })?,
    };
    let filter = match req.param("filter").filter(|f| !f.trim().is_empty()) {
        None => None,
        Some(f) => Some(
            filter::parse(f, facts.columns)
                .map_err(|e| Error::bad(format!("{e}{}", near(f, e.pos))))?,
        ),
    };
    Ok(Query {
        facts,
        project,
        dims: dim_cols,
        sels,
        start,
        end,
        unit,
        tzo,
        sortby,
        descending,
        topk,
        limit,
        offset,
        ts_ascending,
        filter,
    })
}

/// A short excerpt of the filter from a 1-based character position, for error messages.
fn near(f: &str, pos: usize) -> String {
    let rest: String = f.chars().skip(pos.saturating_sub(1)).take(20).collect();
    if rest.is_empty() {
        String::new()
    } else {
        format!(" (near {rest:?})")
    }
}

/// The buckets of the range, oldest first.
fn buckets(q: &Query, unit: Unit) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    let mut b = bucket_start(q.start, unit, q.tzo);
    while b < q.end {
        if out.len() == MAX_BUCKETS {
            return Err(Error::bad(format!(
                "timeUnit: the range holds more than {MAX_BUCKETS} buckets; use a coarser unit or a narrower timeRange"
            )));
        }
        out.push(b);
        b = bucket_next(b, unit, q.tzo);
    }
    Ok(out)
}

/// A window frame covering every row of the partition.
const WHOLE_PARTITION: &str = "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING";

/// What both statistics queries (this one and the rollups' in rollup.rs) group by: the
/// project condition (pushed to `conds`), one column per dimension (d0, d1, …) and, with
/// `unit`, the bucket of the time expression `time` (b). Returns the columns and the GROUP BY
/// terms.
fn grouping(
    q: &Query,
    time: &str,
    unit: Option<Unit>,
    params: &mut Vec<Value>,
    conds: &mut Vec<String>,
) -> (Vec<String>, Vec<String>) {
    if let Some(p) = &q.project {
        params.push(Value::Text(p.clone()));
        let n = params.len();
        conds.push(format!("(p.key = ?{n} OR p.slug = ?{n})"));
    }
    let mut cols: Vec<String> = q
        .dims
        .iter()
        .enumerate()
        .map(|(i, d)| format!("{} AS d{i}", d.sql))
        .collect();
    let mut group: Vec<String> = (0..q.dims.len()).map(|i| format!("d{i}")).collect();
    if let Some(unit) = unit {
        let b = bucket_sql(time, unit, q.tzo, params);
        cols.push(format!("{b} AS b"));
        group.push("b".into());
    }
    (cols, group)
}

/// The SQL of the start of the `unit` bucket (at UTC offset `tzo` minutes) that the time
/// expression `time` (milliseconds) falls in, its values bound as parameters appended to
/// `params`: plain arithmetic for units of a fixed width, else the registered `BUCKET_FN`.
fn bucket_sql(time: &str, unit: Unit, tzo: i32, params: &mut Vec<Value>) -> String {
    match unit.fixed() {
        Some((width, shift)) => {
            params.push(Value::Integer(i64::from(tzo) * MINUTE + shift));
            params.push(Value::Integer(width));
            let (s, w) = (params.len() - 1, params.len());
            format!("(({time} + ?{s}) / ?{w}) * ?{w} - ?{s}")
        }
        None => {
            params.push(Value::Integer(i64::from(tzo)));
            params.push(Value::Integer(unit.code()));
            let (t, u) = (params.len() - 1, params.len());
            format!("{BUCKET_FN}({time}, ?{u}, ?{t})")
        }
    }
}

/// The statistics query for `sels` and its parameters. Result columns: one per dimension, the
/// bucket (with `unit`), then one per sum/avg/min/max selection and three per percentile
/// (the value at the lower rank, at the next rank, and the count of values).
fn build_sql(q: &Query, sels: &[Sel], unit: Option<Unit>) -> (String, Vec<Value>) {
    let time = q.facts.time;
    let mut params = vec![Value::Integer(q.start), Value::Integer(q.end)];
    let mut conds = vec![format!("{time} >= ?1 AND {time} < ?2")];
    let (mut cols, group) = grouping(q, time, unit, &mut params, &mut conds);
    // Each metric selected is computed once per row, as m0, m1, …
    let mut metrics: Vec<&'static Column> = Vec::new();
    for s in sels {
        if !metrics.iter().any(|m| m.name == s.metric.name) {
            metrics.push(s.metric);
        }
    }
    let m = |c: &Column| metrics.iter().position(|x| x.name == c.name).unwrap_or(0);
    for (i, c) in metrics.iter().enumerate() {
        cols.push(format!("{} AS m{i}", c.sql));
    }
    if let Some(e) = &q.filter {
        conds.push(filter::to_sql(e, REGEXP_FN, &mut params));
    }
    let fragments: Vec<&str> = cols.iter().chain(&conds).map(String::as_str).collect();
    let mut sql = format!(
        "WITH f AS (SELECT {} FROM {} WHERE {})",
        cols.join(", "),
        q.facts.from(&fragments),
        conds.join(" AND ")
    );
    // Percentiles rank each metric's non-null values within each group.
    let mut ranked: Vec<usize> = sels
        .iter()
        .filter(|s| matches!(s.func, Func::Pct(_)))
        .map(|s| m(s.metric))
        .collect();
    ranked.sort_unstable();
    ranked.dedup();
    let agg = |s: &Sel, k: usize| match s.func {
        // total() rather than sum(): it never fails on integer overflow.
        Func::Sum => format!("total(m{k})"),
        Func::Avg => format!("avg(m{k})"),
        Func::Min => format!("min(m{k})"),
        _ => format!("max(m{k})"),
    };
    let mut out = group.clone();
    if ranked.is_empty() {
        for s in sels {
            out.push(agg(s, m(s.metric)));
        }
        sql.push_str(&format!(" SELECT {} FROM f", out.join(", ")));
        if !group.is_empty() {
            sql.push_str(&format!(" GROUP BY {}", group.join(", ")));
        }
        return (sql, params);
    }
    // With percentiles, every function is a window over the group ordered by the first ranked
    // metric (one sort serves them all); the count and the other functions span the whole
    // partition. Only the rows a percentile needs, and each group's first row, go on to the
    // GROUP BY, which then has a handful of rows per group to read.
    let partition = if group.is_empty() {
        String::new()
    } else {
        format!("PARTITION BY {}", group.join(", "))
    };
    let k0 = ranked[0];
    let mut windows: Vec<String> = Vec::new();
    for k in &ranked {
        windows.push(format!(
            "ROW_NUMBER() OVER (g ORDER BY m{k} NULLS LAST) AS r{k}, \
             COUNT(m{k}) OVER (g ORDER BY m{k} NULLS LAST {WHOLE_PARTITION}) AS n{k}"
        ));
    }
    let mut keep = vec![format!("r{k0} = 1")];
    for (i, s) in sels.iter().enumerate() {
        let k = m(s.metric);
        match s.func {
            Func::Pct(p) => {
                // Ranks are 1-based: the lower rank is floor((n - 1) * p / 100) + 1.
                let lo = format!("(n{k} - 1) * {p} / 100 + 1");
                let hi = format!("(n{k} - 1) * {p} / 100 + 2");
                out.push(format!("max(CASE WHEN r{k} = {lo} THEN m{k} END)"));
                out.push(format!("max(CASE WHEN r{k} = {hi} THEN m{k} END)"));
                out.push(format!("max(n{k})"));
                keep.push(format!("r{k} = {lo} OR r{k} = {hi}"));
            }
            _ => {
                windows.push(format!(
                    "{} OVER (g ORDER BY m{k0} NULLS LAST {WHOLE_PARTITION}) AS a{i}",
                    agg(s, k)
                ));
                out.push(format!("max(a{i})"));
            }
        }
    }
    sql.push_str(&format!(
        ", w AS (SELECT {}{}{} FROM f WINDOW g AS ({partition}))",
        group.join(", "),
        if group.is_empty() { "" } else { ", " },
        ranked
            .iter()
            .map(|k| format!("m{k}"))
            .chain(windows)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    sql.push_str(&format!(
        " SELECT {} FROM w WHERE {}",
        out.join(", "),
        keep.join(" OR ")
    ));
    if !group.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", group.join(", ")));
    }
    (sql, params)
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Real(r) => Some(*r),
        _ => None,
    }
}

fn as_text(v: Value) -> Option<String> {
    match v {
        Value::Text(s) => Some(s),
        Value::Integer(i) => Some(i.to_string()),
        Value::Real(r) => Some(r.to_string()),
        Value::Null | Value::Blob(_) => None,
    }
}

/// One row of a statistics query: dimension values, bucket, one value per selection.
struct Row {
    dims: Vec<Option<String>>,
    bucket: Option<i64>,
    values: Vec<Option<f64>>,
}

/// The query for `sels`: from the Apigee rollups when they answer it exactly (`fast`), else by
/// window functions over the facts.
fn choose_sql(q: &Query, sels: &[Sel], unit: Option<Unit>) -> (String, Vec<Value>, bool) {
    match rollup::build_sql(q, sels, unit) {
        Some((sql, params)) => (sql, params, true),
        None => {
            let (sql, params) = build_sql(q, sels, unit);
            (sql, params, false)
        }
    }
}

fn run_sql(conn: &Connection, q: &Query, sels: &[Sel], unit: Option<Unit>) -> Result<Vec<Row>> {
    let (sql, params, fast) = choose_sql(q, sels, unit);
    // Without a filter the text depends only on the choice of fields, function and unit, so
    // the statement cache serves it; a filter's shape is the client's to vary, and caching
    // each would push every other surface's statements out of the cache.
    let (mut plain, mut cached);
    let stmt: &mut rusqlite::Statement = if q.filter.is_some() {
        plain = conn.prepare(&sql)?;
        &mut plain
    } else {
        cached = conn.prepare_cached(&sql)?;
        &mut cached
    };
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mut i = 0;
        let take = |i: &mut usize| -> rusqlite::Result<Value> {
            let v = r.get::<_, Value>(*i);
            *i += 1;
            v
        };
        let dims = (0..q.dims.len())
            .map(|_| take(&mut i).map(as_text))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let bucket = match unit {
            Some(_) => as_f64(&take(&mut i)?).map(|b| b as i64),
            None => None,
        };
        let mut values = Vec::with_capacity(sels.len());
        for s in sels {
            match s.func {
                // The fast path's percentile is one finished value.
                Func::Pct(p) if !fast => {
                    let lo = as_f64(&take(&mut i)?);
                    let hi = as_f64(&take(&mut i)?);
                    let n = as_f64(&take(&mut i)?).map_or(0, |n| n as i64);
                    values.push(lo.map(|lo| {
                        // h = (n - 1) * p; interpolate between the values at ranks floor(h) and
                        // floor(h) + 1 (numpy's default "linear" method).
                        let frac = ((n - 1) * p % 100) as f64 / 100.0;
                        lo + frac * (hi.unwrap_or(lo) - lo)
                    }));
                }
                _ => values.push(as_f64(&take(&mut i)?)),
            }
        }
        out.push(Row {
            dims,
            bucket,
            values,
        });
    }
    Ok(out)
}

/// The query plan SQLite picks for a statistics request (`EXPLAIN QUERY PLAN`, one line per
/// step, indented by depth), for the benchmark and for diagnosing slow requests. `facts` and
/// `dims` are as in the path; `req` carries the query parameters.
pub fn explain(conn: &Connection, facts: &str, dims: &str, req: &Req) -> Result<Vec<String>> {
    let facts = Facts::named(facts).ok_or_else(|| Error::bad("facts: runs, jobs or tests"))?;
    let q = parse_query(req, facts, None, dims)?;
    let (sql, params, _) = choose_sql(&q, &q.sels, q.unit);
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
    let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
    let mut depth: HashMap<i64, usize> = HashMap::new();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let (id, parent, detail): (i64, i64, String) = (r.get(0)?, r.get(1)?, r.get(3)?);
        let d = depth.get(&parent).map_or(0, |d| d + 1);
        depth.insert(id, d);
        out.push(format!("{}{detail}", "  ".repeat(d)));
    }
    Ok(out)
}

/// One dimension value (or the whole set, without dimensions) and its values.
struct Group {
    name: String,
    /// Without a time unit: one value per selection.
    totals: Vec<Option<f64>>,
    /// With a time unit: bucket start → one value per selection.
    series: HashMap<i64, Vec<Option<f64>>>,
    rank: f64,
}

impl Group {
    fn new(name: String, sels: usize) -> Group {
        Group {
            name,
            totals: vec![None; sels],
            series: HashMap::new(),
            rank: 0.0,
        }
    }
}

fn stats(
    conn: &Connection,
    req: &Req,
    facts: &'static Facts,
    project: Option<String>,
    dims: &str,
) -> Result<Resp> {
    let q = parse_query(req, facts, project, dims)?;
    let series = match q.unit {
        Some(unit) => Some(buckets(&q, unit)?),
        None => None,
    };
    let rows = run_sql(conn, &q, &q.sels, q.unit)?;

    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Vec<Option<String>>, usize> = HashMap::new();
    for row in rows {
        // With a time unit a group has one row per bucket: look its key up, keep it only once.
        let at = match index.get(&row.dims) {
            Some(&at) => at,
            None => {
                let name = row
                    .dims
                    .iter()
                    .map(|d| d.as_deref().unwrap_or("(not set)"))
                    .collect::<Vec<_>>()
                    .join(",");
                groups.push(Group::new(name, q.sels.len()));
                index.insert(row.dims, groups.len() - 1);
                groups.len() - 1
            }
        };
        match row.bucket {
            Some(b) => {
                groups[at].series.insert(b, row.values);
            }
            None => groups[at].totals = row.values,
        }
    }

    if !q.dims.is_empty() {
        rank(conn, &q, &mut groups, &index)?;
        groups.sort_by(|a, b| {
            let by_value = if q.descending {
                b.rank.total_cmp(&a.rank)
            } else {
                a.rank.total_cmp(&b.rank)
            };
            by_value.then_with(|| a.name.cmp(&b.name))
        });
        if let Some(k) = q.topk {
            groups.truncate(k);
        }
        groups = groups.into_iter().skip(q.offset).take(q.limit).collect();
    } else if groups.is_empty() {
        groups.push(Group::new(String::new(), q.sels.len()));
    }

    let mut order = series.unwrap_or_default();
    if !q.ts_ascending {
        order.reverse();
    }
    let per_group = q.sels.len() * order.len().max(1);
    if groups.len().saturating_mul(per_group) > MAX_VALUES {
        return Err(Error::bad(format!(
            "the answer would hold more than {MAX_VALUES} values; use a coarser timeUnit, a smaller limit or topk"
        )));
    }
    let metrics_of = |g: &Group| -> Vec<Json> {
        q.sels
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let values: Vec<Json> = if q.unit.is_some() {
                    order
                        .iter()
                        .map(|b| {
                            let v = g.series.get(b).and_then(|v| v[i]);
                            json!({"timestamp": b, "value": format_value(v)})
                        })
                        .collect()
                } else {
                    vec![Json::String(format_value(g.totals[i]))]
                };
                json!({"name": s.text, "values": values})
            })
            .collect()
    };
    let env = if q.dims.is_empty() {
        json!({"name": facts.name, "metrics": metrics_of(&groups[0])})
    } else {
        let dims: Vec<Json> = groups
            .iter()
            .map(|g| json!({"name": g.name, "metrics": metrics_of(g)}))
            .collect();
        json!({"name": facts.name, "dimensions": dims})
    };
    Ok(Resp::json(
        200,
        &json!({
            "environments": [env],
            "metaData": {
                "errors": [],
                "notices": [
                    "Source:SQLite",
                    format!("Table used: {}", facts.name),
                    "query served by:pipestat"
                ]
            }
        }),
    ))
}

/// Sets each group's `rank`: the `sortby` selection over the whole range. With a time unit,
/// sums, minimums and maximums combine across buckets; averages and percentiles do not, so
/// they are computed again without buckets.
fn rank(
    conn: &Connection,
    q: &Query,
    groups: &mut [Group],
    index: &HashMap<Vec<Option<String>>, usize>,
) -> Result<()> {
    let s = q.sortby;
    if q.unit.is_none() {
        for g in groups.iter_mut() {
            g.rank = g.totals[s].unwrap_or(0.0);
        }
        return Ok(());
    }
    match q.sels[s].func {
        Func::Sum | Func::Min | Func::Max => {
            for g in groups.iter_mut() {
                let vals = g.series.values().filter_map(|v| v[s]);
                g.rank = match q.sels[s].func {
                    Func::Sum => vals.sum(),
                    Func::Min => vals.reduce(f64::min).unwrap_or(0.0),
                    _ => vals.reduce(f64::max).unwrap_or(0.0),
                };
            }
        }
        Func::Avg | Func::Pct(_) => {
            for row in run_sql(conn, q, std::slice::from_ref(&q.sels[s]), None)? {
                if let Some(&at) = index.get(&row.dims) {
                    groups[at].rank = row.values[0].unwrap_or(0.0);
                }
            }
        }
    }
    Ok(())
}

/// A value as Apigee sends it: a string. Whole numbers have no fraction; others are rounded to
/// six decimals without trailing zeros. No value (an empty bucket or no rows) is "0".
fn format_value(v: Option<f64>) -> String {
    let v = v.unwrap_or(0.0);
    if v == 0.0 {
        return "0".into();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        crate::model::times::parse_rfc3339(s).expect("a valid time")
    }

    #[test]
    fn buckets_start_on_local_boundaries() {
        // 2026-03-01 is a Sunday; at +01:00, 23:30Z is Monday 00:30 local.
        let t = ms("2026-03-01T23:30:00Z");
        assert_eq!(bucket_start(t, Unit::Day, 60), ms("2026-03-01T23:00:00Z"));
        assert_eq!(bucket_start(t, Unit::Day, 0), ms("2026-03-01T00:00:00Z"));
        assert_eq!(bucket_start(t, Unit::Week, 60), ms("2026-03-01T23:00:00Z"));
        assert_eq!(bucket_start(t, Unit::Week, 0), ms("2026-02-23T00:00:00Z"));
        assert_eq!(bucket_start(t, Unit::Hour, 30), ms("2026-03-01T23:30:00Z"));
        let q = ms("2026-03-31T23:30:00Z");
        assert_eq!(bucket_start(q, Unit::Month, 60), ms("2026-03-31T23:00:00Z"));
        assert_eq!(
            bucket_start(q, Unit::Quarter, 0),
            ms("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            bucket_next(ms("2026-01-01T00:00:00Z"), Unit::Quarter, 0),
            ms("2026-04-01T00:00:00Z")
        );
        assert_eq!(
            bucket_next(ms("2025-12-31T23:00:00Z"), Unit::Year, 60),
            ms("2026-12-31T23:00:00Z")
        );
        assert_eq!(
            bucket_next(ms("2026-12-01T00:00:00Z"), Unit::Month, 0),
            ms("2027-01-01T00:00:00Z")
        );
    }

    #[test]
    fn only_the_joins_needed() {
        assert_eq!(
            aliases("(j.stopped_at - r.x) / 1000.0 AND (p.key = ?3)"),
            ['j', 'r', 'p']
        );
        assert_eq!(JOBS.from(&["j.name", "j.day_at >= ?1"]), "jobs j");
        // The workflow's name needs workflows, which is joined through runs.
        assert_eq!(
            JOBS.from(&["w.name"]),
            "jobs j JOIN runs r ON r.id = j.run_id JOIN workflows w ON w.id = r.workflow_id"
        );
        assert_eq!(TESTS.from(&["t.name"]), "test_results t");
        assert_eq!(
            RUNS.from(&["(p.key = ?3 OR p.slug = ?3)"]),
            "runs r JOIN projects p ON p.id = r.project_id"
        );
    }

    #[test]
    fn time_ranges() {
        assert_eq!(
            parse_time_range("3/1/2026 23:00~03/02/2026 01:30:15", 60).unwrap(),
            (ms("2026-03-01T22:00:00Z"), ms("2026-03-02T00:30:15Z"))
        );
        for bad in [
            "03/01/2026~03/02/2026",
            "03/01/2026 00:00",
            "13/01/2026 00:00~03/02/2026 00:00",
            "02/30/2026 00:00~03/02/2026 00:00",
            "03/02/2026 00:00~03/01/2026 00:00",
            "01/01/2025 00:00~01/03/2026 00:00",
            "03/01/26 00:00~03/02/2026 00:00",
            "03/01/2026 24:00~03/02/2026 00:00",
        ] {
            assert!(parse_time_range(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_strings() {
        assert_eq!(format_value(None), "0");
        assert_eq!(format_value(Some(42.0)), "42");
        assert_eq!(format_value(Some(39.7)), "39.7");
        assert_eq!(format_value(Some(1.0 / 3.0)), "0.333333");
        assert_eq!(format_value(Some(-0.0000001)), "0");
    }
}
