//! Native ingestion and reading back (docs/api.md), through the real daemon.

use serde_json::{json, Value};

use crate::common::{fixture, pipestat, run_json, Daemon};

fn count_runs(d: &Daemon) -> usize {
    let a = d.get("/api/v1/runs?limit=1000");
    assert_eq!(a.status, 200, "{}", a.text);
    a.body["items"].as_array().unwrap().len()
}

#[test]
fn a_run_reads_back_as_sent() {
    let d = Daemon::start(&[]);
    let body = r#"{
        "id": "run-7", "project": "github/acme/api", "project_key": "api-svc", "default_branch": "trunk",
        "workflow": "build-test", "number": 42, "branch": "feature/x", "commit": "abc123",
        "actor": "alice", "trigger": "push", "committed_at": "2026-03-01T09:55:00+01:00",
        "status": "failed", "created_at": 1772359200, "started_at": "2026-03-01T10:00:30Z",
        "stopped_at": "2026-03-01T10:05:00.250Z", "credits_used": 17, "detail_url": "https://ci/7",
        "parameters": [{"name": "ENV", "value": "staging"}], "unknown_field": {"ignored": true},
        "jobs": [
            {"name": "compile", "kind": "build", "stage": "build", "status": "success",
             "started_at": "2026-03-01T10:00:30Z", "stopped_at": "2026-03-01T10:02:00Z",
             "artifacts": ["registry/acme/api:abc123"]},
            {"id": "j-2", "name": "unit", "kind": "test", "stage": "test", "status": "failed",
             "error_code": "E1", "error_msg": "2 tests failed",
             "tests": [{"name": "t_ok", "classname": "m.T", "result": "success", "duration": 0.25},
                       {"name": "t_bad", "suite": "s", "result": "failure"}]},
            {"name": "ship", "kind": "deploy", "status": "skipped", "env": "production",
             "cluster": "c1", "service": "api", "service_type": "k8s", "production": true}
        ]}"#;
    let a = d.post_json("/api/v1/runs", body);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body, json!({"accepted": 1, "created": 1, "updated": 0}));

    let r = d.get("/api/v1/runs/gh/acme/api/run-7");
    assert_eq!(r.status, 200, "{}", r.text);
    let run = &r.body;
    // The slug is canonical; 1772359200 is 2026-03-01T10:00:00Z; +01:00 is moved to UTC.
    assert_eq!(run["project"], "gh/acme/api");
    assert_eq!(run["project_key"], "api-svc");
    assert_eq!(run["default_branch"], "trunk");
    assert_eq!(run["number"], 42);
    assert_eq!(run["created_at"], "2026-03-01T10:00:00.000Z");
    assert_eq!(run["committed_at"], "2026-03-01T08:55:00.000Z");
    assert_eq!(run["stopped_at"], "2026-03-01T10:05:00.250Z");
    assert_eq!(run["status"], "failed");
    assert_eq!(run["credits_used"], 17);
    assert_eq!(
        run["parameters"],
        json!([{"name": "ENV", "value": "staging"}])
    );
    assert!(run.get("unknown_field").is_none());
    let jobs = run["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 3);
    // A job without an id gets "<run id>/<index>"; without created_at, the run's.
    assert_eq!(jobs[0]["id"], "run-7/0");
    assert_eq!(jobs[0]["created_at"], "2026-03-01T10:00:00.000Z");
    assert_eq!(jobs[0]["artifacts"], json!(["registry/acme/api:abc123"]));
    assert_eq!(jobs[1]["id"], "j-2");
    assert_eq!(jobs[1]["error_msg"], "2 tests failed");
    assert_eq!(jobs[1]["tests"].as_array().unwrap().len(), 2);
    assert_eq!(jobs[1]["tests"][0]["duration"], 0.25);
    assert_eq!(jobs[1]["tests"][1]["result"], "failure");
    assert_eq!(jobs[2]["kind"], "deploy");
    assert_eq!(jobs[2]["production"], true);
    assert_eq!(jobs[2]["env"], "production");
    // The default pipeline id: printf 'gh/acme/api/build-test' | sha256sum | cut -c1-32
    assert_eq!(run["pipeline_id"], "34dc4c451bbd346f524cd2238f023842");
}

#[test]
fn arrays_and_ndjson_and_default_numbers() {
    let d = Daemon::start(&[]);
    let array = format!(
        "[{}, {}]",
        run_json("a", "success", ""),
        run_json("b", "success", "")
    );
    let a = d.post_json("/api/v1/runs", &array);
    assert_eq!(
        a.body,
        json!({"accepted": 2, "created": 2, "updated": 0}),
        "{}",
        a.text
    );
    let ndjson = format!(
        "{}\n\n{}\n",
        run_json("c", "success", ""),
        run_json("d", "queued", "")
    );
    let a = d.call(
        "POST",
        "/api/v1/runs",
        &[("Content-Type", "application/x-ndjson")],
        Some(ndjson.as_bytes()),
    );
    assert_eq!(
        a.body,
        json!({"accepted": 2, "created": 2, "updated": 0}),
        "{}",
        a.text
    );
    // Numbers default to the workflow's previous maximum + 1: a=1, b=2, c=3, d=4; then 10 given, then 11.
    let a = d.post_json("/api/v1/runs", &run_json("e", "success", r#""number":10"#));
    assert_eq!(a.status, 200);
    d.post_json("/api/v1/runs", &run_json("f", "success", ""));
    let num = |id: &str| d.get(&format!("/api/v1/runs/gh/acme/api/{id}")).body["number"].clone();
    assert_eq!(
        (num("a"), num("b"), num("c"), num("d")),
        (json!(1), json!(2), json!(3), json!(4))
    );
    assert_eq!((num("e"), num("f")), (json!(10), json!(11)));
    assert_eq!(count_runs(&d), 6);
}

#[test]
fn redelivery_never_duplicates_and_stale_never_wins() {
    let d = Daemon::start(&[]);
    let done = run_json(
        "r1",
        "success",
        r#""started_at":"2026-03-01T10:00:10Z","stopped_at":"2026-03-01T10:05:00Z""#,
    );
    assert_eq!(d.post_json("/api/v1/runs", &done).body["created"], 1);
    // The same delivery again: a tie goes to the later delivery, still one run.
    assert_eq!(
        d.post_json("/api/v1/runs", &done).body,
        json!({"accepted": 1, "created": 0, "updated": 1})
    );
    // A late "running" delivery is stale: accepted, but neither created nor updated.
    let late = run_json("r1", "running", r#""started_at":"2026-03-01T10:00:10Z""#);
    assert_eq!(
        d.post_json("/api/v1/runs", &late).body,
        json!({"accepted": 1, "created": 0, "updated": 0})
    );
    assert_eq!(
        d.get("/api/v1/runs/gh/acme/api/r1").body["status"],
        "success"
    );
    // A terminal delivery that stopped earlier is stale too.
    let earlier = run_json(
        "r1",
        "failed",
        r#""started_at":"2026-03-01T10:00:10Z","stopped_at":"2026-03-01T10:04:00Z""#,
    );
    assert_eq!(d.post_json("/api/v1/runs", &earlier).body["updated"], 0);
    assert_eq!(
        d.get("/api/v1/runs/gh/acme/api/r1").body["status"],
        "success"
    );
    // A re-run that stopped later wins.
    let later = run_json(
        "r1",
        "failed",
        r#""started_at":"2026-03-01T10:00:10Z","stopped_at":"2026-03-01T10:09:00Z""#,
    );
    assert_eq!(d.post_json("/api/v1/runs", &later).body["updated"], 1);
    let r = d.get("/api/v1/runs/gh/acme/api/r1").body;
    assert_eq!(r["status"], "failed");
    assert_eq!(r["stopped_at"], "2026-03-01T10:09:00.000Z");
    assert_eq!(count_runs(&d), 1);
}

#[test]
fn jobs_merge_by_id_under_the_same_rule() {
    let d = Daemon::start(&[]);
    let first = run_json(
        "r",
        "running",
        r#""jobs":[{"id":"build","name":"build","status":"success","stopped_at":"2026-03-01T10:02:00Z","started_at":"2026-03-01T10:01:00Z"}]"#,
    );
    d.post_json("/api/v1/runs", &first);
    // A later delivery names another job and a stale state of the first one.
    let second = run_json(
        "r",
        "running",
        r#""jobs":[{"id":"build","name":"build","status":"running"},{"id":"test","name":"test","kind":"test","status":"queued"}]"#,
    );
    assert_eq!(d.post_json("/api/v1/runs", &second).status, 200);
    let jobs = d.get("/api/v1/runs/gh/acme/api/r").body["jobs"].clone();
    assert_eq!(jobs.as_array().unwrap().len(), 2);
    assert_eq!(jobs[0]["id"], "build");
    assert_eq!(jobs[0]["status"], "success");
    assert_eq!(jobs[1]["id"], "test");
}

#[test]
fn a_rejected_batch_stores_nothing() {
    let d = Daemon::start(&[]);
    let bad = run_json(
        "z",
        "success",
        r#""jobs":[{"name":"j","status":"finished"}]"#,
    );
    let body = format!(
        "[{}, {}, {bad}]",
        run_json("x", "success", ""),
        run_json("y", "success", "")
    );
    let a = d.post_json("/api/v1/runs", &body);
    assert_eq!(a.status, 400);
    let msg = a.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("item 2") && msg.contains("jobs[0].status"),
        "{msg}"
    );
    assert_eq!(a.body["error"]["code"], "bad_request");
    assert_eq!(count_runs(&d), 0);
    // NDJSON likewise: the second line is bad, the first is not stored.
    let nd = format!("{}\n{{\"id\":1}}\n", run_json("x", "success", ""));
    let a = d.call(
        "POST",
        "/api/v1/runs",
        &[("Content-Type", "application/x-ndjson")],
        Some(nd.as_bytes()),
    );
    assert_eq!(a.status, 400);
    assert!(a.text.contains("item 1"), "{}", a.text);
    assert_eq!(count_runs(&d), 0);
}

#[test]
fn hostile_bodies_are_400_and_the_daemon_keeps_serving() {
    let d = Daemon::start(&[]);
    assert_eq!(
        d.post_json("/api/v1/runs", &run_json("keep", "success", ""))
            .status,
        200
    );
    let big = "x".repeat(8 << 20);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases: Vec<(String, &str)> = vec![
        ("{\"id\": \"a\",".to_owned(), "malformed JSON"),
        ("".to_owned(), "malformed JSON"),
        ("42".to_owned(), "body must be"),
        (
            run_json("a", "success", "").replace("\"a\"", "7"),
            "field \"id\"",
        ),
        (
            run_json("a", "success", "").replace("2026-03-01T10:00:00Z", "2026-13-01T10:00:00Z"),
            "field \"created_at\"",
        ),
        (
            run_json("a", "success", "").replace("2026-03-01T10:00:00Z", "yesterday"),
            "field \"created_at\"",
        ),
        (run_json("a", "succeeded", ""), "field \"status\""),
        (
            run_json("a", "success", r#""credits_used":-1"#),
            "field \"credits_used\"",
        ),
        (
            run_json("a", "success", r#""credits_used":"5""#),
            "field \"credits_used\"",
        ),
        (
            run_json(
                "a",
                "success",
                r#""jobs":[{"name":"j","status":"success","kind":"compile"}]"#,
            ),
            "jobs[0].kind",
        ),
        (
            run_json("a", "success", r#""jobs":{"name":"j"}"#),
            "field \"jobs\"",
        ),
        (
            // The second job's default id, "a/1", is the first job's explicit id.
            run_json(
                "a",
                "success",
                r#""jobs":[{"id":"a/1","name":"j","status":"success"},{"name":"k","status":"success"}]"#,
            ),
            "field \"jobs[1].id\": \"a/1\" is also the id of jobs[0]",
        ),
        (
            run_json(
                "a",
                "success",
                r#""jobs":[{"name":"j","status":"success","tests":[{"name":"t","result":"passed"}]}]"#,
            ),
            "jobs[0].tests[0].result",
        ),
        (
            run_json(
                "a",
                "success",
                r#""started_at":"2026-03-01T10:05:00Z","stopped_at":"2026-03-01T10:00:00Z""#,
            ),
            "before started_at",
        ),
        (
            run_json("a", "success", "").replace("\"project\":\"gh/acme/api\",", ""),
            "field \"project\": is required",
        ),
        (
            run_json("a", "success", "").replace("gh/acme/api", "svn/acme/api"),
            "field \"project\"",
        ),
        (run_json(&big, "success", ""), "field \"id\": longer than"),
        (
            run_json("a", "success", &format!(r#""branch":"{big}""#)),
            "field \"branch\": longer than",
        ),
        (deep, "malformed JSON"),
        (
            run_json("a", "success", "").replace("\"a\"", &format!("\"{}\"", "y".repeat(257))),
            "field \"id\"",
        ),
    ];
    for (body, expect) in &cases {
        let a = d.post_json("/api/v1/runs", body);
        assert_eq!(a.status, 400, "{expect}: {}", a.text);
        let msg = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(expect), "expected {expect:?} in {msg:?}");
    }
    assert_eq!(d.get("/healthz").status, 200);
    let a = d.get("/api/v1/runs");
    assert_eq!(a.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(a.body["items"][0]["id"], "keep");
}

/// A run or job that stopped before it was created is a 400 naming the item and the field,
/// over HTTP (a JSON array and NDJSON) and in `pipestat import`; nothing of the request is
/// stored. Stopping when created, and starting before created (clocks differ), are fine.
#[test]
fn stopped_before_created_is_400() {
    // run_json's runs are created at 2026-03-01T10:00:00Z.
    let cases: Vec<(String, &str)> = vec![
        (
            run_json("a", "success", r#""stopped_at":"2026-03-01T09:59:59Z""#),
            "field \"stopped_at\": is before created_at",
        ),
        (
            // Started before created too: still before created_at, the start does not excuse it.
            run_json(
                "a",
                "success",
                r#""started_at":"2026-03-01T09:00:00Z","stopped_at":"2026-03-01T09:30:00Z""#,
            ),
            "field \"stopped_at\": is before created_at",
        ),
        (
            // The job's created_at defaults to its run's.
            run_json(
                "a",
                "success",
                r#""jobs":[{"name":"j","status":"success","stopped_at":"2026-03-01T09:00:00Z"}]"#,
            ),
            "field \"jobs[0].stopped_at\": is before created_at",
        ),
        (
            // A job's own created_at, later than its run's, and a stop between the two.
            run_json(
                "a",
                "success",
                r#""jobs":[{"name":"j","status":"success"},{"name":"k","status":"success","created_at":"2026-03-01T11:00:00Z","stopped_at":"2026-03-01T10:30:00Z"}]"#,
            ),
            "field \"jobs[1].stopped_at\": is before created_at",
        ),
    ];
    let good = run_json("good", "success", "");
    let d = Daemon::start(&[]);
    for (body, expect) in &cases {
        // Each case after a good run in the same request: the whole request is refused.
        let a = d.post_json("/api/v1/runs", &format!("[{good}, {body}]"));
        assert_eq!(a.status, 400, "{expect}: {}", a.text);
        let msg = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with("item 1: "), "{msg}");
        assert!(msg.contains(expect), "expected {expect:?} in {msg:?}");
        let a = d.call(
            "POST",
            "/api/v1/runs",
            &[("Content-Type", "application/x-ndjson")],
            Some(format!("{good}\n{body}\n").as_bytes()),
        );
        assert_eq!(a.status, 400, "{expect}: {}", a.text);
        let msg = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.starts_with("item 1 (line 2): "), "{msg}");
        assert!(msg.contains(expect), "expected {expect:?} in {msg:?}");
    }
    assert_eq!(count_runs(&d), 0);

    // At the boundaries: stopping the instant the run and the job were created, and a job
    // that started before it was created, are stored as sent.
    let ok = run_json(
        "b",
        "failed",
        r#""stopped_at":"2026-03-01T10:00:00Z","jobs":[{"name":"j","status":"failed","created_at":"2026-03-01T10:00:00Z","started_at":"2026-03-01T09:59:00Z","stopped_at":"2026-03-01T10:00:00Z"}]"#,
    );
    let a = d.post_json("/api/v1/runs", &ok);
    assert_eq!(a.status, 200, "{}", a.text);
    let back = d.get_ok("/api/v1/runs/gh/acme/api/b");
    assert_eq!(back["stopped_at"], "2026-03-01T10:00:00.000Z");
    assert_eq!(back["jobs"][0]["started_at"], "2026-03-01T09:59:00.000Z");
    assert_eq!(back["jobs"][0]["stopped_at"], "2026-03-01T10:00:00.000Z");

    // pipestat import skips such lines, naming the line and the field, and keeps the rest.
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = std::iter::once(run_json("c", "success", ""))
        .chain(cases.iter().map(|(body, _)| body.replace("\"a\"", "\"d\"")))
        .collect();
    std::fs::write(dir.path().join("runs.ndjson"), lines.join("\n")).unwrap();
    let out = pipestat(dir.path(), &["import", "runs.ndjson"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for (i, (_, expect)) in cases.iter().enumerate() {
        let want = format!("line {}: {expect}", i + 2);
        assert!(stderr.contains(&want), "expected {want:?} in {stderr}");
    }
    assert!(
        stderr.contains("4 of 5 lines were bad and skipped"),
        "{stderr}"
    );
    assert!(stderr.contains("1 runs created"), "{stderr}");
}

/// Ids and names holding a NUL character are 400s naming the field; nothing of the request
/// is stored.
#[test]
fn nul_characters_in_ids_and_names_are_400() {
    let d = Daemon::start(&[]);
    let cases: Vec<(String, &str)> = vec![
        (
            run_json("a\\u0000b", "success", ""),
            "field \"id\": must not contain a NUL",
        ),
        (
            run_json("a", "success", "").replace("\"ci\"", "\"c\\u0000i\""),
            "field \"workflow\": must not contain a NUL",
        ),
        (
            run_json("a", "success", r#""branch":"main\u0000x""#),
            "field \"branch\": must not contain a NUL",
        ),
        (
            run_json(
                "a",
                "success",
                r#""jobs":[{"name":"unit\u0000","status":"success"}]"#,
            ),
            "field \"jobs[0].name\": must not contain a NUL",
        ),
        (
            run_json(
                "a",
                "success",
                r#""jobs":[{"id":"\u0000","name":"j","status":"success"}]"#,
            ),
            "field \"jobs[0].id\": must not contain a NUL",
        ),
        (
            run_json(
                "a",
                "success",
                r#""jobs":[{"name":"j","status":"success","tests":[{"name":"t\u0000","result":"success"}]}]"#,
            ),
            "field \"jobs[0].tests[0].name\": must not contain a NUL",
        ),
    ];
    for (body, expect) in &cases {
        // Each case after a good run in the same request: the whole request is refused.
        let body = format!("[{}, {body}]", run_json("good", "success", ""));
        let a = d.post_json("/api/v1/runs", &body);
        assert_eq!(a.status, 400, "{expect}: {}", a.text);
        let msg = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(expect), "expected {expect:?} in {msg:?}");
        assert!(msg.starts_with("item 1: "), "{msg}");
    }
    assert_eq!(count_runs(&d), 0);
    // A NUL in free text is kept.
    let ok = run_json(
        "b",
        "failed",
        r#""jobs":[{"name":"j","status":"failed","error_msg":"bad\u0000byte"}]"#,
    );
    let a = d.post_json("/api/v1/runs", &ok);
    assert_eq!(a.status, 200, "{}", a.text);
    let back = d.get_ok("/api/v1/runs/gh/acme/api/b");
    assert_eq!(back["jobs"][0]["error_msg"], "bad\u{0}byte");
}

#[test]
fn body_limit_content_type_routes_and_methods() {
    let d = Daemon::start(&["--max-body", "1000"]);
    let big = run_json(
        "a",
        "success",
        &format!(r#""branch":"{}""#, "b".repeat(2000)),
    );
    let a = d.post_json("/api/v1/runs", &big);
    assert_eq!(a.status, 413, "{}", a.text);
    assert_eq!(a.body["error"]["code"], "payload_too_large");
    let a = d.call(
        "POST",
        "/api/v1/runs",
        &[("Content-Type", "text/plain")],
        Some(b"{}"),
    );
    assert_eq!(a.status, 415);
    let a = d.get("/api/v1/nothing");
    assert_eq!(a.status, 404);
    assert_eq!(a.body["error"]["code"], "not_found");
    let a = d.call("DELETE", "/api/v1/runs", &[], None);
    assert_eq!(a.status, 405);
    assert_eq!(a.allow.as_deref(), Some("GET, POST"));
    assert_eq!(d.get("/api/v1/runs/gh/acme/api/none").status, 404);
    assert_eq!(d.get("/readyz").body, json!({"status": "ready"}));
    assert_eq!(count_runs(&d), 0);
}

#[test]
fn listing_pages_newest_first_with_filters() {
    let d = Daemon::start(&[]);
    let runs: Vec<String> = (0..5)
        .map(|i| {
            format!(
                r#"{{"id":"r{i}","project":"gh/acme/api","workflow":"ci","branch":"{}","status":"{}","created_at":"2026-03-0{}T10:00:00Z"}}"#,
                if i % 2 == 0 { "main" } else { "dev" },
                if i == 4 { "failed" } else { "success" },
                i + 1
            )
        })
        .collect();
    d.post_json("/api/v1/runs", &format!("[{}]", runs.join(",")));
    d.post_json(
        "/api/v1/runs",
        r#"{"id":"o","project":"gh/acme/web","workflow":"ci","status":"success","created_at":"2026-03-09T10:00:00Z"}"#,
    );
    let mut seen = Vec::new();
    let mut url = "/api/v1/runs?project=acme/api&limit=2".to_owned();
    loop {
        let a = d.get(&url);
        assert_eq!(a.status, 200, "{}", a.text);
        for item in a.body["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match a.body["next_cursor"].as_str() {
            Some(c) => url = format!("/api/v1/runs?project=acme/api&limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ["r4", "r3", "r2", "r1", "r0"]);
    let ids = |q: &str| -> Vec<String> {
        d.get(&format!("/api/v1/runs?{q}")).body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids("branch=main&project=gh/acme/api"), ["r4", "r2", "r0"]);
    assert_eq!(ids("status=failed"), ["r4"]);
    assert_eq!(ids("workflow=ci&limit=1"), ["o"]);
    assert_eq!(d.get("/api/v1/runs?status=bogus").status, 400);
    assert_eq!(d.get("/api/v1/runs?limit=0").status, 400);
    assert_eq!(d.get("/api/v1/runs?cursor=%%%").status, 400);
    let p = d.get("/api/v1/pipelines").body;
    let items = p["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["project"], "gh/acme/api");
    assert_eq!(items[0]["run_count"], 5);
    assert_eq!(items[0]["last_run_at"], "2026-03-05T10:00:00.000Z");
    assert_eq!(items[0]["pipeline_id"].as_str().unwrap().len(), 32);
}

/// Counts per fixture, derived independently with Python's xml.etree: a testcase with an
/// <error> child is an error, else with <failure> a failure, else with <skipped> skipped.
const FIXTURE_COUNTS: &[(&str, [u64; 4])] = &[
    ("empty-jest-junit-empty-testsuite.xml", [0, 0, 0, 0]),
    (
        "java-TEST-org.apache.pulsar.AddMissingPatchVersionTest.xml",
        [0, 1, 0, 1],
    ),
    ("java-pulsar-test-report.xml", [793, 1, 0, 14]),
    ("jest-jest-test-results.xml", [4207, 2, 0, 30]),
    ("jest-junit.xml", [1, 4, 0, 1]),
    ("junit-with-message.xml", [0, 1, 0, 0]),
    ("nette-tester-tester-v1.7-report.xml", [61, 1, 0, 3]),
    ("phpunit-phpunit.xml", [10, 2, 0, 0]),
    ("python-xunit-pytest.xml", [6, 2, 0, 2]),
    ("python-xunit-unittest.xml", [4, 1, 1, 2]),
    ("swift-xunit.xml", [2, 1, 0, 0]),
];

#[test]
fn every_fixture_report_attaches_with_the_right_counts() {
    let d = Daemon::start(&[]);
    assert_eq!(
        d.post_json("/api/v1/runs", &run_json("r", "success", ""))
            .status,
        200
    );
    for (name, [ok, fail, err, skip]) in FIXTURE_COUNTS {
        let xml = std::fs::read(fixture(&format!("junit/{name}"))).unwrap();
        let path = format!("/api/v1/runs/gh/acme/api/r/tests?job={name}");
        let a = d.post_xml(&path, &xml);
        assert_eq!(a.status, 200, "{name}: {}", a.text);
        let b = &a.body;
        assert_eq!(
            [&b["success"], &b["failure"], &b["error"], &b["skipped"]],
            [&json!(ok), &json!(fail), &json!(err), &json!(skip)],
            "{name}"
        );
        assert_eq!(b["cases"], json!(ok + fail + err + skip), "{name}");
        assert_eq!(b["job"]["created"], true);
    }
    // Re-uploading a report replaces that job's cases instead of doubling them.
    let xml = std::fs::read(fixture("junit/python-xunit-pytest.xml")).unwrap();
    let path = "/api/v1/runs/gh/acme/api/r/tests?job=python-xunit-pytest.xml";
    let a = d.call("POST", path, &[("Content-Type", "text/xml")], Some(&xml));
    assert_eq!(a.body["job"]["created"], false);
    let run = d.get("/api/v1/runs/gh/acme/api/r").body;
    let jobs = run["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), FIXTURE_COUNTS.len());
    let pytest = jobs
        .iter()
        .find(|j| j["name"] == "python-xunit-pytest.xml")
        .unwrap();
    assert_eq!(pytest["tests"].as_array().unwrap().len(), 10);
    assert_eq!(pytest["kind"], "test");
    // pytest's report has failures, so the job made for it failed.
    assert_eq!(pytest["status"], "failed");
    let total: usize = jobs
        .iter()
        .map(|j| j["tests"].as_array().unwrap().len())
        .sum();
    let expected: u64 = FIXTURE_COUNTS
        .iter()
        .map(|(_, c)| c.iter().sum::<u64>())
        .sum();
    assert_eq!(total as u64, expected);
}

#[test]
fn bad_reports_are_400_naming_the_line() {
    let d = Daemon::start(&[]);
    d.post_json("/api/v1/runs", &run_json("r", "success", ""));
    let xml =
        b"<testsuites>\n<testsuite name=\"s\">\n<testcase name=\"a\"></testsuite>\n</testsuites>\n";
    let a = d.post_xml("/api/v1/runs/gh/acme/api/r/tests", xml);
    assert_eq!(a.status, 400, "{}", a.text);
    let msg = a.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("line 3"), "{msg}");
    let a = d.post_xml("/api/v1/runs/gh/acme/api/missing/tests", b"<testsuite/>");
    assert_eq!(a.status, 404);
    let a = d.call(
        "POST",
        "/api/v1/runs/gh/acme/api/r/tests",
        &[("Content-Type", "application/json")],
        Some(b"{}"),
    );
    assert_eq!(a.status, 415);
    let run = d.get("/api/v1/runs/gh/acme/api/r").body;
    assert_eq!(run["jobs"], json!([]));
}

#[test]
fn rollbacks_are_stored_by_key_or_slug() {
    let d = Daemon::start(&[]);
    d.post_json(
        "/api/v1/runs",
        &run_json("r", "success", r#""project_key":"api""#),
    );
    let rb = json!([
        {"id": "rb1", "project": "api", "env": "prod", "env_type": "production", "production": true,
         "operation_type": "service", "service": "api", "service_type": "k8s",
         "origin_service": {"revision": 3}, "update_service": {"revision": 2},
         "create_by": {"name": "alice"}, "created_at": "2026-03-02T00:00:00Z"},
        {"project": "gl/acme/platform/billing", "created_at": 1772409600}
    ]);
    let a = d.post_json("/api/v1/rollbacks", &rb.to_string());
    assert_eq!(a.body, json!({"accepted": 2}), "{}", a.text);
    // Redelivery of a known id replaces it.
    let a = d.post_json("/api/v1/rollbacks", &rb[0].to_string());
    assert_eq!(a.status, 200);
    let bad = json!({"project": "nope", "created_at": 1});
    let a = d.post_json("/api/v1/rollbacks", &bad.to_string());
    assert_eq!(a.status, 400);
    assert!(a.text.contains("no project has the key"), "{}", a.text);
    let bad = json!({"project": "api", "created_at": 1, "origin_service": "text"});
    let a = d.post_json("/api/v1/rollbacks", &bad.to_string());
    assert_eq!(a.status, 400);
    assert!(a.text.contains("origin_service"), "{}", a.text);
    let _: Value = a.body;
}

/// docs/api.md, "Tests replace": a job delivered again without `tests` keeps its stored test
/// cases, also when the delivery updates it (fresher) and moves it in time; with `tests`, they
/// replace the stored ones. The Zadig case counts follow the job to its new time.
#[test]
fn a_job_updated_without_tests_keeps_them() {
    let d = Daemon::start(&["--now", "2026-03-10T00:00:00Z"]);
    let job = |status: &str, started: &str, tests: &str| {
        format!(
            r#""jobs":[{{"id":"j","name":"unit","kind":"test","status":"{status}","started_at":"{started}"{tests}}}]"#
        )
    };
    let two = r#","tests":[{"name":"a","result":"success"},{"name":"b","result":"failure"}]"#;
    let a = d.post_json(
        "/api/v1/runs",
        &run_json("r", "running", &job("running", "2026-03-01T10:00:00Z", two)),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    let tests = |d: &Daemon| -> Vec<String> {
        let r = d.get("/api/v1/runs/gh/acme/api/r");
        assert_eq!(r.status, 200, "{}", r.text);
        r.body["jobs"][0]["tests"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|c| format!("{} {}", c["name"], c["result"]))
                    .collect()
            })
            .unwrap_or_default()
    };
    // Fresher, an hour later, without tests.
    let a = d.post_json(
        "/api/v1/runs",
        &run_json(
            "r",
            "success",
            &format!(
                r#""stopped_at":"2026-03-01T11:30:00Z",{}"#,
                job("success", "2026-03-01T11:00:00Z", "").replace(
                    r#""started_at""#,
                    r#""stopped_at":"2026-03-01T11:20:00Z","started_at""#
                )
            ),
        ),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(tests(&d), ["\"a\" \"success\"", "\"b\" \"failure\""]);
    crate::zadig::assert_rollups_exact(&d);
    // With tests, they replace the stored ones.
    let a = d.post_json(
        "/api/v1/runs",
        &run_json(
            "r",
            "success",
            &format!(
                r#""stopped_at":"2026-03-01T11:40:00Z",{}"#,
                job(
                    "success",
                    "2026-03-01T11:00:00Z",
                    r#","tests":[{"name":"c","result":"skipped"}]"#
                )
                .replace(
                    r#""started_at""#,
                    r#""stopped_at":"2026-03-01T11:25:00Z","started_at""#
                )
            ),
        ),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(tests(&d), ["\"c\" \"skipped\""]);
    crate::zadig::assert_rollups_exact(&d);
}
