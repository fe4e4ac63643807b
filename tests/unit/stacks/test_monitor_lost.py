"""A stack run whose inline program lost the engine's resource monitor before any step is run
once more; any other failure, a failure after a step, or a second loss is raised."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pulumi.automation import CommandResult, errors

from installer.engines.pulumi import MONITOR_LOST, ResourceChange, _once_more_if_monitor_lost

LOST = (
    "pulumi:pulumi:Stack onprem-dns-lab  error: Resource monitor has terminated, shutting down\n"
    "error: Exception calling application: Resource monitor has terminated, shutting down\n"
)


def failing(*outcomes: str | None) -> tuple[Callable[[], Any], list[int]]:
    """A run that fails with each stderr in turn (None: succeeds); and its call count."""
    calls = [0]

    def run() -> Any:
        outcome = outcomes[calls[0]]
        calls[0] += 1
        if outcome is None:
            return "result"
        raise errors.CommandError(CommandResult(stdout="", stderr=outcome, code=255))

    return run, calls


def test_lost_before_any_step_runs_once_more() -> None:
    assert MONITOR_LOST in LOST
    run, calls = failing(LOST, None)
    assert _once_more_if_monitor_lost(run, [], "onprem-dns/lab up") == "result"
    assert calls[0] == 2


def test_lost_twice_is_raised() -> None:
    run, calls = failing(LOST, LOST)
    with pytest.raises(errors.CommandError):
        _once_more_if_monitor_lost(run, [], "onprem-dns/lab up")
    assert calls[0] == 2


def test_lost_after_a_step_is_raised() -> None:
    run, calls = failing(LOST, None)
    step = ResourceChange(op="create", urn="urn:x", type="kubernetes:core/v1:Namespace", name="x")
    with pytest.raises(errors.CommandError):
        _once_more_if_monitor_lost(run, [step], "onprem-dns/lab up")
    assert calls[0] == 1


def test_any_other_failure_is_raised_at_once() -> None:
    run, calls = failing("error: configured Kubernetes cluster is unreachable", None)
    with pytest.raises(errors.CommandError):
        _once_more_if_monitor_lost(run, [], "onprem-storage/infer up")
    assert calls[0] == 1
