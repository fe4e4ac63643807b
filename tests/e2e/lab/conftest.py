"""Fixtures of the lab's own tests: a client for the lab cluster and a namespace per test."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client, config

from tests.fixtures.lab import Lab


@pytest.fixture(scope="session")
def kube(lab: Lab) -> client.ApiClient:
    """An API client for the lab cluster, authenticated with the admin kubeconfig."""
    return config.new_client_from_config(config_file=str(lab.kubeconfig))


@pytest.fixture
def namespace(kube: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    core = client.CoreV1Api(kube)
    name = f"lab-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    # Pods are refused until the controller manager has made the namespace's service account.
    deadline = time.monotonic() + 30
    while not core.list_namespaced_service_account(
        name, field_selector="metadata.name=default"
    ).items:
        assert time.monotonic() < deadline, f"no default service account in {name} after 30 s"
        time.sleep(0.2)
    yield name
    core.delete_namespace(name)
