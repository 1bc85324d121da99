"""Shared tools of the observability integration tests: external binaries, ports, HTTP polling.

``promtool`` (Debian package ``prometheus``) and ``prometheus-alertmanager``
(Debian package ``prometheus-alertmanager``) are real programs the tests run.
When one is missing a test skips with the install line, except under CI
(``CI`` set), where a missing binary is a failure: CI installs them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

INSTALL = {
    "promtool": "apt-get install -y prometheus",
    "prometheus-alertmanager": "apt-get install -y prometheus-alertmanager",
}


def require_tool(name: str) -> str:
    """The path of ``name``; skip (or fail, under CI) when it is not installed."""
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}")
                                  else None)
    if path is not None:
        return path
    why = f"{name} is not installed (fix: {INSTALL.get(name, 'install it')})"
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI must install it")
    pytest.skip(why)


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on an exposition; returns the finished process."""
    promtool = require_tool("promtool")
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30, check=False)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(cond: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll ``cond`` until it returns something truthy; fail the test after ``timeout`` s."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = cond()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s (last: {last!r})")


def get(url: str, timeout: float = 2.0) -> httpx.Response:
    return httpx.get(url, timeout=timeout)


def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> tuple[str, str]:
    """Terminate a process we started (by its handle) and collect its output."""
    if proc.poll() is None:
        proc.terminate()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=timeout)
    return out or "", err or ""
