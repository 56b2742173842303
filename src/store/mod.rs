//! All of pipestat's SQL for ingestion, reading back, rollbacks and tokens.
//!
//! Statement text never changes per request: optional filters are written `(?1 IS NULL OR …)`
//! and every value is a bound parameter, so `prepare_cached` always hits and nothing a client
//! sends is ever pasted into SQL. Writers are called inside a transaction their caller opened
//! IMMEDIATE; they take `&Connection` because a `Transaction` derefs to one.

use std::collections::{BTreeMap, HashMap};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, Row, ToSql};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::model::{Job, Kind, Rollback, Run, Status, TestCase, TestOutcome};

pub mod bulk;
pub mod db;
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

/// What the writers of one transaction remember: project and workflow rows, test case and
/// artifact numbers looked up (so a batch of runs does not query them once per run), and the
/// rollup counts its writes added that `flush` has not written yet. Forget it (`clear`)
/// whenever a savepoint rolls back.
#[derive(Default)]
pub struct Ids {
    projects: HashMap<String, ProjectRow>,
    workflows: HashMap<(i64, String), WorkflowRow>,
    /// Test case and artifact numbers looked up or created.
    known: Known,
    rollups: Rollups,
    /// CircleCI rollup figures not written yet (src/store/rollups/circleci.rs).
    insights: rollups::circleci::Pending,
    flaky: rollups::flaky::Pending,
    /// Apigee rollup changes not written yet (src/store/rollups/apigee.rs).
    apigee: rollups::apigee::Pending,
}

/// Counts added to the Zadig rollups and not written yet, summed per rollup row (ordered by
/// key, so `flush` writes each table in key order).
#[derive(Default)]
struct Rollups {
    /// zadig_workflow_buckets: (workflow, bucket) → n.
    workflows: BTreeMap<(i64, i64), i64>,
    /// zadig_job_buckets: (project, kind, bucket, production) → finished, success, timeout,
    /// failed, duration_ms, timed.
    series: BTreeMap<(i64, &'static str, i64, bool), [i64; 6]>,
    /// zadig_artifact_buckets: (project, bucket, artifact) → n.
    artifacts: BTreeMap<(i64, i64, i64), i64>,
    /// zadig_case_buckets: (case, bucket) → n.
    cases: BTreeMap<(i64, i64), i64>,
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
        Ids {
            known,
            ..Ids::default()
        }
    }

    /// The numbers this transaction looked up or created, to `resume` the next one from; call
    /// it only once the transaction committed. Forgets them all once they hold more than
    /// `KNOWN_MAX_BYTES`, so that a writer's memory stays bounded.
    pub fn into_known(self) -> Known {
        if self.known.bytes > KNOWN_MAX_BYTES {
            return Known::default();
        }
        self.known
    }
}

/// About how much memory the numbers `Known` keeps may take: names are up to 1 KiB, so this
/// is over 1,300 test cases at the least, and some 20,000 with 100 bytes of names each.
const KNOWN_MAX_BYTES: usize = 4 << 20;
/// What one remembered number takes beside its names: the map's slot and the strings' heads.
const NUMBER_OVERHEAD: usize = 100;

/// Test case and artifact numbers of committed transactions, kept by a long-lived writer
/// (`serve`'s) so that each group of requests does not look up again the 20 cases of a run.
#[derive(Default)]
pub struct Known {
    /// zadig_test_cases.id by (project, suite, classname, name).
    cases: HashMap<CaseKey, i64>,
    /// zadig_artifacts.id by name.
    artifacts: HashMap<String, i64>,
    /// About how much memory `cases` and `artifacts` hold.
    bytes: usize,
}

type CaseKey = (i64, Option<String>, Option<String>, String);

impl Known {
    fn add_case(&mut self, key: CaseKey, id: i64) {
        self.bytes += NUMBER_OVERHEAD
            + key.1.as_ref().map_or(0, String::len)
            + key.2.as_ref().map_or(0, String::len)
            + key.3.len();
        self.cases.insert(key, id);
    }

    fn add_artifact(&mut self, name: &str, id: i64) {
        self.bytes += NUMBER_OVERHEAD + name.len();
        self.artifacts.insert(name.to_owned(), id);
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
/// the rollup counts added since the last flush (`zadig_flush`, `rollups::circleci::flush`,
/// `rollups::apigee::flush`). Call it before committing.
pub fn flush(conn: &Connection, ids: &mut Ids) -> Result<()> {
    for row in ids.workflows.values_mut().filter(|w| w.dirty) {
        conn.prepare_cached(UPDATE_MAX_NUMBER)?
            .execute(params![row.id, row.max_number])?;
        row.dirty = false;
    }
    zadig_flush(conn, &mut ids.rollups)?;
    rollups::circleci::flush(conn, &mut ids.insights)?;
    rollups::flaky::flush(conn, &mut ids.flaky)?;
    rollups::apigee::flush(conn, &mut ids.apigee)
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

const SELECT_RUN_STATE: &str = "SELECT id, status, stopped_at, workflow_id, commit_sha FROM runs
    WHERE project_id = ?1 AND ext_id = ?2";
const INSERT_RUN: &str = "INSERT INTO runs (project_id, workflow_id, ext_id, number, branch,
    commit_sha, actor, trigger, committed_at, status, created_at, started_at, stopped_at,
    credits_used, detail_url, parameters)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";
const UPDATE_RUN: &str = "UPDATE runs SET workflow_id = ?2, number = coalesce(?3, number),
    branch = ?4, commit_sha = ?5, actor = ?6, trigger = ?7, committed_at = ?8, status = ?9,
    created_at = ?10, started_at = ?11, stopped_at = ?12, credits_used = ?13, detail_url = ?14,
    parameters = ?15, rec_from = NULL, rec_ms = NULL
    WHERE id = ?1";

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

/// Upserts one run by (project, id). A stale delivery leaves the stored run as it is; its
/// jobs are merged one by one under the same rule. Call `flush` before committing.
pub fn write_run(conn: &Connection, ids: &mut Ids, run: &Run) -> Result<Upsert> {
    let project_id = project_id(
        conn,
        ids,
        &run.project,
        run.project_key.as_deref(),
        run.default_branch.as_deref(),
    )?;
    let wf = workflow(
        conn,
        ids,
        project_id,
        &run.project,
        &run.workflow,
        run.pipeline_id.as_deref(),
    )?;
    let workflow_id = wf.id;
    let existing = conn
        .prepare_cached(SELECT_RUN_STATE)?
        .query_row(params![project_id, run.id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Status>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })
        .optional()?;
    let failing = run
        .jobs
        .iter()
        .any(|j| j.tests.as_deref().is_some_and(any_failing));
    match existing {
        None => {
            let number = run.number.unwrap_or(wf.max_number + 1);
            if number > wf.max_number {
                wf.max_number = number;
                wf.dirty = true;
            }
            // A plain INSERT, not INSERT … RETURNING: SQLite buffers RETURNING rows in a
            // temporary table, which costs more than reading the new rowid back.
            conn.prepare_cached(INSERT_RUN)?.execute(params![
                project_id,
                workflow_id,
                run.id,
                number,
                run.branch,
                run.commit,
                run.actor,
                run.trigger,
                run.committed_at,
                run.status,
                run.created_at,
                run.started_at,
                run.stopped_at,
                run.credits_used,
                run.detail_url,
                run.parameters
            ])?;
            let run_id = conn.last_insert_rowid();
            rollups::circleci::added(
                conn,
                &mut ids.insights,
                run_id,
                (project_id, workflow_id),
                run,
                None,
            )?;
            rollups::flaky::mark(&mut ids.flaky, project_id, run.commit.as_deref(), failing);
            rollups::apigee::run_added(
                conn,
                &mut ids.apigee,
                run_id,
                project_id,
                workflow_id,
                run,
                None,
            )?;
            // The run's job rows first, then what each job adds: a statement run several
            // times in a row stays in the processor's caches.
            let mut job_ids = Vec::with_capacity(run.jobs.len());
            for (position, job) in run.jobs.iter().enumerate() {
                job_ids.push(insert_job_row(
                    conn,
                    run_id,
                    project_id,
                    position as i64,
                    job,
                )?);
            }
            for (job, job_id) in run.jobs.iter().zip(job_ids) {
                let place = Place::of(project_id, workflow_id, job);
                job_added(conn, ids, run_id, &place, job)?;
                if let Some(tests) = &job.tests {
                    insert_tests(conn, ids, job_id, run_id, &place, tests)?;
                }
            }
            Ok(Upsert::Created)
        }
        Some((run_id, old_status, old_stop, old_workflow, old_sha)) => {
            let mut updated = false;
            let mut run_workflow = old_workflow;
            if is_fresher(run.status, run.stopped_at, old_status, old_stop) {
                if let Some(n) = run.number.filter(|n| *n > wf.max_number) {
                    wf.max_number = n;
                    wf.dirty = true;
                }
                zadig_run_workflow(conn, run_id, workflow_id)?;
                let old = rollups::circleci::removing(conn, &mut ids.insights, run_id)?;
                let old_workflow = rollups::apigee::run_removing(conn, &mut ids.apigee, run_id)?;
                conn.prepare_cached(UPDATE_RUN)?.execute(params![
                    run_id,
                    workflow_id,
                    run.number,
                    run.branch,
                    run.commit,
                    run.actor,
                    run.trigger,
                    run.committed_at,
                    run.status,
                    run.created_at,
                    run.started_at,
                    run.stopped_at,
                    run.credits_used,
                    run.detail_url,
                    run.parameters
                ])?;
                rollups::circleci::added(
                    conn,
                    &mut ids.insights,
                    run_id,
                    (project_id, workflow_id),
                    run,
                    Some(old),
                )?;
                // A run moved to another commit takes its stored results, failing ones too.
                let moved = run.commit != old_sha;
                rollups::flaky::mark(
                    &mut ids.flaky,
                    project_id,
                    run.commit.as_deref(),
                    moved || failing,
                );
                rollups::apigee::run_added(
                    conn,
                    &mut ids.apigee,
                    run_id,
                    project_id,
                    workflow_id,
                    run,
                    Some(old_workflow),
                )?;
                updated = true;
                run_workflow = workflow_id;
            }
            // The run's commit before the write (the same as after it, unless moved).
            rollups::flaky::mark(&mut ids.flaky, project_id, old_sha.as_deref(), failing);
            for job in &run.jobs {
                merge_job(conn, ids, run_id, project_id, run_workflow, job)?;
            }
            Ok(if updated {
                Upsert::Updated
            } else {
                Upsert::Stale
            })
        }
    }
}

const INSERT_JOB: &str = "INSERT INTO jobs (run_id, project_id, ext_id, position, name, stage,
    kind, status, created_at, started_at, stopped_at, credits_used, detail_url, error_code,
    error_msg, env, cluster, service, service_type, production, artifacts)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19,
    ?20, ?21)";
const SELECT_JOB_STATE: &str =
    "SELECT id, status, stopped_at FROM jobs WHERE run_id = ?1 AND ext_id = ?2";
const NEXT_JOB_POSITION: &str =
    "SELECT coalesce(max(position), -1) + 1 FROM jobs WHERE run_id = ?1";
const UPDATE_JOB: &str = "UPDATE jobs SET name = ?2, stage = ?3, kind = ?4, status = ?5,
    created_at = ?6, started_at = ?7, stopped_at = ?8, credits_used = ?9, detail_url = ?10,
    error_code = ?11, error_msg = ?12, env = ?13, cluster = ?14, service = ?15,
    service_type = ?16, production = ?17, artifacts = ?18
    WHERE id = ?1";
const DELETE_JOB_TESTS: &str = "DELETE FROM test_results WHERE job_id = ?1";
/// The INSERTs of test results write up to 2^TEST_ROWS_LOG rows each, in power-of-two
/// sizes (20 cases: one statement of 16 rows and one of 4): a few statements a job instead of
/// one a case, and only TEST_ROWS_LOG + 1 of them in the statement cache.
const TEST_ROWS_LOG: u32 = 5;

/// The INSERT of 2^`log` test results, ten parameters a row.
fn insert_tests_sql(log: u32) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
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

fn artifacts_json(job: &Job) -> Option<String> {
    job.artifacts
        .as_ref()
        .map(|a| serde_json::to_string(a).expect("strings serialize"))
}

/// Inserts one job of a stored run, counted into the rollups; returns its row id.
fn insert_job(
    conn: &Connection,
    ids: &mut Ids,
    run_id: i64,
    place: &Place,
    position: i64,
    job: &Job,
) -> Result<i64> {
    let id = insert_job_row(conn, run_id, place.project_id, position, job)?;
    job_added(conn, ids, run_id, place, job)?;
    Ok(id)
}

/// Inserts one job's row, and nothing else; returns its row id. Count it with `job_added`.
fn insert_job_row(
    conn: &Connection,
    run_id: i64,
    project_id: i64,
    position: i64,
    job: &Job,
) -> Result<i64> {
    conn.prepare_cached(INSERT_JOB)?.execute(params![
        run_id,
        project_id,
        job.id,
        position,
        job.name,
        job.stage,
        job.kind,
        job.status,
        job.created_at,
        job.started_at,
        job.stopped_at,
        job.credits_used,
        job.detail_url,
        job.error_code,
        job.error_msg,
        job.env,
        job.cluster,
        job.service,
        job.service_type,
        job.production,
        artifacts_json(job)
    ])?;
    Ok(conn.last_insert_rowid())
}

/// Counts a job just inserted into run `run_id` into every rollup.
fn job_added(
    conn: &Connection,
    ids: &mut Ids,
    run_id: i64,
    place: &Place,
    job: &Job,
) -> Result<()> {
    zadig_job_added(conn, ids, place, job)?;
    rollups::circleci::job_added(conn, &mut ids.insights, run_id, job)?;
    rollups::apigee::job_added(&mut ids.apigee, place.project_id, place.workflow_id, job);
    Ok(())
}

/// Adds or (when fresher) updates one job of a stored run; its tests, when given, replace
/// the job's stored tests.
fn merge_job(
    conn: &Connection,
    ids: &mut Ids,
    run_id: i64,
    project_id: i64,
    workflow_id: i64,
    job: &Job,
) -> Result<()> {
    let place = Place::of(project_id, workflow_id, job);
    let existing = conn
        .prepare_cached(SELECT_JOB_STATE)?
        .query_row(params![run_id, job.id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, Status>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .optional()?;
    let job_id = match existing {
        None => {
            let position: i64 = conn
                .prepare_cached(NEXT_JOB_POSITION)?
                .query_row([run_id], |r| r.get(0))?;
            insert_job(conn, ids, run_id, &place, position, job)?
        }
        Some((job_id, old_status, old_stop)) => {
            if !is_fresher(job.status, job.stopped_at, old_status, old_stop) {
                return Ok(());
            }
            zadig_job_removing(conn, job_id)?;
            rollups::circleci::job_removing(conn, &mut ids.insights, job_id)?;
            rollups::apigee::job_removing(conn, &mut ids.apigee, job_id, place.workflow_id)?;
            conn.prepare_cached(UPDATE_JOB)?.execute(params![
                job_id,
                job.name,
                job.stage,
                job.kind,
                job.status,
                job.created_at,
                job.started_at,
                job.stopped_at,
                job.credits_used,
                job.detail_url,
                job.error_code,
                job.error_msg,
                job.env,
                job.cluster,
                job.service,
                job.service_type,
                job.production,
                artifacts_json(job)
            ])?;
            zadig_job_added(conn, ids, &place, job)?;
            rollups::circleci::job_added(conn, &mut ids.insights, run_id, job)?;
            rollups::apigee::job_added(&mut ids.apigee, place.project_id, place.workflow_id, job);
            if job.tests.is_none() {
                // The job keeps its stored tests: they count again at its new place.
                zadig_stored_tests_added(conn, job_id)?;
            }
            job_id
        }
    };
    if let Some(tests) = &job.tests {
        conn.prepare_cached(DELETE_JOB_TESTS)?.execute([job_id])?;
        insert_tests(conn, ids, job_id, run_id, &place, tests)?;
    }
    Ok(())
}

fn insert_tests(
    conn: &Connection,
    ids: &mut Ids,
    job_id: i64,
    run_id: i64,
    place: &Place,
    tests: &[TestCase],
) -> Result<()> {
    let mut rest = tests;
    while !rest.is_empty() {
        let log = rest.len().ilog2().min(TEST_ROWS_LOG);
        let (chunk, after) = rest.split_at(1 << log);
        rest = after;
        let mut stmt = conn.prepare_cached(insert_tests_sql(log))?;
        for (i, t) in chunk.iter().enumerate() {
            let at = i * 10;
            stmt.raw_bind_parameter(at + 1, job_id)?;
            stmt.raw_bind_parameter(at + 2, run_id)?;
            stmt.raw_bind_parameter(at + 3, place.project_id)?;
            stmt.raw_bind_parameter(at + 4, &t.suite)?;
            stmt.raw_bind_parameter(at + 5, &t.classname)?;
            stmt.raw_bind_parameter(at + 6, &t.name)?;
            stmt.raw_bind_parameter(at + 7, &t.file)?;
            stmt.raw_bind_parameter(at + 8, t.result)?;
            stmt.raw_bind_parameter(at + 9, t.duration)?;
            stmt.raw_bind_parameter(at + 10, &t.message)?;
        }
        stmt.raw_execute()?;
    }
    zadig_tests_added(conn, ids, place, tests)
}

const SELECT_RUN_FOR_TESTS: &str = "SELECT r.id, r.project_id, r.ext_id, r.created_at,
    r.started_at, r.stopped_at, r.workflow_id, r.commit_sha
    FROM runs r JOIN projects p ON p.id = r.project_id WHERE p.slug = ?1 AND r.ext_id = ?2";
const SELECT_JOB_BY_NAME: &str =
    "SELECT id, ext_id FROM jobs WHERE run_id = ?1 AND name = ?2 ORDER BY position LIMIT 1";
const SELECT_JOB_PLACE: &str = "SELECT name, kind, created_at, started_at FROM jobs WHERE id = ?1";
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
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, Option<String>>(7)?,
            ))
        })
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no run {run_ext_id:?} in project {slug:?}")))?;
    let (run_id, project_id, run_ext, created_at, started_at, stopped_at, workflow_id, sha) = run;
    rollups::flaky::mark(
        &mut ids.flaky,
        project_id,
        sha.as_deref(),
        any_failing(tests),
    );
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
                id: format!("{run_ext}/tests/{name}"),
                name: name.to_owned(),
                stage: Some("test".to_owned()),
                kind: Kind::Test,
                status: if failed {
                    Status::Failed
                } else {
                    Status::Success
                },
                created_at,
                started_at,
                stopped_at: stopped_at.or(started_at).or(Some(created_at)),
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
            let place = Place::of(project_id, workflow_id, &new);
            (
                insert_job(conn, ids, run_id, &place, position, &new)?,
                new.id,
                true,
            )
        }
    };
    let (job_name, kind, job_created, job_started): (String, Kind, i64, Option<i64>) = conn
        .prepare_cached(SELECT_JOB_PLACE)?
        .query_row([job_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?;
    let place = Place {
        project_id,
        workflow_id,
        kind,
        bucket: bucket_of(job_started.unwrap_or(job_created)),
    };
    zadig_tests_removing(conn, job_id)?;
    conn.prepare_cached(DELETE_JOB_TESTS)?.execute([job_id])?;
    insert_tests(conn, ids, job_id, run_id, &place, tests)?;
    Ok(Attached {
        job_id: ext_id,
        job_name,
        created_job,
    })
}

/// Whether any of `tests` failed or errored.
fn any_failing(tests: &[TestCase]) -> bool {
    tests
        .iter()
        .any(|t| matches!(t.result, TestOutcome::Failure | TestOutcome::Error))
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
    let project_id = project_id(
        conn,
        ids,
        &run.project,
        run.project_key.as_deref(),
        run.default_branch.as_deref(),
    )?;
    let existing: Option<(i64, i64, Option<String>)> = conn
        .prepare_cached(SELECT_RUN_STATE)?
        .query_row(params![project_id, run.id], |r| {
            Ok((r.get(0)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    match existing {
        None => write_run(conn, ids, run),
        Some((run_id, workflow_id, sha)) => {
            let failing = run
                .jobs
                .iter()
                .any(|j| j.tests.as_deref().is_some_and(any_failing));
            rollups::flaky::mark(&mut ids.flaky, project_id, sha.as_deref(), failing);
            for job in &run.jobs {
                merge_job(conn, ids, run_id, project_id, workflow_id, job)?;
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
macro_rules! zadig_bucket {
    () => {
        "((coalesce(j.started_at, j.created_at) - (coalesce(j.started_at, j.created_at) % 900000 + 900000) % 900000) / 900000)"
    };
}

// The statements below write `= +?1`, not `= ?1`: SQLite (3.54) re-prepares a statement that
// joins on a row chosen by a bare `= ?N` every time the value changes, which made each of them
// cost a parse and a plan per job; the unary + keeps the same seek without that.

/// ?1 job, ?2 +1 or -1: the job in its run's workflow.
const ZADIG_WORKFLOW_JOB: &str = concat!(
    "INSERT INTO zadig_workflow_buckets (workflow_id, bucket, n)
    SELECT r.workflow_id, ",
    zadig_bucket!(),
    ", ?2 FROM jobs j JOIN runs r ON r.id = j.run_id WHERE j.id = +?1
    ON CONFLICT (workflow_id, bucket) DO UPDATE SET n = n + excluded.n"
);
/// ?1 job, ?2 +1 or -1: the job in the series, when finished.
const ZADIG_SERIES_JOB: &str = concat!(
    "INSERT INTO zadig_job_buckets (project_id, kind, bucket, production, finished, success,
        timeout, failed, duration_ms, timed)
    SELECT j.project_id, j.kind, ",
    zadig_bucket!(),
    ", j.production, ?2, ?2 * (j.status = 'success'), ?2 * (j.status = 'timeout'),
        ?2 * (j.status = 'failed' OR j.status = 'error'),
        ?2 * coalesce(j.stopped_at - coalesce(j.started_at, j.created_at), 0),
        ?2 * (j.stopped_at IS NOT NULL)
    FROM jobs j WHERE j.id = +?1
      AND j.status IN ('success', 'failed', 'error', 'canceled', 'timeout', 'skipped')
    ON CONFLICT (project_id, kind, bucket, production) DO UPDATE SET
        finished = finished + excluded.finished, success = success + excluded.success,
        timeout = timeout + excluded.timeout, failed = failed + excluded.failed,
        duration_ms = duration_ms + excluded.duration_ms, timed = timed + excluded.timed"
);
/// ?1 job, ?2 +1 or -1: each distinct artifact the job lists, once.
const ZADIG_ARTIFACT_JOB: &str = concat!(
    "INSERT INTO zadig_artifact_buckets (project_id, bucket, artifact_id, n)
    SELECT j.project_id, ",
    zadig_bucket!(),
    ", d.id, ?2 FROM jobs j, json_each(j.artifacts) a JOIN zadig_artifacts d ON d.name = a.value
    WHERE j.id = +?1 AND j.artifacts IS NOT NULL GROUP BY d.id
    ON CONFLICT (project_id, bucket, artifact_id) DO UPDATE SET n = n + excluded.n"
);
/// ?1 job, ?2 +1 or -1: the stored test results of a test job, per case.
const ZADIG_CASES_JOB: &str = concat!(
    "INSERT INTO zadig_case_buckets (case_id, bucket, n)
    SELECT c.id, ",
    zadig_bucket!(),
    ", count(*) * ?2 FROM jobs j JOIN test_results t ON t.job_id = j.id
    JOIN zadig_test_cases c ON c.project_id = t.project_id AND c.name = t.name
      AND c.classname IS t.classname AND c.suite IS t.suite
    WHERE j.id = +?1 AND j.kind = 'test' GROUP BY c.id
    ON CONFLICT (case_id, bucket) DO UPDATE SET n = n + excluded.n"
);
const ZADIG_RUN_WORKFLOW: &str = "SELECT workflow_id FROM runs WHERE id = ?1";
/// ?1 run, ?2 workflow, ?3 +1 or -1: every job of the run, in that workflow.
const ZADIG_WORKFLOW_RUN: &str = concat!(
    "INSERT INTO zadig_workflow_buckets (workflow_id, bucket, n)
    SELECT ?2, ",
    zadig_bucket!(),
    " AS bucket, count(*) * ?3 FROM jobs j WHERE j.run_id = +?1 GROUP BY bucket
    ON CONFLICT (workflow_id, bucket) DO UPDATE SET n = n + excluded.n"
);

/// Where a job counts in the rollups: its project, its run's workflow, its kind and its
/// quarter-hour bucket.
struct Place {
    project_id: i64,
    workflow_id: i64,
    kind: Kind,
    bucket: i64,
}

impl Place {
    fn of(project_id: i64, workflow_id: i64, job: &Job) -> Place {
        Place {
            project_id,
            workflow_id,
            kind: job.kind,
            bucket: bucket_of(job.started_at.unwrap_or(job.created_at)),
        }
    }
}

/// The quarter-hour bucket of a job's day time, as `zadig_bucket!` computes it in SQL.
fn bucket_of(day_ms: i64) -> i64 {
    day_ms.div_euclid(900_000)
}

const SELECT_ARTIFACT: &str = "SELECT id FROM zadig_artifacts WHERE name = ?1";
const INSERT_ARTIFACT: &str = "INSERT INTO zadig_artifacts (name) VALUES (?1)";
const SELECT_CASE: &str = "SELECT id FROM zadig_test_cases
    WHERE project_id = ?1 AND name = ?2 AND classname IS ?3 AND suite IS ?4";
const INSERT_CASE: &str =
    "INSERT INTO zadig_test_cases (project_id, suite, classname, name) VALUES (?1, ?2, ?3, ?4)";
const ADD_WORKFLOW_BUCKET: &str = "INSERT INTO zadig_workflow_buckets (workflow_id, bucket, n)
    VALUES (?1, ?2, ?3)
    ON CONFLICT (workflow_id, bucket) DO UPDATE SET n = n + excluded.n";
const ADD_JOB_BUCKET: &str = "INSERT INTO zadig_job_buckets (project_id, kind, bucket,
        production, finished, success, timeout, failed, duration_ms, timed)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
    ON CONFLICT (project_id, kind, bucket, production) DO UPDATE SET
        finished = finished + excluded.finished, success = success + excluded.success,
        timeout = timeout + excluded.timeout, failed = failed + excluded.failed,
        duration_ms = duration_ms + excluded.duration_ms, timed = timed + excluded.timed";
const ADD_ARTIFACT_BUCKET: &str = "INSERT INTO zadig_artifact_buckets (project_id, bucket,
        artifact_id, n)
    VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (project_id, bucket, artifact_id) DO UPDATE SET n = n + excluded.n";
const ADD_CASE_BUCKET: &str = "INSERT INTO zadig_case_buckets (case_id, bucket, n)
    VALUES (?1, ?2, ?3)
    ON CONFLICT (case_id, bucket) DO UPDATE SET n = n + excluded.n";

/// Counts a job just inserted, or just updated, into the series, workflow and artifact
/// rollups of `ids` (written by `flush`), from the values written. Its tests are counted by
/// `zadig_tests_added`. New artifacts are numbered at once.
fn zadig_job_added(conn: &Connection, ids: &mut Ids, place: &Place, job: &Job) -> Result<()> {
    let rollups = &mut ids.rollups;
    *rollups
        .workflows
        .entry((place.workflow_id, place.bucket))
        .or_default() += 1;
    if job.status.is_terminal() {
        let key = (
            place.project_id,
            place.kind.as_str(),
            place.bucket,
            job.production,
        );
        let day = job.started_at.unwrap_or(job.created_at);
        let add = [
            1,
            i64::from(job.status == Status::Success),
            i64::from(job.status == Status::Timeout),
            i64::from(matches!(job.status, Status::Failed | Status::Error)),
            job.stopped_at.map_or(0, |stop| stop - day),
            i64::from(job.stopped_at.is_some()),
        ];
        let row = rollups.series.entry(key).or_default();
        for (sum, a) in row.iter_mut().zip(add) {
            *sum = sum
                .checked_add(a)
                .ok_or_else(|| Error::Internal("a job rollup sum overflows".into()))?;
        }
    }
    let artifacts = job.artifacts.as_deref().unwrap_or_default();
    for (i, name) in artifacts.iter().enumerate() {
        // Each distinct artifact of the job counts once.
        if artifacts[..i].contains(name) {
            continue;
        }
        let id = match ids.known.artifacts.get(name.as_str()) {
            Some(id) => *id,
            None => {
                let found = conn
                    .prepare_cached(SELECT_ARTIFACT)?
                    .query_row([name], |r| r.get(0))
                    .optional()?;
                let id = match found {
                    Some(id) => id,
                    None => {
                        conn.prepare_cached(INSERT_ARTIFACT)?.execute([name])?;
                        conn.last_insert_rowid()
                    }
                };
                ids.known.add_artifact(name, id);
                id
            }
        };
        *ids.rollups
            .artifacts
            .entry((place.project_id, place.bucket, id))
            .or_default() += 1;
    }
    Ok(())
}

/// Counts the tests just stored for a job into the test case rollup of `ids` (written by
/// `flush`), when the job is a test job. New test cases are numbered at once.
fn zadig_tests_added(
    conn: &Connection,
    ids: &mut Ids,
    place: &Place,
    tests: &[TestCase],
) -> Result<()> {
    if place.kind != Kind::Test {
        return Ok(());
    }
    for t in tests {
        let key = (
            place.project_id,
            t.suite.clone(),
            t.classname.clone(),
            t.name.clone(),
        );
        let case_id = match ids.known.cases.get(&key) {
            Some(id) => *id,
            None => {
                let found = conn
                    .prepare_cached(SELECT_CASE)?
                    .query_row(
                        params![place.project_id, t.name, t.classname, t.suite],
                        |r| r.get(0),
                    )
                    .optional()?;
                let id = match found {
                    Some(id) => id,
                    None => {
                        conn.prepare_cached(INSERT_CASE)?.execute(params![
                            place.project_id,
                            t.suite,
                            t.classname,
                            t.name
                        ])?;
                        conn.last_insert_rowid()
                    }
                };
                ids.known.add_case(key, id);
                id
            }
        };
        *ids.rollups
            .cases
            .entry((case_id, place.bucket))
            .or_default() += 1;
    }
    Ok(())
}

/// Writes the counts `rollups` holds into the rollup tables, and empties it.
fn zadig_flush(conn: &Connection, rollups: &mut Rollups) -> Result<()> {
    let Rollups {
        workflows,
        series,
        artifacts,
        cases,
    } = std::mem::take(rollups);
    let mut stmt = conn.prepare_cached(ADD_WORKFLOW_BUCKET)?;
    for ((workflow_id, bucket), n) in workflows {
        stmt.execute(params![workflow_id, bucket, n])?;
    }
    let mut stmt = conn.prepare_cached(ADD_JOB_BUCKET)?;
    for ((project_id, kind, bucket, production), [f, s, t, x, d, n]) in series {
        stmt.execute(params![
            project_id, kind, bucket, production, f, s, t, x, d, n
        ])?;
    }
    let mut stmt = conn.prepare_cached(ADD_ARTIFACT_BUCKET)?;
    for ((project_id, bucket, artifact_id), n) in artifacts {
        stmt.execute(params![project_id, bucket, artifact_id, n])?;
    }
    let mut stmt = conn.prepare_cached(ADD_CASE_BUCKET)?;
    for ((case_id, bucket), n) in cases {
        stmt.execute(params![case_id, bucket, n])?;
    }
    Ok(())
}

/// Subtracts a stored job, and its stored tests, from every rollup: call it before the job is
/// updated (the update deletes its tests; `zadig_job_added` counts the updated job).
pub fn zadig_job_removing(conn: &Connection, job_id: i64) -> Result<()> {
    conn.prepare_cached(ZADIG_WORKFLOW_JOB)?
        .execute(params![job_id, -1])?;
    conn.prepare_cached(ZADIG_SERIES_JOB)?
        .execute(params![job_id, -1])?;
    conn.prepare_cached(ZADIG_ARTIFACT_JOB)?
        .execute(params![job_id, -1])?;
    zadig_tests_removing(conn, job_id)
}

/// Subtracts the stored tests of a job from the test case rollup: call it before deleting them.
pub fn zadig_tests_removing(conn: &Connection, job_id: i64) -> Result<()> {
    conn.prepare_cached(ZADIG_CASES_JOB)?
        .execute(params![job_id, -1])?;
    Ok(())
}

/// Adds the stored tests of a job to the test case rollup at the job's place: call it after
/// updating a job whose tests stay (`zadig_job_removing` subtracted them at its old place).
fn zadig_stored_tests_added(conn: &Connection, job_id: i64) -> Result<()> {
    conn.prepare_cached(ZADIG_CASES_JOB)?
        .execute(params![job_id, 1])?;
    Ok(())
}

/// Moves a run's jobs to `workflow_id` in the workflow rollup when the run is about to change
/// workflow: call it before updating the run.
pub fn zadig_run_workflow(conn: &Connection, run_id: i64, workflow_id: i64) -> Result<()> {
    let old: i64 = conn
        .prepare_cached(ZADIG_RUN_WORKFLOW)?
        .query_row([run_id], |r| r.get(0))?;
    if old != workflow_id {
        let mut stmt = conn.prepare_cached(ZADIG_WORKFLOW_RUN)?;
        stmt.execute(params![run_id, old, -1])?;
        stmt.execute(params![run_id, workflow_id, 1])?;
    }
    Ok(())
}

/// The rollups recomputed from the stored jobs and tests (what the functions above maintain
/// one write at a time): for a database filled before they existed, and for tests.
pub const ZADIG_REBUILD: &str = concat!(
    "DELETE FROM zadig_workflow_buckets;
    DELETE FROM zadig_job_buckets;
    DELETE FROM zadig_artifact_buckets;
    DELETE FROM zadig_case_buckets;
    INSERT INTO zadig_workflow_buckets (workflow_id, bucket, n)
    SELECT r.workflow_id, ",
    zadig_bucket!(),
    " AS bucket, count(*) FROM jobs j JOIN runs r ON r.id = j.run_id
    GROUP BY r.workflow_id, bucket;
    INSERT INTO zadig_job_buckets (project_id, kind, bucket, production, finished, success,
        timeout, failed, duration_ms, timed)
    SELECT j.project_id, j.kind, ",
    zadig_bucket!(),
    " AS bucket, j.production, count(*), sum(j.status = 'success'), sum(j.status = 'timeout'),
        sum(j.status = 'failed' OR j.status = 'error'),
        coalesce(sum(j.stopped_at - coalesce(j.started_at, j.created_at)), 0),
        count(j.stopped_at)
    FROM jobs j
    WHERE j.status IN ('success', 'failed', 'error', 'canceled', 'timeout', 'skipped')
    GROUP BY j.project_id, j.kind, bucket, j.production;
    INSERT OR IGNORE INTO zadig_artifacts (name)
    SELECT a.value FROM jobs j, json_each(j.artifacts) a WHERE j.artifacts IS NOT NULL;
    INSERT INTO zadig_artifact_buckets (project_id, bucket, artifact_id, n)
    SELECT x.project_id, x.bucket, d.id, count(*) FROM (
        SELECT DISTINCT j.id, j.project_id, ",
    zadig_bucket!(),
    " AS bucket, a.value AS name
        FROM jobs j, json_each(j.artifacts) a WHERE j.artifacts IS NOT NULL) x
    JOIN zadig_artifacts d ON d.name = x.name
    GROUP BY x.project_id, x.bucket, d.id;
    INSERT INTO zadig_test_cases (project_id, suite, classname, name)
    SELECT DISTINCT t.project_id, t.suite, t.classname, t.name
    FROM jobs j JOIN test_results t ON t.job_id = j.id
    WHERE j.kind = 'test' AND NOT EXISTS (SELECT 1 FROM zadig_test_cases c
        WHERE c.project_id = t.project_id AND c.name = t.name
          AND c.classname IS t.classname AND c.suite IS t.suite);
    INSERT INTO zadig_case_buckets (case_id, bucket, n)
    SELECT c.id, ",
    zadig_bucket!(),
    " AS bucket, count(*) FROM jobs j JOIN test_results t ON t.job_id = j.id
    JOIN zadig_test_cases c ON c.project_id = t.project_id AND c.name = t.name
      AND c.classname IS t.classname AND c.suite IS t.suite
    WHERE j.kind = 'test' GROUP BY c.id, bucket;"
);

/// Recomputes the Zadig rollups from the stored jobs and tests.
pub fn zadig_rebuild(conn: &Connection) -> Result<()> {
    conn.execute_batch(ZADIG_REBUILD)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_numbers_are_kept_up_to_their_memory_bound() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::db::open(&dir.path().join("k.db")).unwrap();
        let place = Place {
            project_id: 1,
            workflow_id: 1,
            kind: Kind::Test,
            bucket: 0,
        };
        let case = |name: String| TestCase {
            suite: None,
            classname: Some("c".into()),
            name,
            file: None,
            result: crate::model::TestOutcome::Success,
            duration: None,
            message: None,
        };
        // 1,000 cases of 1,000-byte names and 1 byte of classname: about 1.1 MB.
        let tests: Vec<TestCase> = (0..1_000).map(|i| case(format!("{i:01000}"))).collect();
        let mut ids = Ids::default();
        zadig_tests_added(&conn, &mut ids, &place, &tests).unwrap();
        assert_eq!(ids.known.bytes, 1_000 * (NUMBER_OVERHEAD + 1_001));
        let known = ids.into_known();
        assert_eq!(known.cases.len(), 1_000);
        // The next transaction starts from them, and adds three times as many: over 4 MiB.
        let mut ids = Ids::resume(known);
        let more: Vec<TestCase> = (1_000..4_000).map(|i| case(format!("{i:01000}"))).collect();
        zadig_tests_added(&conn, &mut ids, &place, &more).unwrap();
        assert_eq!(ids.known.cases.len(), 4_000);
        assert!(ids.into_known().cases.is_empty());
    }

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
    fn bucket_of_agrees_with_the_sql_bucket() {
        let conn = Connection::open_in_memory().unwrap();
        let sql = concat!(
            "SELECT ",
            zadig_bucket!(),
            " FROM (SELECT ?1 AS started_at, 0 AS created_at) j"
        );
        for ms in [
            0,
            1,
            899_999,
            900_000,
            1_767_225_600_000,
            -1,
            -900_000,
            -900_001,
        ] {
            let expected: i64 = conn.query_row(sql, [ms], |r| r.get(0)).unwrap();
            assert_eq!(bucket_of(ms), expected, "{ms}");
        }
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
