"""A minimal DNS client for A records: ask one server directly, or the system resolver.

The checks must ask the server that will serve the platform's names (the VM's dnsmasq when the
inventory enables it) rather than whatever this host's resolver points at, so a tiny query over
UDP is built here instead of adding a resolver library for one record type.
"""

from __future__ import annotations

import secrets
import socket
import struct
from dataclasses import dataclass

_A, _IN = 1, 1


class DnsError(Exception):
    """The server did not answer usefully (timeout, refused, malformed, server failure)."""


@dataclass(frozen=True)
class Answer:
    """Addresses a name resolved to; empty for NXDOMAIN or no A record."""

    name: str
    addresses: tuple[str, ...]
    nxdomain: bool = False


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna")
        if not 0 < len(raw) < 64:
            raise DnsError(f"bad DNS name {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def build_query(name: str, query_id: int) -> bytes:
    """A recursive A/IN query for `name`."""
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    return header + _encode_name(name) + struct.pack("!HH", _A, _IN)


def _skip_name(data: bytes, offset: int) -> int:
    while True:
        if offset >= len(data):
            raise DnsError("truncated DNS answer")
        length = data[offset]
        if length & 0xC0 == 0xC0:  # compression pointer ends the name
            return offset + 2
        if length == 0:
            return offset + 1
        offset += 1 + length


def parse_answer(name: str, data: bytes, query_id: int) -> Answer:
    """The A records of a response to `build_query(name, query_id)`."""
    if len(data) < 12:
        raise DnsError("truncated DNS answer")
    rid, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", data[:12])
    if rid != query_id or not flags & 0x8000:
        raise DnsError("DNS answer does not match the query")
    rcode = flags & 0x000F
    if rcode == 3:
        return Answer(name, (), nxdomain=True)
    if rcode != 0:
        raise DnsError(f"DNS server answered rcode {rcode}")
    offset = 12
    for _ in range(qdcount):
        offset = _skip_name(data, offset) + 4
    addresses = []
    for _ in range(ancount):
        offset = _skip_name(data, offset)
        if offset + 10 > len(data):
            raise DnsError("truncated DNS answer")
        rtype, rclass, _, rdlength = struct.unpack("!HHIH", data[offset : offset + 10])
        offset += 10
        if rtype == _A and rclass == _IN and rdlength == 4:
            addresses.append(socket.inet_ntoa(data[offset : offset + 4]))
        offset += rdlength
    return Answer(name, tuple(sorted(set(addresses))))


def query(name: str, server: str, port: int = 53, *, timeout_s: float = 3.0) -> Answer:
    """Ask `server` for the A records of `name` over UDP."""
    query_id = secrets.randbelow(0x10000)
    packet = build_query(name, query_id)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect((server, port))
            sock.send(packet)
            while True:
                data = sock.recv(4096)
                if len(data) >= 2 and struct.unpack("!H", data[:2])[0] == query_id:
                    return parse_answer(name, data, query_id)
        except TimeoutError:
            raise DnsError(f"no answer from {server}:{port} within {timeout_s:g}s") from None
        except OSError as exc:
            raise DnsError(f"{server}:{port}: {exc.strerror or exc}") from None


def system_resolve(name: str) -> Answer:
    """What this host's resolver says (IPv4 only)."""
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)):
            return Answer(name, (), nxdomain=True)
        raise DnsError(f"resolver: {exc.strerror or exc}") from None
    return Answer(name, tuple(sorted({str(info[4][0]) for info in infos})))
