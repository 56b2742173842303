"""Runs systemd/nginx-pipestat.conf in front of the real pipestat binary and checks what the
proxy holds: TLS, header size, body size, slow and stalled clients, the client address.

Usage: python3 tests/proxy/check.py PATH/TO/pipestat

Needs nginx (Debian package `nginx`) and openssl; Python's standard library only. Everything
runs in a temporary directory on 127.0.0.1: a self-signed certificate made with openssl, a demo
database with a token, `pipestat serve --demo` on a free port, and nginx in the foreground with
its pid, logs and temporary files in that directory, so it needs no root and touches nothing
under /etc. The repository's config file is used as shipped, except for its placeholders (the
certificate, the address nginx listens on, the upstream port, the access log) and its two client
timeouts, shortened to 2 s so the stalled-client checks end quickly.

A second nginx, from the same file, proxies to a small recording server instead of pipestat, to
see exactly what pipestat would receive (X-Forwarded-For, Host, a complete body with its
length) and when.

Ends with "N passed, M failed" and exits non-zero when anything failed.
"""

import http.client
import http.server
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SITE = os.path.join(ROOT, "systemd", "nginx-pipestat.conf")
TIMEOUT_IN_TEST = 2  # seconds: the client header and body timeouts in the test's config
HOST = "pipestat.example.org"
MAX_BODY = 16 * 1024 * 1024  # pipestat's --max-body default

passed = 0
failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL {name} {detail}", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def find_nginx():
    for cand in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if cand and os.access(cand, os.X_OK):
            return cand
    sys.exit("nginx not found: install Debian's `nginx` package")


# --- pipestat ---------------------------------------------------------------------------------


class Pipestat:
    """`pipestat serve --demo` on a free loopback port; its log lines are kept."""

    def __init__(self, binary, workdir):
        db = os.path.join(workdir, "pipestat.db")
        made = subprocess.run(
            [binary, "token", "create", "--name", "proxy-check", "--scope", "read,ingest",
             "--db", db], check=True, capture_output=True, text=True, timeout=60)
        self.token = made.stdout.strip().splitlines()[-1].strip()
        self.proc = subprocess.Popen(
            [binary, "serve", "--demo", "--listen", "127.0.0.1:0", "--db", db],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.log = []
        self.lock = threading.Lock()
        lines = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, None), daemon=True).start()
        self.port = None
        deadline = time.monotonic() + 180
        while self.port is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
        if self.port is None:
            self.stop()
            sys.exit("pipestat did not print its `listening on` line:\n" + "".join(self.log))

    def _pump(self, stream, lines):
        for line in stream:
            if lines is not None:
                lines.put(line)
            with self.lock:
                self.log.append(line)

    def saw(self, fragment):
        with self.lock:
            return any(fragment in line for line in self.log)

    def saw_within(self, fragment, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.saw(fragment):
                return True
            time.sleep(0.1)
        return self.saw(fragment)

    def direct(self, path):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        finally:
            conn.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# --- a recording upstream ---------------------------------------------------------------------


class Recorder(http.server.ThreadingHTTPServer):
    """Answers 200 to anything and keeps what arrived: when nginx connected, and the request."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.connected = []
        self.requests = []
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()


class RecordingHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        self.server.connected.append(time.monotonic())
        super().setup()

    def _record(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append({"method": self.command, "path": self.path,
                                     "headers": self.headers, "body": body})
        out = b'{"recorded": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = _record

    def log_message(self, *args):
        pass


# --- nginx ------------------------------------------------------------------------------------


def substitute(text, old, new):
    if text.count(old) != 1:
        sys.exit(f"{SITE}: expected exactly one `{old}` to substitute; the test and the file "
                 "disagree")
    return text.replace(old, new)


def shorten(text, directive, seconds):
    pattern = re.compile(rf"^(\s*{directive}\s+)\S+;", re.M)
    if len(pattern.findall(text)) != 1:
        sys.exit(f"{SITE}: expected one `{directive}` directive")
    return pattern.sub(rf"\g<1>{seconds}s;", text)


class Nginx:
    """nginx in the foreground with the repository's site file in front of `upstream_port`."""

    def __init__(self, nginx, workdir, cert, key, upstream_port):
        os.makedirs(workdir)
        self.port = free_port()
        self.access_log = os.path.join(workdir, "access.log")
        self.error_log = os.path.join(workdir, "error.log")
        with open(SITE) as f:
            site = f.read()
        site = substitute(site, "listen 443 ssl;", f"listen 127.0.0.1:{self.port} ssl;")
        site = substitute(site, "listen [::]:443 ssl;\n", "")
        site = substitute(site, "/etc/ssl/pipestat/fullchain.pem", cert)
        site = substitute(site, "/etc/ssl/pipestat/privkey.pem", key)
        site = substitute(site, "/var/log/nginx/pipestat.access.log", self.access_log)
        site = substitute(site, "proxy_pass http://127.0.0.1:8080;",
                          f"proxy_pass http://127.0.0.1:{upstream_port};")
        site = shorten(site, "client_header_timeout", TIMEOUT_IN_TEST)
        site = shorten(site, "client_body_timeout", TIMEOUT_IN_TEST)
        site_path = os.path.join(workdir, "pipestat.conf")
        with open(site_path, "w") as f:
            f.write(site)
        temp = {k: os.path.join(workdir, k) for k in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        main = f"""worker_processes 1;
pid {workdir}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {temp['body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    include {site_path};
}}
"""
        self.conf = os.path.join(workdir, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(main)
        args = [nginx, "-p", workdir + "/", "-c", self.conf, "-e", self.error_log]
        tested = subprocess.run(args + ["-t"], capture_output=True, text=True, timeout=30)
        if tested.returncode != 0:
            sys.exit("nginx -t refused the config:\n" + tested.stderr)
        self.proc = subprocess.Popen(args + ["-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_port(self.port, self.proc, 15):
            self.stop()
            sys.exit("nginx did not start:\n" + self.errors())

    def errors(self):
        try:
            with open(self.error_log) as f:
                return f.read()
        except OSError:
            return ""

    def access_lines(self):
        try:
            with open(self.access_log) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# --- clients ----------------------------------------------------------------------------------


class Client:
    def __init__(self, port, cafile):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=cafile)  # verifies the certificate

    def request(self, method, path, headers=None, body=None, timeout=10):
        """An HTTPS request with a complete body; (status, headers, body)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                           timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Host": HOST, **(headers or {})},
                         encode_chunked=body is not None and not isinstance(body, bytes))
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def tls(self, timeout=10):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return self.ctx.wrap_socket(sock, server_hostname="127.0.0.1")

    def raw(self, data, timeout=10):
        """Sends raw bytes over TLS; the status nginx answered (None if it only closed)."""
        sock = self.tls(timeout)
        try:
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # nginx may answer and close before reading everything
            return status_of(read_all(sock, timeout, until_head=True))
        finally:
            sock.close()


def read_all(sock, seconds, until_head=False):
    """Reads until the peer closes (or, with until_head, until an answer's head is in), bounded
    in time."""
    data = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ConnectionResetError, ssl.SSLError, OSError):
            break
        if not chunk:
            break
        data += chunk
        if until_head and b"\r\n\r\n" in data:
            break
    return data


def status_of(data):
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    return int(m.group(1)) if m else None


def head(method, path, headers):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# --- the checks -------------------------------------------------------------------------------


def run_json(run_id):
    return json.dumps({"id": run_id, "project": "gh/acme/proxy", "workflow": "build",
                       "status": "success", "created_at": "2026-01-01T00:00:00Z"}).encode()


def check_pipestat(client, pipestat, proxy):
    auth = {"Authorization": f"Bearer {pipestat.token}"}

    status, _, _ = client.request("GET", "/healthz")
    check("GET /healthz through the proxy over TLS is 200", status == 200, status)

    status, _, body = client.request("GET", "/api/v1/runs?limit=5", auth)
    items = json.loads(body).get("items") if status == 200 else None
    check("a read route through the proxy answers 200 with the demo's runs",
          status == 200 and isinstance(items, list) and len(items) == 5, (status, body[:200]))

    status, _, body = client.request("GET", "/api/v1/runs?limit=5")
    check("without a token pipestat still answers 401 in its own shape",
          status == 401 and b'"unauthorized"' in body, (status, body[:200]))

    status, _, body = client.request("POST", "/api/v1/runs",
                                     {**auth, "Content-Type": "application/json"},
                                     run_json("proxy-1"))
    check("a write through the proxy is stored", status == 200 and b'"created":1' in
          body.replace(b" ", b""), (status, body[:200]))

    status, _, body = client.request("POST", "/api/v1/runs",
                                     {**auth, "Content-Type": "application/json"},
                                     iter([run_json("proxy-2")[:20], run_json("proxy-2")[20:]]))
    check("a chunked write through the proxy is stored",
          status == 200 and b'"created":1' in body.replace(b" ", b""), (status, body[:200]))
    status, _, body = client.request("GET", "/api/v1/runs/gh/acme/proxy/proxy-2", auth)
    check("the chunked write reads back", status == 200 and b'"proxy-2"' in body,
          (status, body[:200]))

    plain = socket.create_connection(("127.0.0.1", client.port), timeout=10)
    try:
        plain.sendall(head("GET", "/healthz", [("Connection", "close")]))
        status = status_of(read_all(plain, 10))
    finally:
        plain.close()
    check("plain HTTP on the TLS port is refused (400)", status == 400, status)

    # A request that reaches pipestat is in its log; a control request shows the log is seen.
    status, _, _ = client.request("GET", "/proxy-check/control", auth)
    check("pipestat logs a request the proxy passed",
          status == 404 and pipestat.saw_within("GET /proxy-check/control 404", 5), status)

    status = client.raw(head("GET", "/proxy-check/big-header",
                             [("X-Big", "a" * 65536), ("Connection", "close")]))
    check("one 64 KiB header is refused by the proxy (400)", status == 400, status)
    status = client.raw(head("GET", "/proxy-check/many-headers",
                             [(f"X-Part-{i}", "b" * 2048) for i in range(40)]
                             + [("Connection", "close")]))
    check("80 KiB of 2 KiB headers are refused by the proxy (400)", status == 400, status)
    status = client.raw(head("GET", "/proxy-check/long-line?q=" + "c" * 70000,
                             [("Connection", "close")]))
    check("a 70 KB request line is refused by the proxy (414)", status == 414, status)
    status = client.raw(head("POST", "/proxy-check/huge-body",
                             [("Content-Length", str(MAX_BODY + 1)),
                              ("Content-Type", "application/json"), ("Connection", "close")]))
    check("a body announced above 16 MiB is refused by the proxy (413)", status == 413, status)
    # Sent to pipestat directly, this one stops it: tiny_http 0.12 allocates the whole announced
    # remainder to drain a body pipestat did not read.
    status = client.raw(head("GET", "/proxy-check/hundred-terabytes",
                             [("Content-Length", "100000000000000"), ("Connection", "close")]))
    check("a body announced at 100 TB is refused by the proxy (413)", status == 413, status)
    time.sleep(0.5)
    check("none of the refused requests reached pipestat",
          not any(pipestat.saw(f"/proxy-check/{p}")
                  for p in ("big-header", "many-headers", "long-line", "huge-body",
                            "hundred-terabytes")))
    check("pipestat still answers directly after the refused requests",
          pipestat.direct("/healthz") == 200 and pipestat.proc.poll() is None)

    # Stalled clients are cut by the proxy's timeouts (2 s in this test, 10 s as shipped).
    sock = client.tls()
    try:
        sock.sendall(f"GET /proxy-check/stalled-header HTTP/1.1\r\nHost: {HOST}\r\n".encode())
        started = time.monotonic()
        read_all(sock, 15)
        took = time.monotonic() - started
    finally:
        sock.close()
    check("a header that stalls is cut by client_header_timeout",
          TIMEOUT_IN_TEST - 0.5 <= took < TIMEOUT_IN_TEST + 8, f"closed after {took:.1f} s")

    sock = client.tls()
    try:
        sock.sendall(head("POST", "/proxy-check/stalled-body",
                          [("Content-Length", "100"), ("Content-Type", "application/json")])
                     + b'{"id": "x"')
        started = time.monotonic()
        answer = read_all(sock, 15)
        took = time.monotonic() - started
    finally:
        sock.close()
    check("a body that stalls is cut by client_body_timeout",
          TIMEOUT_IN_TEST - 0.5 <= took < TIMEOUT_IN_TEST + 8
          and status_of(answer) in (None, 408), f"{status_of(answer)} after {took:.1f} s")
    check("the stalled requests never reached pipestat",
          not pipestat.saw("/proxy-check/stalled"))

    # Many clients with a token trickling writes (a byte every half second, under the timeout):
    # pipestat would read such a body (above 1 KiB) in a worker until it is complete, and has
    # fewer workers than this. nginx holds them all; pipestat gets nothing from them and keeps answering.
    def writes_seen():
        with pipestat.lock:
            return sum("POST /api/v1/runs " in line for line in pipestat.log)

    writes_before = writes_seen()
    trickles = []
    try:
        for _ in range(24):
            s = client.tls()
            s.sendall(head("POST", "/api/v1/runs",
                           [("Authorization", f"Bearer {pipestat.token}"),
                            ("Content-Length", "100000"), ("Content-Type", "application/json")]))
            trickles.append(s)
        answered = []
        dropped = set()
        for round_ in range(8):
            for i, s in enumerate(trickles):
                try:
                    s.sendall(b" ")
                except OSError:
                    dropped.add(i)
            if round_ % 2 == 1:
                t0 = time.monotonic()
                try:
                    status = client.request("GET", "/healthz", timeout=5)[0]
                except OSError as e:
                    status = repr(e)
                answered.append((status, round(time.monotonic() - t0, 2)))
            time.sleep(0.5)
        check("24 trickling writers: /healthz through the proxy answers at once, every time",
              all(st == 200 and dt < 2 for st, dt in answered), answered)
        check("24 trickling writers: the proxy holds every one", not dropped,
              f"{len(dropped)} closed")
    finally:
        for s in trickles:
            s.close()
    time.sleep(1)
    check("24 trickling writers: none reached pipestat", writes_seen() == writes_before,
          writes_seen() - writes_before)

    lines = proxy.access_lines()
    control = [ln for ln in lines if "/proxy-check/control" in ln]
    check("the access log holds the client address",
          len(control) == 1 and control[0].startswith("127.0.0.1 - ") and '" 404 ' in control[0],
          control or lines[-5:])
    check("the access log holds the refused requests",
          any('" 414 ' in ln for ln in lines) and any('" 413 ' in ln for ln in lines),
          lines[-10:])


def check_forwarding(client, recorder):
    status, _, _ = client.request("GET", "/echo/a%2Fb/?x=1&y=%20z",
                                  {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"})
    got = recorder.requests[-1] if recorder.requests else None
    check("the upstream gets the request", status == 200 and got is not None, status)
    if got is None:
        return
    h = got["headers"]
    check("path and query reach the upstream unchanged", got["path"] == "/echo/a%2Fb/?x=1&y=%20z",
          got["path"])
    check("X-Forwarded-For is the client's address, not what the client sent",
          h.get_all("X-Forwarded-For") == ["127.0.0.1"], h.get_all("X-Forwarded-For"))
    check("X-Real-IP is the client's address", h.get_all("X-Real-IP") == ["127.0.0.1"],
          h.get_all("X-Real-IP"))
    check("X-Forwarded-Proto is https", h.get("X-Forwarded-Proto") == "https",
          h.get("X-Forwarded-Proto"))
    check("Host is the name the client asked for", h.get("Host") == HOST, h.get("Host"))

    body = b'{"chunked": "' + b"d" * 5000 + b'"}'
    status, _, _ = client.request("POST", "/echo/chunked", {"Content-Type": "application/json"},
                                  iter([body[:1000], body[1000:]]))
    got = recorder.requests[-1]
    check("a chunked body reaches the upstream whole, with its Content-Length",
          status == 200 and got["body"] == body
          and got["headers"].get("Content-Length") == str(len(body))
          and got["headers"].get("Transfer-Encoding") is None,
          (status, got["headers"].items()))

    # A body sent a byte at a time: nginx connects to the upstream only once it has it all.
    before = len(recorder.connected)
    payload = b'{"slow": 1}'
    sock = client.tls()
    try:
        sock.sendall(head("POST", "/echo/trickled", [("Content-Length", str(len(payload))),
                                                     ("Connection", "close")]))
        for i in range(len(payload)):
            sock.sendall(payload[i:i + 1])
            if i < len(payload) - 1:
                time.sleep(0.2)
        last_byte = time.monotonic()
        status = status_of(read_all(sock, 10))
    finally:
        sock.close()
    connected = recorder.connected[before:]
    check("the upstream is contacted only after the last byte of a slow body",
          status == 200 and len(connected) == 1 and connected[0] >= last_byte - 0.05,
          (status, [round(c - last_byte, 2) for c in connected]))
    check("the trickled body reaches the upstream whole",
          recorder.requests[-1]["body"] == payload, recorder.requests[-1]["body"])

    # limit_conn: 64 requests at once from one address; the next is refused (503).
    held = []
    try:
        for _ in range(64):
            s = client.tls()
            s.sendall(head("POST", "/echo/held", [("Content-Length", "10")]))
            held.append(s)
        time.sleep(0.5)
        status = client.raw(head("GET", "/echo/one-too-many", [("Connection", "close")]))
    finally:
        for s in held:
            s.close()
    check("a 65th request at once from one address is refused (503)", status == 503, status)
    time.sleep(0.5)
    status, _, _ = client.request("GET", "/echo/after-the-limit")
    check("once they close, the address is served again", status == 200, status)

    count = len(recorder.requests)
    status = client.raw(head("POST", "/echo/smuggle",
                             [("Content-Length", "5"), ("Transfer-Encoding", "chunked"),
                              ("Connection", "close")]) + b"0\r\n\r\n")
    check("Content-Length with Transfer-Encoding is refused by the proxy (400)", status == 400,
          status)
    status = client.raw(head("POST", "/echo/smuggle",
                             [("Content-Length", "5"), ("Content-Length", "6"),
                              ("Connection", "close")]) + b"123456")
    check("two Content-Lengths are refused by the proxy (400)", status == 400, status)
    time.sleep(0.3)
    check("the refused requests never reached the upstream", len(recorder.requests) == count)


def guarded(checks, *args):
    """Runs a group of checks; an unexpected error ends the group as one failure."""
    try:
        checks(*args)
    except Exception:  # noqa: BLE001 - reported, counted, and the run goes on to clean up
        traceback.print_exc()
        check(f"{checks.__name__} ran to its end", False)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    nginx = find_nginx()
    workdir = tempfile.mkdtemp(prefix="pipestat-proxy-")
    # nginx's workers run as an unprivileged user when started as root: let them reach their
    # temporary directories.
    os.chmod(workdir, 0o755)
    started = []
    try:
        cert = os.path.join(workdir, "cert.pem")
        key = os.path.join(workdir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-addext",
                        "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=60)

        pipestat = Pipestat(binary, workdir)
        started.append(pipestat)
        proxy = Nginx(nginx, os.path.join(workdir, "nginx"), cert, key, pipestat.port)
        started.append(proxy)
        guarded(check_pipestat, Client(proxy.port, cert), pipestat, proxy)
        proxy.stop()
        pipestat.stop()
        check("pipestat stops cleanly", pipestat.proc.returncode == 0, pipestat.proc.returncode)

        recorder = Recorder()
        started.append(recorder)
        upstream = recorder.server_address[1]
        proxy2 = Nginx(nginx, os.path.join(workdir, "nginx-recorder"), cert, key, upstream)
        started.append(proxy2)
        guarded(check_forwarding, Client(proxy2.port, cert), recorder)
    finally:
        for thing in reversed(started):
            if isinstance(thing, Recorder):
                thing.shutdown()
            else:
                thing.stop()
        if failed:
            for thing in started:
                if isinstance(thing, Nginx):
                    print(f"--- nginx error log ({thing.conf}):\n{thing.errors()[-3000:]}")
                if isinstance(thing, Pipestat):
                    print("--- pipestat log (end):\n" + "".join(thing.log[-30:]))
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
