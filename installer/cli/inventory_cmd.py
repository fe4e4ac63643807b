"""`installer inventory ...`: the inventory's JSON Schema and the derived view of a site."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from installer.cli.render import emit_json, is_json, out
from installer.cli.state import InventoryOption, OutputOption, begin
from installer.inventory import Inventory, inventory_schema, load_inventory
from installer.release import load_release
from installer.site import (
    cluster_names,
    hub_urls,
    pool_labels,
    pool_taints,
    preset_resources,
    preset_tolerations,
    site_image,
)

group = typer.Typer(help="The inventory's schema and what the installer derives from it.")


@group.command("schema")
def schema(
    output_file: Annotated[
        Path | None, typer.Option("--output-file", "-f", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Print the inventory's JSON Schema (draft 2020-12), for editors and CI linters."""
    begin("inventory schema", None)
    text = json.dumps(inventory_schema(), indent=2) + "\n"
    if output_file is None:
        typer.echo(text, nl=False)
    else:
        output_file.write_text(text, encoding="utf-8")


def derived(inv: Inventory) -> dict[str, Any]:
    """What the installer will do with an inventory: labels, taints, tolerations, names, URLs."""
    release = load_release()
    urls = hub_urls(inv)
    return {
        "hub": {
            "registry": urls.registry,
            "registry_push": urls.registry_push,
            "charts": urls.charts,
            "charts_push": urls.charts_push,
            "pypi": urls.pypi,
        },
        "images": {i.reference: site_image(inv, i.reference) for i in release.images},
        "clusters": [
            {
                "name": c.name,
                "dns_records": cluster_names(inv, c).records,
                "ingress_ips": [str(ip) for ip in c.ingress_ips],
                "node_pools": [
                    {
                        "name": p.name,
                        "labels": pool_labels(p),
                        "taints": [f"{t.key}={t.value}:{t.effect}" for t in pool_taints(p)],
                    }
                    for p in c.node_pools
                ],
                "presets": [
                    {
                        "name": p.name,
                        "pools": p.pools,
                        "resources": preset_resources(p),
                        "tolerations": [t.key for t in preset_tolerations(p, c)],
                    }
                    for p in c.presets
                ],
            }
            for c in inv.clusters
        ],
    }


@group.command("show")
def show(inventory: InventoryOption, output: OutputOption = None) -> None:
    """Show what the installer derives: node labels and taints per pool, each preset's pod
    resources and tolerations, DNS records, hub URLs and image rewrites."""
    begin("inventory show", output)
    inv = load_inventory(inventory)
    data = derived(inv)
    if is_json():
        emit_json({"ok": True, **data})
        return
    hub = data["hub"]
    out.print(
        f"hub: registry {hub['registry']} (pushes {hub['registry_push']})"
        f"  charts {hub['charts']} (uploads {hub['charts_push']})  pypi {hub['pypi']}"
    )
    for cluster in data["clusters"]:
        out.print(
            f"\n[bold]cluster {cluster['name']}[/]  DNS -> {', '.join(cluster['ingress_ips'])}"
        )
        for record in cluster["dns_records"]:
            out.print(f"  {record}")
        pools = Table(title="node pools", title_justify="left")
        for col in ("pool", "labels", "taints"):
            pools.add_column(col)
        for p in cluster["node_pools"]:
            pools.add_row(
                p["name"],
                "\n".join(f"{k}={v}" for k, v in p["labels"].items()),
                "\n".join(p["taints"]),
            )
        out.print(pools)
        presets = Table(title="presets", title_justify="left")
        for col in ("preset", "pools", "resources", "tolerations"):
            presets.add_column(col)
        for p in cluster["presets"]:
            presets.add_row(
                p["name"],
                ", ".join(p["pools"]),
                "\n".join(f"{k}={v}" for k, v in p["resources"].items()),
                "\n".join(p["tolerations"]),
            )
        out.print(presets)
