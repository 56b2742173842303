//! The Apigee surface (docs/apigee.md), through the real daemon: hand-worked datasets for every
//! function, several dimensions, topk and paging, each time unit across a `tzo` day boundary,
//! the filter language, and hostile input.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::common::Daemon;

/// The range that holds every run of the hand-worked dataset (all on 2026-03-01, 10:00–10:07Z).
const RANGE: &str = "03/01/2026+00:00~03/02/2026+00:00";

/// UTC milliseconds of an RFC 3339 time, computed here independently of pipestat.
fn ms(s: &str) -> i64 {
    let t = OffsetDateTime::parse(s, &Rfc3339).expect("valid time");
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// Six runs of gh/acme/api (key "api"), durations and queue times in seconds:
///
/// | run | workflow | status  | branch | actor   | trigger  | queue | duration | credits |
/// |-----|----------|---------|--------|---------|----------|-------|----------|---------|
/// | c1  | ci       | success | main   | alice   |          | 10    | 10       | 1       |
/// | c2  | ci       | failed  | main   | bob     |          | 0     | 20       | 2       |
/// | c3  | ci       | success | dev    | alice   |          | 30    | 30       | 3       |
/// | c4  | ci       | error   | (none) | alice   |          | none  | 40 (from created) | 4 |
/// | d1  | deploy   | running | main   | (none)  | schedule | 5     | none     | 0       |
/// | d2  | deploy   | success | main   | o'brien |          | 0     | 100      | 10      |
///
/// c1 has a build job (5 s) and a failed test job (10 s) with three tests (0.5 s success,
/// 1.5 s failure, 2.0 s success); d2 has a production deploy job (60 s).
fn dataset() -> Daemon {
    let d = Daemon::start(&[]);
    let runs = json!([
        {"id": "c1", "project": "gh/acme/api", "project_key": "api", "workflow": "ci",
         "status": "success", "branch": "main", "actor": "alice", "credits_used": 1,
         "created_at": "2026-03-01T10:00:00Z", "started_at": "2026-03-01T10:00:10Z",
         "stopped_at": "2026-03-01T10:00:20Z",
         "jobs": [
            {"name": "compile", "kind": "build", "status": "success",
             "started_at": "2026-03-01T10:00:10Z", "stopped_at": "2026-03-01T10:00:15Z"},
            {"name": "unit", "kind": "test", "status": "failed",
             "started_at": "2026-03-01T10:00:10Z", "stopped_at": "2026-03-01T10:00:20Z",
             "tests": [
                {"name": "t1", "suite": "s", "result": "success", "duration": 0.5},
                {"name": "t2", "suite": "s", "result": "failure", "duration": 1.5},
                {"name": "t3", "suite": "s", "result": "success", "duration": 2.0}]}]},
        {"id": "c2", "project": "gh/acme/api", "workflow": "ci", "status": "failed",
         "branch": "main", "actor": "bob", "credits_used": 2,
         "created_at": "2026-03-01T10:01:00Z", "started_at": "2026-03-01T10:01:00Z",
         "stopped_at": "2026-03-01T10:01:20Z"},
        {"id": "c3", "project": "gh/acme/api", "workflow": "ci", "status": "success",
         "branch": "dev", "actor": "alice", "credits_used": 3,
         "created_at": "2026-03-01T10:02:00Z", "started_at": "2026-03-01T10:02:30Z",
         "stopped_at": "2026-03-01T10:03:00Z"},
        {"id": "c4", "project": "gh/acme/api", "workflow": "ci", "status": "error",
         "actor": "alice", "credits_used": 4,
         "created_at": "2026-03-01T10:03:00Z", "stopped_at": "2026-03-01T10:03:40Z"},
        {"id": "d1", "project": "gh/acme/api", "workflow": "deploy", "status": "running",
         "branch": "main", "trigger": "schedule",
         "created_at": "2026-03-01T10:05:00Z", "started_at": "2026-03-01T10:05:05Z"},
        {"id": "d2", "project": "gh/acme/api", "workflow": "deploy", "status": "success",
         "branch": "main", "actor": "o'brien", "credits_used": 10,
         "created_at": "2026-03-01T10:06:00Z", "started_at": "2026-03-01T10:06:00Z",
         "stopped_at": "2026-03-01T10:07:40Z",
         "jobs": [{"name": "ship", "kind": "deploy", "status": "success", "env": "production",
                   "production": true, "started_at": "2026-03-01T10:06:00Z",
                   "stopped_at": "2026-03-01T10:07:00Z"}]}
    ]);
    let a = d.post_json("/api/v1/runs", &runs.to_string());
    assert_eq!(a.status, 200, "{}", a.text);
    d
}

/// GETs a stats path and expects 200.
fn ok(d: &Daemon, path: &str) -> Value {
    let a = d.get(path);
    assert_eq!(a.status, 200, "{path}: {}", a.text);
    assert_eq!(a.body["metaData"]["errors"], json!([]));
    a.body
}

/// Runs over all projects: `/v1/organizations/all/environments/runs/stats/{dims}?{query}`.
fn runs(d: &Daemon, dims: &str, query: &str) -> Value {
    ok(
        d,
        &format!("/v1/organizations/all/environments/runs/stats/{dims}?timeRange={RANGE}&{query}"),
    )
}

/// The plain string values of a totals answer (no dimensions, no timeUnit), by metric name.
fn totals(body: &Value) -> Vec<(String, String)> {
    body["environments"][0]["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| {
            let values = m["values"].as_array().expect("values");
            assert_eq!(values.len(), 1, "{m}");
            (
                m["name"].as_str().unwrap().to_owned(),
                values[0].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// (dimension name, first metric's value) in answer order, without timeUnit.
fn by_dim(body: &Value) -> Vec<(String, String)> {
    body["environments"][0]["dimensions"]
        .as_array()
        .expect("dimensions")
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_owned(),
                d["metrics"][0]["values"][0].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

/// The number of runs a filter keeps.
fn count(d: &Daemon, filter: &str) -> String {
    let body = runs(d, "", &format!("select=run_count&filter={}", enc(filter)));
    totals(&body)[0].1.clone()
}

#[test]
fn every_function_over_runs() {
    let d = dataset();
    let body = runs(
        &d,
        "",
        "select=run_count,sum(duration),avg(duration),min(duration),max(duration),\
         p50(duration),p95(duration),p99(duration),avg(queue_time),p50(queue_time),\
         sum(credits),sum(is_error),avg(is_success),message_count",
    );
    assert_eq!(body["environments"][0]["name"], "runs");
    assert!(body["metaData"]["notices"]
        .as_array()
        .unwrap()
        .contains(&json!("Source:SQLite")));
    // Durations of the 5 stopped runs, sorted: 10, 20, 30, 40, 100 (d1 has none).
    // sum 200, avg 40. p50: h = 4 * 0.5 = 2 -> 30. p95: h = 3.8 -> 40 + 0.8 * (100 - 40) = 88.
    // p99: h = 3.96 -> 40 + 0.96 * 60 = 97.6.
    // Queue times of the 5 started runs: 10, 0, 30, 5, 0 -> avg 45 / 5 = 9; sorted 0, 0, 5,
    // 10, 30 -> p50 = 5. Credits 1 + 2 + 3 + 4 + 0 + 10 = 20. Errors: c2 failed, c4 error = 2.
    // Successes c1, c3, d2 of 6 -> 0.5.
    assert_eq!(
        totals(&body),
        pairs(&[
            ("run_count", "6"),
            ("sum(duration)", "200"),
            ("avg(duration)", "40"),
            ("min(duration)", "10"),
            ("max(duration)", "100"),
            ("p50(duration)", "30"),
            ("p95(duration)", "88"),
            ("p99(duration)", "97.6"),
            ("avg(queue_time)", "9"),
            ("p50(queue_time)", "5"),
            ("sum(credits)", "20"),
            ("sum(is_error)", "2"),
            ("avg(is_success)", "0.5"),
            ("message_count", "6"),
        ])
    );
}

#[test]
fn functions_per_dimension_and_the_edge_forms() {
    let d = dataset();
    let q = "select=sum(run_count),p50(duration),p95(duration),p99(duration)";
    let body = runs(&d, "workflow", q);
    let dims = body["environments"][0]["dimensions"].as_array().unwrap();
    // ci: durations 10, 20, 30, 40 (n = 4). p50: h = 1.5 -> 20 + 0.5 * 10 = 25.
    // p95: h = 2.85 -> 30 + 0.85 * 10 = 38.5. p99: h = 2.97 -> 30 + 0.97 * 10 = 39.7.
    // deploy: one duration, 100, so every percentile is 100. ci has 4 runs, deploy 2: ci first.
    let expect = json!([
        {"name": "ci", "metrics": [
            {"name": "sum(run_count)", "values": ["4"]},
            {"name": "p50(duration)", "values": ["25"]},
            {"name": "p95(duration)", "values": ["38.5"]},
            {"name": "p99(duration)", "values": ["39.7"]}]},
        {"name": "deploy", "metrics": [
            {"name": "sum(run_count)", "values": ["2"]},
            {"name": "p50(duration)", "values": ["100"]},
            {"name": "p95(duration)", "values": ["100"]},
            {"name": "p99(duration)", "values": ["100"]}]}
    ]);
    assert_eq!(Value::Array(dims.clone()), expect);

    // The same through the Edge short form, the organization as a project key, and the
    // native route with the project as a slug or a key.
    for path in [
        format!("/v1/o/api/e/runs/stats/workflow?timeRange={RANGE}&{q}"),
        format!("/v1/o/all/environments/runs/stats/workflow?timeRange={RANGE}&{q}"),
        format!("/api/v1/stats/workflow?project=acme/api&facts=runs&timeRange={RANGE}&{q}"),
        format!("/api/v1/stats/workflow?project=api&timeRange={RANGE}&{q}"),
    ] {
        let b = ok(&d, &path);
        assert_eq!(b["environments"][0]["dimensions"], expect, "{path}");
    }
    let a = d.get(&format!(
        "/v1/organizations/nope/environments/runs/stats/workflow?timeRange={RANGE}&{q}"
    ));
    assert_eq!(a.status, 404, "{}", a.text);
    assert_eq!(a.body["error"]["code"], 404);
    assert_eq!(a.body["error"]["status"], "NOT_FOUND");
    let a = d.get(&format!(
        "/v1/organizations/all/environments/deploys/stats/workflow?timeRange={RANGE}&{q}"
    ));
    assert_eq!(a.status, 404, "{}", a.text);
    let a = d.get(&format!(
        "/api/v1/stats/workflow?project=gh/nobody/nothing&timeRange={RANGE}&{q}"
    ));
    assert_eq!(a.status, 404, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "not_found", "native error shape");
    let a = d.call(
        "POST",
        &format!("/v1/o/all/e/runs/stats/workflow?timeRange={RANGE}&{q}"),
        &[("Content-Type", "application/json")],
        Some(b"{}"),
    );
    assert_eq!(a.status, 405);
    assert_eq!(a.allow.as_deref(), Some("GET"));
}

#[test]
fn several_dimensions_topk_ties_and_paging() {
    let d = dataset();
    // (workflow, branch): ci,main = c1 c2; deploy,main = d1 d2; ci,dev = c3; ci,(not set) = c4.
    // Ties sort by name: "ci,(not set)" before "ci,dev" because '(' sorts before 'd'.
    let body = runs(&d, "workflow,branch", "select=run_count");
    assert_eq!(
        by_dim(&body),
        pairs(&[
            ("ci,main", "2"),
            ("deploy,main", "2"),
            ("ci,(not set)", "1"),
            ("ci,dev", "1")
        ])
    );
    // Path order decides the name: branch first.
    let body = runs(&d, "branch,workflow", "select=run_count&topk=1");
    assert_eq!(by_dim(&body), pairs(&[("main,ci", "2")]));

    // branch: main = c1 c2 d1 d2 (4), dev = c3 (1), (not set) = c4 (1).
    let q = |extra: &str| by_dim(&runs(&d, "branch", &format!("select=run_count&{extra}")));
    assert_eq!(
        q(""),
        pairs(&[("main", "4"), ("(not set)", "1"), ("dev", "1")])
    );
    // topk = 2 cuts the tie between "(not set)" and "dev" by name.
    assert_eq!(q("topk=2"), pairs(&[("main", "4"), ("(not set)", "1")]));
    assert_eq!(
        q("sort=ASC"),
        pairs(&[("(not set)", "1"), ("dev", "1"), ("main", "4")])
    );
    assert_eq!(q("sort=asc&topk=1"), pairs(&[("(not set)", "1")]));
    // Paging after sorting: offset 1, limit 1 is the second; offset 3 is past the end.
    assert_eq!(q("limit=1&offset=1"), pairs(&[("(not set)", "1")]));
    assert_eq!(q("limit=1&offset=2"), pairs(&[("dev", "1")]));
    assert_eq!(q("limit=2&offset=3"), pairs(&[]));
    // No matching rows: no dimension values at all.
    assert_eq!(
        q(&format!("filter={}", enc("branch eq 'gone'"))),
        pairs(&[])
    );
    // topk first, then paging within the top k.
    assert_eq!(q("topk=2&offset=1"), pairs(&[("(not set)", "1")]));
    // sortby another selection: sum(duration) main = 10 + 20 + 100 = 130 (d1 has none),
    // (not set) = 40, dev = 30.
    let body = runs(
        &d,
        "branch",
        "select=run_count,sum(duration)&sortby=sum(duration)",
    );
    assert_eq!(
        by_dim(&body),
        pairs(&[("main", "4"), ("(not set)", "1"), ("dev", "1")])
    );
    let body = runs(
        &d,
        "branch",
        "select=run_count,sum(duration)&sortby=duration&sort=ASC",
    );
    assert_eq!(
        by_dim(&body),
        pairs(&[("dev", "1"), ("(not set)", "1"), ("main", "4")])
    );

    // With a time unit, an average ranks over the whole range: ci avg 25 < deploy avg 100.
    let body = runs(
        &d,
        "workflow",
        "select=run_count,avg(duration)&sortby=avg(duration)&timeUnit=day&topk=1",
    );
    let dims = body["environments"][0]["dimensions"].as_array().unwrap();
    assert_eq!(dims.len(), 1);
    assert_eq!(dims[0]["name"], "deploy");
    // The range is the one day 2026-03-01 UTC: one bucket.
    assert_eq!(
        dims[0]["metrics"][1]["values"],
        json!([{"timestamp": ms("2026-03-01T00:00:00Z"), "value": "100"}])
    );
}

#[test]
fn jobs_and_tests() {
    let d = dataset();
    let jobs = |dims: &str, q: &str| {
        ok(
            &d,
            &format!("/v1/o/all/e/jobs/stats/{dims}?timeRange={RANGE}&{q}"),
        )
    };
    // Jobs: compile (build, 5 s), unit (test, 10 s, failed), ship (deploy, 60 s, production).
    // Every count is 1, so the order is by name.
    let body = jobs("kind", "select=job_count,sum(duration)");
    assert_eq!(
        by_dim(&body),
        pairs(&[("build", "1"), ("deploy", "1"), ("test", "1")])
    );
    let body = jobs("production", "select=job_count");
    assert_eq!(by_dim(&body), pairs(&[("false", "2"), ("true", "1")]));
    // Durations 5, 10, 60: sum 75, p50 = 10; one failed job.
    let body = jobs(
        "",
        "select=sum(duration),p50(duration),sum(is_error)&filter=job+isnot+null",
    );
    assert_eq!(
        totals(&body),
        pairs(&[
            ("sum(duration)", "75"),
            ("p50(duration)", "10"),
            ("sum(is_error)", "1")
        ])
    );
    let body = jobs(
        "workflow,job",
        &format!(
            "select=job_count&filter={}",
            enc("env eq 'production' and production eq 'true'")
        ),
    );
    assert_eq!(by_dim(&body), pairs(&[("deploy,ship", "1")]));

    // Tests: t1 success 0.5 s, t2 failure 1.5 s, t3 success 2.0 s.
    let tests = |dims: &str, q: &str| {
        ok(
            &d,
            &format!("/v1/o/all/e/tests/stats/{dims}?timeRange={RANGE}&{q}"),
        )
    };
    // success: 2 tests, 0.5 + 2.0 = 2.5 s; failure: 1 test, 1.5 s.
    let body = tests("result", "select=test_count,sum(duration)");
    let dims = body["environments"][0]["dimensions"].as_array().unwrap();
    assert_eq!(dims[0]["name"], "success");
    assert_eq!(dims[0]["metrics"][1]["values"], json!(["2.5"]));
    assert_eq!(dims[1]["name"], "failure");
    assert_eq!(dims[1]["metrics"][1]["values"], json!(["1.5"]));
    // p50 of 0.5, 1.5, 2.0 is 1.5; avg is 4 / 3 = 1.333333 (six decimals).
    let body = tests("", "select=p50(duration),avg(duration),sum(is_error)");
    assert_eq!(
        totals(&body),
        pairs(&[
            ("p50(duration)", "1.5"),
            ("avg(duration)", "1.333333"),
            ("sum(is_error)", "1")
        ])
    );
    let body = tests(
        "test",
        &format!(
            "select=test_count&filter={}",
            enc("test similar to 't[23]'")
        ),
    );
    assert_eq!(by_dim(&body), pairs(&[("t2", "1"), ("t3", "1")]));
    // Credits are not a test metric; run_count is not a job metric.
    let a = d.get(&format!(
        "/v1/o/all/e/tests/stats/?timeRange={RANGE}&select=sum(credits)"
    ));
    assert_eq!(a.status, 400, "{}", a.text);
    let a = d.get(&format!(
        "/v1/o/all/e/jobs/stats/?timeRange={RANGE}&select=run_count"
    ));
    assert_eq!(a.status, 400, "{}", a.text);
}

#[test]
fn filter_operators() {
    let d = dataset();
    let cases: &[(&str, &str)] = &[
        // c1 c2 d1 d2 are on main.
        ("branch eq 'main'", "4"),
        // ne keeps runs without a branch: c3 (dev) and c4 (none).
        ("branch ne 'main'", "2"),
        ("branch in 'main','dev'", "5"),
        ("(branch in ('main', 'dev'))", "5"),
        ("branch notin ('main')", "2"),
        // Actors: alice c1 c3 c4, bob c2, o'brien d2, none d1.
        ("actor like 'al%'", "3"),
        ("actor not like 'al%'", "3"),
        ("actor eq 'o''brien'", "1"),
        ("actor similar to 'b.b'", "1"),
        // similar to matches the whole value.
        ("actor similar to 'b'", "0"),
        ("actor not similar to 'a.*'", "3"),
        ("trigger is null", "5"),
        ("trigger isnot null", "1"),
        ("trigger is not null", "1"),
        // Durations 10 20 30 40 100 (d1 none): > 25 is c3 c4 d2.
        ("duration gt 25", "3"),
        ("duration ge 20 and duration le 40", "3"),
        ("duration lt 10.5", "1"),
        ("queue_time eq 0", "2"),
        ("credits ge 3", "3"),
        // and binds tighter: deploy (d1 d2) or (dev and success: c3) = 3.
        (
            "workflow eq 'deploy' or branch eq 'dev' and status eq 'success'",
            "3",
        ),
        // Grouped: (d1 d2 c3) and success = d2 c3.
        (
            "(workflow eq 'deploy' or branch eq 'dev') and status eq 'success'",
            "2",
        ),
        ("status eq 'failed' OR status eq 'error'", "2"),
        ("is_error eq 1", "2"),
        ("((((status EQ 'success'))))", "3"),
        ("branch eq 'ünïcødé ✓'", "0"),
    ];
    for (filter, expected) in cases {
        assert_eq!(count(&d, filter), *expected, "{filter}");
    }
}

/// Runs at year, week and quarter boundaries, 30 minutes before midnight UTC.
fn boundary_dataset() -> Daemon {
    let d = Daemon::start(&[]);
    let runs: Vec<Value> = [
        ("a", "2025-12-31T23:30:00Z"),
        ("b", "2026-03-01T23:30:00Z"),
        ("c", "2026-03-31T23:30:00Z"),
    ]
    .iter()
    .map(|(id, t)| {
        json!({"id": id, "project": "gh/acme/api", "workflow": "ci", "status": "success",
               "created_at": t})
    })
    .collect();
    let a = d.post_json("/api/v1/runs", &Value::Array(runs).to_string());
    assert_eq!(a.status, 200, "{}", a.text);
    d
}

/// (timestamp, value) of run_count per bucket, oldest first.
fn series(d: &Daemon, unit: &str, range: &str, tzo: i32) -> Vec<(i64, String)> {
    let body = ok(
        d,
        &format!(
            "/v1/o/all/e/runs/stats/?select=run_count&timeUnit={unit}&tzo={tzo}&tsAscending=true&timeRange={}",
            enc(range)
        ),
    );
    body["environments"][0]["metrics"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["timestamp"].as_i64().unwrap(),
                v["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn s(v: &[(&str, &str)]) -> Vec<(i64, String)> {
    v.iter().map(|(t, x)| (ms(t), (*x).to_owned())).collect()
}

#[test]
fn every_time_unit_across_a_tzo_day_boundary() {
    let d = boundary_dataset();
    // Run b is at 2026-03-01T23:30Z, a Sunday in UTC; at tzo=+60 it is Monday 00:30 local.

    // second: a 4-second window around b (ranges are local times at tzo).
    assert_eq!(
        series(&d, "second", "03/02/2026 00:29:58~03/02/2026 00:30:02", 60),
        s(&[
            ("2026-03-01T23:29:58Z", "0"),
            ("2026-03-01T23:29:59Z", "0"),
            ("2026-03-01T23:30:00Z", "1"),
            ("2026-03-01T23:30:01Z", "0"),
        ])
    );
    // minute: 23:28–23:32Z.
    assert_eq!(
        series(&d, "minute", "03/01/2026 23:28~03/01/2026 23:32", 0),
        s(&[
            ("2026-03-01T23:28:00Z", "0"),
            ("2026-03-01T23:29:00Z", "0"),
            ("2026-03-01T23:30:00Z", "1"),
            ("2026-03-01T23:31:00Z", "0"),
        ])
    );
    // hour at +00:30: local hours start at hh:30Z, so b opens the local 00:00 hour.
    assert_eq!(
        series(&d, "hour", "03/01/2026 22:00~03/02/2026 01:00", 30),
        s(&[
            ("2026-03-01T21:30:00Z", "0"),
            ("2026-03-01T22:30:00Z", "0"),
            ("2026-03-01T23:30:00Z", "1"),
        ])
    );
    // hour in UTC: b is in the 23:00Z hour.
    assert_eq!(
        series(&d, "hour", "03/01/2026 22:00~03/02/2026 00:00", 0),
        s(&[("2026-03-01T22:00:00Z", "0"), ("2026-03-01T23:00:00Z", "1")])
    );
    // day at +01:00: local days start at 23:00Z; b falls on local March 2.
    assert_eq!(
        series(&d, "day", "03/01/2026 12:00~03/02/2026 12:00", 60),
        s(&[("2026-02-28T23:00:00Z", "0"), ("2026-03-01T23:00:00Z", "1")])
    );
    // day in UTC: b falls on March 1.
    assert_eq!(
        series(&d, "day", "03/01/2026 12:00~03/02/2026 12:00", 0),
        s(&[("2026-03-01T00:00:00Z", "1"), ("2026-03-02T00:00:00Z", "0")])
    );
    // day at -05:00 (tzo negative): local days start at 05:00Z; b is March 1 18:30 local.
    assert_eq!(
        series(&d, "day", "03/01/2026 00:00~03/03/2026 00:00", -300),
        s(&[("2026-03-01T05:00:00Z", "1"), ("2026-03-02T05:00:00Z", "0")])
    );
    // week (Mondays) at +01:00: b is Monday 00:30 local, the week of local March 2.
    assert_eq!(
        series(&d, "week", "02/28/2026 00:00~03/04/2026 00:00", 60),
        s(&[("2026-02-22T23:00:00Z", "0"), ("2026-03-01T23:00:00Z", "1")])
    );
    // week in UTC: b is Sunday, the week that began Monday February 23.
    assert_eq!(
        series(&d, "week", "02/28/2026 00:00~03/04/2026 00:00", 0),
        s(&[("2026-02-23T00:00:00Z", "1"), ("2026-03-02T00:00:00Z", "0")])
    );
    // month at +01:00: c (March 31 23:30Z) is April 1 00:30 local; b is before the range.
    assert_eq!(
        series(&d, "month", "03/15/2026 00:00~04/15/2026 00:00", 60),
        s(&[("2026-02-28T23:00:00Z", "0"), ("2026-03-31T23:00:00Z", "1")])
    );
    // month in UTC: c is in March.
    assert_eq!(
        series(&d, "month", "03/15/2026 00:00~04/15/2026 00:00", 0),
        s(&[("2026-03-01T00:00:00Z", "1"), ("2026-04-01T00:00:00Z", "0")])
    );
    // quarter at +01:00: c opens Q2 (local April 1); b is in Q1.
    assert_eq!(
        series(&d, "quarter", "03/01/2026 12:00~04/02/2026 00:00", 60),
        s(&[("2025-12-31T23:00:00Z", "1"), ("2026-03-31T23:00:00Z", "1")])
    );
    // quarter in UTC: both in Q1.
    assert_eq!(
        series(&d, "quarter", "03/01/2026 12:00~04/02/2026 00:00", 0),
        s(&[("2026-01-01T00:00:00Z", "2"), ("2026-04-01T00:00:00Z", "0")])
    );
    // year at +01:00: a (Dec 31 23:30Z) is January 1 2026 00:30 local.
    assert_eq!(
        series(&d, "year", "12/31/2025 12:00~01/01/2026 12:00", 60),
        s(&[("2024-12-31T23:00:00Z", "0"), ("2025-12-31T23:00:00Z", "1")])
    );
    // year in UTC: a is in 2025.
    assert_eq!(
        series(&d, "year", "12/31/2025 12:00~01/01/2026 12:00", 0),
        s(&[("2025-01-01T00:00:00Z", "1"), ("2026-01-01T00:00:00Z", "0")])
    );

    // Newest bucket first by default; '+' for the space and unpadded dates also parse.
    let body = ok(
        &d,
        "/v1/o/all/e/runs/stats/?select=run_count&timeUnit=day&timeRange=3/1/2026+12:00~3/2/2026+12:00",
    );
    assert_eq!(
        body["environments"][0]["metrics"][0]["values"],
        json!([
            {"timestamp": ms("2026-03-02T00:00:00Z"), "value": "0"},
            {"timestamp": ms("2026-03-01T00:00:00Z"), "value": "1"}
        ])
    );
    // A second range over one hour is refused.
    let a = d.get("/v1/o/all/e/runs/stats/?select=run_count&timeUnit=second&timeRange=03/01/2026%2000:00~03/01/2026%2001:00:01");
    assert_eq!(a.status, 400, "{}", a.text);
}

#[test]
fn series_per_dimension_are_zero_filled() {
    let d = boundary_dataset();
    // One dimension value (ci); days March 1–3 UTC; b on March 1 only.
    let body = ok(
        &d,
        "/v1/o/all/e/runs/stats/workflow?select=run_count,avg(duration)&timeUnit=day&tsAscending=true&timeRange=03/01/2026+00:00~03/04/2026+00:00",
    );
    let dims = &body["environments"][0]["dimensions"];
    assert_eq!(dims[0]["name"], "ci");
    assert_eq!(
        dims[0]["metrics"][0]["values"],
        json!([
            {"timestamp": ms("2026-03-01T00:00:00Z"), "value": "1"},
            {"timestamp": ms("2026-03-02T00:00:00Z"), "value": "0"},
            {"timestamp": ms("2026-03-03T00:00:00Z"), "value": "0"}
        ])
    );
    assert_eq!(dims[0]["metrics"][1]["name"], "avg(duration)");
    // Booleans as Python clients send them, and 1/0; descending is the reverse order.
    let path = |asc: &str| {
        format!("/v1/o/all/e/runs/stats/workflow?select=run_count,avg(duration)&timeUnit=day&tsAscending={asc}&timeRange=03/01/2026+00:00~03/04/2026+00:00")
    };
    for asc in ["True", "TRUE", "1"] {
        assert_eq!(ok(&d, &path(asc)), body, "tsAscending={asc}");
    }
    let descending = ok(&d, &path("0"));
    assert_eq!(ok(&d, &path("False")), descending);
    let first = &descending["environments"][0]["dimensions"][0]["metrics"][0]["values"][0];
    assert_eq!(first["timestamp"], ms("2026-03-03T00:00:00Z"));
}

/// Every parameter error is a 400 in Apigee's shape naming the parameter.
#[test]
fn parameter_errors() {
    let d = dataset();
    let cases: &[(&str, &str)] = &[
        ("select=run_count", "timeRange"),
        (&format!("timeRange={RANGE}"), "select"),
        (
            &format!("timeRange={RANGE}&select=median(duration)"),
            "select",
        ),
        (&format!("timeRange={RANGE}&select=sum(password)"), "select"),
        (
            &format!("timeRange={RANGE}&select=sum(duration);DROP+TABLE+runs"),
            "select",
        ),
        ("select=run_count&timeRange=yesterday", "timeRange"),
        (
            "select=run_count&timeRange=01/01/2025+00:00~01/03/2026+00:00",
            "timeRange",
        ),
        (
            &format!("timeRange={RANGE}&select=run_count&timeUnit=fortnight"),
            "timeUnit",
        ),
        (
            &format!("timeRange={RANGE}&select=run_count&tzo=99999"),
            "tzo",
        ),
        (
            &format!("timeRange={RANGE}&select=run_count&limit=14401"),
            "limit",
        ),
        (
            &format!("timeRange={RANGE}&select=run_count&limit=-1"),
            "limit",
        ),
        (
            &format!("timeRange={RANGE}&select=run_count&topk=0"),
            "topk",
        ),
        (
            &format!("timeRange={RANGE}&select=run_count&sort=sideways"),
            "sort",
        ),
        (
            &format!("timeRange={RANGE}&select=run_count&sortby=sum(duration)"),
            "sortby",
        ),
        (
            &format!("timeRange={RANGE}&select=run_count&tsAscending=maybe"),
            "tsAscending",
        ),
        (
            "timeRange=01/01/2026+00:00~01/31/2026+00:00&select=run_count&timeUnit=minute",
            "timeUnit",
        ),
        (
            "select=run_count&timeRange=03/02/2026+00:00~03/01/2026+00:00",
            "timeRange",
        ),
        (
            &format!("timeRange={RANGE}&select=run_count&tzo=east"),
            "tzo",
        ),
        (
            &format!("timeRange={RANGE}&select=run_count&topk=many"),
            "topk",
        ),
        (
            &format!("timeRange={RANGE}&select=run_count&offset=-1"),
            "offset",
        ),
        (&format!("timeRange={RANGE}&select=sum(duration"), "select"),
        (&format!("timeRange={RANGE}&select=run_count,"), "select"),
        (
            &format!(
                "timeRange={RANGE}&select={}",
                vec!["run_count"; 21].join(",")
            ),
            "select",
        ),
        (
            &format!(
                "timeRange={RANGE}&select={}",
                vec!["run_count"; 100_000].join(",")
            ),
            "select",
        ),
    ];
    for (query, param) in cases {
        let a = d.get(&format!("/v1/o/all/e/runs/stats/workflow?{query}"));
        assert_eq!(a.status, 400, "{query}: {}", a.text);
        assert_eq!(a.body["error"]["code"], 400, "{query}");
        assert_eq!(a.body["error"]["status"], "INVALID_ARGUMENT", "{query}");
        let msg = a.body["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with(param), "{query}: {msg}");
    }
    let a = d.get(&format!(
        "/v1/o/all/e/runs/stats/workflow,password?timeRange={RANGE}&select=run_count"
    ));
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("password"));
    let a = d.get(&format!(
        "/v1/o/all/e/runs/stats/branch,branch?timeRange={RANGE}&select=run_count"
    ));
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("dimensions"));
    // The native form names the facts in a parameter, and answers in pipestat's own shape.
    let a = d.get(&format!(
        "/api/v1/stats/branch?facts=deploys&timeRange={RANGE}&select=run_count"
    ));
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "bad_request");
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("facts"));
}

/// The stored data, seen two ways: the native list and an Apigee total.
fn snapshot(d: &Daemon) -> (Value, Vec<(String, String)>) {
    let list = d.get("/api/v1/runs?limit=1000");
    assert_eq!(list.status, 200);
    let body = runs(d, "", "select=run_count,sum(duration),sum(credits)");
    (list.body, totals(&body))
}

#[test]
fn hostile_filters_are_400_and_change_nothing() {
    let d = dataset();
    let before = snapshot(&d);
    // (filter, the 1-based character position the message must name)
    let deep = format!("{}branch eq 'a'{}", "(".repeat(10_000), ")".repeat(10_000));
    let many = vec!["branch eq 'a'"; 201].join(" or ");
    let huge = format!("branch eq '{}'", "x".repeat(1 << 20));
    let hostile: Vec<(&str, usize)> = vec![
        ("'; DROP TABLE runs;--", 1),
        ("branch eq 'x'; DROP TABLE runs;--", 14),
        ("branch eq 'x' or 1=1", 19),
        ("branch eq 'x' -- comment", 15),
        ("branch eq \"x\"", 11),
        ("((branch eq 'a')", 17),
        ("branch eq 'a'))", 14),
        (")", 1),
        ("(", 2),
        ("branch eq 'a' and", 18),
        ("password eq 'x'", 1),
        ("runs.id eq 1", 1),
        ("branch eq 'a' union select 1", 15),
        ("brånch eq 'x'", 3),
        ("branch eq 'x' ∧ status eq 'y'", 15),
        ("branch eq 'x'\u{0}", 14),
        ("branch similar to '[z-a]'", 19),
        ("branch similar to '(\\w{100}){100}'", 19),
        ("duration gt 'long'", 13),
        ("duration like '1%'", 15),
        ("branch eq 1e400", 11),
        (&deep, 101),
        (&many, 200 * 17 + 1),
        (&huge, 65_537),
    ];
    for (filter, pos) in &hostile {
        let a = d.get(&format!(
            "/v1/o/all/e/runs/stats/branch?select=run_count&timeRange={RANGE}&filter={}",
            enc(filter)
        ));
        let shown: String = filter.chars().take(60).collect();
        assert_eq!(a.status, 400, "{shown}: {}", a.text);
        assert_eq!(a.body["error"]["code"], 400, "{shown}");
        assert_eq!(a.body["error"]["status"], "INVALID_ARGUMENT", "{shown}");
        let msg = a.body["error"]["message"].as_str().unwrap();
        assert!(
            msg.starts_with(&format!("filter: at character {pos}:")),
            "{shown}: {msg}"
        );
    }
    // Same through the native surface, in its own error shape.
    let a = d.get(&format!(
        "/api/v1/stats/branch?select=run_count&timeRange={RANGE}&filter={}",
        enc(&deep)
    ));
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "bad_request");
    // The daemon still answers, and nothing changed.
    assert_eq!(snapshot(&d), before);
    assert_eq!(d.get("/readyz").status, 200);
}

#[test]
fn random_filters_never_get_a_5xx() {
    let d = dataset();
    let before = snapshot(&d);
    let piece = prop_oneof![
        Just("branch".to_owned()),
        Just("duration".to_owned()),
        Just("actor".to_owned()),
        Just("eq".to_owned()),
        Just("ne".to_owned()),
        Just("gt".to_owned()),
        Just("in".to_owned()),
        Just("notin".to_owned()),
        Just("not like".to_owned()),
        Just("similar to".to_owned()),
        Just("isnot null".to_owned()),
        Just("and".to_owned()),
        Just("or".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just(",".to_owned()),
        Just("'".to_owned()),
        "'[a-z%_.*()\\[\\]]{0,4}'",
        "-?[0-9]{1,4}",
        "\\PC{1,2}",
    ];
    let filters = prop::collection::vec(piece, 1..12).prop_map(|v| v.join(" "));
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    runner
        .run(&filters, |f| {
            let a = d.get(&format!(
                "/v1/o/all/e/runs/stats/branch?select=run_count,p95(duration)&timeRange={RANGE}&filter={}",
                enc(&f)
            ));
            prop_assert!(a.status == 200 || a.status == 400, "{f}: {}", a.text);
            if a.status == 400 {
                prop_assert_eq!(&a.body["error"]["code"], &json!(400), "{}", f);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(snapshot(&d), before);
}

/// Regression: SQL's sum() fails on 64-bit overflow; the answer must still be a 200.
#[test]
fn sums_beyond_64_bits_are_not_an_error() {
    let d = Daemon::start(&[]);
    let two: Vec<Value> = ["x", "y"]
        .iter()
        .map(|id| {
            json!({"id": id, "project": "gh/acme/api", "workflow": "ci", "status": "success",
                   "created_at": "2026-03-01T10:00:00Z", "credits_used": i64::MAX})
        })
        .collect();
    let a = d.post_json("/api/v1/runs", &Value::Array(two).to_string());
    assert_eq!(a.status, 200, "{}", a.text);
    // 2 * (2^63 - 1) is about 2^64 = 18446744073709551616 (as a double).
    let body = runs(&d, "", "select=sum(credits)");
    assert_eq!(
        totals(&body),
        pairs(&[("sum(credits)", "18446744073709551616")])
    );
}

/// Regression: the SQL week bucket divided a negative number (the epoch is a Thursday, so the
/// first days of 1970 lie before the first Monday-aligned multiple) and truncated toward zero,
/// putting a run of Friday 1970-01-02 in the next week's bucket.
#[test]
fn weeks_at_the_start_of_1970() {
    let d = Daemon::start(&[]);
    let run = json!([{"id": "e", "project": "gh/acme/api", "workflow": "ci",
                      "status": "success", "created_at": "1970-01-02T00:00:00Z"}]);
    let a = d.post_json("/api/v1/runs", &run.to_string());
    assert_eq!(a.status, 200, "{}", a.text);
    // The week holding Thursday 1970-01-01 began Monday 1969-12-29; the next on January 5.
    assert_eq!(
        series(&d, "week", "01/01/1970 00:00~01/06/1970 00:00", 0),
        s(&[("1969-12-29T00:00:00Z", "1"), ("1970-01-05T00:00:00Z", "0")])
    );
    // At -05:00 the run is Thursday 19:00 local, in the week that began Monday 05:00Z.
    assert_eq!(
        series(&d, "week", "01/01/1970 00:00~01/06/1970 00:00", -300),
        s(&[("1969-12-29T05:00:00Z", "1"), ("1970-01-05T05:00:00Z", "0")])
    );
}

/// Regression: the month after December 9999 is past what the calendar knows; the series must
/// end there rather than start again at 1970.
#[test]
fn calendar_buckets_in_the_year_9999() {
    let d = Daemon::start(&[]);
    let run = json!([{"id": "z", "project": "gh/acme/api", "workflow": "ci",
                      "status": "success", "created_at": "9999-12-15T00:00:00Z"}]);
    let a = d.post_json("/api/v1/runs", &run.to_string());
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        series(&d, "month", "11/15/9999 00:00~12/31/9999 00:00", 0),
        s(&[("9999-11-01T00:00:00Z", "0"), ("9999-12-01T00:00:00Z", "1")])
    );
    assert_eq!(
        series(&d, "year", "06/01/9999 00:00~12/31/9999 23:59", 0),
        s(&[("9999-01-01T00:00:00Z", "1")])
    );
}
