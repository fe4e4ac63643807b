"""Verify's site checks on the lab, pass and fail, without a bootstrap: controllers, storage
classes, the site registry, where the platform's images come from and failed pulls. Each test
makes its own `chk-` objects and removes them."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config

from installer.checks.context import SiteAccess
from installer.checks.verify_site import (
    check_controller,
    check_images_from_hub,
    check_no_failed_pulls,
    check_registry_image,
    check_storage_classes,
)
from installer.inventory import load_inventory
from tests.e2e.checks.conftest import SiteFactory
from tests.e2e.checks.test_preflight_vm import free_vm_port
from tests.fixtures.lab import Lab

pytestmark = pytest.mark.e2e


def _deployment(name: str, node_selector: dict[str, str]) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": node_selector,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "c", "image": "busybox:latest"}],
                },
            },
        },
    }


@pytest.fixture
def controllers(lab: Lab) -> Iterator[str]:
    """A namespace where the job controller becomes Available (kwok runs its pod) and the app
    controller cannot (its pod asks for a node that does not exist)."""
    api = config.new_client_from_config(config_file=str(lab.kubeconfig))
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    namespace = f"chk-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        apps.create_namespaced_deployment(
            namespace, _deployment("job-controller", {"kubernetes.io/hostname": "cpu-3"})
        )
        apps.create_namespaced_deployment(
            namespace, _deployment("app-controller", {"kubernetes.io/hostname": "chk-nowhere"})
        )
        deadline = time.monotonic() + 60
        while not (apps.read_namespaced_deployment(
            "job-controller", namespace).status.available_replicas or 0
        ):  # fmt: skip
            assert time.monotonic() < deadline, "kwok did not run the job controller's pod"
            time.sleep(0.5)
        yield namespace
    finally:
        core.delete_namespace(namespace)


def test_controllers_available_pass_and_unavailable_fail(
    lab: Lab, site: SiteFactory, controllers: str
) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["clusters"][0]["platform"] = {"namespace": controllers}

    inv = load_inventory(site(edit))
    access = SiteAccess(inv)
    try:
        job = check_controller(access, inv.clusters[0], "job-controller")
        assert job.ok and job.message == f"{controllers}/job-controller Available (1/1)"
        app = check_controller(access, inv.clusters[0], "app-controller")
        assert not app.ok
        assert app.message.startswith(
            f"Deployment {controllers}/app-controller is not Available (0/1 ready)"
        )
        assert app.remedy == f"kubectl -n {controllers} describe deployment app-controller"
    finally:
        access.close()


@pytest.fixture
def storage_class(lab: Lab) -> Iterator[str]:
    """A StorageClass that is not the default (the lab's own classes are left alone)."""
    api = client.StorageV1Api(config.new_client_from_config(config_file=str(lab.kubeconfig)))
    name = f"chk-{secrets.token_hex(3)}"
    api.create_storage_class({"metadata": {"name": name}, "provisioner": "openebs.io/local"})
    try:
        yield name
    finally:
        api.delete_storage_class(name)


def test_storage_class_missing_or_not_the_default_fails(
    lab: Lab, site: SiteFactory, storage_class: str
) -> None:
    def default(name: str) -> Any:
        def edit(data: dict[str, Any]) -> None:
            data["clusters"][0]["storage"]["default_class"] = name

        return edit

    inv = load_inventory(site(default("chk-no-such-class")))
    missing = check_storage_classes(SiteAccess(inv), inv.clusters[0])
    assert not missing.ok
    assert missing.message.startswith("StorageClass chk-no-such-class does not exist (classes:")
    assert storage_class in missing.message  # the classes that do exist are listed
    inv = load_inventory(site(default(storage_class)))
    not_default = check_storage_classes(SiteAccess(inv), inv.clusters[0])
    assert not not_default.ok
    assert not_default.message.startswith("the default StorageClass is ")
    assert not_default.message.endswith(f", not only {storage_class}")


def test_registry_image_fails_without_a_registry_or_a_ca(
    lab: Lab, site: SiteFactory, tmp_path: Any
) -> None:
    port = free_vm_port(lab)

    def closed(data: dict[str, Any]) -> None:
        data["aux_vm"]["services"] = {
            "registry": {"port": port, "data_path": "/var/lib/onprem-hub/registry"}
        }

    inv = load_inventory(site(closed))
    found = check_registry_image(SiteAccess(inv))
    assert not found.ok
    assert found.message.startswith(
        f"the site registry at {lab.vm_addr}:{port} does not answer over TLS"
    )

    def fresh_state(data: dict[str, Any]) -> None:
        data["site"]["state_dir"] = str(tmp_path / "state")

    inv = load_inventory(site(fresh_state))
    no_ca = check_registry_image(SiteAccess(inv))
    assert not no_ca.ok and no_ca.message == "there is no site CA: the auxvm phase has not run"


def _pod(name: str, image: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": "cpu-3"},
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "c", "image": image}],
        },
    }


def test_images_from_elsewhere_and_failed_pulls_fail_by_name(lab: Lab, site: SiteFactory) -> None:
    api = config.new_client_from_config(config_file=str(lab.kubeconfig))
    core = client.CoreV1Api(api)
    namespace = f"chk-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": namespace}})

    def edit(data: dict[str, Any]) -> None:
        data["clusters"][0]["platform"] = {
            "namespace": namespace, "jobs_namespace": namespace, "apps_namespace": namespace,
        }  # fmt: skip

    inv = load_inventory(site(edit))
    access = SiteAccess(inv)
    cluster = inv.clusters[0]
    try:
        empty = check_images_from_hub(access, cluster)
        assert not empty.ok and "the platform phase has not run" in empty.message
        core.create_namespaced_pod(namespace, _pod("on-hub", "hub.ml.lab.test:5000/x/y:1"))
        assert check_images_from_hub(access, cluster).ok
        # The lab site configures no node runtime: an upstream name is not mirrored anywhere.
        core.create_namespaced_pod(namespace, _pod("upstream", "quay.io/chk/injected:2"))
        stray = check_images_from_hub(access, cluster)
        assert not stray.ok
        assert f"{namespace}/upstream c: quay.io/chk/injected:2" in stray.message
        assert "node_runtime" in stray.message
        assert check_no_failed_pulls(access, cluster).ok
        core.create_namespaced_event(
            namespace,
            {
                "metadata": {"name": f"upstream.{secrets.token_hex(4)}"},
                "involvedObject": {"kind": "Pod", "name": "upstream", "namespace": namespace},
                "reason": "Failed",
                "message": 'Failed to pull image "quay.io/chk/injected:2": x509: unknown authority',
                "type": "Warning",
            },
        )
        failed = check_no_failed_pulls(access, cluster)
        assert not failed.ok
        assert failed.message.startswith("1 failed image pull(s): ")
        assert f"{namespace}/pod/upstream: Failed to pull image" in failed.message
    finally:
        access.close()
        core.delete_namespace(namespace)
