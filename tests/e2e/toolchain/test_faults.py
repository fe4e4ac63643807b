"""Part 2's tools fail in one line naming the tool and its log: a taken port, a failed build, a
Keycloak that is not ready in time (reported, not waited on forever).

Each case runs the real component script with its own `LAB_STATE` (and `LAB_CACHE` for builds),
or a copy of lab/ on other ports, so the session's lab is left alone.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.bootstrap.cli import site_lock
from tests.e2e.lab.labcopy import alive, component, copy_lab, listening, one_error_line
from tests.fixtures.lab import LAB_DIR, Lab, read_versions

pytestmark = pytest.mark.e2e

VERSIONS = read_versions()


@pytest.mark.parametrize(
    ("script", "tool", "port", "log"),
    [
        ("50-keycloak.sh", "keycloak", VERSIONS["LAB_KEYCLOAK_PORT"], "keycloak"),
        (
            "60-upstream.sh",
            "docker-registry",
            VERSIONS["LAB_UPSTREAM_REGISTRY_PORT"],
            "upstream-registry",
        ),
    ],
)
def test_taken_port_names_the_tool_and_its_log(
    lab: Lab, tmp_path: Path, script: str, tool: str, port: str, log: str
) -> None:
    # A second state on this machine finds the session lab's ports taken (Keycloak's is a Java
    # dual-stack socket, which a plain IPv4 check would miss).
    assert listening(int(port)), f"the session lab has nothing on {port}"
    state = tmp_path / "state"
    result = component(LAB_DIR, script, "up", {"LAB_STATE": str(state)}, timeout=120)
    error = one_error_line(result)
    assert error == f"[lab] error: {tool}: port {port} is taken; see {state / 'log' / f'{log}.log'}"
    assert not list(state.glob("run/*.pid")), "a daemon was started on a taken port"


def test_failed_helm_build_names_helm_and_its_log(tmp_path: Path) -> None:
    env = {
        "LAB_CACHE": str(tmp_path / "cache"),
        "LAB_STATE": str(tmp_path / "state"),
        "GOPROXY": "off",
        "GOPATH": "",
        "GOCACHE": "",
    }
    result = component(LAB_DIR, "40-helm.sh", "build", env, timeout=120)
    log = tmp_path / "state" / "log" / "build-helm.log"
    assert one_error_line(result) == f"[lab] error: helm: build failed; see {log}"
    assert "GOPROXY=off" in log.read_text()
    assert not (tmp_path / "cache" / f"helm-{VERSIONS['HELM_VERSION']}" / "bin").exists()


def test_failed_keycloak_download_names_keycloak_and_its_log(tmp_path: Path) -> None:
    # Maven offline with an empty local repository: the download fails at once.
    home = tmp_path / "home"
    (home / ".m2").mkdir(parents=True)
    (home / ".m2" / "settings.xml").write_text("<settings><offline>true</offline></settings>\n")
    env = {
        "LAB_CACHE": str(tmp_path / "cache"),
        "LAB_STATE": str(tmp_path / "state"),
        "MAVEN_OPTS": f"-Duser.home={home}",
    }
    result = component(LAB_DIR, "50-keycloak.sh", "build", env, timeout=180)
    log = tmp_path / "state" / "log" / "build-keycloak.log"
    assert one_error_line(result) == f"[lab] error: keycloak: download failed; see {log}"
    # Maven's own words land in the log: offline, it cannot even resolve its plugin.
    assert "no plugin found for prefix 'dependency'" in log.read_text().lower()
    kc = tmp_path / "cache" / f"keycloak-{VERSIONS['KEYCLOAK_VERSION']}"
    assert not (kc / "dist").exists()


def test_keycloak_not_ready_in_time_is_reported_and_down_cleans_up(
    lab: Lab, tmp_path: Path
) -> None:
    del lab  # the session lab's Keycloak keeps running beside this one
    shifted = {
        name: str(int(value) + 10000)
        for name, value in VERSIONS.items()
        if name.startswith("LAB_KEYCLOAK_") and name.endswith("_PORT")
    }
    lab_copy = copy_lab(tmp_path, shifted)
    state = tmp_path / "state"
    env = {"LAB_STATE": str(state), "LAB_KEYCLOAK_READY_SECONDS": "3"}
    started = time.monotonic()
    try:
        result = component(lab_copy, "50-keycloak.sh", "up", env, timeout=120)
        took = time.monotonic() - started
        error = one_error_line(result)
        assert (
            error
            == f"[lab] error: keycloak not ready after 3s; see {state / 'log' / 'keycloak.log'}"
        )
        assert took < 60, f"up took {took:.0f} s to give up"
        assert not (state / "env.d" / "50-keycloak.env").exists()
        pid = int((state / "run" / "keycloak.pid").read_text())
        status = component(lab_copy, "50-keycloak.sh", "status", env, timeout=60)
        assert status.returncode == 1
        assert str(state / "log" / "keycloak.log") in status.stdout
    finally:
        down = component(lab_copy, "50-keycloak.sh", "down", env, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not alive(pid)
    assert not listening(int(shifted["LAB_KEYCLOAK_PORT"]))
    assert not (state / "keycloak").exists()


def test_status_reports_a_dead_upstream_daemon_and_up_restarts_it(lab: Lab) -> None:
    run = lab.state / "run"
    status_before = component(LAB_DIR, "60-upstream.sh", "status", {}, timeout=60)
    assert status_before.returncode == 0, status_before.stdout
    with site_lock():
        pids = {p.stem: p.read_text().strip() for p in run.glob("upstream-*.pid")}
        victim = int(pids["upstream-registry"])
        try:
            os.kill(victim, 9)
            # Reported at once, even before this machine's init reaps the process.
            whole = subprocess.run(
                [str(LAB_DIR / "status")], capture_output=True, text=True, timeout=120, check=False
            )
            assert whole.returncode == 1, whole.stdout
            lines = whole.stdout.splitlines()
            log = lab.state / "log" / "upstream-registry.log"
            assert f"upstream-registry\tdown\t{log}" in lines, whole.stdout
            assert f"upstream-nginx\trunning\tpid {pids['upstream-nginx']}" in lines
        finally:
            up = component(LAB_DIR, "60-upstream.sh", "up", {}, timeout=300)
        assert up.returncode == 0, up.stderr
    after = {p.stem: p.read_text().strip() for p in run.glob("upstream-*.pid")}
    assert after["upstream-registry"] != pids["upstream-registry"]
    assert {k: v for k, v in after.items() if k != "upstream-registry"} == {
        k: v for k, v in pids.items() if k != "upstream-registry"
    }
    assert component(LAB_DIR, "60-upstream.sh", "status", {}, timeout=60).returncode == 0
