//! What a hostile client or a web page cannot do (docs/operations.md): open mode answers only
//! loopback names and refuses cross-site writes, never mints a token; ambiguous framing is
//! refused; slow and idle clients are cut off, and SIGTERM does not wait for them. Raw TCP
//! where an HTTP client would not send what is tested.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::common::{create_token, run_json, signal, wait_timeout, Daemon, BIN};

/// The address (IP:PORT) of a daemon started by `Daemon::start`.
fn addr(d: &Daemon) -> String {
    d.base.trim_start_matches("http://").to_owned()
}

/// A connection to the daemon; reads give up after 20 s, so a test fails rather than hangs.
fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// An answer read off a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    body: Value,
}

/// Reads one answer (head and a Content-Length body) from `r`.
fn read_answer(r: &mut BufReader<TcpStream>) -> Raw {
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header line");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').expect("header");
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    r.read_exact(&mut body).expect("body");
    Raw {
        status,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }
}

/// Sends `request` as it is and reads one answer.
fn exchange(addr: &str, request: &str) -> (Raw, BufReader<TcpStream>) {
    let mut s = connect(addr);
    s.write_all(request.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    (read_answer(&mut r), r)
}

/// Asserts that the daemon ends the connection: a read finds end-of-stream (not a timeout),
/// with nothing more sent.
fn assert_closed(mut r: BufReader<TcpStream>) {
    let mut rest = Vec::new();
    match r.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "more after the answer: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) => panic!("the connection was not closed: {e}"),
    }
}

/// Starts `pipestat serve` on a fresh database with environment variables set.
fn start_with_env(env: &[(&str, &str)], extra: &[&str]) -> (Child, String, tempfile::TempDir) {
    start_in_with_env(tempfile::tempdir().unwrap(), env, extra, None)
}

/// Starts `pipestat serve` on the database in `dir`, with environment variables set; its log
/// (at `info`) goes to `log` when given.
fn start_in_with_env(
    dir: tempfile::TempDir,
    env: &[(&str, &str)],
    extra: &[&str],
    log: Option<&std::path::Path>,
) -> (Child, String, tempfile::TempDir) {
    let db = dir.path().join("pipestat.db");
    let mut args = vec![
        "serve",
        "--db",
        db.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend(extra);
    let (level, stderr) = match log {
        Some(path) => ("info", Stdio::from(std::fs::File::create(path).unwrap())),
        None => ("error", Stdio::null()),
    };
    let mut child = Command::new(BIN)
        .args(&args)
        .envs(env.iter().copied())
        .env("RUST_LOG", level)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(120)).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("no listening line: {line:?}"))
        .to_owned();
    (child, addr, dir)
}

#[test]
fn open_mode_answers_loopback_names_only() {
    let d = Daemon::start(&[]);
    let addr = addr(&d);
    let port = addr.rsplit(':').next().unwrap();
    let get = |host: &str, path: &str| {
        exchange(
            &addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .0
    };
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "127.0.0.2".to_owned(),
    ] {
        assert_eq!(get(&host, "/api/v1/runs").status, 200, "{host}");
    }
    // DNS rebinding: a name of the attacker's that resolves to 127.0.0.1.
    let a = get(&format!("rebind.example:{port}"), "/api/v1/runs");
    assert_eq!(a.status, 403);
    assert_eq!(a.body["error"]["code"], "forbidden");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rebind.example"),
        "{a:?}"
    );
    // Each surface in its own shape.
    let a = get("rebind.example", "/api/v2/insights/gh/acme/api/workflows");
    assert_eq!(a.status, 403);
    assert!(a.body["message"].as_str().unwrap().contains("loopback"));
    let a = get("rebind.example", "/openapi/statistics/overview");
    assert_eq!((a.status, a.body["code"].as_u64()), (403, Some(403)));
    // HTTP/1.0 needs no Host; HTTP/1.1 does.
    let (a, _) = exchange(&addr, "GET /api/v1/runs HTTP/1.0\r\n\r\n");
    assert_eq!(a.status, 200);
    let (a, _) = exchange(
        &addr,
        "GET /api/v1/runs HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(a.status, 400);
    // The probes answer any name: load balancers and health checkers use their own.
    assert_eq!(get("lb.internal", "/healthz").status, 200);
}

#[test]
fn open_mode_refuses_cross_site_writes_and_never_mints_a_token() {
    let d = Daemon::start(&[]);
    let own = d.base.clone();
    let run = run_json("r1", "success", "");
    let post = |headers: &[(&str, &str)]| {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        d.call("POST", "/api/v1/runs", &h, Some(run.as_bytes()))
    };
    for refused in [
        vec![("Origin", "http://evil.example")],
        vec![("Origin", "null")],
        vec![("Origin", "http://localhost:1")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
    ] {
        let a = post(&refused);
        assert_eq!(a.status, 403, "{refused:?}: {}", a.text);
        assert_eq!(a.body["error"]["code"], "forbidden");
    }
    assert_eq!(d.get("/api/v1/runs").body["items"], serde_json::json!([]));
    // The daemon's own pages, and clients that are not browsers, may write.
    assert_eq!(post(&[("Origin", own.as_str())]).status, 200);
    assert_eq!(post(&[("Sec-Fetch-Site", "same-origin")]).status, 200);
    assert_eq!(post(&[]).status, 200);
    // Reads are not refused for their Origin (a page cannot read the answer anyway).
    let a = d.call(
        "GET",
        "/api/v1/runs",
        &[("Origin", "http://evil.example")],
        None,
    );
    assert_eq!(a.status, 200);

    // No token over HTTP without an admin token, with or without a token presented.
    for auth in [None, Some("Bearer ps_made_up")] {
        let mut h = vec![("Content-Type", "application/json")];
        if let Some(v) = auth {
            h.push(("Authorization", v));
        }
        let a = d.call(
            "POST",
            "/api/v1/tokens",
            &h,
            Some(br#"{"name":"x","scopes":"admin"}"#),
        );
        assert_eq!(a.status, 401, "{}", a.text);
        let msg = a.body["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("admin") && msg.contains("pipestat token create"),
            "{msg}"
        );
    }
    let stored: i64 = d
        .db()
        .query_row("SELECT count(*) FROM tokens", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 0);
    // The first token comes from the CLI; then HTTP token creation works with it.
    let admin = create_token(d.dir.path(), "ops", "admin");
    let a = d.call(
        "POST",
        "/api/v1/tokens",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {admin}")),
        ],
        Some(br#"{"name":"ci","scopes":"ingest"}"#),
    );
    assert_eq!(a.status, 201, "{}", a.text);
}

#[test]
fn open_mode_ignores_a_presented_token() {
    // pycircleci and other clients refuse to run without a token, so they send one.
    let d = Daemon::start(&[]);
    let run = run_json("r1", "success", "");
    for (header, value) in [
        ("Circle-Token", "anything"),
        ("Authorization", "Basic YW55dGhpbmc6"),
        ("Authorization", "Bearer anything"),
        ("X-Auth-Token", "anything"),
    ] {
        let a = d.call(
            "POST",
            "/api/v1/runs",
            &[("Content-Type", "application/json"), (header, value)],
            Some(run.as_bytes()),
        );
        assert_eq!(a.status, 200, "{header}: {}", a.text);
        let a = d.call(
            "GET",
            "/api/v2/insights/gh/acme/api/workflows",
            &[(header, value)],
            None,
        );
        assert_eq!(a.status, 200, "{header}: {}", a.text);
    }
}

#[test]
fn a_method_not_served_is_405_before_any_credential() {
    let dir = tempfile::tempdir().unwrap();
    let reader = create_token(dir.path(), "dash", "read");
    let mut d = Daemon::start_in(dir, &[]);
    for (method, path, allow) in [
        ("PUT", "/api/v1/runs", "GET, POST"),
        ("DELETE", "/api/v1/runs", "GET, POST"),
        ("PUT", "/api/v1/rollbacks", "POST"),
        ("GET", "/api/v1/rollbacks", "POST"),
        ("PATCH", "/api/v1/tokens", "GET, POST"),
        ("PUT", "/api/v1/runs/gh/acme/api/r1/tests", "GET, POST"),
        ("PUT", "/webhooks/github", "POST"),
        ("POST", "/api/v2/insights/gh/acme/api/workflows", "GET"),
        ("PUT", "/openapi/statistics/overview", "GET"),
        ("POST", "/healthz", "GET"),
    ] {
        let a = d.call(method, path, &[], None);
        assert_eq!(a.status, 405, "{method} {path}: {}", a.text);
        assert_eq!(a.allow.as_deref(), Some(allow), "{method} {path}");
    }
    // A method that is served still needs its token, and its scope.
    assert_eq!(d.call("POST", "/api/v1/rollbacks", &[], None).status, 401);
    d.token = Some(reader);
    assert_eq!(d.call("POST", "/api/v1/rollbacks", &[], None).status, 403);
    assert_eq!(d.call("PUT", "/api/v1/rollbacks", &[], None).status, 405);
}

/// A well-framed POST of one run, as raw bytes of HTTP/1.1.
fn plain_post(run: &str) -> String {
    format!(
        "POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{run}",
        run.len()
    )
}

#[test]
fn ambiguous_framing_is_refused() {
    let d = Daemon::start(&[]);
    let addr = addr(&d);
    let run = run_json("smuggled", "success", "");
    // Behind a chunked body, a second request that a parser reading the other framing would
    // serve. tiny_http reads the chunked body as the next request's line once the first is
    // answered: it answers that an empty 400 and closes, and the request behind is not read.
    let tail = plain_post(&run);
    let chunked = format!("5\r\nhello\r\n0\r\n\r\n{tail}");
    for (what, head, body) in [
        (
            "Content-Length and Transfer-Encoding",
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                chunked.len()
            ),
            chunked.clone(),
        ),
        (
            "a Transfer-Encoding other than chunked",
            "Transfer-Encoding: gzip, chunked\r\n".to_owned(),
            chunked.clone(),
        ),
    ] {
        let (a, mut r) = exchange(
            &addr,
            &format!(
                "POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/json\r\n{head}\r\n{body}"
            ),
        );
        assert_eq!(a.status, 400, "{what}: {a:?}");
        assert_eq!(a.body["error"]["code"], "bad_request", "{what}");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).expect("the connection is closed");
        let rest = String::from_utf8_lossy(&rest);
        assert!(
            rest.is_empty() || rest.starts_with("HTTP/1.1 400 "),
            "{what}: {rest:?}"
        );
        assert_eq!(
            rest.matches("HTTP/1.1").count(),
            usize::from(!rest.is_empty())
        );
    }
    // Content-Lengths that differ, or one that is not a plain number (tiny_http would read
    // the first, and `+2` as 2).
    for (what, head) in [
        (
            "two different Content-Lengths",
            "Content-Length: 2\r\nContent-Length: 40\r\n",
        ),
        (
            "a Content-Length that is not a number",
            "Content-Length: +2\r\n",
        ),
    ] {
        let (a, _) = exchange(
            &addr,
            &format!(
                "POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/json\r\n{head}Connection: close\r\n\r\n[]"
            ),
        );
        assert_eq!(a.status, 400, "{what}: {a:?}");
        assert_eq!(a.body["error"]["code"], "bad_request", "{what}");
        let msg = a.body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("Content-Length"), "{what}: {msg}");
    }
    // Nothing of it was stored, and the daemon goes on serving.
    assert_eq!(d.get("/api/v1/runs").body["items"], serde_json::json!([]));
    // Equal Content-Lengths are one length.
    let (a, _) = exchange(
        &addr,
        &format!(
            "POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {n}\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n{run}",
            n = run.len()
        ),
    );
    assert_eq!(a.status, 200, "{a:?}");
}

#[test]
fn a_request_refused_before_its_body_is_answered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ci = create_token(dir.path(), "ci", "ingest");
    let d = Daemon::start_in(dir, &["--max-body", "1000000"]);
    let addr = addr(&d);
    for (head, status) in [
        // No token, or an unknown one: 401, before a byte of the body is read.
        ("Content-Length: 500000\r\n".to_owned(), 401),
        (
            "Content-Length: 500000\r\nAuthorization: Bearer x\r\n".to_owned(),
            401,
        ),
        (
            "Content-Length: 500000\r\nExpect: 100-continue\r\n".to_owned(),
            401,
        ),
        // Over --max-body: 413.
        (
            format!("Content-Length: 5000000\r\nAuthorization: Bearer {ci}\r\n"),
            413,
        ),
    ] {
        let mut s = connect(&addr);
        // The head and a little of the body; the rest never comes.
        s.write_all(
            format!("POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n[{{\"id\":")
                .as_bytes(),
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let a = read_answer(&mut r);
        assert_eq!(a.status, status, "{head}");
    }
    assert_eq!(d.get("/healthz").status, 200);
}

#[test]
fn slow_bodies_do_not_stop_the_daemon() {
    // Twelve clients without a token announce a body and send a byte a second, more than
    // the daemon has workers (--threads 2); they are refused and closed unread, and /healthz
    // answers at once.
    let dir = tempfile::tempdir().unwrap();
    create_token(dir.path(), "ci", "ingest");
    let d = Daemon::start_in(dir, &["--threads", "2"]);
    let addr = addr(&d);
    let stop = Arc::new(AtomicBool::new(false));
    let mut slow = Vec::new();
    for _ in 0..12 {
        let (addr, stop) = (addr.clone(), stop.clone());
        let auth = "";
        slow.push(thread::spawn(move || {
            let mut s = connect(&addr);
            let head = format!(
                "POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/json\r\n{auth}Content-Length: 100000\r\n\r\n"
            );
            if s.write_all(head.as_bytes()).is_err() {
                return;
            }
            // At most 8 bytes, one a second: bounded, and fewer than the body needs.
            for _ in 0..8 {
                if stop.load(Ordering::SeqCst) || s.write_all(b" ").is_err() {
                    return;
                }
                thread::sleep(Duration::from_secs(1));
            }
        }));
    }
    thread::sleep(Duration::from_millis(500));
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .build();
    for _ in 0..5 {
        let a = agent
            .get(&format!("{}/healthz", d.base))
            .call()
            .expect("/healthz answers within 2 s beside slow clients");
        assert_eq!(a.status(), 200);
        thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::SeqCst);
    for t in slow {
        t.join().unwrap();
    }
}

#[test]
fn idle_connections_and_stalled_bodies_are_cut_after_the_timeout() {
    let (mut child, addr, _dir) = start_with_env(&[("PIPESTAT_IO_TIMEOUT_SECS", "1")], &[]);
    // The listener's timeout bounds its accept too; a daemon that nobody connects to for
    // longer than that still serves.
    thread::sleep(Duration::from_millis(3500));
    let (a, _) = exchange(
        &addr,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(a.status, 200);
    // Connected, and nothing sent: closed without an answer.
    let s = connect(&addr);
    assert_closed(BufReader::new(s));
    // Kept alive after a request, then idle: closed.
    let (a, r) = exchange(&addr, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(a.status, 200);
    assert_closed(r);
    // A body that stops arriving: 408; tiny_http then reads the rest of the body until the
    // timeout, then the next request until the timeout, and closes.
    let mut s = connect(&addr);
    s.write_all(
        b"POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
          Content-Length: 5000\r\n\r\n[",
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let a = read_answer(&mut r);
    assert_eq!(a.status, 408, "{a:?}");
    assert_eq!(a.body["error"]["code"], "request_timeout");
    assert_closed(r);
    terminate_within_10s(&mut child);
}

#[test]
fn sigterm_does_not_wait_for_slow_or_idle_clients() {
    let (mut child, addr, _dir) = start_with_env(&[], &["--threads", "2"]);
    // Idle kept-alive connections, and slow bodies (open mode: they are being read).
    let mut held = Vec::new();
    for _ in 0..4 {
        let (a, r) = exchange(&addr, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        assert_eq!(a.status, 200);
        held.push(r.into_inner());
    }
    for _ in 0..4 {
        let mut s = connect(&addr);
        s.write_all(
            b"POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n[",
        )
        .unwrap();
        held.push(s);
    }
    thread::sleep(Duration::from_millis(300));
    terminate_within_10s(&mut child);
}

/// A run stored under `id`, read from the database.
fn stored(d: &Daemon, id: &str) -> i64 {
    d.db()
        .query_row("SELECT count(*) FROM runs WHERE ext_id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap()
}

#[test]
fn a_request_smuggled_behind_ambiguous_framing_is_never_served() {
    // Open mode: the smuggled request would need no token to be stored.
    let d = Daemon::start(&[]);
    let addr = addr(&d);
    let run = run_json("smuggled", "success", "");
    let smuggled = plain_post(&run);
    for (what, head, body) in [
        // Read by its Content-Length, the body ends after "0\r\n\r\n" and the smuggled
        // request follows; read as chunked, it is part of the body.
        (
            "Content-Length and Transfer-Encoding",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            format!("0\r\n\r\n{smuggled}"),
        ),
        (
            "Transfer-Encoding before Content-Length",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            format!("0\r\n\r\n{smuggled}"),
        ),
        // Read by the first length, the smuggled request follows "[]".
        (
            "two different Content-Lengths",
            "Content-Length: 2\r\nContent-Length: 400\r\n",
            format!("[]{smuggled}"),
        ),
    ] {
        let (a, r) = exchange(
            &addr,
            &format!(
                "POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/json\r\n{head}\r\n{body}"
            ),
        );
        assert_eq!(a.status, 400, "{what}: {a:?}");
        assert_eq!(a.body["error"]["code"], "bad_request", "{what}");
        // Closed after the 400: nothing more is answered on it.
        assert_closed(r);
    }
    assert_eq!(stored(&d, "smuggled"), 0);
    // The same request sent on its own is stored: the check above could fail.
    let (a, _) = exchange(&addr, &smuggled);
    assert_eq!(a.status, 200, "{a:?}");
    assert_eq!(stored(&d, "smuggled"), 1);
}

#[test]
fn a_huge_header_is_431_and_the_connection_closed() {
    let d = Daemon::start(&[]);
    let addr = addr(&d);
    let s = connect(&addr);
    let mut w = s.try_clone().unwrap();
    // 1 MiB of one header, written beside the read: pipestat answers after 64 KiB and may
    // stop reading, so the write may fail.
    let writer = thread::spawn(move || {
        let _ = w.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ");
        let chunk = vec![b'a'; 64 * 1024];
        for _ in 0..16 {
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = w.write_all(b"\r\n\r\n");
    });
    let mut r = BufReader::new(s);
    let a = read_answer(&mut r);
    assert_eq!(a.status, 431, "{a:?}");
    assert!(
        a.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("64 KiB"),
        "{a:?}"
    );
    assert_closed(r);
    writer.join().unwrap();
    // Many headers, each small, are one head too.
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (a, r) = exchange(
        &addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}\r\n"),
    );
    assert_eq!(a.status, 431, "{a:?}");
    assert_closed(r);
    // A head just under the bound is served.
    let (a, _) = exchange(
        &addr,
        &format!(
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(60 * 1024)
        ),
    );
    assert_eq!(a.status, 200);
}

#[test]
fn an_absurd_content_length_is_refused_and_the_daemon_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let ci = create_token(dir.path(), "ci", "ingest");
    let d = Daemon::start_in(dir, &[]);
    let addr = addr(&d);
    // 100 TB, without a token and with one.
    for auth in [String::new(), format!("Authorization: Bearer {ci}\r\n")] {
        let (a, r) = exchange(
            &addr,
            &format!(
                "POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Content-Type: application/json\r\n{auth}Content-Length: 100000000000000\r\n\r\n[",
            ),
        );
        assert!(matches!(a.status, 401 | 413), "{auth}: {a:?}");
        assert_closed(r);
        assert_eq!(d.get("/healthz").status, 200);
    }
}

/// A thread that sends `head` and then one byte of `trickle` every 250 ms, at most `bytes`
/// of them, until `stop`.
fn trickler(
    addr: &str,
    head: String,
    trickle: u8,
    bytes: usize,
    stop: &Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    let (addr, stop) = (addr.to_owned(), stop.clone());
    thread::spawn(move || {
        let mut s = connect(&addr);
        if s.write_all(head.as_bytes()).is_err() {
            return;
        }
        for _ in 0..bytes {
            if stop.load(Ordering::SeqCst) || s.write_all(&[trickle]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(250));
        }
    })
}

/// Asserts that /healthz answers within 2 s, five times, half a second apart.
/// Sends SIGTERM and asserts a clean exit within 10 s (the bounded shutdown).
fn terminate_within_10s(child: &mut Child) {
    signal(child, "TERM");
    let status = wait_timeout(child, Duration::from_secs(10))
        .expect("pipestat exits within 10 s of SIGTERM");
    assert!(status.success(), "{status:?}");
}

fn healthz_answers(base: &str) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(2))
        .build();
    for _ in 0..5 {
        let a = agent
            .get(&format!("{base}/healthz"))
            .call()
            .expect("/healthz answers within 2 s");
        assert_eq!(a.status(), 200);
        thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn slow_heads_beyond_the_connection_cap_do_not_stop_healthz() {
    let (mut child, addr, _dir) = start_with_env(&[("PIPESTAT_MAX_CONNECTIONS", "4")], &[]);
    let stop = Arc::new(AtomicBool::new(false));
    // Five clients, one more than the cap, sending a head a byte every 250 ms.
    let slow: Vec<_> = (0..5)
        .map(|_| {
            trickler(
                &addr,
                "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".into(),
                b'a',
                40,
                &stop,
            )
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    healthz_answers(&format!("http://{addr}"));
    stop.store(true, Ordering::SeqCst);
    for t in slow {
        t.join().unwrap();
    }
    terminate_within_10s(&mut child);
}

#[test]
fn slow_bodies_with_a_valid_token_hold_no_worker() {
    // Six clients WITH an ingest token announce a body and send it a byte every 250 ms: more
    // than the daemon's two workers, and each passes every check. pipestat reads their bodies
    // before any worker sees them, so /healthz answers at once.
    let dir = tempfile::tempdir().unwrap();
    let ci = create_token(dir.path(), "ci", "ingest");
    let (mut child, addr, _dir) = start_in_with_env(dir, &[], &["--threads", "2"], None);
    let stop = Arc::new(AtomicBool::new(false));
    let head = format!(
        "POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {ci}\r\nContent-Length: 100000\r\n\r\n"
    );
    let slow: Vec<_> = (0..6)
        .map(|_| trickler(&addr, head.clone(), b' ', 40, &stop))
        .collect();
    thread::sleep(Duration::from_millis(500));
    healthz_answers(&format!("http://{addr}"));
    stop.store(true, Ordering::SeqCst);
    for t in slow {
        t.join().unwrap();
    }
    terminate_within_10s(&mut child);

    // With every connection of the cap busy with such a body (none waits for a head), a new
    // connection is answered 503 and closed.
    let dir = tempfile::tempdir().unwrap();
    let ci = create_token(dir.path(), "ci", "ingest");
    let (mut child, addr, _dir) =
        start_in_with_env(dir, &[("PIPESTAT_MAX_CONNECTIONS", "2")], &[], None);
    let stop = Arc::new(AtomicBool::new(false));
    let head = format!(
        "POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {ci}\r\nContent-Length: 100000\r\n\r\n"
    );
    let busy: Vec<_> = (0..2)
        .map(|_| trickler(&addr, head.clone(), b' ', 40, &stop))
        .collect();
    thread::sleep(Duration::from_millis(500));
    let (a, r) = exchange(&addr, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(a.status, 503, "{a:?}");
    assert_eq!(a.body["error"]["code"], "unavailable");
    assert_closed(r);
    stop.store(true, Ordering::SeqCst);
    for t in busy {
        t.join().unwrap();
    }
    // Their places are free again.
    thread::sleep(Duration::from_millis(300));
    let (a, _) = exchange(
        &addr,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(a.status, 200);
    terminate_within_10s(&mut child);
}

/// The process's thread count, from /proc.
fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn threads_stay_bounded_under_many_idle_connections() {
    const CAP: usize = 16;
    let (mut child, addr, _dir) = start_with_env(
        &[
            ("PIPESTAT_MAX_CONNECTIONS", "16"),
            ("PIPESTAT_IO_TIMEOUT_SECS", "60"),
        ],
        &["--threads", "2"],
    );
    let (a, _) = exchange(
        &addr,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(a.status, 200);
    let before = threads_of(child.id());
    // 300 connections: half connected and silent, half idle after a kept-alive request.
    let mut held = Vec::new();
    for i in 0..300 {
        if i % 2 == 0 {
            held.push(connect(&addr));
        } else {
            let (a, r) = exchange(&addr, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            assert_eq!(a.status, 200);
            held.push(r.into_inner());
        }
    }
    // tiny_http's idle pool threads leave after 5 s.
    thread::sleep(Duration::from_secs(6));
    let after = threads_of(child.id());
    // Each connection held costs at most two threads (its reader, and tiny_http's for its
    // forwarding connection); 4 more for tiny_http's pool.
    assert!(
        after <= before + 2 * CAP + 4,
        "{before} threads before, {after} with 300 connections"
    );
    healthz_answers(&format!("http://{addr}"));
    drop(held);
    terminate_within_10s(&mut child);
}

#[test]
fn sigterm_does_not_wait_for_slow_heads_or_bodies_with_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let ci = create_token(dir.path(), "ci", "ingest");
    let (mut child, addr, _dir) = start_in_with_env(dir, &[], &["--threads", "2"], None);
    let stop = Arc::new(AtomicBool::new(false));
    let mut slow = Vec::new();
    for _ in 0..3 {
        slow.push(trickler(
            &addr,
            format!(
                "POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                 Authorization: Bearer {ci}\r\nContent-Length: 100000\r\n\r\n"
            ),
            b' ',
            80,
            &stop,
        ));
        slow.push(trickler(
            &addr,
            "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ".into(),
            b'a',
            80,
            &stop,
        ));
    }
    let idle: Vec<_> = (0..3).map(|_| connect(&addr)).collect();
    thread::sleep(Duration::from_millis(500));
    terminate_within_10s(&mut child);
    stop.store(true, Ordering::SeqCst);
    for t in slow {
        t.join().unwrap();
    }
    drop(idle);
}

#[test]
fn the_worker_socket_is_private_and_removed_at_exit_and_the_log_names_the_client() {
    use std::os::unix::fs::PermissionsExt;
    let runtime = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    // Left by a pipestat killed with SIGKILL (no such process): removed at start. One of a
    // process still running (pid 1) is left alone.
    let stale = runtime.path().join("pipestat-999999999-0badcafe");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("http.sock"), b"").unwrap();
    let alive = runtime.path().join("pipestat-1-0badcafe");
    std::fs::create_dir(&alive).unwrap();
    let (mut child, addr, _dir) = start_in_with_env(
        dir,
        &[("RUNTIME_DIRECTORY", runtime.path().to_str().unwrap())],
        &[],
        Some(&log),
    );
    assert!(!stale.exists());
    std::fs::remove_dir(&alive).expect("a running process's directory is kept");
    let entries: Vec<_> = std::fs::read_dir(runtime.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let name = entries[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with(&format!("pipestat-{}-", child.id())),
        "{name}"
    );
    let mode = std::fs::metadata(&entries[0]).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
    assert!(entries[0].join("http.sock").exists());
    // A client's own copy of the internal address header is replaced.
    let (a, r) = exchange(
        &addr,
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pipestat-Peer: 203.0.113.9:1\r\n\
         Connection: close\r\n\r\n",
    );
    assert_eq!(a.status, 200);
    let local = r.get_ref().local_addr().unwrap().to_string();
    drop(r);
    terminate_within_10s(&mut child);
    assert_eq!(std::fs::read_dir(runtime.path()).unwrap().count(), 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("GET /healthz"))
        .unwrap_or_else(|| panic!("no access line: {text}"));
    assert!(
        line.contains(&format!("{local} GET /healthz 200")),
        "{line}"
    );
    assert!(!text.contains("203.0.113.9"), "{text}");
}

#[test]
fn the_connection_cap_fits_the_open_file_limit() {
    // With 256 open files at most (soft and hard), 256 connections would take every
    // descriptor, and tiny_http stops serving for good when it cannot take one. pipestat
    // lowers its cap to what fits: 100 connections kept alive after a request, then /healthz.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pipestat.db");
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 256 && exec \"$0\" \"$@\"", BIN, "serve"])
        .args(["--db", db.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--threads", "2"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("no listening line: {line:?}"))
        .to_owned();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 256 ")),
        "{limits}"
    );
    let mut held = Vec::new();
    for _ in 0..100 {
        let (a, r) = exchange(&addr, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        assert_eq!(a.status, 200);
        held.push(r.into_inner());
    }
    healthz_answers(&format!("http://{addr}"));
    drop(held);
    terminate_within_10s(&mut child);
}
