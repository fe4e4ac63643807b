"""What a node's containerd must hold for the site, as edits of its own `config.toml`.

The nodes phase points every node's CRI plugin at the site hub: registry hosts from a `certs.d`
folder (one `hosts.toml` per mirrored registry, `templates/nodes/hosts.toml.j2`), the sandbox
image from the hub, and the hub's read-only pull login for the runtime's own pulls (the sandbox
image and mirrored pulls carry no pod pull secret).

The node's file is edited in place, never replaced: containerd 1.6 merges an `imports` drop-in by
whole plugin tables, so a drop-in with the registry settings would drop the node's own CRI
settings (its CNI folders, runtimes, cgroup driver). The edit keeps every other key, comment and
layout of the file; a second edit with the same settings returns the same text.

Two layouts (containerd's `version` key): 2 for containerd 1.5 to 1.7 (`io.containerd.grpc.v1.cri`)
and 3 for containerd 2.x (`io.containerd.cri.v1.images`). A file keeps the layout it declares; a
node without a file (or an empty one) gets the layout of its containerd's major version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Table

CRI_V2 = "io.containerd.grpc.v1.cri"
"""The CRI plugin of layout 2: sandbox image and registry settings both live in it."""
IMAGES_V3 = "io.containerd.cri.v1.images"
"""The CRI image plugin of layout 3 (containerd 2.x)."""

_VERSION = re.compile(r"\bv?(\d+)\.(\d+)(?:\.(\d+))?")


class ContainerdConfigError(ValueError):
    """The node's containerd configuration cannot be edited safely; the message says why and
    what to change."""


@dataclass(frozen=True)
class RuntimeSettings:
    """The site's settings for one node's CRI plugin."""

    certs_dir: str
    """containerd's `registry.config_path`: the folder of `<registry>/hosts.toml`."""
    sandbox_image: str
    """The pause image, by its name on the hub."""
    hub_registry: str
    """The hub's read-only registry endpoint (`host:port`), the key of the pull login."""
    pull_login: str
    pull_password: str = field(repr=False)


def containerd_major(version_output: str) -> int:
    """The major version in `containerd --version`'s output (`containerd github.com/containerd/
    containerd 1.6.20~ds1 1.6.20~ds1-1+b1` -> 1)."""
    for word in version_output.split()[1:]:
        match = _VERSION.match(word)
        if match:
            return int(match.group(1))
    raise ContainerdConfigError(
        f"cannot read a version in `containerd --version`: {version_output!r}"
    )


def layout_version(text: str | None, major: int) -> int:
    """The layout to edit: the file's own `version` (2 or 3), else that of containerd `major`."""
    doc = _parse(text or "")
    declared = doc.get("version")
    if declared is None:
        if doc:
            raise ContainerdConfigError(
                "the file has no `version` key, so containerd reads it in the version 1 layout,"
                " which the installer does not edit; convert it (`containerd config default`"
                " shows the version 2 layout of containerd 1.x, `containerd config migrate` the"
                " version 3 layout of 2.x) and run again"
            )
        return 3 if major >= 2 else 2
    if declared not in (2, 3):
        raise ContainerdConfigError(f"unsupported containerd config version {declared!r}")
    if declared == 3 and major < 2:
        raise ContainerdConfigError(
            f"the file declares version 3, which containerd {major}.x cannot read; the node runs"
            " an older containerd than its configuration was written for"
        )
    return int(declared)


def merged_config(text: str | None, major: int, settings: RuntimeSettings) -> str:
    """The node's `config.toml` text with the site's settings in place (`text` None or empty:
    a new file holding only them)."""
    version = layout_version(text, major)
    doc = _parse(text or "")
    if "version" not in doc:
        doc.add("version", version)
    if version == 2:
        cri = _table(doc, "plugins", CRI_V2)
        _set(cri, "sandbox_image", settings.sandbox_image)
        registry = _table(cri, "registry")
    else:
        images = _table(doc, "plugins", IMAGES_V3)
        _set(_table(images, "pinned_images"), "sandbox", settings.sandbox_image)
        registry = _table(images, "registry")
    _check_registry(registry, settings, version)
    _set(registry, "config_path", settings.certs_dir)
    auth = _table(registry, "configs", settings.hub_registry, "auth")
    _set(auth, "username", settings.pull_login)
    _set(auth, "password", settings.pull_password)
    return tomlkit.dumps(doc)


def _parse(text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except TOMLKitError as exc:
        raise ContainerdConfigError(f"not valid TOML: {exc}") from None


def _table(parent: Any, *keys: str) -> Any:
    """The table at `keys` under `parent`, created (without a header of its own where it only
    holds tables) when missing."""
    for key in keys:
        if key not in parent:
            parent[key] = tomlkit.table(is_super_table=True)
        parent = parent[key]
        if not isinstance(parent, (Table, dict)):
            raise ContainerdConfigError(f"`{key}` is a {type(parent).__name__}, not a table")
    return parent


def _set(table: Any, key: str, value: str) -> None:
    # Assigning an equal value would still re-render the item; leave it untouched.
    if table.get(key) != value:
        table[key] = value


def _check_registry(registry: Any, settings: RuntimeSettings, version: int) -> None:
    plugin = CRI_V2 if version == 2 else IMAGES_V3
    where = f'[plugins."{plugin}".registry]'
    mirrors = registry.get("mirrors") or {}
    if mirrors:
        raise ContainerdConfigError(
            f"{where} has `mirrors` for {', '.join(sorted(mirrors))}, which containerd refuses"
            f" beside `config_path`; move them to hosts.toml files under {settings.certs_dir}"
            " (or remove them) and run again"
        )
    current = registry.get("config_path") or ""
    if current and current.rstrip("/") != settings.certs_dir.rstrip("/"):
        raise ContainerdConfigError(
            f"{where} config_path is {current}, the inventory's node_runtime.certs_dir is"
            f" {settings.certs_dir}; set node_runtime.certs_dir to {current} (the installer adds"
            " its hosts.toml files beside the ones there) and run again"
        )
