"""`installer validate`: check an inventory and summarise the site it describes."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from installer.cli.render import emit_json, is_json, out
from installer.cli.state import InventoryOption, OutputOption, begin
from installer.inventory import Inventory, load_inventory
from installer.inventory.types import format_bytes
from installer.site import cluster_names, hub_hostname


def summary(inv: Inventory) -> dict[str, Any]:
    """A JSON-ready summary of a valid inventory."""
    clusters = []
    for cluster in inv.clusters:
        clusters.append(
            {
                "name": cluster.name,
                "domain": cluster_names(inv, cluster).domain,
                "node_pools": [
                    {
                        "name": p.name,
                        "nodes": p.nodes,
                        "selector": p.selector,
                        "gpu": (
                            {"vendor": p.gpu.vendor, "model": p.gpu.model, "count": p.gpu.count}
                            if p.gpu
                            else None
                        ),
                        "preemptible": p.preemptible,
                    }
                    for p in cluster.node_pools
                ],
                "presets": [{"name": p.name, "pools": p.pools} for p in cluster.presets],
                "storage": cluster.storage.engine,
                "keycloak": cluster.keycloak.mode,
            }
        )
    return {
        "site": inv.site.name,
        "domain": inv.site.domain,
        "airgapped": inv.site.airgapped,
        "aux_vm": {"address": str(inv.aux_vm.address), "hostname": hub_hostname(inv)},
        "clusters": clusters,
    }


def validate(inventory: InventoryOption, output: OutputOption = None) -> None:
    """Check an inventory file: types, cross-field rules, references. Exit 2 when invalid."""
    begin("validate", output)
    inv = load_inventory(inventory)
    data = summary(inv)
    if is_json():
        emit_json({"ok": True, "inventory": str(inventory), **data})
        return
    out.print(f"[green]valid:[/] {inventory}: site {inv.site.name} ({inv.site.domain})")
    for cluster in inv.clusters:
        table = Table(title=f"cluster {cluster.name}", title_justify="left")
        for col in ("pool", "nodes", "cpu", "memory", "gpu", "presets"):
            table.add_column(col)
        for pool in cluster.node_pools:
            nodes = ", ".join(pool.nodes) if pool.nodes else _selector(pool.selector or {})
            gpu = f"{pool.gpu.count} x {pool.gpu.model}" if pool.gpu else "-"
            presets = ", ".join(p.name for p in cluster.presets if pool.name in p.pools) or "-"
            table.add_row(
                pool.name, nodes, f"{pool.cpu:g}", format_bytes(pool.memory), gpu, presets
            )
        out.print(table)


def _selector(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items())
