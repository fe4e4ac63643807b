"""The Ansible engine against a real ansible-playbook run on this machine (local connection)."""

from __future__ import annotations

import json
import shlex
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from installer.engines.ansible import (
    AnsibleEngine,
    AnsibleHost,
    FailureReason,
    PlaybookRun,
    Progress,
    TaskOutcome,
    inventory_document,
)
from installer.redact import REDACTOR
from tests.fixtures.playbooks import failed_result

PLAYBOOK = """
- name: Engine test
  hosts: targets
  gather_facts: false
  tasks:
    - name: Write a file
      ansible.builtin.copy:
        content: "hello\\n"
        dest: "{{ out_dir }}/hello.txt"
        mode: "0644"
    - name: Use a secret
      ansible.builtin.command:
        argv: [cat]
        stdin: "{{ lookup('ansible.builtin.file', secret_file) }}"
      changed_when: true
      no_log: true
    - name: Echo the secret without no_log
      ansible.builtin.debug:
        msg: "value {{ lookup('ansible.builtin.file', secret_file) }}"
    - name: Fail when asked
      ansible.builtin.fail:
        msg: "broken on purpose; remedy: do not ask"
      when: fail_now | bool
"""


KEY_BODY = "bm90LWEta2V5LWJvZHktdmFsdWU="


def _host(name: str = "local") -> AnsibleHost:
    return AnsibleHost(
        name=name,
        address="127.0.0.1",
        user="nobody",
        known_hosts_line="127.0.0.1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample",
        private_key=SecretStr(
            "-----BEGIN KEY-----\nbm90LWEta2V5LWJvZHktdmFsdWU=\n-----END KEY-----"
        ),
        become=False,
        vars={"ansible_connection": "local"},
    )


def _run(tmp_path: Path, *, fail: bool, check: bool = False) -> tuple[Any, list[Progress]]:
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    secret = "engine-test-secret-" + tmp_path.name
    REDACTOR.register(secret)
    (tmp_path / "secret").write_text(secret)
    (tmp_path / "out").mkdir(exist_ok=True)
    seen: list[Progress] = []
    host = AnsibleHost(**{**_host().__dict__, "python": sys.executable})
    result = AnsibleEngine().run(
        PlaybookRun(
            playbook=tmp_path / "play.yml",
            groups={"targets": [host]},
            run_dir=tmp_path / "run",
            extra_vars={
                "out_dir": str(tmp_path / "out"),
                "secret_file": str(tmp_path / "secret"),
                "fail_now": fail,
            },
            check=check,
        ),
        seen.append,
    )
    return result, seen


def test_inventory_pins_the_host_key_and_never_asks() -> None:
    doc = inventory_document({"aux_vm": [_host("vm")]}, Path("/pdd"))
    hostvars = doc["all"]["children"]["aux_vm"]["hosts"]["vm"]
    args = hostvars["ansible_ssh_common_args"]
    assert "-o StrictHostKeyChecking=yes" in args
    assert "-o UserKnownHostsFile=/pdd/known_hosts/vm" in args
    assert "-o GlobalKnownHostsFile=/dev/null" in args
    assert "-o BatchMode=yes" in args
    assert hostvars["ansible_ssh_private_key_file"] == "/pdd/secrets/vm.key"
    assert hostvars["ansible_python_interpreter"] == "/usr/bin/python3"


def test_a_host_behind_a_jump_host_pins_both_keys(tmp_path: Path) -> None:
    node = AnsibleHost(**{**_host("node").__dict__, "address": "10.0.9.9", "jump": _host("vm")})
    run = PlaybookRun(playbook=tmp_path / "p.yml", groups={"g": [node]}, run_dir=tmp_path / "r")
    pdd = AnsibleEngine().prepare(run)
    args = shlex.split(inventory_document(run.groups, pdd)["all"]["children"]["g"]["hosts"]
                       ["node"]["ansible_ssh_common_args"])  # fmt: skip
    assert f"UserKnownHostsFile={pdd}/known_hosts/node" in args
    (proxy,) = [a.removeprefix("ProxyCommand=") for a in args if a.startswith("ProxyCommand=")]
    jump = shlex.split(proxy)
    assert jump[0] == "ssh" and jump[-3:] == ["-W", "%h:%p", f"{_host().user}@{_host().address}"]
    assert f"UserKnownHostsFile={pdd}/known_hosts/node.jump" in jump
    assert "StrictHostKeyChecking=yes" in jump and "BatchMode=yes" in jump
    assert (pdd / "known_hosts" / "node.jump").read_text() == _host("vm").known_hosts_line + "\n"
    # The jump host's key as the engine wrote it when given as text, 0600 like the node's own.
    inline = AnsibleHost(**{**_host("vm").__dict__, "private_key_file": None,
                            "private_key": SecretStr("KEYTEXT")})  # fmt: skip
    node = AnsibleHost(**{**node.__dict__, "jump": inline})
    run = PlaybookRun(playbook=tmp_path / "p.yml", groups={"g": [node]}, run_dir=tmp_path / "r2")
    pdd = AnsibleEngine().prepare(run)
    assert (pdd / "secrets" / "node.jump.key").stat().st_mode & 0o777 == 0o600


def test_prepare_writes_private_files(tmp_path: Path) -> None:
    run = PlaybookRun(
        playbook=tmp_path / "p.yml", groups={"g": [_host("vm")]}, run_dir=tmp_path / "run"
    )
    pdd = AnsibleEngine().prepare(run)
    for path in (pdd / "secrets" / "vm.key", pdd / "known_hosts" / "vm", pdd / "env" / "extravars"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (pdd / "known_hosts" / "vm").read_text().startswith("127.0.0.1 ssh-ed25519 ")
    assert json.loads((pdd / "inventory" / "hosts.json").read_text())["all"]["children"]["g"]


def test_successful_run_counts_changes_and_hides_secrets(tmp_path: Path) -> None:
    result, seen = _run(tmp_path, fail=False)
    assert result.ok, result.failures
    assert result.hosts["local"].changed == 2
    assert [c.task for c in result.changed] == ["Write a file", "Use a secret"]
    assert (tmp_path / "out" / "hello.txt").read_text() == "hello\n"
    assert {p.kind for p in seen} >= {"play", "task", "changed", "ok"}
    # The key the engine wrote for the run is gone; no artifact holds the secret or key body.
    assert not (tmp_path / "run" / "ansible" / "secrets").exists()
    secret = (tmp_path / "secret").read_text()
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name == "stdout" for p in files)
    for path in files:
        text = path.read_text(errors="replace")
        assert secret not in text, path
        assert KEY_BODY not in text, path


def test_failed_task_is_a_result_with_its_message(tmp_path: Path) -> None:
    result, seen = _run(tmp_path, fail=True)
    assert not result.ok
    assert result.status == "failed"
    failure = result.first_failure
    assert failure.task == "Fail when asked"
    assert failure.message == "broken on purpose; remedy: do not ask"
    assert any(p.kind == "failed" for p in seen)


def test_events_the_runner_left_unread_still_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ansible-runner stops reading the play's output 5 s after it ends; on a loaded machine the
    last events (the failed task's) stay unread, as `<uuid>-partial.json` files. Here the runner
    is made to leave the failure unread that way: the result still names the failed task."""
    import ansible_runner

    real_run = ansible_runner.run

    def run_leaving_failures_unread(**kwargs: Any) -> Any:
        handler = kwargs["event_handler"]
        artifacts = Path(kwargs["private_data_dir"]) / "artifacts" / kwargs["ident"]

        def dropping(event: dict[str, Any]) -> bool:
            if event.get("event") == "runner_on_failed":
                partial = artifacts / "job_events" / f"{event['uuid']}-partial.json"
                partial.write_text(json.dumps(event), encoding="utf-8")
                return False
            return bool(handler(event))

        return real_run(**{**kwargs, "event_handler": dropping})

    monkeypatch.setattr(ansible_runner, "run", run_leaving_failures_unread)
    result, _ = _run(tmp_path, fail=True)
    assert result.status == "failed"
    failure = result.first_failure
    assert failure is not None, "the failed task's event was not read from the artifacts"
    assert failure.task == "Fail when asked"
    assert failure.message == "broken on purpose; remedy: do not ask"


def test_check_mode_changes_nothing(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, fail=False, check=True)
    assert result.ok
    assert result.check
    assert "Write a file" in [c.task for c in result.changed]
    assert not (tmp_path / "out" / "hello.txt").exists()


def test_an_operator_inventory_names_its_own_known_hosts_and_no_inline_key() -> None:
    inline = AnsibleHost(**{**_host("vm").__dict__, "private_key_file": None})
    doc = inventory_document(
        {"aux_vm": [inline]},
        Path("/state/ansible"),
        known_hosts=Path("/state/ansible/aux-vm.known_hosts"),
        inline_keys=False,
        group_vars={"aux_vm": {"hub_login": "installer"}},
    )
    group = doc["all"]["children"]["aux_vm"]
    hostvars = group["hosts"]["vm"]
    assert (
        "-o UserKnownHostsFile=/state/ansible/aux-vm.known_hosts"
        in (hostvars["ansible_ssh_common_args"])
    )
    assert "ansible_ssh_private_key_file" not in hostvars
    assert group["vars"] == {"hub_login": "installer"}


@pytest.mark.parametrize(
    ("unreachable", "failed", "reason", "message"),
    [
        (
            "Host key verification failed. ... SHA256:abcDEF+/= ...",
            None,
            FailureReason.HOST_KEY,
            "host key verification failed: the host presents SHA256:abcDEF+/=, not the pinned key",
        ),
        (
            "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@",
            None,
            FailureReason.HOST_KEY,
            "host key verification failed: the host presents another key than the pinned one",
        ),
        ("labops@10.0.0.2: Permission denied (publickey).", None, FailureReason.LOGIN, None),
        ("ssh: connect to host 10.0.0.2 port 22: No route", None, FailureReason.UNREACHABLE, None),
        (None, "sudo: a password is required", FailureReason.SUDO, None),
        (None, "port 5000 is taken. remedy: stop it", FailureReason.TASK, "port 5000 is taken."),
    ],
    ids=["host-key", "host-key-changed", "login", "unreachable", "sudo", "task"],
)
def test_the_engine_classifies_why_a_play_stopped(
    unreachable: str | None, failed: str | None, reason: FailureReason, message: str | None
) -> None:
    outcome = TaskOutcome("node-1", "Look", "role", unreachable or failed or "")
    result = failed_result(
        unreachable=[outcome] if unreachable else [], failures=[outcome] if failed else []
    )
    failure = result.failure
    assert failure is not None
    assert (failure.reason, failure.host, failure.task) == (reason, "node-1", "Look")
    if message is not None:
        assert failure.message == message
    assert failure.remedy == ("stop it" if reason is FailureReason.TASK else None)


def test_a_run_without_a_failed_task_is_classified_too() -> None:
    failure = failed_result(status="timeout").failure
    assert failure is not None and failure.reason is FailureReason.RUN
    assert failure.message == "ansible ended timeout"
    ok = failed_result(status="successful", rc=0)
    assert ok.failure is None
