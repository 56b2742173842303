#!/usr/bin/env bash
# `promtool check metrics` against a live scrape (docs/operations.md, "Metrics"): the given
# pipestat binary serves --demo on a free loopback port, gets some traffic (reads of several
# surfaces, a run ingested, a refused body, a path no route serves), and its /metrics answer
# must pass Prometheus' own linter and hold every metric docs/operations.md lists.
#
# Usage: tests/metrics/check.sh target/release/pipestat   (promtool on the PATH)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "$1")
work=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
"$bin" serve --db "$work/demo.db" --listen 127.0.0.1:0 --demo >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 1 600); do
    grep -q '^listening on ' "$work/out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/err"; exit 1; }
    sleep 0.1
done
base=$(sed -n 's/^listening on //p' "$work/out")
[ -n "$base" ] || { echo "pipestat did not start"; cat "$work/err"; exit 1; }
python3 - "$base" >"$work/metrics.txt" <<'PY'
import sys, urllib.error, urllib.request

base = sys.argv[1]

def call(path, body=None):
    req = urllib.request.Request(base + path, data=body, method="POST" if body is not None else "GET")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()

for path in ["/healthz", "/readyz", "/api/v1/runs?limit=5",
             "/api/v2/insights/gh/acme/api/workflows", "/api/v2/insights/gh%2Facme%2Fapi/branches",
             "/openapi/statistics/overview", "/api/v1/dora?project=gh/acme/api",
             "/v1/organizations/all/environments/runs/stats/workflow?select=sum(duration)"
             "&timeRange=01/01/2000%2000:00~01/01/2100%2000:00",
             "/no/such/path"]:
    call(path)
run = b'{"id":"metrics-check","project":"gh/acme/metrics","workflow":"ci","status":"success",' \
      b'"created_at":"2026-03-01T10:00:00Z","stopped_at":"2026-03-01T10:05:00Z"}'
assert call("/api/v1/runs", run)[0] == 200
assert call("/api/v1/runs", b"{nope")[0] == 400
status, text = call("/metrics")
assert status == 200, status
sys.stdout.write(text.decode())
PY
promtool check metrics <"$work/metrics.txt"
for name in pipestat_http_requests_total pipestat_http_request_duration_seconds_bucket \
    pipestat_runs_ingested_total pipestat_deliveries_total pipestat_writer_group_size_bucket \
    pipestat_writer_commit_duration_seconds_bucket pipestat_database_size_bytes \
    pipestat_wal_size_bytes pipestat_build_info process_resident_memory_bytes \
    process_cpu_seconds_total process_open_fds; do
    grep -q "^$name[{ ]" "$work/metrics.txt" || { echo "missing from the scrape: $name"; exit 1; }
done
echo "promtool check metrics: clean ($(grep -vc '^#' "$work/metrics.txt") samples)"
