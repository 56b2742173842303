//! The Apigee surface: flexible metrics over runs, jobs and tests (contract §6).

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::http::{App, Req, Resp};

/// Answers `/v1/organizations/*` and `/v1/o/*`; `rest` is the path after that prefix.
pub fn route(_app: &App, _conn: &Connection, req: &Req, _rest: &[&str]) -> Result<Resp> {
    Err(Error::NotFound(format!(
        "no route for /{}",
        req.segments.join("/")
    )))
}

/// Answers the native form `/api/v1/stats/{dimensions}`; `rest` is the path after `stats`.
pub fn route_native(_app: &App, _conn: &Connection, req: &Req, _rest: &[&str]) -> Result<Resp> {
    Err(Error::NotFound(format!(
        "no route for /{}",
        req.segments.join("/")
    )))
}
