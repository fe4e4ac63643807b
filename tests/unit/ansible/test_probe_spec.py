"""Every path a hub role manages is read by the drift probe.

The probe (installer/phases/auxvm_probe.py) lets a run skip the play when the VM reads as the
last converging run left it; a managed file it does not read could drift unseen. This test reads
the roles' tasks as YAML, renders each managed path (file, copy, template, unarchive, pip) with
the roles' defaults, and checks it against the roles' `hub_<role>_probe` declarations: inside a
hashed tree, or named as a file, folder or existence check.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2
import pytest
import yaml

ROLES = Path(__file__).resolve().parents[3] / "playbooks" / "roles"
HUB_ROLES = ["hub/common", "hub/pki", "hub/registry", "hub/chartmuseum", "hub/devpi", "dns/dnsmasq"]
PROGRAMS = ["registry", "chartmuseum", "devpi", "devpi-proxy", "dns"]
WRITERS = {"file": ("path",), "copy": ("dest",), "template": ("dest",), "unarchive": ("dest",),
           "pip": ("virtualenv",)}  # fmt: skip


def _module(task: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    for key, args in task.items():
        short = key.rsplit(".", 1)[-1]
        if short in WRITERS and isinstance(args, dict):
            return short, args
    return None


def _tasks(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for task in items or []:
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key) or [])


def _env() -> jinja2.Environment:
    env = jinja2.Environment(undefined=jinja2.ChainableUndefined)  # noqa: S701 - paths, not HTML
    env.filters["bool"] = lambda v: str(v).lower() in ("true", "1", "yes")
    env.tests["file"] = lambda v: True
    env.tests["directory"] = lambda v: True
    return env


def _render(env: jinja2.Environment, value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        for _ in range(6):
            if "{{" not in value:
                break
            rendered = env.from_string(value).render(**context)
            try:
                parsed = yaml.safe_load(rendered) if rendered.strip()[:1] in "[{" else rendered
            except yaml.YAMLError:
                parsed = rendered
            if not isinstance(parsed, str):
                return _render(env, parsed, context)
            value = parsed
        return value
    if isinstance(value, list):
        return [_render(env, v, context) for v in value]
    if isinstance(value, dict):
        return {k: _render(env, v, context) for k, v in value.items()}
    return value


def _context(supervisor: str) -> dict[str, Any]:
    context: dict[str, Any] = {
        "hub_supervisor_kind": supervisor,
        "hub_dns_enabled": True,
        "hub_tls_trust_on_vm": True,
        "inventory_hostname": "hub.example.test",
    }
    for role in HUB_ROLES:
        context.update(yaml.safe_load((ROLES / role / "defaults" / "main.yml").read_text()) or {})
    context["hub_dns_enabled"] = True
    context["hub_tls_trust_on_vm"] = True
    return context


def _managed(env: jinja2.Environment, context: dict[str, Any]) -> list[tuple[str, str]]:
    """(task name, rendered path) of every write of the hub roles."""
    found: list[tuple[str, str]] = []
    for role in HUB_ROLES:
        for tasks_file in sorted((ROLES / role / "tasks").glob("*.yml")):
            for task in _tasks(yaml.safe_load(tasks_file.read_text()) or []):
                module = _module(task)
                if module is None or task.get("delegate_to") == "localhost":
                    continue
                _, args = module
                items = task.get("loop") or [None]
                programs = PROGRAMS if tasks_file.name == "program.yml" else [None]
                for item in items:
                    for program in programs:
                        local = {**context, "item": item, "hub_program": program}
                        local["item"] = _render(env, item, local)
                        for key in WRITERS[module[0]]:
                            if key in args:
                                path = _render(env, args[key], local)
                                found.append((f"{role}: {task.get('name')}", str(path)))
    return found


def _probe(env: jinja2.Environment, context: dict[str, Any]) -> dict[str, list[str]]:
    spec: dict[str, list[str]] = {"trees": [], "files": [], "dirs": [], "exists": []}
    for name in ("common", "pki", "registry", "chartmuseum", "devpi", "dns"):
        fragment = _render(env, context[f"hub_{name}_probe"], context)
        for key in spec:
            spec[key] += fragment.get(key) or []
        # The play adds each program's unit file (playbooks/aux-vm.yml).
        spec["files"] += [
            f"/etc/systemd/system/onprem-hub-{p}.service" for p in fragment.get("programs") or []
        ]
    return spec


@pytest.mark.parametrize("supervisor", ["systemd", "supervisord"])
def test_every_managed_path_is_read_by_the_probe(supervisor: str) -> None:
    env = _env()
    context = _context(supervisor)
    spec = _probe(env, context)
    trees = [PurePosixPath(t) for t in spec["trees"]]
    named = set(spec["files"]) | set(spec["dirs"]) | set(spec["exists"])
    managed = _managed(env, context)
    assert len(managed) > 20, managed  # the walk found the roles' writes
    unread = [
        (task, path)
        for task, path in managed
        if path not in named and not any(PurePosixPath(path).is_relative_to(t) for t in trees)
    ]
    assert not unread, f"managed but not read by the drift probe: {unread}"
    assert all(p.startswith("/") and "{{" not in p for _, p in managed), managed


def test_the_play_names_every_roles_probe() -> None:
    """The play's last task collects each role's fragment; a role left out would go unread."""
    play = (ROLES.parent / "aux-vm.yml").read_text()
    for name in ("common", "pki", "registry", "chartmuseum", "devpi", "dns"):
        assert f"hub_{name}_probe" in play
