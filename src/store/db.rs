//! Opening the database: every pragma, the schema of a new database and the upgrades of an
//! older one, in one place.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::{Error, Result};

/// The schema of a new database: every table and index of the newest version.
const SCHEMA: &str = include_str!("../../schema.sql");

/// Upgrades of a database an earlier pipestat made, oldest first: `UPGRADES[i]` takes version
/// i + 1 to version i + 2 (`PRAGMA user_version`). Never remove an entry or change the tables
/// it makes: append one, and change schema.sql to match (tests/it/ops.rs compares an upgraded
/// database with a new one). The rebuilds an entry calls are the current code's, so an entry
/// whose rows a later version reshapes leaves them to that version (`to_v2`, `to_v5` and
/// `to_v7`).
const UPGRADES: &[fn(&Connection) -> Result<()>] = &[to_v2, to_v3, to_v4, to_v5, to_v6, to_v7];

/// The version of a database this binary makes.
const VERSION: usize = UPGRADES.len() + 1;

/// Version 2: the CircleCI rollups and recovery columns, and the wider run indexes behind the
/// CircleCI routes; the recoveries are then computed from the stored runs (the run day rows,
/// whose shape version 7 changed, by `to_v7`, and the job day rows, whose shape version 5
/// changed, by `to_v5`, which every upgrade from version 1 runs too).
fn to_v2(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "ALTER TABLE runs ADD COLUMN rec_from INTEGER;
        ALTER TABLE runs ADD COLUMN rec_ms INTEGER;
        DROP INDEX runs_insights;
        CREATE INDEX runs_insights ON runs (project_id, branch, workflow_id, created_at, ext_id, status,
            started_at, stopped_at, credits_used, rec_from, rec_ms);
        DROP INDEX runs_by_commit;
        CREATE INDEX runs_by_commit ON runs (project_id, commit_sha, created_at);
        CREATE TABLE insights_days (project_id INTEGER NOT NULL, branch TEXT NOT NULL,
            workflow_id INTEGER NOT NULL, day INTEGER NOT NULL, total INTEGER NOT NULL,
            ok INTEGER NOT NULL, bad INTEGER NOT NULL, canceled INTEGER NOT NULL,
            open INTEGER NOT NULL, credits REAL NOT NULL, dur_n INTEGER NOT NULL,
            dur_sum REAL NOT NULL, dur_sumsq REAL NOT NULL, rec_n INTEGER NOT NULL,
            rec_timed INTEGER NOT NULL, rec_sum REAL NOT NULL,
            PRIMARY KEY (project_id, branch, workflow_id, day)) STRICT, WITHOUT ROWID;
        CREATE TABLE insights_job_days (project_id INTEGER NOT NULL, branch TEXT NOT NULL,
            workflow_id INTEGER NOT NULL, day INTEGER NOT NULL, name TEXT NOT NULL,
            total INTEGER NOT NULL, ok INTEGER NOT NULL, bad INTEGER NOT NULL,
            canceled INTEGER NOT NULL, open INTEGER NOT NULL, credits REAL NOT NULL,
            dur_n INTEGER NOT NULL, dur_sum REAL NOT NULL, dur_sumsq REAL NOT NULL,
            PRIMARY KEY (project_id, branch, workflow_id, day, name)) STRICT, WITHOUT ROWID;
        CREATE TABLE insights_job_durs (project_id INTEGER NOT NULL, branch TEXT NOT NULL,
            workflow_id INTEGER NOT NULL, name TEXT NOT NULL, dur INTEGER NOT NULL,
            job_id INTEGER NOT NULL, at INTEGER NOT NULL,
            PRIMARY KEY (project_id, branch, workflow_id, name, dur, job_id)) STRICT, WITHOUT ROWID;",
    )?;
    conn.execute_batch(crate::store::rollups::circleci::REBUILD_RECOVERIES)?;
    Ok(())
}

/// Version 3: `flaky_results`, the results behind CircleCI's flaky tests, computed from the
/// stored runs.
fn to_v3(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE flaky_results (project_id INTEGER NOT NULL, at INTEGER NOT NULL,
            result_id INTEGER NOT NULL, grp INTEGER NOT NULL, sha TEXT NOT NULL, job TEXT NOT NULL, classname TEXT,
            name TEXT NOT NULL, bad INTEGER NOT NULL, prev_at INTEGER, prev_bad INTEGER,
            run_id INTEGER NOT NULL, job_ms INTEGER,
            file TEXT, suite TEXT,
            PRIMARY KEY (project_id, at, result_id)) STRICT, WITHOUT ROWID;
        CREATE INDEX flaky_results_by_commit ON flaky_results (project_id, sha);",
    )?;
    crate::store::rollups::flaky::rebuild(conn)
}

/// Version 4: the Apigee rollups (hour and day rows of runs and jobs), then computed from the
/// stored runs and jobs.
fn to_v4(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE apigee_run_rollup (span INTEGER NOT NULL, at INTEGER NOT NULL,
            project_id INTEGER NOT NULL, workflow_id INTEGER NOT NULL, n INTEGER NOT NULL,
            errors INTEGER NOT NULL, successes INTEGER NOT NULL, credits REAL NOT NULL,
            dur_n INTEGER NOT NULL, dur_sum REAL NOT NULL, queue_n INTEGER NOT NULL,
            queue_sum REAL NOT NULL, durs BLOB NOT NULL,
            PRIMARY KEY (span, at, project_id, workflow_id)) STRICT, WITHOUT ROWID;
        CREATE TABLE apigee_job_rollup (span INTEGER NOT NULL, at INTEGER NOT NULL,
            project_id INTEGER NOT NULL, workflow_id INTEGER NOT NULL, name TEXT NOT NULL,
            n INTEGER NOT NULL, errors INTEGER NOT NULL, successes INTEGER NOT NULL,
            credits REAL NOT NULL, dur_n INTEGER NOT NULL, dur_sum REAL NOT NULL,
            queue_n INTEGER NOT NULL, queue_sum REAL NOT NULL, durs BLOB NOT NULL,
            PRIMARY KEY (span, at, project_id, workflow_id, name)) STRICT, WITHOUT ROWID;",
    )?;
    crate::store::rollups::apigee::rebuild(conn)
}

/// Version 5: the CircleCI job day rows keep their durations in a blob (`durs`) instead of one
/// row a job in `insights_job_durs`; the rows are computed anew from the stored jobs.
fn to_v5(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "DROP TABLE insights_job_durs;
        DROP TABLE insights_job_days;
        CREATE TABLE insights_job_days (project_id INTEGER NOT NULL, branch TEXT NOT NULL,
            workflow_id INTEGER NOT NULL, day INTEGER NOT NULL, name TEXT NOT NULL,
            total INTEGER NOT NULL, ok INTEGER NOT NULL, bad INTEGER NOT NULL,
            canceled INTEGER NOT NULL, open INTEGER NOT NULL, credits REAL NOT NULL,
            dur_n INTEGER NOT NULL, dur_sum REAL NOT NULL, dur_sumsq REAL NOT NULL,
            durs BLOB NOT NULL,
            PRIMARY KEY (project_id, branch, workflow_id, day, name)) STRICT, WITHOUT ROWID;",
    )?;
    conn.execute_batch(crate::store::rollups::circleci::REBUILD_JOB_DAYS)?;
    Ok(())
}

/// Version 6: the DORA deployments, computed from the stored deploy jobs; pushes and their
/// commits, and incidents, the other inputs of DORA (empty at first).
fn to_v6(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE dora_deploys (project_id INTEGER NOT NULL, at INTEGER NOT NULL,
            job_id INTEGER NOT NULL, run_id INTEGER NOT NULL, production INTEGER NOT NULL,
            env TEXT, service TEXT, status TEXT NOT NULL, run_ext TEXT NOT NULL, branch TEXT,
            commit_sha TEXT, committed_at INTEGER,
            PRIMARY KEY (project_id, production, at, job_id)) STRICT, WITHOUT ROWID;
        CREATE INDEX dora_deploys_by_run ON dora_deploys (run_id);
        CREATE TABLE pushes (id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id), branch TEXT NOT NULL,
            head_sha TEXT NOT NULL, pushed_at INTEGER NOT NULL,
            UNIQUE (project_id, branch, head_sha)) STRICT;
        CREATE INDEX pushes_by_branch_time ON pushes (project_id, branch, pushed_at);
        CREATE TABLE push_commits (push_id INTEGER NOT NULL REFERENCES pushes(id),
            position INTEGER NOT NULL, sha TEXT NOT NULL, committed_at INTEGER NOT NULL,
            PRIMARY KEY (push_id, position)) STRICT, WITHOUT ROWID;
        CREATE TABLE incidents (id INTEGER PRIMARY KEY,
            project_id INTEGER NOT NULL REFERENCES projects(id), ext_id TEXT NOT NULL,
            title TEXT NOT NULL, service TEXT, env TEXT, started_at INTEGER NOT NULL,
            resolved_at INTEGER CHECK (resolved_at IS NULL OR resolved_at >= started_at),
            severity TEXT, url TEXT, deployment TEXT, commit_sha TEXT,
            UNIQUE (project_id, ext_id)) STRICT;
        CREATE INDEX incidents_by_project_time ON incidents (project_id, started_at);",
    )?;
    crate::store::rollups::dora::rebuild(conn)
}

/// Version 7: the CircleCI run day rows keep their durations in a blob, as the job day rows
/// do, so that every percentile of the workflows and summary routes is picked from the rows of
/// the window's days, of one branch or of all; the rows are computed anew from the stored runs.
/// The same rows over every branch (`insights_all_days`, `insights_all_job_days`) let
/// `all-branches=true` read one row per day, and the branches' recoveries are read by day.
/// The index of runs in duration order, which the one-branch percentiles walked, goes.
fn to_v7(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "DROP TABLE insights_days;
        CREATE TABLE insights_days (project_id INTEGER NOT NULL, branch TEXT NOT NULL,
            workflow_id INTEGER NOT NULL, day INTEGER NOT NULL, total INTEGER NOT NULL,
            ok INTEGER NOT NULL, bad INTEGER NOT NULL, canceled INTEGER NOT NULL,
            open INTEGER NOT NULL, credits REAL NOT NULL, dur_n INTEGER NOT NULL,
            dur_sum REAL NOT NULL, dur_sumsq REAL NOT NULL, rec_n INTEGER NOT NULL,
            rec_timed INTEGER NOT NULL, rec_sum REAL NOT NULL, durs BLOB NOT NULL,
            PRIMARY KEY (project_id, branch, workflow_id, day)) STRICT, WITHOUT ROWID;
        CREATE INDEX insights_days_by_day ON insights_days (project_id, day, rec_n, rec_timed,
            rec_sum);
        DROP INDEX runs_insights_dur;
        CREATE TABLE insights_all_days (project_id INTEGER NOT NULL,
            workflow_id INTEGER NOT NULL, day INTEGER NOT NULL, total INTEGER NOT NULL,
            ok INTEGER NOT NULL, bad INTEGER NOT NULL, canceled INTEGER NOT NULL,
            open INTEGER NOT NULL, credits REAL NOT NULL, dur_n INTEGER NOT NULL,
            dur_sum REAL NOT NULL, dur_sumsq REAL NOT NULL, durs BLOB NOT NULL,
            PRIMARY KEY (project_id, workflow_id, day)) STRICT, WITHOUT ROWID;
        CREATE TABLE insights_all_job_days (project_id INTEGER NOT NULL,
            workflow_id INTEGER NOT NULL, day INTEGER NOT NULL, name TEXT NOT NULL,
            total INTEGER NOT NULL, ok INTEGER NOT NULL, bad INTEGER NOT NULL,
            canceled INTEGER NOT NULL, open INTEGER NOT NULL, credits REAL NOT NULL,
            dur_n INTEGER NOT NULL, dur_sum REAL NOT NULL, dur_sumsq REAL NOT NULL,
            durs BLOB NOT NULL,
            PRIMARY KEY (project_id, workflow_id, day, name)) STRICT, WITHOUT ROWID;",
    )?;
    conn.execute_batch(crate::store::rollups::circleci::REBUILD_DAYS)?;
    conn.execute_batch(crate::store::rollups::circleci::REBUILD_ALL_DAYS)?;
    Ok(())
}

/// How long a connection waits for another's lock before giving up with SQLITE_BUSY.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The size, in bytes, the WAL file is cut back to when it is reused after a checkpoint
/// (`PRAGMA journal_size_limit`): the 8,000 pages between automatic checkpoints. Without it the
/// WAL keeps the largest size it ever reached (a bulk load's, or a full disk's) for good.
pub const WAL_SIZE_LIMIT: i64 = 8_000 * 4_096;

/// Who checkpoints the WAL, copying its pages back into the database file (`--checkpoints`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoints {
    /// pipestat's connections: SQLite's automatic checkpoint after a commit that leaves 8,000
    /// pages or more in the WAL, and the writer's checkpoint that truncates the WAL after a
    /// full disk. The default.
    Pipestat,
    /// Litestream's, and no connection of pipestat's: no automatic checkpoint, none when a
    /// connection closes, none after a full disk. Litestream copies every page of the WAL to
    /// its replicas before it checkpoints them into the database file; a checkpoint by another
    /// process between two of its own could move pages it has not copied yet (docs/operations.md,
    /// "Replication").
    Litestream,
}

impl Checkpoints {
    /// The word `--checkpoints` takes for each.
    pub const WORDS: [(&'static str, Checkpoints); 2] = [
        ("pipestat", Checkpoints::Pipestat),
        ("litestream", Checkpoints::Litestream),
    ];
}

/// Whether every connection this process opens leaves checkpoints to Litestream.
static LEFT_TO_LITESTREAM: AtomicBool = AtomicBool::new(false);

/// Sets who checkpoints for every connection the process opens from now on: called once, by the
/// command line, before anything is opened.
pub fn set_checkpoints(who: Checkpoints) {
    LEFT_TO_LITESTREAM.store(who == Checkpoints::Litestream, Ordering::SeqCst);
}

/// Who checkpoints, as `set_checkpoints` last set it (pipestat when never set).
pub fn checkpoints() -> Checkpoints {
    if LEFT_TO_LITESTREAM.load(Ordering::SeqCst) {
        Checkpoints::Litestream
    } else {
        Checkpoints::Pipestat
    }
}

/// Opens (creating if missing, mode 0600) the database at `path`, sets it up, and migrates
/// it. A database that is not pipestat's is refused before anything is written to it.
pub fn open(path: &Path) -> Result<Connection> {
    create_private(path)?;
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    identify(&conn, path)?;
    configure(&conn)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// `PRAGMA application_id` of pipestat's files: the ASCII bytes "pSta". `file(1)` and other
/// tools read it from offset 68 of the file's header. Databases of earlier versions, made
/// before pipestat set it, are recognised by their tables and `user_version` and get it when
/// they are opened (`migrate`).
pub const APPLICATION_ID: i32 = 0x7053_7461;

/// Tables every pipestat database has had since its first schema.
const OWN_TABLES: &[&str] = &["projects", "workflows", "runs", "jobs", "tokens"];

/// What a file opened as a database holds.
#[derive(Debug, PartialEq)]
enum Identity {
    /// No table at all: a new database (or a new empty file).
    Empty,
    /// pipestat's: its application id, or the tables and `user_version` of an earlier version.
    Pipestat,
}

/// Tells an empty database and pipestat's from any other, which it refuses with a message
/// naming the file, before anything (even the journal mode) is written to it.
fn identify(conn: &Connection, path: &Path) -> Result<Identity> {
    let header = |pragma: &str| -> Result<i64> {
        conn.query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
            .map_err(|e| Error::Internal(format!("cannot read {}: {e}", path.display())))
    };
    let application_id = header("application_id")?;
    let version = header("user_version")?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if application_id == i64::from(APPLICATION_ID) {
        return Ok(Identity::Pipestat);
    }
    if application_id == 0 && tables.is_empty() {
        return Ok(Identity::Empty);
    }
    let earlier = application_id == 0
        && version >= 1
        && OWN_TABLES.iter().all(|t| tables.iter().any(|n| n == t));
    if earlier {
        return Ok(Identity::Pipestat);
    }
    Err(Error::Internal(format!(
        "{} is not a pipestat database (application_id {application_id:#x}, {} tables, none of them \
         pipestat's): refusing to touch it; choose another file with --db",
        path.display(),
        tables.len()
    )))
}

/// Creates the database file, empty, readable and writable by its owner only, when it does not
/// exist yet. SQLite gives the WAL and shared-memory files the mode of the database file, so
/// they are 0600 too. The mode is set after creation, so the umask cannot change it.
fn create_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::Internal(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// Page cache of a bulk load's connection (`import`, `demo`), in KiB, against 8 MB for every
/// other connection. A 5,000-run transaction dirties more pages than 8 MB holds across the
/// tables, indexes and rollups it writes, so SQLite spilled pages to the WAL mid-transaction
/// and read them back. The daemon keeps 8 MB: its memory goal.
pub const BULK_CACHE_KIB: u32 = 32_000;

/// Opens the database as `open` does, with the larger page cache of a bulk load.
pub fn open_bulk(path: &Path) -> Result<Connection> {
    let conn = open(path)?;
    conn.pragma_update(None, "cache_size", -i64::from(BULK_CACHE_KIB))?;
    Ok(conn)
}

/// Opens an existing pipestat database without creating or migrating it (`check`, `backup`):
/// a missing file, an empty one and one that is not pipestat's are errors naming the path.
pub fn open_existing(path: &Path) -> Result<Connection> {
    if !path.exists() {
        return Err(Error::Internal(format!(
            "no database at {} (give its path with --db)",
            path.display()
        )));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::Internal(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if identify(&conn, path)? == Identity::Empty {
        return Err(Error::Internal(format!(
            "{} holds no pipestat database (it has no tables)",
            path.display()
        )));
    }
    configure(&conn)?;
    Ok(conn)
}

/// The page cache of each worker's read connection in `serve`, KiB. A statistics request
/// reads a window's rollup rows and a day or two of runs once; a larger cache would mostly
/// keep, per worker and for good, pages the next request on that worker does not read
/// (8 workers × 8 MB was most of the daemon's memory after a few heavy requests), and pages
/// it misses come from the operating system's page cache.
pub const READER_CACHE_KIB: i64 = 2_000;

/// Opens the database as `open` does, for a worker that reads (and hands its writes to the
/// writer): with the smaller page cache `READER_CACHE_KIB`.
pub fn open_reader(path: &Path) -> Result<Connection> {
    let conn = open(path)?;
    conn.pragma_update(None, "cache_size", -READER_CACHE_KIB)?;
    Ok(conn)
}

/// Opens an existing pipestat database as `open_existing` does, then brings an older one up to
/// date as `open` does (`token list`, `token revoke`): never creates a file.
pub fn open_current(path: &Path) -> Result<Connection> {
    let mut conn = open_existing(path)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Runs `f` in an IMMEDIATE transaction on a shared connection, committing when it succeeds.
pub fn immediate<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// Connection set-up shared by every connection pipestat opens (after `identify`).
fn configure(conn: &Connection) -> Result<()> {
    // WAL lets readers run beside the one writer; FULL makes each commit durable on return.
    // (The writer thread of `serve` switches its own connection to NORMAL and flushes the WAL
    // itself before answering: src/store/writer.rs.)
    // Checkpoints every 8,000 pages (32 MB of WAL) rather than SQLite's 1,000: bulk loads
    // spend less time copying pages back, at the cost of a larger WAL file between them.
    // The WAL file is cut back to that size when reused after a checkpoint (WAL_SIZE_LIMIT).
    // With `--checkpoints litestream` no connection checkpoints, not even the last one to
    // close: Litestream does, after copying the WAL's pages to its replicas. The WAL is then
    // reused, and cut back, after Litestream's checkpoints.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Internal(format!(
            "cannot switch the database to WAL (mode {mode})"
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -8000;
         PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = 8000;",
    )?;
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
    if checkpoints() == Checkpoints::Litestream {
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    }
    conn.set_prepared_statement_cache_capacity(128);
    // The Apigee surface's `regexp` and time-bucket functions, on every connection.
    super::functions::register(conn)?;
    Ok(())
}

/// Creates the schema of a new database, or applies the upgrades an older one lacks, refusing
/// one newer than this binary.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > VERSION {
        return Err(Error::Internal(format!(
            "the database has schema version {version}, newer than this pipestat knows ({VERSION}); upgrade pipestat"
        )));
    }
    if version == 0 {
        tx.execute_batch(SCHEMA)?;
    } else {
        for upgrade in &UPGRADES[version - 1..] {
            upgrade(&tx)?;
        }
    }
    tx.pragma_update(None, "user_version", VERSION as i64)?;
    // New databases and those of versions before the id was set alike.
    tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_size(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn schema_header_names_the_version_this_binary_makes() {
        let header = SCHEMA.lines().next().unwrap();
        let version = header
            .split("version ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|digits| digits.parse::<usize>().ok());
        assert_eq!(version, Some(VERSION), "schema.sql's first line: {header}");
    }

    #[test]
    fn bulk_loads_get_the_larger_page_cache_and_the_rest_keep_8_mb() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        assert_eq!(cache_size(&open_bulk(&path).unwrap()), -32_000);
        assert_eq!(cache_size(&open(&path).unwrap()), -8_000);
        assert_eq!(cache_size(&open_existing(&path).unwrap()), -8_000);
    }

    #[test]
    fn the_wal_is_cut_back_to_its_limit_after_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = open(&path).unwrap();
        let wal = || {
            std::fs::metadata(dir.path().join("w.db-wal"))
                .unwrap()
                .len()
        };
        // One transaction of 48 MB: the WAL grows past the limit, then the automatic checkpoint
        // after its commit copies every page back.
        conn.execute_batch(
            "CREATE TABLE scratch (b BLOB);
             BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 48)
             INSERT INTO scratch SELECT randomblob(1048576) FROM n;
             COMMIT;",
        )
        .unwrap();
        let grown = wal();
        assert!(
            grown > 48 << 20,
            "the WAL held the transaction: {grown} bytes"
        );
        // The next commit reuses the WAL from its start, and cuts the file back.
        conn.execute_batch("DELETE FROM scratch").unwrap();
        conn.execute_batch("INSERT INTO scratch VALUES (1)")
            .unwrap();
        let after = wal();
        assert!(
            after <= WAL_SIZE_LIMIT as u64,
            "the WAL is {after} bytes after a checkpoint, more than {WAL_SIZE_LIMIT}"
        );
    }
}
