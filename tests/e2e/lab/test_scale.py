"""A second, throwaway Kubernetes lab with LAB_NODES=200, started and stopped from nothing.

It runs a copy of lab/ whose ports are moved off the session lab's, with its own state folder,
so the lab other tests use is left alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.fixtures.lab import LAB_DIR, REPO, Lab, read_env_file, read_versions

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PORT_SHIFT = 10000
KUBE_DAEMONS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def kube_component(lab_dir: Path, verb: str, env: dict[str, str]) -> None:
    """Run 10-kube.sh VERB of a lab copy, failing the test with its output."""
    result = subprocess.run(
        ["bash", str(lab_dir / "components" / "10-kube.sh"), verb],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def port_in_use(port: int) -> bool:
    """Whether anything listens on that TCP port of this host."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return bool(out.strip())


@pytest.fixture
def second_lab(lab: Lab, tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A copy of lab/ on shifted ports, its env, and a guaranteed 10-kube down afterwards."""
    del lab  # needs the toolchain the session lab built
    lab_copy = tmp_path / "lab"
    shutil.copytree(LAB_DIR, lab_copy, ignore=shutil.ignore_patterns(".state"))
    versions = lab_copy / "versions.env"
    text = versions.read_text()
    for name in (
        "LAB_KUBE_APISERVER_PORT",
        "LAB_ETCD_CLIENT_PORT",
        "LAB_ETCD_PEER_PORT",
        "LAB_KUBE_CONTROLLER_MANAGER_PORT",
        "LAB_KUBE_SCHEDULER_PORT",
        "LAB_KWOK_PORT",
    ):
        text = re.sub(
            rf"^({name})=(\d+)$", lambda m: f"{m[1]}={int(m[2]) + PORT_SHIFT}", text, flags=re.M
        )
    versions.write_text(text)
    env = {"LAB_STATE": str(tmp_path / "state"), "LAB_NODES": "200"}
    try:
        yield lab_copy, env
    finally:
        kube_component(lab_copy, "down", env)


def test_two_hundred_nodes_then_down_leaves_nothing(
    second_lab: tuple[Path, dict[str, str]],
) -> None:
    lab_copy, env = second_lab
    ports = read_env_file(lab_copy / "versions.env")
    kube_component(lab_copy, "up", env)
    state = Path(env["LAB_STATE"])
    facts = read_env_file(state / "env.d" / "kube.env")
    assert facts["LAB_KUBE_SERVER"] == f"https://127.0.0.1:{ports['LAB_KUBE_APISERVER_PORT']}"

    api = config.new_client_from_config(config_file=facts["LAB_KUBECONFIG"])
    nodes = client.CoreV1Api(api).list_node().items
    names = {n.metadata.name for n in nodes}
    assert len(nodes) == 200
    assert {"cpu-1", "cpu-197", "a100-1", "a100-2", "h100-1"} <= names
    assert all(
        any(c.type == "Ready" and c.status == "True" for c in n.status.conditions) for n in nodes
    )
    gpus = sum(int(n.status.allocatable.get("nvidia.com/gpu", "0")) for n in nodes)
    assert gpus == 24
    assert client.VersionApi(api).get_code().git_version == read_versions()["KUBE_VERSION"]

    pids = [int((state / "run" / f"{d}.pid").read_text()) for d in KUBE_DAEMONS]
    kube_component(lab_copy, "down", env)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} survived down"
    assert not (state / "kube").exists()
    assert not port_in_use(int(ports["LAB_KUBE_APISERVER_PORT"]))
    assert not port_in_use(int(ports["LAB_ETCD_CLIENT_PORT"]))
