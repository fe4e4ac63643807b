"""The hub's integration modules share one provisioned hub for the session.

Provisioning the VM (and purging it afterwards) is most of these modules' time, and each module
used to do it once. They are in the lab site's lane (tests/conftest.py: one pytest-xdist worker,
first in that lane), so the session-scoped hub below holds the site lock (re-entrant within the
worker) for that worker alone; every test leaves the hub as it found it, as it did within a module.
The e2e modules that come after it in the lane find this hub and keep it.
"""

from __future__ import annotations

import pytest

from tests.fixtures.auxvm import Hub


@pytest.fixture
def provisioned_hub(session_hub: Hub) -> Hub:
    """One provisioned hub for every module of tests/integration/auxvm (the session's)."""
    return session_hub
