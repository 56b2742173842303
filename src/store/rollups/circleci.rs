//! Upkeep of the CircleCI Insights rollups (schema.sql: `insights_days`, `runs.rec_from`,
//! `runs.rec_ms`, `insights_job_days`), read by src/surfaces/circleci/rollup.rs.
//!
//! `insights_days` adds up the runs of one (project, branch, workflow) per UTC day. A run
//! subtracts itself before it is updated (from its old state) and adds itself once written, so
//! every row describes what is stored now, like the other families. Jobs do the same in
//! `insights_job_days`, under their run's branch, workflow and created_at, the rows' duration
//! blobs included (`durations`); when an update moves a run, its jobs move with it.
//! `insights_all_days` and `insights_all_job_days` hold the same per (project, workflow, day)
//! over every branch (recoveries aside), each write adding to them what it adds to a branch's
//! row, so that all branches read one row per day.
//!
//! Recoveries (MTTR, docs/circleci.md) are kept on the runs themselves. A run's *sequence* is the
//! finished runs (success, failed, error, timeout) of its (project, branch, workflow) in
//! (created_at, ext_id) order. A success whose previous run in its sequence failed is a
//! recovery: `rec_from` is the created_at of the first failure of that streak, `rec_ms` the
//! success's stopped_at less that failure's (NULL when either is missing); both are NULL on every
//! other run. Writing one run can change the recovery of at most three runs: itself, and the
//! first success after it in its sequence, before and after the write (a streak always ends at
//! the next success). `run_written` recomputes exactly those, so the columns always match what
//! a window pass over the sequence gives (`REBUILD`, which tests compare them with).

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::{named_params, params, Connection, OptionalExtension, Row};

use super::{durations, Family, New, Old, OldRun, Timing};
use crate::error::Result;
use crate::model::{Run, Status};
use crate::store::bind;

const DAY_MS: i64 = 86_400_000;

/// The additive figures of a rollup row (the job rows have all but the recovery ones). Counts
/// and sums alike are kept as f64 here: every count is a small integer, exact in an f64.
#[derive(Default, Clone, Copy)]
struct Amounts {
    total: f64,
    ok: f64,
    bad: f64,
    canceled: f64,
    open: f64,
    credits: f64,
    dur_n: f64,
    dur_sum: f64,
    dur_sumsq: f64,
    rec_n: f64,
    rec_timed: f64,
    rec_sum: f64,
}

/// Rollup figures added by the writes of one transaction and not written yet, summed per row
/// (store.rs keeps one in `Ids` and calls `flush` before committing), and the run key of the
/// last run whose jobs were written, so its jobs need no lookup of it.
#[derive(Default)]
pub struct Pending {
    /// insights_days: (project, branch, workflow, day).
    days: BTreeMap<(i64, String, i64, i64), JobDelta>,
    /// insights_job_days: (project, branch, workflow, day, name).
    job_days: BTreeMap<(i64, String, i64, i64, String), JobDelta>,
    /// insights_all_days: (project, workflow, day).
    all_days: BTreeMap<(i64, i64, i64), JobDelta>,
    /// insights_all_job_days: (project, workflow, day, name).
    all_job_days: BTreeMap<(i64, i64, i64, String), JobDelta>,
    last_run: Option<(i64, Key)>,
}

/// What the writes of one transaction changed in one day row (of runs or of jobs): its
/// figures, and the durations (ms) to add to its blob and to take out of it.
#[derive(Default)]
struct JobDelta {
    amounts: Amounts,
    add: Vec<i64>,
    del: Vec<i64>,
}

impl JobDelta {
    /// Adds `f` and, when `dur` is Some, a duration to add (`sign` > 0) or take out.
    fn bump(&mut self, f: Amounts, dur: Option<i64>, sign: i64) {
        self.amounts += f;
        if let Some(d) = dur {
            if sign > 0 {
                self.add.push(d);
            } else {
                self.del.push(d);
            }
        }
    }
}

impl Amounts {
    /// The figures a job day row has, as ADD_JOB_DAY names them; counts as integers.
    fn job_values(&self) -> [(&'static str, Value); 9] {
        let int = |v: f64| Value::Integer(v as i64);
        [
            (":total", int(self.total)),
            (":ok", int(self.ok)),
            (":bad", int(self.bad)),
            (":canceled", int(self.canceled)),
            (":open", int(self.open)),
            (":credits", Value::Real(self.credits)),
            (":dur_n", int(self.dur_n)),
            (":dur_sum", Value::Real(self.dur_sum)),
            (":dur_sumsq", Value::Real(self.dur_sumsq)),
        ]
    }

    /// The figures a run day row has: a job day row's and the recoveries (ADD_DAY).
    fn run_values(&self) -> [(&'static str, Value); 12] {
        let [a, b, c, d, e, f, g, h, i] = self.job_values();
        [
            a,
            b,
            c,
            d,
            e,
            f,
            g,
            h,
            i,
            (":rec_n", Value::Integer(self.rec_n as i64)),
            (":rec_timed", Value::Integer(self.rec_timed as i64)),
            (":rec_sum", Value::Real(self.rec_sum)),
        ]
    }
}

impl std::ops::AddAssign for Amounts {
    fn add_assign(&mut self, f: Amounts) {
        self.total += f.total;
        self.ok += f.ok;
        self.bad += f.bad;
        self.canceled += f.canceled;
        self.open += f.open;
        self.credits += f.credits;
        self.dur_n += f.dur_n;
        self.dur_sum += f.dur_sum;
        self.dur_sumsq += f.dur_sumsq;
        self.rec_n += f.rec_n;
        self.rec_timed += f.rec_timed;
        self.rec_sum += f.rec_sum;
    }
}

/// A run's or job's own figures from its status, credits and duration, times `sign`.
fn amounts(status: Status, credits: i64, dur: Option<i64>, sign: f64) -> Amounts {
    let one = |b: bool| if b { sign } else { 0.0 };
    let d = dur.map(|d| d as f64);
    Amounts {
        total: sign,
        ok: one(status == Status::Success),
        bad: one(matches!(
            status,
            Status::Failed | Status::Error | Status::Timeout
        )),
        canceled: one(status == Status::Canceled),
        open: one(matches!(
            status,
            Status::Queued | Status::Running | Status::Waiting
        )),
        credits: sign * credits as f64,
        dur_n: one(dur.is_some()),
        dur_sum: d.map_or(0.0, |d| sign * d),
        dur_sumsq: d.map_or(0.0, |d| sign * d * d),
        ..Amounts::default()
    }
}

/// `:durs` is the row's new blob, or NULL when its durations did not change.
const ADD_DAY: &str = "INSERT INTO insights_days (project_id, branch, workflow_id, day, total, ok,
    bad, canceled, open, credits, dur_n, dur_sum, dur_sumsq, rec_n, rec_timed, rec_sum, durs)
    VALUES (:project_id, :branch, :workflow_id, :day, :total, :ok, :bad, :canceled, :open,
        :credits, :dur_n, :dur_sum, :dur_sumsq, :rec_n, :rec_timed, :rec_sum, coalesce(:durs, x''))
    ON CONFLICT (project_id, branch, workflow_id, day) DO UPDATE SET
        total = total + excluded.total, ok = ok + excluded.ok, bad = bad + excluded.bad,
        canceled = canceled + excluded.canceled, open = open + excluded.open,
        credits = credits + excluded.credits, dur_n = dur_n + excluded.dur_n,
        dur_sum = dur_sum + excluded.dur_sum, dur_sumsq = dur_sumsq + excluded.dur_sumsq,
        rec_n = rec_n + excluded.rec_n, rec_timed = rec_timed + excluded.rec_timed,
        rec_sum = rec_sum + excluded.rec_sum, durs = coalesce(:durs, durs)";
const DAY_DURS: &str = "SELECT durs FROM insights_days
    WHERE project_id = ?1 AND branch = ?2 AND workflow_id = ?3 AND day = ?4";
/// `:durs` is the row's new blob, or NULL when its durations did not change.
const ADD_JOB_DAY: &str = "INSERT INTO insights_job_days (project_id, branch, workflow_id, day,
    name, total, ok, bad, canceled, open, credits, dur_n, dur_sum, dur_sumsq, durs)
    VALUES (:project_id, :branch, :workflow_id, :day, :name, :total, :ok, :bad, :canceled, :open,
        :credits, :dur_n, :dur_sum, :dur_sumsq, coalesce(:durs, x''))
    ON CONFLICT (project_id, branch, workflow_id, day, name) DO UPDATE SET
        total = total + excluded.total, ok = ok + excluded.ok, bad = bad + excluded.bad,
        canceled = canceled + excluded.canceled, open = open + excluded.open,
        credits = credits + excluded.credits, dur_n = dur_n + excluded.dur_n,
        dur_sum = dur_sum + excluded.dur_sum, dur_sumsq = dur_sumsq + excluded.dur_sumsq,
        durs = coalesce(:durs, durs)";
const JOB_DAY_DURS: &str = "SELECT durs FROM insights_job_days
    WHERE project_id = ?1 AND branch = ?2 AND workflow_id = ?3 AND day = ?4 AND name = ?5";
/// The all-branch rows, as ADD_JOB_DAY without the branch (and ADD_ALL_DAY without recoveries).
const ADD_ALL_DAY: &str = "INSERT INTO insights_all_days (project_id, workflow_id, day, total, ok,
    bad, canceled, open, credits, dur_n, dur_sum, dur_sumsq, durs)
    VALUES (:project_id, :workflow_id, :day, :total, :ok, :bad, :canceled, :open, :credits,
        :dur_n, :dur_sum, :dur_sumsq, coalesce(:durs, x''))
    ON CONFLICT (project_id, workflow_id, day) DO UPDATE SET
        total = total + excluded.total, ok = ok + excluded.ok, bad = bad + excluded.bad,
        canceled = canceled + excluded.canceled, open = open + excluded.open,
        credits = credits + excluded.credits, dur_n = dur_n + excluded.dur_n,
        dur_sum = dur_sum + excluded.dur_sum, dur_sumsq = dur_sumsq + excluded.dur_sumsq,
        durs = coalesce(:durs, durs)";
const ALL_DAY_DURS: &str = "SELECT durs FROM insights_all_days
    WHERE project_id = ?1 AND workflow_id = ?2 AND day = ?3";
const ADD_ALL_JOB_DAY: &str = "INSERT INTO insights_all_job_days (project_id, workflow_id, day,
    name, total, ok, bad, canceled, open, credits, dur_n, dur_sum, dur_sumsq, durs)
    VALUES (:project_id, :workflow_id, :day, :name, :total, :ok, :bad, :canceled, :open,
        :credits, :dur_n, :dur_sum, :dur_sumsq, coalesce(:durs, x''))
    ON CONFLICT (project_id, workflow_id, day, name) DO UPDATE SET
        total = total + excluded.total, ok = ok + excluded.ok, bad = bad + excluded.bad,
        canceled = canceled + excluded.canceled, open = open + excluded.open,
        credits = credits + excluded.credits, dur_n = dur_n + excluded.dur_n,
        dur_sum = dur_sum + excluded.dur_sum, dur_sumsq = dur_sumsq + excluded.dur_sumsq,
        durs = coalesce(:durs, durs)";
const ALL_JOB_DAY_DURS: &str = "SELECT durs FROM insights_all_job_days
    WHERE project_id = ?1 AND workflow_id = ?2 AND day = ?3 AND name = ?4";

/// Writes the figures `pending` holds into the rollup tables, in key order, and empties it.
fn flush(conn: &Connection, pending: &mut Pending) -> Result<()> {
    let Pending {
        days,
        job_days,
        all_days,
        all_job_days,
        ..
    } = std::mem::take(pending);
    let mut stmt = conn.prepare_cached(ADD_DAY)?;
    for ((p, b, w, d), delta) in days {
        let JobDelta {
            amounts: f,
            add,
            del,
        } = delta;
        let blob = durations::new_blob(conn, DAY_DURS, params![p, b, w, d], add, del)?;
        bind(
            &mut stmt,
            named_params! {
                ":project_id": p, ":branch": b, ":workflow_id": w, ":day": d, ":durs": blob,
            },
        )?;
        bind(&mut stmt, &f.run_values())?;
        stmt.raw_execute()?;
    }
    let mut stmt = conn.prepare_cached(ADD_JOB_DAY)?;
    for ((p, b, w, d, name), delta) in job_days {
        let JobDelta {
            amounts: f,
            add,
            del,
        } = delta;
        let blob = durations::new_blob(conn, JOB_DAY_DURS, params![p, b, w, d, name], add, del)?;
        bind(
            &mut stmt,
            named_params! {
                ":project_id": p, ":branch": b, ":workflow_id": w, ":day": d, ":name": name,
                ":durs": blob,
            },
        )?;
        bind(&mut stmt, &f.job_values())?;
        stmt.raw_execute()?;
    }
    let mut stmt = conn.prepare_cached(ADD_ALL_DAY)?;
    for ((p, w, d), delta) in all_days {
        let JobDelta {
            amounts: f,
            add,
            del,
        } = delta;
        let blob = durations::new_blob(conn, ALL_DAY_DURS, params![p, w, d], add, del)?;
        bind(
            &mut stmt,
            named_params! {":project_id": p, ":workflow_id": w, ":day": d, ":durs": blob},
        )?;
        bind(&mut stmt, &f.job_values())?;
        stmt.raw_execute()?;
    }
    let mut stmt = conn.prepare_cached(ADD_ALL_JOB_DAY)?;
    for ((p, w, d, name), delta) in all_job_days {
        let JobDelta {
            amounts: f,
            add,
            del,
        } = delta;
        let blob = durations::new_blob(conn, ALL_JOB_DAY_DURS, params![p, w, d, name], add, del)?;
        bind(
            &mut stmt,
            named_params! {
                ":project_id": p, ":workflow_id": w, ":day": d, ":name": name, ":durs": blob,
            },
        )?;
        bind(&mut stmt, &f.job_values())?;
        stmt.raw_execute()?;
    }
    Ok(())
}

/// A run as the rollups see it.
struct SeqRun {
    id: i64,
    key: Key,
    status: Status,
    credits: i64,
    dur: Option<i64>,
    stop: Option<i64>,
    rec: Option<Rec>,
}

/// A place in a sequence: (project, branch, workflow) and the (created_at, ext_id) order.
#[derive(Clone, PartialEq)]
pub struct Key {
    project: i64,
    branch: Option<String>,
    workflow: i64,
    at: i64,
    ext: String,
}

/// A recovery: the streak's first failure's created_at, and the recovery's length in ms.
#[derive(Clone, Copy, PartialEq)]
struct Rec {
    from: i64,
    ms: Option<i64>,
}

const SELECT_RUN: &str = "SELECT id, project_id, branch, workflow_id, created_at, ext_id, status,
    credits_used, stopped_at, started_at, rec_from, rec_ms FROM runs WHERE id = ?1";

fn seq_run(r: &Row) -> rusqlite::Result<SeqRun> {
    let created: i64 = r.get(4)?;
    let stop: Option<i64> = r.get(8)?;
    let start: Option<i64> = r.get(9)?;
    let rec_from: Option<i64> = r.get(10)?;
    let rec_ms: Option<i64> = r.get(11)?;
    Ok(SeqRun {
        id: r.get(0)?,
        key: Key {
            project: r.get(1)?,
            branch: r.get(2)?,
            workflow: r.get(3)?,
            at: created,
            ext: r.get(5)?,
        },
        status: r.get(6)?,
        credits: r.get(7)?,
        dur: duration(created, start, stop),
        stop,
        rec: rec_from.map(|from| Rec { from, ms: rec_ms }),
    })
}

fn read(conn: &Connection, id: i64) -> Result<SeqRun> {
    Ok(conn.prepare_cached(SELECT_RUN)?.query_row([id], seq_run)?)
}

/// Adds `sign` times the run's figures to its day: the run itself when `base`, and `rec`.
/// Runs without a branch are in no row (the rollups serve one named branch).
fn bump(pending: &mut Pending, r: &SeqRun, base: bool, rec: Option<Rec>, sign: i64) {
    let Some(branch) = &r.key.branch else {
        return;
    };
    let f = sign as f64;
    let mut fig = if base {
        amounts(r.status, r.credits, r.dur, f)
    } else {
        Amounts::default()
    };
    if let Some(x) = rec {
        fig.rec_n = f;
        if let Some(ms) = x.ms {
            fig.rec_timed = f;
            fig.rec_sum = f * ms as f64;
        }
    }
    let key = (
        r.key.project,
        branch.clone(),
        r.key.workflow,
        r.key.at.div_euclid(DAY_MS),
    );
    let dur = if base { r.dur } else { None };
    pending.days.entry(key).or_default().bump(fig, dur, sign);
    if base {
        // The all-branch row: the run's own figures, without recoveries (kept per branch).
        let key = (r.key.project, r.key.workflow, r.key.at.div_euclid(DAY_MS));
        let own = amounts(r.status, r.credits, r.dur, f);
        pending
            .all_days
            .entry(key)
            .or_default()
            .bump(own, dur, sign);
    }
}

const SET_REC: &str = "UPDATE runs SET rec_from = ?2, rec_ms = ?3 WHERE id = ?1";

/// A stored run, as the write path read it before replacing it.
fn old_seq_run(old: &OldRun) -> SeqRun {
    let t = &old.timing;
    SeqRun {
        id: old.id,
        key: Key {
            project: old.project_id,
            branch: old.branch.clone(),
            workflow: old.workflow_id,
            at: t.created_at,
            ext: old.ext_id.clone(),
        },
        status: t.status,
        credits: t.credits_used,
        dur: timed(t),
        stop: t.stopped_at,
        rec: old.rec_from.map(|from| Rec {
            from,
            ms: old.rec_ms,
        }),
    }
}

impl Family for Pending {
    /// A run is taken out with its recovery: the update that replaces it clears its rec_from
    /// and rec_ms (the store's UPDATE_RUN).
    fn replacing(&mut self, conn: &Connection, old: Old) -> Result<()> {
        match old {
            Old::Run(run) => {
                let r = old_seq_run(run);
                bump(self, &r, true, r.rec, -1);
            }
            Old::Job(job) => {
                let k = run_key(conn, self, job.run_id)?;
                job_row(self, &k, &job.name, &job.timing, -1);
                self.last_run = Some((job.run_id, k));
            }
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
            } => run_written(
                conn,
                self,
                id,
                (project_id, workflow_id),
                run,
                old.map(|o| old_seq_run(o).key),
            ),
            New::Job { at, job, .. } => {
                let k = run_key(conn, self, at.run_id)?;
                job_row(self, &k, &job.name, &Timing::of_job(job), 1);
                self.last_run = Some((at.run_id, k));
                Ok(())
            }
            New::Tests { .. } => Ok(()),
        }
    }

    fn flush(&mut self, conn: &Connection) -> Result<()> {
        flush(conn, self)
    }
}

// The sequence statements seek the index runs_insights (project_id, branch, workflow_id,
// created_at, ext_id, status, ...); `branch IS ?2` so that runs without a branch form a
// sequence of their own, as they do in the window queries. Every parameter is written `+?N`:
// with bare `?N` SQLite (3.54) re-prepared these statements whenever the values changed, a
// parse and a plan on every run written (see also store.rs).

/// The last success before ?4/?5.
const LAST_SUCCESS_BEFORE: &str = "SELECT created_at, ext_id FROM runs
    WHERE project_id = +?1 AND branch IS +?2 AND workflow_id = +?3
      AND (created_at, ext_id) < (+?4, +?5) AND status = 'success'
    ORDER BY created_at DESC, ext_id DESC LIMIT 1";
/// The first finished run after ?4/?5.
const FIRST_FINISHED_AFTER: &str = "SELECT created_at, ext_id, stopped_at FROM runs
    WHERE project_id = +?1 AND branch IS +?2 AND workflow_id = +?3
      AND (created_at, ext_id) > (+?4, +?5)
      AND (status = 'success' OR status = 'failed' OR status = 'error' OR status = 'timeout')
    ORDER BY created_at, ext_id LIMIT 1";
/// The first finished run of the sequence.
const FIRST_FINISHED: &str = "SELECT created_at, ext_id, stopped_at FROM runs
    WHERE project_id = +?1 AND branch IS +?2 AND workflow_id = +?3
      AND (status = 'success' OR status = 'failed' OR status = 'error' OR status = 'timeout')
    ORDER BY created_at, ext_id LIMIT 1";
/// Whether the last finished run before ?4/?5 is a success (no row: none is).
const PREV_FINISHED_OK: &str = "SELECT status = 'success' FROM runs
    WHERE project_id = +?1 AND branch IS +?2 AND workflow_id = +?3
      AND (created_at, ext_id) < (+?4, +?5)
      AND (status = 'success' OR status = 'failed' OR status = 'error' OR status = 'timeout')
    ORDER BY created_at DESC, ext_id DESC LIMIT 1";
/// The first success after ?4/?5.
const NEXT_SUCCESS_AFTER: &str = "SELECT id FROM runs
    WHERE project_id = +?1 AND branch IS +?2 AND workflow_id = +?3
      AND (created_at, ext_id) > (+?4, +?5) AND status = 'success'
    ORDER BY created_at, ext_id LIMIT 1";

/// The recovery a stored run is now: the streak of failures just before it (everything finished
/// between the last success before it and it), if any.
fn recovery(conn: &Connection, r: &SeqRun) -> Result<Option<Rec>> {
    if r.status != Status::Success {
        return Ok(None);
    }
    let k = &r.key;
    // Most successes follow a success (or nothing): then no streak ends at this one, which
    // one look at the finished run before it tells.
    let prev_ok: Option<bool> = conn
        .prepare_cached(PREV_FINISHED_OK)?
        .query_row(params![k.project, k.branch, k.workflow, k.at, k.ext], |r| {
            r.get(0)
        })
        .optional()?;
    if prev_ok != Some(false) {
        return Ok(None);
    }
    let seq = params![k.project, k.branch, k.workflow];
    let last: Option<(i64, String)> = conn
        .prepare_cached(LAST_SUCCESS_BEFORE)?
        .query_row(params![k.project, k.branch, k.workflow, k.at, k.ext], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let three = |r: &Row| -> rusqlite::Result<(i64, String, Option<i64>)> {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
    };
    let first = match last {
        Some((at, ext)) => conn
            .prepare_cached(FIRST_FINISHED_AFTER)?
            .query_row(params![k.project, k.branch, k.workflow, at, ext], three)
            .optional()?,
        None => conn
            .prepare_cached(FIRST_FINISHED)?
            .query_row(seq, three)
            .optional()?,
    };
    Ok(match first {
        // The run itself: nothing failed since the last success.
        Some((at, ext, _)) if at == k.at && ext == k.ext => None,
        Some((at, _, fail_stop)) => Some(Rec {
            from: at,
            ms: match (r.stop, fail_stop) {
                (Some(s), Some(f)) => Some(s.saturating_sub(f)),
                _ => None,
            },
        }),
        None => None,
    })
}

/// Sets a stored run's recovery to what it is now, moving its share of the rollup.
fn refresh(conn: &Connection, pending: &mut Pending, r: &SeqRun) -> Result<()> {
    let rec = recovery(conn, r)?;
    if rec == r.rec {
        return Ok(());
    }
    bump(pending, r, false, r.rec, -1);
    bump(pending, r, false, rec, 1);
    let (from, ms) = rec.map_or((None, None), |x| (Some(x.from), x.ms));
    conn.prepare_cached(SET_REC)?
        .execute(params![r.id, from, ms])?;
    Ok(())
}

/// Refreshes the first success after `k` in its sequence, unless it is run `skip`.
fn refresh_next_success(
    conn: &Connection,
    pending: &mut Pending,
    k: &Key,
    skip: i64,
) -> Result<()> {
    let next: Option<i64> = conn
        .prepare_cached(NEXT_SUCCESS_AFTER)?
        .query_row(params![k.project, k.branch, k.workflow, k.at, k.ext], |r| {
            r.get(0)
        })
        .optional()?;
    match next {
        Some(id) if id != skip => refresh(conn, pending, &read(conn, id)?),
        _ => Ok(()),
    }
}

/// Counts a run just inserted (`old` None) or just updated (`old`: its key before) as `run`
/// (row `run_id`, in project `project` and workflow `workflow`) into the rollups, refreshes
/// every recovery the write can have changed, and moves the run's jobs when the update changed
/// its branch, workflow or created_at. The run is taken from the values written, which are
/// what its row holds, with no recovery yet (the store's INSERT_RUN and UPDATE_RUN leave
/// rec_from and rec_ms NULL).
fn run_written(
    conn: &Connection,
    pending: &mut Pending,
    run_id: i64,
    (project, workflow): (i64, i64),
    run: &Run,
    old: Option<Key>,
) -> Result<()> {
    let r = SeqRun {
        id: run_id,
        key: Key {
            project,
            branch: run.branch.clone(),
            workflow,
            at: run.created_at,
            ext: run.id.clone(),
        },
        status: run.status,
        credits: run.credits_used,
        dur: duration(run.created_at, run.started_at, run.stopped_at),
        stop: run.stopped_at,
        rec: None,
    };
    bump(pending, &r, true, None, 1);
    refresh(conn, pending, &r)?;
    refresh_next_success(conn, pending, &r.key, r.id)?;
    pending.last_run = Some((run_id, r.key.clone()));
    if let Some(old) = old.filter(|o| *o != r.key) {
        refresh_next_success(conn, pending, &old, r.id)?;
        let moved =
            (&old.branch, old.workflow, old.at) != (&r.key.branch, r.key.workflow, r.key.at);
        if moved {
            run_jobs(conn, pending, run_id, &old, -1)?;
            run_jobs(conn, pending, run_id, &r.key, 1)?;
        }
    }
    Ok(())
}

const RUN_KEY: &str =
    "SELECT project_id, branch, workflow_id, created_at, ext_id FROM runs WHERE id = ?1";

/// The key of a stored run, taken out of `pending` when its jobs are being written right after
/// it (moved, not copied: the caller puts it back as `last_run` once it has used it).
fn run_key(conn: &Connection, pending: &mut Pending, run_id: i64) -> Result<Key> {
    if let Some((id, k)) = pending.last_run.take() {
        if id == run_id {
            return Ok(k);
        }
    }
    let k = conn.prepare_cached(RUN_KEY)?.query_row([run_id], |r| {
        Ok(Key {
            project: r.get(0)?,
            branch: r.get(1)?,
            workflow: r.get(2)?,
            at: r.get(3)?,
            ext: r.get(4)?,
        })
    })?;
    Ok(k)
}

/// A run's or job's duration as the window queries compute it (docs/circleci.md): stopped_at −
/// (started_at or created_at), never negative.
fn duration(created: i64, started: Option<i64>, stopped: Option<i64>) -> Option<i64> {
    stopped.map(|s| s.saturating_sub(started.unwrap_or(created)).max(0))
}

fn timed(t: &Timing) -> Option<i64> {
    duration(t.created_at, t.started_at, t.stopped_at)
}

/// A stored job as the rollups see it: its name and timing (RUN_JOBS).
fn job_from_row(r: &Row) -> rusqlite::Result<(String, Timing)> {
    let timing = Timing {
        status: r.get("status")?,
        created_at: r.get("created_at")?,
        started_at: r.get("started_at")?,
        stopped_at: r.get("stopped_at")?,
        credits_used: r.get("credits_used")?,
    };
    Ok((r.get("name")?, timing))
}

/// Adds (`sign` 1) or subtracts (-1) one job under its run key: its figures and its duration
/// on the run's day.
fn job_row(pending: &mut Pending, k: &Key, name: &str, t: &Timing, sign: i64) {
    let dur = timed(t);
    let Some(branch) = &k.branch else {
        return;
    };
    let day = k.at.div_euclid(DAY_MS);
    let f = amounts(t.status, t.credits_used, dur, sign as f64);
    let key = (k.project, branch.clone(), k.workflow, day, name.to_owned());
    pending.job_days.entry(key).or_default().bump(f, dur, sign);
    let key = (k.project, k.workflow, day, name.to_owned());
    pending
        .all_job_days
        .entry(key)
        .or_default()
        .bump(f, dur, sign);
}

/// ?1 run: its jobs, as `job_from_row` reads them.
const RUN_JOBS: &str = "SELECT name, status, credits_used, created_at, started_at, stopped_at
    FROM jobs WHERE run_id = +?1";

/// Adds (`sign` 1) or subtracts (-1) every job of a run under the run key `k`, whatever the
/// run row holds now.
fn run_jobs(
    conn: &Connection,
    pending: &mut Pending,
    run_id: i64,
    k: &Key,
    sign: i64,
) -> Result<()> {
    let jobs = conn
        .prepare_cached(RUN_JOBS)?
        .query_map([run_id], job_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (name, timing) in jobs {
        job_row(pending, k, &name, &timing, sign);
    }
    Ok(())
}

/// The recoveries recomputed from the stored runs, independently of the functions above: by
/// one window pass per sequence (as the MTTR query of src/surfaces/circleci/sql.rs finds
/// them). With `REBUILD_DAYS` and `REBUILD_JOB_DAYS`, the family's `rebuild`: for a database
/// filled before the rollups existed, and for tests.
pub const REBUILD_RECOVERIES: &str = "
    UPDATE runs SET rec_from = NULL, rec_ms = NULL WHERE rec_from IS NOT NULL OR rec_ms IS NOT NULL;
    WITH seq AS (SELECT id, project_id AS p, branch AS b, workflow_id AS w, created_at AS at,
            ext_id AS e, stopped_at AS stop, (status <> 'success') AS bad FROM runs
        WHERE status = 'success' OR status = 'failed' OR status = 'error' OR status = 'timeout'),
    marked AS (SELECT *, LAG(bad, 1, 0) OVER win AS prev_bad,
            coalesce(SUM(NOT bad) OVER (win ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)
            AS streak
        FROM seq WINDOW win AS (PARTITION BY p, b, w ORDER BY at, e)),
    firsts AS (SELECT p, b, w, streak, at AS f_at, stop AS f_stop,
            ROW_NUMBER() OVER (PARTITION BY p, b, w, streak ORDER BY at, e) AS k
        FROM marked WHERE bad)
    UPDATE runs SET rec_from = f.f_at, rec_ms = runs.stopped_at - f.f_stop
    FROM marked m JOIN firsts f ON f.p = m.p AND f.b IS m.b AND f.w = m.w AND f.streak = m.streak
        AND f.k = 1
    WHERE runs.id = m.id AND NOT m.bad AND m.prev_bad;";

/// The run day rows recomputed from the stored runs and their recoveries (part of `rebuild`,
/// and the upgrade that gave the rows their blobs). The connection needs `pipestat_durs`.
pub const REBUILD_DAYS: &str = "
    DELETE FROM insights_days;
    INSERT INTO insights_days (project_id, branch, workflow_id, day, total, ok, bad, canceled,
        open, credits, dur_n, dur_sum, dur_sumsq, rec_n, rec_timed, rec_sum, durs)
    SELECT project_id, branch, workflow_id,
        (created_at - (created_at % 86400000 + 86400000) % 86400000) / 86400000 AS day,
        count(*), sum(status = 'success'),
        sum(status = 'failed' OR status = 'error' OR status = 'timeout'), sum(status = 'canceled'),
        sum(status = 'queued' OR status = 'running' OR status = 'waiting'), total(credits_used),
        count(dur), total(dur), total(CAST(dur AS REAL) * dur),
        count(rec_from), count(rec_ms), total(rec_ms), pipestat_durs(dur)
    FROM (SELECT *, CASE WHEN stopped_at IS NOT NULL
            THEN max(stopped_at - coalesce(started_at, created_at), 0) END AS dur FROM runs)
    WHERE branch IS NOT NULL
    GROUP BY project_id, branch, workflow_id, day;
";

/// The job day rows recomputed from the stored jobs and runs (part of `REBUILD`, and the
/// upgrade that gave the rows their blobs). The connection needs `pipestat_durs`.
pub const REBUILD_JOB_DAYS: &str = "
    DELETE FROM insights_job_days;
    INSERT INTO insights_job_days (project_id, branch, workflow_id, day, name, total, ok, bad,
        canceled, open, credits, dur_n, dur_sum, dur_sumsq, durs)
    SELECT r.project_id, r.branch, r.workflow_id,
        (r.created_at - (r.created_at % 86400000 + 86400000) % 86400000) / 86400000 AS day,
        j.name, count(*), sum(j.status = 'success'),
        sum(j.status = 'failed' OR j.status = 'error' OR j.status = 'timeout'),
        sum(j.status = 'canceled'), sum(j.status = 'queued' OR j.status = 'running' OR j.status = 'waiting'),
        total(j.credits_used), count(d), total(d), total(CAST(d AS REAL) * d), pipestat_durs(d)
    FROM (SELECT *, CASE WHEN stopped_at IS NOT NULL
            THEN max(stopped_at - coalesce(started_at, created_at), 0) END AS d FROM jobs) j
    JOIN runs r ON r.id = j.run_id
    WHERE r.branch IS NOT NULL
    GROUP BY r.project_id, r.branch, r.workflow_id, day, j.name;";

/// The all-branch day rows: the sums of the day rows of every branch (recoveries aside), from
/// the stored runs and jobs. The connection needs `pipestat_durs`.
pub const REBUILD_ALL_DAYS: &str = "
    DELETE FROM insights_all_days;
    INSERT INTO insights_all_days (project_id, workflow_id, day, total, ok, bad, canceled, open,
        credits, dur_n, dur_sum, dur_sumsq, durs)
    SELECT project_id, workflow_id,
        (created_at - (created_at % 86400000 + 86400000) % 86400000) / 86400000 AS day,
        count(*), sum(status = 'success'),
        sum(status = 'failed' OR status = 'error' OR status = 'timeout'), sum(status = 'canceled'),
        sum(status = 'queued' OR status = 'running' OR status = 'waiting'), total(credits_used),
        count(dur), total(dur), total(CAST(dur AS REAL) * dur), pipestat_durs(dur)
    FROM (SELECT *, CASE WHEN stopped_at IS NOT NULL
            THEN max(stopped_at - coalesce(started_at, created_at), 0) END AS dur FROM runs)
    WHERE branch IS NOT NULL
    GROUP BY project_id, workflow_id, day;
    DELETE FROM insights_all_job_days;
    INSERT INTO insights_all_job_days (project_id, workflow_id, day, name, total, ok, bad,
        canceled, open, credits, dur_n, dur_sum, dur_sumsq, durs)
    SELECT r.project_id, r.workflow_id,
        (r.created_at - (r.created_at % 86400000 + 86400000) % 86400000) / 86400000 AS day,
        j.name, count(*), sum(j.status = 'success'),
        sum(j.status = 'failed' OR j.status = 'error' OR j.status = 'timeout'),
        sum(j.status = 'canceled'), sum(j.status = 'queued' OR j.status = 'running' OR j.status = 'waiting'),
        total(j.credits_used), count(d), total(d), total(CAST(d AS REAL) * d), pipestat_durs(d)
    FROM (SELECT *, CASE WHEN stopped_at IS NOT NULL
            THEN max(stopped_at - coalesce(started_at, created_at), 0) END AS d FROM jobs) j
    JOIN runs r ON r.id = j.run_id
    WHERE r.branch IS NOT NULL
    GROUP BY r.project_id, r.workflow_id, day, j.name;";

/// Recomputes the CircleCI rollups from the stored runs (the connection needs
/// `pipestat_durs`, as every connection `db` opens has).
pub fn rebuild(conn: &Connection) -> Result<()> {
    conn.execute_batch(REBUILD_RECOVERIES)?;
    conn.execute_batch(REBUILD_DAYS)?;
    conn.execute_batch(REBUILD_JOB_DAYS)?;
    conn.execute_batch(REBUILD_ALL_DAYS)?;
    Ok(())
}
