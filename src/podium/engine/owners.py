"""Who owns a run: owner ids, and the same-host fast path for a dead owner.

An owner id is ``host:pid:mark``. A run's owner is dead when its lease expired
by the store's clock; on the same host a vanished pid says so sooner (a
``podium resume`` right after a crash need not wait out the lease). Hostnames
repeat across containers and pids are per namespace, so the pid is trusted
only when the owner was made under the same boot and pid namespace as this
process: ``mark`` starts with a fingerprint of both.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
from functools import cache

__all__ = ["host_fingerprint", "new_owner_id", "pid_gone"]


@cache
def host_fingerprint() -> str:
    """Six hex digits of this boot and pid namespace ("" when neither can be read)."""
    parts = []
    try:
        # In binary: a text file's "ascii" codec is a module import of its own (~0.3 ms
        # of a fresh process's first engine); bytes.decode has ASCII built in.
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            parts.append(f.read(64).decode("ascii", "replace").strip())
    except OSError:
        pass
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    if not parts:
        return ""
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:6]


def new_owner_id(name: str | None = None) -> str:
    """``name`` as given (``podium worker --name``), else ``host:pid:mark``."""
    if name:
        return name
    return f"{socket.gethostname()}:{os.getpid()}:{host_fingerprint()}{secrets.token_hex(3)}"


def pid_gone(owner: str) -> bool:
    """Whether ``owner`` is a process of this host, boot and pid namespace that is gone."""
    host, _, rest = owner.partition(":")
    pid_text, _, mark = rest.partition(":")
    fp = host_fingerprint()
    if host != socket.gethostname() or not pid_text.isdigit() or not fp \
            or not mark.startswith(fp) or len(mark) != len(fp) + 6:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
