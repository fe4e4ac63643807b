"""The files a hand-run `pulumi up` reads: Pulumi.<cluster>.yaml keeps what the CLI wrote."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr
from ruamel.yaml import YAML

from installer.engines.pulumi import (
    PulumiEngine,
    ResourceChange,
    StackSummary,
    held_stack,
    pulumi_command,
    write_stack_args,
)
from installer.errors import BadInputError, EnvironmentProblem
from installer.stacks import StackInput
from installer.stacks.common import KubeTarget
from installer.stacks.dns import DnsArgs, DnsRecord
from installer.state import StateDir


def _input(ips: list[str], secrets: dict[str, SecretStr] | None = None) -> StackInput:
    args = DnsArgs(
        cluster="main",
        kube=KubeTarget(kubeconfig="/k/kubeconfig", context="lab"),
        domain="main.example.com",
        ingress_ips=ips,
        records=[DnsRecord(name="main.example.com", addresses=ips)],
        vm_serves_dns=True,
    )
    return StackInput(component="dns", args=args, secrets=secrets or {})


def test_args_are_written_structured_and_salt_and_secrets_kept(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.main.yaml"
    path.write_text(
        "encryptionsalt: v1:abc:def\n"
        "config:\n"
        "  kubernetes:suppressHelmHookWarnings: 'true'\n"
        "  onprem-dns:token:\n    secure: v1:AAAA\n"
        "  onprem-dns:stale: old\n",
        encoding="utf-8",
    )
    si = _input(["10.0.0.1"], {"token": SecretStr("t0ken-value")})
    write_stack_args(tmp_path, si)
    doc = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    assert doc["encryptionsalt"] == "v1:abc:def"
    config = doc["config"]
    assert config["onprem-dns:token"] == {"secure": "v1:AAAA"}
    assert config["kubernetes:suppressHelmHookWarnings"] == "true"
    assert "onprem-dns:stale" not in config
    assert config["onprem-dns:args"]["ingress_ips"] == ["10.0.0.1"]
    assert "t0ken-value" not in path.read_text(encoding="utf-8")


def test_a_secret_no_longer_wanted_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.main.yaml").write_text(
        "config:\n  onprem-dns:token:\n    secure: v1:AAAA\n", encoding="utf-8"
    )
    write_stack_args(tmp_path, _input(["10.0.0.2"]))
    doc = YAML(typ="safe").load((tmp_path / "Pulumi.main.yaml").read_text(encoding="utf-8"))
    assert set(doc["config"]) == {"onprem-dns:args"}


def test_summary_counts_only_real_changes() -> None:
    summary = StackSummary(
        component="nodes",
        stack="lab",
        action="preview",
        counts={"same": 10, "update": 1, "create": 2},
        steps=(
            ResourceChange("same", "urn:a", "t", "a"),
            ResourceChange("update", "urn:b", "t", "b", ("spec",)),
        ),
    )
    assert summary.changes == 3
    assert [s.name for s in summary.changed] == ["b"]
    assert summary.as_dict()["steps"] == [
        {"op": "update", "type": "t", "name": "b", "diffs": ["spec"]}
    ]


def _engine_without_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PulumiEngine:
    """An engine on a fresh state folder with no Pulumi CLI anywhere it looks."""
    for var in ("INSTALLER_PULUMI_BIN_DIR", "LAB_PULUMI_BIN_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    return PulumiEngine(StateDir(tmp_path / "state"))


def test_the_cli_loaded_from_a_bundle_into_the_state_folder_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An air-gapped site's only Pulumi is what the bundle put in `<state>/pulumi/bin`."""
    engine = _engine_without_cli(tmp_path, monkeypatch)
    with pytest.raises(EnvironmentProblem, match="Pulumi CLI is not installed"):
        engine._cli_dir()
    loaded = tmp_path / "state" / "pulumi" / "bin"
    loaded.mkdir(parents=True)
    (loaded / "pulumi").write_text("#!/bin/sh\n", encoding="utf-8")
    assert engine._cli_dir() == loaded

    given = tmp_path / "given"
    given.mkdir()
    (given / "pulumi").write_text("#!/bin/sh\n", encoding="utf-8")
    monkeypatch.setenv("INSTALLER_PULUMI_BIN_DIR", str(given))
    assert engine._cli_dir() == given  # an explicit folder still wins

    # On an air-gapped site the bundle's CLI is the one: a variable needs the development flag.
    monkeypatch.delenv("INSTALLER_ALLOW_DEV_OVERRIDES", raising=False)
    guarded = PulumiEngine(StateDir(tmp_path / "state"), guarded=True)
    with pytest.raises(BadInputError, match=r"INSTALLER_PULUMI_BIN_DIR=.* would replace"):
        guarded._cli_dir()
    monkeypatch.setenv("INSTALLER_ALLOW_DEV_OVERRIDES", "1")
    assert guarded._cli_dir() == given
    monkeypatch.delenv("INSTALLER_PULUMI_BIN_DIR")
    monkeypatch.delenv("INSTALLER_ALLOW_DEV_OVERRIDES")
    assert guarded._cli_dir() == loaded


def test_destroying_a_stack_never_created_needs_no_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A site never bootstrapped (or whose Pulumi comes only with its bundle) can be destroyed."""
    engine = _engine_without_cli(tmp_path, monkeypatch)
    si = _input(["10.0.0.1"])
    summary = engine.destroy(si)
    assert (summary.action, summary.changes, summary.steps) == ("destroy", 0, ())
    # Once the backend holds the stack, destroy goes to the CLI (which is missing here).
    stacks = tmp_path / "state" / "pulumi" / "backend" / ".pulumi" / "stacks" / si.project
    stacks.mkdir(parents=True)
    (stacks / f"{si.stack}.json").write_text("{}", encoding="utf-8")
    assert not engine.never_created(si)
    with pytest.raises(EnvironmentProblem, match="Pulumi CLI is not installed"):
        engine.destroy(si)


def test_the_inventory_names_the_cli_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`site.pulumi_bin_dir` is how a site says where its Pulumi is: no environment needed."""
    _engine_without_cli(tmp_path, monkeypatch)
    named = tmp_path / "tools"
    named.mkdir()
    (named / "pulumi").write_text("#!/bin/sh\n", encoding="utf-8")
    loaded = tmp_path / "state" / "pulumi" / "bin"
    loaded.mkdir(parents=True)
    (loaded / "pulumi").write_text("#!/bin/sh\n", encoding="utf-8")
    engine = PulumiEngine(StateDir(tmp_path / "state"), bin_dir=named)
    assert engine._cli_dir() == named  # before the state folder's copy
    empty = PulumiEngine(StateDir(tmp_path / "state"), bin_dir=tmp_path / "none")
    assert empty._cli_dir() == loaded  # a named folder without the CLI is passed over


class _ExportOnly:
    """A stack whose CLI export is counted (the CLI is not needed where the file answers)."""

    def __init__(self) -> None:
        self.exports = 0

    def export_stack(self) -> Any:
        self.exports += 1
        return SimpleNamespace(deployment={"resources": [], "pending_operations": []})


def test_a_file_backend_checkpoint_is_read_without_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _engine_without_cli(tmp_path, monkeypatch)
    si = _input(["10.0.0.1"])
    stacks = tmp_path / "state" / "pulumi" / "backend" / ".pulumi" / "stacks" / si.project
    stacks.mkdir(parents=True)
    pending = [{"type": "creating", "resource": {"urn": "urn:x"}}]
    latest = {"resources": [{"urn": "urn:x"}], "pending_operations": pending}
    doc = {"version": 3, "checkpoint": {"stack": si.stack, "latest": latest}}
    stack = _ExportOnly()
    with gzip.open(stacks / f"{si.stack}.json.gz", "wt", encoding="utf-8") as handle:
        json.dump(doc, handle)
    assert engine._latest(si, stack) == latest
    (stacks / f"{si.stack}.json.gz").unlink()
    (stacks / f"{si.stack}.json").write_text(json.dumps(doc), encoding="utf-8")
    assert engine._latest(si, stack) == latest
    assert stack.exports == 0
    # Another backend: the CLI is asked.
    engine.backend_url = "s3://bucket/state"
    assert engine._latest(si, stack) == {"resources": [], "pending_operations": []}
    assert stack.exports == 1


def test_a_held_stack_is_what_the_sdks_constructor_makes(tmp_path: Path) -> None:
    from pulumi.automation import LocalWorkspace, Stack
    from pulumi.automation._stack import StackInitMode

    class NoCli(LocalWorkspace):  # type: ignore[misc]
        def select_stack(self, stack_name: str) -> None:
            self.selected = stack_name

    cli = tmp_path / "bin" / "pulumi"
    cli.parent.mkdir()
    calls = tmp_path / "calls"
    cli.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho v3.208.0\n', encoding="utf-8")
    cli.chmod(0o755)
    command = pulumi_command(tmp_path)
    assert pulumi_command(tmp_path) is command  # `pulumi version` runs once per binary
    assert calls.read_text(encoding="utf-8") == "version\n"
    workspace = NoCli(work_dir=str(tmp_path), pulumi_command=command)
    made = Stack(name="lab", workspace=workspace, mode=StackInitMode.SELECT)
    assert workspace.selected == "lab"
    held = held_stack("lab", workspace)
    assert type(held) is Stack
    assert vars(held) == vars(made)
