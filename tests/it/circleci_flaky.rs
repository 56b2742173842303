//! CircleCI flaky tests read `flaky_results`, kept at ingest (src/store/flaky.rs). Checked
//! here against independent computations, after a random history of runs on shared commits with
//! redeliveries and JUnit uploads: the kept table against its rebuild (a different statement),
//! and the route's query against a window query over the raw results.

use crate::common::{Daemon, Lcg};
use crate::history::{Batches, Job, Run, BASE, DAY};

/// The shape of a history: how many commits its runs share, and one result in how many fails.
#[derive(Clone, Copy)]
struct Shape {
    commits: u64,
    fail_in: u64,
}

/// A commit of `shape`, or (one run in six) none.
fn commit(g: &mut Lcg, shape: Shape) -> Option<String> {
    (g.next(6) > 0).then(|| format!("c{}", g.next(shape.commits)))
}

/// A result: failing one time in `fail_in` (failure or error), else skipped one time in eight.
fn result(g: &mut Lcg, shape: Shape) -> &'static str {
    match g.next(2 * shape.fail_in) {
        0 => "failure",
        1 => "error",
        _ if g.next(8) == 0 => "skipped",
        _ => "success",
    }
}

/// Tests as (classname, name): two share a name in different classes, one has no class.
const CASES: [(Option<&str>, &str); 4] = [
    (Some("pkg.A"), "t1"),
    (Some("pkg.A"), "t2"),
    (None, "t3"),
    (Some("pkg.B"), "t1"),
];
fn opt(v: Option<&str>) -> String {
    v.map_or("null".to_owned(), |s| format!("\"{s}\""))
}

/// Some of the cases, each with a random result, sometimes with a file and a suite.
fn random_tests(g: &mut Lcg, shape: Shape) -> String {
    let mut tests = Vec::new();
    for (cls, name) in CASES {
        if g.next(4) == 0 {
            continue;
        }
        tests.push({
            // Two files (and suites), so that a test's largest one is a choice.
            let file = [None, Some("a.py"), Some("t.py")][g.next(3) as usize];
            format!(
                r#"{{"classname":{},"name":"{name}","result":"{}","file":{},"suite":{}}}"#,
                opt(cls),
                result(g, shape),
                opt(file),
                opt(file.map(|f| &f[..1]))
            )
        });
    }
    format!("[{}]", tests.join(","))
}

/// A job `id` named from `names`, finished at a random time after `from`, with tests or
/// (when `tests` is false) none.
fn random_job(
    g: &mut Lcg,
    shape: Shape,
    id: &str,
    names: &[&str],
    from: i64,
    tests: bool,
) -> String {
    let status = g.pick(&["success", "failed"]);
    let stopped = from + g.next(900) * 1_000;
    let tests = tests.then(|| random_tests(g, shape));
    let job = Job::new(id, g.pick(names), status, from)
        .started(Some(from))
        .stopped(Some(stopped));
    match tests {
        Some(tests) => job.tests(tests).json(),
        None => job.json(),
    }
}

/// A run of workflow ci on main, on `commit`.
fn run(
    id: &str,
    status: &str,
    commit: Option<&str>,
    created: i64,
    stopped: Option<i64>,
    jobs: &[String],
) -> String {
    Run::new(id, status, created)
        .branch(Some("main"))
        .commit(commit)
        .stopped(stopped)
        .jobs(jobs)
        .json()
}

/// 160 runs over four days on five commits (and some on none), then redeliveries that move runs
/// to other commits and times, rename, re-time and empty jobs, and add jobs to stored runs,
/// and JUnit uploads that replace a job's results.
fn random_history(d: &Daemon, seed: u64, shape: Shape) {
    let mut g = Lcg(seed);
    let mut state = Vec::new();
    let mut batch = Batches::new(d, 23);
    for i in 0..160 {
        let created = BASE + g.next(4 * 24 * 60) * 60_000 + g.next(2) * 1_500;
        let stopped = created + 600_000 + g.next(600) * 1_000;
        let commit = commit(&mut g, shape);
        let mut jobs = vec![random_job(
            &mut g,
            shape,
            "j0",
            &["unit", "integ"],
            created,
            true,
        )];
        if g.next(2) == 0 {
            jobs.push(random_job(
                &mut g,
                shape,
                "j1",
                &["unit", "e2e"],
                created,
                true,
            ));
        }
        let id = format!("r{i}");
        let status = g.pick(&["success", "failed"]);
        batch.push(run(
            &id,
            status,
            commit.as_deref(),
            created,
            Some(stopped),
            &jobs,
        ));
        state.push((id, created, stopped));
    }
    batch.flush();
    let mut batch = Batches::new(d, 7);
    for step in 0..90 {
        let k = g.next(state.len() as u64) as usize;
        let (id, created, stopped) = state[k].clone();
        match g.next(3) {
            // Fresher: maybe another commit and time; job j0 updated, with or without tests
            // (an update without tests drops the job's results), maybe renamed. The stop is a
            // minute later, or the new created_at when that is later still.
            0 => {
                let created = if g.next(2) == 0 {
                    created + (g.next(240) - 120) * 60_000
                } else {
                    created
                };
                let stop = (stopped + 60_000).max(created);
                let commit = commit(&mut g, shape);
                let with_tests = g.next(2) == 0;
                let jobs = [random_job(
                    &mut g,
                    shape,
                    "j0",
                    &["unit", "integ", "e2e"],
                    created,
                    with_tests,
                )];
                let status = g.pick(&["success", "failed"]);
                batch.push(run(
                    &id,
                    status,
                    commit.as_deref(),
                    created,
                    Some(stop),
                    &jobs,
                ));
                state[k] = (id, created, stop);
            }
            // Stale: the run stays, a new job with tests joins it.
            1 => {
                let jobs = [random_job(
                    &mut g,
                    shape,
                    &format!("x{step}"),
                    &["unit", "integ"],
                    created,
                    true,
                )];
                batch.push(run(&id, "running", Some("c0"), created, None, &jobs));
            }
            // A JUnit report replaces the results of the run's job "unit" (created if missing).
            _ => {
                batch.flush();
                let mut cases = String::new();
                for (cls, name) in CASES {
                    if g.next(3) == 0 {
                        continue;
                    }
                    cases.push_str(&{
                        let outcome = match result(&mut g, shape) {
                            "failure" => "<failure message=\"no\"/>",
                            "error" => "<error message=\"boom\"/>",
                            "skipped" => "<skipped/>",
                            _ => "",
                        };
                        let cls = cls.map_or(String::new(), |c| format!(" classname=\"{c}\""));
                        format!("<testcase{cls} name=\"{name}\">{outcome}</testcase>")
                    });
                }
                let xml = format!("<testsuite name=\"s\">{cases}</testsuite>");
                let a = d.post_xml(
                    &format!("/api/v1/runs/gh/acme/api/{id}/tests?job=unit"),
                    xml.as_bytes(),
                );
                assert_eq!(a.status, 200, "{}", a.text);
            }
        }
    }
    batch.flush();
}

pub fn kept(conn: &rusqlite::Connection) -> Vec<String> {
    crate::common::strings(
        conn,
        "SELECT concat_ws(' ', project_id, at, result_id, grp, sha, job, quote(classname), name, bad,
                quote(prev_at), quote(prev_bad),
                run_id, quote(job_ms), quote(file), quote(suite))
             FROM flaky_results ORDER BY project_id, at, result_id",
    )
}

/// Flaky tests by the definition, from the raw tables: every result (not skipped) in the
/// window on a known commit, flips by LAG per test and commit, the failing jobs' durations on
/// the commits with a flip, their largest file and suite, and the run of the latest flip.
const REFERENCE: &str = "WITH res AS (SELECT j.name AS job, t.classname AS cls, t.name AS test,
        r.commit_sha AS sha, r.created_at AS at, t.id AS tid, r.id AS run,
        (t.result = 'failure' OR t.result = 'error') AS bad, t.file AS file, t.suite AS suite,
        CASE WHEN j.stopped_at IS NOT NULL
            THEN max(j.stopped_at - coalesce(j.started_at, j.created_at), 0) END AS jdur
        FROM runs r JOIN jobs j ON j.run_id = r.id JOIN test_results t ON t.job_id = j.id
        WHERE r.project_id = ?1 AND r.created_at >= ?2 AND r.created_at < ?3
          AND r.commit_sha IS NOT NULL AND t.result <> 'skipped'),
    flips AS (SELECT *, coalesce(bad <> LAG(bad) OVER (PARTITION BY job, cls, test, sha
        ORDER BY at, tid), 0) AS flip FROM res),
    commits AS (SELECT job, cls, test, sha, sum(flip) AS n,
        total(CASE WHEN bad THEN jdur ELSE 0 END) AS wasted, max(file) AS file,
        max(suite) AS suite FROM flips
        GROUP BY job, cls, test, sha HAVING sum(flip) > 0),
    latest AS (SELECT job, cls, test, run, at, ROW_NUMBER() OVER (PARTITION BY job, cls, test
        ORDER BY at DESC, tid DESC) AS k FROM flips WHERE flip)
    SELECT c.job, c.cls, c.test, sum(c.n), CAST(total(c.wasted) AS INTEGER), l.at, r.ext_id,
        max(c.file), max(c.suite), r.number, w.name
    FROM commits c JOIN latest l ON l.job = c.job AND l.cls IS c.cls AND l.test = c.test AND l.k = 1
    JOIN runs r ON r.id = l.run JOIN workflows w ON w.id = r.workflow_id
    GROUP BY c.job, c.cls, c.test ORDER BY c.job, c.cls, c.test";

/// Two shapes: a few commits where most tests fail somewhere (every commit keeps rows), and
/// many commits with rare failures (most commits keep none, so a write must notice the failing
/// results it brings to a commit).
#[test]
fn kept_results_match_a_rebuild_and_the_flakes_of_the_raw_results() {
    let dense = Shape {
        commits: 5,
        fail_in: 4,
    };
    let sparse = Shape {
        commits: 80,
        fail_in: 16,
    };
    for (seed, shape) in [(11, dense), (12, sparse)] {
        check_history(seed, shape);
    }
}

fn check_history(seed: u64, shape: Shape) {
    let d = Daemon::start(&["--now", "2026-03-10T00:00:00Z"]);
    random_history(&d, seed, shape);
    // The same writes keep the Zadig rollups exact too (jobs re-timed and emptied, tests
    // replaced).
    crate::zadig::assert_rollups_exact(&d);
    let mut conn = d.db();

    let before = kept(&conn);
    assert!(before.len() > 20, "too few kept results: {}", before.len());
    let tx = conn.transaction().unwrap();
    crate::common::rebuild("flaky", &tx).unwrap();
    assert_eq!(kept(&tx), before);
    tx.rollback().unwrap();

    let mut g = Lcg(5);
    let mut windows = vec![(BASE - DAY, BASE + 5 * DAY), (BASE + DAY, BASE + 2 * DAY)];
    for _ in 0..20 {
        let a = BASE - DAY / 2 + g.next(5 * 86_400) * 1_000;
        windows.push((a, a + 1 + g.next(3 * 86_400) * 1_000));
    }
    let mut flaky_seen = 0;
    for (start, end) in windows {
        let fast: Vec<String> = pipestat::hooks::circleci::flaky(&conn, 1, start, end)
            .unwrap()
            .into_iter()
            .map(|f| {
                format!(
                    "{} {:?} {} {} {} {} {} {:?} {:?} {} {}",
                    f.job,
                    f.classname,
                    f.name,
                    f.times_flaked,
                    f.time_wasted,
                    f.workflow_created_at,
                    f.workflow_id,
                    f.file,
                    f.suite,
                    f.pipeline_number,
                    f.workflow_name
                )
            })
            .collect();
        let reference: Vec<String> = conn
            .prepare(REFERENCE)
            .unwrap()
            .query_map([1, start, end], |r| {
                Ok(format!(
                    "{} {:?} {} {} {} {} {} {:?} {:?} {} {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, Option<String>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, i64>(9)?,
                    r.get::<_, String>(10)?
                ))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(fast, reference, "seed {seed}, window {start}..{end}");
        flaky_seen += fast.len();
    }
    assert!(
        flaky_seen > 20,
        "seed {seed}: too few flaky tests: {flaky_seen}"
    );
}
