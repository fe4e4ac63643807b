"""Shared test set-up. Fixtures live in tests/fixtures/, one module per area.

`make test` runs every tier in one pytest-xdist session (`--dist loadgroup`) in lanes:

- `lab-site`: every test that changes or reads the lab's one site (its VM and hub, its cluster,
  its upstream): the hub's integration modules, then the e2e tier. One worker, in this order,
  because they share one VM and one cluster; it is the longest lane, so it starts first.
- `own-labs`: the stacks' e2e modules, on a cluster of their own (tests/e2e/stacks/conftest.py),
  except those marked `lab_site` (they need the site's hub), and the modules marked `own_lab`
  (they start copies of the lab's components on ports, state and names of their own).
- everything else (unit, the other integration tests) spreads over the remaining workers.

`make test` (scripts/test) runs the whole-site bootstrap modules, the site with both clusters and
the nodes' image pulls (tests/e2e/bootstrap, tests/e2e/multicluster, tests/e2e/nodes) in a second
session beside this one, on the lab's second site (`LAB_SITE=b`, tests/fixtures/lab.py); run
with paths, one session runs them here, in the lab site's lane.

The lab site's lane is the run's critical path; on a two-core machine the other lanes would
slow it down, so a worker gives itself a lower priority (`nice`) before its first test of
another lane (the processes it starts inherit it).
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.inventories",
    "tests.fixtures.lab",
    "tests.fixtures.lab_services",
    "tests.fixtures.registries",
    "tests.fixtures.hubservices",
    "tests.fixtures.auxvm",
]

LAB_SITE = "lab-site"
OWN_LABS = "own-labs"
_ORDER = {LAB_SITE: 0, OWN_LABS: 1, None: 2}
OTHER_LANES_NICE = 10
_niced: list[bool] = []


def lane(item: pytest.Item) -> str | None:
    """The lane (pytest-xdist group) of a test, from where it lives and its marks."""
    parts = item.nodeid.split("::", 1)[0].split("/")
    if parts[:3] == ["tests", "integration", "auxvm"]:
        return LAB_SITE
    if parts[:2] == ["tests", "e2e"]:
        if item.get_closest_marker("own_lab") is not None:
            return OWN_LABS
        if parts[2:3] == ["stacks"] and item.get_closest_marker("lab_site") is None:
            return OWN_LABS
        return LAB_SITE
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put each test in its lane (before pytest-xdist reads the groups) and the lanes in order:
    the lab site's first (integration, then e2e), the own labs' next, the rest last."""
    lanes = {id(item): lane(item) for item in items}
    for item in items:
        name = lanes[id(item)]
        if name is not None:
            item.add_marker(pytest.mark.xdist_group(name))
    # Within the lab site's lane the hub's integration modules go first: their session-wide hub
    # is then the one the e2e modules that want a hub find (and keep) before the whole-site
    # runs take the VM back to nothing.
    items.sort(
        key=lambda item: (_ORDER[lanes[id(item)]], not item.nodeid.startswith("tests/integration"))
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """In a pytest-xdist worker, before its first test outside the lab site's lane: nice."""
    if not _niced and os.environ.get("PYTEST_XDIST_WORKER") and lane(item) != LAB_SITE:
        os.nice(OTHER_LANES_NICE)
        _niced.append(True)
