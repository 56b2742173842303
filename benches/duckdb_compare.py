"""pipestat beside DuckDB on the same rows: CircleCI workflows and jobs of all branches.

Usage (docs/benchmarks.md, "duckdb"):

    python3 -m venv venv && venv/bin/pip install duckdb
    pipestat serve --db bench.db --now SECONDS --quota-per-minute 0 &   # SECONDS: newest run + 1 s
    venv/bin/python benches/duckdb_compare.py bench.db http://127.0.0.1:PORT [ROUNDS]

It reads the runs, jobs and workflows of the SQLite file with Python's sqlite3 (read-only),
loads them into an in-memory DuckDB through CSV files in a temporary directory, then, ROUNDS
times (default 20) and alternately, asks pipestat for the busiest project's
`/api/v2/insights/{slug}/workflows?all-branches=true` and `…/workflows/{busiest
workflow}/jobs?all-branches=true` (90 days ending at the daemon's `--now`, which must be the
newest run's second + 1) and runs DuckDB's equivalent SQL. It prints the median and p95 of
each, their ratio, and whether every workflow's (job's) counts and duration figures (seconds,
as the route rounds them) agree.
"""

import csv
import math
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
import http.client
import json

import duckdb

DAY_MS = 86_400_000


def quantile(values, p):
    v = sorted(values)
    h = (len(v) - 1) * p
    lo = int(h)
    return v[lo] + (v[min(lo + 1, len(v) - 1)] - v[lo]) * (h - lo)


def secs(ms):
    # The route's rounding: half away from zero, of milliseconds / 1000.
    return None if ms is None else int(math.floor(ms / 1000.0 + 0.5))


def main():
    db, base = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    newest = src.execute("SELECT max(created_at) FROM runs").fetchone()[0]
    now = (newest // 1000 + 1) * 1000
    start, end = now - 90 * DAY_MS, now + 1
    pid, slug = src.execute(
        "SELECT p.id, p.slug FROM projects p ORDER BY (SELECT count(*) FROM runs r"
        " WHERE r.project_id = p.id) DESC LIMIT 1"
    ).fetchone()

    duck = duckdb.connect()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        for table, cols in [
            ("runs", "id, project_id, workflow_id, branch, status, created_at, started_at,"
                     " stopped_at, credits_used"),
            ("workflows", "id, project_id, name"),
            ("jobs", "run_id, name, status, created_at, started_at, stopped_at"),
        ]:
            path = os.path.join(tmp, f"{table}.csv")
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow([c.strip() for c in cols.split(",")])
                w.writerows(src.execute(f"SELECT {cols} FROM {table}"))
            duck.execute(f"CREATE TABLE {table} AS SELECT * FROM read_csv_auto('{path}')")
        print(f"loaded into DuckDB {duckdb.__version__} in {time.perf_counter() - t:.1f} s")

    # The route's definitions (docs/circleci.md): failed = failed, error or timeout; the
    # duration stopped_at - (started_at or created_at), never negative; percentiles by linear
    # interpolation between closest ranks (DuckDB's quantile_cont).
    sql = """
        WITH r AS (
            SELECT workflow_id, status,
                CASE WHEN stopped_at IS NOT NULL
                    THEN greatest(stopped_at - coalesce(started_at, created_at), 0) END AS dur
            FROM runs WHERE project_id = $1 AND created_at >= $2 AND created_at < $3)
        SELECT w.name, count(*), count(*) FILTER (WHERE status = 'success'),
            count(*) FILTER (WHERE status IN ('failed', 'error', 'timeout')),
            min(dur), max(dur), quantile_cont(dur, 0.5), quantile_cont(dur, 0.95)
        FROM r JOIN workflows w ON w.id = r.workflow_id
        GROUP BY w.name ORDER BY w.name"""

    job_sql = """
        WITH j AS (
            SELECT j.name, j.status,
                CASE WHEN j.stopped_at IS NOT NULL
                    THEN greatest(j.stopped_at - coalesce(j.started_at, j.created_at), 0) END AS dur
            FROM runs r JOIN jobs j ON j.run_id = r.id
            WHERE r.project_id = $1 AND r.created_at >= $2 AND r.created_at < $3
              AND r.workflow_id = $4)
        SELECT name, count(*), count(*) FILTER (WHERE status = 'success'),
            count(*) FILTER (WHERE status IN ('failed', 'error', 'timeout')),
            min(dur), max(dur), quantile_cont(dur, 0.5), quantile_cont(dur, 0.95)
        FROM j GROUP BY name ORDER BY name"""
    wf_id, wf_name = src.execute(
        "SELECT w.id, w.name FROM runs r JOIN workflows w ON w.id = r.workflow_id"
        " WHERE r.project_id = ? AND r.created_at >= ? GROUP BY w.id ORDER BY count(*) DESC"
        " LIMIT 1", (pid, start)).fetchone()

    u = urllib.parse.urlparse(base)
    http_conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    prefix = f"/api/v2/insights/{urllib.parse.quote(slug, safe='/')}/workflows"
    wf_path = urllib.parse.quote(wf_name, safe="")
    compare(http_conn, duck, slug, rounds, "workflows",
            f"{prefix}?all-branches=true", sql, [pid, start, end])
    compare(http_conn, duck, slug, rounds, f"jobs of {wf_name}",
            f"{prefix}/{wf_path}/jobs?all-branches=true", job_sql, [pid, start, end, wf_id])


def compare(http_conn, duck, slug, rounds, label, path, sql, params):
    """Times the route `path` and DuckDB's `sql` alternately; prints both and whether they agree."""

    def ask_pipestat():
        http_conn.request("GET", path)
        resp = http_conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (resp.status, body[:300])
        return json.loads(body)

    def ask_duckdb():
        return duck.execute(sql, params).fetchall()

    ask_pipestat(), ask_duckdb()
    times = {"pipestat": [], "duckdb": []}
    for i in range(rounds):
        order = [("pipestat", ask_pipestat), ("duckdb", ask_duckdb)]
        for name, ask in order if i % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            answer = ask()
            times[name].append((time.perf_counter() - t) * 1000)
            if name == "pipestat":
                ours = answer
            else:
                theirs = answer

    got = [
        (item["name"], item["metrics"]["total_runs"], item["metrics"]["successful_runs"],
         item["metrics"]["failed_runs"], item["metrics"]["duration_metrics"]["min"],
         item["metrics"]["duration_metrics"]["max"], item["metrics"]["duration_metrics"]["median"],
         item["metrics"]["duration_metrics"]["p95"])
        for item in ours["items"]
    ]
    want = [(n, c, ok, bad, secs(lo), secs(hi), secs(p50), secs(p95))
            for n, c, ok, bad, lo, hi, p50, p95 in theirs]
    load = open("/proc/loadavg").read().split()[:3]
    print(f"{label}, all branches, project {slug}, 90 days, {rounds} rounds alternately;"
          f" load average {' '.join(load)}")
    for name in ("pipestat", "duckdb"):
        v = times[name]
        print(f"  {name:9} median {statistics.median(v):8.1f} ms   p95 {quantile(v, 0.95):8.1f} ms")
    ratio = statistics.median(times["pipestat"]) / statistics.median(times["duckdb"])
    print(f"  pipestat / duckdb (medians): {ratio:.2f}")
    print(f"  numbers agree: {'yes' if got == want else 'NO'}")
    if got != want:
        for a, b in zip(got, want):
            if a != b:
                print(f"    pipestat {a}\n    duckdb   {b}")


if __name__ == "__main__":
    main()
