//! Operations: signals, crash safety, import, backup, check, demo, the command line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{pipestat, run_json, signal, spawn_serve, wait_timeout, Daemon, BIN};

#[test]
fn sigterm_and_sigint_drain_and_exit_zero() {
    for sig in ["TERM", "INT"] {
        let mut d = Daemon::start(&[]);
        assert_eq!(
            d.post_json("/api/v1/runs", &run_json("a", "success", ""))
                .status,
            200
        );
        signal(&d.child, sig);
        let status = wait_timeout(&mut d.child, Duration::from_secs(30)).expect("exits");
        assert_eq!(status.code(), Some(0), "SIG{sig}");
        let out = pipestat(d.dir.path(), &["check", "--db", "pipestat.db"]);
        assert!(out.status.success());
    }
}

#[test]
fn kill_9_loses_no_acknowledged_run() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn_serve(dir.path(), &["--quota-per-minute", "0"]).unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (acked, stop, base) = (acked.clone(), stop.clone(), base.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(5)).build();
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let id = format!("t{t}-{i}");
                    let body = run_json(&id, "success", r#""jobs":[{"name":"j","status":"success","tests":[{"name":"x","result":"success"}]}]"#);
                    let ok = agent
                        .post(&format!("{base}/api/v1/runs"))
                        .set("Content-Type", "application/json")
                        .send_string(&body)
                        .is_ok_and(|r| r.status() == 200);
                    if ok {
                        acked.lock().unwrap().push(id);
                    } else {
                        break;
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "KILL");
    let _ = child.wait();
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "only {} runs were acknowledged",
        acked.len()
    );

    let out = pipestat(dir.path(), &["check", "--db", "pipestat.db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = Daemon::start_in(dir, &[]);
    for id in &acked {
        let a = d.get(&format!("/api/v1/runs/gh/acme/api/{id}"));
        assert_eq!(a.status, 200, "acknowledged run {id} is missing");
        assert_eq!(a.body["jobs"][0]["tests"][0]["name"], "x");
    }
}

#[test]
fn import_skips_bad_lines_and_loads_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (0..12_000)
        .map(|i| run_json(&format!("i{i}"), "success", ""))
        .collect();
    lines[3] = "{not json".into();
    lines[7000] = run_json("bad", "exploded", "");
    lines.push(String::new());
    std::fs::write(dir.path().join("runs.ndjson"), lines.join("\n")).unwrap();
    let out = pipestat(
        dir.path(),
        &["import", "runs.ndjson", "--db", "pipestat.db"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Skipped lines make the command fail, after the rest has landed, saying how many.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("2 of 12000 lines were bad and skipped"),
        "{stderr}"
    );
    assert!(stderr.contains("line 4: malformed JSON"), "{stderr}");
    assert!(stderr.contains("line 7001: field \"status\""), "{stderr}");
    assert!(
        stderr.contains("11998 runs created") && stderr.contains("2 bad lines"),
        "{stderr}"
    );
    // Importing the same file again updates instead of duplicating.
    let out = pipestat(
        dir.path(),
        &["import", "runs.ndjson", "--db", "pipestat.db"],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 runs created, 11998 updated"));
    let d = Daemon::start_in(dir, &[]);
    assert_eq!(d.get("/api/v1/runs/gh/acme/api/i11999").status, 200);
    assert_eq!(d.get("/api/v1/runs/gh/acme/api/i3").status, 404);
    assert_eq!(
        d.get("/api/v1/pipelines").body["items"][0]["run_count"],
        11_998
    );
}

#[test]
fn backup_while_serving_and_check() {
    let d = Daemon::start(&[]);
    let runs: Vec<String> = (0..50)
        .map(|i| run_json(&format!("b{i}"), "success", ""))
        .collect();
    assert_eq!(
        d.post_json("/api/v1/runs", &format!("[{}]", runs.join(",")))
            .status,
        200
    );
    let out = pipestat(d.dir.path(), &["backup", "copy.db", "--db", "pipestat.db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = pipestat(d.dir.path(), &["check", "--db", "copy.db"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("(50 runs)"));
    // A file that is not a database fails the check.
    std::fs::write(d.dir.path().join("junk.db"), vec![7u8; 8192]).unwrap();
    let out = pipestat(d.dir.path(), &["check", "--db", "junk.db"]);
    assert_eq!(out.status.code(), Some(1));
    let out = pipestat(d.dir.path(), &["check", "--db", "absent.db"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn usage_errors_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (vec!["serve", "--bogus"], "--bogus"),
        (vec!["frobnicate"], "unknown command"),
        (vec!["serve", "--threads", "many"], "--threads"),
        (vec!["serve", "--utc-offset", "8"], "--utc-offset"),
        (vec!["token", "create", "--name", "x"], "--scope"),
        (
            vec!["token", "create", "--name", "x", "--scope", "write"],
            "--scope",
        ),
        (vec!["demo", "--runs", "-5"], "--runs"),
        (vec!["check", "--runs", "5"], "--runs"),
    ] {
        let out = pipestat(dir.path(), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    let out = pipestat(dir.path(), &["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pipestat "));
    let out = pipestat(dir.path(), &["--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("pipestat serve"));
}

#[test]
fn environment_variables_stand_in_for_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["token", "create", "--name", "env", "--scope", "read"])
        .env("PIPESTAT_DB", dir.path().join("from-env.db"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(dir.path().join("from-env.db").exists());
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("PIPESTAT_THREADS", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--threads"));
}

#[test]
fn a_newer_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = ["token", "create", "--name", "a", "--scope", "read"];
    assert!(pipestat(dir.path(), &token).status.success());
    let conn = rusqlite::Connection::open(dir.path().join("pipestat.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let out = pipestat(dir.path(), &["token", "list", "--db", "pipestat.db"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("newer"));
    let err = spawn_serve(dir.path(), &[]).expect_err("serve refuses too");
    assert!(err.contains("newer"), "{err}");
}

#[test]
fn serve_demo_fills_an_empty_database() {
    let d = Daemon::start(&["--demo", "--now", "2026-06-01T00:00:00Z"]);
    let p = d.get("/api/v1/pipelines").body;
    let items = p["items"].as_array().unwrap();
    let projects: std::collections::BTreeSet<_> = items
        .iter()
        .map(|i| i["project"].as_str().unwrap())
        .collect();
    assert!(projects.len() >= 3, "{projects:?}");
    let runs: i64 = items.iter().map(|i| i["run_count"].as_i64().unwrap()).sum();
    assert!(runs > 1000, "{runs}");
    // Newest first, inside the 90 days before --now.
    let newest = d.get("/api/v1/runs?limit=1").body["items"][0]["created_at"].clone();
    assert!(newest.as_str().unwrap() < "2026-06-01T00:00:00", "{newest}");
    let status = d.get("/api/v1/runs?status=failed&limit=1");
    assert_eq!(status.body["items"].as_array().unwrap().len(), 1);
}

/// The shape of a database: every table (columns, STRICT, WITHOUT ROWID) and every index
/// (its statement, blanks folded), sorted.
fn schema_shape(path: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let strings = |sql: &str| -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    };
    let mut shape = strings(
        "SELECT concat_ws(' ', 'table', l.name, l.ncol, l.wr, l.strict,
            (SELECT group_concat(concat_ws(':', c.name, c.type, c.\"notnull\", c.dflt_value, c.pk), ',')
             FROM pragma_table_info(l.name) c))
         FROM pragma_table_list l WHERE l.schema = 'main' AND l.name NOT LIKE 'sqlite_%'",
    );
    for sql in strings("SELECT 'index ' || name || ' ' || coalesce(sql, '') FROM sqlite_master WHERE type = 'index'") {
        shape.push(sql.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    shape.sort();
    shape
}

/// A database made with the first schema is upgraded in place when opened: it ends with the
/// tables, columns and indexes of a new database, and the CircleCI and Apigee rollups and the
/// kept flaky results are computed from the runs it already held.
#[test]
fn a_version_1_database_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("pipestat.db")).unwrap();
    conn.execute_batch(include_str!("schema_v1.sql")).unwrap();
    conn.execute_batch(
        "PRAGMA user_version = 1;
         INSERT INTO projects (id, slug, key, default_branch) VALUES (1, 'gh/acme/api', 'api', 'main');
         INSERT INTO workflows (id, project_id, name, pipeline_id, max_number) VALUES (1, 1, 'ci', 'p', 3);
         -- 2026-03-01 10:00, 10:20, 10:40 (ms); r1 fails, r2 recovers 1,300 s after r1 stopped.
         -- r1 and r2 built commit abc.
         INSERT INTO runs (id, project_id, workflow_id, ext_id, number, branch, commit_sha, status,
             created_at, started_at, stopped_at) VALUES
             (1, 1, 1, 'r1', 1, 'main', 'abc', 'failed', 1772359200000, 1772359200000, 1772359300000),
             (2, 1, 1, 'r2', 2, 'main', 'abc', 'success', 1772360400000, 1772360400000, 1772360600000),
             (3, 1, 1, 'r3', 3, 'main', NULL, 'success', 1772361600000, 1772361600000, 1772361900000);
         -- r2's job ran 120 s, r1's 60 s.
         INSERT INTO jobs (id, run_id, project_id, ext_id, position, name, kind, status,
             created_at, started_at, stopped_at) VALUES
             (1, 2, 1, 'j', 0, 'unit', 'test', 'success', 1772360400000, 1772360400000, 1772360520000),
             (2, 1, 1, 'j', 0, 'unit', 'test', 'failed', 1772359200000, 1772359200000, 1772359260000);
         -- Test t failed in r1 and passed in r2, on the same commit: flaky.
         INSERT INTO test_results (id, job_id, run_id, project_id, classname, name, result) VALUES
             (1, 2, 1, 1, 'm', 't', 'failure'), (2, 1, 2, 1, 'm', 't', 'success');",
    )
    .unwrap();
    drop(conn);
    let upgraded = dir.path().join("pipestat.db");
    let d = Daemon::start_in(dir, &["--now", "2026-03-10T00:00:00Z"]);
    let q = "start-date=2026-03-01&end-date=2026-03-01";
    let w = d.get(&format!("/api/v2/insights/gh/acme/api/workflows?{q}"));
    assert_eq!(w.status, 200, "{}", w.text);
    let m = &w.body["items"][0]["metrics"];
    assert_eq!(m["total_runs"], 3, "{}", w.text);
    assert_eq!(m["total_recoveries"], 1);
    assert_eq!(m["mttr"], 1300);
    // Durations 100, 200 and 300 s.
    assert_eq!(m["duration_metrics"]["median"], 200);
    let j = d.get(&format!(
        "/api/v2/insights/gh/acme/api/workflows/ci/jobs?{q}"
    ));
    assert_eq!(j.status, 200, "{}", j.text);
    assert_eq!(j.body["items"][0]["name"], "unit");
    // 60 and 120 s.
    assert_eq!(
        j.body["items"][0]["metrics"]["duration_metrics"]["median"],
        90
    );
    let f = d.get("/api/v2/insights/gh/acme/api/flaky-tests");
    assert_eq!(f.status, 200, "{}", f.text);
    assert_eq!(f.body["total_flaky_tests"], 1, "{}", f.text);
    let t = &f.body["flaky_tests"][0];
    assert_eq!(t["test_name"], "t");
    assert_eq!(t["times_flaked"], 1);
    // Seconds of the failing job on the flaky commit: r1's 60 s.
    assert_eq!(t["time_wasted"], 60, "{t}");
    assert_eq!(t["workflow_id"], "r2");
    // The Apigee rollups too: the same three runs and their job, on the fast path (whole hours).
    let a = d.get("/v1/organizations/all/environments/runs/stats/?select=run_count,p50(duration)&timeRange=03/01/2026+00:00~03/02/2026+00:00");
    assert_eq!(a.status, 200, "{}", a.text);
    let m = &a.body["environments"][0]["metrics"];
    assert_eq!(
        (&m[0]["values"][0], &m[1]["values"][0]),
        (&"3".into(), &"200".into())
    );
    let a = d.get("/v1/organizations/all/environments/jobs/stats/job?select=max(duration)&timeRange=03/01/2026+00:00~03/02/2026+00:00");
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(
        a.body["environments"][0]["dimensions"][0]["metrics"][0]["values"][0],
        "120"
    );

    let fresh = tempfile::tempdir().unwrap();
    assert!(pipestat(
        fresh.path(),
        &["token", "create", "--name", "a", "--scope", "read"]
    )
    .status
    .success());
    let version = |p: &std::path::Path| -> i64 {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    };
    let new = fresh.path().join("pipestat.db");
    assert_eq!(version(&upgraded), version(&new));
    assert_eq!(version(&new), 7);
    assert_eq!(schema_shape(&upgraded), schema_shape(&new));
}
