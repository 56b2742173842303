//! The CircleCI Insights benchmark: latency of the heaviest routes over HTTP on a large database.
//!
//! Run it with `PIPESTAT_BENCH_DB=PATH cargo bench --bench circleci`, where PATH is a database
//! made by this version of pipestat, e.g. `pipestat demo --runs 1000000 --db PATH` (it is only
//! read). Without the variable the bench says so and does nothing. It prints figures and asserts
//! nothing about speed. `PIPESTAT_BENCH_REQUESTS` (default 40) sets the timed requests per route.
//!
//! It picks the project with the most runs and its default branch, and the workflow with the
//! most runs there; starts the real daemon (`serve --listen 127.0.0.1:0 --now` just after the
//! newest run, so the 90-day window covers the data) and times, from one keep-alive client,
//! sequential GETs of the workflows, jobs, summary and flaky-tests routes after 3 warm-up
//! requests each, the first three also with `all-branches=true`, and workflows and summary
//! over 7 days. It prints each route's median and p95; the daemon's memory (VmHWM, VmRSS)
//! before, after 8 concurrent requests of jobs with all branches, and 3 s later; then
//! `EXPLAIN QUERY PLAN` of the statements behind them.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{load_average, machine, Server};
use rusqlite::{Connection, OpenFlags};

const DAY_MS: i64 = 86_400_000;

fn main() {
    let Ok(db) = std::env::var("PIPESTAT_BENCH_DB") else {
        println!("PIPESTAT_BENCH_DB is not set: nothing to measure. Make a database with");
        println!("  pipestat demo --runs 1000000 --db PATH");
        println!("and run PIPESTAT_BENCH_DB=PATH cargo bench --bench circleci");
        return;
    };
    let requests = common::requests_per_row(40);
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the benchmark database read-only");
    // pipestat's SQL functions, which some of the statements explained below call.
    pipestat::hooks::register_functions(&conn).expect("register pipestat's functions");
    let (runs, newest): (i64, i64) = conn
        .query_row("SELECT count(*), max(created_at) FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("count runs");
    let now = newest + 1;
    let start = now - 90 * DAY_MS;
    let (project_id, slug, branch): (i64, String, String) = conn
        .query_row(
            "SELECT p.id, p.slug, p.default_branch FROM projects p
             ORDER BY (SELECT count(*) FROM runs r WHERE r.project_id = p.id) DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the heaviest project");
    let (workflow_id, workflow, on_branch): (i64, String, i64) = conn
        .query_row(
            "SELECT w.id, w.name, count(*) FROM runs r JOIN workflows w ON w.id = r.workflow_id
             WHERE r.project_id = ?1 AND r.branch = ?2 AND r.created_at >= ?3
             GROUP BY w.id ORDER BY count(*) DESC LIMIT 1",
            rusqlite::params![project_id, branch, start],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("the heaviest workflow");
    let branch_runs: i64 = conn
        .query_row(
            "SELECT count(*) FROM runs WHERE project_id = ?1 AND branch = ?2 AND created_at >= ?3",
            rusqlite::params![project_id, branch, start],
            |r| r.get(0),
        )
        .expect("count the branch's runs");

    println!("pipestat CircleCI Insights benchmark");
    println!("  machine: {}", machine());
    println!("  load average before: {}", load_average());
    println!("  SQLite {}", rusqlite::version());
    println!("  database: {runs} runs; project {slug}, default branch {branch}: {branch_runs} runs in the 90-day window");
    println!("  workflow {workflow}: {on_branch} of them");
    println!("  {requests} sequential requests per route after 3 warm-up requests, one keep-alive client");
    println!();

    let bin = env!("CARGO_BIN_EXE_pipestat");
    let server = Server::at(bin, Path::new(&db), now / 1000 + 1);
    let base = server.base.clone();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let wf = percent(&workflow);
    let project = format!("{base}/api/v2/insights/{slug}");
    let all = "all-branches=true";
    let week = "reporting-window=last-7-days";
    let routes = [
        ("workflows", format!("{project}/workflows")),
        ("jobs", format!("{project}/workflows/{wf}/jobs")),
        ("summary", format!("{project}/workflows/{wf}/summary")),
        ("flaky-tests", format!("{project}/flaky-tests")),
        ("workflows all", format!("{project}/workflows?{all}")),
        ("jobs all", format!("{project}/workflows/{wf}/jobs?{all}")),
        (
            "summary all",
            format!("{project}/workflows/{wf}/summary?{all}"),
        ),
        ("workflows 7d", format!("{project}/workflows?{week}")),
        (
            "summary 7d",
            format!("{project}/workflows/{wf}/summary?{week}"),
        ),
    ];
    println!(
        "{:<14} {:>10} {:>10} {:>10} {:>8}",
        "route", "median ms", "p95 ms", "max ms", "bytes"
    );
    for (name, url) in &routes {
        let mut bytes = 0;
        for _ in 0..3 {
            bytes = get(&agent, url);
        }
        let mut ms: Vec<f64> = (0..requests)
            .map(|_| {
                let t = Instant::now();
                get(&agent, url);
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "{name:<14} {:>10.1} {:>10.1} {:>10.1} {bytes:>8}",
            quantile(&ms, 0.5),
            quantile(&ms, 0.95),
            ms[ms.len() - 1]
        );
    }
    println!();
    println!("  load average after: {}", load_average());

    // Memory: the heaviest route (jobs of all branches), 8 requests at once, each on a
    // connection of its own; the daemon's peak and resident memory, then 3 s later.
    let heaviest = &routes[5].1;
    let pid = server.child.id();
    println!();
    println!("memory (MiB), 8 concurrent requests of jobs all-branches:");
    println!("  before: {}", memory(pid));
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| get(&ureq::Agent::new(), heaviest));
        }
    });
    println!("  after:  {}", memory(pid));
    std::thread::sleep(Duration::from_secs(3));
    println!("  3 s later: {}", memory(pid));
    drop(server);

    println!();
    println!("EXPLAIN QUERY PLAN (project {project_id}, branch {branch}, workflow {workflow_id})");
    // The one-branch routes read the rollups (parameters bound as NULL: the plan does not
    // depend on them); flaky-tests and every scope of several branches run the window queries.
    let rollup = pipestat::hooks::circleci::BENCHED
        .iter()
        .chain(pipestat::hooks::circleci::BENCHED_JOBS);
    for (name, sql) in rollup {
        explain(&conn, name, sql, |_| rusqlite::types::Value::Null);
    }
    for (name, sql) in pipestat::hooks::circleci::BENCHED_SQL {
        // Placeholders by position: project, start, end, branch, workflow, then NULLs / limits.
        explain(&conn, name, sql, |i| match i {
            1 => project_id.into(),
            2 => start.into(),
            3 => now.into(),
            4 => branch.clone().into(),
            5 => workflow_id.into(),
            _ => rusqlite::types::Value::Null,
        });
    }
}

/// The daemon's VmHWM and VmRSS from /proc, in MiB.
fn memory(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0)
    };
    format!(
        "VmHWM {:.1}, VmRSS {:.1}",
        kib("VmHWM:") / 1024.0,
        kib("VmRSS:") / 1024.0
    )
}

/// Prints `EXPLAIN QUERY PLAN` of `sql` as an indented tree, parameter i bound to `value(i)`.
fn explain(
    conn: &Connection,
    name: &str,
    sql: &str,
    value: impl Fn(usize) -> rusqlite::types::Value,
) {
    println!();
    println!("-- {name}");
    let stmt = conn.prepare(sql).expect("the statement prepares");
    let values: Vec<rusqlite::types::Value> = (1..=stmt.parameter_count()).map(value).collect();
    let mut plan = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("EXPLAIN prepares");
    let rows = plan
        .query_map(rusqlite::params_from_iter(values), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(3)?,
            ))
        })
        .expect("EXPLAIN runs");
    let mut depth: Vec<(i64, usize)> = Vec::new();
    for row in rows {
        let (id, parent, detail) = row.expect("a plan row");
        let level = depth
            .iter()
            .find(|(i, _)| *i == parent)
            .map_or(0, |(_, l)| l + 1);
        depth.push((id, level));
        println!("{}{detail}", "  ".repeat(level + 1));
    }
}

fn get(agent: &ureq::Agent, url: &str) -> usize {
    let resp = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.into_string().expect("a text body").len()
}

/// Linear interpolation between closest ranks, as the surface itself computes percentiles.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

fn percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
