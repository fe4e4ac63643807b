"""The offline Pulumi environment: where the CLI and plugins are, and the variables every run needs.

A site without internet has the Pulumi CLI and its plugins in one folder (the air-gap bundle's,
or the lab cache's). `offline_environment()` checks that the tools are there and returns the
environment for the CLI and the Automation API:

- a file backend and a Pulumi home inside the given state folder (0700);
- the passphrase secrets provider, reading a 0600 file generated once (never an argument);
- no update checks and no plugin downloads; plugins are found on PATH, the tool folder first.

Example::

    env = offline_environment(Path(".installer/pulumi"), bin_dir=Path("/opt/pulumi/bin"))
    subprocess.run(["pulumi", "preview"], env={**os.environ, **env}, check=True)
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from installer.errors import EnvironmentProblem

PULUMI_CLI = "pulumi"
KUBERNETES_PLUGIN = "pulumi-resource-kubernetes"
PYTHON_LANGUAGE_HOST = "pulumi-language-python"
PYTHON_LANGUAGE_EXEC = "pulumi-language-python-exec"

# What the Automation API's inline programs need; a project run by hand (`pulumi up` in a folder
# with a Pulumi.yaml) needs the Python language host as well (PROJECT_TOOLS).
INLINE_TOOLS: tuple[str, ...] = (PULUMI_CLI, KUBERNETES_PLUGIN)
PROJECT_TOOLS: tuple[str, ...] = (*INLINE_TOOLS, PYTHON_LANGUAGE_HOST, PYTHON_LANGUAGE_EXEC)

# The stand-in for the Go language host (docs/stacks.md): a launcher running this module.
LANGUAGE_HOST_MODULE = "installer.engines.pulumi_language_host"
STAND_IN_MARK = "# onprem-installer: stand-in for pulumi-language-python (docs/stacks.md)"

PASSPHRASE_FILE = "passphrase"  # noqa: S105 - the file's name, not its content
VERSION_TIMEOUT_S = 30


@dataclass(frozen=True)
class PulumiToolchain:
    """A folder holding the Pulumi CLI and its plugins."""

    bin_dir: Path

    def missing(self, tools: Sequence[str] = INLINE_TOOLS) -> list[str]:
        """The tools of `tools` that are not executable files in the folder."""
        return [t for t in tools if not os.access(self.bin_dir / t, os.X_OK)]

    def require(self, tools: Sequence[str] = INLINE_TOOLS) -> None:
        """Raise `EnvironmentProblem` naming each missing tool."""
        gone = self.missing(tools)
        if gone:
            raise EnvironmentProblem(
                f"Pulumi toolchain incomplete in {self.bin_dir}: missing {', '.join(gone)}",
                remedy="load the air-gap bundle's Pulumi binaries there, or run lab/build"
                " in the lab",
            )

    def cli_version(self) -> str:
        """`pulumi version` of the folder's CLI (e.g. `v3.208.0`); no network involved."""
        self.require((PULUMI_CLI,))
        try:
            proc = subprocess.run(
                [str(self.bin_dir / PULUMI_CLI), "version"],
                capture_output=True,
                text=True,
                timeout=VERSION_TIMEOUT_S,
                check=False,
                env={**os.environ, "PULUMI_SKIP_UPDATE_CHECK": "true"},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            cli = self.bin_dir / PULUMI_CLI
            raise EnvironmentProblem(f"pulumi: cannot run {cli}: {exc}") from exc
        if proc.returncode != 0:
            raise EnvironmentProblem(
                f"pulumi: `pulumi version` failed (exit {proc.returncode}): {proc.stderr.strip()}"
            )
        return proc.stdout.strip()


def _private_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.chmod(0o700)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot create Pulumi state folder {path}: {exc}") from exc
    return path


def passphrase_file(state_dir: Path) -> Path:
    """The secrets passphrase file of a state folder, generated once (0600)."""
    path = _private_dir(state_dir) / PASSPHRASE_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(32))
    path.chmod(0o600)
    return path


def offline_environment(
    state_dir: Path,
    *,
    bin_dir: Path,
    tools: Sequence[str] = INLINE_TOOLS,
    base_path: str | None = None,
) -> dict[str, str]:
    """Environment variables for an offline Pulumi run whose state lives in `state_dir`.

    Checks `tools` exist in `bin_dir` first (raises `EnvironmentProblem` naming the missing
    ones). `base_path` is the PATH to extend (the process's own by default).
    """
    toolchain = PulumiToolchain(bin_dir.resolve())
    toolchain.require(tools)
    backend = _private_dir(state_dir / "backend")
    home = _private_dir(state_dir / "home")
    rest = os.environ.get("PATH", "") if base_path is None else base_path
    return {
        "PATH": os.pathsep.join(p for p in (str(toolchain.bin_dir), rest) if p),
        "PULUMI_HOME": str(home),
        "PULUMI_BACKEND_URL": backend.as_uri(),
        "PULUMI_CONFIG_PASSPHRASE_FILE": str(passphrase_file(state_dir)),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        # The CLI's version is pinned by the bundle; the Automation API need not ask the network.
        "PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK": "true",
    }


# --- the Python language host's stand-in ---------------------------------------------------


def language_host_launcher_text(python: str = "") -> str:
    """The stand-in `pulumi-language-python`: runs the installer's language host module."""
    return (
        "#!/bin/sh\n"
        f"{STAND_IN_MARK}\n"
        f"exec {shlex.quote(python or sys.executable)} -u -m {LANGUAGE_HOST_MODULE}"
        ' -parent "$PPID" "$@"\n'
    )


def is_stand_in(path: Path) -> bool:
    """Whether `path` is a stand-in launcher (the real host is a binary)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(len(STAND_IN_MARK) + 64)
    except OSError:
        return False
    return STAND_IN_MARK.encode() in head


def has_real_language_host(folder: Path) -> bool:
    """Whether `folder` holds an executable `pulumi-language-python` that is not a stand-in."""
    path = folder / PYTHON_LANGUAGE_HOST
    return os.access(path, os.X_OK) and not is_stand_in(path)


def write_language_host_launcher(folder: Path, cli_dir: Path) -> Path | None:
    """Put the stand-in `pulumi-language-python` in `folder`, unless the real host is in
    `cli_dir` (the CLI's folder) or in `folder`: the real one wins.

    Returns the launcher's path, or None when the real host is there (a stand-in written
    earlier into `folder` is removed then, so that PATH finds the real one)."""
    path = folder / PYTHON_LANGUAGE_HOST
    if has_real_language_host(cli_dir) or has_real_language_host(folder):
        if is_stand_in(path):
            path.unlink()
        return None
    text = language_host_launcher_text()
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o755)
        tmp.replace(path)
    return path
