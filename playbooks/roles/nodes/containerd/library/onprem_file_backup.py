#!/usr/bin/python
# Copyright: the onprem-installer authors. Apache-2.0.
"""Keep the originals of files a play is about to manage, and put them back on removal."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: onprem_file_backup
short_description: Keep the originals of the files a play manages, and put them back
description:
  - With C(state=present), before the play writes C(paths), records each path not recorded yet
    in a ledger under C(backup_dir): a copy of the file as it is (content, mode and owner), or
    that it did not exist, and the folders above it that did not exist either.
  - With C(state=restored), puts every recorded path back as the ledger says (the copy, or no
    file), removes the folders the play created when they are empty again, then the ledger.
  - A path is recorded once, so later runs never overwrite an original with the play's own file.
options:
  paths:
    description: Absolute paths the play is about to manage (C(state=present)).
    type: list
    elements: path
    default: []
  backup_dir:
    description: Where the ledger and the copies live (root only, 0700).
    type: path
    required: true
  state:
    description: C(present) records, C(restored) puts back.
    type: str
    choices: [present, restored]
    default: present
"""

RETURN = r"""
recorded:
  description: Paths newly recorded (C(state=present)).
  type: list
  returned: always
restored:
  description: Paths put back or removed (C(state=restored)).
  type: list
  returned: always
"""

import hashlib
import json
import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

LEDGER = "ledger.json"


def _load(backup_dir):
    path = os.path.join(backup_dir, LEDGER)
    if not os.path.exists(path):
        return {"version": 1, "files": {}, "dirs": []}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _save(backup_dir, ledger):
    os.makedirs(backup_dir, mode=0o700, exist_ok=True)
    os.chmod(backup_dir, 0o700)
    fd, tmp = tempfile.mkstemp(dir=backup_dir, prefix=".ledger.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(ledger, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(backup_dir, LEDGER))


def _missing_dirs(path):
    """The folders above `path` that do not exist, deepest first."""
    out = []
    parent = os.path.dirname(path)
    while parent and parent != "/" and not os.path.exists(parent):
        out.append(parent)
        parent = os.path.dirname(parent)
    return out


def _record(module, backup_dir, paths):
    ledger = _load(backup_dir)
    recorded = []
    for path in paths:
        if not os.path.isabs(path):
            module.fail_json(msg=f"{path}: not an absolute path")
        if path in ledger["files"]:
            continue
        if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
            module.fail_json(msg=f"{path}: not a regular file; the play manages files only")
        entry = {"existed": os.path.isfile(path)}
        if entry["existed"]:
            st = os.stat(path)
            entry.update(
                backup="files/" + hashlib.sha256(path.encode()).hexdigest(),
                mode=st.st_mode & 0o7777,
                uid=st.st_uid,
                gid=st.st_gid,
            )
        for folder in _missing_dirs(path):
            if folder not in ledger["dirs"]:
                ledger["dirs"].append(folder)
        recorded.append(path)
        if module.check_mode:
            continue
        if entry["existed"]:
            copy = os.path.join(backup_dir, entry["backup"])
            os.makedirs(os.path.dirname(copy), mode=0o700, exist_ok=True)
            shutil.copyfile(path, copy)
            os.chmod(copy, 0o600)
        ledger["files"][path] = entry
    if recorded and not module.check_mode:
        _save(backup_dir, ledger)
    return recorded


def _put_back(path, entry, backup_dir):
    """Put `path` back as `entry` says; True when that changed something."""
    if not entry["existed"]:
        if os.path.lexists(path):
            os.remove(path)
            return True
        return False
    copy = os.path.join(backup_dir, entry["backup"])
    with open(copy, "rb") as f:
        original = f.read()
    if os.path.isfile(path):
        st = os.stat(path)
        with open(path, "rb") as f:
            same = f.read() == original
        if same and (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (
            entry["mode"],
            entry["uid"],
            entry["gid"],
        ):
            return False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".onprem-restore.")
    with os.fdopen(fd, "wb") as f:
        f.write(original)
        f.flush()
        os.fsync(f.fileno())
    os.chown(tmp, entry["uid"], entry["gid"])
    os.chmod(tmp, entry["mode"])
    os.replace(tmp, path)
    return True


def _restore(module, backup_dir):
    if not os.path.exists(os.path.join(backup_dir, LEDGER)):
        return []
    ledger = _load(backup_dir)
    restored = []
    for path, entry in sorted(ledger["files"].items()):
        if module.check_mode:
            restored.append(path)
            continue
        if _put_back(path, entry, backup_dir):
            restored.append(path)
    if module.check_mode:
        return restored
    # Deepest first: a folder the play created goes once nothing is left in it.
    for folder in sorted(ledger["dirs"], key=lambda d: d.count("/"), reverse=True):
        if os.path.isdir(folder) and not os.listdir(folder):
            os.rmdir(folder)
            restored.append(folder)
    shutil.rmtree(backup_dir)
    return restored


def main():
    module = AnsibleModule(
        argument_spec={
            "paths": {"type": "list", "elements": "path", "default": []},
            "backup_dir": {"type": "path", "required": True},
            "state": {"type": "str", "choices": ["present", "restored"], "default": "present"},
        },
        supports_check_mode=True,
    )
    backup_dir = module.params["backup_dir"]
    try:
        if module.params["state"] == "present":
            recorded = _record(module, backup_dir, module.params["paths"])
            module.exit_json(changed=bool(recorded), recorded=recorded, restored=[])
        restored = _restore(module, backup_dir)
        module.exit_json(changed=bool(restored), recorded=[], restored=restored)
    except (OSError, ValueError) as exc:
        module.fail_json(msg=f"{backup_dir}: {exc}")


if __name__ == "__main__":
    main()
