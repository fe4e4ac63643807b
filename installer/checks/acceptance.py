"""Acceptance checks that schedule real pods: presets land on their pools and start there, job
nodes stay closed.

Each pod is built exactly as the job controller builds a job's pod (`installer.site`): required
node affinity on the pool label `In [pools]`, the preset's tolerations, requests equal to limits.
A preset's pod must also start: its node pulls the probe image from the hub and runs it.
Pods live in one namespace per run, labelled as the installer's, and are deleted when the check
ends, pass or fail; the namespace is deleted when the run ends.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from installer.checks.catalog import make
from installer.checks.context import SiteAccess
from installer.checks.framework import Check, Finding, passed, problem
from installer.checks.preflight_kube import pool_members
from installer.engines.kube import PULL_FAILURE_REASONS, Kube, PodState
from installer.errors import FailedError
from installer.inventory.models import Cluster, NodePool, Preset
from installer.site import (
    JOB_TAINT,
    POOL_LABEL,
    pool_taints,
    preset_resources,
    preset_tolerations,
    site_image,
)

log = logging.getLogger("installer.checks")
MANAGED_BY = {"app.kubernetes.io/managed-by": "onprem-installer"}
PURPOSE_LABEL = "onprem-installer/purpose"
PROBE_IMAGE = "busybox:latest"
"""Small, in the release (so on the hub); the node pulls it from there as it pulls every image."""
SCHEDULE_WAIT_S = 40.0
START_WAIT_S = 120.0
"""How long a scheduled pod may take to pull its image and start."""
START_FAILURES = PULL_FAILURE_REASONS | {
    "CreateContainerError",
    "CreateContainerConfigError",
    "RunContainerError",
}
"""Why a container waits when its node cannot start it: no use waiting longer."""
SANDBOX_FAILURE = "FailedCreatePodSandBox"
"""The event a kubelet reports when the runtime cannot make the pod's sandbox (its pause image)."""
NAMESPACE_READY_S = 30.0
STALE_AFTER_S = 3600.0
"""A verify namespace this old is left from an interrupted run (a run takes minutes)."""


def _affinity(pools: list[str]) -> dict[str, Any]:
    term = {"matchExpressions": [{"key": POOL_LABEL, "operator": "In", "values": pools}]}
    required = {"nodeSelectorTerms": [term]}
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}


def _pod(
    name: str,
    image: str,
    pools: list[str],
    tolerations: list[tuple[str, str]],
    resources: Mapping[str, str],
    labels: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {**MANAGED_BY, PURPOSE_LABEL: "verify", **labels}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": False,
            "affinity": _affinity(pools),
            "tolerations": [
                {"key": key, "operator": "Exists", "effect": effect} for key, effect in tolerations
            ],
            "containers": [
                {
                    "name": "probe",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "60"],
                    "resources": {"requests": dict(resources), "limits": dict(resources)},
                }
            ],
        },
    }


def preset_pod(access: SiteAccess, cluster: Cluster, preset: Preset, name: str) -> dict[str, Any]:
    """The pod the job controller would create for a job of `preset`."""
    return _pod(
        name,
        site_image(access.inventory, PROBE_IMAGE),
        list(preset.pools),
        [(t.key, t.effect) for t in preset_tolerations(preset, cluster)],
        preset_resources(preset),
        {"platform.apolo.us/preset": preset.name, "platform.neuromation.io/preset": preset.name},
    )


def untolerated_pod(access: SiteAccess, pool: NodePool, name: str) -> dict[str, Any]:
    """A pod aimed at `pool` that tolerates every taint of the pool except the job taint."""
    keys = sorted({(t.key, t.effect) for t in pool_taints(pool) if t.key != JOB_TAINT})
    return _pod(
        name, site_image(access.inventory, PROBE_IMAGE), [pool.name], keys, {"cpu": "10m"}, {}
    )


class ProbeNamespace:
    """One namespace per cluster and run for the test pods; created on first use."""

    def __init__(self) -> None:
        self._names: dict[str, tuple[Kube, str]] = {}
        self._lock = threading.Lock()
        self._deleted = False

    def get(self, access: SiteAccess, cluster: Cluster) -> tuple[Kube, str]:
        """The cluster's API and the namespace (created now if needed)."""
        with self._lock:
            if self._deleted:
                # A check that outlived its time limit must not make a namespace after the run
                # removed them: nothing would remove that one but the next run's sweep.
                raise FailedError("the verify run has ended; no more test pods")
            if cluster.name not in self._names:
                kube = access.kube(cluster)
                self._sweep(kube)
                name = f"installer-verify-{secrets.token_hex(4)}"
                kube.create_namespace(name, {**MANAGED_BY, PURPOSE_LABEL: "verify"})
                self._names[cluster.name] = (kube, name)
                # The API refuses pods until the controller manager made the default account.
                deadline = time.monotonic() + NAMESPACE_READY_S
                while not kube.service_account_exists(name):
                    if time.monotonic() > deadline:
                        raise FailedError(
                            f"namespace {name} got no default ServiceAccount in"
                            f" {NAMESPACE_READY_S:g}s",
                            remedy="check that kube-controller-manager runs",
                        )
                    time.sleep(0.2)
            return self._names[cluster.name]

    @staticmethod
    def _sweep(kube: Kube) -> None:
        """Remove what an interrupted earlier run left (old enough not to be another run's)."""
        selector = f"{PURPOSE_LABEL}=verify"
        for stale in kube.namespaces(selector, older_than_s=STALE_AFTER_S):
            log.info("deleting namespace %s left by an interrupted verify", stale)
            kube.delete_namespace(stale)

    def delete(self) -> None:
        """Delete every namespace made (and the pods in it)."""
        with self._lock:
            self._deleted = True
            for kube, name in self._names.values():
                try:
                    kube.delete_namespace(name)
                except Exception:  # clean-up must try every namespace; the log keeps why
                    log.exception("could not delete namespace %s", name)
            self._names.clear()


def _schedule(kube: Kube, namespace: str, manifest: dict[str, Any]) -> PodState:
    """Create the pod and wait until the scheduler placed it or gave up on it."""
    name = manifest["metadata"]["name"]
    kube.create_pod(namespace, manifest)
    deadline = time.monotonic() + SCHEDULE_WAIT_S
    state = kube.pod(namespace, name)
    while state is not None and not state.node and not state.unschedulable:
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
        state = kube.pod(namespace, name)
    if state is None:
        return PodState(name, None, "Gone", "the pod disappeared before it was scheduled")
    return state


def _start(kube: Kube, namespace: str, state: PodState) -> str | None:
    """Wait until the scheduled pod's containers started; why not, or None when they did."""
    deadline = time.monotonic() + START_WAIT_S
    current: PodState | None = state
    while current is not None and not current.started:
        reason = (current.waiting or "").partition(":")[0]
        if reason in START_FAILURES:
            return current.waiting
        sandbox = [
            w for w in kube.pod_warnings(namespace, state.name) if w.startswith(SANDBOX_FAILURE)
        ]
        if sandbox:
            return sandbox[-1]
        if current.phase == "Failed":
            return f"the pod failed ({current.waiting or 'no container started'})"
        if time.monotonic() > deadline:
            return f"not started within {START_WAIT_S:g}s ({current.waiting or current.phase})"
        time.sleep(0.5)
        current = kube.pod(namespace, state.name)
    return None if current is not None else "the pod disappeared before it started"


def diagnose(kube: Kube, cluster: Cluster, pools: list[str], tolerated: set[str]) -> str:
    """Why nodes the inventory puts in `pools` may refuse a pod: wrong label, extra taints."""
    nodes = kube.nodes()
    notes = []
    for pool in cluster.node_pools:
        if pool.name not in pools:
            continue
        for node in pool_members(pool, nodes):
            label = node.labels.get(POOL_LABEL)
            if label != pool.name:
                notes.append(f"{node.name} has {POOL_LABEL}={label or '(none)'}")
            extra = sorted(
                {t.key for t in node.taints if t.effect in ("NoSchedule", "NoExecute")} - tolerated
            )
            if extra:
                notes.append(f"{node.name} has taints it does not tolerate: {', '.join(extra)}")
            if node.unschedulable or not node.ready:
                notes.append(f"{node.name} is {'cordoned' if node.unschedulable else 'not Ready'}")
    return "; ".join(notes)


def check_preset(
    access: SiteAccess, namespaces: ProbeNamespace, cluster: Cluster, preset: Preset
) -> Finding:
    """A pod of `preset` lands on a node of its pools."""
    kube, namespace = namespaces.get(access, cluster)
    name = f"preset-{preset.name}-{secrets.token_hex(3)}"[:63]
    try:
        state = _schedule(kube, namespace, preset_pod(access, cluster, preset, name))
        pools = ", ".join(preset.pools)
        if state.unschedulable:
            tolerated = {t.key for t in preset_tolerations(preset, cluster)}
            why = diagnose(kube, cluster, list(preset.pools), tolerated)
            return problem(
                f"a pod of {preset.name} (pools {pools}) was not scheduled:"
                f" {why + '; ' if why else ''}scheduler: {state.unschedulable}",
                "re-run the nodes phase; check the pools' labels, taints and free resources",
            )
        if not state.node:
            return problem(f"a pod of {preset.name} was not scheduled within {SCHEDULE_WAIT_S:g}s")
        nodes = kube.nodes()
        allowed = {
            n.name
            for pool in cluster.node_pools
            if pool.name in preset.pools
            for n in pool_members(pool, nodes)
        }
        if state.node not in allowed:
            label = next((n.labels.get(POOL_LABEL) for n in nodes if n.name == state.node), None)
            return problem(
                f"a pod of {preset.name} landed on {state.node}, which is not in pools {pools}"
                f" (its {POOL_LABEL} is {label!r})",
                "remove the pool label from nodes outside the pool; re-run the nodes phase",
                node=state.node,
            )
        not_started = _start(kube, namespace, state)
        if not_started is not None:
            return problem(
                f"a pod of {preset.name} was scheduled on {state.node} but did not start:"
                f" {not_started}",
                "check that the node's container runtime trusts the site CA and pulls from the hub"
                " (re-run the nodes phase) and the node's kubelet log",
                node=state.node,
            )
        return passed(f"scheduled on {state.node} and started (pools {pools})", node=state.node)
    finally:
        kube.delete_pod(namespace, name)


def check_job_taint(
    access: SiteAccess, namespaces: ProbeNamespace, cluster: Cluster, pool: NodePool
) -> Finding:
    """A pod without the job toleration is not scheduled onto the job pool."""
    kube, namespace = namespaces.get(access, cluster)
    name = f"untolerated-{pool.name}-{secrets.token_hex(3)}"[:63]
    try:
        state = _schedule(kube, namespace, untolerated_pod(access, pool, name))
        if state.node:
            return problem(
                f"a pod without the {JOB_TAINT} toleration was scheduled on {state.node}:"
                f" the pool's job taint is missing",
                "re-run the nodes phase to restore the taint",
                node=state.node,
            )
        nodes = kube.nodes()
        open_nodes = [
            n
            for n in nodes
            if n.labels.get(POOL_LABEL) == pool.name and n.ready and not n.unschedulable
        ]
        if not open_nodes:
            # The job taint is meant to refuse this pod: only other causes are worth naming.
            why = diagnose(kube, cluster, [pool.name], {t.key for t in pool_taints(pool)})
            return problem(
                f"no Ready, schedulable node carries {POOL_LABEL}={pool.name}, so the pod could"
                f" not have landed anyway{': ' + why if why else ''}",
                "re-run the nodes phase; uncordon the pool's nodes (sched.preset fails too)",
            )
        # The pod tolerates every other taint of the pool and wants 10m of CPU, so on a Ready,
        # schedulable node of the pool only the job taint can keep it out; the taint must be
        # there on each such node, as the scheduler's refusal implies.
        untainted = [n.name for n in open_nodes if JOB_TAINT not in {t.key for t in n.taints}]
        if untainted:
            return problem(
                f"{', '.join(untainted)} lack the {JOB_TAINT} taint, though the pod was refused:"
                f" {state.unschedulable or 'pending'}",
                "re-run the nodes phase to restore the taint",
            )
        names = ", ".join(n.name for n in open_nodes)
        return passed(f"refused by the {JOB_TAINT} taint on {names}")
    finally:
        kube.delete_pod(namespace, name)


def scheduling_checks(access: SiteAccess, namespaces: ProbeNamespace) -> list[Check]:
    """sched.preset per preset and sched.job_taint per job pool, for every cluster."""
    api = ("kube.api",)
    checks = []
    for cluster in access.inventory.clusters:
        for preset in cluster.presets:
            checks.append(
                make(
                    "sched.preset",
                    f"cluster/{cluster.name}/preset/{preset.name}",
                    partial(check_preset, access, namespaces, cluster, preset),
                    requires=api,
                    timeout_s=60,
                )
            )
        for pool in cluster.node_pools:
            if pool.jobs:
                checks.append(
                    make(
                        "sched.job_taint",
                        f"cluster/{cluster.name}/pool/{pool.name}",
                        partial(check_job_taint, access, namespaces, cluster, pool),
                        requires=api,
                        timeout_s=60,
                    )
                )
    return checks
