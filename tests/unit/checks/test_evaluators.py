"""Check logic on recorded outputs and small node lists: OS, disk, ports, clock, version, pools."""

from __future__ import annotations

import pytest

from installer.checks.framework import Severity
from installer.checks.preflight_kube import (
    evaluate_gpu_nodes,
    evaluate_pool_nodes,
    evaluate_version,
    pool_members,
)
from installer.checks.preflight_vm import (
    DiskSpace,
    evaluate_clock,
    evaluate_disk,
    evaluate_os,
    evaluate_packaged,
    parse_df,
    parse_listening,
)
from installer.engines.kube import NodeInfo
from installer.inventory.models import NodePool, PoolGpu

GiB = 1024**3
DEBIAN = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
UBUNTU = 'NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nPRETTY_NAME="Ubuntu 22.04.4 LTS"\n'
ROCKY = 'NAME="Rocky Linux"\nVERSION_ID="9.3"\nID="rocky"\n'


@pytest.mark.parametrize("text", [DEBIAN, UBUNTU, ROCKY])
def test_supported_os(text: str) -> None:
    assert evaluate_os(text).ok


def test_unsupported_os_family_and_version() -> None:
    alpine = evaluate_os('ID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME="Alpine Linux v3.19"\n')
    assert not alpine.ok and "alpine is not supported" in alpine.message
    old = evaluate_os('ID=ubuntu\nVERSION_ID="18.04"\n')
    assert not old.ok and "18.04 is not supported" in old.message


DF = """File                         Mounted on       Avail
/var/lib                     /            53687091200
/var/lib/onprem-hub          /srv         10737418240
/                            /            53687091200
"""


def test_parse_df_reads_the_file_column() -> None:
    assert parse_df(DF) == [
        DiskSpace("/var/lib", "/", 50 * GiB),
        DiskSpace("/var/lib/onprem-hub", "/srv", 10 * GiB),
        DiskSpace("/", "/", 50 * GiB),
    ]


def test_disk_needs_add_up_per_filesystem() -> None:
    space = parse_df(DF)
    fits = evaluate_disk({"/var/lib/onprem-hub/registry": 6 * GiB, "/var/lib/x": 40 * GiB}, space)
    assert fits.ok, fits.message
    # two paths on /srv together need more than it has
    short = evaluate_disk(
        {"/var/lib/onprem-hub/registry": 6 * GiB, "/var/lib/onprem-hub/devpi": 5 * GiB}, space
    )
    assert not short.ok
    assert short.message == "/srv: 10.0 GiB free, 11.0 GiB needed"


def test_disk_without_df_row_is_a_problem() -> None:
    assert not evaluate_disk({"/data": 1}, []).ok


SS = """tcp   LISTEN 0      4096      10.213.0.2:5000      0.0.0.0:*
tcp   LISTEN 0      128          0.0.0.0:22        0.0.0.0:*
udp   UNCONN 0      0         10.213.0.2:53        0.0.0.0:*
tcp   LISTEN 0      4096            [::]:3141         [::]:*
"""


def test_listening_ports() -> None:
    assert parse_listening(SS) == {5000, 22, 53, 3141}


def test_a_port_held_only_by_debians_packaged_services_passes() -> None:
    held = evaluate_packaged(5000, {"31": "docker-registry.service"})
    assert held is not None and held.ok
    assert "docker-registry.service" in held.message and "stops and disables" in held.message
    assert evaluate_packaged(53, {"44": "dnsmasq.service", "45": "dnsmasq.service"}) is not None


@pytest.mark.parametrize(
    "units",
    [
        {},  # no holder found (ss without its pid): not known to be the package's
        {"31": "-"},  # a program outside any unit (a VM without systemd)
        {"31": "registry-other.service"},
        {"31": "docker-registry.service", "77": "session-3.scope"},  # one more holder
    ],
)
def test_a_port_held_by_anything_else_is_not_excused(units: dict[str, str]) -> None:
    assert evaluate_packaged(5000, units) is None


def test_clock_thresholds() -> None:
    assert evaluate_clock(1000.5, 1000.0, 1001.0).ok
    warn = evaluate_clock(1010.0, 1000.0, 1000.2)
    assert not warn.ok and warn.severity is Severity.WARN
    fail = evaluate_clock(900.0, 1000.0, 1000.2)
    assert not fail.ok and fail.severity is None and "-100.1s" in fail.message
    # a slow round trip widens what can be claimed: 3 s skew within 2 s slack is fine
    assert evaluate_clock(1005.0, 1000.0, 1004.0).ok


def test_kube_version_range() -> None:
    assert evaluate_version("v1.36.3", 1, 36).ok
    old = evaluate_version("v1.27.9", 1, 27)
    assert not old.ok and old.severity is None
    new = evaluate_version("v1.40.0", 1, 40)
    assert not new.ok and new.severity is Severity.WARN


def node(name: str, *, ready: bool = True, **labels: str) -> NodeInfo:
    return NodeInfo(
        name=name, labels=labels, ready=ready, ready_message="" if ready else "kubelet stopped"
    )


def gpu_node(name: str, product: str, count: str = "8", memory: str = "81920") -> NodeInfo:
    return NodeInfo(
        name=name,
        labels={"nvidia.com/gpu.product": product, "nvidia.com/gpu.memory": memory},
        allocatable={"cpu": "128", "nvidia.com/gpu": count},
        ready=True,
    )


CPU = NodePool(name="cpu", nodes=["cpu-1", "cpu-2"], cpu=32, memory=128 * GiB)
A100 = NodePool(
    name="a100",
    selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    cpu=128,
    memory=1024 * GiB,
    gpu=PoolGpu(model="NVIDIA-A100-SXM4-80GB", count=8, memory=80 * GiB),
)


def test_named_pool_nodes() -> None:
    assert evaluate_pool_nodes(CPU, [node("cpu-1"), node("cpu-2"), node("x")]).ok
    missing = evaluate_pool_nodes(CPU, [node("cpu-1")])
    assert not missing.ok and missing.message == "not in the cluster: cpu-2"
    down = evaluate_pool_nodes(CPU, [node("cpu-1"), node("cpu-2", ready=False)])
    assert down.message == "not Ready: cpu-2 (kubelet stopped)"


def test_selector_pool_nodes() -> None:
    nodes = [
        gpu_node("a100-1", "NVIDIA-A100-SXM4-80GB"),
        gpu_node("h100-1", "NVIDIA-H100-80GB-HBM3"),
    ]
    assert [n.name for n in pool_members(A100, nodes)] == ["a100-1"]
    assert evaluate_pool_nodes(A100, nodes).ok
    none = evaluate_pool_nodes(A100, nodes[1:])
    assert not none.ok and "no node matches the selector" in none.message


def test_gpu_nodes_match_pool() -> None:
    assert evaluate_gpu_nodes(A100, [gpu_node("a100-1", "NVIDIA-A100-SXM4-80GB")]).ok


def test_gpu_node_problems_are_named() -> None:
    pool = NodePool(
        name="a100",
        nodes=["a", "b", "c"],
        cpu=1,
        memory=GiB,
        gpu=PoolGpu(model="NVIDIA-A100-SXM4-80GB", count=8, memory=80 * GiB),
    )
    no_plugin = NodeInfo(name="c", labels={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"})
    finding = evaluate_gpu_nodes(
        pool,
        [
            gpu_node("a", "NVIDIA-A100-SXM4-40GB", memory="40960"),
            gpu_node("b", "NVIDIA-A100-SXM4-80GB", count="4"),
            no_plugin,
        ],
    )
    assert not finding.ok
    assert finding.message.split("; ") == [
        "a: nvidia.com/gpu.product is NVIDIA-A100-SXM4-40GB, the pool says NVIDIA-A100-SXM4-80GB",
        "a: nvidia.com/gpu.memory is 40960 MiB, the pool says 81920 MiB",
        "b: allocatable nvidia.com/gpu is 4, the pool says 8",
        "c: it has no allocatable nvidia.com/gpu (is the device plugin running?)",
    ]


def test_h100_reported_memory_is_within_tolerance() -> None:
    pool = NodePool(
        name="h100",
        nodes=["h"],
        cpu=1,
        memory=GiB,
        gpu=PoolGpu(model="NVIDIA-H100-80GB-HBM3", count=8, memory=80 * GiB),
    )
    assert evaluate_gpu_nodes(pool, [gpu_node("h", "NVIDIA-H100-80GB-HBM3", memory="81559")]).ok


def _rights(inventory: str) -> dict[str, str]:
    from pathlib import Path

    from installer.checks.preflight_kube import rights_for
    from installer.inventory import load_inventory

    repo = Path(__file__).resolve().parents[3]
    cluster = load_inventory(repo / "inventories" / inventory).clusters[0]
    rights = rights_for(cluster)
    assert len({str(r) for r in rights}) == len(rights)  # each right asked once
    return {str(r): r.why for r in rights}


def test_rbac_rights_cover_every_phase_of_the_site() -> None:
    """What kube.rbac asks by SelfSubjectAccessReview follows what the site's phases create."""
    lab = _rights("lab.yml")  # localpv-hostpath, external Keycloak
    assert lab["patch nodes"] == "nodes: pool labels and taints"
    assert lab["create namespaces"] == "storage, dns, platform, verify: test pods"
    for right in (
        "create storageclasses.storage.k8s.io",
        "patch deployments.apps",
        "create roles.rbac.authorization.k8s.io",
        "create rolebindings.rbac.authorization.k8s.io",
        "bind clusterroles.rbac.authorization.k8s.io",
        "create priorityclasses.scheduling.k8s.io",
        "create pods",
        "delete namespaces",
    ):
        assert right in lab, right
    for right in ("create statefulsets.apps", "create csidrivers.storage.k8s.io"):
        assert right not in lab, right
    example = _rights("onprem.example.yml")  # cStor, in-cluster Keycloak
    assert example["create statefulsets.apps"] == "keycloak"
    assert example["create cstorpoolclusters.cstor.openebs.io"] == "storage"
    assert example["list blockdevices.openebs.io"] == "storage: the disks NDM found"
    for right in (
        "create customresourcedefinitions.apiextensions.k8s.io",
        "create daemonsets.apps",
        "create csidrivers.storage.k8s.io",
    ):
        assert example[right] == "storage", right
