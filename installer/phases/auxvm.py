"""The `auxvm` phase: Ansible turns the auxiliary VM into the site's artifact hub.

Before the play: the host key is pinned (known_hosts line checked against the inventory), the
site CA and the hub's server certificate exist in the state folder, the hub login's passwords
exist there (0600). The play (`playbooks/aux-vm.yml`) reads the passwords from those files by
path, so no secret value is an Ansible variable. `plan()` runs the play in check mode.

After each successful run the inventory it used is written to
`<state>/ansible/aux-vm.inventory.json`, so an operator can run
`ansible-playbook -i <that file> playbooks/aux-vm.yml` by hand.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from installer.airgap.hubprograms import (
    CHARTMUSEUM,
    DEVPI_WHEELS,
    HUB_DIR,
    REGISTRY,
    extract_hub,
)
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
from installer.engines.ssh import SshTarget, pinned_known_hosts_line
from installer.errors import BadInputError, EnvironmentProblem, FailedError, InstallerError
from installer.inventory import Inventory
from installer.overrides import env_override
from installer.phases.auxvm_probe import (
    ProbeRecord,
    ProbeSpec,
    forget,
    inputs_digest,
    load_record,
    probe_error,
    read_vm,
    save_record,
)
from installer.phases.base import Change, Event, PhaseContext, PhasePlan, PhaseResult, Status
from installer.pki import HubPki, ensure_pki, plan_pki, server_names
from installer.site import dns_zones, hub_hostname
from installer.state import (
    HUB_PASSWORD_SECRET,
    HUB_PULL_PASSWORD_SECRET,
    HUB_PULL_USER,
    HUB_USER,
    StateDir,
)

log = logging.getLogger("installer.phases.auxvm")

NAME = "auxvm"
PLAYBOOK = Path(__file__).resolve().parents[2] / "playbooks" / "aux-vm.yml"
REMOVE_PLAYBOOK = PLAYBOOK.with_name("aux-vm-remove.yml")
DEVPI_ROOT_PASSWORD = "devpi-root-password"  # noqa: S105 - the name of a secret file
HOST = "aux-vm"

# Controller-side sources of the hub's programs. An air-gapped site gets them from the bundle
# (its `hub` items, extracted into `<state>/airgap/hub/`); the variables override, for
# development (the lab's stand-ins).
ENV_CHARTMUSEUM = "INSTALLER_HUB_CHARTMUSEUM_BINARY"
ENV_DEVPI_WHEELS = "INSTALLER_HUB_DEVPI_WHEELHOUSE"
ENV_REGISTRY = "INSTALLER_HUB_REGISTRY_BINARY"

# The play's variables naming controller-side files it copies or reads: their content is part of
# the drift probe's inputs digest.
LOCAL_FILE_VARS = (
    "hub_password_file",
    "hub_pull_password_file",
    "hub_devpi_root_password_file",
    "hub_tls_ca_cert_file",
    "hub_tls_cert_file",
    "hub_tls_key_file",
    "hub_registry_binary_src",
    "hub_chartmuseum_binary_src",
    "hub_devpi_wheelhouse_src",
)


@dataclass(frozen=True)
class HubSources:
    """Where the play copies service programs from, on the installer's machine."""

    chartmuseum_binary: Path | None
    devpi_wheelhouse: Path | None
    registry_binary: Path | None


def hub_sources(
    bundle_root: Path | None, programs_dir: Path | None = None, *, guarded: bool = False
) -> HubSources:
    """Find the hub's programs: environment overrides, then `<bundle_root>/hub/<name>` (the
    bundle's extracted hub items, see `installer.airgap.hubprograms`), then the inventory's
    `aux_vm.programs_dir` (the same layout), then PATH (ChartMuseum only).

    With `guarded` (a bundle given, or an air-gapped site) an override is refused unless the
    development flag allows it (`installer.overrides`)."""

    def pick(env: str, in_bundle: str, on_path: str | None) -> Path | None:
        given = env_override(env, guarded=guarded, replaces="the signed bundle's hub program")
        if given is not None:
            return given
        if bundle_root is not None and (bundle_root / HUB_DIR / in_bundle).exists():
            return bundle_root / HUB_DIR / in_bundle
        if programs_dir is not None and (programs_dir / in_bundle).exists():
            return programs_dir / in_bundle
        found = shutil.which(on_path) if on_path else None
        return Path(found) if found else None

    return HubSources(
        chartmuseum_binary=pick(ENV_CHARTMUSEUM, CHARTMUSEUM, "chartmuseum"),
        devpi_wheelhouse=pick(ENV_DEVPI_WHEELS, DEVPI_WHEELS, None),
        registry_binary=pick(ENV_REGISTRY, REGISTRY, None),
    )


def bundle_hub_root(ctx: PhaseContext) -> Path | None:
    """The hub programs of `--bundle`, verified and extracted into `<state>/airgap/hub/` (re-used
    when already there from the same bundle): `<state>/airgap`, or None without a bundle or
    when the bundle has none."""
    if ctx.bundle is None:
        return None
    ctx.step(NAME, f"extracting the hub's programs from {ctx.bundle.path}")
    root = ctx.state.root / "airgap"
    return root if extract_hub(ctx.bundle, root) is not None else None


def site_hub_sources(ctx: PhaseContext) -> HubSources:
    """The hub's programs for this run; an air-gapped site without them is refused (exit 2)."""
    guarded = ctx.bundle is not None or ctx.inventory.site.airgapped
    sources = hub_sources(bundle_hub_root(ctx), ctx.inventory.aux_vm.programs_dir, guarded=guarded)
    if not ctx.inventory.site.airgapped:
        return sources
    missing = [
        what
        for what, path in (
            (f"ChartMuseum ({ENV_CHARTMUSEUM})", sources.chartmuseum_binary),
            (f"the DevPI wheelhouse ({ENV_DEVPI_WHEELS})", sources.devpi_wheelhouse),
        )
        if path is None
    ]
    if missing:
        where = (
            "no --bundle was given"
            if ctx.bundle is None
            else f"the bundle {ctx.bundle} carries no hub programs"
        )
        raise BadInputError(
            f"air-gapped site: no source for the hub's programs: {', '.join(missing)}; {where}",
            remedy="bootstrap with --bundle/--verify-key of a bundle built with"
            " `installer airgap-bundle --hub-from DIR` (DIR: chartmuseum, registry,"
            " devpi-wheels/*.whl), or point the variables named above at the programs",
        )
    return sources


def hub_vars(inv: Inventory, state: StateDir, pki: HubPki, sources: HubSources) -> dict[str, Any]:
    """The play's variables for this site (plain data: paths, ports, names; never a secret)."""
    vm = inv.aux_vm
    svc = vm.services

    def src(path: Path | None) -> str:
        return str(path) if path is not None else ""

    return {
        "hub_hostname": hub_hostname(inv),
        "hub_address": str(vm.address),
        "hub_login": HUB_USER,
        "hub_password_file": str(state.secrets / HUB_PASSWORD_SECRET),
        "hub_pull_login": HUB_PULL_USER,
        "hub_pull_password_file": str(state.secrets / HUB_PULL_PASSWORD_SECRET),
        "hub_tls_ca_cert_file": str(pki.ca_cert),
        "hub_tls_cert_file": str(pki.server_cert),
        "hub_tls_key_file": str(pki.server_key),
        "hub_registry_port": svc.registry.port,
        "hub_registry_push_port": svc.registry.push_port,
        "hub_registry_data": svc.registry.data_path,
        "hub_registry_binary_src": src(sources.registry_binary),
        "hub_chartmuseum_port": svc.chartmuseum.port,
        "hub_chartmuseum_push_port": svc.chartmuseum.push_port,
        "hub_chartmuseum_data": svc.chartmuseum.data_path,
        "hub_chartmuseum_binary_src": src(sources.chartmuseum_binary),
        "hub_devpi_port": svc.devpi.port,
        "hub_devpi_data": svc.devpi.data_path,
        "hub_devpi_wheelhouse_src": src(sources.devpi_wheelhouse),
        "hub_devpi_root_password_file": str(state.secrets / DEVPI_ROOT_PASSWORD),
        "hub_dns_enabled": vm.dns.enabled,
        "hub_dns_port": vm.dns.port,
        "hub_dns_upstreams": [str(ip) for ip in vm.dns.upstream_servers],
        "hub_dns_zones": dns_zones(inv),
        "hub_dns_hosts": [{"name": hub_hostname(inv), "address": str(vm.address)}],
    }


def vm_ssh_target(inv: Inventory) -> SshTarget:
    """The VM over SSH as the inventory describes it (`aux_vm.ssh`)."""
    ssh = inv.aux_vm.ssh
    return SshTarget(
        address=str(inv.aux_vm.address),
        port=ssh.port,
        user=ssh.user,
        private_key=ssh.private_key.resolve().get_secret_value(),
        known_hosts=ssh.known_hosts,
        fingerprint=ssh.host_key_fingerprint,
    )


def vm_host(inv: Inventory, known_hosts_line: str) -> AnsibleHost:
    """The VM as an Ansible host, its key pinned to `known_hosts_line`."""
    ssh = inv.aux_vm.ssh
    key_path = ssh.private_key.path()
    return AnsibleHost(
        name=HOST,
        address=str(inv.aux_vm.address),
        port=ssh.port,
        user=ssh.user,
        known_hosts_line=known_hosts_line,
        private_key_file=key_path,
        private_key=None if key_path is not None else ssh.private_key.resolve(),
        become=ssh.become,
    )


@dataclass(frozen=True)
class Probe:
    """What the drift probe found: `drift` is None when the VM matches the record."""

    digest: str
    drift: str | None

    @property
    def matches(self) -> bool:
        """True when the play can be skipped."""
        return self.drift is None


_VM_REMEDY = {
    FailureReason.HOST_KEY: (
        "the VM presented another host key than the pinned one: check the key on the VM's"
        " console and update aux_vm.ssh.known_hosts / host_key_fingerprint"
    ),
    FailureReason.LOGIN: "authorize the inventory's SSH key for the user on the VM",
    FailureReason.UNREACHABLE: (
        "check that the VM is up and its address and SSH port in the inventory"
    ),
    FailureReason.SUDO: "give the SSH user passwordless sudo on the VM, or log in as root",
}


def _failure_error(result: PlaybookResult, inv: Inventory) -> EnvironmentProblem | FailedError:
    """The error for a failed play: exit 3 for an unreachable VM or a login without sudo, 1 for
    a failed task (the engine classifies, `PlaybookResult.failure`; this names the VM)."""
    where = f"{inv.aux_vm.ssh.user}@{inv.aux_vm.address}:{inv.aux_vm.ssh.port}"
    logs = f"; Ansible's log: {result.artifacts / 'stdout'}"
    failure = result.failure or PlaybookFailure(
        FailureReason.RUN, HOST, "(play)", f"ansible ended {result.status}"
    )
    step = f"step '{failure.task}'"
    match failure.reason:
        case FailureReason.HOST_KEY | FailureReason.LOGIN | FailureReason.UNREACHABLE:
            return EnvironmentProblem(
                f"host {where} unreachable at {step}: {failure.message}{logs}",
                remedy=_VM_REMEDY[failure.reason],
            )
        case FailureReason.SUDO:
            return EnvironmentProblem(
                f"host {where}: {step}: {inv.aux_vm.ssh.user} cannot use sudo:"
                f" {failure.message}{logs}",
                remedy=_VM_REMEDY[failure.reason],
            )
    return FailedError(
        f"host {where}: {step} failed: {failure.message}{logs}", remedy=failure.remedy
    )


class AuxVmPhase:
    """The artifact hub VM, converged by `playbooks/aux-vm.yml`."""

    name = NAME

    def __init__(self, engine: AnsibleEngine | None = None, playbook: Path = PLAYBOOK) -> None:
        self._engine = engine or AnsibleEngine()
        self._playbook = playbook

    def applies(self, ctx: PhaseContext) -> bool:
        """The hub is part of every site."""
        return True

    def inputs(self, ctx: PhaseContext) -> Any:
        """The VM's part of the inventory and the DNS zones it serves."""
        inv = ctx.inventory
        return {
            "aux_vm": inv.aux_vm.model_dump(mode="json"),
            "domain": inv.site.domain,
            "airgapped": inv.site.airgapped,
            "zones": dns_zones(inv),
        }

    def _names(self, inv: Inventory) -> tuple[list[str], list[str]]:
        return server_names(
            hub_hostname(inv), list(inv.aux_vm.tls.extra_names), str(inv.aux_vm.address)
        )

    def _inputs(self, ctx: PhaseContext, pki: HubPki) -> tuple[AnsibleHost, dict[str, Any]]:
        """The pinned host and the play's variables (secrets created once in the state)."""
        inv = ctx.inventory
        # The programs first: a bad bundle is refused before the VM is even contacted.
        sources = site_hub_sources(ctx)
        ctx.step(NAME, f"checking the host key of {inv.aux_vm.address}")
        line = pinned_known_hosts_line(vm_ssh_target(inv))
        for secret in (HUB_PASSWORD_SECRET, HUB_PULL_PASSWORD_SECRET, DEVPI_ROOT_PASSWORD):
            ctx.state.secret(secret)
        return vm_host(inv, line), hub_vars(inv, ctx.state, pki, sources)

    def write_inventory(self, ctx: PhaseContext) -> Path:
        """Prepare everything the play needs (PKI, secrets, pinned key) and write the Ansible
        inventory for hand runs, without running the play; returns the inventory's path."""
        inv = ctx.inventory
        dns, ips = self._names(inv)
        pki, _ = ensure_pki(ctx.state, inv.aux_vm.tls, inv.site.name, dns, ips)
        host, extra = self._inputs(ctx, pki)
        return self._write_inventory(ctx.state, host, extra)

    def _run(
        self, ctx: PhaseContext, host: AnsibleHost, extra: dict[str, Any], check: bool
    ) -> PlaybookResult:
        def progress(p: Progress) -> None:
            if p.kind == "task":
                ctx.emit(Event("step", NAME, p.name, {"role": p.role}))
            elif p.kind == "changed":
                ctx.emit(Event("change", NAME, f"{p.host}: {p.name}", {"role": p.role}))
            elif p.kind in ("failed", "unreachable"):
                ctx.emit(Event("error", NAME, f"{p.host}: {p.name}: {p.message}"))

        run = PlaybookRun(
            playbook=self._playbook,
            groups={"aux_vm": [host]},
            run_dir=ctx.run_dir,
            extra_vars=extra,
            check=check,
            ident="auxvm-check" if check else "auxvm",
        )
        result = self._engine.run(run, progress)
        if result.ok and not check:
            # What converged the VM, for operators who run the play by hand.
            self._write_inventory(ctx.state, host, extra)
        return result

    def _digest(self, host: AnsibleHost, extra: dict[str, Any]) -> str:
        pinned = {
            "address": host.address,
            "port": host.port,
            "user": host.user,
            "known_hosts_line": host.known_hosts_line,
            "become": host.become,
            "python": host.python,
            "private_key_file": str(host.private_key_file or ""),
        }
        local = {k: Path(extra[k]) for k in LOCAL_FILE_VARS if extra.get(k)}
        roots = [self._playbook.parent, self._playbook.parents[1] / "templates" / "aux-vm"]
        return inputs_digest(extra, pinned, local, roots)

    def _probe(self, ctx: PhaseContext, host: AnsibleHost, extra: dict[str, Any]) -> Probe:
        """Compare the VM with the record of the last converging run (one SSH command)."""
        digest = self._digest(host, extra)
        record = load_record(ctx.state.root)
        if record is None:
            return Probe(digest, "no record of an earlier converging run")
        if record.inputs != digest:
            return Probe(digest, "the play's inputs changed since the last converging run")
        ctx.step(NAME, "probing the VM for drift")
        try:
            items = read_vm(
                vm_ssh_target(ctx.inventory), record.spec, become=host.become, python=host.python
            )
        except (InstallerError, ValueError, OSError) as exc:
            log.warning("auxvm: drift probe failed (%s); the play runs", probe_error(exc))
            return Probe(digest, f"the probe could not read the VM: {probe_error(exc)}")
        drifted = record.differences(items)
        if drifted:
            more = f" and {len(drifted) - 8} more" if len(drifted) > 8 else ""
            shown = ", ".join(drifted[:8]) + more
            return Probe(digest, f"drift probe: changed since the last converging run: {shown}")
        return Probe(digest, None)

    def _record(
        self, ctx: PhaseContext, result: PlaybookResult, host: AnsibleHost, digest: str
    ) -> None:
        """Read what the play manages on the VM and record it; a failure only costs the next
        run its shortcut."""
        try:
            spec = ProbeSpec.from_fact(result.facts.get(HOST, {}).get("hub_probe_spec"))
            items = read_vm(
                vm_ssh_target(ctx.inventory), spec.to_json(), become=host.become, python=host.python
            )
        except (InstallerError, ValueError, OSError) as exc:
            log.warning("auxvm: no drift probe record (%s); the next run plays", probe_error(exc))
            return
        save_record(ctx.state.root, ProbeRecord(digest, spec.to_json(), items))

    def _write_inventory(self, state: StateDir, host: AnsibleHost, extra: dict[str, Any]) -> Path:
        folder = state.root / "ansible"
        folder.mkdir(parents=True, mode=0o700, exist_ok=True)
        known = folder / "aux-vm.known_hosts"
        known.write_text(host.known_hosts_line + "\n", encoding="utf-8")
        doc = inventory_document(
            {"aux_vm": [host]},
            folder,
            known_hosts=known,
            inline_keys=False,
            group_vars={"aux_vm": extra},
        )
        target = folder / "aux-vm.inventory.json"
        target.write_text(json.dumps(doc, indent=2) + "\n")
        return target

    def plan(self, ctx: PhaseContext) -> PhasePlan:
        """The play in check mode: every task that would change, plus certificates to issue."""
        inv = ctx.inventory
        dns, ips = self._names(inv)
        pki_plan = plan_pki(ctx.state, inv.aux_vm.tls, dns, ips)
        plan = PhasePlan(NAME)
        if pki_plan.create_ca:
            plan.changes.append(Change("installer", "create", "certificate", "site CA"))
        if pki_plan.issue_server_cert:
            plan.changes.append(
                Change("installer", "create", "certificate", "hub server", pki_plan.reason)
            )
        if pki_plan.create_ca or pki_plan.issue_server_cert:
            # Check mode needs files to compare; a throwaway PKI in the run folder stands in.
            scratch = StateDir(ctx.run_dir / "plan-pki")
            pki, _ = ensure_pki(scratch, inv.aux_vm.tls, inv.site.name, dns, ips)
        else:
            pki, _ = ensure_pki(ctx.state, inv.aux_vm.tls, inv.site.name, dns, ips)
        host, extra = self._inputs(ctx, pki)
        if not plan.changes:
            probe = self._probe(ctx, host, extra)
            if probe.matches:
                plan.notes.append(_MATCHED)
                return plan
            plan.notes.append(f"{probe.drift}: the play runs in check mode")
        result = self._run(ctx, host, extra, check=True)
        if not result.ok:
            raise _failure_error(result, inv)
        for outcome in result.changed:
            plan.changes.append(Change("vm", "update", "task", outcome.task, outcome.role))
        plan.notes.append(f"check mode: {result.changed_count} task(s) would change")
        return plan

    def apply(self, ctx: PhaseContext) -> PhaseResult:
        """Converge the VM; a second run reports no change."""
        inv = ctx.inventory
        dns, ips = self._names(inv)
        pki, pki_plan = ensure_pki(ctx.state, inv.aux_vm.tls, inv.site.name, dns, ips)
        changes: list[Change] = []
        if pki_plan.create_ca:
            changes.append(Change("installer", "create", "certificate", "site CA"))
        if pki_plan.issue_server_cert:
            changes.append(Change("installer", "create", "certificate", "hub server"))
        host, extra = self._inputs(ctx, pki)
        probe = self._probe(ctx, host, extra)
        if probe.matches and not changes:
            return PhaseResult(
                NAME,
                Status.OK,
                message=f"hub ready on {hub_hostname(inv)} ({inv.aux_vm.address}); changed=0"
                " (drift probe: the VM is as the last converging run left it)",
                details={"changed": 0, "probe": "matched", "ca_cert": str(pki.ca_cert)},
            )
        ctx.step(NAME, f"running the play: {probe.drift}")
        result = self._run(ctx, host, extra, check=False)
        if not result.ok:
            raise _failure_error(result, inv)
        self._record(ctx, result, host, probe.digest)
        changes += [Change("vm", "update", "task", o.task, o.role) for o in result.changed]
        return PhaseResult(
            NAME,
            Status.OK,
            changes,
            message=f"hub ready on {hub_hostname(inv)} ({inv.aux_vm.address});"
            f" changed={result.changed_count}",
            details={
                "changed": result.changed_count,
                "hosts": {h: s.__dict__ for h, s in result.hosts.items()},
                "artifacts": str(result.artifacts),
                "ca_cert": str(pki.ca_cert),
                "probe": "recorded" if load_record(ctx.state.root) else "none",
            },
        )

    def _data_paths(self, inv: Inventory) -> dict[str, str]:
        svc = inv.aux_vm.services
        return {
            "hub_registry_data": svc.registry.data_path,
            "hub_chartmuseum_data": svc.chartmuseum.data_path,
            "hub_devpi_data": svc.devpi.data_path,
        }

    def destroy_plan(self, ctx: PhaseContext, *, purge: bool) -> PhasePlan:
        """Without `purge` the hub stays; with it, its services, folders and data go."""
        if not purge:
            return PhasePlan(NAME, notes=[_KEPT])
        paths = ", ".join(self._data_paths(ctx.inventory).values())
        target = f"{hub_hostname(ctx.inventory)} ({ctx.inventory.aux_vm.address})"
        change = Change("vm", "delete", "hub", target, f"services, folders and data: {paths}")
        return PhasePlan(NAME, [change])

    def destroy(self, ctx: PhaseContext, *, purge: bool) -> PhaseResult:
        """With `purge`, take the hub off the VM (`playbooks/aux-vm-remove.yml`)."""
        if not purge:
            return PhaseResult(NAME, Status.OK, message=_KEPT)
        inv = ctx.inventory
        forget(ctx.state.root)
        ctx.step(NAME, f"checking the host key of {inv.aux_vm.address}")
        host = vm_host(inv, pinned_known_hosts_line(vm_ssh_target(inv)))
        run = PlaybookRun(
            playbook=self._playbook.with_name(REMOVE_PLAYBOOK.name),
            groups={"aux_vm": [host]},
            run_dir=ctx.run_dir,
            extra_vars=self._data_paths(inv),
            ident="auxvm-remove",
        )
        result = self._engine.run(run)
        if not result.ok:
            raise _failure_error(result, inv)
        changes = [Change("vm", "delete", "task", o.task, o.role) for o in result.changed]
        return PhaseResult(
            NAME,
            Status.OK,
            changes,
            message=f"hub removed from {hub_hostname(inv)}; changed={result.changed_count}",
        )


_MATCHED = (
    "drift probe: the VM is as the last converging run left it (one SSH command); the play did"
    " not run"
)
_KEPT = "the hub stays on the VM with its images, charts and wheels (--purge removes it)"


def phase() -> AuxVmPhase:
    """The phase as bootstrap loads it."""
    return AuxVmPhase()


__all__ = [
    "AuxVmPhase",
    "HubSources",
    "hub_sources",
    "hub_vars",
    "phase",
    "site_hub_sources",
]
