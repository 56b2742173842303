//! The fast path of the Apigee surface: statistics read from the rollups (`apigee_run_rollup`,
//! `apigee_job_rollup`, kept by src/store/rollups/apigee.rs) instead of the runs and jobs, for the
//! requests they answer exactly (docs/apigee.md, "The fast path").
//!
//! A request is eligible when its facts are runs or jobs, its dimensions and the fields of its
//! filter are among the rollup's keys (project, workflow, and job for jobs), every selection is
//! one the rollup keeps the figures of, and every bucket boundary inside the range, and the
//! range's ends, fall on whole UTC hours, or the facts are runs: what the hour and day rows do
//! not cover (the parts of the range before its first and after its last whole hour, and at an
//! offset of no whole hours with a unit of a day or longer, the UTC hour of each day that holds
//! a local midnight) is then read from the runs by their time index, grouped per minute into
//! rows of the same figures. A unit below an hour, and hours at such an offset, never qualify.
//! With a unit it reads the day rows when the range is whole UTC days and every bucket a union
//! of UTC days (a day or longer at offset 0), else the hour rows; without one, the day rows of
//! the whole UTC days inside the range and the hour rows of the hours around them. Its query
//! groups those rows instead of the facts: sums and averages from the rows' sums, minimums,
//! maximums and percentiles of durations from their sorted blobs by the aggregate
//! `pipestat_pct`, which computes them exactly as the window-function path does.
//! Everything else goes the window-function path.

use rusqlite::types::Value;

use super::{aliases, filter, grouping, Func, Query, Sel, JOBS, RUNS};
use crate::model::times::{Unit, DAY, HOUR, MINUTE};
use crate::store::functions::REGEXP_FN;
use crate::store::rollups::durations::{DURS_FN, PCT_FN};

/// A rollup table, the alias it is read under (that of its facts' base table, so that the
/// dimension and filter expressions of `Facts` read its columns) and the dimensions it is keyed
/// by.
struct Rollup {
    table: &'static str,
    alias: &'static str,
    keys: &'static [&'static str],
}

fn rollup(facts: &super::Facts) -> Option<Rollup> {
    if std::ptr::eq(facts, &RUNS) {
        Some(Rollup {
            table: "apigee_run_rollup",
            alias: "r",
            keys: &["project", "workflow"],
        })
    } else if std::ptr::eq(facts, &JOBS) {
        Some(Rollup {
            table: "apigee_job_rollup",
            alias: "j",
            keys: &["project", "workflow", "job"],
        })
    } else {
        None
    }
}

/// Whether every field a filter names is one of `keys`.
fn only_keys(e: &filter::Expr, keys: &[&str]) -> bool {
    match e {
        filter::Expr::Or(t) | filter::Expr::And(t) => t.iter().all(|t| only_keys(t, keys)),
        filter::Expr::Cond(c) => keys.contains(&c.field.name),
    }
}

/// The SQL of one selection over the hour rows aliased `a`, when the rollup keeps what it
/// needs. Each equals what the window-function path computes over the facts (docs/apigee.md):
/// sums and averages from the row sums (durations in ms, so divided by 1000 as the facts'
/// expression does), extremes and percentiles of durations from the blobs, and the extremes of
/// the 0/1 metrics from their counts.
fn select(s: &Sel, a: &str) -> Option<String> {
    let any = format!("total({a}.n) > 0");
    Some(match (s.metric.name, s.func) {
        ("run_count" | "job_count" | "message_count", Func::Sum) => format!("total({a}.n)"),
        // Every row's value is 1.
        ("run_count" | "job_count" | "message_count", _) => format!("(CASE WHEN {any} THEN 1 END)"),
        ("duration", Func::Sum) => format!("total({a}.dur_sum) / 1000.0"),
        ("duration", Func::Avg) => format!("total({a}.dur_sum) / 1000.0 / total({a}.dur_n)"),
        ("duration", Func::Min) => format!("{PCT_FN}({a}.durs, 0)"),
        ("duration", Func::Max) => format!("{PCT_FN}({a}.durs, 100)"),
        ("duration", Func::Pct(p)) => format!("{PCT_FN}({a}.durs, {p})"),
        ("queue_time", Func::Sum) => format!("total({a}.queue_sum) / 1000.0"),
        ("queue_time", Func::Avg) => format!("total({a}.queue_sum) / 1000.0 / total({a}.queue_n)"),
        ("credits", Func::Sum) => format!("total({a}.credits)"),
        ("credits", Func::Avg) => format!("total({a}.credits) / total({a}.n)"),
        ("is_error" | "is_success", f) => {
            let col = if s.metric.name == "is_error" {
                "errors"
            } else {
                "successes"
            };
            match f {
                Func::Sum => format!("total({a}.{col})"),
                Func::Avg => format!("total({a}.{col}) / total({a}.n)"),
                Func::Min => format!("(CASE WHEN {any} THEN total({a}.{col}) = total({a}.n) END)"),
                Func::Max => format!("(CASE WHEN {any} THEN total({a}.{col}) > 0 END)"),
                Func::Pct(_) => return None,
            }
        }
        _ => return None,
    })
}

/// The placeholder of `v`, appended to `params`.
fn bind(params: &mut Vec<Value>, v: i64) -> String {
    params.push(Value::Integer(v));
    format!("?{}", params.len())
}

/// The columns of the rows the fast query groups, each a rollup row or a group of facts: the
/// keys, `t` (the time in ms that places the row in a bucket) and the figures.
const FIGURES: &str = "n, errors, successes, credits, dur_n, dur_sum, queue_n, queue_sum, durs";

/// The fast query for `sels` and its parameters, or None when the request is not eligible.
/// Result columns: one per dimension, the bucket (with `unit`), then one per selection (a
/// percentile is one finished value, not the three columns of the window-function path).
pub(super) fn build_sql(
    q: &Query,
    sels: &[Sel],
    unit: Option<Unit>,
) -> Option<(String, Vec<Value>)> {
    let t = rollup(q.facts)?;
    let a = t.alias;
    let whole_hour_tzo = i64::from(q.tzo) * MINUTE % HOUR == 0;
    // Local midnights fall inside a UTC hour at an offset of no whole hours: that hour of each
    // UTC day (0–23) is read from the facts, when a bucket is a day or longer.
    let edge_hour = match unit {
        Some(Unit::Second | Unit::Minute) => return None,
        Some(Unit::Hour) if !whole_hour_tzo => return None,
        Some(Unit::Hour) | None => None,
        Some(_) if whole_hour_tzo => None,
        Some(_) => Some((-i64::from(q.tzo) * MINUTE).rem_euclid(DAY) / HOUR),
    };
    // The whole UTC hours [hs, he) of the range, read from the rollups (but for the edge
    // hour); the rest of the range, [start, hs) and [he, end), from the facts.
    let (hs, he) = (
        q.start.div_euclid(HOUR) + i64::from(q.start.rem_euclid(HOUR) != 0),
        q.end.div_euclid(HOUR),
    );
    let (edges, hs, he) = if hs < he {
        ([(q.start, hs * HOUR), (he * HOUR, q.end)], hs, he)
    } else {
        ([(q.start, q.end), (q.end, q.end)], hs, hs)
    };
    let first_edge_hour = edge_hour
        .map(|e| hs + (e - hs.rem_euclid(24)).rem_euclid(24))
        .filter(|&h| h < he);
    let facts_read = first_edge_hour.is_some() || edges.iter().any(|(lo, hi)| lo < hi);
    let days_ok = q.start.rem_euclid(DAY) == 0
        && q.end.rem_euclid(DAY) == 0
        && match unit {
            None => true,
            Some(Unit::Second | Unit::Minute | Unit::Hour) => false,
            Some(_) => q.tzo == 0,
        };
    // Only the runs have an index on their time that reads a few hours of them quickly.
    if facts_read && !std::ptr::eq(q.facts, &RUNS) {
        return None;
    }
    let dims_ok = q.dims.iter().all(|d| t.keys.contains(&d.name));
    let filter_ok = q.filter.as_ref().map_or(true, |e| only_keys(e, t.keys));
    if !(dims_ok && filter_ok) {
        return None;
    }
    let exprs = sels
        .iter()
        .map(|s| select(s, a))
        .collect::<Option<Vec<_>>>()?;

    let mut params = Vec::new();
    let table = t.table;
    let keys = if table == "apigee_job_rollup" {
        "project_id, workflow_id, name"
    } else {
        "project_id, workflow_id"
    };
    // Each part of the rows keeps to the project asked for, if any, before they are grouped.
    let project = match &q.project {
        Some(p) => {
            params.push(Value::Text(p.clone()));
            let n = params.len();
            format!(" AND project_id IN (SELECT id FROM projects WHERE key = ?{n} OR slug = ?{n})")
        }
        None => String::new(),
    };
    let rows = |span: i64, from: &str, to: &str, skip: &str| {
        format!(
            "SELECT {keys}, at * {HOUR} AS t, {FIGURES} FROM {table} \
             WHERE span = {span} AND at >= {from} AND at < {to}{skip}{project}"
        )
    };
    // The rows read: with a time unit, the day rows when every bucket is a union of UTC days,
    // else the hour rows, of [hs, he) but the edge hours; without one, the day rows of the
    // whole UTC days [d1, d2) inside the range and the hour rows of the rest.
    let (p_hs, p_he) = (bind(&mut params, hs), bind(&mut params, he));
    let mut parts = if unit.is_some() {
        let skip = match edge_hour {
            Some(e) => format!(" AND at % 24 <> {}", bind(&mut params, e)),
            None => String::new(),
        };
        vec![rows(if days_ok { 24 } else { 1 }, &p_hs, &p_he, &skip)]
    } else {
        let first_day = hs + (24 - hs.rem_euclid(24)) % 24;
        let last_day = he - he.rem_euclid(24);
        let (d1, d2) = if first_day < last_day {
            (first_day, last_day)
        } else {
            (he, he)
        };
        let (p_d1, p_d2) = (bind(&mut params, d1), bind(&mut params, d2));
        vec![
            rows(24, &p_d1, &p_d2, ""),
            rows(1, &p_hs, &p_d1, ""),
            rows(1, &p_d2, &p_he, ""),
        ]
    };
    // The rest of the range and the edge hours, from the runs themselves, grouped by minute
    // (every bucket boundary is a whole minute) into rows of the same figures, computed as
    // the rebuild of the rollups computes them. CROSS JOIN keeps the spans the outer loop, so
    // that each reads its runs by (project, time) or time, not a whole project's runs by an
    // index that starts with the project.
    let mut with = String::new();
    if facts_read {
        let mut spans: Vec<String> = edges
            .iter()
            .map(|&(lo, hi)| {
                format!(
                    "SELECT {} AS lo, {} AS hi",
                    bind(&mut params, lo),
                    bind(&mut params, hi)
                )
            })
            .collect();
        let mut hours = String::new();
        if let Some(h0) = first_edge_hour {
            let (p_h0, p_end) = (bind(&mut params, h0), bind(&mut params, he));
            hours = format!(
                "eh(h) AS (SELECT {p_h0} UNION ALL SELECT h + 24 FROM eh WHERE h + 24 < {p_end}), "
            );
            spans.push(format!("SELECT h * {HOUR}, h * {HOUR} + {HOUR} FROM eh"));
        }
        with = format!(
            "WITH RECURSIVE {hours}edges(lo, hi) AS ({}) ",
            spans.join(" UNION ALL ")
        );
        parts.push(format!(
            "SELECT project_id, workflow_id, t, count(*) AS n,
                sum(status = 'failed' OR status = 'error' OR status = 'timeout') AS errors,
                sum(status = 'success') AS successes, total(credits_used) AS credits,
                count(d) AS dur_n, total(d) AS dur_sum, count(qt) AS queue_n,
                total(qt) AS queue_sum, {DURS_FN}(d) AS durs
            FROM (SELECT x.project_id, x.workflow_id, x.status, x.credits_used,
                    x.created_at - (x.created_at % {MINUTE} + {MINUTE}) % {MINUTE} AS t,
                    x.stopped_at - coalesce(x.started_at, x.created_at) AS d,
                    x.started_at - x.created_at AS qt
                FROM edges e CROSS JOIN runs x ON x.created_at >= e.lo AND x.created_at < e.hi{project})
            GROUP BY project_id, workflow_id, t"
        ));
    }
    let from_rows = format!("({}) {a}", parts.join(" UNION ALL "));
    let mut conds = vec![format!("{a}.n > 0")];
    // Every bucket boundary is a whole span, so the bucket of a row's `t` is the bucket of
    // every time the row counts.
    let time = format!("{a}.t");
    let (mut cols, group) = grouping(q, &time, unit, &mut params, &mut conds);
    if let Some(e) = &q.filter {
        conds.push(filter::to_sql(e, REGEXP_FN, &mut params));
    }
    cols.extend(exprs);
    // The projects and workflows tables, when a dimension or the filter names them.
    let mut from = from_rows;
    let need: Vec<char> = cols.iter().chain(&conds).flat_map(|s| aliases(s)).collect();
    if need.contains(&'p') {
        from.push_str(&format!(" JOIN projects p ON p.id = {a}.project_id"));
    }
    if need.contains(&'w') {
        from.push_str(&format!(" JOIN workflows w ON w.id = {a}.workflow_id"));
    }
    let mut sql = format!(
        "{with}SELECT {} FROM {from} WHERE {}",
        cols.join(", "),
        conds.join(" AND ")
    );
    if !group.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", group.join(", ")));
    }
    Some((sql, params))
}
