"""The storage stack on the lab: OpenEBS from the site chart repository, the default class."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from installer.state import HUB_PULL_PASSWORD_SECRET, HUB_PULL_USER, StateDir
from tests.e2e.stacks.chartrepo import site_chart_repo
from tests.e2e.stacks.conftest import Site

pytestmark = pytest.mark.e2e


def test_openebs_release_and_default_class(site: Site, core: client.CoreV1Api) -> None:
    storage = client.StorageV1Api(core.api_client)
    apps = client.AppsV1Api(core.api_client)
    password = StateDir(site.state).secret(HUB_PULL_PASSWORD_SECRET).get_secret_value()
    charts = site.lab.state / "upstream" / "charts"
    text = site.inventory.read_text(encoding="utf-8")
    with site_chart_repo(charts, site.state, HUB_PULL_USER, password) as port:
        # The site's hub, as far as charts go, is this repository.
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
            up = site.ok("stacks", "up", "-c", "storage")["stacks"][0]
            assert up["changes"] > 0
            cls = storage.read_storage_class("openebs-platform")
            assert cls.metadata.annotations["storageclass.kubernetes.io/is-default-class"] == "true"
            assert cls.provisioner == "openebs.io/local"
            deadline = time.monotonic() + 120
            while True:
                dep = apps.read_namespaced_deployment("openebs-localpv-provisioner", "openebs")
                if (dep.status.available_replicas or 0) >= 1:
                    break
                assert time.monotonic() < deadline, "the provisioner never became available"
                time.sleep(1)
            image = dep.spec.template.spec.containers[0].image
            assert image.startswith("127.0.0.1:5000/docker.io/openebs/provisioner-localpv:")
            assert site.ok("stacks", "preview", "-c", "storage")["stacks"][0]["changes"] == 0
        finally:
            site.ok("stacks", "destroy", "-c", "storage", "--yes")
            site.inventory.write_text(text, encoding="utf-8")
    names = {c.metadata.name for c in storage.list_storage_class().items}
    assert "openebs-platform" not in names
