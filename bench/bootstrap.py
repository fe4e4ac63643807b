"""Bootstrap benchmark on the lab: a full bootstrap, a no-op re-run, a no-op re-run at 1000 nodes.

In one run, holding the lab-site lock throughout (the lab is shared):

1. the cluster side is destroyed (`installer destroy --skip auxvm`), then `installer bootstrap`
   runs every phase: time per phase, from its JSON events;
2. `installer bootstrap` again, nothing to change: the no-op re-run (goal: at most 15 s);
3. 994 extra kwok nodes join the lab's `a100` pool (they carry the GPU labels its selector
   matches), `installer bootstrap` labels and taints them (its `nodes` phase: the first labelling,
   goal at most 60 s), then the no-op re-run is timed at 1000 nodes (goal: at most 25 s). Peer:
   what an operator would run by hand for the same number of labels and taints (`kubectl
   label/taint --overwrite` of the pool's nodes, second pass), against the no-op `nodes` phase
   (goal: at most 1.5 times the peer).

Also in the no-op part: the `auxvm` phase (its drift probe: one SSH command) against the peer an
operator would otherwise run, `ansible-playbook -i <generated inventory> playbooks/aux-vm.yml`
on the converged hub (nothing to change either).

Each run's peak memory is read by a launcher (`getrusage` in the installer's own process when it
ends): the installer's, and the largest of the processes it started (Pulumi's CLI, the stacks'
programs, Ansible), in MB (goal at 1000 nodes: the installer under 500 MB).

At the end the cluster side is destroyed again and the extra nodes deleted. Prints one line per
figure (`name: seconds` or `name: ours_s peer_s ratio`), the slowest steps of the slowest phase,
and the load average before and after.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config

from tests.e2e.bootstrap.cli import LAB_INVENTORY, site_lock

REPO = Path(__file__).resolve().parents[1]
LAB_STATE = Path(os.environ.get("LAB_STATE", REPO / "lab" / ".state"))
BENCH_LABEL = "onprem-installer.test/bench"
A100 = "NVIDIA-A100-SXM4-80GB"


def lab_env() -> dict[str, str]:
    """This process's environment plus the facts the lab wrote (`export NAME=value`)."""
    env = dict(os.environ)
    for line in (LAB_STATE / "env").read_text(encoding="utf-8").splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.strip("'\"")
    return env


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


LAUNCHER = """
import atexit, resource, runpy, sys
out = sys.argv.pop(1)
def record():
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(out, "w") as f:
        f.write(f"{own} {started}")
atexit.register(record)
sys.argv[0] = "installer"
runpy.run_module("installer.cli", run_name="__main__")
"""
"""Runs the installer's CLI and, as it ends, writes its own peak RSS and the largest of its
children's (KiB)."""


class Installer:
    """Runs `installer -o json` on the lab inventory; keeps every run's events and peak memory."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.peak_mb = (0.0, 0.0)

    def run(self, *args: str) -> tuple[float, list[dict[str, Any]], dict[str, Any]]:
        peak = self.logs / "peak-rss"
        argv = [sys.executable, "-c", LAUNCHER, str(peak), "--log-dir", str(self.logs),
                "-o", "json", *args, "-i", str(LAB_INVENTORY), "--yes"]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=REPO, env=self.env, capture_output=True, text=True,
                              check=False, timeout=3600)  # fmt: skip
        seconds = time.monotonic() - started
        own, children = peak.read_text(encoding="ascii").split()
        self.peak_mb = (int(own) / 1024, int(children) / 1024)
        lines = proc.stdout.splitlines()
        events = [json.loads(ln) for ln in lines if ln.startswith('{"time"')]
        rest = "\n".join(ln for ln in lines if not ln.startswith('{"time"'))
        if proc.returncode != 0:
            sys.exit(f"installer {' '.join(args)} failed (exit {proc.returncode}):\n{rest[-3000:]}")
        return seconds, events, json.loads(rest) if rest.strip() else {}


def phase_seconds(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per phase that ran (from its started and finished events)."""
    started: dict[str, float] = {}
    found: dict[str, float] = {}
    for e in events:
        if e["event"] == "phase_started":
            started[e["phase"]] = e["time"]
        elif e["event"] == "phase_finished" and e["phase"] in started:
            found[e["phase"]] = e["time"] - started[e["phase"]]
    return found


def slowest_steps(events: list[dict[str, Any]], phase: str, n: int = 5) -> list[tuple[float, str]]:
    """The phase's steps that took longest (time until the phase's next event)."""
    mine = [e for e in events if e["phase"] == phase]
    spans = [
        (b["time"] - a["time"], a["message"])
        for a, b in itertools.pairwise(mine)
        if a["event"] in ("step", "phase_started")
    ]
    return sorted(spans, reverse=True)[:n]


def report_run(name: str, seconds: float, events: list[dict[str, Any]]) -> dict[str, float]:
    per_phase = phase_seconds(events)
    print(f"{name}: {seconds:.1f}")
    for phase, secs in per_phase.items():
        print(f"{name}.{phase}: {secs:.1f}")
    return per_phase


# --- the 200-node lab ----------------------------------------------------------------------


def _gpu_node(name: str) -> client.V1Node:
    capacity = {"cpu": "128", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8"}
    labels = {
        "kubernetes.io/hostname": name,
        BENCH_LABEL: "bootstrap",
        # What GPU feature discovery sets on the lab's a100 nodes: the pool's selector matches.
        "nvidia.com/gpu.product": A100,
        "nvidia.com/gpu.count": "8",
        "nvidia.com/gpu.memory": "81920",
        "nvidia.com/gpu.family": "ampere",
        "nvidia.com/gpu.present": "true",
    }
    return client.V1Node(
        metadata=client.V1ObjectMeta(
            name=name,
            annotations={"kwok.x-k8s.io/node": "fake"},
            # No `type: kwok` label: lab/up deletes kwok nodes outside its topology by that label.
            labels=labels,
        ),
        status=client.V1NodeStatus(allocatable=capacity, capacity=capacity),
    )


def add_nodes(core: client.CoreV1Api, names: list[str]) -> float:
    """Create the nodes; wait until kwok reports them Ready and their not-ready taints are gone."""
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda name: core.create_node(_gpu_node(name)), names))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        nodes = core.list_node(label_selector=f"{BENCH_LABEL}=bootstrap").items
        ready = [
            n for n in nodes
            if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
            and not any(t.key.startswith("node.kubernetes.io/") for t in n.spec.taints or [])
        ]  # fmt: skip
        if len(ready) == len(names):
            return time.monotonic() - started
        time.sleep(2)
    sys.exit(f"extra nodes not Ready after 600 s ({len(ready)}/{len(names)})")


def delete_nodes(core: client.CoreV1Api) -> None:
    names = [
        n.metadata.name for n in core.list_node(label_selector=f"{BENCH_LABEL}=bootstrap").items
    ]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(core.delete_node, names))


def kubectl_by_hand(env: dict[str, str]) -> float:
    """By hand, the same work for the a100 pool's nodes: one label and two taints each, with
    `kubectl label/taint --overwrite`, timed on the second pass (nothing to change, as in the
    no-op re-run). Bench-only keys, removed after: kubectl's field manager would otherwise keep
    the installer's labels when the nodes stack is destroyed."""
    kubectl = [env["LAB_KUBECTL"], "--kubeconfig", env["LAB_KUBECONFIG"]]
    selector = f"nvidia.com/gpu.product={A100}"
    passes = (
        ["label", "nodes", "-l", selector, f"{BENCH_LABEL}-pool=a100", "--overwrite"],
        ["taint", "nodes", "-l", selector, f"{BENCH_LABEL}-job=true:NoSchedule", "--overwrite"],
        ["taint", "nodes", "-l", selector, f"{BENCH_LABEL}-gpu=present:NoSchedule", "--overwrite"],
    )
    undo = (
        ["label", "nodes", "-l", selector, f"{BENCH_LABEL}-pool-"],
        ["taint", "nodes", "-l", selector, f"{BENCH_LABEL}-job-"],
        ["taint", "nodes", "-l", selector, f"{BENCH_LABEL}-gpu-"],
    )
    seconds = 0.0
    try:
        for _ in range(2):
            started = time.monotonic()
            for argv in passes:
                subprocess.run([*kubectl, *argv], check=True, capture_output=True, timeout=600)
            seconds = time.monotonic() - started
    finally:
        for argv in undo:
            subprocess.run([*kubectl, *argv], check=False, capture_output=True, timeout=600)
    return seconds


def ansible_playbook_by_hand(env: dict[str, str]) -> float:
    """The hub's play run by hand on the converged VM, with the inventory the installer wrote
    (`<state>/ansible/aux-vm.inventory.json`): nothing changes; its seconds."""
    inventory = LAB_STATE / "installer" / "ansible" / "aux-vm.inventory.json"
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory(prefix="onprem-ssh-") as control:
        started = time.monotonic()
        done = subprocess.run(
            [str(bin_dir / "ansible-playbook"), "-i", str(inventory),
             str(REPO / "playbooks" / "aux-vm.yml")],
            env={**env, "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}",
                 "ANSIBLE_SSH_CONTROL_PATH_DIR": control},
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        seconds = time.monotonic() - started
    if done.returncode != 0 or "changed=0" not in done.stdout:
        raise SystemExit(f"ansible-playbook by hand did not run clean:\n{done.stdout[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000, help="lab size for the last figure")
    parser.add_argument("--logs", type=Path, default=None, help="keep the runs' folders here")
    args = parser.parse_args()
    env = lab_env()
    logs = args.logs or Path(tempfile.mkdtemp(prefix="bench-bootstrap-"))
    logs.mkdir(parents=True, exist_ok=True)
    cli = Installer(env, logs)
    core = client.CoreV1Api(config.new_client_from_config(config_file=env["LAB_KUBECONFIG"]))
    lab_nodes = len(env["LAB_KUBE_NODES"].split(","))
    extra = [f"bootstrap-bench-{i:04d}" for i in range(args.nodes - lab_nodes)]
    waited = time.monotonic()
    with site_lock():
        print(f"# lock waited {time.monotonic() - waited:.0f} s; load {loadavg()}", file=sys.stderr)
        print(f"load-before: {loadavg()}")
        try:
            cli.run("destroy", "--skip", "auxvm")
            seconds, events, summary = cli.run("bootstrap")
            full = report_run("full", seconds, events)
            slowest = max(full, key=lambda p: full[p])
            print(f"# slowest phase of the full run: {slowest}", file=sys.stderr)
            for secs, what in slowest_steps(events, slowest):
                print(f"#   {secs:6.1f} s  {what}", file=sys.stderr)
            seconds, events, summary = cli.run("bootstrap")
            noop = report_run("noop", seconds, events)
            print(f"noop-changes: {summary['changes']}")
            print("noop-peak-mb: {:.0f} {:.0f}".format(*cli.peak_mb))
            slowest = max(noop, key=lambda p: noop[p])
            print(f"# slowest phase of the no-op run: {slowest}", file=sys.stderr)
            for secs, what in slowest_steps(events, slowest):
                print(f"#   {secs:6.1f} s  {what}", file=sys.stderr)
            by_hand = ansible_playbook_by_hand(env)
            print(f"noop-auxvm-vs-ansible-playbook: {noop['auxvm']:.1f} {by_hand:.1f}"
                  f" {noop['auxvm'] / by_hand:.3f}")  # fmt: skip

            if extra:
                added = add_nodes(core, extra)
                print(f"# {len(extra)} extra nodes Ready in {added:.0f} s", file=sys.stderr)
                seconds, events, summary = cli.run("bootstrap")
                report_run(f"nodes{args.nodes}-first", seconds, events)
                print(f"nodes{args.nodes}-first-peak-mb: {cli.peak_mb[0]:.0f} {cli.peak_mb[1]:.0f}")
                seconds, events, summary = cli.run("bootstrap")
                big = report_run(f"noop{args.nodes}", seconds, events)
                print(f"noop{args.nodes}-changes: {summary['changes']}")
                print(f"noop{args.nodes}-peak-mb: {cli.peak_mb[0]:.0f} {cli.peak_mb[1]:.0f}")
                by_hand = kubectl_by_hand(env)
                ratio = big["nodes"] / by_hand
                print(f"noop{args.nodes}-nodes-vs-kubectl: {big['nodes']:.1f} {by_hand:.1f}"
                      f" {ratio:.2f}")  # fmt: skip
            print(f"load-after: {loadavg()}")
        finally:
            try:
                cli.run("destroy", "--skip", "auxvm")
            finally:
                delete_nodes(core)
    print(f"# run folders in {logs}", file=sys.stderr)


if __name__ == "__main__":
    main()
