"""clusters[].node_runtime: containerd on the nodes, configured over node_ssh by the nodes phase.

Each case is appended to base.yml's cluster; a broken one must be named by file, line and field.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from installer.inventory import InputFileError, load_inventory

BASE = Path(__file__).with_name("base.yml")

NODE_SSH = """\
    node_ssh:
      user: ops
      private_key: file:nodes_ed25519
      known_hosts: nodes_known_hosts
"""


def _load(tmp_path: Path, block: str) -> object:
    path = tmp_path / "site.yml"
    path.write_text(BASE.read_text(encoding="utf-8") + block, encoding="utf-8")
    return load_inventory(path)


def test_defaults_are_containerds_own_paths_and_systemd() -> None:
    runtime = load_inventory(BASE).clusters[0].node_runtime
    assert runtime.configure == "auto" and runtime.nodes is None
    assert runtime.config_path == "/etc/containerd/config.toml"
    assert runtime.certs_dir == "/etc/containerd/certs.d"
    assert runtime.restart == ["systemctl", "restart", "containerd"]


def test_an_rke2_style_node_is_described_by_paths_and_its_own_restart(tmp_path: Path) -> None:
    block = NODE_SSH + (
        "    node_runtime:\n      configure: ssh\n      nodes: [a100-1]\n"
        "      config_path: /var/lib/rancher/rke2/agent/etc/containerd/config.toml\n"
        "      certs_dir: /var/lib/rancher/rke2/agent/etc/containerd/certs.d\n"
        "      restart: [systemctl, restart, rke2-agent]\n"
    )
    runtime = _load(tmp_path, block).clusters[0].node_runtime  # type: ignore[attr-defined]
    assert runtime.nodes == ["a100-1"]
    assert runtime.restart == ["systemctl", "restart", "rke2-agent"]


CASES = [
    ("ssh-without-node-ssh", "    node_runtime:\n      configure: ssh\n", 30,
     "clusters[0].node_runtime.configure", "needs node_ssh"),
    ("unknown-mode", "    node_runtime:\n      configure: daemonset\n", 30,
     "clusters[0].node_runtime.configure", "'auto', 'ssh' or 'none'"),
    ("unknown-node", "    node_runtime:\n      nodes: [a100-9]\n", 30,
     "clusters[0].node_runtime.nodes[0]", "in no pool"),
    ("relative-config", "    node_runtime:\n      config_path: etc/config.toml\n", 30,
     "clusters[0].node_runtime.config_path", "pattern"),
    ("folder-with-slash", "    node_runtime:\n      certs_dir: /etc/containerd/certs.d/\n", 30,
     "clusters[0].node_runtime.certs_dir", "pattern"),
    ("empty-restart", "    node_runtime:\n      restart: []\n", 30,
     "clusters[0].node_runtime.restart", "at least 1"),
]  # fmt: skip


@pytest.mark.parametrize(("block", "line", "path", "message"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_broken_node_runtime_is_named_by_file_line_and_field(
    tmp_path: Path, block: str, line: int, path: str, message: str
) -> None:
    with pytest.raises(InputFileError) as info:
        _load(tmp_path, block)
    matching = [p for p in info.value.problems if p.path == path and message in p.message]
    assert matching, f"no problem {path!r} ~ {message!r} in {info.value.problems}"
    assert matching[0].file == str(tmp_path / "site.yml")
    assert matching[0].line == line, str(matching[0])
