"""What checks reach the site through: the VM over SSH, each cluster's API, the hub's services.

Connections are opened on first use, shared by the checks of one run (they run in parallel),
and closed by `close()`.
"""

from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from installer.checks.remote import SshHost
from installer.engines.kube import Kube
from installer.inventory import Inventory
from installer.inventory.models import Cluster, NodeSsh
from installer.site import hub_hostname
from installer.state import StateDir

ServiceKind = Literal["registry", "chartmuseum", "devpi"]
HTTP_TIMEOUT_S = 10.0

# What each hub service answers on a path that needs no login, and how to recognise it.
_HEALTH: dict[ServiceKind, str] = {"registry": "/v2/", "chartmuseum": "/health", "devpi": "/+api"}


@dataclass(frozen=True)
class ServiceAnswer:
    """What listens on a hub port: nothing, the expected service, or something else."""

    state: Literal["closed", "ours", "other-ca", "foreign"]
    """`other-ca`: it speaks TLS, but its certificate does not chain to the site CA."""
    detail: str


def tcp_open(address: str, port: int, timeout_s: float = 3.0) -> bool:
    """True when something accepts TCP connections on address:port."""
    try:
        with socket.create_connection((address, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def identify_service(
    kind: ServiceKind, address: str, port: int, ca_file: Path | None
) -> ServiceAnswer:
    """Is the hub service `kind` answering on address:port over TLS verified by `ca_file`?"""
    if not tcp_open(address, port):
        return ServiceAnswer("closed", f"nothing listens on {address}:{port}")
    if ca_file is None or not ca_file.is_file():
        return ServiceAnswer(
            "foreign", f"{address}:{port} is taken, and there is no site CA yet to trust it by"
        )
    context = ssl.create_default_context(cafile=str(ca_file))
    url = f"https://{address}:{port}{_HEALTH[kind]}"
    try:
        response = httpx.get(url, verify=context, timeout=HTTP_TIMEOUT_S)
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return ServiceAnswer(
                "other-ca", f"{url}: its certificate does not chain to the site CA ({exc})"
            )
        return ServiceAnswer("foreign", f"{url}: TLS or connection failed: {exc}")
    except httpx.HTTPError as exc:
        return ServiceAnswer("foreign", f"{url}: {type(exc).__name__}: {exc}")
    ok = False
    if kind == "registry":
        api = response.headers.get("Docker-Distribution-Api-Version", "")
        ok = response.status_code in (200, 401) and api.startswith("registry/2")
    elif kind == "chartmuseum":
        ok = response.status_code == 200 and '"healthy"' in response.text
    else:
        ok = response.status_code in (200, 401) and "application/json" in response.headers.get(
            "content-type", ""
        )
    if ok:
        return ServiceAnswer("ours", f"{url} answers as the {kind} (HTTP {response.status_code})")
    return ServiceAnswer(
        "foreign", f"{url} answers HTTP {response.status_code}, but not as the {kind}"
    )


def node_address(access: NodeSsh, node: str, internal_ip: str | None) -> str | None:
    """Where to reach `node` over SSH: its `addresses` entry, else (with `address_source:
    internal-ip`) the InternalIP the cluster reports; None when neither gives one.

    >>> node_address(NodeSsh.model_validate({"user": "ops", "private_key": "file:k",
    ...     "known_hosts": "kh", "addresses": {"a100-1": "10.0.0.9"}}), "a100-1", "10.1.1.1")
    '10.0.0.9'
    """
    listed = access.addresses.get(node)
    if listed is not None:
        return str(listed)
    if access.address_source == "internal-ip":
        return internal_ip
    return None


def why_no_address(access: NodeSsh, node: str) -> str:
    """Why `node_address` gave no address for `node` (for the checks' messages)."""
    if access.address_source == "addresses":
        return f"{node} is not in node_ssh.addresses (address_source: addresses)"
    return f"the cluster reports no InternalIP for {node}; add it to node_ssh.addresses"


@dataclass
class SiteAccess:
    """The live site as the checks of one run reach it."""

    inventory: Inventory
    bundle_size: int | None = None
    """The bytes of the bundle to load (every part of a split one), when one is given."""
    _vm: SshHost | None = field(default=None, init=False)
    _kube: dict[str, Kube] = field(default_factory=dict, init=False)
    _internal_ips: dict[str, dict[str, str | None]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def state(self) -> StateDir:
        """The installer's state folder."""
        return StateDir(Path(self.inventory.site.state_dir))

    @property
    def vm_address(self) -> str:
        """The VM's address."""
        return str(self.inventory.aux_vm.address)

    @property
    def hub_host(self) -> str:
        """The VM's DNS name."""
        return hub_hostname(self.inventory)

    def site_ca(self) -> Path | None:
        """The CA the hub's certificates chain to, when it exists yet."""
        tls = self.inventory.aux_vm.tls
        path = Path(tls.ca_cert) if tls.ca == "provided" and tls.ca_cert else self.state.ca_cert
        return path if path.is_file() else None

    def vm(self) -> SshHost:
        """The VM over SSH (one connection for the run)."""
        with self._lock:
            if self._vm is None:
                self._vm = SshHost(self.vm_address, self.inventory.aux_vm.ssh)
            return self._vm

    def node_host(
        self, cluster: Cluster, node: str, *, internal_ip: str | None = None
    ) -> SshHost | None:
        """`node` over SSH with `cluster.node_ssh`; None without node_ssh or an address.

        The address is the node's `addresses` entry, else its InternalIP: `internal_ip` when
        the caller has it, else read from the cluster (once per run).
        """
        access = cluster.node_ssh
        if access is None:
            return None
        if internal_ip is None and node not in access.addresses:
            if access.address_source == "addresses":
                return None
            internal_ip = self._internal_ip(cluster, node)
        address = node_address(access, node, internal_ip)
        if address is None:
            return None
        via = self.vm() if access.jump == "aux-vm" else None
        return SshHost(address, access, connect_timeout_s=access.timeout_s, via=via)

    def _internal_ip(self, cluster: Cluster, node: str) -> str | None:
        with self._lock:
            known = self._internal_ips.get(cluster.name)
        if known is None:
            known = {n.name: n.internal_ip for n in self.kube(cluster).nodes()}
            with self._lock:
                self._internal_ips[cluster.name] = known
        return known.get(node)

    def kube(self, cluster: Cluster) -> Kube:
        """The cluster's API (BadInputError for a bad kubeconfig or context)."""
        with self._lock:
            if cluster.name not in self._kube:
                self._kube[cluster.name] = Kube.connect(Path(cluster.kubeconfig), cluster.context)
            return self._kube[cluster.name]

    def close(self) -> None:
        """Close every connection opened for the run."""
        with self._lock:
            if self._vm is not None:
                self._vm.close()
            for kube in self._kube.values():
                kube.close()
            self._kube.clear()
