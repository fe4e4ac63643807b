"""The lab cluster behaves like a small GPU site: pinned version, GPU pools, real scheduling."""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import httpx
import pytest
from kubernetes import client

from tests.fixtures.lab import Lab, read_versions

pytestmark = pytest.mark.e2e

GPU_NODES = {
    "a100-1": ("NVIDIA-A100-SXM4-80GB", "81920"),
    "a100-2": ("NVIDIA-A100-SXM4-80GB", "81920"),
    "h100-1": ("NVIDIA-H100-80GB-HBM3", "81559"),
}
CPU_NODES = ("cpu-1", "cpu-2", "cpu-3")
T = TypeVar("T")
GPU_TOLERATION = client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    """Poll `probe` until it returns something, failing with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)


def gpu_pod(name: str, gpus: int, **spec: object) -> client.V1Pod:
    """A pod asking for `gpus` NVIDIA GPUs the way the job controller asks: requests == limits."""
    resources = {"nvidia.com/gpu": str(gpus), "cpu": "1", "memory": "1Gi"}
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(
            containers=[
                client.V1Container(
                    name="main",
                    image="busybox:latest",
                    resources=client.V1ResourceRequirements(requests=resources, limits=resources),
                )
            ],
            **spec,
        ),
    )


def running_pod(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    """Wait until the pod is bound and kwok reports it Running."""

    def probe() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase == "Running" and pod.spec.node_name else None

    return wait_until(f"pod {namespace}/{name} Running", probe)


def test_api_answers_with_pinned_version(kube: client.ApiClient, lab: Lab) -> None:
    pinned = read_versions()["KUBE_VERSION"]
    info = client.VersionApi(kube).get_code()
    assert info.git_version == pinned
    assert lab.kube_version == pinned
    assert (info.major, info.minor) == ("1", pinned.split(".")[1])


def test_api_needs_a_client_certificate(lab: Lab) -> None:
    with httpx.Client(verify=ssl.create_default_context(cafile=lab.kube_ca)) as http:
        answer = http.get(f"{lab.kube_server}/version")
    assert answer.status_code == 401


def test_api_certificate_is_signed_by_the_lab_ca(lab: Lab) -> None:
    with (
        httpx.Client(verify=ssl.create_default_context(cafile=lab.kube_ca)) as trusting,
        httpx.Client(verify=True) as default_trust,
    ):
        assert trusting.get(f"{lab.kube_server}/version").status_code == 401
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            default_trust.get(f"{lab.kube_server}/version")


def test_topology_nodes_are_ready(kube: client.ApiClient, lab: Lab) -> None:
    nodes = {n.metadata.name: n for n in client.CoreV1Api(kube).list_node().items}
    assert set(CPU_NODES) | set(GPU_NODES) <= set(nodes)
    assert set(lab.nodes) == set(nodes)
    for name, node in nodes.items():
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert [c.status for c in ready] == ["True"], name


def test_gpu_nodes_look_like_gpu_operator_nodes(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    for name, (product, memory) in GPU_NODES.items():
        node = core.read_node(name)
        assert node.status.allocatable["nvidia.com/gpu"] == "8"
        assert node.status.capacity["nvidia.com/gpu"] == "8"
        labels = node.metadata.labels
        assert labels["nvidia.com/gpu.product"] == product
        assert labels["nvidia.com/gpu.count"] == "8"
        assert labels["nvidia.com/gpu.memory"] == memory
        taints = [(t.key, t.effect) for t in node.spec.taints or []]
        assert ("nvidia.com/gpu", "NoSchedule") in taints


def test_cpu_nodes_have_no_gpus_and_no_gpu_taint(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    for name in CPU_NODES:
        node = core.read_node(name)
        assert "nvidia.com/gpu" not in node.status.allocatable
        assert not any(k.startswith("nvidia.com/") for k in node.metadata.labels)
        # The installer may have tainted the pool by now (the session shares the lab).
        assert not [t for t in node.spec.taints or [] if t.key.startswith("nvidia.com/")]


def installer_tolerations(
    core: client.CoreV1Api, nodes: Iterable[str]
) -> list[client.V1Toleration]:
    """Tolerate the taints the installer may have put on these nodes (the session shares the
    lab), never the GPU taint: that one is what the tests are about."""
    keys = {t.key for name in nodes for t in core.read_node(name).spec.taints or []}
    return [
        client.V1Toleration(key=k, operator="Exists")
        for k in sorted(keys)
        if not k.startswith("nvidia.com/")
    ]


def test_deployment_becomes_available(kube: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(kube)
    labels = {"app": "web"}
    tolerations = installer_tolerations(client.CoreV1Api(kube), CPU_NODES)
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web"),
            spec=client.V1DeploymentSpec(
                replicas=3,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="web", image="nginx:1.27")],
                        tolerations=tolerations,
                    ),
                ),
            ),
        ),
    )

    def available() -> client.V1Deployment | None:
        dep = apps.read_namespaced_deployment("web", namespace)
        conds = {c.type: c.status for c in dep.status.conditions or []}
        return dep if conds.get("Available") == "True" and dep.status.ready_replicas == 3 else None

    dep = wait_until("deployment web Available", available)
    assert dep.status.available_replicas == 3
    pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector="app=web").items
    # Without the GPU toleration, nothing may land on the tainted GPU nodes.
    assert {p.spec.node_name for p in pods} <= set(CPU_NODES)


def test_gpu_pod_with_toleration_lands_on_a_gpu_node(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    extra = installer_tolerations(core, GPU_NODES)
    core.create_namespaced_pod(namespace, gpu_pod("train", 1, tolerations=[GPU_TOLERATION, *extra]))
    pod = running_pod(core, namespace, "train")
    assert pod.spec.node_name in GPU_NODES
    assert pod.status.pod_ip


def test_gpu_product_selector_picks_the_h100_node(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(
        namespace,
        gpu_pod(
            "h100-job",
            1,
            tolerations=[GPU_TOLERATION, *installer_tolerations(core, GPU_NODES)],
            node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        ),
    )
    assert running_pod(core, namespace, "h100-job").spec.node_name == "h100-1"


def unschedulable_message(core: client.CoreV1Api, namespace: str, name: str) -> str:
    """Wait for the scheduler's verdict on a pod it cannot place, and return its message."""

    def probe() -> str | None:
        pod = core.read_namespaced_pod(name, namespace)
        for cond in pod.status.conditions or []:
            if cond.type == "PodScheduled" and cond.reason == "Unschedulable":
                return str(cond.message)
        return None

    return wait_until(f"scheduler verdict on {namespace}/{name}", probe)


def test_pod_asking_for_nine_gpus_stays_pending(kube: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(kube)
    extra = installer_tolerations(core, GPU_NODES)
    core.create_namespaced_pod(
        namespace, gpu_pod("too-big", 9, tolerations=[GPU_TOLERATION, *extra])
    )
    message = unschedulable_message(core, namespace, "too-big")
    assert "Insufficient nvidia.com/gpu" in message
    time.sleep(3)
    pod = core.read_namespaced_pod("too-big", namespace)
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None


def test_gpu_pod_without_toleration_is_kept_off_gpu_nodes(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    extra = installer_tolerations(core, GPU_NODES)
    core.create_namespaced_pod(namespace, gpu_pod("no-toleration", 1, tolerations=extra))
    message = unschedulable_message(core, namespace, "no-toleration")
    assert "untolerated taint" in message
    assert "nvidia.com/gpu" in message
