//! pipestat's SQL functions, registered on every connection the store opens: the statements
//! of the surfaces and the rollups' rebuilds call them by name.

use regex::{Regex, RegexBuilder};
use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use crate::model::times::{self, Unit};
use crate::store::rollups::durations;

/// `pipestat_regexp(pattern, value)`: whether the whole value matches (the Apigee filter's
/// `similar to`); NULL for a NULL value.
pub const REGEXP_FN: &str = "pipestat_regexp";
/// `pipestat_bucket(ms, unit code, tzo)`: the start of the time bucket holding `ms`.
pub const BUCKET_FN: &str = "pipestat_bucket";
/// The largest compiled program a `similar to` pattern may make, so a hostile pattern cannot
/// blow up time or memory.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Registers pipestat's SQL functions on a new connection (`db` calls it for every connection
/// it opens): the Apigee filter's regex, the calendar buckets, the percentile aggregate over
/// duration blobs, and the blob encoder the rollups' rebuilds use.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function(REGEXP_FN, 2, flags, |ctx| {
        // The pattern is a bound parameter, so it is compiled once per query and kept as the
        // statement's auxiliary data; the parser has already refused invalid or oversized ones.
        let re = ctx.get_or_create_aux(
            0,
            |v| -> Result<regex::Regex, Box<dyn std::error::Error + Send + Sync>> {
                Ok(compile_regex(v.as_str()?)?)
            },
        )?;
        let matched = match ctx.get_raw(1) {
            ValueRef::Null => None,
            ValueRef::Text(t) => Some(std::str::from_utf8(t).is_ok_and(|t| re.is_match(t))),
            ValueRef::Integer(i) => Some(re.is_match(&i.to_string())),
            ValueRef::Real(r) => Some(re.is_match(&r.to_string())),
            ValueRef::Blob(_) => Some(false),
        };
        Ok(matched)
    })?;
    conn.create_scalar_function(BUCKET_FN, 3, flags, |ctx| {
        let ms = ctx.get::<Option<i64>>(0)?;
        let unit = Unit::from_code(ctx.get::<i64>(1)?);
        let tzo = ctx.get::<i64>(2)?;
        Ok(match (ms, unit, i32::try_from(tzo)) {
            (Some(ms), Some(unit), Ok(tzo)) => Some(times::bucket_start(ms, unit, tzo)),
            _ => None,
        })
    })?;
    conn.create_aggregate_function(durations::PCT_FN, 2, flags, durations::Pct)?;
    conn.create_aggregate_function(durations::DURS_FN, 1, flags, durations::DursAgg)?;
    Ok(())
}

/// Compiles a `similar to` pattern the way the SQL function does: anchored to the whole value,
/// under the size limit.
pub fn compile_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
}
