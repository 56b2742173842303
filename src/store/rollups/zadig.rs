//! Upkeep of the Zadig rollups (schema.sql: `zadig_*_buckets`, `zadig_test_cases`,
//! `zadig_artifacts`), read by the Zadig surface: what the stored jobs and tests count per
//! quarter hour of their job's time (started, else created).
//!
//! Additions are summed in memory from the values written and written by `flush`; a job about
//! to be replaced is taken out by statements over its stored row (its artifacts and test
//! results included), before the update. Test case and artifact numbers are looked up once and
//! kept (`Known`): a long-lived writer keeps them across transactions, since their rows are
//! never deleted.
//!
//! Each statement computes a job's bucket as
//! `((t - (t % 900000 + 900000) % 900000) / 900000)` with `t = coalesce(j.started_at,
//! j.created_at)`: SQLite's `%` and `/` truncate toward zero, and this floors, as `bucket_of`
//! does in Rust, for times before 1970 too. The seeks write `= +?1`, not `= ?1`: SQLite
//! re-prepares a statement that joins on a row chosen by a bare `= ?N` every time the value
//! changes, a parse and a plan per job; the unary + keeps the same seek without that.

use std::collections::{BTreeMap, HashMap};

use rusqlite::{params, Connection, OptionalExtension};

use super::{Family, New, Old, RunPlace};
use crate::error::{Error, Result};
use crate::model::{Job, Kind, Status, TestCase};

/// Counts added and not written yet, summed per rollup row (ordered by key, so `flush` writes
/// each table in key order), and the numbers looked up.
#[derive(Default)]
pub struct Pending {
    sums: Sums,
    pub known: Known,
}

#[derive(Default)]
struct Sums {
    /// zadig_workflow_buckets: (workflow, bucket) → n.
    workflows: BTreeMap<(i64, i64), i64>,
    /// zadig_job_buckets: (project, kind, bucket, production).
    series: BTreeMap<(i64, &'static str, i64, bool), Series>,
    /// zadig_artifact_buckets: (project, bucket, artifact) → n.
    artifacts: BTreeMap<(i64, i64, i64), i64>,
    /// zadig_case_buckets: (case, bucket) → n.
    cases: BTreeMap<(i64, i64), i64>,
}

/// The figures of a `zadig_job_buckets` row.
#[derive(Default, Clone, Copy)]
struct Series {
    finished: i64,
    success: i64,
    timeout: i64,
    failed: i64,
    duration_ms: i64,
    timed: i64,
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

/// A test case as `Known` keeps it: (project, suite, classname, name).
struct CaseKey(i64, Option<String>, Option<String>, String);

/// A test case's key, owned (`CaseKey`) or borrowed from a `TestCase`: `Known::cases` is
/// looked up with the borrowed one, so that a lookup copies none of the case's names.
trait CaseParts {
    fn parts(&self) -> (i64, Option<&str>, Option<&str>, &str);
}

impl CaseParts for CaseKey {
    fn parts(&self) -> (i64, Option<&str>, Option<&str>, &str) {
        (self.0, self.1.as_deref(), self.2.as_deref(), &self.3)
    }
}

impl CaseParts for (i64, &TestCase) {
    fn parts(&self) -> (i64, Option<&str>, Option<&str>, &str) {
        let t = self.1;
        (self.0, t.suite.as_deref(), t.classname.as_deref(), &t.name)
    }
}

impl<'a> std::borrow::Borrow<dyn CaseParts + 'a> for CaseKey {
    fn borrow(&self) -> &(dyn CaseParts + 'a) {
        self
    }
}

// Owned and borrowed keys hash and compare by the same parts, as `Borrow` requires.
impl std::hash::Hash for CaseKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for CaseKey {
    fn eq(&self, other: &CaseKey) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for CaseKey {}

impl std::hash::Hash for dyn CaseParts + '_ {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for dyn CaseParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn CaseParts + '_ {}

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

/// ?1 job, ?2 +1 or -1: the job in its run's workflow.
const WORKFLOW_JOB: &str = "INSERT INTO zadig_workflow_buckets (workflow_id, bucket, n)
    SELECT r.workflow_id, ((coalesce(j.started_at, j.created_at) - (coalesce(j.started_at, j.created_at) % 900000 + 900000) % 900000) / 900000), ?2 FROM jobs j JOIN runs r ON r.id = j.run_id WHERE j.id = +?1
    ON CONFLICT (workflow_id, bucket) DO UPDATE SET n = n + excluded.n";
/// ?1 job, ?2 +1 or -1: the job in the series, when finished.
const SERIES_JOB: &str = "INSERT INTO zadig_job_buckets (project_id, kind, bucket, production, finished, success,
        timeout, failed, duration_ms, timed)
    SELECT j.project_id, j.kind, ((coalesce(j.started_at, j.created_at) - (coalesce(j.started_at, j.created_at) % 900000 + 900000) % 900000) / 900000), j.production, ?2, ?2 * (j.status = 'success'), ?2 * (j.status = 'timeout'),
        ?2 * (j.status = 'failed' OR j.status = 'error'),
        ?2 * coalesce(j.stopped_at - coalesce(j.started_at, j.created_at), 0),
        ?2 * (j.stopped_at IS NOT NULL)
    FROM jobs j WHERE j.id = +?1
      AND j.status IN ('success', 'failed', 'error', 'canceled', 'timeout', 'skipped')
    ON CONFLICT (project_id, kind, bucket, production) DO UPDATE SET
        finished = finished + excluded.finished, success = success + excluded.success,
        timeout = timeout + excluded.timeout, failed = failed + excluded.failed,
        duration_ms = duration_ms + excluded.duration_ms, timed = timed + excluded.timed";
/// ?1 job, ?2 +1 or -1: each distinct artifact the job lists, once.
const ARTIFACT_JOB: &str = "INSERT INTO zadig_artifact_buckets (project_id, bucket, artifact_id, n)
    SELECT j.project_id, ((coalesce(j.started_at, j.created_at) - (coalesce(j.started_at, j.created_at) % 900000 + 900000) % 900000) / 900000), d.id, ?2 FROM jobs j, json_each(j.artifacts) a JOIN zadig_artifacts d ON d.name = a.value
    WHERE j.id = +?1 AND j.artifacts IS NOT NULL GROUP BY d.id
    ON CONFLICT (project_id, bucket, artifact_id) DO UPDATE SET n = n + excluded.n";
/// ?1 job, ?2 +1 or -1: the stored test results of a test job, per case.
const CASES_JOB: &str = "INSERT INTO zadig_case_buckets (case_id, bucket, n)
    SELECT c.id, ((coalesce(j.started_at, j.created_at) - (coalesce(j.started_at, j.created_at) % 900000 + 900000) % 900000) / 900000), count(*) * ?2 FROM jobs j JOIN test_results t ON t.job_id = j.id
    JOIN zadig_test_cases c ON c.project_id = t.project_id AND c.name = t.name
      AND c.classname IS t.classname AND c.suite IS t.suite
    WHERE j.id = +?1 AND j.kind = 'test' GROUP BY c.id
    ON CONFLICT (case_id, bucket) DO UPDATE SET n = n + excluded.n";
/// ?1 run, ?2 workflow, ?3 +1 or -1: every job of the run, in that workflow.
const WORKFLOW_RUN: &str = "INSERT INTO zadig_workflow_buckets (workflow_id, bucket, n)
    SELECT ?2, ((coalesce(j.started_at, j.created_at) - (coalesce(j.started_at, j.created_at) % 900000 + 900000) % 900000) / 900000) AS bucket, count(*) * ?3 FROM jobs j WHERE j.run_id = +?1 GROUP BY bucket
    ON CONFLICT (workflow_id, bucket) DO UPDATE SET n = n + excluded.n";

/// The quarter-hour bucket of a job's day time, as the statements compute it in SQL.
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

impl Family for Pending {
    fn replacing(&mut self, conn: &Connection, old: Old) -> Result<()> {
        match old {
            Old::Run(_) => Ok(()),
            Old::Job(job) => job_removing(conn, job.id),
            Old::Tests { job_id } => tests_removing(conn, job_id),
        }
    }

    fn written(&mut self, conn: &Connection, new: New) -> Result<()> {
        match new {
            New::Run {
                id,
                workflow_id,
                old: Some(old),
                ..
            } if old.workflow_id != workflow_id => {
                // The run's jobs move with it to its new workflow.
                let mut stmt = conn.prepare_cached(WORKFLOW_RUN)?;
                stmt.execute(params![id, old.workflow_id, -1])?;
                stmt.execute(params![id, workflow_id, 1])?;
                Ok(())
            }
            New::Run { .. } => Ok(()),
            New::Job {
                id,
                at,
                job,
                kept_tests,
            } => {
                self.job_added(conn, &at, job)?;
                if kept_tests {
                    // Its stored tests, taken out at its old place, count at the new one.
                    conn.prepare_cached(CASES_JOB)?.execute(params![id, 1])?;
                }
                Ok(())
            }
            New::Tests {
                at,
                kind: Kind::Test,
                job_time,
                tests,
            } => self.tests_added(conn, at.project_id, bucket_of(job_time), tests),
            New::Tests { .. } => Ok(()),
        }
    }

    fn flush(&mut self, conn: &Connection) -> Result<()> {
        let Sums {
            workflows,
            series,
            artifacts,
            cases,
        } = std::mem::take(&mut self.sums);
        let mut stmt = conn.prepare_cached(ADD_WORKFLOW_BUCKET)?;
        for ((workflow_id, bucket), n) in workflows {
            stmt.execute(params![workflow_id, bucket, n])?;
        }
        let mut stmt = conn.prepare_cached(ADD_JOB_BUCKET)?;
        for ((project_id, kind, bucket, production), s) in series {
            stmt.execute(params![
                project_id,
                kind,
                bucket,
                production,
                s.finished,
                s.success,
                s.timeout,
                s.failed,
                s.duration_ms,
                s.timed
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
}

impl Pending {
    /// A transaction's sums that start from what committed transactions learned: test case
    /// and artifact numbers, which stay true once committed (their rows are never deleted).
    pub fn resume(known: Known) -> Pending {
        Pending {
            known,
            ..Pending::default()
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

    /// Counts a job just inserted, or just updated, into the series, workflow and artifact
    /// rollups, from the values written. New artifacts are numbered at once.
    fn job_added(&mut self, conn: &Connection, at: &RunPlace, job: &Job) -> Result<()> {
        let bucket = bucket_of(job.started_at.unwrap_or(job.created_at));
        *self
            .sums
            .workflows
            .entry((at.workflow_id, bucket))
            .or_default() += 1;
        if job.status.is_terminal() {
            let key = (at.project_id, job.kind.as_str(), bucket, job.production);
            let time = job.started_at.unwrap_or(job.created_at);
            let row = self.sums.series.entry(key).or_default();
            let overflow = || Error::Internal("a job rollup sum overflows".into());
            row.finished += 1;
            row.success += i64::from(job.status == Status::Success);
            row.timeout += i64::from(job.status == Status::Timeout);
            row.failed += i64::from(matches!(job.status, Status::Failed | Status::Error));
            if let Some(stop) = job.stopped_at {
                row.duration_ms = row
                    .duration_ms
                    .checked_add(stop - time)
                    .ok_or_else(overflow)?;
                row.timed += 1;
            }
        }
        let artifacts = job.artifacts.as_deref().unwrap_or_default();
        for (i, name) in artifacts.iter().enumerate() {
            // Each distinct artifact of the job counts once.
            if artifacts[..i].contains(name) {
                continue;
            }
            let id = match self.known.artifacts.get(name.as_str()) {
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
                    self.known.add_artifact(name, id);
                    id
                }
            };
            *self
                .sums
                .artifacts
                .entry((at.project_id, bucket, id))
                .or_default() += 1;
        }
        Ok(())
    }

    /// Counts the tests just stored for a test job of `project_id` into the test case rollup,
    /// in the job's `bucket`. New test cases are numbered at once.
    fn tests_added(
        &mut self,
        conn: &Connection,
        project_id: i64,
        bucket: i64,
        tests: &[TestCase],
    ) -> Result<()> {
        for t in tests {
            let case_id = match self.known.cases.get(&(project_id, t) as &dyn CaseParts) {
                Some(id) => *id,
                None => {
                    let found = conn
                        .prepare_cached(SELECT_CASE)?
                        .query_row(params![project_id, t.name, t.classname, t.suite], |r| {
                            r.get(0)
                        })
                        .optional()?;
                    let id = match found {
                        Some(id) => id,
                        None => {
                            conn.prepare_cached(INSERT_CASE)?.execute(params![
                                project_id,
                                t.suite,
                                t.classname,
                                t.name
                            ])?;
                            conn.last_insert_rowid()
                        }
                    };
                    let key = CaseKey(
                        project_id,
                        t.suite.clone(),
                        t.classname.clone(),
                        t.name.clone(),
                    );
                    self.known.add_case(key, id);
                    id
                }
            };
            *self.sums.cases.entry((case_id, bucket)).or_default() += 1;
        }
        Ok(())
    }
}

/// Subtracts a stored job, and its stored tests, from every rollup: before the job is updated.
fn job_removing(conn: &Connection, job_id: i64) -> Result<()> {
    conn.prepare_cached(WORKFLOW_JOB)?
        .execute(params![job_id, -1])?;
    conn.prepare_cached(SERIES_JOB)?
        .execute(params![job_id, -1])?;
    conn.prepare_cached(ARTIFACT_JOB)?
        .execute(params![job_id, -1])?;
    tests_removing(conn, job_id)
}

/// Subtracts the stored tests of a job from the test case rollup: before deleting them.
fn tests_removing(conn: &Connection, job_id: i64) -> Result<()> {
    conn.prepare_cached(CASES_JOB)?
        .execute(params![job_id, -1])?;
    Ok(())
}

/// The rollups recomputed from the stored jobs and tests (what the functions above maintain
/// one write at a time): for a database filled before they existed, and for tests.
pub const REBUILD: &str = "DELETE FROM zadig_workflow_buckets;
    DELETE FROM zadig_job_buckets;
    DELETE FROM zadig_artifact_buckets;
    DELETE FROM zadig_case_buckets;
    INSERT INTO zadig_workflow_buckets (workflow_id, bucket, n)
    SELECT r.workflow_id, ((coalesce(j.started_at, j.created_at) - (coalesce(j.started_at, j.created_at) % 900000 + 900000) % 900000) / 900000) AS bucket, count(*) FROM jobs j JOIN runs r ON r.id = j.run_id
    GROUP BY r.workflow_id, bucket;
    INSERT INTO zadig_job_buckets (project_id, kind, bucket, production, finished, success,
        timeout, failed, duration_ms, timed)
    SELECT j.project_id, j.kind, ((coalesce(j.started_at, j.created_at) - (coalesce(j.started_at, j.created_at) % 900000 + 900000) % 900000) / 900000) AS bucket, j.production, count(*), sum(j.status = 'success'), sum(j.status = 'timeout'),
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
        SELECT DISTINCT j.id, j.project_id, ((coalesce(j.started_at, j.created_at) - (coalesce(j.started_at, j.created_at) % 900000 + 900000) % 900000) / 900000) AS bucket, a.value AS name
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
    SELECT c.id, ((coalesce(j.started_at, j.created_at) - (coalesce(j.started_at, j.created_at) % 900000 + 900000) % 900000) / 900000) AS bucket, count(*) FROM jobs j JOIN test_results t ON t.job_id = j.id
    JOIN zadig_test_cases c ON c.project_id = t.project_id AND c.name = t.name
      AND c.classname IS t.classname AND c.suite IS t.suite
    WHERE j.kind = 'test' GROUP BY c.id, bucket;";

/// Recomputes the Zadig rollups from the stored jobs and tests.
pub fn rebuild(conn: &Connection) -> Result<()> {
    conn.execute_batch(REBUILD)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_numbers_are_kept_up_to_their_memory_bound() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::db::open(&dir.path().join("k.db")).unwrap();
        // One transaction, as every writer uses: not one commit per test case numbered.
        let tx = conn.unchecked_transaction().unwrap();
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
        let mut pending = Pending::default();
        pending.tests_added(&tx, 1, 0, &tests).unwrap();
        assert_eq!(pending.known.bytes, 1_000 * (NUMBER_OVERHEAD + 1_001));
        let known = pending.into_known();
        assert_eq!(known.cases.len(), 1_000);
        // The next transaction starts from them, and adds three times as many: over 4 MiB.
        let mut pending = Pending::resume(known);
        let more: Vec<TestCase> = (1_000..4_000).map(|i| case(format!("{i:01000}"))).collect();
        pending.tests_added(&tx, 1, 0, &more).unwrap();
        assert_eq!(pending.known.cases.len(), 4_000);
        assert!(pending.into_known().cases.is_empty());
    }

    /// The bucket of a job's time `t`, as every statement here writes it.
    const BUCKET: &str = "((coalesce(j.started_at, j.created_at) - (coalesce(j.started_at, \
        j.created_at) % 900000 + 900000) % 900000) / 900000)";

    #[test]
    fn bucket_of_agrees_with_the_sql_bucket() {
        for statement in [
            WORKFLOW_JOB,
            SERIES_JOB,
            ARTIFACT_JOB,
            CASES_JOB,
            WORKFLOW_RUN,
            REBUILD,
        ] {
            assert!(statement.contains(BUCKET), "{statement}");
        }
        let conn = Connection::open_in_memory().unwrap();
        let sql = format!("SELECT {BUCKET} FROM (SELECT ?1 AS started_at, 0 AS created_at) j");
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
            let expected: i64 = conn.query_row(&sql, [ms], |r| r.get(0)).unwrap();
            assert_eq!(bucket_of(ms), expected, "{ms}");
        }
    }
}
