"""How a report reads for people: statuses, remedies under the table, the verdict line."""

from __future__ import annotations

from pathlib import Path

import pytest

from installer.checks.framework import Check, Severity, note, passed, problem, run_checks
from installer.cli import checks_cmd
from installer.cli.render import out
from installer.cli.state import STATE, OutputFormat


@pytest.fixture(autouse=True)
def text_output() -> None:
    STATE.output, STATE.run = OutputFormat.TEXT, None


def test_table_remedies_and_verdict() -> None:
    report = run_checks(
        "preflight",
        [
            Check("vm.ssh", "VM reachable", "vm/10.0.0.2", lambda: passed("logged in")),
            Check("vm.disk", "disk", "vm/10.0.0.2", lambda: problem("/: 1 GiB free", "grow it")),
            Check("vm.clock", "clock", "vm/10.0.0.2", lambda: problem("+5s", "ntp"), Severity.WARN),
            Check("gpu.probe", "gpu", "pool/a100", lambda: note("labels only")),
        ],
        skip={"dns.wildcard": "later"},
        known_ids=["dns.wildcard"],
    )
    with out.capture() as captured:
        checks_cmd.render_report(report, Path("site.yml"))
    text = captured.get()
    for fragment in ("vm.ssh", "logged in", "/: 1 GiB free", "labels only", "+5s"):
        assert fragment in text
    assert "vm.disk [vm/10.0.0.2]: grow it" in text
    assert "vm.clock [vm/10.0.0.2]: ntp" in text
    assert text.rstrip().endswith("preflight failed: 1 pass, 1 fail, 1 warn, 1 info")
