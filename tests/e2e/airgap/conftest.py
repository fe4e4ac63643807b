"""The air-gap round trip against the lab's upstream: the lab, its services, loopback targets."""

from tests.fixtures.auxvm import *  # noqa: F403
from tests.fixtures.hubservices import *  # noqa: F403
from tests.fixtures.lab import *  # noqa: F403
from tests.fixtures.lab_services import *  # noqa: F403
from tests.fixtures.registries import *  # noqa: F403
