//! Upkeep of the Apigee hour rollups (schema.sql: `apigee_run_hours`, `apigee_job_hours`), read
//! by src/apigee/rollup.rs.
//!
//! A row adds up the runs (or jobs) of one project, workflow (and job name) and UTC hour of the
//! facts' time, and keeps their durations whole, sorted, in a blob. As in src/store/insights.rs,
//! a run or job subtracts itself before it is updated (`run_removing`, `job_removing`, which
//! read the stored row) and adds itself once written (`run_added`, `job_added`, from the values
//! written); a run that changes workflow moves its jobs, since a job counts in its run's
//! workflow. Changes are summed per row in memory (`Pending`, kept in `store::Ids`), durations
//! added and removed listed per row, and `flush` writes each row touched once, before the
//! transaction commits. `rebuild` computes the same rows from the stored runs and jobs in SQL
//! alone, for the schema upgrade and for the tests that compare the two.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::{Error, Result};
use crate::model::{Job, Run};

const HOUR_MS: i64 = 3_600_000;

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
    /// apigee_run_hours: (hour, project, workflow).
    runs: BTreeMap<(i64, i64, i64), Delta>,
    /// apigee_job_hours: (hour, project, workflow, name).
    jobs: BTreeMap<(i64, i64, i64, String), Delta>,
}

/// A run's or job's share of its row: its hour, its figures and its duration.
struct Fact {
    hour: i64,
    sums: Sums,
    dur: Option<i64>,
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
    pending
        .runs
        .entry((f.hour, project, workflow))
        .or_default()
        .apply(&f, -1.0);
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
    let f = run_fact(run);
    pending
        .runs
        .entry((f.hour, project, workflow))
        .or_default()
        .apply(&f, 1.0);
    if let Some(old) = old_workflow.filter(|&w| w != workflow) {
        let jobs = conn
            .prepare_cached(RUN_JOBS)?
            .query_map([run_id], stored_job)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (project, name, f) in jobs {
            bump_job(pending, project, old, name.clone(), &f, -1.0);
            bump_job(pending, project, workflow, name, &f, 1.0);
        }
    }
    Ok(())
}

fn bump_job(pending: &mut Pending, project: i64, workflow: i64, name: String, f: &Fact, s: f64) {
    pending
        .jobs
        .entry((f.hour, project, workflow, name))
        .or_default()
        .apply(f, s);
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
    bump_job(pending, project, workflow, name, &f, -1.0);
    Ok(())
}

/// Counts a job just inserted or updated as `job` into its row, under its run's `workflow`.
pub fn job_added(pending: &mut Pending, project: i64, workflow: i64, job: &Job) {
    let f = job_fact(job);
    bump_job(pending, project, workflow, job.name.clone(), &f, 1.0);
}

/// The durations a `durs` blob holds, in its order.
pub fn durations(blob: &[u8]) -> impl DoubleEndedIterator<Item = i64> + '_ {
    blob.chunks_exact(8)
        .map(|c| i64::from_be_bytes(c.try_into().expect("chunks of 8")))
}

/// `old` (a row's blob) without the durations of `del` and with those of `add`, still sorted.
/// A duration to remove that the row does not hold means the rollup lost step with the rows:
/// an internal error, so that the write rolls back rather than store a wrong row.
fn merge(old: &[u8], mut add: Vec<i64>, mut del: Vec<i64>) -> Result<Vec<u8>> {
    add.sort_unstable();
    del.sort_unstable();
    // A duration removed and added again by the same transaction cancels out first.
    let (mut a2, mut d2) = (Vec::with_capacity(add.len()), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < add.len() || j < del.len() {
        match (add.get(i), del.get(j)) {
            (Some(a), Some(d)) if a == d => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(d)) if a < d => {
                a2.push(*a);
                i += 1;
            }
            (Some(a), None) => {
                a2.push(*a);
                i += 1;
            }
            (_, Some(d)) => {
                d2.push(*d);
                j += 1;
            }
            (None, None) => unreachable!("the loop condition"),
        }
    }
    let mut out = Vec::with_capacity(old.len() + 8 * a2.len());
    let (mut adds, mut dels) = (a2.into_iter().peekable(), d2.into_iter().peekable());
    for v in durations(old) {
        while let Some(a) = adds.next_if(|a| *a <= v) {
            out.extend_from_slice(&a.to_be_bytes());
        }
        if dels.next_if_eq(&v).is_some() {
            continue;
        }
        out.extend_from_slice(&v.to_be_bytes());
    }
    for a in adds {
        out.extend_from_slice(&a.to_be_bytes());
    }
    if dels.next().is_some() {
        return Err(Error::Internal(
            "the Apigee rollup lost step with the stored rows (a duration to remove is missing)"
                .into(),
        ));
    }
    Ok(out)
}

const RUN_DURS: &str = "SELECT durs FROM apigee_run_hours
    WHERE hour = ?1 AND project_id = ?2 AND workflow_id = ?3";
const JOB_DURS: &str = "SELECT durs FROM apigee_job_hours
    WHERE hour = ?1 AND project_id = ?2 AND workflow_id = ?3 AND name = ?4";
// ?12 (?13 for jobs) is the row's new blob, or NULL when its durations did not change.
const ADD_RUN_HOUR: &str = "INSERT INTO apigee_run_hours (hour, project_id, workflow_id, n,
    errors, successes, credits, dur_n, dur_sum, queue_n, queue_sum, durs)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, coalesce(?12, x''))
    ON CONFLICT (hour, project_id, workflow_id) DO UPDATE SET n = n + excluded.n,
        errors = errors + excluded.errors, successes = successes + excluded.successes,
        credits = credits + excluded.credits, dur_n = dur_n + excluded.dur_n,
        dur_sum = dur_sum + excluded.dur_sum, queue_n = queue_n + excluded.queue_n,
        queue_sum = queue_sum + excluded.queue_sum, durs = coalesce(?12, durs)";
const ADD_JOB_HOUR: &str = "INSERT INTO apigee_job_hours (hour, project_id, workflow_id, name, n,
    errors, successes, credits, dur_n, dur_sum, queue_n, queue_sum, durs)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, coalesce(?13, x''))
    ON CONFLICT (hour, project_id, workflow_id, name) DO UPDATE SET n = n + excluded.n,
        errors = errors + excluded.errors, successes = successes + excluded.successes,
        credits = credits + excluded.credits, dur_n = dur_n + excluded.dur_n,
        dur_sum = dur_sum + excluded.dur_sum, queue_n = queue_n + excluded.queue_n,
        queue_sum = queue_sum + excluded.queue_sum, durs = coalesce(?13, durs)";

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
    for ((h, p, w), d) in runs {
        let s = d.sums;
        let durs = new_durs(conn, RUN_DURS, params![h, p, w], d)?;
        conn.prepare_cached(ADD_RUN_HOUR)?.execute(params![
            h,
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
    for ((h, p, w, name), d) in jobs {
        let s = d.sums;
        let durs = new_durs(conn, JOB_DURS, params![h, p, w, name], d)?;
        conn.prepare_cached(ADD_JOB_HOUR)?.execute(params![
            h,
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

/// The rollups recomputed from the stored runs and jobs, in SQL alone (independently of the
/// functions above): for a database filled before they existed, and for tests. A blob is the
/// row's durations in ascending order, each printed as 16 hex digits (printf's `%X` prints a
/// negative number in two's complement) and the whole decoded by unhex().
pub const REBUILD: &str = "
    DELETE FROM apigee_run_hours;
    INSERT INTO apigee_run_hours (hour, project_id, workflow_id, n, errors, successes, credits,
        dur_n, dur_sum, queue_n, queue_sum, durs)
    SELECT (created_at - (created_at % 3600000 + 3600000) % 3600000) / 3600000 AS hour,
        project_id, workflow_id, count(*),
        sum(status = 'failed' OR status = 'error' OR status = 'timeout'), sum(status = 'success'),
        total(credits_used), count(d), total(d), count(q), total(q),
        coalesce(unhex(group_concat(iif(d IS NULL, NULL, printf('%016X', d)), '' ORDER BY d)), x'')
    FROM (SELECT project_id, workflow_id, status, created_at, credits_used,
            stopped_at - coalesce(started_at, created_at) AS d, started_at - created_at AS q
        FROM runs)
    GROUP BY hour, project_id, workflow_id;
    DELETE FROM apigee_job_hours;
    INSERT INTO apigee_job_hours (hour, project_id, workflow_id, name, n, errors, successes,
        credits, dur_n, dur_sum, queue_n, queue_sum, durs)
    SELECT (t - (t % 3600000 + 3600000) % 3600000) / 3600000 AS hour,
        j.project_id, r.workflow_id, j.name, count(*),
        sum(j.status = 'failed' OR j.status = 'error' OR j.status = 'timeout'),
        sum(j.status = 'success'), total(j.credits_used), count(d), total(d), count(q), total(q),
        coalesce(unhex(group_concat(iif(d IS NULL, NULL, printf('%016X', d)), '' ORDER BY d)), x'')
    FROM (SELECT run_id, project_id, name, status, credits_used,
            coalesce(started_at, created_at) AS t,
            stopped_at - coalesce(started_at, created_at) AS d, started_at - created_at AS q
        FROM jobs) j
    JOIN runs r ON r.id = j.run_id
    GROUP BY hour, j.project_id, r.workflow_id, j.name;";

/// Recomputes the Apigee rollups from the stored runs and jobs.
pub fn rebuild(conn: &Connection) -> Result<()> {
    conn.execute_batch(REBUILD)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(v: &[i64]) -> Vec<u8> {
        v.iter().flat_map(|d| d.to_be_bytes()).collect()
    }

    #[test]
    fn merge_removes_adds_and_keeps_order() {
        let old = blob(&[-5, 3, 3, 40]);
        assert_eq!(
            merge(&old, vec![7, 3, -9], vec![40, 3]).unwrap(),
            blob(&[-9, -5, 3, 3, 7])
        );
        // Added and removed by the same transaction: no trace, even on an empty row.
        assert_eq!(merge(&[], vec![8], vec![8]).unwrap(), blob(&[]));
        assert!(merge(&old, vec![], vec![4]).is_err());
    }

    #[test]
    fn the_sql_blob_is_the_rust_blob() {
        let conn = Connection::open_in_memory().unwrap();
        let sql = "SELECT unhex(group_concat(printf('%016X', v), '' ORDER BY v))
            FROM (SELECT 1000 AS v UNION ALL SELECT -3 UNION ALL SELECT 0
                  UNION ALL SELECT 9007199254740993 UNION ALL SELECT -1)";
        let got: Vec<u8> = conn.query_row(sql, [], |r| r.get(0)).unwrap();
        assert_eq!(got, blob(&[-3, -1, 0, 1000, 9_007_199_254_740_993]));
        assert_eq!(
            durations(&got).collect::<Vec<_>>(),
            [-3, -1, 0, 1000, 9_007_199_254_740_993]
        );
    }
}
