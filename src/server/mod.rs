//! The daemon: the accept front on the TCP listener (`front`), tiny_http behind it on a
//! private Unix socket, the worker threads, the per-request checks (`request`), the routing
//! table (`routes`), memory release (`memory`) and a clean shutdown on SIGTERM or SIGINT. Only
//! this module knows tiny_http.

mod front;
mod memory;
mod open;
mod quota;
mod request;
mod routes;

pub use routes::TEMPLATES;

use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::UnixListener;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::demo;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::model::times;
use crate::store::writer::Writer;
use crate::store::{self, db, tokens};
use crate::surfaces::{App, Settings};
use quota::Quota;

/// `pipestat serve`'s configuration, from its flags and `PIPESTAT_*` variables.
#[derive(Debug, Clone)]
pub struct Config {
    pub db: PathBuf,
    pub listen: String,
    pub threads: usize,
    pub demo: bool,
    pub quota_per_minute: u32,
    pub max_body: u64,
    pub insecure_open: bool,
    /// What the surfaces are told (calendar offset, webhook secrets, a fixed clock).
    pub settings: Settings,
}

/// State shared by every worker: what the surfaces see, and the server's own limits.
struct Daemon {
    app: App,
    quota: Quota,
    /// Whether a database without tokens may be used without one (loopback, or --insecure-open).
    open_allowed: bool,
    /// Whether the daemon listens on a loopback address (open mode then checks `Host`).
    loopback: bool,
    max_body: u64,
    limits: Limits,
    /// Set by SIGTERM or SIGINT.
    stop: Arc<AtomicBool>,
    /// Set once the shutdown's grace is over: no request is routed any more.
    abandon: AtomicBool,
    /// Requests being routed (their body read, their answer not built yet).
    routing: AtomicUsize,
}

impl Daemon {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// What the daemon holds of its connections (docs/operations.md). Set by an environment
/// variable, for tests and unusual deployments; there is no flag for it.
#[derive(Debug, Clone)]
struct Limits {
    /// Every read and write on a connection (SO_RCVTIMEO, SO_SNDTIMEO): a connection that
    /// sends nothing for this long between requests is closed, and a body that stops for this
    /// long is a 408: PIPESTAT_IO_TIMEOUT_SECS, default 15.
    io_timeout: Duration,
    /// Client connections served at once (see `front`): PIPESTAT_MAX_CONNECTIONS, default 256.
    max_connections: usize,
}

/// After the io timeout, a body must arrive at this rate at least (bytes per second).
const MIN_BODY_RATE: u64 = 64 * 1024;
/// After SIGTERM, requests in flight get this long to finish; then pipestat exits without
/// waiting for the workers still held by a slow client (see `serve`).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Limits {
    fn from_env() -> Result<Limits> {
        let number = |name: &str, default: u64, max: u64| -> Result<u64> {
            match std::env::var(name) {
                Err(_) => Ok(default),
                Ok(v) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "{name}: expected a number from 1 to {max}, got {v:?}"
                        ))
                    }),
            }
        };
        Ok(Limits {
            io_timeout: Duration::from_secs(number("PIPESTAT_IO_TIMEOUT_SECS", 15, 3600)?),
            max_connections: number("PIPESTAT_MAX_CONNECTIONS", 256, 65536)? as usize,
        })
    }

    /// How long a body of `len` bytes may take to arrive.
    fn body_time(&self, len: usize) -> Duration {
        self.io_timeout + Duration::from_secs(len as u64 / MIN_BODY_RATE)
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn serve(cfg: Config) -> Result<()> {
    memory::large_allocations_mapped();
    let conn = db::open(&cfg.db)?;
    if cfg.demo {
        if store::is_empty(&conn)? {
            demo::fill(
                &cfg.db,
                None,
                90,
                42,
                cfg.settings.now.unwrap_or_else(times::now_ms),
            )?;
        } else {
            log::info!("--demo: the database already holds runs; leaving it as it is");
        }
    }
    let limits = Limits::from_env()?;
    let addr = resolve(&cfg.listen)?;
    let loopback = addr.ip().is_loopback();
    if !tokens::any_token(&conn)? && !loopback {
        if !cfg.insecure_open {
            return Err(Error::Usage(format!(
                "refusing to serve {addr} without tokens: anyone could read and write. Create one with \
                 `pipestat token create --name NAME --scope read,ingest`, listen on 127.0.0.1, \
                 or pass --insecure-open"
            )));
        }
        log::warn!("--insecure-open: serving {addr} with NO authentication; anyone who reaches it can read and write");
    }
    drop(conn);
    // An upgrade or the demo's fill may have used hundreds of MB (page caches, rebuilt
    // rollups); the daemon serves in a few tens, so the freed pages go back to the system.
    memory::release_freed_memory();

    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::Internal(format!("cannot listen on {addr}: {e}")))?;
    let local = listener.local_addr()?;
    // Accepted connections inherit TCP_NODELAY (see Cargo.toml for why).
    socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
    // tiny_http serves a Unix socket in a directory only pipestat's user can enter, removed
    // when `serve` returns; the front forwards complete requests to it.
    let socket_dir = front::SocketDir::create()
        .map_err(|e| Error::Internal(format!("cannot create the socket directory: {e}")))?;
    let unix = UnixListener::bind(socket_dir.socket()).map_err(|e| {
        Error::Internal(format!(
            "cannot listen on {}: {e}",
            socket_dir.socket().display()
        ))
    })?;
    let server = tiny_http::Server::from_listener(unix, None)
        .map_err(|e| Error::Internal(format!("cannot serve the Unix socket: {e}")))?;
    let server = Arc::new(server);
    let (writer, writer_thread) = Writer::start(&cfg.db)?;
    let metrics = Metrics::new(&cfg.db);
    metrics.register_writer(writer.metrics());
    let threads = cfg.threads;
    let db_path = cfg.db.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let daemon = Arc::new(Daemon {
        quota: Quota::new(cfg.quota_per_minute),
        open_allowed: loopback || cfg.insecure_open,
        loopback,
        max_body: cfg.max_body,
        limits,
        stop: stop.clone(),
        abandon: AtomicBool::new(false),
        routing: AtomicUsize::new(0),
        app: App {
            settings: cfg.settings,
            writer,
            metrics: Arc::new(metrics),
        },
    });

    let failed = Arc::new(AtomicBool::new(false));
    let mut max_connections = daemon.limits.max_connections;
    if let Some(allowed) = front::connections_allowed(threads) {
        if allowed < max_connections {
            log::warn!(
                "serving {allowed} connections at most, not {max_connections}: the open-file \
                 limit allows no more (raise LimitNOFILE= / ulimit -n)"
            );
            max_connections = allowed;
        }
    }
    let front = front::Front::start(
        listener,
        socket_dir.socket(),
        front::Settings {
            io_timeout: daemon.limits.io_timeout,
            max_connections,
            max_body: daemon.max_body,
            min_body_rate: MIN_BODY_RATE,
        },
        stop.clone(),
    )?;
    let (events, shutdown) = mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    let signal_handle = signals.handle();
    {
        let (server, stop, events) = (server.clone(), stop.clone(), events.clone());
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    log::info!("signal {sig}: draining and stopping");
                    stop.store(true, Ordering::SeqCst);
                    front.stop();
                    for _ in 0..threads {
                        server.unblock();
                    }
                    std::thread::sleep(SHUTDOWN_GRACE);
                    let _ = events.send(Event::GraceOver);
                }
            })?;
    }

    let mut workers = Vec::with_capacity(threads);
    for i in 0..threads {
        let (server, daemon, stop, failed, events) = (
            server.clone(),
            daemon.clone(),
            stop.clone(),
            failed.clone(),
            events.clone(),
        );
        let conn = db::open_reader(&db_path)?;
        workers.push(
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    worker(&server, &daemon, &conn, &stop, &failed, threads);
                    let _ = events.send(Event::WorkerDone);
                })?,
        );
    }
    drop(events);

    println!("listening on http://{local}");
    use std::io::Write as _;
    std::io::stdout().flush()?;
    log::info!("serving {} with {threads} workers", db_path.display());

    let mut running = threads;
    while running > 0 {
        match shutdown.recv() {
            Ok(Event::WorkerDone) => running -= 1,
            Ok(Event::GraceOver) | Err(_) => break,
        }
    }
    if running > 0 {
        // Workers still busy after the grace are held by slow clients: reading a body that
        // does not come, or writing an answer that is not read (tiny_http gives no way to
        // close a connection; each read or write ends at the io timeout). None of them is
        // let into the routes any more, and once the requests being routed are answered no
        // write is pending: every acknowledged write is on the disk, so pipestat exits
        // without them (the process ends with its last thread, `main`).
        daemon.abandon.store(true, Ordering::SeqCst);
        while daemon.routing.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        log::warn!(
            "exiting with {running} workers still held by slow clients after {}s",
            SHUTDOWN_GRACE.as_secs()
        );
    } else {
        for w in workers {
            let _ = w.join();
        }
        signal_handle.close();
        // Dropping the last Writer handle lets the writer finish its queue and stop.
        drop(daemon);
        let _ = writer_thread.join();
    }
    if failed.load(Ordering::SeqCst) {
        return Err(Error::Internal(
            "the HTTP listener failed; stopping so the service manager restarts pipestat".into(),
        ));
    }
    log::info!("stopped cleanly");
    Ok(())
}

/// What the main thread waits for once it serves.
enum Event {
    /// A worker has stopped.
    WorkerDone,
    /// SHUTDOWN_GRACE has passed since SIGTERM or SIGINT.
    GraceOver,
}

fn resolve(listen: &str) -> Result<SocketAddr> {
    listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Error::Usage(format!("--listen: expected IP:PORT, got {listen:?}")))
}

fn worker(
    server: &tiny_http::Server,
    daemon: &Daemon,
    conn: &Connection,
    stop: &AtomicBool,
    failed: &AtomicBool,
    threads: usize,
) {
    while !stop.load(Ordering::SeqCst) {
        match server.recv() {
            Ok(rq) => handle(daemon, conn, rq),
            Err(_) if stop.load(Ordering::SeqCst) => break,
            Err(e) => {
                // tiny_http's accept loop does not recover; stop and let systemd restart us.
                log::error!("HTTP listener failed: {e}");
                failed.store(true, Ordering::SeqCst);
                stop.store(true, Ordering::SeqCst);
                for _ in 0..threads {
                    server.unblock();
                }
                break;
            }
        }
    }
}

fn handle(daemon: &Daemon, conn: &Connection, mut rq: tiny_http::Request) {
    let started = Instant::now();
    let url = rq.url().to_owned();
    let path = url.split('?').next().unwrap_or("").to_owned();
    let internal = |name: &'static str| {
        rq.headers()
            .iter()
            .find(|h| h.field.equiv(name))
            .map(|h| h.value.as_str().to_owned())
    };
    // Both set by the front alone (it removes clients' copies).
    let peer = internal(front::PEER).unwrap_or_else(|| "-".into());
    let mut progress = request::Progress {
        precheck: internal(front::PRECHECK).is_some(),
        ..Default::default()
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // Every write arrives as a POST: the writer waits briefly for announced requests
        // before it commits, so concurrent ones share a commit. Withdrawn on return.
        let _announced =
            (*rq.method() == tiny_http::Method::Post).then(|| daemon.app.writer.announce());
        let req = request::prepare(daemon, conn, &mut rq, &url, &mut progress)?;
        if progress.precheck {
            // The checks before the body passed; the front now reads the body.
            return Ok(crate::http::Resp {
                status: 204,
                content_type: "text/plain",
                headers: Vec::new(),
                body: Vec::new(),
            });
        }
        let _routing = Routing::enter(daemon)?;
        routes::route(&daemon.app, conn, &req)
    }));
    let resp = match outcome {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            if e.status() >= 500 {
                log::error!("{} {path}: {e}", rq.method());
            }
            routes::error(&path, &e)
        }
        Err(_) => routes::error(
            &path,
            &Error::Internal("internal error: the request handler panicked".into()),
        ),
    };
    // A precheck that passed is no answer to the client; the request itself is counted and
    // logged next.
    if !(progress.precheck && resp.status == 204) {
        routes::observe(
            &daemon.app,
            rq.method(),
            &path,
            resp.status,
            started.elapsed(),
        );
        log::info!(
            "{peer} {} {} {} {}ms",
            rq.method(),
            path,
            resp.status,
            started.elapsed().as_millis()
        );
    }
    let large = progress.body_len.max(resp.body.len()) > memory::LARGE_BODY;
    let mut out = tiny_http::Response::from_data(resp.body).with_status_code(resp.status);
    let content_type =
        tiny_http::Header::from_bytes("Content-Type", resp.content_type).expect("valid header");
    out.add_header(content_type);
    for (name, value) in resp.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(name, value.as_bytes()) {
            out.add_header(h);
        }
    }
    // A request refused before its body was read: tiny_http reads the rest when the request
    // is dropped, at once, since the front forwards only whole bodies (see `front`).
    send(rq, out);
    if large {
        memory::release_freed_memory();
    }
}

fn send(rq: tiny_http::Request, out: tiny_http::Response<std::io::Cursor<Vec<u8>>>) {
    if let Err(e) = rq.respond(out) {
        log::debug!("could not send the response: {e}");
    }
}

/// A request being routed; once the shutdown's grace is over, none enters (see `serve`).
struct Routing<'a>(&'a AtomicUsize);

impl<'a> Routing<'a> {
    fn enter(daemon: &'a Daemon) -> Result<Routing<'a>> {
        daemon.routing.fetch_add(1, Ordering::SeqCst);
        let routing = Routing(&daemon.routing);
        if daemon.abandon.load(Ordering::SeqCst) {
            return Err(Error::RequestTimeout(
                "pipestat is stopping; send the request again".into(),
            ));
        }
        Ok(routing)
    }
}

impl Drop for Routing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
