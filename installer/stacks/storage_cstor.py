"""cStor in the storage stack: the `cstor` chart's values, the pool cluster, the disks' lookup.

cStor pools are built on block devices that NDM (the chart's Node Disk Manager) discovers at run
time and names itself (`blockdevice-<hash>`), so the inventory's disks (node and device path)
can only be turned into a CStorPoolCluster after the chart is up. `BlockDeviceSelection` is that
step: a dynamic resource that waits for NDM's BlockDevice objects matching every inventory disk
and fails, naming node and device, when one is missing, already claimed by someone else, or
holds a file system. Its diff is computed from its inputs (the disks), so a re-run with the same
inventory previews no change.

One pool per node that has disks, all of a node's disks striped in one raid group: redundancy
comes from the volume replicas, which cStor places on distinct pools (so `storage.replicas`
cannot exceed the number of pool nodes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult
from pydantic import Field

from installer.engines.kube import api_client
from installer.stacks.common import StackModel

NDM_GROUP = "openebs.io"
NDM_VERSION = "v1alpha1"
BLOCK_DEVICES = "blockdevices"
HOSTNAME_LABEL = "kubernetes.io/hostname"
CSTOR_PROVISIONER = "cstor.csi.openebs.io"
_POLL_S = 2.0
_REQUEST_TIMEOUT_S = 15


class CStorDisk(StackModel):
    """One inventory disk: the node it is attached to and its device path."""

    node: str
    device: str


class CStorPools(StackModel):
    """The CStorPoolCluster the stack makes from the inventory's disks."""

    name: str = Field(description="Name of the CStorPoolCluster (the StorageClass names it).")
    disks: list[CStorDisk] = Field(min_length=1)
    raid: str = Field(default="stripe", description="`poolConfig.dataRaidGroupType`.")
    tolerations: list[dict[str, str]] = Field(default_factory=list)
    discovery_s: int = Field(
        default=120, ge=0, description="How long to wait for NDM to report the disks."
    )


def cstor_values(hub: str, tolerations: list[dict[str, str]]) -> dict[str, Any]:
    """Values of the `cstor` chart (3.x keys): every image from the site registry, keeping its
    upstream path (`<hub>/docker.io/openebs/cspc-operator`), the installer's taints tolerated."""
    docker = {"image": {"registry": f"{hub}/docker.io/"}}
    k8s_io = {"image": {"registry": f"{hub}/registry.k8s.io/"}}
    return {
        "cspcOperator": {
            **docker,
            "poolManager": docker,
            "cstorPool": docker,
            "cstorPoolExporter": docker,
            "tolerations": tolerations,
        },
        "cvcOperator": {
            **docker,
            "target": docker,
            "volumeMgmt": docker,
            "volumeExporter": docker,
            "tolerations": tolerations,
        },
        "csiController": {
            **{
                part: k8s_io
                for part in (
                    "resizer",
                    "snapshotter",
                    "snapshotController",
                    "attacher",
                    "provisioner",
                )
            },
            "tolerations": tolerations,
        },
        "cstorCSIPlugin": docker,
        # Every node may mount a cStor volume: the node plugin runs everywhere.
        "csiNode": {"driverRegistrar": k8s_io, "tolerations": tolerations},
        "admissionServer": {**docker, "tolerations": tolerations},
        "openebsNDM": {"enabled": True},
        "openebs-ndm": {
            "ndm": {**docker, "tolerations": tolerations},
            "ndmOperator": {**docker, "tolerations": tolerations},
        },
        # The chart pings an analytics service by default; a site has no business calling out.
        "analytics": {"enabled": False},
    }


@dataclass(frozen=True)
class PoolDevices:
    """The block devices of one pool node, in inventory order."""

    node: str
    hostname: str
    block_devices: tuple[str, ...]


class BlockDeviceProblem(Exception):
    """Inventory disks NDM does not offer for a pool; one line per disk."""

    def __init__(self, problems: list[str], *, missing_only: bool) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
        self.missing_only = missing_only


def _node_of(bd: dict[str, Any]) -> str:
    spec = bd.get("spec") or {}
    return str((spec.get("nodeAttributes") or {}).get("nodeName") or "")


def _labels(bd: dict[str, Any]) -> dict[str, str]:
    return dict((bd.get("metadata") or {}).get("labels") or {})


def _paths(bd: dict[str, Any]) -> set[str]:
    spec = bd.get("spec") or {}
    paths = {str(spec.get("path") or "")}
    for link in spec.get("devlinks") or []:
        paths.update(str(p) for p in link.get("links") or [])
    return paths - {""}


def select_block_devices(
    disks: list[CStorDisk], devices: list[dict[str, Any]], owned: frozenset[str] = frozenset()
) -> list[PoolDevices]:
    """The NDM block device of every inventory disk, grouped by node (one pool per node).

    A disk matches a BlockDevice on its node (`spec.nodeAttributes.nodeName` or the hostname
    label) whose `spec.path` or one of its `devlinks` is the inventory's device. It must be
    Active, not claimed (except by this stack's own pool: `owned`), and hold no file system.
    Raises BlockDeviceProblem naming every disk that fails.

    >>> bd = {"metadata": {"name": "blockdevice-1", "labels": {"kubernetes.io/hostname": "n1"}},
    ...       "spec": {"path": "/dev/sdb", "nodeAttributes": {"nodeName": "n1"}},
    ...       "status": {"state": "Active", "claimState": "Unclaimed"}}
    >>> select_block_devices([CStorDisk(node="n1", device="/dev/sdb")], [bd])[0].block_devices
    ('blockdevice-1',)
    """
    problems: list[str] = []
    missing_only = True
    found: dict[str, list[str]] = {}
    hostnames: dict[str, str] = {}
    for disk in disks:
        where = f"node {disk.node}, device {disk.device}"
        here = [
            bd
            for bd in devices
            if disk.node in (_node_of(bd), _labels(bd).get(HOSTNAME_LABEL))
            and disk.device in _paths(bd)
        ]
        if not here:
            problems.append(
                f"{where}: NDM reports no such block device (is the disk attached and is NDM"
                " running on that node?)"
            )
            continue
        bd = here[0]
        name = str(bd["metadata"]["name"])
        spec, status = bd.get("spec") or {}, bd.get("status") or {}
        fs = spec.get("filesystem") or {}
        state = status.get("state", "Active")
        claim = status.get("claimState", "Unclaimed")
        reason = None
        if fs.get("fsType"):
            mount = f" mounted at {fs['mountPoint']}" if fs.get("mountPoint") else ""
            reason = f"holds a {fs['fsType']} file system{mount}; cStor needs a raw disk"
        elif state != "Active":
            reason = f"is {state} (NDM no longer sees it)"
        elif claim != "Unclaimed" and name not in owned:
            holder = (spec.get("claimRef") or {}).get("name")
            by = f" by {holder}" if holder else ""
            reason = f"is {claim.lower()}{by}; another pool or volume uses it"
        if reason is not None:
            missing_only = False
            problems.append(f"{where} ({name}) {reason}")
            continue
        found.setdefault(disk.node, []).append(name)
        hostnames.setdefault(disk.node, _labels(bd).get(HOSTNAME_LABEL) or disk.node)
    if problems:
        raise BlockDeviceProblem(problems, missing_only=missing_only)
    return [PoolDevices(node, hostnames[node], tuple(names)) for node, names in found.items()]


def pool_cluster_spec(pools: list[PoolDevices], spec: CStorPools) -> dict[str, Any]:
    """`spec` of the CStorPoolCluster (`cstor.openebs.io/v1`): one pool per node."""
    return {
        "pools": [
            {
                "nodeSelector": {HOSTNAME_LABEL: pool.hostname},
                "dataRaidGroups": [
                    {"blockDevices": [{"blockDeviceName": n} for n in pool.block_devices]}
                ],
                "poolConfig": {
                    "dataRaidGroupType": spec.raid,
                    "tolerations": spec.tolerations,
                },
            }
            for pool in pools
        ]
    }


def _list_block_devices(props: dict[str, Any]) -> list[dict[str, Any]]:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(api_client(props["kubeconfig"], props.get("context") or None))
    try:
        listing = api.list_namespaced_custom_object(
            NDM_GROUP,
            NDM_VERSION,
            props["namespace"],
            BLOCK_DEVICES,
            _request_timeout=_REQUEST_TIMEOUT_S,
        )
    except ApiException as exc:
        if exc.status == 404:  # NDM's CRD is not there (yet): no disk reported
            return []
        raise
    items: list[dict[str, Any]] = listing.get("items") or []
    return items


def wait_for_block_devices(props: dict[str, Any], owned: frozenset[str]) -> list[PoolDevices]:
    """Poll NDM's BlockDevices until every inventory disk is there (or `discovery_s` passed);
    a disk that is there but unusable fails at once (waiting will not change it)."""
    disks = [CStorDisk.model_validate(d) for d in props["disks"]]
    deadline = time.monotonic() + float(props.get("discovery_s") or 0)
    while True:
        try:
            return select_block_devices(disks, _list_block_devices(props), owned)
        except BlockDeviceProblem as problem:
            if not problem.missing_only or time.monotonic() >= deadline:
                waited = f" (waited {props.get('discovery_s')}s for NDM)"
                raise RuntimeError(
                    f"cStor pool {props['pool']}: {problem}"
                    + (waited if problem.missing_only else "")
                ) from None
        time.sleep(_POLL_S)


_INPUTS = ("kubeconfig", "context", "namespace", "pool", "disks", "discovery_s")
_DIFFED = ("kubeconfig", "context", "namespace", "pool", "disks")  # not how long to wait


def _outs(props: dict[str, Any], pools: list[PoolDevices]) -> dict[str, Any]:
    return {
        **{k: props.get(k) for k in _INPUTS},
        "pools": [
            {"node": p.node, "hostname": p.hostname, "block_devices": list(p.block_devices)}
            for p in pools
        ],
    }


class BlockDeviceSelectionProvider(ResourceProvider):
    """Finds NDM's block devices for the inventory's disks; owns nothing in the cluster."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        pools = wait_for_block_devices(props, frozenset())
        return CreateResult(id_=str(props["pool"]), outs=_outs(props, pools))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [k for k in _DIFFED if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # The pool's own devices are claimed by its pool manager by now; they stay usable.
        mine = frozenset(n for p in olds.get("pools") or [] for n in p.get("block_devices") or [])
        return UpdateResult(outs=_outs(news, wait_for_block_devices(news, mine)))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        return None  # the block devices are NDM's


class BlockDeviceSelection(Resource):
    """NDM's block devices for the inventory's disks, per pool node (`pools` output)."""

    pools: pulumi.Output[list[dict[str, Any]]]

    def __init__(
        self,
        name: str,
        *,
        spec: CStorPools,
        namespace: str,
        kubeconfig: str,
        context: str | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            BlockDeviceSelectionProvider(),
            name,
            {
                "kubeconfig": kubeconfig,
                "context": context,
                "namespace": namespace,
                "pool": spec.name,
                "disks": [d.model_dump() for d in spec.disks],
                "discovery_s": spec.discovery_s,
                "pools": None,
            },
            opts,
        )


def pools_from_outputs(raw: list[dict[str, Any]]) -> list[PoolDevices]:
    """`BlockDeviceSelection.pools` back into typed pools."""
    return [PoolDevices(str(p["node"]), str(p["hostname"]), tuple(p["block_devices"])) for p in raw]
