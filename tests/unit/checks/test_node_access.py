"""Node access for the hardware probes: address resolution, SiteAccess.node_host, and how
gpu.probe and storage.disks report nodes they cannot reach (real SSH to a closed port)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from installer.checks.context import SiteAccess, node_address, why_no_address
from installer.checks.gpu import LIST_ARGV, QUERY_ARGV, CommandResult
from installer.checks.preflight_kube import (
    check_disk,
    check_gpu_probe,
    evaluate_disk,
    evaluate_probes,
)
from installer.checks.remote import SshHost
from installer.inventory import load_inventory
from installer.inventory.models import Inventory, NodePool, NodeSsh, StorageDisk

BASE = Path(__file__).parents[1] / "inventory" / "base.yml"
FIXTURES = Path(__file__).parents[2] / "fixtures" / "nvidia_smi"
H100_POOL = NodePool.model_validate(
    {"name": "h100", "nodes": ["h100-1"], "cpu": 192, "memory": "2Ti",
     "gpu": {"model": "NVIDIA-H100-80GB-HBM3", "count": 8, "memory": "80Gi"}}
)  # fmt: skip


def access(**fields: object) -> NodeSsh:
    return NodeSsh.model_validate(
        {"user": "ops", "private_key": "file:k", "known_hosts": "kh", **fields}
    )


def site(tmp_path: Path, node_ssh: str = "") -> Inventory:
    path = tmp_path / "site.yml"
    path.write_text(BASE.read_text(encoding="utf-8") + node_ssh, encoding="utf-8")
    return load_inventory(path)


def test_an_address_entry_wins_over_the_internal_ip() -> None:
    both = access(addresses={"a100-1": "192.0.2.31"})
    assert node_address(both, "a100-1", "10.0.0.1") == "192.0.2.31"
    assert node_address(both, "a100-2", "10.0.0.2") == "10.0.0.2"
    assert node_address(both, "a100-2", None) is None
    assert "no InternalIP for a100-2" in why_no_address(both, "a100-2")


def test_address_source_addresses_probes_only_listed_nodes() -> None:
    listed = access(address_source="addresses", addresses={"a100-1": "192.0.2.31"})
    assert node_address(listed, "a100-1", "10.0.0.1") == "192.0.2.31"
    assert node_address(listed, "a100-2", "10.0.0.2") is None
    assert "a100-2 is not in node_ssh.addresses" in why_no_address(listed, "a100-2")


def test_node_host_follows_the_inventory(tmp_path: Path) -> None:
    plain = site(tmp_path)
    assert SiteAccess(plain).node_host(plain.clusters[0], "a100-1") is None
    inv = site(
        tmp_path,
        "    node_ssh:\n      user: ops\n      private_key: file:k\n      known_hosts: kh\n"
        "      address_source: addresses\n      port: 2200\n      jump: aux-vm\n"
        "      addresses: {a100-1: 192.0.2.31}\n",
    )
    reach = SiteAccess(inv)
    host = reach.node_host(inv.clusters[0], "a100-1")
    assert host is not None and host.address == "192.0.2.31"
    assert host.via is not None and host.via.address == "192.0.2.10"  # the aux VM
    assert host.where == "ops@192.0.2.31:2200 via ops@192.0.2.10:22"
    # Not listed: no address, and the cluster's API is not asked (there is none here).
    assert reach.node_host(inv.clusters[0], "cpu-1") is None
    # Given the InternalIP, an internal-ip site needs no API call either.
    internal = site(
        tmp_path,
        "    node_ssh: {user: ops, private_key: 'file:k', known_hosts: kh, timeout_s: 3}\n",
    )
    node = SiteAccess(internal).node_host(internal.clusters[0], "cpu-1", internal_ip="10.0.0.5")
    assert node is not None and (node.address, node.via, node.connect_timeout_s) == (
        "10.0.0.5", None, 3.0
    )  # fmt: skip


def test_without_node_ssh_the_probes_say_how_to_enable_them(tmp_path: Path) -> None:
    inv = site(tmp_path)
    cluster = inv.clusters[0]
    gpu = check_gpu_probe(SiteAccess(inv), cluster, cluster.node_pools[1])
    assert gpu.ok and gpu.severity is not None and gpu.severity.value == "info"
    assert "clusters[].node_ssh" in gpu.message and "labels only" in gpu.message
    finding = check_disk(SiteAccess(inv), cluster, StorageDisk(node="cpu-1", device="/dev/sdb"))
    assert finding.ok and "clusters[].node_ssh" in finding.message
    assert "lsblk -f /dev/sdb" in finding.message


class Recorded:
    """A node answering nvidia-smi from a fixture folder, after `delay_s`."""

    def __init__(self, folder: str, delay_s: float = 0.0) -> None:
        self.query = (FIXTURES / folder / "query.csv").read_text()
        self.listing = (FIXTURES / folder / "list.txt").read_text()
        self.delay_s = delay_s

    def run(self, argv: list[str], *, timeout_s: float = 30.0) -> CommandResult:
        time.sleep(self.delay_s)
        if tuple(argv) == QUERY_ARGV:
            return CommandResult(0, self.query)
        assert tuple(argv) == LIST_ARGV
        return CommandResult(0, self.listing)


def test_nodes_are_probed_in_parallel_each_within_its_limit() -> None:
    hosts = [(f"h100-{i}", Recorded("h100-sxm5-80gb", delay_s=0.3)) for i in range(6)]
    started = time.monotonic()
    finding = evaluate_probes(H100_POOL, hosts, limit_s=5)
    took = time.monotonic() - started
    assert finding.ok, finding.message
    assert took < 1.0, f"{took:.2f}s: the nodes were probed one after another (6 x 0.3 s)"
    slow = [("h100-1", Recorded("h100-sxm5-80gb")), ("h100-2", Recorded("h100-sxm5-80gb", 3))]
    started = time.monotonic()
    late = evaluate_probes(H100_POOL, slow, limit_s=0.5)
    assert time.monotonic() - started < 2
    assert not late.ok and late.message == "h100-2: no answer within 0.5s"
    assert "node_ssh for h100-2" in late.remedy


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def node_key(tmp_path: Path) -> Path:
    key = tmp_path / "node_key"
    paramiko.ECDSAKey.generate().write_private_key_file(str(key))
    return key


def _ssh_host(tmp_path: Path, key: Path, port: int, known: str) -> SshHost:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known)
    node_ssh = NodeSsh.model_validate(
        {"user": "ops", "port": port, "private_key": f"file:{key}",
         "known_hosts": str(known_hosts), "timeout_s": 2}
    )  # fmt: skip
    return SshHost("127.0.0.1", node_ssh, connect_timeout_s=2)


def test_an_unreachable_node_fails_by_name_with_a_remedy(
    tmp_path: Path, node_key: Path, closed_port: int
) -> None:
    pin = paramiko.ECDSAKey.generate()
    known = f"[127.0.0.1]:{closed_port} {pin.get_name()} {pin.get_base64()}\n"
    host = _ssh_host(tmp_path, node_key, closed_port, known)
    finding = evaluate_probes(
        H100_POOL, [("h100-1", host), ("h100-2", Recorded("h100-sxm5-80gb"))], limit_s=10
    )
    assert not finding.ok
    assert finding.message.startswith(f"h100-1: host 127.0.0.1:{closed_port}: ")
    assert "Unable to connect" in finding.message
    assert "h100-2" not in finding.message
    assert "node_ssh for h100-1" in finding.remedy and "never accept" in finding.remedy


def test_a_node_missing_from_known_hosts_is_refused(
    tmp_path: Path, node_key: Path, closed_port: int
) -> None:
    host = _ssh_host(tmp_path, node_key, closed_port, "")
    finding = evaluate_probes(H100_POOL, [("h100-1", host)], limit_s=10)
    assert not finding.ok
    assert f"has no key for [127.0.0.1]:{closed_port}" in finding.message
    assert finding.message.startswith("h100-1: ")


def _listening_sshd_stand_in() -> tuple[socket.socket, Callable[[], None]]:
    """A TCP port that accepts and never speaks (a host that hangs in the handshake)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()

    return server, close


def test_a_node_that_hangs_in_the_handshake_is_cut_off(tmp_path: Path, node_key: Path) -> None:
    server, close = _listening_sshd_stand_in()
    try:
        port = int(server.getsockname()[1])
        pin = paramiko.ECDSAKey.generate()
        known = f"[127.0.0.1]:{port} {pin.get_name()} {pin.get_base64()}\n"
        host = _ssh_host(tmp_path, node_key, port, known)
        started = time.monotonic()
        finding = evaluate_probes(H100_POOL, [("h100-1", host)], limit_s=30)
        assert time.monotonic() - started < 10
        assert not finding.ok and finding.message.startswith("h100-1: host 127.0.0.1")
    finally:
        close()


def test_disk_probe_without_become_runs_blkid_as_the_login() -> None:
    seen: list[list[str]] = []

    class Node:
        def run(self, argv: list[str], *, timeout_s: float = 30.0) -> CommandResult:
            seen.append(argv)
            answers = {"test": 0, "blkid": 2, "lsblk": 0, "findmnt": 1}
            return CommandResult(answers[argv[0]], "sdb \n" if argv[0] == "lsblk" else "")

    assert evaluate_disk("/dev/sdb", Node(), become=False).ok
    assert ["blkid", "-p", "-o", "export", "/dev/sdb"] in seen
    assert not any("sudo" in argv for argv in seen)
