//! The CircleCI day rollup and kept recoveries (src/store/insights.rs, src/circleci/rollup.rs)
//! against independent computations: a rebuild of them by window functions, the window-function
//! queries of src/circleci/sql.rs, and hand-worked windows that cut a failure streak.

use pipestat::hooks::circleci::{job_figures, workflow_figures, workflow_figures_exact};
use pipestat::hooks::circleci::{Branches, Scope};
use serde_json::Value;

use crate::common::{Daemon, Lcg};
use crate::history::{random_history, Job, Run, Shape, Times, BASE, DAY};

/// Hand-worked: on main, workflow ci,
///   a1 failed  03-01 23:00, stopped 23:10
///   a2 failed  03-02 01:00, stopped 01:05
///   a3 success 03-02 02:00, stopped 02:20   (recovers from a1: 3 h 10 min = 11,400 s)
///   a4 failed  03-03 10:00, stopped 10:10
///   a5 success 03-03 11:00, stopped 11:30   (recovers from a4: 80 min = 4,800 s)
/// A window that starts inside the first streak counts its recovery from the first failure
/// inside the window; one that starts after the streak's failures does not count it at all.
#[test]
fn a_window_that_cuts_a_failure_streak() {
    let d = Daemon::start(&["--now", "2026-03-10T00:00:00Z"]);
    let h = |day: i64, hh: i64, mm: i64| BASE + (day - 1) * DAY + (hh * 60 + mm) * 60_000;
    let r = |id: &str, status: &str, c: i64, s: i64| {
        Run::new(id, status, c)
            .branch(Some("main"))
            .started(Some(c))
            .stopped(Some(s))
            .credits(1)
            .json()
    };
    d.post_runs(&[
        r("a1", "failed", h(1, 23, 0), h(1, 23, 10)),
        r("a2", "failed", h(2, 1, 0), h(2, 1, 5)),
        r("a3", "success", h(2, 2, 0), h(2, 2, 20)),
        r("a4", "failed", h(3, 10, 0), h(3, 10, 10)),
        r("a5", "success", h(3, 11, 0), h(3, 11, 30)),
    ]);
    let p = "/api/v2/insights/gh/acme/api/workflows";
    let cases = [
        // (start-date, total_recoveries, mttr)
        ("2026-03-01", 2, Value::from((11_400 + 4_800) / 2)),
        ("2026-03-02T00:30:00Z", 2, Value::from((4_500 + 4_800) / 2)),
        ("2026-03-02T01:30:00Z", 1, Value::from(4_800)),
        ("2026-03-03T10:30:00Z", 0, Value::Null),
    ];
    for (start, n, mttr) in cases {
        for branch in ["", "&all-branches=true"] {
            let q = format!("?start-date={start}&end-date=2026-03-03{branch}");
            let m = &d.get_ok(&format!("{p}{q}"))["items"][0]["metrics"];
            assert_eq!(m["total_recoveries"], n, "{q}");
            assert_eq!(m["mttr"], mttr, "{q}");
            let s = &d.get_ok(&format!("{p}/ci/summary{q}"))["metrics"];
            assert_eq!(s["mttr"], mttr, "summary {q}");
        }
    }
}

/// Runs with jobs over six days on three workflows and two branches (and a few without a
/// branch), with ties in created_at, then redeliveries that change status, stop, created_at,
/// branch and workflow (fresher deliveries, so they apply) and update or add jobs. Times stay
/// in order: started, stopped and the recoveries between them are the figures checked.
const HISTORY: Shape = Shape {
    runs: 400,
    days: 6,
    batch: 37,
    redeliveries: 150,
    projects: &["gh/acme/api"],
    workflows: &["build", "deploy", "nightly"],
    branches: &[Some("main"), Some("main"), Some("feat"), None],
    job_names: &["build", "test", "lint", "deploy"],
    times: Times::Ordered,
};

/// The rollup rows and kept recoveries, in a fixed order.
pub fn kept(conn: &rusqlite::Connection) -> Vec<String> {
    crate::common::strings(
        conn,
        "SELECT concat_ws(' ', 'day', project_id, branch, workflow_id, day, total, ok, bad,
                canceled, open, credits, dur_n, dur_sum, dur_sumsq, rec_n, rec_timed, rec_sum,
                hex(durs)) FROM insights_days WHERE total <> 0
             UNION ALL SELECT concat_ws(' ', 'run', id, rec_from, rec_ms) FROM runs
                WHERE rec_from IS NOT NULL OR rec_ms IS NOT NULL
             UNION ALL SELECT concat_ws(' ', 'job day', project_id, branch, workflow_id, day, name,
                total, ok, bad, canceled, open, credits, dur_n, dur_sum, dur_sumsq, hex(durs))
                FROM insights_job_days WHERE total <> 0
             UNION ALL SELECT concat_ws(' ', 'all day', project_id, workflow_id, day, total, ok,
                bad, canceled, open, credits, dur_n, dur_sum, dur_sumsq, hex(durs))
                FROM insights_all_days WHERE total <> 0
             UNION ALL SELECT concat_ws(' ', 'all job day', project_id, workflow_id, day, name,
                total, ok, bad, canceled, open, credits, dur_n, dur_sum, dur_sumsq, hex(durs))
                FROM insights_all_job_days WHERE total <> 0
             ORDER BY 1",
    )
}

#[test]
fn rollups_match_a_rebuild_and_the_window_queries() {
    let d = Daemon::start(&["--now", "2026-03-10T00:00:00Z"]);
    random_history(&d, 7, &HISTORY);
    let mut conn = d.db();
    pipestat::hooks::register_functions(&conn).unwrap();

    // The upkeep, one write at a time, against a rebuild from scratch.
    let before = kept(&conn);
    assert!(
        before.iter().any(|r| r.starts_with("run ")),
        "no recoveries"
    );
    let tx = conn.transaction().unwrap();
    crate::common::rebuild("circleci", &tx).unwrap();
    assert_eq!(kept(&tx), before);
    tx.rollback().unwrap();

    // The rollup path against the window functions over every run, for windows on and off
    // day boundaries, inside one day, and past the data; each branch and workflow.
    let mut g = Lcg(99);
    let mut windows = vec![
        (BASE - DAY, BASE + 7 * DAY),
        (BASE, BASE + DAY),
        (BASE + DAY / 2 + 123, BASE + 3 * DAY + DAY / 4),
        (BASE + DAY + 1, BASE + DAY + 7 * 3_600_000),
        (BASE + 2 * DAY, BASE + 3 * DAY),
        (BASE + 8 * DAY, BASE + 9 * DAY),
    ];
    for _ in 0..25 {
        let a = BASE - DAY + g.next(8 * 86_400) * 1_000 + g.next(1_000);
        windows.push((a, a + 1 + g.next(4 * 86_400) * 1_000));
    }
    let ids: Vec<i64> = conn
        .prepare("SELECT id FROM workflows ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let mut compared = 0;
    let mut jobs_compared = 0;
    for (start, end) in windows {
        // `None`: all branches, the runs without one included.
        for branch in [Some("main"), Some("feat"), Some("gone"), None] {
            for wf in std::iter::once(None).chain(ids.iter().map(|&i| Some(i))) {
                let s = Scope {
                    project: 1,
                    start,
                    end,
                    branches: branch.map_or(Branches::All, Branches::One),
                    workflow: wf,
                };
                let fast = workflow_figures(&conn, &s, None, 100).unwrap();
                let exact = workflow_figures_exact(&conn, &s, None, 100).unwrap();
                let show = |v: &[pipestat::hooks::circleci::Figures]| {
                    v.iter()
                        .map(|f| {
                            let (a, dd) = (&f.agg, &f.agg.dur);
                            format!(
                                "{} {} {} {} {} {} {} {} | {} {:?} {:?} {} {:?} {:?} | {:?} {:?} | {} {:?}",
                                f.id, f.name, a.total, a.successful, a.failed, a.canceled,
                                a.unfinished, a.credits, dd.n, dd.min, dd.max, dd.sum,
                                dd.p50_x100, dd.p95_x100, a.first_at, a.last_at,
                                f.recoveries, f.mttr_ms
                            )
                        })
                        .collect::<Vec<_>>()
                };
                assert_eq!(
                    show(&fast),
                    show(&exact),
                    "window {start}..{end} {branch:?} {wf:?}"
                );
                for (f, e) in fast.iter().zip(&exact) {
                    let (x, y) = (f.agg.dur.sumsq, e.agg.dur.sumsq);
                    assert!((x - y).abs() <= 1e-12 * y.abs(), "sumsq {x} != {y}");
                }
                compared += fast.iter().filter(|f| f.agg.total > 0).count();
                let Some(wf) = wf else { continue };
                for (filter, after) in [(None, None), (Some("t"), None), (None, Some("deploy"))] {
                    let fast = job_figures(&conn, &s, filter, after, 3).unwrap();
                    let exact = pipestat::hooks::circleci::job_metrics(&conn, &s, filter, after, 3)
                        .unwrap();
                    let show = |v: &[(String, pipestat::hooks::circleci::Agg)]| {
                        v.iter()
                            .map(|(name, a)| {
                                let dd = &a.dur;
                                format!(
                                    "{name} {} {} {} {} {} {} | {} {:?} {:?} {} {:?} {:?} | {:?} {:?}",
                                    a.total, a.successful, a.failed, a.canceled, a.unfinished,
                                    a.credits, dd.n, dd.min, dd.max, dd.sum, dd.p50_x100,
                                    dd.p95_x100, a.first_at, a.last_at
                                )
                            })
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(
                        show(&fast),
                        show(&exact),
                        "jobs {filter:?} {after:?}: window {start}..{end} {branch:?} {wf}"
                    );
                    for ((_, f), (_, e)) in fast.iter().zip(&exact) {
                        let (x, y) = (f.dur.sumsq, e.dur.sumsq);
                        assert!((x - y).abs() <= 1e-12 * y.abs(), "job sumsq {x} != {y}");
                    }
                    jobs_compared += fast.len();
                }
            }
        }
    }
    assert!(compared > 100, "only {compared} non-empty comparisons");
    assert!(jobs_compared > 200, "only {jobs_compared} job comparisons");
}

/// A job day row whose duration blob lost step with its counts (written outside pipestat) is
/// an internal error in CircleCI's error shape, not a wrong median; the daemon keeps serving.
#[test]
fn a_job_day_blob_out_of_step_is_an_internal_error() {
    let d = Daemon::start(&["--now", "2026-03-10T00:00:00Z"]);
    let run = |id: &str, c: i64, job: &str, secs: i64| {
        let job = Job::new(job, "unit", "success", c)
            .started(Some(c))
            .stopped(Some(c + secs * 1000));
        Run::new(id, "success", c)
            .branch(Some("main"))
            .started(Some(c))
            .stopped(Some(c + 200_000))
            .credits(1)
            .jobs(&[job.json()])
            .json()
    };
    // Jobs of 60 s on 03-01 and 120 s on 03-02: the median of the two days is 90 s.
    let (c1, c2) = (BASE + 3_600_000, BASE + DAY + 3_600_000);
    d.post_runs(&[run("b1", c1, "j1", 60), run("b2", c2, "j2", 120)]);
    let p =
        "/api/v2/insights/gh/acme/api/workflows/ci/jobs?start-date=2026-03-01&end-date=2026-03-03";
    let ok = d.get_ok(p);
    assert_eq!(
        ok["items"][0]["metrics"]["duration_metrics"]["median"], 90,
        "{ok}"
    );

    let conn = d.db();
    let changed = conn
        .execute(
            "UPDATE insights_job_days SET durs = x'' WHERE day = ?1 AND name = 'unit'",
            [BASE / DAY],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let bad = d.get(p);
    assert_eq!(bad.status, 500, "{}", bad.text);
    let message = bad.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("durations of job \"unit\""),
        "{}",
        bad.text
    );
    assert_eq!(
        d.get("/api/v2/insights/gh/acme/api/workflows?start-date=2026-03-01&end-date=2026-03-03")
            .status,
        200
    );
}
