"""Pulumi runs offline against the lab cluster: up, a preview with no changes, destroy.

The stack runs through the Automation API, which drives the real CLI (`pulumi up`, `preview`,
`destroy`) with the lab-built CLI and Kubernetes provider, a file backend in a temporary state
folder, and every outbound proxy pointed at a closed loopback port: a plugin download or update
check would fail the run instead of reaching out.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pulumi import automation as auto

from installer.engines.pulumi_toolchain import (
    KUBERNETES_PLUGIN,
    PULUMI_CLI,
    PulumiToolchain,
    offline_environment,
)
from tests.fixtures.lab import Lab
from tests.fixtures.lab_services import LabServices

pytestmark = pytest.mark.e2e

CLOSED = "http://127.0.0.1:9"


def _program(kubeconfig: str, namespace: str) -> auto.PulumiFn:
    def program() -> None:
        provider = k8s.Provider("lab", kubeconfig=kubeconfig)
        opts = pulumi.ResourceOptions(provider=provider)
        ns = k8s.core.v1.Namespace("ns", metadata={"name": namespace}, opts=opts)
        k8s.core.v1.ConfigMap(
            "proof",
            metadata={"name": "proof", "namespace": ns.metadata["name"]},
            data={"offline": "yes"},
            opts=opts,
        )

    return program


def _gone(core: client.CoreV1Api, namespace: str, timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        time.sleep(1)
    return False


def test_toolchain_is_the_pinned_release(lab_services: LabServices) -> None:
    toolchain = PulumiToolchain(lab_services.pulumi_bin_dir)
    assert toolchain.missing((PULUMI_CLI, KUBERNETES_PLUGIN)) == []
    assert toolchain.cli_version() == f"v{lab_services.versions['PULUMI_VERSION']}"


def test_up_preview_destroy_offline(
    lab: Lab, lab_services: LabServices, kube: client.ApiClient, tmp_path: Path
) -> None:
    env = offline_environment(tmp_path / "state", bin_dir=lab_services.pulumi_bin_dir)
    env |= {"HTTPS_PROXY": CLOSED, "HTTP_PROXY": CLOSED, "NO_PROXY": "127.0.0.1,localhost"}
    namespace = f"pulumi-proof-{uuid.uuid4().hex[:8]}"
    work = tmp_path / "project"
    work.mkdir()
    stack = auto.create_or_select_stack(
        stack_name="lab",
        project_name="toolchain-proof",
        program=_program(lab.kubeconfig.read_text(encoding="utf-8"), namespace),
        opts=auto.LocalWorkspaceOptions(
            work_dir=str(work),
            pulumi_home=env["PULUMI_HOME"],
            env_vars=env,
            secrets_provider="passphrase",
            pulumi_command=auto.PulumiCommand(
                root=str(lab_services.pulumi_bin_dir.parent), skip_version_check=True
            ),
        ),
    )
    core = client.CoreV1Api(kube)
    try:
        up = stack.up(color="never")
        assert up.summary.result == "succeeded"
        assert up.summary.resource_changes == {"create": 4}  # stack, provider, namespace, map
        assert core.read_namespaced_config_map("proof", namespace).data == {"offline": "yes"}

        preview = stack.preview(color="never")
        assert preview.change_summary == {"same": 4}
    finally:
        destroyed = stack.destroy(color="never")
    assert destroyed.summary.result == "succeeded"
    assert destroyed.summary.resource_changes == {"delete": 4}
    assert _gone(core, namespace), f"namespace {namespace} still there after destroy"
    # Nothing was downloaded: the fresh Pulumi home holds no plugins.
    assert not list((Path(env["PULUMI_HOME"]) / "plugins").glob("resource-*"))
