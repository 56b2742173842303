//! Webhooks from GitHub and GitLab: `POST /webhooks/github`, `POST /webhooks/gitlab` (contract §3.2).

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::http::{App, Req, Resp};

/// Answers `/webhooks/*`; `rest` is the path after that prefix.
pub fn route(_app: &App, _conn: &Connection, req: &Req, _rest: &[&str]) -> Result<Resp> {
    Err(Error::NotFound(format!(
        "no route for /{}",
        req.segments.join("/")
    )))
}
