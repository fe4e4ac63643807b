"""Air-gap integration tests: real registries on loopback (tests/fixtures/registries.py)."""

from tests.fixtures.hubservices import *  # noqa: F403
from tests.fixtures.registries import *  # noqa: F403
