"""What the stacks need to know about a live cluster before a program runs: its nodes.

Read once per plan with the kubernetes client; every failure becomes a typed installer error
(a missing context or an unreachable API is an environment problem, exit 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from installer.errors import EnvironmentProblem
from installer.stacks.common import KubeTarget

_TIMEOUT_S = 15


@dataclass(frozen=True)
class LiveNode:
    """The facts of one node that pool membership and GPU checks read."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    allocatable: dict[str, str] = field(default_factory=dict)


def api_client(target: KubeTarget) -> Any:
    """A kubernetes ApiClient for `target`; EnvironmentProblem when the kubeconfig is unusable."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    path = Path(target.kubeconfig)
    if not path.is_file():
        raise EnvironmentProblem(
            f"kubeconfig {path} does not exist",
            remedy="set clusters[].kubeconfig in the inventory to the cluster's kubeconfig file",
        )
    try:
        return config.new_client_from_config(config_file=str(path), context=target.context)
    except ConfigException as exc:
        where = f"context {target.context!r}" if target.context else "its current context"
        raise EnvironmentProblem(
            f"kubeconfig {path}: cannot use {where}: {exc}",
            remedy="check clusters[].context against `kubectl config get-contexts`",
        ) from None


def unreachable(target: KubeTarget, exc: BaseException) -> EnvironmentProblem:
    """The error for an API that does not answer or refuses the installer."""
    status = getattr(exc, "status", None)
    if status in (401, 403):
        return EnvironmentProblem(
            f"the Kubernetes API of {target.kubeconfig} refused the installer ({status})",
            remedy="use a kubeconfig whose user may read and patch nodes",
        )
    reason = getattr(exc, "reason", None) or type(exc).__name__
    return EnvironmentProblem(
        f"the Kubernetes API of {target.kubeconfig} is unreachable: {reason}",
        remedy="check the API server address in the kubeconfig and that it is up",
    )


def read_nodes(target: KubeTarget) -> list[LiveNode]:
    """Every node of the cluster, sorted by name."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    api = client.CoreV1Api(api_client(target))
    try:
        listing = api.list_node(_request_timeout=_TIMEOUT_S)
    except (ApiException, HTTPError, OSError) as exc:
        raise unreachable(target, exc) from None
    nodes = [
        LiveNode(
            name=item.metadata.name,
            labels=dict(item.metadata.labels or {}),
            allocatable=dict((item.status.allocatable if item.status else None) or {}),
        )
        for item in listing.items
    ]
    return sorted(nodes, key=lambda n: n.name)
