"""Kill the bootstrap during each phase, re-run it, and check the site converged.

One baseline for the module: a whole bootstrap of the lab (`--restart`; right after the connected
module it finds the site converged and changes nothing), whose result is snapshotted (Pulumi
state per stack, Helm releases, node labels and taints). Each test then makes its phase have work
again (`destroy --only <phase>` for a stack, a forgotten mirror for
`airgap_load`), starts `installer -o json bootstrap --yes` in its own process group, reads its
JSON events and SIGKILLs the whole group once the phase has started doing that work. The
re-run must exit 0, skip the phases that finished (as its events say), not be stopped by the
dead run's locks, and leave the site as the baseline: no pending Pulumi operations, each resource
once, each Helm release deployed once, the same labels and taints, every hub tag a complete
image. The module holds the lab-site lock throughout; the cluster side is destroyed at the end of
the package (`cluster_side_given_back`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from installer.airgap.load import site_target
from installer.engines.pulumi import PulumiEngine
from installer.engines.registry import RegistryClient
from installer.engines.ssh import SshTarget, run_command
from installer.inventory import load_inventory
from installer.journal import Journal
from installer.release import load_release
from installer.site import JOB_TAINT, normalize_image
from installer.state import StateDir
from tests.e2e.bootstrap.cli import LAB_INVENTORY, installer, site_lock, tool_env
from tests.e2e.checks.kwok import core
from tests.fixtures.lab import REPO, Lab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STACKS = ("nodes", "storage", "dns", "keycloak", "platform")
LAB_NODES = ("cpu-1", "cpu-2", "cpu-3", "a100-1", "a100-2", "h100-1")


@dataclass
class Snapshot:
    """What a converged site looks like, as far as duplicates and drift go."""

    urns: dict[str, list[str]]
    helm: dict[str, list[str]]
    """`<namespace>/<release>` -> the statuses of its release secrets, by version."""
    nodes: dict[str, Any]
    namespaces: list[str]
    """Namespaces (not being deleted) other than verify's short-lived ones."""
    owned_taints: dict[str, Any]
    """Per node, the taints the nodes stack owns (what `destroy` will take back)."""


@dataclass
class Site:
    """The lab after the module's baseline bootstrap."""

    lab: Lab
    logs: Path
    state: StateDir
    env: dict[str, str]
    baseline: Snapshot
    seconds: dict[str, float] = field(default_factory=dict)


# --- reading the site ---------------------------------------------------------------------


def _stack_export(site_env: dict[str, str], state: StateDir, component: str) -> dict[str, Any]:
    engine = PulumiEngine(state=state, bin_dir=Path(site_env["LAB_PULUMI_BIN_DIR"]))
    proc = subprocess.run(
        [str(engine._cli_dir() / "pulumi"), "stack", "export", "--stack", "lab",
         "--non-interactive"],
        cwd=engine.project_dir(component), env={**os.environ, **engine.env()},
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, f"pulumi stack export of {component}: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def _helm_releases(lab: Lab) -> dict[str, list[str]]:
    secrets = core(lab).list_secret_for_all_namespaces(label_selector="owner=helm").items
    releases: dict[str, list[tuple[int, str]]] = {}
    for s in secrets:
        labels = s.metadata.labels or {}
        key = f"{s.metadata.namespace}/{labels.get('name')}"
        releases.setdefault(key, []).append(
            (int(labels.get("version", 0)), str(labels.get("status")))
        )
    return {k: [status for _, status in sorted(v)] for k, v in sorted(releases.items())}


def _nodes(lab: Lab) -> dict[str, Any]:
    api = core(lab)
    found = {}
    for name in LAB_NODES:
        node = api.read_node(name)
        taints = sorted((t.key, t.value or "", t.effect) for t in node.spec.taints or [])
        found[name] = {"labels": dict(sorted((node.metadata.labels or {}).items())),
                       "taints": taints}  # fmt: skip
    return found


def _namespaces(lab: Lab) -> list[str]:
    found = core(lab).list_namespace().items
    return sorted(
        n.metadata.name
        for n in found
        if n.status.phase != "Terminating"
        and (n.metadata.labels or {}).get("onprem-installer/purpose") != "verify"
    )


def verify_namespaces(lab: Lab) -> list[str]:
    """Verify's probe namespaces (not being deleted)."""
    found = core(lab).list_namespace(label_selector="onprem-installer/purpose=verify").items
    return sorted(n.metadata.name for n in found if n.status.phase != "Terminating")


def snapshot(lab: Lab, env: dict[str, str], state: StateDir) -> Snapshot:
    """The site as the checks compare it, asserting there is no pending Pulumi operation."""
    urns = {}
    owned: dict[str, Any] = {}
    for component in STACKS:
        deployment = _stack_export(env, state, component).get("deployment") or {}
        for r in deployment.get("resources") or []:
            if component == "nodes" and r["urn"].endswith("::node-marks"):
                owners = (r.get("outputs") or {}).get("owners") or {}
                for node, record in owners.items():
                    owned[node] = sorted((t["key"], t["effect"]) for t in record.get("owned") or [])
        pending = deployment.get("pending_operations") or []
        assert not pending, f"{component}: pending operations left: {pending}"
        listed = [r["urn"] for r in deployment.get("resources") or []]
        assert len(listed) == len(set(listed)), f"{component}: a resource twice: {listed}"
        urns[component] = sorted(listed)
    return Snapshot(urns, _helm_releases(lab), _nodes(lab), _namespaces(lab), owned)


def hub_images_complete() -> None:
    """Every release image's tag on the hub resolves to a manifest whose blobs all exist."""
    target, _ = site_target(load_inventory(LAB_INVENTORY))
    with RegistryClient(target.registry) as client:
        for image in load_release().images:
            name = normalize_image(image.name)
            todo = [image.tag]
            while todo:
                doc = json.loads(client.get_manifest(name, todo.pop()).data)
                todo += [m["digest"] for m in doc.get("manifests") or []]
                blobs = [d["digest"] for d in [doc.get("config") or {}, *(doc.get("layers") or [])]
                         if d]  # fmt: skip
                for digest in blobs:
                    assert client.blob_exists(name, digest), f"{name}:{image.tag} lacks {digest}"


# --- running and killing ------------------------------------------------------------------


@dataclass
class Killed:
    """The events of a bootstrap killed during a phase."""

    events: list[dict[str, Any]]
    pgid: int


Trigger = Callable[[dict[str, Any], int], bool]
"""Given an event of the phase under test and how many of its events came before: kill now?"""


def bootstrap_killed_during(
    site: Site, phase: str, trigger: Trigger, delay: float, *extra: str
) -> Killed:
    """Start a bootstrap, SIGKILL its process group once `trigger` fires (after `delay`)."""
    argv = [sys.executable, "-m", "installer.cli", "--log-dir", str(site.logs), "-o", "json",
            "bootstrap", "-i", str(LAB_INVENTORY), "--yes", *extra]  # fmt: skip
    stderr = (site.logs / f"killed-{phase}.stderr").open("w")
    proc = subprocess.Popen(
        argv, cwd=REPO, env=site.env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    events: list[dict[str, Any]] = []
    seen = 0
    fired = False
    try:
        for line in proc.stdout:
            if not line.startswith('{"time"'):
                continue
            event = json.loads(line)
            events.append(event)
            if event["phase"] != phase:
                continue
            assert event["event"] != "phase_finished", (
                f"{phase} finished before the kill: {event['message']}"
            )
            if trigger(event, seen):
                fired = True
                time.sleep(delay)
                os.killpg(proc.pid, signal.SIGKILL)
                break
            seen += 1
        rest = proc.stdout.read()
    finally:
        if proc.poll() is None and not fired:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        stderr.close()
    assert fired, f"the bootstrap ended (exit {proc.returncode}) before {phase} did its work"
    assert proc.returncode == -signal.SIGKILL
    late = [json.loads(ln) for ln in rest.splitlines() if ln.startswith('{"time"')]
    assert not any(e["phase"] == phase and e["event"] == "phase_finished" for e in late), (
        f"{phase} finished before the kill landed; the test did not interrupt it"
    )
    return Killed(events + late, proc.pid)


PLUGIN_MARKS = ("pulumi-resource-", "-m pulumi.dynamic")
"""Pulumi starts each provider in a process group of its own, so a kill of the run's group misses
them; they exit on their own once their engine stops answering (a health check). They hold no
lock of the site: the re-run right after proves it."""


def session_processes(pgid: int) -> list[str]:
    """Processes still in the killed run's session, other than Pulumi's providers."""
    left = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == pgid and fields[0] != "Z":  # session id
            if any(mark in cmdline for mark in PLUGIN_MARKS):
                continue
            left.append(f"{entry.name}: {cmdline[:200]}")
    return left


def rerun(site: Site, name: str) -> tuple[list[dict[str, Any]], dict[str, Any], float]:
    """The bootstrap again, to completion: its events, summary and duration."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "installer.cli", "--log-dir", str(site.logs), "-o", "json",
         "bootstrap", "-i", str(LAB_INVENTORY), "--yes"],
        cwd=REPO, env=site.env, capture_output=True, text=True, check=False, timeout=1800,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert proc.returncode == 0, f"re-run after killing {name} failed:\n{proc.stdout[-4000:]}"
    lines = proc.stdout.splitlines()
    events = [json.loads(ln) for ln in lines if ln.startswith('{"time"')]
    summary = json.loads("\n".join(ln for ln in lines if not ln.startswith('{"time"')))
    return events, summary, seconds


# --- the module's site --------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(
    lab: Lab, cluster_side_given_back: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    logs = tmp_path_factory.mktemp("interrupted")
    env = tool_env(lab)
    state = StateDir(load_inventory(LAB_INVENTORY).site.state_dir)
    made: list[Site] = []
    with site_lock():
        started = time.monotonic()
        try:
            rc, _, tail = installer(
                "bootstrap", "-i", str(LAB_INVENTORY), "--yes", "--restart",
                log_dir=logs, timeout=1800, env=env,
            )  # fmt: skip
            assert rc == 0, f"baseline bootstrap of the lab failed (exit {rc}):\n{tail}"
            baseline = snapshot(lab, env, state)
            unowned = {
                node: seen["taints"]
                for node, seen in baseline.nodes.items()
                if any(t[0] == JOB_TAINT for t in seen["taints"])
                and (JOB_TAINT, "NoSchedule") not in baseline.owned_taints.get(node, [])
            }
            assert not unowned, f"the baseline does not own the job taints it set: {unowned}"
            hub_images_complete()
            made.append(Site(lab, logs, state, env, baseline))
            made[0].seconds["baseline"] = time.monotonic() - started
            yield made[0]
        finally:
            per_test = {k: round(v) for k, v in made[0].seconds.items()} if made else {}
            total = time.monotonic() - started
            print(f"\ninterrupted bootstrap: {total:.0f} s in all; per test (s): {per_test}")


# --- per phase: how to give it work, and when to kill ---------------------------------------


def _destroy_only(site: Site, phase: str) -> None:
    rc, _, tail = installer(
        "destroy", "-i", str(LAB_INVENTORY), "--yes", "--only", phase,
        log_dir=site.logs, timeout=900, env=site.env,
    )  # fmt: skip
    assert rc == 0, f"destroy --only {phase} failed:\n{tail}"


def _forget_mirror(site: Site, phase: str) -> None:
    # The next airgap_load pulls the release from the upstream and pushes it again.
    (site.state.root / "airgap" / "mirror" / "inputs.sha256").unlink(missing_ok=True)


DRIFTED = "/etc/onprem-hub/dns/dnsmasq.conf"


def _on_hub(argv: list[str]) -> str:
    vm = load_inventory(LAB_INVENTORY).aux_vm
    target = SshTarget(
        address=str(vm.address),
        port=vm.ssh.port,
        user=vm.ssh.user,
        private_key=vm.ssh.private_key.resolve().get_secret_value(),
        known_hosts=vm.ssh.known_hosts,
    )
    done = run_command(target, argv)
    assert done.rc == 0, done.stderr
    return done.stdout


def _drift_hub(site: Site, phase: str) -> None:
    # An edit by hand on the VM: the drift probe sees it, so the play runs (and is killed).
    _on_hub(["sudo", "-n", "sed", "-i", "$ a # edited by hand", DRIFTED])


def _nothing(site: Site, phase: str) -> None:
    pass


def _nth_step(n: int) -> Trigger:
    return lambda e, seen: e["event"] == "step" and seen >= n


def _step(prefix: str) -> Trigger:
    return lambda e, seen: e["event"] == "step" and e["message"].startswith(prefix)


def _progress(step: str) -> Trigger:
    return lambda e, seen: e["event"] == "progress" and e["message"] == step


@dataclass(frozen=True)
class Case:
    """How one phase is interrupted."""

    phase: str
    prepare: Callable[[Site, str], None]
    trigger: Trigger
    delay: float
    start: str | None
    """`--from` for the killed run: earlier phases are not what this test is about."""
    check: tuple[str, ...]
    """Phases whose plan must be empty after the re-run."""


CASES = [
    Case("preflight", _nothing, _step("checking the site"), 0.2, None, ("nodes",)),
    # Mid-play: the sixth step of the phase, early in the play (packages, TLS files, services
    # and the edited zone file follow).
    Case("auxvm", _drift_hub, _nth_step(6), 0.0, "auxvm", ("airgap_load",)),
    # The pull from the upstream has moved bytes; the push has not begun.
    Case(
        "airgap_load",
        _forget_mirror,
        _progress("pull and pack"),
        0.0,
        "airgap_load",
        ("airgap_load",),
    ),
    # Taints created, label patches being created.
    Case("nodes", _destroy_only, _step("create node-marks"), 0.0, "nodes", ("nodes", "storage")),
    # The OpenEBS Helm release is being installed.
    Case(
        "storage", _destroy_only, _step("create openebs"), 0.5, "storage", ("storage", "keycloak")
    ),
    # The VM's zone records are being written.
    Case("dns", _destroy_only, _step("create zone-records"), 1.0, "dns", ("dns", "keycloak")),
    # The realm is being configured through Keycloak's admin API.
    Case(
        "keycloak", _destroy_only, _step("create realm"), 1.0, "keycloak", ("keycloak", "platform")
    ),
    # The controllers' Deployments are being created (and awaited).
    Case("platform", _destroy_only, _step("create deploy-"), 1.0, "platform", ("platform",)),
    # Test pods are being made.
    Case("verify", _nothing, _step("proving the install"), 0.1, "verify", ("platform",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.phase for c in CASES])
def test_killed_bootstrap_resumes_and_converges(site: Site, case: Case) -> None:
    started = time.monotonic()
    case.prepare(site, case.phase)
    extra = ("--from", case.start) if case.start else ()
    killed = bootstrap_killed_during(site, case.phase, case.trigger, case.delay, *extra)
    assert any(e["event"] == "phase_started" and e["phase"] == case.phase for e in killed.events)

    journal = Journal(site.state.journal).data
    assert journal.bootstrap == "running"
    assert journal.phases[case.phase].state == "running"
    lock = site.state.root / "site.lock"
    holder = lock.read_text() if lock.exists() else ""
    assert not holder or json.loads(holder)["pid"] == killed.pgid, holder
    # The dead run's own process group is gone (no provider or ssh child keeps its locks).
    deadline = time.monotonic() + 10
    while (left := session_processes(killed.pgid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes of the killed run still alive: {left}"

    events, summary, seconds = rerun(site, case.phase)
    assert summary["ok"] is True
    outcomes = {o["phase"]: o for o in summary["phases"]}
    order = list(outcomes)
    for name in order[: order.index(case.phase)]:
        if name not in ("preflight", "verify") and outcomes[name]["status"] != "skipped":
            assert outcomes[name]["status"] == "done", (name, outcomes[name])
    assert outcomes[case.phase]["status"] == "ok"
    if case.phase == "auxvm":
        # The killed play had not reached the edited file: the re-run's probe still saw it
        # differ from the last converging run, and its play put the file back.
        assert outcomes["auxvm"]["changes"] >= 1, outcomes["auxvm"]
        assert "edited by hand" not in _on_hub(["sudo", "-n", "cat", DRIFTED])
    started_here = [e["phase"] for e in events if e["event"] == "phase_started"]
    assert case.phase in started_here
    assert not [e for e in events if e["event"] == "error"]

    after = Journal(site.state.journal).data
    assert after.bootstrap == "ok"
    assert all(p.state == "ok" for p in after.phases.values()), after.phases

    now = snapshot(site.lab, site.env, site.state)
    assert now.urns == site.baseline.urns
    assert now.nodes == site.baseline.nodes
    assert now.owned_taints == site.baseline.owned_taints, "taints the stack no longer owns"
    assert now.namespaces == site.baseline.namespaces
    assert not verify_namespaces(site.lab), "a verify namespace outlived the re-run"
    assert set(now.helm) == set(site.baseline.helm)
    for release, statuses in now.helm.items():
        assert statuses[-1] == "deployed", (release, statuses)
        assert not [s for s in statuses if s.startswith("pending")], (release, statuses)
    if case.phase in ("auxvm", "airgap_load"):
        hub_images_complete()

    # Nothing left to change right after: the phase's own plan (and its dependents') is empty.
    rc, plan, tail = installer(
        "plan", "-i", str(LAB_INVENTORY), "--expect-no-changes",
        *[a for p in case.check for a in ("--only", p)],
        log_dir=site.logs, timeout=900, env=site.env,
    )  # fmt: skip
    assert rc == 0, f"plan after the re-run shows changes: {plan.get('phases') or tail}"
    site.seconds[case.phase] = time.monotonic() - started
    print(f"{case.phase}: re-run {seconds:.1f} s, test {site.seconds[case.phase]:.1f} s")
