"""Progress reporting seam: the library reports phases and bytes, the CLI draws the bars."""

from __future__ import annotations

import threading
from typing import Protocol


class Progress(Protocol):
    """Receives one call per phase and one per chunk of bytes moved (from any thread)."""

    def phase(self, name: str, total: int | None) -> None:
        """A new phase begins; `total` bytes are expected (None when unknown)."""

    def advance(self, n: int) -> None:
        """`n` more bytes were moved in the current phase."""


class Silent:
    """Progress that only counts (for tests and `--output json`)."""

    def __init__(self) -> None:
        self.phases: list[str] = []
        self.moved = 0
        self._lock = threading.Lock()

    def phase(self, name: str, total: int | None) -> None:
        """Remember the phase name."""
        self.phases.append(name)

    def advance(self, n: int) -> None:
        """Count bytes."""
        with self._lock:
            self.moved += n
