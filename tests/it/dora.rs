//! `GET /api/v1/dora` and `/api/v1/dora/deployments` through the real binary (docs/dora.md):
//! hand-worked histories for the edges of every definition, and random histories checked
//! against an independent computation written here, from the definitions, over the same
//! values the test sent.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::{json, Value};

use crate::common::{Daemon, Lcg};

const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;

fn t(s: &str) -> i64 {
    pipestat::hooks::parse_rfc3339(s).unwrap_or_else(|| panic!("{s}"))
}

fn iso(ms: i64) -> String {
    pipestat::hooks::format_rfc3339(ms)
}

/// One deployment as the test sends it and as the independent computation reads it.
#[derive(Clone, Debug)]
struct Dep {
    run: String,
    service: Option<String>,
    env: &'static str,
    production: bool,
    ok: bool,
    at: i64,
    branch: Option<String>,
    commit: Option<String>,
    committed_at: Option<i64>,
}

impl Dep {
    fn new(run: &str, service: &str, at: &str) -> Dep {
        Dep {
            run: run.into(),
            service: Some(service.into()),
            env: "production",
            production: true,
            ok: true,
            at: t(at),
            branch: None,
            commit: None,
            committed_at: None,
        }
    }

    fn commit(mut self, branch: &str, sha: &str) -> Dep {
        self.branch = Some(branch.into());
        self.commit = Some(sha.into());
        self
    }

    fn json(&self, project: &str) -> Value {
        let status = if self.ok { "success" } else { "failed" };
        json!({"id": self.run, "project": project, "workflow": "deploy", "status": status,
            "created_at": iso(self.at - 60_000), "stopped_at": iso(self.at),
            "branch": self.branch, "commit": self.commit,
            "committed_at": self.committed_at.map(iso),
            "jobs": [{"name": "deploy", "kind": "deploy", "status": status,
                "env": self.env, "production": self.production, "service": self.service,
                "started_at": iso(self.at - 60_000), "stopped_at": iso(self.at)}]})
    }
}

/// The rows of the DORA deployments rollup, in key order.
pub fn kept(conn: &rusqlite::Connection) -> Vec<String> {
    crate::common::strings(
        conn,
        "SELECT project_id || ' ' || production || ' ' || at || ' ' || job_id || ' ' || run_id
            || ' ' || quote(env) || ' ' || quote(service) || ' ' || status || ' ' || run_ext
            || ' ' || quote(branch) || ' ' || quote(commit_sha) || ' ' || quote(committed_at)
         FROM dora_deploys ORDER BY project_id, production, at, job_id",
    )
}

fn post(d: &Daemon, path: &str, items: &[Value]) {
    let a = d.post_json(path, &Value::Array(items.to_vec()).to_string());
    assert_eq!(a.status, 200, "{path}: {}", a.text);
}

fn push(project: &str, branch: &str, at: &str, commits: &[(&str, &str)]) -> Value {
    let commits: Vec<Value> = commits
        .iter()
        .map(|(sha, c)| json!({"sha": sha, "committed_at": c}))
        .collect();
    json!({"project": project, "branch": branch, "pushed_at": at, "commits": commits})
}

fn close(a: &Value, b: f64, what: &str) {
    let x = a
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {a} is no number"));
    assert!(
        (x - b).abs() < 1e-6 * b.abs().max(1.0),
        "{what}: {x} != {b}"
    );
}

/// Project acme/shop, the week of Monday 2026-03-02: lead time's edges.
///
/// Pushes to main: P1 08:00 Mar 2 (c1 committed 06:00, c2 07:00), P2 12:00 Mar 2 (c3 11:00),
/// P3 09:00 Mar 3 (c4 08:00), P4 09:00 Mar 4 (c5 08:00).
/// - D1 web, c2, Mar 2 09:00: the first deployment brings the push holding c2: c1 3 h, c2 2 h.
/// - D2 web, c4, Mar 3 10:00: the pushes after P1 up to P3: c3 23 h, c4 2 h.
/// - D3 web, c2, Mar 3 12:00: an older commit; no push lies after P3 up to P1: no change.
/// - D4 web, c5, Mar 4 10:00: after P1 (D3's c2) up to P4: c3 and c4 were counted by D2, so
///   only c5, 2 h.
/// - D5 api, c5, Mar 4 11:00: api's first deployment: P4's c5, 3 h (counted per service).
/// - D6 worker, z1 on branch release, no push: the run's committed_at, Mar 5 00:00; 6 h.
///
/// Every service: 2 2 2 3 3 6 23 h: p50 3 h; p90 at rank 5.4: 6 + 0.4 × 17 = 12.8 h.
/// web alone: 2 2 2 3 23 h: p50 2 h; p90 at rank 3.6: 3 + 0.6 × 20 = 15 h.
#[test]
fn lead_time_counts_each_change_once_per_service() {
    let d = Daemon::start(&[]);
    let p = "gh/acme/shop";
    post(
        &d,
        "/api/v1/pushes",
        &[
            push(
                p,
                "main",
                "2026-03-02T08:00:00Z",
                &[
                    ("c1", "2026-03-02T06:00:00Z"),
                    ("c2", "2026-03-02T07:00:00Z"),
                ],
            ),
            push(
                p,
                "main",
                "2026-03-02T12:00:00Z",
                &[("c3", "2026-03-02T11:00:00Z")],
            ),
            push(
                p,
                "main",
                "2026-03-03T09:00:00Z",
                &[("c4", "2026-03-03T08:00:00Z")],
            ),
            push(
                p,
                "main",
                "2026-03-04T09:00:00Z",
                &[("c5", "2026-03-04T08:00:00Z")],
            ),
        ],
    );
    let mut d6 = Dep::new("d6", "worker", "2026-03-05T06:00:00Z").commit("release", "z1");
    d6.committed_at = Some(t("2026-03-05T00:00:00Z"));
    let deps = [
        Dep::new("d1", "web", "2026-03-02T09:00:00Z").commit("main", "c2"),
        Dep::new("d2", "web", "2026-03-03T10:00:00Z").commit("main", "c4"),
        Dep::new("d3", "web", "2026-03-03T12:00:00Z").commit("main", "c2"),
        Dep::new("d4", "web", "2026-03-04T10:00:00Z").commit("main", "c5"),
        Dep::new("d5", "api", "2026-03-04T11:00:00Z").commit("main", "c5"),
        d6,
    ];
    post(
        &d,
        "/api/v1/runs",
        &deps.iter().map(|x| x.json(p)).collect::<Vec<_>>(),
    );
    let week = "start=2026-03-02&end=2026-03-08";
    let all = d.get_ok(&format!("/api/v1/dora?project=acme/shop&{week}"));
    let lt = &all["lead_time"];
    assert_eq!(lt["changes"], 7, "{lt}");
    close(&lt["p50_s"], 3.0 * 3600.0, "p50");
    close(&lt["p90_s"], 12.8 * 3600.0, "p90");
    assert_eq!(lt["level"], "elite");
    assert_eq!(lt["missing"], Value::Null);
    assert_eq!(all["window"]["start"], "2026-03-02T00:00:00.000Z");
    assert_eq!(
        all["window"]["end"], "2026-03-09T00:00:00.000Z",
        "an end date includes its day"
    );
    assert_eq!(all["window"]["days"], 7);
    let web = d.get_ok(&format!("/api/v1/dora?project=shop&service=web&{week}"));
    assert_eq!(web["service"], "web");
    assert_eq!(web["lead_time"]["changes"], 5);
    close(&web["lead_time"]["p50_s"], 2.0 * 3600.0, "web p50");
    close(&web["lead_time"]["p90_s"], 15.0 * 3600.0, "web p90");
    // The list says which deployment brought what.
    let list = d.get_ok(&format!(
        "/api/v1/dora/deployments?project=acme/shop&service=web&{week}"
    ));
    let changes: Vec<(String, i64)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["run"].as_str().unwrap().to_owned(),
                i["changes"].as_i64().unwrap(),
            )
        })
        .collect();
    let expected = [("d4", 1), ("d3", 0), ("d2", 2), ("d1", 2)];
    assert_eq!(changes, expected.map(|(r, n)| (r.to_owned(), n)));
}

/// Project acme/ops, service svc, the week of Monday 2026-03-02 (no commit data):
/// - E1 Mar 2 10:00; rollback R1 11:00 blames it: recovered in 1 h.
/// - E2 Mar 2 12:00, after E1's recovery: neither failure nor rework. A staging rollback
///   at 12:30 is out of the production scope.
/// - E3 Mar 3 10:00, built commit k3; incident I4 names commit k3 (Mar 5 00:00, resolved
///   02:00): a failure recovered in 40 h.
/// - E4 Mar 3 12:00; rollback R2 at 13:00 comes after the next deployment E4, so it blames E4,
///   not E3: recovered in 1 h. E4 is rework (after E3 failed, before E3's recovery).
/// - E5 Mar 4 10:00; incident I1 (no link) starts exactly 72 h later, Mar 7 10:00: linked,
///   resolved 12:00, 74 h. E5 is rework too (before E3's recovery). I2 starts 1 ms later than
///   72 h: linked to nothing.
/// - F1 Mar 6 10:00 failed: a failed attempt, no deployment; E5 stays the latest before I1.
/// - E6 Mar 8 09:00; incident I3 names it (deployment e6), still open: open at the end.
///
/// 6 deployments, 5 failures (E1 E3 E4 E5 E6): 5/6, low. Recovered 1 1 40 74 h: p50 20.5 h
/// (high); p90 at rank 2.7: 40 + 0.7 × 34 = 63.8 h. Rework 2/6. Deploy days Mar 2, 3, 4, 8:
/// 4 in the one week, so the median is 4: high.
#[test]
fn failures_recoveries_and_rework_at_their_edges() {
    let d = Daemon::start(&[]);
    let p = "gh/acme/ops";
    let mut e3 = Dep::new("e3", "svc", "2026-03-03T10:00:00Z");
    e3.commit = Some("k3".into());
    let mut f1 = Dep::new("f1", "svc", "2026-03-06T10:00:00Z");
    f1.ok = false;
    let deps = [
        Dep::new("e1", "svc", "2026-03-02T10:00:00Z"),
        Dep::new("e2", "svc", "2026-03-02T12:00:00Z"),
        e3,
        Dep::new("e4", "svc", "2026-03-03T12:00:00Z"),
        Dep::new("e5", "svc", "2026-03-04T10:00:00Z"),
        f1,
        Dep::new("e6", "svc", "2026-03-08T09:00:00Z"),
    ];
    post(
        &d,
        "/api/v1/runs",
        &deps.iter().map(|x| x.json(p)).collect::<Vec<_>>(),
    );
    let rollback = |id: &str, at: &str, production: bool| {
        json!({"id": id, "project": p, "service": "svc", "production": production,
            "env": if production { "production" } else { "staging" }, "created_at": at})
    };
    post(
        &d,
        "/api/v1/rollbacks",
        &[
            rollback("r1", "2026-03-02T11:00:00Z", true),
            rollback("r3", "2026-03-02T12:30:00Z", false),
            rollback("r2", "2026-03-03T13:00:00Z", true),
        ],
    );
    let incident = |id: &str, started: &str, resolved: Option<&str>, link: Value| {
        let mut v = json!({"id": id, "project": p, "title": id, "started_at": started,
            "resolved_at": resolved});
        if let Value::Object(m) = link {
            v.as_object_mut().unwrap().extend(m);
        }
        v
    };
    post(
        &d,
        "/api/v1/incidents",
        &[
            incident(
                "i1",
                "2026-03-07T10:00:00Z",
                Some("2026-03-07T12:00:00Z"),
                json!(null),
            ),
            incident("i2", "2026-03-07T10:00:00.001Z", None, json!(null)),
            incident(
                "i3",
                "2026-03-08T10:00:00Z",
                None,
                json!({"deployment": "e6"}),
            ),
            incident(
                "i4",
                "2026-03-05T00:00:00Z",
                Some("2026-03-05T02:00:00Z"),
                json!({"commit": "k3"}),
            ),
        ],
    );
    let a = d.get_ok("/api/v1/dora?project=gh/acme/ops&start=2026-03-02&end=2026-03-08");
    let df = &a["deployment_frequency"];
    assert_eq!(
        (
            &df["deployments"],
            &df["deploy_days"],
            &df["deploy_failures"]
        ),
        (&6.into(), &4.into(), &1.into()),
        "{df}"
    );
    close(&df["per_day"], 6.0 / 7.0, "per_day");
    close(&df["median_deploy_days_per_week"], 4.0, "median days");
    assert_eq!(df["level"], "high");
    let cfr = &a["change_failure_rate"];
    assert_eq!(
        (&cfr["failures"], &cfr["deployments"]),
        (&5.into(), &6.into()),
        "{cfr}"
    );
    close(&cfr["rate"], 5.0 / 6.0, "rate");
    assert_eq!(cfr["level"], "low");
    let rec = &a["recovery_time"];
    assert_eq!(
        (&rec["recovered"], &rec["open"]),
        (&4.into(), &1.into()),
        "{rec}"
    );
    close(&rec["p50_s"], 20.5 * 3600.0, "recovery p50");
    close(&rec["p90_s"], 63.8 * 3600.0, "recovery p90");
    assert_eq!(rec["level"], "high");
    assert_eq!(a["rework_rate"]["reworks"], 2);
    close(&a["rework_rate"]["rate"], 2.0 / 6.0, "rework");
    // No commit data: lead time is unknown, not zero.
    assert_eq!(a["lead_time"]["p50_s"], Value::Null);
    assert_eq!(a["lead_time"]["level"], Value::Null);
    assert!(a["lead_time"]["missing"]
        .as_str()
        .unwrap()
        .contains("pushes"));
    assert_eq!(
        a["weeks"],
        json!([{"start": "2026-03-02", "deployments": 6, "failures": 5,
            "lead_time_p50_s": null, "recovery_p50_s": 20.5 * 3600.0}])
    );
    // The week before holds no deploy job yet: no data, not zeros.
    let prev = &a["previous"];
    assert_eq!(prev["window"]["start"], "2026-02-23T00:00:00.000Z");
    assert_eq!(prev["deployment_frequency"]["level"], Value::Null);
    assert!(prev["deployment_frequency"]["missing"].is_string());
    assert_eq!(prev["change_failure_rate"]["rate"], Value::Null);
    assert!(prev["change_failure_rate"]["missing"].is_string());
    assert_eq!(prev["recovery_time"]["p50_s"], Value::Null);
    assert!(prev["recovery_time"]["missing"].is_string());

    // The list, newest first, says why each failed.
    let list =
        d.get_ok("/api/v1/dora/deployments?project=gh/acme/ops&start=2026-03-02&end=2026-03-08");
    let items = list["items"].as_array().unwrap();
    let runs: Vec<&str> = items.iter().map(|i| i["run"].as_str().unwrap()).collect();
    assert_eq!(runs, ["e6", "f1", "e5", "e4", "e3", "e2", "e1"]);
    assert_eq!(items[0]["incidents"], json!(["i3"]));
    assert_eq!(items[0]["recovered_at"], Value::Null);
    assert_eq!(items[1]["status"], "failed");
    assert_eq!(items[1]["change_failure"], Value::Null);
    assert_eq!(items[2]["incidents"], json!(["i1"]));
    assert_eq!(items[3]["rollbacks"], json!(["r2"]));
    close(&items[3]["recovery_s"], 3600.0, "e4 recovery");
    assert_eq!(items[4]["incidents"], json!(["i4"]));
    assert_eq!(items[4]["rollbacks"], json!([]));
    assert_eq!(items[5]["change_failure"], false);
    // Paged: two, then the next two from the cursor.
    let page = d.get_ok(
        "/api/v1/dora/deployments?project=gh/acme/ops&start=2026-03-02&end=2026-03-08&limit=2",
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page = d.get_ok(&format!(
        "/api/v1/dora/deployments?project=gh/acme/ops&start=2026-03-02&end=2026-03-08&limit=2&cursor={cursor}"
    ));
    assert_eq!(page["items"][0]["run"], "e5");

    // A shorter incident window leaves I1 unlinked: 4 failures.
    let d2 = Daemon::start_in(tempfile::tempdir().unwrap(), &["--incident-window", "71h"]);
    post(
        &d2,
        "/api/v1/runs",
        &deps.iter().map(|x| x.json(p)).collect::<Vec<_>>(),
    );
    post(
        &d2,
        "/api/v1/incidents",
        &[incident("i1", "2026-03-07T10:00:00Z", None, json!(null))],
    );
    let a = d2.get_ok("/api/v1/dora?project=gh/acme/ops&start=2026-03-02&end=2026-03-08");
    assert_eq!(a["change_failure_rate"]["failures"], 0);
    close(
        &a["change_failure_rate"]["rate"],
        0.0,
        "rate with a 71 h window",
    );
}

#[test]
fn without_deploy_jobs_every_metric_is_null_with_a_note() {
    let d = Daemon::start(&["--now", "2026-03-10T12:00:00Z"]);
    d.post_runs(&[crate::common::run_json("1", "success", "")]);
    let a = d.get_ok("/api/v1/dora?project=gh/acme/api");
    assert_eq!(a["env"], "production");
    assert_eq!(a["window"]["days"], 30);
    // --now 2026-03-10T12:00Z: the 30 days ending with that day.
    assert_eq!(a["window"]["end"], "2026-03-11T00:00:00.000Z");
    assert_eq!(a["window"]["start"], "2026-02-09T00:00:00.000Z");
    for block in [
        "deployment_frequency",
        "lead_time",
        "change_failure_rate",
        "recovery_time",
    ] {
        assert_eq!(a[block]["level"], Value::Null, "{block}");
        assert!(a[block]["missing"].is_string(), "{block}: {}", a[block]);
    }
    assert_eq!(a["change_failure_rate"]["rate"], Value::Null);
    assert_eq!(a["rework_rate"]["rate"], Value::Null);
    // Weeks are zero-filled: Feb 9 (a Monday) to Mar 9, five weeks.
    let weeks = a["weeks"].as_array().unwrap();
    assert_eq!(weeks.len(), 5);
    assert_eq!(weeks[0]["start"], "2026-02-09");
    assert!(weeks.iter().all(|w| w["deployments"] == 0));
}

#[test]
fn bad_parameters_are_400_in_the_native_shape() {
    let d = Daemon::start(&[]);
    d.post_runs(&[crate::common::run_json("1", "success", "")]);
    for (q, word) in [
        ("", "project"),
        ("?project=gh/acme/api&days=0", "days"),
        ("?project=gh/acme/api&days=366", "days"),
        ("?project=gh/acme/api&tzo=900", "tzo"),
        ("?project=gh/acme/api&start=2026-03-01", "end"),
        (
            "?project=gh/acme/api&start=2026-03-05&end=2026-03-01",
            "end",
        ),
        (
            "?project=gh/acme/api&start=2026-03-01&end=2026-03-05&days=3",
            "days",
        ),
        (
            "?project=gh/acme/api&start=yesterday&end=2026-03-05",
            "start",
        ),
        ("?project=svn/a/b", "project"),
    ] {
        let a = d.get(&format!("/api/v1/dora{q}"));
        assert_eq!(a.status, 400, "{q}: {}", a.text);
        let message = a.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(word), "{q}: {message}");
    }
    assert_eq!(d.get("/api/v1/dora?project=gh/acme/none").status, 404);
    assert_eq!(
        d.get("/api/v1/dora/deployments?project=gh/acme/api&limit=0")
            .status,
        400
    );
    assert_eq!(
        d.post_json("/api/v1/dora?project=gh/acme/api", "{}").status,
        405
    );
}

// ---------------------------------------------------------------------------------------------
// Random histories against an independent computation.

struct History {
    pushes: Vec<(i64, Vec<(String, i64)>)>,
    deps: Vec<Dep>,
    rollbacks: Vec<(String, Option<String>, i64)>,
    incidents: Vec<Inc>,
}

#[derive(Clone)]
struct Inc {
    id: String,
    service: Option<String>,
    started: i64,
    resolved: Option<i64>,
    deployment: Option<String>,
    commit: Option<String>,
}

const SERVICES: [&str; 2] = ["web", "api"];

/// Pushes to main every few hours; deployments of two services, mostly of the newest commit,
/// sometimes an older one or a commit no push holds; rollbacks and incidents in between. Every
/// time is distinct (deployments on even seconds, the rest on odd ones), so no order is a tie.
fn random_history(rng: &mut Lcg, start: i64) -> History {
    let mut h = History {
        pushes: Vec::new(),
        deps: Vec::new(),
        rollbacks: Vec::new(),
        incidents: Vec::new(),
    };
    let mut shas: Vec<(String, i64)> = Vec::new();
    let mut clock = start;
    let mut n = 0;
    for step in 0..160 {
        clock += (1 + rng.next(10)) * H + 2_000 * rng.next(1000);
        match rng.next(10) {
            0..=3 => {
                let k = 1 + rng.next(3);
                let commits: Vec<(String, i64)> = (0..k)
                    .map(|_| {
                        n += 1;
                        (format!("s{n}"), clock - (1 + rng.next(40)) * H)
                    })
                    .collect();
                shas.extend(commits.iter().cloned());
                h.pushes.push((clock + 1_000, commits));
            }
            4..=7 => {
                let service = SERVICES[rng.next(2) as usize];
                let mut dep = Dep::new(&format!("run{step}"), service, "2026-01-01T00:00:00Z");
                dep.at = clock;
                dep.ok = rng.next(6) != 0;
                match rng.next(8) {
                    0 => {
                        dep.commit = Some(format!("loose{step}"));
                        dep.branch = Some("main".into());
                        dep.committed_at = Some(clock - rng.next(30) * H - 1);
                    }
                    1 if !shas.is_empty() => {
                        let (s, _) = shas[rng.next(shas.len() as u64) as usize].clone();
                        dep = dep.commit("main", &s);
                    }
                    _ if !shas.is_empty() => {
                        let (s, _) = shas.last().unwrap().clone();
                        dep = dep.commit("main", &s);
                    }
                    _ => {}
                }
                h.deps.push(dep);
            }
            8 => {
                let service = (rng.next(3) != 0).then(|| SERVICES[rng.next(2) as usize].to_owned());
                h.rollbacks
                    .push((format!("rb{step}"), service, clock + 1_001));
            }
            _ => {
                let started = clock + 1_001;
                let resolved = (rng.next(4) != 0).then(|| started + rng.next(50) * H);
                let (deployment, commit) = match rng.next(4) {
                    0 if !h.deps.is_empty() => (
                        Some(h.deps[rng.next(h.deps.len() as u64) as usize].run.clone()),
                        None,
                    ),
                    1 if !shas.is_empty() => (
                        None,
                        Some(shas[rng.next(shas.len() as u64) as usize].0.clone()),
                    ),
                    _ => (None, None),
                };
                let service = (rng.next(3) == 0).then(|| SERVICES[rng.next(2) as usize].to_owned());
                h.incidents.push(Inc {
                    id: format!("inc{step}"),
                    service,
                    started,
                    resolved,
                    deployment,
                    commit,
                });
            }
        }
    }
    h
}

/// What the definitions say of each successful deployment, computed naively.
#[derive(Default, Clone, Debug)]
struct Model {
    leads: Vec<i64>,
    failure: bool,
    recovered: Option<i64>,
}

fn model(h: &History, window: i64) -> Vec<Option<Model>> {
    let deps = &h.deps;
    let ok = |i: usize| deps[i].ok;
    // The index of the push holding `sha`, pushes being in time order.
    let push_of = |sha: &str| {
        h.pushes
            .iter()
            .position(|(_, cs)| cs.iter().any(|(s, _)| s == sha))
    };
    let mut out: Vec<Option<Model>> = deps.iter().map(|d| d.ok.then(Model::default)).collect();
    let mut shipped: Vec<Vec<String>> = vec![Vec::new(); deps.len()];
    for i in 0..deps.len() {
        if !ok(i) {
            continue;
        }
        let d = &deps[i];
        let prev = (0..i)
            .rev()
            .find(|&j| ok(j) && deps[j].service == d.service);
        let earlier: HashSet<String> = (0..i)
            .filter(|&j| ok(j) && deps[j].service == d.service)
            .flat_map(|j| shipped[j].clone())
            .collect();
        let Some(c) = d.commit.clone() else { continue };
        let mut changes: Vec<(String, i64)> = Vec::new();
        match push_of(&c) {
            None => changes.extend(d.committed_at.map(|t| (c.clone(), t))),
            Some(ph) => {
                let lo = prev
                    .and_then(|j| deps[j].commit.as_deref())
                    .and_then(push_of);
                let range: Vec<usize> = match lo {
                    Some(lo) => (lo + 1..=ph).collect(),
                    None => vec![ph],
                };
                for k in range {
                    changes.extend(h.pushes[k].1.iter().cloned());
                }
            }
        }
        for (sha, at) in changes {
            if !earlier.contains(&sha) && !shipped[i].contains(&sha) {
                shipped[i].push(sha);
                out[i].as_mut().unwrap().leads.push((d.at - at).max(0));
            }
        }
    }
    let latest_ok_before = |at: i64, service: &Option<String>| {
        (0..deps.len())
            .filter(|&i| {
                ok(i) && deps[i].at < at && (service.is_none() || &deps[i].service == service)
            })
            .max_by_key(|&i| deps[i].at)
    };
    let mut rollback_of: HashMap<usize, Vec<i64>> = HashMap::new();
    for (_, service, at) in &h.rollbacks {
        if let Some(i) = latest_ok_before(*at, service) {
            rollback_of.entry(i).or_default().push(*at);
        }
    }
    let mut incidents_of: HashMap<usize, Vec<Option<i64>>> = HashMap::new();
    for inc in &h.incidents {
        let fits = |i: usize| inc.service.is_none() || deps[i].service == inc.service;
        let mut targets = BTreeSet::new();
        if let Some(run) = &inc.deployment {
            targets.extend((0..deps.len()).filter(|&i| ok(i) && &deps[i].run == run && fits(i)));
        }
        if let Some(sha) = &inc.commit {
            targets.extend(
                (0..deps.len())
                    .filter(|&i| ok(i) && fits(i))
                    .find(|&i| deps[i].commit.as_ref() == Some(sha) || shipped[i].contains(sha)),
            );
        }
        if inc.deployment.is_none() && inc.commit.is_none() {
            if let Some(i) = latest_ok_before(inc.started, &inc.service) {
                if inc.started - deps[i].at <= window {
                    targets.insert(i);
                }
            }
        }
        for i in targets {
            incidents_of.entry(i).or_default().push(inc.resolved);
        }
    }
    for (i, m) in out.iter_mut().enumerate() {
        if let Some(m) = m.as_mut() {
            m.failure = rollback_of.contains_key(&i) || incidents_of.contains_key(&i);
        }
    }
    for i in 0..deps.len() {
        if !out[i].as_ref().is_some_and(|m| m.failure) {
            continue;
        }
        let recovered = if let Some(rs) = incidents_of.get(&i) {
            if rs.iter().all(Option::is_some) {
                rs.iter().flatten().max().copied()
            } else {
                None
            }
        } else if let Some(rb) = rollback_of.get(&i) {
            rb.iter().min().copied()
        } else {
            (i + 1..deps.len())
                .find(|&j| {
                    ok(j) && deps[j].service == deps[i].service && !out[j].as_ref().unwrap().failure
                })
                .map(|j| deps[j].at)
        };
        out[i].as_mut().unwrap().recovered = recovered;
    }
    out
}

fn pct(mut v: Vec<f64>, p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let r = p * (v.len() - 1) as f64;
    let lo = r.floor() as usize;
    let hi = r.ceil() as usize;
    Some(v[lo] + (v[hi] - v[lo]) * (r - lo as f64))
}

fn same(a: &Value, b: Option<f64>, what: &str) {
    match b {
        None => assert_eq!(a, &Value::Null, "{what}"),
        Some(b) => close(a, b, what),
    }
}

/// Checks the blocks of one window (and scope) against the model.
fn check_blocks(
    a: &Value,
    h: &History,
    m: &[Option<Model>],
    service: Option<&str>,
    s: i64,
    e: i64,
    tzo: i64,
) {
    let deps = &h.deps;
    let scope = |i: usize| service.map_or(true, |x| deps[i].service.as_deref() == Some(x));
    let inw = |t: i64| s <= t && t < e;
    let good: Vec<usize> = (0..deps.len())
        .filter(|&i| scope(i) && deps[i].ok && inw(deps[i].at))
        .collect();
    let what = |k: &str| format!("{service:?} {} {k}", iso(s));
    let df = &a["deployment_frequency"];
    assert_eq!(df["deployments"], good.len(), "{}", what("deployments"));
    let failed_attempts = (0..deps.len())
        .filter(|&i| scope(i) && !deps[i].ok && inw(deps[i].at))
        .count();
    assert_eq!(
        df["deploy_failures"],
        failed_attempts,
        "{}",
        what("attempts")
    );
    let local_day = |t: i64| (t + tzo * 60_000).div_euclid(DAY);
    let days: BTreeSet<i64> = good.iter().map(|&i| local_day(deps[i].at)).collect();
    assert_eq!(df["deploy_days"], days.len(), "{}", what("deploy days"));
    if df["level"] != Value::Null {
        // Monday weeks: 1970-01-05 was a Monday (day 4).
        let mut per_week: Vec<f64> = Vec::new();
        let first = local_day(s) - (local_day(s) - 4).rem_euclid(7);
        let mut wk = first;
        while wk <= local_day(e - 1) {
            per_week.push(days.iter().filter(|&&d| d >= wk && d < wk + 7).count() as f64);
            wk += 7;
        }
        same(
            &df["median_deploy_days_per_week"],
            pct(per_week, 0.5),
            &what("per week"),
        );
    }
    let leads: Vec<f64> = good
        .iter()
        .flat_map(|&i| {
            m[i].as_ref()
                .unwrap()
                .leads
                .iter()
                .map(|&l| l as f64 / 1000.0)
        })
        .collect();
    assert_eq!(
        a["lead_time"]["changes"],
        leads.len(),
        "{}",
        what("changes")
    );
    same(
        &a["lead_time"]["p50_s"],
        pct(leads.clone(), 0.5),
        &what("lead p50"),
    );
    same(&a["lead_time"]["p90_s"], pct(leads, 0.9), &what("lead p90"));
    let failures = good
        .iter()
        .filter(|&&i| m[i].as_ref().unwrap().failure)
        .count();
    assert_eq!(
        a["change_failure_rate"]["failures"],
        failures,
        "{}",
        what("failures")
    );
    let data = !h.rollbacks.is_empty() || !h.incidents.is_empty();
    let rate = (!good.is_empty() && data).then(|| failures as f64 / good.len() as f64);
    same(&a["change_failure_rate"]["rate"], rate, &what("rate"));
    let fails: Vec<usize> = (0..deps.len())
        .filter(|&i| scope(i) && m[i].as_ref().is_some_and(|x| x.failure))
        .collect();
    let recs: Vec<f64> = fails
        .iter()
        .filter_map(|&i| {
            m[i].as_ref()
                .unwrap()
                .recovered
                .filter(|&r| inw(r))
                .map(|r| (r - deps[i].at).max(0) as f64 / 1000.0)
        })
        .collect();
    let open = fails
        .iter()
        .filter(|&&i| inw(deps[i].at) && m[i].as_ref().unwrap().recovered.map_or(true, |r| r >= e))
        .count();
    assert_eq!(
        a["recovery_time"]["recovered"],
        recs.len(),
        "{}",
        what("recovered")
    );
    assert_eq!(a["recovery_time"]["open"], open, "{}", what("open"));
    same(
        &a["recovery_time"]["p50_s"],
        pct(recs.clone(), 0.5),
        &what("recovery p50"),
    );
    same(
        &a["recovery_time"]["p90_s"],
        pct(recs, 0.9),
        &what("recovery p90"),
    );
    let reworks = good
        .iter()
        .filter(|&&x| {
            fails.iter().any(|&f| {
                deps[f].at < deps[x].at
                    && deps[f].service == deps[x].service
                    && m[f]
                        .as_ref()
                        .unwrap()
                        .recovered
                        .map_or(true, |r| deps[x].at <= r)
            })
        })
        .count();
    assert_eq!(a["rework_rate"]["reworks"], reworks, "{}", what("reworks"));
}

#[test]
fn random_histories_match_an_independent_computation() {
    let start = t("2026-01-05T00:00:00Z");
    for seed in 1..=4u64 {
        let mut rng = Lcg(seed * 7919);
        let h = random_history(&mut rng, start);
        let window_ms = [72 * H, 24 * H][(seed % 2) as usize];
        let window_flag = format!("{}h", window_ms / H);
        let d = Daemon::start(&["--incident-window", &window_flag]);
        let p = "gh/acme/rand";
        let pushes: Vec<Value> = h
            .pushes
            .iter()
            .map(|(at, cs)| {
                let commits: Vec<Value> = cs
                    .iter()
                    .map(|(s, c)| json!({"sha": s, "committed_at": iso(*c)}))
                    .collect();
                json!({"project": p, "branch": "main", "pushed_at": iso(*at), "commits": commits})
            })
            .collect();
        post(&d, "/api/v1/pushes", &pushes);
        post(
            &d,
            "/api/v1/runs",
            &h.deps.iter().map(|x| x.json(p)).collect::<Vec<_>>(),
        );
        let rbs: Vec<Value> = h
            .rollbacks
            .iter()
            .map(|(id, s, at)| json!({"id": id, "project": p, "service": s, "production": true, "created_at": iso(*at)}))
            .collect();
        if !rbs.is_empty() {
            post(&d, "/api/v1/rollbacks", &rbs);
        }
        let incs: Vec<Value> = h
            .incidents
            .iter()
            .map(|i| {
                json!({"id": i.id, "project": p, "title": "x", "service": i.service,
                "started_at": iso(i.started), "resolved_at": i.resolved.map(iso),
                "deployment": i.deployment, "commit": i.commit})
            })
            .collect();
        if !incs.is_empty() {
            post(&d, "/api/v1/incidents", &incs);
        }
        let m = model(&h, window_ms);
        let last = h.deps.last().map_or(start, |x| x.at);
        for _ in 0..3 {
            let tzo = [0i64, 60, -300, 330][rng.next(4) as usize];
            let s = start + rng.next(((last - start) / DAY).max(1) as u64) * DAY + rng.next(24) * H;
            let e = (s + (3 + rng.next(40)) * DAY).min(s + 366 * DAY);
            for service in [None, Some("web"), Some("api")] {
                let q = format!(
                    "/api/v1/dora?project={p}&start={}&end={}&tzo={tzo}{}",
                    iso(s),
                    iso(e),
                    service.map_or(String::new(), |x| format!("&service={x}"))
                );
                let a = d.get_ok(&q);
                check_blocks(&a, &h, &m, service, s, e, tzo);
                check_blocks(&a["previous"], &h, &m, service, s - (e - s), s, tzo);
                // The weekly series adds up to the window.
                let weeks = a["weeks"].as_array().unwrap();
                let sum: i64 = weeks
                    .iter()
                    .map(|w| w["deployments"].as_i64().unwrap())
                    .sum();
                assert_eq!(a["deployment_frequency"]["deployments"], sum, "{q}");
                let fsum: i64 = weeks.iter().map(|w| w["failures"].as_i64().unwrap()).sum();
                assert_eq!(a["change_failure_rate"]["failures"], fsum, "{q}");
                for w in weeks {
                    let date = format!("{}T00:00:00Z", w["start"].as_str().unwrap());
                    let week_start = t(&date) - tzo * 60_000;
                    let ws = week_start.max(s);
                    let we = (week_start + 7 * DAY).min(e);
                    let n = (0..h.deps.len())
                        .filter(|&i| {
                            service.map_or(true, |x| h.deps[i].service.as_deref() == Some(x))
                        })
                        .filter(|&i| h.deps[i].ok && ws <= h.deps[i].at && h.deps[i].at < we)
                        .count();
                    assert_eq!(w["deployments"], n, "{q} week {date}");
                }
            }
        }
        crate::common::assert_every_rollup_equals_its_rebuild(&mut d.db());
    }
}

/// The deployments rollup follows every change of a deploy job and of its run: a job that
/// finishes, a run whose commit changes, a job that stops being a deploy.
#[test]
fn the_deployments_rollup_follows_jobs_and_runs() {
    let d = Daemon::start(&[]);
    let p = "gh/acme/shop";
    let mut dep = Dep::new("r1", "web", "2026-03-02T10:00:00Z").commit("main", "c1");
    let mut running = dep.json(p);
    running["status"] = "running".into();
    running["jobs"][0]["status"] = "running".into();
    running["stopped_at"] = Value::Null;
    running["jobs"][0]["stopped_at"] = Value::Null;
    post(&d, "/api/v1/runs", &[running]);
    assert!(
        kept(&d.db()).is_empty(),
        "a running deploy job is no deployment yet"
    );
    post(&d, "/api/v1/runs", &[dep.json(p)]);
    assert_eq!(kept(&d.db()).len(), 1);
    // The same run again, later, with another commit and without its jobs (which stay): the
    // row follows the run.
    dep.commit = Some("c2".into());
    dep.at += 60_000;
    let mut run_only = dep.json(p);
    run_only.as_object_mut().unwrap().remove("jobs");
    post(&d, "/api/v1/runs", &[run_only]);
    let rows = kept(&d.db());
    assert!(rows.len() == 1 && rows[0].contains("'c2'"), "{rows:?}");
    let list =
        d.get_ok("/api/v1/dora/deployments?project=acme/shop&start=2026-03-02&end=2026-03-02");
    assert_eq!(list["items"][0]["commit"], "c2");
    crate::common::assert_every_rollup_equals_its_rebuild(&mut d.db());
    // The job becomes a build job: no deployment any more.
    let mut v = dep.json(p);
    v["jobs"][0]["kind"] = "build".into();
    v["stopped_at"] = iso(dep.at + 60_000).into();
    v["jobs"][0]["stopped_at"] = iso(dep.at + 60_000).into();
    post(&d, "/api/v1/runs", &[v]);
    assert!(kept(&d.db()).is_empty());
    crate::common::assert_every_rollup_equals_its_rebuild(&mut d.db());
}

/// The demo's two DORA projects tell their story (README's examples): the storefront is
/// elite on every key, the ledger struggles, with an incident still open.
#[test]
fn the_demo_has_an_elite_and_a_struggling_project() {
    let d = Daemon::start(&["--demo", "--now", "2026-03-01T12:00:00Z"]);
    let a = d.get_ok("/api/v1/dora?project=storefront&days=30");
    for block in [
        "deployment_frequency",
        "lead_time",
        "change_failure_rate",
        "recovery_time",
    ] {
        assert_eq!(
            a[block]["level"], "elite",
            "storefront {block}: {}",
            a[block]
        );
    }
    let web = d.get_ok("/api/v1/dora?project=storefront&service=checkout&days=30");
    assert!(web["deployment_frequency"]["deployments"].as_i64().unwrap() > 10);
    let a = d.get_ok("/api/v1/dora?project=gh/acme/ledger&days=90");
    assert_eq!(
        a["change_failure_rate"]["level"], "low",
        "{}",
        a["change_failure_rate"]
    );
    assert!(["medium", "low"].contains(&a["lead_time"]["level"].as_str().unwrap()));
    assert!(["medium", "low"].contains(&a["deployment_frequency"]["level"].as_str().unwrap()));
    assert!(
        a["recovery_time"]["open"].as_i64().unwrap() >= 1,
        "{}",
        a["recovery_time"]
    );
    let open = d.get_ok("/api/v1/incidents?project=gh/acme/ledger&state=open");
    assert!(!open["items"].as_array().unwrap().is_empty());
    let list = d.get_ok("/api/v1/dora/deployments?project=ledger&days=90&limit=5");
    assert!(list["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["change_failure"] == true));
}
