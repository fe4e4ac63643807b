"""`airgap-bundle` holds the upstream to the release's pins (issue 21, item 8): a release is cut
once (`--allow-unpinned --write-pins`), and a later build gets those bytes or is refused, exit 2,
naming the entry, whatever a tag, a chart repository or a folder holds by then."""

from __future__ import annotations

import os
from pathlib import Path

from installer.airgap.archive import open_bundle
from installer.airgap.files import sha256_file
from installer.release import load_pins, pins_path
from tests.fixtures.hubservices import make_chart, make_wheel
from tests.fixtures.registries import USER, Registry, image, layer, push_image
from tests.integration.airgap.helpers import PASSWORD_ENV, cli, keypair

APP = "ghcr.io/test/pinned"


def _release(path: Path) -> Path:
    path.write_text(
        'platform_version: "25.12.0"\n'
        "images:\n"
        f'  - {{name: {APP}, tag: "1.0", component: platform}}\n'
        "charts:\n"
        '  - {name: app, version: "1.0.0", repository: "https://x", component: platform}\n'
        "wheels:\n"
        '  - {name: tinypkg, version: "1.0"}\n'
        "binaries:\n"
        '  - {name: pulumi, version: "3.0.0"}\n'
    )
    return path


def _sources(tmp: Path) -> dict[str, Path]:
    folders = {k: tmp / k for k in ("charts", "wheels", "bin")}
    make_chart(folders["charts"], "app", "1.0.0")
    make_wheel(folders["wheels"], "tinypkg", "1.0", ["tinydep==2.0"])
    make_wheel(folders["wheels"], "tinydep", "2.0", [])
    exe = folders["bin"] / "pulumi"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\necho pulumi 3.0.0\n")
    exe.chmod(0o755)
    return folders


def _bundle(
    tmp: Path, reg: Registry, release: Path, out: str, *extra: str
) -> tuple[int, str, Path]:
    key = tmp / "keys" / "sign.pem"
    src = {k: tmp / k for k in ("charts", "wheels", "bin")}
    done = cli(
        "airgap-bundle", "--release", str(release), "-f", str(tmp / out), "--sign-key", str(key),
        "--registry-mirror", reg.host, "--upstream-ca", str(reg.pki.ca_cert),
        "--upstream-user", USER, "--charts-from", str(src["charts"]),
        "--wheels-from", str(src["wheels"]), "--binaries-from", str(src["bin"]), *extra,
        log_dir=tmp / "logs", env=PASSWORD_ENV,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr, tmp / out


def _one_line(text: str) -> str:
    return " ".join(text.split())


def test_a_release_is_cut_once_and_later_builds_get_its_bytes(
    tmp_path: Path, empty_registry: Registry
) -> None:
    reg = empty_registry
    first = image([layer({"app": os.urandom(20_000)}, oci=True)], oci=True)
    push_image(reg, APP, "1.0", first)
    _sources(tmp_path)
    _, pub = keypair(tmp_path / "keys")
    release = _release(tmp_path / "release.yml")

    # Without pins nothing is pulled: refused, naming the way out.
    rc, output, out = _bundle(tmp_path, reg, release, "none.tar.zst")
    assert rc == 2, output
    assert "release 25.12.0 has no pins" in _one_line(output)
    assert "--write-pins" in _one_line(output)
    assert not out.exists() and not (tmp_path / "none.tar.zst.work" / "oci").exists()

    # Cut the release from the trusted upstream (logged as a development build), pins recorded.
    cut = tmp_path / "cut.pins.yml"
    rc, output, _ = _bundle(
        tmp_path, reg, release, "cut.tar.zst", "--allow-unpinned", "--write-pins", str(cut)
    )
    assert rc == 0, output
    assert "DEVELOPMENT" in output
    pins = load_pins(cut)
    assert pins.images == {f"{APP}:1.0": first.manifest.digest}
    assert pins.charts == {"app:1.0.0": sha256_file(tmp_path / "charts" / "app-1.0.0.tgz")}
    assert set(pins.wheels) == {"tinypkg-1.0-py3-none-any.whl", "tinydep-2.0-py3-none-any.whl"}
    assert pins.binaries == {"pulumi:3.0.0": sha256_file(tmp_path / "bin" / "pulumi")}
    pins_path(release).write_bytes(cut.read_bytes())  # shipped beside the release

    # Later the tag moves upstream: the pinned build still gets the cut image, by digest.
    moved = image([layer({"app": os.urandom(20_000)}, oci=True)], oci=True)
    push_image(reg, APP, "1.0", moved)
    rc, output, out = _bundle(tmp_path, reg, release, "later.tar.zst")
    assert rc == 0, output
    (img,) = open_bundle(out, pub).manifest.images
    assert (img.name, img.tag, img.digest) == (APP, "1.0", first.manifest.digest)

    # Once the cut image is gone upstream, the build is refused, naming both digests.
    with reg.http() as http:
        assert http.delete(f"/v2/{APP}/manifests/{first.manifest.digest}").status_code == 202
    rc, output, out = _bundle(tmp_path, reg, release, "gone.tar.zst")
    assert rc == 2, output
    assert (
        f"image {APP}:1.0: the source has no {first.manifest.digest} (the release's pin);"
        f" its tag points at {moved.manifest.digest}"
    ) in _one_line(output)
    assert not out.exists()


def test_charts_wheels_and_binaries_with_other_bytes_are_refused(
    tmp_path: Path, empty_registry: Registry
) -> None:
    reg = empty_registry
    push_image(reg, APP, "1.0", image([layer({"app": b"x" * 5000}, oci=True)], oci=True))
    src = _sources(tmp_path)
    keypair(tmp_path / "keys")
    release = _release(tmp_path / "release.yml")
    rc, output, _ = _bundle(
        tmp_path, reg, release, "cut.tar.zst", "--allow-unpinned", "--write-pins",
        str(pins_path(release)),
    )  # fmt: skip
    assert rc == 0, output
    work = tmp_path / "b.tar.zst.work"

    # A chart repackaged under the same name and version.
    good_chart = (src["charts"] / "app-1.0.0.tgz").read_bytes()
    make_chart(src["charts"], "app", "1.0.0", description="repackaged")
    rc, output, out = _bundle(tmp_path, reg, release, "b.tar.zst")
    assert rc == 2, output
    chart_sha = sha256_file(src["charts"] / "app-1.0.0.tgz")
    assert f"chart app:1.0.0: sha256 {chart_sha} does not match the release's pin" in _one_line(
        output
    )
    assert not out.exists() and not (work / "charts" / "app-1.0.0.tgz").exists()
    (src["charts"] / "app-1.0.0.tgz").write_bytes(good_chart)

    # A binary swapped in the folder.
    good_bin = (src["bin"] / "pulumi").read_bytes()
    (src["bin"] / "pulumi").write_text("#!/bin/sh\necho owned\n")
    rc, output, out = _bundle(tmp_path, reg, release, "b.tar.zst")
    assert rc == 2, output
    assert "binary pulumi:3.0.0: sha256" in _one_line(output)
    assert not (work / "binaries" / "pulumi").exists()
    (src["bin"] / "pulumi").write_bytes(good_bin)

    # A dependency the release was not cut with (a newer one the index now offers).
    (src["wheels"] / "tinydep-2.0-py3-none-any.whl").unlink()
    make_wheel(src["wheels"], "tinydep", "2.0", ["evil==6.6"])
    make_wheel(src["wheels"], "evil", "6.6", [])
    rc, output, out = _bundle(tmp_path, reg, release, "w.tar.zst")
    assert rc == 2, output
    assert "wheel evil-6.6-py3-none-any.whl: the release's pins do not name it" in _one_line(output)
    assert not out.exists()
