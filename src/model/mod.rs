//! The domain: runs, jobs, test cases and rollbacks as pipestat stores them, after validation.
//!
//! Nothing here knows JSON, HTTP or SQL. `ingest` builds these values from payloads, `demo`
//! generates them, and `store` writes them.

pub mod times;

/// Status of a run or a job (docs/api.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Queued,
    Running,
    Waiting,
    Success,
    Failed,
    Error,
    Canceled,
    Timeout,
    Skipped,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Queued,
        Status::Running,
        Status::Waiting,
        Status::Success,
        Status::Failed,
        Status::Error,
        Status::Canceled,
        Status::Timeout,
        Status::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Waiting => "waiting",
            Status::Success => "success",
            Status::Failed => "failed",
            Status::Error => "error",
            Status::Canceled => "canceled",
            Status::Timeout => "timeout",
            Status::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Progress order for upserts: queued and waiting < running < any terminal status.
    pub fn rank(self) -> u8 {
        match self {
            Status::Queued | Status::Waiting => 0,
            Status::Running => 1,
            _ => 2,
        }
    }

    pub fn is_terminal(self) -> bool {
        self.rank() == 2
    }
}

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Build,
    Deploy,
    Test,
    Approval,
    Other,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Build,
        Kind::Deploy,
        Kind::Test,
        Kind::Approval,
        Kind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Build => "build",
            Kind::Deploy => "deploy",
            Kind::Test => "test",
            Kind::Approval => "approval",
            Kind::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Outcome of one test case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TestOutcome {
    Success,
    Failure,
    Error,
    Skipped,
}

impl TestOutcome {
    pub const ALL: [TestOutcome; 4] = [
        TestOutcome::Success,
        TestOutcome::Failure,
        TestOutcome::Error,
        TestOutcome::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TestOutcome::Success => "success",
            TestOutcome::Failure => "failure",
            TestOutcome::Error => "error",
            TestOutcome::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<TestOutcome> {
        TestOutcome::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One run, validated. Times are UTC milliseconds since the epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub id: String,
    /// Canonical slug, e.g. "gh/acme/api".
    pub project: String,
    pub project_key: Option<String>,
    pub default_branch: Option<String>,
    pub workflow: String,
    pub pipeline_id: Option<String>,
    pub number: Option<i64>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub actor: Option<String>,
    pub trigger: Option<String>,
    pub committed_at: Option<i64>,
    pub status: Status,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub credits_used: i64,
    pub detail_url: Option<String>,
    /// JSON text of the `parameters` array, as given.
    pub parameters: Option<String>,
    pub jobs: Vec<Job>,
}

/// One job of a run, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// The client's id; "<run id>/<index>" when none was given.
    pub id: String,
    pub name: String,
    pub stage: Option<String>,
    pub kind: Kind,
    pub status: Status,
    /// Defaults to the run's created_at when absent.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub credits_used: i64,
    pub detail_url: Option<String>,
    pub error_code: Option<String>,
    pub error_msg: Option<String>,
    pub env: Option<String>,
    pub cluster: Option<String>,
    pub service: Option<String>,
    pub service_type: Option<String>,
    pub production: bool,
    pub artifacts: Option<Vec<String>>,
    /// `None` keeps the tests already stored for this job; `Some` replaces them.
    pub tests: Option<Vec<TestCase>>,
}

/// One test case result.
#[derive(Clone, Debug, PartialEq)]
pub struct TestCase {
    pub name: String,
    pub classname: Option<String>,
    pub file: Option<String>,
    pub suite: Option<String>,
    pub result: TestOutcome,
    /// Seconds.
    pub duration: Option<f64>,
    pub message: Option<String>,
}

/// A Zadig-shaped rollback record.
#[derive(Clone, Debug, PartialEq)]
pub struct Rollback {
    pub id: Option<String>,
    /// A project key or a canonical slug.
    pub project: String,
    pub env: Option<String>,
    pub env_type: Option<String>,
    pub production: bool,
    pub operation_type: Option<String>,
    pub service: Option<String>,
    pub service_type: Option<String>,
    /// JSON text of objects kept verbatim.
    pub origin_service: Option<String>,
    pub update_service: Option<String>,
    pub create_by: Option<String>,
    pub created_at: i64,
}

/// One commit of a push: its sha and its commit time.
#[derive(Clone, Debug, PartialEq)]
pub struct Commit {
    pub sha: String,
    pub committed_at: i64,
}

/// A push of commits to a branch (the changes DORA's lead time follows). Stored by (project,
/// branch, last commit's sha): a redelivery replaces the earlier one.
#[derive(Clone, Debug, PartialEq)]
pub struct Push {
    /// Canonical slug.
    pub project: String,
    pub branch: String,
    pub pushed_at: i64,
    /// In push order, oldest first; never empty.
    pub commits: Vec<Commit>,
}

/// An incident: something broke in production. Stored by (project, id); a later delivery
/// replaces an earlier one.
#[derive(Clone, Debug, PartialEq)]
pub struct Incident {
    pub id: String,
    /// Canonical slug.
    pub project: String,
    pub title: String,
    pub service: Option<String>,
    pub env: Option<String>,
    pub started_at: i64,
    pub resolved_at: Option<i64>,
    pub severity: Option<String>,
    pub url: Option<String>,
    /// The run id of the deployment that caused it, when known.
    pub deployment: Option<String>,
    /// The sha of the commit that caused it, when known.
    pub commit: Option<String>,
}
