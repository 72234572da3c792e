"""Run one benchmark configuration in a fresh Python process, so its peak memory is its own."""

from __future__ import annotations

import json
import subprocess
import sys


def run_in_subprocess(script: str, spec: dict) -> dict | None:
    """``python script --_worker SPEC``; returns the JSON after its ``RESULT `` line, or None
    (printing the tail of its output) when it failed."""
    out = subprocess.run(
        [sys.executable, script, "--_worker", json.dumps(spec)], capture_output=True, text=True
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(line[len("RESULT ") :])


def report_result(result: dict) -> None:
    """What a worker prints for ``run_in_subprocess``."""
    print("RESULT " + json.dumps(result))
