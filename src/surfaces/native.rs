//! pipestat's own API under `/api/v1` (docs/api.md): ingestion of runs, rollbacks and JUnit
//! reports, reading runs back, pipelines, and token management.

use rusqlite::Connection;
use serde_json::{json, Map, Value};

use super::{decode_cursor, encode_cursor, App};
use crate::error::{Error, Result};
use crate::http::{Method, Req, Resp};
use crate::ingest;
use crate::ingest::junit;
use crate::metrics::Source;
use crate::model::times::format_rfc3339;
use crate::model::{Job, Run, Status, TestCase, TestOutcome};
use crate::store::tokens;
use crate::store::writer::{Write, Written};
use crate::store::{self, RunFilter};

/// Largest page of `GET /api/v1/runs`.
const MAX_LIMIT: u32 = 1000;

pub fn route(app: &App, conn: &Connection, req: &Req, rest: &[&str]) -> Result<Resp> {
    match (req.method, rest) {
        (Method::Post, ["runs"]) => post_runs(app, req),
        (Method::Get, ["runs"]) => list_runs(conn, req),
        (_, ["runs"]) => Err(Error::MethodNotAllowed("GET, POST")),
        (Method::Post, ["runs", path @ .., id, "tests"]) if !path.is_empty() => {
            post_tests(app, req, path, id)
        }
        (Method::Get, ["runs", path @ .., id]) if !path.is_empty() => get_run(conn, path, id),
        (_, ["runs", path @ .., _, "tests"]) if !path.is_empty() => {
            Err(Error::MethodNotAllowed("GET, POST"))
        }
        (_, ["runs", path @ .., _]) if !path.is_empty() => Err(Error::MethodNotAllowed("GET")),
        (Method::Post, ["rollbacks"]) => post_rollbacks(app, req),
        (_, ["rollbacks"]) => Err(Error::MethodNotAllowed("POST")),
        (Method::Post, ["pushes"]) => post_pushes(app, req),
        (_, ["pushes"]) => Err(Error::MethodNotAllowed("POST")),
        (Method::Post, ["incidents"]) => post_incidents(app, req),
        (Method::Get, ["incidents"]) => super::dora::list_incidents(conn, req),
        (_, ["incidents"]) => Err(Error::MethodNotAllowed("GET, POST")),
        (Method::Get, ["pipelines"]) => list_pipelines(conn, req),
        (_, ["pipelines"]) => Err(Error::MethodNotAllowed("GET")),
        (Method::Get, ["tokens"]) => list_tokens(conn),
        (Method::Post, ["tokens"]) => create_token(app, req),
        (_, ["tokens"]) => Err(Error::MethodNotAllowed("GET, POST")),
        (Method::Delete, ["tokens", name]) => revoke_token(app, name),
        (_, ["tokens", _]) => Err(Error::MethodNotAllowed("DELETE")),
        _ => Err(Error::NotFound(format!(
            "no route for /api/v1/{}",
            rest.join("/")
        ))),
    }
}

fn require_json(req: &Req, also: &[&str]) -> Result<bool> {
    match req.media_type().as_deref() {
        None | Some("application/json") => Ok(false),
        Some(t) if also.contains(&t) => Ok(true),
        Some(t) => Err(Error::UnsupportedMediaType(format!(
            "unsupported Content-Type {t:?}; send application/json{}",
            if also.is_empty() {
                String::new()
            } else {
                format!(" or {}", also.join(", "))
            }
        ))),
    }
}

fn post_runs(app: &App, req: &Req) -> Result<Resp> {
    let ndjson = require_json(
        req,
        &[
            "application/x-ndjson",
            "application/ndjson",
            "application/jsonl",
        ],
    )?;
    let runs = ingest::parse_runs(&req.body(), ndjson)?;
    req.drop_body();
    let accepted = runs.len();
    match app.writer.submit(Write::Runs(runs))? {
        Written::Runs(c) => {
            let stale = (accepted as u64).saturating_sub(c.created + c.updated);
            app.metrics
                .runs(Source::Native, c.created, c.updated, stale);
            Ok(Resp::json(
                200,
                &json!({"accepted": accepted, "created": c.created, "updated": c.updated}),
            ))
        }
        _ => Err(Error::Internal("unexpected writer answer".into())),
    }
}

fn post_rollbacks(app: &App, req: &Req) -> Result<Resp> {
    require_json(req, &[])?;
    let rollbacks = ingest::parse_rollbacks(&req.body())?;
    req.drop_body();
    match app.writer.submit(Write::Rollbacks(rollbacks))? {
        Written::Rollbacks(n) => Ok(Resp::json(200, &json!({"accepted": n}))),
        _ => Err(Error::Internal("unexpected writer answer".into())),
    }
}

/// The media types of an NDJSON body.
const NDJSON: &[&str] = &[
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
];

/// `POST /api/v1/pushes`: pushes upserted by (project, branch, last commit's sha).
fn post_pushes(app: &App, req: &Req) -> Result<Resp> {
    let ndjson = require_json(req, NDJSON)?;
    let pushes = ingest::dora::parse_pushes(&req.body(), ndjson)?;
    req.drop_body();
    let accepted = pushes.len();
    match app.writer.submit(Write::Pushes(pushes))? {
        Written::Pushes(c) => Ok(Resp::json(
            200,
            &json!({"accepted": accepted, "created": c.created, "updated": c.updated}),
        )),
        _ => Err(Error::Internal("unexpected writer answer".into())),
    }
}

/// `POST /api/v1/incidents`: incidents upserted by (project, id).
fn post_incidents(app: &App, req: &Req) -> Result<Resp> {
    let ndjson = require_json(req, NDJSON)?;
    let incidents = ingest::dora::parse_incidents(&req.body(), ndjson)?;
    req.drop_body();
    let accepted = incidents.len();
    match app.writer.submit(Write::Incidents(incidents))? {
        Written::Incidents(c) => Ok(Resp::json(
            200,
            &json!({"accepted": accepted, "created": c.created, "updated": c.updated}),
        )),
        _ => Err(Error::Internal("unexpected writer answer".into())),
    }
}

/// The canonical slug of path segments (literal slashes, or one %2F-escaped segment).
fn slug_of(path: &[&str]) -> Result<String> {
    ingest::canonical_slug(&path.join("/")).map_err(Error::BadRequest)
}

fn post_tests(app: &App, req: &Req, path: &[&str], id: &str) -> Result<Resp> {
    match req.media_type().as_deref() {
        Some("application/xml" | "text/xml" | "application/junit+xml") => {}
        other => {
            return Err(Error::UnsupportedMediaType(format!(
                "unsupported Content-Type {:?}; send a JUnit report as application/xml",
                other.unwrap_or("")
            )))
        }
    }
    let slug = slug_of(path)?;
    let tests = junit::parse(&req.body())
        .map_err(|e| Error::bad(format!("malformed JUnit report: {e}")))?;
    req.drop_body();
    let count = |o: TestOutcome| tests.iter().filter(|t| t.result == o).count();
    let summary = json!({
        "cases": tests.len(),
        "success": count(TestOutcome::Success),
        "failure": count(TestOutcome::Failure),
        "error": count(TestOutcome::Error),
        "skipped": count(TestOutcome::Skipped),
    });
    let job = req
        .param("job")
        .filter(|j| !j.is_empty())
        .map(str::to_owned);
    let write = Write::Tests {
        slug: slug.clone(),
        run: id.to_owned(),
        job,
        tests,
    };
    match app.writer.submit(write)? {
        Written::Tests(a) => {
            let mut body = summary;
            body["project"] = json!(slug);
            body["run"] = json!(id);
            body["job"] = json!({"id": a.job_id, "name": a.job_name, "created": a.created_job});
            Ok(Resp::json(200, &body))
        }
        _ => Err(Error::Internal("unexpected writer answer".into())),
    }
}

fn get_run(conn: &Connection, path: &[&str], id: &str) -> Result<Resp> {
    let slug = slug_of(path)?;
    match store::get_run(conn, &slug, id)? {
        Some(run) => Ok(Resp::json(200, &run_json(&run, true))),
        None => Err(Error::NotFound(format!(
            "no run {id:?} in project {slug:?}"
        ))),
    }
}

fn list_runs(conn: &Connection, req: &Req) -> Result<Resp> {
    let project = req
        .param("project")
        .map(ingest::canonical_slug)
        .transpose()
        .map_err(Error::BadRequest)?;
    let status = match req.param("status") {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            Error::bad(format!(
                "parameter \"status\": unknown value {s:?}; expected one of {}",
                Status::ALL.map(Status::as_str).join(", ")
            ))
        })?),
    };
    let limit = match req.param("limit") {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                Error::bad(format!(
                    "parameter \"limit\": expected 1..{MAX_LIMIT}, got {l:?}"
                ))
            })?,
    };
    let after = req.param("cursor").map(decode_cursor).transpose()?;
    let filter = RunFilter {
        project: project.as_deref(),
        workflow: req.param("workflow"),
        branch: req.param("branch"),
        status,
        after,
        limit,
    };
    let (runs, next) = store::list_runs(conn, &filter)?;
    let items: Vec<Value> = runs.iter().map(|r| run_json(r, false)).collect();
    Ok(Resp::json(
        200,
        &json!({"items": items, "next_cursor": next.map(|(at, id)| encode_cursor(at, id))}),
    ))
}

fn list_pipelines(conn: &Connection, req: &Req) -> Result<Resp> {
    let project = req
        .param("project")
        .map(ingest::canonical_slug)
        .transpose()
        .map_err(Error::BadRequest)?;
    let items: Vec<Value> = store::list_pipelines(conn, project.as_deref())?
        .into_iter()
        .map(|p| {
            json!({
                "pipeline_id": p.pipeline_id,
                "project": p.project,
                "project_key": p.project_key,
                "workflow": p.workflow,
                "run_count": p.run_count,
                "last_run_at": p.last_run_at.map(format_rfc3339),
            })
        })
        .collect();
    Ok(Resp::json(200, &json!({ "items": items })))
}

fn list_tokens(conn: &Connection) -> Result<Resp> {
    let items: Vec<Value> = tokens::list_tokens(conn)?
        .into_iter()
        .map(|t| json!({"name": t.name, "scopes": t.scopes, "created_at": format_rfc3339(t.created_at)}))
        .collect();
    Ok(Resp::json(200, &json!({ "items": items })))
}

fn create_token(app: &App, req: &Req) -> Result<Resp> {
    // Open mode serves requests without a token, but never mints one for them.
    if req.token.is_none() {
        return Err(Error::Unauthorized(
            "creating a token over HTTP needs an admin token, also in open mode; \
             make the first one with `pipestat token create --name NAME --scope admin`"
                .into(),
        ));
    }
    require_json(req, &[])?;
    let body = ingest::parse_json(&req.body()).map_err(Error::BadRequest)?;
    let field = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .ok_or_else(|| Error::bad(format!("field \"{k}\": expected a non-empty string")))
    };
    let name = field("name")?;
    let scopes = tokens::parse_scopes(field("scopes")?)?;
    let secret = tokens::new_secret()?;
    app.writer.submit(Write::CreateToken {
        name: name.to_owned(),
        hash: tokens::hash_secret(&secret),
        scopes: scopes.clone(),
        now: app.now_ms(),
    })?;
    Ok(Resp::json(
        201,
        &json!({"name": name, "scopes": scopes, "token": secret}),
    ))
}

fn revoke_token(app: &App, name: &str) -> Result<Resp> {
    match app.writer.submit(Write::RevokeToken(name.to_owned()))? {
        Written::Revoked(true) => Ok(Resp::json(200, &json!({"revoked": name}))),
        _ => Err(Error::NotFound(format!("no token named {name:?}"))),
    }
}

/// A stored run in the shape it was sent, with canonical slug and RFC 3339 UTC times.
pub fn run_json(run: &Run, with_jobs: bool) -> Value {
    let t = |ms: Option<i64>| ms.map(format_rfc3339);
    let mut o = Map::new();
    o.insert("id".into(), json!(run.id));
    o.insert("project".into(), json!(run.project));
    o.insert("project_key".into(), json!(run.project_key));
    o.insert("default_branch".into(), json!(run.default_branch));
    o.insert("workflow".into(), json!(run.workflow));
    o.insert("pipeline_id".into(), json!(run.pipeline_id));
    o.insert("number".into(), json!(run.number));
    o.insert("branch".into(), json!(run.branch));
    o.insert("commit".into(), json!(run.commit));
    o.insert("actor".into(), json!(run.actor));
    o.insert("trigger".into(), json!(run.trigger));
    o.insert("committed_at".into(), json!(t(run.committed_at)));
    o.insert("status".into(), json!(run.status.as_str()));
    o.insert("created_at".into(), json!(format_rfc3339(run.created_at)));
    o.insert("started_at".into(), json!(t(run.started_at)));
    o.insert("stopped_at".into(), json!(t(run.stopped_at)));
    o.insert("credits_used".into(), json!(run.credits_used));
    o.insert("detail_url".into(), json!(run.detail_url));
    let params = run
        .parameters
        .as_deref()
        .and_then(|p| serde_json::from_str::<Value>(p).ok());
    o.insert("parameters".into(), params.unwrap_or(Value::Null));
    if with_jobs {
        o.insert(
            "jobs".into(),
            Value::Array(run.jobs.iter().map(job_json).collect()),
        );
    }
    Value::Object(o)
}

fn job_json(job: &Job) -> Value {
    let t = |ms: Option<i64>| ms.map(format_rfc3339);
    json!({
        "id": job.id,
        "name": job.name,
        "stage": job.stage,
        "kind": job.kind.as_str(),
        "status": job.status.as_str(),
        "created_at": format_rfc3339(job.created_at),
        "started_at": t(job.started_at),
        "stopped_at": t(job.stopped_at),
        "credits_used": job.credits_used,
        "detail_url": job.detail_url,
        "error_code": job.error_code,
        "error_msg": job.error_msg,
        "env": job.env,
        "cluster": job.cluster,
        "service": job.service,
        "service_type": job.service_type,
        "production": job.production,
        "artifacts": job.artifacts,
        "tests": job.tests.as_deref().unwrap_or(&[]).iter().map(test_json).collect::<Vec<_>>(),
    })
}

fn test_json(t: &TestCase) -> Value {
    json!({
        "name": t.name,
        "classname": t.classname,
        "file": t.file,
        "suite": t.suite,
        "result": t.result.as_str(),
        "duration": t.duration,
        "message": t.message,
    })
}
