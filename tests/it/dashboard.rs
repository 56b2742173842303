//! The dashboard (docs/dashboard.md): HTML pages through the real binary, their headers, auth,
//! errors, and figures equal to the JSON API's answers.

use std::collections::HashMap;

use base64::Engine;
use serde_json::Value;

use crate::common::{create_token, Daemon};

const NOW: &str = "2026-03-10T12:00:00Z";

/// A page as a browser gets it: status, the headers that matter here, the body.
struct Page {
    status: u16,
    content_type: String,
    csp: Option<String>,
    www_authenticate: Option<String>,
    body: String,
}

fn page(d: &Daemon, path: &str, auth: Option<&str>) -> Page {
    let mut req = ureq::get(&format!("{}{path}", d.base));
    if let Some(a) = auth {
        req = req.set("Authorization", a);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    Page {
        status: resp.status(),
        content_type: resp.header("Content-Type").unwrap_or("").to_owned(),
        csp: resp.header("Content-Security-Policy").map(str::to_owned),
        www_authenticate: resp.header("WWW-Authenticate").map(str::to_owned),
        body: resp.into_string().unwrap(),
    }
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A figure on a page: its data-metric, data-value, data-api and data-pointer.
#[derive(Debug)]
struct Figure {
    metric: String,
    value: String,
    api: String,
    pointer: String,
}

/// The figures of a page, in page order. A figure in a chart's table names no API: the
/// table's `data-api` is its.
fn figures(html: &str) -> Vec<Figure> {
    let re = regex::Regex::new(
        r#"<table class="nums" data-api="([^"]*)"|data-metric="([^"]*)" data-value="([^"]*)"(?: data-api="([^"]*)")? data-pointer="([^"]*)""#,
    )
    .unwrap();
    let mut table_api = String::new();
    let mut out = Vec::new();
    for c in re.captures_iter(html) {
        if let Some(api) = c.get(1) {
            table_api = unescape(api.as_str());
            continue;
        }
        out.push(Figure {
            metric: unescape(&c[2]),
            value: unescape(&c[3]),
            api: c
                .get(4)
                .map_or_else(|| table_api.clone(), |a| unescape(a.as_str())),
            pointer: unescape(&c[5]),
        });
    }
    out
}

/// The values of the figures named `metric`, in page order.
fn values(html: &str, metric: &str) -> Vec<String> {
    figures(html)
        .into_iter()
        .filter(|f| f.metric == metric)
        .map(|f| f.value)
        .collect()
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Runs of one project on `main` (the default branch) and one on a feature branch, in the
/// week before NOW; the last one deploys to production.
fn history(d: &Daemon) {
    let run = |id: &str, branch: &str, status: &str, day: u32, secs: u32, jobs: &str| {
        format!(
            r#"{{"id":"{id}","project":"gh/acme/api","workflow":"ci","default_branch":"main","branch":"{branch}","status":"{status}","created_at":"2026-03-{day:02}T10:00:00Z","started_at":"2026-03-{day:02}T10:00:00Z","stopped_at":"2026-03-{day:02}T10:{:02}:{:02}Z","commit":"c{id}","committed_at":"2026-03-{day:02}T09:00:00Z","detail_url":"https://ci.example.com/runs/{id}","jobs":[{jobs}]}}"#,
            secs / 60,
            secs % 60
        )
    };
    let job = |status: &str, day: u32, secs: u32| {
        format!(
            r#"{{"name":"build","status":"{status}","started_at":"2026-03-{day:02}T10:00:00Z","stopped_at":"2026-03-{day:02}T10:{:02}:{:02}Z"}}"#,
            secs / 60,
            secs % 60
        )
    };
    let deploy = r#"{"name":"deploy","kind":"deploy","production":true,"service":"api","status":"success","created_at":"2026-03-08T10:00:00Z","started_at":"2026-03-08T10:00:00Z","stopped_at":"2026-03-08T10:01:00Z"}"#;
    d.post_runs(&[
        // main: 60 s, 120 s and 180 s; two succeed, one fails.
        run("1", "main", "success", 5, 60, &job("success", 5, 50)),
        run("2", "main", "failed", 6, 120, &job("failed", 6, 100)),
        run("3", "main", "success", 8, 180, deploy),
        // A feature branch: counted only with branch=all or branch=feature.
        run("4", "feature", "success", 7, 240, &job("success", 7, 200)),
    ]);
}

#[test]
fn pages_are_html_with_csp_and_figures_of_the_api() {
    let d = Daemon::start(&["--now", NOW]);
    history(&d);
    for path in [
        "/",
        "/projects/gh/acme/api",
        "/projects/gh%2Facme%2Fapi",
        "/projects/gh/acme/api/workflows/ci",
        "/?window=7&branch=all",
        "/projects/gh/acme/api?window=90&branch=feature&service=api",
    ] {
        let p = page(&d, path, None);
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        assert_eq!(p.content_type, "text/html; charset=utf-8", "{path}");
        assert_eq!(p.csp.as_deref(), Some("default-src 'self'"), "{path}");
        assert!(p.body.starts_with("<!doctype html>"), "{path}");
        // Nothing inline that the policy would block.
        assert!(!p.body.contains("<script"), "{path}");
        assert!(!p.body.contains("style="), "{path}");
    }
    // The stylesheet's address carries its digest, since it is cached for a year.
    let index = page(&d, "/", None).body;
    let href = regex::Regex::new(
        r#"<link rel="stylesheet" href="(/assets/pipestat\.css\?v=[0-9a-f]{12})">"#,
    )
    .unwrap()
    .captures(&index)
    .expect("a stylesheet link")[1]
        .to_owned();
    let css = page(&d, &href, None);
    assert_eq!(css.status, 200);
    assert_eq!(css.content_type, "text/css; charset=utf-8");
    assert!(css.body.contains("prefers-color-scheme: dark"));

    // Hand-worked, default branch (main): 3 runs, 2 successes → 2/3; durations 60, 120, 180 s
    // → median 120 s.
    assert_eq!(values(&index, "workflow.total_runs"), ["3"]);
    let rate: f64 = values(&index, "workflow.success_rate")[0].parse().unwrap();
    assert!((rate - 2.0 / 3.0).abs() < 1e-12, "{rate}");
    assert_eq!(values(&index, "workflow.p50_duration_secs"), ["120"]);
    // All branches: 4 runs, 3 successes.
    let all = page(&d, "/?branch=all", None).body;
    assert_eq!(values(&all, "workflow.total_runs"), ["4"]);
    assert_eq!(values(&all, "workflow.success_rate"), ["0.75"]);
    // One production deployment in the window.
    assert_eq!(values(&index, "dora.deployments"), ["1"]);

    // The same figures as the JSON API answers for the same window and branch.
    let api = d.get_ok("/api/v2/insights/gh/acme/api/workflows?reporting-window=last-30-days");
    let m = &api["items"][0]["metrics"];
    assert_eq!(
        values(&index, "workflow.total_runs")[0],
        m["total_runs"].to_string()
    );
    assert_eq!(
        values(&index, "workflow.success_rate")[0],
        m["success_rate"].to_string()
    );
    assert_eq!(
        values(&index, "workflow.mttr_secs")[0],
        m["mttr"].to_string()
    );
    let dora = d.get_ok("/api/v1/dora?project=gh/acme/api&days=90");
    let project = page(&d, "/projects/gh/acme/api?window=90", None).body;
    assert_eq!(
        values(&project, "dora.lead_time.p50_s"),
        [dora["lead_time"]["p50_s"].to_string()]
    );
    assert_eq!(
        values(&project, "dora.deployment_frequency.deployments"),
        [dora["deployment_frequency"]["deployments"].to_string()]
    );
    // The run that deployed is linked to its page in the CI system.
    assert!(project.contains(r#"href="https://ci.example.com/runs/3""#));

    // Every figure on every page equals the API's answer at the place it names.
    let mut answers: HashMap<String, Value> = HashMap::new();
    let mut checked = 0;
    for path in [
        "/",
        "/projects/gh/acme/api?window=90",
        "/projects/gh/acme/api/workflows/ci?window=7&branch=all",
    ] {
        let html = page(&d, path, None).body;
        for f in figures(&html) {
            let answer = answers
                .entry(f.api.clone())
                .or_insert_with(|| d.get_ok(&f.api));
            let at = answer.pointer(&f.pointer).unwrap_or(&Value::Null);
            match as_number(at) {
                Some(x) => {
                    let v: f64 = f.value.parse().unwrap_or_else(|_| panic!("{f:?}"));
                    assert_eq!(v, x, "{path}: {f:?}");
                }
                None => assert_eq!(f.value, "null", "{path}: {f:?} vs {at}"),
            }
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} figures");
}

#[test]
fn an_empty_database_shows_how_to_send_the_first_run() {
    let d = Daemon::start(&[]);
    let p = page(&d, "/", None);
    assert_eq!(p.status, 200);
    let host = d.base.trim_start_matches("http://");
    assert!(p.body.contains(&format!("http://{host}/webhooks/github")));
    assert!(p.body.contains(&format!("http://{host}/webhooks/gitlab")));
    // The curl line works: send its body where it says.
    let body = unescape(&p.body);
    let curl = body
        .lines()
        .find(|l| l.contains("curl -X POST"))
        .expect("a curl line");
    assert!(curl.contains(&format!("{}/api/v1/runs", d.base)), "{curl}");
    let json = curl
        .split(" -d '")
        .nth(1)
        .unwrap()
        .trim_end_matches("</code></pre>");
    let json = json.strip_suffix('\'').unwrap();
    let a = d.post_json("/api/v1/runs", json);
    assert_eq!(a.status, 200, "{}", a.text);
    let after = page(&d, "/", None).body;
    assert!(after.contains("gh/acme/api"));
    assert!(!after.contains("No runs yet"));
}

#[test]
fn pages_need_the_read_scope_and_ask_browsers_for_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let reader = create_token(dir.path(), "dash", "read");
    let ingester = create_token(dir.path(), "ci", "ingest");
    let d = Daemon::start_in(dir, &[]);
    let basic = |t: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{t}:"))
        )
    };
    for path in ["/", "/projects/gh/acme/api"] {
        let p = page(&d, path, None);
        assert_eq!(p.status, 401, "{path}");
        assert_eq!(
            p.www_authenticate.as_deref(),
            Some("Basic realm=\"pipestat\""),
            "{path}"
        );
        assert_eq!(p.content_type, "text/html; charset=utf-8");
        assert_eq!(p.csp.as_deref(), Some("default-src 'self'"));
        assert!(p.body.contains("token"));
    }
    assert_eq!(page(&d, "/", Some(&basic("ps_wrong"))).status, 401);
    let p = page(&d, "/", Some(&basic(&ingester)));
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.www_authenticate.is_none());
    let p = page(&d, "/", Some(&basic(&reader)));
    assert_eq!(p.status, 200, "{}", p.body);
    let p = page(&d, "/", Some(&format!("Bearer {reader}")));
    assert_eq!(p.status, 200);
    // The stylesheet holds nothing secret: a browser may ask for it before it sends credentials.
    assert_eq!(page(&d, "/assets/pipestat.css", None).status, 200);
}

#[test]
fn bad_controls_and_unknown_pages_get_html_errors() {
    let mut d = Daemon::start(&["--now", NOW]);
    history(&d);
    for (path, status, words) in [
        ("/?window=5", 400, "window"),
        ("/?window=", 400, "window"),
        ("/projects/gh/acme/api?window=30days", 400, "window"),
        ("/?bogus=1", 400, "bogus"),
        ("/?service=api", 400, "service"),
        ("/projects/gh/acme/api?branch=%01", 400, "branch"),
        ("/projects/gh/acme/nothing", 404, "not found"),
        ("/projects/gh/acme/api/workflows/nope", 404, "nope"),
        ("/assets/other.css", 404, "no page"),
        ("/projects", 404, "no page"),
    ] {
        let p = page(&d, path, None);
        assert_eq!(p.status, status, "{path}: {}", p.body);
        assert_eq!(p.content_type, "text/html; charset=utf-8", "{path}");
        assert_eq!(p.csp.as_deref(), Some("default-src 'self'"), "{path}");
        assert!(
            p.body.to_lowercase().contains(&words.to_lowercase()),
            "{path}: {}",
            p.body
        );
    }
    let a = d.call("POST", "/", &[("Content-Type", "text/plain")], Some(b"x"));
    assert_eq!(a.status, 405);
    assert_eq!(a.allow.as_deref(), Some("GET"));
    // The daemon keeps serving.
    assert_eq!(page(&d, "/", None).status, 200);
    d.token = None;
}

#[test]
fn names_are_escaped() {
    let d = Daemon::start(&["--now", NOW]);
    d.post_runs(&[r#"{"id":"x","project":"gh/acme/api","workflow":"<script>alert(1)</script>","branch":"main","status":"success","created_at":"2026-03-09T10:00:00Z","stopped_at":"2026-03-09T10:01:00Z"}"#.to_owned()]);
    for path in ["/", "/projects/gh/acme/api"] {
        let body = page(&d, path, None).body;
        assert!(!body.contains("<script>"), "{path}");
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}"
        );
    }
}

/// Random controls and path segments on every page: never a 5xx, always an HTML page with the
/// CSP, 200 or a 4xx page that says what was wrong.
#[test]
fn random_controls_get_a_page_or_a_clear_error() {
    let d = Daemon::start(&["--demo", "--now", "2026-03-01T12:00:00Z"]);
    let mut g = crate::common::Lcg(28);
    let routes = [
        "/",
        "/projects/gh/acme/api",
        "/projects/gh%2Facme%2Fapi",
        "/projects/{x}/{x}/{x}",
        "/projects/gh/acme/api/workflows/{x}",
        "/projects/gh/acme/api/workflows/build-test",
    ];
    let params = ["window", "branch", "service", "x", "reporting-window"];
    let values = [
        "",
        "7",
        "30",
        "90",
        "0",
        "-1",
        "1e309",
        "all",
        "main",
        "api",
        "%00",
        "%01",
        "%FF",
        "%27",
        "%3Cb%3E",
        "a%2Fb",
        "build-test",
        "x%20y",
    ];
    let (mut ok, mut refused) = (0, 0);
    for i in 0..300 {
        let mut path = g.pick(&routes).to_owned();
        while path.contains("{x}") {
            let v = match g.pick(&values) {
                "" => "x",
                v => v,
            };
            path = path.replacen("{x}", v, 1);
        }
        let query: Vec<String> = (0..g.next(4))
            .map(|_| format!("{}={}", g.pick(&params), g.pick(&values)))
            .collect();
        let url = format!("{path}?{}", query.join("&"));
        let p = page(&d, &url, None);
        assert!(
            p.status < 500,
            "request {i}: {url}: {} {}",
            p.status,
            p.body
        );
        assert_eq!(p.content_type, "text/html; charset=utf-8", "{url}");
        assert_eq!(p.csp.as_deref(), Some("default-src 'self'"), "{url}");
        match p.status {
            200 => ok += 1,
            _ => {
                assert!(p.body.contains("class=\"error\""), "{url}: {}", p.body);
                refused += 1
            }
        }
    }
    assert!(ok > 50 && refused > 50, "200: {ok}, 4xx: {refused}");
    assert_eq!(page(&d, "/", None).status, 200);
}
