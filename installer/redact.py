"""Secret redaction for everything the installer writes: logs, events, artifacts, reports.

Every secret the installer reads or generates is registered here the moment it exists; the log
filter and the writers of run artifacts replace registered values with `***`.
"""

from __future__ import annotations

import logging
import threading
import traceback

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
        # A formatter formats the traceback only after the filters ran, and caches it in
        # exc_text: format it here, masked, so whatever formatter the handler has writes that.
        if record.exc_info and not record.exc_text:
            record.exc_text = _PLAIN.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redactor.redact(record.stack_info)
        return True


_PLAIN = logging.Formatter()


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output (message, traceback, stack) has registered secrets masked:
    the last word, whatever a filter or a record's arguments missed."""

    def __init__(self, fmt: str | None = None, redactor: Redactor = REDACTOR) -> None:
        super().__init__(fmt)
        self._redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self._redactor.redact(super().format(record))


def redacted_traceback(exc: BaseException, redactor: Redactor = REDACTOR) -> str:
    """`exc`'s traceback as Python prints it, with registered secrets masked."""
    return redactor.redact("".join(traceback.format_exception(exc)))
