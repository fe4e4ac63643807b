"""The lab's Keycloak serves OIDC discovery over TLS and a working admin API."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator

import httpx
import pytest

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
