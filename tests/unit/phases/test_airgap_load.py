"""The `airgap_load` phase's choices: where the hub's content comes from, what re-runs it, what
it keeps, and how an unreachable upstream is reported. No network beyond closed loopback ports."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from installer.airgap.manifest import new_manifest
from installer.errors import BadInputError, EnvironmentProblem, ExitCode
from installer.inventory import load_inventory
from installer.journal import inputs_hash
from installer.phases.airgap_load import AirgapLoadPhase, Mirror, _release
from installer.phases.base import Event, PhaseContext
from installer.release import load_release
from installer.state import StateDir

BASE = Path(__file__).resolve().parents[1] / "inventory" / "base.yml"

# Loopback ports nothing listens on: a contacted service is refused at once.
UPSTREAM = """
upstream:
  registry_mirror: 127.0.0.1:9
  user: ci
  password: env:TEST_UPSTREAM_PASSWORD
  charts_url: https://127.0.0.1:9/charts
  wheels_url: https://127.0.0.1:9/simple/
"""
SECRET = "s3cret-upstream-password"


def _context(tmp_path: Path, upstream: str = UPSTREAM, *, airgapped: bool = False) -> PhaseContext:
    text = BASE.read_text().replace(
        "  domain: ml.example.com",
        f"  domain: ml.example.com\n  airgapped: {str(airgapped).lower()}\n  state_dir: state",
    )
    # The hub is looked up on loopback (nothing listens there): a phase that contacts it fails.
    text = text.replace("  address: 192.0.2.10", "  address: 127.0.0.1\n  hostname: localhost")
    path = tmp_path / "site.yml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(text + upstream)
    inv = load_inventory(path)
    events: list[Event] = []
    return PhaseContext(
        inventory=inv,
        inventory_path=path,
        state=StateDir(tmp_path / "state"),
        run_dir=tmp_path / "run",
        emit=events.append,
    )


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_UPSTREAM_PASSWORD", SECRET)


def test_every_site_needs_the_phase(tmp_path: Path) -> None:
    phase = AirgapLoadPhase()
    assert phase.applies(_context(tmp_path / "a"))
    assert phase.applies(_context(tmp_path / "b", ""))
    assert phase.applies(_context(tmp_path / "c", "", airgapped=True))


def test_inputs_change_with_the_upstream_and_hold_no_secret(tmp_path: Path) -> None:
    phase = AirgapLoadPhase()
    first = phase.inputs(_context(tmp_path / "a"))
    moved = phase.inputs(_context(tmp_path / "b", UPSTREAM.replace(":9/charts", ":9/other")))
    none = phase.inputs(_context(tmp_path / "c", ""))
    assert len({inputs_hash(first), inputs_hash(moved), inputs_hash(none)}) == 3
    text = json.dumps(first, default=str)
    assert SECRET not in text
    assert "env:TEST_UPSTREAM_PASSWORD" in text  # the reference, so a new secret source re-runs
    assert first["release"] == load_release().platform_version


def test_inputs_change_with_the_release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    phase = AirgapLoadPhase()
    ctx = _context(tmp_path)
    before = inputs_hash(phase.inputs(ctx))
    real = load_release()
    bumped = real.model_copy(update={"charts": real.charts[1:]})
    monkeypatch.setattr("installer.phases.airgap_load.load_release", lambda: bumped)
    assert inputs_hash(phase.inputs(ctx)) != before


def test_binaries_are_mirrored_only_from_a_named_folder(tmp_path: Path) -> None:
    without = _context(tmp_path / "a").inventory.upstream
    with_dir = _context(tmp_path / "b", UPSTREAM + "  binaries_dir: bin\n").inventory.upstream
    assert load_release().binaries, "the release lists binaries"
    assert _release(without).binaries == []
    assert _release(with_dir).binaries == load_release().binaries
    assert _release(without).images == load_release().images


def test_plan_without_a_mirror_contacts_nothing_and_says_it_will_pull(tmp_path: Path) -> None:
    plan = AirgapLoadPhase().plan(_context(tmp_path))
    (change,) = plan.changes
    assert (change.target, change.kind, change.name) == (
        "hub",
        "release",
        load_release().platform_version,
    )
    assert "127.0.0.1:9" in change.detail and SECRET not in change.detail
    assert plan.notes == ["the hub has no mirror of this release from this upstream yet"]


def test_plan_with_a_mirror_of_these_inputs_asks_the_hub(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    phase = AirgapLoadPhase()
    mirror = Mirror(tmp_path / "state" / "airgap" / "mirror")
    mirror.root.mkdir(parents=True)
    manifest = new_manifest(source={}, platform_version="x", images=[], items=[])
    mirror.record(manifest.to_bytes(), inputs_hash(phase.inputs(ctx)))
    plan = phase.plan(ctx)  # the hub is not set up (no site CA): a pull is planned
    assert [c.kind for c in plan.changes] == ["release"]
    assert plan.notes and plan.notes[0].startswith("the hub cannot be checked: the hub is not set")


def test_mirror_record_is_tied_to_its_inputs_and_drops_the_pull(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path / "mirror")
    mirror.ensure_key()
    (mirror.stage / "oci").mkdir(parents=True)
    mirror.bundle.write_bytes(b"bundle")
    manifest = new_manifest(source={"installer": "t"}, platform_version="1", images=[], items=[])
    mirror.record(manifest.to_bytes(), "sha256:aaa")
    assert mirror.recorded("sha256:aaa") == manifest
    assert mirror.recorded("sha256:bbb") is None
    assert not mirror.bundle.exists() and not mirror.stage.exists()
    assert Mirror(tmp_path / "elsewhere").recorded("sha256:aaa") is None


def test_signing_key_is_made_once_and_private(tmp_path: Path) -> None:
    mirror = Mirror(tmp_path / "mirror")
    mirror.ensure_key()
    key = mirror.sign_key.read_bytes()
    assert stat.S_IMODE(mirror.sign_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(mirror.root.stat().st_mode) == 0o700
    mirror.ensure_key()
    assert mirror.sign_key.read_bytes() == key
    assert mirror.verify_key.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_a_connected_site_without_pins_is_refused_before_any_pull(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    ctx.state.pki.mkdir(parents=True)
    ctx.state.ca_cert.write_text("not read: refused first\n")
    with pytest.raises(BadInputError) as info:
        AirgapLoadPhase().apply(ctx)
    assert info.value.exit_code is ExitCode.BAD_INPUT
    assert "release 25.12.0 has no pins" in info.value.message
    assert "upstream.pins" in (info.value.remedy or "")
    assert not (tmp_path / "state" / "airgap" / "mirror" / "work").exists()


def test_unreachable_upstream_is_an_environment_problem_naming_it(tmp_path: Path) -> None:
    ctx = _context(tmp_path, UPSTREAM + "  allow_unpinned: true\n")
    # The hub is set up (auxvm made its CA); the pull fails before anything is pushed to it.
    ctx.state.pki.mkdir(parents=True)
    ctx.state.ca_cert.write_text("not read: the pull stops first\n")
    with pytest.raises(EnvironmentProblem) as info:
        AirgapLoadPhase().apply(ctx)
    error = info.value
    assert error.exit_code is ExitCode.ENVIRONMENT
    assert error.message.startswith("upstream (127.0.0.1:9, charts https://127.0.0.1:9/charts")
    assert SECRET not in str(error)
    assert "upstream:" in (error.remedy or "")
    key = tmp_path / "state" / "airgap" / "mirror" / "sign.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_air_gapped_site_never_mirrors(tmp_path: Path) -> None:
    ctx = _context(tmp_path, "", airgapped=True)
    phase = AirgapLoadPhase()
    data: dict[str, Any] = phase.inputs(ctx)
    assert "upstream" not in data
    assert phase._upstream(ctx) is None
    # Without a bundle it checks the hub (closed loopback port: an environment problem).
    with pytest.raises(EnvironmentProblem):
        phase.apply(ctx)
    assert not (tmp_path / "state" / "airgap" / "mirror").exists()
    assert os.environ["TEST_UPSTREAM_PASSWORD"] == SECRET


def test_without_a_mirror_the_release_must_come_from_one_registry(tmp_path: Path) -> None:
    ctx = _context(tmp_path, UPSTREAM.replace("  registry_mirror: 127.0.0.1:9\n", ""))
    ctx.state.pki.mkdir(parents=True)
    ctx.state.ca_cert.write_text("not read: the phase stops first\n")
    hosts = {i.name.split("/", 1)[0] for i in load_release().images}
    assert len(hosts) > 1, "the release pulls from several registries"
    with pytest.raises(BadInputError) as info:
        AirgapLoadPhase().apply(ctx)
    assert "names no registry_mirror" in info.value.message
    assert "upstream.registry_mirror" in (info.value.remedy or "")


def test_phases_installing_charts_from_the_hub_re_run_after_a_new_mirror() -> None:
    """On resume, a phase re-runs when one it depends on changed something: the hub's charts
    (OpenEBS, Keycloak) and images come from airgap_load."""
    from installer.phases.catalog import closure

    for name in ("storage", "keycloak", "platform", "verify"):
        assert "airgap_load" in closure(name), name
    assert "airgap_load" not in closure("nodes")
