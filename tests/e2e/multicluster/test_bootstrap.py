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
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from installer.checks.dnsquery import query
from installer.inventory import Inventory, load_inventory
from installer.site import GPU_TAINTS, JOB_TAINT, POOL_LABEL, cluster_names
from installer.stacks.keycloak_admin import KeycloakAdmin
from tests.e2e.bootstrap.cli import installer, plain_env
from tests.e2e.bootstrap.runs import (
    BOOTSTRAP_TIMEOUT_S,
    Bootstrap,
    parse_stream,
    run_bootstrap,
    upstream,
)
from tests.fixtures.lab import LAB_DIR, REPO, Lab, site_inventory, site_lock

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MULTI = site_inventory("lab-multi")
CLUSTERS = ("lab", "infer")
STACK_PHASES = ("nodes", "storage", "dns", "keycloak", "platform")
INFER_KUBE = LAB_DIR / "components" / "11-kube-infer.sh"


def kube(lab: Lab, cluster: str) -> client.CoreV1Api:
    """The core API of a lab cluster, by its name in lab-multi.yml."""
    path = lab.env["LAB_KUBECONFIG"] if cluster == "lab" else lab.env["LAB_INFER_KUBECONFIG"]
    return client.CoreV1Api(config.new_client_from_config(config_file=path))


@dataclass(frozen=True)
class MultiSite:
    inventory: Inventory
    first: Bootstrap
    plan_rc: int
    plan_tail: str
    status: dict[str, Any]
    logs: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def multi(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MultiSite]:
    assert "LAB_INFER_KUBECONFIG" in lab.env, "the lab's second cluster is not up (lab/up)"
    tmp = tmp_path_factory.mktemp("multicluster")
    env = plain_env()
    with site_lock():
        upstream("up")
        try:
            first = run_bootstrap(MULTI, tmp / "first", env)
            plan_rc, _, plan_tail = installer(
                "plan", "-i", str(MULTI), "--expect-no-changes",
                log_dir=tmp / "plan", timeout=900, env=env,
            )  # fmt: skip
            rc, status, tail = installer(
                "status", "-i", str(MULTI), log_dir=tmp / "status", timeout=300, env=env
            )
            assert rc == 0, f"status failed (exit {rc}):\n{tail}"
            yield MultiSite(load_inventory(MULTI), first, plan_rc, plan_tail, status, tmp, env)
        finally:
            _kube_daemon("up")  # a test that stopped infer's API server may have failed
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


def test_plan_finds_both_clusters_converged(multi: MultiSite) -> None:
    assert multi.first.rc == 0, "the bootstrap failed"
    assert multi.plan_rc == 0, multi.plan_tail


def test_status_reports_each_cluster(multi: MultiSite) -> None:
    view = multi.status
    assert set(view["clusters"]) == set(CLUSTERS)
    for name in CLUSTERS:
        for phase in STACK_PHASES:
            entry = view["clusters"][name][phase]
            assert entry["state"] == "ok", (name, phase, entry)
    release = view["versions"]["release"]
    assert {view["versions"][f"platform/{name}"] for name in CLUSTERS} == {release}


# --- a hand `pulumi up` of infer's platform stack after changing one of infer's presets -------


@dataclass(frozen=True)
class HandRun:
    up: subprocess.CompletedProcess[str]
    lab_before: dict[str, str]
    lab_after: dict[str, str]
    infer_before: dict[str, str]
    infer_after: dict[str, str]
    presets_after: str
    namespace: str


def _edited_inventory(dest: Path) -> Path:
    """lab-multi.yml with infer's cpu-small preset at another price, every path made absolute."""
    text = MULTI.read_text(encoding="utf-8").replace("../lab/", f"{REPO}/lab/")
    data = yaml.safe_load(text)
    (infer,) = [c for c in data["clusters"] if c["name"] == "infer"]
    (preset,) = [p for p in infer["presets"] if p["name"] == "cpu-small"]
    preset["credits_per_hour"] = "0.75"
    dest.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return dest


@pytest.fixture(scope="module")
def hand_run(lab: Lab, multi: MultiSite) -> HandRun:
    assert multi.first.rc == 0, "the bootstrap failed"
    work = multi.logs / "hand"
    shutil.copytree(
        REPO / "stacks",
        work / "stacks",
        ignore=shutil.ignore_patterns("Pulumi.*.yaml", "__pycache__"),
    )
    edited = _edited_inventory(work / "edited.yml")
    namespace = multi.inventory.cluster("infer").platform.namespace
    with site_lock():
        rc, config, tail = installer(
            "stacks", "config", "-i", str(edited), "--cluster", "infer", "-c", "platform",
            "--stacks-dir", str(work / "stacks"), log_dir=work / "logs", timeout=300,
            env=multi.env,
        )  # fmt: skip
        assert rc == 0, tail
        lab_before, infer_before = _versions(kube(lab, "lab")), _versions(kube(lab, "infer"))
        env = {**config["env"], "HOME": str(work)}
        for argv in (["stack", "select", "infer"], ["up", "--yes"]):
            proc = subprocess.run(
                ["pulumi", *argv, "--non-interactive"], cwd=work / "stacks" / "platform",
                env=env, capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            assert proc.returncode == 0, f"pulumi {argv}: {proc.stdout}\n{proc.stderr}"
        lab_after, infer_after = _versions(kube(lab, "lab")), _versions(kube(lab, "infer"))
        presets = kube(lab, "infer").read_namespaced_config_map("platform-config", namespace)
    return HandRun(
        proc, lab_before, lab_after, infer_before, infer_after, json.dumps(presets.data), namespace
    )


def test_a_hand_run_of_one_clusters_stack_changes_that_cluster_only(hand_run: HandRun) -> None:
    # Every object of cluster lab kept its resourceVersion.
    assert hand_run.lab_after == hand_run.lab_before
    changed = sorted(
        k for k, v in hand_run.infer_after.items() if hand_run.infer_before.get(k) != v
    )
    # In infer, the platform's config map is the one config map that changed.
    assert [k for k in changed if k.startswith("configmap/")] == [
        f"configmap/{hand_run.namespace}/platform-config"
    ], changed
    assert "0.75" in hand_run.presets_after


# --- destroy --cluster infer: infer's side goes, lab's stays exactly as it was ---------------


def _versions(api: client.CoreV1Api) -> dict[str, str]:
    """resourceVersion of every node, namespace and config map of a cluster."""
    found = {f"node/{n.metadata.name}": n.metadata.resource_version for n in api.list_node().items}
    for ns in api.list_namespace().items:
        found[f"namespace/{ns.metadata.name}"] = ns.metadata.resource_version
    for cm in api.list_config_map_for_all_namespaces().items:
        found[f"configmap/{cm.metadata.namespace}/{cm.metadata.name}"] = (
            cm.metadata.resource_version
        )
    return found


@dataclass(frozen=True)
class InferDestroyed:
    rc: int
    tail: str
    lab_before: dict[str, str]
    lab_after: dict[str, str]
    status: dict[str, Any]


@pytest.fixture(scope="module")
def infer_destroyed(lab: Lab, multi: MultiSite, hand_run: HandRun) -> InferDestroyed:
    del hand_run  # it works on infer as the bootstrap left it
    assert multi.first.rc == 0, "the bootstrap failed"
    with site_lock():
        before = _versions(kube(lab, "lab"))
        rc, _, tail = installer(
            "destroy", "-i", str(MULTI), "--yes", "--cluster", "infer",
            log_dir=multi.logs / "destroy-infer", timeout=900, env=multi.env,
        )  # fmt: skip
        after = _versions(kube(lab, "lab"))
        _, status, _ = installer(
            "status", "-i", str(MULTI), log_dir=multi.logs / "status-2", timeout=300,
            env=multi.env,
        )  # fmt: skip
    return InferDestroyed(rc, tail, before, after, status)


def test_destroy_cluster_takes_back_that_cluster_only(
    lab: Lab, multi: MultiSite, infer_destroyed: InferDestroyed
) -> None:
    assert infer_destroyed.rc == 0, infer_destroyed.tail
    api = kube(lab, "infer")
    for node in api.list_node().items:
        labels = node.metadata.labels or {}
        assert not [k for k in labels if k.startswith(("platform.apolo.us/", "platform.neuro"))]
        assert JOB_TAINT not in {t.key for t in node.spec.taints or []}, node.metadata.name
    infer = multi.inventory.cluster("infer")
    namespaces = {ns.metadata.name for ns in api.list_namespace().items}
    assert infer.platform.namespace not in namespaces
    # Every object of cluster lab kept its resourceVersion: nothing there was touched.
    assert infer_destroyed.lab_after == infer_destroyed.lab_before
    view = infer_destroyed.status
    assert {p: e["state"] for p, e in view["clusters"]["infer"].items()} == dict.fromkeys(
        STACK_PHASES, "never"
    )
    assert {p: e["state"] for p, e in view["clusters"]["lab"].items()} == dict.fromkeys(
        STACK_PHASES, "ok"
    )


def test_destroy_cluster_leaves_the_shared_realm_and_the_other_client(
    lab: Lab, multi: MultiSite, infer_destroyed: InferDestroyed
) -> None:
    assert infer_destroyed.rc == 0, infer_destroyed.tail
    env = lab.env
    password = Path(env["LAB_KEYCLOAK_PASSWORD_FILE"]).read_text(encoding="utf-8").strip()
    admin = KeycloakAdmin(
        env["LAB_KEYCLOAK_URL"], env["LAB_KEYCLOAK_ADMIN"], password, env["LAB_KEYCLOAK_CA"]
    )
    try:
        lab_kc = multi.inventory.cluster("lab").keycloak
        infer_kc = multi.inventory.cluster("infer").keycloak
        assert admin.find_client(infer_kc.realm, infer_kc.client_id) is None
        assert admin.find_client(lab_kc.realm, lab_kc.client_id) is not None
    finally:
        admin.close()


# --- infer's API server stops mid-bootstrap: lab completes, the re-run finishes infer -------
# (Both runs start at the nodes phase: the hub is converged, and its phases are not what this is
# about.)


def _kube_daemon(verb: str) -> None:
    """`lab/components/11-kube-infer.sh VERB` (`up` starts what of infer is not running)."""
    proc = subprocess.run(
        ["bash", str(INFER_KUBE), verb], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, f"11-kube-infer.sh {verb}: {(proc.stdout + proc.stderr)[-3000:]}"


def _stop_infer_apiserver() -> None:
    """Stop infer's API server as the lab stops its daemons (TERM, KILL after 10 s)."""
    proc = subprocess.run(
        ["bash", "-c", 'source "$1/lib.sh" && stop_daemon kube-apiserver-infer', "_", str(LAB_DIR)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@dataclass(frozen=True)
class Midway:
    failed_rc: int
    failed: list[dict[str, Any]]
    failed_tail: str
    rerun: Bootstrap


@pytest.fixture(scope="module")
def midway(lab: Lab, multi: MultiSite, infer_destroyed: InferDestroyed) -> Midway:
    del infer_destroyed  # infer starts from nothing: its stacks have work to do
    with site_lock():
        log_dir = multi.logs / "midway"
        proc = subprocess.Popen(
            [sys.executable, "-m", "installer.cli", "--log-dir", str(log_dir), "-o", "json",
             "bootstrap", "-i", str(MULTI), "--yes", "--from", "nodes"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            env=multi.env,
        )  # fmt: skip
        assert proc.stdout is not None
        lines: list[str] = []
        stopped = False
        for line in proc.stdout:
            lines.append(line)
            if not stopped and '"phase_started"' in line and '"phase": "storage"' in line:
                _stop_infer_apiserver()  # both clusters' nodes phase is done
                stopped = True
        rc = proc.wait(timeout=BOOTSTRAP_TIMEOUT_S)
        assert stopped, "".join(lines)[-3000:]
        _kube_daemon("up")
        rerun = run_bootstrap(MULTI, multi.logs / "rerun", multi.env, "--from", "nodes")
    return Midway(rc, parse_stream("".join(lines)), "".join(lines)[-4000:], rerun)


def test_a_cluster_stopped_midway_fails_the_run_by_name_while_the_other_completes(
    midway: Midway,
) -> None:
    assert midway.failed_rc in (1, 3), midway.failed_tail
    errors = [e for e in midway.failed if e.get("event") == "error"]
    named = {e.get("data", {}).get("cluster") for e in errors}
    assert "infer" in named and "lab" not in named, errors
    final = midway.failed[-1]
    message = json.dumps(final)
    assert "cluster infer: storage:" in message, final
    assert "cluster lab completed its phases" in message, final
    finished = {
        e["phase"]: e.get("data", {}) for e in midway.failed if e.get("event") == "phase_finished"
    }
    for phase in ("storage", "dns", "keycloak", "platform"):
        assert finished[phase]["clusters"]["lab"] == "ok", (phase, finished[phase])
    assert finished["storage"]["clusters"]["infer"] == "failed"
    assert finished["platform"]["clusters"]["infer"] == "skipped"


def test_the_rerun_finishes_only_the_stopped_clusters_phases(midway: Midway) -> None:
    rerun = midway.rerun
    assert rerun.rc == 0, rerun.tail
    for phase in ("storage", "dns", "keycloak", "platform"):
        assert rerun.phase(phase)["clusters"] == {"lab": "done", "infer": "ok"}, phase
    assert rerun.phase("nodes")["status"] == "done"
    assert rerun.phase("verify")["status"] == "ok"
