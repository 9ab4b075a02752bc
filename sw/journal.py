"""Programming journal: an append-only record of a weight transfer or a training session
(docs/link.md, "Programming journal").

One JSON object per line. The first line is the header, written atomically (temporary file,
fsync, rename) before the first chunk is sent:

    {"format": "mcnn-journal", "version": 1, "session": "program" | "train", "device": {IDENTIFY},
     "plan_hash": "...", "params": {"chunk": ..., ...}, "chunks": n, "config": {...}}

then one record per event, each flushed and fsynced before the next frame leaves the host:

    {"k": "sent", "chunk": i, "seq": s, "frame": "<hex>"}     before chunk i's frame is written
                                                               (+ "sid": the link session, if any)
    {"k": "done", "chunk": i, "status": st, "answers": [...]}  its answer (the trailer's status)
    {"k": "note", "key": "...", "value": ...}                 a value a resumed session must reuse
    {"k": "end"}                                               the session is complete

A chunk with "sent" but no "done" is in doubt: its frame may or may not have executed. The
driver settles it by sending the journaled frame again, byte for byte, as the first frame of the
resumed session (the device replays its recorded answer, or executes the frame once). A torn last
line (the host killed in the middle of a write) is ignored and cut off before the next append.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from golden.fileio import InputError

FORMAT, VERSION = "mcnn-journal", 1


class JournalError(InputError):
    """The journal cannot be used (missing, exists, corrupt, or not this plan/device)."""


# the fields (and their JSON types) of each record kind, checked when a journal is loaded
_FIELDS = {"sent": {"chunk": int, "seq": int, "frame": str}, "done": {"chunk": int, "status": int, "answers": list},
           "note": {"key": str}, "end": {}}


def _well_formed(r: dict, fields: dict) -> bool:
    if any(not isinstance(r.get(f), t) or isinstance(r.get(f), bool) for f, t in fields.items()):
        return False
    if r["k"] == "sent":
        try:
            bytes.fromhex(r["frame"])
        except ValueError:
            return False
    if r["k"] == "done" and not all(isinstance(w, int) and not isinstance(w, bool) for w in r["answers"]):
        return False
    return r["k"] != "note" or "value" in r


def plan_hash(obj) -> str:
    """Hash of a plan: any JSON-able description (cells, image bytes as hex, parameters)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def _fsync_dir(path: Path):
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """Journal of one session. Journal.new(path) for a new session (the driver writes the header
    with start()); Journal.load(path) to resume one (start() then checks the header instead)."""

    def __init__(self, path, header=None, config=None, valid_bytes=0):
        self.path = Path(path)
        self.header = header
        self.config = dict(config or (header or {}).get("config") or {})
        self.sent, self.done, self.notes = {}, {}, {}
        self.complete = False
        self._valid = valid_bytes
        self._fd = None

    # ---- opening
    @classmethod
    def new(cls, path, config=None, force=False):
        p = Path(path)
        if p.exists() and not force:
            raise JournalError(f"{p}: journal exists (resume it with --resume, or overwrite with --force)")
        if p.is_dir():
            raise JournalError(f"{p}: is a directory")
        if p.exists() and not p.is_file():      # --force /dev/null would replace the device node itself
            raise JournalError(f"{p}: not a regular file (a device, FIFO or socket)")
        if not p.parent.is_dir():
            raise JournalError(f"{p}: directory {p.parent} does not exist")
        return cls(p, config=config)

    @classmethod
    def load(cls, path):
        p = Path(path)
        try:
            raw = p.read_bytes()
        except OSError as e:
            raise JournalError(f"{p}: cannot read the journal ({e.strerror})") from None
        lines = raw.split(b"\n")
        # lines[-1] is b"" after a complete last line, else the torn tail of an interrupted write
        recs, valid = [], 0
        for i, ln in enumerate(lines[:-1]):
            try:
                recs.append(json.loads(ln))
            except ValueError:
                raise JournalError(f"{p}: line {i + 1} is not JSON (the journal is corrupt)") from None
            valid += len(ln) + 1
        if not recs or not isinstance(recs[0], dict) or recs[0].get("format") != FORMAT:
            raise JournalError(f"{p}: not an mcnn journal (no header line)")
        if recs[0].get("version") != VERSION:
            raise JournalError(f"{p}: journal version {recs[0].get('version')}, this driver writes {VERSION}")
        if not isinstance(recs[0].get("config", {}), dict):
            raise JournalError(f"{p}: line 1: 'config' is {recs[0]['config']!r:.60}, expected an object")
        j = cls(p, header=recs[0], valid_bytes=valid)
        for i, r in enumerate(recs[1:], 2):
            j._apply(r, i)
        if len(j.pending) > 1:
            raise JournalError(f"{p}: chunks {sorted(j.pending)} all in doubt (one frame is outstanding at most)")
        return j

    def _apply(self, r, line):
        k = r.get("k") if isinstance(r, dict) else None
        if k in _FIELDS and not _well_formed(r, _FIELDS[k]):
            raise JournalError(f"{self.path}: line {line}: malformed record {r!r:.60} (the journal is corrupt)")
        if k == "sent":
            self.sent[r["chunk"]] = r
        elif k == "done":
            self.done[r["chunk"]] = r
        elif k == "note":
            self.notes[r["key"]] = r["value"]
        elif k == "end":
            self.complete = True
        else:
            raise JournalError(f"{self.path}: line {line}: unknown record {r!r:.60}")

    @property
    def resuming(self) -> bool:
        return self.header is not None

    @property
    def pending(self) -> list:
        """Chunks sent whose answer was never journaled (at most one)."""
        return [c for c in self.sent if c not in self.done]

    # ---- writing
    def start(self, session: str, device: dict, phash: str, params: dict, chunks: int):
        """New journal: write the header. Resumed journal: check that it is this plan (the driver
        checks the device with check_device() once the chunk in doubt is settled)."""
        want = {"session": session, "plan_hash": phash, "params": params, "chunks": chunks}
        if self.resuming:
            for key, v in want.items():
                if self.header.get(key) != v:
                    raise JournalError(f"{self.path}: journal {key} {self.header.get(key)!r:.60} differs from "
                                       f"this session's {v!r:.60} (not the same plan)")
            return
        self.header = {"format": FORMAT, "version": VERSION, **want, "device": dict(device), "config": self.config}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        with os.fdopen(fd, "wb") as f:          # (a fresh name: never a user's <journal>.tmp)
            f.write((json.dumps(self.header) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(self.path)
        self._valid = self.path.stat().st_size

    def check_device(self, device: dict):
        had = self.header.get("device") or {}
        diff = [k for k in had if device.get(k) != had[k]]
        if diff:
            k = diff[0]
            raise JournalError(f"{self.path}: the device's {k} is {device.get(k)!r}, the journal was written "
                               f"for {had[k]!r}: not the same device/bitstream")

    def append(self, rec: dict):
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY)
            os.ftruncate(self._fd, self._valid)       # cut a torn last line off
            os.lseek(self._fd, self._valid, os.SEEK_SET)
        data = (json.dumps(rec, separators=(",", ":")) + "\n").encode()
        os.write(self._fd, data)
        os.fsync(self._fd)
        self._valid += len(data)
        self._apply(rec, 0)

    def record_sent(self, chunk: int, seq: int, frame: bytes, sid=None):
        rec = {"k": "sent", "chunk": chunk, "seq": seq, "frame": frame.hex()}
        if sid is not None:
            rec["sid"] = sid          # the link session the frame belongs to (a link with sessions)
        self.append(rec)

    def record_done(self, chunk: int, status: int, answers, settled: bool = False):
        rec = {"k": "done", "chunk": chunk, "status": int(status), "answers": [int(w) for w in answers]}
        if settled:
            rec["settled"] = True
        self.append(rec)

    def note(self, key: str, value):
        self.append({"k": "note", "key": key, "value": value})

    def finish(self):
        if not self.complete:
            self.append({"k": "end"})

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
