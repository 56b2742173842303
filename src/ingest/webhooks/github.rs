//! GitHub: `workflow_run` → a run, `workflow_job` → a job of its run, `deployment_status` → a
//! deploy job, `push` → a push of commits, `issues` → an incident while the issue carries the
//! incident label, `ping` → 200; any other event → 202. Mapping tables in docs/webhooks.md and
//! docs/dora.md.

use serde_json::Value;

use super::{
    branch_of_ref, is_incident_label, is_production, kind_of, pushed_commits, rfc3339, slug, span,
    Delivery, Payload,
};
use crate::error::Result;
use crate::ingest::dora::links;
use crate::ingest::fields::Obj;
use crate::model::{Incident, Job, Kind, Push, Run, Status};

/// What a verified delivery of `event` asks for; `payload` is read only for the events mapped.
/// An issue is an incident while it carries a label named `incident_label` (in any case).
pub fn parse(event: &str, payload: Payload, incident_label: &str) -> Result<Delivery> {
    match event {
        "ping" => return Ok(Delivery::Ping),
        "workflow_run" | "workflow_job" | "deployment_status" | "push" | "issues" => {}
        other => {
            return Ok(Delivery::Ignored {
                event: other.to_owned(),
                why: "pipestat maps the GitHub events workflow_run, workflow_job, \
                      deployment_status, push and issues",
            });
        }
    }
    let body = payload()?;
    let root = Obj::new(&body, "")?;
    match event {
        "push" => push(&root),
        "issues" => issues(&root, incident_label),
        "workflow_run" => {
            let repo = root.obj("repository")?;
            let run = run_of(&repo, &root.obj("workflow_run")?, root.opt_obj("workflow")?)?;
            Ok(Delivery::Run {
                event: "workflow_run",
                run,
            })
        }
        "workflow_job" => workflow_job(&root),
        _ => deployment_status(&root),
    }
}

/// `gh/<owner>/<repo>` from `repository.full_name`.
fn project_of(repo: &Obj) -> Result<String> {
    slug(
        "gh",
        &repo.req_name("full_name")?,
        &repo.field_path("full_name"),
    )
}

/// A re-run attempt is its own run: "<run id>-<attempt>" when the attempt is above 1.
fn run_id(id: &str, attempt: i64) -> String {
    if attempt > 1 {
        format!("{id}-{attempt}")
    } else {
        id.to_owned()
    }
}

/// GitHub's run and job statuses, read when there is no conclusion.
const RUN_STATUSES: &[(&str, Status)] = &[
    ("requested", Status::Queued),
    ("queued", Status::Queued),
    ("pending", Status::Queued),
    ("waiting", Status::Waiting),
    ("in_progress", Status::Running),
    // Completed without a conclusion: it ended, and nothing says it succeeded.
    ("completed", Status::Error),
];

/// `conclusion` when there is one, else `status` (docs/webhooks.md).
fn status_of(o: &Obj) -> Result<Status> {
    if let Some(c) = o.opt_name("conclusion")? {
        return Ok(match c.as_str() {
            "success" => Status::Success,
            "failure" => Status::Failed,
            "cancelled" => Status::Canceled,
            "timed_out" => Status::Timeout,
            "skipped" | "neutral" => Status::Skipped,
            // startup_failure, stale, action_required, and any conclusion GitHub adds later:
            // the run ended without succeeding.
            _ => Status::Error,
        });
    }
    Ok(o.req_word("status", RUN_STATUSES)?)
}

/// A run from a `workflow_run` object (the event's, or the snapshot a deployment carries).
fn run_of(repo: &Obj, wr: &Obj, workflow: Option<Obj>) -> Result<Run> {
    let project = project_of(repo)?;
    let attempt = wr.opt_int("run_attempt", 0)?.unwrap_or(1);
    let id = run_id(&wr.req_id("id")?, attempt);
    let status = status_of(wr)?;
    let created = wr
        .opt_time_by("created_at", rfc3339)?
        .ok_or_else(|| wr.err("created_at", "is required"))?;
    let run_started = wr.opt_time_by("run_started_at", rfc3339)?;
    // A re-run attempt happens when it starts, not when the first attempt was created.
    let created_at = if attempt > 1 {
        run_started.unwrap_or(created)
    } else {
        created
    };
    let (started_at, stopped_at) = span(
        status,
        created_at,
        run_started,
        wr.opt_time_by("updated_at", rfc3339)?,
    );
    // The workflow's name; runs of a nameless workflow fall back to the workflow object's
    // name, then to the workflow file's path.
    let workflow_name = match workflow {
        Some(w) => w.opt_name("name")?,
        None => None,
    };
    let workflow = wr
        .opt_name("name")?
        .or(workflow_name)
        .or(wr.opt_name("path")?)
        .unwrap_or_default();
    let committed_at = match wr.opt_obj("head_commit")? {
        Some(c) => c.opt_time_by("timestamp", rfc3339)?,
        None => None,
    };
    let actor = match wr.nested_name("triggering_actor", "login")? {
        Some(a) => Some(a),
        None => wr.nested_name("actor", "login")?,
    };
    let detail_url = wr.opt_url("html_url")?.map(|u| {
        if attempt > 1 {
            format!("{u}/attempts/{attempt}")
        } else {
            u
        }
    });
    Ok(Run {
        id,
        project,
        project_key: None,
        default_branch: repo.opt_name("default_branch")?,
        workflow,
        pipeline_id: None,
        number: wr.opt_int("run_number", 0)?,
        branch: wr.opt_name("head_branch")?,
        commit: wr.opt_name("head_sha")?,
        actor,
        trigger: wr.opt_name("event")?,
        committed_at,
        status,
        created_at,
        started_at,
        stopped_at,
        credits_used: 0,
        detail_url,
        parameters: None,
        jobs: Vec::new(),
    })
}

/// A job, merged into its run; the run is created as a queued placeholder from what the job
/// knows when its `workflow_run` has not arrived yet.
fn workflow_job(root: &Obj) -> Result<Delivery> {
    let repo = root.obj("repository")?;
    let wj = root.obj("workflow_job")?;
    let deployment = root.opt_obj("deployment")?;
    let project = project_of(&repo)?;
    let attempt = wj.opt_int("run_attempt", 0)?.unwrap_or(1);
    let run_ext = wj.req_id("run_id")?;
    let status = status_of(&wj)?;
    let created = match wj.opt_time_by("created_at", rfc3339)? {
        Some(t) => t,
        None => wj
            .opt_time_by("started_at", rfc3339)?
            .ok_or_else(|| wj.err("created_at", "is required"))?,
    };
    let (started_at, stopped_at) = span(
        status,
        created,
        wj.opt_time_by("started_at", rfc3339)?,
        wj.opt_time_by("completed_at", rfc3339)?,
    );
    let name = wj.req_name("name")?;
    let (kind, env, production) = match &deployment {
        Some(d) => {
            let env = d.opt_name("environment")?;
            let flagged = d.opt_bool("production_environment")?.unwrap_or(false);
            let production = is_production(env.as_deref(), flagged);
            (Kind::Deploy, env, production)
        }
        None => (kind_of(&[Some(&name)]), None, false),
    };
    let failed = !matches!(status, Status::Success | Status::Skipped) && status.is_terminal();
    let error_code = if failed {
        wj.opt_name("conclusion")?
    } else {
        None
    };
    let error_msg = if failed { failed_step(&wj)? } else { None };
    let job = Job {
        id: wj.req_id("id")?,
        name,
        stage: None,
        kind,
        status,
        created_at: created,
        started_at,
        stopped_at,
        credits_used: 0,
        detail_url: wj.opt_url("html_url")?,
        error_code,
        error_msg,
        env,
        cluster: None,
        service: None,
        service_type: None,
        production,
        artifacts: None,
        tests: None,
    };
    let detail_url = repo.opt_url("html_url")?.map(|u| {
        let base = format!("{u}/actions/runs/{run_ext}");
        if attempt > 1 {
            format!("{base}/attempts/{attempt}")
        } else {
            base
        }
    });
    let placeholder = Run {
        id: run_id(&run_ext, attempt),
        project,
        project_key: None,
        default_branch: repo.opt_name("default_branch")?,
        workflow: wj.opt_name("workflow_name")?.unwrap_or_default(),
        pipeline_id: None,
        number: None,
        branch: wj.opt_name("head_branch")?,
        commit: wj.opt_name("head_sha")?,
        actor: None,
        trigger: None,
        committed_at: None,
        status: Status::Queued,
        created_at: created,
        started_at: None,
        stopped_at: None,
        credits_used: 0,
        detail_url,
        parameters: None,
        jobs: vec![job],
    };
    Ok(Delivery::Jobs {
        event: "workflow_job",
        run: placeholder,
    })
}

/// `step "NAME" failed` for the first failed step of a job, if the payload lists one.
fn failed_step(wj: &Obj) -> Result<Option<String>> {
    for step in wj.objects("steps")? {
        if step.opt_name("conclusion")?.as_deref() == Some("failure") {
            if let Some(name) = step.opt_name("name")? {
                return Ok(Some(format!("step {name:?} failed")));
            }
        }
    }
    Ok(None)
}

/// GitHub's deployment states; none for `inactive`, which is not a deployment of its own.
const DEPLOYMENT_STATES: &[(&str, Option<Status>)] = &[
    ("success", Some(Status::Success)),
    ("failure", Some(Status::Failed)),
    ("error", Some(Status::Error)),
    ("in_progress", Some(Status::Running)),
    ("queued", Some(Status::Queued)),
    ("pending", Some(Status::Queued)),
    ("waiting", Some(Status::Waiting)),
    ("inactive", None),
];

/// A deploy job: inside the workflow run the payload names, or else in a run of its own
/// ("deployment-<id>", workflow named after the deployment's task).
fn deployment_status(root: &Obj) -> Result<Delivery> {
    let repo = root.obj("repository")?;
    let ds = root.obj("deployment_status")?;
    let dep = root.obj("deployment")?;
    let Some(status) = ds.req_word("state", DEPLOYMENT_STATES)? else {
        return Ok(Delivery::Ignored {
            event: "deployment_status".to_owned(),
            why: "state \"inactive\" only marks an older deployment as superseded",
        });
    };
    let dep_id = dep.req_id("id")?;
    let status_time = ds.opt_time_by("created_at", rfc3339)?;
    let created = match dep.opt_time_by("created_at", rfc3339)? {
        Some(t) => t,
        None => status_time.ok_or_else(|| dep.err("created_at", "is required"))?,
    };
    let (started_at, stopped_at) = span(status, created, Some(created), status_time);
    let env = match ds.opt_name("environment")? {
        Some(e) => Some(e),
        None => dep.opt_name("environment")?,
    };
    let task = dep.opt_name("task")?.unwrap_or_else(|| "deploy".to_owned());
    let name = match &env {
        Some(e) => format!("{task} {e}"),
        None => task.clone(),
    };
    let flagged = dep.opt_bool("production_environment")?.unwrap_or(false);
    let failed = matches!(status, Status::Failed | Status::Error);
    let detail_url = match ds.opt_url("log_url")? {
        Some(u) => Some(u),
        None => ds.opt_url("target_url")?,
    };
    let id = format!("deployment-{dep_id}");
    let job = Job {
        id: id.clone(),
        name,
        stage: None,
        kind: Kind::Deploy,
        status,
        created_at: created,
        started_at,
        stopped_at,
        credits_used: 0,
        detail_url: detail_url.clone(),
        error_code: if failed { ds.opt_name("state")? } else { None },
        error_msg: if failed {
            ds.opt_text("description")?
        } else {
            None
        },
        production: is_production(env.as_deref(), flagged),
        env,
        cluster: None,
        service: repo.opt_name("name")?,
        service_type: None,
        artifacts: None,
        tests: None,
    };
    if let Some(wr) = root.opt_obj("workflow_run")? {
        let mut run = run_of(&repo, &wr, root.opt_obj("workflow")?)?;
        run.jobs = vec![job];
        return Ok(Delivery::Jobs {
            event: "deployment_status",
            run,
        });
    }
    let run = Run {
        id,
        project: project_of(&repo)?,
        project_key: None,
        default_branch: repo.opt_name("default_branch")?,
        workflow: task,
        pipeline_id: None,
        number: None,
        branch: dep.opt_name("ref")?,
        commit: dep.opt_name("sha")?,
        actor: dep.nested_name("creator", "login")?,
        trigger: Some("deployment".to_owned()),
        committed_at: None,
        status,
        created_at: created,
        started_at,
        stopped_at,
        credits_used: 0,
        detail_url,
        parameters: None,
        jobs: vec![job],
    };
    Ok(Delivery::Run {
        event: "deployment_status",
        run,
    })
}

/// A push to a branch, with its commits (GitHub lists at most 20, oldest first). Tag pushes,
/// deleted branches and pushes without commits bring no change and are ignored. The push's
/// time is `repository.pushed_at`, else its head commit's time.
fn push(root: &Obj) -> Result<Delivery> {
    let ignored = |why| {
        Ok(Delivery::Ignored {
            event: "push".to_owned(),
            why,
        })
    };
    let git_ref = root.opt_name("ref")?.unwrap_or_default();
    let Some(branch) = branch_of_ref(&git_ref) else {
        return ignored("only pushes to branches (refs/heads/…) bring changes; tags are ignored");
    };
    if root.opt_bool("deleted")?.unwrap_or(false) {
        return ignored("a deleted branch brings no change");
    }
    let items = root.objects("commits")?;
    if items.is_empty() {
        return ignored("a push without commits brings no change");
    }
    let commits = pushed_commits(&items, rfc3339)?;
    let repo = root.obj("repository")?;
    let head_time = match root.opt_obj("head_commit")? {
        Some(h) => h.opt_time_by("timestamp", rfc3339)?,
        None => None,
    };
    let pushed_at = match repo.opt_time("pushed_at")? {
        Some(t) => t,
        None => {
            head_time.unwrap_or_else(|| commits.iter().map(|c| c.committed_at).max().unwrap_or(0))
        }
    };
    Ok(Delivery::Push {
        event: "push",
        push: Push {
            project: project_of(&repo)?,
            branch: branch.to_owned(),
            pushed_at,
            commits,
        },
    })
}

/// An issue event: the issue is an incident while it carries the incident label. It is
/// removed when deleted, transferred, or when that label is taken off; any other action on a
/// labelled issue makes or updates the incident (resolved at `closed_at` while closed).
fn issues(root: &Obj, incident_label: &str) -> Result<Delivery> {
    let action = root.req_name("action")?;
    let repo = root.obj("repository")?;
    let project = project_of(&repo)?;
    let issue = root.obj("issue")?;
    let id = format!("issue-{}", issue.req_id("number")?);
    let label_removed = action == "unlabeled"
        && match root.opt_obj("label")? {
            Some(l) => l
                .opt_name("name")?
                .is_some_and(|n| is_incident_label(&n, incident_label)),
            None => false,
        };
    if matches!(action.as_str(), "deleted" | "transferred") || label_removed {
        return Ok(Delivery::NotIncident {
            event: "issues",
            project,
            id,
        });
    }
    let mut labelled = false;
    for l in issue.objects("labels")? {
        labelled |= l
            .opt_name("name")?
            .is_some_and(|n| is_incident_label(&n, incident_label));
    }
    if !labelled {
        return Ok(Delivery::Ignored {
            event: "issues".to_owned(),
            why: "the issue carries no incident label (--incident-label)",
        });
    }
    let started_at = issue
        .opt_time_by("created_at", rfc3339)?
        .ok_or_else(|| issue.err("created_at", "is required"))?;
    let resolved_at = if issue.opt_name("state")?.as_deref() == Some("closed") {
        let closed = match issue.opt_time_by("closed_at", rfc3339)? {
            Some(t) => Some(t),
            None => issue.opt_time_by("updated_at", rfc3339)?,
        };
        closed.map(|t| t.max(started_at))
    } else {
        None
    };
    // The body is only searched for links, so its length is not limited here.
    let text = issue.get("body").and_then(Value::as_str).unwrap_or("");
    let links = links(text);
    Ok(Delivery::Incident {
        event: "issues",
        incident: Incident {
            id,
            project,
            title: issue.req_name("title")?,
            service: links.service,
            env: None,
            started_at,
            resolved_at,
            severity: None,
            url: issue.opt_url("html_url")?,
            deployment: links.deployment,
            commit: links.commit,
        },
    })
}
