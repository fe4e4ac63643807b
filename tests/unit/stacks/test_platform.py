"""The platform stack: controllers' config in the wire format, images, RBAC, secrets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pulumi
import pytest

from installer.inventory import Inventory
from installer.release import load_release
from installer.site import JOB_LABEL, JOB_TAINT, POOL_LABEL, PREEMPTIBLE_LABEL, hub_urls
from installer.stacks.inputs import platform_input
from installer.stacks.platform import PlatformArgs, PlatformControllers
from installer.state import (
    HUB_PASSWORD_SECRET,
    HUB_PULL_PASSWORD_SECRET,
    HUB_PULL_USER,
    HUB_USER,
    StateDir,
)
from tests.unit.stacks.conftest import lab_nodes
from tests.unit.stacks.mocks import run_program, unwrap


@pytest.fixture
def args(site: Inventory, tmp_path: Path) -> PlatformArgs:
    si = platform_input(
        site, site.clusters[0], StateDir(tmp_path / "state"), read=lambda _t: lab_nodes()
    )
    assert isinstance(si.args, PlatformArgs)
    assert set(si.secrets) == {"registry_password", "oidc_client_secret"}
    return si.args


def _build(args: PlatformArgs, seen: dict[str, Any]) -> Any:
    component = PlatformControllers(
        "main", args, registry_password="hub-pass-123", oidc_client_secret="oidc-secret-456"
    )

    async def secrets() -> None:
        seen["pull"] = await component.pull_secrets[0].string_data.is_secret()
        seen["oidc"] = await component.oidc_secret.string_data.is_secret()
        seen["config"] = await component.config_map.data.is_secret()

    return pulumi.Output.from_input(asyncio.ensure_future(secrets()))


def test_config_holds_presets_and_pools_in_the_wire_format(args: PlatformArgs) -> None:
    mocks = run_program(lambda: _build(args, {}))
    data = json.loads(mocks.named("controller-config").inputs["data"]["config.json"])
    presets = {p["name"]: p for p in data["resource_presets"]}
    assert presets["cpu-small"] == {
        "name": "cpu-small",
        "credits_per_hour": "0.5",
        "cpu": 2.0,
        "memory": 8 * 2**30,
        "scheduler_enabled": False,
        "preemptible_node": False,
        "resource_pool_names": ["cpu"],
        "available_resource_pool_names": ["cpu"],
    }
    assert presets["h100x2-spot"]["nvidia_gpu"] == {"count": 2, "model": "NVIDIA-H100-80GB-HBM3"}
    assert presets["h100x2-spot"]["preemptible_node"] is True
    pools = {p["name"]: p for p in data["resource_pools"]}
    # Pool sizes come from the live nodes: the a100 selector matched two.
    assert pools["a100"]["max_size"] == 2
    assert pools["a100"]["nvidia_gpu"] == {
        "count": 8,
        "model": "NVIDIA-A100-SXM4-80GB",
        "memory": 80 * 2**30,
    }
    assert pools["h100-spot"]["is_preemptible"] is True
    assert data["node_labels"]["node_pool"] == POOL_LABEL
    assert data["tolerations"]["job"] == JOB_TAINT
    assert data["domains"]["jobs"] == "*.jobs.main.org.ml.example.com"
    assert data["domains"]["apps"] == "*.apps.main.org.ml.example.com"
    assert data["oidc"] == {
        "issuer": "https://sso.example.com/realms/apolo",
        "client_id": "platform",
    }


def test_controllers_run_site_images_with_the_label_keys(
    args: PlatformArgs, site: Inventory
) -> None:
    mocks = run_program(lambda: _build(args, {}))
    registry = hub_urls(site).registry
    tags = {i.name: i.tag for i in load_release().images}
    for name, image in (
        ("deploy-job-controller", "ghcr.io/neuro-inc/platformapi"),
        ("deploy-app-controller", "ghcr.io/neuro-inc/platform-apps"),
    ):
        pod = mocks.named(name).inputs["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == f"{registry}/{image}:{tags[image]}"
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["NP_KUBE_NODE_LABEL_JOB"] == JOB_LABEL
        assert env["NP_KUBE_NODE_LABEL_PREEMPTIBLE"] == PREEMPTIBLE_LABEL
        assert env["NP_KUBE_NODE_LABEL_NODE_POOL"] == POOL_LABEL
        assert env["NP_KUBE_POD_JOB_TOLERATION_KEY"] == JOB_TAINT
        assert pod["imagePullSecrets"] == [{"name": "site-registry"}]
        assert pod["priorityClassName"] == "platform-services"
        assert pod["tolerations"] == [
            {"key": JOB_TAINT, "operator": "Exists", "effect": "NoSchedule"}
        ]
        preferred = pod["affinity"]["nodeAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert preferred[0]["preference"]["matchExpressions"] == [
            {"key": JOB_LABEL, "operator": "DoesNotExist"}
        ]


def test_resource_graph_namespaces_rbac_priority_ingress(args: PlatformArgs) -> None:
    mocks = run_program(lambda: _build(args, {}))
    namespaces = {
        r.inputs["metadata"]["name"] for r in mocks.of_type("kubernetes:core/v1:Namespace")
    }
    assert namespaces == {"platform", "platform-jobs", "platform-apps"}
    classes = {
        r.inputs["metadata"]["name"]
        for r in mocks.of_type("kubernetes:scheduling.k8s.io/v1:PriorityClass")
    }
    assert classes == {"platform-services", "platform-job", "platform-job-preemptible"}
    roles = {
        (r.inputs["metadata"]["name"], r.inputs["metadata"]["namespace"])
        for r in mocks.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role")
    }
    assert roles == {("job-controller", "platform-jobs"), ("app-controller", "platform-apps")}
    pulls = mocks.of_type("kubernetes:core/v1:Secret")
    assert {(s.inputs["metadata"]["namespace"], s.inputs["metadata"]["name"]) for s in pulls} >= {
        ("platform", "site-registry"),
        ("platform-jobs", "site-registry"),
        ("platform-apps", "site-registry"),
        ("platform", "platform-oidc"),
    }
    (provider,) = mocks.of_type("pulumi:providers:kubernetes")
    assert provider.inputs["enableConfigMapMutable"] == "true"
    hosts = [r["host"] for r in mocks.named("platform-ingress").inputs["spec"]["rules"]]
    assert hosts == ["main.org.ml.example.com", "*.apps.main.org.ml.example.com"]


def test_pull_and_oidc_secrets_are_pulumi_secrets(args: PlatformArgs) -> None:
    seen: dict[str, Any] = {}
    mocks = run_program(lambda: _build(args, seen))
    assert seen == {"pull": True, "oidc": True, "config": False}
    # On the wire to the engine the value travels in Pulumi's secret envelope.
    data, secret = unwrap(mocks.named("pull-secret-platform").inputs["stringData"])
    assert secret
    pull = json.loads(data[".dockerconfigjson"])
    login = pull["auths"][args.registry]
    assert (login["username"], login["password"]) == ("cluster-pull", "hub-pass-123")


def test_pull_secrets_hold_the_read_only_login_not_the_installers(
    site: Inventory, tmp_path: Path
) -> None:
    """Least privilege: the clusters get the pull login, whose endpoints refuse every write;
    the installer's own password (it pushes and deletes) never reaches a cluster."""
    state = StateDir(tmp_path / "state")
    si = platform_input(site, site.clusters[0], state, read=lambda _t: lab_nodes())
    assert isinstance(si.args, PlatformArgs)
    assert si.args.registry_user == HUB_PULL_USER != HUB_USER
    given = si.secrets["registry_password"].get_secret_value()
    assert given == state.secret(HUB_PULL_PASSWORD_SECRET).get_secret_value()
    assert given != state.secret(HUB_PASSWORD_SECRET).get_secret_value()
    assert si.args.registry == hub_urls(site).registry != hub_urls(site).registry_push


def test_changing_one_preset_changes_only_the_config_map(
    args: PlatformArgs, site: Inventory, tmp_path: Path
) -> None:
    cluster = site.clusters[0]
    presets = [
        p.model_copy(update={"credits_per_hour": "0.75"}) if p.name == "cpu-small" else p
        for p in cluster.presets
    ]
    changed = site.model_copy(
        update={"clusters": [cluster.model_copy(update={"presets": presets})]}
    )
    other = platform_input(
        changed, changed.clusters[0], StateDir(tmp_path / "state"), read=lambda _t: lab_nodes()
    ).args
    before = {r.name: r.inputs for r in run_program(lambda: _build(args, {})).resources}
    after = {r.name: r.inputs for r in run_program(lambda: _build(other, {})).resources}
    assert sorted(n for n in before if before[n] != after[n]) == ["controller-config"]
