//! Upkeep of `flaky_results` (schema.sql), read by CircleCI's flaky tests (FLAKY in
//! src/circleci/sql.rs).
//!
//! A test can only flake on a commit where it failed. A *group* is one test (project, job
//! name, classname, name) on one commit; `flaky_results` holds every result, but skipped ones,
//! of each group that has a failing result (failure or error) now, with what the flaky query
//! needs from its run and job, the group as one integer (`grp`, its smallest result id) and the
//! group's previous result in (created_at, id) order (`prev_at`, `prev_bad`, by `LAG`). The
//! flaky route then reads one index range of a small table, and finds a window's flips without
//! a window pass: a result flipped when its previous one is in the window and differs.
//!
//! The rows of a commit depend only on the stored runs of that commit, so the upkeep works
//! commit by commit: every write marks the commits of the runs it touches (`mark`: the run's
//! commit before and after the write), and `flush`, before the transaction commits, recomputes
//! each marked commit that holds rows, or that a write gave a failing result. A commit that
//! holds no rows has no failing result, so a write that adds none leaves it without rows; every
//! other change (a result replaced, a job renamed or re-timed, a run moved to another commit or
//! time) happens on a commit with rows or one a failing result was written to, and is
//! recomputed. `REBUILD` computes the table from scratch; tests compare the two.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};

use crate::error::Result;

/// Commits touched by the writes of one transaction and not recomputed yet: (project, commit)
/// → whether a failing result was written to it.
#[derive(Default)]
pub struct Pending {
    commits: BTreeMap<(i64, String), bool>,
}

/// Marks a run's commit (none: the run is on no commit, so it is in no group) as touched, with
/// `failing` when the write stored a failing result on it.
pub fn mark(pending: &mut Pending, project_id: i64, sha: Option<&str>, failing: bool) {
    if let Some(sha) = sha {
        *pending
            .commits
            .entry((project_id, sha.to_owned()))
            .or_default() |= failing;
    }
}

// Seeks bind `= +?N`, as in store.rs: with a bare `= ?N`, SQLite re-plans a statement whenever
// the bound value changes.

const HAS_ROWS: &str =
    "SELECT EXISTS (SELECT 1 FROM flaky_results WHERE project_id = +?1 AND sha = +?2)";
const DELETE_COMMIT: &str = "DELETE FROM flaky_results WHERE project_id = +?1 AND sha = +?2";
/// The rows one commit should hold, from its stored runs (?1 project, ?2 commit): every
/// result with its group's number and previous result; a window marks the groups with a
/// failing result (NULL classnames share a partition), and those are kept.
const COMMIT_ROWS: &str = "INSERT INTO flaky_results (project_id, at, result_id, grp, sha, job,
        classname, name, bad, prev_at, prev_bad, run_id, job_ms, file, suite)
    SELECT ?1, at, result_id, grp, ?2, job, classname, name, bad, prev_at, prev_bad, run_id,
        job_ms, file, suite
    FROM (SELECT r.created_at AS at, t.id AS result_id, j.name AS job, t.classname, t.name,
            (t.result = 'failure' OR t.result = 'error') AS bad, r.id AS run_id,
            CASE WHEN j.stopped_at IS NOT NULL
                THEN max(j.stopped_at - coalesce(j.started_at, j.created_at), 0) END AS job_ms,
            t.file, t.suite,
            max(t.result = 'failure' OR t.result = 'error')
                OVER (PARTITION BY j.name, t.classname, t.name) AS failed,
            min(t.id) OVER (PARTITION BY j.name, t.classname, t.name) AS grp,
            LAG(r.created_at) OVER g AS prev_at,
            LAG(t.result = 'failure' OR t.result = 'error') OVER g AS prev_bad
        FROM runs r INDEXED BY runs_by_commit CROSS JOIN jobs j ON j.run_id = r.id
        CROSS JOIN test_results t ON t.job_id = j.id
        WHERE r.project_id = +?1 AND r.commit_sha = +?2 AND t.result <> 'skipped'
        WINDOW g AS (PARTITION BY j.name, t.classname, t.name ORDER BY r.created_at, t.id))
    WHERE failed";

/// Recomputes the rows of every commit `pending` marked that holds rows or was given a
/// failing result, and empties it. Call before the transaction commits. Every such commit is
/// emptied before any is filled: a run moved between two of them has rows under the old one.
pub fn flush(conn: &Connection, pending: &mut Pending) -> Result<()> {
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
        conn.prepare_cached(COMMIT_ROWS)?
            .execute(params![project_id, sha])?;
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
