"""The hub's drift probe: the program that reads the VM (run here for real), the spec the play
names, the record kept in the state folder, and the digest of the play's inputs."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from installer.phases.auxvm_probe import (
    PROBE_PROGRAM,
    ProbeRecord,
    ProbeSpec,
    forget,
    inputs_digest,
    load_record,
    record_path,
    save_record,
)

SUPERVISOR = (
    "print('onprem-hub-web RUNNING   pid 7, uptime 0:01:00'); print('onprem-hub-db STOPPED')"
)


def _read(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the probe program as the VM would, with `spec` on its input."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE_PROGRAM], input=json.dumps(spec), capture_output=True,
        text=True, check=True, timeout=60,
    )  # fmt: skip
    items: dict[str, Any] = json.loads(done.stdout)["items"]
    return items


@pytest.fixture
def vm(tmp_path: Path) -> dict[str, Any]:
    etc = tmp_path / "etc"
    (etc / "tls").mkdir(parents=True)
    (etc / "tls" / "hub.crt").write_text("cert\n")
    (etc / "config.yml").write_text("a: 1\n")
    (etc / "link").symlink_to("config.yml")
    (tmp_path / "unit.service").write_text("[Unit]\n")
    (tmp_path / "data").mkdir()
    return {
        "supervisor": "supervisord",
        "ctl": [sys.executable, "-c", SUPERVISOR],
        "trees": [str(etc)],
        "files": [str(tmp_path / "unit.service"), str(tmp_path / "missing.service")],
        "dirs": [str(tmp_path / "data")],
        "exists": [str(tmp_path / "data"), str(tmp_path / "nowhere")],
        "users": ["root", "no-such-user-x"],
        "groups": ["root"],
        "packages": ["dpkg", "no-such-package-x"],
        "programs": ["web", "db", "gone"],
        "urls": [{"url": "https://127.0.0.1:9/", "ca": str(etc / "tls" / "hub.crt")}],
    }


def test_the_probe_reads_what_the_play_manages(vm: dict[str, Any], tmp_path: Path) -> None:
    items = _read(vm)
    tree = items[f"tree:{tmp_path / 'etc'}"]
    assert (tree["type"], tree["entries"]) == ("dir", 4)
    assert items[f"file:{tmp_path / 'unit.service'}"]["sha256"]
    assert items[f"file:{tmp_path / 'missing.service'}"] is None
    assert items[f"dir:{tmp_path / 'data'}"]["type"] == "dir"
    assert "sha256" not in items[f"dir:{tmp_path / 'data'}"]
    assert items[f"exists:{tmp_path / 'data'}"] is True
    assert items[f"exists:{tmp_path / 'nowhere'}"] is False
    assert items["user:root"][:2] == [0, 0] and items["user:no-such-user-x"] is None
    assert items["group:root"] == 0
    assert items["package:dpkg"][1] == "ii" and items["package:no-such-package-x"] is None
    assert (items["program:web"], items["program:db"], items["program:gone"]) == (
        "RUNNING",
        "STOPPED",
        None,
    )
    assert str(items["url:https://127.0.0.1:9/"]).startswith("error: ")
    assert _read(vm) == items  # nothing changed: the same reading


def test_each_kind_of_drift_changes_the_reading(vm: dict[str, Any], tmp_path: Path) -> None:
    record = ProbeRecord("sha256:x", vm, _read(vm))
    etc = tmp_path / "etc"

    def drifted() -> list[str]:
        return record.differences(_read(vm))

    (etc / "config.yml").write_text("a: 2\n")  # content, same size
    assert drifted() == [f"tree:{etc}"]
    (etc / "config.yml").write_text("a: 1\n")
    assert drifted() == []
    (etc / "tls" / "hub.crt").chmod(0o600)  # mode deep in a tree
    assert drifted() == [f"tree:{etc}"]
    (etc / "tls" / "hub.crt").chmod(0o644)
    (etc / "tls" / "extra.pem").write_text("x")  # a file added to a tree
    assert drifted() == [f"tree:{etc}"]
    (etc / "tls" / "extra.pem").unlink()
    assert drifted() == []
    # A folder of data: its content is not read, its mode is.
    (tmp_path / "data" / "blob").write_bytes(b"data")
    assert drifted() == []
    (tmp_path / "data").chmod(0o700)
    assert drifted() == [f"dir:{tmp_path / 'data'}"]
    (tmp_path / "data").chmod(stat.S_IMODE((tmp_path / "etc").stat().st_mode))
    (tmp_path / "unit.service").unlink()
    vm["ctl"] = [sys.executable, "-c", SUPERVISOR.replace("RUNNING", "FATAL")]
    assert set(drifted()) >= {f"file:{tmp_path / 'unit.service'}", "program:web"}


def test_the_spec_is_the_union_of_the_roles_fragments() -> None:
    fact = {
        "supervisor": "systemd",
        "ctl": ["systemctl"],
        "files": ["/etc/systemd/system/onprem-hub-a.service"],
        "fragments": [
            {"trees": ["/etc/hub"], "users": ["hub"], "programs": []},
            {"dirs": ["/var/lib/a"], "programs": ["a"], "trees": ["/etc/hub"],
             "urls": [{"url": "https://h:1/", "ca": "/etc/hub/ca.crt"}]},
        ],
    }  # fmt: skip
    spec = ProbeSpec.from_fact(fact)
    assert spec.trees == ["/etc/hub"] and spec.programs == ["a"] and spec.users == ["hub"]
    assert spec.files == ["/etc/systemd/system/onprem-hub-a.service"]
    assert spec.to_json()["urls"] == [{"url": "https://h:1/", "ca": "/etc/hub/ca.crt"}]
    for bad in (
        None,
        {"fragments": [{"mounts": ["/x"]}]},
        {"fragments": [{"trees": "/etc/hub"}]},
        {"fragments": [{"urls": [{"url": "https://h/"}]}]},
        {"fragments": ["trees"]},
    ):
        with pytest.raises(ValueError, match="hub_probe_spec"):
            ProbeSpec.from_fact(bad)


def test_the_record_is_owner_only_and_a_bad_one_is_no_record(tmp_path: Path) -> None:
    record = ProbeRecord("sha256:abc", {"trees": ["/etc/hub"]}, {"tree:/etc/hub": {"x": 1}})
    save_record(tmp_path, record)
    path = record_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_record(tmp_path)
    assert loaded is not None and (loaded.inputs, loaded.items) == (record.inputs, record.items)
    assert loaded.recorded_at
    path.write_text("{not json")
    assert load_record(tmp_path) is None
    path.write_text(json.dumps({"version": 99, "inputs": "x", "spec": {}, "items": {}}))
    assert load_record(tmp_path) is None
    forget(tmp_path)
    assert not path.exists() and load_record(tmp_path) is None
    forget(tmp_path)  # nothing to forget: no error


def test_the_inputs_digest_follows_variables_files_and_the_play(tmp_path: Path) -> None:
    binary, play = tmp_path / "registry", tmp_path / "play"
    binary.write_bytes(b"v1")
    (play / "roles").mkdir(parents=True)
    (play / "roles" / "main.yml").write_text("- name: a\n")
    host = {"address": "10.0.0.2", "port": 22}

    def digest(extra: dict[str, Any] | None = None, pinned: dict[str, Any] | None = None) -> str:
        return inputs_digest(
            extra or {"port": 5000, "binary": str(binary)}, pinned or host, {"binary": binary},
            [play],
        )  # fmt: skip

    first = digest()
    assert digest() == first
    assert digest({"port": 5001, "binary": str(binary)}) != first
    assert digest(pinned={**host, "port": 2222}) != first
    binary.write_bytes(b"v2")
    second = digest()
    assert second != first
    (play / "roles" / "main.yml").write_text("- name: b\n")
    third = digest()
    assert third != second


def test_the_inputs_digest_does_not_follow_where_a_controller_file_lives(tmp_path: Path) -> None:
    """The same program found in another folder (the lab's cache, a bundle's work folder, another
    checkout) changes nothing on the VM: the digest stays; other content changes it."""
    here, there = tmp_path / "a" / "chartmuseum", tmp_path / "b" / "chartmuseum"
    for path in (here, there):
        path.parent.mkdir()
        path.write_bytes(b"v1")
    play = tmp_path / "playbooks"
    play.mkdir()
    host = {"address": "10.0.0.2", "port": 22}

    def digest(binary: Path) -> str:
        return inputs_digest(
            {"hub_chartmuseum_binary_src": str(binary), "port": 5000}, host,
            {"hub_chartmuseum_binary_src": binary}, [play],
        )  # fmt: skip

    assert digest(here) == digest(there)
    there.write_bytes(b"v2")
    assert digest(here) != digest(there)
    # Set against unset is a difference (the play installs the program only when it is given).
    unset = inputs_digest({"hub_chartmuseum_binary_src": "", "port": 5000}, host, {}, [play])
    assert unset != digest(here)


def test_python_bytecode_beside_a_roles_plugin_leaves_the_digest_as_it_was(tmp_path: Path) -> None:
    """Ansible imports a role's filter plugins, and Python writes their bytecode beside them the
    first time: that is no change of the play (it made every next auxvm run play in full)."""
    plugins = tmp_path / "playbooks" / "roles" / "nodes" / "filter_plugins"
    plugins.mkdir(parents=True)
    (plugins / "edit.py").write_text("def f(x):\n    return x\n")
    host = {"address": "10.0.0.2", "port": 22}

    def digest() -> str:
        return inputs_digest({"port": 5000}, host, {}, [tmp_path / "playbooks"])

    before = digest()
    (plugins / "__pycache__").mkdir()
    (plugins / "__pycache__" / "edit.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (plugins / "stray.pyc").write_bytes(b"\x00bytecode")
    assert digest() == before
    (plugins / "edit.py").write_text("def f(x):\n    return 2 * x\n")
    assert digest() != before
