//! Seeded sweeps of hostile input through the real binary (docs/api.md: every HTTP input is
//! untrusted). Every read route of every surface gets random query strings; the webhook
//! fixtures and a native run are delivered again and again with random members changed. No
//! answer may be a 5xx, every error must be in its surface's own shape, the daemon must keep
//! serving, and afterwards the rollups kept at ingest must equal their rebuild from the stored
//! runs, jobs and tests.

use serde_json::{json, Value};

use crate::common::{pipestat, Answer, Daemon, Lcg};

/// Read routes of every surface; `{x}` is replaced by a hostile path segment.
const ROUTES: &[&str] = &[
    "/api/v1/pipelines",
    "/api/v1/runs",
    "/api/v1/runs/gh/acme/api/1",
    "/api/v1/runs/{x}/{x}",
    "/api/v1/runs/gh/acme/api/1/tests",
    "/api/v1/stats/suite,classname",
    "/api/v1/stats/{x}",
    "/api/v1/dora",
    "/api/v1/dora/deployments",
    "/api/v1/dora/{x}",
    "/api/v1/incidents",
    "/api/v2/insights/gh/acme/api/workflows",
    "/api/v2/insights/gh/acme/api/workflows/build-test",
    "/api/v2/insights/gh/acme/api/workflows/build-test/jobs",
    "/api/v2/insights/gh/acme/api/workflows/build-test/jobs/unit-tests",
    "/api/v2/insights/gh/acme/api/workflows/build-test/summary",
    "/api/v2/insights/gh/acme/api/workflows/build-test/test-metrics",
    "/api/v2/insights/gh/acme/api/flaky-tests",
    "/api/v2/insights/gh/acme/api/branches",
    "/api/v2/insights/pages/gh/acme/api/summary",
    "/api/v2/insights/gh/acme/summary",
    "/api/v2/insights/time-series/gh/acme/api/workflows/build-test/jobs",
    "/api/v2/insights/{x}/{x}/{x}/workflows/{x}",
    "/openapi/statistics/overview",
    "/openapi/statistics/build",
    "/openapi/statistics/deploy",
    "/openapi/statistics/test",
    "/openapi/statistics/v2/release",
    "/openapi/statistics/v2/rollback/detail",
    "/openapi/statistics/{x}",
    "/v3/pipelines/{x}/status",
    "/v1/organizations/all/environments/runs/stats/workflow",
    "/v1/o/api/e/jobs/stats/job",
    "/v1/o/{x}/e/{x}/{x}/stats/{x}",
];

/// Query parameters the surfaces read (and a few they do not).
const PARAMS: &[&str] = &[
    "reporting-window",
    "branch",
    "all-branches",
    "job-name",
    "workflow-name",
    "branches",
    "workflow-names",
    "project-names",
    "granularity",
    "start-date",
    "end-date",
    "page-token",
    "projectKey",
    "startDate",
    "endDate",
    "tzo",
    "productNames",
    "startTime",
    "endTime",
    "start_time",
    "end_time",
    "project_name",
    "pageNum",
    "pageSize",
    "envName",
    "select",
    "timeUnit",
    "timeRange",
    "topk",
    "filter",
    "sort",
    "sortby",
    "limit",
    "cursor",
    "project",
    "workflow",
    "status",
    "job",
    "service",
    "env",
    "days",
    "start",
    "end",
    "state",
    "unknown-parameter",
];

/// Values, already percent-encoded where they need to be: valid ones, so that handlers go
/// past their first check, and hostile ones.
const VALUES: &[&str] = &[
    "",
    "0",
    "-1",
    "1",
    "20",
    "99999999999999999999",
    "9223372036854775807",
    "-9223372036854775808",
    "1e309",
    "NaN",
    "1.5",
    "abc",
    "%00",
    "%FF%FE",
    "%E2%80%AE",
    "%27",
    "%22",
    "a%27b--",
    "null",
    "true",
    "main",
    "api",
    "api,web",
    "build-test",
    "production",
    "last-30-days",
    "last-7-days",
    "last-90-days",
    "daily",
    "hourly",
    "day",
    "hour",
    "2026-02-30T00:00:00Z",
    "2026-03-01T00:00:00Z",
    "1709510400",
    "480",
    "03%2F01%2F2026+00%3A00~04%2F01%2F2026+00%3A00",
    "03%2F01%2F2026+00%3A00~",
    "~",
    "sum(run_count),p95(duration)",
    "p95(duration),job_count",
    "sum(",
    "(project+eq+%27gh%2Facme%2Fapi%27)",
    "(project+eq+%27a%27%27+or+1%3D1+--%27)",
    "((((((((((((((((",
    "(duration+gt+1e400)",
    "(status+in+%27success%27,%27failed%27)+and+(workflow+ne+%27x%27)",
];

/// Whether `body` is the error shape of the surface that serves `path` (docs/api.md).
fn error_shape(path: &str, status: u16, body: &Value) -> bool {
    let text = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
    if path.starts_with("/api/v2/") {
        text(&body["message"])
    } else if path.starts_with("/openapi/") {
        body["type"] == "error"
            && text(&body["message"])
            && body["code"] == status
            && text(&body["description"])
            && body["extra"].is_object()
    } else if path.starts_with("/v3/") {
        text(&body["error_code"]) && text(&body["error_msg"])
    } else if path.starts_with("/v1/") {
        body["error"]["code"] == status
            && text(&body["error"]["message"])
            && text(&body["error"]["status"])
    } else {
        text(&body["error"]["code"]) && text(&body["error"]["message"])
    }
}

/// Asserts that an answer is no 5xx, is JSON, and is in its surface's error shape when it is
/// an error.
fn assert_sound(what: &str, path: &str, a: &Answer) {
    assert!(a.status < 500, "{what}: {} {}", a.status, a.text);
    assert!(!a.body.is_null(), "{what}: not JSON: {}", a.text);
    if a.status >= 400 {
        assert!(
            error_shape(path, a.status, &a.body),
            "{what}: {} not in the shape of its surface: {}",
            a.status,
            a.text
        );
    }
}

#[test]
fn random_query_strings_on_every_read_route_are_answered_in_the_surface_shape() {
    let d = Daemon::start(&["--demo", "--now", "2026-03-01T12:00:00Z"]);
    let mut g = Lcg(2026);
    let (mut ok, mut refused) = (0, 0);
    for i in 0..2_000 {
        let mut path = g.pick(ROUTES).to_owned();
        while path.contains("{x}") {
            let segment = match g.pick(VALUES) {
                "" => "x",
                v => v,
            };
            path = path.replacen("{x}", segment, 1);
        }
        let mut query: Vec<String> = (0..g.next(6))
            .map(|_| format!("{}={}", g.pick(PARAMS), g.pick(VALUES)))
            .collect();
        if g.next(10) == 0 {
            query.push(g.pick(&["%", "%%", "=&=", "a=%zz", "&&&", "x"]).to_owned());
        }
        let url = if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{}", query.join("&"))
        };
        let a = d.get(&url);
        assert_sound(&format!("request {i}: GET {url}"), &path, &a);
        match a.status {
            200 => ok += 1,
            400..=499 => refused += 1,
            s => panic!("GET {url}: unexpected {s}"),
        }
    }
    // The sweep reached past the parameter checks, and the checks refused what they should.
    assert!(ok > 300 && refused > 300, "200: {ok}, 4xx: {refused}");
    assert_eq!(d.get("/healthz").status, 200);
}

/// A value that replaces a member: hostile or off-type, or a plausible one that moves a
/// run to another state.
fn random_value(g: &mut Lcg) -> Value {
    match g.next(22) {
        0 => Value::Null,
        1 => json!(0),
        2 => json!(-1),
        3 => json!(1.5),
        4 => json!(""),
        5 => json!("x"),
        6 => json!("2026-02-30T00:00:00Z"),
        7 => json!(1e30),
        8 => json!(true),
        9 => json!([]),
        10 => json!({}),
        11 => json!("a".repeat(2_000)),
        12 => json!("é\u{0}"),
        13 => json!(-1_000_000_000_000_000_000_i64),
        14 => json!("2026-03-01T10:00:00+08:00"),
        15 => json!(1),
        16 => json!(2),
        17 => json!(g.pick(&["success", "failure", "failed", "cancelled", "canceled"])),
        18 => json!(g.pick(&["completed", "queued", "in_progress", "running", "pending"])),
        19 => json!(g.pick(&["build", "test", "deploy", "production", "staging"])),
        20 => json!(g.pick(&["main", "develop", "feature/x"])),
        _ => json!(g.next(1_000_000) * 1_000),
    }
}

/// `v` with one to three of its members, at any depth, replaced by a random value (or, one
/// time in four, removed).
fn mutate(v: &Value, g: &mut Lcg) -> Value {
    fn members(v: &Value) -> u64 {
        match v {
            Value::Object(map) => map.values().map(|m| 1 + members(m)).sum(),
            Value::Array(items) => items.iter().map(members).sum(),
            _ => 0,
        }
    }
    /// Copies `v`, numbering its members in order from `*seen` on, and changing those in
    /// `targets`.
    fn walk(v: &Value, g: &mut Lcg, targets: &[u64], seen: &mut u64) -> Value {
        match v {
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, m) in map {
                    *seen += 1;
                    if !targets.contains(&(*seen - 1)) {
                        out.insert(k.clone(), walk(m, g, targets, seen));
                    } else {
                        *seen += members(m);
                        if g.next(4) > 0 {
                            out.insert(k.clone(), random_value(g));
                        }
                    }
                }
                Value::Object(out)
            }
            Value::Array(items) => {
                Value::Array(items.iter().map(|m| walk(m, g, targets, seen)).collect())
            }
            other => other.clone(),
        }
    }
    let n = members(v).max(1);
    let targets: Vec<u64> = (0..1 + g.next(3)).map(|_| g.next(n) as u64).collect();
    walk(v, g, &targets, &mut 0)
}

/// A native run of one of a few ids, so that deliveries overwrite each other.
fn native_run(g: &mut Lcg) -> Value {
    let day = 1 + g.next(5);
    let at = |h: i64, m: i64| format!("2026-03-{day:02}T{h:02}:{m:02}:00Z");
    json!({
        "id": format!("n{}", g.next(8)),
        "project": g.pick(&["gh/acme/api", "gl/acme/web"]),
        "workflow": g.pick(&["build-test", "nightly"]),
        "branch": g.pick(&["main", "develop"]),
        "commit": g.pick(&["9f1c2e7", "a1b2c3d"]),
        "status": g.pick(&["success", "failed", "running"]),
        "created_at": at(10, 0), "started_at": at(10, 1), "stopped_at": at(10, 30),
        "jobs": [
            {"name": "compile", "kind": "build", "status": "success",
             "started_at": at(10, 1), "stopped_at": at(10, 5)},
            {"name": "unit", "kind": "test", "status": g.pick(&["success", "failed"]),
             "started_at": at(10, 5), "stopped_at": at(10, 20),
             "tests": [
                {"name": "test_login", "classname": "tests.auth",
                 "result": g.pick(&["success", "failure"]), "duration": 0.4},
                {"name": "test_logout", "classname": "tests.auth", "result": "success",
                 "duration": 0.2}]},
            {"name": "deploy", "kind": "deploy", "status": g.pick(&["success", "failed"]),
             "env": "production", "production": true, "service": "api",
             "started_at": at(10, 20), "stopped_at": at(10, 29)}
        ]
    })
}

#[test]
fn mutated_redeliveries_keep_every_rollup_exact() {
    let d = crate::webhooks::daemon("2026-03-10T00:00:00Z");
    let github: Vec<(&str, Value)> = [
        ("workflow_run", "completed.payload.json"),
        ("workflow_run", "requested.payload.json"),
        ("workflow_run", "completed.with-pull-requests.payload.json"),
        (
            "workflow_job",
            "completed.failure.with-organization.payload.json",
        ),
        (
            "workflow_job",
            "completed.success.with-organization.payload.json",
        ),
        ("workflow_job", "in_progress.payload.json"),
        ("workflow_job", "queued.payload.json"),
        ("deployment", "payload.json"),
        ("deployment_status", "payload.json"),
        ("deployment_status", "gh-pages.payload.json"),
        ("push", "with-new-branch.json"),
        ("issues", "reopened.json"),
    ]
    .iter()
    .map(|(event, file)| {
        (
            *event,
            crate::webhooks::read_json(&format!("github/{event}/{file}")),
        )
    })
    .collect();
    let gitlab: Vec<(&str, Value)> = [
        ("Pipeline Hook", "gitlab/pipeline_hook.json"),
        ("Job Hook", "gitlab/job_hook.json"),
        ("Push Hook", "gitlab/push_hook.json"),
        ("Issue Hook", "gitlab/issue_hook.json"),
    ]
    .iter()
    .map(|(event, file)| (*event, crate::webhooks::read_json(file)))
    .collect();

    let mut g = Lcg(7);
    let mut accepted = 0;
    for i in 0..900 {
        let (path, a) = match g.next(3) {
            0 => {
                let (event, payload) = &github[g.next(github.len() as u64) as usize];
                let body = serde_json::to_vec(&mutate(payload, &mut g)).unwrap();
                (
                    "/webhooks/github",
                    crate::webhooks::github(&d, event, &body),
                )
            }
            1 => {
                let (event, payload) = &gitlab[g.next(gitlab.len() as u64) as usize];
                let body = serde_json::to_vec(&mutate(payload, &mut g)).unwrap();
                (
                    "/webhooks/gitlab",
                    crate::webhooks::gitlab(&d, event, &body),
                )
            }
            _ => {
                let run = native_run(&mut g);
                let body = mutate(&run, &mut g).to_string();
                ("/api/v1/runs", d.post_json("/api/v1/runs", &body))
            }
        };
        assert_sound(&format!("delivery {i} to {path}"), path, &a);
        match a.status {
            200..=202 => accepted += 1,
            400 => {}
            s => panic!("delivery {i} to {path}: unexpected {s}: {}", a.text),
        }
    }
    assert!(accepted > 300, "only {accepted} deliveries accepted");
    assert_eq!(d.get("/healthz").status, 200);

    let mut conn = d.db();
    assert!(!crate::zadig::rollup_rows(&conn).is_empty());
    assert!(!crate::circleci_rollup::kept(&conn).is_empty());
    assert!(!crate::apigee_rollup::kept(&conn).is_empty());
    crate::common::assert_every_rollup_equals_its_rebuild(&mut conn);
    drop(conn);

    let check = pipestat(d.dir.path(), &["check", "--db", "pipestat.db"]);
    assert!(check.status.success(), "{check:?}");
}
