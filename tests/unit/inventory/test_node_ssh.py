"""clusters[].node_ssh: SSH access to the nodes for preflight's hardware probes.

Each broken case is appended to base.yml's cluster; the loader must name file, line and field.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from installer.inventory import InputFileError, load_inventory

BASE = Path(__file__).with_name("base.yml")
BASE_LINES = len(BASE.read_text(encoding="utf-8").splitlines())

GOOD = """\
    node_ssh:
      user: ops
      private_key: file:nodes_ed25519
      known_hosts: nodes_known_hosts
"""


def _load(tmp_path: Path, block: str) -> object:
    path = tmp_path / "site.yml"
    path.write_text(BASE.read_text(encoding="utf-8") + block, encoding="utf-8")
    return load_inventory(path)


def test_absent_by_default() -> None:
    assert load_inventory(BASE).clusters[0].node_ssh is None


def test_defaults_and_paths_relative_to_the_inventory(tmp_path: Path) -> None:
    inv = _load(tmp_path, GOOD)
    access = inv.clusters[0].node_ssh  # type: ignore[attr-defined]
    assert access.port == 22 and access.become is True
    assert access.address_source == "internal-ip" and access.addresses == {}
    assert access.jump == "none" and access.timeout_s == 20.0
    assert access.known_hosts == tmp_path / "nodes_known_hosts"
    assert access.private_key.path() == tmp_path / "nodes_ed25519"


def test_a_file_named_through_a_parent_folder_is_one_path(tmp_path: Path) -> None:
    # `../x/key` from one inventory and `<abs>/x/key` from another name the same file: the same
    # path (what the auxvm drift probe's digest of its inputs compares).
    site = tmp_path / "site"
    site.mkdir()
    block = GOOD.replace("file:nodes_ed25519", "file:../keys/nodes_ed25519").replace(
        "known_hosts: nodes_known_hosts", "known_hosts: ../keys/known_hosts"
    )
    path = site / "site.yml"
    path.write_text(BASE.read_text(encoding="utf-8") + block, encoding="utf-8")
    access = load_inventory(path).clusters[0].node_ssh
    assert access is not None
    assert access.private_key.path() == tmp_path / "keys" / "nodes_ed25519"
    assert str(access.known_hosts) == str(tmp_path / "keys" / "known_hosts")


def test_explicit_addresses_and_jump(tmp_path: Path) -> None:
    block = GOOD + (
        "      port: 2222\n      become: false\n      jump: aux-vm\n"
        "      address_source: addresses\n      addresses: {a100-1: 192.0.2.31}\n"
    )
    access = _load(tmp_path, block).clusters[0].node_ssh  # type: ignore[attr-defined]
    assert access.addresses == {"a100-1": IPv4Address("192.0.2.31")}
    assert (access.port, access.become, access.jump) == (2222, False, "aux-vm")


CASES = [
    # (id, extra lines under node_ssh or a replacement, line, field path, message)
    ("no-known-hosts", GOOD.replace("      known_hosts: nodes_known_hosts\n", ""), 29,
     "clusters[0].node_ssh.known_hosts", "required key is missing"),
    ("fingerprint-not-for-nodes", GOOD + "      host_key_fingerprint: SHA256:x\n", 33,
     "clusters[0].node_ssh.host_key_fingerprint", "unknown key"),
    ("inline-key", GOOD.replace("file:nodes_ed25519", "hunter2"), 31,
     "clusters[0].node_ssh.private_key", "never written inline"),
    ("addresses-needs-a-map", GOOD + "      address_source: addresses\n", 29,
     "clusters[0].node_ssh.addresses", "needs at least one node"),
    ("bad-address", GOOD + "      addresses: {a100-1: 192.0.2.300}\n", 33,
     "clusters[0].node_ssh.addresses.a100-1", "IPv4"),
    ("unknown-node", GOOD + "      addresses: {a100-9: 192.0.2.31}\n", 33,
     "clusters[0].node_ssh.addresses.a100-9", "in no pool"),
    ("shared-address",
     GOOD + "      addresses:\n        a100-1: 192.0.2.31\n        cpu-1: 192.0.2.31\n", 35,
     "clusters[0].node_ssh.addresses.cpu-1", "already given for node a100-1"),
    ("jump-kind", GOOD + "      jump: bastion\n", 33, "clusters[0].node_ssh.jump", "aux-vm"),
    ("timeout-zero", GOOD + "      timeout_s: 0\n", 33, "clusters[0].node_ssh.timeout_s", "0"),
]  # fmt: skip


@pytest.mark.parametrize(("block", "line", "path", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_broken_node_ssh_is_named_by_file_line_and_field(
    tmp_path: Path, block: str, line: int, path: str, message: str
) -> None:
    with pytest.raises(InputFileError) as info:
        _load(tmp_path, block)
    matching = [p for p in info.value.problems if p.path == path and message in p.message]
    assert matching, f"no problem {path!r} ~ {message!r} in {info.value.problems}"
    assert matching[0].file == str(tmp_path / "site.yml")
    assert matching[0].line == line, str(matching[0])


def test_a_selector_pool_lets_any_node_name_through(tmp_path: Path) -> None:
    """With a selector pool the nodes are not all named, so an unlisted name is not a typo."""
    text = BASE.read_text(encoding="utf-8").replace(
        "        nodes: [a100-1]\n",
        "        selector: {nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB}\n",
    )
    path = tmp_path / "site.yml"
    path.write_text(text + GOOD + "      addresses: {a100-7: 192.0.2.37}\n", encoding="utf-8")
    access = load_inventory(path).clusters[0].node_ssh
    assert access is not None and "a100-7" in access.addresses


def test_the_commented_example_is_valid_when_uncommented(tmp_path: Path) -> None:
    example = BASE.parents[3] / "inventories" / "onprem.example.yml"
    text = example.read_text(encoding="utf-8")
    start = text.index("    # node_ssh:\n")
    end = text.index("\n\n", start)
    lines = [line.replace("    # ", "    ", 1) for line in text[start:end].splitlines()]
    block = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    path = tmp_path / "onprem.yml"
    path.write_text(text[:start] + block + text[end:], encoding="utf-8")
    access = load_inventory(path).clusters[0].node_ssh
    assert access is not None and access.known_hosts == tmp_path / "nodes_known_hosts"
    assert access.addresses == {"gpu-h100-01": IPv4Address("10.20.1.31")}
