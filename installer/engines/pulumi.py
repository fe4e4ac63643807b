"""The Pulumi engine: the Automation API over the cluster stacks, offline, with typed results.

- Backend: a local file backend under the state folder (`<state>/pulumi/backend`) unless the
  operator gives another URL; secrets provider: passphrase, the passphrase generated once into the
  state folder (0600) and handed to the CLI as a file, never as an argument.
- Offline: no update checks, no plugin downloads; the CLI and plugins come from a folder (the lab
  cache or the air-gap bundle) put first on PATH.
- Programs run inline (the same `program()` that `stacks/<x>/__main__.py` calls), in a project
  folder holding `Pulumi.yaml` and `Pulumi.<cluster>.yaml`, so a hand-run `pulumi up` there reads
  the same config and the same state.
- Recovery: an update that was interrupted leaves pending operations and sometimes a lock in the
  state; both are cleared before the next run, each step written to the log.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from installer.engines import pulumi_orphans
from installer.engines.pulumi_toolchain import offline_environment, write_language_host_launcher
from installer.errors import EnvironmentProblem, FailedError
from installer.overrides import env_override
from installer.redact import REDACTOR
from installer.stacks import StackInput, program_of
from installer.stacks.common import ARGS_KEY
from installer.state import StateDir

log = logging.getLogger("installer.engines.pulumi")

NO_CHANGE_OPS = frozenset({"same", "read"})
DYNAMIC_PLUGIN = "pulumi-resource-pulumi-python"


@dataclass(frozen=True)
class ResourceChange:
    """One step of a preview or update."""

    op: str
    urn: str
    type: str
    name: str
    diffs: tuple[str, ...] = ()


@dataclass(frozen=True)
class StackEvent:
    """A streamed engine event, reduced to what a progress display needs."""

    kind: str
    op: str | None = None
    urn: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class StackSummary:
    """The typed result of a preview, up, refresh or destroy."""

    component: str
    stack: str
    action: str
    counts: dict[str, int]
    steps: tuple[ResourceChange, ...] = ()
    outputs: dict[str, Any] = field(default_factory=dict)
    recovered: tuple[str, ...] = ()

    @property
    def changes(self) -> int:
        """Resources that would change (or changed): everything but `same` and `read`."""
        return sum(n for op, n in self.counts.items() if op not in NO_CHANGE_OPS)

    @property
    def changed(self) -> tuple[ResourceChange, ...]:
        """The steps that change something."""
        return tuple(s for s in self.steps if s.op not in NO_CHANGE_OPS)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (outputs marked secret are already masked by Pulumi)."""
        return {
            "component": self.component,
            "stack": self.stack,
            "action": self.action,
            "changes": self.changes,
            "counts": self.counts,
            "steps": [
                {"op": s.op, "type": s.type, "name": s.name, "diffs": list(s.diffs)}
                for s in self.changed
            ],
            "outputs": self.outputs,
            "recovered": list(self.recovered),
        }


EventSink = Callable[[StackEvent], None]


def _shell_quote(path: str) -> str:
    return "'" + path.replace("'", "'\"'\"'") + "'"


@dataclass
class PulumiEngine:
    """Runs the cluster stacks of one site (one state folder)."""

    state: StateDir
    backend_url: str | None = None
    bin_dir: Path | None = None
    projects_root: Path | None = None
    guarded: bool = False
    """The site's Pulumi comes from its signed bundle (air-gapped): the environment's CLI
    folders are refused unless the development flag allows them (`installer.overrides`)."""

    # --- environment --------------------------------------------------------------------

    @property
    def backend(self) -> str:
        """The backend URL (a file backend in the state folder by default)."""
        return self.backend_url or (self.state.pulumi / "backend").resolve().as_uri()

    def _cli_dir(self) -> Path:
        # A run's explicit override, then the inventory's `site.pulumi_bin_dir` (bin_dir), then
        # the lab's folder for tests that build inventories of their own.
        replaces = "the Pulumi CLI the bundle loaded"
        candidates: list[Path | None] = [
            env_override("INSTALLER_PULUMI_BIN_DIR", guarded=self.guarded, replaces=replaces),
            self.bin_dir,
            env_override("LAB_PULUMI_BIN_DIR", guarded=self.guarded, replaces=replaces),
        ]
        # Where `airgap-load` (and the airgap_load phase) installs the bundle's Pulumi binaries:
        # on an air-gapped site that is the only copy.
        candidates.append(self.state.pulumi / "bin")
        found = shutil.which("pulumi")
        if found:
            candidates.append(Path(found).resolve().parent)
        for folder in candidates:
            if folder is not None and (folder / "pulumi").is_file():
                return folder
        raise EnvironmentProblem(
            "the Pulumi CLI is not installed",
            remedy="load the air-gap bundle, or name the folder holding `pulumi` and"
            " `pulumi-resource-kubernetes` in the inventory's site.pulumi_bin_dir (or put it on"
            " PATH)",
        )

    def _dynamic_plugin_dir(self) -> Path:
        # Dynamic resources (node taints) run in a provider process started by the CLI through
        # this plugin; it must use this interpreter, which has the installer importable.
        folder = self.state.pulumi / "bin"
        folder.mkdir(parents=True, exist_ok=True)
        script = folder / DYNAMIC_PLUGIN
        text = f'#!/bin/sh\nexec {_shell_quote(sys.executable)} -u -m pulumi.dynamic "$@"\n'
        if not script.is_file() or script.read_text(encoding="utf-8") != text:
            script.write_text(text, encoding="utf-8")
            script.chmod(0o755)
        # A hand-run `pulumi up` in stacks/<x> needs a Python language host; where the CLI's
        # folder has no real one, a stand-in that runs this interpreter (the real one wins).
        write_language_host_launcher(folder, self._cli_dir())
        return folder

    def _command_root(self) -> Path:
        # The Automation API runs `<root>/bin/pulumi`; give it a root whatever the folder's name.
        cli = self._cli_dir()
        if cli.name == "bin":
            return cli.parent
        root = self.state.pulumi / "cli"
        link = root / "bin" / "pulumi"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink() or link.resolve() != (cli / "pulumi").resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(cli / "pulumi")
        return root

    def tool_dirs(self) -> list[Path]:
        """What a hand run puts first on PATH: the installer's launchers, then the CLI's folder."""
        return [self._dynamic_plugin_dir(), self._cli_dir()]

    def env(self) -> dict[str, str]:
        """Environment of every CLI call: offline, file backend, passphrase from a 0600 file."""
        env = offline_environment(self.state.pulumi, bin_dir=self._cli_dir())
        env["PULUMI_BACKEND_URL"] = self.backend
        env["PATH"] = os.pathsep.join([str(self._dynamic_plugin_dir()), env["PATH"]])
        env["PULUMI_PYTHON_CMD"] = sys.executable
        return env

    # --- project folders and config -----------------------------------------------------

    def project_dir(self, component: str) -> Path:
        """The folder the engine runs a component's project in."""
        root = self.projects_root or (self.state.pulumi / "projects")
        return root / component

    def _workspace_stack(self, si: StackInput, project_dir: Path) -> Any:
        from pulumi import automation as auto

        if self.backend.startswith("file://"):
            # Before the CLI reads the backend: a killed run may have torn a metadata file.
            pulumi_orphans.repair_file_backend(Path(self.backend.removeprefix("file://")))
        write_project_file(project_dir, si.component)
        opts = auto.LocalWorkspaceOptions(
            work_dir=str(project_dir),
            env_vars=self.env(),
            secrets_provider="passphrase",
            pulumi_command=pulumi_command(self._command_root()),
        )
        if not self.never_created(si) and self.backend.startswith("file://"):
            # The backend holds the stack: every command names it (`--stack`), so selecting it
            # first (a CLI run, about 0.4 s for every run of every stack) is not needed.
            opts.program = program_of(si.component)
            return held_stack(si.stack, auto.LocalWorkspace(**opts.__dict__))
        try:
            return auto.create_or_select_stack(
                stack_name=si.stack,
                project_name=si.project,
                program=program_of(si.component),
                opts=opts,
            )
        except auto.errors.CommandError as exc:
            raise _command_failed(f"cannot open stack {si.project}/{si.stack}", exc) from None

    def configure(self, si: StackInput, project_dir: Path | None = None) -> Any:
        """Write the stack's config (arguments in clear, secrets encrypted); return the stack."""
        folder = project_dir or self.project_dir(si.component)
        stack = self._workspace_stack(si, folder)
        config_file = write_stack_args(folder, si)
        record = SecretRecord(folder / f".secrets.{si.stack}.json")
        for key, value in sorted(si.secrets.items()):
            plain = value.get_secret_value()
            REDACTOR.register(plain)
            full = f"{si.project}:{key}"
            if record.unchanged(full, plain, _ciphertext(config_file, full)):
                continue  # the stack holds this very value already: no CLI run (0.4 s each)
            self._cli(["config", "set", "--secret", "--stack", si.stack, full], folder, stdin=plain)
            record.set(full, plain, _ciphertext(config_file, full))
        record.save()
        return stack

    def _cli(self, argv: list[str], cwd: Path, *, stdin: str | None = None) -> str:
        cli = self._cli_dir() / "pulumi"
        env = {**os.environ, **self.env()}
        proc = subprocess.run(
            [str(cli), *argv, "--non-interactive"],
            cwd=cwd,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        if proc.returncode != 0:
            raise FailedError(
                f"pulumi {argv[0]} {argv[1] if len(argv) > 1 else ''} failed:"
                f" {REDACTOR.redact(proc.stderr.strip())[-2000:]}"
            )
        return proc.stdout

    # --- runs ---------------------------------------------------------------------------

    def preview(self, si: StackInput, on_event: EventSink | None = None) -> StackSummary:
        """What `up` would change; changes nothing."""
        return self._run("preview", si, on_event)

    def up(self, si: StackInput, on_event: EventSink | None = None) -> StackSummary:
        """Converge the stack; FailedError when any step failed (never reported as done)."""
        return self._run("up", si, on_event)

    def refresh(self, si: StackInput, on_event: EventSink | None = None) -> StackSummary:
        """Read the live state of every resource into the stack's state."""
        return self._run("refresh", si, on_event)

    def never_created(self, si: StackInput) -> bool:
        """True when the file backend holds no such stack: nothing was ever deployed by it
        (other backends are asked through the CLI, so this says False for them)."""
        folder = self._checkpoints(si)
        if folder is None:
            return False
        return not any((folder / f"{si.stack}{ext}").exists() for ext in (".json", ".json.gz"))

    def _checkpoints(self, si: StackInput) -> Path | None:
        """The folder of the project's checkpoint files on a file backend (None on another)."""
        if not self.backend.startswith("file://"):
            return None
        return Path(self.backend.removeprefix("file://")) / ".pulumi" / "stacks" / si.project

    def destroy(self, si: StackInput, on_event: EventSink | None = None) -> StackSummary:
        """Delete everything the stack created (node patches give back exactly their fields).

        A stack the backend never held has nothing to delete: no CLI is needed (a site never
        bootstrapped, or whose Pulumi CLI only comes with its bundle, can still be destroyed)."""
        if self.never_created(si):
            log.info("%s/%s: not in the backend; nothing to destroy", si.project, si.stack)
            return StackSummary(component=si.component, stack=si.stack, action="destroy", counts={})
        return self._run("destroy", si, on_event)

    def _run(self, action: Action, si: StackInput, on_event: EventSink | None) -> StackSummary:
        """One run of the stack: configure it, clear what an interrupted run left, run `action`
        with the engine's events collected, and summarize."""
        stack = self.configure(si)
        recovered = self.recover(si, stack)
        steps: list[ResourceChange] = []
        outputs: dict[str, Any] = {}
        collect = _collector(steps, on_event, outputs if action == "up" else None)
        if action == "up":
            # The stack's outputs come with the engine's events (secrets as "[secret]"); the
            # Automation API would read them again after the update with two more CLI runs,
            # about 0.7 s a stack and a fifth of a no-op bootstrap.
            stack.outputs = dict
        verb, counted = _RUNS[action]

        def run() -> Any:
            if action == "preview":
                return stack.preview(on_event=collect, diff=True, color="never")
            return getattr(stack, action)(on_event=collect, color="never")

        with _failures(verb, si):
            result = _once_more_if_monitor_lost(run, steps, f"{si.project}/{si.stack} {action}")
        return StackSummary(
            component=si.component,
            stack=si.stack,
            action=action,
            counts=_counts(counted(result)),
            steps=tuple(steps),
            outputs=outputs,
            recovered=recovered,
        )

    # --- recovery -----------------------------------------------------------------------

    def recover(self, si: StackInput, stack: Any) -> tuple[str, ...]:
        """Clear what an interrupted run left (orphaned providers, stale locks, pending
        operations); say what."""
        done = [*pulumi_orphans.reap(), *self._clear_stale_locks(si)]
        latest = self._latest(si, stack)
        done += _forget_legacy(si, stack, latest)
        pending = latest.get("pending_operations") or []
        if not pending:
            return tuple(done)
        for op in pending:
            what = f"pending {op.get('type')} of {op.get('resource', {}).get('urn')}"
            log.warning("%s/%s: interrupted run left %s", si.project, si.stack, what)
            done.append(what)
        done += pulumi_orphans.forget_helm_releases(
            si.args.kube.kubeconfig,
            si.args.kube.context,
            pulumi_orphans.pending_helm_creates(pending),
        )
        # Refresh reads every resource back from the cluster; pending creates are dropped from the
        # state (the next update re-adopts the object by server-side apply).
        with _failures("refresh (recovery)", si):
            stack.refresh(clear_pending_creates=True, color="never")
        deployment = stack.export_stack()
        left = (deployment.deployment or {}).get("pending_operations") or []
        if left:
            # Updates and deletes that never finished: the refresh above read the live objects,
            # so the state is accurate without them.
            deployment.deployment["pending_operations"] = []
            stack.import_stack(deployment)
            log.warning("%s/%s: cleared %d pending operations", si.project, si.stack, len(left))
        return tuple(done)

    def _latest(self, si: StackInput, stack: Any) -> dict[str, Any]:
        """The stack's latest deployment (resources, pending operations). On a file backend it
        is read from the checkpoint file, which saves a CLI run (`pulumi stack export`, about
        0.4 s) on every run of every stack; other backends are asked through the CLI."""
        folder = self._checkpoints(si)
        if folder is not None:
            for name, opener in ((f"{si.stack}.json", open), (f"{si.stack}.json.gz", gzip.open)):
                try:
                    with opener(folder / name, "rt", encoding="utf-8") as handle:
                        doc = json.load(handle)
                except FileNotFoundError:
                    continue
                latest = (doc.get("checkpoint") or {}).get("latest")
                return dict(latest) if isinstance(latest, dict) else {}
        return dict(stack.export_stack().deployment or {})

    def _clear_stale_locks(self, si: StackInput) -> list[str]:
        if not self.backend.startswith("file://"):
            return []
        root = Path(self.backend.removeprefix("file://")) / ".pulumi" / "locks"
        cleared: list[str] = []
        for lock in sorted(root.glob(f"**/{si.project}/{si.stack}/*.json")):
            try:
                info = json.loads(lock.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            pid = info.get("pid")
            if info.get("hostname") != socket.gethostname() or not isinstance(pid, int):
                continue  # another machine's lock: only its owner may judge it
            if _alive(pid):
                continue
            lock.unlink(missing_ok=True)
            what = f"stale lock of process {pid} (no longer running)"
            log.warning("%s/%s: removed %s", si.project, si.stack, what)
            cleared.append(what)
        return cleared


_COMMANDS: dict[tuple[str, int, int], Any] = {}


def pulumi_command(root: Path) -> Any:
    """The Automation API's `PulumiCommand` for the CLI at `<root>/bin/pulumi`, one per binary
    for the process: making one runs `pulumi version`, which every stack run did."""
    from pulumi import automation as auto

    binary = (root / "bin" / "pulumi").resolve()
    info = binary.stat()
    key = (str(binary), info.st_ino, info.st_mtime_ns)
    if key not in _COMMANDS:
        _COMMANDS[key] = auto.PulumiCommand(root=str(root), skip_version_check=True)
    return _COMMANDS[key]


def held_stack(name: str, workspace: Any) -> Any:
    """The Automation API's `Stack` for a stack the backend holds, made without the CLI run of
    `pulumi stack select` that its constructor makes (every command names its stack with
    `--stack`). It sets what the constructor sets (a unit test compares the two)."""
    from pulumi.automation._stack import Stack, StackInitMode

    stack = Stack.__new__(Stack)
    stack.name, stack.workspace, stack._mode = name, workspace, StackInitMode.SELECT
    return stack


def _forget_legacy(si: StackInput, stack: Any, latest: dict[str, Any]) -> list[str]:
    """Forget the resources an older installer's program had in place of today's, where taking
    them back the usual way would undo what today's resource sets (see `stacks.nodes`)."""
    if si.component != "nodes":
        return []
    from installer.stacks.nodes import legacy_urns

    urns = set(legacy_urns(latest.get("resources") or []))
    if not urns:
        return []
    deployment = stack.export_stack()
    doc = deployment.deployment or {}
    doc["resources"] = [r for r in doc.get("resources") or [] if r.get("urn") not in urns]
    pending = doc.get("pending_operations") or []
    doc["pending_operations"] = [
        op for op in pending if (op.get("resource") or {}).get("urn") not in urns
    ]
    stack.import_stack(deployment)
    what = (
        f"{len(urns)} per-node resources of an older installer (their labels and taints stay on"
        " the nodes; node-marks takes them over)"
    )
    log.warning("%s/%s: forgot %s", si.project, si.stack, what)
    return [f"forgot {what}"]


Action = Literal["preview", "up", "refresh", "destroy"]

_RUNS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "preview": ("preview", lambda result: result.change_summary),
    "up": ("update", lambda result: result.summary.resource_changes),
    "refresh": ("refresh", lambda result: result.summary.resource_changes),
    "destroy": ("destroy", lambda result: result.summary.resource_changes),
}
"""Per action: the word a failure names it by, and where its result keeps the counts."""


def _counts(ops: Any) -> dict[str, int]:
    return {str(getattr(op, "value", op)): int(n) for op, n in (ops or {}).items()}


def _alive(pid: int) -> bool:
    """Whether `pid` runs. A zombie (killed, not yet reaped: a killed run's CLI whose parent died
    too waits for init to reap it) still answers signal 0 but holds nothing: it counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _counted(meta: Any) -> bool:
    # The engine announces a default provider's "update" without any diff when a resource it
    # serves goes away; the change summary does not count it, and neither do the steps.
    return not (
        str(meta.type).startswith("pulumi:providers:")
        and not meta.diffs
        and str(getattr(meta.op, "value", meta.op)) == "update"
    )


def _dynamic_diffs(meta: Any) -> tuple[str, ...]:
    """The inputs an update of a dynamic resource changes: the Python dynamic provider tells
    the engine only whether something changed, so the installer compares the step's old outputs
    (as refreshed, where a refresh ran) with its new inputs, key by key."""
    op = str(getattr(meta.op, "value", meta.op))
    if op != "update" or not str(meta.type).startswith("pulumi-python:dynamic"):
        return ()
    if meta.old is None or meta.new is None:
        return ()
    olds, outs, news = meta.old.inputs or {}, meta.old.outputs or {}, meta.new.inputs or {}
    keys = (olds.keys() | news.keys()) - {"__provider"}
    return tuple(sorted(k for k in keys if outs.get(k) != news.get(k)))


def _collector(
    steps: list[ResourceChange], sink: EventSink | None, outputs: dict[str, Any] | None = None
) -> Callable[[Any], None]:
    """An event handler that lists the counted steps in `steps`, forwards progress to `sink`, and
    puts the stack's own outputs in `outputs` (when given)."""

    def on_event(event: Any) -> None:
        done = event.res_outputs_event
        meta: Any = done.metadata if done is not None else None
        stack = meta is not None and meta.type == "pulumi:pulumi:Stack" and meta.new is not None
        if outputs is not None and stack:
            outputs.update(meta.new.outputs or {})
        pre = event.resource_pre_event
        if pre is not None and pre.metadata is not None and _counted(pre.metadata):
            meta = pre.metadata
            urn = meta.urn
            steps.append(
                ResourceChange(
                    op=str(getattr(meta.op, "value", meta.op)),
                    urn=urn,
                    type=meta.type,
                    name=urn.rsplit("::", 1)[-1],
                    diffs=tuple(meta.diffs or ()) or _dynamic_diffs(meta),
                )
            )
        if sink is None:
            return
        if pre is not None and pre.metadata is not None:
            sink(
                StackEvent(
                    "step",
                    str(getattr(pre.metadata.op, "value", pre.metadata.op)),
                    pre.metadata.urn,
                )
            )
        elif event.res_outputs_event is not None and event.res_outputs_event.metadata:
            meta = event.res_outputs_event.metadata
            sink(StackEvent("done", str(getattr(meta.op, "value", meta.op)), meta.urn))
        elif event.res_op_failed_event is not None:
            sink(StackEvent("failed", message=REDACTOR.redact(str(event.res_op_failed_event))))
        elif event.diagnostic_event is not None and event.diagnostic_event.severity == "error":
            sink(StackEvent("error", message=REDACTOR.redact(event.diagnostic_event.message)))

    return on_event


MONITOR_LOST = "Resource monitor has terminated"
"""What the Python SDK's inline program says when its first call to the engine's resource monitor
finds no one there (gRPC UNAVAILABLE): seen once in a loaded CI run, 0.4 s into a stack's update
right after another stack's update had failed in the same process, with the engine itself alive
(it printed the error). Nothing was registered, so nothing was done."""


def _once_more_if_monitor_lost(
    run: Callable[[], Any], steps: list[ResourceChange], what: str
) -> Any:
    """`run()`; run it once more where it failed because the program lost the engine's resource
    monitor before any step (a fault of the connection, not of the stack: the failed run did
    nothing). Any other failure, or a second one, is raised."""
    from pulumi import automation as auto

    try:
        return run()
    except auto.errors.CommandError as exc:
        if MONITOR_LOST not in str(exc) or steps:
            raise
        log.warning(
            "%s: the program lost the engine's resource monitor before any step; once more", what
        )
    return run()


def _command_failed(what: str, exc: Exception) -> FailedError:
    return FailedError(f"{what}: {_error_lines(str(exc))}")


@contextmanager
def _failures(action: str, si: StackInput) -> Iterator[None]:
    """Turn a failed CLI run into a FailedError with the run's error lines (secrets masked)."""
    from pulumi import automation as auto

    try:
        yield
    except auto.errors.ConcurrentUpdateError:
        raise FailedError(
            f"{si.project}/{si.stack}: another update is running",
            remedy="wait for it to finish; a lock left by a dead process is cleared on the next"
            " run",
        ) from None
    except auto.errors.CommandError as exc:
        raise FailedError(
            f"{si.project}/{si.stack}: {action} failed; nothing is reported as done:\n"
            + _error_lines(str(exc)),
            remedy="fix the cause and re-run; steps that completed are kept and not repeated",
        ) from None


def _error_lines(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if "error" in ln.lower() and ln.strip()]
    picked = "\n".join(dict.fromkeys(lines[-20:])) or text.strip()[-2000:]
    return REDACTOR.redact(picked)


# --- files the hand-run `pulumi up` reads --------------------------------------------------


def project_file_text(component: str) -> str:
    """`Pulumi.yaml` of a component (the same in `stacks/<x>/` and the engine's folders)."""
    from installer.stacks.common import project_name

    return (
        f"name: {project_name(component)}\n"
        "runtime: python\n"
        f"description: The {component} stack of the on-prem platform (one stack per cluster).\n"
    )


def write_project_file(folder: Path, component: str) -> None:
    """Create the project folder and its `Pulumi.yaml` (a `__main__.py` is not needed inline)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "Pulumi.yaml"
    text = project_file_text(component)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


class SecretRecord:
    """Which value each encrypted config key of a stack was last set to, so an unchanged secret
    costs no `pulumi config set` run: a salted sha256 of the value with the ciphertext the CLI
    wrote for it (a key whose ciphertext changed since, by hand or by another run, is set again).
    The file (0600) sits beside the stack's config, in the state folder that holds the secrets
    themselves."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data: dict[str, Any] = {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        salt = data.get("salt")
        self.salt = salt if isinstance(salt, str) and len(salt) == 64 else secrets.token_hex(32)
        keys = data.get("keys")
        self.keys: dict[str, list[str]] = keys if isinstance(keys, dict) else {}
        self.dirty = salt != self.salt

    def _digest(self, plain: str) -> str:
        return hashlib.sha256(f"{self.salt}\0{plain}".encode()).hexdigest()

    def unchanged(self, key: str, plain: str, ciphertext: str | None) -> bool:
        """The stack holds `plain` under `key` as the CLI last wrote it."""
        return ciphertext is not None and self.keys.get(key) == [self._digest(plain), ciphertext]

    def set(self, key: str, plain: str, ciphertext: str | None) -> None:
        """Remember what `key` was set to (nothing when the CLI wrote no ciphertext)."""
        if ciphertext is None:
            self.keys.pop(key, None)
        else:
            self.keys[key] = [self._digest(plain), ciphertext]
        self.dirty = True

    def save(self) -> None:
        """Write the record (0600) when it changed."""
        if not self.dirty:
            return
        tmp = self.path.with_name(self.path.name + ".partial")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"salt": self.salt, "keys": self.keys}, handle, sort_keys=True)
        tmp.replace(self.path)
        self.dirty = False


def _ciphertext(config_file: Path, key: str) -> str | None:
    """The encrypted value of `key` in a stack's config file (`{secure: v1:...}`), or None."""
    try:
        doc = _load_config(config_file.read_text(encoding="utf-8"))
    except OSError:
        return None
    value = (doc.get("config") or {}).get(key)
    secure = value.get("secure") if isinstance(value, dict) else None
    # With the file's salt: a stack made again with another salt cannot read old ciphertexts.
    return f"{doc.get('encryptionsalt')}|{secure}" if isinstance(secure, str) else None


def _load_config(text: str) -> dict[str, Any]:
    # libyaml's loader: a nodes stack's args at a thousand nodes took seconds in pure Python.
    doc = yaml.load(text, Loader=yaml.CSafeLoader) if text else None
    return doc if isinstance(doc, dict) else {}


def write_stack_args(folder: Path, si: StackInput) -> Path:
    """Set `<project>:args` in `Pulumi.<stack>.yaml`, keeping the salt and encrypted values
    (the file is written only when it changes)."""
    path = folder / f"Pulumi.{si.stack}.yaml"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    doc = _load_config(text)
    config = dict(doc.get("config") or {})
    prefix = f"{si.project}:"
    wanted_secrets = {f"{prefix}{k}" for k in si.secrets}
    for key in list(config):
        # Drop plain values of the project that the args no longer hold; keep secrets still
        # wanted (re-set right after) and keys of other namespaces (provider settings by hand).
        if key.startswith(prefix) and key not in wanted_secrets:
            del config[key]
    config[f"{prefix}{ARGS_KEY}"] = si.args.model_dump(mode="json")
    doc["config"] = dict(sorted(config.items()))
    out = yaml.dump(doc, Dumper=yaml.CSafeDumper, default_flow_style=False, sort_keys=False)
    if out != text:
        path.write_text(out, encoding="utf-8")
    return path
