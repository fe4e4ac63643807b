"""The check framework: checks with an id, a target and a severity, run in parallel with limits.

A `Check` is one question about one target (`vm`, `node/a100-1`, `cluster/lab`,
`service/registry`). Its function returns a `Finding`; the framework turns that into a
`CheckResult` whose status is `pass`, or the check's severity (`fail`, `warn`, `info`) when the
finding is a problem, or `skip` when the inventory skips the id (with its reason) or a check it
requires did not pass. Checks run in waves (a check runs once everything it requires has a
result), each wave in parallel, each check under its own time limit.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from installer.errors import InstallerError
from installer.redact import REDACTOR

log = logging.getLogger("installer.checks")

DEFAULT_TIMEOUT_S = 30.0
MAX_WORKERS = 32  # checks wait on the network, not the CPU


class Severity(StrEnum):
    """How much a problem found by a check matters."""

    FAIL = "fail"
    WARN = "warn"
    INFO = "info"


class Status(StrEnum):
    """How a check ended."""

    PASS = "pass"  # noqa: S105 - a status, not a password
    FAIL = "fail"
    WARN = "warn"
    INFO = "info"
    SKIP = "skip"


_RANK = {Severity.INFO: 0, Severity.WARN: 1, Severity.FAIL: 2}


@dataclass(frozen=True)
class Finding:
    """What a check function found: fine, a problem, or a fact worth stating (info)."""

    ok: bool
    message: str
    remedy: str = ""
    severity: Severity | None = None
    """For a problem: lower the check's severity (a small clock skew is a warning, a large one
    fails); never raises it. For `ok` findings: `INFO` reports a fact instead of a pass."""
    details: Mapping[str, Any] = field(default_factory=dict)


def passed(message: str, **details: Any) -> Finding:
    """The check found nothing wrong."""
    return Finding(True, message, details=details)


def problem(
    message: str, remedy: str = "", *, severity: Severity | None = None, **details: Any
) -> Finding:
    """The check found a problem; it is reported at the check's severity (or lower)."""
    return Finding(False, message, remedy, severity, details)


def note(message: str, **details: Any) -> Finding:
    """A fact the operator should see that is neither a pass nor a problem (status `info`)."""
    return Finding(True, message, severity=Severity.INFO, details=details)


@dataclass(frozen=True)
class Check:
    """One question about one target."""

    id: str
    """Stable id, dotted: `vm.ssh`, `kube.nodes.ready`. Skips and docs name it."""
    title: str
    target: str
    run: Callable[[], Finding]
    severity: Severity = Severity.FAIL
    requires: tuple[str, ...] = ()
    """Ids of checks that must have passed (every target of them) before this one runs."""
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class CheckResult:
    """How one check ended."""

    id: str
    title: str
    target: str
    severity: Severity
    status: Status
    message: str
    remedy: str = ""
    duration_s: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (secrets masked)."""
        data: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "target": self.target,
            "severity": str(self.severity),
            "status": str(self.status),
            "message": REDACTOR.redact(self.message),
            "remedy": REDACTOR.redact(self.remedy),
            "duration_s": round(self.duration_s, 3),
        }
        if self.details:
            data["details"] = dict(self.details)
        return data


@dataclass
class Report:
    """The results of one run of checks (preflight or verify)."""

    kind: str
    results: list[CheckResult]
    started: datetime
    finished: datetime
    strict: bool = False

    def count(self, status: Status) -> int:
        """How many results have `status`."""
        return sum(1 for r in self.results if r.status is status)

    @property
    def ok(self) -> bool:
        """False when any check failed (or, strict, warned)."""
        bad = {Status.FAIL, Status.WARN} if self.strict else {Status.FAIL}
        return not any(r.status in bad for r in self.results)

    def summary(self) -> dict[str, int]:
        """Counts by status."""
        return {str(s): self.count(s) for s in Status}

    def write(self, folder: Path) -> Path:
        """Keep the report as `<folder>/<kind>-report.json` (0600), where support bundles look."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.kind}-report.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.as_dict(), handle, indent=2)
        return path

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: what `--output json` prints and what the run folder keeps."""
        return {
            "ok": self.ok,
            "kind": self.kind,
            "strict": self.strict,
            "started": self.started.isoformat(),
            "finished": self.finished.isoformat(),
            "summary": self.summary(),
            "results": [r.as_dict() for r in self.results],
        }


def _skip_reason(check_id: str, skips: Mapping[str, str]) -> str | None:
    for pattern, reason in skips.items():
        if pattern == check_id or fnmatch.fnmatchcase(check_id, pattern):
            return reason
    return None


def _result(check: Check, finding: Finding, duration: float) -> CheckResult:
    if finding.ok:
        status = Status.INFO if finding.severity is Severity.INFO else Status.PASS
    else:
        severity = check.severity
        if finding.severity is not None and _RANK[finding.severity] < _RANK[severity]:
            severity = finding.severity
        status = Status(str(severity))
    return CheckResult(
        id=check.id,
        title=check.title,
        target=check.target,
        severity=check.severity,
        status=status,
        message=finding.message,
        remedy=finding.remedy,
        duration_s=duration,
        details=finding.details,
    )


def _guarded(check: Check) -> Finding:
    """Run a check function; installer errors become problems, surprises are logged."""
    try:
        return check.run()
    except InstallerError as exc:
        return problem(exc.message, exc.remedy or "")
    except Exception as exc:  # a bug in one check must not hide the other checks' results
        log.exception("check %s on %s raised", check.id, check.target)
        return problem(
            f"the check itself failed: {type(exc).__name__}: {exc}",
            "re-run with --debug; the run log has the traceback",
        )


def _run_wave(pool: ThreadPoolExecutor, wave: Sequence[Check]) -> list[CheckResult]:
    """Run `wave` in parallel; each check's time limit counts from its own start."""
    begun: dict[int, float] = {}

    def call(index: int, check: Check) -> tuple[Finding, float]:
        begun[index] = time.monotonic()
        finding = _guarded(check)
        return finding, time.monotonic() - begun[index]

    futures = {i: pool.submit(call, i, c) for i, c in enumerate(wave)}
    ended: dict[int, tuple[Finding, float]] = {}
    while len(ended) < len(wave):
        now = time.monotonic()
        for index, future in futures.items():
            check = wave[index]
            if index in ended:
                continue
            if future.done():
                ended[index] = future.result()
            elif index in begun and now - begun[index] > check.timeout_s:
                future.cancel()
                log.warning("check %s on %s timed out", check.id, check.target)
                ended[index] = (
                    problem(
                        f"no answer within {check.timeout_s:g}s",
                        "check that the target is reachable; the run log shows where it stopped",
                    ),
                    now - begun[index],
                )
        running = [f for i, f in futures.items() if i not in ended]
        if running:
            wait(running, timeout=0.05, return_when=FIRST_COMPLETED)
    return [_result(wave[i], *ended[i]) for i in range(len(wave))]


def run_checks(
    kind: str,
    checks: Sequence[Check],
    *,
    skip: Mapping[str, str] | None = None,
    strict: bool = False,
    known_ids: Sequence[str] = (),
) -> Report:
    """Run `checks` and report. `skip` maps check ids (or glob patterns) to the reason shown.

    Results keep the order of `checks`. A check whose required ids did not all pass is reported
    as `skip` naming them: what it needs already failed (or was skipped) and says so itself.
    """
    skip = dict(skip or {})
    started = datetime.now(UTC)
    done: dict[int, CheckResult] = {}
    pending: list[tuple[int, Check]] = []
    for index, check in enumerate(checks):
        reason = _skip_reason(check.id, skip)
        if reason is not None:
            done[index] = CheckResult(
                check.id,
                check.title,
                check.target,
                check.severity,
                Status.SKIP,
                f"skipped by the inventory: {reason}",
            )
        else:
            pending.append((index, check))
    ids = {c.id for c in checks} | set(known_ids)
    pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix=f"check-{kind}")
    try:
        while pending:
            status_by_id: dict[str, list[Status]] = {}
            for result in done.values():
                status_by_id.setdefault(result.id, []).append(result.status)
            wave: list[tuple[int, Check]] = []
            blocked: list[tuple[int, Check]] = []
            waiting: list[tuple[int, Check]] = []
            for index, check in pending:
                pending_ids = {c.id for _, c in pending if c is not check}
                if any(req in pending_ids for req in check.requires):
                    waiting.append((index, check))
                elif all(
                    s in (Status.PASS, Status.INFO, Status.WARN)
                    for req in check.requires
                    for s in status_by_id.get(req, [])
                ):
                    wave.append((index, check))
                else:
                    blocked.append((index, check))
            for index, check in blocked:
                failed = [
                    req
                    for req in check.requires
                    if any(s in (Status.FAIL, Status.SKIP) for s in status_by_id.get(req, []))
                ]
                done[index] = CheckResult(
                    check.id,
                    check.title,
                    check.target,
                    check.severity,
                    Status.SKIP,
                    f"not run: it needs {', '.join(failed)}, which did not pass",
                )
            if not wave and not blocked:  # a cycle in `requires`: a bug in the check lists
                raise ValueError(f"checks require each other: {[c.id for _, c in waiting]}")
            for (index, _), result in zip(wave, _run_wave(pool, [c for _, c in wave]), strict=True):
                done[index] = result
            pending = waiting
    finally:
        # Threads of timed-out checks cannot be killed; they are left to finish on their own.
        pool.shutdown(wait=False, cancel_futures=True)
    results = [done[i] for i in range(len(checks))]
    for pattern in sorted(skip):
        if not any(fnmatch.fnmatchcase(i, pattern) for i in ids):
            results.append(
                CheckResult(
                    "checks.skip_unknown",
                    "skip_checks names known checks",
                    "inventory",
                    Severity.WARN,
                    Status.WARN,
                    f"skip_checks names {pattern!r}, which is not the id of any check",
                    "correct the id (docs/checks.md lists them) or remove the entry",
                )
            )
    return Report(kind, results, started, datetime.now(UTC), strict)
