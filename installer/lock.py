"""The site lock: one bootstrap (or destroy) per site at a time.

An advisory `flock` on `<state_dir>/site.lock`; the kernel releases it when the holder dies, so
a crashed run never leaves a stale lock. The file names the holder for the refusal message.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from installer.errors import EnvironmentProblem


@contextmanager
def site_lock(state_dir: Path, command: str) -> Iterator[None]:
    """Hold the site lock for the duration of the block, or refuse naming the holder."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_dir / "site.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise EnvironmentProblem(
                f"another run holds the site lock {path}: {holder}",
                remedy="wait for it to finish; the lock is released when that process exits",
            ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "user": getpass.getuser(),
            "command": command,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return "holder unknown"
    if not info:
        return "holder unknown"
    return (
        f"'{info.get('command')}' pid {info.get('pid')} on {info.get('host')}"
        f" by {info.get('user')} since {info.get('since')}"
    )
