//! GitLab: `Pipeline Hook` → a run with its `builds` as jobs, `Job Hook` → one job of its
//! pipeline's run; any other event → 202. Mapping tables in docs/webhooks.md.

use serde_json::{json, Value};
use time::macros::format_description;
use time::{PrimitiveDateTime, UtcOffset};

use super::{
    branch_of_ref, is_incident_label, is_production, kind_of, pushed_commits, slug, span, Delivery,
    Payload,
};
use crate::error::{Error, Result};
use crate::ingest::dora::links;
use crate::ingest::fields::{Obj, MAX_TEXT};
use crate::model::times;
use crate::model::{Incident, Job, Kind, Push, Run, Status};

/// The workflow name of a pipeline that has none: GitLab pipelines are usually unnamed.
const DEFAULT_WORKFLOW: &str = "pipeline";

/// What a verified delivery of `event` asks for; `payload` is read only for the events mapped.
/// A job without any time is dated `now`, and so is a push (GitLab's push payload has no time of
/// its own). An issue is an incident when its type is Incident or it carries a label named
/// `incident_label` (in any case).
pub fn parse(event: &str, payload: Payload, now: i64, incident_label: &str) -> Result<Delivery> {
    let kind = match event {
        "Pipeline Hook" => "pipeline",
        "Job Hook" | "Build Hook" => "build",
        "Push Hook" => "push",
        "Issue Hook" | "Confidential Issue Hook" => "issue",
        // A system hook says what it carries in `object_kind`.
        "System Hook" => "",
        other => {
            return Ok(Delivery::Ignored {
                event: other.to_owned(),
                why: "pipestat maps the GitLab events Pipeline Hook, Job Hook, Push Hook and \
                      Issue Hook",
            });
        }
    };
    let body = payload()?;
    let root = Obj::new(&body, "")?;
    let kind = if kind.is_empty() {
        match root.opt_name("object_kind")?.as_deref() {
            Some("pipeline") => "pipeline",
            Some("build") => "build",
            _ => {
                return Ok(Delivery::Ignored {
                    event: event.to_owned(),
                    why: "pipestat maps system hooks whose object_kind is pipeline or build",
                })
            }
        }
    } else {
        kind
    };
    match kind {
        "pipeline" => Ok(Delivery::Run {
            event: "Pipeline Hook",
            run: pipeline(&root)?,
        }),
        "push" => push(&root, now),
        "issue" => issue(&root, incident_label),
        _ => Ok(Delivery::Jobs {
            event: "Job Hook",
            run: job_hook(&root, now)?,
        }),
    }
}

/// GitLab's times: `2016-08-12 15:23:28 UTC`, `2016-08-12 15:23:28 +0200` (fractions of a
/// second allowed), or RFC 3339.
pub(super) fn gitlab_time(s: &str) -> Option<i64> {
    if let Some(ms) = times::parse_rfc3339(s) {
        return Some(ms);
    }
    let (datetime, zone) = s.trim().rsplit_once(' ')?;
    let offset_minutes = match zone {
        "UTC" | "Z" => 0,
        z => parse_offset(z)?,
    };
    let format = format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    let local = PrimitiveDateTime::parse(datetime, format).ok()?;
    let offset = UtcOffset::from_whole_seconds(offset_minutes * 60).ok()?;
    let t = local.assume_offset(offset);
    Some(times::from_unix_seconds(t.unix_timestamp())? + i64::from(t.millisecond()))
}

/// `+0200`, `-05:30` → minutes east of UTC.
fn parse_offset(z: &str) -> Option<i32> {
    let (sign, rest) = match z.as_bytes().first()? {
        b'+' => (1, &z[1..]),
        b'-' => (-1, &z[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i32, i32) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
}

/// GitLab's pipeline and job statuses.
const STATUSES: &[(&str, Status)] = &[
    ("created", Status::Queued),
    ("waiting_for_resource", Status::Queued),
    ("preparing", Status::Queued),
    ("pending", Status::Queued),
    ("scheduled", Status::Queued),
    // A manual job waits for someone to start it.
    ("manual", Status::Waiting),
    ("waiting_for_callback", Status::Waiting),
    ("running", Status::Running),
    ("canceling", Status::Running),
    ("success", Status::Success),
    ("failed", Status::Failed),
    ("canceled", Status::Canceled),
    ("cancelled", Status::Canceled),
    ("skipped", Status::Skipped),
];

/// The user who started it: `username`, else `name`.
fn actor(root: &Obj) -> Result<Option<String>> {
    Ok(match root.nested_name("user", "username")? {
        Some(u) => Some(u),
        None => root.nested_name("user", "name")?,
    })
}

/// A job's deploy environment (`environment.name`) and whether it is production
/// (`environment.deployment_tier` = production, or a production-like name).
fn environment(o: &Obj) -> Result<(Option<String>, bool)> {
    match o.opt_obj("environment")? {
        Some(e) => {
            let name = e.opt_name("name")?;
            let tier = e.opt_name("deployment_tier")?;
            let production = is_production(name.as_deref(), tier.as_deref() == Some("production"));
            Ok((name, production))
        }
        None => Ok((None, false)),
    }
}

fn pipeline(root: &Obj) -> Result<Run> {
    let attrs = root.obj("object_attributes")?;
    let project = root.obj("project")?;
    let slug = slug(
        "gl",
        &project.req_name("path_with_namespace")?,
        "project.path_with_namespace",
    )?;
    let id = attrs.req_id("id")?;
    let status = attrs.req_word("status", STATUSES)?;
    let created_at = attrs
        .opt_time_by("created_at", gitlab_time)?
        .ok_or_else(|| attrs.err("created_at", "is required"))?;
    let web_url = project.opt_url("web_url")?;
    let mut jobs = root
        .objects("builds")?
        .iter()
        .map(|b| job_of(b, &BUILD, created_at, web_url.as_deref()))
        .collect::<Result<Vec<Job>>>()?;
    // GitLab lists builds in no useful order; ids follow creation.
    jobs.sort_by_key(|j| (j.id.parse::<u64>().unwrap_or(u64::MAX), j.id.clone()));
    if let Some(pair) = jobs.windows(2).find(|pair| pair[0].id == pair[1].id) {
        return Err(Error::bad(format!(
            "field \"builds\": the id {:?} appears more than once",
            pair[0].id
        )));
    }
    let started = match attrs.opt_time_by("started_at", gitlab_time)? {
        Some(t) => Some(t),
        None => jobs.iter().filter_map(|j| j.started_at).min(),
    };
    let finished = attrs.opt_time_by("finished_at", gitlab_time)?;
    let (started_at, stopped_at) = span(status, created_at, started, finished);
    let tag = attrs.opt_bool("tag")?.unwrap_or(false);
    let committed_at = match root.opt_obj("commit")? {
        Some(c) => c.opt_time_by("timestamp", gitlab_time)?,
        None => None,
    };
    let mut parameters = Vec::new();
    for v in attrs.objects("variables")? {
        let name = v.req_name("key")?;
        let value = v.opt_str("value", MAX_TEXT)?;
        parameters.push(json!({"name": name, "value": value}));
    }
    let detail_url = match attrs.opt_url("url")? {
        Some(u) => Some(u),
        None => web_url.as_ref().map(|w| format!("{w}/-/pipelines/{id}")),
    };
    Ok(Run {
        number: match attrs.opt_int("iid", 0)? {
            Some(n) => Some(n),
            None => id.parse().ok(),
        },
        project: slug,
        project_key: None,
        default_branch: project.opt_name("default_branch")?,
        workflow: attrs
            .opt_name("name")?
            .unwrap_or_else(|| DEFAULT_WORKFLOW.to_owned()),
        pipeline_id: None,
        branch: if tag { None } else { attrs.opt_name("ref")? },
        commit: attrs.opt_name("sha")?,
        actor: actor(root)?,
        trigger: attrs.opt_name("source")?,
        committed_at,
        status,
        created_at,
        started_at,
        stopped_at,
        credits_used: 0,
        detail_url,
        parameters: (!parameters.is_empty()).then(|| Value::Array(parameters).to_string()),
        jobs,
        id,
    })
}

/// The members a job is read from: an entry of a pipeline's `builds`, or a Job Hook.
struct JobMembers {
    id: &'static str,
    name: &'static str,
    stage: &'static str,
    status: &'static str,
    created_at: &'static str,
    started_at: &'static str,
    finished_at: &'static str,
    failure_reason: &'static str,
}

const BUILD: JobMembers = JobMembers {
    id: "id",
    name: "name",
    stage: "stage",
    status: "status",
    created_at: "created_at",
    started_at: "started_at",
    finished_at: "finished_at",
    failure_reason: "failure_reason",
};

const JOB_HOOK: JobMembers = JobMembers {
    id: "build_id",
    name: "build_name",
    stage: "build_stage",
    status: "build_status",
    created_at: "build_created_at",
    started_at: "build_started_at",
    finished_at: "build_finished_at",
    failure_reason: "build_failure_reason",
};

/// A job read from `o` under the names `m`. It was created at its creation time, else its
/// start, else its finish, else `undated`. `web_url` is the project's page.
fn job_of(o: &Obj, m: &JobMembers, undated: i64, web_url: Option<&str>) -> Result<Job> {
    let id = o.req_id(m.id)?;
    let name = o.req_name(m.name)?;
    let stage = o.opt_name(m.stage)?;
    let status = o.req_word(m.status, STATUSES)?;
    let created = o.opt_time_by(m.created_at, gitlab_time)?;
    let started = o.opt_time_by(m.started_at, gitlab_time)?;
    let finished = o.opt_time_by(m.finished_at, gitlab_time)?;
    let created_at = created.or(started).or(finished).unwrap_or(undated);
    let (started_at, stopped_at) = span(status, created_at, started, finished);
    let (env, production) = environment(o)?;
    let kind = if env.is_some() {
        Kind::Deploy
    } else {
        kind_of(&[stage.as_deref(), Some(&name)])
    };
    Ok(Job {
        detail_url: web_url.map(|w| format!("{w}/-/jobs/{id}")),
        error_code: if status == Status::Failed {
            o.opt_name(m.failure_reason)?
        } else {
            None
        },
        id,
        name,
        stage,
        kind,
        status,
        created_at,
        started_at,
        stopped_at,
        credits_used: 0,
        error_msg: None,
        env,
        cluster: None,
        service: None,
        service_type: None,
        production,
        artifacts: None,
        tests: None,
    })
}

/// The project path of a Job Hook: `project.path_with_namespace` where GitLab sends it, else
/// the path of `repository.homepage`, else `project_name` when it is a path.
fn job_hook_project(root: &Obj) -> Result<(String, Option<String>)> {
    let project = root.opt_obj("project")?;
    if let Some(p) = &project {
        if let Some(path) = p.opt_name("path_with_namespace")? {
            let s = slug("gl", &path, "project.path_with_namespace")?;
            return Ok((s, p.opt_name("default_branch")?));
        }
    }
    if let Some(home) = root.nested_name("repository", "homepage")? {
        let path = home
            .split_once("://")
            .map_or(home.as_str(), |(_, rest)| rest)
            .split_once('/')
            .map(|(_, path)| path.trim_end_matches('/'))
            .unwrap_or("");
        if !path.is_empty() {
            return Ok((slug("gl", path, "repository.homepage")?, None));
        }
    }
    let name = root.req_name("project_name")?;
    Ok((slug("gl", &name, "project_name")?, None))
}

/// A Job Hook: the job, inside a placeholder run of its pipeline for when the Pipeline Hook
/// has not arrived yet. A job hook without any time is dated `now`, when pipestat heard of it.
fn job_hook(root: &Obj, now: i64) -> Result<Run> {
    let (project, default_branch) = job_hook_project(root)?;
    let pipeline_id = root.req_id("pipeline_id")?;
    let home = root.nested_name("repository", "homepage")?;
    let job = job_of(root, &JOB_HOOK, now, home.as_deref())?;
    let tag = root.opt_bool("tag")?.unwrap_or(false);
    Ok(Run {
        number: pipeline_id.parse().ok(),
        detail_url: home.map(|h| format!("{h}/-/pipelines/{pipeline_id}")),
        id: pipeline_id,
        project,
        project_key: None,
        default_branch,
        workflow: DEFAULT_WORKFLOW.to_owned(),
        pipeline_id: None,
        branch: if tag { None } else { root.opt_name("ref")? },
        commit: root.opt_name("sha")?,
        actor: actor(root)?,
        trigger: None,
        committed_at: None,
        status: Status::Queued,
        created_at: job.created_at,
        started_at: None,
        stopped_at: None,
        credits_used: 0,
        parameters: None,
        jobs: vec![job],
    })
}

/// A Push Hook: a push to a branch with its commits (GitLab lists at most 20). Tag pushes,
/// deleted branches and pushes without commits bring no change and are ignored. GitLab sends
/// no time for the push itself: it is dated `now`, when pipestat heard of it.
fn push(root: &Obj, now: i64) -> Result<Delivery> {
    let ignored = |why| {
        Ok(Delivery::Ignored {
            event: "Push Hook".to_owned(),
            why,
        })
    };
    let git_ref = root.opt_name("ref")?.unwrap_or_default();
    let Some(branch) = branch_of_ref(&git_ref) else {
        return ignored("only pushes to branches (refs/heads/…) bring changes; tags are ignored");
    };
    let items = root.objects("commits")?;
    if items.is_empty() {
        return ignored("a push without commits brings no change");
    }
    let commits = pushed_commits(&items, gitlab_time)?;
    let project = root.obj("project")?;
    Ok(Delivery::Push {
        event: "Push Hook",
        push: Push {
            project: slug(
                "gl",
                &project.req_name("path_with_namespace")?,
                "project.path_with_namespace",
            )?,
            branch: branch.to_owned(),
            pushed_at: now,
            commits,
        },
    })
}

/// Whether any label object of `labels` (GitLab's `{"title": …}`) names incidents.
fn has_label(labels: &[Obj], incident_label: &str) -> Result<bool> {
    for l in labels {
        if l.opt_name("title")?
            .is_some_and(|t| is_incident_label(&t, incident_label))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// An Issue Hook (issues and work items): an incident when its type is Incident or it carries
/// the incident label. One that loses the label in this update is removed; any other issue is
/// ignored. Resolved at `closed_at` while closed.
fn issue(root: &Obj, incident_label: &str) -> Result<Delivery> {
    let attrs = root.obj("object_attributes")?;
    let project = root.obj("project")?;
    let project = slug(
        "gl",
        &project.req_name("path_with_namespace")?,
        "project.path_with_namespace",
    )?;
    let id = format!("issue-{}", attrs.req_id("iid")?);
    let typed = attrs
        .opt_name("type")?
        .is_some_and(|t| t.eq_ignore_ascii_case("incident"));
    let labels = match root.opt_objects("labels", usize::MAX)? {
        Some(l) => l,
        None => attrs.objects("labels")?,
    };
    if !typed && !has_label(&labels, incident_label)? {
        let had = match root.opt_obj("changes")? {
            Some(changes) => match changes.opt_obj("labels")? {
                Some(l) => has_label(&l.objects("previous")?, incident_label)?,
                None => false,
            },
            None => false,
        };
        if had {
            return Ok(Delivery::NotIncident {
                event: "Issue Hook",
                project,
                id,
            });
        }
        return Ok(Delivery::Ignored {
            event: "Issue Hook".to_owned(),
            why:
                "the issue is not of type Incident and carries no incident label (--incident-label)",
        });
    }
    let started_at = attrs
        .opt_time_by("created_at", gitlab_time)?
        .ok_or_else(|| attrs.err("created_at", "is required"))?;
    let closed = attrs.opt_name("state")?.as_deref() == Some("closed")
        || attrs.opt_name("action")?.as_deref() == Some("close");
    let resolved_at = if closed {
        let at = match attrs.opt_time_by("closed_at", gitlab_time)? {
            Some(t) => Some(t),
            None => attrs.opt_time_by("updated_at", gitlab_time)?,
        };
        at.map(|t| t.max(started_at))
    } else {
        None
    };
    let text = attrs
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or("");
    let links = links(text);
    Ok(Delivery::Incident {
        event: "Issue Hook",
        incident: Incident {
            id,
            project,
            title: attrs.req_name("title")?,
            service: links.service,
            env: None,
            started_at,
            resolved_at,
            severity: attrs.opt_name("severity")?,
            url: attrs.opt_url("url")?,
            deployment: links.deployment,
            commit: links.commit,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_time_forms() {
        // 1471015408 is 2016-08-12T15:23:28Z (date -u -d @1471015408).
        let utc = Some(1_471_015_408_000);
        assert_eq!(gitlab_time("2016-08-12 15:23:28 UTC"), utc);
        assert_eq!(gitlab_time("2016-08-12 17:23:28 +0200"), utc);
        assert_eq!(gitlab_time("2016-08-12 10:23:28 -05:00"), utc);
        assert_eq!(gitlab_time("2016-08-12T15:23:28Z"), utc);
        assert_eq!(
            gitlab_time("2016-08-12 15:23:28.250 UTC"),
            Some(1_471_015_408_250)
        );
        assert_eq!(gitlab_time("2016-08-12 15:23:28"), None);
        assert_eq!(gitlab_time("2016-08-12 15:23:28 CEST"), None);
        assert_eq!(gitlab_time("2016-08-12 15:23:28 +2"), None);
        assert_eq!(gitlab_time("yesterday UTC"), None);
    }
}
