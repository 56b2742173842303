"""Drives pipestat's CircleCI Insights surface with pycircleci, a CircleCI API v2 client
from PyPI, unchanged: only its base URL points at pipestat.

Usage: python circleci_client.py PATH/TO/pipestat

The script makes a small demo database in a temporary directory, creates a read token, starts
`pipestat serve` on 127.0.0.1:0, and calls every Insights route through the client: its own
methods where it has them (they send Circle-Token and HTTP Basic, and follow next_page_token),
and its generic request method for the routes it has no method for. Each answer is checked
against the required fields of CircleCI's v2 OpenAPI document. It ends with
"N passed, M failed" and exits non-zero when anything failed.
"""

import os
import subprocess
import sys
import tempfile
import threading

import requests
from pycircleci.api import Api, API_VER_V2, GET

NOW = "2026-03-10T00:00:00Z"

DURATION = {"min", "mean", "median", "p95", "max", "standard_deviation"}
WORKFLOW_METRICS = {"success_rate", "total_runs", "failed_runs", "successful_runs", "throughput",
                    "mttr", "total_recoveries", "total_credits_used", "duration_metrics"}
JOB_METRICS = {"success_rate", "total_runs", "failed_runs", "successful_runs", "throughput",
               "total_credits_used", "duration_metrics"}
RUN = {"id", "branch", "duration", "created_at", "stopped_at", "credits_used", "status", "is_approval"}
JOB_RUN = {"id", "started_at", "stopped_at", "status", "credits_used", "duration"}
TEST = {"failed_runs", "job_name", "p95_duration", "test_name", "file", "source", "classname",
        "total_runs", "flaky"}
FLAKY = {"time_wasted", "workflow_created_at", "workflow_id", "classname", "pipeline_number",
         "workflow_name", "test_name", "job_name", "job_number", "times_flaked", "source", "file"}
PAGE_FIGURES = {"total_credits_used", "p95_duration_secs", "total_runs", "success_rate"}
TOTALS = {"total_runs", "total_duration_secs", "total_credits_used", "success_rate", "throughput"}

passed = 0
failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def has(obj, keys):
    return isinstance(obj, dict) and keys <= set(obj)


def start(binary, workdir):
    db = os.path.join(workdir, "client.db")
    subprocess.run([binary, "demo", "--runs", "3000", "--days", "30", "--now", NOW, "--db", db],
                   check=True, capture_output=True)
    out = subprocess.run([binary, "token", "create", "--name", "client", "--scope", "read",
                          "--db", db], check=True, capture_output=True, text=True)
    token = out.stdout.strip().splitlines()[-1]
    proc = subprocess.Popen([binary, "serve", "--db", db, "--listen", "127.0.0.1:0", "--now", NOW],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()))
    reader.start()
    reader.join(120)
    if not line or not line[0].startswith("listening on "):
        proc.kill()
        sys.exit(f"pipestat did not start: {line!r}")
    return proc, line[0].split("listening on ", 1)[1].strip(), token


def main():
    binary = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as workdir:
        proc, base, token = start(binary, workdir)
        try:
            run_checks(Api(token=token, url=base + "/api"), base)
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def run_checks(api, base):
    # The demo's busiest project; pycircleci builds "github/acme/api" (a vcs alias).
    org, repo = "acme", "api"

    wfs = api.get_project_workflows_metrics(org, repo, paginate=True)
    check("workflows: items", len(wfs) > 0 and all(
        has(w, {"name", "window_start", "window_end", "metrics"}) and has(w["metrics"], WORKFLOW_METRICS)
        and has(w["metrics"]["duration_metrics"], DURATION) for w in wfs), wfs[:1])
    wf = wfs[0]["name"]
    wfs_all = api.get_project_workflows_metrics(org, repo, params={"all-branches": "true",
                                                "reporting-window": "last-30-days"})
    check("workflows: all-branches", all(w["metrics"]["total_runs"] >= 1 for w in wfs_all))

    runs = api.get_project_workflow_metrics(org, repo, wf, paginate=True, limit=250)
    check("workflow runs: paged past 100", len(runs) > 100, len(runs))
    check("workflow runs: fields", all(has(r, RUN) for r in runs), runs[:1])
    check("workflow runs: distinct", len({r["id"] for r in runs}) == len(runs))

    jobs = api.get_project_workflow_jobs_metrics(org, repo, wf, paginate=True)
    check("jobs: fields", len(jobs) > 0 and all(
        has(j, {"name", "window_start", "window_end", "metrics"}) and has(j["metrics"], JOB_METRICS)
        for j in jobs), jobs[:1])
    job = jobs[0]["name"]
    job_runs = api.get_project_workflow_job_metrics(org, repo, wf, job, limit=50)
    check("job runs: fields", len(job_runs) > 0 and all(has(r, JOB_RUN) for r in job_runs), job_runs[:1])

    tm = api.get_project_workflow_test_metrics(org, repo, wf)
    check("test-metrics: fields", has(tm, {"average_test_count", "most_failed_tests",
          "most_failed_tests_extra", "slowest_tests", "slowest_tests_extra", "total_test_runs",
          "test_runs"}) and all(has(t, TEST) for t in tm["most_failed_tests"] + tm["slowest_tests"])
          and all(has(r, {"pipeline_number", "workflow_id", "success_rate", "test_counts"})
                  for r in tm["test_runs"]), str(tm)[:300])

    fl = api.get_flaky_tests(org, repo)
    check("flaky-tests: fields", has(fl, {"flaky_tests", "total_flaky_tests"})
          and fl["total_flaky_tests"] == len(fl["flaky_tests"])
          and all(has(t, FLAKY) for t in fl["flaky_tests"]), str(fl)[:300])

    br = api.get_project_branches(org, repo)
    check("branches", has(br, {"org_id", "project_id", "branches"}) and "main" in br["branches"], br)
    br_wf = api.get_project_branches(org, repo, workflow_name=wf)
    check("branches of a workflow", set(br_wf["branches"]) <= set(br["branches"]))

    # Routes pycircleci has no method for, through its own request method.
    v2 = lambda path, params=None: api._request(GET, path, params=params, api_version=API_VER_V2)
    s = v2(f"insights/gh/{org}/{repo}/workflows/{wf}/summary", {"all-branches": "true"})
    check("summary", has(s, {"metrics", "trends", "workflow_names"}) and has(s["trends"], {
        "total_runs", "failed_runs", "success_rate", "p95_duration_secs", "median_duration_secs",
        "total_credits_used", "mttr", "throughput"}) and has(s["metrics"]["duration_metrics"], DURATION)
        and has(s["metrics"], {"window_start", "window_end", "mttr", "throughput"}), str(s)[:300])
    p = v2(f"insights/pages/gh%2F{org}%2F{repo}/summary", {"reporting-window": "last-7-days",
                                                         "branches": "main"})
    check("project page", has(p, {"org_id", "project_id", "project_data", "project_workflow_data",
          "project_workflow_branch_data", "all_branches", "all_workflows"})
          and has(p["project_data"]["metrics"], TOTALS) and has(p["project_data"]["trends"], TOTALS)
          and all(has(w["metrics"], PAGE_FIGURES) and has(w["trends"], PAGE_FIGURES)
                  for w in p["project_workflow_data"] + p["project_workflow_branch_data"]),
          str(p)[:300])
    o = v2(f"insights/gh/{org}/summary", {"reporting-window": "last-30-days"})
    check("org summary", has(o, {"org_data", "org_project_data", "all_projects"})
          and has(o["org_data"]["metrics"], TOTALS) and repo in o["all_projects"]
          and all(has(x, {"project_name", "metrics", "trends"}) for x in o["org_project_data"]),
          str(o)[:300])
    ts = v2(f"insights/time-series/gh/{org}/{repo}/workflows/{wf}/jobs", {"granularity": "daily"})
    check("time series", has(ts, {"items", "next_page_token"}) and all(
        has(i, {"name", "min_started_at", "max_ended_at", "timestamp", "metrics"})
        and has(i["metrics"]["duration_metrics"], {"min", "median", "max", "p95", "total"})
        for i in ts["items"]), str(ts)[:300])

    # Errors come back as {"message": ...} with CircleCI's statuses.
    try:
        api.get_flaky_tests(org, "no-such-repo")
        check("unknown project is 404", False, "no error")
    except requests.HTTPError as e:
        check("unknown project is 404", e.response.status_code == 404
              and e.response.json() == {"message": "Project not found"}, e.response.text)
    try:
        v2(f"insights/gh/{org}/{repo}/workflows", {"reporting-window": "last-year"})
        check("bad parameter is 400", False, "no error")
    except requests.HTTPError as e:
        check("bad parameter is 400", e.response.status_code == 400
              and "reporting-window" in e.response.json()["message"], e.response.text)
    try:
        Api(token="wrong", url=base + "/api").get_flaky_tests(org, repo)
        check("wrong token is 401", False, "no error")
    except requests.HTTPError as e:
        check("wrong token is 401", e.response.status_code == 401 and "message" in e.response.json())


if __name__ == "__main__":
    main()
