"""Delta bundles (`--since`, `--have`) carry only what the site lacks; `--max-size` parts load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from installer.airgap.build import BuildOptions, build_bundle, have_list
from installer.release import load_pins, load_release
from tests.fixtures.registries import Registry, Upstream, image, layer, push_image
from tests.integration.airgap.helpers import (
    PASSWORD_ENV,
    broken_tags,
    catalog,
    cli,
    keypair,
    load_args,
    pin_release,
    site_digests,
    write_release,
)

pytestmark = pytest.mark.integration

OLD = ["ghcr.io/test/app:1.0", "ghcr.io/test/tool:2.0"]


@pytest.fixture(scope="module")
def newer(upstream: Upstream) -> tuple[str, str]:
    """A newer app image sharing the old base and app layers, plus one new layer."""
    new = layer({"app/patch": os.urandom(50_000)})
    base_app = [
        layer({"etc/os-release": b"ID=test\n" * 50}),  # a layer the old release never had
        new,
    ]
    img = image(base_app)
    push_image(upstream.registry, "ghcr.io/test/app", "1.1", img)
    return "ghcr.io/test/app:1.1", img.manifest.digest


def _build(  # type: ignore[no-untyped-def]
    tmp: Path,
    upstream: Upstream,
    names: list[str],
    key: Path,
    name: str,
    pushed: dict[str, str] | None = None,
    **kw: object,
):
    path = write_release(tmp / f"{name}.yml", names)
    return build_bundle(
        BuildOptions(
            release=load_release(path),
            output=tmp / f"{name}.tar.zst",
            sign_key=key,
            upstream=upstream.registry.endpoint(),
            pins=load_pins(pin_release(path, upstream, extra=pushed)),
            **kw,  # type: ignore[arg-type]
        )
    )


def test_since_and_have_deltas_load_on_top_of_the_base(
    tmp_path: Path,
    upstream: Upstream,
    newer: tuple[str, str],
    empty_registry: Registry,
    token_registry: Registry,
) -> None:
    new_name, new_digest = newer
    key, pub = keypair(tmp_path / "keys")
    base = _build(tmp_path, upstream, OLD, key, "base")
    pushed = {new_name: new_digest}
    delta = _build(
        tmp_path,
        upstream,
        [*OLD, new_name],
        key,
        "delta",
        pushed,
        since=tmp_path / "base.tar.zst",
    )
    have_file = tmp_path / "have.txt"
    have_file.write_text(have_list(base.manifest))
    by_have = _build(tmp_path, upstream, [*OLD, new_name], key, "byhave", pushed, have=have_file)

    base_blobs = {i.name for i in base.manifest.items if i.kind == "blob"}
    delta_blobs = {i.name for i in delta.manifest.items if i.kind == "blob"}
    assert delta.manifest.delta is not None and delta.manifest.delta.kind == "since"
    assert delta_blobs & base_blobs <= {img.digest for img in base.manifest.images}
    assert delta.content_bytes < base.content_bytes
    assert {i.name for i in by_have.manifest.items if i.kind == "blob"} == delta_blobs

    # A delta alone cannot complete a site: it fails with exit 1 and tags nothing.
    lonely = cli(
        *load_args(tmp_path / "delta.tar.zst", pub, token_registry, tmp_path / "w0"),
        log_dir=tmp_path / "logs",
        env=PASSWORD_ENV,
    )
    assert lonely.returncode == 1, lonely.stderr
    assert "delta" in lonely.stderr
    assert broken_tags(token_registry) == []

    for bundle in ("base", "delta"):
        done = cli(
            *load_args(tmp_path / f"{bundle}.tar.zst", pub, empty_registry, tmp_path / "work"),
            "-o",
            "json",
            log_dir=tmp_path / "logs",
            env=PASSWORD_ENV,
        )
        assert done.returncode == 0, done.stderr
    wanted = [*OLD, new_name]
    expected = {n: upstream.images[n].digest for n in OLD} | {new_name: new_digest}
    assert site_digests(empty_registry, wanted) == expected
    assert broken_tags(empty_registry) == []


def test_max_size_parts_verify_and_load(
    tmp_path: Path, upstream: Upstream, empty_registry: Registry
) -> None:
    key, pub = keypair(tmp_path / "keys")
    release = write_release(tmp_path / "r.yml", list(upstream.images))
    pin_release(release, upstream)
    out = tmp_path / "parts.tar.zst"
    reg = upstream.registry
    done = cli(
        "airgap-bundle",
        "--release",
        str(release),
        "-f",
        str(out),
        "--sign-key",
        str(key),
        "--registry-mirror",
        reg.host,
        "--upstream-ca",
        str(reg.pki.ca_cert),
        "--upstream-user",
        "installer",
        "--max-size",
        "64Ki",
        "-o",
        "json",
        log_dir=tmp_path / "logs",
        env=PASSWORD_ENV,
    )
    assert done.returncode == 2  # below the 1Mi floor: refused as bad input
    done = cli(
        "airgap-bundle",
        "--release",
        str(release),
        "-f",
        str(out),
        "--sign-key",
        str(key),
        "--registry-mirror",
        reg.host,
        "--upstream-ca",
        str(reg.pki.ca_cert),
        "--upstream-user",
        "installer",
        "--max-size",
        "1Mi",
        "-o",
        "json",
        log_dir=tmp_path / "logs",
        env=PASSWORD_ENV,
    )
    assert done.returncode == 0, done.stderr
    parts = json.loads(done.stdout)["parts"]
    assert parts[0].endswith(".000")
    loaded = cli(
        *load_args(Path(parts[0]), pub, empty_registry, tmp_path / "work"),
        log_dir=tmp_path / "logs",
        env=PASSWORD_ENV,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert sorted(catalog(empty_registry)) == sorted({n.rsplit(":", 1)[0] for n in upstream.images})
