//! The CodeArts surface: `GET /v3/pipelines/{pipeline_id}/status` (docs/codearts.md).
//!
//! A pipeline is a workflow, found by its `pipeline_id`; a build is one of its runs. The answer
//! groups the run's jobs into stages by their `stage`: window functions over the jobs give each
//! stage its order, its time span and the worst status and outcome of its jobs, so the Rust side
//! only nests consecutive rows. docs/codearts.md has the status mapping and the decisions made
//! where the original is silent.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::App;
use crate::error::{Error, Result};
use crate::http::{Method, Req, Resp};

/// Answers `/v3/pipelines/*`; `rest` is the path after that prefix.
pub fn route(app: &App, conn: &Connection, req: &Req, rest: &[&str]) -> Result<Resp> {
    match (req.method, rest) {
        (Method::Get, [pipeline_id, "status"]) => status(app, conn, req, pipeline_id),
        (_, [_, "status"]) => Err(Error::MethodNotAllowed("GET")),
        _ => Err(Error::NotFound(format!(
            "no route for /v3/pipelines/{}",
            rest.join("/")
        ))),
    }
}

/// CodeArts' `status` words, by rank: a stage takes the highest rank among its jobs, so a
/// running job makes its stage running, and a stage is completed only when all its jobs are.
const STATUS_WORDS: [&str; 5] = ["completed", "waiting", "suspending", "verifying", "running"];
/// CodeArts' `outcome` words, by rank: a completed stage takes the worst outcome of its jobs.
const OUTCOME_WORDS: [&str; 3] = ["success", "aborted", "error"];

const SELECT_PIPELINE: &str =
    "SELECT w.id, w.project_id, w.name, w.pipeline_id FROM workflows w WHERE w.pipeline_id = ?1";

/// The latest run: the newest by creation (ties: the last stored), so that a backfilled old
/// run never becomes the latest. ?2 is the pipeline's project: the statement walks the
/// project's runs from the newest (runs_by_project_time, whose order ends with the row id) and
/// stops at the first of this workflow. Its columns are those `RunRow::from_row` reads.
const LATEST_RUN: &str = "
SELECT r.id, r.number, r.actor, r.status, r.started_at, r.stopped_at, r.created_at,
    r.detail_url, r.parameters
FROM runs r INDEXED BY runs_by_project_time WHERE r.project_id = ?2 AND r.workflow_id = ?1
ORDER BY r.created_at DESC, r.id DESC LIMIT 1";

/// The run with build number ?2 (the newest if several share it), else the run whose id is ?3.
/// ?4 is the pipeline's project. Uses runs_by_workflow_number, then the (project_id, ext_id) key.
/// Its columns are `pref`, then those of LATEST_RUN.
const RUN_BY_BUILD_ID: &str = "
SELECT * FROM (
    SELECT 0 AS pref, r.id, r.number, r.actor, r.status, r.started_at, r.stopped_at,
        r.created_at, r.detail_url, r.parameters
    FROM runs r WHERE r.workflow_id = ?1 AND r.number = ?2
    UNION ALL
    SELECT 1 AS pref, r.id, r.number, r.actor, r.status, r.started_at, r.stopped_at,
        r.created_at, r.detail_url, r.parameters
    FROM runs r WHERE r.project_id = ?4 AND r.ext_id = ?3 AND r.workflow_id = ?1)
ORDER BY pref, number DESC, created_at DESC, id DESC LIMIT 1";

/// The jobs of run ?1 with their stage's figures, in stage order then job order.
/// A job without a stage is a stage of its own, named after the job. Status ranks index
/// STATUS_WORDS: queued and waiting jobs wait (an approval waits for a verdict: verifying),
/// running runs, every terminal status is completed. Outcome ranks index OUTCOME_WORDS:
/// failed, error and timeout are errors, canceled is aborted, success and skipped succeed.
/// Uses the jobs' (run_id, ext_id) key.
const SELECT_STAGED_JOBS: &str = "
WITH t AS (
    SELECT j.ext_id, j.name, j.position, j.started_at, j.stopped_at, j.detail_url,
        j.error_code, j.error_msg,
        coalesce(j.stage, j.name) AS stage_name,
        CASE WHEN j.stage IS NULL THEN 'job:' || j.ext_id ELSE 'stage:' || j.stage END AS stage_key,
        CASE j.status WHEN 'running' THEN 4
            WHEN 'waiting' THEN CASE WHEN j.kind = 'approval' THEN 3 ELSE 1 END
            WHEN 'queued' THEN 1 ELSE 0 END AS status_rank,
        CASE WHEN j.status IN ('failed', 'error', 'timeout') THEN 2
            WHEN j.status = 'canceled' THEN 1 ELSE 0 END AS outcome_rank
    FROM jobs j WHERE j.run_id = ?1),
s AS (
    SELECT t.*,
        min(position) OVER stage AS stage_first,
        min(started_at) OVER stage AS stage_start,
        max(stopped_at) OVER stage AS stage_stop,
        max(status_rank) OVER stage AS stage_status,
        max(outcome_rank) OVER stage AS stage_outcome,
        max(status_rank) OVER () AS run_status
    FROM t WINDOW stage AS (PARTITION BY stage_key))
SELECT ext_id, name, started_at, stopped_at, detail_url, error_code, error_msg, status_rank,
    outcome_rank, stage_key, stage_name, stage_start, stage_stop, stage_status, stage_outcome,
    dense_rank() OVER (ORDER BY stage_first, stage_key) AS stage_number, run_status
FROM s ORDER BY stage_first, stage_key, position";

/// A time as CodeArts writes it: "YYYY-MM-DD HH:MM:SS" at the UTC offset.
fn local_time(ms: i64, offset_min: i32) -> String {
    let t =
        OffsetDateTime::from_unix_timestamp((ms + i64::from(offset_min) * 60_000).div_euclid(1000))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// "HH:MM:SS" of a duration (hours may pass 99); negative durations count as zero.
fn elapsed(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Times, elapsed time, status and outcome of a run, stage or task.
struct Progress {
    start: Option<i64>,
    end: Option<i64>,
    status_rank: u8,
    outcome_rank: u8,
}

impl Progress {
    /// The fields every entry shares. An entry still in progress has no end and its elapsed
    /// time runs to now; a completed one without times has none.
    fn fields(&self, now: i64, offset: i32) -> [(&'static str, Value); 5] {
        let completed = self.status_rank == 0;
        let end = if completed { self.end } else { None };
        let took = match (self.start, end) {
            (Some(s), Some(e)) => e - s,
            (Some(s), None) if !completed => now - s,
            _ => 0,
        };
        [
            (
                "start_time",
                json!(self.start.map(|t| local_time(t, offset))),
            ),
            ("end_time", json!(end.map(|t| local_time(t, offset)))),
            ("elapsed_time", json!(elapsed(took))),
            (
                "status",
                json!(STATUS_WORDS[usize::from(self.status_rank.min(4))]),
            ),
            (
                "outcome",
                json!(completed.then(|| OUTCOME_WORDS[usize::from(self.outcome_rank.min(2))])),
            ),
        ]
    }
}

fn entry(base: Value, p: &Progress, now: i64, offset: i32) -> Value {
    let mut v = base;
    for (k, x) in p.fields(now, offset) {
        v[k] = x;
    }
    v
}

/// A pipeline: its workflow (SELECT_PIPELINE).
struct Pipeline {
    workflow_id: i64,
    project_id: i64,
    name: String,
    pipeline_id: String,
}

/// A build: the run of LATEST_RUN or RUN_BY_BUILD_ID.
struct RunRow {
    rowid: i64,
    number: i64,
    actor: Option<String>,
    status: String,
    started_at: Option<i64>,
    stopped_at: Option<i64>,
    created_at: i64,
    detail_url: Option<String>,
    parameters: Option<String>,
}

impl RunRow {
    /// The run columns of a row, from column `at` on.
    fn from_row(r: &Row, at: usize) -> rusqlite::Result<RunRow> {
        Ok(RunRow {
            rowid: r.get(at)?,
            number: r.get(at + 1)?,
            actor: r.get(at + 2)?,
            status: r.get(at + 3)?,
            started_at: r.get(at + 4)?,
            stopped_at: r.get(at + 5)?,
            created_at: r.get(at + 6)?,
            detail_url: r.get(at + 7)?,
            parameters: r.get(at + 8)?,
        })
    }
}

/// A job of SELECT_STAGED_JOBS with its stage's figures.
struct StagedJob {
    ext_id: String,
    name: String,
    started_at: Option<i64>,
    stopped_at: Option<i64>,
    detail_url: Option<String>,
    error_code: Option<String>,
    error_msg: Option<String>,
    status_rank: u8,
    outcome_rank: u8,
    stage_key: String,
    stage_name: String,
    stage_start: Option<i64>,
    stage_stop: Option<i64>,
    stage_status: u8,
    stage_outcome: u8,
    stage_number: i64,
    /// The highest status rank among the run's jobs.
    run_status: u8,
}

impl StagedJob {
    fn from_row(r: &Row) -> rusqlite::Result<StagedJob> {
        Ok(StagedJob {
            ext_id: r.get(0)?,
            name: r.get(1)?,
            started_at: r.get(2)?,
            stopped_at: r.get(3)?,
            detail_url: r.get(4)?,
            error_code: r.get(5)?,
            error_msg: r.get(6)?,
            status_rank: r.get(7)?,
            outcome_rank: r.get(8)?,
            stage_key: r.get(9)?,
            stage_name: r.get(10)?,
            stage_start: r.get(11)?,
            stage_stop: r.get(12)?,
            stage_status: r.get(13)?,
            stage_outcome: r.get(14)?,
            stage_number: r.get(15)?,
            run_status: r.get(16)?,
        })
    }
}

/// (status rank, outcome rank) of a run's status, as for jobs (see SELECT_STAGED_JOBS).
fn ranks(status: &str, waiting_for_approval: bool) -> (u8, u8) {
    let status_rank = match status {
        "running" => 4,
        "waiting" if waiting_for_approval => 3,
        "queued" | "waiting" => 1,
        _ => 0,
    };
    let outcome_rank = match status {
        "failed" | "error" | "timeout" => 2,
        "canceled" => 1,
        _ => 0,
    };
    (status_rank, outcome_rank)
}

fn status(app: &App, conn: &Connection, req: &Req, pipeline_id: &str) -> Result<Resp> {
    let pipeline = conn
        .prepare_cached(SELECT_PIPELINE)?
        .query_row([pipeline_id], |r| {
            Ok(Pipeline {
                workflow_id: r.get(0)?,
                project_id: r.get(1)?,
                name: r.get(2)?,
                pipeline_id: r.get(3)?,
            })
        })
        .optional()?
        .ok_or_else(|| Error::NotFound(format!("no pipeline with id {pipeline_id:?}")))?;
    let build_id = req.param("build_id").filter(|b| !b.is_empty());
    let run = match build_id {
        None => conn
            .prepare_cached(LATEST_RUN)?
            .query_row(params![pipeline.workflow_id, pipeline.project_id], |r| {
                RunRow::from_row(r, 0)
            })
            .optional()?,
        Some(b) => conn
            .prepare_cached(RUN_BY_BUILD_ID)?
            .query_row(
                params![
                    pipeline.workflow_id,
                    b.parse::<i64>().ok(),
                    b,
                    pipeline.project_id
                ],
                |r| RunRow::from_row(r, 1),
            )
            .optional()?,
    };
    let Some(run) = run else {
        let id = &pipeline.pipeline_id;
        return Err(Error::NotFound(match build_id {
            Some(b) => format!("pipeline {id:?} has no build {b:?}"),
            None => format!("pipeline {id:?} has no build yet"),
        }));
    };

    let (now, offset) = (app.now_ms(), app.settings.utc_offset);
    let mut states: Vec<Value> = Vec::new();
    let mut current_stage: Option<String> = None;
    let mut approval_waiting = false;
    let mut stmt = conn.prepare_cached(SELECT_STAGED_JOBS)?;
    for job in stmt.query_map([run.rowid], StagedJob::from_row)? {
        let job = job?;
        approval_waiting = job.run_status == 3;
        if current_stage.as_deref() != Some(job.stage_key.as_str()) {
            let stage = Progress {
                start: job.stage_start,
                end: job.stage_stop,
                status_rank: job.stage_status,
                outcome_rank: job.stage_outcome,
            };
            let base = json!({
                "id": format!("stage_{}", job.stage_number),
                "name": job.stage_name,
                "type": "stage",
                "error_code": null,
                "error_msg": null,
                "detail_url": null,
                "children": [],
            });
            states.push(entry(base, &stage, now, offset));
            current_stage = Some(job.stage_key);
        }
        let task = Progress {
            start: job.started_at,
            end: job.stopped_at,
            status_rank: job.status_rank,
            outcome_rank: job.outcome_rank,
        };
        let base = json!({
            "id": job.ext_id,
            "name": job.name,
            "type": "task",
            "error_code": job.error_code,
            "error_msg": job.error_msg,
            "detail_url": job.detail_url,
            "children": [],
        });
        if let Some(children) = states.last_mut().and_then(|s| s["children"].as_array_mut()) {
            children.push(entry(base, &task, now, offset));
        }
    }

    let (status_rank, outcome_rank) = ranks(&run.status, approval_waiting);
    let progress = Progress {
        start: run.started_at.or(Some(run.created_at)),
        end: run.stopped_at,
        status_rank,
        outcome_rank,
    };
    let parameters = run
        .parameters
        .and_then(|p| serde_json::from_str::<Value>(&p).ok())
        .unwrap_or_else(|| json!([]));
    let base = json!({
        "pipeline_id": pipeline.pipeline_id,
        "pipeline_name": pipeline.name,
        "executor": run.actor,
        "build_id": run.number.to_string(),
        "parameters": parameters,
        "detail_url": run.detail_url,
        "states": states,
    });
    Ok(Resp::json(200, &entry(base, &progress, now, offset)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codearts_times() {
        // 1709287200000 is 2024-03-01T10:00:00Z; at +08:00 that is 18:00.
        assert_eq!(local_time(1_709_287_200_000, 480), "2024-03-01 18:00:00");
        assert_eq!(local_time(1_709_287_200_999, -60), "2024-03-01 09:00:00");
        assert_eq!(elapsed(3_723_000), "01:02:03");
        assert_eq!(elapsed(-5), "00:00:00");
        assert_eq!(elapsed(360_000_000), "100:00:00");
    }
}
