"""Every check the installer runs: id, title, severity, what it checks and the usual remedy.

One table, so that the docs (`docs/checks.md`), `skip_checks` validation and the check modules
agree; a unit test keeps the docs in step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from installer.checks.framework import DEFAULT_TIMEOUT_S, Check, Finding, Severity

Kind = Literal["preflight", "verify"]


@dataclass(frozen=True)
class CheckSpec:
    """The description of one check id."""

    id: str
    kinds: tuple[Kind, ...]
    title: str
    severity: Severity
    what: str
    remedy: str


_F, _W, _I = Severity.FAIL, Severity.WARN, Severity.INFO
_P: tuple[Kind, ...] = ("preflight",)
_V: tuple[Kind, ...] = ("verify",)
_PV: tuple[Kind, ...] = ("preflight", "verify")

SPECS: tuple[CheckSpec, ...] = (
    CheckSpec("vm.ssh", _P, "VM reachable over SSH", _F,
              "The installer logs in to the VM with the inventory's key, and the VM presents"
              " exactly the pinned host key (known_hosts or fingerprint).",
              "Check address, port, user and key; confirm a changed host key out of band."),
    CheckSpec("vm.sudo", _P, "sudo without a password", _F,
              "`sudo -n true` succeeds for the login user (when `ssh.become` is true).",
              "Add a sudoers rule with NOPASSWD for the login user."),
    CheckSpec("vm.os", _P, "VM operating system supported", _F,
              "`/etc/os-release`: Ubuntu 20.04-24.04, Debian 11-13, RHEL/Rocky/Alma 8-9.",
              "Use a supported distribution for the VM."),
    CheckSpec("vm.disk", _P, "free disk for the hub's data", _F,
              "Free space under the registry, ChartMuseum and DevPI data paths: at least the"
              " hub minimum, plus the bundle size times its expansion with `--bundle`.",
              "Grow the VM's data disk or point `aux_vm.services.*.data_path` at a larger one."),
    CheckSpec("vm.ports", _P, "service port free or ours", _F,
              "Each service port on the VM (registry, ChartMuseum, DevPI, DNS when served) is"
              " free, already answers as that service with the site CA, or is held only by a"
              " Debian package's own service that the auxvm phase stops.",
              "Stop what listens on the port or change the port in `aux_vm.services`."),
    CheckSpec("vm.clock", _P, "VM clock in step", _F,
              "Clock difference between this host and the VM: warning above 2 s, failure"
              " above 30 s (TLS and tokens break).",
              "Run an NTP client (chrony, systemd-timesyncd) on both hosts."),
    CheckSpec("kube.api", _PV, "Kubernetes API reachable", _F,
              "The cluster's kubeconfig and context load and the API answers `/version`.",
              "Fix `clusters[].kubeconfig`/`context`; check the API server and the network."),
    CheckSpec("kube.version", _P, "Kubernetes version supported", _F,
              "Server version between 1.28 and 1.36 (newer: warning, not yet tested).",
              "Upgrade the cluster to a supported release."),
    CheckSpec("kube.clock", _P, "API server clock in step", _F,
              "Clock difference between this host and the API server (its Date header).",
              "Run an NTP client on the control-plane hosts and here."),
    CheckSpec("kube.rbac", _P, "installer's Kubernetes rights", _F,
              "SelfSubjectAccessReview for every right the site's phases need: create and"
              " patch of each kind a stack or chart manages (by storage engine and Keycloak"
              " mode), patch nodes, pods and namespaces for the acceptance checks.",
              "Use a kubeconfig whose user is cluster-admin, or grant the listed rights."),
    CheckSpec("kube.nodes", _P, "pool nodes exist and are Ready", _F,
              "Every node named in a pool exists and is Ready; a selector pool matches at"
              " least one node and all of them are Ready.",
              "Fix the node names or selector, or bring the nodes back."),
    CheckSpec("kube.gpu", _P, "GPU nodes report their GPUs", _F,
              "Each node of a GPU pool advertises exactly the resources the pool's shape makes"
              " (device plugin): `nvidia.com/gpu`, `amd.com/gpu` or `gpu.intel.com/i915` equal"
              " to its count; with `mig_profiles`, one `nvidia.com/mig-<profile>` per profile"
              " (`mig_strategy: mixed`) or the slices as `nvidia.com/gpu` (`single`); NVIDIA"
              " nodes carry `nvidia.com/gpu.product` equal to the model (`<model>-MIG-<profile>`"
              " with `single`) and agree in `nvidia.com/gpu.count` and `nvidia.com/mig.strategy`"
              " (GPU feature discovery); memory label when the pool states it.",
              "Install the GPU Operator (or device plugin and GFD); fix the pool's model, count,"
              " MIG profiles or strategy."),
    CheckSpec("gpu.probe", _P, "GPU hardware matches (nvidia-smi)", _F,
              "With `clusters[].node_ssh`: `nvidia-smi` on each node of the pool over SSH"
              " (in parallel), model, count, memory, driver and MIG slices against the pool;"
              " an unreachable node or a host key not in `node_ssh.known_hosts` fails by name."
              " Without `node_ssh`: info, labels only.",
              "Fix the pool's gpu block, the node's driver or MIG layout, or `node_ssh`."),
    CheckSpec("storage.disks", _P, "OpenEBS disks raw", _F,
              "With `clusters[].node_ssh`: each disk in `storage.disks` exists as a block"
              " device on its node, carries no filesystem or partition table, has no"
              " partitions and is not mounted (over SSH). Without `node_ssh`: info.",
              "Wipe the disk (`wipefs -a`) after making sure nothing on it is needed."),
    CheckSpec("dns.wildcard", _PV, "wildcard DNS names resolve", _F,
              "`<domain>`, `x.<domain>`, `x.jobs.<domain>` and `x.apps.<domain>` resolve to"
              " the cluster's ingress IPs; in preflight, names the VM will serve are info.",
              "Add the A records (or set `aux_vm.dns.enabled` and run the auxvm phase)."),
    CheckSpec("hub.service", _P, "hub services answer with the site CA", _F,
              "Registry, ChartMuseum and DevPI, when they already run, answer over TLS"
              " verified by the site CA; not yet installed is info.",
              "Re-run the auxvm phase; check the VM's certificates against the site CA."),
    CheckSpec("sched.preset", _V, "preset pods land on their pools", _F,
              "For every preset, a short-lived pod with the job controller's node affinity,"
              " tolerations and resources is scheduled onto a node of its pools and no other,"
              " and starts there (its node pulls the probe image from the hub).",
              "Re-run the nodes phase; check pool labels, taints, allocatable resources and the"
              " node's container runtime."),
    CheckSpec("sched.job_taint", _V, "job nodes refuse other pods", _F,
              "A pod without the job toleration, aimed at a job pool, is not scheduled there.",
              "Re-run the nodes phase: the pool's job taint is missing."),
    CheckSpec("hub.registry_image", _V, "site registry serves platform images", _F,
              "The job controller's image resolves in the site registry over TLS verified by"
              " the site CA, with the clusters' pull login on the read-only endpoint.",
              "Run airgap-load (air-gapped) or the auxvm phase; check the registry's CA."),
    CheckSpec("hub.pull_read_only", _V, "the clusters' pull login cannot write", _F,
              "The pull login (pull secrets, chart reads) reads the registry; its blob upload"
              " and chart upload are refused, and the push endpoints do not take it.",
              "Re-run the auxvm phase: it writes the read-only endpoints and their logins."),
    CheckSpec("oidc.discovery", _V, "OIDC discovery answers", _F,
              "`<issuer>/.well-known/openid-configuration` answers with the same issuer.",
              "Run the keycloak phase; check the realm and Keycloak's CA."),
    CheckSpec("storage.classes", _V, "storage classes and default", _F,
              "The inventory's default StorageClass exists and is the only default.",
              "Run the storage phase."),
    CheckSpec("storage.provisioning", _V, "volumes provision", _F,
              "On real nodes a test claim of the default class binds; on simulated nodes"
              " (kwok) this cannot be checked and the result says so (info).",
              "Check the OpenEBS pods and the disks they use."),
    CheckSpec("platform.controllers", _V, "platform controllers Available", _F,
              "The job controller and app controller Deployments exist and are Available.",
              "Run the platform phase; read the Deployments' events."),
    CheckSpec("images.from_hub", _V, "every platform image comes from the hub", _F,
              "Each container image of the pods in the platform's namespaces is named on the hub"
              " or comes from a registry the nodes mirror to the hub (`node_runtime`).",
              "Re-run the platform phase; configure the nodes' runtime for injected images."),
    CheckSpec("images.pull_failures", _V, "no failed image pulls", _F,
              "No container in the platform's namespaces waits on `ErrImagePull` or"
              " `ImagePullBackOff`, and no event there reports a failed pull.",
              "Check the nodes' trust of the site CA and their route to the hub; airgap-load."),
    CheckSpec("images.runtime_pull", _V, "a node pulls by upstream name", _F,
              "Where the nodes phase configures the nodes' containerd: on the first such node,"
              " `crictl pull` of the release's busybox by its upstream name succeeds (over SSH,"
              " with sudo). Otherwise info.",
              "Re-run the nodes phase; check node_runtime.crictl and cri_endpoint."),
)  # fmt: skip

BY_ID = {spec.id: spec for spec in SPECS}


def ids(kind: Kind | None = None) -> list[str]:
    """Every check id (of one kind)."""
    return [s.id for s in SPECS if kind is None or kind in s.kinds]


def make(
    check_id: str,
    target: str,
    run: Callable[[], Finding],
    *,
    requires: tuple[str, ...] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Check:
    """A Check of the catalogued id `check_id` (KeyError for an id not in the catalog)."""
    spec = BY_ID[check_id]
    return Check(check_id, spec.title, target, run, spec.severity, requires, timeout_s)
