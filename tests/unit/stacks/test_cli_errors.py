"""`installer stacks`: bad input and environment problems end with the documented exit codes
before anything is changed (the real CLI in a subprocess, a closed loopback port as the API)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from installer.engines.pulumi import project_file_text
from installer.lock import site_lock
from installer.stacks import COMPONENTS
from tests.unit.stacks.conftest import SITE

REPO = Path(__file__).resolve().parents[3]

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
  - name: lab
    cluster: {{server: "https://127.0.0.1:{port}", insecure-skip-tls-verify: true}}
users:
  - name: admin
    user: {{token: not-a-real-token}}
contexts:
  - name: lab
    context: {{cluster: lab, user: admin}}
current-context: lab
"""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _site(tmp_path: Path, *, context: str = "lab") -> Path:
    (tmp_path / "kubeconfig").write_text(KUBECONFIG.format(port=_closed_port()), encoding="utf-8")
    path = tmp_path / "onprem.yml"
    path.write_text(SITE.replace("context: lab", f"context: {context}"), encoding="utf-8")
    return path


def _installer(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "installer.cli",
            "--log-dir",
            str(tmp_path / "runs"),
            "--output",
            "json",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "KC_PASS": "x-admin-pass"},
    )


def test_unreachable_api_is_an_environment_problem(tmp_path: Path) -> None:
    proc = _installer(tmp_path, "stacks", "preview", "-i", str(_site(tmp_path)), "-c", "nodes")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    error = json.loads(proc.stdout)["error"]
    assert "unreachable" in error["message"]


def test_missing_context_is_bad_input(tmp_path: Path) -> None:
    # One rule for every kubeconfig the installer reads (installer/engines/kube.py): a context
    # the inventory names and the file lacks is the inventory's to fix.
    proc = _installer(
        tmp_path, "stacks", "up", "-i", str(_site(tmp_path, context="nope")), "-c", "nodes"
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "context 'nope'" in json.loads(proc.stdout)["error"]["message"]


def test_unknown_cluster_and_stack_are_bad_input(tmp_path: Path) -> None:
    site = str(_site(tmp_path))
    proc = _installer(tmp_path, "stacks", "preview", "-i", site, "--cluster", "other")
    assert proc.returncode == 2
    assert "cluster other is not in the inventory" in json.loads(proc.stdout)["error"]["message"]
    proc = _installer(tmp_path, "stacks", "preview", "-i", site, "-c", "gpu")
    assert proc.returncode == 2


def test_stack_folders_match_what_the_engine_writes() -> None:
    for component in COMPONENTS:
        folder = REPO / "stacks" / component
        assert (folder / "Pulumi.yaml").read_text(encoding="utf-8") == project_file_text(component)
        assert f'program_of("{component}")()' in (folder / "__main__.py").read_text(
            encoding="utf-8"
        )


def test_stacks_up_refuses_while_a_bootstrap_holds_the_site(
    tmp_path: Path,
) -> None:
    # `stacks up` runs the bootstrap phases' code under the same site lock: while another run
    # holds it, nothing is read or changed and the holder is named.
    site = _site(tmp_path)
    with site_lock(tmp_path / "state", "bootstrap --inventory onprem.yml"):
        proc = _installer(tmp_path, "stacks", "up", "-i", str(site), "-c", "nodes")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    message = json.loads(proc.stdout)["error"]["message"]
    assert "another run holds the site lock" in message
    assert "bootstrap --inventory onprem.yml" in message
