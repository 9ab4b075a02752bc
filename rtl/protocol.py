"""The host protocol's facts, described once: the link's frame format, commands, status codes,
flags and counters (docs/link.md), and the host bridge's STREAM command set (rtl/host.py).

Pure Python (no Amaranth): rtl/link.py and rtl/host.py build the hardware from these values, and
rtl/hostgen.py renders them for the host as sw/link_proto.py and sw/host_proto.py (with the CSR
map, sw/csr_map.py); the host never imports rtl/.

Frame (both directions; all multi-byte fields little-endian):

    A5 5A | SEQ (u16) | SID (u16) | CODE | STATUS | LEN (u16) | HCHK (u16) | PAYLOAD (LEN bytes) | CRC (u32)
            '------------------- header -------------------'
    HCHK = crc32(header) & 0xFFFF,  CRC = crc32(header + HCHK + PAYLOAD)   (CRC-32/ISO-HDLC = zlib.crc32)

CODE is the command (bit 7 clear) in a request and RESPONSE | command in its response, whose
STATUS says what happened (0 in a request); a response echoes the request's SEQ and SID.
SID is the host session: OPEN makes a new one current, frames of any other session are STALE.
"""
from __future__ import annotations

import enum

# ------------------------------------------------------------------ link frames (rtl/link.py)

SYNC = b"\xA5\x5A"
HEADER = "<HHBBH"                             # SEQ, SID, CODE, STATUS, LEN (struct format)
HEADER_BYTES = 8
HCHK_BYTES = 2                                # low 16 bits of the CRC-32 of the header
OVERHEAD = len(SYNC) + HEADER_BYTES + HCHK_BYTES + 4   # 16 bytes around the payload
MAX_LEN = 0xFFFF
SEQ_HALF = 0x8000                             # SEQ (mod 2^16) at most this far behind the newest: STALE
RESPONSE = 0x80
CRC_POLY = 0xEDB88320                         # CRC-32/ISO-HDLC, reflected (= zlib.crc32)
ID_MAGIC = 0x4D434E4E                         # "MCNN", the link_id register
LINK_VERSION = 0x0002_0000                    # link protocol 2.0 (major << 16 | minor)


# command name -> (code, request payload -> response payload)
COMMANDS = {
    "PING": (0x01, "any bytes (<= max_payload, max_response) -> the same bytes"),
    "IDENTIFY": (0x02, "none -> the link_identify CSR window, u32 words"),
    "STATUS": (0x03, "none -> the link_status CSR window, u32 words"),
    "RESET": (0x04, "u32 flags (RESET_*) -> empty"),
    "OPEN": (0x05, "none (payload ignored) -> empty; the frame's SID becomes the device's session"),
    "CSR_READ": (0x10, "u16 addr, u16 count -> count u32 words"),
    "CSR_WRITE": (0x11, "u16 addr, u16 reserved (0), count u32 words -> empty"),
    "STREAM": (0x20, "n >= 1 u32 words -> controller command stream; response: its words"),
}
# status name -> (code, meaning)
STATUSES = {
    "OK": (0x00, "executed"),
    "CRC": (0x01, "the device received a frame with a valid header but a wrong CRC-32"),
    "TOO_LONG": (0x02, "LEN > the device's max_payload"),
    "UNKNOWN_CMD": (0x03, "unknown command code"),
    "BAD_LENGTH": (0x04, "payload length not valid for the command"),
    "BAD_ARG": (0x05, "an argument out of range (count 0 or too large, reserved bits set)"),
    "BAD_ADDR": (0x06, "CSR address not mapped"),
    "READ_ONLY": (0x07, "CSR write to a read-only register"),
    "TIMEOUT": (0x08, "the controller did not take / answer a STREAM command in time"),
    "OVERFLOW": (0x09, "the controller's response did not fit the device's response buffer"),
    "STALE": (0x0A, "not executed: an older frame of the session, or a frame of another session (not OPEN)"),
}
Cmd = enum.IntEnum("Cmd", {n: c for n, (c, _) in COMMANDS.items()}, module=__name__)   # link commands
Status = enum.IntEnum("Status", {n: c for n, (c, _) in STATUSES.items()}, module=__name__)  # CODE & 0x7F


# sticky bits of the link_flags register (w1c) and the link's counters (32-bit, wrapping), in register
# order: the events (in the STATUS window), then the bytes the link took in and sent out (link_rx_bytes,
# link_tx_bytes: separate registers after the others, outside the STATUS window)
FLAG_BITS = ("crc_error", "framing_error", "dropped_frame", "dup_frame", "stream_timeout",
             "stream_overflow", "uart_break", "stream_discard")
COUNTERS = ("crc_errors", "framing_errors", "dropped_frames", "dup_frames", "executed", "stream_discards",
            "rx_bytes", "tx_bytes")

RESET_CONTROLLER = 1 << 0   # pulse the controller's soft reset
RESET_COUNTERS = 1 << 1     # clear the link's counters (`executed` and the byte counters included)
RESET_FLAGS_MASK = RESET_CONTROLLER | RESET_COUNTERS

# ------------------------------------------------------------------ STREAM command set (rtl/host.py)

HOST_VERSION = 0x0001_0000       # command set 1.0 (major << 16 | minor)


class BridgeOp(enum.IntEnum):
    """Host bridge commands (op of a STREAM payload's header word)."""
    ECHO = 0x01
    INFER = 0x10
    TRAIN = 0x11
    FINISH = 0x12
    PROGRAM = 0x20
    READ = 0x21


class HostStatus(enum.IntEnum):
    """Host bridge status codes (the trailer word's status)."""
    OK = 0
    BAD_OP = 1
    BAD_LENGTH = 2
    BAD_ARG = 3


# the command set's words: fields are (bit offset, width)
BRIDGE = {
    "version": HOST_VERSION,
    "header": {"op": (0, 8), "reserved": (8, 8), "count": (16, 16)},
    "trailer": {"op": (0, 8), "status": (8, 8), "count": (16, 16)},
    "ops": {
        "ECHO": (BridgeOp.ECHO, "count words -> count words, each the complement ~w"),
        "INFER": (BridgeOp.INFER, "count images (IMAGE_WORDS each: pixels 4 per word, low byte first, then the "
                                  "label word) -> count results (RESULT_WORDS each)"),
        "TRAIN": (BridgeOp.TRAIN, "as INFER, with the controller's `train` input set: every image's delta and FC "
                                  "inputs go to the update engine"),
        "FINISH": (BridgeOp.FINISH, "count 0 -> FINISH_WORDS words (cells, failed, pulses, flags) once the "
                                    "batch's programming is over (upd_done)"),
        "PROGRAM": (BridgeOp.PROGRAM, "count cell words -> count write-verify results (PROG_RES fields)"),
        "READ": (BridgeOp.READ, "count cell words (target ignored) -> count verify-read codes (READ_RES fields)"),
    },
    "status": {s.name: (int(s), d) for s, d in (
        (HostStatus.OK, "executed"),
        (HostStatus.BAD_OP, "unknown op; every word of the payload dropped"),
        (HostStatus.BAD_LENGTH, "payload does not hold `count` items (a short image is padded with zeros and "
                                "its result returned; extra words are dropped)"),
        (HostStatus.BAD_ARG, "reserved header bits set, or a cell outside the array (answered REFUSED)"))},
    "cell": {"target": (0, 8), "bl": (8, 8), "row": (16, 8), "pe": (24, 8)},
    "prog_res": {"final_code": (0, 8), "pulses": (8, 16), "ok": (24, 1), "refused": (31, 1)},
    "read_res": {"code": (0, 8), "refused": (31, 1)},
    "finish": ("cells", "failed", "pulses", "flags"),
    "finish_flags": {"overflow": (0, 1)},
}
REFUSED = 1 << 31


def result_offsets(classes: int) -> dict:
    """Word offsets of a result: cls, logits, p, delta (each of `classes` words but cls)."""
    return {"cls": 0, "logits": 1, "p": 1 + classes, "delta": 1 + 2 * classes, "words": 1 + 3 * classes}
