"""Byte transports under the link layer.

A transport moves bytes: write(data) and read(timeout) -> bytes. read blocks until at least one
byte is there or the timeout has passed (then it returns b""); transports that know the device
is idle (nothing more can come) may return b"" early -- the simulation transports do, so a
simulated timeout costs no wall-clock time.

A transport also provides the clock the link's timeouts, backoff and deadline are measured on
(`transport.clock`: now() and sleep(s)): real time (RealClock) for a serial port, virtual time
(VirtualClock) for the simulated devices. The virtual clock advances by the line time of the bytes
written and read (at `baud`) and by every wait the host makes on an idle line, so a session under
faults is as fast as the simulation and deterministic, however long its (virtual) deadline.

  SerialTransport  pyserial, for the board (or a pseudo-terminal in the co-simulation tests)
  SimTransport     a socket to the co-simulated link (tb/cosim/link_cosim.py); the bytes go straight
                   into the link's byte stream, bypassing the UART PHY
  ModelTransport   the pure-Python device model (sw/devmodel.py), in-process and instant
  FaultyTransport  wraps any of them and injects seeded faults in both directions
"""
from __future__ import annotations

import random
import select
import socket
import struct
import time
from collections import Counter


class RealClock:
    """Wall-clock time (time.monotonic), for real devices."""
    virtual = False

    @staticmethod
    def now() -> float:
        return time.monotonic()

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def transfer(self, n_bytes: int) -> None:
        pass                     # real lines take their own time


class VirtualClock:
    """Simulated time: advanced by sleep() (an idle wait, a backoff pause) and by transfer(n), the
    line time of n bytes at `baud` (8N1: 10 bit times a byte)."""
    virtual = True

    def __init__(self, baud: int = 115200):
        self.t = 0.0
        self.byte_time = 10.0 / baud

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.t += seconds

    def transfer(self, n_bytes: int) -> None:
        self.t += n_bytes * self.byte_time


REAL_CLOCK = RealClock()


class Transport:
    clock = REAL_CLOCK

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def read(self, timeout: float) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialTransport(Transport):
    """A serial port through pyserial (8N1)."""

    def __init__(self, port: str, baudrate: int = 115200, **kw):
        import serial
        self.ser = serial.Serial(port, baudrate=baudrate, bytesize=8, parity="N", stopbits=1, timeout=0, **kw)

    def write(self, data: bytes) -> None:
        self.ser.write(data)
        self.ser.flush()

    def read(self, timeout: float) -> bytes:
        self.ser.timeout = max(0.0, timeout)
        first = self.ser.read(1)
        if not first:
            return b""
        self.ser.timeout = 0
        return first + self.ser.read(self.ser.in_waiting or 0)

    def close(self) -> None:
        self.ser.close()


# ---- SimTransport message protocol (host <-> co-simulation), over a stream socket:
#   type (1 byte) + length (u16 LE) + body
#   b"D": bytes for / from the link's byte streams
#   b"Q": the host waits for bytes (body: u32 token); the simulation answers b"I" with the same
#         token once everything sent before the query has been consumed and the link is idle
#         with nothing left to send -- i.e. no more bytes can come until the host writes again.
MSG_DATA, MSG_QUERY, MSG_IDLE = b"D", b"Q", b"I"


def pack_msg(kind: bytes, body: bytes = b"") -> bytes:
    return kind + struct.pack("<H", len(body)) + body


class MsgReader:
    """Incremental decoder of the SimTransport messages."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data: bytes):
        self.buf += data
        out = []
        while len(self.buf) >= 3:
            n = struct.unpack_from("<H", self.buf, 1)[0]
            if len(self.buf) < 3 + n:
                break
            out.append((bytes(self.buf[:1]), bytes(self.buf[3:3 + n])))
            del self.buf[:3 + n]
        return out


class SimTransport(Transport):
    """Socket to a co-simulated link (the simulation side is tb/cosim/link_cosim.py), on a virtual
    clock: read(timeout) waits (in wall-clock time) until bytes come or the simulation reports the
    link idle; the host's timeout is virtual time, so a slow simulation never times a command out.
    `wall_timeout` (seconds, at least the read's timeout) only guards against a stuck simulator."""

    def __init__(self, sock: socket.socket, wall_timeout: float = 120.0):
        self.sock = sock
        self.reader = MsgReader()
        self.rx = bytearray()
        self.token = 0
        self.idle_seen = False
        self.clock = VirtualClock()
        self.wall_timeout = wall_timeout

    @classmethod
    def connect(cls, path: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return cls(s)
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def write(self, data: bytes) -> None:
        self.clock.transfer(len(data))
        for i in range(0, len(data), 0xFFFF):
            self.sock.sendall(pack_msg(MSG_DATA, data[i:i + 0xFFFF]))

    def _pump(self, timeout: float) -> None:
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not r:
            return
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("co-simulation closed the socket")
        for kind, body in self.reader.feed(chunk):
            if kind == MSG_DATA:
                self.rx += body
            elif kind == MSG_IDLE and struct.unpack("<I", body)[0] == self.token:
                self.idle_seen = True

    def read(self, timeout: float) -> bytes:
        deadline = time.monotonic() + max(timeout, self.wall_timeout)
        if not self.rx:
            self.token = (self.token + 1) & 0xFFFFFFFF
            self.idle_seen = False
            self.sock.sendall(pack_msg(MSG_QUERY, struct.pack("<I", self.token)))
            while not self.rx and not self.idle_seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._pump(remaining)
        self._pump(0)
        data = bytes(self.rx)
        self.rx.clear()
        self.clock.transfer(len(data))
        return data

    def close(self) -> None:
        self.sock.close()


class ModelTransport(Transport):
    """The pure-Python device model, in-process, on a virtual clock; a read with nothing pending
    is an idle line."""

    def __init__(self, model):
        self.model = model
        self.rx = bytearray()
        self.clock = VirtualClock()

    def write(self, data: bytes) -> None:
        self.clock.transfer(len(data))
        self.rx += self.model.feed(data)

    def read(self, timeout: float) -> bytes:
        if not self.rx:
            self.rx += self.model.idle()
        data = bytes(self.rx)
        self.rx.clear()
        self.clock.transfer(len(data))
        return data


FAULT_KINDS = ("bitflip", "drop", "duplicate", "reorder", "truncate", "garbage", "repeat_frame", "hang")
KIND_WEIGHTS = {"repeat_frame": 0.5, "hang": 0.25}     # relative to 1 for the others


class FaultyTransport(Transport):
    """Injects seeded faults into the bytes of both directions.

    Each write (one frame from the host) is faulted with probability `rate`, and so is the answer
    to it, however the transport chunks the answer's bytes (whole from the model, 64-byte pieces
    from the co-simulation, a few bytes at a time from a serial port): with probability `rate` a
    byte position is drawn uniformly in [0, max(READ_CHUNK, frame length)) and the read chunk that
    holds the answer's byte at that position is faulted (an answer shorter than the position
    escapes: short answers are faulted proportionally less often). A faulted chunk gets 1-3
    faults drawn from `kinds`:
      bitflip       flip one bit of one byte
      drop          remove 1-3 consecutive bytes
      duplicate     repeat one byte
      reorder       swap two bytes 1-3 positions apart (bytes that differ)
      truncate      cut the chunk short
      garbage       insert 1-24 random bytes (sometimes starting with the sync bytes)
      repeat_frame  (host->device) send the whole frame twice
      hang          (host->device) the device stops responding for a time drawn uniformly from
                    (0, hang_max] seconds of the transport's clock: every frame written meanwhile
                    is lost (each one counted as a "hang" event)
    (repeat_frame and hang are drawn half / a quarter as often as the others).
    `injected` counts the events by kind; `events` is the running total (used to attribute
    faults to attempts); `hangs` the hangs started and `hang_longest` the longest (seconds).
    enabled=False passes everything through. The clock is the inner transport's.
    """

    READ_CHUNK = 32     # bytes: answers shorter than this are faulted proportionally less often

    def __init__(self, inner: Transport, seed: int = 0, rate: float = 0.1, kinds=FAULT_KINDS, hang_max: float = 6.0):
        self.inner = inner
        self.clock = getattr(inner, "clock", REAL_CLOCK)
        self.rng = random.Random(seed)
        self.rate = rate
        self.kinds = tuple(kinds)
        self.hang_max = hang_max
        self.injected = Counter()
        self.events = 0
        self.enabled = True
        self.hang_until = None      # clock time at which the current hang ends
        self.rx_fault_at = None     # position of the faulted byte in the answer to the last write
        self.rx_seen = 0            # bytes read since the last write
        self.hangs = 0
        self.hang_longest = 0.0

    def hang(self, seconds: float) -> None:
        """Make the device stop responding for `seconds` from now (also used by tests)."""
        self.hang_until = self.clock.now() + seconds
        self.hangs += 1
        self.hang_longest = max(self.hang_longest, seconds)

    @property
    def hanging(self) -> bool:
        return self.hang_until is not None and self.clock.now() < self.hang_until

    def _count(self, kind):
        self.injected[kind] += 1
        self.events += 1

    def _mutate(self, data: bytearray, direction: str) -> bytearray:
        rng = self.rng
        kinds = [k for k in self.kinds if direction == "h2d" or k not in ("repeat_frame", "hang")]
        if not kinds:
            return data
        weights = [KIND_WEIGHTS.get(k, 1.0) for k in kinds]
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            k = rng.choices(kinds, weights)[0]
            n = len(data)
            if k == "bitflip" and n:
                i = rng.randrange(n)
                data[i] ^= 1 << rng.randrange(8)
            elif k == "drop" and n:
                i = rng.randrange(n)
                del data[i:i + rng.randint(1, 3)]
            elif k == "duplicate" and n:
                i = rng.randrange(n)
                data[i:i] = data[i:i + 1]
            elif k == "reorder" and n >= 2:
                i = rng.randrange(n - 1)
                j = min(n - 1, i + rng.randint(1, 3))
                if data[i] == data[j]:
                    continue
                data[i], data[j] = data[j], data[i]
            elif k == "truncate" and n >= 2:
                del data[rng.randrange(1, n):]
            elif k == "garbage":
                g = bytes(rng.randrange(256) for _ in range(rng.randint(1, 24)))
                if rng.random() < 0.3:
                    g = b"\xA5\x5A" + g
                i = rng.randrange(n + 1)
                data[i:i] = g
            elif k == "repeat_frame":
                data = data + data
            elif k == "hang":
                self.hang(rng.uniform(0.0, self.hang_max) or self.hang_max)
                self._count(k)                  # the hang swallows this frame too
                return bytearray()
            else:
                continue
            self._count(k)
        return data

    def write(self, data: bytes) -> None:
        self.rx_seen, self.rx_fault_at = 0, None
        if self.enabled and self.rng.random() < self.rate:      # the answer to this frame gets faults
            self.rx_fault_at = self.rng.randrange(max(self.READ_CHUNK, len(data)))
        if self.enabled and self.hanging:
            self.clock.transfer(len(data))      # sent, but the device does not listen
            self._count("hang")
            return
        if self.enabled and self.rng.random() < self.rate:
            data = bytes(self._mutate(bytearray(data), "h2d"))
        if data:
            self.inner.write(data)

    def read(self, timeout: float) -> bytes:
        data = self.inner.read(timeout)
        at, n = self.rx_fault_at, len(data)
        self.rx_seen += n
        if self.enabled and at is not None and self.rx_seen - n <= at < self.rx_seen:
            self.rx_fault_at = None
            data = bytes(self._mutate(bytearray(data), "d2h"))
        return data

    def close(self) -> None:
        self.inner.close()
