"""Sign-rule pair programming (rtl/pair_pulser.py) against golden/pair_pulser.py.

Commands as the sign-rule update engine makes them (random PE, even row_pos, BL, d_code +-1) with
end markers (random overflow) among them: two markers in a row, a marker first, a d_code 0 command
(taken, no pulse). Expected: per command golden pulse_plan's two pulses (op, pe, row, bl; width =
the pulse_cycles port), per marker one `done` {overflow} after the pulses before it; the `pulses`
counter equals golden PairPulser's. Then a golden li2018 board B driven by the RTL's pulses
(Crossbar.open_loop per request) ends bit for bit where golden PairPulser leaves its copy A.
Random idle on cmd, back-pressure on req and done; and a run at full rate (no idle, no back-pressure).

Mutations seen caught: both pulses on G+ (row_pos for the SET of d < 0); the SET first.
"""
import random

import numpy as np

from tb import harness

try:
    import cocotb
except ImportError:
    cocotb = None

WIDTH = 5


def _commands(rng, n):
    from golden.update import ProgramCommand
    out = [None, None]                                           # markers first and twice in a row
    for _ in range(n):
        if rng.random() < 0.05:
            out.append(None)
        else:
            out.append(ProgramCommand(rng.randrange(8), 2 * rng.randrange(64), rng.randrange(16), rng.randrange(64),
                                      rng.randrange(10), rng.choice([-1, 1])))
    return out + [None]


def _item(c, rng):
    if c is None:
        return dict(pe=0, row_pos=0, bl=0, m=0, n=0, d_code=0, end=1, overflow=rng.randrange(2))
    return dict(pe=c.pe, row_pos=c.row_pos, bl=c.bl, m=c.m, n=c.n, d_code=c.d_code, end=0, overflow=0)


async def _run(dut, blk, p, idle, bp, seed):
    from golden.crossbar import Crossbar
    from golden.devices import SET
    from golden.pair_pulser import PairPulser, pulse_plan
    rng = random.Random(seed)
    src = harness.StreamSource(dut, "cmd", dut.clk, blk.cmd_layout, idle=idle, rng=random.Random(seed + 1))
    pe = harness.StreamSink(dut, "req", dut.clk, blk.req_layout, backpressure=bp, rng=random.Random(seed + 2))
    dn = harness.StreamSink(dut, "done", dut.clk, blk.done.payload.shape(), backpressure=bp,
                            rng=random.Random(seed + 3))
    # (sinks run for the rest of the test; each run uses fresh ones on the same ports)
    tasks = [cocotb.start_soon(pe.run()), cocotb.start_soon(dn.run())]
    cmds = _commands(rng, p["cmds"])
    items = [_item(c, rng) for c in cmds]
    items.insert(5, dict(pe=1, row_pos=2, bl=3, m=0, n=0, d_code=0, end=0, overflow=0))   # dropped
    a = Crossbar("li2018", seed=seed)
    b, gp = a.copy(), PairPulser(a)
    want_req, want_done = [], []
    for c, it in zip(cmds, [i for k, i in enumerate(items) if k != 5]):
        if c is None:
            want_done.append(dict(overflow=it["overflow"]))
        else:
            gp.apply(c)
            want_req += [dict(op=0 if d == SET else 1, pe=pp, row=r, bl=bl, width=WIDTH)
                         for pp, r, bl, d in pulse_plan(c)]
    p0 = int(dut.pulses.value)
    await src.send(items)
    await harness.collect(dn, 0, len(want_done), timeout_cycles=200_000)
    await harness.idle_cycles(dut.clk, 10)
    harness.check(pe.items, want_req, "pulse requests")
    harness.check(dn.items, want_done, "done")
    assert int(dut.pulses.value) - p0 == gp.pulses == len(want_req)
    assert not int(dut.busy.value)
    for r in pe.items:
        b.open_loop(r["pe"], r["row"], r["bl"], SET if r["op"] == 0 else 1, 1)
    assert np.array_equal(a.g, b.g), f"board B differs at {np.argwhere(a.g != b.g)[:5].tolist()}"
    for t in tasks:
        t.cancel()
    dut._log.info(f"idle {idle} bp {bp}: {len(cmds) - len(want_done)} commands, {len(want_req)} pulses, "
                  f"{len(want_done)} markers equal golden's; board equal")


if cocotb is not None:
    @cocotb.test()
    async def pair_pulser_against_golden(dut):
        from rtl.pair_pulser import default_instances
        p = harness.params()
        blk = default_instances()["pair_pulser"]
        await harness.start_clock_and_reset(dut)
        dut.pulse_cycles.value = WIDTH
        await _run(dut, blk, p, 0.3, 0.5, p["seed"])
        await _run(dut, blk, p, 0.0, 0.0, p["seed"] + 10)


def test_pair_pulser():
    from rtl.pair_pulser import default_instances
    harness.run_block(default_instances()["pair_pulser"], "pair_pulser", "tb.test_pair_pulser",
                      {"seed": 7, "cmds": 300})


def test_pair_pulser_verilog():
    harness.lint_default_instances("rtl.pair_pulser")
