"""The nodes phase's runtime part (installer/phases/nodes.py), without a node: which clusters it
configures, the play's variables, and the errors that name the node."""

from __future__ import annotations

from pathlib import Path

import pytest

from installer.engines.ansible import AnsibleHost, TaskOutcome
from installer.errors import BadInputError, EnvironmentProblem, ExitCode, FailedError
from installer.inventory import load_inventory
from installer.inventory.models import Cluster
from installer.phases.nodes import (
    _failure_error,
    runtime_vars,
    sandbox_image,
)
from installer.release import load_release
from installer.site import runtime_configured
from installer.state import StateDir
from tests.fixtures.playbooks import failed_result

REPO = Path(__file__).resolve().parents[3]
LAB = REPO / "inventories" / "lab.yml"
NODE_SSH = {"user": "ops", "private_key": "file:/k", "known_hosts": "/kh"}


def _cluster(**changes: object) -> Cluster:
    cluster = load_inventory(LAB).clusters[0]
    data = cluster.model_dump(mode="json")
    data.update(changes)
    return Cluster.model_validate(data)


@pytest.mark.parametrize(
    ("configure", "with_ssh", "configured"),
    [("auto", True, True), ("auto", False, False), ("ssh", True, True), ("none", True, False)],
)
def test_which_clusters_get_their_runtime_configured(
    configure: str, with_ssh: bool, configured: bool
) -> None:
    cluster = _cluster(
        node_ssh=NODE_SSH if with_ssh else None, node_runtime={"configure": configure}
    )
    assert runtime_configured(cluster) is configured


def test_the_play_gets_paths_names_and_mirrors_never_a_secret(tmp_path: Path) -> None:
    inv = load_inventory(LAB)
    cluster = _cluster(node_runtime={"restart": ["/lab/restart"], "certs_dir": "/x/certs.d"})
    state = StateDir(tmp_path)
    state.secret("hub-pull-password")
    found = runtime_vars(inv, cluster, state)
    assert found["node_hub_registry"] == "hub.ml.lab.test:5000"
    assert found["node_sandbox_image"] == "hub.ml.lab.test:5000/registry.k8s.io/pause:3.10"
    assert found["node_pull_login"] == "cluster-pull"
    assert found["node_pull_password_file"] == str(tmp_path / "secrets" / "hub-pull-password")
    assert found["node_hub_ca_file"] == str(state.ca_cert)
    assert found["node_containerd_certs_dir"] == "/x/certs.d"
    assert found["node_containerd_restart"] == ["/lab/restart"]
    names = [m["name"] for m in found["node_mirrors"]]
    assert names == sorted(names)
    assert {"docker.io", "ghcr.io", "quay.io", "registry.k8s.io"} <= set(names)
    docker = next(m for m in found["node_mirrors"] if m["name"] == "docker.io")
    assert docker["server"] == "https://registry-1.docker.io"
    password = (tmp_path / "secrets" / "hub-pull-password").read_text().strip()
    assert password not in repr(found)


def test_a_release_without_a_pause_image_is_refused() -> None:
    release = load_release()
    without = release.model_copy(
        update={"images": [i for i in release.images if i.name != "registry.k8s.io/pause"]}
    )
    with pytest.raises(BadInputError, match=r"registry\.k8s\.io/pause"):
        sandbox_image(load_inventory(LAB), without)


HOSTS = [AnsibleHost("cpu-1", "10.213.1.2", "labops", "10.213.1.2 ssh-ed25519 AAAA")]


def test_an_unreachable_node_is_named_with_its_address() -> None:
    outcome = TaskOutcome("cpu-1", "Ask containerd its version", "nodes/containerd",
                          "Failed to connect to the host via ssh: No route to host")  # fmt: skip
    err = _failure_error(failed_result(unreachable=[outcome]), _cluster(), HOSTS)
    assert isinstance(err, EnvironmentProblem)
    assert err.exit_code is ExitCode.ENVIRONMENT
    assert "cluster lab: node cpu-1 (labops@10.213.1.2:22)" in err.message
    assert err.remedy and "node_ssh.addresses" in err.remedy


def test_a_wrong_host_key_says_which_file_to_fix() -> None:
    outcome = TaskOutcome("cpu-1", "Ask containerd its version", "nodes/containerd",
                          "Host key verification failed.")  # fmt: skip
    err = _failure_error(failed_result(unreachable=[outcome]), _cluster(), HOSTS)
    assert isinstance(err, EnvironmentProblem)
    assert err.remedy and "node_ssh.known_hosts" in err.remedy


def test_a_node_without_containerd_fails_with_the_roles_remedy() -> None:
    msg = "no containerd on this node (No such file). remedy: install containerd"
    outcome = TaskOutcome("cpu-1", "Require containerd", "nodes/containerd", msg)
    err = _failure_error(failed_result(failures=[outcome]), _cluster(), HOSTS)
    assert isinstance(err, FailedError)
    assert "node cpu-1" in err.message and "step 'Require containerd'" in err.message
    assert err.remedy == "install containerd"
