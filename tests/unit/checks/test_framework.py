"""The check framework: statuses, severities, requirements, skips, time limits, parallelism."""

from __future__ import annotations

import threading
import time

import pytest

from installer.checks.framework import (
    Check,
    Finding,
    Severity,
    Status,
    note,
    passed,
    problem,
    run_checks,
)
from installer.errors import EnvironmentProblem


def check(
    check_id: str,
    fn: object,
    *,
    severity: Severity = Severity.FAIL,
    requires: tuple[str, ...] = (),
    timeout_s: float = 5.0,
    target: str = "cluster/lab",
) -> Check:
    return Check(check_id, check_id, target, fn, severity, requires, timeout_s)  # type: ignore[arg-type]


def test_status_follows_finding_and_severity() -> None:
    report = run_checks(
        "preflight",
        [
            check("a.ok", lambda: passed("fine")),
            check("a.bad", lambda: problem("broken", "fix it")),
            check("a.meh", lambda: problem("odd"), severity=Severity.WARN),
            check("a.fyi", lambda: note("for your information")),
            check("a.lowered", lambda: problem("small", severity=Severity.WARN)),
            check(
                "a.not_raised", lambda: problem("x", severity=Severity.FAIL), severity=Severity.WARN
            ),
        ],
    )
    assert [r.status for r in report.results] == [
        Status.PASS,
        Status.FAIL,
        Status.WARN,
        Status.INFO,
        Status.WARN,
        Status.WARN,
    ]
    assert report.results[1].remedy == "fix it"
    assert not report.ok
    assert report.summary() == {"pass": 1, "fail": 1, "warn": 3, "info": 1, "skip": 0}


def test_warnings_fail_only_when_strict() -> None:
    checks = [check("w", lambda: problem("odd"), severity=Severity.WARN)]
    assert run_checks("preflight", checks).ok
    assert not run_checks("preflight", checks, strict=True).ok


def test_skip_by_id_and_pattern_with_reason() -> None:
    ran: list[str] = []

    def mark(name: str) -> Finding:
        ran.append(name)
        return passed("ok")

    report = run_checks(
        "preflight",
        [
            check("dns.wildcard", lambda: mark("dns")),
            check("vm.ports", lambda: mark("ports")),
            check("vm.disk", lambda: mark("disk")),
        ],
        skip={"dns.wildcard": "records come after install", "vm.p*": "checked by hand"},
    )
    assert ran == ["disk"]
    skipped = {r.id: r.message for r in report.results if r.status is Status.SKIP}
    assert skipped == {
        "dns.wildcard": "skipped by the inventory: records come after install",
        "vm.ports": "skipped by the inventory: checked by hand",
    }
    assert report.ok


def test_unknown_skip_id_is_a_warning() -> None:
    report = run_checks(
        "verify", [check("a", lambda: passed("ok"))], skip={"no.such": "x"}, known_ids=["b"]
    )
    (warning,) = [r for r in report.results if r.id == "checks.skip_unknown"]
    assert warning.status is Status.WARN and "no.such" in warning.message
    quiet = run_checks(
        "verify", [check("a", lambda: passed("ok"))], skip={"b": "x"}, known_ids=["b"]
    )
    assert [r.id for r in quiet.results] == ["a"]


def test_dependents_of_a_failed_check_are_not_run() -> None:
    ran: list[str] = []

    def sudo() -> Finding:
        ran.append("sudo")
        return passed("ok")

    report = run_checks(
        "preflight",
        [
            check("vm.sudo", sudo, requires=("vm.ssh",)),
            check("vm.ssh", lambda: problem("refused")),
        ],
    )
    assert ran == []
    by_id = {r.id: r for r in report.results}
    assert by_id["vm.sudo"].status is Status.SKIP
    assert "vm.ssh" in by_id["vm.sudo"].message
    assert by_id["vm.ssh"].status is Status.FAIL
    assert [r.id for r in report.results] == ["vm.sudo", "vm.ssh"]  # input order kept


def test_dependents_run_after_their_requirement_passes() -> None:
    order: list[str] = []
    lock = threading.Lock()

    def step(name: str) -> Finding:
        with lock:
            order.append(name)
        return passed(name)

    report = run_checks(
        "preflight",
        [
            check("c", lambda: step("c"), requires=("b",)),
            check("b", lambda: step("b"), requires=("a",)),
            check("a", lambda: step("a")),
        ],
    )
    assert order == ["a", "b", "c"]
    assert report.ok


def test_cycle_is_a_bug() -> None:
    with pytest.raises(ValueError, match="require each other"):
        run_checks(
            "preflight",
            [
                check("a", lambda: passed(""), requires=("b",)),
                check("b", lambda: passed(""), requires=("a",)),
            ],
        )


def test_time_limit_counts_per_check_and_others_still_report() -> None:
    release = threading.Event()

    def hang() -> Finding:
        release.wait(10)
        return passed("too late")

    started = time.monotonic()
    report = run_checks(
        "preflight",
        [check("slow", hang, timeout_s=0.3), check("fast", lambda: passed("ok"))],
    )
    elapsed = time.monotonic() - started
    release.set()
    slow, fast = report.results
    assert slow.status is Status.FAIL and "0.3s" in slow.message
    assert fast.status is Status.PASS
    assert elapsed < 3


def test_checks_run_in_parallel() -> None:
    barrier = threading.Barrier(8, timeout=5)

    def meet() -> Finding:
        barrier.wait()  # only passes when all eight run at once
        return passed("met")

    report = run_checks("verify", [check(f"p{i}", meet) for i in range(8)])
    assert report.ok


def test_installer_errors_become_failures_and_bugs_are_contained() -> None:
    def unreachable() -> Finding:
        raise EnvironmentProblem("cannot reach 10.0.0.1:22", remedy="check the network")

    def buggy() -> Finding:
        raise KeyError("oops")

    report = run_checks("preflight", [check("a", unreachable), check("b", buggy)])
    a, b = report.results
    assert (a.status, a.message, a.remedy) == (
        Status.FAIL,
        "cannot reach 10.0.0.1:22",
        "check the network",
    )
    assert b.status is Status.FAIL and "KeyError" in b.message


def test_json_form() -> None:
    report = run_checks("verify", [check("a", lambda: problem("bad", "fix", node="x"))])
    data = report.as_dict()
    assert data["ok"] is False and data["kind"] == "verify"
    (result,) = data["results"]
    assert result["id"] == "a" and result["status"] == "fail" and result["remedy"] == "fix"
    assert result["details"] == {"node": "x"}
    assert data["summary"]["fail"] == 1
