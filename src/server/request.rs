//! What every request goes through before its route: authentication, scope, quota and the
//! body read under the size limit, in that order, so a refused request is never read.

use std::cell::RefCell;
use std::io::Read;

use percent_encoding::percent_decode_str;
use rusqlite::Connection;

use super::Daemon;
use crate::error::{Error, Result};
use crate::http::{credentials, parse_query, Method, Req};
use crate::store::tokens::{self, Scope};

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
pub(super) fn prepare(
    daemon: &Daemon,
    conn: &Connection,
    rq: &mut tiny_http::Request,
    url: &str,
) -> Result<Req> {
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
        Some(scope) => match credentials::presented_token(header) {
            Some(secret) => {
                let token = tokens::find_token(conn, &tokens::hash_secret(&secret))?
                    .ok_or_else(|| Error::Unauthorized("unknown or revoked token".into()))?;
                if !tokens::has_scope(&token.scopes, scope) {
                    return Err(Error::Forbidden(format!(
                        "token {:?} lacks the {:?} scope this route needs",
                        token.name,
                        scope.as_str()
                    )));
                }
                daemon.quota.check(token.id, daemon.app.now_ms())?;
                Some(token)
            }
            None if daemon.open_allowed && !tokens::any_token(conn)? => None,
            None => {
                return Err(Error::Unauthorized(
                    "a token is required: send Authorization: Bearer TOKEN (or Circle-Token, X-Auth-Token, HTTP Basic)".into(),
                ))
            }
        },
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
