//! The rollup families: tables kept equal to a recount of the stored runs, jobs and tests on
//! every write, so that the statistics routes read a window's rows instead of the history.
//!
//! Every family answers the same four verbs (`Family`), and the write path calls them through
//! `Rollups`, never a family by name:
//! - `replacing`: a stored row is about to be updated or deleted; take out what it counted.
//!   The write path reads a run's or job's old state once (`OldRun`, `OldJob`) and hands the
//!   same value to every family.
//! - `written`: a row was just inserted or updated; add what it counts, from the values
//!   written (`New`).
//! - `flush`: write what the verbs summed in memory, each rollup row once; every writer calls
//!   it before it commits.
//! - `rebuild`: recompute the family's tables from the stored rows with plain SQL, for an
//!   upgrade and for the tests, which check that the upkeep always equals it.
//!
//! Adding a family is a file here with its `Family` impl, a field of `Rollups` and an entry in
//! `Rollups::each` and `REBUILDS`.

pub mod apigee;
pub mod circleci;
pub mod dora;
pub mod durations;
pub mod flaky;
pub mod zadig;

use rusqlite::Connection;

use crate::error::Result;
use crate::model::{Job, Kind, Run, Status, TestCase};

/// How a run or job went: the columns most families' figures come from.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub status: Status,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub credits_used: i64,
}

impl Timing {
    pub fn of_run(run: &Run) -> Timing {
        Timing {
            status: run.status,
            created_at: run.created_at,
            started_at: run.started_at,
            stopped_at: run.stopped_at,
            credits_used: run.credits_used,
        }
    }

    pub fn of_job(job: &Job) -> Timing {
        Timing {
            status: job.status,
            created_at: job.created_at,
            started_at: job.started_at,
            stopped_at: job.stopped_at,
            credits_used: job.credits_used,
        }
    }
}

/// A stored run as it is before a write replaces it: what any family needs of its old state.
#[derive(Debug, Clone)]
pub struct OldRun {
    pub id: i64,
    pub project_id: i64,
    pub workflow_id: i64,
    pub ext_id: String,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub timing: Timing,
    /// Its recovery (circleci's `rec_from`, `rec_ms`), cleared by the update.
    pub rec_from: Option<i64>,
    pub rec_ms: Option<i64>,
}

impl OldRun {
    /// Where the stored run's jobs count while it stays as it is.
    pub fn place(&self) -> RunPlace<'_> {
        RunPlace {
            run_id: self.id,
            project_id: self.project_id,
            workflow_id: self.workflow_id,
            commit: self.commit.as_deref(),
        }
    }
}

/// A stored job as it is before a write replaces it.
#[derive(Debug, Clone)]
pub struct OldJob {
    pub id: i64,
    pub run_id: i64,
    pub project_id: i64,
    /// The workflow its run is in now.
    pub workflow_id: i64,
    pub name: String,
    /// Its kind as stored (a deploy job's write changes the DORA deployments).
    pub kind: Kind,
    pub timing: Timing,
}

/// Where a job counts: its run's row, project, workflow and commit as stored now.
#[derive(Debug, Clone, Copy)]
pub struct RunPlace<'a> {
    pub run_id: i64,
    pub project_id: i64,
    pub workflow_id: i64,
    pub commit: Option<&'a str>,
}

/// What is about to be replaced.
#[derive(Clone, Copy)]
pub enum Old<'a> {
    /// A stored run, about to be updated (its jobs stay).
    Run(&'a OldRun),
    /// A stored job, about to be updated; its stored tests are deleted with it only when the
    /// write brings new ones (`New::Job::kept_tests` says which).
    Job(&'a OldJob),
    /// A job's stored tests, about to be deleted and replaced (a JUnit report's upload).
    Tests { job_id: i64 },
}

/// What was just written.
#[derive(Clone, Copy)]
pub enum New<'a> {
    /// A run inserted (`old` None) or updated over `old`, at row `id`, in `project_id` and
    /// `workflow_id`; its jobs come as `New::Job` after it.
    Run {
        id: i64,
        project_id: i64,
        workflow_id: i64,
        run: &'a Run,
        old: Option<&'a OldRun>,
    },
    /// A job inserted or updated at row `id`. `kept_tests`: an update that brought no tests,
    /// so the job's stored tests stay and count at its new place.
    Job {
        id: i64,
        at: RunPlace<'a>,
        job: &'a Job,
        kept_tests: bool,
    },
    /// Test results inserted for a job of kind `kind`, whose bucket time (started, else
    /// created) is `job_time`.
    Tests {
        at: RunPlace<'a>,
        kind: Kind,
        job_time: i64,
        tests: &'a [TestCase],
    },
}

/// One rollup family's upkeep, in the four verbs above; its in-memory sums are `Self`.
pub trait Family {
    /// Takes out what `old` counts, before it is replaced.
    fn replacing(&mut self, conn: &Connection, old: Old) -> Result<()>;
    /// Adds what `new`, just written, counts.
    fn written(&mut self, conn: &Connection, new: New) -> Result<()>;
    /// Writes the sums held since the last flush, each row once, and forgets them.
    fn flush(&mut self, conn: &Connection) -> Result<()>;
}

/// Every family's sums for one transaction (kept in `store::Ids`).
#[derive(Default)]
pub struct Rollups {
    pub zadig: zadig::Pending,
    circleci: circleci::Pending,
    apigee: apigee::Pending,
    flaky: flaky::Pending,
    dora: dora::Pending,
}

impl Rollups {
    fn each(&mut self) -> [&mut dyn Family; 5] {
        [
            &mut self.zadig,
            &mut self.circleci,
            &mut self.apigee,
            &mut self.flaky,
            &mut self.dora,
        ]
    }

    pub fn replacing(&mut self, conn: &Connection, old: Old) -> Result<()> {
        self.each()
            .into_iter()
            .try_for_each(|f| f.replacing(conn, old))
    }

    pub fn written(&mut self, conn: &Connection, new: New) -> Result<()> {
        self.each()
            .into_iter()
            .try_for_each(|f| f.written(conn, new))
    }

    pub fn flush(&mut self, conn: &Connection) -> Result<()> {
        self.each().into_iter().try_for_each(|f| f.flush(conn))
    }
}

/// Recomputes a family's tables from the stored rows.
pub type Rebuild = fn(&Connection) -> Result<()>;

/// Each family's rebuild, by name: the upgrades call them, and the tests compare each with
/// its upkeep.
pub const REBUILDS: [(&str, Rebuild); 5] = [
    ("zadig", zadig::rebuild),
    ("circleci", circleci::rebuild),
    ("apigee", apigee::rebuild),
    ("flaky", flaky::rebuild),
    ("dora", dora::rebuild),
];

/// Whether any of `tests` failed or errored.
pub fn any_failing(tests: &[TestCase]) -> bool {
    tests.iter().any(|t| {
        matches!(
            t.result,
            crate::model::TestOutcome::Failure | crate::model::TestOutcome::Error
        )
    })
}
