"""containerd's registry hosts for the hub and its mirrors, rendered and read back as TOML."""

from __future__ import annotations

import tomllib
from pathlib import Path

import jinja2

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = REPO / "templates" / "nodes"
HUB = "hub.ml.lab.test:5000"
CERTS = "/etc/containerd/certs.d"


def _render(name: str, **variables: object) -> dict[str, object]:
    env = jinja2.Environment(  # noqa: S701 - config files, not HTML
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
    )
    base = {
        "ansible_managed": "Ansible managed",
        "node_hub_registry": HUB,
        "node_containerd_certs_dir": CERTS,
    }
    text = env.get_template(name).render(**{**base, **variables})
    return tomllib.loads(text)


def test_the_hub_trusts_the_site_ca_and_serves_pulls_only() -> None:
    doc = _render(
        "hosts.toml.j2", node_registry={"name": HUB, "server": f"https://{HUB}", "hub": True}
    )
    assert doc["server"] == f"https://{HUB}"
    host = doc["host"][f"https://{HUB}"]
    assert host == {"capabilities": ["pull", "resolve"], "ca": f"{CERTS}/{HUB}/ca.crt"}


def test_an_upstream_registry_is_mirrored_under_its_own_name_on_the_hub() -> None:
    doc = _render(
        "hosts.toml.j2",
        node_registry={"name": "docker.io", "server": "https://registry-1.docker.io", "hub": False},
    )
    assert doc["server"] == "https://registry-1.docker.io"
    (url,) = doc["host"]
    assert url == f"https://{HUB}/v2/docker.io"
    assert doc["host"][url]["override_path"] is True
    assert doc["host"][url]["ca"] == f"{CERTS}/{HUB}/ca.crt"
