"""Run folders: every command writes its log (and later events and artifacts) into one folder.

`<log dir>/<UTC time>-<command>-<pid>/installer.log`, secrets masked by the redactor.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from installer import __version__
from installer.errors import EnvironmentProblem
from installer.redact import RedactingFilter, RedactingFormatter

DEFAULT_LOG_DIR = Path(".installer") / "runs"
LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


@dataclass(frozen=True)
class Run:
    """One invocation's folder and log file."""

    command: str
    folder: Path

    @property
    def log_file(self) -> Path:
        """The run's log."""
        return self.folder / "installer.log"


def start_run(command: str, log_dir: Path, *, debug: bool = False) -> Run:
    """Create the run folder (0700) and route the `installer` loggers into its log file."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    # Absolute: engines hand paths inside the run folder to tools that run in other folders.
    folder = log_dir.absolute() / f"{stamp}-{command.replace(' ', '-')}-{os.getpid()}"
    try:
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise EnvironmentProblem(
            f"cannot create the run folder {folder}: {exc.strerror or exc}",
            remedy="pass --log-dir with a writable folder",
        ) from None
    run = Run(command=command, folder=folder)
    logger = logging.getLogger("installer")
    logger.setLevel(logging.DEBUG)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    file_handler = logging.FileHandler(run.log_file, encoding="utf-8")
    file_handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    file_handler.addFilter(RedactingFilter())
    logger.addHandler(file_handler)
    if debug:
        stream = logging.StreamHandler()
        stream.setFormatter(RedactingFormatter(LOG_FORMAT))
        stream.addFilter(RedactingFilter())
        logger.addHandler(stream)
    logger.propagate = False
    run.log_file.chmod(0o600)
    logger.info("installer %s: %s", __version__, command)
    return run
