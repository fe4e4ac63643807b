"""The hub's own programs travel in the bundle (`airgap-bundle --hub-from`): listed and signed
like everything else, and the `auxvm` phase of an air-gapped site installs them from the bundle
alone, extracting only them, each checked against the signed manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from installer.airgap.archive import open_bundle
from installer.airgap.hubprograms import extract_hub
from installer.errors import BadInputError, ExitCode
from installer.inventory import load_inventory
from installer.phases.auxvm import (
    ENV_CHARTMUSEUM,
    ENV_DEVPI_WHEELS,
    ENV_REGISTRY,
    AuxVmPhase,
    site_hub_sources,
)
from installer.phases.base import Event, PhaseContext
from installer.state import StateDir
from tests.fixtures.hubservices import make_wheel
from tests.fixtures.registries import Upstream
from tests.integration.airgap.helpers import (
    PASSWORD_ENV,
    bundle_args,
    cli,
    keypair,
    members,
    repack,
    write_release,
)

pytestmark = pytest.mark.integration

BASE = Path(__file__).resolve().parents[2] / "unit" / "inventory" / "base.yml"
CHARTMUSEUM = b"#!/bin/sh\necho chartmuseum test build\n"
REGISTRY = b"#!/bin/sh\necho registry test build\n"


def _hub_folder(tmp: Path, *, registry: bool = True) -> Path:
    """A `--hub-from` folder: programs as symlinks (the lab's way), two wheels."""
    src = tmp / "programs"
    src.mkdir(parents=True)
    (src / "cm.real").write_bytes(CHARTMUSEUM)
    (src / "cm.real").chmod(0o755)
    hub = tmp / "hub-from"
    hub.mkdir()
    (hub / "chartmuseum").symlink_to(src / "cm.real")
    if registry:
        (hub / "registry").write_bytes(REGISTRY)
        (hub / "registry").chmod(0o755)
    make_wheel(hub / "devpi-wheels", "devpi_server", "6.20.3", ["tinydep==2.0"])
    make_wheel(hub / "devpi-wheels", "tinydep", "2.0", [])
    return hub


def _build(tmp: Path, upstream: Upstream, hub: Path | None) -> tuple[Path, Path]:
    key, pub = keypair(tmp / "keys")
    bundle = tmp / "site.tar.zst"
    release = write_release(tmp / "release.yml", ["ghcr.io/test/app:1.0"])
    extra = ["--hub-from", str(hub)] if hub is not None else []
    done = cli(
        *bundle_args(upstream, release, bundle, key),
        *extra,
        log_dir=tmp / "logs",
        env=PASSWORD_ENV,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return bundle, pub


def _context(tmp: Path, bundle: Path | None, pub: Path | None) -> PhaseContext:
    text = BASE.read_text().replace(
        "  domain: ml.example.com",
        "  domain: ml.example.com\n  airgapped: true\n  state_dir: state",
    )
    # Nothing listens on the VM's address: a phase that got as far as the VM would fail there.
    text = text.replace("  address: 192.0.2.10", "  address: 127.0.0.1\n  hostname: localhost")
    path = tmp / "site.yml"
    tmp.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    events: list[Event] = []
    return PhaseContext(
        inventory=load_inventory(path),
        inventory_path=path,
        state=StateDir(tmp / "state"),
        run_dir=tmp / "run",
        emit=events.append,
        bundle=open_bundle(bundle, pub) if bundle is not None and pub is not None else None,
    )


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (ENV_CHARTMUSEUM, ENV_DEVPI_WHEELS, ENV_REGISTRY):
        monkeypatch.delenv(name, raising=False)
    # No ChartMuseum on PATH either: the bundle is the only source.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")


def test_hub_programs_are_signed_items_and_only_they_are_extracted(
    tmp_path: Path, upstream: Upstream
) -> None:
    hub = _hub_folder(tmp_path)
    bundle, pub = _build(tmp_path, upstream, hub)

    listed = cli(
        "airgap-verify", str(bundle), "--verify-key", str(pub), "-o", "json", log_dir=tmp_path
    )
    assert listed.returncode == 0, listed.stderr
    items = {i["path"]: i for i in json.loads(listed.stdout)["items"] if i["kind"] == "hub"}
    assert set(items) == {
        "hub/chartmuseum",
        "hub/registry",
        "hub/devpi-wheels/devpi_server-6.20.3-py3-none-any.whl",
        "hub/devpi-wheels/tinydep-2.0-py3-none-any.whl",
    }
    assert items["hub/chartmuseum"]["size"] == len(CHARTMUSEUM)
    text = cli("airgap-verify", str(bundle), "--verify-key", str(pub), log_dir=tmp_path)
    assert "hub    chartmuseum" in text.stdout, text.stdout

    airgap = tmp_path / "state" / "airgap"
    folder = extract_hub(open_bundle(bundle, pub), airgap)
    assert folder == airgap / "hub"
    assert (folder / "chartmuseum").read_bytes() == CHARTMUSEUM  # the program, not the link
    assert not (folder / "chartmuseum").is_symlink()
    assert os.access(folder / "chartmuseum", os.X_OK)
    assert (folder / "registry").read_bytes() == REGISTRY
    wheels = sorted(p.name for p in (folder / "devpi-wheels").iterdir())
    assert wheels == ["devpi_server-6.20.3-py3-none-any.whl", "tinydep-2.0-py3-none-any.whl"]
    # Only the hub items: no image layout, no blob, no leftovers of the extraction.
    assert sorted(p.name for p in airgap.iterdir()) == ["hub"]

    # The same bundle again: the verified folder is re-used, not written again.
    stamp = (folder / "chartmuseum").stat().st_mtime_ns
    assert extract_hub(open_bundle(bundle, pub), airgap) == folder
    assert (folder / "chartmuseum").stat().st_mtime_ns == stamp
    # A program changed on disk since: extracted again from the bundle.
    (folder / "chartmuseum").write_bytes(b"#!/bin/sh\necho altered\n")
    assert extract_hub(open_bundle(bundle, pub), airgap) == folder
    assert (folder / "chartmuseum").read_bytes() == CHARTMUSEUM


def test_the_auxvm_phase_takes_the_programs_from_the_bundle(
    tmp_path: Path, upstream: Upstream
) -> None:
    bundle, pub = _build(tmp_path, upstream, _hub_folder(tmp_path, registry=False))
    ctx = _context(tmp_path / "site", bundle, pub)
    sources = site_hub_sources(ctx)
    hub = ctx.state.root / "airgap" / "hub"
    assert sources.chartmuseum_binary == hub / "chartmuseum"
    assert sources.devpi_wheelhouse == hub / "devpi-wheels"
    assert sources.registry_binary is None  # optional: the VM's package then


def test_environment_overrides_beat_the_bundle_only_with_the_development_flag(
    tmp_path: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, pub = _build(tmp_path, upstream, _hub_folder(tmp_path))
    monkeypatch.delenv("INSTALLER_ALLOW_DEV_OVERRIDES", raising=False)
    monkeypatch.setenv(ENV_CHARTMUSEUM, "/opt/dev/chartmuseum")
    with pytest.raises(BadInputError) as refused:
        site_hub_sources(_context(tmp_path / "site", bundle, pub))
    assert int(refused.value.exit_code) == 2
    assert "would replace the signed bundle's hub program" in str(refused.value)
    monkeypatch.setenv("INSTALLER_ALLOW_DEV_OVERRIDES", "1")
    sources = site_hub_sources(_context(tmp_path / "site", bundle, pub))
    assert sources.chartmuseum_binary == Path("/opt/dev/chartmuseum")
    assert (
        sources.devpi_wheelhouse == tmp_path / "site" / "state" / "airgap" / "hub" / "devpi-wheels"
    )


def test_a_tampered_hub_program_is_refused_and_nothing_installed(
    tmp_path: Path, upstream: Upstream
) -> None:
    bundle, pub = _build(tmp_path, upstream, _hub_folder(tmp_path))
    content = members(bundle)
    swapped = []
    for info, data in content:
        if info.name == "hub/chartmuseum":
            data = data.replace(b"test build", b"evil build")  # same size, other bytes
            info.size = len(data)
        swapped.append((info, data))
    tampered = repack(tmp_path / "tampered.tar.zst", swapped)

    ctx = _context(tmp_path / "site", tampered, pub)
    with pytest.raises(BadInputError) as caught:
        AuxVmPhase().apply(ctx)
    assert caught.value.exit_code is ExitCode.BAD_INPUT and int(caught.value.exit_code) == 2
    assert "hub/chartmuseum: sha256 mismatch" in str(caught.value)
    airgap = ctx.state.root / "airgap"
    assert not (airgap / "hub").exists()
    assert not airgap.exists() or list(airgap.iterdir()) == []
    # Refused before the VM was contacted: no host key was pinned, no play ran.
    assert not (ctx.state.root / "ansible").exists()
    assert not ctx.run_dir.exists() or not any(ctx.run_dir.rglob("auxvm*"))

    # A wrong member is also refused via the CLI's verify (exit 2).
    done = cli("airgap-verify", str(tampered), "--verify-key", str(pub), log_dir=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr


def test_an_airgapped_site_without_a_source_is_refused_with_the_remedy(
    tmp_path: Path, upstream: Upstream
) -> None:
    with pytest.raises(BadInputError) as caught:
        AuxVmPhase().apply(_context(tmp_path / "nothing", None, None))
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert "no source for the hub's programs" in message
    assert ENV_CHARTMUSEUM in message and ENV_DEVPI_WHEELS in message
    assert "no --bundle was given" in message
    assert caught.value.remedy and "--hub-from" in caught.value.remedy

    bundle, pub = _build(tmp_path / "plain", upstream, None)  # built without --hub-from
    with pytest.raises(BadInputError) as caught:
        AuxVmPhase().apply(_context(tmp_path / "plain-site", bundle, pub))
    assert "carries no hub programs" in str(caught.value)


def test_hub_from_must_hold_chartmuseum_and_wheels(tmp_path: Path, upstream: Upstream) -> None:
    hub = tmp_path / "incomplete"
    (hub / "devpi-wheels").mkdir(parents=True)
    key, _ = keypair(tmp_path / "keys")
    release = write_release(tmp_path / "release.yml", ["ghcr.io/test/app:1.0"])
    done = cli(
        *bundle_args(upstream, release, tmp_path / "b.tar.zst", key),
        "--hub-from",
        str(hub),
        log_dir=tmp_path / "logs",
        env=PASSWORD_ENV,
    )
    assert done.returncode == 2
    assert "no chartmuseum" in done.stdout + done.stderr
    assert not (tmp_path / "b.tar.zst").exists()
