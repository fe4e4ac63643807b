"""The lab's other sites (lab/sites/<site>.env) move everything two sites on one machine cannot
share, onto ports no other site or lab copy takes; their inventories name none of the first
site's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.fixtures.lab import LAB_DIR, read_env_file, site_inventory

SITES = sorted(path.stem for path in (LAB_DIR / "sites").glob("*.env"))
BASE = read_env_file(LAB_DIR / "versions.env")
# Ports the test run's other lab copies move the first site's kube ports by (the stacks'
# cluster, the throwaway labs, the lab site lane's copies: tests/e2e/stacks/conftest.py,
# tests/e2e/lab/test_second_lab.py, tests/e2e/toolchain).
COPY_SHIFTS = (4000, 6000, 10000)


def _unshareable(key: str) -> bool:
    """What one machine has once: loopback ports, namespaces, addresses and subnets, links,
    cgroups, users, names.
    (The VM's SSH port is inside the VM's own network namespace.)"""
    if key == "LAB_VM_SSH_PORT":
        return False
    return (
        key.endswith(("_PORT", "_NETNS", "_ADDR", "_CIDR", "_CGROUP"))
        or "_VETH_" in key
        or key
        in {
            "LAB_VM_USER",
            "LAB_HUB_NAME",
            "LAB_DOMAIN",
        }
    )


def _ports(values: dict[str, str]) -> set[int]:
    """The loopback ports a site takes: its own, and its second cluster's (`infer`, its kube
    ports plus LAB_KUBE_INFER_PORT_OFFSET)."""
    own = {int(v) for k, v in values.items() if k.endswith("_PORT") and k != "LAB_VM_SSH_PORT"}
    offset = int(values["LAB_KUBE_INFER_PORT_OFFSET"])
    infer = {
        int(v) + offset
        for k, v in values.items()
        if k.endswith("_PORT") and k.startswith(("LAB_KUBE_", "LAB_ETCD_", "LAB_KWOK_"))
    }
    assert not own & infer, "a port of the site is one of its second cluster's"
    return own | infer


def _site(site: str) -> dict[str, str]:
    return {**BASE, **read_env_file(LAB_DIR / "sites" / f"{site}.env")}


def test_the_site_make_test_runs_on_is_there() -> None:
    assert SITES == ["b"]


def test_no_two_sites_share_a_port() -> None:
    taken: dict[int, str] = {port: "the first site" for port in _ports(BASE)}
    for site in SITES:
        for port in _ports(_site(site)):
            assert port not in taken, f"site {site}'s port {port} is {taken[port]}'s"
            taken[port] = f"site {site}"


def test_no_two_sites_share_a_subnet() -> None:
    """The VM's, the node's, their link's and the pods' /24 of every site: all different."""
    keys = ("LAB_VM_ADDR", "LAB_NODE_ADDR", "LAB_NODE_LINK_ADDR", "LAB_NODE_POD_CIDR")
    nets = [
        ".".join(values[key].split("/")[0].split(".")[:3])
        for values in [BASE, *(_site(site) for site in SITES)]
        for key in keys
    ]
    assert len(set(nets)) == len(nets), sorted(nets)


@pytest.mark.parametrize("site", SITES)
def test_a_site_changes_only_what_versions_env_names(site: str) -> None:
    changes = read_env_file(LAB_DIR / "sites" / f"{site}.env")
    unknown = sorted(set(changes) - set(BASE))
    assert not unknown, f"lab/sites/{site}.env sets what versions.env does not have: {unknown}"


@pytest.mark.parametrize("site", SITES)
def test_a_site_moves_everything_two_sites_cannot_share(site: str) -> None:
    changes = read_env_file(LAB_DIR / "sites" / f"{site}.env")
    shared = sorted(k for k in BASE if _unshareable(k) and changes.get(k, BASE[k]) == BASE[k])
    assert not shared, f"lab/sites/{site}.env leaves these as the first site has them: {shared}"
    for key, value in changes.items():
        if "_VETH_" in key:
            assert len(value) <= 15, f"{key}={value}: a link name has at most 15 characters"


@pytest.mark.parametrize("site", SITES)
def test_a_sites_ports_are_clear_of_every_other_lab(site: str) -> None:
    site_ports = _ports(_site(site))
    first = _ports(BASE)
    kube = {
        int(v)
        for k, v in BASE.items()
        if k.endswith("_PORT") and k.startswith(("LAB_KUBE_", "LAB_ETCD_", "LAB_KWOK_"))
    }
    copies = {port + shift for port in first | kube for shift in COPY_SHIFTS}
    assert len(site_ports) == len(_ports(BASE)), "two of the site's ports are one"
    assert not site_ports & first, "a port of the first site"
    assert not site_ports & copies, sorted(site_ports & copies)
    assert all(1024 < port < 32768 for port in site_ports), "outside the ephemeral range"


@pytest.mark.parametrize("site", SITES)
@pytest.mark.parametrize("name", ["lab", "lab-airgap", "lab-multi"])
def test_a_sites_inventory_names_none_of_the_first_sites_places(
    site: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAB_SITE", site)
    monkeypatch.setenv("LAB_STATE", str(tmp_path / "state"))
    changes = read_env_file(LAB_DIR / "sites" / f"{site}.env")
    path = site_inventory(name)
    assert path == tmp_path / "state" / "inventories" / f"{name}.yml"
    text = path.read_text()
    assert "../lab/.state/" not in text
    for key in changes:
        first = rf"(?<![\w.-]){re.escape(BASE[key])}(?![\w.-])"
        assert not re.search(first, text), f"{key}: the first site's {BASE[key]} is still there"
    data = yaml.safe_load(text)
    assert data["aux_vm"]["address"] == changes["LAB_VM_ADDR"]
    assert data["aux_vm"]["hostname"] == changes["LAB_HUB_NAME"]
    assert data["aux_vm"]["ssh"]["user"] == changes["LAB_VM_USER"]
    assert data["site"]["domain"] == changes["LAB_DOMAIN"]
    assert data["site"]["state_dir"] == str(tmp_path / "state" / "installer")
    cluster = data["clusters"][0]
    assert cluster["ingress_ips"] == [changes["LAB_VM_HOST_ADDR"]]
    assert cluster["keycloak"]["url"] == f"https://127.0.0.1:{changes['LAB_KEYCLOAK_PORT']}"
    # Written once: a second call finds it as it is.
    before = path.stat().st_mtime_ns
    assert site_inventory(name) == path
    assert path.stat().st_mtime_ns == before


def test_the_first_sites_inventory_is_the_committed_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAB_SITE", raising=False)
    assert site_inventory("lab") == LAB_DIR.parent / "inventories" / "lab.yml"
