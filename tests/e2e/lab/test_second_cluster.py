"""The lab's second compute cluster, `infer` (lab/components/11-kube-infer.sh): a control plane of
its own beside the first, as a site's second cluster is.

Its API server listens on the first one's port plus LAB_KUBE_INFER_PORT_OFFSET, under a CA of its
own (the first cluster's CA does not vouch for it), with the nodes of lab/kube/topology-infer.txt
(L40S and H200 GPUs, which the first cluster has none of); its scheduler places pods on them;
`lab/status` reports it apart.
"""

from __future__ import annotations

import ssl
import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest
from kubernetes import client, config

from tests.e2e.lab.test_kube import gpu_pod, running_pod
from tests.fixtures.lab import LAB_DIR, Lab, read_versions

pytestmark = pytest.mark.e2e

INFER_GPU_NODES = {
    "l40s-1": ("NVIDIA-L40S", "4"),
    "l40s-2": ("NVIDIA-L40S", "4"),
    "h200-1": ("NVIDIA-H200", "8"),
}
INFER_CPU_NODES = ("infer-cpu-1", "infer-cpu-2")


@pytest.fixture(scope="module")
def infer(lab: Lab) -> client.ApiClient:
    assert "LAB_INFER_KUBECONFIG" in lab.env, "lab/up did not start the second cluster"
    return config.new_client_from_config(config_file=lab.env["LAB_INFER_KUBECONFIG"])


@pytest.fixture
def infer_namespace(infer: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(infer)
    name = f"lab-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def test_it_listens_apart_under_a_ca_of_its_own(lab: Lab) -> None:
    versions = read_versions()
    offset = int(versions["LAB_KUBE_INFER_PORT_OFFSET"])
    server = lab.env["LAB_INFER_KUBE_SERVER"]
    first_port = int(lab.kube_server.rsplit(":", 1)[1])
    assert server == f"https://127.0.0.1:{first_port + offset}"
    own = ssl.create_default_context(cafile=lab.env["LAB_INFER_KUBE_CA"])
    with httpx.Client(verify=own) as http:
        assert http.get(f"{server}/version").status_code == 401  # a client certificate is needed
    with (
        httpx.Client(verify=ssl.create_default_context(cafile=lab.kube_ca)) as first_ca,
        pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
    ):
        first_ca.get(f"{server}/version")


def test_its_nodes_are_its_own_gpu_models(infer: client.ApiClient, lab: Lab) -> None:
    core = client.CoreV1Api(infer)
    nodes = {n.metadata.name: n for n in core.list_node().items if n.metadata.labels.get("type")}
    assert set(nodes) == set(INFER_GPU_NODES) | set(INFER_CPU_NODES)
    assert set(lab.env["LAB_INFER_KUBE_NODES"].split(",")) == set(nodes)
    assert not set(nodes) & set(lab.nodes)
    for name, node in nodes.items():
        ready = [c.status for c in node.status.conditions if c.type == "Ready"]
        assert ready == ["True"], name
    for name, (product, count) in INFER_GPU_NODES.items():
        node = nodes[name]
        assert node.metadata.labels["nvidia.com/gpu.product"] == product
        assert node.status.allocatable["nvidia.com/gpu"] == count
        assert ("nvidia.com/gpu", "NoSchedule") in [
            (t.key, t.effect) for t in node.spec.taints or []
        ]
    # The first cluster's nodes stay where they are: neither sees the other's.
    first = client.CoreV1Api(config.new_client_from_config(config_file=str(lab.kubeconfig)))
    assert not {n.metadata.name for n in first.list_node().items} & set(nodes)


def test_its_scheduler_places_an_h200_pod(infer: client.ApiClient, infer_namespace: str) -> None:
    core = client.CoreV1Api(infer)
    pod = gpu_pod(
        "h200", 1,
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H200"},
        tolerations=[
            client.V1Toleration(key=t, operator="Exists")
            for t in ("nvidia.com/gpu", "platform.neuromation.io/job")
        ],
    )  # fmt: skip
    core.create_namespaced_pod(infer_namespace, pod)
    assert running_pod(core, infer_namespace, "h200").spec.node_name == "h200-1"


def test_lab_status_reports_it_apart() -> None:
    proc = subprocess.run(
        ["bash", str(LAB_DIR / "components" / "11-kube-infer.sh"), "status"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert all(line.startswith("kube-infer: ") for line in lines), lines
    assert any("etcd-infer" in line and "running" in line for line in lines), lines
    assert any("ready at" in line and "5 nodes Ready" in line for line in lines), lines
