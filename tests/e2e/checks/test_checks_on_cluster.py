"""Preflight and verify against the lab cluster, with extra kwok nodes for the failure cases.

Test pools have random names and their own `chk-` nodes, labelled and tainted exactly as the
nodes phase would (`installer.site`), so the tests neither depend on nor disturb the lab's
standard nodes, which other engineers' tests label and taint.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from installer.checks import Status, acceptance, run_preflight, run_verify
from installer.checks.acceptance import PURPOSE_LABEL
from installer.inventory import load_inventory
from installer.inventory.models import NodePool
from installer.site import JOB_TAINT, pool_labels, pool_taints
from tests.e2e.checks.conftest import SiteFactory, by
from tests.e2e.checks.kwok import FakeNode, fake_nodes, set_taints
from tests.fixtures.lab import REPO, Lab

pytestmark = pytest.mark.e2e
A100 = "NVIDIA-A100-SXM4-80GB"
GFD = {
    "nvidia.com/gpu.present": "true",
    "nvidia.com/gpu.count": "8",
    "nvidia.com/gpu.memory": "81920",
}


class Pools:
    """Two test pools (cpu, a100) on their own fake nodes, and presets for them."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.tag = tag
        self.cpu = {"name": f"c-{tag}", "nodes": [f"chk-{tag}-c1"], "cpu": 32, "memory": "128Gi"}
        self.gpu = {
            "name": f"g-{tag}",
            "nodes": [f"chk-{tag}-g1"],
            "cpu": 128,
            "memory": "1Ti",
            "gpu": {"vendor": "nvidia", "model": A100, "count": 8, "memory": "80Gi"},
        }
        self.presets = [
            {"name": f"pc-{tag}", "cpu": 2, "memory": "8Gi", "pools": [self.cpu["name"]]},
            {
                "name": f"pg-{tag}",
                "cpu": 15,
                "memory": "120Gi",
                "nvidia_gpu": {"count": 1, "model": A100},
                "pools": [self.gpu["name"]],
            },
        ]

    def nodes(self, *, gpu_product: str = A100) -> list[FakeNode]:
        cpu, gpu = NodePool.model_validate(self.cpu), NodePool.model_validate(self.gpu)
        return [
            FakeNode(self.cpu["nodes"][0], pool_labels(cpu), pool_taints(cpu)),
            FakeNode(
                self.gpu["nodes"][0],
                {**pool_labels(gpu), **GFD, "nvidia.com/gpu.product": gpu_product},
                pool_taints(gpu),
                cpu="128",
                memory="1Ti",
                gpus=8,
            ),
        ]

    def edit(self, data: dict[str, Any]) -> None:
        cluster = data["clusters"][0]
        cluster["node_pools"] = [self.cpu, self.gpu]
        cluster["presets"] = self.presets


@pytest.fixture
def pools() -> Pools:
    return Pools()


def test_preflight_cluster_checks_pass(lab: Lab, site: SiteFactory, pools: Pools) -> None:
    with fake_nodes(lab, pools.nodes()):
        report = run_preflight(load_inventory(site(pools.edit)))
    for check_id in (
        "kube.api",
        "kube.version",
        "kube.clock",
        "kube.rbac",
        "kube.nodes",
        "kube.gpu",
    ):
        found = by(report, check_id)
        assert found and all(s is Status.PASS for s, _ in found.values()), (check_id, found)
    assert f"Kubernetes {lab.kube_version}" in by(report, "kube.version")["cluster/lab"][1]
    (probe,) = by(report, "gpu.probe").values()
    assert probe[0] is Status.INFO and "node labels only" in probe[1]


def test_removed_node_fails_preflight(lab: Lab, site: SiteFactory, pools: Pools) -> None:
    path = site(pools.edit)
    target = f"cluster/lab/pool/{pools.cpu['name']}"
    with fake_nodes(lab, pools.nodes()):
        assert by(run_preflight(load_inventory(path)), "kube.nodes")[target][0] is Status.PASS
    # leaving the block deleted the nodes: the same site now lacks them
    report = run_preflight(load_inventory(path))
    status, message = by(report, "kube.nodes")[target]
    assert status is Status.FAIL and message == f"not in the cluster: chk-{pools.tag}-c1"
    assert not report.ok


def test_wrong_gpu_product_label_fails_preflight(lab: Lab, site: SiteFactory, pools: Pools) -> None:
    with fake_nodes(lab, pools.nodes(gpu_product="NVIDIA-A100-SXM4-40GB")):
        report = run_preflight(load_inventory(site(pools.edit)))
    status, message = by(report, "kube.gpu")[f"cluster/lab/pool/{pools.gpu['name']}"]
    assert status is Status.FAIL
    assert f"nvidia.com/gpu.product is NVIDIA-A100-SXM4-40GB, the pool says {A100}" in message


@pytest.fixture
def limited_kubeconfig(lab: Lab, tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig for a ServiceAccount that may read nodes and nothing else."""
    api = config.new_client_from_config(config_file=str(lab.kubeconfig))
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    name = f"chk-{secrets.token_hex(3)}"
    core.create_namespace({"metadata": {"name": name}})
    try:
        core.create_namespaced_service_account(name, {"metadata": {"name": "reader"}})
        rbac.create_cluster_role(
            {
                "metadata": {"name": name},
                "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}],
            }
        )
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": name,
                },
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": name}],
            }
        )
        token = core.create_namespaced_service_account_token(
            "reader", name, {"spec": {"expirationSeconds": 600}}
        ).status.token
        ca = base64.b64encode(lab.kube_ca.read_bytes()).decode()
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "lab",
                    "cluster": {"server": lab.kube_server, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": "reader", "user": {"token": token}}],
            "contexts": [{"name": "reader", "context": {"cluster": "lab", "user": "reader"}}],
            "current-context": "reader",
        }
        path = tmp_path / "reader.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig))
        path.chmod(0o600)
        yield path
    finally:
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)
        core.delete_namespace(name)


def test_missing_rights_fail_preflight(
    lab: Lab, site: SiteFactory, limited_kubeconfig: Path
) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["clusters"][0]["kubeconfig"] = str(limited_kubeconfig)

    report = run_preflight(load_inventory(site(edit)))
    assert by(report, "kube.api")["cluster/lab"][0] is Status.PASS
    status, message = by(report, "kube.rbac")["cluster/lab"]
    assert status is Status.FAIL
    assert "patch nodes (nodes: pool labels and taints)" in message
    assert "list nodes" not in message  # granted to the reader
    rbac = next(r for r in report.results if r.id == "kube.rbac")
    assert "create deployments.apps" in rbac.details["missing"]


def test_missing_context_fails_kube_api(lab: Lab, site: SiteFactory) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["clusters"][0]["context"] = "no-such-context"

    report = run_preflight(load_inventory(site(edit)))
    status, message = by(report, "kube.api")["cluster/lab"]
    assert status is Status.FAIL and "has no context 'no-such-context'" in message
    assert by(report, "kube.nodes")  # reported, as skipped for want of kube.api
    assert all(s is Status.SKIP for s, _ in by(report, "kube.nodes").values())


def verify_namespaces(lab: Lab) -> set[str]:
    from tests.e2e.checks.kwok import core

    items = core(lab).list_namespace(label_selector=f"{PURPOSE_LABEL}=verify").items
    return {n.metadata.name for n in items if n.status.phase != "Terminating"}


def test_verify_schedules_presets_onto_their_pools(
    lab: Lab, site: SiteFactory, pools: Pools
) -> None:
    before = verify_namespaces(lab)
    with fake_nodes(lab, pools.nodes()):
        report = run_verify(load_inventory(site(pools.edit)))
    presets = by(report, "sched.preset")
    assert presets[f"cluster/lab/preset/pc-{pools.tag}"] == (
        Status.PASS, f"scheduled on chk-{pools.tag}-c1 and started (pools c-{pools.tag})",
    )  # fmt: skip
    assert presets[f"cluster/lab/preset/pg-{pools.tag}"][0] is Status.PASS
    taints = by(report, "sched.job_taint")
    assert all(s is Status.PASS for s, _ in taints.values()), taints
    # what later phases build is not there: verify fails and names the phase
    controllers = by(report, "platform.controllers")
    assert controllers and all(s is Status.FAIL for s, _ in controllers.values())
    assert "the platform phase has not run" in next(iter(controllers.values()))[1]
    assert not report.ok
    assert verify_namespaces(lab) <= before  # the test namespace is gone (or going)


def test_verify_fails_when_a_pools_job_taint_is_removed(
    lab: Lab, site: SiteFactory, pools: Pools
) -> None:
    before = verify_namespaces(lab)
    gpu_pool = NodePool.model_validate(pools.gpu)
    with fake_nodes(lab, pools.nodes()) as api:
        node = pools.gpu["nodes"][0]
        set_taints(api, node, [t for t in pool_taints(gpu_pool) if t.key != JOB_TAINT])
        time.sleep(0.5)
        report = run_verify(load_inventory(site(pools.edit)))
    status, message = by(report, "sched.job_taint")[f"cluster/lab/pool/g-{pools.tag}"]
    assert status is Status.FAIL
    assert message == (
        f"a pod without the {JOB_TAINT} toleration was scheduled on {node}: the pool's job taint"
        " is missing"
    )
    ok_status, _ = by(report, "sched.job_taint")[f"cluster/lab/pool/c-{pools.tag}"]
    assert ok_status is Status.PASS
    assert verify_namespaces(lab) <= before  # cleaned up although checks failed


def test_verify_catches_pool_label_outside_the_pool(
    lab: Lab, site: SiteFactory, pools: Pools
) -> None:
    cpu_pool = NodePool.model_validate(pools.cpu)
    member, *_ = pools.nodes()
    member.unschedulable = True  # the pool's own node is cordoned ...
    stray = FakeNode(f"chk-{pools.tag}-stray", pool_labels(cpu_pool), pool_taints(cpu_pool))
    with fake_nodes(lab, [member, stray]):  # ... and a node outside it carries its label
        report = run_verify(load_inventory(site(pools.edit)))
    status, message = by(report, "sched.preset")[f"cluster/lab/preset/pc-{pools.tag}"]
    assert status is Status.FAIL
    assert f"landed on chk-{pools.tag}-stray, which is not in pools c-{pools.tag}" in message


def test_support_bundle_has_the_node_summary(lab: Lab, site: SiteFactory, tmp_path: Path) -> None:
    out = tmp_path / "support.tar.gz"
    proc = subprocess.run(
        [sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path / "runs"), "-o", "json",
         "support-bundle", "-i", str(site()), "--output-file", str(out)],
        capture_output=True, text=True, check=False, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    with tarfile.open(out) as tar:
        nodes = json.load(tar.extractfile("support/clusters/lab/nodes.json"))  # type: ignore[arg-type]
        inventory = tar.extractfile("support/inventory.yml").read().decode()  # type: ignore[union-attr]
    assert nodes["server_version"] == lab.kube_version
    names = {n["name"] for n in nodes["nodes"]}
    assert {"cpu-1", "a100-1", "h100-1"} <= names
    a100 = next(n for n in nodes["nodes"] if n["name"] == "a100-1")
    assert a100["labels"]["nvidia.com/gpu.product"] == A100
    assert "private_key: ***" in inventory and "id_ed25519" not in inventory


def test_verify_sweeps_namespaces_of_interrupted_runs(
    lab: Lab, site: SiteFactory, pools: Pools, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.e2e.checks.kwok import core

    api = core(lab)
    stale = f"chk-stale-{pools.tag}"
    api.create_namespace({"metadata": {"name": stale, "labels": {PURPOSE_LABEL: "verify"}}})
    monkeypatch.setattr(acceptance, "STALE_AFTER_S", 0.0)  # as if it were an hour old
    try:
        with fake_nodes(lab, pools.nodes()):
            run_verify(load_inventory(site(pools.edit)))
        assert stale not in verify_namespaces(lab)
    finally:
        if stale in verify_namespaces(lab):
            api.delete_namespace(stale)


def test_verify_command_on_the_lab_inventory(lab: Lab, site: SiteFactory, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path / "runs"),
         "verify", "-i", str(site()), "--output", "json"],
        capture_output=True, text=True, check=False, cwd=REPO, timeout=600,
    )  # fmt: skip
    data = json.loads(proc.stdout)
    assert proc.returncode == (0 if data["ok"] else 1), proc.stderr
    presets = sorted(r["target"] for r in data["results"] if r["id"] == "sched.preset")
    assert presets == [
        f"cluster/lab/preset/{p}" for p in ("a100x1", "a100x8", "cpu-large", "cpu-small", "h100x1")
    ]
    saved = json.loads(Path(data["report_file"]).read_text())
    assert saved["summary"] == data["summary"]


def test_verify_names_a_node_labelled_for_another_pool(
    lab: Lab, site: SiteFactory, pools: Pools
) -> None:
    cpu_node, gpu_node = pools.nodes()
    cpu_node.labels = {**cpu_node.labels, "platform.apolo.us/node-pool": "elsewhere"}
    with fake_nodes(lab, [cpu_node, gpu_node]):
        report = run_verify(load_inventory(site(pools.edit)))
    status, message = by(report, "sched.preset")[f"cluster/lab/preset/pc-{pools.tag}"]
    assert status is Status.FAIL
    assert f"chk-{pools.tag}-c1 has platform.apolo.us/node-pool=elsewhere" in message
    status, message = by(report, "sched.job_taint")[f"cluster/lab/pool/c-{pools.tag}"]
    assert status is Status.FAIL
    assert message.endswith(f"chk-{pools.tag}-c1 has platform.apolo.us/node-pool=elsewhere")
