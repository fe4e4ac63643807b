"""The stacks' e2e set-up: a site inventory written from the lab's facts, own state folder.

Each module gets its own state folder (its own Pulumi backend and stacks), so these tests never
touch another engineer's stacks. The cluster is the stacks' own (`stacks_cluster`): a second
Kubernetes control plane with the lab's node topology, from a copy of the lab's kube component on
other ports, started once per session. So these tests run beside the whole-site tests (which
label, taint and fill the lab's own cluster) instead of after them, and every test still leaves
the nodes as it found them (destroy at the end). The lab's Keycloak (a realm of their own), its
Pulumi toolchain and its VM (the modules that need the site's hub take the site lock) are shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tests.e2e.lab.labcopy import component, copy_lab, shifted_ports
from tests.fixtures.lab import *  # noqa: F403
from tests.fixtures.lab import Lab, read_env_file

REALM = "e2e-stacks"

INVENTORY = """\
apiVersion: installer/v1
site: {{name: lab, domain: lab.example.test, state_dir: {state}}}
aux_vm:
  address: {vm_addr}
  ssh: {{user: {vm_user}, private_key: "file:{vm_key}", known_hosts: {known_hosts}}}
clusters:
  - name: lab
    kubeconfig: {kubeconfig}
    ingress_ips: [10.213.0.50]
    node_pools:
      - {{name: services, nodes: [cpu-3], cpu: 16, memory: 64Gi, jobs: false}}
      - {{name: cpu, nodes: [cpu-1, cpu-2], cpu: 30, memory: 120Gi}}
      - name: a100
        selector: {{nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB}}
        cpu: 120
        memory: 900Gi
        gpu: {{model: NVIDIA-A100-SXM4-80GB, count: 8, memory: 80Gi}}
{h100_pool}    presets:
      - name: cpu-small
        credits_per_hour: "{cpu_small_price}"
        cpu: 2
        memory: 8Gi
        pools: [cpu]
      - {{name: a100x1, cpu: 8, memory: 64Gi, nvidia_gpu: {{count: 1}}, pools: [a100]}}
    storage: {{engine: localpv-hostpath}}
    keycloak:
      mode: external
      url: {kc_url}
      admin_user: {kc_admin}
      admin_password: "file:{kc_password_file}"
      realm: {realm}
"""

H100_POOL = """\
      - name: h100-spot
        nodes: [h100-1]
        cpu: 180
        memory: 1800Gi
        gpu: {model: NVIDIA-H100-80GB-HBM3, count: 8}
        preemptible: true
"""


@dataclass
class Site:
    """A lab site on disk: inventory, state folder, and how to run the installer on it."""

    folder: Path
    lab: Lab
    kubeconfig: Path
    """The cluster the site's stacks go to (the stacks' own, `stacks_cluster`)."""

    @property
    def inventory(self) -> Path:
        return self.folder / "onprem.yml"

    @property
    def state(self) -> Path:
        return self.folder / "state"

    def write(self, *, h100: bool = True, cpu_small_price: str = "0.5") -> None:
        """(Re)write the inventory."""
        env = self.lab.env
        text = INVENTORY.format(
            state=self.state,
            vm_addr=self.lab.vm_addr,
            vm_user=self.lab.vm_user,
            vm_key=self.lab.vm_key,
            known_hosts=self.lab.vm_known_hosts,
            kubeconfig=self.kubeconfig,
            h100_pool=H100_POOL if h100 else "",
            cpu_small_price=cpu_small_price,
            kc_url=env["LAB_KEYCLOAK_URL"],
            kc_admin=env["LAB_KEYCLOAK_ADMIN"],
            kc_password_file=env["LAB_KEYCLOAK_PASSWORD_FILE"],
            realm=REALM,
        )
        self.inventory.write_text(text, encoding="utf-8")

    def installer(self, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
        """Run the real `installer` CLI with the lab's Pulumi toolchain."""
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "LAB_PULUMI_BIN_DIR": self.lab.env.get("LAB_PULUMI_BIN_DIR", ""),
            # The lab Keycloak's certificate is signed by the lab CA.
            "SSL_CERT_FILE": self.lab.env["LAB_KEYCLOAK_CA"],
            "HOME": str(self.folder),
        }
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "installer.cli",
                "--log-dir",
                str(self.folder / "runs"),
                "--output",
                "json",
                *args,
                "--inventory",
                str(self.inventory),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env=env,
            cwd=self.folder,
        )

    def ok(self, *args: str) -> dict[str, Any]:
        """Run the installer; fail the test with its error unless it exits 0; return its JSON."""
        proc = self.installer(*args)
        assert proc.returncode == 0, f"installer {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        result: dict[str, Any] = json.loads(proc.stdout)
        return result


STACKS_PORT_SHIFT = 4000
"""The stacks' cluster listens on the lab's kube ports plus this (20443 for the API server): clear
of the session lab, of the +10000 copies other tests start, and of the ephemeral port range."""


@pytest.fixture(scope="session")
def stacks_cluster(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The stacks' own cluster (the lab's kube component, copied onto other ports, with the lab's
    six-node topology): its admin kubeconfig. Taken down at the end of the session."""
    del lab  # the toolchain the session lab built, and its Keycloak
    tmp = tmp_path_factory.mktemp("stacks-cluster")
    shifted = shifted_ports(STACKS_PORT_SHIFT)
    lab_copy = copy_lab(tmp, shifted)
    env = {"LAB_STATE": str(tmp / "state")}
    try:
        up = component(lab_copy, "10-kube.sh", "up", env)
        assert up.returncode == 0, f"the stacks' cluster did not start:\n{up.stderr[-3000:]}"
        facts = read_env_file(tmp / "state" / "env.d" / "kube.env")
        yield Path(facts["LAB_KUBECONFIG"])
    finally:
        down = component(lab_copy, "10-kube.sh", "down", env)
        assert down.returncode == 0, f"the stacks' cluster did not stop:\n{down.stderr[-3000:]}"


@pytest.fixture(scope="module")
def cluster(lab: Lab, request: pytest.FixtureRequest) -> Path:
    """The module's cluster (its kubeconfig): the stacks' own, or the lab's for a module marked
    `lab_site` (it works with the site's hub, in the lab site's lane)."""
    if request.node.get_closest_marker("lab_site") is not None:
        return lab.kubeconfig
    found: Path = request.getfixturevalue("stacks_cluster")
    return found


@pytest.fixture(scope="module")
def site(lab: Lab, cluster: Path, tmp_path_factory: pytest.TempPathFactory) -> Site:
    """A fresh site folder for the module, on the module's cluster."""
    folder = tmp_path_factory.mktemp("stacks-site")
    found = Site(folder=folder, lab=lab, kubeconfig=cluster)
    found.write()
    return found


@pytest.fixture(scope="module")
def core(cluster: Path) -> client.CoreV1Api:
    """The module's cluster's core API."""
    return client.CoreV1Api(config.new_client_from_config(config_file=str(cluster)))


@pytest.fixture(scope="module")
def foreign_marks(core: client.CoreV1Api) -> Iterator[None]:
    """A label and a taint an operator set by hand on a100-1; the installer must keep them."""
    node = core.read_node("a100-1")
    taints = [t for t in node.spec.taints or [] if t.key != "example.com/dedicated"]
    taints.append(client.V1Taint(key="example.com/dedicated", value="ops", effect="NoSchedule"))
    core.patch_node(
        "a100-1",
        {"metadata": {"labels": {"example.com/owner": "ops"}}, "spec": {"taints": taints}},
        field_manager="e2e-operator",
    )
    yield
    node = core.read_node("a100-1")
    left = [t for t in node.spec.taints or [] if t.key != "example.com/dedicated"]
    core.patch_node(
        "a100-1",
        {"metadata": {"labels": {"example.com/owner": None}}, "spec": {"taints": left}},
        field_manager="e2e-operator",
    )
