//! The DORA read benchmark: latency of `GET /api/v1/dora` and `/api/v1/dora/deployments` for
//! the busiest project of a large database, over the 90 days ending at its newest run, through
//! the real daemon over HTTP.
//!
//! Run it with
//!   pipestat demo --runs 1000000 --db big.db
//!   cp big.db bench.db      # the daemon opens it read-write (and upgrades an older schema)
//!   PIPESTAT_BENCH_DB=bench.db cargo bench --bench dora
//! It prints figures and asserts nothing about speed; it panics only when a route does not
//! answer 200. Without `PIPESTAT_BENCH_DB` it says so and does nothing.
//! `PIPESTAT_BENCH_REQUESTS` sets the requests per row (default 100).
//!
//! "The busiest project" is the one with the most production deploy jobs, the rows every DORA
//! request reads.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{load_average, machine, ms_cells, requests_per_row, time_gets, Server};
use rusqlite::{Connection, OpenFlags};

const DAY_MS: i64 = 86_400_000;

fn main() {
    let Some(db) = std::env::var_os("PIPESTAT_BENCH_DB").map(PathBuf::from) else {
        eprintln!(
            "dora bench: set PIPESTAT_BENCH_DB to a copy of a database made by `pipestat demo`; skipping"
        );
        return;
    };
    let requests = requests_per_row(100);
    // The daemon upgrades the schema when it opens the file, before the facts are read.
    let server = Server::start(env!("CARGO_BIN_EXE_pipestat"), &db);
    let facts = Facts::read(&db);
    let end = facts.newest_ms;
    let start = end - 90 * DAY_MS;
    let iso = |ms: i64| {
        let s = ms.div_euclid(1000);
        time::OffsetDateTime::from_unix_timestamp(s)
            .expect("a time")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("formats")
    };
    let range = format!("start={}&end={}", iso(start), iso(end));
    let p = &facts.slug;
    let routes: Vec<(&str, String)> = vec![
        ("dora", format!("/api/v1/dora?project={p}&{range}")),
        (
            "dora, one service",
            format!("/api/v1/dora?project={p}&service={}&{range}", facts.service),
        ),
        (
            "dora, UTC+05:30",
            format!("/api/v1/dora?project={p}&{range}&tzo=330"),
        ),
        (
            "dora/deployments (100)",
            format!("/api/v1/dora/deployments?project={p}&{range}"),
        ),
    ];
    let timeout = Duration::from_secs(120);

    println!("## DORA read latency");
    println!();
    println!(
        "- database: {} runs, {} jobs, {} rollbacks, {} pushes, {} incidents, {} projects",
        facts.runs, facts.jobs, facts.rollbacks, facts.pushes, facts.incidents, facts.projects
    );
    println!(
        "- project: {p} ({} production deploy jobs in all, {} in the window); window: the 90 days ending at the newest run",
        facts.deploys, facts.deploys_in_window(start, end, &db)
    );
    println!("- machine: {}", machine());
    println!("- load average before: {}", load_average());
    println!(
        "- {requests} sequential requests per row each on a new connection, after one warm-up request"
    );
    println!();
    println!("| route | median ms | p95 ms | max ms |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, path) in &routes {
        row(timeout, name, &format!("{}{path}", server.base), requests);
    }
    println!();
    println!("- load average after: {}", load_average());
    drop(server);
}

/// Times `n` GETs of `url` and prints one table row.
fn row(timeout: Duration, name: &str, url: &str, n: usize) {
    println!("| {name} | {} |", ms_cells(&time_gets(timeout, url, n)));
}

struct Facts {
    newest_ms: i64,
    slug: String,
    project_id: i64,
    service: String,
    deploys: i64,
    runs: i64,
    jobs: i64,
    rollbacks: i64,
    pushes: i64,
    incidents: i64,
    projects: i64,
}

impl Facts {
    fn read(db: &Path) -> Facts {
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
        let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
        let (slug, project_id, deploys): (String, i64, i64) = conn
            .query_row(
                "SELECT p.slug, p.id, count(*) FROM jobs j JOIN projects p ON p.id = j.project_id
                 WHERE j.kind = 'deploy' AND j.production = 1
                 GROUP BY p.id ORDER BY count(*) DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("a project with production deploys");
        let service: String = conn
            .query_row(
                "SELECT service FROM jobs WHERE project_id = ?1 AND kind = 'deploy'
                 AND production = 1 AND service IS NOT NULL
                 GROUP BY service ORDER BY count(*) DESC LIMIT 1",
                [project_id],
                |r| r.get(0),
            )
            .expect("a service");
        Facts {
            newest_ms: one("SELECT max(created_at) FROM runs"),
            slug,
            project_id,
            service,
            deploys,
            runs: one("SELECT max(id) FROM runs"),
            jobs: one("SELECT max(id) FROM jobs"),
            rollbacks: one("SELECT count(*) FROM rollbacks"),
            pushes: one("SELECT count(*) FROM pushes"),
            incidents: one("SELECT count(*) FROM incidents"),
            projects: one("SELECT count(*) FROM projects"),
        }
    }

    fn deploys_in_window(&self, start: i64, end: i64, db: &Path) -> i64 {
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database");
        conn.query_row(
            "SELECT count(*) FROM jobs WHERE project_id = ?1 AND kind = 'deploy'
             AND production = 1 AND stopped_at >= ?2 AND stopped_at < ?3",
            [self.project_id, start, end],
            |r| r.get(0),
        )
        .expect("count")
    }
}
