//! The DORA deployments (`dora_deploys`): every finished deploy job (success, failed, error,
//! timeout, with a `stopped_at`) with what the DORA surface needs of its run, per project in
//! time order, so a DORA request reads one range of one table instead of a project's deploy jobs
//! and a random read of each one's run.
//!
//! Upkeep: any write of a deploy job (before or after), and any update of a run, marks the run;
//! `flush` recomputes the rows of each marked run from its stored jobs and run. The rebuild
//! computes the table from every stored job with one INSERT … SELECT; tests compare the two.

use std::collections::BTreeSet;

use rusqlite::Connection;

use super::{Family, New, Old};
use crate::error::Result;
use crate::model::Kind;

/// The marked runs of a transaction.
#[derive(Default)]
pub struct Pending {
    runs: BTreeSet<i64>,
}

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
            // An update of a run may change its branch, commit or commit time: its deployments
            // are read again (a new run's deploy jobs mark it as they are written).
            New::Run {
                id, old: Some(_), ..
            } => {
                self.runs.insert(id);
            }
            New::Job { at, job, .. } if job.kind == Kind::Deploy => {
                self.runs.insert(at.run_id);
            }
            New::Run { .. } | New::Job { .. } | New::Tests { .. } => {}
        }
        Ok(())
    }

    fn flush(&mut self, conn: &Connection) -> Result<()> {
        if self.runs.is_empty() {
            return Ok(());
        }
        let mut delete = conn.prepare_cached(DELETE_RUN)?;
        let mut insert = conn.prepare_cached(&insert_run())?;
        for run in std::mem::take(&mut self.runs) {
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
