"""Acceptance pods carry exactly the job controller's contract; the DNS client's wire format."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from installer.checks.acceptance import ProbeNamespace, preset_pod, untolerated_pod
from installer.checks.context import SiteAccess
from installer.checks.dnsquery import DnsError, build_query, parse_answer, query
from installer.errors import FailedError
from installer.inventory import load_inventory
from installer.site import POOL_LABEL, preset_resources, preset_tolerations

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def access() -> SiteAccess:
    return SiteAccess(load_inventory(REPO / "inventories" / "lab.yml"))


def test_preset_pod_is_the_job_controllers_pod(access: SiteAccess) -> None:
    cluster = access.inventory.clusters[0]
    preset = next(p for p in cluster.presets if p.name == "a100x1")
    pod = preset_pod(access, cluster, preset, "p")
    spec = pod["spec"]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms == {
        "nodeSelectorTerms": [
            {"matchExpressions": [{"key": POOL_LABEL, "operator": "In", "values": ["a100"]}]}
        ]
    }
    assert spec["tolerations"] == [
        {"key": t.key, "operator": "Exists", "effect": t.effect}
        for t in preset_tolerations(preset, cluster)
    ]
    assert {t["key"] for t in spec["tolerations"]} == {
        "nvidia.com/gpu",
        "platform.neuromation.io/job",
    }
    (container,) = spec["containers"]
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert container["resources"]["requests"] == preset_resources(preset)
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert container["image"] == "hub.ml.lab.test:5000/docker.io/library/busybox:latest"
    assert pod["metadata"]["labels"]["onprem-installer/purpose"] == "verify"


def test_untolerated_pod_lacks_only_the_job_toleration(access: SiteAccess) -> None:
    cluster = access.inventory.clusters[0]
    a100 = next(p for p in cluster.node_pools if p.name == "a100")
    spec = untolerated_pod(access, a100, "u")["spec"]
    assert [t["key"] for t in spec["tolerations"]] == ["nvidia.com/gpu"]
    expr = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert expr["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["a100"]


def test_no_namespace_is_made_once_the_run_removed_them(access: SiteAccess) -> None:
    """A check that outlived its time limit finds the run over, instead of leaving a namespace
    nothing removes (the namespaces' deletion comes first here, no cluster is reached)."""
    namespaces = ProbeNamespace()
    namespaces.delete()
    with pytest.raises(FailedError, match="the verify run has ended"):
        namespaces.get(access, access.inventory.clusters[0])


def _response(query_packet: bytes, addresses: list[str], rcode: int = 0) -> bytes:
    qid = struct.unpack("!H", query_packet[:2])[0]
    question = query_packet[12:]
    header = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, len(addresses), 0, 0)
    answers = b"".join(
        b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(a) for a in addresses
    )
    return header + question + answers


def test_parse_answer_with_compressed_names() -> None:
    packet = build_query("x.jobs.lab.test", 7)
    answer = parse_answer("x.jobs.lab.test", _response(packet, ["10.0.0.2", "10.0.0.1"]), 7)
    assert answer.addresses == ("10.0.0.1", "10.0.0.2")
    nx = parse_answer("y", _response(build_query("y", 9), [], rcode=3), 9)
    assert nx.nxdomain and nx.addresses == ()
    with pytest.raises(DnsError, match="rcode 2"):
        parse_answer("y", _response(build_query("y", 9), [], rcode=2), 9)
    with pytest.raises(DnsError, match="does not match"):
        parse_answer("y", _response(build_query("y", 9), []), 10)


@pytest.fixture
def udp_server() -> Iterator[tuple[int, list[bytes]]]:
    """A UDP socket on loopback that answers every query with 10.1.2.3."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(512)
            except TimeoutError:
                continue
            seen.append(data)
            sock.sendto(_response(data, ["10.1.2.3"]), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], seen
    stop.set()
    thread.join()
    sock.close()


def test_query_over_udp(udp_server: tuple[int, list[bytes]]) -> None:
    port, seen = udp_server
    answer = query("a.apps.lab.test", "127.0.0.1", port)
    assert answer.addresses == ("10.1.2.3",)
    assert b"\x01a\x04apps\x03lab\x04test\x00" in seen[0]


def test_query_timeout_is_a_dns_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        with pytest.raises(DnsError, match="no answer"):
            query("a.lab.test", "127.0.0.1", silent.getsockname()[1], timeout_s=0.3)
