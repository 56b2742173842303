"""Looks at the dashboard in a real browser: headless Chromium from the distribution's packages,
driven by Python Playwright, against `pipestat serve --demo` on a free loopback port.

Usage: python tests/browser/check.py PATH/TO/pipestat [OUT_DIR]

Checks, on `/`, every project's page and the workflow pages of one project, with JavaScript
off (the pages need none): no console error, no failed request and no answer >= 400; every
link on them that stays on the daemon answers 200 (links to the CI systems' run pages are
counted and skipped: no request leaves the machine); every figure's data-value equals the
number its data-api (its own, or its chart table's) answers at its data-pointer; no horizontal scroll at 390 px. Screenshots at
1280 and 390 px (light and dark) are written to OUT_DIR (default target/browser).

Ends with "N passed, M failed" and exits non-zero when anything failed.
"""

import json
import os
import subprocess
import sys
import tempfile
import urllib.parse

from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"
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


def start(binary, tmp):
    proc = subprocess.Popen(
        [binary, "serve", "--demo", "--db", os.path.join(tmp, "demo.db"),
         "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        sys.exit(f"pipestat did not start: {line!r}")
    return proc, line[len("listening on "):]


def number(v):
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def pointer(doc, ptr):
    for part in ptr.split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, list):
            i = int(part)
            doc = doc[i] if i < len(doc) else None
        elif isinstance(doc, dict):
            doc = doc.get(part)
        else:
            return None
    return doc


def main():
    binary = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join("target", "browser")
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start(binary, tmp)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM)
                try:
                    run(browser, base, out)
                finally:
                    browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def run(browser, base, out):
    host = urllib.parse.urlparse(base).netloc
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
    page = ctx.new_page()
    problems = []
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status}: {r.url}"))

    def visit(path):
        problems.clear()
        resp = page.goto(base + path, wait_until="load")
        check(f"GET {path} is 200", resp is not None and resp.status == 200,
              resp and resp.status)
        check(f"{path}: no console error, no failed request", not problems, problems)

    visit("/")
    projects = page.eval_on_selector_all(
        "section.card h2 a", "els => els.map(e => e.getAttribute('href'))")
    check("/ lists the demo's projects", len(projects) >= 2, projects)
    pages = ["/"] + projects
    workflows = []
    for p in projects:
        visit(p)
        if not workflows:
            workflows = page.eval_on_selector_all(
                "a[href*='/workflows/']", "els => els.map(e => e.getAttribute('href'))")
    check("a project page links its workflows", len(workflows) >= 1, workflows)
    pages += workflows[:3]
    for w in workflows[:3]:
        visit(w)

    # Links, figures and their APIs, page by page.
    answers = {}
    links = set()
    external = 0
    figures = 0
    mismatches = []
    for p in pages:
        page.goto(base + p)
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            if urllib.parse.urlparse(href).netloc == host:
                links.add(href)
            else:
                external += 1
        figs = page.eval_on_selector_all(
            "[data-metric]",
            "els => els.map(e => [e.dataset.metric, e.dataset.value,"
            " e.dataset.api || e.closest('[data-api]').dataset.api, e.dataset.pointer])")
        for metric, value, api, ptr in figs:
            figures += 1
            if api not in answers:
                r = ctx.request.get(base + api)
                answers[api] = r.json() if r.status == 200 else {"status": r.status}
            want = pointer(answers[api], ptr)
            got = None if value == "null" else number(value)
            if number(want) != got:
                mismatches.append(f"{p}: {metric} = {value}, {api} {ptr} = {want!r}")
    check(f"every figure equals its API's answer ({figures} figures, {len(answers)} API answers)",
          figures > 100 and not mismatches, mismatches[:5])
    bad = []
    for href in sorted(links):
        r = ctx.request.get(href)
        if r.status != 200:
            bad.append(f"{r.status} {href}")
    check(f"every link on the pages answers 200 ({len(links)} links; {external} to CI systems skipped)",
          not bad, bad[:5])
    ctx.close()

    # Screenshots and the width of small screens.
    for width, scheme in [(1280, "light"), (390, "light"), (390, "dark"), (1280, "dark")]:
        c = browser.new_context(viewport={"width": width, "height": 900},
                                color_scheme=scheme, java_script_enabled=True)
        pg = c.new_page()
        for name, p in [("index", "/"), ("project", projects[0]),
                        ("workflow", workflows[0] if workflows else "/")]:
            pg.goto(base + p)
            if width == 390:
                over = pg.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth")
                check(f"{name} has no horizontal scroll at 390 px ({scheme})", over <= 0,
                      f"{over} px too wide")
            pg.screenshot(path=os.path.join(out, f"{name}-{width}-{scheme}.png"), full_page=True)
        c.close()
    print(f"screenshots in {out}")


if __name__ == "__main__":
    main()
