"""What a killed Pulumi run leaves outside its state: running providers, Helm release records,
a file backend's torn attribute files.

The Pulumi CLI starts each provider (`pulumi-resource-<name>`, and `python -m pulumi.dynamic` for
dynamic resources) in a process group of its own and hands it the engine's address as its last
argument. When the CLI is killed (SIGKILL, out of memory), a signal to the run's process group
misses the providers: they are re-parented and wait for their engine for good. A provider is
an orphan when its parent is no Pulumi CLI any more and nothing answers on its engine's address;
`reap()` ends such providers of this user, and says which.

A Helm release whose create was under way when the run died is in the cluster (its record
`pending-install`, or `deployed` when the provider finished on its own) but not in the stack's
state, so the next create fails with "cannot re-use a name that is still in use". Its records are
removed (`forget_helm_releases()`); the next create installs it again and adopts the objects the
interrupted install made (they carry the release's name).

The file backend keeps each checkpoint's metadata in a `<file>.attrs` file beside it, written in
place (the checkpoint itself is renamed into place): a kill during that write leaves it empty,
and every later command fails with "failed to load checkpoint: EOF". The backend reads a missing
`.attrs` as no metadata, so a torn one is removed (`repair_file_backend()`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("installer.engines.pulumi")

_ENGINE_ADDR = re.compile(r"^(127\.0\.0\.1|localhost|\[::1\]):(\d+)$")


@dataclass(frozen=True)
class Provider:
    """A provider process as /proc shows it."""

    pid: int
    ppid: int
    argv: tuple[str, ...]

    @property
    def engine(self) -> tuple[str, int] | None:
        """The engine address the provider was started with (a loopback host:port)."""
        for arg in reversed(self.argv[1:]):
            m = _ENGINE_ADDR.match(arg)
            if m:
                return m.group(1).strip("[]"), int(m.group(2))
        return None


def is_provider(argv: tuple[str, ...]) -> bool:
    """A Pulumi provider's command line."""
    if not argv:
        return False
    if Path(argv[0]).name.startswith("pulumi-resource-"):
        return True
    return "-m" in argv and "pulumi.dynamic" in argv


def _argv(pid: int, proc: Path) -> tuple[str, ...]:
    raw = (proc / str(pid) / "cmdline").read_bytes()
    return tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)


def _ppid_uid(pid: int, proc: Path) -> tuple[int, int]:
    ppid = uid = -1
    for line in (proc / str(pid) / "status").read_text().splitlines():
        if line.startswith("PPid:"):
            ppid = int(line.split()[1])
        elif line.startswith("Uid:"):
            uid = int(line.split()[1])
    return ppid, uid


def providers(proc: Path = Path("/proc")) -> list[Provider]:
    """This user's running Pulumi providers."""
    found = []
    me = os.getuid()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            argv = _argv(pid, proc)
            if not is_provider(argv):
                continue
            ppid, uid = _ppid_uid(pid, proc)
        except (OSError, ValueError):
            continue  # gone meanwhile, or not readable
        if uid == me:
            found.append(Provider(pid, ppid, argv))
    return found


def _parent_is_cli(ppid: int, proc: Path) -> bool:
    try:
        argv = _argv(ppid, proc)
    except OSError:
        return False
    return bool(argv) and Path(argv[0]).name == "pulumi"


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def orphans(proc: Path = Path("/proc")) -> list[Provider]:
    """Providers whose CLI is gone: no Pulumi parent and a dead engine address."""
    found = []
    for p in providers(proc):
        engine = p.engine
        if engine is None or _parent_is_cli(p.ppid, proc):
            continue
        if not _answers(*engine):
            found.append(p)
    return found


def reap(proc: Path = Path("/proc"), grace_s: float = 3.0) -> list[str]:
    """End orphaned providers (TERM, then KILL after `grace_s`); what was ended."""
    ended = []
    found = orphans(proc)
    for p in found:
        try:
            os.kill(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        ended.append(f"orphaned provider {Path(p.argv[0]).name} (pid {p.pid})")
        log.warning("ended orphaned Pulumi provider pid %d: %s", p.pid, " ".join(p.argv)[:200])
    deadline = time.monotonic() + grace_s
    for p in found:
        while time.monotonic() < deadline and _same(p, proc):
            time.sleep(0.1)
        if _same(p, proc):  # never a process that took the pid over meanwhile
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
    return ended


def _same(p: Provider, proc: Path) -> bool:
    try:
        return _argv(p.pid, proc) == p.argv
    except OSError:
        return False


HELM_RELEASE = "kubernetes:helm.sh/v3:Release"


def pending_helm_creates(pending: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(namespace, release name) of every Helm release whose create was left pending."""
    found = []
    for op in pending:
        resource = op.get("resource") or {}
        if op.get("type") != "creating" or resource.get("type") != HELM_RELEASE:
            continue
        inputs = resource.get("inputs") or {}
        name = inputs.get("name")
        if isinstance(name, str) and name:
            namespace = inputs.get("namespace")
            found.append(
                (namespace if isinstance(namespace, str) and namespace else "default", name)
            )
    return found


def forget_helm_releases(
    kubeconfig: str, context: str | None, releases: list[tuple[str, str]]
) -> list[str]:
    """Remove the Helm records (`sh.helm.release.v1.*` secrets) of `releases`; what went."""
    if not releases:
        return []
    from kubernetes import client

    from installer.engines.kube import api_client

    api = client.CoreV1Api(api_client(kubeconfig, context))
    done = []
    for namespace, name in releases:
        records = api.list_namespaced_secret(
            namespace, label_selector=f"owner=helm,name={name}", _request_timeout=30
        ).items
        for secret in records:
            api.delete_namespaced_secret(secret.metadata.name, namespace, _request_timeout=30)
        if records:
            statuses = sorted({(s.metadata.labels or {}).get("status", "?") for s in records})
            what = (
                f"Helm release {namespace}/{name} of an interrupted create ({', '.join(statuses)})"
            )
            log.warning("removed the records of %s", what)
            done.append(what)
    return done


def repair_file_backend(root: Path) -> list[str]:
    """Remove torn (empty or unparseable) `.attrs` files under `<root>/.pulumi`; what went."""
    done = []
    for attrs in sorted((root / ".pulumi").glob("**/*.attrs")):
        try:
            text = attrs.read_bytes()
            if text.strip():
                json.loads(text)
                continue
        except ValueError:
            pass
        except OSError:
            continue
        attrs.unlink(missing_ok=True)
        what = f"torn backend metadata {attrs.relative_to(root)}"
        log.warning("removed %s (left by an interrupted run)", what)
        done.append(what)
    return done
