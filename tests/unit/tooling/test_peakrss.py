"""`run_measured` reads a command's own peak memory, whatever its caller once held."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.fixtures.peakrss import run_measured

ROOT = Path(__file__).resolve().parents[3]
MIB = 1024 * 1024


def _touch(mib: int) -> str:
    """Python that holds `mib` MiB, every page touched, then lets it go."""
    return f"b = bytearray({mib} * {MIB}); b[::4096] = bytes(len(b[::4096])); del b"


def test_a_large_caller_does_not_inflate_a_small_command() -> None:
    # The caller is a separate interpreter, so this test process keeps its own size.
    caller = textwrap.dedent(
        f"""
        import json, os, subprocess, sys
        from tests.fixtures.peakrss import run_measured
        {_touch(400)}
        proc = subprocess.Popen([sys.executable, "-c", "pass"])
        _, _, usage = os.wait4(proc.pid, 0)
        run = run_measured([sys.executable, "-c", "pass"])
        print(json.dumps({{"wait4": usage.ru_maxrss * 1024, "measured": run.peak_rss}}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", caller], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    peaks = json.loads(out)
    # What wait4 in the caller reports: the caller's own peak (the reason for the launcher).
    assert peaks["wait4"] > 400 * MIB
    assert peaks["measured"] < 64 * MIB


def test_the_command_s_own_peak_output_and_exit_code() -> None:
    script = f"import sys; {_touch(200)}; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    run = run_measured([sys.executable, "-c", script])
    assert 200 * MIB < run.peak_rss < 300 * MIB
    assert run.returncode == 3
    assert run.stdout == b"out\n"
    assert run.stderr == b"err\n"
    assert run.output() == "out\nerr\n"
    assert run.cpu_seconds > 0
    assert run.seconds > 0
