"""Nodes really pull from the hub (issue 19): the nodes phase configures a real containerd.

The lab's node host (lab/components/25-node.sh) runs Debian's containerd in a network namespace
of its own and stands for the kwok node `cpu-1`; the test inventory is the lab site's
(inventories/lab.yml) with `node_ssh` to that host and `node_runtime` naming its containerd's
files and restart command. Pulls go through the CRI (crictl against the node's socket), as a
kubelet's would: containerd resolves, trusts and authenticates by the configuration the nodes
phase wrote, from inside the node's namespace, whose only route out is to the hub VM.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from installer.checks.context import SiteAccess
from installer.checks.verify_site import check_runtime_pull
from installer.inventory import load_inventory
from installer.release import load_pins, load_release
from tests.e2e.bootstrap.cli import LAB_INVENTORY, installer, plain_env, site_lock
from tests.e2e.bootstrap.runs import Bootstrap, run_bootstrap, upstream
from tests.fixtures.lab import REPO, Lab
from tests.fixtures.molecule import run_molecule

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BUSYBOX = "docker.io/library/busybox:1.37.0"
PAUSE = "registry.k8s.io/pause:3.10"
HUB_PHASES = ("--only", "preflight", "--only", "auxvm", "--only", "airgap_load")


def node_inventory(lab: Lab, dest: Path, **node_ssh: Any) -> Path:
    """The lab site's inventory, with its paths made absolute, node_ssh to the lab's node host
    (as cpu-1) and node_runtime naming its containerd."""
    text = LAB_INVENTORY.read_text(encoding="utf-8").replace("../lab/", f"{REPO}/lab/")
    data = yaml.safe_load(text)
    env = lab.env
    data["clusters"][0]["node_ssh"] = {
        "user": lab.vm_user,
        "private_key": f"file:{lab.vm_key}",
        "known_hosts": env["LAB_NODE_KNOWN_HOSTS"],
        "address_source": "addresses",
        "addresses": {env["LAB_NODE_NAME"]: env["LAB_NODE_ADDR"]},
        "timeout_s": 5,
        **node_ssh,
    }
    data["clusters"][0]["node_runtime"] = {
        "configure": "ssh",
        "nodes": [env["LAB_NODE_NAME"]],
        "config_path": env["LAB_NODE_CONTAINERD_CONFIG"],
        "certs_dir": env["LAB_NODE_CERTS_DIR"],
        "restart": [env["LAB_NODE_RESTART"]],
        "crictl": env["LAB_CRICTL"],
        "cri_endpoint": env["LAB_NODE_CRI_ENDPOINT"],
    }
    dest.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return dest


def crictl(lab: Lab, *args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """crictl against the node's containerd (its socket; the pull itself runs in the node)."""
    endpoint = lab.env["LAB_NODE_CRI_ENDPOINT"]
    return subprocess.run(
        [lab.env["LAB_CRICTL"], "--runtime-endpoint", endpoint, "--image-endpoint", endpoint,
         "--timeout", "90s", *args],
        capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip


def forget_image(lab: Lab, ref: str) -> None:
    """Remove `ref` from the node's image store, if there."""
    crictl(lab, "rmi", ref)
    assert crictl(lab, "inspecti", ref).returncode != 0, f"{ref} still on the node"


def repo_digests(lab: Lab, ref: str) -> list[str]:
    """The image's repo digests as the node's containerd records them."""
    proc = crictl(lab, "inspecti", "-o", "json", ref)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout)["status"]["repoDigests"])


def containerd_started(lab: Lab) -> tuple[int, str]:
    """The node's containerd: pid and start time (field 22 of /proc/<pid>/stat)."""
    pid = int((lab.state / "run" / "node-containerd.pid").read_text().strip())
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return pid, stat[19]


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes); empty when it does not exist."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@dataclass(frozen=True)
class NodeSite:
    """What the module's runs left to look at."""

    inventory: Path
    logs: Path
    config_before: bytes
    pull_before: subprocess.CompletedProcess[str]
    first: Bootstrap
    pull_after: subprocess.CompletedProcess[str]
    pause_after: subprocess.CompletedProcess[str]
    busybox_digests: list[str]
    started_after_first: tuple[int, str]
    second: Bootstrap
    started_after_second: tuple[int, str]


@pytest.fixture(scope="module")
def node_site(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeSite]:
    tmp = tmp_path_factory.mktemp("nodes")
    inventory = node_inventory(lab, tmp / "nodes.yml")
    config = Path(lab.env["LAB_NODE_CONTAINERD_CONFIG"])
    env = plain_env()
    with site_lock():
        upstream("up")
        # The node as the lab installed it: no earlier run's settings, no image of the release.
        rc, _, tail = installer(
            "destroy", "-i", str(inventory), "--yes", "--only", "nodes",
            log_dir=tmp / "logs", timeout=900, env=env,
        )  # fmt: skip
        assert rc == 0, f"destroy --only nodes failed (exit {rc}):\n{tail}"
        config_before = config.read_bytes()
        for ref in (BUSYBOX, PAUSE):
            forget_image(lab, ref)
        pull_before = crictl(lab, "pull", BUSYBOX)
        first = run_bootstrap(inventory, tmp / "first", env, *HUB_PHASES, "--only", "nodes")
        started_after_first = containerd_started(lab)
        upstream("down")
        try:
            pull_after = crictl(lab, "pull", BUSYBOX)
            pause_after = crictl(lab, "pull", PAUSE)
            digests = repo_digests(lab, BUSYBOX) if pull_after.returncode == 0 else []
            second = run_bootstrap(inventory, tmp / "second", env, "--only", "nodes")
            started_after_second = containerd_started(lab)
        finally:
            upstream("up")
        yield NodeSite(
            inventory, tmp / "logs", config_before, pull_before, first, pull_after,
            pause_after, digests, started_after_first, second, started_after_second,
        )  # fmt: skip
        rc, _, tail = installer(
            "destroy", "-i", str(inventory), "--yes", "--only", "nodes",
            log_dir=tmp / "logs", timeout=900, env=env,
        )  # fmt: skip
        assert rc == 0, f"destroy --only nodes failed (exit {rc}):\n{tail}"


def test_before_the_nodes_phase_the_node_cannot_pull(node_site: NodeSite) -> None:
    assert node_site.pull_before.returncode != 0, node_site.pull_before.stdout


def test_after_it_the_node_pulls_by_upstream_name_from_the_hub(
    lab: Lab, node_site: NodeSite
) -> None:
    first = node_site.first
    assert first.rc == 0, first.tail
    assert first.phase("nodes")["status"] == "ok"
    # The upstream registry was stopped: the pull came from the hub, under the image's own name.
    assert node_site.pull_after.returncode == 0, node_site.pull_after.stderr
    pins = load_pins(lab.state / "upstream" / "release.pins.yml")
    (image,) = [i for i in load_release().images if f"{i.name}:{i.tag}" == BUSYBOX]
    digest = pins.image(image)
    assert digest is not None
    assert f"docker.io/library/busybox@{digest}" in node_site.busybox_digests


def test_verify_pulls_through_the_nodes_runtime_by_upstream_name(
    lab: Lab, node_site: NodeSite, tmp_path: Path
) -> None:
    forget_image(lab, BUSYBOX)
    access = SiteAccess(load_inventory(node_site.inventory))
    found = check_runtime_pull(access, access.inventory.clusters[0])
    assert found.ok, found.message
    assert found.message == f"cpu-1 pulled {BUSYBOX} by its upstream name through its containerd"
    # A runtime the check cannot reach fails, naming the node and the pull.
    wrong = node_inventory(lab, tmp_path / "wrong.yml")
    text = wrong.read_text(encoding="utf-8").replace(
        lab.env["LAB_NODE_CRI_ENDPOINT"], "unix:///run/chk-no-such.sock"
    )
    wrong.write_text(text, encoding="utf-8")
    access = SiteAccess(load_inventory(wrong))
    failed = check_runtime_pull(access, access.inventory.clusters[0])
    assert not failed.ok
    assert failed.message.startswith(f"cpu-1: `crictl pull {BUSYBOX}` through the node's")


def test_the_sandbox_image_comes_from_the_hub(lab: Lab, node_site: NodeSite) -> None:
    assert node_site.pause_after.returncode == 0, node_site.pause_after.stderr
    text = Path(lab.env["LAB_NODE_CONTAINERD_CONFIG"]).read_text(encoding="utf-8")
    hub = load_inventory(node_site.inventory).aux_vm.hostname
    assert f'sandbox_image = "{hub}:5000/{PAUSE}"' in text


def test_the_node_keeps_its_own_settings_and_the_password_is_root_only(
    lab: Lab, node_site: NodeSite
) -> None:
    config = Path(lab.env["LAB_NODE_CONTAINERD_CONFIG"])
    before = node_site.config_before.decode()
    after = config.read_text(encoding="utf-8")
    for line in before.splitlines():
        if line.strip():
            assert line in after, f"the node's own line {line!r} is gone"
    assert config.stat().st_mode & 0o777 == 0o600


def test_a_second_run_changes_nothing_and_does_not_restart_containerd(
    node_site: NodeSite,
) -> None:
    second = node_site.second
    assert second.rc == 0, second.tail
    nodes = second.phase("nodes")
    assert nodes["status"] == "ok"
    assert nodes["changes"] == 0, nodes
    assert not [e for e in second.events if e.get("event") == "change"]
    assert node_site.started_after_second == node_site.started_after_first


def test_plan_names_a_drifted_file_by_node_and_bootstrap_puts_it_right(
    lab: Lab, node_site: NodeSite, tmp_path: Path
) -> None:
    hosts = Path(lab.env["LAB_NODE_CERTS_DIR"]) / "docker.io" / "hosts.toml"
    wanted = hosts.read_bytes()
    hosts.write_text('server = "https://registry-1.docker.io"\n', encoding="utf-8")
    args = ("-i", str(node_site.inventory), "--only", "nodes")
    rc, data, tail = installer(
        "plan", *args, "--expect-no-changes", log_dir=tmp_path / "logs", timeout=600,
        env=plain_env(),
    )  # fmt: skip
    assert rc == 1, tail
    node = f"cluster/lab/node/{lab.env['LAB_NODE_NAME']}"
    (nodes,) = [p for p in data["phases"] if p["phase"] == "nodes"]
    drifted = [(c["target"], c["name"]) for c in nodes["changes"] if c["target"] == node]
    assert drifted == [(node, "Write each registry's hosts.toml")], nodes["changes"]
    fixed = run_bootstrap(node_site.inventory, tmp_path / "fix", plain_env(), "--only", "nodes")
    assert fixed.rc == 0, fixed.tail
    assert hosts.read_bytes() == wanted
    rc, _, tail = installer(
        "plan", *args, "--expect-no-changes", log_dir=tmp_path / "logs", timeout=600,
        env=plain_env(),
    )  # fmt: skip
    assert rc == 0, tail


def test_a_new_site_ca_reaches_the_node_and_pulls_still_work(
    lab: Lab, node_site: NodeSite, tmp_path: Path
) -> None:
    # The rotation of docs/runbooks/rotate-credentials.md: the old PKI moved aside, then the
    # auxvm phase (a new CA and server certificate on the hub) and the nodes phase.
    pki = lab.state / "installer" / "pki"
    old_ca = (pki / "ca.crt").read_bytes()
    shutil.move(pki, tmp_path / "pki-old")
    run = run_bootstrap(
        node_site.inventory, tmp_path / "logs", plain_env(), "--only", "auxvm", "--only", "nodes"
    )
    assert run.rc == 0, run.tail
    new_ca = (pki / "ca.crt").read_bytes()
    assert new_ca != old_ca
    hub = load_inventory(node_site.inventory).aux_vm.hostname
    trusted = Path(lab.env["LAB_NODE_CERTS_DIR"]) / f"{hub}:5000" / "ca.crt"
    assert trusted.read_bytes() == new_ca
    forget_image(lab, BUSYBOX)
    upstream("down")
    try:
        pulled = crictl(lab, "pull", BUSYBOX)
    finally:
        upstream("up")
    assert pulled.returncode == 0, pulled.stderr


def test_the_roles_molecule_scenario_finds_the_node_converged(
    lab: Lab, node_site: NodeSite
) -> None:
    # The inventory the nodes phase wrote for hand runs drives it: host keys, key, variables.
    assert (lab.state / "installer" / "ansible" / "nodes-lab.inventory.json").is_file()
    run_molecule("nodes/containerd", lab.env["LAB_NODE_NAME"])


def test_through_the_vm_the_same_node_is_found_converged(
    lab: Lab, node_site: NodeSite, tmp_path: Path
) -> None:
    inventory = node_inventory(lab, tmp_path / "jump.yml", jump="aux-vm")
    run = run_bootstrap(inventory, tmp_path / "logs", plain_env(), "--only", "nodes")
    assert run.rc == 0, run.tail
    assert run.phase("nodes")["changes"] == 0, run.phase("nodes")
    # The play's SSH went through the VM: its recorded inventory names the VM as the jump.
    saved = (lab.state / "installer" / "ansible" / "nodes-lab.inventory.json").read_text()
    assert f"-W %h:%p {lab.vm_user}@{lab.vm_addr}" in saved


def _known_hosts(tmp: Path, pattern: str, key_line: str) -> Path:
    path = tmp / f"known_hosts-{pattern.replace('.', '_')}"
    path.write_text(f"{pattern} {key_line}\n", encoding="utf-8")
    return path


def test_an_unreachable_node_fails_the_phase_by_name(
    lab: Lab, node_site: NodeSite, tmp_path: Path
) -> None:
    # Its key pinned under the address that answers nothing: the connection itself fails.
    key = Path(lab.env["LAB_NODE_KNOWN_HOSTS"]).read_text(encoding="utf-8").split(" ", 1)[1]
    gone = lab.env["LAB_NODE_ADDR"].rsplit(".", 1)[0] + ".99"
    inventory = node_inventory(
        lab, tmp_path / "gone.yml", addresses={lab.env["LAB_NODE_NAME"]: gone},
        known_hosts=str(_known_hosts(tmp_path, gone, key.strip())),
    )  # fmt: skip
    run = run_bootstrap(inventory, tmp_path / "logs", plain_env(), "--only", "nodes")
    assert run.rc == 3, run.tail
    assert f"node {lab.env['LAB_NODE_NAME']} ({lab.vm_user}@{gone}:22)" in run.tail
    assert "reachable on its SSH port" in run.tail


NO_CONTAINERD_PORT = 2022
# A second sshd on the node host whose sessions see its filesystem without containerd: /usr/bin
# through an overlay that whites the binary out, in a mount namespace of the sshd's own (nothing
# changes for the node's own sshd, its containerd or the host).
_WITHOUT_CONTAINERD = """set -e
mkdir -p "$T/upper" "$T/work"
mount -t overlay overlay -o "lowerdir=/usr/bin,upperdir=$T/upper,workdir=$T/work" /usr/bin
rm -f /usr/bin/containerd
exec /usr/sbin/sshd -D -e -f "$T/sshd_config"
"""


@pytest.fixture
def node_without_containerd(lab: Lab, tmp_path: Path) -> Iterator[Path]:
    """The node host's address on port NO_CONTAINERD_PORT: the same host key and login, no
    containerd. Yields the known_hosts file that pins it."""
    addr = lab.env["LAB_NODE_ADDR"]
    node_state = lab.state / "node"
    config = (node_state / "sshd_config").read_text(encoding="utf-8")
    config = config.replace(f"{addr}:22", f"{addr}:{NO_CONTAINERD_PORT}")
    assert f":{NO_CONTAINERD_PORT}" in config, "the node's sshd_config no longer listens on :22"
    (tmp_path / "sshd_config").write_text(config, encoding="utf-8")
    log = (tmp_path / "sshd.log").open("w")
    sshd = subprocess.Popen(
        ["ip", "netns", "exec", lab.env["LAB_NODE_NETNS"], "unshare", "--mount",
         "--propagation", "private", "bash", "-c", _WITHOUT_CONTAINERD],
        env={**os.environ, "T": str(tmp_path)}, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection((addr, NO_CONTAINERD_PORT), timeout=1).close()
                break
            except OSError:
                log.flush()
                assert sshd.poll() is None, (tmp_path / "sshd.log").read_text(encoding="utf-8")
                assert time.monotonic() < deadline, "the second sshd did not start in 30 s"
                time.sleep(0.2)
        key = (node_state / "ssh_host_ed25519_key.pub").read_text(encoding="utf-8").split()[:2]
        yield _known_hosts(tmp_path, f"[{addr}]:{NO_CONTAINERD_PORT}", " ".join(key))
    finally:
        sshd.terminate()
        sshd.wait(timeout=30)
        log.close()


def test_a_node_without_containerd_fails_the_phase_by_name(
    lab: Lab, node_site: NodeSite, node_without_containerd: Path, tmp_path: Path
) -> None:
    config = Path(lab.env["LAB_NODE_CONTAINERD_CONFIG"])
    before = config.read_bytes()
    inventory = node_inventory(
        lab, tmp_path / "no-containerd.yml", port=NO_CONTAINERD_PORT,
        known_hosts=str(node_without_containerd),
    )  # fmt: skip
    run = run_bootstrap(inventory, tmp_path / "logs", plain_env(), "--only", "nodes")
    assert run.rc == 1, run.tail
    where = f"{lab.vm_user}@{lab.env['LAB_NODE_ADDR']}:{NO_CONTAINERD_PORT}"
    assert f"node {lab.env['LAB_NODE_NAME']} ({where})" in run.tail
    assert "no containerd on this node" in run.tail
    assert "install containerd" in run.tail
    # Refused before anything was written: the node's files are as the first run left them.
    assert config.read_bytes() == before


def test_a_node_with_another_host_key_is_refused_by_name(
    lab: Lab, node_site: NodeSite, tmp_path: Path
) -> None:
    # The VM's key where the node's should be: the node presents its own, which is not pinned.
    vm_key = lab.vm_known_hosts.read_text(encoding="utf-8").split(" ", 1)[1].strip()
    addr = lab.env["LAB_NODE_ADDR"]
    inventory = node_inventory(
        lab, tmp_path / "wrong-key.yml", known_hosts=str(_known_hosts(tmp_path, addr, vm_key))
    )
    run = run_bootstrap(inventory, tmp_path / "logs", plain_env(), "--only", "nodes")
    assert run.rc == 3, run.tail
    assert f"node {lab.env['LAB_NODE_NAME']}" in run.tail
    assert "node_ssh.known_hosts" in run.tail


def test_destroy_puts_the_node_back_as_it_was(lab: Lab, node_site: NodeSite) -> None:
    rc, _, tail = installer(
        "destroy", "-i", str(node_site.inventory), "--yes", "--only", "nodes",
        log_dir=node_site.logs, timeout=900, env=plain_env(),
    )  # fmt: skip
    assert rc == 0, tail
    config = Path(lab.env["LAB_NODE_CONTAINERD_CONFIG"])
    assert config.read_bytes() == node_site.config_before
    assert files_under(Path(lab.env["LAB_NODE_CERTS_DIR"])) == {}
    assert not (config.parent / "onprem-installer-originals").exists()
