//! All of pipestat's SQL for ingestion, reading back, rollbacks and tokens.
//!
//! Statement text never changes per request: optional filters are written `(?1 IS NULL OR …)`
//! and every value is a bound parameter, so `prepare_cached` always hits and nothing a client
//! sends is ever pasted into SQL. Writers are called inside a transaction their caller opened
//! IMMEDIATE; they take `&Connection` because a `Transaction` derefs to one.

use std::collections::HashMap;
use std::sync::OnceLock;

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{named_params, params, Connection, OptionalExtension, Row, Statement, ToSql};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::{Job, Kind, Rollback, Run, Status, TestCase, TestOutcome};
use rollups::zadig::Known;
use rollups::{any_failing, New, Old, OldJob, OldRun, Rollups, RunPlace, Timing};

pub mod bulk;
pub mod db;
pub mod dora;
pub mod functions;
pub mod rollups;
pub mod tokens;
pub mod writer;

macro_rules! sql_enum {
    ($t:ty) => {
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }
        impl FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = v.as_str()?;
                <$t>::parse(s)
                    .ok_or_else(|| FromSqlError::Other(format!("unknown value {s:?}").into()))
            }
        }
    };
}
sql_enum!(Status);
sql_enum!(Kind);
sql_enum!(TestOutcome);

/// What a batch of runs did to the store.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub created: u64,
    pub updated: u64,
}

/// What the writers of one transaction remember: project and workflow rows (so a batch of
/// runs does not query them once per run), and every rollup family's sums that `flush` has
/// not written yet (with the Zadig family's test case and artifact numbers). Forget it
/// (`clear`) whenever a savepoint rolls back.
#[derive(Default)]
pub struct Ids {
    projects: HashMap<String, ProjectRow>,
    workflows: HashMap<(i64, String), WorkflowRow>,
    rollups: Rollups,
}

struct ProjectRow {
    id: i64,
    key: String,
    default_branch: String,
}

struct WorkflowRow {
    id: i64,
    pipeline_id: String,
    max_number: i64,
    dirty: bool,
}

impl Ids {
    pub fn clear(&mut self) {
        *self = Ids::default();
    }

    /// A transaction's memory that starts from what committed transactions learned: test case
    /// and artifact numbers, which stay true once committed (their rows are never deleted).
    pub fn resume(known: Known) -> Ids {
        let mut ids = Ids::default();
        ids.rollups.zadig = rollups::zadig::Pending::resume(known);
        ids
    }

    /// The numbers this transaction looked up or created, to `resume` the next one from; call
    /// it only once the transaction committed. Forgets them all once they hold more than
    /// `KNOWN_MAX_BYTES`, so that a writer's memory stays bounded.
    pub fn into_known(self) -> Known {
        self.rollups.zadig.into_known()
    }
}

/// The default CodeArts pipeline id: the first 128 bits of SHA-256 of "<slug>/<workflow>", in hex.
pub fn default_pipeline_id(slug: &str, workflow: &str) -> String {
    let digest = Sha256::digest(format!("{slug}/{workflow}").as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The project's short key when none is given: the slug's last segment.
fn default_key(slug: &str) -> &str {
    slug.rsplit('/').next().unwrap_or(slug)
}

const SELECT_PROJECT: &str = "SELECT id, key, default_branch FROM projects WHERE slug = ?1";
const INSERT_PROJECT: &str =
    "INSERT INTO projects (slug, key, default_branch) VALUES (?1, ?2, ?3) RETURNING id";
const UPDATE_PROJECT: &str = "UPDATE projects SET key = ?2, default_branch = ?3 WHERE id = ?1";

/// Finds or creates the project, applying a newly given key or default branch.
fn project_id(
    conn: &Connection,
    ids: &mut Ids,
    slug: &str,
    key: Option<&str>,
    default_branch: Option<&str>,
) -> Result<i64> {
    if !ids.projects.contains_key(slug) {
        let found = conn
            .prepare_cached(SELECT_PROJECT)?
            .query_row([slug], |r| {
                Ok(ProjectRow {
                    id: r.get(0)?,
                    key: r.get(1)?,
                    default_branch: r.get(2)?,
                })
            })
            .optional()?;
        let row = match found {
            Some(row) => row,
            None => {
                let key = key.unwrap_or(default_key(slug)).to_owned();
                let default_branch = default_branch.unwrap_or("main").to_owned();
                let id = conn
                    .prepare_cached(INSERT_PROJECT)?
                    .query_row(params![slug, key, default_branch], |r| r.get(0))?;
                ProjectRow {
                    id,
                    key,
                    default_branch,
                }
            }
        };
        ids.projects.insert(slug.to_owned(), row);
    }
    let row = ids.projects.get_mut(slug).expect("inserted above");
    let key_changed = key.is_some_and(|k| k != row.key);
    let branch_changed = default_branch.is_some_and(|b| b != row.default_branch);
    if key_changed || branch_changed {
        if let Some(k) = key {
            row.key = k.to_owned();
        }
        if let Some(b) = default_branch {
            row.default_branch = b.to_owned();
        }
        conn.prepare_cached(UPDATE_PROJECT)?.execute(params![
            row.id,
            row.key,
            row.default_branch
        ])?;
    }
    Ok(row.id)
}

const SELECT_WORKFLOW: &str =
    "SELECT id, pipeline_id, max_number FROM workflows WHERE project_id = ?1 AND name = ?2";
const INSERT_WORKFLOW: &str =
    "INSERT INTO workflows (project_id, name, pipeline_id) VALUES (?1, ?2, ?3) RETURNING id";
const UPDATE_PIPELINE_ID: &str = "UPDATE workflows SET pipeline_id = ?2 WHERE id = ?1";
const SELECT_PIPELINE_OWNER: &str = "SELECT 1 FROM workflows WHERE pipeline_id = ?1";
const UPDATE_MAX_NUMBER: &str = "UPDATE workflows SET max_number = ?2 WHERE id = ?1";

/// Finds or creates the workflow and returns its cache key.
fn workflow<'a>(
    conn: &Connection,
    ids: &'a mut Ids,
    project_id: i64,
    slug: &str,
    name: &str,
    pipeline_id: Option<&str>,
) -> Result<&'a mut WorkflowRow> {
    let cache_key = (project_id, name.to_owned());
    if !ids.workflows.contains_key(&cache_key) {
        let found = conn
            .prepare_cached(SELECT_WORKFLOW)?
            .query_row(params![project_id, name], |r| {
                Ok(WorkflowRow {
                    id: r.get(0)?,
                    pipeline_id: r.get(1)?,
                    max_number: r.get(2)?,
                    dirty: false,
                })
            })
            .optional()?;
        let row = match found {
            Some(row) => row,
            None => {
                let pid = match pipeline_id {
                    Some(p) => p.to_owned(),
                    None => default_pipeline_id(slug, name),
                };
                ensure_pipeline_id_free(conn, &pid)?;
                let id = conn
                    .prepare_cached(INSERT_WORKFLOW)?
                    .query_row(params![project_id, name, pid], |r| r.get(0))?;
                WorkflowRow {
                    id,
                    pipeline_id: pid,
                    max_number: 0,
                    dirty: false,
                }
            }
        };
        ids.workflows.insert(cache_key.clone(), row);
    }
    let row = ids.workflows.get_mut(&cache_key).expect("inserted above");
    if let Some(p) = pipeline_id.filter(|p| *p != row.pipeline_id) {
        ensure_pipeline_id_free(conn, p)?;
        conn.prepare_cached(UPDATE_PIPELINE_ID)?
            .execute(params![row.id, p])?;
        row.pipeline_id = p.to_owned();
    }
    Ok(row)
}

fn ensure_pipeline_id_free(conn: &Connection, pipeline_id: &str) -> Result<()> {
    let taken = conn
        .prepare_cached(SELECT_PIPELINE_OWNER)?
        .exists([pipeline_id])?;
    if taken {
        return Err(Error::bad(format!(
            "field \"pipeline_id\": {pipeline_id:?} already names another workflow"
        )));
    }
    Ok(())
}

/// Writes what `ids` holds back: the remembered highest build numbers to their workflows, and
/// every rollup family's sums since the last flush. Call it before committing.
pub fn flush(conn: &Connection, ids: &mut Ids) -> Result<()> {
    for row in ids.workflows.values_mut().filter(|w| w.dirty) {
        conn.prepare_cached(UPDATE_MAX_NUMBER)?
            .execute(params![row.id, row.max_number])?;
        row.dirty = false;
    }
    ids.rollups.flush(conn)
}

/// Whether a delivery with `new` status and stop time replaces the stored one (docs/api.md):
/// queued and waiting < running < terminal; between terminal states the later `stopped_at`
/// wins, and on a tie the later delivery (this one).
fn is_fresher(new: Status, new_stop: Option<i64>, old: Status, old_stop: Option<i64>) -> bool {
    match new.rank().cmp(&old.rank()) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => {
            !new.is_terminal() || new_stop.unwrap_or(i64::MIN) >= old_stop.unwrap_or(i64::MIN)
        }
    }
}

/// A stored run's old state, the one read a write makes of it: every rollup family takes out
/// what it counted from this (`rollups::Old::Run`).
const SELECT_OLD_RUN: &str = "SELECT id, workflow_id, branch, commit_sha, status, created_at,
    started_at, stopped_at, credits_used, rec_from, rec_ms
    FROM runs WHERE project_id = :project_id AND ext_id = :ext_id";
const INSERT_RUN: &str = "INSERT INTO runs (project_id, workflow_id, ext_id, number, branch,
    commit_sha, actor, trigger, committed_at, status, created_at, started_at, stopped_at,
    credits_used, detail_url, parameters)
    VALUES (:project_id, :workflow_id, :ext_id, :number, :branch, :commit_sha, :actor, :trigger,
    :committed_at, :status, :created_at, :started_at, :stopped_at, :credits_used, :detail_url,
    :parameters)";
/// Clears the run's recovery: the CircleCI family recomputes it once the run is written.
const UPDATE_RUN: &str = "UPDATE runs SET workflow_id = :workflow_id,
    number = coalesce(:number, number), branch = :branch, commit_sha = :commit_sha,
    actor = :actor, trigger = :trigger, committed_at = :committed_at, status = :status,
    created_at = :created_at, started_at = :started_at, stopped_at = :stopped_at,
    credits_used = :credits_used, detail_url = :detail_url, parameters = :parameters,
    rec_from = NULL, rec_ms = NULL
    WHERE id = :id";

/// A stored run's or job's timing, from the columns of the same names.
fn stored_timing(r: &Row) -> rusqlite::Result<Timing> {
    Ok(Timing {
        status: r.get("status")?,
        created_at: r.get("created_at")?,
        started_at: r.get("started_at")?,
        stopped_at: r.get("stopped_at")?,
        credits_used: r.get("credits_used")?,
    })
}

/// The stored state of run (`project_id`, `ext_id`), if there is one.
fn old_run(conn: &Connection, project_id: i64, ext_id: &str) -> Result<Option<OldRun>> {
    Ok(conn
        .prepare_cached(SELECT_OLD_RUN)?
        .query_row(
            named_params! {":project_id": project_id, ":ext_id": ext_id},
            |r| {
                Ok(OldRun {
                    id: r.get("id")?,
                    project_id,
                    workflow_id: r.get("workflow_id")?,
                    ext_id: ext_id.to_owned(),
                    branch: r.get("branch")?,
                    commit: r.get("commit_sha")?,
                    timing: stored_timing(r)?,
                    rec_from: r.get("rec_from")?,
                    rec_ms: r.get("rec_ms")?,
                })
            },
        )
        .optional()?)
}

/// What one upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Created,
    Updated,
    /// The stored run was fresher; only the delivery's jobs were merged.
    Stale,
}

/// Upserts runs by (project, id), with their jobs and tests (see `write_run`). An error names
/// the index of the run that caused it. Call `flush` before committing.
pub fn write_runs(conn: &Connection, ids: &mut Ids, runs: &[Run]) -> Result<Counts> {
    let mut counts = Counts::default();
    for (i, run) in runs.iter().enumerate() {
        match write_run(conn, ids, run) {
            Ok(Upsert::Created) => counts.created += 1,
            Ok(Upsert::Updated) => counts.updated += 1,
            Ok(Upsert::Stale) => {}
            Err(Error::BadRequest(m)) => return Err(Error::BadRequest(format!("item {i}: {m}"))),
            Err(e) => return Err(e),
        }
    }
    Ok(counts)
}

/// The project of a run, created or updated from what the run says of it.
fn run_project(conn: &Connection, ids: &mut Ids, run: &Run) -> Result<i64> {
    project_id(
        conn,
        ids,
        &run.project,
        run.project_key.as_deref(),
        run.default_branch.as_deref(),
    )
}

/// Upserts one run by (project, id). A stale delivery leaves the stored run as it is; its
/// jobs are merged one by one under the same rule. Call `flush` before committing.
pub fn write_run(conn: &Connection, ids: &mut Ids, run: &Run) -> Result<Upsert> {
    let project_id = run_project(conn, ids, run)?;
    let wf = workflow(
        conn,
        ids,
        project_id,
        &run.project,
        &run.workflow,
        run.pipeline_id.as_deref(),
    )?;
    let workflow_id = wf.id;
    let Some(old) = old_run(conn, project_id, &run.id)? else {
        let number = run.number.unwrap_or(wf.max_number + 1);
        if number > wf.max_number {
            wf.max_number = number;
            wf.dirty = true;
        }
        // A plain INSERT, not INSERT … RETURNING: SQLite buffers RETURNING rows in a
        // temporary table, which costs more than reading the new rowid back.
        let mut insert = conn.prepare_cached(INSERT_RUN)?;
        static KEYS: OnceLock<Vec<usize>> = OnceLock::new();
        static VALUES: OnceLock<Vec<usize>> = OnceLock::new();
        bind_hot(
            &mut insert,
            &KEYS,
            named_params! {
                ":project_id": project_id,
                ":workflow_id": workflow_id,
                ":ext_id": run.id,
                ":number": number,
            },
        )?;
        bind_hot(&mut insert, &VALUES, &run_values(run))?;
        insert.raw_execute()?;
        let run_id = conn.last_insert_rowid();
        ids.rollups.written(
            conn,
            New::Run {
                id: run_id,
                project_id,
                workflow_id,
                run,
                old: None,
            },
        )?;
        let at = RunPlace {
            run_id,
            project_id,
            workflow_id,
            commit: run.commit.as_deref(),
        };
        // The run's job rows first, then what each job adds: a statement run several times in
        // a row stays in the processor's caches.
        let mut job_ids = Vec::with_capacity(run.jobs.len());
        for (position, job) in run.jobs.iter().enumerate() {
            job_ids.push(insert_job_row(conn, &at, position as i64, job)?);
        }
        for (job, job_id) in run.jobs.iter().zip(job_ids) {
            let written = New::Job {
                id: job_id,
                at,
                job,
                kept_tests: false,
            };
            ids.rollups.written(conn, written)?;
            if let Some(tests) = &job.tests {
                insert_tests(conn, ids, job_id, &at, job, tests)?;
            }
        }
        return Ok(Upsert::Created);
    };
    let was = old.timing;
    let fresher = is_fresher(run.status, run.stopped_at, was.status, was.stopped_at);
    if fresher {
        if let Some(n) = run.number.filter(|n| *n > wf.max_number) {
            wf.max_number = n;
            wf.dirty = true;
        }
        ids.rollups.replacing(conn, Old::Run(&old))?;
        let mut update = conn.prepare_cached(UPDATE_RUN)?;
        static KEYS: OnceLock<Vec<usize>> = OnceLock::new();
        static VALUES: OnceLock<Vec<usize>> = OnceLock::new();
        bind_hot(
            &mut update,
            &KEYS,
            named_params! {
                ":id": old.id,
                ":workflow_id": workflow_id,
                ":number": run.number,
            },
        )?;
        bind_hot(&mut update, &VALUES, &run_values(run))?;
        update.raw_execute()?;
        let written = New::Run {
            id: old.id,
            project_id,
            workflow_id,
            run,
            old: Some(&old),
        };
        ids.rollups.written(conn, written)?;
    }
    // The jobs merge into the run as it is stored now.
    let at = if fresher {
        RunPlace {
            run_id: old.id,
            project_id,
            workflow_id,
            commit: run.commit.as_deref(),
        }
    } else {
        old.place()
    };
    for job in &run.jobs {
        merge_job(conn, ids, &at, job)?;
    }
    Ok(if fresher {
        Upsert::Updated
    } else {
        Upsert::Stale
    })
}

const INSERT_JOB: &str = "INSERT INTO jobs (run_id, project_id, ext_id, position, name, stage,
    kind, status, created_at, started_at, stopped_at, credits_used, detail_url, error_code,
    error_msg, env, cluster, service, service_type, production, artifacts)
    VALUES (:run_id, :project_id, :ext_id, :position, :name, :stage, :kind, :status, :created_at,
    :started_at, :stopped_at, :credits_used, :detail_url, :error_code, :error_msg, :env, :cluster,
    :service, :service_type, :production, :artifacts)";
/// A stored job's old state, the one read a write makes of it (`rollups::Old::Job`).
const SELECT_OLD_JOB: &str = "SELECT id, name, kind, status, created_at, started_at, stopped_at,
    credits_used FROM jobs WHERE run_id = :run_id AND ext_id = :ext_id";
const NEXT_JOB_POSITION: &str =
    "SELECT coalesce(max(position), -1) + 1 FROM jobs WHERE run_id = ?1";
const UPDATE_JOB: &str = "UPDATE jobs SET name = :name, stage = :stage, kind = :kind,
    status = :status, created_at = :created_at, started_at = :started_at,
    stopped_at = :stopped_at, credits_used = :credits_used, detail_url = :detail_url,
    error_code = :error_code, error_msg = :error_msg, env = :env, cluster = :cluster,
    service = :service, service_type = :service_type, production = :production,
    artifacts = :artifacts
    WHERE id = :id";
const DELETE_JOB_TESTS: &str = "DELETE FROM test_results WHERE job_id = ?1";
/// The INSERTs of test results write up to 2^TEST_ROWS_LOG rows each, in power-of-two
/// sizes (20 cases: one statement of 16 rows and one of 4): a few statements a job instead of
/// one a case, and only TEST_ROWS_LOG + 1 of them in the statement cache.
const TEST_ROWS_LOG: u32 = 5;

/// The INSERT of 2^`log` test results, ten parameters a row.
fn insert_tests_sql(log: u32) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=TEST_ROWS_LOG)
            .map(|log| {
                let rows: Vec<String> = (0..1usize << log)
                    .map(|i| {
                        let p: Vec<String> = (1..=10).map(|k| format!("?{}", i * 10 + k)).collect();
                        format!("({})", p.join(", "))
                    })
                    .collect();
                format!(
                    "INSERT INTO test_results (job_id, run_id, project_id, suite, classname, \
                     name, file, result, duration, message) VALUES {}",
                    rows.join(", ")
                )
            })
            .collect()
    });
    &all[log as usize]
}

/// Binds values to a statement's named parameters; run it with `raw_execute`.
fn bind<T: ToSql>(stmt: &mut Statement, values: &[(&str, T)]) -> Result<()> {
    for (name, value) in values {
        stmt.raw_bind_parameter(parameter_index(stmt, name)?, value)?;
    }
    Ok(())
}

fn parameter_index(stmt: &Statement, name: &str) -> Result<usize> {
    stmt.parameter_index(name)?
        .ok_or_else(|| Error::Internal(format!("no parameter {name} in the statement")))
}

/// Binds values to named parameters as `bind` does, for the statements run once per run or
/// job: their parameters' indices are looked up by name on first use and kept in `indices`,
/// one per call site (its names and the statement text never change), since a look-up by name
/// on every execution cost more than the binding itself.
fn bind_hot(
    stmt: &mut Statement,
    indices: &OnceLock<Vec<usize>>,
    values: &[(&str, &dyn ToSql)],
) -> Result<()> {
    let indices = match indices.get() {
        Some(found) => found,
        None => {
            let found = values
                .iter()
                .map(|(name, _)| parameter_index(stmt, name))
                .collect::<Result<Vec<_>>>()?;
            indices.get_or_init(|| found)
        }
    };
    for (index, (_, value)) in indices.iter().zip(values) {
        stmt.raw_bind_parameter(*index, value)?;
    }
    Ok(())
}

/// A run's own columns, as INSERT_RUN and UPDATE_RUN name them.
fn run_values(run: &Run) -> [(&'static str, &dyn ToSql); 12] {
    [
        (":branch", &run.branch),
        (":commit_sha", &run.commit),
        (":actor", &run.actor),
        (":trigger", &run.trigger),
        (":committed_at", &run.committed_at),
        (":status", &run.status),
        (":created_at", &run.created_at),
        (":started_at", &run.started_at),
        (":stopped_at", &run.stopped_at),
        (":credits_used", &run.credits_used),
        (":detail_url", &run.detail_url),
        (":parameters", &run.parameters),
    ]
}

/// A job's own columns, as INSERT_JOB and UPDATE_JOB name them (`artifacts` as JSON).
fn job_values<'a>(
    job: &'a Job,
    artifacts: &'a Option<String>,
) -> [(&'static str, &'a dyn ToSql); 17] {
    [
        (":name", &job.name),
        (":stage", &job.stage),
        (":kind", &job.kind),
        (":status", &job.status),
        (":created_at", &job.created_at),
        (":started_at", &job.started_at),
        (":stopped_at", &job.stopped_at),
        (":credits_used", &job.credits_used),
        (":detail_url", &job.detail_url),
        (":error_code", &job.error_code),
        (":error_msg", &job.error_msg),
        (":env", &job.env),
        (":cluster", &job.cluster),
        (":service", &job.service),
        (":service_type", &job.service_type),
        (":production", &job.production),
        (":artifacts", artifacts),
    ]
}

fn artifacts_json(job: &Job) -> Option<String> {
    job.artifacts
        .as_ref()
        .map(|a| serde_json::to_string(a).expect("strings serialize"))
}

/// Inserts one job of a stored run, counted into the rollups; returns its row id.
fn insert_job(
    conn: &Connection,
    ids: &mut Ids,
    at: &RunPlace,
    position: i64,
    job: &Job,
) -> Result<i64> {
    let id = insert_job_row(conn, at, position, job)?;
    let written = New::Job {
        id,
        at: *at,
        job,
        kept_tests: false,
    };
    ids.rollups.written(conn, written)?;
    Ok(id)
}

/// Inserts one job's row, and nothing else; returns its row id. Count it with `New::Job`.
fn insert_job_row(conn: &Connection, at: &RunPlace, position: i64, job: &Job) -> Result<i64> {
    let mut insert = conn.prepare_cached(INSERT_JOB)?;
    static KEYS: OnceLock<Vec<usize>> = OnceLock::new();
    static VALUES: OnceLock<Vec<usize>> = OnceLock::new();
    bind_hot(
        &mut insert,
        &KEYS,
        named_params! {
            ":run_id": at.run_id,
            ":project_id": at.project_id,
            ":ext_id": job.id,
            ":position": position,
        },
    )?;
    let artifacts = artifacts_json(job);
    bind_hot(&mut insert, &VALUES, &job_values(job, &artifacts))?;
    insert.raw_execute()?;
    Ok(conn.last_insert_rowid())
}

/// Adds or (when fresher) updates one job of the stored run `at`; its tests, when given,
/// replace the job's stored tests.
fn merge_job(conn: &Connection, ids: &mut Ids, at: &RunPlace, job: &Job) -> Result<()> {
    let old = conn
        .prepare_cached(SELECT_OLD_JOB)?
        .query_row(
            named_params! {":run_id": at.run_id, ":ext_id": job.id},
            |r| {
                Ok(OldJob {
                    id: r.get("id")?,
                    run_id: at.run_id,
                    project_id: at.project_id,
                    workflow_id: at.workflow_id,
                    name: r.get("name")?,
                    kind: r.get("kind")?,
                    timing: stored_timing(r)?,
                })
            },
        )
        .optional()?;
    let job_id = match old {
        None => {
            let position: i64 = conn
                .prepare_cached(NEXT_JOB_POSITION)?
                .query_row([at.run_id], |r| r.get(0))?;
            insert_job(conn, ids, at, position, job)?
        }
        Some(old) => {
            let was = old.timing;
            if !is_fresher(job.status, job.stopped_at, was.status, was.stopped_at) {
                return Ok(());
            }
            ids.rollups.replacing(conn, Old::Job(&old))?;
            let mut update = conn.prepare_cached(UPDATE_JOB)?;
            static KEY: OnceLock<Vec<usize>> = OnceLock::new();
            static VALUES: OnceLock<Vec<usize>> = OnceLock::new();
            bind_hot(&mut update, &KEY, named_params! {":id": old.id})?;
            let artifacts = artifacts_json(job);
            bind_hot(&mut update, &VALUES, &job_values(job, &artifacts))?;
            update.raw_execute()?;
            let written = New::Job {
                id: old.id,
                at: *at,
                job,
                kept_tests: job.tests.is_none(),
            };
            ids.rollups.written(conn, written)?;
            old.id
        }
    };
    if let Some(tests) = &job.tests {
        conn.prepare_cached(DELETE_JOB_TESTS)?.execute([job_id])?;
        insert_tests(conn, ids, job_id, at, job, tests)?;
    }
    Ok(())
}

/// Inserts test results of job `job_id` (the job `job` describes) and counts them.
fn insert_tests(
    conn: &Connection,
    ids: &mut Ids,
    job_id: i64,
    at: &RunPlace,
    job: &Job,
    tests: &[TestCase],
) -> Result<()> {
    insert_test_rows(conn, job_id, at, tests)?;
    let written = New::Tests {
        at: *at,
        kind: job.kind,
        job_time: job.started_at.unwrap_or(job.created_at),
        tests,
    };
    ids.rollups.written(conn, written)
}

/// Inserts test results' rows, and nothing else.
fn insert_test_rows(
    conn: &Connection,
    job_id: i64,
    at: &RunPlace,
    tests: &[TestCase],
) -> Result<()> {
    let mut rest = tests;
    while !rest.is_empty() {
        let log = rest.len().ilog2().min(TEST_ROWS_LOG);
        let (chunk, after) = rest.split_at(1 << log);
        rest = after;
        let mut stmt = conn.prepare_cached(insert_tests_sql(log))?;
        for (i, t) in chunk.iter().enumerate() {
            let at_param = i * 10;
            stmt.raw_bind_parameter(at_param + 1, job_id)?;
            stmt.raw_bind_parameter(at_param + 2, at.run_id)?;
            stmt.raw_bind_parameter(at_param + 3, at.project_id)?;
            stmt.raw_bind_parameter(at_param + 4, &t.suite)?;
            stmt.raw_bind_parameter(at_param + 5, &t.classname)?;
            stmt.raw_bind_parameter(at_param + 6, &t.name)?;
            stmt.raw_bind_parameter(at_param + 7, &t.file)?;
            stmt.raw_bind_parameter(at_param + 8, t.result)?;
            stmt.raw_bind_parameter(at_param + 9, t.duration)?;
            stmt.raw_bind_parameter(at_param + 10, &t.message)?;
        }
        stmt.raw_execute()?;
    }
    Ok(())
}

const SELECT_RUN_FOR_TESTS: &str = "SELECT r.id, r.project_id, r.created_at, r.started_at,
    r.stopped_at, r.workflow_id, r.commit_sha
    FROM runs r JOIN projects p ON p.id = r.project_id WHERE p.slug = ?1 AND r.ext_id = ?2";

/// The run a report's cases are attached to (SELECT_RUN_FOR_TESTS).
struct RunForTests {
    id: i64,
    project_id: i64,
    workflow_id: i64,
    commit: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    stopped_at: Option<i64>,
}
const SELECT_JOB_BY_NAME: &str =
    "SELECT id, ext_id FROM jobs WHERE run_id = ?1 AND name = ?2 ORDER BY position LIMIT 1";
const SELECT_JOB_PLACE: &str =
    "SELECT name, kind, coalesce(started_at, created_at) AS job_time FROM jobs WHERE id = ?1";
const SELECT_ONLY_TEST_JOB: &str = "SELECT id, ext_id FROM jobs WHERE run_id = ?1 AND kind = 'test'
    AND (SELECT count(*) FROM jobs WHERE run_id = ?1 AND kind = 'test') = 1";

/// Where a JUnit report's cases went.
#[derive(Debug)]
pub struct Attached {
    pub job_id: String,
    pub job_name: String,
    pub created_job: bool,
}

/// Attaches a report's test cases to a job of a stored run, replacing that job's earlier
/// cases (so a re-uploaded report never doubles). The job is the one named `job`; without a
/// name, the run's only test job, or else a job named "tests". A missing job is created as a
/// test job spanning the run, failed when any case failed or errored. Call `flush` before
/// committing.
pub fn attach_tests(
    conn: &Connection,
    ids: &mut Ids,
    slug: &str,
    run_ext_id: &str,
    job: Option<&str>,
    tests: &[TestCase],
) -> Result<Attached> {
    let run = conn
        .prepare_cached(SELECT_RUN_FOR_TESTS)?
        .query_row(params![slug, run_ext_id], |r| {
            Ok(RunForTests {
                id: r.get("id")?,
                project_id: r.get("project_id")?,
                created_at: r.get("created_at")?,
                started_at: r.get("started_at")?,
                stopped_at: r.get("stopped_at")?,
                workflow_id: r.get("workflow_id")?,
                commit: r.get("commit_sha")?,
            })
        })
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no run {run_ext_id:?} in project {slug:?}")))?;
    let run_id = run.id;
    let at = RunPlace {
        run_id,
        project_id: run.project_id,
        workflow_id: run.workflow_id,
        commit: run.commit.as_deref(),
    };
    let name = job.unwrap_or("tests");
    let found = match job {
        Some(n) => conn
            .prepare_cached(SELECT_JOB_BY_NAME)?
            .query_row(params![run_id, n], two)
            .optional()?,
        None => match conn
            .prepare_cached(SELECT_ONLY_TEST_JOB)?
            .query_row([run_id], two)
            .optional()?
        {
            Some(j) => Some(j),
            None => conn
                .prepare_cached(SELECT_JOB_BY_NAME)?
                .query_row(params![run_id, name], two)
                .optional()?,
        },
    };
    let (job_id, ext_id, created_job) = match found {
        Some((id, ext)) => (id, ext, false),
        None => {
            let failed = any_failing(tests);
            let new = Job {
                id: format!("{run_ext_id}/tests/{name}"),
                name: name.to_owned(),
                stage: Some("test".to_owned()),
                kind: Kind::Test,
                status: if failed {
                    Status::Failed
                } else {
                    Status::Success
                },
                created_at: run.created_at,
                started_at: run.started_at,
                stopped_at: run.stopped_at.or(run.started_at).or(Some(run.created_at)),
                credits_used: 0,
                detail_url: None,
                error_code: None,
                error_msg: None,
                env: None,
                cluster: None,
                service: None,
                service_type: None,
                production: false,
                artifacts: None,
                tests: None,
            };
            let position: i64 = conn
                .prepare_cached(NEXT_JOB_POSITION)?
                .query_row([run_id], |r| r.get(0))?;
            (insert_job(conn, ids, &at, position, &new)?, new.id, true)
        }
    };
    let (job_name, kind, job_time): (String, Kind, i64) = conn
        .prepare_cached(SELECT_JOB_PLACE)?
        .query_row([job_id], |r| {
            Ok((r.get("name")?, r.get("kind")?, r.get("job_time")?))
        })?;
    ids.rollups.replacing(conn, Old::Tests { job_id })?;
    conn.prepare_cached(DELETE_JOB_TESTS)?.execute([job_id])?;
    insert_test_rows(conn, job_id, &at, tests)?;
    let written = New::Tests {
        at,
        kind,
        job_time,
        tests,
    };
    ids.rollups.written(conn, written)?;
    Ok(Attached {
        job_id: ext_id,
        job_name,
        created_job,
    })
}

fn two(r: &Row) -> rusqlite::Result<(i64, String)> {
    Ok((r.get(0)?, r.get(1)?))
}

const SELECT_PROJECT_BY_KEY: &str = "SELECT id FROM projects WHERE key = ?1 ORDER BY id LIMIT 1";
const UPSERT_ROLLBACK: &str =
    "INSERT INTO rollbacks (ext_id, project_id, env, env_type, production,
    operation_type, service, service_type, origin_service, update_service, create_by, created_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
    ON CONFLICT (ext_id) DO UPDATE SET project_id = excluded.project_id, env = excluded.env,
    env_type = excluded.env_type, production = excluded.production,
    operation_type = excluded.operation_type, service = excluded.service,
    service_type = excluded.service_type, origin_service = excluded.origin_service,
    update_service = excluded.update_service, create_by = excluded.create_by,
    created_at = excluded.created_at";

/// Stores rollback records; one with a known `id` replaces the earlier record.
/// `project` is a canonical slug (created when new) or the key of a known project.
pub fn write_rollbacks(conn: &Connection, ids: &mut Ids, rollbacks: &[Rollback]) -> Result<usize> {
    for (i, rb) in rollbacks.iter().enumerate() {
        let project_id = if rb.project.contains('/') {
            project_id(conn, ids, &rb.project, None, None)?
        } else {
            conn.prepare_cached(SELECT_PROJECT_BY_KEY)?
                .query_row([&rb.project], |r| r.get(0))
                .optional()?
                .ok_or_else(|| {
                    Error::bad(format!(
                        "item {i}: field \"project\": no project has the key {:?}",
                        rb.project
                    ))
                })?
        };
        conn.prepare_cached(UPSERT_ROLLBACK)?.execute(params![
            rb.id,
            project_id,
            rb.env,
            rb.env_type,
            rb.production,
            rb.operation_type,
            rb.service,
            rb.service_type,
            rb.origin_service,
            rb.update_service,
            rb.create_by,
            rb.created_at
        ])?;
    }
    Ok(rollbacks.len())
}

const RUN_COLUMNS: &str = "r.id, p.slug, p.key, p.default_branch, w.name, w.pipeline_id, r.ext_id,
    r.number, r.branch, r.commit_sha, r.actor, r.trigger, r.committed_at, r.status, r.created_at,
    r.started_at, r.stopped_at, r.credits_used, r.detail_url, r.parameters";

fn run_from_row(r: &Row) -> rusqlite::Result<(i64, Run)> {
    Ok((
        r.get(0)?,
        Run {
            project: r.get(1)?,
            project_key: r.get(2)?,
            default_branch: r.get(3)?,
            workflow: r.get(4)?,
            pipeline_id: r.get(5)?,
            id: r.get(6)?,
            number: r.get(7)?,
            branch: r.get(8)?,
            commit: r.get(9)?,
            actor: r.get(10)?,
            trigger: r.get(11)?,
            committed_at: r.get(12)?,
            status: r.get(13)?,
            created_at: r.get(14)?,
            started_at: r.get(15)?,
            stopped_at: r.get(16)?,
            credits_used: r.get(17)?,
            detail_url: r.get(18)?,
            parameters: r.get(19)?,
            jobs: Vec::new(),
        },
    ))
}

const SELECT_JOBS_OF_RUN: &str = "SELECT id, ext_id, name, stage, kind, status, created_at,
    started_at, stopped_at, credits_used, detail_url, error_code, error_msg, env, cluster,
    service, service_type, production, artifacts
    FROM jobs WHERE run_id = ?1 ORDER BY position";
const SELECT_TESTS_OF_RUN: &str = "SELECT t.job_id, t.name, t.classname, t.file, t.suite,
    t.result, t.duration, t.message
    FROM jobs j JOIN test_results t ON t.job_id = j.id WHERE j.run_id = ?1 ORDER BY t.id";

/// One stored run with its jobs and their tests (three queries, whatever the size).
pub fn get_run(conn: &Connection, slug: &str, ext_id: &str) -> Result<Option<Run>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs r JOIN projects p ON p.id = r.project_id
         JOIN workflows w ON w.id = r.workflow_id WHERE p.slug = ?1 AND r.ext_id = ?2"
    );
    let Some((run_id, mut run)) = conn
        .prepare_cached(&sql)?
        .query_row(params![slug, ext_id], run_from_row)
        .optional()?
    else {
        return Ok(None);
    };
    let mut jobs: Vec<(i64, Job)> = conn
        .prepare_cached(SELECT_JOBS_OF_RUN)?
        .query_map([run_id], |r| {
            let artifacts: Option<String> = r.get(18)?;
            Ok((
                r.get(0)?,
                Job {
                    id: r.get(1)?,
                    name: r.get(2)?,
                    stage: r.get(3)?,
                    kind: r.get(4)?,
                    status: r.get(5)?,
                    created_at: r.get(6)?,
                    started_at: r.get(7)?,
                    stopped_at: r.get(8)?,
                    credits_used: r.get(9)?,
                    detail_url: r.get(10)?,
                    error_code: r.get(11)?,
                    error_msg: r.get(12)?,
                    env: r.get(13)?,
                    cluster: r.get(14)?,
                    service: r.get(15)?,
                    service_type: r.get(16)?,
                    production: r.get(17)?,
                    artifacts: artifacts.and_then(|a| serde_json::from_str(&a).ok()),
                    tests: Some(Vec::new()),
                },
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let index: HashMap<i64, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (*id, i))
        .collect();
    let mut stmt = conn.prepare_cached(SELECT_TESTS_OF_RUN)?;
    let mut rows = stmt.query([run_id])?;
    while let Some(r) = rows.next()? {
        let job_id: i64 = r.get(0)?;
        let test = TestCase {
            name: r.get(1)?,
            classname: r.get(2)?,
            file: r.get(3)?,
            suite: r.get(4)?,
            result: r.get(5)?,
            duration: r.get(6)?,
            message: r.get(7)?,
        };
        if let Some(tests) = index.get(&job_id).and_then(|i| jobs[*i].1.tests.as_mut()) {
            tests.push(test);
        }
    }
    run.jobs = jobs.into_iter().map(|(_, j)| j).collect();
    Ok(Some(run))
}

/// Filters of the native run list; `None` means any.
#[derive(Debug, Default)]
pub struct RunFilter<'a> {
    pub project: Option<&'a str>,
    pub workflow: Option<&'a str>,
    pub branch: Option<&'a str>,
    pub status: Option<Status>,
    /// Continue after this (created_at, rowid), exclusive.
    pub after: Option<RunCursor>,
    pub limit: u32,
}

/// A position in the newest-first run order: (created_at, rowid).
pub type RunCursor = (i64, i64);

/// Runs newest first, without their jobs, and the position to continue from when more remain.
pub fn list_runs(conn: &Connection, f: &RunFilter) -> Result<(Vec<Run>, Option<RunCursor>)> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM runs r JOIN projects p ON p.id = r.project_id
         JOIN workflows w ON w.id = r.workflow_id
         WHERE (?1 IS NULL OR p.slug = ?1) AND (?2 IS NULL OR w.name = ?2)
           AND (?3 IS NULL OR r.branch = ?3) AND (?4 IS NULL OR r.status = ?4)
           AND (?5 IS NULL OR (r.created_at, r.id) < (?5, ?6))
         ORDER BY r.created_at DESC, r.id DESC LIMIT ?7"
    );
    let (after_at, after_id) = f.after.unzip();
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows: Vec<(i64, Run)> = stmt
        .query_map(
            params![
                f.project,
                f.workflow,
                f.branch,
                f.status,
                after_at,
                after_id,
                f.limit + 1
            ],
            run_from_row,
        )?
        .collect::<rusqlite::Result<_>>()?;
    let more = rows.len() > f.limit as usize;
    let page: Vec<(i64, Run)> = rows.into_iter().take(f.limit as usize).collect();
    let next = if more {
        page.last().map(|(id, r)| (r.created_at, *id))
    } else {
        None
    };
    Ok((page.into_iter().map(|(_, r)| r).collect(), next))
}

/// A workflow as the CodeArts surface knows it.
#[derive(Debug)]
pub struct Pipeline {
    pub pipeline_id: String,
    pub project: String,
    pub project_key: String,
    pub workflow: String,
    pub run_count: i64,
    pub last_run_at: Option<i64>,
}

const SELECT_PIPELINES: &str = "SELECT w.pipeline_id, p.slug, p.key, w.name,
    (SELECT count(*) FROM runs r WHERE r.workflow_id = w.id),
    (SELECT max(r.created_at) FROM runs r WHERE r.workflow_id = w.id)
    FROM workflows w JOIN projects p ON p.id = w.project_id
    WHERE (?1 IS NULL OR p.slug = ?1)
    ORDER BY p.slug, w.name";

pub fn list_pipelines(conn: &Connection, project: Option<&str>) -> Result<Vec<Pipeline>> {
    let mut stmt = conn.prepare_cached(SELECT_PIPELINES)?;
    let rows = stmt
        .query_map([project], |r| {
            Ok(Pipeline {
                pipeline_id: r.get(0)?,
                project: r.get(1)?,
                project_key: r.get(2)?,
                workflow: r.get(3)?,
                run_count: r.get(4)?,
                last_run_at: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// Whether the database holds no run yet (for `--demo`, which fills only an empty database).
pub fn is_empty(conn: &Connection) -> Result<bool> {
    Ok(
        !conn.query_row("SELECT EXISTS (SELECT 1 FROM runs)", [], |r| {
            r.get::<_, bool>(0)
        })?,
    )
}

/// Merges `run`'s jobs into the stored run (project, id), job by job under the freshness rule,
/// and leaves the stored run itself as it is; when no such run is stored yet, `run` is written
/// whole as a placeholder (with its jobs), for a later full delivery of the run to fill in.
/// Webhooks use it for a job that may arrive before its run. Returns `Created` for a new run
/// and `Stale` when the run already existed (its jobs merged). Call `flush` before committing.
pub fn merge_jobs_into_run(conn: &Connection, ids: &mut Ids, run: &Run) -> Result<Upsert> {
    let project_id = run_project(conn, ids, run)?;
    match old_run(conn, project_id, &run.id)? {
        None => write_run(conn, ids, run),
        Some(old) => {
            for job in &run.jobs {
                merge_job(conn, ids, &old.place(), job)?;
            }
            Ok(Upsert::Stale)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Zadig rollups (schema.sql: zadig_job_buckets, zadig_workflow_buckets, zadig_artifact_buckets,
// zadig_case_buckets).
// Each row counts the stored jobs or test results behind it. A job adds itself once inserted
// (and again once updated), subtracts itself before it is updated, and its tests subtract
// themselves before they are deleted, so the counts always describe what is stored now.
// Additions are computed in Rust from the values just written and summed per rollup row in
// `Ids`, so a batch of runs writes each row it touches once (`flush`, before the transaction
// or savepoint commits); subtractions read the stored rows in SQL and are written at once.
// Counts are sums, so the order of the two never changes the result.

/// A job's quarter-hour bucket: floor(coalesce(started_at, created_at) / 900000), also for
/// times before 1970 (SQLite's `/` truncates toward zero).
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_rule() {
        use Status::*;
        // Progress order wins regardless of stop times.
        assert!(is_fresher(Running, None, Queued, None));
        assert!(!is_fresher(Queued, None, Running, None));
        assert!(is_fresher(Success, Some(1), Running, None));
        assert!(!is_fresher(Running, None, Failed, Some(5)));
        // Between terminal states the later stop wins; a tie goes to the later delivery.
        assert!(is_fresher(Success, Some(10), Failed, Some(5)));
        assert!(!is_fresher(Failed, Some(4), Success, Some(5)));
        assert!(is_fresher(Failed, Some(5), Success, Some(5)));
        // Same non-terminal rank: the later delivery.
        assert!(is_fresher(Waiting, None, Queued, None));
    }

    #[test]
    fn pipeline_id_is_sha256_prefix() {
        // Independent value: printf 'gh/acme/api/ci' | sha256sum | cut -c1-32
        assert_eq!(
            default_pipeline_id("gh/acme/api", "ci"),
            "b6eafda767102ba31b45ce92493fe1c6"
        );
    }
}
