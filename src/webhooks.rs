//! Webhooks from GitHub and GitLab: `POST /webhooks/github`, `POST /webhooks/gitlab` (contract §3.2).
//!
//! A delivery is checked in this order, and nothing is stored unless every step passes: the
//! secret is configured (else 403, saying how to set it), the signature or token matches (else
//! 401), the event is one pipestat maps (else 202, ignored), the body is a well-formed payload
//! of that event (else 400 naming the field). The payload is then mapped onto runs and jobs
//! (see `github` and `gitlab`, and docs/webhooks.md for the tables) and written through the
//! group-commit writer under the usual freshness rules, so late, repeated and reordered
//! deliveries converge on the freshest state without duplicating a run.

mod github;
mod gitlab;

use hmac::{Hmac, Mac};
use percent_encoding::percent_decode_str;
use rusqlite::Connection;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::fields::{self, Obj};
use crate::http::{App, Method, Req, Resp};
use crate::ingest;
use crate::model::{Kind, Run, Status};
use crate::times;
use crate::writer::{Write, Written};

type HmacSha256 = Hmac<Sha256>;

/// Answers `/webhooks/*`; `rest` is the path after that prefix.
pub fn route(app: &App, _conn: &Connection, req: &Req, rest: &[&str]) -> Result<Resp> {
    match (req.method, rest) {
        (Method::Post, ["github"]) => github::handle(app, req),
        (Method::Post, ["gitlab"]) => gitlab::handle(app, req),
        (_, ["github"] | ["gitlab"]) => Err(Error::MethodNotAllowed("POST")),
        _ => Err(Error::NotFound(format!(
            "no route for /webhooks/{}; webhooks are /webhooks/github and /webhooks/gitlab",
            rest.join("/")
        ))),
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
fn commit(app: &App, event: &str, project: &str, run: &str, write: Write) -> Result<Resp> {
    match app.writer.submit(write)? {
        Written::Runs(c) => Ok(Resp::json(
            200,
            &json!({
                "event": event, "project": project, "run": run,
                "created": c.created, "updated": c.updated
            }),
        )),
        _ => Err(Error::Internal("unexpected writer answer".into())),
    }
}

/// Writes a run whole (freshness decides whether it replaces the stored one).
fn write_run(app: &App, event: &str, run: Run) -> Result<Resp> {
    let (project, id) = (run.project.clone(), run.id.clone());
    commit(app, event, &project, &id, Write::Runs(vec![run]))
}

/// Merges a run's jobs into the stored run, creating the run from `run` when absent.
fn merge_jobs(app: &App, event: &str, run: Run) -> Result<Resp> {
    let (project, id) = (run.project.clone(), run.id.clone());
    commit(app, event, &project, &id, Write::JobsIntoRun(Box::new(run)))
}

/// The canonical project slug for a CI system's repository path.
fn slug(vcs: &str, path: &str, field: &str) -> Result<String> {
    ingest::canonical_slug(&format!("{vcs}/{path}"))
        .map_err(|m| Error::bad(format!("field \"{field}\": {m}")))
}

/// Keeps times consistent for the statistics: a start is never before the creation, and a
/// stop never before the start (or the creation). CI systems report these from different
/// clocks and events, and a negative duration would poison every mean.
fn order_times(created: i64, started: &mut Option<i64>, stopped: &mut Option<i64>) {
    if let Some(s) = started.as_mut() {
        *s = (*s).max(created);
    }
    if let Some(t) = stopped.as_mut() {
        *t = (*t).max(started.unwrap_or(created));
    }
}

/// The start and stop a run or job keeps for its status: a start once it runs or ran, a stop
/// once it finished, both ordered by `order_times`.
fn span(
    status: Status,
    created: i64,
    started: Option<i64>,
    stopped: Option<i64>,
) -> (Option<i64>, Option<i64>) {
    let mut started = started.filter(|_| status.rank() >= 1);
    let mut stopped = stopped.filter(|_| status.is_terminal());
    order_times(created, &mut started, &mut stopped);
    (started, stopped)
}

/// Whether a deploy environment is production: named production or prod (any case), or
/// flagged so by the CI system.
fn is_production(env: Option<&str>, flagged: bool) -> bool {
    flagged
        || env
            .is_some_and(|e| e.eq_ignore_ascii_case("production") || e.eq_ignore_ascii_case("prod"))
}

/// What a job does, guessed from words of its stage and name (in that order): deploy,
/// release, publish → deploy; test, tests, e2e, spec → test; build, compile, package → build.
fn kind_of(texts: &[Option<&str>]) -> Kind {
    const DEPLOY: &[&str] = &["deploy", "deployment", "release", "publish", "rollout"];
    const TEST: &[&str] = &["test", "tests", "testing", "e2e", "spec", "specs"];
    const BUILD: &[&str] = &["build", "compile", "package", "bundle"];
    for text in texts.iter().flatten() {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        for (list, kind) in [
            (DEPLOY, Kind::Deploy),
            (TEST, Kind::Test),
            (BUILD, Kind::Build),
        ] {
            if words.iter().any(|w| list.contains(w)) {
                return kind;
            }
        }
    }
    Kind::Other
}

/// RFC 3339, as GitHub sends.
fn rfc3339(s: &str) -> Option<i64> {
    times::parse_rfc3339(s)
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

    #[test]
    fn kinds_from_words() {
        assert_eq!(kind_of(&[Some("deploy"), Some("staging")]), Kind::Deploy);
        assert_eq!(kind_of(&[Some("test"), Some("test-build")]), Kind::Test);
        assert_eq!(kind_of(&[None, Some("build-image")]), Kind::Build);
        assert_eq!(kind_of(&[None, Some("Analyze (javascript)")]), Kind::Other);
        // Words, not substrings: "latest" is not "test".
        assert_eq!(kind_of(&[None, Some("latest")]), Kind::Other);
    }

    #[test]
    fn production_environments() {
        assert!(is_production(Some("Production"), false));
        assert!(is_production(Some("prod"), false));
        assert!(is_production(Some("eu-live"), true));
        assert!(!is_production(Some("github-pages"), false));
        assert!(!is_production(None, false));
    }

    #[test]
    fn times_are_ordered() {
        let (mut start, mut stop) = (Some(50), Some(40));
        order_times(10, &mut start, &mut stop);
        assert_eq!((start, stop), (Some(50), Some(50)));
        let (mut start, mut stop) = (None, Some(5));
        order_times(10, &mut start, &mut stop);
        assert_eq!((start, stop), (None, Some(10)));
    }
}
