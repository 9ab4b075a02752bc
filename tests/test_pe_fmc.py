"""rtl/pe_fmc.py: the ticked PE-board PHY moves every PE port bit over the narrow FMC bus.

A Python PE-board model sits behind the bus (writes, apply, ready after a random delay, reads
answered in order after a fixed latency); a Python "controller" drives random PE outputs and
changes them only on ticks. Checked: the board sees exactly the controller's outputs at each
apply, and after each tick the controller sees exactly the words the board returned for the PEs
it requested (zeros for the others)."""
import random

import pytest
from amaranth.hdl import Cat, Elaboratable, Signal
from amaranth.sim import Simulator

from rtl.pe_fmc import PeFmcPhy


def _word(p, b, k, width):
    return random.Random(hash((p, b, k))).getrandbits(width)


@pytest.mark.parametrize("latency,seed", [(1, 0), (3, 1)])
def test_phy_round_trip(latency, seed):
    rng = random.Random(seed)
    phy = PeFmcPhy()
    N, DB, UB, DW, UW = phy.n_pe, phy.dn_beats, phy.up_beats, phy.dn_width, phy.up_width
    out_names = [n for n, m in phy.pe_sig.members.items() if m.flow.name == "Out"]
    in_names = [n for n, m in phy.pe_sig.members.items() if m.flow.name == "In"]
    # the controller-side values as one integer per PE (Cat of the members, signature order)
    down_cat = [Cat(*[getattr(phy.pe[p], n) for n in out_names]) for p in range(N)]
    up_cat = [Cat(*[getattr(phy.pe[p], n) for n in in_names]) for p in range(N)]
    probe_dn = [Signal(len(c), name=f"pdn{p}") for p, c in enumerate(down_cat)]
    probe_up = [Signal(len(c), name=f"pup{p}") for p, c in enumerate(up_cat)]
    req_bit = sum(len(getattr(phy.pe[0], n)) for n in out_names[:out_names.index("adc_start")])
    n_ticks = 12

    sim = Simulator(_Wrap(phy, down_cat, up_cat, probe_dn, probe_up))
    sim.add_clock(1e-8)

    async def bench(ctx):
        k = 0                     # applies seen
        regs = {}
        pending = []              # [due cycle, data]
        ready_at = None
        cyc = 0
        cur = [rng.getrandbits(len(probe_dn[p])) & ~(0 if rng.random() < 0.4 else 1 << req_bit)
               for p in range(N)]
        expect_up = [0] * N
        ticks = 0
        while ticks < n_ticks:
            for p in range(N):
                ctx.set(probe_dn[p], cur[p])
            due = [d for d in pending if d[0] == cyc]
            ctx.set(phy.fmc.rvalid, bool(due))
            ctx.set(phy.fmc.rdata, due[0][1] if due else rng.getrandbits(UW))
            ctx.set(phy.fmc.ready, ready_at is not None and cyc >= ready_at)
            we, addr, wdata = ctx.get(phy.fmc.we), ctx.get(phy.fmc.addr), ctx.get(phy.fmc.wdata)
            apply, re, tick = ctx.get(phy.fmc.apply), ctx.get(phy.fmc.re), ctx.get(phy.tick)
            await ctx.tick()
            cyc += 1
            pending = [d for d in pending if d[0] >= cyc]
            pb = phy.beat_bits
            if we:
                regs[(addr >> pb, addr & ((1 << pb) - 1))] = wdata
            if apply:
                k += 1
                for p in range(N):
                    word = sum(regs[(p, b)] << (b * DW) for b in range(DB)) & ((1 << len(probe_dn[p])) - 1)
                    assert word == cur[p], f"apply {k}: PE {p} down word"
                ready_at = cyc + rng.randrange(0, 4)
                reqs = [p for p in range(N) if (cur[p] >> req_bit) & 1]
                expect_up = [0] * N
                for p in reqs:
                    full = sum(_word(p, b, k, UW) << (b * UW) for b in range(UB))
                    expect_up[p] = full & ((1 << len(probe_up[p])) - 1)
            if re:
                p, b = addr >> pb, addr & ((1 << pb) - 1)
                pending.append([cyc - 1 + latency, _word(p, b, k, UW)])
            if tick:
                ticks += 1
                ready_at = None
                for p in range(N):
                    assert ctx.get(probe_up[p]) == expect_up[p], f"tick {ticks}: PE {p} up word"
                cur = [rng.getrandbits(len(probe_dn[p])) & ~(0 if rng.random() < 0.4 else 1 << req_bit)
                       for p in range(N)]
            assert cyc < 200 * n_ticks, "PHY stalled"
        assert ctx.get(phy.ticks) == n_ticks

    sim.add_testbench(bench)
    sim.run()


class _Wrap(Elaboratable):
    """Connects probe signals to the PHY's PE ports (the controller side)."""

    def __init__(self, phy, down_cat, up_cat, probe_dn, probe_up):
        self.phy, self.down_cat, self.up_cat, self.probe_dn, self.probe_up = phy, down_cat, up_cat, probe_dn, probe_up

    def elaborate(self, platform):
        from amaranth.hdl import Module
        m = Module()
        m.submodules.phy = self.phy
        for p in range(len(self.probe_dn)):
            m.d.comb += [self.down_cat[p].eq(self.probe_dn[p]), self.probe_up[p].eq(self.up_cat[p])]
        return m
