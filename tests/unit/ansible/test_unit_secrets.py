"""A hub program's secrets stay out of its systemd unit (issue 21, item 15): systemd shows a
unit's `Environment=` lines to every user (`systemctl show`), so the unit names a root-only
environment file instead, and the play writes that file 0600 and restarts on its change.

The lab's VM runs supervisord (its own PID 1 is not systemd), so the templates and the tasks are
checked here as the play renders and orders them."""

from __future__ import annotations

import shlex
from pathlib import Path

import jinja2
import yaml

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = REPO / "templates" / "aux-vm"
PROGRAM_TASKS = REPO / "playbooks" / "roles" / "hub" / "common" / "tasks" / "program.yml"
SECRET = "s3cret-hub-password"


def _render(name: str, env: dict[str, str]) -> str:
    jinja = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False)  # noqa: S701
    jinja.filters["quote"] = shlex.quote
    return jinja.get_template(name).render(
        ansible_managed="managed",
        hub_program="chartmuseum",
        hub_program_argv=["/opt/onprem-hub/bin/chartmuseum", "--port=8080"],
        hub_program_user="onprem-hub",
        hub_program_dir="/var/lib/onprem-hub/charts",
        hub_program_env=env,
        hub_etc_dir="/etc/onprem-hub",
        hub_log_dir="/var/log/onprem-hub",
    )


def test_the_unit_names_an_environment_file_and_holds_no_secret() -> None:
    unit = _render(
        "systemd.service.j2", {"BASIC_AUTH_USER": "installer", "BASIC_AUTH_PASS": SECRET}
    )
    assert SECRET not in unit
    assert "Environment=" not in unit.replace("EnvironmentFile=", "")
    assert "EnvironmentFile=/etc/onprem-hub/env/chartmuseum.env" in unit.splitlines()
    envfile = _render("systemd-env.j2", {"BASIC_AUTH_USER": "installer", "BASIC_AUTH_PASS": SECRET})
    assert f'BASIC_AUTH_PASS="{SECRET}"' in envfile.splitlines()


def test_a_program_without_environment_has_no_environment_file() -> None:
    assert "EnvironmentFile" not in _render("systemd.service.j2", {})


def test_the_play_writes_the_file_root_only_before_the_unit_and_restarts_on_its_change() -> None:
    tasks = yaml.safe_load(PROGRAM_TASKS.read_text(encoding="utf-8"))
    names = [t["name"] for t in tasks]
    envfile = tasks[names.index("Write the environment of {{ hub_program }}")]
    assert envfile["ansible.builtin.template"]["mode"] == "0600"
    assert envfile["ansible.builtin.template"]["owner"] == "root"
    assert envfile["no_log"] is True
    folder = tasks[names.index("Create the folder of the programs' environments")]
    assert folder["ansible.builtin.file"]["mode"] == "0700"
    assert names.index("Write the environment of {{ hub_program }}") < names.index(
        "Start under systemd {{ hub_program }}"
    )
    start = tasks[names.index("Start under systemd {{ hub_program }}")]
    assert "hub_program_envfile is changed" in start["ansible.builtin.systemd_service"]["state"]
