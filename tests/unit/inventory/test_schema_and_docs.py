"""The JSON Schema is valid, describes every field, and accepts the example inventories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from installer.inventory import inventory_schema
from installer.inventory.reference import render_markdown
from installer.inventory.yamlsrc import load_yaml

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((REPO / "inventories").glob("*.example.yml"))


def _cli_schema(tmp_path: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "installer.cli", "--log-dir", str(tmp_path), "inventory", "schema"],
        capture_output=True,
        text=True,
        check=True,
    )
    schema: dict[str, Any] = json.loads(proc.stdout)
    return schema


def test_cli_prints_a_valid_json_schema(tmp_path: Path) -> None:
    schema = _cli_schema(tmp_path)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == inventory_schema()


def test_schema_written_to_file(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "installer.cli",
            "--log-dir",
            str(tmp_path),
            "inventory",
            "schema",
            "--output-file",
            str(target),
        ],
        check=True,
    )
    assert json.loads(target.read_text()) == inventory_schema()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_schema(example: Path) -> None:
    data, _ = load_yaml(example)
    jsonschema.Draft202012Validator(inventory_schema()).validate(data)


def test_schema_rejects_what_the_loader_rejects() -> None:
    data, _ = load_yaml(EXAMPLES[0])
    data["site"]["unknown"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(inventory_schema()).validate(data)


def _properties(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [(f"Inventory.{k}", v) for k, v in schema["properties"].items()]
    for name, model in schema["$defs"].items():
        out += [(f"{name}.{k}", v) for k, v in model.get("properties", {}).items()]
    return out


def test_every_field_has_a_description() -> None:
    missing = [
        name for name, prop in _properties(inventory_schema()) if not prop.get("description")
    ]
    assert missing == []


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"onprem.example.yml", "multi-cluster.example.yml"}


def test_docs_reference_is_in_step_with_the_models() -> None:
    current = (REPO / "docs" / "inventory.md").read_text(encoding="utf-8")
    assert current == render_markdown(), (
        "docs/inventory.md is stale: python -m installer.inventory.reference > docs/inventory.md"
    )


@pytest.mark.parametrize(
    "inventory", sorted((REPO / "inventories").glob("*.yml")), ids=lambda p: p.name
)
def test_every_shipped_inventory_validates(inventory: Path) -> None:
    from installer.inventory import load_inventory

    load_inventory(inventory)
    data, _ = load_yaml(inventory)
    jsonschema.Draft202012Validator(inventory_schema()).validate(data)


def test_init_starter_validates_against_the_schema(tmp_path: Path) -> None:
    from installer.cli.init_cmd import render_starter
    from installer.inventory import load_inventory

    starter = tmp_path / "onprem.yml"
    starter.write_text(
        render_starter("onprem.yml", "mysite", "ml.example.com", "192.0.2.10", "ops")
    )
    load_inventory(starter)
    data, _ = load_yaml(starter)
    jsonschema.Draft202012Validator(inventory_schema()).validate(data)
