//! Tokens, scopes, open mode and quotas (docs/api.md).

use base64::Engine;
use serde_json::json;

use crate::common::{create_token, pipestat, run_json, spawn_serve, Daemon};

#[test]
fn tokens_scopes_and_the_four_ways_to_present_them() {
    let dir = tempfile::tempdir().unwrap();
    let reader = create_token(dir.path(), "dash", "read");
    let ingester = create_token(dir.path(), "ci", "ingest");
    let admin = create_token(dir.path(), "ops", "admin");
    // The list shows names and scopes, never a secret.
    let out = pipestat(dir.path(), &["token", "list", "--db", "pipestat.db"]);
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(
        listed.contains("dash\tread") && listed.contains("ci\tingest"),
        "{listed}"
    );
    for secret in [&reader, &ingester, &admin] {
        assert!(!listed.contains(secret.as_str()));
    }
    let same = pipestat(
        dir.path(),
        &[
            "token",
            "create",
            "--name",
            "dash",
            "--scope",
            "read",
            "--db",
            "pipestat.db",
        ],
    );
    assert_eq!(same.status.code(), Some(1));

    let mut d = Daemon::start_in(dir, &[]);
    // No token: 401 on every surface that needs one; the probes stay open.
    assert_eq!(d.get("/api/v1/runs").status, 401);
    assert_eq!(
        d.post_json("/api/v1/runs", &run_json("a", "success", ""))
            .status,
        401
    );
    assert_eq!(d.get("/healthz").status, 200);
    // A wrong token is 401, a known token without the scope 403.
    d.token = Some("ps_not-a-token".into());
    assert_eq!(d.get("/api/v1/runs").status, 401);
    d.token = Some(reader.clone());
    let a = d.post_json("/api/v1/runs", &run_json("a", "success", ""));
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.text.contains("ingest"));
    d.token = Some(ingester.clone());
    assert_eq!(
        d.post_json("/api/v1/runs", &run_json("a", "success", ""))
            .status,
        200
    );
    assert_eq!(d.get("/api/v1/runs").status, 403);
    d.token = None;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{reader}:"))
    );
    let bearer = format!("Bearer {reader}");
    for (header, value) in [
        ("Authorization", bearer.as_str()),
        ("X-Auth-Token", reader.as_str()),
        ("Circle-Token", reader.as_str()),
        ("Authorization", basic.as_str()),
    ] {
        let a = d.call(
            "GET",
            "/api/v1/runs/gh/acme/api/a",
            &[(header, value)],
            None,
        );
        assert_eq!(a.status, 200, "{header}: {}", a.text);
        assert_eq!(a.body["id"], "a");
    }
    // Token management over HTTP needs admin.
    d.token = Some(reader.clone());
    assert_eq!(d.get("/api/v1/tokens").status, 403);
    d.token = Some(admin.clone());
    let a = d.post_json("/api/v1/tokens", r#"{"name":"bot","scopes":"read"}"#);
    assert_eq!(a.status, 201, "{}", a.text);
    let bot = a.body["token"].as_str().unwrap().to_owned();
    let names: Vec<_> = d.get("/api/v1/tokens").body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["bot", "ci", "dash", "ops"]);
    assert_eq!(
        d.post_json("/api/v1/tokens", r#"{"name":"x","scopes":"write"}"#)
            .status,
        400
    );
    // A name in use is refused, and the token it names keeps working.
    let again = d.post_json("/api/v1/tokens", r#"{"name":"bot","scopes":"admin"}"#);
    assert_eq!(again.status, 400, "{}", again.text);
    assert!(again.text.contains("already exists"), "{}", again.text);
    d.token = Some(bot.clone());
    assert_eq!(d.get("/api/v1/runs").status, 200);
    d.token = Some(admin);
    assert_eq!(
        d.call("DELETE", "/api/v1/tokens/bot", &[], None).status,
        200
    );
    assert_eq!(
        d.call("DELETE", "/api/v1/tokens/bot", &[], None).status,
        404
    );
    d.token = Some(bot);
    assert_eq!(d.get("/api/v1/runs").status, 401);
    // Revoking through the CLI works while the daemon runs.
    let out = pipestat(
        d.dir.path(),
        &["token", "revoke", "dash", "--db", "pipestat.db"],
    );
    assert!(out.status.success());
    d.token = Some(reader);
    assert_eq!(d.get("/api/v1/runs").status, 401);
    assert!(d.terminate().success());
}

#[test]
fn open_mode_is_loopback_only() {
    // Without tokens, a non-loopback address is refused with a reason.
    let dir = tempfile::tempdir().unwrap();
    let err = spawn_serve(dir.path(), &["--listen", "0.0.0.0:0"]).expect_err("refused");
    assert!(
        err.contains("without tokens") && err.contains("--insecure-open"),
        "{err}"
    );
    // With --insecure-open it starts, and requests without a token are allowed.
    let d = Daemon::start(&["--listen", "0.0.0.0:0", "--insecure-open"]);
    let port = d.base.rsplit(':').next().unwrap().to_owned();
    let a = ureq::get(&format!("http://127.0.0.1:{port}/api/v1/runs"))
        .call()
        .unwrap();
    assert_eq!(a.status(), 200);
    drop(d);
    // With a token it starts, and the token is required.
    let dir = tempfile::tempdir().unwrap();
    let secret = create_token(dir.path(), "t", "read");
    let (mut child, base) = spawn_serve(dir.path(), &["--listen", "0.0.0.0:0"]).unwrap();
    let port = base.rsplit(':').next().unwrap();
    let url = format!("http://127.0.0.1:{port}/api/v1/runs");
    match ureq::get(&url).call() {
        Err(ureq::Error::Status(401, _)) => {}
        other => panic!("expected 401, got {other:?}"),
    }
    assert_eq!(
        ureq::get(&url)
            .set("Circle-Token", &secret)
            .call()
            .unwrap()
            .status(),
        200
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn quota_answers_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let secret = create_token(dir.path(), "t", "read");
    let mut d = Daemon::start_in(dir, &["--quota-per-minute", "3"]);
    d.token = Some(secret);
    for _ in 0..3 {
        assert_eq!(d.get("/api/v1/runs").status, 200);
    }
    let a = d.get("/api/v1/runs");
    assert_eq!(a.status, 429);
    assert_eq!(a.body["error"]["code"], "too_many_requests");
    let secs: u64 = a.retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&secs));
    // Probes do not count against a token.
    assert_eq!(d.get("/healthz").body, json!({"status": "ok"}));
}
