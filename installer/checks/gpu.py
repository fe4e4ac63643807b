"""The GPU probe: what `nvidia-smi` says about a node's GPUs, compared with the inventory.

The probe runs two read-only queries on the node (over SSH):

    nvidia-smi --query-gpu=index,name,uuid,memory.total,driver_version,mig.mode.current \
        --format=csv,noheader,nounits
    nvidia-smi -L

and compares model, count and memory with the pool's `gpu`. Model names are compared the way
GPU feature discovery labels them (`NVIDIA H100 80GB HBM3` -> `NVIDIA-H100-80GB-HBM3`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from installer.inventory.models import PoolGpu

QUERY_FIELDS = ("index", "name", "uuid", "memory.total", "driver_version", "mig.mode.current")
QUERY_ARGV = (
    "nvidia-smi",
    f"--query-gpu={','.join(QUERY_FIELDS)}",
    "--format=csv,noheader,nounits",
)
LIST_ARGV = ("nvidia-smi", "-L")
DRIVER_ROOT = "/run/nvidia/driver"
"""Where the GPU Operator's driver container mounts its root on the host: with a containerised
driver the host has no `nvidia-smi` of its own, and NVIDIA's guide runs it chrooted there."""
IN_DRIVER_ROOT = ("sudo", "-n", "chroot", DRIVER_ROOT)
MEMORY_TOLERANCE = 0.05
"""nvidia-smi reports usable memory: an "80GB" H100 shows 81559 MiB, not 81920."""

_MIG_LINE = re.compile(r"^\s*MIG\s+(?P<profile>\S+)\s+Device\s+\d+:")
_GPU_LINE = re.compile(r"^GPU\s+(?P<index>\d+):")


class ProbeError(Exception):
    """nvidia-smi did not answer with GPU facts (no driver, not installed, garbled output)."""


@dataclass(frozen=True)
class CommandResult:
    """Exit status and output of one command on a host."""

    rc: int
    stdout: str
    stderr: str = ""


class CommandRunner(Protocol):
    """Something that runs an argv on a host: the SSH adapter, or a local runner."""

    def run(self, argv: list[str], *, timeout_s: float = 30.0) -> CommandResult:
        """Run `argv` (never through a shell) and return its result."""
        ...


@dataclass(frozen=True)
class Gpu:
    """One GPU as nvidia-smi reports it."""

    index: int
    name: str
    uuid: str
    memory_mib: int | None
    driver: str
    mig_enabled: bool
    mig_devices: tuple[str, ...] = ()
    """MIG profiles of the slices carved from this GPU (`1g.10gb`, ...)."""

    @property
    def product(self) -> str:
        """The name as GPU feature discovery puts it in `nvidia.com/gpu.product`."""
        return gfd_product(self.name)


@dataclass(frozen=True)
class GpuProbe:
    """The GPUs of one node."""

    gpus: tuple[Gpu, ...] = field(default_factory=tuple)

    @property
    def count(self) -> int:
        """Number of physical GPUs."""
        return len(self.gpus)

    @property
    def drivers(self) -> list[str]:
        """Driver versions reported (one on a healthy node)."""
        return sorted({g.driver for g in self.gpus})

    def mig_slices(self) -> dict[str, int]:
        """MIG slices by profile across all GPUs."""
        return dict(Counter(p for g in self.gpus for p in g.mig_devices))


def gfd_product(name: str) -> str:
    """`NVIDIA H100 80GB HBM3` -> `NVIDIA-H100-80GB-HBM3` (GFD replaces spaces with dashes)."""
    return "-".join(name.split())


def _int_or_none(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.isdigit() else None


def parse_query(text: str) -> list[Gpu]:
    """Parse the CSV of `nvidia-smi --query-gpu=...` (QUERY_FIELDS, noheader, nounits)."""
    gpus = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != len(QUERY_FIELDS) or not cells[0].isdigit():
            raise ProbeError(f"nvidia-smi output line {number} is not a GPU record: {line[:120]!r}")
        index, name, uuid, memory, driver, mig = cells
        gpus.append(
            Gpu(
                index=int(index),
                name=name,
                uuid=uuid,
                memory_mib=_int_or_none(memory),
                driver=driver,
                mig_enabled=mig.lower() == "enabled",
            )
        )
    return gpus


def parse_list(text: str) -> dict[int, tuple[str, ...]]:
    """MIG profiles per GPU index from `nvidia-smi -L`."""
    slices: dict[int, list[str]] = {}
    current: int | None = None
    for line in text.splitlines():
        gpu = _GPU_LINE.match(line)
        if gpu:
            current = int(gpu.group("index"))
            slices.setdefault(current, [])
            continue
        mig = _MIG_LINE.match(line)
        if mig and current is not None:
            slices[current].append(mig.group("profile"))
    return {index: tuple(profiles) for index, profiles in slices.items()}


def parse_probe(query: str, listing: str = "") -> GpuProbe:
    """The node's GPUs from both outputs."""
    gpus = parse_query(query)
    if not gpus:
        raise ProbeError("nvidia-smi listed no GPUs")
    migs = parse_list(listing)
    return GpuProbe(
        tuple(
            Gpu(
                g.index,
                g.name,
                g.uuid,
                g.memory_mib,
                g.driver,
                g.mig_enabled,
                migs.get(g.index, ()),
            )
            for g in gpus
        )
    )


def _failure(result: CommandResult) -> ProbeError:
    text = (result.stdout + "\n" + result.stderr).strip()
    first = text.splitlines()[0] if text else f"exit {result.rc}"
    if result.rc == 127 or "not found" in first.lower():
        return ProbeError("nvidia-smi is not installed on the node (no NVIDIA driver)")
    return ProbeError(f"nvidia-smi failed (exit {result.rc}): {first}")


def _not_installed(result: CommandResult) -> bool:
    text = (result.stdout + "\n" + result.stderr).strip()
    return result.rc == 127 or "not found" in (text.splitlines() or [""])[0].lower()


def probe(runner: CommandRunner, *, timeout_s: float = 30.0) -> GpuProbe:
    """Run nvidia-smi through `runner` and parse what it says.

    A host without `nvidia-smi` is asked again inside the GPU Operator's driver root
    (`sudo -n`: never a password prompt); only when that fails too is the driver missing."""
    prefix: tuple[str, ...] = ()
    query = runner.run(list(QUERY_ARGV), timeout_s=timeout_s)
    if _not_installed(query):
        chrooted = runner.run([*IN_DRIVER_ROOT, *QUERY_ARGV], timeout_s=timeout_s)
        if chrooted.rc != 0:
            raise ProbeError(
                "nvidia-smi is not installed on the node (no NVIDIA driver), nor in a GPU"
                f" Operator driver root at {DRIVER_ROOT}"
            )
        query, prefix = chrooted, IN_DRIVER_ROOT
    if query.rc != 0:
        raise _failure(query)
    listing = runner.run([*prefix, *LIST_ARGV], timeout_s=timeout_s)
    return parse_probe(query.stdout, listing.stdout if listing.rc == 0 else "")


def compare(found: GpuProbe, wanted: PoolGpu) -> list[str]:
    """Differences between a node's GPUs and its pool's `gpu`; empty when they agree."""
    problems = []
    products = sorted({g.product for g in found.gpus})
    if products != [wanted.model]:
        problems.append(f"GPU model is {', '.join(products)}, the pool says {wanted.model}")
    if found.count != wanted.count:
        problems.append(f"{found.count} GPUs found, the pool says {wanted.count}")
    if wanted.memory is not None:
        want_mib = wanted.memory // (1024 * 1024)
        low = [
            g
            for g in found.gpus
            if g.memory_mib is not None and g.memory_mib < want_mib * (1 - MEMORY_TOLERANCE)
        ]
        if low:
            problems.append(
                f"GPU {low[0].index} has {low[0].memory_mib} MiB, the pool says {want_mib} MiB"
            )
    if len(found.drivers) > 1:
        problems.append(f"mixed driver versions {', '.join(found.drivers)}")
    if wanted.mig_profiles:
        have = found.mig_slices()
        for profile, count in sorted(wanted.mig_profiles.items()):
            if have.get(profile, 0) != count:
                problems.append(
                    f"{have.get(profile, 0)} MIG slices {profile} found, the pool says {count}"
                )
    return problems
