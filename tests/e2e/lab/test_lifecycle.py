"""The lab's scripts: cached builds, idempotent up, status that sees deaths, one-line faults."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.fixtures.lab import LAB_DIR, REPO, Lab, read_versions

pytestmark = pytest.mark.e2e

KUBE = LAB_DIR / "components" / "10-kube.sh"
VM = LAB_DIR / "components" / "20-vm.sh"


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


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single '[lab] error: ...' line a failing lab script must print, and nothing else."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("[lab] error: ")]
    assert len(errors) == 1, result.stderr
    assert lines[-1] == errors[0], result.stderr
    # No stack of shell errors: only the lab's own log lines come before the error.
    assert all(line.startswith("[lab] ") for line in lines), result.stderr
    return errors[0]


PART1_DAEMONS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "vm-sshd",
)


def pids(lab: Lab) -> dict[str, str]:
    """Pid of every daemon of components 10 and 20, by name."""
    return {d: (lab.state / "run" / f"{d}.pid").read_text().strip() for d in PART1_DAEMONS}


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


def test_up_twice_changes_nothing(lab: Lab) -> None:
    before = pids(lab)
    for script in (KUBE, VM):
        result = component(script, "up")
        assert result.returncode == 0, result.stderr
    assert pids(lab) == before
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
    shutil.copytree(LAB_DIR, lab_copy, ignore=shutil.ignore_patterns(".state"))
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
