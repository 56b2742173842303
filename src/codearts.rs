//! The CodeArts surface: `GET /v3/pipelines/{pipeline_id}/status` (contract §7).

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::http::{App, Req, Resp};

/// Answers `/v3/pipelines/*`; `rest` is the path after that prefix.
pub fn route(_app: &App, _conn: &Connection, req: &Req, _rest: &[&str]) -> Result<Resp> {
    Err(Error::NotFound(format!(
        "no route for /{}",
        req.segments.join("/")
    )))
}
