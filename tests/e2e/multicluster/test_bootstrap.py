"""The lab site with both compute clusters (issue 22): `inventories/lab-multi.yml`.

The lab runs a second control plane, `infer` (lab/components/11-kube-infer.sh: its own etcd,
apiserver, scheduler, kwok, PKI and kubeconfig; L40S and H200 nodes the first cluster has none
of). lab-multi.yml is lab.yml's site with that cluster added: one hub, one DNS zone served by
the VM, one Keycloak realm with a client per cluster. One `installer bootstrap` installs both:
each cluster's nodes carry their pools' labels and taints, each has its own stacks, the VM
answers each cluster's names with its own ingress IPs, and verify passes per cluster. A second
run changes nothing; `status` reports per cluster.

The module holds the lab site (`site_lock()`) and gives both clusters' sides back at the end
(`destroy --skip auxvm`): the hub stays for the modules after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from installer.checks.dnsquery import query
from installer.inventory import Inventory, load_inventory
from installer.site import GPU_TAINTS, JOB_TAINT, POOL_LABEL, cluster_names
from installer.stacks.keycloak_admin import KeycloakAdmin
from tests.e2e.bootstrap.cli import installer, plain_env
from tests.e2e.bootstrap.runs import Bootstrap, run_bootstrap, upstream
from tests.fixtures.lab import Lab, site_inventory, site_lock

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MULTI = site_inventory("lab-multi")
CLUSTERS = ("lab", "infer")
STACK_PHASES = ("nodes", "storage", "dns", "keycloak", "platform")


def kube(lab: Lab, cluster: str) -> client.CoreV1Api:
    """The core API of a lab cluster, by its name in lab-multi.yml."""
    path = lab.env["LAB_KUBECONFIG"] if cluster == "lab" else lab.env["LAB_INFER_KUBECONFIG"]
    return client.CoreV1Api(config.new_client_from_config(config_file=path))


@dataclass(frozen=True)
class MultiSite:
    inventory: Inventory
    first: Bootstrap
    second: Bootstrap
    plan_rc: int
    plan_tail: str
    status: dict[str, Any]
    logs: Path


@pytest.fixture(scope="module")
def multi(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiSite]:
    assert "LAB_INFER_KUBECONFIG" in lab.env, "the lab's second cluster is not up (lab/up)"
    tmp = tmp_path_factory.mktemp("multicluster")
    env = plain_env()
    with site_lock():
        upstream("up")
        try:
            first = run_bootstrap(MULTI, tmp / "first", env)
            second = run_bootstrap(MULTI, tmp / "second", env) if first.rc == 0 else first
            plan_rc, _, plan_tail = installer(
                "plan", "-i", str(MULTI), "--expect-no-changes",
                log_dir=tmp / "plan", timeout=900, env=env,
            )  # fmt: skip
            rc, status, tail = installer(
                "status", "-i", str(MULTI), "--refresh",
                log_dir=tmp / "status", timeout=900, env=env,
            )  # fmt: skip
            assert rc == 0, f"status failed (exit {rc}):\n{tail}"
            yield MultiSite(load_inventory(MULTI), first, second, plan_rc, plan_tail, status, tmp)
        finally:
            rc, _, tail = installer(
                "destroy", "-i", str(MULTI), "--yes", "--skip", "auxvm",
                log_dir=tmp / "destroy", timeout=900, env=env,
            )  # fmt: skip
            assert rc == 0, f"destroy of both clusters' sides failed (exit {rc}):\n{tail}"


def _failing(report: dict[str, Any]) -> list[str]:
    return [
        f"{r['id']} [{r['target']}]: {r['message']}"
        for r in report.get("results", [])
        if r["status"] in ("fail", "warn")
    ]


def test_one_bootstrap_installs_both_clusters_and_verifies_each(multi: MultiSite) -> None:
    first = multi.first
    assert first.rc == 0, f"bootstrap failed (exit {first.rc}):\n{first.tail}"
    # Each cluster's own stack of every component, in its phase.
    ran = {(e["phase"], e["message"]) for e in first.events if e.get("event") == "step"}
    for phase in STACK_PHASES[1:]:
        for name in CLUSTERS:
            assert (phase, f"up {phase}/{name}") in ran, (phase, name)
    report = json.loads((first.run_dir / "verify-report.json").read_text(encoding="utf-8"))
    assert report["ok"] is True and not _failing(report), _failing(report)
    statuses = {(r["id"], r["target"]): r["status"] for r in report["results"]}
    for cluster in multi.inventory.clusters:
        for preset in cluster.presets:
            target = f"cluster/{cluster.name}/preset/{preset.name}"
            assert statuses.get(("sched.preset", target)) == "pass", (target, statuses)


def test_each_clusters_nodes_carry_its_own_pools(lab: Lab, multi: MultiSite) -> None:
    assert multi.first.rc == 0, "the bootstrap failed"
    for cluster in multi.inventory.clusters:
        api = kube(lab, cluster.name)
        nodes = {n.metadata.name: n for n in api.list_node().items}
        for pool in cluster.node_pools:
            selector = (pool.selector or {}).items()
            members = pool.nodes or [
                name
                for name, node in nodes.items()
                if all((node.metadata.labels or {}).get(k) == v for k, v in selector)
            ]
            assert members, (cluster.name, pool.name)
            for name in members:
                node = nodes[name]
                assert node.metadata.labels.get(POOL_LABEL) == pool.name, (cluster.name, name)
                taints = {t.key for t in node.spec.taints or []}
                assert (JOB_TAINT in taints) == pool.jobs, (cluster.name, name, taints)
                if pool.gpu is not None:
                    assert GPU_TAINTS["nvidia"] in taints, (cluster.name, name, taints)
    # Neither cluster's pools reached the other: no H100 pool in infer, no L40S pool in lab.
    lab_pools = {n.metadata.labels.get(POOL_LABEL) for n in kube(lab, "lab").list_node().items}
    infer_pools = {n.metadata.labels.get(POOL_LABEL) for n in kube(lab, "infer").list_node().items}
    assert "l40s" not in lab_pools and "h200" not in lab_pools, lab_pools
    assert "h100" not in infer_pools and "a100" not in infer_pools, infer_pools


def test_the_vm_answers_each_clusters_names_with_its_ingress(lab: Lab, multi: MultiSite) -> None:
    assert multi.first.rc == 0, "the bootstrap failed"
    inv = multi.inventory
    for cluster in inv.clusters:
        domain = cluster_names(inv, cluster).domain
        for name in (domain, f"x.jobs.{domain}", f"x.apps.{domain}"):
            answer = query(name, lab.vm_addr, inv.aux_vm.dns.port)
            assert set(answer.addresses) == {str(ip) for ip in cluster.ingress_ips}, name


def test_one_realm_holds_a_client_per_cluster(lab: Lab, multi: MultiSite) -> None:
    assert multi.first.rc == 0, "the bootstrap failed"
    env = lab.env
    password = Path(env["LAB_KEYCLOAK_PASSWORD_FILE"]).read_text(encoding="utf-8").strip()
    admin = KeycloakAdmin(
        env["LAB_KEYCLOAK_URL"], env["LAB_KEYCLOAK_ADMIN"], password, env["LAB_KEYCLOAK_CA"]
    )
    try:
        (realm,) = {c.keycloak.realm for c in multi.inventory.clusters}
        for cluster in multi.inventory.clusters:
            assert admin.find_client(realm, cluster.keycloak.client_id) is not None, cluster.name
    finally:
        admin.close()


def test_a_second_bootstrap_and_plan_change_nothing(multi: MultiSite) -> None:
    assert multi.second.rc == 0, multi.second.tail
    changed = {p["phase"]: p["changes"] for p in multi.second.summary["phases"] if p["changes"]}
    assert changed == {}, changed
    assert multi.plan_rc == 0, multi.plan_tail


def test_status_reports_each_cluster(multi: MultiSite) -> None:
    view = multi.status
    assert set(view["clusters"]) == set(CLUSTERS)
    for name in CLUSTERS:
        for phase in STACK_PHASES:
            entry = view["clusters"][name][phase]
            assert entry["state"] == "ok" and entry["drift"] == 0, (name, phase, entry)
    release = view["versions"]["release"]
    assert {view["versions"][f"platform/{name}"] for name in CLUSTERS} == {release}
