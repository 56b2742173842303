//! The CircleCI day rollup and kept recoveries (src/store/insights.rs, src/circleci/rollup.rs)
//! against independent computations: a rebuild of them by window functions, the window-function
//! queries of src/circleci/sql.rs, and hand-worked windows that cut a failure streak.

use pipestat::hooks::circleci::{job_figures, workflow_figures, workflow_figures_exact};
use pipestat::hooks::circleci::{Branches, Scope};
use serde_json::Value;

use crate::common::{json_time, Daemon, Lcg};

const DAY: i64 = 86_400_000;
/// 2026-03-01T00:00:00Z.
const BASE: i64 = 1_772_323_200_000;

#[allow(clippy::too_many_arguments)]
fn run(
    id: &str,
    wf: &str,
    branch: Option<&str>,
    status: &str,
    created: i64,
    started: Option<i64>,
    stopped: Option<i64>,
    credits: i64,
) -> String {
    run_with_jobs(
        id, wf, branch, status, created, started, stopped, credits, "[]",
    )
}

#[allow(clippy::too_many_arguments)]
fn run_with_jobs(
    id: &str,
    wf: &str,
    branch: Option<&str>,
    status: &str,
    created: i64,
    started: Option<i64>,
    stopped: Option<i64>,
    credits: i64,
    jobs: &str,
) -> String {
    let branch = branch.map_or("null".to_owned(), |b| format!("\"{b}\""));
    format!(
        r#"{{"id":"{id}","project":"gh/acme/api","workflow":"{wf}","branch":{branch},"status":"{status}","created_at":{},"started_at":{},"stopped_at":{},"credits_used":{credits},"jobs":{jobs}}}"#,
        json_time(Some(created)),
        json_time(started),
        json_time(stopped)
    )
}

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
        run(id, "ci", Some("main"), status, c, Some(c), Some(s), 1)
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

const STATUSES: [&str; 9] = [
    "success", "success", "success", "failed", "failed", "error", "timeout", "canceled", "running",
];

/// Up to three jobs (ids j0..j2, so a redelivery may update or add them) named from a short
/// list, with any status, starting at `from`; some have no stop, some no start.
fn random_jobs(g: &mut Lcg, from: i64, fresher: bool) -> String {
    let names = ["build", "test", "lint", "deploy"];
    let jobs: Vec<String> = (0..g.next(4))
        .map(|i| {
            let status = if fresher {
                ["success", "failed", "canceled"][g.next(3) as usize]
            } else {
                STATUSES[g.next(9) as usize]
            };
            let started = (g.next(4) > 0).then(|| from + g.next(120) * 1_000);
            let stopped = (status != "running")
                .then(|| started.unwrap_or(from) + g.next(900) * 1_000 + g.next(1_000));
            format!(
                r#"{{"id":"j{i}","name":"{}","status":"{status}","created_at":{},"started_at":{},"stopped_at":{},"credits_used":{}}}"#,
                names[g.next(4) as usize],
                json_time(Some(from)),
                json_time(started),
                json_time(stopped),
                g.next(5)
            )
        })
        .collect();
    format!("[{}]", jobs.join(","))
}

/// Runs with jobs over six days on three workflows and two branches (and a few without a
/// branch), with ties in created_at, then redeliveries that change status, stop, created_at,
/// branch and workflow (fresher deliveries, so they apply) and update or add jobs.
fn random_history(d: &Daemon, seed: u64) {
    let mut g = Lcg(seed);
    let wfs = ["build", "deploy", "nightly"];
    let branches = [Some("main"), Some("main"), Some("feat"), None];
    let mut state = Vec::new();
    let mut batch = Vec::new();
    for i in 0..400 {
        let created = BASE + g.next(6 * 24 * 60) * 60_000 + g.next(2) * 1_500;
        let status = STATUSES[g.next(9) as usize];
        let started = (g.next(5) > 0).then(|| created + g.next(60) * 1_000);
        let stopped = (status != "running")
            .then(|| started.unwrap_or(created) + g.next(1_800) * 1_000 + g.next(1_000));
        let wf = wfs[g.next(3) as usize];
        let branch = branches[g.next(4) as usize];
        let id = format!("r{i}");
        let jobs = random_jobs(&mut g, created, false);
        batch.push(run_with_jobs(
            &id,
            wf,
            branch,
            status,
            created,
            started,
            stopped,
            g.next(20),
            &jobs,
        ));
        state.push((id, created, started, stopped));
        if batch.len() == 37 {
            d.post_runs(&batch);
            batch.clear();
        }
    }
    d.post_runs(&batch);
    batch.clear();
    // Redeliveries: a terminal status with a stop no earlier than the stored one wins.
    for _ in 0..150 {
        let k = g.next(state.len() as u64) as usize;
        let (id, created, started, stopped) = state[k].clone();
        let status = ["success", "failed", "error", "timeout", "canceled"][g.next(5) as usize];
        let stop = stopped.unwrap_or(created) + g.next(3) * 60_000;
        let created = if g.next(3) == 0 {
            created + (g.next(600) - 300) * 60_000
        } else {
            created
        };
        let wf = wfs[g.next(3) as usize];
        let branch = branches[g.next(4) as usize];
        let started = started.map(|s| s.min(stop));
        let created = created.min(started.unwrap_or(stop)).min(stop);
        let jobs = random_jobs(&mut g, created + 3_600_000, true);
        batch.push(run_with_jobs(
            &id,
            wf,
            branch,
            status,
            created,
            started,
            Some(stop),
            g.next(20),
            &jobs,
        ));
        state[k] = (id, created, started, Some(stop));
        if batch.len() == 10 {
            d.post_runs(&batch);
            batch.clear();
        }
    }
    d.post_runs(&batch);
}

/// The rollup rows and kept recoveries, in a fixed order.
pub fn kept(conn: &rusqlite::Connection) -> Vec<String> {
    crate::common::strings(
        conn,
        "SELECT concat_ws(' ', 'day', project_id, branch, workflow_id, day, total, ok, bad,
                canceled, open, credits, dur_n, dur_sum, dur_sumsq, rec_n, rec_timed, rec_sum)
                FROM insights_days WHERE total <> 0
             UNION ALL SELECT concat_ws(' ', 'run', id, rec_from, rec_ms) FROM runs
                WHERE rec_from IS NOT NULL OR rec_ms IS NOT NULL
             UNION ALL SELECT concat_ws(' ', 'job day', project_id, branch, workflow_id, day, name,
                total, ok, bad, canceled, open, credits, dur_n, dur_sum, dur_sumsq, hex(durs))
                FROM insights_job_days WHERE total <> 0
             ORDER BY 1",
    )
}

#[test]
fn rollups_match_a_rebuild_and_the_window_queries() {
    let d = Daemon::start(&["--now", "2026-03-10T00:00:00Z"]);
    random_history(&d, 7);
    let mut conn = rusqlite::Connection::open(d.dir.path().join("pipestat.db")).unwrap();
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
        for branch in ["main", "feat", "gone"] {
            for wf in std::iter::once(None).chain(ids.iter().map(|&i| Some(i))) {
                let s = Scope {
                    project: 1,
                    start,
                    end,
                    branches: Branches::One(branch),
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
                    "window {start}..{end} {branch} {wf:?}"
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
                        "jobs {filter:?} {after:?}: window {start}..{end} {branch} {wf}"
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
    let job = |id: &str, c: i64, secs: i64| {
        format!(
            r#"[{{"id":"{id}","name":"unit","status":"success","created_at":{},"started_at":{},"stopped_at":{}}}]"#,
            json_time(Some(c)),
            json_time(Some(c)),
            json_time(Some(c + secs * 1000))
        )
    };
    // Jobs of 60 s on 03-01 and 120 s on 03-02: the median of the two days is 90 s.
    let (c1, c2) = (BASE + 3_600_000, BASE + DAY + 3_600_000);
    d.post_runs(&[
        run_with_jobs(
            "b1",
            "ci",
            Some("main"),
            "success",
            c1,
            Some(c1),
            Some(c1 + 200_000),
            1,
            &job("j1", c1, 60),
        ),
        run_with_jobs(
            "b2",
            "ci",
            Some("main"),
            "success",
            c2,
            Some(c2),
            Some(c2 + 200_000),
            1,
            &job("j2", c2, 120),
        ),
    ]);
    let p =
        "/api/v2/insights/gh/acme/api/workflows/ci/jobs?start-date=2026-03-01&end-date=2026-03-03";
    let ok = d.get_ok(p);
    assert_eq!(
        ok["items"][0]["metrics"]["duration_metrics"]["median"], 90,
        "{ok}"
    );

    let conn = rusqlite::Connection::open(d.dir.path().join("pipestat.db")).unwrap();
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
