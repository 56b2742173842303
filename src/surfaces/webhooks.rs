//! Webhooks from GitHub and GitLab: `POST /webhooks/github`, `POST /webhooks/gitlab` (docs/webhooks.md).
//!
//! A delivery is checked in this order, and nothing is stored unless every step passes: the
//! secret is configured (else 403, saying how to set it), the signature or token matches (else
//! 401), the event is one pipestat maps (else 202, ignored), the body is a well-formed payload
//! of that event (else 400 naming the field). The payload is then mapped onto runs and jobs
//! (see `github` and `gitlab`, and docs/webhooks.md for the tables) and written through the
//! group-commit writer under the usual freshness rules, so late, repeated and reordered
//! deliveries converge on the freshest state without duplicating a run.

use hmac::{Hmac, Mac};
use percent_encoding::percent_decode_str;
use rusqlite::Connection;
use serde_json::{json, Value};
use sha2::Sha256;

use super::App;
use crate::error::{Error, Result};
use crate::http::{Method, Req, Resp};
use crate::ingest;
use crate::ingest::fields;
use crate::ingest::webhooks::{github, gitlab, Delivery};
use crate::metrics::Source;
use crate::model::Run;
use crate::store::writer::{Write, Written};

type HmacSha256 = Hmac<Sha256>;

/// Answers `/webhooks/*`; `rest` is the path after that prefix.
pub fn route(app: &App, _conn: &Connection, req: &Req, rest: &[&str]) -> Result<Resp> {
    match (req.method, rest) {
        (Method::Post, ["github"]) => from_github(app, req),
        (Method::Post, ["gitlab"]) => from_gitlab(app, req),
        (_, ["github"] | ["gitlab"]) => Err(Error::MethodNotAllowed("POST")),
        _ => Err(Error::NotFound(format!(
            "no route for /webhooks/{}; webhooks are /webhooks/github and /webhooks/gitlab",
            rest.join("/")
        ))),
    }
}

/// A GitHub delivery: the secret, the signature over the raw body, then the event.
fn from_github(app: &App, req: &Req) -> Result<Resp> {
    let secret = secret(
        &app.settings.github_secret,
        "github-secret",
        "PIPESTAT_GITHUB_SECRET",
    )?;
    verify_github(secret, &req.body(), req.header("X-Hub-Signature-256"))?;
    let event = req
        .header("X-GitHub-Event")
        .ok_or_else(|| Error::bad("missing X-GitHub-Event header"))?;
    let label = app.settings.incident_label();
    answer(
        app,
        Source::Github,
        github::parse(event, &mut || payload(req), label)?,
    )
}

/// A GitLab delivery: the secret token, then the event.
fn from_gitlab(app: &App, req: &Req) -> Result<Resp> {
    let secret = secret(
        &app.settings.gitlab_secret,
        "gitlab-secret",
        "PIPESTAT_GITLAB_SECRET",
    )?;
    verify_gitlab(secret, req.header("X-Gitlab-Token"))?;
    let event = req
        .header("X-Gitlab-Event")
        .ok_or_else(|| Error::bad("missing X-Gitlab-Event header"))?;
    answer(
        app,
        Source::Gitlab,
        gitlab::parse(
            event,
            &mut || payload(req),
            app.now_ms(),
            app.settings.incident_label(),
        )?,
    )
}

/// Stores what a delivery asks for, and says what was done.
fn answer(app: &App, source: Source, delivery: Delivery) -> Result<Resp> {
    match delivery {
        Delivery::Ping => Ok(Resp::json(200, &json!({"pong": true}))),
        Delivery::Ignored { event, why } => Ok(ignored(&event, why)),
        Delivery::Run { event, run } => write_run(app, source, event, run),
        Delivery::Jobs { event, run } => merge_jobs(app, source, event, run),
        Delivery::Push { event, push } => {
            let (project, branch) = (push.project.clone(), push.branch.clone());
            let head = push.commits.last().map(|c| c.sha.clone());
            let commits = push.commits.len();
            match app.writer.submit(Write::Pushes(vec![push]))? {
                Written::Pushes(c) => Ok(Resp::json(
                    200,
                    &json!({
                        "event": event, "project": project, "branch": branch, "head": head,
                        "commits": commits, "created": c.created, "updated": c.updated
                    }),
                )),
                _ => Err(Error::Internal("unexpected writer answer".into())),
            }
        }
        Delivery::Incident { event, incident } => {
            let (project, id) = (incident.project.clone(), incident.id.clone());
            match app.writer.submit(Write::Incidents(vec![incident]))? {
                Written::Incidents(c) => Ok(Resp::json(
                    200,
                    &json!({
                        "event": event, "project": project, "incident": id,
                        "created": c.created, "updated": c.updated
                    }),
                )),
                _ => Err(Error::Internal("unexpected writer answer".into())),
            }
        }
        Delivery::NotIncident { event, project, id } => {
            let write = Write::RemoveIncident {
                project: project.clone(),
                id: id.clone(),
            };
            match app.writer.submit(write)? {
                Written::Revoked(removed) => Ok(Resp::json(
                    200,
                    &json!({
                        "event": event, "project": project, "incident": id, "removed": removed
                    }),
                )),
                _ => Err(Error::Internal("unexpected writer answer".into())),
            }
        }
    }
}

/// The configured secret, or the refusal that says how to configure one. An empty secret
/// counts as none: an HMAC keyed with nothing proves nothing.
fn secret<'a>(configured: &'a Option<String>, flag: &str, var: &str) -> Result<&'a str> {
    match configured.as_deref() {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Error::Forbidden(format!(
            "this webhook is off: no secret is configured; start pipestat with --{flag} SECRET \
             or {var}=SECRET, and give the webhook the same secret"
        ))),
    }
}

/// Checks GitHub's `X-Hub-Signature-256: sha256=<hex>` against the HMAC-SHA256 of the raw
/// body, in constant time.
fn verify_github(secret: &str, body: &[u8], header: Option<&str>) -> Result<()> {
    let header = header.ok_or_else(|| {
        Error::Unauthorized(
            "missing X-Hub-Signature-256 header: set a secret on the webhook".into(),
        )
    })?;
    let tag = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(decode_hex)
        .ok_or_else(|| {
            Error::Unauthorized(
                "X-Hub-Signature-256: expected \"sha256=\" and 64 hex digits".into(),
            )
        })?;
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    mac.verify_slice(&tag).map_err(|_| {
        Error::Unauthorized(
            "X-Hub-Signature-256 does not match the body: the webhook's secret differs from --github-secret"
                .into(),
        )
    })
}

/// Checks GitLab's `X-Gitlab-Token` against the secret in constant time: both are passed
/// through HMAC-SHA256 under the secret and the tags compared with `verify_slice`, so the
/// time taken says nothing about how much of the token was right.
fn verify_gitlab(secret: &str, header: Option<&str>) -> Result<()> {
    let token = header.ok_or_else(|| {
        Error::Unauthorized(
            "missing X-Gitlab-Token header: set a secret token on the webhook".into(),
        )
    })?;
    let keyed = || HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    let mut expected = keyed();
    expected.update(secret.as_bytes());
    let expected = expected.finalize().into_bytes();
    let mut presented = keyed();
    presented.update(token.as_bytes());
    presented.verify_slice(&expected).map_err(|_| {
        Error::Unauthorized(
            "X-Gitlab-Token does not match: the webhook's secret token differs from --gitlab-secret"
                .into(),
        )
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The JSON payload of a delivery: a JSON body, or (GitHub's other content type) a form
/// body whose `payload` field holds the JSON.
fn payload(req: &Req) -> Result<Value> {
    let json = match req.media_type().as_deref() {
        None | Some("application/json") => req.body().clone(),
        Some("application/x-www-form-urlencoded") => {
            let body = req.body();
            let text = std::str::from_utf8(&body)
                .map_err(|_| Error::bad("form body is not valid UTF-8"))?;
            let field = text
                .split('&')
                .find_map(|p| p.strip_prefix("payload="))
                .ok_or_else(|| Error::bad("form body has no \"payload\" field"))?;
            percent_decode_str(&field.replace('+', " "))
                .decode_utf8()
                .map_err(|_| {
                    Error::bad("field \"payload\": not valid UTF-8 after percent-decoding")
                })?
                .into_owned()
                .into_bytes()
        }
        Some(t) => {
            return Err(Error::UnsupportedMediaType(format!(
                "unsupported Content-Type {t:?}; set the webhook's content type to application/json"
            )))
        }
    };
    match ingest::parse_json(&json).map_err(Error::BadRequest)? {
        v @ Value::Object(_) => Ok(v),
        _ => Err(Error::bad("the payload must be a JSON object")),
    }
}

/// 202: a verified delivery of an event pipestat does not map; nothing is stored.
fn ignored(event: &str, why: &str) -> Resp {
    Resp::json(
        202,
        &json!({"ignored": fields::clip(event, 64), "message": format!("{why}; nothing stored")}),
    )
}

/// Commits the write and answers what it did.
fn commit(
    app: &App,
    source: Source,
    event: &str,
    project: &str,
    run: &str,
    write: Write,
) -> Result<Resp> {
    match app.writer.submit(write)? {
        Written::Runs(c) => {
            let stale = 1u64.saturating_sub(c.created + c.updated);
            app.metrics.runs(source, c.created, c.updated, stale);
            Ok(Resp::json(
                200,
                &json!({
                    "event": event, "project": project, "run": run,
                    "created": c.created, "updated": c.updated
                }),
            ))
        }
        _ => Err(Error::Internal("unexpected writer answer".into())),
    }
}

/// Writes a run whole (freshness decides whether it replaces the stored one).
fn write_run(app: &App, source: Source, event: &str, run: Run) -> Result<Resp> {
    let (project, id) = (run.project.clone(), run.id.clone());
    commit(app, source, event, &project, &id, Write::Runs(vec![run]))
}

/// Merges a run's jobs into the stored run, creating the run from `run` when absent.
fn merge_jobs(app: &App, source: Source, event: &str, run: Run) -> Result<Resp> {
    let (project, id) = (run.project.clone(), run.id.clone());
    commit(
        app,
        source,
        event,
        &project,
        &id,
        Write::JobsIntoRun(Box::new(run)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("é1"), None);
    }

    #[test]
    fn github_signature() {
        // Independent value: printf 'hello' | openssl dgst -sha256 -hmac 's3cret'
        let hex = "e5a01537481fa0b2c697f787c7aff885412cf0760d08e08502259b39d2d6ae68";
        let good = format!("sha256={hex}");
        assert!(verify_github("s3cret", b"hello", Some(&good)).is_ok());
        assert!(verify_github("other", b"hello", Some(&good)).is_err());
        assert!(verify_github("s3cret", b"hell", Some(&good)).is_err());
        assert!(verify_github("s3cret", b"hello", None).is_err());
        assert!(verify_github("s3cret", b"hello", Some(&format!("sha1={hex}"))).is_err());
    }

    #[test]
    fn gitlab_token() {
        assert!(verify_gitlab("tok", Some("tok")).is_ok());
        assert!(verify_gitlab("tok", Some("tok ")).is_err());
        assert!(verify_gitlab("tok", Some("")).is_err());
        assert!(verify_gitlab("tok", None).is_err());
    }
}
