//! The Apigee statistics benchmark: latency of two flexible-metrics queries over a large
//! database, through the real daemon.
//!
//! Run it with
//!
//! ```text
//! pipestat demo --runs 1000000 --db big.db      # once; several GB
//! cp big.db bench.db                             # the daemon opens it read-write
//! PIPESTAT_BENCH_DB=bench.db cargo bench --bench apigee
//! ```
//!
//! `PIPESTAT_BENCH_ITERS` (default 11) sets the timed requests per query, after one untimed
//! warm-up. The range is the 90 days that end with the newest run. It prints the median and the
//! 95th percentile latency of each query, the load average, and SQLite's query plans; it asserts
//! only that every answer is a 200.
//!
//! Queries:
//! 1. runs by workflow, `select=sum(run_count),p95(duration)&timeUnit=day` over 90 days;
//! 2. the 10 jobs with the highest p95 duration over the same 90 days (`topk=10`);
//! 3. for scale: query 1 without the percentile (`select=sum(run_count)` only);
//! 4. and 5. queries 1 and 2 over the same 90 days of a clock at UTC−5 (`tzo=-300`), whose days
//!    are not UTC days: the Apigee rollups answer query 4's local days from their hour rows, and
//!    query 5 (no buckets) from the day rows of the 89 whole UTC days inside the range and the
//!    hour rows of its 19 + 5 other hours;
//! 6. query 1 at UTC+5:30 (`tzo=330`), whose local days start inside a UTC hour: the hour rows
//!    but that hour of each day, read from the runs;
//! 7. to 10. for the project with the most runs: queries 1, 2 and 6, and query 2 with the
//!    filter `(status eq 'success') and (branch eq 'main')`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use common::{load_average, machine, percentile_ms, Server};
use pipestat::hooks::Req;

const DAY_MS: i64 = 86_400_000;

fn main() {
    let Ok(db) = std::env::var("PIPESTAT_BENCH_DB") else {
        println!(
            "apigee bench: set PIPESTAT_BENCH_DB to a copy of a `pipestat demo` database; skipping"
        );
        return;
    };
    let iters: usize = std::env::var("PIPESTAT_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(11)
        .max(1);
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the database read-only");
    // The fast path's aggregate, for the query plans.
    pipestat::hooks::register_functions(&conn).expect("register the SQL functions");
    let (runs, jobs, newest): (i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM jobs), (SELECT max(created_at) FROM runs)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("count the runs");
    // The 90 whole UTC days that end with the day of the newest run.
    let end = (newest / DAY_MS + 1) * DAY_MS;
    let start = end - 90 * DAY_MS;
    let range = format!("{}~{}", apigee_time(start), apigee_time(end));
    let project: String = conn
        .query_row(
            "SELECT p.key FROM projects p ORDER BY (SELECT count(*) FROM runs r
                WHERE r.project_id = p.id) DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("the busiest project");

    println!("pipestat Apigee statistics benchmark");
    println!("  machine: {}", machine());
    println!("  load average before: {}", load_average());
    println!("  SQLite {}", rusqlite::version());
    println!(
        "  database: {runs} runs, {jobs} jobs; range {range}; {iters} timed requests per query"
    );
    println!("  project of queries 7 to 10: {project}");

    let queries = [
        (
            "all",
            "runs by workflow, sum(run_count) + p95(duration), timeUnit=day, 90 days",
            "runs",
            "workflow",
            "select=sum(run_count),p95(duration)&timeUnit=day".to_owned(),
        ),
        (
            "all",
            "top 10 jobs by p95(duration), 90 days",
            "jobs",
            "job",
            "select=p95(duration)&topk=10".to_owned(),
        ),
        (
            "all",
            "runs by workflow, sum(run_count) only, timeUnit=day, 90 days",
            "runs",
            "workflow",
            "select=sum(run_count)&timeUnit=day".to_owned(),
        ),
        (
            "all",
            "query 1 at tzo=-300 (local days: hour rows)",
            "runs",
            "workflow",
            "select=sum(run_count),p95(duration)&timeUnit=day&tzo=-300".to_owned(),
        ),
        (
            "all",
            "query 2 at tzo=-300 (day rows and the edge hours)",
            "jobs",
            "job",
            "select=p95(duration)&topk=10&tzo=-300".to_owned(),
        ),
        (
            "all",
            "query 1 at tzo=330 (hour rows, each day's edge hour from the runs)",
            "runs",
            "workflow",
            "select=sum(run_count),p95(duration)&timeUnit=day&tzo=330".to_owned(),
        ),
        (
            project.as_str(),
            "query 1, one project",
            "runs",
            "workflow",
            "select=sum(run_count),p95(duration)&timeUnit=day".to_owned(),
        ),
        (
            project.as_str(),
            "query 2, one project",
            "jobs",
            "job",
            "select=p95(duration)&topk=10".to_owned(),
        ),
        (
            project.as_str(),
            "query 6 (tzo=330), one project",
            "runs",
            "workflow",
            "select=sum(run_count),p95(duration)&timeUnit=day&tzo=330".to_owned(),
        ),
        (
            project.as_str(),
            "query 2 with a status and branch filter, one project",
            "jobs",
            "job",
            "select=p95(duration)&topk=10&filter=%28status%20eq%20%27success%27%29%20and%20%28branch%20eq%20%27main%27%29"
                .to_owned(),
        ),
    ];

    for (_, label, facts, dims, query) in &queries {
        let q = format!("{query}&timeRange={}", range.replace(' ', "+"));
        let plan = pipestat::hooks::explain(&conn, facts, dims, &req(&q)).expect("explain");
        println!();
        println!("  query plan of \"{label}\":");
        for line in plan {
            println!("    {line}");
        }
    }
    drop(conn);

    let server = Server::start(env!("CARGO_BIN_EXE_pipestat"), Path::new(&db));
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(600))
        .build();
    println!();
    println!("  | query | median | p95 |");
    println!("  | --- | ---: | ---: |");
    for (org, label, facts, dims, query) in &queries {
        let url = format!(
            "{}/v1/organizations/{org}/environments/{facts}/stats/{dims}?{query}&timeRange={}",
            server.base,
            range.replace(' ', "+")
        );
        let get = || {
            let started = Instant::now();
            let resp = agent.get(&url).call().expect("a 200 answer");
            let body = resp.into_string().expect("a body");
            assert!(body.starts_with("{\"environments\""), "{body}");
            started.elapsed()
        };
        get();
        let mut times: Vec<Duration> = (0..iters).map(|_| get()).collect();
        times.sort_unstable();
        println!(
            "  | {label} | {:.0} ms | {:.0} ms |",
            percentile_ms(&times, 0.50),
            percentile_ms(&times, 0.95)
        );
    }
    println!();
    println!("  load average after: {}", load_average());
}

/// A request carrying only a query string, for `apigee::explain`.
fn req(query: &str) -> Req {
    Req::with_query(query)
}

/// Apigee's `MM/DD/YYYY HH:MM` for UTC milliseconds.
fn apigee_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000).expect("a valid time");
    format!(
        "{:02}/{:02}/{:04} {:02}:{:02}",
        u8::from(t.month()),
        t.day(),
        t.year(),
        t.hour(),
        t.minute()
    )
}
