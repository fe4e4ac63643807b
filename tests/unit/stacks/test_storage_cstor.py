"""The storage stack with engine cstor: chart and values, block device selection, pool cluster."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pytest

from installer.errors import BadInputError, ExitCode
from installer.inventory import Inventory, load_inventory
from installer.site import hub_urls
from installer.stacks import program_of
from installer.stacks.inputs import storage_input
from installer.stacks.storage_cstor import (
    BlockDeviceProblem,
    CStorDisk,
    select_block_devices,
)
from installer.state import StateDir
from tests.unit.stacks.conftest import SITE, write_inventory
from tests.unit.stacks.mocks import RecordingMocks

DYNAMIC = "pulumi-python:dynamic:Resource"
CSPC = "kubernetes:cstor.openebs.io/v1:CStorPoolCluster"
DISKS = (
    "storage:\n      engine: cstor\n      replicas: 2\n      disks:\n"
    "        - {node: cpu-1, device: /dev/sdb}\n"
    "        - {node: cpu-1, device: /dev/disk/by-id/nvme-slot2}\n"
    "        - {node: cpu-2, device: /dev/sdb}\n"
)


def _cstor_site(tmp_path: Path, storage: str = DISKS) -> Inventory:
    text = SITE.replace("storage: {engine: localpv-hostpath}\n", storage)
    return load_inventory(write_inventory(tmp_path, text))


def bd(
    name: str,
    node: str,
    path: str,
    *,
    hostname: str | None = None,
    links: tuple[str, ...] = (),
    fs: str | None = None,
    claim: str = "Unclaimed",
    state: str = "Active",
) -> dict[str, Any]:
    """A BlockDevice as NDM writes it."""
    spec: dict[str, Any] = {
        "path": path,
        "nodeAttributes": {"nodeName": node},
        "devlinks": [{"kind": "by-id", "links": list(links)}],
        "filesystem": {"fsType": fs, "mountPoint": "/data"} if fs else {},
    }
    if claim != "Unclaimed":
        spec["claimRef"] = {"kind": "BlockDeviceClaim", "name": f"bdc-{name}"}
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": hostname or node}},
        "spec": spec,
        "status": {"state": state, "claimState": claim},
    }


LAB_DEVICES = [
    bd("blockdevice-a1", "cpu-1", "/dev/sdb", hostname="cpu-1.lab"),
    bd(
        "blockdevice-a2",
        "cpu-1",
        "/dev/nvme1n1",
        hostname="cpu-1.lab",
        links=("/dev/disk/by-id/nvme-slot2",),
    ),
    bd("blockdevice-b1", "cpu-2", "/dev/sdb"),
    bd("blockdevice-os", "cpu-2", "/dev/sda", fs="ext4"),
]


def test_disks_map_to_ndm_block_devices_one_pool_per_node() -> None:
    disks = [
        CStorDisk(node="cpu-1", device="/dev/sdb"),
        CStorDisk(node="cpu-1", device="/dev/disk/by-id/nvme-slot2"),
        CStorDisk(node="cpu-2", device="/dev/sdb"),
    ]
    pools = select_block_devices(disks, LAB_DEVICES)
    assert [(p.node, p.hostname, p.block_devices) for p in pools] == [
        ("cpu-1", "cpu-1.lab", ("blockdevice-a1", "blockdevice-a2")),
        ("cpu-2", "cpu-2", ("blockdevice-b1",)),
    ]


def test_a_missing_disk_names_its_node_and_device() -> None:
    disks = [CStorDisk(node="cpu-2", device="/dev/sdc"), CStorDisk(node="cpu-3", device="/dev/sdb")]
    with pytest.raises(BlockDeviceProblem) as err:
        select_block_devices(disks, LAB_DEVICES)
    assert err.value.missing_only
    assert len(err.value.problems) == 2
    assert "node cpu-2, device /dev/sdc: NDM reports no such block device" in str(err.value)
    assert "node cpu-3, device /dev/sdb" in str(err.value)


def test_a_formatted_or_foreign_claimed_disk_is_refused_at_once() -> None:
    devices = [*LAB_DEVICES, bd("blockdevice-c1", "cpu-3", "/dev/sdb", claim="Claimed")]
    disks = [CStorDisk(node="cpu-2", device="/dev/sda"), CStorDisk(node="cpu-3", device="/dev/sdb")]
    with pytest.raises(BlockDeviceProblem) as err:
        select_block_devices(disks, devices)
    assert not err.value.missing_only  # waiting for NDM would not help
    text = str(err.value)
    assert "node cpu-2, device /dev/sda (blockdevice-os) holds a ext4 file system" in text
    assert "node cpu-3, device /dev/sdb (blockdevice-c1) is claimed by bdc-blockdevice-c1" in text


def test_the_pools_own_claimed_devices_stay_usable_on_update() -> None:
    devices = [bd("blockdevice-b1", "cpu-2", "/dev/sdb", claim="Claimed")]
    disks = [CStorDisk(node="cpu-2", device="/dev/sdb")]
    (pool,) = select_block_devices(disks, devices, owned=frozenset({"blockdevice-b1"}))
    assert pool.block_devices == ("blockdevice-b1",)


def test_replicas_beyond_the_pool_nodes_is_bad_input(tmp_path: Path) -> None:
    inv = _cstor_site(tmp_path, DISKS.replace("replicas: 2", "replicas: 3"))
    with pytest.raises(BadInputError, match=r"replicas is 3 but .* on 2 node") as err:
        storage_input(inv, inv.clusters[0], StateDir(tmp_path / "state"))
    assert err.value.exit_code == ExitCode.BAD_INPUT
    assert "cpu-1, cpu-2" in str(err.value)


@dataclass
class NdmMocks(RecordingMocks):
    """The recorder, with the block device lookup answered from NDM objects (the one seam)."""

    devices: tuple[dict[str, Any], ...] = ()

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        rid, outs = super().new_resource(args)
        if args.typ == DYNAMIC and args.name == "block-devices":
            disks = [CStorDisk.model_validate(d) for d in args.inputs["disks"]]
            pools = select_block_devices(disks, list(self.devices))
            outs["pools"] = [
                {"node": p.node, "hostname": p.hostname, "block_devices": list(p.block_devices)}
                for p in pools
            ]
        return rid, outs


def _run(si: Any, devices: list[dict[str, Any]]) -> RecordingMocks:
    project = "onprem-storage"
    config = {
        f"{project}:args": json.dumps(si.args.model_dump(mode="json")),
        f"{project}:chart_repo_password": "pw-123456",
    }
    mocks = NdmMocks(devices=tuple(devices))
    pulumi.runtime.set_mocks(mocks, project=project, stack="test", preview=False)
    pulumi.runtime.set_all_config(config)

    @pulumi.runtime.test
    def run() -> Any:
        return program_of("storage")()

    try:
        run()
    finally:
        pulumi.runtime.set_all_config({})
    return mocks


def test_cstor_chart_pool_cluster_and_default_class(tmp_path: Path) -> None:
    inv = _cstor_site(tmp_path)
    si = storage_input(inv, inv.clusters[0], StateDir(tmp_path / "state"))
    mocks = _run(si, LAB_DEVICES)
    release = mocks.named("cstor").inputs
    assert release["chart"] == "cstor"
    assert release["name"] == "cstor"
    assert release["namespace"] == "openebs"
    assert release["version"] == "3.6.0"
    values = release["values"]
    hub = hub_urls(inv).registry
    docker, k8s_io = f"{hub}/docker.io/", f"{hub}/registry.k8s.io/"
    assert values["cspcOperator"]["image"]["registry"] == docker
    for part in ("poolManager", "cstorPool", "cstorPoolExporter"):
        assert values["cspcOperator"][part]["image"]["registry"] == docker
    for part in ("target", "volumeMgmt", "volumeExporter"):
        assert values["cvcOperator"][part]["image"]["registry"] == docker
    for part in ("resizer", "snapshotter", "snapshotController", "attacher", "provisioner"):
        assert values["csiController"][part]["image"]["registry"] == k8s_io
    assert values["csiNode"]["driverRegistrar"]["image"]["registry"] == k8s_io
    assert values["cstorCSIPlugin"]["image"]["registry"] == docker
    assert values["openebsNDM"]["enabled"] is True
    assert values["openebs-ndm"]["ndm"]["image"]["registry"] == docker
    assert values["analytics"]["enabled"] is False
    for section in (values["csiNode"], values["openebs-ndm"]["ndm"], values["cspcOperator"]):
        assert {t["key"] for t in section["tolerations"]} >= {
            "platform.neuromation.io/job",
            "nvidia.com/gpu",
            "platform.neuromation.io/preemptible",
        }
    # Nothing of the openebs umbrella chart is deployed for cStor.
    assert "openebs" not in mocks.names()

    (cspc,) = mocks.of_type(CSPC)
    assert cspc.inputs["metadata"]["name"] == "openebs-platform"
    assert cspc.inputs["metadata"]["namespace"] == "openebs"
    pools = cspc.inputs["spec"]["pools"]
    assert [p["nodeSelector"] for p in pools] == [
        {"kubernetes.io/hostname": "cpu-1.lab"},
        {"kubernetes.io/hostname": "cpu-2"},
    ]
    assert pools[0]["dataRaidGroups"] == [
        {
            "blockDevices": [
                {"blockDeviceName": "blockdevice-a1"},
                {"blockDeviceName": "blockdevice-a2"},
            ]
        }
    ]
    assert pools[0]["poolConfig"]["dataRaidGroupType"] == "stripe"
    assert "nvidia.com/gpu" in {t["key"] for t in pools[1]["poolConfig"]["tolerations"]}

    (cls,) = mocks.of_type("kubernetes:storage.k8s.io/v1:StorageClass")
    assert cls.inputs["provisioner"] == "cstor.csi.openebs.io"
    assert cls.inputs["parameters"] == {
        "cas-type": "cstor",
        "cstorPoolCluster": "openebs-platform",
        "replicaCount": "2",
    }
    annotations = cls.inputs["metadata"]["annotations"]
    assert annotations["storageclass.kubernetes.io/is-default-class"] == "true"
    assert cls.inputs["allowVolumeExpansion"] is True


def test_the_wait_for_ndm_can_be_shortened(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inv = _cstor_site(tmp_path)
    monkeypatch.setenv("INSTALLER_NDM_DISCOVERY_S", "15")
    si = storage_input(inv, inv.clusters[0], StateDir(tmp_path / "state"))
    assert si.args.model_dump()["cstor"]["discovery_s"] == 15
    monkeypatch.setenv("INSTALLER_NDM_DISCOVERY_S", "soon")
    with pytest.raises(BadInputError, match="number of seconds"):
        storage_input(inv, inv.clusters[0], StateDir(tmp_path / "state"))
