//! The Zadig surface (docs/zadig.md), on a small hand-worked dataset.
//!
//! Two projects, keys "api" (gh/acme/api) and "web" (gh/acme/web), in the week of Monday
//! 2024-03-04. Unix seconds used below:
//!   1709510400 = 2024-03-04T00:00:00Z      1709683200 = 2024-03-06T00:00:00Z
//!   1709769600 = 2024-03-07T00:00:00Z      1710201600 = 2024-03-12T00:00:00Z
//!
//! The jobs, by the instant that places them on a day (started_at, else created_at):
//!
//! | job | project/workflow | kind   | status   | at (UTC)          | notes                           |
//! |-----|------------------|--------|----------|-------------------|---------------------------------|
//! | b1  | api/ci           | build  | success  | 03-04 10:00       | artifact img/api:1              |
//! | d1  | api/ci           | deploy | success  | 03-04 12:00       | staging, c-stg, svc api, img/api:1 |
//! | b2  | api/ci           | build  | failed   | 03-04 23:30       | 03-05 00:30 at UTC+01:00        |
//! | b5  | api/ci           | build  | timeout  | 03-05 08:00       | never started: created_at counts |
//! | d2  | api/release      | deploy | failed   | 03-05 12:00       | production, c-prod, svc api     |
//! | d3  | api/release      | deploy | success  | 03-05 13:00       | production, c-prod, img/api:2   |
//! | b3  | api/ci           | build  | canceled | 03-06 12:00       | finished, neither success nor failure |
//! | b4  | api/ci           | build  | running  | 03-06 13:00       | not finished: never counted     |
//! | w1  | web/ci           | build  | success  | 03-05 09:00       | img/web:1                       |
//! | w2  | web/ci           | build  | error    | 03-07 00:30       | 03-06 23:30 at UTC-01:00        |
//! | d4  | web/deploy       | deploy | success  | 03-10 12:00       | production; outside 03-04..07   |
//! | d5  | web/deploy       | deploy | skipped  | 03-06 10:00       | production, c-prod, svc web     |
//! | t1  | api/nightly      | test   | success  | 03-06 10:00, 100 s | cases (s,c,a) (s,c,b)          |
//! | t2  | api/nightly      | test   | failed   | 03-10 10:00, 200 s | cases (s,c,a) (-,c,c)          |
//! | t3  | api/nightly      | test   | timeout  | 03-11 10:00, 301 s | case (s,c,b)                   |
//! | t4  | web/nightly      | test   | error    | 03-11 11:00, 1 s   | case (s,c,a) of web            |
//! | t5  | api/nightly      | test   | running  | 03-12 09:00       | not finished                     |
//! | t6  | api/nightly      | test   | success  | 03-20 10:00       | case (s,c,e); outside the range  |

use serde_json::{json, Value};

use crate::common::{Answer, Daemon};

/// A run of one job; `job` is the job's JSON members.
fn run(project: &str, workflow: &str, id: &str, created: &str, job: &str) -> Value {
    let text = format!(
        r#"{{"id":"{id}","project":"{project}","workflow":"{workflow}","status":"success",
            "created_at":"{created}","jobs":[{{"name":"{id}",{job}}}]}}"#
    );
    serde_json::from_str(&text).expect("test JSON")
}

fn dataset() -> Value {
    let api = "gh/acme/api";
    let web = "gh/acme/web";
    let t = |day: &str, hm: &str| format!("2024-03-{day}T{hm}:00Z");
    let started = |day: &str, hm: &str| format!(r#""started_at":"{}""#, t(day, hm));
    let mut runs = vec![
        run(
            api,
            "ci",
            "b1",
            &t("04", "09:00"),
            &format!(
                r#""kind":"build","status":"success",{},"artifacts":["img/api:1"]"#,
                started("04", "10:00")
            ),
        ),
        run(
            api,
            "ci",
            "d1",
            &t("04", "09:00"),
            &format!(
                r#""kind":"deploy","status":"success",{},"env":"staging","cluster":"c-stg","service":"api","artifacts":["img/api:1"]"#,
                started("04", "12:00")
            ),
        ),
        run(
            api,
            "ci",
            "b2",
            &t("04", "23:00"),
            &format!(
                r#""kind":"build","status":"failed",{}"#,
                started("04", "23:30")
            ),
        ),
        run(
            api,
            "ci",
            "b5",
            &t("05", "08:00"),
            r#""kind":"build","status":"timeout","created_at":"2024-03-05T08:00:00Z""#,
        ),
        run(
            api,
            "release",
            "d2",
            &t("05", "11:00"),
            &format!(
                r#""kind":"deploy","status":"failed",{},"env":"prod","cluster":"c-prod","service":"api","production":true"#,
                started("05", "12:00")
            ),
        ),
        run(
            api,
            "release",
            "d3",
            &t("05", "11:00"),
            &format!(
                r#""kind":"deploy","status":"success",{},"env":"prod","cluster":"c-prod","service":"api","production":true,"artifacts":["img/api:2"]"#,
                started("05", "13:00")
            ),
        ),
        run(
            api,
            "ci",
            "b3",
            &t("06", "11:00"),
            &format!(
                r#""kind":"build","status":"canceled",{}"#,
                started("06", "12:00")
            ),
        ),
        run(
            api,
            "ci",
            "b4",
            &t("06", "11:00"),
            &format!(
                r#""kind":"build","status":"running",{}"#,
                started("06", "13:00")
            ),
        ),
        run(
            web,
            "ci",
            "w1",
            &t("05", "08:00"),
            &format!(
                r#""kind":"build","status":"success",{},"artifacts":["img/web:1"]"#,
                started("05", "09:00")
            ),
        ),
        run(
            web,
            "ci",
            "w2",
            &t("07", "00:00"),
            &format!(
                r#""kind":"build","status":"error",{}"#,
                started("07", "00:30")
            ),
        ),
        run(
            web,
            "deploy",
            "d4",
            &t("10", "11:00"),
            &format!(
                r#""kind":"deploy","status":"success",{},"env":"prod","cluster":"c-prod","service":"web","production":true,"artifacts":["img/web:1"]"#,
                started("10", "12:00")
            ),
        ),
        run(
            web,
            "deploy",
            "d5",
            &t("06", "09:00"),
            &format!(
                r#""kind":"deploy","status":"skipped",{},"env":"prod","cluster":"c-prod","service":"web","production":true"#,
                started("06", "10:00")
            ),
        ),
    ];
    let case = |suite: &str, name: &str, result: &str| {
        let suite = if suite.is_empty() {
            String::new()
        } else {
            format!(r#""suite":"{suite}","#)
        };
        format!(r#"{{{suite}"classname":"c","name":"{name}","result":"{result}"}}"#)
    };
    let test_job = |status: &str, day: &str, start: &str, stop: Option<&str>, cases: &[String]| {
        let stop = stop
            .map(|s| format!(r#","stopped_at":"2024-03-{day}T{s}Z""#))
            .unwrap_or_default();
        format!(
            r#""kind":"test","status":"{status}",{}{stop},"tests":[{}]"#,
            started(day, start),
            cases.join(",")
        )
    };
    runs.extend([
        run(
            api,
            "nightly",
            "t1",
            &t("06", "09:00"),
            &test_job(
                "success",
                "06",
                "10:00",
                Some("10:01:40"),
                &[case("s", "a", "success"), case("s", "b", "failure")],
            ),
        ),
        run(
            api,
            "nightly",
            "t2",
            &t("10", "09:00"),
            &test_job(
                "failed",
                "10",
                "10:00",
                Some("10:03:20"),
                &[case("s", "a", "success"), case("", "c", "failure")],
            ),
        ),
        run(
            api,
            "nightly",
            "t3",
            &t("11", "09:00"),
            &test_job(
                "timeout",
                "11",
                "10:00",
                Some("10:05:01"),
                &[case("s", "b", "error")],
            ),
        ),
        run(
            web,
            "nightly",
            "t4",
            &t("11", "09:00"),
            &test_job(
                "error",
                "11",
                "11:00",
                Some("11:00:01"),
                &[case("s", "a", "success")],
            ),
        ),
        run(
            api,
            "nightly",
            "t5",
            &t("12", "08:00"),
            &test_job("running", "12", "09:00", None, &[]),
        ),
        run(
            api,
            "nightly",
            "t6",
            &t("20", "09:00"),
            &test_job(
                "success",
                "20",
                "10:00",
                Some("10:01:00"),
                &[case("s", "e", "success")],
            ),
        ),
    ]);
    Value::Array(runs)
}

/// Rollbacks: created_at in Unix seconds.
///   rb1 api staging  1709546400 = 03-04 10:00      rb2 api production 1709632800 = 03-05 10:00
///   rb3 web production 1709636400 = 03-05 11:00    rb4 api production 1709719200 = 03-06 10:00
///   rb5 api production 1709978400 = 03-09 10:00
fn rollbacks() -> Value {
    let rb = |id: &str, project: &str, env: &str, at: i64| {
        json!({
            "id": id, "project": project, "env": env, "env_type": if env == "production" { "production" } else { "testing" },
            "production": env == "production", "operation_type": "service", "service": project,
            "service_type": "k8s", "origin_service": {"service_name": project, "revision": 2},
            "update_service": {"service_name": project, "revision": 1},
            "create_by": {"name": "ann"}, "created_at": at
        })
    };
    json!([
        rb("rb1", "api", "staging", 1_709_546_400),
        rb("rb2", "api", "production", 1_709_632_800),
        rb("rb3", "web", "production", 1_709_636_400),
        rb("rb4", "api", "production", 1_709_719_200),
        rb("rb5", "api", "production", 1_709_978_400),
    ])
}

/// A daemon whose "today" is 2024-03-07 (UTC), loaded with the dataset.
fn loaded() -> Daemon {
    let d = Daemon::start(&["--now", "2024-03-07T12:00:00Z"]);
    let a = d.post_json("/api/v1/runs", &dataset().to_string());
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["accepted"], 18);
    let a = d.post_json("/api/v1/rollbacks", &rollbacks().to_string());
    assert_eq!(a.status, 200, "{}", a.text);
    d
}

/// A daily series as (date, total, success, failure) tuples.
fn days(body: &Value, key: &str, names: [&str; 3]) -> Vec<(String, i64, i64, i64)> {
    body[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key}: {body}"))
        .iter()
        .map(|e| {
            (
                e["date"].as_str().unwrap().to_owned(),
                e[names[0]].as_i64().unwrap(),
                e[names[1]].as_i64().unwrap(),
                e[names[2]].as_i64().unwrap(),
            )
        })
        .collect()
}

fn day(date: &str, a: i64, b: i64, c: i64) -> (String, i64, i64, i64) {
    (format!("2024-03-{date}"), a, b, c)
}

const BUILD: [&str; 3] = ["total", "success", "failure"];

#[test]
fn build_counts_finished_jobs_per_day() {
    let d = loaded();
    let range = "startDate=1709510400&endDate=1709769600";
    let b = d.get_ok(&format!("/openapi/statistics/build?{range}"));
    // UTC, all projects. 03-04: b1 success, b2 failed. 03-05: b5 timeout (created_at counts),
    // w1 success. 03-06: b3 canceled (b4 running is not finished). 03-07: w2 error.
    // total 6 finished, success 2 (b1, w1); total >= success + failure (b3 is neither).
    assert_eq!(
        days(&b, "data", BUILD),
        vec![
            day("04", 2, 1, 1),
            day("05", 2, 1, 1),
            day("06", 1, 0, 0),
            day("07", 1, 0, 1)
        ]
    );
    assert_eq!(
        (b["total"].clone(), b["success"].clone()),
        (json!(6), json!(2))
    );

    // One project, under each spelling of the filter, and the other spellings of the dates.
    for q in [
        format!("{range}&projectKey=api"),
        "start_time=1709510400&end_time=1709769600&productNames=api".to_owned(),
        "startTime=1709510400&endTime=1709769600&project_name=gh/acme/api".to_owned(),
    ] {
        let b = d.get_ok(&format!("/openapi/statistics/build?{q}"));
        // api only: 03-04 b1, b2; 03-05 b5; 03-06 b3.
        assert_eq!(
            days(&b, "data", BUILD),
            vec![
                day("04", 2, 1, 1),
                day("05", 1, 0, 1),
                day("06", 1, 0, 0),
                day("07", 0, 0, 0)
            ],
            "{q}"
        );
        assert_eq!(b["total"], 4, "{q}");
        assert_eq!(b["success"], 1, "{q}");
    }
    // Both projects, repeated and comma-separated, count as all.
    for q in ["productNames=api&productNames=web", "productNames=api,web"] {
        let b = d.get_ok(&format!("/openapi/statistics/build?{range}&{q}"));
        assert_eq!(b["total"], 6, "{q}");
    }
    // A project that does not exist: zeros, not an error.
    let b = d.get_ok(&format!(
        "/openapi/statistics/build?{range}&projectKey=nope"
    ));
    assert_eq!(b["total"], 0);
    assert_eq!(b["data"].as_array().unwrap().len(), 4);
}

#[test]
fn days_move_with_the_offset() {
    let d = loaded();
    let range = "startDate=1709510400&endDate=1709769600";
    // tzo=60 (UTC+01:00): both dates fall on the same local days (03-04 01:00 and 03-07 01:00),
    // so the days are 03-04..03-07, but b2 (03-04 23:30Z) is 03-05 00:30 there.
    // api: 03-04 b1; 03-05 b2 failed + b5 timeout; 03-06 b3 canceled.
    let b = d.get_ok(&format!(
        "/openapi/statistics/build?{range}&projectKey=api&tzo=60"
    ));
    assert_eq!(
        days(&b, "data", BUILD),
        vec![
            day("04", 1, 1, 0),
            day("05", 2, 0, 2),
            day("06", 1, 0, 0),
            day("07", 0, 0, 0)
        ]
    );
    // tzo=-60 (UTC-01:00): 1709510400 is 03-03 23:00 there and 1709769600 is 03-06 23:00, so the
    // days are 03-03..03-06; w2 (03-07 00:30Z) is 03-06 23:30 and now falls inside.
    // web: 03-05 w1 success, 03-06 w2 error.
    let b = d.get_ok(&format!(
        "/openapi/statistics/build?{range}&projectKey=web&tzo=-60"
    ));
    assert_eq!(
        days(&b, "data", BUILD),
        vec![
            day("03", 0, 0, 0),
            day("04", 0, 0, 0),
            day("05", 1, 1, 0),
            day("06", 1, 0, 1)
        ]
    );
    // --utc-offset sets the same default for every request.
    let d2 = Daemon::start(&["--now", "2024-03-07T12:00:00Z", "--utc-offset", "+01:00"]);
    d2.post_json("/api/v1/runs", &dataset().to_string());
    let b = d2.get_ok(&format!("/openapi/statistics/build?{range}&projectKey=api"));
    assert_eq!(
        b["data"][1],
        json!({"date": "2024-03-05", "total": 2, "success": 0, "failure": 2})
    );
}

#[test]
fn the_default_window_is_the_30_days_ending_today() {
    let d = loaded();
    // Today is 2024-03-07 at UTC; 29 days before is 2024-02-07 (2024 is a leap year).
    let b = d.get_ok("/openapi/statistics/build");
    let data = b["data"].as_array().unwrap();
    assert_eq!(data.len(), 30);
    assert_eq!(data[0]["date"], "2024-02-07");
    assert_eq!(data[29]["date"], "2024-03-07");
    // Every build job but the running b4 lies in it.
    assert_eq!(b["total"], 6);
}

#[test]
fn deploys_respect_the_range_and_releases_are_production_deploys() {
    let d = loaded();
    let range = "startDate=1709510400&endDate=1709769600";
    // d1 03-04 success; d2 failed + d3 success 03-05; d5 skipped 03-06 (finished, neither).
    // d4 (03-10) is outside the range and is not counted (Zadig would count it).
    let b = d.get_ok(&format!("/openapi/statistics/deploy?{range}"));
    assert_eq!(
        days(&b, "data", BUILD),
        vec![
            day("04", 1, 1, 0),
            day("05", 2, 1, 1),
            day("06", 1, 0, 0),
            day("07", 0, 0, 0)
        ]
    );
    assert_eq!(
        (b["total"].clone(), b["success"].clone()),
        (json!(4), json!(2))
    );

    // Releases: production deploys only, so d1 (staging) drops out: d2, d3 on 03-05, d5 on 03-06.
    let r = d.get_ok("/openapi/statistics/v2/release?start_time=1709510400&end_time=1709769600");
    let names = ["total", "success_count", "fail_count"];
    assert_eq!(
        days(&r, "daily_stat", names),
        vec![
            day("04", 0, 0, 0),
            day("05", 2, 1, 1),
            day("06", 1, 0, 0),
            day("07", 0, 0, 0)
        ]
    );
    assert_eq!(
        (r["total"].clone(), r["success_count"].clone()),
        (json!(3), json!(1))
    );
    // The other spellings, one project: web has d5 only in range.
    let r = d.get_ok(
        "/openapi/statistics/v2/release?startTime=1709510400&endTime=1709769600&projectKey=web",
    );
    assert_eq!(
        (r["total"].clone(), r["success_count"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(
        r["daily_stat"][2],
        json!({"date": "2024-03-06", "total": 1, "success_count": 0, "fail_count": 0})
    );
}

#[test]
fn tests_per_iso_week() {
    let d = loaded();
    // 03-06 (a Wednesday) .. 03-12 (a Tuesday): ISO weeks of Monday 03-04 and Monday 03-11.
    let b = d.get_ok("/openapi/statistics/test?startDate=1709683200&endDate=1710201600");
    // Week 03-04 holds t1 success (03-06) and t2 failed (03-10, a Sunday); week 03-11 holds
    // t3 timeout and t4 error. t5 is running, t6 is outside the range.
    assert_eq!(
        b["data"],
        json!([
            {"date": "2024-03-04", "success_count": 1, "timeout_count": 0, "failed_count": 1},
            {"date": "2024-03-11", "success_count": 0, "timeout_count": 1, "failed_count": 1},
        ])
    );
    assert_eq!(b["exec_count"], 4);
    assert_eq!(b["success_count"], 1);
    // (100 + 200 + 301 + 1) / 4 = 150.5 s, rounded half away from zero: 151.
    assert_eq!(b["average_runtime"], 151);
    // api: (s,c,a) (s,c,b) from t1, (-,c,c) from t2, t3 repeats (s,c,b): 3; web's (s,c,a): 1.
    assert_eq!(b["case_count"], 4);

    let b =
        d.get_ok("/openapi/statistics/test?startDate=1709683200&endDate=1710201600&projectKey=api");
    assert_eq!(b["case_count"], 3);
    assert_eq!(b["exec_count"], 3);
    // (100 + 200 + 301) / 3 = 200.33 s: 200.
    assert_eq!(b["average_runtime"], 200);
}

#[test]
fn overview_counts_what_was_active_in_the_range() {
    let d = loaded();
    let range = "startDate=1709510400&endDate=1709769600";
    // Jobs on 03-04..03-07: b1 d1 b2 b5 b3 b4 (api/ci), d2 d3 (api/release), t1 (api/nightly),
    // w1 w2 (web/ci), d5 (web/deploy). Not d4 (03-10) nor t2..t6.
    // Clusters of those deploys: c-stg, c-prod. Services: api, web. Workflows: api/ci,
    // api/release, api/nightly, web/ci, web/deploy. Envs: api/staging, api/prod, web/prod.
    // Artifacts: img/api:1 (b1 and d1), img/api:2, img/web:1.
    let b = d.get_ok(&format!("/openapi/statistics/overview?{range}"));
    assert_eq!(
        b,
        json!({"project_count": 2, "cluster_count": 2, "service_count": 2,
               "workflow_count": 5, "env_count": 3, "artifact_count": 3})
    );
    let b = d.get_ok(&format!(
        "/openapi/statistics/overview?{range}&projectKey=web"
    ));
    assert_eq!(
        b,
        json!({"project_count": 1, "cluster_count": 1, "service_count": 1,
               "workflow_count": 2, "env_count": 1, "artifact_count": 1})
    );
}

#[test]
fn an_empty_range_is_zeros() {
    let d = loaded();
    // 2020-01-01T00:00Z .. 2020-01-03T00:00Z: three days with nothing in them.
    let range = "startDate=1577836800&endDate=1578009600";
    let b = d.get_ok(&format!("/openapi/statistics/build?{range}"));
    assert_eq!(b["total"], 0);
    assert_eq!(
        b["data"],
        json!([
            {"date": "2020-01-01", "total": 0, "success": 0, "failure": 0},
            {"date": "2020-01-02", "total": 0, "success": 0, "failure": 0},
            {"date": "2020-01-03", "total": 0, "success": 0, "failure": 0},
        ])
    );
    let b = d.get_ok(&format!("/openapi/statistics/deploy?{range}"));
    assert_eq!(b["data"].as_array().unwrap().len(), 3);
    // 2020-01-01 was a Wednesday: its ISO week starts Monday 2019-12-30.
    let b = d.get_ok(&format!("/openapi/statistics/test?{range}"));
    assert_eq!(
        b,
        json!({"case_count": 0, "exec_count": 0, "success_count": 0, "average_runtime": 0,
               "data": [{"date": "2019-12-30", "success_count": 0, "timeout_count": 0, "failed_count": 0}]})
    );
    let b = d.get_ok(&format!("/openapi/statistics/overview?{range}"));
    assert_eq!(b["project_count"], 0);
    assert_eq!(b["artifact_count"], 0);
    let b = d.get_ok("/openapi/statistics/v2/release?start_time=1577836800&end_time=1578009600");
    assert_eq!(
        (
            b["total"].clone(),
            b["daily_stat"].as_array().unwrap().len()
        ),
        (json!(0), 3)
    );
    let b = d.get_ok("/openapi/statistics/v2/rollback/detail?startTime=1577836800&endTime=1578009600&pageNum=1&pageSize=10");
    assert_eq!(b, json!({"total": 0, "data": []}));
    // A fresh database answers zeros too.
    let fresh = Daemon::start(&[]);
    assert_eq!(fresh.get_ok("/openapi/statistics/build")["total"], 0);
    assert_eq!(
        fresh.get_ok("/openapi/statistics/overview")["project_count"],
        0
    );
}

fn rollback_services(b: &Value) -> Vec<(String, i64)> {
    b["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["project_key"].as_str().unwrap().to_owned(),
                r["create_time"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn rollbacks_newest_first_in_pages() {
    let d = loaded();
    // [1709546400, 1709719200] holds rb1 and rb4 at its very edges, rb2 and rb3 inside; not rb5.
    let base = "/openapi/statistics/v2/rollback/detail?startTime=1709546400&endTime=1709719200";
    let page = |n: i64, size: i64| d.get_ok(&format!("{base}&pageNum={n}&pageSize={size}"));
    let (rb1, rb2, rb3, rb4) = (
        ("api".to_owned(), 1_709_546_400),
        ("api".to_owned(), 1_709_632_800),
        ("web".to_owned(), 1_709_636_400),
        ("api".to_owned(), 1_709_719_200),
    );
    let p1 = page(1, 2);
    assert_eq!(p1["total"], 4);
    assert_eq!(rollback_services(&p1), vec![rb4.clone(), rb3.clone()]);
    // The last page, full.
    let p2 = page(2, 2);
    assert_eq!(rollback_services(&p2), vec![rb2.clone(), rb1.clone()]);
    // Past the end: no rows, the total still told.
    let p3 = page(3, 2);
    assert_eq!(
        (p3["total"].clone(), p3["data"].clone()),
        (json!(4), json!([]))
    );
    // The last page, partial: 4 = 3 + 1.
    assert_eq!(rollback_services(&page(2, 3)), vec![rb1.clone()]);
    // The fields of one record, objects verbatim.
    assert_eq!(
        p1["data"][0],
        json!({"project_key": "api", "env_name": "production", "env_type": "production",
               "production": true, "operation_type": "service", "service_name": "api",
               "service_type": "k8s", "origin_service": {"service_name": "api", "revision": 2},
               "update_service": {"service_name": "api", "revision": 1},
               "create_by": {"name": "ann"}, "create_time": 1_709_719_200})
    );
    // Filters: project and environment; service.
    let b = d.get_ok(&format!(
        "{base}&pageNum=1&pageSize=10&projectKey=api&envName=production"
    ));
    assert_eq!(b["total"], 2);
    assert_eq!(rollback_services(&b), vec![rb4, rb2]);
    let b = d.get_ok(&format!("{base}&pageNum=1&pageSize=10&serviceName=web"));
    assert_eq!(rollback_services(&b), vec![rb3]);
    // One second less at the end leaves rb4 out.
    let b = d.get_ok("/openapi/statistics/v2/rollback/detail?startTime=1709546400&endTime=1709719199&pageNum=1&pageSize=10");
    assert_eq!(b["total"], 3);
}

/// A 400 in Zadig's error shape whose message names `param`.
fn assert_bad(a: &Answer, param: &str) {
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.body["type"], "error", "{}", a.text);
    assert_eq!(a.body["code"], 400, "{}", a.text);
    assert_eq!(a.body["extra"], json!({}), "{}", a.text);
    let message = a.body["message"].as_str().unwrap_or_default();
    assert!(message.contains(param), "{param} not named in {message:?}");
    assert!(a.body["description"].is_string(), "{}", a.text);
}

#[test]
fn every_bad_parameter_is_a_400_naming_it() {
    let d = loaded();
    let ok_range = "startDate=1709510400&endDate=1709769600";
    for route in ["build", "deploy", "test", "overview"] {
        let get = |q: &str| d.get(&format!("/openapi/statistics/{route}?{q}"));
        // Only one end of the range.
        assert_bad(&get("startDate=1709510400"), "endDate");
        assert_bad(&get("endTime=1709510400"), "startTime");
        assert_bad(&get("end_time=1709510400"), "start_time");
        // Not Unix seconds.
        assert_bad(&get("startDate=abc&endDate=1709769600"), "startDate");
        assert_bad(&get("startDate=1709510400&endDate=1.5"), "endDate");
        assert_bad(&get("startDate=-1&endDate=1709769600"), "startDate");
        assert_bad(
            &get("startDate=99999999999999999999&endDate=1709769600"),
            "startDate",
        );
        // End before start; more than 366 days (1709510400 + 367 days = 1741219200).
        assert_bad(&get("startDate=1709769600&endDate=1709510400"), "endDate");
        assert_bad(&get("startDate=1709510400&endDate=1741219200"), "startDate");
        // Two spellings that disagree.
        assert_bad(&get(&format!("{ok_range}&startTime=1")), "startTime");
        // tzo: not an integer, out of range.
        assert_bad(&get(&format!("{ok_range}&tzo=abc")), "tzo");
        assert_bad(&get(&format!("{ok_range}&tzo=841")), "tzo");
        assert_bad(&get(&format!("{ok_range}&tzo=1.5")), "tzo");
        // 9999-12-31T23:59:59Z is a day of year 10000 an hour east of UTC: no date to show.
        let last = "startDate=253402300000&endDate=253402300799";
        assert_bad(&get(&format!("{last}&tzo=60")), "endDate");
        // In UTC it is the last day there is, and it has its date.
        let b = d.get_ok(&format!("/openapi/statistics/build?{last}"));
        let dates: Vec<&str> = b["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["date"].as_str().unwrap())
            .collect();
        assert_eq!(dates, ["9999-12-31"]);
    }
    // Release needs both times.
    assert_bad(&d.get("/openapi/statistics/v2/release"), "start_time");
    assert_bad(
        &d.get("/openapi/statistics/v2/release?start_time=1709510400"),
        "end_time",
    );
    // Rollbacks: pageNum and pageSize required, integers, within bounds.
    let rb = |q: &str| d.get(&format!("/openapi/statistics/v2/rollback/detail?{q}"));
    assert_bad(&rb("pageSize=10"), "pageNum");
    assert_bad(&rb("pageNum=1"), "pageSize");
    assert_bad(&rb("pageNum=0&pageSize=10"), "pageNum");
    assert_bad(&rb("pageNum=x&pageSize=10"), "pageNum");
    assert_bad(&rb("pageNum=1&pageSize=0"), "pageSize");
    assert_bad(&rb("pageNum=1&pageSize=1001"), "pageSize");
    assert_bad(&rb("pageNum=1&pageSize=10&startTime=1709546400"), "endTime");
    assert_bad(&rb("pageNum=1&pageSize=10&tzo=zz"), "tzo");
    // The largest page number with the largest page size is still just an empty page.
    let a = rb("pageNum=4294967295&pageSize=1000");
    assert_eq!(
        (a.status, a.body["data"].clone()),
        (200, json!([])),
        "{}",
        a.text
    );

    // Other methods and unknown paths, in the same shape.
    let a = d.call("POST", "/openapi/statistics/build", &[], Some(b"{}"));
    assert_eq!(a.status, 405);
    assert_eq!(a.body["type"], "error");
    let a = d.get("/openapi/statistics/nope");
    assert_eq!((a.status, a.body["code"].clone()), (404, json!(404)));
}

#[test]
fn demo_data_answers_sensibly() {
    let d = Daemon::start(&["--demo", "--now", "2026-03-01T12:00:00Z"]);
    for path in ["overview", "build", "deploy", "test"] {
        let b = d.get_ok(&format!("/openapi/statistics/{path}"));
        assert!(b.is_object(), "{path}: {b}");
    }
    let build = d.get_ok("/openapi/statistics/build");
    let data = build["data"].as_array().unwrap();
    assert_eq!(data.len(), 30);
    // The series adds up to the total, and every day is within it.
    let sum: i64 = data.iter().map(|e| e["total"].as_i64().unwrap()).sum();
    assert_eq!(build["total"].as_i64().unwrap(), sum);
    assert!(sum > 0);
    for e in data {
        let t = e["total"].as_i64().unwrap();
        assert!(e["success"].as_i64().unwrap() + e["failure"].as_i64().unwrap() <= t);
    }
    let overview = d.get_ok("/openapi/statistics/overview");
    assert!(
        overview["project_count"].as_i64().unwrap() >= 2,
        "{overview}"
    );
    assert!(
        overview["artifact_count"].as_i64().unwrap() > 0,
        "{overview}"
    );
    // 2026-01-30T12:00Z .. 2026-03-01T12:00Z.
    let r = d.get_ok("/openapi/statistics/v2/release?start_time=1769774400&end_time=1772366400");
    assert!(r["total"].as_i64().unwrap() > 0, "{r}");
    assert_eq!(r["daily_stat"].as_array().unwrap().len(), 31);
    let rb = d.get_ok("/openapi/statistics/v2/rollback/detail?pageNum=1&pageSize=5");
    assert!(rb["total"].as_i64().unwrap() > 0, "{rb}");
    assert!(rb["data"].as_array().unwrap().len() <= 5);
    let t = d.get_ok("/openapi/statistics/test");
    assert!(t["case_count"].as_i64().unwrap() > 0, "{t}");
    assert!(t["exec_count"].as_i64().unwrap() >= t["success_count"].as_i64().unwrap());
}

/// Every counting route's answer (rollups, for a window of whole quarter hours) against the
/// same question asked with `tzo=1`, which pipestat answers from the jobs themselves. The data
/// lies at whole hours in the middle of days, so the one-minute shift changes nothing.
fn rollup_matches_exact(d: &Daemon, query: &str) -> (Value, Value) {
    for path in ["build", "deploy", "v2/release"] {
        let fast = d.get_ok(&format!("/openapi/statistics/{path}?{query}"));
        let exact = d.get_ok(&format!("/openapi/statistics/{path}?{query}&tzo=1"));
        assert_eq!(fast, exact, "{path}?{query}");
    }
    let mut answers = Vec::new();
    for path in ["overview", "test"] {
        let fast = d.get_ok(&format!("/openapi/statistics/{path}?{query}"));
        let exact = d.get_ok(&format!("/openapi/statistics/{path}?{query}&tzo=1"));
        assert_eq!(fast, exact, "{path}?{query}");
        answers.push(fast);
    }
    let test = answers.pop().unwrap();
    (answers.pop().unwrap(), test)
}

/// Asserts that the rollups the daemon's writes kept equal the rollups rebuilt from its stored
/// jobs and tests (the rebuild is rolled back).
pub fn assert_rollups_exact(d: &Daemon) {
    let mut conn = d.db();
    let kept = rollup_rows(&conn);
    assert!(!kept.is_empty());
    let tx = conn.transaction().unwrap();
    crate::common::rebuild("zadig", &tx).unwrap();
    assert_eq!(rollup_rows(&tx), kept);
}

/// The rows of the rollups that count something, in a fixed order.
pub fn rollup_rows(conn: &rusqlite::Connection) -> Vec<String> {
    crate::common::strings(
        conn,
        "SELECT 'workflow ' || workflow_id || ' ' || bucket || ' ' || n
                FROM zadig_workflow_buckets WHERE n <> 0
             UNION ALL SELECT concat_ws(' ', 'series', project_id, kind, bucket, production,
                finished, success, timeout, failed, duration_ms, timed)
                FROM zadig_job_buckets WHERE finished <> 0
             UNION ALL SELECT concat_ws(' ', 'artifact', project_id, bucket, artifact_id, n)
                FROM zadig_artifact_buckets WHERE n <> 0
             UNION ALL SELECT concat_ws(' ', 'case', case_id, bucket, n)
                FROM zadig_case_buckets WHERE n <> 0
             ORDER BY 1",
    )
}

#[test]
fn rollups_stay_exact_under_redelivery_and_replaced_tests() {
    let d = Daemon::start(&["--now", "2024-03-07T12:00:00Z"]);
    let post = |body: Value| {
        let a = d.post_json("/api/v1/runs", &body.to_string());
        assert_eq!(a.status, 200, "{}", a.text);
    };
    let case = |suite: Option<&str>, name: &str| json!({"suite": suite, "classname": "c", "name": name, "result": "success"});
    // 03-04 .. 03-07.
    let range = "startDate=1709510400&endDate=1709769600";
    let api_run = |status: &str, jobs: Value| {
        let mut run = json!({"id": "r1", "project": "gh/acme/api", "workflow": "ci",
            "status": status, "created_at": "2024-03-05T09:00:00Z", "jobs": jobs});
        if status == "success" {
            run["stopped_at"] = json!("2024-03-05T13:00:00Z");
        }
        run
    };
    post(json!([
        api_run("running", json!([
            {"id": "t", "name": "t", "kind": "test", "status": "running",
             "started_at": "2024-03-05T10:00:00Z",
             "tests": [case(Some("s"), "a"), case(Some("s"), "b"), case(None, "c"), case(None, "c")]},
            {"id": "b", "name": "b", "kind": "build", "status": "running",
             "started_at": "2024-03-05T11:00:00Z", "artifacts": ["img/1", "img/1"]},
            {"id": "d", "name": "d", "kind": "deploy", "status": "success",
             "started_at": "2024-03-05T12:00:00Z", "stopped_at": "2024-03-05T12:10:00Z",
             "env": "prod", "cluster": "k", "service": "api", "production": true,
             "artifacts": ["img/1"]}
        ])),
        {"id": "r2", "project": "gh/acme/web", "workflow": "ci", "status": "running",
         "created_at": "2024-03-06T09:00:00Z", "jobs": [
            {"id": "t", "name": "t", "kind": "test", "status": "running",
             "started_at": "2024-03-06T10:00:00Z", "tests": [case(Some("s"), "a")]},
            {"id": "b", "name": "b", "kind": "build", "status": "success",
             "started_at": "2024-03-06T11:00:00Z", "stopped_at": "2024-03-06T11:10:00Z",
             "artifacts": ["img/1"]}
        ]}
    ]));
    let (o, t) = rollup_matches_exact(&d, range);
    // api: (s,c,a) (s,c,b) (-,c,c), counted once though reported twice; web: (s,c,a).
    assert_eq!(t["case_count"], 4);
    assert_eq!(
        o,
        json!({"project_count": 2, "cluster_count": 1, "service_count": 1,
               "workflow_count": 2, "env_count": 1, "artifact_count": 1})
    );

    // The api run finishes: its test job now reports one case, its build another image.
    post(api_run(
        "success",
        json!([
            {"id": "t", "name": "t", "kind": "test", "status": "success",
             "started_at": "2024-03-05T10:00:00Z", "stopped_at": "2024-03-05T10:30:00Z",
             "tests": [case(Some("s"), "a")]},
            {"id": "b", "name": "b", "kind": "build", "status": "success",
             "started_at": "2024-03-05T11:00:00Z", "stopped_at": "2024-03-05T11:30:00Z",
             "artifacts": ["img/2"]}
        ]),
    ));
    let (o, t) = rollup_matches_exact(&d, range);
    assert_eq!(t["case_count"], 2);
    // img/1 (api's deploy and web's build) and img/2.
    assert_eq!(o["artifact_count"], 2);

    // The web run moves to another workflow, and its test job to a day after the window
    // (it had not started, as far as the first delivery knew).
    post(
        json!({"id": "r2", "project": "gh/acme/web", "workflow": "other", "status": "success",
        "created_at": "2024-03-06T09:00:00Z", "stopped_at": "2024-03-20T11:00:00Z", "jobs": [
            {"id": "t", "name": "t", "kind": "test", "status": "success",
             "started_at": "2024-03-20T10:00:00Z", "stopped_at": "2024-03-20T10:30:00Z",
             "tests": [case(Some("s"), "a")]}
        ]}),
    );
    let (o, t) = rollup_matches_exact(&d, range);
    assert_eq!(t["case_count"], 1);
    // api/ci, and web/other through the build job that stayed in the window; not web/ci.
    assert_eq!(o["workflow_count"], 2);
    assert_eq!(o["artifact_count"], 2);

    // A JUnit report replaces the api test job's cases.
    let xml = br#"<testsuite name="j"><testcase classname="k" name="x"/><testcase classname="k" name="y"/></testsuite>"#;
    let a = d.post_xml("/api/v1/runs/gh/acme/api/r1/tests?job=t", xml);
    assert_eq!(a.status, 200, "{}", a.text);
    let (_, t) = rollup_matches_exact(&d, range);
    assert_eq!(t["case_count"], 2);
    // The web case still counts in a window that holds its new day.
    let (_, t) = rollup_matches_exact(&d, "startDate=1709510400&endDate=1710892800");
    assert_eq!(t["case_count"], 3);

    // What the writes kept equals the rollups rebuilt from the stored rows.
    assert_rollups_exact(&d);
}

#[test]
fn rollups_stay_exact_under_stale_deliveries_and_changed_jobs() {
    let d = Daemon::start(&["--now", "2024-03-07T12:00:00Z"]);
    let post = |body: Value| {
        let a = d.post_json("/api/v1/runs", &body.to_string());
        assert_eq!(a.status, 200, "{}", a.text);
    };
    let case =
        |name: &str| json!({"suite": "s", "classname": "c", "name": name, "result": "success"});
    let range = "startDate=1709510400&endDate=1709769600";
    let job = |id: &str, kind: &str, status: &str, start: &str, stop: &str| {
        json!({"id": id, "name": id, "kind": kind, "status": status,
               "started_at": format!("2024-03-05T{start}:00Z"),
               "stopped_at": format!("2024-03-05T{stop}:00Z")})
    };
    let mut t = job("t", "test", "success", "10:00", "10:30");
    t["tests"] = json!([case("a"), case("b")]);
    let mut dep = job("d", "deploy", "success", "11:00", "11:10");
    dep["production"] = json!(true);
    dep["artifacts"] = json!(["img/1"]);
    post(
        json!({"id": "r1", "project": "gh/acme/api", "workflow": "ci", "status": "success",
        "created_at": "2024-03-05T09:00:00Z", "stopped_at": "2024-03-05T13:00:00Z",
        "jobs": [t, dep, job("b", "build", "failed", "12:00", "12:20")]}),
    );
    assert_rollups_exact(&d);

    // A stale delivery of the run (an older stop): the run stays, but its jobs merge one by
    // one. The test job, fresher, becomes a build and drops its cases; the deploy, fresher,
    // stops being a production deploy and lists another image; the build's delivery is older
    // than the stored one and changes nothing; a job new to the run is added.
    let mut dep = job("d", "deploy", "error", "11:00", "11:20");
    dep["artifacts"] = json!(["img/2"]);
    post(
        json!({"id": "r1", "project": "gh/acme/api", "workflow": "ci", "status": "failed",
        "created_at": "2024-03-05T09:00:00Z", "stopped_at": "2024-03-05T12:00:00Z",
        "jobs": [job("t", "build", "success", "10:00", "10:40"), dep,
                 job("b", "build", "success", "12:00", "12:10"),
                 job("n", "test", "timeout", "14:00", "14:30")]}),
    );
    let (o, t) = rollup_matches_exact(&d, range);
    assert_eq!(t["case_count"], 0);
    assert_eq!(t["exec_count"], 1);
    assert_eq!(o["artifact_count"], 1);
    let b = d.get_ok(&format!("/openapi/statistics/build?{range}"));
    // t (success) and b (still failed) on 03-05.
    assert_eq!(
        (b["total"].clone(), b["success"].clone()),
        (json!(2), json!(1))
    );
    let r = d.get_ok(&format!("/openapi/statistics/v2/release?{range}"));
    assert_eq!(r["total"], 0);
    assert_rollups_exact(&d);

    // A test job whose cases arrive in a later, fresher delivery of the job alone.
    let mut n = job("n", "test", "timeout", "14:00", "14:30");
    n["tests"] = json!([case("a"), case("x")]);
    post(
        json!({"id": "r1", "project": "gh/acme/api", "workflow": "ci", "status": "failed",
        "created_at": "2024-03-05T09:00:00Z", "stopped_at": "2024-03-05T12:00:00Z",
        "jobs": [n]}),
    );
    let (_, t) = rollup_matches_exact(&d, range);
    assert_eq!(t["case_count"], 2);
    assert_rollups_exact(&d);
}

#[test]
fn case_and_artifact_numbers_of_a_rolled_back_write_are_forgotten() {
    // The writer remembers the numbers of test cases and artifacts from one group to the next;
    // a write that fails rolls back the rows it created, and their numbers must go with them.
    let d = Daemon::start(&["--now", "2024-03-07T12:00:00Z"]);
    let case =
        |name: &str| json!({"suite": "s", "classname": "c", "name": name, "result": "success"});
    let run = |id: &str, workflow: &str, cases: Vec<Value>, image: &str| {
        json!({"id": id, "project": "gh/acme/api", "workflow": workflow, "status": "success",
            "created_at": "2024-03-05T09:00:00Z", "stopped_at": "2024-03-05T10:00:00Z",
            "jobs": [{"id": "t", "name": "t", "kind": "test", "status": "success",
                      "started_at": "2024-03-05T09:10:00Z", "stopped_at": "2024-03-05T09:20:00Z",
                      "tests": cases},
                     {"id": "d", "name": "d", "kind": "deploy", "status": "success",
                      "started_at": "2024-03-05T09:30:00Z", "stopped_at": "2024-03-05T09:40:00Z",
                      "artifacts": [image]}]})
    };
    // The first run creates case "z" and artifact "img/z"; the second claims the first's
    // pipeline id from another workflow, so the whole request fails and stores nothing.
    let mut thief = run("x2", "other", vec![], "img/y");
    thief["pipeline_id"] = json!(pipestat::hooks::default_pipeline_id("gh/acme/api", "ci"));
    let body = json!([run("x1", "ci", vec![case("z")], "img/z"), thief]);
    let a = d.post_json("/api/v1/runs", &body.to_string());
    assert_eq!(a.status / 100, 4, "{}", a.text);
    assert_eq!(d.get("/api/v1/runs/gh/acme/api/x1").status, 404);
    // A new case and a new artifact now take the numbers the rolled-back rows had; "z" and
    // "img/z" must get numbers of their own.
    let body = run("x3", "ci", vec![case("w"), case("z")], "img/w");
    let a = d.post_json("/api/v1/runs", &body.to_string());
    assert_eq!(a.status, 200, "{}", a.text);
    let body = run("x4", "ci", vec![case("z")], "img/z");
    let a = d.post_json("/api/v1/runs", &body.to_string());
    assert_eq!(a.status, 200, "{}", a.text);
    assert_rollups_exact(&d);
    let (o, t) = rollup_matches_exact(&d, "startDate=1709510400&endDate=1709769600");
    assert_eq!(t["case_count"], 2);
    assert_eq!(o["artifact_count"], 2);
}
