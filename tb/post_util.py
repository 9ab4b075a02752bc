"""Helpers shared by block tests of several instances in one build (softmax, feeder, result).

Verilator builds dominate the test time (~20 s each on a loaded 2-core machine, the simulations
take seconds), so each test file builds ONE Verilog top, `Bundle`, holding one instance of the
block per parameter configuration (unit `u<k>`, ports `u<k>__i__payload`, `u<k>__m`, ...), and
one cocotb test drives all units concurrently. Each unit runs its vectors in two phases: phase 0
without idle cycles or back-pressure (checks the full-rate throughput), phase 1 with the
configuration's `idle` and `bp` probabilities. Expected values come only from golden/.
"""
from __future__ import annotations

import random

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from tb import harness

CLK_NS = 10


class Bundle(wiring.Component):
    """Several independent block instances side by side in one Verilog top, ports prefixed by unit name."""

    def __init__(self, blocks: dict):
        self.blocks = dict(blocks)
        super().__init__({name: Out(b.signature) for name, b in self.blocks.items()})

    def elaborate(self, platform):
        m = Module()
        for name, b in self.blocks.items():
            m.submodules[name] = b
            wiring.connect(m, wiring.flipped(getattr(self, name)), b)
        return m


class Units(wiring.Component):
    """Like `Bundle`, for blocks with arrays of interfaces among their ports (wiring.connect cannot
    flip those): each port wired member by member."""

    def __init__(self, blocks):
        self.blocks = blocks
        super().__init__({name: Out(b.signature) for name, b in blocks.items()})

    def elaborate(self, platform):
        m = Module()
        for name, b in self.blocks.items():
            m.submodules[name] = b
            self._wire(m, getattr(self, name), b)
        return m

    def _wire(self, m, outer, inner, flow=Out):
        if isinstance(outer, list):          # an array of members
            for o, i in zip(outer, inner):
                self._wire(m, o, i, flow)
        elif hasattr(outer, "signature"):    # an interface (flipped ones report flipped flows)
            for n, mem in outer.signature.members.items():
                self._wire(m, getattr(outer, n), getattr(inner, n), mem.flow)
        else:
            m.d.comb += outer.eq(inner) if flow == Out else inner.eq(outer)


def run_configs(make, configs, name, test_module, seed):
    """pytest side: build all configurations into one Bundle and run the cocotb test module."""
    units = {f"u{k}": make(**c["block"]) for k, c in enumerate(configs)}
    return harness.run_block(Bundle(units), name, test_module, {"configs": configs, "seed": seed})


async def run_units(dut, unit_test):
    """cocotb side: clock + reset, then `unit_test(dut, prefix, cfg, seed)` for every unit, concurrently."""
    import cocotb
    p = harness.params()
    await harness.start_clock_and_reset(dut, CLK_NS)
    tasks = [cocotb.start_soon(unit_test(dut, f"u{k}", c, p["seed"] + 1000 * k)) for k, c in enumerate(p["configs"])]
    for t in tasks:
        await t


class Port:
    """Attribute access dut.<prefix>__<name>."""

    def __init__(self, dut, prefix):
        self._dut, self._prefix = dut, prefix

    def __getattr__(self, name):
        return getattr(self._dut, f"{self._prefix}__{name}")


def streams(dut, prefix, blk, seed, i="i", o="o"):
    """(source, sink) for a unit's input and output streams; the sink must be started by the caller."""
    src = harness.StreamSource(dut, f"{prefix}__{i}", dut.clk, blk.in_layout, rng=random.Random(seed))
    sink = harness.StreamSink(dut, f"{prefix}__{o}", dut.clk, blk.out_layout, rng=random.Random(seed + 1))
    return src, sink


def phases(cfg) -> list[tuple[float, float]]:
    return [(0.0, 0.0), (cfg["idle"], cfg["bp"])]


def set_phase(src, sink, idle, bp):
    src.idle, sink.bp = idle, bp


def now_cycles() -> float:
    from cocotb.utils import get_sim_time
    return get_sim_time("ns") / CLK_NS


async def collect(sink, n_before, n_new, timeout_cycles=1_000_000):
    """Wait until n_new more items than n_before arrived; return those n_new."""
    items = await sink.wait_for(n_before + n_new, timeout_cycles)
    return items[n_before:n_before + n_new]


def check(got, expected, what):
    assert len(got) == len(expected), f"{what}: got {len(got)} items, expected {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"{what}: item {i}: got {g}, expected {e}"


async def cycles_until(clk, cond, limit=100_000):
    """Number of clock edges until cond() holds (sampled in ReadOnly); returns after the next edge,
    outside the ReadOnly phase, so the caller may drive signals."""
    from cocotb.triggers import ReadOnly, RisingEdge
    for n in range(limit):
        await ReadOnly()
        hit = cond()
        await RisingEdge(clk)
        if hit:
            return n
    raise TimeoutError("condition never held")


async def idle_cycles(clk, n):
    from cocotb.triggers import RisingEdge
    for _ in range(n):
        await RisingEdge(clk)


def lint_default_instances(module: str, strict: bool = True):
    """Convert every `default_instances()` entry of rtl module `module` to Verilog and run
    `verilator --lint-only` (-Wall if strict) on it with the harness waivers."""
    import importlib
    import subprocess
    harness.verilator_env()
    mod = importlib.import_module(module)
    bdir = harness.SIM_BUILD / "lint"
    bdir.mkdir(parents=True, exist_ok=True)
    for name, comp in mod.default_instances().items():
        vfile = bdir / f"{name}.v"
        vfile.write_text(harness.to_verilog(comp, name))
        cmd = ["verilator", "--lint-only"] + (["-Wall"] if strict else []) + harness.VERILATOR_WAIVERS + [
            "--top-module", name, str(vfile)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        assert r.returncode == 0, f"verilator lint of {name}:\n{r.stdout}{r.stderr}"
