"""onprem_file_backup, the nodes/containerd role's module behind the nodes play's exact
`destroy`: run as Ansible runs a module (its arguments in a JSON file), on files in a temporary
folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

MODULE = (
    Path(__file__).resolve().parents[3]
    / "playbooks/roles/nodes/containerd/library/onprem_file_backup.py"
)


def run(tmp: Path, check: bool = False, **args: Any) -> dict[str, Any]:
    args_file = tmp / "args.json"
    args_file.write_text(
        json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check}}),
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, check=False
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_originals_are_kept_once_and_put_back_exactly(tmp_path: Path) -> None:
    site = tmp_path / "etc" / "containerd"
    site.mkdir(parents=True)
    config = site / "config.toml"
    config.write_text("version = 2\n# the node's own\n", encoding="utf-8")
    config.chmod(0o640)
    hosts = site / "certs.d" / "docker.io" / "hosts.toml"
    backup = site / "onprem-installer-originals"
    paths = [str(config), str(hosts)]

    first = run(tmp_path, backup_dir=str(backup), paths=paths)
    assert first["changed"] is True and first["recorded"] == paths
    assert backup.stat().st_mode & 0o777 == 0o700
    # The play writes its files; a later run must not take them for originals.
    config.write_text("version = 2\n# the installer's\n", encoding="utf-8")
    config.chmod(0o600)
    hosts.parent.mkdir(parents=True)
    hosts.write_text('server = "https://registry-1.docker.io"\n', encoding="utf-8")
    again = run(tmp_path, backup_dir=str(backup), paths=paths)
    assert again["changed"] is False and again["recorded"] == []

    restored = run(tmp_path, backup_dir=str(backup), state="restored")
    assert restored["changed"] is True
    assert config.read_text(encoding="utf-8") == "version = 2\n# the node's own\n"
    assert config.stat().st_mode & 0o777 == 0o640
    # What did not exist before is gone, with the folders created for it; the ledger too.
    assert not hosts.exists() and not (site / "certs.d").exists()
    assert not backup.exists()
    assert sorted(p.name for p in site.iterdir()) == ["config.toml"]
    # Nothing recorded: nothing to put back.
    assert run(tmp_path, backup_dir=str(backup), state="restored")["changed"] is False


def test_check_mode_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("x = 1\n", encoding="utf-8")
    backup = tmp_path / "originals"
    result = run(tmp_path, check=True, backup_dir=str(backup), paths=[str(config)])
    assert result["changed"] is True and not backup.exists()


def test_a_folder_where_a_file_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.toml").mkdir()
    result = run(tmp_path, backup_dir=str(tmp_path / "b"), paths=[str(tmp_path / "config.toml")])
    assert result.get("failed") is True
    assert "not a regular file" in result["msg"]


def test_a_folder_that_is_not_empty_again_stays(tmp_path: Path) -> None:
    hosts = tmp_path / "certs.d" / "quay.io" / "hosts.toml"
    backup = tmp_path / "originals"
    run(tmp_path, backup_dir=str(backup), paths=[str(hosts)])
    hosts.parent.mkdir(parents=True)
    hosts.write_text("x\n", encoding="utf-8")
    (tmp_path / "certs.d" / "operator.example").mkdir()
    run(tmp_path, backup_dir=str(backup), state="restored")
    assert not hosts.parent.exists()
    assert (tmp_path / "certs.d" / "operator.example").is_dir()
