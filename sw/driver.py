"""Host driver of the mcnn board: `Board`, the device (link + controller RTL)
over a link transport (docs/link.md).

    from sw.driver import Board
    with Board.serial("/dev/ttyUSB0") as c:          # or Board(SimTransport(...)), Board.model()
        c.identify()                                 # {'id': 0x4D434E4E, 'version': ..., 'n_pe': 8, ...}
        c.write_csr("link_scratch", 0x1234)
        c.read_csr("link_scratch")                   # -> 0x1234
        c.status()                                   # controller status word, link flags and counters
        c.stream_command([w0, w1, ...])              # -> the controller's response words

    # the controller (STREAM command set of rtl/host.py, constants in sw/host_proto.py)
        c.parameters()                               # identity + image_words, classes, result_words, ...
        c.program_weights(cells_or_plan)             # write-verify report per cell
        c.read_conductances([(pe, row, bl), ...])    # verify-read codes (20 nA)
        c.infer(images, labels)                      # classes, logits, p, delta
        c.train_fc(batches, labels, eta=0.01)        # hybrid training of the FC layer: per-batch report
        c.read_counters()                            # cycles, pulses, verify reads, status, ...

CSR names and addresses come from sw/csr_map.py, generated from the RTL's map (rtl/csr.py);
open() checks the device's map hash against it. Every method either returns its result or
raises a sw.link.LinkError subclass that says what failed (LinkTimeout, DeviceError subclasses,
ProtocolError, MapMismatch).
"""
from __future__ import annotations

import os
import struct

from typing import NamedTuple

from golden.fileio import InputError  # noqa: F401  (bad driver input: a cell, pixel, label or image size)
from sw import csr_map, host_proto
from sw.link import RESET_CONTROLLER, RESET_COUNTERS, Cmd, Link, LinkError, LinkTimeout, ProtocolError
from sw.transport import ModelTransport, SerialTransport

ID_MAGIC = csr_map.REGISTERS["link_id"].reset
VERSION_MAJOR = csr_map.REGISTERS["link_version"].reset >> 16


class MapMismatch(LinkError):
    """The device is not an mcnn design, or its CSR map differs from sw/csr_map.py."""


class HostCommandError(LinkError):
    """The controller's host bridge answered a STREAM command with an error status (trailer)."""

    def __init__(self, op, status, answered, detail="", answers=()):
        self.op, self.status, self.answered = op, status, answered
        self.answers = list(answers)     # the answer words before the trailer (refused cells: REFUSED bit)
        sname = host_proto.STATUS_NAMES.get(status, f"status {status}")
        oname = next((n for n, c in host_proto.OPS.items() if c == op), f"op {op:#04x}")
        super().__init__(f"{oname}: the controller answered {sname} after {answered} items"
                         + (f" -- {detail}" if detail else ""))


class TransferError(LinkError):
    """A weight transfer or training session stopped. .results: every result so far in plan order
    (CellResult for a transfer, the finished batches' reports for training); .cell: (index, cell)
    the error names, or None; .chunk: the chunk it stopped in. The cause is __cause__; with a
    journal the same results are on disk and `resume` finishes the session."""

    def __init__(self, msg, results, cell=None, chunk=None):
        Exception.__init__(self, msg)
        self.results, self.cell, self.chunk = results, cell, chunk

    @staticmethod
    def of(cause, msg, results, cell=None, chunk=None):
        """The error for `cause`: a TransferTimeout (also a LinkTimeout) when the link timed out."""
        if isinstance(cause, LinkTimeout):
            e = TransferTimeout(msg, results, cell, chunk)
            e.cmd, e.seq, e.attempts, e.problems = cause.cmd, cause.seq, cause.attempts, cause.problems
            return e
        return TransferError(msg, results, cell, chunk)


class TransferTimeout(TransferError, LinkTimeout):
    """A TransferError whose cause is a LinkTimeout: the last chunk may or may not have executed
    (with a journal, resume settles it)."""


class _Plan(NamedTuple):
    params: dict
    chunks: list          # [(op, items, count)]: one STREAM frame each


class _Tap:
    """Transport wrapper: `hook(frame)` runs before every write reaches the device (the journal's
    "sent" record, or the check of a resent frame); an exception in it stops the write."""

    def __init__(self, inner, hook):
        self.inner, self.hook = inner, hook

    def write(self, data):
        self.hook(bytes(data))
        self.inner.write(data)

    def read(self, timeout):
        return self.inner.read(timeout)

    def close(self):
        self.inner.close()


class CellResult(NamedTuple):
    """Write-verify result of one cell (golden.write_verify.VerifyResult + the cell)."""
    pe: int
    row: int
    bl: int
    target: int
    ok: bool
    pulses: int
    final_code: int


def _words(payload: bytes, cmd) -> list:
    if len(payload) % 4:
        raise ProtocolError(f"{Cmd(cmd).name}: response of {len(payload)} bytes is not whole u32 words")
    return list(struct.unpack(f"<{len(payload) // 4}I", payload))


class Board:
    """The board seen from the host: the commands of docs/link.md over `transport`."""

    def __init__(self, transport, *, timeout: float = 1.0, deadline: float | None = None, retries: int | None = None,
                 seq: int | None = None, on_attempt=None, resolve_tries: int = 0):
        """timeout: seconds an attempt waits for the answer; deadline: seconds a command is retried
        (with backoff, the same frame) before LinkTimeout -- None: Link's default (30 s, at least 10
        timeouts); retries: an optional upper bound on the retries too (None: the deadline alone);
        resolve_tries: extra deadline rounds (Link.resolve) for a STREAM command after a LinkTimeout."""
        self.transport = transport
        self.resolve_tries = resolve_tries   # STREAM commands: resolve() rounds after a LinkTimeout
        self.link = Link(transport, timeout=timeout, deadline=deadline, retries=retries, seq=seq,
                         on_attempt=on_attempt)
        self.info = None
        self._params = None

    @classmethod
    def serial(cls, port: str, baudrate: int = 115200, **kw):
        return cls(SerialTransport(port, baudrate), **kw)

    @classmethod
    def model(cls, model=None, **kw):
        from sw.devmodel import DeviceModel
        return cls(ModelTransport(model or DeviceModel()), **kw)

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()

    def open(self, check_map: bool = True):
        """Synchronise with the device and identify it. The first frame is a PING with a random
        nonce, so it can never be mistaken for a repeat of the previous session's last frame."""
        self.ping(os.urandom(8))
        self.info = self.identify()
        if self.info["id"] != ID_MAGIC:
            raise MapMismatch(f"ID magic {self.info['id']:#010x}, expected {ID_MAGIC:#010x}: not an mcnn device")
        if self.info["version"] >> 16 != VERSION_MAJOR:
            raise MapMismatch(f"link protocol {self.info['version'] >> 16}.{self.info['version'] & 0xFFFF}, "
                              f"this driver speaks {VERSION_MAJOR}.x")
        if check_map and self.info["map_hash"] != csr_map.MAP_HASH:
            raise MapMismatch(f"CSR map hash {self.info['map_hash']:#010x} != sw/csr_map.py {csr_map.MAP_HASH:#010x}: "
                              "regenerate sw/csr_map.py (python -m rtl.hostgen) for this bitstream")
        self.link.parser.max_len = max(self.info["max_response"], 4)
        self.link.max_payload = self.info["max_payload"]
        return self

    def close(self):
        self.transport.close()

    # ---- commands
    def ping(self, payload: bytes = b"") -> bytes:
        got = self.link.transact(Cmd.PING, payload)
        if got != bytes(payload):
            raise ProtocolError(f"PING: echo of {len(got)} bytes differs from the {len(payload)} sent")
        return got

    def _window(self, cmd, window: str) -> dict:
        base, n = csr_map.WINDOWS[window]
        words = _words(self.link.transact(cmd), cmd)
        if len(words) != n:
            raise ProtocolError(f"{Cmd(cmd).name}: {len(words)} words, expected {n}")
        return {csr_map.BY_ADDR[base + i].name.removeprefix("link_"): w for i, w in enumerate(words)}

    def identify(self) -> dict:
        """Identity and build parameters: id, version, map_hash, n_pe, rows, bls, input_bits,
        adc_bits, max_payload, max_response."""
        return self._window(Cmd.IDENTIFY, "link_identify")

    def status(self) -> dict:
        """ctrl_status, flags and the link's counters (crc_errors, framing_errors, ...)."""
        return self._window(Cmd.STATUS, "link_status")

    def link_bytes(self) -> dict:
        """The link's byte counters (link_rx_bytes, link_tx_bytes; 32-bit, wrapping), one CSR_READ:
        rx_bytes includes this read's request, tx_bytes excludes its response (counted since the
        device's reset or RESET of its counters); and the host's own counts since this Link began,
        this exchange included (host_tx_bytes, host_rx_bytes: LinkStats bytes_written, bytes_read)."""
        rx, tx = self.read_csr("link_rx_bytes", 2)
        st = self.link.stats
        return {"rx_bytes": rx, "tx_bytes": tx, "host_tx_bytes": st.bytes_written, "host_rx_bytes": st.bytes_read}

    def reset(self, controller: bool = True, counters: bool = False) -> None:
        flags = (RESET_CONTROLLER if controller else 0) | (RESET_COUNTERS if counters else 0)
        self.link.transact(Cmd.RESET, struct.pack("<I", flags))

    @staticmethod
    def addr(reg) -> int:
        """Word address of a register given by name ('link_scratch', 'LINK_SCRATCH') or address."""
        if isinstance(reg, int):
            return reg
        r = csr_map.REGISTERS.get(str(reg).lower())
        if r is None:
            raise KeyError(f"no CSR named {reg!r} in sw/csr_map.py")
        return r.addr

    def read_csr(self, reg, count: int | None = None):
        """One register -> int; with count=n, n consecutive registers -> list (read in as many
        CSR_READs as the device's max_response needs)."""
        n = 1 if count is None else count
        a, words = self.addr(reg), []
        per = max(1, (self.info or {}).get("max_response", 1024) // 4)
        while True:      # count 0 too is sent: the device refuses it (BAD_ARG)
            k = min(per, n - len(words))
            got = _words(self.link.transact(Cmd.CSR_READ, struct.pack("<HH", a + len(words), k)), Cmd.CSR_READ)
            if len(got) != k:
                raise ProtocolError(f"CSR_READ: {len(got)} words, expected {k}")
            words += got
            if len(words) >= n:
                break
        return words[0] if count is None else words

    def write_csr(self, reg, value, check: bool = True) -> None:
        """Write one value, or a list of values to consecutive registers. check=True refuses
        values that do not fit the register and writes to read-only registers before sending."""
        values = [value] if isinstance(value, int) else list(value)
        a = self.addr(reg)
        if check:
            for i, v in enumerate(values):
                r = csr_map.BY_ADDR.get(a + i)
                if r is None:
                    raise KeyError(f"no CSR at address {a + i:#x}")
                if r.access == "ro":
                    raise ValueError(f"{r.name} is read-only")
                if not 0 <= v < (1 << r.width):
                    raise ValueError(f"{r.name}: {v:#x} does not fit {r.width} bits")
        self.link.transact(Cmd.CSR_WRITE, struct.pack(f"<HH{len(values)}I", a, 0, *[v & 0xFFFFFFFF for v in values]))

    def stream_command(self, words, timeout: float | None = None) -> list:
        """Send payload words to the controller's command stream; return its response words.
        (The controller top defines what the words mean; this is the transport for them.)"""
        words = [int(w) & 0xFFFFFFFF for w in words]
        if not words:
            raise ValueError("stream_command needs at least one word")
        try:
            payload = self.link.transact(Cmd.STREAM, struct.pack(f"<{len(words)}I", *words), timeout=timeout)
        except LinkTimeout:
            # it may or may not have run (PROGRAM, TRAIN, FINISH change the array): settle it by
            # sending the same frame again (Link.resolve) -- executed exactly once either way
            if not self.resolve_tries:
                raise
            payload = self._resolve()
        return _words(payload, Cmd.STREAM)

    def _resolve(self) -> bytes:
        for k in range(self.resolve_tries):
            try:
                return self.link.resolve()
            except LinkTimeout:
                if k == self.resolve_tries - 1:
                    raise

    # ---- the controller: STREAM command set (rtl/host.py; constants sw/host_proto.py)
    def host_command(self, op: int, items=(), count: int | None = None, timeout: float | None = None) -> list:
        """One host-bridge command: header (op, count) + item words -> the answer words (trailer
        checked: op echoed, status OK, `expect` answers). HostCommandError on an error status."""
        items = [int(w) & 0xFFFFFFFF for w in items]
        words = self.stream_command([*self._header(op, items, count), *items], timeout=timeout)
        if not words:
            raise ProtocolError("host command: empty response (no trailer)")
        t = words[-1]
        t_op, t_st, t_n = (host_proto.get(t, host_proto.TRAILER[f]) for f in ("op", "status", "count"))
        if t_op != op:
            raise ProtocolError(f"host command {op:#04x}: trailer op {t_op:#04x}, expected {op:#04x}")
        if t_st != host_proto.STATUS["OK"][0]:
            raise HostCommandError(op, t_st, t_n, answers=words[:-1])
        return words[:-1]

    @staticmethod
    def _header(op, items, count=None) -> tuple:
        n = len(items) if count is None else count
        return (host_proto.put(host_proto.HEADER["op"], op) | host_proto.put(host_proto.HEADER["count"], n),)

    def _max_words(self):
        info = self.info or {}
        return (min(info.get("max_payload", 1024), info.get("max_response", 1024)) // 4) - 1

    def parameters(self) -> dict:
        """identify() plus the controller's design parameters (ctrl_params window): image_words,
        classes, result_words, host_version. Checks the command set's major version."""
        base, n = csr_map.WINDOWS["ctrl_params"]
        words = self.read_csr(base, n)
        p = {csr_map.BY_ADDR[base + i].name.removeprefix("ctrl_"): w for i, w in enumerate(words)}
        if p["host_version"] >> 16 != host_proto.VERSION >> 16:
            raise MapMismatch(f"host command set {p['host_version'] >> 16}.x, this driver speaks "
                              f"{host_proto.VERSION >> 16}.x")
        self._params = p
        return {**(self.info or self.identify()), **p}

    def _p(self):
        if self._params is None:
            self.parameters()
        return self._params

    def read_counters(self) -> dict:
        """The controller's counters (ctrl_counters window): cycles, timestamp, slot_reads, conv_rounds,
        lane_idle, set_pulses, reset_pulses, verify_reads, host_reads, status, overrun, busy."""
        base, n = csr_map.WINDOWS["ctrl_counters"]
        words = self.read_csr(base, n)
        return {csr_map.BY_ADDR[base + i].name.removeprefix("ctrl_"): w for i, w in enumerate(words)}

    def set_learning(self, eta_m: int | None = None, eta_sh: int | None = None, th_code: int | None = None):
        """Learning parameters of hybrid training (ctrl_eta_m, ctrl_eta_sh, ctrl_th_code)."""
        for name, v in (("ctrl_eta_m", eta_m), ("ctrl_eta_sh", eta_sh), ("ctrl_th_code", th_code)):
            if v is not None:
                self.write_csr(name, int(v))

    @staticmethod
    def _cell_word(pe, row, bl, target=0):
        C = host_proto.CELL
        return (host_proto.put(C["pe"], pe) | host_proto.put(C["row"], row)
                | host_proto.put(C["bl"], bl) | host_proto.put(C["target"], target))

    def check_cells(self, cells, with_target: bool = True, device: dict | None = None) -> list:
        """Cells [(pe, row, bl[, target])] as int tuples, each checked against the array's IDENTIFY
        parameters (n_pe, rows, bls) and the target field; InputError naming the first bad cell."""
        return Board.cells_within(cells, device or self.info or self.identify(), with_target)

    @staticmethod
    def cell_limits(dev: dict) -> tuple:
        """((field, largest value), ...) of a cell word on a device of dimensions dev = {n_pe, rows, bls}."""
        tmax = (1 << host_proto.CELL["target"][1]) - 1
        return (("pe", dev["n_pe"] - 1), ("row", dev["rows"] - 1), ("bl", dev["bls"] - 1), ("target", tmax))

    @staticmethod
    def cells_within(cells, dev: dict, with_target: bool = True) -> list:
        """check_cells against the dimensions dev = {n_pe, rows, bls} (no device needed)."""
        limits = Board.cell_limits(dev)
        out = []
        for i, c in enumerate(cells):
            c = tuple(c)
            if len(c) != (4 if with_target else 3) and not (not with_target and len(c) == 4):
                raise InputError(f"cell {i} {c!r}: expected (pe, row, bl{', target' if with_target else ''})")
            if not with_target:
                c = c[:3]
            try:
                v = tuple(int(x) for x in c)
            except (TypeError, ValueError):
                raise InputError(f"cell {i} {c!r}: not integers") from None
            for (name, hi), x, y in zip(limits, v, c):
                if x != y or not 0 <= x <= hi:
                    raise InputError(f"cell {i} ({', '.join(f'{n} {a}' for (n, _), a in zip(limits, c))}): "
                                     f"{name} {y} outside 0..{hi} (the device: {dev['n_pe']} PEs x {dev['rows']} "
                                     f"rows x {dev['bls']} bit lines)")
            out.append(v)
        return out

    # ---- journaled sessions (docs/link.md, "Programming journal")
    def _session(self, journal, session, extra, params_fn, chunks_fn, timeout, check=None) -> _Plan:
        """The chunks of a session. New: open, params_fn(device) (checks the inputs), write the
        journal's header. Resumed: check(journal's device) and the plan against the header, settle
        the chunk in doubt FIRST (any other frame would erase the device's record of it; nothing is
        sent before it), then open and check the device. The plan's hash covers every chunk's words
        and `extra` (settings the chunks do not carry)."""
        from sw.journal import plan_hash
        if journal is None or not journal.resuming:
            if self.info is None:
                self.open()
            params = params_fn(self.info)
            plan = _Plan(params, chunks_fn(params))
            if journal is not None:
                journal.start(session, self.info, plan_hash([plan.chunks, extra]), params, len(plan.chunks))
            return plan
        params = journal.header["params"]
        if check is not None:
            check(journal.header["device"])                 # the inputs, against the journal's device
        plan = _Plan(params, chunks_fn(params))
        journal.start(session, journal.header["device"], plan_hash([plan.chunks, extra]), params, len(plan.chunks))
        for k in journal.pending:
            self._settle(journal, k, plan.chunks[k], timeout)
        if self.info is None:
            self.open()
        journal.check_device(self.info)
        return plan

    def _settle(self, journal, k, chunk, timeout):
        """Send chunk k's journaled frame again, byte for byte (same SEQ): the device replays its
        recorded answer if it executed it, else executes it now -- once either way."""
        from sw.journal import JournalError
        rec = journal.sent[k]
        frame = bytes.fromhex(rec["frame"])

        def same(f):          # every write of the settlement (retries included) must be that frame
            if f != frame:
                raise JournalError(f"{journal.path}: chunk {k} is in doubt and the driver would send another "
                                   "frame than the journaled one (another driver or link session?); not sent")
        self.link.seq = rec["seq"]
        if rec.get("sid") is not None:     # a link with sessions: the frame's session
            self.link.sid = rec["sid"]
        self._send_journaled(journal, k, chunk, timeout, same, settled=True)

    def _send_journaled(self, journal, k, chunk, timeout, hook, settled=False):
        op, items, count = chunk
        tr = self.link.transport
        self.link.transport = _Tap(tr, hook)
        try:
            ans = self.host_command(op, items, count=count, timeout=timeout)
        except HostCommandError as e:
            journal.record_done(k, e.status, e.answers, settled)
            raise
        finally:
            self.link.transport = tr
        journal.record_done(k, host_proto.STATUS["OK"][0], ans, settled)
        return ans

    def _chunk(self, journal, k, chunk, timeout) -> list:
        """The answers of chunk k: from the journal when they are there, else sent (with a journal:
        its frame recorded, fsynced, before it leaves, its answers as they arrive)."""
        op, items, count = chunk
        if journal is None:
            return self.host_command(op, items, count=count, timeout=timeout)
        rec = journal.done.get(k)
        if rec is not None:
            if rec["status"] != host_proto.STATUS["OK"][0]:
                raise HostCommandError(op, rec["status"], len(rec["answers"]), "journaled", answers=rec["answers"])
            return rec["answers"]
        seq, payload, last = self.link.seq, struct.pack(f"<{len(items) + 1}I", *self._header(op, items, count),
                                                        *items), []

        def record(f):        # the frame carrying this chunk (not a session-opening one), once per distinct frame
            if payload in f and f not in last:
                journal.record_sent(k, seq, f, getattr(self.link, "sid", None))
                last.append(f)
        return self._send_journaled(journal, k, chunk, timeout, record)

    # ---- weight transfer
    def program_cells(self, cells, timeout: float | None = None, journal=None) -> list:
        """Closed-loop write-verify of cells [(pe, row, bl, target_code)] (target: verify code,
        20 nA) -> [CellResult] in order (ok, pulses, final_code; ok False = failed, never skipped).
        Every cell is checked against the array before anything is sent (InputError). journal: a
        sw.journal.Journal (new: records every chunk; loaded: resumes the transfer it records).
        Any failure raises TransferError carrying every result so far (.results)."""
        R = host_proto.PROG_RES
        got = {}

        def check(dev):
            cells[:] = self.check_cells(raw, device=dev)

        def params(dev):
            check(dev)
            return {"chunk": self._max_words()}

        raw, cells = list(cells), []

        def chunks(p):
            st = p["chunk"]
            return [(host_proto.PROGRAM, [self._cell_word(*c) for c in cells[i:i + st]], None)
                    for i in range(0, len(cells), st)]

        def results():
            out = []
            for k in range(len(got)):
                base = k * step
                out += [CellResult(*cells[base + j], bool(host_proto.get(w, R["ok"])), host_proto.get(w, R["pulses"]),
                                   host_proto.get(w, R["final_code"]))
                        for j, w in enumerate(got[k]) if not w & host_proto.REFUSED]
            return out
        step, k = 0, 0
        try:
            plan = self._session(journal, "program", None, params, chunks, timeout, check)
            step = plan.params["chunk"]
            for k, ch in enumerate(plan.chunks):
                ans = self._chunk(journal, k, ch, timeout)
                if len(ans) != len(ch[1]):
                    raise ProtocolError(f"PROGRAM: {len(ans)} results for {len(ch[1])} cells")
                got[k] = ans
        except HostCommandError as e:
            got[k] = e.answers
            bad = next((j for j, w in enumerate(e.answers) if w & host_proto.REFUSED), None)
            if bad is None:
                raise TransferError(f"PROGRAM stopped in chunk {k} (cells from {k * step}): {e}; "
                                    f"{len(results())} cells programmed", results(), None, k) from e
            i = k * step + bad
            raise TransferError(f"PROGRAM: cell {i} {cells[i]} refused by the device ({e}); "
                                f"{len(results())} cells programmed", results(), (i, cells[i]), k) from e
        except LinkError as e:
            i = k * step
            raise TransferError.of(e, f"PROGRAM stopped at cell {i} {cells[i] if i < len(cells) else ''} (chunk {k}): "
                                   f"{e}; {len(results())} cells programmed", results(),
                                   (i, cells[i]) if i < len(cells) else None, k) from e
        if journal is not None:
            journal.finish()
        return results()

    def program_weights(self, what, int_w=None, timeout: float | None = None, journal=None) -> dict:
        """Program a golden weights/cells description: a list of cells (pe, row, bl, target_code), a
        golden.transfer.Plan, or a golden.mapping.Mapping (+ int_w: the integer weights) -> report:
        {"cells": [CellResult], "failed": [...], "pulses_total", "pulses_mean", "pulses_max"}.
        journal: see program_cells."""
        if int_w is not None:
            from golden.transfer import plan
            what = plan(what, int_w)
        if hasattr(what, "level"):
            from golden.write_verify import level_target_code
            cells = [(int(a), int(b), int(c), level_target_code(int(lv)))
                     for a, b, c, lv in zip(what.pe, what.row, what.bl, what.level)]
        else:
            cells = list(what)
        res = self.program_cells(cells, timeout=timeout, journal=journal)
        pulses = [r.pulses for r in res]
        return {"cells": res, "failed": [r for r in res if not r.ok], "pulses_total": sum(pulses),
                "pulses_mean": sum(pulses) / len(pulses) if pulses else 0.0, "pulses_max": max(pulses, default=0)}

    def read_conductances(self, cells, timeout: float | None = None) -> list:
        """Verify reads of cells [(pe, row, bl)] -> codes (20 nA each: the read current at 0.2 V)."""
        cells = self.check_cells(cells, with_target=False)
        out = []
        step = self._max_words()
        for i in range(0, len(cells), step):
            chunk = cells[i:i + step]
            ans = self.host_command(host_proto.READ, [self._cell_word(*c) for c in chunk], timeout=timeout)
            if len(ans) != len(chunk):
                raise ProtocolError(f"READ: {len(ans)} codes for {len(chunk)} cells")
            out += [host_proto.get(w, host_proto.READ_RES["code"]) for w in ans]
        return out

    # ---- images
    @staticmethod
    def image_words(img, label=0, pixels: int | None = None, classes: int = 256) -> list:
        """Pixels (u8), 4 per word, first pixel in the low byte, then the label word. Pixels outside
        0..255, a label outside 0..classes-1, or not `pixels` pixels: InputError."""
        import numpy as np
        a = np.asarray(img)
        if a.dtype.kind not in "iubf":
            raise InputError(f"image of {a.dtype} values: pixels are integers 0..255")
        a = a.reshape(-1)
        if pixels is not None and a.size != pixels:
            raise InputError(f"image of {a.size} pixels, the network takes {pixels}")
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(~(np.isfinite(a) & (a >= 0) & (a <= 255) & (a == np.floor(a))))
        if bad.size:
            raise InputError(f"pixel {bad[0]} = {a[bad[0]].item()!r}: pixels are integers 0..255")
        lab = np.asarray(label)
        if (lab.ndim or lab.dtype.kind not in "iubf" or not np.isfinite(lab) or lab != np.floor(lab)
                or not 0 <= lab < classes):
            raise InputError(f"label {lab.tolist()!r}: labels are integers 0..{classes - 1}")
        px = [int(v) for v in a.tolist()] + [0] * (-a.size % 4)
        return [px[i] | px[i + 1] << 8 | px[i + 2] << 16 | px[i + 3] << 24
                for i in range(0, len(px), 4)] + [int(lab)]

    def _image_params(self, dev=None) -> dict:
        p = self._p()
        iw, rw = p["image_words"], p["result_words"]
        return {"image_words": iw, "result_words": rw, "classes": p["classes"],
                "per": max(1, min(self._max_words() // iw, self._max_words() // rw))}

    @staticmethod
    def _image_chunks(op, images, labels, p) -> list:
        """The STREAM chunks of a run of images: `per` images each; every image checked first."""
        if len(labels) != len(images):
            raise InputError(f"{len(images)} images but {len(labels)} labels")
        iw = p["image_words"]
        words = []
        for i, (img, lab) in enumerate(zip(images, labels)):
            try:
                words.append(Board.image_words(img, lab, (iw - 1) * 4, p["classes"]))
            except InputError as e:
                raise InputError(f"image {i}: {e}") from None
        per = p["per"]
        return [(op, [w for img in words[i:i + per] for w in img], len(words[i:i + per]))
                for i in range(0, len(words), per)]

    @staticmethod
    def _decode_images(rows, p) -> dict:
        import numpy as np
        rw, k = p["result_words"], p["classes"]
        off = host_proto.result_offsets(k)

        def s32(v):
            return v - (1 << 32) if v >> 31 else v
        a = np.array(rows, dtype=np.int64).reshape(len(rows), rw)
        sgn = np.vectorize(s32, otypes=[np.int64]) if len(rows) else (lambda x: x)
        return {"classes": a[:, off["cls"]],
                "logits": sgn(a[:, off["logits"]:off["logits"] + k]),
                "p": a[:, off["p"]:off["p"] + k],
                "delta": sgn(a[:, off["delta"]:off["delta"] + k])}

    def _image_rows(self, ans, n, p) -> list:
        rw = p["result_words"]
        if len(ans) != n * rw:
            raise ProtocolError(f"{len(ans)} result words for {n} images, expected {n * rw}")
        return [ans[j * rw:(j + 1) * rw] for j in range(n)]

    def _images(self, op, images, labels, timeout):
        p = self._image_params()
        labels = [0] * len(images) if labels is None else list(labels)
        rows = []
        for ch in self._image_chunks(op, images, labels, p):
            rows += self._image_rows(self.host_command(op, ch[1], count=ch[2], timeout=timeout), ch[2], p)
        return self._decode_images(rows, p)

    def infer(self, images, labels=None, timeout: float | None = None) -> dict:
        """Inference of images (u8, 28x28) -> {"classes", "logits" (integer), "p" (Q1.15), "delta"
        (Q1.15, p - onehot(label); labels default 0)} as NumPy arrays, one row per image."""
        return self._images(host_proto.INFER, images, labels, timeout)

    def finish_batch(self, timeout: float | None = None) -> dict:
        """End a training batch: the update engine's commands are programmed (pair programmer +
        write-verify) -> {"cells", "failed", "pulses", "flags"} once the programming is over."""
        return self._finish_words(self.host_command(host_proto.FINISH, [], count=0, timeout=timeout))

    @staticmethod
    def _finish_words(ans) -> dict:
        if len(ans) != len(host_proto.FINISH_WORDS):
            raise ProtocolError(f"FINISH: {len(ans)} words, expected {len(host_proto.FINISH_WORDS)}")
        return dict(zip(host_proto.FINISH_WORDS, ans))

    # ---- hybrid training
    def train_fc(self, batches, labels, eta=None, eta_params=None, th_code=None, timeout: float | None = None,
                 journal=None):
        """Hybrid training of the FC layer in the fabric (Yao 2020): per batch, the images go through
        the training path (TRAIN: every image's delta and FC inputs accumulate in the update
        engine), then FINISH programs the thresholded update. eta (float, converted with
        golden.update.eta_params on the default weights) or eta_params=(M, sh) set the learning rate.
        journal: a sw.journal.Journal (every TRAIN/FINISH answer recorded; a loaded one resumes).
        -> {"batches": [per batch: images, errors, cells, failed, pulses, set_pulses, reset_pulses],
        totals}. A failure raises TransferError with the finished batches' reports (.results)."""
        import numpy as np

        if eta is not None and eta_params is None:
            from golden import weights
            from golden.update import eta_params as _ep
            eta_params = _ep(eta, weights.load().q)
        batches = [list(b) for b in batches]
        labels = [np.asarray(lb).reshape(-1).tolist() for lb in labels]
        if len(labels) != len(batches):
            raise InputError(f"{len(batches)} batches but {len(labels)} label lists")
        spans = []

        def chunks(p):
            out = []
            for imgs, labs in zip(batches, labels):
                first = len(out)
                out += self._image_chunks(host_proto.TRAIN, imgs, labs, p) + [(host_proto.FINISH, [], 0)]
                spans.append((first, len(out)))
            return out
        report = []
        try:
            plan = self._session(journal, "train", [eta_params and list(eta_params), th_code],
                                 self._image_params, chunks, timeout)
            if eta_params is not None:
                self.set_learning(eta_m=eta_params[0], eta_sh=eta_params[1])
            if th_code is not None:
                self.set_learning(th_code=th_code)
            for b, (first, end) in enumerate(spans):
                report.append(self._train_batch(journal, b, plan, first, end, labels[b], timeout))
        except LinkError as e:
            raise TransferError.of(e, f"training stopped in batch {len(report)}: {e}; {len(report)} batches "
                                   "finished", report) from e
        if journal is not None:
            journal.finish()
        tot = {k: sum(b[k] for b in report) for k in ("images", "errors", "cells", "failed", "pulses")}
        return {"batches": report, **tot}

    def _train_batch(self, journal, b, plan, first, end, labs, timeout) -> dict:
        """One batch: counters, its TRAIN chunks, FINISH, counters (journaled values reused)."""
        def counters(key):
            if journal is None:
                return self.read_counters()
            if key not in journal.notes:
                journal.note(key, self.read_counters())
            return journal.notes[key]
        c0 = counters(f"counters/{b}/before")
        rows = []
        for k in range(first, end - 1):
            ch = plan.chunks[k]
            rows += self._image_rows(self._chunk(journal, k, ch, timeout), ch[2], plan.params)
        f = self._finish_words(self._chunk(journal, end - 1, plan.chunks[end - 1], timeout))
        c1 = counters(f"counters/{b}/after")
        classes = self._decode_images(rows, plan.params)["classes"]
        errors = int(sum(int(a) != int(y) for a, y in zip(classes, labs)))
        return {"images": len(labs), "errors": errors, **f,
                "set_pulses": (c1["set_pulses"] - c0["set_pulses"]) & 0xFFFFFFFF,
                "reset_pulses": (c1["reset_pulses"] - c0["reset_pulses"]) & 0xFFFFFFFF}
