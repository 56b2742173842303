//! `GET /openapi.json` (docs/operations.md, "OpenAPI"): the document names exactly the paths of
//! the routing table's own list of templates, and each of them is routed by the daemon with
//! (at least) the methods the document gives it.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::common::{create_token, Daemon};
use pipestat::hooks::ROUTE_TEMPLATES;

/// The document as it is in the source tree, parsed: it must be JSON.
fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/server/openapi.json");
    let text = std::fs::read_to_string(path).expect("src/server/openapi.json");
    serde_json::from_str(&text).expect("src/server/openapi.json is JSON")
}

#[test]
fn the_document_is_openapi_3_1_and_served_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    create_token(dir.path(), "reader", "read");
    let d = Daemon::start_in(dir, &[]);
    // A database with a token: every statistics route needs one, this document does not.
    assert_eq!(d.get("/api/v1/runs").status, 401);
    let a = d.get("/openapi.json");
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body, document());
    assert_eq!(a.body["openapi"], "3.1.0");
    assert_eq!(d.call("POST", "/openapi.json", &[], Some(b"")).status, 405);
    let resp = ureq::get(&format!("{}/openapi.json", d.base))
        .call()
        .unwrap();
    assert_eq!(resp.header("Content-Type"), Some("application/json"));
}

#[test]
fn the_document_names_every_routed_path_and_no_other() {
    let doc = document();
    let documented: BTreeSet<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .map(String::as_str)
        .collect();
    let routed: BTreeSet<&str> = ROUTE_TEMPLATES.iter().copied().collect();
    assert_eq!(routed.len(), ROUTE_TEMPLATES.len(), "a template twice");
    let missing: Vec<_> = routed.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&routed).collect();
    assert!(
        missing.is_empty(),
        "routed, not in openapi.json: {missing:?}"
    );
    assert!(extra.is_empty(), "in openapi.json, not routed: {extra:?}");
    // Every $ref points at something in the document.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/").skip(1) {
        let target = &r[..r.find('"').unwrap()];
        let mut at = &doc;
        for part in target.split('/') {
            at = &at[part];
        }
        assert!(!at.is_null(), "unresolved $ref #/{target}");
    }
}

/// A path of a template, each parameter given a sample value (a slug where one is expected).
fn sample(t: &str) -> String {
    let segs: Vec<&str> = t
        .split('/')
        .map(|s| match s {
            "{project-slug}" | "{project}" | "{slug}" => "gh/acme/api",
            "{org-slug}" => "gh/acme",
            "{org}" => "all",
            "{env}" => "runs",
            s if s.starts_with('{') => "x",
            s => s,
        })
        .collect();
    segs.join("/")
}

#[test]
fn every_documented_path_is_routed_with_its_methods() {
    let doc = document();
    let d = Daemon::start(&[]);
    // A method no route takes: a routed path answers 405 with the methods it serves, before
    // anything else is looked at; a path no route serves answers 404.
    for (template, item) in doc["paths"].as_object().unwrap() {
        let path = sample(template);
        let a = d.call("PATCH", &path, &[], None);
        assert_eq!(a.status, 405, "{template} as {path}: {}", a.text);
        let allow = a.allow.unwrap_or_default();
        let allowed: Vec<&str> = allow.split(", ").collect();
        for method in item.as_object().unwrap().keys() {
            let m = method.to_ascii_uppercase();
            assert!(
                allowed.contains(&m.as_str()),
                "{template}: {m} not in {allow:?}"
            );
        }
    }
}
