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
import struct
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field

from sw import csr_map

# the protocol's constants, generated from rtl/protocol.py (python -m rtl.hostgen); re-exported here
from sw.link_proto import (  # noqa: F401
    COUNTERS, FLAG_BITS, HCHK_BYTES, HEADER, HEADER_BYTES, MAX_LEN, OVERHEAD, RESET_CONTROLLER, RESET_COUNTERS,
    RESET_FLAGS_MASK, RESPONSE, SEQ_HALF, SYNC, Cmd, Status)

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
    """No valid response after all attempts (device hung, disconnected or the line too noisy)."""

    def __init__(self, cmd, seq, attempts, problems):
        self.cmd, self.seq, self.attempts, self.problems = cmd, seq, attempts, dict(problems)
        what = ", ".join(f"{n} x {k}" for k, n in sorted(self.problems.items())) or "nothing received"
        super().__init__(f"{_name(cmd)} (seq {seq}): no valid response after {attempts} attempts ({what})")


class ProtocolError(LinkError):
    """A response that passed its CRC but does not fit the command (wrong payload size, ...)."""


class DeviceError(LinkError):
    """The device executed (or refused) the command and answered with an error status."""
    status = None

    def __init__(self, cmd, seq, status, detail=""):
        self.cmd, self.seq = cmd, seq
        self.status = status
        name = Status(status).name if status in Status._value2member_map_ else f"status {status:#04x}"
        super().__init__(f"{_name(cmd)} (seq {seq}) refused by the device: {name}"
                         + (f" -- {detail}" if detail else ""))


class FrameTooLong(DeviceError):
    pass


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
    failed: int = 0          # commands (or resolve() calls) that raised LinkTimeout
    resolves: int = 0        # resolve() calls: a timed-out command sent again with its SEQ
    problems: Counter = field(default_factory=Counter)   # timeout, nack_crc, rx_crc, rx_header, ...
    stale: int = 0           # valid responses to an older SEQ (late or replayed), ignored
    echoes: int = 0          # valid *request* frames read back (a loop-back), ignored

    def as_dict(self):
        d = {k: v for k, v in self.__dict__.items() if k != "problems"}
        d["problems"] = dict(self.problems)
        return d


class Link:
    """Stop-and-wait command/response over a byte transport, with retries.

    transact(cmd, payload) returns the response payload of a successful command, raises a
    DeviceError subclass when the device answers with an error status (not retried: the device
    executed or deliberately refused the command), and LinkTimeout when no valid response came
    after 1 + retries attempts. A retry repeats the frame byte for byte (same SEQ), so the device
    replays its answer instead of executing the command twice.

    NACK(CRC) and NACK(TOO_LONG) are transmission errors (the frame was corrupted on the way) and
    are retried; TOO_LONG on every attempt raises FrameTooLong (the frame really is too long).

    on_attempt(outcome) is called after every attempt with one of "ok", "device_error",
    "timeout", "nack_crc", "nack_too_long" (fault-injection statistics use it).

    After a LinkTimeout the command may or may not have executed. resolve() settles it: it sends
    the same frame again (same SEQ), so the device executes it if it never arrived or replays its
    answer if it did -- exactly once either way, as long as no other frame was sent in between
    (the device keeps the record of its last frame only; a new transact() abandons the pending one).

    Sessions: the first transact() opens one (OPEN with a random SID); every frame carries the SID,
    and the device answers frames of any other session STALE without executing them, so no frame
    of an earlier host session can execute. A command answered STALE was not executed: transact()
    then opens a new session (another host took the device) and sends it once more.
    A payload above max_payload (the device's once open() read it, the default 1024 before) is
    refused before anything is sent.
    """

    def __init__(self, transport, *, timeout: float = 1.0, retries: int = 4, seq: int | None = None,
                 max_response: int = MAX_LEN, on_attempt=None):
        self.transport = transport
        self.timeout = timeout
        self.retries = retries
        self.seq = (int.from_bytes(os.urandom(2), "little") if seq is None else seq) & 0xFFFF
        self.parser = FrameParser(max_response)
        self.max_payload = DEFAULT_MAX_PAYLOAD   # the device's, once known (Board.open sets it)
        self.sid = None               # the session (SID of every frame), once OPEN was sent
        self.stats = LinkStats()
        self.on_attempt = on_attempt
        self.pending = None           # (seq, cmd, frame, payload bytes, timeout) of the last LinkTimeout

    def _attempt_done(self, outcome):
        if self.on_attempt is not None:
            self.on_attempt(outcome)

    def transact(self, cmd, payload: bytes = b"", *, timeout: float | None = None) -> bytes:
        payload = bytes(payload)
        if len(payload) > self.max_payload:
            raise FrameTooLong(cmd, self.seq, Status.TOO_LONG, f"{len(payload)} bytes > the device's max_payload "
                               f"{self.max_payload} (not sent)")
        if self.sid is None:
            self.open_session()
        try:
            return self._send(cmd, payload, timeout)
        except StaleFrame:          # not executed: another session took the device; open ours again
            self.open_session()
            return self._send(cmd, payload, timeout)

    def open_session(self) -> None:
        """Start a new session: OPEN with a new random SID (never 0, the device's SID after reset)."""
        self.sid = int.from_bytes(os.urandom(2), "little") % 0xFFFF + 1
        self._send(Cmd.OPEN, b"", None)

    def _send(self, cmd, payload, timeout) -> bytes:
        seq = self.seq
        self.seq = (seq + 1) & 0xFFFF
        self.pending = None
        self.stats.commands += 1
        return self._exchange(seq, cmd, build_frame(seq, cmd, payload, sid=self.sid), len(payload),
                              self.timeout if timeout is None else timeout, self.retries + 1, retry_first=False)

    def resolve(self, *, timeout: float | None = None, attempts: int | None = None) -> bytes:
        """Settle the command of the last LinkTimeout (see the class docstring): its response
        payload, a DeviceError, or LinkTimeout again (then it is still pending)."""
        if self.pending is None:
            raise LinkError("resolve: no command is pending (the last one was answered or abandoned)")
        seq, cmd, frame, n, t = self.pending
        self.stats.resolves += 1
        return self._exchange(seq, cmd, frame, n, t if timeout is None else timeout,
                              self.retries + 1 if attempts is None else attempts, retry_first=True)

    def _exchange(self, seq, cmd, frame, n_payload, timeout, attempts, retry_first):
        st = self.stats
        problems = Counter()
        for attempt in range(attempts):
            if attempt or retry_first:
                st.retries += 1
                for ev in self.parser.abort_partial():
                    self._note(ev, problems)
            st.attempts += 1
            self.transport.write(frame)
            outcome = self._await((seq, _frame_sid(frame), cmd), timeout, problems)
            if isinstance(outcome, Frame):
                self.pending = None
                if outcome.status == Status.OK:
                    st.ok += 1
                    self._attempt_done("ok")
                    return outcome.payload
                st.device_errors += 1
                self._attempt_done("device_error")
                raise device_error(cmd, seq, outcome.status)
            problems[outcome] += 1
            st.problems[outcome] += 1
            self._attempt_done(outcome)
        st.failed += 1
        if problems["nack_too_long"] == attempts:
            self.pending = None
            raise FrameTooLong(cmd, seq, Status.TOO_LONG, f"{n_payload} bytes, {attempts} attempts")
        self.pending = (seq, cmd, frame, n_payload, timeout)
        raise LinkTimeout(cmd, seq, attempts, problems)

    def _note(self, ev, problems):
        if isinstance(ev, ParseError):
            problems[f"rx_{ev.kind}"] += 1
            self.stats.problems[f"rx_{ev.kind}"] += 1
            return None
        if not ev.is_response:
            self.stats.echoes += 1
            return None
        return ev

    def _await(self, expect, timeout, problems):
        """Read until the response to `expect` = (seq, sid, cmd) arrives (a Frame) or an outcome string."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            data = self.transport.read(remaining)
            if not data:
                return "timeout"
            for ev in self.parser.feed(data):
                fr = self._note(ev, problems)
                if fr is None:
                    continue
                if (fr.seq, fr.sid, fr.cmd) != expect:
                    self.stats.stale += 1
                    continue
                if fr.status == Status.CRC:
                    return "nack_crc"
                if fr.status == Status.TOO_LONG:   # our LEN was corrupted on the way (or is too long)
                    return "nack_too_long"
                return fr
