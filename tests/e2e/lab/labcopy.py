"""A copy of lab/ with some of versions.env changed: a second lab beside the session's; and the
one-line failure every lab script must print."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from collections.abc import Mapping
from pathlib import Path

from tests.fixtures.lab import LAB_DIR, REPO, read_versions


def copy_lab(dest: Path, changes: Mapping[str, str]) -> Path:
    """Copy lab/ (without its state) to dest/lab, setting each NAME=value of `changes`."""
    lab_copy = dest / "lab"
    shutil.copytree(LAB_DIR, lab_copy, ignore=shutil.ignore_patterns(".state", ".state-*"))
    versions = lab_copy / "versions.env"
    text = versions.read_text()
    for name, value in changes.items():
        text, count = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.M)
        assert count == 1, f"{name} not in versions.env"
    versions.write_text(text)
    return lab_copy


KUBE_PORT_PREFIXES = ("LAB_KUBE_", "LAB_ETCD_", "LAB_KWOK_")


def shifted_ports(shift: int, prefixes: tuple[str, ...] = KUBE_PORT_PREFIXES) -> dict[str, str]:
    """`versions.env` changes that move the ports of the named components by `shift`."""
    return {
        name: str(int(value) + shift)
        for name, value in read_versions().items()
        if name.startswith(prefixes) and name.endswith("_PORT")
    }


def component(
    lab_dir: Path, name: str, verb: str, env: Mapping[str, str], timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    """Run lab_dir/components/NAME VERB with the extra environment `env`."""
    return subprocess.run(
        ["bash", str(lab_dir / "components" / name), verb],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single '[lab] error: ...' line a failing lab script must print, and nothing else."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("[lab] error: ")]
    assert len(errors) == 1, result.stderr
    assert lines[-1] == errors[0], result.stderr
    # No stack of shell errors: only the lab's own log lines come before the error.
    assert all(line.startswith("[lab] ") for line in lines), result.stderr
    return errors[0]


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def listening(port: int) -> bool:
    """Whether anything accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0
