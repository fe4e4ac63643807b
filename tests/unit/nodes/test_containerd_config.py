"""The in-place edit of a node's containerd config.toml (installer/site/containerd.py): the
site's keys land in the file's own layout, everything else of the file stays, a second edit
changes nothing, and a file that cannot be edited safely is refused with what to change."""

from __future__ import annotations

import tomllib

import pytest

from installer.site.containerd import (
    CRI_V2,
    IMAGES_V3,
    ContainerdConfigError,
    RuntimeSettings,
    containerd_major,
    layout_version,
    merged_config,
)

HUB = "hub.ml.lab.test:5000"
SETTINGS = RuntimeSettings(
    certs_dir="/etc/containerd/certs.d",
    sandbox_image=f"{HUB}/registry.k8s.io/pause:3.10",
    hub_registry=HUB,
    pull_login="cluster-pull",
    pull_password='p"w\\x',
)

# What `containerd config default` of containerd 1.6 writes, cut to the parts that matter.
DEFAULT_16 = """\
disabled_plugins = []
root = "/var/lib/containerd"
version = 2

[plugins]

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.6"
    # the node's CNI, kept as it is
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/cni/bin"
      conf_dir = "/etc/cni/net.d"

    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ""

      [plugins."io.containerd.grpc.v1.cri".registry.auths]

      [plugins."io.containerd.grpc.v1.cri".registry.configs]

      [plugins."io.containerd.grpc.v1.cri".registry.mirrors]
"""

DEFAULT_20 = """\
version = 3
root = "/var/lib/containerd"

[plugins]
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "overlayfs"

    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = "registry.k8s.io/pause:3.10"

    [plugins."io.containerd.cri.v1.images".registry]
      config_path = ""

  [plugins."io.containerd.cri.v1.runtime"]
    [plugins."io.containerd.cri.v1.runtime".cni]
      bin_dir = "/opt/cni/bin"
"""


def _site_keys(doc: dict, version: int) -> tuple[str, str, dict]:
    if version == 2:
        cri = doc["plugins"][CRI_V2]
        sandbox, registry = cri["sandbox_image"], cri["registry"]
    else:
        images = doc["plugins"][IMAGES_V3]
        sandbox, registry = images["pinned_images"]["sandbox"], images["registry"]
    return sandbox, registry["config_path"], registry["configs"][HUB]["auth"]


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1", 1),
        ("containerd containerd.io 1.7.27 05044ec0a9a75232cad458027ca83437aae3f4da", 1),
        ("containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b7193e4", 2),
    ],
)
def test_the_major_version_is_read_from_containerd_itself(output: str, major: int) -> None:
    assert containerd_major(output) == major


def test_unreadable_version_output_is_refused() -> None:
    with pytest.raises(ContainerdConfigError, match="cannot read a version"):
        containerd_major("bash: containerd: command not found")


@pytest.mark.parametrize(("text", "major", "version"), [(DEFAULT_16, 1, 2), (DEFAULT_20, 2, 3)])
def test_the_site_keys_land_in_the_layout_the_file_declares(
    text: str, major: int, version: int
) -> None:
    out = merged_config(text, major, SETTINGS)
    doc = tomllib.loads(out)
    sandbox, certs, auth = _site_keys(doc, version)
    assert sandbox == SETTINGS.sandbox_image
    assert certs == SETTINGS.certs_dir
    assert auth == {"username": "cluster-pull", "password": SETTINGS.pull_password}
    assert doc["version"] == version
    assert doc["root"] == "/var/lib/containerd"


def test_everything_else_of_the_file_stays_with_its_comments() -> None:
    out = merged_config(DEFAULT_16, 1, SETTINGS)
    assert tomllib.loads(out)["plugins"][CRI_V2]["cni"] == {
        "bin_dir": "/opt/cni/bin",
        "conf_dir": "/etc/cni/net.d",
    }
    assert "# the node's CNI, kept as it is" in out
    assert out.startswith('disabled_plugins = []\nroot = "/var/lib/containerd"\nversion = 2\n')
    # containerd 2.x: the runtime plugin is another table, untouched.
    out3 = merged_config(DEFAULT_20, 2, SETTINGS)
    assert tomllib.loads(out3)["plugins"]["io.containerd.cri.v1.runtime"] == {
        "cni": {"bin_dir": "/opt/cni/bin"}
    }
    assert tomllib.loads(out3)["plugins"][IMAGES_V3]["snapshotter"] == "overlayfs"


@pytest.mark.parametrize(("text", "major"), [(DEFAULT_16, 1), (DEFAULT_20, 2), (None, 1), ("", 2)])
def test_a_second_edit_returns_the_same_text(text: str | None, major: int) -> None:
    once = merged_config(text, major, SETTINGS)
    assert merged_config(once, major, SETTINGS) == once


@pytest.mark.parametrize(("major", "version"), [(1, 2), (2, 3)])
def test_a_node_without_a_file_gets_its_containerds_layout(major: int, version: int) -> None:
    doc = tomllib.loads(merged_config(None, major, SETTINGS))
    assert doc["version"] == version
    assert _site_keys(doc, version)[1] == SETTINGS.certs_dir
    assert layout_version("", major) == version


def test_a_changed_setting_is_rewritten_in_place() -> None:
    once = merged_config(DEFAULT_16, 1, SETTINGS)
    rotated = RuntimeSettings(
        SETTINGS.certs_dir, SETTINGS.sandbox_image, HUB, "cluster-pull", "new-password"
    )
    twice = merged_config(once, 1, rotated)
    assert _site_keys(tomllib.loads(twice), 2)[2]["password"] == "new-password"
    assert twice.count("password = ") == 1


def test_operator_mirrors_beside_config_path_are_refused() -> None:
    text = DEFAULT_16.replace(
        '[plugins."io.containerd.grpc.v1.cri".registry.mirrors]',
        '[plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]\n'
        '        endpoint = ["https://mirror.example"]',
    )
    with pytest.raises(ContainerdConfigError, match=r"`mirrors` for docker\.io.*hosts\.toml"):
        merged_config(text, 1, SETTINGS)


def test_another_certs_folder_already_in_use_is_refused_naming_the_setting() -> None:
    text = DEFAULT_16.replace('config_path = ""', 'config_path = "/etc/docker/certs.d"')
    with pytest.raises(ContainerdConfigError, match=r"node_runtime\.certs_dir to /etc/docker"):
        merged_config(text, 1, SETTINGS)
    # The same folder, written with a trailing slash, is the same folder.
    text = DEFAULT_16.replace('config_path = ""', 'config_path = "/etc/containerd/certs.d/"')
    assert merged_config(text, 1, SETTINGS)


@pytest.mark.parametrize(
    ("text", "major", "message"),
    [
        ('[plugins.cri]\nsandbox_image = "x"\n', 1, "version 1 layout"),
        ("version = 3\n", 1, "containerd 1.x cannot read"),
        ("version = 7\n", 2, "unsupported containerd config version 7"),
        ("version = \n", 1, "not valid TOML"),
        ('version = 2\nplugins = "x"\n', 1, "`plugins` is a String"),
    ],
)
def test_files_the_installer_cannot_edit_are_refused(text: str, major: int, message: str) -> None:
    with pytest.raises(ContainerdConfigError, match=message):
        merged_config(text, major, SETTINGS)
