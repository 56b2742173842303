//! The command-line operations besides `serve`: tokens, import, demo data, backup and check.

use std::io::{BufRead, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::error::{Error, Result};
use crate::ingest;
use crate::model::times;
use crate::model::Run;
use crate::store::bulk::{write_batch, BULK_BATCH};
use crate::store::Counts;
use crate::store::{db, tokens};

pub fn token_create(db_path: &Path, name: &str, scopes: &str) -> Result<()> {
    if name.is_empty() || name.len() > 256 {
        return Err(Error::Usage("--name: expected 1..256 characters".into()));
    }
    let scopes = tokens::parse_scopes(scopes).map_err(|e| Error::Usage(format!("--scope: {e}")))?;
    let conn = db::open(db_path)?;
    let secret = tokens::new_secret()?;
    db::immediate(&conn, |tx| {
        tokens::create_token(
            tx,
            name,
            &tokens::hash_secret(&secret),
            &scopes,
            times::now_ms(),
        )
    })?;
    println!("created token {name:?} with scopes {scopes}; the secret is shown only once:");
    println!("{secret}");
    Ok(())
}

pub fn token_list(db_path: &Path) -> Result<()> {
    let conn = db::open(db_path)?;
    let listed = tokens::list_tokens(&conn)?;
    if listed.is_empty() {
        println!("no tokens: the daemon is in open mode (loopback only)");
    }
    for t in listed {
        println!(
            "{}\t{}\t{}",
            t.name,
            t.scopes,
            times::format_rfc3339(t.created_at)
        );
    }
    Ok(())
}

pub fn token_revoke(db_path: &Path, name: &str) -> Result<()> {
    let conn = db::open(db_path)?;
    if !db::immediate(&conn, |tx| tokens::revoke_token(tx, name))? {
        return Err(Error::NotFound(format!("no token named {name:?}")));
    }
    println!("revoked token {name:?}");
    Ok(())
}

/// A batch of parsed lines on its way from the reading thread to the writing one.
struct Parsed {
    runs: Vec<Run>,
    /// The 1-based line number of each run.
    lines: Vec<usize>,
    /// Lines read and lines refused so far, for progress.
    read: u64,
    bad: u64,
}

/// `pipestat import FILE`: NDJSON runs, in large transactions; bad lines are reported and
/// skipped. One thread reads and parses while this one writes.
pub fn import(db_path: &Path, file: &str) -> Result<()> {
    let mut conn = db::open_bulk(db_path)?;
    let input: Box<dyn BufRead + Send> = if file == "-" {
        Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()))
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| Error::Internal(format!("cannot open {file}: {e}")))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, f))
    };
    let started = Instant::now();
    let (batches, received) = std::sync::mpsc::sync_channel::<Parsed>(2);
    // Written batches go back to the reading thread, which allocated them, to be freed there:
    // freeing 5,000 runs is allocator work (in the reading thread's malloc arena, whose lock
    // it would take) that the writing thread need not do.
    let (written, spent) = std::sync::mpsc::channel::<Vec<Run>>();
    let reader = std::thread::Builder::new()
        .name("import-reader".into())
        .spawn(move || read_ndjson(input, &batches, &spent))?;

    let mut last_progress = Instant::now();
    let mut totals = Counts::default();
    let (mut read, mut bad, mut refused) = (0, 0, 0);
    for batch in received {
        let (c, failures) = write_batch(&mut conn, &batch.runs)?;
        let _ = written.send(batch.runs);
        totals.created += c.created;
        totals.updated += c.updated;
        for (i, e) in failures {
            eprintln!("line {}: {e}", batch.lines[i]);
            refused += 1;
        }
        (read, bad) = (batch.read, batch.bad);
        if last_progress.elapsed() >= Duration::from_secs(1) {
            eprint!("\rimport: {read} lines read, {} bad", bad + refused);
            let _ = std::io::stderr().flush();
            last_progress = Instant::now();
        }
    }
    // The channel closes when the reader is done, or failed.
    reader
        .join()
        .map_err(|_| Error::Internal("the import reader panicked".into()))??;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "\rimport: {read} lines read, {} runs created, {} updated, {} bad lines skipped, in {secs:.1} s",
        totals.created,
        totals.updated,
        bad + refused
    );
    Ok(())
}

/// The first batch `import` writes; each next one is twice as large, up to BULK_BATCH. The
/// writing thread waits for the first batch and is slower than the reading one, so doubling
/// keeps it busy from the start: a first batch of BULK_BATCH runs would keep it idle for the
/// whole time the reader takes to parse them.
const FIRST_BATCH: usize = 250;

/// Reads NDJSON and sends batches of parsed runs; reports bad lines on stderr as it goes.
/// The last batch carries the final counts, even when it holds no run. Frees the batches the
/// writer sends back on `spent`.
fn read_ndjson(
    input: Box<dyn BufRead + Send>,
    out: &std::sync::mpsc::SyncSender<Parsed>,
    spent: &std::sync::mpsc::Receiver<Vec<Run>>,
) -> Result<()> {
    let (mut read, mut bad) = (0u64, 0u64);
    let mut size = FIRST_BATCH;
    let mut runs = Vec::with_capacity(size);
    let mut lines = Vec::with_capacity(size);
    for (n, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let line_no = n + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        read += 1;
        match ingest::parse_json(&line).and_then(|v| ingest::run_from_json(&v)) {
            Ok(run) => {
                runs.push(run);
                lines.push(line_no);
            }
            Err(m) => {
                eprintln!("line {line_no}: {m}");
                bad += 1;
            }
        }
        if runs.len() >= size {
            size = (size * 2).min(BULK_BATCH);
            let batch = Parsed {
                runs: std::mem::replace(&mut runs, Vec::with_capacity(size)),
                lines: std::mem::replace(&mut lines, Vec::with_capacity(size)),
                read,
                bad,
            };
            if out.send(batch).is_err() {
                // The writer stopped on an error of its own, which it reports.
                return Ok(());
            }
            spent.try_iter().for_each(drop);
        }
    }
    let _ = out.send(Parsed {
        runs,
        lines,
        read,
        bad,
    });
    Ok(())
}

/// `pipestat backup DEST`: a consistent copy through SQLite's online backup API.
pub fn backup(db_path: &Path, dest: &Path) -> Result<()> {
    if !db_path.exists() {
        return Err(Error::Internal(format!(
            "no database at {}",
            db_path.display()
        )));
    }
    let conn = db::open_existing(db_path)?;
    let mut target = Connection::open(dest)
        .map_err(|e| Error::Internal(format!("cannot open {}: {e}", dest.display())))?;
    let backup = rusqlite::backup::Backup::new(&conn, &mut target)?;
    backup.run_to_completion(1024, Duration::from_millis(5), None)?;
    println!("backed up {} to {}", db_path.display(), dest.display());
    Ok(())
}

/// `pipestat check`: SQLite's integrity and foreign-key checks; an error when either finds a fault.
pub fn check(db_path: &Path) -> Result<()> {
    if !db_path.exists() {
        return Err(Error::Internal(format!(
            "no database at {}",
            db_path.display()
        )));
    }
    let conn = db::open_existing(db_path)?;
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    let foreign: i64 =
        conn.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })?;
    if problems != ["ok"] || foreign > 0 {
        for p in &problems {
            eprintln!("integrity: {p}");
        }
        return Err(Error::Internal(format!(
            "{} is damaged ({foreign} dangling references)",
            db_path.display()
        )));
    }
    let runs: i64 = conn.query_row("SELECT count(*) FROM runs", [], |r| r.get(0))?;
    println!("ok: {} is sound ({runs} runs)", db_path.display());
    Ok(())
}
