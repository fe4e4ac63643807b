"""`installer auxvm ...`: the artifact hub VM outside bootstrap (which runs it as a phase).

`installer auxvm inventory` prepares what `playbooks/aux-vm.yml` needs (site CA and server
certificate, generated passwords, the pinned host key) and writes the Ansible inventory, for
operators who run the play with `ansible-playbook` themselves.
"""

from __future__ import annotations

import typer

from installer.cli.progress import event_printer
from installer.cli.render import emit_json, is_json, out
from installer.cli.state import STATE, InventoryOption, OutputOption, begin
from installer.inventory import load_inventory
from installer.phases.auxvm import PLAYBOOK, AuxVmPhase
from installer.phases.base import PhaseContext
from installer.state import StateDir

group = typer.Typer(help="The artifact hub VM: Ansible inventory for hand runs of the play.")


@group.command("inventory")
def inventory(inventory: InventoryOption, output: OutputOption = None) -> None:
    """Write the Ansible inventory of the hub play (with its PKI and passwords); run nothing."""
    begin("auxvm inventory", output)
    inv = load_inventory(inventory)
    assert STATE.run is not None
    ctx = PhaseContext(
        inventory=inv,
        inventory_path=inventory,
        state=StateDir(inv.site.state_dir),
        run_dir=STATE.run.folder,
        emit=(lambda _event: None) if is_json() else event_printer,
    )
    path = AuxVmPhase().write_inventory(ctx)
    if is_json():
        emit_json({"ok": True, "inventory": str(path), "playbook": str(PLAYBOOK)})
    else:
        out.print(f"ansible-playbook -i {path} {PLAYBOOK}", markup=False, soft_wrap=True)
