"""The Keycloak admin client the keycloak stack uses, against the lab's real Keycloak."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from installer.errors import EnvironmentProblem
from installer.stacks.keycloak_admin import KeycloakAdmin, RealmSpec, identity_provider_rep
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


def test_identity_provider_converges_and_its_secret_forces_no_rewrite(lab: Lab) -> None:
    """An OIDC provider (another realm of the lab's Keycloak stands in for the site's IdP):
    Keycloak masks its client secret, which must not make every run rewrite it; drift made by
    hand is seen and corrected."""
    admin = _admin(lab)
    realm, upstream = (f"e2e-idp-{uuid.uuid4().hex[:6]}-{p}" for p in ("site", "corp"))
    discovery = f"{lab.env['LAB_KEYCLOAK_URL']}/realms/{upstream}/.well-known/openid-configuration"
    spec = RealmSpec(
        realm=realm,
        client_id="platform",
        client_secret="e2e-client-secret-1",
        redirect_uris=["https://lab.example.test/*"],
        web_origins=["https://lab.example.test"],
    )
    idp = identity_provider_rep(
        {"alias": "corp", "type": "oidc", "client_id": "platform-login"}, "idp-secret-1"
    )
    try:
        admin.ensure_realm(upstream)
        admin.ensure_realm(realm)
        admin.ensure_client(spec)
        assert admin.drift(spec, idp) == ["identity_provider"]
        assert admin.ensure_identity_provider(realm, idp, discovery) is True
        # Keycloak answers the secret masked; a second run compares everything else.
        path = f"/{realm}/identity-provider/instances/corp"
        shown = admin.http.get(admin._admin(path)).json()
        assert shown["config"]["clientSecret"] != "idp-secret-1"
        assert admin.drift(spec, idp) == []
        assert admin.ensure_identity_provider(realm, idp, discovery) is False
        # A changed secret in the inventory is written (the caller knows it changed).
        other = identity_provider_rep(
            {"alias": "corp", "type": "oidc", "client_id": "platform-login"}, "idp-secret-2"
        )
        assert admin.ensure_identity_provider(realm, other, discovery, put_secret=True) is True
        # Disabled by hand in Keycloak: drift, then corrected.
        assert admin.http.put(admin._admin(path), json={**shown, "enabled": False}).is_success
        assert admin.drift(spec, other) == ["identity_provider.enabled"]
        assert admin.ensure_identity_provider(realm, other, discovery) is True
        assert admin.drift(spec, other) == []
        assert admin.http.get(admin._admin(path)).json()["enabled"] is True
    finally:
        admin.delete_realm(realm)
        admin.delete_realm(upstream)
        admin.close()
