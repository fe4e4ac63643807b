"""A thin typed adapter over the kubernetes client: connect, read, and the few writes checks need.

Every failure is a typed installer error: a kubeconfig or context that does not exist is bad
input (exit 2); an API that does not answer, or refuses the credentials, is an environment
problem (exit 3); any other API error is a failure carrying the server's message.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

from installer.errors import BadInputError, EnvironmentProblem, FailedError

log = logging.getLogger("installer.kube")
TIMEOUT_S = 15.0
T = TypeVar("T")

# The kubernetes client writes a kubeconfig's embedded certificate and key to temporary files it
# shares between loads of the same content, and records each file's name *before* writing it: a
# thread loading the same kubeconfig meanwhile gets the name of an empty file, and its first
# request fails with `[SSL] PEM lib`. Pulumi's dynamic providers call it from several threads at
# once, so every load in the installer goes through this lock.
_LOAD_LOCK = threading.Lock()


def load_configuration(kubeconfig: str | Path, context: str | None = None) -> Any:
    """The client `Configuration` of `kubeconfig` (and `context`, else its current one),
    loaded so that concurrent loads in one process never see each other's half-written files."""
    from kubernetes import client, config

    configuration = client.Configuration()
    with _LOAD_LOCK:
        config.load_kube_config(
            config_file=str(kubeconfig), context=context, client_configuration=configuration
        )
    return configuration


def api_client(kubeconfig: str | Path, context: str | None = None) -> Any:
    """A `kubernetes.client.ApiClient` for `kubeconfig` (see `load_configuration`)."""
    from kubernetes import client

    return client.ApiClient(load_configuration(kubeconfig, context))


@dataclass(frozen=True)
class NodeTaint:
    """A taint as the node carries it."""

    key: str
    value: str
    effect: str


@dataclass(frozen=True)
class NodeInfo:
    """What checks read of a node."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[NodeTaint, ...] = ()
    allocatable: Mapping[str, str] = field(default_factory=dict)
    ready: bool = False
    ready_message: str = ""
    unschedulable: bool = False
    internal_ip: str | None = None
    """The node's `InternalIP` address as the kubelet reports it."""


@dataclass(frozen=True)
class StorageClassInfo:
    """A StorageClass and whether it is the default."""

    name: str
    provisioner: str
    default: bool


@dataclass(frozen=True)
class DeploymentState:
    """Whether a Deployment is Available, with the condition's message."""

    name: str
    namespace: str
    available: bool
    message: str
    ready_replicas: int
    replicas: int


@dataclass(frozen=True)
class PodState:
    """Where a pod stands with the scheduler and its node."""

    name: str
    node: str | None
    phase: str
    unschedulable: str | None
    """The scheduler's message when it reported the pod Unschedulable."""
    started: bool = False
    """Every container of the pod runs or has run (its image was there and it was started)."""
    waiting: str | None = None
    """`<reason>: <message>` of the first container still waiting to start, if any."""


@dataclass(frozen=True)
class PodImages:
    """The images a pod runs and any of its containers waiting on a failed pull."""

    namespace: str
    name: str
    images: Mapping[str, str]
    """Container name (init containers too) -> image reference as the pod spec names it."""
    pull_failures: Mapping[str, str]
    """Container name -> `ErrImagePull` / `ImagePullBackOff: <message>` where it waits on one."""


PULL_FAILURE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
"""Why a container waits when its image cannot be pulled."""


@dataclass(frozen=True)
class AccessReview:
    """The answer to "may I <verb> <resource>?"."""

    allowed: bool
    reason: str


def _api_error(where: str, exc: BaseException) -> Exception:
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        if exc.status in (401, 403):
            return EnvironmentProblem(
                f"the Kubernetes API of {where} refused the installer ({exc.status} {exc.reason})",
                remedy="use a kubeconfig whose user has the rights preflight lists (kube.rbac)",
            )
        body = (exc.body or "").strip() if isinstance(exc.body, str) else ""
        detail = body[:300] or str(exc.reason)
        return FailedError(f"the Kubernetes API of {where} answered {exc.status}: {detail}")
    reason = getattr(exc, "reason", None) or exc
    return EnvironmentProblem(
        f"the Kubernetes API of {where} is unreachable: {reason}",
        remedy="check the server address in the kubeconfig, that the API server is up, and the"
        " network between here and it",
    )


class Kube:
    """One cluster's API, as one kubeconfig context sees it."""

    def __init__(self, api_client: Any, where: str) -> None:
        self._api = api_client
        self.where = where

    @classmethod
    def connect(cls, kubeconfig: Path, context: str | None = None) -> Kube:
        """Load `kubeconfig` (and `context`, else its current one). No request is made yet."""
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        if not kubeconfig.is_file():
            raise BadInputError(
                f"kubeconfig {kubeconfig} does not exist",
                remedy="set clusters[].kubeconfig to the cluster's kubeconfig file",
            )
        import yaml

        try:
            contexts, current = config.list_kube_config_contexts(config_file=str(kubeconfig))
        # TypeError: YAML that is not a mapping (a bare string), which the client indexes into.
        except (ConfigException, OSError, ValueError, TypeError, yaml.YAMLError) as exc:
            raise BadInputError(f"kubeconfig {kubeconfig} is not usable: {exc}") from None
        names = [c["name"] for c in contexts or []]
        if context is not None and context not in names:
            raise BadInputError(
                f"kubeconfig {kubeconfig} has no context {context!r}"
                f" (it has: {', '.join(names) or 'none'})",
                remedy="set clusters[].context to one of the file's contexts",
            )
        if context is None and not current:
            raise BadInputError(
                f"kubeconfig {kubeconfig} has no current context",
                remedy="set clusters[].context in the inventory",
            )
        try:
            configuration = load_configuration(kubeconfig, context)
        except (ConfigException, OSError, ValueError) as exc:
            raise BadInputError(f"kubeconfig {kubeconfig}: {exc}") from None
        configuration.retries = 1  # an unreachable API should fail in seconds, not minutes
        where = f"{kubeconfig}" + (f" (context {context})" if context else "")
        return cls(client.ApiClient(configuration), where)

    @property
    def server(self) -> str:
        """The API server URL."""
        return str(self._api.configuration.host)

    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        kwargs.setdefault("_request_timeout", TIMEOUT_S)
        try:
            return fn(*args, **kwargs)
        except (ApiException, HTTPError, OSError) as exc:
            raise _api_error(self.where, exc) from None

    def _optional(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """Like `_call`, but None when the object does not exist (404)."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        kwargs.setdefault("_request_timeout", TIMEOUT_S)
        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _api_error(self.where, exc) from None
        except (HTTPError, OSError) as exc:
            raise _api_error(self.where, exc) from None

    # --- reads -----------------------------------------------------------------------------

    def version(self) -> tuple[str, int, int, datetime | None]:
        """(gitVersion, major, minor, the server's clock from its Date header)."""
        from kubernetes import client

        # The raw response: the Date header comes with it (the client's *_with_http_info path
        # reads headers through a urllib3 call that is deprecated).
        response = self._call(client.VersionApi(self._api).get_code, _preload_content=False)
        try:
            data = json.loads(response.data)
        except ValueError:
            raise FailedError(f"the API of {self.where} answered /version with no JSON") from None
        major = int("".join(ch for ch in str(data.get("major")) if ch.isdigit()) or 0)
        minor = int("".join(ch for ch in str(data.get("minor")) if ch.isdigit()) or 0)
        date_header = response.headers.get("Date")
        server_time = parsedate_to_datetime(date_header) if date_header else None
        return str(data.get("gitVersion")), major, minor, server_time

    def can_i(
        self,
        verb: str,
        resource: str,
        group: str = "",
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> AccessReview:
        """SelfSubjectAccessReview: may this kubeconfig's user do it?"""
        from kubernetes import client

        body = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb,
                    resource=resource,
                    group=group,
                    namespace=namespace,
                    subresource=subresource,
                )
            )
        )
        review = self._call(
            client.AuthorizationV1Api(self._api).create_self_subject_access_review, body
        )
        status = review.status
        return AccessReview(
            bool(status.allowed), str(status.reason or status.evaluation_error or "")
        )

    def nodes(self) -> list[NodeInfo]:
        """Every node, sorted by name."""
        from kubernetes import client

        items = self._call(node_items, client.CoreV1Api(self._api))
        return sorted((_node(item) for item in items), key=lambda n: n.name)

    def storage_classes(self) -> list[StorageClassInfo]:
        """Every StorageClass, sorted by name."""
        from kubernetes import client

        listing = self._call(client.StorageV1Api(self._api).list_storage_class)
        key = "storageclass.kubernetes.io/is-default-class"
        return sorted(
            (
                StorageClassInfo(
                    name=item.metadata.name,
                    provisioner=str(item.provisioner),
                    default=(item.metadata.annotations or {}).get(key) == "true",
                )
                for item in listing.items
            ),
            key=lambda s: s.name,
        )

    def deployment(self, namespace: str, name: str) -> DeploymentState | None:
        """A Deployment's availability, or None when it does not exist."""
        from kubernetes import client

        item = self._optional(
            client.AppsV1Api(self._api).read_namespaced_deployment, name, namespace
        )
        if item is None:
            return None
        status = item.status
        available = next((c for c in status.conditions or [] if c.type == "Available"), None)
        return DeploymentState(
            name=name,
            namespace=namespace,
            available=available is not None and available.status == "True",
            message=str(available.message) if available is not None else "no Available condition",
            ready_replicas=int(status.ready_replicas or 0),
            replicas=int(item.spec.replicas if item.spec.replicas is not None else 1),
        )

    def pod(self, namespace: str, name: str) -> PodState | None:
        """Where the pod stands with the scheduler, or None when it is gone."""
        from kubernetes import client

        item = self._optional(client.CoreV1Api(self._api).read_namespaced_pod, name, namespace)
        if item is None:
            return None
        unschedulable = None
        for cond in item.status.conditions or []:
            if (cond.type, cond.status, cond.reason) == ("PodScheduled", "False", "Unschedulable"):
                unschedulable = str(cond.message or "unschedulable")
        statuses = item.status.container_statuses or []
        started = bool(statuses) and len(statuses) == len(item.spec.containers or [])
        waiting = None
        for cs in statuses:
            state = cs.state
            if state is None or not (state.running or state.terminated):
                started = False
            if state is not None and state.waiting is not None and waiting is None:
                waiting = f"{state.waiting.reason}: {state.waiting.message or ''}".strip(": ")
        return PodState(
            name=name,
            node=item.spec.node_name,
            phase=str(item.status.phase or ""),
            unschedulable=unschedulable,
            started=started,
            waiting=waiting,
        )

    def pod_warnings(self, namespace: str, name: str) -> list[str]:
        """`<reason>: <message>` of the Warning events of one pod, as the API lists them."""
        from kubernetes import client

        listing = self._call(
            client.CoreV1Api(self._api).list_namespaced_event,
            namespace,
            field_selector=f"involvedObject.kind=Pod,involvedObject.name={name},type=Warning",
        )
        return [f"{ev.reason}: {ev.message or ''}".strip(": ") for ev in listing.items]

    # --- writes (short-lived objects of the acceptance checks) --------------------------------

    def pod_images(self, namespace: str) -> list[PodImages]:
        """Every pod of `namespace` with its images and failed pulls, sorted by name."""
        from kubernetes import client

        listing = self._call(client.CoreV1Api(self._api).list_namespaced_pod, namespace)
        found = []
        for item in listing.items:
            spec, status = item.spec, item.status
            containers = [*(spec.init_containers or []), *(spec.containers or [])]
            failures = {}
            for cs in [
                *(status.init_container_statuses or []),
                *(status.container_statuses or []),
            ]:
                waiting = cs.state.waiting if cs.state is not None else None
                if waiting is not None and waiting.reason in PULL_FAILURE_REASONS:
                    failures[cs.name] = f"{waiting.reason}: {waiting.message or ''}".strip(": ")
            found.append(
                PodImages(
                    namespace=namespace,
                    name=item.metadata.name,
                    images={c.name: str(c.image) for c in containers},
                    pull_failures=failures,
                )
            )
        return sorted(found, key=lambda p: p.name)

    def pull_failure_events(self, namespace: str) -> list[tuple[str, str]]:
        """`(object, message)` of the events of `namespace` that report a failed image pull."""
        from kubernetes import client

        listing = self._call(client.CoreV1Api(self._api).list_namespaced_event, namespace)
        found = []
        for ev in listing.items:
            message = str(ev.message or "")
            pulling = "pull" in message.lower() and ev.reason in ("Failed", "BackOff")
            if ev.reason in PULL_FAILURE_REASONS or pulling:
                obj = ev.involved_object
                found.append((f"{(obj.kind or '').lower()}/{obj.name}", message))
        return found

    def create_namespace(self, name: str, labels: Mapping[str, str]) -> None:
        """Create a namespace (it must not exist)."""
        from kubernetes import client

        body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=dict(labels)))
        self._call(client.CoreV1Api(self._api).create_namespace, body)

    def delete_namespace(self, name: str) -> None:
        """Delete a namespace and everything in it (no error when it is already gone)."""
        from kubernetes import client

        self._optional(
            client.CoreV1Api(self._api).delete_namespace,
            name,
            body=client.V1DeleteOptions(propagation_policy="Background"),
        )

    def namespaces(self, label_selector: str, *, older_than_s: float = 0.0) -> list[str]:
        """Names of namespaces matching `label_selector`, created more than `older_than_s` ago."""
        from kubernetes import client

        listing = self._call(
            client.CoreV1Api(self._api).list_namespace, label_selector=label_selector
        )
        now = datetime.now(UTC)
        return sorted(
            item.metadata.name
            for item in listing.items
            if item.metadata.creation_timestamp is None
            or (now - item.metadata.creation_timestamp).total_seconds() >= older_than_s
        )

    def service_account_exists(self, namespace: str, name: str = "default") -> bool:
        """True once the ServiceAccount exists (pods are refused until `default` does)."""
        from kubernetes import client

        item = self._optional(
            client.CoreV1Api(self._api).read_namespaced_service_account, name, namespace
        )
        return item is not None

    def create_pod(self, namespace: str, manifest: Mapping[str, Any]) -> None:
        """Create a pod from a manifest (a dict as `kubectl apply` would read it)."""
        from kubernetes import client

        self._call(client.CoreV1Api(self._api).create_namespaced_pod, namespace, dict(manifest))

    def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod at once (no error when it is gone)."""
        from kubernetes import client

        self._optional(
            client.CoreV1Api(self._api).delete_namespaced_pod,
            name,
            namespace,
            grace_period_seconds=0,
        )

    def create_pvc(
        self, namespace: str, name: str, storage_class: str, size: str, labels: Mapping[str, str]
    ) -> None:
        """Create a ReadWriteOnce PersistentVolumeClaim."""
        from kubernetes import client

        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "labels": dict(labels)},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": storage_class,
                "resources": {"requests": {"storage": size}},
            },
        }
        self._call(
            client.CoreV1Api(self._api).create_namespaced_persistent_volume_claim, namespace, body
        )

    def pvc_phase(self, namespace: str, name: str) -> str | None:
        """A claim's phase (`Pending`, `Bound`), or None when it does not exist."""
        from kubernetes import client

        item = self._optional(
            client.CoreV1Api(self._api).read_namespaced_persistent_volume_claim, name, namespace
        )
        return None if item is None else str(item.status.phase or "")

    def close(self) -> None:
        """Release the connection pool."""
        self._api.close()


def node_items(core: Any, **request: Any) -> list[dict[str, Any]]:
    """Every node as the API's JSON (`core`: a `CoreV1Api`; `request`: the client's request
    options, `_request_timeout`). Not the client's models: at a thousand nodes they cost seconds
    of CPU (a configuration object and its loggers per model) and hundreds of MB."""
    response = core.list_node(_preload_content=False, **request)
    items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
    return items


def _node(item: dict[str, Any]) -> NodeInfo:
    """A node of a listing, from the API's JSON."""
    meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
    return NodeInfo(
        name=meta["name"],
        labels=dict(meta.get("labels") or {}),
        annotations=dict(meta.get("annotations") or {}),
        taints=tuple(
            NodeTaint(t["key"], t.get("value") or "", t["effect"]) for t in spec.get("taints") or []
        ),
        allocatable=dict(status.get("allocatable") or {}),
        ready=ready is not None and ready.get("status") == "True",
        ready_message=str(ready.get("message") or ready.get("reason") or "") if ready else "",
        unschedulable=bool(spec.get("unschedulable")),
        internal_ip=next(
            (
                str(a["address"])
                for a in status.get("addresses") or []
                if a.get("type") == "InternalIP"
            ),
            None,
        ),
    )


@contextmanager
def connected(kubeconfig: Path, context: str | None = None) -> Iterator[Kube]:
    """`Kube.connect` as a context manager that closes the pool."""
    kube = Kube.connect(kubeconfig, context)
    try:
        yield kube
    finally:
        kube.close()


def read_nodes(kubeconfig: Path, context: str | None = None) -> list[NodeInfo]:
    """Every node of a cluster, sorted by name: what the stacks' inputs read of a live cluster
    (pool membership, GPU facts), with the same errors as every other read."""
    with connected(kubeconfig, context) as kube:
        return kube.nodes()
