"""Secret redaction for everything the installer writes: logs, events, artifacts, reports.

Every secret the installer reads or generates is registered here the moment it exists; the log
filter and the writers of run artifacts replace registered values with `***`.
"""

from __future__ import annotations

import logging
import threading

MASK = "***"
_MIN_LEN = 4  # shorter values would mask ordinary words; such secrets are refused elsewhere


class Redactor:
    """A set of secret values and a function that masks them in text."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def register(self, value: str) -> None:
        """Remember a secret value (and its lines, for multi-line keys)."""
        with self._lock:
            for part in (value, *value.splitlines()):
                if len(part.strip()) >= _MIN_LEN:
                    self._values.add(part.strip())

    def redact(self, text: str) -> str:
        """`text` with every registered secret replaced by `***` (longest first)."""
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            if value in text:
                text = text.replace(value, MASK)
        return text


REDACTOR = Redactor()
"""The process-wide redactor."""


class RedactingFilter(logging.Filter):
    """A logging filter that masks registered secrets in the formatted message."""

    def __init__(self, redactor: Redactor = REDACTOR) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = self._redactor.redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_text:
            record.exc_text = self._redactor.redact(record.exc_text)
        return True
