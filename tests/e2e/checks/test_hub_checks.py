"""Preflight and verify against a running hub on the lab VM: its ports are "ours", its services
answer with the site CA, its DNS serves the platform's names, and another CA is refused.

`provisioned_hub` installs the hub with the real installer (`bootstrap --only auxvm`) when it is
not there, holds the lab site lock for the module and takes off a hub it installed. So this
module must not be run under an outer `flock` of the same lock.
"""

from __future__ import annotations

from typing import Any

import pytest

from installer.checks import Status, run_preflight
from installer.checks.context import SiteAccess
from installer.checks.sitenet import check_dns
from installer.inventory import load_inventory
from tests.e2e.checks.conftest import SiteFactory
from tests.fixtures.auxvm import Hub
from tests.fixtures.lab import Lab

pytestmark = pytest.mark.e2e


def by_target(report: Any, check_id: str) -> dict[str, tuple[Status, str]]:
    return {r.target: (r.status, r.message) for r in report.results if r.id == check_id}


def test_a_running_hub_passes_ports_services_and_dns(
    lab: Lab, site: SiteFactory, provisioned_hub: Hub
) -> None:
    report = run_preflight(load_inventory(site()))
    services = by_target(report, "hub.service")
    assert set(services) == {
        "hub/registry",
        "hub/registry-push",
        "hub/chartmuseum",
        "hub/chartmuseum-push",
        "hub/devpi",
    }
    for target, (status, message) in services.items():
        assert status is Status.PASS, (target, message)
        kind = target.split("/")[1].removesuffix("-push")
        assert f"answers as the {kind}" in message
    ports = by_target(report, "vm.ports")
    served = (
        (5000, "registry"),
        (5001, "registry"),
        (8080, "chartmuseum"),
        (8081, "chartmuseum"),
        (3141, "devpi"),
    )
    for port, kind in served:
        status, message = ports[f"vm/{lab.vm_addr}:{port}"]
        assert status is Status.PASS, message
        assert message.startswith(f"port {port} already serves the hub's {kind}")
    zone = "lab.org.ml.lab.test"
    assert ports[f"vm/{lab.vm_addr}:53"] == (
        Status.PASS,
        f"port 53 already serves the platform's zone ({zone})",
    )
    (wildcard,) = by_target(report, "dns.wildcard").values()
    assert wildcard == (Status.PASS, "4 names resolve to 10.213.0.1")


def test_verify_resolves_the_names_the_hub_serves(
    lab: Lab, site: SiteFactory, provisioned_hub: Hub
) -> None:
    inv = load_inventory(site())
    found = check_dns(SiteAccess(inv), inv.clusters[0], "verify")
    assert found.ok, found.message
    assert found.details["names"] == [
        "lab.org.ml.lab.test",
        "x.lab.org.ml.lab.test",
        "x.jobs.lab.org.ml.lab.test",
        "x.apps.lab.org.ml.lab.test",
    ]


def test_hub_service_with_a_foreign_ca_fails(
    lab: Lab, site: SiteFactory, provisioned_hub: Hub
) -> None:
    """The hub's services do not chain to another CA: hub.service fails, and its port is taken
    by something that is not this site's hub."""

    def edit(data: dict[str, Any]) -> None:
        data["aux_vm"]["tls"] = {
            "ca": "provided",
            "ca_cert": str(lab.kube_ca),
            "ca_key": f"file:{lab.kube_ca.with_suffix('.key')}",
        }

    report = run_preflight(load_inventory(site(edit)))
    status, message = by_target(report, "hub.service")["hub/registry"]
    assert status is Status.FAIL
    assert "does not chain to the site CA" in message
    status, message = by_target(report, "vm.ports")[f"vm/{lab.vm_addr}:5000"]
    assert status is Status.FAIL
    assert message.startswith("port 5000 for the registry is taken")
    assert not report.ok
