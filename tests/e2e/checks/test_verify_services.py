"""OIDC discovery against the lab's Keycloak: an existing realm passes, a missing one fails."""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import pytest

from installer.checks.context import SiteAccess
from installer.checks.verify_site import _get_via, check_oidc
from installer.inventory import load_inventory
from tests.e2e.checks.conftest import SiteFactory
from tests.fixtures.lab import Lab

pytestmark = pytest.mark.e2e


def keycloak(lab: Lab) -> tuple[str, str]:
    return lab.env["LAB_KEYCLOAK_URL"], lab.env["LAB_KEYCLOAK_CA"]


def test_existing_realm_passes_and_missing_realm_fails(lab: Lab, site: SiteFactory) -> None:
    url, ca = keycloak(lab)

    def realm(name: str) -> Any:
        def edit(data: dict[str, Any]) -> None:
            kc = data["clusters"][0]["keycloak"]
            kc.update({"url": url, "ca_cert": ca, "realm": name})

        return edit

    inv = load_inventory(site(realm("master")))
    found = check_oidc(SiteAccess(inv), inv.clusters[0])
    assert found.ok, found.message
    inv = load_inventory(site(realm("no-such-realm")))
    missing = check_oidc(SiteAccess(inv), inv.clusters[0])
    assert not missing.ok and "the realm no-such-realm does not exist" in missing.message


def test_request_by_address_keeps_the_name_for_tls(lab: Lab) -> None:
    """How names the VM serves are reached: connect to the address, verify the name."""
    url, ca = keycloak(lab)
    context = ssl.create_default_context(cafile=ca)
    port = httpx.URL(url).port
    ok = _get_via(f"https://localhost:{port}/realms/master", "127.0.0.1", context)
    assert ok.status_code == 200
    with pytest.raises(httpx.ConnectError, match="Hostname mismatch"):
        _get_via(f"https://wrong.example:{port}/realms/master", "127.0.0.1", context)
