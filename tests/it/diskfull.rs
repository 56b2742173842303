//! A full disk, through the real binary: the database on a small tmpfs, filled by runs until
//! writes are refused, then space given back twice (a filler file deleted, the tmpfs grown).
//! Needs `mount` (root, as in CI); skipped with a message where mounting is not permitted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{pipestat, Answer, Daemon};

const MIB: u64 = 1 << 20;

/// A tmpfs mounted on a directory of its own, unmounted (and the directory removed) on drop,
/// also when the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB on `dir`; None when mounting is not permitted here.
    fn mount(dir: &Path, mib: u64) -> Option<Tmpfs> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m,mode=0700")])
            .args(["tmpfs", dir.to_str().unwrap()])
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED disk-full test: cannot mount a tmpfs here ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs(dir.to_owned()))
    }

    fn resize(&self, mib: u64) {
        let ok = Command::new("mount")
            .args([
                "-o",
                &format!("remount,size={mib}m"),
                self.0.to_str().unwrap(),
            ])
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount to {mib} MiB");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let dir = self.0.to_str().unwrap();
        let ok = Command::new("umount")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").args(["-l", dir]).status();
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A batch of `n` runs numbered from `first`, each with a failed job whose 16 KiB message
/// makes the WAL grow quickly.
fn batch(first: usize, n: usize) -> (Vec<String>, String) {
    let message = "x".repeat(16 << 10);
    let ids: Vec<String> = (first..first + n).map(|i| format!("r{i}")).collect();
    let runs: Vec<String> = ids
        .iter()
        .map(|id| {
            format!(
                r#"{{"id":"{id}","project":"gh/acme/api","workflow":"ci","status":"failed",
                "created_at":"2026-03-01T10:00:00Z","jobs":[{{"name":"build","status":"failed",
                "error_msg":"{message}"}}]}}"#
            )
        })
        .collect();
    (ids, format!("[{}]", runs.join(",")))
}

fn wal_size(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("pipestat.db-wal")).map_or(0, |m| m.len())
}

/// Asserts a 503 in pipestat's own error shape, with a `Retry-After` of some seconds.
fn assert_full(a: &Answer, what: &str) {
    assert_eq!(a.status, 503, "{what}: {}", a.text);
    assert_eq!(
        a.body["error"]["code"], "storage_full",
        "{what}: {}",
        a.text
    );
    let secs: u64 = a
        .retry_after
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{what}: no Retry-After in seconds: {a:?}"));
    assert!((1..=60).contains(&secs), "{what}: Retry-After {secs}");
}

struct Fill {
    /// Runs acknowledged with 200.
    acked: Vec<String>,
    /// The runs of the request refused with 503.
    refused: Vec<String>,
}

/// POSTs batches until one is refused for lack of space (at most 2,000 requests, 3 minutes).
fn fill(d: &Daemon, next: &mut usize) -> Fill {
    let started = Instant::now();
    let mut acked = Vec::new();
    for _ in 0..2000 {
        assert!(
            started.elapsed() < Duration::from_secs(180),
            "the disk never filled"
        );
        let (ids, body) = batch(*next, 10);
        *next += ids.len();
        let a = d.post_json("/api/v1/runs", &body);
        match a.status {
            200 => acked.extend(ids),
            503 => {
                assert_full(&a, "the refused write");
                return Fill {
                    acked,
                    refused: ids,
                };
            }
            other => panic!("a write on a filling disk got {other}: {}", a.text),
        }
    }
    panic!("2,000 writes and the disk never filled");
}

/// Polls `/readyz` until it answers 200 (at most 30 s; the writer probes every 2 s).
fn wait_ready(d: &Daemon) {
    let started = Instant::now();
    loop {
        let a = d.get("/readyz");
        if a.status == 200 {
            return;
        }
        assert_full(&a, "/readyz while waiting for space");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "/readyz still 503 30 s after space came back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_stored(d: &Daemon, acked: &[String], refused: &[String]) {
    for id in acked {
        let a = d.get(&format!("/api/v1/runs/gh/acme/api/{id}"));
        assert_eq!(a.status, 200, "acknowledged run {id}: {}", a.text);
        assert_eq!(a.body["id"], id.as_str());
    }
    for id in refused {
        let a = d.get(&format!("/api/v1/runs/gh/acme/api/{id}"));
        assert_eq!(
            a.status, 404,
            "refused run {id} must not be stored: {}",
            a.text
        );
    }
}

/// While full: writes 503, readiness 503, liveness 200, every acknowledged run readable.
fn assert_refusing(d: &Daemon, fill: &Fill) {
    assert_full(&d.get("/readyz"), "/readyz on a full disk");
    assert_eq!(d.get("/healthz").status, 200, "/healthz on a full disk");
    assert!(
        !fill.acked.is_empty(),
        "some writes landed before the disk filled"
    );
    assert_stored(d, &fill.acked, &fill.refused);
}

#[test]
fn a_full_disk_refuses_writes_with_503_and_recovers_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_owned();
    // Declared before the daemon, so dropped after it: the daemon stops before the unmount.
    let Some(tmpfs) = Tmpfs::mount(&root, 24) else {
        return;
    };
    // 12 MiB held by a file of ours, leaving the database about 12 MiB.
    std::fs::write(root.join("filler"), vec![1u8; (12 * MIB) as usize]).unwrap();
    let mut d = Daemon::start_in(dir, &[]);
    let mut next = 0;
    let mut acked = Vec::new();

    // First fill: refused, not ready, nothing acknowledged lost.
    let first = fill(&d, &mut next);
    let wal_full = wal_size(&root);
    assert!(
        wal_full > 4 * MIB,
        "the WAL took the disk: {wal_full} bytes"
    );
    assert_refusing(&d, &first);
    acked.extend(first.acked);

    // Space back (the filler deleted): ready again without a restart, writes taken, and the WAL
    // copied into the database and cut back.
    std::fs::remove_file(root.join("filler")).unwrap();
    wait_ready(&d);
    let (ids, body) = batch(next, 10);
    next += ids.len();
    let a = d.post_json("/api/v1/runs", &body);
    assert_eq!(a.status, 200, "a write once space is back: {}", a.text);
    acked.extend(ids);
    let wal_after = wal_size(&root);
    assert!(
        wal_after < wal_full / 4,
        "the WAL shrank after the checkpoint: {wal_full} bytes when full, {wal_after} after"
    );
    assert_eq!(d.get("/readyz").status, 200);

    // Second fill, then the tmpfs grown: the same again.
    let second = fill(&d, &mut next);
    let wal_full = wal_size(&root);
    assert_refusing(&d, &second);
    acked.extend(second.acked);
    tmpfs.resize(48);
    wait_ready(&d);
    let (ids, body) = batch(next, 10);
    let a = d.post_json("/api/v1/runs", &body);
    assert_eq!(a.status, 200, "a write after the second fill: {}", a.text);
    acked.extend(ids);
    let wal_after = wal_size(&root);
    assert!(
        wal_after < wal_full.max(4 * MIB) / 4,
        "the WAL shrank after the second fill: {wal_full} bytes when full, {wal_after} after"
    );
    assert_stored(&d, &acked, &[first.refused, second.refused].concat());

    assert!(d.terminate().success());
    let out = pipestat(&root, &["check", "--db", "pipestat.db"]);
    assert!(
        out.status.success(),
        "check after two fills: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(d);
    drop(tmpfs);
}
