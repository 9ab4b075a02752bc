"""Fault-injection session: `mcnn board --sim faults` (and the co-simulated and serial variants).

run_session(ctrl, faulty, frames) runs `frames` random commands through a FaultyTransport and
checks every result against what the device must answer:

  ping        random payload (0..max_payload bytes)      -> the same bytes
  write/read  link_scratch                               -> the value last written
  csr_ident   CSR_READ of the identity registers         -> the values identify() gave before
  identify, status, soft reset
  stream      1-8 random words                           -> their complements (the test echo)
  invalid     unknown command, unmapped address, write to a read-only register, bad length,
              out-of-range count, reserved reset bits    -> the matching DeviceError

Every command ends in one of: `succeeded` (right answer, or the right DeviceError for an invalid
command), `failed` (LinkTimeout: a clear error after all retries), `undetected` (an answer that
passed the link checks but is wrong -- must be 0). Exactly-once execution is checked with the
device's `executed` counter: over the session it must grow by the number of answered commands
(+ at most the number of failed ones, whose frames may or may not have executed); more would be
a command executed twice, fewer a lost one -- both are added to `undetected`.

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


class _Wrong(Exception):
    pass


def run_session(ctrl, faulty, frames: int, seed: int = 0, source: str = "model") -> dict:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    faulty.enabled = False
    ctrl.open()
    ident = dict(ctrl.info)
    max_ping = min(ident["max_payload"], ident["max_response"])
    scratch = {rng.randrange(1 << 32)}
    ctrl.write_csr("link_scratch", next(iter(scratch)))
    e0 = ctrl.read_csr("link_executed")
    st0 = ctrl.link.stats.retries, ctrl.link.stats.attempts

    attempt_log = []
    last_events = [faulty.events]

    def on_attempt(outcome):
        attempt_log.append((outcome, faulty.events - last_events[0]))
        last_events[0] = faulty.events

    ctrl.link.on_attempt = on_attempt
    faulty.enabled = True
    res = {"succeeded": 0, "failed": 0, "undetected": 0, "expected_errors": 0}
    ops = {}
    failures = []
    link = ctrl.link
    id_base, id_n = csr_map.WINDOWS["link_identify"]
    id_words = [ident[csr_map.BY_ADDR[id_base + i].name.removeprefix("link_")] for i in range(id_n)]

    def expect_error(cls, fn):
        try:
            fn()
        except cls:
            res["expected_errors"] += 1
            return
        raise _Wrong(f"expected {cls.__name__}")

    for _ in range(frames):
        op = rng.choices(OPS, WEIGHTS)[0]
        ops[op] = ops.get(op, 0) + 1
        try:
            if op == "ping":
                n = rng.choice((0, rng.randint(1, 32), rng.randint(1, max_ping)))
                p = bytes(rng.randrange(256) for _ in range(n))
                if link.transact(Cmd.PING, p) != p:
                    raise _Wrong("ping echo differs")
            elif op == "write":
                v = rng.randrange(1 << 32)
                try:
                    ctrl.write_csr("link_scratch", v)
                except LinkTimeout:
                    scratch.add(v)          # may or may not have been written
                    raise
                scratch = {v}
            elif op == "read":
                v = ctrl.read_csr("link_scratch")
                if v not in scratch:
                    raise _Wrong(f"scratch {v:#x} not in {sorted(scratch)}")
                scratch = {v}
            elif op == "csr_ident":
                if ctrl.read_csr(id_base, id_n) != id_words:
                    raise _Wrong("identity registers differ")
            elif op == "identify":
                if ctrl.identify() != ident:
                    raise _Wrong("identify differs")
            elif op == "status":
                s = ctrl.status()
                if s["executed"] < e0:
                    raise _Wrong("executed counter went backwards")
            elif op == "stream":
                words = [rng.randrange(1 << 32) for _ in range(rng.randint(1, 8))]
                if ctrl.stream_command(words) != [(~w) & 0xFFFFFFFF for w in words]:
                    raise _Wrong("stream response differs")
            elif op == "soft_reset":
                ctrl.reset(controller=True, counters=False)
            elif op == "bad_cmd":
                expect_error(UnknownCommand, lambda: link.transact(0x7E, b"\x00" * rng.randint(0, 8)))
            elif op == "bad_addr":
                expect_error(BadAddress, lambda: ctrl.read_csr(csr_map.SIZE + rng.randrange(100)))
            elif op == "read_only":
                expect_error(ReadOnlyRegister, lambda: ctrl.write_csr("link_id", 1, check=False))
            elif op == "bad_len":
                expect_error(BadLength, lambda: link.transact(Cmd.IDENTIFY, b"\x01"))
            elif op == "bad_arg":
                expect_error(BadArgument, lambda: link.transact(Cmd.CSR_READ, struct.pack("<HH", 0, 0)))
            elif op == "bad_reset":
                expect_error(BadArgument, lambda: link.transact(Cmd.RESET, struct.pack("<I", 0x100)))
            res["succeeded"] += 1
        except LinkTimeout as e:
            res["failed"] += 1
            failures.append(str(e))
        except (_Wrong, DeviceError, LinkError) as e:
            res["undetected"] += 1
            failures.append(f"UNDETECTED {op}: {e}")

    faulty.enabled = False
    ctrl.link.on_attempt = None
    retried = ctrl.link.stats.retries - st0[0]
    attempts = ctrl.link.stats.attempts - st0[1]
    e1 = ctrl.read_csr("link_executed")
    answered = res["succeeded"] + res["undetected"]
    lo, hi = 1 + answered, 1 + answered + res["failed"]
    grown = (e1 - e0) & 0xFFFFFFFF
    exactly_once_violations = max(0, grown - hi) + max(0, lo - grown)
    res["undetected"] += exactly_once_violations
    device = ctrl.status()
    detected = sum(n for o, n in attempt_log if o in ("timeout", "nack_crc", "nack_too_long"))
    masked = sum(n for o, n in attempt_log if o in ("ok", "device_error"))
    return {
        "source": source,
        "frames": frames,
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
        "executed_growth": grown,
        "executed_bounds": [lo, hi],
        "device_counters": {k: device[k] for k in ("crc_errors", "framing_errors", "dropped_frames", "dup_frames")},
        "ops": dict(sorted(ops.items())),
        "seed": seed,
        "rate": faulty.rate,
        "retries": ctrl.link.retries,
        "device_params": {k: ident[k] for k in ("max_payload", "max_response")},
        "seconds": round(time.perf_counter() - t0, 3),
        "failures": [f for f in failures if f.startswith("UNDETECTED")][:10] + failures[:5],
    }


def model_session(frames: int, seed: int = 0, rate: float = 0.2, retries: int = 5, hang_max: int = 8,
                  max_payload: int = 1024) -> dict:
    """The session against the pure-Python device model (instant timeouts)."""
    from sw.devmodel import DeviceModel
    from sw.driver import Controller
    from sw.transport import FaultyTransport, ModelTransport
    faulty = FaultyTransport(ModelTransport(DeviceModel(max_payload=max_payload, max_response=max_payload)),
                             seed=seed, rate=rate, hang_max=hang_max)
    ctrl = Controller(faulty, retries=retries, seq=seed & 0xFF)
    return run_session(ctrl, faulty, frames, seed, source="model")
