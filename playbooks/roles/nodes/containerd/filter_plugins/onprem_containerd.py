# Copyright: the onprem-installer authors. Apache-2.0.
"""Filters for the nodes play, run on the controller: the edit of a node's containerd
config.toml (installer/site/containerd.py, with tomlkit), which the node's own Python need not
have."""

from __future__ import annotations

from pathlib import Path

from ansible.errors import AnsibleFilterError

from installer.site.containerd import (
    ContainerdConfigError,
    RuntimeSettings,
    containerd_major,
    merged_config,
)


def _settings(settings: dict, password: str) -> RuntimeSettings:
    return RuntimeSettings(
        certs_dir=settings["certs_dir"],
        sandbox_image=settings["sandbox_image"],
        hub_registry=settings["hub_registry"],
        pull_login=settings["pull_login"],
        pull_password=password,
    )


def containerd_config_problem(text: str | None, version_output: str, settings: dict) -> str:
    """Why the node's config.toml (`text`, None when missing) cannot take the site's settings,
    or '' when it can. Checked without the password, so the task may show its result."""
    try:
        merged_config(text, containerd_major(version_output), _settings(settings, "-"))
    except ContainerdConfigError as exc:
        return str(exc)
    return ""


def containerd_config(text: str | None, version_output: str, settings: dict) -> str:
    """The node's config.toml with the site's settings; the pull password is read from
    `settings.pull_password_file` on the controller (use in a task with `no_log`)."""
    try:
        password = Path(settings["pull_password_file"]).read_text(encoding="utf-8").strip()
        return merged_config(text, containerd_major(version_output), _settings(settings, password))
    except (ContainerdConfigError, OSError, KeyError) as exc:
        raise AnsibleFilterError(f"containerd config: {exc}") from None


class FilterModule:
    """The filters the nodes play uses."""

    def filters(self) -> dict:
        return {
            "onprem_containerd_config": containerd_config,
            "onprem_containerd_config_problem": containerd_config_problem,
        }
