"""Pure-Python model of the device end of the link (rtl/link.py), byte for byte.

It is the reference the RTL is checked against in tb/test_link.py (same bytes in -> same bytes
out, same counters) and the fast device behind `mcnn board --sim faults` (ModelTransport).
The inter-byte timeout is modelled by idle(): the line has been quiet for longer than the
device's byte_timeout (the transport calls it when the host waits for a response and nothing
comes). It ends a partial frame (dropped) and the QUIET state: after a header whose check failed
(its length is unknown) or a byte that cannot start a frame, the decoder ignores every byte until
the line has been idle, so it never looks for a frame inside another frame's payload; a frame
whose header is valid is always consumed whole (LEN + CRC bytes), even when refused (TOO_LONG).

stream(words) models the controller on the cmd/rsp streams: it returns the response words, or
None when the controller does not answer (-> TIMEOUT). The default, complement_echo, answers
every word w with ~w, the behaviour of the echo attached to the streams in the co-simulation.
"""
from __future__ import annotations

import struct
import zlib

from sw import csr_map
from sw.link import (COUNTERS, FLAG_BITS, HCHK_BYTES, HEADER, HEADER_BYTES, RESET_CONTROLLER, RESET_COUNTERS,
                     RESET_FLAGS_MASK, RESPONSE, SEQ_HALF, SYNC, Cmd, Status, build_frame, hchk)


SYNC0, SYNC1 = SYNC


def complement_echo(words):
    return [(~w) & 0xFFFFFFFF for w in words]


class DeviceModel:
    def __init__(self, *, max_payload: int | None = None, max_response: int | None = None, params: dict | None = None,
                 stream=complement_echo, registers=None, windows=None, size=None):
        self.regdefs = dict(registers or csr_map.REGISTERS)
        self.windows = dict(windows or csr_map.WINDOWS)
        self.size = size or csr_map.SIZE
        self.values = {n: r.reset for n, r in self.regdefs.items()}
        for k, v in (params or {}).items():
            self.values[f"link_{k}"] = v
        if max_payload is not None:
            self.values["link_max_payload"] = max_payload
        if max_response is not None:
            self.values["link_max_response"] = max_response
        self.max_payload = self.values["link_max_payload"]
        self.max_response = self.values["link_max_response"]
        self.stream = stream
        self.by_addr = {r.addr: r for r in self.regdefs.values()}
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.ctrl_status = 0
        self.soft_resets = 0
        self.state = "HUNT"
        self.record = None          # (seq, crc, status, payload) of the session's newest executed frame
        self.sid = 0                # the current session (OPEN sets it)
        self._hdr = bytearray()
        self._payload = bytearray()
        self._crc = bytearray()
        self._skip = False          # consuming a TOO_LONG frame

    # ---- events
    def _event(self, counter, flag):
        self.counters[counter] += 1
        self.values["link_flags"] |= 1 << FLAG_BITS.index(flag)

    def idle(self) -> bytes:
        """The line was quiet for longer than byte_timeout: abandon a partial frame."""
        if self.state in ("HDR", "HCHK", "PAYLOAD", "CRC"):     # (not QUIET: counted when it began)
            self._event("dropped_frames", "dropped_frame")
        self.state = "HUNT"
        return b""

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for b in bytes(data):
            self.counters["rx_bytes"] += 1      # (before the byte: a frame's last byte counts when it executes)
            r = self._byte(b)
            self.counters["tx_bytes"] += len(r)   # (after: a response counts once it was built)
            out += r
        return bytes(out)

    def _byte(self, b: int) -> bytes:
        st = self.state
        if st == "HUNT":
            self.state = "SYNC1" if b == SYNC0 else "QUIET"
        elif st == "SYNC1":
            if b == SYNC1:
                self._hdr = bytearray()
                self._hchk = bytearray()
                self.state = "HDR"
            else:
                self.state = "QUIET"
        elif st == "HDR":
            self._hdr.append(b)
            if len(self._hdr) == HEADER_BYTES:
                self.state = "HCHK"
        elif st == "HCHK":
            self._hchk.append(b)
            if len(self._hchk) == HCHK_BYTES:
                self._header()
        elif st == "PAYLOAD":
            if not self._skip:
                self._payload.append(b)
            self._n += 1
            if self._n == self.length:
                self.state = "CRC"
        elif st == "CRC":
            self._crc.append(b)
            if len(self._crc) == 4:
                self.state = "HUNT"
                if self._skip:
                    self._event("dropped_frames", "dropped_frame")
                    return self._response(Status.TOO_LONG, b"")
                return self._check()
        return b""             # (QUIET: every byte ignored until idle())

    def _header(self):
        self.seq, self.sid_rx, self.code, _, self.length = struct.unpack(HEADER, self._hdr)
        if bytes(self._hchk) != hchk(bytes(self._hdr)):
            self._event("framing_errors", "framing_error")
            self.state = "QUIET"
            return
        self._skip = self.length > self.max_payload
        self._payload = bytearray()
        self._crc = bytearray()
        self._n = 0
        self.state = "CRC" if self.length == 0 else "PAYLOAD"

    def _stale(self, rcrc) -> bool:
        """Not the session's newest frame (replayed) nor a newer one: another session's (OPEN
        excepted), or a SEQ at most SEQ_HALF behind the newest (or equal, with another CRC)."""
        if self.sid_rx != self.sid:
            return self.code != Cmd.OPEN
        if self.record is None:
            return False
        behind = (self.record[0] - self.seq) & 0xFFFF
        return behind < SEQ_HALF and (behind or self.record[1] != rcrc)

    def _check(self) -> bytes:
        body = bytes(self._hdr) + bytes(self._hchk) + bytes(self._payload)
        rcrc = struct.unpack("<I", self._crc)[0]
        if zlib.crc32(body) != rcrc:
            self._event("crc_errors", "crc_error")
            return self._response(Status.CRC, b"")
        if self.sid_rx == self.sid and self.record is not None and self.record[:2] == (self.seq, rcrc):
            self._event("dup_frames", "dup_frame")
            return self._response(self.record[2], self.record[3])
        if self._stale(rcrc):
            self._event("dup_frames", "dup_frame")
            return self._response(Status.STALE, b"")
        self.record = None
        status, resp = self._execute(self.code, bytes(self._payload))
        if status != Status.OK:
            resp = b""
        self.counters["executed"] += 1
        self.record = (self.seq, rcrc, status, resp)
        self.sid = self.sid_rx
        return self._response(status, resp)

    def _response(self, status, payload) -> bytes:
        """The answer to the frame just received: its SEQ, SID and command, `status`."""
        return build_frame(self.seq, RESPONSE | self.code, payload, sid=self.sid_rx, status=status)

    # ---- CSRs
    def read_reg(self, addr: int) -> int:
        r = self.by_addr[addr]
        name = r.name
        if r.const:
            return self.values[name]
        short = name.removeprefix("link_")
        if short in self.counters:
            return self.counters[short] & 0xFFFFFFFF
        if name == "link_ctrl_status":
            return self.ctrl_status
        return self.values[name]

    def _read_burst(self, addr, count):
        for a in range(addr, addr + count):
            if a >= self.size or a not in self.by_addr:
                return Status.BAD_ADDR, b""
        return Status.OK, b"".join(struct.pack("<I", self.read_reg(a)) for a in range(addr, addr + count))

    def _execute(self, code, p: bytes):
        n = len(p)
        txw = self.max_response // 4
        w0 = struct.unpack_from("<I", p)[0] if n >= 4 else 0
        if code == Cmd.PING:
            return (Status.BAD_LENGTH, b"") if n > self.max_response else (Status.OK, p)
        if code in (Cmd.IDENTIFY, Cmd.STATUS):
            if n:
                return Status.BAD_LENGTH, b""
            return self._read_burst(*self.windows["link_identify" if code == Cmd.IDENTIFY else "link_status"])
        if code == Cmd.CSR_READ:
            if n != 4:
                return Status.BAD_LENGTH, b""
            addr, count = w0 & 0xFFFF, w0 >> 16
            if count == 0 or count > txw:
                return Status.BAD_ARG, b""
            return self._read_burst(addr, count)
        if code == Cmd.CSR_WRITE:
            if n < 8 or n % 4:
                return Status.BAD_LENGTH, b""
            if w0 >> 16:
                return Status.BAD_ARG, b""
            addr = w0 & 0xFFFF
            words = struct.unpack(f"<{n // 4 - 1}I", p[4:])
            for a in range(addr, addr + len(words)):
                if a >= self.size or a not in self.by_addr:
                    return Status.BAD_ADDR, b""
                if self.by_addr[a].access == "ro":
                    return Status.READ_ONLY, b""
            for a, w in zip(range(addr, addr + len(words)), words):
                r = self.by_addr[a]
                w &= (1 << r.width) - 1
                if r.access == "rw":
                    self.values[r.name] = w
                else:  # w1c
                    self.values[r.name] &= ~w
            return Status.OK, b""
        if code == Cmd.OPEN:
            return Status.OK, b""
        if code == Cmd.RESET:
            if n != 4:
                return Status.BAD_LENGTH, b""
            if w0 & ~RESET_FLAGS_MASK:
                return Status.BAD_ARG, b""
            if w0 & RESET_COUNTERS:
                self.counters = dict.fromkeys(COUNTERS, 0)
            if w0 & RESET_CONTROLLER:
                self.soft_resets += 1
            return Status.OK, b""
        if code == Cmd.STREAM:
            if n == 0 or n % 4:
                return Status.BAD_LENGTH, b""
            rsp = self.stream(list(struct.unpack(f"<{n // 4}I", p)))
            if rsp is None:
                self.values["link_flags"] |= 1 << FLAG_BITS.index("stream_timeout")
                return Status.TIMEOUT, b""
            if len(rsp) > txw:
                self.values["link_flags"] |= 1 << FLAG_BITS.index("stream_overflow")
                return Status.OVERFLOW, b""
            return Status.OK, b"".join(struct.pack("<I", w & 0xFFFFFFFF) for w in rsp)
        return Status.UNKNOWN_CMD, b""
