"""Taint ownership survives a run killed before Pulumi saved its state: it is on the node too."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from installer.stacks.taints import OWNERSHIP_ANNOTATION, change_node_taints, read_node

JOB = {"key": "platform.neuromation.io/job", "value": "true", "effect": "NoSchedule"}
GPU = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def _apply(doc: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON patch operations the taint code sends (test, add, remove), as the API does."""
    doc = copy.deepcopy(doc)
    for op in patch:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        target = doc
        for part in parents:
            target = target[part]
        if op["op"] == "test":
            if target[last] != op["value"]:
                raise ApiException(status=422, reason="the test operation failed")
        elif op["op"] == "add":
            target[last] = op["value"]
        elif op["op"] == "remove":
            del target[last]
        else:  # pragma: no cover
            raise AssertionError(op)
    return doc


class FakeNodes:
    """read_node / patch_node over one node held as a JSON document (JSON patch applied)."""

    def __init__(self, taints_: list[dict[str, str]], annotations: dict[str, str] | None) -> None:
        self.doc: dict[str, Any] = {
            "metadata": {"resourceVersion": "1", "annotations": annotations},
            "spec": {"taints": taints_},
        }

    def read_node(self, name: str, **_: Any) -> Any:
        """As the client answers with `_preload_content=False`: the API's JSON."""
        return SimpleNamespace(data=json.dumps(self.doc).encode())

    def patch_node(self, name: str, patch: list[dict[str, Any]], **_: Any) -> None:
        self.doc = _apply(self.doc, patch)
        self.doc["metadata"]["resourceVersion"] = str(
            int(self.doc["metadata"]["resourceVersion"]) + 1
        )

    @property
    def taints(self) -> list[dict[str, str]]:
        return list(self.doc["spec"]["taints"] or [])

    @property
    def record(self) -> dict[str, Any] | None:
        text = (self.doc["metadata"].get("annotations") or {}).get(OWNERSHIP_ANNOTATION)
        return json.loads(text) if text else None


@pytest.fixture
def node() -> FakeNodes:
    return FakeNodes([GPU], {"kwok.x-k8s.io/node": "fake"})


def test_the_installer_records_what_it_owns_on_the_node(node: FakeNodes) -> None:
    plan = change_node_taints(node, "n1", [JOB, GPU], [], [])
    assert node.taints == [GPU, JOB]
    assert plan.owned == [JOB]
    assert node.record == {"owned": [JOB], "displaced": []}
    change_node_taints(node, "n1", [], plan.owned, plan.displaced)
    assert node.taints == [GPU]  # the GPU operator's taint stays
    assert node.record is None


def test_a_create_whose_result_was_lost_takes_its_taints_back(node: FakeNodes) -> None:
    # A killed run patched the node, then died before Pulumi saved the create: the re-run's
    # create starts with nothing owned in the state.
    change_node_taints(node, "n1", [JOB, GPU], [], [])
    again = change_node_taints(node, "n1", [JOB, GPU], [], [])
    assert again.owned == [JOB]
    change_node_taints(node, "n1", [], again.owned, again.displaced)
    assert node.taints == [GPU]


def test_a_second_run_does_not_write_the_node(node: FakeNodes) -> None:
    plan = change_node_taints(node, "n1", [JOB, GPU], [], [])
    version = node.doc["metadata"]["resourceVersion"]
    change_node_taints(node, "n1", [JOB, GPU], plan.owned, plan.displaced)
    assert node.doc["metadata"]["resourceVersion"] == version


def test_a_node_read_before_someone_changed_it_is_read_again(node: FakeNodes) -> None:
    # The nodes come from one list; the operator's taint lands before the installer writes.
    listed = read_node(node, "n1")
    theirs = {"key": "example.com/maintenance", "value": "", "effect": "NoSchedule"}
    node.patch_node("n1", [{"op": "add", "path": "/spec/taints", "value": [GPU, theirs]}])
    plan = change_node_taints(node, "n1", [JOB], [], [], node=listed)
    assert node.taints == [GPU, theirs, JOB]
    assert plan.owned == [JOB]
