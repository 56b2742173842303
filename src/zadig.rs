//! The Zadig surface: `/openapi/statistics/*` (contract §4).

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::http::{App, Req, Resp};

/// Answers `/openapi/statistics/*`; `rest` is the path after that prefix.
pub fn route(_app: &App, _conn: &Connection, req: &Req, _rest: &[&str]) -> Result<Resp> {
    Err(Error::NotFound(format!(
        "no route for /{}",
        req.segments.join("/")
    )))
}
