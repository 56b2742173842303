#!/usr/bin/env bash
# Property-based check of /openapi.json against the daemon (docs/operations.md, "OpenAPI"):
# schemathesis (from PyPI, in a virtual environment under target/) generates requests for every
# GET operation of the document, valid and invalid, against `pipestat serve --demo` on a free
# loopback port, and fails on any 5xx and on any answer the document does not describe (status
# code, content type, body schema). Bounded: a few examples per operation and a time budget.
#
# Usage: tests/openapi/schemathesis.sh target/release/pipestat
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "$1")
venv=target/schemathesis
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/openapi/requirements.txt
fi
work=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
# The demo's 90 days end now, so its data fall in every default window.
"$bin" serve --db "$work/demo.db" --listen 127.0.0.1:0 --demo >"$work/out" 2>"$work/err" &
pid=$!
for _ in $(seq 1 600); do
    grep -q '^listening on ' "$work/out" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/err"; exit 1; }
    sleep 0.1
done
base=$(sed -n 's/^listening on //p' "$work/out")
[ -n "$base" ] || { echo "pipestat did not start"; cat "$work/err"; exit 1; }
echo "pipestat --demo at $base"
# Run from target/, where schemathesis keeps its cache of failing examples.
cd target
schemathesis/bin/schemathesis run "$base/openapi.json" \
    --include-method GET \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "${PIPESTAT_SCHEMATHESIS_EXAMPLES:-10}" \
    --max-time "${PIPESTAT_SCHEMATHESIS_SECONDS:-180}" \
    --request-timeout 30 \
    --workers 2 \
    --seed "${PIPESTAT_SCHEMATHESIS_SEED:-29}" \
    --suppress-health-check all \
    --report junit --report-dir schemathesis-report
