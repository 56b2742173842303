//! The webhooks surface through the real binary (docs/webhooks.md): every GitHub and GitLab
//! payload in tests/fixtures, used as it is, signed here, posted, and read back through
//! the native API.
//!
//! Expected values are read off the fixture files by hand; each assertion says which field
//! gives it. Where a case needs two deliveries about the same run and no pair of fixtures has
//! one, the test derives the second delivery from a fixture in code and says what it changed.

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::common::{fixture, Answer, Daemon};

pub const GH_SECRET: &str = "gh-test-secret";
pub const GL_TOKEN: &str = "gl-test-token";

pub fn read(rel: &str) -> Vec<u8> {
    let path = fixture(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn read_json(rel: &str) -> Value {
    serde_json::from_slice(&read(rel)).expect("fixture is JSON")
}

/// A daemon with both webhook secrets and a fixed clock.
pub fn daemon(now: &str) -> Daemon {
    Daemon::start(&[
        "--github-secret",
        GH_SECRET,
        "--gitlab-secret",
        GL_TOKEN,
        "--now",
        now,
    ])
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`, as GitHub signs.
fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

pub fn github(d: &Daemon, event: &str, body: &[u8]) -> Answer {
    let signature = sign(GH_SECRET, body);
    d.call(
        "POST",
        "/webhooks/github",
        &[
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", event),
            ("X-Hub-Signature-256", &signature),
        ],
        Some(body),
    )
}

fn github_fixture(d: &Daemon, event: &str, rel: &str) -> Answer {
    let a = github(d, event, &read(&format!("github/{event}/{rel}")));
    assert!(a.status < 300, "{event}/{rel}: {} {}", a.status, a.text);
    a
}

pub fn gitlab(d: &Daemon, event: &str, body: &[u8]) -> Answer {
    d.call(
        "POST",
        "/webhooks/gitlab",
        &[
            ("Content-Type", "application/json"),
            ("X-Gitlab-Event", event),
            ("X-Gitlab-Token", GL_TOKEN),
        ],
        Some(body),
    )
}

fn run(d: &Daemon, slug: &str, id: &str) -> Value {
    let a = d.get(&format!("/api/v1/runs/{slug}/{id}"));
    assert_eq!(a.status, 200, "{slug}/{id}: {}", a.text);
    a.body
}

/// (project, id) of every stored run, from the native list.
fn all_runs(d: &Daemon) -> Vec<(String, String)> {
    let a = d.get("/api/v1/runs?limit=1000");
    assert_eq!(a.status, 200, "{}", a.text);
    let mut runs: Vec<(String, String)> = a.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["project"].as_str().unwrap().to_owned(),
                r["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    runs.sort();
    runs
}

fn counts(a: &Answer) -> (Value, Value) {
    (a.body["created"].clone(), a.body["updated"].clone())
}

const OCTO: &str = "gh/octo-org/octo-repo";

#[test]
fn workflow_run_fixtures_converge_on_the_freshest_state() {
    let d = daemon("2020-10-20T00:00:00Z");
    // requested: conclusion null, status "queued".
    let a = github_fixture(&d, "workflow_run", "requested.payload.json");
    assert_eq!(counts(&a), (json!(1), json!(0)), "{}", a.text);
    assert_eq!(a.body["project"], OCTO);
    assert_eq!(a.body["run"], "289782451");
    let r = run(&d, OCTO, "289782451");
    assert_eq!(r["status"], "queued");
    // workflow_run.name is "", so the workflow object's name "test".
    assert_eq!(r["workflow"], "test");
    assert_eq!(r["number"], 163); // run_number
    assert_eq!(r["branch"], "master"); // head_branch
    assert_eq!(r["commit"], "3484a3fb816e0859fd6e1cea078d76385ff50625"); // head_sha
    assert_eq!(r["actor"], "Codertocat"); // triggering_actor.login
    assert_eq!(r["trigger"], "repository_dispatch"); // event
    assert_eq!(r["created_at"], "2020-10-05T16:33:24.000Z");
    assert_eq!(r["committed_at"], "2020-10-05T16:32:07.000Z"); // head_commit.timestamp
    assert_eq!(r["default_branch"], "master"); // repository.default_branch
                                               // Queued: not started, not stopped, though run_started_at is filled in.
    assert_eq!(r["started_at"], Value::Null);
    assert_eq!(r["stopped_at"], Value::Null);
    assert_eq!(
        r["detail_url"],
        "https://github.com/octo-org/octo-repo/actions/runs/289782451"
    );

    // requested.with-conclusion: conclusion action_required → error, terminal. Its updated_at
    // (16:33:24) is before run_started_at (16:33:49), so the stop is raised to the start.
    let a = github_fixture(&d, "workflow_run", "requested.with-conclusion.payload.json");
    assert_eq!(counts(&a), (json!(0), json!(1)), "{}", a.text);
    let r = run(&d, OCTO, "289782451");
    assert_eq!(r["status"], "error");
    assert_eq!(r["started_at"], "2020-10-05T16:33:49.000Z");
    assert_eq!(r["stopped_at"], "2020-10-05T16:33:49.000Z");

    // completed: conclusion success, stopped at updated_at 16:33:49: a tie with the stored
    // stop, so the later delivery wins.
    for f in [
        "completed.with-pull-requests.payload.json",
        "completed.payload.json",
    ] {
        let a = github_fixture(&d, "workflow_run", f);
        assert_eq!(counts(&a), (json!(0), json!(1)), "{f}: {}", a.text);
        assert_eq!(run(&d, OCTO, "289782451")["status"], "success");
    }
    // The requested delivery again, late: queued is behind a terminal state, so stale.
    let a = github_fixture(&d, "workflow_run", "requested.payload.json");
    assert_eq!(counts(&a), (json!(0), json!(0)), "{}", a.text);
    let r = run(&d, OCTO, "289782451");
    assert_eq!(r["status"], "success");
    assert_eq!(r["stopped_at"], "2020-10-05T16:33:49.000Z");
    assert_eq!(all_runs(&d), vec![(OCTO.into(), "289782451".into())]);
}

const HELLO: &str = "gh/Codertocat/Hello-World";

#[test]
fn workflow_job_fixtures_redelivered_and_reordered() {
    let d = daemon("2021-09-20T00:00:00Z");
    // Job 289782451 of run 2202229078 arrives completed (failure) first, before its run.
    let a = github_fixture(
        &d,
        "workflow_job",
        "completed.failure.with-organization.payload.json",
    );
    assert_eq!(counts(&a), (json!(1), json!(0)), "{}", a.text);
    let r = run(&d, HELLO, "2202229078");
    // The placeholder run: what the job knows, status queued until its workflow_run arrives.
    assert_eq!(r["status"], "queued");
    assert_eq!(r["workflow"], "CodeQL"); // workflow_job.workflow_name
    assert_eq!(r["branch"], "main"); // head_branch
    assert_eq!(r["commit"], "3484a3fb816e0859fd6e1cea078d76385ff50625");
    assert_eq!(r["created_at"], "2021-08-05T10:33:58.000Z"); // the job's created_at
    let job = &r["jobs"][0];
    assert_eq!(job["id"], "289782451");
    assert_eq!(job["name"], "linters");
    assert_eq!(job["kind"], "other");
    assert_eq!(job["status"], "failed"); // conclusion failure
    assert_eq!(job["created_at"], "2021-08-05T10:33:58.000Z");
    assert_eq!(job["started_at"], "2021-08-05T10:34:58.000Z");
    assert_eq!(job["stopped_at"], "2021-08-05T10:38:16.000Z"); // completed_at
    assert_eq!(job["error_code"], "failure");
    // The step whose conclusion is failure.
    assert_eq!(
        job["error_msg"],
        "step \"Run yarn run format-check\" failed"
    );
    assert_eq!(
        job["detail_url"],
        "https://github.com/octo-org/octo-repo/runs/1291536064"
    );

    // in_progress and queued deliveries of the same job id, late: stale, nothing changes.
    for f in ["in_progress.payload.json", "queued.payload.json"] {
        let a = github_fixture(&d, "workflow_job", f);
        assert_eq!(counts(&a), (json!(0), json!(0)), "{f}: {}", a.text);
        let job = &run(&d, HELLO, "2202229078")["jobs"][0];
        assert_eq!(job["status"], "failed", "{f}");
        assert_eq!(job["name"], "linters", "{f}");
    }
    // completed.success stops at the same completed_at: a tie, so the later delivery wins.
    github_fixture(
        &d,
        "workflow_job",
        "completed.success.with-organization.payload.json",
    );
    let r = run(&d, HELLO, "2202229078");
    assert_eq!(r["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(r["jobs"][0]["status"], "success");
    assert_eq!(r["jobs"][0]["error_code"], Value::Null);

    // Job 12877621891 of run 4747967848: waiting, then the same state with its deployment.
    let env_test = "gh/lineville/elastic-machines-testing";
    github_fixture(&d, "workflow_job", "waiting.payload.json");
    let r = run(&d, env_test, "4747967848");
    assert_eq!(r["workflow"], "Env Test");
    assert_eq!(r["default_branch"], "main");
    assert_eq!(r["jobs"][0]["status"], "waiting");
    assert_eq!(r["jobs"][0]["started_at"], Value::Null);
    // Named "test", no deployment: a test job.
    assert_eq!(r["jobs"][0]["kind"], "test");
    // action "queued" but status "waiting": equal rank, the later delivery wins, and its
    // deployment makes it a deploy job to environment "Test" (production_environment false).
    github_fixture(&d, "workflow_job", "queued.with-deployment.payload.json");
    let r = run(&d, env_test, "4747967848");
    assert_eq!(r["jobs"].as_array().unwrap().len(), 1);
    let job = &r["jobs"][0];
    assert_eq!(job["status"], "waiting");
    assert_eq!(job["kind"], "deploy");
    assert_eq!(job["env"], "Test");
    assert_eq!(job["production"], false);

    // in_progress with queued steps: a running job of run 5373506832.
    let schemas = "gh/wolfy1339/github-events-schemas";
    github_fixture(
        &d,
        "workflow_job",
        "in_progress.with-queued-steps.payload.json",
    );
    let r = run(&d, schemas, "5373506832");
    assert_eq!(r["workflow"], "Test");
    assert_eq!(r["branch"], "renovate/got-13.x");
    let job = &r["jobs"][0];
    assert_eq!(job["id"], "14541957942");
    assert_eq!(job["name"], "Do examples need to be regenerated?");
    assert_eq!(job["status"], "running");
    assert_eq!(job["created_at"], "2023-06-26T03:31:29.000Z");
    assert_eq!(job["started_at"], "2023-06-26T03:31:36.000Z");
    assert_eq!(job["stopped_at"], Value::Null);

    assert_eq!(
        all_runs(&d),
        vec![
            (HELLO.into(), "2202229078".into()),
            (env_test.into(), "4747967848".into()),
            (schemas.into(), "5373506832".into()),
        ]
    );
}

/// A workflow_run fixture re-addressed to run 2202229078 of Codertocat/Hello-World (the run
/// the workflow_job fixtures belong to), named like the jobs' workflow "CodeQL".
fn workflow_run_of_the_jobs(rel: &str) -> Vec<u8> {
    let mut v = read_json(&format!("github/workflow_run/{rel}"));
    v["workflow_run"]["id"] = json!(2202229078_u64);
    v["workflow_run"]["name"] = json!("CodeQL");
    v["repository"]["full_name"] = json!("Codertocat/Hello-World");
    serde_json::to_vec(&v).unwrap()
}

#[test]
fn a_job_before_its_run_leaves_one_run_that_the_run_fills_in() {
    let d = daemon("2021-09-20T00:00:00Z");
    github_fixture(
        &d,
        "workflow_job",
        "completed.failure.with-organization.payload.json",
    );
    // The run's own "requested" delivery: queued, like the placeholder, and later, so it
    // fills the run in; the job stays.
    let a = github(
        &d,
        "workflow_run",
        &workflow_run_of_the_jobs("requested.payload.json"),
    );
    assert_eq!(counts(&a), (json!(0), json!(1)), "{}", a.text);
    let r = run(&d, HELLO, "2202229078");
    assert_eq!(r["status"], "queued");
    assert_eq!(r["number"], 163);
    assert_eq!(r["actor"], "Codertocat");
    assert_eq!(r["trigger"], "repository_dispatch");
    assert_eq!(r["created_at"], "2020-10-05T16:33:24.000Z");
    assert_eq!(r["workflow"], "CodeQL");
    assert_eq!(r["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(r["jobs"][0]["status"], "failed");
    // Another job delivery now must not put the placeholder's blanks back over the run.
    github_fixture(&d, "workflow_job", "queued.payload.json");
    let r = run(&d, HELLO, "2202229078");
    assert_eq!(r["actor"], "Codertocat");
    assert_eq!(r["trigger"], "repository_dispatch");
    assert_eq!(r["number"], 163);
    assert_eq!(r["created_at"], "2020-10-05T16:33:24.000Z");

    let a = github(
        &d,
        "workflow_run",
        &workflow_run_of_the_jobs("completed.payload.json"),
    );
    assert_eq!(counts(&a), (json!(0), json!(1)), "{}", a.text);
    // A late job delivery only touches its job (and is stale there); a late run delivery
    // is stale too.
    github_fixture(&d, "workflow_job", "in_progress.payload.json");
    github(
        &d,
        "workflow_run",
        &workflow_run_of_the_jobs("requested.payload.json"),
    );
    let r = run(&d, HELLO, "2202229078");
    assert_eq!(r["status"], "success");
    assert_eq!(r["stopped_at"], "2020-10-05T16:33:49.000Z");
    assert_eq!(r["number"], 163);
    assert_eq!(r["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(r["jobs"][0]["status"], "failed");
    assert_eq!(r["jobs"][0]["name"], "linters");
    // A job delivered after its run merges into it without touching the run.
    github_fixture(
        &d,
        "workflow_job",
        "completed.success.with-organization.payload.json",
    );
    let r = run(&d, HELLO, "2202229078");
    assert_eq!(r["status"], "success");
    assert_eq!(r["jobs"][0]["status"], "success");
    assert_eq!(all_runs(&d), vec![(HELLO.into(), "2202229078".into())]);
}

/// Placeholder runs, job merges, stale deliveries and a run leaving its placeholder's workflow
/// keep the Zadig rollups equal to a rebuild from the stored rows.
#[test]
fn webhook_writes_keep_the_zadig_rollups_exact() {
    let d = daemon("2021-09-20T00:00:00Z");
    // A job without its workflow's name: its placeholder run has an unnamed workflow, which
    // the run's delivery then replaces with "CodeQL".
    let mut v = read_json("github/workflow_job/completed.failure.with-organization.payload.json");
    v["workflow_job"]["workflow_name"] = Value::Null;
    let a = github(&d, "workflow_job", &serde_json::to_vec(&v).unwrap());
    assert_eq!(a.status, 200, "{}", a.text);
    for (event, body) in [
        (
            "workflow_run",
            workflow_run_of_the_jobs("requested.payload.json"),
        ),
        (
            "workflow_job",
            read("github/workflow_job/queued.payload.json"),
        ),
        (
            "workflow_run",
            workflow_run_of_the_jobs("completed.payload.json"),
        ),
        (
            "workflow_job",
            read("github/workflow_job/in_progress.payload.json"),
        ),
        (
            "workflow_job",
            read("github/workflow_job/completed.success.with-organization.payload.json"),
        ),
        (
            "deployment_status",
            read("github/deployment_status/payload.json"),
        ),
        (
            "deployment_status",
            read("github/deployment_status/with-installation.payload.json"),
        ),
    ] {
        let a = github(&d, event, &body);
        assert_eq!(a.status, 200, "{event}: {}", a.text);
    }
    assert_eq!(run(&d, HELLO, "2202229078")["workflow"], "CodeQL");
    // GitLab: a job before its pipeline, the pipeline, and the job again.
    for (event, rel) in [
        ("Job Hook", "gitlab/job_hook.json"),
        ("Pipeline Hook", "gitlab/pipeline_hook.json"),
        ("Job Hook", "gitlab/job_hook.json"),
    ] {
        let a = gitlab(&d, event, &read(rel));
        assert_eq!(a.status, 200, "{event}: {}", a.text);
    }
    crate::zadig::assert_rollups_exact(&d);
}

#[test]
fn a_rerun_attempt_is_its_own_run() {
    let d = daemon("2020-10-20T00:00:00Z");
    github_fixture(&d, "workflow_run", "completed.payload.json");
    let mut v = read_json("github/workflow_run/completed.payload.json");
    v["workflow_run"]["run_attempt"] = json!(2);
    let a = github(&d, "workflow_run", &serde_json::to_vec(&v).unwrap());
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["run"], "289782451-2");
    let r = run(&d, OCTO, "289782451-2");
    // An attempt is dated by its start (run_started_at), not by the first attempt's creation.
    assert_eq!(r["created_at"], "2020-10-05T16:33:49.000Z");
    assert_eq!(
        r["detail_url"],
        "https://github.com/octo-org/octo-repo/actions/runs/289782451/attempts/2"
    );
    assert_eq!(all_runs(&d).len(), 2);
}

#[test]
fn deployment_status_fixtures_are_deploy_jobs() {
    let d = daemon("2022-01-10T00:00:00Z");
    // No workflow_run in the payload: a run of its own, "deployment-<deployment.id>".
    let a = github_fixture(&d, "deployment_status", "payload.json");
    assert_eq!(counts(&a), (json!(1), json!(0)), "{}", a.text);
    let r = run(&d, HELLO, "deployment-145988746");
    assert_eq!(r["workflow"], "deploy"); // deployment.task
    assert_eq!(r["status"], "success"); // deployment_status.state
    assert_eq!(r["branch"], "master"); // deployment.ref
    assert_eq!(r["commit"], "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"); // deployment.sha
    assert_eq!(r["actor"], "Codertocat"); // deployment.creator.login
    assert_eq!(r["created_at"], "2019-05-15T15:20:53.000Z"); // deployment.created_at
    assert_eq!(r["stopped_at"], "2019-05-15T15:20:55.000Z"); // deployment_status.created_at
    let job = &r["jobs"][0];
    assert_eq!(job["id"], "deployment-145988746");
    assert_eq!(job["name"], "deploy production"); // task and environment
    assert_eq!(job["kind"], "deploy");
    assert_eq!(job["status"], "success");
    assert_eq!(job["env"], "production");
    assert_eq!(job["production"], true); // the environment is named production
    assert_eq!(job["service"], "Hello-World"); // repository.name
    assert_eq!(job["started_at"], "2019-05-15T15:20:53.000Z");
    assert_eq!(job["stopped_at"], "2019-05-15T15:20:55.000Z");

    // The same deployment status with an installation: a redelivery, still one run, one job.
    let a = github_fixture(&d, "deployment_status", "with-installation.payload.json");
    assert_eq!(counts(&a), (json!(0), json!(1)), "{}", a.text);
    assert_eq!(
        run(&d, HELLO, "deployment-145988746")["jobs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // gh-pages carries its workflow_run (in_progress): the deploy job goes into that run.
    let a = github_fixture(&d, "deployment_status", "gh-pages.payload.json");
    assert_eq!(a.body["run"], "289782451", "{}", a.text);
    let r = run(&d, HELLO, "289782451");
    assert_eq!(r["workflow"], "pages build and deployment");
    assert_eq!(r["status"], "running");
    assert_eq!(r["number"], 1);
    assert_eq!(r["branch"], "gh-pages");
    assert_eq!(r["trigger"], "dynamic");
    assert_eq!(r["created_at"], "2022-01-03T01:27:48.000Z");
    assert_eq!(r["started_at"], "2022-01-03T01:27:48.000Z"); // run_started_at
    let job = &r["jobs"][0];
    assert_eq!(job["name"], "deploy github-pages");
    assert_eq!(job["status"], "running"); // state in_progress
    assert_eq!(job["env"], "github-pages");
    assert_eq!(job["production"], false); // production_environment false
    assert_eq!(job["started_at"], "2022-01-03T01:28:30.000Z"); // deployment.created_at
    assert_eq!(job["stopped_at"], Value::Null);
    assert_eq!(
        job["detail_url"],
        "https://github.com/CorsixTH/CorsixTH/runs/4687056418?check_suite_focus=true"
    ); // log_url
    assert_eq!(
        all_runs(&d),
        vec![
            (HELLO.into(), "289782451".into()),
            (HELLO.into(), "deployment-145988746".into()),
        ]
    );
}

#[test]
fn other_github_events_are_acknowledged_and_ignored() {
    let d = daemon("2022-01-10T00:00:00Z");
    for f in [
        "payload.json",
        "with-installation.payload.json",
        "gh-pages.payload.json",
    ] {
        let a = github(&d, "deployment", &read(&format!("github/deployment/{f}")));
        assert_eq!(a.status, 202, "{f}: {}", a.text);
        assert_eq!(a.body["ignored"], "deployment");
    }
    let a = github(&d, "push", b"{\"ref\":\"refs/heads/main\"}");
    assert_eq!(a.status, 202, "{}", a.text);
    let a = github(&d, "ping", b"{\"zen\":\"Keep it logically awesome.\"}");
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["pong"], true);
    // GitLab events other than pipelines and jobs.
    let a = gitlab(&d, "Push Hook", b"{\"object_kind\":\"push\"}");
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(a.body["ignored"], "Push Hook");
    assert!(all_runs(&d).is_empty());
}

const GITLAB: &str = "gl/gitlab-org/gitlab-test";

#[test]
fn gitlab_fixtures_map_onto_runs_and_jobs() {
    let d = daemon("2016-08-13T00:00:00Z");
    let pipeline = read("gitlab/pipeline_hook.json");
    let a = gitlab(&d, "Pipeline Hook", &pipeline);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(counts(&a), (json!(1), json!(0)));
    let r = run(&d, GITLAB, "31"); // project.path_with_namespace, object_attributes.id
    assert_eq!(r["workflow"], "pipeline"); // no pipeline name
    assert_eq!(r["number"], 31); // no iid, so the id
    assert_eq!(r["status"], "success");
    assert_eq!(r["branch"], "master"); // ref, tag false
    assert_eq!(r["commit"], "bcbb5ec396a2c0f828686f14fac9b80b780504f2");
    assert_eq!(r["actor"], "root"); // user.username
    assert_eq!(r["trigger"], "merge_request_event"); // source
    assert_eq!(r["default_branch"], "master"); // project.default_branch
                                               // commit.timestamp 2016-08-12T17:23:21+02:00.
    assert_eq!(r["committed_at"], "2016-08-12T15:23:21.000Z");
    // "2016-08-12 15:23:28 UTC" and "2016-08-12 15:26:29 UTC".
    assert_eq!(r["created_at"], "2016-08-12T15:23:28.000Z");
    assert_eq!(r["stopped_at"], "2016-08-12T15:26:29.000Z");
    // No pipeline start in the payload: the earliest build start (build-image, 15:24:56).
    assert_eq!(r["started_at"], "2016-08-12T15:24:56.000Z");
    assert_eq!(
        r["parameters"],
        json!([{"name": "NESTOR_PROD_ENVIRONMENT", "value": "us-west-1"}])
    );
    assert_eq!(
        r["detail_url"],
        "http://192.168.64.1:3005/gitlab-org/gitlab-test/-/pipelines/31"
    );
    // builds, in id order: (id, name, stage → kind, status, started, stopped).
    let jobs = r["jobs"].as_array().unwrap();
    let got: Vec<[Value; 6]> = jobs
        .iter()
        .map(|j| {
            [
                j["id"].clone(),
                j["name"].clone(),
                j["kind"].clone(),
                j["status"].clone(),
                j["started_at"].clone(),
                j["stopped_at"].clone(),
            ]
        })
        .collect();
    let n = Value::Null;
    let t = |s: &str| json!(format!("2016-08-12T{s}.000Z"));
    assert_eq!(
        got,
        vec![
            [
                json!("376"),
                json!("build-image"),
                json!("build"),
                json!("success"),
                t("15:24:56"),
                t("15:25:26")
            ],
            // Started, never finished: a start and no stop.
            [
                json!("377"),
                json!("test-image"),
                json!("test"),
                json!("success"),
                t("15:26:12"),
                n.clone()
            ],
            [
                json!("378"),
                json!("test-build"),
                json!("test"),
                json!("success"),
                t("15:26:12"),
                t("15:26:29")
            ],
            // "created" → queued.
            [
                json!("379"),
                json!("staging"),
                json!("deploy"),
                json!("queued"),
                n.clone(),
                n.clone()
            ],
            // A manual job GitLab skipped.
            [
                json!("380"),
                json!("production"),
                json!("deploy"),
                json!("skipped"),
                n.clone(),
                n.clone()
            ],
        ]
    );
    assert_eq!(jobs[0]["stage"], "build");
    assert_eq!(jobs[0]["created_at"], "2016-08-12T15:23:28.000Z");

    // Redelivered: still one run with five jobs.
    let a = gitlab(&d, "Pipeline Hook", &pipeline);
    assert_eq!(counts(&a), (json!(0), json!(1)), "{}", a.text);
    assert_eq!(run(&d, GITLAB, "31")["jobs"].as_array().unwrap().len(), 5);

    // An older state of the same pipeline, delivered late (derived: status running, no
    // finish): stale, nothing changes.
    let mut v: Value = serde_json::from_slice(&pipeline).unwrap();
    v["object_attributes"]["status"] = json!("running");
    v["object_attributes"]["finished_at"] = Value::Null;
    let a = gitlab(&d, "Pipeline Hook", &serde_json::to_vec(&v).unwrap());
    assert_eq!(counts(&a), (json!(0), json!(0)), "{}", a.text);
    assert_eq!(run(&d, GITLAB, "31")["status"], "success");

    // The other time form, "+0200": the same instant.
    let mut v: Value = serde_json::from_slice(&pipeline).unwrap();
    v["object_attributes"]["created_at"] = json!("2016-08-12 17:23:28 +0200");
    v["object_attributes"]["finished_at"] = json!("2016-08-12 17:26:29 +0200");
    let a = gitlab(&d, "Pipeline Hook", &serde_json::to_vec(&v).unwrap());
    assert_eq!(a.status, 200, "{}", a.text);
    let r = run(&d, GITLAB, "31");
    assert_eq!(r["created_at"], "2016-08-12T15:23:28.000Z");
    assert_eq!(r["stopped_at"], "2016-08-12T15:26:29.000Z");

    // The Job Hook: job 1977 of pipeline 2366, which pipestat has not seen: a placeholder.
    let job = read("gitlab/job_hook.json");
    let a = gitlab(&d, "Job Hook", &job);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(counts(&a), (json!(1), json!(0)));
    // The project from repository.homepage's path.
    let r = run(&d, GITLAB, "2366");
    assert_eq!(r["status"], "queued");
    assert_eq!(r["workflow"], "pipeline");
    assert_eq!(r["number"], 2366);
    assert_eq!(r["branch"], "gitlab-script-trigger"); // ref
    assert_eq!(r["commit"], "2293ada6b400935a1378653304eaf6221e0fdb8f"); // sha
    assert_eq!(r["actor"], "User"); // user.name (no username)
                                    // The payload has no time at all: dated when pipestat heard of it (--now).
    assert_eq!(r["created_at"], "2016-08-13T00:00:00.000Z");
    let j = &r["jobs"][0];
    assert_eq!(j["id"], "1977"); // build_id
    assert_eq!(j["name"], "test"); // build_name
    assert_eq!(j["stage"], "test"); // build_stage
    assert_eq!(j["kind"], "test");
    assert_eq!(j["status"], "queued"); // build_status created
    assert_eq!(j["started_at"], Value::Null);
    assert_eq!(j["error_code"], Value::Null); // failure_reason only for failed jobs
                                              // Redelivered: no second run, no second job.
    let a = gitlab(&d, "Job Hook", &job);
    assert_eq!(counts(&a), (json!(0), json!(0)), "{}", a.text);
    assert_eq!(run(&d, GITLAB, "2366")["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(
        all_runs(&d),
        vec![(GITLAB.into(), "2366".into()), (GITLAB.into(), "31".into())]
    );
}

#[test]
fn bad_signatures_and_tokens_store_nothing() {
    let d = daemon("2020-10-20T00:00:00Z");
    let body = read("github/workflow_run/completed.payload.json");
    let post = |headers: &[(&str, &str)], body: &[u8]| {
        let mut h = vec![
            ("Content-Type", "application/json"),
            ("X-GitHub-Event", "workflow_run"),
        ];
        h.extend_from_slice(headers);
        d.call("POST", "/webhooks/github", &h, Some(body))
    };
    let wrong = sign("another secret", &body);
    let good = sign(GH_SECRET, &body);
    let sha1 = good.replace("sha256=", "sha1=");
    let truncated = &body[..body.len() / 2];
    for (what, headers, body) in [
        ("no signature", vec![], &body[..]),
        (
            "wrong secret",
            vec![("X-Hub-Signature-256", wrong.as_str())],
            &body[..],
        ),
        (
            "not sha256",
            vec![("X-Hub-Signature-256", sha1.as_str())],
            &body[..],
        ),
        (
            "garbage",
            vec![("X-Hub-Signature-256", "sha256=zz")],
            &body[..],
        ),
        // The signature of the whole body on half of it.
        (
            "truncated",
            vec![("X-Hub-Signature-256", good.as_str())],
            truncated,
        ),
    ] {
        let a = post(&headers, body);
        assert_eq!(a.status, 401, "{what}: {}", a.text);
        assert_eq!(a.body["error"]["code"], "unauthorized", "{what}");
    }
    let pipeline = read("gitlab/pipeline_hook.json");
    for token in [None, Some("wrong"), Some("gl-test-toke"), Some("")] {
        let mut h = vec![
            ("Content-Type", "application/json"),
            ("X-Gitlab-Event", "Pipeline Hook"),
        ];
        if let Some(t) = token {
            h.push(("X-Gitlab-Token", t));
        }
        let a = d.call("POST", "/webhooks/gitlab", &h, Some(&pipeline));
        assert_eq!(a.status, 401, "{token:?}: {}", a.text);
    }
    assert!(all_runs(&d).is_empty());
}

#[test]
fn without_a_secret_the_webhook_is_refused_with_how_to_set_one() {
    let d = Daemon::start(&[]);
    let body = read("github/workflow_run/completed.payload.json");
    let a = github(&d, "workflow_run", &body);
    assert_eq!(a.status, 403, "{}", a.text);
    let msg = a.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("--github-secret"), "{msg}");
    assert!(msg.contains("PIPESTAT_GITHUB_SECRET"), "{msg}");
    let a = gitlab(&d, "Pipeline Hook", &read("gitlab/pipeline_hook.json"));
    assert_eq!(a.status, 403, "{}", a.text);
    let msg = a.body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("--gitlab-secret"), "{msg}");
    assert!(msg.contains("PIPESTAT_GITLAB_SECRET"), "{msg}");
    // An empty secret is no secret.
    let d2 = Daemon::start(&["--github-secret", ""]);
    let signature = sign("", &body);
    let a = d2.call(
        "POST",
        "/webhooks/github",
        &[
            ("X-GitHub-Event", "workflow_run"),
            ("X-Hub-Signature-256", &signature),
        ],
        Some(&body),
    );
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(all_runs(&d).is_empty());
    assert!(all_runs(&d2).is_empty());
}

#[test]
fn malformed_deliveries_are_400_and_store_nothing() {
    let d = daemon("2020-10-20T00:00:00Z");
    let body = read("github/workflow_run/completed.payload.json");
    // Truncated, but signed as it is: the signature holds, the JSON does not.
    let a = github(&d, "workflow_run", &body[..body.len() / 2]);
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("malformed JSON"), "{}", a.text);
    let a = github(&d, "workflow_run", b"[]");
    assert_eq!(a.status, 400, "{}", a.text);
    let a = github(&d, "workflow_run", br#"{"repository":{"full_name":"a/b"}}"#);
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("workflow_run"), "{}", a.text);
    // A status GitHub never sends, with no conclusion: named by its path.
    let mut v = read_json("github/workflow_run/requested.payload.json");
    v["workflow_run"]["status"] = json!("exploded");
    let a = github(&d, "workflow_run", &serde_json::to_vec(&v).unwrap());
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("workflow_run.status"), "{}", a.text);
    // A deployment state and a GitLab status neither system sends: named, and the words
    // accepted listed.
    let mut v = read_json("github/deployment_status/payload.json");
    v["deployment_status"]["state"] = json!("exploded");
    let a = github(&d, "deployment_status", &serde_json::to_vec(&v).unwrap());
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(
        a.text.contains("deployment_status.state")
            && a.text.contains("\\\"exploded\\\"")
            && a.text.contains("inactive"),
        "{}",
        a.text
    );
    // "inactive" only supersedes an older deployment: answered, nothing stored.
    let stored = all_runs(&d);
    v["deployment_status"]["state"] = json!("inactive");
    let a = github(&d, "deployment_status", &serde_json::to_vec(&v).unwrap());
    assert_eq!(a.status, 202, "{}", a.text);
    assert_eq!(a.body["ignored"], "deployment_status", "{}", a.text);
    assert_eq!(all_runs(&d), stored);
    let mut v = read_json("gitlab/job_hook.json");
    v["build_status"] = json!("exploded");
    let a = gitlab(&d, "Job Hook", &serde_json::to_vec(&v).unwrap());
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(
        a.text.contains("build_status") && a.text.contains("waiting_for_callback"),
        "{}",
        a.text
    );
    // A repository that is no owner/repo.
    let mut v = read_json("github/workflow_job/queued.payload.json");
    v["repository"]["full_name"] = json!("no-slash");
    let a = github(&d, "workflow_job", &serde_json::to_vec(&v).unwrap());
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("repository.full_name"), "{}", a.text);
    // A GitLab pipeline cut short, and one whose build has an unreadable time.
    let pipeline = read("gitlab/pipeline_hook.json");
    let a = gitlab(&d, "Pipeline Hook", &pipeline[..pipeline.len() - 10]);
    assert_eq!(a.status, 400, "{}", a.text);
    let mut v: Value = serde_json::from_slice(&pipeline).unwrap();
    v["builds"][1]["started_at"] = json!("12 August 2016");
    let a = gitlab(&d, "Pipeline Hook", &serde_json::to_vec(&v).unwrap());
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("builds[1].started_at"), "{}", a.text);
    // A pipeline that lists one build twice (a new run would store the job twice).
    let mut v: Value = serde_json::from_slice(&pipeline).unwrap();
    let first = v["builds"][0].clone();
    v["builds"].as_array_mut().unwrap().push(first);
    let a = gitlab(&d, "Pipeline Hook", &serde_json::to_vec(&v).unwrap());
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("builds"), "{}", a.text);
    // A content type GitHub can be told to use but pipestat does not read.
    let signature = sign(GH_SECRET, &body);
    let a = d.call(
        "POST",
        "/webhooks/github",
        &[
            ("Content-Type", "text/plain"),
            ("X-GitHub-Event", "workflow_run"),
            ("X-Hub-Signature-256", &signature),
        ],
        Some(&body),
    );
    assert_eq!(a.status, 415, "{}", a.text);
    assert!(all_runs(&d).is_empty());
}

#[test]
fn payload_members_have_the_native_limits() {
    let d = daemon("2020-10-20T00:00:00Z");
    let base = read_json("github/workflow_run/completed.payload.json");
    // (member, value, the words the 400 must hold): each refused, naming the member's path.
    let cases = [
        (
            "name",
            json!("w".repeat(1025)),
            "field \"workflow_run.name\": longer than 1024 bytes",
        ),
        (
            "html_url",
            json!(format!("https://x/{}", "u".repeat(8192))),
            "field \"workflow_run.html_url\": longer than 8192 bytes",
        ),
        (
            "run_number",
            json!("163"),
            "field \"workflow_run.run_number\": expected an integer",
        ),
        (
            "run_number",
            json!(-1),
            "field \"workflow_run.run_number\": expected an integer >= 0",
        ),
        ("id", json!(""), "field \"workflow_run.id\": expected an id"),
    ];
    for (member, value, words) in cases {
        let mut v = base.clone();
        v["workflow_run"][member] = value;
        let a = github(&d, "workflow_run", &serde_json::to_vec(&v).unwrap());
        assert_eq!(a.status, 400, "{member}: {}", a.text);
        let message = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(words), "{member}: {}", a.text);
    }
    assert!(all_runs(&d).is_empty());
    // At the limit, the run is stored.
    let mut v = base.clone();
    v["workflow_run"]["html_url"] = json!("u".repeat(8192));
    let a = github(&d, "workflow_run", &serde_json::to_vec(&v).unwrap());
    assert_eq!(a.status, 200, "{}", a.text);
    let r = run(&d, "gh/octo-org/octo-repo", "289782451");
    assert_eq!(r["detail_url"].as_str().map(str::len), Some(8192));
    // A pipeline variable's value is free text: up to 65536 bytes.
    let mut v = read_json("gitlab/pipeline_hook.json");
    v["object_attributes"]["variables"][0]["value"] = json!("v".repeat(65_536));
    let a = gitlab(&d, "Pipeline Hook", &serde_json::to_vec(&v).unwrap());
    assert_eq!(a.status, 200, "{}", a.text);
    let r = run(&d, GITLAB, "31");
    assert_eq!(
        r["parameters"][0]["value"].as_str().map(str::len),
        Some(65_536)
    );
    v["object_attributes"]["variables"][0]["value"] = json!("v".repeat(65_537));
    let a = gitlab(&d, "Pipeline Hook", &serde_json::to_vec(&v).unwrap());
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(
        a.body["error"]["message"],
        "field \"object_attributes.variables[0].value\": longer than 65536 bytes"
    );
}

#[test]
fn a_form_encoded_github_delivery_is_read_too() {
    let d = daemon("2020-10-20T00:00:00Z");
    let json = read("github/workflow_run/completed.payload.json");
    let encoded = percent_encoding::percent_encode(&json, percent_encoding::NON_ALPHANUMERIC);
    let form = format!("payload={encoded}");
    let signature = sign(GH_SECRET, form.as_bytes());
    let a = d.call(
        "POST",
        "/webhooks/github",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-GitHub-Event", "workflow_run"),
            ("X-Hub-Signature-256", &signature),
        ],
        Some(form.as_bytes()),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(run(&d, OCTO, "289782451")["status"], "success");
}

#[test]
fn webhook_paths_and_methods() {
    let d = daemon("2020-10-20T00:00:00Z");
    let a = d.get("/webhooks/github");
    assert_eq!(a.status, 405, "{}", a.text);
    assert_eq!(a.allow.as_deref(), Some("POST"));
    let a = d.post_json("/webhooks/bitbucket", "{}");
    assert_eq!(a.status, 404, "{}", a.text);
}

#[test]
fn webhook_runs_show_in_circleci_workflows() {
    let workflows = |d: &Daemon, slug: &str| -> Vec<(String, i64, i64)> {
        let a = d.get(&format!(
            "/api/v2/insights/{slug}/workflows?all-branches=true"
        ));
        assert_eq!(a.status, 200, "{}", a.text);
        let mut items: Vec<(String, i64, i64)> = a.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["name"].as_str().unwrap().to_owned(),
                    i["metrics"]["total_runs"].as_i64().unwrap(),
                    i["metrics"]["successful_runs"].as_i64().unwrap(),
                )
            })
            .collect();
        items.sort();
        items
    };
    // GitHub: the four workflow_run deliveries are one run (289782451) of workflow "test",
    // finally success; created 2020-10-05, inside the last 90 days of 2020-10-20.
    let d = daemon("2020-10-20T00:00:00Z");
    for f in [
        "requested.payload.json",
        "requested.with-conclusion.payload.json",
        "completed.with-pull-requests.payload.json",
        "completed.payload.json",
    ] {
        github_fixture(&d, "workflow_run", f);
    }
    assert_eq!(workflows(&d, OCTO), vec![("test".to_owned(), 1, 1)]);

    // GitHub deployments: one run "deployment-145988746" of workflow "deploy", success,
    // created 2019-05-15.
    let d = daemon("2019-05-20T00:00:00Z");
    github_fixture(&d, "deployment_status", "payload.json");
    github_fixture(&d, "deployment_status", "with-installation.payload.json");
    assert_eq!(workflows(&d, HELLO), vec![("deploy".to_owned(), 1, 1)]);

    // GitLab: pipeline 31 (success, created 2016-08-12) and the placeholder of pipeline 2366
    // (queued, dated --now), both of workflow "pipeline": 2 runs, 1 successful.
    let d = daemon("2016-08-13T00:00:00Z");
    gitlab(&d, "Pipeline Hook", &read("gitlab/pipeline_hook.json"));
    gitlab(&d, "Job Hook", &read("gitlab/job_hook.json"));
    assert_eq!(workflows(&d, GITLAB), vec![("pipeline".to_owned(), 2, 1)]);
}
