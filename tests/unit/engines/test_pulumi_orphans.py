"""Orphaned Pulumi providers: found by their dead engine address, ended; live ones are left."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from installer.engines import pulumi_orphans

SLEEP = "import time; time.sleep(60)"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _process(argv0: str, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([argv0, "-c", SLEEP, *args], executable=sys.executable)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if any(p.pid == proc.pid for p in pulumi_orphans.providers()):
                break
            time.sleep(0.05)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_provider_whose_engine_is_gone_is_ended() -> None:
    engine = f"127.0.0.1:{_closed_port()}"
    with _process("pulumi-resource-kubernetes", engine) as proc:
        assert [p.pid for p in pulumi_orphans.orphans() if p.pid == proc.pid] == [proc.pid]
        ended = pulumi_orphans.reap(grace_s=2.0)
        assert f"orphaned provider pulumi-resource-kubernetes (pid {proc.pid})" in ended
        assert proc.wait(timeout=5) != 0


def test_a_provider_whose_engine_answers_is_left_alone() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        engine = f"127.0.0.1:{server.getsockname()[1]}"
        with _process("pulumi-resource-kubernetes", engine) as proc:
            assert proc.pid in [p.pid for p in pulumi_orphans.providers()]
            pulumi_orphans.reap(grace_s=0.5)
            assert proc.poll() is None


def test_the_dynamic_provider_is_recognised_and_other_programs_are_not() -> None:
    engine = f"127.0.0.1:{_closed_port()}"
    assert pulumi_orphans.is_provider(("python", "-u", "-m", "pulumi.dynamic", engine))
    assert pulumi_orphans.is_provider(("/x/pulumi-resource-kubernetes", engine))
    assert not pulumi_orphans.is_provider(("pulumi", "up", engine))
    assert not pulumi_orphans.is_provider(("python", "-m", "pytest", engine))
    with _process("some-other-program", engine) as proc:
        pulumi_orphans.reap(grace_s=0.5)
        assert proc.poll() is None


def test_pending_helm_creates_are_the_releases_a_killed_create_left() -> None:
    release = "kubernetes:helm.sh/v3:Release"
    pending = [
        {"type": "creating", "resource": {"type": release,
                                          "inputs": {"name": "openebs", "namespace": "openebs"}}},
        {"type": "creating", "resource": {"type": release, "inputs": {"name": "kc"}}},
        {"type": "updating", "resource": {"type": release,
                                          "inputs": {"name": "up", "namespace": "x"}}},
        {"type": "creating", "resource": {"type": "kubernetes:core/v1:Namespace",
                                          "inputs": {"metadata": {"name": "openebs"}}}},
    ]  # fmt: skip
    assert pulumi_orphans.pending_helm_creates(pending) == [
        ("openebs", "openebs"),
        ("default", "kc"),
    ]
    assert pulumi_orphans.forget_helm_releases("/nonexistent", None, []) == []


def test_torn_backend_metadata_is_removed_and_whole_metadata_kept(tmp_path: Path) -> None:
    stacks = tmp_path / ".pulumi" / "stacks" / "onprem-nodes"
    stacks.mkdir(parents=True)
    (stacks / "lab.json").write_text("{}")
    (stacks / "lab.json.attrs").write_text("")
    (stacks / "lab.json.bak.attrs").write_text('{"md5": "x"}')
    (stacks / "other.json.attrs").write_text('{"md5": ')
    done = pulumi_orphans.repair_file_backend(tmp_path)
    assert sorted(done) == [
        "torn backend metadata .pulumi/stacks/onprem-nodes/lab.json.attrs",
        "torn backend metadata .pulumi/stacks/onprem-nodes/other.json.attrs",
    ]
    assert sorted(p.name for p in stacks.iterdir()) == ["lab.json", "lab.json.bak.attrs"]
    assert pulumi_orphans.repair_file_backend(tmp_path) == []


def test_a_lock_of_a_killed_cli_not_yet_reaped_is_stale(tmp_path: Path) -> None:
    """A killed run's CLI is a zombie until something reaps it; its lock must still be cleared,
    or the re-run right after the kill fails with 'another update is running'."""
    from installer.engines.pulumi import _alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _alive(child.pid)
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.02)
        os.kill(child.pid, 0)  # a zombie still answers signal 0 ...
        assert not _alive(child.pid)  # ... but holds no lock
    finally:
        child.kill()
        child.wait()
    assert not _alive(child.pid)
