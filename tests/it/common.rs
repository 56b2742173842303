//! The harness: the real `pipestat` binary on 127.0.0.1:0 with a fresh database in a temp dir,
//! spoken to over real HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_pipestat");

/// A fixture from tests/fixtures (real payloads and reports; their sources are in its README).
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Creates a token in `dir`'s database with the CLI and returns its secret (the last line of
/// stdout).
pub fn create_token(dir: &Path, name: &str, scope: &str) -> String {
    let out = pipestat(
        dir,
        &[
            "token",
            "create",
            "--name",
            name,
            "--scope",
            scope,
            "--db",
            "pipestat.db",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().unwrap().to_owned()
}

/// Runs a pipestat command to completion in `dir`.
pub fn pipestat(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("pipestat runs")
}

/// An HTTP answer: status, headers of interest, and the body parsed as JSON (Null if not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub retry_after: Option<String>,
    pub allow: Option<String>,
}

pub struct Daemon {
    pub child: Child,
    pub base: String,
    pub dir: tempfile::TempDir,
    agent: ureq::Agent,
    /// Sent as `Authorization: Bearer` when set.
    pub token: Option<String>,
}

impl Daemon {
    /// Starts `pipestat serve` on a fresh database with extra arguments.
    pub fn start(extra: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        Daemon::start_in(dir, extra)
    }

    /// Starts `pipestat serve --db DIR/pipestat.db --listen 127.0.0.1:0` plus `extra` in `dir`.
    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Daemon {
        let (child, base) =
            spawn_serve(dir.path(), extra).unwrap_or_else(|e| panic!("daemon did not start: {e}"));
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        Daemon {
            child,
            base,
            dir,
            agent,
            token: None,
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        self.call("GET", path, &[], None)
    }

    pub fn post_json(&self, path: &str, body: &str) -> Answer {
        self.call(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
    }

    /// POSTs `runs` (JSON objects) as one array to `/api/v1/runs` and expects a 200.
    pub fn post_runs(&self, runs: &[String]) {
        let a = self.post_json("/api/v1/runs", &format!("[{}]", runs.join(",")));
        assert_eq!(a.status, 200, "{}", a.text);
    }

    /// POSTs a JUnit / xUnit report (`application/xml`) to `path`.
    pub fn post_xml(&self, path: &str, xml: &[u8]) -> Answer {
        self.call(
            "POST",
            path,
            &[("Content-Type", "application/xml")],
            Some(xml),
        )
    }

    /// A connection of our own to the daemon's database.
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.path().join("pipestat.db")).unwrap()
    }

    /// GETs `path`, expects a 200, and returns the body.
    pub fn get_ok(&self, path: &str) -> Value {
        let a = self.get(path);
        assert_eq!(a.status, 200, "{path}: {}", a.text);
        a.body
    }

    /// One request with any method, headers and body.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Answer {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        let bearer;
        if let Some(t) = &self.token {
            bearer = format!("Bearer {t}");
            req = req.set("Authorization", &bearer);
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let result = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: transport error {e}"),
        };
        let status = resp.status();
        let retry_after = resp.header("Retry-After").map(str::to_owned);
        let allow = resp.header("Allow").map(str::to_owned);
        let text = resp.into_string().expect("body is text");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            text,
            retry_after,
            allow,
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(&self.child, "TERM");
        wait_timeout(&mut self.child, Duration::from_secs(30)).expect("daemon exits after SIGTERM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `serve` and waits for its `listening on` line; the error carries stderr on failure.
pub fn spawn_serve(dir: &Path, extra: &[&str]) -> Result<(Child, String), String> {
    let db = dir.join("pipestat.db");
    let mut args = vec!["serve", "--db", db.to_str().expect("utf-8 path")];
    if !extra.contains(&"--listen") {
        args.extend(["--listen", "127.0.0.1:0"]);
    }
    args.extend(extra);
    let mut child = Command::new(BIN)
        .args(&args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pipestat");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_default();
    match line.trim().strip_prefix("listening on ") {
        Some(base) => Ok((child, base.to_owned())),
        None => {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            Err(format!(
                "no listening line (got {line:?}); stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), child.id().to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill -{sig} failed");
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A minimal valid run, with `extra` JSON members spliced in (e.g. `"branch":"main"`).
pub fn run_json(id: &str, status: &str, extra: &str) -> String {
    let sep = if extra.is_empty() { "" } else { "," };
    format!(
        r#"{{"id":"{id}","project":"gh/acme/api","workflow":"ci","status":"{status}","created_at":"2026-03-01T10:00:00Z"{sep}{extra}}}"#
    )
}

/// A small deterministic generator for random histories (64-bit LCG, Knuth's constants).
pub struct Lcg(pub u64);

impl Lcg {
    /// A number in 0..n.
    pub fn next(&mut self, n: u64) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n) as i64
    }

    /// One of `from`.
    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.next(from.len() as u64) as usize]
    }
}

/// A time in milliseconds as a JSON value: an RFC 3339 string, or null.
pub fn json_time(ms: Option<i64>) -> String {
    ms.map_or("null".to_owned(), |ms| {
        format!("\"{}\"", pipestat::hooks::format_rfc3339(ms))
    })
}

/// The first column of every row `sql` returns, as text, in the order it returns them.
pub fn strings(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// Rebuilds one rollup family, by its name in `pipestat::hooks::REBUILDS`.
pub fn rebuild(family: &str, conn: &rusqlite::Connection) -> pipestat::Result<()> {
    let (_, rebuild) = pipestat::hooks::REBUILDS
        .iter()
        .find(|(name, _)| *name == family)
        .unwrap_or_else(|| panic!("no rollup family {family:?}"));
    rebuild(conn)
}

/// The rows a rollup family keeps, in a fixed order, by its name in `REBUILDS`. A family
/// without an entry here fails the check below: a new family must say what it keeps.
fn kept_rows(family: &str, conn: &rusqlite::Connection) -> Vec<String> {
    match family {
        "zadig" => crate::zadig::rollup_rows(conn),
        "circleci" => crate::circleci_rollup::kept(conn),
        "apigee" => crate::apigee_rollup::kept(conn),
        "flaky" => crate::circleci_flaky::kept(conn),
        "dora" => crate::dora::kept(conn),
        other => panic!("rollup family {other:?} has no kept rows to compare with its rebuild"),
    }
}

/// Asserts that every rollup family's rows, as the daemon's writes kept them, equal what its
/// rebuild computes from the stored runs, jobs and tests (each rebuild rolled back).
pub fn assert_every_rollup_equals_its_rebuild(conn: &mut rusqlite::Connection) {
    pipestat::hooks::register_functions(conn).unwrap();
    for (family, rebuild) in pipestat::hooks::REBUILDS {
        let kept = kept_rows(family, conn);
        let tx = conn.transaction().unwrap();
        rebuild(&tx).unwrap();
        assert_eq!(kept_rows(family, &tx), kept, "the {family} rollups");
        tx.rollback().unwrap();
    }
}
