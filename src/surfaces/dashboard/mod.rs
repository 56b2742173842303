//! The dashboard: HTML pages for people, beside the APIs (docs/dashboard.md).
//!
//! `/` (every project), `/projects/{slug}` and `/projects/{slug}/workflows/{name}`, and the
//! stylesheet at `/assets/pipestat.css`. Every figure on a page is read from the answer of a JSON
//! route, asked in-process through that route's own function (`Call::answer`): the dashboard
//! computes nothing of its own, it picks numbers out of answers and draws them. Each figure
//! carries `data-metric`, `data-value` (the number as the API answered it) and `data-api` with
//! `data-pointer` (the route and the JSON pointer it was read at), so a test can ask the API the
//! same question and compare. The markup is askama templates (`templates/`), escaped by default.

mod chart;

use askama::Template;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rusqlite::Connection;
use serde_json::Value;

use super::{apigee, circleci, dora, native, App};
use crate::error::{Error, Result};
use crate::http::{Method, Req, Resp};
use crate::store;
use chart::{Chart, Point};

/// The stylesheet, embedded in the binary.
const CSS: &str = include_str!("pipestat.css");
/// Sent with every page and error page: nothing but this daemon may be loaded.
const CSP: &str = "default-src 'self'";
const DAY_MS: i64 = 86_400_000;
/// Rows of the recent runs, recent deployments, slowest jobs and flaky tests tables.
const LIST_ROWS: usize = 15;
const MAX_NAME: usize = 1024;

/// Answers `/`, `/projects/…` and `/assets/…`; `segs` is the whole path.
pub fn route(app: &App, conn: &Connection, req: &Req, segs: &[&str]) -> Result<Resp> {
    let known = matches!(segs, [] | ["assets", "pipestat.css"] | ["projects", _, ..]);
    if !known {
        return Err(Error::NotFound(format!("no page at /{}", segs.join("/"))));
    }
    if req.method != Method::Get {
        return Err(Error::MethodNotAllowed("GET"));
    }
    match segs {
        ["assets", "pipestat.css"] => Ok(Resp {
            status: 200,
            content_type: "text/css; charset=utf-8",
            headers: vec![
                (
                    "Cache-Control",
                    "public, max-age=31536000, immutable".into(),
                ),
                ("Content-Security-Policy", CSP.into()),
            ],
            body: CSS.as_bytes().to_vec(),
        }),
        [] => html(index(app, conn, req, &Controls::parse(req, false)?)?.render()),
        ["projects", rest @ ..] => {
            let c = Controls::parse(req, true)?;
            match rest {
                [slug @ .., "workflows", name] if !slug.is_empty() => {
                    html(workflow_page(app, conn, &slug.join("/"), name, &c)?.render())
                }
                slug => html(project_page(app, conn, &slug.join("/"), &c)?.render()),
            }
        }
        _ => unreachable!("checked above"),
    }
}

/// The stylesheet's address in the pages: its content's digest in the query, so that a new
/// stylesheet is a new address for the browsers that keep the old one for a year.
fn css_href() -> &'static str {
    static HREF: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HREF.get_or_init(|| {
        use sha2::Digest;
        let d = sha2::Sha256::digest(CSS.as_bytes());
        let hex: String = d[..6].iter().map(|b| format!("{b:02x}")).collect();
        format!("/assets/pipestat.css?v={hex}")
    })
}

/// Whether a path is one of the dashboard's (its errors are HTML pages).
pub fn is_page(path: &str) -> bool {
    path == "/"
        || path == "/projects"
        || path.starts_with("/projects/")
        || path.starts_with("/assets/")
}

fn html(body: askama::Result<String>) -> Result<Resp> {
    let body = body.map_err(|e| Error::Internal(format!("rendering a page: {e}")))?;
    Ok(Resp {
        status: 200,
        content_type: "text/html; charset=utf-8",
        headers: vec![
            ("Content-Security-Policy", CSP.into()),
            ("Cache-Control", "no-store".into()),
        ],
        body: body.into_bytes(),
    })
}

/// An error as an HTML page, with the CSP; a 401 asks the browser for credentials (a token as
/// the user name of HTTP Basic).
pub fn error_page(e: &Error) -> Resp {
    let status = e.status();
    let page = ErrorPage {
        title: format!("{status} {}", reason(status)),
        message: e.to_string(),
        unauthorized: status == 401,
        controls: None,
    };
    let body = page
        .render()
        .unwrap_or_else(|_| format!("{status} {}", reason(status)));
    let mut headers = vec![("Content-Security-Policy", CSP.to_owned())];
    match e {
        Error::Unauthorized(_) => {
            headers.push(("WWW-Authenticate", "Basic realm=\"pipestat\"".into()))
        }
        Error::MethodNotAllowed(allow) => headers.push(("Allow", (*allow).to_owned())),
        Error::TooManyRequests(secs) | Error::StorageFull(secs) => {
            headers.push(("Retry-After", secs.to_string()))
        }
        _ => {}
    }
    Resp {
        status,
        content_type: "text/html; charset=utf-8",
        headers,
        body: body.into_bytes(),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad request",
        401 => "Token needed",
        403 => "Forbidden",
        404 => "Not found",
        405 => "Method not allowed",
        429 => "Too many requests",
        503 => "Unavailable",
        _ => "Error",
    }
}

// ---------------------------------------------------------------------------------------------
// Controls: the query parameters of a page.

#[derive(Clone, Debug, PartialEq)]
enum Branch {
    /// Each project's default branch.
    Default,
    All,
    Named(String),
}

struct Controls {
    /// 7, 30 or 90 days.
    window: u32,
    branch: Branch,
    /// The DORA service (project page only).
    service: Option<String>,
}

fn check_name(param: &str, v: &str) -> Result<()> {
    if v.len() > MAX_NAME || v.chars().any(char::is_control) {
        return Err(Error::bad(format!(
            "parameter \"{param}\": expected a name of 1 to {MAX_NAME} characters without control characters"
        )));
    }
    Ok(())
}

impl Controls {
    /// The page's parameters; anything else, or a bad value, is a 400. Empty values (an empty
    /// text box of the controls' form) are the default.
    fn parse(req: &Req, takes_service: bool) -> Result<Controls> {
        let mut c = Controls {
            window: 30,
            branch: Branch::Default,
            service: None,
        };
        for (k, v) in &req.query {
            match k.as_str() {
                "window" => {
                    c.window = match v.as_str() {
                        "7" => 7,
                        "30" => 30,
                        "90" => 90,
                        _ => {
                            return Err(Error::bad(format!(
                                "parameter \"window\": expected 7, 30 or 90 (days), got {v:?}"
                            )))
                        }
                    }
                }
                "branch" => {
                    check_name("branch", v)?;
                    c.branch = match v.as_str() {
                        "" => Branch::Default,
                        "all" => Branch::All,
                        b => Branch::Named(b.to_owned()),
                    }
                }
                "service" if takes_service => {
                    check_name("service", v)?;
                    c.service = (!v.is_empty()).then(|| v.clone());
                }
                other => {
                    let known = if takes_service {
                        "window, branch, service"
                    } else {
                        "window, branch"
                    };
                    return Err(Error::bad(format!(
                        "parameter {other:?}: not a control of this page (it takes {known})"
                    )));
                }
            }
        }
        Ok(c)
    }

    /// The query string that keeps these controls on a link (with `?`, or empty).
    fn query(&self, with_service: bool) -> String {
        let mut q = Vec::new();
        if self.window != 30 {
            q.push(format!("window={}", self.window));
        }
        match &self.branch {
            Branch::Default => {}
            Branch::All => q.push("branch=all".into()),
            Branch::Named(b) => q.push(format!("branch={}", enc(b))),
        }
        if with_service {
            if let Some(s) = &self.service {
                q.push(format!("service={}", enc(s)));
            }
        }
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }

    /// The CircleCI parameters of this window and branch scope.
    fn insights_query(&self) -> Vec<(String, String)> {
        let mut q = vec![(
            "reporting-window".to_owned(),
            format!("last-{}-days", self.window),
        )];
        match &self.branch {
            Branch::Default => {}
            Branch::All => q.push(("all-branches".into(), "true".into())),
            Branch::Named(b) => q.push(("branch".into(), b.clone())),
        }
        q
    }

    /// The controls' form, as the layout shows it.
    fn view(
        &self,
        action: String,
        with_service: bool,
        default_branch: Option<String>,
    ) -> ControlsView {
        ControlsView {
            action,
            windows: [7, 30, 90]
                .into_iter()
                .map(|w| (w, w == self.window))
                .collect(),
            branch: match &self.branch {
                Branch::Default => String::new(),
                Branch::All => "all".into(),
                Branch::Named(b) => b.clone(),
            },
            default_branch: default_branch.unwrap_or_else(|| "default".into()),
            with_service,
            service: self.service.clone().unwrap_or_default(),
        }
    }

    /// The `branch` of the runs lists: the one chosen, the default branch, or none for all.
    fn branch_of_runs(&self, default_branch: &Option<String>) -> Option<String> {
        match &self.branch {
            Branch::Default => default_branch.clone(),
            Branch::All => None,
            Branch::Named(b) => Some(b.clone()),
        }
    }

    fn branch_text(&self) -> String {
        match &self.branch {
            Branch::Default => "default branch".into(),
            Branch::All => "all branches".into(),
            Branch::Named(b) => format!("branch {b}"),
        }
    }
}

pub struct ControlsView {
    action: String,
    windows: Vec<(u32, bool)>,
    branch: String,
    default_branch: String,
    with_service: bool,
    service: String,
}

// ---------------------------------------------------------------------------------------------
// Asking the JSON routes.

/// Characters escaped in a path segment or query value of the links and API addresses.
const ENC: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, ENC).to_string()
}

/// A project's page, its slug's parts each escaped.
fn project_href(slug: &str) -> String {
    format!(
        "/projects/{}",
        slug.split('/').map(enc).collect::<Vec<_>>().join("/")
    )
}

#[derive(Clone, Copy)]
enum Family {
    /// `/api/v2/insights`
    Insights,
    /// `/api/v1/dora`
    Dora,
    /// `/api/v1/stats`
    Stats,
    /// `/api/v1`
    Native,
}

/// One question to a JSON route: the route's family, the path after its prefix, the query.
struct Call {
    family: Family,
    rest: Vec<String>,
    query: Vec<(String, String)>,
}

/// A route's answer and the address it answers at.
struct Answer {
    url: String,
    json: Value,
}

impl Call {
    fn new(family: Family, rest: &[&str], query: Vec<(String, String)>) -> Call {
        Call {
            family,
            rest: rest.iter().map(|s| (*s).to_owned()).collect(),
            query,
        }
    }

    /// The address of the same question over HTTP.
    fn url(&self) -> String {
        let prefix = match self.family {
            Family::Insights => "/api/v2/insights",
            Family::Dora => "/api/v1/dora",
            Family::Stats => "/api/v1/stats",
            Family::Native => "/api/v1",
        };
        let mut url = prefix.to_owned();
        for s in &self.rest {
            url.push('/');
            url.push_str(&enc(s));
        }
        if let Family::Stats = self.family {
            if self.rest.is_empty() {
                url.push('/');
            }
        }
        let q: Vec<String> = self
            .query
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        if !q.is_empty() {
            url.push('?');
            url.push_str(&q.join("&"));
        }
        url
    }

    /// The route's answer, from the function that answers it over HTTP.
    fn answer(&self, app: &App, conn: &Connection) -> Result<Answer> {
        let started = std::time::Instant::now();
        let req = Req {
            method: Method::Get,
            segments: Vec::new(),
            query: self.query.clone(),
            content_type: None,
            body: Default::default(),
            headers: Vec::new(),
            token: None,
        };
        let rest: Vec<&str> = self.rest.iter().map(String::as_str).collect();
        let resp = match self.family {
            Family::Insights => circleci::route(app, conn, &req, &rest)?,
            Family::Dora => dora::route(app, conn, &req, &rest)?,
            Family::Stats => apigee::route_native(app, conn, &req, &rest)?,
            Family::Native => native::route(app, conn, &req, &rest)?,
        };
        let json = serde_json::from_slice(&resp.body)
            .map_err(|e| Error::Internal(format!("reading {}: {e}", self.url())))?;
        log::debug!(
            "dashboard: {} in {:.1} ms",
            self.url(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(Answer {
            url: self.url(),
            json,
        })
    }
}

impl Answer {
    fn at(&self, pointer: &str) -> &Value {
        self.json.pointer(pointer).unwrap_or(&Value::Null)
    }

    fn text(&self, pointer: &str) -> String {
        match self.at(pointer) {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            v => v.to_string(),
        }
    }

    fn len(&self, pointer: &str) -> usize {
        self.at(pointer).as_array().map_or(0, Vec::len)
    }

    /// The figure at `pointer`, named `metric`, shown as `fmt` says.
    fn fig(&self, metric: impl Into<String>, pointer: String, fmt: Fmt) -> Fig {
        Fig::new(metric, self.at(&pointer), fmt, &self.url, pointer)
    }
}

// ---------------------------------------------------------------------------------------------
// Two route calls at once.

thread_local! {
    /// The worker thread's second read connection, on which `beside` asks a page's other half
    /// of its routes; opened on first use and kept, like the worker's own.
    static SIDE: std::cell::RefCell<Option<Connection>> = const { std::cell::RefCell::new(None) };
}

/// Runs `side` on another thread, on this worker's second read connection, while `main` runs
/// on `conn`, and returns both answers: a page's route calls that need nothing of each other
/// take the time of the longer half rather than of both (on a machine with a core to spare).
/// One thread and one connection more per worker at most; when the second connection cannot be
/// opened (a database without a file), `main` then `side` run on `conn`.
fn beside<A: Send, B>(
    conn: &Connection,
    side: impl FnOnce(&Connection) -> A + Send,
    main: impl FnOnce(&Connection) -> B,
) -> (A, B) {
    let other = SIDE.with(|s| s.borrow_mut().take()).or_else(|| {
        let path = conn.path().filter(|p| !p.is_empty())?;
        store::db::open_reader(std::path::Path::new(path))
            .map_err(|e| log::warn!("dashboard: a second read connection: {e}"))
            .ok()
    });
    let Some(other) = other else {
        let b = main(conn);
        return (side(conn), b);
    };
    let (a, b, other) = std::thread::scope(|s| {
        let handle = s.spawn(move || {
            let a = side(&other);
            (a, other)
        });
        let b = main(conn);
        match handle.join() {
            Ok((a, other)) => (a, b, other),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
    SIDE.with(|s| *s.borrow_mut() = Some(other));
    (a, b)
}

// ---------------------------------------------------------------------------------------------
// Figures.

/// How a figure reads.
#[derive(Clone, Copy)]
enum Fmt {
    Count,
    /// A fraction 0..1, shown in percent.
    Rate,
    /// Seconds, shown as a duration.
    Secs,
    /// A number with up to two decimals.
    Num,
}

/// A number on a page, as an API answered it.
pub struct Fig {
    metric: String,
    /// The number as the API wrote it (a JSON number, or the text of the Apigee surface's
    /// string values); `null` when the API answered none.
    value: String,
    /// As a person reads it.
    text: String,
    /// The route's address; a chart's table names it once for all its figures.
    api: String,
    pointer: String,
}

impl Fig {
    fn new(metric: impl Into<String>, v: &Value, fmt: Fmt, api: &str, pointer: String) -> Fig {
        let value = match v {
            Value::String(s) => s.clone(),
            v if v.is_number() => v.to_string(),
            _ => "null".into(),
        };
        let number = value.parse::<f64>().ok();
        let text = match number {
            None => "—".into(),
            Some(x) => match fmt {
                Fmt::Count => format!("{}", x.round() as i64),
                Fmt::Rate => format!("{:.1}%", x * 100.0),
                Fmt::Secs => duration(x),
                Fmt::Num => {
                    let t = format!("{x:.2}");
                    t.trim_end_matches('0').trim_end_matches('.').to_owned()
                }
            },
        };
        Fig {
            metric: metric.into(),
            value,
            text,
            api: api.to_owned(),
            pointer,
        }
    }

    fn number(&self) -> Option<f64> {
        self.value.parse().ok()
    }
}

/// Seconds as a person reads a duration: `45s`, `3m 12s`, `2h 5m`, `3d 4h`.
fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as i64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

// ---------------------------------------------------------------------------------------------
// The daily series: the Apigee surface's runs per day.

/// The window as whole UTC days ending today: the `timeRange` of the daily series, so that they
/// are answered from the rollups (docs/apigee.md, "The fast path").
fn time_range(app: &App, days: u32) -> String {
    let today = app.now_ms().div_euclid(DAY_MS) * DAY_MS;
    let start = today - (days as i64 - 1) * DAY_MS;
    let end = today + DAY_MS;
    format!("{}~{}", apigee_time(start), apigee_time(end))
}

fn apigee_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:02}/{:02}/{:04} 00:00",
        t.month() as u8,
        t.day(),
        t.year()
    )
}

fn day_label(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", t.year(), t.month() as u8, t.day())
}

/// The daily series of runs (and failed runs) per value of `dimension`, all branches (the
/// rollups the fast path reads have no branch), oldest day first.
fn daily_runs(
    app: &App,
    conn: &Connection,
    dimension: &str,
    project: Option<&str>,
    days: u32,
) -> Result<Answer> {
    let mut q = vec![
        ("facts".to_owned(), "runs".to_owned()),
        ("select".into(), "run_count,sum(is_error)".into()),
        ("timeUnit".into(), "day".into()),
        ("tsAscending".into(), "true".into()),
        ("timeRange".into(), time_range(app, days)),
    ];
    if let Some(p) = project {
        q.insert(0, ("project".into(), p.to_owned()));
    }
    Call::new(Family::Stats, &[dimension], q).answer(app, conn)
}

/// The index of a dimension value in a Stats answer.
fn dimension_index(a: &Answer, name: &str) -> Option<usize> {
    a.at("/environments/0/dimensions")
        .as_array()?
        .iter()
        .position(|d| d["name"] == name)
}

/// A bar chart of a dimension value's daily runs, with its failed runs over them.
fn runs_chart(
    a: &Answer,
    name: &str,
    id: String,
    title: String,
    size: (u32, u32),
    kind: &'static str,
) -> Option<Chart> {
    let i = dimension_index(a, name)?;
    let base = format!("/environments/0/dimensions/{i}/metrics");
    let n = a.len(&format!("{base}/0/values"));
    let points = (0..n)
        .map(|d| Point {
            label: day_label(
                a.at(&format!("{base}/0/values/{d}/timestamp"))
                    .as_i64()
                    .unwrap_or(0),
            ),
            figs: vec![
                a.fig("runs", format!("{base}/0/values/{d}/value"), Fmt::Count),
                a.fig(
                    "failed_runs",
                    format!("{base}/1/values/{d}/value"),
                    Fmt::Count,
                ),
            ],
        })
        .collect::<Vec<_>>();
    let desc = format!(
        "Runs per UTC day over {n} days, all branches, failed runs (failed, error, timeout) drawn over them."
    );
    Some(chart::bars(
        id,
        title,
        desc,
        kind,
        size,
        vec!["day", "runs", "failed"],
        points,
    ))
}

// ---------------------------------------------------------------------------------------------
// Rows shared by the pages.

/// A workflow's figures (CircleCI's workflow metrics) and its daily runs.
pub struct WfRow {
    name: String,
    href: String,
    runs: Fig,
    success_rate: Fig,
    p50: Fig,
    p95: Fig,
    throughput: Fig,
    mttr: Fig,
    trend: Option<Chart>,
}

fn workflow_rows(
    wfs: &Answer,
    daily: Option<&Answer>,
    slug: &str,
    c: &Controls,
    id_prefix: &str,
) -> Vec<WfRow> {
    (0..wfs.len("/items"))
        .map(|i| {
            let name = wfs.text(&format!("/items/{i}/name"));
            let m = |field: &str| format!("/items/{i}/metrics/{field}");
            let metric = |f: &str| format!("workflow.{f}");
            WfRow {
                href: format!(
                    "{}/workflows/{}{}",
                    project_href(slug),
                    enc(&name),
                    c.query(false)
                ),
                runs: wfs.fig(metric("total_runs"), m("total_runs"), Fmt::Count),
                success_rate: wfs.fig(metric("success_rate"), m("success_rate"), Fmt::Rate),
                p50: wfs.fig(
                    metric("p50_duration_secs"),
                    m("duration_metrics/median"),
                    Fmt::Secs,
                ),
                p95: wfs.fig(
                    metric("p95_duration_secs"),
                    m("duration_metrics/p95"),
                    Fmt::Secs,
                ),
                throughput: wfs.fig(metric("throughput"), m("throughput"), Fmt::Num),
                mttr: wfs.fig(metric("mttr_secs"), m("mttr"), Fmt::Secs),
                trend: daily.and_then(|d| {
                    runs_chart(
                        d,
                        &name,
                        format!("{id_prefix}-wf{i}"),
                        format!("{name}: runs per day"),
                        (120, 24),
                        "spark",
                    )
                }),
                name,
            }
        })
        .collect()
}

/// A run in a list, linked to its page in the CI system (`detail_url`), or to its JSON here.
pub struct RunLink {
    id: String,
    href: String,
    external: bool,
    workflow: String,
    branch: String,
    status: String,
    status_class: &'static str,
    created_at: String,
}

/// An RFC 3339 UTC time of the API to the minute: `2026-03-01 10:04 UTC`.
fn short_time(t: &str) -> String {
    match (t.get(..10), t.get(11..16)) {
        (Some(day), Some(hm)) if t.ends_with('Z') => format!("{day} {hm} UTC"),
        _ => t.to_owned(),
    }
}

fn status_class(s: &str) -> &'static str {
    match s {
        "success" => "st-ok",
        "failed" | "error" | "timeout" => "st-bad",
        "running" | "queued" | "waiting" => "st-run",
        _ => "st-other",
    }
}

fn run_links(runs: &Answer, slug: &str) -> Vec<RunLink> {
    (0..runs.len("/items"))
        .map(|i| {
            let f = |k: &str| runs.text(&format!("/items/{i}/{k}"));
            let id = f("id");
            let detail = f("detail_url");
            let (href, external) = if detail.is_empty() {
                (format!("/api/v1/runs/{}/{}", enc(slug), enc(&id)), false)
            } else {
                (detail, true)
            };
            let status = f("status");
            RunLink {
                status_class: status_class(&status),
                href,
                external,
                workflow: f("workflow"),
                branch: f("branch"),
                created_at: short_time(&f("created_at")),
                status,
                id,
            }
        })
        .collect()
}

/// A job's figures (CircleCI's job metrics).
pub struct JobRow {
    workflow: String,
    name: String,
    runs: Fig,
    success_rate: Fig,
    p50: Fig,
    p95: Fig,
}

fn job_rows(jobs: &Answer, workflow: &str) -> Vec<JobRow> {
    (0..jobs.len("/items"))
        .map(|i| {
            let m = |field: &str| format!("/items/{i}/metrics/{field}");
            JobRow {
                workflow: workflow.to_owned(),
                name: jobs.text(&format!("/items/{i}/name")),
                runs: jobs.fig("job.total_runs", m("total_runs"), Fmt::Count),
                success_rate: jobs.fig("job.success_rate", m("success_rate"), Fmt::Rate),
                p50: jobs.fig(
                    "job.p50_duration_secs",
                    m("duration_metrics/median"),
                    Fmt::Secs,
                ),
                p95: jobs.fig(
                    "job.p95_duration_secs",
                    m("duration_metrics/p95"),
                    Fmt::Secs,
                ),
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// `/`

#[derive(Template)]
#[template(path = "index.html")]
struct IndexPage {
    title: String,
    controls: Option<ControlsView>,
    window: u32,
    branch_text: String,
    projects: Vec<ProjectCard>,
    empty: Option<Empty>,
}

pub struct ProjectCard {
    slug: String,
    href: String,
    deployments: Fig,
    deploy_days_per_week: Fig,
    change_failure_rate: Fig,
    dora_missing: String,
    workflows: Vec<WfRow>,
    spark: Option<Chart>,
}

/// How to send the first run.
pub struct Empty {
    base: String,
    curl: String,
}

fn index(app: &App, conn: &Connection, req: &Req, c: &Controls) -> Result<IndexPage> {
    let pipelines = Call::new(Family::Native, &["pipelines"], Vec::new()).answer(app, conn)?;
    let mut slugs: Vec<String> = Vec::new();
    for i in 0..pipelines.len("/items") {
        let s = pipelines.text(&format!("/items/{i}/project"));
        if !slugs.contains(&s) {
            slugs.push(s);
        }
    }
    // Half the projects' cards on the second connection, the other half and the daily runs
    // here.
    let half = slugs.len() / 2;
    let (second, first) = beside(
        conn,
        |conn| project_cards(app, conn, c, &slugs[half..], half),
        |conn| -> Result<_> {
            let daily = if slugs.is_empty() {
                None
            } else {
                Some(daily_runs(app, conn, "project", None, c.window)?)
            };
            Ok((daily, project_cards(app, conn, c, &slugs[..half], 0)?))
        },
    );
    let (daily, mut projects) = first?;
    projects.extend(second?);
    for (n, card) in projects.iter_mut().enumerate() {
        card.spark = daily.as_ref().and_then(|a| {
            runs_chart(
                a,
                &card.slug,
                format!("p{n}-daily"),
                format!("{}: runs per day", card.slug),
                (300, 40),
                "spark",
            )
        });
    }
    let host = req.header("Host").unwrap_or("127.0.0.1:8080");
    let base = format!("http://{host}");
    let empty = projects.is_empty().then(|| Empty {
        curl: format!(
            "curl -X POST {base}/api/v1/runs -H 'Content-Type: application/json' -d '{{\"id\": \"1\", \"project\": \"gh/acme/api\", \"workflow\": \"ci\", \"branch\": \"main\", \"status\": \"success\", \"created_at\": \"2026-01-05T10:00:00Z\", \"stopped_at\": \"2026-01-05T10:04:00Z\"}}'"
        ),
        base,
    });
    Ok(IndexPage {
        title: "pipestat".into(),
        controls: Some(c.view("/".into(), false, None)),
        window: c.window,
        branch_text: c.branch_text(),
        projects,
        empty,
    })
}

/// The cards of `slugs` on `/`, the first numbered `first`, without their sparklines.
fn project_cards(
    app: &App,
    conn: &Connection,
    c: &Controls,
    slugs: &[String],
    first: usize,
) -> Result<Vec<ProjectCard>> {
    let mut projects = Vec::new();
    for (n, slug) in (first..).zip(slugs) {
        let wfs = Call::new(Family::Insights, &[slug, "workflows"], c.insights_query())
            .answer(app, conn)?;
        let d = Call::new(
            Family::Dora,
            &[],
            vec![
                ("project".into(), slug.clone()),
                ("days".into(), c.window.to_string()),
            ],
        )
        .answer(app, conn)?;
        projects.push(ProjectCard {
            href: format!("{}{}", project_href(slug), c.query(false)),
            deployments: d.fig(
                "dora.deployments",
                "/deployment_frequency/deployments".into(),
                Fmt::Count,
            ),
            deploy_days_per_week: d.fig(
                "dora.median_deploy_days_per_week",
                "/deployment_frequency/median_deploy_days_per_week".into(),
                Fmt::Num,
            ),
            change_failure_rate: d.fig(
                "dora.change_failure_rate",
                "/change_failure_rate/rate".into(),
                Fmt::Rate,
            ),
            dora_missing: d.text("/change_failure_rate/missing"),
            workflows: workflow_rows(&wfs, None, slug, c, &format!("p{n}")),
            spark: None,
            slug: slug.clone(),
        });
    }
    Ok(projects)
}

// ---------------------------------------------------------------------------------------------
// `/projects/{slug}`

#[derive(Template)]
#[template(path = "project.html")]
struct ProjectPage {
    title: String,
    controls: Option<ControlsView>,
    slug: String,
    window: u32,
    branch_text: String,
    service: String,
    tiles: Vec<Tile>,
    weeks: Chart,
    workflows: Vec<WfRow>,
    slow_jobs: Vec<JobRow>,
    flaky: Vec<FlakyRow>,
    runs: Vec<RunLink>,
    deployments: Vec<DeployRow>,
    api_dora: String,
}

/// A DORA key: its figures now and in the window before, and its level.
pub struct Tile {
    name: &'static str,
    figs: Vec<(&'static str, Fig)>,
    previous: Fig,
    /// `up`, `down` or `same`: how the main figure moved since the window before.
    change: &'static str,
    level: String,
    missing: String,
}

pub struct FlakyRow {
    test: String,
    job: String,
    workflow: String,
    times_flaked: Fig,
}

pub struct DeployRow {
    run: RunLink,
    service: String,
    stopped_at: String,
    status: String,
    status_class: &'static str,
    change_failure: String,
    lead_time: Fig,
}

fn tiles(d: &Answer) -> Vec<Tile> {
    let tile = |name: &'static str,
                block: &str,
                main: (&'static str, &'static str, Fmt),
                more: &[(&'static str, &'static str, Fmt)]| {
        let metric = |f: &str| format!("dora.{block}.{f}");
        let mut figs = vec![(
            main.0,
            d.fig(metric(main.1), format!("/{block}/{}", main.1), main.2),
        )];
        for (label, f, fmt) in more {
            figs.push((*label, d.fig(metric(f), format!("/{block}/{f}"), *fmt)));
        }
        let previous = d.fig(
            format!("dora.previous.{block}.{}", main.1),
            format!("/previous/{block}/{}", main.1),
            main.2,
        );
        let change = match (figs[0].1.number(), previous.number()) {
            (Some(a), Some(b)) if a > b => "up",
            (Some(a), Some(b)) if a < b => "down",
            (Some(_), Some(_)) => "same",
            _ => "none",
        };
        Tile {
            name,
            figs,
            previous,
            change,
            level: d.text(&format!("/{block}/level")),
            missing: d.text(&format!("/{block}/missing")),
        }
    };
    vec![
        tile(
            "Deployment frequency",
            "deployment_frequency",
            ("per day", "per_day", Fmt::Num),
            &[
                ("deployments", "deployments", Fmt::Count),
                (
                    "deploy days a week (median)",
                    "median_deploy_days_per_week",
                    Fmt::Num,
                ),
                ("failed deploy attempts", "deploy_failures", Fmt::Count),
            ],
        ),
        tile(
            "Lead time for changes",
            "lead_time",
            ("p50", "p50_s", Fmt::Secs),
            &[
                ("p90", "p90_s", Fmt::Secs),
                ("changes", "changes", Fmt::Count),
            ],
        ),
        tile(
            "Change failure rate",
            "change_failure_rate",
            ("rate", "rate", Fmt::Rate),
            &[("failures", "failures", Fmt::Count)],
        ),
        tile(
            "Failed deployment recovery",
            "recovery_time",
            ("p50", "p50_s", Fmt::Secs),
            &[
                ("p90", "p90_s", Fmt::Secs),
                ("recovered", "recovered", Fmt::Count),
                ("still open", "open", Fmt::Count),
            ],
        ),
        tile(
            "Rework rate",
            "rework_rate",
            ("rate", "rate", Fmt::Rate),
            &[("reworks", "reworks", Fmt::Count)],
        ),
    ]
}

fn project_page(app: &App, conn: &Connection, slug: &str, c: &Controls) -> Result<ProjectPage> {
    let wfs =
        Call::new(Family::Insights, &[slug, "workflows"], c.insights_query()).answer(app, conn)?;
    let mut dq = vec![
        ("project".to_owned(), slug.to_owned()),
        ("days".into(), c.window.to_string()),
    ];
    if let Some(s) = &c.service {
        dq.push(("service".into(), s.clone()));
    }
    // The project is known (the workflows answered): its slug as stored is the canonical one.
    let canonical = crate::ingest::canonical_slug(slug).map_err(Error::BadRequest)?;
    // DORA's two routes and the deployments' runs on the second connection, the rest here.
    let (dora_half, rest) = beside(
        conn,
        |conn| dora_half(app, conn, dq),
        |conn| insights_half(app, conn, &wfs, &canonical, c),
    );
    let (d, deployments) = dora_half?;
    let (daily, slow_jobs, flaky, default_branch, runs) = rest?;
    let slug = d.text("/project");

    let weeks_n = d.len("/weeks");
    let weeks = chart::bars(
        "weeks".into(),
        "Deployments per week".into(),
        "Successful deployments per Monday week of the window, change failures drawn over them."
            .into(),
        "bars",
        (600, 120),
        vec![
            "week",
            "deployments",
            "change failures",
            "lead time p50",
            "recovery p50",
        ],
        (0..weeks_n)
            .map(|w| {
                let p = |f: &str| format!("/weeks/{w}/{f}");
                Point {
                    label: d.text(&p("start")),
                    figs: vec![
                        d.fig("dora.week.deployments", p("deployments"), Fmt::Count),
                        d.fig("dora.week.failures", p("failures"), Fmt::Count),
                        d.fig("dora.week.lead_time_p50_s", p("lead_time_p50_s"), Fmt::Secs),
                        d.fig("dora.week.recovery_p50_s", p("recovery_p50_s"), Fmt::Secs),
                    ],
                }
            })
            .collect(),
    );

    Ok(ProjectPage {
        title: format!("{slug} · pipestat"),
        controls: Some(c.view(project_href(&slug), true, default_branch)),
        window: c.window,
        branch_text: c.branch_text(),
        service: c.service.clone().unwrap_or_default(),
        tiles: tiles(&d),
        weeks,
        workflows: workflow_rows(&wfs, Some(&daily), &slug, c, "w"),
        slow_jobs,
        flaky,
        runs,
        deployments,
        api_dora: d.url.clone(),
        slug,
    })
}

/// The project page's DORA answer (`dq` its query) and its recent deployments, each with its
/// run's link.
fn dora_half(
    app: &App,
    conn: &Connection,
    dq: Vec<(String, String)>,
) -> Result<(Answer, Vec<DeployRow>)> {
    let d = Call::new(Family::Dora, &[], dq.clone()).answer(app, conn)?;
    let slug = d.text("/project");
    let mut dep_q = dq;
    dep_q.push(("limit".into(), LIST_ROWS.to_string()));
    let deps = Call::new(Family::Dora, &["deployments"], dep_q).answer(app, conn)?;
    let mut deployments = Vec::new();
    for i in 0..deps.len("/items") {
        let f = |k: &str| deps.text(&format!("/items/{i}/{k}"));
        let run_id = f("run");
        // The deployment's run, for its link.
        let run = Call::new(Family::Native, &["runs", &slug, &run_id], Vec::new())
            .answer(app, conn)
            .ok();
        let link = match run {
            Some(r) => {
                let wrapped = Answer {
                    url: r.url,
                    json: serde_json::json!({"items": [r.json]}),
                };
                run_links(&wrapped, &slug).pop()
            }
            None => None,
        };
        let status = f("status");
        deployments.push(DeployRow {
            run: link.unwrap_or(RunLink {
                href: format!("/api/v1/runs/{}/{}", enc(&slug), enc(&run_id)),
                external: false,
                id: run_id.clone(),
                workflow: String::new(),
                branch: String::new(),
                status: String::new(),
                status_class: "st-other",
                created_at: String::new(),
            }),
            service: f("service"),
            stopped_at: short_time(&f("stopped_at")),
            status_class: status_class(&status),
            status,
            change_failure: match deps.at(&format!("/items/{i}/change_failure")) {
                Value::Bool(true) => "yes".into(),
                Value::Bool(false) => "no".into(),
                _ => "—".into(),
            },
            lead_time: deps.fig(
                "deployment.lead_time_p50_s",
                format!("/items/{i}/lead_time_p50_s"),
                Fmt::Secs,
            ),
        });
    }
    Ok((d, deployments))
}

/// What the project page shows besides DORA: the workflows' daily runs, the slowest jobs, flaky
/// tests, the default branch and the recent runs.
type InsightsHalf = (
    Answer,
    Vec<JobRow>,
    Vec<FlakyRow>,
    Option<String>,
    Vec<RunLink>,
);

fn insights_half(
    app: &App,
    conn: &Connection,
    wfs: &Answer,
    slug: &str,
    c: &Controls,
) -> Result<InsightsHalf> {
    let daily = daily_runs(app, conn, "workflow", Some(slug), c.window)?;
    let mut slow_jobs = Vec::new();
    for i in 0..wfs.len("/items") {
        let name = wfs.text(&format!("/items/{i}/name"));
        let jobs = Call::new(
            Family::Insights,
            &[slug, "workflows", &name, "jobs"],
            c.insights_query(),
        )
        .answer(app, conn)?;
        slow_jobs.extend(job_rows(&jobs, &name));
    }
    // The slowest first, by the API's p95.
    slow_jobs.sort_by(|a, b| {
        let k = |j: &JobRow| j.p95.number().unwrap_or(-1.0);
        k(b).total_cmp(&k(a))
    });
    slow_jobs.truncate(LIST_ROWS);

    let flaky_a =
        Call::new(Family::Insights, &[slug, "flaky-tests"], Vec::new()).answer(app, conn)?;
    let flaky = (0..flaky_a.len("/flaky_tests").min(LIST_ROWS))
        .map(|i| {
            let f = |k: &str| flaky_a.text(&format!("/flaky_tests/{i}/{k}"));
            let class = f("classname");
            FlakyRow {
                test: if class.is_empty() {
                    f("test_name")
                } else {
                    format!("{class}.{}", f("test_name"))
                },
                job: f("job_name"),
                workflow: f("workflow_name"),
                times_flaked: flaky_a.fig(
                    "flaky.times_flaked",
                    format!("/flaky_tests/{i}/times_flaked"),
                    Fmt::Count,
                ),
            }
        })
        .collect();

    let mut rq = vec![
        ("project".to_owned(), slug.to_owned()),
        ("limit".into(), LIST_ROWS.to_string()),
    ];
    let (_, default_branch) = newest_run(app, conn, slug)?;
    if let Some(b) = c.branch_of_runs(&default_branch) {
        rq.push(("branch".into(), b));
    }
    let runs_a = Call::new(Family::Native, &["runs"], rq).answer(app, conn)?;
    let runs = run_links(&runs_a, slug);
    Ok((daily, slow_jobs, flaky, default_branch, runs))
}

// ---------------------------------------------------------------------------------------------
// `/projects/{slug}/workflows/{name}`

#[derive(Template)]
#[template(path = "workflow.html")]
struct WorkflowPage {
    title: String,
    controls: Option<ControlsView>,
    slug: String,
    project_href: String,
    name: String,
    window: u32,
    branch_text: String,
    figs: Vec<(&'static str, Fig)>,
    durations: Chart,
    daily: Option<Chart>,
    jobs: Vec<JobRow>,
    runs: Vec<RunLink>,
}

fn workflow_page(
    app: &App,
    conn: &Connection,
    slug: &str,
    name: &str,
    c: &Controls,
) -> Result<WorkflowPage> {
    let summary = Call::new(
        Family::Insights,
        &[slug, "workflows", name, "summary"],
        c.insights_query(),
    )
    .answer(app, conn)?;
    let names = summary.at("/workflow_names");
    if !names
        .as_array()
        .is_some_and(|n| n.iter().any(|n| n == name))
    {
        return Err(Error::NotFound(format!(
            "no workflow {name:?} in project {slug:?}"
        )));
    }
    let m = |f: &str| format!("/metrics/{f}");
    let metric = |f: &str| format!("workflow.{f}");
    let figs = vec![
        (
            "runs",
            summary.fig(metric("total_runs"), m("total_runs"), Fmt::Count),
        ),
        (
            "success rate",
            summary.fig(metric("success_rate"), m("success_rate"), Fmt::Rate),
        ),
        (
            "p50 duration",
            summary.fig(
                metric("p50_duration_secs"),
                m("duration_metrics/median"),
                Fmt::Secs,
            ),
        ),
        (
            "p95 duration",
            summary.fig(
                metric("p95_duration_secs"),
                m("duration_metrics/p95"),
                Fmt::Secs,
            ),
        ),
        (
            "runs a day",
            summary.fig(metric("throughput"), m("throughput"), Fmt::Num),
        ),
        (
            "mean time to recovery",
            summary.fig(metric("mttr_secs"), m("mttr"), Fmt::Secs),
        ),
    ];
    let jobs_a = Call::new(
        Family::Insights,
        &[slug, "workflows", name, "jobs"],
        c.insights_query(),
    )
    .answer(app, conn)?;
    let jobs = job_rows(&jobs_a, name);

    let (canonical, default_branch) = newest_run(app, conn, slug)?;
    let series = Call::new(
        Family::Stats,
        &["workflow"],
        vec![
            ("project".into(), canonical.clone()),
            ("facts".into(), "runs".into()),
            (
                "select".into(),
                "run_count,sum(is_error),p50(duration),p95(duration)".into(),
            ),
            (
                "filter".into(),
                format!("workflow eq '{}'", name.replace('\'', "''")),
            ),
            ("timeUnit".into(), "day".into()),
            ("tsAscending".into(), "true".into()),
            ("timeRange".into(), time_range(app, c.window)),
        ],
    )
    .answer(app, conn)?;
    let daily = runs_chart(
        &series,
        name,
        "daily".into(),
        "Runs per day".into(),
        (600, 100),
        "bars",
    );
    let dpoints = dimension_index(&series, name)
        .map(|i| {
            let base = format!("/environments/0/dimensions/{i}/metrics");
            (0..series.len(&format!("{base}/2/values")))
                .map(|d| Point {
                    label: day_label(
                        series
                            .at(&format!("{base}/2/values/{d}/timestamp"))
                            .as_i64()
                            .unwrap_or(0),
                    ),
                    figs: vec![
                        series.fig(
                            "daily.p50_duration_secs",
                            format!("{base}/2/values/{d}/value"),
                            Fmt::Secs,
                        ),
                        series.fig(
                            "daily.p95_duration_secs",
                            format!("{base}/3/values/{d}/value"),
                            Fmt::Secs,
                        ),
                    ],
                })
                .collect()
        })
        .unwrap_or_default();
    let durations = chart::lines(
        "durations".into(),
        "Duration per day".into(),
        "The p50 (solid) and p95 (dashed) duration of the runs of each UTC day, all branches; a day without runs is drawn at zero."
            .into(),
        (600, 100),
        vec!["day", "p50", "p95"],
        dpoints,
    );

    let mut rq = vec![
        ("project".to_owned(), canonical.clone()),
        ("workflow".into(), name.to_owned()),
        ("limit".into(), "25".into()),
    ];
    if let Some(b) = c.branch_of_runs(&default_branch) {
        rq.push(("branch".into(), b));
    }
    let runs = run_links(
        &Call::new(Family::Native, &["runs"], rq).answer(app, conn)?,
        &canonical,
    );
    Ok(WorkflowPage {
        title: format!("{name} · {canonical} · pipestat"),
        controls: Some(c.view(
            format!("{}/workflows/{}", project_href(&canonical), enc(name)),
            false,
            default_branch,
        )),
        project_href: format!("{}{}", project_href(&canonical), c.query(false)),
        slug: canonical,
        name: name.to_owned(),
        window: c.window,
        branch_text: c.branch_text(),
        figs,
        durations,
        daily,
        jobs,
        runs,
    })
}

/// A project's canonical slug and its default branch, as its newest run has them (the slug as
/// given when it has no run).
fn newest_run(app: &App, conn: &Connection, slug: &str) -> Result<(String, Option<String>)> {
    let newest = Call::new(
        Family::Native,
        &["runs"],
        vec![
            ("project".into(), slug.to_owned()),
            ("limit".into(), "1".into()),
        ],
    )
    .answer(app, conn)?;
    let canonical = Some(newest.text("/items/0/project")).filter(|p| !p.is_empty());
    let branch = Some(newest.text("/items/0/default_branch")).filter(|b| !b.is_empty());
    Ok((canonical.unwrap_or_else(|| slug.to_owned()), branch))
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: String,
    message: String,
    unauthorized: bool,
    controls: Option<ControlsView>,
}
