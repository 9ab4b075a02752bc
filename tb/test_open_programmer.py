"""Open-loop pair programming (rtl/open_programmer.py: the pair programmer's open mode + the open-loop
pulse unit) against golden.hybrid.PairProgrammer(xb, "open").apply on a golden li2018 Crossbar.

Board A is programmed by golden; board B (a copy of the fresh A: its stuck cells below the window,
cells one pulse from the floor) by the RTL: its verify reads (rd_req / rd_rsp) are answered from B,
its pulses (req) applied to B, one Crossbar.open_loop per write (the pulses of a write come
together; the next command's verify read closes the write). Commands: random pairs on all 8 PEs,
|d| from 1 (within the open-loop resolution: moved to the other device or dropped) to 300 (beyond
both rooms), parts near the window edges as the pairs fill up, batches closed by the end marker
(random overflow flag, which `done` repeats). Expected: B's verify reads in golden's order, the
pulse count of every batch, done only after the batch's last pulse, and at the end B's
conductances bit for bit A's. Random idle on cmd and rd_rsp, back-pressure on rd_req, req, done.

Mutation seen caught: a constant resolution of 1 code instead of golden's per-code tables (batch 0:
pulses RTL 695, golden 701).
"""
import random

import numpy as np

from tb import harness
from tb.cosim.open_board import Board

try:
    import cocotb
except ImportError:
    cocotb = None


def _commands(rng, n):
    from golden.update import ProgramCommand
    out = []
    for _ in range(n):
        d = rng.choice([rng.randint(-300, 300), rng.randint(-6, 6), rng.choice([-1, 1, -2, 2, 3, -3])]) or 1
        out.append(ProgramCommand(pe=rng.randrange(8), row_pos=2 * rng.randrange(4), bl=rng.randrange(4), m=0, n=0,
                                  d_code=d))
    return out


async def _run(dut):
    from cocotb.triggers import RisingEdge
    from golden.crossbar import Crossbar
    from golden.hybrid import PairProgrammer
    from rtl.open_programmer import default_instances
    p = harness.params()
    blk = default_instances()["open_programmer"]
    rng = random.Random(p["seed"])
    a = Crossbar("li2018", seed=p["seed"])
    b = a.copy()
    gold = PairProgrammer(a, "open")
    await harness.start_clock_and_reset(dut)
    dut.pulse_cycles.value = 2
    src = harness.StreamSource(dut, "cmd", dut.clk, blk.pp.cmd.payload.shape(), idle=0.3, rng=random.Random(1))
    done = harness.StreamSink(dut, "done", dut.clk, None, backpressure=0.5, rng=random.Random(2))
    board = Board(dut, blk, b, random.Random(3))
    for c in (done.run(), board.pulses_port(), board.reads_port()):
        cocotb.start_soon(c)
    for k in range(p["batches"]):
        cmds = _commands(rng, rng.choice([0, 1, p["cmds"]]))
        p0, r0 = gold.stats.pulses, len(board.reads)
        greads = []
        for c in cmds:
            greads += [(c.pe, c.row_pos, c.bl), (c.pe, c.row_pos + 1, c.bl)]
            gold.apply(c)
        ov = rng.randrange(2)
        items = [dict(pe=c.pe, row_pos=c.row_pos, bl=c.bl, m=0, n=0, d_code=c.d_code, end=0, overflow=0) for c in cmds]
        await src.send(items + [dict(pe=rng.randrange(8), row_pos=0, bl=0, m=0, n=0, d_code=rng.randint(-99, 99),
                                     end=1, overflow=ov)])
        await done.wait_for(k + 1, timeout_cycles=500_000)
        assert done.items[k] == ov, f"batch {k}: done payload {done.items[k]}, expected {ov}"
        assert board.pulses == int(dut.pulses.value) == gold.stats.pulses, \
            f"batch {k}: pulses RTL {board.pulses} / port {int(dut.pulses.value)}, golden {gold.stats.pulses}"
        assert board.reads[r0:] == greads, f"batch {k}: verify reads differ"
        dut._log.info(f"batch {k}: {len(cmds)} commands, {gold.stats.pulses - p0} pulses")
    board.flush()
    for _ in range(20):
        await RisingEdge(dut.clk)
    assert not int(dut.busy.value)
    assert gold.stats.failed == 0 and gold.stats.pulses > 0
    assert np.array_equal(a.g, b.g), f"conductances differ at {np.argwhere(a.g != b.g)[:5].tolist()}"
    dut._log.info(f"conductances equal golden's; {gold.stats.as_dict()}")


if cocotb is not None:
    @cocotb.test()
    async def open_programmer_against_golden(dut):
        await _run(dut)


def test_open_programmer():
    from rtl.open_programmer import default_instances
    harness.run_block(default_instances()["open_programmer"], "open_programmer_tb", "tb.test_open_programmer",
                      {"seed": 2018, "batches": 8, "cmds": 60})


def test_open_programmer_verilog():
    harness.lint_default_instances("rtl.open_programmer")
