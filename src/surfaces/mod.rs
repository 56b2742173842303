//! The surfaces: each answers one API family in the shapes its original's clients speak, from
//! the store's tables. They get a request already authenticated and read (`http::Req`) and the
//! daemon's shared state (`App`); the server routes to them.

pub mod apigee;
pub mod circleci;
pub mod codearts;
pub mod dashboard;
pub mod dora;
pub mod native;
pub mod webhooks;
pub mod zadig;

use base64::Engine;

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::times;
use crate::store::writer::Writer;

/// What the surfaces need to know of the daemon's configuration.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Minutes east of UTC for calendar days.
    pub utc_offset: i32,
    pub github_secret: Option<String>,
    pub gitlab_secret: Option<String>,
    /// A fixed "now" in UTC milliseconds, replacing the clock.
    pub now: Option<i64>,
    /// `--incident-label`: issues carrying a label of this name are incidents (default
    /// `incident`).
    pub incident_label: Option<String>,
    /// `--incident-window`: how long after a deployment an incident linked to nothing is
    /// blamed on it, in milliseconds (default 72 hours).
    pub incident_window_ms: Option<i64>,
}

impl Settings {
    pub fn incident_label(&self) -> &str {
        self.incident_label.as_deref().unwrap_or("incident")
    }

    pub fn incident_window_ms(&self) -> i64 {
        self.incident_window_ms.unwrap_or(72 * 3_600_000)
    }
}

/// State shared by every worker: the settings and the handle of the one writer.
pub struct App {
    pub settings: Settings,
    pub writer: Writer,
    /// The daemon's Prometheus metrics (`GET /metrics`).
    pub metrics: std::sync::Arc<Metrics>,
}

impl App {
    /// The current time, or the fixed `--now`.
    pub fn now_ms(&self) -> i64 {
        self.settings.now.unwrap_or_else(times::now_ms)
    }
}

/// The opaque `cursor` of pipestat's own paged lists: the last item's time and row id.
pub fn encode_cursor(at: i64, id: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{at}:{id}"))
}

/// The (time, row id) a `cursor` names; a cursor this server did not issue is a 400.
pub fn decode_cursor(s: &str) -> Result<(i64, i64)> {
    let bad = || Error::bad("parameter \"cursor\": not a cursor this server issued");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (at, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((
        at.parse().map_err(|_| bad())?,
        id.parse().map_err(|_| bad())?,
    ))
}
