"""Node taints the installer owns, as a Pulumi dynamic resource.

Why not `NodePatch` for taints: `spec.taints` of a Node is an atomic list under server-side
apply. Whoever applies it owns the whole list: applying only the installer's taints would drop
every other taint (the kubelet's, the GPU operator's, an operator's `kubectl taint`), and
deleting the patch relinquishes the list, which removes it entirely. So taints are changed by a
read-modify-write JSON patch guarded by the node's resourceVersion: add or replace exactly the
installer's taints (identity: key and effect), remove exactly those on update or delete, keep
every other taint as it is. Labels stay with `NodePatch` (maps are per-key under SSA).
"""

from __future__ import annotations

import time
from typing import Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from installer.stacks.common import FIELD_MANAGER

_ATTEMPTS = 8
_TIMEOUT_S = 30


def _identity(taint: dict[str, Any]) -> tuple[str, str]:
    return (str(taint["key"]), str(taint["effect"]))


def merge_taints(
    current: list[dict[str, Any]],
    remove: list[dict[str, Any]],
    add: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """`current` without the taints in `remove` (by key and effect), with those in `add` set.

    Taints of others keep their place and their fields (timeAdded included).

    >>> merge_taints([{"key": "a", "effect": "NoSchedule"}], [], [{"key": "b", "value": "",
    ...     "effect": "NoSchedule"}])  # doctest: +NORMALIZE_WHITESPACE
    [{'key': 'a', 'effect': 'NoSchedule'}, {'key': 'b', 'value': '', 'effect': 'NoSchedule'}]
    """
    drop = {_identity(t) for t in remove} | {_identity(t) for t in add}
    kept = [t for t in current if _identity(t) not in drop]
    ours = [{"key": t["key"], "value": t.get("value", ""), "effect": t["effect"]} for t in add]
    return kept + ours


def _api(props: dict[str, Any]) -> Any:
    from kubernetes import client, config

    api_client = config.new_client_from_config(
        config_file=props["kubeconfig"], context=props.get("context") or None
    )
    return client.CoreV1Api(api_client)


def _as_dicts(taints: Any) -> list[dict[str, Any]]:
    out = []
    for taint in taints or []:
        item = {"key": taint.key, "effect": taint.effect}
        if taint.value is not None:
            item["value"] = taint.value
        if taint.time_added is not None:
            item["timeAdded"] = taint.time_added.isoformat().replace("+00:00", "Z")
        out.append(item)
    return out


def change_node_taints(
    props: dict[str, Any], remove: list[dict[str, Any]], add: list[dict[str, Any]]
) -> None:
    """Apply `merge_taints` to the live node, retrying when someone else changed it meanwhile."""
    from kubernetes.client.exceptions import ApiException

    api = _api(props)
    name = props["node"]
    for attempt in range(_ATTEMPTS):
        node = api.read_node(name, _request_timeout=_TIMEOUT_S)
        current = _as_dicts(node.spec.taints)
        wanted = merge_taints(current, remove, add)
        if wanted == current:
            return
        patch = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": node.metadata.resource_version,
            },
            {"op": "add", "path": "/spec/taints", "value": wanted},
        ]
        try:
            api.patch_node(name, patch, field_manager=FIELD_MANAGER, _request_timeout=_TIMEOUT_S)
            return
        except ApiException as exc:
            # 409/422: the node changed between read and write (the test op failed); read again.
            if exc.status not in (409, 422) or attempt == _ATTEMPTS - 1:
                raise RuntimeError(
                    f"node {name}: cannot change taints: {exc.status} {exc.reason}"
                ) from None
            time.sleep(0.2 * (attempt + 1))


def _outs(props: dict[str, Any]) -> dict[str, Any]:
    return {k: props.get(k) for k in ("node", "kubeconfig", "context", "taints")}


class NodeTaintsProvider(ResourceProvider):
    """CRUD for the installer's taints on one node."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        change_node_taints(props, [], list(props["taints"]))
        return CreateResult(id_=str(props["node"]), outs=_outs(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [
            k for k in ("node", "kubeconfig", "context", "taints") if olds.get(k) != news.get(k)
        ]
        return DiffResult(
            changes=bool(changed),
            replaces=["node"] if "node" in changed else [],
            delete_before_replace=True,
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        change_node_taints(news, list(olds.get("taints") or []), list(news["taints"]))
        return UpdateResult(outs=_outs(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            change_node_taints(props, list(props.get("taints") or []), [])
        except ApiException as exc:
            if exc.status != 404:  # a node that is gone has no taints left to remove
                raise

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        # Refresh reports which of the installer's taints are still on the node, so the next
        # update puts back the ones someone removed.
        node = _api(props).read_node(id_, _request_timeout=_TIMEOUT_S)
        live = {(t["key"], t["effect"]): t for t in _as_dicts(node.spec.taints)}
        present = [
            t
            for t in props.get("taints") or []
            if (t["key"], t["effect"]) in live
            and live[(t["key"], t["effect"])].get("value", "") == t.get("value", "")
        ]
        return ReadResult(id_=id_, outs={**_outs(props), "taints": present})


class NodeTaints(Resource):
    """The installer's taints on one node (read-modify-write; others' taints untouched)."""

    node: pulumi.Output[str]
    taints: pulumi.Output[list[dict[str, str]]]

    def __init__(
        self,
        name: str,
        *,
        node: str,
        taints: list[dict[str, str]],
        kubeconfig: str,
        context: str | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            NodeTaintsProvider(),
            name,
            {"node": node, "taints": taints, "kubeconfig": kubeconfig, "context": context},
            opts,
        )
