"""The lab's Keycloak serves OIDC discovery over TLS and a working admin API."""

from __future__ import annotations

import ssl
import subprocess
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.lab import Lab, read_versions
from tests.fixtures.lab_services import LabServices

pytestmark = pytest.mark.e2e


@pytest.fixture
def keycloak(lab_services: LabServices) -> Iterator[httpx.Client]:
    """An HTTPS client for the lab Keycloak that trusts the lab CA only."""
    with httpx.Client(
        base_url=lab_services.keycloak_url,
        verify=ssl.create_default_context(cafile=lab_services.ca),
        timeout=30,
    ) as http:
        yield http


def _admin_token(http: httpx.Client, services: LabServices) -> str:
    resp = http.post(
        "/realms/master/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": services.keycloak_admin,
            "password": services.keycloak_password,
        },
    )
    resp.raise_for_status()
    return str(resp.json()["access_token"])


def test_oidc_discovery(keycloak: httpx.Client, lab_services: LabServices) -> None:
    doc = keycloak.get("/realms/master/.well-known/openid-configuration")
    assert doc.status_code == 200
    body = doc.json()
    assert body["issuer"] == f"{lab_services.keycloak_url}/realms/master"
    assert body["token_endpoint"].startswith(lab_services.keycloak_url)
    assert "authorization_code" in body["grant_types_supported"]


def test_wrong_admin_password_is_refused(keycloak: httpx.Client) -> None:
    resp = keycloak.post(
        "/realms/master/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": "admin",
            "password": "not-the-password",
        },
    )
    assert resp.status_code == 401


def test_realm_create_and_delete(keycloak: httpx.Client, lab_services: LabServices) -> None:
    headers = {"Authorization": f"Bearer {_admin_token(keycloak, lab_services)}"}
    realm = f"lab-{uuid.uuid4().hex[:8]}"
    created = keycloak.post(
        "/admin/realms", json={"realm": realm, "enabled": True}, headers=headers
    )
    assert created.status_code == 201
    try:
        got = keycloak.get(f"/admin/realms/{realm}", headers=headers)
        assert got.status_code == 200
        assert got.json()["enabled"] is True
        discovery = keycloak.get(f"/realms/{realm}/.well-known/openid-configuration")
        assert discovery.json()["issuer"].endswith(f"/realms/{realm}")
    finally:
        deleted = keycloak.delete(f"/admin/realms/{realm}", headers=headers)
    assert deleted.status_code == 204
    assert keycloak.get(f"/admin/realms/{realm}", headers=headers).status_code == 404


def test_listens_only_on_loopback_at_its_declared_ports(lab: Lab) -> None:
    # Dev mode serves plain HTTP beside HTTPS whatever --http-enabled says: it must be on a
    # declared lab port, not Keycloak's default 8080, and like the rest on loopback only.
    pid = (lab.state / "run" / "keycloak.pid").read_text().strip()
    listeners = subprocess.run(
        ["ss", "-Hltnp"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    mine = [line.split()[3] for line in listeners.splitlines() if f"pid={pid}," in line]
    hosts = {addr.rsplit(":", 1)[0] for addr in mine}
    ports = {int(addr.rsplit(":", 1)[1]) for addr in mine}
    assert hosts <= {"127.0.0.1", "[::ffff:127.0.0.1]"}, mine
    versions = read_versions()
    declared = {
        int(versions[name])
        for name in ("LAB_KEYCLOAK_PORT", "LAB_KEYCLOAK_MGMT_PORT", "LAB_KEYCLOAK_HTTP_PORT")
    }
    assert declared <= ports, mine
    assert 8080 not in ports, mine
