"""The installer's labels and taints on a cluster's pool nodes, as one Pulumi dynamic resource.

Why one resource and not two per node: the engine spends about a quarter of a second on every
resource it steps through (registration, diff, the state's checkpoint), so a 1000-node site paid
minutes for each `up`, `preview` and `destroy` of the nodes stack. One resource, `node-marks`,
holds every pool node as a property of its own, `node:<name>` = `{pool, labels, taints}`: a diff
names exactly the nodes that change (the engine's step lists them, see
`installer.engines.pulumi`), and an update touches only those nodes, many at a time.

Labels go by server-side apply, field manager `FIELD_MANAGER`, forced: the installer is
authoritative for the keys it sets, other labels are never touched (a label map is owned per
key), and applying no labels gives back exactly the installer's keys. Taints go by the guarded
read-modify-write of `installer.stacks.taints` (an atomic list under SSA), with what the
installer owns on each node kept in the resource's `owners` output and on the node itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
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

from installer.engines.kube import load_configuration, node_items
from installer.stacks.common import FIELD_MANAGER
from installer.stacks.taints import Taint, change_node_taints

NODE_PREFIX = "node:"
"""Each pool node is the resource's property `node:<name>`."""

WORKERS = 16
"""Nodes changed at once (requests in flight to the API server)."""

_TIMEOUT_S = 30
_SETTINGS = ("kubeconfig", "context")
_SHOWN_FAILURES = 10


def node_key(name: str) -> str:
    """The resource's property holding node `name`."""
    return NODE_PREFIX + name


def _entries(props: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Node name -> `{pool, labels, taints}` of every node the properties hold."""
    return {k[len(NODE_PREFIX) :]: v for k, v in props.items() if k.startswith(NODE_PREFIX)}


def changed_nodes(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    """The nodes whose entry differs between `olds` and `news` (either side may lack it)."""
    old, new = _entries(olds), _entries(news)
    return sorted(n for n in old.keys() | new.keys() if old.get(n) != new.get(n))


class _Api:
    """One API client for an operation, sized for `WORKERS` requests at once."""

    def __init__(self, props: dict[str, Any]) -> None:
        from kubernetes import client

        configuration = load_configuration(props["kubeconfig"], props.get("context") or None)
        configuration.connection_pool_maxsize = WORKERS
        self.client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.client)

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Every node of the cluster by name, in one request (the API's JSON)."""
        return {
            n["metadata"]["name"]: n for n in node_items(self.core, _request_timeout=_TIMEOUT_S)
        }

    def apply_labels(self, name: str, labels: dict[str, str]) -> None:
        """Server-side apply of exactly `labels` on node `name` (none: give ours back)."""
        metadata: dict[str, Any] = {"name": name}
        if labels:
            metadata["labels"] = dict(labels)
        self.client.call_api(
            "/api/v1/nodes/{name}",
            "PATCH",
            path_params={"name": name},
            query_params=[("fieldManager", FIELD_MANAGER), ("force", True)],
            header_params={
                "Content-Type": "application/apply-patch+yaml",
                "Accept": "application/json",
            },
            body={"apiVersion": "v1", "kind": "Node", "metadata": metadata},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=_TIMEOUT_S,
        )


def _owners(props: dict[str, Any]) -> dict[str, dict[str, list[Taint]]]:
    return dict(props.get("owners") or {})


def _run_all(work: Callable[[str], Any], names: Iterable[str]) -> dict[str, Any]:
    """`work(name)` for every name, `WORKERS` at a time; the results by name. Every node is
    tried; failures are raised together afterwards, naming the nodes (the first few)."""
    names = list(names)
    results: dict[str, Any] = {}
    failures: list[str] = []

    def one(name: str) -> None:
        try:
            results[name] = work(name)
        except Exception as exc:  # noqa: BLE001 - reported below, node by node
            failures.append(f"node {name}: {_reason(exc)}")

    if names:
        with ThreadPoolExecutor(max_workers=min(WORKERS, len(names))) as pool:
            list(pool.map(one, names))
    if failures:
        failures.sort()
        more = len(failures) - _SHOWN_FAILURES
        shown = failures[:_SHOWN_FAILURES] + ([f"... and {more} more"] if more > 0 else [])
        raise RuntimeError(
            f"{len(failures)} of {len(names)} node(s) could not be changed: " + "; ".join(shown)
        )
    return results


def _reason(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    if status is not None:
        return f"{status} {getattr(exc, 'reason', '')}".strip()
    return str(exc) or type(exc).__name__


def _gone(exc: Exception) -> bool:
    return getattr(exc, "status", None) == 404


class NodeMarksProvider(ResourceProvider):
    """CRUD for the installer's labels and taints on every pool node of one cluster."""

    def _converge(
        self, props: dict[str, Any], owners: dict[str, Any], touch: list[str], release: list[str]
    ) -> dict[str, Any]:
        """Mark the nodes in `touch` as `props` says, give back what the installer set on the
        nodes in `release`; the new `owners` record."""
        api = _Api(props)
        live = api.nodes()
        wanted = _entries(props)

        def mark(name: str) -> dict[str, list[Taint]]:
            entry, had = wanted[name], owners.get(name) or {}
            plan = change_node_taints(
                api.core,
                name,
                list(entry.get("taints") or []),
                list(had.get("owned") or []),
                list(had.get("displaced") or []),
                node=live.get(name),
            )
            api.apply_labels(name, entry.get("labels") or {})
            return {"owned": plan.owned, "displaced": plan.displaced}

        def give_back(name: str) -> None:
            if name not in live:
                return  # a node that is gone has nothing left to give back
            had = owners.get(name) or {}
            try:
                change_node_taints(
                    api.core,
                    name,
                    [],
                    list(had.get("owned") or []),
                    list(had.get("displaced") or []),
                    node=live[name],
                )
                api.apply_labels(name, {})
            except Exception as exc:
                if not _gone(exc):
                    raise

        _run_all(give_back, release)
        done = _run_all(mark, touch)
        kept = {n: o for n, o in owners.items() if n in wanted and n not in done}
        return {n: o for n, o in sorted({**kept, **done}.items()) if o["owned"] or o["displaced"]}

    def create(self, props: dict[str, Any]) -> CreateResult:
        owners = self._converge(props, {}, sorted(_entries(props)), [])
        return CreateResult(id_="node-marks", outs={**props, "owners": owners})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = bool(changed_nodes(olds, news)) or any(
            olds.get(k) != news.get(k) for k in _SETTINGS
        )
        return DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        changed = changed_nodes(olds, news)
        wanted = _entries(news)
        touch = [n for n in changed if n in wanted]
        release = [n for n in changed if n not in wanted]
        owners = self._converge(news, _owners(olds), touch, release)
        return UpdateResult(outs={**news, "owners": owners})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        self._converge(
            {k: props.get(k) for k in _SETTINGS}, _owners(props), [], sorted(_entries(props))
        )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        # Refresh reports each node as it is: a label or taint of the installer's that someone
        # removed or changed shows in that node's entry, so the next update puts it back.
        live = _Api(props).nodes()
        outs = {k: v for k, v in props.items() if not k.startswith(NODE_PREFIX)}
        for name, entry in _entries(props).items():
            node = live.get(name)
            if node is None:
                continue
            labels = node["metadata"].get("labels") or {}
            taints = node.get("spec", {}).get("taints") or []
            have = {(t["key"], t["effect"]): t.get("value") or "" for t in taints}
            outs[node_key(name)] = {
                **entry,
                "labels": {k: labels[k] for k in entry.get("labels") or {} if k in labels},
                "taints": [
                    t
                    for t in entry.get("taints") or []
                    if have.get((t["key"], t["effect"])) == t.get("value", "")
                ],
            }
        return ReadResult(id_=id_, outs=outs)


class NodeMarks(Resource):
    """The installer's labels and taints on every pool node of one cluster."""

    def __init__(
        self,
        name: str,
        *,
        nodes: dict[str, dict[str, Any]],
        kubeconfig: str,
        context: str | None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, Any] = {"kubeconfig": kubeconfig, "context": context}
        props.update({node_key(n): entry for n, entry in sorted(nodes.items())})
        super().__init__(NodeMarksProvider(), name, props, opts)
