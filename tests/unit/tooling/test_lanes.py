"""The lanes of `make test` (tests/conftest.py): which worker group each test lands in, and the
order the lanes start in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import LAB_SITE, OWN_LABS, lane, pytest_collection_modifyitems


@dataclass
class FakeItem:
    nodeid: str
    marks: list[str] = field(default_factory=list)
    added: list[Any] = field(default_factory=list)

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.marks else None

    def add_marker(self, mark: Any) -> None:
        self.added.append(mark)


@pytest.mark.parametrize(
    ("nodeid", "marks", "expected"),
    [
        ("tests/integration/auxvm/test_hub.py::test_x", [], LAB_SITE),
        ("tests/e2e/bootstrap/test_connected.py::test_x", [], LAB_SITE),
        ("tests/e2e/checks/test_hub_checks.py::test_x", [], LAB_SITE),
        ("tests/e2e/stacks/test_scale.py::test_x", [], OWN_LABS),
        ("tests/e2e/stacks/test_hand_run.py::test_x", ["lab_site"], LAB_SITE),
        ("tests/e2e/lab/test_second_lab.py::test_x", ["own_lab"], OWN_LABS),
        ("tests/e2e/lab/test_kube.py::test_x", [], LAB_SITE),
        ("tests/integration/airgap/test_files.py::test_x", [], None),
        ("tests/unit/test_inventory.py::test_x[a/b]", [], None),
    ],
)
def test_each_test_has_its_lane(nodeid: str, marks: list[str], expected: str | None) -> None:
    assert lane(FakeItem(nodeid, marks)) == expected  # type: ignore[arg-type]


def test_the_lab_sites_lane_comes_first_with_the_hubs_integration_modules_at_its_head() -> None:
    items = [
        FakeItem("tests/e2e/airgap/test_lab_round_trip.py::test_a"),
        FakeItem("tests/e2e/stacks/test_nodes.py::test_b"),
        FakeItem("tests/integration/airgap/test_files.py::test_c"),
        FakeItem("tests/integration/auxvm/test_hub.py::test_d"),
        FakeItem("tests/unit/test_x.py::test_e"),
        FakeItem("tests/e2e/bootstrap/test_connected.py::test_f"),
    ]
    pytest_collection_modifyitems(items)  # type: ignore[arg-type]
    assert [i.nodeid.rsplit("::", 1)[1] for i in items] == [
        "test_d", "test_a", "test_f", "test_b", "test_c", "test_e",
    ]  # fmt: skip
    groups = {i.nodeid.rsplit("::", 1)[1]: [m.kwargs.get("name") or m.args for m in i.added]
              for i in items}  # fmt: skip
    assert groups["test_d"] == [(LAB_SITE,)] and groups["test_b"] == [(OWN_LABS,)]
    assert groups["test_c"] == [] and groups["test_e"] == []
