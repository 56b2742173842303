//! The one writer thread of `serve`: group commit for ingestion.
//!
//! Workers validate a request and hand the write to this thread, which owns its own
//! connection. It takes every write waiting in its queue, applies them in one IMMEDIATE
//! transaction (replayed with a savepoint per request when one fails, so a failing request
//! rolls back alone), writes the group's rollup counts once (`store::flush`), and commits
//! once. So each request is all-or-nothing and concurrent requests share a commit.
//!
//! The fsync is taken off the writer's path. The writer's connection commits with
//! `synchronous = NORMAL`: the commit appends the group's pages to the WAL file and returns
//! without waiting for the disk. The group's answers then go to a second thread, the syncer,
//! which takes every committed group waiting for it, flushes the WAL file to the disk once
//! (`fdatasync`), and only then answers their requests. While it waits for the disk, the
//! writer applies and commits the next group. So every acknowledged write is durable, as with
//! `synchronous = FULL`, but one fsync covers every group committed meanwhile instead of each
//! group waiting for its own. SQLite's own checkpoints stay safe in this mode: with
//! `synchronous = NORMAL` a checkpoint syncs the WAL before copying pages back and the
//! database file before the WAL is reused. Readers may see a group's rows a moment before
//! its requests are answered; a write that is never answered may be lost to a power cut, as
//! with any commit still on its way to the disk. If an fsync fails, the syncer answers the
//! requests waiting for it with an error, and the writer writes nothing more, answering every
//! later write with an error until pipestat restarts: after a failed fsync the kernel no
//! longer says which pages reached the disk. That holds for an fsync that fails with ENOSPC
//! too (a file system that allocates blocks at writeback, or a network one): the kernel may
//! have dropped the dirty pages it could not write, so what the WAL holds on the disk is not
//! known, and a later successful fsync would not say otherwise.
//!
//! A full disk met by a write or a commit is a different failure, which the writer recovers
//! from. SQLite reports it (SQLITE_FULL, `Error::StorageFull`) when appending the group's pages
//! to the WAL fails; the transaction is rolled back, no commit record reached the WAL, and the
//! earlier groups, whose fsyncs succeeded, are untouched. So the group's requests are answered
//! 503 with `Retry-After` and nothing of them is stored; the writer then marks itself full
//! (`/readyz` answers 503) and tries a checkpoint that truncates the WAL (`wal_checkpoint
//! (TRUNCATE)`), which gives back the space the WAL's older page versions took. While full it
//! goes on trying every write it is given, and when idle for `PROBE_EVERY` it probes: that
//! checkpoint again, then a commit of one page (the database header, rewritten unchanged). The
//! first write or probe that commits clears the mark. A checkpoint syncs the WAL before copying
//! its pages into the database and syncs the database before truncating the WAL; one whose
//! fsync fails counts as a failed fsync (above). With `--checkpoints litestream` (`db::Checkpoints`)
//! the writer never checkpoints: the probe only tries its one-page commit, which succeeds once
//! Litestream's next checkpoint lets the WAL be reused from its start.
//!
//! A worker announces a write request as soon as it starts on it (`Writer::announce`), before
//! reading and validating its body. Before committing, the writer waits for the announced
//! writes still being prepared, up to `MAX_WAIT`, so concurrent requests land in one group
//! instead of each paying a commit of its own.

use std::cell::Cell;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Error, Result};
use crate::metrics::WriterMetrics;
use crate::model::{Incident, Push, Rollback, Run, TestCase};
use crate::store::db;
use crate::store::{self, dora, tokens, Attached, Counts, Ids, Known};

/// Most requests committed together.
const MAX_GROUP: usize = 256;

/// The longest the writer holds a group open for announced writes still being prepared. A
/// single run is read and validated in well under a millisecond; a large array takes longer,
/// and is committed in a later group rather than keeping the others waiting.
const MAX_WAIT: Duration = Duration::from_millis(2);

/// How long the writer, marked full, waits idle before probing for space again.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The longest a checkpoint after a full disk waits for readers to leave the WAL.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(1);

/// The writer's state, shared with the syncer and with `/readyz`.
#[derive(Default)]
struct Health {
    /// An fsync failed: nothing more is written until pipestat restarts.
    disk_failed: AtomicBool,
    /// The last write (or probe) found the disk full, and none has committed since.
    full: AtomicBool,
    /// Group sizes and commit times, for `/metrics`.
    metrics: WriterMetrics,
}

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
    /// A new token, by the hash of its secret; a name in use is refused.
    CreateToken {
        name: String,
        hash: String,
        scopes: String,
        now: i64,
    },
    /// The named token deleted; answered `Written::Revoked(false)` when there was none.
    RevokeToken(String),
    /// Pushes upserted by (project, branch, last commit's sha); answered `Written::Pushes`.
    Pushes(Vec<Push>),
    /// Incidents upserted by (project, id); answered `Written::Incidents`.
    Incidents(Vec<Incident>),
    /// The incident (project slug, id) removed; answered `Written::Revoked(false)` when there
    /// was none.
    RemoveIncident {
        project: String,
        id: String,
    },
}

pub enum Written {
    Runs(Counts),
    Rollbacks(usize),
    Tests(Attached),
    TokenCreated,
    Revoked(bool),
    Pushes(Counts),
    Incidents(Counts),
}

struct Pending {
    write: Write,
    reply: mpsc::SyncSender<Result<Written>>,
}

/// The handle workers use to submit writes.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::Sender<Pending>,
    /// Announced writes not submitted yet.
    preparing: Arc<AtomicUsize>,
    health: Arc<Health>,
}

thread_local! {
    /// Whether this thread has announced a write it has not submitted yet.
    static ANNOUNCED: Cell<bool> = const { Cell::new(false) };
}

/// A write request being prepared on this thread (see `Writer::announce`). Dropping it, or
/// submitting a write, withdraws the announcement.
pub struct Announced {
    preparing: Arc<AtomicUsize>,
}

impl Drop for Announced {
    fn drop(&mut self) {
        if ANNOUNCED.replace(false) {
            self.preparing.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Writer {
    /// Opens the writer's connection and starts its thread and the syncer's. The writer
    /// thread ends when every `Writer` handle has been dropped and the queue is empty, after
    /// the syncer has answered every committed write.
    pub fn start(path: &Path) -> Result<(Writer, JoinHandle<()>)> {
        let conn = db::open(path)?;
        // Commits append to the WAL without waiting for the disk; the syncer flushes it
        // before any of them is answered (see the module's documentation).
        conn.execute_batch("PRAGMA synchronous = NORMAL")?;
        let wal = open_wal(&conn)?;
        let (queue, rx) = mpsc::channel();
        let preparing = Arc::new(AtomicUsize::new(0));
        let counter = preparing.clone();
        let health = Arc::new(Health::default());
        let state = health.clone();
        let handle = std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                let (committed, to_sync) = mpsc::channel();
                let flag = state.clone();
                let syncer = std::thread::Builder::new()
                    .name("syncer".into())
                    .spawn(move || sync_loop(&wal, &to_sync, &flag.disk_failed, |f| f.sync_data()));
                match syncer {
                    Ok(syncer) => {
                        run(conn, &rx, &counter, &committed, &state);
                        drop(committed);
                        if let Ok(s) = syncer.join() {
                            log::info!(
                                "syncer: {} flushes of the WAL for {} answers, {:.2} s flushing",
                                s.flushes,
                                s.answers,
                                s.flushing.as_secs_f64()
                            );
                        }
                    }
                    Err(e) => log::error!("cannot start the syncer thread: {e}"),
                }
            })?;
        Ok((
            Writer {
                queue,
                preparing,
                health,
            },
            handle,
        ))
    }

    /// Whether writes are being taken: `StorageFull` while the disk is full (until a write or a
    /// probe commits again), `Unavailable` after a failed fsync (until pipestat restarts).
    pub fn ready(&self) -> Result<()> {
        if self.health.disk_failed.load(Ordering::SeqCst) {
            return Err(Error::Unavailable(
                "not ready: an fsync of the WAL failed; writes are refused until pipestat \
                 restarts"
                    .into(),
            ));
        }
        if self.health.full.load(Ordering::SeqCst) {
            return Err(Error::StorageFull(crate::error::STORAGE_FULL_RETRY_SECS));
        }
        Ok(())
    }

    /// The writer's histograms, for the daemon's metrics registry.
    pub fn metrics(&self) -> &WriterMetrics {
        &self.health.metrics
    }

    /// Announces that this thread is preparing a request that will probably submit a write,
    /// so that the writer waits for it (briefly) before committing the writes it holds.
    pub fn announce(&self) -> Announced {
        if !ANNOUNCED.replace(true) {
            self.preparing.fetch_add(1, Ordering::SeqCst);
        }
        Announced {
            preparing: self.preparing.clone(),
        }
    }

    /// Submits a write and waits until it is committed (or refused).
    pub fn submit(&self, write: Write) -> Result<Written> {
        if ANNOUNCED.replace(false) {
            self.preparing.fetch_sub(1, Ordering::SeqCst);
        }
        let (reply, answer) = mpsc::sync_channel(1);
        self.queue
            .send(Pending { write, reply })
            .map_err(|_| Error::Internal("the writer has stopped".into()))?;
        answer
            .recv()
            .map_err(|_| Error::Internal("the writer has stopped".into()))?
    }
}

/// What the writer did, logged when it stops.
#[derive(Default)]
struct Stats {
    groups: u64,
    writes: u64,
    largest: usize,
    waiting: Duration,
    writing: Duration,
}

/// A request's answer, sent once the WAL holding its write is on the disk.
type Answer = (mpsc::SyncSender<Result<Written>>, Result<Written>);

/// Opens the WAL file of the writer's database, for the syncer's fsyncs. The file exists
/// once a connection in WAL mode has read the database (as `db::open` does), and stays while
/// any connection is open: the writer's own is open as long as the syncer runs.
fn open_wal(conn: &Connection) -> Result<File> {
    let db = conn
        .path()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| Error::Internal("the writer needs a database file".into()))?;
    let wal = format!("{db}-wal");
    // Opened for writing, as some systems require for fsync; never written through.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&wal)
        .map_err(|e| Error::Internal(format!("cannot open the WAL file {wal}: {e}")))
}

/// The answer to a write after a failed fsync of the WAL.
fn refused() -> Error {
    Error::Internal("an fsync of the WAL failed; writes are refused until pipestat restarts".into())
}

/// What the syncer did, logged when it stops.
#[derive(Default)]
struct SyncStats {
    flushes: u64,
    answers: u64,
    flushing: Duration,
}

/// The syncer: for every batch of committed groups waiting, one flush of the WAL file to the
/// disk, then their answers. After a failed flush it sets `disk_failed`, so that the writer
/// writes nothing more, and answers every write still reaching it with an error: which pages
/// reached the disk is no longer known.
fn sync_loop(
    wal: &File,
    committed: &mpsc::Receiver<Vec<Answer>>,
    disk_failed: &AtomicBool,
    flush: impl Fn(&File) -> std::io::Result<()>,
) -> SyncStats {
    let mut stats = SyncStats::default();
    while let Ok(mut batch) = committed.recv() {
        while let Ok(more) = committed.try_recv() {
            batch.extend(more);
        }
        stats.answers += batch.len() as u64;
        if !disk_failed.load(Ordering::SeqCst) {
            let started = Instant::now();
            let flushed = flush(wal);
            stats.flushes += 1;
            stats.flushing += started.elapsed();
            if let Err(e) = flushed {
                log::error!("fsync of the WAL failed, refusing writes until restarted: {e}");
                disk_failed.store(true, Ordering::SeqCst);
            }
        }
        let failed = disk_failed.load(Ordering::SeqCst);
        for (reply, result) in batch {
            let result = if failed {
                result.and(Err(refused()))
            } else {
                result
            };
            // A worker that gave up waiting is not an error of the syncer.
            let _ = reply.send(result);
        }
    }
    stats
}

fn run(
    mut conn: Connection,
    rx: &mpsc::Receiver<Pending>,
    preparing: &AtomicUsize,
    committed: &mpsc::Sender<Vec<Answer>>,
    health: &Health,
) {
    let mut stats = Stats::default();
    let mut known = Known::default();
    loop {
        let first =
            if health.full.load(Ordering::SeqCst) && !health.disk_failed.load(Ordering::SeqCst) {
                match rx.recv_timeout(PROBE_EVERY) {
                    Ok(p) => p,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        probe(&conn, health);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(p) => p,
                    Err(_) => break,
                }
            };
        let started = Instant::now();
        let group = gather(first, rx, preparing, started + MAX_WAIT);
        if health.disk_failed.load(Ordering::SeqCst) {
            // Nothing more is written after a failed fsync (see `sync_loop`).
            for p in group {
                let _ = p.reply.send(Err(refused()));
            }
            continue;
        }
        let gathered = Instant::now();
        let writes: Vec<&Write> = group.iter().map(|p| &p.write).collect();
        let results = commit_group(&mut conn, &mut known, &writes);
        stats.groups += 1;
        stats.writes += group.len() as u64;
        stats.largest = stats.largest.max(group.len());
        stats.waiting += gathered - started;
        stats.writing += gathered.elapsed();
        health.metrics.group(group.len(), gathered.elapsed());
        let full = results
            .iter()
            .any(|r| matches!(r, Err(Error::StorageFull(_))));
        if full {
            if !health.full.swap(true, Ordering::SeqCst) {
                log::error!("the disk is full: writes are refused (503) until space is back");
            }
        } else if results.iter().any(Result::is_ok) && health.full.swap(false, Ordering::SeqCst) {
            log::warn!("space is back: a write committed; writes are taken again");
        }
        let answers = group.into_iter().map(|p| p.reply).zip(results).collect();
        if committed.send(answers).is_err() {
            log::error!("the syncer has stopped; the writer stops too");
            break;
        }
        if full {
            // The failed group's answers are on their way; give back the WAL's space now.
            if let Err(e) = checkpoint(&conn, health) {
                log::warn!("checkpoint after a full disk: {e}");
            }
        }
    }
    log::info!(
        "writer: {} writes in {} commits ({:.2} a commit, at most {}); {:.2} s writing and \
         committing (the syncer flushed the WAL meanwhile), {:.2} s waiting for announced \
         writes",
        stats.writes,
        stats.groups,
        stats.writes as f64 / stats.groups.max(1) as f64,
        stats.largest,
        stats.writing.as_secs_f64(),
        stats.waiting.as_secs_f64()
    );
}

/// Copies the WAL's pages into the database and truncates the WAL to nothing, waiting at most
/// `CHECKPOINT_WAIT` for readers to leave it. A checkpoint whose fsync fails marks the disk
/// failed (see the module's documentation). With `--checkpoints litestream` it does nothing:
/// the WAL is Litestream's to checkpoint, and a full disk waits for Litestream's next one.
fn checkpoint(conn: &Connection, health: &Health) -> Result<()> {
    if db::checkpoints() == db::Checkpoints::Litestream {
        return Ok(());
    }
    conn.busy_timeout(CHECKPOINT_WAIT)?;
    let done = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    });
    conn.busy_timeout(db::BUSY_TIMEOUT)?;
    match done {
        Ok(0) => Ok(()),
        Ok(_) => Err(Error::Internal(
            "readers still use the WAL; it is truncated at a later checkpoint".into(),
        )),
        Err(e) => {
            if is_fsync_failure(&e) {
                log::error!(
                    "fsync during a checkpoint failed, refusing writes until restarted: {e}"
                );
                health.disk_failed.store(true, Ordering::SeqCst);
            }
            Err(e.into())
        }
    }
}

/// Whether SQLite reports a failed fsync (of a file or of its directory).
fn is_fsync_failure(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, _) => matches!(
            f.extended_code,
            rusqlite::ffi::SQLITE_IOERR_FSYNC | rusqlite::ffi::SQLITE_IOERR_DIR_FSYNC
        ),
        _ => false,
    }
}

/// While the disk is full and no write arrives: a checkpoint that truncates the WAL, then one
/// page committed (the database header, rewritten unchanged). When that commits, space is
/// back and the mark is cleared; writes then show whether there is room for them.
fn probe(conn: &Connection, health: &Health) {
    if let Err(e) = checkpoint(conn, health) {
        log::debug!("probe: checkpoint: {e}");
    }
    if health.disk_failed.load(Ordering::SeqCst) {
        return;
    }
    let wrote = db::immediate(conn, |tx| {
        tx.pragma_update(None, "application_id", db::APPLICATION_ID)?;
        Ok(())
    });
    match wrote {
        Ok(()) => {
            health.full.store(false, Ordering::SeqCst);
            log::warn!("space is back: a probe write committed; writes are taken again");
        }
        Err(e) => log::debug!("probe: still no space: {e}"),
    }
}

/// The group to commit: `first`, every write already queued, and the writes announced and
/// still being prepared that arrive before `deadline`.
fn gather(
    first: Pending,
    rx: &mpsc::Receiver<Pending>,
    preparing: &AtomicUsize,
    deadline: Instant,
) -> Vec<Pending> {
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        if let Ok(p) = rx.try_recv() {
            group.push(p);
            continue;
        }
        if preparing.load(Ordering::SeqCst) == 0 {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(p) => group.push(p),
            Err(_) => break,
        }
    }
    group
}

/// Applies every write of a group and commits once. The common case, where every write
/// succeeds, runs in one IMMEDIATE transaction with no savepoints. When one write fails, that
/// transaction is rolled back and the group is replayed with a savepoint per write, so the
/// failing request rolls back alone and the others still land. `known` holds the test case
/// and artifact numbers of the groups committed before; it ends with this group's, once it
/// committed, and empty otherwise.
fn commit_group(
    conn: &mut Connection,
    known: &mut Known,
    writes: &[&Write],
) -> Vec<Result<Written>> {
    match all_or_nothing(conn, known, writes) {
        Ok(results) => results,
        Err(Replay::Commit(e)) => {
            log::error!("commit failed: {e}");
            failed(writes.len(), e)
        }
        Err(Replay::OneFailed) => one_by_one(conn, known, writes),
    }
}

enum Replay {
    /// A write failed; the transaction was rolled back.
    OneFailed,
    /// The transaction could not begin or commit, or the disk is full.
    Commit(Error),
}

/// The answers of a group none of whose writes was stored: 503 with `Retry-After` for a full
/// disk, 500 otherwise.
fn failed(n: usize, e: Error) -> Vec<Result<Written>> {
    if matches!(e, Error::StorageFull(_)) {
        return all_full(n);
    }
    (0..n)
        .map(|_| Err(Error::Internal(format!("write failed: {e}"))))
        .collect()
}

/// The answers of a group refused for lack of space (503 with `Retry-After`).
fn all_full(n: usize) -> Vec<Result<Written>> {
    (0..n)
        .map(|_| Err(Error::StorageFull(crate::error::STORAGE_FULL_RETRY_SECS)))
        .collect()
}

fn all_or_nothing(
    conn: &mut Connection,
    known: &mut Known,
    writes: &[&Write],
) -> Result<Vec<Result<Written>>, Replay> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| Replay::Commit(e.into()))?;
    let mut ids = Ids::resume(std::mem::take(known));
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        // Dropping `tx` on the early return rolls everything back.
        results.push(Ok(apply(&tx, &mut ids, write).map_err(replay)?));
    }
    // The rollup counts of the whole group, each row written once.
    store::flush(&tx, &mut ids).map_err(replay)?;
    tx.commit().map_err(|e| Replay::Commit(e.into()))?;
    *known = ids.into_known();
    Ok(results)
}

/// How to go on after a write of the group failed: a full disk fails the whole group (a
/// replay would meet it again, and SQLite may have rolled the transaction back already), any
/// other failure replays the group one write at a time.
fn replay(e: Error) -> Replay {
    match e {
        Error::StorageFull(_) => Replay::Commit(e),
        _ => Replay::OneFailed,
    }
}

fn one_by_one(conn: &mut Connection, known: &mut Known, writes: &[&Write]) -> Vec<Result<Written>> {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return failed(writes.len(), e.into()),
    };
    let mut ids = Ids::default();
    let mut results = Vec::with_capacity(writes.len());
    for write in writes {
        let result = tx.savepoint().map_err(Error::from).and_then(|sp| {
            let r = apply(&sp, &mut ids, write)?;
            store::flush(&sp, &mut ids)?;
            sp.commit()?;
            Ok(r)
        });
        if matches!(result, Err(Error::StorageFull(_))) {
            // Nothing of the group is kept: dropping `tx` rolls back what is left of it.
            return all_full(writes.len());
        }
        if result.is_err() {
            // The savepoint rolled back on drop; forget rows it may have created.
            ids.clear();
        }
        results.push(result);
    }
    match tx.commit() {
        Ok(()) => {
            // Only the numbers of released savepoints are left: failures cleared theirs.
            *known = ids.into_known();
            results
        }
        Err(e) => {
            log::error!("commit failed: {e}");
            failed(writes.len(), e.into())
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
        Write::CreateToken {
            name,
            hash,
            scopes,
            now,
        } => {
            tokens::create_token(conn, name, hash, scopes, *now)?;
            Written::TokenCreated
        }
        Write::RevokeToken(name) => Written::Revoked(tokens::revoke_token(conn, name)?),
        Write::Pushes(pushes) => Written::Pushes(dora::write_pushes(conn, ids, pushes)?),
        Write::Incidents(incidents) => {
            Written::Incidents(dora::write_incidents(conn, ids, incidents)?)
        }
        Write::RemoveIncident { project, id } => {
            Written::Revoked(dora::remove_incident(conn, project, id)?)
        }
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
        let results = commit_group(&mut conn, &mut Known::default(), &[&a, &bad, &b]);
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, false, true]);
        assert_eq!(stored(&conn), ["a", "b"]);
    }

    fn pending(id: &str) -> Pending {
        Pending {
            write: Write::Runs(vec![run(id)]),
            reply: mpsc::sync_channel(1).0,
        }
    }

    #[test]
    fn a_group_waits_for_an_announced_write() {
        let (tx, rx) = mpsc::channel();
        let preparing = Arc::new(AtomicUsize::new(1));
        let other = {
            let preparing = preparing.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                preparing.fetch_sub(1, Ordering::SeqCst);
                tx.send(pending("b")).unwrap();
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let group = gather(pending("a"), &rx, &preparing, deadline);
        other.join().unwrap();
        assert_eq!(group.len(), 2);
    }

    #[test]
    fn a_group_waits_no_longer_than_its_deadline() {
        let (_tx, rx) = mpsc::channel();
        // Announced, but never submitted.
        let preparing = AtomicUsize::new(1);
        let started = Instant::now();
        let group = gather(pending("a"), &rx, &preparing, started + MAX_WAIT);
        assert_eq!(group.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(1));
        // Nothing announced: no wait at all, whatever the deadline.
        let preparing = AtomicUsize::new(0);
        let started = Instant::now();
        let far = started + Duration::from_secs(60);
        assert_eq!(gather(pending("a"), &rx, &preparing, far).len(), 1);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// The answers a syncer sends, and the receivers they go to.
    fn answers(n: usize) -> (Vec<Answer>, Vec<mpsc::Receiver<Result<Written>>>) {
        (0..n)
            .map(|_| {
                let (reply, answer) = mpsc::sync_channel(1);
                ((reply, Ok(Written::Rollbacks(1))), answer)
            })
            .unzip()
    }

    #[test]
    fn the_syncer_answers_only_after_the_flush() {
        let wal = tempfile::tempfile().unwrap();
        let (committed, to_sync) = mpsc::channel();
        let (flushing, flush_started) = mpsc::channel();
        let (go, may_return) = mpsc::channel::<()>();
        let syncer = std::thread::spawn(move || {
            sync_loop(&wal, &to_sync, &AtomicBool::new(false), |_| {
                flushing.send(()).unwrap();
                may_return.recv().unwrap();
                Ok(())
            })
        });
        let (group, receivers) = answers(2);
        committed.send(group).unwrap();
        flush_started.recv().unwrap();
        // The flush has begun and not returned: nobody is answered yet.
        std::thread::sleep(Duration::from_millis(20));
        for r in &receivers {
            assert!(matches!(r.try_recv(), Err(mpsc::TryRecvError::Empty)));
        }
        go.send(()).unwrap();
        for r in &receivers {
            assert!(matches!(r.recv().unwrap(), Ok(Written::Rollbacks(1))));
        }
        drop(committed);
        syncer.join().unwrap();
    }

    #[test]
    fn one_flush_covers_every_group_waiting() {
        let wal = tempfile::tempfile().unwrap();
        let (committed, to_sync) = mpsc::channel();
        let (a, ra) = answers(1);
        let (b, rb) = answers(3);
        committed.send(a).unwrap();
        committed.send(b).unwrap();
        drop(committed);
        let flushes = AtomicUsize::new(0);
        let stats = sync_loop(&wal, &to_sync, &AtomicBool::new(false), |_| {
            flushes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
        assert_eq!((stats.flushes, stats.answers), (1, 4));
        for r in ra.iter().chain(&rb) {
            assert!(r.recv().unwrap().is_ok());
        }
    }

    #[test]
    fn after_a_failed_flush_every_write_is_refused() {
        let wal = tempfile::tempfile().unwrap();
        let (committed, to_sync) = mpsc::channel();
        let flushes = Arc::new(AtomicUsize::new(0));
        let disk_failed = Arc::new(AtomicBool::new(false));
        let syncer = {
            let (flushes, flag) = (flushes.clone(), disk_failed.clone());
            std::thread::spawn(move || {
                sync_loop(&wal, &to_sync, &flag, |_| {
                    // The first flush fails; any later one would succeed.
                    match flushes.fetch_add(1, Ordering::SeqCst) {
                        0 => Err(std::io::Error::other("EIO")),
                        _ => Ok(()),
                    }
                })
            })
        };
        let (first, r1) = answers(2);
        committed.send(first).unwrap();
        for r in &r1 {
            let e = r.recv().unwrap().err().expect("refused");
            assert!(e.to_string().contains("fsync of the WAL failed"), "{e}");
        }
        let (later, r2) = answers(1);
        committed.send(later).unwrap();
        assert!(r2[0].recv().unwrap().is_err());
        drop(committed);
        syncer.join().unwrap();
        assert_eq!(
            flushes.load(Ordering::SeqCst),
            1,
            "no flush after a failed one"
        );
        assert!(disk_failed.load(Ordering::SeqCst));
    }

    #[test]
    fn after_a_failed_flush_the_writer_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let conn = db::open(&dir.path().join("w.db")).unwrap();
        let (queue, rx) = mpsc::channel();
        let (committed, to_sync) = mpsc::channel();
        let (reply, answer) = mpsc::sync_channel(1);
        queue
            .send(Pending {
                write: Write::Runs(vec![run("a")]),
                reply,
            })
            .unwrap();
        drop(queue);
        let health = Health::default();
        health.disk_failed.store(true, Ordering::SeqCst);
        super::run(conn, &rx, &AtomicUsize::new(0), &committed, &health);
        let e = answer.recv().unwrap().err().expect("refused");
        assert!(e.to_string().contains("writes are refused"), "{e}");
        // Refused by the writer itself: nothing went to the syncer, nothing was stored.
        assert!(to_sync.try_recv().is_err());
        let conn = db::open(&dir.path().join("w.db")).unwrap();
        assert!(stored(&conn).is_empty());
    }

    #[test]
    fn the_writer_commits_without_waiting_for_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let (writer, handle) = Writer::start(&path).unwrap();
        let written = writer.submit(Write::Runs(vec![run("a")])).unwrap();
        assert!(matches!(written, Written::Runs(Counts { created: 1, .. })));
        // The WAL the syncer flushes is the database's own, kept while the writer runs.
        assert!(dir.path().join("w.db-wal").exists());
        drop(writer);
        handle.join().unwrap();
        let conn = db::open(&path).unwrap();
        assert_eq!(stored(&conn), ["a"]);
    }

    /// Limits the database to the pages it has now: SQLite then answers a write that needs a
    /// new page with SQLITE_FULL, as when the disk is full.
    fn fill(conn: &Connection) {
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        conn.pragma_update(None, "max_page_count", pages).unwrap();
    }

    /// Enough runs, with long names, to need new pages.
    fn many(prefix: &str) -> Vec<Run> {
        (0..200)
            .map(|i| run(&format!("{prefix}-{i:0>120}")))
            .collect()
    }

    #[test]
    fn a_full_disk_refuses_the_whole_group_with_503() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = db::open(&dir.path().join("w.db")).unwrap();
        let a = Write::Runs(vec![run("a")]);
        commit_group(&mut conn, &mut Known::default(), &[&a]);
        fill(&conn);
        let (b, c) = (Write::Runs(many("b")), Write::Runs(vec![run("c")]));
        let results = commit_group(&mut conn, &mut Known::default(), &[&b, &c]);
        for r in &results {
            let e = r.as_ref().err().expect("refused");
            assert!(matches!(e, Error::StorageFull(_)), "{e}");
            assert_eq!(e.status(), 503);
        }
        assert_eq!(stored(&conn), ["a"], "nothing of the refused group is kept");
        // Space back: the same connection writes again.
        conn.pragma_update(None, "max_page_count", 1_000_000)
            .unwrap();
        let results = commit_group(&mut conn, &mut Known::default(), &[&b, &c]);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(stored(&conn).len(), 202);
    }

    #[test]
    fn a_full_writer_is_not_ready_until_a_probe_commits() {
        let dir = tempfile::tempdir().unwrap();
        let conn = db::open(&dir.path().join("w.db")).unwrap();
        fill(&conn);
        let (queue, rx) = mpsc::channel();
        let (committed, to_sync) = mpsc::channel::<Vec<Answer>>();
        let health = Arc::new(Health::default());
        let writer = {
            let health = health.clone();
            std::thread::spawn(move || {
                super::run(conn, &rx, &AtomicUsize::new(0), &committed, &health)
            })
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let write = Write::Runs(many("a"));
        queue.send(Pending { write, reply }).unwrap();
        for (reply, result) in to_sync.recv().unwrap() {
            reply.send(result).unwrap();
        }
        let e = answer.recv().unwrap().err().expect("refused");
        assert!(matches!(e, Error::StorageFull(_)), "{e}");
        assert!(health.full.load(Ordering::SeqCst));
        // Idle, the writer probes: rewriting the header needs no new page, so it commits and
        // clears the mark (as space coming back would).
        let deadline = Instant::now() + PROBE_EVERY * 5;
        while health.full.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !health.full.load(Ordering::SeqCst),
            "the probe cleared the mark"
        );
        drop(queue);
        writer.join().unwrap();
        assert!(stored(&db::open(&dir.path().join("w.db")).unwrap()).is_empty());
    }

    #[test]
    fn readiness_follows_a_full_disk_and_a_failed_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, handle) = Writer::start(&dir.path().join("w.db")).unwrap();
        assert!(writer.ready().is_ok());
        writer.health.full.store(true, Ordering::SeqCst);
        let e = writer.ready().unwrap_err();
        assert!(matches!(e, Error::StorageFull(_)), "{e}");
        writer.health.disk_failed.store(true, Ordering::SeqCst);
        let e = writer.ready().unwrap_err();
        assert!(matches!(e, Error::Unavailable(_)), "{e}");
        assert_eq!(e.status(), 503);
        drop(writer);
        handle.join().unwrap();
    }

    #[test]
    fn a_group_without_failures_commits_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = db::open(&dir.path().join("w.db")).unwrap();
        let (a, b) = (
            Write::Runs(vec![run("a")]),
            Write::Runs(vec![run("b"), run("c")]),
        );
        let results = commit_group(&mut conn, &mut Known::default(), &[&a, &b]);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(stored(&conn), ["a", "b", "c"]);
    }
}
