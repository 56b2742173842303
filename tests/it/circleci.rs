//! The CircleCI Insights surface (docs/circleci.md) through the real binary, on hand-worked data.
//!
//! The daemon's clock is fixed with `--now 2026-03-10T00:00:00Z`. Unless a test says otherwise
//! the project is gh/acme/api with default branch main.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::common::{create_token, Daemon};
use crate::history::Run;

const NOW: &str = "2026-03-10T00:00:00Z";
const P: &str = "/api/v2/insights/gh/acme/api";

fn daemon() -> Daemon {
    Daemon::start(&["--now", NOW])
}

/// UTC milliseconds of "HH:MM:SS" on 2026-03-01, or of an RFC 3339 time (one that holds a
/// 'T'), computed here independently of pipestat.
fn at(t: &str) -> i64 {
    let t = if t.contains('T') {
        t.to_owned()
    } else {
        format!("2026-03-01T{t}Z")
    };
    let t = OffsetDateTime::parse(&t, &Rfc3339).expect("valid time");
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// A run of gh/acme/api: `times` are (created, started, stopped) as for [`at`]; an empty
/// string means absent.
#[allow(clippy::too_many_arguments)]
fn run(
    id: &str,
    wf: &str,
    branch: &str,
    status: &str,
    created: &str,
    started: &str,
    stopped: &str,
    credits: i64,
    extra: &str,
) -> String {
    let mut r = Run::new(id, status, at(created))
        .workflow(wf)
        .branch(Some(branch))
        .credits(credits)
        .extra(extra);
    if !started.is_empty() {
        r = r.started(Some(at(started)));
    }
    if !stopped.is_empty() {
        r = r.stopped(Some(at(stopped)));
    }
    r.json()
}

fn close(a: &Value, b: f64) {
    let a = a.as_f64().unwrap_or_else(|| panic!("{a} is not a number"));
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

/// Workflow "ci" on main and on feat, interleaved, on 2026-03-01:
///
/// main: r1 failed  10:00 (started 10:00:00, stopped 10:01:40: 100 s, 10 credits)
///       r2 canceled 10:10 (10:10:00 → 10:10:30: 30 s, 2 credits)
///       r3 success 10:20 (10:20:00 → 10:23:20: 200 s, 10 credits)
///       r4 running 10:30 (started, no stop: no duration, 0 credits)
///       r5 success 10:40 (10:40:00 → 10:45:00: 300 s, 5 credits)
/// feat: f1 failed  10:05 (10:05:00 → 10:06:00), f2 error 10:15 (10:15:00 → 10:16:40),
///       f3 success 10:25 (10:25:00 → 10:27:00)
/// plus c1, a success on main on 2026-03-05 (100 s, 4 credits), outside 2026-03-01.
fn ci_runs() -> Vec<String> {
    vec![
        run(
            "r1", "ci", "main", "failed", "10:00:00", "10:00:00", "10:01:40", 10, "",
        ),
        run(
            "f1", "ci", "feat", "failed", "10:05:00", "10:05:00", "10:06:00", 1, "",
        ),
        run(
            "r2", "ci", "main", "canceled", "10:10:00", "10:10:00", "10:10:30", 2, "",
        ),
        run(
            "f2", "ci", "feat", "error", "10:15:00", "10:15:00", "10:16:40", 1, "",
        ),
        run(
            "r3", "ci", "main", "success", "10:20:00", "10:20:00", "10:23:20", 10, "",
        ),
        run(
            "f3", "ci", "feat", "success", "10:25:00", "10:25:00", "10:27:00", 1, "",
        ),
        run(
            "r4", "ci", "main", "running", "10:30:00", "10:30:00", "", 0, "",
        ),
        run(
            "r5", "ci", "main", "success", "10:40:00", "10:40:00", "10:45:00", 5, "",
        ),
        run(
            "c1",
            "ci",
            "main",
            "success",
            "2026-03-05T12:00:00Z",
            "2026-03-05T12:00:00Z",
            "2026-03-05T12:01:40Z",
            4,
            "",
        ),
    ]
}

#[test]
fn workflow_metrics_by_the_definitions() {
    let d = daemon();
    d.post_runs(&ci_runs());
    // 2026-03-01 alone: a date as end-date includes its day, so the window is 1 day.
    let body = d.get_ok(&format!(
        "{P}/workflows?start-date=2026-03-01&end-date=2026-03-01"
    ));
    assert_eq!(body["next_page_token"], Value::Null);
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    let w = &items[0];
    assert_eq!(w["name"], "ci");
    assert!(w["project_id"].as_str().unwrap().len() == 36);
    // The default branch main: r1..r5.
    assert_eq!(w["window_start"], "2026-03-01T10:00:00.000Z");
    assert_eq!(w["window_end"], "2026-03-01T10:40:00.000Z");
    let m = &w["metrics"];
    assert_eq!(m["total_runs"], 5);
    assert_eq!(m["successful_runs"], 2);
    assert_eq!(m["failed_runs"], 1);
    // success / (total − canceled − running) = 2 / (5 − 1 − 1) = 2/3.
    close(&m["success_rate"], 2.0 / 3.0);
    // 5 runs over a 1-day window.
    close(&m["throughput"], 5.0);
    // 10 + 2 + 10 + 0 + 5.
    assert_eq!(m["total_credits_used"], 27);
    // One recovery on main: r1 stopped 10:01:40, r3 (after the canceled r2) stopped 10:23:20:
    // 21 min 40 s = 1300 s. The running r4 neither breaks nor makes a streak.
    assert_eq!(m["mttr"], 1300);
    assert_eq!(m["total_recoveries"], 1);
    // Durations 30, 100, 200, 300 s (r4 has none): an even count.
    // median: h = 3 × 0.5 = 1.5 → 100 + 0.5 × (200 − 100) = 150.
    // p95: h = 3 × 0.95 = 2.85 → 200 + 0.85 × (300 − 200) = 285.
    // mean 630 / 4 = 157.5 → 158 (half away from zero).
    let dm = &m["duration_metrics"];
    assert_eq!(dm["min"], 30);
    assert_eq!(dm["max"], 300);
    assert_eq!(dm["median"], 150);
    assert_eq!(dm["p95"], 285);
    assert_eq!(dm["mean"], 158);
    // Population: deviations −127.5, −57.5, 42.5, 142.5; squares sum to 41675; / 4 = 10418.75.
    close(&dm["standard_deviation"], 10418.75f64.sqrt());
}

#[test]
fn mttr_is_per_branch_over_all_branches() {
    let d = daemon();
    d.post_runs(&ci_runs());
    let body = d.get_ok(&format!(
        "{P}/workflows?all-branches=true&start-date=2026-03-01&end-date=2026-03-01"
    ));
    let m = &body["items"][0]["metrics"];
    // All 8 runs of the day; successes r3, r5, f3; failures r1, f1, f2.
    assert_eq!(m["total_runs"], 8);
    assert_eq!(m["failed_runs"], 3);
    // 3 / (8 − 1 canceled − 1 running) = 0.5.
    close(&m["success_rate"], 0.5);
    // Per branch: main recovers in 1300 s; feat's streak f1, f2 starts at f1's stop 10:06:00
    // and ends at f3's stop 10:27:00: 1260 s. Two recoveries, mean 1280 s. (Taken across
    // branches in time order there would be one: r1 … r3, f3 following a success.)
    assert_eq!(m["total_recoveries"], 2);
    assert_eq!(m["mttr"], 1280);
    // The same through an explicit branch.
    let feat = d.get_ok(&format!(
        "{P}/workflows?branch=feat&start-date=2026-03-01&end-date=2026-03-01"
    ));
    assert_eq!(feat["items"][0]["metrics"]["mttr"], 1260);
    assert_eq!(feat["items"][0]["metrics"]["total_runs"], 3);
}

#[test]
fn ties_and_a_single_run() {
    let d = daemon();
    // Two runs created at the same instant: ties go by run id, so "t-a" (failed) comes before
    // "t-b" (success) although t-b is stored first: one recovery, from 11:00:10 to 11:00:40 = 30 s.
    // Then a single run of 2.5 s in workflow "solo": every figure is 2.5 → 3 (half away from zero).
    d.post_runs(&[
        run(
            "t-b", "tie", "main", "success", "11:00:00", "11:00:00", "11:00:40", 0, "",
        ),
        run(
            "t-a", "tie", "main", "failed", "11:00:00", "11:00:00", "11:00:10", 0, "",
        ),
        run(
            "s1",
            "solo",
            "main",
            "success",
            "12:00:00",
            "12:00:00.000",
            "12:00:02.500",
            0,
            "",
        ),
    ]);
    let body = d.get_ok(&format!("{P}/workflows"));
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    // Sorted by name: solo, tie.
    assert_eq!(items[0]["name"], "solo");
    let dm = &items[0]["metrics"]["duration_metrics"];
    for k in ["min", "max", "mean", "median", "p95"] {
        assert_eq!(dm[k], 3, "{k}: {dm}");
    }
    close(&dm["standard_deviation"], 0.0);
    assert_eq!(items[0]["metrics"]["mttr"], Value::Null);
    assert_eq!(items[0]["metrics"]["total_recoveries"], 0);
    // 1 run over the default 90 days.
    close(&items[0]["metrics"]["throughput"], 1.0 / 90.0);
    assert_eq!(items[1]["name"], "tie");
    assert_eq!(items[1]["metrics"]["total_recoveries"], 1);
    assert_eq!(items[1]["metrics"]["mttr"], 30);
}

#[test]
fn summary_trends_against_the_previous_window() {
    let d = daemon();
    d.post_runs(&ci_runs());
    // last-7-days: [03-03, 03-10] holds c1 only (100 s, 4 credits, success); the previous 7 days
    // [02-24, 03-03) hold r1..r5 of main (see workflow_metrics_by_the_definitions).
    let s = d.get_ok(&format!(
        "{P}/workflows/ci/summary?reporting-window=last-7-days"
    ));
    let m = &s["metrics"];
    assert_eq!(m["total_runs"], 1);
    assert_eq!(m["window_start"], "2026-03-05T12:00:00.000Z");
    assert_eq!(m["duration_metrics"]["p95"], 100);
    assert_eq!(m["mttr"], Value::Null);
    let t = &s["trends"];
    close(&t["total_runs"], 1.0 / 5.0);
    close(&t["failed_runs"], 0.0); // 0 ÷ 1
    close(&t["success_rate"], 1.0 / (2.0 / 3.0)); // 1.5
    close(&t["p95_duration_secs"], 100.0 / 285.0);
    close(&t["median_duration_secs"], 100.0 / 150.0);
    close(&t["total_credits_used"], 4.0 / 27.0);
    close(&t["mttr"], 0.0); // none now ÷ 1300 s before
    close(&t["throughput"], (1.0 / 7.0) / (5.0 / 7.0));
    assert_eq!(s["workflow_names"], json!(["ci"]));

    // Previous window empty, current not: -1.0; both empty: 1.0.
    let s = d.get_ok(&format!(
        "{P}/workflows/ci/summary?start-date=2026-03-01&end-date=2026-03-01"
    ));
    close(&s["trends"]["total_runs"], -1.0);
    close(&s["trends"]["mttr"], -1.0);
    let s = d.get_ok(&format!("{P}/workflows/ci/summary?branch=nothing"));
    assert_eq!(s["metrics"]["total_runs"], 0);
    close(&s["metrics"]["success_rate"], 0.0);
    for k in [
        "total_runs",
        "failed_runs",
        "success_rate",
        "mttr",
        "throughput",
    ] {
        close(&s["trends"][k], 1.0);
    }
    // branches= (repeated) selects a set: main and feat on 2026-03-01 are the 8 runs.
    let s = d.get_ok(&format!("{P}/workflows/ci/summary?branches=main&branches=feat&start-date=2026-03-01&end-date=2026-03-01"),
    );
    assert_eq!(s["metrics"]["total_runs"], 8);
    assert_eq!(s["metrics"]["mttr"], 1280);
}

#[test]
fn recent_runs_page_across_a_boundary() {
    let d = daemon();
    // 150 runs of "many": the first 80 share one created_at (ties ordered by storage), the
    // others one minute apart. A running one has no duration, stopped_at or status.
    let mut runs = Vec::new();
    for i in 0..150 {
        let created = if i < 80 {
            "2026-03-02T00:00:00Z".to_owned()
        } else {
            format!("2026-03-02T{:02}:{:02}:00Z", (i - 79) / 60, (i - 79) % 60)
        };
        let (status, stop) = if i == 149 {
            ("running", String::new())
        } else {
            ("success", created.replace(":00Z", ":30Z"))
        };
        runs.push(run(
            &format!("m{i:03}"),
            "many",
            "main",
            status,
            &created,
            &created,
            &stop,
            1,
            "",
        ));
    }
    d.post_runs(&runs);
    let first = d.get_ok(&format!("{P}/workflows/many"));
    let items = first["items"].as_array().unwrap();
    assert_eq!(items.len(), 100);
    // Newest first: m149, still running.
    assert_eq!(items[0]["id"], "m149");
    assert_eq!(items[0]["status"], Value::Null);
    assert_eq!(items[0]["duration"], Value::Null);
    assert_eq!(items[0]["stopped_at"], Value::Null);
    assert_eq!(items[1]["id"], "m148");
    assert_eq!(items[1]["status"], "success");
    assert_eq!(items[1]["duration"], 30);
    assert_eq!(items[1]["is_approval"], false);
    assert_eq!(items[1]["branch"], "main");
    assert_eq!(items[1]["credits_used"], 1);
    let token = first["next_page_token"].as_str().expect("a next page");
    let second = d.get_ok(&format!("{P}/workflows/many?page-token={token}"));
    let rest = second["items"].as_array().unwrap();
    assert_eq!(rest.len(), 50);
    assert_eq!(second["next_page_token"], Value::Null);
    let mut ids: Vec<&str> = items
        .iter()
        .chain(rest)
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 150, "no run twice, none missing");
}

#[test]
fn jobs_metrics_job_runs_and_time_series() {
    let d = daemon();
    // unit-test and hold run at 10:00 on `day`, the day of their run.
    let jobs = |build: (&str, &str), test_status: &str, day: &str| {
        format!(
            r#""jobs":[{{"name":"build","status":"success","started_at":"{}","stopped_at":"{}","credits_used":3}},
                {{"name":"unit-test","status":"{test_status}","started_at":"{day}T10:00:00Z","stopped_at":"{day}T10:00:10Z","credits_used":1}},
                {{"name":"hold","kind":"approval","status":"success","started_at":"{day}T10:00:00Z","stopped_at":"{day}T10:00:01Z"}}]"#,
            build.0, build.1
        )
    };
    d.post_runs(&[
        // build: 60 s and 120 s; unit-test fails once of two.
        run(
            "j1",
            "ci",
            "main",
            "failed",
            "10:00:00",
            "10:00:00",
            "10:05:00",
            4,
            &jobs(
                ("2026-03-01T10:00:00Z", "2026-03-01T10:01:00Z"),
                "failed",
                "2026-03-01",
            ),
        ),
        run(
            "j2",
            "ci",
            "main",
            "success",
            "2026-03-02T10:00:00Z",
            "2026-03-02T10:00:00Z",
            "2026-03-02T10:05:00Z",
            4,
            &jobs(
                ("2026-03-02T10:00:00Z", "2026-03-02T10:02:00Z"),
                "success",
                "2026-03-02",
            ),
        ),
    ]);
    let body = d.get_ok(&format!("{P}/workflows/ci/jobs"));
    let items = body["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["build", "hold", "unit-test"]);
    let b = &items[0]["metrics"];
    assert_eq!(b["total_runs"], 2);
    assert_eq!(b["total_credits_used"], 6);
    // Two durations 60, 120: median 90; p95 h = 0.95 → 60 + 0.95 × 60 = 117.
    assert_eq!(b["duration_metrics"]["median"], 90);
    assert_eq!(b["duration_metrics"]["p95"], 117);
    assert_eq!(b["duration_metrics"]["mean"], 90);
    close(&b["duration_metrics"]["standard_deviation"], 30.0);
    assert!(b.get("mttr").is_none());
    close(&items[2]["metrics"]["success_rate"], 0.5);
    assert_eq!(items[2]["metrics"]["failed_runs"], 1);
    // job-name is a substring filter.
    let body = d.get_ok(&format!("{P}/workflows/ci/jobs?job-name=test"));
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert_eq!(body["items"][0]["name"], "unit-test");

    // Recent runs of one job, newest first; the approval job marks its runs.
    let body = d.get_ok(&format!("{P}/workflows/ci/jobs/build"));
    let runs = body["items"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["duration"], 120);
    assert_eq!(runs[0]["started_at"], "2026-03-02T10:00:00.000Z");
    assert_eq!(runs[1]["duration"], 60);
    assert_eq!(runs[0]["status"], "success");
    let wf = d.get_ok(&format!("{P}/workflows/ci"));
    assert_eq!(wf["items"][0]["is_approval"], true);

    // Daily series: build has one run on each of 03-01 and 03-02.
    let body =
        d.get_ok("/api/v2/insights/time-series/gh/acme/api/workflows/ci/jobs?granularity=daily");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 6, "3 jobs × 2 days: {body}");
    assert_eq!(items[0]["name"], "build");
    assert_eq!(items[0]["timestamp"], "2026-03-01T00:00:00.000Z");
    assert_eq!(items[0]["min_started_at"], "2026-03-01T10:00:00.000Z");
    assert_eq!(items[0]["max_ended_at"], "2026-03-01T10:01:00.000Z");
    let m = &items[0]["metrics"];
    assert_eq!(m["total_runs"], 1);
    assert_eq!(m["median_credits_used"], 3);
    assert_eq!(m["duration_metrics"]["total"], 60);
    close(&m["throughput"], 1.0);
    // Hourly: 1 run in a 1/24-day bucket is 24 runs a day.
    let body =
        d.get_ok("/api/v2/insights/time-series/gh/acme/api/workflows/ci/jobs?granularity=hourly");
    close(&body["items"][0]["metrics"]["throughput"], 24.0);
    assert_eq!(body["items"][0]["timestamp"], "2026-03-01T10:00:00.000Z");
}

/// A run of workflow "t" with one test job holding `tests` as (name, result, duration).
fn test_run(id: &str, created: &str, commit: &str, tests: &[(&str, &str, f64)]) -> String {
    let ts: Vec<String> = tests
        .iter()
        .map(|(n, r, d)| {
            format!(r#"{{"name":"{n}","classname":"m.T","result":"{r}","duration":{d}}}"#)
        })
        .collect();
    let failed = tests.iter().any(|t| t.1 == "failure");
    run(
        id,
        "t",
        "main",
        if failed { "failed" } else { "success" },
        created,
        created,
        created,
        0,
        &format!(
            r#""commit":"{commit}","jobs":[{{"name":"unit","kind":"test","status":"{}","tests":[{}]}}]"#,
            if failed { "failed" } else { "success" },
            ts.join(",")
        ),
    )
}

#[test]
fn test_metrics_over_the_ten_most_recent_runs() {
    let d = daemon();
    let mut runs = Vec::new();
    // Two old runs where "old" fails: they are the 11th and 12th most recent, so left out.
    for i in 0..2 {
        runs.push(test_run(
            &format!("o{i}"),
            &format!("2026-03-0{}T00:00:00Z", i + 1),
            "c0",
            &[("old", "failure", 1.0), ("a", "success", 1.0)],
        ));
    }
    // Ten recent runs: "a" passes in 1 s each time; "b" fails in runs 0 and 5 (on different
    // commits) and is skipped in run 9; "c" takes 0.1 s × (i + 1).
    for i in 0..10 {
        let b = if i == 0 || i == 5 {
            "failure"
        } else if i == 9 {
            "skipped"
        } else {
            "success"
        };
        runs.push(test_run(
            &format!("n{i}"),
            &format!("2026-03-05T0{i}:00:00Z"),
            &format!("c{}", i + 1),
            &[
                ("a", "success", 1.0),
                ("b", b, 0.5),
                ("c", "success", 0.1 * (i + 1) as f64),
            ],
        ));
    }
    d.post_runs(&runs);
    let m = d.get_ok(&format!("{P}/workflows/t/test-metrics"));
    // 10 runs × 3 tests.
    assert_eq!(m["total_test_runs"], 30);
    assert_eq!(m["average_test_count"], 3);
    let failed = m["most_failed_tests"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{m}");
    assert_eq!(failed[0]["test_name"], "b");
    assert_eq!(failed[0]["failed_runs"], 2);
    assert_eq!(failed[0]["total_runs"], 10);
    assert_eq!(failed[0]["job_name"], "unit");
    assert_eq!(failed[0]["classname"], "m.T");
    // Different commits: not flaky.
    assert_eq!(failed[0]["flaky"], false);
    assert_eq!(m["most_failed_tests_extra"], 0);
    let slow = m["slowest_tests"].as_array().unwrap();
    // p95 of a: 1 s; of c: 0.1..1.0 s, h = 9 × 0.95 = 8.55 → 0.9 + 0.55 × 0.1 = 0.955 s;
    // of b: its ten durations (the skipped one included) are all 0.5 s.
    assert_eq!(slow[0]["test_name"], "a");
    close(&slow[0]["p95_duration"], 1.0);
    assert_eq!(slow[1]["test_name"], "c");
    close(&slow[1]["p95_duration"], 0.955);
    assert_eq!(slow[2]["test_name"], "b");
    let tr = m["test_runs"].as_array().unwrap();
    assert_eq!(tr.len(), 10);
    // Newest first: n9, where b was skipped: 2 successes of 2 run (skipped left out).
    assert_eq!(tr[0]["workflow_id"], "n9");
    assert_eq!(
        tr[0]["test_counts"],
        json!({"error": 0, "failure": 0, "skipped": 1, "success": 2, "total": 3})
    );
    close(&tr[0]["success_rate"], 1.0);
    // n5: b failed: 2 of 3.
    assert_eq!(tr[4]["workflow_id"], "n5");
    close(&tr[4]["success_rate"], 2.0 / 3.0);
}

#[test]
fn flaky_means_pass_and_fail_on_the_same_commit_within_14_days() {
    let d = daemon();
    d.post_runs(&[
        // x fails then passes on commit k1: flaky, once.
        test_run(
            "x1",
            "2026-03-05T00:00:00Z",
            "k1",
            &[("x", "failure", 1.0), ("y", "failure", 1.0)],
        ),
        test_run("x2", "2026-03-05T01:00:00Z", "k1", &[("x", "success", 1.0)]),
        // y failed on k1 (above) but passes only on k2: never both on one commit.
        test_run("y2", "2026-03-05T02:00:00Z", "k2", &[("y", "success", 1.0)]),
        // z flaked on k3, but 20 days ago: outside the 14 days.
        test_run("z1", "2026-02-18T00:00:00Z", "k3", &[("z", "failure", 1.0)]),
        test_run("z2", "2026-02-18T01:00:00Z", "k3", &[("z", "success", 1.0)]),
    ]);
    let f = d.get_ok(&format!("{P}/flaky-tests"));
    assert_eq!(f["total_flaky_tests"], 1, "{f}");
    let t = &f["flaky_tests"][0];
    assert_eq!(t["test_name"], "x");
    assert_eq!(t["classname"], "m.T");
    assert_eq!(t["job_name"], "unit");
    assert_eq!(t["times_flaked"], 1);
    assert_eq!(t["workflow_name"], "t");
    // The latest flake is the pass in x2.
    assert_eq!(t["workflow_id"], "x2");
    assert_eq!(t["workflow_created_at"], "2026-03-05T01:00:00.000Z");
    for k in [
        "time_wasted",
        "pipeline_number",
        "job_number",
        "source",
        "file",
    ] {
        assert!(t.get(k).is_some(), "{k}");
    }
    // And test-metrics marks it.
    let m = d.get_ok(&format!("{P}/workflows/t/test-metrics"));
    let x = m["most_failed_tests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["test_name"] == "x")
        .expect("x failed once");
    assert_eq!(x["flaky"], true);
}

/// A run of workflow "t" on `commit` at 2026-MM-DD HH:00 (`at` "MM-DDTHH") whose job "unit" ran `mins` minutes
/// and holds test "x" with `result` (and `file`, when given) and test "y", a success.
fn flaky_run(id: &str, at: &str, commit: &str, result: &str, mins: u32, file: &str) -> String {
    let status = if result == "failure" {
        "failed"
    } else {
        "success"
    };
    let created = format!("2026-{at}:00:00Z");
    let stopped = format!("2026-{at}:{mins:02}:00Z");
    let file = if file.is_empty() {
        String::new()
    } else {
        format!(r#","file":"{file}""#)
    };
    run(
        id,
        "t",
        "main",
        status,
        &created,
        &created,
        &stopped,
        0,
        &format!(
            r#""commit":"{commit}","jobs":[{{"name":"unit","kind":"test","status":"{status}","started_at":"{created}","stopped_at":"{stopped}","tests":[{{"name":"x","classname":"m.T","result":"{result}"{file}}},{{"name":"y","classname":"m.T","result":"success"}}]}}]"#
        ),
    )
}

#[test]
fn flaky_counts_every_flip_and_the_failing_jobs_of_flaky_commits() {
    let d = daemon();
    d.post_runs(&[
        // Posted first, so its id is the smallest of the window's runs.
        flaky_run("b2", "03-06T01", "k2", "failure", 15, ""),
        // k1: fail, pass, fail, fail, pass: flips at a2, a3 and a5.
        flaky_run("a1", "03-05T00", "k1", "failure", 10, ""),
        flaky_run("a2", "03-05T01", "k1", "success", 5, ""),
        flaky_run("a3", "03-05T02", "k1", "failure", 20, "x_a.rs"),
        flaky_run("a4", "03-05T03", "k1", "failure", 30, ""),
        flaky_run("a5", "03-05T04", "k1", "success", 5, ""),
        // k2: pass then fail (b2, above): one flip.
        flaky_run("b1", "03-06T00", "k2", "success", 5, ""),
        // k3: failures only, so not a flaky commit: its job time and file do not count.
        flaky_run("c1", "03-07T00", "k3", "failure", 40, "zzz.rs"),
        // k4 flaked 20 days ago, outside the 14 days, posted last (the largest id).
        flaky_run("e1", "02-18T00", "k4", "failure", 50, ""),
        flaky_run("e2", "02-18T01", "k4", "success", 5, ""),
    ]);
    let f = d.get_ok(&format!("{P}/flaky-tests"));
    assert_eq!(f["total_flaky_tests"], 1, "{f}");
    let t = &f["flaky_tests"][0];
    assert_eq!(t["test_name"], "x");
    // 3 flips on k1 and 1 on k2; k4's are outside the window.
    assert_eq!(t["times_flaked"], 4, "{t}");
    // Failing jobs on flaky commits: a1 10 min, a3 20, a4 30, b2 15 = 75 min.
    assert_eq!(t["time_wasted"], 4_500, "{t}");
    // The latest flip is b2's failure.
    assert_eq!(t["workflow_id"], "b2");
    assert_eq!(t["workflow_created_at"], "2026-03-06T01:00:00.000Z");
    assert_eq!(t["file"], "x_a.rs");
}

#[test]
fn branches_pages_and_org_summary() {
    let d = daemon();
    d.post_runs(&ci_runs());
    d.post_runs(&[Run::new("w1", "success", at("09:00:00"))
        .project("github/acme/web")
        .workflow("deploy")
        .started(Some(at("09:00:00")))
        .stopped(Some(at("09:00:10")))
        .credits(7)
        .json()]);
    let b = d.get_ok(&format!("{P}/branches"));
    assert_eq!(b["branches"], json!(["feat", "main"]));
    assert_eq!(b["project_id"].as_str().unwrap().len(), 36);
    let b = d.get_ok(&format!("{P}/branches?workflow-name=nope"));
    assert_eq!(b["branches"], json!([]));

    let p = d.get_ok(
        "/api/v2/insights/pages/gh/acme/api/summary?reporting-window=last-30-days&branches=feat",
    );
    let pm = &p["project_data"]["metrics"];
    // All 9 runs of ci: durations 100+60+30+100+200+120+300+100 = 1010 s; credits 27+3+4 = 34.
    assert_eq!(pm["total_runs"], 9);
    assert_eq!(pm["total_duration_secs"], 1010);
    assert_eq!(pm["total_credits_used"], 34);
    // Successes r3, r5, f3, c1 over 9 − 1 canceled − 1 running.
    close(&pm["success_rate"], 4.0 / 7.0);
    close(&pm["throughput"], 9.0 / 30.0);
    close(&p["project_data"]["trends"]["total_runs"], -1.0);
    assert_eq!(p["project_workflow_data"][0]["workflow_name"], "ci");
    assert_eq!(p["project_workflow_data"][0]["metrics"]["total_runs"], 9);
    let branches = p["project_workflow_branch_data"].as_array().unwrap();
    assert_eq!(branches.len(), 1);
    assert_eq!(branches[0]["branch"], "feat");
    // feat durations 60, 100, 120: p95 h = 1.9 → 100 + 0.9 × 20 = 118 s.
    close(&branches[0]["metrics"]["p95_duration_secs"], 118.0);
    assert_eq!(p["all_branches"], json!(["feat", "main"]));
    assert_eq!(p["all_workflows"], json!(["ci"]));

    // The org: literal and escaped forms, vcs alias.
    for path in [
        "/api/v2/insights/gh/acme/summary",
        "/api/v2/insights/github%2Facme/summary",
    ] {
        let o = d.get_ok(path);
        assert_eq!(o["all_projects"], json!(["api", "web"]), "{path}");
        assert_eq!(o["org_data"]["metrics"]["total_runs"], 10);
        assert_eq!(o["org_data"]["metrics"]["total_credits_used"], 41);
        assert_eq!(o["org_project_data"][1]["project_name"], "web");
        assert_eq!(
            o["org_project_data"][1]["metrics"]["total_duration_secs"],
            10
        );
    }
    let o = d.get_ok("/api/v2/insights/gh/acme/summary?project-names=web");
    assert_eq!(o["org_data"]["metrics"]["total_runs"], 1);
    assert_eq!(o["org_project_data"].as_array().unwrap().len(), 1);
}

#[test]
fn slugs_escaped_aliased_and_unknown() {
    let d = daemon();
    d.post_runs(&ci_runs());
    for path in [
        "/api/v2/insights/gh/acme/api/workflows",
        "/api/v2/insights/github/acme/api/workflows",
        "/api/v2/insights/gh%2Facme%2Fapi/workflows",
        "/api/v2/insights/github%2Facme%2Fapi/workflows",
        "/api/v2/insights/gh%2Facme/api/workflows",
    ] {
        let a = d.get(path);
        assert_eq!(a.status, 200, "{path}: {}", a.text);
        assert_eq!(a.body["items"][0]["name"], "ci", "{path}");
    }
    for path in [
        "/api/v2/insights/gh/acme/nope/workflows",
        "/api/v2/insights/bb/acme/api/flaky-tests",
        "/api/v2/insights/pages/gh/acme/nope/summary",
    ] {
        let a = d.get(path);
        assert_eq!(a.status, 404, "{path}");
        assert_eq!(a.body, json!({"message": "Project not found"}), "{path}");
    }
    let a = d.get("/api/v2/insights/gh/nobody/summary");
    assert_eq!(a.status, 404);
    assert!(a.body["message"].is_string());
    let a = d.get("/api/v2/insights/svn/acme/api/workflows");
    assert_eq!(a.status, 400);
    assert!(
        a.body["message"].as_str().unwrap().contains("project-slug"),
        "{}",
        a.text
    );
    let a = d.call(
        "POST",
        "/api/v2/insights/gh/acme/api/workflows",
        &[],
        Some(b"{}"),
    );
    assert_eq!(a.status, 405);
    assert!(a.body["message"].is_string());
}

/// Booleans as clients send them: Python's `True`, any case, and 1 or 0.
#[test]
fn all_branches_takes_booleans_as_clients_send_them() {
    let d = daemon();
    d.post_runs(&ci_runs());
    for route in ["workflows", "workflows/ci/summary"] {
        let answer = |value: &str| {
            let a = d.get(&format!("{P}/{route}?all-branches={value}"));
            assert_eq!(a.status, 200, "{route}?all-branches={value}: {}", a.text);
            a.body
        };
        let (yes, no) = (answer("true"), answer("false"));
        assert_ne!(
            yes, no,
            "{route}: all branches and the default branch differ here"
        );
        for value in ["True", "TRUE", "1"] {
            assert_eq!(answer(value), yes, "{route}?all-branches={value}");
        }
        for value in ["False", "FALSE", "0"] {
            assert_eq!(answer(value), no, "{route}?all-branches={value}");
        }
    }
}

/// Without end-date the window ends now: a start-date after now, or over 90 days before it, is
/// refused naming start-date, the parameter given, not end-date.
#[test]
fn a_bad_start_date_alone_is_blamed_on_start_date() {
    let d = daemon();
    d.post_runs(&ci_runs());
    for start in ["2026-04-01", "2025-01-01"] {
        let a = d.get(&format!("{P}/workflows/ci?start-date={start}"));
        assert_eq!(a.status, 400, "{}", a.text);
        let msg = a.body["message"].as_str().unwrap();
        assert!(
            msg.starts_with("parameter \"start-date\""),
            "{start}: {msg}"
        );
    }
}

#[test]
fn every_bad_parameter_is_a_400_naming_it() {
    let d = daemon();
    d.post_runs(&ci_runs());
    let cases = [
        ("workflows?reporting-window=last-week", "reporting-window"),
        ("workflows?reporting-window=", "reporting-window"),
        ("workflows?all-branches=yes", "all-branches"),
        ("workflows?branch=", "branch"),
        ("workflows?page-token=%%%", "page-token"),
        ("workflows?page-token=bm90LWEtdG9rZW4", "page-token"),
        ("workflows/ci?start-date=yesterday", "start-date"),
        ("workflows/ci?end-date=2026-03-01", "start-date"),
        (
            "workflows/ci?start-date=2026-03-05&end-date=2026-03-01",
            "end-date",
        ),
        (
            "workflows/ci?start-date=2025-01-01&end-date=2026-03-01",
            "end-date",
        ),
        ("workflows/ci?start-date=2026-02-30", "start-date"),
        ("workflows/ci?page-token=dzpjaQ", "page-token"),
        ("workflows/ci/jobs?job-name=", "job-name"),
        ("workflows/ci/summary?branches=", "branches"),
        ("workflows/ci/summary?all-branches=2", "all-branches"),
        (
            "workflows/ci/test-metrics?all-branches=truthy",
            "all-branches",
        ),
        ("branches?workflow-name=", "workflow-name"),
    ];
    for (path, param) in cases {
        let a = d.get(&format!("{P}/{path}"));
        assert_eq!(a.status, 400, "{path}: {}", a.text);
        let msg = a.body["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: {}", a.text));
        assert!(msg.contains(param), "{path}: {msg}");
    }
    for (path, param) in [
        (
            "/api/v2/insights/time-series/gh/acme/api/workflows/ci/jobs?granularity=weekly",
            "granularity",
        ),
        (
            "/api/v2/insights/pages/gh/acme/api/summary?reporting-window=last-1-days",
            "reporting-window",
        ),
        (
            "/api/v2/insights/pages/gh/acme/api/summary?workflow-names=",
            "workflow-names",
        ),
        (
            "/api/v2/insights/gh/acme/summary?project-names=",
            "project-names",
        ),
    ] {
        let a = d.get(path);
        assert_eq!(a.status, 400, "{path}: {}", a.text);
        assert!(
            a.body["message"].as_str().unwrap().contains(param),
            "{path}: {}",
            a.text
        );
    }
}

#[test]
fn circle_token_and_basic_auth() {
    let d = daemon();
    d.post_runs(&ci_runs());
    let secret = create_token(d.dir.path(), "ci-reader", "read");
    let a = d.get(&format!("{P}/workflows"));
    assert_eq!(a.status, 401);
    assert!(a.body["message"].is_string(), "{}", a.text);
    let a = d.call(
        "GET",
        &format!("{P}/workflows"),
        &[("Circle-Token", &secret)],
        None,
    );
    assert_eq!(a.status, 200, "{}", a.text);
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{secret}:"))
    );
    let a = d.call(
        "GET",
        &format!("{P}/workflows"),
        &[("Authorization", &basic)],
        None,
    );
    assert_eq!(a.status, 200, "{}", a.text);
}

#[test]
fn absurd_values_never_make_a_5xx() {
    let d = daemon();
    // Credits at i64::MAX twice overflow any integer sum; a stop in the year 9999 makes a huge
    // duration. Every route still answers 200 (sums saturate).
    let max = i64::MAX;
    d.post_runs(&[
            run(
                "a1",
                "ci",
                "main",
                "success",
                "10:00:00",
                "10:00:00",
                "9999-12-31T23:59:59Z",
                max,
                &format!(
                    r#""jobs":[{{"name":"build","status":"success","credits_used":{max},"stopped_at":"9999-12-31T23:59:59Z"}}]"#
                ),
            ),
            run(
                "a2",
                "ci",
                "main",
                "failed",
                "10:10:00",
                "10:10:00",
                "10:10:01",
                max,
                &format!(r#""jobs":[{{"name":"build","status":"failed","credits_used":{max}}}]"#),
            ),
        ],
    );
    for path in [
        format!("{P}/workflows"),
        format!("{P}/workflows/ci"),
        format!("{P}/workflows/ci/jobs"),
        format!("{P}/workflows/ci/jobs/build"),
        format!("{P}/workflows/ci/summary"),
        format!("{P}/workflows/ci/test-metrics"),
        format!("{P}/flaky-tests"),
        "/api/v2/insights/pages/gh/acme/api/summary".to_owned(),
        "/api/v2/insights/gh/acme/summary".to_owned(),
        "/api/v2/insights/time-series/gh/acme/api/workflows/ci/jobs".to_owned(),
    ] {
        let a = d.get(&path);
        assert_eq!(a.status, 200, "{path}: {}", a.text);
    }
    let w = d.get_ok(&format!("{P}/workflows"));
    assert_eq!(w["items"][0]["metrics"]["total_credits_used"], json!(max));
}

#[test]
fn org_slug_with_an_unknown_vcs_is_a_400_naming_it() {
    let d = daemon();
    d.post_runs(&ci_runs());
    for path in [
        "/api/v2/insights/svn/acme/summary",
        "/api/v2/insights/svn%2Facme/summary",
        "/api/v2/insights/gh%2F/summary",
    ] {
        let a = d.get(path);
        assert_eq!(a.status, 400, "{path}: {}", a.text);
        assert!(
            a.body["message"].as_str().unwrap().contains("org-slug"),
            "{path}: {}",
            a.text
        );
    }
    // Aliases still name the same org.
    let o = d.get_ok("/api/v2/insights/github/acme/summary");
    assert_eq!(o["all_projects"], json!(["api"]));
}

#[test]
fn org_totals_saturate_across_projects() {
    // Two projects of one org, each with credits at i64::MAX: the org's sum saturates at
    // i64::MAX as each project's does, instead of wrapping or failing.
    let d = daemon();
    let max = i64::MAX;
    for repo in ["api", "web"] {
        d.post_runs(&[Run::new("x", "success", at("10:00:00"))
            .project(&format!("gh/acme/{repo}"))
            .stopped(Some(at("10:00:10")))
            .credits(max)
            .json()]);
    }
    let o = d.get_ok("/api/v2/insights/gh/acme/summary");
    assert_eq!(o["org_data"]["metrics"]["total_credits_used"], json!(max));
    assert_eq!(o["org_data"]["metrics"]["total_runs"], 2);
    assert_eq!(
        o["org_project_data"][1]["metrics"]["total_credits_used"],
        json!(max)
    );
}
