//! The routing table: one match on (method, path segments), to a surface.

use rusqlite::Connection;
use serde_json::json;

use crate::error::{Error, Result};
use crate::http::{Method, Req, Resp, Surface};
use crate::surfaces::{apigee, circleci, codearts, dashboard, dora, native, webhooks, zadig, App};

/// The routing table: one match on (method, path segments).
pub(super) fn route(app: &App, conn: &Connection, req: &Req) -> Result<Resp> {
    let segs: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    match (req.method, segs.as_slice()) {
        (Method::Get, ["healthz"]) => Ok(Resp::json(200, &json!({"status": "ok"}))),
        (Method::Get, ["readyz"]) => {
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })?;
            // 503 while writes are refused: the disk is full, or an fsync failed.
            app.writer.ready()?;
            Ok(Resp::json(200, &json!({"status": "ready"})))
        }
        (_, ["healthz"] | ["readyz"]) => Err(Error::MethodNotAllowed("GET")),
        (_, ["api", "v1", "stats", rest @ ..]) => apigee::route_native(app, conn, req, rest),
        (_, ["api", "v1", "dora", rest @ ..]) => dora::route(app, conn, req, rest),
        (_, ["api", "v1", rest @ ..]) => native::route(app, conn, req, rest),
        (_, ["api", "v2", "insights", rest @ ..]) => circleci::route(app, conn, req, rest),
        (_, ["openapi", "statistics", rest @ ..]) => zadig::route(app, conn, req, rest),
        (_, ["v3", "pipelines", rest @ ..]) => codearts::route(app, conn, req, rest),
        (_, ["v1", "organizations" | "o", rest @ ..]) => apigee::route(app, conn, req, rest),
        (_, ["webhooks", rest @ ..]) => webhooks::route(app, conn, req, rest),
        (_, [] | ["projects", ..] | ["assets", ..]) => dashboard::route(app, conn, req, &segs),
        _ => Err(Error::NotFound(format!("no route for /{}", segs.join("/")))),
    }
}

/// The methods a path is served with (the `Allow` of its 405), or None for a path no route
/// serves. Asks the routing table itself with a method no route takes, which every surface
/// answers with its 405 (or 404) before it reads anything.
pub(super) fn allowed(app: &App, conn: &Connection, segments: &[String]) -> Option<&'static str> {
    let probe = Req {
        method: Method::Other,
        segments: segments.to_vec(),
        query: Vec::new(),
        content_type: None,
        body: Default::default(),
        headers: Vec::new(),
        token: None,
    };
    match route(app, conn, &probe) {
        Err(Error::MethodNotAllowed(allow)) => Some(allow),
        _ => None,
    }
}

/// An error in the shape of its path's surface; the dashboard's paths get an HTML page.
pub(super) fn error(path: &str, e: &Error) -> Resp {
    if dashboard::is_page(path) {
        dashboard::error_page(e)
    } else {
        Surface::of(path).error(e)
    }
}
