//! The Apigee rollups (src/store/apigee.rs) and the fast path that reads them
//! (src/apigee/rollup.rs), against independent computations: a rebuild of the rollups in SQL,
//! the window-function path over the runs and jobs themselves, and a hand-worked case.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use pipestat::hooks::Req;
use serde_json::Value;

use crate::common::{Daemon, Lcg};
use crate::history::{random_history, Run, Shape, Times, BASE, DAY, HOUR};

const MINUTE: i64 = 60_000;

fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// Runs with jobs over four days in two projects and three workflows, with ties in
/// created_at; then redeliveries that change status, times (so durations), created_at (across
/// hours and days), workflow, and the jobs' names and times. Times are loose (zero durations,
/// starts dropped or moved before created_at: negative queue times), as the rollups must count
/// whatever is stored.
const HISTORY: Shape = Shape {
    runs: 300,
    days: 4,
    batch: 29,
    redeliveries: 120,
    projects: &["gh/acme/api", "gh/acme/web"],
    workflows: &["build", "deploy", "nightly"],
    branches: &[],
    job_names: &["compile", "test", "lint", "ship"],
    times: Times::Loose,
};

/// [`HISTORY`], then JUnit reports that create a test job in some runs.
fn random_history_with_reports(d: &Daemon, seed: u64) {
    let runs = random_history(d, seed, &HISTORY);
    for run in runs.iter().step_by(17) {
        let xml = br#"<testsuite name="s"><testcase name="a" time="1.5"/></testsuite>"#;
        let path = format!("/api/v1/runs/{}/{}/tests?job=junit", run.project, run.id);
        let a = d.post_xml(&path, xml);
        assert_eq!(a.status, 200, "{}", a.text);
    }
}

/// Every rollup row that counts something, in a fixed order, blobs in hex.
pub fn kept(conn: &rusqlite::Connection) -> Vec<String> {
    crate::common::strings(
        conn,
        "SELECT concat_ws(' ', 'run', span, at, project_id, workflow_id, n, errors,
                successes, credits, dur_n, dur_sum, queue_n, queue_sum, hex(durs))
                FROM apigee_run_rollup WHERE n <> 0
             UNION ALL SELECT concat_ws(' ', 'job', span, at, project_id, workflow_id, name, n,
                errors, successes, credits, dur_n, dur_sum, queue_n, queue_sum, hex(durs))
                FROM apigee_job_rollup WHERE n <> 0
             ORDER BY 1",
    )
}

#[test]
fn upkeep_matches_a_rebuild() {
    let d = Daemon::start(&[]);
    random_history_with_reports(&d, 11);
    let mut conn = d.db();
    // The loose times are there: runs and jobs that never started, some of them stopping the
    // instant they were created, and runs that started before they were created.
    for table in ["runs", "jobs"] {
        let cases = crate::common::strings(
            &conn,
            &format!(
                "SELECT concat_ws(' ', sum(started_at IS NULL AND stopped_at IS NOT NULL),
                    sum(started_at IS NULL AND stopped_at = created_at),
                    sum(started_at < created_at)) FROM {table}"
            ),
        );
        let counts: Vec<i64> = cases[0].split(' ').map(|n| n.parse().unwrap()).collect();
        assert!(counts[..2].iter().all(|&n| n > 0), "{table}: {counts:?}");
        if table == "runs" {
            assert!(counts[2] > 0, "{table}: {counts:?}");
        }
    }
    // The rebuild encodes blobs with pipestat_durs.
    pipestat::hooks::register_functions(&conn).unwrap();
    let before = kept(&conn);
    let jobs = before.iter().filter(|r| r.starts_with("job ")).count();
    assert!(jobs > 100 && before.len() - jobs > 100, "{}", before.len());
    let tx = conn.transaction().unwrap();
    crate::common::rebuild("apigee", &tx).unwrap();
    let after = kept(&tx);
    // The first difference, rather than two lists of hundreds of rows.
    if let Some((a, b)) = before.iter().zip(&after).find(|(a, b)| a != b) {
        panic!("kept at ingest:\n  {a}\nrebuilt:\n  {b}");
    }
    assert_eq!(before.len(), after.len());
    tx.rollback().unwrap();
}

/// `MM/DD/YYYY HH:MM` of UTC milliseconds.
fn apigee_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap();
    format!(
        "{:02}/{:02}/{:04} {:02}:{:02}",
        u8::from(t.month()),
        t.day(),
        t.year(),
        t.hour(),
        t.minute()
    )
}

/// A request carrying only a query string, for `apigee::explain`.
fn req(query: &str) -> Req {
    Req::with_query(query)
}

/// Whether the query SQLite would run for a request reads the rollups (by their primary key,
/// which starts with the span; the plan names tables by their alias).
fn reads_rollup(conn: &rusqlite::Connection, facts: &str, dims: &str, query: &str) -> bool {
    let plan = pipestat::hooks::explain(conn, facts, dims, &req(query)).unwrap();
    let fast = plan.iter().any(|l| l.contains("PRIMARY KEY (span=?"));
    let facts_read = plan.iter().any(|l| {
        ["runs_by_time", "SCAN r", "SCAN j", "SCAN t"]
            .iter()
            .any(|x| l.contains(x))
    });
    assert!(fast || facts_read, "{plan:#?}");
    fast
}

/// The same requests through the fast path and, with a filter on a non-key column that every
/// row passes (`status isnot null`: no run or job lacks a status), through the
/// window-function path: the answers must be the same JSON, across facts, dimensions,
/// functions, time units, offsets, ranges, a key filter, topk, sort, sortby, limit and offset.
#[test]
fn fast_path_answers_as_the_window_functions_do() {
    let d = Daemon::start(&[]);
    random_history_with_reports(&d, 5);
    let conn = d.db();
    pipestat::hooks::register_functions(&conn).unwrap();

    let mut g = Lcg(2024);
    let sels = |facts: &str| -> Vec<String> {
        let count = if facts == "runs" {
            "run_count"
        } else {
            "job_count"
        };
        let mut v: Vec<String> = [
            "duration",
            "sum(duration)",
            "avg(duration)",
            "min(duration)",
            "max(duration)",
            "p50(duration)",
            "p95(duration)",
            "p99(duration)",
            "sum(queue_time)",
            "avg(queue_time)",
            "credits",
            "avg(credits)",
            "sum(is_error)",
            "avg(is_error)",
            "min(is_error)",
            "max(is_success)",
            "avg(is_success)",
            "message_count",
            "min(message_count)",
            "p95(message_count)",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v.push(count.to_owned());
        v.push(format!("avg({count})"));
        v
    };
    let mut checked = 0;
    let mut days = 0;
    for i in 0..200 {
        let facts = if i % 2 == 0 { "runs" } else { "jobs" };
        let keys: &[&str] = if facts == "runs" {
            &["project", "workflow"]
        } else {
            &["project", "workflow", "job"]
        };
        let mut dims: Vec<&str> = keys.iter().copied().filter(|_| g.next(2) == 0).collect();
        if g.next(2) == 0 {
            dims.reverse();
        }
        let all = sels(facts);
        let select: Vec<String> = (0..1 + g.next(3))
            .map(|_| all[g.next(all.len() as u64) as usize].clone())
            .collect();
        let unit = g.pick(&["", "", "hour", "day", "week", "month", "quarter", "year"]);
        let tzo = g.pick(&["0", "0", "60", "-120", "540", "-720", "330", "-570", "345"]);
        // Whole hours in UTC (at tzo +9h the local start is 9 hours later), for the runs some
        // ranges on whole minutes; half of the ranges whole UTC days.
        let (start, end) = match g.next(if facts == "runs" { 3 } else { 2 }) {
            0 => {
                let start = BASE - DAY + g.next(5 * 24) * HOUR;
                (start, start + (1 + g.next(4 * 24)) * HOUR)
            }
            1 => {
                let start = BASE - DAY + g.next(5) * DAY;
                (start, start + (1 + g.next(4)) * DAY)
            }
            _ => {
                let start = BASE - DAY + g.next(5 * 24 * 60) * MINUTE;
                (start, start + (1 + g.next(4 * 24 * 60)) * MINUTE)
            }
        };
        // Local days off whole UTC hours: for the runs, their edge hours are read from the
        // runs, as is the rest of a range off whole hours; the jobs, and hours at such an
        // offset, stay on the window functions.
        let whole_hours = tzo.parse::<i64>().unwrap() % 60 == 0;
        // (None: the jobs' path depends on whether the range holds an edge hour.)
        let expect_fast = if !whole_hours && unit == "hour" {
            Some(false)
        } else if facts == "runs"
            || ((whole_hours || unit.is_empty()) && start % HOUR == 0 && end % HOUR == 0)
        {
            Some(true)
        } else {
            None
        };
        let off = tzo.parse::<i64>().unwrap() * 60_000;
        let range = format!("{}~{}", apigee_time(start + off), apigee_time(end + off));
        let mut q = format!(
            "select={}&timeRange={}&tzo={tzo}",
            enc(&select.join(",")),
            enc(&range)
        );
        if !unit.is_empty() {
            q.push_str(&format!("&timeUnit={unit}"));
        }
        if g.next(3) == 0 {
            q.push_str(&format!("&topk={}", 1 + g.next(5)));
        }
        if g.next(2) == 0 {
            q.push_str(&format!("&sort={}", g.pick(&["ASC", "DESC", "asc"])));
        }
        if g.next(3) == 0 {
            let s = &select[g.next(select.len() as u64) as usize];
            q.push_str(&format!("&sortby={}", enc(s)));
        }
        if g.next(4) == 0 {
            q.push_str(&format!("&limit={}&offset={}", 1 + g.next(4), g.next(3)));
        }
        if g.next(2) == 0 {
            q.push_str("&tsAscending=true");
        }
        let key_filter = match g.next(4) {
            0 => Some("workflow ne 'deploy'"),
            1 if facts == "jobs" => Some("(job in ('compile','ship') or project eq 'gh/acme/web')"),
            _ => None,
        };
        let org = if g.next(4) == 0 { "web" } else { "all" };
        let path = |filter: Option<String>| {
            let f = filter.map_or(String::new(), |f| format!("&filter={}", enc(&f)));
            format!(
                "/v1/organizations/{org}/environments/{facts}/stats/{}?{q}{f}",
                dims.join(",")
            )
        };
        let fast_q = match key_filter {
            Some(f) => format!("{q}&filter={}", enc(f)),
            None => q.clone(),
        };
        let forced = match key_filter {
            Some(f) => format!("({f}) and (status isnot null)"),
            None => "status isnot null".to_owned(),
        };
        // `explain` takes the project from the path; the fast path and the plan need no
        // project to tell the two paths apart.
        if org == "all" {
            let fast = reads_rollup(&conn, facts, &dims.join(","), &fast_q);
            assert!(expect_fast.map_or(true, |e| e == fast), "{facts}: {fast_q}");
            let forced_q = format!("{q}&filter={}", enc(&forced));
            assert!(!reads_rollup(&conn, facts, &dims.join(","), &forced_q));
        }
        // The day rows serve whole UTC days bucketed by UTC days or longer; the hour rows the rest.
        if start % DAY == 0 && end % DAY == 0 && (unit.is_empty() || (unit != "hour" && tzo == "0"))
        {
            days += 1;
        }
        let fast = d.get_ok(&path(key_filter.map(str::to_owned)));
        let exact = d.get_ok(&path(Some(forced)));
        assert_eq!(
            fast,
            exact,
            "{facts} {} ?{q} filter {key_filter:?}",
            dims.join(",")
        );
        if fast["environments"][0].to_string().contains('.') {
            checked += 1;
        }
    }
    // Most answers hold fractions, not only zeros; both spans of rows answered some.
    assert!(checked > 80, "{checked}");
    assert!((30..130).contains(&days), "{days}");
}

/// The fast path is taken only when it answers exactly.
#[test]
fn what_stays_on_the_window_functions() {
    let d = Daemon::start(&[]);
    let conn = d.db();
    pipestat::hooks::register_functions(&conn).unwrap();
    let r = "timeRange=03/01/2026+00:00~03/02/2026+00:00";
    let fast = |facts: &str, dims: &str, q: &str| reads_rollup(&conn, facts, dims, q);
    assert!(fast(
        "runs",
        "workflow",
        &format!("select=p95(duration)&{r}")
    ));
    assert!(fast(
        "jobs",
        "job,project",
        &format!("select=p50(duration)&{r}&timeUnit=month&tzo=-300")
    ));
    assert!(fast(
        "runs",
        "",
        &format!("select=sum(queue_time)&{r}&filter=workflow+eq+'ci'")
    ));
    // A dimension, a filter field or a function the rollup lacks.
    assert!(!fast(
        "runs",
        "branch",
        &format!("select=sum(duration)&{r}")
    ));
    assert!(!fast(
        "jobs",
        "job",
        &format!("select=sum(duration)&{r}&filter=kind+eq+'build'")
    ));
    assert!(!fast("runs", "", &format!("select=p95(queue_time)&{r}")));
    assert!(!fast("runs", "", &format!("select=max(credits)&{r}")));
    assert!(!fast("runs", "", &format!("select=p50(is_error)&{r}")));
    assert!(!fast("tests", "job", &format!("select=sum(duration)&{r}")));
    // For the jobs, a range off whole hours and local days off whole UTC hours; for both, a
    // unit below an hour, and hours at an offset of a half hour.
    assert!(!fast(
        "jobs",
        "",
        "select=job_count&timeRange=03/01/2026+00:30~03/02/2026+00:00"
    ));
    assert!(!fast(
        "runs",
        "",
        &format!("select=run_count&{r}&timeUnit=minute")
    ));
    assert!(!fast(
        "jobs",
        "",
        &format!("select=job_count&{r}&timeUnit=day&tzo=330")
    ));
    assert!(!fast(
        "runs",
        "",
        &format!("select=run_count&{r}&timeUnit=hour&tzo=330")
    ));
    // The runs read the rest from the runs themselves.
    assert!(fast(
        "runs",
        "",
        "select=run_count&timeRange=03/01/2026+00:30~03/02/2026+00:00"
    ));
    assert!(fast(
        "runs",
        "workflow",
        &format!("select=p95(duration)&{r}&timeUnit=day&tzo=330")
    ));
    // Without a unit the offset only moves the range.
    assert!(fast("runs", "", &format!("select=run_count&{r}&tzo=330")));
    assert!(!fast("jobs", "", &format!("select=job_count&{r}&tzo=330")));
    assert!(fast("runs", "", &format!("select=run_count&{r}&tzo=300")));
}

/// Hand-worked, on the fast path: workflow ci has five runs whose durations are 10, 20, 30 s
/// (on March 1st, in three different hours) and 40, 100 s (on March 2nd); a sixth, of 1,000 s,
/// was created on March 3rd, outside the range.
///
/// Over both days, p95: h = (5 − 1) · 0.95 = 3.8, so 40 + 0.8 · (100 − 40) = 88; p50: h = 2,
/// so 30. On March 1st, p95: h = 2 · 0.95 = 1.9, so 20 + 0.9 · 10 = 29; on March 2nd:
/// h = 0.95, so 40 + 0.95 · 60 = 97. Then the 100 s run is redelivered (a later start, the
/// same stop: a shorter 50 s, so the old duration must leave the rollup): March 2nd's p95 is
/// 40 + 0.95 · 10 = 49.5 and the whole range's 40 + 0.8 · 10 = 48.
///
/// Posts successful runs (id, created at, seconds long), started when created, no credits.
fn post_timed_runs(d: &Daemon, runs: &[(&str, &str, i64)]) {
    let runs: Vec<_> = runs
        .iter()
        .map(|&(id, created, secs)| {
            let c = pipestat::hooks::parse_rfc3339(created).unwrap();
            Run::new(id, "success", c)
                .started(Some(c))
                .stopped(Some(c + secs * 1000))
                .credits(0)
                .json()
        })
        .collect();
    d.post_runs(&runs);
}

/// At UTC+1 (`tzo=60`, answered from the hour rows) a local day starts at 23:00 UTC: the local
/// 1st holds a and b (10, 20 s: p95 = 10 + 0.95 · 10 = 19.5), the local 2nd c, d and e (30, 40,
/// 100 s: h = 1.9, so 40 + 0.9 · 60 = 94; after the redelivery 40 + 0.9 · 10 = 49), and f, at
/// 01:00 local on the 3rd, is outside the local range.
#[test]
fn percentiles_on_the_fast_path_hand_worked() {
    let d = Daemon::start(&[]);
    post_timed_runs(
        &d,
        &[
            ("a", "2026-03-01T01:10:00Z", 10),
            ("b", "2026-03-01T05:00:00Z", 20),
            ("c", "2026-03-01T23:59:59Z", 30),
            ("d", "2026-03-02T00:00:00Z", 40),
            ("e", "2026-03-02T12:30:00Z", 100),
            ("f", "2026-03-03T00:00:00Z", 1000),
        ],
    );
    let conn = d.db();
    pipestat::hooks::register_functions(&conn).unwrap();
    let range = "timeRange=03/01/2026+00:00~03/03/2026+00:00";
    let sel = "select=p95(duration),p50(duration),min(duration),max(duration),avg(duration)";
    let q = format!("{sel}&{range}");
    assert!(reads_rollup(&conn, "runs", "workflow", &q));
    let path = format!("/v1/organizations/all/environments/runs/stats/workflow?{q}");
    let values = |body: &Value| -> Vec<String> {
        body["environments"][0]["dimensions"][0]["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["values"][0].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(values(&d.get_ok(&path)), ["88", "30", "10", "100", "40"]);
    let daily = format!(
        "/v1/organizations/all/environments/runs/stats/workflow?select=p95(duration)&{range}&timeUnit=day&tsAscending=true"
    );
    let series = |body: &Value| -> Vec<(i64, String)> {
        body["environments"][0]["dimensions"][0]["metrics"][0]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["timestamp"].as_i64().unwrap(),
                    v["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let t = |s: &str| pipestat::hooks::parse_rfc3339(s).unwrap();
    let (d1, d2) = (t("2026-03-01T00:00:00Z"), t("2026-03-02T00:00:00Z"));
    assert_eq!(
        series(&d.get_ok(&daily)),
        [(d1, "29".to_owned()), (d2, "97".to_owned())]
    );
    let local = format!("{daily}&tzo=60");
    let local_q = local.split_once('?').unwrap().1;
    assert!(reads_rollup(&conn, "runs", "workflow", local_q));
    let (l1, l2) = (d1 - HOUR, d2 - HOUR);
    assert_eq!(
        series(&d.get_ok(&local)),
        [(l1, "19.5".to_owned()), (l2, "94".to_owned())]
    );

    let e = t("2026-03-02T12:30:00Z");
    d.post_runs(&[Run::new("e", "success", e)
        .started(Some(e + 50_000))
        .stopped(Some(e + 100_000))
        .credits(0)
        .json()]);
    assert_eq!(
        series(&d.get_ok(&daily)),
        [(d1, "29".to_owned()), (d2, "49.5".to_owned())]
    );
    assert_eq!(
        series(&d.get_ok(&local)),
        [(l1, "19.5".to_owned()), (l2, "49".to_owned())]
    );
    assert_eq!(values(&d.get_ok(&path)), ["48", "30", "10", "50", "30"]);
}

/// Hand-worked, at UTC+5:30 (`tzo=330`), whose local days start at 18:30 UTC, inside an hour:
/// runs of 10 and 20 s created at 18:10 and 18:29:59 UTC on March 1st fall on the local 1st
/// (p95: h = 0.95, so 10 + 0.95 · 10 = 19.5), those of 30, 40 and 100 s at 18:30, 18:45 and
/// 01:00 on the 2nd on the local 2nd (h = 1.9, so 40 + 0.9 · 60 = 94), and one of 1,000 s at
/// 18:30 on the 2nd, the local 3rd, outside the range. A range on whole minutes, 18:15 to
/// 18:40 UTC, holds the 20 and 30 s runs: two, 25 s on average.
#[test]
fn quarter_hour_offsets_on_the_fast_path_hand_worked() {
    let d = Daemon::start(&[]);
    post_timed_runs(
        &d,
        &[
            ("a", "2026-03-01T18:10:00Z", 10),
            ("b", "2026-03-01T18:29:59Z", 20),
            ("c", "2026-03-01T18:30:00Z", 30),
            ("d", "2026-03-01T18:45:00Z", 40),
            ("e", "2026-03-02T01:00:00Z", 100),
            ("f", "2026-03-02T18:30:00Z", 1000),
        ],
    );
    let conn = d.db();
    pipestat::hooks::register_functions(&conn).unwrap();
    let q = "select=p95(duration),run_count&timeRange=03/01/2026+00:00~03/03/2026+00:00&timeUnit=day&tzo=330&tsAscending=true";
    assert!(reads_rollup(&conn, "runs", "workflow", q));
    let body = d.get_ok(&format!(
        "/v1/organizations/all/environments/runs/stats/workflow?{q}"
    ));
    let metric = |i: usize| -> Vec<(i64, String)> {
        body["environments"][0]["dimensions"][0]["metrics"][i]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["timestamp"].as_i64().unwrap(),
                    v["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let t = |s: &str| pipestat::hooks::parse_rfc3339(s).unwrap();
    let (l1, l2) = (t("2026-02-28T18:30:00Z"), t("2026-03-01T18:30:00Z"));
    assert_eq!(metric(0), [(l1, "19.5".to_owned()), (l2, "94".to_owned())]);
    assert_eq!(metric(1), [(l1, "2".to_owned()), (l2, "3".to_owned())]);

    let q = "select=run_count,avg(duration)&timeRange=03/01/2026+18:15~03/01/2026+18:40";
    assert!(reads_rollup(&conn, "runs", "", q));
    let body = d.get_ok(&format!(
        "/v1/organizations/all/environments/runs/stats/?{q}"
    ));
    let values: Vec<&str> = body["environments"][0]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["values"][0].as_str().unwrap())
        .collect();
    assert_eq!(values, ["2", "25"]);
}
