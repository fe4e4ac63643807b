"""The inventory: models of `onprem.yml`, its loader and its JSON Schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from installer.inventory.models import Inventory
from installer.inventory.yamlsrc import InputFileError, Problem, load_yaml_model

__all__ = ["InputFileError", "Inventory", "Problem", "inventory_schema", "load_inventory"]


def load_inventory(path: Path) -> Inventory:
    """Load and validate an inventory file; errors name file:line:column and the field."""
    return load_yaml_model(
        path, Inventory, what="inventory", context={"base_dir": path.resolve().parent}
    )


def inventory_schema() -> dict[str, Any]:
    """The inventory's JSON Schema (draft 2020-12)."""
    return Inventory.model_json_schema(by_alias=True, mode="validation")
