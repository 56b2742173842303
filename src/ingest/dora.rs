//! Payload → domain for the inputs of DORA (docs/dora.md): `POST /api/v1/pushes` and
//! `POST /api/v1/incidents` bodies, and the lines of an issue's text that link an incident to
//! its cause. No SQL and no HTTP here; every refusal names the item and the field.

use std::collections::HashMap;

use serde_json::Value;

use super::native::{canonical_slug, ndjson_lines, parse_json};
use crate::error::{Error, Result};
use crate::ingest::fields::{Obj, MAX_ID, MAX_NAME, MAX_URL};
use crate::model::{Commit, Incident, Push};

/// Most commits in one push.
const MAX_COMMITS: usize = 10_000;

/// The items of a body: one object, a JSON array of them, or NDJSON, each converted by `item`
/// and refused with its 0-based index.
fn items<T>(
    body: &[u8],
    ndjson: bool,
    what: &str,
    item: fn(&Value) -> Result<T, String>,
) -> Result<Vec<T>> {
    let at = |i: usize| move |m: String| Error::bad(format!("item {i}: {m}"));
    let out: Vec<T> = if ndjson {
        let mut out = Vec::new();
        for (index, line_no, line) in ndjson_lines(body) {
            // Items count from 0 and lines from 1, as for runs.
            let refuse = |m: String| Error::bad(format!("item {index} (line {line_no}): {m}"));
            let v = parse_json(line).map_err(refuse)?;
            out.push(item(&v).map_err(refuse)?);
        }
        out
    } else {
        match parse_json(body).map_err(Error::BadRequest)? {
            Value::Array(values) => values
                .iter()
                .enumerate()
                .map(|(i, v)| item(v).map_err(at(i)))
                .collect::<Result<_>>()?,
            v @ Value::Object(_) => vec![item(&v).map_err(at(0))?],
            _ => {
                return Err(Error::bad(format!(
                    "body must be a {what} object, an array of them, or NDJSON"
                )))
            }
        }
    };
    if out.is_empty() {
        return Err(Error::bad(format!("body holds no {what}")));
    }
    Ok(out)
}

/// Parses a `POST /api/v1/pushes` body.
pub fn parse_pushes(body: &[u8], ndjson: bool) -> Result<Vec<Push>> {
    items(body, ndjson, "push", push_from_json)
}

/// Parses a `POST /api/v1/incidents` body.
pub fn parse_incidents(body: &[u8], ndjson: bool) -> Result<Vec<Incident>> {
    items(body, ndjson, "incident", incident_from_json)
}

fn project(o: &Obj) -> Result<String, String> {
    let slug = o.req_str("project", MAX_NAME)?;
    canonical_slug(&slug).map_err(|m| o.err("project", &m).into())
}

fn push_from_json(v: &Value) -> Result<Push, String> {
    let o = Obj::new(v, "")?;
    let project = project(&o)?;
    let items = o
        .opt_objects("commits", MAX_COMMITS)?
        .ok_or_else(|| o.err("commits", "is required"))?;
    if items.is_empty() {
        return Err(o.err("commits", "must hold at least one commit").into());
    }
    let mut commits = Vec::with_capacity(items.len());
    let mut seen = HashMap::with_capacity(items.len());
    for (i, c) in items.iter().enumerate() {
        let sha = c.req_str("sha", MAX_ID)?;
        if let Some(first) = seen.insert(sha.clone(), i) {
            return Err(c
                .err(
                    "sha",
                    &format!("{sha:?} is also the sha of commits[{first}]"),
                )
                .into());
        }
        commits.push(Commit {
            committed_at: c.req_time("committed_at")?,
            sha,
        });
    }
    Ok(Push {
        project,
        branch: o.req_str("branch", MAX_NAME)?,
        pushed_at: o.req_time("pushed_at")?,
        commits,
    })
}

fn incident_from_json(v: &Value) -> Result<Incident, String> {
    let o = Obj::new(v, "")?;
    let started_at = o.req_time("started_at")?;
    let resolved_at = o.opt_time("resolved_at")?;
    if resolved_at.is_some_and(|r| r < started_at) {
        return Err(o.err("resolved_at", "is before started_at").into());
    }
    Ok(Incident {
        id: o.req_str("id", MAX_ID)?,
        project: project(&o)?,
        title: o.req_str("title", MAX_NAME)?,
        service: o.opt_str("service", MAX_NAME)?,
        env: o.opt_str("env", MAX_NAME)?,
        started_at,
        resolved_at,
        severity: o.opt_str("severity", MAX_NAME)?,
        url: o.opt_str("url", MAX_URL)?,
        deployment: o.opt_str("deployment", MAX_ID)?,
        commit: o.opt_str("commit", MAX_ID)?,
    })
}

/// What the lines of an issue's text say about its cause: `root cause: <sha>`,
/// `deployment: <run id>` and `service: <name>`, each anywhere in the text, on a line of its
/// own, the word in any case; the first of each wins.
#[derive(Debug, Default, PartialEq)]
pub struct Links {
    pub commit: Option<String>,
    pub deployment: Option<String>,
    pub service: Option<String>,
}

pub fn links(text: &str) -> Links {
    let mut links = Links::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once(':') else {
            continue;
        };
        let value = value.trim();
        let value = value.split_whitespace().next().unwrap_or("");
        if value.is_empty() || value.len() > MAX_ID {
            continue;
        }
        let slot = match key.trim().to_ascii_lowercase().as_str() {
            "root cause" => &mut links.commit,
            "deployment" => &mut links.deployment,
            "service" => &mut links.service,
            _ => continue,
        };
        slot.get_or_insert_with(|| value.to_owned());
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUSH: &str = r#"{"project":"acme/shop","branch":"main","pushed_at":"2026-03-01T10:00:00Z",
        "commits":[{"sha":"a1","committed_at":"2026-03-01T09:00:00Z"},{"sha":"b2","committed_at":1772355600}]}"#;

    fn err(body: &str, parse: fn(&[u8], bool) -> Result<Vec<Push>>) -> String {
        parse(body.as_bytes(), false).unwrap_err().to_string()
    }

    #[test]
    fn a_push_with_its_commits_in_order() {
        let pushes = parse_pushes(PUSH.as_bytes(), false).unwrap();
        assert_eq!(pushes[0].project, "gh/acme/shop");
        assert_eq!(pushes[0].commits[1].sha, "b2");
        // 1772355600 s = 2026-03-01T09:00:00Z.
        assert_eq!(pushes[0].commits[1].committed_at, 1_772_355_600_000);
    }

    #[test]
    fn push_errors_name_item_and_field() {
        let body = format!(
            "[{PUSH},{}]",
            PUSH.replace(r#""sha":"b2""#, r#""sha":"a1""#)
        );
        let e = err(&body, parse_pushes);
        assert!(
            e.starts_with("item 1: field \"commits[1].sha\": \"a1\" is also the sha of commits[0]"),
            "{e}"
        );
        let e = err(&PUSH.replace("09:00:00Z\"}", "soon\"}"), parse_pushes);
        assert!(
            e.contains("item 0: field \"commits[0].committed_at\""),
            "{e}"
        );
        let e = err(
            r#"{"project":"a/b","branch":"m","pushed_at":1,"commits":[]}"#,
            parse_pushes,
        );
        assert!(
            e.contains("field \"commits\": must hold at least one commit"),
            "{e}"
        );
        let one_line = PUSH.replace('\n', " ");
        let e = parse_pushes(format!("{one_line}\n{{}}\n").as_bytes(), true)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("item 1 (line 2): field \"project\": is required"),
            "{e}"
        );
    }

    #[test]
    fn incident_errors_name_item_and_field() {
        let ok = r#"{"id":"i1","project":"acme/shop","title":"down","started_at":"2026-03-01T10:00:00Z"}"#;
        assert_eq!(
            parse_incidents(ok.as_bytes(), false).unwrap()[0].resolved_at,
            None
        );
        let bad = ok.replace('}', r#","resolved_at":"2026-03-01T09:00:00Z"}"#);
        let e = parse_incidents(bad.as_bytes(), false)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "item 0: field \"resolved_at\": is before started_at");
        let e = parse_incidents(ok.replace("\"title\":\"down\",", "").as_bytes(), false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("field \"title\": is required"), "{e}");
    }

    #[test]
    fn links_from_an_issue_text() {
        let text = "Checkout fails.\r\n\r\nRoot cause: 1a2b3c (the cache change)\nDeployment: 42\nroot cause: other";
        assert_eq!(
            links(text),
            Links {
                commit: Some("1a2b3c".into()),
                deployment: Some("42".into()),
                service: None
            }
        );
        assert_eq!(links("no links here: none said"), Links::default());
    }
}
