"""Preflight (before anything changes) and verify (acceptance, after install) checks.

report = run_preflight(inventory, bundle_size=None, strict=False)
report.ok, report.as_dict()
"""

from __future__ import annotations

from functools import partial

from installer.checks import catalog
from installer.checks.acceptance import ProbeNamespace, scheduling_checks
from installer.checks.context import SiteAccess
from installer.checks.framework import Check, CheckResult, Report, Severity, Status, run_checks
from installer.checks.preflight_kube import check_api, kube_checks
from installer.checks.preflight_vm import vm_checks
from installer.checks.sitenet import dns_checks, hub_checks
from installer.checks.verify_site import site_checks
from installer.inventory import Inventory

__all__ = [
    "CheckResult",
    "Report",
    "Severity",
    "Status",
    "preflight_checks",
    "run_preflight",
    "run_verify",
    "verify_checks",
]


def preflight_checks(access: SiteAccess) -> list[Check]:
    """Every preflight check for the site, in report order."""
    checks = vm_checks(access)
    for cluster in access.inventory.clusters:
        checks += kube_checks(access, cluster)
    return checks + dns_checks(access, "preflight") + hub_checks(access)


def verify_checks(access: SiteAccess, namespaces: ProbeNamespace) -> list[Check]:
    """Every acceptance check for the site, in report order."""
    checks = [
        catalog.make("kube.api", f"cluster/{c.name}", partial(check_api, access, c))
        for c in access.inventory.clusters
    ]
    checks += scheduling_checks(access, namespaces)
    checks += dns_checks(access, "verify")
    return checks + site_checks(access, namespaces)


def run_preflight(
    inventory: Inventory, *, bundle_size: int | None = None, strict: bool = False
) -> Report:
    """Run preflight against the live site; `bundle_size`: the bytes of the bundle to load (every
    part), which the VM must have room for once expanded."""
    access = SiteAccess(inventory, bundle_size=bundle_size)
    try:
        return run_checks(
            "preflight",
            preflight_checks(access),
            skip=inventory.skip_checks,
            strict=strict,
            known_ids=catalog.ids(),
        )
    finally:
        access.close()


def run_verify(inventory: Inventory, *, strict: bool = False) -> Report:
    """Run the acceptance checks; test pods and their namespace are removed, pass or fail."""
    access = SiteAccess(inventory)
    namespaces = ProbeNamespace()
    try:
        return run_checks(
            "verify",
            verify_checks(access, namespaces),
            skip=inventory.skip_checks,
            strict=strict,
            known_ids=catalog.ids(),
        )
    finally:
        namespaces.delete()
        access.close()
