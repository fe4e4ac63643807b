"""Second, throwaway labs started and stopped from nothing beside the session's lab.

Each runs a copy of lab/ whose ports and names are moved off the session lab's, with its own
state folder, so the lab other tests use is left alone; they run beside the lab site's tests
(`own_lab`, tests/conftest.py), on ports of their own (+6000: the lab site's lane starts copies
on +10000, the stacks' cluster is on +4000).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from kubernetes import client, config

from tests.e2e.lab.labcopy import alive, component, copy_lab, shifted_ports
from tests.fixtures.lab import Lab, read_env_file, read_versions

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.own_lab]

PORT_SHIFT = 6000
KUBE_DAEMONS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def kube_component(lab_dir: Path, verb: str, env: dict[str, str]) -> None:
    """Run 10-kube.sh VERB of a lab copy, failing the test with its output."""
    result = component(lab_dir, "10-kube.sh", verb, env)
    assert result.returncode == 0, result.stderr


def port_in_use(port: int) -> bool:
    """Whether anything listens on that TCP port of this host."""
    out = subprocess.run(
        ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return bool(out.strip())


@pytest.fixture(params=["200"])
def second_lab(
    lab: Lab, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Path, dict[str, str]]]:
    """A copy of lab/ on shifted ports, its env, and a guaranteed 10-kube down afterwards.

    The parameter is LAB_NODES; tests choose it with indirect parametrization.
    """
    del lab  # needs the toolchain the session lab built
    shifted = shifted_ports(PORT_SHIFT)
    lab_copy = copy_lab(tmp_path, shifted)
    env = {"LAB_STATE": str(tmp_path / "state"), "LAB_NODES": str(request.param)}
    try:
        yield lab_copy, env
    finally:
        kube_component(lab_copy, "down", env)


def test_two_hundred_nodes_then_down_leaves_nothing(
    second_lab: tuple[Path, dict[str, str]],
) -> None:
    lab_copy, env = second_lab
    ports = read_env_file(lab_copy / "versions.env")
    kube_component(lab_copy, "up", env)
    state = Path(env["LAB_STATE"])
    facts = read_env_file(state / "env.d" / "kube.env")
    assert facts["LAB_KUBE_SERVER"] == f"https://127.0.0.1:{ports['LAB_KUBE_APISERVER_PORT']}"

    api = config.new_client_from_config(config_file=facts["LAB_KUBECONFIG"])
    nodes = client.CoreV1Api(api).list_node().items
    names = {n.metadata.name for n in nodes}
    assert len(nodes) == 200
    assert {"cpu-1", "cpu-197", "a100-1", "a100-2", "h100-1"} <= names
    assert all(
        any(c.type == "Ready" and c.status == "True" for c in n.status.conditions) for n in nodes
    )
    gpus = sum(int(n.status.allocatable.get("nvidia.com/gpu", "0")) for n in nodes)
    assert gpus == 24
    assert client.VersionApi(api).get_code().git_version == read_versions()["KUBE_VERSION"]

    pids = [int((state / "run" / f"{d}.pid").read_text()) for d in KUBE_DAEMONS]
    kube_component(lab_copy, "down", env)
    for pid in pids:
        assert not alive(pid), f"pid {pid} survived down"
    assert not (state / "kube").exists()
    assert not port_in_use(int(ports["LAB_KUBE_APISERVER_PORT"]))
    assert not port_in_use(int(ports["LAB_ETCD_CLIENT_PORT"]))


VM_CHANGES = {
    "LAB_VM_NETNS": "onprem-lab-vmt",
    "LAB_VM_HOST_ADDR": "10.213.9.1",
    "LAB_VM_ADDR": "10.213.9.2",
    "LAB_VM_USER": "labopst",
    "LAB_VM_VETH_HOST": "olab-vmt",
}


def netns_pids(name: str) -> set[int]:
    """Pids of the processes inside a network namespace."""
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _is_init(pid: int) -> bool:
    """Whether the process is PID 1 of a PID namespace of its own (a booted machine's init)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    lines = [line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")]
    return bool(lines) and len(lines[0]) > 1 and lines[0][-1] == "1"


def test_vm_down_leaves_no_process_namespace_or_user(lab: Lab, tmp_path: Path) -> None:
    """A VM booted (its own systemd) and shut down: no process, namespace, cgroup, link or user
    of it is left on this machine."""
    del lab  # runs beside the session lab, never instead of it
    lab_copy = copy_lab(tmp_path, VM_CHANGES)
    state = tmp_path / "state"
    env = {"LAB_STATE": str(state)}
    try:
        up = component(lab_copy, "20-vm.sh", "up", env, timeout=120)
        assert up.returncode == 0, up.stderr
        facts = read_env_file(state / "env.d" / "vm.env")
        assert facts["LAB_VM_ADDR"] == "10.213.9.2"
        ssh = paramiko.SSHClient()
        ssh.load_host_keys(facts["LAB_VM_KNOWN_HOSTS"])
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        ssh.connect(
            facts["LAB_VM_ADDR"],
            username=facts["LAB_VM_USER"],
            key_filename=facts["LAB_VM_KEY"],
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
        )
        # A service left running on the VM, as the installer's would be.
        _, out, _ = ssh.exec_command("setsid sleep 600 </dev/null >/dev/null 2>&1 & echo ok")
        assert out.read().decode().strip() == "ok"
        ssh.close()
        inside = netns_pids(VM_CHANGES["LAB_VM_NETNS"])
        machine = int((state / "run" / "vm.pid").read_text())
        assert alive(machine)
        # The VM's systemd, its services (sshd among them) and the session's sleep.
        assert len(inside) >= 3
        assert any(_is_init(pid) for pid in inside), "no PID 1 of the VM's own in its namespace"
    finally:
        down = component(lab_copy, "20-vm.sh", "down", env, timeout=120)
        assert down.returncode == 0, down.stderr
    assert not [pid for pid in inside if alive(pid)]
    assert not alive(machine)
    for hierarchy in ("systemd", "unified"):
        cgroup = Path("/sys/fs/cgroup") / hierarchy / "onprem-lab" / VM_CHANGES["LAB_VM_NETNS"]
        assert not cgroup.exists(), cgroup
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert VM_CHANGES["LAB_VM_NETNS"] not in listed.stdout
    link = subprocess.run(
        ["ip", "link", "show", VM_CHANGES["LAB_VM_VETH_HOST"]], capture_output=True
    )
    assert link.returncode != 0
    user = subprocess.run(["getent", "passwd", VM_CHANGES["LAB_VM_USER"]], capture_output=True)
    assert user.returncode != 0
    assert not Path(f"/etc/sudoers.d/onprem-lab-{VM_CHANGES['LAB_VM_USER']}").exists()
    assert not Path(f"/home/{VM_CHANGES['LAB_VM_USER']}").exists()


@pytest.mark.parametrize("second_lab", ["6"], indirect=True)
def test_status_reports_a_dead_component_and_up_restarts_it(
    second_lab: tuple[Path, dict[str, str]],
) -> None:
    lab_copy, env = second_lab
    kube_component(lab_copy, "up", env)
    state = Path(env["LAB_STATE"])
    pid = int((state / "run" / "kube-scheduler.pid").read_text())
    others = {d: (state / "run" / f"{d}.pid").read_text() for d in KUBE_DAEMONS}
    os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not alive(pid):
            break
        time.sleep(0.1)
    # status must call it dead even before it is reaped (a zombie still answers kill -0).
    status = component(lab_copy, "10-kube.sh", "status", env, timeout=60)
    assert status.returncode == 1
    dead = [line for line in status.stdout.splitlines() if "DEAD" in line]
    assert len(dead) == 1, status.stdout
    assert "kube-scheduler" in dead[0]
    assert str(state / "log" / "kube-scheduler.log") in dead[0]

    kube_component(lab_copy, "up", env)  # idempotent: starts only what is missing
    assert component(lab_copy, "10-kube.sh", "status", env, timeout=60).returncode == 0
    now = {d: (state / "run" / f"{d}.pid").read_text() for d in KUBE_DAEMONS}
    assert {d for d in KUBE_DAEMONS if now[d] != others[d]} == {"kube-scheduler"}
