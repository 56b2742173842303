//! Opening the database: every pragma and the schema migrations, in one place.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::{Error, Result};

/// Schema migrations, oldest first. `PRAGMA user_version` counts how many have been applied.
/// Never edit or remove an entry: append a new one.
const MIGRATIONS: &[&str] = &[include_str!("../schema.sql")];

/// Opens (creating if missing) the database at `path`, sets it up, and migrates it.
pub fn open(path: &Path) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    configure(&conn)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// Opens an existing database without creating or migrating it (for `check`).
pub fn open_existing(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| Error::Internal(format!("cannot open {}: {e}", path.display())))?;
    configure(&conn)?;
    Ok(conn)
}

/// Runs `f` in an IMMEDIATE transaction on a shared connection, committing when it succeeds.
pub fn immediate<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    let tx = rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

/// Connection set-up shared by every connection pipestat opens.
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(30))?;
    // WAL lets readers run beside the one writer; FULL makes each commit durable on return.
    // Checkpoints every 8,000 pages (32 MB of WAL) rather than SQLite's 1,000: bulk loads
    // spend less time copying pages back, at the cost of a larger WAL file between them.
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
    conn.set_prepared_statement_cache_capacity(128);
    // The Apigee surface's `regexp` and time-bucket functions, on every connection.
    crate::apigee::register_functions(conn)?;
    Ok(())
}

/// Applies the migrations this database lacks, refusing one newer than this binary.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(Error::Internal(format!(
            "the database has schema version {version}, newer than this pipestat knows ({}); upgrade pipestat",
            MIGRATIONS.len()
        )));
    }
    for sql in &MIGRATIONS[version..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    Ok(())
}
