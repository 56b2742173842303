//! What every request goes through before its route: authentication, scope, quota and the
//! body read under the size limit, in that order, so a refused request is never read.

use std::cell::RefCell;
use std::io::{ErrorKind, Read};
use std::time::Instant;

use percent_encoding::percent_decode_str;
use rusqlite::Connection;

use super::{open, Daemon};
use crate::error::{Error, Result};
use crate::http::{credentials, parse_query, Method, Req};
use crate::store::tokens::{self, Scope};

/// The scope a path needs, or None for the probes, the OpenAPI document and webhooks.
fn scope_for(method: Method, segments: &[String]) -> Option<Scope> {
    match segments.first().map(String::as_str) {
        // The dashboard's stylesheet holds nothing secret; a browser fetching it may not have
        // sent its Basic credentials yet.
        Some("healthz" | "readyz" | "webhooks" | "assets") => None,
        Some("openapi.json") if segments.len() == 1 => None,
        Some("api") if segments.get(2).is_some_and(|s| s == "tokens") => Some(Scope::Admin),
        Some("api") if method == Method::Post => Some(Scope::Ingest),
        _ => Some(Scope::Read),
    }
}

/// What `prepare` learnt of a request that `handle` needs to answer it.
#[derive(Default)]
pub(super) struct Progress {
    /// Bytes of body read.
    pub(super) body_len: usize,
    /// The front sent the head alone, to learn whether the request passes the checks before
    /// its body (see `front`): the quota is not counted, and the route is not run.
    pub(super) precheck: bool,
}

/// Framing, method, open-mode checks, authentication, quota and body, in that order: a refused
/// request is never read.
pub(super) fn prepare(
    daemon: &Daemon,
    conn: &Connection,
    rq: &mut tiny_http::Request,
    url: &str,
    progress: &mut Progress,
) -> Result<Req> {
    let header = |name: &str| -> Option<String> {
        rq.headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_owned())
    };
    let pairs: Vec<(&str, &str)> = rq
        .headers()
        .iter()
        .map(|h| (h.field.as_str().as_str(), h.value.as_str()))
        .collect();
    framing(&pairs)?;
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
    // A method the path does not serve is a 405 before any credential is looked at.
    if let Some(allow) = super::routes::allowed(&daemon.app, conn, &segments) {
        let name = match rq.method() {
            tiny_http::Method::Head => "GET",
            m => m.as_str(),
        };
        if method == Method::Other || !allow.split(", ").any(|a| a == name) {
            return Err(Error::MethodNotAllowed(allow));
        }
    }
    // A write a web page makes the browser send to another site is refused: in open mode it
    // needs no token, and a browser may hold Basic credentials for pipestat.
    if method != Method::Get {
        open::same_origin(&header)?;
    }
    let query = parse_query(query);
    let content_type = header("Content-Type");

    let token = match scope_for(method, &segments) {
        None => None,
        Some(scope) if daemon.open_allowed && !tokens::any_token(conn)? => {
            // Open mode: no token is stored, so any token presented is ignored (clients such
            // as pycircleci refuse to run without one). What a web page could do through the
            // user's browser is refused instead.
            if daemon.loopback {
                open::loopback_host(header("Host").as_deref(), rq.http_version())?;
            }
            if scope == Scope::Admin && method == Method::Post {
                return Err(Error::Unauthorized(open::TOKEN_CREATION.into()));
            }
            None
        }
        Some(scope) => {
            let Some(secret) = credentials::presented_token(header) else {
                return Err(Error::Unauthorized(
                    "a token is required: send Authorization: Bearer TOKEN (or Circle-Token, X-Auth-Token, HTTP Basic)".into(),
                ));
            };
            let token = tokens::find_token(conn, &tokens::hash_secret(&secret))?
                .ok_or_else(|| Error::Unauthorized("unknown or revoked token".into()))?;
            if !tokens::has_scope(&token.scopes, scope) {
                return Err(Error::Forbidden(format!(
                    "token {:?} lacks the {:?} scope this route needs",
                    token.name,
                    scope.as_str()
                )));
            }
            if !progress.precheck {
                daemon.quota.check(token.id, daemon.app.now_ms())?;
            }
            Some(token)
        }
    };

    let max = daemon.max_body;
    if rq.body_length().is_some_and(|n| n as u64 > max) {
        return Err(Error::PayloadTooLarge(max));
    }
    let mut body = Vec::new();
    if method == Method::Post {
        // Sized from Content-Length (already checked against the limit), so the buffer is not
        // doubled while it grows.
        body.reserve_exact(rq.body_length().unwrap_or(0));
        read_body(daemon, rq.as_reader(), &mut body)?;
        progress.body_len = body.len();
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

/// Reads a body under the size limit and the body deadline; a client that sends it too slowly
/// (or stops) gets a 408, and shutdown stops the read.
fn read_body(daemon: &Daemon, reader: &mut dyn Read, body: &mut Vec<u8>) -> Result<()> {
    let started = Instant::now();
    let max = daemon.max_body;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Error::RequestTimeout(
                    "the request body stopped arriving".into(),
                ))
            }
            Err(e) => {
                return Err(Error::bad(format!(
                    "the request body could not be read: {e}"
                )))
            }
        };
        if body.len() as u64 + n as u64 > max {
            return Err(Error::PayloadTooLarge(max));
        }
        body.extend_from_slice(&chunk[..n]);
        if started.elapsed() > daemon.limits.body_time(body.len()) {
            return Err(Error::RequestTimeout(
                "the request body arrived too slowly".into(),
            ));
        }
        if daemon.stopping() {
            return Err(Error::RequestTimeout(
                "pipestat is stopping; send the request again".into(),
            ));
        }
    }
}

/// How a request says where its body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
}

/// The body's framing, refusing what two parsers could read two ways (request smuggling):
/// Content-Length beside Transfer-Encoding, several Content-Lengths that differ, one that is
/// not a plain number, or a Transfer-Encoding other than chunked.
/// `headers` are (name, value) pairs as received.
pub(super) fn framing(headers: &[(&str, &str)]) -> Result<Framing> {
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    };
    let mut length = None;
    for value in named("Content-Length").flat_map(|v| v.split(',')) {
        let value = value.trim();
        let n =
            (!value.is_empty() && value.len() <= 19 && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| Error::bad(format!("Content-Length: not a number: {value:?}")))?;
        if length.is_some_and(|l| l != n) {
            return Err(Error::bad("several Content-Length headers that differ"));
        }
        length = Some(n);
    }
    let codings: Vec<&str> = named("Transfer-Encoding").collect();
    if codings.is_empty() {
        return Ok(match length {
            None | Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
        });
    }
    if length.is_some() {
        return Err(Error::bad(
            "both Content-Length and Transfer-Encoding: send one of them",
        ));
    }
    if codings.len() == 1 && codings[0].eq_ignore_ascii_case("chunked") {
        Ok(Framing::Chunked)
    } else {
        Err(Error::bad(format!(
            "Transfer-Encoding: only chunked is supported, got {:?}",
            codings.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
