//! `GET /metrics` through the real binary (docs/operations.md, "Metrics"): known requests move
//! the counters by exactly the amounts worked out here, labels carry route templates and never
//! raw paths, and the route needs the read scope.

use std::collections::BTreeMap;

use crate::common::{create_token, run_json, Daemon};
use crate::webhooks::{self, github, read};

/// The samples of an exposition text: `name{labels}` (labels as printed) to value. A small
/// reader of the text format written here, independent of the daemon's encoder.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("a sample line: name value");
            (key.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// A sample's value, 0 when absent. `labels` in the order the text format sorts them (by name).
fn value(s: &BTreeMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        format!("{name}{{{}}}", l.join(","))
    };
    s.get(&key).copied().unwrap_or(0.0)
}

fn scrape(d: &Daemon) -> (String, BTreeMap<String, f64>) {
    let a = d.get("/metrics");
    assert_eq!(a.status, 200, "{}", a.text);
    let s = samples(&a.text);
    (a.text, s)
}

const RUNS: &str = "/api/v2/insights/{project-slug}/workflows";

#[test]
fn counters_move_by_the_exact_amounts_of_known_requests() {
    let d = Daemon::start(&[]);
    let (_, before) = scrape(&d);
    // Three new runs in one request: created 3.
    d.post_runs(&[
        run_json("a", "success", r#""stopped_at":"2026-03-01T10:05:00Z""#),
        run_json("b", "failed", r#""stopped_at":"2026-03-01T10:06:00Z""#),
        run_json("c", "running", ""),
    ]);
    // "a" again, running: older than its stored terminal state, so stale.
    d.post_runs(&[run_json("a", "running", "")]);
    // "c" finished: fresher than running, so updated.
    d.post_runs(&[run_json(
        "c",
        "success",
        r#""stopped_at":"2026-03-01T10:07:00Z""#,
    )]);
    // Not JSON: refused before anything is written.
    assert_eq!(d.post_json("/api/v1/runs", "{nope").status, 400);
    // Two reads of one route with two spellings of the slug, and one path no route serves.
    assert_eq!(d.get("/api/v2/insights/gh/acme/api/workflows").status, 200);
    assert_eq!(
        d.get("/api/v2/insights/gh%2Facme%2Fapi/workflows").status,
        200
    );
    assert_eq!(d.get("/no/such/path-xyz").status, 404);
    let (text, after) = scrape(&d);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };

    let req = "pipestat_http_requests_total";
    let posts = [("method", "POST"), ("route", "/api/v1/runs")];
    assert_eq!(moved(req, &[posts[0], posts[1], ("status", "200")]), 3.0);
    assert_eq!(moved(req, &[posts[0], posts[1], ("status", "400")]), 1.0);
    assert_eq!(
        moved(
            req,
            &[("method", "GET"), ("route", RUNS), ("status", "200")]
        ),
        2.0
    );
    assert_eq!(
        moved(
            req,
            &[("method", "GET"), ("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    // The first scrape is counted once it is answered, so the second one sees it.
    assert_eq!(
        value(
            &after,
            req,
            &[("method", "GET"), ("route", "/metrics"), ("status", "200")]
        ),
        1.0
    );
    assert!(!text.contains("path-xyz"), "a raw path became a label");
    assert!(!text.contains("gh/acme/api"), "a raw slug became a label");

    let dur = "pipestat_http_request_duration_seconds_count";
    assert_eq!(moved(dur, &[("route", "/api/v1/runs")]), 4.0);
    assert_eq!(moved(dur, &[("route", RUNS)]), 2.0);
    assert!(
        value(
            &after,
            "pipestat_http_request_duration_seconds_sum",
            &[("route", RUNS)]
        ) > 0.0
    );

    let runs = "pipestat_runs_ingested_total";
    let native = ("source", "native");
    assert_eq!(moved(runs, &[("outcome", "created"), native]), 3.0);
    assert_eq!(moved(runs, &[("outcome", "stale"), native]), 1.0);
    assert_eq!(moved(runs, &[("outcome", "updated"), native]), 1.0);
    let del = "pipestat_deliveries_total";
    assert_eq!(moved(del, &[("outcome", "accepted"), native]), 3.0);
    assert_eq!(moved(del, &[("outcome", "refused"), native]), 1.0);

    // Three writes reached the writer (the refused body never did): the group sizes sum to 3
    // over one to three commits, each with a commit time.
    let groups = moved("pipestat_writer_group_size_count", &[]);
    assert_eq!(moved("pipestat_writer_group_size_sum", &[]), 3.0);
    assert!((1.0..=3.0).contains(&groups), "{groups} groups");
    assert_eq!(
        moved("pipestat_writer_commit_duration_seconds_count", &[]),
        groups
    );

    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        value(&after, "pipestat_build_info", &[("version", version)]),
        1.0
    );
    // Nothing writes between this scrape and reading the files' sizes.
    let db = d.dir.path().join("pipestat.db");
    let wal = d.dir.path().join("pipestat.db-wal");
    let (_, now) = scrape(&d);
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len()) as f64;
    assert_eq!(value(&now, "pipestat_database_size_bytes", &[]), size(&db));
    assert_eq!(value(&now, "pipestat_wal_size_bytes", &[]), size(&wal));
    assert!(size(&db) > 0.0);
    // The standard process collector: this process's resident memory and start time.
    assert!(value(&now, "process_resident_memory_bytes", &[]) > 1e6);
    let start = value(&now, "process_start_time_seconds", &[]);
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= epoch && start > epoch - 600.0,
        "{start} vs {epoch}"
    );
}

#[test]
fn webhook_deliveries_count_by_source_and_outcome() {
    let d = webhooks::daemon("2020-10-20T00:00:00Z");
    let (_, before) = scrape(&d);
    let requested = read("github/workflow_run/requested.payload.json");
    assert_eq!(github(&d, "workflow_run", &requested).status, 200);
    // The same delivery again: a tie goes to the later delivery, so updated.
    assert_eq!(github(&d, "workflow_run", &requested).status, 200);
    // An event pipestat does not map: 202, ignored.
    assert_eq!(
        github(&d, "push", b"{\"ref\":\"refs/heads/main\"}").status,
        202
    );
    // A bad signature: refused.
    let bad = d.call(
        "POST",
        "/webhooks/github",
        &[
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "workflow_run"),
            ("X-Hub-Signature-256", "sha256=00"),
        ],
        Some(&requested),
    );
    assert_eq!(bad.status, 401, "{}", bad.text);
    let gl = webhooks::gitlab(&d, "Pipeline Hook", &read("gitlab/pipeline_hook.json"));
    assert_eq!(gl.status, 200, "{}", gl.text);
    let (_, after) = scrape(&d);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    let del = "pipestat_deliveries_total";
    let gh = ("source", "github");
    assert_eq!(moved(del, &[("outcome", "accepted"), gh]), 2.0);
    assert_eq!(moved(del, &[("outcome", "ignored"), gh]), 1.0);
    assert_eq!(moved(del, &[("outcome", "refused"), gh]), 1.0);
    assert_eq!(
        moved(del, &[("outcome", "accepted"), ("source", "gitlab")]),
        1.0
    );
    let runs = "pipestat_runs_ingested_total";
    assert_eq!(moved(runs, &[("outcome", "created"), gh]), 1.0);
    assert_eq!(moved(runs, &[("outcome", "updated"), gh]), 1.0);
    assert_eq!(
        moved(runs, &[("outcome", "created"), ("source", "gitlab")]),
        1.0
    );
    assert_eq!(
        moved(
            "pipestat_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/webhooks/github"),
                ("status", "401")
            ]
        ),
        1.0
    );
}

#[test]
fn metrics_need_the_read_scope_and_speak_the_text_format() {
    let dir = tempfile::tempdir().unwrap();
    let read_token = create_token(dir.path(), "reader", "read");
    let ingest_token = create_token(dir.path(), "pusher", "ingest");
    let mut d = Daemon::start_in(dir, &[]);
    assert_eq!(d.get("/metrics").status, 401);
    d.token = Some(ingest_token);
    assert_eq!(d.get("/metrics").status, 403);
    d.token = Some(read_token.clone());
    let a = d.get("/metrics");
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a
        .text
        .contains("# TYPE pipestat_http_requests_total counter"));
    assert!(a
        .text
        .contains("# TYPE pipestat_http_request_duration_seconds histogram"));
    // The refused scrapes are counted too, under the route's template.
    assert!(a.text.contains(
        "pipestat_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"401\"} 1"
    ));
    assert_eq!(d.call("POST", "/metrics", &[], Some(b"")).status, 405);
    let resp = ureq::get(&format!("{}/metrics", d.base))
        .set("Authorization", &format!("Bearer {read_token}"))
        .call()
        .unwrap();
    assert_eq!(
        resp.header("Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
}
