"""A Python language host for the Pulumi CLI, served by the installer's own interpreter.

`pulumi up` in a project folder whose `Pulumi.yaml` says `runtime: python` starts the plugin
`pulumi-language-python` (found on PATH), reads the port it prints and asks it over gRPC
(`LanguageRuntime`) which plugins the program needs and to run the program. The real plugin is a
Go binary; where it cannot be had (the lab: the Go module proxy refuses its untagged module),
this module stands in for it. The engine writes a launcher of that name (see
`pulumi_toolchain.write_language_host_launcher`) into
`<state>/pulumi/bin`, only when the CLI's own folder has no real one, so the real binary wins.

It does what the real host does for the RPCs a deployment uses:

- `Run` starts `pulumi-language-python-exec` (the SDK's own runner, shipped with the CLI) with
  this interpreter, passing the monitor and engine addresses, project, stack, working folder,
  dry-run, parallelism, organization and root folder as arguments and the config and its secret
  keys as `PULUMI_CONFIG` / `PULUMI_CONFIG_SECRET_KEYS`; its output goes where the host's goes.
  Exit code 32 (the program already reported its error) is a bail; another non-zero exit is
  "Program exited with non-zero exit code: N", as the real host says.
- `GetRequiredPackages` / `GetRequiredPlugins`: each installed `pulumi-<x>` package's plugin,
  from its `pulumi-plugin.json` (or the package's name and version).
- `GetPluginInfo`, `Handshake`, `About`, `GetProgramDependencies`, `InstallDependencies` (the
  installer's interpreter already holds what the stacks import: nothing to install),
  `RuntimeOptionsPrompts` (none), `Cancel` (stops a running program).

Differences: the program always runs in this interpreter (the `virtualenv` / `toolchain` options
of `Pulumi.yaml` are not used), and there is no debugger attach.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from google.protobuf import empty_pb2  # type: ignore[import-untyped]
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
from pulumi.runtime.proto import language_pb2, language_pb2_grpc, plugin_pb2

from installer.engines.pulumi_toolchain import PYTHON_LANGUAGE_EXEC, PYTHON_LANGUAGE_HOST

# The exec runner's exit code for "the error was already shown to the user".
BAIL_EXIT_CODE = 32
# Packages named pulumi-* that carry no plugin (the real host skips them too).
NO_PLUGIN = frozenset({"pulumi", "pulumi-policy"})
_RELEASE = re.compile(r"^\d+\.\d+\.\d+$")
PARENT_POLL_S = 1.0


@dataclass(frozen=True)
class PluginNeed:
    """A resource plugin an installed Pulumi package needs."""

    name: str
    version: str
    server: str = ""


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _plugin_file(dist: importlib.metadata.Distribution, module: str) -> dict[str, Any] | None:
    for filename in ("pulumi-plugin.json", "pulumiplugin.json"):
        path = Path(str(dist.locate_file(f"{module}/{filename}")))
        if path.is_file():
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return data
    return None


def required_plugins() -> list[PluginNeed]:
    """The resource plugins of the `pulumi-<x>` packages this interpreter has installed.

    What the real host finds with `pip list` and each package's `pulumi-plugin.json`: a file
    saying `resource: false` means no plugin; without a file, the name is the package's less
    `pulumi-` and the version the package's (a pre-release version cannot be mapped and is
    skipped, as the real host does)."""
    found: dict[str, PluginNeed] = {}
    for dist in importlib.metadata.distributions():
        name = _normalized(dist.metadata["Name"] or "")
        if not name.startswith("pulumi-") or name in NO_PLUGIN:
            continue
        info = _plugin_file(dist, name.replace("-", "_")) or {}
        if info and not info.get("resource", False):
            continue
        version = str(info.get("version") or dist.version)
        if not _RELEASE.match(version.removeprefix("v")):
            continue
        plugin = str(info.get("name") or name.removeprefix("pulumi-"))
        found[plugin] = PluginNeed(
            name=plugin,
            version=version if version.startswith("v") else f"v{version}",
            server=str(info.get("server") or ""),
        )
    return [found[k] for k in sorted(found)]


def _dependencies(message: Any) -> list[Any]:
    # PluginDependency (older CLIs) and PackageDependency carry the same fields for a plugin.
    return [
        message(name=p.name, kind="resource", version=p.version, server=p.server)
        for p in required_plugins()
    ]


def exec_arguments(
    request: language_pb2.RunRequest, engine_address: str, tracing: str = ""
) -> list[str]:
    """The runner's arguments for a `Run` request, the real host's order and spelling."""
    args: list[str] = []

    def add(flag: str, value: str) -> None:
        if value:
            args.extend([f"--{flag}", value])

    add("monitor", request.monitor_address)
    add("engine", engine_address)
    add("project", request.project)
    add("stack", request.stack)
    add("pwd", request.pwd)
    add("dry_run", "true" if request.dryRun else "false")
    add("parallel", str(request.parallel))
    add("tracing", tracing)
    add("organization", request.organization)
    add("root_directory", request.info.root_directory)
    args.append(request.info.entry_point or request.program or ".")
    args.extend(request.args)
    return args


def exec_environment(request: language_pb2.RunRequest) -> dict[str, str]:
    """The runner's environment: this process's, with the stack's config and its secret keys."""
    env = dict(os.environ)
    env["PULUMI_CONFIG"] = json.dumps(dict(request.config))
    env["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(list(request.configSecretKeys))
    return env


def run_result(returncode: int) -> language_pb2.RunResponse:
    """How the real host reports a finished program."""
    if returncode == 0:
        return language_pb2.RunResponse()
    if returncode == BAIL_EXIT_CODE:
        return language_pb2.RunResponse(bail=True)
    if returncode < 0:
        return language_pb2.RunResponse(error=f"Program exited unexpectedly: signal {-returncode}")
    return language_pb2.RunResponse(error=f"Program exited with non-zero exit code: {returncode}")


class PythonLanguageHost(language_pb2_grpc.LanguageRuntimeServicer):
    """The `LanguageRuntime` service for Python programs, run with `python`."""

    def __init__(
        self, engine_address: str, executor: str, *, tracing: str = "", python: str = ""
    ) -> None:
        self.engine_address = engine_address
        self.executor = executor
        self.tracing = tracing
        self.python = python or sys.executable
        self._running: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def Handshake(
        self, request: language_pb2.LanguageHandshakeRequest, context: Any
    ) -> language_pb2.LanguageHandshakeResponse:
        if request.engine_address:
            self.engine_address = request.engine_address
        return language_pb2.LanguageHandshakeResponse()

    def GetPluginInfo(self, request: empty_pb2.Empty, context: Any) -> plugin_pb2.PluginInfo:
        return plugin_pb2.PluginInfo(version=importlib.metadata.version("pulumi"))

    def GetRequiredPlugins(
        self, request: language_pb2.GetRequiredPluginsRequest, context: Any
    ) -> language_pb2.GetRequiredPluginsResponse:
        return language_pb2.GetRequiredPluginsResponse(
            plugins=_dependencies(plugin_pb2.PluginDependency)
        )

    def GetRequiredPackages(
        self, request: language_pb2.GetRequiredPackagesRequest, context: Any
    ) -> language_pb2.GetRequiredPackagesResponse:
        return language_pb2.GetRequiredPackagesResponse(
            packages=_dependencies(plugin_pb2.PackageDependency)
        )

    def Run(self, request: language_pb2.RunRequest, context: Any) -> language_pb2.RunResponse:
        argv = [
            self.python,
            "-u",
            self.executor,
            *exec_arguments(request, self.engine_address, self.tracing),
        ]
        try:
            # The program's output is the host's: the CLI shows it as the real host's.
            proc = subprocess.Popen(argv, env=exec_environment(request))
        except OSError as exc:
            return language_pb2.RunResponse(
                error=f"Problem executing program (could not run language executor): {exc}"
            )
        with self._lock:
            self._running = proc
        try:
            returncode = proc.wait()
        finally:
            with self._lock:
                self._running = None
        sys.stdout.flush()
        return run_result(returncode)

    def Cancel(self, request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
        with self._lock:
            if self._running is not None and self._running.poll() is None:
                self._running.terminate()
        return empty_pb2.Empty()

    def InstallDependencies(
        self, request: language_pb2.InstallDependenciesRequest, context: Any
    ) -> Iterator[language_pb2.InstallDependenciesResponse]:
        # The stacks import the installer and its pinned Pulumi SDK, which this interpreter holds.
        yield language_pb2.InstallDependenciesResponse(
            stdout=f"programs run with {self.python}; nothing to install\n".encode()
        )

    def RuntimeOptionsPrompts(
        self, request: language_pb2.RuntimeOptionsRequest, context: Any
    ) -> language_pb2.RuntimeOptionsResponse:
        return language_pb2.RuntimeOptionsResponse()

    def About(self, request: language_pb2.AboutRequest, context: Any) -> language_pb2.AboutResponse:
        return language_pb2.AboutResponse(
            executable=self.python,
            version=platform.python_version(),
            metadata={"host": "onprem-installer stand-in"},
        )

    def GetProgramDependencies(
        self, request: language_pb2.GetProgramDependenciesRequest, context: Any
    ) -> language_pb2.GetProgramDependenciesResponse:
        deps = {(d.metadata["Name"] or ""): d.version for d in importlib.metadata.distributions()}
        return language_pb2.GetProgramDependenciesResponse(
            dependencies=[
                language_pb2.DependencyInfo(name=n, version=v) for n, v in sorted(deps.items()) if n
            ]
        )


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    # The CLI passes Go-style flags (`-root=...`) and the engine's address last.
    ap = argparse.ArgumentParser(prog=PYTHON_LANGUAGE_HOST, allow_abbrev=False)
    ap.add_argument("-tracing", "--tracing", default="")
    ap.add_argument("-use-executor", "--use-executor", dest="executor", default="")
    # The launcher names its parent (the CLI): a CLI gone before this process got going is seen.
    ap.add_argument("-parent", "--parent", type=int, default=0)
    for ignored in ("root", "virtualenv", "toolchain", "typechecker"):
        ap.add_argument(f"-{ignored}", f"--{ignored}", default="")
    ap.add_argument("engine", nargs="?", default="")
    args, _ = ap.parse_known_args(list(argv))
    return args


def _watch_parent(server: grpc.Server, parent: int) -> None:
    # A host whose CLI was killed would wait for good: stop when re-parented.
    stop = threading.Event()
    while not stop.wait(PARENT_POLL_S):
        if os.getppid() != parent:
            server.stop(0)
            return


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the language host; print the port on stdout as plugins must; serve until stopped."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    executor = args.executor or shutil.which(PYTHON_LANGUAGE_EXEC) or ""
    if not executor:
        print(
            f"{PYTHON_LANGUAGE_HOST}: could not find {PYTHON_LANGUAGE_EXEC} on PATH",
            file=sys.stderr,
        )
        return 1
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=_GRPC_CHANNEL_OPTIONS)
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(
        PythonLanguageHost(args.engine, executor, tracing=args.tracing), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
    parent = args.parent or os.getppid()
    threading.Thread(target=_watch_parent, args=(server, parent), daemon=True).start()
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
