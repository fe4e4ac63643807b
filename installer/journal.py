"""The run journal: which phase finished with which inputs, so a failed bootstrap resumes.

Kept at `<state_dir>/journal.json`, written atomically. It holds hashes of the inputs, never the
inputs themselves, and messages pass through the redactor: the journal never holds a secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from installer.errors import BadInputError
from installer.redact import REDACTOR

PhaseState = Literal["running", "ok", "failed", "skipped"]


def inputs_hash(inputs: Any) -> str:
    """A stable sha256 of a phase's JSON-able inputs."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PhaseEntry(BaseModel):
    """The last outcome of one phase."""

    state: PhaseState
    inputs_hash: str
    started: str
    finished: str | None = None
    changes: int = 0
    message: str = ""
    run: str = Field(description="Run folder of the attempt that wrote this entry.")


class JournalData(BaseModel):
    """The journal file's content."""

    version: Literal[1] = 1
    bootstrap: Literal["none", "running", "ok", "failed"] = "none"
    """How the last bootstrap ended; `running` after an interruption."""
    phases: dict[str, PhaseEntry] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)
    """Versions of the installer (and, once deployed, the platform) of the last bootstrap."""
    clusters: dict[str, dict[str, PhaseEntry]] = Field(default_factory=dict)
    """The cluster phases' outcomes per cluster (cluster -> phase -> entry): a re-run resumes
    each cluster where it stopped. `phases` holds each cluster phase's outcome over all
    clusters."""


class Journal:
    """Read and update the journal file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = self._load()

    def _load(self) -> JournalData:
        if not self.path.exists():
            return JournalData()
        try:
            return JournalData.model_validate_json(self.path.read_text(encoding="utf-8"))
        except (OSError, ValidationError, ValueError) as exc:
            raise BadInputError(
                f"journal {self.path} is unreadable: {str(exc).splitlines()[0]}",
                remedy="move the file aside to start the bootstrap afresh",
            ) from None

    def save(self) -> None:
        """Write atomically (temp file, fsync, rename)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".journal.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(REDACTOR.redact(self.data.model_dump_json(indent=2)))
                handle.flush()
                os.fsync(handle.fileno())
            Path(tmp).replace(self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)

    @property
    def resuming(self) -> bool:
        """True when the last bootstrap did not finish (failed or interrupted)."""
        return self.data.bootstrap in ("running", "failed")

    def finished_with(self, phase: str, digest: str) -> bool:
        """True when `phase` last finished ok with inputs hashing to `digest`."""
        entry = self.data.phases.get(phase)
        return entry is not None and entry.state == "ok" and entry.inputs_hash == digest

    def begin_bootstrap(self) -> None:
        """Mark a bootstrap as under way (an interruption leaves it so)."""
        self.data.bootstrap = "running"
        self.save()

    def end_bootstrap(self, ok: bool) -> None:
        """Record how the bootstrap ended."""
        self.data.bootstrap = "ok" if ok else "failed"
        self.save()

    def cluster_finished_with(self, cluster: str, phase: str, digest: str) -> bool:
        """True when `phase` last finished ok on `cluster` with inputs hashing to `digest`."""
        entry = self.data.clusters.get(cluster, {}).get(phase)
        return entry is not None and entry.state == "ok" and entry.inputs_hash == digest

    def cluster_started(self, cluster: str, phase: str, digest: str, run: str) -> None:
        """Record that `phase` began on `cluster`."""
        self.data.clusters.setdefault(cluster, {})[phase] = _started(digest, run)
        self.save()

    def cluster_finished(
        self, cluster: str, phase: str, state: PhaseState, changes: int, message: str
    ) -> None:
        """Record the outcome of `phase` on `cluster`."""
        entries = self.data.clusters[cluster]
        entries[phase] = _finished(entries[phase], state, changes, message)
        self.save()

    def forget_cluster(self, cluster: str, phases: list[str]) -> None:
        """`destroy --cluster`: the cluster's entries of `phases` go; each phase's entry over
        all clusters is what the other clusters' entries say (none left: it goes too)."""
        mine = self.data.clusters.get(cluster, {})
        for phase in phases:
            mine.pop(phase, None)
            rest = [c[phase] for c in self.data.clusters.values() if phase in c]
            if not rest:
                self.data.phases.pop(phase, None)
            elif phase in self.data.phases:
                state: PhaseState = "ok" if all(e.state == "ok" for e in rest) else "failed"
                self.data.phases[phase] = self.data.phases[phase].model_copy(
                    update={"state": state}
                )
        if not mine:
            self.data.clusters.pop(cluster, None)
        if "platform" in phases:
            self.data.versions.pop(f"platform/{cluster}", None)  # no platform runs there now
        self.save()

    def phase_started(self, phase: str, digest: str, run: str) -> None:
        """Record that `phase` began (left `running` if the process dies)."""
        self.data.phases[phase] = _started(digest, run)
        self.save()

    def phase_finished(self, phase: str, state: PhaseState, changes: int, message: str) -> None:
        """Record the outcome of `phase`."""
        self.data.phases[phase] = _finished(self.data.phases[phase], state, changes, message)
        self.save()


def _started(digest: str, run: str) -> PhaseEntry:
    """A phase's entry as it begins (left `running` if the process dies)."""
    return PhaseEntry(state="running", inputs_hash=digest, started=_now(), run=run)


def _finished(entry: PhaseEntry, state: PhaseState, changes: int, message: str) -> PhaseEntry:
    """`entry` with the phase's outcome (the message redacted and bounded)."""
    return entry.model_copy(
        update={
            "state": state,
            "finished": _now(),
            "changes": changes,
            "message": REDACTOR.redact(message)[:2000],
        }
    )
