"""In-cluster Keycloak: where the installer reaches the deployed server's admin API."""

from __future__ import annotations

import json
from pathlib import Path

from installer.inventory import load_inventory
from installer.stacks import program_of
from installer.stacks.inputs import keycloak_input
from installer.state import StateDir
from tests.unit.stacks.conftest import SITE, write_inventory
from tests.unit.stacks.mocks import run_program, unwrap

EXTERNAL = (
    'keycloak: {mode: external, url: "https://sso.example.com", admin_password: "env:KC_PASS"}'
)


def _realm_and_release(tmp_path: Path, keycloak: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    inv = load_inventory(write_inventory(tmp_path, SITE.replace(EXTERNAL, keycloak)))
    si = keycloak_input(inv, inv.clusters[0], StateDir(tmp_path / "state"))
    project = "onprem-keycloak"
    config = {f"{project}:args": json.dumps(si.args.model_dump(mode="json"))}
    config.update({f"{project}:{k}": v.get_secret_value() for k, v in si.secrets.items()})
    mocks = run_program(program_of("keycloak"), config=config, project=project)
    (realm,) = mocks.of_type("pulumi-python:dynamic:Resource")
    return realm.inputs, mocks.named("keycloak").inputs


def test_the_admin_api_defaults_to_the_ingress_name(tmp_path: Path) -> None:
    realm, release = _realm_and_release(tmp_path, "keycloak: {mode: in-cluster}")
    assert realm["url"] == "https://keycloak.main.org.ml.example.com"
    assert release["chart"] == "keycloak"


def test_an_inventory_url_says_where_the_deployed_keycloak_answers(tmp_path: Path) -> None:
    realm, release = _realm_and_release(
        tmp_path, 'keycloak: {mode: in-cluster, url: "https://10.0.0.5:8443"}'
    )
    assert realm["url"] == "https://10.0.0.5:8443"
    # The chart still serves the cluster's name; only the installer's way in differs.
    values, _secret = unwrap(release["values"])
    assert values["ingress"]["hostname"] == "keycloak.main.org.ml.example.com"
