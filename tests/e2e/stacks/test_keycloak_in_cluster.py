"""The keycloak stack in `in-cluster` mode on the lab: the keycloak chart from the site chart
repository (Keycloak and its PostgreSQL), then the realm and client through the admin API.

Two stand-ins (README): kwok's pods run nothing, so the deployed Keycloak cannot answer; the
inventory's `keycloak.url` (where the installer reaches the in-cluster Keycloak) points at the
lab's real Keycloak, whose admin password the chart is given too, and the realm is configured
there. PostgreSQL's volume claim is bound to a PersistentVolume the test makes, as a storage
provisioner would.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from installer.stacks.keycloak_admin import KeycloakAdmin
from installer.state import HUB_PULL_PASSWORD_SECRET, HUB_PULL_USER, StateDir
from tests.e2e.bootstrap.cli import site_lock
from tests.e2e.stacks.chartrepo import site_chart_repo
from tests.e2e.stacks.conftest import Site

pytestmark = [pytest.mark.e2e, pytest.mark.lab_site]

NS = "keycloak"
PG_CLAIM = "data-keycloak-postgresql-0"  # the StatefulSet's claim template `data`, replica 0


@pytest.fixture(scope="module")
def lab_site() -> Iterator[None]:
    """The lab site alone for the module."""
    with site_lock():
        yield


def _default_class(storage: client.StorageV1Api) -> str:
    for cls in storage.list_storage_class().items:
        if (cls.metadata.annotations or {}).get(
            "storageclass.kubernetes.io/is-default-class"
        ) == "true":
            return str(cls.metadata.name)
    return ""


def _pg_volume(name: str, storage_class: str) -> client.V1PersistentVolume:
    """A volume pre-bound to PostgreSQL's claim, as a provisioner would make one."""
    return client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PersistentVolumeSpec(
            capacity={"storage": "8Gi"},
            access_modes=["ReadWriteOnce"],
            persistent_volume_reclaim_policy="Retain",
            storage_class_name=storage_class,
            host_path=client.V1HostPathVolumeSource(path=f"/var/lib/lab-pv/{name}"),
            claim_ref=client.V1ObjectReference(namespace=NS, name=PG_CLAIM),
        ),
    )


def _ready(apps: client.AppsV1Api, name: str) -> client.V1StatefulSet:
    deadline = time.monotonic() + 120
    while True:
        sts = apps.read_namespaced_stateful_set(name, NS)
        if (sts.status.ready_replicas or 0) >= 1:
            return sts
        assert time.monotonic() < deadline, f"{name} never became ready"
        time.sleep(1)


def test_in_cluster_keycloak_release_and_realm(
    site: Site, core: client.CoreV1Api, lab_site: None
) -> None:
    env = site.lab.env
    admin_password = Path(env["LAB_KEYCLOAK_PASSWORD_FILE"]).read_text(encoding="utf-8").strip()
    apps = client.AppsV1Api(core.api_client)
    storage = client.StorageV1Api(core.api_client)
    realm = f"e2e-incluster-{uuid.uuid4().hex[:6]}"
    pv = f"e2e-{realm}-pg"
    original = site.inventory.read_text(encoding="utf-8")
    start = original.index("    keycloak:\n")
    end = original.index("      realm: ", start)
    end = original.index("\n", end) + 1
    in_cluster = (
        "    keycloak:\n"
        "      mode: in-cluster\n"
        f"      url: {env['LAB_KEYCLOAK_URL']}\n"
        f"      ca_cert: {env['LAB_KEYCLOAK_CA']}\n"
        f"      admin_user: {env['LAB_KEYCLOAK_ADMIN']}\n"
        f'      admin_password: "file:{env["LAB_KEYCLOAK_PASSWORD_FILE"]}"\n'
        f"      realm: {realm}\n"
    )
    password = StateDir(site.state).secret(HUB_PULL_PASSWORD_SECRET).get_secret_value()
    charts = site.lab.state / "upstream" / "charts"
    core.create_persistent_volume(_pg_volume(pv, _default_class(storage)))
    admin = KeycloakAdmin(env["LAB_KEYCLOAK_URL"], "admin", admin_password, env["LAB_KEYCLOAK_CA"])
    try:
        with site_chart_repo(charts, site.state, HUB_PULL_USER, password) as port:
            text = original[:start] + in_cluster + original[end:]
            site.inventory.write_text(
                text.replace(
                    "  ssh: {",
                    f"  hostname: 127.0.0.1\n  services: {{chartmuseum: {{port: {port},"
                    " data_path: /srv/charts}}\n  ssh: {",
                    1,
                ),
                encoding="utf-8",
            )
            try:
                up = site.ok("stacks", "up", "-c", "keycloak")["stacks"][0]
                assert up["changes"] > 0
                kc = _ready(apps, "keycloak-keycloak")
                _ready(apps, "keycloak-postgresql")
                image = kc.spec.template.spec.containers[0].image
                assert image.startswith("127.0.0.1:5000/docker.io/bitnami/keycloak:")
                # The chart's server is given the admin password the installer logs in with.
                secret = core.read_namespaced_secret("keycloak-keycloak", NS)
                given = base64.b64decode(secret.data["admin-password"]).decode()
                assert given == admin_password
                assert admin.realm_exists(realm)
                found = admin.find_client(realm, "platform")
                assert found is not None and found["publicClient"] is False
                assert "https://lab.org.lab.example.test/*" in found["redirectUris"]

                again = site.ok("stacks", "preview", "-c", "keycloak")["stacks"][0]
                assert again["changes"] == 0
            finally:
                site.ok("stacks", "destroy", "-c", "keycloak", "--yes")
                site.inventory.write_text(original, encoding="utf-8")
        assert not admin.realm_exists(realm)
        assert NS not in {n.metadata.name for n in core.list_namespace().items}
    finally:
        if admin.realm_exists(realm):
            admin.delete_realm(realm)
        admin.close()
        core.delete_persistent_volume(pv)
