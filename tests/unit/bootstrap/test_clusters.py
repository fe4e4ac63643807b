"""A site of several clusters (issue 22): each cluster phase runs once per cluster, one cluster's
failure stops that cluster only, a re-run resumes each cluster where it stopped, and `destroy
--cluster` takes back one cluster's side and leaves the rest of the site, journal included.

The phases are faked at the seam of the phase mapping; the runner and journal are the real ones,
on inventories/multi-cluster.example.yml (clusters `train` and `infer`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from installer import bootstrap
from installer.errors import EnvironmentProblem, InstallerError
from installer.inventory import load_inventory
from installer.journal import Journal
from installer.phases.base import (
    PHASE_ORDER,
    Change,
    PhaseContext,
    PhasePlan,
    PhaseResult,
    Status,
)
from installer.phases.catalog import CLUSTER_PHASES
from installer.state import StateDir

REPO = Path(__file__).resolve().parents[3]
MULTI = REPO / "inventories" / "multi-cluster.example.yml"
SITE_BEFORE = ["preflight", "auxvm", "airgap_load"]


@dataclass
class Fake:
    """A phase that records each call with the cluster it was narrowed to; it fails on one
    cluster on demand (an error raised, or a failed result)."""

    name: str
    calls: list[str]
    raise_on: dict[str, InstallerError] = field(default_factory=dict)
    fail_on: set[str] = field(default_factory=set)
    inputs_of: dict[str, str] = field(default_factory=dict)
    changes_on: set[str] = field(default_factory=set)

    def _who(self, ctx: PhaseContext) -> str:
        return f"{self.name}@{ctx.cluster}" if ctx.cluster else self.name

    def applies(self, ctx: PhaseContext) -> bool:
        return True

    def inputs(self, ctx: PhaseContext) -> Any:
        return {c.name: self.inputs_of.get(c.name, "v1") for c in ctx.clusters()}

    def plan(self, ctx: PhaseContext) -> PhasePlan:
        return PhasePlan(self.name)

    def apply(self, ctx: PhaseContext) -> PhaseResult:
        self.calls.append(self._who(ctx))
        if ctx.cluster in self.raise_on:
            raise self.raise_on[ctx.cluster]
        if ctx.cluster in self.fail_on:
            return PhaseResult(self.name, Status.FAILED, message=f"{ctx.cluster} broke")
        changes = [Change(f"cluster/{ctx.cluster}", "update", "thing", self.name)]
        done = changes if ctx.cluster in self.changes_on else []
        return PhaseResult(self.name, Status.OK, done, message=f"{self._who(ctx)} done")

    def destroy_plan(self, ctx: PhaseContext, *, purge: bool) -> PhasePlan:
        return PhasePlan(self.name, notes=[f"destroy {self._who(ctx)}"])

    def destroy(self, ctx: PhaseContext, *, purge: bool) -> PhaseResult:
        self.calls.append(f"destroy:{self._who(ctx)}")
        return PhaseResult(self.name, Status.OK, message="removed")


@pytest.fixture
def ctx(tmp_path: Path) -> PhaseContext:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return PhaseContext(
        inventory=load_inventory(MULTI),
        inventory_path=MULTI,
        state=StateDir(tmp_path / "state"),
        run_dir=run_dir,
        emit=bootstrap.EventLog(run_dir),
    )


def fakes(calls: list[str], **overrides: dict[str, Any]) -> dict[str, Any]:
    return {n: Fake(n, calls, **overrides.get(n, {})) for n in PHASE_ORDER}


def journal(ctx: PhaseContext) -> Journal:
    return Journal(ctx.state.journal)


def events(ctx: PhaseContext) -> list[dict[str, Any]]:
    lines = (ctx.run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def each(phases: tuple[str, ...] | list[str], clusters: tuple[str, ...]) -> list[str]:
    return [f"{p}@{c}" for p in phases for c in clusters]


def test_each_cluster_phase_runs_once_per_cluster_in_order(ctx: PhaseContext) -> None:
    calls: list[str] = []
    report = bootstrap.apply(ctx, fakes(calls), list(PHASE_ORDER), journal(ctx))
    assert report.ok
    assert calls == [*SITE_BEFORE, *each(CLUSTER_PHASES, ("train", "infer")), "verify"]
    storage = next(o for o in report.outcomes if o.name == "storage")
    assert storage.clusters == {"train": "ok", "infer": "ok"}
    assert storage.as_dict()["clusters"] == {"train": "ok", "infer": "ok"}
    data = journal(ctx).data
    assert {c: sorted(e) for c, e in data.clusters.items()} == {
        "train": sorted(CLUSTER_PHASES),
        "infer": sorted(CLUSTER_PHASES),
    }
    assert data.phases["platform"].state == "ok"


def test_a_cluster_that_fails_stops_alone_and_the_run_fails_naming_it(ctx: PhaseContext) -> None:
    calls: list[str] = []
    down = EnvironmentProblem("the API server at https://infer:6443 refused the connection")
    phases = fakes(calls, storage={"raise_on": {"infer": down}})
    with pytest.raises(EnvironmentProblem) as info:
        bootstrap.apply(ctx, phases, list(PHASE_ORDER), journal(ctx))
    # train went on to the end of its phases; infer stopped at storage; verify did not run.
    assert calls == [
        *SITE_BEFORE,
        "nodes@train", "nodes@infer", "storage@train", "storage@infer",
        *each(("dns", "keycloak", "platform"), ("train",)),
    ]  # fmt: skip
    message = info.value.message
    assert message.startswith("cluster infer: storage: the API server at https://infer:6443")
    assert "cluster train completed its phases" in message
    data = journal(ctx).data
    assert data.bootstrap == "failed"
    assert data.clusters["infer"]["storage"].state == "failed"
    assert "dns" not in data.clusters["infer"]
    assert all(data.clusters["train"][p].state == "ok" for p in CLUSTER_PHASES)
    assert data.phases["storage"].state == "failed" and data.phases["dns"].state == "ok"
    errors = [e for e in events(ctx) if e["event"] == "error"]
    assert [(e["phase"], e["data"]["cluster"]) for e in errors] == [("storage", "infer")]
    assert errors[0]["message"].startswith("cluster infer: ")
    finished = {e["phase"]: e for e in events(ctx) if e["event"] == "phase_finished"}
    assert finished["dns"]["data"]["clusters"] == {"train": "ok", "infer": "skipped"}
    assert finished["verify"]["message"] == "not run: cluster infer failed in storage"

    # Once infer is back, the re-run finishes only infer's phases (and the checks).
    calls.clear()
    report = bootstrap.apply(ctx, fakes(calls), list(PHASE_ORDER), journal(ctx))
    assert report.ok
    assert calls == [
        "preflight",
        *each(("storage", "dns", "keycloak", "platform"), ("infer",)),
        "verify",
    ]
    nodes = next(o for o in report.outcomes if o.name == "nodes")
    assert nodes.status == "done"
    storage = next(o for o in report.outcomes if o.name == "storage")
    assert storage.clusters == {"train": "done", "infer": "ok"}
    assert journal(ctx).data.bootstrap == "ok"


def test_a_failed_result_on_one_cluster_fails_the_report(ctx: PhaseContext) -> None:
    calls: list[str] = []
    phases = fakes(calls, keycloak={"fail_on": {"train"}})
    report = bootstrap.apply(ctx, phases, list(PHASE_ORDER), journal(ctx))
    assert not report.ok
    assert "platform@train" not in calls and "platform@infer" in calls and "verify" not in calls
    keycloak = next(o for o in report.outcomes if o.name == "keycloak")
    assert (keycloak.status, keycloak.clusters) == ("failed", {"train": "failed", "infer": "ok"})
    assert "train: train broke" in keycloak.message


def test_resume_reruns_a_cluster_whose_inputs_changed_and_its_dependents(
    ctx: PhaseContext,
) -> None:
    calls: list[str] = []
    bootstrap.apply(ctx, fakes(calls, verify={"raise_on": {}}), list(PHASE_ORDER), journal(ctx))
    journal_now = journal(ctx)
    journal_now.data.bootstrap = "failed"  # as after a failed verify
    journal_now.save()
    calls.clear()
    # Only train's storage inputs changed, and the re-run changes train's storage again: train's
    # phases that depend on storage run again, infer's stay done.
    phases = fakes(calls, storage={"inputs_of": {"train": "v2"}, "changes_on": {"train"}})
    report = bootstrap.apply(ctx, phases, list(PHASE_ORDER), journal(ctx))
    assert report.ok
    assert calls == ["preflight", "storage@train", "keycloak@train", "platform@train", "verify"]


def test_destroy_one_cluster_leaves_the_rest_of_the_site(ctx: PhaseContext) -> None:
    calls: list[str] = []
    phases = fakes(calls)
    bootstrap.apply(ctx, phases, list(PHASE_ORDER), journal(ctx))
    calls.clear()
    plans = bootstrap.destroy_plan(ctx, phases, list(PHASE_ORDER), purge=False, clusters=["infer"])
    assert [n for p in plans for n in p.notes] == [
        f"destroy {p}@infer" for p in reversed(CLUSTER_PHASES)
    ]
    report = bootstrap.destroy(ctx, phases, list(PHASE_ORDER), journal(ctx), clusters=["infer"])
    assert report.ok
    assert calls == [f"destroy:{p}@infer" for p in reversed(CLUSTER_PHASES)]
    data = journal(ctx).data
    assert "infer" not in data.clusters
    assert sorted(data.clusters["train"]) == sorted(CLUSTER_PHASES)
    assert data.bootstrap == "ok"
    assert set(data.phases) == set(PHASE_ORDER)  # train still has every phase
    assert "platform/infer" not in data.versions and "platform/train" in data.versions
    view = bootstrap.site_status(load_inventory(MULTI), data)
    assert view["clusters"]["infer"]["platform"]["state"] == "never"
    assert view["clusters"]["train"]["platform"]["state"] == "ok"
    # A later bootstrap puts infer back and leaves train's phases alone while resuming.
    data.bootstrap = "failed"
    journal_now = journal(ctx)
    journal_now.data = data
    journal_now.save()
    calls.clear()
    bootstrap.apply(ctx, phases, list(PHASE_ORDER), journal(ctx))
    assert [c for c in calls if "@" in c] == each(CLUSTER_PHASES, ("infer",))


def test_destroy_of_the_whole_site_clears_every_clusters_entries(ctx: PhaseContext) -> None:
    calls: list[str] = []
    phases = fakes(calls)
    bootstrap.apply(ctx, phases, list(PHASE_ORDER), journal(ctx))
    calls.clear()
    bootstrap.destroy(ctx, phases, list(PHASE_ORDER), journal(ctx))
    # Unnarrowed: each phase once, on every cluster at a time.
    assert calls == [f"destroy:{p}" for p in reversed(PHASE_ORDER)]
    data = journal(ctx).data
    assert data.clusters == {} and data.phases == {} and data.bootstrap == "none"


def _destroy_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path / "logs"),
         "destroy", "-i", str(MULTI), "--yes", *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, check=False,
    )  # fmt: skip


def test_destroy_cluster_names_an_unknown_cluster_and_refuses_purge(tmp_path: Path) -> None:
    unknown = _destroy_cli(tmp_path, "--cluster", "nope")
    assert unknown.returncode == 2, unknown.stderr
    assert "cluster nope is not in the inventory" in unknown.stderr
    assert "clusters: train, infer" in unknown.stderr
    purge = _destroy_cli(tmp_path, "--cluster", "infer", "--purge")
    assert purge.returncode == 2, purge.stderr
    assert "--purge deletes the hub's data" in purge.stderr
