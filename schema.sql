-- pipestat's schema, version 7 (`PRAGMA user_version`): what a new database gets, as is. An
-- older database is brought here when it is opened, by the store's upgrades list `UPGRADES`
-- (entry i takes version i + 1 to i + 2), applied in order in one transaction; a database of a
-- newer version is refused. A change here comes with a new entry appended to `UPGRADES`, and a
-- test checks that a version-1 database upgraded this way ends with exactly this schema.
--
-- Every time is INTEGER milliseconds since the Unix epoch, UTC. Every status is one of the fixed
-- words listed in docs/api.md, checked here so that no other word can ever be stored
-- (as chains of `=` tests, which SQLite evaluates faster than `IN (...)` lists on every insert).
-- Rows refer to each other by INTEGER rowids; the ids that clients send are kept as `ext_id`.
-- The tables are STRICT: a value of the wrong type is an error, never silently coerced.

-- A repository, known by its canonical slug.
CREATE TABLE projects (
    id             INTEGER PRIMARY KEY,         -- rowid
    slug           TEXT NOT NULL UNIQUE,        -- canonical "vcs/org/repo", vcs one of gh, bb, gl, circleci
    key            TEXT NOT NULL,               -- short name for the Zadig surface (default: the slug's last segment)
    default_branch TEXT NOT NULL DEFAULT 'main' -- the branch CircleCI-style routes use by default; latest given wins
) STRICT;
CREATE INDEX projects_by_key ON projects (key);

-- A workflow (pipeline) of a project: runs of it share a name and a build-number sequence.
CREATE TABLE workflows (
    id          INTEGER PRIMARY KEY,                     -- rowid
    project_id  INTEGER NOT NULL REFERENCES projects(id), -- owning project
    name        TEXT NOT NULL,                           -- workflow name as reported (may be empty)
    pipeline_id TEXT NOT NULL UNIQUE,                    -- id for the CodeArts surface (default: 32 hex chars of SHA-256)
    max_number  INTEGER NOT NULL DEFAULT 0,              -- highest build number stored, so the next default is max_number + 1
    UNIQUE (project_id, name)
) STRICT;

-- One execution of a workflow.
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,                      -- rowid
    project_id   INTEGER NOT NULL REFERENCES projects(id), -- owning project
    workflow_id  INTEGER NOT NULL REFERENCES workflows(id),-- the workflow this run executes
    ext_id       TEXT NOT NULL,                            -- the client's run id, unique within the project
    number       INTEGER NOT NULL,                         -- build number within the workflow
    branch       TEXT,                                     -- branch built, if known
    commit_sha   TEXT,                                     -- commit built, if known
    actor        TEXT,                                     -- who or what started the run
    trigger      TEXT,                                     -- why it started (push, schedule, ...)
    committed_at INTEGER,                                  -- commit time, for lead time for changes
    status       TEXT NOT NULL CHECK (status = 'queued' OR status = 'running' OR status = 'waiting' OR status = 'success' OR status = 'failed' OR status = 'error' OR status = 'canceled' OR status = 'timeout' OR status = 'skipped'), -- run status
    created_at   INTEGER NOT NULL,                         -- when the run was created (queued)
    started_at   INTEGER,                                  -- when it began executing
    stopped_at   INTEGER,                                  -- when it reached its final status
    credits_used INTEGER NOT NULL DEFAULT 0 CHECK (credits_used >= 0), -- cost units reported by the CI system
    detail_url   TEXT,                                     -- link to the run in the CI system
    parameters   TEXT,                                     -- JSON array of {"name","value"} as given, or NULL
    rec_from     INTEGER,                                  -- kept by pipestat (the store's CircleCI recovery upkeep): for a success right after a failure in its (project, branch, workflow) sequence, created_at of that streak's first failure; else NULL
    rec_ms       INTEGER,                                  -- kept with rec_from: the recovery's length, stopped_at − that failure's stopped_at (NULL when either is missing)
    UNIQUE (project_id, ext_id)
) STRICT;
-- One project's runs inside a created_at window (the Apigee surface with a project).
CREATE INDEX runs_by_project_time ON runs (project_id, created_at);
-- The native list pages all projects newest first.
CREATE INDEX runs_by_time ON runs (created_at);
-- CodeArts finds a pipeline's run by build number, or its latest (the CodeArts surface:
-- RUN_BY_BUILD_ID, LATEST_RUN).
CREATE INDEX runs_by_workflow_number ON runs (workflow_id, number, created_at);
-- CircleCI Insights' window queries read one branch of a project, per workflow, in a
-- created_at window: workflow metrics (WORKFLOW_METRICS), MTTR in (created_at, id) order (MTTR),
-- recent runs (RECENT_RUNS) and the job queries' run side, all from this index alone. Its
-- rollup reader reads the runs of a window's partial days from it, and the store's recovery
-- upkeep seeks a run's neighbours in its sequence in it.
CREATE INDEX runs_insights ON runs (project_id, branch, workflow_id, created_at, ext_id, status,
    started_at, stopped_at, credits_used, rec_from, rec_ms);
-- The flaky_results upkeep (COMMIT_RESULTS) and its REBUILD find the runs of one commit here.
CREATE INDEX runs_by_commit ON runs (project_id, commit_sha, created_at);

-- One job (step, task) of a run.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,                      -- rowid
    run_id       INTEGER NOT NULL REFERENCES runs(id),     -- the run it belongs to
    project_id   INTEGER NOT NULL REFERENCES projects(id), -- the run's project, repeated for one-project indexes
    ext_id       TEXT NOT NULL,                            -- the client's job id (default "<run id>/<index>")
    position     INTEGER NOT NULL,                         -- order of the job within its run
    name         TEXT NOT NULL,                            -- job name
    stage        TEXT,                                     -- stage the job belongs to (CodeArts groups by it)
    kind         TEXT NOT NULL CHECK (kind = 'build' OR kind = 'deploy' OR kind = 'test' OR kind = 'approval' OR kind = 'other'), -- what the job does
    status       TEXT NOT NULL CHECK (status = 'queued' OR status = 'running' OR status = 'waiting' OR status = 'success' OR status = 'failed' OR status = 'error' OR status = 'canceled' OR status = 'timeout' OR status = 'skipped'), -- job status
    created_at   INTEGER NOT NULL,                         -- when the job was created
    started_at   INTEGER,                                  -- when it began executing
    stopped_at   INTEGER,                                  -- when it reached its final status
    credits_used INTEGER NOT NULL DEFAULT 0 CHECK (credits_used >= 0), -- cost units
    detail_url   TEXT,                                     -- link to the job in the CI system
    error_code   TEXT,                                     -- machine-readable failure reason
    error_msg    TEXT,                                     -- human-readable failure reason
    env          TEXT,                                     -- deploy target environment
    cluster      TEXT,                                     -- deploy target cluster
    service      TEXT,                                     -- service deployed
    service_type TEXT,                                     -- kind of service deployed
    production   INTEGER NOT NULL DEFAULT 0 CHECK (production = 0 OR production = 1), -- 1 for a production deploy (a release)
    artifacts    TEXT,                                     -- JSON array of images or files built or deployed, or NULL
    day_at       INTEGER GENERATED ALWAYS AS (coalesce(started_at, created_at)) VIRTUAL, -- the time that places the job on a day
    UNIQUE (run_id, ext_id)
) STRICT;
-- No index on `day_at` by kind: the Zadig routes read jobs_by_project_kind_start and their
-- rollups, and the Apigee surface scans jobs; each would add up to one page per job kind to
-- every ingest commit.
-- Zadig's build, deploy, test and release series (the Zadig surface: JOBS_BY_DAY,
-- TEST_JOBS_BY_WEEK, and the job side of TEST_CASES and OVERVIEW): covering, so one project's
-- jobs of one kind in a window of days are counted from the index alone. The day is indexed as
-- the expression behind day_at, not as day_at: SQLite never covers a virtual column from an
-- index, but it does read an indexed expression (with the columns it uses) from one.
CREATE INDEX jobs_by_project_kind_start ON jobs (project_id, kind, coalesce(started_at, created_at), status, production, stopped_at, started_at, created_at);
-- CircleCI job metrics, job runs and the job time series (the window queries JOB_METRICS,
-- JOB_RUNS, JOB_SERIES) read the jobs of a workflow's runs from this index alone.
CREATE INDEX jobs_insights ON jobs (run_id, name, status, created_at, started_at, stopped_at,
    credits_used, kind);

-- Zadig's overview (OVERVIEW_FAST): a loose index scan over each project's few distinct
-- deploy clusters, services and envs, probing each for a deploy job in the window. Partial, so
-- only deploy jobs pay for them at ingest.
CREATE INDEX jobs_deploy_cluster ON jobs (project_id, cluster, coalesce(started_at, created_at)) WHERE kind = 'deploy';
CREATE INDEX jobs_deploy_service ON jobs (project_id, service, coalesce(started_at, created_at)) WHERE kind = 'deploy';
CREATE INDEX jobs_deploy_env ON jobs (project_id, env, coalesce(started_at, created_at)) WHERE kind = 'deploy';

-- One test case result, reported inline with a job or uploaded as a JUnit report.
CREATE TABLE test_results (
    id         INTEGER PRIMARY KEY,                      -- rowid
    job_id     INTEGER NOT NULL REFERENCES jobs(id),     -- the job that ran the test
    run_id     INTEGER NOT NULL REFERENCES runs(id),     -- the job's run, repeated for per-run reads
    project_id INTEGER NOT NULL REFERENCES projects(id), -- the run's project, repeated for one-project indexes
    suite      TEXT,                                     -- test suite name
    classname  TEXT,                                     -- class or module of the test
    name       TEXT NOT NULL,                            -- test case name
    file       TEXT,                                     -- source file, when reported
    result     TEXT NOT NULL CHECK (result = 'success' OR result = 'failure' OR result = 'error' OR result = 'skipped'), -- outcome
    duration   REAL CHECK (duration IS NULL OR duration >= 0), -- seconds
    message    TEXT                                      -- failure or error message, when reported
) STRICT;
-- A job's tests (read-back, test metrics, the test side of every statistic). No index by test
-- name: every statistic reaches tests through their jobs, and one touches a random index page
-- per test case at ingest. Widening this one to (job_id, name, classname, result) made the
-- ingest bench's bare loop measurably slower, so it stays narrow.
CREATE INDEX tests_by_job ON test_results (job_id);
-- Rebuilding flaky_results (below; the flaky upkeep's REBUILD, run by the upgrade to version 3)
-- starts from the failing results; partial, so only failures (a small share of the rows)
-- are indexed.
CREATE INDEX tests_failed ON test_results (project_id, run_id, job_id)
    WHERE result = 'failure' OR result = 'error';

-- CircleCI flaky tests (read by FLAKY_FLIPS and FLAKY_ROWS; kept by the store's flaky upkeep).
-- A group is one test (project, job name, classname, name) on one commit; this table holds
-- every result, but skipped ones, of each group that has a failing result, with what the
-- flaky-tests route needs
-- from its run and job, and the previous result of its group, so the flips of a window are
-- found without a window pass at read time. In (project, created_at) order, so a window is one
-- range of it.
CREATE TABLE flaky_results (
    project_id INTEGER NOT NULL,  -- the run's project
    at         INTEGER NOT NULL,  -- the run's created_at
    result_id  INTEGER NOT NULL,  -- the result (test_results.id)
    grp        INTEGER NOT NULL,  -- the group: the smallest result_id of its rows, one integer per (commit, job, classname, name) to partition by
    sha        TEXT NOT NULL,     -- the run's commit
    job        TEXT NOT NULL,     -- the job's name
    classname  TEXT,              -- the test's classname
    name       TEXT NOT NULL,     -- the test's name
    bad        INTEGER NOT NULL,  -- 1 when the result is a failure or an error, else 0
    prev_at    INTEGER,           -- the previous row of the group in (at, result_id) order: its at; NULL on the group's first row
    prev_bad   INTEGER,           -- and its bad: the result flipped when prev_bad <> bad
    run_id     INTEGER NOT NULL,  -- the run (runs.id)
    job_ms     INTEGER,           -- the job's duration, stopped_at − (started_at or created_at), never negative; NULL while not stopped
    file       TEXT,              -- the test's file, when reported
    suite      TEXT,              -- the test's suite, when reported
    PRIMARY KEY (project_id, at, result_id)
) STRICT, WITHOUT ROWID;
-- The upkeep recomputes a commit's rows: it finds them by commit.
CREATE INDEX flaky_results_by_commit ON flaky_results (project_id, sha);

-- Zadig rollups (read by the Zadig surface's *_FAST statements; kept by the store's Zadig
-- upkeep, rebuilt by ZADIG_REBUILD). They
-- answer "which X had a job in this window" without reading the window's jobs. A bucket is a
-- quarter hour: floor(coalesce(started_at, created_at) / 900000) of a job, the job's day time.
-- Windows whose UTC offset is a whole number of quarter hours (every real time zone) are whole
-- buckets; any other offset is answered from the jobs themselves. Every row counts the stored
-- rows behind it (`n`), and every insert, update and replacement of a job or its tests adds or
-- subtracts exactly those, so the rollups follow the current state of the store (never "it
-- once ran there"). A row whose count fell to 0 stays; readers require n > 0.

-- Jobs per workflow and bucket (the workflow is that of the job's run).
CREATE TABLE zadig_workflow_buckets (
    workflow_id INTEGER NOT NULL, -- workflows.id of the jobs' run
    bucket      INTEGER NOT NULL, -- quarter hour of the jobs' day time
    n           INTEGER NOT NULL, -- how many stored jobs of the workflow fall in the bucket
    PRIMARY KEY (workflow_id, bucket)
) STRICT, WITHOUT ROWID;

-- Finished jobs per project, kind, bucket and production flag: the build, deploy, release and
-- test series add these rows up instead of counting jobs.
CREATE TABLE zadig_job_buckets (
    project_id  INTEGER NOT NULL, -- projects.id of the jobs
    kind        TEXT NOT NULL,    -- jobs.kind
    bucket      INTEGER NOT NULL, -- quarter hour of the jobs' day time
    production  INTEGER NOT NULL, -- jobs.production
    finished    INTEGER NOT NULL, -- finished jobs (success, failed, error, canceled, timeout, skipped)
    success     INTEGER NOT NULL, -- of which success
    timeout     INTEGER NOT NULL, -- of which timeout
    failed      INTEGER NOT NULL, -- of which failed or error
    duration_ms INTEGER NOT NULL, -- sum of stopped_at - coalesce(started_at, created_at) over those with a stopped_at
    timed       INTEGER NOT NULL, -- how many of them have a stopped_at
    PRIMARY KEY (project_id, kind, bucket, production)
) STRICT, WITHOUT ROWID;

-- Every distinct artifact string any job listed, numbered.
CREATE TABLE zadig_artifacts (
    id   INTEGER PRIMARY KEY,  -- rowid
    name TEXT NOT NULL UNIQUE  -- the artifact, as listed in jobs.artifacts
) STRICT;

-- Jobs listing an artifact, per project and bucket.
CREATE TABLE zadig_artifact_buckets (
    project_id  INTEGER NOT NULL, -- projects.id of the jobs
    bucket      INTEGER NOT NULL, -- quarter hour of the jobs' day time
    artifact_id INTEGER NOT NULL, -- zadig_artifacts.id
    n           INTEGER NOT NULL, -- how many stored jobs of the project in the bucket list it
    PRIMARY KEY (project_id, bucket, artifact_id)
) STRICT, WITHOUT ROWID;

-- Every distinct test case (project, suite, classname, name) reported by a test job, numbered.
-- suite and classname may be NULL; writers look a case up with IS, so NULL matches NULL.
CREATE TABLE zadig_test_cases (
    id         INTEGER PRIMARY KEY, -- rowid
    project_id INTEGER NOT NULL,    -- projects.id
    suite      TEXT,                -- test_results.suite
    classname  TEXT,                -- test_results.classname
    name       TEXT NOT NULL        -- test_results.name
) STRICT;
CREATE INDEX zadig_test_cases_by_key ON zadig_test_cases (project_id, name, classname, suite);

-- Results of a test case in test jobs (kind = 'test'), per bucket.
CREATE TABLE zadig_case_buckets (
    case_id INTEGER NOT NULL, -- zadig_test_cases.id
    bucket  INTEGER NOT NULL, -- quarter hour of the test jobs' day time
    n       INTEGER NOT NULL, -- how many stored results of the case those jobs hold
    PRIMARY KEY (case_id, bucket)
) STRICT, WITHOUT ROWID;

-- CircleCI Insights rollup (read by its rollup reader; kept by the store's upkeep): the runs of
-- one branch of a project's workflow per UTC day (floor(created_at / 86400000)), added up.
-- Every write of a run subtracts what it stored before and adds what it stores now, so a row
-- always describes the stored runs; a row whose total fell to 0 stays. Runs without a branch
-- are in no row. Sums are REAL, as the window queries' total() is, so no input can overflow them.
CREATE TABLE insights_days (
    project_id INTEGER NOT NULL, -- projects.id
    branch     TEXT NOT NULL,    -- runs.branch
    workflow_id INTEGER NOT NULL, -- workflows.id
    day        INTEGER NOT NULL, -- UTC day of created_at, days since 1970-01-01
    total      INTEGER NOT NULL, -- runs
    ok         INTEGER NOT NULL, -- of which success
    bad        INTEGER NOT NULL, -- of which failed, error or timeout
    canceled   INTEGER NOT NULL, -- of which canceled
    open       INTEGER NOT NULL, -- of which queued, running or waiting
    credits    REAL NOT NULL,    -- sum of credits_used
    dur_n      INTEGER NOT NULL, -- runs with a duration (a stopped_at)
    dur_sum    REAL NOT NULL,    -- sum of their durations, ms
    dur_sumsq  REAL NOT NULL,    -- sum of their squares, ms²
    rec_n      INTEGER NOT NULL, -- recoveries (runs with rec_from)
    rec_timed  INTEGER NOT NULL, -- of which with a length (rec_ms)
    rec_sum    REAL NOT NULL,    -- sum of those lengths, ms
    durs       BLOB NOT NULL,    -- the durations, ms, ascending, in the format of insights_job_days' durs
    PRIMARY KEY (project_id, branch, workflow_id, day)
) STRICT, WITHOUT ROWID;
-- All branches at once (the rollup reader's REC_DAYS): the recoveries of a project's rows of
-- a window's days, from this index alone.
CREATE INDEX insights_days_by_day ON insights_days (project_id, day, rec_n, rec_timed, rec_sum);

-- The same for jobs (the jobs route), per job name: a job counts on the day of its run's
-- created_at, in its run's branch and workflow, as the window queries place it. The day
-- before the name, so that the rows one run adds sit side by side. `durs` keeps the row's
-- durations whole, so that the jobs route picks a name's minimum, maximum, median and p95 by
-- rank from the rows of the window's days: every duration of the row in milliseconds,
-- ascending, in the format of the Apigee rollups' `durs` below.
CREATE TABLE insights_job_days (
    project_id  INTEGER NOT NULL, -- projects.id
    branch      TEXT NOT NULL,    -- runs.branch of the jobs' runs
    workflow_id INTEGER NOT NULL, -- workflows.id of the jobs' runs
    day         INTEGER NOT NULL, -- UTC day of the runs' created_at
    name        TEXT NOT NULL,    -- jobs.name
    total       INTEGER NOT NULL, -- jobs
    ok          INTEGER NOT NULL, -- of which success
    bad         INTEGER NOT NULL, -- of which failed, error or timeout
    canceled    INTEGER NOT NULL, -- of which canceled
    open        INTEGER NOT NULL, -- of which queued, running or waiting
    credits     REAL NOT NULL,    -- sum of credits_used
    dur_n       INTEGER NOT NULL, -- jobs with a duration
    dur_sum     REAL NOT NULL,    -- sum of their durations, ms
    dur_sumsq   REAL NOT NULL,    -- sum of their squares, ms²
    durs        BLOB NOT NULL,    -- their durations, stopped_at − (started_at or created_at), never negative, ms, ascending
    PRIMARY KEY (project_id, branch, workflow_id, day, name)
) STRICT, WITHOUT ROWID;

-- The same two rollups over every branch (the rows of all branches of a (project, workflow,
-- day) and job name, added up; recoveries stay per branch, in insights_days), so that
-- `all-branches=true` reads one row per day. Kept by the same writes, in the same way.
CREATE TABLE insights_all_days (
    project_id  INTEGER NOT NULL, -- projects.id
    workflow_id INTEGER NOT NULL, -- workflows.id
    day         INTEGER NOT NULL, -- UTC day of created_at
    total       INTEGER NOT NULL, -- runs with a branch
    ok          INTEGER NOT NULL, -- of which success
    bad         INTEGER NOT NULL, -- of which failed, error or timeout
    canceled    INTEGER NOT NULL, -- of which canceled
    open        INTEGER NOT NULL, -- of which queued, running or waiting
    credits     REAL NOT NULL,    -- sum of credits_used
    dur_n       INTEGER NOT NULL, -- runs with a duration
    dur_sum     REAL NOT NULL,    -- sum of their durations, ms
    dur_sumsq   REAL NOT NULL,    -- sum of their squares, ms²
    durs        BLOB NOT NULL,    -- their durations, ms, ascending, as insights_job_days' durs
    PRIMARY KEY (project_id, workflow_id, day)
) STRICT, WITHOUT ROWID;
CREATE TABLE insights_all_job_days (
    project_id  INTEGER NOT NULL, -- projects.id
    workflow_id INTEGER NOT NULL, -- workflows.id of the jobs' runs (with a branch)
    day         INTEGER NOT NULL, -- UTC day of the runs' created_at
    name        TEXT NOT NULL,    -- jobs.name
    total       INTEGER NOT NULL, -- jobs
    ok          INTEGER NOT NULL, -- of which success
    bad         INTEGER NOT NULL, -- of which failed, error or timeout
    canceled    INTEGER NOT NULL, -- of which canceled
    open        INTEGER NOT NULL, -- of which queued, running or waiting
    credits     REAL NOT NULL,    -- sum of credits_used
    dur_n       INTEGER NOT NULL, -- jobs with a duration
    dur_sum     REAL NOT NULL,    -- sum of their durations, ms
    dur_sumsq   REAL NOT NULL,    -- sum of their squares, ms²
    durs        BLOB NOT NULL,    -- their durations, ms, ascending
    PRIMARY KEY (project_id, workflow_id, day, name)
) STRICT, WITHOUT ROWID;

-- Apigee rollups (read by the Apigee fast path; kept by the store's upkeep): the runs, and the
-- jobs, of one project and workflow (and job name) whose time falls in one span of time, an
-- hour or a day (UTC), added up, so that a statistics request whose dimensions, filter,
-- functions and time range these rows can answer exactly never reads the runs or jobs
-- themselves (docs/apigee.md, "The fast path"). Each run and job counts in the row of its hour
-- and in the row of its day: hour rows serve ranges and buckets on whole hours at any
-- whole-hour offset, day rows (24 times fewer) those on whole UTC days. The facts' time is a
-- run's created_at, a job's coalesce(started_at, created_at); a job counts in its run's
-- workflow. Every write of a run or job subtracts what it stored before and adds what it stores
-- now (a run that changes workflow moves its jobs), so a row always describes the stored rows;
-- a row whose n fell to 0 stays, and readers skip it. Durations are kept whole, so that
-- minimums, maximums and percentiles survive removals: `durs` holds every duration of the row
-- in milliseconds, ascending, as one byte w, the least duration (8 bytes, big-endian two's
-- complement), then each duration less the least in w bytes big-endian, w the fewest bytes that
-- hold the largest difference (so any one is read by its index); no durations, no bytes. Sums
-- are REAL like total(): exact for whole milliseconds below 2^53, and no input can overflow
-- them.
CREATE TABLE apigee_run_rollup (
    span        INTEGER NOT NULL, -- the row's length in hours: 1 (an hour) or 24 (a UTC day)
    at          INTEGER NOT NULL, -- its first hour, hours since 1970-01-01 UTC (a multiple of span)
    project_id  INTEGER NOT NULL, -- projects.id
    workflow_id INTEGER NOT NULL, -- workflows.id
    n           INTEGER NOT NULL, -- runs created in the span
    errors      INTEGER NOT NULL, -- of which failed, error or timeout (the metric is_error)
    successes   INTEGER NOT NULL, -- of which success (is_success)
    credits     REAL NOT NULL,    -- sum of credits_used
    dur_n       INTEGER NOT NULL, -- runs with a duration (a stopped_at)
    dur_sum     REAL NOT NULL,    -- sum of their durations, stopped_at − (started_at or created_at), ms
    queue_n     INTEGER NOT NULL, -- runs with a queue time (a started_at)
    queue_sum   REAL NOT NULL,    -- sum of their queue times, started_at − created_at, ms
    durs        BLOB NOT NULL,    -- the dur_n durations, ms, ascending, encoded as above
    PRIMARY KEY (span, at, project_id, workflow_id)
) STRICT, WITHOUT ROWID;

-- The same for jobs, per job name, in the span of the job's own time and its run's workflow.
CREATE TABLE apigee_job_rollup (
    span        INTEGER NOT NULL, -- 1 (an hour) or 24 (a UTC day)
    at          INTEGER NOT NULL, -- the span's first hour, hours since 1970-01-01 UTC
    project_id  INTEGER NOT NULL, -- jobs.project_id
    workflow_id INTEGER NOT NULL, -- workflows.id of the jobs' run
    name        TEXT NOT NULL,    -- jobs.name
    n           INTEGER NOT NULL, -- jobs whose coalesce(started_at, created_at) is in the span
    errors      INTEGER NOT NULL, -- of which failed, error or timeout
    successes   INTEGER NOT NULL, -- of which success
    credits     REAL NOT NULL,    -- sum of credits_used
    dur_n       INTEGER NOT NULL, -- jobs with a duration (a stopped_at)
    dur_sum     REAL NOT NULL,    -- sum of their durations, stopped_at − (started_at or created_at), ms
    queue_n     INTEGER NOT NULL, -- jobs with a queue time (a started_at)
    queue_sum   REAL NOT NULL,    -- sum of their queue times, started_at − created_at, ms
    durs        BLOB NOT NULL,    -- the dur_n durations, ms, ascending, encoded as above
    PRIMARY KEY (span, at, project_id, workflow_id, name)
) STRICT, WITHOUT ROWID;

-- Zadig-shaped rollback records.
CREATE TABLE rollbacks (
    id             INTEGER PRIMARY KEY,                      -- rowid
    ext_id         TEXT UNIQUE,                              -- the client's id, when given (redelivery replaces)
    project_id     INTEGER NOT NULL REFERENCES projects(id), -- project rolled back
    env            TEXT,                                     -- environment name
    env_type       TEXT,                                     -- environment type as Zadig names it
    production     INTEGER NOT NULL DEFAULT 0 CHECK (production = 0 OR production = 1), -- 1 for a production environment
    operation_type TEXT,                                     -- what was rolled back (Zadig's word)
    service        TEXT,                                     -- service name
    service_type   TEXT,                                     -- service type
    origin_service TEXT,                                     -- JSON object, kept verbatim
    update_service TEXT,                                     -- JSON object, kept verbatim
    create_by      TEXT,                                     -- JSON object, kept verbatim
    created_at     INTEGER NOT NULL                          -- when the rollback happened
) STRICT;
CREATE INDEX rollbacks_by_time ON rollbacks (created_at);
CREATE INDEX rollbacks_by_project_time ON rollbacks (project_id, created_at);

-- DORA deployments (read by the DORA surface; kept by the store's DORA upkeep, rebuilt by its
-- rebuild): every finished deploy job (status success, failed, error or timeout, with a
-- stopped_at) with what DORA needs of its run, in (project, production, time) order, so one
-- project's production deployments are one range of this table. A write of a deploy job, or an
-- update of a run, recomputes the rows of its run.
CREATE TABLE dora_deploys (
    project_id   INTEGER NOT NULL, -- jobs.project_id
    at           INTEGER NOT NULL, -- jobs.stopped_at: the deployment's time
    job_id       INTEGER NOT NULL, -- jobs.id
    run_id       INTEGER NOT NULL, -- jobs.run_id
    production   INTEGER NOT NULL, -- jobs.production
    env          TEXT,             -- jobs.env
    service      TEXT,             -- jobs.service
    status       TEXT NOT NULL,    -- jobs.status: success, failed, error or timeout
    run_ext      TEXT NOT NULL,    -- runs.ext_id of the job's run
    branch       TEXT,             -- runs.branch
    commit_sha   TEXT,             -- runs.commit_sha
    committed_at INTEGER,          -- runs.committed_at
    PRIMARY KEY (project_id, production, at, job_id)
) STRICT, WITHOUT ROWID;
-- The upkeep replaces a run's rows.
CREATE INDEX dora_deploys_by_run ON dora_deploys (run_id);

-- Pushes of commits to a branch (GitHub push, GitLab Push Hook, POST /api/v1/pushes): the
-- changes DORA's lead time follows (docs/dora.md). One row a push, by (project, branch, last
-- commit's sha); a redelivery replaces the row and its commits.
CREATE TABLE pushes (
    id         INTEGER PRIMARY KEY,                      -- rowid
    project_id INTEGER NOT NULL REFERENCES projects(id), -- project pushed to
    branch     TEXT NOT NULL,                            -- branch pushed to (refs/heads/ taken off)
    head_sha   TEXT NOT NULL,                            -- the push's last commit
    pushed_at  INTEGER NOT NULL,                         -- when the push happened (orders a branch's pushes)
    UNIQUE (project_id, branch, head_sha)
) STRICT;
-- A branch's pushes in order (the DORA surface reads a project's pushes by branch and time).
CREATE INDEX pushes_by_branch_time ON pushes (project_id, branch, pushed_at);

-- The commits of a push, in push order.
CREATE TABLE push_commits (
    push_id      INTEGER NOT NULL REFERENCES pushes(id), -- the push
    position     INTEGER NOT NULL,                       -- 0-based place in the push, oldest first
    sha          TEXT NOT NULL,                          -- the commit
    committed_at INTEGER NOT NULL,                       -- its commit time (the start of its lead time)
    PRIMARY KEY (push_id, position)
) STRICT, WITHOUT ROWID;

-- Incidents (GitHub issues and GitLab issues with the incident label or type, POST
-- /api/v1/incidents): the failures DORA's change failure rate and recovery time count.
CREATE TABLE incidents (
    id          INTEGER PRIMARY KEY,                      -- rowid
    project_id  INTEGER NOT NULL REFERENCES projects(id), -- project it happened in
    ext_id      TEXT NOT NULL,                            -- the client's id ("issue-<number>" from webhooks)
    title       TEXT NOT NULL,                            -- what happened
    service     TEXT,                                     -- service affected, when known
    env         TEXT,                                     -- environment affected, when known
    started_at  INTEGER NOT NULL,                         -- when it began
    resolved_at INTEGER CHECK (resolved_at IS NULL OR resolved_at >= started_at), -- when it was resolved; NULL while open
    severity    TEXT,                                     -- severity as reported
    url         TEXT,                                     -- link to the incident
    deployment  TEXT,                                     -- run id (runs.ext_id) of the deployment that caused it, when known
    commit_sha  TEXT,                                     -- sha of the commit that caused it, when known
    UNIQUE (project_id, ext_id)
) STRICT;
-- A project's incidents in time order (the DORA surface, the incident list).
CREATE INDEX incidents_by_project_time ON incidents (project_id, started_at);

-- API tokens. Only a SHA-256 of the secret is stored; the secret is shown once at creation.
CREATE TABLE tokens (
    id         INTEGER PRIMARY KEY,    -- rowid
    name       TEXT NOT NULL UNIQUE,   -- operator-chosen name, used to revoke
    hash       TEXT NOT NULL UNIQUE,   -- lowercase hex SHA-256 of the secret
    scopes     TEXT NOT NULL,          -- comma list of read, ingest, admin
    created_at INTEGER NOT NULL        -- when the token was created
) STRICT;
