//! Demo data: a deterministic generator of realistic histories (`generate`, domain values
//! only) and `fill`, which writes them through the store (`pipestat demo`, `serve --demo`).

mod dora;
mod generate;

use std::path::Path;
use std::time::Instant;

pub use generate::{generate, Spec};

use crate::error::{Error, Result};
use crate::store::bulk::{write_batch, BULK_BATCH};
use crate::store::{self, db, Ids};

/// Fills the database with generated demo data (`pipestat demo`, `serve --demo`).
pub fn fill(db_path: &Path, runs: Option<u64>, days: u32, seed: u64, now_ms: i64) -> Result<()> {
    let mut conn = db::open_bulk(db_path)?;
    let spec = Spec {
        runs,
        days,
        seed,
        now_ms,
    };
    let started = Instant::now();
    let mut written = 0u64;
    let rollbacks = generate(&spec, BULK_BATCH, |batch| -> Result<()> {
        let (_, failures) = write_batch(&mut conn, &batch)?;
        if let Some((i, e)) = failures.into_iter().next() {
            return Err(Error::Internal(format!(
                "demo run {:?} was refused: {e}",
                batch[i].id
            )));
        }
        written += batch.len() as u64;
        if written % 100_000 < BULK_BATCH as u64 {
            eprint!("\rdemo: {written} runs");
        }
        Ok(())
    })?;
    db::immediate(&conn, |tx| {
        store::write_rollbacks(tx, &mut Ids::default(), &rollbacks)
    })?;
    // The DORA story: two projects of their own, with pushes and incidents.
    let story = dora::generate(seed, days, now_ms);
    let (_, failures) = write_batch(&mut conn, &story.runs)?;
    if let Some((i, e)) = failures.into_iter().next() {
        return Err(Error::Internal(format!(
            "demo run {:?} was refused: {e}",
            story.runs[i].id
        )));
    }
    db::immediate(&conn, |tx| {
        let mut ids = Ids::default();
        store::dora::write_pushes(tx, &mut ids, &story.pushes)?;
        store::dora::write_incidents(tx, &mut ids, &story.incidents)?;
        store::write_rollbacks(tx, &mut ids, &story.rollbacks)
    })?;
    written += story.runs.len() as u64;
    eprintln!(
        "\rdemo: {written} runs, {} rollbacks, {} pushes and {} incidents over {days} days in {:.1} s",
        rollbacks.len() + story.rollbacks.len(),
        story.pushes.len(),
        story.incidents.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
