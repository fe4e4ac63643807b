"""Charts, wheels and binaries for the bundle, from a served repository or from a folder.

Charts come from a chart repository (ChartMuseum's `index.yaml`) or a folder of
`<name>-<version>.tgz`; wheels through `pip download` (an index URL or a folder of wheels,
dependencies included, so the installer itself installs offline); binaries from a folder (the
lab's build cache or an unpacked release), found by name, preferring a path with the version.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import ssl
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
from pydantic import SecretStr
from ruamel.yaml import YAML

from installer.airgap.manifest import BundleItem, ItemKind
from installer.errors import BadInputError, EnvironmentProblem
from installer.release import BinaryRef, ChartRef, WheelRef

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Source:
    """A served repository (URL) or a folder, with the CA and login for a URL."""

    location: str
    ca_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None

    @property
    def is_url(self) -> bool:
        """True for http(s) locations."""
        return self.location.startswith(("http://", "https://"))

    def client(self) -> httpx.Client:
        """An HTTP client with this source's trust and login."""
        auth = (
            httpx.BasicAuth(self.username, self.password.get_secret_value())
            if self.username and self.password
            else None
        )
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True
        )
        return httpx.Client(verify=verify, auth=auth, timeout=60.0, follow_redirects=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def file_item(stage: Path, rel: str, kind: str, name: str = "", version: str = "") -> BundleItem:
    """A bundle item for `stage/rel`, hashing the file."""
    path = stage / rel
    item_kind: ItemKind = kind  # type: ignore[assignment]
    return BundleItem(
        kind=item_kind,
        name=name or path.name,
        version=version,
        path=rel,
        size=path.stat().st_size,
        sha256=sha256_file(path),
    )


# --- charts ---------------------------------------------------------------------------------


def chart_file(chart: ChartRef) -> str:
    """The archive name Helm gives a chart."""
    return f"{chart.name}-{chart.version}.tgz"


def fetch_charts(charts: list[ChartRef], source: Source, dest: Path) -> None:
    """Put every chart archive into `dest`, skipping those already there."""
    dest.mkdir(parents=True, exist_ok=True)
    todo = [c for c in charts if not (dest / chart_file(c)).is_file()]
    if not todo:
        return
    if not source.is_url:
        for chart in todo:
            found = Path(source.location) / chart_file(chart)
            if not found.is_file():
                raise BadInputError(f"chart {chart.name} {chart.version}: no {found}")
            shutil.copyfile(found, dest / chart_file(chart))
        return
    base = source.location.rstrip("/") + "/"
    with source.client() as http:
        index = YAML(typ="safe").load(_get(http, base + "index.yaml").content)
        for chart in todo:
            entry = next(
                (
                    e
                    for e in (index.get("entries") or {}).get(chart.name, [])
                    if str(e.get("version")) == chart.version
                ),
                None,
            )
            if entry is None or not entry.get("urls"):
                raise BadInputError(f"chart {chart.name} {chart.version}: not in {base}index.yaml")
            data = _get(http, urljoin(base, entry["urls"][0])).content
            if entry.get("digest") and hashlib.sha256(data).hexdigest() != entry["digest"]:
                raise BadInputError(f"chart {chart.name} {chart.version}: digest mismatch")
            tmp = dest / (chart_file(chart) + ".partial")
            tmp.write_bytes(data)
            tmp.replace(dest / chart_file(chart))


def _get(http: httpx.Client, url: str) -> httpx.Response:
    try:
        response = http.get(url)
    except httpx.TransportError as exc:
        raise EnvironmentProblem(f"{url}: {exc}") from None
    if response.status_code != 200:
        raise EnvironmentProblem(f"{url}: answered {response.status_code}")
    return response


def chart_metadata(archive: Path) -> dict[str, Any]:
    """`Chart.yaml` of a chart archive (read in memory, never extracted)."""
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if len(parts) == 2 and parts[1] == "Chart.yaml" and member.isreg():
                handle = tar.extractfile(member)
                assert handle is not None
                meta = YAML(typ="safe").load(io.BytesIO(handle.read(1024 * 1024)))
                if isinstance(meta, dict):
                    return meta
    raise BadInputError(f"{archive.name}: no Chart.yaml")


def write_chart_index(dest: Path, charts: list[ChartRef]) -> None:
    """A Helm repository `index.yaml` for the charts in `dest`."""
    entries: dict[str, list[dict[str, Any]]] = {}
    for chart in charts:
        archive = dest / chart_file(chart)
        meta = chart_metadata(archive)
        entry = {k: v for k, v in meta.items() if isinstance(v, str | int | float | list)}
        entry.update(
            {
                "name": chart.name,
                "version": chart.version,
                "digest": sha256_file(archive),
                "urls": [chart_file(chart)],
                "created": "1970-01-01T00:00:00Z",
            }
        )
        entries.setdefault(chart.name, []).append(entry)
    doc = {"apiVersion": "v1", "entries": entries, "generated": _now()}
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    with (dest / "index.yaml").open("w") as handle:
        yaml.dump(doc, handle)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- wheels ---------------------------------------------------------------------------------


def fetch_wheels(wheels: list[WheelRef], source: Source, dest: Path) -> None:
    """`pip download` the wheels and their dependencies into `dest` (binary wheels only)."""
    dest.mkdir(parents=True, exist_ok=True)
    if not wheels:
        return
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
    argv += ["--only-binary=:all:", "--dest", str(dest)]
    # pip sees only what is given here: no pip.conf, no PIP_* variables, and no CA-bundle
    # variables that would override `--cert` (a bundle must not depend on the build machine).
    drop = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k not in drop}
    env["PIP_CONFIG_FILE"] = os.devnull
    if source.is_url:
        url = source.location
        if source.username and source.password:
            # The login goes through the environment, never the argv (visible in ps).
            scheme, _, rest = url.partition("://")
            password = source.password.get_secret_value()
            url = f"{scheme}://{source.username}:{password}@{rest}"
        env["PIP_INDEX_URL"] = url
        if source.ca_file:
            # pip's default (system trust store) backend ignores --cert for hosts named by IP
            # address; the classic backend checks the certificate against the given CA.
            argv += ["--cert", str(source.ca_file), "--use-deprecated=legacy-certs"]
    else:
        argv += ["--no-index", "--find-links", str(Path(source.location).resolve())]
    argv += [f"{w.name}=={w.version}" for w in wheels]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-3:]
        raise EnvironmentProblem(
            f"pip download failed: {' / '.join(tail)}",
            remedy="check --wheels-from: it must hold every wheel and its dependencies",
        )
    for leftover in dest.iterdir():
        if not leftover.name.endswith(".whl"):
            raise BadInputError(f"wheels: {leftover.name} is not a wheel (binary wheels only)")


# --- binaries -------------------------------------------------------------------------------


def find_binary(binary: BinaryRef, folder: Path) -> Path:
    """The executable named like the binary under `folder`, preferring one under its version."""
    found = sorted(p for p in folder.rglob(binary.name) if p.is_file() and os.access(p, os.X_OK))
    versioned = [p for p in found if binary.version in str(p.relative_to(folder))]
    pick = (versioned or found)[:1]
    if not pick:
        raise BadInputError(f"binary {binary.name} {binary.version}: not found under {folder}")
    return pick[0]


def fetch_binaries(binaries: list[BinaryRef], folder: Path, dest: Path) -> None:
    """Copy each binary into `dest/<name>` (mode 0755)."""
    dest.mkdir(parents=True, exist_ok=True)
    for binary in binaries:
        target = dest / binary.name
        source = find_binary(binary, folder)
        if target.is_file() and target.stat().st_size == source.stat().st_size:
            continue
        shutil.copyfile(source, target)
        target.chmod(0o755)
