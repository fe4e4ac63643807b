"""Cross-field rules of the inventory. Each rule raises RuleViolations with field paths.

Called from the models' `after` validators, so every rule sees fully typed values. The paths are
relative to the model being validated; the loader prefixes them and finds the file position.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from installer.inventory.types import RuleViolations, format_bytes

if TYPE_CHECKING:
    from installer.inventory.models import (
        AuxVm,
        Cluster,
        IdentityProvider,
        Inventory,
        Keycloak,
        NodePool,
        NodeSsh,
        Preset,
        PresetGpu,
        SshAccess,
        Storage,
        TlsSettings,
        Upstream,
    )

Violation = tuple[tuple[str | int, ...], str]


def _raise(violations: list[Violation]) -> None:
    if violations:
        raise RuleViolations(violations)


def _duplicates(names: Iterable[str]) -> set[str]:
    return {name for name, n in Counter(names).items() if n > 1}


def check_host_key_pinned(ssh: SshAccess) -> None:
    """Strict host keys: a fingerprint or a known_hosts file must pin the host."""
    if ssh.host_key_fingerprint is None and ssh.known_hosts is None:
        _raise(
            [
                (
                    (),
                    "the host key must be pinned: set host_key_fingerprint (ssh-keygen -lf"
                    " /etc/ssh/ssh_host_ed25519_key.pub on the VM) or known_hosts",
                )
            ]
        )


def check_node_ssh(access: NodeSsh) -> None:
    """Probing only listed nodes needs a list; two nodes never share one SSH address."""
    out: list[Violation] = []
    if access.address_source == "addresses" and not access.addresses:
        out.append(
            (
                ("addresses",),
                "address_source: addresses needs at least one node in addresses"
                " (node name: IPv4 address); or use address_source: internal-ip",
            )
        )
    owner: dict[str, str] = {}
    for node, address in access.addresses.items():
        if str(address) in owner:
            out.append(
                (
                    ("addresses", node),
                    f"address {address} is already given for node {owner[str(address)]};"
                    " each node has its own address",
                )
            )
        owner.setdefault(str(address), node)
    _raise(out)


def check_tls(tls: TlsSettings) -> None:
    """A provided CA needs its certificate and key; a generated one takes neither."""
    out: list[Violation] = []
    if tls.ca == "provided":
        if tls.ca_cert is None:
            out.append((("ca_cert",), "ca: provided needs ca_cert (PEM certificate path)"))
        if tls.ca_key is None:
            out.append((("ca_key",), "ca: provided needs ca_key (file:... reference)"))
    else:
        for name in ("ca_cert", "ca_key"):
            if getattr(tls, name) is not None:
                out.append(((name,), f"{name} is only used with ca: provided"))
    _raise(out)


SYSTEM_FOLDERS = frozenset(
    {"/", "/home", "/root", "/opt", "/srv", "/mnt", "/media", "/var", "/var/lib", "/var/log",
     "/var/cache", "/var/spool", "/var/mail", "/var/backups", "/var/opt", "/var/local",
     "/usr/local"}
)  # fmt: skip
"""Folders of the VM's system that a data path must not be, nor contain (the hub takes its data
paths over, owner and mode, and `destroy --purge` deletes them)."""

NO_DATA_UNDER = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/tmp", "/usr", "/var/tmp",  # noqa: S108 (refused here, never used)
    "/opt/onprem-hub", "/var/run", "/var/lock",
)  # fmt: skip
"""Trees that hold the system, its runtime or temporary files, or the hub's own programs: no data
path inside them."""


def data_path_problem(path: str) -> str | None:
    """Why `path` cannot be a service's data path on the VM, or None."""
    if path != "/" and (path.endswith("/") or "//" in path):
        return f"data path {path} is not in its plain form (no trailing or double slash)"
    if posixpath.normpath(path) != path or any(part in (".", "..") for part in path.split("/")):
        return f"data path {path} has . or .. in it; give the folder's plain absolute path"
    if path in SYSTEM_FOLDERS:
        return (
            f"data path {path} is a system folder; give the service a folder of its own, such as"
            f" {path.rstrip('/')}/onprem-hub/<service>"
        )
    for tree in NO_DATA_UNDER:
        if path == tree or path.startswith(tree + "/"):
            return f"data path {path} is inside {tree}, which is not for service data"
    return None


def check_vm_ports(vm: AuxVm) -> None:
    """Each service on the VM needs its own port and its own data path: not a system folder,
    and neither the same as another service's nor inside it (a purge of one would take the
    other)."""
    used: dict[int, str] = {vm.ssh.port: "ssh"}
    paths: dict[str, str] = {}
    out: list[Violation] = []
    for name in ("registry", "chartmuseum", "devpi"):
        endpoint = getattr(vm.services, name)
        listeners = [("port", endpoint.port, name)]
        push_port = getattr(endpoint, "push_port", None)
        if push_port is not None:
            listeners.append(("push_port", push_port, f"{name}'s push endpoint"))
        for field, port, owner in listeners:
            if port in used:
                out.append(
                    (("services", name, field), f"port {port} is already used by {used[port]}")
                )
            used.setdefault(port, owner)
        where = ("services", name, "data_path")
        problem = data_path_problem(endpoint.data_path)
        if problem is not None:
            out.append((where, problem))
            continue
        path = endpoint.data_path
        for other, owner in paths.items():
            if path == other:
                out.append((where, f"data path {path} is already used by {owner}"))
            elif path.startswith(other + "/") or other.startswith(path + "/"):
                out.append(
                    (where, f"data path {path} and {owner}'s {other} are inside one another")
                )
        paths.setdefault(path, name)
    if vm.dns.enabled and vm.dns.port in used:
        out.append((("dns", "port"), f"port {vm.dns.port} is already used by {used[vm.dns.port]}"))
    _raise(out)


def check_upstream(upstream: Upstream) -> None:
    """A login is a user and a password together."""
    if (upstream.user is None) != (upstream.password is None):
        missing = "password" if upstream.password is None else "user"
        _raise(
            [
                (
                    (missing,),
                    f"the upstream login needs both user and password; {missing} is missing",
                )
            ]
        )


def check_pool(pool: NodePool) -> None:
    """A pool names its nodes or selects them, never both; GPU details are consistent."""
    out: list[Violation] = []
    if (pool.nodes is None) == (pool.selector is None):
        out.append(((), "give exactly one of nodes (a list of node names) or selector"))
    if pool.nodes is not None:
        if not pool.nodes:
            out.append((("nodes",), "nodes must list at least one node"))
        for i, node in enumerate(pool.nodes):
            if node in pool.nodes[:i]:
                out.append((("nodes", i), f"node {node} is listed twice"))
    if pool.selector is not None and not pool.selector:
        out.append((("selector",), "selector must have at least one label"))
    if pool.gpu and pool.gpu.mig_profiles and pool.gpu.vendor != "nvidia":
        out.append((("gpu", "mig_profiles"), "MIG profiles exist only on NVIDIA GPUs"))
    if pool.gpu and pool.gpu.mig_strategy == "single" and len(pool.gpu.mig_profiles) > 1:
        out.append(
            (
                ("gpu", "mig_strategy"),
                "the single MIG strategy advertises every slice as nvidia.com/gpu, so a node"
                f" has one profile; this pool has {len(pool.gpu.mig_profiles)}"
                " (use mig_strategy: mixed)",
            )
        )
    _raise(out)


def check_storage(storage: Storage) -> None:
    """cStor and LVM need raw disks; each disk is listed once."""
    out: list[Violation] = []
    if storage.engine in ("cstor", "localpv-lvm") and not storage.disks:
        out.append(
            (
                ("disks",),
                f"engine {storage.engine} needs at least one raw disk (node and device);"
                " use engine: localpv-hostpath for a cluster without spare disks",
            )
        )
    seen: set[tuple[str, str]] = set()
    for i, disk in enumerate(storage.disks):
        if (disk.node, disk.device) in seen:
            out.append((("disks", i), f"disk {disk.device} on {disk.node} is listed twice"))
        seen.add((disk.node, disk.device))
    _raise(out)


def check_identity_provider(idp: IdentityProvider) -> None:
    """Each protocol has its own required fields."""
    out: list[Violation] = []
    if idp.type == "oidc":
        for name in ("discovery_url", "client_id", "client_secret"):
            if getattr(idp, name) is None:
                out.append(((name,), f"an oidc identity provider needs {name}"))
    elif idp.metadata_url is None:
        out.append((("metadata_url",), "a saml identity provider needs metadata_url"))
    _raise(out)


def check_keycloak(kc: Keycloak) -> None:
    """External Keycloak needs its URL and admin password (in-cluster may name its URL); the
    admin API is reached over https unless http is allowed in so many words."""
    out: list[Violation] = []
    if kc.url is not None and kc.url.startswith("http://") and not kc.allow_insecure_http:
        out.append(
            (
                ("url",),
                f"{kc.url} would send the Keycloak admin password in clear; use https://"
                " (or, on a development site only, set allow_insecure_http: true)",
            )
        )
    if kc.mode == "external":
        if kc.url is None:
            out.append((("url",), "mode: external needs the url of the existing Keycloak"))
        if kc.admin_password is None:
            out.append(
                (
                    ("admin_password",),
                    "mode: external needs admin_password (the installer cannot generate it)",
                )
            )
    _raise(out)


def _gpu_of(preset: Preset) -> tuple[str, PresetGpu] | None:
    for vendor in ("nvidia", "amd", "intel"):
        gpu = getattr(preset, f"{vendor}_gpu")
        if gpu is not None:
            return vendor, gpu
    return None


def _preset_fits(preset: Preset, pool: NodePool) -> list[str]:
    """Why `preset` cannot run on a node of `pool` (empty when it fits)."""
    why: list[str] = []
    if preset.cpu > pool.cpu:
        why.append(f"cpu {preset.cpu:g} > {pool.cpu:g} per node")
    if preset.memory > pool.memory:
        why.append(f"memory {format_bytes(preset.memory)} > {format_bytes(pool.memory)} per node")
    wanted = _gpu_of(preset)
    if wanted is not None:
        vendor, gpu = wanted
        if pool.gpu is None:
            why.append(f"it asks for {vendor} GPUs and pool '{pool.name}' has none")
        elif pool.gpu.vendor != vendor:
            why.append(f"it asks for {vendor} GPUs and pool '{pool.name}' has {pool.gpu.vendor}")
        else:
            if gpu.model is not None and gpu.model != pool.gpu.model:
                why.append(f"GPU model {gpu.model} != pool's {pool.gpu.model}")
            sliced = bool(pool.gpu.mig_profiles)
            if sliced and pool.gpu.mig_strategy == "mixed":
                why.append(
                    f"pool '{pool.name}' has no whole GPUs: its GPUs are MIG slices, each profile"
                    " a resource of its own (mig_strategy: mixed); ask nvidia_migs"
                )
            elif sliced and gpu.count > pool.gpu.slices:
                why.append(f"{gpu.count} MIG slices > {pool.gpu.slices} per node")
            elif not sliced and gpu.count > pool.gpu.count:
                why.append(f"{gpu.count} GPUs > {pool.gpu.count} per node")
            if gpu.memory and pool.gpu.memory and gpu.memory > pool.gpu.memory:
                why.append(
                    f"GPU memory {format_bytes(gpu.memory)} > {format_bytes(pool.gpu.memory)}"
                )
    if preset.nvidia_migs and pool.gpu and pool.gpu.mig_strategy == "single":
        why.append(
            f"pool '{pool.name}' advertises its MIG slices as nvidia.com/gpu"
            " (mig_strategy: single); ask nvidia_gpu with the number of slices"
        )
        return why
    for profile, mig in preset.nvidia_migs.items():
        have = pool.gpu.mig_profiles.get(profile, 0) if pool.gpu else 0
        if mig.count > have:
            why.append(f"MIG {profile} x{mig.count} > {have} per node")
    return why


def check_cluster(cluster: Cluster) -> None:
    """Names are unique; presets name existing pools they fit; a node is in one pool."""
    out: list[Violation] = []
    pools = {pool.name: pool for pool in cluster.node_pools}
    for dup in _duplicates(p.name for p in cluster.node_pools):
        idx = [i for i, p in enumerate(cluster.node_pools) if p.name == dup][1]
        out.append((("node_pools", idx, "name"), f"pool name '{dup}' is used twice"))
    for dup in _duplicates(p.name for p in cluster.presets):
        idx = [i for i, p in enumerate(cluster.presets) if p.name == dup][1]
        out.append((("presets", idx, "name"), f"preset name '{dup}' is used twice"))
    owner: dict[str, str] = {}
    for i, pool in enumerate(cluster.node_pools):
        for j, node in enumerate(pool.nodes or []):
            if node in owner and owner[node] != pool.name:
                out.append(
                    (
                        ("node_pools", i, "nodes", j),
                        f"node {node} is already in pool '{owner[node]}'; a node belongs to"
                        " one pool",
                    )
                )
            owner.setdefault(node, pool.name)
    if cluster.node_runtime.configure == "ssh" and cluster.node_ssh is None:
        out.append(
            (
                ("node_runtime", "configure"),
                "configure: ssh needs node_ssh (how to reach the nodes); add node_ssh, or set"
                " configure: none when the nodes' containerd is configured by other means",
            )
        )
    if cluster.node_ssh is not None and all(p.nodes is not None for p in cluster.node_pools):
        # Every node is named, so a name in addresses that is none of them is a typo.
        named = set(owner) | {disk.node for disk in cluster.storage.disks}
        for node in cluster.node_ssh.addresses:
            if node not in named:
                out.append(
                    (
                        ("node_ssh", "addresses", node),
                        f"node {node} is in no pool and has no storage disk of cluster"
                        f" '{cluster.name}'",
                    )
                )
    if all(p.nodes is not None for p in cluster.node_pools):
        for k, node in enumerate(cluster.node_runtime.nodes or []):
            if node not in owner:
                out.append(
                    (
                        ("node_runtime", "nodes", k),
                        f"node {node} is in no pool of cluster '{cluster.name}'",
                    )
                )
    for i, preset in enumerate(cluster.presets):
        gpu_kinds = sum(
            g is not None for g in (preset.nvidia_gpu, preset.amd_gpu, preset.intel_gpu)
        )
        if gpu_kinds > 1:
            out.append((("presets", i), "a preset asks for one GPU vendor at most"))
        for j, name in enumerate(preset.pools):
            if name in preset.pools[:j]:
                out.append((("presets", i, "pools", j), f"pool '{name}' is listed twice"))
                continue
            target = pools.get(name)
            if target is None:
                known = ", ".join(sorted(pools)) or "none"
                out.append(
                    (
                        ("presets", i, "pools", j),
                        f"pool '{name}' does not exist in cluster '{cluster.name}'"
                        f" (pools: {known})",
                    )
                )
                continue
            why = _preset_fits(preset, target)
            if why:
                out.append(
                    (
                        ("presets", i, "pools", j),
                        f"preset '{preset.name}' does not fit a node of pool '{name}': "
                        + "; ".join(why),
                    )
                )
    _raise(out)


def _shared_realm_clients(inv: Inventory) -> list[Violation]:
    """Clusters that share one Keycloak realm need OIDC clients of their own: each cluster's
    keycloak stack owns its client, and taking one cluster back deletes that client."""
    out: list[Violation] = []
    owners: dict[tuple[str, str, str], str] = {}
    for i, cluster in enumerate(inv.clusters):
        if cluster.name in owners.values():
            continue  # a cluster named twice: that is the error to fix first
        kc = cluster.keycloak
        domain = cluster.domain or f"{cluster.name}.org.{inv.site.domain}"
        url = (kc.url or f"https://keycloak.{domain}").rstrip("/").lower()
        key = (url, kc.realm, kc.client_id)
        if key in owners:
            out.append(
                (
                    ("clusters", i, "keycloak", "client_id"),
                    f"client '{kc.client_id}' of realm '{kc.realm}' at {url} is already cluster"
                    f" '{owners[key]}'s: give this cluster a client of its own"
                    f" (keycloak.client_id: {kc.client_id}-{cluster.name})",
                )
            )
        owners.setdefault(key, cluster.name)
    return out


def check_inventory(inv: Inventory) -> None:
    """Cluster names and domains are unique across the site."""
    out: list[Violation] = []
    seen_names: set[str] = set()
    seen_domains: dict[str, str] = {}
    for i, cluster in enumerate(inv.clusters):
        if cluster.name in seen_names:
            out.append((("clusters", i, "name"), f"cluster name '{cluster.name}' is used twice"))
        seen_names.add(cluster.name)
        domain = cluster.domain or f"{cluster.name}.org.{inv.site.domain}"
        if len(domain) > 253 - len("x.jobs."):
            out.append((("clusters", i, "name"), f"cluster domain {domain} is too long"))
        if domain in seen_domains and seen_domains[domain] != cluster.name:
            out.append(
                (
                    ("clusters", i, "domain"),
                    f"domain {domain} is already used by cluster '{seen_domains[domain]}'",
                )
            )
        seen_domains.setdefault(domain, cluster.name)
    out.extend(_shared_realm_clients(inv))
    if inv.site.airgapped and inv.upstream is not None:
        out.append(
            (
                ("upstream",),
                "an air-gapped site has no upstream: remove the upstream section (the hub is"
                " filled from a bundle, installer airgap-load) or set site.airgapped: false",
            )
        )
    for check_id in inv.skip_checks:
        if not check_id or not all(part.isidentifier() for part in check_id.split(".")):
            out.append((("skip_checks", check_id), f"'{check_id}' is not a check id (a.b_c)"))
    _raise(out)
