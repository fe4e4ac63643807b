"""The GPU probe's parser on nvidia-smi outputs of several GPU models, and the comparison."""

from __future__ import annotations

from pathlib import Path

import pytest

from installer.checks.gpu import (
    IN_DRIVER_ROOT,
    LIST_ARGV,
    QUERY_ARGV,
    CommandResult,
    ProbeError,
    compare,
    gfd_product,
    parse_probe,
    probe,
)
from installer.checks.preflight_kube import evaluate_probes
from installer.inventory.models import NodePool, PoolGpu

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "nvidia_smi"
GiB = 1024**3


def outputs(name: str) -> tuple[str, str]:
    folder = FIXTURES / name
    return (folder / "query.csv").read_text(), (folder / "list.txt").read_text()


@pytest.mark.parametrize(
    ("folder", "product", "count", "memory", "driver"),
    [
        ("a100-sxm4-80gb", "NVIDIA-A100-SXM4-80GB", 8, 81920, "535.183.01"),
        ("h100-sxm5-80gb", "NVIDIA-H100-80GB-HBM3", 8, 81559, "550.90.07"),
        ("l40s", "NVIDIA-L40S", 4, 46068, "550.54.15"),
        ("t4", "Tesla-T4", 1, 15360, "470.82.01"),
        ("a100-sxm4-40gb-mig", "NVIDIA-A100-SXM4-40GB", 2, 40960, "535.161.08"),
        ("a100-sxm4-40gb-mig-r450", "A100-SXM4-40GB", 1, 40537, "450.80.02"),
    ],
)
def test_parses_models(folder: str, product: str, count: int, memory: int, driver: str) -> None:
    found = parse_probe(*outputs(folder))
    assert found.count == count
    assert {g.product for g in found.gpus} == {product}
    assert {g.memory_mib for g in found.gpus} == {memory}
    assert found.drivers == [driver]
    assert [g.index for g in found.gpus] == list(range(count))


def test_mig_slices_are_counted_per_profile() -> None:
    found = parse_probe(*outputs("a100-sxm4-40gb-mig"))
    assert [g.mig_enabled for g in found.gpus] == [True, False]
    assert found.gpus[0].mig_devices == ("3g.20gb", "2g.10gb", "1g.5gb", "1g.5gb")
    assert found.gpus[1].mig_devices == ()
    assert found.mig_slices() == {"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2}


def test_mig_slices_in_the_r450_layout() -> None:
    """Older drivers: `MIG-GPU-<uuid>/<gi>/<ci>` UUIDs and one space before `Device`."""
    found = parse_probe(*outputs("a100-sxm4-40gb-mig-r450"))
    assert found.gpus[0].mig_enabled is True
    assert found.mig_slices() == {"1g.5gb": 7}
    wanted = PoolGpu(model="A100-SXM4-40GB", count=1, memory=40 * GiB, mig_profiles={"1g.5gb": 7})
    assert compare(found, wanted) == []


def test_mig_lines_are_read_however_indented() -> None:
    query, listing = outputs("a100-sxm4-40gb-mig-r450")
    flush = "\n".join(line.strip() for line in listing.splitlines())
    assert parse_probe(query, flush).mig_slices() == {"1g.5gb": 7}


def test_not_supported_mig_mode_reads_as_disabled() -> None:
    found = parse_probe(*outputs("t4"))
    assert found.gpus[0].mig_enabled is False


def test_garbled_output_is_an_error() -> None:
    error = (FIXTURES / "no-driver" / "output.txt").read_text()
    with pytest.raises(ProbeError, match="not a GPU record"):
        parse_probe(error)
    with pytest.raises(ProbeError, match="no GPUs"):
        parse_probe("\n")


def test_gfd_product_names() -> None:
    assert gfd_product("NVIDIA H100 80GB HBM3") == "NVIDIA-H100-80GB-HBM3"
    assert gfd_product("NVIDIA A100-SXM4-80GB") == "NVIDIA-A100-SXM4-80GB"


def test_compare_agrees_with_matching_pool() -> None:
    found = parse_probe(*outputs("h100-sxm5-80gb"))
    wanted = PoolGpu(model="NVIDIA-H100-80GB-HBM3", count=8, memory=80 * GiB)
    assert compare(found, wanted) == []


def test_compare_names_every_difference() -> None:
    found = parse_probe(*outputs("a100-sxm4-40gb-mig"))
    wanted = PoolGpu(
        model="NVIDIA-A100-SXM4-80GB", count=8, memory=80 * GiB, mig_profiles={"1g.5gb": 7}
    )
    problems = compare(found, wanted)
    assert problems == [
        "GPU model is NVIDIA-A100-SXM4-40GB, the pool says NVIDIA-A100-SXM4-80GB",
        "2 GPUs found, the pool says 8",
        "GPU 0 has 40960 MiB, the pool says 81920 MiB",
        "2 MIG slices 1g.5gb found, the pool says 7",
    ]


class Recorded:
    """A command runner that answers from recorded nvidia-smi outputs (the probe's one seam)."""

    def __init__(self, answers: dict[tuple[str, ...], CommandResult]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def run(self, argv: list[str], *, timeout_s: float = 30.0) -> CommandResult:
        self.calls.append(argv)
        return self.answers[tuple(argv)]


def test_probe_runs_both_queries_as_argv() -> None:
    query, listing = outputs("a100-sxm4-40gb-mig")
    runner = Recorded({QUERY_ARGV: CommandResult(0, query), LIST_ARGV: CommandResult(0, listing)})
    found = probe(runner)
    assert runner.calls == [list(QUERY_ARGV), list(LIST_ARGV)]
    assert found.mig_slices()["1g.5gb"] == 2


def test_probe_reports_driver_failure() -> None:
    folder = FIXTURES / "no-driver"
    rc = int((folder / "rc").read_text())
    runner = Recorded({QUERY_ARGV: CommandResult(rc, (folder / "output.txt").read_text())})
    with pytest.raises(ProbeError, match="couldn't communicate with the NVIDIA driver") as info:
        probe(runner)
    assert "exit 9" in str(info.value)


def test_probes_of_a_pool_name_each_node_that_differs() -> None:
    """The gpu.probe check's verdict over several nodes: one agrees, one has other GPUs."""
    h100 = outputs("h100-sxm5-80gb")
    a100 = outputs("a100-sxm4-80gb")
    pool = NodePool.model_validate(
        {
            "name": "h100",
            "nodes": ["h100-1", "h100-2"],
            "cpu": 192,
            "memory": "2Ti",
            "gpu": {"model": "NVIDIA-H100-80GB-HBM3", "count": 8, "memory": "80Gi"},
        }
    )

    def node(query: str, listing: str) -> Recorded:
        return Recorded({QUERY_ARGV: CommandResult(0, query), LIST_ARGV: CommandResult(0, listing)})

    agreed = evaluate_probes(pool, [("h100-1", node(*h100)), ("h100-2", node(*h100))])
    assert agreed.ok and agreed.message == (
        "nvidia-smi agrees with the pool on 2 node(s): h100-1, h100-2"
    )
    differs = evaluate_probes(pool, [("h100-1", node(*h100)), ("h100-2", node(*a100))])
    assert not differs.ok
    assert differs.message == (
        "h100-2: GPU model is NVIDIA-A100-SXM4-80GB, the pool says NVIDIA-H100-80GB-HBM3"
    )


NOT_ON_HOST = CommandResult(127, "", "bash: nvidia-smi: command not found")


def test_probe_reports_missing_tool() -> None:
    no_root = CommandResult(
        125, "", "chroot: cannot change root directory to '/run/nvidia/driver': No such file"
    )
    runner = Recorded({QUERY_ARGV: NOT_ON_HOST, (*IN_DRIVER_ROOT, *QUERY_ARGV): no_root})
    with pytest.raises(ProbeError, match=r"not installed on the node .* nor in a GPU Operator"):
        probe(runner)


def test_probe_finds_the_gpu_operators_containerised_driver() -> None:
    """With the driver in the GPU Operator's container, nvidia-smi runs chrooted in its root."""
    query, listing = outputs("h100-sxm5-80gb")
    runner = Recorded(
        {
            QUERY_ARGV: NOT_ON_HOST,
            (*IN_DRIVER_ROOT, *QUERY_ARGV): CommandResult(0, query),
            (*IN_DRIVER_ROOT, *LIST_ARGV): CommandResult(0, listing),
        }
    )
    found = probe(runner)
    assert found.count == 8 and {g.product for g in found.gpus} == {"NVIDIA-H100-80GB-HBM3"}
    assert runner.calls[-1] == ["sudo", "-n", "chroot", "/run/nvidia/driver", "nvidia-smi", "-L"]
