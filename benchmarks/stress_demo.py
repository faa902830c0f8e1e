"""Stress run of the demo with a browser on the training page (issue: a new user's first hour).

``python benchmarks/stress_demo.py [--runs 5] [--epochs 30] [--rows N]`` starts ``pipeline demo``
``--runs`` times, each with headless Chromium (Playwright, Debian's /usr/bin/chromium) on the
live training page, reloading it every 2 s while the job runs, and prints one line per run (exit
code, seconds, page loads, the accuracy line) and the number of failed runs.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def browse(url: str, stop: threading.Event, counts: dict[str, int]) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or
                                    "/usr/bin/chromium",
                                    args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        while not stop.is_set():
            try:
                page.goto(url, timeout=20_000)
                counts["loads"] += 1
            except Exception:
                counts["errors"] += 1
            stop.wait(2.0)
        browser.close()


def one_run(args: argparse.Namespace, out: str) -> dict:
    exe = shutil.which("pipeline")
    cmd = [exe] if exe else [sys.executable, "-m", "pipeline.cli.main"]
    cmd += ["demo", "--epochs", str(args.epochs), "--output", out, "--quiet",
            "--dashboard-address", "127.0.0.1:0"]
    if args.rows:
        cmd += ["--rows", str(args.rows)]
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    counts = {"loads": 0, "errors": 0}
    stop = threading.Event()
    browser = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("training page:"):
            url = line.split(None, 2)[-1].strip()
            browser = threading.Thread(target=browse, args=(url, stop, counts), daemon=True)
            browser.start()
            break
    rest, err = proc.communicate()
    stop.set()
    if browser is not None:
        browser.join(30)
    lines += rest.splitlines(keepends=True)
    acc = next((ln.strip() for ln in lines if "test accuracy" in ln), "")
    return {"exit": proc.returncode, "seconds": time.time() - start, **counts, "accuracy": acc,
            "error": err[-2000:] if proc.returncode else ""}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--rows", type=int, default=None)
    args = ap.parse_args()
    failed = 0
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as out:
            r = one_run(args, out)
        failed += r["exit"] != 0
        print(f"run {i + 1}: exit {r['exit']}, {r['seconds']:.0f} s, page loads {r['loads']}, "
              f"page errors {r['errors']}, {r['accuracy']}", flush=True)
        if r["error"]:
            print(r["error"], flush=True)
    print(f"{failed} of {args.runs} runs failed (command: python benchmarks/stress_demo.py "
          f"--runs {args.runs} --epochs {args.epochs}"
          + (f" --rows {args.rows}" if args.rows else "") + ")")


if __name__ == "__main__":
    main()
