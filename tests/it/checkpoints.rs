//! `--checkpoints litestream` (docs/operations.md, "Replication"): no connection of pipestat's
//! checkpoints the WAL, neither SQLite's automatic checkpoint past 8,000 pages nor the one of
//! the last connection to close, so every page stays in the WAL for Litestream to copy; the
//! default still checkpoints.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{pipestat, run_json, signal, spawn_serve, wait_timeout, BIN};

/// Bytes of WAL after which SQLite's automatic checkpoint would run: 8,000 pages of 4 KiB.
const AUTOCHECKPOINT_BYTES: u64 = 8_000 * 4_096;

/// An NDJSON file of `runs` runs of 10 jobs, each job with an error message of 60,000 bytes:
/// about 600 KB a run, stored as it is.
fn write_big_runs(path: &Path, runs: usize) {
    let message = "x".repeat(60_000);
    let mut text = String::new();
    for r in 0..runs {
        let jobs: Vec<String> = (0..10)
            .map(|j| format!(r#"{{"name":"job{j}","status":"failed","error_msg":"{message}"}}"#))
            .collect();
        text.push_str(&run_json(
            &format!("big-{r}"),
            "failed",
            &format!(r#""jobs":[{}]"#, jobs.join(",")),
        ));
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn an_import_left_to_litestream_keeps_every_page_in_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.ndjson");
    // 60 runs of 600 KB: 36 MB, past the 32 MB after which SQLite checkpoints by itself.
    write_big_runs(&file, 60);
    let file = file.to_str().unwrap();

    // Set by its variable, as a systemd unit's Environment= line sets it.
    let out = Command::new(BIN)
        .args(["import", file, "--db", "left.db"])
        .current_dir(dir.path())
        .env("PIPESTAT_CHECKPOINTS", "litestream")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (db, wal) = (dir.path().join("left.db"), dir.path().join("left.db-wal"));
    // Nothing was copied back into the database file, not even when the import closed it:
    // the file holds at most the header page written when it was switched to WAL.
    assert!(
        size(&wal) > AUTOCHECKPOINT_BYTES + (2 << 20),
        "the WAL holds the import: {} bytes",
        size(&wal)
    );
    assert!(size(&db) <= 4_096, "database file: {} bytes", size(&db));
    // Every run is there for a reader, read from the WAL.
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 60);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM jobs WHERE length(error_msg) = 60000"
        ),
        600
    );

    // By default pipestat checkpoints: the pages end in the database file.
    let out = pipestat(dir.path(), &["import", file, "--db", "own.db"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = dir.path().join("own.db");
    assert!(size(&db) > 30 << 20, "database file: {} bytes", size(&db));
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 60);
}

#[test]
fn serve_left_to_litestream_never_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = spawn_serve(dir.path(), &["--checkpoints", "litestream"]).unwrap();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    for i in 0..20 {
        let body = run_json(&format!("r{i}"), "success", "");
        let status = agent
            .post(&format!("{base}/api/v1/runs"))
            .set("Content-Type", "application/json")
            .send_string(&body)
            .map(|r| r.status())
            .unwrap_or_else(|e| panic!("POST: {e}"));
        assert_eq!(status, 200);
    }
    signal(&child, "TERM");
    let exit = wait_timeout(&mut child, Duration::from_secs(30)).expect("serve exits");
    assert!(exit.success(), "{exit:?}");
    let (db, wal) = (
        dir.path().join("pipestat.db"),
        dir.path().join("pipestat.db-wal"),
    );
    // The last connection to close did not checkpoint: the WAL is still there, whole.
    assert!(size(&wal) > 0, "the WAL was checkpointed away");
    assert!(size(&db) <= 4_096, "database file: {} bytes", size(&db));
    assert_eq!(count(&db, "SELECT count(*) FROM runs"), 20);
}

#[test]
fn checkpoints_takes_pipestat_or_litestream() {
    let dir = tempfile::tempdir().unwrap();
    let out = pipestat(dir.path(), &["check", "--checkpoints", "sometimes"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--checkpoints") && err.contains("pipestat or litestream"),
        "{err}"
    );
}
