"""The lab's scripts: cached builds, idempotent up, status that sees deaths, one-line faults."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.e2e.bootstrap.cli import site_lock
from tests.e2e.lab.labcopy import one_error_line
from tests.fixtures.lab import LAB_DIR, REPO, Lab, read_env_file, read_versions

pytestmark = pytest.mark.e2e

KUBE = LAB_DIR / "components" / "10-kube.sh"


def component(
    script: Path, verb: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """Run one lab component's verb, as lab/up does."""
    return subprocess.run(
        ["bash", str(script), verb],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


PART1_DAEMONS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "vm",
)


def test_second_build_builds_nothing(lab: Lab) -> None:
    v = read_versions()
    result = component(KUBE, "build", timeout=60)
    assert result.returncode == 0, result.stderr
    assert "building" not in result.stderr
    for tool, version in (
        ("etcd", v["ETCD_VERSION"]),
        ("kwok", v["KWOK_VERSION"]),
        ("kubernetes", v["KUBE_VERSION"]),
    ):
        assert f"{tool} {version} cached" in result.stderr
    assert lab.kubectl.parent.name == "bin"
    assert lab.kubectl.parent.parent.name == f"kubernetes-{v['KUBE_VERSION']}"


def cache_snapshot() -> dict[str, int]:
    """Modification times of every tool folder of the lab cache and of what is directly in it:
    a build, even one that ends in the same files, renames or writes there."""
    cache = Path(
        subprocess.run(
            ["bash", "-c", f'source {LAB_DIR / "lib.sh"} && printf %s "$LAB_CACHE"'],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    skip = {"gopath", "gocache", "build"}
    snapshot: dict[str, int] = {}
    for tool in cache.iterdir():
        if not tool.is_dir() or tool.name.startswith(".") or tool.name in skip:
            continue
        for path in (tool, *tool.iterdir()):
            snapshot[str(path)] = path.stat().st_mtime_ns
    return snapshot


def test_second_lab_build_of_every_component_builds_nothing(lab: Lab) -> None:
    del lab  # the session lab's build filled the cache
    before = cache_snapshot()
    started = time.monotonic()
    result = subprocess.run(
        [str(LAB_DIR / "build")], capture_output=True, text=True, timeout=300, check=False
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert not re.search(r"\b(building|fetching|downloading|installing)\b", result.stderr, re.I), (
        result.stderr
    )
    assert cache_snapshot() == before
    assert took < 60, f"a cached lab/build took {took:.0f} s"


def test_up_twice_changes_nothing(lab: Lab) -> None:
    # The whole lab/up, every component, on the running lab: it starts nothing and changes no
    # fact. It runs on the shared site, so under its lock.
    with site_lock():
        before = {p.name: p.read_text() for p in (lab.state / "run").glob("*.pid")}
        facts = read_env_file(lab.state / "env")
        result = subprocess.run(
            [str(LAB_DIR / "up")], capture_output=True, text=True, timeout=600, check=False
        )
        assert result.returncode == 0, result.stderr
        after = {p.name: p.read_text() for p in (lab.state / "run").glob("*.pid")}
    assert after == before
    assert set(PART1_DAEMONS) <= {name.removesuffix(".pid") for name in after}
    assert read_env_file(lab.state / "env") == facts
    assert (lab.state / "vm" / "known_hosts").read_text().startswith(f"{lab.vm_addr} ssh-ed25519 ")


def test_up_refuses_a_taken_port_in_one_line(lab: Lab, tmp_path: Path) -> None:
    # A second lab state on the same machine finds the running lab's ports taken.
    result = component(KUBE, "up", env={"LAB_STATE": str(tmp_path / "state")})
    error = one_error_line(result)
    v = read_versions()
    assert f"port 127.0.0.1:{v['LAB_ETCD_CLIENT_PORT']} for etcd is already in use" in error
    assert not (tmp_path / "state" / "run").exists() or not list(
        (tmp_path / "state" / "run").glob("*.pid")
    )


def test_failed_build_is_one_line_naming_its_log(tmp_path: Path) -> None:
    env = {"LAB_CACHE": str(tmp_path / "cache"), "GOPROXY": "off", "GOFLAGS": "-mod=mod"}
    result = component(KUBE, "build", env={**env, "GOPATH": "", "GOCACHE": ""}, timeout=120)
    error = one_error_line(result)
    version = read_versions()["ETCD_VERSION"]
    log = tmp_path / "cache" / f"etcd-{version}" / "build.log"
    assert error == f"[lab] error: etcd: build of {version} failed; see {log}"
    assert "GOPROXY=off" in log.read_text()
    assert not (tmp_path / "cache" / f"etcd-{version}" / "bin").exists()


def test_namespace_failure_is_one_line() -> None:
    # The real scripts, under another namespace name, run by a user who may not make one.
    # pytest's tmp_path sits under a 0700 folder that user cannot enter.
    with tempfile.TemporaryDirectory(prefix="lab-nonroot-") as top:
        Path(top).chmod(0o755)
        result = run_vm_up_unprivileged(Path(top))
    error = one_error_line(result)
    assert "vm: cannot create network namespace onprem-lab-denied" in error
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert "onprem-lab-denied" not in listed.stdout


def run_vm_up_unprivileged(top: Path) -> subprocess.CompletedProcess[str]:
    """Run a copy of 20-vm.sh up as nobody, with its own state and namespace name."""
    lab_copy = top / "lab"
    shutil.copytree(LAB_DIR, lab_copy, ignore=shutil.ignore_patterns(".state", ".state-*"))
    versions = lab_copy / "versions.env"
    versions.write_text(
        versions.read_text().replace("LAB_VM_NETNS=onprem-lab-vm", "LAB_VM_NETNS=onprem-lab-denied")
    )
    state = top / "state"
    state.mkdir()
    state.chmod(0o777)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    return subprocess.run(
        [*nobody, "bash", str(lab_copy / "components" / "20-vm.sh"), "up"],
        env={"PATH": os.environ["PATH"], "LAB_STATE": str(state), "HOME": str(state)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
