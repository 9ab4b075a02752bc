"""Host side of the UART link protocol (docs/link.md): frames, parsing, retries, errors.

Frame (both directions; all multi-byte fields little-endian):

    A5 5A | SEQ (u16) | SID (u16) | CODE | STATUS | LEN (u16) | HCHK (u16) | PAYLOAD (LEN bytes) | CRC (u32)
            '------------------- header -------------------'
    HCHK = zlib.crc32(header) & 0xFFFF         (rejects a corrupted LEN before it is trusted)
    CRC  = zlib.crc32(header + HCHK + PAYLOAD)  (CRC-32/ISO-HDLC, the same as the RTL's)

CODE is the command (bit 7 clear) in a request and 0x80 | command in its response; STATUS is 0 in
a request and the outcome in a response; a response echoes the SEQ and SID (session) of its
request, and the host checks all three. The host keeps one command outstanding (stop-and-wait),
retries a command with the *same* frame after a timeout or a NACK(CRC), and the device answers a
repeated frame (the newest of the session, same SEQ and CRC) from its replay buffer instead of
executing it again; older frames of the session and frames of other sessions are answered STALE.
The CRCs are computed with the standard library (zlib), never by hand.
"""
from __future__ import annotations

import os
import random
import struct
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field

from sw import csr_map

# the protocol's constants, generated from rtl/protocol.py (python -m rtl.hostgen); re-exported here
from sw.link_proto import (  # noqa: F401
    COUNTERS, FLAG_BITS, HCHK_BYTES, HEADER, HEADER_BYTES, MAX_LEN, OVERHEAD, RESET_CONTROLLER, RESET_COUNTERS,
    RESET_FLAGS_MASK, RESPONSE, SEQ_HALF, SYNC, Cmd, Status)
from sw.transport import REAL_CLOCK

DEFAULT_MAX_PAYLOAD = csr_map.REGISTERS["link_max_payload"].reset   # the limit until open() reads the device's
_HCHK_END = len(SYNC) + HEADER_BYTES + HCHK_BYTES     # offset of the payload


def hchk(header: bytes) -> bytes:
    """The header check: the low 16 bits of the header's CRC-32, little-endian."""
    return struct.pack("<H", zlib.crc32(header) & 0xFFFF)


def build_frame(seq: int, code: int, payload: bytes = b"", *, sid: int = 0, status: int = 0,
                max_len: int = MAX_LEN) -> bytes:
    payload = bytes(payload)
    if len(payload) > max_len:
        raise ValueError(f"payload of {len(payload)} bytes > {max_len}")
    head = struct.pack(HEADER, seq & 0xFFFF, sid & 0xFFFF, code & 0xFF, status & 0xFF, len(payload))
    body = head + hchk(head) + payload
    return SYNC + body + struct.pack("<I", zlib.crc32(body))


@dataclass(frozen=True)
class Frame:
    seq: int
    code: int
    payload: bytes
    crc: int
    sid: int = 0
    status: int = 0       # a response's outcome (0 in a request)

    @property
    def is_response(self) -> bool:
        return bool(self.code & RESPONSE)

    @property
    def cmd(self) -> int:
        """The command (of a request, or the one a response answers)."""
        return self.code & 0x7F


@dataclass(frozen=True)
class ParseError:
    kind: str   # "header" (HCHK mismatch), "too_long", "crc"


class FrameParser:
    """Incremental frame parser with resynchronisation: after a header error it rescans from the
    byte after the rejected sync, so a frame hidden behind garbage or a false sync is still found;
    a frame whose header is valid but whose CRC is wrong is skipped whole (LEN + CRC bytes), so a
    frame inside its payload is never taken for one."""

    def __init__(self, max_len: int = MAX_LEN):
        self.max_len = max_len
        self.buf = bytearray()
        self.garbage = 0

    def feed(self, data: bytes) -> list:
        self.buf += data
        out = []
        buf = self.buf
        while True:
            i = buf.find(SYNC)
            if i < 0:
                keep = 1 if buf[-1:] == SYNC[:1] else 0
                self.garbage += len(buf) - keep
                del buf[:len(buf) - keep]
                return out
            if i:
                self.garbage += i
                del buf[:i]
            if len(buf) < _HCHK_END:
                return out
            head = bytes(buf[2:2 + HEADER_BYTES])
            if hchk(head) != buf[2 + HEADER_BYTES:_HCHK_END]:
                out.append(ParseError("header"))
                del buf[:1]
                continue
            seq, sid, code, status, n = struct.unpack(HEADER, head)
            if n > self.max_len:
                out.append(ParseError("too_long"))
                del buf[:1]
                continue
            total = _HCHK_END + n + 4
            if len(buf) < total:
                return out
            crc = struct.unpack_from("<I", buf, total - 4)[0]
            if zlib.crc32(bytes(buf[2:total - 4])) != crc:
                out.append(ParseError("crc"))
                del buf[:total]
                continue
            out.append(Frame(seq, code, bytes(buf[_HCHK_END:total - 4]), crc, sid, status))
            del buf[:total]

    def abort_partial(self) -> list:
        """Give up a frame still waiting for bytes (after a timeout): rescan past its sync."""
        if self.buf[:2] == SYNC:
            del self.buf[:1]
            return self.feed(b"")
        return []


# ------------------------------------------------------------------ errors

class LinkError(Exception):
    """Base of every error of the link layer."""


class LinkTimeout(LinkError):
    """No valid response until the deadline: the device hung, was disconnected or the line too
    noisy for that long (or, if the Link has an attempt limit `retries`, after that many retries).
    attempts, problems (what ended each attempt), elapsed and deadline (seconds of the transport's
    clock) say what happened."""

    def __init__(self, cmd, seq, attempts, problems, elapsed=None, deadline=None, reason=""):
        self.cmd, self.seq, self.attempts, self.problems = cmd, seq, attempts, dict(problems)
        self.elapsed, self.deadline = elapsed, deadline
        what = ", ".join(f"{n} x {k}" for k, n in sorted(self.problems.items())) or "nothing received"
        when = "" if elapsed is None else f" in {elapsed:.3g} s"
        super().__init__(f"{_name(cmd)} (seq {seq}): no valid response after {attempts} attempts{when} ({what})"
                         + (f"; {reason}" if reason else ""))


class ProtocolError(LinkError):
    """A response that passed its CRC but does not fit the command (wrong payload size, ...)."""


class DeviceError(LinkError):
    """The device executed (or refused) the command and answered with an error status."""
    status = None

    def __init__(self, cmd, seq, status, detail=""):
        self.cmd, self.seq = cmd, seq
        self.status = status
        name = Status(status).name if status in Status._value2member_map_ else f"status {status:#04x}"
        by = "by the host, not sent" if getattr(self, "local", False) else "by the device"
        super().__init__(f"{_name(cmd)} (seq {seq}) refused {by}: {name}" + (f" -- {detail}" if detail else ""))


class FrameTooLong(DeviceError):
    pass


class PayloadTooLong(FrameTooLong):
    """Refused by the host before sending: the payload is above the device's max_payload."""
    local = True


class UnknownCommand(DeviceError):
    pass


class BadLength(DeviceError):
    pass


class BadArgument(DeviceError):
    pass


class BadAddress(DeviceError):
    pass


class ReadOnlyRegister(DeviceError):
    pass


class DeviceTimeout(DeviceError):
    pass


class ResponseOverflow(DeviceError):
    pass


class StaleFrame(DeviceError):
    """The device did not execute the frame: an older frame of the session, or another session's."""


_DEVICE_ERRORS = {Status.TOO_LONG: FrameTooLong, Status.UNKNOWN_CMD: UnknownCommand, Status.BAD_LENGTH: BadLength,
                  Status.BAD_ARG: BadArgument, Status.BAD_ADDR: BadAddress, Status.READ_ONLY: ReadOnlyRegister,
                  Status.TIMEOUT: DeviceTimeout, Status.OVERFLOW: ResponseOverflow,
                  Status.STALE: StaleFrame}


def device_error(cmd, seq, status, detail="") -> DeviceError:
    return _DEVICE_ERRORS.get(status, DeviceError)(cmd, seq, status, detail)


def _name(cmd) -> str:
    try:
        return Cmd(cmd).name
    except ValueError:
        return f"command {int(cmd):#04x}"


# ------------------------------------------------------------------ the host end of the link

def _frame_sid(frame: bytes) -> int:
    return struct.unpack_from(HEADER, frame, len(SYNC))[1]


@dataclass
class LinkStats:
    commands: int = 0        # transact() calls
    attempts: int = 0        # frames written (first tries + retries)
    retries: int = 0
    ok: int = 0
    device_errors: int = 0   # commands answered with an error status
    failed: int = 0          # commands (or resolve() calls) that raised LinkTimeout (or FrameTooLong)
    resolves: int = 0        # resolve() calls: a timed-out command sent again with its SEQ
    problems: Counter = field(default_factory=Counter)   # timeout, nack_crc, rx_crc, rx_header, ...
    stale: int = 0           # valid responses to an older SEQ (late or replayed), ignored
    echoes: int = 0          # valid *request* frames read back (a loop-back), ignored
    late: int = 0            # answers that came during a backoff pause (accepted: no resend needed)
    paused: float = 0.0      # seconds spent in backoff pauses (transport clock)
    longest: float = 0.0     # seconds: the longest command, first write to answer or LinkTimeout
    bytes_written: int = 0   # bytes written to the transport (every frame, retries included)
    bytes_read: int = 0      # bytes read from the transport (answers, garbage, echoes)

    def as_dict(self):
        d = {k: v for k, v in self.__dict__.items() if k != "problems"}
        d["paused"], d["longest"] = round(self.paused, 6), round(self.longest, 6)
        d["problems"] = dict(self.problems)
        return d


class Link:
    """Stop-and-wait command/response over a byte transport, retried until a deadline.

    transact(cmd, payload) returns the response payload of a successful command, raises a
    DeviceError subclass when the device answers with an error status (not retried: the device
    executed or deliberately refused the command), and LinkTimeout when no valid response came
    before the deadline. Each attempt waits up to `timeout` for the answer; after a failed attempt
    the host pauses (listening: a late answer is taken) for a backoff that starts at `backoff` and
    doubles up to `backoff_max`, then sends the frame again byte for byte (same SEQ), so the device
    replays its answer instead of executing the command twice. Every state-changing command
    (STREAM, CSR_WRITE, RESET) thus executes exactly once whatever is lost: nothing else is sent
    until it is answered or the deadline passes. Time is the transport's clock (transport.clock):
    real for a serial port, virtual for the simulated devices (timeouts and pauses cost no wall
    time there, and a session is deterministic).

    deadline (seconds): a command fails only when the link stayed dead that long after its first
    write; None = max(DEFAULT_DEADLINE, DEADLINE_TIMEOUTS x the attempt's timeout), and never less
    than one timeout. retries: an optional upper bound on the retries as well (None: the deadline
    alone; kept for compatibility with the count of earlier versions).

    NACK(CRC) and NACK(TOO_LONG) are transmission errors (the frame was corrupted on the way) and
    are retried; TOO_LONG_REPEATS TOO_LONG in a row raise FrameTooLong (the frame really is too long).

    on_attempt(outcome) is called after every attempt with one of "ok", "device_error",
    "timeout", "nack_crc", "nack_too_long" (fault-injection statistics use it); an answer taken
    during a backoff pause adds an "ok" / "device_error" after the attempt's own outcome.

    After a LinkTimeout the command may or may not have executed. resolve() settles it: it sends
    the same frame again (same SEQ) until a new deadline, so the device executes it if it never
    arrived or replays its answer if it did -- exactly once either way, as long as no other frame
    was sent in between (the device keeps the record of its last frame only; a new transact()
    abandons the pending one).

    Sessions: the first transact() opens one (OPEN with a random SID); every frame carries the SID,
    and the device answers frames of any other session STALE without executing them, so no frame
    of an earlier host session can execute. A command answered STALE was not executed: transact()
    then opens a new session (another host took the device) and sends it once more.
    A payload above max_payload (the device's once open() read it, the default 1024 before) is
    refused before anything is sent.
    """
    DEFAULT_DEADLINE = 30.0      # seconds
    DEADLINE_TIMEOUTS = 10       # the default deadline is at least this many attempt timeouts
    TOO_LONG_REPEATS = 3

    def __init__(self, transport, *, timeout: float = 1.0, deadline: float | None = None, retries: int | None = None,
                 backoff: float = 0.05, backoff_max: float = 1.0, seq: int | None = None,
                 max_response: int = MAX_LEN, on_attempt=None):
        self.transport = transport
        self.clock = getattr(transport, "clock", None) or REAL_CLOCK
        self.timeout = timeout
        self.deadline = deadline
        self.retries = retries
        self.backoff, self.backoff_max = backoff, backoff_max
        self.seq = (int.from_bytes(os.urandom(2), "little") if seq is None else seq) & 0xFFFF
        # session IDs: random; derived from a given seq (tests, fault sessions) so a run repeats exactly
        self._sids = random.Random(seq) if seq is not None else random.SystemRandom()
        self.parser = FrameParser(max_response)
        self.backlog = deque()        # parsed frames / errors not looked at yet
        self.max_payload = DEFAULT_MAX_PAYLOAD   # the device's, once known (Board.open sets it)
        self.sid = None               # the session (SID of every frame), once OPEN was sent
        self.stats = LinkStats()
        self.on_attempt = on_attempt
        self.pending = None           # (seq, cmd, frame, payload bytes, timeout) of the last LinkTimeout

    def deadline_for(self, timeout: float) -> float:
        """The deadline (seconds) of a command whose attempts wait `timeout`."""
        if self.deadline is not None:
            return max(self.deadline, timeout)
        return max(self.DEFAULT_DEADLINE, self.DEADLINE_TIMEOUTS * timeout)

    def _attempt_done(self, outcome):
        if self.on_attempt is not None:
            self.on_attempt(outcome)

    def transact(self, cmd, payload: bytes = b"", *, timeout: float | None = None,
                 deadline: float | None = None) -> bytes:
        payload = bytes(payload)
        if len(payload) > self.max_payload:
            raise PayloadTooLong(cmd, self.seq, Status.TOO_LONG, f"{len(payload)} bytes > the device's max_payload "
                               f"{self.max_payload}")
        if self.sid is None:
            self.open_session()
        try:
            return self._send(cmd, payload, timeout, deadline)
        except StaleFrame:          # not executed: another session took the device; open ours again
            self.open_session()
            return self._send(cmd, payload, timeout, deadline)

    def open_session(self) -> None:
        """Start a new session: OPEN with a new random SID (never 0, the device's SID after reset)."""
        self.sid = self._sids.randrange(1, 0x10000)
        self._send(Cmd.OPEN, b"", None, None)

    def _send(self, cmd, payload, timeout, deadline) -> bytes:
        seq = self.seq
        self.seq = (seq + 1) & 0xFFFF
        self.pending = None
        self.stats.commands += 1
        t = self.timeout if timeout is None else timeout
        return self._exchange(seq, cmd, build_frame(seq, cmd, payload, sid=self.sid), len(payload), t,
                              self.deadline_for(t) if deadline is None else max(deadline, t),
                              None if self.retries is None else self.retries + 1, retry_first=False)

    def resolve(self, *, timeout: float | None = None, attempts: int | None = None,
                deadline: float | None = None) -> bytes:
        """Settle the command of the last LinkTimeout (see the class docstring): its response
        payload, a DeviceError, or LinkTimeout again (then it is still pending). Retried until a
        new deadline (and at most `attempts` attempts, default: the Link's retries bound)."""
        if self.pending is None:
            raise LinkError("resolve: no command is pending (the last one was answered or abandoned)")
        seq, cmd, frame, n, t = self.pending
        t = t if timeout is None else timeout
        if attempts is None and self.retries is not None:
            attempts = self.retries + 1
        self.stats.resolves += 1
        return self._exchange(seq, cmd, frame, n, t, self.deadline_for(t) if deadline is None else max(deadline, t),
                              attempts, retry_first=True)

    def _exchange(self, seq, cmd, frame, n_payload, timeout, deadline, max_attempts, retry_first):
        st, clock = self.stats, self.clock
        t0 = clock.now()
        end = t0 + deadline
        problems = Counter()
        attempts = too_long = 0
        pause = self.backoff
        while True:
            if attempts or retry_first:
                st.retries += 1
                self.backlog.extend(self.parser.abort_partial())
            attempts += 1
            st.attempts += 1
            self.transport.write(frame)
            st.bytes_written += len(frame)
            outcome = self._await((seq, _frame_sid(frame), cmd), min(timeout, max(0.0, end - clock.now())), problems)
            if isinstance(outcome, Frame):
                return self._answered(seq, cmd, outcome, t0)
            problems[outcome] += 1
            st.problems[outcome] += 1
            self._attempt_done(outcome)
            too_long = too_long + 1 if outcome == "nack_too_long" else 0
            if too_long >= self.TOO_LONG_REPEATS:
                st.failed += 1
                self.pending = None
                raise FrameTooLong(cmd, seq, Status.TOO_LONG, f"{n_payload} bytes, NACKed {too_long} times in a row")
            if max_attempts is not None and attempts >= max_attempts:
                reason = f"the attempt limit (retries={max_attempts - 1}) was reached"
                break
            wait = min(pause, end - clock.now())      # backoff: listen, then send the same bytes again
            pause = min(2 * pause, self.backoff_max)
            if wait > 0:
                st.paused += wait
                late = self._await((seq, _frame_sid(frame), cmd), wait, problems, answers_only=True)
                if isinstance(late, Frame):
                    st.late += 1
                    return self._answered(seq, cmd, late, t0)
            if clock.now() >= end:
                reason = f"the link stayed dead past the {deadline:g} s deadline"
                break
        st.failed += 1
        elapsed = clock.now() - t0
        st.longest = max(st.longest, elapsed)
        self.pending = (seq, cmd, frame, n_payload, timeout)
        raise LinkTimeout(cmd, seq, attempts, problems, elapsed=elapsed, deadline=deadline, reason=reason)

    def _answered(self, seq, cmd, fr, t0):
        st = self.stats
        self.pending = None
        st.longest = max(st.longest, self.clock.now() - t0)
        if fr.status == Status.OK:
            st.ok += 1
            self._attempt_done("ok")
            return fr.payload
        st.device_errors += 1
        self._attempt_done("device_error")
        raise device_error(cmd, seq, fr.status)

    def _note(self, ev, problems):
        if isinstance(ev, ParseError):
            problems[f"rx_{ev.kind}"] += 1
            self.stats.problems[f"rx_{ev.kind}"] += 1
            return None
        if not ev.is_response:
            self.stats.echoes += 1
            return None
        return ev

    def _await(self, expect, wait, problems, answers_only=False):
        """Read until the response to `expect` = (seq, sid, cmd) comes or `wait` seconds of the
        transport's clock pass. answers_only (a backoff pause): NACKs do not end the wait, only an
        answer does."""
        clock = self.clock
        until = clock.now() + wait
        while True:
            while self.backlog:
                fr = self._note(self.backlog.popleft(), problems)
                if fr is None:
                    continue
                if (fr.seq, fr.sid, fr.cmd) != expect:
                    self.stats.stale += 1
                    continue
                if fr.status == Status.CRC:
                    if not answers_only:
                        return "nack_crc"
                elif fr.status == Status.TOO_LONG:   # our LEN was corrupted on the way (or is too long)
                    if not answers_only:
                        return "nack_too_long"
                else:
                    return fr
            remaining = until - clock.now()
            if remaining <= 0:
                return "timeout"
            data = self.transport.read(remaining)
            self.stats.bytes_read += len(data)
            if not data:     # an idle line: the whole wait passes (at once on a virtual clock)
                clock.sleep(until - clock.now())
                return "timeout"
            self.backlog.extend(self.parser.feed(data))
