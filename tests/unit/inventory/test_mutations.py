"""Property test: any mutation of a valid inventory is accepted or refused with our own error."""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from installer.inventory import InputFileError, load_inventory
from installer.inventory.yamlsrc import load_yaml

REPO = Path(__file__).resolve().parents[3]
SOURCES = [
    Path(__file__).with_name("base.yml"),
    REPO / "inventories" / "onprem.example.yml",
    REPO / "inventories" / "multi-cluster.example.yml",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["64Gi", "500m", "env:X", "file:k", "nvidia", "cpu", "", "-1", "1e400"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, child in node.items():
            out += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out += _paths(child, (*prefix, i))
    return out


def _mutate(data: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    data = copy.deepcopy(data)
    if not path:
        return value if action == "replace" else data
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "replace":
        parent[last] = value
    elif action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[f"{last}_x" if isinstance(last, str) else "extra"] = value
    elif action == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    return data


def _dump(data: Any) -> str:
    yaml = YAML(typ="safe", pure=True)
    buf = io.StringIO()
    yaml.dump(data, buf)
    return buf.getvalue()


def _accepts_or_refuses(path: Path) -> None:
    try:
        load_inventory(path)
    except InputFileError as exc:
        assert exc.problems and all(p.line >= 1 and p.column >= 1 for p in exc.problems)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    source=st.sampled_from(SOURCES),
    pick=st.integers(min_value=0, max_value=10_000),
    action=st.sampled_from(["replace", "delete", "add", "duplicate"]),
    value=values,
)
def test_structural_mutations(
    tmp_path_factory: Any, source: Path, pick: int, action: str, value: Any
) -> None:
    data, _ = load_yaml(source)
    paths = _paths(data)
    mutated = _mutate(data, paths[pick % len(paths)], action, value)
    path = tmp_path_factory.mktemp("mut") / "inv.yml"
    path.write_text(_dump(mutated), encoding="utf-8")
    _accepts_or_refuses(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    source=st.sampled_from(SOURCES),
    at=st.integers(min_value=0, max_value=10_000),
    cut=st.integers(min_value=0, max_value=20),
    insert=st.binary(max_size=12),
)
def test_byte_mutations(
    tmp_path_factory: Any, source: Path, at: int, cut: int, insert: bytes
) -> None:
    raw = source.read_bytes()
    at %= len(raw)
    path = tmp_path_factory.mktemp("bytes") / "inv.yml"
    path.write_bytes(raw[:at] + insert + raw[at + cut :])
    _accepts_or_refuses(path)
