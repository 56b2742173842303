//! The DORA deployments (`dora_deploys`): every finished deploy job (success, failed, error,
//! timeout, with a `stopped_at`) with what the DORA surface needs of its run, per project in
//! time order, so a DORA request reads one range of one table instead of a project's deploy jobs
//! and a random read of each one's run.
//!
//! Upkeep: any write of a deploy job (before or after), and any update of a run, marks the run;
//! `flush` recomputes the rows of each marked run from its stored jobs and run. A run inserted
//! in the transaction and never replaced in it gets its rows from the values written instead,
//! without reading them back. The rebuild computes the table from every stored job with one
//! INSERT … SELECT; tests compare the two.

use std::collections::{BTreeSet, HashMap};

use rusqlite::{params, Connection};

use super::{Family, New, Old};
use crate::error::Result;
use crate::model::{Job, Kind, Run, Status};

/// The marked runs of a transaction, and the runs it inserted.
#[derive(Default)]
pub struct Pending {
    runs: BTreeSet<i64>,
    fresh: HashMap<i64, FreshRun>,
}

/// A run inserted in this transaction: what its rows take from it, and its deployments so far.
struct FreshRun {
    ext_id: String,
    branch: Option<String>,
    commit: Option<String>,
    committed_at: Option<i64>,
    deploys: Vec<Deploy>,
}

/// A finished deploy job of a fresh run, as its row holds it.
struct Deploy {
    project_id: i64,
    at: i64,
    job_id: i64,
    production: bool,
    env: Option<String>,
    service: Option<String>,
    status: Status,
}

impl Deploy {
    /// The row of `job` (row `job_id`), when it is a finished deployment (as ROWS selects).
    fn of(project_id: i64, job_id: i64, job: &Job) -> Option<Deploy> {
        let finished = matches!(
            job.status,
            Status::Success | Status::Failed | Status::Error | Status::Timeout
        );
        let at = job
            .stopped_at
            .filter(|_| job.kind == Kind::Deploy && finished)?;
        Some(Deploy {
            project_id,
            at,
            job_id,
            production: job.production,
            env: job.env.clone(),
            service: job.service.clone(),
            status: job.status,
        })
    }
}

impl FreshRun {
    fn of(run: &Run) -> FreshRun {
        FreshRun {
            ext_id: run.id.clone(),
            branch: run.branch.clone(),
            commit: run.commit.clone(),
            committed_at: run.committed_at,
            deploys: Vec::new(),
        }
    }
}

const INSERT_ROW: &str = "INSERT INTO dora_deploys (project_id, at, job_id, run_id, production,
    env, service, status, run_ext, branch, commit_sha, committed_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

/// The rows of the deploy jobs of some runs, as the table holds them (`?1`: a run, or NULL for
/// every run).
const ROWS: &str = "SELECT j.project_id, j.stopped_at, j.id, j.run_id, j.production, j.env,
    j.service, j.status, r.ext_id, r.branch, r.commit_sha, r.committed_at
    FROM jobs j JOIN runs r ON r.id = j.run_id
    WHERE j.kind = 'deploy' AND j.stopped_at IS NOT NULL
      AND (j.status = 'success' OR j.status = 'failed' OR j.status = 'error' OR j.status = 'timeout')";

const DELETE_RUN: &str = "DELETE FROM dora_deploys WHERE run_id = ?1";

fn insert_run() -> String {
    format!("INSERT INTO dora_deploys {ROWS} AND j.run_id = ?1")
}

impl Family for Pending {
    fn replacing(&mut self, _conn: &Connection, old: Old) -> Result<()> {
        match old {
            Old::Run(r) => {
                self.runs.insert(r.id);
            }
            Old::Job(j) if j.kind == Kind::Deploy => {
                self.runs.insert(j.run_id);
            }
            Old::Job(_) | Old::Tests { .. } => {}
        }
        Ok(())
    }

    fn written(&mut self, _conn: &Connection, new: New) -> Result<()> {
        match new {
            New::Run {
                id, run, old: None, ..
            } => {
                self.fresh.insert(id, FreshRun::of(run));
            }
            // An update of a run may change its branch, commit or commit time: its deployments
            // are read again.
            New::Run {
                id, old: Some(_), ..
            } => {
                self.runs.insert(id);
            }
            New::Job { id, at, job, .. } if job.kind == Kind::Deploy => {
                match self.fresh.get_mut(&at.run_id) {
                    Some(run) if !self.runs.contains(&at.run_id) => {
                        run.deploys.extend(Deploy::of(at.project_id, id, job));
                    }
                    _ => {
                        self.runs.insert(at.run_id);
                    }
                }
            }
            New::Job { .. } | New::Tests { .. } => {}
        }
        Ok(())
    }

    fn flush(&mut self, conn: &Connection) -> Result<()> {
        let (runs, fresh) = (
            std::mem::take(&mut self.runs),
            std::mem::take(&mut self.fresh),
        );
        // A fresh run replaced in the transaction is recomputed with the marked ones.
        let mut insert = conn.prepare_cached(INSERT_ROW)?;
        for (run_id, run) in fresh.iter().filter(|(id, _)| !runs.contains(id)) {
            for d in &run.deploys {
                insert.execute(params![
                    d.project_id,
                    d.at,
                    d.job_id,
                    run_id,
                    d.production,
                    d.env,
                    d.service,
                    d.status,
                    run.ext_id,
                    run.branch,
                    run.commit,
                    run.committed_at
                ])?;
            }
        }
        if runs.is_empty() {
            return Ok(());
        }
        let mut delete = conn.prepare_cached(DELETE_RUN)?;
        let mut insert = conn.prepare_cached(&insert_run())?;
        for run in runs {
            delete.execute([run])?;
            insert.execute([run])?;
        }
        Ok(())
    }
}

/// Recomputes `dora_deploys` from every stored deploy job.
pub fn rebuild(conn: &Connection) -> Result<()> {
    conn.execute("DELETE FROM dora_deploys", [])?;
    conn.execute(&format!("INSERT INTO dora_deploys {ROWS}"), [])?;
    Ok(())
}
