"""Preflight checks of the auxiliary VM, over SSH: login, sudo, OS, disk, ports, clock.

Evaluation is split from collection: `evaluate_*` functions read command output and return a
finding, so they are tested on recorded outputs; the `check_*` functions run the commands.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import PurePosixPath

from installer.checks.catalog import make
from installer.checks.context import ServiceKind, SiteAccess, identify_service
from installer.checks.dnsquery import DnsError, query
from installer.checks.framework import Check, Finding, Severity, note, passed, problem
from installer.errors import FailedError
from installer.site import cluster_names

GiB = 1024**3
SUPPORTED_OS: Mapping[str, tuple[str, ...]] = {
    "ubuntu": ("20.04", "22.04", "24.04"),
    "debian": ("11", "12", "13"),
    "rhel": ("8", "9"),
    "rocky": ("8", "9"),
    "almalinux": ("8", "9"),
}
HUB_MINIMUM: Mapping[ServiceKind, int] = {
    "registry": 20 * GiB,
    "chartmuseum": 1 * GiB,
    "devpi": 5 * GiB,
}
"""Free space each service's data needs before any bundle is loaded."""
BUNDLE_EXPANSION = 1.5
"""Bundle bytes -> bytes on the VM: layers are already compressed, so the registry stores about
what the bundle holds; the rest is room for manifests, chart and wheel copies and growth."""
_OWNER = re.compile(r'\("([^"]+)",pid=(\d+)')
PACKAGED_SERVICES = frozenset({"docker-registry.service", "dnsmasq.service", "nginx.service"})
"""Debian's own services of the packages the hub installs (the role's hub_package_services): on a
VM whose image carries the packages they start at boot and hold the hub's ports (5000, 53); the
auxvm phase stops and disables them before the hub's services start."""
CLOCK_WARN_S = 2.0
CLOCK_FAIL_S = 30.0


def human(size: int) -> str:
    """Bytes for people: `70.1 GiB`."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{value:.1f} TiB"


def evaluate_os(os_release: str) -> Finding:
    """Is `/etc/os-release` a supported distribution and version?"""
    fields: dict[str, str] = {}
    for line in os_release.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip('"')
    os_id, version = fields.get("ID", ""), fields.get("VERSION_ID", "")
    pretty = fields.get("PRETTY_NAME") or f"{os_id} {version}".strip() or "unknown"
    major = version.split(".")[0]
    allowed = SUPPORTED_OS.get(os_id)
    if allowed is None:
        return problem(
            f"{pretty}: the family {os_id or '?'} is not supported",
            "use Ubuntu, Debian, RHEL, Rocky or AlmaLinux for the VM",
            os=os_id,
        )
    if version not in allowed and major not in allowed:
        return problem(
            f"{pretty}: version {version} is not supported (supported: {', '.join(allowed)})",
            "upgrade the VM to a supported release",
            os=os_id,
            version=version,
        )
    return passed(f"{pretty} is supported", os=os_id, version=version)


@dataclass(frozen=True)
class DiskSpace:
    """`df` of one path: its mount point and the bytes available there."""

    path: str
    mount: str
    available: int


def parse_df(text: str) -> list[DiskSpace]:
    """`df -B1 --output=file,target,avail ...` (header line first)."""
    rows = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[-1].isdigit():
            rows.append(DiskSpace(parts[0], parts[1], int(parts[2])))
    return rows


def evaluate_disk(needs: Mapping[str, int], space: list[DiskSpace]) -> Finding:
    """Do the paths' filesystems have the space `needs` (path -> bytes) asks for, together?"""
    by_path = {row.path: row for row in space}
    per_mount: dict[str, int] = {}
    available: dict[str, int] = {}
    for path, need in needs.items():
        chain = [str(p) for p in (PurePosixPath(path), *PurePosixPath(path).parents)]
        row = next((by_path[p] for p in chain if p in by_path), None)
        if row is None:
            return problem(f"df did not report {path} or any parent", "check that df works")
        per_mount[row.mount] = per_mount.get(row.mount, 0) + need
        available[row.mount] = row.available
    short = [
        f"{mount}: {human(available[mount])} free, {human(need)} needed"
        for mount, need in sorted(per_mount.items())
        if available[mount] < need
    ]
    free = ", ".join(
        f"{m}: {human(available[m])} free, {human(per_mount[m])} needed" for m in sorted(per_mount)
    )
    if short:
        return problem("; ".join(short), "grow the VM's data disk or move the data paths")
    return passed(free, mounts={m: available[m] for m in per_mount})


def parse_listening(text: str) -> set[int]:
    """Ports in `ss -Htlnu` output (any local address)."""
    ports = set()
    for line in text.splitlines():
        parts = line.split()
        # netid state recv-q send-q local peer (with -u and -t both, netid comes first)
        local = next((p for p in parts if ":" in p and p[-1].isdigit()), None)
        if local is not None:
            ports.add(int(local.rsplit(":", 1)[1]))
    return ports


def evaluate_clock(remote_epoch: float, before: float, after: float) -> Finding:
    """Skew between this host (midpoint of the round trip) and a remote clock."""
    skew = remote_epoch - (before + after) / 2
    slack = (after - before) / 2
    beyond = abs(skew) - slack
    detail = f"clock differs by {skew:+.1f}s (measured within {slack:.2f}s)"
    if beyond > CLOCK_FAIL_S:
        return problem(detail, "run an NTP client on both hosts", skew_s=round(skew, 3))
    if beyond > CLOCK_WARN_S:
        return problem(
            detail, "run an NTP client on both hosts", severity=Severity.WARN, skew_s=round(skew, 3)
        )
    return passed(detail, skew_s=round(skew, 3))


# --- collection ---------------------------------------------------------------------------


def check_ssh(access: SiteAccess) -> Finding:
    """Log in and run a harmless command."""
    vm = access.vm()
    result = vm.run(["uname", "-nr"])
    if result.rc != 0:
        return problem(f"logged in to {vm.where}, but uname failed: {result.stderr.strip()}")
    pinned = "known_hosts" if access.inventory.aux_vm.ssh.known_hosts else "pinned fingerprint"
    return passed(f"{vm.where}: logged in, host key matches the {pinned} ({result.stdout.strip()})")


def check_sudo(access: SiteAccess) -> Finding:
    """`sudo -n true` must succeed when the inventory says become."""
    if not access.inventory.aux_vm.ssh.become:
        return note("ssh.become is false: changes that need root will not be attempted")
    result = access.vm().run(["sudo", "-n", "true"])
    if result.rc != 0:
        return problem(
            f"sudo -n true failed: {result.stderr.strip() or f'exit {result.rc}'}",
            f"allow {access.inventory.aux_vm.ssh.user} passwordless sudo (NOPASSWD in sudoers)",
        )
    return passed("passwordless sudo works")


def check_os(access: SiteAccess) -> Finding:
    """Read /etc/os-release."""
    result = access.vm().run(["cat", "/etc/os-release"])
    if result.rc != 0:
        return problem("cannot read /etc/os-release on the VM")
    return evaluate_os(result.stdout)


def disk_needs(access: SiteAccess, bundle_size: int | None) -> dict[str, int]:
    """Bytes each data path needs free."""
    services = access.inventory.aux_vm.services
    needs = {
        services.registry.data_path: HUB_MINIMUM["registry"],
        services.chartmuseum.data_path: HUB_MINIMUM["chartmuseum"],
        services.devpi.data_path: HUB_MINIMUM["devpi"],
    }
    if bundle_size:
        needs[services.registry.data_path] += int(bundle_size * BUNDLE_EXPANSION)
    return needs


def check_disk(access: SiteAccess) -> Finding:
    """`df` on each data path (or its nearest existing parent)."""
    bundle_size = access.bundle_size
    needs = disk_needs(access, bundle_size)
    candidates = sorted(
        {str(p) for path in needs for p in (PurePosixPath(path), *PurePosixPath(path).parents)}
    )
    result = access.vm().run(["df", "-B1", "--output=file,target,avail", *candidates])
    space = parse_df(result.stdout)  # df exits 1 for the paths that do not exist yet
    finding = evaluate_disk(needs, space)
    if bundle_size and finding.ok:
        return passed(f"{finding.message} (bundle of {human(bundle_size)} included)")
    return finding


def evaluate_packaged(port: int, units: Mapping[str, str]) -> Finding | None:
    """A port held only by Debian's packaged services (`units`: pid -> systemd unit) passes: the
    auxvm phase stops them. None where another program holds it too."""
    if not units or not set(units.values()) <= PACKAGED_SERVICES:
        return None
    names = ", ".join(sorted(set(units.values())))
    return passed(
        f"port {port} is held by Debian's {names} (the package's own service), which the"
        " auxvm phase stops and disables before the hub's service starts"
    )


def _holders(access: SiteAccess, port: int) -> list[tuple[str, str]]:
    """(program, pid) of every socket listening on the port (TCP or UDP) on the VM."""
    detail = access.vm().run(["sudo", "-n", "ss", "-Htulnp", "sport", "=", f":{port}"])
    return sorted(set(_OWNER.findall(detail.stdout)))


def _units(access: SiteAccess, holders: list[tuple[str, str]]) -> dict[str, str]:
    """pid -> the systemd unit it runs in (`-` or nothing without systemd)."""
    if not holders:
        return {}
    pids = sorted({pid for _, pid in holders})
    result = access.vm().run(["ps", "-o", "pid=,unit=", "-p", ",".join(pids)])
    units: dict[str, str] = {}
    for line in result.stdout.splitlines():
        pid, _, unit = line.strip().partition(" ")
        units[pid] = unit.strip()
    return {pid: units.get(pid, "-") for pid in pids}


def check_port(
    access: SiteAccess, kind: ServiceKind, port: int, listening: Callable[[], set[int]]
) -> Finding:
    """A service port is free, already the hub's own service, or held by a Debian package's own
    service that the auxvm phase stops."""
    if port not in listening():
        return passed(f"port {port} is free")
    answer = identify_service(kind, access.vm_address, port, access.site_ca())
    if answer.state == "ours":
        return passed(f"port {port} already serves the hub's {kind}: {answer.detail}")
    holders = _holders(access, port)
    if answer.state != "other-ca":
        packaged = evaluate_packaged(port, _units(access, holders))
        if packaged:
            return packaged
    owners = sorted({f"{name} (pid {pid})" for name, pid in holders})
    owner = f" by {', '.join(owners)}" if owners else ""
    remedy = f"stop what listens on {port} or change aux_vm.services.{kind}.port"
    if answer.state == "other-ca":
        remedy = (
            "a hub set up from another state folder or CA: run from that folder"
            " (site.state_dir), or re-run the auxvm phase to re-issue its certificates"
        )
    return problem(
        f"port {port} for the {kind} is taken{owner}: {answer.detail}", remedy, port=port
    )


def check_dns_port(access: SiteAccess, port: int, listening: Callable[[], set[int]]) -> Finding:
    """The DNS port is free, already answers for the platform's zone, or is held by Debian's
    dnsmasq service (the auxvm phase stops it)."""
    if port not in listening():
        return passed(f"port {port} (DNS) is free")
    inv = access.inventory
    cluster = inv.clusters[0]
    name = cluster_names(inv, cluster).domain
    want = {str(ip) for ip in cluster.ingress_ips}
    try:
        answer = query(name, access.vm_address, port)
    except DnsError as exc:
        failure = f"port {port} is taken by something that does not answer DNS for {name}: {exc}"
    else:
        if set(answer.addresses) == want:
            return passed(f"port {port} already serves the platform's zone ({name})")
        failure = (
            f"port {port} runs a DNS server that answers {name} with"
            f" {', '.join(answer.addresses) or 'nothing'}, not {', '.join(sorted(want))}"
        )
    if packaged := evaluate_packaged(port, _units(access, _holders(access, port))):
        return packaged
    return problem(failure, "stop the other DNS server on the VM or set aux_vm.dns.port")


def check_clock(access: SiteAccess) -> Finding:
    """Compare the VM's clock with this host's."""
    vm = access.vm()
    before = time.time()
    result = vm.run(["date", "+%s.%N"])
    after = time.time()
    try:
        remote = float(result.stdout.strip())
    except ValueError:
        return problem(f"date printed {result.stdout.strip()!r}, not a timestamp")
    return evaluate_clock(remote, before, after)


class _Listening:
    """`ss` on the VM once for all port checks (they run in parallel)."""

    def __init__(self, access: SiteAccess) -> None:
        self.access = access
        self.ports: set[int] | None = None
        self.lock = threading.Lock()

    def __call__(self) -> set[int]:
        with self.lock:
            if self.ports is None:
                result = self.access.vm().run(["ss", "-Htlnu"])
                if result.rc != 0:
                    raise FailedError(f"ss failed on the VM: {result.stderr.strip()}")
                self.ports = parse_listening(result.stdout)
            return self.ports


def vm_checks(access: SiteAccess) -> list[Check]:
    """Every VM check of preflight."""
    ssh = ("vm.ssh",)
    target = f"vm/{access.vm_address}"
    services = access.inventory.aux_vm.services
    ports: list[tuple[ServiceKind, int]] = [
        ("registry", services.registry.port),
        ("registry", services.registry.push_port),
        ("chartmuseum", services.chartmuseum.port),
        ("chartmuseum", services.chartmuseum.push_port),
        ("devpi", services.devpi.port),
    ]
    ss = _Listening(access)

    checks = [
        make("vm.ssh", target, partial(check_ssh, access), timeout_s=25),
        make("vm.sudo", target, partial(check_sudo, access), requires=ssh),
        make("vm.os", target, partial(check_os, access), requires=ssh),
        make("vm.disk", target, partial(check_disk, access), requires=ssh),
        make("vm.clock", target, partial(check_clock, access), requires=ssh),
    ]
    for kind, port in ports:
        checks.append(
            make(
                "vm.ports",
                f"vm/{access.vm_address}:{port}",
                partial(check_port, access, kind, port, ss),
                requires=ssh,
            )
        )
    dns = access.inventory.aux_vm.dns
    if dns.enabled:
        checks.append(
            make(
                "vm.ports",
                f"vm/{access.vm_address}:{dns.port}",
                partial(check_dns_port, access, dns.port, ss),
                requires=ssh,
            )
        )
    return checks
