//! What every bench shares: the machine it ran on, its load, percentiles, and a daemon to
//! measure. Each bench uses some of it.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The number of cores and the CPU model, as the kernel reports them.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    format!("{cores} cores ({model})")
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every figure.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The p-quantile of sorted durations in milliseconds, by linear interpolation between closest
/// ranks (h = (n - 1) * p), as the statistics themselves; 0 for no durations.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let ms = |i: usize| sorted[i].as_secs_f64() * 1000.0;
    let h = (sorted.len() - 1) as f64 * p;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    ms(lo) + (h - lo as f64) * (ms(hi) - ms(lo))
}

/// `PIPESTAT_BENCH_REQUESTS`: the timed requests per table row, `default` when unset.
pub fn requests_per_row(default: usize) -> usize {
    std::env::var("PIPESTAT_BENCH_REQUESTS")
        .ok()
        .map(|s| {
            s.parse()
                .expect("PIPESTAT_BENCH_REQUESTS: a positive integer")
        })
        .unwrap_or(default)
        .max(1)
}

/// Times `n` GETs of `url`, each on a new connection as curl makes, after one untimed warm-up,
/// and returns the times sorted. A request that fails stops the bench.
pub fn time_gets(timeout: Duration, url: &str, n: usize) -> Vec<Duration> {
    let get = || {
        let started = std::time::Instant::now();
        let resp = ureq::AgentBuilder::new()
            .timeout(timeout)
            .build()
            .get(url)
            .call()
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let _ = resp.into_string().expect("body");
        started.elapsed()
    };
    get();
    let mut times: Vec<Duration> = (0..n).map(|_| get()).collect();
    times.sort_unstable();
    times
}

/// The median, p95 and max of sorted times, in ms, as the cells of a Markdown table row.
pub fn ms_cells(sorted: &[Duration]) -> String {
    format!(
        "{:.1} | {:.1} | {:.1}",
        percentile_ms(sorted, 0.5),
        percentile_ms(sorted, 0.95),
        percentile_ms(sorted, 1.0)
    )
}

/// `pipestat serve` on a database, on a free loopback port, without quota; stopped with
/// SIGTERM when dropped, or by `stop`.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// Where the daemon's log goes, when not to the bench's own stderr.
    log: Option<PathBuf>,
    stopped: bool,
}

impl Server {
    /// Starts the daemon on `db`, logging warnings only to the bench's stderr, and waits for
    /// its `listening on` line.
    pub fn start(bin: &str, db: &Path) -> Server {
        Server::spawn(bin, db, None, None, None)
    }

    /// Starts the daemon on `db` with its clock at `now_s` (Unix seconds): the routes whose
    /// windows end now then cover the database's history.
    pub fn at(bin: &str, db: &Path, now_s: i64) -> Server {
        Server::spawn(bin, db, None, None, Some(now_s))
    }

    /// Starts the daemon on `db` with its whole log (a line per request, the writer's summary
    /// at exit) in the file `log`, and `--threads N` when given.
    pub fn logging(bin: &str, db: &Path, log: &Path, threads: Option<&str>) -> Server {
        Server::spawn(bin, db, Some(log), threads, None)
    }

    fn spawn(
        bin: &str,
        db: &Path,
        log: Option<&Path>,
        threads: Option<&str>,
        now_s: Option<i64>,
    ) -> Server {
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--db")
            .arg(db)
            .args(["--listen", "127.0.0.1:0", "--quota-per-minute", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if let Some(n) = threads {
            cmd.args(["--threads", n]);
        }
        if let Some(now) = now_s {
            cmd.args(["--now", &now.to_string()]);
        }
        match log {
            // A file stands in for the journal.
            Some(log) => cmd.stderr(File::create(log).expect("create the log file")),
            None => cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit()),
        };
        let mut child = cmd.spawn().expect("start pipestat serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the daemon's first line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the daemon: {line:?}"))
            .to_owned();
        Server {
            child,
            base,
            log: log.map(Path::to_owned),
            stopped: false,
        }
    }

    /// Returns VmHWM and VmRSS of the daemon, in KiB.
    pub fn memory_kb(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read the daemon's /proc status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// Sends SIGTERM, waits for a clean exit, and returns how many lines the daemon logged and
    /// the writer's and the syncer's summary lines (groups committed, time spent); with no log
    /// file, no lines.
    pub fn stop(mut self) -> (usize, String, String) {
        let killed = self.terminate().expect("run kill");
        assert!(killed.success(), "kill -TERM failed");
        let status = self.child.wait().expect("wait for the daemon");
        self.stopped = true;
        assert!(status.success(), "the daemon exited with {status}");
        let log = self
            .log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let summary = |who: &str| {
            log.lines()
                .find_map(|l| l.find(who).map(|i| l[i..].to_owned()))
                .unwrap_or_else(|| format!("{who}no summary logged"))
        };
        (
            log.lines().count(),
            summary("writer: "),
            summary("syncer: "),
        )
    }

    /// Sends the daemon SIGTERM.
    fn terminate(&self) -> std::io::Result<std::process::ExitStatus> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.terminate();
            let _ = self.child.wait();
        }
    }
}

/// CPU seconds (user + system) a process's threads have used, summed by thread name with any
/// `-N` suffix dropped (`worker-3` counts as `worker`), from `/proc/PID/task/*/stat`. The
/// kernel reports them in ticks of 1/100 s (USER_HZ).
pub fn thread_cpu(pid: u32) -> Vec<(String, f64)> {
    let mut by_name: Vec<(String, f64)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((name, secs)) = parse_stat(&stat) else {
            continue;
        };
        let name = match name.rsplit_once('-') {
            Some((base, n)) if n.chars().all(|c| c.is_ascii_digit()) => base.to_owned(),
            _ => name,
        };
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, s)) => *s += secs,
            None => by_name.push((name, secs)),
        }
    }
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    by_name
}

/// CPU seconds (user + system) this process has used, its ended threads included.
pub fn own_cpu() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
        .map_or(0.0, |(_, secs)| secs)
}

/// The name and the user + system CPU seconds of a `stat` line: the name is between the first
/// `(` and the last `)`, utime and stime are the 12th and 13th fields after it.
fn parse_stat(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some((name, (ticks(11)? + ticks(12)?) as f64 / 100.0))
}

/// The CPU each name used between two `thread_cpu` readings, as `name s` pairs.
pub fn cpu_between(before: &[(String, f64)], after: &[(String, f64)]) -> Vec<(String, f64)> {
    after
        .iter()
        .map(|(name, secs)| {
            let was = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0.0, |(_, s)| *s);
            (name.clone(), secs - was)
        })
        .collect()
}
