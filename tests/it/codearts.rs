//! The CodeArts surface (docs/codearts.md): a pipeline's run with its stages and tasks.
//!
//! The daemon runs at --utc-offset +08:00, so 02:00:00Z is written "10:00:00".

use serde_json::{json, Value};

use crate::common::Daemon;

/// Pipeline "pipe-1" (gh/acme/api, workflow "release") with three runs:
/// - rel-1, number 1, success.
/// - rel-2, number 2, failed, 02:00:00Z..02:05:10Z, jobs in order:
///   compile (stage build, success, 02:00:00..02:02:00)
///   lint    (stage build, success, 02:00:30..02:01:00)
///   unit    (stage test, failed, 02:02:10..02:05:10, E1 "2 tests failed")
///   scan    (stage test, canceled, 02:02:10..02:03:00)
///   notify  (no stage, skipped, never started)
/// - rel-3, number 3, running since 03:00:00Z ("now" is 03:10:00Z), jobs:
///   compile (stage build, success, 03:00:00..03:02:00)
///   unit    (stage test, running since 03:02:10)
///   approve (stage deploy, an approval waiting), ship (stage deploy, queued)
///
/// And pipeline "pipe-gate" (workflow "gate"): one run waiting on an approval.
fn loaded() -> Daemon {
    let d = Daemon::start(&["--utc-offset", "+08:00", "--now", "2024-03-04T03:10:00Z"]);
    let runs = json!([
        {"id": "rel-1", "project": "gh/acme/api", "workflow": "release", "pipeline_id": "pipe-1",
         "number": 1, "status": "success", "actor": "bob",
         "created_at": "2024-03-03T02:00:00Z", "started_at": "2024-03-03T02:00:00Z",
         "stopped_at": "2024-03-03T02:01:00Z",
         "jobs": [{"name": "compile", "stage": "build", "kind": "build", "status": "success"}]},
        {"id": "rel-2", "project": "gh/acme/api", "workflow": "release", "pipeline_id": "pipe-1",
         "number": 2, "status": "failed", "actor": "alice", "detail_url": "https://ci/rel-2",
         "parameters": [{"name": "ENV", "value": "prod"}],
         "created_at": "2024-03-04T01:59:00Z", "started_at": "2024-03-04T02:00:00Z",
         "stopped_at": "2024-03-04T02:05:10Z",
         "jobs": [
            {"name": "compile", "stage": "build", "kind": "build", "status": "success",
             "started_at": "2024-03-04T02:00:00Z", "stopped_at": "2024-03-04T02:02:00Z",
             "detail_url": "https://ci/rel-2/compile"},
            {"name": "lint", "stage": "build", "status": "success",
             "started_at": "2024-03-04T02:00:30Z", "stopped_at": "2024-03-04T02:01:00Z"},
            {"id": "u", "name": "unit", "stage": "test", "kind": "test", "status": "failed",
             "started_at": "2024-03-04T02:02:10Z", "stopped_at": "2024-03-04T02:05:10Z",
             "error_code": "E1", "error_msg": "2 tests failed"},
            {"name": "scan", "stage": "test", "status": "canceled",
             "started_at": "2024-03-04T02:02:10Z", "stopped_at": "2024-03-04T02:03:00Z"},
            {"name": "notify", "status": "skipped"}
         ]},
        {"id": "rel-3", "project": "gh/acme/api", "workflow": "release", "pipeline_id": "pipe-1",
         "number": 3, "status": "running", "actor": "carol",
         "created_at": "2024-03-04T03:00:00Z", "started_at": "2024-03-04T03:00:00Z",
         "jobs": [
            {"name": "compile", "stage": "build", "kind": "build", "status": "success",
             "started_at": "2024-03-04T03:00:00Z", "stopped_at": "2024-03-04T03:02:00Z"},
            {"name": "unit", "stage": "test", "kind": "test", "status": "running",
             "started_at": "2024-03-04T03:02:10Z"},
            {"name": "approve", "stage": "deploy", "kind": "approval", "status": "waiting"},
            {"name": "ship", "stage": "deploy", "kind": "deploy", "status": "queued"}
         ]},
        {"id": "g-1", "project": "gh/acme/api", "workflow": "gate", "pipeline_id": "pipe-gate",
         "status": "waiting", "created_at": "2024-03-04T03:05:00Z",
         "jobs": [{"name": "approve", "stage": "gate", "kind": "approval", "status": "waiting"}]}
    ]);
    let a = d.post_json("/api/v1/runs", &runs.to_string());
    assert_eq!(a.status, 200, "{}", a.text);
    d
}

fn status(d: &Daemon, path: &str) -> Value {
    let a = d.get(path);
    assert_eq!(a.status, 200, "{path}: {}", a.text);
    a.body
}

#[test]
fn a_finished_build_with_its_stages() {
    let d = loaded();
    let b = status(&d, "/v3/pipelines/pipe-1/status?build_id=2");
    let task = |id: &str, name: &str, times: [Option<&str>; 2], elapsed: &str, outcome: &str| {
        json!({"id": id, "name": name, "type": "task",
               "start_time": times[0], "end_time": times[1], "elapsed_time": elapsed,
               "status": "completed", "outcome": outcome, "error_code": null, "error_msg": null,
               "detail_url": null, "children": []})
    };
    let mut compile = task(
        "rel-2/0",
        "compile",
        [Some("2024-03-04 10:00:00"), Some("2024-03-04 10:02:00")],
        "00:02:00",
        "success",
    );
    compile["detail_url"] = json!("https://ci/rel-2/compile");
    let lint = task(
        "rel-2/1",
        "lint",
        [Some("2024-03-04 10:00:30"), Some("2024-03-04 10:01:00")],
        "00:00:30",
        "success",
    );
    // failed is an error; canceled is aborted.
    let mut unit = task(
        "u",
        "unit",
        [Some("2024-03-04 10:02:10"), Some("2024-03-04 10:05:10")],
        "00:03:00",
        "error",
    );
    unit["error_code"] = json!("E1");
    unit["error_msg"] = json!("2 tests failed");
    let scan = task(
        "rel-2/3",
        "scan",
        [Some("2024-03-04 10:02:10"), Some("2024-03-04 10:03:00")],
        "00:00:50",
        "aborted",
    );
    // skipped succeeds; never started, it has no times.
    let notify = task("rel-2/4", "notify", [None, None], "00:00:00", "success");
    let stage = |n: u32,
                 name: &str,
                 times: [Option<&str>; 2],
                 elapsed: &str,
                 outcome: &str,
                 children: Vec<Value>| {
        json!({"id": format!("stage_{n}"), "name": name, "type": "stage",
               "start_time": times[0], "end_time": times[1], "elapsed_time": elapsed,
               "status": "completed", "outcome": outcome, "error_code": null, "error_msg": null,
               "detail_url": null, "children": children})
    };
    let expected = json!({
        "pipeline_id": "pipe-1",
        "pipeline_name": "release",
        "executor": "alice",
        "build_id": "2",
        "start_time": "2024-03-04 10:00:00",
        "end_time": "2024-03-04 10:05:10",
        "elapsed_time": "00:05:10",
        "parameters": [{"name": "ENV", "value": "prod"}],
        "status": "completed",
        "outcome": "error",
        "detail_url": "https://ci/rel-2",
        "states": [
            // build spans compile's start (10:00:00) to its end (10:02:00), the later of the two.
            stage(1, "build", [Some("2024-03-04 10:00:00"), Some("2024-03-04 10:02:00")], "00:02:00",
                  "success", vec![compile, lint]),
            // test: the worst of error and aborted is error.
            stage(2, "test", [Some("2024-03-04 10:02:10"), Some("2024-03-04 10:05:10")], "00:03:00",
                  "error", vec![unit, scan]),
            // A job without a stage is a stage of its own.
            stage(3, "notify", [None, None], "00:00:00", "success", vec![notify]),
        ]
    });
    assert_eq!(b, expected);

    // The build id may also be the run's id.
    let b = status(&d, "/v3/pipelines/pipe-1/status?build_id=rel-1");
    assert_eq!(
        (b["build_id"].clone(), b["executor"].clone()),
        (json!("1"), json!("bob"))
    );
    assert_eq!(b["outcome"], "success");
}

/// A run backfilled later, with an old time and a higher build number, is not the latest.
#[test]
fn a_backfilled_old_run_is_not_the_latest() {
    let d = loaded();
    let old = json!({"id": "rel-old", "project": "gh/acme/api", "workflow": "release",
        "pipeline_id": "pipe-1", "number": 99, "status": "failed",
        "created_at": "2024-03-01T00:00:00Z", "started_at": "2024-03-01T00:00:10Z",
        "stopped_at": "2024-03-01T00:05:00Z"});
    let a = d.post_json("/api/v1/runs", &old.to_string());
    assert_eq!(a.status, 200, "{}", a.text);
    // Still rel-3 (build 3, created 2024-03-04T03:00Z): the newest, not the highest number.
    let b = status(&d, "/v3/pipelines/pipe-1/status");
    assert_eq!(b["build_id"], "3");
    // The backfilled run is still reached by its number.
    let b = status(&d, "/v3/pipelines/pipe-1/status?build_id=99");
    assert_eq!(b["build_id"], "99");
    assert_eq!(b["outcome"], "error");
}

#[test]
fn the_latest_build_in_progress() {
    let d = loaded();
    // No build_id: the highest number, rel-3, running.
    let b = status(&d, "/v3/pipelines/pipe-1/status");
    assert_eq!(b["build_id"], "3");
    assert_eq!(b["status"], "running");
    assert_eq!(b["outcome"], Value::Null);
    assert_eq!(b["end_time"], Value::Null);
    // Started 03:00:00Z, now 03:10:00Z.
    assert_eq!(b["elapsed_time"], "00:10:00");
    let states = b["states"].as_array().unwrap();
    let summary: Vec<(Value, Value, Value)> = states
        .iter()
        .map(|s| (s["name"].clone(), s["status"].clone(), s["outcome"].clone()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (json!("build"), json!("completed"), json!("success")),
            // A running job makes its stage running, without an outcome yet.
            (json!("test"), json!("running"), Value::Null),
            // An approval waiting (verifying) beats a queued job (waiting).
            (json!("deploy"), json!("verifying"), Value::Null),
        ]
    );
    // The running stage has no end; its elapsed time runs to now: 03:02:10Z .. 03:10:00Z.
    assert_eq!(states[1]["start_time"], "2024-03-04 11:02:10");
    assert_eq!(states[1]["end_time"], Value::Null);
    assert_eq!(states[1]["elapsed_time"], "00:07:50");
    assert_eq!(states[2]["children"][0]["status"], "verifying");
    assert_eq!(states[2]["children"][1]["status"], "waiting");
    assert_eq!(states[2]["start_time"], Value::Null);

    // A run waiting on an approval is verifying.
    let g = status(&d, "/v3/pipelines/pipe-gate/status");
    assert_eq!(
        (g["status"].clone(), g["outcome"].clone()),
        (json!("verifying"), Value::Null)
    );
    assert_eq!(g["executor"], Value::Null);
    assert_eq!(g["parameters"], json!([]));
}

#[test]
fn unknown_pipelines_and_builds_are_404_in_codearts_shape() {
    let d = loaded();
    for path in [
        "/v3/pipelines/nope/status",
        "/v3/pipelines/pipe-1/status?build_id=99",
        "/v3/pipelines/pipe-1/status?build_id=rel-9",
        // A run of another pipeline is not a build of this one.
        "/v3/pipelines/pipe-gate/status?build_id=rel-2",
    ] {
        let a = d.get(path);
        assert_eq!(a.status, 404, "{path}: {}", a.text);
        assert!(a.body["error_code"].is_string(), "{}", a.text);
        assert!(a.body["error_msg"].is_string(), "{}", a.text);
    }
    let a = d.call("POST", "/v3/pipelines/pipe-1/status", &[], Some(b"{}"));
    assert_eq!(a.status, 405);
    assert!(a.body["error_msg"].is_string());
    let a = d.get("/v3/pipelines/pipe-1");
    assert_eq!(a.status, 404);
    // A pipeline id that needed escaping still reaches the lookup (and is simply unknown).
    let a = d.get("/v3/pipelines/a%2Fb%20c/status?build_id=%00");
    assert_eq!(a.status, 404, "{}", a.text);
}

#[test]
fn demo_pipelines_answer() {
    let d = Daemon::start(&["--demo", "--now", "2026-03-01T12:00:00Z"]);
    let list = d.get("/api/v1/pipelines");
    let items = list.body["items"].as_array().unwrap().clone();
    assert!(!items.is_empty());
    for p in items.iter().take(5) {
        let id = p["pipeline_id"].as_str().unwrap();
        let b = status(&d, &format!("/v3/pipelines/{id}/status"));
        assert_eq!(b["pipeline_id"], id);
        assert!(!b["states"].as_array().unwrap().is_empty(), "{b}");
        let done = b["status"] == "completed";
        assert_eq!(b["outcome"].is_null(), !done, "{b}");
    }
}
