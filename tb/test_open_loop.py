"""Open-loop programming (rtl/open_loop.py) against golden.hybrid: the pulse count of every cell
write equals nominal_pulses on li2018's nominal device, and a golden li2018 Crossbar driven by the
RTL's pulses ends bit for bit where golden PairProgrammer("open") leaves its own copy.

Part 1, counts: (code_now, target) pairs at the window edges (codes 0..30 and 190..255 against
targets around both edges, the exact tie 198 -> 199 that golden's float sums resolve to 1 pulse,
targets above the window top) and random pairs; expected: nominal_pulses(p, code, target) pulses,
all SET if target > code else RESET, on the command's cell, width = the pulse_cycles port, then one
result {ok 1, pulses n, final_code target}.
Part 2, board: golden PairProgrammer("open") applies random update commands (pairs of li2018's
4 PEs, fresh board with its stuck cells, |d| up to 250 codes) to board A; every cell write it makes
(cell, code read, target) goes to the RTL, whose pulses drive board B (a copy of the fresh A: one
Crossbar.open_loop per write with the pulses counted between results). B's verify reads agree with
the codes golden read, and at the end B's conductances and pulse count equal A's.
Random idle on cmd, back-pressure on req (the PE's programming drivers) and res.

Mutation seen caught: no window-top tie rule (198 -> 199: got 0 pulses, expected 1).
"""
import random

import numpy as np

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None

WIDTH = 3


def _pairs(rng):
    edge = list(range(0, 31)) + list(range(190, 256))
    tg = list(range(18, 32)) + list(range(192, 206)) + [255]
    out = [(198, 199), (199, 198), (200, 199), (0, 200), (255, 22), (22, 22), (0, 0)]
    out += [(rng.choice(edge), rng.choice(tg)) for _ in range(500)]
    out += [(rng.randrange(256), rng.randrange(256)) for _ in range(300)]
    return out


def _expected_pulses(cell, code, target, n):
    op = 0 if target > code else 1             # ReqOp.SET / RESET
    return [dict(op=op, pe=cell[0], row=cell[1], bl=cell[2], width=WIDTH)] * n


async def _counts(dut, blk, src, sink, pe, p, rng):
    from golden.hybrid import nominal_pulses
    us = p["us_per_code"]
    dev = _device()
    pairs = _pairs(rng)
    cells = [(rng.randrange(8), rng.randrange(128), rng.randrange(16)) for _ in pairs]
    n0, l0 = len(sink.items), len(pe.items)
    await src.send([dict(pe=c[0], row=c[1], bl=c[2], code=a, target=b) for c, (a, b) in zip(cells, pairs)])
    got = await harness.collect(sink, n0, len(pairs), timeout_cycles=2_000_000)
    want_res, want_req = [], []
    for c, (a, b) in zip(cells, pairs):
        n = nominal_pulses(dev, a * us, b * us, dev.max_pulses)
        want_res.append(dict(pe=c[0], row=c[1], bl=c[2], ok=1, pulses=n, final_code=b))
        want_req += _expected_pulses(c, a, b, n)
    harness.check(got, want_res, "results")
    harness.check(pe.items[l0:], want_req, "pulse requests")
    assert want_res[0]["pulses"] == 1, "the tie 198 -> 199 (golden: 1 pulse)"
    dut._log.info(f"{len(pairs)} pairs: counts and {len(want_req)} pulses equal golden's")


def _device():
    from golden.devices import preset
    return preset("li2018")


def _golden_writes(xb, rng, n_cmds):
    """golden PairProgrammer('open') on xb: random commands; returns its cell writes in order."""
    from golden.hybrid import PairProgrammer
    from golden.update import ProgramCommand
    writes = []

    class Rec(PairProgrammer):
        def _program(self, cell, code_now, target, direction, iteration):
            writes.append((cell, int(code_now), int(target)))
            super()._program(cell, code_now, target, direction, iteration)
    pp = Rec(xb, "open")
    for _ in range(n_cmds):
        d = rng.choice([rng.randint(-250, 250), rng.randint(-8, 8), rng.choice([-1, 1, 2, -2])])
        cmd = ProgramCommand(pe=rng.randrange(4), row_pos=2 * rng.randrange(64), bl=rng.randrange(16), m=0, n=0,
                             d_code=d)
        pp.apply(cmd, 0)
    return writes, pp.stats.pulses


async def _board(dut, blk, src, sink, pe, p, rng):
    from golden.crossbar import Crossbar
    from golden.devices import RESET, SET
    a = Crossbar("li2018", seed=p["seed"])
    b = a.copy()
    writes, pulses = _golden_writes(a, rng, p["cmds"])
    n0, l0, total = len(sink.items), len(pe.items), 0
    for cell, code, target in writes:
        assert b.verify_read(*cell) == code, f"board B reads {cell} differently from golden's plan"
        await src.send([dict(pe=cell[0], row=cell[1], bl=cell[2], code=code, target=target)])
        res = (await harness.collect(sink, n0, 1, timeout_cycles=100_000))[0]
        n0 += 1
        reqs = pe.items[l0:]
        l0 = len(pe.items)
        assert len(reqs) == res["pulses"] and all((r["pe"], r["row"], r["bl"]) == cell for r in reqs), (cell, res)
        if reqs:
            assert len({r["op"] for r in reqs}) == 1
            b.open_loop(*cell, SET if reqs[0]["op"] == 0 else RESET, len(reqs))
            total += len(reqs)
    assert total == pulses, f"RTL pulses {total}, golden {pulses}"
    assert np.array_equal(a.g, b.g), f"conductances differ at {np.argwhere(a.g != b.g)[:5].tolist()}"
    dut._log.info(f"board: {len(writes)} cell writes, {total} pulses; conductances equal golden's")


if cocotb is not None:
    @cocotb.test()
    async def open_loop_against_golden(dut):
        from rtl.open_loop import default_instances
        p = harness.params()
        blk = default_instances()["open_loop"]
        rng = random.Random(p["seed"])
        await harness.start_clock_and_reset(dut)
        dut.pulse_cycles.value = WIDTH
        src = harness.StreamSource(dut, "cmd", dut.clk, blk.cmd_layout, idle=0.3, rng=random.Random(1))
        sink = harness.StreamSink(dut, "res", dut.clk, blk.res_layout, backpressure=0.5, rng=random.Random(2))
        pe = harness.StreamSink(dut, "req", dut.clk, blk.req_layout, backpressure=0.4, rng=random.Random(3))
        cocotb.start_soon(sink.run())
        cocotb.start_soon(pe.run())         # the PE's pulse drivers, back-pressured
        await _counts(dut, blk, src, sink, pe, p, rng)
        await _board(dut, blk, src, sink, pe, p, rng)
        await harness.idle_cycles(dut.clk, 20)
        assert not int(dut.busy.value)


def test_open_loop():
    from golden.devices import NA_PER_US
    from golden.write_verify import VERIFY_LSB_NA
    from rtl.open_loop import default_instances
    harness.run_block(default_instances()["open_loop"], "open_loop_tb", "tb.test_open_loop",
                      {"seed": 18, "cmds": 150, "us_per_code": VERIFY_LSB_NA / NA_PER_US})


def test_open_loop_verilog():
    harness.lint_default_instances("rtl.open_loop")
