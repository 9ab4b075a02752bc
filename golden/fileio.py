"""Files mcnn writes and the input errors it reports.

Every output (weights, reports, plots) goes through `write_atomic`: the bytes go to a temporary
file in the target's directory, are fsynced and then renamed onto the target, so a reader never
sees half a file and an interrupted run leaves the old file as it was. An existing target is
replaced only with force=True (the CLI's --force); `check_outputs` refuses existing targets before
any work starts, so a long run does not end in a refusal. sw/ and tb/ import this module, golden/
imports nothing of theirs.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable


class InputError(ValueError):
    """Bad input from the user (argument, file, data): the CLI prints the one-line message and
    exits with code 2. A ValueError, so callers that catch ValueError keep working."""


class OutputExists(InputError):
    pass


def _first_existing(p: Path) -> Path:
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_outputs(paths: Iterable, force: bool = False, option: str = "--force"):
    """Raise InputError if any path cannot be written: an existing file without force, a
    directory, or a parent that is a file or not writable. Touches nothing."""
    for p in map(Path, paths):
        if p.is_dir():
            raise InputError(f"{p}: is a directory, expected a file name for the output")
        if p.exists() and not p.is_file():       # --force /dev/null would replace the device node itself
            raise InputError(f"{p}: not a regular file (a device, FIFO or socket), expected a file name for the output")
        if p.exists() and not force:
            raise OutputExists(f"{p}: exists, not overwritten (pass {option} to replace it)")
        base = _first_existing(p.parent)
        if not base.is_dir():
            raise InputError(f"{p}: {base} is not a directory")
        if not os.access(base, os.W_OK | os.X_OK):
            raise InputError(f"{p}: directory {base} is not writable")


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def write_atomic(path, data: bytes | str | Callable, force: bool = False) -> Path:
    """Write `data` (bytes, text, or a function writing to a binary file object) to `path`
    atomically: temporary file in the same directory, fsync, rename. Without force an existing
    `path` is never replaced (OutputExists), also when it appears while writing."""
    path = Path(path)
    check_outputs([path], force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        if force:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _link_new(tmp: str, path: Path):
    """Rename tmp to path only if path does not exist (a hard link fails on an existing name)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise OutputExists(f"{path}: exists, not overwritten (pass --force to replace it)") from None
    except OSError:                       # no hard links on this file system: check, then rename
        if path.exists():
            raise OutputExists(f"{path}: exists, not overwritten (pass --force to replace it)") from None
        os.replace(tmp, path)


def _fsync_dir(d: Path):
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def with_suffix_kept(stem, suffix: str) -> Path:
    """`stem` + suffix, keeping every dot of the stem (runs/model.v2 -> runs/model.v2.npz, where
    Path.with_suffix would give runs/model.npz)."""
    stem = Path(stem)
    if stem.name in ("", ".."):           # "", ".", "/", "..": a directory, no file name to extend
        raise InputError(f"{str(stem)!r}: expected a file stem such as runs/model, not a directory")
    return stem.with_name(stem.name + suffix)
