"""The support bundle: what a support engineer needs to see, without a single secret.

A gzip tarball (0600) holding the last runs' folders (logs, events, preflight and verify
reports), the newest preflight and verify reports, the journal, versions, a summary of each
cluster's nodes and the inventory with every secret-bearing value masked. Run folders' secret
folders and key files are left out; the state folder's generated secrets and every secret the
inventory references are read only to mask any copy of them in what is packed.
"""

from __future__ import annotations

import io
import json
import logging
import os
import platform
import re
import sys
import tarfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from installer import __version__
from installer.engines.kube import Kube
from installer.errors import InstallerError
from installer.inventory import Inventory
from installer.inventory.types import SecretRef
from installer.redact import MASK, REDACTOR
from installer.state import StateDir

log = logging.getLogger("installer.support")
MAX_FILE_BYTES = 20 * 1024 * 1024
PACKAGES = ("pydantic", "typer", "kubernetes", "paramiko", "pulumi", "ansible-core", "httpx")
_SECRET_KEYS = re.compile(
    r"^(?P<lead>\s*-?\s*(?P<key>[A-Za-z0-9_]*(?:password|secret|private_key|ca_key|token)"
    r"[A-Za-z0-9_]*)\s*:\s*)(?P<value>\S.*)$",
    re.IGNORECASE,
)


def redact_inventory_text(text: str) -> str:
    """The inventory with the values of secret-bearing keys masked (references included)."""
    lines = []
    for line in text.splitlines():
        match = _SECRET_KEYS.match(line)
        lines.append(f"{match.group('lead')}{MASK}" if match else line)
    return REDACTOR.redact("\n".join(lines) + "\n")


def versions() -> dict[str, Any]:
    """The installer's, Python's and key packages' versions (servers are in the node summary)."""
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "installer": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": packages,
    }


def node_summary(kube: Kube) -> list[dict[str, Any]]:
    """Each node: readiness, platform and GPU labels, taints, allocatable resources."""
    keep = ("platform.", "nvidia.com/", "amd.com/", "node-role.", "kubernetes.io/hostname")
    return [
        {
            "name": n.name,
            "ready": n.ready,
            "unschedulable": n.unschedulable,
            "labels": {k: v for k, v in sorted(n.labels.items()) if k.startswith(keep)},
            "taints": [f"{t.key}={t.value}:{t.effect}" for t in n.taints],
            "allocatable": dict(sorted(n.allocatable.items())),
        }
        for n in kube.nodes()
    ]


@dataclass
class SupportBundle:
    """What goes into the tarball, gathered before writing."""

    members: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_text(self, name: str, text: str) -> None:
        """A text member (secrets registered with the redactor are masked)."""
        self.members[name] = REDACTOR.redact(text).encode("utf-8")

    def add_json(self, name: str, data: Any) -> None:
        """A JSON member."""
        self.add_text(name, json.dumps(data, indent=2, default=str) + "\n")

    def write(self, path: Path) -> Path:
        """Write the tarball (0600)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        now = time.time()
        with os.fdopen(fd, "wb") as handle, tarfile.open(fileobj=handle, mode="w:gz") as tar:
            members = {**self.members, "NOTES.txt": ("\n".join(self.notes) + "\n").encode()}
            for name, payload in sorted(members.items()):
                info = tarfile.TarInfo(f"support/{name}")
                info.size, info.mode, info.mtime = len(payload), 0o600, int(now)
                tar.addfile(info, io.BytesIO(payload))
        return path


_NEVER = ("secrets",)
_NEVER_SUFFIXES = (".key", ".pem", ".p12", ".pfx")


def _left_out(relative: Path) -> bool:
    """Files a bundle never carries: secret folders and key files of any run."""
    return (
        any(part in _NEVER for part in relative.parts)
        or relative.name.endswith(_NEVER_SUFFIXES)
        or relative.name in ("ssh_key", "ssh_key_data", "passwords")
    )


def mask_state_secrets(state: StateDir) -> int:
    """Register the state folder's generated secrets with the redactor, so that any copy of one
    in a log or an Ansible event is masked in the bundle. Returns how many were registered."""
    count = 0
    if state.secrets.is_dir():
        for item in state.secrets.iterdir():
            if item.is_file():
                REDACTOR.register(item.read_text(encoding="utf-8", errors="replace").strip())
                count += 1
    return count


def _secret_refs(value: object) -> list[SecretRef]:
    if isinstance(value, SecretRef):
        return [value]
    if isinstance(value, BaseModel):
        return [r for name in type(value).model_fields for r in _secret_refs(getattr(value, name))]
    if isinstance(value, list | tuple):
        return [r for item in value for r in _secret_refs(item)]
    if isinstance(value, dict):
        return [r for item in value.values() for r in _secret_refs(item)]
    return []


def mask_inventory_secrets(inventory: Inventory) -> tuple[int, list[str]]:
    """Read every secret the inventory references (`env:`, `file:`), so that the redactor masks
    any copy of one in a log or event. Returns how many were read and the references that could
    not be (they cannot be masked: named in NOTES.txt, never their values)."""
    read, unread = 0, []
    for ref in _secret_refs(inventory):
        try:
            ref.resolve()  # registers the value with REDACTOR
            read += 1
        except InstallerError:
            unread.append(ref.ref)
    return read, unread


def _latest(log_dir: Path, name: str) -> Path | None:
    if not log_dir.is_dir():
        return None
    found = [p for p in log_dir.glob(f"*/{name}") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def _recent_runs(log_dir: Path, count: int, exclude: Path | None) -> list[Path]:
    if not log_dir.is_dir():
        return []
    runs = [p for p in log_dir.iterdir() if p.is_dir() and p != exclude]
    return sorted(runs, key=lambda p: p.stat().st_mtime)[-count:]


def gather(
    inventory: Inventory | None,
    inventory_path: Path | None,
    log_dir: Path,
    *,
    runs: int = 5,
    current_run: Path | None = None,
) -> SupportBundle:
    """Collect everything; what cannot be read is noted in NOTES.txt, not fatal."""
    bundle = SupportBundle()
    unread: list[str] = []
    if inventory is not None:
        mask_state_secrets(StateDir(Path(inventory.site.state_dir)))
        _, unread = mask_inventory_secrets(inventory)
    bundle.notes.append(f"support bundle made {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}")
    for run in _recent_runs(log_dir, runs, current_run):
        for item in sorted(run.rglob("*")):
            if not item.is_file() or _left_out(item.relative_to(run)):
                continue
            if item.stat().st_size > MAX_FILE_BYTES:
                bundle.notes.append(f"left out {item} (larger than {MAX_FILE_BYTES} bytes)")
                continue
            name = f"runs/{run.name}/{item.relative_to(run)}"
            bundle.add_text(name, item.read_text(encoding="utf-8", errors="replace"))
    if unread:
        bundle.notes.append(
            "secrets not readable here, so not masked if a log holds them: " + ", ".join(unread)
        )
    # The newest reports, even when the runs that made them are older than the last `runs`.
    for kind in ("preflight", "verify"):
        report = _latest(log_dir, f"{kind}-report.json")
        if report is None:
            bundle.notes.append(f"no {kind} report under {log_dir}")
        else:
            bundle.add_text(f"reports/{kind}-report.json", report.read_text(encoding="utf-8"))
            bundle.notes.append(f"reports/{kind}-report.json is {report}")
    bundle.add_json("versions.json", versions())
    if inventory_path is not None and inventory_path.is_file():
        bundle.add_text("inventory.yml", redact_inventory_text(inventory_path.read_text("utf-8")))
    if inventory is None:
        bundle.notes.append("no inventory given: no journal, no cluster summary")
        return bundle
    journal = StateDir(Path(inventory.site.state_dir)).journal
    if journal.is_file():
        bundle.add_text("journal.json", journal.read_text(encoding="utf-8"))
    else:
        bundle.notes.append(f"no journal at {journal}")
    for cluster in inventory.clusters:
        try:
            kube = Kube.connect(Path(cluster.kubeconfig), cluster.context)
            try:
                git_version, _, _, _ = kube.version()
                bundle.add_json(
                    f"clusters/{cluster.name}/nodes.json",
                    {"server_version": git_version, "nodes": node_summary(kube)},
                )
            finally:
                kube.close()
        except InstallerError as exc:
            bundle.notes.append(f"cluster {cluster.name}: no node summary: {exc.message}")
    return bundle
