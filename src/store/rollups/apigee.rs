//! Upkeep of the Apigee rollups (schema.sql: `apigee_run_rollup`, `apigee_job_rollup`), read
//! by src/surfaces/apigee/rollup.rs.
//!
//! A row adds up the runs (or jobs) of one project, workflow (and job name) over one span of
//! time, a UTC hour or a UTC day of the facts' time, and keeps their durations whole, sorted,
//! in a blob; each run or job counts in its hour's row and in its day's. As in
//! the other families, a run or job subtracts itself before it is updated (from its old state)
//! and adds itself once written (from the values written); a run that changes workflow moves
//! its jobs, since a job counts in its run's workflow. Changes are summed per row in memory
//! (`Pending`), durations added and removed listed per row, and `flush` writes each row
//! touched once, before the transaction commits. `rebuild` computes the same rows from the
//! stored runs and jobs with one GROUP BY per table and span, for the schema upgrade and for
//! the tests that compare the two.

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::{named_params, params, Connection, Row};

use super::{durations, Family, New, Old, Timing};
use crate::error::Result;
use crate::model::Status;
use crate::store::bind;

const HOUR_MS: i64 = 3_600_000;

/// The spans of the rows, in hours: an hour and a day.
pub const SPANS: [i64; 2] = [1, 24];

/// The additive figures of a row. Kept as f64 like the REAL columns; the counts are small
/// integers, exact in an f64.
#[derive(Default, Clone, Copy)]
struct Sums {
    n: f64,
    errors: f64,
    successes: f64,
    credits: f64,
    dur_n: f64,
    dur_sum: f64,
    queue_n: f64,
    queue_sum: f64,
}

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
fn fact(time: i64, t: &Timing) -> Fact {
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let dur = t
        .stopped_at
        .map(|s| s - t.started_at.unwrap_or(t.created_at));
    let queue = t.started_at.map(|s| s - t.created_at);
    let status = t.status;
    Fact {
        hour: time.div_euclid(HOUR_MS),
        sums: Sums {
            n: 1.0,
            errors: flag(matches!(
                status,
                Status::Failed | Status::Error | Status::Timeout
            )),
            successes: flag(status == Status::Success),
            credits: t.credits_used as f64,
            dur_n: flag(dur.is_some()),
            dur_sum: dur.map_or(0.0, |d| d as f64),
            queue_n: flag(queue.is_some()),
            queue_sum: queue.map_or(0.0, |q| q as f64),
        },
        dur,
    }
}

impl Sums {
    /// The row's figures, as ADD_RUN_ROW and ADD_JOB_ROW name them; counts as integers.
    fn values(&self) -> [(&'static str, Value); 8] {
        let int = |v: f64| Value::Integer(v as i64);
        [
            (":n", int(self.n)),
            (":errors", int(self.errors)),
            (":successes", int(self.successes)),
            (":credits", Value::Real(self.credits)),
            (":dur_n", int(self.dur_n)),
            (":dur_sum", Value::Real(self.dur_sum)),
            (":queue_n", int(self.queue_n)),
            (":queue_sum", Value::Real(self.queue_sum)),
        ]
    }
}

impl Delta {
    /// Adds (`sign` 1) or subtracts (-1) one fact.
    fn apply(&mut self, f: &Fact, sign: f64) {
        let (s, f_sums) = (&mut self.sums, f.sums);
        s.n += sign * f_sums.n;
        s.errors += sign * f_sums.errors;
        s.successes += sign * f_sums.successes;
        s.credits += sign * f_sums.credits;
        s.dur_n += sign * f_sums.dur_n;
        s.dur_sum += sign * f_sums.dur_sum;
        s.queue_n += sign * f_sums.queue_n;
        s.queue_sum += sign * f_sums.queue_sum;
        if let Some(d) = f.dur {
            if sign > 0.0 {
                self.add.push(d);
            } else {
                self.del.push(d);
            }
        }
    }
}

/// A run counts at its creation.
fn run_fact(t: &Timing) -> Fact {
    fact(t.created_at, t)
}

/// A job counts at its start (its creation when it never started).
fn job_fact(t: &Timing) -> Fact {
    fact(t.started_at.unwrap_or(t.created_at), t)
}

impl Family for Pending {
    fn replacing(&mut self, _conn: &Connection, old: Old) -> Result<()> {
        match old {
            Old::Run(run) => self.bump_run(
                run.project_id,
                run.workflow_id,
                &run_fact(&run.timing),
                -1.0,
            ),
            Old::Job(job) => self.bump_job(
                job.project_id,
                job.workflow_id,
                &job.name,
                &job_fact(&job.timing),
                -1.0,
            ),
            Old::Tests { .. } => {}
        }
        Ok(())
    }

    fn written(&mut self, conn: &Connection, new: New) -> Result<()> {
        match new {
            New::Run {
                id,
                project_id,
                workflow_id,
                run,
                old,
            } => {
                self.bump_run(
                    project_id,
                    workflow_id,
                    &run_fact(&Timing::of_run(run)),
                    1.0,
                );
                if let Some(old) = old.filter(|o| o.workflow_id != workflow_id) {
                    // A job counts in its run's workflow: the run's stored jobs move with it.
                    let jobs = conn
                        .prepare_cached(RUN_JOBS)?
                        .query_map([id], stored_job)?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    for (project, name, f) in jobs {
                        self.bump_job(project, old.workflow_id, &name, &f, -1.0);
                        self.bump_job(project, workflow_id, &name, &f, 1.0);
                    }
                }
            }
            New::Job { at, job, .. } => self.bump_job(
                at.project_id,
                at.workflow_id,
                &job.name,
                &job_fact(&Timing::of_job(job)),
                1.0,
            ),
            New::Tests { .. } => {}
        }
        Ok(())
    }

    fn flush(&mut self, conn: &Connection) -> Result<()> {
        flush(conn, self)
    }
}

impl Pending {
    /// Adds (`sign` 1) or subtracts (-1) a run's fact to its rows.
    fn bump_run(&mut self, project: i64, workflow: i64, f: &Fact, sign: f64) {
        for (span, at) in f.spans() {
            self.runs
                .entry((span, at, project, workflow))
                .or_default()
                .apply(f, sign);
        }
    }

    /// Adds (`sign` 1) or subtracts (-1) a job's fact to its rows.
    fn bump_job(&mut self, project: i64, workflow: i64, name: &str, f: &Fact, sign: f64) {
        for (span, at) in f.spans() {
            self.jobs
                .entry((span, at, project, workflow, name.to_owned()))
                .or_default()
                .apply(f, sign);
        }
    }
}

/// A stored job as the rollup sees it: project, name and fact (SELECT_JOB, RUN_JOBS).
fn stored_job(r: &Row) -> rusqlite::Result<(i64, String, Fact)> {
    let timing = Timing {
        status: r.get("status")?,
        created_at: r.get("created_at")?,
        started_at: r.get("started_at")?,
        stopped_at: r.get("stopped_at")?,
        credits_used: r.get("credits_used")?,
    };
    Ok((r.get("project_id")?, r.get("name")?, job_fact(&timing)))
}

/// ?1 run: its jobs, as `stored_job` reads them.
const RUN_JOBS: &str = "SELECT project_id, name, status, created_at, started_at, stopped_at,
    credits_used FROM jobs WHERE run_id = +?1";

const RUN_DURS: &str = "SELECT durs FROM apigee_run_rollup
    WHERE span = ?1 AND at = ?2 AND project_id = ?3 AND workflow_id = ?4";
const JOB_DURS: &str = "SELECT durs FROM apigee_job_rollup
    WHERE span = ?1 AND at = ?2 AND project_id = ?3 AND workflow_id = ?4 AND name = ?5";
// ?13 (?14 for jobs) is the row's new blob, or NULL when its durations did not change.
const ADD_RUN_ROW: &str = "INSERT INTO apigee_run_rollup (span, at, project_id, workflow_id, n,
    errors, successes, credits, dur_n, dur_sum, queue_n, queue_sum, durs)
    VALUES (:span, :at, :project_id, :workflow_id, :n, :errors, :successes, :credits, :dur_n,
        :dur_sum, :queue_n, :queue_sum, coalesce(:durs, x''))
    ON CONFLICT (span, at, project_id, workflow_id) DO UPDATE SET n = n + excluded.n,
        errors = errors + excluded.errors, successes = successes + excluded.successes,
        credits = credits + excluded.credits, dur_n = dur_n + excluded.dur_n,
        dur_sum = dur_sum + excluded.dur_sum, queue_n = queue_n + excluded.queue_n,
        queue_sum = queue_sum + excluded.queue_sum, durs = coalesce(:durs, durs)";
const ADD_JOB_ROW: &str = "INSERT INTO apigee_job_rollup (span, at, project_id, workflow_id, name,
    n, errors, successes, credits, dur_n, dur_sum, queue_n, queue_sum, durs)
    VALUES (:span, :at, :project_id, :workflow_id, :name, :n, :errors, :successes, :credits,
        :dur_n, :dur_sum, :queue_n, :queue_sum, coalesce(:durs, x''))
    ON CONFLICT (span, at, project_id, workflow_id, name) DO UPDATE SET n = n + excluded.n,
        errors = errors + excluded.errors, successes = successes + excluded.successes,
        credits = credits + excluded.credits, dur_n = dur_n + excluded.dur_n,
        dur_sum = dur_sum + excluded.dur_sum, queue_n = queue_n + excluded.queue_n,
        queue_sum = queue_sum + excluded.queue_sum, durs = coalesce(:durs, durs)";

/// Writes the changes `pending` holds into the rollup tables, in key order, and empties it.
fn flush(conn: &Connection, pending: &mut Pending) -> Result<()> {
    let Pending { runs, jobs } = std::mem::take(pending);
    for ((span, at, p, w), d) in runs {
        let blob = durations::new_blob(conn, RUN_DURS, params![span, at, p, w], d.add, d.del)?;
        let mut stmt = conn.prepare_cached(ADD_RUN_ROW)?;
        bind(
            &mut stmt,
            named_params! {":span": span, ":at": at, ":project_id": p, ":workflow_id": w, ":durs": blob},
        )?;
        bind(&mut stmt, &d.sums.values())?;
        stmt.raw_execute()?;
    }
    for ((span, at, p, w, name), d) in jobs {
        let blob =
            durations::new_blob(conn, JOB_DURS, params![span, at, p, w, name], d.add, d.del)?;
        let mut stmt = conn.prepare_cached(ADD_JOB_ROW)?;
        bind(
            &mut stmt,
            named_params! {
                ":span": span, ":at": at, ":project_id": p, ":workflow_id": w, ":name": name,
                ":durs": blob,
            },
        )?;
        bind(&mut stmt, &d.sums.values())?;
        stmt.raw_execute()?;
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
/// opens has it; see `store::functions::register`).
pub fn rebuild(conn: &Connection) -> Result<()> {
    conn.execute_batch("DELETE FROM apigee_run_rollup; DELETE FROM apigee_job_rollup;")?;
    for span in SPANS {
        conn.execute(REBUILD_RUNS, [span])?;
        conn.execute(REBUILD_JOBS, [span])?;
    }
    Ok(())
}
