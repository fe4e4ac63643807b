"""The keycloak stack under mocks: external and in-cluster, realm inputs, secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from installer.inventory import load_inventory
from installer.site import hub_urls
from installer.stacks import program_of
from installer.stacks.inputs import keycloak_input, oidc_client_secret_name
from installer.state import StateDir
from tests.unit.stacks.conftest import SITE, write_inventory
from tests.unit.stacks.mocks import run_program, unwrap

DYNAMIC = "pulumi-python:dynamic:Resource"


def _run(si: object, project: str = "onprem-keycloak") -> object:
    config = {f"{project}:args": json.dumps(si.args.model_dump(mode="json"))}  # type: ignore[attr-defined]
    for key, value in si.secrets.items():  # type: ignore[attr-defined]
        config[f"{project}:{key}"] = value.get_secret_value()
    return run_program(program_of("keycloak"), config=config, project=project)


def test_external_keycloak_gets_the_realm_client_and_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KC_PASS", "admin-pass-1")
    inv = load_inventory(write_inventory(tmp_path))
    state = StateDir(tmp_path / "state")
    si = keycloak_input(inv, inv.clusters[0], state)
    mocks = _run(si)
    assert not mocks.of_type("kubernetes:helm.sh/v3:Release")  # type: ignore[attr-defined]
    (realm,) = mocks.of_type(DYNAMIC)  # type: ignore[attr-defined]
    inputs = realm.inputs
    assert inputs["url"] == "https://sso.example.com"
    assert inputs["realm"] == "apolo"
    assert inputs["client_id"] == "platform"
    assert inputs["redirect_uris"] == [
        "https://main.org.ml.example.com/*",
        "http://localhost:54540/*",
    ]
    password, secret = unwrap(inputs["admin_password"])
    assert (password, secret) == ("admin-pass-1", True)
    client_secret, secret = unwrap(inputs["client_secret"])
    assert secret
    # The client secret is the one the platform stack reads from the state folder.
    assert (
        client_secret == state.secret(oidc_client_secret_name(inv.clusters[0])).get_secret_value()
    )


def test_in_cluster_keycloak_is_a_chart_release_from_the_site_repo(tmp_path: Path) -> None:
    text = SITE.replace(
        'keycloak: {mode: external, url: "https://sso.example.com", admin_password: "env:KC_PASS"}',
        "keycloak: {mode: in-cluster}",
    )
    inv = load_inventory(write_inventory(tmp_path, text))
    si = keycloak_input(inv, inv.clusters[0], StateDir(tmp_path / "state"))
    assert set(si.secrets) == {
        "client_secret",
        "admin_password",
        "db_password",
        "chart_repo_password",
    }
    mocks = _run(si)
    release = mocks.named("keycloak").inputs  # type: ignore[attr-defined]
    assert release["chart"] == "keycloak"
    values, secret = unwrap(release["values"])
    assert secret  # the admin and database passwords are in there
    assert values["auth"]["adminPassword"] == si.secrets["admin_password"].get_secret_value()
    assert values["global"]["imageRegistry"] == f"{hub_urls(inv).registry}/docker.io"
    assert values["ingress"]["hostname"] == "keycloak.main.org.ml.example.com"
    realm = mocks.of_type(DYNAMIC)[0].inputs  # type: ignore[attr-defined]
    assert realm["url"] == "https://keycloak.main.org.ml.example.com"
