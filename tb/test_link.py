"""Link layer (rtl/link.py: LinkTop = UART + framer + command decoder + CSR bank) in co-simulation.

Golden reference: sw/devmodel.DeviceModel -- for the same bytes in, the RTL must send the same
bytes out (responses, NACKs, replayed responses) and keep the same counters. One Verilator
build (tb/cosim/link_cosim.LinkTb, shared with `mcnn board --device cosim`) runs, in order:

  frames_vs_model     every command, every status code, duplicates, CRC errors, TOO_LONG (LEN up to
                      0xFFFF, consumed whole), header errors (QUIET until idle), truncation with
                      and without the inter-byte timeout, garbage, SEQ reuse, late duplicates and
                      other sessions (STALE), OPEN, a complete CSR_WRITE frame carried in accepted,
                      NACKed, TOO_LONG and corrupted frames (never executed), a hung controller
                      (TIMEOUT), response overflow
  random_bytes_never_wedge
                      hypothesis: random and adversarial byte streams (frames carrying frames,
                      over-long frames, late duplicates) into the frame decoder; afterwards a
                      valid frame is always answered, the RTL equals the model, and the model
                      executed only frames sent as commands, each at most once
  sim_transport_driver
                      the unmodified host driver (sw/driver.py) in a thread over SimTransport:
                      identify, CSRs by name, streams, device errors, a fault-injection session
                      (undetected must be 0), a hung controller and a hung device
  pty_serial          pyserial (SerialTransport) on a pseudo-terminal whose master is bit-banged
                      onto the UART pins: driver operations, a line break and a framing error,
                      faults, a hung device
Then the CLI's co-simulated session (`mcnn board --sim faults --device cosim`) on the same build.
"""
import json
import random
import struct

from tb import harness
from tb.cosim.link_cosim import TB_PARAMS

try:
    import cocotb
except ImportError:
    cocotb = None

FAULT_FRAMES_SIM = 200
FAULT_FRAMES_PTY = 30


def model(**kw):
    from sw.devmodel import DeviceModel
    p = TB_PARAMS
    return DeviceModel(max_payload=p["max_payload"], max_response=p["max_response"],
                       params={"byte_timeout": p["byte_timeout"], "stream_timeout": p["stream_timeout"]}, **kw)


def frame(seq, cmd, payload=b"", sid=0):
    from sw.link import build_frame
    return build_frame(seq, cmd, payload, sid=sid)


def _too_long(seq, n, body=b""):
    """A PING header announcing n bytes (valid HCHK), then `body` and zeros up to n, then 4 CRC bytes."""
    from sw.link import HEADER, SYNC, hchk
    head = struct.pack(HEADER, seq, 0, 0x01, 0, n)
    return SYNC + head + hchk(head) + body + bytes(n + 4 - len(body))


def evil(value=0xEEEEEEEE, seq=0x7777, sid=0):
    """A complete valid CSR_WRITE of link_scratch: put inside payloads, it must never execute."""
    from sw import csr_map
    from sw.link import Cmd
    return frame(seq, Cmd.CSR_WRITE, struct.pack("<HHI", csr_map.LINK_SCRATCH, 0, value), sid=sid)


if cocotb is not None:
    from tb.cosim import link_cosim as lc

    @cocotb.test()
    async def frames_vs_model(dut):
        from sw import csr_map
        from sw.devmodel import complement_echo
        from sw.link import OVERHEAD, Cmd, FrameParser, Status
        await lc.start(dut)
        soft = []

        async def count_soft_resets():
            from cocotb.triggers import RisingEdge
            while True:
                await RisingEdge(dut.soft_reset)
                soft.append(1)
        cocotb.start_soon(count_soft_resets())

        drv = lc.ByteDriver(dut)
        mdl = model()
        rng = random.Random(7)
        seq = [0]
        log = []
        line = {"in": 0, "out": 0}                   # bytes this test put on and took off the line

        async def step(data, what, idle=False, expect=None):
            got = await drv.send(data)
            want = mdl.feed(data)
            if mdl.state != "HUNT":                  # the RTL settled through its byte timeout
                want += mdl.idle()
            if idle:
                got += await drv.wait(TB_PARAMS["byte_timeout"] + 50)
                want += mdl.idle()
            assert got == want, f"{what}: RTL sent {got.hex()}, model {want.hex()}"
            line["in"] += len(data)
            line["out"] += len(got)
            frames = [f for f in FrameParser().feed(got) if hasattr(f, "seq")]
            if expect is not None:
                assert frames and frames[-1].status == expect, f"{what}: {frames} (expected {expect!r})"
            log.append(what)
            return frames

        def f(cmd, payload=b"", s=None):
            if s is None:
                s = seq[0]
                seq[0] = (seq[0] + 1) & 0xFF
            return frame(s, cmd, payload)

        def csr_rd(addr, n=1):
            return struct.pack("<HH", addr, n)

        mp, mr = TB_PARAMS["max_payload"], TB_PARAMS["max_response"]
        for n in (0, 1, 3, 4, 5, 127, mr):
            await step(f(Cmd.PING, bytes(rng.randrange(256) for _ in range(n))), f"ping {n}", expect=Status.OK)
        await step(f(Cmd.PING, bytes(mr + 4)), "ping > max_response", expect=Status.BAD_LENGTH)
        fr = await step(f(Cmd.IDENTIFY), "identify", expect=Status.OK)
        ident = struct.unpack("<10I", fr[-1].payload)
        assert ident[0] == csr_map.REGISTERS["link_id"].reset and ident[2] == csr_map.MAP_HASH
        assert ident[8:] == (mp, mr)
        await step(f(Cmd.STATUS), "status", expect=Status.OK)
        await step(f(Cmd.IDENTIFY, b"\x00"), "identify with payload", expect=Status.BAD_LENGTH)
        await step(f(Cmd.STATUS, b"\x00" * 4), "status with payload", expect=Status.BAD_LENGTH)
        # CSRs
        sa = csr_map.LINK_SCRATCH
        await step(f(Cmd.CSR_WRITE, struct.pack("<HHI", sa, 0, 0xDEADBEEF)), "write scratch", expect=Status.OK)
        fr = await step(f(Cmd.CSR_READ, csr_rd(sa)), "read scratch", expect=Status.OK)
        assert fr[-1].payload == struct.pack("<I", 0xDEADBEEF)
        n_link = sum(r.startswith("link_") for r in csr_map.REGISTERS)
        await step(f(Cmd.CSR_READ, csr_rd(0, n_link)), "read the link block", expect=Status.OK)
        await step(f(Cmd.CSR_READ, csr_rd(0, mr // 4)), "read into unmapped", expect=Status.BAD_ADDR)
        await step(f(Cmd.CSR_READ, csr_rd(0, mr // 4 + 1)), "read too many", expect=Status.BAD_ARG)
        await step(f(Cmd.CSR_READ, csr_rd(0, 0)), "read count 0", expect=Status.BAD_ARG)
        await step(f(Cmd.CSR_READ, csr_rd(0xFFFF)), "read 0xffff", expect=Status.BAD_ADDR)
        await step(f(Cmd.CSR_READ, csr_rd(csr_map.SIZE)), "read map size", expect=Status.BAD_ADDR)
        await step(f(Cmd.CSR_READ, b"\x00" * 3), "read short", expect=Status.BAD_LENGTH)
        await step(f(Cmd.CSR_WRITE, struct.pack("<HHII", sa, 0, 1, 2)), "write scratch+ro", expect=Status.READ_ONLY)
        await step(f(Cmd.CSR_READ, csr_rd(sa)), "scratch unchanged", expect=Status.OK)
        await step(f(Cmd.CSR_WRITE, struct.pack("<HHI", csr_map.LINK_ID, 0, 1)), "write id", expect=Status.READ_ONLY)
        await step(f(Cmd.CSR_WRITE, struct.pack("<HHI", 0x7FFF, 0, 1)), "write unmapped", expect=Status.BAD_ADDR)
        await step(f(Cmd.CSR_WRITE, struct.pack("<HHI", sa, 1, 1)), "write reserved", expect=Status.BAD_ARG)
        await step(f(Cmd.CSR_WRITE, struct.pack("<HH", sa, 0)), "write no data", expect=Status.BAD_LENGTH)
        await step(f(Cmd.CSR_WRITE, struct.pack("<HHI", sa, 0, 1) + b"\x00"), "write odd", expect=Status.BAD_LENGTH)
        # streams (complement echo)
        for n in (1, 2, 8, mr // 4):
            words = [rng.randrange(1 << 32) for _ in range(n)]
            fr = await step(f(Cmd.STREAM, struct.pack(f"<{n}I", *words)), f"stream {n}", expect=Status.OK)
            assert list(struct.unpack(f"<{n}I", fr[-1].payload)) == [(~w) & 0xFFFFFFFF for w in words]
        await step(f(Cmd.STREAM, bytes(4 * (mr // 4 + 1))), "stream overflow", expect=Status.OVERFLOW)
        await step(f(Cmd.STREAM), "stream empty", expect=Status.BAD_LENGTH)
        await step(f(Cmd.STREAM, b"\x00" * 6), "stream odd", expect=Status.BAD_LENGTH)
        dut.hang.value = 1
        mdl.stream = lambda words: None
        await step(f(Cmd.STREAM, bytes(8)), "stream hung controller", expect=Status.TIMEOUT)
        dut.hang.value = 0
        mdl.stream = complement_echo
        # unknown commands, reset
        for c in (0x00, 0x7F, 0x55, 0x12):
            await step(f(c, b"abc"), f"unknown {c:#x}", expect=Status.UNKNOWN_CMD)
        await step(f(Cmd.RESET, b"\x01"), "reset short", expect=Status.BAD_LENGTH)
        await step(f(Cmd.RESET, struct.pack("<I", 4)), "reset reserved bit", expect=Status.BAD_ARG)
        n_soft = len(soft)
        await step(f(Cmd.RESET, struct.pack("<I", 1)), "soft reset", expect=Status.OK)
        assert len(soft) == n_soft + 1, "soft_reset pulse missing"
        # duplicates: replayed, not executed
        d = f(Cmd.CSR_WRITE, struct.pack("<HHI", sa, 0, 0x11111111))
        await step(d, "write A", expect=Status.OK)
        await step(d, "write A again (replay)", expect=Status.OK)
        bad = bytearray(d)
        bad[14] ^= 0x10                              # a payload byte
        await step(bytes(bad), "write A with a bit flip", expect=Status.CRC)
        await step(d, "write A replayed after a CRC NACK", expect=Status.OK)
        await step(d + d + d, "write A three times", expect=Status.OK)
        assert mdl.counters["dup_frames"] == 5
        s = seq[0] - 1
        await step(frame(s, Cmd.CSR_WRITE, struct.pack("<HHI", sa, 0, 0x22222222)), "same seq, new frame",
                   expect=Status.STALE)
        fr = await step(f(Cmd.CSR_READ, csr_rd(sa)), "read scratch", expect=Status.OK)
        assert fr[-1].payload == struct.pack("<I", 0x11111111)
        await step(d, "write A after a later command (stale)", expect=Status.STALE)
        newest = seq[0] - 1                          # (the read above)
        await step(frame(newest - 0x7FFF, Cmd.CSR_WRITE, struct.pack("<HHI", sa, 0, 3)), "2^15 - 1 SEQs behind",
                   expect=Status.STALE)
        await step(evil(sid=5), "another session's write", expect=Status.STALE)
        await step(frame(s + 0x7000, Cmd.OPEN, sid=5), "OPEN session 5", expect=Status.OK)
        await step(f(Cmd.PING, b"old session"), "session 0 after OPEN", expect=Status.STALE)
        seq[0] = s + 0x7001
        fr = await step(f(Cmd.CSR_READ, csr_rd(sa), s=seq[0]), "read scratch", expect=Status.STALE)
        fr = await step(frame(seq[0], Cmd.CSR_READ, csr_rd(sa), sid=5), "read scratch in session 5",
                        expect=Status.OK)
        assert fr[-1].payload == struct.pack("<I", 0x11111111)
        await step(frame(0, Cmd.OPEN), "OPEN session 0 again", expect=Status.OK)
        seq[0] = 1
        # complete valid frames inside payloads never execute
        ex = mdl.counters["executed"]
        await step(f(Cmd.PING, evil()), "PING carrying a write", expect=Status.OK)
        bad = bytearray(f(Cmd.PING, evil()))
        bad[-2] ^= 4
        await step(bytes(bad), "bad-CRC PING carrying a write", expect=Status.CRC)
        await step(_too_long(98, mp + 4, evil()), "TOO_LONG carrying a write", expect=Status.TOO_LONG)
        for i in (0, 1, 2, 3, 8, 9, 10, 11):         # sync, SEQ, LEN, HCHK corrupted: the rest is ignored
            for pre in (b"", b"\x00"):
                bad = bytearray(f(Cmd.PING, pre + evil() + evil(seq=0x7778)))
                bad[i] ^= 0x21
                await step(bytes(bad), f"corrupted byte {i} before a write", idle=True)
        fr = await step(f(Cmd.CSR_READ, csr_rd(sa)), "scratch untouched", expect=Status.OK)
        assert fr[-1].payload == struct.pack("<I", 0x11111111) and mdl.counters["executed"] == ex + 2
        # framing faults
        g = f(Cmd.PING, b"hello")
        assert not await step(b"\x00\xff\xa5\xa5\x13" + g, "garbage before a frame: ignored until idle")
        await step(g, "the frame again", expect=Status.OK)
        h = bytearray(f(Cmd.PING, b"x"))
        h[8] ^= 1                                    # LEN corrupted -> HCHK mismatch: ignored until idle
        assert not await step(bytes(h) + f(Cmd.PING, b"after"), "header error then a frame")
        await step(f(Cmd.PING, b"after"), "the frame again", expect=Status.OK)
        await step(_too_long(99, mp + 1), "LEN above max_payload", expect=Status.TOO_LONG)
        await step(_too_long(97, 0xFFFF), "LEN 0xFFFF", expect=Status.TOO_LONG)
        t = f(Cmd.PING, b"truncated")
        await step(t[:-3], "truncated frame + inter-byte timeout", idle=True)
        await step(f(Cmd.PING, b"next"), "frame after the timeout", expect=Status.OK)
        await step(t[:12] + f(Cmd.PING, b"swallowed"), "truncated frame then a frame")
        await step(f(Cmd.PING, b"retry"), "the retry", idle=True)
        await step(b"\xa5", "lone sync byte + timeout", idle=True)
        await step(b"\xa5\x5a\x01", "partial header + timeout", idle=True)
        # flags (w1c): clear two bits, the rest stay
        await step(f(Cmd.CSR_WRITE, struct.pack("<HHI", csr_map.LINK_FLAGS, 0, 0b101)), "clear flags 0,2",
                   expect=Status.OK)
        fr = await step(f(Cmd.STATUS), "status after faults", expect=Status.OK)
        st = struct.unpack("<8I", fr[-1].payload)
        assert st[1] & 0b101 == 0 and st[1] & 0b1010 == 0b1010, f"flags {st[1]:#x}"

        async def byte_counters(what):
            """(rx, tx) read by a CSR_READ sent back to back with a PING, and the line's bytes before: the
            read counts its own request, not its response nor the PING's first byte (held in the input register)."""
            before = dict(line)
            req = f(Cmd.CSR_READ, csr_rd(csr_map.LINK_RX_BYTES, 2))
            fr = await step(req + f(Cmd.PING, b"next"), what, expect=Status.OK)
            return struct.unpack("<2I", fr[0].payload), (before["in"] + len(req), before["out"])

        counted, counted_by_test = await byte_counters("byte counters")
        assert counted == counted_by_test, f"byte counters {counted}, the test counted {counted_by_test}"
        await step(f(Cmd.RESET, struct.pack("<I", 2)), "clear counters", expect=Status.OK)
        at_clear = dict(line)
        fr = await step(f(Cmd.STATUS), "status after clear", expect=Status.OK)
        assert struct.unpack("<8I", fr[-1].payload)[2:] == (0, 0, 0, 0, 1, 0)
        counted, (n_in, n_out) = await byte_counters("byte counters after clear")   # (RESET's answer counted)
        assert counted == (n_in - at_clear["in"], n_out - at_clear["out"] + OVERHEAD), counted
        dut._log.info(f"{len(log)} steps, RTL == model; counters {mdl.counters}")

    @cocotb.test()
    async def random_bytes_never_wedge(dut):
        """hypothesis: any byte stream (garbage, frames, mangled frames, frames carrying a complete
        CSR_WRITE frame in their payload, over-long frames, late duplicates), then a quiet line, then
        a valid frame -> answered; RTL == model; the model executed only frames sent as commands,
        each at most once, and the embedded write never (link_scratch read back)."""
        import warnings

        from cocotb.task import bridge, resume
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st
        from hypothesis.errors import HypothesisSideeffectWarning
        warnings.filterwarnings("ignore", category=HypothesisSideeffectWarning)

        from sw.link import Cmd, FrameParser, Status
        await lc.start(dut)
        drv = lc.ByteDriver(dut)
        stats = {"examples": 0, "bytes": 0, "responses": 0}

        from sw import csr_map

        @resume
        async def run(data: bytes):
            await lc.reset(dut, 2)
            mdl = model()
            log = []
            execute = mdl._execute

            def logged(code, p):                     # what the model executes: (SID, SEQ, command, payload)
                log.append((mdl.sid_rx, mdl.seq, code, p))
                return execute(code, p)
            mdl._execute = logged
            got = await drv.send(data)
            want = mdl.feed(data)
            got += await drv.wait(TB_PARAMS["byte_timeout"] + 50)
            want += mdl.idle()
            before = list(log)                       # (not the frames below)
            after = frame(0x41, Cmd.OPEN, sid=0xA11E) + frame(0x42, Cmd.PING, b"alive?", sid=0xA11E)
            got_p = await drv.send(after)
            want_p = mdl.feed(after)
            tail = frame(0x43, Cmd.CSR_READ, struct.pack("<HH", csr_map.LINK_SCRATCH, 1), sid=0xA11E) + \
                frame(0x44, Cmd.STATUS, sid=0xA11E)
            got_s = await drv.send(tail)
            want_s = mdl.feed(tail)
            # the byte counters (since the reset): every byte of this example in, every byte out
            nb = frame(0x45, Cmd.CSR_READ, struct.pack("<HH", csr_map.LINK_RX_BYTES, 2), sid=0xA11E)
            got_b = await drv.send(nb)
            assert got_b == mdl.feed(nb), "byte counters differ from the model"
            counted = struct.unpack("<2I", [x for x in FrameParser().feed(got_b) if hasattr(x, "seq")][0].payload)
            assert counted == (len(data) + len(after) + len(tail) + len(nb), len(got) + len(got_p) + len(got_s)), \
                f"byte counters {counted} after {data.hex()}"
            return got, want, got_p, want_p, got_s, want_s, before

        cmds = st.sampled_from([Cmd.PING, Cmd.IDENTIFY, Cmd.STATUS, Cmd.STREAM, 0x33])
        frames = st.builds(lambda s, c, p: frame(s, c, p), st.integers(0, 255), cmds, st.binary(max_size=24))
        carriers = st.builds(lambda s, k: frame(s, Cmd.PING, bytes(k) + evil()), st.integers(0, 255),
                             st.integers(0, 8))
        too_long = st.builds(lambda s, n: _too_long(s, n, evil()), st.integers(0, 255),
                             st.integers(TB_PARAMS["max_payload"] + 1, TB_PARAMS["max_payload"] + 40))

        def mangle(fr_, how, i):
            b = bytearray(fr_)
            i %= len(b)
            if how == 0:
                b[i] ^= 1 << (i % 8)
            elif how == 1:
                del b[i:]
            elif how == 2:
                del b[i]
            return bytes(b)

        chunk = st.one_of(
            st.binary(min_size=1, max_size=64),
            st.just(b"\xa5\x5a"),
            frames, carriers, too_long,
            st.builds(mangle, st.one_of(frames, carriers), st.integers(0, 2), st.integers(0, 1000)),
        )

        @bridge
        def prop():
            @settings(max_examples=120, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(st.lists(chunk, max_size=12), st.lists(st.integers(0, 11), max_size=3))
            def check(chunks, late):
                chunks = chunks + [chunks[i % len(chunks)] for i in late if chunks]     # late duplicates
                data = b"".join(chunks)
                got, want, got_p, want_p, got_s, want_s, log = run(data)
                assert got == want, f"garbage phase: RTL {got.hex()} != model {want.hex()}"
                fr = [x for x in FrameParser().feed(got_p) if hasattr(x, "seq")]
                assert fr and fr[-1].seq == 0x42 and fr[-1].status == Status.OK and fr[-1].payload == b"alive?", \
                    f"wedged: no answer to a valid frame after {data.hex()}"
                assert got_p == want_p
                assert got_s == want_s, "counters differ from the model"
                sent = {k for c in chunks for k in _commands(c)}
                keys = [x[:2] for x in log]
                assert all(x in sent for x in log), f"executed a frame not sent as a command: {log}"
                assert len(keys) == len(set(keys)), f"a frame executed twice: {log}"
                rd = [x for x in FrameParser().feed(got_s) if hasattr(x, "seq")][0]
                assert rd.payload != struct.pack("<I", 0xEEEEEEEE), "the embedded write executed"
                stats["examples"] += 1
                stats["bytes"] += len(data)
                stats["responses"] += len([x for x in FrameParser().feed(got) if hasattr(x, "seq")])
            check()

        await prop()
        dut._log.info(f"hypothesis: {stats}")

    @cocotb.test()
    async def sim_transport_driver(dut):
        await lc.start(dut)

        def host(tr, bridge):
            from sw import csr_map
            from sw.driver import Board
            from sw.faults import run_session
            from sw.link import (BadAddress, BadLength, Cmd, DeviceTimeout, LinkTimeout, ReadOnlyRegister, Status,
                                 UnknownCommand)
            from sw.transport import FaultyTransport
            c = Board(tr, timeout=10.0).open()
            info = c.identify()
            assert info["id"] == 0x4D434E4E and info["n_pe"] == 8 and info["rows"] == 128 and info["bls"] == 16
            assert info["input_bits"] == 8 and info["adc_bits"] == 8
            assert (info["max_payload"], info["max_response"]) == (TB_PARAMS["max_payload"], TB_PARAMS["max_response"])
            c.write_csr("link_scratch", 0xCAFEF00D)
            assert c.read_csr("LINK_SCRATCH") == 0xCAFEF00D
            assert c.read_csr("link_byte_timeout") == TB_PARAMS["byte_timeout"]
            assert c.read_csr(0, 3)[0] == info["id"]
            assert c.stream_command([1, 2, 3]) == [0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFC]
            for exc, fn in [(ReadOnlyRegister, lambda: c.write_csr("link_id", 5, check=False)),
                            (BadAddress, lambda: c.read_csr(csr_map.SIZE + 3)),
                            (UnknownCommand, lambda: c.link.transact(0x66)),
                            (BadLength, lambda: c.link.transact(Cmd.STATUS, b"x"))]:
                try:
                    fn()
                    raise AssertionError(f"{exc.__name__} not raised")
                except exc as e:
                    assert "refused by the device" in str(e) and Status(e.status).name in str(e)
            c.reset(controller=True, counters=True)
            assert c.status()["executed"] == 1
            # a fault-injection session over the same link
            faulty = FaultyTransport(tr, seed=11, rate=0.25, hang_max=8)
            fc = Board(faulty, timeout=10.0, retries=5, seq=200)
            r = run_session(fc, faulty, FAULT_FRAMES_SIM, seed=11, source="cosim")
            assert r["undetected"] == 0, r
            assert r["injected"] > 0 and r["retried"] > 0
            c.write_csr("link_scratch", 0xCAFEF00D)
            # hung controller: the device answers TIMEOUT
            c.write_csr("link_stream_timeout", 500)
            bridge.hang = 1
            try:
                c.stream_command([7])
                raise AssertionError("no DeviceTimeout")
            except DeviceTimeout as e:
                assert "TIMEOUT" in str(e)
            bridge.hang = 0
            c.write_csr("link_stream_timeout", TB_PARAMS["stream_timeout"])
            assert c.stream_command([7]) == [0xFFFFFFF8]
            # hung device: nothing comes back, the host's own timeout ends each attempt
            bridge.mute = True
            c.link.timeout, c.link.retries = 0.2, 2
            try:
                c.read_csr("link_scratch")
                raise AssertionError("no LinkTimeout")
            except LinkTimeout as e:
                assert "CSR_READ" in str(e) and "3 attempts" in str(e) and e.problems.get("timeout") == 3
            bridge.mute = False
            c.link.timeout, c.link.retries = 10.0, 4
            assert c.read_csr("link_scratch") == 0xCAFEF00D
            return r

        r = await lc.with_sim_transport(dut, host)
        dut._log.info("fault session over SimTransport: " + json.dumps({k: r[k] for k in (
            "frames", "injected", "detected", "masked", "retried", "failed", "undetected", "seconds")}))

    @cocotb.test()
    async def pty_serial(dut):
        await lc.start(dut)

        def host(path, bridge):
            from sw.driver import Board
            from sw.faults import run_session
            from sw.link import LinkTimeout
            from sw.transport import FaultyTransport, SerialTransport
            c = Board(SerialTransport(path), timeout=2.0).open()
            assert c.info["max_payload"] == TB_PARAMS["max_payload"]
            c.write_csr("link_scratch", 0x5EED)
            assert c.read_csr("link_scratch") == 0x5EED
            assert c.stream_command(list(range(10))) == [(~w) & 0xFFFFFFFF for w in range(10)]
            assert c.ping(bytes(range(100))) == bytes(range(100))
            s0 = c.status()
            bridge.line += [("break", 25), ("bad_stop", 0x5A)]   # the bridge sends these before later bytes
            s1 = c.status()
            assert s1["framing_errors"] - s0["framing_errors"] == 2, (s0, s1)
            assert s1["flags"] & 0b1000010 == 0b1000010        # framing_error, uart_break
            faulty = FaultyTransport(SerialTransport(path), seed=5, rate=0.2, hang_max=3)
            fc = Board(faulty, timeout=0.25, retries=5, seq=100)
            r = run_session(fc, faulty, FAULT_FRAMES_PTY, seed=5, source="cosim-uart")
            assert r["undetected"] == 0, r
            bridge.mute = True
            c.link.timeout, c.link.retries = 0.2, 1
            try:
                c.identify()
                raise AssertionError("no LinkTimeout")
            except LinkTimeout as e:
                assert "IDENTIFY" in str(e)
            bridge.mute = False
            c.link.timeout, c.link.retries = 2.0, 4
            assert c.identify() == c.info
            return r

        r = await lc.with_pty(dut, host)
        dut._log.info("fault session over the pty/UART: " + json.dumps({k: r[k] for k in (
            "frames", "injected", "detected", "masked", "retried", "failed", "undetected", "seconds")}))


def _commands(chunk: bytes) -> list:
    """The command a chunk sent at the top level (a whole valid frame): [(SID, SEQ, code, payload)]."""
    from sw.link import OVERHEAD, Frame, FrameParser
    fr = FrameParser().feed(chunk)
    if len(fr) >= 1 and isinstance(fr[0], Frame) and chunk.startswith(b"\xa5\x5a") and \
            len(chunk) == OVERHEAD + len(fr[0].payload):
        return [(fr[0].sid, fr[0].seq, fr[0].code, fr[0].payload)]
    return []


# ------------------------------------------------------------------ pytest side

def test_link(capsys):
    from sw.cli import main
    from tb.cosim.link_cosim import LinkTb
    harness.run_block(LinkTb(**TB_PARAMS), "link_tb", "tb.test_link", dict(TB_PARAMS))
    # the CLI's co-simulated fault session, same build
    assert main(["board", "--sim", "faults", "--device", "cosim", "--frames", "60", "--seed", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["source"] == "cosim" and r["frames"] == 60 and r["undetected"] == 0
    assert r["injected"] > 0 and r["injected"] == r["detected"] + r["masked"]
