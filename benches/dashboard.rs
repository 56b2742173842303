//! The dashboard bench: latency and weight of the dashboard's pages on a large database, above
//! all the project page over 90 days, through the real daemon over HTTP.
//!
//! Run it with
//!   pipestat demo --runs 1000000 --db big.db
//!   cp big.db dash.db       # the daemon opens it read-write (and upgrades an older schema)
//!   PIPESTAT_BENCH_DB=dash.db cargo bench --bench dashboard
//! It prints figures and asserts nothing about speed; it panics only when a page does not
//! answer 200. Without `PIPESTAT_BENCH_DB` it says so and does nothing.
//! `PIPESTAT_BENCH_REQUESTS` sets the requests per row (default 50).
//!
//! The pages' windows end now, so the daemon runs with `--now` set to the newest run's time.
//! The project is the one with the most runs.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{load_average, machine, ms_cells, requests_per_row, time_gets, Server};
use rusqlite::{Connection, OpenFlags};

fn main() {
    let Some(db) = std::env::var_os("PIPESTAT_BENCH_DB").map(PathBuf::from) else {
        eprintln!(
            "dashboard bench: set PIPESTAT_BENCH_DB to a copy of a database made by `pipestat demo`; skipping"
        );
        return;
    };
    let requests = requests_per_row(50);
    // A first daemon upgrades the schema before the facts are read; it is stopped at once.
    let (newest, facts) = {
        let first = Server::start(env!("CARGO_BIN_EXE_pipestat"), &db);
        let facts = Facts::read(&db);
        drop(first);
        (facts.newest_s, facts)
    };
    let server = Server::at(env!("CARGO_BIN_EXE_pipestat"), &db, newest);
    let p = &facts.slug;
    let wf = &facts.workflow;
    let pages: Vec<(&str, String)> = vec![
        ("project, 90 days", format!("/projects/{p}?window=90")),
        ("project, 30 days", format!("/projects/{p}")),
        ("project, 7 days", format!("/projects/{p}?window=7")),
        (
            "project, 90 days, all branches",
            format!("/projects/{p}?window=90&branch=all"),
        ),
        (
            "workflow, 90 days",
            format!("/projects/{p}/workflows/{wf}?window=90"),
        ),
        ("every project, 30 days", "/".to_owned()),
    ];
    let timeout = Duration::from_secs(120);

    println!("## Dashboard pages");
    println!();
    println!(
        "- database: {} runs, {} projects; project {p} ({} runs), workflow {wf}",
        facts.runs, facts.projects, facts.project_runs
    );
    println!("- the daemon's clock: the newest run's time (`--now`)");
    println!("- machine: {}", machine());
    println!("- load average before: {}", load_average());
    println!(
        "- {requests} sequential requests per row each on a new connection, after one warm-up request"
    );
    println!();
    println!("| page | median ms | p95 ms | max ms | KB |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, path) in &pages {
        let url = format!("{}{path}", server.base);
        let bytes = ureq::get(&url)
            .call()
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .into_string()
            .expect("a page")
            .len();
        let times = time_gets(timeout, &url, requests);
        println!(
            "| {name} | {} | {:.0} |",
            ms_cells(&times),
            bytes as f64 / 1000.0
        );
    }
    println!();
    println!("- load average after: {}", load_average());
    println!("- goal: the project page over 90 days in ≤ 150 ms p95 and ≤ 300 KB");
}

struct Facts {
    /// The newest run's creation, in Unix seconds (rounded up).
    newest_s: i64,
    slug: String,
    workflow: String,
    project_runs: i64,
    runs: i64,
    projects: i64,
}

impl Facts {
    fn read(db: &Path) -> Facts {
        let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("open {}: {e}", db.display()));
        let one = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
        let (slug, project_id, project_runs): (String, i64, i64) = conn
            .query_row(
                "SELECT p.slug, p.id, count(*) FROM runs r JOIN projects p ON p.id = r.project_id
                 GROUP BY p.id ORDER BY count(*) DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("a project");
        let workflow: String = conn
            .query_row(
                "SELECT w.name FROM runs r JOIN workflows w ON w.id = r.workflow_id
                 WHERE r.project_id = ?1 GROUP BY w.id ORDER BY count(*) DESC LIMIT 1",
                [project_id],
                |r| r.get(0),
            )
            .expect("a workflow");
        Facts {
            newest_s: one("SELECT max(created_at) FROM runs") / 1000 + 1,
            slug,
            workflow,
            project_runs,
            runs: one("SELECT count(*) FROM runs"),
            projects: one("SELECT count(*) FROM projects"),
        }
    }
}
