//! Demo data for DORA (docs/dora.md): two projects whose numbers tell a story, with every input
//! DORA reads — pushes of several commits, deploy jobs of several services, failed deploy
//! attempts, rollbacks, and incidents linked by deployment, by commit and by time, some still
//! open. Domain values only; `fill` writes them.
//!
//! - `gh/acme/storefront` (services web, checkout, catalog) ships small pushes several times a
//!   working day, each deployed within the hour; a few deployments fail and are rolled back or
//!   fixed within the hour: elite on every key.
//! - `gh/acme/ledger` (services ledger-api, ledger-batch) batches three weeks of commits into a
//!   release every third Thursday; a third of the releases fail, incidents take days to close,
//!   and the latest one is still open: medium deployment frequency, low on the rest.

use crate::model::{Commit, Incident, Job, Kind, Push, Rollback, Run, Status};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Everything the DORA demo adds, in time order within each kind.
#[derive(Default)]
pub struct DoraDemo {
    pub runs: Vec<Run>,
    pub pushes: Vec<Push>,
    pub rollbacks: Vec<Rollback>,
    pub incidents: Vec<Incident>,
}

/// splitmix64: a small deterministic generator of its own, so the rest of the demo's streams
/// do not shift when this one changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in lo..hi.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo) as u64) as i64
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn sha(&mut self) -> String {
        format!(
            "{:016x}{:016x}{:08x}",
            self.next(),
            self.next(),
            self.next() as u32
        )
    }
}

struct Builder {
    slug: &'static str,
    rng: Rng,
    out: DoraDemo,
    runs: u32,
    /// Commits pushed to main and not deployed yet, per service.
    pending: Vec<(String, i64)>,
}

impl Builder {
    /// A push to main of `n` commits made over `span` before `at`.
    fn push(&mut self, at: i64, n: i64, span: i64) -> String {
        let mut commits = Vec::new();
        for k in 0..n {
            let committed_at = at - span + span * k / n.max(1) + self.rng.range(0, 5 * MINUTE);
            commits.push(Commit {
                sha: self.rng.sha(),
                committed_at: committed_at.min(at),
            });
        }
        let head = commits.last().expect("n >= 1").sha.clone();
        self.pending
            .extend(commits.iter().map(|c| (c.sha.clone(), c.committed_at)));
        self.out.pushes.push(Push {
            project: self.slug.to_owned(),
            branch: "main".to_owned(),
            pushed_at: at,
            commits,
        });
        head
    }

    /// A deploy run of `service` at `commit`, finishing at `at`; its id.
    fn deploy(&mut self, service: &str, commit: &str, at: i64, ok: bool) -> String {
        self.runs += 1;
        let id = format!(
            "{}-deploy-{}",
            self.slug.rsplit('/').next().unwrap_or("p"),
            self.runs
        );
        let created = at - self.rng.range(8 * MINUTE, 25 * MINUTE);
        let status = if ok { Status::Success } else { Status::Failed };
        let job = |name: &str, kind: Kind, start: i64, stop: i64, status: Status| Job {
            id: format!("{id}/{name}"),
            name: name.to_owned(),
            stage: Some(name.to_owned()),
            kind,
            status,
            created_at: start,
            started_at: Some(start),
            stopped_at: Some(stop),
            credits_used: 0,
            detail_url: None,
            error_code: (!ok && kind == Kind::Deploy).then(|| "rollout_failed".to_owned()),
            error_msg: None,
            env: (kind == Kind::Deploy).then(|| "production".to_owned()),
            cluster: (kind == Kind::Deploy).then(|| "prod-eu".to_owned()),
            service: (kind == Kind::Deploy).then(|| service.to_owned()),
            service_type: None,
            production: kind == Kind::Deploy,
            artifacts: None,
            tests: None,
        };
        let built = created + (at - created) / 2;
        self.out.runs.push(Run {
            id: id.clone(),
            project: self.slug.to_owned(),
            project_key: None,
            default_branch: Some("main".to_owned()),
            workflow: format!("deploy-{service}"),
            pipeline_id: None,
            number: None,
            branch: Some("main".to_owned()),
            commit: Some(commit.to_owned()),
            actor: Some("release-bot".to_owned()),
            trigger: Some("push".to_owned()),
            committed_at: None,
            status,
            created_at: created,
            started_at: Some(created),
            stopped_at: Some(at),
            credits_used: 0,
            detail_url: None,
            parameters: None,
            jobs: vec![
                job("build", Kind::Build, created, built, Status::Success),
                job("deploy", Kind::Deploy, built, at, status),
            ],
        });
        id
    }

    fn rollback(&mut self, service: &str, at: i64) {
        let n = self.out.rollbacks.len() + 1;
        self.out.rollbacks.push(Rollback {
            id: Some(format!(
                "{}-rollback-{n}",
                self.slug.rsplit('/').next().unwrap_or("p")
            )),
            project: self.slug.to_owned(),
            env: Some("production".to_owned()),
            env_type: Some("production".to_owned()),
            production: true,
            operation_type: Some("service".to_owned()),
            service: Some(service.to_owned()),
            service_type: Some("k8s".to_owned()),
            origin_service: None,
            update_service: None,
            create_by: Some(r#"{"name":"on-call"}"#.to_owned()),
            created_at: at,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn incident(
        &mut self,
        title: &str,
        service: Option<&str>,
        started_at: i64,
        resolved_at: Option<i64>,
        severity: &str,
        deployment: Option<String>,
        commit: Option<String>,
    ) {
        let n = self.out.incidents.len() + 1;
        let key = self.slug.rsplit('/').next().unwrap_or("p").to_uppercase();
        self.out.incidents.push(Incident {
            id: format!("{key}-{n}"),
            project: self.slug.to_owned(),
            title: title.to_owned(),
            service: service.map(str::to_owned),
            env: Some("production".to_owned()),
            started_at,
            resolved_at,
            severity: Some(severity.to_owned()),
            url: None,
            deployment,
            commit,
        });
    }
}

/// Local hour `h` of day `day` (days since 1970), UTC.
fn at(day: i64, h: i64) -> i64 {
    day * DAY + h * HOUR
}

fn weekday(day: i64) -> i64 {
    // 1970-01-01 was a Thursday: Monday is 0.
    (day + 3).rem_euclid(7)
}

/// The DORA demo over the `days` days before `now`.
pub fn generate(seed: u64, days: u32, now: i64) -> DoraDemo {
    let first = now.div_euclid(DAY) - i64::from(days);
    let last = now.div_euclid(DAY);
    let mut out = DoraDemo::default();

    // The elite storefront.
    let mut b = Builder {
        slug: "gh/acme/storefront",
        rng: Rng(seed ^ 0x5707_EF20),
        out: DoraDemo::default(),
        runs: 0,
        pending: Vec::new(),
    };
    for day in first..=last {
        if weekday(day) >= 5 {
            continue;
        }
        for service in ["web", "checkout", "catalog"] {
            for slot in 0..b.rng.range(1, 3) {
                let pushed = at(day, 9 + slot * 3) + b.rng.range(0, 2 * HOUR);
                let deployed = pushed + b.rng.range(20 * MINUTE, 55 * MINUTE);
                if deployed >= now {
                    continue;
                }
                let n = b.rng.range(1, 4);
                let span = b.rng.range(30 * MINUTE, 5 * HOUR);
                let head = b.push(pushed, n, span);
                if b.rng.chance(4) {
                    // A failed attempt, retried ten minutes later.
                    b.deploy(service, &head, deployed, false);
                }
                let run = b.deploy(service, &head, deployed + 10 * MINUTE, true);
                let t = deployed + 10 * MINUTE;
                match b.rng.next() % 200 {
                    0 | 1 => {
                        let back = t + b.rng.range(8 * MINUTE, 30 * MINUTE);
                        if back < now {
                            b.rollback(service, back);
                        }
                    }
                    2 => {
                        let start = t + b.rng.range(5 * MINUTE, 20 * MINUTE);
                        let end = start + b.rng.range(10 * MINUTE, 35 * MINUTE);
                        if end < now {
                            b.incident(
                                "Checkout errors after deploy",
                                Some(service),
                                start,
                                Some(end),
                                "sev2",
                                Some(run),
                                None,
                            );
                        }
                    }
                    3 => {
                        // Linked by time only: the latest deployment before it.
                        let start = t + b.rng.range(15 * MINUTE, 40 * MINUTE);
                        let end = start + b.rng.range(10 * MINUTE, 40 * MINUTE);
                        if end < now {
                            b.incident("Latency spike", None, start, Some(end), "sev3", None, None);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    merge(&mut out, b.out);

    // The struggling ledger: a release every third Thursday.
    let mut b = Builder {
        slug: "gh/acme/ledger",
        rng: Rng(seed ^ 0x1ED6_E400),
        out: DoraDemo::default(),
        runs: 0,
        pending: Vec::new(),
    };
    let mut release = 0;
    let mut latest = None;
    for day in first..=last {
        if weekday(day) < 5 && b.rng.chance(60) {
            let pushed = at(day, 10) + b.rng.range(0, 7 * HOUR);
            if pushed < now {
                let n = b.rng.range(2, 8);
                let span = b.rng.range(DAY, 9 * DAY);
                b.push(pushed, n, span);
            }
        }
        if weekday(day) != 3 || (day / 7) % 3 != 0 {
            continue;
        }
        let deployed = at(day, 16);
        if deployed >= now || b.pending.is_empty() {
            continue;
        }
        release += 1;
        let (head, _) = b.pending.last().expect("not empty").clone();
        let shipped = std::mem::take(&mut b.pending);
        for service in ["ledger-api", "ledger-batch"] {
            if b.rng.chance(40) {
                b.deploy(service, &head, deployed - 40 * MINUTE, false);
            }
            let run = b.deploy(service, &head, deployed, true);
            if service == "ledger-api" {
                latest = Some((deployed, run));
            }
        }
        let fixed = deployed + b.rng.range(DAY, 4 * DAY);
        match release % 3 {
            0 => {
                // Linked by commit: the root cause named in the incident.
                let (cause, _) = shipped[b.rng.range(0, shipped.len() as i64) as usize].clone();
                let open = fixed >= now || deployed + 14 * DAY > now;
                b.incident(
                    "Month-end totals wrong",
                    Some("ledger-batch"),
                    deployed + 3 * HOUR,
                    (!open).then_some(fixed),
                    "sev1",
                    None,
                    Some(cause),
                );
            }
            1 if fixed < now => {
                b.rollback("ledger-api", deployed + 5 * HOUR);
                b.incident(
                    "Ledger API timeouts",
                    None,
                    deployed + 2 * HOUR,
                    Some(deployed + 6 * HOUR),
                    "sev2",
                    None,
                    None,
                );
            }
            _ => {}
        }
    }
    // The latest release broke the API, and the incident is still open.
    if let Some((deployed, run)) = latest {
        if deployed + 4 * HOUR < now {
            b.incident(
                "Reconciliation stuck after release",
                Some("ledger-api"),
                deployed + 4 * HOUR,
                None,
                "sev1",
                Some(run),
                None,
            );
        }
    }
    merge(&mut out, b.out);
    out
}

fn merge(into: &mut DoraDemo, from: DoraDemo) {
    into.runs.extend(from.runs);
    into.pushes.extend(from.pushes);
    into.rollbacks.extend(from.rollbacks);
    into.incidents.extend(from.incidents);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_772_366_400_000; // 2026-03-01T12:00:00Z

    #[test]
    fn the_same_seed_gives_the_same_story() {
        let (a, b) = (generate(7, 90, NOW), generate(7, 90, NOW));
        assert_eq!(a.runs, b.runs);
        assert_eq!(a.pushes, b.pushes);
        assert_eq!(a.incidents, b.incidents);
        assert!(a.runs.len() > 250, "{}", a.runs.len());
    }

    #[test]
    fn every_value_is_in_the_past_and_ordered() {
        let d = generate(3, 90, NOW);
        for r in &d.runs {
            assert!(r.created_at <= r.stopped_at.unwrap() && r.stopped_at.unwrap() < NOW);
        }
        for p in &d.pushes {
            assert!(p.pushed_at < NOW && p.commits.iter().all(|c| c.committed_at <= p.pushed_at));
        }
        for i in &d.incidents {
            assert!(i.resolved_at.map_or(true, |r| r >= i.started_at && r < NOW));
        }
        // Incidents linked every way, and some open.
        assert!(d.incidents.iter().any(|i| i.deployment.is_some()));
        assert!(d.incidents.iter().any(|i| i.commit.is_some()));
        assert!(d
            .incidents
            .iter()
            .any(|i| i.deployment.is_none() && i.commit.is_none()));
        assert!(d.incidents.iter().any(|i| i.resolved_at.is_none()));
        assert!(d.runs.iter().any(|r| r.status == Status::Failed));
        assert!(!d.rollbacks.is_empty());
    }
}
