"""What `lab/up` leaves for people, tests and the installer: the env file, the inventory, nodes.

- `lab/.state/env` names the kubeconfig, the VM's address and SSH port and the CAs, and each
  of them works: the kubeconfig reaches the cluster, the CAs verify the servers they sign, the
  address and port answer with the VM's sshd;
- `installer validate` accepts `inventories/lab.yml`, whose paths are the lab's state;
- the issue's own check, `kubectl --kubeconfig <state>/kubeconfig get nodes -L
  nvidia.com/gpu.product`, lists the topology with its GPU products.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.fixtures.lab import REPO, Lab, read_env_file, read_versions

pytestmark = pytest.mark.e2e

LAB_INVENTORY = REPO / "inventories" / "lab.yml"
TOPOLOGY = {
    "cpu-1": "",
    "cpu-2": "",
    "cpu-3": "",
    "a100-1": "NVIDIA-A100-SXM4-80GB",
    "a100-2": "NVIDIA-A100-SXM4-80GB",
    "h100-1": "NVIDIA-H100-80GB-HBM3",
}


def verifies(ca: Path, url: str) -> None:
    """Complete a TLS handshake with the server of `url`, trusting `ca` only."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    assert parts.hostname and parts.port, url
    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection((parts.hostname, parts.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
    ):
        assert tls.version() in {"TLSv1.2", "TLSv1.3"}


def test_env_file_names_the_kubeconfig_the_vm_and_the_cas(lab: Lab) -> None:
    env = read_env_file(lab.state / "env")
    versions = read_versions()

    kubeconfig = Path(env["KUBECONFIG"])
    assert kubeconfig == Path(env["LAB_KUBECONFIG"])
    assert kubeconfig.stat().st_mode & 0o077 == 0, "the admin kubeconfig is readable by others"
    nodes = subprocess.run(
        [env["LAB_KUBECTL"], "--kubeconfig", str(kubeconfig), "get", "nodes", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert nodes.returncode == 0, nodes.stderr
    assert {line.removeprefix("node/") for line in nodes.stdout.split()} >= set(TOPOLOGY)

    assert env["LAB_VM_ADDR"] == versions["LAB_VM_ADDR"]
    assert env["LAB_VM_SSH_PORT"] == versions["LAB_VM_SSH_PORT"]
    with socket.create_connection(
        (env["LAB_VM_ADDR"], int(env["LAB_VM_SSH_PORT"])), timeout=10
    ) as ssh:
        assert ssh.recv(64).startswith(b"SSH-2.0-OpenSSH")

    # Each CA path verifies the servers it is named for, and nothing else is needed to trust them.
    verifies(Path(env["LAB_KUBE_CA"]), env["LAB_KUBE_SERVER"])
    verifies(Path(env["LAB_KEYCLOAK_CA"]), env["LAB_KEYCLOAK_URL"])
    verifies(Path(env["LAB_UPSTREAM_CA"]), env["LAB_UPSTREAM_REGISTRY"])
    verifies(Path(env["LAB_UPSTREAM_CA"]), env["LAB_UPSTREAM_CHARTS_URL"])


def test_lab_inventory_validates_and_points_at_this_lab(lab: Lab, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path), "-o", "json"),
            *("validate", "--inventory", str(LAB_INVENTORY)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["ok"] is True

    data = yaml.safe_load(LAB_INVENTORY.read_text(encoding="utf-8"))
    here = LAB_INVENTORY.parent

    def at(path: str) -> Path:
        return (here / path.removeprefix("file:")).resolve()

    vm = data["aux_vm"]
    assert vm["address"] == lab.vm_addr
    assert vm["ssh"]["port"] == lab.vm_ssh_port
    assert vm["ssh"]["user"] == lab.vm_user
    assert at(vm["ssh"]["private_key"]) == lab.vm_key.resolve()
    assert at(vm["ssh"]["known_hosts"]) == lab.vm_known_hosts.resolve()
    assert at(data["clusters"][0]["kubeconfig"]) == lab.kubeconfig.resolve()
    pools = data["clusters"][0]["node_pools"]
    named = {node for pool in pools for node in pool.get("nodes", [])}
    assert named <= set(lab.nodes)


def test_kubectl_lists_the_topology_with_gpu_products(lab: Lab) -> None:
    proc = subprocess.run(
        [
            *(str(lab.kubectl), "--kubeconfig", str(lab.state / "kubeconfig")),
            *("get", "nodes", "-L", "nvidia.com/gpu.product", "--no-headers"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    listed: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        cols = line.split()
        # NAME STATUS ROLES AGE VERSION [GPU.PRODUCT]
        listed[cols[0]] = cols[5] if len(cols) > 5 else ""
        assert cols[1] == "Ready", line
    assert {name: listed.get(name) for name in TOPOLOGY} == TOPOLOGY
    cpu_nodes = [name for name, product in listed.items() if not product]
    assert len(cpu_nodes) >= 3
