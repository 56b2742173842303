//! The ingest benchmark: how fast runs get into the store, and how close that is to SQLite's
//! own limit on this machine.
//!
//! Run it with `cargo bench --bench ingest`. It prints figures and asserts nothing about speed;
//! it only panics when the daemon refuses or loses a run. `PIPESTAT_BENCH_SCALE` (a positive
//! number, default 1) multiplies every count; `PIPESTAT_BENCH_THREADS` passes `--threads N` to
//! the daemon (by default the daemon picks its own number of workers).
//! `PIPESTAT_BENCH_ONLY=store` or `=bare` runs one phase alone, once, on the import's runs
//! (made and parsed first), and prints its time and CPU: for a profiler or callgrind, whose
//! counts do not drift with the machine (docs/benchmarks.md has the command).
//! `PIPESTAT_BENCH_ONLY=ndjson` prints the import's runs as NDJSON and nothing else, for
//! posting them as arrays to a daemon under callgrind.
//!
//! Phases:
//! 1. Single-run POSTs to a running `pipestat serve`, from 8 keep-alive client threads.
//! 2. 1,000-run JSON array POSTs to the same daemon, from 2 client threads.
//! 3. The daemon's memory (VmHWM and VmRSS) after each of those phases.
//! 4. `pipestat import FILE` of an NDJSON file into a fresh database, timed as a process.
//! 5. The same runs parsed in-process (JSON to model only), and written in-process through
//!    `commands::write_batch` (the store path of `import`, without reading and parsing).
//! 6. A bare rusqlite loop inserting the same rows into the same schema in one transaction.
//!    Phases 4, 5's store path and 6 take turns `PIPESTAT_BENCH_ROUNDS` times (default 3),
//!    each on a fresh database, and each round's ratios compare them, in wall time and, for
//!    the two in-process loops, in CPU time: the machine's speed drifts between phases a
//!    minute apart by more than the gap being measured.
//! 7. The same loop with every secondary index dropped (tables, keys and UNIQUE constraints
//!    only): what the rows alone cost in SQLite on this machine.
//! 8. Right after phase 1, the same loop on phase 1's runs, committing every 1, 4 and 8 runs
//!    with `synchronous = NORMAL`, as the writer of `serve` commits its groups: the limit of
//!    single POSTs, whose groups hold at most as many runs as there are clients.
//!
//! Every run has 5 jobs; all 20 of its test cases belong to its one test job.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use serde_json::{json, Value};

use common::{cpu_between, load_average, machine, own_cpu, percentile_ms, thread_cpu, Server};
use pipestat::hooks::Run;

/// The schema the daemon creates, applied as is to the bare loop's database.
const SCHEMA: &str = include_str!("../schema.sql");

/// Base counts at scale 1, chosen so that the whole bench takes a few minutes on a 2-core
/// machine; `PIPESTAT_BENCH_SCALE` multiplies them.
const SINGLE_RUNS: f64 = 10_000.0;
const ARRAY_POSTS: f64 = 40.0;
const ARRAY_SIZE: usize = 1_000;
const IMPORT_RUNS: f64 = 40_000.0;

/// How many client threads each HTTP phase uses.
const SINGLE_CLIENTS: usize = 8;
const ARRAY_CLIENTS: usize = 2;

/// How many runs the in-process store path writes per transaction, as `import` does.
const BULK_BATCH: usize = 5_000;

/// The generated runs start at 2026-01-01T00:00:00Z (in milliseconds).
const EPOCH_MS: i64 = 1_767_225_600_000;

fn main() {
    let scale = env_scale();
    let single_runs = scaled(SINGLE_RUNS, scale).max(SINGLE_CLIENTS);
    let array_posts = scaled(ARRAY_POSTS, scale).max(ARRAY_CLIENTS);
    let import_runs = scaled(IMPORT_RUNS, scale).max(1);
    let import_rounds = env_rounds();
    let daemon_threads = std::env::var("PIPESTAT_BENCH_THREADS").ok();
    let bin = env!("CARGO_BIN_EXE_pipestat");
    let dir = tempfile::tempdir().expect("a temporary directory");
    if let Ok(only) = std::env::var("PIPESTAT_BENCH_ONLY") {
        one_phase(&only, import_runs, dir.path());
        return;
    }

    println!("pipestat ingest benchmark");
    println!("  machine: {}", machine());
    println!("  load average before the bench: {}", load_average());
    println!("  SQLite {}", rusqlite::version());
    println!(
        "  fsync of a 4 KiB write in the temporary directory: {:.3} ms (median of 200)",
        fsync_ms(dir.path())
    );
    println!(
        "  workload: runs of 5 jobs (build, lint, test, 2 deploys), all 20 test cases on the test job,"
    );
    println!("            over 4 projects x 3 workflows x 26 branches; scale {scale}");
    println!();

    let mut table = Table::default();

    // The daemon runs on a fresh database, in open mode on loopback.
    let served_db = dir.path().join("served.db");
    let log_path = dir.path().join("serve.log");
    let server = Server::logging(bin, &served_db, &log_path, daemon_threads.as_deref());
    println!(
        "  daemon pid {} at {} ({} workers)",
        server.child.id(),
        server.base,
        daemon_threads.as_deref().unwrap_or("default")
    );

    // Phase 1 posts one run per request.
    let bodies: Vec<String> = (0..single_runs).map(|i| run_json(i).to_string()).collect();
    let avg_body = bodies.iter().map(String::len).sum::<usize>() / bodies.len();
    println!("  one run is {avg_body} bytes of JSON on average");
    let cpu_before = (thread_cpu(server.child.id()), own_cpu());
    let (secs, mut latencies) = post_all(&server.base, bodies, SINGLE_CLIENTS);
    let single_cpu = cpu_use(&server, cpu_before, secs);
    latencies.sort_unstable();
    table.row(
        &format!("single-run POSTs ({SINGLE_CLIENTS} keep-alive clients)"),
        single_runs,
        secs,
        format!(
            "latency p50 {:.2} ms, p99 {:.2} ms",
            percentile_ms(&latencies, 0.50),
            percentile_ms(&latencies, 0.99)
        ),
    );

    let after_single = server.memory_kb();

    // Phase 8, right after phase 1 since the machine drifts: the limit of single POSTs. The
    // writer of `serve` commits what 8 clients have in flight, at most 8 runs a group; the
    // bare loop committing every 1, 4 and 8 runs shows what SQLite alone does at those sizes.
    let grouped: Vec<Run> = (0..single_runs).map(|i| parse_run(&run_json(i))).collect();
    for per_commit in [1, 4, 8] {
        let grouped_db = dir.path().join(format!("grouped-{per_commit}.db"));
        let secs = bare_loop(
            &grouped_db,
            &grouped,
            Indexes::All,
            Commits::Every(per_commit),
        )
        .secs;
        table.row(
            &format!("bare loop, a commit every {per_commit} runs"),
            grouped.len(),
            secs,
            "synchronous = NORMAL, as the writer of serve (no fsync)".to_owned(),
        );
    }

    // Phase 2 posts 1,000-run arrays, with ids after those of phase 1.
    let bodies: Vec<String> = (0..array_posts)
        .map(|p| {
            let first = single_runs + p * ARRAY_SIZE;
            let items: Vec<Value> = (first..first + ARRAY_SIZE).map(run_json).collect();
            Value::Array(items).to_string()
        })
        .collect();
    let array_runs = array_posts * ARRAY_SIZE;
    let cpu_before = (thread_cpu(server.child.id()), own_cpu());
    let (secs, mut latencies) = post_all(&server.base, bodies, ARRAY_CLIENTS);
    let array_cpu = cpu_use(&server, cpu_before, secs);
    latencies.sort_unstable();
    let array_rate = array_runs as f64 / secs;
    table.row(
        &format!("{ARRAY_SIZE}-run array POSTs ({ARRAY_CLIENTS} clients)"),
        array_runs,
        secs,
        format!(
            "latency p50 {:.0} ms, p99 {:.0} ms",
            percentile_ms(&latencies, 0.50),
            percentile_ms(&latencies, 0.99)
        ),
    );

    // Phase 3 reads the daemon's memory, then stops it cleanly.
    let after_array = server.memory_kb();
    let (log_lines, writer_line, syncer_line) = server.stop();
    let stored = count_rows(&served_db);
    assert_eq!(
        stored.0,
        (single_runs + array_runs) as i64,
        "the daemon lost runs"
    );

    // The NDJSON file that phase 4 imports: the same runs again, after those served.
    let ndjson = dir.path().join("runs.ndjson");
    {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&ndjson).expect("create"));
        for i in 0..import_runs {
            serde_json::to_writer(&mut out, &run_json(i)).expect("write NDJSON");
            out.write_all(b"\n").expect("write NDJSON");
        }
        out.flush().expect("write NDJSON");
    }
    let file_mb = std::fs::metadata(&ndjson).expect("stat").len() as f64 / 1e6;

    // Phase 5 shows where import's time goes, in-process; its parsed runs feed the loops.
    let (parse_secs, runs) = parse_file(&ndjson);
    table.row(
        "JSON to model only (1 thread)",
        import_runs,
        parse_secs,
        "parse_json + run_from_json, as import's reader".to_owned(),
    );
    // Phases 4, 5's store path and 6 take turns, each on a fresh database: `pipestat import`,
    // the store path in-process, then the physical limit, SQLite alone. This machine's speed
    // drifts over a minute by more than the gap between them, so each round's ratios compare
    // neighbours in time.
    let mut rounds = Vec::new();
    for round in 1..=import_rounds {
        let imported_db = dir.path().join(format!("imported-{round}.db"));
        let secs = import(bin, &imported_db, &ndjson, import_runs);
        table.row(
            &format!("pipestat import FILE, round {round}"),
            import_runs,
            secs,
            format!("whole process, {file_mb:.0} MB of NDJSON, 5,000-run transactions"),
        );
        let import_secs = secs;
        let store_db = dir.path().join(format!("store-{round}.db"));
        let store = store_path(&store_db, &runs);
        table.row(
            &format!("store path only (pre-parsed), round {round}"),
            import_runs,
            store.secs,
            format!(
                "commands::write_batch, 5,000-run transactions; {:.2} s CPU",
                store.cpu
            ),
        );
        let bare_db = dir.path().join(format!("bare-{round}.db"));
        let bare = bare_loop(&bare_db, &runs, Indexes::All, Commits::One);
        table.row(
            &format!("bare rusqlite loop, round {round}"),
            import_runs,
            bare.secs,
            format!(
                "one transaction, prepared cached INSERTs, same schema and pragmas; {:.2} s CPU",
                bare.cpu
            ),
        );
        rounds.push(Round {
            import_secs,
            store,
            bare,
        });
    }
    // Phase 7: the same loop on the tables alone, every secondary index dropped.
    let tables_db = dir.path().join("tables.db");
    let secs = bare_loop(&tables_db, &runs, Indexes::KeysOnly, Commits::One).secs;
    table.row(
        "bare loop without secondary indexes",
        import_runs,
        secs,
        "tables, keys and UNIQUE constraints only".to_owned(),
    );
    drop(runs);

    table.print();
    println!();
    let each = |f: &dyn Fn(&Round) -> f64| -> String {
        let ratios: Vec<String> = rounds.iter().map(|r| format!("{:.2}x", f(r))).collect();
        ratios.join(", ")
    };
    let rate = |secs: f64| import_runs as f64 / secs;
    let import_rate = median(rounds.iter().map(|r| rate(r.import_secs)).collect());
    let store_rate = median(rounds.iter().map(|r| rate(r.store.secs)).collect());
    let bare_rate = median(rounds.iter().map(|r| rate(r.bare.secs)).collect());
    println!(
        "  medians of {import_rounds} rounds: import {import_rate:.0} runs/s, store path {store_rate:.0} runs/s, bare loop {bare_rate:.0} runs/s"
    );
    println!(
        "  bare loop / import:       {}   (each round; goal: import within 1.5x)",
        each(&|r| r.import_secs / r.bare.secs)
    );
    println!(
        "  bare loop / store path:   {}   (each round, wall time)",
        each(&|r| r.store.secs / r.bare.secs)
    );
    println!(
        "  store path / bare loop:   {}   (each round, CPU seconds of the bench process)",
        each(&|r| r.store.cpu / r.bare.cpu)
    );
    println!(
        "  bare loop / array POSTs:  {:.2}x   (against the median bare loop; goal: within 1.5x)",
        bare_rate / array_rate
    );
    for (when, (hwm, rss)) in [("single", after_single), ("array", after_array)] {
        println!(
            "  daemon memory after the {when} POSTs: VmHWM {:.1} MB, VmRSS {:.1} MB   (goal: under 60 MB)",
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0
        );
    }
    println!(
        "  served database: {} runs, {} jobs, {} test results; {log_lines} log lines",
        stored.0, stored.1, stored.2
    );
    println!("  CPU during the single POSTs: {single_cpu}");
    println!("  CPU during the array POSTs:  {array_cpu}");
    // The daemon's own account of its group commits, over both HTTP phases.
    println!("  daemon {writer_line}");
    println!("  daemon {syncer_line}");
    println!("  load average after the bench: {}", load_average());
    println!("  goals: import and 1,000-run arrays within 1.5x of the bare loop; VmHWM < 60 MB");
}

/// Returns the `PIPESTAT_BENCH_SCALE` multiplier, 1 when unset.
fn env_scale() -> f64 {
    match std::env::var("PIPESTAT_BENCH_SCALE") {
        Err(_) => 1.0,
        Ok(s) => match s.parse::<f64>() {
            Ok(v) if v > 0.0 && v.is_finite() => v,
            _ => panic!("PIPESTAT_BENCH_SCALE: expected a positive number, got {s:?}"),
        },
    }
}

/// Returns `PIPESTAT_BENCH_ROUNDS`, how many times import and the bare loop take turns (3
/// when unset).
fn env_rounds() -> usize {
    match std::env::var("PIPESTAT_BENCH_ROUNDS") {
        Err(_) => 3,
        Ok(s) => match s.parse::<usize>() {
            Ok(v) if v > 0 => v,
            _ => panic!("PIPESTAT_BENCH_ROUNDS: expected a positive whole number, got {s:?}"),
        },
    }
}

/// The median of some rates (the mean of the middle two for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One round of phases 4 to 6, on the same runs: import's wall time, and the two in-process
/// loops' wall and CPU time.
struct Round {
    import_secs: f64,
    store: Timed,
    bare: Timed,
}

/// The wall time and CPU time (user + system, of the whole bench process, whose other threads
/// are idle during the in-process phases) of one in-process phase, between the same two
/// points: after its database is set up, to its last commit.
struct Timed {
    secs: f64,
    cpu: f64,
}

/// Where a `Timed` phase started.
struct Clock {
    wall: Instant,
    cpu: f64,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: own_cpu(),
        }
    }

    fn stop(self) -> Timed {
        Timed {
            secs: self.wall.elapsed().as_secs_f64(),
            cpu: own_cpu() - self.cpu,
        }
    }
}

/// `PIPESTAT_BENCH_ONLY`: one in-process phase alone, once, on the import's runs, so that a
/// profiler or callgrind (`--toggle-collect='ingest::store_path'` or `'ingest::bare_loop'`)
/// sees it and little else.
fn one_phase(only: &str, runs: usize, dir: &Path) {
    if only == "ndjson" {
        let mut out = BufWriter::new(std::io::stdout().lock());
        for i in 0..runs {
            serde_json::to_writer(&mut out, &run_json(i)).expect("write NDJSON");
            out.write_all(b"\n").expect("write NDJSON");
        }
        out.flush().expect("write NDJSON");
        return;
    }
    let parsed: Vec<Run> = (0..runs).map(|i| parse_run(&run_json(i))).collect();
    let db = dir.join("one.db");
    let t = match only {
        "store" => store_path(&db, &parsed),
        "bare" => bare_loop(&db, &parsed, Indexes::All, Commits::One),
        _ => panic!("PIPESTAT_BENCH_ONLY: expected store, bare or ndjson, got {only:?}"),
    };
    println!(
        "{only}: {runs} runs in {:.2} s ({:.0} runs/s), {:.2} s CPU",
        t.secs,
        runs as f64 / t.secs,
        t.cpu
    );
}

/// Runs `pipestat import` of `ndjson` into a fresh database at `db` as a whole process, checks
/// that every run arrived, and returns its wall time in seconds.
fn import(bin: &str, db: &Path, ndjson: &Path, runs: usize) -> f64 {
    let started = Instant::now();
    let out = Command::new(bin)
        .args(["import", "--db"])
        .arg(db)
        .arg(ndjson)
        .stdin(Stdio::null())
        .output()
        .expect("run pipestat import");
    let secs = started.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "pipestat import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count_rows(db).0, runs as i64, "import lost runs");
    secs
}

fn scaled(base: f64, scale: f64) -> usize {
    (base * scale).round() as usize
}

/// Returns the median time of a 4 KiB write followed by fdatasync, in milliseconds.
fn fsync_ms(dir: &Path) -> f64 {
    let path = dir.join("fsync.probe");
    let mut f = File::create(&path).expect("create the fsync probe");
    let block = [0u8; 4096];
    let mut times: Vec<Duration> = (0..200)
        .map(|_| {
            let started = Instant::now();
            f.write_all(&block).expect("write the fsync probe");
            f.sync_data().expect("fsync the probe");
            started.elapsed()
        })
        .collect();
    drop(f);
    let _ = std::fs::remove_file(&path);
    times.sort_unstable();
    percentile_ms(&times, 0.5)
}

/// A small deterministic generator (SplitMix64), so every run is a function of its index.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5eed_cafe_f00d_d00d)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Returns a number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Whether an event of probability `percent` / 100 happens.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const PROJECTS: [&str; 4] = [
    "gh/acme/api",
    "gh/acme/web",
    "gl/platform/infra/deployer",
    "bb/mobile/app",
];
const WORKFLOWS: [&str; 3] = ["ci", "nightly", "release"];
const ACTORS: [&str; 8] = [
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "grace",
    "renovate[bot]",
];
const TRIGGERS: [&str; 4] = ["push", "pull_request", "schedule", "manual"];
const MODULES: [&str; 5] = ["handlers", "store", "auth", "billing", "search"];
const VERBS: [&str; 4] = ["accepts", "rejects", "parses", "renders"];

/// One run in pipestat's native JSON shape (docs/api.md), determined by its index.
fn run_json(i: usize) -> Value {
    let mut rng = Rng::new(i as u64);
    let project = PROJECTS[i % PROJECTS.len()];
    let repo = project.rsplit('/').next().unwrap_or(project);
    // Most runs come from CI on pushes; nightly and release runs are rarer.
    let workflow = match rng.below(10) {
        0 => WORKFLOWS[1],
        1 => WORKFLOWS[2],
        _ => WORKFLOWS[0],
    };
    let branch = match rng.below(10) {
        0..=3 => "main".to_owned(),
        4 => "develop".to_owned(),
        _ => format!("feature/change-{}", rng.below(24)),
    };
    let status = match rng.below(100) {
        0..=84 => "success",
        85..=94 => "failed",
        95..=97 => "canceled",
        _ => "error",
    };
    let sha: String = (0..5)
        .map(|_| format!("{:08x}", rng.next() as u32))
        .collect();
    // One run every 30 s across the workload, with some jitter.
    let created = EPOCH_MS + i as i64 * 30_000 + rng.below(20_000) as i64;
    let started = created + 2_000 + rng.below(60_000) as i64;
    let mut t = started;
    let mut next_job = |rng: &mut Rng, max_secs: u64| {
        let start = t + rng.below(3_000) as i64;
        let stop = start + 1_000 + rng.below(max_secs * 1_000) as i64;
        t = stop;
        (start, stop)
    };
    let failed = status != "success";
    let deploys = branch == "main" && !failed;
    let job_status = |ok: bool| if ok { "success" } else { "skipped" };
    let fmt = pipestat::hooks::format_rfc3339;

    let (b0, b1) = next_job(&mut rng, 240);
    let build = json!({
        "id": format!("{i}-build"), "name": "build", "stage": "build", "kind": "build",
        "status": "success", "started_at": fmt(b0), "stopped_at": fmt(b1),
        "credits_used": rng.below(50), "artifacts": [format!("registry.example.com/{repo}:{}", &sha[..12])],
        "detail_url": format!("https://ci.example.com/{project}/jobs/{i}-build"),
    });
    let (l0, l1) = next_job(&mut rng, 60);
    let lint = json!({
        "id": format!("{i}-lint"), "name": "lint", "stage": "build", "kind": "other",
        "status": "success", "started_at": fmt(l0), "stopped_at": fmt(l1),
        "credits_used": rng.below(10),
    });
    let failures = if status == "failed" {
        1 + rng.below(2)
    } else {
        0
    };
    let tests: Vec<Value> = (0..20u64)
        .map(|k| {
            let module = MODULES[k as usize % MODULES.len()];
            let mut case = json!({
                "name": format!("test_{}_{}_case_{k:02}", VERBS[k as usize % VERBS.len()], module),
                "classname": format!("{repo}.{module}.{}Test", module.to_uppercase()),
                "file": format!("tests/{module}/test_{module}.py"),
                "suite": "unit",
                "result": "success",
                "duration": rng.below(2_500) as f64 / 1000.0,
            });
            if k < failures {
                case["result"] = json!("failure");
                case["message"] = json!(format!(
                    "AssertionError: expected status 200, got {} at tests/{module}/test_{module}.py:{}",
                    500 + rng.below(4),
                    10 + rng.below(400)
                ));
            } else if rng.chance(2) {
                case["result"] = json!("skipped");
            }
            case
        })
        .collect();
    let (u0, u1) = next_job(&mut rng, 600);
    let unit = json!({
        "id": format!("{i}-test"), "name": "unit-tests", "stage": "test", "kind": "test",
        "status": if status == "success" { "success" } else { status },
        "started_at": fmt(u0), "stopped_at": fmt(u1), "credits_used": rng.below(100),
        "error_code": if failed { Value::from("tests_failed") } else { Value::Null },
        "tests": tests,
    });
    let deploy = |rng: &mut Rng, t: (i64, i64), env: &str, production: bool| {
        json!({
            "id": format!("{i}-deploy-{env}"), "name": format!("deploy-{env}"), "stage": "deploy",
            "kind": "deploy", "status": job_status(deploys), "started_at": fmt(t.0),
            "stopped_at": fmt(t.1), "credits_used": rng.below(20), "env": env,
            "cluster": "k8s-eu-1", "service": repo, "service_type": "k8s",
            "production": production,
        })
    };
    let staging = next_job(&mut rng, 120);
    let staging = deploy(&mut rng, staging, "staging", false);
    let prod = next_job(&mut rng, 120);
    let prod = deploy(&mut rng, prod, "production", true);
    let stopped = t + rng.below(2_000) as i64;

    let mut run = json!({
        "id": format!("run-{i:08}"),
        "project": project,
        "default_branch": "main",
        "workflow": workflow,
        "number": i + 1,
        "branch": branch,
        "commit": sha,
        "actor": rng.pick(&ACTORS),
        "trigger": rng.pick(&TRIGGERS),
        "committed_at": fmt(created - 1_000 - rng.below(3_600_000) as i64),
        "status": status,
        "created_at": fmt(created),
        "started_at": fmt(started),
        "stopped_at": fmt(stopped),
        "credits_used": rng.below(400),
        "detail_url": format!("https://ci.example.com/{project}/runs/{i}"),
        "jobs": [build, lint, unit, staging, prod],
    });
    if rng.chance(20) {
        run["parameters"] = json!([{"name": "target", "value": "staging"}]);
    }
    run
}

/// POSTs every body to `/api/v1/runs` from `clients` threads, each with its own keep-alive
/// agent, and returns the wall time in seconds and every request's latency.
fn post_all(base: &str, bodies: Vec<String>, clients: usize) -> (f64, Vec<Duration>) {
    let url = format!("{base}/api/v1/runs");
    let mut shares: Vec<Vec<String>> = (0..clients).map(|_| Vec::new()).collect();
    for (i, body) in bodies.into_iter().enumerate() {
        shares[i % clients].push(body);
    }
    let barrier = Arc::new(std::sync::Barrier::new(clients + 1));
    let threads: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(300))
                    .max_idle_connections_per_host(1)
                    .build();
                let mut latencies = Vec::with_capacity(share.len());
                barrier.wait();
                for body in &share {
                    let started = Instant::now();
                    let answer: Value = agent
                        .post(&url)
                        .set("Content-Type", "application/json")
                        .send_string(body)
                        .unwrap_or_else(|e| panic!("POST failed: {e}"))
                        .into_json()
                        .expect("a JSON answer");
                    latencies.push(started.elapsed());
                    assert_eq!(
                        answer["created"], answer["accepted"],
                        "not every run was created: {answer}"
                    );
                }
                latencies
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut latencies = Vec::new();
    for t in threads {
        latencies.extend(t.join().expect("a client thread panicked"));
    }
    (started.elapsed().as_secs_f64(), latencies)
}

/// Where the CPU went during an HTTP phase of `secs` seconds: the daemon's threads by name and
/// the bench's own client threads, against the machine's cores over the phase.
fn cpu_use(server: &Server, before: (Vec<(String, f64)>, f64), secs: f64) -> String {
    let daemon = cpu_between(&before.0, &thread_cpu(server.child.id()));
    let clients = own_cpu() - before.1;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let used: f64 = daemon.iter().map(|(_, s)| s).sum::<f64>() + clients;
    let threads: Vec<String> = daemon
        .iter()
        .filter(|(_, s)| *s >= 0.005)
        .map(|(name, s)| format!("{name} {s:.2}"))
        .collect();
    format!(
        "{used:.2} of {:.2} core-seconds; daemon threads (s): {}; bench clients {clients:.2} s",
        secs * cores as f64,
        threads.join(", ")
    )
}

/// Counts runs, jobs and test results in a database the daemon or import wrote.
fn count_rows(db: &Path) -> (i64, i64, i64) {
    let conn = Connection::open(db).expect("open the database");
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .expect("count rows")
    };
    (count("runs"), count("jobs"), count("test_results"))
}

/// Parses every line of the NDJSON file into runs, timing only the parsing.
fn parse_file(path: &Path) -> (f64, Vec<Run>) {
    let bytes = std::fs::read(path).expect("read the NDJSON file");
    let started = Instant::now();
    let runs: Vec<Run> = bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            pipestat::hooks::parse_json(line)
                .and_then(|v| pipestat::hooks::run_from_json(&v))
                .expect("a valid run")
        })
        .collect();
    (started.elapsed().as_secs_f64(), runs)
}

/// One generated run as the model holds it.
fn parse_run(json: &Value) -> Run {
    let bytes = json.to_string();
    pipestat::hooks::parse_json(bytes.as_bytes())
        .and_then(|v| pipestat::hooks::run_from_json(&v))
        .expect("a valid run")
}

/// Writes pre-parsed runs through pipestat's own store path, as `import` does. Never inlined,
/// so that callgrind can count it alone (`PIPESTAT_BENCH_ONLY`).
#[inline(never)]
fn store_path(db: &Path, runs: &[Run]) -> Timed {
    let mut conn = pipestat::hooks::open_bulk(db).expect("open the database");
    let clock = Clock::start();
    for batch in runs.chunks(BULK_BATCH) {
        let (counts, failures) =
            pipestat::hooks::write_batch(&mut conn, batch).expect("write a batch");
        assert!(failures.is_empty(), "runs were refused");
        assert_eq!(counts.created, batch.len() as u64);
    }
    clock.stop()
}

/// Which indexes of the schema the bare loop keeps.
#[derive(Clone, Copy, PartialEq)]
enum Indexes {
    /// The schema as it is.
    All,
    /// Every `CREATE INDEX` dropped: what the rows cost without the statistics' indexes.
    KeysOnly,
}

/// How the bare loop commits.
#[derive(Clone, Copy, PartialEq)]
enum Commits {
    /// Every run in one transaction, `synchronous = FULL`: the limit of bulk writes.
    One,
    /// A transaction every this many runs, `synchronous = NORMAL`, as the writer of `serve`
    /// commits a group (its fsync is the syncer's, off the writer's path): the limit of a
    /// writer whose groups hold this many runs.
    Every(usize),
}

/// SQLite alone: the same rows inserted with prepared cached statements, on the same schema
/// and pragmas as pipestat's: in one transaction with the page cache of `import`, in groups
/// with the daemon's. Projects and workflows exist beforehand.
#[inline(never)]
fn bare_loop(db: &Path, runs: &[Run], indexes: Indexes, commits: Commits) -> Timed {
    let conn = Connection::open(db).expect("open the database");
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .expect("WAL");
    assert_eq!(mode, "wal");
    let (synchronous, cache_kib) = match commits {
        Commits::One => ("FULL", pipestat::hooks::BULK_CACHE_KIB),
        Commits::Every(_) => ("NORMAL", 8_000),
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous};
         PRAGMA cache_size = -{cache_kib};
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;"
    ))
    .expect("pragmas");
    conn.execute_batch(SCHEMA).expect("the schema");
    if indexes == Indexes::KeysOnly {
        let names: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL")
            .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
            .expect("the index names");
        assert!(!names.is_empty(), "the schema has secondary indexes");
        for name in names {
            conn.execute_batch(&format!("DROP INDEX \"{name}\""))
                .expect("drop an index");
        }
    }

    let mut ids: HashMap<(&str, &str), (i64, i64)> = HashMap::new();
    for run in runs {
        let next = ids.len();
        ids.entry((&run.project, &run.workflow)).or_insert_with(|| {
            conn.execute(
                "INSERT INTO projects (slug, key) VALUES (?1, ?1) ON CONFLICT DO NOTHING",
                [&run.project],
            )
            .expect("insert a project");
            let project: i64 = conn
                .query_row(
                    "SELECT id FROM projects WHERE slug = ?1",
                    [&run.project],
                    |r| r.get(0),
                )
                .expect("a project");
            conn.execute(
                "INSERT INTO workflows (project_id, name, pipeline_id) VALUES (?1, ?2, ?3)",
                params![project, run.workflow, format!("pipeline-{next}")],
            )
            .expect("insert a workflow");
            (project, conn.last_insert_rowid())
        });
    }

    let per_commit = match commits {
        Commits::One => runs.len().max(1),
        Commits::Every(n) => n.max(1),
    };
    let clock = Clock::start();
    {
        let mut insert_run = conn
            .prepare_cached(
                "INSERT INTO runs (project_id, workflow_id, ext_id, number, branch, commit_sha,
                 actor, trigger, committed_at, status, created_at, started_at, stopped_at,
                 credits_used, detail_url, parameters)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )
            .expect("prepare");
        let mut insert_job = conn
            .prepare_cached(
                "INSERT INTO jobs (run_id, project_id, ext_id, position, name, stage, kind,
                 status, created_at, started_at, stopped_at, credits_used, detail_url,
                 error_code, error_msg, env, cluster, service, service_type, production,
                 artifacts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                 ?16, ?17, ?18, ?19, ?20, ?21)",
            )
            .expect("prepare");
        let mut insert_test = conn
            .prepare_cached(
                "INSERT INTO test_results (job_id, run_id, project_id, suite, classname, name,
                 file, result, duration, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .expect("prepare");
        for (n, run) in runs.iter().enumerate() {
            if n % per_commit == 0 {
                if n > 0 {
                    conn.execute_batch("COMMIT").expect("commit");
                }
                conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
            }
            let (project, workflow) = ids[&(run.project.as_str(), run.workflow.as_str())];
            insert_run
                .execute(params![
                    project,
                    workflow,
                    run.id,
                    run.number,
                    run.branch,
                    run.commit,
                    run.actor,
                    run.trigger,
                    run.committed_at,
                    run.status.as_str(),
                    run.created_at,
                    run.started_at,
                    run.stopped_at,
                    run.credits_used,
                    run.detail_url,
                    run.parameters
                ])
                .expect("insert a run");
            let run_id = conn.last_insert_rowid();
            for (position, job) in run.jobs.iter().enumerate() {
                let artifacts = job
                    .artifacts
                    .as_ref()
                    .map(|a| serde_json::to_string(a).expect("strings serialize"));
                insert_job
                    .execute(params![
                        run_id,
                        project,
                        job.id,
                        position as i64,
                        job.name,
                        job.stage,
                        job.kind.as_str(),
                        job.status.as_str(),
                        job.created_at,
                        job.started_at,
                        job.stopped_at,
                        job.credits_used,
                        job.detail_url,
                        job.error_code,
                        job.error_msg,
                        job.env,
                        job.cluster,
                        job.service,
                        job.service_type,
                        job.production,
                        artifacts
                    ])
                    .expect("insert a job");
                let job_id = conn.last_insert_rowid();
                for t in job.tests.iter().flatten() {
                    insert_test
                        .execute(params![
                            job_id,
                            run_id,
                            project,
                            t.suite,
                            t.classname,
                            t.name,
                            t.file,
                            t.result.as_str(),
                            t.duration,
                            t.message
                        ])
                        .expect("insert a test result");
                }
            }
        }
    }
    if !runs.is_empty() {
        conn.execute_batch("COMMIT").expect("commit");
    }
    clock.stop()
}

/// The figures to print, one row per phase.
#[derive(Default)]
struct Table {
    rows: Vec<(String, usize, f64, String)>,
}

impl Table {
    fn row(&mut self, what: &str, runs: usize, secs: f64, note: String) {
        println!(
            "  done: {what}: {runs} runs in {secs:.2} s ({:.0} runs/s)",
            runs as f64 / secs
        );
        self.rows.push((what.to_owned(), runs, secs, note));
    }

    fn print(&self) {
        println!();
        println!(
            "{:<46} {:>8} {:>8} {:>10}  notes",
            "phase", "runs", "seconds", "runs/s"
        );
        println!("{}", "-".repeat(110));
        for (what, runs, secs, note) in &self.rows {
            println!(
                "{what:<46} {runs:>8} {secs:>8.2} {:>10.0}  {note}",
                *runs as f64 / secs
            );
        }
    }
}
