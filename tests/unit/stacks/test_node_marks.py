"""`node-marks`: the provider touches only the nodes that change, gives back what it set, reads
drift node by node, names the nodes that fail; the engine's steps and the phase's changes name
the nodes."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from installer.engines.pulumi import ResourceChange, StackSummary, _dynamic_diffs
from installer.phases.stacks import StackPhase
from installer.stacks import nodemarks
from installer.stacks.nodemarks import NodeMarksProvider, changed_nodes, node_key
from installer.stacks.nodes import legacy_urns

JOB = {"key": "platform.neuromation.io/job", "value": "true", "effect": "NoSchedule"}
THEIRS = {"key": "example.com/theirs", "value": "", "effect": "NoSchedule"}


class FakeCluster:
    """Nodes as the provider sees them: a list, guarded taint writes, label applies (each
    applier's keys replace its previous ones, as server-side apply does)."""

    def __init__(self, names: list[str]) -> None:
        self.labels: dict[str, dict[str, str]] = {n: {"kubernetes.io/hostname": n} for n in names}
        self.taints: dict[str, list[dict[str, str]]] = {n: [] for n in names}
        self.applied: dict[str, set[str]] = {n: set() for n in names}
        self.writes: list[str] = []
        self.fail: set[str] = set()
        self.lock = threading.Lock()
        self.core = self

    def _node(self, name: str) -> dict[str, Any]:
        """The node as the API's JSON."""
        return {
            "metadata": {"name": name, "labels": dict(self.labels[name]), "resourceVersion": "1"},
            "spec": {"taints": [dict(t) for t in self.taints[name]]},
        }

    def nodes(self) -> dict[str, Any]:
        return {n: self._node(n) for n in self.labels}

    def read_node(self, name: str, **_: Any) -> Any:
        return SimpleNamespace(data=json.dumps(self._node(name)).encode())

    def patch_node(self, name: str, patch: list[dict[str, Any]], **_: Any) -> None:
        with self.lock:
            self.writes.append(name)
            for op in patch:
                if op["path"] == "/spec/taints":
                    self.taints[name] = [dict(t) for t in op["value"]]

    def apply_labels(self, name: str, labels: dict[str, str]) -> None:
        if name in self.fail:
            raise RuntimeError("403 Forbidden")
        with self.lock:
            self.writes.append(name)
            for key in self.applied[name] - labels.keys():
                self.labels[name].pop(key, None)
            self.labels[name].update(labels)
            self.applied[name] = set(labels)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    fake = FakeCluster([f"n{i}" for i in range(40)])
    monkeypatch.setattr(nodemarks, "_Api", lambda props: fake)
    return fake


def _props(nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"kubeconfig": "/k", "context": None, **{node_key(n): e for n, e in nodes.items()}}


def _entry(pool: str = "cpu", taints: bool = True) -> dict[str, Any]:
    return {"pool": pool, "labels": {"platform.apolo.us/pool": pool}, "taints": [JOB] * taints}


def test_create_marks_every_node_and_records_the_taints_it_owns(cluster: FakeCluster) -> None:
    props = _props({f"n{i}": _entry() for i in range(40)})
    outs = NodeMarksProvider().create(props).outs
    assert all(cluster.labels[f"n{i}"]["platform.apolo.us/pool"] == "cpu" for i in range(40))
    assert all(cluster.taints[f"n{i}"] == [JOB] for i in range(40))
    assert outs["owners"]["n7"] == {"owned": [JOB], "displaced": []}


def test_an_update_touches_only_the_nodes_that_changed(cluster: FakeCluster) -> None:
    provider = NodeMarksProvider()
    olds = provider.create(_props({f"n{i}": _entry() for i in range(40)})).outs
    cluster.writes.clear()
    nodes = {f"n{i}": _entry() for i in range(1, 40)}  # n0 leaves the pools
    nodes["n5"] = _entry("gpu")  # n5 moves to another pool
    news = _props(nodes)
    assert changed_nodes(olds, news) == ["n0", "n5"]
    assert provider.diff("node-marks", olds, news).changes is True
    outs = provider.update("node-marks", olds, news).outs
    assert sorted(set(cluster.writes)) == ["n0", "n5"]
    assert cluster.labels["n0"] == {"kubernetes.io/hostname": "n0"} and cluster.taints["n0"] == []
    assert cluster.labels["n5"]["platform.apolo.us/pool"] == "gpu"
    assert "n0" not in outs["owners"] and outs["owners"]["n9"] == olds["owners"]["n9"]
    assert provider.diff("node-marks", outs, news).changes is False


def test_delete_gives_back_exactly_what_was_set(cluster: FakeCluster) -> None:
    cluster.taints["n3"] = [THEIRS]
    props = _props({"n3": _entry(), "n4": _entry()})
    outs = NodeMarksProvider().create(props).outs
    NodeMarksProvider().delete("node-marks", outs)
    assert cluster.labels["n3"] == {"kubernetes.io/hostname": "n3"}
    assert cluster.taints["n3"] == [THEIRS]
    assert cluster.taints["n4"] == []


def test_read_shows_a_nodes_drift_in_that_nodes_entry_only(cluster: FakeCluster) -> None:
    provider = NodeMarksProvider()
    outs = provider.create(_props({"n1": _entry(), "n2": _entry()})).outs
    cluster.labels["n1"].pop("platform.apolo.us/pool")
    cluster.taints["n2"] = []
    read = provider.read("node-marks", outs).outs
    assert changed_nodes(read, outs) == ["n1", "n2"]
    assert read[node_key("n1")]["labels"] == {} and read[node_key("n2")]["taints"] == []
    cluster.writes.clear()
    provider.update("node-marks", read, outs)
    assert sorted(set(cluster.writes)) == ["n1", "n2"]
    assert provider.read("node-marks", outs).outs == {**outs}


def test_failed_nodes_are_named_after_every_node_was_tried(cluster: FakeCluster) -> None:
    cluster.fail = {"n2", "n30"}
    with pytest.raises(RuntimeError, match=r"2 of 40 node\(s\).*node n2: 403 Forbidden; node n30"):
        NodeMarksProvider().create(_props({f"n{i}": _entry() for i in range(40)}))
    assert cluster.labels["n31"]["platform.apolo.us/pool"] == "cpu"


def test_the_engine_names_the_changed_nodes_of_a_dynamic_update() -> None:
    state = SimpleNamespace
    meta = SimpleNamespace(
        op="update",
        type="pulumi-python:dynamic:Resource",
        old=state(
            inputs={"__provider": "p", "kubeconfig": "/k", "node:a": 1, "node:b": 2, "node:c": 3},
            outputs={"__provider": "p", "kubeconfig": "/k", "node:a": 0, "node:b": 2,
                     "node:c": 3, "owners": {}},
        ),
        new=state(inputs={"__provider": "q", "kubeconfig": "/k", "node:a": 1, "node:b": 2}),
    )  # fmt: skip
    assert _dynamic_diffs(meta) == ("node:a", "node:c")  # a drifted, c left
    assert _dynamic_diffs(SimpleNamespace(**{**vars(meta), "op": "create"})) == ()


def test_the_phase_reports_a_change_per_node() -> None:
    step = ResourceChange(
        op="update", urn="urn::node-marks", type="t", name="node-marks", diffs=("node:a", "node:c")
    )
    summary = StackSummary(component="nodes", stack="lab", action="preview", counts={},
                           steps=(step,))  # fmt: skip
    changes = StackPhase("nodes")._changes(summary)
    assert [(c.name, c.detail) for c in changes] == [
        ("node-marks", "node:a"),
        ("node-marks", "node:c"),
    ]


def test_an_older_installers_per_node_resources_are_found() -> None:
    base = "urn:pulumi:lab::onprem-nodes::onprem:nodes:NodePools$"
    resources = [
        {"urn": base + "kubernetes:core/v1:NodePatch::labels-cpu-1",
         "type": "kubernetes:core/v1:NodePatch"},
        {"urn": base + "pulumi-python:dynamic:Resource::taints-cpu-1",
         "type": "pulumi-python:dynamic:Resource"},
        {"urn": base + "pulumi-python:dynamic:Resource::node-marks",
         "type": "pulumi-python:dynamic:Resource"},
        {"urn": "urn:pulumi:lab::onprem-nodes::pulumi:pulumi:Stack::onprem-nodes-lab",
         "type": "pulumi:pulumi:Stack"},
    ]  # fmt: skip
    assert legacy_urns(resources) == [resources[0]["urn"], resources[1]["urn"]]
