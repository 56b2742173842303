//! The daemon's Prometheus metrics (docs/operations.md, "Metrics"): one registry of its own per
//! daemon, rendered in the text exposition format by the `prometheus` crate. Every layer that
//! counts something gets a handle from here; nothing else in pipestat knows the crate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Request durations, in seconds: from a cached answer (under a millisecond) to a slow
/// statistics query or a large import.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Requests in one writer commit.
const GROUP_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// A group's transaction, applied and committed (without the WAL's fsync), in seconds.
const COMMIT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The outcomes of a run written: created, replaced a stored run, or older than the stored run
/// (left as it was).
const RUN_OUTCOMES: [&str; 3] = ["created", "updated", "stale"];
/// The outcomes of an ingest request, by its answer's status (see `Metrics::delivery`).
const DELIVERY_OUTCOMES: [&str; 4] = ["accepted", "ignored", "refused", "failed"];

/// The daemon's metrics, and the registry that holds them.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    durations: HistogramVec,
    runs: IntCounterVec,
    deliveries: IntCounterVec,
    database: IntGauge,
    wal: IntGauge,
    db_path: PathBuf,
}

/// Where a run or delivery came from (the `source` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Native,
    Junit,
    Github,
    Gitlab,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Native => "native",
            Source::Junit => "junit",
            Source::Github => "github",
            Source::Gitlab => "gitlab",
        }
    }
}

impl Metrics {
    /// The metrics of a daemon serving the database at `db_path`, with the process collector
    /// and `pipestat_build_info`.
    pub fn new(db_path: &Path) -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "pipestat_http_requests_total",
                "HTTP requests answered, by route template, method and status.",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "pipestat_http_request_duration_seconds",
                "Time from a request's arrival to its answer being built, by route template.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let runs = IntCounterVec::new(
            Opts::new(
                "pipestat_runs_ingested_total",
                "Runs committed, by source and outcome (created, updated, or stale: older than \
                 the stored run, left as it was).",
            ),
            &["source", "outcome"],
        )
        .expect("valid metric");
        let deliveries = IntCounterVec::new(
            Opts::new(
                "pipestat_deliveries_total",
                "Ingest requests (run posts, JUnit reports, webhook deliveries), by source and \
                 outcome (accepted, ignored, refused, failed).",
            ),
            &["source", "outcome"],
        )
        .expect("valid metric");
        let database = IntGauge::new(
            "pipestat_database_size_bytes",
            "Size of the SQLite database file, read at scrape time.",
        )
        .expect("valid metric");
        let wal = IntGauge::new(
            "pipestat_wal_size_bytes",
            "Size of the SQLite write-ahead log (the -wal file), read at scrape time.",
        )
        .expect("valid metric");
        let build = IntGaugeVec::new(
            Opts::new(
                "pipestat_build_info",
                "Always 1; the version of the running binary as a label.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        // Every source and outcome from the start, at 0, so that a rate over them is defined
        // before the first event.
        for source in [Source::Native, Source::Github, Source::Gitlab] {
            for outcome in RUN_OUTCOMES {
                runs.with_label_values(&[source.as_str(), outcome]);
            }
        }
        for source in [
            Source::Native,
            Source::Junit,
            Source::Github,
            Source::Gitlab,
        ] {
            for outcome in DELIVERY_OUTCOMES {
                deliveries.with_label_values(&[source.as_str(), outcome]);
            }
        }
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(durations.clone()),
            Box::new(runs.clone()),
            Box::new(deliveries.clone()),
            Box::new(database.clone()),
            Box::new(wal.clone()),
            Box::new(build),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("metric names are unique");
        Metrics {
            registry,
            requests,
            durations,
            runs,
            deliveries,
            database,
            wal,
            db_path: db_path.to_owned(),
        }
    }

    /// Adds the writer's histograms to the registry.
    pub fn register_writer(&self, w: &WriterMetrics) {
        for h in [&w.group_size, &w.commit_seconds] {
            self.registry
                .register(Box::new(h.clone()))
                .expect("metric names are unique");
        }
    }

    /// Counts an answered request: its route template (never the raw path), method, status
    /// and duration.
    pub fn request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let status = status.to_string();
        self.requests
            .with_label_values(&[route, method, &status])
            .inc();
        self.durations
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// Counts the runs one write committed.
    pub fn runs(&self, source: Source, created: u64, updated: u64, stale: u64) {
        for (outcome, n) in RUN_OUTCOMES.into_iter().zip([created, updated, stale]) {
            self.runs
                .with_label_values(&[source.as_str(), outcome])
                .inc_by(n);
        }
    }

    /// Counts an ingest request by its answer's status: 202 is a delivery pipestat ignores,
    /// other 2xx accepted, 4xx refused, 5xx failed.
    pub fn delivery(&self, source: Source, status: u16) {
        let outcome = DELIVERY_OUTCOMES[match status {
            202 => 1,
            200..=299 => 0,
            400..=499 => 2,
            _ => 3,
        }];
        self.deliveries
            .with_label_values(&[source.as_str(), outcome])
            .inc();
    }

    /// The exposition text, with the file sizes read now.
    pub fn render(&self) -> Vec<u8> {
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len() as i64);
        self.database.set(size(&self.db_path));
        let mut wal = self.db_path.clone().into_os_string();
        wal.push("-wal");
        self.wal.set(size(Path::new(&wal)));
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("the text encoder writes to memory");
        out
    }
}

/// The writer's histograms, observed by the writer thread.
#[derive(Clone)]
pub struct WriterMetrics {
    group_size: Histogram,
    commit_seconds: Histogram,
}

impl WriterMetrics {
    pub fn new() -> WriterMetrics {
        let group_size = Histogram::with_opts(
            HistogramOpts::new(
                "pipestat_writer_group_size",
                "Write requests committed together in one transaction.",
            )
            .buckets(GROUP_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "pipestat_writer_commit_duration_seconds",
                "Time to apply and commit one group's transaction (the WAL's fsync follows \
                 on the syncer thread).",
            )
            .buckets(COMMIT_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        WriterMetrics {
            group_size,
            commit_seconds,
        }
    }

    /// One committed (or refused) group: its number of requests and its time.
    pub fn group(&self, size: usize, took: Duration) {
        self.group_size.observe(size as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics::new()
    }
}
