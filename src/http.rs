//! The daemon: worker threads over tiny_http, authentication, limits, routing, responses and
//! the error shapes of every surface. Only this module knows tiny_http.

use std::cell::{Cell, Ref, RefCell};
use std::io::Read;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use percent_encoding::percent_decode_str;
use rusqlite::Connection;
use serde_json::{json, Value};

use crate::auth::{self, Quota, Scope};
use crate::config::Serve;
use crate::error::{Error, Result};
use crate::store::{self, TokenInfo};
use crate::writer::Writer;
use crate::{apigee, circleci, codearts, commands, db, native, times, webhooks, zadig};

/// State shared by every worker.
pub struct App {
    pub cfg: Serve,
    pub writer: Writer,
    quota: Quota,
    /// Whether a database without tokens may be used without one (loopback, or --insecure-open).
    open_allowed: bool,
}

impl App {
    /// The current time, or the fixed `--now`.
    pub fn now_ms(&self) -> i64 {
        self.cfg.now.unwrap_or_else(times::now_ms)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Delete,
    Other,
}

/// A request after the checks every route shares: authenticated, within quota, body read.
pub struct Req {
    pub method: Method,
    /// Path segments, percent-decoded (so `gh%2Facme%2Fapi` is one segment `gh/acme/api`).
    pub segments: Vec<String>,
    pub query: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// Read through `body()`; `drop_body` frees it once parsed.
    body: RefCell<Vec<u8>>,
    /// Request headers as sent (names in their original case; compare them ignoring case).
    pub headers: Vec<(String, String)>,
    /// The token presented, or None in open mode.
    pub token: Option<TokenInfo>,
}

impl Req {
    /// A GET with only a query string (decoded as the daemon decodes one), for calling a
    /// statistics query in-process: `apigee::explain` in the tests and benches.
    pub fn with_query(query: &str) -> Req {
        Req {
            method: Method::Get,
            segments: Vec::new(),
            query: parse_query(query),
            content_type: None,
            body: RefCell::default(),
            headers: Vec::new(),
            token: None,
        }
    }

    /// The request body (empty after `drop_body`).
    pub fn body(&self) -> Ref<'_, Vec<u8>> {
        self.body.borrow()
    }

    /// Frees the body once it has been parsed, so that a large one is not held in memory while
    /// its write waits for the writer.
    pub fn drop_body(&self) {
        self.body.take();
    }

    /// The first value of a query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a header, its name compared ignoring ASCII case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type of the body, lowercased, without parameters such as charset.
    pub fn media_type(&self) -> Option<String> {
        self.content_type.as_deref().map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    }
}

/// An answer: status, content type, extra headers, body.
pub struct Resp {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(status: u16, value: &Value) -> Resp {
        Resp {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_vec(value).expect("a Value serializes"),
        }
    }
}

/// The API family a path belongs to; it decides the error shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Surface {
    Native,
    CircleCi,
    Zadig,
    CodeArts,
    Apigee,
}

impl Surface {
    fn of(path: &str) -> Surface {
        if path.starts_with("/api/v2/") {
            Surface::CircleCi
        } else if path.starts_with("/openapi/") {
            Surface::Zadig
        } else if path.starts_with("/v3/") {
            Surface::CodeArts
        } else if path.starts_with("/v1/") {
            Surface::Apigee
        } else {
            Surface::Native
        }
    }

    /// Renders an error in the shape of this surface's original.
    pub fn error(self, e: &Error) -> Resp {
        let status = e.status();
        let message = e.to_string();
        let body = match self {
            Surface::Native => json!({"error": {"code": e.code(), "message": message}}),
            Surface::CircleCi => json!({"message": message}),
            Surface::Zadig => json!({
                "type": "error", "message": message, "code": status,
                "description": message, "extra": {}
            }),
            Surface::CodeArts => {
                json!({"error_code": format!("PIPESTAT.{status}"), "error_msg": message})
            }
            Surface::Apigee => {
                json!({"error": {"code": status, "message": message, "status": reason(status)}})
            }
        };
        let mut resp = Resp::json(status, &body);
        match e {
            Error::MethodNotAllowed(allow) => resp.headers.push(("Allow", (*allow).to_owned())),
            Error::TooManyRequests(secs) => resp.headers.push(("Retry-After", secs.to_string())),
            Error::PayloadTooLarge(_) => resp.headers.push(("Connection", "close".to_owned())),
            _ => {}
        }
        resp
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        413 => "PAYLOAD_TOO_LARGE",
        415 => "UNSUPPORTED_MEDIA_TYPE",
        429 => "RESOURCE_EXHAUSTED",
        _ => "INTERNAL",
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn serve(cfg: Serve) -> Result<()> {
    large_allocations_mapped();
    let conn = db::open(&cfg.db)?;
    if cfg.demo {
        if store::is_empty(&conn)? {
            commands::fill_demo(&cfg.db, None, 90, 42, cfg.now.unwrap_or_else(times::now_ms))?;
        } else {
            log::info!("--demo: the database already holds runs; leaving it as it is");
        }
    }
    let addr = resolve(&cfg.listen)?;
    let loopback = addr.ip().is_loopback();
    if !store::any_token(&conn)? && !loopback {
        if !cfg.insecure_open {
            return Err(Error::Usage(format!(
                "refusing to serve {addr} without tokens: anyone could read and write. Create one with \
                 `pipestat token create --name NAME --scope read,ingest`, listen on 127.0.0.1, \
                 or pass --insecure-open"
            )));
        }
        log::warn!("--insecure-open: serving {addr} with NO authentication; anyone who reaches it can read and write");
    }
    drop(conn);

    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::Internal(format!("cannot listen on {addr}: {e}")))?;
    // Accepted connections inherit TCP_NODELAY from the listener (see Cargo.toml for why).
    socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
    let server = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| Error::Internal(format!("cannot listen on {addr}: {e}")))?;
    let local = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| Error::Internal("not listening on an IP address".into()))?;
    let server = Arc::new(server);
    let (writer, writer_thread) = Writer::start(&cfg.db)?;
    let threads = cfg.threads;
    let app = Arc::new(App {
        quota: Quota::new(cfg.quota_per_minute),
        open_allowed: loopback || cfg.insecure_open,
        writer,
        cfg,
    });

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    let signal_handle = signals.handle();
    {
        let (server, stop) = (server.clone(), stop.clone());
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    log::info!("signal {sig}: draining and stopping");
                    stop.store(true, Ordering::SeqCst);
                    for _ in 0..threads {
                        server.unblock();
                    }
                }
            })?;
    }

    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads {
        let (server, app, stop, failed) =
            (server.clone(), app.clone(), stop.clone(), failed.clone());
        let conn = db::open(&app.cfg.db)?;
        workers.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    worker(&server, &app, &conn, &stop, &failed, threads);
                })?,
        );
    }

    println!("listening on http://{local}");
    use std::io::Write as _;
    std::io::stdout().flush()?;
    log::info!("serving {} with {threads} workers", app.cfg.db.display());

    for w in workers {
        let _ = w.join();
    }
    signal_handle.close();
    // Dropping the last Writer handle lets the writer finish its queue and stop.
    drop(app);
    let _ = writer_thread.join();
    if failed.load(Ordering::SeqCst) {
        return Err(Error::Internal(
            "the HTTP listener failed; stopping so the service manager restarts pipestat".into(),
        ));
    }
    log::info!("stopped cleanly");
    Ok(())
}

fn resolve(listen: &str) -> Result<SocketAddr> {
    listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Usage(format!("--listen: expected IP:PORT, got {listen:?}")))
}

fn worker(
    server: &tiny_http::Server,
    app: &App,
    conn: &Connection,
    stop: &AtomicBool,
    failed: &AtomicBool,
    threads: usize,
) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv() {
            Ok(rq) => handle(app, conn, rq),
            Err(_) if stop.load(Ordering::SeqCst) => break,
            Err(e) => {
                // tiny_http's accept loop does not recover; stop and let systemd restart us.
                log::error!("HTTP listener failed: {e}");
                failed.store(true, Ordering::SeqCst);
                stop.store(true, Ordering::SeqCst);
                for _ in 0..threads {
                    server.unblock();
                }
                break;
            }
        }
    }
}

fn handle(app: &App, conn: &Connection, mut rq: tiny_http::Request) {
    let started = Instant::now();
    let url = rq.url().to_owned();
    let path = url.split('?').next().unwrap_or("").to_owned();
    let surface = Surface::of(&path);
    let body_len = Cell::new(0);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // Every write arrives as a POST: the writer waits briefly for announced requests
        // before it commits, so concurrent ones share a commit. Withdrawn on return.
        let _announced = (*rq.method() == tiny_http::Method::Post).then(|| app.writer.announce());
        let req = prepare(app, conn, &mut rq, &url)?;
        body_len.set(req.body().len());
        route(app, conn, &req)
    }));
    let resp = match outcome {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            if e.status() >= 500 {
                log::error!("{} {path}: {e}", rq.method());
            }
            surface.error(&e)
        }
        Err(_) => surface.error(&Error::Internal(
            "internal error: the request handler panicked".into(),
        )),
    };
    log::info!(
        "{} {} {} {}ms",
        rq.method(),
        path,
        resp.status,
        started.elapsed().as_millis()
    );
    let large = body_len.get().max(resp.body.len()) > LARGE_BODY;
    let mut out = tiny_http::Response::from_data(resp.body).with_status_code(resp.status);
    let content_type =
        tiny_http::Header::from_bytes("Content-Type", resp.content_type).expect("valid header");
    out.add_header(content_type);
    for (name, value) in resp.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(name, value.as_bytes()) {
            out.add_header(h);
        }
    }
    if let Err(e) = rq.respond(out) {
        log::debug!("could not send the response: {e}");
    }
    if large {
        release_freed_memory();
    }
}

/// A request or answer body larger than this makes its worker return freed memory to the
/// system once it has answered (`release_freed_memory`).
const LARGE_BODY: usize = 1 << 20;

// glibc gives each thread that contends for the allocator an arena of its own, and keeps in
// each arena what was freed there. The daemon keeps that default: its workers parse while the
// writer writes, both allocating all the time, and with one arena for every thread they waited
// on its lock (docs/benchmarks.md: array and single POSTs each about a quarter slower). Two
// settings keep the memory of many arenas bounded (same page: VmHWM after the array POSTs
// 47.8–49.4 MB with both, up to 60.6 MB with the second alone):
// - `large_allocations_mapped`: a large buffer (a request body, a parsed array's vector) is
//   mapped on its own at any size, and unmapped when freed. glibc's default raises this
//   threshold to the largest block freed so far, after which such buffers stay in their arena.
// - `release_freed_memory`: after a large request, its worker hands the free pages of every
//   arena back to the system (`malloc_trim`, one to three milliseconds, for large bodies only).

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn large_allocations_mapped() {
    // Allocations from 256 KiB up get pages of their own, returned to the system when freed.
    // SAFETY: mallopt only sets an allocator parameter, under the allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory() {
    // SAFETY: malloc_trim only returns free pages of the allocator's own arenas to the system;
    // it takes each arena's lock and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn large_allocations_mapped() {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}

/// The scope a path needs, or None for the probes and webhooks.
fn scope_for(method: Method, segments: &[String]) -> Option<Scope> {
    match segments.first().map(String::as_str) {
        Some("healthz" | "readyz" | "webhooks") => None,
        Some("api") if segments.get(2).is_some_and(|s| s == "tokens") => Some(Scope::Admin),
        Some("api") if method == Method::Post => Some(Scope::Ingest),
        _ => Some(Scope::Read),
    }
}

/// Authentication, quota and body, in that order: a refused request is never read.
fn prepare(app: &App, conn: &Connection, rq: &mut tiny_http::Request, url: &str) -> Result<Req> {
    let method = match rq.method() {
        tiny_http::Method::Get | tiny_http::Method::Head => Method::Get,
        tiny_http::Method::Post => Method::Post,
        tiny_http::Method::Delete => Method::Delete,
        _ => Method::Other,
    };
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| Error::bad("the path is not valid UTF-8 after percent-decoding"))
        })
        .collect::<Result<Vec<_>>>()?;
    let query = parse_query(query);
    let header = |name: &str| -> Option<String> {
        rq.headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_owned())
    };
    let content_type = header("Content-Type");

    let token = match scope_for(method, &segments) {
        None => None,
        Some(scope) => match auth::presented_token(header) {
            Some(secret) => {
                let token = store::find_token(conn, &auth::hash_secret(&secret))?
                    .ok_or_else(|| Error::Unauthorized("unknown or revoked token".into()))?;
                if !auth::has_scope(&token.scopes, scope) {
                    return Err(Error::Forbidden(format!(
                        "token {:?} lacks the {:?} scope this route needs",
                        token.name,
                        scope.as_str()
                    )));
                }
                app.quota.check(token.id, app.now_ms())?;
                Some(token)
            }
            None if app.open_allowed && !store::any_token(conn)? => None,
            None => {
                return Err(Error::Unauthorized(
                    "a token is required: send Authorization: Bearer TOKEN (or Circle-Token, X-Auth-Token, HTTP Basic)".into(),
                ))
            }
        },
    };

    let max = app.cfg.max_body;
    if rq.body_length().is_some_and(|n| n as u64 > max) {
        return Err(Error::PayloadTooLarge(max));
    }
    let mut body = Vec::new();
    if method == Method::Post {
        // Sized from Content-Length (already checked against the limit), so the buffer is not
        // doubled while it grows.
        body.reserve_exact(rq.body_length().unwrap_or(0));
        rq.as_reader().take(max + 1).read_to_end(&mut body)?;
        if body.len() as u64 > max {
            return Err(Error::PayloadTooLarge(max));
        }
    }
    let headers = rq
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_owned(),
                h.value.as_str().to_owned(),
            )
        })
        .collect();
    Ok(Req {
        method,
        segments,
        query,
        content_type,
        body: RefCell::new(body),
        headers,
        token,
    })
}

/// Splits and percent-decodes a query string (`+` is a space).
fn parse_query(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The routing table: one match on (method, path segments).
fn route(app: &App, conn: &Connection, req: &Req) -> Result<Resp> {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match (req.method, segs.as_slice()) {
        (Method::Get, ["healthz"]) => Ok(Resp::json(200, &json!({"status": "ok"}))),
        (Method::Get, ["readyz"]) => {
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })?;
            Ok(Resp::json(200, &json!({"status": "ready"})))
        }
        (_, ["healthz"] | ["readyz"]) => Err(Error::MethodNotAllowed("GET")),
        (_, ["api", "v1", "stats", rest @ ..]) => apigee::route_native(app, conn, req, rest),
        (_, ["api", "v1", rest @ ..]) => native::route(app, conn, req, rest),
        (_, ["api", "v2", "insights", rest @ ..]) => circleci::route(app, conn, req, rest),
        (_, ["openapi", "statistics", rest @ ..]) => zadig::route(app, conn, req, rest),
        (_, ["v3", "pipelines", rest @ ..]) => codearts::route(app, conn, req, rest),
        (_, ["v1", "organizations" | "o", rest @ ..]) => apigee::route(app, conn, req, rest),
        (_, ["webhooks", rest @ ..]) => webhooks::route(app, conn, req, rest),
        _ => Err(Error::NotFound(format!("no route for /{}", segs.join("/")))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("a=1&b=x%20y+z&flag&c=%2F");
        assert_eq!(
            q,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("flag".into(), "".into()),
                ("c".into(), "/".into())
            ]
        );
    }

    #[test]
    fn scopes_by_route() {
        let segs = |p: &str| p.split('/').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(scope_for(Method::Get, &segs("healthz")), None);
        assert_eq!(
            scope_for(Method::Post, &segs("api/v1/runs")),
            Some(Scope::Ingest)
        );
        assert_eq!(
            scope_for(Method::Get, &segs("api/v1/runs")),
            Some(Scope::Read)
        );
        assert_eq!(
            scope_for(Method::Get, &segs("api/v1/tokens")),
            Some(Scope::Admin)
        );
        assert_eq!(
            scope_for(Method::Get, &segs("api/v2/insights/gh/a/b/workflows")),
            Some(Scope::Read)
        );
    }
}
