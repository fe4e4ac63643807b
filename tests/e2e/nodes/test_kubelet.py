"""A real kubelet runs verify's preset pod on the lab's node host, from the hub (issue 19).

`lab/components/25-node.sh kubelet-up` joins a kubelet (built with the lab's Kubernetes binaries)
on the node host's containerd to the lab cluster as a node of its own, `LAB_KUBELET_NODE_NAME`.
The test inventory puts that node in a pool of its own with a small preset, so verify's pod for
that preset lands there and must start: the kubelet has containerd pull the probe image from
the hub, under the hub's name, and the pod's sandbox image through the hub's mirror.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from installer.checks.acceptance import PROBE_IMAGE, ProbeNamespace, check_preset
from installer.checks.context import SiteAccess
from installer.checks.framework import Finding
from installer.inventory import load_inventory
from installer.site import site_image
from tests.e2e.bootstrap.cli import installer, plain_env
from tests.e2e.bootstrap.runs import Bootstrap, run_bootstrap, upstream
from tests.e2e.nodes.test_image_pulls import HUB_PHASES, crictl, node_inventory
from tests.fixtures.lab import LAB_DIR, Lab, site_lock

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

POOL = "live"
PRESET = "live-small"
NODE_SCRIPT = LAB_DIR / "components" / "25-node.sh"
NOT_READY = "node.kubernetes.io/not-ready"


def live_inventory(lab: Lab, dest: Path, configure: str = "ssh") -> Path:
    """The nodes tests' inventory for the kubelet's node: its runtime configured over SSH (or
    not, `configure: none`), in a pool of its own with a preset small enough for this machine."""
    name = lab.env["LAB_KUBELET_NODE_NAME"]
    path = node_inventory(lab, dest, addresses={name: lab.env["LAB_NODE_ADDR"]})
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    cluster = data["clusters"][0]
    cluster["node_runtime"]["nodes"] = [name]
    cluster["node_runtime"]["configure"] = configure
    cluster["node_pools"].append({"name": POOL, "nodes": [name], "cpu": 1, "memory": "1Gi"})
    cluster["presets"].append({"name": PRESET, "cpu": "100m", "memory": "64Mi", "pools": [POOL]})
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def node_script(verb: str) -> None:
    proc = subprocess.run(
        ["bash", str(NODE_SCRIPT), verb], capture_output=True, text=True, check=False, timeout=600
    )
    assert proc.returncode == 0, f"25-node.sh {verb}: {(proc.stdout + proc.stderr)[-3000:]}"


def preset_finding(inventory: Path) -> Finding:
    """verify's `sched.preset` check for PRESET, as `installer verify` runs it."""
    access = SiteAccess(load_inventory(inventory))
    cluster = access.inventory.clusters[0]
    (preset,) = [p for p in cluster.presets if p.name == PRESET]
    namespaces = ProbeNamespace()
    try:
        return check_preset(access, namespaces, cluster, preset)
    finally:
        namespaces.delete()


def kube_node(lab: Lab, name: str) -> dict[str, Any]:
    proc = subprocess.run(
        [str(lab.kubectl), "--kubeconfig", str(lab.kubeconfig), "get", "node", name, "-o", "json"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def wait_schedulable(lab: Lab, name: str, timeout: float = 90.0) -> dict[str, Any]:
    """The node once Ready and free of the not-ready taint (a containerd restart by the nodes
    phase can leave the kubelet reporting its runtime down for a status period)."""
    deadline = time.monotonic() + timeout
    while True:
        node = kube_node(lab, name)
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        taints = [t["key"] for t in node["spec"].get("taints", [])]
        if ready and ready[0]["status"] == "True" and NOT_READY not in taints:
            return node
        assert time.monotonic() < deadline, f"{name} not schedulable: {ready}, taints {taints}"
        time.sleep(1)


@dataclass(frozen=True)
class LiveSite:
    node: dict[str, Any]
    unconfigured: Bootstrap
    before: Finding
    configured: Bootstrap
    after: Finding
    probe_on_node: subprocess.CompletedProcess[str]
    probe_ref: str
    hub: str


@pytest.fixture(scope="module")
def live(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSite]:
    tmp = tmp_path_factory.mktemp("kubelet")
    inventory = live_inventory(lab, tmp / "live.yml")
    unmanaged = live_inventory(lab, tmp / "unmanaged.yml", configure="none")
    env = plain_env()
    hub = str(load_inventory(inventory).aux_vm.hostname)
    probe_ref = site_image(load_inventory(inventory), PROBE_IMAGE)
    with site_lock():
        upstream("up")
        node_script("kubelet-up")
        try:
            # The node's containerd as the lab installed it, without the probe image.
            rc, _, tail = installer(
                "destroy", "-i", str(inventory), "--yes", "--only", "nodes",
                log_dir=tmp / "logs", timeout=900, env=env,
            )  # fmt: skip
            assert rc == 0, f"destroy --only nodes failed (exit {rc}):\n{tail}"
            crictl(lab, "rmi", probe_ref)
            node = wait_schedulable(lab, lab.env["LAB_KUBELET_NODE_NAME"])
            # An operator who keeps the runtime to themselves and forgot it: labels and taints
            # only, containerd as installed (no trust in the site CA, no mirrors).
            unconfigured = run_bootstrap(
                unmanaged, tmp / "unmanaged", env, *HUB_PHASES, "--only", "nodes"
            )
            wait_schedulable(lab, lab.env["LAB_KUBELET_NODE_NAME"])
            before = preset_finding(unmanaged)
            configured = run_bootstrap(inventory, tmp / "configured", env, "--only", "nodes")
            wait_schedulable(lab, lab.env["LAB_KUBELET_NODE_NAME"])
            upstream("down")
            try:
                after = preset_finding(inventory)
            finally:
                upstream("up")
            probe_on_node = crictl(lab, "inspecti", probe_ref)
            yield LiveSite(
                node, unconfigured, before, configured, after, probe_on_node, probe_ref, hub
            )
            rc, _, tail = installer(
                "destroy", "-i", str(inventory), "--yes", "--only", "nodes",
                log_dir=tmp / "logs", timeout=900, env=env,
            )  # fmt: skip
            assert rc == 0, f"destroy --only nodes failed (exit {rc}):\n{tail}"
        finally:
            node_script("kubelet-down")


def test_a_real_kubelet_joins_the_cluster(lab: Lab, live: LiveSite) -> None:
    status = live.node["status"]
    ready = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True", status["conditions"]
    info = status["nodeInfo"]
    assert info["kubeletVersion"] == lab.kube_version
    assert info["containerRuntimeVersion"].startswith("containerd://"), info
    # Not one of kwok's: no fake-node annotation, kwok leaves it alone.
    assert "kwok.x-k8s.io/node" not in live.node["metadata"].get("annotations", {})


def test_with_the_runtime_left_as_installed_the_preset_pod_does_not_start(
    lab: Lab, live: LiveSite
) -> None:
    assert live.unconfigured.rc == 0, live.unconfigured.tail
    assert not live.before.ok, live.before.message
    node = lab.env["LAB_KUBELET_NODE_NAME"]
    assert f"a pod of {PRESET} was scheduled on {node} but did not start" in live.before.message
    # The runtime could not pull: the sandbox image or the probe image.
    assert "pull" in live.before.message.lower(), live.before.message


def test_after_the_nodes_phase_the_preset_pod_runs_from_the_hub(lab: Lab, live: LiveSite) -> None:
    assert live.configured.rc == 0, live.configured.tail
    node = lab.env["LAB_KUBELET_NODE_NAME"]
    assert live.after.ok, live.after.message
    assert live.after.message == f"scheduled on {node} and started (pools {POOL})"
    # The upstream registry was down: the node's containerd holds the probe image by the hub's
    # name, pulled from there.
    assert live.probe_on_node.returncode == 0, live.probe_on_node.stderr
    assert live.probe_ref.startswith(f"{live.hub}:5000/"), live.probe_ref
