//! The one writer thread of `serve`: group commit for ingestion.
//!
//! Workers validate a request and hand the write to this thread, which owns its own
//! connection. It takes every write waiting in its queue, applies them in one IMMEDIATE
//! transaction (replayed with a savepoint per request when one fails, so a failing request
//! rolls back alone), commits once (one fsync for the whole group), and only then answers each
//! request. So every acknowledged write is
//! durable, each request is all-or-nothing, and concurrent requests share a commit.

use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rusqlite::{Connection, TransactionBehavior};

use crate::db;
use crate::error::{Error, Result};
use crate::model::{Rollback, Run, TestCase};
use crate::store::{self, Attached, Counts, Ids};

/// Most requests committed together.
const MAX_GROUP: usize = 256;

pub enum Write {
    Runs(Vec<Run>),
    Rollbacks(Vec<Rollback>),
    Tests {
        slug: String,
        run: String,
        job: Option<String>,
        tests: Vec<TestCase>,
    },
    /// One run's jobs merged into the stored run, the run created from it when absent
    /// (`store::merge_jobs_into_run`); answered as `Written::Runs`.
    JobsIntoRun(Box<Run>),
}

pub enum Written {
    Runs(Counts),
    Rollbacks(usize),
    Tests(Attached),
}

struct Pending {
    write: Write,
    reply: mpsc::SyncSender<Result<Written>>,
}

/// The handle workers use to submit writes.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Pending>,
}

impl Writer {
    /// Opens the writer's connection and starts its thread. The thread ends when every
    /// `Writer` handle has been dropped and the queue is empty.
    pub fn start(path: &Path) -> Result<(Writer, JoinHandle<()>)> {
        let conn = db::open(path)?;
        let (queue, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || run(conn, rx))?;
        Ok((Writer { queue }, handle))
    }

    /// Submits a write and waits until it is committed (or refused).
    pub fn submit(&self, write: Write) -> Result<Written> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.queue
            .send(Pending { write, reply })
            .map_err(|_| Error::Internal("the writer has stopped".into()))?;
        answer
            .recv()
            .map_err(|_| Error::Internal("the writer has stopped".into()))?
    }
}

fn run(mut conn: Connection, rx: mpsc::Receiver<Pending>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let writes: Vec<&Write> = group.iter().map(|p| &p.write).collect();
        let results = commit_group(&mut conn, &writes);
        for (pending, result) in group.into_iter().zip(results) {
            // A worker that gave up waiting is not an error of the writer.
            let _ = pending.reply.send(result);
        }
    }
}

/// Applies every write of a group and commits once. The common case, where every write
/// succeeds, runs in one IMMEDIATE transaction with no savepoints. When one write fails, that
/// transaction is rolled back and the group is replayed with a savepoint per write, so the
/// failing request rolls back alone and the others still land.
fn commit_group(conn: &mut Connection, writes: &[&Write]) -> Vec<Result<Written>> {
    match all_or_nothing(conn, writes) {
        Ok(results) => results,
        Err(Replay::Commit(e)) => {
            log::error!("commit failed: {e}");
            all_failed(writes.len(), &e)
        }
        Err(Replay::OneFailed) => one_by_one(conn, writes),
    }
}

enum Replay {
    /// A write failed; the transaction was rolled back.
    OneFailed,
    /// The transaction could not begin or commit.
    Commit(Error),
}

fn all_failed(n: usize, e: &dyn std::fmt::Display) -> Vec<Result<Written>> {
    (0..n)
        .map(|_| Err(Error::Internal(format!("write failed: {e}"))))
        .collect()
}

fn all_or_nothing(
    conn: &mut Connection,
    writes: &[&Write],
) -> Result<Vec<Result<Written>>, Replay> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| Replay::Commit(e.into()))?;
    let mut ids = Ids::default();
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        // Dropping `tx` on the early return rolls everything back.
        results.push(Ok(
            apply(&tx, &mut ids, write).map_err(|_| Replay::OneFailed)?
        ));
    }
    tx.commit().map_err(|e| Replay::Commit(e.into()))?;
    Ok(results)
}

fn one_by_one(conn: &mut Connection, writes: &[&Write]) -> Vec<Result<Written>> {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return all_failed(writes.len(), &e),
    };
    let mut ids = Ids::default();
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        let result = tx.savepoint().map_err(Error::from).and_then(|sp| {
            let r = apply(&sp, &mut ids, write)?;
            sp.commit()?;
            Ok(r)
        });
        if result.is_err() {
            // The savepoint rolled back on drop; forget rows it may have created.
            ids.clear();
        }
        results.push(result);
    }
    match tx.commit() {
        Ok(()) => results,
        Err(e) => {
            log::error!("commit failed: {e}");
            all_failed(writes.len(), &e)
        }
    }
}

fn apply(conn: &Connection, ids: &mut Ids, write: &Write) -> Result<Written> {
    Ok(match write {
        Write::Runs(runs) => Written::Runs(store::write_runs(conn, ids, runs)?),
        Write::Rollbacks(rbs) => Written::Rollbacks(store::write_rollbacks(conn, ids, rbs)?),
        Write::Tests {
            slug,
            run,
            job,
            tests,
        } => Written::Tests(store::attach_tests(
            conn,
            ids,
            slug,
            run,
            job.as_deref(),
            tests,
        )?),
        Write::JobsIntoRun(run) => {
            let created = store::merge_jobs_into_run(conn, ids, run)? == store::Upsert::Created;
            Written::Runs(Counts {
                created: u64::from(created),
                updated: 0,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str) -> Run {
        let v = serde_json::json!({"id": id, "project": "gh/acme/api", "workflow": "ci",
            "status": "success", "created_at": "2026-03-01T10:00:00Z"});
        crate::ingest::run_from_json(&v).unwrap()
    }

    fn stored(conn: &Connection) -> Vec<String> {
        let mut st = conn
            .prepare("SELECT ext_id FROM runs ORDER BY ext_id")
            .unwrap();
        let rows = st.query_map([], |r| r.get(0)).unwrap();
        rows.map(|r| r.unwrap()).collect()
    }

    #[test]
    fn a_failing_write_in_a_group_rolls_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = db::open(&dir.path().join("w.db")).unwrap();
        // Tests for a run that does not exist fail; the writes around it must still land.
        let bad = Write::Tests {
            slug: "gh/acme/api".into(),
            run: "missing".into(),
            job: None,
            tests: Vec::new(),
        };
        let (a, b) = (Write::Runs(vec![run("a")]), Write::Runs(vec![run("b")]));
        let results = commit_group(&mut conn, &[&a, &bad, &b]);
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, true]);
        assert_eq!(stored(&conn), ["a", "b"]);
    }

    #[test]
    fn a_group_without_failures_commits_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = db::open(&dir.path().join("w.db")).unwrap();
        let (a, b) = (
            Write::Runs(vec![run("a")]),
            Write::Runs(vec![run("b"), run("c")]),
        );
        let results = commit_group(&mut conn, &[&a, &b]);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(stored(&conn), ["a", "b", "c"]);
    }
}
