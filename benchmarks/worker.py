"""Run one benchmark configuration in a fresh Python process, so its peak memory is its own."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def run_in_subprocess(script: str, spec: dict, timeout: float | None = None) -> dict | None:
    """``python script --_worker SPEC``; returns the JSON after its last ``RESULT `` line, or None
    (printing the tail of its output) when it failed. Past ``timeout`` seconds the worker and its
    own children (data-loader workers, compile workers) are killed, and its last ``RESULT`` so far
    (a worker may report partial results as it goes) is returned with ``"timed_out": True``."""
    command = [sys.executable, script, "--_worker", json.dumps(spec)]
    # A session of its own: on timeout the whole group goes, not only the worker.
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        stdout, stderr = proc.communicate()
        print(f"worker killed after {timeout:.0f} s: {spec}", file=sys.stderr)
    except BaseException:  # Ctrl-C or an error here: leave no worker behind
        _kill_group(proc.pid)
        raise
    lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
    if not lines:
        print(stdout[-2000:], stderr[-2000:], file=sys.stderr)
        return None
    result = json.loads(lines[-1][len("RESULT ") :])
    return {**result, "timed_out": True} if timed_out else result


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pid, signal.SIGKILL)


def peak_rss_mib() -> float:
    """This process's peak resident memory in MiB. Linux's ``VmHWM`` is the peak of this
    process's own memory since it started; ``getrusage``'s ``ru_maxrss`` is not, after a fork and
    exec: it starts at the parent's resident size at the fork (the worker would inherit a large
    parent's peak), so it is only the fallback where ``/proc`` is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report_result(result: dict) -> None:
    """What a worker prints for ``run_in_subprocess``."""
    print("RESULT " + json.dumps(result), flush=True)  # flushed: a killed worker keeps it
