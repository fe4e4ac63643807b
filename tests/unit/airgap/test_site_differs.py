"""Hub content that differs from the bundle's by bytes, not by name: what the plan shows and
which of it stops a load (the loads themselves: tests/integration/airgap/test_files.py)."""

from __future__ import annotations

import pytest

from installer.airgap.hub import ContentDiffers
from installer.airgap.load import Differing, SiteLacks
from installer.phases.airgap_load import lacks_changes

A, B = "a" * 64, "b" * 64


def test_the_plan_shows_a_replacement_with_both_digests() -> None:
    lacks = SiteLacks(
        charts=["keycloak-24.7.4.tgz"],
        differs=[
            Differing("chart", "openebs-4.3.3.tgz", A, B),
            Differing("wheel", "tinydep-2.0-py3-none-any.whl", B, A),
        ],
    )
    assert not lacks.nothing
    shown = [(c.target, c.action, c.kind, c.name, c.detail) for c in lacks_changes(lacks)]
    assert shown == [
        ("hub/charts", "create", "chart", "keycloak-24.7.4.tgz", ""),
        ("hub/charts", "replace", "chart", "openebs-4.3.3.tgz",
         f"other bytes on the hub: sha256 {A}; the bundle's: {B}"),
        ("hub/pypi", "replace", "wheel", "tinydep-2.0-py3-none-any.whl",
         f"other bytes on the hub: sha256 {B}; the bundle's: {A}"),
    ]  # fmt: skip


def test_differing_content_is_refused_naming_each_one() -> None:
    lacks = SiteLacks(
        differs=[
            Differing("chart", "openebs-4.3.3.tgz", A, B),
            Differing("wheel", "tinydep-2.0-py3-none-any.whl", B, A),
        ]
    )
    with pytest.raises(ContentDiffers) as refused:
        lacks.refuse_differing(replace_changed=False)
    assert refused.value.message == (
        f"the hub serves chart openebs-4.3.3.tgz with other bytes than the bundle's (sha256 {A}"
        f" on the hub, {B} in the bundle); so do wheel tinydep-2.0-py3-none-any.whl"
    )
    assert refused.value.exit_code == 1
    # A wheel is never replaced: the remedy says how to remove it by hand.
    with pytest.raises(ContentDiffers) as still:
        lacks.refuse_differing(replace_changed=True)
    assert "tinydep" in still.value.message and "openebs" not in still.value.message
    assert "devpi remove" in str(still.value.remedy)


def test_charts_alone_may_be_replaced_when_asked() -> None:
    lacks = SiteLacks(differs=[Differing("chart", "openebs-4.3.3.tgz", A, B)])
    with pytest.raises(ContentDiffers) as refused:
        lacks.refuse_differing(replace_changed=False)
    assert "--replace-changed" in str(refused.value.remedy)
    lacks.refuse_differing(replace_changed=True)  # nothing raised
    SiteLacks().refuse_differing(replace_changed=False)
