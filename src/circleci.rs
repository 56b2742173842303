//! The CircleCI Insights surface: `/api/v2/insights/*` (contract §5).

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::http::{App, Req, Resp};

/// Answers `/api/v2/insights/*`; `rest` is the path after that prefix.
pub fn route(_app: &App, _conn: &Connection, req: &Req, _rest: &[&str]) -> Result<Resp> {
    Err(Error::NotFound(format!(
        "no route for /{}",
        req.segments.join("/")
    )))
}
