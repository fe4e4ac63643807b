"""The OpenEBS disk check on recorded outputs of blkid, lsblk and findmnt (the runner seam)."""

from __future__ import annotations

from installer.checks.gpu import CommandResult
from installer.checks.preflight_kube import evaluate_disk


class Host:
    """Answers each argv from a table; an argv not in it is a test bug."""

    def __init__(self, answers: dict[tuple[str, ...], CommandResult]) -> None:
        self.answers = answers

    def run(self, argv: list[str], *, timeout_s: float = 30.0) -> CommandResult:
        return self.answers[tuple(argv)]


DEV = "/dev/sdb"
IS_BLOCK = {("test", "-b", DEV): CommandResult(0, "")}
NO_SIGNATURE = {("sudo", "-n", "blkid", "-p", "-o", "export", DEV): CommandResult(2, "")}
ONE_LINE = {("lsblk", "-nro", "NAME,MOUNTPOINT", DEV): CommandResult(0, "sdb \n")}
NOT_MOUNTED = {("findmnt", "-rn", "-S", DEV): CommandResult(1, "")}


def test_raw_disk_passes() -> None:
    finding = evaluate_disk(DEV, Host({**IS_BLOCK, **NO_SIGNATURE, **ONE_LINE, **NOT_MOUNTED}))
    assert finding.ok, finding.message


def test_missing_device() -> None:
    finding = evaluate_disk(DEV, Host({("test", "-b", DEV): CommandResult(1, "")}))
    assert not finding.ok and "not a block device" in finding.message


def test_formatted_disk() -> None:
    blkid = CommandResult(0, f"DEVNAME={DEV}\nUUID=1234\nBLOCK_SIZE=4096\nTYPE=ext4\n")
    host = Host({**IS_BLOCK, ("sudo", "-n", "blkid", "-p", "-o", "export", DEV): blkid})
    finding = evaluate_disk(DEV, host)
    assert not finding.ok and "carries ext4" in finding.message and "wipefs" in finding.remedy


def test_partition_table() -> None:
    blkid = CommandResult(0, f"DEVNAME={DEV}\nPTUUID=ab\nPTTYPE=gpt\n")
    host = Host({**IS_BLOCK, ("sudo", "-n", "blkid", "-p", "-o", "export", DEV): blkid})
    assert "carries gpt" in evaluate_disk(DEV, host).message


def test_partitions_and_mounts() -> None:
    parts = {("lsblk", "-nro", "NAME,MOUNTPOINT", DEV): CommandResult(0, "sdb \nsdb1 /data\n")}
    assert (
        "partitions: sdb1"
        in evaluate_disk(DEV, Host({**IS_BLOCK, **NO_SIGNATURE, **parts})).message
    )
    mounted = {("findmnt", "-rn", "-S", DEV): CommandResult(0, "/mnt/x /dev/sdb xfs rw\n")}
    finding = evaluate_disk(DEV, Host({**IS_BLOCK, **NO_SIGNATURE, **ONE_LINE, **mounted}))
    assert finding.message == f"{DEV} is mounted at /mnt/x"


def test_blkid_failure_is_not_read_as_raw() -> None:
    blkid = {
        ("sudo", "-n", "blkid", "-p", "-o", "export", DEV): CommandResult(
            1, "", "sudo: a password is required"
        )
    }
    finding = evaluate_disk(DEV, Host({**IS_BLOCK, **blkid}))
    assert not finding.ok and "password is required" in finding.message
