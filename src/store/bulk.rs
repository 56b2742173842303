//! Bulk loads (`pipestat import`, the demo data): batches of runs, one IMMEDIATE transaction
//! each, with the runs a batch refuses set apart.

use rusqlite::{Connection, TransactionBehavior};

use super::{flush, write_run, write_runs, Counts, Ids, Upsert};
use crate::error::{Error, Result};
use crate::model::Run;

/// Runs per transaction for bulk loads.
pub const BULK_BATCH: usize = 5_000;

/// Writes one batch of runs in one IMMEDIATE transaction. If the batch fails as a whole, it is
/// written again run by run, each in a savepoint, and the runs that fail are returned with
/// their error; the rest land.
pub fn write_batch(conn: &mut Connection, runs: &[Run]) -> Result<(Counts, Vec<(usize, Error)>)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut ids = Ids::default();
    let written =
        write_runs(&tx, &mut ids, runs).and_then(|counts| flush(&tx, &mut ids).map(|()| counts));
    if let Ok(counts) = written {
        tx.commit()?;
        return Ok((counts, Vec::new()));
    }
    drop(tx);
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut ids = Ids::default();
    let mut total = Counts::default();
    let mut failures = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let sp = tx.savepoint()?;
        match write_run(&sp, &mut ids, run).and_then(|u| flush(&sp, &mut ids).map(|()| u)) {
            Ok(u) => {
                sp.commit()?;
                total.created += u64::from(u == Upsert::Created);
                total.updated += u64::from(u == Upsert::Updated);
            }
            Err(e) => {
                drop(sp);
                ids.clear();
                failures.push((i, e));
            }
        }
    }
    tx.commit()?;
    Ok((total, failures))
}
