//! Payload → domain: validates native JSON bodies (docs/api.md) into `model` values.
//!
//! No SQL and no HTTP here. Every rejection names the item and the field, e.g.
//! `item 2: field "jobs[0].status": unknown value "done"; expected one of queued, running, …`.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::ingest::fields::{Obj, MAX_ID, MAX_NAME, MAX_TEXT, MAX_URL};
use crate::model::{Job, Kind, Rollback, Run, Status, TestCase, TestOutcome};
/// Most jobs in one run and test cases in one job.
const MAX_JOBS: usize = 10_000;
const MAX_TESTS: usize = 1_000_000;

/// Parses a `POST /api/v1/runs` body: one run object, a JSON array of them, or NDJSON.
pub fn parse_runs(body: &[u8], ndjson: bool) -> Result<Vec<Run>> {
    if ndjson {
        let mut runs = Vec::new();
        for (index, line_no, line) in ndjson_lines(body) {
            // Items count from 0, as array items and `jobs[i]` do; lines from 1, as editors
            // and `pipestat import` do.
            let refuse = |m: String| Error::bad(format!("item {index} (line {line_no}): {m}"));
            let value = parse_json(line).map_err(refuse)?;
            runs.push(run_from_json(&value).map_err(refuse)?);
        }
        if runs.is_empty() {
            return Err(Error::bad("body holds no run"));
        }
        return Ok(runs);
    }
    // The body is converted element by element as it is parsed, so a large array never
    // exists as one JSON tree in memory: only one element's tree at a time.
    let mut refused = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde::Deserializer::deserialize_any(
        &mut de,
        RunsVisitor {
            refused: &mut refused,
        },
    )
    .and_then(|runs| de.end().map(|()| runs));
    match (parsed, refused) {
        (_, Some(message)) => Err(Error::bad(message)),
        (Ok(runs), None) => Ok(runs),
        (Err(e), None) if e.is_data() => Err(Error::bad(
            "body must be a run object, an array of runs, or NDJSON",
        )),
        (Err(e), None) => Err(Error::bad(format!("malformed JSON: {e}"))),
    }
}

/// Turns a top-level JSON array (or one object) into runs while serde_json reads it. A run
/// that fails validation stops the parse; its message, naming the item, is left in `refused`.
struct RunsVisitor<'a> {
    refused: &'a mut Option<String>,
}

impl RunsVisitor<'_> {
    fn convert<E: serde::de::Error>(&mut self, index: usize, v: &Value) -> Result<Run, E> {
        run_from_json(v).map_err(|m| {
            let message = format!("item {index}: {m}");
            *self.refused = Some(message.clone());
            E::custom(message)
        })
    }
}

impl<'de> serde::de::Visitor<'de> for RunsVisitor<'_> {
    type Value = Vec<Run>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a run object or an array of runs")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut seq: A) -> Result<Vec<Run>, A::Error> {
        let mut runs = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element::<Value>()? {
            runs.push(self.convert(runs.len(), &v)?);
        }
        Ok(runs)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(mut self, map: A) -> Result<Vec<Run>, A::Error> {
        let v = <Value as serde::Deserialize>::deserialize(
            serde::de::value::MapAccessDeserializer::new(map),
        )?;
        Ok(vec![self.convert(0, &v)?])
    }
}

/// The non-blank lines of an NDJSON body with their 0-based item index and 1-based line
/// number.
pub fn ndjson_lines(body: &[u8]) -> impl Iterator<Item = (usize, usize, &[u8])> {
    body.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .enumerate()
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
        .enumerate()
        .map(|(index, (n, l))| (index, n + 1, l))
}

/// Parses JSON text, describing a syntax error by line and column.
pub fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("malformed JSON: {e}"))
}

/// Parses a `POST /api/v1/rollbacks` body: one rollback object or an array of them.
pub fn parse_rollbacks(body: &[u8]) -> Result<Vec<Rollback>> {
    match parse_json(body).map_err(Error::bad)? {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| rollback_from_json(v).map_err(|m| Error::bad(format!("item {i}: {m}"))))
            .collect(),
        v @ Value::Object(_) => Ok(vec![
            rollback_from_json(&v).map_err(|m| Error::bad(format!("item 0: {m}")))?
        ]),
        _ => Err(Error::bad(
            "body must be a rollback object or an array of them",
        )),
    }
}

/// Canonicalizes a project slug: `vcs/org/repo` with vcs aliases, or `org/repo` meaning GitHub.
/// GitLab slugs may have nested groups (`gl/group/subgroup/repo`).
pub fn canonical_slug(slug: &str) -> Result<String, String> {
    let parts: Vec<&str> = slug.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(format!(
            "invalid project slug {slug:?}: expected \"vcs/org/repo\""
        ));
    }
    let vcs = match parts[0] {
        "gh" | "github" => "gh",
        "bb" | "bitbucket" => "bb",
        "gl" | "gitlab" => "gl",
        "circleci" => "circleci",
        _ if parts.len() == 2 => return Ok(format!("gh/{slug}")),
        other => {
            return Err(format!(
                "invalid project slug {slug:?}: unknown vcs {other:?} (expected gh, github, bb, bitbucket, gl, gitlab or circleci)"
            ))
        }
    };
    let ok = if vcs == "gl" {
        parts.len() >= 3
    } else {
        parts.len() == 3
    };
    if !ok || slug.len() > MAX_NAME {
        return Err(format!(
            "invalid project slug {slug:?}: expected \"vcs/org/repo\""
        ));
    }
    Ok(format!("{vcs}/{}", parts[1..].join("/")))
}

/// Validates one run object.
pub fn run_from_json(v: &Value) -> Result<Run, String> {
    let o = Obj::new(v, "")?;
    let id = o.req_str("id", MAX_ID)?;
    let project =
        canonical_slug(&o.req_str("project", MAX_NAME)?).map_err(|m| o.err("project", &m))?;
    let created_at = o.req_time("created_at")?;
    let started_at = o.opt_time("started_at")?;
    let stopped_at = o.opt_time("stopped_at")?;
    check_order(&o, created_at, started_at, stopped_at)?;
    let pipeline_id = o.opt_str("pipeline_id", MAX_ID)?;
    let jobs = match o.opt_objects("jobs", MAX_JOBS)? {
        None => Vec::new(),
        Some(items) => {
            let jobs = items
                .iter()
                .enumerate()
                .map(|(i, job)| job_from_json(job, &id, i, created_at))
                .collect::<Result<Vec<Job>, String>>()?;
            // Jobs are stored by (run, job id): two with one id would be one row.
            let mut seen = std::collections::HashMap::with_capacity(jobs.len());
            for (i, job) in jobs.iter().enumerate() {
                if let Some(first) = seen.insert(job.id.as_str(), i) {
                    let msg = format!("{:?} is also the id of jobs[{first}]", job.id);
                    return Err(items[i].err("id", &msg).into());
                }
            }
            jobs
        }
    };
    let parameters = match o.opt_objects("parameters", MAX_JOBS)? {
        None => None,
        Some(items) => {
            for item in &items {
                item.req_str("name", MAX_NAME)?;
            }
            o.get("parameters").map(Value::to_string)
        }
    };
    Ok(Run {
        project_key: o.opt_str("project_key", MAX_NAME)?,
        default_branch: o.opt_str("default_branch", MAX_NAME)?,
        workflow: o.req_str_allow_empty("workflow", MAX_NAME)?,
        pipeline_id,
        number: o.opt_int("number", 0)?,
        branch: o.opt_str("branch", MAX_NAME)?,
        commit: o.opt_str("commit", MAX_NAME)?,
        actor: o.opt_str("actor", MAX_NAME)?,
        trigger: o.opt_str("trigger", MAX_NAME)?,
        committed_at: o.opt_time("committed_at")?,
        status: o.req_enum("status", Status::parse, &Status::ALL.map(Status::as_str))?,
        created_at,
        started_at,
        stopped_at,
        credits_used: o.opt_int("credits_used", 0)?.unwrap_or(0),
        detail_url: o.opt_str("detail_url", MAX_URL)?,
        parameters,
        jobs,
        id,
        project,
    })
}

fn job_from_json(o: &Obj, run_id: &str, index: usize, run_created: i64) -> Result<Job, String> {
    let created_at = o.opt_time("created_at")?.unwrap_or(run_created);
    let started_at = o.opt_time("started_at")?;
    let stopped_at = o.opt_time("stopped_at")?;
    check_order(o, created_at, started_at, stopped_at)?;
    let tests = match o.opt_objects("tests", MAX_TESTS)? {
        None => None,
        Some(items) => Some(
            items
                .iter()
                .map(test_from_json)
                .collect::<Result<Vec<TestCase>, String>>()?,
        ),
    };
    let artifacts = match o.array("artifacts", MAX_JOBS)? {
        None => None,
        Some(items) => {
            let mut names = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) if !s.is_empty() && s.len() <= MAX_URL => names.push(s.to_owned()),
                    _ => {
                        return Err(o
                            .err(&format!("artifacts[{i}]"), "expected a non-empty string")
                            .into())
                    }
                }
            }
            Some(names)
        }
    };
    Ok(Job {
        id: o
            .opt_str("id", MAX_ID)?
            .unwrap_or_else(|| format!("{run_id}/{index}")),
        name: o.req_str("name", MAX_NAME)?,
        stage: o.opt_str("stage", MAX_NAME)?,
        kind: o
            .opt_enum("kind", Kind::parse, &Kind::ALL.map(Kind::as_str))?
            .unwrap_or(Kind::Other),
        status: o.req_enum("status", Status::parse, &Status::ALL.map(Status::as_str))?,
        created_at,
        started_at,
        stopped_at,
        credits_used: o.opt_int("credits_used", 0)?.unwrap_or(0),
        detail_url: o.opt_str("detail_url", MAX_URL)?,
        error_code: o.opt_str("error_code", MAX_NAME)?,
        error_msg: o.opt_str("error_msg", MAX_TEXT)?,
        env: o.opt_str("env", MAX_NAME)?,
        cluster: o.opt_str("cluster", MAX_NAME)?,
        service: o.opt_str("service", MAX_NAME)?,
        service_type: o.opt_str("service_type", MAX_NAME)?,
        production: o.opt_bool("production")?.unwrap_or(false),
        artifacts,
        tests,
    })
}

fn test_from_json(o: &Obj) -> Result<TestCase, String> {
    let duration = match o.get("duration") {
        None => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(d) if d >= 0.0 && d.is_finite() => Some(d),
            _ => return Err(o.err("duration", "expected seconds >= 0").into()),
        },
        Some(_) => return Err(o.err("duration", "expected a number of seconds").into()),
    };
    Ok(TestCase {
        name: o.req_str("name", MAX_NAME)?,
        classname: o.opt_str("classname", MAX_NAME)?,
        file: o.opt_str("file", MAX_NAME)?,
        suite: o.opt_str("suite", MAX_NAME)?,
        result: o.req_enum(
            "result",
            TestOutcome::parse,
            &TestOutcome::ALL.map(TestOutcome::as_str),
        )?,
        duration,
        message: o.opt_str("message", MAX_TEXT)?,
    })
}

fn rollback_from_json(v: &Value) -> Result<Rollback, String> {
    let o = Obj::new(v, "")?;
    let project = o.req_str("project", MAX_NAME)?;
    // A slug is canonicalized; anything without a slash is a project key.
    let project = if project.contains('/') {
        canonical_slug(&project).map_err(|m| o.err("project", &m))?
    } else {
        project
    };
    Ok(Rollback {
        id: o.opt_str("id", MAX_ID)?,
        project,
        env: o.opt_str("env", MAX_NAME)?,
        env_type: o.opt_str("env_type", MAX_NAME)?,
        production: o.opt_bool("production")?.unwrap_or(false),
        operation_type: o.opt_str("operation_type", MAX_NAME)?,
        service: o.opt_str("service", MAX_NAME)?,
        service_type: o.opt_str("service_type", MAX_NAME)?,
        origin_service: o.opt_object_text("origin_service")?,
        update_service: o.opt_object_text("update_service")?,
        create_by: o.opt_object_text("create_by")?,
        created_at: o.req_time("created_at")?,
    })
}

/// A run or job cannot stop before it started, nor before it was created (a job's
/// `created_at` defaults to its run's). Starting before its creation is allowed: CI systems
/// report queue times that way around when clocks differ.
fn check_order(
    o: &Obj,
    created: i64,
    started: Option<i64>,
    stopped: Option<i64>,
) -> Result<(), String> {
    match (started, stopped) {
        (Some(a), Some(b)) if b < a => Err(o.err("stopped_at", "is before started_at").into()),
        (_, Some(b)) if b < created => Err(o.err("stopped_at", "is before created_at").into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_of(body: &str) -> String {
        parse_runs(body.as_bytes(), false).unwrap_err().to_string()
    }

    const MINIMAL: &str = r#"{"id":"1","project":"acme/api","workflow":"ci","status":"success","created_at":"2026-01-01T00:00:00Z"}"#;

    #[test]
    fn minimal_run_defaults() {
        let runs = parse_runs(MINIMAL.as_bytes(), false).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].project, "gh/acme/api");
        assert_eq!(runs[0].created_at, 1_767_225_600_000);
        assert_eq!(runs[0].credits_used, 0);
    }

    #[test]
    fn slugs() {
        assert_eq!(canonical_slug("github/a/b").unwrap(), "gh/a/b");
        assert_eq!(canonical_slug("bitbucket/a/b").unwrap(), "bb/a/b");
        assert_eq!(canonical_slug("gitlab/g/sub/r").unwrap(), "gl/g/sub/r");
        assert_eq!(canonical_slug("a/b").unwrap(), "gh/a/b");
        assert!(canonical_slug("gh/a/b/c").is_err());
        assert!(canonical_slug("svn/a/b").is_err());
        assert!(canonical_slug("gh//b").is_err());
        assert!(canonical_slug("b").is_err());
    }

    #[test]
    fn errors_name_item_and_field() {
        let body = format!(
            "[{MINIMAL}, {}]",
            MINIMAL.replace(
                r#""status":"success""#,
                r#""status":"success","jobs":[{"name":"b","status":"done"}]"#
            )
        );
        let e = err_of(&body);
        assert!(
            e.starts_with("item 1: field \"jobs[0].status\": unknown value \"done\""),
            "{e}"
        );
        assert!(err_of(&MINIMAL.replace("\"id\":\"1\",", "")).contains("field \"id\": is required"));
        assert!(
            err_of(&MINIMAL.replace("\"2026-01-01T00:00:00Z\"", "\"tomorrow\""))
                .contains("field \"created_at\"")
        );
        assert!(err_of(&MINIMAL.replace("\"1\"", "1")).contains("field \"id\": expected a string"));
        let order = MINIMAL.replace(
            r#""created_at""#,
            r#""started_at":100,"stopped_at":99,"created_at""#,
        );
        assert!(err_of(&order).contains("field \"stopped_at\": is before started_at"));
    }

    #[test]
    fn ndjson_items_are_numbered() {
        let body = format!("{MINIMAL}\n\n{}\n", MINIMAL.replace("success", "bogus"));
        let e = parse_runs(body.as_bytes(), true).unwrap_err().to_string();
        assert!(e.starts_with("item 1 (line 3): field \"status\""), "{e}");
    }
}
