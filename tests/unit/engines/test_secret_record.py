"""An unchanged stack secret costs no `pulumi config set` run (`SecretRecord`)."""

from __future__ import annotations

import stat
from pathlib import Path

from installer.engines.pulumi import SecretRecord, _ciphertext

CONFIG = """encryptionsalt: v1:salt-one
config:
  proj:args: {a: 1}
  proj:token:
    secure: v1:cipher-one
"""


def test_a_value_is_unchanged_only_with_the_ciphertext_it_was_set_with(tmp_path: Path) -> None:
    config = tmp_path / "Pulumi.lab.yaml"
    config.write_text(CONFIG)
    cipher = _ciphertext(config, "proj:token")
    assert cipher == "v1:salt-one|v1:cipher-one"
    assert _ciphertext(config, "proj:args") is None and _ciphertext(config, "proj:nope") is None

    record = SecretRecord(tmp_path / ".secrets.lab.json")
    assert not record.unchanged("proj:token", "s3cret", cipher)  # never set by us
    record.set("proj:token", "s3cret", cipher)
    record.save()
    assert stat.S_IMODE((tmp_path / ".secrets.lab.json").stat().st_mode) == 0o600
    assert "s3cret" not in (tmp_path / ".secrets.lab.json").read_text()

    again = SecretRecord(tmp_path / ".secrets.lab.json")
    assert again.unchanged("proj:token", "s3cret", cipher)
    assert not again.unchanged("proj:token", "other", cipher)  # the inventory's value moved
    config.write_text(CONFIG.replace("cipher-one", "cipher-two"))  # set by hand since
    assert not again.unchanged("proj:token", "s3cret", _ciphertext(config, "proj:token"))
    config.write_text(CONFIG.replace("salt-one", "salt-two"))  # the stack made again
    assert not again.unchanged("proj:token", "s3cret", _ciphertext(config, "proj:token"))
    config.write_text("config: {}\n")  # the key is gone
    assert not again.unchanged("proj:token", "s3cret", _ciphertext(config, "proj:token"))


def test_a_damaged_record_is_started_again(tmp_path: Path) -> None:
    path = tmp_path / ".secrets.lab.json"
    path.write_text("{not json")
    record = SecretRecord(path)
    assert record.keys == {} and len(record.salt) == 64
    assert not record.unchanged("proj:token", "s3cret", "v1:x|v1:y")
    record.save()
    assert SecretRecord(path).salt == record.salt
