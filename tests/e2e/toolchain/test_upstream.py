"""The stand-in upstream holds everything the release manifest names, behind TLS and auth.

- registry: `skopeo inspect` answers for every manifest image at its mirror path
  (`<registry>/<full upstream name>:<tag>`), with the lab CA and credentials, and refuses
  anonymous pulls; the Keycloak stand-in carries a layer of 200 MB or more; podman pulls a
  stand-in and runs it with runc;
- chart repository: index.yaml lists every manifest chart at its version, and each chart
  renders the kinds of objects the real chart does; charts whose upstream is an OCI repository
  (the platform's) are also in the registry under the same mirror prefix;
- wheel index: pip, given that index only, downloads the installer with all its dependencies.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from installer.release import ChartRef, ImageRef, ReleaseManifest, load_release
from tests.fixtures.lab_services import LabServices

pytestmark = pytest.mark.e2e

MANIFEST: ReleaseManifest = load_release()

# Kinds each stand-in chart renders with the installer's usual values (the real charts' kinds).
CHART_KINDS = {
    "openebs": {"CustomResourceDefinition", "CSIDriver", "DaemonSet", "Deployment", "StorageClass"},
    "cstor": {"CSIDriver", "ClusterRole", "ClusterRoleBinding", "DaemonSet", "Deployment"},
    "keycloak": {"Secret", "Service", "ServiceAccount", "StatefulSet"},
    "platform-api-poller": {"Deployment", "Service"},
    "platform-apps": {"ClusterRole", "ClusterRoleBinding", "Deployment", "Service"},
}


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("image", MANIFEST.images, ids=lambda i: f"{i.name}:{i.tag}")
def test_registry_serves_every_image(
    image: ImageRef, lab_services: LabServices, tmp_path: Path
) -> None:
    ref = f"docker://{lab_services.registry}/{image.name}:{image.tag}"
    proc = _skopeo(
        "inspect",
        "--cert-dir",
        str(lab_services.cert_dir(tmp_path)),
        "--creds",
        lab_services.auth.pair,
        ref,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["Name"] == f"{lab_services.registry}/{image.name}"
    assert info["Labels"]["org.opencontainers.image.title"] == image.name
    assert info["Labels"]["org.opencontainers.image.version"] == image.tag
    assert len(info["Layers"]) >= 2  # the shared busybox base and the image's own layer


def test_registry_refuses_anonymous_pulls(lab_services: LabServices, tmp_path: Path) -> None:
    image = MANIFEST.images[0]
    proc = _skopeo(
        "inspect",
        "--cert-dir",
        str(lab_services.cert_dir(tmp_path)),
        "--no-creds",
        f"docker://{lab_services.registry}/{image.name}:{image.tag}",
    )
    assert proc.returncode != 0
    assert "unauthorized" in proc.stderr.lower() or "authentication" in proc.stderr.lower()


def test_images_share_layers_and_one_is_large(lab_services: LabServices, tmp_path: Path) -> None:
    layer_sizes: dict[str, int] = {}
    uses: Counter[str] = Counter()
    for image in MANIFEST.images:
        proc = _skopeo(
            "inspect",
            "--raw",
            "--cert-dir",
            str(lab_services.cert_dir(tmp_path)),
            "--creds",
            lab_services.auth.pair,
            f"docker://{lab_services.registry}/{image.name}:{image.tag}",
        )
        assert proc.returncode == 0, proc.stderr
        for layer in json.loads(proc.stdout)["layers"]:
            layer_sizes[layer["digest"]] = layer["size"]
            uses[layer["digest"]] += 1
    assert max(layer_sizes.values()) >= 200 * 1000 * 1000
    assert uses.most_common(1)[0][1] == len(MANIFEST.images)  # the busybox base everywhere
    assert sum(layer_sizes.values()) < 1024**3  # stays a sane download


def _charts_index(services: LabServices) -> dict[str, list[dict[str, object]]]:
    resp = httpx.get(
        f"{services.charts_url}/index.yaml",
        verify=ssl.create_default_context(cafile=services.ca),
        auth=(services.auth.user, services.auth.password),
        timeout=30,
    )
    resp.raise_for_status()
    entries: dict[str, list[dict[str, object]]] = yaml.safe_load(resp.text)["entries"]
    return entries


def test_chart_index_lists_every_chart(lab_services: LabServices) -> None:
    entries = _charts_index(lab_services)
    for chart in MANIFEST.charts:
        versions = {str(e["version"]) for e in entries.get(chart.name, [])}
        assert chart.version in versions, f"{chart.name} {chart.version} not in index.yaml"


def test_chart_repository_needs_credentials(lab_services: LabServices) -> None:
    resp = httpx.get(
        f"{lab_services.charts_url}/index.yaml",
        verify=ssl.create_default_context(cafile=lab_services.ca),
    )
    assert resp.status_code == 401


@pytest.mark.parametrize("chart", MANIFEST.charts, ids=lambda c: c.name)
def test_chart_pulls_and_renders_real_kinds(
    chart: ChartRef, lab_services: LabServices, tmp_path: Path
) -> None:
    auth = lab_services.auth
    helm_env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}

    def helm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(lab_services.helm), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=helm_env,
        )

    added = helm(
        "repo",
        "add",
        "upstream",
        lab_services.charts_url,
        "--username",
        auth.user,
        "--password-stdin",
        "--ca-file",
        str(lab_services.ca),
        stdin=auth.password,
    )
    assert added.returncode == 0, added.stderr
    pull = helm("pull", f"upstream/{chart.name}", "--version", chart.version, "-d", str(tmp_path))
    assert pull.returncode == 0, pull.stderr
    archive = tmp_path / f"{chart.name}-{chart.version}.tgz"
    rendered = helm("template", "lab", str(archive), "--namespace", "lab")
    assert rendered.returncode == 0, rendered.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(rendered.stdout) if d}
    assert CHART_KINDS[chart.name] <= kinds


def test_wheel_index_serves_the_installer(lab_services: LabServices, tmp_path: Path) -> None:
    auth = lab_services.auth
    index = lab_services.pypi_url.replace("https://", f"https://{auth.user}:{auth.password}@", 1)
    wheel = next(w for w in MANIFEST.wheels if w.name == "onprem-installer")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--index-url",
            index,
            "--cert",
            str(lab_services.ca),
            "--only-binary",
            ":all:",
            "-d",
            str(tmp_path / "dl"),
            f"{wheel.name}=={wheel.version}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PIP_CONFIG_FILE": "/dev/null"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = {p.name.split("-")[0].lower() for p in (tmp_path / "dl").iterdir()}
    assert {"onprem_installer", "pulumi", "pulumi_kubernetes", "pydantic"} <= names


@pytest.mark.parametrize(
    "chart",
    [c for c in MANIFEST.charts if c.repository.startswith("oci://")],
    ids=lambda c: c.name,
)
def test_oci_charts_are_mirrored_in_the_registry(
    chart: ChartRef, lab_services: LabServices, tmp_path: Path
) -> None:
    auth = lab_services.auth
    registry_config = str(tmp_path / "registry.json")
    common = ["--registry-config", registry_config, "--ca-file", str(lab_services.ca)]
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    login = subprocess.run(
        [
            str(lab_services.helm),
            *("registry", "login", lab_services.registry, *common),
            *("--username", auth.user, "--password-stdin"),
        ],
        input=auth.password,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert login.returncode == 0, login.stderr
    path = chart.repository.removeprefix("oci://")
    pull = subprocess.run(
        [
            str(lab_services.helm),
            *("pull", f"oci://{lab_services.registry}/{path}/{chart.name}"),
            *("--version", chart.version, "-d", str(tmp_path), *common),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert pull.returncode == 0, pull.stderr
    assert (tmp_path / f"{chart.name}-{chart.version}.tgz").is_file()


class Podman:
    """podman on a store of its own, pulling from the stand-in upstream and running with runc.
    This machine refuses the large default rlimits podman asks for, hence explicit ones."""

    def __init__(self, lab_services: LabServices, tmp_path: Path) -> None:
        self.lab_services, self.tmp_path = lab_services, tmp_path
        self.runroot = Path(tempfile.mkdtemp(prefix="lab-pod-"))  # at most 50 characters
        self.base = [
            "podman",
            *("--root", str(tmp_path / "store"), "--runroot", str(self.runroot)),
            *("--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"),
            *("--events-backend", "none"),
        ]

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def pull(self, image: ImageRef) -> str:
        ref = f"{self.lab_services.registry}/{image.name}:{image.tag}"
        pull = self(
            *("pull", "-q", "--cert-dir", str(self.lab_services.cert_dir(self.tmp_path))),
            *("--creds", self.lab_services.auth.pair, f"docker://{ref}"),
            timeout=300,
        )
        assert pull.returncode == 0, pull.stderr
        return ref

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self(
            *("run", "--runtime", "runc", "--network", "none"),
            *("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"),
            *args,
        )

    def close(self) -> None:
        self("rm", "--all", "--force", "--time", "0")
        shutil.rmtree(self.runroot, ignore_errors=True)


@pytest.fixture
def podman(lab_services: LabServices, tmp_path: Path) -> Iterator[Podman]:
    p = Podman(lab_services, tmp_path)
    try:
        yield p
    finally:
        p.close()


@pytest.mark.parametrize(
    "image",
    [next(i for i in MANIFEST.images if i.component == c) for c in ("auxvm", "platform")],
    ids=lambda i: f"{i.name}:{i.tag}",
)
def test_stand_in_image_pulls_and_runs(image: ImageRef, podman: Podman) -> None:
    # Real, runnable images: podman pulls one from the upstream and runs it with runc, no network.
    run = podman.run("--rm", podman.pull(image), "cat", "/etc/lab-stand-in")
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"lab stand-in for {image.name}:{image.tag}",
        f"{image.name}:{image.tag}",
    ]


def test_the_sandbox_image_holds_a_pod_on_a_read_only_root(podman: Podman) -> None:
    # containerd runs a pod's sandbox (pause) container with a read-only root file system: a
    # stand-in that exits there leaves the pod's containers without a sandbox to join.
    (pause,) = [i for i in MANIFEST.images if i.name.endswith("/pause")]
    ref = podman.pull(pause)
    config = json.loads(podman("image", "inspect", ref).stdout)[0]["Config"]
    assert not config.get("ExposedPorts"), config  # every container of the pod shares its ports
    # podman would mount a tmpfs on /tmp of a read-only container; containerd does not.
    started = podman.run(
        "--detach", "--read-only", "--read-only-tmpfs=false", "--name", "sandbox", ref
    )
    assert started.returncode == 0, started.stderr
    time.sleep(3)
    state = json.loads(podman("inspect", "sandbox").stdout)[0]["State"]
    assert state["Running"], (state, podman("logs", "sandbox").stdout)
    stopped = podman("stop", "--time", "10", "sandbox")
    assert stopped.returncode == 0, stopped.stderr
    state = json.loads(podman("inspect", "sandbox").stdout)[0]["State"]
    assert state["ExitCode"] == 0, state  # it ended on TERM, not killed after the grace period
