"""A preset's test pod must start on its node, not only be scheduled (acceptance._start)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from installer.checks import acceptance
from installer.engines.kube import PodState


class ScriptedKube:
    """The pod's states one read after another (the last one repeats), and its warnings."""

    def __init__(self, states: Iterable[PodState | None], warnings: Iterable[str] = ()) -> None:
        self.states = list(states)
        self.warnings = list(warnings)
        self.reads = 0

    def pod(self, namespace: str, name: str) -> PodState | None:
        self.reads += 1
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def pod_warnings(self, namespace: str, name: str) -> list[str]:
        return self.warnings


def state(started: bool = False, waiting: str | None = None, phase: str = "Pending") -> PodState:
    return PodState("p", "live-1", phase, None, started=started, waiting=waiting)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acceptance.time, "sleep", lambda _s: None)


def test_a_pod_whose_containers_start_passes() -> None:
    kube = ScriptedKube([state(started=True)])
    first = state(waiting="ContainerCreating")
    assert acceptance._start(kube, "ns", first) is None  # type: ignore[arg-type]
    assert kube.reads == 1


def test_a_failed_pull_is_the_answer_at_once() -> None:
    pulling = "ErrImagePull: failed to pull hub:5000/docker.io/library/busybox:latest: x509"
    kube = ScriptedKube([state(waiting=pulling)])
    assert acceptance._start(kube, "ns", state(waiting=pulling)) == pulling  # type: ignore[arg-type]


def test_a_sandbox_the_runtime_cannot_make_is_the_answer() -> None:
    event = "FailedCreatePodSandBox: failed to get sandbox image registry.k8s.io/pause:3.6"
    kube = ScriptedKube([state(waiting="ContainerCreating")], ["Scheduled: x", event])
    first = state(waiting="ContainerCreating")
    assert acceptance._start(kube, "ns", first) == event  # type: ignore[arg-type]


def test_a_pod_that_never_starts_times_out_naming_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(acceptance, "START_WAIT_S", 0.0)
    kube = ScriptedKube([state(waiting="ContainerCreating")])
    why = acceptance._start(kube, "ns", state(waiting="ContainerCreating"))  # type: ignore[arg-type]
    assert why == "not started within 0s (ContainerCreating)"


def test_a_pod_gone_before_it_started_is_named() -> None:
    kube = ScriptedKube([None])
    why = acceptance._start(kube, "ns", state(waiting="ContainerCreating"))  # type: ignore[arg-type]
    assert why == "the pod disappeared before it started"
