"""Preflight checks of each cluster: API, version, clock, rights, pool nodes, GPUs, disks."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC
from functools import partial

from installer.checks import gpu as gpu_probe
from installer.checks.catalog import make
from installer.checks.context import SiteAccess, why_no_address
from installer.checks.framework import Check, Finding, Severity, note, passed, problem
from installer.checks.gpu import CommandRunner
from installer.checks.preflight_vm import evaluate_clock
from installer.engines.kube import NodeInfo
from installer.errors import InstallerError
from installer.inventory.models import Cluster, NodePool, StorageDisk
from installer.site import GPU_PRODUCT_LABEL, gpu_label_problems, gpu_resource_problems

KUBE_MIN = (1, 28)
KUBE_MAX_TESTED = (1, 36)
GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"


@dataclass(frozen=True)
class Right:
    """One thing the installer must be allowed to do."""

    verb: str
    resource: str
    group: str = ""
    why: str = ""

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}{'.' + self.group if self.group else ''}"


_RBAC, _STORAGE = "rbac.authorization.k8s.io", "storage.k8s.io"
_MANAGED = ("create", "patch")
"""What a stack (or Helm release) needs for a kind it manages: create it, update it on re-runs."""


def _manage(why: str, *kinds: tuple[str, str]) -> list[Right]:
    return [Right(verb, resource, group, why) for resource, group in kinds for verb in _MANAGED]


def rights_for(cluster: Cluster) -> list[Right]:
    """Every right the phases need on `cluster` (by what its inventory asks for), each once.

    A right several phases need names them all:
    `create namespaces (storage, dns, platform, verify: test pods)`.
    Helm keeps its releases in Secrets, so every phase installing a chart needs them.
    """
    engine = cluster.storage.engine
    needs = [
        Right("list", "nodes", why="preflight, verify: pool nodes"),
        Right("patch", "nodes", why="nodes: pool labels and taints"),
        *_manage(
            "storage",
            ("namespaces", ""),
            ("secrets", ""),
            ("serviceaccounts", ""),
            ("deployments", "apps"),
            ("clusterroles", _RBAC),
            ("clusterrolebindings", _RBAC),
            ("storageclasses", _STORAGE),
        ),
        Right("bind", "clusterroles", _RBAC, "storage"),
    ]
    if engine in ("cstor", "localpv-lvm"):
        needs += _manage(
            "storage",
            ("daemonsets", "apps"),
            ("customresourcedefinitions", "apiextensions.k8s.io"),
            ("csidrivers", _STORAGE),
        )
    if engine == "cstor":
        needs += [
            Right("list", "blockdevices", "openebs.io", "storage: the disks NDM found"),
            *_manage("storage", ("cstorpoolclusters", "cstor.openebs.io")),
        ]
    needs += _manage("dns", ("namespaces", ""), ("configmaps", ""), ("services", ""))
    if cluster.keycloak.mode == "in-cluster":
        needs += _manage(
            "keycloak",
            ("namespaces", ""),
            ("secrets", ""),
            ("serviceaccounts", ""),
            ("services", ""),
            ("statefulsets", "apps"),
            ("ingresses", "networking.k8s.io"),
        )
    needs += [
        *_manage(
            "platform",
            ("namespaces", ""),
            ("serviceaccounts", ""),
            ("secrets", ""),
            ("configmaps", ""),
            ("services", ""),
            ("deployments", "apps"),
            ("clusterroles", _RBAC),
            ("clusterrolebindings", _RBAC),
            ("roles", _RBAC),
            ("rolebindings", _RBAC),
            ("priorityclasses", "scheduling.k8s.io"),
            ("ingresses", "networking.k8s.io"),
        ),
        Right("bind", "clusterroles", _RBAC, "platform"),
        Right("create", "namespaces", why="verify: test pods"),
        Right("create", "pods", why="verify: test pods"),
        Right("delete", "pods", why="verify: clean-up"),
        Right("delete", "namespaces", why="verify: clean-up"),
        Right("create", "persistentvolumeclaims", why="verify: provisioning (real nodes)"),
    ]
    merged: dict[tuple[str, str, str], list[str]] = {}
    for right in needs:
        whys = merged.setdefault((right.verb, right.resource, right.group), [])
        if right.why not in whys:
            whys.append(right.why)
    return [Right(v, r, g, ", ".join(whys)) for (v, r, g), whys in merged.items()]


def evaluate_version(git_version: str, major: int, minor: int) -> Finding:
    """Is the server version in the supported range?"""
    if (major, minor) < KUBE_MIN:
        return problem(
            f"Kubernetes {git_version} is older than {KUBE_MIN[0]}.{KUBE_MIN[1]}",
            "upgrade the cluster",
        )
    if (major, minor) > KUBE_MAX_TESTED:
        return problem(
            f"Kubernetes {git_version} is newer than the newest tested release"
            f" {KUBE_MAX_TESTED[0]}.{KUBE_MAX_TESTED[1]}",
            "expect it to work; report problems with this version",
            severity=Severity.WARN,
        )
    return passed(f"Kubernetes {git_version} is supported")


def pool_members(pool: NodePool, nodes: Sequence[NodeInfo]) -> list[NodeInfo]:
    """The nodes a pool names, or those its selector matches (existing ones only)."""
    if pool.nodes is not None:
        wanted = set(pool.nodes)
        return [n for n in nodes if n.name in wanted]
    selector = pool.selector or {}
    return [n for n in nodes if all(n.labels.get(k) == v for k, v in selector.items())]


def evaluate_pool_nodes(pool: NodePool, nodes: Sequence[NodeInfo]) -> Finding:
    """Every node named in the pool exists and is Ready; a selector matches Ready nodes."""
    members = pool_members(pool, nodes)
    problems = []
    if pool.nodes is not None:
        missing = sorted(set(pool.nodes) - {n.name for n in members})
        if missing:
            problems.append(f"not in the cluster: {', '.join(missing)}")
    elif not members:
        selector = ",".join(f"{k}={v}" for k, v in (pool.selector or {}).items())
        return problem(
            f"no node matches the selector {selector}",
            "fix the pool's selector or label the nodes (GFD sets nvidia.com/gpu.product)",
        )
    not_ready = [f"{n.name} ({n.ready_message or 'not Ready'})" for n in members if not n.ready]
    if not_ready:
        problems.append(f"not Ready: {', '.join(not_ready)}")
    if problems:
        return problem(
            "; ".join(problems),
            "fix the node names in the pool, or bring the nodes back (kubectl get nodes)",
            nodes=[n.name for n in members],
        )
    names = ", ".join(n.name for n in members)
    return passed(f"{len(members)} node(s) Ready: {names}", nodes=[n.name for n in members])


def evaluate_gpu_nodes(pool: NodePool, nodes: Sequence[NodeInfo]) -> Finding:
    """GPU nodes of the pool expose the pool's GPUs (device plugin) and product (GFD)."""
    assert pool.gpu is not None
    members = pool_members(pool, nodes)
    if not members:
        return problem("no nodes of the pool exist", "see kube.nodes")
    problems = []
    for node in members:
        problems += [
            f"{node.name}: {why}"
            for why in gpu_resource_problems(pool.gpu, node.allocatable, exact=True)
        ]
        if pool.gpu.vendor != "nvidia":
            continue
        if GPU_PRODUCT_LABEL not in node.labels:
            problems.append(
                f"{node.name}: no {GPU_PRODUCT_LABEL} label (GPU feature discovery not running)"
            )
        problems += [f"{node.name}: {why}" for why in gpu_label_problems(pool.gpu, node.labels)]
        memory = node.labels.get(GPU_MEMORY_LABEL, "")
        if pool.gpu.memory is not None and memory.isdigit():
            want = pool.gpu.memory // 2**20
            if int(memory) < want * (1 - gpu_probe.MEMORY_TOLERANCE):
                problems.append(
                    f"{node.name}: {GPU_MEMORY_LABEL} is {memory} MiB, the pool says {want} MiB"
                )
    if problems:
        return problem(
            "; ".join(problems),
            "install the GPU Operator (or the device plugin and GFD), or fix the pool's gpu block",
        )
    return passed(
        f"{len(members)} node(s) with {pool.gpu.count} x {pool.gpu.model}",
        nodes=[n.name for n in members],
    )


def check_api(access: SiteAccess, cluster: Cluster) -> Finding:
    """The API answers /version."""
    kube = access.kube(cluster)
    git_version, _, _, _ = kube.version()
    return passed(f"{kube.server} answers (Kubernetes {git_version})")


def check_version(access: SiteAccess, cluster: Cluster) -> Finding:
    """Server version in range."""
    git_version, major, minor, _ = access.kube(cluster).version()
    return evaluate_version(git_version, major, minor)


def check_clock(access: SiteAccess, cluster: Cluster) -> Finding:
    """Compare the API server's Date header with this host's clock."""
    before = time.time()
    _, _, _, server_time = access.kube(cluster).version()
    after = time.time()
    if server_time is None:
        return note("the API server sent no Date header; its clock was not compared")
    # The Date header has whole seconds: widen the window by one.
    return evaluate_clock(
        server_time.replace(tzinfo=UTC).timestamp() + 0.5, before - 0.5, after + 0.5
    )


def check_rbac(access: SiteAccess, cluster: Cluster) -> Finding:
    """SelfSubjectAccessReview for every right the phases need."""
    kube = access.kube(cluster)
    rights = rights_for(cluster)
    missing = [
        right for right in rights if not kube.can_i(right.verb, right.resource, right.group).allowed
    ]
    if missing:
        return problem(
            "the kubeconfig's user may not: " + "; ".join(f"{r} ({r.why})" for r in missing),
            "use a cluster-admin kubeconfig for the install, or grant the rights listed",
            missing=[str(r) for r in missing],
        )
    return passed(f"all {len(rights)} rights the phases need are granted")


def check_pool(access: SiteAccess, cluster: Cluster, pool: NodePool) -> Finding:
    """Nodes of one pool."""
    return evaluate_pool_nodes(pool, access.kube(cluster).nodes())


def check_gpu(access: SiteAccess, cluster: Cluster, pool: NodePool) -> Finding:
    """GPU resources and labels of one pool's nodes."""
    return evaluate_gpu_nodes(pool, access.kube(cluster).nodes())


NODE_PROBE_LIMIT_S = 75.0
"""Time limit of one node's probe (connect and commands); the nodes are probed in parallel."""
_ENABLE_NODE_SSH = (
    "set clusters[].node_ssh in the inventory to probe the nodes over SSH (docs/checks.md)"
)


def _node_remedy(nodes: Sequence[str]) -> str:
    return (
        f"check clusters[].node_ssh for {', '.join(nodes)}: the address (addresses or the"
        " node's InternalIP), port, user and key, and that node_ssh.known_hosts holds the"
        " node's host key under that address (compare ssh-keyscan's fingerprint with the"
        " node's console; never accept an unknown key)"
    )


def check_gpu_probe(access: SiteAccess, cluster: Cluster, pool: NodePool) -> Finding:
    """nvidia-smi on each node of a GPU pool, over SSH (cluster.node_ssh)."""
    assert pool.gpu is not None
    if pool.gpu.vendor != "nvidia":
        return note(f"no hardware probe for {pool.gpu.vendor} GPUs; node labels were checked")
    if cluster.node_ssh is None:
        return note(
            f"the nodes are not reachable over SSH: GPUs were checked through node labels only;"
            f" {_ENABLE_NODE_SSH}"
        )
    members = pool_members(pool, access.kube(cluster).nodes())
    if not members:
        return note("no node of the pool exists to probe (see kube.nodes)")
    hosts: list[tuple[str, CommandRunner]] = []
    unaddressed = []
    for member in members:
        host = access.node_host(cluster, member.name, internal_ip=member.internal_ip)
        if host is None:
            unaddressed.append(why_no_address(cluster.node_ssh, member.name))
        else:
            hosts.append((member.name, host))
    if not hosts:
        return note("no node of the pool has an SSH address: " + "; ".join(unaddressed))
    finding = evaluate_probes(pool, hosts)
    if unaddressed and finding.ok:
        return passed(f"{finding.message}; not probed: {'; '.join(unaddressed)}")
    return finding


def _probe_all(
    hosts: Sequence[tuple[str, CommandRunner]], limit_s: float
) -> dict[str, gpu_probe.GpuProbe | BaseException | None]:
    """nvidia-smi on every host at once; None for a host with no answer within `limit_s`."""
    workers = ThreadPoolExecutor(max_workers=min(16, len(hosts)), thread_name_prefix="gpu-probe")
    try:
        futures = {name: workers.submit(gpu_probe.probe, host) for name, host in hosts}
        wait(futures.values(), timeout=limit_s)
    finally:
        # A host that hangs keeps its thread; the answer is not waited for.
        workers.shutdown(wait=False, cancel_futures=True)
    out: dict[str, gpu_probe.GpuProbe | BaseException | None] = {}
    for name, future in futures.items():
        if not future.done():
            out[name] = None
        elif future.exception() is not None:
            out[name] = future.exception()
        else:
            out[name] = future.result()
    return out


def evaluate_probes(
    pool: NodePool,
    hosts: Sequence[tuple[str, CommandRunner]],
    *,
    limit_s: float = NODE_PROBE_LIMIT_S,
) -> Finding:
    """Probe each host with nvidia-smi (in parallel, each within `limit_s`); compare with the
    pool. A node that cannot be reached, or presents another host key, fails by its name."""
    assert pool.gpu is not None
    problems: list[str] = []
    unreached: list[str] = []
    for name, outcome in _probe_all(hosts, limit_s).items():
        if outcome is None:
            problems.append(f"{name}: no answer within {limit_s:g}s")
            unreached.append(name)
        elif isinstance(outcome, gpu_probe.ProbeError):
            problems.append(f"{name}: {outcome}")
        elif isinstance(outcome, InstallerError):
            problems.append(f"{name}: {outcome.message}")
            unreached.append(name)
        elif isinstance(outcome, BaseException):
            raise outcome
        else:
            problems.extend(f"{name}: {p}" for p in gpu_probe.compare(outcome, pool.gpu))
    if problems:
        remedy = "fix the node's driver or the pool's gpu block"
        if unreached:
            remedy = _node_remedy(unreached) + (
                "; " + remedy if len(unreached) < len(problems) else ""
            )
        return problem("; ".join(problems), remedy, nodes=[n for n, _ in hosts])
    return passed(
        f"nvidia-smi agrees with the pool on {len(hosts)} node(s): "
        + ", ".join(n for n, _ in hosts),
        nodes=[n for n, _ in hosts],
    )


def evaluate_disk(device: str, host: CommandRunner, *, become: bool = True) -> Finding:
    """A disk for OpenEBS: a block device, no signature, no partitions, not mounted."""
    if host.run(["test", "-b", device]).rc != 0:
        return problem(f"{device} is not a block device on the node", "fix storage.disks")
    sudo = ["sudo", "-n"] if become else []
    blkid = host.run([*sudo, "blkid", "-p", "-o", "export", device])
    if blkid.rc == 0:
        fields = dict(line.split("=", 1) for line in blkid.stdout.splitlines() if "=" in line)
        kind = fields.get("TYPE") or fields.get("PTTYPE") or "a signature"
        return problem(
            f"{device} carries {kind}: it is formatted, OpenEBS needs a raw disk",
            f"wipe it (wipefs -a {device}) once nothing on it is needed, or pick another disk",
        )
    if blkid.rc != 2:  # 2: nothing found; anything else is an error of blkid itself
        return problem(f"blkid failed on {device}: {blkid.stderr.strip() or blkid.rc}")
    parts = host.run(["lsblk", "-nro", "NAME,MOUNTPOINT", device])
    lines = [line.split() for line in parts.stdout.splitlines() if line.strip()]
    if len(lines) > 1:
        return problem(f"{device} has partitions: {', '.join(p[0] for p in lines[1:])}")
    mounted = host.run(["findmnt", "-rn", "-S", device])
    if mounted.rc == 0 and mounted.stdout.strip():
        return problem(f"{device} is mounted at {mounted.stdout.split()[0]}", f"unmount {device}")
    return passed(f"{device} is raw and unmounted")


def check_disk(access: SiteAccess, cluster: Cluster, disk: StorageDisk) -> Finding:
    """One disk of storage.disks on its node, over SSH (cluster.node_ssh)."""
    if cluster.node_ssh is None:
        return note(
            f"{disk.node} is not reachable over SSH; check by hand (lsblk -f {disk.device}), or"
            f" {_ENABLE_NODE_SSH}"
        )
    host = access.node_host(cluster, disk.node)
    if host is None:
        return note(
            f"not probed: {why_no_address(cluster.node_ssh, disk.node)}; check by hand:"
            f" lsblk -f {disk.device}"
        )
    try:
        return evaluate_disk(disk.device, host, become=cluster.node_ssh.become)
    except InstallerError as exc:
        return problem(f"{disk.node}: {exc.message}", _node_remedy([disk.node]))


def kube_checks(access: SiteAccess, cluster: Cluster) -> list[Check]:
    """Every cluster check of preflight."""
    target = f"cluster/{cluster.name}"
    api = ("kube.api",)
    checks = [
        make("kube.api", target, partial(check_api, access, cluster)),
        make("kube.version", target, partial(check_version, access, cluster), requires=api),
        make("kube.clock", target, partial(check_clock, access, cluster), requires=api),
        make("kube.rbac", target, partial(check_rbac, access, cluster), requires=api, timeout_s=60),
    ]
    for pool in cluster.node_pools:
        where = f"{target}/pool/{pool.name}"
        checks.append(
            make("kube.nodes", where, partial(check_pool, access, cluster, pool), requires=api)
        )
        if pool.gpu is not None:
            checks.append(
                make("kube.gpu", where, partial(check_gpu, access, cluster, pool), requires=api)
            )
            checks.append(
                make(
                    "gpu.probe",
                    where,
                    partial(check_gpu_probe, access, cluster, pool),
                    requires=api,
                    timeout_s=NODE_PROBE_LIMIT_S + 15,
                )
            )
    if cluster.storage.engine in ("cstor", "localpv-lvm"):
        for disk in cluster.storage.disks:
            where = f"node/{disk.node}:{disk.device}"
            checks.append(
                make(
                    "storage.disks",
                    where,
                    partial(check_disk, access, cluster, disk),
                    # The node's address may be its InternalIP, read from the API.
                    requires=api if cluster.node_ssh is not None else (),
                    timeout_s=NODE_PROBE_LIMIT_S + 5,
                )
            )
    return checks
