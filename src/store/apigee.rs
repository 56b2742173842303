//! Upkeep of the Apigee rollups (schema.sql: `apigee_run_rollup`, `apigee_job_rollup`), read
//! by src/apigee/rollup.rs.
//!
//! A row adds up the runs (or jobs) of one project, workflow (and job name) over one span of
//! time, a UTC hour or a UTC day of the facts' time, and keeps their durations whole, sorted,
//! in a blob; each run or job counts in its hour's row and in its day's. As in
//! src/store/insights.rs, a run or job subtracts itself before it is updated (`run_removing`,
//! `job_removing`, which read the stored row) and adds itself once written (`run_added`,
//! `job_added`, from the values written); a run that changes workflow moves its jobs, since a
//! job counts in its run's workflow. Changes are summed per row in memory (`Pending`, kept in
//! `store::Ids`), durations added and removed listed per row, and `flush` writes each row
//! touched once, before the transaction commits. `rebuild` computes the same rows from the
//! stored runs and jobs with one GROUP BY per table and span, for the schema upgrade and for
//! the tests that compare the two.

use std::collections::BTreeMap;

use rusqlite::functions::{Aggregate, Context};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::{Error, Result};
use crate::model::{Job, Run};

const HOUR_MS: i64 = 3_600_000;

/// The spans of the rows, in hours: an hour and a day.
pub const SPANS: [i64; 2] = [1, 24];

/// The additive figures of a row: n, errors, successes, credits, dur_n, dur_sum, queue_n,
/// queue_sum. Kept as f64 like the REAL columns; the counts are small integers, exact in an f64.
type Sums = [f64; 8];

/// What the writes of one transaction changed in one row and `flush` has not written yet.
#[derive(Default)]
struct Delta {
    sums: Sums,
    /// Durations (ms) to add to the row's blob, and to take out of it.
    add: Vec<i64>,
    del: Vec<i64>,
}

/// Rollup changes not written yet, per row, in key order (store.rs keeps one in `Ids` and
/// calls `flush` before committing).
#[derive(Default)]
pub struct Pending {
    /// apigee_run_rollup: (span, at, project, workflow).
    runs: BTreeMap<(i64, i64, i64, i64), Delta>,
    /// apigee_job_rollup: (span, at, project, workflow, name).
    jobs: BTreeMap<(i64, i64, i64, i64, String), Delta>,
}

/// A run's or job's share of its rows: its hour, its figures and its duration.
struct Fact {
    hour: i64,
    sums: Sums,
    dur: Option<i64>,
}

impl Fact {
    /// The (span, at) of each row the fact counts in: `at` is the span's first hour.
    fn spans(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        SPANS
            .into_iter()
            .map(|span| (span, self.hour - self.hour.rem_euclid(span)))
    }
}

/// The figures of a run or job from its stored values, with the metrics of docs/apigee.md:
/// duration stopped_at − (started_at or created_at), queue time started_at − created_at.
fn fact(
    time: i64,
    status: &str,
    created: i64,
    started: Option<i64>,
    stopped: Option<i64>,
    credits: i64,
) -> Fact {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let dur = stopped.map(|s| s - started.unwrap_or(created));
    let queue = started.map(|s| s - created);
    Fact {
        hour: time.div_euclid(HOUR_MS),
        sums: [
            1.0,
            flag(status == "failed" || status == "error" || status == "timeout"),
            flag(status == "success"),
            credits as f64,
            flag(dur.is_some()),
            dur.map_or(0.0, |d| d as f64),
            flag(queue.is_some()),
            queue.map_or(0.0, |q| q as f64),
        ],
        dur,
    }
}

impl Delta {
    /// Adds (`sign` 1) or subtracts (-1) one fact.
    fn apply(&mut self, f: &Fact, sign: f64) {
        for (a, b) in self.sums.iter_mut().zip(f.sums) {
            *a += sign * b;
        }
        if let Some(d) = f.dur {
            if sign > 0.0 {
                self.add.push(d);
            } else {
                self.del.push(d);
            }
        }
    }
}

fn run_fact(run: &Run) -> Fact {
    fact(
        run.created_at,
        run.status.as_str(),
        run.created_at,
        run.started_at,
        run.stopped_at,
        run.credits_used,
    )
}

fn job_fact(job: &Job) -> Fact {
    fact(
        job.started_at.unwrap_or(job.created_at),
        job.status.as_str(),
        job.created_at,
        job.started_at,
        job.stopped_at,
        job.credits_used,
    )
}

/// Where a stored run counts: (project, workflow) and its fact.
const SELECT_RUN: &str = "SELECT project_id, workflow_id, status, created_at, started_at,
    stopped_at, credits_used FROM runs WHERE id = ?1";

/// Subtracts a stored run from its row: call it before the run is updated, and hand what it
/// returns (the run's workflow as stored) to `run_added`.
pub fn run_removing(conn: &Connection, pending: &mut Pending, run_id: i64) -> Result<i64> {
    let (project, workflow, f) = conn.prepare_cached(SELECT_RUN)?.query_row([run_id], |r| {
        let created: i64 = r.get(3)?;
        let status: String = r.get(2)?;
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            fact(created, &status, created, r.get(4)?, r.get(5)?, r.get(6)?),
        ))
    })?;
    bump_run(pending, project, workflow, &f, -1.0);
    Ok(workflow)
}

/// Counts a run just inserted (`old_workflow` None) or just updated (`old_workflow` from
/// `run_removing`) as `run`, in `workflow`; when the update changed its workflow, moves the
/// run's stored jobs there too.
pub fn run_added(
    conn: &Connection,
    pending: &mut Pending,
    run_id: i64,
    project: i64,
    workflow: i64,
    run: &Run,
    old_workflow: Option<i64>,
) -> Result<()> {
    bump_run(pending, project, workflow, &run_fact(run), 1.0);
    if let Some(old) = old_workflow.filter(|&w| w != workflow) {
        let jobs = conn
            .prepare_cached(RUN_JOBS)?
            .query_map([run_id], stored_job)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (project, name, f) in jobs {
            bump_job(pending, project, old, &name, &f, -1.0);
            bump_job(pending, project, workflow, &name, &f, 1.0);
        }
    }
    Ok(())
}

/// Adds (`sign` 1) or subtracts (-1) a run's fact to its rows.
fn bump_run(pending: &mut Pending, project: i64, workflow: i64, f: &Fact, sign: f64) {
    for (span, at) in f.spans() {
        pending
            .runs
            .entry((span, at, project, workflow))
            .or_default()
            .apply(f, sign);
    }
}

/// Adds (`sign` 1) or subtracts (-1) a job's fact to its rows.
fn bump_job(pending: &mut Pending, project: i64, workflow: i64, name: &str, f: &Fact, sign: f64) {
    for (span, at) in f.spans() {
        pending
            .jobs
            .entry((span, at, project, workflow, name.to_owned()))
            .or_default()
            .apply(f, sign);
    }
}

/// A stored job as the rollup sees it: project, name and fact (SELECT_JOB, RUN_JOBS).
fn stored_job(r: &Row) -> rusqlite::Result<(i64, String, Fact)> {
    let created: i64 = r.get(3)?;
    let started: Option<i64> = r.get(4)?;
    let status: String = r.get(2)?;
    let f = fact(
        started.unwrap_or(created),
        &status,
        created,
        started,
        r.get(5)?,
        r.get(6)?,
    );
    Ok((r.get(0)?, r.get(1)?, f))
}

const SELECT_JOB: &str = "SELECT project_id, name, status, created_at, started_at, stopped_at,
    credits_used FROM jobs WHERE id = ?1";
/// ?1 run: its jobs, as `stored_job` reads them.
const RUN_JOBS: &str = "SELECT project_id, name, status, created_at, started_at, stopped_at,
    credits_used FROM jobs WHERE run_id = +?1";

/// Subtracts a stored job from its row: call it before the job is updated. `workflow` is its
/// run's workflow (where the job counts).
pub fn job_removing(
    conn: &Connection,
    pending: &mut Pending,
    job_id: i64,
    workflow: i64,
) -> Result<()> {
    let (project, name, f) = conn
        .prepare_cached(SELECT_JOB)?
        .query_row([job_id], stored_job)?;
    bump_job(pending, project, workflow, &name, &f, -1.0);
    Ok(())
}

/// Counts a job just inserted or updated as `job` into its row, under its run's `workflow`.
pub fn job_added(pending: &mut Pending, project: i64, workflow: i64, job: &Job) {
    bump_job(pending, project, workflow, &job.name, &job_fact(job), 1.0);
}

/// The durations of a `durs` blob (schema.sql): ascending, each read by its index.
pub struct Durations<'a> {
    width: usize,
    base: i64,
    body: &'a [u8],
}

impl<'a> Durations<'a> {
    /// Reads a blob; one that is not in the format (never written by pipestat) reads as empty.
    pub fn of(blob: &'a [u8]) -> Durations<'a> {
        let empty = Durations {
            width: 8,
            base: 0,
            body: &[],
        };
        let Some((&width, rest)) = blob.split_first() else {
            return empty;
        };
        let width = usize::from(width);
        if !(1..=8).contains(&width) || rest.len() < 8 || (rest.len() - 8) % width != 0 {
            return empty;
        }
        let (base, body) = rest.split_at(8);
        Durations {
            width,
            base: i64::from_be_bytes(base.try_into().expect("8 bytes")),
            body,
        }
    }

    pub fn len(&self) -> usize {
        self.body.len() / self.width
    }

    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// The `i`-th least duration (ms).
    pub fn get(&self, i: usize) -> i64 {
        let bytes = &self.body[i * self.width..(i + 1) * self.width];
        let offset = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        self.base.wrapping_add(offset as i64)
    }

    /// How many durations are at most `v`.
    pub fn count_le(&self, v: i64) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.get(mid) <= v {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    pub fn iter(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// The blob of ascending durations `sorted`: empty when there are none; else one byte w, the
/// least duration as 8 bytes big-endian (the base), then each duration less the base as w bytes
/// big-endian, w the fewest bytes that hold the greatest such difference.
pub fn encode(sorted: &[i64]) -> Vec<u8> {
    let (Some(&base), Some(&last)) = (sorted.first(), sorted.last()) else {
        return Vec::new();
    };
    let range = last.wrapping_sub(base) as u64;
    let width = (8 - range.leading_zeros() as usize / 8).max(1);
    let mut out = Vec::with_capacity(9 + width * sorted.len());
    out.push(width as u8);
    out.extend_from_slice(&base.to_be_bytes());
    for v in sorted {
        out.extend_from_slice(&(v.wrapping_sub(base) as u64).to_be_bytes()[8 - width..]);
    }
    out
}

/// `old` (a row's blob) without the durations of `del` and with those of `add`, encoded anew.
/// A duration to remove that the row does not hold means the rollup lost step with the rows:
/// an internal error, so that the write rolls back rather than store a wrong row.
fn merge(old: &[u8], mut add: Vec<i64>, mut del: Vec<i64>) -> Result<Vec<u8>> {
    add.sort_unstable();
    if del.is_empty() {
        if let Some(spliced) = splice(old, &add) {
            return Ok(spliced);
        }
    }
    let mut all: Vec<i64> = Durations::of(old).iter().chain(add).collect();
    all.sort_unstable();
    del.sort_unstable();
    // Both ascending: keep each value that is not the next one to delete.
    let mut dels = del.into_iter().peekable();
    all.retain(|v| dels.next_if_eq(v).is_none());
    if dels.next().is_some() {
        return Err(Error::Internal(
            "the Apigee rollup lost step with the stored rows (a duration to remove is missing)"
                .into(),
        ));
    }
    Ok(encode(&all))
}

/// `merge` without decoding, for the usual case at ingest: durations only added (`sorted`,
/// ascending), none below the blob's base and none beyond what its width holds, so the base
/// and width stay those `encode` would choose. The new slots are spliced in among the stored
/// ones, whose bytes are copied as they are. None when that does not apply.
fn splice(old: &[u8], sorted: &[i64]) -> Option<Vec<u8>> {
    let stored = Durations::of(old);
    let (&least, &greatest) = (sorted.first()?, sorted.last()?);
    if stored.is_empty() || least < stored.base {
        return None;
    }
    let width = stored.width;
    let range = greatest.wrapping_sub(stored.base) as u64;
    if width < 8 && range >> (8 * width) != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(old.len() + width * sorted.len());
    out.extend_from_slice(&old[..old.len() - stored.body.len()]);
    let mut copied = 0;
    for &v in sorted {
        // The stored durations up to v go before it; `sorted` ascending keeps this monotone.
        let before = stored.count_le(v);
        out.extend_from_slice(&stored.body[copied * width..before * width]);
        copied = before;
        out.extend_from_slice(&(v.wrapping_sub(stored.base) as u64).to_be_bytes()[8 - width..]);
    }
    out.extend_from_slice(&stored.body[copied * width..]);
    Some(out)
}

/// The aggregate `pipestat_durs(ms)`: the blob of the non-NULL values of a group, for
/// `rebuild` (registered on every connection by `apigee::register_functions`).
pub const DURS_FN: &str = "pipestat_durs";

pub struct DursAgg;

impl Aggregate<Vec<i64>, Vec<u8>> for DursAgg {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Vec<i64>> {
        Ok(Vec::new())
    }

    fn step(&self, ctx: &mut Context<'_>, acc: &mut Vec<i64>) -> rusqlite::Result<()> {
        if let Some(v) = ctx.get::<Option<i64>>(0)? {
            acc.push(v);
        }
        Ok(())
    }

    fn finalize(&self, _: &mut Context<'_>, acc: Option<Vec<i64>>) -> rusqlite::Result<Vec<u8>> {
        let mut all = acc.unwrap_or_default();
        all.sort_unstable();
        Ok(encode(&all))
    }
}

const RUN_DURS: &str = "SELECT durs FROM apigee_run_rollup
    WHERE span = ?1 AND at = ?2 AND project_id = ?3 AND workflow_id = ?4";
const JOB_DURS: &str = "SELECT durs FROM apigee_job_rollup
    WHERE span = ?1 AND at = ?2 AND project_id = ?3 AND workflow_id = ?4 AND name = ?5";
// ?13 (?14 for jobs) is the row's new blob, or NULL when its durations did not change.
const ADD_RUN_ROW: &str = "INSERT INTO apigee_run_rollup (span, at, project_id, workflow_id, n,
    errors, successes, credits, dur_n, dur_sum, queue_n, queue_sum, durs)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, coalesce(?13, x''))
    ON CONFLICT (span, at, project_id, workflow_id) DO UPDATE SET n = n + excluded.n,
        errors = errors + excluded.errors, successes = successes + excluded.successes,
        credits = credits + excluded.credits, dur_n = dur_n + excluded.dur_n,
        dur_sum = dur_sum + excluded.dur_sum, queue_n = queue_n + excluded.queue_n,
        queue_sum = queue_sum + excluded.queue_sum, durs = coalesce(?13, durs)";
const ADD_JOB_ROW: &str = "INSERT INTO apigee_job_rollup (span, at, project_id, workflow_id, name,
    n, errors, successes, credits, dur_n, dur_sum, queue_n, queue_sum, durs)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, coalesce(?14, x''))
    ON CONFLICT (span, at, project_id, workflow_id, name) DO UPDATE SET n = n + excluded.n,
        errors = errors + excluded.errors, successes = successes + excluded.successes,
        credits = credits + excluded.credits, dur_n = dur_n + excluded.dur_n,
        dur_sum = dur_sum + excluded.dur_sum, queue_n = queue_n + excluded.queue_n,
        queue_sum = queue_sum + excluded.queue_sum, durs = coalesce(?14, durs)";

/// The new blob of a row whose durations changed (None when none did), from its stored one.
fn new_durs(
    conn: &Connection,
    sql: &str,
    key: &[&dyn rusqlite::ToSql],
    d: Delta,
) -> Result<Option<Vec<u8>>> {
    if d.add.is_empty() && d.del.is_empty() {
        return Ok(None);
    }
    let old: Option<Vec<u8>> = conn
        .prepare_cached(sql)?
        .query_row(key, |r| r.get(0))
        .optional()?;
    merge(old.as_deref().unwrap_or_default(), d.add, d.del).map(Some)
}

/// Writes the changes `pending` holds into the rollup tables, in key order, and empties it.
pub fn flush(conn: &Connection, pending: &mut Pending) -> Result<()> {
    let Pending { runs, jobs } = std::mem::take(pending);
    let int = |v: f64| v as i64;
    for ((span, at, p, w), d) in runs {
        let s = d.sums;
        let durs = new_durs(conn, RUN_DURS, params![span, at, p, w], d)?;
        conn.prepare_cached(ADD_RUN_ROW)?.execute(params![
            span,
            at,
            p,
            w,
            int(s[0]),
            int(s[1]),
            int(s[2]),
            s[3],
            int(s[4]),
            s[5],
            int(s[6]),
            s[7],
            durs
        ])?;
    }
    for ((span, at, p, w, name), d) in jobs {
        let s = d.sums;
        let durs = new_durs(conn, JOB_DURS, params![span, at, p, w, name], d)?;
        conn.prepare_cached(ADD_JOB_ROW)?.execute(params![
            span,
            at,
            p,
            w,
            name,
            int(s[0]),
            int(s[1]),
            int(s[2]),
            s[3],
            int(s[4]),
            s[5],
            int(s[6]),
            s[7],
            durs
        ])?;
    }
    Ok(())
}

/// ?1 span: the run rows of that span, recomputed from the stored runs (independently of the
/// functions above, but for the blob encoding, `pipestat_durs`). `h` is the run's hour.
const REBUILD_RUNS: &str = "INSERT INTO apigee_run_rollup (span, at, project_id, workflow_id,
        n, errors, successes, credits, dur_n, dur_sum, queue_n, queue_sum, durs)
    SELECT ?1, h - (h % ?1 + ?1) % ?1 AS at, project_id, workflow_id, count(*),
        sum(status = 'failed' OR status = 'error' OR status = 'timeout'), sum(status = 'success'),
        total(credits_used), count(d), total(d), count(q), total(q), pipestat_durs(d)
    FROM (SELECT project_id, workflow_id, status, credits_used,
            (created_at - (created_at % 3600000 + 3600000) % 3600000) / 3600000 AS h,
            stopped_at - coalesce(started_at, created_at) AS d, started_at - created_at AS q
        FROM runs)
    GROUP BY at, project_id, workflow_id";
/// ?1 span: the job rows of that span; a job's hour is that of coalesce(started_at, created_at),
/// its workflow its run's.
const REBUILD_JOBS: &str = "INSERT INTO apigee_job_rollup (span, at, project_id, workflow_id,
        name, n, errors, successes, credits, dur_n, dur_sum, queue_n, queue_sum, durs)
    SELECT ?1, h - (h % ?1 + ?1) % ?1 AS at, j.project_id, r.workflow_id, j.name, count(*),
        sum(j.status = 'failed' OR j.status = 'error' OR j.status = 'timeout'),
        sum(j.status = 'success'), total(j.credits_used), count(d), total(d), count(q), total(q),
        pipestat_durs(d)
    FROM (SELECT run_id, project_id, name, status, credits_used,
            (coalesce(started_at, created_at)
                - (coalesce(started_at, created_at) % 3600000 + 3600000) % 3600000) / 3600000 AS h,
            stopped_at - coalesce(started_at, created_at) AS d, started_at - created_at AS q
        FROM jobs) j
    JOIN runs r ON r.id = j.run_id
    GROUP BY at, j.project_id, r.workflow_id, j.name";

/// Recomputes the Apigee rollups from the stored runs and jobs, for a database filled before
/// they existed and for tests. The connection needs `pipestat_durs` (every connection `db`
/// opens has it; see `apigee::register_functions`).
pub fn rebuild(conn: &Connection) -> Result<()> {
    conn.execute_batch("DELETE FROM apigee_run_rollup; DELETE FROM apigee_job_rollup;")?;
    for span in SPANS {
        conn.execute(REBUILD_RUNS, [span])?;
        conn.execute(REBUILD_JOBS, [span])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_round_trip_in_the_fewest_bytes() {
        for v in [
            vec![],
            vec![7],
            vec![-5, -5, 3, 250],
            vec![0, 255],
            vec![0, 256],
            vec![100, 16_777_315],
            vec![i64::MIN, -1, 0, i64::MAX],
        ] {
            let blob = encode(&v);
            let d = Durations::of(&blob);
            assert_eq!(d.iter().collect::<Vec<_>>(), v);
            for x in [-6, -5, 0, 3, 255, 256, 1_000_000] {
                assert_eq!(d.count_le(x), v.iter().filter(|&&y| y <= x).count());
            }
        }
        // One byte of width, eight of base, then the differences 0, 8, 255: one byte each.
        assert_eq!(encode(&[-5, 3, 250]).len(), 1 + 8 + 3);
        assert_eq!(encode(&[0, 256]).len(), 1 + 8 + 2 * 2);
        assert_eq!(encode(&[i64::MIN, i64::MAX]).len(), 1 + 8 + 2 * 8);
    }

    #[test]
    fn merge_removes_adds_and_keeps_order() {
        let old = encode(&[-5, 3, 3, 40]);
        assert_eq!(
            merge(&old, vec![7, 3, -9], vec![40, 3]).unwrap(),
            encode(&[-9, -5, 3, 3, 7])
        );
        // Added and removed by the same transaction: no trace, even on an empty row.
        assert_eq!(merge(&[], vec![8], vec![8]).unwrap(), encode(&[]));
        assert!(merge(&old, vec![], vec![4]).is_err());
    }

    /// Additions take the splice whenever the base and width hold them, and the result is
    /// always the blob of the sorted union, as encoded from scratch.
    #[test]
    fn additions_spliced_in_equal_the_blob_encoded_anew() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut spliced = 0;
        for round in 0..2_000 {
            // Spans that need 1, 2, 3 or 8 bytes of width.
            let span = [200, 60_000, 16_000_000, u64::MAX / 4][round % 4];
            let base = next(1_000) as i64;
            let old: Vec<i64> = (0..next(40)).map(|_| base + next(span) as i64).collect();
            let add: Vec<i64> = (0..1 + next(5))
                .map(|_| base - 20 + next(span + span / 8) as i64)
                .collect();
            let mut sorted_old = old.clone();
            sorted_old.sort_unstable();
            let blob = encode(&sorted_old);
            let mut union: Vec<i64> = old.iter().chain(&add).copied().collect();
            union.sort_unstable();
            let mut sorted_add = add.clone();
            sorted_add.sort_unstable();
            spliced += usize::from(splice(&blob, &sorted_add).is_some());
            assert_eq!(
                merge(&blob, add, vec![]).unwrap(),
                encode(&union),
                "round {round}"
            );
        }
        // Both ways were taken often.
        assert!(
            (500..1_900).contains(&spliced),
            "{spliced} of 2,000 spliced"
        );
        // Below the base, or beyond the width: never spliced.
        let blob = encode(&[10, 20, 255]);
        assert!(splice(&blob, &[9]).is_none());
        assert!(splice(&blob, &[266]).is_none());
        assert_eq!(
            splice(&blob, &[10, 265]).unwrap(),
            encode(&[10, 10, 20, 255, 265])
        );
        assert!(splice(&[], &[1]).is_none());
    }
}
