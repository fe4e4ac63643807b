"""The inventory model as a whole: descriptions everywhere, secrets typed as references, the
example inventories' shape, quantities through the loader."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from installer.inventory import Inventory, inventory_schema, load_inventory
from installer.inventory.reference import render_markdown
from installer.inventory.types import SecretRef

REPO = Path(__file__).resolve().parents[3]
BASE = Path(__file__).with_name("base.yml")
EXAMPLES = REPO / "inventories"


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """Every model reachable from `root` through its fields' annotations."""
    seen: list[type[BaseModel]] = []

    def inner(annotation: Any) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in inner(arg)]

    def visit(model: type[BaseModel]) -> None:
        if model not in seen:
            seen.append(model)
            for info in model.model_fields.values():
                for found in inner(info.annotation):
                    visit(found)

    visit(root)
    return seen


MODELS = _models(Inventory)
FIELDS = [(m, name, info) for m in MODELS for name, info in m.model_fields.items()]


def _holds_secret_ref(annotation: Any) -> bool:
    if annotation is SecretRef:
        return True
    return any(_holds_secret_ref(a) for a in typing.get_args(annotation))


def test_the_walk_sees_the_whole_model() -> None:
    names = {m.__name__ for m in MODELS}
    assert {"Inventory", "Site", "AuxVm", "SshAccess", "Cluster", "NodePool", "PoolGpu"} <= names
    assert {"Preset", "PresetGpu", "PresetMig", "Storage", "Keycloak", "IdentityProvider"} <= names
    # The JSON Schema holds the same models and fields (no field hidden from editors).
    schema = inventory_schema()
    in_schema = len(schema["properties"]) + sum(
        len(d.get("properties", {})) for d in schema["$defs"].values()
    )
    assert in_schema == len(FIELDS)


@pytest.mark.parametrize(
    ("model", "name"),
    [(m, n) for m, n, _ in FIELDS],
    ids=[f"{m.__name__}.{n}" for m, n, _ in FIELDS],
)
def test_every_field_has_a_description(model: type[BaseModel], name: str) -> None:
    description = model.model_fields[name].description
    assert description and len(description.strip()) >= 5, f"{model.__name__}.{name}"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_model_says_what_it_is(model: type[BaseModel]) -> None:
    assert (model.__doc__ or "").strip(), model.__name__
    assert model.model_config.get("extra") == "forbid", model.__name__


SECRET_WORDS = ("password", "secret", "private_key", "ca_key", "token")


def test_secret_fields_are_references_and_references_are_secret_fields() -> None:
    by_name = {
        f"{m.__name__}.{n}": _holds_secret_ref(info.annotation)
        for m, n, info in FIELDS
        if any(word in n for word in SECRET_WORDS)
    }
    assert len(by_name) >= 5, by_name  # private_key, ca_key, admin_password, client_secret, ...
    assert [name for name, is_ref in by_name.items() if not is_ref] == []
    refs = {f"{m.__name__}.{n}" for m, n, info in FIELDS if _holds_secret_ref(info.annotation)}
    assert refs == set(by_name)


def test_a_secret_reference_never_shows_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INVENTORY_TEST_SECRET", "s3cr3t-value")
    value = SecretRef("env:INVENTORY_TEST_SECRET").resolve()
    assert "s3cr3t-value" not in f"{value} {value!r}"
    assert value.get_secret_value() == "s3cr3t-value"


def test_onprem_example_is_the_site_the_issue_describes() -> None:
    path = EXAMPLES / "onprem.example.yml"
    inv = load_inventory(path)
    (cluster,) = inv.clusters
    gpu_pools = [p for p in cluster.node_pools if p.gpu is not None]
    cpu_pools = [p for p in cluster.node_pools if p.gpu is None and p.jobs]
    assert len(gpu_pools) == 2 and len(cpu_pools) >= 1
    assert {p.name for p in gpu_pools} <= {n for pr in cluster.presets for n in pr.pools}
    assert any(pr.nvidia_gpu for pr in cluster.presets)
    assert cluster.storage.engine in ("cstor", "localpv-lvm", "localpv-hostpath")
    assert cluster.keycloak.mode == "in-cluster"
    assert inv.aux_vm.address is not None
    comments = [ln for ln in path.read_text().splitlines() if ln.lstrip().startswith("#")]
    assert len(comments) >= 10  # annotated


def test_multi_cluster_example_has_several_clusters() -> None:
    inv = load_inventory(EXAMPLES / "multi-cluster.example.yml")
    assert len(inv.clusters) >= 2
    assert len({c.name for c in inv.clusters}) == len(inv.clusters)


def test_quantities_reach_the_model(tmp_path: Path) -> None:
    text = BASE.read_text().replace("        cpu: 8\n", "        cpu: 7500m\n", 1)
    text = text.replace("memory: 32Gi", "memory: 120Gi", 1).replace("memory: 8Gi", "memory: 1.5G")
    path = tmp_path / "q.yml"
    path.write_text(text)
    cluster = load_inventory(path).clusters[0]
    assert cluster.node_pools[0].cpu == 7.5
    assert cluster.node_pools[0].memory == 120 * 2**30
    assert cluster.presets[0].memory == 1_500_000_000


def test_readme_points_at_the_generated_reference() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "docs/inventory.md" in readme
    reference = render_markdown()
    for model in MODELS:
        assert f"## {model.__name__}\n" in reference
