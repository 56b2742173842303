//! Upkeep of `flaky_results` (schema.sql), read by CircleCI's flaky tests (`flaky` in
//! src/surfaces/circleci/sql.rs).
//!
//! A test can only flake on a commit where it failed. A *group* is one test (project, job
//! name, classname, name) on one commit; `flaky_results` holds every result, but skipped ones,
//! of each group that has a failing result (failure or error) now, with what the flaky query
//! needs from its run and job, the group as one integer (`grp`, its smallest result id) and the
//! group's previous result in (created_at, id) order (`prev_at`, `prev_bad`). The
//! flaky route then reads one index range of a small table, and finds a window's flips without
//! a window pass: a result flipped when its previous one is in the window and differs.
//!
//! The rows of a commit depend only on the stored runs of that commit, so the upkeep works
//! commit by commit: every write marks the commits of the runs it touches (the run's commit
//! before and after the write), and `flush`, before the transaction commits, recomputes
//! each marked commit that holds rows, or that a write gave a failing result. A commit that
//! holds no rows has no failing result, so a write that adds none leaves it without rows; every
//! other change (a result replaced, a job renamed or re-timed, a run moved to another commit or
//! time) happens on a commit with rows or one a failing result was written to, and is
//! recomputed. `REBUILD` computes the table from scratch; tests compare the two.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};

use super::{any_failing, Family, New, Old};
use crate::error::Result;

/// Commits touched by the writes of one transaction and not recomputed yet: (project, commit)
/// → whether a failing result was written to it.
#[derive(Default)]
pub struct Pending {
    commits: BTreeMap<(i64, String), bool>,
}

/// Marks a commit (none: the run is on no commit, so it is in no group) as touched, with
/// `failing` when the write stored a failing result on it.
fn mark(pending: &mut Pending, project_id: i64, sha: Option<&str>, failing: bool) {
    if let Some(sha) = sha {
        *pending
            .commits
            .entry((project_id, sha.to_owned()))
            .or_default() |= failing;
    }
}

impl Family for Pending {
    fn replacing(&mut self, _conn: &Connection, _old: Old) -> Result<()> {
        // What a write replaces is recomputed from the commits `written` marks.
        Ok(())
    }

    /// Marks the commits a write touches: a run's commit after the write, and before it when it
    /// was updated (a run moved to another commit takes its stored results, failing ones too);
    /// a job's run's commit (a job renamed or re-timed changes its rows); and a job's run's
    /// commit with `failing` when failing results were stored.
    fn written(&mut self, _conn: &Connection, new: New) -> Result<()> {
        match new {
            New::Run {
                project_id,
                run,
                old,
                ..
            } => {
                let commit = run.commit.as_deref();
                let moved = old.is_some_and(|o| o.commit.as_deref() != commit);
                mark(self, project_id, commit, moved);
                if let Some(old) = old {
                    mark(self, old.project_id, old.commit.as_deref(), false);
                }
            }
            New::Job { at, .. } => mark(self, at.project_id, at.commit, false),
            New::Tests { at, tests, .. } => {
                mark(self, at.project_id, at.commit, any_failing(tests))
            }
        }
        Ok(())
    }

    fn flush(&mut self, conn: &Connection) -> Result<()> {
        flush(conn, self)
    }
}

// Seeks bind `= +?N`, as in store.rs: with a bare `= ?N`, SQLite re-plans a statement whenever
// the bound value changes.

const HAS_ROWS: &str =
    "SELECT EXISTS (SELECT 1 FROM flaky_results WHERE project_id = +?1 AND sha = +?2)";
const DELETE_COMMIT: &str = "DELETE FROM flaky_results WHERE project_id = +?1 AND sha = +?2";
/// The results of one commit (?1 project, ?2 commit), skipped ones aside, with what a row of
/// `flaky_results` needs from their run and job.
const COMMIT_RESULTS: &str = "SELECT j.name, t.classname, t.name, r.created_at, t.id,
        t.result = 'failure' OR t.result = 'error', r.id,
        CASE WHEN j.stopped_at IS NOT NULL
            THEN max(j.stopped_at - coalesce(j.started_at, j.created_at), 0) END,
        t.file, t.suite
    FROM runs r INDEXED BY runs_by_commit CROSS JOIN jobs j ON j.run_id = r.id
    CROSS JOIN test_results t ON t.job_id = j.id
    WHERE r.project_id = +?1 AND r.commit_sha = +?2 AND t.result <> 'skipped'";
const INSERT_ROW: &str = "INSERT INTO flaky_results (project_id, at, result_id, grp, sha, job,
        classname, name, bad, prev_at, prev_bad, run_id, job_ms, file, suite)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

/// One result of a commit, as COMMIT_RESULTS reads it.
struct CommitResult {
    /// The group: job name, classname, test name.
    test: (String, Option<String>, String),
    at: i64,
    id: i64,
    bad: bool,
    run_id: i64,
    job_ms: Option<i64>,
    file: Option<String>,
    suite: Option<String>,
}

/// Recomputes the rows of every commit `pending` marked that holds rows or was given a
/// failing result, and empties it. Call before the transaction commits. Every such commit is
/// emptied before any is filled: a run moved between two of them has rows under the old one.
fn flush(conn: &Connection, pending: &mut Pending) -> Result<()> {
    let mut recompute = Vec::new();
    for ((project_id, sha), failing) in std::mem::take(&mut pending.commits) {
        let has_rows = || {
            conn.prepare_cached(HAS_ROWS)?
                .query_row(params![project_id, sha], |r| r.get::<_, bool>(0))
        };
        if failing || has_rows()? {
            conn.prepare_cached(DELETE_COMMIT)?
                .execute(params![project_id, sha])?;
            recompute.push((project_id, sha));
        }
    }
    for (project_id, sha) in recompute {
        fill_commit(conn, project_id, &sha)?;
    }
    Ok(())
}

/// Writes the rows one commit should hold, from its stored results: the results of each group
/// with a failing result, in (at, id) order, each with the group's smallest result id and the
/// result before it. (Window functions would say the same, but cost a few times more than the
/// reading itself on a commit of a few dozen results; `REBUILD` says it with them.)
fn fill_commit(conn: &Connection, project_id: i64, sha: &str) -> Result<()> {
    let mut results = conn
        .prepare_cached(COMMIT_RESULTS)?
        .query_map(params![project_id, sha], |r| {
            Ok(CommitResult {
                test: (r.get(0)?, r.get(1)?, r.get(2)?),
                at: r.get(3)?,
                id: r.get(4)?,
                bad: r.get(5)?,
                run_id: r.get(6)?,
                job_ms: r.get(7)?,
                file: r.get(8)?,
                suite: r.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    results.sort_unstable_by(|a, b| (&a.test, a.at, a.id).cmp(&(&b.test, b.at, b.id)));
    let mut insert = conn.prepare_cached(INSERT_ROW)?;
    for group in results.chunk_by(|a, b| a.test == b.test) {
        if !group.iter().any(|t| t.bad) {
            continue;
        }
        let grp = group.iter().map(|t| t.id).min();
        let mut prev: Option<&CommitResult> = None;
        for t in group {
            let (job, classname, name) = &t.test;
            insert.execute(params![
                project_id,
                t.at,
                t.id,
                grp,
                sha,
                job,
                classname,
                name,
                t.bad,
                prev.map(|p| p.at),
                prev.map(|p| p.bad),
                t.run_id,
                t.job_ms,
                t.file,
                t.suite
            ])?;
            prev = Some(t);
        }
    }
    Ok(())
}

/// The whole table from the stored runs, computed apart from the upkeep's statement: the
/// distinct groups of the failing results (found through the partial index tests_failed),
/// then every result of each group, as the flaky query used to read them.
pub const REBUILD: &str = "DELETE FROM flaky_results;
    INSERT INTO flaky_results (project_id, at, result_id, grp, sha, job, classname, name, bad,
        prev_at, prev_bad, run_id, job_ms, file, suite)
    SELECT r.project_id, r.created_at, t.id, min(t.id) OVER g, r.commit_sha, j.name, t.classname,
        t.name, (t.result = 'failure' OR t.result = 'error'),
        LAG(r.created_at) OVER (g ORDER BY r.created_at, t.id),
        LAG(t.result = 'failure' OR t.result = 'error') OVER (g ORDER BY r.created_at, t.id), r.id,
        CASE WHEN j.stopped_at IS NOT NULL
            THEN max(j.stopped_at - coalesce(j.started_at, j.created_at), 0) END,
        t.file, t.suite
    FROM (SELECT DISTINCT f.project_id AS p, c.commit_sha AS sha, fj.name AS job,
            f.classname AS cls, f.name AS test
        FROM test_results f INDEXED BY tests_failed CROSS JOIN runs c ON c.id = f.run_id
        CROSS JOIN jobs fj ON fj.id = f.job_id
        WHERE (f.result = 'failure' OR f.result = 'error') AND c.commit_sha IS NOT NULL) g
    CROSS JOIN runs r INDEXED BY runs_by_commit ON r.project_id = g.p AND r.commit_sha = g.sha
    CROSS JOIN jobs j ON j.run_id = r.id AND j.name = g.job
    CROSS JOIN test_results t ON t.job_id = j.id AND t.name = g.test AND t.classname IS g.cls
    WHERE t.result <> 'skipped'
    WINDOW g AS (PARTITION BY r.project_id, r.commit_sha, j.name, t.classname, t.name);";

/// Computes `flaky_results` from the stored runs (the upgrade to version 3; tests compare it
/// with the upkeep).
pub fn rebuild(conn: &Connection) -> Result<()> {
    conn.execute_batch(REBUILD)?;
    Ok(())
}
