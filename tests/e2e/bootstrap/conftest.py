"""What the whole-site modules share: the lab site's cluster side, given back once at the end.

The connected module leaves the site it installed converged, and the interrupted module starts
from it (its baseline bootstrap finds nothing to change) instead of installing the cluster side
again: `cluster_side_given_back` destroys it once, after the last module of this package that
asked for it. Run alone, each module still starts from whatever the site is and converges it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.bootstrap.cli import LAB_INVENTORY, installer, plain_env, site_lock
from tests.fixtures.lab import Lab


@pytest.fixture(scope="package")
def cluster_side_given_back(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the package: `destroy --skip auxvm` of the lab site (its stacks), so the
    lab's nodes are as the lab made them for the tests that come after."""
    del lab
    yield
    logs = tmp_path_factory.mktemp("cluster-side")
    with site_lock():
        rc, _, tail = installer(
            "destroy", "-i", str(LAB_INVENTORY), "--yes", "--skip", "auxvm",
            log_dir=logs, timeout=900, env=plain_env(),
        )  # fmt: skip
    assert rc == 0, f"destroy of the lab site's cluster side failed (exit {rc}):\n{tail}"
