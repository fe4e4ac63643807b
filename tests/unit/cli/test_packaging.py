"""Packaging: one distribution, the `installer` console script, every dependency pinned, the
layout of the design, ruff and strict mypy configured."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]


def _pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def _name(requirement: str) -> str:
    return re.split(r"[=<>!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_one_distribution_with_the_console_script() -> None:
    project = _pyproject()["project"]
    assert project["scripts"] == {"installer": "installer.cli.__main__:run"}
    assert project["requires-python"] == ">=3.11"


def test_every_dependency_is_pinned() -> None:
    project = _pyproject()["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    loose = [r for r in requirements if not re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][^,;<>]*", r)]
    assert loose == []
    build = _pyproject()["build-system"]["requires"]
    assert all("==" in r for r in build), build


def test_the_dependencies_the_design_names() -> None:
    project = _pyproject()["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    dev = {_name(r) for r in project["optional-dependencies"]["dev"]}
    assert {
        "pulumi",
        "pulumi-kubernetes",
        "ansible-runner",
        "ansible-core",
        "jinja2",
        "typer",
        "pydantic",
        "paramiko",
        "kubernetes",
        "rich",
    } <= runtime
    assert {"pytest", "molecule", "hypothesis", "jsonschema", "ruff", "mypy"} <= dev
    pydantic = next(r for r in project["dependencies"] if _name(r) == "pydantic")
    assert pydantic.split("==")[1].startswith("2.")


def test_ruff_and_strict_mypy_on_the_package() -> None:
    tool = _pyproject()["tool"]
    assert tool["mypy"]["strict"] is True
    assert tool["mypy"]["files"] == ["installer"]
    assert tool["ruff"]["lint"]["select"]


def test_top_level_layout() -> None:
    for folder in (
        "installer",
        "stacks",
        "playbooks",
        "templates",
        "inventories",
        "airgap",
        "tests",
        "lab",
        "bench",
        "docs",
    ):
        assert (REPO / folder).is_dir(), folder
