"""Host driver of the mcnn controller: Controller over a link transport (docs/link.md).

    from sw.driver import Controller
    with Controller.serial("/dev/ttyUSB0") as c:     # or Controller(SimTransport(...)), Controller.model()
        c.identify()                                 # {'id': 0x4D434E4E, 'version': ..., 'n_pe': 8, ...}
        c.write_csr("link_scratch", 0x1234)
        c.read_csr("link_scratch")                   # -> 0x1234
        c.status()                                   # controller status word, link flags and counters
        c.stream_command([w0, w1, ...])              # -> the controller's response words

CSR names and addresses come from sw/csr_map.py, generated from the RTL's map (rtl/csr.py);
open() checks the device's map hash against it. Every method either returns its result or
raises a sw.link.LinkError subclass that says what failed (LinkTimeout, DeviceError subclasses,
ProtocolError, MapMismatch).
"""
from __future__ import annotations

import os
import struct

from sw import csr_map
from sw.link import RESET_CONTROLLER, RESET_COUNTERS, Cmd, Link, LinkError, ProtocolError
from sw.transport import ModelTransport, SerialTransport

ID_MAGIC = csr_map.REGISTERS["link_id"].reset
VERSION_MAJOR = csr_map.REGISTERS["link_version"].reset >> 16


class MapMismatch(LinkError):
    """The device is not an mcnn design, or its CSR map differs from sw/csr_map.py."""


def _words(payload: bytes, cmd) -> list:
    if len(payload) % 4:
        raise ProtocolError(f"{Cmd(cmd).name}: response of {len(payload)} bytes is not whole u32 words")
    return list(struct.unpack(f"<{len(payload) // 4}I", payload))


class Controller:
    def __init__(self, transport, *, timeout: float = 1.0, retries: int = 4, seq: int | None = None,
                 on_attempt=None):
        self.transport = transport
        self.link = Link(transport, timeout=timeout, retries=retries, seq=seq, on_attempt=on_attempt)
        self.info = None

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
                              "regenerate sw/csr_map.py (python -m rtl.csr) for this bitstream")
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
        """One register -> int; with count=n, n consecutive registers -> list."""
        n = 1 if count is None else count
        words = _words(self.link.transact(Cmd.CSR_READ, struct.pack("<HH", self.addr(reg), n)), Cmd.CSR_READ)
        if len(words) != n:
            raise ProtocolError(f"CSR_READ: {len(words)} words, expected {n}")
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

    def stream_command(self, words) -> list:
        """Send payload words to the controller's command stream; return its response words.
        (The controller top defines what the words mean; this is the transport for them.)"""
        words = [int(w) & 0xFFFFFFFF for w in words]
        if not words:
            raise ValueError("stream_command needs at least one word")
        return _words(self.link.transact(Cmd.STREAM, struct.pack(f"<{len(words)}I", *words)), Cmd.STREAM)
