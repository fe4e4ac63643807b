"""The `nodes` phase: containerd on the nodes pulls through the hub, then the pools' labels and
taints (the nodes stack).

The runtime part is `playbooks/nodes.yml` over `clusters[].node_ssh` for every cluster whose
`node_runtime.configure` resolves to `ssh`: each node's containerd trusts the site CA, mirrors
the upstream registries to the hub, takes the sandbox image from the hub and logs in with the
hub's read-only pull login. `plan()` runs the play in check mode (a drifted file is a change);
`destroy()` runs `playbooks/nodes-remove.yml`, which puts back every file as it was before the
first run. After each converging run the inventory it used is written to
`<state>/ansible/nodes-<cluster>.inventory.json`, for hand runs of the play. The stack part is
`StackPhase("nodes")` (installer/phases/stacks.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from installer.engines.ansible import (
    AnsibleEngine,
    AnsibleHost,
    FailureReason,
    PlaybookFailure,
    PlaybookResult,
    PlaybookRun,
    Progress,
    inventory_document,
)
from installer.engines.kube import connected
from installer.engines.ssh import SshTarget, pinned_known_hosts_line
from installer.errors import BadInputError, EnvironmentProblem, FailedError, InstallerError
from installer.inventory import Inventory
from installer.inventory.models import Cluster, NodeSsh
from installer.phases.auxvm import vm_host, vm_ssh_target
from installer.phases.base import (
    Action,
    Change,
    Event,
    PhaseContext,
    PhasePlan,
    PhaseResult,
    Status,
)
from installer.phases.stacks import StackPhase
from installer.release import ReleaseManifest, load_release
from installer.site import hub_urls, mirrored_registries, runtime_configured, site_image
from installer.state import HUB_PULL_PASSWORD_SECRET, HUB_PULL_USER, StateDir

NAME = "nodes"
PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "nodes.yml"
REMOVE_PLAYBOOK = PLAYBOOK.with_name("nodes-remove.yml")
SANDBOX_IMAGE = "registry.k8s.io/pause"
"""The release's image every node's CRI plugin runs as the pod sandbox."""


def sandbox_image(inv: Inventory, release: ReleaseManifest) -> str:
    """The release's pause image, by its name on the hub."""
    for image in release.images:
        if image.name == SANDBOX_IMAGE:
            return site_image(inv, f"{image.name}:{image.tag}")
    raise BadInputError(
        f"the release manifest names no {SANDBOX_IMAGE} image, which the nodes run as their"
        " pod sandbox",
        remedy=f"add {SANDBOX_IMAGE} to airgap/release.yml (component: nodes)",
    )


def runtime_vars(inv: Inventory, cluster: Cluster, state: StateDir) -> dict[str, Any]:
    """The play's variables for `cluster` (paths and names; never a secret's value)."""
    release = load_release()
    runtime = cluster.node_runtime
    return {
        "node_hub_registry": hub_urls(inv).registry,
        "node_pull_login": HUB_PULL_USER,
        "node_pull_password_file": str(state.secrets / HUB_PULL_PASSWORD_SECRET),
        "node_hub_ca_file": str(state.ca_cert),
        "node_sandbox_image": sandbox_image(inv, release),
        "node_mirrors": [
            {"name": r.name, "server": r.server}
            for r in mirrored_registries([i.name for i in release.images])
        ],
        "node_containerd_config": runtime.config_path,
        "node_containerd_certs_dir": runtime.certs_dir,
        "node_containerd_restart": list(runtime.restart),
    }


@dataclass(frozen=True)
class NodeAddress:
    """A node the play configures and where it is reached."""

    name: str
    address: str


def _addresses(cluster: Cluster, access: NodeSsh) -> list[NodeAddress]:
    """`node_runtime.nodes` (else every node the cluster lists) with their SSH addresses; a
    node without one is refused, by name."""
    wanted = cluster.node_runtime.nodes
    internal: dict[str, str | None] = {}
    if wanted is None or any(n not in access.addresses for n in wanted):
        with connected(cluster.kubeconfig, cluster.context) as kube:
            internal = {n.name: n.internal_ip for n in kube.nodes()}
    names = wanted if wanted is not None else sorted(internal)
    found: list[NodeAddress] = []
    missing: list[str] = []
    for name in names:
        listed = access.addresses.get(name)
        address = str(listed) if listed is not None else None
        if address is None and access.address_source == "internal-ip":
            address = internal.get(name)
        if address is None:
            missing.append(name)
        else:
            found.append(NodeAddress(name, address))
    if missing:
        raise BadInputError(
            f"cluster {cluster.name}: no SSH address for node(s) {', '.join(missing)}, whose"
            " containerd the nodes phase configures",
            remedy="add them to node_ssh.addresses (or check that the cluster lists them with"
            " an InternalIP), or leave them out of node_runtime.nodes",
        )
    return found


def _hosts(inv: Inventory, cluster: Cluster, access: NodeSsh) -> list[AnsibleHost]:
    # Through the VM (`jump: aux-vm`): its own key pinned as for the auxvm phase.
    jump = (
        vm_host(inv, pinned_known_hosts_line(vm_ssh_target(inv)))
        if access.jump == "aux-vm"
        else None
    )
    key = access.private_key.resolve().get_secret_value()
    key_path = access.private_key.path()
    hosts = []
    for node in _addresses(cluster, access):
        target = SshTarget(
            address=node.address,
            port=access.port,
            user=access.user,
            private_key=key,
            known_hosts=access.known_hosts,
            timeout_s=access.timeout_s,
        )
        try:
            line = pinned_known_hosts_line(target)
        except BadInputError:
            raise BadInputError(
                f"node {node.name}: {access.known_hosts} has no host key for {target.host_pattern}",
                remedy=f"add the node's host key to node_ssh.known_hosts (ssh-keyscan -p"
                f" {access.port} {node.address}, checked against the node's console)",
            ) from None
        hosts.append(
            AnsibleHost(
                name=node.name,
                address=node.address,
                port=access.port,
                user=access.user,
                known_hosts_line=line,
                private_key_file=key_path,
                private_key=None if key_path is not None else access.private_key.resolve(),
                become=access.become,
                jump=jump,
            )
        )
    return hosts


_REMEDY = {
    FailureReason.HOST_KEY: "the node presented another host key than node_ssh.known_hosts"
    " holds: check the key on the node's console and update the file",
    FailureReason.LOGIN: "authorize node_ssh.private_key for node_ssh.user on the node",
    FailureReason.UNREACHABLE: "check that the node is up and reachable on its SSH port from"
    " the installer's host (node_ssh.addresses, node_ssh.port)",
    FailureReason.SUDO: "give node_ssh.user passwordless sudo on the node, or log in as root",
}


def _failure_error(
    result: PlaybookResult, cluster: Cluster, hosts: list[AnsibleHost]
) -> InstallerError:
    """Exit 3 for a node that cannot be reached or logged in to, 1 for a failed task; both name
    the node."""
    failure = result.failure or PlaybookFailure(
        FailureReason.RUN, "(play)", "(play)", f"ansible ended {result.status}"
    )
    where = {h.name: f"{h.user}@{h.address}:{h.port}" for h in hosts}.get(failure.host, "")
    node = f"node {failure.host}" + (f" ({where})" if where else "")
    logs = f"; Ansible's log: {result.artifacts / 'stdout'}"
    message = f"cluster {cluster.name}: {node}: step '{failure.task}': {failure.message}{logs}"
    if failure.reason in _REMEDY:
        return EnvironmentProblem(message, remedy=_REMEDY[failure.reason])
    return FailedError(message, remedy=failure.remedy)


def write_inventory(
    state: StateDir, cluster: str, hosts: list[AnsibleHost], extra: dict[str, Any]
) -> Path:
    """`<state>/ansible/nodes-<cluster>.inventory.json` (and its known_hosts file): what
    converged the cluster's nodes, for `ansible-playbook -i <it> playbooks/nodes.yml`."""
    folder = state.root / "ansible"
    folder.mkdir(parents=True, mode=0o700, exist_ok=True)
    known = folder / f"nodes-{cluster}.known_hosts"
    lines = [h.known_hosts_line for h in hosts] + [h.jump.known_hosts_line for h in hosts if h.jump]
    known.write_text("".join(f"{line}\n" for line in dict.fromkeys(lines)), encoding="utf-8")
    doc = inventory_document(
        {"nodes": hosts}, folder, known_hosts=known, inline_keys=False, group_vars={"nodes": extra}
    )
    target = folder / f"nodes-{cluster}.inventory.json"
    target.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return target


class NodeRuntime:
    """containerd on the nodes of every cluster that asks for it, by `playbooks/nodes.yml`."""

    def __init__(self, engine: AnsibleEngine | None = None, playbook: Path = PLAYBOOK) -> None:
        self._engine = engine or AnsibleEngine()
        self._playbook = playbook

    def clusters(self, ctx: PhaseContext) -> list[Cluster]:
        """The clusters (of those the call works on) whose nodes the play configures."""
        return [c for c in ctx.clusters() if runtime_configured(c)]

    def inputs(self, ctx: PhaseContext) -> Any:
        """The node settings of each configured cluster and the registries mirrored."""
        return {
            c.name: {
                "node_ssh": c.node_ssh.model_dump(mode="json") if c.node_ssh else None,
                "node_runtime": c.node_runtime.model_dump(mode="json"),
                "vars": runtime_vars(ctx.inventory, c, ctx.state),
            }
            for c in self.clusters(ctx)
        }

    def _run(
        self, ctx: PhaseContext, cluster: Cluster, playbook: Path, *, check: bool, ident: str
    ) -> tuple[PlaybookResult, list[AnsibleHost]]:
        assert cluster.node_ssh is not None  # runtime_configured and the inventory's rule
        converging = playbook == self._playbook
        if converging and not ctx.state.ca_cert.is_file():
            raise EnvironmentProblem(
                f"no site CA at {ctx.state.ca_cert} for the nodes to trust",
                remedy="run the auxvm phase first (installer bootstrap --only auxvm)",
            )
        if converging:
            ctx.state.secret(HUB_PULL_PASSWORD_SECRET)
        ctx.step(NAME, f"checking the host keys of cluster {cluster.name}'s nodes")
        hosts = _hosts(ctx.inventory, cluster, cluster.node_ssh)

        def progress(p: Progress) -> None:
            if p.kind == "changed":
                ctx.emit(Event("change", NAME, f"{p.host}: {p.name}", {"role": p.role}))
            elif p.kind in ("failed", "unreachable"):
                ctx.emit(Event("error", NAME, f"{p.host}: {p.name}: {p.message}"))

        run = PlaybookRun(
            playbook=playbook,
            groups={"nodes": hosts},
            run_dir=ctx.run_dir,
            extra_vars=runtime_vars(ctx.inventory, cluster, ctx.state),
            check=check,
            ident=f"{ident}-{cluster.name}",
        )
        ctx.step(NAME, f"containerd on {len(hosts)} node(s) of cluster {cluster.name}")
        result = self._engine.run(run, progress)
        if not result.ok:
            raise _failure_error(result, cluster, hosts)
        if converging and not check:
            # What converged the nodes, for operators who run the play by hand.
            write_inventory(ctx.state, cluster.name, hosts, dict(run.extra_vars))
        return result, hosts

    def _each(
        self, ctx: PhaseContext, playbook: Path, *, check: bool, ident: str, action: Action
    ) -> list[Change]:
        """`playbook` on every configured cluster's nodes; each changed task, by node."""
        changes: list[Change] = []
        for cluster in self.clusters(ctx):
            result, _ = self._run(ctx, cluster, playbook, check=check, ident=ident)
            changes += [
                Change(f"cluster/{cluster.name}/node/{o.host}", action, "task", o.task, o.role)
                for o in result.changed
            ]
        return changes

    def plan(self, ctx: PhaseContext) -> list[Change]:
        """The play in check mode: each file that would change, on each node."""
        return self._each(ctx, self._playbook, check=True, ident="nodes-check", action="update")

    def apply(self, ctx: PhaseContext) -> list[Change]:
        """Converge every configured node; a second run changes nothing."""
        return self._each(ctx, self._playbook, check=False, ident="nodes", action="update")

    def destroy(self, ctx: PhaseContext) -> list[Change]:
        """Every file the play wrote, put back as it was before the first run."""
        remove = self._playbook.with_name(REMOVE_PLAYBOOK.name)
        return self._each(ctx, remove, check=False, ident="nodes-remove", action="delete")


class NodesPhase:
    """containerd on the nodes (where the inventory asks), then the pools' labels and taints."""

    name = NAME

    def __init__(self, runtime: NodeRuntime | None = None) -> None:
        self.runtime = runtime or NodeRuntime()
        self.stack = StackPhase("nodes")

    def applies(self, ctx: PhaseContext) -> bool:
        """Every site has node pools."""
        return True

    def inputs(self, ctx: PhaseContext) -> Any:
        """The stack's arguments and the node runtime's settings."""
        return {"stack": self.stack.inputs(ctx), "runtime": self.runtime.inputs(ctx)}

    def plan(self, ctx: PhaseContext) -> PhasePlan:
        """Files on the nodes that would change, then the stack's preview."""
        changes = self.runtime.plan(ctx)
        stack = self.stack.plan(ctx)
        return PhasePlan(NAME, changes + stack.changes, stack.notes)

    def apply(self, ctx: PhaseContext) -> PhaseResult:
        """The nodes' containerd first (so that pods scheduled on the new labels can pull),
        then the stack."""
        runtime = self.runtime.apply(ctx)
        stack = self.stack.apply(ctx)
        configured = [c.name for c in self.runtime.clusters(ctx)]
        where = f"; containerd: {len(runtime)} change(s) on the nodes of {', '.join(configured)}"
        return PhaseResult(
            NAME,
            Status.OK,
            runtime + stack.changes,
            message=stack.message + (where if configured else ""),
            details={**stack.details, "runtime_changed": len(runtime)},
        )

    def destroy_plan(self, ctx: PhaseContext, *, purge: bool) -> PhasePlan:
        """The stack's resources, and the nodes' containerd files put back."""
        plan = self.stack.destroy_plan(ctx, purge=purge)
        plan.notes += [
            f"put back containerd's files on the nodes of cluster {c.name} as they were before"
            " the first bootstrap"
            for c in self.runtime.clusters(ctx)
        ]
        return plan

    def destroy(self, ctx: PhaseContext, *, purge: bool) -> PhaseResult:
        """The stack first (labels and taints), then the nodes' containerd files."""
        stack = self.stack.destroy(ctx, purge=purge)
        runtime = self.runtime.destroy(ctx)
        return PhaseResult(
            NAME,
            Status.OK,
            stack.changes + runtime,
            message=f"{stack.message}; containerd: {len(runtime)} change(s) put back",
        )


def phase() -> NodesPhase:
    """The phase as bootstrap loads it."""
    return NodesPhase()
