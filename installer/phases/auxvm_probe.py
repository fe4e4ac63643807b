"""The hub's drift probe: a converged VM is recognised in one SSH round trip, without the play.

A run of `playbooks/aux-vm.yml` ends by naming what its roles manage (the `hub_probe_spec` fact:
each role's `hub_<role>_probe` in its defaults): folders hashed whole, files, folders whose
content is data, accounts, packages, the supervised programs and the services' TLS endpoints.
After a successful run the installer reads all of that on the VM (`PROBE_PROGRAM`, one SSH
command) and records it in the state folder (`auxvm/probe.json`), with a digest of everything
the play was given (`inputs_digest`: its variables, the content of every controller-side file it
copies, the playbook and templates, the pinned host).

The next run computes the same digest. When it matches the record and the probe reads the VM as
recorded, nothing the play manages can have drifted and the play is skipped: the phase's no-op
costs one SSH command instead of about a hundred tasks. Anything else (other inputs, a file
edited or removed, a program stopped, a package removed, an endpoint answering otherwise, a
record missing or unreadable) runs the play as before, and `plan` then reports exactly what the
check-mode play would change. The record is written only after a play succeeded. A play that
failed or was killed leaves the last record in place: it describes the VM as it was converged,
and the next probe compares the VM as it is with that, so whatever the stopped play changed in
what the probe reads is drift (a service it left stopped, a half-written file, an endpoint that
does not answer) and the play runs again. `destroy --purge` removes the record.

What the probe does not read: the content of the services' data (images, charts, wheels; the
`airgap_load` phase and `verify` look at those), DevPI users' passwords (the hub login is
checked by `verify`), free space and foreign programs on the hub's ports (a running hub holds
its ports; preflight measures space).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from installer import __version__
from installer.engines import ssh
from installer.engines.ssh import SshTarget
from installer.errors import InstallerError

log = logging.getLogger("installer.phases.auxvm")

RECORD_VERSION = 1

# Runs on the VM as root: the program is an argument of python3, the spec comes on stdin.
# Standard library only; prints one JSON document.
PROBE_PROGRAM = r"""
import grp, hashlib, json, os, pwd, ssl, stat, subprocess, sys, time, urllib.error, urllib.request

spec = json.load(sys.stdin)
items = {}


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def entry(path, content):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    kind = ("dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
            else "link" if stat.S_ISLNK(st.st_mode) else "other")
    out = {"type": kind, "mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid,
           "gid": st.st_gid}
    if kind == "link":
        out["target"] = os.readlink(path)
    elif kind == "file" and content:
        out["sha256"] = sha(path)
    return out


def tree(root):
    top = entry(root, False)
    if top is None or top["type"] != "dir":
        return top
    found = {}
    for where, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = os.path.join(where, name)
            found[os.path.relpath(path, root)] = entry(path, True)
    text = json.dumps(found, sort_keys=True).encode()
    return {**top, "entries": len(found), "sha256": hashlib.sha256(text).hexdigest()}


for path in spec.get("trees", []):
    items["tree:" + path] = tree(path)
for path in spec.get("files", []):
    items["file:" + path] = entry(path, True)
for path in spec.get("dirs", []):
    items["dir:" + path] = entry(path, False)
for path in spec.get("exists", []):
    items["exists:" + path] = os.path.exists(path)
for name in spec.get("users", []):
    try:
        u = pwd.getpwnam(name)
        items["user:" + name] = [u.pw_uid, u.pw_gid, u.pw_dir, u.pw_shell]
    except KeyError:
        items["user:" + name] = None
for name in spec.get("groups", []):
    try:
        items["group:" + name] = grp.getgrnam(name).gr_gid
    except KeyError:
        items["group:" + name] = None
packages = spec.get("packages", [])
if packages:
    fmt = "${Package}\t${Version}\t${db:Status-Abbrev}\n"
    proc = subprocess.run(["dpkg-query", "-W", "-f", fmt, *packages], capture_output=True,
                          text=True, check=False)
    seen = {}
    for line in proc.stdout.splitlines():
        name, version, status = (line.split("\t") + ["", ""])[:3]
        seen[name] = [version, status.strip()]
    for name in packages:
        items["package:" + name] = seen.get(name)


def programs():
    names = spec.get("programs", [])
    if spec.get("supervisor") == "systemd":
        units = ["onprem-hub-%s.service" % n for n in names]
        proc = subprocess.run(
            ["systemctl", "show", "--property=Id,ActiveState,SubState,UnitFileState", *units],
            capture_output=True, text=True, check=False)
        states, unit = {}, {}
        for line in proc.stdout.splitlines() + [""]:
            if not line.strip():
                if unit.get("Id"):
                    states[unit["Id"]] = [unit.get("ActiveState"), unit.get("SubState"),
                                          unit.get("UnitFileState")]
                unit = {}
                continue
            key, _, value = line.partition("=")
            unit[key] = value
        return {n: states.get("onprem-hub-%s.service" % n) for n in names}
    proc = subprocess.run([*spec.get("ctl", []), "status"], capture_output=True, text=True,
                          check=False)
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            states[parts[0]] = parts[1]
    return {n: states.get("onprem-hub-" + n) for n in names}


# A program (re)started a moment ago is still starting: wait for it to settle, a few seconds.
deadline = time.monotonic() + 10
while True:
    running = programs()
    unsettled = [s for s in running.values()
                 if s in ("STARTING",) or (isinstance(s, list) and s[0] in ("activating",
                                                                            "reloading"))]
    if not unsettled or time.monotonic() > deadline:
        break
    time.sleep(0.5)
for name, state in running.items():
    items["program:" + name] = state

for check in spec.get("urls", []):
    try:
        context = ssl.create_default_context(cafile=check["ca"])
        with urllib.request.urlopen(check["url"], timeout=10, context=context) as reply:
            answer = reply.status
    except urllib.error.HTTPError as exc:
        answer = exc.code
    except Exception as exc:
        answer = "error: " + type(exc).__name__
    items["url:" + check["url"]] = answer

json.dump({"items": items}, sys.stdout, sort_keys=True)
"""


@dataclass(frozen=True)
class ProbeSpec:
    """What the probe reads on the VM: the union of the roles' fragments of one play run."""

    supervisor: str
    ctl: list[str]
    trees: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)
    exists: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    packages: list[str] = field(default_factory=list)
    programs: list[str] = field(default_factory=list)
    urls: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def from_fact(cls, fact: Any) -> ProbeSpec:
        """The spec from the play's `hub_probe_spec` fact; raises ValueError when malformed."""
        if not isinstance(fact, Mapping) or not isinstance(fact.get("fragments"), list):
            raise ValueError("hub_probe_spec: no fragments")
        lists: dict[str, list[Any]] = {
            k: []
            for k in ("trees", "files", "dirs", "exists", "users", "groups", "packages",
                      "programs", "urls")
        }  # fmt: skip
        lists["files"].extend(_strings(fact.get("files") or []))
        for fragment in fact["fragments"]:
            if not isinstance(fragment, Mapping):
                raise ValueError(f"hub_probe_spec: fragment {fragment!r} is not a mapping")
            for key, values in fragment.items():
                if key not in lists:
                    raise ValueError(f"hub_probe_spec: unknown key {key!r}")
                if key == "urls":
                    for url in values or []:
                        if not isinstance(url, Mapping) or set(url) != {"url", "ca"}:
                            raise ValueError(f"hub_probe_spec: url {url!r} needs url and ca")
                        lists["urls"].append({"url": str(url["url"]), "ca": str(url["ca"])})
                else:
                    lists[key].extend(_strings(values or []))
        unique = {k: list(dict.fromkeys(v)) if k != "urls" else v for k, v in lists.items()}
        return cls(
            supervisor=str(fact.get("supervisor") or ""),
            ctl=_strings(fact.get("ctl") or []),
            **unique,
        )

    def to_json(self) -> dict[str, Any]:
        """The spec as the probe program reads it (and as the record keeps it)."""
        return dict(self.__dict__)


def _strings(values: Iterable[Any]) -> list[str]:
    if isinstance(values, str | bytes) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"hub_probe_spec: {values!r} is not a list of strings")
    return list(values)


@dataclass(frozen=True)
class ProbeRecord:
    """What the VM looked like right after the last successful play, and what made it so."""

    inputs: str
    spec: dict[str, Any]
    items: dict[str, Any]
    recorded_at: str = ""

    def differences(self, items: Mapping[str, Any]) -> list[str]:
        """The items whose reading differs from the record (by key, sorted)."""
        keys = set(self.items) | set(items)
        return sorted(k for k in keys if self.items.get(k) != items.get(k))


def record_path(state_root: Path) -> Path:
    """Where the record lives in the state folder."""
    return state_root / "auxvm" / "probe.json"


def load_record(state_root: Path) -> ProbeRecord | None:
    """The record, or None when there is none or it cannot be read (then the play runs)."""
    path = record_path(state_root)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != RECORD_VERSION:
            return None
        return ProbeRecord(
            inputs=str(doc["inputs"]),
            spec=dict(doc["spec"]),
            items=dict(doc["items"]),
            recorded_at=str(doc.get("recorded_at") or ""),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("auxvm: drift probe record %s unreadable (%s); the play runs", path, exc)
        return None


def save_record(state_root: Path, record: ProbeRecord) -> None:
    """Write the record (0600, replaced atomically)."""
    path = record_path(state_root)
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    doc = {
        "version": RECORD_VERSION,
        "inputs": record.inputs,
        "recorded_at": record.recorded_at or datetime.now(UTC).isoformat(timespec="seconds"),
        "spec": record.spec,
        "items": record.items,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(doc, handle, indent=1, sort_keys=True)
    tmp.replace(path)


def forget(state_root: Path) -> None:
    """Remove the record: the next run plays in full."""
    record_path(state_root).unlink(missing_ok=True)


def read_vm(
    target: SshTarget, spec: Mapping[str, Any], *, become: bool, python: str = "/usr/bin/python3"
) -> dict[str, Any]:
    """Run the probe on the VM (one SSH command, as root through `sudo -n` unless the login is
    root); raises InstallerError when the VM cannot be reached, ValueError on a bad answer."""
    argv = [python, "-c", PROBE_PROGRAM]
    if become and target.user != "root":
        argv = ["sudo", "-n", "--", *argv]
    result = ssh.run_command(target, argv, stdin=json.dumps(dict(spec)).encode(), timeout_s=120)
    if result.rc != 0:
        raise ValueError(f"probe exited {result.rc}: {result.stderr.strip()[-500:]}")
    doc = json.loads(result.stdout)
    items = doc.get("items") if isinstance(doc, dict) else None
    if not isinstance(items, dict):
        raise ValueError("probe printed no items")
    return items


def tree_digest(root: Path, into: Any) -> None:
    """Feed every file of `root` (relative name and content, sorted) into the hash `into`.

    Python's bytecode caches are left out: they are made from the sources beside them (which
    are in) whenever Python imports one, as Ansible does with a role's filter plugins; counted,
    the first import would change the digest with nothing changed."""
    if root.is_file():
        into.update(b"file\0")
        _file_into(root, into)
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and not _bytecode(path.relative_to(root)):
            into.update(str(path.relative_to(root)).encode() + b"\0")
            _file_into(path, into)


def _bytecode(relative: Path) -> bool:
    return "__pycache__" in relative.parts or relative.suffix == ".pyc"


def _file_into(path: Path, into: Any) -> None:
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            into.update(block)
    into.update(b"\0")


def inputs_digest(
    extra_vars: Mapping[str, Any],
    host: Mapping[str, Any],
    local_files: Mapping[str, Path],
    play_roots: Iterable[Path],
) -> str:
    """A digest of everything that decides what the play does: its variables, the pinned host,
    the content of each controller-side file or folder it copies from (`local_files`, by the
    variable naming it), the playbook and its templates (`play_roots`), and the installer's
    version.

    Where a controller-side file or folder lives is not part of it, only what it holds: the same
    ChartMuseum binary or wheelhouse found elsewhere (a bundle's work folder, the lab's cache, a
    checkout in another folder) leaves the VM as it is, so it must not make the play run."""
    h = hashlib.sha256()
    shown = {k: ("<controller file>" if k in local_files else v) for k, v in extra_vars.items()}
    h.update(json.dumps({"vars": shown, "host": host, "installer": __version__},
                        sort_keys=True, default=str).encode())  # fmt: skip
    named = [(f"var:{k}", path) for k, path in sorted(local_files.items())]
    named += [(f"play:{root.name}", root) for root in sorted(play_roots, key=lambda r: r.name)]
    for label, path in named:
        h.update(b"\0path\0" + label.encode() + b"\0")
        if path.exists():
            tree_digest(path, h)
    return "sha256:" + h.hexdigest()


def probe_error(exc: Exception) -> str:
    """One line for the log about a probe that could not read the VM."""
    if isinstance(exc, InstallerError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
