"""Fixtures of the artifact hub tests (until the root conftest registers tests.fixtures.auxvm)."""

from tests.fixtures.auxvm import *  # noqa: F403
