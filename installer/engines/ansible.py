"""The Ansible engine: ansible-runner over a private data dir built from typed inputs.

- The private data dir lives in the run folder (`<run>/ansible/`); its artifacts (events, stdout)
  stay there for the support bundle.
- Hosts are reached with a pinned host key only: the engine writes a known_hosts file and passes
  `StrictHostKeyChecking=yes` with it, so an unknown or changed key ends the run (unreachable).
- Secrets never travel as plain extra vars: roles read them from 0600 files by path (a `file`
  lookup under `no_log`). Key material the engine must write (an SSH key given by `env:`) goes
  into a 0600 file that is removed when the run ends.
- A failed play is a result (`PlaybookResult.status == "failed"`), not an exception; only a run
  that could not start raises.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import ansible_runner
from pydantic import SecretStr

from installer.engines.ssh import register_key_text
from installer.errors import EnvironmentProblem
from installer.redact import REDACTOR

log = logging.getLogger("installer.engines.ansible")

RunStatus = Literal["successful", "failed", "timeout", "canceled", "error"]
ProgressKind = Literal["play", "task", "ok", "changed", "failed", "unreachable", "skipped"]


@dataclass(frozen=True)
class AnsibleHost:
    """One managed host: where it is, how to log in, and the key it must present."""

    name: str
    address: str
    user: str
    known_hosts_line: str
    """`<address> <keytype> <base64>`: the only host key accepted."""
    port: int = 22
    private_key_file: Path | None = None
    private_key: SecretStr | None = None
    """Key text when the key is not a file (an `env:` reference); written 0600 for the run."""
    become: bool = True
    python: str = "/usr/bin/python3"
    vars: Mapping[str, Any] = field(default_factory=dict)
    jump: AnsibleHost | None = None
    """A host to reach this one through (`ssh -W`, as `ssh -J` would), its key pinned too."""


@dataclass(frozen=True)
class PlaybookRun:
    """What to run: a playbook against groups of hosts, with variables."""

    playbook: Path
    groups: Mapping[str, list[AnsibleHost]]
    run_dir: Path
    """The installer's run folder; the private data dir is `<run_dir>/ansible`."""
    extra_vars: Mapping[str, Any] = field(default_factory=dict)
    check: bool = False
    diff: bool = False
    timeout_s: int = 3600
    ident: str = "run"


@dataclass(frozen=True)
class HostStats:
    """Per-host counters from the play recap."""

    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0


@dataclass(frozen=True)
class TaskOutcome:
    """A task that changed (or would change, in check mode) or failed on one host."""

    host: str
    task: str
    role: str
    message: str = ""


@dataclass(frozen=True)
class Progress:
    """A streamed step of the run, reduced to what a progress display needs."""

    kind: ProgressKind
    name: str
    host: str = ""
    role: str = ""
    message: str = ""


class FailureReason(StrEnum):
    """Why a play stopped, as the phases tell it to the operator."""

    HOST_KEY = "host-key"
    """The host presented another key than the pinned one (or none is pinned)."""
    LOGIN = "login"
    """The SSH login was refused (key not authorized for the user)."""
    UNREACHABLE = "unreachable"
    """No SSH connection: host down, wrong address or port, network."""
    SUDO = "sudo"
    """Connected, but the login user cannot become root without a password."""
    TASK = "task"
    """A task failed; its message may end in `remedy: ...`."""
    RUN = "run"
    """The run ended without a failed task (timeout, cancelled, runner error)."""


_NO_SUDO = ("password is required", "missing sudo password", "not in the sudoers", "incorrect sudo")


@dataclass(frozen=True)
class PlaybookFailure:
    """The first thing that stopped a play, classified (`PlaybookResult.failure`)."""

    reason: FailureReason
    host: str
    task: str
    """The task's name, or `connect` / `(play)` where no task was running."""
    message: str
    """What Ansible said (for a host key mismatch: which key the host presented)."""
    remedy: str | None = None
    """For a failed task: the text after `remedy:` in its message."""


@dataclass
class PlaybookResult:
    """How a playbook run ended."""

    status: RunStatus
    rc: int
    hosts: dict[str, HostStats]
    changed: list[TaskOutcome]
    failures: list[TaskOutcome]
    unreachable: list[TaskOutcome]
    artifacts: Path
    check: bool = False
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per host, the facts its tasks set (`set_fact`), as the run's events carried them."""

    @property
    def ok(self) -> bool:
        """True when every host finished without a failure."""
        return self.status == "successful" and not self.failures and not self.unreachable

    @property
    def changed_count(self) -> int:
        """Tasks that changed something, over all hosts (what `changed=` of the recap sums)."""
        return sum(h.changed for h in self.hosts.values())

    @property
    def first_failure(self) -> TaskOutcome | None:
        """The unreachable host or failed task that stopped the run, if any."""
        found = self.unreachable or self.failures
        return found[0] if found else None

    @property
    def failure(self) -> PlaybookFailure | None:
        """Why the run stopped, classified; None for a run that did not fail."""
        if self.ok:
            return None
        if self.unreachable:
            first = self.unreachable[0]
            text, task = first.message, first.task or "connect"
            if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION" in text:
                seen = re.search(r"(SHA256:[A-Za-z0-9+/=]+)", text)
                presented = (
                    f"the host presents {seen.group(1)}, not the pinned key"
                    if seen
                    else "the host presents another key than the pinned one"
                )
                message = f"host key verification failed: {presented}"
                return PlaybookFailure(FailureReason.HOST_KEY, first.host, task, message)
            reason = (
                FailureReason.LOGIN if "Permission denied" in text else FailureReason.UNREACHABLE
            )
            return PlaybookFailure(reason, first.host, task, text)
        if not self.failures:
            return PlaybookFailure(FailureReason.RUN, "", "(play)", f"ansible ended {self.status}")
        first = self.failures[0]
        lowered = first.message.lower()
        if "sudo" in lowered and any(m in lowered for m in _NO_SUDO):
            return PlaybookFailure(FailureReason.SUDO, first.host, first.task, first.message)
        text, _, remedy = first.message.partition("remedy:")
        return PlaybookFailure(
            FailureReason.TASK, first.host, first.task, text.strip(), remedy.strip() or None
        )


ProgressSink = Callable[[Progress], None]


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a new 0600 file (replacing an old one)."""
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def _pinned_ssh_args(known: Path) -> list[str]:
    """ssh options that accept only the host key in `known` and never ask anything."""
    return [
        "-o StrictHostKeyChecking=yes",
        f"-o UserKnownHostsFile={known}",
        "-o GlobalKnownHostsFile=/dev/null",
        "-o IdentitiesOnly=yes",
        "-o BatchMode=yes",
        "-o ConnectTimeout=10",
    ]


def _key_file(host: AnsibleHost, pdd: Path, name: str, inline_keys: bool) -> str | None:
    """The private key file for `host`: its own, else (`inline_keys`) the one the engine writes
    from the key's text as `secrets/<name>.key`; None leaves it to ssh-agent."""
    if host.private_key_file is not None:
        return str(host.private_key_file)
    return str(pdd / "secrets" / f"{name}.key") if inline_keys else None


def inventory_document(
    groups: Mapping[str, list[AnsibleHost]],
    pdd: Path,
    *,
    known_hosts: Path | None = None,
    inline_keys: bool = True,
    group_vars: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """The inventory for `groups`: SSH settings pin each host's key.

    By default the files are `pdd`'s, as the engine writes them (`known_hosts/<host>`, and
    `secrets/<host>.key` for a key given as text). An inventory written for operators names one
    `known_hosts` file of its own instead, and with `inline_keys` off leaves a key given as text
    out (the operator's ssh-agent or `--private-key` supplies it). `group_vars`: per group."""
    children: dict[str, Any] = {}
    for group, hosts in groups.items():
        members: dict[str, Any] = {}
        for host in hosts:
            known = known_hosts or (pdd / "known_hosts" / host.name)
            key: dict[str, str] = {}
            key_file = _key_file(host, pdd, host.name, inline_keys)
            if key_file is not None:
                key["ansible_ssh_private_key_file"] = key_file
            args = _pinned_ssh_args(known)
            if host.jump is not None:
                jump = host.jump
                jump_known = known_hosts or (pdd / "known_hosts" / f"{host.name}.jump")
                jump_key = _key_file(jump, pdd, f"{host.name}.jump", inline_keys)
                proxy = [
                    "ssh",
                    *(["-i", jump_key] if jump_key is not None else []),
                    "-p",
                    str(jump.port),
                    *" ".join(_pinned_ssh_args(jump_known)).split(),
                    "-W",
                    "%h:%p",
                    f"{jump.user}@{jump.address}",
                ]
                args.append(f"-o ProxyCommand={shlex.quote(shlex.join(proxy))}")
            members[host.name] = {
                "ansible_host": host.address,
                "ansible_port": host.port,
                "ansible_user": host.user,
                **key,
                "ansible_ssh_common_args": " ".join(args),
                "ansible_become": host.become,
                # Also for hand runs of a generated inventory: tasks that become the services'
                # unprivileged user need no world-readable temporary files this way.
                "ansible_pipelining": True,
                "ansible_python_interpreter": host.python,
                **dict(host.vars),
            }
        children[group] = {"hosts": members}
        if group_vars and group in group_vars:
            children[group]["vars"] = dict(group_vars[group])
    return {"all": {"children": children}}


class AnsibleEngine:
    """Runs playbooks with ansible-runner and returns typed results."""

    def prepare(self, run: PlaybookRun) -> Path:
        """Build the private data dir for `run` and return it (idempotent)."""
        pdd = run.run_dir / "ansible"
        for sub in ("inventory", "env", "known_hosts", "secrets"):
            (pdd / sub).mkdir(parents=True, mode=0o700, exist_ok=True)
        for hosts in run.groups.values():
            for host in hosts:
                pinned = [(host.name, host)]
                if host.jump is not None:
                    pinned.append((f"{host.name}.jump", host.jump))
                for name, each in pinned:
                    _write_private(pdd / "known_hosts" / name, each.known_hosts_line + "\n")
                    if each.private_key_file is None:
                        if each.private_key is None:
                            raise EnvironmentProblem(
                                f"no SSH key for host {each.name}",
                                remedy="set the host's private_key in the inventory",
                            )
                        key = each.private_key.get_secret_value()
                        register_key_text(key)
                        _write_private(pdd / "secrets" / f"{name}.key", key.rstrip("\n") + "\n")
        doc = inventory_document(run.groups, pdd)
        _write_private(pdd / "inventory" / "hosts.json", json.dumps(doc, indent=2) + "\n")
        _write_private(pdd / "env" / "extravars", json.dumps(dict(run.extra_vars), indent=2))
        return pdd

    def run(self, run: PlaybookRun, on_progress: ProgressSink | None = None) -> PlaybookResult:
        """Run the playbook; a failed play is a result, a run that cannot start raises."""
        if not run.playbook.is_file():
            raise EnvironmentProblem(
                f"playbook {run.playbook} is missing",
                remedy="run the installer from its own checkout or installed package",
            )
        if shutil.which("ansible-playbook", path=_search_path()) is None:
            raise EnvironmentProblem(
                "ansible-playbook is not installed",
                remedy="install the installer with its dependencies (ansible-core)",
            )
        pdd = self.prepare(run)
        collector = _Collector(on_progress)
        cmdline = ["--check"] if run.check else []
        if run.diff:
            cmdline.append("--diff")
        log.info(
            "ansible: %s%s on %s (data dir %s)",
            run.playbook.name,
            " (check)" if run.check else "",
            ", ".join(h.name for hosts in run.groups.values() for h in hosts),
            pdd,
        )
        # SSH multiplexing would let a master connection left by an earlier run skip the host
        # key check; each run gets its own control folder (short: socket paths are limited).
        control = Path(tempfile.mkdtemp(prefix="onprem-ssh-"))
        try:
            runner = ansible_runner.run(
                private_data_dir=str(pdd),
                playbook=str(run.playbook.resolve()),
                ident=run.ident,
                cmdline=" ".join(cmdline) or None,
                envvars={**_envvars(run.playbook), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control)},
                event_handler=collector.handle,
                quiet=True,
                timeout=run.timeout_s,
                suppress_env_files=True,
            )
        finally:
            _close_masters(control)
            shutil.rmtree(pdd / "secrets", ignore_errors=True)
        artifacts = pdd / "artifacts" / run.ident
        missed = _unread_events(artifacts)
        if missed:
            # ansible-runner gives up reading the play's last output after 5 s (a loaded
            # machine); the callback's own copies of those events are still there.
            log.info("ansible: %d event(s) read from the run's artifacts", len(missed))
            for event in missed:
                collector.handle(event)
        status: RunStatus = runner.status if runner.status in _STATUSES else "error"
        result = PlaybookResult(
            status=status,
            rc=int(runner.rc if runner.rc is not None else -1),
            hosts=collector.stats,
            changed=collector.changed,
            failures=collector.failures,
            unreachable=collector.unreachable,
            artifacts=artifacts,
            check=run.check,
            facts=collector.facts,
        )
        _redact_tree(artifacts)
        log.info(
            "ansible: %s rc=%s changed=%s failed=%s unreachable=%s",
            result.status,
            result.rc,
            result.changed_count,
            len(result.failures),
            len(result.unreachable),
        )
        return result


_STATUSES = frozenset({"successful", "failed", "timeout", "canceled"})


def _unread_events(artifacts: Path) -> list[dict[str, Any]]:
    """Events the play's callback wrote that ansible-runner never handed to the event handler, in
    order. The runner reads events from the play's output and takes each one's data from the
    callback's `job_events/<uuid>-partial.json`, removing it; its last read of the output ends
    after 5 seconds, and on a loaded machine the final events (a failed task's, the stats) can
    be left there unread."""
    found: list[dict[str, Any]] = []
    for path in (artifacts / "job_events").glob("*-partial.json"):
        try:
            event = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(event, dict):
            found.append(event)
    return sorted(found, key=lambda event: int(event.get("counter") or 0))


def _search_path() -> str:
    """PATH with the installer's own interpreter folder first (where ansible-playbook lives)."""
    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def _envvars(playbook: Path) -> dict[str, str]:
    return {
        "PATH": _search_path(),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_ROLES_PATH": str(playbook.resolve().parent / "roles"),
    }


def _close_masters(control: Path) -> None:
    """Stop the run's SSH master connections (by their sockets) and remove the folder."""
    for socket_path in control.glob("*"):
        subprocess.run(
            ["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "unused"],
            capture_output=True,
            timeout=10,
            check=False,
        )
    shutil.rmtree(control, ignore_errors=True)


def _redact_tree(folder: Path) -> None:
    """Mask registered secrets in every artifact file (a second line of defence after no_log)."""
    if not folder.is_dir():
        return
    for path in folder.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        masked = REDACTOR.redact(text)
        if masked != text:
            path.write_text(masked, encoding="utf-8")


def _message(res: Mapping[str, Any]) -> str:
    """The most useful line of a task result: its message, else stderr, else stdout; for a loop,
    the messages of the items that failed."""
    items = res.get("results")
    if isinstance(items, list):
        failed = [_message(i) for i in items if isinstance(i, dict) and i.get("failed")]
        if any(failed):
            return "; ".join(m for m in failed if m)
    for key in ("msg", "stderr", "stdout", "module_stderr", "reason"):
        value = res.get(key)
        if isinstance(value, str) and value.strip():
            return REDACTOR.redact(value.strip())
    return ""


class _Collector:
    """Turns ansible-runner events into counters, outcomes and progress."""

    def __init__(self, sink: ProgressSink | None) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self.stats: dict[str, HostStats] = {}
        self.changed: list[TaskOutcome] = []
        self.failures: list[TaskOutcome] = []
        self.unreachable: list[TaskOutcome] = []
        self.facts: dict[str, dict[str, Any]] = {}

    def _emit(self, progress: Progress) -> None:
        if self._sink is not None:
            self._sink(progress)

    def handle(self, event: dict[str, Any]) -> bool:
        """ansible-runner's event handler; returning True keeps the event in the artifacts."""
        kind = event.get("event", "")
        data: dict[str, Any] = event.get("event_data") or {}
        host = str(data.get("host") or "")
        task = str(data.get("task") or "")
        role = str(data.get("role") or "")
        res: dict[str, Any] = data.get("res") if isinstance(data.get("res"), dict) else {}  # type: ignore[assignment]
        with self._lock:
            if kind == "playbook_on_play_start":
                self._emit(Progress("play", str(data.get("name") or data.get("play") or "")))
            elif kind == "playbook_on_task_start":
                self._emit(Progress("task", task, role=role))
            elif kind == "runner_on_ok":
                facts = res.get("ansible_facts")
                if isinstance(facts, dict):
                    self.facts.setdefault(host, {}).update(facts)
                # no_log results are censored to one key; the display line still says changed.
                censored_change = "censored" in res and str(event.get("stdout", "")).startswith(
                    "changed"
                )
                if res.get("changed") or censored_change:
                    self.changed.append(TaskOutcome(host, task, role))
                    self._emit(Progress("changed", task, host, role))
                else:
                    self._emit(Progress("ok", task, host, role))
            elif kind == "runner_on_failed" and not data.get("ignore_errors"):
                outcome = TaskOutcome(host, task, role, _message(res))
                self.failures.append(outcome)
                self._emit(Progress("failed", task, host, role, outcome.message))
            elif kind == "runner_on_unreachable":
                outcome = TaskOutcome(host, task, role, _message(res))
                self.unreachable.append(outcome)
                self._emit(Progress("unreachable", task, host, role, outcome.message))
            elif kind == "runner_on_skipped":
                self._emit(Progress("skipped", task, host, role))
            elif kind == "playbook_on_stats":
                self._stats(data)
        return True

    def _stats(self, data: Mapping[str, Any]) -> None:
        def counts(key: str) -> dict[str, int]:
            value = data.get(key) or {}
            return {str(k): int(v) for k, v in value.items()} if isinstance(value, dict) else {}

        ok, changed, failed = counts("ok"), counts("changed"), counts("failures")
        dark, skipped = counts("dark"), counts("skipped")
        for host in {*ok, *changed, *failed, *dark, *skipped}:
            self.stats[host] = HostStats(
                ok=ok.get(host, 0),
                changed=changed.get(host, 0),
                failed=failed.get(host, 0),
                unreachable=dark.get(host, 0),
                skipped=skipped.get(host, 0),
            )
