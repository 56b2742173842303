//! The fast path of the Apigee surface: statistics read from the rollups (`apigee_run_rollup`,
//! `apigee_job_rollup`, kept by src/store/rollups/apigee.rs) instead of the runs and jobs, for the
//! requests they answer exactly (docs/apigee.md, "The fast path").
//!
//! A request is eligible when its facts are runs or jobs, its dimensions and the fields of its
//! filter are among the rollup's keys (project, workflow, and job for jobs), every selection is
//! one the rollup keeps the figures of, its time range starts and ends on whole UTC hours, and
//! its time unit (if any) is an hour or longer at a UTC offset of whole hours, so that every
//! bucket is a union of whole hours. With a unit it reads the day rows when the range is whole
//! UTC days and every bucket a union of UTC days (a day or longer at offset 0), else the hour
//! rows; without one, the day rows of the whole UTC days inside the range and the hour rows of
//! the hours around them. Its query groups those rows instead of the facts: sums and averages from the rows'
//! sums, minimums, maximums and percentiles of durations from their sorted blobs by the
//! aggregate `pipestat_pct`, which computes them exactly as the window-function path does.
//! Everything else goes the window-function path.

use rusqlite::types::Value;

use super::{aliases, filter, grouping, Func, Query, Sel, JOBS, RUNS};
use crate::model::times::{Unit, DAY, HOUR, MINUTE};
use crate::store::functions::REGEXP_FN;
use crate::store::rollups::durations::PCT_FN;

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
    let on = |width: i64| q.start.rem_euclid(width) == 0 && q.end.rem_euclid(width) == 0;
    let hours_ok = on(HOUR)
        && match unit {
            None => true,
            Some(Unit::Second | Unit::Minute) => false,
            Some(_) => i64::from(q.tzo) * MINUTE % HOUR == 0,
        };
    let days_ok = on(DAY)
        && match unit {
            None => true,
            Some(Unit::Second | Unit::Minute | Unit::Hour) => false,
            Some(_) => q.tzo == 0,
        };
    if !hours_ok {
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

    // The rows read, in hours since the epoch: with a time unit, the day rows when every bucket
    // is a union of UTC days, else the hour rows, of [?1, ?2); without one, the day rows of
    // the whole UTC days [?3, ?4) inside the range and the hour rows of the rest.
    let (start_h, end_h) = (q.start.div_euclid(HOUR), q.end.div_euclid(HOUR));
    let mut params = vec![Value::Integer(start_h), Value::Integer(end_h)];
    let table = t.table;
    let from_rows = if unit.is_some() {
        params.push(Value::Integer(if days_ok { 24 } else { 1 }));
        format!("{table} {a}")
    } else {
        let first_day = start_h + (24 - start_h.rem_euclid(24)) % 24;
        let last_day = end_h - end_h.rem_euclid(24);
        let (d1, d2) = if first_day < last_day {
            (first_day, last_day)
        } else {
            (end_h, end_h)
        };
        params.push(Value::Integer(d1));
        params.push(Value::Integer(d2));
        format!(
            "(SELECT * FROM {table} WHERE span = 24 AND at >= ?3 AND at < ?4 \
             UNION ALL SELECT * FROM {table} WHERE span = 1 AND at >= ?1 AND at < ?3 \
             UNION ALL SELECT * FROM {table} WHERE span = 1 AND at >= ?4 AND at < ?2) {a}"
        )
    };
    let mut conds = vec![if unit.is_some() {
        format!("{a}.span = ?3 AND {a}.at >= ?1 AND {a}.at < ?2 AND {a}.n > 0")
    } else {
        format!("{a}.n > 0")
    }];
    // Every bucket boundary is a whole span, so the bucket of a span's start is the bucket of
    // every time in that span.
    let time = format!("({a}.at * {HOUR})");
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
        "SELECT {} FROM {from} WHERE {}",
        cols.join(", "),
        conds.join(" AND ")
    );
    if !group.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", group.join(", ")));
    }
    Some((sql, params))
}
