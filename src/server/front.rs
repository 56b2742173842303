//! The accept front: pipestat's own reader of client connections, in front of tiny_http.
//!
//! tiny_http reads request heads without a bound, cannot close a connection after refusing a
//! request, and holds a worker while a client sends a body slowly. So the daemon's TCP listener
//! is served here, and tiny_http listens on a Unix socket in a private directory that only this
//! front connects to. Per client connection, one thread (at most `max_connections` of them):
//!
//! - reads each request head within the io timeout: a request line of 1 MiB at most (414 and
//!   close beyond) and 64 KiB of headers (431 and close beyond); parses it with httparse and
//!   refuses ambiguous framing (400 and close, see `request::framing`);
//! - refuses a body announced above `--max-body` (413 and close) without reading it;
//! - when the body has not fully arrived with the head, first forwards the head alone marked
//!   `X-Pipestat-Precheck` (no body): tiny_http's worker runs every check a request goes
//!   through before its body (method, origin, host, token, scope) and answers 204 if they pass,
//!   so a refused request is answered at once and the connection closed, its body never read;
//! - reads the whole body (Content-Length or chunked) within the body deadline, then forwards
//!   the request with a Content-Length and the client's address in `X-Pipestat-Peer` (client
//!   copies of both internal headers are removed) over a Unix connection kept for this client
//!   connection, and relays the answer. No worker ever waits for a client's body.
//!
//! At the cap, a new connection takes the place of the connection that has waited longest for
//! a request head (idle between requests, or sending its head slowly); when every connection is
//! busy with a request, the new one is answered 503 and closed.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, BufWriter, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::request::{framing, Framing};
use crate::error::Error;
use crate::http::{Resp, Surface};

/// The header carrying the client's address to the worker (set by the front only).
pub(super) const PEER: &str = "X-Pipestat-Peer";
/// The header marking a head forwarded alone for its checks (set by the front only).
pub(super) const PRECHECK: &str = "X-Pipestat-Precheck";
/// Headers (after the request line) larger than this together are answered 431 and the
/// connection closed.
const MAX_HEADERS_LEN: usize = 64 * 1024;
/// A request line longer than this is answered 414 and the connection closed. Larger than the
/// headers' bound: filters and field lists of the query surfaces travel in the query string.
const MAX_LINE: usize = 1024 * 1024;
/// An answer head from tiny_http (pipestat's own) is never near this.
const MAX_ANSWER_HEAD: usize = 256 * 1024;
/// Headers in one request at most (431 beyond).
const MAX_HEADERS: usize = 128;
/// After an answer that closes the connection, what the client still sends is read and
/// dropped for this long at most, so that the answer is not lost to a reset.
const LINGER: Duration = Duration::from_secs(2);
/// ... and this much at most.
const LINGER_BYTES: u64 = 4 << 20;
/// The stack of a connection's thread: it holds a head's parsed headers and small buffers;
/// bodies are on the heap.
const STACK: usize = 256 * 1024;

/// What the front needs to know.
#[derive(Clone)]
pub(super) struct Settings {
    pub(super) io_timeout: Duration,
    pub(super) max_connections: usize,
    pub(super) max_body: u64,
    /// Minimum body rate once the io timeout has passed (bytes per second).
    pub(super) min_body_rate: u64,
}

/// File descriptors one client connection can take: its socket and the handle the cap keeps,
/// the front's Unix connection, and tiny_http's end of it with the clone it reads from.
const FDS_PER_CONNECTION: u64 = 5;
/// File descriptors kept for the rest of the daemon beside its connections (and per worker).
const FDS_RESERVED: u64 = 64;

/// The most connections the open-file limit allows, the soft limit raised to the hard one
/// first (at most 65536): tiny_http stops serving for good when it cannot accept or clone
/// a socket, so the cap must never let connections take every descriptor.
pub(super) fn connections_allowed(threads: usize) -> Option<usize> {
    let soft = raise_open_files_limit()?;
    let reserved = FDS_RESERVED + 4 * threads as u64;
    Some((soft.saturating_sub(reserved) / FDS_PER_CONNECTION).max(1) as usize)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(clippy::unnecessary_cast)] // rlim_t is u64 only on 64-bit targets
fn raise_open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given, nothing else.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        let want = lim.rlim_max.min(1 << 16);
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = want;
            }
        }
    }
    Some(lim.rlim_cur as u64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn raise_open_files_limit() -> Option<u64> {
    None
}

/// The directory holding tiny_http's Unix socket: mode 0700, created new at start (never an
/// existing one), removed on drop.
pub(super) struct SocketDir {
    dir: PathBuf,
}

impl SocketDir {
    /// Under `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`) when set, else the system's
    /// temporary directory.
    pub(super) fn create() -> io::Result<SocketDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::var_os("RUNTIME_DIRECTORY")
            .and_then(|v| {
                v.to_str()
                    .and_then(|s| s.split(':').next())
                    .filter(|s| !s.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(std::env::temp_dir);
        remove_stale(&base);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut last = None;
        for attempt in 0..16u32 {
            let dir = base.join(format!(
                "pipestat-{}-{:08x}",
                std::process::id(),
                nanos.wrapping_add(attempt.wrapping_mul(0x9e37_79b9))
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(SocketDir { dir }),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free directory name")))
    }

    pub(super) fn socket(&self) -> PathBuf {
        self.dir.join("http.sock")
    }
}

/// Removes the socket directories that pipestat processes no longer running left in `base`
/// (after `kill -9`): only ours by name and owner, and only their socket in them.
fn remove_stale(base: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten().take(10_000) {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("pipestat-"))
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let ours = entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path().join("http.sock"));
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The connections held, for the cap.
struct Slots {
    cap: usize,
    inner: Mutex<SlotsInner>,
}

#[derive(Default)]
struct SlotsInner {
    next: u64,
    held: HashMap<u64, Held>,
}

struct Held {
    /// Since when the connection waits for a request head; None while it has a request.
    waiting: Option<Instant>,
    /// A handle to close it with when another connection takes its place.
    stream: TcpStream,
}

/// A connection's place among the `Slots`; given back on drop.
struct Slot {
    slots: Arc<Slots>,
    id: u64,
}

impl Slots {
    /// A place for a new connection: a free one, or the place of the connection that has
    /// waited longest for a head (closed here). None when every connection has a request.
    fn take(self: &Arc<Self>, stream: &TcpStream) -> Option<Slot> {
        let handle = stream.try_clone().ok()?;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.held.len() >= self.cap {
            let oldest = inner
                .held
                .iter()
                .filter_map(|(id, h)| h.waiting.map(|t| (t, *id)))
                .min()?
                .1;
            if let Some(h) = inner.held.remove(&oldest) {
                let _ = h.stream.shutdown(Shutdown::Both);
            }
        }
        inner.next += 1;
        let id = inner.next;
        inner.held.insert(
            id,
            Held {
                waiting: Some(Instant::now()),
                stream: handle,
            },
        );
        Some(Slot {
            slots: self.clone(),
            id,
        })
    }
}

impl Slot {
    fn waiting(&self, waiting: bool) {
        let mut inner = self.slots.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = inner.held.get_mut(&self.id) {
            h.waiting = waiting.then(Instant::now);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.slots.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.held.remove(&self.id);
    }
}

/// The running front; `stop` ends its accept loop.
pub(super) struct Front {
    listener: TcpListener,
}

impl Front {
    /// Serves `listener` on a thread of its own, forwarding to tiny_http at `socket`.
    pub(super) fn start(
        listener: TcpListener,
        socket: PathBuf,
        settings: Settings,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Front> {
        let handle = listener.try_clone()?;
        let slots = Arc::new(Slots {
            cap: settings.max_connections,
            inner: Mutex::new(SlotsInner::default()),
        });
        let ctx = Arc::new(Ctx {
            socket,
            settings,
            stop,
        });
        std::thread::Builder::new()
            .name("front".into())
            .spawn(move || accept_loop(&listener, &slots, &ctx))?;
        Ok(Front { listener: handle })
    }

    /// Stops accepting: the accept loop wakes up and ends. Connections being served are not
    /// waited for.
    pub(super) fn stop(&self) {
        // On Linux, shutting a listening socket down wakes a blocked accept with an error.
        let _ = socket2::SockRef::from(&self.listener).shutdown(Shutdown::Both);
    }
}

/// What every connection's thread shares.
struct Ctx {
    socket: PathBuf,
    settings: Settings,
    stop: Arc<AtomicBool>,
}

fn accept_loop(listener: &TcpListener, slots: &Arc<Slots>, ctx: &Arc<Ctx>) {
    // Connections answered 503 at the cap linger on this one thread, not the accept loop's;
    // beyond what it holds, they are closed at once.
    let (refused, lingering) = std::sync::mpsc::sync_channel::<(TcpStream, Instant)>(256);
    let spawned = std::thread::Builder::new()
        .name("front-refused".into())
        .stack_size(STACK)
        .spawn(move || {
            for (stream, at) in lingering {
                linger_until(&stream, at + Duration::from_secs(1));
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the thread closing refused connections: {e}");
    }
    loop {
        let accepted = listener.accept();
        if ctx.stop.load(Ordering::SeqCst) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was taken: wait a
                // little rather than spin, and go on.
                log::warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(ctx.settings.io_timeout));
        let Some(slot) = slots.take(&stream) else {
            log::warn!(
                "{peer}: {} connections are busy with requests; answered 503",
                slots.cap
            );
            // Whatever of the request has come is read first (without waiting), so that
            // closing does not reset the connection before the answer is read.
            let _ = stream.set_nonblocking(true);
            let mut chunk = [0u8; 16 * 1024];
            for _ in 0..4 {
                if !matches!((&stream).read(&mut chunk), Ok(n) if n > 0) {
                    break;
                }
            }
            let e = Error::Unavailable(format!(
                "pipestat serves {} connections at once, all busy; try again",
                slots.cap
            ));
            let _ = (&stream).write_all(&answer_bytes(Surface::Native, &e, None));
            let _ = stream.set_nonblocking(false);
            let _ = stream.shutdown(Shutdown::Write);
            let _ = refused.try_send((stream, Instant::now()));
            continue;
        };
        let ctx2 = ctx.clone();
        let spawned = std::thread::Builder::new()
            .name("conn".into())
            .stack_size(STACK)
            .spawn(move || {
                Conn::new(stream, peer, &ctx2, &slot).serve();
            });
        if let Err(e) = spawned {
            // The stream was moved into the closure and is closed with it.
            log::error!("cannot start a thread for a connection: {e}");
        }
    }
}

/// A request head as the front read it.
struct Head {
    method: String,
    target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    version: u8,
    headers: Vec<(String, Vec<u8>)>,
    /// Bytes of the head, blank line included.
    len: usize,
}

impl Head {
    fn value(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn surface(&self) -> Surface {
        Surface::of(self.target.split('?').next().unwrap_or(""))
    }

    /// The head as forwarded: the client's own framing, `Expect`, and any copies of the
    /// internal headers removed; `Content-Length` set to `body_len` when there is a body.
    fn forwarded(&self, peer: SocketAddr, body_len: Option<usize>, precheck: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len + 128);
        out.extend_from_slice(
            format!(
                "{} {} HTTP/1.{}\r\n",
                self.method, self.target, self.version
            )
            .as_bytes(),
        );
        for (name, value) in &self.headers {
            let dropped = ["Content-Length", "Transfer-Encoding", "Expect", PEER, PRECHECK]
                .iter()
                .any(|d| name.eq_ignore_ascii_case(d))
                // The connection to tiny_http stays open after a precheck.
                || (precheck && name.eq_ignore_ascii_case("Connection"));
            if !dropped {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
        }
        if let Some(n) = body_len {
            out.extend_from_slice(format!("Content-Length: {n}\r\n").as_bytes());
        }
        if precheck {
            out.extend_from_slice(format!("{PRECHECK}: 1\r\n").as_bytes());
        }
        out.extend_from_slice(format!("{PEER}: {peer}\r\n\r\n").as_bytes());
        out
    }
}

/// Why a connection ends.
enum End {
    /// Quietly: the client closed, stayed idle past the timeout, or pipestat is stopping.
    Quiet,
    /// With an error answer in the request's surface's shape, then closed.
    Refuse(Surface, Error, Option<u16>),
}

/// A client connection and its forwarding connection to tiny_http.
struct Conn<'a> {
    stream: TcpStream,
    peer: SocketAddr,
    ctx: &'a Ctx,
    slot: &'a Slot,
    /// Bytes read from the client and not used yet (the start of the next request).
    buf: Vec<u8>,
    upstream: Option<BufReader<UnixStream>>,
}

/// A body read limit and deadline, as `Read` for the chunked decoder.
struct BodyReader<'c, 'a> {
    conn: &'c mut Conn<'a>,
    started: Instant,
    /// Bytes taken from the connection (framing included), bounded against a hostile
    /// chunk-size line.
    raw: u64,
    raw_max: u64,
    decoded: u64,
}

impl Read for BodyReader<'_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let s = &self.conn.ctx.settings;
        if self.raw >= self.raw_max {
            return Err(io::Error::new(ErrorKind::InvalidData, "framing too large"));
        }
        if self.conn.buf.is_empty() {
            let allowed = s.io_timeout + Duration::from_secs(self.decoded / s.min_body_rate);
            let left = allowed.saturating_sub(self.started.elapsed());
            if left.is_zero() {
                return Err(io::Error::new(ErrorKind::TimedOut, "too slow"));
            }
            if self.conn.ctx.stop.load(Ordering::SeqCst) {
                return Err(io::Error::new(ErrorKind::Interrupted, "stopping"));
            }
            self.conn.fill(left.min(s.io_timeout))?;
        }
        let n = out.len().min(self.conn.buf.len());
        out[..n].copy_from_slice(&self.conn.buf[..n]);
        self.conn.buf.drain(..n);
        self.raw += n as u64;
        Ok(n)
    }
}

impl<'a> Conn<'a> {
    fn new(stream: TcpStream, peer: SocketAddr, ctx: &'a Ctx, slot: &'a Slot) -> Conn<'a> {
        Conn {
            stream,
            peer,
            ctx,
            slot,
            buf: Vec::new(),
            upstream: None,
        }
    }

    fn serve(mut self) {
        loop {
            match self.one() {
                Ok(true) => continue,
                Ok(false) | Err(End::Quiet) => return,
                Err(End::Refuse(surface, e, status)) => {
                    log::info!(
                        "{} - {} {} (front)",
                        self.peer,
                        status.unwrap_or(e.status()),
                        e
                    );
                    refuse(self.stream, surface, &e, status);
                    return;
                }
            }
        }
    }

    /// Reads more from the client into `buf`, waiting `wait` at most. Ok(0) at end of stream.
    fn fill(&mut self, wait: Duration) -> io::Result<usize> {
        self.stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return Err(io::Error::new(ErrorKind::TimedOut, e))
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One request: Ok(true) to go on with the next one on this connection.
    fn one(&mut self) -> Result<bool, End> {
        self.slot.waiting(true);
        let head = self.read_head()?;
        self.slot.waiting(false);
        let surface = head.surface();
        let refuse = |e: Error| End::Refuse(surface, e, None);
        let named: Vec<(&str, String)> = head
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        let pairs: Vec<(&str, &str)> = named.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let framing = framing(&pairs).map_err(refuse)?;
        let max = self.ctx.settings.max_body;
        if matches!(framing, Framing::Length(n) if n > max) {
            return Err(refuse(Error::PayloadTooLarge(max)));
        }
        self.buf.drain(..head.len);
        let complete = match framing {
            Framing::Empty => true,
            Framing::Length(n) => self.buf.len() as u64 >= n,
            Framing::Chunked => false,
        };
        if self.ctx.stop.load(Ordering::SeqCst) {
            return Err(End::Quiet);
        }
        if !complete {
            // The checks before the body, by the worker, with no body.
            let precheck = head.forwarded(self.peer, Some(0), true);
            let passed = self.forward(&precheck, &[], &head, true)?;
            if !passed {
                return Err(End::Quiet);
            }
            let continue_expected = head.version == 1
                && head
                    .value("Expect")
                    .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
            if continue_expected {
                self.stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .map_err(|_| End::Quiet)?;
            }
        }
        let body = match framing {
            Framing::Empty => None,
            Framing::Length(n) => Some(self.read_length(n as usize).map_err(refuse)?),
            Framing::Chunked => Some(self.read_chunked().map_err(refuse)?),
        };
        if self.ctx.stop.load(Ordering::SeqCst) {
            return Err(End::Quiet);
        }
        let body = body.unwrap_or_default();
        let has_body = framing != Framing::Empty;
        let forwarded = head.forwarded(self.peer, has_body.then_some(body.len()), false);
        self.forward(&forwarded, &body, &head, false)
    }

    /// Waits for a request head: the first byte within the io timeout, and the whole head
    /// within the io timeout of its first byte.
    fn read_head(&mut self) -> Result<Head, End> {
        let timeout = self.ctx.settings.io_timeout;
        let mut deadline = Instant::now() + timeout;
        let mut scanned = 0usize;
        // The request line's length, once its line break has arrived.
        let mut line: Option<usize> = None;
        let too_large = |what: &str, max: usize, status: u16| {
            End::Refuse(
                Surface::Native,
                Error::bad(format!("{what} {} KiB", max / 1024)),
                Some(status),
            )
        };
        loop {
            // Parse only once a blank line has arrived, so a head sent a byte at a time is
            // not parsed again at each byte.
            let from = scanned.saturating_sub(3);
            let blank = contains_blank_line(&self.buf[from..]);
            if line.is_none() {
                line = line_len(&self.buf[scanned..]).map(|n| scanned + n);
            }
            scanned = self.buf.len();
            if blank {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&self.buf) {
                    Ok(httparse::Status::Complete(len))
                        if len <= line.unwrap_or(0) + MAX_HEADERS_LEN =>
                    {
                        return Ok(Head {
                            method: req.method.unwrap_or("GET").to_owned(),
                            target: req.path.unwrap_or("/").to_owned(),
                            version: req.version.unwrap_or(1),
                            headers: req
                                .headers
                                .iter()
                                .map(|h| (h.name.to_owned(), h.value.to_vec()))
                                .collect(),
                            len,
                        })
                    }
                    Ok(httparse::Status::Complete(_)) => {
                        return Err(too_large(
                            "the request's headers exceed",
                            MAX_HEADERS_LEN,
                            431,
                        ))
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(httparse::Error::TooManyHeaders) => {
                        return Err(End::Refuse(
                            Surface::Native,
                            Error::bad(format!("more than {MAX_HEADERS} headers")),
                            Some(431),
                        ))
                    }
                    Err(e) => {
                        return Err(End::Refuse(
                            Surface::Native,
                            Error::bad(format!("not an HTTP/1 request head: {e}")),
                            None,
                        ))
                    }
                }
            }
            match line {
                None if self.buf.len() > MAX_LINE => {
                    return Err(too_large("the request line exceeds", MAX_LINE, 414))
                }
                Some(line) if self.buf.len() - line > MAX_HEADERS_LEN => {
                    return Err(too_large(
                        "the request's headers exceed",
                        MAX_HEADERS_LEN,
                        431,
                    ))
                }
                _ => {}
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                // Idle (nothing of a head): closed quietly. A head begun and not finished is
                // closed too; an answer would not be read by a client that slow.
                return Err(End::Quiet);
            }
            let was_empty = self.buf.is_empty();
            match self.fill(left) {
                Ok(0) | Err(_) => return Err(End::Quiet),
                Ok(_) => {}
            }
            if was_empty {
                // The head's time starts with its first byte.
                deadline = Instant::now() + timeout;
            }
        }
    }

    fn read_length(&mut self, n: usize) -> crate::error::Result<Vec<u8>> {
        // Memory follows what arrives, not what is announced: 1 MiB first, then doubling up
        // to the length announced (never beyond it).
        let mut body = Vec::with_capacity(n.min(1 << 20));
        let max = self.ctx.settings.max_body;
        let mut reader = BodyReader {
            started: Instant::now(),
            raw: 0,
            raw_max: max,
            decoded: 0,
            conn: self,
        };
        let mut chunk = vec![0u8; 64 * 1024];
        while body.len() < n {
            let want = (n - body.len()).min(chunk.len());
            match reader.read(&mut chunk[..want]) {
                Ok(0) => return Err(Error::bad("the connection closed before the body's end")),
                Ok(k) => {
                    if body.capacity() - body.len() < k {
                        body.reserve_exact((n - body.len()).min(body.len().max(1 << 20)));
                    }
                    body.extend_from_slice(&chunk[..k]);
                    reader.decoded += k as u64;
                }
                Err(e) => return Err(body_error(e)),
            }
        }
        Ok(body)
    }

    fn read_chunked(&mut self) -> crate::error::Result<Vec<u8>> {
        let max = self.ctx.settings.max_body;
        let reader = BodyReader {
            started: Instant::now(),
            raw: 0,
            // Chunk framing is a few bytes per chunk; twice the body is plenty.
            raw_max: max.saturating_mul(2).saturating_add(64 * 1024),
            decoded: 0,
            conn: self,
        };
        let mut decoder = chunked_transfer::Decoder::new(reader);
        let mut body = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match decoder.read(&mut chunk) {
                Ok(0) => return Ok(body),
                Ok(k) => {
                    if body.len() as u64 + k as u64 > max {
                        return Err(Error::PayloadTooLarge(max));
                    }
                    body.extend_from_slice(&chunk[..k]);
                    decoder.get_mut().decoded = body.len() as u64;
                }
                Err(e) if e.kind() == ErrorKind::InvalidInput => {
                    return Err(Error::bad("the chunked request body is malformed"))
                }
                Err(e) => return Err(body_error(e)),
            }
        }
    }

    /// Sends `head` and `body` to tiny_http and relays its answer. For a precheck, Ok(true)
    /// when the checks passed (nothing is relayed), and an answer relayed otherwise, the
    /// connection then to be closed (Ok(false)). For a request, Ok(true) when the connection
    /// stays open for the next request.
    fn forward(
        &mut self,
        head: &[u8],
        body: &[u8],
        request: &Head,
        precheck: bool,
    ) -> Result<bool, End> {
        let unavailable = |e: io::Error| {
            log::error!("forwarding to the HTTP workers failed: {e}");
            End::Refuse(
                request.surface(),
                Error::Unavailable("pipestat could not process the request; try again".into()),
                None,
            )
        };
        let mut up = match self.upstream.take() {
            Some(up) => up,
            None => {
                let s = UnixStream::connect(&self.ctx.socket).map_err(unavailable)?;
                BufReader::with_capacity(64 * 1024, s)
            }
        };
        let sent = up
            .get_mut()
            .write_all(head)
            .and_then(|()| up.get_mut().write_all(body));
        sent.map_err(unavailable)?;
        let answer = read_answer_head(&mut up).map_err(unavailable)?;
        if precheck && answer.status == 204 {
            if !answer.closes {
                self.upstream = Some(up);
            }
            return Ok(true);
        }
        // tiny_http closes its side when the client asked for it (or spoke HTTP/1.0 without
        // keep-alive); a refused precheck leaves a body unread: both close the client's.
        let close = precheck || answer.closes || matches!(answer.body, AnswerBody::UntilClose);
        relay(&self.stream, &answer, &mut up, request, close).map_err(|_| End::Quiet)?;
        if close {
            linger(&self.stream);
            return Ok(false);
        }
        self.upstream = Some(up);
        Ok(true)
    }
}

/// How an answer's body ends.
enum AnswerBody {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

struct Answer {
    status: u16,
    /// The head as tiny_http wrote it.
    raw: Vec<u8>,
    body: AnswerBody,
    /// tiny_http closes the connection after this answer.
    closes: bool,
}

fn read_answer_head(up: &mut BufReader<UnixStream>) -> io::Result<Answer> {
    let mut raw = Vec::with_capacity(512);
    loop {
        let start = raw.len();
        let n = up
            .take(MAX_ANSWER_HEAD as u64)
            .read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                "the worker closed the connection",
            ));
        }
        let line = &raw[start..];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if raw.len() > MAX_ANSWER_HEAD {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "answer head too large",
            ));
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&raw) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "the worker's answer head does not parse",
            ))
        }
    }
    let status = resp.code.unwrap_or(500);
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let connection = header("Connection").unwrap_or_default();
    let closes = connection.contains("close")
        || (resp.version == Some(0) && !connection.contains("keep-alive"));
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        AnswerBody::None
    } else if header("Transfer-Encoding").is_some_and(|t| t.contains("chunked")) {
        AnswerBody::Chunked
    } else if let Some(n) = header("Content-Length").and_then(|v| v.parse().ok()) {
        AnswerBody::Length(n)
    } else {
        AnswerBody::UntilClose
    };
    Ok(Answer {
        status,
        raw,
        body,
        closes,
    })
}

/// Writes an answer's head (with `Connection: close` when the connection is to be closed)
/// and copies its body from tiny_http to the client.
fn relay(
    client: &TcpStream,
    answer: &Answer,
    up: &mut BufReader<UnixStream>,
    request: &Head,
    close: bool,
) -> io::Result<()> {
    let raw = &answer.raw;
    let mut out = BufWriter::with_capacity(64 * 1024, client);
    if close {
        // The status line and every header but Connection, then ours.
        let mut lines = raw.split_inclusive(|&b| b == b'\n');
        if let Some(status) = lines.next() {
            out.write_all(status)?;
        }
        for line in lines {
            if line == b"\r\n" || line == b"\n" {
                break;
            }
            let name = line.split(|&b| b == b':').next().unwrap_or(b"");
            if !name.eq_ignore_ascii_case(b"connection") {
                out.write_all(line)?;
            }
        }
        out.write_all(b"Connection: close\r\n\r\n")?;
    } else {
        out.write_all(raw)?;
    }
    if request.method.eq_ignore_ascii_case("HEAD") {
        return out.flush();
    }
    match answer.body {
        AnswerBody::None => {}
        AnswerBody::Length(n) => {
            let copied = io::copy(&mut up.take(n), &mut out)?;
            if copied < n {
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "answer cut short"));
            }
        }
        AnswerBody::UntilClose => {
            io::copy(up, &mut out)?;
        }
        AnswerBody::Chunked => loop {
            let mut line = Vec::new();
            up.take(4096).read_until(b'\n', &mut line)?;
            out.write_all(&line)?;
            let text = String::from_utf8_lossy(&line);
            let size = text.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(ErrorKind::InvalidData, "bad chunk size"))?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    let mut t = Vec::new();
                    if up.take(4096).read_until(b'\n', &mut t)? == 0 {
                        break;
                    }
                    out.write_all(&t)?;
                    if t == b"\r\n" || t == b"\n" {
                        break;
                    }
                }
                break;
            }
            let want = size + 2;
            if io::copy(&mut up.take(want), &mut out)? < want {
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "answer cut short"));
            }
        },
    }
    out.flush()
}

/// The length of the request line in `buf`, its line break included, once it has arrived.
fn line_len(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n').map(|i| i + 1)
}

/// Whether `bytes` hold the blank line that ends a head.
fn contains_blank_line(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

fn body_error(e: io::Error) -> Error {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            Error::RequestTimeout("the request body arrived too slowly or stopped".into())
        }
        ErrorKind::Interrupted => {
            Error::RequestTimeout("pipestat is stopping; send the request again".into())
        }
        ErrorKind::InvalidData => Error::bad("the chunked request body is malformed"),
        _ => Error::bad(format!("the request body could not be read: {e}")),
    }
}

/// Answers `e` in `surface`'s shape (with `status` instead of its own when given), then closes.
fn refuse(stream: TcpStream, surface: Surface, e: &Error, status: Option<u16>) {
    if (&stream)
        .write_all(&answer_bytes(surface, e, status))
        .is_ok()
    {
        linger(&stream);
    }
}

/// An error answer in `surface`'s shape, head and body, that closes the connection.
fn answer_bytes(surface: Surface, e: &Error, status: Option<u16>) -> Vec<u8> {
    let mut resp: Resp = surface.error(e);
    if let Some(s) = status {
        resp.status = s;
    }
    if let Error::Unavailable(_) = e {
        resp.headers.push(("Retry-After", "1".into()));
    }
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        resp.status,
        reason(resp.status),
        resp.content_type,
        resp.body.len()
    );
    for (name, value) in &resp.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&resp.body);
    bytes
}

/// Ends the connection after an answer: our side is shut, and what the client still sends is
/// dropped for a bounded time, so that closing does not reset the connection before the client
/// has read the answer.
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    linger_until(stream, Instant::now() + LINGER);
}

/// Reads and drops what the client sends until `until` or its end of stream.
fn linger_until(stream: &TcpStream, until: Instant) {
    let mut dropped = 0u64;
    let mut chunk = [0u8; 16 * 1024];
    while dropped < LINGER_BYTES {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match (&*stream).read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => dropped += n as u64,
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}
