//! Webhook payloads → domain values: GitHub's and GitLab's deliveries mapped onto runs and
//! jobs (docs/webhooks.md has the tables). Signatures, secrets and answers are the webhook
//! surface's (`surfaces::webhooks`); a delivery reaches these parsers only once verified.

pub mod github;
pub mod gitlab;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::ingest;
use crate::ingest::fields::Obj;
use crate::model::times;
use crate::model::{Commit, Incident, Kind, Push, Run, Status};

/// What a verified delivery asks for.
#[derive(Debug)]
pub enum Delivery {
    /// GitHub's `ping`: answered, nothing stored.
    Ping,
    /// An event (or state) pipestat does not map: 202, nothing stored.
    Ignored { event: String, why: &'static str },
    /// A run written whole; freshness decides whether it replaces the stored one.
    Run { event: &'static str, run: Run },
    /// A run's jobs merged into the stored run, which is created from `run` when absent.
    Jobs { event: &'static str, run: Run },
    /// A push of commits to a branch (GitHub `push`, GitLab `Push Hook`).
    Push { event: &'static str, push: Push },
    /// An issue that is an incident, made or updated (GitHub `issues`, GitLab `Issue Hook`).
    Incident {
        event: &'static str,
        incident: Incident,
    },
    /// An issue that is no longer an incident: the incident (project, id) is removed.
    NotIncident {
        event: &'static str,
        project: String,
        id: String,
    },
}

/// Whether a label names incidents: equal to `--incident-label`, in any case.
pub(super) fn is_incident_label(label: &str, incident_label: &str) -> bool {
    label.to_lowercase() == incident_label.to_lowercase()
}

/// The branch of a pushed ref, `refs/heads/<branch>`; none for tags and other refs.
pub(super) fn branch_of_ref(git_ref: &str) -> Option<&str> {
    git_ref
        .strip_prefix("refs/heads/")
        .filter(|b| !b.is_empty())
}

/// The commits of a push payload (GitHub's and GitLab's share the members `id` and
/// `timestamp`), their times read by the CI system's own `time` parser.
pub(super) fn pushed_commits(items: &[Obj], time: fn(&str) -> Option<i64>) -> Result<Vec<Commit>> {
    items
        .iter()
        .map(|c| {
            Ok(Commit {
                sha: c.req_name("id")?,
                committed_at: c
                    .opt_time_by("timestamp", time)?
                    .ok_or_else(|| c.err("timestamp", "is required"))?,
            })
        })
        .collect()
}

/// The payload of a delivery, parsed only once its event is known to be mapped.
pub type Payload<'a> = &'a mut dyn FnMut() -> Result<Value>;

/// The canonical project slug for a CI system's repository path.
pub(super) fn slug(vcs: &str, path: &str, field: &str) -> Result<String> {
    ingest::canonical_slug(&format!("{vcs}/{path}"))
        .map_err(|m| Error::bad(format!("field \"{field}\": {m}")))
}

/// Keeps times consistent for the statistics: a start is never before the creation, and a
/// stop never before the start (or the creation). CI systems report these from different
/// clocks and events, and a negative duration would poison every mean.
pub(super) fn order_times(created: i64, started: &mut Option<i64>, stopped: &mut Option<i64>) {
    if let Some(s) = started.as_mut() {
        *s = (*s).max(created);
    }
    if let Some(t) = stopped.as_mut() {
        *t = (*t).max(started.unwrap_or(created));
    }
}

/// The start and stop a run or job keeps for its status: a start once it runs or ran, a stop
/// once it finished, both ordered by `order_times`.
pub(super) fn span(
    status: Status,
    created: i64,
    started: Option<i64>,
    stopped: Option<i64>,
) -> (Option<i64>, Option<i64>) {
    let mut started = started.filter(|_| status.rank() >= 1);
    let mut stopped = stopped.filter(|_| status.is_terminal());
    order_times(created, &mut started, &mut stopped);
    (started, stopped)
}

/// Whether a deploy environment is production: named production or prod (any case), or
/// flagged so by the CI system.
pub(super) fn is_production(env: Option<&str>, flagged: bool) -> bool {
    flagged
        || env
            .is_some_and(|e| e.eq_ignore_ascii_case("production") || e.eq_ignore_ascii_case("prod"))
}

/// What a job does, guessed from words of its stage and name (in that order): deploy,
/// release, publish → deploy; test, tests, e2e, spec → test; build, compile, package → build.
pub(super) fn kind_of(texts: &[Option<&str>]) -> Kind {
    const DEPLOY: &[&str] = &["deploy", "deployment", "release", "publish", "rollout"];
    const TEST: &[&str] = &["test", "tests", "testing", "e2e", "spec", "specs"];
    const BUILD: &[&str] = &["build", "compile", "package", "bundle"];
    for text in texts.iter().flatten() {
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        for (list, kind) in [
            (DEPLOY, Kind::Deploy),
            (TEST, Kind::Test),
            (BUILD, Kind::Build),
        ] {
            if words.iter().any(|w| list.contains(w)) {
                return kind;
            }
        }
    }
    Kind::Other
}

/// RFC 3339, as GitHub sends.
pub(super) fn rfc3339(s: &str) -> Option<i64> {
    times::parse_rfc3339(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_words() {
        assert_eq!(kind_of(&[Some("deploy"), Some("staging")]), Kind::Deploy);
        assert_eq!(kind_of(&[Some("test"), Some("test-build")]), Kind::Test);
        assert_eq!(kind_of(&[None, Some("build-image")]), Kind::Build);
        assert_eq!(kind_of(&[None, Some("Analyze (javascript)")]), Kind::Other);
        // Words, not substrings: "latest" is not "test".
        assert_eq!(kind_of(&[None, Some("latest")]), Kind::Other);
    }

    #[test]
    fn production_environments() {
        assert!(is_production(Some("Production"), false));
        assert!(is_production(Some("prod"), false));
        assert!(is_production(Some("eu-live"), true));
        assert!(!is_production(Some("github-pages"), false));
        assert!(!is_production(None, false));
    }

    #[test]
    fn times_are_ordered() {
        let (mut start, mut stop) = (Some(50), Some(40));
        order_times(10, &mut start, &mut stop);
        assert_eq!((start, stop), (Some(50), Some(50)));
        let (mut start, mut stop) = (None, Some(5));
        order_times(10, &mut start, &mut stop);
        assert_eq!((start, stop), (None, Some(10)));
    }
}
