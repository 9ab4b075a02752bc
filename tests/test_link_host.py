"""Host side of the link, pure Python: frames, parser resynchronisation, retries, device model,
driver, fault injection (undetected must be 0), the serial backend over a pty, the CSR map
builder and the generated sw/csr_map.py. (The RTL against the same model: tb/test_link.py.)"""
import json
import os
import struct
import threading
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sw import csr_map
from sw.devmodel import DeviceModel
from sw.driver import Board, MapMismatch
from sw.faults import model_session
from sw.link import (HEADER, OVERHEAD, SYNC, BadAddress, BadArgument, BadLength, Cmd, DeviceTimeout, Frame,
                     FrameParser, FrameTooLong, LinkError, LinkTimeout, ParseError, ReadOnlyRegister,
                     ResponseOverflow, Status, UnknownCommand, build_frame, hchk)
from sw.transport import FAULT_KINDS, FaultyTransport, ModelTransport, SerialTransport, Transport

HSET = settings(max_examples=200, deadline=None)


def frames_of(events):
    return [e for e in events if isinstance(e, Frame)]


# ------------------------------------------------------------------ frame format

def test_frame_layout_and_crc():
    f = build_frame(0x3412, Cmd.CSR_READ, b"\x0a\x00\x01\x00", sid=0xBEEF)
    assert f[:2] == SYNC == b"\xa5\x5a"
    assert f[2:10] == bytes([0x12, 0x34, 0xEF, 0xBE, 0x10, 0, 4, 0])
    assert f[10:12] == struct.pack("<H", zlib.crc32(f[2:10]) & 0xFFFF) == hchk(f[2:10])
    assert struct.unpack("<I", f[-4:])[0] == zlib.crc32(f[2:-4])
    assert len(f) == 16 + 4
    (fr,) = FrameParser().feed(f)
    assert (fr.seq, fr.sid, fr.code, fr.payload, fr.is_response) == (0x3412, 0xBEEF, 0x10, b"\x0a\x00\x01\x00", False)


@HSET
@given(st.lists(st.tuples(st.binary(max_size=40), st.integers(0, 255), st.integers(0, 255), st.binary(max_size=300)),
                max_size=8),
       st.lists(st.integers(1, 64), max_size=10))
def test_parser_finds_every_frame_behind_any_garbage(items, cuts):
    """Garbage (anything, including sync bytes and false headers) between frames never hides a frame:
    the parser rescans after every rejected candidate; abort_partial() releases a false candidate
    that waits for bytes which never come."""
    stream, sent = b"", []
    for garbage, seq, code, payload in items:
        f = build_frame(seq, code, payload)
        stream += garbage + f
        sent.append((seq, code, payload))
    p = FrameParser()
    got, pos = [], 0
    for c in cuts + [len(stream)]:          # arbitrary chunking
        got += frames_of(p.feed(stream[pos:pos + c]))
        pos += c
    got += frames_of(p.feed(stream[pos:]))
    for _ in range(len(stream) + 1):
        got += frames_of(p.abort_partial())
    # every sent frame is found, in order (garbage may add extra valid frames only with ~2^-40 odds)
    it = iter((g.seq, g.code, g.payload) for g in got)
    assert all(any(x == s for x in it) for s in sent)


@HSET
@given(st.binary(min_size=1, max_size=200), st.integers(0, 7), st.data())
def test_any_single_corruption_is_detected(payload, bit, data):
    f = bytearray(build_frame(7, Cmd.PING, payload))
    i = data.draw(st.integers(2, len(f) - 1))
    f[i] ^= 1 << bit
    assert not frames_of(FrameParser().feed(bytes(f)) + FrameParser().abort_partial())


# ------------------------------------------------------------------ device model semantics

def transact(m, seq, cmd, payload=b"", sid=0):
    (fr,) = frames_of(FrameParser().feed(m.feed(build_frame(seq, cmd, payload, sid=sid))))
    assert (fr.seq, fr.sid, fr.cmd) == (seq & 0xFFFF, sid, cmd) and fr.is_response
    return fr


def test_model_duplicate_is_replayed_not_executed():
    m = DeviceModel()
    f = build_frame(5, Cmd.CSR_WRITE, struct.pack("<HHI", csr_map.LINK_SCRATCH, 0, 42))
    r1 = m.feed(f)
    assert m.counters["executed"] == 1
    assert m.feed(f) == r1 and m.counters["executed"] == 1 and m.counters["dup_frames"] == 1
    bad = bytearray(f)
    bad[-1] ^= 1
    nack = frames_of(FrameParser().feed(m.feed(bytes(bad))))[0]
    assert nack.status == Status.CRC and m.counters["crc_errors"] == 1
    assert m.feed(f) == r1 and m.counters["executed"] == 1        # the record survives a NACK
    # same SEQ, different frame: STALE, not executed; the next SEQ executes
    w43 = struct.pack("<HHI", csr_map.LINK_SCRATCH, 0, 43)
    assert transact(m, 5, Cmd.CSR_WRITE, w43).status == Status.STALE
    assert m.counters["executed"] == 1 and m.values["link_scratch"] == 42
    assert transact(m, 6, Cmd.CSR_WRITE, w43).status == Status.OK
    assert m.counters["executed"] == 2 and m.values["link_scratch"] == 43


def test_model_stale_frames_and_sessions():
    """Older frames of the session and frames of an earlier session are answered STALE, never executed;
    only the newest frame is replayed; OPEN starts a session (expected values written out by hand)."""
    m = DeviceModel()
    w = [build_frame(s, Cmd.CSR_WRITE, struct.pack("<HHI", csr_map.LINK_SCRATCH, 0, s), sid=0) for s in range(4)]
    for f in w:
        m.feed(f)
    assert m.values["link_scratch"] == 3 and m.counters["executed"] == 4
    for f in w[:3]:                                  # late duplicates: STALE
        assert frames_of(FrameParser().feed(m.feed(f)))[0].status == Status.STALE
    assert m.values["link_scratch"] == 3 and m.counters["executed"] == 4 and m.counters["dup_frames"] == 3
    assert frames_of(FrameParser().feed(m.feed(w[3])))[0].status == Status.OK    # the newest: replayed
    assert m.counters["executed"] == 4
    # a frame of another session: STALE, unless it is OPEN; then the old session's frames are STALE
    assert transact(m, 100, Cmd.PING, b"x", sid=7).status == Status.STALE
    assert transact(m, 0x8003, Cmd.OPEN, sid=7).status == Status.OK and m.counters["executed"] == 5
    assert transact(m, 0x8004, Cmd.PING, b"y", sid=7).payload == b"y"
    for s in (4, 5, 0x9000):                         # session 0's frames, whatever their SEQ
        assert transact(m, s, Cmd.CSR_WRITE, struct.pack("<HHI", csr_map.LINK_SCRATCH, 0, 9)).status == Status.STALE
    assert m.values["link_scratch"] == 3 and m.counters["executed"] == 6
    # SEQ wrap: 0xFFFF -> 0 is newer; half the SEQ space behind is older
    assert transact(m, 0xFFFF, Cmd.PING, sid=7).status == Status.OK
    assert transact(m, 0x0000, Cmd.PING, sid=7).status == Status.OK
    assert transact(m, 0x8001, Cmd.PING, sid=7).status == Status.STALE          # 0x7FFF behind
    assert transact(m, 0x8000, Cmd.PING, sid=7).status == Status.OK             # 0x8000 behind = ahead


def _evil(seq=0x7777):
    """A complete valid CSR_WRITE of link_scratch, carried inside payloads: it must never execute."""
    return build_frame(seq, Cmd.CSR_WRITE, struct.pack("<HHI", csr_map.LINK_SCRATCH, 0, 0xEEEEEEEE))


def _logged(m):
    """Record what the model executes: (SID, SEQ, code, payload)."""
    log, execute = [], m._execute

    def run(code, p):
        log.append((m.sid_rx, m.seq, code, p))
        return execute(code, p)
    m._execute = run
    return log


def _mangle(f, how, i):
    b = bytearray(f)
    i %= len(b)
    if how == 0:
        b[i] ^= 1 << (i % 8)
    elif how == 1:
        del b[i:]
    else:
        del b[i]
    return bytes(b)


_frames = st.builds(lambda s, c, p: build_frame(s, c, p), st.integers(0, 255),
                    st.sampled_from([Cmd.PING, Cmd.STATUS, Cmd.CSR_WRITE, 0x33]), st.binary(max_size=16))
_carriers = st.builds(lambda s, k, e: build_frame(s, Cmd.PING, bytes(k) + _evil(e)), st.integers(0, 255),
                      st.integers(0, 8), st.integers(0, 0xFFFF))
_too_long = st.builds(lambda s, n, k: (lambda h: SYNC + h + hchk(h) + bytes(k) + _evil() + bytes(n + 4 - k - 24))(
    struct.pack(HEADER, s, 0, Cmd.PING, 0, n)), st.integers(0, 255), st.integers(65, 120), st.integers(0, 30))
_chunk = st.one_of(st.binary(min_size=1, max_size=40), st.just(SYNC), _frames, _carriers, _too_long,
                   st.builds(_mangle, st.one_of(_frames, _carriers, _too_long), st.integers(0, 2), st.integers(0, 999)))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_chunk, st.booleans()), max_size=14), st.lists(st.integers(0, 13), max_size=4))
def test_model_executes_only_commands_sent_each_once(chunks, late):
    """Any mix of garbage, frames, frames carrying a complete frame in their payload (accepted, NACKed,
    TOO_LONG or corrupted), late duplicates, with or without an idle line between: only frames sent as
    commands execute, none twice, the carried write never; afterwards a frame is answered. A chunk that
    ends inside a frame is followed by an idle line, as on the link (docs/link.md: the framing is sound
    because an unanswered host waits its timeout; without that gap a truncated frame followed at once by
    a TOO_LONG carrier let the carried write execute, hypothesis found it about 1 run in 10)."""
    m = DeviceModel(max_payload=64, max_response=64)
    log = _logged(m)
    chunks = chunks + [chunks[i % len(chunks)] for i in late if chunks]
    sent = set()
    for c, idle in chunks:
        fr = FrameParser().feed(c)
        if fr and isinstance(fr[0], Frame) and c[:2] == SYNC and len(c) == OVERHEAD + len(fr[0].payload):
            sent.add((fr[0].sid, fr[0].seq, fr[0].code, fr[0].payload))
        m.feed(c)
        if idle or m.state in ("HDR", "HCHK", "PAYLOAD", "CRC"):
            m.idle()    # bytes that end inside a frame get no answer: the stop-and-wait host waits its timeout
    assert all(x in sent for x in log), log
    keys = [x[:2] for x in log]
    assert len(keys) == len(set(keys)), log
    assert m.values["link_scratch"] != 0xEEEEEEEE
    m.idle()
    assert transact(m, 9, Cmd.OPEN, sid=0xA11E).status == Status.OK
    assert transact(m, 10, Cmd.PING, b"alive", sid=0xA11E).payload == b"alive"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 30), st.integers(0, 2), st.integers(0, 99)),
                min_size=1, max_size=20))
def test_model_commands_execute_exactly_once(plan):
    """A host's commands 0..n-1 (each CSR_WRITE scratch = i), each followed by chosen faults: repeats of
    it, a late duplicate of an earlier one, a corrupted copy or a frame carrying an earlier one, an
    idle line: every command executes exactly once, in order."""
    m = DeviceModel()
    log = _logged(m)
    base = 0xFFF0                                     # (SEQ wraps past 0xFFFF)
    cmd = [build_frame(base + i, Cmd.CSR_WRITE, struct.pack("<HHI", csr_map.LINK_SCRATCH, 0, i), sid=3)
           for i in range(len(plan))]
    m.feed(build_frame(base - 1, Cmd.OPEN, sid=3))
    for i, (reps, back, fault, pos) in enumerate(plan):
        for _ in range(1 + reps):
            m.feed(cmd[i])
        old = cmd[max(0, i - back)]
        m.feed(old)                                   # late duplicate (or a repeat)
        if fault == 1:
            m.feed(_mangle(cmd[i], pos % 3, pos))
        elif fault == 2:
            m.feed(build_frame(base + i, Cmd.PING, old, sid=3))   # same SEQ, other frame: STALE
        m.idle()
    assert [x[1] for x in log] == [(base + i) & 0xFFFF for i in range(-1, len(plan))]
    assert m.values["link_scratch"] == len(plan) - 1


def test_model_errors():
    m = DeviceModel(max_payload=64, max_response=32, stream=lambda w: list(w) * 3)
    assert transact(m, 1, 0x70).status == Status.UNKNOWN_CMD
    assert transact(m, 2, Cmd.CSR_READ, struct.pack("<HH", csr_map.SIZE, 1)).status == Status.BAD_ADDR
    assert transact(m, 3, Cmd.CSR_READ, struct.pack("<HH", 0, 9)).status == Status.BAD_ARG
    assert transact(m, 4, Cmd.CSR_WRITE, struct.pack("<HHI", csr_map.LINK_ID, 0, 1)).status == Status.READ_ONLY
    assert transact(m, 5, Cmd.STREAM, bytes(12)).status == Status.OVERFLOW
    assert transact(m, 6, Cmd.PING, bytes(40)).status == Status.BAD_LENGTH
    (fr,) = frames_of(FrameParser().feed(m.feed(build_frame(7, Cmd.PING, bytes(65)))))
    assert fr.status == Status.TOO_LONG and m.counters["dropped_frames"] == 1
    m.stream = lambda w: None
    assert transact(m, 8, Cmd.STREAM, bytes(4)).status == Status.TIMEOUT
    flags = transact(m, 9, Cmd.STATUS).payload
    assert struct.unpack("<8I", flags)[1] & (1 << 4)              # stream_timeout flag


def test_model_truncated_frame_and_timeout():
    m = DeviceModel()
    f = build_frame(1, Cmd.PING, b"abc")
    assert m.feed(f[:-2]) == b""
    m.idle()
    assert m.counters["dropped_frames"] == 1
    assert frames_of(FrameParser().feed(m.feed(f)))[0].payload == b"abc"


# ------------------------------------------------------------------ link retries and errors

class Scripted(Transport):
    """Device model behind a transport that loses chosen responses / requests."""

    def __init__(self, model, lose_responses=(), lose_requests=()):
        self.inner = ModelTransport(model)
        self.clock = self.inner.clock             # virtual time: a lost answer costs no wall time
        self.lose_resp, self.lose_req = set(lose_responses), set(lose_requests)
        self.writes = 0

    def write(self, data):
        self.writes += 1
        if self.writes not in self.lose_req:
            self.inner.write(data)

    def read(self, timeout):
        data = self.inner.read(timeout)
        return b"" if self.writes in self.lose_resp else data


def test_lost_response_is_retried_and_replayed():
    m = DeviceModel()
    c = Board(Scripted(m, lose_responses={2, 3}), retries=3, timeout=0.1)
    c.link.open_session()                   # write 1: OPEN
    c.write_csr("link_scratch", 99)
    assert m.values["link_scratch"] == 99
    assert m.counters["executed"] == 2 and m.counters["dup_frames"] == 2
    assert c.link.stats.retries == 2 and c.link.stats.problems["timeout"] == 2


def test_link_timeout_names_the_command():
    c = Board(Scripted(DeviceModel(), lose_requests=set(range(2, 10))), retries=2, timeout=0.05)
    c.link.open_session()
    with pytest.raises(LinkTimeout) as e:
        c.read_csr("link_scratch")
    assert "CSR_READ" in str(e.value) and "3 attempts" in str(e.value) and "3 x timeout" in str(e.value)
    assert "attempt limit (retries=2)" in str(e.value)      # retries= is still an upper bound
    assert e.value.attempts == 3


def test_payload_limit_before_open():
    """Before open() the host refuses a payload above the default max_payload (1024) without sending it."""
    m = DeviceModel()
    tr = Scripted(m)
    link = Board(tr, retries=0, timeout=0.05).link
    with pytest.raises(FrameTooLong) as e:
        link.transact(Cmd.PING, bytes(1025))
    assert tr.writes == 0 and ("refused by the host, not sent: TOO_LONG -- 1025 bytes > the device's max_payload 1024"
                               in str(e.value))
    assert link.transact(Cmd.PING, bytes(1024)) == bytes(1024)      # (OPEN, then the PING)
    assert tr.writes == 2


def test_second_host_session_then_the_first_again():
    """Host B opens a session: host A's next command is STALE (not executed), A opens a new session
    and the command executes once; B's frames are then STALE, never executed."""
    m = DeviceModel()
    a, b = Board.model(model=m).open(), Board.model(model=m).open()
    b.write_csr("link_scratch", 1)
    frame_b = build_frame(b.link.seq - 1, Cmd.CSR_WRITE, struct.pack("<HHI", csr_map.LINK_SCRATCH, 0, 1),
                          sid=b.link.sid)
    e0 = m.counters["executed"]
    a.write_csr("link_scratch", 2)
    assert m.counters["executed"] == e0 + 2 and m.counters["dup_frames"] == 1     # OPEN + write; 1 STALE
    assert frames_of(FrameParser().feed(m.feed(frame_b)))[0].status == Status.STALE   # B's write, late
    assert a.read_csr("link_scratch") == 2


class Forger(Transport):
    """Answers every request with a valid OK response of the same SEQ, but `change`d."""

    def __init__(self, change):
        self.change, self.out = change, b""

    def write(self, data):
        fr = FrameParser().feed(data)[0]
        seq, sid, cmd = self.change(fr.seq, fr.sid, fr.cmd)
        self.out += build_frame(seq, 0x80 | cmd, b"\x00" * 40, sid=sid)

    def read(self, timeout):
        out, self.out = self.out, b""
        return out


@pytest.mark.parametrize("change", [lambda q, s, c: (q, s, c ^ 0x11), lambda q, s, c: (q, s ^ 1, c),
                                    lambda q, s, c: (q ^ 0x100, s, c)], ids=["command", "session", "seq_high"])
def test_response_must_match_seq_session_and_command(change):
    link = Board(Forger(change), retries=1, timeout=0.05).link
    link.sid = 9                                    # (as if open)
    with pytest.raises(LinkTimeout):
        link.transact(Cmd.CSR_READ, struct.pack("<HH", 0, 10))
    assert link.stats.stale == 2
    ok = Board(Forger(lambda q, s, c: (q, s, c)), retries=1, timeout=0.05).link
    ok.sid = 9
    assert ok.transact(Cmd.CSR_READ, struct.pack("<HH", 0, 10)) == bytes(40)


def test_device_errors_raise_typed_exceptions():
    c = Board.model(model=DeviceModel(max_payload=64, max_response=32, stream=lambda w: None)).open()
    for exc, fn in [(UnknownCommand, lambda: c.link.transact(0x7A)),
                    (BadAddress, lambda: c.read_csr(0x3FF)),
                    (BadArgument, lambda: c.read_csr(0, 0)),
                    (ReadOnlyRegister, lambda: c.write_csr("link_version", 1, check=False)),
                    (BadLength, lambda: c.link.transact(Cmd.IDENTIFY, b"x")),
                    (DeviceTimeout, lambda: c.stream_command([1]))]:
        with pytest.raises(exc) as e:
            fn()
        assert "refused by the device" in str(e.value)
    with pytest.raises(FrameTooLong):
        c.ping(bytes(65))                     # refused on the host: the device's max_payload is known
    c2 = Board.model(model=DeviceModel(max_payload=64, max_response=32, stream=lambda w: [0] * 9))
    with pytest.raises(ResponseOverflow):
        c2.stream_command([1])
    with pytest.raises(FrameTooLong):         # max_payload unknown: TOO_LONG on every attempt
        c2.ping(bytes(100))


def test_driver_validation_and_names():
    c = Board.model().open()
    c.write_csr("LINK_SCRATCH", 0xFFFFFFFF)
    assert c.read_csr(csr_map.LINK_SCRATCH) == 0xFFFFFFFF
    with pytest.raises(ValueError):
        c.write_csr("link_scratch", 1 << 32)
    with pytest.raises(ValueError):
        c.write_csr("link_id", 1)
    with pytest.raises(KeyError):
        c.read_csr("no_such_register")
    info = c.identify()
    assert info["map_hash"] == csr_map.MAP_HASH and info["n_pe"] == 8 and info["rows"] == 128
    assert set(c.status()) == {"ctrl_status", "flags", "crc_errors", "framing_errors", "dropped_frames",
                               "dup_frames", "executed", "stream_discards"}
    c.reset(controller=True, counters=True)
    assert c.status()["executed"] == 1


def test_map_mismatch():
    m = DeviceModel()
    m.values["link_map_hash"] ^= 1
    with pytest.raises(MapMismatch, match="regenerate"):
        Board.model(model=m).open()
    m = DeviceModel()
    m.values["link_id"] = 0x12345678
    with pytest.raises(MapMismatch, match="not an mcnn device"):
        Board.model(model=m).open()


# ------------------------------------------------------------------ fault injection

@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fault_session_mixed(seed):
    r = model_session(3000, seed=seed, rate=0.3)
    assert r["undetected"] == 0, r["failures"]
    assert r["injected"] > 1000 and r["injected"] == r["detected"] + r["masked"]
    assert r["succeeded"] == 3000 and r["failed"] == 0, r["failures"]      # hangs up to deadline / 3 recover
    assert r["executed_twice"] == r["executed_lost"] == 0
    assert r["executed_growth"] == r["executed_bounds"][0] == r["executed_bounds"][1]
    assert r["hangs"] > 10 and 0 < r["hang_longest_s"] <= r["hang_max"] == r["deadline"] / 3


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_fault_session_each_kind(kind):
    from sw.driver import Board
    from sw.faults import run_session
    faulty = FaultyTransport(ModelTransport(DeviceModel()), seed=17, rate=0.1 if kind == "hang" else 0.25,
                             kinds=[kind], hang_max=4)
    r = run_session(Board(faulty, seq=3), faulty, 600, seed=17)
    assert r["undetected"] == 0 and r["failed"] == 0 and r["executed_twice"] == 0, r
    assert r["injected_by_kind"].get(kind, 0) > 50
    if kind == "repeat_frame":                   # answered from the replay record, never re-executed
        assert r["masked"] > 0 and r["device_counters"]["dup_frames"] >= r["injected_by_kind"][kind]


def test_hung_device_fails_cleanly():
    faulty = FaultyTransport(ModelTransport(DeviceModel()), seed=1, rate=0.0)
    c = Board(faulty, retries=3, timeout=0.05).open()
    faulty.hang(1000.0)
    with pytest.raises(LinkTimeout, match=r"4 attempts in .* s \(4 x timeout\); the attempt limit"):
        c.identify()
    faulty.hang_until = None
    assert c.identify()["id"] == 0x4D434E4E


def test_cli_board_faults_json(capsys):
    from sw.cli import main
    assert main(["board", "--sim", "faults", "--frames", "400", "--seed", "9", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for k in ("frames", "injected", "detected", "retried", "failed", "undetected", "executed_twice", "hangs"):
        assert isinstance(r[k], int), k
    assert r["source"] == "model" and r["frames"] == 400 and r["undetected"] == 0 and r["failed"] == 0
    assert (r["deadline"], r["hang_max"], r["retries"]) == (30.0, 10.0, None)     # the CLI's defaults
    assert main(["board", "--sim", "faults", "--frames", "50", "--deadline", "8", "--hang-max", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["deadline"], r["hang_max"], r["failed"]) == (8.0, 2.0, 0)
    assert main(["board", "--sim", "faults", "--frames", "5", "--deadline", "0.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deadline"] == 1.0     # never less than one timeout
    for bad in (["--deadline", "0"], ["--deadline", "inf"], ["--timeout", "-1"], ["--hang-max", "x"],
                ["--retries", "-1"]):
        assert main(["board", "--sim", "faults", "--frames", "5", *bad]) == 2     # a one-line argparse error
        assert bad[0] in capsys.readouterr().err


def test_cli_board_identify_and_errors(capsys):
    from sw.cli import main
    assert main(["board", "--sim", "identify"]) == 0
    out = capsys.readouterr().out
    assert "0x4d434e4e" in out and "n_pe" in out
    assert main(["board", "--port", "/dev/nonexistent-mcnn-port"]) == 2
    assert "nonexistent-mcnn-port" in capsys.readouterr().err


# ------------------------------------------------------------------ serial backend over a pty

def test_serial_transport_over_pty():
    """pyserial on a pty slave; the model device serves the master in a thread."""
    import select
    import tty
    master, slave = os.openpty()
    tty.setraw(slave)
    m = DeviceModel()
    stop = threading.Event()

    def device():
        while not stop.is_set():
            r, _, _ = select.select([master], [], [], 0.01)
            if r:
                out = m.feed(os.read(master, 4096))
            else:
                out = m.idle()
            if out:
                os.write(master, out)

    th = threading.Thread(target=device, daemon=True)
    th.start()
    try:
        c = Board(SerialTransport(os.ttyname(slave)), timeout=1.0).open()
        c.write_csr("link_scratch", 0xABCD)
        assert c.read_csr("link_scratch") == 0xABCD
        assert c.stream_command([5, 6]) == [0xFFFFFFFA, 0xFFFFFFF9]
        assert c.ping(bytes(range(256)) * 4) == bytes(range(256)) * 4
        c.close()
    finally:
        stop.set()
        th.join()
        os.close(slave)
        os.close(master)


# ------------------------------------------------------------------ CSR map builder and generated constants

def test_generated_csr_map_is_up_to_date():
    from rtl.hostgen import CSR_MAP_MODULE, project_map, render_csr_map
    assert CSR_MAP_MODULE.read_text() == render_csr_map(project_map()), \
        "sw/csr_map.py is out of date: run `python -m rtl.hostgen`"


def test_generated_link_proto_is_up_to_date():
    from rtl import protocol
    from rtl.hostgen import LINK_PROTO_MODULE, render_link_proto
    from sw import link
    assert LINK_PROTO_MODULE.read_text() == render_link_proto(), \
        "sw/link_proto.py is out of date: run `python -m rtl.hostgen`"
    assert {c.name: int(c) for c in link.Cmd} == {c.name: int(c) for c in protocol.Cmd}
    assert {s.name: int(s) for s in link.Status} == {s.name: int(s) for s in protocol.Status}
    assert (link.SYNC, link.RESPONSE, link.FLAG_BITS, link.COUNTERS, link.RESET_FLAGS_MASK) == \
        (protocol.SYNC, protocol.RESPONSE, protocol.FLAG_BITS, protocol.COUNTERS, protocol.RESET_FLAGS_MASK)


def test_map_builder_and_extra_blocks():
    from rtl import csr
    from rtl.link import LinkTop, link_block, with_map_hash
    ctrl = csr.Block("ctrl", [csr.Register("mode", width=2, doc="m"), csr.Register("busy", access="ro"),
                              csr.Register("irq", access="w1c", width=4)], windows={"state": ("busy", "irq")})
    cmap = with_map_hash([link_block(), ctrl])
    assert cmap["ctrl_mode"].addr == 32 and cmap["ctrl_irq"].addr == 34 and cmap.windows["ctrl_state"] == (33, 2)
    assert cmap.hash != with_map_hash([link_block()]).hash
    assert cmap["link_map_hash"].reg.reset == cmap.hash
    from rtl.hostgen import render_csr_map
    text = render_csr_map(cmap)
    ns = {}
    exec(text, ns)
    assert ns["CTRL_MODE"] == 32 and ns["REGISTERS"]["ctrl_irq"].access == "w1c" and ns["MAP_HASH"] == cmap.hash
    # the seam for the controller top: its registers come out of LinkTop as `regs`
    top = LinkTop(divisor=8, max_payload=64, max_response=64, blocks=[ctrl])
    assert set(top.regs.signature.members) == {"ctrl_mode", "ctrl_busy", "ctrl_irq", "ctrl_irq_set"}
    from amaranth.back import verilog
    assert "regs__ctrl_mode" in verilog.convert(top, name="link_top_ctrl", emit_src=False)
    with pytest.raises(ValueError):
        csr.Block("x", [csr.Register("a"), csr.Register("a")])
    with pytest.raises(ValueError):
        csr.Register("b", width=4, reset=16)
    with pytest.raises(ValueError):
        csr.Register("c", access="rw", const=True)
    with pytest.raises(ValueError):
        csr.build_map([ctrl, ctrl])


def test_csr_bank_bus_timing():
    """CsrBank decodes the address into registers: r_ok / w_ok a cycle after the address, read data
    two cycles after the strobe (the address on the bus since the cycle before), writes with the
    address on the bus since the cycle before the strobe; w1c set/clear; unmapped reads give 0."""
    from amaranth.sim import Simulator
    from rtl import csr
    blk = csr.Block("t", [csr.Register("k", access="ro", const=True, reset=0x1234), csr.Register("rw"),
                          csr.Register("st", access="ro"), csr.Register("fl", access="w1c", width=4),
                          csr.Register("pad")])
    cmap = csr.build_map([blk])        # 5 registers in 8 addresses: the last one is unmapped
    bank = csr.CsrBank(cmap)
    bus, regs = bank.bus, bank.regs
    out = {}

    async def tb(ctx):
        async def at(addr):                 # address on the bus, one cycle for the decode
            ctx.set(bus.addr, addr)
            await ctx.tick()

        async def read(addr):
            await at(addr)
            ok = (ctx.get(bus.r_ok), ctx.get(bus.w_ok))
            ctx.set(bus.r_stb, 1)
            await ctx.tick()
            ctx.set(bus.r_stb, 0)
            await ctx.tick()
            return ctx.get(bus.r_data), ok

        async def write(addr, value):
            await at(addr)
            ctx.set(bus.w_data, value)
            ctx.set(bus.w_stb, 1)
            await ctx.tick()
            ctx.set(bus.w_stb, 0)

        ctx.set(regs.t_st, 0xCAFE)
        out["k"] = await read(cmap["t_k"].addr)
        await write(cmap["t_rw"].addr, 0xDEADBEEF)
        out["rw"] = await read(cmap["t_rw"].addr)
        out["st"] = await read(cmap["t_st"].addr)
        ctx.set(regs.t_fl_set, 0b0101)
        await ctx.tick()
        ctx.set(regs.t_fl_set, 0)
        await write(cmap["t_fl"].addr, 0b0001)
        out["fl"] = await read(cmap["t_fl"].addr)
        out["none"] = await read(cmap.size - 1)

    sim = Simulator(bank)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert out["k"] == (0x1234, (1, 0)) and out["rw"] == (0xDEADBEEF, (1, 1)) and out["st"] == (0xCAFE, (1, 0))
    assert out["fl"] == (0b0100, (1, 1)) and out["none"] == (0, (0, 0))


def test_default_instances_elaborate():
    from rtl import csr, link, uart
    from tb.harness import to_verilog
    for mod in (csr, link, uart):
        for name, comp in mod.default_instances().items():
            assert f"module {name}(" in to_verilog(comp, name)


def test_parse_error_kinds():
    f = bytearray(build_frame(1, Cmd.PING, b"xyz"))
    f[3] ^= 0x40                                     # header byte -> HCHK mismatch
    assert ParseError("header") in FrameParser().feed(bytes(f))
    g = bytearray(build_frame(1, Cmd.PING, b"xyz"))
    g[13] ^= 1                                       # payload -> CRC
    assert ParseError("crc") in FrameParser().feed(bytes(g))
    head = struct.pack(HEADER, 1, 0, 0x81, 0, 500)
    assert ParseError("too_long") in FrameParser(max_len=100).feed(SYNC + head + hchk(head))


# ---------------------------------------------------------------- resolve(): exactly once after a timeout

class _Cut(ModelTransport):
    """The model device behind a line that can lose every request (`cut_tx`) or every response
    (`cut_rx`): a command then ends in LinkTimeout, executed or not."""

    def __init__(self, model):
        super().__init__(model)
        self.cut_tx = self.cut_rx = False

    def write(self, data):
        if not self.cut_tx:
            super().write(data)

    def read(self, timeout):
        data = super().read(timeout)
        return b"" if self.cut_rx else data


@pytest.mark.parametrize("lost", ["request", "response"])
def test_resolve_executes_exactly_once(lost):
    from sw.devmodel import DeviceModel
    from sw.driver import Board
    from sw.link import LinkTimeout
    t = _Cut(DeviceModel())
    c = Board(t, timeout=0.01, retries=2, resolve_tries=0)
    c.open()
    c.write_csr("link_scratch", 0)
    e0 = c.read_csr("link_executed")
    t.cut_tx, t.cut_rx = lost == "request", lost == "response"
    with pytest.raises(LinkTimeout):
        c.write_csr("link_scratch", 0x1234)
    t.cut_tx = t.cut_rx = False
    assert c.link.pending is not None
    assert c.link.resolve() == b""          # CSR_WRITE answers with an empty payload
    assert c.link.pending is None
    assert c.read_csr("link_scratch") == 0x1234
    # executed since e0 (a read counts after it is answered): that read, the write (once, whichever
    # way it was lost), the scratch read
    assert c.read_csr("link_executed") - e0 == 3
    with pytest.raises(LinkError):
        c.link.resolve()                    # nothing pending any more


# ---------------------------------------------------------------- byte counters (link_rx_bytes / link_tx_bytes)

def _read_bytes_counters(m, seq, sid=0):
    """(request, response, (rx, tx)): one CSR_READ of link_rx_bytes, link_tx_bytes fed to the model."""
    req = build_frame(seq, Cmd.CSR_READ, struct.pack("<HH", csr_map.LINK_RX_BYTES, 2), sid=sid)
    resp = m.feed(req)
    (fr,) = frames_of(FrameParser().feed(resp))
    assert fr.status == Status.OK
    return req, resp, struct.unpack("<2I", fr.payload)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.integers(0, 4)), max_size=10))
def test_model_counts_the_bytes_in_and_out(items):
    """link_rx_bytes / link_tx_bytes = the bytes this test put on and took off the line: garbage,
    frames, replays, NACKs, TOO_LONG, truncations (+ idle); reading includes its own request, not
    its response; RESET bit 1 clears them (the RESET's response counts after); 32 bits, wrapping."""
    m = DeviceModel(max_payload=64)
    sent = got = 0
    frames = [build_frame(1, Cmd.PING, b"hello"), build_frame(2, Cmd.STATUS), build_frame(3, Cmd.PING, bytes(65)),
              build_frame(4, Cmd.STREAM, bytes(8)), build_frame(5, Cmd.CSR_WRITE, struct.pack("<HHI", 0, 0, 1))]
    for it in items:
        data = frames[it] if isinstance(it, int) else it
        out = m.feed(data) + m.idle()
        sent, got = sent + len(data), got + len(out)
    req, resp, counted = _read_bytes_counters(m, 0x100)
    assert counted == (sent + len(req), got)
    got += len(resp)
    clear = build_frame(0x101, Cmd.RESET, struct.pack("<I", 2))
    ack = m.feed(clear)
    assert frames_of(FrameParser().feed(ack))[0].status == Status.OK
    req, resp, counted = _read_bytes_counters(m, 0x102)
    assert counted == (len(req), len(ack))
    m.counters["rx_bytes"] = 2**32 - 3                    # wrapping
    req, _, counted = _read_bytes_counters(m, 0x103)
    assert counted[0] == len(req) - 3


class _Counting(Transport):
    """Counts the bytes the host writes and reads through `inner`."""

    def __init__(self, inner):
        self.inner, self.clock = inner, inner.clock
        self.written = self.read_ = 0

    def write(self, data):
        self.written += len(data)
        self.inner.write(data)

    def read(self, timeout):
        data = self.inner.read(timeout)
        self.read_ += len(data)
        return data


def test_link_stats_count_bytes_written_and_read():
    """LinkStats.bytes_written / bytes_read = what the transport saw, retries and faults included;
    on a clean line the device's counters equal the host's (rx: this read's request included)."""
    m = DeviceModel()
    tr = _Counting(ModelTransport(m))
    c = Board(tr, timeout=0.1).open()
    c.write_csr("link_scratch", 7)
    r = c.link_bytes()
    assert (c.link.stats.bytes_written, c.link.stats.bytes_read) == (tr.written, tr.read_)
    assert (r["rx_bytes"], r["host_tx_bytes"]) == (tr.written, tr.written)
    assert (r["tx_bytes"], r["host_rx_bytes"]) == (tr.read_ - (OVERHEAD + 8), tr.read_)
    faulty = _Counting(FaultyTransport(ModelTransport(DeviceModel()), seed=4, rate=0.5))
    fc = Board(faulty, timeout=0.1, retries=20).open()
    for i in range(30):
        fc.write_csr("link_scratch", i)
    assert fc.link.stats.retries > 0
    assert (fc.link.stats.bytes_written, fc.link.stats.bytes_read) == (faulty.written, faulty.read_)


def test_cli_board_status_reports_bytes(capsys):
    from sw.cli import main
    assert main(["board", "--sim", "status", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    # open(): OPEN, PING 8 bytes, IDENTIFY (10 words back); STATUS (8 words back); this CSR_READ (4 bytes)
    sent = [0, 8, 0, 0, 4]
    back = [0, 8, 40, 32]
    assert r["rx_bytes"] == r["host_tx_bytes"] == sum(OVERHEAD + n for n in sent)
    assert r["tx_bytes"] == sum(OVERHEAD + n for n in back)
    assert r["host_rx_bytes"] == r["tx_bytes"] + OVERHEAD + 8
