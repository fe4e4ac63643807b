"""Fixtures of the toolchain and upstream tests: the lab, its part-2 services, a kube client."""

from __future__ import annotations

import pytest
from kubernetes import client, config

from tests.fixtures.lab import Lab


@pytest.fixture(scope="session")
def kube(lab: Lab) -> client.ApiClient:
    """An API client for the lab cluster (admin kubeconfig)."""
    return config.new_client_from_config(config_file=str(lab.kubeconfig))
