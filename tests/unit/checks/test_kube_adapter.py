"""The kube adapter's typed errors: bad kubeconfig or context: bad input; no API: environment."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from installer.engines.kube import Kube
from installer.errors import BadInputError, EnvironmentProblem


def kubeconfig(path: Path, server: str, contexts: tuple[str, ...] = ("one",)) -> Path:
    data = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": False}}
        ],
        "users": [{"name": "u", "user": {"token": "t0ken-value"}}],
        "contexts": [{"name": n, "context": {"cluster": "c", "user": "u"}} for n in contexts],
        "current-context": contexts[0] if contexts else "",
    }
    path.write_text(yaml.safe_dump(data))
    return path


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


def test_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        Kube.connect(tmp_path / "nope")


def test_missing_context_is_bad_input(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "k", "https://127.0.0.1:1", ("one", "two"))
    with pytest.raises(BadInputError, match=r"has no context 'three' \(it has: one, two\)"):
        Kube.connect(path, "three")


@pytest.mark.parametrize("text", ["not: [a kubeconfig", "not a kubeconfig\n", "- a list\n"])
def test_garbage_is_bad_input(tmp_path: Path, text: str) -> None:
    path = tmp_path / "k"
    path.write_text(text)
    with pytest.raises(BadInputError, match="is not usable"):
        Kube.connect(path)


def test_unreachable_api_is_an_environment_problem(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "k", f"https://127.0.0.1:{closed_port()}")
    kube = Kube.connect(path, "one")
    try:
        with pytest.raises(EnvironmentProblem, match="is unreachable"):
            kube.version()
    finally:
        kube.close()
