"""Run the real ``podium`` command and measure what it cost: exit code, time, peak memory.

The peak resident memory comes from ``os.wait4`` on that one child (not the
whole test process's children), and an address-space cap keeps a blow-up
from taking the machine with it: the child then fails with MemoryError
instead of growing for minutes. The bounds are generous on purpose: they
catch gigabytes and hangs, not milliseconds.
"""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.acceptance.podium_cli import Podium

# A podium command peaks at about 40 MB here: the issue allows 200 MB more.
PEAK_RSS_LIMIT_MB = 250
# Clear errors come within a second; this catches hangs on a busy 2-core machine.
TIME_LIMIT_S = 20.0
_ADDRESS_SPACE_CAP = 4 << 30


@dataclass(frozen=True, repr=False)
class Measured:
    args: tuple[str, ...]
    code: int | None  # None: killed after TIME_LIMIT_S
    out: str
    err: str
    seconds: float
    peak_rss_mb: float

    def __repr__(self) -> str:  # what a failed assertion shows
        return (f"podium {' '.join(self.args)[:300]} -> exit {self.code} in "
                f"{self.seconds:.2f}s, peak {self.peak_rss_mb:.0f} MB\n"
                f"--- stdout ---\n{self.out[-2000:]}\n--- stderr ---\n{self.err[-2000:]}")


def _cap_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_ADDRESS_SPACE_CAP, _ADDRESS_SPACE_CAP))


def run_bounded(
    podium: Podium,
    *args: str | Path,
    env: dict[str, str] | None = None,
    timeout_s: float = TIME_LIMIT_S,
) -> Measured:
    """``podium ARGS`` in ``podium.cwd``; kill it after ``timeout_s`` (then ``code`` is None)."""
    merged = {**podium.env, **(env or {})}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(
            podium.argv(args), cwd=podium.cwd, env=merged, stdin=subprocess.DEVNULL,
            stdout=out, stderr=err, preexec_fn=_cap_address_space,
        )
        killed = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout_s:
                proc.kill()
                killed = True
                _pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        seconds = time.monotonic() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        return Measured(
            args=tuple(str(a) for a in args),
            code=None if killed else proc.returncode,
            out=out.read().decode("utf-8", "replace"),
            err=err.read().decode("utf-8", "replace"),
            seconds=seconds,
            peak_rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
        )
