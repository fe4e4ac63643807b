"""What the Pulumi engine reads from the engine's event stream: counted steps and the stack's own
outputs (taken from its events, so that an update needs no further CLI run to read them)."""

from __future__ import annotations

from typing import Any

from pulumi.automation import events

from installer.engines.pulumi import ResourceChange, _collector

STACK_URN = "urn:pulumi:lab::onprem-keycloak::pulumi:pulumi:Stack::onprem-keycloak-lab"
REALM_URN = "urn:pulumi:lab::onprem-keycloak::keycloak:index/realm:Realm::realm"


def _outputs_event(urn: str, kind: str, op: str, outputs: dict[str, Any]) -> events.EngineEvent:
    new = {"urn": urn, "type": kind, "outputs": outputs, "inputs": {}}
    meta = {"op": op, "urn": urn, "type": kind, "provider": "", "new": new}
    return events.EngineEvent.from_json(
        {"sequence": 1, "timestamp": 1, "resOutputsEvent": {"metadata": meta}}
    )


def _pre_event(urn: str, kind: str, op: str) -> events.EngineEvent:
    meta = {"op": op, "urn": urn, "type": kind, "provider": "", "diffs": ["displayName"]}
    return events.EngineEvent.from_json(
        {"sequence": 1, "timestamp": 1, "resourcePreEvent": {"metadata": meta}}
    )


def test_the_stacks_outputs_come_from_its_events() -> None:
    steps: list[ResourceChange] = []
    outputs: dict[str, Any] = {}
    on_event = _collector(steps, None, outputs)
    on_event(_pre_event(REALM_URN, "keycloak:index/realm:Realm", "update"))
    # A resource's outputs are not the stack's.
    on_event(_outputs_event(REALM_URN, "keycloak:index/realm:Realm", "update", {"id": "apolo"}))
    on_event(
        _outputs_event(
            STACK_URN, "pulumi:pulumi:Stack", "same", {"realm": "apolo", "token": "[secret]"}
        )
    )
    assert outputs == {"realm": "apolo", "token": "[secret]"}
    assert [(s.op, s.name, s.diffs) for s in steps] == [("update", "realm", ("displayName",))]


def test_without_a_place_for_outputs_the_steps_are_still_counted() -> None:
    steps: list[ResourceChange] = []
    on_event = _collector(steps, None)
    on_event(_outputs_event(STACK_URN, "pulumi:pulumi:Stack", "same", {"realm": "apolo"}))
    on_event(_pre_event(REALM_URN, "keycloak:index/realm:Realm", "create"))
    assert [s.op for s in steps] == ["create"]
