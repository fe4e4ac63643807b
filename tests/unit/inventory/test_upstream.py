"""The `upstream` section: where a connected site's hub gets the release's content."""

from __future__ import annotations

from pathlib import Path

import pytest

from installer.inventory import InputFileError, load_inventory

BASE = Path(__file__).with_name("base.yml")
REPO = Path(__file__).resolve().parents[3]

UPSTREAM = """
upstream:
  registry_mirror: mirror.example.com:5000
  ca_cert: mirror-ca.pem
  user: ci
  password: file:secrets/mirror-password
  charts_url: https://charts.example.com
  wheels_url: https://pypi.example.com/simple/
  binaries_dir: pulumi-bin
"""


def _site(tmp_path: Path, upstream: str, *, airgapped: bool = False) -> Path:
    text = BASE.read_text()
    flag = "true" if airgapped else "false"
    text = text.replace(
        "  domain: ml.example.com", f"  domain: ml.example.com\n  airgapped: {flag}"
    )
    path = tmp_path / "site.yml"
    path.write_text(text.rstrip("\n") + "\n" + upstream.lstrip("\n"))
    return path


def _problems(path: Path) -> list[tuple[int, str, str]]:
    with pytest.raises(InputFileError) as info:
        load_inventory(path)
    return [(p.line, p.path, p.message) for p in info.value.problems]


def test_upstream_is_optional() -> None:
    assert load_inventory(BASE).upstream is None


def test_upstream_fields_and_paths_relative_to_the_inventory(tmp_path: Path) -> None:
    inv = load_inventory(_site(tmp_path, UPSTREAM))
    up = inv.upstream
    assert up is not None
    assert up.registry_mirror == "mirror.example.com:5000"
    assert up.ca_cert == tmp_path / "mirror-ca.pem"
    assert up.binaries_dir == tmp_path / "pulumi-bin"
    assert up.password is not None and up.password.path() == tmp_path / "secrets/mirror-password"
    assert (up.user, up.charts_url, up.wheels_url) == (
        "ci",
        "https://charts.example.com",
        "https://pypi.example.com/simple/",
    )


def test_minimal_upstream_pulls_each_image_from_its_own_registry(tmp_path: Path) -> None:
    minimal = (
        "upstream:\n  charts_url: https://c.example\n  wheels_url: https://p.example/simple/\n"
    )
    up = load_inventory(_site(tmp_path, minimal)).upstream
    assert up is not None
    assert (up.registry_mirror, up.ca_cert, up.user, up.password, up.binaries_dir) == (
        None,
        None,
        None,
        None,
        None,
    )


def test_airgapped_site_with_upstream_is_refused_with_a_remedy(tmp_path: Path) -> None:
    site = _site(tmp_path, UPSTREAM, airgapped=True)
    ((line, path, message),) = _problems(site)
    assert path == "upstream"
    assert site.read_text().splitlines()[line - 1] == "upstream:"
    assert "air-gapped" in message and "site.airgapped: false" in message


def test_inline_password_is_refused(tmp_path: Path) -> None:
    text = UPSTREAM.replace("file:secrets/mirror-password", "hunter2")
    ((_, path, message),) = _problems(_site(tmp_path, text))
    assert path == "upstream.password"
    assert "never written inline" in message


@pytest.mark.parametrize("drop", ["user", "password"])
def test_login_needs_user_and_password(tmp_path: Path, drop: str) -> None:
    text = "\n".join(ln for ln in UPSTREAM.splitlines() if not ln.startswith(f"  {drop}:"))
    ((_, path, message),) = _problems(_site(tmp_path, text + "\n"))
    assert path == f"upstream.{drop}"
    assert "both user and password" in message


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("https://charts.example.com", "http://charts.example.com", "upstream.charts_url"),
        ("https://pypi.example.com/simple/", "ftp://x", "upstream.wheels_url"),
        ("mirror.example.com:5000", "https://mirror.example.com", "upstream.registry_mirror"),
    ],
)
def test_urls_are_tls_and_the_mirror_is_host_port(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    ((_, path, _),) = _problems(_site(tmp_path, UPSTREAM.replace(old, new)))
    assert path == field


@pytest.mark.parametrize("missing", ["charts_url", "wheels_url"])
def test_chart_and_wheel_sources_are_required(tmp_path: Path, missing: str) -> None:
    text = "\n".join(ln for ln in UPSTREAM.splitlines() if not ln.startswith(f"  {missing}:"))
    problems = _problems(_site(tmp_path, text + "\n"))
    assert [p for _, p, _ in problems] == [f"upstream.{missing}"]


def test_unknown_upstream_key_suggests_the_right_one(tmp_path: Path) -> None:
    text = UPSTREAM.replace("  charts_url:", "  chart_url:")
    problems = _problems(_site(tmp_path, text))
    assert any(p == "upstream.chart_url" and "charts_url" in m for _, p, m in problems)


def test_lab_inventory_points_at_the_lab_upstream() -> None:
    inv = load_inventory(REPO / "inventories" / "lab.yml")
    up = inv.upstream
    assert up is not None and not inv.site.airgapped
    assert up.registry_mirror == "127.0.0.1:15000"
    assert up.password is not None
    assert up.password.path().resolve() == REPO / "lab/.state/upstream/auth-password"
