//! The one writer thread of `serve`: group commit for ingestion.
//!
//! Workers validate a request and hand the write to this thread, which owns its own
//! connection. It takes every write waiting in its queue, applies each inside a savepoint of
//! one IMMEDIATE transaction (a failing request rolls back alone), commits once (one fsync for
//! the whole group), and only then answers each request. So every acknowledged write is
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
        let results = commit_group(&mut conn, group.iter().map(|p| &p.write));
        for (pending, result) in group.into_iter().zip(results) {
            // A worker that gave up waiting is not an error of the writer.
            let _ = pending.reply.send(result);
        }
    }
}

/// Applies every write in one IMMEDIATE transaction, each in its own savepoint.
fn commit_group<'a>(
    conn: &mut Connection,
    writes: impl ExactSizeIterator<Item = &'a Write>,
) -> Vec<Result<Written>> {
    let n = writes.len();
    let all_failed = |e: &dyn std::fmt::Display| -> Vec<Result<Written>> {
        (0..n)
            .map(|_| Err(Error::Internal(format!("write failed: {e}"))))
            .collect()
    };
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return all_failed(&e),
    };
    let mut ids = Ids::default();
    let mut results = Vec::with_capacity(n);
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
            all_failed(&e)
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
        } => Written::Tests(store::attach_tests(conn, slug, run, job.as_deref(), tests)?),
        Write::JobsIntoRun(run) => {
            let created = store::merge_jobs_into_run(conn, ids, run)? == store::Upsert::Created;
            Written::Runs(Counts {
                created: u64::from(created),
                updated: 0,
            })
        }
    })
}
