"""Node taints the installer owns: the arithmetic and the guarded write (see `nodemarks`).

Why not server-side apply for taints: `spec.taints` of a Node is an atomic list under SSA.
Whoever applies it owns the whole list: applying only the installer's taints would drop every
other taint (the kubelet's, the GPU operator's, an operator's `kubectl taint`), and
deleting the patch relinquishes the list, which removes it entirely. So taints are changed by a
read-modify-write JSON patch guarded by the node's resourceVersion: add or replace exactly the
installer's taints (identity: key and effect), remove exactly those on update or delete, keep
every other taint as it is. Labels do go by SSA (maps are owned per key).

What the installer owns is also written on the node, in the annotation `OWNERSHIP_ANNOTATION`,
by the same guarded patch as the taints. The stack's state alone is not enough: a run killed
after the patch but before Pulumi saved the resource's result loses the ownership with the
pending create, and the re-run would then find the taint "already there" and never remove it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from installer.stacks.common import FIELD_MANAGER

_ATTEMPTS = 8
_TIMEOUT_S = 30
OWNERSHIP_ANNOTATION = "onprem-installer/taints"
"""`{"owned": [...], "displaced": [...]}` of the installer's taints on this node."""


Taint = dict[str, Any]


def _identity(taint: Taint) -> tuple[str, str]:
    return (str(taint["key"]), str(taint["effect"]))


def _clean(taint: Taint) -> Taint:
    return {"key": taint["key"], "value": taint.get("value", ""), "effect": taint["effect"]}


@dataclass(frozen=True)
class TaintPlan:
    """A node's taints after a change, and what the installer owns among them."""

    taints: list[Taint]
    owned: list[Taint]
    displaced: list[Taint]


def reconcile_taints(
    current: list[Taint], desired: list[Taint], owned: list[Taint], displaced: list[Taint]
) -> TaintPlan:
    """The node's taints with `desired` in place, touching nothing the installer does not own.

    Identity is key and effect. A desired taint already on the node with the same value (the
    GPU operator's `nvidia.com/gpu`, say) stays its owner's: the installer does not own it and
    will not remove it. One with another value is taken over and its original kept in
    `displaced`, to be put back when the installer lets go. Owned taints no longer desired are
    removed (their displaced originals restored). Others' taints keep their place and fields.

    >>> plan = reconcile_taints([{"key": "a", "effect": "NoSchedule"}], [{"key": "b",
    ...     "value": "", "effect": "NoSchedule"}], [], [])
    >>> [t["key"] for t in plan.taints], [t["key"] for t in plan.owned]
    (['a', 'b'], ['b'])
    """
    wanted = {_identity(t) for t in desired}
    result = list(current)
    for taint in owned:
        if _identity(taint) in wanted:
            continue
        result = [t for t in result if _identity(t) != _identity(taint)]
        result += [_clean(d) for d in displaced if _identity(d) == _identity(taint)]
    owned_ids = {_identity(t) for t in owned if _identity(t) in wanted}
    new_owned: list[Taint] = []
    new_displaced = [d for d in displaced if _identity(d) in wanted]
    for taint in map(_clean, desired):
        here = next((t for t in result if _identity(t) == _identity(taint)), None)
        if here is None:
            result.append(taint)
            new_owned.append(taint)
        elif here.get("value", "") == taint["value"]:
            if _identity(taint) in owned_ids:
                new_owned.append(taint)
        else:
            if _identity(taint) not in owned_ids:
                new_displaced.append(_clean(here))
            result = [taint if _identity(t) == _identity(taint) else t for t in result]
            new_owned.append(taint)
    return TaintPlan(taints=result, owned=new_owned, displaced=new_displaced)


def read_node(api: Any, name: str) -> dict[str, Any]:
    """Node `name` as the API serves it (JSON, not the client's models: a thousand nodes' models
    cost seconds of CPU and hundreds of MB)."""
    response = api.read_node(name, _preload_content=False, _request_timeout=_TIMEOUT_S)
    node: dict[str, Any] = json.loads(response.data)
    return node


def _recorded(node: dict[str, Any]) -> tuple[list[Taint], list[Taint], str | None]:
    """What the node's ownership annotation says (owned, displaced) and its raw text."""
    text = (node["metadata"].get("annotations") or {}).get(OWNERSHIP_ANNOTATION)
    try:
        doc = json.loads(text) if text else {}
    except ValueError:
        doc = {}
    if not isinstance(doc, dict):
        doc = {}
    return list(doc.get("owned") or []), list(doc.get("displaced") or []), text


def _union(first: list[Taint], second: list[Taint]) -> list[Taint]:
    seen = {_identity(t) for t in first}
    return [*first, *(t for t in second if _identity(t) not in seen)]


def _record_ops(node: dict[str, Any], plan: TaintPlan, text: str | None) -> list[dict[str, Any]]:
    """JSON patch operations that leave the annotation matching `plan` (none if it does)."""
    wanted = (
        json.dumps({"owned": plan.owned, "displaced": plan.displaced}, sort_keys=True)
        if plan.owned or plan.displaced
        else None
    )
    if wanted == text:
        return []
    path = "/metadata/annotations/" + OWNERSHIP_ANNOTATION.replace("~", "~0").replace("/", "~1")
    if wanted is None:
        return [{"op": "remove", "path": path}]
    if node["metadata"].get("annotations") is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": {
            OWNERSHIP_ANNOTATION: wanted}}]  # fmt: skip
    return [{"op": "add", "path": path, "value": wanted}]


def change_node_taints(
    api: Any,
    name: str,
    desired: list[Taint],
    owned: list[Taint],
    displaced: list[Taint],
    node: dict[str, Any] | None = None,
) -> TaintPlan:
    """Apply `reconcile_taints` to the live node, retrying when someone changed it meanwhile.

    `api` is a `CoreV1Api`; `node`, when given, is the node as just read (a list's item, as the
    API's JSON): the first attempt uses it, and its resourceVersion guards the write as a fresh
    read's would. The installer owns what the stack's state says plus what the node's annotation
    says (the record of a run that died before its state was saved)."""
    from kubernetes.client.exceptions import ApiException

    for attempt in range(_ATTEMPTS):
        if node is None or attempt:
            node = read_node(api, name)
        current = [dict(t) for t in node.get("spec", {}).get("taints") or []]
        on_node, displaced_on_node, text = _recorded(node)
        plan = reconcile_taints(
            current, desired, _union(owned, on_node), _union(displaced, displaced_on_node)
        )
        record = _record_ops(node, plan, text)
        if plan.taints == current and not record:
            return plan
        patch = [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": node["metadata"]["resourceVersion"],
            },
            {"op": "add", "path": "/spec/taints", "value": plan.taints},
            *record,
        ]
        try:
            api.patch_node(name, patch, field_manager=FIELD_MANAGER, _request_timeout=_TIMEOUT_S)
            return plan
        except ApiException as exc:
            # 409/422: the node changed between read and write (the test op failed); read again.
            if exc.status not in (409, 422) or attempt == _ATTEMPTS - 1:
                raise RuntimeError(
                    f"node {name}: cannot change taints: {exc.status} {exc.reason}"
                ) from None
            time.sleep(0.2 * (attempt + 1))
    raise RuntimeError(f"node {name}: taints kept changing; giving up")  # pragma: no cover
