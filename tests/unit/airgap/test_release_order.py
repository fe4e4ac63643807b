"""Rollback protection: the release a site runs comes from the manifests it loaded; a bundle of
an older release is refused unless the operator allows the downgrade."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from installer.airgap.load import SiteRelease, check_release_order, record_loaded, site_release
from installer.airgap.manifest import new_manifest
from installer.errors import BadInputError, ExitCode


def _loaded(state: Path, version: str) -> None:
    record_loaded(
        state, new_manifest(source={}, platform_version=version, images=[], items=[]).to_bytes()
    )


def test_the_site_release_is_the_newest_loaded(tmp_path: Path) -> None:
    assert site_release(tmp_path) is None
    for version in ("25.12.0", "26.1.0", "25.12.3"):
        _loaded(tmp_path, version)
    found = site_release(tmp_path)
    assert found is not None and found.version == "26.1.0" and found.loaded
    # A record that cannot be read is left out (with a warning), not trusted or fatal.
    (tmp_path / "airgap" / "loaded" / "bad.json").write_text("{")
    found = site_release(tmp_path)
    assert found is not None and found.version == "26.1.0"


def test_an_older_release_is_refused_and_allowed_on_purpose(
    caplog: pytest.LogCaptureFixture,
) -> None:
    site = SiteRelease("26.1.0", "2026-12-01T10:00:00+00:00")
    for same_or_newer in ("26.1.0", "26.1.1", "27.0.0"):
        check_release_order(same_or_newer, site, allow_downgrade=False)
    check_release_order("1.0", None, allow_downgrade=False)  # a site that loaded nothing yet
    with pytest.raises(BadInputError) as refused:
        check_release_order("25.12.0", site, allow_downgrade=False)
    assert refused.value.exit_code == ExitCode.BAD_INPUT
    assert "release 25.12.0 is older than release 26.1.0" in refused.value.message
    assert "--allow-downgrade" in (refused.value.remedy or "")
    with pytest.raises(BadInputError, match="cannot be ordered"):
        check_release_order("nightly", site, allow_downgrade=False)
    with caplog.at_level(logging.WARNING, logger="installer"):
        check_release_order("25.12.0", site, allow_downgrade=True)
    assert "on purpose (--allow-downgrade)" in caplog.text
