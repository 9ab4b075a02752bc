"""Fault-injection session: `mcnn board --sim faults` (and the co-simulated and serial variants).

run_session(board, faulty, frames) runs `frames` random commands through a FaultyTransport and
checks every result against what the device must answer:

  ping        random payload (0..max_payload bytes)      -> the same bytes
  write/read  link_scratch                               -> the value last written
  csr_ident   CSR_READ of the identity registers         -> the values identify() gave before
  identify, status, soft reset
  stream      1-8 random words                           -> their complements (the test echo)
  invalid     unknown command, unmapped address, write to a read-only register, bad length,
              out-of-range count, reserved reset bits    -> the matching DeviceError

Every command ends in one of: `succeeded` (right answer, or the right DeviceError for an invalid
command), `failed` (LinkTimeout: the link stayed dead past the deadline), `undetected` (an answer
that passed the link checks but is wrong -- must be 0). Exactly-once execution is checked with the
device's `executed` counter: over the session it must grow by the number of answered commands
(+ at most the number of failed ones, whose frames may or may not have executed); more is reported
as `executed_twice` (commands the device executed again), fewer as `executed_lost` -- both are
also added to `undetected`.

Injected hangs last up to `hang_max` seconds of the transport's clock (virtual for the simulated
devices; None: a third of the deadline, so that even two hangs in one command leave time to
recover); the host retries each command until its deadline (`deadline`, reported with the longest
command, `longest_command_s`), so hangs shorter than the deadline cost time, not failures.

Fault events (FaultyTransport.events) are attributed to the attempt during which they were
injected: `detected` = events in attempts the host rejected (timeout, NACK CRC -> retry),
`masked` = events in attempts that still produced the right answer (garbage skipped by the
resynchronisation, a repeated frame answered from the replay record, ...).
"""
from __future__ import annotations

import random
import struct
import time

from sw import csr_map
from sw.link import (BadAddress, BadArgument, BadLength, Cmd, DeviceError, LinkError, LinkTimeout, ReadOnlyRegister,
                     UnknownCommand)

OPS = ["ping", "write", "read", "csr_ident", "identify", "status", "stream", "soft_reset",
       "bad_cmd", "bad_addr", "read_only", "bad_len", "bad_arg", "bad_reset"]
WEIGHTS = [6, 5, 5, 2, 1, 1, 4, 1, 1, 1, 1, 1, 1, 1]
HANG_PER_DEADLINE = 3       # hang_max=None: hangs up to deadline / 3


class _Wrong(Exception):
    pass


def echo_op_check(board, words):
    """STREAM check through the controller's host bridge: the ECHO command (rtl/host.py)."""
    from sw import host_proto
    return board.host_command(host_proto.ECHO, words) == [(~w) & 0xFFFFFFFF for w in words]


def run_session(board, faulty, frames: int, seed: int = 0, source: str = "model", stream_check=None,
                extra_ops: dict | None = None, final_check=None, op_weights: dict | None = None) -> dict:
    """stream_check(board, words) -> bool replaces the raw complement echo of the stream op (a device
    with the controller attached answers STREAM through its host bridge: "echo_op" = ECHO).
    extra_ops {name: (weight, fn(board, rng))}: more commands; fn raises LinkTimeout (failed) or
    returns False / raises ValueError for a wrong answer. final_check(board) -> dict, after the
    session with faults off; its "undetected" entry (if any) adds to undetected."""
    if stream_check == "echo_op":
        stream_check = echo_op_check
    extra_ops = dict(extra_ops or {})
    if set(extra_ops) & set(OPS):
        raise ValueError(f"extra ops {sorted(set(extra_ops) & set(OPS))} shadow the session's own ops")
    ops_all = OPS + list(extra_ops)
    weights_all = [(op_weights or {}).get(o, w) for o, w in zip(OPS, WEIGHTS)] + [w for w, _ in extra_ops.values()]
    rng = random.Random(seed)
    t0 = time.perf_counter()
    c0 = board.link.clock.now()
    if faulty.hang_max is None:     # the default: a third of the deadline (two hangs in a row still recover)
        faulty.hang_max = board.link.deadline_for(board.link.timeout) / HANG_PER_DEADLINE
    faulty.enabled = False
    board.open()
    session = _Session(board, rng, stream_check, extra_ops)
    st0 = board.link.stats.retries, board.link.stats.attempts

    attempt_log = []
    last_events = [faulty.events]

    def on_attempt(outcome):
        attempt_log.append((outcome, faulty.events - last_events[0]))
        last_events[0] = faulty.events

    board.link.on_attempt = on_attempt
    faulty.enabled = True
    res = {"succeeded": 0, "failed": 0, "undetected": 0}
    ops = {}
    failures = []
    for _ in range(frames):
        op = rng.choices(ops_all, weights_all)[0]
        ops[op] = ops.get(op, 0) + 1
        try:
            session.run(op)
            res["succeeded"] += 1
        except LinkTimeout as e:
            res["failed"] += 1
            failures.append(str(e))
        except (_Wrong, DeviceError, LinkError) as e:
            res["undetected"] += 1
            failures.append(f"UNDETECTED {op}: {e}")

    faulty.enabled = False
    board.link.on_attempt = None
    res["expected_errors"] = session.expected_errors
    out = {"source": source, "frames": frames, **_outcome(board, faulty, session, res, attempt_log, st0, final_check)}
    final = out.pop("final_check")
    link = board.link
    return {
        **out,
        "ops": dict(sorted(ops.items())),
        "seed": seed,
        "rate": faulty.rate,
        "retries": link.retries,
        "timeout": link.timeout,
        "deadline": link.deadline_for(link.timeout),
        "hang_max": faulty.hang_max,
        "hangs": faulty.hangs,
        "hang_longest_s": round(faulty.hang_longest, 3),
        "longest_command_s": round(link.stats.longest, 3),
        "late_answers": link.stats.late,
        "backoff_s": round(link.stats.paused, 3),
        **({"virtual_seconds": round(link.clock.now() - c0, 3)} if link.clock.virtual else {}),
        "device_params": {k: session.ident[k] for k in ("max_payload", "max_response")},
        "seconds": round(time.perf_counter() - t0, 3),
        **({"final_check": final} if final is not None else {}),
        "failures": [f for f in failures if f.startswith("UNDETECTED")][:10] + failures[:5],
    }


def _outcome(board, faulty, session, res, attempt_log, st0, final_check) -> dict:
    """After the session, faults off: the exactly-once check on the device's `executed` counter,
    final_check, and the attribution of the injected faults to detected / masked."""
    retried = board.link.stats.retries - st0[0]
    attempts = board.link.stats.attempts - st0[1]
    e1 = board.read_csr("link_executed")
    answered = res["succeeded"] + res["undetected"]
    lo, hi = 1 + answered, 1 + answered + res["failed"]
    grown = (e1 - session.e0) & 0xFFFFFFFF
    twice, lost = max(0, grown - hi), max(0, lo - grown)
    res["undetected"] += twice + lost
    final = final_check(board) if final_check is not None else None
    if final:
        res["undetected"] += int(final.get("undetected", 0))
    device = board.status()
    detected = sum(n for o, n in attempt_log if o in ("timeout", "nack_crc", "nack_too_long"))
    masked = sum(n for o, n in attempt_log if o in ("ok", "device_error"))
    return {
        "injected": faulty.events,
        "detected": detected,
        "masked": masked,
        "retried": retried,
        "failed": res["failed"],
        "undetected": res["undetected"],
        "succeeded": res["succeeded"],
        "expected_errors": res["expected_errors"],
        "attempts": attempts,
        "injected_by_kind": dict(sorted(faulty.injected.items())),
        "executed_twice": twice,
        "executed_lost": lost,
        "executed_growth": grown,
        "executed_bounds": [lo, hi],
        "device_counters": {k: device[k] for k in ("crc_errors", "framing_errors", "dropped_frames", "dup_frames")},
        "final_check": final,
    }


class _Session:
    """What a session's commands are checked against (identity, scratch values, executed count at
    the start), and the commands themselves: run(op) raises _Wrong for a wrong answer."""

    def __init__(self, board, rng, stream_check, extra_ops):
        self.board, self.link, self.rng = board, board.link, rng
        self.stream_check, self.extra_ops = stream_check, extra_ops
        self.ident = dict(board.info)
        self.max_ping = min(self.ident["max_payload"], self.ident["max_response"])
        self.scratch = {rng.randrange(1 << 32)}
        board.write_csr("link_scratch", next(iter(self.scratch)))
        self.e0 = board.read_csr("link_executed")
        self.id_base, self.id_n = csr_map.WINDOWS["link_identify"]
        self.id_words = [self.ident[csr_map.BY_ADDR[self.id_base + i].name.removeprefix("link_")]
                         for i in range(self.id_n)]
        self.expected_errors = 0

    def expect_error(self, cls, fn):
        try:
            fn()
        except cls:
            self.expected_errors += 1
            return
        raise _Wrong(f"expected {cls.__name__}")

    def run(self, op):
        board, link, rng, expect_error = self.board, self.link, self.rng, self.expect_error
        if op == "ping":
            n = rng.choice((0, rng.randint(1, 32), rng.randint(1, self.max_ping)))
            p = bytes(rng.randrange(256) for _ in range(n))
            if link.transact(Cmd.PING, p) != p:
                raise _Wrong("ping echo differs")
        elif op == "write":
            v = rng.randrange(1 << 32)
            try:
                board.write_csr("link_scratch", v)
            except LinkTimeout:
                self.scratch.add(v)          # may or may not have been written
                raise
            self.scratch = {v}
        elif op == "read":
            v = board.read_csr("link_scratch")
            if v not in self.scratch:
                raise _Wrong(f"scratch {v:#x} not in {sorted(self.scratch)}")
            self.scratch = {v}
        elif op == "csr_ident":
            if board.read_csr(self.id_base, self.id_n) != self.id_words:
                raise _Wrong("identity registers differ")
        elif op == "identify":
            if board.identify() != self.ident:
                raise _Wrong("identify differs")
        elif op == "status":
            s = board.status()
            if s["executed"] < self.e0:
                raise _Wrong("executed counter went backwards")
        elif op == "stream":
            words = [rng.randrange(1 << 32) for _ in range(rng.randint(1, 8))]
            if self.stream_check is not None:
                if not self.stream_check(board, words):
                    raise _Wrong("stream (ECHO) response differs")
            elif board.stream_command(words) != [(~w) & 0xFFFFFFFF for w in words]:
                raise _Wrong("stream response differs")
        elif op == "soft_reset":
            board.reset(controller=True, counters=False)
        elif op == "bad_cmd":
            expect_error(UnknownCommand, lambda: link.transact(0x7E, b"\x00" * rng.randint(0, 8)))
        elif op == "bad_addr":
            expect_error(BadAddress, lambda: board.read_csr(csr_map.SIZE + rng.randrange(100)))
        elif op == "read_only":
            expect_error(ReadOnlyRegister, lambda: board.write_csr("link_id", 1, check=False))
        elif op == "bad_len":
            expect_error(BadLength, lambda: link.transact(Cmd.IDENTIFY, b"\x01"))
        elif op == "bad_arg":
            expect_error(BadArgument, lambda: link.transact(Cmd.CSR_READ, struct.pack("<HH", 0, 0)))
        elif op == "bad_reset":
            expect_error(BadArgument, lambda: link.transact(Cmd.RESET, struct.pack("<I", 0x100)))
        elif op in self.extra_ops:
            n0 = link.stats.commands
            ok = self.extra_ops[op][1](board, rng)
            if link.stats.commands - n0 != 1:
                raise RuntimeError(f"extra op {op} must send exactly one command")
            if ok is False:
                raise _Wrong(f"{op}: answer differs from the reference")


def model_session(frames: int, seed: int = 0, rate: float = 0.2, retries: int | None = None,
                  hang_max: float | None = None, max_payload: int = 1024, deadline: float | None = None,
                  timeout: float = 1.0) -> dict:
    """The session against the pure-Python device model (virtual time: instant timeouts)."""
    from sw.devmodel import DeviceModel
    from sw.driver import Board
    from sw.transport import FaultyTransport, ModelTransport
    faulty = FaultyTransport(ModelTransport(DeviceModel(max_payload=max_payload, max_response=max_payload)),
                             seed=seed, rate=rate, hang_max=hang_max)
    board = Board(faulty, retries=retries, seq=seed & 0xFF, deadline=deadline, timeout=timeout)
    return run_session(board, faulty, frames, seed, source="model")


# ------------------------------------------------------------------ the controller attached

class Uncertain(Exception):
    pass


def controller_ops(oracle, weights=None):
    """Commands of the controller-attached device for run_session, checked against a golden
    reference `oracle` that is updated only with commands the device answered:

      ctrl_program   PROGRAM one cell (write-verify to a random target) -> ok, pulses, final_code = golden's
      ctrl_read      READ 1-4 cells                                     -> verify codes = golden's
      ctrl_counters  CSR read of the controller's counters              -> set + reset pulses = golden's total

    oracle: .cells [(pe, row, bl)], .program(pe, row, bl, target) -> (ok, pulses, final_code),
    .read(pe, row, bl) -> code, .pulses -> programming pulses so far. The link retries a PROGRAM
    with the same frame until its deadline (executed once either way); one that still ends in
    LinkTimeout may or may not have executed: then the reference is unknown and later checks are
    skipped (`uncertain`). The
    final check (faults off) compares the pulse counters and every cell's code: a PROGRAM executed
    twice or lost shows up there as undetected.
    Returns (extra_ops, final_check, op_weights): soft resets are left out (they clear the counters)."""
    from sw.link import LinkTimeout
    state = {"uncertain": False, "programmed": 0, "checked": 0, "reads": 0, "reads_uncertain": False}
    w = {"ctrl_program": 3, "ctrl_read": 2, "ctrl_counters": 1, **(weights or {})}

    def program(board, rng):
        pe, row, bl = rng.choice(oracle.cells)
        target = rng.randint(30, 190)
        try:
            (r,) = board.program_cells([(pe, row, bl, target)])
        except LinkTimeout:
            state["uncertain"] = True
            raise
        state["programmed"] += 1
        if state["uncertain"]:
            return True
        state["checked"] += 1
        return (r.ok, r.pulses, r.final_code) == tuple(oracle.program(pe, row, bl, target))

    def read(board, rng):
        cells = rng.sample(oracle.cells, rng.randint(1, min(4, len(oracle.cells))))
        try:
            codes = board.read_conductances(cells)
        except LinkTimeout:
            state["reads_uncertain"] = True
            raise
        state["reads"] += len(cells)
        return state["uncertain"] or codes == [oracle.read(*c) for c in cells]

    def counters(board, rng):
        c = board.read_counters()
        return state["uncertain"] or c["set_pulses"] + c["reset_pulses"] == oracle.pulses

    def final(board):
        c = board.read_counters()
        codes = board.read_conductances(oracle.cells)
        out = {"uncertain": state["uncertain"], "resolved": board.link.stats.resolves,
               "programmed": state["programmed"], "program_checked": state["checked"],
               "set_pulses": c["set_pulses"], "reset_pulses": c["reset_pulses"], "golden_pulses": oracle.pulses,
               "verify_reads": c["verify_reads"], "host_reads": c["host_reads"], "host_reads_sent": state["reads"],
               "host_reads_uncertain": state["reads_uncertain"],
               "cells_compared": 0, "undetected": 0}
        if not state["reads_uncertain"] and c["host_reads"] != state["reads"]:
            out["undetected"] += 1          # a READ executed twice or lost
        if not state["uncertain"]:
            gold = [oracle.read(*x) for x in oracle.cells]
            out["cells_compared"] = len(gold)
            out["cells_differing"] = sum(a != b for a, b in zip(codes, gold))
            out["undetected"] += int(out["cells_differing"] > 0)
            out["undetected"] += int(c["set_pulses"] + c["reset_pulses"] != oracle.pulses)
        return out

    return ({"ctrl_program": (w["ctrl_program"], program), "ctrl_read": (w["ctrl_read"], read),
             "ctrl_counters": (w["ctrl_counters"], counters)}, final, {"soft_reset": 0})
