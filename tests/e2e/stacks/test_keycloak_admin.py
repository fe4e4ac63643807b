"""The Keycloak admin client the keycloak stack uses, against the lab's real Keycloak."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from installer.errors import EnvironmentProblem
from installer.stacks.keycloak_admin import KeycloakAdmin, RealmSpec
from tests.fixtures.lab import Lab

pytestmark = pytest.mark.e2e


def _admin(lab: Lab, password: str | None = None) -> KeycloakAdmin:
    env = lab.env
    secret = password or Path(env["LAB_KEYCLOAK_PASSWORD_FILE"]).read_text(encoding="utf-8")
    return KeycloakAdmin(
        env["LAB_KEYCLOAK_URL"], env["LAB_KEYCLOAK_ADMIN"], secret.strip(), env["LAB_KEYCLOAK_CA"]
    )


def test_realm_and_client_converge_and_a_second_run_changes_nothing(lab: Lab) -> None:
    admin = _admin(lab)
    realm = f"e2e-kc-{uuid.uuid4().hex[:6]}"
    spec = RealmSpec(
        realm=realm,
        client_id="platform",
        client_secret="e2e-client-secret-1",
        redirect_uris=["https://lab.example.test/*", "http://localhost:54540/*"],
        web_origins=["https://lab.example.test"],
    )
    try:
        assert admin.ensure_realm(realm) is True
        assert admin.ensure_client(spec) is True
        assert admin.ensure_realm(realm) is False
        assert admin.ensure_client(spec) is False
        moved = RealmSpec(**{**spec.__dict__, "redirect_uris": ["https://other.example.test/*"]})
        assert admin.ensure_client(moved) is True
        client = admin.find_client(realm, "platform")
        assert client is not None and client["redirectUris"] == ["https://other.example.test/*"]
        assert client["publicClient"] is False
        admin.delete_client(realm, "platform")
        assert admin.find_client(realm, "platform") is None
    finally:
        admin.delete_realm(realm)
        admin.close()


def test_refused_admin_login_is_an_environment_problem(lab: Lab) -> None:
    with pytest.raises(EnvironmentProblem, match="refused the admin login") as err:
        _admin(lab, password="not-the-password")
    assert err.value.exit_code == 3
