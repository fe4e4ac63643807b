"""The stand-in Python language host: its RPCs, its launcher, and runs under the real Pulumi CLI."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2
from pulumi.runtime.proto import language_pb2, language_pb2_grpc

from installer.engines.pulumi import PulumiEngine
from installer.engines.pulumi_language_host import (
    BAIL_EXIT_CODE,
    exec_arguments,
    exec_environment,
    required_plugins,
    run_result,
)
from installer.engines.pulumi_toolchain import (
    INLINE_TOOLS,
    PYTHON_LANGUAGE_EXEC,
    PYTHON_LANGUAGE_HOST,
    is_stand_in,
    write_language_host_launcher,
)
from installer.state import StateDir
from tests.fixtures.auxvm import lab_cache
from tests.fixtures.lab import read_versions
from tests.unit.test_pulumi_toolchain import _tool_dir

HOST_START_S = 30


def _real_binary(path: Path) -> Path:
    """An executable that is not a stand-in, as the Go host would be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("true") or "/bin/true", path)
    return path


# --- the request mapping ---------------------------------------------------------------------


def test_run_arguments_are_the_real_hosts() -> None:
    request = language_pb2.RunRequest(
        monitor_address="127.0.0.1:4001",
        project="onprem-nodes",
        stack="lab",
        pwd="/site/stacks/nodes",
        dryRun=True,
        parallel=16,
        organization="organization",
        info=language_pb2.ProgramInfo(
            root_directory="/site/stacks/nodes", program_directory="/site/stacks/nodes"
        ),
        args=["extra"],
    )
    assert exec_arguments(request, "127.0.0.1:4000") == [
        "--monitor", "127.0.0.1:4001",
        "--engine", "127.0.0.1:4000",
        "--project", "onprem-nodes",
        "--stack", "lab",
        "--pwd", "/site/stacks/nodes",
        "--dry_run", "true",
        "--parallel", "16",
        "--organization", "organization",
        "--root_directory", "/site/stacks/nodes",
        ".",
        "extra",
    ]  # fmt: skip
    update = language_pb2.RunRequest(project="p", stack="s", info={"entry_point": "main.py"})
    args = exec_arguments(update, "", tracing="127.0.0.1:9411")
    assert args[args.index("--dry_run") + 1] == "false"
    assert args[args.index("--tracing") + 1] == "127.0.0.1:9411"
    assert "--engine" not in args and args[-1] == "main.py"


def test_config_and_secret_keys_go_in_the_environment() -> None:
    request = language_pb2.RunRequest(
        config={"onprem-dns:args": '{"a": 1}', "onprem-dns:token": "t0ken"},
        configSecretKeys=["onprem-dns:token"],
    )
    env = exec_environment(request)
    assert json.loads(env["PULUMI_CONFIG"]) == {
        "onprem-dns:args": '{"a": 1}',
        "onprem-dns:token": "t0ken",
    }
    assert json.loads(env["PULUMI_CONFIG_SECRET_KEYS"]) == ["onprem-dns:token"]
    assert env["PATH"] == os.environ["PATH"]


def test_exit_codes_are_reported_as_the_real_host_does() -> None:
    assert run_result(0) == language_pb2.RunResponse()
    assert run_result(BAIL_EXIT_CODE) == language_pb2.RunResponse(bail=True)
    assert run_result(1).error == "Program exited with non-zero exit code: 1"
    assert not run_result(1).bail
    assert run_result(-9).error == "Program exited unexpectedly: signal 9"


def test_required_plugins_come_from_the_installed_packages() -> None:
    needs = {p.name: p for p in required_plugins()}
    kubernetes = importlib.metadata.version("pulumi_kubernetes")
    assert needs["kubernetes"].version == f"v{kubernetes}"
    assert "pulumi" not in needs  # the SDK itself carries no plugin


# --- the server, through its launcher --------------------------------------------------------


@pytest.fixture
def host(tmp_path: Path) -> Iterator[language_pb2_grpc.LanguageRuntimeStub]:
    """The stand-in started as the CLI starts it: its launcher, the engine's address last."""
    launcher = write_language_host_launcher(tmp_path / "bin", tmp_path / "cli")
    assert launcher is not None
    proc = subprocess.Popen(
        [str(launcher), "-use-executor", str(tmp_path / "exec"), "127.0.0.1:1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().strip())
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=HOST_START_S)
            yield language_pb2_grpc.LanguageRuntimeStub(channel)
    finally:
        proc.terminate()
        proc.wait(timeout=HOST_START_S)


def test_the_host_answers_the_cli(host: language_pb2_grpc.LanguageRuntimeStub) -> None:
    info = host.GetPluginInfo(empty_pb2.Empty())
    assert info.version == importlib.metadata.version("pulumi")
    program = language_pb2.ProgramInfo(root_directory="/p", program_directory="/p", entry_point=".")
    packages = host.GetRequiredPackages(language_pb2.GetRequiredPackagesRequest(info=program))
    kubernetes = f"v{importlib.metadata.version('pulumi_kubernetes')}"
    assert [(p.name, p.kind, p.version) for p in packages.packages] == [
        ("kubernetes", "resource", kubernetes)
    ]
    plugins = host.GetRequiredPlugins(language_pb2.GetRequiredPluginsRequest(info=program))
    assert [(p.name, p.version) for p in plugins.plugins] == [("kubernetes", kubernetes)]
    about = host.About(language_pb2.AboutRequest(info=program))
    assert about.executable == sys.executable
    deps = host.GetProgramDependencies(language_pb2.GetProgramDependenciesRequest(info=program))
    assert ("pulumi", importlib.metadata.version("pulumi")) in {
        (d.name, d.version) for d in deps.dependencies
    }
    assert host.Handshake(language_pb2.LanguageHandshakeRequest(engine_address="127.0.0.1:2"))
    assert (
        host.RuntimeOptionsPrompts(language_pb2.RuntimeOptionsRequest(info=program)).ListFields()
        == []
    )
    installed = list(
        host.InstallDependencies(language_pb2.InstallDependenciesRequest(info=program))
    )
    assert b"nothing to install" in b"".join(m.stdout for m in installed)


def test_a_host_without_its_runner_says_so(tmp_path: Path) -> None:
    launcher = write_language_host_launcher(tmp_path / "bin", tmp_path / "cli")
    assert launcher is not None
    proc = subprocess.run(
        [str(launcher), "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=HOST_START_S,
        env={**os.environ, "PATH": str(tmp_path / "empty")},
        check=False,
    )
    assert proc.returncode == 1
    assert f"could not find {PYTHON_LANGUAGE_EXEC} on PATH" in proc.stderr


@pytest.mark.parametrize("serving", [True, False], ids=["serving", "starting"])
def test_a_host_whose_cli_died_stops(tmp_path: Path, serving: bool) -> None:
    """A CLI killed outright cannot stop its plugins: the host notices it was re-parented,
    also when that happened before the host got going (the launcher names the parent)."""
    launcher = write_language_host_launcher(tmp_path / "bin", tmp_path / "cli")
    assert launcher is not None
    # A stand-in CLI: starts the host, prints its pid and port, then waits to be killed.
    cli = subprocess.Popen(
        [
            "sh",
            "-c",
            f"{launcher} -use-executor /x 127.0.0.1:1 > {tmp_path}/port & echo $!; wait",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert cli.stdout is not None
    host_pid = int(cli.stdout.readline())
    port = tmp_path / "port"
    cmdline = Path(f"/proc/{host_pid}/cmdline")
    deadline = time.monotonic() + HOST_START_S
    while time.monotonic() < deadline:
        if serving:  # the port is out, as the CLI waits for it
            done = port.is_file() and bool(port.read_text(encoding="utf-8").strip())
        else:  # the launcher has handed over to Python, which is still starting
            done = b"pulumi_language_host" in cmdline.read_bytes()
        if done:
            break
        time.sleep(0.02)
    cli.kill()
    cli.wait()
    assert _ends(host_pid, HOST_START_S), "the host kept running after its CLI was killed"


def _ends(pid: int, timeout_s: float) -> bool:
    """Whether process `pid` exits within `timeout_s` (killed otherwise)."""
    deadline = time.monotonic() + timeout_s
    stat = Path(f"/proc/{pid}/stat")
    while time.monotonic() < deadline:
        try:
            if stat.read_text().split()[2] == "Z":
                return True  # exited; its new parent has not reaped it yet
        except (FileNotFoundError, ProcessLookupError):
            return True
        time.sleep(0.2)
    os.kill(pid, 9)
    return False


# --- the launcher ----------------------------------------------------------------------------


def test_the_launcher_is_written_only_where_the_real_host_is_absent(tmp_path: Path) -> None:
    folder, cli = tmp_path / "state-bin", tmp_path / "cli"
    cli.mkdir()
    launcher = write_language_host_launcher(folder, cli)
    assert launcher == folder / PYTHON_LANGUAGE_HOST
    assert is_stand_in(launcher) and os.access(launcher, os.X_OK)
    assert sys.executable in launcher.read_text(encoding="utf-8")
    # The real host in the CLI's folder wins: the stand-in goes, PATH finds the real one.
    _real_binary(cli / PYTHON_LANGUAGE_HOST)
    assert write_language_host_launcher(folder, cli) is None
    assert not launcher.exists()
    # Where the bundle put the real host in the state folder itself, it is left alone.
    real = _real_binary(folder / PYTHON_LANGUAGE_HOST)
    (cli / PYTHON_LANGUAGE_HOST).unlink()
    assert write_language_host_launcher(folder, cli) is None
    assert (
        not is_stand_in(real) and real.read_bytes() == Path(shutil.which("true") or "").read_bytes()
    )


def test_the_engine_puts_the_launcher_first_on_path(tmp_path: Path) -> None:
    cli = _tool_dir(tmp_path, INLINE_TOOLS)
    engine = PulumiEngine(StateDir(tmp_path / "state"), bin_dir=cli)
    env = engine.env()
    plugins = tmp_path / "state" / "pulumi" / "bin"
    assert engine.tool_dirs() == [plugins, cli]
    assert env["PATH"].split(os.pathsep)[:2] == [str(plugins), str(cli.resolve())]
    assert shutil.which(PYTHON_LANGUAGE_HOST, path=env["PATH"]) == str(
        plugins / PYTHON_LANGUAGE_HOST
    )
    _real_binary(cli / PYTHON_LANGUAGE_HOST)
    env = engine.env()
    assert shutil.which(PYTHON_LANGUAGE_HOST, path=env["PATH"]) == str(cli / PYTHON_LANGUAGE_HOST)


# --- under the real CLI ----------------------------------------------------------------------

PROGRAM = """\
import pulumi

config = pulumi.Config()
print("program ran")
pulumi.export("who", config.require("who"))
pulumi.export("token_length", config.require_secret("token").apply(len))
"""


def _cli_dir() -> Path:
    folder = lab_cache() / f"pulumi-{read_versions()['PULUMI_VERSION']}" / "bin"
    if not (folder / "pulumi").is_file() or not (folder / PYTHON_LANGUAGE_EXEC).is_file():
        pytest.fail(f"the Pulumi CLI is not built in {folder}: run lab/build first", pytrace=False)
    return folder


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A `runtime: python` project with a stack and its config, the stand-in on PATH."""
    cli = _cli_dir()
    launcher = write_language_host_launcher(tmp_path / "bin", tmp_path / "no-real-host")
    assert launcher is not None
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "Pulumi.yaml").write_text("name: hostproof\nruntime: python\n", encoding="utf-8")
    (folder / "__main__.py").write_text(PROGRAM, encoding="utf-8")
    (tmp_path / "backend").mkdir()
    env = {
        "PATH": os.pathsep.join([str(launcher.parent), str(cli), "/usr/bin", "/bin"]),
        "HOME": str(tmp_path),
        "PULUMI_HOME": str(tmp_path / "home"),
        "PULUMI_BACKEND_URL": (tmp_path / "backend").as_uri(),
        "PULUMI_CONFIG_PASSPHRASE": "unit-test-passphrase",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    }
    _pulumi(folder, env, "stack", "init", "dev")
    _pulumi(folder, env, "config", "set", "who", "world")
    _pulumi(folder, env, "config", "set", "--secret", "token", stdin="s3cr3t-value")
    return folder, env


def _pulumi(
    folder: Path, env: dict[str, str], *argv: str, stdin: str | None = None, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["pulumi", *argv, "--non-interactive"],
        cwd=folder,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if ok:
        assert proc.returncode == 0, f"pulumi {' '.join(argv)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_pulumi_up_runs_the_program_with_its_config_and_secrets(
    project: tuple[Path, dict[str, str]],
) -> None:
    folder, env = project
    up = _pulumi(folder, env, "up", "--yes")
    assert "program ran" in up.stdout
    outputs = json.loads(_pulumi(folder, env, "stack", "output", "--json", "--show-secrets").stdout)
    assert outputs == {"who": "world", "token_length": len("s3cr3t-value")}
    assert "s3cr3t-value" not in up.stdout + up.stderr
    assert _pulumi(folder, env, "preview", "--expect-no-changes").returncode == 0


def test_a_failing_program_is_reported_as_the_real_host_reports_it(
    project: tuple[Path, dict[str, str]],
) -> None:
    folder, env = project
    # An exception: the runner shows the traceback and bails; no second, generic error.
    (folder / "__main__.py").write_text(PROGRAM + 'raise ValueError("boom")\n', encoding="utf-8")
    failed = _pulumi(folder, env, "preview", ok=False)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "ValueError: boom" in text
    assert "non-zero exit code" not in text
    # A run error (missing config): logged by the program, then the host's exit-code error.
    (folder / "__main__.py").write_text(PROGRAM, encoding="utf-8")
    _pulumi(folder, env, "config", "rm", "who")
    failed = _pulumi(folder, env, "preview", ok=False)
    text = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "Missing required configuration variable 'hostproof:who'" in text
    assert "Program exited with non-zero exit code: 1" in text
