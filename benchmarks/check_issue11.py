"""Walk every case of issue 11 against the real CLI; write benchmarks/RESULTS_issue11.md.

Usage: python benchmarks/check_issue11.py [--only SUBSTRING] [--out FILE]
The cases are in benchmarks/issue11_cases.py; each runs `onnxmorph` in a subprocess in a folder
of its own and checks the exit code, that stderr is one line, and that nothing was written
(inputs untouched) — or, for the cases that must work, that they did. Some cases need root
(mounting a tmpfs, running as nobody); without it they are reported as not run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.issue11_cases import CASES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS_issue11.md"))
    args = parser.parse_args()
    rows, start = [], time.perf_counter()
    for group, name, function in CASES:
        if args.only not in f"{group} {name}":
            continue
        folder = Path(tempfile.mkdtemp(prefix="issue11-"))
        folder.chmod(0o755)  # some cases run the CLI as nobody
        began = time.perf_counter()
        try:
            passed, detail = function(folder)
        except Exception as exc:  # the checker's own failure counts as a failed case
            passed, detail = False, f"checker error: {type(exc).__name__}: {exc}"[:200]
        finally:
            subprocess.run(["chmod", "-R", "u+rwX", str(folder)], check=False)
            subprocess.run(["rm", "-rf", str(folder)], check=False)
        verdict = "not run" if passed is None else "pass" if passed else "FAIL"
        rows.append((group, name, verdict, detail, time.perf_counter() - began))
        print(f"{verdict:7s} {group}: {name} ({rows[-1][4]:.0f} s) {detail}", flush=True)
    seconds = time.perf_counter() - start
    _write(args, rows, seconds)


def _write(args, rows, seconds) -> None:
    counts = {v: sum(r[2] == v for r in rows) for v in ("pass", "FAIL", "not run")}
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True).stdout.strip()
    lines = [
        "# Issue 11, case by case, against the real CLI",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit {git} (plus the "
        "working tree)",
        f"- command: `python benchmarks/check_issue11.py"
        f"{' --only ' + repr(args.only) if args.only else ''}`",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, uid {os.geteuid()}; load average at the end "
        f"{open('/proc/loadavg').read().split()[:3]} (shared machine)",
        f"- {len(rows)} cases in {seconds:.0f} s: {counts['pass']} pass, {counts['FAIL']} fail, "
        f"{counts['not run']} not run",
        "- a refusal passes when the exit code is 2, stderr is one line `onnxmorph: error: …`, "
        "there is no traceback and the case's folder (inputs included) is byte for byte as "
        "before; the detail column quotes that line",
        "",
        "| group | case | result | detail |",
        "|---|---|---|---|",
    ]
    for group, name, verdict, detail, _ in rows:
        lines.append(f"| {group} | {name} | {verdict} | {detail.replace('|', '/')} |")
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
