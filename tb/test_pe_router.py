"""PE router (rtl/pe_router.py): random lane -> PE tables (and the system's, rtl/controller.py
`plan`), random step sequences with idle gaps (no step running) and random holding times, random
lane outputs and PE codes every cycle. Expected from the router's contract only: while step s
runs, PE p's outputs are those of the lane l with steps[s].lanes[l][0] == p, else 0; lane l's
adc_valid / adc_codes are those of its PE in the step that ran the cycle before (registered
selects), else 0. The unit has no streams: the idle gaps are the cycles with no step running.

Mutation seen caught: the lanes -> PE AND-OR without the step gate (`Mux(1, lane, 0)`) fails in
the first cycles (a PE driven by two lanes, or by a lane while no step runs).
"""
import random

from tb import harness

try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None


def _tables(rng):
    """[(pe of lane 0, pe of lane 1, ...) per step], n_pe."""
    n_pe = 6
    return [tuple(rng.sample(range(n_pe - 1), rng.randint(1, 3))) for _ in range(4)], n_pe


def _system():
    from golden import weights
    from rtl.controller import plan
    w = weights.load()
    return [tuple(pe for pe, _ in st.lanes) for st in plan(requant=w.q.requant)], 8


async def _unit(dut, prefix, table, n_pe, seed, cycles):
    from cocotb.triggers import ReadOnly, RisingEdge
    rng = random.Random(seed)
    port = lambda *path: getattr(dut, "__".join((prefix,) + tuple(map(str, path))))  # noqa: E731
    n_lanes = max(len(t) for t in table)
    outs = {n: len(port("lane", 0, n).value) for n in ("bl", "pulse", "sh_sample", "sh_bank", "adc_start",
                                                        "adc_bank", "adc_sel")}
    cw = len(port("pe", 0, "adc_codes").value)
    prev, step, hold = None, None, 0
    for c in range(cycles):
        await RisingEdge(dut.clk)
        if hold == 0:   # a new step (or an idle gap) for a random time
            step, hold = (None if rng.random() < 0.25 else rng.randrange(len(table))), rng.randint(1, 6)
        hold -= 1
        port("step_oh").value = 0 if step is None else 1 << step
        lv = [{n: rng.getrandbits(w) for n, w in outs.items()} for _ in range(n_lanes)]
        pv = [(rng.getrandbits(1), rng.getrandbits(cw)) for _ in range(n_pe)]
        for li in range(n_lanes):
            for n, v in lv[li].items():
                port("lane", li, n).value = v
        for p in range(n_pe):
            port("pe", p, "adc_valid").value, port("pe", p, "adc_codes").value = pv[p]
        await ReadOnly()
        for p in range(n_pe):
            src = [li for li, q in enumerate(table[step]) if q == p] if step is not None else []
            for n in outs:
                exp = lv[src[0]][n] if src else 0
                got = int(port("pe", p, n).value)
                assert got == exp, f"{prefix} cycle {c} step {step}: PE {p} {n} {got} != {exp}"
        for li in range(n_lanes):
            q = table[prev][li] if prev is not None and li < len(table[prev]) else None
            exp = pv[q] if q is not None else (0, 0)
            got = (int(port("lane", li, "adc_valid").value), int(port("lane", li, "adc_codes").value))
            assert got == exp, f"{prefix} cycle {c} step {prev}: lane {li} codes {got} != {exp}"
        prev = step
    dut._log.info(f"{prefix}: {cycles} cycles compared")


if cocotb is not None:
    @cocotb.test()
    async def pe_router_random(dut):
        p = harness.params()
        await harness.start_clock_and_reset(dut, 10)
        tasks = [cocotb.start_soon(_unit(dut, f"u{k}", [tuple(t) for t in c["table"]], c["n_pe"],
                                         p["seed"] + k, p["cycles"])) for k, c in enumerate(p["configs"])]
        for t in tasks:
            await t


def test_pe_router():
    from types import SimpleNamespace

    from rtl.pe_router import PERouter
    rng = random.Random(14)
    cfgs = [_system()] + [_tables(rng) for _ in range(3)]
    units = {f"u{k}": PERouter([SimpleNamespace(lanes=[(pe, []) for pe in t]) for t in table], n_pe)
             for k, (table, n_pe) in enumerate(cfgs)}
    params = {"configs": [dict(table=t, n_pe=n) for t, n in cfgs], "seed": 14, "cycles": 3000}
    harness.run_block(harness.Units(units), "pe_router_tb", "tb.test_pe_router", params)
