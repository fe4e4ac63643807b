"""The storage and dns stacks under mocks: chart source and values, classes, zone records."""

from __future__ import annotations

import json
from pathlib import Path

from installer.inventory import Inventory, load_inventory
from installer.site import cluster_names, hub_urls
from installer.stacks import program_of
from installer.stacks.inputs import dns_input, storage_input
from installer.state import StateDir
from tests.unit.stacks.conftest import SITE, write_inventory
from tests.unit.stacks.mocks import run_program, unwrap


def _config(project: str, args: object, **secrets: str) -> dict[str, str]:
    config = {f"{project}:args": json.dumps(args.model_dump(mode="json"))}  # type: ignore[attr-defined]
    config.update({f"{project}:{k}": v for k, v in secrets.items()})
    return config


def test_openebs_comes_from_the_site_chart_repo_with_the_chart_keys(
    site: Inventory, tmp_path: Path
) -> None:
    si = storage_input(site, site.clusters[0], StateDir(tmp_path / "state"))
    config = _config("onprem-storage", si.args, chart_repo_password="pw-123456")
    mocks = run_program(program_of("storage"), config=config, project="onprem-storage")
    release = mocks.named("openebs").inputs
    assert release["chart"] == "openebs"
    opts, secret = unwrap(release["repositoryOpts"])
    assert secret  # it carries the repository password
    assert opts["repo"] == hub_urls(site).charts
    assert opts["username"] == "cluster-pull"
    assert opts["password"] == "pw-123456"
    assert opts["caFile"].endswith("/state/pki/ca.crt")
    values = release["values"]
    assert values["engines"]["local"]["lvm"]["enabled"] is False
    assert values["engines"]["replicated"]["mayastor"]["enabled"] is False
    assert values["localpv-provisioner"]["localpv"]["basePath"] == "/var/openebs/local"
    assert values["localpv-provisioner"]["hostpathClass"]["enabled"] is False
    hub = hub_urls(site).registry
    assert values["localpv-provisioner"]["localpv"]["image"]["registry"] == f"{hub}/docker.io/"
    tolerated = {t["key"] for t in values["localpv-provisioner"]["localpv"]["tolerations"]}
    assert {"platform.neuromation.io/job", "nvidia.com/gpu"} <= tolerated
    lvm = values["lvm-localpv"]
    assert lvm["lvmNode"]["driverRegistrar"]["image"]["registry"] == f"{hub}/registry.k8s.io/"
    (cls,) = mocks.of_type("kubernetes:storage.k8s.io/v1:StorageClass")
    assert cls.inputs["metadata"]["name"] == "openebs-platform"
    assert (
        cls.inputs["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
        == "true"
    )
    assert cls.inputs["provisioner"] == "openebs.io/local"
    assert si.secrets["chart_repo_password"].get_secret_value()


def test_lvm_engine_enables_the_lvm_driver(tmp_path: Path) -> None:
    text = SITE.replace(
        "storage: {engine: localpv-hostpath}",
        "storage: {engine: localpv-lvm, disks: [{node: cpu-1, device: /dev/sdb}]}",
    )
    inv = load_inventory(write_inventory(tmp_path, text))
    si = storage_input(inv, inv.clusters[0], StateDir(tmp_path / "state"))
    values = si.args.model_dump()["values"]
    assert values["engines"]["local"]["lvm"]["enabled"] is True
    (cls,) = si.args.model_dump()["classes"]
    assert cls["provisioner"] == "local.csi.openebs.io"
    assert cls["parameters"]["volgroup"] == "openebs-vg"


def test_dns_exposes_ingress_on_the_inventory_ips_with_the_zone_records(site: Inventory) -> None:
    si = dns_input(site, site.clusters[0], StateDir(Path("/nonexistent")))
    mocks = run_program(
        program_of("dns"), config=_config("onprem-dns", si.args), project="onprem-dns"
    )
    service = mocks.named("ingress-exposure").inputs["spec"]
    assert service["externalIPs"] == ["192.0.2.20"]
    data = mocks.named("zone-records").inputs["data"]
    records = json.loads(data["records.json"])
    names = cluster_names(site, site.clusters[0])
    assert [r["name"] for r in records] == names.records
    assert names.jobs in [r["name"] for r in records]
    assert all(r["addresses"] == ["192.0.2.20"] for r in records)
    # The VM does not serve DNS in this inventory: no dnsmasq lines are published.
    assert "dnsmasq.conf" not in data
