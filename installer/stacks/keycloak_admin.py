"""Keycloak's admin API, idempotently: the platform's realm, client, redirect URIs and upstream
identity provider. Used by the keycloak stack's `KeycloakRealm` dynamic resource, so `pulumi
preview` shows a changed redirect URI like any other change and destroy removes what was made.

Each `ensure_*` reads first and writes only what differs; it reports whether it changed anything.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from installer.errors import EnvironmentProblem, FailedError

_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RealmSpec:
    """What the platform needs in Keycloak."""

    realm: str
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    web_origins: list[str]
    identity_provider: dict[str, Any] | None = None


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The system's trust (SSL_CERT_FILE honoured) plus the site CA when there is one."""
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


BUILT_IN_CLIENTS = frozenset(
    {
        "account",
        "account-console",
        "admin-cli",
        "broker",
        "realm-management",
        "security-admin-console",
    }
)
"""The clients Keycloak makes in every new realm."""
MADE_BY = "installer.apolo.us/made-by"
MADE_BY_INSTALLER = "onprem-installer"
"""The realm attribute that marks a realm the installer made: the stack that removes the realm's
last installer client removes the realm, whichever cluster's stack made it."""


class KeycloakAdmin:
    """A logged-in admin session on one Keycloak."""

    def __init__(self, url: str, user: str, password: str, ca_file: str | None) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(verify=tls_context(ca_file), timeout=_TIMEOUT_S)
        try:
            reply = self.http.post(
                f"{self.url}/realms/master/protocol/openid-connect/token",
                data={
                    "grant_type": "password",
                    "client_id": "admin-cli",
                    "username": user,
                    "password": password,
                },
            )
        except httpx.HTTPError as exc:
            raise EnvironmentProblem(
                f"Keycloak at {self.url} is unreachable: {type(exc).__name__}: {exc}",
                remedy="check keycloak.url and that the installer host trusts its certificate",
            ) from None
        if reply.status_code in (400, 401, 403):
            raise EnvironmentProblem(
                f"Keycloak at {self.url} refused the admin login of {user!r} ({reply.status_code})",
                remedy="check keycloak.admin_user and the admin_password reference",
            )
        _check(reply, "admin login")
        self.http.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"

    def close(self) -> None:
        """End the session."""
        self.http.close()

    def _admin(self, path: str) -> str:
        return f"{self.url}/admin/realms{path}"

    def realm_exists(self, realm: str) -> bool:
        """Whether the realm exists."""
        reply = self.http.get(self._admin(f"/{realm}"))
        if reply.status_code == 404:
            return False
        _check(reply, f"read realm {realm}")
        return True

    def ensure_realm(self, realm: str) -> bool:
        """Create the realm (enabled, marked as the installer's) when missing; True when it
        was created."""
        if self.realm_exists(realm):
            return False
        rep = {"realm": realm, "enabled": True, "attributes": {MADE_BY: MADE_BY_INSTALLER}}
        _check(self.http.post(self._admin(""), json=rep), f"create realm {realm}")
        return True

    def realm_made_by_installer(self, realm: str) -> bool:
        """Whether the installer made the realm (its mark), whichever cluster's stack did."""
        reply = self.http.get(self._admin(f"/{realm}"))
        if reply.status_code == 404:
            return False
        _check(reply, f"read realm {realm}")
        return bool(reply.json().get("attributes", {}).get(MADE_BY) == MADE_BY_INSTALLER)

    def find_client(self, realm: str, client_id: str) -> dict[str, Any] | None:
        """The client's representation, or None (also when the realm is gone)."""
        reply = self.http.get(self._admin(f"/{realm}/clients"), params={"clientId": client_id})
        if reply.status_code == 404:
            return None
        _check(reply, f"read client {client_id}")
        found: list[dict[str, Any]] = reply.json()
        return found[0] if found else None

    def other_clients(self, realm: str, client_id: str) -> list[str]:
        """The realm's clients other than `client_id` and those Keycloak makes in every realm:
        what someone else (another cluster, an operator) keeps there."""
        reply = self.http.get(self._admin(f"/{realm}/clients"))
        if reply.status_code == 404:
            return []
        _check(reply, f"list the clients of realm {realm}")
        names = [str(c.get("clientId", "")) for c in reply.json()]
        return sorted(n for n in names if n != client_id and n not in BUILT_IN_CLIENTS)

    def ensure_client(self, spec: RealmSpec) -> bool:
        """Create or correct the platform's confidential OIDC client; True when it changed."""
        wanted = _client_rep(spec)
        current = self.find_client(spec.realm, spec.client_id)
        if current is None:
            _check(
                self.http.post(self._admin(f"/{spec.realm}/clients"), json=wanted),
                f"create client {spec.client_id}",
            )
            return True
        if not self._client_drift(spec, current):
            return False
        _check(
            self.http.put(
                self._admin(f"/{spec.realm}/clients/{current['id']}"), json={**current, **wanted}
            ),
            f"update client {spec.client_id}",
        )
        return True

    def _client_drift(self, spec: RealmSpec, current: dict[str, Any]) -> list[str]:
        """The client's fields Keycloak holds otherwise than `spec` says."""
        secret = self.http.get(self._admin(f"/{spec.realm}/clients/{current['id']}/client-secret"))
        _check(secret, f"read the secret of client {spec.client_id}")
        have = {**current, "secret": secret.json().get("value")}
        for key in ("redirectUris", "webOrigins"):
            have[key] = sorted(have.get(key) or [])
        return [k for k, v in _client_rep(spec).items() if have.get(k) != v]

    def drift(
        self, spec: RealmSpec, idp: dict[str, Any] | None = None, idp_secret_changed: bool = False
    ) -> list[str]:
        """What Keycloak holds otherwise than the spec and the provider representation say:
        `realm`, `client`, the client's drifted fields (`client.redirectUris`, ...),
        `identity_provider` or its drifted fields; empty when nothing drifted. Read only."""
        if not self.realm_exists(spec.realm):
            return ["realm"]
        current = self.find_client(spec.realm, spec.client_id)
        if current is None:
            found = ["client"]
        else:
            found = [f"client.{k}" for k in self._client_drift(spec, current)]
        if idp is not None:
            found += self._idp_drift(spec.realm, idp)
        return found

    def _idp_drift(self, realm: str, idp: dict[str, Any]) -> list[str]:
        """The provider's fields the installer sets that Keycloak holds otherwise. The client
        secret is left out: Keycloak never shows it (it answers a mask), so it is put only when
        the inventory's secret changes (`ensure_identity_provider(put_secret=True)`)."""
        alias = idp["alias"]
        reply = self.http.get(self._admin(f"/{realm}/identity-provider/instances/{alias}"))
        if reply.status_code == 404:
            return ["identity_provider"]
        _check(reply, f"read identity provider {alias}")
        current = reply.json()
        found = [
            f"identity_provider.{k}"
            for k, v in idp.items()
            if k != "config" and current.get(k) != v
        ]
        have = current.get("config") or {}
        found += [
            f"identity_provider.config.{k}"
            for k, v in idp["config"].items()
            if k != _IDP_SECRET and have.get(k) != v
        ]
        return found

    def ensure_identity_provider(
        self, realm: str, idp: dict[str, Any], from_url: str, *, put_secret: bool = False
    ) -> bool:
        """Create or correct the upstream identity provider; True when it changed.

        Endpoints come from the provider's discovery document or SAML metadata, which Keycloak
        itself reads (`import-config`), so they are what Keycloak will use. The client secret
        is written on create, with any other correction, and when `put_secret` (the
        inventory's secret changed); never compared, since Keycloak does not show it.
        """
        alias = idp["alias"]
        path = self._admin(f"/{realm}/identity-provider/instances")
        reply = self.http.get(f"{path}/{alias}")
        if reply.status_code != 404:
            _check(reply, f"read identity provider {alias}")
            if not put_secret and not self._idp_drift(realm, idp):
                return False
        imported = self.http.post(
            self._admin(f"/{realm}/identity-provider/import-config"),
            json={"providerId": idp["providerId"], "fromUrl": from_url},
        )
        _check(imported, f"read the metadata of identity provider {alias} from {from_url}")
        idp = {**idp, "config": {**imported.json(), **idp["config"]}}
        if reply.status_code == 404:
            _check(self.http.post(path, json=idp), f"create identity provider {alias}")
            return True
        current = reply.json()
        merged = {**current, **idp, "config": {**current.get("config", {}), **idp["config"]}}
        _check(self.http.put(f"{path}/{alias}", json=merged), f"update identity provider {alias}")
        return True

    def delete_client(self, realm: str, client_id: str) -> None:
        """Remove the client when present."""
        current = self.find_client(realm, client_id)
        if current is not None:
            _check(
                self.http.delete(self._admin(f"/{realm}/clients/{current['id']}")),
                f"delete client {client_id}",
            )

    def delete_identity_provider(self, realm: str, alias: str) -> None:
        """Remove the identity provider when present."""
        reply = self.http.delete(self._admin(f"/{realm}/identity-provider/instances/{alias}"))
        if reply.status_code != 404:
            _check(reply, f"delete identity provider {alias}")

    def delete_realm(self, realm: str) -> None:
        """Remove the realm when present."""
        reply = self.http.delete(self._admin(f"/{realm}"))
        if reply.status_code != 404:
            _check(reply, f"delete realm {realm}")


def _check(reply: httpx.Response, what: str) -> None:
    if reply.is_success:
        return
    detail = reply.text[:300].strip()
    raise FailedError(f"Keycloak: {what} failed: {reply.status_code} {detail}")


_IDP_SECRET = "clientSecret"  # noqa: S105 - a key, not a value


def _client_rep(spec: RealmSpec) -> dict[str, Any]:
    return {
        "clientId": spec.client_id,
        "protocol": "openid-connect",
        "enabled": True,
        "publicClient": False,
        "standardFlowEnabled": True,
        "directAccessGrantsEnabled": False,
        "clientAuthenticatorType": "client-secret",
        "secret": spec.client_secret,
        "redirectUris": sorted(spec.redirect_uris),
        "webOrigins": sorted(spec.web_origins),
    }


def identity_provider_rep(idp: dict[str, Any], client_secret: str | None) -> dict[str, Any]:
    """Keycloak's representation of an upstream provider from the inventory's fields (the
    endpoints are added from its metadata by `ensure_identity_provider`)."""
    config: dict[str, str] = {"syncMode": "IMPORT"}
    if idp["type"] == "oidc":
        config.update(
            {
                "clientId": idp.get("client_id") or "",
                "clientAuthMethod": "client_secret_post",
                "validateSignature": "true",
                "useJwksUrl": "true",
            }
        )
        if client_secret:
            config[_IDP_SECRET] = client_secret
    else:
        config.update({"validateSignature": "true"})
    return {
        "alias": idp["alias"],
        "providerId": idp["type"],
        "enabled": True,
        "trustEmail": False,
        "config": config,
    }
