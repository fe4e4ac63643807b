"""The inventory reference (docs/inventory.md), generated from the models' fields.

`python -m installer.inventory.reference > docs/inventory.md` rewrites it; a test keeps the file
in step with the models.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from installer.inventory.models import Inventory

HEADER = """# Inventory reference

Generated from the models in `installer/inventory/models.py`
(`python -m installer.inventory.reference > docs/inventory.md`); a test keeps it in step.
Machine-readable form: `installer inventory schema`.

Conventions:
- Sizes and CPU take Kubernetes quantities: `64Gi`, `500M`, `31500m`, `1.5`.
- Secrets are references, never inline values: `env:VARIABLE` or `file:path`.
- Relative paths are relative to the inventory file's folder.
- Unknown keys are errors.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        suffix = " or null" if type(None) in args else ""
        return " or ".join(names) + suffix
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map of {_type_name(args[0])} to {_type_name(args[1])}"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(
            annotation.__name__, annotation.__name__
        )
    return str(annotation)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        if _inner_models(info.annotation):
            return "see type"
        factory: Any = info.default_factory
        value = factory()
    else:
        value = info.default
    if value is PydanticUndefined or value is None:
        return "-"
    return f"`{json.dumps(value, default=str)}`"


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []

    def visit(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.append(model)
        for info in model.model_fields.values():
            for inner in _inner_models(info.annotation):
                visit(inner)

    visit(root)
    return seen


def _inner_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _inner_models(arg)]


def render_markdown() -> str:
    """The whole reference as Markdown."""
    lines = [HEADER]
    for model in _models(Inventory):
        lines.append(f"## {model.__name__}\n")
        lines.append(f"{inspect.cleandoc(model.__doc__ or '')}\n")
        lines.append("| key | type | default | description |")
        lines.append("| --- | --- | --- | --- |")
        for name, info in model.model_fields.items():
            key = info.alias or name
            desc = (info.description or "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{key}` | {_type_name(info.annotation)} | {_default(info)} | {desc} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
