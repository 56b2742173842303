//! Native runs as `POST /api/v1/runs` takes them, built member by member, and the random
//! histories of runs and redeliveries that the rollup tests check against independent
//! computations.

use crate::common::{json_time, Daemon, Lcg};

pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 86_400_000;
/// 2026-03-01T00:00:00Z.
pub const BASE: i64 = 1_772_323_200_000;

/// A JSON string, or null.
fn text(v: Option<&str>) -> String {
    v.map_or("null".to_owned(), |s| format!("\"{s}\""))
}

/// `{"k":v,...}` of the members that are set, in the order given.
fn object(members: &[(&str, &Option<String>)]) -> String {
    let set: Vec<String> = members
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("\"{k}\":{v}")))
        .collect();
    format!("{{{}}}", set.join(","))
}

/// A native run: gh/acme/api, workflow ci, unless told otherwise. A member is sent only when
/// set; the setters that take an `Option` send `None` as null.
#[derive(Clone)]
pub struct Run {
    id: String,
    project: String,
    workflow: String,
    branch: Option<String>,
    commit: Option<String>,
    status: String,
    created: String,
    started: Option<String>,
    stopped: Option<String>,
    credits: Option<String>,
    jobs: Option<String>,
    /// Raw members spliced in last, e.g. `"number":3`.
    extra: Option<String>,
}

impl Run {
    pub fn new(id: &str, status: &str, created: i64) -> Run {
        Run {
            id: id.to_owned(),
            project: "gh/acme/api".to_owned(),
            workflow: "ci".to_owned(),
            branch: None,
            commit: None,
            status: status.to_owned(),
            created: json_time(Some(created)),
            started: None,
            stopped: None,
            credits: None,
            jobs: None,
            extra: None,
        }
    }

    pub fn project(mut self, project: &str) -> Run {
        project.clone_into(&mut self.project);
        self
    }

    pub fn workflow(mut self, workflow: &str) -> Run {
        workflow.clone_into(&mut self.workflow);
        self
    }

    pub fn branch(mut self, branch: Option<&str>) -> Run {
        self.branch = Some(text(branch));
        self
    }

    pub fn commit(mut self, commit: Option<&str>) -> Run {
        self.commit = Some(text(commit));
        self
    }

    pub fn started(mut self, ms: Option<i64>) -> Run {
        self.started = Some(json_time(ms));
        self
    }

    pub fn stopped(mut self, ms: Option<i64>) -> Run {
        self.stopped = Some(json_time(ms));
        self
    }

    pub fn credits(mut self, credits: i64) -> Run {
        self.credits = Some(credits.to_string());
        self
    }

    /// The jobs, each a JSON object (see [`Job`]).
    pub fn jobs(mut self, jobs: &[String]) -> Run {
        self.jobs = Some(format!("[{}]", jobs.join(",")));
        self
    }

    /// Members written out by hand, sent after the others.
    pub fn extra(mut self, members: &str) -> Run {
        self.extra = (!members.is_empty()).then(|| members.to_owned());
        self
    }

    pub fn json(&self) -> String {
        let object = object(&[
            ("id", &Some(text(Some(&self.id)))),
            ("project", &Some(text(Some(&self.project)))),
            ("workflow", &Some(text(Some(&self.workflow)))),
            ("branch", &self.branch),
            ("commit", &self.commit),
            ("status", &Some(text(Some(&self.status)))),
            ("created_at", &Some(self.created.clone())),
            ("started_at", &self.started),
            ("stopped_at", &self.stopped),
            ("credits_used", &self.credits),
            ("jobs", &self.jobs),
        ]);
        match &self.extra {
            Some(extra) => format!("{},{extra}}}", &object[..object.len() - 1]),
            None => object,
        }
    }
}

/// A job of a native run, created at `created`; members as for [`Run`].
pub struct Job {
    id: String,
    name: String,
    status: String,
    created: String,
    started: Option<String>,
    stopped: Option<String>,
    credits: Option<String>,
    tests: Option<String>,
}

impl Job {
    pub fn new(id: &str, name: &str, status: &str, created: i64) -> Job {
        Job {
            id: id.to_owned(),
            name: name.to_owned(),
            status: status.to_owned(),
            created: json_time(Some(created)),
            started: None,
            stopped: None,
            credits: None,
            tests: None,
        }
    }

    pub fn started(mut self, ms: Option<i64>) -> Job {
        self.started = Some(json_time(ms));
        self
    }

    pub fn stopped(mut self, ms: Option<i64>) -> Job {
        self.stopped = Some(json_time(ms));
        self
    }

    pub fn credits(mut self, credits: i64) -> Job {
        self.credits = Some(credits.to_string());
        self
    }

    /// The test results, as a JSON array.
    pub fn tests(mut self, tests: String) -> Job {
        self.tests = Some(tests);
        self
    }

    pub fn json(&self) -> String {
        object(&[
            ("id", &Some(text(Some(&self.id)))),
            ("name", &Some(text(Some(&self.name)))),
            ("status", &Some(text(Some(&self.status)))),
            ("created_at", &Some(self.created.clone())),
            ("started_at", &self.started),
            ("stopped_at", &self.stopped),
            ("credits_used", &self.credits),
            ("tests", &self.tests),
        ])
    }
}

/// Runs posted in requests of `size` runs (each request a group of writes), the last one
/// short.
pub struct Batches<'a> {
    d: &'a Daemon,
    size: usize,
    runs: Vec<String>,
}

impl<'a> Batches<'a> {
    pub fn new(d: &'a Daemon, size: usize) -> Batches<'a> {
        Batches {
            d,
            size,
            runs: Vec::new(),
        }
    }

    pub fn push(&mut self, run: String) {
        self.runs.push(run);
        if self.runs.len() == self.size {
            self.flush();
        }
    }

    /// Posts what is waiting (the runs are stored when this returns).
    pub fn flush(&mut self) {
        if !self.runs.is_empty() {
            self.d.post_runs(&self.runs);
            self.runs.clear();
        }
    }
}

/// A first delivery's status: any, success the most likely, some still running.
pub const STATUSES: [&str; 9] = [
    "success", "success", "success", "failed", "failed", "error", "timeout", "canceled", "running",
];
/// A redelivery's status: finished, so that it is fresher than a running one.
const FINISHED: [&str; 5] = ["success", "failed", "error", "timeout", "canceled"];

/// How the times of a history relate: the one difference between its users that their
/// checks need.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// created ≤ started ≤ stopped in every delivery. A job is created with its run; a
    /// redelivery keeps its run's start and sends its jobs an hour later, so that they are
    /// fresher and apply.
    Ordered,
    /// Whatever the API accepts (a stop is never before the start nor before created_at): a
    /// run or job that never started may stop the instant it was created (a zero duration),
    /// a job is created up to an hour after its run, and a redelivery may drop its run's
    /// start, move it earlier (before created_at: a negative queue time), or move created_at
    /// past the old stop, the stop following it.
    Loose,
}

impl Times {
    /// A stop up to `secs` seconds (and odd milliseconds) after the start, or after `created`
    /// when there was none; under `Loose`, something that never started stops anywhere from
    /// `early` ms before `created` on, held at `created` (the API refuses a stop before it).
    fn stop(self, g: &mut Lcg, created: i64, started: Option<i64>, secs: u64, early: i64) -> i64 {
        match (self, started) {
            (Times::Loose, None) => (created + g.next(secs) * 1_000 - early).max(created),
            (_, started) => started.unwrap_or(created) + g.next(secs) * 1_000 + g.next(1_000),
        }
    }
}

/// What a random history holds: `runs` runs over `days` days from [`BASE`], posted `batch`
/// at a time, then `redeliveries` redeliveries of random ones, ten at a time.
pub struct Shape {
    pub runs: usize,
    pub days: u64,
    pub batch: usize,
    pub redeliveries: usize,
    pub projects: &'static [&'static str],
    pub workflows: &'static [&'static str],
    /// A run's branch, picked again on each delivery (`None`: a run without one); empty: the
    /// runs carry no branch member.
    pub branches: &'static [Option<&'static str>],
    pub job_names: &'static [&'static str],
    pub times: Times,
}

/// A run as it was last delivered.
#[derive(Clone)]
pub struct Delivered {
    pub id: String,
    pub project: &'static str,
    pub created: i64,
    pub started: Option<i64>,
    pub stopped: Option<i64>,
}

/// Up to three jobs (ids j0..j2, so that a redelivery may update or add them) with any name,
/// and any status (finished ones when `fresher`), from `from` on; some never started, some
/// not stopped, durations with odd milliseconds.
fn random_jobs(g: &mut Lcg, shape: &Shape, from: i64, fresher: bool) -> Vec<String> {
    (0..g.next(4))
        .map(|i| {
            let status = if fresher {
                g.pick(&["success", "failed", "canceled"])
            } else {
                g.pick(&STATUSES)
            };
            let created = match shape.times {
                Times::Ordered => from,
                Times::Loose => from + g.next(3_600) * 1_000,
            };
            let started = (g.next(4) > 0).then(|| created + g.next(120) * 1_000);
            let stopped =
                (status != "running").then(|| shape.times.stop(g, created, started, 900, 300_000));
            Job::new(&format!("j{i}"), g.pick(shape.job_names), status, created)
                .started(started)
                .stopped(stopped)
                .credits(g.next(5))
                .json()
        })
        .collect()
}

/// The delivery of `run` with `status` and random jobs from `jobs_from` on (finished ones when
/// `fresher`): its workflow and branch picked anew, its credits at random.
fn delivery(
    g: &mut Lcg,
    shape: &Shape,
    run: &Delivered,
    status: &str,
    jobs_from: i64,
    fresher: bool,
) -> String {
    let mut r = Run::new(&run.id, status, run.created)
        .project(run.project)
        .workflow(g.pick(shape.workflows))
        .started(run.started)
        .stopped(run.stopped);
    if !shape.branches.is_empty() {
        r = r.branch(g.pick(shape.branches));
    }
    let jobs = random_jobs(g, shape, jobs_from, fresher);
    r.jobs(&jobs).credits(g.next(20)).json()
}

/// Posts a random history of `shape` from `seed`: runs with jobs, with ties in created_at,
/// then redeliveries with a finished status and a stop no earlier than the stored one (so
/// that they apply) nor than their created_at, that move created_at (across hours and days)
/// and change workflow, branch, start and jobs. Returns the runs as last delivered.
pub fn random_history(d: &Daemon, seed: u64, shape: &Shape) -> Vec<Delivered> {
    let mut g = Lcg(seed);
    let mut runs = Vec::new();
    let mut out = Batches::new(d, shape.batch);
    for i in 0..shape.runs {
        let created = BASE + g.next(shape.days * 24 * 60) * 60_000 + g.next(2) * 1_500;
        let status = g.pick(&STATUSES);
        let started = (g.next(5) > 0).then(|| created + g.next(60) * 1_000);
        let stopped = (status != "running")
            .then(|| shape.times.stop(&mut g, created, started, 1_800, 120_000));
        let run = Delivered {
            id: format!("r{i}"),
            project: g.pick(shape.projects),
            created,
            started,
            stopped,
        };
        out.push(delivery(&mut g, shape, &run, status, created, false));
        runs.push(run);
    }
    out.flush();
    let mut out = Batches::new(d, 10);
    for _ in 0..shape.redeliveries {
        let k = g.next(runs.len() as u64) as usize;
        let old = runs[k].clone();
        let status = g.pick(&FINISHED);
        let mut stop = old.stopped.unwrap_or(old.created).max(old.created) + g.next(3) * 60_000;
        let mut created = if g.next(3) == 0 {
            old.created + (g.next(600) - 300) * 60_000
        } else {
            old.created
        };
        let started = match shape.times {
            Times::Ordered => {
                let started = old.started.map(|s| s.min(stop));
                created = created.min(started.unwrap_or(stop)).min(stop);
                started
            }
            Times::Loose => {
                // created_at moved past the stop takes the stop along: a later stop still
                // applies, and one before created_at would be refused.
                stop = stop.max(created);
                match g.next(3) {
                    0 => None,
                    _ => Some(old.started.unwrap_or(created).min(stop) - g.next(600) * 1_000),
                }
            }
        };
        let run = Delivered {
            created,
            started,
            stopped: Some(stop),
            ..old
        };
        let jobs_from = match shape.times {
            Times::Ordered => created + HOUR,
            Times::Loose => created,
        };
        out.push(delivery(&mut g, shape, &run, status, jobs_from, true));
        runs[k] = run;
    }
    out.flush();
    runs
}
