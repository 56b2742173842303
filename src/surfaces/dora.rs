//! DORA under `/api/v1` (docs/dora.md): `GET /api/v1/dora` (the four keys and rework rate of
//! one project, for a window and the window before it, with a weekly series) and
//! `GET /api/v1/dora/deployments` (the window's deployments, each with its changes, failure
//! and recovery); and `GET /api/v1/incidents`.
//!
//! The figures are computed in Rust from four reads of one project (its deployments in scope,
//! from the `dora_deploys` rollup, and its rollbacks, incidents and pushes), because each
//! definition follows a sequence: a deployment's changes start after the previous deployment
//! of its service, a rollback blames the deployment before it, a failure is recovered by what
//! comes after it. Those reads are a project's own rows in order, a few thousand even for a
//! busy project (docs/benchmarks.md has the figure).

use std::collections::{BTreeSet, HashMap, HashSet};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Map, Value};

use super::{decode_cursor, encode_cursor, App};
use crate::error::{Error, Result};
use crate::http::{Method, Req, Resp};
use crate::ingest;
use crate::model::times::{self, bucket_next, bucket_start, format_rfc3339, Unit, DAY, MINUTE};
use crate::model::Status;

/// `tzo` bounds, in minutes: the offsets real time zones use.
const MAX_TZO: i64 = 14 * 60;
/// Largest page of the deployment and incident lists.
const MAX_LIMIT: usize = 1000;

/// Answers `/api/v1/dora/*`; `rest` is the path after `dora`.
pub fn route(app: &App, conn: &Connection, req: &Req, rest: &[&str]) -> Result<Resp> {
    match (req.method, rest) {
        (Method::Get, []) => summary(app, conn, req),
        (Method::Get, ["deployments"]) => deployments(app, conn, req),
        (_, [] | ["deployments"]) => Err(Error::MethodNotAllowed("GET")),
        _ => Err(Error::NotFound(format!(
            "no route for /api/v1/dora/{}; DORA is /api/v1/dora and /api/v1/dora/deployments",
            rest.join("/")
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// The request: project, scope and window.

/// What a request asks about.
struct Query {
    project_id: i64,
    slug: String,
    service: Option<String>,
    /// `None`: production deployments.
    env: Option<String>,
    window: Window,
    /// Minutes east of UTC for days and weeks.
    tzo: i32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Window {
    start: i64,
    end: i64,
}

impl Window {
    fn holds(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }

    fn before(&self) -> Window {
        Window {
            start: self.start - (self.end - self.start),
            end: self.start,
        }
    }
}

const PROJECT_BY_SLUG: &str = "SELECT id, slug FROM projects WHERE slug = ?1";
const PROJECT_BY_KEY: &str = "SELECT id, slug FROM projects WHERE key = ?1 ORDER BY id LIMIT 1";

/// The project a `project` parameter names (a slug or a key).
fn project(conn: &Connection, req: &Req) -> Result<(i64, String)> {
    let given = req
        .param("project")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::bad("parameter \"project\" is required (a slug or a key)"))?;
    let found = if given.contains('/') {
        let slug = ingest::canonical_slug(given)
            .map_err(|m| Error::bad(format!("parameter \"project\": {m}")))?;
        conn.prepare_cached(PROJECT_BY_SLUG)?
            .query_row([slug], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
    } else {
        conn.prepare_cached(PROJECT_BY_KEY)?
            .query_row([given], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
    };
    found.ok_or_else(|| Error::NotFound(format!("no project {given:?}")))
}

fn tzo(app: &App, req: &Req) -> Result<i32> {
    match req.param("tzo") {
        None => Ok(app.settings.utc_offset),
        Some(v) => v
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|m| (-MAX_TZO..=MAX_TZO).contains(m))
            .map(|m| m as i32)
            .ok_or_else(|| {
                Error::bad(format!(
                    "parameter \"tzo\": expected minutes east of UTC, -{MAX_TZO}..{MAX_TZO}, got {v:?}"
                ))
            }),
    }
}

/// A `start` or `end`: RFC 3339, or a date (`2026-03-01`) meaning that day's midnight at `tzo`;
/// an `end` date includes its day (the window ends at the next midnight).
fn instant(name: &str, v: &str, tzo: i32, is_end: bool) -> Result<i64> {
    if let Some(ms) = times::parse_rfc3339(v) {
        return Ok(ms);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(v, format).map_err(|_| {
        Error::bad(format!(
            "parameter \"{name}\": expected an RFC 3339 time or a date such as 2026-03-01, got {v:?}"
        ))
    })?;
    let day = times::unix_day_of(date) + i64::from(is_end);
    Ok(day * DAY - i64::from(tzo) * MINUTE)
}

/// The window: `start`/`end`, or the `days` (default 30) ending with today at `tzo`.
fn window(app: &App, req: &Req, tzo: i32) -> Result<Window> {
    let days = req.param("days");
    match (req.param("start"), req.param("end")) {
        (None, None) => {
            let days = match days {
                None => 30,
                Some(d) => d
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|d| (1..=365).contains(d))
                    .ok_or_else(|| {
                        Error::bad(format!("parameter \"days\": expected 1..365, got {d:?}"))
                    })?,
            };
            let end = bucket_start(app.now_ms(), Unit::Day, tzo) + DAY;
            Ok(Window {
                start: end - days * DAY,
                end,
            })
        }
        (Some(s), Some(e)) => {
            if days.is_some() {
                return Err(Error::bad(
                    "parameter \"days\": give either days or start and end, not both",
                ));
            }
            let (start, end) = (
                instant("start", s, tzo, false)?,
                instant("end", e, tzo, true)?,
            );
            if end <= start {
                return Err(Error::bad(format!(
                    "parameter \"end\": {e:?} is not after \"start\" {s:?}"
                )));
            }
            if end - start > 366 * DAY {
                return Err(Error::bad(
                    "parameters \"start\" and \"end\": the window spans more than 366 days",
                ));
            }
            Ok(Window { start, end })
        }
        (Some(_), None) => Err(Error::bad(
            "parameter \"end\" is required when \"start\" is given",
        )),
        (None, Some(_)) => Err(Error::bad(
            "parameter \"start\" is required when \"end\" is given",
        )),
    }
}

fn query(app: &App, conn: &Connection, req: &Req) -> Result<Query> {
    let (project_id, slug) = project(conn, req)?;
    let tzo = tzo(app, req)?;
    let text = |name: &str| -> Result<Option<String>> {
        match req.param(name) {
            None => Ok(None),
            Some(v) if v.is_empty() || v.len() > 1024 => Err(Error::bad(format!(
                "parameter \"{name}\": expected a name of 1..1024 bytes"
            ))),
            Some(v) => Ok(Some(v.to_owned())),
        }
    };
    Ok(Query {
        project_id,
        slug,
        service: text("service")?,
        env: text("env")?,
        window: window(app, req, tzo)?,
        tzo,
    })
}

// ---------------------------------------------------------------------------------------------
// What is read: one project's deployments, rollbacks, incidents and pushes.

/// A finished deploy job in the environment scope (production, or the `env` asked for).
#[derive(Debug)]
struct Deployment {
    job: i64,
    run: String,
    branch: Option<String>,
    commit: Option<String>,
    committed_at: Option<i64>,
    service: Option<String>,
    env: Option<String>,
    status: Status,
    at: i64,
}

impl Deployment {
    fn ok(&self) -> bool {
        self.status == Status::Success
    }
}

struct Rollback {
    id: String,
    service: Option<String>,
    at: i64,
}

struct Incident {
    id: String,
    service: Option<String>,
    started: i64,
    resolved: Option<i64>,
    deployment: Option<String>,
    commit: Option<String>,
}

struct PushRow {
    branch: String,
    commits: Vec<(String, i64)>,
}

/// A project's finished deploy jobs in the environment scope, in (stopped_at, job) order:
/// successes and failed attempts (failed, error, timeout), from the DORA deployments rollup
/// (one range of it for production deployments).
const DEPLOYMENTS: &str = "SELECT job_id, run_ext, branch, commit_sha, committed_at, service,
    env, status, at
    FROM dora_deploys
    WHERE project_id = ?1 AND production = 1 AND ?2 IS NULL
    ORDER BY at, job_id";
const DEPLOYMENTS_OF_ENV: &str = "SELECT job_id, run_ext, branch, commit_sha, committed_at,
    service, env, status, at
    FROM dora_deploys
    WHERE project_id = ?1 AND env = ?2
    ORDER BY at, job_id";

/// A project's rollbacks in the environment scope, oldest first.
const ROLLBACKS: &str = "SELECT id, ext_id, service, created_at FROM rollbacks
    WHERE project_id = ?1 AND ((?2 IS NULL AND production = 1) OR env = ?2)
    ORDER BY created_at, id";

/// A project's incidents; one naming an environment other than the `env` asked for is left out.
const INCIDENTS: &str = "SELECT ext_id, service, started_at, resolved_at, deployment, commit_sha
    FROM incidents
    WHERE project_id = ?1 AND (?2 IS NULL OR env IS NULL OR env = ?2)
    ORDER BY started_at, id";

/// A project's pushes with their commits, each branch's in push order.
const PUSHES: &str = "SELECT p.id, p.branch, c.sha, c.committed_at
    FROM pushes p JOIN push_commits c ON c.push_id = p.id
    WHERE p.project_id = ?1
    ORDER BY p.branch, p.pushed_at, p.id, c.position";

struct Facts {
    deployments: Vec<Deployment>,
    rollbacks: Vec<Rollback>,
    incidents: Vec<Incident>,
    pushes: Vec<PushRow>,
}

fn read(conn: &Connection, q: &Query) -> Result<Facts> {
    let sql = if q.env.is_some() {
        DEPLOYMENTS_OF_ENV
    } else {
        DEPLOYMENTS
    };
    let deployments = conn
        .prepare_cached(sql)?
        .query_map(params![q.project_id, q.env], |r| {
            Ok(Deployment {
                job: r.get(0)?,
                run: r.get(1)?,
                branch: r.get(2)?,
                commit: r.get(3)?,
                committed_at: r.get(4)?,
                service: r.get(5)?,
                env: r.get(6)?,
                status: r.get(7)?,
                at: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let rollbacks = conn
        .prepare_cached(ROLLBACKS)?
        .query_map(params![q.project_id, q.env], |r| {
            let rowid: i64 = r.get(0)?;
            let ext: Option<String> = r.get(1)?;
            Ok(Rollback {
                id: ext.unwrap_or_else(|| format!("#{rowid}")),
                service: r.get(2)?,
                at: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let incidents = conn
        .prepare_cached(INCIDENTS)?
        .query_map(params![q.project_id, q.env], |r| {
            Ok(Incident {
                id: r.get(0)?,
                service: r.get(1)?,
                started: r.get(2)?,
                resolved: r.get(3)?,
                deployment: r.get(4)?,
                commit: r.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut pushes: Vec<PushRow> = Vec::new();
    let mut last = None;
    let mut stmt = conn.prepare_cached(PUSHES)?;
    let mut rows = stmt.query([q.project_id])?;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        if last != Some(id) {
            last = Some(id);
            pushes.push(PushRow {
                branch: r.get(1)?,
                commits: Vec::new(),
            });
        }
        let push = pushes.last_mut().expect("pushed above");
        push.commits.push((r.get(2)?, r.get(3)?));
    }
    Ok(Facts {
        deployments,
        rollbacks,
        incidents,
        pushes,
    })
}

// ---------------------------------------------------------------------------------------------
// The definitions (docs/dora.md), over every deployment of the environment scope.

/// What the definitions say of one successful deployment.
#[derive(Debug, Default, Clone)]
struct Outcome {
    /// Lead times of its changes, ms.
    changes: Vec<i64>,
    /// The shas of its changes.
    shipped: Vec<String>,
    /// Rollbacks blaming it.
    rollbacks: Vec<String>,
    /// Incidents linked to it.
    incidents: Vec<String>,
    /// When it was recovered, if it is a change failure that was.
    recovered_at: Option<i64>,
}

impl Outcome {
    fn failure(&self) -> bool {
        !self.rollbacks.is_empty() || !self.incidents.is_empty()
    }
}

/// Every deployment's outcome (`None` for failed attempts), in the order of `deps`.
fn outcomes(facts: &Facts, incident_window: i64) -> Vec<Option<Outcome>> {
    let deps = &facts.deployments;
    let mut out: Vec<Option<Outcome>> =
        deps.iter().map(|d| d.ok().then(Outcome::default)).collect();
    let ok: Vec<usize> = (0..deps.len()).filter(|&i| deps[i].ok()).collect();

    // Lead time: each deployment's changes, per service.
    let mut place: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, p) in facts.pushes.iter().enumerate() {
        for (sha, _) in &p.commits {
            place.entry((p.branch.as_str(), sha.as_str())).or_insert(i);
        }
    }
    let mut previous: HashMap<Option<&str>, Option<&str>> = HashMap::new();
    let mut counted: HashMap<Option<&str>, HashSet<&str>> = HashMap::new();
    for &i in &ok {
        let d = &deps[i];
        let service = d.service.as_deref();
        let counted = counted.entry(service).or_default();
        let prev = previous.insert(service, d.commit.as_deref()).flatten();
        let mut changes: Vec<(&str, i64)> = Vec::new();
        if let Some(h) = d.commit.as_deref() {
            let held = d
                .branch
                .as_deref()
                .and_then(|b| place.get(&(b, h)).map(|&p| (b, p)));
            match held {
                None => {
                    if let Some(t) = d.committed_at {
                        changes.push((h, t));
                    }
                }
                Some((b, ph)) => {
                    let from = match prev.and_then(|c| place.get(&(b, c))) {
                        Some(&pp) => pp + 1,
                        None => ph,
                    };
                    for p in facts.pushes.get(from..=ph).unwrap_or(&[]) {
                        for (sha, t) in &p.commits {
                            changes.push((sha.as_str(), *t));
                        }
                    }
                }
            }
        }
        let outcome = out[i].as_mut().expect("a success");
        for (sha, t) in changes {
            if counted.insert(sha) {
                outcome.changes.push((d.at - t).max(0));
                outcome.shipped.push(sha.to_owned());
            }
        }
    }

    // The latest successful deployment before `t` (strictly) of `service` (any when None).
    let latest_before = |t: i64, service: Option<&str>| -> Option<usize> {
        let before = ok.partition_point(|&i| deps[i].at < t);
        ok[..before]
            .iter()
            .rev()
            .copied()
            .find(|&i| service.is_none() || deps[i].service.as_deref() == service)
    };

    // Change failures: (a) rollbacks, each blaming the deployment just before it.
    for rb in &facts.rollbacks {
        if let Some(i) = latest_before(rb.at, rb.service.as_deref()) {
            out[i]
                .as_mut()
                .expect("a success")
                .rollbacks
                .push(rb.id.clone());
        }
    }
    // (b) incidents: linked explicitly, else by time.
    let mut linked: Vec<Vec<usize>> = vec![Vec::new(); facts.incidents.len()];
    for (n, inc) in facts.incidents.iter().enumerate() {
        let service = inc.service.as_deref();
        let of_service = |i: usize| service.is_none() || deps[i].service.as_deref() == service;
        let mut targets = BTreeSet::new();
        if let Some(run) = inc.deployment.as_deref() {
            targets.extend(
                ok.iter()
                    .copied()
                    .filter(|&i| deps[i].run == run && of_service(i)),
            );
        }
        if let Some(sha) = inc.commit.as_deref() {
            let shipped = ok.iter().copied().find(|&i| {
                of_service(i)
                    && (deps[i].commit.as_deref() == Some(sha)
                        || out[i]
                            .as_ref()
                            .is_some_and(|o| o.shipped.iter().any(|s| s == sha)))
            });
            targets.extend(shipped);
        }
        if inc.deployment.is_none() && inc.commit.is_none() {
            if let Some(i) = latest_before(inc.started, service) {
                if inc.started - deps[i].at <= incident_window {
                    targets.insert(i);
                }
            }
        }
        for i in targets {
            out[i]
                .as_mut()
                .expect("a success")
                .incidents
                .push(inc.id.clone());
            linked[n].push(i);
        }
    }

    // Recovery of each failure: its incidents' latest resolution (none while one is open),
    // else its first rollback, else the next good deployment of its service.
    let mut incidents_of: HashMap<usize, Vec<&Incident>> = HashMap::new();
    for (n, targets) in linked.iter().enumerate() {
        for &i in targets {
            incidents_of.entry(i).or_default().push(&facts.incidents[n]);
        }
    }
    let failed: Vec<bool> = (0..deps.len())
        .map(|i| out[i].as_ref().is_some_and(Outcome::failure))
        .collect();
    for (k, &i) in ok.iter().enumerate() {
        if !failed[i] {
            continue;
        }
        let recovered = if let Some(incs) = incidents_of.get(&i) {
            incs.iter()
                .map(|inc| inc.resolved)
                .collect::<Option<Vec<i64>>>()
                .and_then(|r| r.into_iter().max())
        } else if let Some(first) = facts
            .rollbacks
            .iter()
            .filter(|rb| {
                out[i]
                    .as_ref()
                    .is_some_and(|o| o.rollbacks.contains(&rb.id))
            })
            .map(|rb| rb.at)
            .min()
        {
            Some(first)
        } else {
            ok[k + 1..]
                .iter()
                .find(|&&j| deps[j].service == deps[i].service && !failed[j])
                .map(|&j| deps[j].at)
        };
        out[i].as_mut().expect("a success").recovered_at = recovered;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Figures of a window.

/// `percentile_cont`: linear interpolation between the closest ranks of sorted `v`.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64))
}

fn sorted_seconds(ms: impl Iterator<Item = i64>) -> Vec<f64> {
    let mut v: Vec<f64> = ms.map(|m| m as f64 / 1000.0).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn level_lead_time(p50_s: f64) -> &'static str {
    match p50_s {
        s if s < 86_400.0 => "elite",
        s if s < 7.0 * 86_400.0 => "high",
        s if s < 30.0 * 86_400.0 => "medium",
        _ => "low",
    }
}

fn level_failure_rate(rate: f64) -> &'static str {
    match rate {
        r if r <= 0.05 => "elite",
        r if r <= 0.10 => "high",
        r if r <= 0.15 => "medium",
        _ => "low",
    }
}

fn level_recovery(p50_s: f64) -> &'static str {
    match p50_s {
        s if s < 3_600.0 => "elite",
        s if s < 86_400.0 => "high",
        s if s < 7.0 * 86_400.0 => "medium",
        _ => "low",
    }
}

/// Distinct local days (at `tzo`) with a successful deployment, per bucket of `unit` that
/// overlaps the window; the median over those buckets.
fn median_days_per(unit: Unit, days: &BTreeSet<i64>, w: Window, tzo: i32) -> f64 {
    let mut counts = Vec::new();
    let mut b = bucket_start(w.start, unit, tzo);
    while b < w.end {
        let next = bucket_next(b, unit, tzo);
        let n = days.iter().filter(|&&d| b <= d && d < next).count();
        counts.push(n as f64);
        b = next;
    }
    counts.sort_by(f64::total_cmp);
    percentile(&counts, 0.5).unwrap_or(0.0)
}

const NO_DEPLOYMENTS: &str = "no successful deployments in the window";
const NO_FAILURE_DATA: &str =
    "no incidents or rollbacks recorded: send incidents (POST /api/v1/incidents, issue webhooks) or rollbacks";
const NO_DEPLOY_JOBS: &str = "no deploy jobs recorded in this scope: report deploy jobs (kind \"deploy\") with production: true, or ask for their env";
const NO_COMMIT_TIMES: &str = "no commit times for the window's deployments: send pushes (POST /api/v1/pushes, push webhooks) or runs with commit and committed_at";

/// The figure blocks of one window, for the deployments of `q.service` (every service when
/// none).
fn blocks(facts: &Facts, outs: &[Option<Outcome>], q: &Query, w: Window) -> Map<String, Value> {
    let deps = &facts.deployments;
    let in_scope = |i: usize| q.service.is_none() || deps[i].service == q.service;
    // A window before the first deploy job of the scope has no data, rather than no deployments.
    let any_deploy_job = (0..deps.len()).any(|i| in_scope(i) && deps[i].at < w.end);
    let failure_data = !facts.rollbacks.is_empty() || !facts.incidents.is_empty();
    let good: Vec<usize> = (0..deps.len())
        .filter(|&i| in_scope(i) && deps[i].ok() && w.holds(deps[i].at))
        .collect();
    let attempts_failed = (0..deps.len())
        .filter(|&i| in_scope(i) && !deps[i].ok() && w.holds(deps[i].at))
        .count();
    let n = good.len();
    let days = (w.end - w.start) as f64 / DAY as f64;
    let offset = i64::from(q.tzo) * MINUTE;
    let deploy_days: BTreeSet<i64> = good
        .iter()
        .map(|&i| (deps[i].at + offset).div_euclid(DAY) * DAY - offset)
        .collect();
    let mut o = Map::new();

    // Deployment frequency.
    o.insert(
        "deployment_frequency".into(),
        if any_deploy_job {
            let per_week = median_days_per(Unit::Week, &deploy_days, w, q.tzo);
            let per_month = median_days_per(Unit::Month, &deploy_days, w, q.tzo);
            let level = if per_week >= 5.0 {
                "elite"
            } else if per_week >= 1.0 {
                "high"
            } else if per_month >= 1.0 {
                "medium"
            } else {
                "low"
            };
            json!({"deployments": n, "per_day": n as f64 / days, "deploy_days": deploy_days.len(),
                "median_deploy_days_per_week": per_week, "deploy_failures": attempts_failed,
                "level": level, "missing": null})
        } else {
            json!({"deployments": 0, "per_day": null, "deploy_days": 0,
                "median_deploy_days_per_week": null, "deploy_failures": attempts_failed,
                "level": null, "missing": NO_DEPLOY_JOBS})
        },
    );

    // Lead time for changes.
    let leads = sorted_seconds(
        good.iter()
            .flat_map(|&i| outs[i].as_ref().expect("a success").changes.iter().copied()),
    );
    let p50 = percentile(&leads, 0.5);
    o.insert(
        "lead_time".into(),
        json!({"changes": leads.len(), "p50_s": p50, "p90_s": percentile(&leads, 0.9),
        "level": p50.map(level_lead_time),
        "missing": match (n, leads.len()) {
            (0, _) => Some(NO_DEPLOYMENTS),
            (_, 0) => Some(NO_COMMIT_TIMES),
            _ => None,
        }}),
    );

    // Change failure rate.
    let failures = good
        .iter()
        .filter(|&&i| outs[i].as_ref().is_some_and(Outcome::failure))
        .count();
    let known = n > 0 && failure_data;
    let rate = known.then(|| failures as f64 / n as f64);
    o.insert(
        "change_failure_rate".into(),
        json!({"failures": failures, "deployments": n, "rate": rate,
            "level": rate.map(level_failure_rate),
            "missing": if n == 0 { Some(NO_DEPLOYMENTS) } else if !failure_data { Some(NO_FAILURE_DATA) } else { None }}),
    );

    // Failed deployment recovery time.
    let all_failures: Vec<usize> = (0..deps.len())
        .filter(|&i| in_scope(i) && outs[i].as_ref().is_some_and(Outcome::failure))
        .collect();
    let recoveries = sorted_seconds(all_failures.iter().filter_map(|&i| {
        let r = outs[i].as_ref()?.recovered_at?;
        w.holds(r).then_some((r - deps[i].at).max(0))
    }));
    let open = all_failures
        .iter()
        .filter(|&&i| {
            w.holds(deps[i].at)
                && outs[i]
                    .as_ref()
                    .and_then(|o| o.recovered_at)
                    .map_or(true, |r| r >= w.end)
        })
        .count();
    let p50 = percentile(&recoveries, 0.5);
    o.insert(
        "recovery_time".into(),
        json!({"recovered": recoveries.len(), "open": open, "p50_s": p50,
            "p90_s": percentile(&recoveries, 0.9), "level": p50.map(level_recovery),
            "missing": if !failure_data { Some(NO_FAILURE_DATA) }
                else if recoveries.is_empty() { Some("no change failure was recovered in the window") }
                else { None }}),
    );

    // Deployment rework rate.
    let reworks = good
        .iter()
        .filter(|&&e| {
            all_failures.iter().any(|&f| {
                f < e
                    && deps[f].service == deps[e].service
                    && outs[f]
                        .as_ref()
                        .and_then(|o| o.recovered_at)
                        .map_or(true, |r| deps[e].at <= r)
            })
        })
        .count();
    o.insert(
        "rework_rate".into(),
        json!({"reworks": reworks, "rate": known.then(|| reworks as f64 / n as f64),
            "missing": if n == 0 { Some(NO_DEPLOYMENTS) } else if !failure_data { Some(NO_FAILURE_DATA) } else { None }}),
    );
    o
}

/// The weekly series of the window: Monday weeks at `tzo`, ascending, zero-filled.
fn weeks(facts: &Facts, outs: &[Option<Outcome>], q: &Query) -> Vec<Value> {
    let deps = &facts.deployments;
    let w = q.window;
    let in_scope = |i: usize| q.service.is_none() || deps[i].service == q.service;
    let mut series = Vec::new();
    let mut b = bucket_start(w.start, Unit::Week, q.tzo);
    while b < w.end {
        let next = bucket_next(b, Unit::Week, q.tzo);
        let week = Window {
            start: b.max(w.start),
            end: next.min(w.end),
        };
        let good: Vec<usize> = (0..deps.len())
            .filter(|&i| in_scope(i) && deps[i].ok() && week.holds(deps[i].at))
            .collect();
        let failures = good
            .iter()
            .filter(|&&i| outs[i].as_ref().is_some_and(Outcome::failure))
            .count();
        let leads = sorted_seconds(
            good.iter()
                .flat_map(|&i| outs[i].as_ref().expect("a success").changes.iter().copied()),
        );
        let recoveries = sorted_seconds((0..deps.len()).filter_map(|i| {
            let o = outs[i].as_ref().filter(|o| in_scope(i) && o.failure())?;
            let r = o.recovered_at?;
            week.holds(r).then_some((r - deps[i].at).max(0))
        }));
        let local = (b + i64::from(q.tzo) * MINUTE).div_euclid(DAY);
        series.push(json!({
            "start": date_text(local),
            "deployments": good.len(),
            "failures": failures,
            "lead_time_p50_s": percentile(&leads, 0.5),
            "recovery_p50_s": percentile(&recoveries, 0.5),
        }));
        b = next;
    }
    series
}

fn date_text(unix_day: i64) -> String {
    times::date_of_unix_day(unix_day).map_or_else(String::new, |d| {
        format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    })
}

fn window_json(w: Window) -> Value {
    let days = (w.end - w.start) as f64 / DAY as f64;
    let days = if days.fract() == 0.0 {
        json!(days as i64)
    } else {
        json!(days)
    };
    json!({"start": format_rfc3339(w.start), "end": format_rfc3339(w.end), "days": days})
}

fn summary(app: &App, conn: &Connection, req: &Req) -> Result<Resp> {
    let q = query(app, conn, req)?;
    let facts = read(conn, &q)?;
    let outs = outcomes(&facts, app.settings.incident_window_ms());
    let mut body = Map::new();
    body.insert("project".into(), json!(q.slug));
    body.insert("service".into(), json!(q.service));
    body.insert(
        "env".into(),
        json!(q.env.as_deref().unwrap_or("production")),
    );
    body.insert("window".into(), window_json(q.window));
    body.extend(blocks(&facts, &outs, &q, q.window));
    let before = q.window.before();
    let mut previous = Map::new();
    previous.insert("window".into(), window_json(before));
    previous.extend(blocks(&facts, &outs, &q, before));
    body.insert("previous".into(), Value::Object(previous));
    body.insert("weeks".into(), Value::Array(weeks(&facts, &outs, &q)));
    Ok(Resp::json(200, &Value::Object(body)))
}

// ---------------------------------------------------------------------------------------------
// The window's deployments, newest first.

fn limit(req: &Req) -> Result<usize> {
    match req.param("limit") {
        None => Ok(100),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                Error::bad(format!(
                    "parameter \"limit\": expected 1..{MAX_LIMIT}, got {l:?}"
                ))
            }),
    }
}

fn deployments(app: &App, conn: &Connection, req: &Req) -> Result<Resp> {
    let q = query(app, conn, req)?;
    let limit = limit(req)?;
    let after = req.param("cursor").map(decode_cursor).transpose()?;
    let facts = read(conn, &q)?;
    let outs = outcomes(&facts, app.settings.incident_window_ms());
    let deps = &facts.deployments;
    let mut page: Vec<usize> = (0..deps.len())
        .rev()
        .filter(|&i| q.service.is_none() || deps[i].service == q.service)
        .filter(|&i| q.window.holds(deps[i].at))
        .filter(|&i| after.map_or(true, |c| (deps[i].at, deps[i].job) < c))
        .take(limit + 1)
        .collect();
    let next = if page.len() > limit {
        page.truncate(limit);
        page.last().map(|&i| encode_cursor(deps[i].at, deps[i].job))
    } else {
        None
    };
    let items: Vec<Value> = page
        .iter()
        .map(|&i| {
            let d = &deps[i];
            let o = outs[i].as_ref();
            let leads =
                sorted_seconds(o.map(|o| o.changes.clone()).unwrap_or_default().into_iter());
            let failure = o.is_some_and(Outcome::failure);
            let recovered_at = o.and_then(|o| o.recovered_at).filter(|_| failure);
            json!({
                "run": d.run,
                "service": d.service,
                "env": d.env,
                "commit": d.commit,
                "stopped_at": format_rfc3339(d.at),
                "status": d.status.as_str(),
                "changes": o.map(|o| o.changes.len()),
                "lead_time_p50_s": percentile(&leads, 0.5),
                "change_failure": o.map(|_| failure),
                "rollbacks": o.map(|o| o.rollbacks.clone()).unwrap_or_default(),
                "incidents": o.map(|o| o.incidents.clone()).unwrap_or_default(),
                "recovered_at": recovered_at.map(format_rfc3339),
                "recovery_s": recovered_at.map(|r| (r - d.at).max(0) as f64 / 1000.0),
            })
        })
        .collect();
    Ok(Resp::json(
        200,
        &json!({"project": q.slug, "window": window_json(q.window), "items": items,
            "next_cursor": next}),
    ))
}

// ---------------------------------------------------------------------------------------------
// `GET /api/v1/incidents`.

const LIST_INCIDENTS: &str = "SELECT i.id, p.slug, i.ext_id, i.title, i.service, i.env,
    i.started_at, i.resolved_at, i.severity, i.url, i.deployment, i.commit_sha
    FROM incidents i JOIN projects p ON p.id = i.project_id
    WHERE (?1 IS NULL OR p.slug = ?1)
      AND (?2 IS NULL OR (?2 = 'open' AND i.resolved_at IS NULL) OR (?2 = 'resolved' AND i.resolved_at IS NOT NULL))
      AND (?3 IS NULL OR (i.started_at, i.id) < (?3, ?4))
    ORDER BY i.started_at DESC, i.id DESC LIMIT ?5";

/// Incidents newest first (by started_at), in the shape of the runs list.
pub fn list_incidents(conn: &Connection, req: &Req) -> Result<Resp> {
    let project = req
        .param("project")
        .map(ingest::canonical_slug)
        .transpose()
        .map_err(|m| Error::bad(format!("parameter \"project\": {m}")))?;
    let state = match req.param("state") {
        None => None,
        Some(s @ ("open" | "resolved")) => Some(s),
        Some(s) => {
            return Err(Error::bad(format!(
                "parameter \"state\": expected open or resolved, got {s:?}"
            )))
        }
    };
    let limit = limit(req)?;
    let (after_at, after_id) = req.param("cursor").map(decode_cursor).transpose()?.unzip();
    let mut stmt = conn.prepare_cached(LIST_INCIDENTS)?;
    let t = |ms: Option<i64>| ms.map(format_rfc3339);
    let rows: Vec<(i64, i64, Value)> = stmt
        .query_map(
            params![project, state, after_at, after_id, (limit + 1) as i64],
            |r| {
                let started: i64 = r.get(6)?;
                Ok((
                    r.get(0)?,
                    started,
                    json!({
                        "project": r.get::<_, String>(1)?,
                        "id": r.get::<_, String>(2)?,
                        "title": r.get::<_, String>(3)?,
                        "service": r.get::<_, Option<String>>(4)?,
                        "env": r.get::<_, Option<String>>(5)?,
                        "started_at": format_rfc3339(started),
                        "resolved_at": t(r.get(7)?),
                        "severity": r.get::<_, Option<String>>(8)?,
                        "url": r.get::<_, Option<String>>(9)?,
                        "deployment": r.get::<_, Option<String>>(10)?,
                        "commit": r.get::<_, Option<String>>(11)?,
                    }),
                ))
            },
        )?
        .collect::<rusqlite::Result<_>>()?;
    let more = rows.len() > limit;
    let page: Vec<(i64, i64, Value)> = rows.into_iter().take(limit).collect();
    let next = if more {
        page.last().map(|(id, at, _)| encode_cursor(*at, *id))
    } else {
        None
    };
    let items: Vec<Value> = page.into_iter().map(|(_, _, v)| v).collect();
    Ok(Resp::json(
        200,
        &json!({"items": items, "next_cursor": next}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        // percentile_cont over 1, 2, 3, 10: p50 at rank 1.5 → 2.5; p90 at rank 2.7 → 3 + 0.7 × 7.
        let v = [1.0, 2.0, 3.0, 10.0];
        assert_eq!(percentile(&v, 0.5), Some(2.5));
        assert!((percentile(&v, 0.9).unwrap() - 7.9).abs() < 1e-9);
        assert_eq!(percentile(&[4.0], 0.9), Some(4.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn levels_follow_the_thresholds() {
        assert_eq!(level_lead_time(86_399.0), "elite");
        assert_eq!(level_lead_time(86_400.0), "high");
        assert_eq!(level_failure_rate(0.05), "elite");
        assert_eq!(level_failure_rate(0.150_001), "low");
        assert_eq!(level_recovery(3_600.0), "high");
    }
}
