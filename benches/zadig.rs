//! The Zadig and CodeArts read benchmark: latency of every route of those surfaces against a
//! large database, through the real daemon over HTTP.
//!
//! Run it with
//!   pipestat demo --runs 1000000 --db big.db
//!   PIPESTAT_BENCH_DB=big.db cargo bench --bench zadig
//! It prints figures and asserts nothing about speed; it panics only when a route does not
//! answer 200. Without `PIPESTAT_BENCH_DB` it says so and does nothing. The database is only
//! read (the daemon opens it; a database of the current schema is not migrated).
//! `PIPESTAT_BENCH_REQUESTS` sets the requests per route and scope (default 100).
//!
//! The window is the last 30 days of the data (ending at the newest run), the default window's
//! length. "one project" is the project with the most runs; "all" is every project.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{load_average, machine, ms_cells, requests_per_row, time_gets, Server};
use rusqlite::{Connection, OpenFlags};

const DAY_S: i64 = 86_400;

fn main() {
    let Some(db) = std::env::var_os("PIPESTAT_BENCH_DB").map(PathBuf::from) else {
        eprintln!(
            "zadig bench: set PIPESTAT_BENCH_DB to a database made by `pipestat demo`; skipping"
        );
        return;
    };
    let requests = requests_per_row(100);
    let facts = Facts::read(&db);
    let end = facts.newest_s;
    let start = end - 29 * DAY_S;
    let range = format!("startDate={start}&endDate={end}");
    let one = format!("&projectKey={}", facts.key);

    let server = Server::start(env!("CARGO_BIN_EXE_pipestat"), &db);
    let timeout = Duration::from_secs(120);

    let routes: Vec<(&str, String)> = vec![
        ("overview", format!("/openapi/statistics/overview?{range}")),
        ("build", format!("/openapi/statistics/build?{range}")),
        ("deploy", format!("/openapi/statistics/deploy?{range}")),
        ("test", format!("/openapi/statistics/test?{range}")),
        (
            "v2/release",
            format!("/openapi/statistics/v2/release?start_time={start}&end_time={end}"),
        ),
        (
            "v2/rollback/detail",
            format!(
                "/openapi/statistics/v2/rollback/detail?startTime={start}&endTime={end}&pageNum=1&pageSize=20"
            ),
        ),
    ];

    println!("## Zadig and CodeArts read latency");
    println!();
    println!(
        "- database: {} runs, {} jobs, {} test results, {} rollbacks, {} projects",
        facts.runs, facts.jobs, facts.tests, facts.rollbacks, facts.projects
    );
    println!(
        "- window: {start}..{end} (30 days ending at the newest run); one project: {:?}",
        facts.key
    );
    println!("- machine: {}", machine());
    println!("- load average before: {}", load_average());
    println!("- {requests} sequential requests per row each on a new connection, after one warm-up request");
    println!();
    println!("| route | scope | median ms | p95 ms | max ms |");
    println!("| --- | --- | ---: | ---: | ---: |");
    for (name, path) in &routes {
        for (scope, suffix) in [("one project", one.as_str()), ("all projects", "")] {
            let url = format!("{}{path}{suffix}", server.base);
            row(timeout, name, scope, &url, requests);
        }
    }
    let url = format!("{}/v3/pipelines/{}/status", server.base, facts.pipeline_id);
    row(
        timeout,
        "codearts status (latest)",
        "one pipeline",
        &url,
        requests,
    );
    println!();
    println!("- load average after: {}", load_average());
    drop(server);
}

/// Times `n` GETs of `url` and prints one table row.
fn row(timeout: Duration, name: &str, scope: &str, url: &str, n: usize) {
    println!(
        "| {name} | {scope} | {} |",
        ms_cells(&time_gets(timeout, url, n))
    );
}

/// What the bench needs to know about the database, read once before the daemon starts.
struct Facts {
    newest_s: i64,
    key: String,
    pipeline_id: String,
    runs: i64,
    jobs: i64,
    tests: i64,
    rollbacks: i64,
    projects: i64,
}

impl Facts {
    fn read(db: &Path) -> Facts {
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
        let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
        let newest_ms = one("SELECT max(created_at) FROM runs");
        // The busiest project by its workflows' build numbers (no scan of runs).
        let (key, project_id): (String, i64) = conn
            .query_row(
                "SELECT p.key, p.id FROM projects p JOIN workflows w ON w.project_id = p.id
                 GROUP BY p.id ORDER BY sum(w.max_number) DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("a project");
        let pipeline_id: String = conn
            .query_row(
                "SELECT pipeline_id FROM workflows WHERE project_id = ?1 ORDER BY max_number DESC LIMIT 1",
                [project_id],
                |r| r.get(0),
            )
            .expect("a pipeline");
        Facts {
            newest_s: newest_ms.div_euclid(1000),
            key,
            pipeline_id,
            runs: one("SELECT max(id) FROM runs"),
            jobs: one("SELECT max(id) FROM jobs"),
            tests: one("SELECT max(id) FROM test_results"),
            rollbacks: one("SELECT count(*) FROM rollbacks"),
            projects: one("SELECT count(*) FROM projects"),
        }
    }
}
