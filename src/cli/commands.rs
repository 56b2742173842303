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
    let conn = db::open_current(db_path)?;
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
    let conn = db::open_current(db_path)?;
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

/// Where `import` reports: bad lines as whole lines, and a progress line that, on a terminal,
/// is rewritten in place (`\r`), and elsewhere (a file, a pipe, a journal) is written as a
/// whole line each time. Shared by the reading and the writing thread.
struct Report {
    terminal: bool,
    /// Whether the terminal's current line holds a progress line that a message must clear.
    shown: bool,
}

impl Report {
    fn new() -> Report {
        use std::io::IsTerminal as _;
        Report {
            terminal: std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    /// A message of its own line, such as a bad line's.
    fn message(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.shown {
            // Clear the progress line first, so the message does not land on its tail.
            let _ = write!(err, "\r\x1b[K");
            self.shown = false;
        }
        let _ = writeln!(err, "{text}");
    }

    /// The progress line; `last` ends it for good.
    fn progress(&mut self, text: &str, last: bool) {
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[K{text}");
            if last {
                let _ = writeln!(err);
            }
            self.shown = !last;
        } else {
            let _ = writeln!(err, "{text}");
        }
        let _ = err.flush();
    }
}

/// The report, also after a panic of the other thread (which `join` then reports).
fn lock(r: &std::sync::Mutex<Report>) -> std::sync::MutexGuard<'_, Report> {
    r.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `pipestat import FILE`: NDJSON runs, in large transactions; bad lines are reported and
/// skipped, and make the command fail once the rest has landed. One thread reads and parses
/// while this one writes.
pub fn import(db_path: &Path, file: &str) -> Result<()> {
    // The input first: a file that cannot be read creates no database.
    let input: Box<dyn BufRead + Send> = if file == "-" {
        Box::new(std::io::BufReader::with_capacity(1 << 20, std::io::stdin()))
    } else {
        let f = std::fs::File::open(file)
            .map_err(|e| Error::Internal(format!("cannot open {file}: {e}")))?;
        Box::new(std::io::BufReader::with_capacity(1 << 20, f))
    };
    let mut conn = db::open_bulk(db_path)?;
    let report = std::sync::Arc::new(std::sync::Mutex::new(Report::new()));
    let started = Instant::now();
    let (batches, received) = std::sync::mpsc::sync_channel::<Parsed>(2);
    // Written batches go back to the reading thread, which allocated them, to be freed there:
    // freeing 5,000 runs is allocator work (in the reading thread's malloc arena, whose lock
    // it would take) that the writing thread need not do.
    let (written, spent) = std::sync::mpsc::channel::<Vec<Run>>();
    let reader = {
        let report = report.clone();
        std::thread::Builder::new()
            .name("import-reader".into())
            .spawn(move || read_ndjson(input, &batches, &spent, &report))?
    };

    let mut last_progress = Instant::now();
    let mut totals = Counts::default();
    let (mut read, mut bad, mut refused) = (0, 0, 0);
    for batch in received {
        let (c, failures) = write_batch(&mut conn, &batch.runs)?;
        let _ = written.send(batch.runs);
        totals.created += c.created;
        totals.updated += c.updated;
        for (i, e) in failures {
            lock(&report).message(&format!("line {}: {e}", batch.lines[i]));
            refused += 1;
        }
        (read, bad) = (batch.read, batch.bad);
        if last_progress.elapsed() >= Duration::from_secs(1) {
            let text = format!("import: {read} lines read, {} bad", bad + refused);
            lock(&report).progress(&text, false);
            last_progress = Instant::now();
        }
    }
    // The channel closes when the reader is done, or failed.
    reader
        .join()
        .map_err(|_| Error::Internal("the import reader panicked".into()))??;
    let secs = started.elapsed().as_secs_f64();
    let skipped = bad + refused;
    lock(&report).progress(
        &format!(
            "import: {read} lines read, {} runs created, {} updated, {skipped} bad lines skipped, in {secs:.1} s",
            totals.created, totals.updated,
        ),
        true,
    );
    if skipped > 0 {
        return Err(Error::Internal(format!(
            "import: {skipped} of {read} lines were bad and skipped (each is reported above with its line number, from 1); the other lines were loaded"
        )));
    }
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
    report: &std::sync::Mutex<Report>,
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
                lock(report).message(&format!("line {line_no}: {m}"));
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

/// `pipestat backup DEST`: a consistent copy of the database as one read transaction sees it
/// (`VACUUM INTO`, which writers beside it do not restart), written to a temporary file beside
/// DEST, flushed to the disk, and only then given DEST's name: DEST is either absent or whole.
/// DEST must not exist (it is never overwritten) and must not be the database itself.
pub fn backup(db_path: &Path, dest: &Path) -> Result<()> {
    let conn = db::open_existing(db_path)?;
    if let Ok(meta) = std::fs::metadata(dest) {
        use std::os::unix::fs::MetadataExt as _;
        let source = std::fs::metadata(db_path)?;
        if (meta.dev(), meta.ino()) == (source.dev(), source.ino()) {
            return Err(Error::Usage(format!(
                "backup: {} is the database being backed up; give another DEST",
                dest.display()
            )));
        }
    }
    if dest.symlink_metadata().is_ok() {
        return Err(Error::Usage(format!(
            "backup: {} exists; pipestat backup never overwrites a file: remove it or give another DEST",
            dest.display()
        )));
    }
    let name = dest
        .file_name()
        .ok_or_else(|| Error::Usage(format!("backup: {} does not name a file", dest.display())))?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".partial-{}", std::process::id()));
    let temp = dir.join(temp_name);
    let started = Instant::now();
    let copied = copy_into(&conn, &temp, dest, &dir);
    if copied.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    let bytes = copied?;
    println!(
        "backed up {} to {} ({bytes} bytes, in {:.1} s)",
        db_path.display(),
        dest.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The steps of `backup` after its checks: the copy into `temp` (mode 0600, like the
/// database), its flush, its new name `dest` (never replacing a file that appeared meanwhile),
/// and the flush of the directory that holds the name. Returns the copy's size.
fn copy_into(conn: &Connection, temp: &Path, dest: &Path, dir: &Path) -> Result<u64> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(|e| Error::Internal(format!("cannot create {}: {e}", temp.display())))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    drop(file);
    let temp_text = temp
        .to_str()
        .ok_or_else(|| Error::Usage(format!("backup: {} is not valid UTF-8", temp.display())))?;
    conn.execute("VACUUM INTO ?1", [temp_text])?;
    let file = std::fs::File::open(temp)?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    // A hard link gives the copy its name only if no file has it; a file system without
    // hard links gets a rename.
    match std::fs::hard_link(temp, dest) {
        Ok(()) => std::fs::remove_file(temp)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Usage(format!(
                "backup: {} appeared while copying; not overwritten",
                dest.display()
            )))
        }
        Err(_) => std::fs::rename(temp, dest)?,
    }
    std::fs::File::open(dir)?.sync_all()?;
    Ok(bytes)
}

/// `pipestat check`: SQLite's integrity and foreign-key checks; an error when either finds a fault.
pub fn check(db_path: &Path) -> Result<()> {
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
