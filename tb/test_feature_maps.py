"""Feature maps (rtl/feature_maps.py): random writes (with idle cycles: write enable low) into every
map while all readers (each lane's copy, the read-modify-write copy, the feeder's enabled copy of
the last map) read random addresses every cycle; reads of the address being written and of the
last written cells are frequent. Expected from the contract only: a model memory per map; a read
returns, one cycle later, the cell as it was before that cycle's write (a write is seen from the
next cycle on); the feeder's data holds while v_en is low. The unit has no streams: the idle
cycles are the write and read-enable gaps.

Mutation seen caught: the feeder copy's read enable left unconnected (always enabled) fails at
cycle 4 ("map 1 v read 158 != 8": the data did not hold while v_en was low).
"""
import random

from tb import harness

try:
    import cocotb
except ImportError:  # collected by pytest without cocotb's simulator context
    cocotb = None


async def _unit(dut, prefix, cfg, seed, cycles):
    from cocotb.triggers import ReadOnly, RisingEdge
    rng = random.Random(seed)
    port = lambda *path: getattr(dut, "__".join((prefix,) + tuple(map(str, path))))  # noqa: E731
    depth, lanes = cfg["depth"], cfg["lanes"]
    nm = len(depth)
    mem = [[0] * d for d in depth]      # cells never written read as 0 (the RAMs' init)
    v_hold, last_wr = 0, [0] * nm
    for c in range(cycles):
        reads = []                       # (what, port to check, expected) next cycle
        for f in range(nm):
            en = rng.random() < 0.6
            a = rng.randrange(depth[f])
            port("wr", f, "en").value, port("wr", f, "addr").value = int(en), a
            d = rng.randrange(256)
            port("wr", f, "data").value = d

            def pick(a=a, f=f):   # often the cell being written now or the last one written
                r = rng.random()
                return a if r < 0.25 else last_wr[f] if r < 0.45 else rng.randrange(depth[f])
            la = [pick() for _ in range(lanes[f])]
            port(f"lane{f}_addr").value = sum(x << (16 * i) for i, x in enumerate(la))
            ra = pick()
            port("rmw", f, "addr").value = ra
            reads += [(f"map {f} lane {i}", f"lane{f}_data", i, mem[f][x]) for i, x in enumerate(la)]
            reads.append((f"map {f} rmw", ("rmw", f, "data"), None, mem[f][ra]))
            if f == nm - 1:
                va, ven = pick(), rng.random() < 0.6
                port("v_addr").value, port("v_en").value = va, int(ven)
                if ven:
                    v_hold = mem[f][va]
                reads.append((f"map {f} v", "v_data", None, v_hold))
            if en:
                mem[f][a], last_wr[f] = d, a
        await RisingEdge(dut.clk)
        await ReadOnly()
        for what, p, i, exp in reads:
            v = int(port(*p).value) if isinstance(p, tuple) else int(port(p).value)
            got = v if i is None else (v >> (8 * i)) & 0xFF
            assert got == exp, f"{prefix} cycle {c}: {what} read {got} != {exp}"
        await _next(dut)
    dut._log.info(f"{prefix}: {cycles} cycles compared")


async def _next(dut):
    """Leave the read-only phase (the inputs of the next cycle are written after it)."""
    from cocotb.triggers import Timer
    await Timer(1, "ns")


if cocotb is not None:
    @cocotb.test()
    async def feature_maps_random(dut):
        p = harness.params()
        await harness.start_clock_and_reset(dut, 10)
        tasks = [cocotb.start_soon(_unit(dut, f"u{k}", c, p["seed"] + k, p["cycles"]))
                 for k, c in enumerate(p["configs"])]
        for t in tasks:
            await t


def _steps():
    """The system's step table and two small ones (a 2-cell map, odd shapes, 1-3 lanes)."""
    from types import SimpleNamespace as S

    from golden import weights
    from rtl.controller import plan
    small = [[S(out_shape=(2, 3, 2), lanes=[0]), S(out_shape=(1, 1, 5), lanes=[0, 1]), S(out_shape=(), lanes=[0])],
             [S(out_shape=(1, 2, 1), lanes=[0]), S(out_shape=(), lanes=[0, 1, 2])]]
    return [plan(requant=weights.load().q.requant)] + small


def test_feature_maps():
    from rtl.feature_maps import FeatureMaps
    units = {f"u{k}": FeatureMaps(st) for k, st in enumerate(_steps())}
    cfgs = [dict(depth=u.depth, lanes=u.n_lanes) for u in units.values()]
    harness.run_block(harness.Units(units), "feature_maps_tb", "tb.test_feature_maps",
                      {"configs": cfgs, "seed": 14, "cycles": 3000})
