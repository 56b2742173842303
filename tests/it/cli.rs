//! The command line and the database file (README.md): each command's help, missing
//! arguments, read-only commands, import's report, webhook secrets from files, the files'
//! modes, pipestat's application id, and a backup under a steady write load.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::common::{pipestat, run_json, spawn_serve, wait_timeout, Daemon, BIN};

/// pipestat's `PRAGMA application_id`, as the four bytes at offset 68 of the file's header.
const APPLICATION_ID: &[u8; 4] = b"pSta";

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The 4 bytes of the file's header at `offset`.
fn header(path: &Path, offset: usize) -> [u8; 4] {
    let bytes = std::fs::read(path).unwrap();
    bytes[offset..offset + 4].try_into().unwrap()
}

/// `pipestat serve` started through `sh` with `umask` and `env`, on 127.0.0.1:0 in `dir`;
/// the error carries stderr when it does not start.
fn serve_with(
    dir: &Path,
    umask: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> Result<(Child, String), String> {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &format!("umask {umask}; exec \"$0\" \"$@\""), BIN])
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn sh");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
    match line.trim().strip_prefix("listening on ") {
        Some(base) => Ok((child, base.to_owned())),
        None => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            Err(stderr_of(&out))
        }
    }
}

/// Kills a daemon this test started, when dropped.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_command_has_help_describing_each_of_its_flags() {
    let dir = tempfile::tempdir().unwrap();
    // Written from the README's usage, independently of the code's own tables.
    let commands: &[(&[&str], &[&str])] = &[
        (
            &["serve"],
            &[
                "db",
                "listen",
                "threads",
                "utc-offset",
                "quota-per-minute",
                "max-body",
                "github-secret",
                "github-secret-file",
                "gitlab-secret",
                "gitlab-secret-file",
                "now",
                "demo",
                "insecure-open",
                "incident-label",
                "incident-window",
                "checkpoints",
            ],
        ),
        (
            &["token", "create"],
            &["name", "scope", "db", "checkpoints"],
        ),
        (&["token", "list"], &["db", "checkpoints"]),
        (&["token", "revoke"], &["db", "checkpoints"]),
        (&["import"], &["db", "checkpoints"]),
        (
            &["demo"],
            &["runs", "days", "seed", "now", "db", "checkpoints"],
        ),
        (&["backup"], &["db", "checkpoints"]),
        (&["check"], &["db", "checkpoints"]),
    ];
    for (words, flags) in commands {
        let mut args = words.to_vec();
        args.push("--help");
        let out = pipestat(dir.path(), &args);
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr_of(&out));
        assert!(
            help.starts_with(&format!("Usage: pipestat {}", words.join(" "))),
            "{help}"
        );
        for flag in *flags {
            let line = help
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("--{flag} ")))
                .unwrap_or_else(|| panic!("{words:?} --help lacks --{flag}:\n{help}"));
            // The flag, its value's placeholder, and a description of some words.
            let description = line.split("  ").filter(|p| !p.trim().is_empty()).nth(1);
            assert!(
                description.is_some_and(|d| d.split_whitespace().count() >= 3),
                "--{flag} is not described: {line:?}"
            );
            let variable = format!("PIPESTAT_{}", flag.to_uppercase().replace('-', "_"));
            assert!(line.contains(&variable), "{line}");
        }
        // No flag of another command.
        let listed = help
            .lines()
            .filter(|l| l.trim_start().starts_with("--"))
            .count();
        assert_eq!(listed, flags.len(), "{help}");
    }
    // `-h` after the command too; the general help names every command.
    let out = pipestat(dir.path(), &["import", "-h"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("FILE"));
    let out = pipestat(dir.path(), &["--help"]);
    let general = String::from_utf8_lossy(&out.stdout);
    for c in [
        "serve",
        "token create",
        "import FILE",
        "backup DEST",
        "check",
        "demo",
    ] {
        assert!(general.contains(&format!("pipestat {c}")), "{general}");
    }
    assert!(!dir.path().join("pipestat.db").exists());
}

#[test]
fn a_missing_or_extra_argument_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for (args, needles) in [
        (vec!["import"], vec!["import", "missing the FILE argument"]),
        (
            vec!["import", "--db", "x.db"],
            vec!["missing the FILE argument"],
        ),
        (vec!["backup"], vec!["backup", "missing the DEST argument"]),
        (
            vec!["token", "revoke"],
            vec!["token revoke", "missing the NAME argument"],
        ),
        (
            vec!["token"],
            vec!["token", "missing the subcommand", "create"],
        ),
        (vec!["token", "mint"], vec!["unknown subcommand \"mint\""]),
        (
            vec!["import", "a.ndjson", "b.ndjson"],
            vec!["unexpected argument \"b.ndjson\""],
        ),
        (vec!["check", "now"], vec!["unexpected argument \"now\""]),
    ] {
        let out = pipestat(dir.path(), &args);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        for n in needles {
            assert!(stderr.contains(n), "{args:?}: {n:?} not in {stderr}");
        }
        assert!(!stderr.contains("unknown command"), "{stderr}");
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn read_only_commands_never_create_a_database() {
    let dir = tempfile::tempdir().unwrap();
    for (args, path) in [
        (vec!["token", "list"], "pipestat.db"),
        (vec!["token", "revoke", "ci"], "pipestat.db"),
        (vec!["check"], "pipestat.db"),
        (vec!["backup", "copy.db"], "pipestat.db"),
        (
            vec!["token", "list", "--db", "elsewhere.db"],
            "elsewhere.db",
        ),
        (
            vec!["check", "--db", "sub/elsewhere.db"],
            "sub/elsewhere.db",
        ),
    ] {
        let out = pipestat(dir.path(), &args);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("no database at {path}")),
            "{stderr}"
        );
    }
    // An import of a file that cannot be read creates none either.
    let out = pipestat(dir.path(), &["import", "absent.ndjson"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr_of(&out).contains("absent.ndjson"));
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn import_counts_lines_from_1_as_the_http_errors_do_and_fails_when_it_skipped() {
    let dir = tempfile::tempdir().unwrap();
    // Line 1 good, line 2 blank, line 3 bad, line 4 good.
    let body = format!(
        "{}\n\n{}\n{}\n",
        run_json("a", "success", ""),
        run_json("b", "exploded", ""),
        run_json("c", "success", "")
    );
    std::fs::write(dir.path().join("runs.ndjson"), &body).unwrap();
    let out = pipestat(dir.path(), &["import", "runs.ndjson"]);
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line 3: field \"status\""), "{stderr}");
    assert!(
        stderr.contains("1 of 3 lines were bad and skipped"),
        "{stderr}"
    );
    assert!(stderr.contains("2 runs created"), "{stderr}");
    // Written to a pipe: whole lines, nothing rewritten in place.
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "{stderr:?}"
    );

    // The daemon names the same line, beside the item's index from 0.
    let d = Daemon::start_in(dir, &[]);
    let a = d.call(
        "POST",
        "/api/v1/runs",
        &[("Content-Type", "application/x-ndjson")],
        Some(body.as_bytes()),
    );
    assert_eq!(a.status, 400);
    let msg = a.body["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("item 1 (line 3): field \"status\""),
        "{msg}"
    );
    // The import stored the good lines.
    assert_eq!(d.get("/api/v1/runs/gh/acme/api/c").status, 200);
    assert_eq!(d.get("/api/v1/runs/gh/acme/api/b").status, 404);
}

#[test]
fn import_progress_on_a_terminal_is_one_line_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("runs.ndjson"),
        format!("{}\n", run_json("a", "success", "")),
    )
    .unwrap();
    // Python's pty module runs the import on a pseudo-terminal and copies what it writes.
    let out = Command::new("python3")
        .args([
            "-c",
            "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)",
            BIN,
            "import",
            "runs.ndjson",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("\r\x1b[Kimport: 1 lines read, 1 runs created"),
        "{text:?}"
    );
}

fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// Status of a GitHub `ping` delivery signed with `secret`.
fn github_ping(base: &str, secret: &[u8]) -> u16 {
    let body = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let r = ureq::post(&format!("{base}/webhooks/github"))
        .set("Content-Type", "application/json")
        .set("X-GitHub-Event", "ping")
        .set("X-Hub-Signature-256", &sign(secret, body))
        .send_bytes(body);
    match r {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{e}"),
    }
}

/// Status of a GitLab delivery of an event pipestat ignores, with `token`.
fn gitlab_note(base: &str, token: &str) -> u16 {
    let r = ureq::post(&format!("{base}/webhooks/gitlab"))
        .set("Content-Type", "application/json")
        .set("X-Gitlab-Event", "Note Hook")
        .set("X-Gitlab-Token", token)
        .send_string("{}");
    match r {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn webhook_secrets_come_from_files_and_stay_out_of_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("gh.secret"), "s3cret-gh\n").unwrap();
    std::fs::write(dir.path().join("gl.secret"), "s3cret-gl\r\n").unwrap();
    let gh = dir.path().join("gh.secret");
    let (child, base) = serve_with(
        dir.path(),
        "077",
        &[("PIPESTAT_GITLAB_SECRET_FILE", "gl.secret")],
        &["--github-secret-file", gh.to_str().unwrap()],
    )
    .unwrap();
    let child = Started(child);
    // The trailing line break is not part of the secret.
    assert_eq!(github_ping(&base, b"s3cret-gh"), 200);
    assert_eq!(github_ping(&base, b"s3cret-gh\n"), 401);
    assert_eq!(gitlab_note(&base, "s3cret-gl"), 202);
    assert_eq!(gitlab_note(&base, "wrong"), 401);
    // `ps` shows the file's name, never the secret.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", child.0.id())).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline);
    assert!(
        cmdline.contains("gh.secret") && !cmdline.contains("s3cret"),
        "{cmdline}"
    );
    drop(child);

    // The environment's PIPESTAT_GITHUB_SECRET still works, and a flag on the command line
    // hides the other form's variable.
    let (child, base) = serve_with(
        dir.path(),
        "077",
        &[
            ("PIPESTAT_GITHUB_SECRET", "from-env"),
            ("PIPESTAT_GITLAB_SECRET", "gl-env"),
        ],
        &["--gitlab-secret-file", "gl.secret"],
    )
    .unwrap();
    let _child = Started(child);
    assert_eq!(github_ping(&base, b"from-env"), 200);
    assert_eq!(gitlab_note(&base, "s3cret-gl"), 202);
    assert_eq!(gitlab_note(&base, "gl-env"), 401);

    // A secret and its file from the same place is a usage error naming both; an unreadable
    // or empty file is refused.
    std::fs::write(dir.path().join("empty.secret"), "\n").unwrap();
    /// Arguments, environment, the exit code and a part of the message.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], i32, &'a str);
    let cases: &[Case] = &[
        (
            &["--github-secret", "a", "--github-secret-file", "gh.secret"],
            &[],
            2,
            "--github-secret and --github-secret-file",
        ),
        (
            &[],
            &[
                ("PIPESTAT_GITLAB_SECRET", "a"),
                ("PIPESTAT_GITLAB_SECRET_FILE", "gl.secret"),
            ],
            2,
            "--gitlab-secret and --gitlab-secret-file",
        ),
        (&["--github-secret-file", "absent"], &[], 1, "absent"),
        (&["--gitlab-secret-file", "empty.secret"], &[], 2, "empty"),
    ];
    for (args, env, code, needle) in cases {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .args(*args)
            .current_dir(dir.path());
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(*code), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}

#[test]
fn the_database_and_its_wal_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let (child, base) = serve_with(dir.path(), "000", &[], &["--db", "pipestat.db"]).unwrap();
    let _child = Started(child);
    let r = ureq::post(&format!("{base}/api/v1/runs"))
        .set("Content-Type", "application/json")
        .send_string(&run_json("a", "success", ""))
        .unwrap();
    assert_eq!(r.status(), 200);
    for f in ["pipestat.db", "pipestat.db-wal", "pipestat.db-shm"] {
        assert_eq!(mode(&dir.path().join(f)), 0o600, "{f}");
    }
    // The CLI's new databases and backups too.
    let out = Command::new("sh")
        .args(["-c", "umask 000; exec \"$0\" \"$@\"", BIN])
        .args([
            "token", "create", "--name", "a", "--scope", "read", "--db", "t.db",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(mode(&dir.path().join("t.db")), 0o600);
    let out = Command::new("sh")
        .args(["-c", "umask 000; exec \"$0\" \"$@\"", BIN])
        .args(["backup", "copy.db", "--db", "pipestat.db"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(mode(&dir.path().join("copy.db")), 0o600);
}

#[test]
fn another_programs_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipestat.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me');")
        .unwrap();
    drop(conn);
    let before = std::fs::read(&path).unwrap();
    // Byte 18 of the header is 1 (rollback journal), 2 once a file is switched to WAL.
    assert_eq!(before[18], 1);
    std::fs::write(dir.path().join("runs.ndjson"), run_json("a", "success", "")).unwrap();

    let err = spawn_serve(dir.path(), &[]).expect_err("serve refuses to start");
    assert!(err.contains("is not a pipestat database"), "{err}");
    for args in [
        vec!["token", "create", "--name", "a", "--scope", "read"],
        vec!["token", "list"],
        vec!["import", "runs.ndjson"],
        vec!["demo", "--runs", "10"],
        vec!["check"],
        vec!["backup", "copy.db"],
    ] {
        let out = pipestat(dir.path(), &args);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("pipestat.db is not a pipestat database"),
            "{stderr}"
        );
    }
    // Not a byte changed, no journal left beside it, no copy made.
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!dir.path().join("pipestat.db-wal").exists());
    assert!(!dir.path().join("copy.db").exists());
}

#[test]
fn pipestat_databases_carry_the_application_id_earlier_ones_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = pipestat(
        dir.path(),
        &["token", "create", "--name", "a", "--scope", "read"],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(&header(&dir.path().join("pipestat.db"), 68), APPLICATION_ID);

    // A database of the first schema, made before pipestat set the id.
    let old = dir.path().join("old.db");
    let conn = rusqlite::Connection::open(&old).unwrap();
    conn.execute_batch(include_str!("schema_v1.sql")).unwrap();
    conn.execute_batch("PRAGMA user_version = 1;").unwrap();
    drop(conn);
    assert_eq!(header(&old, 68), [0; 4]);
    // check recognises it as pipestat's, and leaves it as it is.
    let out = pipestat(dir.path(), &["check", "--db", "old.db"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(header(&old, 68), [0; 4]);
    // Any command that opens it for use upgrades it and marks it.
    let out = pipestat(dir.path(), &["token", "list", "--db", "old.db"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(&header(&old, 68), APPLICATION_ID);
    let out = pipestat(dir.path(), &["check", "--db", "old.db"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn backup_refuses_the_database_itself_and_an_existing_file() {
    let d = Daemon::start(&[]);
    d.post_runs(&[run_json("a", "success", "")]);
    let dir = d.dir.path();
    std::os::unix::fs::symlink("pipestat.db", dir.join("link.db")).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    for dest in [
        "pipestat.db",
        "./pipestat.db",
        "sub/../pipestat.db",
        "link.db",
    ] {
        let out = pipestat(dir, &["backup", dest, "--db", "pipestat.db"]);
        let stderr = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{dest}: {stderr}");
        assert!(
            stderr.contains("is the database being backed up"),
            "{stderr}"
        );
    }
    std::fs::write(dir.join("taken.db"), "mine").unwrap();
    let out = pipestat(dir, &["backup", "taken.db", "--db", "pipestat.db"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("taken.db exists"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(std::fs::read(dir.join("taken.db")).unwrap(), b"mine");
    // No temporary file is left behind by a refusal or a success.
    let out = pipestat(dir, &["backup", "sub/copy.db", "--db", "pipestat.db"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let names: Vec<String> = std::fs::read_dir(dir.join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["copy.db"]);
    assert!(pipestat(dir, &["check", "--db", "sub/copy.db"])
        .status
        .success());
}

/// SQLite's online backup API restarted after every write, so a backup never finished while
/// runs kept arriving. The copy now finishes under a steady load and holds every run that was
/// acknowledged before it started.
#[test]
fn backup_finishes_under_a_steady_write_load() {
    let dir = tempfile::tempdir().unwrap();
    // Some history, so that the copy takes many writes' time.
    let out = pipestat(
        dir.path(),
        &["demo", "--runs", "4000", "--now", "2026-06-01T00:00:00Z"],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let d = Daemon::start_in(dir, &["--quota-per-minute", "0"]);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // Four clients, each posting one run after another.
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (acked, stop, base) = (acked.clone(), stop.clone(), d.base.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(10))
                    .build();
                let started = Instant::now();
                for i in 0..100_000 {
                    if stop.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(120) {
                        break;
                    }
                    let id = format!("load-{t}-{i}");
                    let ok = agent
                        .post(&format!("{base}/api/v1/runs"))
                        .set("Content-Type", "application/json")
                        .send_string(&run_json(&id, "success", r#""branch":"main""#))
                        .is_ok_and(|r| r.status() == 200);
                    assert!(ok, "run {id} was refused");
                    acked.lock().unwrap().push(id);
                }
            })
        })
        .collect();
    let waited = Instant::now();
    while acked.lock().unwrap().len() < 20 && waited.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = acked.lock().unwrap().clone();
    assert!(before.len() >= 20, "the load did not start");
    let mut backup = Command::new(BIN)
        .args(["backup", "copy.db", "--db", "pipestat.db"])
        .current_dir(d.dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A copy of this database takes well under a second; 30 s leaves room for a slow disk.
    let status = wait_timeout(&mut backup, Duration::from_secs(30));
    let during = acked.lock().unwrap().len() - before.len();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let status = status.unwrap_or_else(|| {
        let _ = backup.kill();
        panic!("the backup did not finish in 30 s under load")
    });
    let out = backup.wait_with_output().unwrap();
    assert!(status.success(), "{}", stderr_of(&out));
    assert!(during > 0, "no write landed while the backup ran");

    let out = pipestat(d.dir.path(), &["check", "--db", "copy.db"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let copy = rusqlite::Connection::open(d.dir.path().join("copy.db")).unwrap();
    let stored: std::collections::HashSet<String> =
        crate::common::strings(&copy, "SELECT ext_id FROM runs WHERE ext_id LIKE 'load-%'")
            .into_iter()
            .collect();
    for id in &before {
        assert!(
            stored.contains(id),
            "acknowledged run {id} is not in the copy"
        );
    }
    // The 4,000 demo runs are there too.
    let all: i64 = copy
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert!(all >= 4000 + before.len() as i64, "{all}");
}

/// The README's fenced `sh` blocks that talk to the daemon: those with a `curl` line and no
/// line that starts pipestat, cargo or the CI script.
fn readme_curl_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in readme.lines() {
        match (&mut current, line.trim()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(lines), "```") => {
                let runnable = lines.iter().any(|l| l.contains("curl "))
                    && !lines.iter().any(|l| {
                        let l = l.trim_start();
                        ["pipestat ", "cargo ", "export ", ".ci/"]
                            .iter()
                            .any(|p| l.starts_with(p))
                    });
                if runnable {
                    blocks.push(lines.join("\n") + "\n");
                }
                current = None;
            }
            (Some(lines), _) => lines.push(line),
            (None, _) => {}
        }
    }
    blocks
}

/// How many times `block` runs curl: at the start of a line, after `; ` or inside `$(`.
fn curl_calls(block: &str) -> usize {
    block
        .lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            usize::from(l.starts_with("curl "))
                + l.matches("; curl ").count()
                + l.matches("$(curl ").count()
        })
        .sum()
}

/// Every curl command of the README, run by bash as printed (from the repository's root, with
/// `TOKEN` empty, as in open mode) against `serve --demo` on today's clock, answers 2xx. Only
/// the address is changed, to the test daemon's.
#[test]
fn the_readme_examples_work_against_serve_demo() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = readme_curl_blocks(&readme);
    let expected: usize = blocks.iter().map(|b| curl_calls(b)).sum();
    assert!(
        expected >= 30,
        "only {expected} curl commands found in the README"
    );

    let d = Daemon::start(&["--demo"]);
    let address = d.base.trim_start_matches("http://").to_owned();
    let log = d.dir.path().join("curl.log");
    // A curl that points the README's address at the test daemon, records the status, and
    // passes the body on (for `| jq`).
    let prelude = format!(
        r#"curl() {{
  local args=("${{@//localhost:8080/{address}}}")
  args=("${{args[@]//127.0.0.1:8080/{address}}}")
  local code
  code=$(command curl -sS -o "$CURL_BODY" -w '%{{http_code}}' "${{args[@]}}")
  local shown="${{args[*]}}"
  printf '%s %s\n' "$code" "${{shown//$'\n'/ }}" >> "$CURL_LOG"
  cat "$CURL_BODY"
}}
"#
    );
    for block in &blocks {
        let out = Command::new("bash")
            .args(["-c", &format!("{prelude}{block}")])
            .current_dir(root)
            .env("CURL_LOG", &log)
            .env("CURL_BODY", d.dir.path().join("body"))
            .env("TOKEN", "")
            .output()
            .expect("bash runs");
        assert!(out.stderr.is_empty(), "{block}\n{}", stderr_of(&out));
    }
    let ran = std::fs::read_to_string(&log).unwrap();
    let failed: Vec<&str> = ran.lines().filter(|l| !l.starts_with('2')).collect();
    assert!(failed.is_empty(), "not 2xx:\n{}", failed.join("\n"));
    assert_eq!(ran.lines().count(), expected, "{ran}");
}
