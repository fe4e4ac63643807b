"""The dns, keycloak and platform stacks on the lab (with the nodes stack under them)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from tests.e2e.stacks.conftest import REALM, Site

pytestmark = pytest.mark.e2e

STACKS = ("-c", "nodes", "-c", "dns", "-c", "keycloak", "-c", "platform")


def _available(apps: client.AppsV1Api, namespace: str, name: str, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dep = apps.read_namespaced_deployment(name, namespace)
        conditions = {c.type: c.status for c in (dep.status.conditions or [])}
        if conditions.get("Available") == "True":
            return True
        time.sleep(1)
    return False


def _kc_admin_get(site: Site, path: str) -> httpx.Response:
    return _kc_admin(site, "GET", path)


def _kc_admin(site: Site, method: str, path: str, **kw: object) -> httpx.Response:
    env = site.lab.env
    password = Path(env["LAB_KEYCLOAK_PASSWORD_FILE"]).read_text(encoding="utf-8").strip()
    with httpx.Client(verify=env["LAB_KEYCLOAK_CA"], timeout=30) as http:
        token = http.post(
            f"{env['LAB_KEYCLOAK_URL']}/realms/master/protocol/openid-connect/token",
            data={
                "grant_type": "password",
                "client_id": "admin-cli",
                "username": env["LAB_KEYCLOAK_ADMIN"],
                "password": password,
            },
        ).json()["access_token"]
        return http.request(
            method,
            f"{env['LAB_KEYCLOAK_URL']}/admin/realms{path}",
            headers={"Authorization": f"Bearer {token}"},
            **kw,  # type: ignore[arg-type]
        )


def test_platform_comes_up_and_one_preset_change_is_one_change(
    site: Site, core: client.CoreV1Api
) -> None:
    apps = client.AppsV1Api(core.api_client)
    try:
        result = site.ok("stacks", "up", *STACKS)
        assert [s["component"] for s in result["stacks"]] == [
            "nodes",
            "dns",
            "keycloak",
            "platform",
        ]
        for name in ("job-controller", "app-controller"):
            assert _available(apps, "platform", name), f"{name} not Available"
        config = json.loads(
            core.read_namespaced_config_map("platform-config", "platform").data["config.json"]
        )
        presets = {p["name"]: p for p in config["resource_presets"]}
        assert presets["cpu-small"]["credits_per_hour"] == "0.5"
        assert presets["a100x1"]["nvidia_gpu"] == {"count": 1}
        sizes = {p["name"]: p["max_size"] for p in config["resource_pools"]}
        assert sizes == {"services": 1, "cpu": 2, "a100": 2, "h100-spot": 1}
        # The realm and the platform's client exist in the (external) lab Keycloak.
        clients = _kc_admin_get(site, f"/{REALM}/clients?clientId=platform").json()
        assert len(clients) == 1
        assert "http://localhost:54540/*" in clients[0]["redirectUris"]
        ingress = core.read_namespaced_service("ingress", "platform-ingress")
        assert ingress.spec.external_i_ps == ["10.213.0.50"]

        again = site.ok("stacks", "preview", *STACKS)
        assert [s["changes"] for s in again["stacks"]] == [0, 0, 0, 0], again

        # Drift made in Keycloak itself: a preview shows it, an up puts the client back.
        edited = {**clients[0], "redirectUris": ["https://attacker.example/*"]}
        path = f"/{REALM}/clients/{clients[0]['id']}"
        assert _kc_admin(site, "PUT", path, json=edited).status_code == 204
        drifted = site.ok("stacks", "preview", "-c", "keycloak")["stacks"][0]
        assert [(st["op"], st["name"]) for st in drifted["steps"]] == [("update", "realm")], drifted
        # A refresh reads the realm too (and changes nothing in Keycloak); the drift stays seen.
        site.ok("stacks", "refresh", "-c", "keycloak")
        assert _kc_admin_get(site, path).json()["redirectUris"] == ["https://attacker.example/*"]
        drifted = site.ok("stacks", "preview", "-c", "keycloak")["stacks"][0]
        assert [(st["op"], st["name"]) for st in drifted["steps"]] == [("update", "realm")], drifted
        site.ok("stacks", "up", "-c", "keycloak")
        assert _kc_admin_get(site, path).json()["redirectUris"] == clients[0]["redirectUris"]
        assert site.ok("stacks", "preview", "-c", "keycloak")["stacks"][0]["changes"] == 0

        site.write(cpu_small_price="0.75")
        changed = site.ok("stacks", "preview", *STACKS)
        steps = [
            (s["component"], st["op"], st["name"]) for s in changed["stacks"] for st in s["steps"]
        ]
        assert steps == [("platform", "update", "controller-config")]
    finally:
        site.write()
        site.ok("stacks", "destroy", *STACKS, "--yes")
    assert _kc_admin_get(site, f"/{REALM}").status_code == 404
    # Destroy took the controllers away (their namespace is gone or going).
    live = [n for n in core.list_namespace().items if n.metadata.name == "platform"]
    assert not live or live[0].status.phase == "Terminating"
